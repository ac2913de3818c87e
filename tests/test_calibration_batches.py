"""Calibration does not depend on how the calibration data is split into batches (issue 15).

Before: MobileNetV2's int8 agreement moved 80.5 / 84.0 / 86.5 % with batch_size 16 / 32 / 100 — float32
matrix products rounded differently for different batch sizes, the percentile observer's histogram re-binned
differently, the input clamp used the range "so far" and equalization used the first *batches* (32 or 100
samples). Now the same samples in the same order give bit-identical quantized models whatever the batches.
"""
from __future__ import annotations

import numpy as np
import pytest

from minquant import float_ops as F
from minquant.executor import run
from minquant.quantized.calibration import ChannelMean, first_samples
from minquant.quantized.static import quantize_static, to_graph


def _same_models(a, b):
    assert [n.name for n in a.graph.nodes] == [n.name for n in b.graph.nodes]
    for na, nb in zip(a.graph.nodes, b.graph.nodes):
        assert na.attrs == nb.attrs, na.name
        assert na.params.keys() == nb.params.keys(), na.name
        for k in na.params:
            assert np.array_equal(na.params[k], nb.params[k]), (na.name, k)


@pytest.mark.parametrize("bias_correction,calibrator", [(True, "percentile"), (False, "percentile"), (True, "mse")])
def test_quantize_static_same_qparams_for_any_batch_size(digits_model, bias_correction, calibrator):
    model, (x_tr, _, x_te, _) = digits_model
    x = x_tr[:70]
    kw = dict(progress=False, bias_correction=bias_correction, calibrator=calibrator)
    ref = quantize_static(model, x, batch_size=32, **kw)
    for bs in (1, 7, 70):
        _same_models(ref, quantize_static(model, x, batch_size=bs, **kw))
    uneven = (x[i:j] for i, j in [(0, 3), (3, 40), (40, 41), (41, 70)])   # a one-shot generator
    qm = quantize_static(model, uneven, **kw)
    _same_models(ref, qm)
    assert qm.meta["calibration_samples"] == 70
    np.testing.assert_array_equal(ref(x_te[:16]), qm(x_te[:16]))


def test_float_graph_one_sample_at_a_time(digits_model):
    """The float executor's output for a sample does not depend on its batch (conv and linear)."""
    model, (x_tr, _, _, _) = digits_model
    g = to_graph(model, (1,) + x_tr.shape[1:])
    whole = run(g, x_tr[:9])
    np.testing.assert_array_equal(np.concatenate([run(g, x_tr[i:i + 1]) for i in range(9)]), whole)
    rng = np.random.default_rng(0)
    a, w = rng.standard_normal((37, 300)).astype(np.float32), rng.standard_normal((50, 300)).astype(np.float32)
    np.testing.assert_array_equal(np.concatenate([F.linear(a[i:i + 1], w) for i in range(37)]), F.linear(a, w))
    np.testing.assert_allclose(F.linear(a, w), a @ w.T, rtol=1e-5, atol=1e-4)


def test_channel_mean_and_first_samples_ignore_batches():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 3, 5, 5)).astype(np.float32) * 1e3
    means = []
    for bs in (1, 6, 20):
        m = ChannelMean()
        for i in range(0, 20, bs):
            m.update(x[i:i + bs])
        means.append(m.mean())
    assert all(np.array_equal(means[0], m) for m in means[1:])
    np.testing.assert_allclose(means[0], x.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-12)
    for bs in (1, 7, 20):
        np.testing.assert_array_equal(first_samples(x, 8, bs), x[:8])
    with pytest.raises(ValueError, match="shape"):
        first_samples([x[:2], x[:2, :, :4]], 8)
