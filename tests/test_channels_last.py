"""Channels-last execution (minquant/quantized/layout.py): the NHWC entry of :class:`~minquant.kernels.QConv2d`
against the readable NCHW reference on every int8 instruction set this host has, the transposes, the plan's
shape, and whole models run with channels-last on and off — TinyCNN and MobileNetV2 from ONNX Runtime's
QOperator files and from ``quantize_static`` — bit for bit (and against ONNX Runtime on its own files)."""
from __future__ import annotations

import collections
import zlib

import numba
import numpy as np
import pytest

from minquant.kernels import QConv2d, qconv2d_reference
from minquant.kernels.simd import ISA_AVX2, ISA_AVX512BW, ISA_AVX512VNNI, ISA_NAMES, ISA_NONE, isa_available, isa_cap
from minquant.kernels.transpose import nchw_to_nhwc, nhwc_to_nchw
from minquant.quantized.layout import channels_last_graph

NOJIT = numba.config.DISABLE_JIT
ISAS = [i for i in (ISA_AVX512VNNI, ISA_AVX512BW, ISA_AVX2, ISA_NONE) if i == ISA_NONE or isa_available(i)]

# (batch, C, H, W, O, k, stride, pad, dilation, groups): 1×1 stride 1 (pixel rows read in place, C % 4 = 0 or
# not), narrow outputs (16 / 24 / 40 channels: the 16- and 32-lane tiles), more rows than one block (240),
# k×k with padding / stride / dilation (channels-last im2col), depthwise (channels-last kernel), grouped
# (NCHW kernels between transposes)
CASES = [(1, 16, 20, 20, 96, 1, 1, 0, 1, 1), (2, 24, 9, 9, 24, 1, 1, 0, 1, 1), (1, 13, 8, 8, 200, 1, 1, 0, 1, 1),
         (1, 32, 17, 17, 16, 1, 1, 0, 1, 1), (1, 40, 7, 7, 40, 1, 1, 0, 1, 1), (1, 17, 7, 9, 33, 1, 2, 0, 1, 1),
         (1, 3, 17, 17, 32, 3, 2, 1, 1, 1), (2, 6, 11, 10, 10, 3, 1, 1, 1, 1), (1, 5, 12, 12, 70, 3, 1, 2, 2, 1),
         (2, 32, 15, 15, 32, 3, 1, 1, 1, 32), (1, 40, 30, 30, 40, 3, 2, 1, 1, 40), (1, 8, 8, 8, 16, 3, 1, 1, 1, 2)]
TARGETS = ["fbgemm", "onnxruntime", "qnnpack", "x86"]


