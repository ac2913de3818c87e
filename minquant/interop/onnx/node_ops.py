"""ONNX's quantization operators, one function each, on run-time values: ``op(node, inputs, target) →
outputs`` (lists of :class:`~minquant.interop.onnx.dtypes.Tensor`, ``None`` for an omitted optional
input). :class:`~minquant.interop.onnx.program.OnnxProgram` calls them node by node, so scales, zero points
and weights may be graph inputs as well as initializers. Every formula is computed by minquant's own
functions: :func:`~minquant.affine.quantize` / :func:`~minquant.affine.dequantize`, and the integer kernels
(:func:`~minquant.kernels.qlinear`, :func:`~minquant.kernels.qconv2d`, :func:`~minquant.kernels.gemm_u8s8`...)
under ``target`` (default ONNX Runtime on this CPU). docs/onnx.md states the rules.

**QuantizeLinear** ``y = saturate(rne(x / s) + z)``: the division in its precision — the ``precision``
attribute, else (opset ≥ 23) the scale's type, else float32 — x and s rounded to that type and the quotient
too (float16: ``f16(f16(x) / f16(s))``, what ONNX Runtime computes), then half to even; ``saturate`` clamps to the code range of the output type
— z's type, else the ``output_dtype`` attribute, else uint8: uint8, int8, uint16, int16, uint4, int4, uint2,
int2. ±Inf saturate to the ends of the range; NaN is refused (the spec leaves it undefined for integers).
float8 / float4 outputs: the quotient cast to the type, round half to even with the ``saturate`` attribute's
rule (:mod:`~minquant.interop.onnx.minifloat`; the zero point must be 0 — float4 adds it, turning −0 into +0,
float8 does not: both as ONNX's reference evaluator).

**DequantizeLinear** ``y = (x − z) · s`` in float32 (``f32(x − z) · f32(s)``, as ONNX Runtime), rounded to
the output type (the scale's type, or ``output_dtype``); int32 input takes no zero point; float8 / float4
input: ``f32(x) · f32(s)`` (zero point 0).

**Scale layouts** (both): per tensor — one value (a scalar or shape (1,)); per axis — 1-D, one value per
index of ``x`` along ``axis`` (default 1, negative counts from the end); blocked — ``block_size`` B > 0 and a
scale of x's rank whose ``axis`` dimension is ⌈D/B⌉ (all others equal x's): element i along ``axis`` uses
scale[⌊i/B⌋] (the last block may be short). The zero point has the scale's shape.

**QLinearMatMul**, **MatMulInteger**, **QLinearConv**, **ConvInteger** (and com.microsoft's QGemm): the
exact integer accumulator ``Σ (a − z_a)(b − z_b)`` — every pair of types (u8/s8 × u8/s8) is moved to
MLAS's u8 × s8 form by adding 128 to int8 activations and subtracting 128 from uint8 weights (zero points
too), which leaves each difference ``a − z_a`` unchanged; only a u8 × s8 product follows the target's pair
saturation (ONNX Runtime on CPUs without AVX-VNNI; its other kernels accumulate exactly). The QLinear ops
then requantize with the target's output stage — ONNX Runtime: ``clamp(rne(f32(acc + b) · M) + z_y)``,
``M = f32(f32(s_a · s_b) / s_y)`` — int8 outputs computed as uint8 codes with z_y + 128, minus 128 (the same
numbers: the clamp and the integer shift commute). float16 scales are widened to float32 exactly. Per-row
scales / zero points of ``a`` and per-column ones of ``b`` are supported (a per-row one runs row by row).
Batched matmuls broadcast their leading dimensions (NumPy's rules); convolutions are 1-D or 2-D, any
``pads`` (an asymmetric one is applied as explicit padding with the input's zero point).

**DynamicQuantizeLinear**: uint8 qparams from ``min(0, min x)``, ``max(0, max x)`` in float32
(:func:`~minquant.kernels.dynamic.dynamic_input_qparams`), then QuantizeLinear.

com.microsoft ops (what ONNX Runtime's quantization tool writes, and the golden recordings hold): QGemm,
QLinearAdd, QLinearMul, QLinearGlobalAveragePool, MatMulNBits (4-bit), and its QuantizeLinear /
DequantizeLinear.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ...affine import dequantize, qtype, quantize
from .dtypes import CODE_TYPES, MINIFLOATS, STORAGE, Tensor, type_name
from .proto import ONode, _fail, onnx_pads

__all__ = ["NODE_OPS", "quantize_linear", "dequantize_linear", "dynamic_quantize_linear", "qlinear_matmul",
           "matmul_integer", "qlinear_conv", "conv_integer", "qgemm", "qlinear_add", "qlinear_mul",
           "qlinear_global_average_pool", "matmul_nbits", "identity"]

_FLOATS = ("FLOAT", "FLOAT16")


# ----------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------
def _get(ins, i):
    return ins[i] if i < len(ins) else None


def _need(n: ONode, ins, i, what) -> Tensor:
    t = _get(ins, i)
    if t is None:
        _fail(n, f"{what} (input {i}) is missing")
    return t


def _types(n: ONode, t: Tensor, allowed, what):
    if t.type not in allowed:
        _fail(n, f"{what} is {t.type.lower()}; this op takes {' or '.join(a.lower() for a in allowed)}")


def _scale(n: ONode, t: Tensor, what) -> np.ndarray:
    """A float32 / float16 scale as float32 (every float16 is a float32, so widening is exact)."""
    _types(n, t, _FLOATS, what)
    s = t.array.astype(np.float32)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        _fail(n, f"{what} must be finite and > 0, got {s.ravel()[:4]}")
    return s


def _one(n: ONode, a: np.ndarray, what):
    if a.size != 1:
        _fail(n, f"{what} must be one value (per tensor), got shape {a.shape}")
    return a.reshape(())[()]


def _check_matching_zp(n: ONode, z: Tensor | None, s: np.ndarray, what):
    if z is not None and z.array.shape != s.shape and not (z.array.size == 1 and s.size == 1):
        _fail(n, f"{what} zero point has shape {z.array.shape}, its scale {s.shape}")


# ----------------------------------------------------------------------------------------------------------
# QuantizeLinear / DequantizeLinear: per-tensor, per-axis and blocked parameters
# ----------------------------------------------------------------------------------------------------------
def _layout(n: ONode, x_shape, p: np.ndarray, what):
    """``(param, axis, group_size)`` for :func:`~minquant.affine.quantize` / ``dequantize``: per tensor
    ``(scalar, None, None)``, per axis ``(1-D, axis, None)``, blocked ``(param expanded to x's shape, axis,
    1)`` (module docstring)."""
    r = len(x_shape)
    block = int(n.attrs.get("block_size", 0))
    axis = int(n.attrs.get("axis", 1))
    if block < 0:
        _fail(n, f"block_size must be ≥ 0, got {block}")
    if block == 0 and p.size == 1 and p.ndim <= 1:
        return p.reshape(()), None, None
    if not -r <= axis < r:
        _fail(n, f"axis {axis} is out of range for a {r}-D input")
    ax = axis % r
    if block == 0:
        if p.ndim != 1 or p.shape[0] != x_shape[ax]:
            _fail(n, f"{what} of shape {p.shape} is neither one value, nor one per index along axis {axis} "
                     f"({x_shape[ax]},) — blocked quantization needs the block_size attribute")
        return p, ax, None
    want = list(x_shape)
    want[ax] = -(-x_shape[ax] // block)
    if list(p.shape) != want:
        _fail(n, f"blocked {what} (block_size {block} along axis {axis}) must have shape {tuple(want)}, got "
                 f"{p.shape}")
    full = np.repeat(p, block, axis=ax)
    return np.take(full, np.arange(x_shape[ax]), axis=ax), ax, 1


def _precision(n: ONode, scale_type: str) -> str:
    """The type QuantizeLinear divides in: the ``precision`` attribute, else (opset ≥ 23) the scale's type,
    else float32 (opset < 23: ONNX Runtime widens float16 to float32)."""
    prec = int(n.attrs.get("precision", 0))
    p = type_name(prec) if prec else (scale_type if n.opset >= 23 else "FLOAT")
    if p not in _FLOATS:
        _fail(n, f"division precision {p.lower()} is not supported (float32 or float16)")
    return p


def _broadcast(p, ax, gs, ndim) -> np.ndarray:
    """A :func:`_layout` parameter shaped to broadcast against the input (per axis: the axis kept)."""
    p = np.asarray(p)
    return p if ax is None or gs is not None else np.expand_dims(p, tuple(i for i in range(ndim) if i != ax))


def _divide(n: ONode, xf, sp, ax, gs, precision) -> np.ndarray:
    """``x / s`` in ``precision`` as float32 values: float16 — x, s and the quotient each rounded to float16
    (the quotient of two float16 computed in float32 and rounded once more is the correctly rounded float16
    quotient: 24 ≥ 2·11 + 2 bits); float32 — one float32 division."""
    s = _broadcast(sp, ax, gs, xf.ndim).astype(np.float32)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if precision == "FLOAT16":
            s16 = s.astype(np.float16)
            if not np.all(np.isfinite(s16)) or np.any(s16 == 0):
                _fail(n, "y_scale is not representable in float16, the division's precision")
            return (xf.astype(np.float16).astype(np.float32) / s16.astype(np.float32)).astype(np.float16) \
                .astype(np.float32)
        return (xf / s).astype(np.float32)


def quantize_linear(n: ONode, ins, target):
    from .minifloat import from_minifloat, to_minifloat
    x, st, z = _need(n, ins, 0, "x"), _need(n, ins, 1, "y_scale"), _get(ins, 2)
    _types(n, x, _FLOATS, "x")
    s = _scale(n, st, "y_scale")
    out_dtype = int(n.attrs.get("output_dtype", 0))
    out_type = z.type if z is not None else (type_name(out_dtype) if out_dtype else "UINT8")
    if z is not None and out_dtype and type_name(out_dtype) != z.type:
        _fail(n, f"output_dtype {type_name(out_dtype).lower()} differs from the zero point's type {z.type.lower()}")
    if out_type not in CODE_TYPES and out_type not in MINIFLOATS:
        _fail(n, f"output type {out_type.lower()} is not a code type minquant quantizes to")
    _check_matching_zp(n, z, s, "y_scale")
    xf = x.array.astype(np.float32)
    sp, ax, gs = _layout(n, xf.shape, s, "y_scale")
    precision = _precision(n, st.type)
    if out_type in MINIFLOATS:                  # float8: cast(x / s); float4: cast(x / s + 0) (−0 → +0)
        if z is not None and np.any(from_minifloat(z.array) != 0):
            _fail(n, f"a {out_type.lower()} zero point must be 0")
        t = _divide(n, xf, sp, ax, gs, precision)
        if out_type == "FLOAT4E2M1":
            t = (t + np.float32(0)).astype(np.float32)
        q = to_minifloat(t, out_type, saturate=bool(int(n.attrs.get("saturate", 1))))
        return [Tensor(q, out_type)]
    zp = z.array if z is not None else np.zeros(s.shape, STORAGE[out_type])
    if np.isnan(xf).any():
        _fail(n, f"x holds {int(np.isnan(xf).sum())} NaN value(s); quantizing NaN to integer codes is undefined")
    zpp = _layout(n, xf.shape, zp.reshape(s.shape), "y_zero_point")[0]
    if precision == "FLOAT16":                  # the float16 quotient, then rounded and clamped with scale 1
        xf = _divide(n, xf, sp, ax, gs, precision)
        sp = np.ones(np.shape(sp), np.float32)
    inf = np.isinf(xf)
    name = CODE_TYPES[out_type]
    q = quantize(np.where(inf, np.float32(0), xf), sp, zpp, name, ax, group_size=gs, target=target)
    if inf.any():                                   # saturate: ±Inf → the ends of the code range
        qt = qtype(name)
        q[inf] = np.where(xf[inf] > 0, qt.qmax, qt.qmin)
    return [Tensor(q.astype(STORAGE[out_type]), out_type)]


def dequantize_linear(n: ONode, ins, target):
    from .minifloat import from_minifloat
    x, st, z = _need(n, ins, 0, "x"), _need(n, ins, 1, "x_scale"), _get(ins, 2)
    _types(n, x, tuple(CODE_TYPES) + ("INT32",) + tuple(MINIFLOATS), "x")
    s = _scale(n, st, "x_scale")
    out_dtype = int(n.attrs.get("output_dtype", 0))
    out_type = type_name(out_dtype) if out_dtype else st.type
    if out_type not in _FLOATS:
        _fail(n, f"output type {out_type.lower()} is not float32 or float16")
    if z is not None and z.type != x.type:
        _fail(n, f"the zero point is {z.type.lower()}, x is {x.type.lower()}")
    _check_matching_zp(n, z, s, "x_scale")
    if x.type in MINIFLOATS:                    # float8 / float4: y = f32(x) · s, zero point 0
        if z is not None and np.any(from_minifloat(z.array) != 0):
            _fail(n, f"a {x.type.lower()} zero point must be 0")
        sp, ax, gs = _layout(n, x.shape, s, "x_scale")
        y = (from_minifloat(x.array) * _broadcast(sp, ax, gs, x.array.ndim).astype(np.float32)).astype(np.float32)
        return [Tensor(y.astype(STORAGE[out_type]), out_type)]
    zp = z.array.reshape(s.shape) if z is not None else np.zeros(s.shape, np.int64)
    if x.type == "INT32" and np.any(zp):
        _fail(n, "int32 input takes no (or a zero) zero point")
    sp, ax, gs = _layout(n, x.shape, s, "x_scale")
    zpp = _layout(n, x.shape, zp, "x_zero_point")[0]
    y = dequantize(x.array, sp, zpp, ax, group_size=gs)
    return [Tensor(y.astype(STORAGE[out_type]), out_type)]


def dynamic_quantize_linear(n: ONode, ins, target):
    from ...kernels.dynamic import dynamic_input_qparams
    x = _need(n, ins, 0, "x")
    _types(n, x, ("FLOAT",), "x")
    if not np.all(np.isfinite(x.array)):
        _fail(n, "x must be finite (its min and max become the quantization range)")
    s, z = dynamic_input_qparams(x.array, reduce_range=False, target=target)
    y = quantize(x.array, s, z, "uint8", target=target)
    return [Tensor(y, "UINT8"), Tensor(np.array(s, np.float32), "FLOAT"), Tensor(np.array(z, np.uint8), "UINT8")]


# ----------------------------------------------------------------------------------------------------------
# Integer products: every type pair in MLAS's u8 × s8 form
# ----------------------------------------------------------------------------------------------------------
def _as_u8(n: ONode, t: Tensor, zp, what):
    """uint8 activations and their zero point(s) (int64): int8 codes + 128."""
    _types(n, t, ("UINT8", "INT8"), what)
    z = np.zeros(1, np.int64) if zp is None else zp.array.astype(np.int64).reshape(-1)
    if zp is not None and zp.type != t.type:
        _fail(n, f"{what}'s zero point is {zp.type.lower()}, {what} is {t.type.lower()}")
    if t.type == "INT8":
        return (t.array.astype(np.int16) + 128).astype(np.uint8), z + 128
    return t.array, z


def _as_s8(n: ONode, t: Tensor, zp, what):
    """int8 weights and their zero point(s) (int64): uint8 codes − 128."""
    _types(n, t, ("UINT8", "INT8"), what)
    z = np.zeros(1, np.int64) if zp is None else zp.array.astype(np.int64).reshape(-1)
    if zp is not None and zp.type != t.type:
        _fail(n, f"{what}'s zero point is {zp.type.lower()}, {what} is {t.type.lower()}")
    if t.type == "UINT8":
        return (t.array.astype(np.int16) - 128).astype(np.int8), z - 128
    return t.array, z


def _native(a: Tensor, b: Tensor) -> bool:
    return a.type == "UINT8" and b.type == "INT8"


def _linear_target(target, native: bool):
    """The arithmetic of an integer product: the target's, without pair saturation unless u8 × s8."""
    from ...target import resolve_linear
    ar = resolve_linear(target)
    return ar if native or not ar.saturate_pairs else dataclasses.replace(ar, saturate_pairs=False)


