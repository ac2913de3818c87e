"""LiteRT's HARD_SWISH, MEAN, PAD and broadcasting ADD/MUL (issue 17): minquant's kernels against the LiteRT
interpreter on each kernel path, 0 differing codes required.

    AUTO, BUILTIN (XNNPACK delegate) → "litert";  BUILTIN_WITHOUT_DEFAULT_DELEGATES → "litert-builtin";
    BUILTIN_REF (reference kernels) → "litert-ref"

One-op models are built by minquant and written with ``to_tflite`` (shapes and qparams drawn by hypothesis);
HARD_SWISH also runs on all 256 int8 codes at once. Files minquant did not write — built here with the
``tflite`` package's builders the way the TF converter lays its models out (int8 edges, SAME padding that pads
one more row at the bottom, MEAN with and without keep_dims, squeeze-excite's broadcasting MUL) — are read
with ``from_tflite``. Planted ties show that MEAN's three paths really differ (the tests can fail).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite")

from minquant.graph import Graph, Node  # noqa: E402
from minquant.interop.litert import from_tflite, tflite_bytes, to_tflite  # noqa: E402
from minquant.interop.litert.flatbuffer import (ActivationOptions, ConvOptions, DepthwiseOptions,  # noqa: E402
                                                FullyConnectedOptions, ReducerOptions, TfModel, TfOp, TfTensor,
                                                write_model)
from minquant.interop.litert.runtime import interpreter, run_tflite  # noqa: E402
from minquant.kernels import litert as L  # noqa: E402
from minquant.quantized import ops as Q  # noqa: E402
from minquant.quantized.model import QuantizedModel  # noqa: E402
from minquant.target import LITERT_PATHS, Target  # noqa: E402

#: interpreter resolver → minquant target
PATHS = {"xnnpack": "litert", "builtin+xnnpack": "litert", "builtin": "litert-builtin", "reference": "litert-ref"}
SETTINGS = dict(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
qparams = st.tuples(st.floats(0.005, 0.2), st.integers(20, 235))


def _nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def _one_op(node_fn, x_shape, target, xs, xz):
    """x → quantize (xs, xz) → node_fn("xq") → dequantize with the node's own output qparams."""
    node = node_fn("xq")
    ys, yz = Q.value_qparams(Graph(["x"], [Node("xq", "quantize", ["x"], Q.QuantizeAttrs(xs, xz)), node], [node.name],
                                   {"x": (1,) + tuple(x_shape[1:])}, "q"))[node.name]
    nodes = [Node("xq", "quantize", ["x"], Q.QuantizeAttrs(xs, xz)), node,
             Node("y", "dequantize", [node.name], Q.QuantizeAttrs(ys, yz))]
    return QuantizedModel(Graph(["x"], nodes, ["y"], {"x": (1,) + tuple(x_shape[1:])}, "one_op"), Target(target))


def _codes_in(rng, shape, xs, xz):
    """Real inputs on the codes' grid (every code reachable), as minquant's quantize will see them."""
    return (np.float32(xs) * (rng.integers(0, 256, shape) - xz)).astype(np.float32)


def _every_path(node_fn, x, xs, xz):
    """The one-op model written by minquant, on every path: interpreter == minquant == from_tflite(file)."""
    for path, target in PATHS.items():
        qm = _one_op(node_fn, x.shape, target, xs, xz)
        data = tflite_bytes(qm)
        want = qm(x)
        got = run_tflite(data, _nhwc(x), path)
        got = got.transpose(0, 3, 1, 2) if got.ndim == 4 else got
        assert got.shape == want.shape
        bad = int((got != want).sum())
        assert bad == 0, f"{path} vs {target}: {bad} of {got.size} outputs differ"
        assert np.array_equal(from_tflite(data, target=target)(x), want), f"from_tflite on {target}"


