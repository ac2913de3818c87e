"""Dynamic quantized linear: float32 in, int8 weights, float32 out (docs/quantization.md, step 10, built on
steps 3, 4, 8 and the bias of step 5).

Only the weights are quantized ahead of time. At run time each call

1. measures the activation range [min x, max x] and picks per-tensor uint8 qparams (s_x, z_x) with
   :func:`minquant.affine.choose_qparams` — no calibration data needed;
2. quantizes x with :func:`minquant.affine.quantize` (step 3);
3. runs the integer GEMM ``acc = Σ_k (x_q − z_x)(w_q − z_w)`` (:func:`~minquant.kernels.gemm.gemm_u8s8`,
   step 4, with int16 pair saturation where the framework has it, step 8);
4. dequantizes the accumulator straight to float and adds the float bias: ``y ≈ s_x·s_w·acc + b``.
   There is no output quantization, so there are no output qparams.

How each framework evaluates it (``target=``; each measured at 0 mismatching elements):

``"fbgemm"``      ``torch.ops.quantized.linear_dynamic`` on engines fbgemm / x86. qparams: rule 'fbgemm'
                  (float64, ``reduce_range`` → codes [0, 127], the default, so that u8×s8 pairs cannot
                  overflow int16), quantize rule 'torch'; pairs saturate unless the CPU has VNNI;
                  ``y = fma(f32(acc), f32(f32(s_x)·s_w), b)`` — one rounding (fbgemm's
                  ``ReQuantizeForFloat``; s_x is computed in double but stored as float32 first).
``"qnnpack"``     the same op on engine qnnpack: ``reduce_range`` is *ignored* (torch warns: codes [0, 255]),
                  exact int32 accumulation, ``y = f32(f32(f32(acc)·f32(s_w·s_x)) + b)`` — multiply, then add.
``"onnxruntime"`` ONNX Runtime's ``DynamicQuantizeLinear → MatMulInteger → Cast → Mul(s_x·s_w) → Add(b)``
                  (the graph its dynamic quantizer writes for MatMul): qparams in float32 — rule 'torch'
                  gives the same (s_x, z_x) except for an all-constant input, whose output is the bias
                  either way — quantize by division (rule 'onnxruntime'), MLAS u8×s8 GEMM (pairs saturate
                  on AVX2 without VNNI, measured), then ``f32(f32(acc)·f32(s_x·s_w)) + b``.
``"minquant"``    textbook: qparams rule 'onnxruntime' (float64) honouring ``reduce_range``, quantize by
                  division, exact int32 accumulation, ``y = f32(acc·s_x·s_w + b)`` in float64.

``dynamic_linear_reference`` is the NumPy spec; ``dynamic_linear`` the fast version (BLAS-exact GEMM +
Numba output stage), bit-identical.

**Dynamic conv2d** (``dynamic_conv2d_reference`` / ``dynamic_conv2d``): the same four steps on the im2col
matrix of the quantized input (padding reads z_x, i.e. real 0), one GEMM per group, rows in (kh, kw, c)
order. ONNX Runtime's counterpart is what its ``quantize_dynamic`` writes for a Conv:
``DynamicQuantizeLinear → ConvInteger → Cast → Mul(s_x·s_w) → Add(b)``; minquant takes ``ConvInteger``'s
int32 accumulation as exact on every CPU (tests/test_kernels_ops.py compares with ORT live, bit for bit;
measured so far on AVX512-VNNI hosts only, where MLAS's GEMMs are exact anyway). **PyTorch has no dynamic conv** (its ``quantize_dynamic`` leaves
Conv2d float): under 'fbgemm' / 'qnnpack' the result is what torch's dynamic linear arithmetic would give on
the im2col matrix (qparams, quantize rule, pair saturation, output stage) — a consistent emulation, with
no framework to check it against.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from dataclasses import dataclass

from ..affine import choose_qparams, quantize
from ..float_ops import conv2d as _float_conv2d
from ..im2col import conv_out_size, im2col, im2col_reference, im2col_t
from ..target import resolve_linear
from .checks import check_dynamic_args, check_geometry, check_groups, check_weight_zp
from .conv import tap_pair_max
from .gemm import PackedWeight, gemm_u8s8, gemm_u8s8_reference, pack_weight, raw_product_cols
from .requantize import _fma32, fma_f32_reference

__all__ = ["dynamic_linear", "dynamic_linear_reference", "dynamic_input_qparams", "dynamic_conv2d",
           "dynamic_conv2d_reference", "PackedDynamicConvWeight", "pack_dynamic_conv_weight"]

_F32 = np.float32


def _saturates(ar) -> bool:
    """u8×s8 pair saturation in this emulation's GEMM (step 8): the :class:`Arithmetic`'s own flag —
    MatMulInteger runs the same MLAS kernel as QLinearMatMul (measured: saturates on AVX2 without VNNI)."""
    return ar.saturate_pairs


def dynamic_input_qparams(x, *, reduce_range=True, target="fbgemm"):
    """The run-time activation qparams (s_x, z_x) each emulation picks for float input ``x`` (module
    docstring): uint8 codes, [0, 127] with ``reduce_range`` where the emulation honours it."""
    ar = resolve_linear(target)
    x = np.asarray(x)
    if x.size == 0:
        raise ValueError("dynamic_linear needs a non-empty input")
    lo, hi = np.float32(x.min()), np.float32(x.max())   # NaN/Inf are rejected by choose_qparams
    if ar.name == "fbgemm":
        s, z = choose_qparams(lo, hi, "uint8", reduce_range=reduce_range, rule="fbgemm")
    elif ar.name == "qnnpack":
        s, z = choose_qparams(lo, hi, "uint8", reduce_range=False, rule="fbgemm")
    elif ar.name == "onnxruntime":
        s, z = choose_qparams(lo, hi, "uint8", reduce_range=False, rule="torch")
    else:
        s, z = choose_qparams(lo, hi, "uint8", reduce_range=reduce_range, rule="onnxruntime")
    return float(s), int(z)


def _check(x, w_shape, bias):
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise ValueError(f"x must be float32, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[-1] != w_shape[1]:
        raise ValueError(f"shape mismatch: x has {x.shape[-1] if x.ndim else 0} features, weights expect "
                         f"{w_shape[1]}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or Inf; dynamic quantization needs finite input")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (w_shape[0],) or bias.dtype.kind != "f":
            raise ValueError(f"bias must be float of shape ({w_shape[0]},), got {bias.dtype} {bias.shape}")
        bias = bias.astype(_F32)
    return x, bias


def _check_w(w_q):
    w_q = np.asarray(w_q)
    if w_q.dtype != np.int8 or w_q.ndim != 2:
        raise ValueError(f"w_q must be a 2-D int8 array (out, in), got {w_q.dtype} {w_q.shape}")
    return w_q


def _weight_scale(w_scale, n):
    ws = np.asarray(w_scale, dtype=np.float64)
    if ws.ndim not in (0, 1) or (ws.ndim == 1 and ws.shape != (n,)):
        raise ValueError(f"w_scale must be a scalar or ({n},), got shape {ws.shape}")
    if not np.all(np.isfinite(ws)) or np.any(ws <= 0):
        raise ValueError("w_scale must be finite and > 0")
    return np.broadcast_to(ws, (n,))


def dynamic_linear_reference(x, w_q, w_scale, w_zp, bias, *, reduce_range=True, relu=False, target="fbgemm"):
    """Readable dynamic linear (module docstring). x float32 (..., in); w_q int8 (out, in); w_scale, w_zp
    scalar or (out,); bias float (out,) or None → float32 (..., out). ``relu`` applies max(y, 0)
    (torch's ``linear_relu_dynamic``)."""
    w_q = _check_w(w_q)
    check_dynamic_args(w_q.shape[0], w_scale, w_zp, bias, reduce_range)
    x, bias = _check(x, w_q.shape, bias)
    ar = resolve_linear(target)
    n_out = w_q.shape[0]
    ws = _weight_scale(w_scale, n_out)
    x2 = x.reshape(-1, x.shape[-1])
    # 1-2. run-time qparams and quantization of the activations
    xs, xz = dynamic_input_qparams(x2, reduce_range=reduce_range, target=ar)
    x_q = quantize(x2, xs, xz, "uint8", target=ar.quantize_rule)
    # 3. integer GEMM with the zero-point corrections
    acc = gemm_u8s8_reference(x_q, w_q, xz, w_zp, saturate_pairs=_saturates(ar)).astype(np.int64)
    # 4. back to float
    return _to_float_reference(acc, xs, ws, bias, ar, relu).reshape(x.shape[:-1] + (n_out,))


def _to_float_reference(acc, xs, ws, bias, ar, relu):
    """Step 4: int accumulators (M, N) → float32 (M, N), ``y = acc·s_x·s_w + b`` as the framework rounds it."""
    acc = np.asarray(acc, np.int64)
    b = np.zeros(acc.shape[1], _F32) if bias is None else np.asarray(bias, _F32)
    if ar.name == "minquant":
        y = (acc * (xs * ws) + b.astype(np.float64)).astype(_F32)
    else:
        s = (_F32(xs) * ws.astype(_F32)).astype(_F32)          # f32(f32(s_x) · s_w)
        acc_f = acc.astype(_F32)
        if ar.name == "fbgemm":
            y = fma_f32_reference(acc_f, np.broadcast_to(s, acc.shape), np.broadcast_to(b, acc.shape))
        else:
            y = ((acc_f * s).astype(_F32) + b).astype(_F32)
    if relu:
        y = np.maximum(y, _F32(0))
    return y


@njit(cache=True)
def _dequant_kernel(acc, s32, s64, b, mode, relu, out):
    """acc (M, N) int32 → float32 (M, N): mode 0 fma, 1 multiply-then-add, 2 float64."""
    M, N = acc.shape
    for m in range(M):
        for n in range(N):
            if mode == 0:
                y = _fma32(np.float32(acc[m, n]), s32[n], b[n])
            elif mode == 1:
                y = np.float32(np.float32(np.float32(acc[m, n]) * s32[n]) + b[n])
            else:
                y = np.float32(np.float64(acc[m, n]) * s64[n] + np.float64(b[n]))
            if relu and y < np.float32(0):
                y = np.float32(0)
            out[m, n] = y


def dynamic_linear(x, w_q, w_scale, w_zp, bias, *, reduce_range=True, relu=False, target="fbgemm"):
    """Fast dynamic linear; same contract and bit-identical result as :func:`dynamic_linear_reference`.
    ``w_q`` may be a :class:`~minquant.kernels.gemm.PackedWeight` (``pack_weight(w_q, w_zp)``)."""
    if isinstance(w_q, PackedWeight):
        packed = w_q
        check_dynamic_args(packed.w_q.shape[0], w_scale, packed.w_zp, bias, reduce_range)
    else:
        w_q = _check_w(w_q)
        check_dynamic_args(w_q.shape[0], w_scale, w_zp, bias, reduce_range)
        packed = pack_weight(w_q, w_zp)
    x, bias = _check(x, packed.w_q.shape, bias)
    ar = resolve_linear(target)
    n_out = packed.w_q.shape[0]
    ws = _weight_scale(w_scale, n_out)
    x2 = x.reshape(-1, x.shape[-1])
    xs, xz = dynamic_input_qparams(x2, reduce_range=reduce_range, target=ar)
    x_q = quantize(x2, xs, xz, "uint8", target=ar.quantize_rule)
    acc = gemm_u8s8(x_q, packed, xz, saturate_pairs=_saturates(ar))
    return _to_float(acc, xs, ws, bias, ar, relu).reshape(x.shape[:-1] + (n_out,))


def _to_float(acc, xs, ws, bias, ar, relu):
    """Step 4, fast: int accumulators (M, N) → float32 (M, N) with the framework's output stage."""
    n_out = acc.shape[1]
    b = np.zeros(n_out, _F32) if bias is None else np.ascontiguousarray(bias, _F32)
    mode = {"fbgemm": 0, "minquant": 2}.get(ar.name, 1)
    s32 = (_F32(xs) * ws.astype(_F32)).astype(_F32)
    s64 = np.ascontiguousarray(xs * ws, dtype=np.float64)
    out = np.empty(acc.shape, _F32)
    _dequant_kernel(np.ascontiguousarray(acc, np.int32), s32, s64, b, mode, bool(relu), out)
    return out


# ---------------------------------------------------------------------------------------------------------
# dynamic conv2d
# ---------------------------------------------------------------------------------------------------------
def _conv_saturates(ar) -> bool:
    """Pair saturation of the dynamic conv's GEMM: the emulation's flag, except under 'onnxruntime', whose
    ``ConvInteger`` accumulates exactly (module docstring; tests/test_kernels_ops.py checks it on the host —
    an AVX512-VNNI CPU so far, where MLAS's GEMMs are exact anyway)."""
    return ar.saturate_pairs and ar.name != "onnxruntime"


@dataclass(frozen=True)
class PackedDynamicConvWeight:
    """int8 OIHW conv weights prepared once for :func:`dynamic_conv2d`.

    ``packs``: one :class:`~minquant.kernels.gemm.PackedWeight` per group, rows in im2col's (kh, kw, c)
    order; ``depthwise_w``: for one input channel per group (and ``groups > 1``), ``w − z_w`` as float32
    OIHW — the exact float32 shortcut of :func:`dynamic_conv2d` — else None; ``pair_max``: the largest
    |w_t| + |w_t+1| of a tap pair (:func:`~minquant.kernels.conv.tap_pair_max`)."""
    w_q: np.ndarray
    w_zp: np.ndarray
    groups: int
    packs: tuple
    depthwise_w: np.ndarray | None
    pair_max: int


def _check_conv_weight(w_q, w_zp, groups):
    w_q = np.asarray(w_q)
    if w_q.dtype != np.int8 or w_q.ndim != 4:
        raise ValueError(f"w_q must be a 4-D int8 array (O, C/groups, KH, KW), got {w_q.dtype} {w_q.shape}")
    check_groups(groups, w_q.shape[0])
    groups = int(groups)
    o = w_q.shape[0]
    check_weight_zp(w_zp, o)
    wz = np.asarray(w_zp)
    return w_q, np.ascontiguousarray(np.broadcast_to(wz.astype(np.int64), (o,))), groups


def pack_dynamic_conv_weight(w_q, w_zp=0, groups=1) -> PackedDynamicConvWeight:
    """Prepare OIHW int8 conv weights (zero point per tensor or per output channel) for :func:`dynamic_conv2d`."""
    w_q, wz, g = _check_conv_weight(w_q, w_zp, groups)
    o, cg = w_q.shape[:2]
    og = o // g
    packs = tuple(pack_weight(np.ascontiguousarray(w_q[i * og:(i + 1) * og].transpose(0, 2, 3, 1).reshape(og, -1)),
                              wz[i * og:(i + 1) * og]) for i in range(g))
    dw = None
    if cg == 1 and g > 1:
        dw = (w_q.astype(np.int64) - wz.reshape(-1, 1, 1, 1)).astype(_F32)
    return PackedDynamicConvWeight(w_q, wz, g, packs, dw, tap_pair_max(w_q))


def _conv_setup(x, w_q, w_scale, bias, stride, padding, dilation, groups, reduce_range, target):
    """Checks, steps 1–2 (run-time qparams, quantize) and the geometry shared by both versions."""
    check_dynamic_args(w_q.shape[0], w_scale, 0, bias, reduce_range)
    ar = resolve_linear(target)
    x = np.asarray(x)
    if x.dtype != _F32 or x.ndim != 4:
        raise ValueError(f"dynamic_conv2d expects a float32 NCHW input, got {x.dtype} {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("dynamic_conv2d: input contains NaN or Inf")
    o, cg, kh, kw = w_q.shape
    if x.shape[1] != cg * groups:
        raise ValueError(f"input has {x.shape[1]} channels; the weights expect {cg}·{groups} = {cg * groups}")
    stride, padding, dilation = check_geometry(stride, padding, dilation)
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (o,) or bias.dtype.kind != "f":
            raise ValueError(f"bias must be float of shape ({o},), got {bias.dtype} {bias.shape}")
        bias = bias.astype(_F32)
    ws = _weight_scale(w_scale, o)
    xs, xz = dynamic_input_qparams(x, reduce_range=reduce_range, target=ar)
    x_q = quantize(x, xs, xz, "uint8", target=ar.quantize_rule)
    oh = conv_out_size(x.shape[2], kh, stride[0], padding[0], dilation[0])
    ow = conv_out_size(x.shape[3], kw, stride[1], padding[1], dilation[1])
    return ar, x_q, xs, xz, ws, bias, stride, padding, dilation, (oh, ow)


def dynamic_conv2d_reference(x, w_q, w_scale, w_zp, bias, *, stride=1, padding=0, dilation=1, groups=1,
                             reduce_range=True, relu=False, target="fbgemm"):
    """Readable dynamic conv2d (module docstring), in NumPy with int64 accumulators. x float32 NCHW; w_q int8
    OIHW (``O, C/groups, KH, KW``); w_scale, w_zp scalar or (O,); bias float (O,) or None → float32 NCHW.

    1–2. run-time qparams of the whole input (:func:`dynamic_input_qparams`) and quantization;
    3. per group, the im2col matrix of the codes (padding reads z_x) times the group's weights —
       ``acc = Σ (x_q − z_x)(w − z_w)`` (:func:`~minquant.kernels.gemm.gemm_u8s8_reference`, with int16
       pair saturation where the emulation has it; never under 'onnxruntime', whose ConvInteger is exact);
    4. ``y = acc·s_x·s_w + b`` as :func:`dynamic_linear_reference` rounds it; ``relu``: max(y, 0)."""
    w_q, wz, g = _check_conv_weight(w_q, w_zp, groups)
    ar, x_q, xs, xz, ws, bias, s, p, d, (oh, ow) = _conv_setup(x, w_q, w_scale, bias, stride, padding, dilation,
                                                                 g, reduce_range, target)
    n = x_q.shape[0]
    o, cg, kh, kw = w_q.shape
    og = o // g
    x_nhwc = x_q.transpose(0, 2, 3, 1)
    accs = []
    for gi in range(g):
        cols = im2col_reference(x_nhwc[..., gi * cg:(gi + 1) * cg], kh, kw, s, p, d, pad_value=xz)
        w_g = w_q[gi * og:(gi + 1) * og].transpose(0, 2, 3, 1).reshape(og, -1)      # rows in (kh, kw, c) order
        accs.append(gemm_u8s8_reference(cols, w_g, xz, wz[gi * og:(gi + 1) * og],
                                        saturate_pairs=_conv_saturates(ar)).astype(np.int64))
    acc = np.concatenate(accs, axis=1)                                             # (N·OH·OW, O)
    y = _to_float_reference(acc, xs, ws, bias, ar, relu)
    return np.ascontiguousarray(y.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))


def dynamic_conv2d(x, w_q, w_scale, w_zp, bias, *, stride=1, padding=0, dilation=1, groups=1, reduce_range=True,
                   relu=False, target="fbgemm"):
    """Fast dynamic conv2d; same contract and bit-identical result as :func:`dynamic_conv2d_reference`.
    ``w_q`` may be a :class:`PackedDynamicConvWeight` (``pack_dynamic_conv_weight(w_q, w_zp, groups)``;
    ``w_zp`` and ``groups`` are then taken from it). Three code paths, one result:

    * depthwise-style (one input channel per group, ``groups > 1``, KH·KW ≤ 255 taps, and no tap pair can
      reach the int16 limits when pairs saturate): the accumulator Σ (x_q − z_x)(w − z_w) is an integer below
      255·255·255 < 2^24, so a float32 convolution of the two integer tensors (padding 0 = z_x − z_x)
      computes it exactly;
    * ``groups == 1``: the column layout of the static conv — raw (O, N·OH·OW) = W @ im2col_t, exact
      (:func:`~minquant.kernels.gemm.raw_product_cols`, pair saturation included), then the zero-point
      terms ``acc = raw − z_x·(Σw − K·z_w) − z_w·Σx``;
    * otherwise one :func:`~minquant.kernels.gemm.gemm_u8s8` per group on the im2col rows."""
    pk = w_q if isinstance(w_q, PackedDynamicConvWeight) else pack_dynamic_conv_weight(w_q, w_zp, groups)
    g = pk.groups
    ar, x_q, xs, xz, ws, bias, s, p, d, (oh, ow) = _conv_setup(x, pk.w_q, w_scale, bias, stride, padding, dilation,
                                                                 g, reduce_range, target)
    n, c = x_q.shape[:2]
    o, cg, kh, kw = pk.w_q.shape
    saturate = _conv_saturates(ar)
    if (pk.depthwise_w is not None and kh * kw <= 255
            and (not saturate or int(x_q.max(initial=0)) * pk.pair_max < 32768)):
        acc = _float_conv2d(x_q.astype(_F32) - _F32(xz), pk.depthwise_w, None, s, p, d, g)
        acc = acc.transpose(0, 2, 3, 1).reshape(-1, o).astype(np.int64)
    elif g == 1:
        pw = pk.packs[0]
        cols = im2col_t(x_q, kh, kw, s, p, d, pad_value=xz)
        has_wzp = bool(np.any(pw.w_zp))
        raw, m_sum = raw_product_cols(cols, pw, saturate, has_wzp)
        acc_t = raw.astype(np.int64) - np.int64(xz) * (pw.col_sum - cols.shape[0] * pw.w_zp)[:, None]
        if has_wzp:
            acc_t -= pw.w_zp[:, None] * m_sum[None, :]
        acc = acc_t.T                                                       # (N·OH·OW, O)
    else:
        x_nhwc = np.ascontiguousarray(x_q.transpose(0, 2, 3, 1))
        accs = [gemm_u8s8(im2col(x_nhwc[..., gi * cg:(gi + 1) * cg], kh, kw, s, p, d, pad_value=xz), pk.packs[gi],
                          xz, saturate_pairs=saturate) for gi in range(g)]
        acc = np.concatenate(accs, axis=1)                                  # (N·OH·OW, O)
    y = _to_float(acc, xs, ws, bias, ar, relu)
    return np.ascontiguousarray(y.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))
