"""Calibration robustness: one extreme value, a constant calibration set, and the per-layer report.

The issue: one value of 1e30 (or 1e6) among 50 000 calibration values took TinyCNN from ~97 % to 10 % with
the default percentile calibrator, silently; an all-constant calibration set did the same. Now:

* :class:`PercentileObserver` keeps exact tails beside its histogram, so its percentiles do not depend on
  one value's magnitude, and calibration runs the model on the input clamped to that range;
* every calibrated value is checked (:func:`range_problems`): degenerate and outlier-dominated ranges go to
  ``qm.meta["calibration_warnings"]`` and one :class:`CalibrationWarning` names them.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from minquant.observers import CalibrationWarning, PercentileObserver
from minquant.quantized.calibration import RangeStats, range_problems
from minquant.quantized.static import quantize_static

N_CALIB = 64                      # 64 digits of 1×28×28 = 50 176 calibration values
AFTER_EQ_HEAD = 40 * 784 + 400    # a pixel of sample 40: past the 32 samples equalization measures
IN_EQ_HEAD = 15 * 784 + 585       # a pixel of sample 15: inside them


@pytest.fixture(scope="module")
def tiny():
    from minquant.data.zoo import tiny_cnn_digits
    model, (x_tr, _, x_te, y_te) = tiny_cnn_digits()
    return model, x_tr[:N_CALIB].copy(), x_te, y_te


def _quantize(model, calib, **kw):
    """(quantized model, the CalibrationWarnings it emitted)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qm = quantize_static(model, calib, progress=False, **kw)
    return qm, [w for w in caught if issubclass(w.category, CalibrationWarning)]


def _acc(qm, x, y):
    return 100.0 * float((np.argmax(qm(x), axis=1) == y).mean())


def _with(calib, pos, value):
    c = calib.copy()
    c.flat[pos] = value
    return c


@pytest.fixture(scope="module")
def clean_acc(tiny):
    model, calib, x_te, y_te = tiny
    qm, caught = _quantize(model, calib)
    assert not caught and qm.meta["calibration_warnings"] == []
    return _acc(qm, x_te, y_te)


# ---------------------------------------------------------------------------------------------------------
# The observer
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [50_000, 4096, 700, 7])
@pytest.mark.parametrize("value", [1e4, 1e6, 1e30, -1e30])
def test_percentile_ignores_one_extreme_value(batch, value):
    """The clip range equals np.percentile of the data (the ranks lie in the exact tails) and does not move
    when the extreme value's magnitude changes, however the data is batched."""
    x = np.random.default_rng(0).standard_normal(50_000).astype(np.float32)
    x[31_337] = value
    ranges = []
    for v in (value, value * 1e3 if abs(value) < 1e30 else value / 1e20):
        x[31_337] = v
        obs = PercentileObserver()
        for i in range(0, x.size, batch):
            obs.update(x[i:i + batch])
        ranges.append(obs.clip_range())
        assert obs.count == x.size
    assert ranges[0] == ranges[1]
    ref = np.percentile(x.astype(np.float64), [0.01, 99.99])
    assert ranges[0] == tuple(ref.astype(np.float32))
    assert max(abs(float(r)) for r in ranges[0]) < 10