def _per(n: ONode, v: np.ndarray, count: int, what) -> np.ndarray:
    """One value, or ``count`` values (per row / column / channel), as a length-``count`` int64/float array."""
    v = v.reshape(-1)
    if v.size == 1:
        return np.repeat(v, count)
    if v.size != count:
        _fail(n, f"{what} must be one value or {count}, got {v.size}")
    return v


def _batched(n: ONode, a: np.ndarray, b: np.ndarray):
    """NumPy matmul's operand shapes: ``(a3, b3, out_shape)`` with a3 (B, M, K), b3 (B, K, N)."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        _fail(n, f"inner dimensions differ: A {a.shape}, B {b.shape}")
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        _fail(n, f"batch dimensions of A {a.shape} and B {b.shape} do not broadcast")
    m, k, nn = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    a3 = np.broadcast_to(a2, batch + (m, k)).reshape(-1, m, k)
    b3 = np.broadcast_to(b2, batch + (k, nn)).reshape(-1, k, nn)
    out = batch + ((m,) if a.ndim > 1 else ()) + ((nn,) if b.ndim > 1 else ())
    return a3, b3, out


def matmul_integer(n: ONode, ins, target):
    from ...kernels.gemm import gemm_u8s8, pack_weight
    a_t, b_t = _need(n, ins, 0, "A"), _need(n, ins, 1, "B")
    a, az = _as_u8(n, a_t, _get(ins, 2), "A")
    b, bz = _as_s8(n, b_t, _get(ins, 3), "B")
    a3, b3, out_shape = _batched(n, a, b)
    m, k, nn = a3.shape[1], a3.shape[2], b3.shape[2]
    az, bz = _per(n, az, m, "a_zero_point (per row)"), _per(n, bz, nn, "b_zero_point (per column)")
    sat = _linear_target(target, _native(a_t, b_t)).saturate_pairs
    out = np.empty((a3.shape[0], m, nn), np.int64)
    for i in range(a3.shape[0]):
        w = np.ascontiguousarray(b3[i].T)                          # (N, K)
        acc = gemm_u8s8(np.ascontiguousarray(a3[i]), pack_weight(w, bz), int(az[0]), saturate_pairs=sat)
        out[i] = acc
        if np.any(az != az[0]):                                    # per-row zero points: Σ_k (w − z_w) per column
            out[i] -= (az - az[0])[:, None] * (w.astype(np.int64) - bz[:, None]).sum(1)[None, :]
    return [Tensor(out.reshape(out_shape).astype(np.int32), "INT32")]


def _qmatmul(n: ONode, a_t, as_t, az_t, b_kn_t, bs_t, bz_t, ys_t, yz_t, bias, target):
    """A (M, K) × B (K, N) requantized (QLinearMatMul on one matrix, QGemm): per-tensor or per-row A
    scale / zero point, per-tensor or per-column B ones."""
    from ...kernels import qlinear
    a, az = _as_u8(n, a_t, az_t, "a")
    b, bz = _as_s8(n, b_kn_t, bz_t, "b")
    m, nn = a.shape[0], b.shape[1]
    as_ = _per(n, _scale(n, as_t, "a_scale"), m, "a_scale (per row)")
    az = _per(n, az, m, "a_zero_point (per row)")
    bs = _scale(n, bs_t, "b_scale")
    bz = _per(n, bz, nn, "b_zero_point (per column)")
    per_col = bs.size > 1 or np.any(bz != bz[0])
    bs = _per(n, bs, nn, "b_scale (per column)") if per_col else np.float32(bs.reshape(-1)[0])
    wz = bz if per_col else int(bz[0])
    ys = float(_one(n, _scale(n, ys_t, "y_scale"), "y_scale"))
    _types(n, yz_t, ("UINT8", "INT8"), "y_zero_point")
    yz = int(_one(n, yz_t.array, "y_zero_point")) + (128 if yz_t.type == "INT8" else 0)
    ar = _linear_target(target, _native(a_t, b_kn_t))
    w = np.ascontiguousarray(b.T)
    if np.all(as_ == as_[0]) and np.all(az == az[0]):
        y = qlinear(a, float(as_[0]), int(az[0]), w, bs, wz, bias, ys, yz, target=ar)
    else:
        y = np.concatenate([qlinear(a[i:i + 1], float(as_[i]), int(az[i]), w, bs, wz, bias, ys, yz, target=ar)
                            for i in range(m)])
    if yz_t.type == "INT8":
        return Tensor((y.astype(np.int16) - 128).astype(np.int8), "INT8")
    return Tensor(y, "UINT8")


def qlinear_matmul(n: ONode, ins, target):
    t = [_need(n, ins, i, w) for i, w in enumerate(("a", "a_scale", "a_zero_point", "b", "b_scale",
                                                     "b_zero_point", "y_scale", "y_zero_point"))]
    a3, b3, out_shape = _batched(n, t[0].array, t[3].array)
    ys = []
    for i in range(a3.shape[0]):
        ys.append(_qmatmul(n, Tensor(a3[i], t[0].type), t[1], t[2], Tensor(b3[i], t[3].type), t[4], t[5], t[6],
                           t[7], None, target))
    return [Tensor(np.stack([y.array for y in ys]).reshape(out_shape), ys[0].type)]


def qgemm(n: ONode, ins, target):
    """com.microsoft QGemm with a quantized output: ``Y = requantize(A' × B' + C)``, A' = Aᵀ if transA,
    B' = Bᵀ if transB, C int32 per output column."""
    t = [_get(ins, i) for i in range(9)]
    for i, w in ((0, "A"), (1, "a_scale"), (2, "a_zero_point"), (3, "B"), (4, "b_scale")):
        _need(n, ins, i, w)
    if t[7] is None or t[8] is None:
        _fail(n, "QGemm without y_scale / y_zero_point (a float output) is not supported")
    if float(n.attrs.get("alpha", 1.0)) != 1.0:
        _fail(n, "only alpha = 1 is supported")
    a = t[0].array.T if int(n.attrs.get("transA", 0)) else t[0].array
    b = t[3].array.T if int(n.attrs.get("transB", 0)) else t[3].array
    if a.ndim != 2 or b.ndim != 2:
        _fail(n, f"A and B must be 2-D, got {t[0].shape} and {t[3].shape}")
    bias = None
    if t[6] is not None:
        _types(n, t[6], ("INT32",), "C")
        if t[6].array.size not in (1, b.shape[1]) or t[6].array.ndim > 2 or (
                t[6].array.ndim == 2 and t[6].array.shape[0] != 1):
            _fail(n, f"C of shape {t[6].shape} is not one value per output column")
        bias = np.broadcast_to(t[6].array.reshape(-1), (b.shape[1],)).astype(np.int32)
    return [_qmatmul(n, Tensor(np.ascontiguousarray(a), t[0].type), t[1], t[2], Tensor(np.ascontiguousarray(b), t[3].type),
                     t[4], t[5], t[7], t[8], bias, target)]


