"""The channels-last 3×3 depthwise kernel (minquant/kernels/depthwise.py) against the readable reference
``qconv2d_reference`` on the NCHW transposes, bit for bit: every output-stage family (fbgemm per-channel and
per-tensor, ONNX Runtime, oneDNN, minquant's float64, LiteRT's fixed point), exact and pair-saturating
targets (with pairs planted to saturate), strides 1 and 2, padding 0-2, odd and even sizes, channel counts
that are not multiples of 16, activation and weight zero points; each instruction-set level of this host
(VNNI ``vpdpwssd``, generic ``vpmaddwd``, the NumPy path) and a compile for an AVX2-only CPU in a child
process."""
import dataclasses
import itertools
import zlib

import numba
import numpy as np
import pytest
from forced_isa import run_compiled_for_haswell

from minquant.kernels import QConv2d, qconv2d_reference
from minquant.kernels.conv import conv_arithmetic
from minquant.kernels.depthwise import Depthwise3x3NHWC, depthwise3x3_nhwc, depthwise3x3_nhwc_numpy
from minquant.kernels.simd import ISA_AVX2, ISA_AVX512BW, ISA_AVX512VNNI, ISA_NONE, host_isa, isa_available, isa_cap

NOJIT = numba.config.DISABLE_JIT

TARGETS = ["fbgemm", "fbgemm@avx2", "onnxruntime", "x86@avx512-vnni", "minquant", "litert", "litert-builtin",
           "litert-ref"]
