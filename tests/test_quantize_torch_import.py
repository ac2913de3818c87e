"""from_torch_quantized: models quantized by PyTorch eager mode run on minquant's kernels, bit for bit.

Every test builds the torch model the documented way (fuse → prepare → calibrate → convert), imports it
and asserts ``np.array_equal(minquant output, torch output)`` — float logits after torch's DeQuantStub.
One torch thread: torch's fbgemm add gives each thread's chunk its own scalar tail (see kernels/add.py).
The MobileNetV3 tests (hardswish, hardsigmoid, squeeze-excite multiply) also compare every quantized
intermediate and check the element-wise kernels on every code against torch's ops.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.ao.quantization as tq
import torch.nn as nn

from minquant.data.datasets import photo_crops
from minquant.quantized import compare
from minquant.interop.torch import from_torch_quantized
from minquant.frameworks.torch_oracle import torch_eager_ptq, torch_quantized_codes
from minquant.data.zoo import TinyCNN, mobilenet_v2_imagenet, mobilenet_v3_random, tiny_cnn_digits

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
    if fuse:
        tq.fuse_modules(m.module, [["features.0", "features.1"], ["features.2", "features.3"]], inplace=True)
    return torch_eager_ptq(m, engine, calib)


@pytest.mark.parametrize("engine", ["x86", "fbgemm", "qnnpack"])
@pytest.mark.parametrize("fuse", [True, False])
def test_tiny_cnn_bit_exact(digits_model, engine, fuse):
    model, (x_tr, _, x_te, _) = digits_model
    old = _engine(engine)
    try:
        qmodel = _quantized_tiny(model, x_tr[:200], engine, fuse)
        qm = from_torch_quantized(qmodel, (1, 1, 28, 28))
        lazy = from_torch_quantized(qmodel)        # no input shape: imported at the first call
        x = x_te[:64]
        ref = _torch_out(qmodel, x)
        out = qm(x)
        assert np.array_equal(lazy(x), ref) and lazy.target == qm.target
    finally:
        torch.backends.quantized.engine = old
    assert qm.target.framework == engine
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
    return torch_eager_ptq(m, engine, calib)


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
        m = torch_eager_ptq(Odd().eval(), "x86", torch.randn(2, 1, 8, 8))
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
        m = torch_eager_ptq(CatAddNet().eval(), engine, torch.randn(16, 3, 16, 16))
        qm = from_torch_quantized(m, (1, 3, 16, 16))
        x = torch.randn(8, 3, 16, 16)
        ref = _torch_out(m, x.numpy())
        out = qm(x.numpy())
    finally:
        torch.backends.quantized.engine = old
    assert [n.op for n in qm.graph.nodes] == ["quantize", "qconv2d", "qconv2d", "qcat", "qadd", "qclamp",
                                              "qavg_pool2d", "dequantize"]
    assert np.array_equal(out, ref)


# ----------------------------------------------------------------------------------------------------------
# MobileNetV3: quantized hardswish, hardsigmoid and multiply (squeeze-excite)
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mobilenet_v3(photos):
    calib, _ = photos
    return mobilenet_v3_random(calib)


@pytest.mark.parametrize("engine", ["x86", "qnnpack"])
def test_mobilenet_v3_large_bit_exact(photos, mobilenet_v3, engine):
    """torchvision's quantizable MobileNetV3-large (fuse_model, default qconfig, 8 calibration crops):
    the logits of 4 photo crops and every quantized intermediate torch exposes are identical."""
    import copy

    calib, x = photos
    old = _engine(engine)
    try:
        m = copy.deepcopy(mobilenet_v3)
        m.fuse_model()
        torch_eager_ptq(m, engine, calib)
        qm = from_torch_quantized(m, (1, 3, 224, 224))
        ref, codes = torch_quantized_codes(m, x)
        out, values = qm.run(x, intermediates=True, raw=True)
    finally:
        torch.backends.quantized.engine = old
    ops = [n.op for n in qm.graph.nodes]
    assert (ops.count("qhardswish"), ops.count("qhardsigmoid"), ops.count("qmul")) == (21, 8, 8)
    assert np.isfinite(ref).all() and ref.std() > 0.05
    logits = values[qm.graph.nodes[-2].name]                 # the classifier's uint8 codes
    assert ((logits == 0) | (logits == 255)).mean() < 0.01   # not saturated
    assert np.array_equal(out, ref), f"{int((out != ref).sum())} of {out.size} logits differ"
    compared = 0
    for name, c in codes.items():
        if name in values:   # FloatFunctional outputs are named by the fx node (…skip_mul → …mul)
            assert np.array_equal(values[name], c), name
            compared += 1
    mul_nodes = [n for n in qm.graph.nodes if n.op == "qmul"]
    for n in mul_nodes:      # squeeze-excite: (N, C, 1, 1) scale × (N, C, H, W)
        assert values[n.inputs[0]].shape[2:] == (1, 1) and values[n.inputs[1]].shape[2:] != (1, 1)
    assert compared >= 90


def _q(codes, scale, zp):
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(codes), scale, zp)


# (x_scale, x_zp, y_scale, y_zp) with "round" float64 scales: hardswish values land on exact ties, where
# fbgemm's two rounding paths disagree (5, 8 and 4 table entries differ)
_TIE_QPARAMS = [(0.05, 100, 0.03, 20), (0.025, 100, 0.03, 20), (0.02, 128, 0.03, 200)]


@pytest.mark.parametrize("engine", ["x86", "qnnpack"])
def test_elementwise_kernels_match_torch_on_every_code(engine):
    """Every input code at SIMD and at scalar-tail positions, both memory layouts, float32 and float64
    scales: minquant's hardswish / hardsigmoid tables and quantized multiply equal torch's ops."""
    from minquant.kernels.elementwise import activation_tables, apply_tables, qactivation, qmul

    target = "qnnpack" if engine == "qnnpack" else "fbgemm"
    rng = np.random.default_rng(5)
    trials = []
    for i in range(6):
        s, ys = float(rng.uniform(0.005, 0.12)), float(rng.uniform(0.005, 0.08))
        if i % 2:    # float32 scales, as observers produce
            s, ys = float(np.float32(s)), float(np.float32(ys))
        trials.append((s, int(rng.integers(0, 256)), ys, int(rng.integers(0, 256))))
    old = _engine(engine)
    compared = position_rule_needed = 0
    try:
        for s, z, ys, yz in trials + _TIE_QPARAMS:
            t_vec, t_tail = activation_tables("hardswish", s, z, ys, yz, target=target)
            one_table_fails = False
            perm = rng.permutation(256)
            for k in range(6):   # (2, 8, 5, 7) = 560 codes: 512 in SIMD blocks, a 48-code scalar tail
                codes = np.concatenate([perm, rng.integers(0, 256, 256), np.roll(perm, -48 * k)[:48]])
                nhwc = codes.astype(np.uint8).reshape(2, 5, 7, 8)
                for cl in (False, True):   # memory order = the sequence above, NCHW or NHWC
                    xq = nhwc.transpose(0, 3, 1, 2) if cl else nhwc.reshape(2, 8, 5, 7)
                    t = _q(np.ascontiguousarray(xq), s, z)
                    if cl:
                        t = t.contiguous(memory_format=torch.channels_last)
                    ref = torch.ops.quantized.hardswish(t, ys, yz).int_repr().numpy()
                    ours = qactivation("hardswish", xq, s, z, ys, yz, target=target, channels_last=cl)
                    assert np.array_equal(ours, ref), (s, z, ys, yz, cl, int((ours != ref).sum()))
                    one_table_fails |= not np.array_equal(apply_tables(xq, t_vec, t_vec, block=64, channels_last=cl), ref)
                    hsig = torch.nn.functional.hardsigmoid(t)
                    assert (hsig.q_scale(), hsig.q_zero_point()) == (1 / 256, 0)
                    ours = qactivation("hardsigmoid", xq, s, z, 1 / 256, 0, target=target, channels_last=cl)
                    assert np.array_equal(ours, hsig.int_repr().numpy())
                    compared += 2 * xq.size
            position_rule_needed += one_table_fails
            # multiply: squeeze-excite broadcast and equal shapes, with and without ReLU
            sb, zb = float(np.float32(rng.uniform(0.001, 0.05))), int(rng.integers(0, 256))
            a = rng.integers(0, 256, (2, 8, 1, 1)).astype(np.uint8)
            b = rng.integers(0, 256, (2, 8, 5, 7)).astype(np.uint8)
            for aa, relu in ((a, False), (b[:, :, ::-1].copy(), True)):
                op = torch.ops.quantized.mul_relu if relu else torch.ops.quantized.mul
                ref = op(_q(aa, s, z), _q(b, sb, zb), ys, yz).int_repr().numpy()
                ours = qmul(aa, s, z, b, sb, zb, ys, yz, relu=relu, target=target)
                assert np.array_equal(ours, ref), (s, z, ys, yz, relu, int((ours != ref).sum()))
                compared += ref.size
    finally:
        torch.backends.quantized.engine = old
    assert compared == 9 * (6 * 2 * 2 * 560 + 2 * 560)
    # fbgemm: on the tie qparams a single table is wrong — the position rule is what makes it exact
    assert position_rule_needed == (len(_TIE_QPARAMS) if engine == "x86" else 0)


class TinySE(nn.Module):
    """Hardswish module, squeeze-excite (hardsigmoid, FloatFunctional mul) and, once converted, torch's
    functional ``quantized.hardswish`` with a float64 output scale and ``quantized.mul_relu`` — on an
    odd-sized tensor (a scalar tail), channels-last under x86."""

    def __init__(self):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 1)
        self.act, self.gate, self.pool = nn.Hardswish(), nn.Hardsigmoid(), nn.AdaptiveAvgPool2d(1)
        self.mul = nn.quantized.FloatFunctional()
        self.converted = False

    def forward(self, x):
        y = self.act(self.conv(self.quant(x)))
        if self.converted:
            y = torch.ops.quantized.hardswish(y, 0.03, 20)
        y = self.mul.mul(self.gate(self.fc(self.pool(y))), y)
        if self.converted:
            y = torch.ops.quantized.mul_relu(y, y, 0.002, 5)
        return self.dequant(y)


@pytest.mark.parametrize("engine", ["x86", "qnnpack"])
def test_hardswish_se_model_bit_exact_and_saved(engine, tmp_path):
    from minquant.quantized.model import load

    old = _engine(engine)
    try:
        torch.manual_seed(1)
        m = torch_eager_ptq(TinySE().eval(), engine, torch.randn(8, 3, 13, 13))
        m.converted = True
        qm = from_torch_quantized(m, (1, 3, 13, 13))
        x = torch.randn(3, 3, 13, 13).numpy()
        ref = _torch_out(m, x)
        out = qm(x)
    finally:
        torch.backends.quantized.engine = old
    assert [n.op for n in qm.graph.nodes] == ["quantize", "qconv2d", "qhardswish", "qhardswish",
                                              "qadaptive_avg_pool2d", "qconv2d", "qhardsigmoid", "qmul", "qmul",
                                              "dequantize"]
    hs = qm.graph.nodes[3]
    assert hs.attrs.y_scale == 0.03 and hs.attrs.channels_last       # torch convs return NHWC tensors
    assert qm.graph.nodes[-2].attrs.relu and ref.std() > 0
    assert np.array_equal(out, ref)
    back = load(qm.save(tmp_path / "se.npz"))          # the new attribute classes survive save / load
    assert np.array_equal(back(x), out)


def test_unsupported_quantized_function_is_named():
    """A quantized op minquant has no kernel for (mul_scalar), and an in-place hardsigmoid on codes."""
    class Scaled(nn.Module):
        def __init__(self, inplace):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.conv, self.f = nn.Conv2d(1, 2, 3), nn.quantized.FloatFunctional()
            self.gate, self.inplace = nn.Hardsigmoid(inplace=inplace), inplace

        def forward(self, x):
            y = self.conv(self.quant(x))
            return self.dequant(self.gate(y if self.inplace else self.f.mul_scalar(y, 0.5)))

    old = _engine("x86")
    try:
        for inplace, pattern in ((False, r"fx node 'mul_scalar' .*quantized tensors.*mul_scalar"),
                                 (True, r"'gate' \(Hardsigmoid\).*in-place hardsigmoid")):
            m = torch_eager_ptq(Scaled(inplace).eval(), "x86", torch.randn(2, 1, 8, 8))
            with pytest.raises(ValueError, match=pattern):
                from_torch_quantized(m, (1, 1, 8, 8))
    finally:
        torch.backends.quantized.engine = old
