"""Whole models at a precision (quantize_precision) on the seed's TinyCNN and real digits: the int8 rung is
quantize_static, size_bytes counts int4 packed two per byte, float16 activations are stored in float16,
save / load round trips, the fp16 goal (≥ 40 dB), and bad arguments."""
from __future__ import annotations

import numpy as np
import pytest

import minquant as mq
from minquant.quantized.comparison import sqnr_db
from minquant.quantized.precision import (FP16, FP16_W, FP32, INT8, Numbers, Precision, w4a8, w4a16, w4a32)
from minquant.quantized.precision_convert import prepare_graph, quantize_int4_rows, quantize_precision

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny():
    import torch
    from minquant.data.zoo import tiny_cnn_digits
    model, (x_tr, _, x_te, y_te) = tiny_cnn_digits()
    with torch.no_grad():
        f = model(torch.from_numpy(x_te[:200])).numpy()
    return model, x_tr[:64], x_te[:200], y_te[:200], f


@pytest.fixture(scope="module")
def prepared(tiny):
    model, calib, *_ = tiny
    g, _, _ = prepare_graph(model, [calib])
    return g


@pytest.fixture(scope="module")
def ladder(tiny, prepared):
    _, calib, *_ = tiny
    return {p: quantize_precision(prepared, p, calib, equalize=False)
            for p in (FP32, FP16, FP16_W, INT8, w4a16(32), w4a16(32, symmetric=False), w4a32(32), w4a8(32))}


def test_int8_rung_is_quantize_static(tiny):
    model, calib, x, *_ = tiny
    qs = mq.quantize_static(model, calib, target="x86", progress=False)
    qp = quantize_precision(model, INT8, calib, target="x86")
    assert np.array_equal(qs(x), qp(x))                         # same calibration, same weights, same codes
    assert qs.size_bytes() == qp.size_bytes()


def test_every_rung_runs_and_orders_by_size(tiny, ladder):
    _, _, x, y, f = tiny
    sizes = {p: qm.size_bytes() for p, qm in ladder.items()}
    assert sizes[FP32] > sizes[FP16] > sizes[INT8] > sizes[w4a16(32)]
    assert sizes[FP16] == sizes[FP32] // 2                      # every parameter in 2 bytes
    for p, qm in ladder.items():
        out = qm(x)
        assert out.dtype == np.float32 and out.shape == f.shape
        assert (out.argmax(1) == y).mean() > 0.9, p.name        # real digits, every rung still classifies
    assert sqnr_db(f, ladder[FP32](x)) > 100                    # the prepared graph is the float model
    assert sqnr_db(f, ladder[FP16](x)) >= 40                    # the goal
    assert sqnr_db(f, ladder[FP16_W](x)) > sqnr_db(f, ladder[FP16](x))   # no rounding between ops: closer


