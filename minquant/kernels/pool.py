"""Quantized pooling on uint8 NCHW tensors: max, average, adaptive average (docs/quantization.md, step 10).

Max pooling commutes with the affine map (step 1 is increasing), so it runs on the codes and is exact in
every framework: ``y_q = max over the window of x_q`` (padding never wins; output qparams = input's).

Average pooling needs one rounding (step 7): with the window's valid codes x_k and its divisor D,

    y_q = clamp(z_y + round(s_x / s_y · Σ_k (x_k − z_x) / D))

PyTorch keeps the input's qparams (s_y = s_x, z_y = z_x) and rounds differently per engine and memory
layout (``target=``, ``channels_last=``), all measured bit-exact here (tests/test_kernels_ops.py):

``"fbgemm"``  (engines fbgemm / x86) two code paths, chosen by the *layout* of the torch tensor:
   - NCHW-contiguous (``channels_last=False``): ``acc = Σ(x − z_x)``, ``m = f32(s_x/s_y / D)`` (in double),
     ``clamp(rne(f32(f32(acc·m) + z_y)))`` — the zero point is added *before* rounding, so a mean of
     exactly k + ½ rounds to even *after* the shift by z_y.
   - channels-last (``channels_last=True``, and every NCHW tensor torch also calls channels-last
     contiguous: C == 1 or H == W == 1): ``m = f32(f32(s_x/s_y)/D)``, ``clamp(rne(f32(acc·m)) + z_y)``.
     The two disagree on ties: the same data gives different codes in the two layouts.
   ``D`` = window size clipped to the padded input (``count_include_pad``), or the valid count, or
   ``divisor_override``. ``ceil_mode`` windows may hang past the padding and shrink.
``"qnnpack"`` (engine qnnpack, no ``ceil_mode``; with ``ceil_mode`` torch falls back to the fbgemm paths):
   padding reads z_x (real 0) and the divisor is always KH·KW — ``count_include_pad=False`` and
   ``divisor_override`` are ignored by torch on this engine. ``scale = f32(s_x / f32(s_y·f32(KH·KW)))``,
   ``clamp(rne(f32(f32(acc)·scale)) + z_y)``. A 1×1 kernel, or s_x/s_y outside [2⁻⁸, 2⁸), is refused.
``"minquant"`` the formula above in float64, round half to even, any output qparams.

Adaptive average pooling (``qadaptive_avg_pool2d``) uses windows ``[⌊o·I/O⌋, ⌈(o+1)·I/O⌉)`` (torch
computes the bounds in float32) and:
   - fbgemm, NCHW: the *raw* codes are summed (no zero point) and ``rne(f32(f32(Σx)·f32(f32(1/kh)/kw)))``.
   - fbgemm, channels-last: ``acc = Σ(x − z_x)``, ``m = f32(f32(s_x/s_y)/(kh·kw))``,
     ``clamp(rne(f32(acc·f32(1/f32(1/m)))) + z_y)``.
   - qnnpack: when the output divides the input (and differs from it) it is the qnnpack average pool with
     kernel = stride = I/O; otherwise the fbgemm paths.
   - ``"onnxruntime"``: global pooling only (output 1×1), ONNX Runtime's ``com.microsoft
     .QLinearGlobalAveragePool``: ``clamp(rne(f32(f32(acc)·f32(s_x/f32(s_y·f32(H·W))))) + z_y)`` — the
     qnnpack formula; any output qparams.

Each public function has a readable ``*_reference`` (NumPy, one window at a time) and a Numba version
with the same result bit for bit.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..float_ops import pool_out_size
from ..graph import int_pair
from ..target import resolve_ops
from .checks import check_pool_qparams, check_whole

__all__ = ["qmax_pool2d", "qmax_pool2d_reference", "qavg_pool2d", "qavg_pool2d_reference",
           "qadaptive_avg_pool2d", "qadaptive_avg_pool2d_reference",
           "torch_uses_channels_last_path", "qavg_pool2d_onnxruntime",
           "qavg_pool2d_onnxruntime_reference", "qavg_pool2d_runner", "qadaptive_avg_pool2d_runner",
           "qavg_pool2d_onnxruntime_runner"]

_F32 = np.float32


# ---------------------------------------------------------------------------------------------------------
# geometry and argument checks
# ---------------------------------------------------------------------------------------------------------
def _check_pool_args(x_q, kernel_size, stride, padding, dilation):
    x_q = np.asarray(x_q)
    if x_q.dtype != np.uint8 or x_q.ndim != 4:
        raise ValueError(f"x_q must be a 4-D uint8 NCHW array, got {x_q.dtype} {x_q.shape}")
    k = int_pair(kernel_size, "kernel_size", minimum=1)
    s = k if stride is None or (np.ndim(stride) > 0 and len(stride) == 0) else int_pair(stride, "stride", minimum=1)
    p = int_pair(padding, "padding", minimum=0)
    d = int_pair(dilation, "dilation", minimum=1)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"padding {p} should be at most half of the kernel size {k} (as torch requires)")
    return x_q, k, s, p, d


def _check_qparams(scale, zp, what):
    return check_pool_qparams(scale, zp, what)


def _output_qparams(x_scale, x_zp, y_scale, y_zp, ar):
    """(s_x, z_x, s_y, z_y); torch emulations keep the input's qparams, as torch does."""
    xs, xz = _check_qparams(x_scale, x_zp, "input")
    ys, yz = _check_qparams(xs if y_scale is None else y_scale, xz if y_zp is None else y_zp, "output")
    if ar.name in ("fbgemm", "qnnpack") and (ys != xs or yz != xz):
        raise ValueError("torch's quantized average pooling keeps the input's scale and zero point; other "
                         "output qparams are supported with target='minquant' (or 'onnxruntime', global)")
    return xs, xz, ys, yz


