"""quantize / dequantize / choose_qparams against torch and ONNX Runtime, ties and edge cases included."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from minquant.affine import (choose_qparams, dequantize, fake_quantize, pack_int4, quantize, qtype,
                             to_float16, unpack_int4)
from minquant.frameworks import ort_oracle as ort_quant, torch_oracle as torch_quant

SET = dict(max_examples=60, deadline=None, derandomize=True)


def _data(seed, n, spread):
    return (np.random.default_rng(seed).standard_normal(n) * spread).astype(np.float32)


@st.composite
def qcase(draw):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    scale = np.float32(draw(st.floats(1e-4, 2.0)))
    dtype = draw(st.sampled_from(["uint8", "int8"]))
    qt = qtype(dtype)
    zp = draw(st.integers(qt.qmin, qt.qmax))
    x = _data(seed, 4096, float(scale) * 60)
    # plant exact ties: (k + 0.5)·scale rounds differently under x·(1/s) and x/s for some k
    k = np.random.default_rng(seed).integers(-100, 100, 512)
    x[:512] = ((k + 0.5) * np.float64(scale)).astype(np.float32)
    return x, scale, zp, dtype


@settings(**SET)
@given(qcase())
def test_quantize_matches_torch(case):
    x, scale, zp, dtype = case
    np.testing.assert_array_equal(quantize(x, scale, zp, dtype, target="torch"),
                                  torch_quant.quantize(x, scale, zp, dtype))


@settings(**SET)
@given(qcase())
def test_quantize_matches_onnxruntime(case):
    x, scale, zp, dtype = case
    want = ort_quant.quantize_linear(x, scale, np.asarray(zp, dtype=qtype(dtype).storage))
    np.testing.assert_array_equal(quantize(x, scale, zp, dtype, target="onnxruntime"), want)


def test_torch_and_onnxruntime_round_differently_and_minquant_knows_which():
    """x·(1/s) vs x/s: on values next to a rounding tie the two frameworks disagree by one code (docs step 6);
    minquant reproduces each. Values: f32((k + ½)·s) and their float32 neighbours, for 50 scales."""
    rng = np.random.default_rng(0)
    k = np.arange(-120, 120)
    n_differ = 0
    for s in rng.uniform(1e-3, 1, 50).astype(np.float32):
        x = ((k + 0.5) * np.float64(s)).astype(np.float32)
        x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))])
        t = torch_quant.quantize(x, s, 128)
        o = ort_quant.quantize_linear(x, s, np.uint8(128))
        assert np.all(np.abs(t.astype(int) - o.astype(int)) <= 1)
        n_differ += int((t != o).sum())
        np.testing.assert_array_equal(quantize(x, s, 128, target="torch"), t)
        np.testing.assert_array_equal(quantize(x, s, 128, target="onnxruntime"), o)
    assert n_differ > 1000   # of 36,000 near-tie values: the rule matters


def test_per_channel_matches_torch_and_onnxruntime():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 5, 3)).astype(np.float32) * 4
    s = rng.uniform(0.01, 0.1, 5).astype(np.float32)
    z = rng.integers(-20, 20, 5).astype(np.int8)
    np.testing.assert_array_equal(quantize(x, s, z, "int8", axis=1, target="torch"),
                                  torch_quant.quantize(x, s, z, "int8", axis=1))
    np.testing.assert_array_equal(quantize(x, s, z, "int8", axis=1, target="onnxruntime"),
                                  ort_quant.quantize_linear(x, s, z, axis=1))


def test_round_half_to_even_on_exact_ties():
    s = np.float32(0.5)   # power of two: x/s and x·(1/s) are both exact, so these are true ties
    x = np.array([0.25, 0.75, 1.25, -0.25, -0.75], np.float32)
    np.testing.assert_array_equal(quantize(x, s, 10, target="torch"), [10, 12, 12, 10, 8])
    np.testing.assert_array_equal(quantize(x, s, 10, target="onnxruntime"), [10, 12, 12, 10, 8])


def test_dequantize_matches_torch_and_ort():
    rng = np.random.default_rng(4)
    q = rng.integers(0, 256, 1000).astype(np.uint8)
    s, z = np.float32(0.0371), 131
    want_t = torch_quant.to_qtensor(q, s, z).dequantize().numpy()
    want_o = ort_quant.run_node("DequantizeLinear", {"x": q}, {"s": s, "z": np.uint8(z)}, np.float32)
    np.testing.assert_array_equal(dequantize(q, s, z), want_t)
    np.testing.assert_array_equal(dequantize(q, s, z), want_o)
    np.testing.assert_array_equal(fake_quantize(q.astype(np.float32) * s, s, z),
                                  torch.fake_quantize_per_tensor_affine(
                                      torch.from_numpy(q.astype(np.float32) * s), float(s), z, 0, 255).numpy())


@settings(**SET)
@given(st.floats(-50, 50, width=32), st.floats(0, 60, width=32), st.booleans())
def test_choose_qparams_fbgemm_rule_matches_torch_dynamic(mn, span, reduce_range):
    """rule='fbgemm' equals torch._choose_qparams_per_tensor (ChooseQuantizationParams, used at run time by
    torch's dynamic quantization)."""
    x = torch.tensor([mn, mn + span], dtype=torch.float32)
    want_s, want_z = torch._choose_qparams_per_tensor(x, reduce_range)
    s, z = choose_qparams(np.float32(mn), np.float32(x[1].item()), "uint8", reduce_range=reduce_range,
                          rule="fbgemm")
    assert float(s) == want_s and int(z) == want_z


@settings(**SET)
@given(st.floats(-50, 0, width=32), st.floats(0, 50, width=32), st.booleans(), st.sampled_from(["uint8", "int8"]))
def test_choose_qparams_onnxruntime_rule_matches_ort_tool(mn, mx, symmetric, dtype):
    from onnxruntime.quantization.quant_utils import compute_scale_zp
    qt = qtype(dtype)
    want_z, want_s = compute_scale_zp(np.float32(mn), np.float32(mx), np.array(qt.qmin, qt.storage),
                                      np.array(qt.qmax, qt.storage), symmetric=symmetric)
    s, z = choose_qparams(mn, mx, dtype, symmetric=symmetric, rule="onnxruntime")
    assert np.float32(s) == np.float32(want_s) and int(z) == int(want_z)


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(**SET)
@given(st.floats(-50, 50, width=32), st.floats(0, 60, width=32), st.booleans(), st.booleans(),
       st.sampled_from(["uint8", "int8"]))
def test_choose_qparams_torch_rule_matches_minmax_observer(mn, span, symmetric, reduce_range, dtype):
    from torch.ao.quantization.observer import MinMaxObserver
    assume(not (symmetric and reduce_range and dtype == "uint8"))   # torch refuses this combination
    x = torch.tensor([mn, mn + span], dtype=torch.float32)
    obs = MinMaxObserver(dtype=torch.quint8 if dtype == "uint8" else torch.qint8,
                         qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine,
                         reduce_range=reduce_range)
    obs(x)
    want_s, want_z = obs.calculate_qparams()
    s, z = choose_qparams(x[0].item(), x[1].item(), dtype, symmetric=symmetric, reduce_range=reduce_range)
    assert np.float32(s) == np.float32(want_s.item()) and int(z) == int(want_z.item())


def test_edge_cases():
    eps = np.finfo(np.float32).eps
    s, z = choose_qparams(0.0, 0.0)                     # all zeros: eps-clamped scale
    assert s == np.float32(eps) and z == 0
    s, z = choose_qparams(3.0, 3.0)                     # min == max > 0: range widened to [0, 3]
    assert np.isclose(s, 3 / 255) and z == 0
    s, z = choose_qparams(2.0, 5.0)                     # zero not in range: still exactly representable
    assert z == 0 and dequantize(quantize(np.float32(0.0), s, z), s, z) == 0.0
    s, z = choose_qparams(-5.0, -2.0)
    assert z == 255 and dequantize(quantize(np.float32(0.0), s, z), s, z) == 0.0
    s, z = choose_qparams(-1.0, 3.0, "int8", symmetric=True)
    assert z == 0 and np.isclose(s, 3 / 127.5)
    s, z = choose_qparams(-1.0, 3.0, "uint8", symmetric=True)
    assert z == 128
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="NaN|Inf"):
            choose_qparams(bad, 1.0)
        with pytest.raises(ValueError, match="NaN|Inf"):
            quantize(np.array([1.0, bad], np.float32), 0.1, 0)
    with pytest.raises(ValueError, match="min_val > max_val"):
        choose_qparams(2.0, 1.0)
    with pytest.raises(ValueError, match="scale"):
        quantize(np.ones(3, np.float32), 0.0, 0)
    with pytest.raises(ValueError, match="zero point"):
        quantize(np.ones(3, np.float32), 0.1, 300)
    with pytest.raises(ValueError, match="per-channel"):
        quantize(np.ones((2, 3), np.float32), np.ones(2), np.zeros(2), axis=1)