def test_size_bytes_counts_int4_packed(ladder):
    qm = ladder[w4a16(32)]
    gs = qm.meta["int4_group_sizes"]
    assert gs == {"features.0": 9, "features.2": 32, "classifier": 32}    # K = 9 does not divide by 32
    for n in qm.graph.nodes:
        if n.op in ("w4_conv2d", "w4_linear"):
            o, k = n.attrs.weight_shape[0], int(np.prod(n.attrs.weight_shape[1:]))
            g = k // gs[n.name]
            assert n.params["weight_packed"].dtype == np.uint8
            assert n.params["weight_packed"].nbytes == o * ((k + 1) // 2)    # two codes per byte
            assert n.params["w_scale"].dtype == np.float16
            assert qm.node_bytes(n) == o * ((k + 1) // 2) + 2 * o * g + 4 * o   # + float16 scales, float32 bias
    assert qm.size_bytes() == sum(qm.node_bytes(n) for n in qm.graph.nodes)
    zp = ladder[w4a16(32, symmetric=False)]
    assert zp.size_bytes() - qm.size_bytes() == sum(n.params["w_zp"].size for n in zp.graph.nodes if "w_zp" in n.params)
    assert qm.fp32_param_bytes() == ladder[FP32].fp32_param_bytes()


def test_fp16_activations_are_float16(tiny, ladder):
    _, _, x, *_ = tiny
    _, raw = ladder[FP16].run(x[:4], intermediates=True, raw=True)
    kinds = {k: v.dtype for k, v in raw.items() if k != "x"}
    assert all(d == np.float16 for d in kinds.values()), kinds
    _, raw = ladder[FP16_W].run(x[:4], intermediates=True, raw=True)
    assert all(v.dtype == np.float32 for v in raw.values())
    _, raw = ladder[w4a8(32)].run(x[:4], intermediates=True, raw=True)
    assert raw["features.2"].dtype == np.uint8 and len(np.unique(raw["features.2"])) > 30   # codes, not saturated


def test_fp16_model_matches_torch_half(tiny, ladder):
    """Without calibration data nothing is equalized: the float16 weights are torch's ``.half()`` weights, and
    the float16 logits equal torch's but for float32 summation order (one-ULP differences that propagate)."""
    import copy
    import torch
    model, _, x, *_ = tiny
    with torch.no_grad():
        t16 = copy.deepcopy(model).half()(torch.from_numpy(x).half()).numpy().astype(np.float32)
    ours = quantize_precision(model, FP16, input_shape=(1, 1, 28, 28))(x)
    assert np.mean(ours == t16) > 0.5
    assert sqnr_db(t16, ours) > 60
    assert sqnr_db(t16, ours) > sqnr_db(t16, ladder[FP16](x))  # the equalized model rounds other weights


@pytest.mark.parametrize("p", [FP16, w4a16(32), w4a16(32, symmetric=False), w4a8(32)], ids=str)
def test_save_load_round_trip(tiny, ladder, tmp_path, p):
    _, _, x, *_ = tiny
    qm = ladder[p]
    path = qm.save(tmp_path / "m.mq.npz")
    back = mq.load(path)
    assert np.array_equal(back(x), qm(x))
    assert back.size_bytes() == qm.size_bytes() and back.meta["precisions"] == qm.meta["precisions"]
    with np.load(path) as f:
        packed = [f[k] for k in f.files if k.endswith(".weight_packed")]
    if p.weights is Numbers.INT4:
        assert packed and all(a.dtype == np.uint8 for a in packed)   # stored packed, not one code per byte


def test_mixed_layers_and_boundaries(tiny, prepared):
    _, calib, x, _, f = tiny
    qm = quantize_precision(prepared, INT8, calib, equalize=False,
                            layers={"features.2": FP16, "classifier": w4a8(32)})
    assert [n.op for n in qm.graph.nodes if n.name in ("features.0", "features.2", "classifier")] == \
        ["qconv2d", "fp16_conv2d", "w4a8_linear"]
    assert qm.meta["precisions"] == {"features.0": "int8", "features.2": "fp16", "classifier": "W4A8 g32"}
    assert sqnr_db(f, qm(x)) > 25


def test_int4_rows_scales_round_up():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    codes, s16, zp, gs = quantize_int4_rows(w, 32, symmetric=True)
    assert gs == 32 and zp is None and s16.dtype == np.float16
    exact = np.abs(w.reshape(8, 2, 32)).max(-1) / 7.5
    assert np.all(s16.astype(np.float32) >= exact.astype(np.float32))   # rounded up: nothing clipped
    assert codes.min() >= -8 and codes.max() <= 7 and len(np.unique(codes)) >= 15   # ±max|w| → ±7 (7.5 − ε)


def test_bad_precisions_and_arguments(tiny):
    model, calib, *_ = tiny
    with pytest.raises(ValueError, match="even number"):
        Precision(Numbers.INT4, Numbers.FP16, 3)
    with pytest.raises(TypeError, match="group_size"):
        Precision(Numbers.INT4, Numbers.FP16)
    with pytest.raises(ValueError, match="INT8 weights run with INT8"):
        Precision(Numbers.INT8, Numbers.FP16)
    with pytest.raises(ValueError, match="int4 weights only"):
        Precision(Numbers.FP16, Numbers.FP16, 32)
    with pytest.raises(TypeError, match="Numbers member"):
        Precision("int4", Numbers.FP16, 32)
    with pytest.raises(ValueError, match="need calibration_data"):
        quantize_precision(model, INT8, input_shape=(1, 1, 28, 28))
    with pytest.raises(ValueError, match="its layers are: features.0, features.2, classifier"):
        quantize_precision(model, FP16, calib, layers={"features.9": INT8})
    with pytest.raises(TypeError, match="must be a Precision"):
        quantize_precision(model, "fp16", calib)


def test_fp16_keeps_batch_norm_when_asked():
    """fold_batch_norm=False: BatchNorm stays its own op, run on float16 values (widen, compute, round), as
    torch's ``.half()`` keeps it; int8 layers refuse it (they need BN folded)."""
    import torch
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 1), torch.nn.BatchNorm2d(4)).eval()
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.01, 4)
            bn.weight.uniform_(0.2, 3)
    x = np.random.default_rng(0).standard_normal((4, 3, 10, 10)).astype(np.float32)
    with torch.no_grad():
        f = net(torch.from_numpy(x)).numpy()
    qm = quantize_precision(net, FP16, input_shape=(1, 3, 10, 10), fold_batch_norm=False)
    ops = [n.op for n in qm.graph.nodes]
    assert ops.count("batch_norm") == 2 and ops.count("fp16_conv2d") == 2
    _, raw = qm.run(x, intermediates=True, raw=True)
    assert all(v.dtype == np.float16 for k, v in raw.items() if k not in qm.graph.inputs)
    assert qm.meta["batch_norm_folded"] is False and sqnr_db(f, qm(x)) > 50
    folded = quantize_precision(net, FP16, input_shape=(1, 3, 10, 10))
    assert "batch_norm" not in [n.op for n in folded.graph.nodes]
    with pytest.raises(ValueError, match="need BatchNorm folded"):
        quantize_precision(net, INT8, x, fold_batch_norm=False)
