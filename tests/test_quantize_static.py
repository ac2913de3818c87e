"""quantize_static: BatchNorm folding, fusion, calibration, conversion — checked against torch's eager PTQ,
the float model, and the seed's accuracy / size targets."""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
import torch.ao.quantization as tq
import torch.nn as nn

from minquant.affine import choose_qparams
from minquant.executor import run
from minquant.observers import MinMaxObserver, PercentileObserver
from minquant.quantized import compare, quantize_static
from minquant.quantized.comparison import sqnr_db
from minquant.quantized.passes import prepare_float_graph
from minquant.interop.torch.fx_import import from_torch
from minquant.data.zoo import TinyCNN

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*deprecated.*")


def _out(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


class ConvBnAct(nn.Module):
    """conv → BN → ReLU6, depthwise conv → BN → ReLU, 1×1 projection → BN, residual add, max pool, head."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.c1, self.b1, self.a1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6()
        self.c2, self.b2, self.a2 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        self.c3, self.b3 = nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 5)
        with torch.no_grad():
            self.c1.weight.mul_(scale)

    def forward(self, x):
        y = self.a1(self.b1(self.c1(x)))
        z = self.b3(self.c3(self.a2(self.b2(self.c2(y)))))
        return self.fc(self.pool(y + z).flatten(1))


def test_tiny_cnn_digits_accuracy_and_size(digits_model):
    """The seed's target: static int8 loses ≤ 0.5 points of test accuracy and is ≥ 3.8× smaller."""
    model, (x_tr, _, x_te, y_te) = digits_model
    qm = quantize_static(model, x_tr[:256], progress=False)
    acc_f = (_out(model, x_te).argmax(1) == y_te).mean()
    acc_q = (qm(x_te).argmax(1) == y_te).mean()
    assert acc_f > 0.9
    assert acc_f - acc_q <= 0.005
    fp32 = sum(p.numel() * 4 for p in model.parameters())
    assert fp32 == qm.fp32_param_bytes()
    assert qm.size_bytes() * 3.8 <= fp32
    # the size is what the parameters really take: int8 weights, float32 scales/bias, int8 zero points
    manual = sum(p.nbytes for n in qm.graph.nodes for p in n.params.values())
    assert qm.size_bytes() - manual == 8 * 9   # qparam pairs: quantize, conv ×2 (in, out), pool, linear (in, out), dequantize
    assert all(n.params["weight"].dtype == np.int8 for n in qm.graph.nodes if n.op in ("qconv2d", "qlinear"))


def test_reproduces_torch_x86_ptq_when_configured_like_torch(digits_model):
    """torch's x86 recipe (HistogramObserver with 7-bit activations, per-channel symmetric weights, no bias
    correction, same calibration batches) gives torch's qparams and torch's logits."""
    model, (x_tr, _, x_te, _) = digits_model
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    try:
        m = tq.QuantWrapper(TinyCNN())
        m.module.load_state_dict(model.state_dict())
        m.eval()
        m.qconfig = tq.get_default_qconfig("x86")
        tq.fuse_modules(m.module, [["features.0", "features.1"], ["features.2", "features.3"]], inplace=True)
        tq.prepare(m, inplace=True)
        calib = x_tr[:128]
        with torch.no_grad():
            for i in range(0, 128, 32):
                m(torch.from_numpy(calib[i:i + 32]))
        tq.convert(m, inplace=True)
        ref = _out(m, x_te)
    finally:
        torch.backends.quantized.engine = old
    qm = quantize_static(model, calib, target="x86", calibrator="histogram", reduce_range="activations", bias_correction=False,
                         equalize=False,
                         batch_size=32, progress=False)
    pairs = [("quant", "x:quantize"), ("module.features.0", "features.0"), ("module.features.2", "features.2"),
             ("module.classifier", "classifier")]
    tmods = dict(m.named_modules())
    for tname, qname in pairs:
        s = float(tmods[tname].scale)
        z = int(tmods[tname].zero_point)
        # our float convs round differently from torch's, so a histogram edge may move by 1 ulp
        assert qm.qparams[qname][0] == pytest.approx(s, rel=1e-6) and qm.qparams[qname][1] == z
    w_t = tmods["module.features.2"].weight().int_repr().numpy()
    assert np.array_equal(qm.graph.node("features.2").params["weight"], w_t)
    out = qm(x_te)
    # compare output codes: the output scale itself may differ in the last bit (see above; on an AVX-512
    # host torch's float convs round differently from AVX2, which moves a histogram edge), which changes
    # every dequantized logit by one ulp without changing a single code
    (s_t, z_t), (s_m, z_m) = (float(tmods["module.classifier"].scale), int(tmods["module.classifier"].zero_point)), \
        qm.qparams["classifier"]
    codes_t = np.rint(ref.astype(np.float64) / s_t) + z_t
    codes_m = np.rint(out.astype(np.float64) / s_m) + z_m
    assert (codes_m != codes_t).mean() < 1e-3


def test_fold_batch_norm_keeps_the_function():
    torch.manual_seed(0)
    model = _randomize_bn(ConvBnAct())
    g = from_torch(model, (1, 3, 8, 8))
    gf, groups, folded, _ = prepare_float_graph(g)
    x = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)
    assert not any(n.op == "batch_norm" for n in gf.nodes)
    assert set(folded.values()) == {"b1", "b2", "b3"}
    np.testing.assert_allclose(run(gf, x), _out(model, x), atol=1e-5)
    assert groups["c1"].activation_op == "relu6" and groups["c2"].activation_op == "relu"
    assert groups["c3"].activation is None and groups["add"].activation is None


