"""Float32 NumPy implementations of every op of minquant's graph IR, with PyTorch's semantics.

Each function mirrors its ``torch.nn.functional`` counterpart (same argument names and defaults, NCHW
layout, weights laid out as in ``torch.nn``), so ``tests/test_graph_float.py`` can compare them one by one.
They are the reference the quantized kernels are measured against, so they favour clarity over speed —
except convolution, which goes through :func:`minquant.im2col` and one matrix product per group.

All inputs must be float32 arrays (a float64 or integer array is a mistake upstream and raises
ValueError); outputs are float32. Sizes of pooled / convolved outputs follow PyTorch exactly:

    conv:      out = ⌊(in + 2p − d·(k − 1) − 1) / s⌋ + 1
    pooling:   out = ⌊(in + 2p − d·(k − 1) − 1 + (s − 1 if ceil_mode)) / s⌋ + 1,
               minus 1 if ceil_mode and the last window would start in the right padding
    adaptive:  window i covers [⌊i·in/out⌋, ⌈(i + 1)·in/out⌉)

This module imports only NumPy and minquant's Numba kernels.
"""
from __future__ import annotations

import math

import numpy as np

from numba import config as _numba_config

from .graph import int_pair
from .im2col import conv_out_size, im2col, im2col_reference

__all__ = [
    "conv2d", "linear", "batch_norm", "relu", "relu6", "hardswish", "hardsigmoid", "add", "mul", "cat",
    "flatten", "reshape", "adaptive_avg_pool2d", "avg_pool2d", "max_pool2d", "dropout", "identity",
    "pool_out_size", "adaptive_pool_bounds", "clip", "relu_clip",
]


def _f32(x, what: str, ndim: int | None = None) -> np.ndarray:
    """Check that ``x`` is a float32 array (of ``ndim`` dims if given)."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{what} must be a NumPy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise ValueError(f"{what} must be float32, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dims, got shape {x.shape}")
    return x


# ----------------------------------------------------------------------------------------------------------
# Convolution and linear
# ----------------------------------------------------------------------------------------------------------

def _im2col():
    """The Numba im2col; its NumPy reference (same output, bit for bit) when the JIT is disabled
    (``NUMBA_DISABLE_JIT=1``), where the Numba version would run as slow pure-Python loops."""
    return im2col_reference if _numba_config.DISABLE_JIT else im2col


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """2-D convolution (cross-correlation, zero padding), any ``groups``; like ``F.conv2d``.

    x (N, C, H, W), weight (O, C/G, KH, KW), bias (O,) or None → (N, O, OH, OW). With G groups, output
    channel o sees only input channels of its group g = o // (O/G):

        out[n, o, y, x] = bias[o] + Σ_{c<C/G, i<KH, j<KW} weight[o, c, i, j] · x[n, g·C/G + c, y·sh − ph + i·dh,
                                                                                    x·sw − pw + j·dw]

    Computed as :func:`~minquant.im2col` (rows = output positions, columns = (kh, kw, c)) times
    the weight matrix of each group; a 1×1 stride-1 convolution needs no im2col (the NHWC input already is
    that matrix). Depthwise convolution (C/G = 1) multiplies and sums the KH·KW taps of the im2col rows
    (there is no matrix product to do).

    **One sample at a time, so a sample's output does not depend on its batch.** A BLAS matrix product
    rounds a row's float32 sum differently depending on how many rows the matrix has (OpenBLAS picks other
    kernels and blockings), so convolving 16 samples at once and 32 at once would give outputs differing in
    the last bits — and calibration's ranges, computed from them, would depend on the batch size. Each
    sample is therefore its own im2col matrix and its own product: ``conv2d(x)[i] == conv2d(x[i:i+1])[0]``
    bit for bit, whatever the batch (also one im2col buffer per sample: memory stays one sample's)."""
    x = _f32(x, "conv2d input", 4)
    weight = _f32(weight, "conv2d weight", 4)
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    groups = int(groups)
    if groups < 1 or c % groups or o % groups:
        raise ValueError(f"conv2d: groups={groups} must divide both input channels {c} and output channels {o}")
    if cg * groups != c:
        raise ValueError(f"conv2d: input has {c} channels but weight {weight.shape} with groups={groups} "
                         f"expects {cg * groups}")
    if bias is not None:
        bias = _f32(bias, "conv2d bias", 1)
        if bias.shape != (o,):
            raise ValueError(f"conv2d: bias shape {bias.shape} does not match {o} output channels")
    (sh, sw), (ph, pw), (dh, dw) = (int_pair(stride, "stride", minimum=1), int_pair(padding, "padding", minimum=0),
                                    int_pair(dilation, "dilation", minimum=1))
    oh, ow = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    og, k = o // groups, kh * kw

    # weight as matrices matching im2col's column order (kh, kw, c): wmat[g] is (KH·KW·C/G, O/G)
    wmat = weight.reshape(groups, og, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(groups, k * cg, og)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    out = np.empty((n, oh * ow, o), dtype=np.float32)
    for b0 in range(n):
        b1 = b0 + 1
        if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):  # pointwise: im2col would only copy x_nhwc
            cols = x_nhwc[b0:b1].reshape(-1, c)
        else:
            cols = _im2col()(x_nhwc[b0:b1], kh, kw, (sh, sw), (ph, pw), (dh, dw), 0.0)  # (M, KH·KW·C)
        m = cols.shape[0]
        res = out[b0:b1].reshape(m, o)
        if groups == 1:
            np.matmul(cols, wmat[0], out=res)
        elif cg == 1:  # depthwise (with channel multiplier og): Σ over the k taps of tap · weight
            taps = cols.reshape(m, k, groups)
            wd = wmat.reshape(groups, k, og)  # [g, tap, j]
            acc = np.zeros((m, groups, og), dtype=np.float32)
            for t in range(k):
                acc += taps[:, t, :, None] * wd[None, :, t, :]
            res[...] = acc.reshape(m, o)
        else:
            colsg = cols.reshape(m, k, groups, cg)
            for g in range(groups):
                a = np.ascontiguousarray(colsg[:, :, g, :]).reshape(m, k * cg)
                res[:, g * og:(g + 1) * og] = a @ wmat[g]
    if bias is not None:
        out += bias
    return np.ascontiguousarray(out.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))


