"""Quantized 2-D convolution, any groups (depthwise included) — docs/quantization.md, step 9.

A convolution is a matrix product per group: im2col turns every output position into a row of the input
patch it sees, ordered (kh, kw, c), with positions outside the image filled with the activation zero point
z_x (real 0, step 2); the weights of group g, (O_g, C_g, KH, KW), become the matrix (O_g, KH·KW·C_g) in the
same (kh, kw, c) order. Then it is exactly the quantized linear layer: accumulator (step 4, with fbgemm's
int16 pair saturation along that order, step 8) and output stage (step 7).

Depthwise convolution (one input channel per group) has K = KH·KW taps per output; fbgemm's depthwise
kernel pairs the products along the taps in the same (kh, kw) order, so the same rule covers it. Whether a
layer's pairs saturate is decided per layer by its target (:meth:`minquant.target.Target.conv`): fbgemm's
depthwise kernel saturates on every CPU, its GEMM only without VNNI; ONNX Runtime's depthwise kernel (one
input *and* one output channel per group) accumulates exactly.

``qconv2d_reference``: per-group im2col + :func:`gemm_u8s8_reference` + :func:`requantize_reference`.
``QConv2d`` (and its one-shot form ``qconv2d``, which packs the weights on every call): the fast path —
for groups == 1 the int8 SIMD GEMM with im2col done panel by panel and the output stage fused
(:mod:`~minquant.kernels.gemm_simd`; without JIT or AVX2: one im2col + the BLAS-exact GEMM, 1×1 stride-1
convs skipping im2col), a direct Numba loop for depthwise-style groups (C_g = 1), per-group GEMMs
otherwise. Bit-identical to the reference. ``QConv2d.nhwc`` is the same layer on channels-last codes (N, H, W, C)
→ (N, OH, OW, O), for the channels-last execution plan (:mod:`minquant.quantized.layout`): groups == 1 on the
GEMM's linear layout (pixel rows; :func:`~minquant.kernels.gemm_simd.conv_rows_simd`), depthwise on the
channels-last kernel (:func:`depthwise_channels_last`).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..target import resolve_conv
from .checks import check_conv_args, check_groups, check_weight_zp
from .depthwise import Depthwise3x3NHWC, _depthwise3x3_nhwc_kernel
from .gemm import gemm_u8s8_reference, pack_weight, raw_product_cols
from .gemm_simd import ISA_NONE, choose_plan, conv_rows_simd_runner, conv_simd
from .requant_simd import (VECTOR_MODES, lane_constants, requant16_lanes, requant_row16, store_codes16, taps9_16,
                           taps9_lanes16, widen16)
from .simd import host_isa, store16
from ..im2col import conv_out_size, im2col_reference, im2col_t
from .requantize import OutputStage, _requant_lanes, _requant_row, _requant_span, finish_requantize_cols, output_stage, requantize_reference

__all__ = ["QConv2d", "qconv2d", "qconv2d_reference", "PackedConvWeight", "pack_conv_weight"]

U = np.uint64   # flat indices in the depthwise kernels: unsigned, so Numba adds no wrap-around test


def _check_w(w_q):
    w_q = np.asarray(w_q)
    if w_q.dtype != np.int8 or w_q.ndim != 4:
        raise ValueError(f"w_q must be a 4-D int8 OIHW array, got {w_q.dtype} {w_q.shape}")
    return w_q


def _check(x_q, w_q, groups):
    x_q, w_q = np.asarray(x_q), _check_w(w_q)
    if x_q.dtype != np.uint8 or x_q.ndim != 4:
        raise ValueError(f"x_q must be a 4-D uint8 NCHW array, got {x_q.dtype} {x_q.shape}")
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


def conv_arithmetic(target, w_shape, w_zp, groups, stride, padding, dilation):
    """The :class:`~minquant.target.Arithmetic` of one convolution under ``target``: which kernel the
    framework picks for this layer (torch x86: oneDNN or fbgemm by ``should_use_onednn_quant``; fbgemm: its
    depthwise, groupwise or GEMM kernel, :func:`minquant.target.fbgemm_conv_path`) and how that kernel
    rounds on the target's CPU."""
    c_out, cg, kh, kw = w_shape
    return resolve_conv(target, groups=int(groups), c_in=int(cg) * int(groups), c_out=int(c_out), kernel=(kh, kw),
                        stride=stride, padding=padding, dilation=dilation,
                        symmetric_weights=not np.any(np.asarray(w_zp)))


