"""LiteRT's (TensorFlow Lite's) int8 elementwise ops, pooling and the model's edges, per kernel path
(docs/quantization.md, step 7d; :class:`minquant.target.LiteRTPath` says which path rounds how).

LiteRT's activations are int8; minquant runs them as uint8 codes ``u = q + 128`` with zero point
``z + 128`` — the same affine map ``r = s·(q − z)`` — so ``u − z_u = q − z`` and every formula below, written
on int8 codes, is computed on ``u − 128`` where the code itself (not a difference) enters it.

* **ADD** (inputs a, b; output y; A = a − z_a, B = b − z_b):

  - ``'q31_double'`` (reference kernels): TFLite's integer add. With ``t = 2·max(s_a, s_b)`` (float64) and
    ``left = 20``::

        a' = MBQM(A·2^20, QM(s_a/t)),  b' = MBQM(B·2^20, QM(s_b/t)),  y = z_y + MBQM(a' + b', QM(t/(2^20·s_y)))

    ``QM`` = ``QuantizeMultiplier``, ``MBQM`` = ``MultiplyByQuantizedMultiplier`` with double rounding
    (:mod:`minquant.kernels.fixedpoint`) — three roundings (the larger input's multiplier is exactly ½).
  - ``'q31_mixed'`` (optimized builtin kernel, measured over all 65,536 code pairs for 22 qparam sets): the
    same constants, the two inputs scaled with *single* rounding, the sum with double rounding.
  - ``'xnnpack'`` (the XNNPACK delegate): ``m_a = f32(s_a/s_y)``, ``m_b = f32(s_b/s_y)``, ``k = 20 − e`` with
    ``e`` the binary exponent of ``max(m_a, m_b)``; integer multipliers ``M_a = rne(m_a·2^k)``,
    ``M_b = rne(m_b·2^k)`` (≤ 21 bits), and one rounding, ties up: ``y = z_y + ((M_a·A + M_b·B + 2^(k−1)) >> k)``.

* **MUL** (P = A·B, exact in int32; measured over all 65,536 code pairs): ``'q31_double'`` (builtin and
  reference kernels) ``y = z_y + MBQM(P, QM(f64(s_a)·f64(s_b)/f64(s_y)))``, double rounding; ``'f32'``
  (XNNPACK) ``y = z_y + rne(f32(f32(P)·f32(f32(s_a·s_b)/s_y)))``. Inputs broadcast.

* **AVERAGE_POOL_2D** (every path; input and output share their qparams): the mean of the *codes*,
  ``y = round_half_away(Σ q / n)`` over the valid window elements (C's ``(acc ± n/2) / n``).

* **QUANTIZE**: ``'mul_rne'`` (XNNPACK) ``clamp(z + rne(f32(x·f32(1/s))))``; ``'div_away'`` (reference)
  ``clamp(z + round_half_away(f32(x/s)))``; ``'blocks8'`` (the optimized kernel, measured): ``'mul_rne'`` in
  its vector loop over blocks of 8 values of each sample, ``clamp(z + round_half_away(f64(x)/f64(s)))`` on the
  ``n mod 8`` tail.

* **DEQUANTIZE**: ``'f32'`` ``f32(s·(q − z))``; ``'split'`` (optimized kernel) ``f32(f32(q·s) − f32(z·s))`` in
  its vector loop — blocks of 8 values of each sample (measured) — and ``f32(s·(q − z))`` on the last
  ``n mod 8`` values, the scalar tail.

Each ``*_reference`` spells its formula out element by element on Python integers; the array versions
compute the same in NumPy int64 / float32.
"""
from __future__ import annotations

import math

import numpy as np

from .fixedpoint import multiply_by_quantized_multiplier, multiply_by_quantized_multiplier_reference, \
    quantize_multiplier, quantize_multiplier_reference

__all__ = ["add_multipliers", "qadd_litert", "qadd_litert_reference", "qmul_litert", "qmul_litert_reference", "avg_pool_litert", "avg_pool_litert_reference",
           "quantize_litert", "dequantize_litert", "round_half_away"]

_ADD_RULES = ("q31_double", "q31_mixed", "xnnpack")


def round_half_away(t):
    """C's ``round``: to the nearest integer, halves away from zero (float in, float out)."""
    t = np.asarray(t)
    return np.sign(t) * np.floor(np.abs(t) + 0.5)


def _codes(x, what):
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise TypeError(f"{what} must be uint8 codes (int8 codes + 128), got {getattr(x, 'dtype', type(x))}")
    return x