def test_per_group_and_int4_packing():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 32)).astype(np.float32)
    g = 8
    groups = w.reshape(4, 4, g)
    s, z = choose_qparams(groups.min(-1), groups.max(-1), "int4", symmetric=True)
    q = quantize(w, s, z, "int4", axis=1, group_size=g)
    assert q.min() >= -8 and q.max() <= 7
    packed = pack_int4(q)
    assert packed.nbytes == w.size // 2
    np.testing.assert_array_equal(unpack_int4(packed, q.size, signed=True).reshape(q.shape), q)
    err = np.abs(dequantize(q, s, z, axis=1, group_size=g) - w)
    assert np.all(err <= np.repeat(s, g, axis=1) / 2 + 1e-6)   # within half a step everywhere (no clipping)
    u = rng.integers(0, 16, 7).astype(np.uint8)
    np.testing.assert_array_equal(unpack_int4(pack_int4(u), 7, signed=False), u)
    with pytest.raises(ValueError, match="bytes"):
        unpack_int4(pack_int4(u), 9, signed=False)


def test_float16():
    x = np.array([1.0, 1e-3, 70000.0, -70000.0], np.float32)
    h = to_float16(x)
    assert h.dtype == np.float16 and h[2] == np.float16(65504) and h[3] == -np.float16(65504)
    with pytest.raises(ValueError, match="float16"):
        to_float16(x, saturate=False)


def test_import_minquant_needs_only_numpy_numba_scipy():
    """`import minquant` (and its kernels/observers/affine) works where torch and onnx cannot be imported."""
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'torchvision', 'sklearn', 'skimage'):
                    raise ImportError('blocked for this test: ' + name)
        sys.meta_path.insert(0, Block())
        import minquant, minquant.kernels, minquant.affine
        import minquant.observers, minquant.quantized, minquant.executor, minquant.graph
        assert not any(m.split('.')[0] in ('torch', 'onnx', 'onnxruntime') for m in sys.modules)
        print('ok')
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
