"""Quantized element-wise ops of MobileNetV3: hardswish, hardsigmoid (both uint8 → uint8 lookup tables) and
the quantized product of two tensors (squeeze-excite's ``scale · x``). docs/quantization.md, step 10 (other
ops); step 1 is the affine map, step 3 quantization, step 6 why frameworks differ by one LSB.

**Activations are lookup tables.** A one-input op on codes has only 256 possible inputs, so whatever the
framework computes in between, the op *is* a table ``y_q = T[x_q]``. The textbook table is

    x   = s_x·(q − z_x)                                             (step 1)
    T[q] = clamp(z_y + rne(f(x) / s_y), 0, 255)                      (step 3)
    hardswish(x)   = x · min(max(x + 3, 0), 6) / 6
    hardsigmoid(x) = min(max(x + 3, 0), 6) / 6

and each emulation (``target=``) builds the table with its framework's float32 roundings:

``"fbgemm"``   torch engines x86 / fbgemm (ATen ``qhardswish_kernel`` / ``qhardsigmoid_kernel`` in
               ``native/quantized/cpu/kernels/QuantizedOpKernels.cpp``): dequantize, ``f`` in float32
               (``f32(f32(x·t)/6)`` with ``t = min(max(f32(x + 3), 0), 6)``; hardsigmoid ``f32(t/6)``),
               quantize. ATen runs two loops with different roundings, exactly as in the residual add
               (:mod:`minquant.kernels.add`): the SIMD loop (the first ``B·⌊n/B⌋`` elements in *memory*
               order, ``B`` = :func:`~minquant.kernels.add.torch_vector_block`, 64 on AVX2) dequantizes
               with one FMA ``fma(s, f32(q), f32(s·(−z)))`` and quantizes with ``inv = f32(1/s_y)``
               computed in float64; the scalar tail computes ``f32(f32(q − z)·s)`` and
               ``inv = f32(1/f32(s_y))`` in float32. Both then take ``clamp(rne(f32(f(x)·inv)) + z_y)``.
               So there are two tables, and where an element sits decides which one applies. (Measured:
               with float32-exact scales the tables almost never differ; with ``s_y = 0.03`` five of 256
               entries do.) The output keeps the input's memory layout, so ``channels_last`` says
               whether memory order is NHWC. Hardsigmoid's output qparams are fixed: (1/256, 0).
``"qnnpack"``  torch engine qnnpack (QNNPACK ``hardswish.c`` / ``hardsigmoid.c``): one table, built once in
               float32: ``x = f32(s_x·f32(q − z_x))``, ``f`` as above, ``v = f32(f32(f(x)·f32(1/s_y)) + z_y)``
               clamped to [0, 255] in float, then ``lrintf`` (round half to even). The zero point is added
               *before* rounding (step 10, average pooling, shows the same choice). Position-independent.
``"minquant"`` and ``"onnxruntime"``: the textbook table in float64. (ONNX Runtime has no quantized
               hardswish; a QDQ model runs it in float — not studied here.)

**Quantized product.** ``y = s_a(a − z_a) · s_b(b − z_b)``, requantized to (s_y, z_y):

    y_q = clamp(z_y + rne(M · (a − z_a)(b − z_b)), lo, 255),     M = s_a·s_b / s_y

The integer product is exact (|·| ≤ 255² < 2²⁴, so also exact in float32); one multiplier, as in the
output stage of step 7. ``lo = z_y`` with a fused ReLU (``mul_relu``), else 0. Inputs broadcast like NumPy
(squeeze-excite multiplies an (N, C, 1, 1) scale into an (N, C, H, W) tensor).

``"fbgemm"`` and ``"qnnpack"``: torch's ``quantized::mul`` (``qmul_kernel``, the same kernel for both engines:
QNNPACK has no quint8 multiply) in float32: ``M = f32(f32(s_a·s_b)·f32(1/s_y))`` with every scale rounded
to float32 first, then ``rne(f32(f32(c)·M)) + z_y``. Its SIMD loop and scalar tail compute the same
thing, so position does not matter. ``"onnxruntime"``: ONNX Runtime's ``com.microsoft.QLinearMul`` (MLAS,
the same on every x86 CPU): ``r = f32(f32(s_a·s_b) / s_y)``, ``clamp(rne(f32(f32(f32(c)·r) + z_y)))`` — the
zero point added *before* rounding. ``"minquant"``: the float64 textbook.

Measured: the tables and the product match torch 2.14 (x86 and qnnpack engines, AVX2) bit for bit on every
code — tests/test_quantize_torch_import.py. This module imports only NumPy.
"""
from __future__ import annotations

