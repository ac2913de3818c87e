"""Quantized fully-connected layer: uint8 activations × int8 weights → uint8 (docs/quantization.md, steps 4–8).

    y_q[m, n] = clamp(z_y + M_n · (Σ_k (x_q[m,k] − z_x)(w_q[n,k] − z_w[n]) + b_n / (s_x·s_w[n])))

``qlinear_reference`` spells the two stages out with the readable references
(:func:`~minquant.kernels.gemm.gemm_u8s8_reference` then
:func:`~minquant.kernels.requantize.requantize_reference`); ``qlinear`` runs the fast ones. Both take
``emulate`` — whose arithmetic to reproduce bit for bit (:mod:`minquant.kernels.arithmetic`).
"""
from __future__ import annotations

import numpy as np

from .arithmetic import arithmetic
from .gemm import PackedWeight, gemm_u8s8, gemm_u8s8_reference, pack_weight
from .requantize import output_stage, requantize, requantize_reference

__all__ = ["qlinear", "qlinear_reference"]


def _check_x(x_q, k):
    x_q = np.asarray(x_q)
    if x_q.dtype != np.uint8 or x_q.ndim != 2:
        raise ValueError(f"x_q must be a 2-D uint8 array (N, in_features), got {x_q.dtype} {x_q.shape}")
    if x_q.shape[1] != k:
        raise ValueError(f"shape mismatch: x_q has {x_q.shape[1]} features, weights expect {k}")
    return x_q


def qlinear_reference(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, y_scale, y_zp, *, relu=False,
                      clamp=None, emulate="fbgemm"):
    """Readable quantized linear: x_q uint8 (N, in), w_q int8 (out, in), w_scale/w_zp scalar or (out,),
    bias float32 (out,) / int32 (out,) / None → uint8 (N, out)."""
    w_q = np.asarray(w_q)
    x_q = _check_x(x_q, w_q.shape[1])
    ar = arithmetic(emulate)
    acc = gemm_u8s8_reference(x_q, w_q, x_zp, w_zp, saturate_pairs=ar.saturate_pairs)
    st = output_stage(w_q.shape[0], x_scale, w_scale, bias, y_scale, y_zp, relu=relu, clamp=clamp,
                      emulate=ar)
    return requantize_reference(acc, st)


def qlinear(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, y_scale, y_zp, *, relu=False, clamp=None,
            emulate="fbgemm"):
    """Fast quantized linear; same contract and bit-identical result as :func:`qlinear_reference`.

    ``w_q`` may be a :class:`~minquant.kernels.gemm.PackedWeight` (from ``pack_weight(w_q, w_zp)``) to
    skip re-packing the weights on every call, as torch's ``linear_prepack`` does."""
    packed = w_q if isinstance(w_q, PackedWeight) else pack_weight(w_q, w_zp)
    x_q = _check_x(x_q, packed.w_q.shape[1])
    ar = arithmetic(emulate)
    acc = gemm_u8s8(x_q, packed, x_zp, saturate_pairs=ar.saturate_pairs)
    st = output_stage(packed.w_q.shape[0], x_scale, w_scale, bias, y_scale, y_zp, relu=relu, clamp=clamp,
                      emulate=ar)
    return requantize(acc, st)