# ----------------------------------------------------------------------------------------------------------
# Convolutions (1-D and 2-D)
# ----------------------------------------------------------------------------------------------------------
def _conv_setup(n: ONode, x: np.ndarray, w: np.ndarray, x_zp: int):
    """``(x (N, C, H, W) padded where asymmetric, w (M, C/g, KH, KW), stride, padding, dilation, groups)``
    of a 1-D or 2-D ONNX convolution (1-D as H = 1)."""
    d = x.ndim - 2
    if d not in (1, 2) or w.ndim != x.ndim:
        _fail(n, f"only 1-D and 2-D convolutions are supported, got x {x.shape}, w {w.shape}")
    kernel = list(w.shape[2:])
    if "kernel_shape" in n.attrs and [int(v) for v in n.attrs["kernel_shape"]] != kernel:
        _fail(n, f"kernel_shape {list(n.attrs['kernel_shape'])} does not match the weight {w.shape}")
    strides = [int(v) for v in n.attrs.get("strides", [1] * d)]
    dil = [int(v) for v in n.attrs.get("dilations", [1] * d)]
    if len(strides) != d or len(dil) != d:
        _fail(n, f"strides {strides} / dilations {dil} do not have {d} values")
    pads = onnx_pads(n, x.shape[2:], kernel, strides, dil)
    groups = int(n.attrs.get("group", 1))
    if groups < 1 or x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        _fail(n, f"input channels {x.shape[1]} do not match weight {w.shape} with group={groups}")
    if d == 1:
        x, w = x[:, :, None, :], w[:, :, None, :]
        strides, dil, pads = [1] + strides, [1] + dil, [0, pads[0], 0, pads[1]]
    padding = (pads[0], pads[1])
    if pads[0] != pads[2] or pads[1] != pads[3]:
        x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=x_zp)
        padding = (0, 0)
    for i in range(2):
        if x.shape[2 + i] + 2 * padding[i] < dil[i] * (w.shape[2 + i] - 1) + 1:
            _fail(n, f"the kernel {w.shape[2:]} (dilation {dil}) is larger than the padded input {x.shape[2:]}")
    return x, w, tuple(strides), padding, tuple(dil), groups, d


