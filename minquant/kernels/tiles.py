"""Register-blocked micro-kernels of the int8 GEMM on the CPU's own instructions (:mod:`.simd`).

The product is C[r, l] = Σ_k B[r, k] · V[l, k] for one *panel* of 64 lanes l, where

* ``B`` is the *broadcast* operand: rows of bytes, row r at byte ``b0 + r·ldb``, K padded to a multiple of
  4 with zeros; each step broadcasts 4 consecutive bytes B[r, 4k..4k+3] to every 32-bit lane;
* ``V`` is the *lane* operand, packed [panel][K/4][64 lanes][4 bytes]: the 4 bytes V[l, 4k..4k+3] of
  lane l at byte ``v0 + k·256 + 4·l`` — one zmm load brings 16 lanes × 4 consecutive k;
* ``C`` is int32, the panel's row r at byte ``c0 + r·ldc`` (several panels side by side in one block);
  ``accumulate`` adds to it (K blocking) instead of overwriting.

``kind`` (a compile-time constant, :func:`~minquant.kernels.simd.mac`) says how 4 bytes of B meet 4 bytes of
V in each lane — vpdpbusd (exact), or vpmaddubsw pairs (int16 saturation) with vpdpwssd / vpmaddwd — and
whether B holds the unsigned bytes (activations: the linear layout) or the signed ones (weights: the
convolution layout, ``+ MAC_SWAP``).

Numba has no arrays of vectors, so each micro-kernel names its accumulators (``c<row><quarter>``). The
512-bit tile is 6 rows × 64 lanes (24 zmm accumulators + 4 weight vectors + a broadcast); the one-row
kernels take the rows left over, and are the only kernel on AVX2 (16 ymm registers: 8 accumulators).
"""
from __future__ import annotations

from numba import njit

from .simd import bcast8, is_ymm, bcast16, load8, load16, mac, store8, store16, zero8, zero16

__all__ = ["TILE_ROWS_512", "LANES"]

LANES = 64          # lanes per panel (one cache line of bytes per k-group of 4 per 16 lanes)
TILE_ROWS_512 = 6   # rows of the 512-bit main tile


