"""Pruning schedules: Zhu & Gupta's formula against hand-computed values, the seed's 10% loop, and
iterative_prune keeping earlier zeros through fine-tuning."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from minquant.prune import (constant_step_targets, fit_fine_tune, iterative_prune, zhu_gupta_sparsity,
                            zhu_gupta_targets)
from minquant.data.zoo import TinyCNN

torch.set_num_threads(1)


def test_zhu_gupta_values():
    # s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³ with s_i=0.1, s_f=0.9, t0=100, n=4, Δt=50
    kw = dict(s_i=0.1, s_f=0.9, t0=100, n=4, dt=50)
    assert zhu_gupta_sparsity(100, **kw) == pytest.approx(0.1)
    assert zhu_gupta_sparsity(150, **kw) == pytest.approx(0.9 - 0.8 * 0.75 ** 3)   # 0.5625
    assert zhu_gupta_sparsity(200, **kw) == pytest.approx(0.9 - 0.8 * 0.125)       # 0.8
    assert zhu_gupta_sparsity(300, **kw) == pytest.approx(0.9)
    assert zhu_gupta_sparsity(0, **kw) == pytest.approx(0.1)      # before t0: s_i
    assert zhu_gupta_sparsity(1e6, **kw) == pytest.approx(0.9)    # after the end: s_f
    t = np.arange(100, 301)
    s = zhu_gupta_sparsity(t, **kw)
    assert np.all(np.diff(s) >= 0) and np.all(np.diff(s, 2) <= 1e-15)  # rises, fast then slow (concave)
    np.testing.assert_allclose(zhu_gupta_targets(0.8, 4), [0.8 * (1 - 0.75 ** 3), 0.8 * (1 - 0.5 ** 3),
                                                           0.8 * (1 - 0.25 ** 3), 0.8])


def test_constant_step_targets():
    rem = constant_step_targets(0.1, 0.9, of="remaining")
    np.testing.assert_allclose(rem[:3], [0.1, 0.19, 0.271])
    assert rem[-1] == 0.9 and len(rem) == 22  # 1 − 0.9^21 = 0.8906 < 0.9 ≤ 1 − 0.9^22
    np.testing.assert_allclose(constant_step_targets(0.1, 0.9, of="original"), np.arange(1, 10) / 10)
    with pytest.raises(ValueError):
        constant_step_targets(0.0, 0.9)
    with pytest.raises(ValueError):
        zhu_gupta_sparsity(1, 0.0, 1.5, 0, 4, 1)


def test_iterative_prune_hits_targets_and_keeps_zeros():
    torch.manual_seed(0)
    model = TinyCNN()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 1, 12, 12)).astype(np.float32)  # TinyCNN pools adaptively: small input
    y = rng.integers(0, 10, 48)
    calls, zero_sets = [], []
    inner = fit_fine_tune(x, y, epochs=1, batch_size=16, lr=1e-2)

    def fine_tune(m, step, sparsity):
        calls.append((step, sparsity))
        inner(m, step, sparsity)

    def evaluate(m):
        zero_sets.append({n: (m.get_submodule(n).weight == 0).clone() for n in ("features.0", "features.2",
                                                                             "classifier")})
        return 0.5

    targets = zhu_gupta_targets(0.8, 3)
    hist = iterative_prune(model, targets, fine_tune, scope="layer", evaluate=evaluate, progress=False)
    assert [c[0] for c in calls] == [0, 1, 2] and [c[1] for c in calls] == targets
    for rec, target in zip(hist, targets):
        assert rec["target"] == target and rec["metric"] == 0.5
        assert abs(rec["sparsity"] - target) < 0.002  # round() per layer
    for before, after in zip(zero_sets, zero_sets[1:]):  # zeros are never revived
        for n in before:
            assert torch.all(after[n][before[n]])
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_iterative_prune_rejects_bad_targets():
    with pytest.raises(ValueError, match="non-decreasing"):
        iterative_prune(nn.Linear(4, 4), [0.5, 0.3], progress=False)


def test_gradual_prune_follows_zhu_gupta_during_one_fit():
    from minquant.prune import gradual_prune

    torch.manual_seed(1)
    model = TinyCNN()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    zero_sets = []

    def evaluate(m):
        zero_sets.append({n: (m.get_submodule(n).weight == 0).clone() for n in ("features.2", "classifier")})
        return 0.0

    hist = gradual_prune(model, x, y, 0.8, epochs=5, n=3, t0=0, dt=1, scope="layer", evaluate=evaluate,
                         progress=False, batch_size=8, lr=1e-2)
    expected = [zhu_gupta_sparsity(t, 0.0, 0.8, 0, 3, 1) for t in (1, 2, 3, 3, 3)]
    np.testing.assert_allclose([h["sparsity"] for h in hist], expected, atol=0.002)
    for before, after in zip(zero_sets, zero_sets[1:]):  # one Adam throughout: momentum must not revive
        for n in before:
            assert torch.all(after[n][before[n]])
    assert all(not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(ValueError, match="ends at epoch"):
        gradual_prune(model, x, y, 0.9, epochs=2, n=3, progress=False)