def _unflatten(y: np.ndarray, d: int) -> np.ndarray:
    return y[:, :, 0, :] if d == 1 else y


def qlinear_conv(n: ONode, ins, target):
    from ...kernels import qconv2d
    from ...kernels.conv import conv_arithmetic
    t = [_get(ins, i) for i in range(9)]
    for i, w in enumerate(("x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale",
                           "y_zero_point")):
        _need(n, ins, i, w)
    x, xz = _as_u8(n, t[0], t[2], "x")
    w, wz = _as_s8(n, t[3], t[5], "w")
    xs = float(_one(n, _scale(n, t[1], "x_scale"), "x_scale"))
    xz = int(_one(n, xz, "x_zero_point"))
    ys = float(_one(n, _scale(n, t[6], "y_scale"), "y_scale"))
    _types(n, t[7], ("UINT8", "INT8"), "y_zero_point")
    yz = int(_one(n, t[7].array, "y_zero_point")) + (128 if t[7].type == "INT8" else 0)
    x4, w4, stride, padding, dil, groups, d = _conv_setup(n, x, w, xz)
    m = w4.shape[0]
    ws = _scale(n, t[4], "w_scale").reshape(-1)
    per_channel = ws.size > 1 or np.any(wz != wz[0])
    ws = _per(n, ws, m, "w_scale (per output channel)") if per_channel else float(ws[0])
    wz = _per(n, wz, m, "w_zero_point (per output channel)") if per_channel else int(wz[0])
    bias = None
    if t[8] is not None:
        _types(n, t[8], ("INT32",), "B")
        if t[8].array.shape != (m,):
            _fail(n, f"B must have {m} values (one per output channel), got shape {t[8].shape}")
        bias = t[8].array
    ar = conv_arithmetic(target, w4.shape, wz, groups, stride, padding, dil)
    if not _native(t[0], t[3]):
        ar = dataclasses.replace(ar, saturate_pairs=False)
    y = qconv2d(np.ascontiguousarray(x4), xs, xz, np.ascontiguousarray(w4), ws, wz, bias, ys, yz, stride=stride,
                padding=padding, dilation=dil, groups=groups, target=ar)
    y = _unflatten(y, d)
    if t[7].type == "INT8":
        return [Tensor((y.astype(np.int16) - 128).astype(np.int8), "INT8")]
    return [Tensor(y, "UINT8")]


