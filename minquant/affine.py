"""The affine quantization map, its parameters and its inverse — all of minquant's quantization math.

    r = s · (q − z)            (docs/quantization.md, step 1)

``r`` is a real (float) value, ``q`` its integer code, ``s > 0`` the *scale* (the real step between two
adjacent codes) and ``z`` the *zero point* (the code that represents real 0 exactly, step 2).

This module is the only place in minquant that computes quantization parameters (:func:`choose_qparams`),
maps floats to codes (:func:`quantize`) and back (:func:`dequantize`). Everything else — observers,
kernels, model converters — calls these.

Frameworks differ in *how* they evaluate the same formula, and a one-LSB difference is enough to break
bit-exactness, so the two places where they disagree are explicit parameters (docs/quantization.md, step 6):

* ``quantize(..., target="torch")``: ``q = clamp(z + rne(f32(x · f32(1/f32(s)))))`` — PyTorch multiplies by
  the float32 reciprocal of the scale (``quantize_per_tensor``, fbgemm's ``Quantize``).
* ``quantize(..., target="onnxruntime")``: ``q = clamp(rne(x / s) + z)`` — ONNX Runtime divides
  (``QuantizeLinear``, MLAS). ``x · (1/s)`` and ``x / s`` round differently for a small fraction of inputs.
* ``choose_qparams(..., rule=...)``: the observer formula of ``torch.ao.quantization`` (float32), the
  ``ChooseQuantizationParams`` of fbgemm / torch dynamic quantization (float64, zero point chosen from
  whichever end has the smaller rounding error), or ONNX Runtime's ``compute_scale_zp`` (float64).

``rne`` is round-half-to-even (``np.rint``), the rounding of ``std::nearbyint`` under the default FPU mode
and of the ``cvtps2dq`` instruction that the SIMD kernels use.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .target import QUANTIZE_RULES, quantize_rule_of

__all__ = [
    "QType", "qtype", "choose_qparams", "quantize", "dequantize", "fake_quantize",
    "quantize_bias", "pack_int4", "unpack_int4", "to_float16", "QUANTIZE_RULES", "QPARAM_RULES",
]


@dataclass(frozen=True)
class QType:
    """An integer code type: its name, code range [qmin, qmax] and the NumPy dtype that stores codes.

    int4/uint4 codes are held one per int8/uint8 element while computing; :func:`pack_int4` stores two per
    byte for the model file."""
    name: str
    qmin: int
    qmax: int
    storage: type
    bits: int

    @property
    def signed(self) -> bool:
        return self.qmin < 0

    def reduced(self) -> "QType":
        """The range with one bit less (``reduce_range=True``): uint8 → [0, 127], int8 → [−64, 63].

        fbgemm's u8×s8 kernels on CPUs without VNNI add *pairs* of products in int16 (vpmaddubsw); with
        activations ≤ 127 a pair cannot overflow (127·128·2 = 32512 < 32767). docs/quantization.md, step 8."""
        return QType(self.name + "_reduced", self.qmin // 2, self.qmax // 2, self.storage, self.bits - 1)


_QTYPES = {
    "uint8": QType("uint8", 0, 255, np.uint8, 8),
    "int8": QType("int8", -128, 127, np.int8, 8),
    "uint4": QType("uint4", 0, 15, np.uint8, 4),
    "int4": QType("int4", -8, 7, np.int8, 4),
    "int32": QType("int32", -(2 ** 31), 2 ** 31 - 1, np.int32, 32),
    # ONNX's other QuantizeLinear outputs (opset 21+): 16-bit codes, and 2-bit codes held one per byte
    "uint16": QType("uint16", 0, 65535, np.uint16, 16),
    "int16": QType("int16", -32768, 32767, np.int16, 16),
    "uint2": QType("uint2", 0, 3, np.uint8, 2),
    "int2": QType("int2", -2, 1, np.int8, 2),
}


def qtype(dtype) -> QType:
    """Look up a code type by name ('uint8', 'int8', 'uint4', 'int4', 'int32'; 'uint16', 'int16', 'uint2',
    'int2' for ONNX's QuantizeLinear) or pass a QType through."""
    if isinstance(dtype, QType):
        return dtype
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in _QTYPES:
        raise ValueError(f"unsupported quantized dtype {dtype!r}; expected one of {sorted(_QTYPES)} "
                         "(float16 has its own function, to_float16)")
    return _QTYPES[name]


QPARAM_RULES = ("torch", "fbgemm", "onnxruntime")

_F32_EPS = float(np.finfo(np.float32).eps)
_SMALL_SCALE_THRESHOLD = np.float32(6.1e-5)  # fbgemm / torch quant_utils: fp16's smallest normal, rounded


# ---------------------------------------------------------------------------------------------------------
# Checks shared by every entry point: bad input gets a clear error, never silent garbage.
# ---------------------------------------------------------------------------------------------------------
def _check_finite(name: str, a: np.ndarray) -> None:
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        n_nan = int(np.isnan(a).sum())
        n_inf = int(np.isinf(a).sum())
        raise ValueError(f"{name} contains {n_nan} NaN and {n_inf} Inf value(s); quantization needs finite "
                         "input (check the calibration data / the previous layer)")


def _broadcast_params(x: np.ndarray, p, axis, group_size, what: str) -> np.ndarray:
    """Shape a per-tensor / per-channel / per-group parameter so that it broadcasts against ``x``.

    per tensor: a scalar. per channel: 1-D, one per index of ``x`` along ``axis``. per group: the shape of
    ``x`` with the ``axis`` dimension divided by ``group_size`` (each group of consecutive elements along
    ``axis`` shares one value)."""
    p = np.asarray(p)
    if axis is None:
        if p.size != 1:
            raise ValueError(f"{what} has {p.size} values but axis=None (per tensor) needs one")
        return p.reshape(())
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int or None, got {type(axis).__name__}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for a {x.ndim}-D input of shape {x.shape}")
    ax = axis % x.ndim
    if group_size is None:
        if p.ndim != 1 or p.shape[0] != x.shape[ax]:
            raise ValueError(f"{what} has shape {p.shape}; per-channel along axis {axis} needs "
                             f"({x.shape[ax]},) for input of shape {x.shape}")
        shape = [1] * x.ndim
        shape[ax] = x.shape[ax]
        return p.reshape(shape)
    if x.shape[ax] % group_size:
        raise ValueError(f"axis {axis} has length {x.shape[ax]}, not a multiple of group_size={group_size}")
    gshape = list(x.shape)
    gshape[ax] = x.shape[ax] // group_size
    if tuple(p.shape) != tuple(gshape):
        raise ValueError(f"{what} has shape {p.shape}; per-group (group_size={group_size}, axis={axis}) "
                         f"needs {tuple(gshape)} for input of shape {x.shape}")
    return np.repeat(p, group_size, axis=ax)


def _check_scale(scale: np.ndarray) -> None:
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"scale must be finite and > 0, got {scale.ravel()[:8]}")


