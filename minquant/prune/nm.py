"""N:M semi-structured sparsity: in every group of M consecutive weights along the input dimension, keep
the N largest |w| (2:4 — the pattern NVIDIA Ampere sparse tensor cores and some NPUs execute at ~2× speed).

For a weight of shape (out, in, *k) the groups run along ``in`` — the reduction dimension of the
matrix product — for every (out, kernel position), the layout NVIDIA's ASP uses: the conv weight is viewed
as (out, kh, kw, in) and each row of ``in`` is cut into ``in / M`` groups of M. ``in`` must be a multiple
of M. Within a group, the M − N smallest |w| are zeroed (ties: the lower index is dropped first, as in
:func:`~minquant.prune.magnitude.magnitude_mask`). The sparsity is exactly 1 − N/M.
"""
from __future__ import annotations

import numpy as np

__all__ = ["nm_mask", "is_nm_sparse", "prune_nm"]


def _grouped(w: np.ndarray, m: int) -> np.ndarray:
    """(out, in, *k) → (out, *k, in/M, M) view-copy with the groups on the last axis."""
    if w.ndim < 2:
        raise ValueError(f"N:M sparsity needs a weight with ≥ 2 dims (out, in, ...), got shape {w.shape}")
    if w.shape[1] % m:
        raise ValueError(f"input dimension {w.shape[1]} is not a multiple of M={m}")
    moved = np.moveaxis(w, 1, -1)
    return moved.reshape(*moved.shape[:-1], w.shape[1] // m, m)


def _ungrouped(g: np.ndarray, shape) -> np.ndarray:
    moved_shape = (shape[0], *shape[2:], shape[1])
    return np.moveaxis(g.reshape(moved_shape), -1, 1)


def _check_nm(n: int, m: int) -> None:
    if not (isinstance(n, (int, np.integer)) and isinstance(m, (int, np.integer)) and 0 <= n <= m and m >= 1):
        raise ValueError(f"need integers 0 ≤ N ≤ M, M ≥ 1; got N={n}, M={m}")


def nm_mask(w, n: int = 2, m: int = 4) -> np.ndarray:
    """Boolean keep-mask with exactly ``n`` True in every group of ``m`` along dim 1 (largest |w|)."""
    _check_nm(n, m)
    w = np.asarray(w)
    if w.size and not np.all(np.isfinite(w)):
        raise ValueError("weight contains NaN or Inf")
    g = np.abs(_grouped(w, m))
    order = np.argsort(g, axis=-1, kind="stable")      # ascending; ties: lower index first
    keep = np.ones(g.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :m - n], False, axis=-1)
    return _ungrouped(keep, w.shape)


def is_nm_sparse(w, n: int = 2, m: int = 4) -> bool:
    """True when every group of ``m`` along dim 1 has at most ``n`` non-zeros."""
    _check_nm(n, m)
    g = _grouped(np.asarray(w), m)
    return bool(np.all(np.count_nonzero(g, axis=-1) <= n))


def prune_nm(model, n: int = 2, m: int = 4, *, types=("Conv2d", "Linear"), exclude=()) -> dict:
    """Apply N:M masks to every eligible layer in place (permanently); returns the keep-masks.

    Layers whose input dimension is not a multiple of M (e.g. a first conv with 1 or 3 input channels)
    and depthwise convs (1 input channel per group) are skipped; so are names in ``exclude``."""
    from .magnitude import apply_masks, weight_arrays

    masks = {}
    for name, w in weight_arrays(model, types, exclude).items():
        if w.ndim >= 2 and w.shape[1] % m == 0:
            masks[name] = nm_mask(w, n, m)
    if not masks:
        raise ValueError(f"no layer has an input dimension divisible by M={m}")
    apply_masks(model, masks)
    return masks
