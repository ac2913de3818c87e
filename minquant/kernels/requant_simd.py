"""The output stage of :mod:`.requantize` on 16 lanes at once (docs/quantization.md, step 7).

The same formulas as :func:`~minquant.kernels.requantize._requant_span`, written as one LLVM vector
expression per 16 accumulators of one output channel (a 512-bit register: ``<16 x i32>`` in, 16 codes
out). Numba's own loop vectoriser picks 256-bit vectors on this CPU and re-derives the clamp and the
narrowing to bytes per loop; spelled out here, every step is one instruction on 16 lanes:

    acc = raw − sub                      vpsubd       (the zero-point term of step 4, per channel)
    mode 0  f32(f32(acc) + b) · M        vcvtdq2ps, vaddps, vmulps          fbgemm, per-channel
    mode 1  fma(b, 1/s_xw, f32(acc)) · M vcvtdq2ps, vfmadd, vmulps          fbgemm, per-tensor
    mode 2  f32(acc + b_q) · M           vpaddd, vcvtdq2ps, vmulps          qnnpack / ONNX Runtime
    mode 4  f32(f32(f32(acc)·a_x)·a_w) + b, then ·m_y + z_y                 oneDNN
    then    rint (vrndscaleps, ties to even), + z_y, clamp to [lo, hi] (vmaxps, vminps), → int32
            (vcvttps2dq), → bytes (vpmovdb) — the clamp makes the narrowing exact.

Only generic LLVM vector instructions are used (no x86 intrinsic), so the code compiles on any CPU: on an
AVX2 host LLVM splits each 512-bit operation in two 256-bit ones. The other output stages (float64 and
LiteRT's fixed-point modes) stay on the scalar path. One difference of formulation, none of result: mode 2
adds b_q to the accumulator in int32, where the scalar path adds in int64 — they differ only if the sum
leaves int32, where the framework's own int32 accumulator would have wrapped.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import _byte_ptr, i32x16, load16

__all__ = ["VECTOR_MODES", "requant16", "store_codes16", "requant_row16", "taps9_16", "taps9_lanes16", "widen16", "requant16_lanes",
           "lane_constants", "round_bound"]

#: the output-stage modes (:mod:`.requantize`) that have a 16-lane form here
VECTOR_MODES = (0, 1, 2, 4)

_F16 = ir.VectorType(ir.FloatType(), 16)
_I16 = ir.VectorType(ir.IntType(32), 16)


def _splat(builder, x, vty):
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), ir.Constant(_I16, None))


def _vcall(builder, name, args):
    """Call the LLVM intrinsic ``name`` on <16 x float> operands (``llvm.rint.v16f32`` …)."""
    fnty = ir.FunctionType(_F16, [_F16] * len(args))
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"{name}.v16f32")
    return builder.call(fn, args)


def _emit_stage(builder, mode_v, a, BQ, M0, M1, M2, BF, ZF, LO, HI, int_round=False):
    """The output stage of <16 x i32> accumulators ``a`` with per-lane constants (module docstring): all four
    float32 forms, one selected by ``mode_v`` (an i64; constant in every caller, so LLVM keeps one).

    ``int_round`` (a caller that knows every value to round stays below 2^30 in magnitude): round and convert
    in one step, ``lrint`` (vcvtps2dq, ties to even like rint), then add z and clamp as integers — the same
    codes: ``rint(v) + z`` is the integer ``lrint(v) + z`` (exactly, or, beyond 2^24, far outside [lo, hi]
    either way), and the clamp commutes with the conversion. Two instructions fewer."""
    if int_round:
        return _emit_stage_int(builder, mode_v, a, BQ, M0, M1, M2, BF, ZF, LO, HI)
    af = builder.sitofp(a, _F16)
    # mode 0: rint(f32(f32(acc) + b) · M) + z
    t0 = builder.fadd(_vcall(builder, "llvm.rint", [builder.fmul(builder.fadd(af, BF), M0)]), ZF)
    # mode 1: rint(fma(b, 1/s_xw, f32(acc)) · M) + z
    t1 = builder.fadd(_vcall(builder, "llvm.rint", [builder.fmul(_vcall(builder, "llvm.fma", [BF, M1, af]), M0)]), ZF)
    # mode 2: rint(f32(acc + b_q) · M) + z
    aq = builder.sitofp(builder.add(a, BQ), _F16)
    t2 = builder.fadd(_vcall(builder, "llvm.rint", [builder.fmul(aq, M0)]), ZF)
    # mode 4: rint(f32(f32(f32(f32(acc)·a_x)·a_w) + b)·m_y + z)
    v4 = builder.fadd(builder.fmul(builder.fmul(af, M1), M0), BF)
    t4 = _vcall(builder, "llvm.rint", [builder.fadd(builder.fmul(v4, M2), ZF)])
    i64 = ir.IntType(64)
    t = builder.select(builder.icmp_signed("==", mode_v, ir.Constant(i64, 0)), t0,
                       builder.select(builder.icmp_signed("==", mode_v, ir.Constant(i64, 1)), t1,
                                      builder.select(builder.icmp_signed("==", mode_v, ir.Constant(i64, 2)), t2, t4)))
    # the clamp as compare-and-select: no NaN can occur here, and unlike llvm.minnum / maxnum (which must
    # return the other operand for a NaN) it is one vmaxps / vminps each
    t = builder.select(builder.fcmp_ordered("<", t, LO), LO, t)
    t = builder.select(builder.fcmp_ordered(">", t, HI), HI, t)
    return builder.fptosi(t, _I16)


def _emit_stage_int(builder, mode_v, a, BQ, M0, M1, M2, BF, ZF, LO, HI):
    """:func:`_emit_stage` with ``int_round``: the value before rounding per mode, then lrint and integer
    clamps (vcvtps2dq, vpaddd, vpmaxsd, vpminsd)."""
    af = builder.sitofp(a, _F16)
    f0 = builder.fmul(builder.fadd(af, BF), M0)
    f1 = builder.fmul(_vcall(builder, "llvm.fma", [BF, M1, af]), M0)
    f2 = builder.fmul(builder.sitofp(builder.add(a, BQ), _F16), M0)
    v4 = builder.fadd(builder.fmul(builder.fmul(af, M1), M0), BF)
    f4 = builder.fadd(builder.fmul(v4, M2), ZF)          # oneDNN adds z before rounding
    i64 = ir.IntType(64)
    f = builder.select(builder.icmp_signed("==", mode_v, ir.Constant(i64, 0)), f0,
                       builder.select(builder.icmp_signed("==", mode_v, ir.Constant(i64, 1)), f1,
                                      builder.select(builder.icmp_signed("==", mode_v, ir.Constant(i64, 2)), f2, f4)))
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I16, [_F16]), "llvm.lrint.v16i32.v16f32")
    t = builder.call(fn, [f])
    z = builder.select(builder.icmp_signed("==", mode_v, ir.Constant(i64, 4)), ir.Constant(_I16, None),
                       builder.fptosi(ZF, _I16))
    t = builder.add(t, z)
    lo, hi = builder.fptosi(LO, _I16), builder.fptosi(HI, _I16)
    t = builder.select(builder.icmp_signed("<", t, lo), lo, t)
    return builder.select(builder.icmp_signed(">", t, hi), hi, t)


@intrinsic
def requant16(typingctx, mode, acc, sub, bq, m0, m1, m2, bf, zf, lo, hi):
    """16 codes (int32 lanes, each in [lo, hi]) of output channel constants (bq, m0, m1, m2, bf) from 16
    accumulators ``acc − sub``: output-stage ``mode`` (module docstring). All four forms are emitted and one
    selected; called with a constant mode (as :func:`requant_row16` does), LLVM keeps only that one.
    ``m0, m1, m2`` are the stage's ``mult32[0..2, n]``; ``zf, lo, hi`` are z_y and the clamp as float32."""
    if acc != i32x16:
        return None
    sig = i32x16(types.int64, i32x16, types.int32, types.int32, types.float32, types.float32, types.float32,
                 types.float32, types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        mode_v, a, sub_v, bq_v, m0_v, m1_v, m2_v, bf_v, zf_v, lo_v, hi_v = args
        a = builder.sub(a, _splat(builder, sub_v, _I16))
        M0, M1, M2, BF = (_splat(builder, v, _F16) for v in (m0_v, m1_v, m2_v, bf_v))
        return _emit_stage(builder, mode_v, a, _splat(builder, bq_v, _I16), M0, M1, M2, BF,
                           _splat(builder, zf_v, _F16), _splat(builder, lo_v, _F16), _splat(builder, hi_v, _F16))
    return sig, codegen


@intrinsic
def store_codes16(typingctx, arr, offset, v):
    """Write the 16 int32 lanes of ``v`` (codes in [0, 255]) as 16 bytes at ``arr``'s data + ``offset``
    (vpmovdb)."""
    if not isinstance(arr, types.Array) or v != i32x16:
        return None

    def codegen(context, builder, sig, args):
        p = _byte_ptr(context, builder, sig.args[0], args[0], args[1])
        b = builder.trunc(args[2], ir.VectorType(ir.IntType(8), 16))
        st = builder.store(b, builder.bitcast(p, b.type.as_pointer()))
        st.align = 1
        return context.get_dummy_value()
    return types.none(arr, offset, i32x16), codegen


@njit(cache=True, inline="always")
def requant_row16(C, c0, L, sub, n, mode, bias_f, bias_q, mult32, y_zp, lo, hi, out, o0, tail):
    """out's bytes o0 .. o0 + L − 1 = the output stage (``mode`` in :data:`VECTOR_MODES`) of output channel n
    applied to the int32 accumulators at C's bytes c0, c0 + 4, … minus ``sub``. Reads whole 16-lane chunks —
    the caller pads C so that the last chunk stays inside it; the last partial chunk goes through ``tail``
    (16 bytes). One loop per mode, so that LLVM folds the mode selection of :func:`requant16` away."""
    bq = np.int32(bias_q[n])
    m0, m1, m2, bf = mult32[0, n], mult32[1, n], mult32[2, n], bias_f[n]
    zf, lof, hif = np.float32(y_zp), np.float32(lo), np.float32(hi[n])
    sub = np.int32(sub)
    full = L // 16 * 16
    if mode == 0:
        for l in range(0, full, 16):
            store_codes16(out, o0 + l, requant16(0, load16(C, c0 + 4 * l), sub, bq, m0, m1, m2, bf, zf, lof, hif))
    elif mode == 1:
        for l in range(0, full, 16):
            store_codes16(out, o0 + l, requant16(1, load16(C, c0 + 4 * l), sub, bq, m0, m1, m2, bf, zf, lof, hif))
    elif mode == 2:
        for l in range(0, full, 16):
            store_codes16(out, o0 + l, requant16(2, load16(C, c0 + 4 * l), sub, bq, m0, m1, m2, bf, zf, lof, hif))
    else:
        for l in range(0, full, 16):
            store_codes16(out, o0 + l, requant16(4, load16(C, c0 + 4 * l), sub, bq, m0, m1, m2, bf, zf, lof, hif))
    if full < L:
        store_codes16(tail, 0, requant16(mode, load16(C, c0 + 4 * full), sub, bq, m0, m1, m2, bf, zf, lof, hif))
        of = out.reshape(out.size)
        for i in range(L - full):
            of[o0 + full + i] = tail[i]


# ------------------------------------------------------------------------------------- depthwise helpers
def _load_f16(context, builder, arr_ty, arr, elem, invariant=False):
    """<16 x float> at float32 array ``arr`` element ``elem`` (unaligned); ``invariant``: the array does not
    change while the function runs (LLVM may then reuse the load across stores to other arrays)."""
    p = _byte_ptr(context, builder, arr_ty, arr, builder.mul(elem, ir.Constant(ir.IntType(64), 4)))
    v = builder.load(builder.bitcast(p, _F16.as_pointer()))
    v.align = 1
    if invariant:
        v.set_metadata("invariant.load", builder.module.add_metadata([]))
    return v


def _nine_taps(builder, s, W, lo_v, hi_v, cp):
    """IR of ``Σ_pairs clamp(s_t·W_t + s_t+1·W_t+1)`` over the taps (0,1) (2,3) (4,5) (6,7) (8), 16 float32 lanes:
    each pair one multiply and one fused multiply-add (exact: integers below 2^24), clamped to [lo, hi] when
    ``cp`` (fbgemm's int16 pair saturation), the pairs added in order."""
    LO, HI = _splat(builder, lo_v, _F16), _splat(builder, hi_v, _F16)
    acc = None
    for t in range(0, 9, 2):
        p = builder.fmul(s[t], W[t])
        if t + 1 < 9:
            p = _vcall(builder, "llvm.fma", [s[t + 1], W[t + 1], p])
            clamped = _vcall(builder, "llvm.minnum", [_vcall(builder, "llvm.maxnum", [p, LO]), HI])
            p = builder.select(cp, clamped, p)
        acc = p if acc is None else builder.fadd(acc, p)
    return acc


@intrinsic
def taps9_16(typingctx, flat, i, offs, w, cterm, sat_lo, sat_hi, clamp_pairs):
    """16 int32 lanes ``Σ_pairs clamp(w_t·flat[o_t + i + l] + w_t+1·flat[o_t+1 + i + l]) − cterm`` (l < 16) of a
    3×3 depthwise channel: ``offs`` the nine plane offsets (a UniTuple of int64), ``w`` the nine taps (a
    UniTuple of float32), pairs (0,1) (2,3) (4,5) (6,7) (8) clamped to [sat_lo, sat_hi] when ``clamp_pairs``.
    All float32 on exact integers (:func:`~minquant.kernels.conv._depthwise_kernel`): vfmadd on 16 lanes."""
    if not (isinstance(flat, types.Array) and isinstance(offs, types.UniTuple) and isinstance(w, types.UniTuple)
            and offs.count == 9 and w.count == 9):
        return None
    sig = i32x16(flat, types.int64, offs, w, types.float32, types.float32, types.float32, types.boolean)

    def codegen(context, builder, signature, args):
        arr, iv, ov, wv, ct, lo_v, hi_v, cp = args
        s = [_load_f16(context, builder, signature.args[0], arr, builder.add(builder.extract_value(ov, t), iv))
             for t in range(9)]
        W = [_splat(builder, builder.extract_value(wv, t), _F16) for t in range(9)]
        acc = _nine_taps(builder, s, W, lo_v, hi_v, cp)
        acc = builder.fsub(acc, _splat(builder, ct, _F16))
        return builder.fptosi(acc, _I16)
    return sig, codegen


@intrinsic
def widen16(typingctx, dst, d0, src, s0):
    """dst[d0 .. d0 + 15] (float32) = src[s0 .. s0 + 15] (uint8): vpmovzxbd + vcvtdq2ps."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)):
        return None
    sig = types.none(dst, types.int64, src, types.int64)

    def codegen(context, builder, signature, args):
        d, di, sa, si = args
        p = _byte_ptr(context, builder, signature.args[2], sa, si)
        b = builder.load(builder.bitcast(p, ir.VectorType(ir.IntType(8), 16).as_pointer()))
        b.align = 1
        f = builder.uitofp(b, _F16)
        q = _byte_ptr(context, builder, signature.args[0], d, builder.mul(di, ir.Constant(ir.IntType(64), 4)))
        st = builder.store(f, builder.bitcast(q, _F16.as_pointer()))
        st.align = 1
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def taps9_lanes16(typingctx, xp, offs, wt, c, ct, sat_lo, sat_hi, clamp_pairs):
    """The channels-last form of :func:`taps9_16`: 16 int32 lanes = channels c .. c + 15 of one output pixel,
    ``Σ_pairs clamp(wt[t, c+l]·xp[o_t + c + l] + wt[t+1, c+l]·xp[o_t+1 + c + l]) − ct[c + l]`` — ``offs`` the
    nine input offsets (UniTuple of int64) in the float32 channels-last padded image ``xp``, ``wt`` the
    (9 or 10, C) float32 tap rows, ``ct`` the int32 zero-point terms. vfmadd on 16 channels."""
    if not (isinstance(xp, types.Array) and isinstance(wt, types.Array) and isinstance(ct, types.Array)
            and isinstance(offs, types.UniTuple) and offs.count == 9):
        return None
    sig = i32x16(xp, offs, wt, types.int64, ct, types.float32, types.float32, types.boolean)

    def codegen(context, builder, signature, args):
        arr, ov, wa, cv, cta, lo_v, hi_v, cp = args
        wary = context.make_array(signature.args[2])(context, builder, wa)
        C = builder.extract_value(wary.shape, 1)
        s = [_load_f16(context, builder, signature.args[0], arr, builder.add(builder.extract_value(ov, t), cv))
             for t in range(9)]
        W = [_load_f16(context, builder, signature.args[2], wa, builder.add(builder.mul(C, ir.Constant(C.type, t)), cv))
             for t in range(9)]
        acc = _nine_taps(builder, s, W, lo_v, hi_v, cp)
        q = _byte_ptr(context, builder, signature.args[4], cta, builder.mul(cv, ir.Constant(ir.IntType(64), 4)))
        ctv = builder.load(builder.bitcast(q, _I16.as_pointer()))
        ctv.align = 1
        return builder.sub(builder.fptosi(acc, _I16), ctv)
    return sig, codegen


@intrinsic
def requant16_lanes(typingctx, mode, acc, consts, bq, c, zf, lo):
    """:func:`requant16` with the channel along the lanes: lane l of ``acc`` belongs to output channel c + l,
    whose constants are ``consts[0..4, c + l]`` = (M, aux, aux2, b, hi) as float32 and ``bq[c + l]`` (int32)
    — the arrays of :func:`lane_constants`."""
    if acc != i32x16 or not isinstance(consts, types.Array) or not isinstance(bq, types.Array):
        return None
    sig = i32x16(types.int64, i32x16, consts, bq, types.int64, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        mode_v, a, ca, bqa, cv, zf_v, lo_v = args
        return stage_lanes16(context, builder, signature.args[2], ca, signature.args[3], bqa, cv, mode_v, a, zf_v, lo_v)
    return sig, codegen


def stage_lanes16(context, builder, consts_ty, ca, bq_ty, bqa, cv, mode_v, a, zf_v, lo_v, invariant=False,
                  int_round=False):
    """The IR of :func:`requant16_lanes` (for intrinsics that build on it): <16 x i32> codes of accumulators
    ``a`` whose lane l belongs to output channel cv + l (``invariant``: :func:`_load_f16`; ``int_round``:
    :func:`_emit_stage`)."""
    cary = context.make_array(consts_ty)(context, builder, ca)
    W = builder.extract_value(cary.shape, 1)
    M0, M1, M2, BF, HI = (_load_f16(context, builder, consts_ty, ca,
                                    builder.add(builder.mul(W, ir.Constant(W.type, r)), cv), invariant)
                          for r in range(5))
    q = _byte_ptr(context, builder, bq_ty, bqa, builder.mul(cv, ir.Constant(ir.IntType(64), 4)))
    BQ = builder.load(builder.bitcast(q, _I16.as_pointer()))
    BQ.align = 1
    if invariant:
        BQ.set_metadata("invariant.load", builder.module.add_metadata([]))
    return _emit_stage(builder, mode_v, a, BQ, M0, M1, M2, BF, _splat(builder, zf_v, _F16),
                       _splat(builder, lo_v, _F16), HI, int_round)


def round_bound(stage, acc_bound: float) -> float:
    """A bound on |value before rounding| of the float32 output stage ``stage`` for any accumulator |acc| ≤
    ``acc_bound``, with 1 % to spare for float32 roundings: below 2^30 a kernel may round with lrint and clamp
    as integers (``int_round`` of :func:`_emit_stage`)."""
    a = float(acc_bound)
    m0, m1, m2 = (np.abs(stage.mult32[r].astype(np.float64)) for r in range(3))
    bf, bq = np.abs(stage.bias_f.astype(np.float64)), np.abs(stage.bias_q.astype(np.float64))
    if stage.mode == 0:
        v = (a + bf) * m0
    elif stage.mode == 1:
        v = (a + bf * m1) * m0
    elif stage.mode == 2:
        v = (a + bq) * m0
    else:
        v = (a * m1 * m0 + bf) * m2 + 255
    return 1.01 * float(v.max()) if v.size else 0.0


def lane_constants(st, n):
    """(consts (5, n + 16) float32, bq (n + 16,) int32): an output stage's per-channel constants laid out for
    :func:`requant16_lanes` (16 spare lanes, so that a last partial chunk reads inside)."""
    consts = np.zeros((5, n + 16), np.float32)
    consts[:3, :n] = st.mult32
    consts[3, :n] = st.bias_f
    consts[4, :n] = st.hi
    bq = np.zeros(n + 16, np.int32)
    bq[:n] = st.bias_q
    return consts, bq