def qconv2d_reference(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, y_scale, y_zp, *, stride=1, padding=0,
                      dilation=1, groups=1, relu=False, clamp=None, clamp_hi=None, target="fbgemm"):
    """Readable quantized conv2d: x_q uint8 NCHW, w_q int8 OIHW → uint8 NCHW (module docstring)."""
    geometry = check_conv_args(_check_w(w_q).shape, x_scale, x_zp, w_scale, w_zp, bias, y_scale, y_zp, stride, padding,
                    dilation, groups, clamp, clamp_hi)
    x_q, w_q = _check(x_q, w_q, groups)
    ar = conv_arithmetic(target, w_q.shape, w_zp, groups, stride, padding, dilation)
    n, c_in, h, w = x_q.shape
    c_out, cg, kh, kw = w_q.shape
    og = c_out // groups
    w_zp_all = np.broadcast_to(np.asarray(w_zp, dtype=np.int64), (c_out,))
    x_nhwc = x_q.transpose(0, 2, 3, 1)
    saturate = ar.saturate_pairs
    accs = []
    for g in range(groups):
        cols = im2col_reference(x_nhwc[..., g * cg:(g + 1) * cg], kh, kw, stride, padding, dilation,
                                pad_value=x_zp)
        accs.append(gemm_u8s8_reference(cols, _weight_matrix(w_q, g, groups), x_zp,
                                        w_zp_all[g * og:(g + 1) * og], saturate_pairs=saturate))
    acc = np.concatenate(accs, axis=1)
    st = output_stage(c_out, x_scale, w_scale, bias, y_scale, y_zp, relu=relu, clamp=clamp, clamp_hi=clamp_hi,
                      target=ar)
    y = requantize_reference(acc, st)
    (sh, sw), (ph, pw), (dh, dw) = geometry
    oh, ow = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    return y.reshape(n, oh, ow, c_out).transpose(0, 3, 1, 2).copy()


class PackedConvWeight:
    """Conv weights prepared once for :class:`QConv2d` (like torch's ``conv2d_prepack``): per-group
    :class:`~minquant.kernels.gemm.PackedWeight` GEMM operands, or for depthwise-style groups (one input
    channel per group) the (C_out, KH·KW) tap matrix."""

    def __init__(self, w_q, w_zp, groups):
        w_q = _check_w(w_q)
        check_groups(groups, w_q.shape[0])
        check_weight_zp(w_zp, w_q.shape[0])
        self.w_q, self.groups = w_q, int(groups)
        c_out, cg, kh, kw = w_q.shape
        self.w_zp = np.ascontiguousarray(np.broadcast_to(np.asarray(w_zp, dtype=np.int64), (c_out,)))
        self.depthwise = cg == 1 and self.groups > 1
        og = c_out // self.groups
        if self.depthwise:
            self.taps = np.ascontiguousarray(w_q.reshape(c_out, kh * kw).astype(np.float32))
            self.tap_sum = self.taps.astype(np.int64).sum(1)
            self.has_wzp = bool(np.any(self.w_zp))
            self.pair_max = tap_pair_max(w_q)
            k = kh * kw
            self.taps_t = np.zeros((k + k % 2, c_out), np.float32)   # (K even, C): channels-last taps
            self.taps_t[:k] = self.taps.T
            self.packs = None
        else:
            self.taps = None
            self.packs = [pack_weight(_weight_matrix(w_q, g, self.groups), self.w_zp[g * og:(g + 1) * og])
                          for g in range(self.groups)]


def tap_pair_max(w_q) -> int:
    """Largest |w_t| + |w_t+1| over the (kh, kw)-order tap pairs of a depthwise-style OIHW weight (an odd
    last tap pairs with 0). ``a_max`` times it bounds a pair's sum of products for activations ≤ a_max, so
    when that is below 32768 no pair can saturate int16 (step 8) — e.g. minquant's default 7-bit weights
    with uint8 activations: 255·128 = 32640."""
    t = np.abs(np.asarray(w_q).reshape(w_q.shape[0], -1).astype(np.int64))
    t = np.concatenate([t, np.zeros((t.shape[0], t.shape[1] % 2), np.int64)], axis=1)
    return int((t[:, 0::2] + t[:, 1::2]).max()) if t.size else 0


def pack_conv_weight(w_q, w_zp=0, groups=1) -> PackedConvWeight:
    """Prepare OIHW int8 conv weights for :func:`qconv2d` / :class:`QConv2d`."""
    return PackedConvWeight(w_q, w_zp, groups)


