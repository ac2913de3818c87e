"""int4 weights per group for convolutions and linear layers: the stored form (4-bit codes packed two per
byte, row by row) and the float-activation convolution (W4A16 / W4A32) — docs/quantization.md, step 10.

**Rows and groups.** A layer's weights are an (N, K) matrix of N output channels: a linear layer's (out, in)
as it is; a convolution's (O, C/G, KH, KW) taken in **(kh, kw, c) order** per output channel —
``W2[o, (i·KW + j)·C/G + c] = W[o, c, i, j]`` — the column order of :func:`minquant.im2col`, so the integer
kernels of :mod:`.w4a8` read the im2col matrix as it is. Every ``group_size`` consecutive entries of a row
share one scale ``s[n, g]`` and zero point ``z[n, g]`` (``g = k // group_size``; ``group_size = K``: one per
output channel):

    W[n, k] = f32( f32(q[n, k] − z[n, g]) · s[n, g] )                     (step 1, float32)

**Packing.** Codes are stored two per byte, element 2i in the low nibble (:func:`minquant.affine.pack_int4`),
one row after the other, each row padded to whole bytes (ceil(K/2) bytes; an odd K — a 3×3 depthwise kernel
has K = 9 — wastes half a byte per row). For an even K this is exactly the layout of ONNX Runtime's
``MatMulNBits`` and of :func:`minquant.kernels.int4.int4_linear` (which runs the linear layers).

**The convolution with float activations** dequantizes the weights (above) and runs minquant's float32
convolution (:func:`minquant.float_ops.conv2d`: im2col and one BLAS product per group). No framework has an
int4-weight convolution with float activations (``MatMulNBits`` is a MatMul; torch has none): the float sum is
minquant's. ``int4_conv2d_reference`` dequantizes with :func:`minquant.affine.dequantize` from the unpacked
codes; ``int4_conv2d`` (and the prepared :class:`Int4Conv2d`) read the packed nibbles in Numba — same
weights, bit for bit, so the same outputs.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..affine import dequantize, pack_int4, unpack_int4
from .. import float_ops as F
from .checks import check_bias, check_whole

__all__ = ["conv_weight_rows", "rows_to_conv_weight", "pack_int4_rows", "unpack_int4_rows",
           "check_int4_weights", "dequantize_int4_rows", "dequantize_int4_rows_reference", "Int4Conv2d",
           "int4_conv2d", "int4_conv2d_reference"]

_F32 = np.float32


def conv_weight_rows(w) -> np.ndarray:
    """A conv weight (O, C/G, KH, KW) as the (O, KH·KW·C/G) matrix of rows in (kh, kw, c) order."""
    w = np.asarray(w)
    if w.ndim != 4:
        raise ValueError(f"a conv weight is (O, C/G, KH, KW), got shape {w.shape}")
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1))


def rows_to_conv_weight(rows, weight_shape) -> np.ndarray:
    """Inverse of :func:`conv_weight_rows`: (O, KH·KW·C/G) rows → (O, C/G, KH, KW)."""
    o, cg, kh, kw = (int(v) for v in weight_shape)
    return np.ascontiguousarray(np.asarray(rows).reshape(o, kh, kw, cg).transpose(0, 3, 1, 2))


def pack_int4_rows(q) -> np.ndarray:
    """(N, K) 4-bit codes (int4 [−8, 7] or uint4 [0, 15]) → (N, ceil(K/2)) uint8, each row packed by
    :func:`minquant.affine.pack_int4` and padded to whole bytes (module docstring)."""
    q = np.asarray(q)
    if q.ndim != 2:
        raise ValueError(f"pack_int4_rows expects an (N, K) matrix of codes, got shape {q.shape}")
    if q.shape[1] % 2:
        q = np.concatenate([q, np.zeros((q.shape[0], 1), q.dtype)], axis=1)
    return pack_int4(q).reshape(q.shape[0], q.shape[1] // 2)


def unpack_int4_rows(packed, k: int, *, signed: bool) -> np.ndarray:
    """Inverse of :func:`pack_int4_rows`: (N, ceil(K/2)) bytes → (N, K) codes (int8 if signed, else uint8)."""
    packed = np.asarray(packed, np.uint8)
    if packed.ndim != 2 or packed.shape[1] != (k + 1) // 2:
        raise ValueError(f"packed int4 rows must be (N, ceil(K/2) = {(k + 1) // 2}) bytes for K = {k}, got "
                         f"shape {packed.shape}")
    n, kb = packed.shape
    return unpack_int4(packed, n * 2 * kb, signed=signed).reshape(n, 2 * kb)[:, :k]


def check_int4_weights(w_packed, w_scale, w_zp, k, group_size, dtype):
    """The one argument check of the int4 row layout (every kernel of this module and of :mod:`.w4a8`
    calls it). Returns ``(packed (N, ceil(K/2)) uint8, scale (N, G) float32, zp (N, G) int64, N, G)``.

    ``w_scale``: (N, K/group_size) positive finite (float32 or float16, widened exactly); ``w_zp``: None
    (0 for int4, 8 for uint4 — MatMulNBits' default), one integer or (N, K/group_size) integers inside the
    code range; ``group_size`` must divide K."""
    if dtype not in ("int4", "uint4"):
        raise ValueError(f"dtype must be 'int4' or 'uint4', got {dtype!r}")
    check_whole(k, "in_features (K)", 1)
    check_whole(group_size, "group_size", 1)
    k, gs = int(k), int(group_size)
    if k % gs:
        raise ValueError(f"group_size={gs} does not divide the {k} weights of a row (K); choose a divisor of K, "
                         f"or group_size=K for one scale per output channel")
    scale = np.asarray(w_scale)
    if scale.dtype.kind != "f":
        raise TypeError(f"w_scale must be float32 or float16, got dtype {scale.dtype}")
    scale = scale.astype(_F32)
    if scale.ndim != 2 or scale.shape[1] != k // gs:
        raise ValueError(f"w_scale must have shape (N, K // group_size = {k // gs}), got {scale.shape}")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError("w_scale must be finite and > 0")
    n = scale.shape[0]
    packed = np.asarray(w_packed)
    if packed.dtype != np.uint8:
        raise TypeError(f"w_packed must be uint8 (two 4-bit codes per byte), got dtype {packed.dtype}")
    if packed.shape != (n, (k + 1) // 2):
        raise ValueError(f"w_packed has shape {packed.shape}; {n} rows of {k} 4-bit codes need "
                         f"({n}, {(k + 1) // 2}) bytes")
    lo, hi = (-8, 7) if dtype == "int4" else (0, 15)
    zp = np.asarray(0 if dtype == "int4" else 8) if w_zp is None else np.asarray(w_zp)
    if zp.dtype.kind not in "iu" or (zp.ndim and zp.shape != scale.shape):
        raise ValueError(f"w_zp must be None, one integer or integers of shape {scale.shape}")
    if np.any(zp < lo) or np.any(zp > hi):
        raise ValueError(f"w_zp outside the {dtype} range [{lo}, {hi}]")
    zp = np.ascontiguousarray(np.broadcast_to(zp.astype(np.int64), scale.shape))
    return np.ascontiguousarray(packed), np.ascontiguousarray(scale), zp, n, k // gs


def dequantize_int4_rows_reference(w_packed, w_scale, w_zp, *, k, group_size, dtype="int4") -> np.ndarray:
    """(N, K) float32 weights from packed rows: unpack, then :func:`minquant.affine.dequantize` per group."""
    packed, scale, zp, _, _ = check_int4_weights(w_packed, w_scale, w_zp, k, group_size, dtype)
    q = unpack_int4_rows(packed, k, signed=dtype == "int4")
    return dequantize(q, scale, zp, axis=1, group_size=int(group_size))


@njit(cache=True)
def _dequantize_rows(packed, scale, zp, signed, gs, k, out):
    for n in range(packed.shape[0]):
        for kk in range(k):
            byte = packed[n, kk >> 1]
            v = np.int64(byte & 15) if (kk & 1) == 0 else np.int64(byte >> 4)
            if signed:
                v -= (v >> 3) * 16                      # sign-extend 8..15 → −8..−1
            g = kk // gs
            out[n, kk] = np.float32(np.float32(v - zp[n, g]) * scale[n, g])


def dequantize_int4_rows(w_packed, w_scale, w_zp, *, k, group_size, dtype="int4") -> np.ndarray:
    """Fast :func:`dequantize_int4_rows_reference` (Numba, straight from the packed nibbles; bit-identical)."""
    packed, scale, zp, n, _ = check_int4_weights(w_packed, w_scale, w_zp, k, group_size, dtype)
    out = np.empty((n, int(k)), _F32)
    _dequantize_rows(packed, scale, zp, dtype == "int4", int(group_size), int(k), out)
    return out


def _conv_geometry(weight_shape, groups):
    if len(tuple(weight_shape)) != 4:
        raise ValueError(f"weight_shape must be (O, C/G, KH, KW), got {weight_shape!r}")
    o, cg, kh, kw = (int(v) for v in weight_shape)
    check_whole(groups, "groups", 1)
    if o % int(groups):
        raise ValueError(f"groups={groups} must divide the {o} output channels")
    return o, cg * kh * kw


def int4_conv2d_reference(x, w_packed, w_scale, w_zp, *, weight_shape, group_size, bias=None, stride=1,
                          padding=0, dilation=1, groups=1, dtype="int4") -> np.ndarray:
    """Readable int4-weight convolution on float32 activations (module docstring): dequantize, convolve."""
    o, k = _conv_geometry(weight_shape, groups)
    rows = dequantize_int4_rows_reference(w_packed, w_scale, w_zp, k=k, group_size=group_size, dtype=dtype)
    if rows.shape[0] != o:
        raise ValueError(f"the packed weights hold {rows.shape[0]} rows; weight_shape says {o} output channels")
    check_bias(bias, o, allow_int=False)
    return F.conv2d(x, rows_to_conv_weight(rows, weight_shape), None if bias is None else np.asarray(bias, _F32),
                    stride, padding, dilation, groups)


class Int4Conv2d:
    """A prepared int4-weight convolution: the packed weights dequantized once (Numba), then every call is
    minquant's float32 convolution — what :func:`int4_conv2d` does per call. Memory at run time is that of
    the float32 weights; the *stored* model keeps the packed codes (``QuantizedModel.size_bytes``)."""

    def __init__(self, w_packed, w_scale, w_zp, *, weight_shape, group_size, bias=None, stride=1, padding=0,
                 dilation=1, groups=1, dtype="int4"):
        o, k = _conv_geometry(weight_shape, groups)
        rows = dequantize_int4_rows(w_packed, w_scale, w_zp, k=k, group_size=group_size, dtype=dtype)
        if rows.shape[0] != o:
            raise ValueError(f"the packed weights hold {rows.shape[0]} rows; weight_shape says {o} output channels")
        check_bias(bias, o, allow_int=False)
        self.weight = rows_to_conv_weight(rows, weight_shape)
        self.bias = None if bias is None else np.ascontiguousarray(bias, _F32)
        self.geometry = (stride, padding, dilation, groups)

    def __call__(self, x) -> np.ndarray:
        return F.conv2d(x, self.weight, self.bias, *self.geometry)


def int4_conv2d(x, w_packed, w_scale, w_zp, *, weight_shape, group_size, bias=None, stride=1, padding=0,
                dilation=1, groups=1, dtype="int4") -> np.ndarray:
    """Fast :func:`int4_conv2d_reference` (Numba dequantization from the packed nibbles; bit-identical)."""
    return Int4Conv2d(w_packed, w_scale, w_zp, weight_shape=weight_shape, group_size=group_size, bias=bias,
                      stride=stride, padding=padding, dilation=dilation, groups=groups, dtype=dtype)(x)
