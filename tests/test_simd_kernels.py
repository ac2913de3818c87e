"""The int8 SIMD GEMM (minquant/kernels/simd.py, tiles.py, gemm_simd.py) against the readable references.

Every instruction set this host can run is exercised through ``isa_cap`` (on an AVX512-VNNI host: VNNI,
AVX-512BW and AVX2, and the float32 fallback). Each case names the path it verifies — the plan
(:func:`minquant.kernels.gemm_simd.choose_plan`) is asserted, then the layer's codes are compared with
``qlinear_reference`` / ``qconv2d_reference`` (``np.array_equal``). Shapes are odd on purpose: rows that
leave a remainder after the 6-row tile, channels / pixels that do not fill a 64-lane panel, K not a
multiple of 4, and K longer than one K block (512).
"""
import numpy as np
import pytest

from minquant.kernels import QConv2d, QLinear, qconv2d_reference, qlinear_reference
from minquant.kernels.gemm_simd import GemmPlan, choose_plan, split_weights
from minquant.kernels.simd import ISA_AVX2, ISA_AVX512BW, ISA_AVX512VNNI, ISA_NAMES, ISA_NONE, isa_available, isa_cap

ISAS = [ISA_AVX512VNNI, ISA_AVX512BW, ISA_AVX2, ISA_NONE]


def _isa_param(isa):
    return pytest.param(isa, id=ISA_NAMES[isa],
                        marks=pytest.mark.skipif(not isa_available(isa), reason=f"host cannot run {ISA_NAMES[isa]}"))


ISA_PARAMS = [_isa_param(i) for i in ISAS]

# targets: (name, pair-saturating GEMM?) — fbgemm without VNNI saturates; the others accumulate exactly
SAT = "fbgemm@avx2"
EXACT = ["fbgemm@avx512-vnni", "onnxruntime@avx512-vnni", "qnnpack", "minquant"]


def _weights(rng, shape, full_range):
    """Full-range int8 (pairs can saturate int16) or 7-bit weights (no pair can)."""
    lo, hi = (-128, 128) if full_range else (-64, 64)
    return rng.integers(lo, hi, shape).astype(np.int8)


def expected_plan(isa, saturate, can_saturate):
    if isa == ISA_NONE:
        return GemmPlan(ISA_NONE, False, False)
    if isa == ISA_AVX512VNNI:
        return GemmPlan(isa, saturate and can_saturate, False)
    return GemmPlan(isa, True, can_saturate and not saturate)


def test_choose_plan_table():
    # the target decides the arithmetic, the host the instructions
    assert choose_plan(False, True, ISA_AVX512VNNI).describe() == "AVX512-VNNI vpdpbusd"
    assert choose_plan(True, False, ISA_AVX512VNNI).describe() == "AVX512-VNNI vpdpbusd"   # nothing can saturate
    assert choose_plan(True, True, ISA_AVX512VNNI).describe() == "AVX512-VNNI vpmaddubsw+vpdpwssd"
    assert choose_plan(True, True, ISA_AVX512BW) == GemmPlan(ISA_AVX512BW, True, False)
    assert choose_plan(False, True, ISA_AVX2).describe() == "AVX2 vpmaddubsw+vpmaddwd ymm on split weights"
    assert choose_plan(False, False, ISA_AVX2) == GemmPlan(ISA_AVX2, True, False)
    assert choose_plan(True, True, ISA_NONE).isa == ISA_NONE


def test_split_weights_sum_and_range():
    w = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    s = split_weights(w)
    lo, hi = s[:, :16].astype(np.int64), s[:, 16:].astype(np.int64)
    assert np.array_equal(lo + hi, w.astype(np.int64))
    assert lo.min() >= -64 and hi.max() <= 64 and lo.max() <= 64 and hi.min() >= -64
    assert 255 * 64 * 2 <= 32767   # a pair of products of a split half never saturates int16


LINEAR_SHAPES = [(1, 1, 1), (5, 3, 63), (7, 33, 65), (13, 130, 129), (6, 1100, 70)]   # (M, K, N)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("target", [SAT] + EXACT)
@pytest.mark.parametrize("full_range", [True, False], ids=["8bit-w", "7bit-w"])
def test_qlinear_simd_matches_reference(isa, target, full_range):
    rng = np.random.default_rng(14)
    for m, k, n in LINEAR_SHAPES:
        x = rng.integers(0, 256, (m, k)).astype(np.uint8)
        x[:, ::3] = 255                                # many pairs at the top of the range
        w = _weights(rng, (n, k), full_range)
        ws = rng.uniform(0.002, 0.01, n).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        for w_zp, w_scale in ((0, ws), (rng.integers(-3, 4, n), ws), (0, float(ws[0]))):
            layer = QLinear(w, w_scale, w_zp, b, 0.03, 5, 0.4, 9, target=target)
            want = qlinear_reference(x, 0.03, 5, w, w_scale, w_zp, b, 0.4, 9, target=target)
            with isa_cap(isa):
                plan = layer.plan
                got = layer(x)
            assert plan == expected_plan(isa, layer.arith.saturate_pairs, layer.packed.risky.shape[0] > 0)
            assert np.array_equal(got, want), (plan.describe(), target, (m, k, n), np.count_nonzero(got != want))