# ------------------------------------------------------------------------------------------ 512-bit tiles
@njit(cache=True)
def tile6x64(kind, B, b0, ldb, V, v0, k4n, C, c0, ldc, accumulate):
    """C[0:6, 0:64] (+)= B[0:6] · V-panel over k4n groups of 4 k (module docstring), zmm registers; C's row r
    at byte c0 + r·ldc."""
    e0, e1, e2, e3, e4, e5 = c0, c0 + ldc, c0 + 2 * ldc, c0 + 3 * ldc, c0 + 4 * ldc, c0 + 5 * ldc
    if accumulate:
        c00 = load16(C, e0); c01 = load16(C, e0 + 64); c02 = load16(C, e0 + 128); c03 = load16(C, e0 + 192)
        c10 = load16(C, e1); c11 = load16(C, e1 + 64); c12 = load16(C, e1 + 128); c13 = load16(C, e1 + 192)
        c20 = load16(C, e2); c21 = load16(C, e2 + 64); c22 = load16(C, e2 + 128); c23 = load16(C, e2 + 192)
        c30 = load16(C, e3); c31 = load16(C, e3 + 64); c32 = load16(C, e3 + 128); c33 = load16(C, e3 + 192)
        c40 = load16(C, e4); c41 = load16(C, e4 + 64); c42 = load16(C, e4 + 128)
        c43 = load16(C, e4 + 192)
        c50 = load16(C, e5); c51 = load16(C, e5 + 64); c52 = load16(C, e5 + 128)
        c53 = load16(C, e5 + 192)
    else:
        c00 = zero16(); c01 = zero16(); c02 = zero16(); c03 = zero16()
        c10 = zero16(); c11 = zero16(); c12 = zero16(); c13 = zero16()
        c20 = zero16(); c21 = zero16(); c22 = zero16(); c23 = zero16()
        c30 = zero16(); c31 = zero16(); c32 = zero16(); c33 = zero16()
        c40 = zero16(); c41 = zero16(); c42 = zero16(); c43 = zero16()
        c50 = zero16(); c51 = zero16(); c52 = zero16(); c53 = zero16()
    for k in range(k4n):
        o = v0 + k * 256
        v_0 = load16(V, o); v_1 = load16(V, o + 64); v_2 = load16(V, o + 128); v_3 = load16(V, o + 192)
        b = b0 + 4 * k
        x = bcast16(B, b)
        c00 = mac(kind, c00, x, v_0); c01 = mac(kind, c01, x, v_1)
        c02 = mac(kind, c02, x, v_2); c03 = mac(kind, c03, x, v_3)
        x = bcast16(B, b + ldb)
        c10 = mac(kind, c10, x, v_0); c11 = mac(kind, c11, x, v_1)
        c12 = mac(kind, c12, x, v_2); c13 = mac(kind, c13, x, v_3)
        x = bcast16(B, b + 2 * ldb)
        c20 = mac(kind, c20, x, v_0); c21 = mac(kind, c21, x, v_1)
        c22 = mac(kind, c22, x, v_2); c23 = mac(kind, c23, x, v_3)
        x = bcast16(B, b + 3 * ldb)
        c30 = mac(kind, c30, x, v_0); c31 = mac(kind, c31, x, v_1)
        c32 = mac(kind, c32, x, v_2); c33 = mac(kind, c33, x, v_3)
        x = bcast16(B, b + 4 * ldb)
        c40 = mac(kind, c40, x, v_0); c41 = mac(kind, c41, x, v_1)
        c42 = mac(kind, c42, x, v_2); c43 = mac(kind, c43, x, v_3)
        x = bcast16(B, b + 5 * ldb)
        c50 = mac(kind, c50, x, v_0); c51 = mac(kind, c51, x, v_1)
        c52 = mac(kind, c52, x, v_2); c53 = mac(kind, c53, x, v_3)
    store16(C, e0, c00); store16(C, e0 + 64, c01); store16(C, e0 + 128, c02); store16(C, e0 + 192, c03)
    store16(C, e1, c10); store16(C, e1 + 64, c11); store16(C, e1 + 128, c12); store16(C, e1 + 192, c13)
    store16(C, e2, c20); store16(C, e2 + 64, c21); store16(C, e2 + 128, c22); store16(C, e2 + 192, c23)
    store16(C, e3, c30); store16(C, e3 + 64, c31); store16(C, e3 + 128, c32); store16(C, e3 + 192, c33)
    store16(C, e4, c40); store16(C, e4 + 64, c41); store16(C, e4 + 128, c42)
    store16(C, e4 + 192, c43)
    store16(C, e5, c50); store16(C, e5 + 64, c51); store16(C, e5 + 128, c52)
    store16(C, e5 + 192, c53)


@njit(cache=True)
def tile1x64(kind, B, b0, ldb, V, v0, k4n, C, c0, ldc, accumulate):
    """One row of :func:`tile6x64` (the rows left over), zmm registers."""
    if accumulate:
        c0_ = load16(C, c0); c1_ = load16(C, c0 + 64); c2_ = load16(C, c0 + 128); c3_ = load16(C, c0 + 192)
    else:
        c0_ = zero16(); c1_ = zero16(); c2_ = zero16(); c3_ = zero16()
    for k in range(k4n):
        o = v0 + k * 256
        x = bcast16(B, b0 + 4 * k)
        c0_ = mac(kind, c0_, x, load16(V, o)); c1_ = mac(kind, c1_, x, load16(V, o + 64))
        c2_ = mac(kind, c2_, x, load16(V, o + 128)); c3_ = mac(kind, c3_, x, load16(V, o + 192))
    store16(C, c0, c0_); store16(C, c0 + 64, c1_); store16(C, c0 + 128, c2_); store16(C, c0 + 192, c3_)


