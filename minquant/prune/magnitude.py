"""Unstructured magnitude pruning: zero the weights with the smallest |w| (Han et al. 2015).

The math is NumPy; the model-facing helpers take and return ordinary torch modules.

For one tensor ``w`` with ``n`` elements and a fraction ``amount``::

    k    = round(amount · n)                  (Python round: half to even, as torch.nn.utils.prune)
    idx  = the k indices of smallest |w|       (ties: the lower flat index is pruned first)
    mask = 1 everywhere, 0 at idx              → pruned weight  w ⊙ mask

``amount`` may also be an ``int``: the number of weights to prune. *Per layer* applies this to every weight
tensor separately (``torch.nn.utils.prune.l1_unstructured``); *global* concatenates all weight tensors
into one vector first, so layers with many small weights lose more (``torch.nn.utils.prune.
global_unstructured`` with ``L1Unstructured``).

Ties: NumPy's stable argsort puts equal magnitudes in flat-index order, so among equal |w| the lowest index
is pruned first; ``torch.topk(largest=False)`` documents no order for ties, so the two can pick different
(equally small) weights when |w| repeats around the threshold. On tie-free weights the masks are identical
(``tests/test_prune_magnitude.py``). Already-zero weights have |w| = 0 and are pruned first, so calling
again with a larger ``amount`` extends the previous mask — unlike torch, where a second call's ``amount``
is a fraction of the weights that are still unpruned, ``amount`` here is always the fraction of the whole
tensor (the *target sparsity*).

Pruning here is permanent: the weights themselves are zeroed (no ``weight_orig``/``weight_mask``
re-parametrisation, no forward hooks), so the state dict is an ordinary one and reloads into the same
architecture. :func:`masked_training` keeps the zeros at zero while fine-tuning.
"""
from __future__ import annotations

import numbers
from contextlib import contextmanager

import numpy as np

__all__ = ["n_to_prune", "magnitude_mask", "global_magnitude_masks", "prunable_weights", "weight_arrays",
           "prune_magnitude", "apply_masks", "current_masks", "masked_training", "LiveMasks", "DEFAULT_TYPES"]

#: layer types whose ``weight`` is pruned by default (torch class names; checked with isinstance)
DEFAULT_TYPES = ("Conv1d", "Conv2d", "Conv3d", "Linear")


def n_to_prune(amount, n: int) -> int:
    """How many of ``n`` elements ``amount`` prunes: an int is a count, a float a fraction,
    ``round(amount · n)`` with Python's half-to-even rounding (torch's ``_compute_nparams_toprune``)."""
    if isinstance(amount, (bool, np.bool_)):
        raise ValueError(f"amount must be a fraction in [0, 1] or an int count, got {amount!r}")
    if isinstance(amount, numbers.Integral):
        k = int(amount)
        if not 0 <= k <= n:
            raise ValueError(f"amount={k} weights to prune, but the tensor(s) hold {n}")
        return k
    if not isinstance(amount, numbers.Real) or not np.isfinite(amount) or not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount must be a fraction in [0, 1] or an int count, got {amount!r}")
    return int(round(float(amount) * n))


def _check_weight(name: str, w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    if w.size and not np.all(np.isfinite(w)):
        raise ValueError(f"{name} contains NaN or Inf")
    return w


def magnitude_mask(w, amount) -> np.ndarray:
    """Boolean keep-mask (True = kept) of ``w`` pruning the ``round(amount·n)`` smallest |w|.

    Ties go to the lower flat index (stable sort). NaN/Inf in ``w`` raise ``ValueError``."""
    w = _check_weight("weight", w)
    k = n_to_prune(amount, w.size)
    mask = np.ones(w.size, dtype=bool)
    if k:
        order = np.argsort(np.abs(w).ravel(), kind="stable")
        mask[order[:k]] = False
    return mask.reshape(w.shape)


def global_magnitude_masks(weights: dict, amount) -> dict:
    """Keep-masks for several tensors pruned *together*: the ``round(amount·N)`` smallest |w| over all
    ``N`` weights, concatenated in the dict's order (ties: earlier tensor, then lower index, first)."""
    if not weights:
        raise ValueError("no weights to prune")
    arrays = {k: _check_weight(k, v) for k, v in weights.items()}
    flat = np.concatenate([np.abs(a).ravel() for a in arrays.values()])
    keep = magnitude_mask(flat, amount)
    out, start = {}, 0
    for name, a in arrays.items():
        out[name] = keep[start:start + a.size].reshape(a.shape)
        start += a.size
    return out


def _check_model(model, what: str) -> None:
    import torch.nn as nn

    if not isinstance(model, nn.Module):
        raise ValueError(f"{what} needs a torch nn.Module, got {type(model).__name__}")


def prunable_weights(model, types=DEFAULT_TYPES, exclude=()) -> dict:
    """``{module_name: weight Parameter}`` of the layers of ``types`` (class names or classes), in
    ``named_modules`` order, skipping names in ``exclude``."""
    import torch.nn as nn

    _check_model(model, "pruning")

    classes = tuple(getattr(nn, t) if isinstance(t, str) else t for t in types)
    exclude = set(exclude)
    unknown = exclude - {n for n, _ in model.named_modules()}
    if unknown:
        raise ValueError(f"exclude names not in the model: {sorted(unknown)}")
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, classes) and name not in exclude and getattr(m, "weight", None) is not None:
            out[name] = m.weight
    if not out:
        raise ValueError(f"the model has no layers of types {types} to prune")
    return out


