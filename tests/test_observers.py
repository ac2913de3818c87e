"""Calibration observers against torch.ao.quantization (bit for bit), NumPy's percentile, a brute-force MSE
search and an independent KL-divergence computation with scipy.stats.entropy; plus the edge cases."""
import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings, strategies as st
from torch.ao.quantization import observer as tobs

from minquant.affine import choose_qparams, fake_quantize, qtype
from minquant.observers import (EntropyObserver, FloatBitsHistogram, HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver,
                                MovingAveragePerChannelMinMaxObserver, MSEObserver, PercentileObserver,
                                PerChannelMinMaxObserver, RunningHistogram)
from minquant.observers import _torch_histc, _torch_linspace, _torch_sum  # ATen float32 emulation

torch.set_num_threads(1)

pytestmark = [
    pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*torch.ao.quantization.*:DeprecationWarning"),
]

SET = dict(max_examples=40, deadline=None, derandomize=True)
F32_EPS = np.float32(np.finfo(np.float32).eps)
# torch's reduction order depends on the SIMD width of its CPU kernels (see observers._torch_sum)
# torch 2.14 registers its float sum kernel for AVX2 only (REGISTER_DISPATCH): on an AVX-512 CPU the AVX2
# build runs, so the sum adds 8-float vectors on every x86 host (measured: 16 lanes is wrong under AVX512)
LANES = 8

# (dtype, symmetric, reduce_range); torch refuses symmetric + reduce_range for quint8
CONFIGS = [(d, s, r) for d in ("uint8", "int8") for s in (False, True) for r in (False, True)
           if not (d == "uint8" and s and r)]


def torch_observer(name, dtype, symmetric, reduce_range, *, per_channel=False, **kw):
    qscheme = ({False: torch.per_tensor_affine, True: torch.per_tensor_symmetric} if not per_channel else
               {False: torch.per_channel_affine, True: torch.per_channel_symmetric})[symmetric]
    tdtype = {"uint8": torch.quint8, "int8": torch.qint8}[dtype]
    return getattr(tobs, name)(dtype=tdtype, qscheme=qscheme, reduce_range=reduce_range, **kw)


def feed(theirs, ours, batches):
    for b in batches:
        b = np.asarray(b, dtype=np.float32)
        theirs(torch.from_numpy(b.copy()))
        ours.update(b)


def assert_same_qparams(theirs, ours):
    ts, tz = theirs.calculate_qparams()
    s, z = ours.compute()
    ts = ts.numpy().astype(np.float32).reshape(np.shape(s))
    tz = tz.numpy().reshape(np.shape(z))
    assert s.dtype == np.float32
    assert np.array_equal(ts.view(np.uint32), s.view(np.uint32)), (ts, s)  # bit-equal scale
    assert np.array_equal(tz, z), (tz, z)


# ---------------------------------------------------------------------------------------------------------
# strategies: float32 batches, finite, not saturating anything (|x| <= 1e6), including zeros and ties
# ---------------------------------------------------------------------------------------------------------
finite32 = st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False)


@st.composite
def batches(draw, max_batches=4, max_len=200):
    n = draw(st.integers(1, max_batches))
    if draw(st.booleans()):  # raw hypothesis values (zeros, subnormals, repeats, huge spreads)
        return [np.array(draw(st.lists(finite32, min_size=1, max_size=max_len)), np.float32) for _ in range(n)]
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):  # seeded data, each batch with its own spread and offset (range grows or not)
        size = int(rng.integers(1, max_len * 10))
        out.append((rng.standard_normal(size) * 10 ** rng.uniform(-3, 3) + rng.uniform(-5, 5)).astype(np.float32))
    return out


# ---------------------------------------------------------------------------------------------------------
# min/max family vs torch
# ---------------------------------------------------------------------------------------------------------
@settings(**SET)
@given(bs=batches(), cfg=st.sampled_from(CONFIGS))
def test_minmax_matches_torch(bs, cfg):
    dtype, sym, rr = cfg
    theirs, ours = torch_observer("MinMaxObserver", dtype, sym, rr), MinMaxObserver(dtype, symmetric=sym,
                                                                                     reduce_range=rr)
    feed(theirs, ours, bs)
    assert ours.min_val == theirs.min_val.item() and ours.max_val == theirs.max_val.item()
    assert_same_qparams(theirs, ours)