# ------------------------------------------------------------------------------------------ narrow panels
# A layer with few output channels (16, 24, 32: MobileNetV2's projections, channels-last) fills a 64-lane
# panel badly in the linear layout (lanes = output channels); these tiles compute only the first 16 or 32
# lanes of the same packed panel (a k-group's 16-lane quarters sit at bytes 0, 64, 128, 192 of its 256).
@njit(cache=True)
def tile12x16(kind, B, b0, ldb, V, v0, k4n, C, c0, ldc, accumulate):
    """C[0:12, 0:16] (+)= B[0:12] · the first 16 lanes of a V-panel (a panel with 16 or fewer
    useful lanes: output channels of a narrow layer), zmm registers; C's row r at byte c0 + r·ldc."""
    if accumulate:
        c0_0 = load16(C, c0)
        c1_0 = load16(C, c0 + 1 * ldc)
        c2_0 = load16(C, c0 + 2 * ldc)
        c3_0 = load16(C, c0 + 3 * ldc)
        c4_0 = load16(C, c0 + 4 * ldc)
        c5_0 = load16(C, c0 + 5 * ldc)
        c6_0 = load16(C, c0 + 6 * ldc)
        c7_0 = load16(C, c0 + 7 * ldc)
        c8_0 = load16(C, c0 + 8 * ldc)
        c9_0 = load16(C, c0 + 9 * ldc)
        c10_0 = load16(C, c0 + 10 * ldc)
        c11_0 = load16(C, c0 + 11 * ldc)
    else:
        c0_0 = zero16()
        c1_0 = zero16()
        c2_0 = zero16()
        c3_0 = zero16()
        c4_0 = zero16()
        c5_0 = zero16()
        c6_0 = zero16()
        c7_0 = zero16()
        c8_0 = zero16()
        c9_0 = zero16()
        c10_0 = zero16()
        c11_0 = zero16()
    for k in range(k4n):
        o = v0 + k * 256
        v_0 = load16(V, o)
        b = b0 + 4 * k
        x = bcast16(B, b)
        c0_0 = mac(kind, c0_0, x, v_0)
        x = bcast16(B, b + 1 * ldb)
        c1_0 = mac(kind, c1_0, x, v_0)
        x = bcast16(B, b + 2 * ldb)
        c2_0 = mac(kind, c2_0, x, v_0)
        x = bcast16(B, b + 3 * ldb)
        c3_0 = mac(kind, c3_0, x, v_0)
        x = bcast16(B, b + 4 * ldb)
        c4_0 = mac(kind, c4_0, x, v_0)
        x = bcast16(B, b + 5 * ldb)
        c5_0 = mac(kind, c5_0, x, v_0)
        x = bcast16(B, b + 6 * ldb)
        c6_0 = mac(kind, c6_0, x, v_0)
        x = bcast16(B, b + 7 * ldb)
        c7_0 = mac(kind, c7_0, x, v_0)
        x = bcast16(B, b + 8 * ldb)
        c8_0 = mac(kind, c8_0, x, v_0)
        x = bcast16(B, b + 9 * ldb)
        c9_0 = mac(kind, c9_0, x, v_0)
        x = bcast16(B, b + 10 * ldb)
        c10_0 = mac(kind, c10_0, x, v_0)
        x = bcast16(B, b + 11 * ldb)
        c11_0 = mac(kind, c11_0, x, v_0)
    store16(C, c0, c0_0)
    store16(C, c0 + 1 * ldc + 0, c1_0)
    store16(C, c0 + 2 * ldc + 0, c2_0)
    store16(C, c0 + 3 * ldc + 0, c3_0)
    store16(C, c0 + 4 * ldc + 0, c4_0)
    store16(C, c0 + 5 * ldc + 0, c5_0)
    store16(C, c0 + 6 * ldc + 0, c6_0)
    store16(C, c0 + 7 * ldc + 0, c7_0)
    store16(C, c0 + 8 * ldc + 0, c8_0)
    store16(C, c0 + 9 * ldc + 0, c9_0)
    store16(C, c0 + 10 * ldc + 0, c10_0)
    store16(C, c0 + 11 * ldc + 0, c11_0)


