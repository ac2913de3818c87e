"""Moving codes between the NCHW and NHWC layouts (the transposes at the edges of a channels-last region,
:mod:`minquant.quantized.layout`).

``nchw_to_nhwc(x)[b, y, x, c] = x[b, c, y, x]`` and its inverse ``nhwc_to_nchw`` — NumPy's
``x.transpose(0, 2, 3, 1)`` made contiguous, which is also the implementation, except for an image of at most
4 channels (a model's input: 3 colour planes): there one Numba pass writes each pixel's channels together
while reading the planes side by side (measured on 3×224×224 uint8: 7 µs against NumPy's 156 µs; NumPy's
copy is the faster one for many channels). Any dtype; the result is a new C-contiguous array.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["nchw_to_nhwc", "nhwc_to_nchw"]

U = np.uint64   # flat indices: unsigned, so Numba adds no wrap-around test


@njit(cache=True)
def _planes_to_pixels(x, out):
    """x (N, C, P) → out (N, P, C), pixel by pixel, for C ≤ 4 (the bound lets LLVM unroll the channel loop:
    3× faster than without it)."""
    n, c_n, p_n = x.shape
    if c_n > 4:
        return
    if c_n == 3:    # three colour planes: flat unsigned indices, which LLVM vectorizes (4x faster on 3×224×224)
        for b in range(n):
            x0, x1, x2, o = x[b, 0], x[b, 1], x[b, 2], out[b].reshape(3 * p_n)
            for p in range(U(p_n)):
                o[U(3) * p] = x0[p]
                o[U(3) * p + U(1)] = x1[p]
                o[U(3) * p + U(2)] = x2[p]
        return
    for b in range(n):
        for p in range(p_n):
            for c in range(c_n):
                out[b, p, c] = x[b, c, p]


def _check4(x, what):
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{what} expects a 4-D array, got shape {x.shape}")
    return x


def nchw_to_nhwc(x) -> np.ndarray:
    """(N, C, H, W) → (N, H, W, C), C-contiguous."""
    x = _check4(x, "nchw_to_nhwc")
    n, c, h, w = x.shape
    if c == 1:      # one plane: the same bytes in the same order
        return np.array(x, order="C").reshape(n, h, w, 1)
    if c > 4 or not x.size:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    out = np.empty((n, h, w, c), x.dtype)
    _planes_to_pixels(np.ascontiguousarray(x).reshape(n, c, h * w), out.reshape(n, h * w, c))
    return out


def nhwc_to_nchw(x) -> np.ndarray:
    """(N, H, W, C) → (N, C, H, W), C-contiguous."""
    return np.ascontiguousarray(_check4(x, "nhwc_to_nchw").transpose(0, 3, 1, 2))
