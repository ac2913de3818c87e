"""Calibration observers: watch activations batch by batch, then choose a range [min, max] to quantize.

Post-training static quantization needs a scale and zero point for every activation tensor *before* the
model runs on integers. An observer sees calibration data one batch at a time::

    obs = MinMaxObserver("uint8")
    for x in batches:
        obs.update(x)                 # O(1) or O(bins) memory — no observer keeps the data
    scale, zero_point = obs.compute() # = minquant.affine.choose_qparams(*obs.clip_range(), ...)

Every observer ends in the same place: :meth:`Observer.clip_range` returns the real range ``[lo, hi]`` it
decided to represent, and :meth:`Observer.compute` hands that range to :func:`minquant.affine.choose_qparams`
(``rule="torch"``) — observers differ only in *how they pick the range*, never in the qparams formula:

=================================  ===========================================================================
MinMaxObserver                     running min / max — every value representable, outliers stretch the scale
MovingAverageMinMaxObserver        exponential moving average of per-batch min / max (QAT's default)
PerChannelMinMaxObserver           running min / max per channel (weights)
PercentileObserver                 clip at the (100−p)-th / p-th percentile: exact tails, = np.percentile
MSEObserver                        clip range minimising the quantization MSE, from exact fixed-bin counts
EntropyObserver                    TensorRT's KL-divergence threshold on a 2048-bin histogram of |x|
HistogramObserver                  torch.ao.quantization.HistogramObserver, reproduced bit for bit
=================================  ===========================================================================

Input handling shared by all observers: a batch is any array of real numbers; it is converted to float32
(as torch's observers do). NaN or ±Inf raise ``ValueError`` naming how many were found. An empty batch is
ignored (torch does the same). :meth:`compute` / :meth:`clip_range` before any non-empty batch raise
``ValueError``.
"""
from __future__ import annotations

import bisect
import math

import numpy as np

from .affine import choose_qparams, qtype

__all__ = [
    "CalibrationWarning", "Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver", "RunningHistogram", "HistogramObserver", "PercentileObserver",
    "MSEObserver", "EntropyObserver",
]

_f32 = np.float32
_F32_EPS = float(np.finfo(np.float32).eps)


class CalibrationWarning(UserWarning):
    """A calibration produced a range that will quantize badly: degenerate (every value equal, or every
    calibration sample identical) or dominated by outliers (the range is far wider than the bulk of the
    data). Emitted once per :func:`minquant.quantize_static` call, naming the values; the details are in
    ``qm.meta["calibration_warnings"]`` (:func:`minquant.quantized.calibration.range_problems`)."""