@njit(cache=True)
def tile1x16(kind, B, b0, ldb, V, v0, k4n, C, c0, ldc, accumulate):
    """One row of :func:`tile12x16` (the rows left over), zmm registers."""
    if accumulate:
        c0_0 = load16(C, c0)
    else:
        c0_0 = zero16()
    for k in range(k4n):
        o = v0 + k * 256
        v_0 = load16(V, o)
        b = b0 + 4 * k
        x = bcast16(B, b)
        c0_0 = mac(kind, c0_0, x, v_0)
    store16(C, c0, c0_0)


@njit(cache=True)
def tile12x32(kind, B, b0, ldb, V, v0, k4n, C, c0, ldc, accumulate):
    """C[0:12, 0:32] (+)= B[0:12] · the first 32 lanes of a V-panel (a panel with 32 or fewer
    useful lanes: output channels of a narrow layer), zmm registers; C's row r at byte c0 + r·ldc."""
    if accumulate:
        c0_0 = load16(C, c0); c0_1 = load16(C, c0 + 64)
        c1_0 = load16(C, c0 + 1 * ldc); c1_1 = load16(C, c0 + 1 * ldc + 64)
        c2_0 = load16(C, c0 + 2 * ldc); c2_1 = load16(C, c0 + 2 * ldc + 64)
        c3_0 = load16(C, c0 + 3 * ldc); c3_1 = load16(C, c0 + 3 * ldc + 64)
        c4_0 = load16(C, c0 + 4 * ldc); c4_1 = load16(C, c0 + 4 * ldc + 64)
        c5_0 = load16(C, c0 + 5 * ldc); c5_1 = load16(C, c0 + 5 * ldc + 64)
        c6_0 = load16(C, c0 + 6 * ldc); c6_1 = load16(C, c0 + 6 * ldc + 64)
        c7_0 = load16(C, c0 + 7 * ldc); c7_1 = load16(C, c0 + 7 * ldc + 64)
        c8_0 = load16(C, c0 + 8 * ldc); c8_1 = load16(C, c0 + 8 * ldc + 64)
        c9_0 = load16(C, c0 + 9 * ldc); c9_1 = load16(C, c0 + 9 * ldc + 64)
        c10_0 = load16(C, c0 + 10 * ldc); c10_1 = load16(C, c0 + 10 * ldc + 64)
        c11_0 = load16(C, c0 + 11 * ldc); c11_1 = load16(C, c0 + 11 * ldc + 64)
    else:
        c0_0 = zero16(); c0_1 = zero16()
        c1_0 = zero16(); c1_1 = zero16()
        c2_0 = zero16(); c2_1 = zero16()
        c3_0 = zero16(); c3_1 = zero16()
        c4_0 = zero16(); c4_1 = zero16()
        c5_0 = zero16(); c5_1 = zero16()
        c6_0 = zero16(); c6_1 = zero16()
        c7_0 = zero16(); c7_1 = zero16()
        c8_0 = zero16(); c8_1 = zero16()
        c9_0 = zero16(); c9_1 = zero16()
        c10_0 = zero16(); c10_1 = zero16()
        c11_0 = zero16(); c11_1 = zero16()
    for k in range(k4n):
        o = v0 + k * 256
        v_0 = load16(V, o); v_1 = load16(V, o + 64)
        b = b0 + 4 * k
        x = bcast16(B, b)
        c0_0 = mac(kind, c0_0, x, v_0); c0_1 = mac(kind, c0_1, x, v_1)
        x = bcast16(B, b + 1 * ldb)
        c1_0 = mac(kind, c1_0, x, v_0); c1_1 = mac(kind, c1_1, x, v_1)
        x = bcast16(B, b + 2 * ldb)
        c2_0 = mac(kind, c2_0, x, v_0); c2_1 = mac(kind, c2_1, x, v_1)
        x = bcast16(B, b + 3 * ldb)
        c3_0 = mac(kind, c3_0, x, v_0); c3_1 = mac(kind, c3_1, x, v_1)
        x = bcast16(B, b + 4 * ldb)
        c4_0 = mac(kind, c4_0, x, v_0); c4_1 = mac(kind, c4_1, x, v_1)
        x = bcast16(B, b + 5 * ldb)
        c5_0 = mac(kind, c5_0, x, v_0); c5_1 = mac(kind, c5_1, x, v_1)
        x = bcast16(B, b + 6 * ldb)
        c6_0 = mac(kind, c6_0, x, v_0); c6_1 = mac(kind, c6_1, x, v_1)
        x = bcast16(B, b + 7 * ldb)
        c7_0 = mac(kind, c7_0, x, v_0); c7_1 = mac(kind, c7_1, x, v_1)
        x = bcast16(B, b + 8 * ldb)
        c8_0 = mac(kind, c8_0, x, v_0); c8_1 = mac(kind, c8_1, x, v_1)
        x = bcast16(B, b + 9 * ldb)
        c9_0 = mac(kind, c9_0, x, v_0); c9_1 = mac(kind, c9_1, x, v_1)
        x = bcast16(B, b + 10 * ldb)
        c10_0 = mac(kind, c10_0, x, v_0); c10_1 = mac(kind, c10_1, x, v_1)
        x = bcast16(B, b + 11 * ldb)
        c11_0 = mac(kind, c11_0, x, v_0); c11_1 = mac(kind, c11_1, x, v_1)
    store16(C, c0, c0_0); store16(C, c0 + 64, c0_1)
    store16(C, c0 + 1 * ldc + 0, c1_0); store16(C, c0 + 1 * ldc + 64, c1_1)
    store16(C, c0 + 2 * ldc + 0, c2_0); store16(C, c0 + 2 * ldc + 64, c2_1)
    store16(C, c0 + 3 * ldc + 0, c3_0); store16(C, c0 + 3 * ldc + 64, c3_1)
    store16(C, c0 + 4 * ldc + 0, c4_0); store16(C, c0 + 4 * ldc + 64, c4_1)
    store16(C, c0 + 5 * ldc + 0, c5_0); store16(C, c0 + 5 * ldc + 64, c5_1)
    store16(C, c0 + 6 * ldc + 0, c6_0); store16(C, c0 + 6 * ldc + 64, c6_1)
    store16(C, c0 + 7 * ldc + 0, c7_0); store16(C, c0 + 7 * ldc + 64, c7_1)
    store16(C, c0 + 8 * ldc + 0, c8_0); store16(C, c0 + 8 * ldc + 64, c8_1)
    store16(C, c0 + 9 * ldc + 0, c9_0); store16(C, c0 + 9 * ldc + 64, c9_1)
    store16(C, c0 + 10 * ldc + 0, c10_0); store16(C, c0 + 10 * ldc + 64, c10_1)
    store16(C, c0 + 11 * ldc + 0, c11_0); store16(C, c0 + 11 * ldc + 64, c11_1)