@settings(**SET)
@given(bs=batches(), cfg=st.sampled_from(CONFIGS), c=st.sampled_from([0.01, 0.3, 1.0]))
def test_moving_average_matches_torch(bs, cfg, c):
    dtype, sym, rr = cfg
    theirs = torch_observer("MovingAverageMinMaxObserver", dtype, sym, rr, averaging_constant=c)
    ours = MovingAverageMinMaxObserver(c, dtype, symmetric=sym, reduce_range=rr)
    feed(theirs, ours, bs)
    assert np.float32(ours.min_val) == np.float32(theirs.min_val.item())
    assert np.float32(ours.max_val) == np.float32(theirs.max_val.item())
    if ours.min_val > ours.max_val:  # float32 rounding of lo + c·(m − lo) can cross: both refuse
        with pytest.raises(AssertionError):
            theirs.calculate_qparams()
        with pytest.raises(ValueError, match="min_val > max_val"):
            ours.compute()
        return
    assert_same_qparams(theirs, ours)


def test_moving_average_rounding_can_cross():
    """c = 1 should give the last batch's range, but 0 + (1.78125 − 0) and 524290 + (1.78125 − 524290)
    round to 1.78125 > 1.75 in float32: torch asserts, we raise a ValueError."""
    obs = MovingAverageMinMaxObserver(1.0).update([0.0, 524290.0]).update([1.78125])
    with pytest.raises(ValueError, match="min_val > max_val"):
        obs.compute()


def test_moving_average_formula():
    """lo ← lo + c·(batch_min − lo), first batch sets it."""
    obs = MovingAverageMinMaxObserver(0.5)
    obs.update([-2.0, 4.0]).update([-1.0, 2.0]).update([0.0, 1.0])
    assert (obs.min_val, obs.max_val) == (np.float32(-0.75), np.float32(2.0))


@st.composite
def channel_batches(draw):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    ndim = draw(st.integers(2, 4))  # torch cannot do 1-D (flatten(start_dim=1))
    shape = [int(v) for v in rng.integers(1, 6, ndim)]
    axis = draw(st.integers(-ndim, ndim - 1))
    out = []
    for _ in range(draw(st.integers(1, 3))):
        spread = 10 ** rng.uniform(-2, 2, shape[axis])  # each channel its own range
        x = rng.standard_normal(shape) * np.expand_dims(spread, [d for d in range(ndim) if d != axis % ndim])
        if draw(st.booleans()):
            x[tuple(slice(0, 1) if d == axis % ndim else slice(None) for d in range(ndim))] = 0  # all-zero channel
        out.append(x.astype(np.float32))
    return axis, out


@settings(**SET)
@given(case=channel_batches(), dtype=st.sampled_from(["uint8", "int8"]), sym=st.booleans(),
       moving=st.booleans())
def test_per_channel_matches_torch(case, dtype, sym, moving):
    axis, bs = case
    rr = dtype == "int8" and sym  # exercise reduce_range where torch allows it
    if moving:
        theirs = torch_observer("MovingAveragePerChannelMinMaxObserver", dtype, sym, rr, per_channel=True,
                                ch_axis=axis, averaging_constant=0.2)
        ours = MovingAveragePerChannelMinMaxObserver(0.2, axis, dtype, symmetric=sym, reduce_range=rr)
    else:
        theirs = torch_observer("PerChannelMinMaxObserver", dtype, sym, rr, per_channel=True, ch_axis=axis)
        ours = PerChannelMinMaxObserver(axis, dtype, symmetric=sym, reduce_range=rr)
    feed(theirs, ours, bs)
    assert_same_qparams(theirs, ours)


# ---------------------------------------------------------------------------------------------------------
# HistogramObserver vs torch: histogram, searched range and qparams all identical
# ---------------------------------------------------------------------------------------------------------
def check_histogram_observer(bs, dtype, sym, rr):
    theirs = torch_observer("HistogramObserver", dtype, sym, rr)
    ours = HistogramObserver(dtype=dtype, symmetric=sym, reduce_range=rr, simd_lanes=LANES)
    feed(theirs, ours, bs)
    assert ours.min_val == theirs.min_val.item() and ours.max_val == theirs.max_val.item()
    assert np.array_equal(ours.histogram.counts, theirs.histogram.numpy())
    if ours.min_val == ours.max_val:
        assert_same_qparams(theirs, ours)
        return
    # torch's calculate_qparams() = _calculate_qparams(*_non_linear_param_search()); its search is a slow
    # Python loop, so run it once and check both the searched range and the qparams.
    t_lo, t_hi = theirs._non_linear_param_search()
    assert ours.clip_range() == (np.float32(t_lo.item()), np.float32(t_hi.item()))
    theirs.calculate_qparams = lambda: theirs._calculate_qparams(t_lo, t_hi)
    assert_same_qparams(theirs, ours)