def torch_uses_channels_last_path(shape, channels_last=False) -> bool:
    """True if torch's quantized (adaptive) average pool takes its channels-last kernel for a tensor of this
    NCHW ``shape``: the tensor is channels-last, or its NCHW-contiguous strides also satisfy
    ``is_contiguous(memory_format=channels_last)`` (dimensions of size 1 are skipped: C == 1, or H·W == 1)."""
    if channels_last:
        return True
    n, c, h, w = shape
    strides = {0: c * h * w, 1: h * w, 2: w, 3: 1}
    sizes = {0: n, 1: c, 2: h, 3: w}
    expected = 1
    for d in (1, 3, 2, 0):                      # channels-last order: C, W, H, N
        if sizes[d] != 1:
            if strides[d] != expected:
                return False
            expected *= sizes[d]
    return True


def _avg_windows(size, k, s, p, ceil_mode):
    """Per output index: (start, end) of the valid input rows and the window length clipped to the padded
    input (torch's pool_size factor)."""
    o = pool_out_size(size, k, s, p, 1, ceil_mode)
    start = np.empty(o, np.int64)
    end = np.empty(o, np.int64)
    padded = np.empty(o, np.int64)
    for i in range(o):
        a = i * s - p
        b = min(a + k, size + p)
        padded[i] = b - a
        start[i], end[i] = max(a, 0), min(b, size)
    return start, end, padded


def _adaptive_windows(size, out):
    """torch's adaptive bounds, computed in float32: [⌊f32(o·I)/O⌋, ⌈f32((o+1)·I)/O⌉)."""
    o = np.arange(out)
    start = np.floor((o * size).astype(_F32) / _F32(out)).astype(np.int64)
    end = np.ceil(((o + 1) * size).astype(_F32) / _F32(out)).astype(np.int64)
    return start, end