# ------------------------------------------------------------------------------------------------- HARD_SWISH
@settings(max_examples=25, deadline=None)
@given(x_qp=qparams, ratio=st.floats(0.15, 3.0), zy=st.integers(0, 255))
def test_hard_swish_all_codes_every_path(x_qp, ratio, zy):
    """All 256 int8 codes through HARD_SWISH: the three paths compute the reference kernel's fixed point."""
    xs, xz = x_qp
    ys = xs * ratio
    m = TfModel()
    a = m.add(TfTensor("x", (1, 256), "int8", scale=np.array([xs], np.float32), zero_point=np.array([xz - 128])))
    y = m.add(TfTensor("y", (1, 256), "int8", scale=np.array([ys], np.float32), zero_point=np.array([zy - 128])))
    m.ops.append(TfOp("HARD_SWISH", [a], [y]))
    m.inputs, m.outputs = [a], [y]
    data = write_model(m)
    codes = np.arange(256, dtype=np.uint8)
    want = L.hard_swish_litert(codes, xs, xz, ys, zy)
    assert np.array_equal(want, L.hard_swish_litert_reference(codes, xs, xz, ys, zy))
    for path in PATHS:
        it = interpreter(data, path)
        it.set_tensor(it.get_input_details()[0]["index"], (codes.astype(np.int16) - 128).astype(np.int8)[None])
        it.invoke()
        got = it.get_tensor(it.get_output_details()[0]["index"]).astype(np.int16).ravel() + 128
        assert int((got != want).sum()) == 0, f"{path}: {int((got != want).sum())} of 256 codes differ"


@settings(**SETTINGS)
@given(seed=st.integers(0, 2 ** 31), x_qp=qparams, c=st.integers(1, 20), h=st.integers(1, 9), w=st.integers(1, 9))
def test_hard_swish_model_every_path(seed, x_qp, c, h, w):
    rng = np.random.default_rng(seed)
    xs, xz = x_qp
    x = _codes_in(rng, (2, c, h, w), xs, xz)
    lo, hi = xs * (0 - xz), xs * (255 - xz)                 # the real range hard-swish sees
    y_lo, y_hi = min(-0.375, lo * np.clip(lo + 3, 0, 6) / 6), max(hi * np.clip(hi + 3, 0, 6) / 6, 0.1)
    ys = (y_hi - y_lo) / 255
    yz = int(np.clip(round(-y_lo / ys), 0, 255))
    _every_path(lambda src: Node("hs", "qhardswish", [src], Q.QActivationAttrs(xs, xz, ys, yz)), x, xs, xz)


def test_hard_swish_refuses_what_litert_refuses():
    with pytest.raises(ValueError, match="output scale"):
        L.hard_swish_constants(0.5, 0.001)


# ------------------------------------------------------------------------------------------------------- MEAN
@settings(**SETTINGS)
@given(seed=st.integers(0, 2 ** 31), x_qp=qparams, y_qp=qparams, c=st.integers(1, 40), h=st.integers(1, 9),
       w=st.integers(1, 9), keep=st.booleans())