def add_multipliers(a_scale, b_scale, y_scale, rule: str):
    """The integer constants of LiteRT's ADD (module docstring): for 'q31_double' the three (Q31, shift)
    pairs ``((q_a, s_a), (q_b, s_b), (q_y, s_y))``; for 'xnnpack' ``(M_a, M_b, k)``."""
    if rule not in _ADD_RULES:
        raise ValueError(f"unknown LiteRT add rule {rule!r}; expected one of {_ADD_RULES}")
    sa, sb, sy = (float(np.float32(v)) for v in (a_scale, b_scale, y_scale))
    if rule in ("q31_double", "q31_mixed"):
        t = 2 * max(sa, sb)
        return (quantize_multiplier_reference(sa / t), quantize_multiplier_reference(sb / t),
                quantize_multiplier_reference(t / ((1 << 20) * sy)))
    ma, mb = np.float32(np.float32(sa) / np.float32(sy)), np.float32(np.float32(sb) / np.float32(sy))
    if not (2.0 ** -10 <= max(ma, mb) < 2.0 ** 8):
        raise ValueError(f"XNNPACK's add needs input/output scale ratios in [2^-10, 2^8), got {ma:.3g}, {mb:.3g}")
    k = 20 - (math.frexp(float(max(ma, mb)))[1] - 1)
    return int(np.rint(np.float32(ma * np.float32(2.0 ** k)))), int(np.rint(np.float32(mb * np.float32(2.0 ** k)))), k


def qadd_litert_reference(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, *, relu=False, rule="q31_double"):
    """LiteRT's ADD on uint8 codes (+128), element by element (module docstring); inputs broadcast."""
    a, b = np.broadcast_arrays(_codes(a, "a"), _codes(b, "b"))
    consts = add_multipliers(a_scale, b_scale, y_scale, rule)
    lo = int(y_zp) if relu else 0
    out = np.empty(a.shape, np.uint8)
    for idx in np.ndindex(a.shape):
        A, B = int(a[idx]) - int(a_zp), int(b[idx]) - int(b_zp)
        if rule != "xnnpack":
            (qa, sa), (qb, sb), (qy, sy) = consts
            single = rule == "q31_mixed"
            t = (multiply_by_quantized_multiplier_reference(A * (1 << 20), qa, sa, single_rounding=single)
                 + multiply_by_quantized_multiplier_reference(B * (1 << 20), qb, sb, single_rounding=single))
            y = multiply_by_quantized_multiplier_reference(t, qy, sy)
        else:
            ma, mb, k = consts
            y = (ma * A + mb * B + (1 << (k - 1))) >> k
        out[idx] = min(max(y + int(y_zp), lo), 255)
    return out


def qadd_litert(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, *, relu=False, rule="q31_double"):
    """Array version of :func:`qadd_litert_reference` (NumPy int64), bit-identical."""
    a, b = np.broadcast_arrays(_codes(a, "a"), _codes(b, "b"))
    A = a.astype(np.int64) - int(a_zp)
    B = b.astype(np.int64) - int(b_zp)
    consts = add_multipliers(a_scale, b_scale, y_scale, rule)
    if rule != "xnnpack":
        (qa, sa), (qb, sb), (qy, sy) = consts
        single = rule == "q31_mixed"
        flat = lambda v: v.reshape(-1, 1)   # noqa: E731 — one column: one multiplier
        t = (multiply_by_quantized_multiplier(flat(A << 20), qa, sa, single_rounding=single)
             + multiply_by_quantized_multiplier(flat(B << 20), qb, sb, single_rounding=single))
        y = multiply_by_quantized_multiplier(t, qy, sy).reshape(A.shape)
    else:
        ma, mb, k = consts
        y = (ma * A + mb * B + (1 << (k - 1))) >> k
    lo = int(y_zp) if relu else 0
    return np.clip(y + int(y_zp), lo, 255).astype(np.uint8)


_MUL_RULES = ("q31_double", "f32")


def _mul_constants(a_scale, b_scale, y_scale, rule):
    if rule not in _MUL_RULES:
        raise ValueError(f"unknown LiteRT mul rule {rule!r}; expected one of {_MUL_RULES}")
    sa, sb, sy = (np.float32(v) for v in (a_scale, b_scale, y_scale))
    if rule == "f32":
        return np.float32(np.float32(sa * sb) / sy)
    return quantize_multiplier_reference(float(sa) * float(sb) / float(sy))


def qmul_litert_reference(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, *, relu=False, rule="q31_double"):
    """LiteRT's MUL on uint8 codes (+128), element by element (module docstring); inputs broadcast."""
    a, b = np.broadcast_arrays(_codes(a, "a"), _codes(b, "b"))
    c = _mul_constants(a_scale, b_scale, y_scale, rule)
    lo = int(y_zp) if relu else 0
    out = np.empty(a.shape, np.uint8)
    for idx in np.ndindex(a.shape):
        p = (int(a[idx]) - int(a_zp)) * (int(b[idx]) - int(b_zp))
        y = (int(np.rint(np.float32(np.float32(p) * c))) if rule == "f32"
             else multiply_by_quantized_multiplier_reference(p, *c))
        out[idx] = min(max(y + int(y_zp), lo), 255)
    return out


def qmul_litert(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, *, relu=False, rule="q31_double"):
    """Array version of :func:`qmul_litert_reference` (NumPy int64 / float32), bit-identical."""
    a, b = np.broadcast_arrays(_codes(a, "a"), _codes(b, "b"))
    p = (a.astype(np.int64) - int(a_zp)) * (b.astype(np.int64) - int(b_zp))
    c = _mul_constants(a_scale, b_scale, y_scale, rule)
    if rule == "f32":
        y = np.rint((p.astype(np.float32) * c).astype(np.float32)).astype(np.int64)
    else:
        y = multiply_by_quantized_multiplier(p.reshape(-1, 1), *c).reshape(p.shape)
    lo = int(y_zp) if relu else 0
    return np.clip(y + int(y_zp), lo, 255).astype(np.uint8)


