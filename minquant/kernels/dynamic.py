"""Dynamic quantized linear: float32 in, int8 weights, float32 out (docs/quantization.md, step 10, built on
steps 3, 4, 8 and the bias of step 5).

Only the weights are quantized ahead of time. At run time each call

1. measures the activation range [min x, max x] and picks per-tensor uint8 qparams (s_x, z_x) with
   :func:`minquant.affine.choose_qparams` — no calibration data needed;
2. quantizes x with :func:`minquant.affine.quantize` (step 3);
3. runs the integer GEMM ``acc = Σ_k (x_q − z_x)(w_q − z_w)`` (:func:`~minquant.kernels.gemm.gemm_u8s8`,
   step 4, with int16 pair saturation where the framework has it, step 8);
4. dequantizes the accumulator straight to float and adds the float bias: ``y ≈ s_x·s_w·acc + b``.
   There is no output quantization, so there are no output qparams.

How each framework evaluates it (``target=``; each measured at 0 mismatching elements):

``"fbgemm"``      ``torch.ops.quantized.linear_dynamic`` on engines fbgemm / x86. qparams: rule 'fbgemm'
                  (float64, ``reduce_range`` → codes [0, 127], the default, so that u8×s8 pairs cannot
                  overflow int16), quantize rule 'torch'; pairs saturate unless the CPU has VNNI;
                  ``y = fma(f32(acc), f32(f32(s_x)·s_w), b)`` — one rounding (fbgemm's
                  ``ReQuantizeForFloat``; s_x is computed in double but stored as float32 first).
``"qnnpack"``     the same op on engine qnnpack: ``reduce_range`` is *ignored* (torch warns: codes [0, 255]),
                  exact int32 accumulation, ``y = f32(f32(f32(acc)·f32(s_w·s_x)) + b)`` — multiply, then add.
``"onnxruntime"`` ONNX Runtime's ``DynamicQuantizeLinear → MatMulInteger → Cast → Mul(s_x·s_w) → Add(b)``
                  (the graph its dynamic quantizer writes for MatMul): qparams in float32 — rule 'torch'
                  gives the same (s_x, z_x) except for an all-constant input, whose output is the bias
                  either way — quantize by division (rule 'onnxruntime'), MLAS u8×s8 GEMM (pairs saturate
                  on AVX2 without VNNI, measured), then ``f32(f32(acc)·f32(s_x·s_w)) + b``.
``"minquant"``    textbook: qparams rule 'onnxruntime' (float64) honouring ``reduce_range``, quantize by
                  division, exact int32 accumulation, ``y = f32(acc·s_x·s_w + b)`` in float64.

``dynamic_linear_reference`` is the NumPy spec; ``dynamic_linear`` the fast version (BLAS-exact GEMM +
Numba output stage), bit-identical.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..affine import choose_qparams, quantize
from ..target import resolve_linear
from .gemm import PackedWeight, gemm_u8s8, gemm_u8s8_reference, pack_weight
from .requantize import _fma32, fma_f32_reference

__all__ = ["dynamic_linear", "dynamic_linear_reference", "dynamic_input_qparams"]

_F32 = np.float32


def _saturates(ar) -> bool:
    """u8×s8 pair saturation in this emulation's GEMM (step 8): the :class:`Arithmetic`'s own flag —
    MatMulInteger runs the same MLAS kernel as QLinearMatMul (measured: saturates on AVX2 without VNNI)."""
    return ar.saturate_pairs


def dynamic_input_qparams(x, *, reduce_range=True, target="fbgemm"):
    """The run-time activation qparams (s_x, z_x) each emulation picks for float input ``x`` (module
    docstring): uint8 codes, [0, 127] with ``reduce_range`` where the emulation honours it."""
    ar = resolve_linear(target)
    x = np.asarray(x)
    if x.size == 0:
        raise ValueError("dynamic_linear needs a non-empty input")
    lo, hi = np.float32(x.min()), np.float32(x.max())   # NaN/Inf are rejected by choose_qparams
    if ar.name == "fbgemm":
        s, z = choose_qparams(lo, hi, "uint8", reduce_range=reduce_range, rule="fbgemm")
    elif ar.name == "qnnpack":
        s, z = choose_qparams(lo, hi, "uint8", reduce_range=False, rule="fbgemm")
    elif ar.name == "onnxruntime":
        s, z = choose_qparams(lo, hi, "uint8", reduce_range=False, rule="torch")
    else:
        s, z = choose_qparams(lo, hi, "uint8", reduce_range=reduce_range, rule="onnxruntime")
    return float(s), int(z)


def _check(x, w_shape, bias):
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise ValueError(f"x must be float32, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[-1] != w_shape[1]:
        raise ValueError(f"shape mismatch: x has {x.shape[-1] if x.ndim else 0} features, weights expect "
                         f"{w_shape[1]}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or Inf; dynamic quantization needs finite input")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (w_shape[0],) or bias.dtype.kind != "f":
            raise ValueError(f"bias must be float of shape ({w_shape[0]},), got {bias.dtype} {bias.shape}")
        bias = bias.astype(_F32)
    return x, bias


def _weight_scale(w_scale, n):
    ws = np.asarray(w_scale, dtype=np.float64)
    if ws.ndim not in (0, 1) or (ws.ndim == 1 and ws.shape != (n,)):
        raise ValueError(f"w_scale must be a scalar or ({n},), got shape {ws.shape}")
    if not np.all(np.isfinite(ws)) or np.any(ws <= 0):
        raise ValueError("w_scale must be finite and > 0")
    return np.broadcast_to(ws, (n,))


def dynamic_linear_reference(x, w_q, w_scale, w_zp, bias, *, reduce_range=True, relu=False, target="fbgemm"):
    """Readable dynamic linear (module docstring). x float32 (..., in); w_q int8 (out, in); w_scale, w_zp
    scalar or (out,); bias float (out,) or None → float32 (..., out). ``relu`` applies max(y, 0)
    (torch's ``linear_relu_dynamic``)."""
    w_q = np.asarray(w_q)
    if w_q.dtype != np.int8 or w_q.ndim != 2:
        raise ValueError(f"w_q must be a 2-D int8 array (out, in), got {w_q.dtype} {w_q.shape}")
    x, bias = _check(x, w_q.shape, bias)
    ar = resolve_linear(target)
    n_out = w_q.shape[0]
    ws = _weight_scale(w_scale, n_out)
    x2 = x.reshape(-1, x.shape[-1])
    # 1-2. run-time qparams and quantization of the activations
    xs, xz = dynamic_input_qparams(x2, reduce_range=reduce_range, target=ar)
    x_q = quantize(x2, xs, xz, "uint8", target=ar.quantize_rule)
    # 3. integer GEMM with the zero-point corrections
    acc = gemm_u8s8_reference(x_q, w_q, xz, w_zp, saturate_pairs=_saturates(ar)).astype(np.int64)
    # 4. back to float
    b = np.zeros(n_out, _F32) if bias is None else bias
    if ar.name == "minquant":
        y = (acc * (xs * ws) + b.astype(np.float64)).astype(_F32)
    else:
        s = (_F32(xs) * ws.astype(_F32)).astype(_F32)          # f32(f32(s_x) · s_w)
        acc_f = acc.astype(_F32)
        if ar.name == "fbgemm":
            y = fma_f32_reference(acc_f, np.broadcast_to(s, acc.shape), np.broadcast_to(b, acc.shape))
        else:
            y = ((acc_f * s).astype(_F32) + b).astype(_F32)
    if relu:
        y = np.maximum(y, _F32(0))
    return y.reshape(x.shape[:-1] + (n_out,))


@njit(cache=True)
def _dequant_kernel(acc, s32, s64, b, mode, relu, out):
    """acc (M, N) int32 → float32 (M, N): mode 0 fma, 1 multiply-then-add, 2 float64."""
    M, N = acc.shape
    for m in range(M):
        for n in range(N):
            if mode == 0:
                y = _fma32(np.float32(acc[m, n]), s32[n], b[n])
            elif mode == 1:
                y = np.float32(np.float32(np.float32(acc[m, n]) * s32[n]) + b[n])
            else:
                y = np.float32(np.float64(acc[m, n]) * s64[n] + np.float64(b[n]))
            if relu and y < np.float32(0):
                y = np.float32(0)
            out[m, n] = y


def dynamic_linear(x, w_q, w_scale, w_zp, bias, *, reduce_range=True, relu=False, target="fbgemm"):
    """Fast dynamic linear; same contract and bit-identical result as :func:`dynamic_linear_reference`.
    ``w_q`` may be a :class:`~minquant.kernels.gemm.PackedWeight` (``pack_weight(w_q, w_zp)``)."""
    packed = w_q if isinstance(w_q, PackedWeight) else pack_weight(w_q, w_zp)
    x, bias = _check(x, packed.w_q.shape, bias)
    ar = resolve_linear(target)
    n_out = packed.w_q.shape[0]
    ws = _weight_scale(w_scale, n_out)
    x2 = x.reshape(-1, x.shape[-1])
    xs, xz = dynamic_input_qparams(x2, reduce_range=reduce_range, target=ar)
    x_q = quantize(x2, xs, xz, "uint8", target=ar.quantize_rule)
    acc = gemm_u8s8(x_q, packed, xz, saturate_pairs=_saturates(ar))
    b = np.zeros(n_out, _F32) if bias is None else np.ascontiguousarray(bias, _F32)
    mode = {"fbgemm": 0, "minquant": 2}.get(ar.name, 1)
    s32 = (_F32(xs) * ws.astype(_F32)).astype(_F32)
    s64 = np.ascontiguousarray(xs * ws, dtype=np.float64)
    out = np.empty(acc.shape, _F32)
    _dequant_kernel(acc, s32, s64, b, mode, bool(relu), out)
    return out.reshape(x.shape[:-1] + (n_out,))
