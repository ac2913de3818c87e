"""Depthwise 3×3 convolution, channels-last in and out, on integer SIMD (docs/quantization.md, steps 4, 7-9).

One output channel per input channel (groups = C), a 3×3 kernel, stride 1 or 2, dilation 1, any padding.
With x (N, H, W, C) uint8 codes, w (C, 1, 3, 3) int8 and taps t = 3·i + j in (kh, kw) order, output pixel
(y, x), channel c accumulates

    acc = Σ_t (x_t − z_x)(w_t − z_w)        x_t = x[y·s + i − p, x·s + j − p, c]  (z_x outside the image)

exactly (ONNX Runtime, oneDNN) — or, where the target's depthwise kernel saturates (fbgemm on every CPU,
step 8), the raw product taken in *pairs of taps* (0,1) (2,3) (4,5) (6,7) (8), each pair clamped to int16:

    raw = Σ_pairs clamp(x_t·w_t + x_t+1·w_t+1, −32768, 32767),  acc = raw − z_x·Σw − z_w·Σx_t + 9·z_x·z_w.

How it runs (JIT on, an AVX2 CPU or better). The channels sit along the 16 lanes of a vector (16 channels
of one output pixel per step); the target decides the arithmetic, the host the instructions, and the
integers never depend on which instructions ran:

* exact, weights w − z_w within int8, AVX512-VNNI: one kernel *column* j at a time — the three rows' codes
  interleaved per channel as the bytes 0-2 of each 32-bit lane (byte 3 zero; a ``vpermt2b``), one
  ``vpdpbusd`` with the column's weights in the same layout: Σ_i x(i, j)·w(i, j), exact int32. Three
  ``vpdpbusd`` per 16 outputs.
* fbgemm's pairs (a saturating target), AVX-512BW or VNNI: taps 0-3 and 4-7 interleaved per channel,
  ``vpmaddubsw`` — the int16-saturated pair sums (0,1) (2,3) / (4,5) (6,7), *the* instruction fbgemm's own
  kernel uses — then ``vpdpwssd`` (or ``vpmaddwd`` + ``vpaddd``) with ones adds a lane's two pairs exactly;
  tap 8 alone.
* otherwise (AVX2, weight zero points that leave int8, a saturating target with weight zero points): every
  product as the int32 product of two int16-range values (a widened code, a weight), which LLVM turns into
  ``vpmaddwd`` (``vpdpwssd`` on VNNI), the pairs clamped with ``vpmaxsd`` / ``vpminsd`` where the target
  saturates. Exact int32 like ONNX Runtime's MLAS kernel (channels-last, int16-widened products).

* Loop order: output rows outside, then blocks of 16 channels, then the pixels of the row — the weight
  vectors, the zero-point term and the output stage's per-channel constants are loaded once per (row,
  block) and stay in registers, and the three input rows stay in the L1 cache across the blocks.
* Four output pixels of one row per step (:func:`_make_strip`): each input column is loaded (and widened or
  interleaved) once and feeds the (up to three) outputs that see it — at stride 1, six columns for four
  outputs instead of twelve.
* Padding costs nothing in the inner loop: a tap outside the image reads a row of z_x codes (the
  ``zrow`` of C + 16 bytes) through the same address arithmetic — the *indirection* of MLAS's kernel,
  without a buffer: an input row outside the image is that row with column pitch 0, and the pixels whose
  columns leave the image (the left and right edges) go one by one with nine addresses (:func:`_make_one`).
* The output stage of :mod:`.requant_simd` (the float32 modes 0, 1, 2, 4) in registers, 16 codes stored
  per pixel; the other modes (float64, LiteRT's fixed point) store the int32 accumulators and run the
  scalar stage (:func:`~minquant.kernels.requantize._requant_lanes`).
* A saturating target costs the pair clamps only in the 16-channel blocks where a pair *can* reach the
  int16 limits (255·(w_t⁺ + w_t+1⁺) > 32767 or 255·(w_t⁻ + w_t+1⁻) > 32768, found when packing); elsewhere
  the exact code gives the same integers.
* A channel count that is not a multiple of 16 ends with one masked block (masked loads and stores).

The x86 intrinsics (``vpdpbusd``, ``vpmaddubsw``, ``vpdpwssd``) are emitted only into kernels whose
:class:`DwKind` says the host has them (a kernel with an instruction the CPU lacks aborts the process,
:mod:`.simd`); the rest is generic LLVM vector IR, which compiles on any CPU. Without JIT (or without
AVX2) :func:`depthwise3x3_nhwc_numpy` runs — NumPy, the same formulas on whole arrays. The oracle of the
tests is :func:`~minquant.kernels.conv.qconv2d_reference`.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import NativeValue, intrinsic, models, register_model, typeof_impl, unbox

from ..im2col import conv_out_size
from .checks import check_conv_args
from .requant_simd import VECTOR_MODES, _emit_stage, lane_constants, round_bound
from .requantize import _requant_lanes, output_stage, requantize_reference
from .simd import (ISA_AVX2, ISA_AVX512BW, ISA_AVX512VNNI, ISA_NONE, _byte_ptr, _call, _emit_dpbusd, _emit_dpwssd_ones,
                   _emit_maddubs, _emit_maddwd_ones, host_isa, i32x16, load16)

__all__ = ["Depthwise3x3NHWC", "depthwise3x3_nhwc", "depthwise3x3_nhwc_numpy"]

INT16_MIN, INT16_MAX = -32768, 32767
_STRIP = 4           # output pixels per step of the interior loop

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V32 = ir.VectorType(_I32, 16)
_V16 = ir.VectorType(ir.IntType(16), 16)
_V8 = ir.VectorType(ir.IntType(8), 16)
_F16 = ir.VectorType(ir.FloatType(), 16)
_M16 = ir.VectorType(ir.IntType(1), 16)


# ------------------------------------------------------------------------------------ the kernel's kind
class DwKind:
    """What one compiled depthwise kernel does, carried by its Numba *type* (one machine code per kind,
    like :class:`~minquant.kernels.simd.MacKind`): the output-stage ``mode`` (one of
    :data:`~minquant.kernels.requant_simd.VECTOR_MODES`, or −1: store the int32 accumulators), whether
    pairs may be clamped (``clamp``: a saturating target with risky blocks) and whether the weight zero
    points need their own term (``wzp``: only with ``clamp``; the exact kernels fold z_w into the taps), and
    whether the multiply-adds may use ``vpdpwssd`` (``vnni``: only on an AVX512-VNNI host — a kernel with an
    instruction the CPU lacks would abort the process, :mod:`.simd`)."""

    def __init__(self, mode: int, clamp: bool, wzp: bool, isa: int, quad: bool, int_round: bool = False,
                 bq_folded: bool = False):
        if mode not in VECTOR_MODES + (-1,):
            raise ValueError(f"no 16-lane depthwise kernel for output-stage mode {mode}")
        self.mode, self.clamp, self.wzp, self.int_round = int(mode), bool(clamp), bool(wzp), bool(int_round)
        self.bq_folded = bool(bq_folded)
        self.vnni = isa >= ISA_AVX512VNNI
        self.quad = bool(quad) and self.vnni
        self.pairs4 = self.clamp and not self.wzp and isa >= ISA_AVX512BW
        # the Numba type, read by the dispatcher's C code itself (``_numba_type_``): no call back into Python's
        # typeof at every call (:class:`~minquant.kernels.simd.MacKind`)
        self._numba_type_ = DwKindType(self.mode, self.clamp, self.wzp, self.vnni, self.quad, self.pairs4,
                                       self.int_round, self.bq_folded)

    def __repr__(self):
        return (f"DwKind({self.mode}, {self.clamp}, {self.wzp}, vnni={self.vnni}, quad={self.quad}, "
                f"pairs4={self.pairs4}, int_round={self.int_round}, bq_folded={self.bq_folded})")


class DwKindType(types.Type):
    def __init__(self, mode, clamp, wzp, vnni, quad, pairs4, int_round, bq_folded):
        self.mode, self.clamp, self.wzp, self.vnni, self.quad, self.pairs4 = mode, clamp, wzp, vnni, quad, pairs4
        self.int_round, self.bq_folded = int_round, bq_folded
        super().__init__(name=f"DwKind({mode},{int(clamp)},{int(wzp)},{int(vnni)},{int(quad)},{int(pairs4)},"
                              f"{int(int_round)},{int(bq_folded)})")


@typeof_impl.register(DwKind)
def _typeof_dw_kind(val, c):
    return val._numba_type_


register_model(DwKindType)(models.OpaqueModel)


@unbox(DwKindType)
def _unbox_dw_kind(typ, obj, c):
    return NativeValue(c.context.get_constant_null(types.voidptr))


# ------------------------------------------------------------------------------------------ IR pieces
def _splat_i32(builder, v):
    x = builder.insert_element(ir.Constant(_V32, ir.Undefined), v, ir.Constant(_I32, 0))
    return builder.shuffle_vector(x, ir.Constant(_V32, ir.Undefined), ir.Constant(_V32, None))


def _lane_mask(builder, rem):
    """<16 x i1>: lane l < rem (rem an i64)."""
    r = builder.trunc(rem, _I32)
    return builder.icmp_signed("<", ir.Constant(_V32, list(range(16))), _splat_i32(builder, r))


def _masked_load(builder, ptr, mask, vty):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [ptr.type, _I32, mask.type, vty]),
                                        f"llvm.masked.load.v{vty.count}i{vty.element.width}.p0")
    return builder.call(fn, [ptr, ir.Constant(_I32, 1), mask, ir.Constant(vty, None)])


def _masked_store(builder, val, ptr, mask):
    fn = cgutils.get_or_insert_function(builder.module,
                                        ir.FunctionType(ir.VoidType(), [val.type, ptr.type, _I32, mask.type]),
                                        f"llvm.masked.store.v{val.type.count}i{val.type.element.width}.p0")
    builder.call(fn, [val, ptr, ir.Constant(_I32, 1), mask])


def _load_codes(builder, addr, mask):
    """16 uint8 codes at byte address ``addr`` (an i64), widened to int32 lanes (vpmovzxbd)."""
    p = builder.inttoptr(addr, _V8.as_pointer())
    if mask is None:
        v = builder.load(p)
        v.align = 1
    else:
        v = _masked_load(builder, p, mask, _V8)
    return builder.zext(v, _V32)


def _load_bytes(builder, addr, mask):
    """16 uint8 codes at byte address ``addr`` (an i64), as <16 x i8>."""
    p = builder.inttoptr(addr, _V8.as_pointer())
    if mask is None:
        v = builder.load(p)
        v.align = 1
        return v
    return _masked_load(builder, p, mask, _V8)


def _quad(builder, rows):
    """Three or four vectors of 16 codes interleaved per channel: byte 4c + i = rows[i][c] (byte 4c + 3 = 0
    for three) — channel c's four bytes in lane c, the operand layout of ``vpdpbusd`` and ``vpmaddubsw``.
    Generic shuffles (a ``vpermt2b`` on a CPU with AVX512-VBMI)."""
    z = ir.Constant(_V8, None)
    a = builder.shuffle_vector(rows[0], rows[1], ir.Constant(ir.VectorType(_I32, 32), list(range(32))))
    b = builder.shuffle_vector(rows[2], rows[3] if len(rows) > 3 else z,
                               ir.Constant(ir.VectorType(_I32, 32), list(range(32))))
    mask = []
    for c in range(16):
        mask += [c, 16 + c, 32 + c, 48 + c]
    q = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, 64), mask))
    return builder.bitcast(q, _V32)


def _as_i16(builder, w):
    """A weight vector known to fit in int16, said so to LLVM (sext of a trunc): the products of such
    values become ``vpmaddwd`` instead of ``vpmulld``."""
    return builder.sext(builder.trunc(w, _V16), _V32)


def _mul(builder, x, w):
    return builder.mul(x, w, flags=["nsw"])


def _mul_add(builder, kind, acc, x, w):
    """acc + x·w on int32 lanes holding int16 values (x a widened code: its upper 16 bits are 0): generic IR,
    which LLVM makes ``vpmaddwd`` + ``vpaddd``; on an AVX512-VNNI kind the one instruction ``vpdpwssd``
    (``acc + x_lo·w_lo + x_hi·w_hi`` with x_hi = 0), which LLVM does not form by itself here."""
    if kind.vnni:
        return _call(builder, "llvm.x86.avx512.vpdpwssd.512", _V32, [acc, x, w])
    return builder.add(acc, _mul(builder, x, w))


def _clamp16(builder, p):
    """max(min(p, 32767), −32768) on int32 lanes (vpmaxsd, vpminsd)."""
    lo, hi = ir.Constant(_V32, [INT16_MIN] * 16), ir.Constant(_V32, [INT16_MAX] * 16)
    p = builder.select(builder.icmp_signed("<", p, lo), lo, p)
    return builder.select(builder.icmp_signed(">", p, hi), hi, p)


def _emit_pixel_sums(builder, kind, clamp, X, W, WZ, acc0):
    """The accumulator of one output pixel from its nine input vectors ``X[t]`` (int32 lanes of codes):
    exact (any order: ``acc0 + Σ x_t·w_t``), or with ``clamp`` the pairs (0,1) (2,3) (4,5) (6,7) (8) each
    clamped to int16, plus ``Σ x_t·(−z_w)`` when the kind keeps a separate weight-zero-point term."""
    acc = acc0
    if clamp:
        zero = ir.Constant(_V32, None)
        for t in range(0, 8, 2):
            p = _mul_add(builder, kind, _mul_add(builder, kind, zero, X[t], W[t]), X[t + 1], W[t + 1])
            acc = builder.add(acc, _clamp16(builder, p))
        acc = _mul_add(builder, kind, acc, X[8], W[8])
    else:
        for t in range(9):
            acc = _mul_add(builder, kind, acc, X[t], W[t])
    if kind.wzp:
        for t in range(9):
            acc = _mul_add(builder, kind, acc, X[t], WZ)
    return acc


def _emit_pairs_bw(builder, kind, B, W8, WP, acc0):
    """fbgemm's clamped pairs the way fbgemm computes them: taps (0-3) and (4-7) interleaved per channel
    (:func:`_quad`), ``vpmaddubsw`` — each int16 lane the int16-saturated sum of a pair of u8·s8 products —
    then the two pairs of a lane added exactly in int32 (``vpdpwssd`` with ones on VNNI, else ``vpmaddwd``
    with ones + ``vpaddd``); tap 8 alone (no partner: never saturates) as one int16 product. ``B`` the nine
    tap vectors of bytes, ``WP`` the two weight quads, ``W8`` tap 8's weights."""
    acc = acc0
    for g in range(2):
        h = _emit_maddubs(builder, _quad(builder, B[4 * g:4 * g + 4]), WP[g], 16)
        if kind.vnni:
            acc = _emit_dpwssd_ones(builder, acc, h)
        else:
            acc = builder.add(acc, _emit_maddwd_ones(builder, h, 16))
    return _mul_add(builder, kind, acc, builder.zext(B[8], _V32), W8)


