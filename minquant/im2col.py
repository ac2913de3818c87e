"""im2col: turn a convolution into a matrix product (docs/quantization.md, step 9).

For an NHWC input ``x`` (N, H, W, C) and a kernel of size (KH, KW), every output position (n, oh, ow)
becomes one *row* holding the input patch it sees, in the order (kh, kw, c) — the order fbgemm uses, which
matters for int16 pair saturation (step 8). Positions outside the image read ``pad_value``: 0.0 for float
convolution, the activation zero point z_x for quantized convolution (real 0 is the code z_x, step 2).

    out_h = (H + 2·ph − dh·(KH − 1) − 1) // sh + 1          (likewise out_w)
    row (n, oh, ow), column (kh, kw, c)  =  x[n, oh·sh − ph + kh·dh, ow·sw − pw + kw·dw, c]

``im2col_reference`` is the readable spec; ``im2col`` is the Numba version the kernels call (same result,
bit for bit). Used by the integer conv kernels and by the float executor.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .graph import int_pair

__all__ = ["conv_out_size", "im2col", "im2col_reference", "im2col_t"]


def conv_out_size(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    """Output length of a convolution along one axis (see module docstring)."""
    out = (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    if out <= 0:
        raise ValueError(f"convolution output would be empty: input {size}, kernel {k}, stride {stride}, "
                         f"padding {pad}, dilation {dilation}")
    return out


def _geometry(stride, padding, dilation):
    return (int_pair(stride, "stride", minimum=1), int_pair(padding, "padding", minimum=0),
            int_pair(dilation, "dilation", minimum=1))


def im2col_reference(x_nhwc, kh, kw, stride=1, padding=0, dilation=1, pad_value=0):
    """Readable im2col: (N, H, W, C) → (N·OH·OW, KH·KW·C), columns ordered (kh, kw, c)."""
    (sh, sw), (ph, pw), (dh, dw) = _geometry(stride, padding, dilation)
    n, h, w, c = x_nhwc.shape
    oh, ow = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    padded = np.full((n, h + 2 * ph, w + 2 * pw, c), pad_value, dtype=x_nhwc.dtype)
    padded[:, ph:ph + h, pw:pw + w, :] = x_nhwc
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=x_nhwc.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = padded[:, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                                            j * dw: j * dw + sw * (ow - 1) + 1: sw, :]
    return cols.reshape(n * oh * ow, kh * kw * c)


@njit(cache=True)
def _im2col_kernel(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, pad_value, out):
    n, h, w, c = x.shape
    row = 0
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                col = 0
                for i in range(kh):
                    iy = y * sh - ph + i * dh
                    for j in range(kw):
                        ix = xo * sw - pw + j * dw
                        if 0 <= iy < h and 0 <= ix < w:
                            for ch in range(c):
                                out[row, col + ch] = x[b, iy, ix, ch]
                        else:
                            for ch in range(c):
                                out[row, col + ch] = pad_value
                        col += c
                row += 1


def im2col(x_nhwc, kh, kw, stride=1, padding=0, dilation=1, pad_value=0, out=None):
    """Fast im2col (Numba); same contract as :func:`im2col_reference`. ``out`` may be a preallocated
    (N·OH·OW, KH·KW·C) array of the input's dtype."""
    (sh, sw), (ph, pw), (dh, dw) = _geometry(stride, padding, dilation)
    x_nhwc = np.ascontiguousarray(x_nhwc)
    n, h, w, c = x_nhwc.shape
    oh, ow = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    if out is None:
        out = np.empty((n * oh * ow, kh * kw * c), dtype=x_nhwc.dtype)
    _im2col_kernel(x_nhwc, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, x_nhwc.dtype.type(pad_value), out)
    return out


@njit(cache=True)
def _im2col_t_kernel(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, pad_value, out):
    n, c, h, w = x.shape
    P = oh * ow
    for i in range(kh):
        for j in range(kw):
            for ch in range(c):
                row = (i * kw + j) * c + ch
                for b in range(n):
                    base = b * P
                    for y in range(oh):
                        iy = y * sh - ph + i * dh
                        if iy < 0 or iy >= h:
                            for xo in range(ow):
                                out[row, base + y * ow + xo] = pad_value
                            continue
                        for xo in range(ow):
                            ix = xo * sw - pw + j * dw
                            if 0 <= ix < w:
                                out[row, base + y * ow + xo] = x[b, ch, iy, ix]
                            else:
                                out[row, base + y * ow + xo] = pad_value


def im2col_t(x_nchw, kh, kw, stride=1, padding=0, dilation=1, pad_value=0, out=None, dtype=np.float32):
    """The same patch matrix, transposed and read straight from NCHW: (KH·KW·C, N·OH·OW), row (kh, kw, c),
    column (n, oh, ow) — ``im2col_reference(x.transpose(0, 2, 3, 1), ...).T``. The quantized conv kernels
    use this layout so that ``W (O, K) @ cols`` lands directly in NCHW order."""
    (sh, sw), (ph, pw), (dh, dw) = _geometry(stride, padding, dilation)
    x_nchw = np.ascontiguousarray(x_nchw)
    n, c, h, w = x_nchw.shape
    oh, ow = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    if out is None:
        out = np.empty((kh * kw * c, n * oh * ow), dtype=dtype)
    _im2col_t_kernel(x_nchw, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, out.dtype.type(pad_value), out)
    return out