def linear(x, weight, bias=None) -> np.ndarray:
    """y = x · weightᵀ + bias over the last dimension; like ``F.linear``. weight (O, I), bias (O,).

    Each row is its own matrix–vector product (``weight @ row``, one BLAS call per row), so a row's output
    does not depend on how many rows are computed with it (see :func:`conv2d`: a BLAS product of many rows
    rounds differently; NumPy would hand a stack of rows to BLAS as one product)."""
    x = _f32(x, "linear input")
    weight = _f32(weight, "linear weight", 2)
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input shape {x.shape} does not end in {weight.shape[1]} (weight {weight.shape})")
    rows = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))   # one memory layout, one BLAS routine:
    weight = np.ascontiguousarray(weight)                     # the same sums however the operands are stored
    y = np.empty((rows.shape[0], weight.shape[0]), np.float32)
    for i in range(rows.shape[0]):
        np.matmul(weight, rows[i], out=y[i])
    y = y.reshape(x.shape[:-1] + (weight.shape[0],))
    if bias is not None:
        bias = _f32(bias, "linear bias", 1)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"linear: bias shape {bias.shape} does not match weight {weight.shape}")
        y += bias
    return y


# ----------------------------------------------------------------------------------------------------------
# Normalisation and activations
# ----------------------------------------------------------------------------------------------------------