def test_percentile_many_outliers_and_middle_ranks():
    """p = 90 with 500 huge values: the ranks read are in the exact tails (10 % of the data each, sized
    from the rank), so the range is np.percentile's, untouched by the 1e30s."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(200_000).astype(np.float32)
    x[rng.choice(x.size, 500, replace=False)] = 1e30
    obs = PercentileObserver(90.0)
    for i in range(0, x.size, 10_000):
        obs.update(x[i:i + 10_000])
    lo, hi = obs.clip_range()
    ref_lo, ref_hi = np.percentile(x.astype(np.float64), [10, 90])
    assert obs.exact and (lo, hi) == (np.float32(ref_lo), np.float32(ref_hi))


def test_percentile_small_data_is_exact_and_extreme_wins_when_too_few():
    """At most 2·tail values are kept as they are (exact np.percentile); with N ≤ 1 + 100/(100 − p) values
    the percentile interpolates towards the extreme value, as np.percentile does."""
    x = np.random.default_rng(2).standard_normal(1000).astype(np.float32)
    x[5] = 1e6
    lo, hi = PercentileObserver(99.99).update(x).clip_range()
    ref = np.percentile(x.astype(np.float64), [0.01, 99.99])
    assert np.allclose((lo, hi), ref, rtol=1e-6) and hi > 1e5


def test_percentile_reset_and_bad_tail():
    obs = PercentileObserver().update(np.arange(5000, dtype=np.float32))
    obs.reset()
    with pytest.raises(ValueError, match="before any update"):
        obs.compute()
    with pytest.raises(ValueError, match="min_tail"):
        PercentileObserver(min_tail=0)


# ---------------------------------------------------------------------------------------------------------
# The detection rules
# ---------------------------------------------------------------------------------------------------------
def _stats(x, samples=False):
    return RangeStats(samples=samples).update(np.asarray(x, np.float32))


def test_range_problems_rules():
    x = np.random.default_rng(3).uniform(0.5, 1.0, 100_000).astype(np.float32)   # P99.9 |x| ≈ 1
    st = _stats(x)
    p = st.robust_abs()
    assert 0.999 <= p <= 1.0 * 2 ** (1 / 8) + 1e-6
    s_ok, s_bad = 90.0 / 255, 130.0 / 255                 # uint8 affine, z = 0: range [0, 255·s]
    assert range_problems({"v": st}, {"v": (s_ok, 0)}) == []
    (prob,) = range_problems({"v": st}, {"v": (s_bad, 0)})
    assert prob["value"] == "v" and prob["problem"] == "outlier_dominated"
    assert prob["numbers"]["ratio"] > 100 and prob["numbers"]["range_hi"] == pytest.approx(130.0)
    # zeros (a ReLU's) do not count towards the robust magnitude
    assert _stats(np.concatenate([np.zeros(10**6, np.float32), x])).robust_abs() == p
    # degenerate: never changed; identical samples: every sample equal
    assert range_problems({"c": _stats(np.full(50, 3.0))}, {"c": (3.0 / 255, 0)})[0]["problem"] == "degenerate"
    same = np.repeat(x[:64].reshape(1, 64), 5, axis=0)
    (prob,) = range_problems({"x": _stats(same, samples=True)}, {"x": (1.0 / 255, 0)})
    assert prob["problem"] == "identical_samples" and prob["numbers"]["samples"] == 5


# ---------------------------------------------------------------------------------------------------------
# TinyCNN end to end
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("calibrator", ["percentile", "histogram", "entropy", "mse", "minmax"])
def test_clean_data_no_warning(tiny, calibrator):
    model, calib, x_te, y_te = tiny
    qm, caught = _quantize(model, calib, calibrator=calibrator)
    assert caught == [] and qm.meta["calibration_warnings"] == []
    assert _acc(qm, x_te, y_te) > 90


@pytest.mark.parametrize("value", [1e6, 1e30])
def test_default_calibrator_keeps_accuracy(tiny, clean_acc, value):
    model, calib, x_te, y_te = tiny
    qm, caught = _quantize(model, _with(calib, AFTER_EQ_HEAD, value))
    assert qm.meta["calibrator"] == "percentile"
    assert abs(_acc(qm, x_te, y_te) - clean_acc) <= 2
    assert caught == [] and qm.meta["calibration_warnings"] == []   # the range ignored it: nothing to report
    # the input range is the clean one, not stretched
    assert qm.qparams["x:quantize"][0] < 0.02


@pytest.mark.parametrize("value", [1e6, 1e30])
def test_default_calibrator_keeps_accuracy_without_equalization(tiny, clean_acc, value):
    model, calib, x_te, y_te = tiny
    qm, caught = _quantize(model, _with(calib, IN_EQ_HEAD, value), equalize=False)
    assert abs(_acc(qm, x_te, y_te) - clean_acc) <= 2 and caught == []


@pytest.mark.parametrize("value", [1e6, 1e30])
def test_outlier_in_equalization_samples_keeps_accuracy(tiny, clean_acc, value):
    """Equalization's per-channel ranges come from the first samples clamped to the percentile range
    (static.py ``_clamped_head``), so an extreme value among them no longer sets a layer's scales (before:
    1e30 there corrupted them) — and, the range having ignored it, there is nothing to report."""
    model, calib, x_te, y_te = tiny
    qm, caught = _quantize(model, _with(calib, IN_EQ_HEAD, value))
    assert abs(_acc(qm, x_te, y_te) - clean_acc) <= 2
    assert caught == [] and qm.meta["calibration_warnings"] == []
    assert qm.qparams["x:quantize"][0] < 0.02


@pytest.mark.parametrize("calibrator,value,pos", [
    (c, v, p) for c in ("histogram", "entropy", "minmax") for v, p in ((1e6, AFTER_EQ_HEAD), (1e30, IN_EQ_HEAD))
] + [("mse", 1e30, AFTER_EQ_HEAD)])
def test_stretched_ranges_are_reported(tiny, calibrator, value, pos):
    model, calib, _, _ = tiny
    qm, caught = _quantize(model, _with(calib, pos, value), calibrator=calibrator)
    assert len(caught) == 1, "one warning per quantize_static call"
    msg = str(caught[0].message)
    probs = qm.meta["calibration_warnings"]
    flagged = {p["value"] for p in probs if p["problem"] == "outlier_dominated"}
    assert {"x", "features.1"} <= flagged                 # the input and the first conv's output
    assert all(repr(v) in msg for v in flagged) and "percentile" in msg and calibrator in msg
    (px,) = [p for p in probs if p["value"] == "x"]
    assert px["numbers"]["ratio"] > 100 and px["numbers"]["max"] == np.float32(value)
    assert px["numbers"]["p99_9_abs"] < 5


@pytest.mark.parametrize("calibrator", ["percentile", "histogram", "minmax"])
@pytest.mark.parametrize("fill", [0.0, 0.5])
def test_constant_calibration_set_is_reported(tiny, calibrator, fill):
    model, calib, _, _ = tiny
    qm, caught = _quantize(model, np.full_like(calib, fill), calibrator=calibrator)
    assert len(caught) == 1
    probs = qm.meta["calibration_warnings"]
    assert {"value": "x", "problem": "degenerate", "numbers": {"min": fill, "max": fill, "count": calib.size}} \
        in probs
    msg = str(caught[0].message)
    assert "'x'" in msg and "degenerate" in msg and "varied" in msg


def test_identical_samples_are_reported(tiny):
    model, calib, _, _ = tiny
    qm, caught = _quantize(model, np.repeat(calib[:1], N_CALIB, axis=0))
    assert len(caught) == 1 and "identical" in str(caught[0].message)
    assert [p["problem"] for p in qm.meta["calibration_warnings"] if p["value"] == "x"] == ["identical_samples"]


def test_warning_class_and_meta_survives_save(tiny, tmp_path):
    assert issubclass(CalibrationWarning, UserWarning) and not issubclass(CalibrationWarning, DeprecationWarning)
    model, calib, x_te, _ = tiny
    with pytest.warns(CalibrationWarning, match="'x'"):
        qm = quantize_static(model, _with(calib, AFTER_EQ_HEAD, 1e30), calibrator="minmax", progress=False)
    from minquant.quantized.model import load
    path = qm.save(tmp_path / "m")
    assert load(path).meta["calibration_warnings"] == qm.meta["calibration_warnings"]
