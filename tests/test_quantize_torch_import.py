"""from_torch_quantized: models quantized by PyTorch eager mode run on minquant's kernels, bit for bit.

Every test builds the torch model the documented way (fuse → prepare → calibrate → convert), imports it
and asserts ``np.array_equal(minquant output, torch output)`` — float logits after torch's DeQuantStub.
One torch thread: torch's fbgemm add gives each thread's chunk its own scalar tail (see kernels/add.py).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.ao.quantization as tq
import torch.nn as nn

from minquant.datasets import photo_crops
from minquant.quantized import compare, from_torch_quantized
from minquant.zoo import TinyCNN, mobilenet_v2_imagenet, tiny_cnn_digits

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*deprecated.*")
warnings.filterwarnings("ignore", category=UserWarning, module="torch.ao")


@pytest.fixture(scope="module")
def digits_model():
    return tiny_cnn_digits()


def _engine(name):
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    return old


def _torch_out(m, x):
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


def _quantized_tiny(model, calib, engine, fuse=True):
    m = tq.QuantWrapper(TinyCNN())
    m.module.load_state_dict(model.state_dict())
    m.eval()
    m.qconfig = tq.get_default_qconfig(engine)
    if fuse:
        tq.fuse_modules(m.module, [["features.0", "features.1"], ["features.2", "features.3"]], inplace=True)
    tq.prepare(m, inplace=True)
    with torch.no_grad():
        m(torch.from_numpy(calib))
    return tq.convert(m, inplace=True)


@pytest.mark.parametrize("engine", ["x86", "fbgemm", "qnnpack"])
@pytest.mark.parametrize("fuse", [True, False])
def test_tiny_cnn_bit_exact(digits_model, engine, fuse):
    model, (x_tr, _, x_te, _) = digits_model
    old = _engine(engine)
    try:
        qmodel = _quantized_tiny(model, x_tr[:200], engine, fuse)
        qm = from_torch_quantized(qmodel, (1, 1, 28, 28))
        x = x_te[:64]
        ref = _torch_out(qmodel, x)
        out = qm(x)
    finally:
        torch.backends.quantized.engine = old
    assert qm.emulate == ("qnnpack" if engine == "qnnpack" else "fbgemm")
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert np.array_equal(out, ref)
    ops = [n.op for n in qm.graph.nodes]
    assert ops.count("qconv2d") == 2 and "qlinear" in ops and "qadaptive_avg_pool2d" in ops
    if not fuse:
        assert ops.count("qclamp") == 2          # standalone ReLU on codes: max(q, z)


def _torchvision_quantized(arch, engine, calib):
    from torchvision.models.quantization import resnet18

    torch.manual_seed(0)
    if arch == "mobilenet_v2":
        m = mobilenet_v2_imagenet(quantizable=True)
    else:
        m = resnet18(weights=None, quantize=False).eval()
    m.fuse_model()
    m.qconfig = tq.get_default_qconfig(engine)
    tq.prepare(m, inplace=True)
    with torch.no_grad():
        m(torch.from_numpy(calib))
    return tq.convert(m, inplace=True)


@pytest.fixture(scope="module")
def photos():
    # with 8 calibration crops and 4 evaluated, a 1-ulp error in qnnpack's requantization multiplier
    # showed up as 949 differing MobileNetV2 logits (4 + 2 crops happened to hide it)
    return photo_crops(8, split="calib"), photo_crops(4, split="eval")


@pytest.mark.parametrize("arch,engine", [("mobilenet_v2", "x86"), ("mobilenet_v2", "qnnpack"),
                                         ("resnet18", "x86"), ("resnet18", "qnnpack")])
def test_torchvision_bit_exact(photos, arch, engine):
    calib, x = photos
    old = _engine(engine)
    try:
        qmodel = _torchvision_quantized(arch, engine, calib)
        qm = from_torch_quantized(qmodel, (1, 3, 224, 224))
        ref = _torch_out(qmodel, x)
        out = qm(x)
    finally:
        torch.backends.quantized.engine = old
    assert np.isfinite(ref).all() and ref.std() > 0     # a real, non-constant output
    assert np.array_equal(out, ref), f"{int((out != ref).sum())} of {out.size} logits differ"
    ops = {n.op for n in qm.graph.nodes}
    assert "qadd" in ops and "qconv2d" in ops and "qlinear" in ops
    if arch == "mobilenet_v2":   # depthwise convs and torchvision's functional pool/flatten were imported
        assert any(n.op == "qconv2d" and n.attrs.groups > 1 for n in qm.graph.nodes)
        assert "qadaptive_avg_pool2d" in ops and "qflatten" in ops
    else:
        assert "qmax_pool2d" in ops and any(n.op == "qadd" and n.attrs.relu for n in qm.graph.nodes)


@pytest.mark.parametrize("engine", ["x86", "qnnpack"])
def test_torch_dynamic_linear_bit_exact(engine):
    """quantize_dynamic output: every Linear becomes dynamic_linear and matches torch bit for bit."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    x = torch.randn(16, 1, 28, 28)
    old = _engine(engine)
    try:
        dq = tq.quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)
        qm = from_torch_quantized(dq, (1, 1, 28, 28))
        with torch.no_grad():
            ref = dq(x).numpy()
        out = qm(x.numpy())
    finally:
        torch.backends.quantized.engine = old
    assert np.array_equal(out, ref)
    assert [n.op for n in qm.graph.nodes] == ["flatten", "dynamic_linear", "relu", "dynamic_linear"]


