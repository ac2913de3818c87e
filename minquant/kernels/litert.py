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

* **HARD_SWISH** (every path, measured: the XNNPACK delegate and the optimized kernel compute the reference
  kernel's codes on all 256 inputs of 150 random qparam sets): 16-bit fixed point (TFLite's
  ``reference_ops::HardSwish``; :func:`hard_swish_constants` derives its constants). With ``v = q − z_x``
  (int16) on the "high-resolution" scale ``s_x/2⁷``, ``h = v·2⁷``:

  - ``pre = SRDHM16(h, m_o)``: h on the output scale before a final shift, ``m_o`` the Q15 rounding of
    ``QuantizeMultiplier(f32(s_x/128)/s_y)`` (exponent ``e_o ≤ 0``, else LiteRT refuses the model);
  - ``r``: h rescaled so that the real 3.0 is 2¹⁵ (saturating: ``r ∈ [−1, 1]`` in Q15) by ``m_r``, ``e_r`` of
    ``f32(s_x/128)/f32(3/2¹⁵)`` — left shifts saturate in two steps (``e_r − 1``, then 1), right shifts round
    (``RoundingDivideByPOT``) — then mapped to [0, 1]: ``r = (r + 2¹⁵) >> 1`` (the "relu-ish" factor
    ``min(max(x + 3, 0), 6) / 6``);
  - ``y = z_y + RoundingDivideByPOT(SDHM16(r, pre), −e_o)``.

  ``SRDHM16(a, b) = round_half_up(a·b / 2¹⁵)`` (gemmlowp's int16 SaturatingRoundingDoublingHighMul),
  ``SDHM16(a, b) = trunc(a·b / 2¹⁵)`` (toward zero: it cancels the first one's bias, as LiteRT's comment
  says). An int8 input has 256 codes: the kernel is a table of the formula on each.

* **MEAN** over H and W (int8; the global average pool a converter writes; output qparams of its own),
  ``n = H·W``, ``S = Σ q`` over the window:

  - ``'q31_reduce'`` (reference kernels, and the optimized kernels when ``keep_dims`` is false —
    ``reference_ops::QuantizedMeanOrSum``): ``(m, e) = QM(f64(s_x)/f64(s_y))``, then 1/n folded into the
    multiplier: ``k = min(⌊log₂ n⌋, 32, 31 + e)``, ``m' = ⌊m·2^k / n⌋``, ``y = z_y + MBQM(S − z_x·n, m', e − k)``
    (double rounding);
  - ``'q31_blocks16'`` (optimized kernel, 4-D input, ``keep_dims``: ``optimized_integer_ops::Mean``): the
    zero points folded into a float bias ``b = z_y − trunc(t ± ½)`` with ``t = f32(f32(z_x·s_x)/s_y)``, and
    ``y = b + MBQM(S, QM(f32(s_x / f32(n·s_y))))`` — on the raw code sum — with both roundings ties up in
    whole blocks of 16 channels (NEON's ``vqrdmulh`` + ``vrshl``), gemmlowp's double rounding on the last
    ``C mod 16`` (measured);
  - ``'f32'`` (XNNPACK): ``y = rne(f32(f32(S − z_x·n)·c) + z_y)`` with ``c = f32(s_x / f32(s_y·n))`` — the
    zero point is added *before* the rounding, in float (measured: ties of ``S·c`` alone would round the
    other way; ``f32(f32(s_x/s_y)/n)`` for ``c`` agreed on every case drawn as well).

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
    quantize_multiplier, quantize_multiplier_reference, rounding_divide_by_pot_reference

__all__ = ["add_multipliers", "qadd_litert", "qadd_litert_reference", "qmul_litert", "qmul_litert_reference",
           "avg_pool_litert", "avg_pool_litert_reference", "hard_swish_constants", "hard_swish_litert_reference",
           "hard_swish_table", "hard_swish_litert", "mean_litert", "mean_litert_reference", "MEAN_RULES",
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


# ------------------------------------------------------------------------------------------- HARD_SWISH
_I16_MIN, _I16_MAX = -(1 << 15), (1 << 15) - 1


def _sat16(v: int) -> int:
    return min(max(v, _I16_MIN), _I16_MAX)


def _q15(q31: int) -> int:
    """``DownScaleInt32ToInt16Multiplier``: a Q31 multiplier rounded to Q15 (half up; saturates at 2¹⁵ − 1)."""
    return _I16_MAX if q31 >= (1 << 31) - 1 - (1 << 15) else (q31 + (1 << 15)) >> 16


def _srdhm16(a: int, b: int) -> int:
    """gemmlowp's int16 SaturatingRoundingDoublingHighMul: round_half_up(a·b / 2¹⁵)."""
    if a == b == _I16_MIN:
        return _I16_MAX
    ab = a * b
    t = ab + ((1 << 14) if ab >= 0 else 1 - (1 << 14))
    return t >> 15 if t >= 0 else -((-t) >> 15)


def _sdhm16(a: int, b: int) -> int:
    """LiteRT's SaturatingDoublingHighMul: a·b / 2¹⁵ truncated toward zero."""
    if a == b == _I16_MIN:
        return _I16_MAX
    ab = a * b
    return ab >> 15 if ab >= 0 else -((-ab) >> 15)


def hard_swish_constants(x_scale, y_scale) -> tuple[int, int, int, int]:
    """``(m_o, e_o, m_r, e_r)`` of LiteRT's HARD_SWISH (module docstring): Q15 multipliers and exponents from the
    float32 scales, as ``HardSwishPrepare`` computes them."""
    f32 = np.float32
    hires = f32(f32(1.0 / 128.0) * f32(x_scale))
    qo, eo = quantize_multiplier_reference(float(f32(hires / f32(y_scale))))
    qr, er = quantize_multiplier_reference(float(f32(hires / f32(3.0 / 32768.0))))
    if eo > 0:
        raise ValueError(f"LiteRT's HARD_SWISH needs an output scale ≥ input scale / 128 (its output multiplier "
                         f"exponent must be ≤ 0); got s_x = {float(x_scale):.4g}, s_y = {float(y_scale):.4g}")
    return _q15(qo), eo, _q15(qr), er


def hard_swish_litert_reference(x, x_scale, x_zp, y_scale, y_zp) -> np.ndarray:
    """LiteRT's HARD_SWISH on uint8 codes (+128), element by element in 16-bit fixed point (module
    docstring)."""
    x = _codes(x, "x")
    mo, eo, mr, er = hard_swish_constants(x_scale, y_scale)
    out = np.empty(x.shape, np.uint8)
    for idx in np.ndindex(x.shape):
        h = (int(x[idx]) - int(x_zp)) * (1 << 7)          # |v| ≤ 255: h fits int16
        pre = _srdhm16(h, mo)
        r = _sat16(h * (1 << (er - 1))) if er > 0 else h
        r = _srdhm16(r, mr)
        if er > 0:
            r = _sat16(r * 2)
        elif er < 0:
            r = rounding_divide_by_pot_reference(r, -er)
        r = (r + (1 << 15)) >> 1                          # [−1, 1] → [0, 1]
        y = rounding_divide_by_pot_reference(_sdhm16(r, pre), -eo) + int(y_zp)
        out[idx] = min(max(y, 0), 255)
    return out


def hard_swish_table(x_scale, x_zp, y_scale, y_zp) -> np.ndarray:
    """The 256-entry uint8 table of :func:`hard_swish_litert_reference` (index: the input code)."""
    return hard_swish_litert_reference(np.arange(256, dtype=np.uint8), x_scale, x_zp, y_scale, y_zp)


def hard_swish_litert(x, x_scale, x_zp, y_scale, y_zp) -> np.ndarray:
    """LiteRT's HARD_SWISH as a lookup in :func:`hard_swish_table` (bit-identical to the reference)."""
    return hard_swish_table(x_scale, x_zp, y_scale, y_zp)[_codes(x, "x")]


# ------------------------------------------------------------------------------------------------- MEAN
#: MEAN's rules (module docstring)
MEAN_RULES = ("q31_reduce", "q31_blocks16", "f32")


def _mean_check(x, rule):
    x = _codes(x, "x")
    if x.ndim != 4:
        raise ValueError(f"MEAN over H and W takes NCHW codes, got shape {x.shape}")
    if rule not in MEAN_RULES:
        raise ValueError(f"unknown LiteRT mean rule {rule!r}; expected one of {MEAN_RULES}")
    return x


def _mean_constants(n, x_scale, x_zp, y_scale, y_zp, rule):
    """The integers of one rule: 'q31_reduce' (m', e'), 'q31_blocks16' (m, e, bias), 'f32' the float32 c."""
    f32 = np.float32
    sx, sy = f32(x_scale), f32(y_scale)
    if rule == "q31_reduce":
        m, e = quantize_multiplier_reference(float(sx) / float(sy))
        k = min(n.bit_length() - 1, 32, 31 + e)
        return (m << k) // n, e - k
    if rule == "q31_blocks16":
        t = f32(f32(f32(int(x_zp) - 128) * sx) / sy)
        t = f32(t + f32(0.5)) if t > 0 else f32(t - f32(0.5))
        m, e = quantize_multiplier_reference(float(f32(sx / f32(f32(n) * sy))))
        return m, e, int(y_zp) - 128 - int(t)            # int8 zero point; trunc toward zero
    return f32(sx / f32(sy * f32(n)))


def mean_litert_reference(x, x_scale, x_zp, y_scale, y_zp, rule) -> np.ndarray:
    """LiteRT's MEAN over H and W of NCHW uint8 codes (+128) → (N, C, 1, 1), one output at a time (module
    docstring)."""
    x = _mean_check(x, rule)
    nb, c_n, h, w = x.shape
    n = h * w
    consts = _mean_constants(n, x_scale, x_zp, y_scale, y_zp, rule)
    out = np.empty((nb, c_n, 1, 1), np.uint8)
    for b in range(nb):
        for c in range(c_n):
            s = int(x[b, c].astype(np.int64).sum()) - 128 * n          # Σ q, the int8 codes
            if rule == "q31_reduce":
                y = multiply_by_quantized_multiplier_reference(s - (int(x_zp) - 128) * n, *consts) + int(y_zp) - 128
            elif rule == "q31_blocks16":
                m, e, bias = consts
                y = multiply_by_quantized_multiplier_reference(s, m, e, ties_up=c < c_n // 16 * 16) + bias
            else:
                t = np.float32(np.float32(np.float32(s - (int(x_zp) - 128) * n) * consts) + np.float32(int(y_zp) - 128))
                y = int(np.rint(t))
            out[b, c, 0, 0] = min(max(y, -128), 127) + 128
    return out


def mean_litert(x, x_scale, x_zp, y_scale, y_zp, rule) -> np.ndarray:
    """Array version of :func:`mean_litert_reference` (NumPy int64 / float32), bit-identical."""
    x = _mean_check(x, rule)
    nb, c_n, h, w = x.shape
    n = h * w
    s = x.astype(np.int64).sum(axis=(2, 3)) - 128 * n                  # (N, C): Σ q
    consts = _mean_constants(n, x_scale, x_zp, y_scale, y_zp, rule)
    zx, zy = int(x_zp) - 128, int(y_zp) - 128
    if rule == "q31_reduce":
        y = multiply_by_quantized_multiplier(s - zx * n, *consts) + zy
    elif rule == "q31_blocks16":
        m, e, bias = consts
        cut = c_n // 16 * 16                     # whole blocks of 16 channels: ties up; the rest: gemmlowp's
        y = np.empty_like(s)
        for sl, up in ((slice(0, cut), True), (slice(cut, c_n), False)):
            if s[:, sl].size:
                y[:, sl] = multiply_by_quantized_multiplier(s[:, sl], m, e, ties_up=up)
        y += bias
    else:
        t = ((s - zx * n).astype(np.float32) * consts).astype(np.float32)
        y = np.rint((t + np.float32(zy)).astype(np.float32)).astype(np.int64)
    return (np.clip(y, -128, 127) + 128).astype(np.uint8).reshape(nb, c_n, 1, 1)


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
