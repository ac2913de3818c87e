"""float16 layers: numbers *stored* in float16, arithmetic in float32 — how the frameworks run fp16 on an
x86 CPU (measured, below).

A float16 model keeps its weights and its activations in IEEE half precision (1 sign, 5 exponent, 10
mantissa bits: 2 bytes, about 3.3 significant digits, largest finite value 65504). No x86 framework kernel
measured here *adds* in float16: every op widens its float16 inputs to float32 (exact: every float16 is a
float32), computes in float32 and rounds its output once, to nearest even:

    y16 = fp16( op_f32( f32(x16), f32(w16) ) )                      (one rounding per op)

Which ops round is where the frameworks differ:

``round per op`` — torch ``model.half()`` on the CPU (torch 2.14, measured on an Intel Xeon with AVX-512):
    every op returns a float16 tensor, so every op's output is rounded. A conv's float16 output equals the
    float32-accumulated result rounded to float16 on all but 0.11–0.16 % of the outputs (the float32 sum
    in another order lands on the other side of a float16 rounding boundary: one float16 ULP); a linear
    layer 0.25–0.5 %; add, ReLU and global average pooling 0 %. A float16 accumulator would miss far more.
``round at the model's boundary`` — ONNX Runtime 1.32's CPU provider on x86 has no float16 kernel for
    Conv, Relu, GlobalAveragePool or Gemm: its InsertCastTransformer widens the float16 input and weights
    to float32 once, runs the whole chain in float32 and rounds only the graph outputs (the optimized model
    holds Casts at the inputs and outputs and none in between). An ONNX float16 model is therefore, on
    this CPU, the float32 model with float16-rounded weights — a precision of its own:
    ``Precision(weights=FP16, activations=FP32)`` in :mod:`minquant.quantized.precision`.

minquant's float16 layers take ``round_output``: True rounds their output (torch's ``.half()``), False
leaves it float32 (ONNX Runtime's fp32 chain). The float32 arithmetic is minquant's float kernels
(:mod:`minquant.float_ops`: im2col + one BLAS product), whose summation order is neither torch's nor
ONNX Runtime's; after the float16 rounding the outputs agree with torch's on all but the ~0.1 % of
rounding-boundary cases above (tests/test_precision_kernels.py measures it).

There is no new loop here to speed up — the float32 kernels are the fast path and :func:`round_fp16` is one
vectorised conversion — so this module has no Numba code.
"""
from __future__ import annotations

import numpy as np

__all__ = ["round_fp16", "widen", "has_fp16", "fp16_aware"]

_F16_MAX = np.float32(np.finfo(np.float16).max)


def round_fp16(y) -> np.ndarray:
    """float32 → float16, round to nearest even (float16 input passes unchanged). A value beyond ±65504
    would become ±inf in the frameworks; minquant refuses it with a ValueError instead of computing on
    infinities (NaN / Inf refused too)."""
    y = np.asarray(y)
    if y.dtype == np.float16:
        return y
    if y.dtype.kind != "f":
        raise TypeError(f"round_fp16 expects floating-point values, got dtype {y.dtype}")
    if not np.all(np.isfinite(y)):
        raise ValueError("round_fp16: the value contains NaN or Inf")
    big = np.abs(y) > _F16_MAX
    if np.any(big):
        raise ValueError(f"{int(big.sum())} value(s) exceed float16's range ±65504 (largest |x| = "
                         f"{float(np.abs(y).max()):.6g}); this layer cannot store its output in float16")
    return y.astype(np.float16)


def widen(x):
    """float16 → float32 exactly; anything else passes unchanged (the next kernel checks its own input)."""
    if isinstance(x, np.ndarray) and x.dtype == np.float16:
        return x.astype(np.float32)
    return x


def has_fp16(xs) -> bool:
    """Does any of the arrays ``xs`` hold float16 values?"""
    return any(isinstance(x, np.ndarray) and x.dtype == np.float16 for x in xs)


def fp16_aware(kernel):
    """A float graph kernel ``kernel(node, inputs)`` that also takes float16 inputs: if any input is
    float16, all are widened to float32, the float32 kernel runs and its output is rounded to float16
    (torch's ``.half()`` arithmetic, module docstring); float32 inputs run the kernel unchanged."""
    def run(node, xs):
        if not has_fp16(xs):
            return kernel(node, xs)
        return round_fp16(kernel(node, [widen(x) for x in xs]))
    run.__wrapped__ = kernel
    return run
