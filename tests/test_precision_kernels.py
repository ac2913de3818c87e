"""Kernels of the precision ladder: int4 rows (packing, dequantization), the int4-weight convolution with float
activations, W4A8 conv / linear (fast vs reference, and vs the float computation they approximate), float16
layers vs torch's ``.half()``, and ``w4_linear`` vs ONNX Runtime's MatMulNBits."""
from __future__ import annotations

import numpy as np
import pytest

from minquant import float_ops as F
from minquant.affine import choose_qparams, dequantize, quantize
from minquant.graph import Graph, Node
from minquant.kernels.fp16 import round_fp16
from minquant.kernels.int4_conv import (conv_weight_rows, dequantize_int4_rows, dequantize_int4_rows_reference,
                                        int4_conv2d, int4_conv2d_reference, pack_int4_rows, rows_to_conv_weight,
                                        unpack_int4_rows)
from minquant.kernels.w4a8 import w4a8_conv2d, w4a8_conv2d_reference, w4a8_linear, w4a8_linear_reference
from minquant.quantized.model import QuantizedModel
from minquant.quantized.precision_ops import Int4Attrs


def _int4(rows, gs, symmetric, rng=None):
    """codes, scale, zp of (N, K) rows, ``gs`` per group (as quantize_int4_rows, float32 scales)."""
    n, k = rows.shape
    g = rows.reshape(n, k // gs, gs)
    dtype = "int4" if symmetric else "uint4"
    s, z = choose_qparams(g.min(-1), g.max(-1), dtype, symmetric=symmetric)
    q = quantize(rows, s, z, dtype, axis=1, group_size=gs)
    return q, s, (None if symmetric else z.astype(np.int8)), dtype


@pytest.mark.parametrize("k", [9, 10, 27, 64])
@pytest.mark.parametrize("signed", [True, False])
def test_rows_pack_round_trip(k, signed):
    rng = np.random.default_rng(k)
    q = rng.integers(-8, 8, (5, k)).astype(np.int8) if signed else rng.integers(0, 16, (5, k)).astype(np.uint8)
    p = pack_int4_rows(q)
    assert p.dtype == np.uint8 and p.shape == (5, (k + 1) // 2)          # two per byte, rows padded
    assert np.array_equal(unpack_int4_rows(p, k, signed=signed), q)
    assert len(np.unique(q)) >= 8                                        # the codes span the range


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("k,gs", [(9, 9), (24, 8), (64, 32)])
def test_dequantize_fast_equals_reference(symmetric, k, gs):
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((7, k)).astype(np.float32)
    q, s, z, dtype = _int4(rows, gs, symmetric)
    p = pack_int4_rows(q)
    ref = dequantize_int4_rows_reference(p, s, z, k=k, group_size=gs, dtype=dtype)
    fast = dequantize_int4_rows(p, s, z, k=k, group_size=gs, dtype=dtype)
    assert np.array_equal(ref, fast)
    # the reference is affine.dequantize of the codes, and the codes approximate the weights within s/2
    assert np.array_equal(ref, dequantize(q, s, np.zeros_like(s, np.int64) if z is None else z, axis=1,
                                          group_size=gs))
    assert np.all(np.abs(ref - rows) <= np.repeat(s, gs, axis=1) * 0.5 + 1e-6)


@pytest.mark.parametrize("groups,cg,stride,padding", [(1, 8, 1, 1), (2, 8, 2, 1), (16, 1, 1, 1), (1, 3, 2, 0)])
def test_int4_conv2d(groups, cg, stride, padding):
    rng = np.random.default_rng(groups + cg)
    o = 16
    w = rng.standard_normal((o, cg, 3, 3)).astype(np.float32)
    rows = conv_weight_rows(w)
    k = rows.shape[1]
    gs = 8 if k % 8 == 0 else k
    q, s, z, dtype = _int4(rows, gs, symmetric=False)
    p = pack_int4_rows(q)
    x = rng.standard_normal((2, cg * groups, 9, 9)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    kw = dict(weight_shape=w.shape, group_size=gs, bias=b, stride=stride, padding=padding, groups=groups, dtype=dtype)
    ref = int4_conv2d_reference(x, p, s, z, **kw)
    assert np.array_equal(ref, int4_conv2d(x, p, s, z, **kw))
    wd = rows_to_conv_weight(dequantize(q, s, z.astype(np.int64), axis=1, group_size=gs), w.shape)
    assert np.array_equal(ref, F.conv2d(x, wd, b, stride, padding, 1, groups))
    # (kh, kw, c) rows: the row layout really is the conv weight
    assert np.array_equal(rows_to_conv_weight(rows, w.shape), w)


def _w4a8_float(x_q, xs, xz, wd, b, ys, yz, conv=None):
    """The real-valued layer W4A8 approximates, in float64, requantized (for the ±1-code comparison)."""
    x = (x_q.astype(np.float64) - xz) * xs
    if conv is None:
        v = x @ wd.T.astype(np.float64) + b
    else:
        v = F.conv2d(x.astype(np.float32), wd, b, *conv).astype(np.float64)
    return np.clip(np.rint(v / ys) + yz, 0, 255)


@pytest.mark.parametrize("groups,cg,stride,padding,gs", [(1, 16, 1, 1, 16), (2, 8, 2, 1, 8), (16, 1, 1, 1, 9),
                                                           (1, 3, 2, 1, 27)])
@pytest.mark.parametrize("symmetric", [True, False])
def test_w4a8_conv2d(groups, cg, stride, padding, gs, symmetric):
    rng = np.random.default_rng(7 * groups + cg)
    o = 16
    w = (rng.standard_normal((o, cg, 3, 3)) * 0.2).astype(np.float32)
    rows = conv_weight_rows(w)
    q, s, z, dtype = _int4(rows, gs, symmetric)
    p = pack_int4_rows(q)
    x_q = rng.integers(0, 256, (2, cg * groups, 10, 10)).astype(np.uint8)
    b = (rng.standard_normal(o) * 0.5).astype(np.float32)
    xs, xz, ys, yz = 0.02, 100, 0.05, 120
    kw = dict(weight_shape=w.shape, group_size=gs, x_scale=xs, x_zp=xz, y_scale=ys, y_zp=yz, bias=b, stride=stride,
              padding=padding, groups=groups, dtype=dtype)
    ref = w4a8_conv2d_reference(x_q, p, s, z, **kw)
    assert np.array_equal(ref, w4a8_conv2d(x_q, p, s, z, **kw))
    assert len(np.unique(ref)) > 40 and (ref == 0).mean() < 0.05 and (ref == 255).mean() < 0.05   # not saturated
    zz = np.zeros_like(s, np.int64) if z is None else z.astype(np.int64)
    wd = rows_to_conv_weight(dequantize(q, s, zz, axis=1, group_size=gs), w.shape)
    # padding reads z_x (real 0): the float conv on the dequantized input is what the codes approximate
    exact = _w4a8_float(x_q, xs, xz, wd, b, ys, yz, conv=(stride, padding, 1, groups))
    assert np.abs(ref.astype(np.int64) - exact).max() <= 1


def test_w4a8_conv2d_clamp_and_channel_top():
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((8, 4, 3, 3)) * 0.2).astype(np.float32)
    q, s, z, dtype = _int4(conv_weight_rows(w), 12, True)
    p = pack_int4_rows(q)
    x_q = rng.integers(0, 256, (1, 4, 6, 6)).astype(np.uint8)
    top = np.arange(150, 158).astype(np.uint8)
    kw = dict(weight_shape=w.shape, group_size=12, x_scale=0.02, x_zp=100, y_scale=0.05, y_zp=120, padding=1,
              clamp=(120, 200), clamp_hi=top, dtype=dtype)
    ref = w4a8_conv2d_reference(x_q, p, s, z, **kw)
    assert np.array_equal(ref, w4a8_conv2d(x_q, p, s, z, **kw))
    assert ref.min() == 120 and np.all(ref.max(axis=(0, 2, 3)) == top)


@pytest.mark.parametrize("k,gs", [(64, 32), (4400, 4400)])    # 4400 > 4386: the float64 group sums
def test_w4a8_linear(k, gs):
    rng = np.random.default_rng(k)
    w = (rng.standard_normal((6, k)) * 0.1).astype(np.float32)
    q, s, z, dtype = _int4(w, gs, False)
    p = pack_int4_rows(q)
    x_q = rng.integers(0, 256, (5, k)).astype(np.uint8)
    ys = 3 * 74 * 0.02 * 0.1 * np.sqrt(k) / 127            # ±3σ of the output over the 256 codes
    kw = dict(in_features=k, group_size=gs, x_scale=0.02, x_zp=128, y_scale=ys, y_zp=128, dtype=dtype)
    ref = w4a8_linear_reference(x_q, p, s, z, **kw)
    assert np.array_equal(ref, w4a8_linear(x_q, p, s, z, **kw))
    wd = dequantize(q, s, z.astype(np.int64), axis=1, group_size=gs)
    exact = _w4a8_float(x_q, 0.02, 128, wd, 0.0, ys, 128)
    assert np.abs(ref.astype(np.int64) - exact).max() <= 1
    assert len(np.unique(ref)) > 10


def test_int4_kernels_refuse_bad_input():
    p = np.zeros((4, 5), np.uint8)
    s = np.ones((4, 1), np.float32)
    with pytest.raises(ValueError, match="group_size=4 does not divide"):
        dequantize_int4_rows(p, np.ones((4, 2), np.float32), None, k=10, group_size=4)
    with pytest.raises(ValueError, match="w_scale must have shape"):
        dequantize_int4_rows_reference(p, np.ones((4, 3), np.float32), None, k=10, group_size=5)
    with pytest.raises(TypeError, match="uint8"):
        dequantize_int4_rows(p.astype(np.int8), s, None, k=10, group_size=10)
    with pytest.raises(ValueError, match="w_zp outside"):
        dequantize_int4_rows(p, s, np.full((4, 1), 9, np.int8), k=10, group_size=10)
    with pytest.raises(TypeError, match="uint8 codes"):
        w4a8_linear(np.zeros((1, 10), np.float32), p, s, None, in_features=10, group_size=10, x_scale=1.0, x_zp=0,
                    y_scale=1.0, y_zp=0)


def test_round_fp16_refuses_overflow():
    assert round_fp16(np.float32([1.0, 65504.0])).dtype == np.float16
    with pytest.raises(ValueError, match="float16's range"):
        round_fp16(np.float32([70000.0]))


# ------------------------------------------------------------------------------------------------------
# against the frameworks
# ------------------------------------------------------------------------------------------------------
def _one_node_model(node, shape, target):
    return QuantizedModel(Graph(["x"], [node], [node.name], {"x": shape}, "one"), target)


def test_fp16_layers_match_torch_half():
    """torch's .half() on this CPU: float32 arithmetic, one rounding per op — minquant's fp16 layers give the
    same float16 numbers except where the float32 sums (in another order) straddle a float16 rounding boundary:
    then one float16 ULP."""
    torch = pytest.importorskip("torch")
    from minquant.quantized.precision_ops import Fp16Attrs

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 32, 12, 12)).astype(np.float16)
    w = (rng.standard_normal((48, 32, 3, 3)) * 0.1).astype(np.float16)
    b = (rng.standard_normal(48) * 0.1).astype(np.float16)
    node = Node("c", "fp16_conv2d", ["x"], Fp16Attrs(padding=1), {"weight": w, "bias": b})
    ours = _one_node_model(node, (1, 32, 12, 12), "x86").run(x.astype(np.float32), intermediates=True,
                                                               raw=True)[1]["c"]
    assert ours.dtype == np.float16
    theirs = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                        padding=1).numpy()
    differ = ours != theirs
    assert differ.mean() < 0.01                                          # measured 0.1–0.2 %
    ulp = np.abs(ours.astype(np.float32) - theirs.astype(np.float32)) / np.spacing(np.abs(theirs)).astype(np.float32)
    assert np.all(ulp[differ] <= 1.0)
    # a float16 accumulator would be far off: the float32-accumulated rounding is what both compute
    assert np.array_equal(round_fp16(F.conv2d(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32),
                                              1, 1, 1, 1)), ours)