def _integer_zero_point(zp: np.ndarray) -> np.ndarray:
    """Zero points as int64 — refusing values that are not whole numbers (a zero point is a code)."""
    if zp.dtype.kind == "b" or zp.dtype.kind not in "iuf":
        raise TypeError(f"zero_point must be integer codes, got dtype {zp.dtype}")
    if zp.dtype.kind == "f" and (not np.all(np.isfinite(zp)) or np.any(zp != np.rint(zp))):
        raise ValueError(f"zero_point must be a whole number (it is a code), got {zp.ravel()[:8]}")
    return zp.astype(np.int64)


def _check_zero_point(zp: np.ndarray, qt: QType) -> None:
    if np.any(zp < qt.qmin) or np.any(zp > qt.qmax):
        raise ValueError(f"zero point {zp.ravel()[:8]} outside the {qt.name} range [{qt.qmin}, {qt.qmax}]")


# ---------------------------------------------------------------------------------------------------------
# choose_qparams: the one function that turns a real range [min, max] into (scale, zero_point).
# ---------------------------------------------------------------------------------------------------------
def choose_qparams(min_val, max_val, dtype="uint8", *, symmetric: bool = False, reduce_range: bool = False,
                   eps: float = _F32_EPS, rule: str = "torch"):
    """Scale and zero point that map the real range [min_val, max_val] onto ``dtype``'s codes.

    Works element-wise on arrays of mins and maxes (per channel / per group). Returns ``(scale, zero_point)``
    as (float32 or float64, int32) arrays of the same shape (0-d for scalars).

    The range is first widened to contain 0 — ``min⁻ = min(min, 0)``, ``max⁺ = max(max, 0)`` — so that real
    0 (zero padding, ReLU's floor) is exactly a code (docs/quantization.md, step 2). Then, by ``rule``:

    ``"torch"`` — ``torch.ao.quantization`` observers (``_calculate_qparams``), float32 arithmetic:
        affine:     ``s = max(f32(max⁺ − min⁻) / (qmax − qmin), eps)``,
                    ``z = clamp(qmin − rne(min⁻ / s), qmin, qmax)``
        symmetric:  ``s = max(max(−min⁻, max⁺) / ((qmax − qmin) / 2), eps)``; ``z = 0`` for signed types,
                    ``(qmin + qmax + 1) // 2`` (128 for uint8) for unsigned ones.
        min == max == 0 gives ``s = eps`` (float32 machine epsilon), ``z = qmin`` (affine).
    ``"fbgemm"`` — fbgemm / ``quant_utils::ChooseQuantizationParams``, used by torch's *dynamic* quantization
        for activations at run time. float64: ``s = (max⁺ − min⁻) / (qmax − qmin)``; ``s = 0.1`` if
        ``f32(s) == 0`` or ``1/f32(s)`` overflows; scales below 6.1e-5 (fp16's smallest normal) are raised
        to it and the range stretched to match; the zero point is computed from the end (min or max) with
        the smaller error term ``|q_end| − |end / s|`` and nudged (rne) into [qmin, qmax]. Scale is
        returned as float64, as torch stores it. ``symmetric`` is fbgemm's ``preserve_sparsity``.
    ``"onnxruntime"`` — ``onnxruntime.quantization.quant_utils.compute_scale_zp``: float64
        ``s = (max⁺ − min⁻) / (qmax − qmin)`` (symmetric: the range [−absmax, absmax]),
        ``z = rne(qmin − min⁻ / s)`` (symmetric: ``rne((qmin + qmax) / 2)``), scale stored as float32;
        a scale below float32's smallest normal becomes 1.0 with ``z = 0``.

    ``reduce_range`` halves the code range (uint8 → [0, 127], int8 → [−64, 63]); see :meth:`QType.reduced`.

    Edge cases: NaN/Inf in min/max, or min > max, raise ``ValueError``.
    """
    if rule not in QPARAM_RULES:
        raise ValueError(f"unknown qparams rule {rule!r}; expected one of {QPARAM_RULES}")
    qt = qtype(dtype)
    qt_r = qt.reduced() if reduce_range else qt
    qmin, qmax = qt_r.qmin, qt_r.qmax
    mn = np.asarray(min_val, dtype=np.float32)
    mx = np.asarray(max_val, dtype=np.float32)
    _check_finite("min_val", mn)
    _check_finite("max_val", mx)
    if mn.shape != mx.shape:
        raise ValueError(f"min_val shape {mn.shape} != max_val shape {mx.shape}")
    if np.any(mn > mx):
        raise ValueError(f"min_val > max_val: {mn[mn > mx][:4]} > {mx[mn > mx][:4]}")

    if rule == "torch":
        span = np.maximum(mx, 0).astype(np.float64) - np.minimum(mn, 0).astype(np.float64)
        if np.any(span > np.finfo(np.float32).max):
            raise ValueError(f"the range [{float(np.min(mn)):.3g}, {float(np.max(mx)):.3g}] is too wide for the 'torch' "
                             "rule: max − min overflows float32 (torch's observers would return an infinite scale)")
        min_neg = np.minimum(mn, np.float32(0))
        max_pos = np.maximum(mx, np.float32(0))
        if symmetric:
            max_pos = np.maximum(-min_neg, max_pos)
            scale = (max_pos / np.float32((qmax - qmin) / 2)).astype(np.float32)
            scale = np.maximum(scale, np.float32(eps))
            zp = np.full(mn.shape, 0 if qt.signed else (qmin + qmax + 1) // 2, dtype=np.int32)
        else:
            scale = ((max_pos - min_neg) / np.float32(qmax - qmin)).astype(np.float32)
            scale = np.maximum(scale, np.float32(eps))
            zp = qmin - np.rint(min_neg / scale).astype(np.int64)
            zp = np.clip(zp, qmin, qmax).astype(np.int32)
        return scale.astype(np.float32), zp

    if rule == "onnxruntime":
        min_neg = np.minimum(mn, np.float32(0))
        max_pos = np.maximum(mx, np.float32(0))
        if symmetric:
            absmax = np.maximum(np.abs(min_neg), np.abs(max_pos))
            min_neg, max_pos = -absmax, absmax
        scale64 = (max_pos.astype(np.float64) - min_neg.astype(np.float64)) / (float(qmax) - float(qmin))
        tiny = scale64 < np.finfo(np.float32).tiny
        safe = np.where(tiny, 1.0, scale64)
        if symmetric:
            zp = np.full(mn.shape, np.rint((qmin + qmax) / 2.0), dtype=np.float64)
        else:
            zp = np.rint(qmin - min_neg / safe)
        zp = np.where(tiny, 0, zp).astype(np.int32)
        scale = np.where(tiny, np.float32(1.0), scale64.astype(np.float32)).astype(np.float32)
        return scale, zp

    # rule == "fbgemm": one scalar at a time, exactly as the C++ does it.
    flat_min, flat_max = mn.ravel(), mx.ravel()
    scales = np.empty(flat_min.shape, dtype=np.float64)
    zps = np.empty(flat_min.shape, dtype=np.int32)
    for i in range(flat_min.size):
        scales[i], zps[i] = _fbgemm_qparams(np.float32(flat_min[i]), np.float32(flat_max[i]), qmin, qmax,
                                            symmetric)
    return scales.reshape(mn.shape), zps.reshape(mn.shape)


def _fbgemm_qparams(mn: np.float32, mx: np.float32, qmin: int, qmax: int, preserve_sparsity: bool):
    """One (scale, zero point) by torch's ``quant_utils::ChooseQuantizationParams`` (see choose_qparams)."""
    f32 = np.float32
    if mn < 0 and mx > 0 and preserve_sparsity:
        sym_qmin = -((qmax - qmin) // 2 + 1)
        sym_qmax = (qmax - qmin) // 2
        max_scale = max(abs(float(mn) / sym_qmin), abs(float(mx) / sym_qmax))
        mn, mx = f32(max_scale * sym_qmin), f32(max_scale * sym_qmax)
    mn = min(mn, f32(0))
    mx = max(mx, f32(0))
    scale = (float(mx) - float(mn)) / (qmax - qmin)
    with np.errstate(divide="ignore", over="ignore"):
        if f32(scale) == 0 or np.isinf(f32(1) / f32(scale)):
            scale = 0.1
    if scale < _SMALL_SCALE_THRESHOLD:
        org = f32(scale)
        scale = float(_SMALL_SCALE_THRESHOLD)
        if mn == 0:
            mx = f32(_SMALL_SCALE_THRESHOLD * (qmax - qmin))
        elif mx == 0:
            mn = f32(-_SMALL_SCALE_THRESHOLD * (qmax - qmin))
        else:
            amp = f32(_SMALL_SCALE_THRESHOLD / org)
            mn, mx = f32(mn * amp), f32(mx * amp)
    zp_from_min = qmin - float(mn) / scale
    zp_from_max = qmax - float(mx) / scale
    err_min = abs(qmin) - abs(float(mn) / scale)
    err_max = abs(qmax) - abs(float(mx) / scale)
    zp0 = zp_from_min if err_min < err_max else zp_from_max
    if mn < 0 and mx > 0 and preserve_sparsity:
        zp0 = (qmin + qmax) / 2
    if zp0 < qmin:
        zp = qmin
    elif zp0 > qmax:
        zp = qmax
    else:
        zp = int(np.rint(zp0))
    return scale, zp


# ---------------------------------------------------------------------------------------------------------
# quantize / dequantize / fake_quantize
# ---------------------------------------------------------------------------------------------------------
def quantize(x, scale, zero_point, dtype="uint8", axis=None, *, group_size=None, target="torch"):
    """Real values → integer codes: ``q = clamp(z + rne(x / s), qmin, qmax)`` (docs/quantization.md, step 3).

    Parameters
    ----------
    x : float array.  NaN or Inf raise ``ValueError``.
    scale, zero_point : scalar (per tensor), 1-D of length ``x.shape[axis]`` (per channel), or, with
        ``group_size``, the shape of ``x`` with ``axis`` divided by ``group_size`` (per group).
    dtype : 'uint8', 'int8', 'uint4', 'int4', 'int32' (bias), or 'uint16', 'int16', 'uint2', 'int2' (ONNX's
        QuantizeLinear). 4-bit and 2-bit codes come back one per int8/uint8 element; :func:`pack_int4`
        stores 4-bit codes two per byte.
    target : the quantize rule, or a target that implies it (a framework name such as 'fbgemm' / 'x86' /
        'qnnpack' → 'torch', 'onnxruntime' / 'minquant' → 'onnxruntime', or a :class:`~minquant.target.Target`):
        'torch' — multiply by the float32 reciprocal: ``rne(f32(x · f32(1/f32(s))))`` then ``+ z``;
        'onnxruntime' — divide: ``rne(x / s)`` in float32, then ``+ z``. They differ by one code on the
        inputs where ``x·(1/s)`` and ``x/s`` round to different sides of a .5 tie (docs/quantization.md, step 6).

    Returns codes in ``QType.storage`` (uint8 / int8 / int32).
    """
    rule = quantize_rule_of(target)
    qt = qtype(dtype)
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError(f"quantize expects floating-point input, got dtype {x.dtype}")
    _check_finite("input", x)
    if x.dtype != np.float32 and x.size and np.abs(x).max() > np.finfo(np.float32).max:
        raise ValueError(f"input has values beyond float32's range (max |x| = {np.abs(x).max():.3g}); "
                         "quantization computes in float32")
    x = x.astype(np.float32, copy=False)
    s = np.asarray(_broadcast_params(x, scale, axis, group_size, "scale"), dtype=np.float64)
    _check_scale(s)
    if np.any(s > np.finfo(np.float32).max) or np.any(s.astype(np.float32) == 0):
        raise ValueError(f"scale {s.ravel()[:4]} is not representable in float32 (quantization computes in float32)")
    s = s.astype(np.float32)
    z = _integer_zero_point(_broadcast_params(x, zero_point, axis, group_size, "zero_point"))
    _check_zero_point(z, qt)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if rule == "torch":
            inv = (np.float32(1) / s).astype(np.float32)
            if not np.all(np.isfinite(inv)):
                raise ValueError(f"scale {s[~np.isfinite(inv)].ravel()[:4]} is too small: its float32 reciprocal "
                                 "overflows, and the 'torch' rule quantizes as x·(1/s) (use a scale ≥ 3e-39)")
            t = np.rint((x * inv).astype(np.float32)).astype(np.float64)
        else:
            t = np.rint((x / s).astype(np.float32)).astype(np.float64)
    q = np.clip(t + z, qt.qmin, qt.qmax)
    return q.astype(qt.storage)


def dequantize(q, scale, zero_point, axis=None, *, group_size=None):
    """Integer codes → real values: ``r = f32(s) · f32(q − z)`` in float32 (docs/quantization.md, step 1).

    Same parameter shapes as :func:`quantize`. float32 is what PyTorch's ``dequantize`` and ONNX Runtime's
    ``DequantizeLinear`` compute, so results match them bit for bit."""
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise ValueError(f"dequantize expects integer codes, got dtype {q.dtype}")
    s = _broadcast_params(q, scale, axis, group_size, "scale").astype(np.float32)
    z = _broadcast_params(q, zero_point, axis, group_size, "zero_point").astype(np.int64)
    _check_scale(s)
    return ((q.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)


def fake_quantize(x, scale, zero_point, dtype="uint8", axis=None, *, group_size=None, target="torch"):
    """Quantize then dequantize: the float value the integer model will actually see.

    ``fq(x) = s · (clamp(z + rne(x / s), qmin, qmax) − z)`` — what ``torch.fake_quantize_per_tensor_affine``
    computes in the forward pass of quantization-aware training."""
    q = quantize(x, scale, zero_point, dtype, axis, group_size=group_size, target=target)
    return dequantize(q, scale, zero_point, axis, group_size=group_size)


def quantize_bias(bias, input_scale, weight_scale, *, target="onnxruntime"):
    """Float bias → int32 codes on the accumulator's scale ``s_xw = f32(s_x · s_w)``, zero point 0
    (docs/quantization.md, step 5). ``weight_scale`` may be per channel.

    ``target="onnxruntime"``: ONNX Runtime's quantization tool (``quantize_bias_static_impl``) divides in
    float64 and rounds half to even: ``b_q = rne(f64(b) / f64(s_xw))``, clipped to int32.
    ``target="torch"``: torch (qnnpack's int32 bias) quantizes like any tensor, multiplying by the float32
    reciprocal: ``b_q = rne(f32(b · f32(1 / s_xw)))``."""
    b = np.asarray(bias, dtype=np.float32)
    if b.ndim != 1:
        raise ValueError(f"bias must be 1-D, got shape {b.shape}")
    _check_finite("bias", b)
    ats = (np.float32(input_scale) * np.asarray(weight_scale, dtype=np.float32)).astype(np.float32)
    ats = np.ascontiguousarray(np.broadcast_to(ats, b.shape))
    _check_scale(ats)
    if quantize_rule_of(target) == "onnxruntime":
        q = np.rint(b.astype(np.float64) / ats.astype(np.float64))
        return np.clip(q, -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
    return quantize(b, ats, np.zeros(b.shape, np.int32), "int32", axis=0, target=target)


def pack_int4(q) -> np.ndarray:
    """Store 4-bit codes two per byte: element 2i in the low nibble, 2i+1 in the high nibble.

    Accepts int4 ([−8, 7], two's complement nibbles) or uint4 ([0, 15]) codes; an odd count is padded with
    a zero nibble. Returns a flat uint8 array of ``ceil(n / 2)`` bytes (the layout of ONNX's INT4/UINT4)."""
    q = np.asarray(q).ravel()
    if q.dtype.kind not in "iu" or q.size and (q.min() < -8 or q.max() > 15):
        raise ValueError("pack_int4 expects integer codes in [-8, 7] (int4) or [0, 15] (uint4)")
    if q.size and q.min() < 0 and q.max() > 7:
        raise ValueError(f"pack_int4: codes span [{int(q.min())}, {int(q.max())}], which is neither int4 [-8, 7] nor "
                         "uint4 [0, 15] — the packed nibbles could not be unpacked to both")
    nib = (q.astype(np.int16) & 0xF).astype(np.uint8)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed, count: int, *, signed: bool) -> np.ndarray:
    """Inverse of :func:`pack_int4`: ``count`` codes as int8 (signed, sign-extended nibbles) or uint8."""
    packed = np.asarray(packed, dtype=np.uint8).ravel()
    if packed.size != (count + 1) // 2:
        raise ValueError(f"packed int4 buffer has {packed.size} bytes, expected {(count + 1) // 2} for "
                         f"{count} codes")
    nib = np.empty(packed.size * 2, dtype=np.uint8)
    nib[0::2] = packed & 0xF
    nib[1::2] = packed >> 4
    nib = nib[:count]
    if signed:
        return (nib.astype(np.int8) ^ 8) - np.int8(8)  # sign-extend: 8..15 → −8..−1
    return nib


def to_float16(x, *, saturate: bool = True) -> np.ndarray:
    """float32 → float16 (round to nearest even). Values beyond ±65504 saturate to ±65504 (as torch's
    fp16 weight packing does) unless ``saturate=False``, which raises instead. NaN/Inf raise."""
    x = np.asarray(x, dtype=np.float32)
    _check_finite("input", x)
    fmax = np.float32(np.finfo(np.float16).max)
    if np.any(np.abs(x) > fmax):
        if not saturate:
            raise ValueError(f"{int((np.abs(x) > fmax).sum())} value(s) exceed float16's range ±65504")
        x = np.clip(x, -fmax, fmax)
    return x.astype(np.float16)