def test_relu6_stays_relu6():
    """Pre-activations far above 6: the quantized model follows the ReLU6 model, not a ReLU one."""
    torch.manual_seed(0)                 # conv weights from torch's default init: same in every test order
    model = _randomize_bn(ConvBnAct(scale=8.0))
    rng = np.random.default_rng(1)
    calib = rng.normal(size=(32, 3, 8, 8)).astype(np.float32)
    x = rng.normal(size=(16, 3, 8, 8)).astype(np.float32)
    qm = quantize_static(model, calib, progress=False)
    node = qm.graph.node("c1")
    assert node.op == "qconv2d" and node.attrs.activation == "relu6"
    s, z = qm.qparams["c1"]
    assert node.attrs.clamp == (z, min(255, z + int(np.rint(6 / s))))
    _, vals = qm.run(x, intermediates=True)
    assert vals["c1"].max() <= 6 + s / 2
    torch.manual_seed(0)                 # the same weights as `model`, only the activation differs
    relu_model = _randomize_bn(ConvBnAct(scale=8.0))
    relu_model.a1 = nn.ReLU()
    f6, fr = _out(model, x), _out(relu_model, x)
    q = qm(x)
    assert sqnr_db(f6, q) > 25
    assert sqnr_db(f6, q) > sqnr_db(fr, q) + 10


def test_residual_pool_linear_model_quantizes_well():
    torch.manual_seed(0)
    model = _randomize_bn(ConvBnAct())
    rng = np.random.default_rng(2)
    qm = quantize_static(model, rng.normal(size=(64, 3, 8, 8)).astype(np.float32), batch_size=16, progress=False)
    ops = [n.op for n in qm.graph.nodes]
    for op in ("quantize", "qconv2d", "qadd", "qmax_pool2d", "qflatten", "qlinear", "dequantize"):
        assert op in ops
    assert "batch_norm" not in ops and "relu" not in ops
    x = rng.normal(size=(32, 3, 8, 8)).astype(np.float32)
    assert sqnr_db(_out(model, x), qm(x)) > 25


def test_float_fallback_for_ops_without_integer_kernels():
    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, padding=1)
            self.act = nn.Hardswish()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.gate = nn.Conv2d(6, 6, 1)
            self.sig = nn.Hardsigmoid()

        def forward(self, x):
            y = self.act(self.conv(x))
            return (y * self.sig(self.gate(self.pool(y)))).flatten(1)

    torch.manual_seed(0)
    model = SE().eval()
    rng = np.random.default_rng(3)
    qm = quantize_static(model, rng.normal(size=(32, 3, 6, 6)).astype(np.float32), progress=False)
    by_op = {n.op for n in qm.graph.nodes}
    assert {"hardswish", "hardsigmoid", "mul", "dequantize", "qconv2d"} <= by_op
    assert set(qm.meta["float_fallback"]) >= {"act", "sig", "mul"}
    x = rng.normal(size=(8, 3, 6, 6)).astype(np.float32)
    assert sqnr_db(_out(model, x), qm(x)) > 25


