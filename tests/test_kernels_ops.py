"""Quantized add, pooling, dynamic linear / conv2d and int4 weight-only linear against PyTorch and ONNX Runtime.

Every comparison asserts 0 mismatching elements (codes for uint8 outputs, bit patterns for float32
outputs), and every fast kernel is checked bit for bit against its readable reference. Inputs come from
hypothesis (derandomized) or from exhaustive grids; output qparams are chosen from the float result's
range so outputs span the code range without saturating. Set MINQUANT_PRINT_COUNTS=1 (with ``-s``) to
print the element counts per framework, and MINQUANT_EXAMPLES=N for a longer run (default 25 per test).
"""
from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import minquant.kernels.add as add_mod  # noqa: E402
import minquant.kernels.dynamic as dyn_mod  # noqa: E402
from minquant.affine import pack_int4  # noqa: E402
from minquant.kernels.add import qadd, qadd_reference  # noqa: E402
from minquant.kernels.dynamic import (dynamic_conv2d, dynamic_conv2d_reference, dynamic_linear,  # noqa: E402
                                      dynamic_linear_reference, pack_dynamic_conv_weight)
from minquant.kernels.int4 import int4_linear, int4_linear_reference  # noqa: E402
from minquant.kernels.pool import (qadaptive_avg_pool2d, qadaptive_avg_pool2d_reference,  # noqa: E402
                                   qavg_pool2d, qavg_pool2d_reference, qmax_pool2d, qmax_pool2d_reference,
                                   qavg_pool2d_onnxruntime, qavg_pool2d_onnxruntime_reference)
from minquant.frameworks.ort_oracle import ort_session as oracle_session, run_node  # noqa: E402
from minquant.target import Target, resolve_linear, resolve_ops  # noqa: E402
import forced_isa  # noqa: E402

import torch.ao.nn.quantized.functional as qF  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore:.*reduce_range.*:UserWarning")]

F32 = np.float32
HYP = settings(max_examples=int(os.environ.get("MINQUANT_EXAMPLES", 25)), deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
COUNTS: dict = {}


def record(key, total, mismatches):
    c = COUNTS.setdefault(key, [0, 0])
    c[0] += int(total)
    c[1] += int(mismatches)


@pytest.fixture(scope="module", autouse=True)
def _one_thread_and_summary():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
    if os.environ.get("MINQUANT_PRINT_COUNTS"):
        for k, (n, bad) in sorted(COUNTS.items()):
            print(f"{k:55s} {n:>10d} elements, {bad} mismatches")


@contextlib.contextmanager
def engine(name):
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.backends.quantized.engine = old


def tq(codes, scale, zp, channels_last=False):
    t = torch._make_per_tensor_quantized_tensor(torch.from_numpy(np.ascontiguousarray(codes)), float(scale), int(zp))
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def output_qparams(y_real, min_range=1e-3):
    """(scale, zp) covering the real results with 1 % headroom: full range, no saturation."""
    lo = min(float(np.min(y_real)), 0.0)
    hi = max(float(np.max(y_real)), 0.0)
    s = F32(max(hi - lo, min_range) / 255 * 1.01)
    return s, int(np.clip(np.rint(-lo / s), 0, 255))


def bits_differ(a, b):
    return int((np.asarray(a, F32).view(np.int32) != np.asarray(b, F32).view(np.int32)).sum())


def ort_session(nodes, inputs, outputs, inits=(), opsets=(("", 17), ("com.microsoft", 1))):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    m.ir_version = 10
    return oracle_session(m, optimize=False)


# =========================================================================================================
# quantized add
# =========================================================================================================
def _add_case(seed, shape, relu):
    rng = np.random.default_rng(seed)
    sa, sb = F32(rng.uniform(0.003, 0.1)), F32(rng.uniform(0.003, 0.1))
    za, zb = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    a = rng.integers(0, 256, size=shape, dtype=np.uint8)
    b = rng.integers(0, 256, size=shape, dtype=np.uint8)
    y_real = sa * (a.astype(np.float64) - za) + sb * (b.astype(np.float64) - zb)
    # a range of at least 2·max(s_a, s_b) keeps s_a/s_y below 2^8, as qnnpack requires
    sy, zy = output_qparams(np.maximum(y_real, 0) if relu else y_real, min_range=2 * max(sa, sb))
    return a, sa, za, b, sb, zb, sy, zy


def _torch_add(args, relu):
    a, sa, za, b, sb, zb, sy, zy = args
    op = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
    return op(tq(a, sa, za), tq(b, sb, zb), float(sy), zy).int_repr().numpy()


shapes = st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple)


@pytest.mark.parametrize("eng", ["fbgemm", "x86", "qnnpack"])
@HYP
@given(seed=st.integers(0, 2 ** 32 - 1), shape=shapes, n_long=st.integers(0, 700), relu=st.booleans())
def test_qadd_vs_torch(eng, seed, shape, n_long, relu):
    if n_long:
        shape = (n_long,)                       # long enough for SIMD blocks and a scalar tail
    args = _add_case(seed, shape, relu)
    target = "qnnpack" if eng == "qnnpack" else "fbgemm"
    with engine(eng):
        y = _torch_add(args, relu)
    r = qadd_reference(*args, relu=relu, target=target)
    f = qadd(*args, relu=relu, target=target)
    record(f"add torch[{eng}]", y.size, (r != y).sum())
    assert (r != y).sum() == 0
    assert np.array_equal(f, r)


def _all_pairs(tail):
    a, b = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    a, b = a.ravel(), b.ravel()
    return np.concatenate([a, a[:tail]]), np.concatenate([b, b[:tail]])


ADD_PARAMS = [(0.0137, 17, 0.0412, 200, 0.05, 128), (0.05, 128, 0.05, 128, 0.1, 128),
              (0.0021, 3, 0.0877, 251, 0.09, 77), (0.031, 99, 0.007, 0, 0.0333, 140)]


@pytest.mark.parametrize("params", ADD_PARAMS)
def test_qadd_exhaustive_codes(params):
    """All 65536 code pairs (plus a 63-element scalar tail) on torch fbgemm and qnnpack and ORT QLinearAdd."""
    sa, za, sb, zb, sy, zy = params
    a, b = _all_pairs(63)
    args = (a, F32(sa), za, b, F32(sb), zb, F32(sy), zy)
    for eng in ("fbgemm", "qnnpack"):
        with engine(eng):
            y = _torch_add(args, False)
        r = qadd_reference(*args, target=eng)
        record(f"add torch[{eng}] exhaustive", y.size, (r != y).sum())
        assert (r != y).sum() == 0
        assert np.array_equal(qadd(*args, target=eng), r)
    y = _ort_qlinear_add(*args)
    r = qadd_reference(*args, target="onnxruntime")
    record("add onnxruntime QLinearAdd exhaustive", y.size, (r != y).sum())
    assert (r != y).sum() == 0
    assert np.array_equal(qadd(*args, target="onnxruntime"), r)