def conv_integer(n: ONode, ins, target):
    """The exact int32 accumulator of a convolution: ONNX Runtime's ConvInteger adds the products exactly
    on every CPU (no pair saturation), one GEMM per group over im2col's (kh, kw, c) columns."""
    from ...im2col import conv_out_size, im2col
    from ...kernels.gemm import gemm_u8s8, pack_weight
    x_t, w_t = _need(n, ins, 0, "x"), _need(n, ins, 1, "w")
    x, xz = _as_u8(n, x_t, _get(ins, 2), "x")
    w, wz = _as_s8(n, w_t, _get(ins, 3), "w")
    xz = int(_one(n, xz, "x_zero_point"))
    x4, w4, stride, padding, dil, groups, d = _conv_setup(n, x, w, xz)
    m, cg, kh, kw = w4.shape
    wz = _per(n, wz, m, "w_zero_point (per output channel)")
    nb, _, h, wd = x4.shape
    oh, ow = conv_out_size(h, kh, stride[0], padding[0], dil[0]), conv_out_size(wd, kw, stride[1], padding[1], dil[1])
    og = m // groups
    x_nhwc = np.ascontiguousarray(x4.transpose(0, 2, 3, 1))
    out = np.empty((nb, oh, ow, m), np.int32)
    for g in range(groups):
        cols = im2col(x_nhwc[..., g * cg:(g + 1) * cg], kh, kw, stride, padding, dil, pad_value=xz)
        wm = np.ascontiguousarray(w4[g * og:(g + 1) * og].transpose(0, 2, 3, 1).reshape(og, -1))
        acc = gemm_u8s8(cols, pack_weight(wm, wz[g * og:(g + 1) * og]), xz, saturate_pairs=False)
        out[..., g * og:(g + 1) * og] = acc.reshape(nb, oh, ow, og)
    return [Tensor(_unflatten(np.ascontiguousarray(out.transpose(0, 3, 1, 2)), d), "INT32")]


