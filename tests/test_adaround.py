"""AdaRound (minquant.qat.adaptive_rounding) on TinyCNN W4A8 with real digits: the learned codes are at most one step
from nearest, reduce every layer's reconstruction error, and quantize_static takes them as they are."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import minquant as mq
from minquant.affine import dequantize
from minquant.data.zoo import tiny_cnn_digits
from minquant.qat import AdaRoundWeights, NearestWeights, adaround
from minquant.qat.adaptive_rounding import rectified_sigmoid, rounding_regularizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def learned():
    model, (x_tr, y_tr, x_te, y_te) = tiny_cnn_digits()
    nearest = NearestWeights("int4")
    qm0 = mq.quantize_static(model, [x_tr[:256]], target="x86", weight_rounding=nearest, progress=False)
    ada = adaround(qm0, nearest, x_tr[:128], iterations=300, rows=2048, seed=0)
    qm = mq.quantize_static(model, [x_tr[:256]], target="x86", weight_rounding=ada, progress=False)
    return model, (x_tr, x_te, y_te), nearest, qm0, ada, qm


def test_rectified_sigmoid_and_regularizer():
    v = torch.tensor([-100.0, 0.0, 100.0])
    np.testing.assert_allclose(rectified_sigmoid(v).numpy(), [0.0, 0.5, 1.0])
    assert float(rounding_regularizer(torch.tensor([0.0, 1.0]), 2.0)) == 0.0
    assert float(rounding_regularizer(torch.tensor([0.5]), 20.0)) == 1.0


def test_codes_at_most_one_step_from_nearest(learned):
    _, _, nearest, qm0, ada, qm = learned
    changed = 0
    for n0, n in zip(qm0.graph.nodes, qm.graph.nodes):
        if n.op not in ("qconv2d", "qlinear"):
            continue
        q0, q = n0.params["weight"].astype(int), n.params["weight"].astype(int)
        assert np.array_equal(q, ada.learned[n.name]["codes"])             # quantize_static took them as is
        assert np.abs(q - q0).max() <= 1
        assert q.min() >= -8 and q.max() <= 7
        np.testing.assert_array_equal(n.params["w_scale"], n0.params["w_scale"])   # AdaRound keeps the scale
        changed += int(np.sum(q != q0))
    assert changed > 0
    assert qm.meta["weight_rounding"] == "adaround int4"


def test_reconstruction_error_drops_on_every_layer(learned):
    """Recomputed here, independently of the optimisation: each layer's output on the calibration data's real
    float input, W·x + b with float weights vs with the dequantized codes — AdaRound's codes are closer."""
    model, (x_tr, *_), nearest, qm0, ada, _ = learned
    for name, r in ada.report.items():
        assert r["adaround"] < 0.7 * r["nearest"], (name, r)
    x = torch.from_numpy(x_tr[128:256])
    feats = {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: feats.__setitem__(k, i[0]))
             for k, m in model.named_modules() if k in ("features.0", "features.2", "classifier")]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    checked = 0
    for name in ("features.0", "features.2", "classifier"):
        rec = nearest.layers[name]
        s = rec["scale"]
        conv = dict(model.named_modules())[name]

        def out(w):
            w = torch.from_numpy(np.asarray(w, np.float32))
            with torch.no_grad():
                if name == "classifier":
                    return torch.nn.functional.linear(feats[name], w, conv.bias)
                return torch.nn.functional.conv2d(feats[name], w, conv.bias, padding=1)

        ref = out(rec["weight"])
        if not torch.allclose(ref, out(conv.weight.detach().numpy()), atol=1e-4):
            continue     # cross-layer equalization rescaled this layer's weights: checked by the report above
        e_near = float((out(dequantize(rec["codes"], s, np.zeros(len(s), np.int32), axis=0)) - ref).pow(2).mean())
        e_ada = float((out(dequantize(ada.learned[name]["codes"], s, np.zeros(len(s), np.int32), axis=0)) - ref)
                      .pow(2).mean())
        assert e_ada < e_near, (name, e_ada, e_near)
        checked += 1
    assert checked >= 1       # the classifier (no equalization) at least


def test_accuracy_not_worse_than_nearest(learned):
    _, (_, x_te, y_te), _, qm0, _, qm = learned
    acc0 = np.mean(qm0(x_te).argmax(1) == y_te)
    acc = np.mean(qm(x_te).argmax(1) == y_te)
    assert acc >= acc0 - 0.01


def test_other_weights_are_refused(learned):
    model, (x_tr, *_), nearest, qm0, ada, _ = learned
    with pytest.raises(ValueError, match="not the ones AdaRound learned"):
        mq.quantize_static(model, [x_tr[256:320]], target="x86", weight_rounding=ada, progress=False)
    with pytest.raises(TypeError, match="NearestWeights"):
        adaround(qm0, NearestWeights("int4"), x_tr[:8])
    with pytest.raises(ValueError, match="calibration_data"):
        adaround(qm0, nearest, np.full((4, 1, 28, 28), np.nan, np.float32))
    assert isinstance(ada, AdaRoundWeights)


def test_underdetermined_layers_keep_nearest(learned):
    """min_rows_per_input=1: the classifier (32 samples for 1,024 inputs) keeps nearest rounding; the convs
    (thousands of output positions for 9 / 288 inputs) are learned."""
    _, (x_tr, *_), nearest, qm0, _, _ = learned
    ada = adaround(qm0, nearest, x_tr[:32], iterations=20, rows=1024, min_rows_per_input=1.0)
    assert "skipped" in ada.report["classifier"]
    assert np.array_equal(ada.learned["classifier"]["codes"], nearest.layers["classifier"]["codes"])
    assert "skipped" not in ada.report["features.0"] and "skipped" not in ada.report["features.2"]
