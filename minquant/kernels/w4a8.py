"""W4A8: int4 weights per group, uint8 activations — static integer linear and convolution layers
(docs/quantization.md, steps 4, 7 and 10).

The input is uint8 codes (per tensor: s_x, z_x), the weights are 4-bit codes in the row layout of
:mod:`.int4_conv` (one (s_w, z_w) per group of ``group_size`` consecutive entries of a row; a convolution's
row is in (kh, kw, c) order, the columns of :func:`minquant.im2col`). Within a group the scale is common, so
the group's dot product is *integer* (step 4); the groups are then combined in float32 and the output is
requantized to uint8 (step 7):

    acc[m, n, g] = Σ_{k ∈ g} (x[m, k] − z_x) · (q[n, k] − z_w[n, g])               exact integers
    v[m, n]      = Σ_g f32( f32(s_x · s_w[n, g]) · f32(acc[m, n, g]) )          float32, g = 0, 1, …
    v[m, n]      = f32(v[m, n] + b[n])
    y[m, n]      = clamp( rne(f32(v / s_y)) + z_y,  lo,  min(hi, hi_n) )            uint8

(``clamp``: the fused ReLU / ReLU6 range; ``clamp_hi``: an optional per-channel top code, ReLU6 after
cross-layer equalization). With ``group_size = K`` (one group per output channel) this is an int8 layer whose
weights happen to be 4-bit codes. **No framework runs this layer**: torch has no int4 convolution, and ONNX
Runtime's nearest relative, ``MatMulNBits`` with ``accuracy_level=4``, quantizes the activations at run time,
per block (dynamic), not with calibrated static qparams. So the roundings above are minquant's own,
written out once and kept by both versions.

``w4a8_*_reference`` computes every group sum in int64 with NumPy (readable). The fast versions compute the
same integers with float32 BLAS products: every product is at most 255·15 in magnitude, so for a group of
``K_g ≤ 4386`` entries every partial sum, in any order, is an integer below 2²⁴ and float32 holds it exactly
(larger groups use float64: exact below 2⁵³). The float combination and the output stage then run in one
Numba pass, in the order above — bit-identical to the reference (tests/test_precision_kernels.py).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..graph import int_pair
from ..im2col import conv_out_size, im2col, im2col_reference
from .checks import check_bias, check_clamp, check_scale, check_zero_point
from .int4_conv import check_int4_weights, unpack_int4_rows

__all__ = ["w4a8_linear", "w4a8_linear_reference", "w4a8_conv2d", "w4a8_conv2d_reference", "W4A8Layer"]

_F32 = np.float32
_EXACT_F32_TERMS = (2 ** 24 - 1) // (255 * 15)       # 4386 products of |x−z_x| ≤ 255, |q−z_w| ≤ 15


def _check_stage(x_scale, x_zp, y_scale, y_zp, clamp, clamp_hi, bias, n):
    check_scale(x_scale, "x_scale")
    check_zero_point(x_zp, "x_zp", 0, 255)
    check_scale(y_scale, "y_scale")
    check_zero_point(y_zp, "y_zp", 0, 255)
    check_clamp(clamp, clamp_hi, n)
    lo, hi = (0, 255) if clamp is None else (int(clamp[0]), int(clamp[1]))
    check_bias(bias, n, allow_int=False)
    b = np.zeros(n, _F32) if bias is None else np.ascontiguousarray(bias, _F32)
    top = np.full(n, hi, np.int64)
    if clamp_hi is not None:
        top = np.minimum(np.asarray(clamp_hi).astype(np.int64), hi)
    return lo, top, b


def _scales_aw(x_scale, scale):
    """f32(s_x · s_w[n, g]) — the float32 scale of each group's integer sum."""
    return (_F32(x_scale) * scale.astype(_F32)).astype(_F32)


