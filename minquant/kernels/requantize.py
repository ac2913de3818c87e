"""The output stage: int32 accumulator (+ bias) → uint8 codes of the next layer (docs/quantization.md,
steps 5 and 7).

    real output  y = s_x·s_w·acc + b                       (step 4 gives acc; step 5 the bias)
    its code     y_q = z_y + y / s_y = z_y + M·(acc + b / (s_x·s_w)),   M = s_x·s_w / s_y
    stored       clamp(rne(...), lo, 255),  lo = z_y with a fused ReLU (real 0 is the code z_y), else 0

Frameworks evaluate this with different roundings; :mod:`minquant.target` says which. A fused
ReLU6 (or any clamp to [lo_real, hi_real]) is the same clamp on codes, with lo/hi given explicitly; a
per-channel top ``clamp_hi[n]`` (ReLU6 after cross-layer equalization, whose clip is 6/s_c in channel c)
lowers hi channel by channel, in the same pass.

``requantize_reference`` is the NumPy spec. The fast kernels never requantize a finished accumulator on
its own: ``finish_requantize`` / ``finish_requantize_cols`` (Numba) fuse the zero-point correction of
step 4 with this output stage, bit-identical to ``requantize_reference`` of the corrected accumulator.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ..affine import quantize_bias
from ..target import resolve_linear
from .checks import check_output_stage_args
from .fixedpoint import mbqm_double, mbqm_double_up, quantize_multiplier

__all__ = ["OutputStage", "output_stage", "requantize_reference", "finish_requantize", "finish_requantize_cols",
           "onednn_value_reference", "onednn_sum_requantize_reference"]



def fma_f32_reference(a, b, c) -> np.ndarray:
    """float32 fused multiply-add ``f32(a·b + c)`` with one rounding, in NumPy.

    ``a·b`` of two float32 is exact in 80-bit long double (48 significant bits), and the sum is rounded
    to 64 bits before the final rounding to float32; that double rounding can differ from a true FMA only
    when the 64-bit sum lands exactly on a float32 tie, which needs ≥ 40 specific bits (≈ 1e-12 chance)."""
    ld = np.longdouble
    return (np.asarray(a, np.float32).astype(ld) * np.asarray(b, np.float32).astype(ld)
            + np.asarray(c).astype(ld)).astype(np.float32)


if numba.config.DISABLE_JIT:  # pure-Python run: a NumPy stand-in for the FMA instruction
    def _fma32(a, b, c):
        return fma_f32_reference(a, b, c)[()]
else:
    @intrinsic
    def _fma32(typingctx, a, b, c):
        """float32 fused multiply-add (one rounding), LLVM's llvm.fma.f32 — what fbgemm's compiled
        ``bias · (1/s_xw) + acc`` becomes on an FMA CPU."""
        sig = types.float32(types.float32, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            f32 = ir.FloatType()
            fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32] * 3))
            return builder.call(fn, args)
        return sig, codegen

# Output-stage modes (one per way of adding the bias and scaling; see minquant/target.py)
_FLOAT_BIAS_PER_CHANNEL = 0   # fbgemm, per-channel weights: f32(acc) + f32(b / s_xw)
_FLOAT_BIAS_FMA = 1           # fbgemm, per-tensor weights: fma(b, f32(1 / s_xw), acc)
_INT_BIAS_F32 = 2             # qnnpack / onnxruntime: f32(acc + b_q) · f32 multiplier
_INT_BIAS_F64 = 3             # minquant: (acc + b_q) · float64 multiplier
_ONEDNN = 4                   # torch x86 → oneDNN: f32(f32(f32(acc)·a_x)·a_w) + b, then ·f32(1/s_y) + z_y
_Q31_DOUBLE = 5               # LiteRT reference: MultiplyByQuantizedMultiplier(acc + b_q), gemmlowp double rounding
_Q31_DOUBLE_UP = 6            # LiteRT optimized builtin kernels: the same, both roundings ties up — except the
#                               channels flagged by mult32[2, n] = 1 (q31_double there: a depthwise kernel's tail)
_F64_AWAY = 7                 # LiteRT reference FULLY_CONNECTED: round-half-away((acc + b_q) · f64 M)
_FIXED_MODES = {"q31_double": _Q31_DOUBLE, "q31_double_up": _Q31_DOUBLE_UP, "q31_double_up_blocks8": _Q31_DOUBLE_UP,
                "f64_away": _F64_AWAY}


class OutputStage:
    """Everything the output stage needs, precomputed once per layer (per output channel n):

    mode, bias_f (float32 term or raw bias), bias_q (int32), mult32 / mult64 (multiplier M), y_zp, lo (one
    code) and hi (float64 (n_out,): the top code of each output channel). In LiteRT's fixed-point modes
    (docs/quantization.md, step 7d) mult64 holds the Q31 integer multiplier (exact in float64) and mult32[1]
    the shift; in ``f64_away`` mult64 is M = f64(s_x)·f64(s_w)/f64(s_y)."""

    def __init__(self, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi):
        self.mode, self.bias_f, self.bias_q = mode, bias_f, bias_q
        self.mult32, self.mult64 = mult32, mult64
        self.y_zp, self.lo, self.hi = y_zp, lo, hi


def output_stage(n_out, x_scale, w_scale, bias, y_scale, y_zp, *, relu=False, clamp=None, clamp_hi=None,
                 target="fbgemm"):
    """Precompute the output stage of a layer with ``n_out`` output channels (see module docstring).

    w_scale: scalar (per-tensor weights) or (n_out,) (per-channel). bias: None, float (n_out,), or int32
    (n_out,) already on the scale s_x·s_w (used as is). clamp: optional (lo_code, hi_code) replacing
    [0, 255] — a fused ReLU6 is ``(z_y, min(255, z_y + rne(6 / s_y)))``. clamp_hi: optional (n_out,) codes,
    a per-channel top applied after ``clamp`` (hi[n] = min(hi, clamp_hi[n]); must stay ≥ lo)."""
    check_output_stage_args(n_out, x_scale, w_scale, bias, y_scale, y_zp, clamp, clamp_hi)
    ar = resolve_linear(target)
    per_channel = np.ndim(w_scale) > 0
    ws = np.broadcast_to(np.asarray(w_scale, dtype=np.float32), (n_out,))
    if not np.all(np.isfinite(ws)) or np.any(ws <= 0):
        raise ValueError("w_scale must be finite and > 0 in float32 (a value under- or overflows float32)")
    ats = (np.float32(x_scale) * ws).astype(np.float32)                       # s_xw = f32(s_x · s_w)
    if ar.multiplier in _FIXED_MODES:
        return _fixed_stage(n_out, x_scale, ws, bias, y_scale, y_zp, relu, clamp, clamp_hi, ar)
    if ar.multiplier in _ONEDNN_MULTIPLIERS:
        return _onednn_stage(n_out, x_scale, ws, bias, y_scale, y_zp, relu, clamp, clamp_hi,
                             combined=ar.multiplier.endswith("amx"), direct=ar.multiplier.startswith("onednn_direct"))
    if ar.multiplier == "f32_ats_times_inv_ys":
        mult32 = (ats * (np.float32(1) / np.float32(y_scale))).astype(np.float32)
    else:
        mult32 = (ats / np.float32(y_scale)).astype(np.float32)
    # float64 multiplier from the float32 scales the layer actually stores
    mult64 = np.float64(np.float32(x_scale)) * ws.astype(np.float64) / np.float64(np.float32(y_scale))
    bias_f = np.zeros(n_out, np.float32)
    bias_q = np.zeros(n_out, np.int64)
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (n_out,):
            raise ValueError(f"bias has shape {bias.shape}, expected ({n_out},)")
    int_bias = bias is not None and bias.dtype.kind in "iu"
    if ar.float_bias and not int_bias:
        if bias is not None:
            b = bias.astype(np.float32)
            if per_channel:
                bias_f = (b / ats).astype(np.float32)
            else:
                bias_f = b
        mode = _FLOAT_BIAS_PER_CHANNEL if per_channel else _FLOAT_BIAS_FMA
        if not per_channel:
            ats_inv = (np.float32(1) / ats).astype(np.float32)
            mult32 = np.stack([mult32, ats_inv])  # row 1 carries f32(1 / s_xw) for the FMA
    else:
        if int_bias:
            bias_q = bias.astype(np.int64)
        elif bias is not None:
            bias_q = quantize_bias(bias, x_scale, ws, target=ar.bias_rule).astype(np.int64)
        mode = _INT_BIAS_F64 if ar.multiplier == "f64" else _INT_BIAS_F32
    lo, his = _clamp_codes(n_out, y_zp, relu, clamp, clamp_hi)
    if mult32.ndim == 1:
        mult32 = np.stack([mult32, np.zeros(n_out, np.float32)])
    mult32 = np.concatenate([mult32, np.zeros((1, n_out), np.float32)])   # rows: (M, aux, aux2)
    return OutputStage(mode, np.ascontiguousarray(bias_f), bias_q, np.ascontiguousarray(mult32), mult64,
                       int(y_zp), lo, his)


def _clamp_codes(n_out, y_zp, relu, clamp, clamp_hi):
    """(lo, hi (n_out,) float64): the lower code and each channel's top code (module docstring)."""
    lo, hi = (int(y_zp) if relu else 0), 255
    if clamp is not None:
        lo, hi = int(clamp[0]), int(clamp[1])
        if not 0 <= lo <= hi <= 255:
            raise ValueError(f"clamp {clamp} is not a sub-range of [0, 255]")
    his = np.full(n_out, float(hi))
    if clamp_hi is not None:
        ch = np.asarray(clamp_hi)
        if ch.shape != (n_out,) or ch.dtype.kind not in "iu":
            raise ValueError(f"clamp_hi must be {n_out} integer codes, got {ch.dtype} {ch.shape}")
        his = np.minimum(his, ch.astype(np.float64))
        if his.min() < lo:
            raise ValueError(f"clamp_hi goes below the lower clamp {lo} (min {int(his.min())})")
    return lo, his