def test_qadd_fbgemm_position_matters(monkeypatch):
    """torch dequantizes with an FMA in its SIMD blocks and without one in the scalar tail: pairs where the
    two disagree, placed in both regions, match only the position-aware model — with the block of this
    host's ATen capability (64 elements on AVX2, 128 on AVX-512)."""
    sa, za, sb, zb, sy, zy = F32(0.0137), 17, F32(0.0412), 200, F32(0.05), 128
    a, b = _all_pairs(0)
    block = add_mod.torch_vector_block(resolve_ops("fbgemm"))
    vec = lambda n: monkeypatch.setattr(add_mod, "torch_vector_block", lambda ar: n)  # noqa: E731
    vec(1)
    all_simd = qadd_reference(a, sa, za, b, sb, zb, sy, zy)
    vec(0)
    all_scalar = qadd_reference(a, sa, za, b, sb, zb, sy, zy)
    monkeypatch.undo()
    differ = np.nonzero(all_simd != all_scalar)[0][:40]
    assert differ.size > 0
    k = differ.size
    pad = np.zeros(block - k, np.uint8)
    aa = np.concatenate([a[differ], pad, a[differ]])       # first block: SIMD; last k: scalar tail
    bb = np.concatenate([b[differ], pad, b[differ]])
    with engine("fbgemm"):
        y = _torch_add((aa, sa, za, bb, sb, zb, sy, zy), False)
    assert np.array_equal(qadd_reference(aa, sa, za, bb, sb, zb, sy, zy), y)
    vec(0)
    assert (qadd_reference(aa, sa, za, bb, sb, zb, sy, zy) != y).sum() >= k
    vec(1)
    assert (qadd_reference(aa, sa, za, bb, sb, zb, sy, zy) != y).sum() >= k


def _ort_qlinear_add(a, sa, za, b, sb, zb, sy, zy):
    # run_node feeds inputs before initializers: B goes with the constants to keep QLinearAdd's order
    return run_node("QLinearAdd", {"A": a},
                    {"as": np.float32(sa), "az": np.uint8(za), "B": b, "bs": np.float32(sb), "bz": np.uint8(zb),
                     "ys": np.float32(sy), "yz": np.uint8(zy)}, np.uint8, domain="com.microsoft")


@HYP
@given(seed=st.integers(0, 2 ** 32 - 1), shape=shapes)
def test_qadd_vs_onnxruntime(seed, shape):
    a, sa, za, b, sb, zb, sy, zy = _add_case(seed, shape, False)
    args = (a, sa, za, b, sb, zb, sy, zy)
    y = _ort_qlinear_add(*args)
    r = qadd_reference(*args, target="onnxruntime")
    record("add onnxruntime QLinearAdd", y.size, (r != y).sum())
    assert (r != y).sum() == 0
    assert np.array_equal(qadd(*args, target="onnxruntime"), r)


# qparam sets where MLAS's rounding and the float64 textbook formula disagree on 8 to 1,094 code pairs
QMUL_ORT_PARAMS = [(0.02, 128, 0.011, 3, 0.13, 250), (0.5, 0, 0.25, 255, 3.0, 7), (0.1, 100, 0.1, 100, 0.3, 101),
                   (0.0625, 3, 0.5, 200, 2.0, 11)]


@pytest.mark.parametrize("params", QMUL_ORT_PARAMS)
def test_qmul_onnxruntime_exhaustive_codes(params):
    """ONNX Runtime's QLinearMul on every pair of codes (65,536): minquant's 'onnxruntime' qmul matches, and
    the float64 textbook formula would not (the zero point is added before rounding)."""
    from minquant.kernels.elementwise import qmul
    sa, za, sb, zb, sy, zy = params
    a, b = _all_pairs(0)
    y = run_node("QLinearMul", {"A": a}, {"as": np.float32(sa), "az": np.uint8(za), "B": b, "bs": np.float32(sb),
                                          "bz": np.uint8(zb), "ys": np.float32(sy), "yz": np.uint8(zy)},
                 np.uint8, domain="com.microsoft")
    ours = qmul(a, F32(sa), za, b, F32(sb), zb, F32(sy), zy, target="onnxruntime")
    record("mul onnxruntime QLinearMul exhaustive", y.size, (ours != y).sum())
    assert int((ours != y).sum()) == 0
    assert 0 < (y > 0).mean() and (y < 255).mean() > 0.2     # not all clipped


def test_qmul_onnxruntime_differs_from_textbook():
    """The exhaustive test above can fail: on its qparam sets MLAS's formula and the textbook one disagree
    (so a textbook 'onnxruntime' qmul would be caught)."""
    from minquant.kernels.elementwise import qmul
    a, b = _all_pairs(0)
    for sa, za, sb, zb, sy, zy in QMUL_ORT_PARAMS:
        args = (a, F32(sa), za, b, F32(sb), zb, F32(sy), zy)
        assert int((qmul(*args, target="onnxruntime") != qmul(*args, target="minquant")).sum()) >= 8


@HYP
@given(seed=st.integers(0, 2 ** 32 - 1), shape=shapes, relu=st.booleans(),
       target=st.sampled_from(["fbgemm", "qnnpack", "onnxruntime", "minquant"]))
def test_qadd_fast_equals_reference(seed, shape, relu, target):
    args = _add_case(seed, shape, relu)
    assert np.array_equal(qadd(*args, relu=relu, target=target), qadd_reference(*args, relu=relu, target=target))


def test_qadd_minquant_is_textbook():
    a = np.array([0, 10, 255], np.uint8)
    b = np.array([5, 10, 250], np.uint8)
    y = qadd(a, 0.5, 10, b, 0.25, 6, 1.0, 100, target="minquant")
    expected = np.clip(np.rint(0.5 * (a - 10.0) + 0.25 * (b - 6.0)) + 100, 0, 255)
    assert np.array_equal(y, expected.astype(np.uint8))


def test_qadd_bad_input():
    a = np.zeros((2, 3), np.uint8)
    with pytest.raises(ValueError, match="shape mismatch"):
        qadd(a, 0.1, 0, np.zeros((3, 2), np.uint8), 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="uint8"):
        qadd(a.astype(np.int8), 0.1, 0, a, 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="zero point"):
        qadd_reference(a, 0.1, 300, a, 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="scale"):
        qadd(a, -0.1, 0, a, 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="ratio"):                  # qnnpack refuses s_a/s_y >= 256
        qadd(a, 1.0, 0, a, 0.1, 0, 0.001, 0, target="qnnpack")
    with pytest.raises(ValueError, match="target"):
        qadd(a, 0.1, 0, a, 0.1, 0, 0.1, 0, target="tflite")