@njit(cache=True, inline="always")
def _fill_planes(xf, src0, h, w, ph, pw, sh, sw, hq, wq, zpf, flat, wide):
    """Step 1 of :func:`_depthwise_kernel` for one channel (its h·w codes at ``xf[src0:]``, ``xf`` the flat
    input): the zero-point-padded plane split by (row, column) phase into float32 planes of pitch wq,
    ``flat[((φr·sw + φc)·hq + r)·wq + q] = padded[r·sh + φr, q·sw + φc]``. Everything is set to z_x first
    (the padding), then each input row is converted into its column phases (16 codes per instruction when
    ``wide``, :func:`~minquant.kernels.requant_simd.widen16`). Flat unsigned indices (``U``),
    no array views: per-channel views cost more than a small image's arithmetic, and unsigned indices need
    no wrap-around test, so the loops vectorise."""
    for i in range(U(flat.shape[0])):
        flat[i] = zpf
    for rr in range(ph, ph + h):                      # padded row rr = input row rr − ph
        s = src0 + (rr - ph) * w
        pr, qr = rr % sh, rr // sh
        for pc in range(sw):                          # padded column q·sw + pc = input column q·sw + pc − pw
            base = ((pr * sw + pc) * hq + qr) * wq
            q0 = max(0, -((pc - pw) // sw))           # first q inside the image
            q1 = min(wq, (w - 1 + pw - pc) // sw + 1)  # one past the last
            d, j = U(base + q0), U(s + q0 * sw + pc - pw)
            if sw == 1:
                n16 = 0
                if wide:
                    n16 = max(q1 - q0, 0) // 16 * 16
                for q in range(0, n16, 16):          # 16 at a time (vpmovzxbd + vcvtdq2ps), no overrun
                    widen16(flat, base + q0 + q, xf, s + q0 - pw + q)
                for q in range(U(n16), U(max(q1 - q0, 0))):
                    flat[d + q] = np.float32(xf[j + q])
            else:
                st = U(sw)
                for q in range(U(max(q1 - q0, 0))):
                    flat[d + q] = np.float32(xf[j + q * st])


@njit(cache=True, inline="always")
def _store_plane(acc_i, oh, ow, wq, o, vec_out, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out_f, o0, tail):
    """The output stage of one channel's accumulators (rows of pitch wq, the last wq − ow of each spare) into
    out_f[o0:o0 + oh·ow]: the rows are first closed up in place (each value moves to a lower index), so that
    one sweep does the whole channel (measured: faster than one sweep per row, even for 56-wide rows) — on
    16 lanes at a time when ``vec_out`` (:func:`~minquant.kernels.requant_simd.requant_row16`; ``acc_i`` has 16
    spare entries for its last chunk)."""
    if wq != ow:
        for y in range(1, oh):
            d, s = U(y * ow), U(y * wq)
            for x in range(U(ow)):
                acc_i[d + x] = acc_i[s + x]
    if vec_out:
        requant_row16(acc_i, 0, oh * ow, 0, o, mode, bias_f, bias_q, mult32, y_zp, lo, hi, out_f, o0, tail)
    else:
        _requant_span(acc_i, 0, oh * ow, o, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out_f, o0)


@njit(cache=True)
def _depthwise_kernel(x_q, taps, tap_sum, w_zp, x_zp, kh, kw, sh, sw, ph, pw, dh, dw, mult, sat_lo, sat_hi,
                      vec, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out):
    """Depthwise-style conv straight from uint8 NCHW codes to uint8 NCHW codes, one input channel at a time.

    1. The channel's zero-point-padded plane (padding at z_x = real 0) is split by phase — row mod sh,
       column mod sw — into float32 planes of one pitch wq: ``planes[φr, φc, r, q] = padded[r·sh + φr,
       q·sw + φc]``. Tap (i, j) of output pixel (y, x) reads padded[y·sh + i·dh, x·sw + j·dw], i.e. plane
       (i·dh mod sh, j·dw mod sw) at (y + i·dh div sh, x + j·dw div sw): a fixed offset ``off_t``. So for
       every tap the whole output — computed with wq − ow spare columns per row, thrown away — is ONE
       contiguous run: ``acc[y·wq + x] += w_t · planes_flat[off_t + y·wq + x]``, a vectorised sweep.
    2. Taps are taken in pairs (t, t+1) in (kh, kw) order; each pair's sum of products is clamped to
       [sat_lo, sat_hi] — the int16 range when the emulated framework saturates (step 8), else a no-op
       bound — and added to the accumulator. All in float32 on exact integers (a pair < 2^17, a sum of at
       most 255 taps < 2^24), so the result is the framework's integer.
    3. Zero-point terms (step 4): acc − z_x·Σw + K·z_x·z_w − z_w·Σx, then the output stage (step 7) per
       output row. Output channel o reads input channel o // mult."""
    n_img, c_in, h, w = x_q.shape
    oh, ow = out.shape[2], out.shape[3]
    xf = x_q.reshape(x_q.size)
    out_f = out.reshape(out.size)
    K = kh * kw
    hp, wp = h + 2 * ph, w + 2 * pw
    hq = -(-hp // sh) + 1          # + one spare row: the last row's spare columns may read past its end
    wq = -(-wp // sw)
    flat = np.empty(sh * sw * hq * wq + 16, np.float32)   # + 16: a 16-lane read past the last output
    L = oh * wq
    UL = U(L)
    acc = np.empty(L, np.float32)
    acc_i = np.empty(L + 16, np.int32)     # + 16: the last 16-lane chunk of the output stage
    tail = np.empty(16, np.uint8)
    vec_out = vec and mode in VECTOR_MODES   # the output stage on 16 lanes
    offs = np.empty(K + 1, np.uint64)
    for t in range(K):
        i = t // kw
        r, c = i * dh, (t - i * kw) * dw
        offs[t] = (((r % sh) * sw + c % sw) * hq + r // sh) * wq + c // sw
    offs[K] = offs[K - 1]                    # odd K: the last tap's partner has weight 0
    zpf = np.float32(x_zp)
    c_out = c_in * mult
    for b in range(n_img):
        for c in range(c_in):
            _fill_planes(xf, (b * c_in + c) * h * w, h, w, ph, pw, sh, sw, hq, wq, zpf, flat, vec)
            for m in range(mult):
                o = c * mult + m
                zw = w_zp[o]
                for i in range(UL):
                    acc[i] = 0
                for t in range(0, K, 2):
                    w0 = taps[o, t]
                    w1 = taps[o, t + 1] if t + 1 < K else np.float32(0)
                    f0, f1 = offs[t], offs[t + 1]
                    for i in range(UL):
                        p = flat[f0 + i] * w0 + flat[f1 + i] * w1
                        acc[i] += min(max(p, sat_lo), sat_hi)
                cterm = np.int32(x_zp * tap_sum[o] - K * x_zp * zw)
                for i in range(UL):
                    acc_i[i] = np.int32(acc[i]) - cterm
                if zw != 0:
                    zw32 = np.int32(zw)
                    for t in range(K):
                        f0 = offs[t]
                        for i in range(UL):
                            acc_i[i] -= zw32 * np.int32(flat[f0 + i])
                _store_plane(acc_i, oh, ow, wq, o, vec_out, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out_f,
                             (b * c_out + o) * oh * ow, tail)


@njit(cache=True)
def _depthwise3x3_kernel(x_q, taps, tap_sum, x_zp, sh, sw, ph, pw, clamp_pairs, sat_lo, sat_hi,
                         vec, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out):
    """:func:`_depthwise_kernel` for the common case — 3×3 taps, dilation 1, one output channel per input
    channel, weight zero points 0 — with the nine taps written out, so the accumulator stays in a register:
    ``acc[i] = Σ_pairs clamp(w_t·s_t[i] + w_t+1·s_t+1[i])`` (pairs (0,1) (2,3) (4,5) (6,7) (8); the clamp only
    when ``clamp_pairs``: a pair can reach the int16 limits and the framework saturates)."""
    n_img, c_in, h, w = x_q.shape
    oh, ow = out.shape[2], out.shape[3]
    xf = x_q.reshape(x_q.size)
    out_f = out.reshape(out.size)
    hp, wp = h + 2 * ph, w + 2 * pw
    hq = -(-hp // sh) + 1
    wq = -(-wp // sw)
    flat = np.empty(sh * sw * hq * wq + 16, np.float32)   # + 16: a 16-lane read past the last output
    L = oh * wq
    UL = U(L)
    acc_i = np.empty(L + 16, np.int32)     # + 16: the last 16-lane chunk of the output stage
    tail = np.empty(16, np.uint8)
    vec_out = vec and mode in VECTOR_MODES   # the output stage on 16 lanes
    off = np.empty(9, np.uint64)
    for t in range(9):
        r, cc = t // 3, t % 3
        off[t] = (((r % sh) * sw + cc % sw) * hq + r // sh) * wq + cc // sw
    o0, o1, o2, o3, o4, o5, o6, o7, o8 = off[0], off[1], off[2], off[3], off[4], off[5], off[6], off[7], off[8]
    offs9 = (np.int64(o0), np.int64(o1), np.int64(o2), np.int64(o3), np.int64(o4), np.int64(o5), np.int64(o6),
             np.int64(o7), np.int64(o8))
    zpf = np.float32(x_zp)
    for b in range(n_img):
        for c in range(c_in):
            _fill_planes(xf, (b * c_in + c) * h * w, h, w, ph, pw, sh, sw, hq, wq, zpf, flat, vec)
            w0, w1, w2, w3, w4, w5, w6, w7, w8 = (taps[c, 0], taps[c, 1], taps[c, 2], taps[c, 3], taps[c, 4],
                                                  taps[c, 5], taps[c, 6], taps[c, 7], taps[c, 8])
            cterm = np.float32(x_zp * tap_sum[c])
            if vec:     # 16 outputs per step on vfmadd (same pairs, same clamps: the same integers)
                wt = (w0, w1, w2, w3, w4, w5, w6, w7, w8)
                for i in range(0, L, 16):
                    store16(acc_i, 4 * i, taps9_16(flat, i, offs9, wt, cterm, sat_lo, sat_hi, clamp_pairs))
            elif clamp_pairs:
                for i in range(UL):
                    a = (min(max(flat[o0 + i] * w0 + flat[o1 + i] * w1, sat_lo), sat_hi)
                         + min(max(flat[o2 + i] * w2 + flat[o3 + i] * w3, sat_lo), sat_hi)
                         + min(max(flat[o4 + i] * w4 + flat[o5 + i] * w5, sat_lo), sat_hi)
                         + min(max(flat[o6 + i] * w6 + flat[o7 + i] * w7, sat_lo), sat_hi)
                         + flat[o8 + i] * w8)
                    acc_i[i] = np.int32(a - cterm)
            else:
                for i in range(UL):
                    a = (flat[o0 + i] * w0 + flat[o1 + i] * w1 + flat[o2 + i] * w2 + flat[o3 + i] * w3
                         + flat[o4 + i] * w4 + flat[o5 + i] * w5 + flat[o6 + i] * w6 + flat[o7 + i] * w7
                         + flat[o8 + i] * w8)
                    acc_i[i] = np.int32(a - cterm)
            _store_plane(acc_i, oh, ow, wq, c, vec_out, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out_f,
                         (b * c_in + c) * oh * ow, tail)


@njit(cache=True, inline="always")
def _pixel_lanes(xp, offs9, taps_t, ct, sat_lo, sat_hi, clamp_pairs, mode, consts, bq, zf, lof, y_flat, o_out, C16):
    """Channels 0 .. C16 − 1 of one output pixel of a 3×3 depthwise conv, channels-last: nine taps and the
    output stage on 16 channels per step, codes written to ``y_flat[o_out + c]``. One loop per mode, so that
    the mode is a constant in each (:func:`~minquant.kernels.requant_simd.requant16_lanes`)."""
    if mode == 0:
        for c in range(0, C16, 16):
            store_codes16(y_flat, o_out + c, requant16_lanes(
                0, taps9_lanes16(xp, offs9, taps_t, c, ct, sat_lo, sat_hi, clamp_pairs), consts, bq, c, zf, lof))
    elif mode == 1:
        for c in range(0, C16, 16):
            store_codes16(y_flat, o_out + c, requant16_lanes(
                1, taps9_lanes16(xp, offs9, taps_t, c, ct, sat_lo, sat_hi, clamp_pairs), consts, bq, c, zf, lof))
    elif mode == 2:
        for c in range(0, C16, 16):
            store_codes16(y_flat, o_out + c, requant16_lanes(
                2, taps9_lanes16(xp, offs9, taps_t, c, ct, sat_lo, sat_hi, clamp_pairs), consts, bq, c, zf, lof))
    else:
        for c in range(0, C16, 16):
            store_codes16(y_flat, o_out + c, requant16_lanes(
                4, taps9_lanes16(xp, offs9, taps_t, c, ct, sat_lo, sat_hi, clamp_pairs), consts, bq, c, zf, lof))


@njit(cache=True)
def _depthwise_nhwc_kernel(xt, taps_t, tap_sum, x_zp, kh, kw, sh, sw, ph, pw, dh, dw, sat_lo, sat_hi,
                           clamp_pairs, vec, consts, bq, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, yt):
    """Channel-vectorised variant of :func:`_depthwise_kernel` for small images (few output pixels, many
    channels): ``xt`` (batch, H, W, C) and ``yt`` (batch, OH, OW, C) are channels-last uint8, ``taps_t`` is
    (K rounded up to even, C) with a zero row for an odd K. Per image the zero-point-padded input is made
    once as channels-last float32; then per output pixel every loop runs over the C channels (contiguous),
    pairs of taps in (kh, kw) order, each pair clamped to [sat_lo, sat_hi]. Same pairs, same clamps, same
    order, so the same integers; one input channel per output channel, weight zero points 0. The output
    stage runs along the channels (:func:`~minquant.kernels.requantize._requant_lanes`). With ``vec`` (JIT
    on), a 3×3 kernel (dilation 1) and a float32 output stage, 16 channels go through the nine taps and the
    output stage per step (:func:`_pixel_lanes`; ``consts``, ``bq``: the stage's per-channel constants,
    :func:`~minquant.kernels.requant_simd.lane_constants`), the pair clamps only when ``clamp_pairs``."""
    n_img, h, w, C = xt.shape
    oh, ow = yt.shape[1], yt.shape[2]
    K = kh * kw
    hp, wp = h + 2 * ph, w + 2 * pw
    xf = xt.reshape(xt.size)
    y2 = yt.reshape(n_img * oh * ow, C)
    y_flat = yt.reshape(yt.size)
    acc = np.empty(C, np.float32)
    acc_i = np.empty(C, np.int32)
    ct = np.empty(C + 16, np.int32)
    nine = vec and kh == 3 and kw == 3 and dh == 1 and dw == 1 and mode in VECTOR_MODES
    C16 = C // 16 * 16 if nine else 0           # channels done 16 at a time
    xp = np.empty(hp * wp * C + 16, np.float32)   # + 16: reads of the last 16 lanes stay inside
    for c in range(C):
        ct[c] = np.int32(x_zp * tap_sum[c])
    UC = U(C)
    zpf = np.float32(x_zp)
    zf, lof = np.float32(y_zp), np.float32(lo)
    for b in range(n_img):
        for i in range(U(xp.shape[0])):
            xp[i] = zpf
        for r in range(h):
            d = U(((r + ph) * wp + pw) * C)
            s = U(((b * h + r) * w) * C)
            for i in range(U(w * C)):
                xp[d + i] = np.float32(xf[s + i])
        for y in range(oh):
            for xo in range(ow):
                pix = (b * oh + y) * ow + xo
                if nine:
                    o = ((y * sh) * wp + xo * sw) * C
                    offs9 = (np.int64(o), np.int64(o + C), np.int64(o + 2 * C), np.int64(o + wp * C),
                             np.int64(o + (wp + 1) * C), np.int64(o + (wp + 2) * C), np.int64(o + 2 * wp * C),
                             np.int64(o + (2 * wp + 1) * C), np.int64(o + (2 * wp + 2) * C))
                    _pixel_lanes(xp, offs9, taps_t, ct, sat_lo, sat_hi, clamp_pairs, mode, consts, bq, zf, lof,
                                 y_flat, pix * C, C16)
                    if C16 == C:
                        continue
                for c in range(U(C16), UC):
                    acc[c] = 0
                for t in range(0, K, 2):
                    i0 = t // kw
                    o0 = U(((y * sh + i0 * dh) * wp + xo * sw + (t - i0 * kw) * dw) * C)
                    t1 = t + 1 if t + 1 < K else t          # odd K: the partner's weight row is 0
                    i1 = t1 // kw
                    o1 = U(((y * sh + i1 * dh) * wp + xo * sw + (t1 - i1 * kw) * dw) * C)
                    w0 = taps_t[t]
                    w1 = taps_t[t + 1]
                    for c in range(U(C16), UC):
                        p = xp[o0 + c] * w0[c] + xp[o1 + c] * w1[c]
                        acc[c] += min(max(p, sat_lo), sat_hi)
                for c in range(U(C16), UC):
                    acc_i[c] = np.int32(acc[c]) - ct[c]
                _requant_lanes(acc_i[C16:], C16, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, y2[pix, C16:])


_NHWC_MAX_OW = 14   # output width up to which the channels-last depthwise kernel runs (measured on MobileNetV2's
#                    3×3 layers: channels-last wins up to 14 columns — 14×14 at stride 1, 28×28 at stride 2 —
#                    the NCHW kernels from 28 columns up)


class QConv2d:
    """A quantized conv2d layer ready to run: weights packed, output stage precomputed once.

    ``QConv2d(w_q, w_scale, w_zp, bias, x_scale, x_zp, y_scale, y_zp, stride=, padding=, dilation=,
    groups=, relu=, clamp=, target=)``; calling it with uint8 NCHW codes returns uint8 NCHW codes,
    bit-identical to :func:`qconv2d_reference`. Paths: depthwise-style groups → a direct Numba loop;
    groups == 1 → the int8 SIMD GEMM on the host's instructions (:attr:`plan`), or im2col (skipped for 1×1
    stride-1) + the BLAS-exact GEMM; other groups → one GEMM per group."""

    def __init__(self, w_q, w_scale, w_zp, bias, x_scale, x_zp, y_scale, y_zp, *, stride=1, padding=0,
                 dilation=1, groups=1, relu=False, clamp=None, clamp_hi=None, target="fbgemm"):
        packed = isinstance(w_q, PackedConvWeight)
        self.stride, self.padding, self.dilation = check_conv_args(
            w_q.w_q.shape if packed else _check_w(w_q).shape, x_scale, x_zp, w_scale, w_q.w_zp if packed else w_zp,
            bias, y_scale, y_zp, stride, padding, dilation, groups, clamp, clamp_hi)
        self.packed = w_q if packed else PackedConvWeight(w_q, w_zp, groups)
        if self.packed.groups != groups:
            raise ValueError(f"packed weights were made for groups={self.packed.groups}, call has groups={groups}")
        self.groups = int(groups)
        self.arith = conv_arithmetic(target, self.packed.w_q.shape, self.packed.w_zp, groups, self.stride,
                                     self.padding, self.dilation)
        self.x_zp = int(x_zp)
        c_out, cg, kh, kw = self.packed.w_q.shape
        self.stage = output_stage(c_out, x_scale, w_scale, bias, y_scale, y_zp, relu=relu, clamp=clamp,
                                  clamp_hi=clamp_hi, target=self.arith)
        self._lanes = lane_constants(self.stage, c_out)   # per-channel constants of the SIMD output stages
        self._rows_runners = {}      # plan → the channels-last product ready to run (conv_rows_simd_runner)
        self._nhwc_runs = {}         # (NHWC input shape, instruction set) → run(x) of nhwc (_nhwc_runner)
        if not self.packed.depthwise:
            self.col_adj = [pk.col_sum - pk.w_q.shape[1] * pk.w_zp for pk in self.packed.packs]
            og = c_out // self.groups
            self.group_stages = [_slice_stage(self.stage, g, og) for g in range(self.groups)]
            self.has_wzp = [bool(np.any(pk.w_zp)) for pk in self.packed.packs]

    def _pair_bounds(self):
        """(saturate, lo, hi) of the depthwise kernels: the clamp of each tap pair's sum — the int16 range when
        the target saturates pairs and some pair can reach it (step 8), else a bound no sum reaches."""
        kh, kw = self.packed.w_q.shape[2:]
        if kh * kw > 255:
            raise ValueError(f"depthwise kernel {kh}x{kw} too large for the exact float32 accumulator")
        if self.arith.saturate_pairs and 255 * self.packed.pair_max >= 32768:
            return True, -32768.0, 32767.0
        return False, -2.0 ** 30, 2.0 ** 30

    @property
    def _depthwise_channels_last(self) -> bool:
        """A depthwise layer the channels-last kernel runs: one input and one output channel per group, weight
        zero points 0."""
        pk = self.packed
        return pk.depthwise and pk.w_q.shape[0] == self.groups and not pk.has_wzp

    @property
    def channels_last_native(self) -> bool:
        """Whether :meth:`nhwc` runs channels-last codes without transposing them: a groups = 1 layer on the int8
        SIMD GEMM, or a depthwise layer with one output channel per group and weight zero points 0. (Other
        layers also take NHWC codes, through two transposes around the NCHW kernels.)"""
        if self.packed.depthwise:
            return self._depthwise_channels_last
        return self.groups == 1 and self.plan.isa != ISA_NONE

    def nhwc(self, x_q):
        """The same convolution on channels-last codes: uint8 (N, H, W, C) → uint8 (N, OH, OW, O), bit-identical
        to :func:`qconv2d_reference` on the transposed input (transposed back). groups = 1 runs the linear
        layout of the SIMD GEMM (:func:`~minquant.kernels.gemm_simd.conv_rows_simd`: a 1×1 stride-1 conv
        reads the pixel rows in place), depthwise layers the channels-last kernel
        (:func:`depthwise_channels_last`); the rest (:attr:`channels_last_native` false) the NCHW path between
        two transposes."""
        if type(x_q) is np.ndarray and x_q.dtype == np.uint8 and x_q.flags.c_contiguous:
            run = self._nhwc_runs.get((x_q.shape, host_isa()))
            if run is not None:     # this shape was checked and planned before: only the kernel runs
                return run(x_q)
        x_q = np.asarray(x_q)
        c_out, cg, kh, kw = self.packed.w_q.shape
        if x_q.dtype != np.uint8 or x_q.ndim != 4:
            raise ValueError(f"x_q must be a 4-D uint8 NHWC array, got {x_q.dtype} {x_q.shape}")
        if x_q.shape[3] != cg * self.groups:
            raise ValueError(f"shape mismatch: weight expects {cg * self.groups} input channels "
                             f"(groups={self.groups}), the NHWC input has {x_q.shape[3]}")
        if not self.channels_last_native:
            y = self(np.ascontiguousarray(x_q.transpose(0, 3, 1, 2)))
            return np.ascontiguousarray(y.transpose(0, 2, 3, 1))
        x_q = np.ascontiguousarray(x_q)
        run = self._nhwc_runs[(x_q.shape, host_isa())] = self._nhwc_runner(x_q.shape)
        return run(x_q)

    def _depthwise3x3(self) -> Depthwise3x3NHWC:
        """This depthwise 3×3 layer as the channels-last integer SIMD kernel (built on first use, then kept)."""
        dw3 = self.__dict__.get("_dw3x3")
        if dw3 is None:
            dw3 = self._dw3x3 = Depthwise3x3NHWC.from_qconv2d(self)
        return dw3

    def _nhwc_runner(self, x_shape):
        """``run(x)`` of :meth:`nhwc` for checked, contiguous channels-last codes of shape ``x_shape`` on this
        host's instructions (or those a test caps it to): the plan and output shape worked out once, so that a
        model's later calls run the kernel and allocate the output, nothing more."""
        n, h, w, _ = x_shape
        c_out, cg, kh, kw = self.packed.w_q.shape
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        oh, ow = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
        if self.packed.depthwise:
            isa = host_isa()
            if (kh, kw) == (3, 3) and (dh, dw) == (1, 1) and sh == sw and sh in (1, 2) and isa != ISA_NONE:
                dw3 = self._depthwise3x3()
                kind, args, y_shape = dw3.kinds[isa], dw3._args, dw3.out_shape(x_shape)
                if kind.mode >= 0:      # the output stage inside the kernel (what depthwise3x3_nhwc runs)
                    def run_dw3(x):
                        out = np.empty(y_shape, np.uint8)
                        _depthwise3x3_nhwc_kernel(kind, x, *args, out)
                        return out
                    return run_dw3
            return lambda x: depthwise_channels_last(self, x, oh, ow)
        plan = self.plan
        run = self._rows_runners.get(plan)
        if run is None:     # made once per plan (the host's instructions, or those a test caps it to)
            run = self._rows_runners[plan] = conv_rows_simd_runner(
                plan, self.packed.packs[0], (kh, kw), self.stride, self.padding, self.dilation, self.x_zp,
                self.col_adj[0], self.stage, self._lanes)
        return run

    @property
    def plan(self):
        """How a groups = 1 product runs on this host (:func:`~minquant.kernels.gemm_simd.choose_plan`; other
        groupings use the float32 paths): the target's arithmetic on the host's int8 instructions."""
        if self.packed.depthwise or self.groups != 1:
            return choose_plan(False, False, ISA_NONE)
        return choose_plan(self.arith.saturate_pairs, self.packed.packs[0].risky.shape[0] > 0)

    def __call__(self, x_q):
        pk = self.packed
        x_q, w_arr = _check(x_q, pk.w_q, self.groups)
        n, c_in, h, w = x_q.shape
        c_out, cg, kh, kw = w_arr.shape
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        oh, ow = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
        st = self.stage
        if pk.depthwise:
            x_q = np.ascontiguousarray(x_q)
            vec = host_isa() != ISA_NONE      # JIT on: the output stage on 16 lanes
            mult = c_out // c_in
            saturate, lo_s, hi_s = self._pair_bounds()
            out = np.empty((n, c_out, oh, ow), np.uint8)
            if self._depthwise_channels_last and ow <= _NHWC_MAX_OW:   # small image, many channels: vectorise over C
                yt = depthwise_channels_last(self, np.ascontiguousarray(x_q.transpose(0, 2, 3, 1)), oh, ow)
                return np.ascontiguousarray(yt.transpose(0, 3, 1, 2))
            if mult == 1 and kh == kw == 3 and (dh, dw) == (1, 1) and not pk.has_wzp:
                _depthwise3x3_kernel(x_q, pk.taps, pk.tap_sum, np.int64(self.x_zp), sh, sw, ph, pw, saturate,
                                     np.float32(lo_s), np.float32(hi_s), vec, st.mode, st.bias_f, st.bias_q, st.mult32,
                                     st.mult64, np.float64(st.y_zp), np.float64(st.lo), st.hi, out)
                return out
            _depthwise_kernel(x_q, pk.taps, pk.tap_sum, pk.w_zp, np.int64(self.x_zp), kh, kw, sh, sw, ph, pw, dh, dw,
                              mult, np.float32(lo_s), np.float32(hi_s), vec, st.mode, st.bias_f, st.bias_q, st.mult32,
                              st.mult64, np.float64(st.y_zp), np.float64(st.lo), st.hi, out)
            return out
        og = c_out // self.groups
        out3 = np.empty((n, c_out, oh * ow), np.uint8)
        plan = self.plan
        if plan.isa != ISA_NONE:
            conv_simd(plan, pk.packs[0], x_q, (kh, kw), (sh, sw), (ph, pw), (dh, dw), ow, self.x_zp, self.col_adj[0],
                      st, out3, self._lanes)
            return out3.reshape(n, c_out, oh, ow)
        pointwise = kh == kw == 1 and (sh, sw, ph, pw) == (1, 1, 0, 0)
        for g in range(self.groups):
            xg = x_q if self.groups == 1 else x_q[:, g * cg:(g + 1) * cg]
            if pointwise:   # a 1×1 stride-1 conv is already a GEMM: columns are the pixels
                cols = np.ascontiguousarray(xg.transpose(1, 0, 2, 3).reshape(cg, n * h * w), dtype=np.float32)
            else:
                cols = im2col_t(xg, kh, kw, (sh, sw), (ph, pw), (dh, dw), pad_value=self.x_zp)
            wz = pk.packs[g].w_zp
            raw, m_sum = raw_product_cols(cols, pk.packs[g], self.arith.saturate_pairs, self.has_wzp[g])
            finish_requantize_cols(raw, m_sum, self.col_adj[g], wz, self.x_zp, self.group_stages[g],
                                   out3[:, g * og:(g + 1) * og, :])
        return out3.reshape(n, c_out, oh, ow)


def depthwise_channels_last(layer: QConv2d, xt, oh, ow):
    """A depthwise :class:`QConv2d` (``layer._depthwise_channels_last``) on channels-last codes: ``xt`` (N, H, W,
    C) uint8 → (N, OH, OW, C) uint8. The one place both layouts call a channels-last depthwise kernel: a 3×3
    kernel, dilation 1, stride 1 or 2 runs :class:`~minquant.kernels.depthwise.Depthwise3x3NHWC` (integer
    SIMD, built once per layer), any other geometry :func:`_depthwise_nhwc_kernel` (float32 lanes)."""
    pk, st = layer.packed, layer.stage
    kh, kw = pk.w_q.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    if (kh, kw) == (3, 3) and (dh, dw) == (1, 1) and sh == sw and sh in (1, 2):
        return layer._depthwise3x3()(xt)
    saturate, lo_s, hi_s = layer._pair_bounds()
    yt = np.empty((xt.shape[0], oh, ow, pk.w_q.shape[0]), np.uint8)
    consts, bq = layer._lanes
    _depthwise_nhwc_kernel(xt, pk.taps_t, pk.tap_sum, np.int64(layer.x_zp), kh, kw, sh, sw, ph, pw, dh, dw,
                           np.float32(lo_s), np.float32(hi_s), saturate, host_isa() != ISA_NONE, consts, bq, st.mode,
                           st.bias_f, st.bias_q, st.mult32, st.mult64, np.float64(st.y_zp), np.float64(st.lo), st.hi,
                           yt)
    return yt


def _slice_stage(st, g, og):
    """The output stage restricted to output channels of group g."""
    if og == st.bias_f.shape[0]:
        return st
    sl = slice(g * og, (g + 1) * og)
    return OutputStage(st.mode, np.ascontiguousarray(st.bias_f[sl]), np.ascontiguousarray(st.bias_q[sl]),
                       np.ascontiguousarray(st.mult32[:, sl]), np.ascontiguousarray(st.mult64[sl]), st.y_zp,
                       st.lo, np.ascontiguousarray(st.hi[sl]))


def qconv2d(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, y_scale, y_zp, *, stride=1, padding=0, dilation=1,
            groups=1, relu=False, clamp=None, clamp_hi=None, target="fbgemm"):
    """One-shot quantized conv2d; same contract and bit-identical result as :func:`qconv2d_reference`.

    Raw weights are packed on every call; the fast form is :class:`QConv2d` (build once, call many times).
    ``w_q`` may be a :class:`PackedConvWeight` (``pack_conv_weight(w_q, w_zp, groups)``) to reuse the
    packing."""
    return QConv2d(w_q, w_scale, w_zp, bias, x_scale, x_zp, y_scale, y_zp, stride=stride, padding=padding,
                   dilation=dilation, groups=groups, relu=relu, clamp=clamp, clamp_hi=clamp_hi,
                   target=target)(x_q)