# ---------------------------------------------------------------------------------------------------------
# Base class: input checks, and the one road from a range to (scale, zero_point).
# ---------------------------------------------------------------------------------------------------------
class Observer:
    """Common base: validate batches, remember statistics, turn the chosen range into qparams.

    Parameters (shared by every observer)
    -------------------------------------
    dtype : 'uint8' (default) or 'int8' (also 'uint4' / 'int4'): the code type the range is mapped onto.
    symmetric : range ``[−a, a]`` with ``a = max(|lo|, |hi|)``; zero point 0 (int8) or 128 (uint8).
    reduce_range : use one bit less (uint8 → [0, 127], int8 → [−64, 63]); see ``affine.QType.reduced``.
        (torch refuses symmetric + reduce_range for uint8; here it gives codes [0, 127] with z = 64.)
    eps : smallest scale (float32 machine epsilon, as torch): a range of width 0 (``lo == hi``, e.g. all-zero
        data) gives ``scale = eps`` instead of dividing by zero.

    Subclasses implement ``_observe(x)`` (x: non-empty finite float32 array) and ``clip_range()``.

    ``clamps_input`` (class attribute, False here): True for an observer whose range does not depend on a
    few extreme values (:class:`PercentileObserver`); calibration then runs the model on the input clamped
    to that range, as the quantized model will see it (:func:`minquant.quantized.calibration.calibrate`).
    """

    clamps_input = False

    def __init__(self, dtype="uint8", *, symmetric: bool = False, reduce_range: bool = False,
                 eps: float = _F32_EPS):
        qt = qtype(dtype)
        if qt.bits > 8:
            raise ValueError(f"observers produce activation/weight qparams for 8-bit or 4-bit codes; "
                             f"got dtype {qt.name!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.dtype = qt.name
        self.symmetric = bool(symmetric)
        self.reduce_range = bool(reduce_range)
        self.eps = float(eps)

    # -- public API ------------------------------------------------------------------------------------
    def update(self, x) -> "Observer":
        """Observe one batch (any shape). Returns ``self`` so calls can be chained."""
        x = self._as_batch(x)
        if x.size:
            self._observe(x)
        return self

    def clip_range(self):
        """The real range ``(lo, hi)`` (float32) this observer chose; ``ValueError`` before any update."""
        raise NotImplementedError

    def compute(self):
        """``(scale, zero_point)`` = ``choose_qparams(lo, hi, dtype, symmetric, reduce_range, eps)``.

        Scale is float32, zero point int32; 0-d arrays per tensor, 1-D per channel."""
        lo, hi = self.clip_range()
        return choose_qparams(lo, hi, self.dtype, symmetric=self.symmetric, reduce_range=self.reduce_range,
                              eps=self.eps, rule="torch")

    # -- helpers ---------------------------------------------------------------------------------------
    def _name(self) -> str:
        return type(self).__name__

    def _as_batch(self, x) -> np.ndarray:
        a = np.asarray(x)
        if a.dtype.kind not in "fiu":
            raise ValueError(f"{self._name()}.update expects real numbers, got dtype {a.dtype}")
        a32 = a.astype(np.float32, copy=False)
        if a32.size and not np.all(np.isfinite(a32)):
            n_nan = int(np.isnan(a32).sum())
            n_inf = int(np.isinf(a32).sum())
            raise ValueError(f"{self._name()}.update: batch contains {n_nan} NaN and {n_inf} Inf value(s) "
                             "(after conversion to float32); observers need finite calibration data")
        return a32

    def _not_ready(self):
        return ValueError(f"{self._name()}.compute() called before any update() with a non-empty batch: "
                          "there is no range to quantize yet")


# ---------------------------------------------------------------------------------------------------------
# Min/max family — torch.ao.quantization's MinMaxObserver and relatives.
# ---------------------------------------------------------------------------------------------------------
class MinMaxObserver(Observer):
    """Running minimum and maximum over all batches.

        lo = min over batches of min(X),   hi = max over batches of max(X)        (float32, exact)

    then ``choose_qparams(lo, hi)``; with the default ``rule="torch"`` that is, in float32,
    ``s = max((max(hi,0) − min(lo,0)) / (qmax − qmin), eps)``, ``z = clamp(qmin − rne(min(lo,0)/s))``,
    or symmetric ``s = max(|lo|, |hi|) / ((qmax − qmin)/2)``, ``z = 0`` (int8) / 128 (uint8).
    Equal to ``torch.ao.quantization.MinMaxObserver`` bit for bit (per_tensor_affine / per_tensor_symmetric,
    quint8 / qint8, reduce_range on or off).

    Edge cases: ``lo == hi`` → the range is widened to contain 0 first; if it is still empty (all-zero
    data) ``s = eps``, ``z = qmin`` (affine), 0 (int8 symmetric) or 128 (uint8 symmetric) — torch gives the
    same (its docstring's "scale 1.0" note is stale). NaN/Inf in a batch → ``ValueError`` naming how many;
    ``compute()`` before any data → ``ValueError``. A single outlier sets the scale for everyone: use
    Percentile/MSE/Entropy/Histogram to clip.
    """

    def __init__(self, dtype="uint8", *, symmetric=False, reduce_range=False, eps=_F32_EPS):
        super().__init__(dtype, symmetric=symmetric, reduce_range=reduce_range, eps=eps)
        self.min_val = None
        self.max_val = None

    def reset(self):
        self.min_val = self.max_val = None

    def _observe(self, x):
        bmin, bmax = _f32(x.min()), _f32(x.max())
        if self.min_val is None:
            self.min_val, self.max_val = bmin, bmax
        else:
            self.min_val = min(self.min_val, bmin)
            self.max_val = max(self.max_val, bmax)

    def clip_range(self):
        if self.min_val is None:
            raise self._not_ready()
        return _f32(self.min_val), _f32(self.max_val)


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Exponential moving average of each batch's min and max (c = ``averaging_constant``, default 0.01).

        first batch:   lo = min(X₁),                     hi = max(X₁)
        later batches: lo ← lo + c · (min(Xₜ) − lo),      hi ← hi + c · (max(Xₜ) − hi)     (float32)

    Less sensitive than MinMax to a single extreme batch; with c = 1 it is the last batch's min/max
    (dynamic quantization). Equal to ``torch.ao.quantization.MovingAverageMinMaxObserver`` bit for bit.
    Edge cases as :class:`MinMaxObserver`; note that the averaged range need not contain every value seen,
    and that float32 rounding can make ``lo > hi`` after cancellation (``c = 1``, batch ranges [0, 524290]
    then [1.78125]: lo = 1.78125, hi = 1.75) — ``compute()`` then raises ``ValueError`` (torch asserts).
    NaN/Inf in a batch → ``ValueError`` naming how many; ``compute()`` before any data → ``ValueError``;
    all-zero data → ``s = eps``, ``z = qmin`` (affine), 0 (int8 symmetric) or 128 (uint8 symmetric).
    """

    def __init__(self, averaging_constant: float = 0.01, dtype="uint8", *, symmetric=False,
                 reduce_range=False, eps=_F32_EPS):
        super().__init__(dtype, symmetric=symmetric, reduce_range=reduce_range, eps=eps)
        if not 0 < averaging_constant <= 1:
            raise ValueError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.averaging_constant = float(averaging_constant)

    def _observe(self, x):
        bmin, bmax = _f32(x.min()), _f32(x.max())
        if self.min_val is None:
            self.min_val, self.max_val = bmin, bmax
        else:
            c = _f32(self.averaging_constant)
            self.min_val = _f32(self.min_val + _f32(c * _f32(bmin - self.min_val)))
            self.max_val = _f32(self.max_val + _f32(c * _f32(bmax - self.max_val)))


class PerChannelMinMaxObserver(Observer):
    """Running min / max for every index ``k`` along ``axis`` (one range per output channel of a weight).

        lo[k] = min over batches of min(X[..., k, ...]),   hi[k] likewise            (float32)

    ``compute()`` returns 1-D scale and zero-point arrays of length C (``choose_qparams`` works element-wise).
    Equal to ``torch.ao.quantization.PerChannelMinMaxObserver`` (per_channel_affine / per_channel_symmetric)
    bit for bit. Edge cases: a channel whose values are all equal gets the MinMax treatment (range widened to
    0, ``s = eps`` if all zero); a batch with a different number of channels, or ``axis`` out of range,
    raises ``ValueError``. NaN/Inf in a batch → ``ValueError`` naming how many; ``compute()`` before any
    data → ``ValueError``; an all-zero channel → ``s = eps``, ``z = qmin`` (affine), 0 (int8 symmetric) or
    128 (uint8 symmetric).
    """

    def __init__(self, axis: int = 0, dtype="uint8", *, symmetric=False, reduce_range=False, eps=_F32_EPS):
        super().__init__(dtype, symmetric=symmetric, reduce_range=reduce_range, eps=eps)
        self.axis = int(axis)
        self.min_val = None
        self.max_val = None

    def reset(self):
        self.min_val = self.max_val = None

    def _per_channel_minmax(self, x):
        if x.ndim == 0 or not -x.ndim <= self.axis < x.ndim:
            raise ValueError(f"{self._name()}: axis {self.axis} out of range for a batch of shape {x.shape}")
        y = np.moveaxis(x, self.axis, 0).reshape(x.shape[self.axis], -1)
        if self.min_val is not None and y.shape[0] != self.min_val.shape[0]:
            raise ValueError(f"{self._name()}: batch has {y.shape[0]} channels along axis {self.axis}, "
                             f"earlier batches had {self.min_val.shape[0]}")
        return y.min(axis=1), y.max(axis=1)

    def _observe(self, x):
        bmin, bmax = self._per_channel_minmax(x)
        if self.min_val is None:
            self.min_val, self.max_val = bmin, bmax
        else:
            self.min_val = np.minimum(self.min_val, bmin)
            self.max_val = np.maximum(self.max_val, bmax)

    def clip_range(self):
        if self.min_val is None:
            raise self._not_ready()
        return self.min_val.astype(np.float32), self.max_val.astype(np.float32)


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    """Per-channel version of :class:`MovingAverageMinMaxObserver`:
    ``lo[k] ← lo[k] + c · (min(Xₜ[k]) − lo[k])`` (first batch sets it), same for ``hi``. Equal to
    ``torch.ao.quantization.MovingAveragePerChannelMinMaxObserver`` bit for bit."""

    def __init__(self, averaging_constant: float = 0.01, axis: int = 0, dtype="uint8", *, symmetric=False,
                 reduce_range=False, eps=_F32_EPS):
        super().__init__(axis, dtype, symmetric=symmetric, reduce_range=reduce_range, eps=eps)
        if not 0 < averaging_constant <= 1:
            raise ValueError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.averaging_constant = float(averaging_constant)

    def _observe(self, x):
        bmin, bmax = self._per_channel_minmax(x)
        if self.min_val is None:
            self.min_val, self.max_val = bmin, bmax
        else:
            c = _f32(self.averaging_constant)
            self.min_val = (self.min_val + (c * (bmin - self.min_val)).astype(np.float32)).astype(np.float32)
            self.max_val = (self.max_val + (c * (bmax - self.max_val)).astype(np.float32)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Float32 arithmetic exactly as PyTorch's CPU kernels do it. The histogram observers use these so that a
# learner can put minquant's HistogramObserver next to torch's and see identical numbers.
# ---------------------------------------------------------------------------------------------------------
def _torch_linspace(start, end, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps)`` in float32, bit for bit (ATen's CPU ``linspace_kernel``).

    ``step = f32(end − start) / (steps − 1)``; the first half counts up from ``start``, the second half
    down from ``end``: ``x[i] = start + step·i`` (i < steps//2) else ``end − step·(steps − 1 − i)``. The
    AVX2 / AVX-512 builds of that kernel fuse the multiply-add (one rounding, FMA); computing the product
    and sum in float64 and rounding once to float32 reproduces it (the product is exact in float64; the
    float64 sum could in principle round onto a float32 tie that the true FMA would not — odds ~2⁻²⁹)."""
    start, end = _f32(start), _f32(end)
    if steps == 1:
        return np.array([start], dtype=np.float32)
    step = _f32(_f32(end - start) / _f32(steps - 1))
    i = np.arange(steps, dtype=np.float64)
    up = np.float64(start) + np.float64(step) * i
    down = np.float64(end) - np.float64(step) * (steps - 1 - i)
    return np.where(i < steps // 2, up, down).astype(np.float32)


def _torch_histc(x: np.ndarray, bins: int, lo, hi) -> np.ndarray:
    """``torch.histc(x, bins, min=lo, max=hi)`` for float32 ``x`` (ATen's ``LINEAR_INTERPOLATION`` path).

    Bin of a value: ``trunc(f32(f32(x − lo) · bins) / f32(hi − lo))``; a value equal to ``hi`` goes to the
    last bin, values outside ``[lo, hi]`` are dropped. If ``lo == hi`` the data's own min/max are used; if
    those are equal too the range becomes ``[v − 1, v + 1]`` (or the next float32 for huge ``|v|``)."""
    lo64, hi64 = float(lo), float(hi)
    if lo64 == hi64 and x.size:
        lo64, hi64 = float(x.min()), float(x.max())
    if lo64 == hi64:
        lo64 = min(float(np.nextafter(_f32(lo64), _f32(-np.inf))), lo64 - 1.0)
        hi64 = max(float(np.nextafter(_f32(hi64), _f32(np.inf))), hi64 + 1.0)
    left, right = _f32(lo64), _f32(hi64)  # linspace's first and last edge are exactly these
    x = x[(x >= left) & (x <= right)]
    with np.errstate(over="ignore"):
        pos = (((x - left).astype(np.float32) * _f32(bins)).astype(np.float32) / _f32(right - left))
    pos = np.minimum(pos.astype(np.float32).astype(np.int64), bins - 1)
    return np.bincount(pos, minlength=bins).astype(np.float32)


def _torch_sum(x: np.ndarray, lanes: int = 8) -> np.float32:
    """``torch.sum`` of a 1-D float32 array, bit for bit — ATen's CPU cascade sum (``SumKernel.cpp``).

    Float addition is not associative, so the order matters in the last bit. ATen reads the array as
    vectors of ``lanes`` floats (8 with AVX2, 16 with AVX-512; arrays shorter than that as single floats),
    keeps 4 accumulators side by side, and every ``2^max(4, ceil(log2(rows))//4)`` rows flushes them into a
    second level of accumulators (up to 4 levels) to keep rounding errors small. Then: the levels are added,
    the 4 accumulators are added, the elements that do not fill a vector are summed from 0, and the vector
    lanes are added to that."""
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    if x.size < lanes:  # ATen's scalar path: the same cascade over single floats
        return _f32(_cascade_rows(x.reshape(-1, 1))[0])
    nvec = x.size // lanes
    partial = _cascade_rows(x[: nvec * lanes].reshape(nvec, lanes))
    total = _f32(0)
    for v in x[nvec * lanes:]:
        total = _f32(total + v)
    for v in partial:
        total = _f32(total + v)
    return total


def _cascade_rows(vec: np.ndarray) -> np.ndarray:
    """ATen's ``row_sum``: sum the rows of ``vec`` (n, lanes) with 4 interleaved accumulators and a
    4-level cascade (``multi_row_sum``); returns one accumulator of ``lanes`` float32."""
    nvec, lanes = vec.shape
    ilp = 4
    rows = nvec // ilp
    level_power = max(4, (math.ceil(math.log2(rows)) if rows > 1 else 0) // 4)
    level_step = 1 << level_power
    level_mask = level_step - 1
    acc = np.zeros((4, ilp, lanes), dtype=np.float32)
    i = 0
    while i + level_step <= rows:
        for _ in range(level_step):
            acc[0] += vec[i * ilp:(i + 1) * ilp]
            i += 1
        for j in range(1, 4):
            acc[j] += acc[j - 1]
            acc[j - 1] = 0
            if i & (level_mask << (j * level_power)):
                break
    while i < rows:
        acc[0] += vec[i * ilp:(i + 1) * ilp]
        i += 1
    for j in range(1, 4):
        acc[0] += acc[j]
    partial = acc[0]
    for r in range(rows * ilp, nvec):
        partial[0] += vec[r]
    for k in range(1, ilp):
        partial[0] += partial[k]
    return partial[0]


# ---------------------------------------------------------------------------------------------------------
# A histogram of fixed size whose range grows with the data.
# ---------------------------------------------------------------------------------------------------------
class RunningHistogram:
    """A ``bins``-bin histogram over ``[min_val, max_val]`` that grows its range as batches arrive.

    Memory is fixed (``bins`` float32 counts) however much data streams through. The update rule is
    ``torch.ao.quantization.HistogramObserver``'s, reproduced in float32 bit for bit:

    1. first batch: ``[min_val, max_val] = [min(X), max(X)]`` and ``counts = histc(X, bins, min_val, max_val)``.
    2. later batch inside the current range: ``counts += histc(X, bins, min_val, max_val)``.
    3. later batch outside it: the new range is ``[min(min_val, min X), max(max_val, max X)]``; the batch is
       binned on the new range, and the old counts are *re-binned* onto it: every old bin is cut into
       ``upsample_rate`` (16) equal sub-bins each holding 1/16 of its count, and each sub-bin's count goes
       to the new bin that contains the sub-bin's midpoint. (Special case: if the old range was a single
       value ``v``, all old counts go to the new bin containing ``v``.)

    Step 3 assumes the values inside an old bin are spread uniformly, so a histogram that was re-binned
    is an estimate: mass can move by up to about one (old + new) bin width per re-binning. Ranges that
    grow in a few big steps (the usual case: the first batches set most of the range) lose little.

    ``include_zero=True`` pins 0 inside the range (used for histograms of ``|x|`` starting at 0).
    """

    def __init__(self, bins: int = 2048, *, upsample_rate: int = 16, include_zero: bool = False):
        if bins < 1 or upsample_rate < 1:
            raise ValueError(f"bins and upsample_rate must be >= 1, got {bins}, {upsample_rate}")
        self.bins = int(bins)
        self.upsample_rate = int(upsample_rate)
        self.include_zero = bool(include_zero)
        self.counts = np.zeros(self.bins, dtype=np.float32)
        self.min_val = None
        self.max_val = None

    @property
    def empty(self) -> bool:
        return self.min_val is None

    @property
    def bin_width(self) -> float:
        return (float(self.max_val) - float(self.min_val)) / self.bins

    def edges(self) -> np.ndarray:
        """The ``bins + 1`` bin edges (float64)."""
        return np.linspace(float(self.min_val), float(self.max_val), self.bins + 1)

    def update(self, x: np.ndarray) -> None:
        """Add a non-empty finite float32 batch (already validated by the observer)."""
        x = np.asarray(x, dtype=np.float32).ravel()
        if not x.size:
            return
        x_min, x_max = _f32(x.min()), _f32(x.max())
        if self.include_zero:
            x_min, x_max = min(x_min, _f32(0)), max(x_max, _f32(0))
        if self.min_val is None:
            self.min_val, self.max_val = x_min, x_max
            self.counts = _torch_histc(x, self.bins, x_min, x_max)
            return
        new_min, new_max = min(self.min_val, x_min), max(self.max_val, x_max)
        batch_counts = _torch_histc(x, self.bins, new_min, new_max)
        if new_min == self.min_val and new_max == self.max_val:
            self.counts = (self.counts + batch_counts).astype(np.float32)
            return
        if self.min_val == self.max_val:
            moved = _torch_histc(np.array([self.min_val], np.float32), self.bins, new_min, new_max)
            moved = (moved * _torch_sum(self.counts)).astype(np.float32)
        else:
            moved = self._rebin(new_min, new_max)
        self.counts = (batch_counts + moved).astype(np.float32)
        self.min_val, self.max_val = new_min, new_max

    def _rebin(self, new_min, new_max) -> np.ndarray:
        """Old counts on ``[min_val, max_val]`` → counts on the wider ``[new_min, new_max]`` (step 3)."""
        u = self.upsample_rate
        sub_counts = (np.repeat(self.counts, u) / _f32(u)).astype(np.float32)
        sub_width = _f32(_f32(self.max_val - self.min_val) / _f32(self.bins * u))
        midpoints = (_torch_linspace(self.min_val, self.max_val, self.bins * u + 1)[:-1]
                     + _f32(0.5) * sub_width).astype(np.float32)
        new_edges = _torch_linspace(new_min, new_max, self.bins + 1)
        target = np.searchsorted(new_edges, midpoints, side="right") - 1  # new_edges[t] <= mid < new_edges[t+1]
        target = np.clip(target, 0, self.bins - 1)
        out = np.zeros(self.bins, dtype=np.float32)
        np.add.at(out, target, sub_counts)  # float32, in order — as torch.bincount(weights=...) accumulates
        return out


class _HistogramBased(Observer):
    """Shared plumbing: a :class:`RunningHistogram` of the data plus running min/max."""

    def __init__(self, bins, dtype, symmetric, reduce_range, eps, include_zero=False):
        super().__init__(dtype, symmetric=symmetric, reduce_range=reduce_range, eps=eps)
        self.histogram = RunningHistogram(bins, include_zero=include_zero)

    def reset(self):
        self.histogram = RunningHistogram(self.histogram.bins, upsample_rate=self.histogram.upsample_rate,
                                          include_zero=self.histogram.include_zero)

    def _observe(self, x):
        self.histogram.update(x)

    def _hist64(self):
        """(counts, edges) in float64 for the search; ValueError before any data."""
        h = self.histogram
        if h.empty:
            raise self._not_ready()
        return h.counts.astype(np.float64), h.edges()


# ---------------------------------------------------------------------------------------------------------
# torch's HistogramObserver
# ---------------------------------------------------------------------------------------------------------
class HistogramObserver(_HistogramBased):
    """``torch.ao.quantization.HistogramObserver``: a 2048-bin :class:`RunningHistogram` plus torch's
    ``_non_linear_param_search`` (from Caffe2's ``NormMinimization``), reproduced in NumPy bit for bit.

    The search walks the clipping range inwards from the full histogram ``[bin 0, bin B−1]``:

    * quantile bounds ``α = 0, β = 1`` move by ``1e-5`` per step: ``α ← α + 1e-5`` or ``β ← β − 1e-5``;
      ``l`` = first bin with cumulative count ≥ α·total, ``r`` = last bin with cumulative count ≤ β·total;
      the side that would drop *more* bins moves (start bin ← l if ``l − start > end − r``, else end bin ← r).
    * for each new candidate [start, end] the L2 quantization error is estimated from the histogram:
      the candidate range is cut into ``2^bits`` (256) destination bins; every source bin's mass (uniform
      density ``count / width``) is compared with the centre of the destination bin it falls in,
      ``error = Σ density · ∫(x − centre)² dx`` — values outside the range count against the edge bins.
    * the walk stops as soon as the error *increases*; the last candidate is kept:
      ``lo = min_val + width·start``, ``hi = min_val + width·(end + 1)`` (float32), then ``choose_qparams``.

    Exactness: every float32 operation of torch's Python code, ATen's ``histc`` binning, its fused
    multiply-add ``linspace`` (:func:`_torch_linspace`), the float64-accumulated cumsum and its float32
    summation order (:func:`_torch_sum`; ``simd_lanes`` = 8: torch 2.14 runs the AVX2 build of its sum
    kernel on AVX-512 CPUs too — measured live under capabilities AVX2 and AVX512; 16 models a 512-bit build
    no torch 2.14 kernel uses) are mirrored, so the histogram,
    the searched range and the qparams equal torch's bit for bit. Deliberate differences: NaN/Inf raise
    ``ValueError`` (torch drops ±Inf with a warning and is undefined on NaN); ``compute()`` before data
    raises (torch warns and returns scale 1, zero point 0).

    Edge cases: all data equal (``min == max``) → bin width 0, every candidate error is 0 and the range
    stays ``[v, v]``, i.e. the MinMax result. NaN/Inf in a batch → ``ValueError`` naming how many;
    ``compute()`` before any data → ``ValueError``; all-zero data → ``s = eps``, ``z = qmin`` (affine),
    0 (int8 symmetric) or 128 (uint8 symmetric).
    """

    def __init__(self, bins: int = 2048, dtype="uint8", *, symmetric=False, reduce_range=False, eps=_F32_EPS,
                 simd_lanes: int = 8):
        super().__init__(bins, dtype, symmetric, reduce_range, eps)
        if simd_lanes not in (8, 16):
            raise ValueError(f"simd_lanes must be 8 (AVX2) or 16 (AVX-512), got {simd_lanes}")
        self.simd_lanes = simd_lanes
        self.dst_nbins = 2 ** qtype(dtype).bits

    @property
    def min_val(self):
        return self.histogram.min_val

    @property
    def max_val(self):
        return self.histogram.max_val

    def clip_range(self):
        h = self.histogram
        if h.empty:
            raise self._not_ready()
        if h.min_val == h.max_val:  # bin width 0: torch's search ends where it started
            return _f32(h.min_val), _f32(h.max_val)
        start_bin, end_bin = self._non_linear_param_search()
        width = _f32(_f32(h.max_val - h.min_val) / _f32(h.bins))
        lo = _f32(h.min_val + _f32(width * _f32(start_bin)))
        hi = _f32(h.min_val + _f32(width * _f32(end_bin + 1)))
        return lo, hi

    def _non_linear_param_search(self):
        counts = self.histogram.counts
        nbins = self.histogram.bins
        total = float(_torch_sum(counts, self.simd_lanes))
        csum = np.cumsum(counts.astype(np.float64)).astype(np.float32).tolist()  # ATen: double accumulator
        stepsize = 1e-5
        alpha, beta = 0.0, 1.0
        start_bin, end_bin = 0, nbins - 1
        norm_min = math.inf
        while alpha < beta:
            next_alpha = alpha + stepsize
            next_beta = beta - stepsize
            # torch compares float32 cumsum entries with float32(next_alpha * total) (scalar cast to f32).
            thr_a = float(_f32(next_alpha * total))
            thr_b = float(_f32(next_beta * total))
            # l: first index >= start_bin with csum >= thr_a (at most end_bin); r: last <= end_bin with
            # csum <= thr_b (at least start_bin). csum is non-decreasing, so binary search = torch's scan.
            l = min(max(bisect.bisect_left(csum, thr_a), start_bin), end_bin)
            r = max(min(bisect.bisect_right(csum, thr_b) - 1, end_bin), start_bin)
            next_start_bin, next_end_bin = start_bin, end_bin
            if (l - start_bin) > (end_bin - r):
                next_start_bin = l
                alpha = next_alpha
            else:
                next_end_bin = r
                beta = next_beta
            if next_start_bin == start_bin and next_end_bin == end_bin:
                continue
            norm = self._quantization_error(next_start_bin, next_end_bin)
            if norm > norm_min:
                break
            norm_min = norm
            start_bin, end_bin = next_start_bin, next_end_bin
        return start_bin, end_bin

    def _quantization_error(self, start_bin: int, end_bin: int) -> float:
        """torch's ``_compute_quantization_error`` in float32: the L2 error of quantizing the histogram's
        mass with ``dst_nbins`` levels over source bins [start_bin, end_bin].

        For source bin b (``[b_begin, b_end]`` relative to the range start, density ``count / width``):
        it starts in destination bin ``d₀ = ⌊b_begin / Δ⌋`` and ends in ``d₁ = ⌊b_end / Δ⌋`` (clamped to
        [0, dst_nbins − 1]); ``norm(a, e) = density · (e³ − a³) / 3`` is ∫(x − centre)² over an offset
        range, summed for the partial first dst bin, the ``d₁ − d₀ − 1`` full ones and the partial last."""
        h = self.histogram
        bin_width = (float(h.max_val) - float(h.min_val)) / h.bins  # python float, like .item() arithmetic
        dst_width = bin_width * (end_bin - start_bin + 1) / self.dst_nbins
        if dst_width == 0.0:
            return 0.0
        bw, dw = _f32(bin_width), _f32(dst_width)
        top = _f32(self.dst_nbins - 1)
        src_begin = (np.arange(h.bins) - start_bin).astype(np.float32) * bw
        src_end = (src_begin + bw).astype(np.float32)
        d_begin = np.clip(np.floor_divide(src_begin, dw), _f32(0), top)
        d_begin_center = ((d_begin + _f32(0.5)) * dw).astype(np.float32)
        d_end = np.clip(np.floor_divide(src_end, dw), _f32(0), top)
        density = (h.counts / bw).astype(np.float32)

        def get_norm(a, e):
            return ((e * e * e - a * a * a) / _f32(3)) * density

        half = _f32(dst_width / 2)
        norm = np.zeros(h.bins, dtype=np.float32)
        # Ranges beyond ~1e12 overflow x³ in float32 (inf/NaN errors) — in torch too; mirror it silently.
        with np.errstate(over="ignore", invalid="ignore"):
            norm += get_norm((src_begin - d_begin_center).astype(np.float32), np.full(h.bins, half, np.float32))
            norm += (d_end - d_begin - _f32(1)) * get_norm(_f32(-dst_width / 2), half)
            d_end_center = ((d_end * dw).astype(np.float32) + half).astype(np.float32)
            norm += get_norm(_f32(-dst_width / 2), (src_end - d_end_center).astype(np.float32))
            return float(_torch_sum(norm, self.simd_lanes))


# ---------------------------------------------------------------------------------------------------------
# Percentile: exact order statistics from the two tails; a fixed-bin histogram as the fallback.
# ---------------------------------------------------------------------------------------------------------
class FloatBitsHistogram:
    """Exact counts of float32 values in bins fixed in advance by their bits: a value's bin is its top
    ``9 + mantissa_bits`` bits — sign, the 8 exponent bits and the first ``mantissa_bits`` mantissa bits
    (default 7: ``2¹⁶`` bins, each ``2⁻⁷`` ≈ 0.8 % of its values' magnitude wide; 0 and ±subnormals share
    the bins nearest 0).

    The bins do not depend on the data, so the counts are integers that do not depend on how the data was
    split into batches or in which order it came (unlike :class:`RunningHistogram`, which re-bins).
    Memory: ``2^(9 + mantissa_bits)`` int64 counts (512 KiB by default).

    :meth:`order_statistic` places the ``k``-th smallest value (0-based) inside its bin, spreading the
    bin's ``c`` values evenly: ``a + (k − C + ½)/c · (b − a)`` for the bin ``[a, b]`` holding ranks
    ``C … C + c − 1`` — within one bin (relative ``2^−mantissa_bits``) of the true value."""

    def __init__(self, mantissa_bits: int = 7):
        if not 0 <= mantissa_bits <= 12:
            raise ValueError(f"mantissa_bits must be in [0, 12], got {mantissa_bits}")
        self.mantissa_bits = int(mantissa_bits)
        self.shift = 23 - self.mantissa_bits
        self.counts = np.zeros(1 << (9 + self.mantissa_bits), np.int64)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def update(self, x: np.ndarray) -> None:
        """Count a finite float32 batch (already validated by the observer)."""
        keys = np.ascontiguousarray(x, np.float32).view(np.uint32).ravel() >> np.uint32(self.shift)
        self.counts += np.bincount(keys, minlength=self.counts.size)

    def _ascending(self):
        """(keys in ascending value order, their lower and upper value edges, float64)."""
        half = self.counts.size // 2
        keys = np.concatenate([np.arange(self.counts.size - 1, half - 1, -1), np.arange(half)])
        lo_bits = (keys.astype(np.uint64) << np.uint64(self.shift)).astype(np.uint32)
        hi_bits = ((keys.astype(np.uint64) + 1) << np.uint64(self.shift)).astype(np.uint32)
        with np.errstate(invalid="ignore"):   # the bins past the largest float32 have NaN edges
            lo = lo_bits.view(np.float32).astype(np.float64)
            hi = hi_bits.view(np.float32).astype(np.float64)
            neg = keys >= half           # negative values: the bin's bits run towards −∞
            a = np.where(neg, -np.abs(hi), lo)
            b = np.where(neg, -np.abs(lo), hi)
            a, b = np.nan_to_num(a, nan=-np.inf), np.nan_to_num(b, nan=np.inf)
        return keys, a, b

    def order_statistic(self, k: int) -> float:
        """The k-th smallest value (0-based), placed evenly inside its bin (class docstring)."""
        keys, a, b = self._ascending()
        c = self.counts[keys]
        cum = np.cumsum(c)
        if not 0 <= k < cum[-1]:
            raise ValueError(f"order statistic {k} out of range: {int(cum[-1])} values counted")
        i = int(np.searchsorted(cum, k, side="right"))      # cum[i-1] <= k < cum[i]
        below = int(cum[i - 1]) if i else 0
        return float(a[i] + (k - below + 0.5) / c[i] * (b[i] - a[i]))


def numpy_percentile(order_statistic, n: int, p: float) -> float:
    """``np.percentile(x, p)`` (method 'linear') of ``n`` values (float64) from their order statistics,
    bit for bit as NumPy computes it: ``q = p / 100``, index ``v = (n − 1)·q``, ``i = ⌊v⌋``, ``γ = v − i``
    (``i = n − 1`` and no interpolation if ``v ≥ n − 1``), ``a = x₍ᵢ₎``, ``b = x₍ᵢ₊₁₎``, then
    ``a + (b − a)·γ`` if ``γ < ½`` else ``b − (b − a)·(1 − γ)``. ``order_statistic(k)`` returns the k-th
    smallest value (0-based)."""
    q = np.true_divide(np.float64(p), 100)
    v = np.float64((n - 1) * q)
    if v >= n - 1:
        return float(np.float64(order_statistic(n - 1)))
    i = math.floor(v)
    gamma = np.float64(v - i)
    a, b = np.float64(order_statistic(i)), np.float64(order_statistic(i + 1))
    diff = b - a
    return float(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)


class PercentileObserver(Observer):
    """Clip at the ``(100 − p)``-th and ``p``-th percentiles (default ``p = 99.99``), robust to a few
    extreme values.

        lo = P_{100−p}(X),   hi = P_p(X)      then choose_qparams(lo, hi)

    with ``P`` NumPy's default ('linear') percentile of all ``N`` values seen (:func:`numpy_percentile`):
    sorted ``x₍₀₎ ≤ … ≤ x₍N−1₎``, ``r = q·(N − 1)`` (q = p/100), ``P = x₍⌊r⌋₎ + (r − ⌊r⌋)·(x₍⌊r⌋+1₎ − x₍⌊r⌋₎)``.
    ``P_p`` only reads two order statistics, both among the ``need(N) = ⌊(1 − q)·(N − 1)⌋ + 2`` largest
    values (``P_{100−p}``: the ``need(N)`` smallest).

    **Exact tails, whatever the batches.** The observer keeps, exactly, the ``|T|`` largest values seen
    (``T``) and the ``|B|`` smallest (``B``) — every value not kept in ``T`` is ≤ ``min T`` — with

        |T|, |B| ≤ cap(N) = ⌈margin · need(N)⌉ + min_tail          (margin = 4, min_tail = 1024)

    After each batch: a value ≥ ``min T`` joins ``T`` (all values do while nothing was dropped yet), and
    ``T`` is cut back to its ``cap(N)`` largest; likewise ``B``. The percentile is then read from the tails:
    **equal to ``np.percentile`` of all the data, bit for bit**, and therefore independent of how the data
    was split into batches, as long as ``|T| ≥ need(N)`` and ``|B| ≥ need(N)`` (:attr:`exact`). ``cap`` grows
    with ``N``, so this holds unless the data's tails thin out by more than a factor ``margin`` as it
    streams (e.g. a first quarter of the data holding all the large values) — a dropped value is needed
    again only if more than ``cap(N_then)`` larger values are needed later. Memory: at most
    ``2·cap(N)`` floats plus one batch's extreme values — for p = 99.99 and N = 4·10⁷ (100 MobileNetV2
    crops of a 112×112×32 tensor), ``need`` = 4 001 and ``2·cap`` ≈ 34 000 floats — and a
    :class:`FloatBitsHistogram` (512 KiB) of every value.

    If a tail is too short (``exact`` False) the missing order statistic is estimated from the
    :class:`FloatBitsHistogram` of all values (within ``2⁻⁷`` relative of the true one, clamped between
    the tails); the estimate does not depend on the batches either, but whether ``exact`` holds can.

    **Why not a histogram:** a histogram over ``[min, max]`` lets one value of 1e30 make every bin 5e26 wide;
    here a single largest value does not change ``hi`` — whatever its magnitude — once ``⌊r⌋ + 1 ≤ N − 2``,
    i.e. ``N > 1 + 100/(100 − p)`` (10 001 values for p = 99.99; likewise ``lo`` and the smallest value).

    Edge cases: ``p = 100`` gives the MinMax range; all values equal → ``[v, v]``; ``N ≤ 1 + 100/(100 − p)``
    → the percentile interpolates towards the extreme value, as ``np.percentile`` does; ``p`` must be in
    [50, 100]; ``margin`` ≥ 1 and ``min_tail`` ≥ 2. NaN/Inf in a batch → ``ValueError`` naming how many;
    ``compute()`` before any data → ``ValueError``; all-zero data → ``s = eps``, ``z = qmin`` (affine), 0
    (int8 symmetric) or 128 (uint8 symmetric).
    """

    clamps_input = True  # its range ignores a few extreme values: calibration may clamp the model input to it

    def __init__(self, percentile: float = 99.99, dtype="uint8", *, margin: float = 4.0, min_tail: int = 1024,
                 symmetric=False, reduce_range=False, eps=_F32_EPS):
        super().__init__(dtype, symmetric=symmetric, reduce_range=reduce_range, eps=eps)
        if not 50 <= percentile <= 100:
            raise ValueError(f"percentile must be in [50, 100] (the upper clip point), got {percentile}")
        if not margin >= 1:
            raise ValueError(f"margin must be >= 1 (tails kept = margin × the order statistics needed), "
                             f"got {margin}")
        if min_tail < 2:
            raise ValueError(f"min_tail must be >= 2 (the two order statistics a percentile reads), got {min_tail}")
        self.percentile = float(percentile)
        self.margin = float(margin)
        self.min_tail = int(min_tail)
        self.reset()

    def reset(self):
        self.top = np.empty(0, np.float32)      # the |T| largest values seen (any order)
        self.bottom = np.empty(0, np.float32)   # the |B| smallest values seen
        self.n = 0
        self.top_complete = self.bottom_complete = True   # nothing dropped yet: the tail holds every value
        self.histogram = FloatBitsHistogram()

    @property
    def count(self) -> int:
        """Number of values observed."""
        return self.n

    def need(self, n: int | None = None) -> int:
        """``need(N) = ⌊(1 − q)·(N − 1)⌋ + 2``: order statistics each tail must hold (at most N)."""
        n = self.n if n is None else n
        return min(n, math.floor((1 - self.percentile / 100) * max(n - 1, 0)) + 2)

    def capacity(self, n: int) -> int:
        """``cap(N) = ⌈margin·need(N)⌉ + min_tail``: the most values each tail keeps after N values."""
        return math.ceil(self.margin * self.need(n)) + self.min_tail

    @staticmethod
    def _keep(pool, k: int, largest: bool):
        if pool.size <= k:
            return pool, False
        if largest:
            return np.partition(pool, pool.size - k)[pool.size - k:], True
        return np.partition(pool, k - 1)[:k], True

    def _observe(self, x):
        x = x.ravel()
        self.n += x.size
        self.histogram.update(x)
        cap = self.capacity(self.n)
        top_new = x if self.top_complete else x[x >= self.top.min()]
        bot_new = x if self.bottom_complete else x[x <= self.bottom.max()]
        self.top, dropped = self._keep(np.concatenate([self.top, top_new]), cap, largest=True)
        self.top_complete &= not dropped
        self.bottom, dropped = self._keep(np.concatenate([self.bottom, bot_new]), cap, largest=False)
        self.bottom_complete &= not dropped

    def _ranks(self, p):
        """The 0-based ascending ranks ``np.percentile(·, p)`` reads for the current N."""
        q = np.true_divide(np.float64(p), 100)
        v = np.float64((self.n - 1) * q)
        i = min(math.floor(v), self.n - 1)
        return i, min(i + 1, self.n - 1)

    @property
    def exact(self) -> bool:
        """True when both percentiles are read from the exact tails (equal to ``np.percentile``)."""
        lo_i = self._ranks(100 - self.percentile)[1]
        hi_i = self._ranks(self.percentile)[0]
        return lo_i < self.bottom.size and hi_i >= self.n - self.top.size

    def order_statistic(self, k: int) -> float:
        """The k-th smallest value seen (0-based): exact from a tail, else placed in the histogram."""
        nb, nt = self.bottom.size, self.top.size
        if k < nb:
            return float(np.partition(self.bottom, k)[k])
        if k >= self.n - nt:
            j = k - (self.n - nt)
            return float(np.partition(self.top, j)[j])
        v = self.histogram.order_statistic(k)
        return min(max(v, float(self.bottom.max())), float(self.top.min()))

    def clip_range(self):
        if self.n == 0:
            raise self._not_ready()
        mn, mx = float(self.bottom.min()), float(self.top.max())
        if mn == mx or self.percentile == 100:
            return _f32(mn), _f32(mx)
        lo = numpy_percentile(self.order_statistic, self.n, 100 - self.percentile)
        hi = numpy_percentile(self.order_statistic, self.n, self.percentile)
        return _f32(lo), _f32(max(hi, lo))



# ---------------------------------------------------------------------------------------------------------
# MSE and entropy: two other ways to pick the clipping range from a histogram.
# ---------------------------------------------------------------------------------------------------------
class MSEObserver(Observer):
    """Clipping range that minimises the mean squared quantization error of the data, estimated from exact
    counts (the classic "MSE observer").

    The data is counted in a :class:`FloatBitsHistogram` (bins fixed in advance, ``2⁻⁷`` of a value wide:
    the counts — and so the range — do not depend on the batches), each bin ``[a, b]`` (clipped to the
    data's exact min / max) holding its ``c`` values spread uniformly. For a range ``[lo, hi]`` (step
    ``Δ = (hi − lo) / (qmax − qmin)``; ``lo ≤ 0 ≤ hi``, so 0 is a code), with ``n(·)``, ``Σx``, ``Σx²``
    the counts and moments of the values in a set (prefix sums over the bins, the bin a threshold falls in
    taken pro rata):

        MSE · N =  Σ_{x > hi} (x − hi)²  =  Σx² − 2·hi·Σx + hi²·n           over x > hi     clipped above
                +  Σ_{x < lo} (lo − x)²                                        likewise        clipped below
                +  Δ²/12 · n(lo ≤ x ≤ hi, |x| > Δ/2)                           rounding noise
                +  Σ_{|x| ≤ Δ/2} x²                                           rounds to the code of 0

    (the last line: values within half a step of 0 — the many small activations after a ReLU — round to 0
    and lose exactly x², not Δ²/12).

    Search: a grid that shrinks the observed range towards 0 — ``lo = (i/G)·min(min_val, 0)``,
    ``hi = (j/G)·max(max_val, 0)`` for i, j = 1…G (``grid`` G = 100), all G² pairs (each end clips
    independently); symmetric: ``[−t, t]`` with ``t = (i/G)·max(|min|, |max|)``. The smallest estimate wins
    (ties → the wider range).

    Edge cases: all values equal (``min == max``) → ``[v, v]``. NaN/Inf in a batch → ``ValueError``
    naming how many; ``compute()`` before any data → ``ValueError``; all-zero data → ``s = eps``,
    ``z = qmin`` (affine), 0 (int8 symmetric) or 128 (uint8 symmetric).
    """

    def __init__(self, dtype="uint8", *, grid: int = 100, symmetric=False, reduce_range=False, eps=_F32_EPS):
        super().__init__(dtype, symmetric=symmetric, reduce_range=reduce_range, eps=eps)
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        self.grid = int(grid)
        qt = qtype(dtype)
        qt = qt.reduced() if reduce_range else qt
        self.levels = qt.qmax - qt.qmin
        self.reset()

    def reset(self):
        self.histogram = FloatBitsHistogram()
        self.min_val = self.max_val = None

    def _observe(self, x):
        bmin, bmax = _f32(x.min()), _f32(x.max())
        self.min_val = bmin if self.min_val is None else min(self.min_val, bmin)
        self.max_val = bmax if self.max_val is None else max(self.max_val, bmax)
        self.histogram.update(x)

    def _bins(self):
        """Non-empty bins in ascending order: edges a, b (clipped to [min, max]) and counts, float64."""
        keys, a, b = self.histogram._ascending()
        c = self.histogram.counts[keys].astype(np.float64)
        m = c > 0
        mn, mx = float(self.min_val), float(self.max_val)
        return np.clip(a[m], mn, mx), np.clip(b[m], mn, mx), c[m]

    def _moments_below(self, t, bins):
        """(n, Σx, Σx²) of the values ≤ t (array t), the bin holding t counted pro rata."""
        a, b, c, cum = bins
        k = np.searchsorted(b, t, side="right")          # bins [0, k) lie wholly at or below t
        n, s1, s2 = cum[0][k], cum[1][k], cum[2][k]
        kk = np.minimum(k, a.size - 1)
        ak, bk, ck = a[kk], b[kk], c[kk]
        part = (k < a.size) & (ak < t)
        w = np.where(part, (np.minimum(t, bk) - ak) / np.where(bk > ak, bk - ak, 1.0), 0.0)
        w = np.where(part & (bk <= ak), 1.0, w)
        tt = np.where(part, np.minimum(t, bk), ak)
        return (n + ck * w, s1 + ck * w * (ak + tt) / 2, s2 + ck * w * (ak * ak + ak * tt + tt * tt) / 3)

    def estimated_mse(self, lo, hi):
        """The estimate of the MSE for ranges ``[lo, hi]`` (arrays that broadcast, float64; lo ≤ 0 ≤ hi)."""
        if self.min_val is None:
            raise self._not_ready()
        a, b, c = self._bins()
        mid, sq = (a + b) / 2, (a * a + a * b + b * b) / 3
        cum = [np.concatenate([[0.0], np.cumsum(v)]) for v in (c, c * mid, c * sq)]
        bins = (a, b, c, cum)
        lo, hi = np.broadcast_arrays(np.asarray(lo, np.float64), np.asarray(hi, np.float64))
        total = [v[-1] for v in cum]
        n_hi, s1_hi, s2_hi = self._moments_below(hi, bins)
        n_lo, s1_lo, s2_lo = self._moments_below(lo, bins)
        above = (total[2] - s2_hi) - 2 * hi * (total[1] - s1_hi) + hi * hi * (total[0] - n_hi)
        below = lo * lo * n_lo - 2 * lo * s1_lo + s2_lo
        step = (hi - lo) / self.levels
        h = np.minimum(step / 2, hi)
        n_z1, _, s2_z1 = self._moments_below(h, bins)
        n_z0, _, s2_z0 = self._moments_below(np.maximum(-step / 2, lo), bins)
        n_zero, s2_zero = n_z1 - n_z0, s2_z1 - s2_z0
        inside = n_hi - n_lo
        err = np.maximum(above, 0) + np.maximum(below, 0) + step ** 2 / 12 * np.maximum(inside - n_zero, 0) + s2_zero
        return err / total[0]

    def clip_range(self):
        if self.min_val is None:
            raise self._not_ready()
        mn, mx = float(self.min_val), float(self.max_val)
        if mn == mx:
            return _f32(mn), _f32(mx)
        lo0, hi0 = min(mn, 0.0), max(mx, 0.0)
        frac = np.arange(self.grid, 0, -1) / self.grid  # 1, (G−1)/G, …, 1/G: widest first wins ties
        if self.symmetric:
            t = frac * max(-lo0, hi0)
            best = int(np.argmin(self.estimated_mse(-t, t)))
            return _f32(-t[best]), _f32(t[best])
        los, his = frac * lo0, frac * hi0
        err = self.estimated_mse(los[:, None], his[None, :])
        i, j = np.unravel_index(int(np.argmin(err)), err.shape)
        return _f32(max(los[i], mn)), _f32(min(his[j], mx))


class EntropyObserver(_HistogramBased):
    """TensorRT's entropy (KL-divergence) calibration: pick the threshold ``T`` whose 8-bit version of the
    distribution of ``|x|`` loses the least information (Migacz, "8-bit Inference with TensorRT", 2017).

    1. Histogram ``H`` of ``|x|`` with ``bins`` = 2048 bins over ``[0, max|x|]`` (:class:`RunningHistogram`,
       range pinned at 0, grown by re-binning).
    2. For every candidate ``i = L … 2048`` (L = ``num_quantized_bins`` = 2^(bits−1) = 128 levels for 8 bits,
       the magnitudes one sign of int8 can take):

       * ``P`` = ``H[0 : i]`` with the outliers ``Σ H[i:]`` added to its last bin (clipping moves them to T);
       * ``Q``: merge ``H[0 : i]`` (without the outliers) into L levels — bin j joins level ``⌊j·L / i⌋`` —
         then expand back: each level's count is shared equally by its bins that were non-zero in H
         (empty bins stay 0);
       * ``KL(P ‖ Q) = Σ p log(p / q)`` over p > 0 after normalising both; ``+∞`` if some ``p > 0`` meets
         ``q = 0`` (the last bin was empty but outliers were folded into it).
    3. ``T = i* · width`` for the ``i*`` with the smallest divergence (ties → the larger threshold, as
       NVIDIA's pytorch-quantization does); ``i = 2048`` means no clipping (``T = max|x|``).

    The range is then ``[−T, T]`` (``symmetric=True``, the default, as TensorRT) or the observed
    ``[min, max]`` clipped to ``[−T, T]``; qparams come from ``choose_qparams`` — note torch's symmetric
    formula gives ``s = T / 127.5`` for int8 where TensorRT uses ``T / 127``.

    Edge cases: all-zero data → ``T = 0`` → ``s = eps``, ``z`` = 0 (int8) / 128 (uint8 symmetric) / qmin
    (affine); all ``|x|`` equal to ``v`` → all mass in the last bin, only ``i = 2048`` has finite KL, so
    ``T = v`` (the MinMax range). NaN/Inf in a batch → ``ValueError`` naming how many; ``compute()``
    before any data → ``ValueError``. Fewer distinct values than L levels is fine (``Q`` then equals ``P``
    inside the range). NVIDIA's pytorch-quantization additionally copies bin 1 into bin 0 to blunt the
    spike of exact zeros after ReLU; that tweak is not applied here.
    """

    def __init__(self, dtype="int8", *, bins: int = 2048, num_quantized_bins: int | None = None,
                 symmetric=True, reduce_range=False, eps=_F32_EPS):
        super().__init__(bins, dtype, symmetric, reduce_range, eps, include_zero=True)
        levels = num_quantized_bins or 2 ** (qtype(dtype).bits - 1)
        if not 1 <= levels <= bins:
            raise ValueError(f"num_quantized_bins must be in [1, bins={bins}], got {levels}")
        self.num_quantized_bins = int(levels)
        self.min_val = self.max_val = None

    def reset(self):
        super().reset()
        self.min_val = self.max_val = None

    def _observe(self, x):
        bmin, bmax = _f32(x.min()), _f32(x.max())
        self.min_val = bmin if self.min_val is None else min(self.min_val, bmin)
        self.max_val = bmax if self.max_val is None else max(self.max_val, bmax)
        self.histogram.update(np.abs(x))

    def kl_divergences(self):
        """``(candidates i, KL(P_i ‖ Q_i))`` for i = L … bins, as float64 arrays."""
        counts, _ = self._hist64()
        nbins, L = counts.size, self.num_quantized_bins
        suffix = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # suffix[i] = Σ counts[i:]
        cand = np.arange(L, nbins + 1)
        div = np.empty(cand.size)
        for n, i in enumerate(cand):
            ref = counts[:i]
            p = ref.copy()
            p[-1] += suffix[i]
            level = (np.arange(i) * L) // i
            nonzero = ref > 0
            level_sum = np.bincount(level, weights=ref, minlength=L)
            level_nz = np.bincount(level, weights=nonzero, minlength=L)
            q = np.where(nonzero, level_sum[level] / np.maximum(level_nz[level], 1), 0.0)
            p_sum, q_sum = p.sum(), q.sum()
            if q_sum == 0:
                div[n] = np.inf
                continue
            p, q = p / p_sum, q / q_sum
            m = p > 0
            div[n] = np.inf if np.any(q[m] == 0) else float(np.sum(p[m] * np.log(p[m] / q[m])))
        return cand, div

    def threshold(self) -> np.float32:
        """The chosen clipping threshold T on |x| (float32)."""
        h = self.histogram
        if h.empty:
            raise self._not_ready()
        if h.max_val == 0:
            return _f32(0)
        cand, div = self.kl_divergences()
        best = cand.size - 1 - int(np.argmin(div[::-1]))  # last minimum → the larger threshold
        return _f32(float(cand[best]) * h.bin_width)

    def clip_range(self):
        t = self.threshold()
        if self.symmetric:
            return _f32(-t), t
        return _f32(max(self.min_val, -t)), _f32(min(self.max_val, t))