def test_calibration_data_checks(digits_model):
    model, (x_tr, _, _, _) = digits_model
    bad = x_tr[:8].copy()
    bad[3, 0, 5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        quantize_static(model, bad, progress=False)
    with pytest.raises(ValueError, match="empty"):
        quantize_static(model, x_tr[:0], progress=False)
    with pytest.raises(ValueError, match="empty"):
        quantize_static(model, [], progress=False)
    with pytest.raises(ValueError, match="empty"):
        quantize_static(model, [x_tr[:4], x_tr[:0]], progress=False)
    with pytest.raises(ValueError, match="shape"):
        quantize_static(model, [x_tr[:4], np.zeros((4, 1, 20, 20), np.float32)], progress=False)
    with pytest.raises(ValueError, match="unknown calibrator"):
        quantize_static(model, x_tr[:8], calibrator="bogus", progress=False)
    with pytest.raises(ValueError, match="target"):
        quantize_static(model, x_tr[:8], target="tflite", progress=False)


def test_dataloader_iterable_and_array_agree(digits_model):
    model, (x_tr, y_tr, _, _) = digits_model
    x = x_tr[:96]
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y_tr[:96]))
    a = quantize_static(model, torch.utils.data.DataLoader(ds, batch_size=32), calibrator="minmax", progress=False)
    b = quantize_static(model, (x[i:i + 32] for i in range(0, 96, 32)), calibrator="minmax", progress=False)
    c = quantize_static(model, x, calibrator=MinMaxObserver, batch_size=32, progress=False)
    assert a.qparams == b.qparams == c.qparams
    assert a.meta["calibration_samples"] == 96
    # MinMax input qparams are choose_qparams of the data's range
    s, z = choose_qparams(x.min(), x.max(), "uint8")
    assert a.qparams["x:quantize"] == (float(s), int(z))


def test_calibrator_factories(digits_model):
    model, (x_tr, _, x_te, _) = digits_model
    p = quantize_static(model, x_tr[:64], calibrator=functools.partial(PercentileObserver, percentile=99.0),
                        progress=False)
    m = quantize_static(model, x_tr[:64], calibrator="minmax", progress=False)
    assert "percentile=99.0" in p.meta["calibrator"]
    # clipping at the 99th percentile gives a smaller range than min/max on the first conv's output
    assert p.qparams["features.0"][0] < m.qparams["features.0"][0]


@pytest.mark.parametrize("target", ["fbgemm", "qnnpack", "onnxruntime", "minquant"])
def test_emulations(digits_model, target):
    from minquant.target import resolve_linear
    model, (x_tr, _, x_te, y_te) = digits_model
    qm = quantize_static(model, x_tr[:128], target=target, progress=False)
    assert qm.target.framework == target
    w = qm.graph.node("features.2").params["weight"]
    if resolve_linear(target).saturate_pairs:   # default: weights give up a bit so int16 pairs cannot saturate
        # no adjacent pair of u8×s8 products can leave int16: 255·(|w_k| + |w_k+1|) ≤ 255·128 = 32640
        assert qm.meta["reduce_range"] == "weights" and w.min() >= -64 and w.max() <= 64
    else:
        assert qm.meta["reduce_range"] is False and (w.min() < -64 or w.max() > 63)
    x = x_te[:200]
    assert (qm(x).argmax(1) == _out(model, x).argmax(1)).mean() > 0.97


