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
from minquant.target import Cpu, Target
from minquant.frameworks import ort_oracle as ort_quant, torch_oracle as torch_quant

import forced_isa

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


@pytest.mark.parametrize("engine", ["fbgemm", "x86", "qnnpack"])
@settings(**SETTINGS)
@given(case=linear_case())
def test_qlinear_matches_torch(engine, case):
    """The host's native path of each engine (x86 runs every quantized linear on fbgemm)."""
    target = engine
    x_q, xs, xz, w_q, ws, wz, bias, ys, yz, relu = case
    with torch_quant.engine(engine):
        want = torch_quant.qlinear(x_q, xs, xz, w_q, ws, wz, bias, ys, yz, relu=relu)
    ref = qlinear_reference(x_q, xs, xz, w_q, ws, wz, bias, ys, yz, relu=relu, target=target)
    fast = qlinear(x_q, xs, xz, w_q, ws, wz, bias, ys, yz, relu=relu, target=target)
    if not relu:
        _assert_not_saturated(want)
    assert int((ref != want).sum()) == 0, f"{int((ref != want).sum())} of {want.size} elements differ"
    np.testing.assert_array_equal(fast, ref)


def random_conv_case(rng):
    """One random conv case (all its choices from ``rng``): a kind (dense, pointwise, depthwise, depthwise
    with a channel multiplier, grouped), kernel, stride, padding, dilation, per-tensor or per-channel full-range
    int8 weights (so fbgemm's int16 pairs really saturate), optional bias and fused ReLU, and output qparams
    from the float result's range."""
    kind = ["dense", "pointwise", "depthwise", "depthwise_mult", "grouped"][rng.integers(5)]
    k = 1 if kind == "pointwise" else int(rng.choice([1, 2, 3, 5]))
    kh, kw = (k, k) if rng.random() < 0.5 else (k, int(rng.choice([1, 3])))
    stride = 1 if kind == "pointwise" else int(rng.integers(1, 4))
    pad = 0 if kind == "pointwise" else int(rng.integers(0, max(kh, kw) // 2 + 2))
    dil = 1 if kind == "pointwise" else int(rng.integers(1, 3))
    n = int(rng.integers(1, 3))
    size_max = 40 if kind.startswith("depthwise") else 14   # depthwise has a row path for wide images
    h = int(rng.integers(max(1, dil * (kh - 1) + 1 - 2 * pad), size_max + 1))
    w = int(rng.integers(max(1, dil * (kw - 1) + 1 - 2 * pad), size_max + 1))
    if kind in ("dense", "pointwise"):
        groups, cin, cout = 1, int(rng.integers(1, 25)), int(rng.integers(1, 25))
    elif kind == "depthwise":
        cin = int(rng.integers(1, 25))
        groups, cout = cin, cin
    elif kind == "depthwise_mult":
        cin = int(rng.integers(1, 9))
        groups, cout = cin, cin * int(rng.integers(2, 4))
    else:
        groups = int(rng.integers(2, 5))
        cin, cout = groups * int(rng.integers(2, 7)), groups * int(rng.integers(1, 7))
    per_channel = bool(rng.random() < 0.5)
    xs = np.float32(rng.uniform(0.002, 0.05))
    xz = int(rng.integers(0, 256))
    x_q = rng.integers(0, 256, (n, cin, h, w)).astype(np.uint8)
    w_q = rng.integers(-128, 128, (cout, cin // groups, kh, kw)).astype(np.int8)
    ws = rng.uniform(0.0005, 0.02, cout).astype(np.float32) if per_channel else np.float32(rng.uniform(0.0005, 0.02))
    wz = np.zeros(cout, np.int64) if per_channel else 0
    bias = rng.normal(0, 2, cout).astype(np.float32) if rng.random() < 0.5 else None
    relu = bool(rng.random() < 0.5)
    import torch
    wf = w_q.astype(np.float32) * (ws.reshape(-1, 1, 1, 1) if per_channel else ws)
    real = torch.nn.functional.conv2d(torch.from_numpy((x_q.astype(np.float32) - xz) * xs), torch.from_numpy(wf),
                                      None if bias is None else torch.from_numpy(bias), stride, pad, dil,
                                      groups).numpy()
    ys, yz = _output_qparams(real)
    return (x_q, xs, xz, w_q, ws, wz, bias, ys, yz), dict(stride=stride, padding=pad, dilation=dil,
                                                          groups=groups, relu=relu)


@st.composite
def conv_case(draw):
    return random_conv_case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1))))


