"""Whose integer arithmetic a kernel reproduces: the ``emulate=`` argument (docs/quantization.md, step 6).

All frameworks compute the same real-number formula (step 7)

    y_q = clamp(z_y + round(M · (acc + bias / (s_x·s_w)))),   M = s_x·s_w / s_y,
    acc = Σ_k (a_k − z_x)(w_k − z_w)                          (step 4)

but evaluate it with different roundings, so their outputs differ by one LSB here and there. Each
:class:`Arithmetic` names one evaluation, and each was checked at 0 mismatching elements against the
framework it names (tests/test_kernels_vs_frameworks.py):

``"fbgemm"``      PyTorch's engines ``fbgemm`` / ``x86`` (x86 runs fbgemm for these kernels on CPUs without
                  VNNI). u8×s8 products added in *pairs with int16 saturation* (vpmaddubsw; step 8) unless
                  the CPU has AVX512-VNNI. Bias stays float and is added to the float accumulator:
                  per-channel weights: ``acc_f = f32(acc) + f32(b / s_xw)``; per-tensor weights: a fused
                  multiply-add ``acc_f = fma(b, f32(1 / s_xw), acc)``, with ``s_xw = f32(s_x · s_w)``.
                  Output ``clamp(rne(f32(acc_f · f32(s_xw / s_y))) + z_y)``.
``"qnnpack"``     PyTorch's engine ``qnnpack``: exact int32 accumulation, bias quantized to int32
                  ``rne(b / s_xw)`` and added to it, output ``clamp(rne(f32(f32(acc + b_q) · M)) + z_y)`` with
                  the multiplier torch computes for qnnpack, ``M = f32(f32(s_w · s_x) · f32(1 / s_y))`` (a
                  multiplication by the reciprocal of s_y, not a division: they differ in the last bit of M
                  for some scales, which flips a code now and then on whole models).
``"onnxruntime"`` ONNX Runtime CPU ``QLinearConv`` / ``QLinearMatMul`` / ``QGemm`` (MLAS): the bias comes as
                  int32 (quantized by ORT's tool with a division), output
                  ``clamp(rne(f32(f32(acc + b_q) · f32(f32(s_x · s_w) / s_y))) + z_y)``. MLAS's u8×s8 GEMM on
                  AVX2 without VNNI *also* forms the raw sum with vpmaddubsw, so pairs saturate exactly as in
                  fbgemm (measured: 0 mismatches with saturation, ~50 % of elements off without it, on
                  full-range weights); its depthwise conv kernel (one input and one output channel per
                  group) accumulates exactly in int32.
``"minquant"``    the textbook arithmetic of docs/quantization.md, for learners: exact int32 accumulation,
                  int32 bias ``rne(b / s_xw)``, multiplier in float64, round half to even.

Whether fbgemm saturates is a property of the CPU: :func:`cpu_has_vnni` reads /proc/cpuinfo, and
:func:`describe_cpu` says which path fbgemm takes here.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["Arithmetic", "arithmetic", "EMULATIONS", "cpu_flags", "cpu_has_vnni", "mlas_has_vnni", "describe_cpu",
           "fma_f32_reference"]


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU feature flags of this machine (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_vnni() -> bool:
    """True if fbgemm would take its AVX512-VNNI path (vpdpbusd: exact int32, no int16 pair saturation)."""
    flags = cpu_flags()
    return "avx512_vnni" in flags and "avx512f" in flags


def describe_cpu() -> str:
    """One line: which u8×s8 path fbgemm takes on this CPU and whether pairs saturate."""
    flags = cpu_flags()
    isa = "AVX512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    if cpu_has_vnni():
        return f"{isa} with VNNI: fbgemm accumulates u8×s8 exactly in int32 (vpdpbusd); no pair saturation"
    return (f"{isa}, no VNNI: fbgemm adds pairs of u8×s8 products with int16 saturation (vpmaddubsw) "
            "before accumulating in int32")


@dataclass(frozen=True)
class Arithmetic:
    """One framework's evaluation of the quantized linear/conv output (see module docstring).

    saturate_pairs : adjacent u8×s8 products are summed and clamped to int16 before accumulation.
    saturate_depthwise : the same, in depthwise convolution (one input and one output channel per group).
    float_bias     : bias stays float and is added to the float accumulator (fbgemm); otherwise it is
                     quantized to int32 on the scale s_x·s_w and added to the integer accumulator.
    bias_rule      : the :func:`minquant.affine.quantize` rule that turns a float bias into int32
                     ('torch' multiplies by the reciprocal, 'onnxruntime' divides).
    multiplier     : 'f32_ats_over_ys' — f32(f32(s_x·s_w) / s_y); 'f32_ats_times_inv_ys' —
                     f32(f32(s_x·s_w) · f32(1/s_y)) (torch's qnnpack); or 'f64' (float64 s_x·s_w/s_y).
    quantize_rule  : how this framework quantizes float activations (dynamic kernels, QuantizeLinear).
    """
    name: str
    saturate_pairs: bool
    saturate_depthwise: bool
    float_bias: bool
    bias_rule: str
    multiplier: str
    quantize_rule: str


def mlas_has_vnni() -> bool:
    """True if ONNX Runtime's MLAS would use a VNNI u8×s8 kernel (AVX512-VNNI or AVX-VNNI): no saturation."""
    flags = cpu_flags()
    return cpu_has_vnni() or "avx_vnni" in flags


def _emulations() -> dict:
    fb_sat = not cpu_has_vnni()
    ort_sat = not mlas_has_vnni()
    return {
        "fbgemm": Arithmetic("fbgemm", fb_sat, fb_sat, True, "torch", "f32_ats_over_ys", "torch"),
        "qnnpack": Arithmetic("qnnpack", False, False, False, "torch", "f32_ats_times_inv_ys", "torch"),
        "onnxruntime": Arithmetic("onnxruntime", ort_sat, False, False, "onnxruntime", "f32_ats_over_ys",
                                  "onnxruntime"),
        "minquant": Arithmetic("minquant", False, False, False, "onnxruntime", "f64", "onnxruntime"),
    }


EMULATIONS = _emulations()


def arithmetic(emulate) -> Arithmetic:
    """Look up an :class:`Arithmetic` by name ('fbgemm', 'qnnpack', 'onnxruntime', 'minquant')."""
    if isinstance(emulate, Arithmetic):
        return emulate
    if emulate not in EMULATIONS:
        raise ValueError(f"unknown emulate={emulate!r}; expected one of {sorted(EMULATIONS)}")
    return EMULATIONS[emulate]


def fma_f32_reference(a, b, c) -> np.ndarray:
    """float32 fused multiply-add ``f32(a·b + c)`` with one rounding, in NumPy.

    ``a·b`` of two float32 is exact in 80-bit long double (48 significant bits), and the sum is rounded
    to 64 bits before the final rounding to float32; that double rounding can differ from a true FMA only
    when the 64-bit sum lands exactly on a float32 tie, which needs ≥ 40 specific bits (≈ 1e-12 chance)."""
    ld = np.longdouble
    return (np.asarray(a, np.float32).astype(ld) * np.asarray(b, np.float32).astype(ld)
            + np.asarray(c).astype(ld)).astype(np.float32)
