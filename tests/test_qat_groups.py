"""int4 weights per group in AdaRound and quantization-aware training: the trained model converts to the
precision ladder's W4A8 g32 model (``w4a8_*`` nodes, packed int4, float16 group scales), and its W4A8 kernels
compute what training saw.

The claims (TinyCNN on real digits, torch's x86 engine on this CPU; ``features.0`` has rows of 9 → one group per
output channel, ``features.2`` (rows of 288) and the classifier (128) groups of 32):

* ``quantize_precision(w4a8(32), weight_rounding=NearestWeights("int4"))`` is the ladder's W4A8 g32 model,
  parameter for parameter (the rounding only records the float layers);
* the fake-quantized weights of a group-wise layer are, bit for bit, the weights the W4A8 kernels dequantize
  from the converted model's packed codes and float16 scales — before and after training (training's scales
  are float32; the forward rounds them to float16 as the converted model stores them);
* given the integer model's own input codes, every layer's output codes agree with the fake-quantized layer's
  except at most one code at float32 half-way ties (the kernel sums integers per group, training sums floats);
* AdaRound per group moves codes at most one step from nearest and lowers every layer's reconstruction error.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import minquant as mq
from minquant.affine import dequantize
from minquant.data.zoo import tiny_cnn_digits
from minquant.kernels.int4_conv import dequantize_int4_rows, rows_to_conv_weight, unpack_int4_rows
from minquant.qat import FakeQuantModel, NearestWeights, adaround, finetune
from minquant.qat.weights import int4_group_scale, weight_rows
from minquant.quantized.precision import INT8, w4a8
from minquant.quantized.precision_convert import quantize_int4_rows

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return tiny_cnn_digits()


@pytest.fixture(scope="module")
def g32(digits):
    model, (x_tr, *_) = digits
    rounding = NearestWeights("int4")
    qm = mq.quantize_precision(model, w4a8(32), x_tr[:256], target="x86", weight_rounding=rounding)
    return rounding, qm


@pytest.fixture(scope="module")
def trained(digits, g32):
    model, (x_tr, y_tr, *_) = digits
    rounding, qm = g32
    fq = FakeQuantModel(qm, rounding)
    with torch.no_grad():
        t = model(torch.from_numpy(x_tr[:256])).numpy()
    finetune(fq, x_tr[:256], t, y_tr[:256], epochs=1, lr=3e-4, scale_lr=1e-3, alpha=0.5, T=2.0, seed=0)
    return fq


def test_nearest_rounding_is_the_ladders_w4a8(digits, g32):
    model, (x_tr, *_) = digits
    rounding, qm = g32
    ref = mq.quantize_precision(model, w4a8(32), x_tr[:256], target="x86")
    assert [n.op for n in qm.graph.nodes] == [n.op for n in ref.graph.nodes]
    for a, b in zip(qm.graph.nodes, ref.graph.nodes):
        assert a.attrs == b.attrs, a.name
        for k in b.params:
            assert np.array_equal(a.params[k], b.params[k]), (a.name, k)
    assert qm.meta["int4_group_sizes"] == {"features.0": 9, "features.2": 32, "classifier": 32}
    assert qm.meta["weight_rounding"] == "nearest int4"
    for name, rec in rounding.layers.items():     # the record: codes in the weight's shape, scales (O, G)
        assert rec["codes"].shape == rec["weight"].shape and rec["group_size"] == qm.meta["int4_group_sizes"][name]


def test_group_scale_search_never_worse_than_max(digits, g32):
    rounding, _ = g32
    rows = weight_rows(rounding.layers["features.2"]["weight"])
    codes, s_max, _, _ = quantize_int4_rows(rows, 32)
    assert np.array_equal(int4_group_scale(rows, 32), s_max)

    def err(s16):
        q = mq.affine.quantize(rows, s16.astype(np.float32), np.zeros(s16.shape, np.int32), "int4", axis=1,
                               group_size=32, target="onnxruntime")
        return ((rows - dequantize(q, s16.astype(np.float32), np.zeros(s16.shape, np.int32), axis=1,
                                   group_size=32)) ** 2).reshape(len(rows), -1, 32).sum(2)
    s_mse = int4_group_scale(rows, 32, mse=True)
    assert s_mse.dtype == np.float16 and np.all(err(s_mse) <= err(s_max))
    assert np.mean(err(s_mse)) < 0.95 * np.mean(err(s_max))


def _kernel_weight(node):
    """The float weights the W4A8 kernels use: the packed codes dequantized with the float16 group scales."""
    a = node.attrs
    k = int(np.prod(a.weight_shape[1:]))
    rows = dequantize_int4_rows(node.params["weight_packed"], node.params["w_scale"], None, k=k,
                                group_size=a.group_size)
    return rows_to_conv_weight(rows, a.weight_shape) if len(a.weight_shape) == 4 else rows


@pytest.mark.parametrize("after_training", [False, True])
def test_fake_quant_weights_are_the_kernels_bit_for_bit(g32, trained, after_training):
    rounding, qm = g32
    fq = trained if after_training else FakeQuantModel(qm, rounding)
    qm2 = fq.to_quantized()
    layers = [n for n in qm2.graph.nodes if n.op.startswith("w4a8")]
    assert len(layers) == 3
    moved = False
    for n in layers:
        with torch.no_grad():
            w_fq = fq._weight(n.name).numpy()
        assert n.params["w_scale"].dtype == np.float16
        np.testing.assert_array_equal(w_fq, _kernel_weight(n))
        moved |= not np.array_equal(n.params["w_scale"], qm.graph.node(n.name).params["w_scale"])
    assert moved == after_training            # training moved some group scale (to another float16 value)
    if after_training:
        assert any(not np.array_equal(unpack_int4_rows(n.params["weight_packed"], int(np.prod(n.attrs.weight_shape[1:])),
                                                       signed=True),
                                      unpack_int4_rows(qm.graph.node(n.name).params["weight_packed"],
                                                       int(np.prod(n.attrs.weight_shape[1:])), signed=True))
                   for n in layers)


@pytest.mark.parametrize("after_training", [False, True])
def test_converted_layers_compute_what_training_saw(digits, g32, trained, after_training):
    _, (_, _, x_te, _) = digits
    rounding, qm = g32
    fq = trained if after_training else FakeQuantModel(qm, rounding)
    qm2 = fq.to_quantized()
    x = x_te[:200]
    _, raw = qm2.run(x, intermediates=True, raw=True)
    compared = 0
    for n in qm2.graph.nodes:
        if n.op not in ("quantize", "w4a8_conv2d", "w4a8_linear", "qadaptive_avg_pool2d"):
            continue
        ins = [torch.from_numpy(dequantize(raw[v], *qm2.qparams[v]) if v in qm2.qparams
                                else np.asarray(raw[v], np.float32)) for v in n.inputs]
        with torch.no_grad():
            y = fq.node_output(n, ins).numpy()
        s, z = qm2.qparams[n.name]
        codes = np.rint(y / np.float32(s)).astype(np.int64) + z
        got = raw[n.name].astype(np.int64)
        assert np.mean((got == 0) | (got == 255)) < 0.9, n.name          # not a saturated comparison
        d = np.abs(codes - got)
        assert d.max() <= 1 and np.mean(d > 0) < 0.01, (n.name, d.max(), np.mean(d > 0))
        compared += n.op.startswith("w4a8")
    assert compared == 3
    with torch.no_grad():
        logits_fq = fq(torch.from_numpy(x)).numpy()
    assert np.mean(logits_fq.argmax(1) == qm2(x).argmax(1)) >= 0.99
    if not after_training:
        assert np.array_equal(qm2(x), qm(x))


def test_int8_layers_beside_groups(digits):
    """The first conv int8 (qconv2d), the rest int4 groups: FakeQuantModel trains both kinds; a rounding that
    would give the INT8 layer int4 codes is refused."""
    model, (x_tr, *_) = digits
    with pytest.raises(ValueError, match="int8_layers"):
        mq.quantize_precision(model, w4a8(32), x_tr[:64], layers={"features.0": INT8}, target="x86",
                              weight_rounding=NearestWeights("int4"))
    rounding = NearestWeights("int4", int8_layers=("features.0",))
    qm = mq.quantize_precision(model, w4a8(32), x_tr[:64], layers={"features.0": INT8}, target="x86",
                               weight_rounding=rounding)
    assert [n.op for n in qm.graph.nodes if n.name in rounding.layers] == ["qconv2d", "w4a8_conv2d", "w4a8_linear"]
    assert rounding.layers["features.0"]["qtype"].qmax == 127
    qm2 = FakeQuantModel(qm, rounding).to_quantized()
    assert np.array_equal(qm2(x_tr[:32]), qm(x_tr[:32]))


def test_adaround_per_group(digits, g32):
    model, (x_tr, _, x_te, y_te) = digits
    rounding, qm = g32
    ada = adaround(qm, rounding, x_tr[:128], iterations=300, rows=2048, seed=0)
    qa = mq.quantize_precision(model, w4a8(32), x_tr[:256], target="x86", weight_rounding=ada)
    for n in qa.graph.nodes:
        if not n.op.startswith("w4a8"):
            continue
        k = int(np.prod(n.attrs.weight_shape[1:]))
        q = unpack_int4_rows(n.params["weight_packed"], k, signed=True).astype(int)
        q0 = unpack_int4_rows(qm.graph.node(n.name).params["weight_packed"], k, signed=True).astype(int)
        assert np.abs(q - q0).max() <= 1 and np.any(q != q0), n.name
        np.testing.assert_array_equal(n.params["w_scale"], qm.graph.node(n.name).params["w_scale"])
    for name, r in ada.report.items():
        assert r["adaround"] < r["nearest"], (name, r)
    # the learned model is a usable W4A8 g32 model and FakeQuantModel starts from it exactly
    assert np.mean(qa(x_te).argmax(1) == y_te) > 0.9
    fq = FakeQuantModel(qa, ada)
    assert np.array_equal(fq.to_quantized()(x_te[:64]), qa(x_te[:64]))


def test_early_stopping_keeps_the_best_checkpoint(digits, g32):
    """``finetune(validation=)``: a learning rate that only does harm ends where the validation loss was lowest
    — here the start, so the converted model is the one training began from."""
    model, (x_tr, y_tr, x_te, _) = digits
    rounding, qm = g32
    fq = FakeQuantModel(qm, rounding)
    with torch.no_grad():
        t = model(torch.from_numpy(x_tr[:320])).numpy()
    hist = finetune(fq, x_tr[:256], t[:256], epochs=1, lr=0.5, batch_size=64, seed=0,
                    validation=(x_tr[256:320], t[256:]), validate_every=2)
    checks = [h for h in hist if "step" in h]
    assert [h["step"] for h in checks] == [0, 2, 4]
    assert checks[-1]["val_loss"] > checks[0]["val_loss"]
    assert hist[-1]["kept_step"] == 0
    assert np.array_equal(fq.to_quantized()(x_te[:64]), qm(x_te[:64]))


def test_augment_crops():
    from minquant.data.datasets import augment_crops, photo_crops
    x = photo_crops(6, split="extra", seed=0)
    assert x.shape == (6, 3, 224, 224) and np.isfinite(x).all()
    a, b = augment_crops(x, seed=1), augment_crops(x, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, x)
    same = augment_crops(x, seed=1, mix=0.0, jitter=0.0)          # nothing to do: the crops back (to rounding)
    np.testing.assert_allclose(same, x, atol=1e-5)
    with pytest.raises(ValueError):
        augment_crops(x[:, :1])


def test_blocks_cut_at_single_tensor_boundaries(g32):
    from minquant.qat.block_reconstruction import blocks
    _, qm = g32
    names = [n.name for n in qm.graph.nodes]
    assert blocks(qm.graph, 1) == [("x", names[:2]), ("features.0", names[2:3]), ("features.2", names[3:])]
    assert blocks(qm.graph, 2) == [("x", names)]


def test_block_reconstruction_lowers_the_block_output_error(digits, g32):
    """TinyCNN W4A8 g32 in one block (its 3 layers): the learned rounding's error on the block's output — the
    logits, fake-quantized activations included — is below nearest rounding's, on the calibration samples
    (the report) and, recomputed here, on held-out test digits; the codes stay one step from nearest."""
    from minquant.qat.block_reconstruction import block_adaround
    model, (x_tr, _, x_te, y_te) = digits
    rounding, qm = g32
    br = block_adaround(qm, rounding, x_tr[:128], iterations=300, batch=32, seed=0)
    assert set(br.report) == {"features.0", "features.2", "classifier"}
    r = br.report["classifier"]
    assert r["adaround"] < 0.8 * r["nearest"], r
    qb = mq.quantize_precision(model, w4a8(32), x_tr[:256], target="x86", weight_rounding=br)
    for name, rec in br.learned.items():
        assert np.abs(rec["codes"].astype(int) - rounding.layers[name]["codes"]).max() <= 1
    with torch.no_grad():
        f = model(torch.from_numpy(x_te)).numpy()
    err = {k: float(np.mean((m(x_te) - f) ** 2)) for k, m in (("nearest", qm), ("block", qb))}
    assert err["block"] < err["nearest"], err
    assert np.mean(qb(x_te).argmax(1) == y_te) > 0.9