def batch_norm(x, running_mean, running_var, weight=None, bias=None, eps=1e-5) -> np.ndarray:
    """Inference BatchNorm over dim 1 (channels), as PyTorch's CPU kernel computes it:

        α = weight / √(running_var + eps),   β = bias − running_mean · α,   y = x · α + β

    (weight defaults to 1 and bias to 0)."""
    x = _f32(x, "batch_norm input")
    if x.ndim < 2:
        raise ValueError(f"batch_norm input needs a channel dim, got shape {x.shape}")
    c = x.shape[1]
    mean = _f32(running_mean, "batch_norm running_mean", 1)
    var = _f32(running_var, "batch_norm running_var", 1)
    w = np.ones(c, np.float32) if weight is None else _f32(weight, "batch_norm weight", 1)
    b = np.zeros(c, np.float32) if bias is None else _f32(bias, "batch_norm bias", 1)
    for name, p in (("running_mean", mean), ("running_var", var), ("weight", w), ("bias", b)):
        if p.shape != (c,):
            raise ValueError(f"batch_norm: {name} has shape {p.shape}, input has {c} channels")
    alpha = (np.float32(1) / np.sqrt(var + np.float32(eps))) * w
    beta = b - mean * alpha
    shape = (1, c) + (1,) * (x.ndim - 2)
    return x * alpha.reshape(shape) + beta.reshape(shape)


def relu(x) -> np.ndarray:
    """max(x, 0)."""
    return np.maximum(_f32(x, "relu input"), np.float32(0))


def relu6(x) -> np.ndarray:
    """min(max(x, 0), 6)."""
    return np.minimum(np.maximum(_f32(x, "relu6 input"), np.float32(0)), np.float32(6))


def clip(x, lo=-np.inf, hi=np.inf) -> np.ndarray:
    """min(max(x, lo), hi) (ONNX ``Clip``; relu6 is clip(x, 0, 6))."""
    return np.minimum(np.maximum(_f32(x, "clip input"), np.float32(lo)), np.float32(hi))


def relu_clip(x, hi) -> np.ndarray:
    """min(max(x, 0), hi[c]) with one upper bound per channel (axis 1) — a ReLU6 whose channels were
    rescaled by cross-layer equalization (:func:`minquant.quantized.passes.equalize`; ONNX: Relu → Min by
    a per-channel constant)."""
    x = _f32(x, "relu_clip input")
    hi = np.asarray(hi)
    if x.ndim < 2 or hi.shape != (x.shape[1],):
        raise ValueError(f"relu_clip needs one bound per channel: input {x.shape}, hi {hi.shape}")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return np.minimum(np.maximum(x, np.float32(0)), hi.astype(np.float32).reshape(shape))


def hardsigmoid(x) -> np.ndarray:
    """relu6(x + 3) / 6: 0 below −3, 1 above 3, linear in between."""
    x = _f32(x, "hardsigmoid input")
    return np.minimum(np.maximum(x + np.float32(3), np.float32(0)), np.float32(6)) / np.float32(6)


def hardswish(x) -> np.ndarray:
    """x · relu6(x + 3) / 6 (the product is taken before the division, as PyTorch does)."""
    x = _f32(x, "hardswish input")
    return x * np.minimum(np.maximum(x + np.float32(3), np.float32(0)), np.float32(6)) / np.float32(6)


def dropout(x) -> np.ndarray:
    """Dropout at inference: the identity."""
    return _f32(x, "dropout input")


def identity(x) -> np.ndarray:
    """x itself (not a copy — no op of minquant writes into its inputs)."""
    return _f32(x, "identity input")


# ----------------------------------------------------------------------------------------------------------
# Elementwise and shape ops
# ----------------------------------------------------------------------------------------------------------

def _broadcast(a, b, op: str):
    a, b = _f32(a, f"{op} first input"), _f32(b, f"{op} second input")
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None
    return a, b


def add(a, b) -> np.ndarray:
    """a + b with NumPy (= PyTorch) broadcasting."""
    a, b = _broadcast(a, b, "add")
    return a + b


def mul(a, b) -> np.ndarray:
    """a · b with broadcasting — e.g. squeeze-excite: (N, C, H, W) · (N, C, 1, 1)."""
    a, b = _broadcast(a, b, "mul")
    return a * b


def cat(xs, dim=1) -> np.ndarray:
    """Concatenate along ``dim``; like ``torch.cat``."""
    xs = [_f32(x, f"cat input {i}") for i, x in enumerate(xs)]
    if not xs:
        raise ValueError("cat needs at least one input")
    try:
        return np.concatenate(xs, axis=dim)
    except ValueError as e:
        raise ValueError(f"cat along dim {dim}: shapes {[x.shape for x in xs]} do not fit ({e})") from None


