"""Structured (filter / channel) pruning that physically removes channels (Li et al. 2017, "Pruning
Filters for Efficient ConvNets").

Unstructured zeros leave every tensor its full size, so a dense kernel does the same work. Removing whole
output channels makes the layers *smaller*: fewer parameters, fewer FLOPs, and a real speed-up with any
dense kernel. The price is that every layer touching those channels must change with them — the
:mod:`~minquant.prune.graph` dependency graph says which.

Ranking (Li et al.): the importance of channel ``c`` of a group is the norm of the filters that produce it,
summed over the group's producers (one conv normally; every block's last conv and the downsample conv of a
residual stage, whose outputs are added)::

    I_c = Σ_producers ‖W_p[c]‖₁        (norm='l1', Li et al.)      or    Σ ‖W_p[c]‖₂   (norm='l2')

The ``k = round(amount · C)`` channels with the smallest ``I_c`` go (ties: lower index first, stable sort);
with ``round_to=r`` the kept count is rounded *up* to a multiple of ``r`` (SIMD-friendly widths), never
below ``min_channels``. For a single conv this is the channel set ``torch.nn.utils.prune.ln_structured(…,
n=1, dim=0)`` keeps (tests compare them).

Removal slices, for kept indices ``K`` of each changed group: producers ``weight[K]``, ``bias[K]``;
BatchNorm ``γ, β, running_mean, running_var [K]``; depthwise convs ``weight[K]``, ``bias[K]`` and
``groups = |K|``; consumers ``weight[:, K]`` (a linear layer after a flatten with ``factor`` f keeps the
input features ``c·f … c·f + f − 1`` of every kept ``c``). The model stays an instance of its own class
(its ``forward`` is untouched; only submodules shrink), so it is an ordinary ``nn.Module`` for
quantizers, ONNX export and ``state_dict``. :mod:`~minquant.prune.architecture` saves the new sizes as
JSON so the state dict reloads without pickle.
"""
from __future__ import annotations

import copy

import numpy as np

from .graph import ZERO_PRESERVING, build_graph
from .magnitude import n_to_prune

__all__ = ["channel_importance", "select_channels", "remove_channels", "prune_channels",
           "dead_channels", "remove_zero_channels"]


def _runnable_example(model, example_input, what: str):
    """Check that ``model`` (an nn.Module) runs on ``example_input`` (a tensor, or a shape tuple filled with
    zeros of the parameters' dtype, as :func:`~minquant.prune.graph.build_graph` takes it) and return the
    tensor — a ValueError with the model's own error otherwise (before torch.fx's ShapeProp would print a
    traceback and report the fx node instead)."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{what} needs a torch nn.Module, got {type(model).__name__}")
    if isinstance(example_input, (tuple, list)) and all(isinstance(d, int) for d in example_input):
        p = next(model.parameters(), None)
        example_input = torch.zeros(*example_input, dtype=p.dtype if p is not None else torch.float32)
    if not isinstance(example_input, torch.Tensor):
        raise ValueError(f"{what}: example_input must be a tensor or a shape tuple, got {type(example_input).__name__}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    except Exception as e:  # noqa: BLE001 — the model's own error, whatever its type
        raise ValueError(f"{what}: example_input of shape {tuple(example_input.shape)} does not run through "
                         f"{type(model).__name__}: {type(e).__name__}: {e}") from e
    finally:
        model.train(was_training)
    return example_input


def _np(t):
    return t.detach().cpu().double().numpy()


def channel_importance(model, group, norm: str = "l1") -> np.ndarray:
    """``I_c`` (float64, length ``group.channels``): the summed L1/L2 norms of the producers' filters."""
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    if not group.producers:
        raise ValueError(f"group {group.gid} has no producing conv/linear layer to rank channels by")
    imp = np.zeros(group.channels)
    for name in group.producers:
        w = _np(model.get_submodule(name).weight).reshape(group.channels, -1)
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{name}.weight contains NaN or Inf")
        imp += np.abs(w).sum(1) if norm == "l1" else np.sqrt((w * w).sum(1))
    return imp