import numpy as np

from .add import torch_vector_block
from ..target import resolve_ops
from .checks import check_elementwise_qparams
from .requantize import fma_f32_reference

__all__ = ["ACTIVATIONS", "activation_tables", "apply_tables", "qactivation", "qmul", "HARDSIGMOID_QPARAMS"]

_F32 = np.float32
_CODES = np.arange(256)

#: torch's fixed output qparams of quantized hardsigmoid (both engines): scale 1/256, zero point 0
HARDSIGMOID_QPARAMS = (1.0 / 256.0, 0)


def _hardswish32(x):
    t = np.minimum(np.maximum((x + _F32(3)).astype(_F32), _F32(0)), _F32(6))
    return ((x * t).astype(_F32) / _F32(6)).astype(_F32)


def _hardsigmoid32(x):
    t = np.minimum(np.maximum((x + _F32(3)).astype(_F32), _F32(0)), _F32(6))
    return (t / _F32(6)).astype(_F32)


def _hardswish64(x):
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _hardsigmoid64(x):
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


#: name → (float32 formula as torch evaluates it, float64 textbook formula)
ACTIVATIONS = {"hardswish": (_hardswish32, _hardswish64), "hardsigmoid": (_hardsigmoid32, _hardsigmoid64)}


def _check_qparams(x_scale, x_zp, y_scale, y_zp):
    check_elementwise_qparams(x_scale=x_scale, x_zp=x_zp, y_scale=y_scale, y_zp=y_zp)


def _round_clamp(v, zp=0, lo=0):
    """clamp(rne(v) + zp, lo, 255) as uint8 — the zero point is added *after* rounding (step 3)."""
    return np.clip(np.rint(v) + zp, lo, 255).astype(np.uint8)


def activation_tables(op: str, x_scale, x_zp, y_scale, y_zp, *, target: str = "fbgemm"):
    """``(T_vec, T_tail)``: the two 256-entry uint8 tables of ``op`` ('hardswish' / 'hardsigmoid') under
    ``target`` (module docstring). ``T_vec`` applies at the positions torch's SIMD loop handles, ``T_tail``
    at the scalar tail; for every emulation but 'fbgemm' they are the same array."""
    if op not in ACTIVATIONS:
        raise ValueError(f"no lookup-table activation {op!r}; known: {sorted(ACTIVATIONS)}")
    _check_qparams(x_scale, x_zp, y_scale, y_zp)
    f32, f64 = ACTIVATIONS[op]
    ar = resolve_ops(target)
    x_zp, y_zp = int(x_zp), int(y_zp)
    if ar.name == "fbgemm":
        s = _F32(x_scale)
        x_vec = fma_f32_reference(s, _CODES.astype(_F32), _F32(s * _F32(-x_zp)))     # one rounding
        x_tail = ((_CODES - x_zp).astype(_F32) * s).astype(_F32)
        inv_vec = _F32(1.0 / float(y_scale))                      # float64 division, then float32
        inv_tail = _F32(_F32(1) / _F32(y_scale))                  # float32 division
        t_vec = _round_clamp((f32(x_vec) * inv_vec).astype(_F32), y_zp)
        t_tail = _round_clamp((f32(x_tail) * inv_tail).astype(_F32), y_zp)
        return t_vec, t_tail
    if ar.name == "qnnpack":
        x = (_F32(x_scale) * (_CODES - x_zp).astype(_F32)).astype(_F32)
        v = ((_F32(_F32(1) / _F32(y_scale)) * f32(x)).astype(_F32) + _F32(y_zp)).astype(_F32)
        t = _round_clamp(np.clip(v, _F32(0), _F32(255)))          # zero point already in v
        return t, t
    t = _round_clamp(f64(float(x_scale) * (_CODES - x_zp)) / float(y_scale), y_zp)
    return t, t