# =========================================================================================================
# pooling
# =========================================================================================================
@st.composite
def pool_case(draw, dilation=False):
    n, c = draw(st.integers(1, 2)), draw(st.sampled_from([1, 3, 8, 11, 17]))
    h, w = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    kh, kw = draw(st.integers(1, min(h, 4))), draw(st.integers(1, min(w, 4)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    if (kh - 1) * d[0] + 1 > h or (kw - 1) * d[1] + 1 > w:
        d = (1, 1)
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)
    return dict(x=x, k=(kh, kw), s=s, p=(ph, pw), d=d, ceil=draw(st.booleans()), cl=draw(st.booleans()),
                scale=F32(rng.uniform(0.002, 0.2)), zp=int(rng.integers(0, 256)))


@pytest.mark.parametrize("eng", ["fbgemm", "qnnpack"])
@HYP
@given(case=pool_case(dilation=True))
def test_qmax_pool2d_vs_torch(eng, case):
    x, k, s, p, d, ceil = case["x"], case["k"], case["s"], case["p"], case["d"], case["ceil"]
    if eng == "qnnpack":
        if k == (1, 1):
            return                               # qnnpack refuses 1x1 pooling
        if max(d) > 1 and max(p) > 0:
            d = (1, 1)                           # torch's qnnpack deviates there (test below)
    with engine(eng):
        y = qF.max_pool2d(tq(x, case["scale"], case["zp"], case["cl"]), k, s, p, d, ceil_mode=ceil)
    y = y.int_repr().numpy()
    r = qmax_pool2d_reference(x, k, s, p, d, ceil)
    record(f"max_pool2d torch[{eng}]", y.size, (r != y).sum())
    assert (r != y).sum() == 0
    assert np.array_equal(qmax_pool2d(x, k, s, p, d, ceil), r)


def test_qmax_pool2d_qnnpack_dilation_with_padding_deviates():
    """Measured: torch's qnnpack max pool reads other pixels than the definition when dilation > 1 and
    padding > 0 (fbgemm agrees with the definition). If torch fixes it, this test says so."""
    x = np.random.default_rng(0).integers(0, 256, size=(1, 1, 5, 6), dtype=np.uint8)
    args = ((2, 2), (1, 1), (1, 1), (2, 2))
    with engine("fbgemm"):
        y_fb = qF.max_pool2d(tq(x, 0.1, 7), *args).int_repr().numpy()
    with engine("qnnpack"):
        y_qn = qF.max_pool2d(tq(x, 0.1, 7), *args).int_repr().numpy()
    r = qmax_pool2d(x, *args)
    assert np.array_equal(r, y_fb)
    assert not np.array_equal(r, y_qn)


@pytest.mark.parametrize("eng", ["fbgemm", "qnnpack"])
@HYP
@given(case=pool_case(), cip=st.booleans(), divisor=st.one_of(st.none(), st.integers(1, 12)))
def test_qavg_pool2d_vs_torch(eng, case, cip, divisor):
    x, k, s, p, ceil, cl = case["x"], case["k"], case["s"], case["p"], case["ceil"], case["cl"]
    kw = dict(x_scale=case["scale"], x_zp=case["zp"], target=eng, channels_last=cl)
    with engine(eng):
        try:
            y = qF.avg_pool2d(tq(x, case["scale"], case["zp"], cl), k, s, p, ceil_mode=ceil,
                              count_include_pad=cip, divisor_override=divisor).int_repr().numpy()
        except RuntimeError:
            y = None
    if y is None:                                # torch refused (qnnpack 1x1): so must we
        with pytest.raises(ValueError):
            qavg_pool2d_reference(x, k, s, p, ceil, cip, divisor, **kw)
        return
    r = qavg_pool2d_reference(x, k, s, p, ceil, cip, divisor, **kw)
    record(f"avg_pool2d torch[{eng}]", y.size, (r != y).sum())
    assert (r != y).sum() == 0
    assert np.array_equal(qavg_pool2d(x, k, s, p, ceil, cip, divisor, **kw), r)


def test_qavg_pool2d_layout_changes_ties():
    """torch fbgemm rounds a mean of k + ½ differently for NCHW and channels-last tensors; both reproduced."""
    x = np.array([[[[0, 1, 2, 5, 7, 8, 100, 111]]]], np.uint8).repeat(4, axis=1)   # C = 4, 1×8
    with engine("fbgemm"):
        y_nchw = qF.avg_pool2d(tq(x, 0.1, 1), (1, 2)).int_repr().numpy()
        y_nhwc = qF.avg_pool2d(tq(x, 0.1, 1, True), (1, 2)).int_repr().numpy()
    assert not np.array_equal(y_nchw, y_nhwc)
    for cl, y in ((False, y_nchw), (True, y_nhwc)):
        assert np.array_equal(qavg_pool2d(x, (1, 2), x_scale=0.1, x_zp=1, channels_last=cl), y)


@pytest.mark.parametrize("eng", ["fbgemm", "qnnpack"])
@HYP
@given(case=pool_case(), out=st.tuples(st.integers(1, 11), st.integers(1, 11)))
def test_qadaptive_avg_pool2d_vs_torch(eng, case, out):
    x, cl = case["x"], case["cl"]
    out = (min(out[0], x.shape[2]), min(out[1], x.shape[3]))
    kw = dict(x_scale=case["scale"], x_zp=case["zp"], target=eng, channels_last=cl)
    with engine(eng):
        y = qF.adaptive_avg_pool2d(tq(x, case["scale"], case["zp"], cl), out).int_repr().numpy()
    r = qadaptive_avg_pool2d_reference(x, out, **kw)
    record(f"adaptive_avg_pool2d torch[{eng}]", y.size, (r != y).sum())
    assert (r != y).sum() == 0
    assert np.array_equal(qadaptive_avg_pool2d(x, out, **kw), r)


@HYP
@given(case=pool_case())
def test_global_avg_pool_vs_onnxruntime(case):
    x, xs, xz = case["x"], case["scale"], case["zp"]
    n, c, h, w = x.shape
    mean = xs * (x.astype(np.float64).mean(axis=(2, 3)) - xz)
    ys, yz = output_qparams(mean)
    ys = max(ys, F32(xs / 250))                 # ORT needs s_x/(s_y·HW) in [2^-32, 256)
    y = run_node("QLinearGlobalAveragePool", {"x": x},
                 {"xs": np.float32(xs), "xz": np.uint8(xz), "ys": np.float32(ys), "yz": np.uint8(yz)},
                 np.uint8, attrs={"channels_last": 0}, domain="com.microsoft")
    kw = dict(x_scale=xs, x_zp=xz, y_scale=ys, y_zp=yz, target="onnxruntime")
    r = qadaptive_avg_pool2d_reference(x, 1, **kw)
    record("global_avg_pool onnxruntime QLinearGlobalAveragePool", y.size, (r != y.reshape(r.shape)).sum())
    assert np.array_equal(r, y.reshape(r.shape))
    assert np.array_equal(qadaptive_avg_pool2d(x, 1, **kw), r)


@HYP
@given(case=pool_case(), cip=st.booleans(), out=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       y_scale_ratio=st.floats(0.3, 3.0), y_zp=st.integers(0, 255))
def test_pool_minquant_fast_equals_reference(case, cip, out, y_scale_ratio, y_zp):
    x, k, s, p, ceil = case["x"], case["k"], case["s"], case["p"], case["ceil"]
    kw = dict(x_scale=case["scale"], x_zp=case["zp"], y_scale=float(case["scale"]) * y_scale_ratio, y_zp=y_zp,
              target="minquant")
    assert np.array_equal(qavg_pool2d(x, k, s, p, ceil, cip, **kw), qavg_pool2d_reference(x, k, s, p, ceil, cip, **kw))
    out = (min(out[0], x.shape[2]), min(out[1], x.shape[3]))
    assert np.array_equal(qadaptive_avg_pool2d(x, out, **kw), qadaptive_avg_pool2d_reference(x, out, **kw))


def test_pool_minquant_is_textbook():
    x = np.array([[[[10, 11], [13, 20]]]], np.uint8)
    y = qavg_pool2d(x, 2, x_scale=0.5, x_zp=10, y_scale=0.25, y_zp=3, target="minquant")
    assert y[0, 0, 0, 0] == np.rint(0.5 * (54 - 40) / 4 / 0.25) + 3


def test_pool_bad_input():
    x = np.zeros((1, 2, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        qmax_pool2d(x.astype(np.float32), 2)
    with pytest.raises(ValueError, match="4-D"):
        qavg_pool2d(x[0], 2, x_scale=0.1, x_zp=0)
    with pytest.raises(ValueError, match="padding"):
        qmax_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="empty"):
        qmax_pool2d(x, 5)
    with pytest.raises(ValueError, match="keeps the input"):
        qavg_pool2d(x, 2, x_scale=0.1, x_zp=0, y_scale=0.2)
    with pytest.raises(ValueError, match="1x1"):
        qavg_pool2d(x, 1, x_scale=0.1, x_zp=0, target="qnnpack")
    with pytest.raises(ValueError, match="GlobalAveragePool"):
        qadaptive_avg_pool2d(x, 2, x_scale=0.1, x_zp=0, target="onnxruntime")  # global pooling only
    with pytest.raises(ValueError, match="zero point"):
        qadaptive_avg_pool2d(x, 1, x_scale=0.1, x_zp=256)


# =========================================================================================================
# dynamic linear
# =========================================================================================================
def _dyn_case(seed, m, k, n, per_channel):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k)) * rng.uniform(0.3, 4) + rng.uniform(-2, 2)).astype(F32)
    w_q = rng.integers(-128, 128, size=(n, k), dtype=np.int8)        # full range: pairs can saturate
    if per_channel:
        w_scale = rng.uniform(0.001, 0.02, size=n).astype(F32)
        w_zp = np.zeros(n, np.int64)
    else:
        w_scale, w_zp = F32(rng.uniform(0.001, 0.02)), 0
    bias = (rng.standard_normal(n) * 0.5).astype(F32)
    return x, w_q, w_scale, w_zp, bias