@njit(cache=True)
def tile1x32(kind, B, b0, ldb, V, v0, k4n, C, c0, ldc, accumulate):
    """One row of :func:`tile12x32` (the rows left over), zmm registers."""
    if accumulate:
        c0_0 = load16(C, c0); c0_1 = load16(C, c0 + 64)
    else:
        c0_0 = zero16(); c0_1 = zero16()
    for k in range(k4n):
        o = v0 + k * 256
        v_0 = load16(V, o); v_1 = load16(V, o + 64)
        b = b0 + 4 * k
        x = bcast16(B, b)
        c0_0 = mac(kind, c0_0, x, v_0); c0_1 = mac(kind, c0_1, x, v_1)
    store16(C, c0, c0_0); store16(C, c0 + 64, c0_1)


# ------------------------------------------------------------------------------------------ 256-bit tile
@njit(cache=True)
def tile1x64_256(kind, B, b0, ldb, V, v0, k4n, C, c0, ldc, accumulate):
    """One row × 64 lanes on ymm registers (AVX2): 8 accumulators of 8 lanes."""
    if accumulate:
        c0_ = load8(C, c0); c1_ = load8(C, c0 + 32); c2_ = load8(C, c0 + 64); c3_ = load8(C, c0 + 96)
        c4_ = load8(C, c0 + 128); c5_ = load8(C, c0 + 160); c6_ = load8(C, c0 + 192); c7_ = load8(C, c0 + 224)
    else:
        c0_ = zero8(); c1_ = zero8(); c2_ = zero8(); c3_ = zero8()
        c4_ = zero8(); c5_ = zero8(); c6_ = zero8(); c7_ = zero8()
    for k in range(k4n):
        o = v0 + k * 256
        x = bcast8(B, b0 + 4 * k)
        c0_ = mac(kind, c0_, x, load8(V, o)); c1_ = mac(kind, c1_, x, load8(V, o + 32))
        c2_ = mac(kind, c2_, x, load8(V, o + 64)); c3_ = mac(kind, c3_, x, load8(V, o + 96))
        c4_ = mac(kind, c4_, x, load8(V, o + 128)); c5_ = mac(kind, c5_, x, load8(V, o + 160))
        c6_ = mac(kind, c6_, x, load8(V, o + 192)); c7_ = mac(kind, c7_, x, load8(V, o + 224))
    store8(C, c0, c0_); store8(C, c0 + 32, c1_); store8(C, c0 + 64, c2_); store8(C, c0 + 96, c3_)
    store8(C, c0 + 128, c4_); store8(C, c0 + 160, c5_); store8(C, c0 + 192, c6_); store8(C, c0 + 224, c7_)


