"""minquant.interop.onnx.importer.from_onnx (float) and from_onnx_quantized against ONNX Runtime (CPU EP, default
session options, one thread).

Float imports must match ORT within 1e-4; quantized imports (QDQ, QOperator, quantize_dynamic) must match
bit for bit (np.array_equal) and run on minquant's integer kernels. The ONNX files are made once per session
(torch.onnx.export with the legacy exporter — the dynamo exporter needs onnxscript, not installed — and
onnxruntime.quantization). Larger runs: benchmarks/onnx_import_check.py.
"""
from __future__ import annotations

import collections

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as oh  # noqa: E402
from onnx import numpy_helper as onh  # noqa: E402

import minquant  # noqa: E402
from minquant.interop.onnx.importer import OnnxGraph, from_onnx, from_onnx_quantized, fuse_qdq, load_onnx  # noqa: E402
from minquant.frameworks.ort_oracle import ort_quantize, ort_runner  # noqa: E402
from minquant.frameworks.torch_oracle import export_onnx  # noqa: E402
from minquant.quantized import QuantizedModel  # noqa: E402

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------
def make_model(nodes, inits, in_shape, opset=17, out="y", ms=False, out_shape=None):
    """A float ONNX model from onnx.helper nodes; initializers given as {name: array}; input 'x'.
    ``ms``: also import the com.microsoft domain (QLinearAveragePool...; then give ``out_shape``, which ONNX
    shape inference cannot work out through those ops)."""
    g = oh.make_graph(nodes, "test", [oh.make_tensor_value_info("x", TP.FLOAT, in_shape)],
                      [oh.make_tensor_value_info(out, TP.FLOAT, out_shape)],
                      initializer=[onh.from_array(np.asarray(v), k) for k, v in inits.items()])
    opsets = [oh.make_opsetid("", opset)] + ([oh.make_opsetid("com.microsoft", 1)] if ms else [])
    m = oh.make_model(g, opset_imports=opsets)
    m.ir_version = 9
    m = onnx.shape_inference.infer_shapes(m)          # fills the output's shape, which the checker requires
    onnx.checker.check_model(m)
    return m


def ops_of(m):
    g = m.graph if isinstance(m, QuantizedModel) else m
    return collections.Counter(n.op for n in g.nodes)


@pytest.fixture(scope="session")
def files(tmp_path_factory, digits_model):
    """ONNX files built once: TinyCNN float / QDQ / QOperator / dynamic, MobileNetV2 float / QDQ."""
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet
    d = tmp_path_factory.mktemp("onnx_import")
    model, (x_tr, _, x_te, _) = digits_model
    out = {"tiny": export_onnx(model, (1, 1, 28, 28), d / "tiny.onnx"), "x_digits": x_te[:120]}
    for fmt in ("qdq", "qoperator", "dynamic"):
        out[f"tiny_{fmt}"] = ort_quantize(out["tiny"], x_tr[:16], d / f"tiny_{fmt}.onnx", fmt)
    out["mnv2"] = export_onnx(mobilenet_v2_imagenet(), (1, 3, 224, 224), d / "mnv2.onnx")
    out["mnv2_qdq"] = ort_quantize(out["mnv2"], photo_crops(8, split="calib"), d / "mnv2_qdq.onnx")
    out["x_photos"] = photo_crops(3, split="eval")
    return out


# ---------------------------------------------------------------------------------------------------------
# 1. float models
# ---------------------------------------------------------------------------------------------------------
def test_float_tinycnn_and_mobilenet_v2(files):
    for key, x, expect in (("tiny", files["x_digits"][:40], {"conv2d": 2, "linear": 1, "relu": 2}),
                           ("mnv2", files["x_photos"][:2], {"conv2d": 52, "relu6": 35, "add": 10, "linear": 1})):
        g = from_onnx(files[key])
        assert isinstance(g, minquant.Graph)
        ops = ops_of(g)
        assert all(ops[k] == v for k, v in expect.items()), ops
        y, want = minquant.run(g, x), ort_runner(files[key])(x)
        assert y.shape == want.shape
        assert np.abs(y - want).max() <= 1e-4
        assert np.abs(want).max() > 1.0                  # logits, not a degenerate output


W = np.random.default_rng(0)


def _w(*shape):
    return (W.standard_normal(shape) * 0.5).astype(np.float32)