def _torch_dynamic(x, w_q, w_scale, bias, reduce_range, relu):
    n = w_q.shape[0]
    if np.ndim(w_scale):
        tw = torch._make_per_channel_quantized_tensor(torch.from_numpy(w_q),
                                                      torch.from_numpy(w_scale.astype(np.float64)),
                                                      torch.zeros(n, dtype=torch.long), 0)
    else:
        tw = tq(w_q, w_scale, 0)
    packed = torch.ops.quantized.linear_prepack(tw, torch.from_numpy(bias))
    op = torch.ops.quantized.linear_relu_dynamic if relu else torch.ops.quantized.linear_dynamic
    return op(torch.from_numpy(x), packed, reduce_range).numpy()


@pytest.mark.parametrize("eng", ["fbgemm", "qnnpack"])
@HYP
@given(seed=st.integers(0, 2 ** 32 - 1), m=st.integers(1, 24), k=st.integers(1, 200), n=st.integers(1, 24),
       per_channel=st.booleans(), reduce_range=st.booleans(), relu=st.booleans())
def test_dynamic_linear_vs_torch(eng, seed, m, k, n, per_channel, reduce_range, relu):
    x, w_q, w_scale, w_zp, bias = _dyn_case(seed, m, k, n, per_channel)
    if eng == "qnnpack":
        relu = False                              # linear_relu_dynamic is fbgemm-only in torch
    with engine(eng):
        y = _torch_dynamic(x, w_q, w_scale, bias, reduce_range, relu)
    args = (x, w_q, w_scale, w_zp, bias)
    kw = dict(reduce_range=reduce_range, relu=relu, target=eng)
    r = dynamic_linear_reference(*args, **kw)
    record(f"dynamic_linear torch[{eng}]", y.size, bits_differ(r, y))
    assert bits_differ(r, y) == 0
    assert bits_differ(dynamic_linear(*args, **kw), r) == 0


def _ort_dynamic_session(w_q, w_scale, bias):
    """The graph ORT's dynamic quantizer writes for a MatMul: DynamicQuantizeLinear → MatMulInteger →
    Cast → Mul(x_scale · w_scale) → Mul → Add(bias)."""
    k = w_q.shape[1]
    inits = [numpy_helper.from_array(np.ascontiguousarray(w_q.T), "W"), numpy_helper.from_array(np.int8(0), "WZ"),
             numpy_helper.from_array(np.asarray(w_scale, F32), "WS"), numpy_helper.from_array(bias, "B")]
    nodes = [helper.make_node("DynamicQuantizeLinear", ["X"], ["XQ", "XS", "XZ"]),
             helper.make_node("MatMulInteger", ["XQ", "W", "XZ", "WZ"], ["ACC"]),
             helper.make_node("Cast", ["ACC"], ["ACCF"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["XS", "WS"], ["S"]),
             helper.make_node("Mul", ["ACCF", "S"], ["Y0"]),
             helper.make_node("Add", ["Y0", "B"], ["Y"])]
    return ort_session(nodes, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, k])],
                       [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits, opsets=(("", 17),))


