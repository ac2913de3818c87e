"""Per-tensor uint8 quantization of a float32 activation, and its inverse, as one Numba pass each
(docs/quantization.md, steps 3 and 1).

:func:`minquant.affine.quantize` is the readable reference (and handles every granularity and code type);
``quantize_u8`` is its fast twin for the case a quantized model runs on every input — one scale, one zero
point, uint8 codes — computing, element by element, what the reference computes array by array:

    'torch'        q = clamp(z + rne(f32(x · f32(1 / s))), 0, 255)   (multiply by the float32 reciprocal)
    'onnxruntime'  q = clamp(z + rne(f32(x / s)), 0, 255)            (divide)

NaN or Inf in ``x`` raise ValueError (the check rides along in the same pass).

``dequantize_u8`` is the fast twin of :func:`minquant.affine.dequantize` for uint8 codes and one (scale, zero
point): ``r = f32(s) · f32(q − z)`` in float32, as PyTorch and ONNX Runtime's ``DequantizeLinear``.

Each has a ``*_runner(scale, zero_point)``: the arguments checked once, returning ``run(x)`` for every later
input (what a prepared model calls); the public function is its runner called once.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..target import quantize_rule_of
from .checks import check_scale, check_zero_point

__all__ = ["quantize_u8", "quantize_u8_runner", "dequantize_u8", "dequantize_u8_runner"]


@njit(cache=True)
def _quantize_u8_kernel(x, factor, divide, z, out):
    """out[i] = clamp(z + rne(x[i]·factor or x[i]/factor), 0, 255); returns False if x holds NaN/Inf.
    (One loop per rule and the clamp in float32 then int32 → uint8: the form LLVM vectorizes.)"""
    finite = True
    zf = np.float32(z)
    lo, hi = np.float32(0), np.float32(255)
    if divide:
        for i in range(x.size):
            v = x[i]
            finite &= np.isfinite(v)
            out[i] = np.uint8(np.int32(min(max(np.rint(np.float32(v / factor)) + zf, lo), hi)))
    else:
        for i in range(x.size):
            v = x[i]
            finite &= np.isfinite(v)
            out[i] = np.uint8(np.int32(min(max(np.rint(np.float32(v * factor)) + zf, lo), hi)))
    return finite


def quantize_u8(x, scale, zero_point, *, target: str = "torch") -> np.ndarray:
    """uint8 codes of a float32 array with one (scale, zero point); bit-identical to
    ``minquant.affine.quantize(x, scale, zero_point, "uint8", target=target)``."""
    return quantize_u8_runner(scale, zero_point, target=target)(x)


def quantize_u8_runner(scale, zero_point, *, target: str = "torch"):
    """:func:`quantize_u8` in two steps: the qparams checked once; ``run(x)`` quantizes any floating-point array
    (it checks the dtype and refuses NaN / Inf)."""
    rule = quantize_rule_of(target)
    check_scale(scale, "scale")
    check_zero_point(zero_point, "zero_point")
    s = np.float32(scale)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"scale must be finite and > 0 in float32, got {scale!r}")
    divide = rule == "onnxruntime"
    factor = s if divide else np.float32(np.float32(1) / s)
    z = int(zero_point)

    def run(x):
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.asarray(x)
            if x.dtype.kind != "f":
                raise ValueError(f"quantize expects floating-point input, got dtype {x.dtype}")
            x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty(x.shape, np.uint8)
        if not _quantize_u8_kernel(x.reshape(-1), factor, divide, z, out.reshape(-1)):
            raise ValueError("input contains NaN or Inf")
        return out
    return run


@njit(cache=True)
def _dequantize_u8_kernel(q, s, z, out):
    """out[i] = f32(s) · f32(q[i] − z)."""
    for i in range(q.size):
        out[i] = np.float32(np.int32(q[i]) - z) * s


def dequantize_u8(q, scale, zero_point) -> np.ndarray:
    """float32 values of uint8 codes with one (scale, zero point); bit-identical to
    ``minquant.affine.dequantize(q, scale, zero_point)``."""
    return dequantize_u8_runner(scale, zero_point)(q)


def dequantize_u8_runner(scale, zero_point):
    """:func:`dequantize_u8` in two steps: the qparams checked once; ``run(q)`` takes uint8 codes."""
    check_scale(scale, "scale")
    check_zero_point(zero_point, "zero_point")
    s = np.float32(scale)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"scale must be finite and > 0 in float32, got {scale!r}")
    z = np.int32(zero_point)

    def run(q):
        if not isinstance(q, np.ndarray) or q.dtype != np.uint8:
            raise ValueError(f"dequantize_u8 expects uint8 codes, got {getattr(q, 'dtype', type(q).__name__)}")
        q = np.ascontiguousarray(q)
        out = np.empty(q.shape, np.float32)
        _dequantize_u8_kernel(q.reshape(-1), s, z, out.reshape(-1))
        return out
    return run