def growing(seed):
    """Batches whose ranges differ (grow, shrink, shift) so that the histogram is re-binned."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(1000) * s + o).astype(np.float32) for s, o in [(1, 0), (3, 1), (0.5, -2), (6, 4)]]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_histogram_matches_torch_seeded(cfg, seed):
    rng = np.random.default_rng(seed)
    one = [np.concatenate([rng.laplace(size=5000), [40.0, -25.0]]).astype(np.float32)]  # outliers to clip
    check_histogram_observer(one, *cfg)
    check_histogram_observer(growing(seed), *cfg)
    relu = [np.maximum(rng.standard_normal(3000) * k, 0).astype(np.float32) for k in (1, 2, 4)]
    check_histogram_observer(relu, *cfg)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(bs=batches(max_batches=3), cfg=st.sampled_from(CONFIGS))
def test_histogram_matches_torch_hypothesis(bs, cfg):
    check_histogram_observer(bs, *cfg)


EDGE = {
    "zeros": [np.zeros(7)],                                           # all zero: s = eps
    "constant": [np.full(5, 2.5), np.full(3, 2.5)],                   # min == max throughout
    "const-then-range": [np.full(10, 3.0), np.array([1.0, 5.0, 2.0])],  # one-value histogram, then a range
    "single": [np.array([1.5])],
    "shrink-grow": [np.linspace(-5, 5, 1000), np.linspace(-1, 1, 1000), np.linspace(-6, 6, 10)],
    # slow in torch (its search runs ~10⁵ Python steps): one variant each
    "two-constants": [np.full(4, -2.0), np.full(4, 7.0)],
    "huge": [np.array([1e30, -1e30, 0.0, 5.0])],                      # float32 overflow in the error: NaN
}
EDGE_CASES = [(k, s) for k in EDGE for s in (False, True) if not (s and k in ("two-constants", "huge"))]


@pytest.mark.parametrize("name,sym", EDGE_CASES, ids=[f"{k}-{'sym' if s else 'affine'}" for k, s in EDGE_CASES])
def test_histogram_edge_cases_match_torch(name, sym):
    check_histogram_observer(EDGE[name], "int8", sym, False)


# The three ATen behaviours HistogramObserver depends on, checked directly: on typical data a one-ulp
# difference in them rarely changes the final qparams, so the observer tests alone would not notice.
@settings(**SET)
@given(seed=st.integers(0, 2 ** 32 - 1), steps=st.sampled_from([2, 3, 17, 2049, 32769]))
def test_torch_linspace_bit_exact(seed, steps):
    rng = np.random.default_rng(seed)
    a = np.float32(rng.standard_normal() * 10 ** rng.uniform(-4, 4))
    b = np.float32(a + abs(rng.standard_normal()) * 10 ** rng.uniform(-4, 5))
    ref = torch.linspace(float(a), float(b), steps).numpy()
    assert np.array_equal(_torch_linspace(a, b, steps).view(np.uint32), ref.view(np.uint32))


@settings(**SET)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.sampled_from([1, 7, 100, 2048, 2048, 5000, 40000]))
def test_torch_sum_bit_exact(seed, n):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 10 ** rng.uniform(-3, 3)).astype(np.float32) ** 2
    assert _torch_sum(x, LANES) == torch.from_numpy(x).sum().item()


@settings(**SET)
@given(seed=st.integers(0, 2 ** 32 - 1), bins=st.sampled_from([7, 256, 2048]), same=st.booleans())
def test_torch_histc_bit_exact(seed, bins, same):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(int(rng.integers(1, 5000))) * 10 ** rng.uniform(-3, 3)).astype(np.float32)
    lo, hi = (x[0], x[0]) if same else (np.float32(x.min() * 0.9), np.float32(x.max() * 1.1))
    if not same:  # values on and next to the bin edges, where the float32 formula decides the bin
        edges = torch.linspace(float(lo), float(hi), bins + 1).numpy()
        x = np.concatenate([x, edges, np.nextafter(edges, np.float32(np.inf)),
                            np.nextafter(edges, np.float32(-np.inf))]).astype(np.float32)
    ref = torch.histc(torch.from_numpy(x), bins, min=float(lo), max=float(hi)).numpy()
    assert np.array_equal(_torch_histc(x, bins, lo, hi), ref)


def test_running_histogram_fixed_size_and_mass():
    """Memory is `bins` counts however many batches arrive; re-binning moves mass but never loses it."""
    h = RunningHistogram(256)
    rng = np.random.default_rng(3)
    n = 0
    for k in range(30):
        x = (rng.standard_normal(500) * (1 + k)).astype(np.float32)
        h.update(x)
        n += x.size
    assert h.counts.shape == (256,) and h.counts.dtype == np.float32
    assert abs(float(h.counts.sum(dtype=np.float64)) - n) < 1e-3 * n


# ---------------------------------------------------------------------------------------------------------
# PercentileObserver vs np.percentile on all the data at once
# ---------------------------------------------------------------------------------------------------------
def _data(dist, n=20000, seed=7):
    rng = np.random.default_rng(seed)
    return {"normal": rng.standard_normal(n), "laplace": rng.laplace(size=n) * 3,
            "relu": np.maximum(rng.standard_normal(n), 0), "skewed": rng.lognormal(size=n) - 2,
            "relu6": np.clip(rng.standard_normal(n) * 4, 0, 6)}[dist].astype(np.float32)


@pytest.mark.parametrize("p", [99.0, 99.9, 99.99, 100.0, 50.0])
@pytest.mark.parametrize("dist", ["normal", "laplace", "relu", "skewed", "relu6"])
def test_percentile_equals_numpy(p, dist):
    """One batch: the clip range is np.percentile of the data, bit for bit (exact tails)."""
    x = _data(dist)
    obs = PercentileObserver(p).update(x)
    ref = np.percentile(x.astype(np.float64), [100 - p, p]).astype(np.float32)
    assert obs.exact and obs.clip_range() == (ref[0], max(ref[1], ref[0]))
    assert obs.compute() == tuple(choose_qparams(*obs.clip_range(), "uint8"))


@pytest.mark.parametrize("p", [99.0, 99.99])
@pytest.mark.parametrize("seed", range(3))
def test_percentile_does_not_depend_on_the_batches(p, seed):
    """200 000 values split into batches of 1 000 / 7 777 / 33 333 / all, and in growing batches with
    growing ranges: the same range, bit for bit, equal to np.percentile of all the data."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([(rng.standard_normal(25000) * (1 + k) + k).astype(np.float32) for k in range(8)])
    ref = tuple(np.percentile(x.astype(np.float64), [100 - p, p]).astype(np.float32))
    for bs in (1000, 7777, 33333, x.size):
        obs = PercentileObserver(p)
        for i in range(0, x.size, bs):
            obs.update(x[i:i + bs])
        assert obs.exact and obs.clip_range() == ref, bs
    # the same 200 000 values in an unequal split: one value, then a third, then the rest
    obs = PercentileObserver(p).update(x[:1]).update(x[1:70_000]).update(x[70_000:])
    assert obs.clip_range() == ref


