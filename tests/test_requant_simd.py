"""The 16-lane output stage and depthwise helpers (minquant/kernels/requant_simd.py) against the scalar
output stage, bit for bit — rounding ties, the clamp limits, every float32 mode and every target family —
and the kernels that use them compiled for an AVX2-only CPU (a child process whose Numba code generation is
set to Haswell: the 512-bit generic vector operations must be split into 256-bit ones without changing a
code)."""
import zlib

import numba
import numpy as np
import pytest
from forced_isa import run_compiled_for_haswell
from numba import njit

from minquant.kernels.requant_simd import VECTOR_MODES, requant_row16
from minquant.kernels.requantize import _requant_span, output_stage

NOJIT = numba.config.DISABLE_JIT
pytestmark = pytest.mark.skipif(NOJIT, reason="the 16-lane kernels are LLVM intrinsics: they need the JIT")


@njit(cache=False)
def _both(acc, sub, n, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, L):
    vec = np.zeros(L, np.uint8)
    ref = np.zeros(L, np.uint8)
    tail = np.empty(16, np.uint8)
    requant_row16(acc, 0, L, sub, n, mode, bias_f, bias_q, mult32, y_zp, lo, hi, vec, 0, tail)
    a2 = np.empty(L, np.int32)
    for i in range(L):
        a2[i] = acc[i] - sub
    _requant_span(a2, 0, L, n, mode, bias_f, bias_q, mult32, mult64, y_zp, lo, hi, ref, 0)
    return vec, ref


@pytest.mark.parametrize("target", ["fbgemm", "qnnpack", "onnxruntime", "x86@avx512-vnni", "x86@avx512-vnni-amx"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_requant_row16_matches_scalar_stage(target, per_channel):
    rng = np.random.default_rng(zlib.crc32(repr((target, per_channel)).encode()))
    n = 5
    ws = rng.uniform(0.002, 0.01, n).astype(np.float32) if per_channel else np.float32(0.004)
    bias = rng.normal(0, 2, n).astype(np.float32)
    for y_scale, clamp in ((0.05, None), (0.5, (3, 200))):
        st = output_stage(n, 0.02, ws, bias, y_scale, 117, clamp=clamp, target=target)
        assert st.mode in VECTOR_MODES
        for L in (1, 15, 16, 17, 100):
            acc = rng.integers(-40000, 40000, L + 16).astype(np.int32)
            acc[: L // 2] = rng.integers(-300, 300, L // 2)          # dense around 0: many rounding ties
            for ch in range(n):
                got, want = _both(acc, np.int32(rng.integers(-500, 500)), ch, st.mode, st.bias_f, st.bias_q,
                                  st.mult32, st.mult64, np.float64(st.y_zp), np.float64(st.lo), st.hi, L)
                assert np.array_equal(got, want), (target, st.mode, L, ch, np.flatnonzero(got != want)[:5])
                assert len(np.unique(want)) > min(L, 3) // 2             # not all clamped


def test_requant_row16_rounds_ties_to_even():
    """M = 0.5 puts every odd accumulator on a tie: rint's ties-to-even must be the vector's too."""
    st = output_stage(1, 1.0, np.float32(0.5), None, 1.0, 100, target="onnxruntime")
    acc = np.arange(-40, 40, dtype=np.int32)
    acc = np.concatenate([acc, np.zeros(16, np.int32)])
    got, want = _both(acc, np.int32(0), 0, st.mode, st.bias_f, st.bias_q, st.mult32, st.mult64,
                      np.float64(st.y_zp), np.float64(st.lo), st.hi, 80)
    assert np.array_equal(got, want)
    assert np.array_equal(want.astype(int) - 100, np.rint(np.arange(-40, 40) * 0.5).astype(int))


_CHILD = r"""
import json, sys
import numpy as np
from minquant.kernels import QConv2d, qconv2d_reference
from minquant.kernels.simd import ISA_AVX2, isa_cap
rng = np.random.default_rng(5)
bad = []
cases = [  # depthwise NCHW 3x3 (s1, s2), channels-last (7 columns), general depthwise, dense, 1x1
    ((1, 20, 30, 30), (20, 1, 3, 3), dict(groups=20, padding=1)),
    ((1, 20, 29, 29), (20, 1, 3, 3), dict(groups=20, padding=1, stride=2)),
    ((2, 40, 7, 7), (40, 1, 3, 3), dict(groups=40, padding=1)),
    ((1, 6, 12, 12), (12, 1, 5, 5), dict(groups=6, padding=2)),
    ((1, 5, 20, 20), (9, 5, 3, 3), dict(padding=1, stride=2)),
    ((1, 16, 20, 20), (24, 16, 1, 1), {}),
]
for target in ("fbgemm", "onnxruntime", "x86@avx512-vnni"):
    for xs, wsh, kw in cases:
        x = rng.integers(0, 256, xs).astype(np.uint8)
        w = rng.integers(-127, 128, wsh).astype(np.int8)
        n = wsh[0]
        ws = rng.uniform(0.002, 0.01, n).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        want = qconv2d_reference(x, 0.03, 5, w, ws, 0, b, 0.4, 9, target=target, **kw)
        with isa_cap(ISA_AVX2):
            got = QConv2d(w, ws, 0, b, 0.03, 5, 0.4, 9, target=target, **kw)(x)
        if not np.array_equal(got, want):
            bad.append([target, list(xs), list(wsh), int((got != want).sum())])
import numba
print(json.dumps(dict(bad=bad, cpu=numba.config.CPU_NAME)))
"""


def test_kernels_compiled_for_avx2_give_the_same_codes():
    """The conv paths that use the 16-lane helpers, compiled for Haswell (AVX2, no AVX-512) in a child
    process, against the reference: LLVM must lower every 512-bit generic operation (the float32 stage, the
    narrowing to bytes, the nine-tap sums) to AVX2 without changing a code — the CI's Zen 3 case."""
    assert run_compiled_for_haswell(_CHILD)["bad"] == []