def flatten(x, start_dim=1, end_dim=-1) -> np.ndarray:
    """Merge dims ``start_dim..end_dim`` (inclusive; negative counts from the end); like ``torch.flatten``."""
    x = _f32(x, "flatten input")
    s, e = start_dim % x.ndim, end_dim % x.ndim
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {x.shape}")
    return x.reshape(x.shape[:s] + (-1,) + x.shape[e + 1:])


def reshape(x, shape) -> np.ndarray:
    """Reshape every sample: ``x.reshape(N, *shape)`` (the batch dimension is kept)."""
    x = _f32(x, "reshape input")
    shape = tuple(int(s) for s in shape)
    if math.prod(shape) != math.prod(x.shape[1:]):
        raise ValueError(f"reshape: a sample of shape {x.shape[1:]} cannot become {shape}")
    return x.reshape((x.shape[0],) + shape)


# ----------------------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------------------

def pool_out_size(size: int, k: int, stride: int, pad: int, dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a pooling window along one axis, PyTorch's ``pooling_output_shape``:

        out = ⌊(size + 2·pad − dilation·(k − 1) − 1 + (stride − 1 if ceil_mode else 0)) / stride⌋ + 1
        if ceil_mode and (out − 1)·stride ≥ size + pad: out −= 1   (no window may start in the right padding)
    """
    out = (size + 2 * pad - dilation * (k - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    if out < 1:
        raise ValueError(f"pooling output would be empty: input {size}, kernel {k}, stride {stride}, "
                         f"padding {pad}, dilation {dilation}")
    return out


def _pool_args(x, kernel_size, stride, padding, what):
    x = _f32(x, f"{what} input", 4)
    k = int_pair(kernel_size, "kernel_size", minimum=1)
    s = k if stride is None or (not isinstance(stride, (int, np.integer)) and len(stride) == 0) \
        else int_pair(stride, "stride", minimum=1)
    p = int_pair(padding, "padding", minimum=0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{what}: padding {p} must be at most half the kernel size {k}")
    return x, k, s, p


def _windows(x, k, s, d, out_hw, fill):
    """Pad ``x`` with ``fill`` so that every window fits, then yield the KH·KW strided views
    ``x_pad[:, :, i·dh : … : sh, j·dw : … : sw]`` of shape (N, C, OH, OW), tap by tap (row-major)."""
    # caller has already put the top/left padding in; pad bottom/right as far as the last window reaches
    n, c, h, w = x.shape
    oh, ow = out_hw
    need_h = (oh - 1) * s[0] + (k[0] - 1) * d[0] + 1
    need_w = (ow - 1) * s[1] + (k[1] - 1) * d[1] + 1
    if need_h > h or need_w > w:
        big = np.full((n, c, max(h, need_h), max(w, need_w)), fill, dtype=np.float32)
        big[:, :, :h, :w] = x
        x = big
    for i in range(k[0]):
        for j in range(k[1]):
            yield x[:, :, i * d[0]: i * d[0] + (oh - 1) * s[0] + 1: s[0],
                    j * d[1]: j * d[1] + (ow - 1) * s[1] + 1: s[1]]


def _pad_top_left(x, p, fill):
    if p == (0, 0):
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + 2 * p[0], w + 2 * p[1]), fill, dtype=np.float32)
    out[:, :, p[0]:p[0] + h, p[1]:p[1] + w] = x
    return out


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> np.ndarray:
    """Maximum over each (dilated) window; padding reads −∞; like ``F.max_pool2d``. ``stride`` defaults to
    ``kernel_size``; output size: :func:`pool_out_size`. A NaN in a window gives NaN."""
    x, k, s, p = _pool_args(x, kernel_size, stride, padding, "max_pool2d")
    d = int_pair(dilation, "dilation", minimum=1)
    _, _, h, w = x.shape
    out_hw = (pool_out_size(h, k[0], s[0], p[0], d[0], ceil_mode), pool_out_size(w, k[1], s[1], p[1], d[1], ceil_mode))
    taps = _windows(_pad_top_left(x, p, -np.inf), k, s, d, out_hw, -np.inf)
    out = next(taps).copy()
    for t in taps:
        np.maximum(out, t, out=out)
    return out


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None) -> np.ndarray:
    """Mean over each window; like ``F.avg_pool2d``. For output row y (columns likewise):

        start = y·s − p,   end = min(start + k, H + p),   pool = end − start     (may include padding)
        start' = max(start, 0),   end' = min(end, H)                             (real pixels only)
        out = Σ_window x / divisor,   divisor = divisor_override, else pool_h·pool_w if count_include_pad,
                                                else (end'_h − start'_h)·(end'_w − start'_w)

    Windows that ceil_mode lets run past the right padding count only up to H + p (PyTorch's rule);
    a window with no real pixel gives 0."""
    x, k, s, p = _pool_args(x, kernel_size, stride, padding, "avg_pool2d")
    _, _, h, w = x.shape
    oh, ow = pool_out_size(h, k[0], s[0], p[0], 1, ceil_mode), pool_out_size(w, k[1], s[1], p[1], 1, ceil_mode)
    taps = _windows(_pad_top_left(x, p, 0.0), k, s, (1, 1), (oh, ow), 0.0)
    total = next(taps).copy()
    for t in taps:
        total += t

    def counts(size, n_out, kk, ss, pp):
        start = np.arange(n_out) * ss - pp
        end = np.minimum(start + kk, size + pp)
        pool = end - start
        real = np.minimum(end, size) - np.maximum(start, 0)
        return pool, real

    pool_h, real_h = counts(h, oh, k[0], s[0], p[0])
    pool_w, real_w = counts(w, ow, k[1], s[1], p[1])
    if divisor_override is not None:
        if int(divisor_override) < 1:
            raise ValueError(f"avg_pool2d: divisor_override must be ≥ 1, got {divisor_override}")
        div = np.full((oh, ow), int(divisor_override), dtype=np.int64)
    elif count_include_pad:
        div = np.outer(pool_h, pool_w)
    else:
        div = np.outer(real_h, real_w)
    empty = np.outer(real_h <= 0, np.ones(ow, bool)) | np.outer(np.ones(oh, bool), real_w <= 0)
    out = total / np.where(empty, 1, div).astype(np.float32)
    out[:, :, empty] = 0.0
    return out


def adaptive_pool_bounds(size: int, out_size: int) -> list[tuple[int, int]]:
    """Windows of adaptive pooling along one axis, PyTorch's ``start_index``/``end_index``:
    window i is [⌊i·size/out⌋, ⌈(i + 1)·size/out⌉). Windows may overlap when size is not a multiple of out."""
    if size < 1 or out_size < 1:
        raise ValueError(f"adaptive pooling needs positive sizes, got input {size}, output {out_size}")
    return [((i * size) // out_size, -((-(i + 1) * size) // out_size)) for i in range(out_size)]


def adaptive_avg_pool2d(x, output_size) -> np.ndarray:
    """Mean over the windows of :func:`adaptive_pool_bounds`; like ``F.adaptive_avg_pool2d``.
    ``output_size`` is an int or a pair; ``None`` keeps that input dimension. Each window is summed in
    float64 and divided as PyTorch does, ``sum / kh / kw``, then rounded to float32."""
    x = _f32(x, "adaptive_avg_pool2d input", 4)
    n, c, h, w = x.shape
    if isinstance(output_size, (int, np.integer)) or output_size is None:
        output_size = (output_size, output_size)
    oh, ow = (h if output_size[0] is None else int(output_size[0]), w if output_size[1] is None else int(output_size[1]))
    out = np.empty((n, c, oh, ow), dtype=np.float32)
    for i, (h0, h1) in enumerate(adaptive_pool_bounds(h, oh)):
        for j, (w0, w1) in enumerate(adaptive_pool_bounds(w, ow)):
            window_sum = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3), dtype=np.float64)
            out[:, :, i, j] = window_sum / (h1 - h0) / (w1 - w0)
    return out
