"""The exact forward of quantization-aware training (``FakeQuantModel(exact=True)``, minquant.qat.model): every
value training sees is the converted integer model's, bit for bit — on TinyCNN (int8, W4A8 per channel, W4A8
per group of 32) after training, and on MobileNetV2 (ImageNet weights, photo crops, int8 per channel: the model
whose plain float32 fake-quant forward drifts from the integer model by a code at float32 ties, compounding over
53 layers). Also: ``fake_quantize(codes=)`` keeps the STE / LSQ backward, and AdaRound at int8 keeps every code
in its layer's range. Target x86 on this CPU (the integer model is whatever its kernels compute here: the test
compares the two paths on the same machine).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import minquant as mq
from minquant.affine import dequantize
from minquant.data.zoo import tiny_cnn_digits
from minquant.qat import FakeQuantModel, NearestWeights, adaround, fake_quantize, finetune
from minquant.qat.weights import weight_qtype
from minquant.quantized.precision import w4a8

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return tiny_cnn_digits()


def _node_values_equal(fq, qm, x):
    """Every node of the exact forward on x against the integer model's raw output (dequantized): (nodes
    compared, nodes differing)."""
    _, raw = qm.run(x, intermediates=True, raw=True)
    seen, bad = [], []

    def hook(name, v):
        r = raw[name]
        want = dequantize(r, *qm.qparams[name]) if r.dtype == np.uint8 else r
        seen.append(name)
        if not np.array_equal(v.detach().numpy(), want):
            bad.append(name)

    with torch.no_grad():
        fq(torch.from_numpy(x), hook=hook)
    return seen, bad


def _model(digits, kind):
    model, (x_tr, *_) = digits
    if kind == "w4a8 g32":
        rounding = NearestWeights("int4")
        qm = mq.quantize_precision(model, w4a8(32), [x_tr[:256]], target="x86", weight_rounding=rounding)
    else:
        rounding = NearestWeights(kind)
        qm = mq.quantize_static(model, [x_tr[:256]], target="x86", weight_rounding=rounding, progress=False)
    return rounding, qm


@pytest.mark.parametrize("kind", ["int8", "int4", "w4a8 g32"])
def test_trained_model_converts_to_exactly_what_training_saw(digits, kind):
    model, (x_tr, y_tr, x_te, _) = digits
    rounding, qm = _model(digits, kind)
    fq = FakeQuantModel(qm, rounding)
    assert fq.exact
    with torch.no_grad():
        t = model(torch.from_numpy(x_tr[:256])).numpy()
    finetune(fq, x_tr[:256], t, y_tr[:256], epochs=1, lr=3e-4, alpha=0.5, T=2.0, seed=0)
    qm2 = fq.to_quantized()
    assert not np.array_equal(qm2(x_te), qm(x_te))                        # training changed the model
    with torch.no_grad():
        logits = fq(torch.from_numpy(x_te)).numpy()
    np.testing.assert_array_equal(logits, qm2(x_te))                      # the converted model, bit for bit
    seen, bad = _node_values_equal(fq, qm2, x_te)
    assert len(seen) == len(qm2.graph.nodes) and bad == []


def test_exact_forward_trains_with_the_fake_quant_gradient(digits):
    """Same loss gradient as the plain forward wherever the two forwards agree (here: everywhere on these
    digits, before training)."""
    _, (x_tr, *_) = digits
    rounding, qm = _model(digits, "int4")
    x = torch.from_numpy(x_tr[:64])
    grads = []
    for exact in (True, False):
        fq = FakeQuantModel(qm, rounding, exact=exact)
        y = fq(x)
        (y ** 2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in fq.named_parameters()})
    same_forward = np.array_equal(FakeQuantModel(qm, rounding)(x).detach().numpy(),
                                  FakeQuantModel(qm, rounding, exact=False)(x).detach().numpy())
    assert all(g.abs().sum() > 0 for n, g in grads[0].items() if n.startswith("weights"))
    if same_forward:
        # the two backward formulas sum the same terms in different orders: a scale's gradient (thousands of
        # terms that partly cancel) moves by ~5e-4 of its size under torch's AVX2 kernels (ATEN_CPU_CAPABILITY=
        # avx2, as on a Zen 3); a wrong STE / LSQ formula moves it by its own size
        for n in grads[0]:
            ref = grads[1][n]
            torch.testing.assert_close(grads[0][n], ref, rtol=1e-5, atol=2e-3 * float(ref.abs().max()) + 1e-12)


def test_fake_quantize_codes_override():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 3, 5, 5, generator=g) * 2).requires_grad_(True)
    s = torch.tensor([0.05], requires_grad=True)
    y = fake_quantize(x, s, torch.tensor([128.0]), 0, 255)
    codes = torch.round(y.detach() / 0.05) + 128
    codes[0, 0, 0, 0] += 1                                           # one code the kernel rounded the other way
    y2 = fake_quantize(x, s, torch.tensor([128.0]), 0, 255, codes=codes)
    np.testing.assert_array_equal(y2.detach().numpy(), ((codes - 128) * s.detach()).numpy())
    gx, gs = torch.autograd.grad(y.sum(), (x, s))
    gx2, gs2 = torch.autograd.grad(y2.sum(), (x, s))
    assert torch.equal(gx, gx2) and torch.equal(gs, gs2)              # the backward is evaluated at x
    with pytest.raises(ValueError, match="shape"):
        fake_quantize(x, s, torch.tensor([128.0]), 0, 255, codes=codes[:1])
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        fake_quantize(x, s, torch.tensor([128.0]), 0, 255, codes=codes + 300)


def test_adaround_int8_keeps_codes_in_range(digits):
    _, (x_tr, *_) = digits
    rounding, qm = _model(digits, "int8")
    ada = adaround(qm, rounding, x_tr[:128], iterations=100, rows=1024, seed=0)
    qa = mq.quantize_static(digits[0], [x_tr[:256]], target="x86", weight_rounding=ada, progress=False)
    changed = 0
    for n in qa.graph.nodes:
        if n.op in ("qconv2d", "qlinear"):
            w, qt = n.params["weight"].astype(np.int64), ada.layers[n.name]["qtype"]
            assert qt in (weight_qtype("int8", False), weight_qtype("int8", True))
            assert w.min() >= qt.qmin and w.max() <= qt.qmax, n.name
            assert np.abs(w).max() >= 64                                   # the 8-bit range is used
            near = rounding.layers[n.name]["codes"].astype(np.int64)
            assert np.abs(w - near).max() <= 1                             # one step from nearest at most
            changed += int((w != near).sum())
    assert changed > 0


def test_mobilenet_v2_exact_forward_is_the_integer_model():
    """A real model: MobileNetV2 int8 per channel (the defaults), one QAT step, then the exact forward against
    the converted model on photo crops — every node's value and the logits bit for bit, where the plain
    float32 forward differs by a code somewhere (the reason for the exact forward)."""
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet

    model = mobilenet_v2_imagenet()
    calib = photo_crops(8, split="calib", seed=0)
    rounding = NearestWeights("int8")
    qm = mq.quantize_static(model, calib, target="x86", weight_rounding=rounding, progress=False)
    fq = FakeQuantModel(qm, rounding)
    x = photo_crops(4, split="calib", seed=3)
    with torch.no_grad():
        t = model(torch.from_numpy(x)).numpy()
    finetune(fq, x, t, epochs=1, lr=1e-4, batch_size=4, seed=0)
    qm2 = fq.to_quantized()
    ev = photo_crops(2, split="eval", seed=0)
    with torch.no_grad():
        logits = fq(torch.from_numpy(ev)).numpy()
    np.testing.assert_array_equal(logits, qm2(ev))
    seen, bad = _node_values_equal(fq, qm2, ev)
    assert len(seen) == len(qm2.graph.nodes) and bad == []
    fq.exact = False
    seen, bad = _node_values_equal(fq, qm2, ev)
    assert bad, "the plain float32 forward matched the integer model everywhere: nothing to make exact"


def test_weight_scale_lr_zero_keeps_the_weight_scales(digits):
    model, (x_tr, y_tr, *_) = digits
    rounding, qm = _model(digits, "int8")
    fq = FakeQuantModel(qm, rounding)
    before = {k: p.detach().clone() for k, p in fq.w_scales.items()}
    act = {k: p.detach().clone() for k, p in fq.scales.items()}
    with torch.no_grad():
        t = model(torch.from_numpy(x_tr[:128])).numpy()
    finetune(fq, x_tr[:128], t, y_tr[:128], epochs=1, lr=1e-4, alpha=0.5, seed=0, weight_scale_lr=0.0)
    assert all(torch.equal(before[k], p) for k, p in fq.w_scales.items())
    assert any(not torch.equal(act[k], p) for k, p in fq.scales.items())
    with pytest.raises(ValueError, match="weight_scale_lr"):
        finetune(fq, x_tr[:16], t[:16], epochs=1, weight_scale_lr=-1.0)


def test_feature_loss_pulls_every_layer_towards_the_float_model(digits):
    """``finetune(feature_weight=)``: the layer-wise term is the mean relative squared error of the conv /
    linear outputs (all but the last) against the float model, recomputed here by hand; training with it
    lowers that error on held-out digits more than training on the logits alone (same steps, same seed)."""
    from minquant.qat.train import _with_features

    model, (x_tr, y_tr, x_te, _) = digits
    with torch.no_grad():
        t = model(torch.from_numpy(x_tr[:512])).numpy()
    held = torch.from_numpy(x_te[:128])
    errs = {}
    for beta in (0.0, 3.0):
        rounding, qm = _model(digits, "int4")
        fq = FakeQuantModel(qm, rounding)
        if beta == 0.0:      # the term, by hand: layers in graph order, the last (the classifier) left out
            names = [n.name for n in qm.graph.nodes if n.op in ("qconv2d", "qlinear")][:-1]
            ref, out = {}, {}
            with torch.no_grad():
                fq(held, quantized=False, hook=lambda k, y: ref.__setitem__(k, y))
                fq(held, hook=lambda k, y: out.__setitem__(k, y))
                _, term = _with_features(fq, held)
            hand = np.mean([float(((out[k] - ref[k]) ** 2).sum() / (ref[k] ** 2).sum()) for k in names])
            assert len(names) >= 2 and abs(float(term) - hand) <= 1e-5 * hand
        finetune(fq, x_tr[:512], t, epochs=2, lr=3e-4, batch_size=64, seed=0, feature_weight=beta)
        with torch.no_grad():
            errs[beta] = float(_with_features(fq, held)[1])
    assert errs[3.0] < 0.9 * errs[0.0], errs
    with pytest.raises(ValueError, match="feature_weight"):
        finetune(fq, x_tr[:16], t[:16], epochs=1, feature_weight=-1.0)
