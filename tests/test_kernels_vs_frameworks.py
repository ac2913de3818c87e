"""qlinear / qconv2d against PyTorch (engines fbgemm, x86, qnnpack) and ONNX Runtime: 0 mismatching elements.

Inputs are drawn by hypothesis: shapes, strides, paddings, dilations, groups (depthwise included), per-tensor
and per-channel weights, full-range int8 weights (so that fbgemm's int16 pair saturation really happens),
random activation qparams. The output scale/zero point are chosen from the float result's range so that
outputs span the uint8 range without piling up at 0 or 255 (checked), and fast == reference is asserted too.
"""
import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

from minquant.affine import quantize_bias
from minquant.kernels import qconv2d, qconv2d_reference, qlinear, qlinear_reference
from minquant.kernels.arithmetic import arithmetic
from reference import ort_quant, torch_quant

SETTINGS = dict(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _output_qparams(real):
    """y_scale, y_zp so that the real output range maps onto ~[16, 240]: full range, not saturated (the
    margin absorbs the deviation that int16 pair saturation adds to the exact result)."""
    lo, hi = float(real.min()), float(real.max())
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    ys = np.float32(max(hi - lo, 1e-3) / 224.0)
    yz = int(np.clip(round(-lo / float(ys)) + 16, 0, 255))
    return ys, yz


def _assert_not_saturated(y):
    if y.size < 16:
        return
    frac = float(np.mean((y == 0) | (y == 255)))
    assert frac < 0.2, f"test data saturates: {frac:.0%} of outputs at 0 or 255"


@st.composite
def linear_case(draw, allow_wzp=True):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    m, k, n = draw(st.integers(1, 24)), draw(st.integers(1, 320)), draw(st.integers(1, 48))
    per_channel = draw(st.booleans())
    xs = np.float32(rng.uniform(0.002, 0.05))
    xz = int(rng.integers(0, 256))
    x_q = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w_q = rng.integers(-128, 128, (n, k)).astype(np.int8)
    if per_channel:
        ws = rng.uniform(0.0005, 0.02, n).astype(np.float32)
        wz = np.zeros(n, np.int64)
    else:
        ws = np.float32(rng.uniform(0.0005, 0.02))
        wz = int(rng.integers(-3, 4)) if allow_wzp else 0
    bias = rng.normal(0, 2, n).astype(np.float32) if draw(st.booleans()) else None
    relu = draw(st.booleans())
    ws_b = np.broadcast_to(ws, (n,)).astype(np.float64)
    real = ((x_q.astype(np.float64) - xz) @ (w_q.astype(np.float64) - np.broadcast_to(wz, (n,))[:, None]).T
            * xs * ws_b + (0 if bias is None else bias))
    ys, yz = _output_qparams(real)
    return x_q, xs, xz, w_q, ws, wz, bias, ys, yz, relu


@pytest.mark.parametrize("engine,target", [("fbgemm", "fbgemm"), ("x86", "fbgemm"), ("qnnpack", "qnnpack")])
@settings(**SETTINGS)
@given(case=linear_case())
def test_qlinear_matches_torch(engine, target, case):
    x_q, xs, xz, w_q, ws, wz, bias, ys, yz, relu = case
    with torch_quant.engine(engine):
        want = torch_quant.qlinear(x_q, xs, xz, w_q, ws, wz, bias, ys, yz, relu=relu)
    ref = qlinear_reference(x_q, xs, xz, w_q, ws, wz, bias, ys, yz, relu=relu, target=target)
    fast = qlinear(x_q, xs, xz, w_q, ws, wz, bias, ys, yz, relu=relu, target=target)
    if not relu:
        _assert_not_saturated(want)
    assert int((ref != want).sum()) == 0, f"{int((ref != want).sum())} of {want.size} elements differ"
    np.testing.assert_array_equal(fast, ref)


@st.composite
def conv_case(draw):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["dense", "pointwise", "depthwise", "depthwise_mult", "grouped"]))
    k = 1 if kind == "pointwise" else draw(st.sampled_from([1, 2, 3, 5]))
    kh, kw = (k, k) if draw(st.booleans()) else (k, draw(st.sampled_from([1, 3])))
    stride = 1 if kind == "pointwise" else draw(st.integers(1, 3))
    pad = 0 if kind == "pointwise" else draw(st.integers(0, max(kh, kw) // 2 + 1))
    dil = 1 if kind == "pointwise" else draw(st.integers(1, 2))
    n = draw(st.integers(1, 2))
    size_max = 40 if kind.startswith("depthwise") else 14   # depthwise has a row path for wide images
    h = draw(st.integers(max(1, dil * (kh - 1) + 1 - 2 * pad), size_max))
    w = draw(st.integers(max(1, dil * (kw - 1) + 1 - 2 * pad), size_max))
    if kind in ("dense", "pointwise"):
        groups, cin, cout = 1, draw(st.integers(1, 24)), draw(st.integers(1, 24))
    elif kind == "depthwise":
        cin = draw(st.integers(1, 24))
        groups, cout = cin, cin
    elif kind == "depthwise_mult":
        cin = draw(st.integers(1, 8))
        groups, cout = cin, cin * draw(st.integers(2, 3))
    else:
        groups = draw(st.integers(2, 4))
        cin, cout = groups * draw(st.integers(2, 6)), groups * draw(st.integers(1, 6))
    per_channel = draw(st.booleans())
    xs = np.float32(rng.uniform(0.002, 0.05))
    xz = int(rng.integers(0, 256))
    x_q = rng.integers(0, 256, (n, cin, h, w)).astype(np.uint8)
    w_q = rng.integers(-128, 128, (cout, cin // groups, kh, kw)).astype(np.int8)
    ws = rng.uniform(0.0005, 0.02, cout).astype(np.float32) if per_channel else np.float32(rng.uniform(0.0005, 0.02))
    wz = np.zeros(cout, np.int64) if per_channel else 0
    bias = rng.normal(0, 2, cout).astype(np.float32) if draw(st.booleans()) else None
    relu = draw(st.booleans())
    import torch
    wf = w_q.astype(np.float32) * (ws.reshape(-1, 1, 1, 1) if per_channel else ws)
    real = torch.nn.functional.conv2d(torch.from_numpy((x_q.astype(np.float32) - xz) * xs), torch.from_numpy(wf),
                                      None if bias is None else torch.from_numpy(bias), stride, pad, dil,
                                      groups).numpy()
    ys, yz = _output_qparams(real)
    return (x_q, xs, xz, w_q, ws, wz, bias, ys, yz), dict(stride=stride, padding=pad, dilation=dil,
                                                          groups=groups, relu=relu)


@pytest.mark.parametrize("engine,target", [("fbgemm", "fbgemm"), ("x86", "fbgemm"), ("qnnpack", "qnnpack")])
@settings(**SETTINGS)
@given(case=conv_case())
def test_qconv2d_matches_torch(engine, target, case):
    args, kw = case
    with torch_quant.engine(engine):
        want = torch_quant.qconv2d(*args, **kw)
    ref = qconv2d_reference(*args, **kw, target=target)
    fast = qconv2d(*args, **kw, target=target)
    if not kw["relu"]:
        _assert_not_saturated(want)
    assert int((ref != want).sum()) == 0, f"{int((ref != want).sum())} of {want.size} elements differ"
    np.testing.assert_array_equal(fast, ref)


@settings(**SETTINGS)
@given(case=linear_case(allow_wzp=False))
def test_qlinear_matches_onnxruntime(case):
    x_q, xs, xz, w_q, ws, wz, bias, ys, yz, relu = case
    b_q = None if bias is None else quantize_bias(bias, xs, ws, target="onnxruntime")
    wz8 = np.asarray(wz).astype(np.int8)
    if b_q is None:
        want = ort_quant.qlinear_matmul(x_q, xs, xz, w_q, ws, wz8, ys, yz)
    else:
        want = ort_quant.qgemm(x_q, xs, xz, w_q, ws, wz8, b_q, ys, yz)
    _assert_not_saturated(want)
    ref = qlinear_reference(x_q, xs, xz, w_q, ws, wz, b_q, ys, yz, target="onnxruntime")
    fast = qlinear(x_q, xs, xz, w_q, ws, wz, b_q, ys, yz, target="onnxruntime")
    assert int((ref != want).sum()) == 0, f"{int((ref != want).sum())} of {want.size} elements differ"
    np.testing.assert_array_equal(fast, ref)


@settings(**SETTINGS)
@given(case=conv_case())
def test_qconv2d_matches_onnxruntime(case):
    (x_q, xs, xz, w_q, ws, wz, bias, ys, yz), kw = case
    kw = dict(kw)
    kw.pop("relu")  # QLinearConv has no fused ReLU
    b_q = None if bias is None else quantize_bias(bias, xs, ws, target="onnxruntime")
    want = ort_quant.qlinear_conv(x_q, xs, xz, w_q, ws, np.asarray(wz).astype(np.int8), b_q, ys, yz, **kw)
    _assert_not_saturated(want)
    ref = qconv2d_reference(x_q, xs, xz, w_q, ws, wz, b_q, ys, yz, **kw, target="onnxruntime")
    fast = qconv2d(x_q, xs, xz, w_q, ws, wz, b_q, ys, yz, **kw, target="onnxruntime")
    assert int((ref != want).sum()) == 0, f"{int((ref != want).sum())} of {want.size} elements differ"
    np.testing.assert_array_equal(fast, ref)


def test_pair_saturation_is_what_makes_fbgemm_exact():
    """The test above can fail: without int16 pair saturation (or with exact 'qnnpack' arithmetic) the
    emulation disagrees with torch's fbgemm on inputs where pairs overflow, and with it, it agrees."""
    if not arithmetic("fbgemm").saturate_pairs:
        pytest.skip("this CPU has VNNI: fbgemm does not saturate here")
    rng = np.random.default_rng(0)
    x_q = rng.integers(200, 256, (8, 64)).astype(np.uint8)          # large activations
    w_q = np.where(rng.random((16, 64)) < 0.5, 127, 100).astype(np.int8)  # same-sign pairs ≥ 129
    xs, xz, ws = np.float32(0.01), 0, np.float32(0.001)
    ys, yz = np.float32(20.0 / 250), 0   # exact result ≈ 16.5, saturated ≈ 10.5: both inside the range
    with torch_quant.engine("fbgemm"):
        want = torch_quant.qlinear(x_q, xs, xz, w_q, ws, 0, None, ys, yz)
    exact = qlinear_reference(x_q, xs, xz, w_q, ws, 0, None, ys, yz, target="minquant")
    emulated = qlinear_reference(x_q, xs, xz, w_q, ws, 0, None, ys, yz, target="fbgemm")
    assert 0 < want.min() and want.max() < 255          # not clipped: the difference is arithmetic
    assert (exact != want).mean() > 0.5
    np.testing.assert_array_equal(emulated, want)


def test_realistic_weights_rarely_saturate_and_fast_path_handles_both():
    """Bell-shaped (trained-like) weights have few risky pairs; fast == reference either way."""
    from minquant.kernels.gemm import gemm_u8s8, gemm_u8s8_reference, pack_weight
    rng = np.random.default_rng(1)
    w = np.clip(np.rint(rng.normal(0, 30, (64, 300))), -127, 127).astype(np.int8)
    a = rng.integers(0, 256, (40, 300)).astype(np.uint8)
    packed = pack_weight(w, 0)
    assert 0 < len(packed.risky) < 0.1 * w.size / 2
    for sat in (True, False):
        np.testing.assert_array_equal(gemm_u8s8(a, packed, 17, saturate_pairs=sat),
                                      gemm_u8s8_reference(a, w, 17, 0, saturate_pairs=sat))


@pytest.mark.parametrize("engine,target", [("fbgemm", "fbgemm"), ("qnnpack", "qnnpack")])
def test_output_multiplier_rounding_over_many_scales(engine, target):
    """Large outputs over many random output scales: the multiplier's last bit matters here (qnnpack
    multiplies by f32(1/s_y), fbgemm divides by s_y); one wrong rounding shows up as flipped codes."""
    rng = np.random.default_rng(11)
    x_q = rng.integers(0, 256, (256, 96)).astype(np.uint8)
    w_q = np.clip(np.rint(rng.normal(0, 25, (128, 96))), -127, 127).astype(np.int8)
    ws = rng.uniform(0.001, 0.01, 128).astype(np.float32)
    bias = rng.normal(0, 1, 128).astype(np.float32)
    xs, xz = np.float32(0.02), 100
    real = (x_q.astype(np.float64) - xz) @ (w_q.astype(np.float64) * ws[:, None]).T * xs + bias
    total = 0
    for _ in range(60):
        ys, yz = _output_qparams(real)
        ys = np.float32(ys * rng.uniform(1.0, 1.3))
        with torch_quant.engine(engine):
            want = torch_quant.qlinear(x_q, xs, xz, w_q, ws, np.zeros(128, np.int64), bias, ys, yz)
        got = qlinear(x_q, xs, xz, w_q, ws, np.zeros(128, np.int64), bias, ys, yz, target=target)
        total += int((got != want).sum())
    assert total == 0