@HYP
@given(seed=st.integers(0, 2 ** 32 - 1), m=st.integers(1, 24), k=st.integers(1, 200), n=st.integers(1, 24),
       per_channel=st.booleans())
def test_dynamic_linear_vs_onnxruntime(seed, m, k, n, per_channel):
    x, w_q, w_scale, w_zp, bias = _dyn_case(seed, m, k, n, per_channel)
    y = _ort_dynamic_session(w_q, w_scale, bias).run(None, {"X": x})[0]
    r = dynamic_linear_reference(x, w_q, w_scale, w_zp, bias, target="onnxruntime")
    record("dynamic_linear onnxruntime DQL+MatMulInteger", y.size, bits_differ(r, y))
    assert bits_differ(r, y) == 0
    assert bits_differ(dynamic_linear(x, w_q, w_scale, w_zp, bias, target="onnxruntime"), r) == 0


@pytest.mark.parametrize("eng", ["fbgemm", "onnxruntime"])
def test_dynamic_linear_pair_saturation_matters(eng, monkeypatch):
    """With full-range activations and weights the int16 pair saturation changes outputs where the framework
    saturates; the emulation must follow the path the framework takes. fbgemm: its AVX2 path, live in a
    subprocess capped at AVX2 (saturating), and the host's native path (exact on VNNI). ONNX Runtime's MLAS
    cannot be capped: its host path is checked live, and saturation must matter exactly when the host's MLAS
    has no VNNI."""
    x, w_q, w_scale, w_zp, bias = _dyn_case(5, 32, 128, 32, False)
    exact = dynamic_linear_reference(x, w_q, w_scale, w_zp, bias, reduce_range=False, target="fbgemm@avx512-vnni")
    if eng == "fbgemm":
        y_avx2 = forced_isa.call("minquant.frameworks.torch_oracle:dynamic_linear", x, w_q, w_scale, w_zp, bias,
                                 reduce_range=False, engine="fbgemm")
        avx2 = Target("fbgemm", forced_isa.forced_cpu())
        assert bits_differ(dynamic_linear_reference(x, w_q, w_scale, w_zp, bias, reduce_range=False, target=avx2),
                           y_avx2) == 0
        assert bits_differ(dynamic_linear(x, w_q, w_scale, w_zp, bias, reduce_range=False, target=avx2), y_avx2) == 0
        assert bits_differ(exact, y_avx2) > 0                  # saturation matters on this data
        with engine("fbgemm"):
            y = _torch_dynamic(x, w_q, w_scale, bias, False, False)
    else:
        y = _ort_dynamic_session(w_q, w_scale, bias).run(None, {"X": x})[0]
    kw = dict(reduce_range=False, target=eng)
    assert bits_differ(dynamic_linear_reference(x, w_q, w_scale, w_zp, bias, **kw), y) == 0
    saturates = resolve_linear(eng).saturate_pairs
    if eng == "onnxruntime":
        exact = dynamic_linear_reference(x, w_q, w_scale, w_zp, bias, reduce_range=False,
                                         target="onnxruntime@avx512-vnni")
    assert (bits_differ(exact, y) > 0) == saturates


@HYP
@given(seed=st.integers(0, 2 ** 32 - 1), m=st.integers(1, 12), k=st.integers(1, 80), n=st.integers(1, 12),
       per_channel=st.booleans(), reduce_range=st.booleans(), batch=st.booleans())
def test_dynamic_linear_minquant_fast_equals_reference(seed, m, k, n, per_channel, reduce_range, batch):
    x, w_q, w_scale, w_zp, bias = _dyn_case(seed, m, k, n, per_channel)
    if batch:
        x = np.stack([x, x[::-1]])                 # (2, m, k): leading dims are kept
    kw = dict(reduce_range=reduce_range, target="minquant")
    r = dynamic_linear_reference(x, w_q, w_scale, w_zp, bias, **kw)
    assert r.shape == x.shape[:-1] + (n,)
    assert bits_differ(dynamic_linear(x, w_q, w_scale, w_zp, None if batch else bias, **kw),
                       dynamic_linear_reference(x, w_q, w_scale, w_zp, None if batch else bias, **kw)) == 0
    # the float result is the float layer up to the activations' rounding: |Δx| <= s_x / 2 per element
    w = w_q.astype(np.float64) * np.reshape(w_scale, (-1, 1))
    y_float = x.astype(np.float64) @ w.T + bias
    x_scale, _ = dyn_mod.dynamic_input_qparams(x.reshape(-1, k), reduce_range=reduce_range, target="minquant")
    bound = 0.5 * x_scale * np.abs(w).sum(axis=1) * 1.001 + 1e-5 * np.abs(y_float) + 1e-6
    assert np.all(np.abs(r - y_float) <= bound)


def test_dynamic_linear_bad_input():
    w = np.zeros((3, 4), np.int8)
    x = np.zeros((2, 4), F32)
    with pytest.raises(ValueError, match="shape mismatch"):
        dynamic_linear(np.zeros((2, 5), F32), w, 0.1, 0, None)
    with pytest.raises(ValueError, match="float32"):
        dynamic_linear(x.astype(np.float64), w, 0.1, 0, None)
    with pytest.raises(ValueError, match="int8"):
        dynamic_linear_reference(x, w.astype(np.int16), 0.1, 0, None)
    with pytest.raises(ValueError, match="NaN"):
        dynamic_linear(np.full((2, 4), np.nan, F32), w, 0.1, 0, None)
    with pytest.raises(ValueError, match="bias"):
        dynamic_linear(x, w, 0.1, 0, np.zeros(4, F32))
    with pytest.raises(ValueError, match="w_scale"):
        dynamic_linear(x, w, np.ones(2, F32), 0, None)


# =========================================================================================================
# dynamic conv2d (no torch counterpart: torch's quantize_dynamic leaves Conv2d float; ONNX Runtime's
# ConvInteger path is the oracle)
# =========================================================================================================
@st.composite
def dyn_conv_case(draw):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans()) and groups > 1
    cg = 1 if depthwise else draw(st.integers(1, 4))
    og = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))), (draw(st.integers(1, 2)), 1)
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    h, w = draw(st.integers(kh * 2, 9)), draw(st.integers(kw, 9))
    x = (rng.standard_normal((draw(st.integers(1, 2)), cg * groups, h, w)) * rng.uniform(0.3, 4)
         + rng.uniform(-2, 2)).astype(F32)
    o = og * groups
    w_q = rng.integers(-128, 128, size=(o, cg, kh, kw), dtype=np.int8)      # full range: pairs can saturate
    per_channel = draw(st.booleans())
    w_scale = rng.uniform(0.001, 0.02, size=o).astype(F32) if per_channel else F32(rng.uniform(0.001, 0.02))
    bias = (rng.standard_normal(o) * 0.5).astype(F32)
    geo = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, w_q, w_scale, bias, geo


