"""The distillation loss: NumPy value and hand-derived gradient vs torch autograd (float64, 1e-10), finite
differences, known values, invariances, the large-T limit behind the T² factor, and input validation."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minquant.distill import KDLoss, kd_loss, log_softmax

torch.set_num_threads(1)

TEMPS = [0.5, 1.0, 4.0, 20.0]


def _torch_loss_and_grad(z, t, y, **kw):
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    yt = None if y is None else torch.tensor(y)
    loss = KDLoss(**kw)(zt, torch.tensor(t, dtype=torch.float64), yt)
    loss.backward()
    return loss.item(), zt.grad.numpy()


@pytest.mark.parametrize("T", TEMPS)
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
@pytest.mark.parametrize("alpha,scale_by_T2", [(0.7, True), (0.7, False), (0.0, True), (1.0, True), (0.3, False)])
def test_matches_torch_autograd(T, scale, alpha, scale_by_T2):
    rng = np.random.default_rng(int(T * 10) + int(np.log10(scale)) * 7 + int(alpha * 10))
    n, c = 17, 10
    z = rng.normal(size=(n, c)) * scale
    t = rng.normal(size=(n, c)) * scale
    y = rng.integers(0, c, n)
    if scale > 1:  # rows where teacher and student are confidently opposite, and identical rows
        t[0] = -z[0]
        t[1] = z[1]
    kw = dict(T=T, alpha=alpha, scale_by_T2=scale_by_T2)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grad = kd_loss(z, t, y, **kw)
    loss_t, grad_t = _torch_loss_and_grad(z, t, y, **kw)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert abs(loss - loss_t) <= 1e-10 * max(1.0, abs(loss_t))
    np.testing.assert_allclose(grad, grad_t, rtol=0, atol=1e-10)


def test_pure_distillation_needs_no_labels():
    rng = np.random.default_rng(1)
    z, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    loss, grad = kd_loss(z, t, None, T=2.0, alpha=0.0)
    loss_t, grad_t = _torch_loss_and_grad(z, t, None, T=2.0, alpha=0.0)
    assert abs(loss - loss_t) < 1e-12
    np.testing.assert_allclose(grad, grad_t, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="labels=None"):
        kd_loss(z, t, None, alpha=0.5)


@pytest.mark.parametrize("T", TEMPS)
@pytest.mark.parametrize("scale_by_T2", [True, False])
def test_gradient_matches_finite_differences(T, scale_by_T2):
    rng = np.random.default_rng(3)
    n, c = 6, 5
    z, t = rng.normal(size=(n, c)) * 3, rng.normal(size=(n, c)) * 3
    y = rng.integers(0, c, n)
    _, grad = kd_loss(z, t, y, T=T, alpha=0.7, scale_by_T2=scale_by_T2)
    h = 1e-6
    fd = np.empty_like(z)
    for i in range(n):
        for j in range(c):
            zp, zm = z.copy(), z.copy()
            zp[i, j] += h
            zm[i, j] -= h
            fd[i, j] = (kd_loss(zp, t, y, T=T, alpha=0.7, scale_by_T2=scale_by_T2)[0]
                        - kd_loss(zm, t, y, T=T, alpha=0.7, scale_by_T2=scale_by_T2)[0]) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_known_values():
    n, c = 4, 10
    y = np.array([0, 3, 9, 3])
    # uniform student, teacher equal to student: KL = 0, CE = log C, gradient α·(1/C − onehot)/N
    loss, grad = kd_loss(np.zeros((n, c)), np.zeros((n, c)), y, T=4.0, alpha=0.7)
    assert loss == pytest.approx(0.7 * np.log(c), abs=1e-15)
    want = np.full((n, c), 1.0 / c)
    want[np.arange(n), y] -= 1
    np.testing.assert_allclose(grad, 0.7 * want / n, rtol=0, atol=1e-16)
    # two classes, T = 1, alpha = 0: KL(Bernoulli(pt) ‖ Bernoulli(ps)) written out by hand
    z, t = np.array([[0.0, np.log(3.0)]]), np.array([[0.0, 0.0]])  # ps = (1/4, 3/4), pt = (1/2, 1/2)
    loss, grad = kd_loss(z, t, None, T=1.0, alpha=0.0)
    assert loss == pytest.approx(0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75), abs=1e-15)
    np.testing.assert_allclose(grad, [[0.25 - 0.5, 0.75 - 0.5]], atol=1e-15)


def test_T2_factor_and_large_T_limit():
    """w = T² multiplies the soft term; and T²·(soft gradient) tends to ((z − z̄) − (t − t̄))/(C·N) as T → ∞,
    which is why T² keeps the soft term's scale (docs/distillation.md, §4)."""
    rng = np.random.default_rng(4)
    n, c = 8, 10
    z, t = rng.normal(size=(n, c)), rng.normal(size=(n, c))
    for T in TEMPS:
        l1, g1 = kd_loss(z, t, None, T=T, alpha=0.0, scale_by_T2=True)
        l0, g0 = kd_loss(z, t, None, T=T, alpha=0.0, scale_by_T2=False)
        assert l1 == pytest.approx(T * T * l0, rel=1e-12)
        np.testing.assert_allclose(g1, T * T * g0, rtol=1e-12, atol=0)
    limit = ((z - z.mean(1, keepdims=True)) - (t - t.mean(1, keepdims=True))) / (c * n)
    rel = [np.abs(kd_loss(z, t, None, T=T, alpha=0.0)[1] - limit).max() / np.abs(limit).max()
           for T in (10.0, 100.0, 1000.0)]
    assert rel[2] < 2e-3                                    # measured 7e-4
    assert rel[0] / rel[1] == pytest.approx(10, rel=0.1)    # the error falls like 1/T
    assert rel[1] / rel[2] == pytest.approx(10, rel=0.1)
    # without T² the soft gradient vanishes like 1/T²
    g_no = [np.abs(kd_loss(z, t, None, T=T, alpha=0.0, scale_by_T2=False)[1]).max() for T in (10.0, 100.0)]
    assert g_no[1] == pytest.approx(g_no[0] / 100, rel=0.05)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), T=st.floats(0.5, 20.0), alpha=st.floats(0.0, 1.0),
       scale=st.sampled_from([1e-3, 1.0, 50.0, 1e4]), shift=st.floats(-1e3, 1e3))