GEOMETRY = [  # (batch, channels, H, W, stride, padding)
    (1, 16, 9, 9, 1, 1), (2, 20, 8, 11, 1, 1), (1, 37, 12, 7, 2, 1), (1, 5, 10, 10, 2, 0), (1, 48, 6, 14, 1, 0),
    (2, 33, 13, 13, 2, 2), (1, 24, 3, 3, 1, 1), (1, 18, 4, 5, 2, 1),
]


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _case(geo, target, weights, zps, seed_extra=()):
    n, c, h, w, s, p = geo
    rng = np.random.default_rng(zlib.crc32(repr((geo, target, weights, zps) + seed_extra).encode()))
    w_q = rng.integers(-127, 128, (c, 1, 3, 3)).astype(np.int8)
    if weights == "plant":    # pairs (0,1) and (4,5) of every other channel reach the int16 limits
        w_q[::2, 0, 0, :2] = 127
        w_q[1::2, 0, 1, 1:] = -128
    elif weights == "narrow":
        w_q = (w_q // 2).astype(np.int8)
    x_zp = int(rng.integers(1, 250)) if zps else 0
    w_zp = rng.integers(-3, 4, c) if (zps and not target.startswith("litert")) else 0
    x_q = rng.integers(0, 256, (n, c, h, w)).astype(np.uint8)
    if weights == "plant":
        x_q[:, :, : h // 2] = 255
    per_tensor = target == "fbgemm" and weights == "narrow"     # fbgemm's FMA bias form (mode 1)
    w_s = np.float32(0.004) if per_tensor else rng.uniform(0.002, 0.01, c).astype(np.float32)
    bias = rng.normal(0, 1, c).astype(np.float32)
    return x_q, 0.02, x_zp, w_q, w_s, w_zp, bias, 0.05, 120, dict(stride=s, padding=p)


def _check_unsaturated(ref):
    assert (ref == 0).mean() < 0.5 and (ref == 255).mean() < 0.5 and len(np.unique(ref)) > 10


@pytest.mark.parametrize("geo", GEOMETRY)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("weights,zps", [("wide", False), ("plant", True), ("narrow", True)])
def test_depthwise_nhwc_matches_reference(geo, target, weights, zps):
    x_q, xs, xz, w_q, ws, wz, b, ys, yz, kw = _case(geo, target, weights, zps)
    c = w_q.shape[0]
    ref = qconv2d_reference(x_q, xs, xz, w_q, ws, wz, b, ys, yz, groups=c, target=target, **kw)
    _check_unsaturated(ref)
    layer = Depthwise3x3NHWC(w_q, ws, wz, b, xs, xz, ys, yz, target=target, **kw)
    got = layer(_nhwc(x_q))
    np.testing.assert_array_equal(got, _nhwc(ref))
    np.testing.assert_array_equal(depthwise3x3_nhwc_numpy(_nhwc(x_q), layer), _nhwc(ref))


@pytest.mark.skipif(NOJIT, reason="the instruction-set levels need the JIT")
@pytest.mark.parametrize("geo", GEOMETRY[:4])
@pytest.mark.parametrize("target", ["fbgemm", "onnxruntime", "x86@avx512-vnni"])
def test_every_isa_level_of_this_host_gives_the_same_codes(geo, target):
    """VNNI (vpdpwssd), AVX-512BW and AVX2 (generic IR: vpmaddwd + vpaddd) and the NumPy path."""
    x_q, xs, xz, w_q, ws, wz, b, ys, yz, kw = _case(geo, target, "plant", True)
    layer = Depthwise3x3NHWC(w_q, ws, wz, b, xs, xz, ys, yz, target=target, **kw)
    ref = _nhwc(qconv2d_reference(x_q, xs, xz, w_q, ws, wz, b, ys, yz, groups=w_q.shape[0], target=target, **kw))
    for isa in (ISA_AVX512VNNI, ISA_AVX512BW, ISA_AVX2, ISA_NONE):
        if not isa_available(isa):
            continue
        with isa_cap(isa):
            np.testing.assert_array_equal(layer(_nhwc(x_q)), ref, err_msg=f"isa {isa}")


def test_planted_pairs_saturate_and_are_reproduced():
    """The planted weights make fbgemm's clamped pairs differ from the exact sums — and the kernel follows
    the target: the saturating one equals fbgemm's integers, the exact one ONNX Runtime's."""
    geo = (1, 40, 10, 10, 1, 1)
    x_q, xs, xz, w_q, ws, wz, b, ys, yz, kw = _case(geo, "fbgemm", "plant", False)
    c = w_q.shape[0]
    sat = Depthwise3x3NHWC(w_q, ws, wz, b, xs, xz, ys, yz, target="fbgemm", **kw)
    assert sat.saturate and sat.risky.all()
    ar = conv_arithmetic("fbgemm", w_q.shape, 0, c, (1, 1), (1, 1), (1, 1))
    exact_ar = dataclasses.replace(ar, saturate_pairs=False)   # the same output stage, exact accumulator
    exact = Depthwise3x3NHWC(w_q, ws, wz, b, xs, xz, ys, yz, target=exact_ar, **kw)
    want_sat = _nhwc(qconv2d_reference(x_q, xs, xz, w_q, ws, wz, b, ys, yz, groups=c, target=ar, **kw))
    want_exact = _nhwc(qconv2d_reference(x_q, xs, xz, w_q, ws, wz, b, ys, yz, groups=c, target=exact_ar, **kw))
    assert (want_sat != want_exact).sum() > 20          # the plant matters
    np.testing.assert_array_equal(sat(_nhwc(x_q)), want_sat)
    np.testing.assert_array_equal(exact(_nhwc(x_q)), want_exact)


def test_saturating_target_with_weight_zero_points():
    """Pairs clamped on the raw weights, the weight zero points as their own term (kind.wzp)."""
    geo = (1, 21, 9, 10, 1, 1)
    x_q, xs, xz, w_q, ws, _, b, ys, yz, kw = _case(geo, "fbgemm", "plant", True)
    c = w_q.shape[0]
    wz = np.random.default_rng(3).integers(-4, 5, c)
    ar = dataclasses.replace(conv_arithmetic("fbgemm", w_q.shape, 0, c, (1, 1), (1, 1), (1, 1)), saturate_pairs=True)
    layer = Depthwise3x3NHWC(w_q, ws, wz, b, xs, xz, ys, yz, target=ar, **kw)
    assert layer.wzp
    ref = qconv2d_reference(x_q, xs, xz, w_q, ws, wz, b, ys, yz, groups=c, target=ar, **kw)
    _check_unsaturated(ref)
    np.testing.assert_array_equal(layer(_nhwc(x_q)), _nhwc(ref))


@pytest.mark.parametrize("target", ["fbgemm", "onnxruntime"])
def test_from_qconv2d_equals_the_layer(target):
    rng = np.random.default_rng(11)
    c = 24
    x_q = rng.integers(0, 256, (2, c, 14, 14)).astype(np.uint8)
    w_q = rng.integers(-127, 128, (c, 1, 3, 3)).astype(np.int8)
    ws = rng.uniform(0.002, 0.01, c).astype(np.float32)
    b = rng.normal(0, 1, c).astype(np.float32)
    q = QConv2d(w_q, ws, 0, b, 0.02, 3, 0.05, 120, stride=2, padding=1, groups=c, relu=True,
                clamp_hi=rng.integers(200, 256, c), target=target)
    dw = Depthwise3x3NHWC.from_qconv2d(q)
    out = np.empty(dw.out_shape((2, 14, 14, c)), np.uint8)
    assert depthwise3x3_nhwc(_nhwc(x_q), dw, out) is out
    np.testing.assert_array_equal(out, _nhwc(q(x_q)))


def test_bad_inputs_are_refused_in_the_users_terms():
    rng = np.random.default_rng(0)
    w_q = rng.integers(-127, 128, (8, 1, 3, 3)).astype(np.int8)
    layer = Depthwise3x3NHWC(w_q, np.float32(0.01), 0, None, 0.02, 3, 0.05, 120, padding=1)
    with pytest.raises(ValueError, match="uint8 NHWC"):
        layer(np.zeros((1, 5, 5, 8), np.int8))
    with pytest.raises(ValueError, match="channels"):
        layer(np.zeros((1, 5, 5, 7), np.uint8))
    with pytest.raises(ValueError, match="out must be"):
        layer(np.zeros((1, 5, 5, 8), np.uint8), np.zeros((1, 5, 5, 7), np.uint8))
    buf = np.zeros((1, 5, 5, 8), np.uint8)
    with pytest.raises(ValueError, match="must not overlap"):
        Depthwise3x3NHWC(w_q, np.float32(0.01), 0, None, 0.02, 3, 0.05, 120, padding=1)(buf, buf)
    with pytest.raises(ValueError, match="output would be empty"):
        Depthwise3x3NHWC(w_q, np.float32(0.01), 0, None, 0.02, 3, 0.05, 120, padding=0)(
            np.zeros((1, 2, 5, 8), np.uint8))
    with pytest.raises(ValueError, match="3×3 kernel"):
        Depthwise3x3NHWC(rng.integers(-9, 9, (8, 1, 5, 5)).astype(np.int8), np.float32(0.01), 0, None, 0.02, 3,
                         0.05, 120)
    with pytest.raises(ValueError, match="stride 1 or 2"):
        Depthwise3x3NHWC(w_q, np.float32(0.01), 0, None, 0.02, 3, 0.05, 120, stride=3)
    q = QConv2d(w_q, np.float32(0.01), 0, None, 0.02, 3, 0.05, 120, groups=8, dilation=2, padding=2)
    with pytest.raises(ValueError, match="dilation 1"):
        Depthwise3x3NHWC.from_qconv2d(q)


_CHILD = r"""
import json
import numpy as np
from minquant.kernels import qconv2d_reference
from minquant.kernels.depthwise import Depthwise3x3NHWC
from minquant.kernels.simd import ISA_AVX2, isa_cap
rng = np.random.default_rng(5)
bad = []
for target in ("fbgemm", "onnxruntime", "x86@avx512-vnni", "minquant"):
    for (n, c, h, w, s, p) in ((1, 20, 12, 13, 1, 1), (2, 37, 11, 9, 2, 1), (1, 16, 8, 8, 1, 0)):
        x = rng.integers(0, 256, (n, c, h, w)).astype(np.uint8)
        wq = rng.integers(-127, 128, (c, 1, 3, 3)).astype(np.int8)
        ws = rng.uniform(0.002, 0.01, c).astype(np.float32)
        b = rng.standard_normal(c).astype(np.float32)
        want = qconv2d_reference(x, 0.03, 5, wq, ws, 0, b, 0.4, 9, groups=c, stride=s, padding=p, target=target)
        layer = Depthwise3x3NHWC(wq, ws, 0, b, 0.03, 5, 0.4, 9, stride=s, padding=p, target=target)
        with isa_cap(ISA_AVX2):
            got = layer(np.ascontiguousarray(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
        if not np.array_equal(got, want):
            bad.append([target, c, s, p, int((got != want).sum())])
import numba
print(json.dumps(dict(bad=bad, cpu=numba.config.CPU_NAME)))
"""


@pytest.mark.skipif(NOJIT, reason="compiles the kernels: needs the JIT")
@pytest.mark.skipif(not NOJIT and host_isa() < ISA_AVX2, reason="the child runs AVX2 code: this CPU lacks AVX2")
def test_kernel_compiled_for_avx2_gives_the_same_codes():
    """The generic vector IR compiled for Haswell (AVX2, no AVX-512: the CI's Zen 3 case) in a child process:
    512-bit operations split in two, masked loads and stores of the channel tail lowered without AVX-512."""
    assert run_compiled_for_haswell(_CHILD)["bad"] == []


def test_geometry_list_covers_the_brief():
    """Strides 1 and 2, padding 0 and 1, odd and even sizes, channels not a multiple of 16."""
    assert {g[4] for g in GEOMETRY} == {1, 2} and {0, 1} <= {g[5] for g in GEOMETRY}
    assert any(g[2] % 2 for g in GEOMETRY) and any(g[2] % 2 == 0 for g in GEOMETRY)
    assert any(g[1] % 16 for g in GEOMETRY) and list(itertools.chain(TARGETS))


@pytest.mark.parametrize("target", ["fbgemm", "onnxruntime", "x86@avx512-vnni"])
def test_large_multiplier_keeps_the_float_rounding(target):
    """The integer rounding (lrint + integer clamps) is used only when every value before rounding stays
    below 2^30; a huge multiplier s_x·s_w/s_y takes the float32 rounding path — the same codes either way."""
    rng = np.random.default_rng(8)
    c = 20
    w_q = rng.integers(-3, 4, (c, 1, 3, 3)).astype(np.int8)
    x_q = np.full((1, c, 9, 9), 100, np.uint8)
    x_q[0, :, 4, 4] = rng.integers(99, 102, c)                # accumulators 0 or a few units: codes not all clamped
    ws = np.full(c, 0.01, np.float32)
    kw = dict(stride=1, padding=1)
    small, large = (Depthwise3x3NHWC(w_q, ws, 0, None, 0.02, 100, ys, 120, target=target, **kw) for ys in (0.05, 2e-9))
    assert small.kinds[ISA_AVX512VNNI].int_round and not large.kinds[ISA_AVX512VNNI].int_round
    for ys, layer in ((0.05, small), (2e-9, large)):
        ref = qconv2d_reference(x_q, 0.02, 100, w_q, ws, 0, None, ys, 120, groups=c, target=target, **kw)
        np.testing.assert_array_equal(layer(_nhwc(x_q)), _nhwc(ref))
