"""Bad input gets a clear error naming the problem in the user's terms — a catalogue held as data.

Each case: (id, callable, expected exception class, a phrase the message must contain). The catalogue
grows with the robustness work; every case here was accepted silently (or failed with an unrelated error)
before its fix.
"""
import numpy as np
import pytest

import minquant as mq
from minquant.target import Target

F32 = np.float32
X = np.linspace(-1, 1, 12, dtype=F32).reshape(3, 4)

CASES = [
    # --- quantization math -----------------------------------------------------------------------------
    ("quantize zero_point=2.5", lambda: mq.quantize(X, 0.01, 2.5), ValueError, "whole number"),
    ("quantize zero_point=True", lambda: mq.quantize(X, 0.01, True), TypeError, "zero_point must be integer"),
    ("quantize axis=7", lambda: mq.quantize(X, [0.1] * 4, [0] * 4, axis=7), ValueError, "axis 7 is out of range"),
    ("quantize axis=-3", lambda: mq.quantize(X, [0.1] * 3, [0] * 3, axis=-3), ValueError, "out of range"),
    ("quantize axis='1'", lambda: mq.quantize(X, [0.1] * 4, [0] * 4, axis="1"), TypeError, "axis must be an int"),
    ("choose_qparams(-3e38, 3e38)", lambda: mq.choose_qparams(-3e38, 3e38), ValueError, "too wide"),
    ("quantize scale 1e-40 (torch rule)", lambda: mq.quantize(np.array([0, 1e-42, -1e-42, 1], F32), 1e-40, 128),
     ValueError, "reciprocal overflows"),
    ("quantize 1e300", lambda: mq.quantize(np.array([1e300]), 0.1, 0), ValueError, "beyond float32's range"),
    ("quantize scale 1e39", lambda: mq.quantize(X, 1e39, 0), ValueError, "not representable in float32"),
    ("quantize NaN", lambda: mq.quantize(np.array([np.nan], F32), 0.1, 0), ValueError, "NaN"),
    ("quantize scale 0", lambda: mq.quantize(X, 0.0, 0), ValueError, "scale must be finite and > 0"),
    ("quantize zero point 300", lambda: mq.quantize(X, 0.1, 300), ValueError, "outside the uint8 range"),
    ("quantize unknown rule", lambda: mq.quantize(X, 0.1, 0, target="tflite"), ValueError, "unknown quantize rule"),
    ("pack_int4([-1, 15])", lambda: mq.pack_int4(np.array([-1, 15])), ValueError, "neither int4"),
    ("pack_int4(float)", lambda: mq.pack_int4(np.array([0.5])), ValueError, "integer codes"),
    ("choose_qparams min > max", lambda: mq.choose_qparams(1.0, -1.0), ValueError, "min_val > max_val"),
    # --- targets ---------------------------------------------------------------------------------------
    ("Target unknown framework", lambda: Target("tensorrt"), ValueError, "unknown target framework"),
    ("Target unknown CPU", lambda: Target("x86", "pentium"), ValueError, "unknown CPU"),
    ("Target cpu=3", lambda: Target("x86", 3), TypeError, "cpu must be a Cpu"),
    ("Target.from_dict junk", lambda: Target.from_dict({"framework": "x86"}), ValueError, "a saved target"),
    ("target=3", lambda: mq.quantize(X, 0.1, 0, target=3), ValueError, "unknown quantize rule or target"),
]


@pytest.mark.parametrize("name,call,exc,phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_clearly(name, call, exc, phrase):
    with pytest.raises(exc) as info:
        call()
    assert phrase.lower() in str(info.value).lower(), f"{name}: message {str(info.value)!r} lacks {phrase!r}"


def test_tiny_scale_under_the_division_rule_is_well_defined():
    """ONNX Runtime's rule divides, so a subnormal scale is fine: real 0 is exactly the zero point."""
    q = mq.quantize(np.array([0, 1e-42, -1e-42, 1], F32), 1e-40, 128, target="onnxruntime")
    np.testing.assert_array_equal(q, [128, 128, 128, 255])