def _fixed_stage(n_out, x_scale, ws, bias, y_scale, y_zp, relu, clamp, clamp_hi, ar):
    """LiteRT's integer output stages (docs/quantization.md, step 7d): an int32 bias on s_x·s_w (given, or
    quantized with ``ar.bias_rule``), the multiplier ``M = f64(s_x)·f64(s_w[n])/f64(s_y)`` as TFLite's
    Prepare computes it, and — for the fixed-point modes — ``QuantizeMultiplier(M)``."""
    m64 = np.float64(np.float32(x_scale)) * ws.astype(np.float64) / np.float64(np.float32(y_scale))
    bias_q = np.zeros(n_out, np.int64)
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (n_out,):
            raise ValueError(f"bias has shape {bias.shape}, expected ({n_out},)")
        bias_q = (bias if bias.dtype.kind in "iu" else
                  quantize_bias(bias, x_scale, ws, target=ar.bias_rule)).astype(np.int64)
    mode = _FIXED_MODES[ar.multiplier]
    mult32 = np.zeros((3, n_out), np.float32)
    if mode == _F64_AWAY:
        mult64 = m64
    else:
        q, shift = quantize_multiplier(m64)
        if np.any(shift > 30):
            raise ValueError(f"a multiplier s_x·s_w/s_y ≥ 2^30 ({m64.max():.3g}) is out of LiteRT's range")
        mult64 = q.astype(np.float64)
        mult32[1] = shift.astype(np.float32)
        if ar.multiplier == "q31_double_up_blocks8":     # the last C_out mod 8 channels: gemmlowp's rounding
            mult32[2, n_out // 8 * 8:] = 1
    lo, his = _clamp_codes(n_out, y_zp, relu, clamp, clamp_hi)
    return OutputStage(mode, np.zeros(n_out, np.float32), bias_q, mult32, mult64, int(y_zp), lo, his)


#: the multipliers of oneDNN's stage: eager x86 ('onednn', 'onednn_amx') and Inductor ('onednn_direct...')
_ONEDNN_MULTIPLIERS = ("onednn", "onednn_amx", "onednn_direct", "onednn_direct_amx")


def _onednn_stage(n_out, x_scale, ws, bias, y_scale, y_zp, relu, clamp, clamp_hi, combined=False, direct=False):
    """oneDNN's output stage as torch 2.14.1 drives it (docs/quantization.md, step 7c). torch hands ideep
    the *reciprocals* of the activation scales, computed in float64 and rounded to float32; oneDNN inverts
    them again in float32 to get its src / dst scales, and multiplies by the inverse of the dst scale — a
    third float32 division. So the constants are

        a_x = f32(1 / f32(1 / s_x))                (≠ f32(s_x) in the last bit for ~14 % of scales)
        a_w[n] = f32(s_w[n])
        m_y = f32(1 / f32(1 / f32(1 / s_y)))       (float32 divisions after the float64 one)

    and each output is ``clamp(rne(f32(f32(v·m_y) + z_y)))`` with a float bias and the zero point added
    *before* rounding, where v depends on the kernel oneDNN picked:

    * ``combined=False`` — the AVX512-VNNI kernels, and the depthwise kernel (one channel per group in and
      out) also on AMX machines: two scale multiplications, ``v = f32(f32(f32(f32(acc)·a_x)·a_w[n]) + b[n])``;
    * ``combined=True`` — the AMX (brgemm) kernels for dense and grouped convolutions (a depthwise channel
      multiplier included) on CPUs with AMX-INT8
      (Sapphire Rapids and later): the scales are multiplied first, ``v = f32(f32(f32(acc)·f32(a_x·a_w[n]))
      + b[n])``.

    (Measured on an Intel Xeon with AMX, natively and with ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI: each
    formula 0 mismatching codes of ≥ 9.6 M per kind of convolution; the other one 1–13.) A fused ReLU
    (max(v, 0) before the output scale) gives exactly the lower clamp at z_y.

    ``direct=True`` — the same kernels as Inductor calls them for a pt2e model (``onednn.qconv_pointwise``,
    ``qlinear_pointwise``): torch hands oneDNN the scales themselves, so ``a_x = f32(s_x)`` and
    ``m_y = f32(1/f32(s_y))`` (one float32 division, oneDNN's own). Measured the same way: 0 mismatching
    codes of 36.9 M per ISA (dense, depthwise, grouped, 1×1, 3-channel convs); the eager constants 3–8."""
    bias_f = np.zeros(n_out, np.float32)
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (n_out,):
            raise ValueError(f"bias has shape {bias.shape}, expected ({n_out},)")
        if bias.dtype.kind in "iu":
            raise ValueError("oneDNN's output stage takes a float bias (torch passes it as float), not int32")
        bias_f = bias.astype(np.float32)
    one = np.float32(1.0)
    if direct:
        a_x, m_y = np.float32(x_scale), np.float32(one / np.float32(y_scale))
    else:
        a_x = np.float32(one / np.float32(1.0 / float(x_scale)))
        m_y = np.float32(one / np.float32(one / np.float32(1.0 / float(y_scale))))
    a_w = ws.astype(np.float32)
    if combined:   # mult32[1] = 1 makes the kernel's f32(f32(acc)·1) exact: v = f32(f32(acc)·f32(a_x·a_w)) + b
        mult32 = np.stack([(a_x * a_w).astype(np.float32), np.ones(n_out, np.float32), np.full(n_out, m_y, np.float32)])
    else:
        mult32 = np.stack([a_w, np.full(n_out, a_x, np.float32), np.full(n_out, m_y, np.float32)])
    lo, his = _clamp_codes(n_out, y_zp, relu, clamp, clamp_hi)
    return OutputStage(_ONEDNN, np.ascontiguousarray(bias_f), np.zeros(n_out, np.int64),
                       np.ascontiguousarray(mult32), np.zeros(n_out), int(y_zp), lo, his)


def onednn_value_reference(acc, st: OutputStage) -> np.ndarray:
    """oneDNN's float32 value before its dst scale (``st`` from a oneDNN stage): ``f32(f32(f32(acc)·a_x)·a_w)
    + b``, or with the scales multiplied first (``mult32`` rows 0 and 1 hold (a_w, a_x) or (a_x·a_w, 1)) —
    also what a float-output ``qlinear_pointwise`` returns. ``acc`` (M, N) exact integers."""
    if st.mode != _ONEDNN:
        raise ValueError("onednn_value_reference needs a oneDNN output stage")
    a = np.asarray(acc).astype(np.float32)
    return (((a * st.mult32[1]).astype(np.float32) * st.mult32[0]).astype(np.float32) + st.bias_f).astype(np.float32)


def onednn_sum_requantize_reference(acc, st: OutputStage, prev_q, prev_scale, prev_zp) -> np.ndarray:
    """oneDNN's ``sum`` post-op (Inductor's conv + residual add, ``qconv2d_pointwise.binary``): the codes
    ``prev_q`` (M, N) already in the destination, with their own qparams, are added before the dst scale as
    one fused multiply-add, ``v' = fma(f32(prev_q − z_p), f32(s_p), v)``; then the clamp (a ReLU after the
    sum is the lower clamp at z_y) and ``rne(f32(f32(v'·m_y) + z_y))``. Measured: 0 of 3.7 M codes differ per
    ISA; a separate multiply and add 1."""
    v = onednn_value_reference(acc, st)
    d = (np.asarray(prev_q).astype(np.int64) - int(prev_zp)).astype(np.float32)
    v = fma_f32_reference(d, np.broadcast_to(np.float32(prev_scale), d.shape), v)
    t = np.rint(((v * st.mult32[2]).astype(np.float32) + np.float32(st.y_zp)).astype(np.float32))
    return np.minimum(np.maximum(t, st.lo), st.hi).astype(np.uint8)


def requantize_reference(acc, st: OutputStage) -> np.ndarray:
    """int32 accumulator (M, N) → uint8 (M, N), spelled out per mode (module docstring)."""
    acc = np.asarray(acc, dtype=np.int64)
    if st.mode == _FLOAT_BIAS_PER_CHANNEL:
        acc_f = (acc.astype(np.float32) + st.bias_f).astype(np.float32)
        t = np.rint((acc_f * st.mult32[0]).astype(np.float32))
    elif st.mode == _FLOAT_BIAS_FMA:
        acc_f = fma_f32_reference(np.broadcast_to(st.bias_f, acc.shape), st.mult32[1], acc)
        t = np.rint((acc_f * st.mult32[0]).astype(np.float32))
    elif st.mode == _INT_BIAS_F32:
        t = np.rint(((acc + st.bias_q).astype(np.float32) * st.mult32[0]).astype(np.float32))
    elif st.mode == _ONEDNN:
        v = ((acc.astype(np.float32) * st.mult32[1]).astype(np.float32) * st.mult32[0]).astype(np.float32)
        v = (v + st.bias_f).astype(np.float32)
        t = np.rint(((v * st.mult32[2]).astype(np.float32) + np.float32(st.y_zp)).astype(np.float32))
        return np.minimum(np.maximum(t, st.lo), st.hi).astype(np.uint8)
    elif st.mode in (_Q31_DOUBLE, _Q31_DOUBLE_UP):
        from .fixedpoint import multiply_by_quantized_multiplier_reference as mbqm
        a = acc + st.bias_q
        t = np.array([[mbqm(a[i, n], int(st.mult64[n]), int(st.mult32[1, n]),
                            ties_up=st.mode == _Q31_DOUBLE_UP and st.mult32[2, n] == 0)
                       for n in range(a.shape[1])] for i in range(a.shape[0])], np.float64).reshape(a.shape)
    elif st.mode == _F64_AWAY:
        v = (acc + st.bias_q).astype(np.float64) * st.mult64
        t = np.sign(v) * np.floor(np.abs(v) + 0.5)            # C's round: halves away from zero
    else:
        t = np.rint((acc + st.bias_q).astype(np.float64) * st.mult64)
    return np.minimum(np.maximum(t + st.y_zp, st.lo), st.hi).astype(np.uint8)


@njit(cache=True, inline="always")
def _requant_value(a, n, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi):
    """One output code from one int64 accumulator value of output channel n (the four modes above)."""
    if mode == 0:
        f = np.float32(np.float32(a) + bias_f[n])
        t = np.rint(np.float32(f * mult32[0, n]))
    elif mode == 1:
        f = _fma32(bias_f[n], mult32[1, n], np.float32(a))
        t = np.rint(np.float32(f * mult32[0, n]))
    elif mode == 2:
        t = np.rint(np.float32(np.float32(a + bias_q[n]) * mult32[0, n]))
    elif mode == 4:
        v = np.float32(np.float32(np.float32(np.float32(a) * mult32[1, n]) * mult32[0, n]) + bias_f[n])
        t = np.rint(np.float32(np.float32(v * mult32[2, n]) + np.float32(y_zp)))
        return np.uint8(min(max(t, lo), hi[n]))
    elif mode == 5:
        t = np.float64(mbqm_double(np.int64(a + bias_q[n]), np.int64(mult64[n]), np.int64(mult32[1, n])))
    elif mode == 6 and mult32[2, n] == 0:
        t = np.float64(mbqm_double_up(np.int64(a + bias_q[n]), np.int64(mult64[n]), np.int64(mult32[1, n])))
    elif mode == 6:
        t = np.float64(mbqm_double(np.int64(a + bias_q[n]), np.int64(mult64[n]), np.int64(mult32[1, n])))
    elif mode == 7:
        v = np.float64(a + bias_q[n]) * mult64[n]
        t = np.floor(v + 0.5) if v >= 0 else -np.floor(-v + 0.5)
    else:
        t = np.rint(np.float64(a + bias_q[n]) * mult64[n])
    return np.uint8(min(max(t + y_zp, lo), hi[n]))


@njit(cache=True)
def _finish_requant_kernel(raw, row_sum, col_adj, w_zp, a_zp, mode, bias_f, bias_q, mult32, mult64, y_zp,
                           lo, hi, out3):
    """Fused zero-point correction (step 4) + output stage (step 7), writing out3[b, n, p] for row
    m = b·P + p — (M, N, 1) for a linear layer, (batch, C_out, OH·OW) for a convolution (NCHW).
    ``col_adj[n] = Σ_k w[n,k] − K·z_w[n]`` folds the constant K·z_a·z_w into the column term."""
    M, N = raw.shape
    P = out3.shape[2]
    for m in range(M):
        b = m // P
        p = m - b * P
        rs = row_sum[m]
        for n in range(N):
            a = np.int64(raw[m, n]) - a_zp * col_adj[n] - w_zp[n] * rs
            out3[b, n, p] = _requant_value(a, n, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi)


@njit(cache=True, inline="always")
def _requant_row(acc, n, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out):
    """The output stage for one row of int32 accumulators of output channel n (:func:`_requant_span` over the
    whole row)."""
    _requant_span(acc, np.uint64(0), acc.shape[0], n, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out,
                  np.uint64(0))


@njit(cache=True, inline="always")
def _requant_span(acc, a0, L, n, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out, o0):
    """out[o0 + i] = the output stage of acc[a0 + i] (int32, output channel n), i < L: the mode test and the
    per-channel constants are hoisted out of the loop, so each mode's loop is a straight vectorisable sweep
    (int32 → float32 conversion, multiply, round, clamp, store). Offsets instead of slices: a kernel that
    calls this once per channel makes no array views. ``a0``, ``o0`` and the loop index are unsigned
    (np.uint64): Numba then adds no negative-index wrap-around, and the loops vectorise."""
    a0, o0 = np.uint64(a0), np.uint64(o0)
    L = np.uint64(max(L, 0))
    zf = np.float32(y_zp)
    lof = np.float32(lo)
    hin = hi[n]
    hif = np.float32(hin)
    if mode == 0:
        bf = bias_f[n]
        mu = mult32[0, n]
        for i in range(L):
            f = np.float32(np.float32(acc[a0 + i]) + bf)
            t = np.float32(np.rint(np.float32(f * mu))) + zf
            out[o0 + i] = np.uint8(min(max(t, lof), hif))
    elif mode == 1:
        bf = bias_f[n]
        inv = mult32[1, n]
        mu = mult32[0, n]
        for i in range(L):
            f = _fma32(bf, inv, np.float32(acc[a0 + i]))
            t = np.float32(np.rint(np.float32(f * mu))) + zf
            out[o0 + i] = np.uint8(min(max(t, lof), hif))
    elif mode == 2:
        bq = np.int32(bias_q[n])
        mu = mult32[0, n]
        for i in range(L):
            t = np.float32(np.rint(np.float32(np.float32(acc[a0 + i] + bq) * mu))) + zf
            out[o0 + i] = np.uint8(min(max(t, lof), hif))
    elif mode == 4:
        bf = bias_f[n]
        aw = mult32[0, n]
        ax = mult32[1, n]
        my = mult32[2, n]
        for i in range(L):
            v = np.float32(np.float32(np.float32(np.float32(acc[a0 + i]) * ax) * aw) + bf)
            t = np.float32(np.rint(np.float32(np.float32(v * my) + zf)))
            out[o0 + i] = np.uint8(min(max(t, lof), hif))
    elif mode >= 5:
        for i in range(L):
            out[o0 + i] = _requant_value(np.int64(acc[a0 + i]), n, mode, bias_f, bias_q, mult32, mult64, y_zp, lo,
                                         hi)
    else:
        bq = bias_q[n]
        mu = mult64[n]
        for i in range(L):
            t = np.rint(np.float64(np.int64(acc[a0 + i]) + bq) * mu) + y_zp
            out[o0 + i] = np.uint8(min(max(t, lo), hin))


@njit(cache=True, inline="always")
def _requant_lanes(acc, n0, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out):
    """:func:`_requant_row` with the channel running along the row: acc[i] (int32) is an accumulator of
    output channel n0 + i (the int8 SIMD GEMM's linear layout, lanes = channels). Same formulas, per-lane
    constants (sliced first, so that each loop is a straight sweep); the modes without a float32 sweep here
    go through :func:`_requant_value`."""
    L = acc.shape[0]
    zf = np.float32(y_zp)
    lof = np.float32(lo)
    bf = bias_f[n0:n0 + L]
    m0 = mult32[0, n0:n0 + L]
    m1 = mult32[1, n0:n0 + L]
    m2 = mult32[2, n0:n0 + L]
    h = hi[n0:n0 + L].astype(np.float32)
    if mode == 0:
        for i in range(L):
            f = np.float32(np.float32(acc[i]) + bf[i])
            t = np.float32(np.rint(np.float32(f * m0[i]))) + zf
            out[i] = np.uint8(min(max(t, lof), h[i]))
    elif mode == 1:
        for i in range(L):
            f = _fma32(bf[i], m1[i], np.float32(acc[i]))
            t = np.float32(np.rint(np.float32(f * m0[i]))) + zf
            out[i] = np.uint8(min(max(t, lof), h[i]))
    elif mode == 2:
        bq = bias_q[n0:n0 + L].astype(np.int32)
        for i in range(L):
            t = np.float32(np.rint(np.float32(np.float32(acc[i] + bq[i]) * m0[i]))) + zf
            out[i] = np.uint8(min(max(t, lof), h[i]))
    elif mode == 4:
        for i in range(L):
            v = np.float32(np.float32(np.float32(np.float32(acc[i]) * m1[i]) * m0[i]) + bf[i])
            t = np.float32(np.rint(np.float32(np.float32(v * m2[i]) + zf)))
            out[i] = np.uint8(min(max(t, lof), h[i]))
    else:
        for i in range(L):
            out[i] = _requant_value(np.int64(acc[i]), n0 + i, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi)


@njit(cache=True)
def _finish_requant_cols_kernel(raw, m_sum, col_adj, w_zp, a_zp, mode, bias_f, bias_q, mult32, mult64, y_zp,
                                lo, hi, out3):
    """Column-layout twin of ``_finish_requant_kernel``: raw (N, M) with m = b·P + p → out3[b, n, p]."""
    N, M = raw.shape
    n_img, _, P = out3.shape
    acc = np.empty(P, np.int32)
    for n in range(N):
        cterm = np.int32(a_zp * col_adj[n])
        zw = np.int32(w_zp[n])
        for b in range(n_img):
            r = raw[n, b * P:(b + 1) * P]
            for p in range(P):
                acc[p] = np.int32(r[p]) - cterm
            if zw != 0:
                for p in range(P):
                    acc[p] -= zw * np.int32(m_sum[b * P + p])
            _requant_row(acc, n, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out3[b, n])


def finish_requantize_cols(raw, m_sum, col_adj, w_zp, a_zp, st: OutputStage, out3):
    """Column-layout :func:`finish_requantize`: raw (N, M) → out3 (batch, N, P)."""
    if m_sum is None:
        m_sum = np.zeros(raw.shape[1], np.int64)
    _finish_requant_cols_kernel(raw, m_sum, col_adj, w_zp, np.int64(a_zp), st.mode, st.bias_f, st.bias_q,
                                st.mult32, st.mult64, np.float64(st.y_zp), np.float64(st.lo), st.hi,
                                out3)
    return out3


def finish_requantize(raw, row_sum, col_adj, w_zp, a_zp, st: OutputStage, out3):
    """Fast fused zero-point correction + requantization of an exact raw product Σ a·w (float32/float64
    holding integers) into ``out3`` (see ``_finish_requant_kernel``)."""
    _finish_requant_kernel(raw, row_sum, col_adj, w_zp, np.int64(a_zp), st.mode, st.bias_f,
                           st.bias_q, st.mult32, st.mult64, np.float64(st.y_zp), np.float64(st.lo),
                           st.hi, out3)
    return out3
