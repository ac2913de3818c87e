"""Dynamic quantization: minquant quantizes Linear *and* Conv2d; torch's quantize_dynamic leaves Conv2d
float (the seed's surprise), and the report shows it."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.ao.quantization as tq
import torch.nn as nn

from minquant.affine import quantize
from minquant.kernels.dynamic import dynamic_input_qparams
from minquant.quantized import load, quantize_dynamic, report_torch_quantized
from minquant.quantized.comparison import sqnr_db


torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*deprecated.*")


def _out(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_torch_quantize_dynamic_leaves_conv_float(digits_model):
    model, _ = digits_model
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    try:
        dq = tq.quantize_dynamic(model, {nn.Linear, nn.Conv2d}, dtype=torch.qint8)
    finally:
        torch.backends.quantized.engine = old
    rep = report_torch_quantized(dq)
    rows = {r.name: r for r in rep.layers}
    assert not rows["features.0"].quantized and rows["features.0"].how == "float"
    assert not rows["features.2"].quantized
    assert rows["classifier"].quantized and rows["classifier"].how == "int8 dynamic"
    assert rep.by_kind() == {"conv2d": (0, 2), "linear": (1, 1)}
    assert rows["features.2"].bytes == 4 * (64 * 32 * 9 + 64)        # still float32
    assert "conv2d: 0/2 quantized" in str(rep)


def test_minquant_quantize_dynamic_quantizes_conv_and_linear(digits_model, tmp_path):
    model, (_, _, x_te, y_te) = digits_model
    qm = quantize_dynamic(model, input_shape=(1, 1, 28, 28))
    rep = qm.report
    assert rep.by_kind() == {"conv2d": (2, 2), "linear": (1, 1)}
    ops = [n.op for n in qm.graph.nodes]
    assert ops.count("dynamic_conv2d") == 2 and ops.count("dynamic_linear") == 1 and "relu" not in ops  # ReLU fused
    f = _out(model, x_te)
    q = qm(x_te)
    assert sqnr_db(f, q) > 25
    assert (q.argmax(1) == y_te).mean() >= (f.argmax(1) == y_te).mean() - 0.01
    assert qm.size_bytes() * 3.8 <= sum(p.numel() * 4 for p in model.parameters())
    assert np.array_equal(load(qm.save(tmp_path / "d.npz"))(x_te[:10]), q[:10])


@pytest.mark.parametrize("target", ["fbgemm", "qnnpack", "minquant"])
def test_dynamic_conv2d_matches_integer_formula(target):
    """dynamic_conv2d = run-time qparams, quantize, integer conv (exact int64 here), y = acc·s_x·s_w + b."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, stride=2, groups=2).eval()
    qm = quantize_dynamic(nn.Sequential(conv).eval(), input_shape=(1, 4, 9, 9), target=target)
    node = qm.graph.nodes[0]
    x = np.random.default_rng(0).normal(size=(3, 4, 9, 9)).astype(np.float32)
    y = qm(x)
    xs, xz = dynamic_input_qparams(x, reduce_range=node.attrs.reduce_range, target=target)
    x_q = quantize(x, xs, xz, "uint8", target="torch" if target != "minquant" else "onnxruntime")
    real_x = (x_q.astype(np.float64) - xz)                     # integer, zero point removed
    w = node.params["weight"].astype(np.float64)
    acc = torch.nn.functional.conv2d(torch.from_numpy(real_x), torch.from_numpy(w), None, 2, 1, 1, 2).numpy()
    s = (np.float64(np.float32(xs)) * node.params["w_scale"].astype(np.float64))[None, :, None, None]
    expect = acc * s + node.params["bias"][None, :, None, None]
    # the integer accumulator is exact (no saturation: 7-bit weights); only float rounding differs
    np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-5)
    # and it is close to the float conv
    assert sqnr_db(_out(conv, x), y) > 30


def test_quantize_dynamic_input_checks(digits_model):
    model, (_, _, x_te, _) = digits_model
    lazy = quantize_dynamic(model)                  # no input_shape: built from the first call's input
    with pytest.raises(ValueError, match="input_shape"):
        lazy.report
    y = lazy(x_te[:16])
    np.testing.assert_array_equal(y, quantize_dynamic(model, input_shape=(1, 1, 28, 28))(x_te[:16]))
    assert lazy.report.by_kind() == {"conv2d": (2, 2), "linear": (1, 1)} and lazy.size_bytes() > 0
    np.testing.assert_array_equal(lazy(x_te[16:20]), quantize_dynamic(model, input_shape=(1, 1, 28, 28))(x_te[16:20]))
    with pytest.raises(ValueError, match="torch nn.Module or a minquant Graph"):
        quantize_dynamic("not a model")
    with pytest.raises(ValueError, match="'linear' and 'conv2d'"):
        quantize_dynamic(model, layers=("lstm",), input_shape=(1, 1, 28, 28))
    qm = quantize_dynamic(model, layers=("linear",), input_shape=(1, 1, 28, 28))
    rep = qm.report
    assert rep.by_kind() == {"conv2d": (0, 2), "linear": (1, 1)}
    assert [r.note for r in rep.not_quantized] == ["not selected", "not selected"]


@pytest.mark.parametrize("target", ["fbgemm", "qnnpack", "onnxruntime", "minquant"])
@pytest.mark.parametrize("reduce_range", [True, False])
def test_dynamic_depthwise_shortcut_equals_the_gemm_path(target, reduce_range):
    """The exact float32 shortcut for depthwise dynamic convs (taken when no tap pair can saturate) gives the
    same floats as the per-group integer GEMM path, bit for bit — with 8-bit weights, weight zero points and
    both activation ranges (with 8-bit activations and large weights fbgemm must fall back to the GEMM)."""
    import dataclasses
    from minquant.kernels.dynamic import dynamic_conv2d, dynamic_conv2d_reference, pack_dynamic_conv_weight

    rng = np.random.default_rng(3)
    c = 6
    w = rng.integers(-128, 128, (c, 1, 3, 3)).astype(np.int8)
    w[0, 0, 0, :2] = 127                                        # a pair that saturates with 8-bit activations
    wz = rng.integers(-2, 3, c)
    ws = rng.uniform(0.001, 0.01, c).astype(np.float32)
    bias = rng.normal(0, 0.5, c).astype(np.float32)
    geo = dict(stride=2, padding=1, groups=c, reduce_range=reduce_range, relu=True, target=target)
    x = rng.normal(0.5, 1, (2, c, 11, 11)).astype(np.float32)
    packed = pack_dynamic_conv_weight(w, wz, c)
    assert packed.depthwise_w is not None
    gemm = dynamic_conv2d(x, dataclasses.replace(packed, depthwise_w=None), ws, None, bias, **geo)
    fast = dynamic_conv2d(x, packed, ws, None, bias, **geo)
    np.testing.assert_array_equal(fast, gemm)
    np.testing.assert_array_equal(fast, dynamic_conv2d_reference(x, w, ws, wz, bias, **geo))
    assert (gemm > 0).mean() > 0.2 and np.unique(gemm).size > 100      # fused ReLU, not degenerate