def select_channels(importance, amount, *, round_to: int = 1, min_channels: int = 1) -> np.ndarray:
    """Sorted indices of the channels kept after pruning ``round(amount · C)`` least important ones.

    The kept count is rounded up to a multiple of ``round_to`` (capped at ``C``) and is at least
    ``min_channels``; the dropped channels are the lowest ``importance`` (ties: lower index first)."""
    imp = np.asarray(importance, dtype=np.float64)
    if imp.ndim != 1 or imp.size == 0:
        raise ValueError("importance must be a non-empty 1-D array")
    if not np.all(np.isfinite(imp)):
        raise ValueError("importance contains NaN or Inf")
    if round_to < 1 or min_channels < 1:
        raise ValueError("round_to and min_channels must be ≥ 1")
    c = imp.size
    keep = c - n_to_prune(amount, c)
    keep = min(c, -(-keep // round_to) * round_to)
    keep = max(keep, min(min_channels, c))
    order = np.argsort(imp, kind="stable")
    return np.sort(order[c - keep:])


def _expand(idx, factor):
    idx = np.asarray(idx, dtype=np.int64)
    return idx if factor == 1 else (idx[:, None] * factor + np.arange(factor)).ravel()


def remove_channels(model, graph, kept: dict):
    """Shrink ``model`` in place: ``kept[gid]`` = sorted channel indices to keep in group ``gid``.

    Groups not in ``kept`` are untouched; frozen groups cannot be changed. Returns ``model``."""
    import torch
    import torch.nn as nn

    out_idx, in_idx, cw_idx = {}, {}, {}
    for gid, idx in kept.items():
        g = graph.groups[gid]
        idx = np.asarray(idx, dtype=np.int64)
        if g.frozen:
            raise ValueError(f"group {gid} is frozen ({'; '.join(g.frozen_reasons)})")
        if idx.ndim != 1 or idx.size == 0 or np.any(np.diff(idx) <= 0) or idx[0] < 0 or idx[-1] >= g.channels:
            raise ValueError(f"kept indices for group {gid} must be sorted, unique, non-empty and < {g.channels}")
        if idx.size == g.channels:
            continue
        for n in g.producers:
            out_idx[n] = idx
        for n in g.channelwise:
            cw_idx[n] = idx
        for n, f in g.consumers:
            in_idx[n] = _expand(idx, f)

    def take(t, idx, dim):
        return t.detach().index_select(dim, torch.as_tensor(idx, device=t.device)).clone()

    def set_param(m, name, value):
        old = getattr(m, name)
        setattr(m, name, nn.Parameter(value, requires_grad=old.requires_grad))

    with torch.no_grad():
        for name in sorted(set(out_idx) | set(in_idx) | set(cw_idx)):
            m = model.get_submodule(name)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                idx = cw_idx[name]
                if m.weight is not None:
                    set_param(m, "weight", take(m.weight, idx, 0))
                    set_param(m, "bias", take(m.bias, idx, 0))
                if m.running_mean is not None:
                    m.running_mean = take(m.running_mean, idx, 0)
                    m.running_var = take(m.running_var, idx, 0)
                m.num_features = len(idx)
            elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                if name in cw_idx:  # depthwise: groups = in = out
                    idx = cw_idx[name]
                    set_param(m, "weight", take(m.weight, idx, 0))
                    if m.bias is not None:
                        set_param(m, "bias", take(m.bias, idx, 0))
                    m.in_channels = m.out_channels = m.groups = len(idx)
                    continue
                w = m.weight
                if name in out_idx:
                    w = take(w, out_idx[name], 0)
                    if m.bias is not None:
                        set_param(m, "bias", take(m.bias, out_idx[name], 0))
                    m.out_channels = len(out_idx[name])
                if name in in_idx:
                    w = take(w, in_idx[name], 1)
                    m.in_channels = len(in_idx[name])
                set_param(m, "weight", w.clone())
            elif isinstance(m, nn.Linear):
                w = m.weight
                if name in out_idx:
                    w = take(w, out_idx[name], 0)
                    if m.bias is not None:
                        set_param(m, "bias", take(m.bias, out_idx[name], 0))
                    m.out_features = len(out_idx[name])
                if name in in_idx:
                    w = take(w, in_idx[name], 1)
                    m.in_features = len(in_idx[name])
                set_param(m, "weight", w.clone())
            else:  # the graph only lists the layer types above
                raise ValueError(f"cannot slice {name} ({type(m).__name__})")
    return model


def prune_channels(model, example_input, amount, *, norm: str = "l1", ignore=(), round_to: int = 1,
                   min_channels: int = 1, inplace: bool = False):
    """Remove ``amount`` of the channels of every prunable group; returns the smaller model.

    ``amount``: a fraction for every group, or ``{producer_layer_name: fraction}`` (groups none of whose
    producers is named are left alone). ``ignore``: layer names whose output channels must stay.
    The input model is deep-copied unless ``inplace``. Output shape is unchanged: the model input and
    output channels are frozen by the graph."""
    example_input = _runnable_example(model, example_input, "prune_channels")
    if not inplace:
        model = copy.deepcopy(model)
    graph = build_graph(model, example_input)
    ignore = set(ignore)
    names = {n for n, _ in model.named_modules()}
    for n in ignore | (set(amount) if isinstance(amount, dict) else set()):
        if n not in names:
            raise ValueError(f"{n!r} is not a layer of the model")
    kept = {}
    for g in graph.prunable_groups():
        if ignore & set(g.producers + g.channelwise):
            continue
        if isinstance(amount, dict):
            vals = {amount[p] for p in g.producers if p in amount}
            if not vals:
                continue
            if len(vals) > 1:
                raise ValueError(f"coupled layers {g.producers} were given different amounts {sorted(vals)}")
            a = vals.pop()
        else:
            a = amount
        kept[g.gid] = select_channels(channel_importance(model, g, norm), a, round_to=round_to,
                                      min_channels=min_channels)
    return remove_channels(model, graph, kept)


def dead_channels(model, graph) -> dict:
    """``{gid: indices}`` of channels that are exactly zero for every input: all producers have a zero
    filter and zero bias, every BatchNorm maps 0 to 0 (β = 0 and running mean = 0), every depthwise conv
    has zero bias, and every op on the way maps 0 to 0 (ReLU yes, sigmoid no)."""
    import torch.nn as nn

    out = {}
    for g in graph.prunable_groups():
        if any(op not in ZERO_PRESERVING for op in g.ops):
            continue
        dead = np.ones(g.channels, dtype=bool)
        for n in g.producers:
            m = model.get_submodule(n)
            dead &= np.all(_np(m.weight).reshape(g.channels, -1) == 0, axis=1)
            if m.bias is not None:
                dead &= _np(m.bias) == 0
        for n in g.channelwise:
            m = model.get_submodule(n)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                if m.bias is not None:
                    dead &= _np(m.bias) == 0
                if m.running_mean is not None:
                    dead &= _np(m.running_mean) == 0
            elif m.bias is not None:
                dead &= _np(m.bias) == 0
        if dead.any():
            out[g.gid] = np.flatnonzero(dead)
    return out


def remove_zero_channels(model, example_input, *, inplace: bool = False):
    """The seed's "remove zero channels/filters": physically drop every channel :func:`dead_channels`
    proves is always zero. The outputs do not change (removed terms were exact zeros); a group whose
    channels are all dead keeps one. Returns ``(model, {gid: removed indices})``."""
    example_input = _runnable_example(model, example_input, "remove_zero_channels")
    if not inplace:
        model = copy.deepcopy(model)
    graph = build_graph(model, example_input)
    dead = dead_channels(model, graph)
    kept, removed = {}, {}
    for gid, idx in dead.items():
        c = graph.groups[gid].channels
        if idx.size == c:
            idx = idx[1:]
        if idx.size:
            kept[gid] = np.setdiff1d(np.arange(c), idx)
            removed[gid] = idx
    return remove_channels(model, graph, kept), removed
