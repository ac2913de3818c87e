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

from dataclasses import dataclass

import numpy as np
from numba import njit

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
    if not 0 <= int(a_zp) <= 255:
        raise ValueError(f"activation zero point {a_zp} outside [0, 255]")
    w_zp = np.broadcast_to(np.asarray(w_zp, dtype=np.int64), (w.shape[0],))
    if np.any(w_zp < -128) or np.any(w_zp > 127):
        raise ValueError("weight zero point outside [-128, 127]")
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

    w_q: (N, K) int8 codes; w_t: (K, N) float32 copy for BLAS; w_t64: float64 copy (made on demand);
    col_sum: (N,) Σ_k w; w_zp: (N,) zero points; risky: (R, 2) int64 rows of (n, k0) — weight pairs
    (k0, k0+1) that can saturate int16; norm_max: max_n ‖w_n‖₂."""
    w_q: np.ndarray
    w_t: np.ndarray
    col_sum: np.ndarray
    w_zp: np.ndarray
    risky: np.ndarray
    norm_max: float


def pack_weight(w_q, w_zp=0) -> PackedWeight:
    """Prepare (N, K) int8 weights for :func:`gemm_u8s8` (see :class:`PackedWeight`)."""
    w_q = np.ascontiguousarray(w_q)
    if w_q.dtype != np.int8 or w_q.ndim != 2:
        raise ValueError(f"weights must be a 2-D int8 array, got {w_q.dtype} {w_q.shape}")
    n, k = w_q.shape
    w_zp = np.ascontiguousarray(np.broadcast_to(np.asarray(w_zp, dtype=np.int64), (n,)))
    w64 = w_q.astype(np.int64)
    wp = np.pad(w64, ((0, 0), (0, k % 2)))
    pos = np.maximum(wp, 0)
    neg = np.maximum(-wp, 0)
    risky_pair = ((255 * (pos[:, 0::2] + pos[:, 1::2]) > INT16_MAX)
                  | (255 * (neg[:, 0::2] + neg[:, 1::2]) > -INT16_MIN))
    rn, rp = np.nonzero(risky_pair)
    risky = np.stack([rn, 2 * rp], axis=1).astype(np.int64) if rn.size else np.zeros((0, 2), np.int64)
    return PackedWeight(w_q=w_q, w_t=np.ascontiguousarray(w_q.T, dtype=np.float32),
                        col_sum=w64.sum(1), w_zp=w_zp, risky=risky,
                        norm_max=float(np.sqrt((w64 * w64).sum(1).max())) if n and k else 0.0)


@njit(cache=True)
def _row_stats_kernel(a, row_sum):
    """Σ_k a[m,k] per row, and max_m Σ_k a[m,k]² (for the exactness bound)."""
    best = 0
    for m in range(a.shape[0]):
        s = 0
        s2 = 0
        for k in range(a.shape[1]):
            v = np.int64(a[m, k])
            s += v
            s2 += v * v
        row_sum[m] = s
        if s2 > best:
            best = s2
    return best


@njit(cache=True)
def _finish_kernel(raw, a, row_sum, col_sum, w_zp, a_zp, w_q, risky, saturate, out):
    """out = raw − z_a·Σw − z_w·Σa + K·z_a·z_w, with int16 pair-saturation corrections on risky pairs."""
    M, N = raw.shape
    K = a.shape[1]
    for m in range(M):
        for n in range(N):
            out[m, n] = (np.int64(np.rint(raw[m, n])) - a_zp * col_sum[n] - w_zp[n] * row_sum[m]
                         + K * a_zp * w_zp[n])
    if saturate:
        for r in range(risky.shape[0]):
            n = risky[r, 0]
            k0 = risky[r, 1]
            w0 = np.int64(w_q[n, k0])
            w1 = np.int64(w_q[n, k0 + 1]) if k0 + 1 < K else np.int64(0)
            for m in range(M):
                p = np.int64(a[m, k0]) * w0
                if k0 + 1 < K:
                    p += np.int64(a[m, k0 + 1]) * w1
                if p > 32767:
                    out[m, n] -= p - 32767
                elif p < -32768:
                    out[m, n] += -32768 - p


def gemm_u8s8(a, w, a_zp, *, saturate_pairs: bool) -> np.ndarray:
    """Fast :func:`gemm_u8s8_reference` (same int32 result, bit for bit). ``w`` is a :class:`PackedWeight`
    (or raw (N, K) int8 codes with zero point 0, packed on the fly)."""
    if not isinstance(w, PackedWeight):
        w = pack_weight(w, 0)
    a, _, _ = _check_gemm_inputs(a, w.w_q, a_zp, w.w_zp)
    a = np.ascontiguousarray(a)
    M = a.shape[0]
    row_sum = np.empty(M, dtype=np.int64)
    a_norm2 = _row_stats_kernel(a, row_sum) if M else 0
    if float(np.sqrt(a_norm2)) * w.norm_max < _F32_EXACT:
        raw = a.astype(np.float32) @ w.w_t          # exact: every partial sum is an integer < 2^24
    else:
        raw = a.astype(np.float64) @ w.w_t.astype(np.float64)   # exact below 2^53
    out = np.empty(raw.shape, dtype=np.int32)
    _finish_kernel(raw, a, row_sum, w.col_sum, w.w_zp, np.int64(a_zp), w.w_q, w.risky, saturate_pairs, out)
    return out