def _vector_channels(c, ar) -> int:
    """Channels handled by torch's SIMD loop in the channels-last average pool: whole float32 vectors of
    8 channels (256-bit build) or 16 (torch also builds this kernel for AVX-512:
    ``Arithmetic.vector_bits_avx512_kernels``). It only matters when output qparams differ from the input's,
    which torch's own op never has."""
    width = ar.vector_bits_avx512_kernels // 32
    return (c // width) * width if width else 0


# ---------------------------------------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------------------------------------
def qmax_pool2d_reference(x_q, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Readable max pooling on codes: uint8 NCHW → uint8 NCHW (same qparams). Padding is ignored (−∞)."""
    x_q, k, s, p, d = _check_pool_args(x_q, kernel_size, stride, padding, dilation)
    n, c, h, w = x_q.shape
    oh = pool_out_size(h, k[0], s[0], p[0], d[0], ceil_mode)
    ow = pool_out_size(w, k[1], s[1], p[1], d[1], ceil_mode)
    y = np.zeros((n, c, oh, ow), np.uint8)
    for i in range(oh):
        for j in range(ow):
            best = np.zeros((n, c), np.uint8)
            for a in range(k[0]):
                iy = i * s[0] - p[0] + a * d[0]
                for b in range(k[1]):
                    ix = j * s[1] - p[1] + b * d[1]
                    if 0 <= iy < h and 0 <= ix < w:
                        best = np.maximum(best, x_q[:, :, iy, ix])
            y[:, :, i, j] = best
    return y


@njit(cache=True)
def _max_pool_kernel(x, kh, kw, sh, sw, ph, pw, dh, dw, out):
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    best = np.uint8(0)
                    for a in range(kh):
                        iy = i * sh - ph + a * dh
                        if iy < 0 or iy >= h:
                            continue
                        for e in range(kw):
                            ix = j * sw - pw + e * dw
                            if 0 <= ix < w and x[b, ch, iy, ix] > best:
                                best = x[b, ch, iy, ix]
                    out[b, ch, i, j] = best


@njit(cache=True)
def _max_pool_nhwc_kernel(x, kh, kw, sh, sw, ph, pw, dh, dw, out):
    """:func:`_max_pool_kernel` on channels-last codes: x (N, H, W, C) → out (N, OH, OW, C), every window
    reduced along the (contiguous) channels."""
    n, h, w, c = x.shape
    oh, ow = out.shape[1], out.shape[2]
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                best = out[b, i, j]
                best[:] = 0
                for a in range(kh):
                    iy = i * sh - ph + a * dh
                    if iy < 0 or iy >= h:
                        continue
                    for e in range(kw):
                        ix = j * sw - pw + e * dw
                        if 0 <= ix < w:
                            row = x[b, iy, ix]
                            for ch in range(c):
                                if row[ch] > best[ch]:
                                    best[ch] = row[ch]


def qmax_pool2d(x_q, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, channels_last=False):
    """Fast :func:`qmax_pool2d_reference` (Numba; identical result). torch's ``quantized.max_pool2d``
    agrees on both engines, except qnnpack with dilation > 1 *and* padding > 0, where torch's qnnpack
    kernel reads other pixels than the definition (measured; see tests). ``channels_last=True``: ``x_q`` is
    (N, H, W, C) and so is the result (the same maxima: the channels-last execution plan,
    :mod:`minquant.quantized.layout`)."""
    x_q = np.asarray(x_q)
    if channels_last and (x_q.dtype != np.uint8 or x_q.ndim != 4):
        raise ValueError(f"x_q must be a 4-D uint8 NHWC array, got {x_q.dtype} {x_q.shape}")
    x_nchw = x_q.transpose(0, 3, 1, 2) if channels_last else x_q     # (a view: checks and sizes only)
    x_nchw, k, s, p, d = _check_pool_args(x_nchw, kernel_size, stride, padding, dilation)
    n, c, h, w = x_nchw.shape
    oh = pool_out_size(h, k[0], s[0], p[0], d[0], ceil_mode)
    ow = pool_out_size(w, k[1], s[1], p[1], d[1], ceil_mode)
    if channels_last:
        out = np.empty((n, oh, ow, c), np.uint8)
        _max_pool_nhwc_kernel(np.ascontiguousarray(x_q), k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1], out)
        return out
    out = np.empty((n, c, oh, ow), np.uint8)
    _max_pool_kernel(np.ascontiguousarray(x_nchw), k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1], out)
    return out


# ---------------------------------------------------------------------------------------------------------
# average pooling: one shared rounding stage per mode
# ---------------------------------------------------------------------------------------------------------
_NCHW, _NHWC, _QNN, _F64, _RAWSUM = 0, 1, 2, 3, 4


def _avg_plan(x_shape, k, s, p, ceil_mode, count_include_pad, divisor_override, xs, xz, ys, ar,
              channels_last):
    """Which rounding (mode) and, per output position, the multiplier(s). Returns
    (mode, rows, cols, mult (OH, OW) float32, mult_tail (OH, OW) float32, mult64 (OH, OW), vec_channels)."""
    n, c, h, w = x_shape
    use_qnn = ar.name == "qnnpack" and not ceil_mode
    if use_qnn:
        if k[0] * k[1] == 1:
            raise ValueError("qnnpack refuses a 1x1 average pool ('1x1 pooling is meaningless')")
        if not 2.0 ** -8 <= _F32(_F32(xs) / _F32(ys)) < 2.0 ** 8:
            raise ValueError("qnnpack average pool needs s_x/s_y in [2^-8, 2^8)")
        count_include_pad, divisor_override = True, None       # ignored by torch's qnnpack path
    rows = _avg_windows(h, k[0], s[0], p[0], ceil_mode)
    cols = _avg_windows(w, k[1], s[1], p[1], ceil_mode)
    oh, ow = rows[0].size, cols[0].size
    size = (rows[1] - rows[0])[:, None] * (cols[1] - cols[0])[None, :]
    padded = rows[2][:, None] * cols[2][None, :]
    if divisor_override is not None:
        if int(divisor_override) == 0:
            raise ValueError("divisor_override must be non-zero")
        div = np.full((oh, ow), int(divisor_override), np.int64)
    else:
        div = padded if count_include_pad else size
    mult = np.zeros((oh, ow), _F32)
    mult_tail = np.zeros((oh, ow), _F32)
    mult64 = np.zeros((oh, ow), np.float64)
    vec_c = 0
    if use_qnn:
        mode = _QNN
        kk = _F32(k[0] * k[1])
        mult[:] = _F32(_F32(xs) / _F32(_F32(ys) * kk))
    elif ar.name == "minquant":
        mode = _F64
        mult64[:] = xs / (ys * div.astype(np.float64))
    elif torch_uses_channels_last_path(x_shape, channels_last):
        mode = _NHWC
        mult[:] = (_F32(_F32(xs) / _F32(ys)) / div.astype(_F32)).astype(_F32)
        mult_tail[:] = (_F32(1) / (_F32(1) / mult).astype(_F32)).astype(_F32)   # scalar channels: 1/(1/m)
        vec_c = _vector_channels(c, ar)
    else:
        mode = _NCHW
        mult[:] = ((xs / ys) / div.astype(np.float64)).astype(_F32)
    return mode, rows, cols, mult, mult_tail, mult64, vec_c


def _round_reference(mode, acc, raw, ch, mult, mult_tail, mult64, vec_c, yz):
    """acc = Σ(x − z_x) (or raw = Σx for mode _RAWSUM) over one window, all (N, C) → uint8 codes."""
    if mode == _NCHW:
        t = np.rint(((acc.astype(_F32) * mult).astype(_F32) + _F32(yz)).astype(_F32))
    elif mode == _NHWC:
        m = np.where(ch < vec_c, mult, mult_tail).astype(_F32)
        t = np.rint((acc.astype(_F32) * m).astype(_F32)) + yz
    elif mode == _QNN:
        t = np.rint((acc.astype(_F32) * mult).astype(_F32)) + yz
    elif mode == _RAWSUM:
        t = np.rint((raw.astype(_F32) * mult).astype(_F32))
    else:
        t = np.rint(acc * mult64) + yz
    return np.clip(t, 0, 255).astype(np.uint8)


def _avg_setup(x_q, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, x_scale,
               x_zp, y_scale, y_zp, target, channels_last):
    """Argument checks and the pooling plan shared by :func:`qavg_pool2d_reference` and :func:`qavg_pool2d`."""
    x_q, k, s, p, _ = _check_pool_args(x_q, kernel_size, stride, padding, 1)
    if divisor_override is not None:
        check_whole(divisor_override, "divisor_override", 1)
    ar = resolve_ops(target)
    if ar.name == "onnxruntime":
        raise ValueError("target='onnxruntime' is reproduced for global average pooling only "
                         "(qadaptive_avg_pool2d with output_size 1)")
    xs, xz, ys, yz = _output_qparams(x_scale, x_zp, y_scale, y_zp, ar)
    plan = _avg_plan(x_q.shape, k, s, p, ceil_mode, count_include_pad, divisor_override, xs, xz, ys, ar,
                     channels_last)
    return x_q, xz, yz, plan


def qavg_pool2d_reference(x_q, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                          divisor_override=None, *, x_scale, x_zp, y_scale=None, y_zp=None, target="fbgemm",
                          channels_last=False):
    """Readable quantized average pooling: uint8 NCHW → uint8 NCHW (module docstring).

    x_scale, x_zp: the input's per-tensor qparams. y_scale, y_zp: output qparams (default: the input's;
    others only with target='minquant'). channels_last: the torch tensor being emulated is channels-last
    (selects torch's NHWC kernel, target='fbgemm'/'qnnpack' with ceil_mode)."""
    x_q, xz, yz, (mode, rows, cols, mult, mult_tail, mult64, vec_c) = _avg_setup(
        x_q, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, x_scale, x_zp,
        y_scale, y_zp, target, channels_last)
    n, c = x_q.shape[:2]
    ch = np.arange(c)[None, :]
    y = np.empty((n, c, rows[0].size, cols[0].size), np.uint8)
    for i in range(rows[0].size):
        for j in range(cols[0].size):
            win = x_q[:, :, rows[0][i]:rows[1][i], cols[0][j]:cols[1][j]].astype(np.int64)
            acc = win.sum(axis=(2, 3)) - xz * win[0, 0].size     # Σ(x − z_x) over the valid inputs
            y[:, :, i, j] = _round_reference(mode, acc, None, ch, mult[i, j], mult_tail[i, j], mult64[i, j],
                                             vec_c, yz)
    return y


@njit(cache=True)
def _avg_code(mode, acc, raw, m, m64, yz):
    """One output code of a window: acc = Σ(x − z_x), raw = Σx, ``m`` the window's float32 multiplier (for mode
    _NHWC already the channel's: vector or tail), ``m64`` its float64 one — the mode's rounding of
    :func:`_round_reference`, clamped to [0, 255]."""
    if mode == 0:
        t = np.rint(np.float32(np.float32(np.float32(acc) * m) + np.float32(yz)))
    elif mode == 1 or mode == 2:
        t = np.rint(np.float32(np.float32(acc) * m)) + yz
    elif mode == 4:
        t = np.rint(np.float32(np.float32(raw) * m))
    else:
        t = np.rint(acc * m64) + yz
    if t < 0:
        t = 0
    elif t > 255:
        t = 255
    return np.uint8(t)


@njit(cache=True)
def _avg_pool_kernel(x, r0, r1, c0, c1, mode, mult, mult_tail, mult64, vec_c, xz, yz, out):
    """Window sums and the mode's rounding (:func:`_avg_code`) for every (n, c, i, j)."""
    n, c = x.shape[0], x.shape[1]
    for b in range(n):
        for ch in range(c):
            for i in range(r0.size):
                for j in range(c0.size):
                    raw = np.int64(0)
                    for iy in range(r0[i], r1[i]):
                        for ix in range(c0[j], c1[j]):
                            raw += x[b, ch, iy, ix]
                    acc = raw - xz * (r1[i] - r0[i]) * (c1[j] - c0[j])
                    m = mult[i, j] if mode != 1 or ch < vec_c else mult_tail[i, j]
                    out[b, ch, i, j] = _avg_code(mode, acc, raw, m, mult64[i, j], yz)


@njit(cache=True)
def _avg_pool_nhwc_kernel(x, r0, r1, c0, c1, mode, mult, mult_tail, mult64, vec_c, xz, yz, out):
    """:func:`_avg_pool_kernel` on channels-last codes: x (N, H, W, C) → out (N, OH, OW, C); each window's pixel
    rows added channel by channel into one row of sums (the integer sums do not depend on the order), then the
    same :func:`_avg_code` per channel."""
    n, c = x.shape[0], x.shape[3]
    raw = np.empty(c, np.int64)
    for b in range(n):
        for i in range(r0.size):
            for j in range(c0.size):
                raw[:] = 0
                for iy in range(r0[i], r1[i]):
                    for ix in range(c0[j], c1[j]):
                        row = x[b, iy, ix]
                        for ch in range(c):
                            raw[ch] += row[ch]
                zsum = xz * (r1[i] - r0[i]) * (c1[j] - c0[j])
                o = out[b, i, j]
                for ch in range(c):
                    m = mult[i, j] if mode != 1 or ch < vec_c else mult_tail[i, j]
                    o[ch] = _avg_code(mode, raw[ch] - zsum, raw[ch], m, mult64[i, j], yz)


def _avg_runner(x_shape, rows, cols, mode, mult, mult_tail, mult64, vec_c, xz, yz, codes_nhwc=False):
    """``run(x_q)``: the pooling plan on the Numba kernel for codes of NCHW shape ``x_shape`` — given NCHW, or
    (``codes_nhwc``) the same codes (N, H, W, C), the result then (N, OH, OW, C). Everything that does not
    depend on the codes is made here, once; ``run`` trusts its input to be uint8 codes of that shape."""
    args = (np.asarray(rows[0], np.int64), np.asarray(rows[1], np.int64), np.asarray(cols[0], np.int64),
            np.asarray(cols[1], np.int64), mode, np.ascontiguousarray(mult, _F32),
            np.ascontiguousarray(mult_tail, _F32), np.ascontiguousarray(mult64, np.float64), np.int64(vec_c),
            np.int64(xz), np.int64(yz))
    n, c = x_shape[0], x_shape[1]
    oh, ow = args[0].size, args[2].size
    kernel = _avg_pool_nhwc_kernel if codes_nhwc else _avg_pool_kernel
    shape = (n, oh, ow, c) if codes_nhwc else (n, c, oh, ow)

    def run(x_q):
        out = np.empty(shape, np.uint8)
        kernel(np.ascontiguousarray(x_q), *args, out)
        return out
    return run


def _nchw_view(x_q, codes_nhwc):
    """The NCHW view of channels-last codes (checks, sizes and plans read NCHW shapes; nothing is copied)."""
    x_q = np.asarray(x_q)
    if not codes_nhwc:
        return x_q
    if x_q.ndim != 4:
        raise ValueError(f"x_q must be a 4-D uint8 NHWC array, got {x_q.dtype} {x_q.shape}")
    return x_q.transpose(0, 3, 1, 2)


def qavg_pool2d(x_q, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None, *, x_scale, x_zp, y_scale=None, y_zp=None, target="fbgemm",
                channels_last=False, codes_nhwc=False):
    """Fast :func:`qavg_pool2d_reference` (Numba; bit-identical). Same arguments, and ``codes_nhwc=True``:
    ``x_q`` is given (N, H, W, C) and the result is (N, OH, OW, C) — the same codes, transposed (the
    channels-last execution plan, :mod:`minquant.quantized.layout`; ``channels_last`` still names the layout
    of the torch tensor whose rounding is reproduced)."""
    return qavg_pool2d_runner(x_q, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                              x_scale=x_scale, x_zp=x_zp, y_scale=y_scale, y_zp=y_zp, target=target,
                              channels_last=channels_last, codes_nhwc=codes_nhwc)(x_q)


def qavg_pool2d_runner(x_q, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                       divisor_override=None, *, x_scale, x_zp, y_scale=None, y_zp=None, target="fbgemm",
                       channels_last=False, codes_nhwc=False):
    """:func:`qavg_pool2d` in two steps: the arguments checked and the plan made for ``x_q``'s shape, once;
    the returned ``run(codes)`` pools any uint8 codes of that shape and layout (what a prepared model calls
    on every input)."""
    x_nchw, xz, yz, (mode, rows, cols, mult, mult_tail, mult64, vec_c) = _avg_setup(
        _nchw_view(x_q, codes_nhwc), kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
        x_scale, x_zp, y_scale, y_zp, target, channels_last)
    return _avg_runner(x_nchw.shape, rows, cols, mode, mult, mult_tail, mult64, vec_c, xz, yz, codes_nhwc)


# ---------------------------------------------------------------------------------------------------------
# adaptive average pooling
# ---------------------------------------------------------------------------------------------------------
def _adaptive_plan(x_q, output_size, x_scale, x_zp, y_scale, y_zp, target, channels_last):
    x_q = np.asarray(x_q)
    if x_q.dtype != np.uint8 or x_q.ndim != 4:
        raise ValueError(f"x_q must be a 4-D uint8 NCHW array, got {x_q.dtype} {x_q.shape}")
    n, c, h, w = x_q.shape
    oh, ow = int_pair(output_size, "output_size", minimum=1)
    if not (1 <= oh and 1 <= ow) or min(h, w) < 1:
        raise ValueError(f"output_size {(oh, ow)} and input size {(h, w)} must be >= 1")
    ar = resolve_ops(target)
    if ar.name == "onnxruntime":
        if (oh, ow) != (1, 1):
            raise ValueError("target='onnxruntime' reproduces QLinearGlobalAveragePool: output_size must be 1")
        xs, xz = _check_qparams(x_scale, x_zp, "input")
        ys, yz = _check_qparams(xs if y_scale is None else y_scale, xz if y_zp is None else y_zp, "output")
        if h * w >= 1 << 24:
            raise ValueError("QLinearGlobalAveragePool needs fewer than 2^24 pixels")
        plan = (_QNN, np.full((1, 1), _F32(_F32(xs) / _F32(_F32(ys) * _F32(h * w))), _F32))
        return x_q, (np.array([0]), np.array([h])), (np.array([0]), np.array([w])), plan, xz, yz, 0
    xs, xz, ys, yz = _output_qparams(x_scale, x_zp, y_scale, y_zp, ar)
    if ar.name == "qnnpack" and (h, w) != (oh, ow) and h % oh == 0 and w % ow == 0:
        kh, kw = h // oh, w // ow                      # torch hands this case to qnnpack's average pool
        mode, rows, cols, mult, mult_tail, mult64, vec_c = _avg_plan(
            x_q.shape, (kh, kw), (kh, kw), (0, 0), False, True, None, xs, xz, ys, ar, channels_last)
        return x_q, rows[:2], cols[:2], (mode, mult), xz, yz, vec_c
    rows, cols = _adaptive_windows(h, oh), _adaptive_windows(w, ow)
    kh = (rows[1] - rows[0]).astype(np.float64)
    kw = (cols[1] - cols[0]).astype(np.float64)
    if ar.name == "minquant":
        mult64 = xs / (ys * kh[:, None] * kw[None, :])
        return x_q, rows, cols, (_F64, mult64), xz, yz, 0
    if torch_uses_channels_last_path(x_q.shape, channels_last):
        m = (_F32(_F32(xs) / _F32(ys)) / (kh[:, None] * kw[None, :]).astype(_F32)).astype(_F32)
        inv = (_F32(1) / (_F32(1) / m).astype(_F32)).astype(_F32)   # quantize_val(1/m): multiplies by 1/(1/m)
        return x_q, rows, cols, (_NHWC, inv), xz, yz, c               # every channel uses the same factor
    # NCHW: raw codes summed, scaled by f32(f32(1/kh)/kw); the output keeps the input's zero point
    r = ((_F32(1) / kh.astype(_F32)).astype(_F32)[:, None] / kw.astype(_F32)[None, :]).astype(_F32)
    return x_q, rows, cols, (_RAWSUM, r), xz, yz, 0


def qadaptive_avg_pool2d_reference(x_q, output_size, *, x_scale, x_zp, y_scale=None, y_zp=None,
                                   target="fbgemm", channels_last=False):
    """Readable adaptive average pooling: uint8 NCHW → uint8 (N, C, OH, OW) (module docstring).
    ``output_size`` int or pair. target='onnxruntime' needs output_size 1 (global pooling)."""
    x_q, rows, cols, (mode, mult), xz, yz, vec_c = _adaptive_plan(x_q, output_size, x_scale, x_zp, y_scale,
                                                                   y_zp, target, channels_last)
    n, c = x_q.shape[:2]
    ch = np.arange(c)[None, :]
    y = np.empty((n, c, rows[0].size, cols[0].size), np.uint8)
    for i in range(rows[0].size):
        for j in range(cols[0].size):
            win = x_q[:, :, rows[0][i]:rows[1][i], cols[0][j]:cols[1][j]].astype(np.int64)
            raw = win.sum(axis=(2, 3))
            acc = raw - xz * win[0, 0].size
            m = mult[i, j]
            y[:, :, i, j] = _round_reference(mode, acc, raw, ch, m, m, m, vec_c, yz)
    return y


def qadaptive_avg_pool2d(x_q, output_size, *, x_scale, x_zp, y_scale=None, y_zp=None, target="fbgemm",
                         channels_last=False, codes_nhwc=False):
    """Fast :func:`qadaptive_avg_pool2d_reference` (Numba; bit-identical). Same arguments, and ``codes_nhwc``
    as in :func:`qavg_pool2d` (a global pool of channels-last codes: (N, H, W, C) → (N, 1, 1, C))."""
    return qadaptive_avg_pool2d_runner(x_q, output_size, x_scale=x_scale, x_zp=x_zp, y_scale=y_scale, y_zp=y_zp,
                                       target=target, channels_last=channels_last, codes_nhwc=codes_nhwc)(x_q)


def qadaptive_avg_pool2d_runner(x_q, output_size, *, x_scale, x_zp, y_scale=None, y_zp=None, target="fbgemm",
                                channels_last=False, codes_nhwc=False):
    """:func:`qadaptive_avg_pool2d` in two steps, as :func:`qavg_pool2d_runner`."""
    x_nchw, rows, cols, (mode, mult), xz, yz, vec_c = _adaptive_plan(_nchw_view(x_q, codes_nhwc), output_size,
                                                                      x_scale, x_zp, y_scale, y_zp, target,
                                                                      channels_last)
    mult = np.asarray(mult)
    m32 = mult.astype(_F32)
    return _avg_runner(x_nchw.shape, rows, cols, mode, m32, m32, mult.astype(np.float64), vec_c, xz, yz, codes_nhwc)


# ---------------------------------------------------------------------------------------------------------
# ONNX Runtime's QLinearAveragePool
# ---------------------------------------------------------------------------------------------------------
def _ort_avg_pool_args(x_q, kernel_size, stride, padding, x_scale, x_zp, y_scale, y_zp):
    """Checked arguments of ORT's average pool: (x_q, k, s, p, (s_x, z_x, s_y, z_y), whole), output qparams
    defaulting to the input's; ``whole``: one window covers the unpadded image (ORT's global pool then)."""
    x_q, k, s, p, _ = _check_pool_args(x_q, kernel_size, stride, padding, 1)
    xs, xz = _check_qparams(x_scale, x_zp, "input")
    ys, yz = _check_qparams(xs if y_scale is None else y_scale, xz if y_zp is None else y_zp, "output")
    return x_q, k, s, p, (xs, xz, ys, yz), (k == tuple(x_q.shape[2:]) and p == (0, 0))


def qavg_pool2d_onnxruntime_reference(x_q, kernel_size, stride=None, padding=0, count_include_pad=False, *, x_scale, x_zp,
                            y_scale=None, y_zp=None):
    """ONNX Runtime's ``com.microsoft.QLinearAveragePool`` (CPU, NCHW, 2-D, no ceil_mode), bit for bit.

    Unlike the torch kernels it works in float32 (contrib_ops/cpu/quantization/qlinear_pool.cc):

    1. dequantize every code, ``r = f32(s_x · (x − z_x))`` (step 1);
    2. per window, add the valid inputs in row-major order to a float32 sum starting at 0 (padding is
       skipped), then divide by the count — the whole kernel with ``count_include_pad``, else the valid
       inputs — in float32;
    3. ``clamp(rne(f32(f32(y / s_y) + z_y)))``: the zero point is added *before* rounding (step 7 would add it
       after), so a mean landing on k + ½ rounds to even *after* the shift.

    A window covering the whole image without padding is handed to the global average pool
    (:func:`qadaptive_avg_pool2d` with ``target='onnxruntime'``), as ORT does. Output qparams default to the
    input's. :func:`qavg_pool2d_onnxruntime` is the Numba version (bit-identical)."""
    x_q, k, s, p, (xs, xz, ys, yz), whole = _ort_avg_pool_args(x_q, kernel_size, stride, padding, x_scale, x_zp,
                                                              y_scale, y_zp)
    if whole:
        return qadaptive_avg_pool2d(x_q, 1, x_scale=xs, x_zp=xz, y_scale=ys, y_zp=yz, target="onnxruntime")
    n, c, h, w = x_q.shape
    oh, ow = pool_out_size(h, k[0], s[0], p[0]), pool_out_size(w, k[1], s[1], p[1])
    real = ((x_q.astype(np.int32) - xz).astype(_F32) * _F32(xs)).astype(_F32)
    padded = np.zeros((n, c, h + 2 * p[0], w + 2 * p[1]), _F32)
    padded[:, :, p[0]:p[0] + h, p[1]:p[1] + w] = real       # padding adds +0.0: the sum is unchanged
    acc = np.zeros((n, c, oh, ow), _F32)
    for i in range(k[0]):                                    # row-major over the window, as ORT's loop
        for j in range(k[1]):
            acc += padded[:, :, i:i + s[0] * oh:s[0], j:j + s[1] * ow:s[1]]
    if count_include_pad:
        count = np.full((oh, ow), k[0] * k[1], np.int64)
    else:
        r0 = np.arange(oh) * s[0] - p[0]
        c0 = np.arange(ow) * s[1] - p[1]
        rows = np.minimum(r0 + k[0], h) - np.maximum(r0, 0)
        cols = np.minimum(c0 + k[1], w) - np.maximum(c0, 0)
        count = rows[:, None] * cols[None, :]
    mean = (acc / count.astype(_F32)).astype(_F32)
    t = np.rint(((mean / _F32(ys)).astype(_F32) + _F32(yz)).astype(_F32))
    return np.clip(t, 0, 255).astype(np.uint8)


@njit(cache=True)
def _avg_pool_ort_kernel(x_q, kh, kw, sh, sw, ph, pw, count_include_pad, xs, xz, ys, yz, out):
    """ORT's float32 average pool on channels-last codes x_q (N, H, W, C) → out (N, OH, OW, C), per output code:
    the valid inputs of the window dequantized and added in row-major order from +0, divided by the count,
    shifted by z_y, rounded half to even, clamped. Each channel has its own float32 sum (one lane each: the
    order of its additions is ORT's). NCHW codes run as (N·C, H, W, 1)."""
    n, h, w, c = x_q.shape
    oh, ow = out.shape[1], out.shape[2]
    acc = np.empty(c, np.float32)
    for b in range(n):
        for i in range(oh):
            r0 = i * sh - ph
            for j in range(ow):
                c0 = j * sw - pw
                acc[:] = 0
                cnt = 0
                for di in range(kh):
                    r = r0 + di
                    if r < 0 or r >= h:
                        continue
                    for dj in range(kw):
                        col = c0 + dj
                        if col < 0 or col >= w:
                            continue
                        row = x_q[b, r, col]
                        for ch in range(c):
                            acc[ch] = np.float32(acc[ch] + np.float32(np.float32(np.int32(row[ch]) - xz) * xs))
                        cnt += 1
                if count_include_pad:
                    cnt = kh * kw
                o = out[b, i, j]
                fcnt, lo, hi = np.float32(cnt), np.float32(0), np.float32(255)
                for ch in range(c):     # (float32 → int32 → uint8: the form LLVM vectorizes)
                    t = np.rint(np.float32(np.float32(np.float32(acc[ch] / fcnt) / ys) + yz))
                    o[ch] = np.uint8(np.int32(min(max(t, lo), hi)))


def qavg_pool2d_onnxruntime(x_q, kernel_size, stride=None, padding=0, count_include_pad=False, *, x_scale, x_zp,
                            y_scale=None, y_zp=None, codes_nhwc=False):
    """Fast :func:`qavg_pool2d_onnxruntime_reference` (Numba; bit-identical). Same arguments, and ``codes_nhwc``
    as in :func:`qavg_pool2d` (channels-last codes in and out)."""
    return qavg_pool2d_onnxruntime_runner(x_q, kernel_size, stride, padding, count_include_pad, x_scale=x_scale,
                                          x_zp=x_zp, y_scale=y_scale, y_zp=y_zp, codes_nhwc=codes_nhwc)(x_q)


def qavg_pool2d_onnxruntime_runner(x_q, kernel_size, stride=None, padding=0, count_include_pad=False, *, x_scale,
                                   x_zp, y_scale=None, y_zp=None, codes_nhwc=False):
    """:func:`qavg_pool2d_onnxruntime` in two steps, as :func:`qavg_pool2d_runner`."""
    x_nchw, k, s, p, (xs, xz, ys, yz), whole = _ort_avg_pool_args(_nchw_view(x_q, codes_nhwc), kernel_size, stride,
                                                                 padding, x_scale, x_zp, y_scale, y_zp)
    if whole:
        return qadaptive_avg_pool2d_runner(x_q, 1, x_scale=xs, x_zp=xz, y_scale=ys, y_zp=yz, target="onnxruntime",
                                           codes_nhwc=codes_nhwc)
    n, c, h, w = x_nchw.shape
    oh, ow = pool_out_size(h, k[0], s[0], p[0]), pool_out_size(w, k[1], s[1], p[1])
    args = (k[0], k[1], s[0], s[1], p[0], p[1], bool(count_include_pad), _F32(xs), np.int32(xz), _F32(ys), _F32(yz))
    if codes_nhwc:
        def run(x):
            out = np.empty((n, oh, ow, c), np.uint8)
            _avg_pool_ort_kernel(np.ascontiguousarray(x), *args, out)
            return out
    else:     # each NCHW plane is an image of one channel
        def run(x):
            out = np.empty((n, c, oh, ow), np.uint8)
            _avg_pool_ort_kernel(np.ascontiguousarray(x).reshape(n * c, h, w, 1), *args, out.reshape(n * c, oh, ow, 1))
            return out
    return run