def test_invariances(seed, T, alpha, scale, shift):
    rng = np.random.default_rng(seed)
    n, c = 5, 7
    z, t = rng.normal(size=(n, c)) * scale, rng.normal(size=(n, c)) * scale
    y = rng.integers(0, c, n)
    loss, grad = kd_loss(z, t, y, T=T, alpha=alpha)
    assert loss >= 0 and np.isfinite(loss)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-12)   # softmax ignores a row constant
    loss_kl, _ = kd_loss(z, t, None, T=T, alpha=0.0)
    assert loss_kl >= -1e-12                                           # KL ≥ 0
    # adding a constant to every logit of a row changes neither loss nor gradient
    loss2, grad2 = kd_loss(z + shift, t - shift, y, T=T, alpha=alpha)
    assert loss2 == pytest.approx(loss, rel=1e-9, abs=1e-9 * max(1.0, scale))
    np.testing.assert_allclose(grad2, grad, atol=1e-9)


def test_log_softmax_extremes():
    u = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        ls = log_softmax(u / 0.5)
    np.testing.assert_allclose(ls[0], [0.0, -4e4, -2e4])
    np.testing.assert_allclose(ls[1], np.log(1 / 3) * np.ones(3))


def test_float32_input_is_computed_in_float64():
    rng = np.random.default_rng(5)
    z, t = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    y = np.array([0, 1, 2])
    loss, grad = kd_loss(z, t, y)
    loss64, grad64 = kd_loss(z.astype(np.float64), t.astype(np.float64), y)
    assert grad.dtype == np.float64 and loss == loss64
    np.testing.assert_array_equal(grad, grad64)


@pytest.mark.parametrize("args,kw,match", [
    ((np.zeros((2, 3)), np.zeros((2, 4)), [0, 1]), {}, "same shape"),
    ((np.zeros(3), np.zeros(3), [0]), {}, "shape"),
    ((np.array([[0.0, np.nan]]), np.zeros((1, 2)), [0]), {}, "NaN"),
    ((np.zeros((1, 2)), np.array([[np.inf, 0.0]]), [0]), {}, "NaN or infinity"),
    ((np.zeros((2, 3)), np.zeros((2, 3)), [0, 3]), {}, r"\[0, 2\]"),
    ((np.zeros((2, 3)), np.zeros((2, 3)), [0.0, 1.0]), {}, "integers"),
    ((np.zeros((2, 3)), np.zeros((2, 3)), [0]), {}, r"shape \(2,\)"),
    ((np.zeros((2, 3)), np.zeros((2, 3)), [0, 1]), {"T": 0.0}, "temperature"),
    ((np.zeros((2, 3)), np.zeros((2, 3)), [0, 1]), {"T": float("nan")}, "temperature"),
    ((np.zeros((2, 3)), np.zeros((2, 3)), [0, 1]), {"alpha": 1.5}, "alpha"),
    ((np.zeros((0, 3)), np.zeros((0, 3)), []), {}, "empty"),
])
def test_bad_input_raises(args, kw, match):
    with pytest.raises(ValueError, match=match):
        kd_loss(*args, **kw)


def test_torch_module_bad_input_raises():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="shape"):
        KDLoss()(z, torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        KDLoss()(torch.tensor([[0.0, float("nan"), 0.0]] * 2), z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        KDLoss()(z, z, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="labels=None"):
        KDLoss(alpha=0.5)(z, z)
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(T=-1)


def test_teacher_gets_no_gradient():
    z = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    KDLoss()(z, t, torch.tensor([0, 1, 2, 3])).backward()
    assert t.grad is None and z.grad is not None


def test_import_distill_does_not_import_torch():
    code = ("import sys, minquant.distill as d; assert callable(d.kd_loss); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