@pytest.mark.skipif(NOJIT, reason="covered once without JIT by test_qconv2d_nhwc_no_jit")
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("target", TARGETS)
def test_qconv2d_nhwc_matches_reference(case, target):
    n, c, h, w, o, k, s, p, d, g = case
    rng = np.random.default_rng(zlib.crc32(repr((case, target)).encode()))
    x = rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)
    wq = rng.integers(-128, 128, (o, c // g, k, k), dtype=np.int8)
    wq[::3, :, 0, 0] = 127                      # some pairs reach the int16 limit (fbgemm without VNNI saturates)
    ws = rng.uniform(0.001, 0.01, o).astype(np.float32)
    bias = rng.normal(0, 1, o).astype(np.float32)
    zps = [0] + ([rng.integers(-3, 4, o)] if g == 1 else [])
    for wz in zps:
        kw = dict(stride=s, padding=p, dilation=d, groups=g, target=target)
        ref = qconv2d_reference(x, 0.02, 7, wq, ws, wz, bias, 0.05, 100, **kw)
        assert len(np.unique(ref)) > 100                     # not saturated
        layer = QConv2d(wq, ws, wz, bias, 0.02, 7, 0.05, 100, **kw)
        for isa in ISAS + ISAS[::-1]:       # each instruction set twice: the second call runs the planned runner
            with isa_cap(isa):
                y = layer.nhwc(nchw_to_nhwc(x))
            assert y.shape == (n, ref.shape[2], ref.shape[3], o)
            np.testing.assert_array_equal(nhwc_to_nchw(y), ref, err_msg=f"{ISA_NAMES[isa]}, w_zp {wz is not 0}")


def test_qconv2d_nhwc_no_jit():
    """A few cases on whatever runs (under NUMBA_DISABLE_JIT: the plain loops and the float32 BLAS path)."""
    rng = np.random.default_rng(5)
    for (n, c, h, w, o, k, s, p, d, g) in (CASES[1], CASES[6], CASES[9]):
        x = rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)
        wq = rng.integers(-128, 128, (o, c // g, k, k), dtype=np.int8)
        ws = rng.uniform(0.001, 0.01, o).astype(np.float32)
        kw = dict(stride=s, padding=p, dilation=d, groups=g, target="onnxruntime")
        ref = qconv2d_reference(x, 0.02, 7, wq, ws, 0, None, 0.05, 100, **kw)
        layer = QConv2d(wq, ws, 0, None, 0.02, 7, 0.05, 100, **kw)
        for _ in range(2):                          # the first call plans the shape, the second reuses it
            np.testing.assert_array_equal(nhwc_to_nchw(layer.nhwc(nchw_to_nhwc(x))), ref)


def test_qconv2d_nhwc_refuses_wrong_input():
    layer = QConv2d(np.ones((4, 3, 1, 1), np.int8), 0.01, 0, None, 0.02, 7, 0.05, 100)
    layer.nhwc(np.zeros((1, 2, 2, 3), np.uint8))       # a shape planned once is still checked on later calls
    with pytest.raises(ValueError, match="NHWC input has 5"):
        layer.nhwc(np.zeros((1, 2, 2, 5), np.uint8))
    with pytest.raises(ValueError, match="4-D uint8 NHWC"):
        layer.nhwc(np.zeros((1, 2, 2, 3), np.float32))


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 3, 6, 5), (2, 1, 4, 4), (2, 16, 3, 5), (1, 4, 1, 1)])
def test_transposes(shape):
    x = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    y = nchw_to_nhwc(x)
    np.testing.assert_array_equal(y, x.transpose(0, 2, 3, 1))
    assert y.flags.c_contiguous
    np.testing.assert_array_equal(nhwc_to_nchw(y), x)


@pytest.mark.parametrize("geo", [((2, 2), None, 0, 1, False), ((3, 3), 2, 1, 1, False), ((3, 2), (2, 1), (1, 0), 1, True),
                                 ((2, 2), 1, 0, 2, False)])
def test_max_pool_channels_last(geo):
    from minquant.kernels.pool import qmax_pool2d, qmax_pool2d_reference
    k, s, p, d, ceil = geo
    x = np.random.default_rng(2).integers(0, 256, (2, 19, 11, 9)).astype(np.uint8)
    ref = qmax_pool2d_reference(x, k, s, p, d, ceil)
    y = qmax_pool2d(nchw_to_nhwc(x), k, s, p, d, ceil, channels_last=True)
    np.testing.assert_array_equal(nhwc_to_nchw(y), ref)


# avg pools on channels-last codes: (shape, kernel, stride, pad, ceil, count_include_pad) — 7×7 windows of a 28×28
# image (TinyCNN's), padded windows, a ceil_mode window hanging past the padding, channels not a multiple of 16
AVG_GEOS = [((1, 64, 28, 28), 7, 7, 0, False, False), ((2, 20, 9, 11), 3, 2, 1, False, True),
            ((1, 19, 10, 10), 3, 2, 1, False, False), ((1, 33, 8, 9), (3, 2), (2, 2), (1, 1), True, True)]


