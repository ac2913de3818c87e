"""The integer matrix product at the heart of quantized linear and conv (docs/quantization.md, steps 4 and 8).

With activations ``a`` (uint8, zero point z_a) and weights ``w`` (int8, zero point z_w per output row n),
the accumulator of output (m, n) is

    acc[m, n] = Σ_k (a[m,k] − z_a)(w[n,k] − z_w[n])
              = Σ_k a·w  −  z_a·Σ_k w[n,k]  −  z_w[n]·Σ_k a[m,k]  +  K·z_a·z_w[n]       (step 4)

The frameworks compute the raw product Σ a·w on the *stored* codes (uint8 × int8, the only pair the SIMD
instructions take) and subtract the zero-point terms afterwards — the "zero-point offset trick": the column
sums Σ_k w are computed once per weight, the row sums Σ_k a once per input row.

On x86 CPUs without VNNI, fbgemm forms the raw product with ``vpmaddubsw``, which adds each *pair* of
adjacent products ``a[k]·w[k] + a[k+1]·w[k+1]`` (k even) and saturates the pair to int16 [−32768, 32767]
before it is widened and accumulated in int32 (step 8). 255·127 + 255·127 = 64770 does not fit, so with
full-range weights the result can differ from the exact sum; ``saturate_pairs=True`` reproduces that.

``gemm_u8s8_reference`` is the readable spec (NumPy, int64). ``gemm_u8s8`` is the fast version:

1. the raw product runs as a float32 BLAS GEMM. Every partial sum of Σ a·w is an integer of magnitude at
   most Σ|a|·|w|, and float32 represents every integer below 2^24 exactly, so when
   max_m ‖a_m‖₂ · max_n ‖w_n‖₂ < 2^24 (Cauchy–Schwarz bounds Σ|a||w|) the float32 product is *exact*,
   whatever order BLAS adds in. Otherwise it falls back to float64 (exact below 2^53).
2. saturation is corrected only where it can happen: a pair saturates only if
   255·(w0⁺ + w1⁺) > 32767 or 255·(w0⁻ + w1⁻) > 32768, i.e. the pair's same-sign weights add up to ≥ 129 in
   magnitude. Those "risky" weight pairs are found once when the weights are packed; for each, every row's
   pair sum is recomputed and the excess over the int16 range subtracted.
3. the zero-point terms are applied in int64 and the result returned as int32.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from .checks import check_weight_zp, check_zero_point

__all__ = ["PackedWeight", "pack_weight", "gemm_u8s8", "gemm_u8s8_reference", "INT16_MIN", "INT16_MAX"]

INT16_MIN, INT16_MAX = -32768, 32767
_F32_EXACT = float(2 ** 24)


def _check_gemm_inputs(a, w, a_zp, w_zp):
    a = np.asarray(a)
    w = np.asarray(w)
    if a.dtype != np.uint8 or a.ndim != 2:
        raise ValueError(f"activations must be a 2-D uint8 array, got {a.dtype} {a.shape}")
    if w.dtype != np.int8 or w.ndim != 2:
        raise ValueError(f"weights must be a 2-D int8 array, got {w.dtype} {w.shape}")
    if a.shape[1] != w.shape[1]:
        raise ValueError(f"shape mismatch: activations have K={a.shape[1]} columns, weights K={w.shape[1]}")
    if a.shape[1] > 65536:
        raise ValueError(f"K={a.shape[1]} > 65536: 255·128·K may overflow the int32 accumulator")
    check_zero_point(a_zp, "a_zp")
    check_weight_zp(w_zp, w.shape[0])
    w_zp = np.broadcast_to(np.asarray(w_zp, dtype=np.int64), (w.shape[0],))
    return a, w, w_zp


def gemm_u8s8_reference(a, w, a_zp, w_zp, *, saturate_pairs: bool) -> np.ndarray:
    """acc[m, n] = Σ_k (a[m,k] − z_a)(w[n,k] − z_w[n]) as int32 (M, N), the raw product optionally
    formed with int16 pair saturation (module docstring). a: uint8 (M, K); w: int8 (N, K)."""
    a, w, w_zp = _check_gemm_inputs(a, w, a_zp, w_zp)
    a64, w64 = a.astype(np.int64), w.astype(np.int64)
    K = a.shape[1]
    if saturate_pairs:
        if K % 2:  # an odd K is padded with one zero column: the last product forms a pair on its own
            a64 = np.pad(a64, ((0, 0), (0, 1)))
            w64 = np.pad(w64, ((0, 0), (0, 1)))
        raw = np.zeros((a.shape[0], w.shape[0]), dtype=np.int64)
        for k in range(0, a64.shape[1], 2):
            pair = np.outer(a64[:, k], w64[:, k]) + np.outer(a64[:, k + 1], w64[:, k + 1])
            raw += np.clip(pair, INT16_MIN, INT16_MAX)
    else:
        raw = a64 @ w64.T
    acc = (raw - int(a_zp) * w64.sum(1)[None, :] - w_zp[None, :] * a64.sum(1)[:, None]
           + K * int(a_zp) * w_zp[None, :])
    return acc.astype(np.int32)


@dataclass(frozen=True)
class PackedWeight:
    """int8 weights prepared once for :func:`gemm_u8s8` (the analogue of torch's ``linear_prepack``).

    w_q: (N, K) int8 codes; w_t: (K, N) float32 copy for BLAS; col_sum: (N,) Σ_k w; w_zp: (N,) zero points;
    risky: (R, 2) rows of (n, k0) — weight pairs (k0, k0+1) that can saturate int16 — and risky_w: (R, 2)
    their two weights (0 for a missing partner at odd K); norm_max: max_n ‖w_n‖₂; simd: the int8 SIMD
    operands made from w_q on first use (:func:`~minquant.kernels.gemm_simd.weight_operand`)."""
    w_q: np.ndarray
    w_t: np.ndarray
    col_sum: np.ndarray
    w_zp: np.ndarray
    risky: np.ndarray
    risky_w: np.ndarray
    norm_max: float
    abs_sum_max: int = 0
    simd: dict = field(default_factory=dict, compare=False, repr=False)


def pack_weight(w_q, w_zp=0) -> PackedWeight:
    """Prepare (N, K) int8 weights for :func:`gemm_u8s8` (see :class:`PackedWeight`)."""
    w_q = np.ascontiguousarray(w_q)
    if w_q.dtype != np.int8 or w_q.ndim != 2:
        raise ValueError(f"weights must be a 2-D int8 array, got {w_q.dtype} {w_q.shape}")
    n, k = w_q.shape
    check_weight_zp(w_zp, n)
    w_zp = np.ascontiguousarray(np.broadcast_to(np.asarray(w_zp, dtype=np.int64), (n,)))
    w64 = w_q.astype(np.int64)
    wp = np.pad(w64, ((0, 0), (0, k % 2)))
    pos = np.maximum(wp, 0)
    neg = np.maximum(-wp, 0)
    risky_pair = ((255 * (pos[:, 0::2] + pos[:, 1::2]) > INT16_MAX)
                  | (255 * (neg[:, 0::2] + neg[:, 1::2]) > -INT16_MIN))
    rp, rn = np.nonzero(risky_pair.T)          # ordered by k0, then n: rows of A are read in order
    risky = np.stack([rn, 2 * rp], axis=1).astype(np.int64) if rn.size else np.zeros((0, 2), np.int64)
    risky_w = np.stack([wp[rn, 2 * rp], wp[rn, 2 * rp + 1]], axis=1).astype(np.float32) if rn.size \
        else np.zeros((0, 2), np.float32)
    return PackedWeight(w_q=w_q, w_t=np.ascontiguousarray(w_q.T, dtype=np.float32),
                        col_sum=w64.sum(1), w_zp=w_zp, risky=risky, risky_w=np.ascontiguousarray(risky_w),
                        norm_max=float(np.sqrt((w64 * w64).sum(1).max())) if n and k else 0.0,
                        abs_sum_max=int(np.abs(w64).sum(1).max()) if n and k else 0)


@njit(cache=True)
def _rows_kernel(a, a_f, row_sum, col_max):
    """One pass over the uint8 rows: float32 copy for BLAS, Σ_k a per row, max per column, and
    max_m Σ_k a² (for the exactness bound)."""
    M, K = a.shape
    for k in range(K):
        col_max[k] = 0
    best = 0
    for m in range(M):
        s = 0
        s2 = 0
        for k in range(K):
            v = np.int64(a[m, k])
            a_f[m, k] = v
            s += v
            s2 += v * v
            if v > col_max[k]:
                col_max[k] = v
        row_sum[m] = s
        if s2 > best:
            best = s2
    return best


@njit(cache=True)
def _saturation_kernel(a_f, raw, risky, risky_w, col_max):
    """Subtract, for every pair that really overflows int16, its excess from the exact raw product.

    Pairs are first filtered with this batch's column maxima (a pair can only saturate if
    max a[k0]·w0⁺ + max a[k0+1]·w1⁺ > 32767, or the negative analogue), then every row is checked."""
    K = a_f.shape[1]
    R = risky.shape[0]
    keep = np.empty(R, np.int64)
    nk = 0
    for r in range(R):
        k0 = risky[r, 1]
        c0 = col_max[k0]
        c1 = col_max[k0 + 1] if k0 + 1 < K else 0.0
        w0 = risky_w[r, 0]
        w1 = risky_w[r, 1]
        hi = c0 * max(w0, 0.0) + c1 * max(w1, 0.0)
        lo = c0 * min(w0, 0.0) + c1 * min(w1, 0.0)
        if hi > 32767.0 or lo < -32768.0:
            keep[nk] = r
            nk += 1
    if nk == 0:
        return 0
    for m in range(a_f.shape[0]):
        for i in range(nk):
            r = keep[i]
            n = risky[r, 0]
            k0 = risky[r, 1]
            p = a_f[m, k0] * risky_w[r, 0]
            if k0 + 1 < K:
                p += a_f[m, k0 + 1] * risky_w[r, 1]
            if p > 32767.0:
                raw[m, n] -= p - 32767.0
            elif p < -32768.0:
                raw[m, n] += -32768.0 - p
    return nk


def raw_product(a_f, packed: PackedWeight, norm2: float, col_max, saturate_pairs: bool):
    """Exact Σ_k a·w (float32 when max‖a‖·max‖w‖ < 2^24, else float64), with pair saturation applied."""
    if float(np.sqrt(norm2)) * packed.norm_max < _F32_EXACT:
        raw = a_f @ packed.w_t                      # exact: every partial sum is an integer < 2^24
    else:
        raw = a_f.astype(np.float64) @ packed.w_t.astype(np.float64)   # exact below 2^53
    if saturate_pairs and packed.risky.shape[0]:
        _saturation_kernel(a_f, raw, packed.risky, packed.risky_w, col_max.astype(raw.dtype))
    return raw


def prepare_rows(a):
    """uint8 (M, K) → (float32 copy, row sums, column maxima, max squared row norm)."""
    a = np.ascontiguousarray(a)
    M, K = a.shape
    a_f = np.empty((M, K), np.float32)
    row_sum = np.empty(M, np.int64)
    col_max = np.empty(K, np.float32)
    norm2 = _rows_kernel(a, a_f, row_sum, col_max) if M else 0
    return a_f, row_sum, col_max, float(norm2)


@njit(cache=True)
def _finish_kernel(raw, row_sum, col_sum, w_zp, a_zp, out):
    """out = raw − z_a·(Σw − K·z_w) − z_w·Σa (step 4, with K·z_a·z_w folded into ``col_sum``)."""
    M, N = raw.shape
    for m in range(M):
        for n in range(N):
            out[m, n] = np.int64(raw[m, n]) - a_zp * col_sum[n] - w_zp[n] * row_sum[m]


def gemm_u8s8(a, w, a_zp, *, saturate_pairs: bool) -> np.ndarray:
    """Fast :func:`gemm_u8s8_reference` (same int32 result, bit for bit). ``w`` is a :class:`PackedWeight`
    (or raw (N, K) int8 codes with zero point 0, packed on the fly)."""
    if not isinstance(w, PackedWeight):
        w = pack_weight(w, 0)
    a, _, _ = _check_gemm_inputs(a, w.w_q, a_zp, w.w_zp)
    a_f, row_sum, col_max, norm2 = prepare_rows(a)
    raw = raw_product(a_f, w, norm2, col_max, saturate_pairs)
    out = np.empty(raw.shape, dtype=np.int32)
    K = a.shape[1]
    # the constant K·z_a·z_w folds into the column term: −z_a·(Σw − K·z_w)
    _finish_kernel(raw, row_sum, w.col_sum - K * w.w_zp, w.w_zp, np.int64(a_zp), out)
    return out


# ---------------------------------------------------------------------------------------------------------
# The same product in "columns" layout, for convolutions: raw (N, M) = W (N, K) @ cols (K, M), where cols
# comes from im2col_t (one column per output pixel). Row n of the result is output channel n, already in
# NCHW order, and every loop below runs along contiguous rows.
# ---------------------------------------------------------------------------------------------------------
@njit(cache=True)
def _cols_stats_kernel(cols, need_sums, m_sum, k_max):
    """Per output pixel m: Σ_k a (only if need_sums) and max Σ_k a² ; per k: max_m a."""
    K, M = cols.shape
    sq = np.zeros(M, np.float64)
    if need_sums:
        for m in range(M):
            m_sum[m] = 0
    for k in range(K):
        row = cols[k]
        mx = np.float32(0)
        for m in range(M):
            v = row[m]
            sq[m] += v * v
            mx = max(mx, v)
        k_max[k] = mx
        if need_sums:
            for m in range(M):
                m_sum[m] += np.int64(row[m])
    best = 0.0
    for m in range(M):
        best = max(best, sq[m])
    return best


@njit(cache=True)
def _saturation_cols_kernel(cols, raw, risky, risky_w, k_max):
    """Column-layout twin of ``_saturation_kernel``: for every risky pair (n, k0) that this batch can
    overflow, raw[n, :] -= (pair sum − its int16-clamped value), swept along contiguous rows."""
    K, M = cols.shape
    for r in range(risky.shape[0]):
        n = risky[r, 0]
        k0 = risky[r, 1]
        w0 = risky_w[r, 0]
        w1 = risky_w[r, 1]
        c1 = k_max[k0 + 1] if k0 + 1 < K else np.float32(0)
        hi = k_max[k0] * max(w0, np.float32(0)) + c1 * max(w1, np.float32(0))
        lo = k_max[k0] * min(w0, np.float32(0)) + c1 * min(w1, np.float32(0))
        if hi <= 32767.0 and lo >= -32768.0:
            continue
        a0 = cols[k0]
        a1 = cols[k0 + 1] if k0 + 1 < K else cols[k0]
        if k0 + 1 >= K:
            w1 = np.float32(0)
        out = raw[n]
        for m in range(M):
            p = a0[m] * w0 + a1[m] * w1
            out[m] -= p - min(max(p, np.float32(-32768.0)), np.float32(32767.0))


def raw_product_cols(cols, packed: PackedWeight, saturate_pairs: bool, need_sums: bool):
    """Exact raw product in column layout: (raw (N, M), Σ_k a per pixel or None). ``cols`` float32 (K, M)."""
    K, M = cols.shape
    if (not need_sums and (not saturate_pairs or packed.risky.shape[0] == 0)
            and 255 * packed.abs_sum_max < _F32_EXACT):
        # No statistics needed: Σ|a·w| ≤ 255·max_n Σ_k |w[n,k]| < 2^24 whatever the activations, and no
        # weight pair can saturate (e.g. the 7-bit weights minquant uses where fbgemm saturates).
        return packed.w_t.T @ cols, None
    m_sum = np.empty(M, np.int64)
    k_max = np.empty(K, np.float32)
    norm2 = float(_cols_stats_kernel(cols, need_sums, m_sum, k_max)) if M else 0.0
    # the float32 norm² may be off by a few ulps: keep a 1e-3 relative margin on the 2^24 bound
    if float(np.sqrt(norm2)) * packed.norm_max * 1.001 < _F32_EXACT:
        raw = packed.w_t.T @ cols
        if saturate_pairs and packed.risky.shape[0]:
            _saturation_cols_kernel(cols, raw, packed.risky, packed.risky_w, k_max)
    else:
        raw = packed.w_t.T.astype(np.float64) @ cols.astype(np.float64)
        if saturate_pairs and packed.risky.shape[0]:
            _saturation_cols_kernel(cols.astype(np.float64), raw, packed.risky, packed.risky_w.astype(np.float64),
                                    k_max.astype(np.float64))
    return raw, (m_sum if need_sums else None)
