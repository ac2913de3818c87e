"""Quantization-aware training converts to the integer model training saw (minquant.qat.model), and torch's
own eager QAT (prepare_qat → convert) imports bit-exactly with from_torch_quantized.

The claim, layer by layer (``FakeQuantModel`` docstring): given the integer model's own input codes, the
fake-quantized layer and the integer kernel give the same output codes, except at most one code where the
real value lies within float32 rounding of a half-way point. Input and weight codes are identical.
TinyCNN on real digits, W4A8 (int4 weights per channel, uint8 activations), torch's x86 engine on this CPU.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import minquant as mq
from minquant.affine import dequantize
from minquant.data.zoo import TinyCNN, tiny_cnn_digits
from minquant.qat import FakeQuantModel, NearestWeights, finetune

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return tiny_cnn_digits()


@pytest.fixture(scope="module")
def w4a8(digits):
    model, (x_tr, y_tr, x_te, _) = digits
    rounding = NearestWeights("int4")
    qm = mq.quantize_static(model, [x_tr[:256]], target="x86", weight_rounding=rounding, progress=False)
    return model, rounding, qm


def _layer_codes_vs_integer(fq, qm, x):
    """Per node with its own qparams: (max |Δcode|, fraction differing, codes compared) between the integer
    model's output codes and the fake-quantized node fed the integer model's input codes."""
    _, raw = qm.run(x, intermediates=True, raw=True)
    out = {}
    for n in qm.graph.nodes:
        if n.op not in ("quantize", "qconv2d", "qlinear", "qadd", "qadaptive_avg_pool2d"):
            continue
        ins = []
        for v in n.inputs:
            if v in qm.qparams:
                s, z = qm.qparams[v]
                ins.append(torch.from_numpy(dequantize(raw[v], s, z)))
            else:
                ins.append(torch.from_numpy(np.asarray(raw[v], np.float32)))
        with torch.no_grad():
            y = fq.node_output(n, ins).numpy()
        s, z = qm.qparams[n.name]
        codes = np.rint(y / np.float32(s)).astype(np.int64) + z      # y lies on the grid: (q − z)·s
        d = np.abs(codes - raw[n.name].astype(np.int64))
        out[n.name] = (int(d.max()), float(np.mean(d > 0)), raw[n.name])
    return out


def test_nearest_int8_rounding_is_the_default(digits):
    model, (x_tr, *_ ) = digits
    a = mq.quantize_static(model, [x_tr[:64]], target="x86", weight_rounding=NearestWeights("int8"), progress=False)
    b = mq.quantize_static(model, [x_tr[:64]], target="x86", progress=False)
    for na, nb in zip(a.graph.nodes, b.graph.nodes):
        for k in nb.params:
            assert np.array_equal(na.params[k], nb.params[k]), (na.name, k)
    assert a.meta["weight_rounding"] == "nearest int8"


def test_int4_codes_and_scale(w4a8):
    _, rounding, qm = w4a8
    for n in qm.graph.nodes:
        if n.op in ("qconv2d", "qlinear"):
            w = n.params["weight"]
            assert w.min() >= -8 and w.max() <= 7 and len(np.unique(w)) >= 12     # int4, and the range is used
            rec = rounding.layers[n.name]
            m = np.abs(rec["weight"]).reshape(len(w), -1).max(1)
            np.testing.assert_allclose(n.params["w_scale"], m / 7.5, rtol=1e-6)


def test_int4_codes_are_saved_two_per_byte(digits, w4a8, tmp_path):
    """W4A8 per channel runs on the int8 kernels, but its file and ``size_bytes()`` hold the codes two per
    byte (the int4 encoding of minquant.sparse); the loaded model computes the same codes."""
    model, (x_tr, _, x_te, _) = digits
    _, _, qm = w4a8
    q8 = mq.quantize_static(model, [x_tr[:256]], target="x86", progress=False)      # int8 codes: stored dense
    weights = [n.params["weight"] for n in qm.graph.nodes if n.op in ("qconv2d", "qlinear")]
    saved = sum(w.size for w in weights) - sum((w.size + 1) // 2 for w in weights)
    assert q8.size_bytes() - qm.size_bytes() == saved
    qm.save(tmp_path / "w4a8.mq")
    q8.save(tmp_path / "int8.mq")
    assert (tmp_path / "int8.mq").stat().st_size - (tmp_path / "w4a8.mq").stat().st_size > 0.8 * saved
    back = mq.load(tmp_path / "w4a8.mq")
    for a, b in zip(qm.graph.nodes, back.graph.nodes):
        for k in a.params:
            assert a.params[k].dtype == b.params[k].dtype and np.array_equal(a.params[k], b.params[k])
    assert np.array_equal(back.run(x_te[:64]), qm.run(x_te[:64]))


@pytest.mark.parametrize("trained", [False, True])
def test_converted_model_computes_what_training_saw(digits, w4a8, trained):
    model, (x_tr, y_tr, x_te, y_te) = digits
    _, rounding, qm = w4a8
    fq = FakeQuantModel(qm, rounding)
    if trained:
        with torch.no_grad():
            t = model(torch.from_numpy(x_tr[:256])).numpy()
        finetune(fq, x_tr[:256], t, y_tr[:256], epochs=1, lr=3e-4, alpha=0.5, T=2.0, seed=0)
        assert any(not torch.equal(fq.scales[k], torch.tensor([qm.qparams[v][0]], dtype=torch.float32))
                   for v, k in fq.key.items() if v in qm.qparams)            # training moved the scales
    qm2 = fq.to_quantized()
    # weights: the codes the training forward used, exactly
    for n in qm2.graph.nodes:
        if n.op in ("qconv2d", "qlinear"):
            with torch.no_grad():
                w_fq = fq._weight(n.name).numpy()
            np.testing.assert_array_equal(n.params["weight"].astype(np.float32) *
                                          n.params["w_scale"].reshape((-1,) + (1,) * (w_fq.ndim - 1)), w_fq)
    x = x_te[:200]
    per_layer = _layer_codes_vs_integer(fq, qm2, x)
    for name, (dmax, frac, codes) in per_layer.items():
        assert np.mean((codes == 0) | (codes == 255)) < 0.9, name            # not a saturated comparison
        assert dmax <= 1, (name, dmax)
        assert frac < 0.01, (name, frac)
    assert per_layer["x:quantize"][0] == 0                                   # the input: same rule, exact
    with torch.no_grad():
        logits_fq = fq(torch.from_numpy(x)).numpy()
    logits_int = qm2(x)
    assert np.mean(logits_fq.argmax(1) == logits_int.argmax(1)) >= 0.99
    if not trained:
        assert np.array_equal(qm2(x), qm(x))                                 # nothing learned: the same model


def test_scale_lr_moves_only_the_scales_at_its_own_rate(digits, w4a8):
    """``finetune(scale_lr=)``: the weight and activation scales get their own learning rate, the weights keep
    ``lr`` — with a tiny ``scale_lr`` the scales barely move while the weights move as they do without it."""
    model, (x_tr, y_tr, _, _) = digits
    _, rounding, qm = w4a8
    with torch.no_grad():
        t = model(torch.from_numpy(x_tr[:64])).numpy()

    def moved(scale_lr):
        fq = FakeQuantModel(qm, rounding)
        s0 = {k: p.detach().clone() for k, p in (*fq.scales.items(), *(("w" + k, p) for k, p in fq.w_scales.items()))}
        w0 = {k: p.detach().clone() for k, p in fq.weights.items()}
        finetune(fq, x_tr[:64], t, epochs=1, lr=1e-3, batch_size=16, scale_lr=scale_lr, seed=0)
        sc = dict(fq.scales.items()) | {"w" + k: p for k, p in fq.w_scales.items()}
        ds = max(float(((sc[k].detach() - v).abs() / v.abs()).max()) for k, v in s0.items())
        dw = max(float((fq.weights[k].detach() - v).abs().max()) for k, v in w0.items())
        return ds, dw

    ds_same, dw_same = moved(None)
    ds_tiny, dw_tiny = moved(1e-9)
    assert ds_same > 1e-3 and ds_tiny < 1e-5                  # relative scale change: lr vs 1e-9
    assert dw_tiny > 0.5 * dw_same                            # the weights still learn at lr
    fq = FakeQuantModel(qm, rounding)
    with pytest.raises(ValueError, match="scale_lr"):
        finetune(fq, x_tr[:64], t, scale_lr=0.0)


def test_bad_inputs_are_named(w4a8):
    _, rounding, qm = w4a8
    with pytest.raises(TypeError, match="QuantizedModel"):
        FakeQuantModel("model.npz", rounding)
    with pytest.raises(ValueError, match="no record of layer"):
        FakeQuantModel(qm, NearestWeights("int4"))
    with pytest.raises(TypeError, match="quantize_weight"):
        mq.quantize_static(TinyCNN().eval(), [np.zeros((4, 1, 28, 28), np.float32)], weight_rounding="adaround")
    fq = FakeQuantModel(qm, rounding)
    with pytest.raises(ValueError, match="teacher_logits"):
        finetune(fq, np.zeros((4, 1, 28, 28), np.float32), np.zeros((3, 10), np.float32))


def _torch_qat_tiny(model, x, y, steps=20):
    """torch's eager QAT recipe on TinyCNN: QuantWrapper, fuse_modules_qat (Conv2d+ReLU), the x86 QAT qconfig,
    prepare_qat, a few SGD steps on digits, convert. Only torch.ao's deprecation warnings are silenced, so the
    recipe stays correct when other warnings are errors."""
    import torch.ao.quantization as tq
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"(?s).*reduce_range will be deprecated")       # x86 qconfig
        warnings.filterwarnings("ignore", message=r"(?s).*quantized tensor creation functions.*deprecated")
        torch.manual_seed(0)
        m = tq.QuantWrapper(TinyCNN())
        m.module.load_state_dict(model.state_dict())
        m.train()
        tq.fuse_modules_qat(m.module, [["features.0", "features.1"], ["features.2", "features.3"]], inplace=True)
        m.qconfig = tq.get_default_qat_qconfig("x86")
        tq.prepare_qat(m, inplace=True)
        opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for i in range(steps):
            idx = slice((i * 32) % len(x), (i * 32) % len(x) + 32)
            loss = torch.nn.functional.cross_entropy(m(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        m.eval()
        return tq.convert(m)


def test_torch_prepare_qat_convert_imports_bit_exactly(digits):
    model, (x_tr, y_tr, x_te, y_te) = digits
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    try:
        qt = _torch_qat_tiny(model, x_tr, y_tr)
        qm = mq.from_torch_quantized(qt, (1, 1, 28, 28))
        x = x_te[:128]
        with torch.no_grad():
            ref = qt(torch.from_numpy(x)).numpy()
    finally:
        torch.backends.quantized.engine = old
    out = qm(x)
    assert np.array_equal(out, ref)
    assert len(np.unique(ref)) > 100 and np.mean(ref.argmax(1) == y_te[:128]) > 0.8      # a working model


def test_mse_scale_search_never_worse_than_max():
    """weight_scale(mse=True): per channel the squared weight error of the chosen scale ≤ that of max|w|/7.5,
    and the scale is a clip (≤ the max scale); on weights with an outlier it clips."""
    from minquant.qat.weights import dequantize_weight, round_nearest, weight_qtype, weight_scale
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (16, 8, 3, 3)).astype(np.float32)
    w[::4, 0, 0, 0] = 0.9                                       # one outlier in every fourth channel
    qt = weight_qtype("int4", False)
    s_max = weight_scale(w, "int4", per_channel=True, reduce_range=False)
    s_mse = weight_scale(w, "int4", per_channel=True, reduce_range=False, mse=True)

    def err(s):
        return ((w - dequantize_weight(round_nearest(w, s, qt), s)) ** 2).reshape(16, -1).sum(1)

    assert np.all(err(s_mse) <= err(s_max)) and np.all(s_mse <= s_max)
    assert np.all(s_mse[::4] < s_max[::4]) and np.mean(s_mse < s_max) > 0.5      # it does clip


def test_int8_layers_keep_8_bits(digits):
    model, (x_tr, *_) = digits
    r = NearestWeights("int4", int8_layers=("classifier",))
    qm = mq.quantize_static(model, [x_tr[:64]], target="x86", weight_rounding=r, progress=False)
    w = {n.name: n.params["weight"] for n in qm.graph.nodes if n.op in ("qconv2d", "qlinear")}
    # int8 codes: per-channel max-abs scaling puts each row's largest weight on the top code, ±127 where the
    # target accumulates exactly (VNNI hosts), ±63/64 where fbgemm's AVX2 pairs saturate and minquant gives
    # the layer 7-bit weights (meta["weights_7bit"] names it: the path an AVX2-only host such as Zen 3 takes)
    top = 64 if "classifier" in qm.meta["weights_7bit"] else 127
    assert top - 1 <= np.abs(w["classifier"]).max() <= top
    assert all(np.abs(v).max() <= 8 for k, v in w.items() if k != "classifier")
    with pytest.raises(TypeError, match="layer names"):
        NearestWeights("int4", int8_layers="classifier")
    with pytest.raises(ValueError, match=r"\['clasifier'\] in int8, but the model has no conv / linear layer"):
        mq.quantize_static(model, [x_tr[:64]], target="x86", progress=False,
                           weight_rounding=NearestWeights("int4", int8_layers=("clasifier",)))   # misspelt