def test_bias_correction_removes_mean_shift():
    """Per-tensor 4-bit-like coarse weights (per_channel=False) shift each channel's mean; bias correction
    cancels the shift measured on the calibration data."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Flatten(), nn.Linear(16 * 4 * 4, 4)).eval()
    with torch.no_grad():
        model[0].weight[0].mul_(30)          # one big channel makes the per-tensor scale coarse for the rest
    rng = np.random.default_rng(4)
    calib = (rng.normal(size=(64, 3, 6, 6)) + 1.0).astype(np.float32)   # non-zero input mean
    g = from_torch(model, (1, 3, 6, 6))
    _, fvals = run(g, calib, intermediates=True)
    shifts = []
    for bc in (False, True):
        qm = quantize_static(model, calib, per_channel=False, bias_correction=bc, calibrator="minmax", progress=False)
        _, qv = qm.run(calib, intermediates=True)
        shifts.append(np.abs((qv["0"] - fvals["0"]).mean(axis=(0, 2, 3))).mean())
    assert shifts[1] < 0.3 * shifts[0]


def test_compare_own_model():
    torch.manual_seed(0)
    model = _randomize_bn(ConvBnAct())
    rng = np.random.default_rng(5)
    qm = quantize_static(model, rng.normal(size=(32, 3, 8, 8)).astype(np.float32), progress=False)
    x = rng.normal(size=(16, 3, 8, 8)).astype(np.float32)
    rep = compare(model, qm, x, batch_size=5)
    names = {r.name: r.float_name for r in rep.layers}
    assert names["c1"] == "a1"          # folded conv + BN + ReLU6 ↔ the float ReLU6 output
    assert names["c3"] == "b3"          # folded projection ↔ the float BatchNorm output
    vals = [r.sqnr_db for r in rep.layers]
    assert vals == sorted(vals)
    assert rep.output_sqnr_db == pytest.approx(sqnr_db(_out(model, x), qm(x)), rel=1e-4)
    assert rep.samples == 16 and "SQNR dB" in str(rep)


class Chain(nn.Module):
    """conv → ReLU6 → depthwise conv → ReLU6 → 1×1 conv: two equalizable pairs, ReLU6 saturating."""

    def __init__(self, act1=nn.ReLU6):
        super().__init__()
        self.c1, self.a1 = nn.Conv2d(3, 8, 3, padding=1), act1()
        self.c2, self.a2 = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6()
        self.c3 = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.c1.weight.mul_(torch.logspace(-2, 1.5, 8).reshape(8, 1, 1, 1))   # channel ranges 0.01 … 30
            self.c2.weight.mul_(3)

    def forward(self, x):
        return self.c3(self.a2(self.c2(self.a1(self.c1(x))))).flatten(1)


def test_equalization_keeps_relu6_exactly():
    from minquant.quantized.passes import equalizable_pairs, equalize
    torch.manual_seed(0)
    model = Chain().eval()
    g = from_torch(model, (1, 3, 6, 6))
    x = np.random.default_rng(6).normal(size=(8, 3, 6, 6)).astype(np.float32)
    assert equalizable_pairs(g) == [("c1", "a1", "c2"), ("c2", "a2", "c3")]
    ge, scales = equalize(g)
    ref = _out(model, x)
    assert (run(g, x, intermediates=True)[1]["c1"] > 6).mean() > 0.03    # the clip at 6 matters
    np.testing.assert_allclose(run(ge, x), ref, rtol=1e-4, atol=1e-4)
    assert [n.op for n in ge.nodes] == ["conv2d", "relu_clip", "conv2d", "relu_clip", "conv2d", "flatten"]
    # the clip moved with the channel: hi = 6 / s, and the scales undo the rescaling exactly
    np.testing.assert_allclose(ge.node("a1").params["hi"], 6 / scales["a1"], rtol=1e-6)
    _, vals = run(ge, x, intermediates=True)
    _, orig = run(g, x, intermediates=True)
    np.testing.assert_allclose(vals["a1"] * scales["a1"].reshape(1, -1, 1, 1), orig["a1"], rtol=1e-4, atol=1e-5)
    # DFQ's balance: after equalization, A's output-channel and B's input-channel weight ranges agree
    ra = np.abs(ge.node("c2").params["weight"]).reshape(8, -1).max(1)
    rb = np.abs(ge.node("c3").params["weight"]).max(axis=(0, 2, 3))
    np.testing.assert_allclose(ra, rb, rtol=1e-3)


def test_prepare_float_graph_with_equalization():
    """``prepare_float_graph(g, equalize=True)`` runs the equalization pass (its keyword once shadowed the
    function: TypeError 'bool' object is not callable): same graph and scales as calling the pass on the
    prepared graph, the float function kept."""
    from minquant.quantized.passes import equalize
    torch.manual_seed(0)
    model = Chain().eval()
    g = from_torch(model, (1, 3, 6, 6))
    x = np.random.default_rng(6).normal(size=(8, 3, 6, 6)).astype(np.float32)
    ge, groups, folded, scales = prepare_float_graph(g, equalize=True)
    plain, _, _, none = prepare_float_graph(g)
    assert none == {} and {"a1", "a2"} <= set(scales)
    want, want_scales = equalize(plain)
    assert [n.op for n in ge.nodes] == [n.op for n in want.nodes] == \
        ["conv2d", "relu_clip", "conv2d", "relu_clip", "conv2d", "flatten"]
    for k in scales:
        np.testing.assert_array_equal(scales[k], want_scales[k])
    np.testing.assert_array_equal(run(ge, x), run(want, x))
    np.testing.assert_allclose(run(ge, x), _out(model, x), rtol=1e-4, atol=1e-4)
    assert groups["c1"].activation_op == "relu_clip"


def test_equalized_quantized_model_clips_per_channel():
    torch.manual_seed(0)
    model = Chain(nn.ReLU).eval()      # c1 channels span 0.01 … 30 after the ReLU; a2 is a ReLU6
    rng = np.random.default_rng(7)
    calib = rng.normal(size=(64, 3, 6, 6)).astype(np.float32)
    x = rng.normal(size=(32, 3, 6, 6)).astype(np.float32)
    eq = quantize_static(model, calib, batch_size=16, progress=False)
    plain = quantize_static(model, calib, batch_size=16, equalize=False, progress=False)
    # the per-channel ReLU6 top is part of the conv's output stage (no separate clamp pass)
    clips = [n for n in eq.graph.nodes if n.op == "qconv2d" and "clamp_hi" in n.params]
    assert clips and clips[0].params["clamp_hi"].dtype == np.uint8 and clips[0].params["clamp_hi"].min() < 255
    assert not any(n.op == "qclamp" for n in eq.graph.nodes)
    _, raw = eq.run(x, intermediates=True, raw=True)
    c = clips[0]
    top = c.params["clamp_hi"].reshape(1, -1, 1, 1)
    assert (raw[c.name] <= top).all() and (raw[c.name] == top).any()   # the top is reached: it clips
    f = _out(model, x)
    assert sqnr_db(f, eq(x)) > 25
    assert sqnr_db(f, eq(x)) > sqnr_db(f, plain(x)) + 2   # the 3000× spread of channel ranges is what it fixes
    rep = compare(model, eq, x)
    assert rep.output_sqnr_db == pytest.approx(sqnr_db(f, eq(x)), rel=1e-4)
    assert all(r.sqnr_db > 20 for r in rep.layers)   # intermediates are compared in the float model's units


def test_default_gives_7bit_weights_exactly_where_pairs_can_saturate():
    """reduce_range=None: on an AVX512-VNNI CPU fbgemm's GEMM is exact but its depthwise kernel still pairs
    taps with int16 saturation, so only the depthwise layer gets 7-bit weights; on AVX2 every layer does;
    under qnnpack none."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),
                          nn.Conv2d(16, 8, 1)).eval()
    x = np.random.default_rng(0).normal(size=(16, 3, 12, 12)).astype(np.float32)
    want = {"fbgemm@avx512-vnni": ["2"], "fbgemm@avx2": ["0", "2", "4"], "x86@avx512-vnni": [],
            "qnnpack@avx2": []}
    for target, layers in want.items():
        qm = quantize_static(model, x, target=target, progress=False, equalize=False)
        assert qm.meta["weights_7bit"] == layers, target
        assert qm.meta["reduce_range"] == ("weights" if layers else False)
        for n in qm.graph.nodes:
            if n.op == "qconv2d":
                w = n.params["weight"].astype(np.int64)
                top = np.abs(w).max()        # symmetric: max|w| → 63.5 (7-bit) or 127.5 (8-bit), rounded
                assert (top == 64) if n.name in layers else (top >= 127), (target, n.name, top)