def weight_arrays(model, types=DEFAULT_TYPES, exclude=()) -> dict:
    """:func:`prunable_weights` as NumPy float arrays (copies)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in prunable_weights(model, types, exclude).items()}


def apply_masks(model, masks: dict) -> None:
    """Zero, in place, the weights of ``model.<name>.weight`` where ``masks[name]`` is False."""
    import torch

    with torch.no_grad():
        for name, mask in masks.items():
            w = model.get_submodule(name).weight
            if tuple(mask.shape) != tuple(w.shape):
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight {tuple(w.shape)}")
            w.mul_(torch.from_numpy(np.asarray(mask)).to(w.dtype))


def prune_magnitude(model, amount, *, scope: str = "global", types=DEFAULT_TYPES, exclude=()) -> dict:
    """Magnitude-prune ``model``'s conv/linear weights in place and permanently; returns the keep-masks.

    ``scope='layer'`` prunes ``amount`` of every tensor (``l1_unstructured`` on each); ``'global'`` prunes
    ``amount`` of all of them together (``global_unstructured``). Biases and BatchNorm are never pruned."""
    _check_model(model, "prune_magnitude")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    arrays = weight_arrays(model, types, exclude)
    if scope == "global":
        masks = global_magnitude_masks(arrays, amount)
    else:
        masks = {k: magnitude_mask(v, amount) for k, v in arrays.items()}
    apply_masks(model, masks)
    return masks


def current_masks(model, types=DEFAULT_TYPES, exclude=()) -> dict:
    """The keep-masks already present in a (permanently) pruned model: ``w != 0``."""
    return {k: v != 0 for k, v in weight_arrays(model, types, exclude).items()}


class LiveMasks:
    """The masks a :func:`masked_training` block enforces; :meth:`update` tightens them mid-training
    (the hooks read these tensors, which are changed in place)."""

    def __init__(self, model, masks: dict):
        import torch

        self.model = model
        self.tensors = {}
        for name, mask in masks.items():
            w = model.get_submodule(name).weight
            if tuple(np.shape(mask)) != tuple(w.shape):
                raise ValueError(f"mask for {name} has shape {tuple(np.shape(mask))}, weight {tuple(w.shape)}")
            self.tensors[name] = torch.from_numpy(np.asarray(mask)).to(w.dtype)

    def update(self, masks: dict) -> None:
        """Enforce new masks for the same layers from now on (weights are zeroed at once)."""
        import torch

        if set(masks) != set(self.tensors):
            raise ValueError("update() needs masks for exactly the layers masked_training started with")
        for name, mask in masks.items():
            self.tensors[name].copy_(torch.from_numpy(np.asarray(mask)))
        apply_masks(self.model, masks)

    def as_numpy(self) -> dict:
        return {k: v.numpy() != 0 for k, v in self.tensors.items()}


@contextmanager
def masked_training(model, masks: dict):
    """Within the block, pruned weights stay exactly zero while the model trains.

    Two temporary hooks per masked layer: the weight's gradient is multiplied by the mask (so a fresh
    Adam/SGD never moves a pruned weight: its gradient and moments stay 0) and, before every forward,
    the weight is re-multiplied by the mask (so optimizer state left over from before the mask changed,
    or weight decay, cannot revive it). Yields a :class:`LiveMasks` whose ``update(new_masks)`` prunes
    further without leaving the block (gradual pruning during training). On exit both hooks are removed
    and the final masks applied once more: the model is hook-free again."""
    import torch

    live = LiveMasks(model, masks)
    handles = []
    try:
        for name, m in live.tensors.items():
            mod = model.get_submodule(name)
            handles.append(mod.weight.register_hook(lambda g, m=m: g * m))

            def pre(module, args, m=m):
                with torch.no_grad():
                    module.weight.mul_(m)
            handles.append(mod.register_forward_pre_hook(pre))
        apply_masks(model, masks)
        yield live
    finally:
        for h in handles:
            h.remove()
        apply_masks(model, live.as_numpy())