# ------------------------------------------------------------------------------------------ one panel
@njit(cache=True)
def product_panel(kind, B, ldb, R, V, v0, K4, KC, C, c0, ldc, lanes=64):
    """C[r, 0:64] = Σ_k B[r, k]·V[l, k] for every row r < R of one 64-lane panel (V's panel at byte v0; C's row
    r at byte c0 + r·ldc), K taken in blocks of KC groups of 4 (so that the panel's block stays in L1): on
    zmm 6 rows at a time (:func:`tile6x64`) and the rest one by one; on ymm (AVX2 kinds) one row at a time.
    ``lanes``: how many of the 64 lanes are needed — with 32 or fewer, on zmm, only the first 16 or 32 are
    computed (12 rows at a time, :func:`tile12x16` / :func:`tile12x32`; the others are left as they were)."""
    for k0 in range(0, K4, KC):
        kn = min(KC, K4 - k0)
        acc = k0 > 0
        r = 0
        if is_ymm(kind):
            while r < R:
                tile1x64_256(kind, B, r * ldb + 4 * k0, ldb, V, v0 + k0 * 256, kn, C, c0 + r * ldc, ldc, acc)
                r += 1
        elif lanes <= 16:
            while r + 12 <= R:
                tile12x16(kind, B, r * ldb + 4 * k0, ldb, V, v0 + k0 * 256, kn, C, c0 + r * ldc, ldc, acc)
                r += 12
            while r < R:
                tile1x16(kind, B, r * ldb + 4 * k0, ldb, V, v0 + k0 * 256, kn, C, c0 + r * ldc, ldc, acc)
                r += 1
        elif lanes <= 32:
            while r + 12 <= R:
                tile12x32(kind, B, r * ldb + 4 * k0, ldb, V, v0 + k0 * 256, kn, C, c0 + r * ldc, ldc, acc)
                r += 12
            while r < R:
                tile1x32(kind, B, r * ldb + 4 * k0, ldb, V, v0 + k0 * 256, kn, C, c0 + r * ldc, ldc, acc)
                r += 1
        else:
            while r + TILE_ROWS_512 <= R:
                tile6x64(kind, B, r * ldb + 4 * k0, ldb, V, v0 + k0 * 256, kn, C, c0 + r * ldc, ldc, acc)
                r += TILE_ROWS_512
            while r < R:
                tile1x64(kind, B, r * ldb + 4 * k0, ldb, V, v0 + k0 * 256, kn, C, c0 + r * ldc, ldc, acc)
                r += 1
