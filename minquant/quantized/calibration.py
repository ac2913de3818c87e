"""Calibration: run the float graph over sample inputs and let one observer watch each activation.

Static quantization fixes every activation's (scale, zero point) before the model ever sees real input.
They come from *calibration*: the float model runs over a few hundred representative inputs and an
observer (:mod:`minquant.observers`) records each tensor that will be quantized — its range, or a
histogram from which it picks a clipping range (percentile, MSE, entropy...). Observers keep O(bins)
memory, never the data; the executor's ``hook`` hands them each value as it is produced, so peak memory
is one forward pass.

``calibration_data`` may be

* a NumPy array (N, ...) — split into batches of ``batch_size``;
* any iterable of batches: NumPy arrays, torch tensors, or ``(inputs, labels)`` tuples/lists as a torch
  ``DataLoader`` yields them (the first element is the input).

Every batch is checked: float32-convertible real numbers, non-empty, finite (a NaN would poison a
min/max), the right per-sample shape (the executor checks that). An empty iterable raises ValueError.
A tqdm progress bar counts batches (``progress=False`` turns it off).

This module imports NumPy and tqdm (torch only if the data is torch tensors, through their ``.numpy()``).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from ..executor import run
from ..graph import Graph

__all__ = ["calibrate", "iter_batches"]


def _to_numpy(batch, i: int) -> np.ndarray:
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError(f"calibration batch {i} is an empty tuple/list")
        batch = batch[0]                      # (inputs, labels) from a DataLoader
    if hasattr(batch, "detach") and hasattr(batch, "numpy"):   # a torch tensor
        batch = batch.detach().cpu().numpy()
    a = np.asarray(batch)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"calibration batch {i} must hold real numbers, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim == 0 or a.shape[0] == 0 or a.size == 0:
        raise ValueError(f"calibration batch {i} is empty (shape {a.shape})")
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"calibration batch {i} contains {int(np.isnan(a).sum())} NaN and "
                         f"{int(np.isinf(a).sum())} infinite value(s); calibration needs finite data")
    return a


def iter_batches(data, batch_size: int = 32):
    """Yield checked float32 batches from ``data`` (module docstring). Raises ValueError if there is none."""
    if isinstance(data, np.ndarray):
        if data.ndim == 0 or data.shape[0] == 0:
            raise ValueError(f"calibration data is empty (shape {data.shape})")
        data = [data[i:i + batch_size] for i in range(0, data.shape[0], batch_size)]
    elif not isinstance(data, Iterable):
        raise ValueError(f"calibration data must be an array or an iterable of batches, got {type(data).__name__}")
    n = 0
    for i, batch in enumerate(data):
        yield _to_numpy(batch, i)
        n += 1
    if n == 0:
        raise ValueError("calibration data is empty: the iterable yielded no batches")


def _length(data, batch_size):
    if isinstance(data, np.ndarray):
        return -(-data.shape[0] // batch_size) if data.ndim else None
    try:
        return len(data)
    except TypeError:
        return None


def calibrate(graph: Graph, data, observers: Mapping[str, object], *, batch_size: int = 32,
              progress: bool = True, kernels=None) -> int:
    """Run ``graph`` (float) over ``data`` and feed ``observers[value]`` every value it names.

    ``observers``: value name (graph input or node name) → an observer with ``update(x)`` (or a list of
    them). Returns the number
    of samples seen (``kernels``: the executor's table, default:
    :data:`minquant.executor.FLOAT_KERNELS`). Raises ValueError for empty / non-finite data, or an observer for a value the graph
    does not compute."""
    known = set(graph.inputs) | {n.name for n in graph.nodes}
    missing = sorted(set(observers) - known)
    if missing:
        raise ValueError(f"observers for values the graph does not compute: {missing[:5]}")
    from tqdm.auto import tqdm

    def hook(name, value):
        obs = observers.get(name)
        if obs is not None:
            try:
                for o in (obs if isinstance(obs, (list, tuple)) else (obs,)):
                    o.update(value)
            except ValueError as e:
                raise ValueError(f"calibrating {name!r}: {e}") from e

    seen = 0
    bar = tqdm(iter_batches(data, batch_size), total=_length(data, batch_size), desc="calibrate", unit="batch",
               disable=not progress, leave=False)
    for x in bar:
        run(graph, x, hook=hook, kernels=kernels)
        seen += x.shape[0]
    return seen