def apply_tables(x_q, t_vec, t_tail, *, block: int, channels_last: bool = False):
    """``T[x_q]`` with torch fbgemm's position rule: in memory order (NHWC for a 4-D ``channels_last``
    tensor), the first ``block·⌊n/block⌋`` elements use ``t_vec``, the rest ``t_tail``. ``block``: ATen's
    SIMD block, :func:`~minquant.kernels.add.torch_vector_block` of the target (0: scalar loop only)."""
    x_q = np.asarray(x_q)
    if x_q.dtype != np.uint8:
        raise ValueError(f"expected uint8 codes, got dtype {x_q.dtype}")
    if np.array_equal(t_vec, t_tail):
        return t_vec[x_q]
    block = int(block)
    nhwc = channels_last and x_q.ndim == 4
    mem = np.ascontiguousarray(x_q.transpose(0, 2, 3, 1) if nhwc else x_q).reshape(-1)
    n_vec = (mem.size // block) * block if block else 0
    y = t_vec[mem]
    y[n_vec:] = t_tail[mem[n_vec:]]
    if nhwc:
        n, c, h, w = x_q.shape
        return np.ascontiguousarray(y.reshape(n, h, w, c).transpose(0, 3, 1, 2))
    return y.reshape(x_q.shape)


def qactivation(op: str, x_q, x_scale, x_zp, y_scale, y_zp, *, target: str = "fbgemm",
                channels_last: bool = False):
    """Quantized ``op`` ('hardswish' / 'hardsigmoid') of uint8 codes: :func:`activation_tables` applied
    with :func:`apply_tables`. (An executor builds the tables once per layer instead.)"""
    ar = resolve_ops(target)
    t_vec, t_tail = activation_tables(op, x_scale, x_zp, y_scale, y_zp, target=ar)
    return apply_tables(x_q, t_vec, t_tail, block=torch_vector_block(ar), channels_last=channels_last)


def qmul(a_q, a_scale, a_zp, b_q, b_scale, b_zp, y_scale, y_zp, *, relu: bool = False, target: str = "fbgemm"):
    """Quantized product of two uint8 tensors (NumPy broadcasting) → uint8 codes with (y_scale, y_zp);
    ``relu`` clamps at z_y. Formula and roundings: module docstring."""
    a_q, b_q = np.asarray(a_q), np.asarray(b_q)
    for name, q in (("a_q", a_q), ("b_q", b_q)):
        if q.dtype != np.uint8:
            raise ValueError(f"{name} must be a uint8 array, got dtype {q.dtype}")
    try:
        np.broadcast_shapes(a_q.shape, b_q.shape)
    except ValueError:
        raise ValueError(f"qmul: shapes {a_q.shape} and {b_q.shape} do not broadcast") from None
    check_elementwise_qparams(a_scale=a_scale, a_zp=a_zp, b_scale=b_scale, b_zp=b_zp, y_scale=y_scale, y_zp=y_zp)
    ar = resolve_ops(target)
    lo = int(y_zp) if relu else 0
    c = (a_q.astype(np.int32) - int(a_zp)) * (b_q.astype(np.int32) - int(b_zp))     # exact, |c| ≤ 65025
    if ar.name in ("fbgemm", "qnnpack"):
        m = _F32(_F32(_F32(a_scale) * _F32(b_scale)) * _F32(_F32(1) / _F32(y_scale)))
        return _round_clamp((c.astype(_F32) * m).astype(_F32), int(y_zp), lo)
    if ar.name == "onnxruntime":
        # MLAS's QLinearMul (x86): r = f32(f32(s_a·s_b) / s_y), then rne(f32(f32(c·r) + z_y)) — the zero
        # point is added before rounding, no FMA (measured: 0 of 786,876 code pairs differ; the float64
        # textbook formula is off by one code on 4,762 of them)
        r = _F32(_F32(_F32(a_scale) * _F32(b_scale)) / _F32(y_scale))
        v = ((c.astype(_F32) * r).astype(_F32) + _F32(y_zp)).astype(_F32)
        return np.clip(np.rint(v), lo, 255).astype(np.uint8)
    m = float(a_scale) * float(b_scale) / float(y_scale)
    return _round_clamp(c * m, int(y_zp), lo)
