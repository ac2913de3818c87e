"""Saving and reloading a structurally pruned model without pickle.

A pruned model's state dict has smaller tensors than the architecture its class builds, so
``TinyCNN().load_state_dict(pruned_state)`` fails with size mismatches — the usual "pruned models fail to
reload" complaint, which ``torch.save(model)`` only hides by pickling the whole object (code execution on
load). Here the architecture is *data*: a JSON list of every conv / linear / batchnorm layer's channel
counts. To reload: build the original model (``TinyCNN()``, ``torchvision.models.resnet18()``), resize its
layers from the JSON (:func:`apply_architecture`), then load the state dict.

:func:`save_pruned` writes both into one ``.npz`` — the state dict's arrays plus the JSON text as a NumPy
unicode array under ``ARCH_KEY`` — and :func:`load_pruned` reads it with ``allow_pickle=False``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..files import atomic_write

__all__ = ["describe_architecture", "apply_architecture", "save_pruned", "load_pruned", "ARCH_KEY",
           "FORMAT"]

FORMAT = "minquant.prune.architecture/1"
ARCH_KEY = "__minquant_architecture__"


def describe_architecture(model) -> dict:
    """``{"format": FORMAT, "layers": {name: {"type": ..., sizes...}}}`` for every Conv/Linear/BatchNorm
    layer: conv ``in_channels, out_channels, groups``; linear ``in_features, out_features``; batchnorm
    ``num_features``. JSON-serialisable."""
    import torch.nn as nn

    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            layers[name] = {"type": type(m).__name__, "in_channels": m.in_channels,
                            "out_channels": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.Linear):
            layers[name] = {"type": type(m).__name__, "in_features": m.in_features,
                            "out_features": m.out_features}
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            layers[name] = {"type": type(m).__name__, "num_features": m.num_features}
    return {"format": FORMAT, "layers": layers}


def apply_architecture(model, description: dict):
    """Resize ``model``'s layers, in place, to the sizes in ``description`` (from
    :func:`describe_architecture`); returns ``model``. Resized tensors are zero (load the state dict next).

    Raises ``ValueError`` on a wrong format, a layer missing from the model, or a layer of another type."""
    import torch
    import torch.nn as nn

    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} description")
    with torch.no_grad():
        for name, spec in description["layers"].items():
            try:
                m = model.get_submodule(name)
            except AttributeError as e:
                raise ValueError(f"layer {name!r} of the description is not in the model") from e
            if type(m).__name__ != spec.get("type"):
                raise ValueError(f"layer {name!r} is {type(m).__name__} in the model, {spec.get('type')} "
                                 "in the description")

            def resize(attr, shape):
                old = getattr(m, attr)
                if old is not None and tuple(old.shape) != tuple(shape):
                    new = torch.zeros(shape, dtype=old.dtype, device=old.device)
                    if isinstance(old, nn.Parameter):
                        setattr(m, attr, nn.Parameter(new, requires_grad=old.requires_grad))
                    else:
                        setattr(m, attr, new)

            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                cin, cout, groups = int(spec["in_channels"]), int(spec["out_channels"]), int(spec["groups"])
                if min(cin, cout, groups) < 1 or cin % groups or cout % groups:
                    raise ValueError(f"{name}: invalid conv sizes {spec}")
                m.in_channels, m.out_channels, m.groups = cin, cout, groups
                resize("weight", (cout, cin // groups, *m.kernel_size))
                resize("bias", (cout,))
            elif isinstance(m, nn.Linear):
                fin, fout = int(spec["in_features"]), int(spec["out_features"])
                if min(fin, fout) < 1:
                    raise ValueError(f"{name}: invalid linear sizes {spec}")
                m.in_features, m.out_features = fin, fout
                resize("weight", (fout, fin))
                resize("bias", (fout,))
            else:
                c = int(spec["num_features"])
                if c < 1:
                    raise ValueError(f"{name}: invalid batchnorm size {spec}")
                m.num_features = c
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    resize(attr, (c,))
    return model


def save_pruned(model, path) -> None:
    """State dict arrays + architecture JSON in one ``.npz`` (no pickle)."""
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    if ARCH_KEY in arrays:
        raise ValueError(f"the state dict already has a key {ARCH_KEY!r}")
    arrays[ARCH_KEY] = np.array(json.dumps(describe_architecture(model)))
    with atomic_write(Path(path)) as f:
        np.savez(f, **arrays)


def load_pruned(model, path):
    """Resize a freshly built (unpruned) ``model`` from the file's architecture and load its weights.

    Returns ``model`` in eval mode. Read with ``allow_pickle=False``; missing or extra keys raise."""
    import torch

    with np.load(path, allow_pickle=False) as f:
        if ARCH_KEY not in f.files:
            raise ValueError(f"{path} has no {ARCH_KEY!r} entry: not written by save_pruned")
        desc = json.loads(str(f[ARCH_KEY]))
        state = {k: torch.from_numpy(f[k].copy()) for k in f.files if k != ARCH_KEY}
    apply_architecture(model, desc)
    model.load_state_dict(state)
    return model.eval()
