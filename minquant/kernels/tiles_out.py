"""Micro-kernels that finish their own output: the GEMM tile, the zero-point term and the output stage in
registers, uint8 codes stored straight from them (docs/quantization.md, steps 4 and 7).

The product is :mod:`.tiles`' **linear layout** (lanes = output channels, rows = input rows / pixels):

    acc[r, l] = Σ_k A[r, k] · V[l, k]            over the *whole* K (no K blocks: nothing is written back)
    y[r, n0 + l] = stage(acc[r, l] − ct[n0 + l])  ct = z_x·(Σ_k w − K·z_w), per output channel

with weight zero points 0 (so no per-row term z_w·Σ_k a), and ``stage`` one of the float32 output stages of
:mod:`.requant_simd` (:data:`~minquant.kernels.requant_simd.VECTOR_MODES`). Where the tiles of :mod:`.tiles`
store int32 accumulators for a separate epilogue to read back (an int32 block that leaves L1 for the wide
layers), these keep them in the zmm registers: ``vpsubd``, the output stage and ``vpmovdb`` per 16 lanes.
That matters most where K is short — MobileNetV2's expansion convs at 112² and 56² (K = 16, 24: four to six
``vpdpbusd`` per accumulator, then as many instructions to finish it) — which is how ONNX Runtime's own
symmetric-convolution kernel (MLAS ``ConvSym``, 6 pixels × 64 channels) works.

The output stage's mode is part of the *type* of a :class:`StageMode` argument (as the multiply-add kind is
of a :class:`~minquant.kernels.simd.MacKind`): each (kind, mode) pair compiles to its own machine code with
the mode a constant, only the pairs a process uses are compiled, and each is cached.

A last chunk of fewer than 16 channels is stored with a byte mask (``vpmovdb`` under a ``k``-mask), and a chunk with no channel left is skipped, so nothing outside ``out`` is
written and the constants are read only inside their 16 spare lanes. zmm only: the AVX2 kinds keep
:mod:`.tiles` and the separate epilogue.
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import NativeValue, intrinsic, models, register_model, typeof_impl, unbox

from .requant_simd import _I16, VECTOR_MODES, stage_lanes16
from .simd import _byte_ptr, bcast16, i32x16, load16, mac, zero16

__all__ = ["StageMode", "STAGE_MODES", "out_tile6x64", "out_tile1x64", "out_tile12x32",
           "out_tile1x32", "out_tile12x16", "out_tile1x16"]


class StageMode:
    """An output-stage mode (one of :data:`~minquant.kernels.requant_simd.VECTOR_MODES`) as a value whose
    Numba type carries it (:class:`StageModeType`), read as a constant by :func:`stage_mode`; ``int_round``:
    every value before rounding is known to stay below 2^30 (:func:`~minquant.kernels.requant_simd.round_bound`),
    so the stage may round with lrint and clamp as integers — the same codes, two instructions fewer."""

    def __init__(self, mode: int, int_round: bool = False):
        if mode not in VECTOR_MODES:
            raise ValueError(f"output stage mode {mode} has no 16-lane form (modes {VECTOR_MODES})")
        self.mode, self.int_round = int(mode), bool(int_round)
        self._numba_type_ = StageModeType(self.mode, self.int_round)   # read by the dispatcher's C code itself

    def __repr__(self):
        return f"StageMode({self.mode}, int_round={self.int_round})"


class StageModeType(types.Type):
    def __init__(self, mode, int_round):
        self.mode, self.int_round = mode, int_round
        super().__init__(name=f"StageMode({mode},{int(int_round)})")


@typeof_impl.register(StageMode)
def _typeof_stage_mode(val, c):
    return val._numba_type_


register_model(StageModeType)(models.OpaqueModel)


@unbox(StageModeType)
def _unbox_stage_mode(typ, obj, c):
    return NativeValue(c.context.get_constant_null(types.voidptr))


#: one value per (mode, int_round)
STAGE_MODES = {(m, r): StageMode(m, r) for m in VECTOR_MODES for r in (False, True)}


@intrinsic
def stage_mode(typingctx, sm):
    """The mode of a :class:`StageMode`, as a compile-time int64 constant."""
    if not isinstance(sm, StageModeType):
        return None

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(64), sm.mode)
    return types.int64(sm), codegen


@intrinsic
def _finish16(typingctx, sm, acc, ct, consts, bq, c, zf, lof, out, o, valid):
    """Channels c .. c + 15 of one row: out[o + l] = stage(acc[l] − ct[c + l]) for the ``valid`` first lanes
    (all 16, some, or none: nothing is read or written then) — vpsubd, the output stage of
    :func:`~minquant.kernels.requant_simd.requant16_lanes`, vpmovdb (under a k-mask). Mode 2 adds the int32
    bias b_q to the accumulator first: there the caller passes ``bq`` = b_q − ct and ``ct`` is not read
    ((acc − ct) + b_q and acc + (b_q − ct) are the same int32, wrapping or not). One LLVM expression, so that
    the arrays cost no reference counting in the unrolled tiles; the constants are loaded as invariant (the
    kernels never write them), so that the six or twelve rows of a tile share their loads."""
    if not (isinstance(sm, StageModeType) and acc == i32x16 and all(isinstance(a, types.Array) for a in
                                                                    (ct, consts, bq, out))):
        return None
    sig = types.none(sm, i32x16, ct, consts, bq, types.int64, types.float32, types.float32, out, types.int64,
                     types.int64)

    def codegen(context, builder, signature, args):
        _, a, cta, ca, bqa, cv, zf_v, lo_v, outa, ov, nv = args
        i64 = ir.IntType(64)
        go = builder.icmp_signed(">", nv, ir.Constant(i64, 0))
        with builder.if_then(go, likely=True):
            if sm.mode != 2:
                q = _byte_ptr(context, builder, signature.args[2], cta, builder.mul(cv, ir.Constant(i64, 4)))
                ctv = builder.load(builder.bitcast(q, _I16.as_pointer()))
                ctv.align = 1
                ctv.set_metadata("invariant.load", builder.module.add_metadata([]))
                a = builder.sub(a, ctv)
            r = stage_lanes16(context, builder, signature.args[3], ca, signature.args[4], bqa, cv,
                              ir.Constant(i64, sm.mode), a, zf_v, lo_v, invariant=True, int_round=sm.int_round)
            b = builder.trunc(r, ir.VectorType(ir.IntType(8), 16))
            p = builder.bitcast(_byte_ptr(context, builder, signature.args[8], outa, ov), b.type.as_pointer())
            full = builder.icmp_signed(">=", nv, ir.Constant(i64, 16))
            with builder.if_else(full, likely=True) as (whole, part):
                with whole:                   # vpmovdb
                    st = builder.store(b, p)
                    st.align = 1
                with part:                    # vpmovdb under the k-mask of the first nv lanes
                    i32 = ir.IntType(32)
                    v16 = ir.VectorType(i32, 16)
                    nn = builder.insert_element(ir.Constant(v16, ir.Undefined), builder.trunc(nv, i32),
                                                ir.Constant(i32, 0))
                    nn = builder.shuffle_vector(nn, ir.Constant(v16, ir.Undefined), ir.Constant(v16, None))
                    mask = builder.icmp_signed("<", ir.Constant(v16, list(range(16))), nn)
                    fnty = ir.FunctionType(ir.VoidType(), [b.type, p.type, i32, mask.type])
                    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.store.v16i8.p0")
                    builder.call(fn, [b, p, ir.Constant(i32, 1), mask])
        return context.get_dummy_value()
    return sig, codegen


# Every tile function runs ``nrows`` rows (a multiple of its tile's rows: one call per panel and row block, so
# that the call costs nothing per tile): row r of A at byte a_0 + r·lda (4 bytes broadcast per k-group), the
# V-panel of :mod:`.tiles` at byte v0 (k4n groups of 4 k), output channels n0 .. n0 + nn − 1 of the panel's
# lanes, row r of the codes at byte o_0 + r·ldo of ``out``; ct / consts / bq / zf / lof: the zero-point terms
# and the stage's constants.
@njit(cache=True)
def out_tile6x64(kind, sm, A, a_0, lda, nrows, V, v0, k4n, ct, consts, bq, n0, nn, zf, lof, out, o_0, ldo):
    """y[r, n0:n0 + nn] of 6 rows at a time × a 64-lane panel (module docstring), 24 zmm accumulators."""
    for t in range(nrows // 6):
        a0 = a_0 + 6 * t * lda
        o0 = o_0 + 6 * t * ldo
        c00 = zero16(); c01 = zero16(); c02 = zero16(); c03 = zero16()
        c10 = zero16(); c11 = zero16(); c12 = zero16(); c13 = zero16()
        c20 = zero16(); c21 = zero16(); c22 = zero16(); c23 = zero16()
        c30 = zero16(); c31 = zero16(); c32 = zero16(); c33 = zero16()
        c40 = zero16(); c41 = zero16(); c42 = zero16(); c43 = zero16()
        c50 = zero16(); c51 = zero16(); c52 = zero16(); c53 = zero16()
        for k in range(k4n):
            o = v0 + k * 256
            v_0 = load16(V, o); v_1 = load16(V, o + 64); v_2 = load16(V, o + 128); v_3 = load16(V, o + 192)
            b = a0 + 4 * k
            x = bcast16(A, b)
            c00 = mac(kind, c00, x, v_0); c01 = mac(kind, c01, x, v_1)
            c02 = mac(kind, c02, x, v_2); c03 = mac(kind, c03, x, v_3)
            x = bcast16(A, b + lda)
            c10 = mac(kind, c10, x, v_0); c11 = mac(kind, c11, x, v_1)
            c12 = mac(kind, c12, x, v_2); c13 = mac(kind, c13, x, v_3)
            x = bcast16(A, b + 2 * lda)
            c20 = mac(kind, c20, x, v_0); c21 = mac(kind, c21, x, v_1)
            c22 = mac(kind, c22, x, v_2); c23 = mac(kind, c23, x, v_3)
            x = bcast16(A, b + 3 * lda)
            c30 = mac(kind, c30, x, v_0); c31 = mac(kind, c31, x, v_1)
            c32 = mac(kind, c32, x, v_2); c33 = mac(kind, c33, x, v_3)
            x = bcast16(A, b + 4 * lda)
            c40 = mac(kind, c40, x, v_0); c41 = mac(kind, c41, x, v_1)
            c42 = mac(kind, c42, x, v_2); c43 = mac(kind, c43, x, v_3)
            x = bcast16(A, b + 5 * lda)
            c50 = mac(kind, c50, x, v_0); c51 = mac(kind, c51, x, v_1)
            c52 = mac(kind, c52, x, v_2); c53 = mac(kind, c53, x, v_3)
        c1, c2, c3 = n0 + 16, n0 + 32, n0 + 48
        n1, n2, n3 = nn - 16, nn - 32, nn - 48
        e = o0
        _finish16(sm, c00, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c01, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        _finish16(sm, c02, ct, consts, bq, c2, zf, lof, out, e + 32, n2); _finish16(sm, c03, ct, consts, bq, c3, zf, lof, out, e + 48, n3)
        e += ldo
        _finish16(sm, c10, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c11, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        _finish16(sm, c12, ct, consts, bq, c2, zf, lof, out, e + 32, n2); _finish16(sm, c13, ct, consts, bq, c3, zf, lof, out, e + 48, n3)
        e += ldo
        _finish16(sm, c20, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c21, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        _finish16(sm, c22, ct, consts, bq, c2, zf, lof, out, e + 32, n2); _finish16(sm, c23, ct, consts, bq, c3, zf, lof, out, e + 48, n3)
        e += ldo
        _finish16(sm, c30, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c31, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        _finish16(sm, c32, ct, consts, bq, c2, zf, lof, out, e + 32, n2); _finish16(sm, c33, ct, consts, bq, c3, zf, lof, out, e + 48, n3)
        e += ldo
        _finish16(sm, c40, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c41, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        _finish16(sm, c42, ct, consts, bq, c2, zf, lof, out, e + 32, n2); _finish16(sm, c43, ct, consts, bq, c3, zf, lof, out, e + 48, n3)
        e += ldo
        _finish16(sm, c50, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c51, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        _finish16(sm, c52, ct, consts, bq, c2, zf, lof, out, e + 32, n2); _finish16(sm, c53, ct, consts, bq, c3, zf, lof, out, e + 48, n3)


@njit(cache=True)
def out_tile1x64(kind, sm, A, a_0, lda, nrows, V, v0, k4n, ct, consts, bq, n0, nn, zf, lof, out, o_0, ldo):
    """One row of :func:`out_tile6x64` (the rows left over, one at a time)."""
    for t in range(nrows):
        a0 = a_0 + t * lda
        o0 = o_0 + t * ldo
        c0_ = zero16(); c1_ = zero16(); c2_ = zero16(); c3_ = zero16()
        for k in range(k4n):
            o = v0 + k * 256
            x = bcast16(A, a0 + 4 * k)
            c0_ = mac(kind, c0_, x, load16(V, o)); c1_ = mac(kind, c1_, x, load16(V, o + 64))
            c2_ = mac(kind, c2_, x, load16(V, o + 128)); c3_ = mac(kind, c3_, x, load16(V, o + 192))
        _finish16(sm, c0_, ct, consts, bq, n0, zf, lof, out, o0, nn)
        _finish16(sm, c1_, ct, consts, bq, n0 + 16, zf, lof, out, o0 + 16, nn - 16)
        _finish16(sm, c2_, ct, consts, bq, n0 + 32, zf, lof, out, o0 + 32, nn - 32)
        _finish16(sm, c3_, ct, consts, bq, n0 + 48, zf, lof, out, o0 + 48, nn - 48)


@njit(cache=True)
def out_tile12x32(kind, sm, A, a_0, lda, nrows, V, v0, k4n, ct, consts, bq, n0, nn, zf, lof, out, o_0, ldo):
    """y[r, n0:n0 + nn] of 12 rows at a time × the first 32 lanes of a panel (nn ≤ 32: a narrow layer's
    channels)."""
    for t in range(nrows // 12):
        a0 = a_0 + 12 * t * lda
        o0 = o_0 + 12 * t * ldo
        c0_0 = zero16(); c0_1 = zero16(); c1_0 = zero16(); c1_1 = zero16()
        c2_0 = zero16(); c2_1 = zero16(); c3_0 = zero16(); c3_1 = zero16()
        c4_0 = zero16(); c4_1 = zero16(); c5_0 = zero16(); c5_1 = zero16()
        c6_0 = zero16(); c6_1 = zero16(); c7_0 = zero16(); c7_1 = zero16()
        c8_0 = zero16(); c8_1 = zero16(); c9_0 = zero16(); c9_1 = zero16()
        c10_0 = zero16(); c10_1 = zero16(); c11_0 = zero16(); c11_1 = zero16()
        for k in range(k4n):
            o = v0 + k * 256
            v_0 = load16(V, o); v_1 = load16(V, o + 64)
            b = a0 + 4 * k
            x = bcast16(A, b)
            c0_0 = mac(kind, c0_0, x, v_0); c0_1 = mac(kind, c0_1, x, v_1)
            x = bcast16(A, b + lda)
            c1_0 = mac(kind, c1_0, x, v_0); c1_1 = mac(kind, c1_1, x, v_1)
            x = bcast16(A, b + 2 * lda)
            c2_0 = mac(kind, c2_0, x, v_0); c2_1 = mac(kind, c2_1, x, v_1)
            x = bcast16(A, b + 3 * lda)
            c3_0 = mac(kind, c3_0, x, v_0); c3_1 = mac(kind, c3_1, x, v_1)
            x = bcast16(A, b + 4 * lda)
            c4_0 = mac(kind, c4_0, x, v_0); c4_1 = mac(kind, c4_1, x, v_1)
            x = bcast16(A, b + 5 * lda)
            c5_0 = mac(kind, c5_0, x, v_0); c5_1 = mac(kind, c5_1, x, v_1)
            x = bcast16(A, b + 6 * lda)
            c6_0 = mac(kind, c6_0, x, v_0); c6_1 = mac(kind, c6_1, x, v_1)
            x = bcast16(A, b + 7 * lda)
            c7_0 = mac(kind, c7_0, x, v_0); c7_1 = mac(kind, c7_1, x, v_1)
            x = bcast16(A, b + 8 * lda)
            c8_0 = mac(kind, c8_0, x, v_0); c8_1 = mac(kind, c8_1, x, v_1)
            x = bcast16(A, b + 9 * lda)
            c9_0 = mac(kind, c9_0, x, v_0); c9_1 = mac(kind, c9_1, x, v_1)
            x = bcast16(A, b + 10 * lda)
            c10_0 = mac(kind, c10_0, x, v_0); c10_1 = mac(kind, c10_1, x, v_1)
            x = bcast16(A, b + 11 * lda)
            c11_0 = mac(kind, c11_0, x, v_0); c11_1 = mac(kind, c11_1, x, v_1)
        c1, n1 = n0 + 16, nn - 16
        e = o0
        _finish16(sm, c0_0, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c0_1, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        e += ldo
        _finish16(sm, c1_0, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c1_1, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        e += ldo
        _finish16(sm, c2_0, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c2_1, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        e += ldo
        _finish16(sm, c3_0, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c3_1, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        e += ldo
        _finish16(sm, c4_0, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c4_1, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        e += ldo
        _finish16(sm, c5_0, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c5_1, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        e += ldo
        _finish16(sm, c6_0, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c6_1, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        e += ldo
        _finish16(sm, c7_0, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c7_1, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        e += ldo
        _finish16(sm, c8_0, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c8_1, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        e += ldo
        _finish16(sm, c9_0, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c9_1, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        e += ldo
        _finish16(sm, c10_0, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c10_1, ct, consts, bq, c1, zf, lof, out, e + 16, n1)
        e += ldo
        _finish16(sm, c11_0, ct, consts, bq, n0, zf, lof, out, e, nn); _finish16(sm, c11_1, ct, consts, bq, c1, zf, lof, out, e + 16, n1)


@njit(cache=True)
def out_tile1x32(kind, sm, A, a_0, lda, nrows, V, v0, k4n, ct, consts, bq, n0, nn, zf, lof, out, o_0, ldo):
    """One row of :func:`out_tile12x32` (the rows left over, one at a time)."""
    for t in range(nrows):
        a0 = a_0 + t * lda
        o0 = o_0 + t * ldo
        c0_ = zero16(); c1_ = zero16()
        for k in range(k4n):
            o = v0 + k * 256
            x = bcast16(A, a0 + 4 * k)
            c0_ = mac(kind, c0_, x, load16(V, o)); c1_ = mac(kind, c1_, x, load16(V, o + 64))
        _finish16(sm, c0_, ct, consts, bq, n0, zf, lof, out, o0, nn)
        _finish16(sm, c1_, ct, consts, bq, n0 + 16, zf, lof, out, o0 + 16, nn - 16)


@njit(cache=True)
def out_tile12x16(kind, sm, A, a_0, lda, nrows, V, v0, k4n, ct, consts, bq, n0, nn, zf, lof, out, o_0, ldo):
    """y[r, n0:n0 + nn] of 12 rows at a time × the first 16 lanes of a panel (nn ≤ 16)."""
    for t in range(nrows // 12):
        a0 = a_0 + 12 * t * lda
        o0 = o_0 + 12 * t * ldo
        c0 = zero16(); c1 = zero16(); c2 = zero16(); c3 = zero16(); c4 = zero16(); c5 = zero16()
        c6 = zero16(); c7 = zero16(); c8 = zero16(); c9 = zero16(); c10 = zero16(); c11 = zero16()
        for k in range(k4n):
            v_0 = load16(V, v0 + k * 256)
            b = a0 + 4 * k
            c0 = mac(kind, c0, bcast16(A, b), v_0)
            c1 = mac(kind, c1, bcast16(A, b + lda), v_0)
            c2 = mac(kind, c2, bcast16(A, b + 2 * lda), v_0)
            c3 = mac(kind, c3, bcast16(A, b + 3 * lda), v_0)
            c4 = mac(kind, c4, bcast16(A, b + 4 * lda), v_0)
            c5 = mac(kind, c5, bcast16(A, b + 5 * lda), v_0)
            c6 = mac(kind, c6, bcast16(A, b + 6 * lda), v_0)
            c7 = mac(kind, c7, bcast16(A, b + 7 * lda), v_0)
            c8 = mac(kind, c8, bcast16(A, b + 8 * lda), v_0)
            c9 = mac(kind, c9, bcast16(A, b + 9 * lda), v_0)
            c10 = mac(kind, c10, bcast16(A, b + 10 * lda), v_0)
            c11 = mac(kind, c11, bcast16(A, b + 11 * lda), v_0)
        _finish16(sm, c0, ct, consts, bq, n0, zf, lof, out, o0, nn)
        _finish16(sm, c1, ct, consts, bq, n0, zf, lof, out, o0 + ldo, nn)
        _finish16(sm, c2, ct, consts, bq, n0, zf, lof, out, o0 + 2 * ldo, nn)
        _finish16(sm, c3, ct, consts, bq, n0, zf, lof, out, o0 + 3 * ldo, nn)
        _finish16(sm, c4, ct, consts, bq, n0, zf, lof, out, o0 + 4 * ldo, nn)
        _finish16(sm, c5, ct, consts, bq, n0, zf, lof, out, o0 + 5 * ldo, nn)
        _finish16(sm, c6, ct, consts, bq, n0, zf, lof, out, o0 + 6 * ldo, nn)
        _finish16(sm, c7, ct, consts, bq, n0, zf, lof, out, o0 + 7 * ldo, nn)
        _finish16(sm, c8, ct, consts, bq, n0, zf, lof, out, o0 + 8 * ldo, nn)
        _finish16(sm, c9, ct, consts, bq, n0, zf, lof, out, o0 + 9 * ldo, nn)
        _finish16(sm, c10, ct, consts, bq, n0, zf, lof, out, o0 + 10 * ldo, nn)
        _finish16(sm, c11, ct, consts, bq, n0, zf, lof, out, o0 + 11 * ldo, nn)


@njit(cache=True)
def out_tile1x16(kind, sm, A, a_0, lda, nrows, V, v0, k4n, ct, consts, bq, n0, nn, zf, lof, out, o_0, ldo):
    """One row of :func:`out_tile12x16` (the rows left over, one at a time)."""
    for t in range(nrows):
        a0 = a_0 + t * lda
        o0 = o_0 + t * ldo
        c0 = zero16()
        for k in range(k4n):
            c0 = mac(kind, c0, bcast16(A, a0 + 4 * k), load16(V, v0 + k * 256))
        _finish16(sm, c0, ct, consts, bq, n0, zf, lof, out, o0, nn)