def test_percentile_memory_is_the_tails():
    """cap(N) = ⌈margin·need(N)⌉ + min_tail values per tail, need(N) = ⌊(1 − q)(N − 1)⌋ + 2."""
    obs = PercentileObserver(99.9)
    rng = np.random.default_rng(3)
    for _ in range(10):
        obs.update(rng.standard_normal(100_000).astype(np.float32))
    assert obs.need() == math.floor(0.001 * (10 ** 6 - 1)) + 2 == 1001
    assert obs.top.size == obs.bottom.size == obs.capacity(10 ** 6) == 4 * 1001 + 1024
    assert obs.exact


def test_percentile_falls_back_to_the_histogram_when_the_tail_thins_out():
    """All the large values first, then 100× more small ones: the values needed at the end were dropped
    from the tail early; the estimate (FloatBitsHistogram) is then within 2⁻⁷ relative of np.percentile."""
    rng = np.random.default_rng(4)
    first = (rng.random(10_000) + 10).astype(np.float32)         # [10, 11)
    rest = rng.random(1_000_000).astype(np.float32)              # [0, 1)
    obs = PercentileObserver(99.0, min_tail=2, margin=1).update(first).update(rest)
    assert not obs.exact
    ref = np.percentile(np.concatenate([first, rest]).astype(np.float64), [1, 99])
    lo, hi = obs.clip_range()
    assert abs(hi - ref[1]) <= 2 ** -7 * abs(ref[1]) and abs(lo - ref[0]) <= 2 ** -7 * abs(ref[0]) + 1e-30


