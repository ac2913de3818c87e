"""minquant.qat.fake_quant: the torch fake quantization equals torch's and minquant's NumPy one bit for bit;
its STE / LSQ gradients equal the hand-derived formulas.

The data plants exact half-way points (x = (k + ½)·s), where the rounding rule shows, and keeps most values
inside the code range (the clipped fraction is asserted small), so the comparisons are not about the clamp.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from minquant.affine import fake_quantize as np_fake_quantize
from minquant.qat.fake_quant import fake_quantize, lsq_grad_factor

torch.set_num_threads(1)


def _data(shape, scale, zp, qmin, qmax, seed=0):
    """Values mostly inside [s·(qmin − z), s·(qmax − z)], a quarter of them exact half-way points."""
    rng = np.random.default_rng(seed)
    lo, hi = scale * (qmin - zp), scale * (qmax - zp)
    x = rng.uniform(lo * 1.05, hi * 1.05, size=shape).astype(np.float32)
    k = rng.integers(qmin - zp, qmax - zp, size=shape)
    ties = rng.random(shape) < 0.25
    x[ties] = ((k[ties] + 0.5) * np.float32(scale)).astype(np.float32)
    return x


def _clipped_fraction(x, scale, zp, qmin, qmax):
    v = np.rint(x / scale) + zp
    return float(np.mean((v < qmin) | (v > qmax)))


@pytest.mark.parametrize("scale, zp, qmin, qmax", [(0.0371, 121, 0, 255), (0.013, 0, -128, 127), (0.2, 3, 0, 15)])
def test_per_tensor_equals_torch_and_numpy(scale, zp, qmin, qmax):
    x = _data((4, 8, 10, 10), scale, zp, qmin, qmax)
    assert _clipped_fraction(x, scale, zp, qmin, qmax) < 0.1
    xt = torch.from_numpy(x)
    ours = fake_quantize(xt, torch.tensor([scale], dtype=torch.float32), [zp], qmin, qmax)
    ref = torch.fake_quantize_per_tensor_affine(xt, scale, zp, qmin, qmax)
    assert torch.equal(ours, ref)
    dtype = {(0, 255): "uint8", (-128, 127): "int8", (0, 15): "uint4"}[(qmin, qmax)]
    assert np.array_equal(ours.numpy(), np_fake_quantize(x, np.float32(scale), zp, dtype, target="torch"))
    assert len(np.unique(ours.numpy())) > (qmax - qmin) // 2       # the data spans the code range


def test_fake_quantize_module_equals():
    """torch.ao.quantization.FakeQuantize with its qparams fixed (observer off) computes the same values."""
    import torch.ao.quantization as tq
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        fq = tq.FakeQuantize(observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                             dtype=torch.quint8)
        fq.disable_observer()
        fq.scale.copy_(torch.tensor([0.0293]))
        fq.zero_point.copy_(torch.tensor([97], dtype=torch.int32))
        x = torch.from_numpy(_data((3, 5, 7, 7), 0.0293, 97, 0, 255, seed=1))
        ref = fq(x)
    ours = fake_quantize(x, fq.scale.clone(), fq.zero_point.clone(), 0, 255)
    assert torch.equal(ours, ref)


def test_per_channel_equals_torch_and_numpy():
    rng = np.random.default_rng(2)
    scales = (rng.uniform(0.005, 0.05, 16)).astype(np.float32)
    w = np.concatenate([_data((1, 8, 3, 3), float(s), 0, -8, 7, seed=i) for i, s in enumerate(scales)])
    wt, st = torch.from_numpy(w), torch.from_numpy(scales)
    zp = torch.zeros(16, dtype=torch.int32)
    ours = fake_quantize(wt, st, zp, -8, 7, axis=0)
    assert torch.equal(ours, torch.fake_quantize_per_channel_affine(wt, st, zp, 0, -8, 7))
    assert np.array_equal(ours.numpy(), np_fake_quantize(w, scales, np.zeros(16, np.int32), "int4", axis=0))
    import torch.ao.quantization as tq
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        mod = tq.FakeQuantize(observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-8, quant_max=7,
                              dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
        mod.disable_observer()
        mod.scale = st.clone()
        mod.zero_point = zp.clone()
        assert torch.equal(mod(wt), ours)


def test_learnable_forward_equals_torch():
    x = torch.from_numpy(_data((2, 6, 9, 9), 0.051, 30, 0, 255, seed=3))
    s = torch.tensor([0.051], dtype=torch.float32)
    ref = torch._fake_quantize_learnable_per_tensor_affine(x, s, torch.tensor([30.0]), 0, 255, 1.0)
    assert torch.equal(fake_quantize(x, s.clone().requires_grad_(True), [30], 0, 255), ref)
    sc = torch.from_numpy(np.linspace(0.01, 0.05, 6, dtype=np.float32))
    refc = torch._fake_quantize_learnable_per_channel_affine(x, sc, torch.full((6,), 30.0), 1, 0, 255, 1.0)
    assert torch.equal(fake_quantize(x, sc.clone().requires_grad_(True), torch.full((6,), 30), 0, 255, axis=1), refc)


def test_onnxruntime_rule_divides():
    """rule='onnxruntime' is x/s, as minquant's NumPy quantize with target='onnxruntime' — and somewhere it
    differs from x·(1/s) (else the test could not tell the rules apart)."""
    s = np.float32(0.1)
    mid = ((np.arange(-127, 127) + 0.5) * s).astype(np.float32)      # half-way points and their neighbours
    x = np.concatenate([mid + d * np.spacing(mid) for d in range(-3, 4)]).astype(np.float32)
    xt = torch.from_numpy(x)
    div = fake_quantize(xt, torch.tensor([s]), [128], 0, 255, rule="onnxruntime")
    mul = fake_quantize(xt, torch.tensor([s]), [128], 0, 255, rule="torch")
    assert np.array_equal(div.numpy(), np_fake_quantize(x, s, 128, "uint8", target="onnxruntime"))
    assert np.array_equal(mul.numpy(), np_fake_quantize(x, s, 128, "uint8", target="torch"))
    assert (div != mul).sum() > 0


def test_ste_and_lsq_gradients_by_hand():
    """s = 0.5, z = 2, codes [0, 7]: x/s = v; inside: ∂/∂x = 1, ∂/∂s = rne(v) − v; below (rne(v) + z < 0):
    ∂/∂s = qmin − z = −2; above: qmax − z = 5; the scale's gradient times g = 1/sqrt(N·qmax)."""
    x = torch.tensor([0.3, 0.74, -0.6, -2.0, 3.1, 10.0], requires_grad=True)
    s = torch.tensor([0.5], requires_grad=True)
    dy = torch.tensor([1.0, 2.0, -1.0, 0.5, 3.0, -2.0])
    (fake_quantize(x, s, [2], 0, 7) * dy).sum().backward()
    v = np.array([0.6, 1.48, -1.2, -4.0, 6.2, 20.0])
    r = np.rint(v)                              # 1, 1, −1, −4, 6, 20 ; codes r + 2: 3, 3, 1, −2, 8, 22
    inside = np.array([1, 1, 1, 0, 0, 0], bool)
    local = np.where(inside, r - v, 0.0)
    local[3], local[4], local[5] = 0 - 2, 7 - 2, 7 - 2
    g = 1 / math.sqrt(6 * 7)
    assert g == lsq_grad_factor(6, 7)
    np.testing.assert_array_equal(x.grad.numpy(), (dy.numpy() * inside).astype(np.float32))
    np.testing.assert_allclose(s.grad.numpy(), [g * float(np.dot(dy.numpy(), local))], rtol=1e-6)
    # the same against torch's learnable fake quantize (its own kernel; sums in another order)
    x2, s2 = x.detach().clone().requires_grad_(True), torch.tensor([0.5], requires_grad=True)
    (torch._fake_quantize_learnable_per_tensor_affine(x2, s2, torch.tensor([2.0]), 0, 7, g) * dy).sum().backward()
    np.testing.assert_array_equal(x2.grad.numpy(), x.grad.numpy())
    np.testing.assert_allclose(s2.grad.numpy(), s.grad.numpy(), rtol=1e-6)


