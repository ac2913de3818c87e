"""Per-tensor uint8 quantization of a float32 activation, as one Numba pass (docs/quantization.md, step 3).

:func:`minquant.affine.quantize` is the readable reference (and handles every granularity and code type);
``quantize_u8`` is its fast twin for the case a quantized model runs on every input — one scale, one zero
point, uint8 codes — computing, element by element, what the reference computes array by array:

    'torch'        q = clamp(z + rne(f32(x · f32(1 / s))), 0, 255)   (multiply by the float32 reciprocal)
    'onnxruntime'  q = clamp(z + rne(f32(x / s)), 0, 255)            (divide)

NaN or Inf in ``x`` raise ValueError (the check rides along in the same pass).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..target import quantize_rule_of
from .checks import check_scale, check_zero_point

__all__ = ["quantize_u8"]


@njit(cache=True)
def _quantize_u8_kernel(x, factor, divide, z, out):
    """out[i] = clamp(z + rne(x[i]·factor or x[i]/factor), 0, 255); returns False if x holds NaN/Inf."""
    finite = True
    zf = np.float32(z)
    for i in range(x.size):
        v = x[i]
        finite &= np.isfinite(v)
        t = np.float32(v / factor) if divide else np.float32(v * factor)
        t = np.rint(t) + zf
        out[i] = np.uint8(min(max(t, np.float32(0)), np.float32(255)))
    return finite


def quantize_u8(x, scale, zero_point, *, target: str = "torch") -> np.ndarray:
    """uint8 codes of a float32 array with one (scale, zero point); bit-identical to
    ``minquant.affine.quantize(x, scale, zero_point, "uint8", target=target)``."""
    rule = quantize_rule_of(target)
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError(f"quantize expects floating-point input, got dtype {x.dtype}")
    check_scale(scale, "scale")
    check_zero_point(zero_point, "zero_point")
    s = np.float32(scale)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"scale must be finite and > 0 in float32, got {scale!r}")
    xf = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(xf.shape, np.uint8)
    divide = rule == "onnxruntime"
    factor = s if divide else np.float32(np.float32(1) / s)
    if not _quantize_u8_kernel(xf.reshape(-1), factor, divide, int(zero_point), out.reshape(-1)):
        raise ValueError("input contains NaN or Inf")
    return out