def test_mean_every_path(seed, x_qp, y_qp, c, h, w, keep):
    """MEAN over H and W with qparams of its own (the output scale drawn around the input's, so that the
    codes spread), both keep_dims: the optimized kernel's own rule only with keep_dims."""
    rng = np.random.default_rng(seed)
    (xs, xz), (d, dz) = x_qp, y_qp
    x = _codes_in(rng, (1, c, h, w), xs, xz)
    # a mean of n codes spreads ~1/√n as far as the codes; the zero point puts the means mid-range
    ys = max(xs * (2.0 / np.sqrt(h * w) + d), abs(float(x.mean())) / 100)
    yz = int(np.clip(round(128 - float(x.mean()) / ys) + (dz - 128) // 16, 0, 255))
    node = Node("mean", "qmean", ["xq"], Q.QMeanAttrs(xs, xz, ys, yz, keep))
    codes = QuantizedModel(Graph(["x"], [Node("xq", "quantize", ["x"], Q.QuantizeAttrs(xs, xz)), node], ["mean"],
                                 {"x": (1, c, h, w)}, "m"), "litert-ref").run(x, intermediates=True, raw=True)[1]["mean"]
    assert codes.dtype == np.uint8
    assert codes.size < 20 or np.isin(codes, [0, 255]).mean() <= 0.1, "saturated outputs hide arithmetic"
    _every_path(lambda src: Node("mean", "qmean", [src], Q.QMeanAttrs(xs, xz, ys, yz, keep)), x, xs, xz)


def test_mean_paths_really_differ_on_ties():
    """Binary-fraction scales and 4 or 3 elements per mean put many means on exact ties: each path's
    interpreter matches its own rule and misses the other two on some outputs."""
    rng = np.random.default_rng(5)
    c = 200                                                    # twelve whole blocks of 16 and a tail of 8
    for h, w, xs, ys in ((2, 2, 2.0 ** -5, 2.0 ** -4), (1, 3, 2.0 ** -5, 5 * 2.0 ** -7)):
        x = (np.float32(xs) * rng.integers(-100, 100, (1, c, h, w))).astype(np.float32)
        xu = L.quantize_litert(x, xs, 131, "mul_rne")
        rules = {r: L.mean_litert(xu, xs, 131, ys, 122, r) for r in L.MEAN_RULES}
        for r in L.MEAN_RULES:
            assert np.array_equal(rules[r], L.mean_litert_reference(xu, xs, 131, ys, 122, r)), r
        data = tflite_bytes(_one_op(lambda src: Node("mean", "qmean", [src], Q.QMeanAttrs(xs, 131, ys, 122, True)),
                                    x.shape, "litert", xs, 131))
        for path, fw in PATHS.items():
            got = np.rint(run_tflite(data, _nhwc(x), path).transpose(0, 3, 1, 2) / np.float32(ys)) + 122
            for r, codes in rules.items():
                bad = int((got != codes).sum())
                assert (bad == 0) == (r == LITERT_PATHS[fw].mean), f"{path} vs rule {r}: {bad} differ"


def test_mean_kernels_fast_equal_reference_and_refuse():
    rng = np.random.default_rng(2)
    for shape in ((2, 37, 3, 5), (1, 16, 1, 1), (1, 5, 7, 7)):
        x = rng.integers(0, 256, shape).astype(np.uint8)
        for r in L.MEAN_RULES:
            assert np.array_equal(L.mean_litert(x, 0.05, 100, 0.02, 140, r),
                                  L.mean_litert_reference(x, 0.05, 100, 0.02, 140, r)), (shape, r)
    with pytest.raises(ValueError, match="mean rule"):
        L.mean_litert(x, 0.05, 100, 0.02, 140, "rne")
    with pytest.raises(ValueError, match="NCHW"):
        L.mean_litert(x[0], 0.05, 100, 0.02, 140, "f32")
    assert LITERT_PATHS["litert-builtin"].mean_rule(False) == "q31_reduce"
    g = Graph(["x"], [Node("xq", "quantize", ["x"], Q.QuantizeAttrs(0.1, 128)),
                      Node("m", "qmean", ["xq"], Q.QMeanAttrs(0.1, 128, 0.05, 128)),
                      Node("y", "dequantize", ["m"], Q.QuantizeAttrs(0.05, 128))], ["y"], {"x": (1, 2, 3, 3)}, "m")
    with pytest.raises(ValueError, match="LiteRT's MEAN"):
        QuantizedModel(g, "onnxruntime")(np.zeros((1, 2, 3, 3), np.float32))


# ---------------------------------------------------------------------------------- files minquant did not write
def _q(m, name, shape, s, z):
    return m.add(TfTensor(name, shape, "int8", scale=np.array([s], np.float32), zero_point=np.array([z])))


def _const_w(m, name, w, scales, qdim):
    return m.add(TfTensor(name, w.shape, "int8", w, np.asarray(scales, np.float32), np.zeros(len(scales)), qdim))


def _bias(m, name, b, x_scale, w_scales):
    return m.add(TfTensor(name, b.shape, "int32", b, (np.float32(x_scale) * np.asarray(w_scales, np.float32)),
                          np.zeros(len(w_scales))))


def _check_foreign(data, x_codes, x_scale, x_zp):
    """A model with an int8 input and output: interpreter codes == minquant's (real values in, out)."""
    real = (np.float32(x_scale) * (x_codes.astype(np.float32) - x_zp)).astype(np.float32)
    out = [t for t in (interpreter(data, "xnnpack").get_output_details())][0]
    s_y, z_y = out["quantization"]
    for path, target in PATHS.items():
        qm = from_tflite(data, target=target)
        it = interpreter(data, path)
        got = []
        for i in range(len(x_codes)):
            it.set_tensor(it.get_input_details()[0]["index"], x_codes[i:i + 1])
            it.invoke()
            got.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
        got = np.concatenate(got).astype(np.int64)
        mine = qm(real.transpose(0, 3, 1, 2) if real.ndim == 4 else real)
        mine = mine.transpose(0, 2, 3, 1) if mine.ndim == 4 else mine
        want = np.rint(mine / np.float32(s_y)).astype(np.int64) + z_y
        assert int((got != want).sum()) == 0, f"{path}: {int((got != want).sum())} of {got.size} codes differ"
        # and written back by minquant, the same codes again
        back = run_tflite(tflite_bytes(qm), np.ascontiguousarray(real.astype(np.float32)), path)
        assert np.array_equal(np.rint(back / np.float32(s_y)).astype(np.int64) + z_y, got), f"to_tflite on {path}"


def test_converter_like_model_every_path():
    """A MobileNetV3-like file in the TF converter's layout: int8 input and output, CONV_2D SAME stride 2 on an
    even size (pads one row more at the bottom), HARD_SWISH, DEPTHWISE_CONV_2D SAME stride 2, squeeze-excite
    (MEAN keep_dims → CONV_2D 1×1 → MUL broadcasting (1, 1, 1, C)), a broadcasting ADD, MEAN without keep_dims
    → FULLY_CONNECTED."""
    rng = np.random.default_rng(17)
    m = TfModel(description="converter-like")
    xi = _q(m, "input", (1, 16, 16, 3), 0.02, -5)
    w1 = rng.integers(-127, 128, (12, 3, 3, 3)).astype(np.int8)
    ws1 = rng.uniform(0.004, 0.01, 12)
    c1 = _q(m, "conv1", (1, 8, 8, 12), 0.08, -20)
    m.ops.append(TfOp("CONV_2D", [xi, _const_w(m, "w1", w1, ws1, 0),
                                  _bias(m, "b1", rng.integers(-300, 300, 12).astype(np.int32), 0.02, ws1)], [c1],
                      ConvOptions("SAME", (2, 2), (1, 1), "")))
    h1 = _q(m, "hs1", (1, 8, 8, 12), 0.04, -100)
    m.ops.append(TfOp("HARD_SWISH", [c1], [h1]))
    wd = rng.integers(-127, 128, (1, 3, 3, 12)).astype(np.int8)
    wsd = rng.uniform(0.005, 0.02, 12)
    d1 = _q(m, "dw", (1, 4, 4, 12), 0.06, 3)
    m.ops.append(TfOp("DEPTHWISE_CONV_2D", [h1, _const_w(m, "wd", wd, wsd, 3),
                                            _bias(m, "bd", rng.integers(-200, 200, 12).astype(np.int32), 0.04, wsd)],
                      [d1], DepthwiseOptions("SAME", (2, 2), (1, 1), 1, "relu6")))
    se = _q(m, "se_mean", (1, 1, 1, 12), 0.02, -90)
    axes = m.add(TfTensor("axes", (2,), "int32", np.array([1, 2], np.int32)))
    m.ops.append(TfOp("MEAN", [d1, axes], [se], ReducerOptions(True)))
    ws = rng.integers(-127, 128, (12, 1, 1, 12)).astype(np.int8)
    wss = rng.uniform(0.01, 0.03, 12)
    sc = _q(m, "se_scale", (1, 1, 1, 12), 0.05, -128)
    m.ops.append(TfOp("CONV_2D", [se, _const_w(m, "ws", ws, wss, 0),
                                  _bias(m, "bs", rng.integers(0, 1500, 12).astype(np.int32), 0.02, wss)], [sc],
                      ConvOptions("VALID", (1, 1), (1, 1), "relu")))
    mu = _q(m, "se_mul", (1, 4, 4, 12), 0.16, -60)
    m.ops.append(TfOp("MUL", [d1, sc], [mu], ActivationOptions("")))
    ad = _q(m, "add", (1, 4, 4, 12), 0.2, -40)
    m.ops.append(TfOp("ADD", [se, mu], [ad], ActivationOptions("")))
    gp = _q(m, "pool", (1, 12), 0.1, -60)
    m.ops.append(TfOp("MEAN", [ad, axes], [gp], ReducerOptions(False)))
    wf = rng.integers(-127, 128, (10, 12)).astype(np.int8)
    wsf = rng.uniform(0.01, 0.03, 10)
    yi = _q(m, "logits", (1, 10), 0.5, 4)
    m.ops.append(TfOp("FULLY_CONNECTED", [gp, _const_w(m, "wf", wf, wsf, 0),
                                          _bias(m, "bf", rng.integers(-900, 900, 10).astype(np.int32), 0.05, wsf)],
                      [yi], FullyConnectedOptions("")))
    m.inputs, m.outputs = [xi], [yi]
    data = write_model(m)
    qm = from_tflite(data)
    ops = [n.op for n in qm.graph.nodes]
    assert {"qpad", "qhardswish", "qmean", "qmul", "qadd"} <= set(ops) and ops.count("qpad") == 2
    x = rng.integers(-128, 128, (12, 16, 16, 3)).astype(np.int8)
    _check_foreign(data, x, 0.02, -5)


@settings(**SETTINGS)
@given(seed=st.integers(0, 2 ** 31), size=st.integers(3, 8), k=st.sampled_from([2, 3, 4, 5]),
       stride=st.sampled_from([1, 2, 3]), depthwise=st.booleans(), explicit_pad=st.booleans())
def test_uneven_padding_every_path(seed, size, k, stride, depthwise, explicit_pad):
    """SAME padding as LiteRT computes it (one more row / column at the bottom / right when the total is odd),
    or an explicit PAD of (0, 1) × (1, 2): a zero-point ``qpad`` before a VALID convolution."""
    rng = np.random.default_rng(seed)
    c_in, c_out = 3, (3 if depthwise else 5)
    hw = 2 * size
    m = TfModel()
    xi = _q(m, "x", (1, hw, hw, c_in), 0.03, 7)
    src, padding, in_hw = xi, "SAME", hw
    if explicit_pad:
        pi = _q(m, "padded", (1, hw + 1, hw + 3, c_in), 0.03, 7)
        pads = m.add(TfTensor("pads", (4, 2), "int32", np.array([[0, 0], [0, 1], [1, 2], [0, 0]], np.int32)))
        m.ops.append(TfOp("PAD", [xi, pads], [pi]))
        src, padding = pi, "VALID"
    if padding == "SAME":
        oh = ow = -(-hw // stride)
    else:
        oh, ow = (hw + 1 - k) // stride + 1, (hw + 3 - k) // stride + 1
    del in_hw
    ws = rng.uniform(0.004, 0.02, c_out)
    yi = _q(m, "y", (1, oh, ow, c_out), 0.05 * np.sqrt(k * k * (1 if depthwise else c_in)), -3)   # few saturate
    b = _bias(m, "b", rng.integers(-300, 300, c_out).astype(np.int32), 0.03, ws)
    if depthwise:
        w = rng.integers(-127, 128, (1, k, k, c_out)).astype(np.int8)
        m.ops.append(TfOp("DEPTHWISE_CONV_2D", [src, _const_w(m, "w", w, ws, 3), b], [yi],
                          DepthwiseOptions(padding, (stride, stride), (1, 1), 1, "")))
    else:
        w = rng.integers(-127, 128, (c_out, k, k, c_in)).astype(np.int8)
        m.ops.append(TfOp("CONV_2D", [src, _const_w(m, "w", w, ws, 0), b], [yi],
                          ConvOptions(padding, (stride, stride), (1, 1), "")))
    m.inputs, m.outputs = [xi], [yi]
    _check_foreign(write_model(m), rng.integers(-128, 128, (3, hw, hw, c_in)).astype(np.int8), 0.03, 7)


@settings(**SETTINGS)
@given(seed=st.integers(0, 2 ** 31), c=st.integers(1, 20), size=st.integers(1, 6), op=st.sampled_from(["ADD", "MUL"]),
       swap=st.booleans(), relu=st.booleans())
def test_broadcast_add_mul_every_path(seed, c, size, op, swap, relu):
    """ADD / MUL of a map (1, H, W, C) and its per-channel mean (1, 1, 1, C), either operand first."""
    rng = np.random.default_rng(seed)
    m = TfModel()
    xi = _q(m, "x", (1, size, size + 1, c), 0.04, -11)
    me = _q(m, "mean", (1, 1, 1, c), 0.03, 20)
    axes = m.add(TfTensor("axes", (2,), "int32", np.array([2, 1], np.int32)))
    m.ops.append(TfOp("MEAN", [xi, axes], [me], ReducerOptions(True)))
    yi = _q(m, "y", (1, size, size + 1, c), 0.06 if op == "ADD" else 0.09, -30)
    m.ops.append(TfOp(op, [me, xi] if swap else [xi, me], [yi], ActivationOptions("relu" if relu else "")))
    m.inputs, m.outputs = [xi], [yi]
    _check_foreign(write_model(m), rng.integers(-128, 128, (3, size, size + 1, c)).astype(np.int8), 0.04, -11)


def test_foreign_refusals_say_why():
    m = TfModel()
    xi = _q(m, "x", (1, 4, 4, 3), 0.04, 0)
    yi = _q(m, "y", (1, 4, 4, 1), 0.04, 0)
    axes = m.add(TfTensor("axes", (1,), "int32", np.array([3], np.int32)))
    m.ops.append(TfOp("MEAN", [xi, axes], [yi], ReducerOptions(True)))
    m.inputs, m.outputs = [xi], [yi]
    with pytest.raises(ValueError, match="axes 1 and 2"):
        from_tflite(write_model(m))


def test_to_tflite_writes_qpad_and_qmean(tmp_path):
    """A minquant graph with qpad (uneven) and qmean written and read back, every path equal."""
    xs, xz = 0.05, 120
    rng = np.random.default_rng(4)
    nodes = [Node("xq", "quantize", ["x"], Q.QuantizeAttrs(xs, xz)),
             Node("p", "qpad", ["xq"], Q.QPadAttrs((0, 1, 2, 1), xz)),
             Node("m", "qmean", ["p"], Q.QMeanAttrs(xs, xz, 0.02, 100, False)),
             Node("y", "dequantize", ["m"], Q.QuantizeAttrs(0.02, 100))]
    g = Graph(["x"], nodes, ["y"], {"x": (1, 6, 5, 5)}, "pad_mean")
    x = _codes_in(rng, (4, 6, 5, 5), xs, xz)
    from minquant.quantized.model import load
    for path, target in PATHS.items():
        qm = QuantizedModel(g, Target(target))
        f = to_tflite(qm, tmp_path / f"{target}.tflite")
        assert np.array_equal(run_tflite(f.read_bytes(), _nhwc(x), path), qm(x)), path
        assert np.array_equal(load(qm.save(tmp_path / f"{target}.mq.npz"))(x), qm(x))   # qpad, qmean saved
    bad = Graph(["x"], [nodes[0], Node("p", "qpad", ["xq"], Q.QPadAttrs((1, 1, 1, 1), 0)),
                        Node("y", "dequantize", ["p"], Q.QuantizeAttrs(xs, xz))], ["y"], {"x": (1, 6, 5, 5)}, "b")
    with pytest.raises(ValueError, match="zero point"):
        tflite_bytes(QuantizedModel(bad, "litert"))