def test_per_channel_scale_gradient_sums_per_channel():
    x = torch.tensor([[0.26, 0.9], [0.1, -0.33]], requires_grad=True)
    s = torch.tensor([0.25, 0.1], requires_grad=True)
    fake_quantize(x, s, [0, 0], -8, 7, axis=0, grad_factor=1.0).sum().backward()
    v = np.array([[0.26 / 0.25, 0.9 / 0.25], [0.1 / 0.1, -0.33 / 0.1]])
    expect = (np.rint(v) - v).sum(axis=1)
    np.testing.assert_allclose(s.grad.numpy(), expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (dict(rule="tflite"), "unknown quantize rule"),
    (dict(scale=torch.tensor([0.0])), "scale must be finite and > 0"),
    (dict(scale=torch.tensor([0.1, 0.2])), "per tensor needs 1"),
    (dict(zero_point=[1.5]), "whole numbers"),
    (dict(qmin=5, qmax=5), "qmin < qmax"),
])
def test_bad_input_is_named(bad, match):
    args = dict(x=torch.zeros(3), scale=torch.tensor([0.1]), zero_point=[0], qmin=0, qmax=255)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        fake_quantize(args.pop("x"), args.pop("scale"), args.pop("zero_point"), args.pop("qmin"), args.pop("qmax"),
                      **args)
    with pytest.raises(TypeError, match="float32 torch tensor"):
        fake_quantize(torch.zeros(3, dtype=torch.float64), torch.tensor([0.1]), [0], 0, 255)