def test_torch_dynamic_tiny_cnn_keeps_float_convs(digits_model):
    """torch's quantize_dynamic({Linear, Conv2d}) leaves Conv2d float: the import shows float conv2d nodes
    (run by minquant's float kernels, so logits agree to float rounding, not bit for bit)."""
    model, (_, _, x_te, _) = digits_model
    old = _engine("x86")
    try:
        dq = tq.quantize_dynamic(model, {nn.Linear, nn.Conv2d}, dtype=torch.qint8)
        qm = from_torch_quantized(dq, (1, 1, 28, 28))
        ref = _torch_out(dq, x_te[:32])
        out = qm(x_te[:32])
    finally:
        torch.backends.quantized.engine = old
    assert [n.op for n in qm.graph.nodes if n.op in ("conv2d", "dynamic_linear")] == ["conv2d", "conv2d",
                                                                                     "dynamic_linear"]
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_unsupported_module_is_named():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.conv = nn.Conv2d(1, 2, 3)
            self.act = nn.GELU()

        def forward(self, x):
            return self.dequant(self.act(self.conv(self.quant(x))))

    old = _engine("x86")
    try:
        m = Odd().eval()
        m.qconfig = tq.get_default_qconfig("x86")
        tq.prepare(m, inplace=True)
        m(torch.randn(2, 1, 8, 8))
        tq.convert(m, inplace=True)
        with pytest.raises(ValueError, match=r"'act' \(GELU\)"):
            from_torch_quantized(m, (1, 1, 8, 8))
    finally:
        torch.backends.quantized.engine = old


def test_compare_torch_quantized_against_float(digits_model):
    """compare() on a torch-quantized model: layers matched through QuantWrapper's 'module.' prefix and
    fused Conv+ReLU, output SQNR equal to a direct computation, rows sorted worst first."""
    model, (x_tr, _, x_te, _) = digits_model
    old = _engine("x86")
    try:
        qmodel = _quantized_tiny(model, x_tr[:200], "x86")
        qm = from_torch_quantized(qmodel, (1, 1, 28, 28))
        x = x_te[:40]
        ref_q = _torch_out(qmodel, x)
    finally:
        torch.backends.quantized.engine = old
    rep = compare(model, qm, x, batch_size=16)
    f = _torch_out(model, x).astype(np.float64)
    direct = 10 * np.log10((f ** 2).sum() / ((f - ref_q) ** 2).sum())
    assert rep.output_sqnr_db == pytest.approx(direct, rel=1e-4)  # float executors differ in rounding only
    pairs = {r.name: r.float_name for r in rep.layers}
    assert pairs["module.features.0"] == "features.1"     # ConvReLU2d ↔ float ReLU output
    assert pairs["module.classifier"] == "classifier"
    vals = [r.sqnr_db for r in rep.layers]
    assert vals == sorted(vals) and all(10 < v < 80 for v in vals)
    assert "module.features.0" in rep.table()


class CatAddNet(nn.Module):
    """FloatFunctional cat and add_relu, a ReLU module on a quantized tensor, AvgPool2d."""

    def __init__(self):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.cat, self.add = nn.quantized.FloatFunctional(), nn.quantized.FloatFunctional()
        self.pool, self.relu = nn.AvgPool2d(2), nn.ReLU()

    def forward(self, x):
        x = self.quant(x)
        y = self.cat.cat([self.a(x), self.b(x)], dim=1)
        return self.dequant(self.pool(self.relu(self.add.add_relu(y, y))))


@pytest.mark.parametrize("engine", ["x86", "qnnpack"])
def test_cat_add_relu_avgpool_bit_exact(engine):
    old = _engine(engine)
    try:
        torch.manual_seed(0)
        m = CatAddNet().eval()
        m.qconfig = tq.get_default_qconfig(engine)
        tq.prepare(m, inplace=True)
        m(torch.randn(16, 3, 16, 16))
        tq.convert(m, inplace=True)
        qm = from_torch_quantized(m, (1, 3, 16, 16))
        x = torch.randn(8, 3, 16, 16)
        ref = _torch_out(m, x.numpy())
        out = qm(x.numpy())
    finally:
        torch.backends.quantized.engine = old
    assert [n.op for n in qm.graph.nodes] == ["quantize", "qconv2d", "qconv2d", "qcat", "qadd", "qclamp",
                                              "qavg_pool2d", "dequantize"]
    assert np.array_equal(out, ref)