def _pool_codes(shape, seed):
    """Codes whose windows have different means (an offset per channel and image, noise per pixel): the pooled
    codes spread over the range instead of all landing near the middle."""
    rng = np.random.default_rng(zlib.crc32(repr(seed).encode()))
    base = rng.integers(20, 236, shape[:2] + (1, 1))
    return np.clip(base + rng.integers(-20, 21, shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("geo", AVG_GEOS)
@pytest.mark.parametrize("target", ["fbgemm", "fbgemm-cl", "qnnpack", "minquant"])
def test_avg_pool_channels_last(geo, target):
    """qavg_pool2d on NHWC codes (codes_nhwc=True) = the readable NCHW reference, transposed — every rounding mode
    (fbgemm's NCHW and channels-last kernels, qnnpack, minquant's float64), unsaturated data."""
    from minquant.kernels.pool import qavg_pool2d, qavg_pool2d_reference
    shape, k, s, p, ceil, cip = geo
    x = _pool_codes(shape, (geo, target))
    t, cl = target.removesuffix("-cl"), target.endswith("-cl")
    other = dict(y_scale=0.06, y_zp=20) if t == "minquant" else {}
    kw = dict(x_scale=0.05, x_zp=7, target=t, channels_last=cl, **other)
    ref = qavg_pool2d_reference(x, k, s, p, ceil, cip, **kw)
    assert len(np.unique(ref)) > 40
    y = qavg_pool2d(nchw_to_nhwc(x), k, s, p, ceil, cip, codes_nhwc=True, **kw)
    np.testing.assert_array_equal(nhwc_to_nchw(y), ref)


@pytest.mark.parametrize("geo", AVG_GEOS[:3] + [((1, 40, 7, 7), 7, 7, 0, False, False)])
def test_avg_pool_onnxruntime_channels_last(geo):
    """ONNX Runtime's QLinearAveragePool (float32 sums in ORT's order) on NHWC codes and NCHW codes = its
    reference; a window covering the whole image is ORT's global pool (last case)."""
    from minquant.kernels.pool import qavg_pool2d_onnxruntime, qavg_pool2d_onnxruntime_reference
    shape, k, s, p, _, cip = geo
    x = _pool_codes(shape, geo)
    kw = dict(x_scale=0.05, x_zp=7, y_scale=0.06, y_zp=20)
    ref = qavg_pool2d_onnxruntime_reference(x, k, s, p, cip, **kw)
    assert len(np.unique(ref)) > 20
    np.testing.assert_array_equal(qavg_pool2d_onnxruntime(x, k, s, p, cip, **kw), ref)
    y = qavg_pool2d_onnxruntime(nchw_to_nhwc(x), k, s, p, cip, codes_nhwc=True, **kw)
    np.testing.assert_array_equal(nhwc_to_nchw(y), ref)


@pytest.mark.parametrize("shape", [(1, 1280, 7, 7), (2, 21, 5, 6), (1, 16, 9, 4)])
@pytest.mark.parametrize("out", [1, 2, 3])
@pytest.mark.parametrize("target", ["fbgemm", "fbgemm-cl", "qnnpack", "minquant", "onnxruntime"])
def test_adaptive_avg_pool_channels_last(shape, out, target):
    """qadaptive_avg_pool2d on NHWC codes = the readable NCHW reference (global pooling: MobileNetV2's last pool
    under every target, ONNX Runtime's QLinearGlobalAveragePool; other outputs where the target has them)."""
    from minquant.kernels.pool import qadaptive_avg_pool2d, qadaptive_avg_pool2d_reference
    t, cl = target.removesuffix("-cl"), target.endswith("-cl")
    if t == "onnxruntime" and out != 1:
        pytest.skip("ONNX Runtime has only the global average pool")
    x = _pool_codes(shape, (shape, out, target))
    other = dict(y_scale=0.06, y_zp=20) if t in ("minquant", "onnxruntime") else {}
    kw = dict(x_scale=0.05, x_zp=7, target=t, channels_last=cl, **other)
    ref = qadaptive_avg_pool2d_reference(x, out, **kw)
    assert len(np.unique(ref)) > min(20, ref.size // 3)
    y = qadaptive_avg_pool2d(nchw_to_nhwc(x), out, codes_nhwc=True, **kw)
    np.testing.assert_array_equal(nhwc_to_nchw(y), ref)


def test_pool_runner_refuses_like_the_function():
    """The runners a prepared model keeps check their arguments as the public functions do."""
    from minquant.kernels.pool import qadaptive_avg_pool2d_runner, qavg_pool2d_runner
    with pytest.raises(ValueError, match="4-D uint8"):
        qavg_pool2d_runner(np.zeros((1, 4, 4, 3), np.float32), 2, x_scale=0.1, x_zp=0, codes_nhwc=True)
    with pytest.raises(ValueError, match="4-D uint8 NHWC"):
        qadaptive_avg_pool2d_runner(np.zeros((4, 4, 3), np.uint8), 1, x_scale=0.1, x_zp=0, codes_nhwc=True)
    with pytest.raises(ValueError, match="zero"):
        qadaptive_avg_pool2d_runner(np.zeros((1, 4, 4, 3), np.uint8), 1, x_scale=0.1, x_zp=300, codes_nhwc=True)


# ------------------------------------------------------------------------------------------- whole models
@pytest.fixture(scope="module")
def models(tmp_path_factory, digits_model):
    """``models(name)`` → (QuantizedModel, input, ORT runner or None), built on first use: TinyCNN and
    MobileNetV2 from ONNX Runtime's QOperator files, and from quantize_static under fbgemm / x86 / qnnpack /
    onnxruntime."""
    pytest.importorskip("onnxruntime")
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet
    from minquant.frameworks.ort_oracle import ort_quantize, ort_runner
    from minquant.frameworks.torch_oracle import export_onnx
    from minquant.interop.onnx.importer import from_onnx_quantized
    from minquant.quantized import quantize_static
    d = tmp_path_factory.mktemp("channels_last")
    tiny, (x_tr, _, x_te, _) = digits_model
    cache = {}

    def build(name):
        model_name, how, target = name.split("_", 2)
        if model_name == "tiny":
            model, shape, calib, x = tiny, (1, 1, 28, 28), x_tr[:64], x_te[:10 if NOJIT else 40]
        else:
            model, shape, calib, x = mobilenet_v2_imagenet(), (1, 3, 224, 224), photo_crops(8), photo_crops(2, split="eval")
        if how == "ort":
            qop = ort_quantize(export_onnx(model, shape, d / f"{model_name}.onnx"), calib, d / f"{name}.onnx", target)
            return from_onnx_quantized(qop), x, ort_runner(qop)
        return quantize_static(model, calib, target=target, progress=False), x, None

    def get(name):
        if name not in cache:
            cache[name] = build(name)
        return cache[name]
    return get


MODELS = ["tiny_ort_qoperator", "mnv2_ort_qoperator", "tiny_static_fbgemm", "tiny_static_x86", "tiny_static_qnnpack",
          "tiny_static_onnxruntime", "mnv2_static_fbgemm"]


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.skipif(
    NOJIT and m.startswith("mnv2"), reason="MobileNetV2 needs the JIT (minutes in pure Python)")) for m in MODELS])