@pytest.mark.parametrize("engine", ["fbgemm", "x86", "qnnpack"])
@settings(**SETTINGS)
@given(case=conv_case())
def test_qconv2d_matches_torch(engine, case):
    """The host's native path: on an AVX512-VNNI host engine x86 sends most of these to oneDNN."""
    target = engine
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
    """fbgemm's AVX2 path (live: in-process on an AVX2 host, else in a subprocess capped at AVX2): without
    int16 pair saturation (or with exact arithmetic) the emulation disagrees with torch on inputs where pairs
    overflow, and with it, it agrees. On a VNNI host the native path is checked too: exact there."""
    rng = np.random.default_rng(0)
    x_q = rng.integers(200, 256, (8, 64)).astype(np.uint8)          # large activations
    w_q = np.where(rng.random((16, 64)) < 0.5, 127, 100).astype(np.int8)  # same-sign pairs ≥ 129
    xs, xz, ws = np.float32(0.01), 0, np.float32(0.001)
    ys, yz = np.float32(20.0 / 250), 0   # exact result ≈ 16.5, saturated ≈ 10.5: both inside the range
    args = (x_q, xs, xz, w_q, ws, 0, None, ys, yz)
    want_avx2 = forced_isa.call("minquant.frameworks.torch_oracle:qlinear", *args, engine="fbgemm")
    with torch_quant.engine("fbgemm"):
        want_host = torch_quant.qlinear(*args)
    exact = qlinear_reference(*args, target="minquant")
    assert 0 < want_avx2.min() and want_avx2.max() < 255          # not clipped: the difference is arithmetic
    assert (exact != want_avx2).mean() > 0.5
    np.testing.assert_array_equal(qlinear_reference(*args, target=Target("fbgemm", forced_isa.forced_cpu())),
                                  want_avx2)
    np.testing.assert_array_equal(qlinear(*args, target=Target("fbgemm", forced_isa.forced_cpu())), want_avx2)
    np.testing.assert_array_equal(qlinear_reference(*args, target="fbgemm"), want_host)
    if Cpu.host().fbgemm_vnni:
        np.testing.assert_array_equal(want_host, exact)             # VNNI: vpdpbusd, exact int32


@pytest.mark.parametrize("engine", ["fbgemm", "x86"])
def test_qconv2d_forced_avx2_matches_torch(engine):
    """The AVX2 paths of this host's torch, live (subprocess with FBGEMM_ENABLE_INSTRUCTIONS=AVX2,
    ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2): fbgemm's saturating pairs and, on a VNNI host
    under x86, oneDNN's AVX2 kernels. 40 random cases of every kind, one child process."""
    cases = [random_conv_case(np.random.default_rng(1000 + i)) for i in range(40)]
    target = Target(engine, forced_isa.forced_cpu())
    if engine == "x86" and target.cpu.torch_picks_onednn:
        # torch still routes these (symmetric weights, groups <= 100) to oneDNN, now on its AVX2 kernels:
        # minquant refuses to guess (Target.conv); fbgemm-routed layers (asymmetric weights) are checked
        args, kw = cases[0]
        with pytest.raises(ValueError, match="capped below AVX512-VNNI"):
            qconv2d(*args, **kw, target=target)
        cases = [((x, xs, xz, w, ws, 1, None if b is None else b, ys, yz), {**kw, "relu": False})
                 for (x, xs, xz, w, ws, wz, b, ys, yz), kw in cases if np.ndim(ws) == 0]
        assert len(cases) >= 10
    wants = forced_isa.call_many("minquant.frameworks.torch_oracle:qconv2d", [(args, kw) for args, kw in cases], engine=engine)
    bad = []
    for i, ((args, kw), want) in enumerate(zip(cases, wants)):
        got = qconv2d(*args, **kw, target=target)
        np.testing.assert_array_equal(qconv2d_reference(*args, **kw, target=target), got)
        if int((got != want).sum()):
            bad.append((i, int((got != want).sum()), want.size))
    assert not bad, f"(case, differing, elements): {bad}"


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


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
def test_output_multiplier_rounding_over_many_scales(engine):
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
        got = qlinear(x_q, xs, xz, w_q, ws, np.zeros(128, np.int64), bias, ys, yz, target=engine)
        total += int((got != want).sum())
    assert total == 0
