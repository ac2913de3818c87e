"""Quantized 2-D convolution, any groups (depthwise included) — docs/quantization.md, step 9.

A convolution is a matrix product per group: im2col turns every output position into a row of the input
patch it sees, ordered (kh, kw, c), with positions outside the image filled with the activation zero point
z_x (real 0, step 2); the weights of group g, (O_g, C_g, KH, KW), become the matrix (O_g, KH·KW·C_g) in the
same (kh, kw, c) order. Then it is exactly the quantized linear layer: accumulator (step 4, with fbgemm's
int16 pair saturation along that order, step 8) and output stage (step 7).

Depthwise convolution (one input channel per group) has K = KH·KW taps per output; fbgemm's depthwise
kernels pair the products along the taps in the same (kh, kw) order, so the same rule covers it. ONNX
Runtime's depthwise kernel (one input *and* one output channel per group) accumulates exactly instead
(``Arithmetic.saturate_depthwise``).

``qconv2d_reference``: per-group im2col + :func:`gemm_u8s8_reference` + :func:`requantize_reference`.
``qconv2d``: the fast path — one im2col + BLAS-exact GEMM for groups == 1 (1×1 stride-1 convs skip im2col),
a direct Numba loop for depthwise-style groups (C_g = 1), per-group GEMMs otherwise. Bit-identical.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .arithmetic import arithmetic
from .gemm import gemm_u8s8, gemm_u8s8_reference, pack_weight
from .im2col import _pair, conv_out_size, im2col, im2col_reference
from .requantize import output_stage, requantize, requantize_reference

__all__ = ["qconv2d", "qconv2d_reference", "PackedConvWeight", "pack_conv_weight"]


def _check(x_q, w_q, groups):
    x_q, w_q = np.asarray(x_q), np.asarray(w_q)
    if x_q.dtype != np.uint8 or x_q.ndim != 4:
        raise ValueError(f"x_q must be a 4-D uint8 NCHW array, got {x_q.dtype} {x_q.shape}")
    if w_q.dtype != np.int8 or w_q.ndim != 4:
        raise ValueError(f"w_q must be a 4-D int8 OIHW array, got {w_q.dtype} {w_q.shape}")
    c_in, c_out = x_q.shape[1], w_q.shape[0]
    if groups < 1 or c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide input channels {c_in} and output channels {c_out}")
    if w_q.shape[1] != c_in // groups:
        raise ValueError(f"shape mismatch: weight expects {w_q.shape[1] * groups} input channels "
                         f"(groups={groups}), input has {c_in}")
    return x_q, w_q


def _weight_matrix(w_q, g, groups):
    """Group g's weights as the (O_g, KH·KW·C_g) matrix in im2col's (kh, kw, c) column order."""
    og = w_q.shape[0] // groups
    wg = w_q[g * og:(g + 1) * og]
    return np.ascontiguousarray(wg.transpose(0, 2, 3, 1).reshape(og, -1))


def qconv2d_reference(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, y_scale, y_zp, *, stride=1, padding=0,
                      dilation=1, groups=1, relu=False, clamp=None, emulate="fbgemm"):
    """Readable quantized conv2d: x_q uint8 NCHW, w_q int8 OIHW → uint8 NCHW (module docstring)."""
    x_q, w_q = _check(x_q, w_q, groups)
    ar = arithmetic(emulate)
    n, c_in, h, w = x_q.shape
    c_out, cg, kh, kw = w_q.shape
    og = c_out // groups
    w_zp_all = np.broadcast_to(np.asarray(w_zp, dtype=np.int64), (c_out,))
    x_nhwc = x_q.transpose(0, 2, 3, 1)
    saturate = ar.saturate_depthwise if (cg == 1 and og == 1 and groups > 1) else ar.saturate_pairs
    accs = []
    for g in range(groups):
        cols = im2col_reference(x_nhwc[..., g * cg:(g + 1) * cg], kh, kw, stride, padding, dilation,
                                pad_value=x_zp)
        accs.append(gemm_u8s8_reference(cols, _weight_matrix(w_q, g, groups), x_zp,
                                        w_zp_all[g * og:(g + 1) * og], saturate_pairs=saturate))
    acc = np.concatenate(accs, axis=1)
    st = output_stage(c_out, x_scale, w_scale, bias, y_scale, y_zp, relu=relu, clamp=clamp, emulate=ar)
    y = requantize_reference(acc, st)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    oh, ow = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    return y.reshape(n, oh, ow, c_out).transpose(0, 3, 1, 2).copy()


class PackedConvWeight:
    """Conv weights prepared once for :func:`qconv2d` (like torch's ``conv2d_prepack``): per-group
    :class:`~minquant.kernels.gemm.PackedWeight` GEMM operands, or for depthwise-style groups the
    (C_out, KH·KW) tap matrix."""

    def __init__(self, w_q, w_zp, groups):
        w_q = np.asarray(w_q)
        if w_q.dtype != np.int8 or w_q.ndim != 4:
            raise ValueError(f"w_q must be a 4-D int8 OIHW array, got {w_q.dtype} {w_q.shape}")
        self.w_q, self.groups = w_q, int(groups)
        c_out, cg, kh, kw = w_q.shape
        if self.groups < 1 or c_out % self.groups:
            raise ValueError(f"groups={groups} must divide output channels {c_out}")
        self.w_zp = np.ascontiguousarray(np.broadcast_to(np.asarray(w_zp, dtype=np.int64), (c_out,)))
        self.depthwise = cg == 1 and self.groups > 1
        og = c_out // self.groups
        if self.depthwise:
            self.taps = np.ascontiguousarray(w_q.reshape(c_out, kh * kw).astype(np.int64))
            self.packs = None
        else:
            self.taps = None
            self.packs = [pack_weight(_weight_matrix(w_q, g, self.groups), self.w_zp[g * og:(g + 1) * og])
                          for g in range(self.groups)]


def pack_conv_weight(w_q, w_zp=0, groups=1) -> PackedConvWeight:
    """Prepare OIHW int8 conv weights for :func:`qconv2d`."""
    return PackedConvWeight(w_q, w_zp, groups)


@njit(cache=True)
def _depthwise_kernel(x, taps, w_zp, x_zp, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, mult, saturate, out):
    """acc for groups with one input channel each: out channel o reads input channel o // mult.

    Taps are visited in (kh, kw) order and, with ``saturate``, summed in pairs clamped to int16 (step 8);
    padding reads z_x. Zero points are subtracted after the raw sum (step 4)."""
    n_img, c_in, h, w = x.shape
    c_out = taps.shape[0]
    K = kh * kw
    for b in range(n_img):
        for o in range(c_out):
            c = o // mult
            wsum = np.int64(0)
            for t in range(K):
                wsum += taps[o, t]
            for y in range(oh):
                for xo in range(ow):
                    raw = np.int64(0)
                    asum = np.int64(0)
                    pair = np.int64(0)
                    for t in range(K):
                        i = t // kw
                        j = t - i * kw
                        iy = y * sh - ph + i * dh
                        ix = xo * sw - pw + j * dw
                        if 0 <= iy < h and 0 <= ix < w:
                            a = np.int64(x[b, c, iy, ix])
                        else:
                            a = x_zp
                        asum += a
                        pair += a * taps[o, t]
                        if t % 2 == 1 or t == K - 1:
                            if saturate:
                                if pair > 32767:
                                    pair = 32767
                                elif pair < -32768:
                                    pair = -32768
                            raw += pair
                            pair = 0
                    out[b * oh * ow + y * ow + xo, o] = (raw - x_zp * wsum - w_zp[o] * asum
                                                         + K * x_zp * w_zp[o])


def qconv2d(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, y_scale, y_zp, *, stride=1, padding=0, dilation=1,
            groups=1, relu=False, clamp=None, emulate="fbgemm"):
    """Fast quantized conv2d; same contract and bit-identical result as :func:`qconv2d_reference`.

    ``w_q`` may be a :class:`PackedConvWeight` (``pack_conv_weight(w_q, w_zp, groups)``)."""
    packed = w_q if isinstance(w_q, PackedConvWeight) else PackedConvWeight(w_q, w_zp, groups)
    if packed.groups != groups:
        raise ValueError(f"packed weights were made for groups={packed.groups}, call has groups={groups}")
    x_q, w_arr = _check(x_q, packed.w_q, groups)
    ar = arithmetic(emulate)
    n, c_in, h, w = x_q.shape
    c_out, cg, kh, kw = w_arr.shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    oh, ow = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    if not 0 <= int(x_zp) <= 255:
        raise ValueError(f"activation zero point {x_zp} outside [0, 255]")
    if packed.depthwise:
        mult = c_out // c_in
        saturate = ar.saturate_depthwise if mult == 1 else ar.saturate_pairs
        acc = np.empty((n * oh * ow, c_out), dtype=np.int32)
        _depthwise_kernel(np.ascontiguousarray(x_q), packed.taps, packed.w_zp, np.int64(x_zp), kh, kw, sh, sw,
                          ph, pw, dh, dw, oh, ow, mult, saturate, acc)
    else:
        x_nhwc = np.ascontiguousarray(x_q.transpose(0, 2, 3, 1))
        og = c_out // groups
        acc = np.empty((n * oh * ow, c_out), dtype=np.int32)
        for g in range(groups):
            xg = x_nhwc if groups == 1 else np.ascontiguousarray(x_nhwc[..., g * cg:(g + 1) * cg])
            if kh == kw == 1 and (sh, sw, ph, pw) == (1, 1, 0, 0):
                cols = xg.reshape(-1, cg)           # a 1×1 stride-1 conv is already a GEMM
            else:
                cols = im2col(xg, kh, kw, (sh, sw), (ph, pw), (dh, dw), pad_value=x_zp)
            acc_g = gemm_u8s8(cols, packed.packs[g], x_zp, saturate_pairs=ar.saturate_pairs)
            if groups == 1:
                acc = acc_g
            else:
                acc[:, g * og:(g + 1) * og] = acc_g
    st = output_stage(c_out, x_scale, w_scale, bias, y_scale, y_zp, relu=relu, clamp=clamp, emulate=ar)
    y = requantize(acc, st)
    return y.reshape(n, oh, ow, c_out).transpose(0, 3, 1, 2).copy()
