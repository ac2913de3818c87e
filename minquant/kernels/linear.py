"""Quantized fully-connected layer: uint8 activations × int8 weights → uint8 (docs/quantization.md, steps 4–8).

    y_q[m, n] = clamp(z_y + M_n · (Σ_k (x_q[m,k] − z_x)(w_q[n,k] − z_w[n]) + b_n / (s_x·s_w[n])))

``qlinear_reference`` spells the two stages out with the readable references
(:func:`~minquant.kernels.gemm.gemm_u8s8_reference` then
:func:`~minquant.kernels.requantize.requantize_reference`). ``QLinear`` is the fast layer with everything
that does not depend on the input precomputed (packed weights, output stage); ``qlinear`` is its one-shot
functional form. Both take ``target`` — whose arithmetic to reproduce bit for bit
(:mod:`minquant.target`).
"""
from __future__ import annotations

import numpy as np

from ..target import resolve_linear
from .checks import check_linear_args
from .gemm import PackedWeight, gemm_u8s8_reference, pack_weight, prepare_rows, raw_product
from .gemm_simd import ISA_NONE, choose_plan, linear_simd_runner
from .requant_simd import lane_constants
from .requantize import finish_requantize, output_stage, requantize_reference

__all__ = ["QLinear", "qlinear", "qlinear_reference"]


def _check_w(w_q):
    w_q = np.asarray(w_q)
    if w_q.dtype != np.int8 or w_q.ndim != 2:
        raise ValueError(f"w_q must be a 2-D int8 array (out_features, in_features), got {w_q.dtype} {w_q.shape}")
    return w_q


def _check_x(x_q, k):
    x_q = np.asarray(x_q)
    if x_q.dtype != np.uint8 or x_q.ndim != 2:
        raise ValueError(f"x_q must be a 2-D uint8 array (N, in_features), got {x_q.dtype} {x_q.shape}")
    if x_q.shape[1] != k:
        raise ValueError(f"shape mismatch: x_q has {x_q.shape[1]} features, weights expect {k}")
    return x_q


def qlinear_reference(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, y_scale, y_zp, *, relu=False,
                      clamp=None, clamp_hi=None, target="fbgemm"):
    """Readable quantized linear: x_q uint8 (N, in), w_q int8 (out, in), w_scale/w_zp scalar or (out,),
    bias float32 (out,) / int32 (out,) / None → uint8 (N, out)."""
    w_q = _check_w(w_q)
    check_linear_args(w_q.shape, x_scale, x_zp, w_scale, w_zp, bias, y_scale, y_zp, clamp, clamp_hi)
    x_q = _check_x(x_q, w_q.shape[1])
    ar = resolve_linear(target)
    acc = gemm_u8s8_reference(x_q, w_q, x_zp, w_zp, saturate_pairs=ar.saturate_pairs)
    st = output_stage(w_q.shape[0], x_scale, w_scale, bias, y_scale, y_zp, relu=relu, clamp=clamp,
                      clamp_hi=clamp_hi, target=ar)
    return requantize_reference(acc, st)


class QLinear:
    """A quantized linear layer ready to run: weights packed and the output stage precomputed once.

    ``QLinear(w_q, w_scale, w_zp, bias, x_scale, x_zp, y_scale, y_zp, relu=..., clamp=..., clamp_hi=...,
    target=...)`` (``clamp_hi``: optional per-output-channel top code, see :func:`output_stage`);
    calling it with uint8 (N, in) codes returns uint8 (N, out) — bit-identical to :func:`qlinear_reference`.
    ``w_q`` may already be a :class:`~minquant.kernels.gemm.PackedWeight`. The product runs on the host's
    int8 instructions with the zero-point terms and the output stage fused (:attr:`plan`,
    :mod:`~minquant.kernels.gemm_simd`), or — without JIT or AVX2 — as the float32 BLAS product."""

    def __init__(self, w_q, w_scale, w_zp, bias, x_scale, x_zp, y_scale, y_zp, *, relu=False, clamp=None,
                 clamp_hi=None, target="fbgemm"):
        w_shape = w_q.w_q.shape if isinstance(w_q, PackedWeight) else _check_w(w_q).shape
        check_linear_args(w_shape, x_scale, x_zp, w_scale, 0 if isinstance(w_q, PackedWeight) else w_zp, bias,
                          y_scale, y_zp, clamp, clamp_hi)
        self.packed = w_q if isinstance(w_q, PackedWeight) else pack_weight(w_q, w_zp)
        self.arith = resolve_linear(target)
        n, k = self.packed.w_q.shape
        self.x_zp = int(x_zp)
        self.stage = output_stage(n, x_scale, w_scale, bias, y_scale, y_zp, relu=relu, clamp=clamp,
                                  clamp_hi=clamp_hi, target=self.arith)
        self.col_adj = self.packed.col_sum - k * self.packed.w_zp
        self._lanes = lane_constants(self.stage, n)   # the SIMD epilogue's per-channel constants
        self._runners = {}     # plan → the product ready to run (linear_simd_runner)

    @property
    def plan(self):
        """How the product runs on this host (:func:`~minquant.kernels.gemm_simd.choose_plan`): the target's
        arithmetic on the host's int8 instructions, or the float32 BLAS path."""
        return choose_plan(self.arith.saturate_pairs, self.packed.risky.shape[0] > 0)

    def __call__(self, x_q):
        p = self.packed
        x_q = _check_x(x_q, p.w_q.shape[1])
        plan = self.plan
        if plan.isa != ISA_NONE:
            run = self._runners.get(plan)
            if run is None:     # made once per plan (the host's instructions, or those a test caps it to)
                run = self._runners[plan] = linear_simd_runner(plan, p, self.x_zp, self.col_adj, self.stage,
                                                               self._lanes)
            return run(x_q)
        a_f, row_sum, col_max, norm2 = prepare_rows(x_q)
        raw = raw_product(a_f, p, norm2, col_max, self.arith.saturate_pairs)
        out = np.empty((x_q.shape[0], p.w_q.shape[0], 1), np.uint8)
        finish_requantize(raw, row_sum, self.col_adj, p.w_zp, self.x_zp, self.stage, out)
        return out.reshape(x_q.shape[0], p.w_q.shape[0])


def qlinear(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, y_scale, y_zp, *, relu=False, clamp=None,
            clamp_hi=None, target="fbgemm"):
    """One-shot quantized linear; same contract and bit-identical result as :func:`qlinear_reference`.

    It builds a :class:`QLinear` and calls it once, so raw int8 weights are **packed on every call** (column
    sums, the pairs that can saturate, and the int8 SIMD operand): for a 1024 × 1024 weight that costs
    several times the product itself. The fast form is the class — build a :class:`QLinear` once and call
    it (what the benchmarks time, like torch's prepacked ``quantized.linear``); passing a
    :class:`~minquant.kernels.gemm.PackedWeight` (``pack_weight(w_q, w_zp)``) here at least reuses the
    packing (its SIMD operand is kept on it after the first call)."""
    return QLinear(w_q, w_scale, w_zp, bias, x_scale, x_zp, y_scale, y_zp, relu=relu, clamp=clamp,
                   clamp_hi=clamp_hi, target=target)(x_q)