def _float_cases():
    n = oh.make_node
    c = np.float32
    return {
        # name: (nodes, initializers, input shape, an op the import must produce)
        "conv_groups_stride_pad_dil": ([n("Conv", ["x", "w", "b"], ["y"], group=2, strides=[2, 1],
                                          pads=[1, 2, 1, 2], dilations=[1, 2])],
                                       {"w": _w(6, 2, 3, 3), "b": _w(6)}, [2, 4, 9, 10], "conv2d"),
        "conv_same_upper_no_bias": ([n("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER")],
                                    {"w": _w(3, 4, 3, 3)}, [2, 4, 7, 7], "conv2d"),
        "gemm_transB0_alpha_beta": ([n("Flatten", ["x"], ["f"]),
                                     n("Gemm", ["f", "w", "b"], ["y"], alpha=0.5, beta=2.0)],
                                    {"w": _w(48, 5), "b": _w(1, 5)}, [3, 3, 4, 4], "linear"),
        "gemm_transB1": ([n("Gemm", ["x", "w", "b"], ["y"], transB=1)], {"w": _w(5, 12), "b": _w(5)}, [3, 12],
                         "linear"),
        "matmul_add_bias": ([n("MatMul", ["x", "w"], ["m"]), n("Add", ["m", "b"], ["y"])],
                            {"w": _w(12, 5), "b": _w(5)}, [3, 12], "linear"),
        "matmul_rank3": ([n("MatMul", ["x", "w"], ["m"]), n("Add", ["b", "m"], ["y"])],
                         {"w": _w(12, 5), "b": _w(5)}, [2, 3, 12], "linear"),
        "batchnorm": ([n("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
                      {"s": _w(4), "b": _w(4), "m": _w(4), "v": np.abs(_w(4)) + 0.1}, [2, 4, 5, 5], "batch_norm"),
        "relu": ([n("Relu", ["x"], ["y"])], {}, [2, 4, 5, 5], "relu"),
        "clip_relu6": ([n("Clip", ["x", "lo", "hi"], ["y"])], {"lo": c(0), "hi": c(6)}, [2, 4, 5, 5], "relu6"),
        "clip_min_only": ([n("Clip", ["x", "lo"], ["y"])], {"lo": c(0)}, [2, 4, 5, 5], "relu"),
        "clip_general": ([n("Clip", ["x", "lo", "hi"], ["y"])], {"lo": c(-0.7), "hi": c(1.5)}, [2, 4, 5, 5],
                         "clip"),
        "clip_max_only": ([n("Clip", ["x", "", "hi"], ["y"])], {"hi": c(0.3)}, [2, 4, 5, 5], "clip"),
        "add_two_activations": ([n("Relu", ["x"], ["r"]), n("Add", ["x", "r"], ["y"])], {}, [2, 4, 5, 5], "add"),
        "add_channel_constant": ([n("Add", ["x", "b"], ["y"])], {"b": _w(1, 4, 1, 1)}, [2, 4, 5, 5],
                                 "batch_norm"),
        "mul_scalar_constant": ([n("Mul", ["k", "x"], ["y"])], {"k": c(-1.75)}, [2, 4, 5, 5], "batch_norm"),
        "mul_broadcast_se": ([n("GlobalAveragePool", ["x"], ["g"]), n("Mul", ["x", "g"], ["y"])], {},
                             [2, 4, 5, 5], "mul"),
        "global_avg_pool": ([n("GlobalAveragePool", ["x"], ["y"])], {}, [2, 4, 5, 6], "adaptive_avg_pool2d"),
        "avg_pool_pad_exclude": ([n("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                    pads=[1, 1, 1, 1])], {}, [2, 4, 9, 8], "avg_pool2d"),
        "avg_pool_pad_include": ([n("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], strides=[1, 2],
                                    pads=[1, 1, 1, 1], count_include_pad=1)], {}, [2, 4, 9, 8], "avg_pool2d"),
        "avg_pool_ceil": ([n("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)],
                          {}, [2, 4, 7, 7], "avg_pool2d"),
        "avg_pool_whole_image": ([n("AveragePool", ["x"], ["y"], kernel_shape=[5, 6])], {}, [2, 4, 5, 6],
                                 "adaptive_avg_pool2d"),
        "max_pool_pad": ([n("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
                         {}, [2, 4, 9, 8], "max_pool2d"),
        "max_pool_dilation_ceil": ([n("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2],
                                      ceil_mode=1)], {}, [2, 4, 9, 8], "max_pool2d"),
        "flatten": ([n("Flatten", ["x"], ["y"])], {}, [2, 4, 3, 3], "flatten"),
        "reshape": ([n("Reshape", ["x", "s"], ["y"])], {"s": np.array([0, 2, -1], np.int64)}, [2, 4, 3, 3],
                    "reshape"),
        "concat_axis_minus1": ([n("Relu", ["x"], ["r"]), n("Concat", ["x", "r"], ["y"], axis=-1)], {},
                               [2, 4, 3, 3], "cat"),
        "concat_channels": ([n("Relu", ["x"], ["r"]), n("Concat", ["r", "x", "r"], ["y"], axis=1)], {},
                            [2, 4, 3, 3], "cat"),
        "hardsigmoid_torch": ([n("HardSigmoid", ["x"], ["y"], alpha=1 / 6, beta=0.5)], {}, [2, 4, 5, 5],
                              "hardsigmoid"),
        "hardsigmoid_default": ([n("HardSigmoid", ["x"], ["y"])], {}, [2, 4, 5, 5], "clip"),
        "hardswish": ([n("HardSwish", ["x"], ["y"])], {}, [2, 4, 5, 5], "hardswish"),
        "identity_dropout": ([n("Identity", ["x"], ["i"]), n("Dropout", ["i"], ["d"]), n("Relu", ["d"], ["y"])],
                             {}, [2, 4, 5, 5], "relu"),
    }


@pytest.mark.parametrize("case", sorted(_float_cases()))
def test_float_op(case):
    nodes, inits, shape, expect_op = _float_cases()[case]
    m = make_model(nodes, inits, ["n"] + shape[1:])
    g = from_onnx(m)
    assert expect_op in ops_of(g), ops_of(g)
    x = (np.random.default_rng(1).standard_normal(shape) * 3).astype(np.float32)
    y, want = minquant.run(g, x), ort_runner(m)(x)
    assert y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    assert np.std(want) > 0.1                            # the test output is not constant


def test_clip_of_opset_6_uses_attributes():
    m = make_model([oh.make_node("Clip", ["x"], ["y"], min=-0.25, max=0.5)], {}, ["n", 3, 4, 4], opset=6)
    g = from_onnx(m)
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(minquant.run(g, x), ort_runner(m)(x))


# ---------------------------------------------------------------------------------------------------------
# 2. quantized models: bit-identical to ONNX Runtime
# ---------------------------------------------------------------------------------------------------------
def _file_biases(path):
    """{ONNX output name of the fused op: the file's int32 bias} after ORT-style fusion."""
    g = OnnxGraph(load_onnx(path))
    out = {}
    for n in fuse_qdq(g):
        if n.op in ("QLinearConv", "QGemm") and n.inputs[8 if n.op == "QLinearConv" else 6]:
            out[n.outputs[0]] = g.consts[n.inputs[8 if n.op == "QLinearConv" else 6]]
    return out


def test_mobilenet_v2_qdq_bit_identical(files):
    from minquant.kernels.requantize import output_stage
    from minquant.quantized.executor import weight_qparams
    qm = from_onnx_quantized(files["mnv2_qdq"])
    assert isinstance(qm, QuantizedModel) and qm.target.framework == "onnxruntime"
    ops = ops_of(qm)
    # what ORT runs after its optimizer: 52 QLinearConv, 10 QLinearAdd, QLinearGlobalAveragePool, QGemm
    assert ops["qconv2d"] == 52 and ops["qadd"] == 10 and ops["qadaptive_avg_pool2d"] == 1 and ops["qlinear"] == 1
    assert not {"conv2d", "linear", "add", "relu6", "clip"} & set(ops)          # integer kernels only
    x = files["x_photos"]
    y, want = qm(x), ort_runner(files["mnv2_qdq"])(x)
    assert np.array_equal(y, want)
    assert len(np.unique(want)) > 100                                            # real logits
    # the int32 bias each output stage adds is exactly the file's
    biases = _file_biases(files["mnv2_qdq"])
    assert len(biases) == 53
    for node in qm.graph.nodes:
        if node.op in ("qconv2d", "qlinear"):
            a = node.attrs
            ws, _ = weight_qparams(node)
            st = output_stage(node.params["weight"].shape[0], a.x_scale, ws, node.params["bias"], a.y_scale, a.y_zp,
                              target="onnxruntime")
            assert np.array_equal(st.bias_q, biases[node.name]), node.name


@pytest.mark.parametrize("fmt", ["qdq", "qoperator", "dynamic"])
def test_tinycnn_quantized_formats_bit_identical(files, fmt, tmp_path):
    qm = from_onnx_quantized(files[f"tiny_{fmt}"])
    ops = ops_of(qm)
    if fmt == "dynamic":   # DynamicQuantizeLinear → ConvInteger/MatMulInteger chains
        assert ops["dynamic_conv2d"] == 2 and ops["dynamic_linear"] == 1
    else:
        assert ops["qconv2d"] == 2 and ops["qlinear"] == 1 and ops["qavg_pool2d"] == 1
    run = ort_runner(files[f"tiny_{fmt}"])
    x = files["x_digits"]
    for i in range(0, len(x), 60):                   # dynamic qparams are per batch: same batches on both
        assert np.array_equal(qm(x[i:i + 60]), run(x[i:i + 60]))
    # a saved and reloaded model computes the same bits (the pool's output qparams survive JSON)
    qm2 = minquant.quantized.load(qm.save(tmp_path / f"{fmt}.mq.npz"))
    assert np.array_equal(qm2(x[:30]), qm(x[:30]))


def test_compare_float_and_quantized_imports(files):
    """Each quantized value remembers the float tensor its QuantizeLinear read, so minquant's per-layer
    SQNR report lines up the float and the quantized import of the same model."""
    from minquant.quantized import compare
    report = compare(from_onnx(files["tiny"]), from_onnx_quantized(files["tiny_qdq"]), files["x_digits"][:40])
    matched = {r.float_name for r in report.layers}
    assert {"/features/features.1/Relu_output_0", "/features/features.3/Relu_output_0"} <= matched, matched
    assert report.output_sqnr_db > 15 and report.top1_agreement >= 0.9          # ORT MinMax, 16 calib


def _synthetic_float_model():
    """Conv/ReLU, Conv/HardSwish, Concat, MaxPool, residual Add, padded AveragePool, GlobalAveragePool,
    Flatten, MatMul, Gemm — the ops ORT fuses into QLinearConcat, QLinearAveragePool, QLinearMatMul, ..."""
    n = oh.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"]),
             n("Conv", ["x", "w2", "b2"], ["c2"]), n("HardSwish", ["c2"], ["hs"]),
             n("Concat", ["r1", "hs"], ["cat"], axis=1),
             n("MaxPool", ["cat"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
             n("Conv", ["mp", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1]), n("Add", ["c3", "mp"], ["add"]),
             n("AveragePool", ["add"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             n("Conv", ["ap", "w4"], ["c4"]), n("GlobalAveragePool", ["c4"], ["gap"]),
             n("Flatten", ["gap"], ["flat"]), n("MatMul", ["flat", "wm"], ["mm"]),
             n("Gemm", ["mm", "wg", "bg"], ["y"], transB=1)]
    inits = {"w1": _w(8, 3, 3, 3), "b1": _w(8), "w2": _w(8, 3, 1, 1), "b2": _w(8), "w3": _w(16, 16, 3, 3),
             "b3": _w(16), "w4": _w(16, 16, 1, 1), "wm": _w(16, 12), "wg": _w(10, 12), "bg": _w(10)}
    return make_model(nodes, inits, ["n", 3, 16, 16])


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_synthetic_quantized_ops_bit_identical(fmt, tmp_path):
    rng = np.random.default_rng(3)
    fp32 = tmp_path / "f.onnx"
    onnx.save(_synthetic_float_model(), fp32)
    path = ort_quantize(fp32, rng.standard_normal((8, 3, 16, 16)).astype(np.float32), tmp_path / "q.onnx", fmt)
    qm = from_onnx_quantized(path)
    ops = ops_of(qm)
    for op in ("qcat", "qmax_pool2d", "qadd", "qavg_pool2d", "qadaptive_avg_pool2d", "qflatten"):
        assert ops[op] == 1, (op, ops)
    assert ops["qconv2d"] == 4 and ops["qlinear"] == 2                    # QLinearMatMul and QGemm
    # HardSwish has no integer kernel in ORT either: dequantize → x·HardSigmoid(x) in float → quantize
    assert ops["dequantize"] == 2 and ops["quantize"] == 2 and ops["mul"] == 1 and ops["clip"] == 1
    x = rng.standard_normal((64, 3, 16, 16)).astype(np.float32)
    y, want = qm(x), ort_runner(path)(x)
    assert np.array_equal(y, want)
    out = qm.graph.nodes[-1].inputs[0]                      # the output codes: varied, rarely clamped
    _, vals = qm.run(x, intermediates=True, raw=True)
    assert len(np.unique(vals[out])) > 100 and np.mean((vals[out] == 0) | (vals[out] == 255)) < 0.05


def test_qdq_fusion_follows_ort(tmp_path):
    """A Relu → Q whose zero point is not 0 is not redundant: ORT then leaves the Conv in float (no
    QLinearConv), and so does the import; with zero point 0 the Relu disappears into QLinearConv."""
    n = oh.make_node
    w = (np.random.default_rng(4).integers(-127, 128, (4, 3, 3, 3))).astype(np.int8)

    def qdq_model(relu_zp):
        nodes = [n("QuantizeLinear", ["x", "xs", "xz"], ["xq"]), n("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
                 n("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0), n("Conv", ["xd", "wd"], ["c"]),
                 n("Relu", ["c"], ["r"]), n("QuantizeLinear", ["r", "ys", "yz"], ["rq"]),
                 n("DequantizeLinear", ["rq", "ys", "yz"], ["y"])]
        inits = {"xs": np.float32(0.03), "xz": np.uint8(120), "wq": w, "ws": np.full(4, 0.01, np.float32),
                 "wz": np.zeros(4, np.int8), "ys": np.float32(0.05), "yz": np.uint8(relu_zp)}
        return make_model(nodes, inits, ["n", 3, 8, 8])

    x = np.random.default_rng(5).standard_normal((8, 3, 8, 8)).astype(np.float32) * 2
    for zp, fused in ((0, True), (40, False)):
        m = qdq_model(zp)
        onnx.save(m, tmp_path / "m.onnx")
        run = ort_runner(tmp_path / "m.onnx", optimized=tmp_path / "opt.onnx")
        ort_ops = {nd.op_type for nd in onnx.load(tmp_path / "opt.onnx").graph.node}
        qm = from_onnx_quantized(m)
        assert ("QLinearConv" in ort_ops) == fused and ("qconv2d" in ops_of(qm)) == fused
        assert ("relu" in ops_of(qm)) == (not fused)
        if fused:
            assert np.array_equal(qm(x), run(x))
        else:   # float Conv: MLAS's float GEMM vs minquant's — the same codes up to a rare last-bit tie
            assert np.mean(qm(x) == run(x)) > 0.99


def test_conv_integer_accumulates_exactly(tmp_path):
    """quantize_dynamic's ConvInteger: ORT sums u8×s8 products exactly in int32. Full-range weights make
    int16 pair saturation (what MLAS's QLinearConv does on AVX2) change many outputs, so this test would
    fail if the import saturated."""
    from minquant.kernels.gemm import gemm_u8s8_reference
    from minquant.im2col import im2col_reference
    rng = np.random.default_rng(6)
    w = rng.choice(np.array([-127, -120, 110, 127], np.int8), size=(6, 8, 3, 3))
    n = oh.make_node
    nodes = [n("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             n("ConvInteger", ["xq", "w", "xz", "wz"], ["acc"], pads=[1, 1, 1, 1]),
             n("Cast", ["acc"], ["accf"], to=TP.FLOAT), n("Mul", ["xs", "ws"], ["s"]),
             n("Mul", ["accf", "s"], ["yy"]), n("Add", ["yy", "b"], ["y"])]
    m = make_model(nodes, {"w": w, "wz": np.int8(0), "ws": np.float32(0.004), "b": _w(1, 6, 1, 1)},
                   ["n", 8, 6, 6])
    qm = from_onnx_quantized(m)
    assert ops_of(qm) == {"dynamic_conv2d": 1}
    x = np.abs(rng.standard_normal((4, 8, 6, 6))).astype(np.float32) * 3   # many large codes
    y, want = qm(x), ort_runner(m)(x)
    assert np.array_equal(y, want)
    # the same products with int16 pair saturation differ: the data really saturates
    xs, xz = float(np.float32((x.max() - 0) / 255)), 0
    x_q = np.clip(np.rint(x / np.float32(xs)), 0, 255).astype(np.uint8)
    cols = im2col_reference(x_q.transpose(0, 2, 3, 1), 3, 3, 1, 1, 1, pad_value=xz)
    wm = w.transpose(0, 2, 3, 1).reshape(6, -1)
    sat = gemm_u8s8_reference(cols, wm, xz, 0, saturate_pairs=True)
    exact = gemm_u8s8_reference(cols, wm, xz, 0, saturate_pairs=False)
    assert np.mean(sat != exact) > 0.05


def test_int32_bias_beyond_float32_is_kept_exactly(tmp_path):
    """A QLinearConv bias with no float32 preimage (|b| ≫ 2^23 on a tiny scale s_x·s_w) is stored as the
    file's int32 (the output stage adds integer biases as given); ordinary biases stay float32."""
    from minquant.affine import quantize_bias
    n = oh.make_node
    rng = np.random.default_rng(7)
    b = np.array([2 ** 26 + 3, -(2 ** 27) - 5, 1234, -77], np.int32)
    ws = np.array([1e-7, 1e-7, 1e-3, 1e-3], np.float32)
    nodes = [n("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             n("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["yq"], pads=[1, 1, 1, 1]),
             n("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    inits = {"xs": np.float32(0.02), "xz": np.uint8(128), "w": rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8),
             "ws": ws, "wz": np.zeros(4, np.int8), "ys": np.float32(0.01), "yz": np.uint8(128), "b": b}
    m = make_model(nodes, inits, ["n", 2, 5, 5])
    # the float32 route would be off by a few units on the two large channels
    as_float = (b.astype(np.float64) * (np.float32(0.02) * ws).astype(np.float64)).astype(np.float32)
    assert not np.array_equal(quantize_bias(as_float, 0.02, ws, target="onnxruntime"), b)
    qm = from_onnx_quantized(m)
    bias = qm.graph.nodes[1].params["bias"]
    assert bias.dtype == np.int32 and np.array_equal(bias, b)
    x = rng.standard_normal((3, 2, 5, 5)).astype(np.float32)
    y, want = qm(x), ort_runner(m)(x)
    assert np.array_equal(y, want)
    codes = np.rint(want / 0.01) + 128
    assert len(np.unique(want)) > 10 and np.mean((codes == 0) | (codes == 255)) < 0.05
    # and back out: to_onnx writes the int32 bias as it is, so the round trip keeps it and the numbers
    from minquant.interop.onnx.exporter import to_onnx
    for fmt in ("qdq", "qoperator"):
        again = from_onnx_quantized(to_onnx(qm, tmp_path / f"again_{fmt}.onnx", format=fmt))
        assert np.array_equal(again.graph.nodes[1].params["bias"], b)
        assert np.array_equal(again(x), want)


@pytest.mark.parametrize("geometry", [dict(kernel_shape=[2, 2], strides=[2, 2]),
                                      dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])])
def test_qlinear_average_pool_rounds_like_ort(geometry):
    """QLinearAveragePool works in float32 and adds z_y before rounding; means that land on k + ½ (2×2
    windows, s_y = s_x) round differently from the textbook integer mean, so the emulation matters here."""
    from minquant.kernels.pool import qavg_pool2d
    n = oh.make_node
    nodes = [n("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             n("QLinearAveragePool", ["xq", "s", "z", "s", "z"], ["yq"], domain="com.microsoft", **geometry),
             n("DequantizeLinear", ["yq", "s", "z"], ["y"])]
    s_, z_ = np.float32(0.0625), np.uint8(101)     # exact float sums: ties are exact; odd z moves them
    m = make_model(nodes, {"s": s_, "z": z_}, ["n", 8, 12, 12], ms=True, out_shape=["n", 8, 6, 6])
    qm = from_onnx_quantized(m)
    assert ops_of(qm)["qavg_pool2d"] == 1
    codes = np.random.default_rng(9).integers(0, 256, (4, 8, 12, 12))
    x = (s_ * (codes - 101)).astype(np.float32)                          # quantizes back to `codes`
    y, want = qm(x), ort_runner(m)(x)
    assert np.array_equal(y, want)
    node = qm.graph.nodes[1]
    a = node.attrs
    textbook = qavg_pool2d(codes.astype(np.uint8), a.kernel_size, a.stride, a.padding, False,
                           a.count_include_pad, x_scale=a.x_scale, x_zp=a.x_zp, target="minquant")
    _, vals = qm.run(x, intermediates=True, raw=True)
    assert np.mean(textbook != vals[node.name]) > 0.005                   # ties really occur


def test_float_global_average_pool_sums_like_mlas():
    """The 'onnxruntime' float global average pool (used by dynamic models, where its last bit moves the
    next DynamicQuantizeLinear) equals ORT's GlobalAveragePool; minquant's float64 sum often does not.
    (The pool reads a Mul, as in a real graph: one reading the graph input directly is rewritten by ORT's
    NchwcTransformer into its blocked kernel, which sums in another order.)"""
    from minquant.float_ops import adaptive_avg_pool2d
    from minquant.quantized.executor import global_avg_pool_mlas
    m = make_model([oh.make_node("Mul", ["x", "two"], ["x2"]), oh.make_node("GlobalAveragePool", ["x2"], ["y"])],
                   {"two": np.float32(2)}, ["n", 64, 7, 7])
    x = (np.random.default_rng(10).standard_normal((4, 64, 7, 7)) * 3).astype(np.float32)
    want = ort_runner(m)(x)
    assert np.array_equal(global_avg_pool_mlas(2 * x), want)
    assert np.mean(adaptive_avg_pool2d(2 * x, 1) != want) > 0.05


def test_hardswish_fallback_is_ort_float_arithmetic():
    """Between DQ and Q a HardSwish runs in float, as ORT's x · HardSigmoid(x) — bit for bit."""
    from minquant.float_ops import hardswish
    n = oh.make_node
    nodes = [n("QuantizeLinear", ["x", "s", "z"], ["xq"]), n("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             n("HardSwish", ["xd"], ["h"]), n("QuantizeLinear", ["h", "s2", "z2"], ["hq"]),
             n("DequantizeLinear", ["hq", "s2", "z2"], ["y"])]
    qdq = make_model(nodes, {"s": np.float32(0.037), "z": np.uint8(128), "s2": np.float32(0.02),
                             "z2": np.uint8(20)}, ["n", 4, 16, 16])
    qm = from_onnx_quantized(qdq)
    x = (np.random.default_rng(11).standard_normal((8, 4, 16, 16)) * 2).astype(np.float32)
    assert np.array_equal(qm(x), ort_runner(qdq)(x))
    _, vals = qm.run(x, intermediates=True, raw=True)
    xd, h = vals[qm.graph.node("h").inputs[0]], vals["h"]                 # the float input and output
    want = ort_runner(make_model([n("HardSwish", ["x"], ["y"])], {}, ["n", 4, 16, 16]))(xd)
    assert np.array_equal(h, want)
    assert np.mean(hardswish(xd) != want) > 0.05                          # the one-op formula rounds otherwise


# ---------------------------------------------------------------------------------------------------------
# 3. round trip: minquant → minquant.interop.onnx.exporter.to_onnx → from_onnx / from_onnx_quantized
# ---------------------------------------------------------------------------------------------------------
INTEGER_LAYERS = {"qconv2d", "qlinear", "qadd", "qcat", "qmax_pool2d", "qavg_pool2d", "qadaptive_avg_pool2d"}


@pytest.fixture(scope="session")
def minquant_models(digits_model):
    """Default ``quantize_static`` models (target='fbgemm') and their float graphs, built once:
    {name: (quantized model, float graph, test input)}."""
    from minquant.data.datasets import photo_crops
    from minquant.quantized import quantize_static
    from minquant.data.zoo import mobilenet_v2_imagenet
    model, (x_tr, _, x_te, _) = digits_model
    mnv2 = mobilenet_v2_imagenet()
    return {"tiny": (quantize_static(model, x_tr[:256], progress=False), minquant.from_torch(model, (1, 1, 28, 28)),
                     x_te[:128]),
            "mnv2": (quantize_static(mnv2, photo_crops(8), progress=False),
                     minquant.from_torch(mnv2, (1, 3, 224, 224)), photo_crops(4, split="eval"))}


def _effective_clamp(node):
    """(lo, per-channel top) a qconv2d / qlinear output stage applies: clamp, then clamp_hi."""
    lo, hi = node.attrs.clamp
    top = np.full(node.params["weight"].shape[0], hi)
    if "clamp_hi" in node.params:
        top = np.minimum(top, node.params["clamp_hi"].astype(np.int64))
    return lo, top


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
@pytest.mark.parametrize("which", ["tiny", "mnv2"])
def test_minquant_export_reads_back_bit_identical(minquant_models, which, fmt, tmp_path):
    """qm → to_onnx → from_onnx_quantized computes what ORT computes on the file and what qm's 'onnxruntime'
    emulation computes, bit for bit, with the same integer layers (no float fallback appears): the uint8
    Min after a ReLU6 layer (per-channel top after equalization; every MobileNetV2 export has them) goes
    back into the layer's ``clamp_hi``."""
    from minquant.interop.onnx.exporter import to_onnx
    qm, _, x = minquant_models[which]
    assert qm.target.framework == "fbgemm"
    path = to_onnx(qm, tmp_path / f"{which}_{fmt}.onnx", format=fmt)
    back = from_onnx_quantized(path)
    y = back(x)
    want_ort = ort_runner(path)(x)
    want_mq = QuantizedModel(qm.graph, target="onnxruntime")(x)
    assert np.array_equal(y, want_ort), f"{int((y != want_ort).sum())} of {y.size} differ from ORT"
    assert np.array_equal(y, want_mq), f"{int((y != want_mq).sum())} of {y.size} differ from minquant"
    assert len(np.unique(y)) > 50                                           # real logits
    out = back.graph.node(back.graph.outputs[0]).inputs[0]
    _, raw = back.run(x, intermediates=True, raw=True)
    assert np.mean((raw[out] == 0) | (raw[out] == 255)) < 0.05              # output codes not saturated
    # the same integer layers, and nothing in float
    before, after = ops_of(qm), ops_of(back)
    assert sum(after[k] for k in INTEGER_LAYERS) == sum(before[k] for k in INTEGER_LAYERS)
    assert after["qconv2d"] == before["qconv2d"] and after["qlinear"] == before["qlinear"]
    assert set(after) <= INTEGER_LAYERS | {"quantize", "dequantize", "qflatten", "qreshape"}, after
    # layer by layer (the file names each output after its minquant node): weights and clamps
    tops = 0
    for n in qm.graph.nodes:
        if n.op in ("qconv2d", "qlinear"):
            m = back.graph.node(n.name)
            assert np.array_equal(m.params["weight"], n.params["weight"])
            (lo, top), (lo2, top2) = _effective_clamp(n), _effective_clamp(m)
            assert lo == lo2 and np.array_equal(top, top2), n.name
            tops += "clamp_hi" in n.params
    assert (tops > 0) == (which == "mnv2")                       # MobileNetV2's equalized ReLU6 tops


def test_minquant_float_graphs_read_back(minquant_models, tmp_path):
    """A float Graph (minquant.from_torch) → to_onnx → from_onnx runs within 1e-4 of the original; the
    same ops, except TinyCNN's divisible adaptive pool, which ONNX writes as an AveragePool."""
    from minquant.interop.onnx.exporter import to_onnx
    for which in ("tiny", "mnv2"):
        _, g, x = minquant_models[which]
        back = from_onnx(to_onnx(g, tmp_path / f"{which}.onnx"))
        y, want = minquant.run(back, x), minquant.run(g, x)
        assert np.abs(want).max() > 1.0
        assert np.abs(y - want).max() <= 1e-4, (which, float(np.abs(y - want).max()))
        before, after = ops_of(g), ops_of(back)
        if which == "tiny":
            before["avg_pool2d"] += before.pop("adaptive_avg_pool2d")
        assert after == before, (before, after)


def test_minquant_dynamic_and_code_ops_read_back(digits_model, tmp_path):
    """quantize_dynamic's nodes (their fused ReLU comes back into the node), a qcat whose qparams all agree
    (a plain Concat of codes in QOperator), a qclamp with a per-channel top and a float relu_clip
    (Relu → Min) survive the round trip."""
    from minquant.executor import FLOAT_KERNELS
    from minquant.graph import Graph, MaxPool2dAttrs, Node
    from minquant.interop.onnx.exporter import to_onnx
    from minquant.quantized import ops, quantize_dynamic
    model, (_, _, x_te, _) = digits_model
    qm = quantize_dynamic(model, input_shape=(1, 1, 28, 28), target="onnxruntime")
    back = from_onnx_quantized(to_onnx(qm, tmp_path / "dyn.onnx"))
    assert ops_of(back) == ops_of(qm)
    assert [n.attrs.relu for n in back.graph.nodes if n.op.startswith("dynamic")] == \
        [n.attrs.relu for n in qm.graph.nodes if n.op.startswith("dynamic")]
    assert np.array_equal(back(x_te[:40]), qm(x_te[:40]))

    top = np.array([120, 255, 90, 60], np.uint8)
    nodes = [Node("q", "quantize", ["x"], ops.QuantizeAttrs(0.05, 100)),
             Node("mp", "qmax_pool2d", ["q"], MaxPool2dAttrs(3, 1, 1)),
             Node("cat", "qcat", ["q", "mp"], ops.QCatAttrs(1, (0.05, 0.05), (100, 100), 0.05, 100)),
             Node("top", "qclamp", ["cat"], ops.QClampAttrs(0, 255), {"hi_channels": np.tile(top, 2)}),
             Node("dq", "dequantize", ["top"], ops.QuantizeAttrs(0.05, 100))]
    qm = QuantizedModel(Graph(["x"], nodes, ["dq"], {"x": (1, 4, 6, 6)}, "codes"), "onnxruntime")
    x = np.random.default_rng(12).standard_normal((3, 4, 6, 6)).astype(np.float32) * 3
    for fmt in ("qdq", "qoperator"):
        back = from_onnx_quantized(to_onnx(qm, tmp_path / f"codes_{fmt}.onnx", format=fmt))
        assert ops_of(back) == ops_of(qm), (fmt, ops_of(back))
        assert np.array_equal(back(x), qm(x))
        assert np.array_equal(back.graph.node("top").params["hi_channels"], np.tile(top, 2))

    g = Graph(["x"], [Node("r", "relu_clip", ["x"], None, {"hi": np.array([0.5, 1.0, 2.0, 6.0], np.float32)})],
              ["r"], {"x": (1, 4, 6, 6)}, "relu_clip")
    back = from_onnx(to_onnx(g, tmp_path / "relu_clip.onnx"))
    assert ops_of(back) == {"relu_clip": 1}
    assert np.array_equal(minquant.run(back, x, kernels=FLOAT_KERNELS), minquant.run(g, x, kernels=FLOAT_KERNELS))


# ---------------------------------------------------------------------------------------------------------
# 4. errors
# ---------------------------------------------------------------------------------------------------------
def test_unsupported_ops_are_named():
    n = oh.make_node
    m = make_model([n("Relu", ["x"], ["r"], name="act"), n("Sigmoid", ["r"], ["s"], name="gate"),
                    n("Softmax", ["s"], ["y"], name="probs")], {}, ["n", 4])
    with pytest.raises(ValueError, match=r"Sigmoid \(node 'gate'\).*Softmax \(node 'probs'\)"):
        from_onnx(m)
    # a QDQ Mul becomes ORT's QLinearMul, which minquant has no kernel for
    nodes = [n("QuantizeLinear", ["x", "s", "z"], ["q"]), n("DequantizeLinear", ["q", "s", "z"], ["d"]),
             n("Mul", ["d", "d"], ["m"], name="square"), n("QuantizeLinear", ["m", "s", "z"], ["mq"]),
             n("DequantizeLinear", ["mq", "s", "z"], ["y"])]
    m = make_model(nodes, {"s": np.float32(0.1), "z": np.uint8(128)}, ["n", 4])
    with pytest.raises(ValueError, match=r"QLinearMul \(node 'square'\)"):
        from_onnx_quantized(m)
    m = make_model([n("Div", ["x", "k"], ["y"], name="halve")], {"k": np.float32(2)}, ["n", 4])
    with pytest.raises(ValueError, match=r"Div \(node 'halve'\): only inside"):   # not one of the exporter's
        from_onnx(m)
    m = make_model([n("Flatten", ["x"], ["y"], axis=2, name="flat2")], {}, ["n", 2, 3, 4])
    with pytest.raises(ValueError, match=r"Flatten \(node 'flat2'\).*axis"):
        from_onnx(m)


def test_corrupt_truncated_and_foreign_files(files, tmp_path):
    data = files["tiny"].read_bytes()
    cases = {"truncated.onnx": data[: len(data) // 2], "garbage.onnx": np.random.default_rng(8).bytes(5000),
             "empty.onnx": b"", "text.onnx": b"this is not a model\n" * 20}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="not a valid ONNX|empty"):
            from_onnx(tmp_path / name)
    with pytest.raises(ValueError, match="does not exist"):
        from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="path, bytes or an onnx.ModelProto"):
        from_onnx(12345)
    assert isinstance(from_onnx(data), minquant.Graph)          # the intact bytes import fine


def test_each_import_refuses_the_other_kind(files):
    """from_onnx reads float models only and from_onnx_quantized quantized ones (QDQ, QOperator, dynamic),
    as from_torch / from_torch_quantized; each refusal names the file and the function to use instead, and
    onnx_is_quantized tells the two kinds apart (as the CLI does)."""
    import re

    from minquant.interop.onnx import onnx_is_quantized
    assert minquant.from_onnx is from_onnx and minquant.from_onnx_quantized is from_onnx_quantized
    assert onnx_is_quantized(files["tiny"]) is False
    with pytest.raises(ValueError, match=re.escape(f"{str(files['tiny'])!r} has no quantized operators; use "
                                                   "from_onnx") + "$"):
        from_onnx_quantized(files["tiny"])
    data = files["tiny"].read_bytes()
    with pytest.raises(ValueError, match="^the given bytes has no quantized operators; use from_onnx$"):
        from_onnx_quantized(data)
    for fmt in ("qdq", "qoperator", "dynamic"):
        path = files[f"tiny_{fmt}"]
        assert onnx_is_quantized(path) is True
        assert onnx_is_quantized(onnx.load(str(path))) is True
        with pytest.raises(ValueError, match=re.escape(f"{str(path)!r} has quantized operators "
                                                       "(QDQ/QOperator/dynamic); use from_onnx_quantized") + "$"):
            from_onnx(path)
        with pytest.raises(ValueError, match="^the ModelProto has quantized operators"):
            from_onnx(onnx.load(str(path)))
    with pytest.raises(ValueError, match="not a valid ONNX"):
        onnx_is_quantized(data[: len(data) // 2])


def test_cli_reads_both_kinds_of_onnx_file(files, tmp_path, capsys):
    """``minquant inspect`` lists a float and a quantized ONNX file (the importer says which kind each is);
    ``quantize`` reads a float one and refuses a quantized one, ``compare`` refuses a float one."""
    from minquant.lesson.cli import main
    assert main(["inspect", str(files["tiny"])]) == 0
    out = capsys.readouterr().out
    assert "conv2d" in out and "qconv2d" not in out and "cannot import" not in out, out
    assert main(["inspect", str(files["tiny_qdq"])]) == 0
    out = capsys.readouterr().out
    assert "qconv2d" in out and "cannot import" not in out, out
    out_file = tmp_path / "q.mq.npz"
    args = ["--calib", "digits", "--num-calib", "16", "--out", str(out_file)]
    assert main(["quantize", str(files["tiny"]), *args]) == 0 and out_file.is_file()
    capsys.readouterr()
    out_file.unlink()
    assert main(["quantize", str(files["tiny_qdq"]), *args]) == 1 and not out_file.exists()
    assert "is already a quantized model; give the float model" in capsys.readouterr().err
    assert main(["compare", str(files["tiny"]), "--float", "tinycnn", "--num", "8"]) == 1
    assert "is a float ONNX model; compare needs a quantized one" in capsys.readouterr().err
