"""The quantized GEMM on the CPU's int8 instructions, with the output stage fused (docs/quantization.md,
steps 4, 7 and 8). Bit-identical to :func:`~minquant.kernels.gemm.gemm_u8s8_reference` followed by
:func:`~minquant.kernels.requantize.requantize_reference`, whatever instructions run.

**The target decides the arithmetic, the host decides the instructions** (:func:`choose_plan`):

=====================  ===========================================  ==========================================
host                   exact target (``saturate_pairs=False``)      pair-saturating target (fbgemm w/o VNNI)
=====================  ===========================================  ==========================================
AVX512-VNNI            vpdpbusd                                     vpmaddubsw + vpdpwssd — or vpdpbusd when
                                                                    no weight pair can saturate
AVX-512BW / AVX2       vpmaddubsw + vpmaddwd when no weight pair    vpmaddubsw + vpmaddwd (the hardware
                       can saturate; otherwise the same on *split*  saturates exactly as fbgemm does)
                       weights: w = ⌊w/2⌋ + ⌈w/2⌉, both halves in
                       [−64, 64], so 255·64·2 = 32640 never
                       saturates — K doubled, exact
no JIT / no AVX2       the float32 BLAS path (:mod:`.gemm`)
=====================  ===========================================  ==========================================

A weight pair (k, k+1), k even, "can saturate" when 255·(|w_k| + |w_k+1|) over its same-sign weights exceeds
the int16 range (:attr:`~minquant.kernels.gemm.PackedWeight.risky`); without such pairs the pair-saturating
and the exact sums are the same integers, so either instruction sequence gives the target's result.

Two layouts of the same product (:mod:`.tiles` does the multiply-adds):

* **linear** (``QLinear``): lanes = output channels, rows = input rows. The weights are packed once as the
  lane operand [N/64][K/4][64][4]; each input row's bytes are broadcast. Output (M, N).
* **conv** (``QConv2d``, groups = 1): lanes = output pixels, rows = output channels. The weights are the
  broadcast rows (N, K padded); each 64-pixel panel of the image is packed on the fly (im2col in (kh, kw, c)
  order, or a plain 4-channel interleave for 1×1 stride-1 convolutions). Output rows are NCHW rows.
* **channels-last conv** (``QConv2d.nhwc``, :func:`conv_rows_simd`): the linear layout on the output pixels
  — a 1×1 stride-1 convolution's rows are the NHWC pixels themselves (no copy), a k×k one's the channels-last
  im2col rows; output rows are NHWC pixels. Panels with 32 or fewer useful output channels run on the 16- or
  32-lane tiles (:func:`~minquant.kernels.tiles.product_panel`).

On zmm, with weight zero points 0 and a float32 output stage, the linear layout finishes each tile in
registers instead (:mod:`.tiles_out`, :func:`epilogue_in_registers`): no int32 block, the codes stored straight
from the accumulators — the form of every channels-last 1×1 convolution of an ONNX Runtime or torch model.

The epilogue (per output row of a finished panel, straight from the int32 tile): the zero-point terms
acc = raw − z_x·(Σ_k w − K·z_w) − z_w·Σ_k a (step 4) and the target's output stage (step 7).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numba import njit

from . import tiles, tiles_out
from .requant_simd import VECTOR_MODES, lane_constants, requant16_lanes, requant_row16, round_bound, store_codes16
from .requantize import OutputStage, _requant_lanes, _requant_row
from .simd import load8, load16, store8, sub16
from .simd import (ISA_AVX2, ISA_AVX512BW, ISA_AVX512VNNI, ISA_NAMES, ISA_NONE, MAC_PAIRS_256, MAC_PAIRS_512,
                   MAC_PAIRS_VNNI, MAC_SWAP, MAC_VNNI, MacKind, host_isa)

__all__ = ["GemmPlan", "choose_plan", "epilogue_in_registers", "linear_simd", "linear_simd_runner", "conv_simd",
           "conv_rows_simd", "conv_rows_simd_runner"]

U = np.uint64   # flat indices: unsigned, so Numba adds no wrap-around test
KC = 128   # groups of 4 k per K block: a 64-lane panel block is 32 KB, inside L1
ROW_BLOCK = 240   # rows of the linear layout per int32 block (a multiple of the 6- and 12-row tiles)


@dataclass(frozen=True)
class GemmPlan:
    """How one layer's product runs here: ``isa`` (an ``ISA_*`` of :mod:`.simd`), ``pairs`` (the
    instructions add u8×s8 pairs with int16 saturation — vpmaddubsw) and ``split`` (the weights are split in
    two non-saturating halves, K doubled)."""
    isa: int
    pairs: bool
    split: bool

    def describe(self) -> str:
        if self.isa == ISA_NONE:
            return "float32 BLAS (no int8 SIMD)"
        ins = {ISA_AVX512VNNI: "vpmaddubsw+vpdpwssd" if self.pairs else "vpdpbusd",
               ISA_AVX512BW: "vpmaddubsw+vpmaddwd zmm", ISA_AVX2: "vpmaddubsw+vpmaddwd ymm"}[self.isa]
        return f"{ISA_NAMES[self.isa]} {ins}" + (" on split weights" if self.split else "")


def choose_plan(saturate_pairs: bool, can_saturate: bool, isa: int | None = None) -> GemmPlan:
    """The plan for a layer whose target saturates pairs (``saturate_pairs``) and whose weights have pairs
    that can saturate (``can_saturate``), on a host with instruction set ``isa`` (default: this host's)."""
    return _plan(bool(saturate_pairs), bool(can_saturate), host_isa() if isa is None else isa)


@functools.lru_cache(maxsize=None)
def _plan(saturate_pairs: bool, can_saturate: bool, isa: int) -> GemmPlan:
    """:func:`choose_plan` once per distinct question (it is asked on every layer call)."""
    if isa == ISA_NONE:
        return GemmPlan(ISA_NONE, False, False)
    if isa == ISA_AVX512VNNI:
        return GemmPlan(isa, saturate_pairs and can_saturate, False)
    return GemmPlan(isa, True, can_saturate and not saturate_pairs)


_KINDS = {c: MacKind(c) for c in range(2 * MAC_SWAP)}


def mac_kind(plan: GemmPlan, weights_broadcast: bool) -> MacKind:
    """The :func:`~minquant.kernels.simd.mac` kind of a plan (``weights_broadcast``: the convolution layout)."""
    if plan.isa == ISA_AVX512VNNI:
        k = MAC_PAIRS_VNNI if plan.pairs else MAC_VNNI
    else:
        k = MAC_PAIRS_512 if plan.isa == ISA_AVX512BW else MAC_PAIRS_256
    return _KINDS[k + (MAC_SWAP if weights_broadcast else 0)]


# ------------------------------------------------------------------------------------------- packing
def split_weights(w_q) -> np.ndarray:
    """(N, K) int8 → (N, 2K) int8 [⌊w/2⌋ | ⌈w/2⌉]: two halves in [−64, 64] whose products never saturate
    an int16 pair (255·64·2 = 32640), summing to w."""
    lo = np.right_shift(w_q, 1)                                  # arithmetic shift: floor(w / 2)
    return np.concatenate([lo, (w_q.astype(np.int16) - lo).astype(np.int8)], axis=1)


def _pad_k(w, k4):
    """(R, K) → (R, 4·k4) zero-padded, C-contiguous."""
    out = np.zeros((w.shape[0], 4 * k4), w.dtype)
    out[:, :w.shape[1]] = w
    return out


def _k4(k):
    return -(-k // 4)


def weight_operand(packed, layout_lanes: bool, split: bool) -> np.ndarray:
    """The weights of a :class:`~minquant.kernels.gemm.PackedWeight` as a SIMD operand, made once and kept
    on it: lane operand [N/64][K'/4][64][4] (linear layout) or broadcast rows (N, K') (conv layout); K' is
    K padded to a multiple of 4, doubled when ``split``."""
    key = (layout_lanes, split)
    got = packed.simd.get(key)
    if got is not None:
        return got
    w = packed.w_q
    n, k = w.shape
    k4 = _k4(k)
    rows = _pad_k(w, k4)
    if split:
        rows = split_weights(rows)
    if layout_lanes:
        k4s = rows.shape[1] // 4
        n64 = -(-n // 64)
        full = np.zeros((n64 * 64, 4 * k4s), np.int8)
        full[:n] = rows
        got = np.ascontiguousarray(full.reshape(n64, 64, k4s, 4).transpose(0, 2, 1, 3)).reshape(-1)
    else:
        got = np.ascontiguousarray(rows)
    packed.simd[key] = got
    return got


# ------------------------------------------------------------------------------------------- linear
@njit(cache=True, inline="always")
def _lanes_out(acc, nn, n0, mode, consts, bq, zf, lof, out_f, o0, tail):
    """out_f[o0 + c] = the output stage of acc[c] (int32, output channel n0 + c), c < nn, 16 channels per step
    (:func:`~minquant.kernels.requant_simd.requant16_lanes`; a last partial chunk through ``tail``). One loop
    per mode, so that the mode is a constant in each."""
    full = nn // 16 * 16
    if mode == 0:
        for c in range(0, full, 16):
            store_codes16(out_f, o0 + c, requant16_lanes(0, load16(acc, 4 * c), consts, bq, n0 + c, zf, lof))
    elif mode == 1:
        for c in range(0, full, 16):
            store_codes16(out_f, o0 + c, requant16_lanes(1, load16(acc, 4 * c), consts, bq, n0 + c, zf, lof))
    elif mode == 2:
        for c in range(0, full, 16):
            store_codes16(out_f, o0 + c, requant16_lanes(2, load16(acc, 4 * c), consts, bq, n0 + c, zf, lof))
    else:
        for c in range(0, full, 16):
            store_codes16(out_f, o0 + c, requant16_lanes(4, load16(acc, 4 * c), consts, bq, n0 + c, zf, lof))
    if full < nn:
        store_codes16(tail, 0, requant16_lanes(mode, load16(acc, 4 * full), consts, bq, n0 + full, zf, lof))
        for i in range(nn - full):
            out_f[o0 + full + i] = tail[i]


@njit(cache=True, inline="always")
def _chunk_rows(mode, C, W, mb, c, ct, n0, consts, bq, zf, lof, out_f, o0, N):
    """Channels c .. c + 15 of rows m < mb of the int32 block C (row pitch W), less the zero-point terms ct[c ..
    c + 15] → out_f[o0 + m·N + c]: the output stage on 16 lanes, one row after another with the channel
    constants fixed."""
    t = load16(ct, 4 * c)
    for m in range(mb):
        store_codes16(out_f, o0 + m * N + c, requant16_lanes(mode, sub16(load16(C, 4 * (m * W + c)), t), consts, bq,
                                                             n0 + c, zf, lof))


@njit(cache=True)
def _rows_out(C, mb, nn, n0, cterm, zero_ct, zw, has_wzp, row_sum, m0, N, mode, consts, bq, zf, lof, out_f, tail):
    """The epilogue of a finished int32 block: rows m < mb of C (channels n0 .. n0 + nn − 1 along the row) →
    out_f's rows m0 + m. The output stage runs 16 channels at a time down the rows, the zero-point term of each
    channel taken off on the way (``cterm``, W + 16 long; with weight zero points, one pass over the block
    first and ``zero_ct``, zeros; :func:`~minquant.kernels.requant_simd.requant16_lanes`) — the channel loop
    outside, so that its constants stay put (measured: a 16-channel row at a time is ~20× slower); a last
    partial chunk goes through ``tail``. One loop per mode, so that the mode is a constant in each."""
    W = C.shape[1]
    Cf = C.reshape(C.size)
    ct = cterm                            # taken off 16 lanes at a time by _chunk_rows
    if has_wzp:                           # the per-row term z_w·Σ_k a as well: one pass over the block first
        for m in range(mb):
            rs = np.int32(row_sum[m0 + m])
            for c in range(U(nn)):
                Cf[U(m * W) + c] -= cterm[c] + zw[c] * rs
        ct = zero_ct
    full = nn // 16 * 16
    o0 = m0 * N + n0
    for c in range(0, full, 16):
        if mode == 0:
            _chunk_rows(0, C, W, mb, c, ct, n0, consts, bq, zf, lof, out_f, o0, N)
        elif mode == 1:
            _chunk_rows(1, C, W, mb, c, ct, n0, consts, bq, zf, lof, out_f, o0, N)
        elif mode == 2:
            _chunk_rows(2, C, W, mb, c, ct, n0, consts, bq, zf, lof, out_f, o0, N)
        else:
            _chunk_rows(4, C, W, mb, c, ct, n0, consts, bq, zf, lof, out_f, o0, N)
    if full < nn:      # (reads lanes up to the next multiple of 16, inside the row: W is a multiple of 64)
        t = load16(ct, 4 * full)
        for m in range(mb):
            store_codes16(tail, 0, requant16_lanes(mode, sub16(load16(C, 4 * (m * W + full)), t), consts, bq,
                                                   n0 + full, zf, lof))
            for i in range(nn - full):
                out_f[o0 + m * N + full + i] = tail[i]


@njit(cache=True)
def _linear_kernel(kind, A, V, K4, C, row_sum, col_adj, w_zp, a_zp, consts, bq, mode, bias_f, bias_q, mult32, mult64,
                   y_zp, lo, hi, out):
    """out (M, N) uint8 = output stage of (A · Wᵀ − zero-point terms), by blocks of MB rows (C's rows). C (MB,
    NB·64) holds NB 64-channel panels side by side, so that each epilogue call sweeps NB·64 channels of a row."""
    M, N = out.shape
    ldb = A.shape[1]
    MB, W = C.shape
    nb = W // 64
    accrow = np.empty(W, np.int32)
    cterm = np.zeros(W + 16, np.int32)     # + 16: the 16-lane read of a last partial chunk stays inside
    zero_ct = np.zeros(W + 16, np.int32)
    zw = np.empty(W, np.int32)
    n_panels = (N + 63) // 64
    vec = mode in VECTOR_MODES and consts.shape[1] == N + 16   # the output stage on 16 channels per step
    zf, lof = np.float32(y_zp), np.float32(lo)
    tail = np.empty(16, np.uint8)
    out_f = out.reshape(out.size)
    has_wzp = False
    for n in range(N):
        has_wzp = has_wzp or w_zp[n] != 0
    for m0 in range(0, M, MB):             # row blocks: the int32 block C stays in cache until its epilogue
        mb = min(MB, M - m0)
        Ab = A[m0:m0 + mb]
        for j0 in range(0, n_panels, nb):
            for jj in range(min(nb, n_panels - j0)):
                n_left = N - (j0 + jj) * 64
                tiles.product_panel(kind, Ab, ldb, mb, V, (j0 + jj) * K4 * 256, K4, KC, C, jj * 256, W * 4,
                                    min(n_left, 64))
            n0 = j0 * 64
            nn = min(W, N - n0)
            for c in range(nn):
                cterm[c] = np.int32(a_zp * col_adj[n0 + c])
                zw[c] = np.int32(w_zp[n0 + c])
            if vec:
                _rows_out(C, mb, nn, n0, cterm, zero_ct, zw, has_wzp, row_sum, m0, N, mode, consts, bq, zf, lof, out_f,
                          tail)
                continue
            for m in range(mb):
                row = C[m]
                rs = np.int32(row_sum[m0 + m])
                for c in range(nn):
                    accrow[c] = row[c] - cterm[c] - zw[c] * rs
                _requant_lanes(accrow[:nn], n0, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi,
                               out[m0 + m, n0:n0 + nn])


def _lane_waste(n):
    """Lanes computed per useful lane when n values fill 64-lane panels."""
    return 64 * -(-n // 64) / n


def _panels_per_block(rows, panels):
    """How many 64-lane panels share one int32 block before the epilogue: up to 16, the block ≤ 1 MB."""
    return int(max(1, min(16, panels, (1 << 20) // (256 * max(rows, 1)))))


@njit(cache=True)
def _linear_out_kernel(kind, sm, A, V, K4, ct, consts, bq, zf, lof, out):
    """out (M, N) uint8 = the output stage of (A · Wᵀ − ct) with the epilogue in registers
    (:mod:`.tiles_out`): by blocks of ROW_BLOCK rows, every 64-channel panel of a block in turn — 6 rows at a
    time on a full panel, 12 on a panel of 32 or 16 useful channels, then the rows left over one by one.
    In mode 2 ``bq`` already holds the int32 bias minus the zero-point term (``bq − ct``, made once by
    :func:`linear_simd_runner`): that stage adds them together (``_finish16``)."""
    M, N = out.shape
    lda = A.shape[1]
    out_f = out.reshape(out.size)
    n_panels = (N + 63) // 64
    for m0 in range(0, M, ROW_BLOCK):
        mb = min(ROW_BLOCK, M - m0)
        for j in range(n_panels):
            n0 = j * 64
            nn = min(64, N - n0)
            v0 = j * K4 * 256
            a0, o0 = m0 * lda, m0 * N + n0
            if nn <= 16:
                r = mb // 12 * 12
                tiles_out.out_tile12x16(kind, sm, A, a0, lda, r, V, v0, K4, ct, consts, bq, n0, nn, zf, lof, out_f,
                                        o0, N)
                tiles_out.out_tile1x16(kind, sm, A, a0 + r * lda, lda, mb - r, V, v0, K4, ct, consts, bq, n0, nn, zf,
                                       lof, out_f, o0 + r * N, N)
            elif nn <= 32:
                r = mb // 12 * 12
                tiles_out.out_tile12x32(kind, sm, A, a0, lda, r, V, v0, K4, ct, consts, bq, n0, nn, zf, lof, out_f,
                                        o0, N)
                tiles_out.out_tile1x32(kind, sm, A, a0 + r * lda, lda, mb - r, V, v0, K4, ct, consts, bq, n0, nn, zf,
                                       lof, out_f, o0 + r * N, N)
            else:
                r = mb // 6 * 6
                tiles_out.out_tile6x64(kind, sm, A, a0, lda, r, V, v0, K4, ct, consts, bq, n0, nn, zf, lof, out_f,
                                       o0, N)
                tiles_out.out_tile1x64(kind, sm, A, a0 + r * lda, lda, mb - r, V, v0, K4, ct, consts, bq, n0, nn, zf,
                                       lof, out_f, o0 + r * N, N)


def _zero_point_terms(packed, x_zp, col_adj) -> np.ndarray:
    """ct[n] = z_x·col_adj[n] as int32 (+ 16 spare lanes), made once per layer and input zero point."""
    key = ("ct", int(x_zp))
    got = packed.simd.get(key)
    if got is None:
        n = col_adj.shape[0]
        got = np.zeros(n + 16, np.int32)
        got[:n] = (np.int64(x_zp) * np.asarray(col_adj, np.int64)).astype(np.int32)
        packed.simd[key] = got
    return got


def _stage_mode(packed, st: OutputStage):
    """The :class:`~minquant.kernels.tiles_out.StageMode` of a layer: its mode, and whether every value before
    rounding stays below 2^30 — |acc| ≤ 255·max_n Σ_k |w| (doubled to spare), through
    :func:`~minquant.kernels.requant_simd.round_bound`. The bound is found once per weights and stage (kept on
    the weights as plain data, with the stage it was made for)."""
    got = packed.simd.get(("int_round", id(st)))
    if got is None or got[0] is not st:
        got = packed.simd[("int_round", id(st))] = (st, round_bound(st, 2.0 * 255 * packed.abs_sum_max) < 2.0 ** 30)
    return tiles_out.STAGE_MODES[(st.mode, got[1])]


def epilogue_in_registers(plan: GemmPlan, has_wzp: bool, mode: int) -> bool:
    """Whether a linear-layout product runs :mod:`.tiles_out` (the zero-point term and the output stage in zmm
    registers) rather than :mod:`.tiles` and the epilogue of :func:`_rows_out`: 512-bit instructions, weight
    zero points 0 (no per-row term) and a float32 output stage."""
    return plan.isa >= ISA_AVX512BW and not has_wzp and mode in VECTOR_MODES


def linear_simd(plan: GemmPlan, packed, x_q, x_zp, col_adj, st: OutputStage, lanes=None) -> np.ndarray:
    """uint8 (M, N) of a quantized linear layer on ``plan``'s instructions (module docstring). ``lanes``: the
    stage's :func:`~minquant.kernels.requant_simd.lane_constants`, if the caller keeps them. On zmm, with
    weight zero points 0 and a float32 output stage, the epilogue runs in registers (:mod:`.tiles_out`)."""
    return linear_simd_runner(plan, packed, x_zp, col_adj, st, lanes)(x_q)


def linear_simd_runner(plan: GemmPlan, packed, x_zp, col_adj, st: OutputStage, lanes=None):
    """:func:`linear_simd` in two steps: what does not depend on the rows (the weight operand, the multiply-add
    kind, whether Σ_k a is needed, the epilogue's constants and path) made once; ``run(x_q)`` multiplies uint8
    (M, K) rows (what :class:`~minquant.kernels.QLinear` and ``QConv2d.nhwc`` keep per plan)."""
    V = weight_operand(packed, True, plan.split)
    kind = mac_kind(plan, False)
    n, k = packed.w_q.shape
    k4 = _k4(k)
    has_wzp = bool(np.any(packed.w_zp))
    consts, bq = lanes if lanes is not None else lane_constants(st, n)
    if epilogue_in_registers(plan, has_wzp, st.mode):      # zero-point term and output stage in registers
        sm, ct = _stage_mode(packed, st), _zero_point_terms(packed, x_zp, col_adj)
        # mode 2 adds the zero-point term with its int32 bias: fold it in once, not per call
        bq_out = (bq - ct[:bq.shape[0]]).astype(np.int32) if st.mode == 2 else bq
        out_args = (sm, ct, consts, bq_out, np.float32(st.y_zp), np.float32(st.lo))
    else:
        out_args = None
    epilogue = (col_adj, packed.w_zp, np.int64(x_zp), consts, bq, st.mode, st.bias_f, st.bias_q, st.mult32,
                st.mult64, np.float64(st.y_zp), np.float64(st.lo), st.hi)
    widths = {}     # rows M → width of the int32 block

    def run(x_q):
        m = x_q.shape[0]
        a = x_q
        if k % 4 or plan.split or not x_q.flags.c_contiguous:
            a = _pad_k(x_q, k4)
            if plan.split:
                a = np.concatenate([a, a], axis=1)
        out = np.empty((m, n), np.uint8)
        if out_args is not None:
            sm, ct, lane_c, lane_bq, zf, lof = out_args
            _linear_out_kernel(kind, sm, a, V, a.shape[1] // 4, ct, lane_c, lane_bq, zf, lof, out)
            return out
        row_sum = x_q.sum(1, dtype=np.int64) if has_wzp else np.zeros(m, np.int64)
        mb = max(min(m, ROW_BLOCK), 1)
        width = widths.get(mb)
        if width is None:
            width = widths[mb] = 64 * _panels_per_block(mb, -(-n // 64))
        _linear_kernel(kind, a, V, a.shape[1] // 4, np.empty((mb, width), np.int32), row_sum, *epilogue, out)
        return out
    return run


# ------------------------------------------------------------------------------------------- conv
@njit(cache=True)
def _pack_pointwise(x, b, p0, pn, K4, V):
    """Panel of a 1×1 stride-1 conv: V[g][l][i] = x[b, 4g+i, p0+l] (0 past the channels / pixels)."""
    c_in = x.shape[1]
    xb = x[b].reshape(c_in, x.shape[2] * x.shape[3])
    for g in range(K4):
        base = g * 256
        c = 4 * g
        if c + 4 <= c_in:
            r0 = xb[c, p0:p0 + pn]
            r1 = xb[c + 1, p0:p0 + pn]
            r2 = xb[c + 2, p0:p0 + pn]
            r3 = xb[c + 3, p0:p0 + pn]
            for l in range(pn):
                V[base + 4 * l] = r0[l]
                V[base + 4 * l + 1] = r1[l]
                V[base + 4 * l + 2] = r2[l]
                V[base + 4 * l + 3] = r3[l]
        else:
            for l in range(pn):
                for i in range(4):
                    V[base + 4 * l + i] = xb[c + i, p0 + l] if c + i < c_in else 0
        for i in range(4 * pn, 256):
            V[base + i] = 0


@njit(cache=True)
def _pad_image(x, b, ph, pw, zp, xp):
    """xp (C, H + 2·ph, W + 2·pw) = image b of x with a border of z_x (real 0) — once per image, so that
    :func:`_pack_im2col` reads every tap without a bounds test."""
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    xp[:] = zp
    for c in range(c_in):
        for r in range(h):
            xp[c, r + ph, pw:pw + w] = x[b, c, r]


@njit(cache=True)
def _pack_im2col(xp, p0, pn, kh, kw, sh, sw, dh, dw, ow, K4, V):
    """Panel of a general conv: V[k//4][l][k%4] = the padded input ``xp`` (:func:`_pad_image`) seen by tap
    k = (i·kw + j)·C + c of output pixel p0 + l (0 past K and past the last pixel). Tap by tap, so that the
    inner loop runs over the 64 lanes with the tap's offset fixed: a gather with unsigned indices (no
    wrap-around test)."""
    c_in, hp, wp = xp.shape
    xb = xp.reshape(c_in * hp * wp)
    V[:K4 * 256] = 0
    lane = np.empty(64, np.uint64)
    for l in range(pn):
        oy = (p0 + l) // ow
        lane[l] = oy * sh * wp + (p0 + l - oy * ow) * sw
    for i in range(kh):
        for j in range(kw):
            for c in range(c_in):
                k = (i * kw + j) * c_in + c
                base = np.uint64((k >> 2) * 256 + (k & 3))
                off = np.uint64((c * hp + i * dh) * wp + j * dw)
                for l in range(np.uint64(pn)):
                    V[base + 4 * l] = xb[off + lane[l]]


@njit(cache=True)
def _conv_kernel(kind, x, Wr, K4, repeat, kh, kw, sh, sw, ph, pw, dh, dw, ow, x_zp, need_sums, V, C, accrow, m_sum,
                 col_adj, w_zp, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out3):
    """out3 (batch, N, P) uint8: for each image, blocks of PB 64-pixel panels — each panel packed (``repeat``
    = 2 duplicates it for split weights) and multiplied by all N weight rows into its columns of C (N, PB·64)
    — then the epilogue, one output channel (a row of PB·64 pixels) at a time: for the float32 output stages
    and weight zero point 0 straight from C on 16 lanes (:func:`~minquant.kernels.requant_simd.requant_row16`),
    otherwise through ``accrow``."""
    n_img = x.shape[0]
    N, P = out3.shape[1], out3.shape[2]
    ldb = Wr.shape[1]
    W = C.shape[1]
    pb = W // 64
    pointwise = kh == 1 and kw == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0
    half = K4 * 256
    vec = mode in VECTOR_MODES   # the output stage on 16 lanes (:mod:`.requant_simd`)
    tail = np.empty(16, np.uint8)
    n_panels = (P + 63) // 64
    xp = np.empty((0, 0, 0), np.uint8) if pointwise else np.empty((x.shape[1], x.shape[2] + 2 * ph,
                                                                    x.shape[3] + 2 * pw), np.uint8)
    for b in range(n_img):
        if not pointwise:
            _pad_image(x, b, ph, pw, np.uint8(x_zp), xp)
        for j0 in range(0, n_panels, pb):
            for jj in range(min(pb, n_panels - j0)):
                p0 = (j0 + jj) * 64
                pn = min(64, P - p0)
                if pointwise:
                    _pack_pointwise(x, b, p0, pn, K4, V)
                else:
                    _pack_im2col(xp, p0, pn, kh, kw, sh, sw, dh, dw, ow, K4, V)
                if repeat == 2:
                    V[half:2 * half] = V[:half]
                if need_sums:
                    for l in range(64):
                        m_sum[jj * 64 + l] = 0
                    for g in range(K4):
                        for l in range(64):
                            o = g * 256 + 4 * l
                            m_sum[jj * 64 + l] += (np.int32(V[o]) + np.int32(V[o + 1]) + np.int32(V[o + 2])
                                                   + np.int32(V[o + 3]))
                tiles.product_panel(kind, Wr, ldb, N, V, 0, K4 * repeat, KC, C, jj * 256, W * 4)
            p0 = j0 * 64
            pn = min(W, P - p0)
            for n in range(N):
                cterm = np.int32(x_zp * col_adj[n])
                zw = np.int32(w_zp[n])
                if vec and zw == 0:      # straight from the int32 block, 16 lanes at a time
                    requant_row16(C, n * W * 4, pn, cterm, n, mode, bias_f, bias_q, mult32, y_zp, lo, hi, out3,
                                  (b * N + n) * P + p0, tail)
                    continue
                row = C[n]
                for l in range(pn):
                    accrow[l] = row[l] - cterm
                if zw != 0:
                    for l in range(pn):
                        accrow[l] -= zw * m_sum[l]
                _requant_row(accrow[:pn], n, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, out3[b, n, p0:p0 + pn])


def conv_simd(plan: GemmPlan, packed, x_q, kernel, stride, padding, dilation, ow, x_zp, col_adj,
              st: OutputStage, out3, lanes=None) -> np.ndarray:
    """A groups = 1 convolution (``packed``: its (N, KH·KW·C) :class:`~minquant.kernels.gemm.PackedWeight`)
    into ``out3`` (batch, N, OH·OW) on ``plan``'s instructions (module docstring)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    n_img, c_in = x_q.shape[0], x_q.shape[1]
    P = out3.shape[2]
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0) and P < 64 and _lane_waste(P) > _lane_waste(packed.w_q.shape[0]):
        # a 1×1 conv on an image of less than one panel (7×7): its pixels fill a 64-lane panel badly and each
        # output channel's epilogue sweep is short — run it as a linear layer on the channels-last pixels
        # (lanes = output channels; measured faster below 64 pixels, slower from 14×14 up)
        rows = np.ascontiguousarray(x_q.reshape(n_img, c_in, P).transpose(0, 2, 1)).reshape(n_img * P, c_in)
        y = linear_simd(plan, packed, rows, x_zp, col_adj, st, lanes)
        out3[...] = y.reshape(n_img, P, -1).transpose(0, 2, 1)
        return out3
    Wr = weight_operand(packed, False, plan.split)
    n, k = packed.w_q.shape
    k4 = _k4(k)
    repeat = 2 if plan.split else 1
    V = np.empty(k4 * repeat * 256, np.uint8)
    width = 64 * _panels_per_block(n, -(-P // 64))
    C = np.empty((n, width), np.int32)
    _conv_kernel(mac_kind(plan, True), np.ascontiguousarray(x_q), Wr, k4, repeat, kh, kw, sh, sw, ph, pw,
                 dh, dw, ow, np.int64(x_zp), bool(np.any(packed.w_zp)), V, C, np.empty(width, np.int32),
                 np.zeros(width, np.int32), col_adj, packed.w_zp, st.mode, st.bias_f, st.bias_q, st.mult32,
                 st.mult64, np.float64(st.y_zp), np.float64(st.lo), st.hi, out3)
    return out3


# ------------------------------------------------------------------------------------------- channels-last conv
@njit(cache=True)
def _im2col_rows(x, kh, kw, sh, sw, ph, pw, dh, dw, zp, kp, buf):
    """Rows A[(b·OH + y)·OW + x, (i·kw + j)·C + c] = x[b, y·sh + i·dh − ph, x·sw + j·dw − pw, c] of a
    channels-last ``x`` (batch, H, W, C) — z_x (real 0) where the tap falls in the padding, 0 in A's columns
    past K — written into ``buf`` (flat, A's kp-byte rows, then at least 32 spare bytes). The rows of the linear
    layout: one output pixel per row, K in (kh, kw, c) order.

    Each image is first copied into a z_x-bordered image (so that no tap needs a bounds test); a row is then
    made of contiguous runs of that image — a tap row's kw·C bytes when dw = 1, a tap's C bytes otherwise —
    copied 32 bytes at a time (a ymm load and store): a run's last copy spills up to 31 bytes past its end,
    which the next run (or the zeros past K, or the next row) overwrites; ``buf`` and the bordered image have
    32 bytes to spare. (Runs only with the JIT, as every int8 SIMD path.)"""
    n_img, h, w, c_in = x.shape
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    hp, wp = h + 2 * ph, w + 2 * pw
    xf = x.reshape(x.size)
    xp = np.empty(hp * wp * c_in + 32, np.uint8)
    run = kw * c_in if dw == 1 else c_in          # bytes of one contiguous run
    runs = 1 if dw == 1 else kw                   # runs per tap row
    step = dw * c_in
    short = runs == 1 and run <= 32               # each tap row one run of at most 32 bytes (a model's first conv)
    for b in range(n_img):
        xp[:] = zp
        for r in range(h):
            d = U(((r + ph) * wp + pw) * c_in)
            s0 = U(((b * h + r) * w) * c_in)
            for t in range(U(w * c_in)):
                xp[d + t] = xf[s0 + t]
        if short:   # the same copies without the inner loops: one ymm move per tap row (1.5x faster on 3x224x224)
            for y in range(oh):
                for xo in range(ow):
                    r0 = ((b * oh + y) * ow + xo) * kp
                    d = U(r0)
                    src = U((y * sh * wp + xo * sw) * c_in)
                    for i in range(kh):
                        store8(buf, d, load8(xp, src))
                        d += U(run)
                        src += U(dh * wp * c_in)
                    for k in range(d, U(r0 + kp)):
                        buf[k] = 0
            continue
        for y in range(oh):
            for xo in range(ow):
                r0 = ((b * oh + y) * ow + xo) * kp
                d = U(r0)
                for i in range(kh):
                    src = ((y * sh + i * dh) * wp + xo * sw) * c_in
                    for j in range(runs):
                        s0 = U(src + j * step)
                        for t in range(U(0), U(run), U(32)):
                            store8(buf, d + t, load8(xp, s0 + t))     # 32 bytes: one ymm move
                        d += U(run)
                for k in range(d, U(r0 + kp)):
                    buf[k] = 0


def conv_rows_simd(plan: GemmPlan, packed, x_nhwc, kernel, stride, padding, dilation, x_zp, col_adj,
                   st: OutputStage, lanes=None) -> np.ndarray:
    """A groups = 1 convolution on channels-last codes: ``x_nhwc`` (batch, H, W, C) → (batch, OH, OW, N) uint8,
    as the linear layout (lanes = output channels, rows = output pixels): a 1×1 stride-1 convolution *is*
    the product of the pixel rows (batch·H·W, C) by the weights, read in place when C is a multiple of 4;
    otherwise the rows are the channels-last im2col matrix (:func:`_im2col_rows`). Same integers, same output
    stage as :func:`conv_simd` (module docstring)."""
    return conv_rows_simd_runner(plan, packed, kernel, stride, padding, dilation, x_zp, col_adj, st, lanes)(x_nhwc)


def conv_rows_simd_runner(plan: GemmPlan, packed, kernel, stride, padding, dilation, x_zp, col_adj,
                          st: OutputStage, lanes=None):
    """:func:`conv_rows_simd` in two steps, as :func:`linear_simd_runner`: ``run(x_nhwc)`` for contiguous uint8
    channels-last codes."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    product = linear_simd_runner(plan, packed, x_zp, col_adj, st, lanes)
    pointwise = (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0)
    kp = 4 * _k4(packed.w_q.shape[1])      # K = KH·KW·C, padded to a multiple of 4
    zp = np.uint8(x_zp)

    def run(x_nhwc):
        n_img, h, w, c_in = x_nhwc.shape
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if pointwise:
            rows = x_nhwc.reshape(n_img * h * w, c_in)
        else:
            m = n_img * oh * ow
            buf = np.empty(m * kp + 32, np.uint8)      # (+ 32: the last run's spill, _im2col_rows)
            _im2col_rows(np.ascontiguousarray(x_nhwc), kh, kw, sh, sw, ph, pw, dh, dw, zp, kp, buf)
            rows = buf[:m * kp].reshape(m, kp)
            # (the columns past K are 0: they add nothing to the product nor to the row sums Σ_k a)
        return product(rows).reshape(n_img, oh, ow, -1)
    return run