def _ort_dynamic_conv_session(w_q, w_scale, bias, geo):
    """The graph ORT's dynamic quantizer writes for a Conv: DynamicQuantizeLinear → ConvInteger → Cast →
    Mul(x_scale · w_scale) → Mul → Add(bias)."""
    o, _, kh, kw = w_q.shape
    ws = np.asarray(w_scale, F32).reshape((1, o, 1, 1) if np.size(w_scale) > 1 else ())
    inits = [numpy_helper.from_array(w_q, "W"), numpy_helper.from_array(np.int8(0), "WZ"),
             numpy_helper.from_array(ws, "WS"), numpy_helper.from_array(bias.reshape(1, o, 1, 1), "B")]
    (ph, pw), (sh, sw), (dh, dw) = geo["padding"], geo["stride"], geo["dilation"]
    nodes = [helper.make_node("DynamicQuantizeLinear", ["X"], ["XQ", "XS", "XZ"]),
             helper.make_node("ConvInteger", ["XQ", "W", "XZ", "WZ"], ["ACC"], kernel_shape=[kh, kw],
                              strides=[sh, sw], pads=[ph, pw, ph, pw], dilations=[dh, dw], group=geo["groups"]),
             helper.make_node("Cast", ["ACC"], ["ACCF"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["XS", "WS"], ["S"]),
             helper.make_node("Mul", ["ACCF", "S"], ["Y0"]),
             helper.make_node("Add", ["Y0", "B"], ["Y"])]
    return ort_session(nodes, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, w_q.shape[1] * geo["groups"],
                                                                                     None, None])],
                       [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits, opsets=(("", 17),))


@HYP
@given(case=dyn_conv_case())
def test_dynamic_conv2d_vs_onnxruntime(case):
    """target='onnxruntime' is ORT's ConvInteger path bit for bit — full-range weights and activations, so an
    accumulation with int16 pair saturation would differ (ConvInteger is exact, unlike MatMulInteger)."""
    x, w_q, w_scale, bias, geo = case
    y = _ort_dynamic_conv_session(w_q, w_scale, bias, geo).run(None, {"X": x})[0]
    r = dynamic_conv2d_reference(x, w_q, w_scale, 0, bias, **geo, target="onnxruntime")
    record("dynamic_conv2d onnxruntime DQL+ConvInteger", y.size, bits_differ(r, y))
    assert bits_differ(r, y) == 0
    assert bits_differ(dynamic_conv2d(x, w_q, w_scale, 0, bias, **geo, target="onnxruntime"), r) == 0