def test_saturating_target_really_saturates():
    """The saturating cases above are not vacuous: the pair-saturating and the exact arithmetic differ."""
    rng = np.random.default_rng(1)
    x = np.full((4, 64), 255, np.uint8)
    w = _weights(rng, (8, 64), True)
    a = qlinear_reference(x, 0.03, 0, w, 0.001, 0, None, 0.4, 0, target=SAT)
    b = qlinear_reference(x, 0.03, 0, w, 0.001, 0, None, 0.4, 0, target="fbgemm@avx512-vnni")
    assert not np.array_equal(a, b)


CONV_CASES = [  # (x shape, w shape, kwargs): im2col with stride / padding / dilation, 1×1 (pointwise), odd C
    ((2, 5, 9, 11), (7, 5, 3, 3), dict(stride=2, padding=1)),
    ((1, 6, 10, 7), (13, 6, 1, 1), {}),
    ((1, 3, 17, 9), (8, 3, 3, 3), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))),
    ((2, 70, 5, 5), (66, 70, 1, 1), {}),
    ((1, 8, 9, 9), (5, 8, 2, 2), {}),
    ((1, 600, 3, 3), (7, 600, 1, 1), {}),        # K > one K block
    ((2, 33, 7, 7), (130, 33, 1, 1), {}),        # 1×1 on a small image: run as a linear layer (lanes = channels)
]


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("target", [SAT] + EXACT + ["x86@avx512-vnni", "x86@avx512-vnni-amx"])
def test_qconv2d_simd_matches_reference(isa, target):
    rng = np.random.default_rng(9)
    for xs, wsh, kw in CONV_CASES:
        x = rng.integers(0, 256, xs).astype(np.uint8)
        n = wsh[0]
        for full_range in (True, False):
            w = _weights(rng, wsh, full_range)
            ws = rng.uniform(0.002, 0.01, n).astype(np.float32)
            b = rng.standard_normal(n).astype(np.float32)
            zps = (0,) if target.startswith("x86") else (0, rng.integers(-3, 4, n))   # oneDNN: symmetric only
            for w_zp in zps:
                layer = QConv2d(w, ws, w_zp, b, 0.03, 5, 0.4, 9, target=target, **kw)
                want = qconv2d_reference(x, 0.03, 5, w, ws, w_zp, b, 0.4, 9, target=target, **kw)
                with isa_cap(isa):
                    plan = layer.plan
                    got = layer(x)
                assert plan == expected_plan(isa, layer.arith.saturate_pairs, layer.packed.packs[0].risky.shape[0] > 0)
                assert np.array_equal(got, want), (plan.describe(), target, xs, wsh, np.count_nonzero(got != want))


def test_depthwise_and_grouped_keep_their_paths():
    """Only groups = 1 convolutions run on the int8 SIMD GEMM; the others keep their float32 kernels."""
    rng = np.random.default_rng(3)
    dw = QConv2d(_weights(rng, (8, 1, 3, 3), True), 0.01, 0, None, 0.03, 5, 0.4, 9, groups=8, padding=1)
    grouped = QConv2d(_weights(rng, (8, 2, 3, 3), True), 0.01, 0, None, 0.03, 5, 0.4, 9, groups=4, padding=1)
    assert dw.plan.isa == ISA_NONE and grouped.plan.isa == ISA_NONE


@pytest.mark.parametrize("isa", [_isa_param(ISA_AVX512VNNI), _isa_param(ISA_AVX512BW)])
@pytest.mark.parametrize("target", ["fbgemm", "onnxruntime", "x86@avx512-vnni", "qnnpack"])
def test_epilogue_in_registers_matches_reference(isa, target):
    """The tiles that finish their own output (minquant/kernels/tiles_out.py): channels-last 1×1 convs through
    the linear layout, weight zero points 0, every float32 output stage (per-channel and per-tensor scales,
    ReLU6-style clamps), channel counts that leave a masked chunk (24, 40, 70, 129) or fill the 16- and 32-lane
    tiles, rows past one block (240) and past the 6- and 12-row tiles. Each layer runs with the integer rounding
    its bound allows (``StageMode.int_round``) and again forced to the float32 rounding."""
    from minquant.kernels.gemm_simd import epilogue_in_registers
    rng = np.random.default_rng(17)
    for c_in, hw, c_out in ((16, 17, 96), (24, 9, 24), (40, 7, 40), (13, 5, 16), (64, 3, 129), (8, 16, 70)):
        x = rng.integers(0, 256, (1, c_in, hw, hw)).astype(np.uint8)
        w = _weights(rng, (c_out, c_in, 1, 1), True)
        for ws, clamp, hi in ((rng.uniform(0.002, 0.01, c_out).astype(np.float32), None, None),
                              (0.004, (90, 230), rng.integers(150, 256, c_out))):
            b = rng.standard_normal(c_out).astype(np.float32)
            layer = QConv2d(w, ws, 0, b, 0.03, 5, 0.05, 90, clamp=clamp, clamp_hi=hi, target=target)
            want = qconv2d_reference(x, 0.03, 5, w, ws, 0, b, 0.05, 90, clamp=clamp, clamp_hi=hi, target=target)
            assert len(np.unique(want)) > 20          # not saturated
            xt = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            with isa_cap(isa):
                assert epilogue_in_registers(layer.plan, False, layer.stage.mode)
                got = layer.nhwc(xt)
                key = ("int_round", id(layer.stage))
                cache = layer.packed.packs[0].simd
                assert cache[key][1]                        # these layers' bound allows it
                cache[key] = (layer.stage, False)
                got_f = layer.nhwc(xt)
            for g in (got, got_f):
                assert np.array_equal(g.transpose(0, 3, 1, 2), want), (ISA_NAMES[isa], target, c_in, hw, c_out)