# ----------------------------------------------------------------------------------------------------------
# com.microsoft element-wise, pooling and 4-bit ops (uint8 codes)
# ----------------------------------------------------------------------------------------------------------
def _u8_qparams(n: ONode, ins, i_s, i_z, what):
    s = float(_one(n, _scale(n, _need(n, ins, i_s, f"{what} scale"), f"{what} scale"), f"{what} scale"))
    z = _get(ins, i_z)
    if z is not None:
        _types(n, z, ("UINT8",), f"{what} zero point")
    return s, 0 if z is None else int(_one(n, z.array, f"{what} zero point"))


def _binary(kernel_name):
    def op(n: ONode, ins, target):
        from ...kernels import add, elementwise
        kernel = add.qadd if kernel_name == "add" else elementwise.qmul
        a, b = _need(n, ins, 0, "A"), _need(n, ins, 3, "B")
        _types(n, a, ("UINT8",), "A")
        _types(n, b, ("UINT8",), "B")
        (sa, za), (sb, zb), (sy, zy) = (_u8_qparams(n, ins, 1, 2, "A"), _u8_qparams(n, ins, 4, 5, "B"),
                                        _u8_qparams(n, ins, 6, 7, "C"))
        try:
            aa, bb = np.broadcast_arrays(a.array, b.array)
        except ValueError:
            _fail(n, f"shapes {a.shape} and {b.shape} do not broadcast")
        y = kernel(np.ascontiguousarray(aa), sa, za, np.ascontiguousarray(bb), sb, zb, sy, zy, target=target)
        return [Tensor(np.asarray(y, np.uint8).reshape(aa.shape), "UINT8")]
    op.__name__ = op.__qualname__ = f"qlinear_{kernel_name}"
    op.__doc__ = f"com.microsoft QLinear{kernel_name.capitalize()} on uint8 codes (NumPy broadcasting)."
    return op