def test_whole_model_channels_last_on_and_off(models, name):
    qm, x, ort = models(name)
    try:
        qm.channels_last = False
        y_nchw = qm(x)
        qm.channels_last = True
        y_nhwc = qm(x)
    finally:
        qm.channels_last = True
    plan = qm.execution_plan
    ops = collections.Counter(n.op for n in plan.nodes)
    native = ops_count(qm, "qconv2d") if not NOJIT else 0        # without JIT: only the depthwise convs run NHWC
    assert ops["qconv2d_nhwc"] >= native
    np.testing.assert_array_equal(y_nhwc, y_nchw)
    assert len(np.unique(y_nchw)) > 20                               # logits, not a degenerate output
    if ort is not None:
        np.testing.assert_array_equal(y_nhwc, ort(x))


def ops_count(qm, op):
    return sum(1 for n in qm.graph.nodes if n.op == op)


@pytest.mark.skipif(NOJIT, reason="without JIT dense convs take the NCHW path (no int8 SIMD)")
def test_tinycnn_plan_is_one_region(models):
    """TinyCNN from ONNX Runtime (conv + ReLU twice, then an average pool): one region, one transpose in, one out."""
    qm, _, _ = models("tiny_ort_qoperator")
    ops = collections.Counter(n.op for n in qm.execution_plan.nodes)
    assert (ops["to_nhwc"], ops["to_nchw"], ops["qconv2d_nhwc"], ops["qconv2d"]) == (1, 1, 2, 0), ops
    assert ops["qavg_pool2d_nhwc"] == 1       # the pool joins the region: the transpose out moves 4×4 pixels


@pytest.mark.skipif(NOJIT, reason="needs the JIT (MobileNetV2)")
def test_mobilenet_plan_is_one_region(models):
    """ONNX Runtime's MobileNetV2: one channels-last region from the first conv to the last, like ORT's own NHWC
    transformer (one transpose in, one out); the graph itself is untouched and intermediates stay NCHW."""
    qm, x, _ = models("mnv2_ort_qoperator")
    before = [(n.name, n.op, list(n.inputs)) for n in qm.graph.nodes]
    plan = qm.execution_plan
    plan.validate()
    ops = collections.Counter(n.op for n in plan.nodes)
    assert (ops["to_nhwc"], ops["to_nchw"], ops["qconv2d_nhwc"], ops["qadd_nhwc"]) == (1, 1, 52, 10)
    assert ops["qadaptive_avg_pool2d_nhwc"] == 1     # the global pool too: its to_nchw moves 1×1 pixels
    assert ops["qconv2d"] == ops["qadd"] == 0
    assert [(n.name, n.op, list(n.inputs)) for n in qm.graph.nodes] == before
    _, values = qm.run(x[:1], intermediates=True, raw=True)
    conv = next(n for n in qm.graph.nodes if n.op == "qconv2d")
    assert values[conv.name].shape[1] == conv.params["weight"].shape[0]   # NCHW