def _stage_reference(acc, saw, b, y_scale, y_zp, lo, top):
    """The float combination and output stage (module docstring) on int64 group sums acc (G, M, N)."""
    v = np.zeros(acc.shape[1:], _F32)
    for g in range(acc.shape[0]):
        v = (v + (saw[None, :, g] * acc[g].astype(_F32)).astype(_F32)).astype(_F32)
    v = (v + b[None, :]).astype(_F32)
    q = np.rint((v / _F32(y_scale)).astype(_F32)).astype(np.int64) + int(y_zp)
    return np.clip(np.clip(q, lo, 255), None, top[None, :]).astype(np.uint8)


@njit(cache=True)
def _stage_kernel(acc, saw, b, y_scale, y_zp, lo, top, out):
    n_groups, m_rows, n_out = acc.shape
    for m in range(m_rows):
        for n in range(n_out):
            v = np.float32(0)
            for g in range(n_groups):
                v = np.float32(v + np.float32(saw[n, g] * np.float32(acc[g, m, n])))
            v = np.float32(v + b[n])
            q = np.int64(np.rint(np.float32(v / y_scale))) + y_zp
            if q < lo:
                q = lo
            if q > 255:
                q = 255
            if q > top[n]:
                q = top[n]
            out[m, n] = q


def _columns(weight_shape, groups, c_in):
    """For output channel n and row entry kk (in (kh, kw, c) order) the im2col column it multiplies:
    ``(kk // cg)·C + (n // og)·cg + kk % cg`` — an (N, K) index array."""
    o, cg, kh, kw = weight_shape
    og = o // groups
    kk = np.arange(kh * kw * cg)
    n = np.arange(o)
    return (kk // cg)[None, :] * c_in + ((n // og) * cg)[:, None] + (kk % cg)[None, :]


def _group_sums_reference(a, x_zp, q, zp, gs, cols):
    """int64 acc (G, M, N): a (M, C_cols) uint8 codes, q (N, K) codes, cols (N, K) column of each entry."""
    n, k = q.shape
    ax = a.astype(np.int64) - int(x_zp)
    acc = np.zeros((k // gs, a.shape[0], n), np.int64)
    for g in range(k // gs):
        ks = slice(g * gs, (g + 1) * gs)
        wq = q[:, ks].astype(np.int64) - zp[:, g:g + 1]                 # (N, gs)
        acc[g] = np.einsum("mnk,nk->mn", ax[:, cols[:, ks]], wq)
    return acc


def _group_sums_fast(a, x_zp, q, zp, gs, cols, dense):
    """The same integers as :func:`_group_sums_reference`, with float BLAS products (exact: docstring)."""
    n, k = q.shape
    ft = _F32 if gs <= _EXACT_F32_TERMS else np.float64
    ax = a.astype(ft) - ft(x_zp)
    wq = (q.astype(ft) - np.repeat(zp, gs, axis=1).astype(ft))
    acc = np.empty((k // gs, a.shape[0], n), ft)
    for g in range(k // gs):
        ks = slice(g * gs, (g + 1) * gs)
        if dense:                                           # every row reads the same columns
            np.matmul(ax[:, cols[0, ks]], wq[:, ks].T, out=acc[g])
        else:                                               # grouped conv: one column per (n, kk)
            acc[g] = 0
            for j in range(ks.start, ks.stop):
                c = cols[:, j]
                if c[-1] - c[0] == n - 1 and np.all(np.diff(c) == 1):      # depthwise: a contiguous slice
                    acc[g] += ax[:, c[0]:c[0] + n] * wq[None, :, j]
                else:
                    acc[g] += ax[:, c] * wq[None, :, j]
    return acc


class W4A8Layer:
    """A prepared W4A8 layer (linear, or a convolution's im2col product): codes unpacked and scales combined
    once; ``__call__(a)`` takes the (M, columns) uint8 matrix and returns (M, N) uint8 codes."""

    def __init__(self, w_packed, w_scale, w_zp, *, k, group_size, x_scale, x_zp, bias, y_scale, y_zp,
                 clamp=None, clamp_hi=None, dtype="int4", cols=None, reference=False):
        packed, scale, zp, n, _ = check_int4_weights(w_packed, w_scale, w_zp, k, group_size, dtype)
        self.lo, self.top, self.bias = _check_stage(x_scale, x_zp, y_scale, y_zp, clamp, clamp_hi, bias, n)
        self.q = unpack_int4_rows(packed, int(k), signed=dtype == "int4")
        self.zp, self.gs, self.x_zp = zp, int(group_size), int(x_zp)
        self.saw = np.ascontiguousarray(_scales_aw(x_scale, scale))
        self.y_scale, self.y_zp = _F32(y_scale), int(y_zp)
        self.cols = np.broadcast_to(np.arange(int(k)), (n, int(k))) if cols is None else cols
        self.dense = bool(np.all(self.cols == self.cols[:1]))
        self.reference = reference

    def __call__(self, a) -> np.ndarray:
        if self.reference:
            acc = _group_sums_reference(a, self.x_zp, self.q, self.zp, self.gs, self.cols)
            return _stage_reference(acc, self.saw, self.bias, self.y_scale, self.y_zp, self.lo, self.top)
        acc = _group_sums_fast(a, self.x_zp, self.q, self.zp, self.gs, self.cols, self.dense)
        out = np.empty(acc.shape[1:], np.uint8)
        _stage_kernel(acc, self.saw, self.bias, self.y_scale, self.y_zp, self.lo, self.top, out)
        return out


def _codes(x_q, what):
    x_q = np.asarray(x_q)
    if x_q.dtype != np.uint8:
        raise TypeError(f"{what} must be uint8 codes, got dtype {x_q.dtype}")
    return x_q


def _linear(x_q, w_packed, w_scale, w_zp, *, in_features, group_size, x_scale, x_zp, y_scale, y_zp, bias=None,
            clamp=None, clamp_hi=None, dtype="int4", reference):
    x_q = _codes(x_q, "x_q")
    if x_q.ndim < 1 or x_q.shape[-1] != int(in_features):
        raise ValueError(f"x_q has {x_q.shape[-1] if x_q.ndim else 0} features, in_features={in_features}")
    layer = W4A8Layer(w_packed, w_scale, w_zp, k=in_features, group_size=group_size, x_scale=x_scale, x_zp=x_zp,
                      bias=bias, y_scale=y_scale, y_zp=y_zp, clamp=clamp, clamp_hi=clamp_hi, dtype=dtype,
                      reference=reference)
    y = layer(x_q.reshape(-1, x_q.shape[-1]))
    return y.reshape(x_q.shape[:-1] + (y.shape[-1],))


def w4a8_linear_reference(x_q, w_packed, w_scale, w_zp, *, in_features, group_size, x_scale, x_zp, y_scale, y_zp,
                          bias=None, clamp=None, clamp_hi=None, dtype="int4") -> np.ndarray:
    """Readable W4A8 linear layer (module docstring): x_q uint8 (..., K) → uint8 (..., N)."""
    return _linear(x_q, w_packed, w_scale, w_zp, in_features=in_features, group_size=group_size, x_scale=x_scale,
                   x_zp=x_zp, y_scale=y_scale, y_zp=y_zp, bias=bias, clamp=clamp, clamp_hi=clamp_hi, dtype=dtype,
                   reference=True)


def w4a8_linear(x_q, w_packed, w_scale, w_zp, *, in_features, group_size, x_scale, x_zp, y_scale, y_zp, bias=None,
                clamp=None, clamp_hi=None, dtype="int4") -> np.ndarray:
    """Fast :func:`w4a8_linear_reference` (exact float BLAS group sums + a Numba output stage; bit-identical)."""
    return _linear(x_q, w_packed, w_scale, w_zp, in_features=in_features, group_size=group_size, x_scale=x_scale,
                   x_zp=x_zp, y_scale=y_scale, y_zp=y_zp, bias=bias, clamp=clamp, clamp_hi=clamp_hi, dtype=dtype,
                   reference=False)


class W4A8Conv2d:
    """A prepared W4A8 convolution: im2col of the uint8 input (padding reads z_x, i.e. real 0), then a
    :class:`W4A8Layer` over its columns; NCHW uint8 in and out."""

    def __init__(self, w_packed, w_scale, w_zp, *, weight_shape, c_in, group_size, x_scale, x_zp, y_scale, y_zp,
                 bias=None, stride=1, padding=0, dilation=1, groups=1, clamp=None, clamp_hi=None, dtype="int4",
                 reference=False):
        o, cg, kh, kw = (int(v) for v in weight_shape)
        if int(groups) < 1 or o % int(groups) or cg * int(groups) != int(c_in):
            raise ValueError(f"weight_shape {tuple(weight_shape)} with groups={groups} does not fit {c_in} input "
                             f"channels")
        self.kernel = (kh, kw)
        self.geometry = (int_pair(stride, "stride", minimum=1), int_pair(padding, "padding", minimum=0),
                         int_pair(dilation, "dilation", minimum=1))
        self.c_in, self.x_zp, self.reference = int(c_in), int(x_zp), reference
        cols = _columns((o, cg, kh, kw), int(groups), int(c_in))
        self.layer = W4A8Layer(w_packed, w_scale, w_zp, k=kh * kw * cg, group_size=group_size, x_scale=x_scale,
                               x_zp=x_zp, bias=bias, y_scale=y_scale, y_zp=y_zp, clamp=clamp, clamp_hi=clamp_hi,
                               dtype=dtype, cols=cols, reference=reference)

    def __call__(self, x_q) -> np.ndarray:
        x_q = _codes(x_q, "x_q")
        if x_q.ndim != 4 or x_q.shape[1] != self.c_in:
            raise ValueError(f"x_q must be (N, {self.c_in}, H, W) codes, got shape {x_q.shape}")
        n, _, h, w = x_q.shape
        (sh, sw), (ph, pw), (dh, dw) = self.geometry
        kh, kw = self.kernel
        oh, ow = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
        nhwc = np.ascontiguousarray(x_q.transpose(0, 2, 3, 1))
        cols = (im2col_reference if self.reference else im2col)(nhwc, kh, kw, self.geometry[0], self.geometry[1],
                                                                self.geometry[2], self.x_zp)
        y = self.layer(cols)                                             # (N·OH·OW, O)
        return np.ascontiguousarray(y.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2))


def w4a8_conv2d_reference(x_q, w_packed, w_scale, w_zp, *, weight_shape, group_size, x_scale, x_zp, y_scale, y_zp,
                          bias=None, stride=1, padding=0, dilation=1, groups=1, clamp=None, clamp_hi=None,
                          dtype="int4") -> np.ndarray:
    """Readable W4A8 convolution (module docstring): x_q uint8 NCHW → uint8 NCHW."""
    x_q = _codes(x_q, "x_q")
    return W4A8Conv2d(w_packed, w_scale, w_zp, weight_shape=weight_shape, c_in=x_q.shape[1] if x_q.ndim == 4 else -1,
                      group_size=group_size, x_scale=x_scale, x_zp=x_zp, y_scale=y_scale, y_zp=y_zp, bias=bias,
                      stride=stride, padding=padding, dilation=dilation, groups=groups, clamp=clamp,
                      clamp_hi=clamp_hi, dtype=dtype, reference=True)(x_q)


def w4a8_conv2d(x_q, w_packed, w_scale, w_zp, *, weight_shape, group_size, x_scale, x_zp, y_scale, y_zp, bias=None,
                stride=1, padding=0, dilation=1, groups=1, clamp=None, clamp_hi=None, dtype="int4") -> np.ndarray:
    """Fast :func:`w4a8_conv2d_reference` (bit-identical)."""
    x_q = _codes(x_q, "x_q")
    return W4A8Conv2d(w_packed, w_scale, w_zp, weight_shape=weight_shape, c_in=x_q.shape[1] if x_q.ndim == 4 else -1,
                      group_size=group_size, x_scale=x_scale, x_zp=x_zp, y_scale=y_scale, y_zp=y_zp, bias=bias,
                      stride=stride, padding=padding, dilation=dilation, groups=groups, clamp=clamp,
                      clamp_hi=clamp_hi, dtype=dtype)(x_q)
