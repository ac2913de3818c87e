"""minquant.interop.onnx.exporter.to_onnx: the files are valid ONNX, ONNX Runtime runs them, and its outputs equal
minquant's ``target="onnxruntime"`` outputs bit for bit (float graphs: within 1e-4).

ORT sessions use default graph optimizations (so the QDQ files are fused into integer kernels, which the
tests check by reading back ``optimized_model_filepath``), the CPU provider and one thread.
"""
import collections
import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import minquant  # noqa: E402
from minquant.graph import OPS, Graph, Node  # noqa: E402
from minquant.interop.onnx.exporter import to_onnx  # noqa: E402
from minquant.frameworks.ort_oracle import ort_runner  # noqa: E402
from minquant.quantized import QuantizedModel, ops, quantize_dynamic, quantize_static  # noqa: E402

torch.set_num_threads(1)
FORMATS = ("qoperator", "qdq")


def ort_run(path, x, optimized=None):
    return ort_runner(path, optimized)(x)


def optimized_ops(path):
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def assert_not_saturated(qm, x):
    """The test input exercises the codes: the output codes are not piled up at 0 or 255."""
    _, raw = qm.run(x, intermediates=True, raw=True)
    out = qm.graph.node(qm.graph.outputs[0]).inputs[0]
    codes = raw[out]
    assert np.mean((codes == 0) | (codes == 255)) < 0.05, "test data saturates the output codes"


# ---------------------------------------------------------------------------------------------------------
# models (built once per session)
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_static(digits_model):
    model, (x_train, _, x_test, _) = digits_model
    qm = quantize_static(model, x_train[:256], target="onnxruntime", progress=False)
    return model, qm, x_test[:128]


@pytest.fixture(scope="session")
def mobilenet():
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet
    model = mobilenet_v2_imagenet()
    qm = quantize_static(model, photo_crops(8), target="onnxruntime", progress=False)
    return minquant.from_torch(model, (1, 3, 224, 224)), qm, photo_crops(4, split="eval")