def _emit_out(context, builder, kind, acc, S, zf, lof, out_ty, out, off, mask):
    """Write one pixel's 16 results at ``out``'s data + ``off`` elements: codes after the output stage
    (``kind.mode`` ≥ 0; ``S`` = (M0, M1, M2, B_f, HI, B_q) vectors) or the int32 accumulators (mode −1)."""
    if kind.mode < 0:
        p = _byte_ptr(context, builder, out_ty, out, builder.mul(off, ir.Constant(_I64, 4)))
        p = builder.bitcast(p, _V32.as_pointer())
        val = acc
    else:
        M0, M1, M2, BF, HI = (builder.bitcast(v, _F16) for v in S[:5])
        LO = builder.insert_element(ir.Constant(_F16, ir.Undefined), lof, ir.Constant(_I32, 0))
        LO = builder.shuffle_vector(LO, ir.Constant(_F16, ir.Undefined), ir.Constant(_V32, None))
        ZF = builder.insert_element(ir.Constant(_F16, ir.Undefined), zf, ir.Constant(_I32, 0))
        ZF = builder.shuffle_vector(ZF, ir.Constant(_F16, ir.Undefined), ir.Constant(_V32, None))
        BQ = ir.Constant(_V32, None) if kind.bq_folded else S[5]    # folded: already in the accumulator
        codes = _emit_stage(builder, ir.Constant(_I64, kind.mode), acc, BQ, M0, M1, M2, BF, ZF, LO, HI,
                            int_round=kind.int_round)
        val = builder.trunc(codes, _V8)
        p = _byte_ptr(context, builder, out_ty, out, off)
        p = builder.bitcast(p, _V8.as_pointer())
    if mask is None:
        st = builder.store(val, p)
        st.align = 1
    else:
        _masked_store(builder, val, p, mask)