@settings(**SET)
@given(x=st.lists(finite32, min_size=1, max_size=300), p=st.sampled_from([90.0, 99.0, 99.9]),
       bs=st.integers(1, 50))
def test_percentile_hypothesis_equals_numpy(x, p, bs):
    x = np.array(x, np.float32)
    obs = PercentileObserver(p, min_tail=2)
    for i in range(0, x.size, bs):
        obs.update(x[i:i + bs])
    ref = np.percentile(x.astype(np.float64), [100 - p, p]).astype(np.float32)
    assert obs.exact and obs.clip_range() == (ref[0], max(ref[0], ref[1]))


def test_float_bits_histogram():
    h = FloatBitsHistogram()
    x = np.array([-3.0, -0.5, 0.0, 0.25, 1.0, 1.0, 7.5], np.float32)
    h.update(x[:3])
    h.update(x[3:])
    assert h.total == 7
    for k, v in enumerate(np.sort(x)):
        assert abs(h.order_statistic(k) - v) <= 2 ** -7 * abs(v) + 1e-38
    with pytest.raises(ValueError, match="out of range"):
        h.order_statistic(7)


# ---------------------------------------------------------------------------------------------------------
# MSEObserver: clips when it pays, beats MinMax, and is a near-minimum of a brute-force search
# ---------------------------------------------------------------------------------------------------------
def measured_mse(x, dtype, qparams):
    s, z = qparams
    return float(np.mean((fake_quantize(x, s, z, dtype).astype(np.float64) - x) ** 2))


def gaussian_with_outliers(seed, n=20000, k=20):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    x[:k] = rng.choice([-1, 1], k) * rng.uniform(8, 10, k)
    return x


@pytest.mark.parametrize("dtype,sym", [("uint4", False), ("int4", True), ("uint8", False), ("int8", True)])
@pytest.mark.parametrize("seed", [0, 1])
def test_mse_observer_clips_and_beats_minmax(dtype, sym, seed):
    x = gaussian_with_outliers(seed)
    obs = MSEObserver(dtype, symmetric=sym)
    for b in np.array_split(x, 4):
        obs.update(b)
    lo, hi = obs.clip_range()
    ours = measured_mse(x, dtype, obs.compute())
    minmax = measured_mse(x, dtype, MinMaxObserver(dtype, symmetric=sym).update(x).compute())
    assert ours <= minmax
    if qtype(dtype).bits == 4:  # with 15 levels clipping the outliers pays a lot
        assert hi < 0.6 * x.max() and lo > 0.6 * x.min()
        assert ours < 0.5 * minmax
    # brute force over ranges, measuring the real MSE on the data
    if sym:
        brute = min(measured_mse(x, dtype, choose_qparams(-t, t, dtype, symmetric=True))
                    for t in np.linspace(0.1, 10, 200))
    else:
        brute = min(measured_mse(x, dtype, choose_qparams(a, b, dtype))
                    for a in np.linspace(-10, -0.2, 30) for b in np.linspace(0.2, 10, 30))
    assert ours <= 1.01 * brute
    # the histogram estimate it minimised tracks the measured error
    assert float(obs.estimated_mse(lo, hi)) == pytest.approx(ours, rel=0.05)