qlinear_add = _binary("add")
qlinear_mul = _binary("mul")


def qlinear_global_average_pool(n: ONode, ins, target):
    from ...kernels import qadaptive_avg_pool2d
    if int(n.attrs.get("channels_last", 0)):
        _fail(n, "channels_last=1 (NHWC) tensors are not supported")
    x = _need(n, ins, 0, "X")
    _types(n, x, ("UINT8",), "X")
    if x.array.ndim != 4:
        _fail(n, f"only NCHW input is supported, got {x.shape}")
    xs, xz = _u8_qparams(n, ins, 1, 2, "x")
    ys, yz = _u8_qparams(n, ins, 3, 4, "y")
    y = qadaptive_avg_pool2d(x.array, 1, x_scale=xs, x_zp=xz, y_scale=ys, y_zp=yz, target=target)
    return [Tensor(y, "UINT8")]


def matmul_nbits(n: ONode, ins, target):
    """com.microsoft MatMulNBits, bits = 4: float32 A × 4-bit B (N, ⌈K/block⌉, block/2 packed bytes) with one
    float32 scale per block and optional packed uint4 zero points (default 8)."""
    from ...affine import unpack_int4
    from ...kernels.int4 import int4_linear
    a, b, sc = _need(n, ins, 0, "A"), _need(n, ins, 1, "B"), _need(n, ins, 2, "scales")
    zp = _get(ins, 3)
    if int(n.attrs.get("bits", 4)) != 4:
        _fail(n, "only bits = 4 is supported")
    _types(n, a, ("FLOAT",), "A")
    _types(n, sc, ("FLOAT",), "scales")
    k, nn, block = int(n.attrs["K"]), int(n.attrs["N"]), int(n.attrs["block_size"])
    nb = -(-k // block)
    if zp is not None:
        _types(n, zp, ("UINT8",), "zero_points (packed)")
        per_row = -(-nb // 2)
        zp = unpack_int4(zp.array, nn * per_row * 2, signed=False).reshape(nn, per_row * 2)[:, :nb].astype(np.int64)
    packed = np.asarray(b.array, np.uint8).reshape(nn, -1)
    y = int4_linear(a.array, packed.reshape(-1), sc.array.reshape(nn, nb), zp, group_size=block, in_features=k,
                    dtype="uint4", target=target)
    return [Tensor(np.asarray(y, np.float32), "FLOAT")]


def identity(n: ONode, ins, target):
    return [_need(n, ins, 0, "input")]


#: ONNX op (``domain.op`` outside the default domain) → its function
NODE_OPS = {
    "QuantizeLinear": quantize_linear, "DequantizeLinear": dequantize_linear,
    "DynamicQuantizeLinear": dynamic_quantize_linear, "QLinearMatMul": qlinear_matmul,
    "MatMulInteger": matmul_integer, "QLinearConv": qlinear_conv, "ConvInteger": conv_integer,
    "Identity": identity,
    "com.microsoft.QuantizeLinear": quantize_linear, "com.microsoft.DequantizeLinear": dequantize_linear,
    "com.microsoft.QGemm": qgemm, "com.microsoft.QLinearAdd": qlinear_add, "com.microsoft.QLinearMul": qlinear_mul,
    "com.microsoft.QLinearGlobalAveragePool": qlinear_global_average_pool,
    "com.microsoft.MatMulNBits": matmul_nbits,
}