def _unpack(builder, tup, n):
    return [builder.extract_value(tup, i) for i in range(n)]


def _make_one(clamp, masked):
    """An intrinsic for ONE output pixel, its nine taps at nine byte addresses (a tap outside the image points
    into the z_x row): ``one(kind, addrs, W, S, zf, lof, out, off, rem)``."""

    @intrinsic
    def one(typingctx, kind, addrs, W, S, zf, lof, out, off, rem):
        if not (isinstance(kind, DwKindType) and isinstance(addrs, types.UniTuple) and addrs.count == 9
                and isinstance(W, types.UniTuple) and W.count == 12 and isinstance(S, types.UniTuple)
                and S.count == 8 and isinstance(out, types.Array)):
            return None
        sig = types.none(kind, addrs, W, S, types.float32, types.float32, out, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            k = signature.args[0]
            _, av, wv, sv, zfv, lofv, outv, offv, remv = args
            mask = _lane_mask(builder, remv) if masked else None
            A = _unpack(builder, av, 9)
            Wa = _unpack(builder, wv, 12)
            Sl = _unpack(builder, sv, 8)
            if k.quad and not clamp:
                acc = Sl[7]
                for j in range(3):
                    q = _quad(builder, [_load_bytes(builder, A[3 * i + j], mask) for i in range(3)])
                    acc = _emit_dpbusd(builder, acc, q, Wa[9 + j])
            elif k.pairs4 and clamp:
                acc = _emit_pairs_bw(builder, k, [_load_bytes(builder, a, mask) for a in A],
                                     _as_i16(builder, Wa[8]), Wa[9:11], Sl[7])
            else:
                Wl = [_as_i16(builder, w) for w in Wa[:9]]
                X = [_load_codes(builder, a, mask) for a in A]
                acc = _emit_pixel_sums(builder, k, clamp, X, Wl, _as_i16(builder, Sl[6]), Sl[7])
            _emit_out(context, builder, k, acc, Sl, zfv, lofv, signature.args[6], outv, offv, mask)
            return context.get_dummy_value()
        return sig, codegen
    return one


def _make_strip(clamp, stride):
    """An intrinsic for ``_STRIP`` consecutive output pixels of one row, every tap inside the image (or
    in a z_x row): input row i starts at byte address ``rows[i]`` (the strip's first input column) with
    ``pitch[i]`` bytes per column (C, or 0 for the z_x row). Each input column is loaded and widened once
    (the exact kernel then adds its products to every output that sees it)."""
    nb = _STRIP

    @intrinsic
    def strip(typingctx, kind, rows, pitch, W, S, zf, lof, out, off, opitch):
        if not (isinstance(kind, DwKindType) and isinstance(rows, types.UniTuple) and rows.count == 3
                and isinstance(pitch, types.UniTuple) and pitch.count == 3 and isinstance(W, types.UniTuple)
                and W.count == 12 and isinstance(S, types.UniTuple) and S.count == 8
                and isinstance(out, types.Array)):
            return None
        sig = types.none(kind, rows, pitch, W, S, types.float32, types.float32, out, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            k = signature.args[0]
            _, rv, pv, wv, sv, zfv, lofv, outv, offv, opv = args
            R, P = _unpack(builder, rv, 3), _unpack(builder, pv, 3)
            Wa = _unpack(builder, wv, 12)
            Wl = [_as_i16(builder, w) for w in Wa[:9]]
            Sl = _unpack(builder, sv, 8)
            WZ = _as_i16(builder, Sl[6])
            cols = {}
            if k.quad and not clamp:     # one vpdpbusd per (output, kernel column): the three rows at once
                quads = {}
                for o in range(nb):
                    acc = Sl[7]
                    for j in range(3):
                        q = o * stride + j
                        if q not in quads:
                            quads[q] = _quad(builder, [_load_bytes(builder, builder.add(
                                R[i], builder.mul(P[i], ir.Constant(_I64, q))), None) for i in range(3)])
                        acc = _emit_dpbusd(builder, acc, quads[q], Wa[9 + j])
                    oo = builder.add(offv, builder.mul(opv, ir.Constant(_I64, o)))
                    _emit_out(context, builder, k, acc, Sl, zfv, lofv, signature.args[7], outv, oo, None)
                return context.get_dummy_value()
            if k.pairs4 and clamp:       # fbgemm's vpmaddubsw pairs, tap order
                loads = {}

                def byte_col(i, q):
                    if (i, q) not in loads:
                        loads[i, q] = _load_bytes(builder, builder.add(R[i], builder.mul(P[i], ir.Constant(_I64, q))),
                                                  None)
                    return loads[i, q]
                for o in range(nb):
                    B = [byte_col(t // 3, o * stride + t % 3) for t in range(9)]
                    acc = _emit_pairs_bw(builder, k, B, Wl[8], Wa[9:11], Sl[7])
                    oo = builder.add(offv, builder.mul(opv, ir.Constant(_I64, o)))
                    _emit_out(context, builder, k, acc, Sl, zfv, lofv, signature.args[7], outv, oo, None)
                return context.get_dummy_value()

            def col(i, q):   # input row i, column q of the strip, widened (once)
                if (i, q) not in cols:
                    a = builder.add(R[i], builder.mul(P[i], ir.Constant(_I64, q)))
                    cols[i, q] = _load_codes(builder, a, None)
                return cols[i, q]

            for o in range(nb):
                X = [col(t // 3, o * stride + t % 3) for t in range(9)]
                acc = _emit_pixel_sums(builder, k, clamp, X, Wl, WZ, Sl[7])
                oo = builder.add(offv, builder.mul(opv, ir.Constant(_I64, o)))
                _emit_out(context, builder, k, acc, Sl, zfv, lofv, signature.args[7], outv, oo, None)
            return context.get_dummy_value()
        return sig, codegen
    return strip


_one_exact, _one_clamp = _make_one(False, False), _make_one(True, False)
_one_exact_m, _one_clamp_m = _make_one(False, True), _make_one(True, True)
_strip1_exact, _strip1_clamp = _make_strip(False, 1), _make_strip(True, 1)
_strip2_exact, _strip2_clamp = _make_strip(False, 2), _make_strip(True, 2)


@intrinsic
def _address(typingctx, arr):
    """The byte address of ``arr``'s data, an int64."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, _I64)
    return types.int64(arr), codegen


# ------------------------------------------------------------------------------------------- the kernel
@njit(cache=True, inline="always")
def _pixel(kind, sat, rem, addrs, W, S, zf, lof, out, off):
    if rem >= 16:
        if sat:
            _one_clamp(kind, addrs, W, S, zf, lof, out, off, rem)
        else:
            _one_exact(kind, addrs, W, S, zf, lof, out, off, rem)
    elif sat:
        _one_clamp_m(kind, addrs, W, S, zf, lof, out, off, rem)
    else:
        _one_exact_m(kind, addrs, W, S, zf, lof, out, off, rem)


@njit(cache=True)
def _depthwise3x3_nhwc_kernel(kind, x, lanes, risky, zrow, sh, sw, ph, pw, zf, lof, out):
    """out[b, y, x, c] (uint8 codes, or int32 accumulators for kind.mode = −1) of a 3×3 depthwise conv of the
    channels-last uint8 ``x`` (module docstring). ``lanes`` (20, C + 16) int32, the per-channel vectors
    (:attr:`Depthwise3x3NHWC.lanes`): rows 0-8 the taps (w − z_w, or w when pairs may be clamped), 9-11 the
    same as bytes of a lane (vpdpbusd columns or vpmaddubsw quads), 12-16 the output stage's float32
    constants (bits; :func:`~minquant.kernels.requant_simd.lane_constants`), 17 its int32 bias, 18 −z_w
    (kind.wzp), 19 the accumulator's constant term. ``risky[blk]``: whether 16-channel block blk can
    saturate a pair; ``zrow`` (C + 16,) uint8 filled with z_x. One array for the vectors: every argument
    costs time at each call from Python."""
    n, h, w, C = x.shape
    oh, ow = out.shape[1], out.shape[2]
    xa = _address(x)
    za = _address(zrow)
    Cp = lanes.shape[1]
    # output columns whose three input columns are all inside the image: xl ≤ xo ≤ xr
    xl = (pw + sw - 1) // sw
    xr = (w - 3 + pw) // sw if w - 3 + pw >= 0 else -1
    for b in range(n):
        for yo in range(oh):          # rows outside, channel blocks inside: the three input rows stay in L1
            r0 = yo * sh - ph
            v0, v1, v2 = 0 <= r0 < h, 0 <= r0 + 1 < h, 0 <= r0 + 2 < h
            p0 = C if v0 else 0
            p1 = C if v1 else 0
            p2 = C if v2 else 0
            for c0 in range(0, C, 16):
                rem = C - c0
                W = (load16(lanes, 4 * c0), load16(lanes, 4 * (Cp + c0)), load16(lanes, 4 * (2 * Cp + c0)),
                     load16(lanes, 4 * (3 * Cp + c0)), load16(lanes, 4 * (4 * Cp + c0)),
                     load16(lanes, 4 * (5 * Cp + c0)), load16(lanes, 4 * (6 * Cp + c0)),
                     load16(lanes, 4 * (7 * Cp + c0)), load16(lanes, 4 * (8 * Cp + c0)),
                     load16(lanes, 4 * (9 * Cp + c0)), load16(lanes, 4 * (10 * Cp + c0)),
                     load16(lanes, 4 * (11 * Cp + c0)))
                S = (load16(lanes, 4 * (12 * Cp + c0)), load16(lanes, 4 * (13 * Cp + c0)),
                     load16(lanes, 4 * (14 * Cp + c0)), load16(lanes, 4 * (15 * Cp + c0)),
                     load16(lanes, 4 * (16 * Cp + c0)), load16(lanes, 4 * (17 * Cp + c0)),
                     load16(lanes, 4 * (18 * Cp + c0)), load16(lanes, 4 * (19 * Cp + c0)))
                sat = kind_clamps(kind) and risky[c0 // 16]
                zc = za + c0
                ra0 = xa + ((b * h + r0) * w) * C + c0 if v0 else zc
                ra1 = xa + ((b * h + r0 + 1) * w) * C + c0 if v1 else zc
                ra2 = xa + ((b * h + r0 + 2) * w) * C + c0 if v2 else zc
                o_row = ((b * oh + yo) * ow) * C + c0
                xo = 0
                while xo < ow:
                    q0 = xo * sw - pw
                    if rem >= 16 and xl <= xo and xo + _STRIP - 1 <= xr:
                        rows = (ra0 + q0 * p0, ra1 + q0 * p1, ra2 + q0 * p2)
                        pitch = (p0, p1, p2)
                        if sw == 1:
                            if sat:
                                _strip1_clamp(kind, rows, pitch, W, S, zf, lof, out, o_row + xo * C, C)
                            else:
                                _strip1_exact(kind, rows, pitch, W, S, zf, lof, out, o_row + xo * C, C)
                        else:
                            if sat:
                                _strip2_clamp(kind, rows, pitch, W, S, zf, lof, out, o_row + xo * C, C)
                            else:
                                _strip2_exact(kind, rows, pitch, W, S, zf, lof, out, o_row + xo * C, C)
                        xo += _STRIP
                        continue
                    c_0 = 0 <= q0 < w
                    c_1 = 0 <= q0 + 1 < w
                    c_2 = 0 <= q0 + 2 < w
                    addrs = (ra0 + q0 * p0 if c_0 else zc, ra0 + (q0 + 1) * p0 if c_1 else zc,
                             ra0 + (q0 + 2) * p0 if c_2 else zc,
                             ra1 + q0 * p1 if c_0 else zc, ra1 + (q0 + 1) * p1 if c_1 else zc,
                             ra1 + (q0 + 2) * p1 if c_2 else zc,
                             ra2 + q0 * p2 if c_0 else zc, ra2 + (q0 + 1) * p2 if c_1 else zc,
                             ra2 + (q0 + 2) * p2 if c_2 else zc)
                    _pixel(kind, sat, rem, addrs, W, S, zf, lof, out, o_row + xo * C)
                    xo += 1


@intrinsic
def kind_clamps(typingctx, kind):
    """True (a compile-time constant) when ``kind`` may clamp pairs."""
    if not isinstance(kind, DwKindType):
        return None

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(1), int(kind.clamp))
    return types.boolean(kind), codegen


@njit(cache=True)
def _scalar_stage(acc, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out2):
    """The output stage of the int32 accumulators acc (pixels, C) into out2 (pixels, C), channel along the
    row (the modes without a 16-lane form)."""
    for p in range(acc.shape[0]):
        _requant_lanes(acc[p], 0, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out2[p])


# --------------------------------------------------------------------------------------- the layer
def _risky_pairs(w9):
    """(C, 5) bool: pair (t, t+1) of channel c can leave int16 for uint8 inputs (the last tap pairs with 0)."""
    wp = np.concatenate([w9.astype(np.int64), np.zeros((w9.shape[0], 1), np.int64)], axis=1)
    pos, neg = np.maximum(wp, 0), np.maximum(-wp, 0)
    return (255 * (pos[:, 0::2] + pos[:, 1::2]) > INT16_MAX) | (255 * (neg[:, 0::2] + neg[:, 1::2]) > -INT16_MIN)


def _round_bound(stage, x_zp):
    """:func:`~minquant.kernels.requant_simd.round_bound` of a 3×3 depthwise layer: |acc| ≤ 2·9·255·255 covers
    the products and the zero-point terms."""
    return round_bound(stage, 2.0 * 9 * 255 * 255)


def _lane_bytes(*rows):
    """int32 lanes whose bytes 0, 1, … (little-endian) are the int8 values of ``rows`` (a missing byte 0)."""
    v = np.zeros(np.shape(rows[0]), np.int64)
    for k, r in enumerate(rows):
        v |= (np.asarray(r, np.int64) & 0xFF) << (8 * k)
    return v.astype(np.uint32).view(np.int32)


class Depthwise3x3NHWC:
    """A 3×3 depthwise conv layer (groups = C, one output channel per input channel, dilation 1) on
    channels-last codes, ready to run: ``layer(x)`` with x (N, H, W, C) uint8 returns (N, OH, OW, C) uint8,
    bit-identical to :func:`~minquant.kernels.conv.qconv2d_reference` on the NCHW transposes.

    Same arguments as :class:`~minquant.kernels.conv.QConv2d` (``stride`` / ``padding`` an int or a pair;
    ``target`` decides the arithmetic: exact, or fbgemm's pair saturation); :meth:`from_qconv2d` builds it
    from a QConv2d layer (its packed weights and output stage)."""

    def __init__(self, w_q, w_scale, w_zp, bias, x_scale, x_zp, y_scale, y_zp, *, stride=1, padding=0,
                 relu=False, clamp=None, clamp_hi=None, target="fbgemm"):
        from .conv import PackedConvWeight, conv_arithmetic   # here: conv.py may call this module
        w_q = np.asarray(w_q)
        self.stride, self.padding, _ = check_conv_args(w_q.shape, x_scale, x_zp, w_scale, w_zp, bias, y_scale,
                                                       y_zp, stride, padding, 1, w_q.shape[0], clamp, clamp_hi)
        packed = PackedConvWeight(w_q, w_zp, w_q.shape[0])
        arith = conv_arithmetic(target, w_q.shape, packed.w_zp, w_q.shape[0], self.stride, self.padding, (1, 1))
        stage = output_stage(w_q.shape[0], x_scale, w_scale, bias, y_scale, y_zp, relu=relu, clamp=clamp,
                             clamp_hi=clamp_hi, target=arith)
        self._setup(packed, stage, arith.saturate_pairs, x_zp)

    @classmethod
    def from_qconv2d(cls, layer) -> "Depthwise3x3NHWC":
        """The channels-last twin of a depthwise 3×3 :class:`~minquant.kernels.conv.QConv2d` (same weights,
        output stage and arithmetic)."""
        self = cls.__new__(cls)
        self.stride, self.padding = layer.stride, layer.padding
        if layer.dilation != (1, 1):
            raise ValueError(f"the channels-last depthwise kernel needs dilation 1, layer has {layer.dilation}")
        self._setup(layer.packed, layer.stage, layer.arith.saturate_pairs, layer.x_zp)
        return self

    def _setup(self, packed, stage, saturate, x_zp):
        w_q = packed.w_q
        c_out, cg, kh, kw = w_q.shape
        if not (packed.depthwise and cg == 1 and packed.groups == c_out and (kh, kw) == (3, 3)):
            raise ValueError(f"the channels-last depthwise kernel takes a 3×3 kernel with one input and one output "
                             f"channel per group, got weights {w_q.shape} with groups={packed.groups}")
        if max(self.stride) > 2 or self.stride[0] != self.stride[1]:
            raise ValueError(f"the channels-last depthwise kernel takes stride 1 or 2 (both axes), got {self.stride}")
        C = c_out
        self.C, self.stage, self.x_zp = C, stage, int(x_zp)
        w9 = w_q.reshape(C, 9).astype(np.int64)
        zw = packed.w_zp.astype(np.int64)
        risky = _risky_pairs(w9).any(1) if saturate else np.zeros(C, bool)
        self.clamp = bool(risky.any())
        self.wzp = self.clamp and bool(zw.any())
        nblk = -(-C // 16)
        self.risky = np.zeros(nblk, np.bool_)
        for blk in range(nblk):
            self.risky[blk] = risky[16 * blk:16 * blk + 16].any()
        Cp = C + 16
        taps = np.zeros((12, Cp), np.int32)   # rows 9-11: the kernel columns as vpdpbusd bytes
        acc0 = np.zeros(Cp, np.int32)
        wzv = np.zeros(Cp, np.int32)
        zx = self.x_zp
        if self.clamp:   # raw taps; acc = raw − z_x·Σw − z_w·Σx + 9·z_x·z_w (Σx: the −z_w taps of kind.wzp)
            taps[:9, :C] = w9.T
            acc0[:C] = -zx * w9.sum(1) + 9 * zx * zw
            wzv[:C] = -zw
        else:            # exact: the taps w − z_w; acc = Σ x·(w − z_w) − z_x·Σ(w − z_w)
            wd = w9 - zw[:, None]
            taps[:9, :C] = wd.T
            acc0[:C] = -zx * wd.sum(1)
        self.w9, self.zw, self.saturate = w9, zw, bool(saturate)
        consts, bq = lane_constants(stage, C)
        self.zrow = np.full(Cp, zx, np.uint8)
        mode = stage.mode if stage.mode in VECTOR_MODES else -1
        # exact taps that fit in int8: on VNNI, one vpdpbusd per kernel column (rows 0-2 of the column as the
        # bytes 0-2 of each lane, byte 3 zero)
        t9 = taps[:9, :C].astype(np.int64)
        quad = not self.clamp and bool(np.all((t9 >= -128) & (t9 <= 127)))
        if quad:
            rows = t9.reshape(3, 3, C)               # (row i, column j, channel)
            taps[9:, :C] = _lane_bytes(rows[0], rows[1], rows[2])
        elif self.clamp:   # fbgemm's pairs on vpmaddubsw: taps 0-3 and 4-7 as the four bytes of each lane
            t8 = taps[:8, :C].reshape(2, 4, C)
            taps[9:11, :C] = _lane_bytes(t8[:, 0], t8[:, 1], t8[:, 2], t8[:, 3])
        int_round = mode >= 0 and _round_bound(stage, zx) < 2.0 ** 30
        # ONNX Runtime's stage adds the int32 bias to the accumulator first: add it to the constant term
        folded = acc0.astype(np.int64) + bq
        bq_folded = mode == 2 and bool(np.all(np.abs(folded) < 2 ** 30))
        if bq_folded:
            acc0 = folded.astype(np.int32)
        self.kinds = {isa: DwKind(mode, self.clamp, self.wzp, isa, quad, int_round, bq_folded)
                      for isa in (ISA_AVX2, ISA_AVX512BW, ISA_AVX512VNNI)}
        # every per-channel vector in one array (:func:`_depthwise3x3_nhwc_kernel`)
        self.lanes = np.concatenate([taps, consts.view(np.int32), bq[None], wzv[None], acc0[None]])
        (sh, sw), (ph, pw) = self.stride, self.padding
        self._args = (self.lanes, self.risky, self.zrow, sh, sw, ph, pw, np.float32(stage.y_zp), np.float32(stage.lo))
        self._shapes = {}

    def out_shape(self, x_shape):
        n, h, w, C = x_shape
        (sh, sw), (ph, pw) = self.stride, self.padding
        return n, conv_out_size(h, 3, sh, ph, 1), conv_out_size(w, 3, sw, pw, 1), C

    def __call__(self, x, out=None):
        return depthwise3x3_nhwc(x, self, out)


def depthwise3x3_nhwc(x, layer: Depthwise3x3NHWC, out=None):
    """(N, OH, OW, C) uint8 codes of ``layer`` on the channels-last uint8 codes ``x`` (N, H, W, C), written
    into ``out`` when given (C-contiguous, that shape). The int SIMD kernel when the JIT and an AVX2 CPU are
    there, else :func:`depthwise3x3_nhwc_numpy`."""
    if not isinstance(x, np.ndarray) or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    shape = layer._shapes.get(x.shape) if x.dtype == np.uint8 else None
    if shape is None:
        if x.dtype != np.uint8 or x.ndim != 4:
            raise ValueError(f"x must be a 4-D uint8 NHWC array, got {x.dtype} {x.shape}")
        if x.shape[3] != layer.C:
            raise ValueError(f"x has {x.shape[3]} channels (last axis, NHWC), the layer {layer.C}")
        shape = layer._shapes[x.shape] = layer.out_shape(x.shape)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}, got {out.dtype} {out.shape}")
    elif np.may_share_memory(x, out):
        raise ValueError("out must not overlap x: the kernel reads input pixels after writing outputs")
    isa = host_isa()
    if isa == ISA_NONE:
        out[...] = depthwise3x3_nhwc_numpy(x, layer)
        return out
    kind = layer.kinds[isa]
    if kind.mode >= 0:
        _depthwise3x3_nhwc_kernel(kind, x, *layer._args, out)
    else:
        st = layer.stage
        acc = np.empty(shape, np.int32)
        _depthwise3x3_nhwc_kernel(kind, x, *layer._args, acc)
        _scalar_stage(acc.reshape(-1, layer.C), st.mode, st.bias_f, st.bias_q, st.mult32, st.mult64,
                      np.float64(st.y_zp), np.float64(st.lo), st.hi, out.reshape(-1, layer.C))
    return out


def depthwise3x3_nhwc_numpy(x, layer: Depthwise3x3NHWC):
    """The same codes in NumPy (no JIT): the z_x-padded image, the nine shifted views, the pairs clamped
    where the target saturates, the zero-point terms, :func:`~minquant.kernels.requantize.requantize_reference`."""
    n, oh, ow, C = layer.out_shape(x.shape)
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    xp = np.pad(x.astype(np.int64), ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=layer.x_zp)
    xt = [xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :] for i in range(3) for j in range(3)]
    w9, zw, zx = layer.w9, layer.zw, layer.x_zp
    if layer.saturate:
        raw = 0
        for t in range(0, 9, 2):
            pair = xt[t] * w9[:, t] + (xt[t + 1] * w9[:, t + 1] if t + 1 < 9 else 0)
            raw = raw + np.clip(pair, INT16_MIN, INT16_MAX)
    else:
        raw = sum(xt[t] * w9[:, t] for t in range(9))
    acc = raw - zx * w9.sum(1) - zw * sum(xt) + 9 * zx * zw
    y = requantize_reference(acc.reshape(-1, C), layer.stage)
    return y.reshape(n, oh, ow, C)