def test_plan_keeps_position_dependent_adds_nchw():
    """fbgemm's add rounds by element position (AVX2 blocks of 64) unless the emulated tensors are channels-last:
    such an add stays NCHW, between transposes; a clamp after a region joins it."""
    from minquant.graph import Graph, Node
    from minquant.quantized.ops import QAddAttrs, QClampAttrs, QConv2dAttrs, QuantizeAttrs
    conv_a = QConv2dAttrs(x_scale=0.02, x_zp=3, y_scale=0.05, y_zp=100, per_channel=True)
    w = dict(weight=np.ones((4, 4, 1, 1), np.int8), w_scale=np.full(4, 0.01, np.float32), w_zp=np.zeros(4, np.int8))
    nodes = [Node("q", "quantize", ["x"], QuantizeAttrs(0.02, 3)),
             Node("c1", "qconv2d", ["q"], conv_a, dict(w)), Node("c2", "qconv2d", ["c1"], conv_a, dict(w)),
             Node("add", "qadd", ["c1", "c2"], QAddAttrs(0.05, 100, 0.05, 100, 0.05, 100)),
             Node("relu", "qclamp", ["c2"], QClampAttrs(100, 255)),
             Node("dq", "dequantize", ["add"], QuantizeAttrs(0.05, 100))]
    g = Graph(["x"], nodes, ["dq", "relu"], {"x": (1, 4, 5, 5)})
    g.validate()
    plan = channels_last_graph(g, lambda n: n.name != "add")
    plan.validate()
    by = {n.name: n for n in plan.nodes}
    assert by["c1"].op == by["c2"].op == "qconv2d_nhwc" and by["relu"].op == "qclamp_nhwc"
    assert by["add"].op == "qadd" and all(by[v].op == "to_nchw" for v in by["add"].inputs)
    assert by["c1"].inputs == ["q.nhwc"] and by[plan.outputs[1]].op == "to_nchw"
    assert {n.name: n.op for n in channels_last_graph(g, lambda n: True).nodes}["add"] == "qadd_nhwc"


@pytest.mark.skipif(NOJIT or not isa_available(ISA_AVX2), reason="the channels-last im2col copies with ymm moves (JIT, AVX2)")
@pytest.mark.parametrize("geo", [(1, 9, 11, 3, 3, 3, 2, 2, 1, 1, 1, 1),    # (n, h, w, c, kh, kw, sh, sw, ph, pw, dh, dw)
                                 (2, 8, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1),    # short tap rows (≤ 32 bytes), batch 2
                                 (1, 10, 9, 3, 3, 3, 1, 1, 2, 1, 2, 1),   # dilation in H only: still one run per row
                                 (1, 9, 9, 4, 2, 5, 1, 2, 0, 2, 1, 2),    # dilation in W: one run per tap
                                 (1, 6, 6, 12, 3, 3, 1, 1, 1, 1, 1, 1)])  # tap rows of 36 bytes (> one ymm)
def test_im2col_rows_matches_numpy(geo):
    from minquant.kernels.gemm_simd import _im2col_rows
    n, h, w, c, kh, kw, sh, sw, ph, pw, dh, dw = geo
    x = np.random.default_rng(zlib.crc32(repr(geo).encode())).integers(0, 256, (n, h, w, c), dtype=np.uint8)
    zp = 7
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=zp)
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    taps = [xp[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw, :]
            for i in range(kh) for j in range(kw)]
    k = kh * kw * c
    kp = 4 * (-(-k // 4))
    want = np.zeros((n * oh * ow, kp), np.uint8)
    want[:, :k] = np.stack(taps, axis=3).reshape(n * oh * ow, k)
    buf = np.full(n * oh * ow * kp + 32, 0xAB, np.uint8)
    _im2col_rows(x, kh, kw, sh, sw, ph, pw, dh, dw, np.uint8(zp), kp, buf)
    np.testing.assert_array_equal(buf[:n * oh * ow * kp].reshape(-1, kp), want)
