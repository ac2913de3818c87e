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

**The input the quantized model will see.** The quantized model's first step saturates its input to the
input's quantization range. If the input's observer has a range that ignores extreme values
(``clamps_input``: :class:`~minquant.observers.PercentileObserver`), calibration reads the data twice:
first that observer sees every raw batch and chooses the input's range ``[lo, hi]``; then the graph runs on
each batch clamped to ``[min(lo, 0), max(hi, 0)]`` (the real range ``choose_qparams`` maps onto the codes),
so every other observer — the layers downstream, and the input's own other statistics — calibrates what
the quantized model will compute, not values it can never produce. A single 1e30 pixel otherwise becomes
thousands of huge activations after two convolutions, which no percentile can clip. Data without extreme
values is barely touched (only values beyond the percentile are clamped). Observers without
``clamps_input`` (MinMax, torch's Histogram, MSE, entropy) leave the data unchanged, as torch's
calibration does. (A one-shot iterator, e.g. a generator, is read once into memory to be read twice:
:func:`reiterable`.)

**The batches do not matter.** The float graph computes each sample on its own
(:func:`minquant.float_ops.conv2d`), the percentile observer keeps exact tails, the input's range is chosen
from all the data before the graph runs, and :class:`ChannelMean` adds per-sample sums in sample order — so
with the default calibrator, the same samples in the same order give bit-identical qparams whatever
``batch_size`` or however an iterable splits them (tests/test_calibration_batches.py); so does the MSE
calibrator (exact fixed-bin counts). Observers built on :class:`~minquant.observers.RunningHistogram`
(torch's Histogram, entropy) re-bin as batches widen the range, so theirs can move with the batches.

**Report** (:class:`RangeStats`, :func:`range_problems`): beside each observer, ``RangeStats`` keeps the
exact min / max, a log-scale histogram of ``|x|`` and (for the graph input) whether every sample equals the
first; after calibration ``range_problems`` compares each chosen range with the data and returns the
degenerate and outlier-dominated ones; :func:`warn_calibration` emits one
:class:`~minquant.observers.CalibrationWarning` naming them.

This module imports NumPy and tqdm (torch only if the data is torch tensors, through their ``.numpy()``).
"""
from __future__ import annotations

import warnings
from typing import Iterable, Mapping

import numpy as np

from ..affine import qtype
from ..executor import run
from ..graph import Graph
from ..observers import CalibrationWarning

__all__ = ["calibrate", "iter_batches", "reiterable", "ChannelMean", "RangeStats", "range_problems", "warn_calibration", "CalibrationWarning",
           "OUTLIER_RATIO", "ROBUST_QUANTILE"]

#: a range is outlier-dominated when max(|lo|, |hi|) > OUTLIER_RATIO × the ROBUST_QUANTILE of |x| (x ≠ 0)
OUTLIER_RATIO = 100.0
ROBUST_QUANTILE = 0.999


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
    """Yield checked float32 batches from ``data`` (module docstring). A torch tensor is taken as an array
    (N, ...) — not iterated sample by sample. Raises TypeError for a ``batch_size`` that is not a whole number,
    ValueError if it is below 1 or there is no batch."""
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be a whole number of samples, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if hasattr(data, "detach") and hasattr(data, "numpy") and hasattr(data, "shape"):   # a whole torch tensor
        data = data.detach().cpu().numpy()
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


def reiterable(data, batch_size: int = 32):
    """``data`` in a form :func:`iter_batches` can read more than once: an array, a torch tensor, or a
    collection / DataLoader (whose ``iter()`` starts afresh) as it is; a one-shot iterator (a generator,
    ``iter(...)``: ``iter(data) is data``) is read once into a list of checked batches (memory: the
    calibration set)."""
    if isinstance(data, np.ndarray) or (hasattr(data, "detach") and hasattr(data, "shape")):
        return data
    if isinstance(data, Iterable) and iter(data) is data:
        return list(iter_batches(data, batch_size))
    return data


def first_samples(data, n: int, batch_size: int = 32) -> np.ndarray:
    """The first ``n`` samples of ``data`` (fewer if it holds fewer) as one float32 array, whatever the
    batches they come in. ``data`` must be re-iterable (:func:`reiterable`)."""
    got, have = [], 0
    for i, b in enumerate(iter_batches(data, batch_size)):
        if got and b.shape[1:] != got[0].shape[1:]:
            raise ValueError(f"calibration batch {i} has samples of shape {b.shape[1:]}, batch 0 had "
                             f"{got[0].shape[1:]}: every sample must have the model's input shape")
        got.append(b[:n - have])
        have += got[-1].shape[0]
        if have >= n:
            break
    return np.concatenate(got) if len(got) > 1 else got[0]


class ChannelMean:
    """Mean per channel (axis 1; the last axis for 2-D input) — the E[x] of bias correction.

    Each sample's channel sums are computed on their own (float64) and added to the total one sample at a
    time, in order, so the mean is bit-identical however the samples were split into batches."""

    def __init__(self):
        self.total = None
        self.count = 0

    def update(self, x):
        x = np.asarray(x, np.float64)
        if x.ndim == 2:
            per_sample, per_count = x, 1
        else:
            per_sample = x.reshape(x.shape[0], x.shape[1], -1).sum(axis=2)
            per_count = int(np.prod(x.shape[2:], dtype=np.int64))
        if self.total is None:
            self.total = np.zeros(per_sample.shape[1])
        for row in per_sample:
            self.total += row
        self.count += per_count * per_sample.shape[0]
        return self

    def mean(self):
        if self.total is None:
            raise ValueError("ChannelMean: no data")
        return self.total / self.count


def _length(data, batch_size):
    if isinstance(data, np.ndarray):
        return -(-data.shape[0] // batch_size) if data.ndim else None
    try:
        return len(data)
    except TypeError:
        return None


def _as_list(obs):
    if obs is None:
        return []
    return list(obs) if isinstance(obs, (list, tuple)) else [obs]


def _update(name, observers, value):
    try:
        for o in observers:
            o.update(value)
    except ValueError as e:
        raise ValueError(f"calibrating {name!r}: {e}") from e


def calibrate(graph: Graph, data, observers: Mapping[str, object], *, batch_size: int = 32,
              progress: bool = True, kernels=None) -> int:
    """Run ``graph`` (float) over ``data`` and feed ``observers[value]`` every value it names.

    ``observers``: value name (graph input or node name) → an observer with ``update(x)`` (or a list of
    them). An observer of the (single) graph input with ``clamps_input = True`` first sees every raw batch,
    then the graph runs on the batches clamped to the range it chose (module docstring). Returns the number of samples
    seen (``kernels``: the executor's table, default: :data:`minquant.executor.FLOAT_KERNELS`). Raises
    ValueError for empty / non-finite data, or an observer for a value the graph does not compute."""
    known = set(graph.inputs) | {n.name for n in graph.nodes}
    missing = sorted(set(observers) - known)
    if missing:
        raise ValueError(f"observers for values the graph does not compute: {missing[:5]}")
    from tqdm.auto import tqdm

    in_name = graph.inputs[0] if len(graph.inputs) == 1 else None
    clampers = [o for o in _as_list(observers.get(in_name)) if getattr(o, "clamps_input", False)
                and hasattr(o, "clip_range")]

    def hook(name, value):
        obs = [o for o in _as_list(observers.get(name)) if not (name == in_name and o in clampers)]
        if obs:
            _update(name, obs, value)

    data = reiterable(data, batch_size)
    lo = hi = None
    if clampers:     # pass 1: the input's range, from all the data (module docstring)
        for x in iter_batches(data, batch_size):
            _update(in_name, clampers, x)
        lo, hi = clampers[0].clip_range()
        lo, hi = np.float32(min(float(np.min(lo)), 0.0)), np.float32(max(float(np.max(hi)), 0.0))
    seen = 0
    bar = tqdm(iter_batches(data, batch_size), total=_length(data, batch_size), desc="calibrate", unit="batch",
               disable=not progress, leave=False)
    for x in bar:
        if clampers and (x.min() < lo or x.max() > hi):
            x = np.clip(x, lo, hi)
        run(graph, x, hook=hook, kernels=kernels)
        seen += x.shape[0]
    return seen


# ---------------------------------------------------------------------------------------------------------
# The report: degenerate and outlier-dominated ranges.
# ---------------------------------------------------------------------------------------------------------
_MAG_SHIFT = 20       # float32 bits >> 20 & 0x7FF: 8 exponent bits + the top 3 mantissa bits = 1/8 octave
_MAG_BINS = 2048


class RangeStats:
    """What one calibrated value really held — cheap, O(1) memory besides one sample (graph input only).

    * ``min``, ``max`` (exact, float32) and ``count``;
    * a histogram of ``|x|`` on a log scale, 8 bins per octave: the bin of a float32 is its bits
      ``(b >> 20) & 0x7FF`` (sign dropped; 8 exponent bits and the top 3 mantissa bits), one ``bincount`` per
      batch. Bin 0 holds 0 (and ``|x| < 2⁻¹²⁹``), which the robust magnitude ignores;
    * ``samples=True`` (the graph input): whether every sample equals the first one.

    :meth:`robust_abs` is the ``q``-quantile of the non-zero ``|x|``, rounded *up* to its bin's upper edge
    (at most 2^(1/8) ≈ 9 % above the true quantile)."""

    def __init__(self, samples: bool = False):
        self.min = self.max = None
        self.count = 0
        self.mag = np.zeros(_MAG_BINS, np.int64)
        self.samples = bool(samples)
        self.first = None
        self.n_samples = 0
        self.identical = True

    def update(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not x.size:
            return self
        bmin, bmax = np.float32(x.min()), np.float32(x.max())
        self.min = bmin if self.min is None else min(self.min, bmin)
        self.max = bmax if self.max is None else max(self.max, bmax)
        self.count += x.size
        key = (x.view(np.uint32).ravel() >> _MAG_SHIFT) & (_MAG_BINS - 1)
        self.mag += np.bincount(key, minlength=_MAG_BINS)
        if self.samples and x.ndim >= 1:
            if self.first is None:
                self.first = x[0].copy()
            if self.identical:
                self.identical = bool(np.all(x == self.first))
            self.n_samples += x.shape[0]
        return self

    def robust_abs(self, q: float = ROBUST_QUANTILE) -> float:
        """Upper edge of the log-bin holding the ``q``-quantile of the non-zero ``|x|`` (0.0 if all zero)."""
        cum = np.cumsum(self.mag[1:])
        if not cum.size or cum[-1] == 0:
            return 0.0
        b = int(np.searchsorted(cum, q * cum[-1], side="left")) + 1
        e, m = b >> 3, b & 7
        if e == 0:                           # subnormal: |x| < 2^-126
            return 2.0 ** -126
        return float(2.0 ** (e - 127) * (1 + (m + 1) / 8))


def _representable(scale, zero_point, dtype="uint8", reduce_range=False):
    qt = qtype(dtype)
    qt = qt.reduced() if reduce_range else qt
    s, z = float(np.max(scale)), int(np.max(zero_point))
    return (qt.qmin - z) * s, (qt.qmax - z) * s


def range_problems(stats: Mapping[str, RangeStats], qparams: Mapping[str, tuple], *, dtype="uint8",
                   reduce_range: bool = False, ratio: float = OUTLIER_RATIO, quantile: float = ROBUST_QUANTILE):
    """The calibrated ranges that will quantize badly, as ``[{value, problem, numbers}]``.

    For each value with ``stats[v]`` (its :class:`RangeStats`) and ``qparams[v] = (scale, zero_point)``
    (per tensor; the real range they represent is ``[(qmin − z)·s, (qmax − z)·s]``):

    * ``"degenerate"``: the value never changed over the calibration set (``min == max``): the scale is
      ``eps`` or set by that one value and says nothing about real inputs;
    * ``"identical_samples"`` (graph input, ≥ 2 samples, not constant): every calibration sample is the same;
    * ``"outlier_dominated"``: ``R = max(|lo|, |hi|)`` of the represented range exceeds ``ratio`` (100) ×
      ``P`` = the ``quantile`` (99.9 %) of the non-zero ``|x|`` (:meth:`RangeStats.robust_abs`, rounded up
      by < 9 %, so a flag means ``R > 100·P`` for certain). 99.9 % of the values then use fewer than 1 %
      of the codes: most of them round to a handful of levels.

    ``numbers``: ``min``, ``max`` (the data), and for outliers ``range_lo``, ``range_hi``, ``p99_9_abs``,
    ``ratio``; for samples, ``samples``. Floats, so the list goes into ``meta`` (JSON) as it is."""
    out = []
    for v, st in stats.items():
        if st.min is None or v not in qparams:
            continue
        mn, mx = float(st.min), float(st.max)
        if mn == mx:
            out.append({"value": v, "problem": "degenerate",
                        "numbers": {"min": mn, "max": mx, "count": int(st.count)}})
            continue
        if st.samples and st.identical and st.n_samples > 1:
            out.append({"value": v, "problem": "identical_samples",
                        "numbers": {"min": mn, "max": mx, "samples": int(st.n_samples)}})
        lo, hi = _representable(*qparams[v], dtype, reduce_range)
        r, p = max(abs(lo), abs(hi)), st.robust_abs(quantile)
        if p > 0 and r > ratio * p:
            out.append({"value": v, "problem": "outlier_dominated",
                        "numbers": {"min": mn, "max": mx, "range_lo": lo, "range_hi": hi, "p99_9_abs": p,
                                    "ratio": r / p}})
    return out


_ADVICE = {
    "outlier_dominated": "a few extreme calibration values set the range; remove them from the calibration data "
                         "or use calibrator='percentile' (the default), which ignores them",
    "degenerate": "the value never changed during calibration; calibrate with more varied, real samples",
    "identical_samples": "every calibration sample is the same; calibrate with more varied, real samples",
}


def warn_calibration(problems, *, calibrator: str = "", stacklevel: int = 3) -> None:
    """Emit ONE :class:`CalibrationWarning` naming every value in ``problems`` (:func:`range_problems`) with
    advice; nothing if the list is empty."""
    if not problems:
        return
    parts = []
    for p in problems:
        n = p["numbers"]
        if p["problem"] == "outlier_dominated":
            parts.append(f"{p['value']!r}: outlier-dominated range [{n['range_lo']:.3g}, {n['range_hi']:.3g}], "
                         f"{n['ratio']:.3g}× the 99.9th percentile |x| {n['p99_9_abs']:.3g}")
        elif p["problem"] == "degenerate":
            parts.append(f"{p['value']!r}: degenerate range, every calibration value = {n['min']:.6g}")
        else:
            parts.append(f"{p['value']!r}: all {n['samples']} calibration samples identical")
    kinds = list(dict.fromkeys(p["problem"] for p in problems))
    by = f" (calibrator {calibrator!r})" if calibrator else ""
    msg = (f"calibration{by} produced {len(problems)} bad range(s): " + "; ".join(parts) + ". Advice: "
           + "; ".join(_ADVICE[k] for k in kinds) + ". Details: qm.meta['calibration_warnings'].")
    warnings.warn(msg, CalibrationWarning, stacklevel=stacklevel)