class SmallNet(torch.nn.Module):
    """Every kind of node a default quantize_static model can hold: fused ReLU/ReLU6, max/avg pools, cat of
    differently scaled inputs, grouped conv, a BatchNorm that cannot fold, hardswish / hardsigmoid / mul
    fallbacks, a residual add with ReLU, non-global adaptive pooling, flatten, linear + ReLU6."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c1, self.r1, self.mp = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.MaxPool2d(2)
        self.ca, self.cb, self.rb = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 3, padding=1, groups=4), nn.ReLU()
        self.ap = nn.AvgPool2d(3, 1, padding=1)
        self.bn, self.hs = nn.BatchNorm2d(12), nn.Hardswish()
        self.c2 = nn.Conv2d(12, 12, 3, padding=1)
        self.se, self.hsig = nn.Conv2d(12, 12, 1), nn.Hardsigmoid()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1, self.r3, self.fc2 = nn.Linear(48, 16), nn.ReLU6(), nn.Linear(16, 5)

    def forward(self, x):
        x = self.mp(self.r1(self.c1(x)))
        x = torch.cat([self.ca(x), self.rb(self.cb(x))], 1)
        x = self.hs(self.bn(self.ap(x)))
        x = torch.relu(x + self.c2(x))
        x = x * self.hsig(self.se(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc2(self.r3(self.fc1(x)))


@pytest.fixture(scope="session")
def small():
    torch.manual_seed(0)
    net = SmallNet().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    rng = np.random.default_rng(0)
    qm = quantize_static(net, rng.standard_normal((32, 3, 16, 16)).astype(np.float32), target="onnxruntime",
                         progress=False)
    return net, qm, rng.standard_normal((16, 3, 16, 16)).astype(np.float32)


def with_clamps(qm):
    """A copy of ``qm`` whose clamps do something: a conv clamp (5, 180), a linear clamp (3, 100), an add
    with ReLU and z_y = 20, and after the max pool a qclamp [2, 150] with a per-channel top, a qflatten of
    dims 2..3 and a qreshape back."""
    g = qm.graph.copy()
    rep = dataclasses.replace
    for name, kw in (("c1", dict(clamp=(5, 180))), ("fc1", dict(clamp=(3, 100)))):
        n = g.node(name)
        g.replace_node(name, Node(n.name, n.op, n.inputs, rep(n.attrs, **kw), n.params, n.shape, n.source))
    a = g.node("add")
    g.replace_node("add", Node(a.name, a.op, a.inputs, rep(a.attrs, relu=True, y_zp=20), a.params, a.shape, a.source))
    for name, kw in (("se", dict(x_zp=20)), ("relu:dequantize", dict(zero_point=20))):   # the readers of add
        n = g.node(name)
        g.replace_node(name, Node(n.name, n.op, n.inputs, rep(n.attrs, **kw), n.params, n.shape, n.source))
    hi = np.array([40, 255, 90, 120, 60, 200, 30, 255], np.uint8)
    g.insert_after("mp", Node("mp_clamp", "qclamp", ["mp"], ops.QClampAttrs(2, 150, "test"), {"hi_channels": hi}))
    g.insert_after("mp_clamp", Node("mp_flat", "qflatten", ["mp_clamp"], minquant.graph.FlattenAttrs(2, 3)))
    g.insert_after("mp_flat", Node("mp_back", "qreshape", ["mp_flat"], minquant.graph.ReshapeAttrs((8, 8, 8))))
    return QuantizedModel(g, "onnxruntime")


# ---------------------------------------------------------------------------------------------------------
# 1. static int8 models: bit for bit
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_tinycnn_static_bit_exact(tiny_static, fmt, tmp_path):
    _, qm, x = tiny_static
    path = to_onnx(qm, tmp_path / f"tiny_{fmt}.onnx", format=fmt)
    onnx.checker.check_model(onnx.load(str(path)))
    assert not (tmp_path / f"tiny_{fmt}.onnx.tmp").exists()
    y = ort_run(path, x, tmp_path / "opt.onnx")
    ref = qm(x)
    assert_not_saturated(qm, x)
    assert np.array_equal(y, ref), f"{int((y != ref).sum())} of {y.size} logits differ"
    used = optimized_ops(tmp_path / "opt.onnx")      # what ORT actually ran: the integer kernels
    assert used["QLinearConv"] == 2 and used["QGemm"] == 1 and used["QLinearAveragePool"] == 1
    assert "Conv" not in used and "Gemm" not in used


def test_default_fbgemm_model_runs_as_its_onnxruntime_emulation(digits_model, tmp_path):
    """A model quantized for another emulation (the default, 'fbgemm') exports the same numbers; ORT then
    computes what ``QuantizedModel(qm.graph, target="onnxruntime")`` computes — not the fbgemm result."""
    model, (x_train, _, x_test, _) = digits_model
    qm = quantize_static(model, x_train[:256], progress=False)
    assert qm.target.framework == "fbgemm"
    y = ort_run(to_onnx(qm, tmp_path / "fb.onnx", format="qoperator"), x_test)
    assert np.array_equal(y, QuantizedModel(qm.graph, target="onnxruntime")(x_test))


@pytest.mark.parametrize("fmt", FORMATS)
def test_mobilenet_v2_static_bit_exact(mobilenet, fmt, tmp_path):
    _, qm, x = mobilenet
    path = qm.to_onnx(tmp_path / f"mv2_{fmt}.onnx", format=fmt)
    y = ort_run(path, x, tmp_path / "opt.onnx")
    ref = qm(x)
    assert_not_saturated(qm, x)
    assert np.array_equal(y, ref), f"{int((y != ref).sum())} of {y.size} logits differ"
    used = optimized_ops(tmp_path / "opt.onnx")
    assert used["QLinearConv"] == 52 and used["QLinearAdd"] == 10 and used["QLinearGlobalAveragePool"] == 1
    assert used["QGemm"] == 1 and "Conv" not in used
    # int8 file ≈ a quarter of the float one (weights dominate)
    fp32 = to_onnx(mobilenet[0], tmp_path / "fp32.onnx")
    assert path.stat().st_size < 0.3 * fp32.stat().st_size


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_static_op_bit_exact(small, fmt, tmp_path):
    _, qm, x = small
    path = to_onnx(qm, tmp_path / "small.onnx", format=fmt)
    y = ort_run(path, x, tmp_path / "opt.onnx")
    assert np.array_equal(y, qm(x)), f"{int((y != qm(x)).sum())} of {y.size} differ"
    used = optimized_ops(tmp_path / "opt.onnx")
    for op in ("QLinearConv", "QLinearConcat", "QLinearAveragePool", "QLinearAdd", "QGemm"):
        assert used[op] >= 1, f"{op} not run by ORT: {dict(used)}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_code_clamps_bit_exact(small, fmt, tmp_path):
    """Non-trivial clamps on codes (layer clamps, add+ReLU with z_y > 0, qclamp with hi_channels) and
    code reshapes: Clip/Min on uint8 (QOperator) or in float between DQ and Q (QDQ) — both exact."""
    _, qm, x = small
    qm2 = with_clamps(qm)
    ref = qm2(x)
    assert not np.array_equal(ref, qm(x))      # the clamps change the output...
    path = to_onnx(qm2, tmp_path / "clamps.onnx", format=fmt)
    y = ort_run(path, x)
    assert np.array_equal(y, ref), f"{int((y != ref).sum())} of {y.size} differ"
    ops_in_file = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops_in_file["Min"] == 1 and ops_in_file["Clip"] >= 4


@pytest.mark.parametrize("fmt", FORMATS)
def test_layer_clamp_hi_per_channel(fmt, tmp_path, monkeypatch):
    """``clamp_hi`` (uint8 per output channel) on a qconv2d: y = min(clamp(y), clamp_hi[c]) — written as
    Min with a (1, O, 1, 1) tensor. If the op spec has no clamp_hi yet, the test adds it to the spec and
    computes the expected codes from the layer without it."""
    spec = OPS["qconv2d"]
    native = "clamp_hi" in dict(spec.optional)
    if not native:
        monkeypatch.setitem(OPS, "qconv2d", dataclasses.replace(spec, optional=spec.optional + (("clamp_hi", 1),)))
    rng = np.random.default_rng(3)
    w = rng.integers(-60, 61, (6, 4, 3, 3)).astype(np.int8)
    params = {"weight": w, "w_scale": np.full(6, 0.01, np.float32), "w_zp": np.zeros(6, np.int8),
              "bias": rng.normal(0, 0.1, 6).astype(np.float32)}
    attrs = ops.QConv2dAttrs(padding=(1, 1), x_scale=0.05, x_zp=100, y_scale=0.04, y_zp=60, clamp=(60, 255),
                             activation="relu6")
    hi = np.array([70, 255, 100, 61, 200, 90], np.uint8)

    def model(clamp_hi):
        p = dict(params, clamp_hi=hi) if clamp_hi else params
        nodes = [Node("q", "quantize", ["x"], ops.QuantizeAttrs(0.05, 100)), Node("conv", "qconv2d", ["q"], attrs, p),
                 Node("dq", "dequantize", ["conv"], ops.QuantizeAttrs(0.04, 60))]
        return QuantizedModel(Graph(["x"], nodes, ["dq"], {"x": (1, 4, 9, 9)}, "clamp_hi"), "onnxruntime")

    x = rng.normal(0, 2, (3, 4, 9, 9)).astype(np.float32)
    if native:
        ref = model(True)(x)
    else:
        _, raw = model(False).run(x, intermediates=True, raw=True)
        codes = np.minimum(raw["conv"], hi.reshape(1, -1, 1, 1))
        ref = minquant.dequantize(codes, 0.04, 60)
    path = to_onnx(model(True), tmp_path / "m.onnx", format=fmt)
    assert collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)["Min"] == 1
    y = ort_run(path, x)
    assert np.array_equal(y, ref), f"{int((y != ref).sum())} of {y.size} differ"
    assert np.any(y != ort_run(to_onnx(model(False), tmp_path / "n.onnx", format=fmt), x))


@pytest.mark.parametrize("fmt", FORMATS)
def test_qclamp_top_below_floor(fmt, tmp_path):
    """``qclamp`` takes the per-channel top first, then clips: a top under ``lo`` gives ``lo``. The file
    (clip, then Min) raises such tops to ``lo`` so that it computes the same; read back, it is the same
    qclamp again."""
    from minquant.interop.onnx.importer import from_onnx_quantized
    hi = np.array([30, 255, 100, 70], np.uint8)              # channel 0: top 30 < lo 60
    nodes = [Node("q", "quantize", ["x"], ops.QuantizeAttrs(0.05, 100)),
             Node("cl", "qclamp", ["q"], ops.QClampAttrs(60, 200), {"hi_channels": hi}),
             Node("dq", "dequantize", ["cl"], ops.QuantizeAttrs(0.05, 100))]
    qm = QuantizedModel(Graph(["x"], nodes, ["dq"], {"x": (1, 4, 5, 5)}, "qclamp"), "onnxruntime")
    x = np.random.default_rng(4).normal(0, 3, (3, 4, 5, 5)).astype(np.float32)
    ref = qm(x)
    assert np.all(ref[:, 0] == minquant.dequantize(np.uint8(60), 0.05, 100))
    path = to_onnx(qm, tmp_path / "m.onnx", format=fmt)
    y = ort_run(path, x)
    assert np.array_equal(y, ref), f"{int((y != ref).sum())} of {y.size} differ"
    back = from_onnx_quantized(path)
    assert [n.op for n in back.graph.nodes] == ["quantize", "qclamp", "dequantize"]
    assert np.array_equal(back(x), ref)


@pytest.mark.parametrize("fmt", FORMATS)
def test_int32_bias_written_as_is(fmt, tmp_path):
    """A qconv2d / qlinear ``bias`` may be int32 (from_onnx_quantized keeps a file's int32 bias that float32 cannot
    represent): the file holds exactly those integers — not a re-quantization — and ORT adds them as the
    emulation does. The large values (≫ 2^24, on tiny s_x·s_w) have no float32 preimage."""
    rng = np.random.default_rng(5)
    bc = np.array([2 ** 26 + 3, -(2 ** 27) - 5, 1234, -77, 0, 999], np.int32)
    bl = np.array([2 ** 25 + 1, -3, 77], np.int32)
    wsc = np.array([1e-7, 1e-7, 1e-3, 1e-3, 1e-3, 2e-3], np.float32)
    conv = Node("conv", "qconv2d", ["q"], ops.QConv2dAttrs(padding=(1, 1), x_scale=0.02, x_zp=128, y_scale=0.05,
                                                           y_zp=128),
                {"weight": rng.integers(-127, 128, (6, 3, 3, 3)).astype(np.int8), "w_scale": wsc,
                 "w_zp": np.zeros(6, np.int8), "bias": bc})
    flat = Node("flat", "qflatten", ["conv"], minquant.graph.FlattenAttrs(1, -1))
    fc = Node("fc", "qlinear", ["flat"], ops.QLinearAttrs(x_scale=0.05, x_zp=128, y_scale=0.5, y_zp=128),
              {"weight": rng.integers(-127, 128, (3, 6 * 16)).astype(np.int8),
               "w_scale": np.array([2e-8, 1e-3, 1e-3], np.float32), "w_zp": np.zeros(3, np.int8), "bias": bl})
    nodes = [Node("q", "quantize", ["x"], ops.QuantizeAttrs(0.02, 128)), conv, flat, fc,
             Node("dq", "dequantize", ["fc"], ops.QuantizeAttrs(0.5, 128))]
    qm = QuantizedModel(Graph(["x"], nodes, ["dq"], {"x": (1, 3, 4, 4)}, "int32_bias"), "onnxruntime")
    x = rng.standard_normal((8, 3, 4, 4)).astype(np.float32)
    ref = qm(x)
    assert_not_saturated(qm, x)
    path = to_onnx(qm, tmp_path / "b.onnx", format=fmt)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    assert np.array_equal(inits["conv.bias_quantized"], bc) and inits["conv.bias_quantized"].dtype == np.int32
    assert np.array_equal(inits["fc.bias_quantized"], bl)
    y = ort_run(path, x)
    assert np.array_equal(y, ref), f"{int((y != ref).sum())} of {y.size} differ"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_static_op_reads_back(small, fmt, tmp_path):
    """to_onnx → from_onnx_quantized of the every-op model and of its clamped variant: the same numbers as ORT on the
    file and as the model, and the same nodes — float fallbacks included (hardswish / hardsigmoid /
    batch_norm / a non-global adaptive pool come back from the float32 sequences the exporter writes for
    them), clamps included (back into the layers' ``clamp``, qadd's ReLU, one qclamp with its top)."""
    from minquant.interop.onnx.importer import from_onnx_quantized
    _, qm, x = small
    back = from_onnx_quantized(to_onnx(qm, tmp_path / "small.onnx", format=fmt))
    assert collections.Counter(n.op for n in back.graph.nodes) == collections.Counter(n.op for n in qm.graph.nodes)
    assert np.array_equal(back(x), qm(x))
    assert np.array_equal(back(x), ort_run(tmp_path / "small.onnx", x))
    qm2 = with_clamps(qm)
    back = from_onnx_quantized(to_onnx(qm2, tmp_path / "clamps.onnx", format=fmt))
    assert np.array_equal(back(x), qm2(x))
    g = back.graph
    assert g.node("c1").attrs.clamp == (5, 180) and g.node("fc1").attrs.clamp == (3, 100)
    assert g.node("add").attrs.relu and g.node("add").attrs.y_zp == 20
    cl = [n for n in g.nodes if n.op == "qclamp"]
    assert len(cl) == 1 and (cl[0].attrs.lo, cl[0].attrs.hi) == (2, 150)
    assert np.array_equal(cl[0].params["hi_channels"], qm2.graph.node("mp_clamp").params["hi_channels"])


# ---------------------------------------------------------------------------------------------------------
# 2. float graphs
# ---------------------------------------------------------------------------------------------------------
def test_float_graphs_within_1e4(digits_model, mobilenet, small, tmp_path):
    model, (_, _, x_test, _) = digits_model
    cases = [(minquant.from_torch(model, (1, 1, 28, 28)), x_test[:64]),
             (mobilenet[0], mobilenet[2]),
             (minquant.from_torch(small[0], (1, 3, 16, 16)), small[2])]
    for g, x in cases:
        path = to_onnx(g, tmp_path / f"{g.name}.onnx")
        y, ref = ort_run(path, x), minquant.run(g, x)
        assert np.abs(ref).max() > 0.1 and np.ptp(ref) > 0.1     # a non-trivial output
        err = float(np.abs(y - ref).max())
        assert err < 1e-4, f"{g.name}: max |ORT − minquant| = {err}"
    ops_in_file = {n.op_type for n in onnx.load(str(tmp_path / "SmallNet.onnx")).graph.node}
    assert {"HardSwish", "HardSigmoid", "BatchNormalization", "Concat", "AveragePool", "MaxPool"} <= ops_in_file


# ---------------------------------------------------------------------------------------------------------
# 3. dynamic quantization
# ---------------------------------------------------------------------------------------------------------
def _one_node(qm, name, x):
    """Node ``name`` of ``qm`` alone, fed with the value it reads when ``qm`` runs on ``x``."""
    _, vals = qm.run(x, intermediates=True)
    n = qm.graph.node(name)
    inp = vals[n.inputs[0]]
    g = Graph(["x"], [Node(n.name, n.op, ["x"], n.attrs, n.params)], [n.name], {"x": (1,) + inp.shape[1:]}, name)
    return QuantizedModel(g, "onnxruntime"), inp


def test_dynamic_nodes_bit_exact(digits_model, tmp_path):
    """dynamic_linear → DynamicQuantizeLinear + MatMulInteger + Cast + Mul + Add (ORT fuses it into
    DynamicQuantizeMatMul) and dynamic_conv2d → … ConvInteger …: each node alone, fed the same input,
    gives minquant's 'onnxruntime' result bit for bit. ORT's ConvInteger accumulates exactly in int32 (no
    u8×s8 pair saturation): the test also checks it against minquant's dynamic conv with saturate_pairs
    forced off."""
    from minquant.target import resolve_linear
    from minquant.kernels.dynamic import dynamic_conv2d
    model, (_, _, x_test, _) = digits_model
    qm = quantize_dynamic(model, input_shape=(1, 1, 28, 28), target="onnxruntime")
    x = x_test[:16]
    one, inp = _one_node(qm, "classifier", x)
    y = ort_run(to_onnx(one, tmp_path / "lin.onnx"), inp, tmp_path / "opt.onnx")
    assert np.array_equal(y, one(inp))
    assert optimized_ops(tmp_path / "opt.onnx")["DynamicQuantizeMatMul"] == 1

    one, inp = _one_node(qm, "features.0", x)
    y = ort_run(to_onnx(one, tmp_path / "conv.onnx"), inp)
    n = one.graph.node("features.0")
    w = n.params["weight"]
    a = n.attrs
    exact = dynamic_conv2d(inp, w, n.params["w_scale"], 0, n.params["bias"], stride=a.stride, padding=a.padding,
                           dilation=a.dilation, groups=a.groups, reduce_range=a.reduce_range, relu=a.relu,
                           target=dataclasses.replace(resolve_linear("onnxruntime"), saturate_pairs=False))
    assert np.array_equal(y, exact)
    assert np.array_equal(y, one(inp)), f"{int((y != one(inp)).sum())} of {y.size} differ"


# ---------------------------------------------------------------------------------------------------------
# 4. errors
# ---------------------------------------------------------------------------------------------------------
def test_unsupported_and_bad_input_raise(small, tmp_path):
    g = Graph(["x"], [Node("pool", "adaptive_avg_pool2d", ["x"], minquant.graph.AdaptiveAvgPool2dAttrs((3, 3)))],
              ["pool"], {"x": (1, 2, 8, 8)}, "bad")
    with pytest.raises(ValueError, match=r"'pool'.*adaptive_avg_pool2d|adaptive_avg_pool2d.*'pool'"):
        to_onnx(g, tmp_path / "bad.onnx")
    assert not list(tmp_path.iterdir())        # nothing written
    g = Graph(["x"], [Node("avg", "avg_pool2d", ["x"], minquant.graph.AvgPool2dAttrs(2, 2, divisor_override=3))],
              ["avg"], {"x": (1, 2, 8, 8)}, "bad")
    with pytest.raises(ValueError, match="avg_pool2d.*divisor_override"):
        to_onnx(g, tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match="format"):
        to_onnx(small[1], tmp_path / "x.onnx", format="qlinear")
    with pytest.raises(ValueError, match="QuantizedModel or Graph"):
        to_onnx(small[0], tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="opset"):
        to_onnx(small[1], tmp_path / "x.onnx", opset=9)
    bad = small[1].graph.copy()
    n = bad.node("c1")
    bad.replace_node("c1", Node(n.name, n.op, n.inputs, n.attrs, dict(n.params, w_zp=np.ones(8, np.int8)),
                                n.shape, n.source))
    with pytest.raises(ValueError, match="'c1'.*zero point"):
        to_onnx(QuantizedModel(bad, "onnxruntime"), tmp_path / "x.onnx")