def _windows(shape, kernel, stride):
    kh, kw = kernel
    sh, sw = stride
    h, w = shape[-2:]
    if kh > h or kw > w:
        raise ValueError(f"pool window {kernel} larger than the input {h}x{w}")
    return (h - kh) // sh + 1, (w - kw) // sw + 1


def avg_pool_litert_reference(x, kernel, stride) -> np.ndarray:
    """AVERAGE_POOL_2D with VALID padding on NCHW uint8 codes (+128): ``round_half_away(Σ q / n)`` of the
    int8 codes q = u − 128 of each window (module docstring); the qparams are the input's."""
    x = _codes(x, "x")
    kh, kw = kernel
    sh, sw = stride
    oh, ow = _windows(x.shape, kernel, stride)
    n_el = kh * kw
    out = np.empty(x.shape[:2] + (oh, ow), np.uint8)
    for b, c, i, j in np.ndindex(out.shape):
        acc = int(x[b, c, i * sh:i * sh + kh, j * sw:j * sw + kw].astype(np.int64).sum()) - 128 * n_el
        q = (acc + n_el // 2) // n_el if acc > 0 else -((-acc + n_el // 2) // n_el)
        out[b, c, i, j] = min(max(q, -128), 127) + 128
    return out


def avg_pool_litert(x, kernel, stride) -> np.ndarray:
    """Array version of :func:`avg_pool_litert_reference`, bit-identical."""
    x = _codes(x, "x")
    kh, kw = kernel
    sh, sw = stride
    oh, ow = _windows(x.shape, kernel, stride)
    acc = np.zeros(x.shape[:2] + (oh, ow), np.int64)
    for di in range(kh):
        for dj in range(kw):
            acc += x[:, :, di:di + sh * (oh - 1) + 1:sh, dj:dj + sw * (ow - 1) + 1:sw]
    n_el = kh * kw
    acc -= 128 * n_el
    q = np.where(acc > 0, (acc + n_el // 2) // n_el, -((-acc + n_el // 2) // n_el))
    return (np.clip(q, -128, 127) + 128).astype(np.uint8)


def _tail8(shape) -> np.ndarray:
    """Boolean mask of the values an 8-wide vector loop leaves to its scalar tail: the last ``n mod 8`` of each
    sample in LiteRT's memory order — NHWC, so for an NCHW array of minquant the mask is built in NHWC and
    transposed back."""
    nhwc = (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)
    per = int(np.prod(nhwc[1:])) if len(nhwc) > 1 else int(nhwc[0])
    flat = np.zeros((nhwc[0] if len(nhwc) > 1 else 1, per), bool)
    flat[:, per // 8 * 8:] = True
    mask = flat.reshape(nhwc)
    return mask.transpose(0, 3, 1, 2) if len(shape) == 4 else mask


def quantize_litert(x, scale, zero_point, rule: str) -> np.ndarray:
    """LiteRT's QUANTIZE of float32 ``x`` into uint8 codes (+128; ``zero_point`` is the uint8 one)."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"QUANTIZE takes floats, got {x.dtype}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("input contains NaN or Inf")
    s = np.float32(scale)
    if rule in ("mul_rne", "blocks8"):
        t = np.rint((x * np.float32(np.float32(1) / s)).astype(np.float32))
        if rule == "blocks8":     # the scalar tail of each sample: float64 division, halves away from zero
            tail = _tail8(x.shape)
            t[tail] = round_half_away(x[tail].astype(np.float64) / np.float64(s))
    elif rule == "div_away":
        t = round_half_away((x / s).astype(np.float32))
    else:
        raise ValueError(f"unknown LiteRT quantize rule {rule!r}; expected 'mul_rne', 'div_away' or 'blocks8'")
    return np.clip(t.astype(np.float64) + int(zero_point), 0, 255).astype(np.uint8)


def dequantize_litert(q, scale, zero_point, rule: str) -> np.ndarray:
    """LiteRT's DEQUANTIZE of uint8 codes (+128; ``zero_point`` is the uint8 one) into float32."""
    q = _codes(q, "q")
    s = np.float32(scale)
    if rule == "f32":
        return (s * (q.astype(np.float32) - np.float32(zero_point))).astype(np.float32)
    if rule == "split":   # on the int8 codes: f32(q·s) − f32(z·s) in blocks of 8, the tail as 'f32'
        q8 = (q.astype(np.int32) - 128).astype(np.float32)
        out = ((q8 * s).astype(np.float32) - np.float32(np.float32(int(zero_point) - 128) * s)).astype(np.float32)
        tail = _tail8(q.shape)
        out[tail] = (s * (q[tail].astype(np.float32) - np.float32(zero_point))).astype(np.float32)
        return out
    raise ValueError(f"unknown LiteRT dequantize rule {rule!r}; expected 'f32' or 'split'")
