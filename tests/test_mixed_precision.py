"""Mixed precision by sensitivity: the greedy chooser on known numbers, and quantize_mixed on TinyCNN with real
digits meeting a size budget and an SQNR budget (measured independently here), with its per-layer table."""
from __future__ import annotations

import numpy as np
import pytest

from minquant.quantized.comparison import sqnr_db
from minquant.quantized.mixed import (Budget, Sensitivity, choose_precisions, precision_table, quantize_mixed,
                                      sensitivity_of)
from minquant.quantized.precision import FP16, FP32, INT8, w4a8, w4a16
from minquant.quantized.precision_convert import prepare_graph, quantize_precision

W4 = w4a16(32)


def _synthetic():
    """Three layers: 'a' tolerant, 'b' sensitive, 'c' big and tolerant; candidates fp16 / int8 / W4A16."""
    s = Sensitivity(["a", "b", "c"], (FP16, INT8, W4), samples=8)
    s.fp32_bytes = {"a": 4000, "b": 4000, "c": 40000}
    s.bytes = {"a": {FP16: 2000, INT8: 1000, W4: 600}, "b": {FP16: 2000, INT8: 1000, W4: 600},
               "c": {FP16: 20000, INT8: 10000, W4: 6000}}
    s.sqnr_db = {"a": {FP16: 90.0, INT8: 45.0, W4: 35.0}, "b": {FP16: 80.0, INT8: 20.0, W4: 10.0},
                 "c": {FP16: 90.0, INT8: 50.0, W4: 40.0}}
    return s


def _predicted(s, choice):
    noise = sum(10 ** (-s.sqnr_db[n][p] / 10) if p != FP32 else 0.0 for n, p in choice.items())
    return -10 * np.log10(noise) if noise else np.inf


def _size(s, choice):
    return sum(s.fp32_bytes[n] if p == FP32 else s.bytes[n][p] for n, p in choice.items())


def test_chooser_on_known_numbers():
    s = _synthetic()
    loose = choose_precisions(s, Budget(min_sqnr_db=5.0))
    assert loose == {"a": W4, "b": W4, "c": W4}                           # the lowest precision everywhere
    assert choose_precisions(s, Budget(min_sqnr_db=200.0)) == {"a": FP32, "b": FP32, "c": FP32}
    mid = choose_precisions(s, Budget(min_sqnr_db=30.0))
    assert _predicted(s, mid) >= 30.0
    assert mid["c"] == W4 and mid["b"] in (FP16, FP32)                     # the sensitive layer is raised
    for target in (10.0, 25.0, 33.0, 40.0):                               # tighter budget → never smaller
        a, b = choose_precisions(s, Budget(min_sqnr_db=target)), choose_precisions(s, Budget(min_sqnr_db=target + 5))
        assert _predicted(s, a) >= target and _size(s, b) >= _size(s, a)
    small = choose_precisions(s, Budget(max_bytes=12000))
    assert _size(s, small) <= 12000 and small["b"] != W4                 # spends its bytes on 'b'
    assert _size(s, choose_precisions(s, Budget(max_bytes=48000))) <= 48000
    with pytest.raises(ValueError, match="no choice meets size ≤ 1,000 bytes"):
        choose_precisions(s, Budget(max_bytes=1000))


def test_budget_is_checked():
    with pytest.raises(ValueError, match="exactly one"):
        Budget()
    with pytest.raises(ValueError, match="exactly one"):
        Budget(max_bytes=10, min_sqnr_db=3.0)
    with pytest.raises(TypeError, match="whole number of bytes"):
        Budget(max_bytes=1.5)
    with pytest.raises(ValueError, match="> 0"):
        Budget(max_bytes=0)
    with pytest.raises(ValueError, match="finite"):
        Budget(min_sqnr_db=float("nan"))
    with pytest.raises(TypeError, match="must be a Budget"):
        choose_precisions(_synthetic(), 30.0)


pytest.importorskip("torch")


@pytest.fixture(scope="module")
def setup():
    from minquant.data.zoo import tiny_cnn_digits
    model, (x_tr, _, x_te, y_te) = tiny_cnn_digits()
    calib, x_sens = x_tr[:64], x_tr[64:72]
    g, _, _ = prepare_graph(model, [calib])
    cands = (FP16, INT8, W4, w4a8(32))
    lowered = {c: quantize_precision(g, c, calib, equalize=False) for c in cands}
    sens = sensitivity_of(g, lowered, x_sens)
    return g, calib, x_sens, x_te[:200], y_te[:200], sens, lowered


def test_sensitivity_is_measured_per_layer(setup):
    g, calib, x_sens, _, _, sens, lowered = setup
    assert sens.layers == ["features.0", "features.2", "classifier"] and sens.samples == 8
    for name in sens.layers:
        db = sens.sqnr_db[name]
        assert db[FP16] > db[INT8] > db[W4] > 10                          # lower precision, more noise
        assert sens.bytes[name][FP16] > sens.bytes[name][INT8] > sens.bytes[name][W4]
    # the chooser's model: the layers' noises add up to the whole int8 model's (here within 3 dB)
    from minquant.executor import run
    whole = sqnr_db(run(g, x_sens), lowered[INT8](x_sens))
    predicted = -10 * np.log10(sum(10 ** (-sens.sqnr_db[n][INT8] / 10) for n in sens.layers))
    assert abs(whole - predicted) < 3.0


@pytest.mark.parametrize("target_db", [30.0, 45.0])
def test_sqnr_budget_is_met(setup, target_db):
    g, calib, x_sens, x, y, sens, lowered = setup
    qm = quantize_mixed(g, np.concatenate([calib, x_sens]), Budget(min_sqnr_db=target_db), equalize=False,
                        sensitivity=sens)
    from minquant.executor import run
    measured = sqnr_db(run(g, x_sens), qm(x_sens))
    assert qm.meta["mixed"]["met"] and measured >= target_db           # measured here, independently
    assert abs(measured - qm.meta["mixed"]["measured_sqnr_db"]) < 1e-6
    assert (qm(x).argmax(1) == y).mean() > 0.9
    assert qm.size_bytes() < lowered[FP16].size_bytes()                # it did lower something
    table = precision_table(qm)
    for name, p in qm.meta["mixed"]["choice"].items():
        assert name in table and p in table
    assert "(met)" in table


def test_size_budget_is_met(setup):
    g, calib, x_sens, x, y, sens, lowered = setup
    data = np.concatenate([calib, x_sens])
    budget = lowered[INT8].size_bytes()
    qm = quantize_mixed(g, data, Budget(max_bytes=budget), equalize=False, sensitivity=sens)
    assert qm.size_bytes() <= budget and qm.meta["mixed"]["met"]
    from minquant.executor import run
    f = run(g, x_sens)
    assert sqnr_db(f, qm(x_sens)) >= sqnr_db(f, lowered[INT8](x_sens)) - 1.0   # at int8's size, no worse
    small = lowered[W4].size_bytes() + 3000                         # between all-W4A16 and all-int8
    tiny = quantize_mixed(g, data, Budget(max_bytes=small), equalize=False, sensitivity=sens)
    assert tiny.size_bytes() <= small < qm.size_bytes() and tiny.meta["mixed"]["met"]
    assert sqnr_db(f, tiny(x_sens)) > sqnr_db(f, lowered[W4](x_sens))   # the 3000 bytes bought something
    with pytest.raises(ValueError, match="no choice meets"):
        quantize_mixed(g, data, Budget(max_bytes=1000), equalize=False, sensitivity=sens)