# ---------------------------------------------------------------------------------------------------------
# EntropyObserver: known answers, and KL(P‖Q) recomputed independently with scipy.stats.entropy
# ---------------------------------------------------------------------------------------------------------
def reference_kl(hist, i, levels=128):
    """TensorRT's recipe written out plainly: P = first i bins + outliers in the last one; Q = the first i
    bins merged into `levels` groups (np.linspace/digitize boundaries), shared by the non-empty bins."""
    hist = np.asarray(hist, np.float64)
    p = hist[:i].copy()
    p[i - 1] += hist[i:].sum()
    group = np.digitize(np.arange(i), np.linspace(0, i, levels + 1)) - 1
    q = np.zeros(i)
    for g in range(levels):
        members = np.flatnonzero(group == g)
        nonempty = members[hist[members] > 0]
        if nonempty.size:
            q[nonempty] = hist[members].sum() / nonempty.size
    return scipy.stats.entropy(p, q)


def test_entropy_kl_matches_scipy():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.laplace(size=30000), [30.0, -28.0, 25.0]]).astype(np.float32)
    obs = EntropyObserver()
    for b in np.array_split(x, 3):
        obs.update(b)
    cand, div = obs.kl_divergences()
    assert cand[0] == 128 and cand[-1] == 2048
    counts = obs.histogram.counts
    for i in [128, 129, 300, 777, 1500, 2047, 2048, int(cand[np.argmin(div)])]:
        ref = reference_kl(counts, i)
        got = div[i - 128]
        assert (np.isinf(ref) and np.isinf(got)) or got == pytest.approx(ref, rel=1e-9, abs=1e-12)
    # the threshold is the (last) argmin of the divergences, times the bin width
    all_ref = np.array([reference_kl(counts, i) for i in range(128, 2049, 16)])
    i_best = int(cand[len(div) - 1 - np.argmin(div[::-1])])
    assert div[i_best - 128] <= all_ref.min() + 1e-12
    assert obs.threshold() == np.float32(i_best * obs.histogram.bin_width)


def test_entropy_known_answers():
    rng = np.random.default_rng(1)
    lap = rng.laplace(size=100000).astype(np.float32)
    lap[:20] = rng.choice([-40.0, 40.0], 20)
    t = EntropyObserver().update(lap).threshold()
    assert 4 < t < 0.4 * 40  # well inside the outliers, beyond the bulk (P(|x| > 4) ≈ 2 %)
    u = rng.uniform(-1, 1, 200000).astype(np.float32)
    t = EntropyObserver().update(u).threshold()
    assert t >= 0.98 * np.abs(u).max()  # nothing to gain from clipping a uniform distribution
    obs = EntropyObserver("int8").update(lap)
    s, z = obs.compute()
    assert z == 0 and s == choose_qparams(-obs.threshold(), obs.threshold(), "int8", symmetric=True)[0]
    lo, hi = EntropyObserver("uint8", symmetric=False).update(np.abs(lap)).clip_range()
    assert 0 <= lo < 1e-3 and 4 < hi < 16  # post-ReLU-like data: range [min, T] ≈ [0, T]


# ---------------------------------------------------------------------------------------------------------
# Edge cases shared by every observer
# ---------------------------------------------------------------------------------------------------------
ALL = [
    lambda: MinMaxObserver(), lambda: MovingAverageMinMaxObserver(), lambda: PerChannelMinMaxObserver(0),
    lambda: MovingAveragePerChannelMinMaxObserver(0.01, 0), lambda: HistogramObserver(),
    lambda: PercentileObserver(), lambda: MSEObserver(), lambda: EntropyObserver(),
]
IDS = ["minmax", "moving", "perchannel", "moving-perchannel", "histogram", "percentile", "mse", "entropy"]


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_compute_before_update_raises(make):
    obs = make()
    with pytest.raises(ValueError, match="before any update"):
        obs.compute()
    obs.update(np.zeros((3, 0), np.float32))  # empty batches are ignored, as in torch
    with pytest.raises(ValueError, match="before any update"):
        obs.compute()