def test_dynamic_conv2d_onnxruntime_accumulates_exactly():
    """A stress case: with full-range codes and weights a pair-saturating accumulation changes outputs; on
    this host ORT's ConvInteger is exact (checked on the integer accumulator with one ConvInteger node) and
    so is minquant's 'onnxruntime' dynamic conv. (minquant never saturates under 'onnxruntime'; whether
    MLAS's ConvInteger pairs products on a CPU without VNNI is measured only where such a CPU runs this.)"""
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (2, 8, 6, 6)).astype(F32)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = -1, 1                        # codes span [0, 255]
    w_q = rng.integers(-128, 128, size=(4, 8, 3, 3), dtype=np.int8)
    w_q[:, :, 0, :2] = 127
    geo = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    ws, bias = np.full(4, 0.01, F32), np.zeros(4, F32)
    y = _ort_dynamic_conv_session(w_q, ws, bias, geo).run(None, {"X": x})[0]
    assert bits_differ(dynamic_conv2d(x, w_q, ws, 0, bias, **geo, target="onnxruntime"), y) == 0
    saturating = dynamic_conv2d_reference(x, w_q, ws, 0, bias, **geo, target="fbgemm@avx2", reduce_range=False)
    minq = dynamic_conv2d_reference(x, w_q, ws, 0, bias, **geo, target="minquant", reduce_range=False)
    assert bits_differ(saturating, minq) > 0                         # saturation would matter on this data
    x_q = rng.integers(200, 256, size=x.shape, dtype=np.uint8)                  # large codes: pairs > 32767
    acc = run_node("ConvInteger", {"x": x_q}, {"w": w_q}, np.int32, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    exact = torch.nn.functional.conv2d(torch.from_numpy(x_q.astype(np.float64)),      # < 2^53: exact
                                       torch.from_numpy(w_q.astype(np.float64)), padding=1).numpy()
    np.testing.assert_array_equal(acc, exact.astype(np.int64))


@pytest.mark.parametrize("target", ["fbgemm@avx2", "fbgemm@avx512-vnni", "qnnpack", "onnxruntime", "minquant"])
@HYP
@given(case=dyn_conv_case(), reduce_range=st.booleans(), relu=st.booleans(), wzp=st.booleans())
def test_dynamic_conv2d_fast_equals_reference(target, case, reduce_range, relu, wzp):
    """All three code paths of the fast version (depthwise float32 shortcut, column GEMM for groups = 1,
    per-group GEMM) against the int64 NumPy reference, bit for bit, with pair saturation ('fbgemm@avx2'),
    weight zero points and a fused ReLU."""
    import dataclasses
    x, w_q, w_scale, bias, geo = case
    w_zp = np.random.default_rng(int(w_q.sum()) & 0xFFFF).integers(-3, 4, w_q.shape[0]) if wzp else 0
    kw = dict(geo, reduce_range=reduce_range, relu=relu, target=target)
    r = dynamic_conv2d_reference(x, w_q, w_scale, w_zp, bias, **kw)
    packed = pack_dynamic_conv_weight(w_q, w_zp, geo["groups"])
    assert bits_differ(dynamic_conv2d(x, packed, w_scale, None, bias, **kw), r) == 0
    if packed.depthwise_w is not None:                          # the per-group GEMM path on the same case
        gemm = dataclasses.replace(packed, depthwise_w=None)
        assert bits_differ(dynamic_conv2d(x, gemm, w_scale, None, bias, **kw), r) == 0


def test_dynamic_conv2d_bad_input():
    w_q = np.zeros((4, 2, 3, 3), np.int8)
    x = np.zeros((1, 4, 6, 6), F32)
    with pytest.raises(ValueError, match="channels"):
        dynamic_conv2d(x, w_q, 0.1, 0, None)                       # 4 channels, weights expect 2·1
    with pytest.raises(ValueError, match="float32 NCHW"):
        dynamic_conv2d(x.astype(np.float64), w_q, 0.1, 0, None, groups=2)
    with pytest.raises(ValueError, match="stride"):
        dynamic_conv2d_reference(x, w_q, 0.1, 0, None, groups=2, stride=0)
    with pytest.raises(ValueError, match="groups"):
        pack_dynamic_conv_weight(w_q, 0, 3)
    with pytest.raises(ValueError, match="NaN"):
        dynamic_conv2d(np.full((1, 4, 6, 6), np.nan, F32), w_q, 0.1, 0, None, groups=2)


# =========================================================================================================
# int4 weight-only linear
# =========================================================================================================
def _int4_case(seed, m, n, group_size, n_groups, signed):
    rng = np.random.default_rng(seed)
    k = group_size * n_groups
    q = rng.integers(-8, 8, size=(n, k)).astype(np.int8)
    z = rng.integers(-8, 8, size=(n, n_groups)).astype(np.int8)
    scale = rng.uniform(0.005, 0.1, size=(n, n_groups)).astype(F32)
    x = rng.standard_normal((m, k)).astype(F32)
    bias = rng.standard_normal(n).astype(F32)
    if not signed:
        q, z = (q + 8).astype(np.uint8), (z + 8).astype(np.uint8)
    return x, q, z, scale, bias, k


def _ort_matmul_nbits(x, q_u, z_u, scale, bias, group_size):
    """com.microsoft MatMulNBits, bits=4, accuracy_level=0; q_u/z_u uint4 codes (None zero points → 8)."""
    n, k = q_u.shape
    b = pack_int4(q_u).reshape(n, k // group_size, group_size // 2)
    zb = None if z_u is None else np.stack([pack_int4(z_u[i]) for i in range(n)]).reshape(-1)  # per row
    inits = {"B": b, "S": scale.reshape(-1), "Z": zb, "g_idx": None, "bias": bias}
    return run_node("MatMulNBits", {"A": x}, inits, np.float32,
                    attrs=dict(K=k, N=n, bits=4, block_size=group_size, accuracy_level=0), domain="com.microsoft")


@HYP
@given(seed=st.integers(0, 2 ** 32 - 1), m=st.sampled_from([1, 1, 2, 3, 9]), n=st.integers(1, 20),
       group_size=st.sampled_from([16, 32, 64, 128]), n_groups=st.integers(1, 4), signed=st.booleans(),
       with_zp=st.booleans(), with_bias=st.booleans())
def test_int4_linear_vs_onnxruntime(seed, m, n, group_size, n_groups, signed, with_zp, with_bias):
    x, q, z, scale, bias, k = _int4_case(seed, m, n, group_size, n_groups, signed)
    bias = bias if with_bias else None
    zp = z if with_zp else None                 # None: 0 for int4 = 8 for uint4 (MatMulNBits' default)
    q_u = (q.astype(np.int16) + 8).astype(np.uint8) if signed else q
    z_u = None if zp is None else ((z.astype(np.int16) + 8).astype(np.uint8) if signed else z)
    y = _ort_matmul_nbits(x, q_u, z_u, scale, bias, group_size)
    kw = dict(group_size=group_size, in_features=k, bias=bias, dtype="int4" if signed else "uint4",
              target="onnxruntime")
    r = int4_linear_reference(x, pack_int4(q), scale, zp, **kw)
    record(f"int4_linear onnxruntime MatMulNBits (M{'=1' if m == 1 else '>1'})", y.size, bits_differ(r, y))
    assert bits_differ(r, y) == 0
    assert bits_differ(int4_linear(x, pack_int4(q), scale, zp, **kw), r) == 0


# MLAS's M = 1 kernel keeps 8 partial sums per output on AVX2 / AVX-VNNI and 16 on AVX-512 (int4.py docstring)
_INT4_CPUS = ["avx2", "avx-vnni", "avx512", "avx512-vnni"]


def _int4_m1_args(x, q, z, scale, bias, k, group_size, signed, with_zp=True):
    kw = dict(group_size=group_size, in_features=k, bias=bias, dtype="int4" if signed else "uint4")
    return (x, pack_int4(q), scale, z if with_zp else None), kw


def test_int4_linear_m1_fold_depends_on_cpu():
    """The same M = 1 product under the AVX2 (8-lane) and the AVX-512 (16-lane) MLAS kernels gives
    different float32 sums; ONNX Runtime on this host matches the fold of this host's CPU, not the other."""
    host_avx512 = resolve_linear("onnxruntime").cpu.avx512
    differing = 0
    for seed in range(20):
        x, q, z, scale, bias, k = _int4_case(seed, 1, 10, 32, 4, False)     # N = 10: 8 grouped + 2 tail outputs
        args, kw = _int4_m1_args(x, q, z, scale, bias, k, 32, False)
        y8 = int4_linear_reference(*args, **kw, target=Target("onnxruntime", "avx2"))
        y16 = int4_linear_reference(*args, **kw, target=Target("onnxruntime", "avx512-vnni"))
        assert bits_differ(int4_linear_reference(*args, **kw, target="onnxruntime@avx-vnni"), y8) == 0
        assert bits_differ(int4_linear_reference(*args, **kw, target="onnxruntime@avx512"), y16) == 0
        if bits_differ(y8, y16) == 0:
            continue
        differing += 1
        y = _ort_matmul_nbits(x, q, z, scale, bias, 32)
        mine, other = (y16, y8) if host_avx512 else (y8, y16)
        assert bits_differ(mine, y) == 0
        assert bits_differ(other, y) > 0
        assert bits_differ(int4_linear_reference(*args, **kw, target="onnxruntime"), y) == 0
    assert differing >= 5, differing


@HYP
@given(seed=st.integers(0, 2 ** 32 - 1), m=st.sampled_from([1, 1, 1, 2, 5]), n=st.integers(1, 23),
       group_size=st.sampled_from([2, 8, 16, 32, 64]), n_groups=st.integers(1, 5), signed=st.booleans(),
       with_zp=st.booleans(), with_bias=st.booleans(), cpu=st.sampled_from(_INT4_CPUS))
def test_int4_linear_fast_equals_reference_per_cpu(seed, m, n, group_size, n_groups, signed, with_zp, with_bias,
                                                   cpu):
    """Numba kernel == readable reference, bit for bit, for every CPU's fold (K not a multiple of 8 or 16
    included: the lane tails)."""
    x, q, z, scale, bias, k = _int4_case(seed, m, n, group_size, n_groups, signed)
    args, kw = _int4_m1_args(x, q, z, scale, bias if with_bias else None, k, group_size, signed, with_zp)
    t = Target("onnxruntime", cpu)
    r = int4_linear_reference(*args, **kw, target=t)
    assert bits_differ(int4_linear(*args, **kw, target=t), r) == 0
    assert bits_differ(int4_linear(*args, **kw, target=resolve_linear(t)), r) == 0      # an Arithmetic works too
    if m > 1:                                   # the SGEMM path is the one-chain order on every CPU
        assert bits_differ(r, int4_linear_reference(*args, **kw, target="minquant")) == 0


def _golden_ort_nodes():
    import glob
    return sorted(glob.glob(os.path.join(os.path.dirname(__file__), "golden", "recordings", "*", "ort_nodes.npz")))


@pytest.mark.parametrize("path", _golden_ort_nodes() or [pytest.param(None, marks=pytest.mark.skip(
    reason="no tests/golden/recordings/*/ort_nodes.npz"))])
def test_int4_linear_golden_matmul_nbits(path):
    """Recorded MatMulNBits outputs (ONNX Runtime on the recording host), replayed with the recording host's
    CPU as the target — whatever CPU runs the test."""
    import json

    import onnx
    from minquant.target import Cpu
    rec = os.path.dirname(path)
    with open(os.path.join(rec, "manifest.json")) as f:
        flags = json.load(f)["host"]["cpu_flags"]
    target = Target("onnxruntime", Cpu.from_flags(flags))
    d = np.load(path)
    cases = sorted({key.split("/")[0] for key in d.files}, key=int)
    checked = total = 0
    for c in cases:
        model = onnx.load_from_string(d[f"{c}/model"].tobytes())
        node = model.graph.node[0]
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs.get("bits", 4) == 4 and attrs.get("accuracy_level", 0) != 4
        k, n, bs = attrs["K"], attrs["N"], attrs["block_size"]
        assert k % bs == 0
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        ins = list(node.input) + [""] * (6 - len(node.input))
        assert ins[4] == ""                                            # no g_idx
        nb = k // bs
        b = np.asarray(inits[ins[1]], np.uint8).reshape(-1)
        scale = np.asarray(inits[ins[2]], F32).reshape(n, nb)
        zp = None
        if ins[3]:
            zb = np.asarray(inits[ins[3]], np.uint8).reshape(n, (nb + 1) // 2)
            zp = np.stack([np.stack([zb[i] & 15, zb[i] >> 4], 1).reshape(-1)[:nb] for i in range(n)]).astype(np.int64)
        bias = np.asarray(inits[ins[5]], F32) if ins[5] else None
        x = d[f"{c}/in_{ins[0]}"]
        y = d[f"{c}/out_0"]
        kw = dict(group_size=bs, in_features=k, bias=bias, dtype="uint4", target=target)
        r = int4_linear_reference(x, b, scale, zp, **kw)
        assert bits_differ(r, y) == 0, (c, bits_differ(r, y), y.size)
        assert bits_differ(int4_linear(x, b, scale, zp, **kw), r) == 0
        record(f"int4_linear golden MatMulNBits ({target})", y.size, 0)
        checked += 1
        total += y.size
    if not checked:
        pytest.skip(f"{path}: no MatMulNBits cases")


@HYP
@given(seed=st.integers(0, 2 ** 32 - 1), m=st.integers(1, 6), n=st.integers(1, 20),
       group_size=st.sampled_from([2, 8, 32]), n_groups=st.integers(1, 4), signed=st.booleans())
def test_int4_linear_vs_torch_float(seed, m, n, group_size, n_groups, signed):
    """Same dequantized weights in a torch float32 linear: only float reassociation separates the two,
    within K·2⁻²⁴·Σ|x·W| (+ the bias' own rounding)."""
    x, q, z, scale, bias, k = _int4_case(seed, m, n, group_size, n_groups, signed)
    kw = dict(group_size=group_size, in_features=k, bias=bias, dtype="int4" if signed else "uint4")
    r = int4_linear(x, pack_int4(q), scale, z, **kw)
    assert bits_differ(r, int4_linear_reference(x, pack_int4(q), scale, z, **kw)) == 0
    w = (q.astype(np.int64) - np.repeat(z, group_size, axis=1)).astype(F32) * np.repeat(scale, group_size, axis=1)
    y = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w.astype(F32)),
                                   torch.from_numpy(bias)).numpy()
    bound = 2 * k * 2.0 ** -24 * (np.abs(x) @ np.abs(w).T) + 2.0 ** -23 * (np.abs(y) + np.abs(bias))
    assert np.all(np.abs(r - y) <= bound)


def test_int4_linear_bad_input():
    x = np.zeros((2, 64), F32)
    q = np.zeros((4, 64), np.int8)
    s = np.ones((4, 2), F32)
    kw = dict(group_size=32, in_features=64)
    with pytest.raises(ValueError, match="bytes"):
        int4_linear(x, pack_int4(q)[:-1], s, None, **kw)
    with pytest.raises(ValueError, match="shape mismatch"):
        int4_linear(np.zeros((2, 32), F32), pack_int4(q), s, None, **kw)
    with pytest.raises(ValueError, match="float32"):
        int4_linear(x.astype(np.float64), pack_int4(q), s, None, **kw)
    with pytest.raises(ValueError, match="w_scale"):
        int4_linear_reference(x, pack_int4(q), np.ones((4, 3), F32), None, **kw)
    with pytest.raises(ValueError, match="multiple of group_size"):
        int4_linear(x, pack_int4(q), s, None, group_size=24, in_features=64)
    with pytest.raises(ValueError, match="w_zp"):
        int4_linear(x, pack_int4(q), s, 9, **kw)
    with pytest.raises(ValueError, match="dtype"):
        int4_linear(x, pack_int4(q), s, None, dtype="int8", **kw)
    for bad in ("fbgemm", "x86@avx2", "qnnpack", "tensorrt", "onnxruntime@sparc", 3):
        with pytest.raises(ValueError, match="target"):
            int4_linear(x, pack_int4(q), s, None, target=bad, **kw)
        with pytest.raises(ValueError, match="target"):
            int4_linear_reference(x, pack_int4(q), s, None, target=bad, **kw)


def test_qavg_pool2d_onnxruntime_fast_equals_reference():
    """The Numba ONNX Runtime average pool gives the NumPy reference's codes (padding, strides, both counts,
    output qparams of their own, a non-contiguous input)."""
    rng = np.random.default_rng(3)
    for k, s, p in (((2, 2), (2, 2), (0, 0)), ((3, 3), (1, 1), (1, 1)), ((3, 2), (2, 1), (1, 0)),
                    ((5, 5), (3, 3), (2, 2))):
        x = rng.integers(70, 170, size=(2, 7, 13, 11), dtype=np.uint8)
        for xin in (x, x[:, ::2]):
            for cip in (False, True):
                kw = dict(x_scale=0.043, x_zp=120, y_scale=0.031, y_zp=97)
                r = qavg_pool2d_onnxruntime_reference(xin, k, s, p, cip, **kw)
                assert 0 < r.min() and r.max() < 255          # not saturated
                assert np.array_equal(qavg_pool2d_onnxruntime(xin, k, s, p, cip, **kw), r)