@pytest.mark.parametrize("m", [1, 5])
def test_w4_linear_is_matmulnbits(m):
    """A w4_linear node under target 'onnxruntime' is ONNX Runtime's MatMulNBits (float32 activations),
    bit for bit, for one row (MLAS's lane kernel) and several (dequantize + SGEMM)."""
    pytest.importorskip("onnxruntime")
    from minquant.frameworks.ort_oracle import matmul_nbits

    rng = np.random.default_rng(m)
    n, k, gs = 24, 128, 32
    w = rng.standard_normal((n, k)).astype(np.float32)
    q, s, z, dtype = _int4(w, gs, symmetric=True)
    u = (q.astype(np.int16) + 8).astype(np.uint8)                        # MatMulNBits stores uint4, zero point 8
    x = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    node = Node("fc", "w4_linear", ["x"], Int4Attrs((n, k), gs, True, round_output=False),
                {"weight_packed": pack_int4_rows(q), "w_scale": s.astype(np.float32), "bias": b})
    ours = _one_node_model(node, (1, k), "onnxruntime")(x)
    theirs = matmul_nbits(x, pack_int4_rows(u).reshape(n, k // gs, gs // 2), s, None, k=k, n=n, block_size=gs)
    assert np.array_equal(ours, (theirs + b).astype(np.float32))       # the bias: one float32 add after the sum
    assert np.abs(ours - (x @ dequantize(q, s, np.zeros_like(s, np.int64), axis=1, group_size=gs).T + b)).max() < 1e-3


@pytest.mark.parametrize("m", [1, 6])
def test_w4a16_linear_is_matmulnbits_float16(m):
    """W4A16 as ONNX Runtime runs it: MatMulNBits on float16 activations (CPU) widens them, runs its float32
    path and rounds the output to float16 once — a w4_linear node with float16 activations, bit for bit."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(10 + m)
    n, k, gs = 40, 256, 32
    q = rng.integers(0, 16, (n, k)).astype(np.uint8)
    s = (rng.random((n, k // gs)) * 0.02 + 0.01).astype(np.float16)
    x = rng.standard_normal((m, k)).astype(np.float16)
    inits = [numpy_helper.from_array(pack_int4_rows(q).reshape(n, k // gs, gs // 2), "b"),
             numpy_helper.from_array(s.reshape(-1), "s")]
    node = helper.make_node("MatMulNBits", ["a", "b", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=4,
                            block_size=gs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT16, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    theirs = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"a": x})[0]
    w4 = Node("fc", "w4_linear", ["x"], Int4Attrs((n, k), gs, False, round_output=True),
              {"weight_packed": pack_int4_rows(q), "w_scale": s, "w_zp": np.full((n, k // gs), 8, np.int8)})
    _, raw = _one_node_model(w4, (1, k), "onnxruntime").run(x.astype(np.float32), intermediates=True, raw=True)
    assert raw["fc"].dtype == np.float16 and np.array_equal(raw["fc"], theirs)
    assert len(np.unique(theirs)) > n * m // 2                                # real outputs, not a constant