@pytest.mark.parametrize("make", ALL, ids=IDS)
@pytest.mark.parametrize("bad,word", [(np.nan, "1 NaN"), (np.inf, "1 Inf"), (-np.inf, "1 Inf")])
def test_nan_inf_raise(make, bad, word):
    x = np.ones((2, 3), np.float32)
    x[1, 2] = bad
    with pytest.raises(ValueError, match=word):
        make().update(x)


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_all_zero_data_gives_eps_scale(make):
    obs = make().update(np.zeros((4, 5), np.float32))
    s, z = obs.compute()
    assert np.all(s == F32_EPS)
    qt = qtype(obs.dtype)
    assert np.all(z == (0 if obs.symmetric and qt.signed else 128 if obs.symmetric else qt.qmin))


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_constant_data_is_minmax(make):
    """min == max: the range is the single value (widened to 0 by choose_qparams)."""
    obs = make().update(np.full((2, 6), 3.0, np.float32))
    s, z = obs.compute()
    lo, hi = obs.clip_range()
    assert np.all(np.maximum(np.abs(lo), np.abs(hi)) == np.float32(3.0))
    ref_s, ref_z = choose_qparams(lo, hi, obs.dtype, symmetric=obs.symmetric)
    assert np.array_equal(s, ref_s) and np.array_equal(z, ref_z)


@pytest.mark.parametrize("dtype,sym,zp", [("uint8", True, 128), ("int8", True, 0), ("int8", False, None)])
def test_symmetric_zero_point(dtype, sym, zp):
    x = np.linspace(-1, 3, 101, dtype=np.float32)
    for obs in (MinMaxObserver(dtype, symmetric=sym), HistogramObserver(dtype=dtype, symmetric=sym),
                PercentileObserver(99.0, dtype, symmetric=sym), MSEObserver(dtype, symmetric=sym)):
        s, z = obs.update(x).compute()
        if zp is not None:
            assert z == zp
        else:
            assert -128 <= z <= 127 and z != 0


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_no_observer_keeps_the_data(make):
    """State stays O(bins) / O(channels) however much data streams through."""
    obs = make()
    rng = np.random.default_rng(5)
    for _ in range(5):
        obs.update(rng.standard_normal((4, 20000)).astype(np.float32))
    arrays = [v for v in vars(obs).values() if isinstance(v, np.ndarray)]
    arrays += [v for h in vars(obs).values() if isinstance(h, RunningHistogram)
               for v in vars(h).values() if isinstance(v, np.ndarray)]
    assert all(a.size <= 2048 for a in arrays)


def test_bad_arguments():
    with pytest.raises(ValueError, match="dtype"):
        MinMaxObserver("int32")
    with pytest.raises(ValueError, match="unsupported quantized dtype"):
        MinMaxObserver("float16")
    with pytest.raises(ValueError, match="real numbers"):
        MinMaxObserver().update(np.array(["a"]))
    with pytest.raises(ValueError, match="percentile"):
        PercentileObserver(20)
    with pytest.raises(ValueError, match="margin"):
        PercentileObserver(margin=0.5)
    with pytest.raises(ValueError, match="min_tail"):
        PercentileObserver(min_tail=1)
    with pytest.raises(ValueError, match="averaging_constant"):
        MovingAverageMinMaxObserver(0.0)
    obs = PerChannelMinMaxObserver(axis=1).update(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="3 channels|had 3"):
        obs.update(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="axis 1 out of range"):
        PerChannelMinMaxObserver(axis=1).update(np.ones(3, np.float32))


def test_integer_input_is_accepted():
    s, z = MinMaxObserver().update(np.arange(-3, 10)).compute()
    assert (s, z) == choose_qparams(-3.0, 9.0, "uint8")


@pytest.mark.parametrize("sym", [False, True])
def test_mse_observer_does_not_depend_on_the_batches(sym):
    """Exact fixed-bin counts: the same range, bit for bit, however the data is split."""
    x = np.concatenate([gaussian_with_outliers(3), np.maximum(gaussian_with_outliers(4), 0) * 3])
    ranges = set()
    for bs in (1000, 7777, x.size):
        obs = MSEObserver("uint8", symmetric=sym)
        for i in range(0, x.size, bs):
            obs.update(x[i:i + bs])
        ranges.add(tuple(float(v) for v in obs.clip_range()))
    assert len(ranges) == 1


def test_mse_observer_small_values_round_to_zero():
    """Post-ReLU data with most values near 0: those round to the code of 0 and lose x², which the
    estimate counts (not Δ²/12) — it matches the measured error within 5 %."""
    rng = np.random.default_rng(6)
    x = (np.maximum(rng.standard_normal(50_000), 0) ** 3).astype(np.float32)
    obs = MSEObserver("uint8").update(x)
    lo, hi = obs.clip_range()
    assert float(obs.estimated_mse(lo, hi)) == pytest.approx(measured_mse(x, "uint8", obs.compute()), rel=0.05)
