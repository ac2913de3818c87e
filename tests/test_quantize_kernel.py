"""``minquant.kernels.quantize.quantize_u8`` (the one-pass Numba quantizer every quantized model runs on its
input) is bit-identical to the readable ``minquant.affine.quantize`` — including values on and next to
the .5 ties where torch's multiply-by-reciprocal and ONNX Runtime's division round differently."""
import numpy as np
import pytest

from minquant.affine import quantize
from minquant.kernels.quantize import quantize_u8


@pytest.mark.parametrize("target", ["torch", "onnxruntime"])
@pytest.mark.parametrize("scale,zp", [(0.0173, 113), (0.02, 0), (1 / 64, 255), (3.1e-5, 128)])
def test_quantize_u8_matches_affine_quantize(target, scale, zp):
    rng = np.random.default_rng(0)
    k = np.arange(-zp - 5, 260 - zp)
    ties = ((k + 0.5) * np.float32(scale)).astype(np.float32)
    x = np.concatenate([rng.normal(0, 60 * scale, 5001).astype(np.float32), ties, np.nextafter(ties, 1e9),
                        np.nextafter(ties, -1e9)]).astype(np.float32).reshape(2, -1)
    ref = quantize(x, scale, zp, "uint8", target=target)
    assert 0.01 < (ref == 0).mean() + (ref == 255).mean() < 0.5     # clamps exercised, not saturated
    np.testing.assert_array_equal(quantize_u8(x, scale, zp, target=target), ref)


def test_the_two_rules_really_differ_here():
    differ = 0
    for s in np.linspace(0.003, 0.05, 20).astype(np.float32):
        ties = ((np.arange(-128, 127) + 0.5) * s).astype(np.float32)
        differ += (quantize_u8(ties, s, 128, target="torch") != quantize_u8(ties, s, 128, target="onnxruntime")).sum()
    assert differ > 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_u8_rejects_non_finite(bad):
    x = np.zeros(10, np.float32)
    x[7] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_u8(x, 0.1, 0)


def test_quantize_u8_rejects_bad_qparams():
    with pytest.raises(ValueError, match="scale"):
        quantize_u8(np.zeros(3, np.float32), 0.0, 0)
    with pytest.raises(ValueError, match="zero point"):
        quantize_u8(np.zeros(3, np.float32), 0.1, 256)


@pytest.mark.parametrize("scale,zp", [(0.0173, 113), (0.02, 0), (1 / 64, 255), (3.1e-5, 128), (0.1881987303495407, 146)])
def test_dequantize_u8_matches_affine_dequantize(scale, zp):
    """The one-pass dequantizer = f32(s)·f32(q − z) of the readable reference, every code, odd shapes."""
    from minquant.affine import dequantize
    from minquant.kernels.quantize import dequantize_u8
    q = np.concatenate([np.arange(256), np.random.default_rng(1).integers(0, 256, 1000)]).astype(np.uint8)
    for x in (q, q.reshape(4, -1), q[::3], q.reshape(4, -1).T):
        np.testing.assert_array_equal(dequantize_u8(x, scale, zp), dequantize(x, scale, zp))


def test_runners_check_once_and_refuse_clearly():
    """The runners a prepared model keeps check their qparams when made, and their input on every call."""
    from minquant.kernels.quantize import dequantize_u8_runner, quantize_u8_runner
    with pytest.raises(ValueError, match="scale"):
        quantize_u8_runner(-1.0, 3)
    with pytest.raises(ValueError, match="zero_point"):
        dequantize_u8_runner(0.1, 256)
    with pytest.raises(ValueError, match="uint8 codes"):
        dequantize_u8_runner(0.1, 3)(np.zeros(4, np.int32))
    run = quantize_u8_runner(0.1, 3, target="onnxruntime")
    with pytest.raises(ValueError, match="floating-point"):
        run(np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="NaN"):
        run(np.array([1.0, np.nan], np.float32))
    np.testing.assert_array_equal(run(np.array([0.0, 1.0, -0.3], np.float64)), [3, 13, 0])
