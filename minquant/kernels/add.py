"""Quantized residual add: two uint8 tensors with their own (scale, zero point) → a third
(docs/quantization.md, step 10; the output stage is step 7, the one-LSB differences step 6).

    real sum      y   = s_a·(a − z_a) + s_b·(b − z_b)                         (step 1, twice)
    its code      y_q = clamp(z_y + rne(y / s_y), lo, 255)                    (step 3)
                  lo  = z_y with a fused ReLU (real 0 is the code z_y, step 2), else 0

Every framework evaluates this same formula, each with its own roundings (``target=``):

``"fbgemm"``      PyTorch engines fbgemm / x86 (``torch.ops.quantized.add`` / ``add_relu``): dequantize to
                  float32, add, requantize. Two dequantizers run side by side: the SIMD loop (AVX2: blocks
                  of 64 elements, the first ``64·⌊n/64⌋``) computes ``fma(s, f32(q), f32(s·(−z)))`` — one
                  rounding, with the product ``s·z`` rounded first — and the scalar loop for the remaining
                  ``n mod 64`` elements ``f32(f32(q − z)·s)``. They differ in the last bit for ~45% of codes;
                  that flips the output code rarely (4 of 1,966,080 code pairs over 30 random qparam sets),
                  but it does, so *where* an element sits decides its rounding. Then ``c = f32(a_f + b_f)`` (ReLU: ``max(c, 0)``) and
                  ``clamp(rne(f32(c · f32(1/s_y))) + z_y)`` — torch's quantize rule (step 3).
``"qnnpack"``     PyTorch engine qnnpack: fixed point. With ``r_a = f32(s_a/s_y)``, ``r_b = f32(s_b/s_y)`` in
                  [2⁻¹⁴, 2⁸) (else qnnpack refuses: ``ValueError`` here), ``shift = 21 − exponent(max(r_a, r_b))``
                  and integer multipliers ``m = rne(r·2^shift)`` (< 2²²):
                  ``acc = m_a·(a − z_a) + m_b·(b − z_b)``; ``out = (acc >> shift) + (remainder > half)``,
                  the remainder taken toward zero — round half *away from zero*; then ``clamp(out + z_y)``.
``"onnxruntime"`` ONNX Runtime ``com.microsoft.QLinearAdd`` (MLAS, AVX2): float32 with fused multiply-adds:
                  ``r_a = f32(s_a/s_y)``, ``r_b = f32(s_b/s_y)``, ``k = f32(z_y − fma(r_a, z_a, f32(r_b·z_b)))``,
                  ``clamp(rne(fma(a, r_a, fma(b, r_b, k))))`` — the zero point is added *before* rounding.
``"minquant"``    the textbook formula above in float64, round half to even.

``relu=True`` is the lower clamp at z_y in every emulation (torch's ``add_relu`` clamps the float sum at 0
before requantizing, which gives the same codes; ONNX Runtime has no fused ReLU in QLinearAdd, so there it
stands for a following ReLU on the codes).

``qadd_reference`` spells each out in NumPy; ``qadd`` is the Numba version (bit-identical).

The fbgemm position rule assumes what a residual add sees: same-shape contiguous inputs, one thread (torch
splits tensors of 32768+ elements across threads and every chunk gets its own scalar tail) and the width
of the kernel build that runs (``torch_vector_block``): 64-element blocks on AVX2 and AVX-512 CPUs alike —
torch registers ``qadd`` with ``REGISTER_DISPATCH`` only, so an AVX-512 CPU runs its AVX2 build (measured:
a 128-element model is wrong there) — and none under ATen's ``default`` capability.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..target import resolve_ops
from .checks import check_elementwise_qparams
from .requantize import _fma32, fma_f32_reference

__all__ = ["QAdd", "qadd", "qadd_reference", "qnnpack_add_params", "torch_vector_block"]

_F32 = np.float32


def torch_vector_block(ar) -> int:
    """Elements per iteration of ATen's vectorized elementwise loop for uint8 (2 × ``Vectorized<quint8>``
    = ``2·vector_bits/8``) under the resolved arithmetic ``ar``: 64 for the 256-bit build — which torch 2.14
    runs on AVX2 *and* AVX-512 CPUs (:attr:`minquant.target.Cpu.aten_vector_bits`) — and 0 (scalar loop
    only) under ATen's ``default`` capability."""
    return 2 * ar.vector_bits // 8


def _check_inputs(a_q, a_scale, a_zp, b_q, b_scale, b_zp, y_scale, y_zp):
    a_q, b_q = np.asarray(a_q), np.asarray(b_q)
    for name, q in (("a_q", a_q), ("b_q", b_q)):
        if q.dtype != np.uint8:
            raise ValueError(f"{name} must be a uint8 array, got dtype {q.dtype}")
    if a_q.shape != b_q.shape:
        raise ValueError(f"shape mismatch: a_q {a_q.shape} vs b_q {b_q.shape} (a residual add needs equal shapes)")
    check_elementwise_qparams(a_scale=a_scale, a_zp=a_zp, b_scale=b_scale, b_zp=b_zp, y_scale=y_scale, y_zp=y_zp)
    return a_q, b_q


def qnnpack_add_params(a_scale, b_scale, y_scale):
    """qnnpack's fixed-point parameters (m_a, m_b, shift) for the ratios s_a/s_y, s_b/s_y (module docstring).

    Raises ``ValueError`` where qnnpack refuses to build the operator (a ratio outside [2⁻¹⁴, 2⁸))."""
    r_a = _F32(_F32(a_scale) / _F32(y_scale))
    r_b = _F32(_F32(b_scale) / _F32(y_scale))
    for r in (r_a, r_b):
        if not (2.0 ** -14 <= r < 2.0 ** 8):
            raise ValueError(f"qnnpack add needs input/output scale ratios in [2^-14, 2^8); got {float(r):.7g}")
    exponent = int(np.array(max(r_a, r_b), _F32).view(np.uint32) >> 23) - 127
    shift = 21 - exponent
    if not 13 <= shift < 32:
        raise ValueError(f"qnnpack add: shift {shift} outside [13, 32)")
    pow2 = _F32(2.0 ** shift)                                     # exact power of two
    m_a = int(np.rint(_F32(r_a * pow2)))
    m_b = int(np.rint(_F32(r_b * pow2)))
    return m_a, m_b, shift


def qadd_reference(a_q, a_scale, a_zp, b_q, b_scale, b_zp, y_scale, y_zp, *, relu=False, target="fbgemm"):
    """Readable quantized add (module docstring): uint8 ``a_q``, ``b_q`` of equal shape → uint8 of that shape."""
    a_q, b_q = _check_inputs(a_q, a_scale, a_zp, b_q, b_scale, b_zp, y_scale, y_zp)
    ar = resolve_ops(target)
    shape = a_q.shape
    a = a_q.ravel().astype(np.int64)
    b = b_q.ravel().astype(np.int64)
    a_zp, b_zp, y_zp = int(a_zp), int(b_zp), int(y_zp)
    lo = y_zp if relu else 0
    if ar.name == "fbgemm":
        sa, sb, sy = _F32(a_scale), _F32(b_scale), _F32(y_scale)
        n_vec = torch_vector_block(ar)
        n_vec = (a.size // n_vec) * n_vec if n_vec else 0
        simd = np.arange(a.size) < n_vec                         # positions the SIMD loop handles
        # SIMD dequantize: fma(s, q, s·(−z)) with s·(−z) rounded to float32 first
        a_simd = fma_f32_reference(sa, a.astype(_F32), _F32(sa * _F32(-a_zp)))
        b_simd = fma_f32_reference(sb, b.astype(_F32), _F32(sb * _F32(-b_zp)))
        # scalar dequantize: f32(q − z) · s
        a_scal = ((a - a_zp).astype(_F32) * sa).astype(_F32)
        b_scal = ((b - b_zp).astype(_F32) * sb).astype(_F32)
        c = (np.where(simd, a_simd, a_scal) + np.where(simd, b_simd, b_scal)).astype(_F32)
        if relu:
            c = np.maximum(c, _F32(0))
        inv = _F32(_F32(1) / sy)
        t = np.rint((c * inv).astype(_F32)).astype(np.int64) + y_zp
    elif ar.name == "qnnpack":
        m_a, m_b, shift = qnnpack_add_params(a_scale, b_scale, y_scale)
        acc = m_a * (a - a_zp) + m_b * (b - b_zp)                # fits int32: |acc| < 2·255·2^22
        mask = (1 << shift) - 1
        remainder = (acc & mask) - (acc < 0)                     # remainder of the division toward zero
        t = (acc >> shift) + (remainder > (mask >> 1)) + y_zp
    elif ar.name == "onnxruntime":
        r_a = _F32(_F32(a_scale) / _F32(y_scale))
        r_b = _F32(_F32(b_scale) / _F32(y_scale))
        k = _F32(_F32(y_zp) - fma_f32_reference(r_a, _F32(a_zp), _F32(r_b * _F32(b_zp))))
        t_f = fma_f32_reference(a.astype(_F32), r_a, fma_f32_reference(b.astype(_F32), r_b, k))
        t = np.rint(t_f).astype(np.int64)
    else:  # minquant: float64 textbook
        y = float(a_scale) * (a - a_zp) + float(b_scale) * (b - b_zp)
        if relu:
            y = np.maximum(y, 0.0)
        t = np.rint(y / float(y_scale)).astype(np.int64) + y_zp
    return np.clip(t, lo, 255).astype(np.uint8).reshape(shape)


@njit(cache=True)
def _store(t, lo, hi, out, i):
    """Clamp a rounded value (float) to [lo, hi = 255] and store it as uint8 (``min``/``max`` of one float type,
    not branches: the loops that call it then vectorize)."""
    out[i] = np.uint8(np.int32(min(max(t, lo), hi)))


@njit(cache=True)
def _add_fbgemm_kernel(a, b, n_vec, sa, sb, pa, pb, a_zp, b_zp, inv_y, y_zp, lo, relu, out):
    """torch fbgemm: FMA dequantization for the first n_vec elements (SIMD blocks), plain after."""
    hi = np.float32(255)
    for i in range(n_vec):
        c = np.float32(_fma32(sa, np.float32(a[i]), pa) + _fma32(sb, np.float32(b[i]), pb))
        if relu:
            c = max(c, np.float32(0))
        _store(np.rint(np.float32(c * inv_y)) + y_zp, lo, hi, out, i)
    for i in range(n_vec, a.size):
        c = np.float32(np.float32(np.float32(np.int32(a[i]) - a_zp) * sa)
                       + np.float32(np.float32(np.int32(b[i]) - b_zp) * sb))
        if relu:
            c = max(c, np.float32(0))
        _store(np.rint(np.float32(c * inv_y)) + y_zp, lo, hi, out, i)


@njit(cache=True)
def _add_qnnpack_kernel(a, b, m_a, m_b, shift, a_zp, b_zp, y_zp, lo, out):
    """qnnpack: fixed-point multipliers, shift with round half away from zero."""
    mask = (np.int64(1) << shift) - 1
    half = mask >> 1
    hi = np.float64(255)
    for i in range(a.size):
        acc = m_a * (np.int64(a[i]) - a_zp) + m_b * (np.int64(b[i]) - b_zp)
        rem = (acc & mask) - (acc < 0)
        t = (acc >> shift) + (rem > half) + y_zp
        _store(np.float64(t), lo, hi, out, i)


@njit(cache=True)
def _add_ort_kernel(a, b, r_a, r_b, k_ort, lo, out):
    """ONNX Runtime: two FMAs, zero point folded into k_ort, rounding last."""
    hi = np.float32(255)
    for i in range(a.size):
        _store(np.rint(_fma32(np.float32(a[i]), r_a, _fma32(np.float32(b[i]), r_b, k_ort))), lo, hi, out, i)


@njit(cache=True)
def _add_f64_kernel(a, b, sa, sb, sy, a_zp, b_zp, y_zp, lo, relu, out):
    """minquant: float64 textbook."""
    hi = np.float64(255)
    for i in range(a.size):
        y = sa * (np.float64(a[i]) - a_zp) + sb * (np.float64(b[i]) - b_zp)
        if relu:
            y = max(y, 0.0)
        _store(np.rint(y / sy) + y_zp, lo, hi, out, i)


class QAdd:
    """A quantized add ready to run: qparams checked and the target's constants computed once (what a model
    runs per call is only the kernel). ``QAdd(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp, relu=, target=)``;
    calling it with two uint8 arrays of equal shape returns what :func:`qadd` returns (same kernels)."""

    def __init__(self, a_scale, a_zp, b_scale, b_zp, y_scale, y_zp, *, relu=False, target="fbgemm"):
        check_elementwise_qparams(a_scale=a_scale, a_zp=a_zp, b_scale=b_scale, b_zp=b_zp, y_scale=y_scale,
                                  y_zp=y_zp)
        ar = resolve_ops(target)
        self.name = ar.name
        a_zp, b_zp, y_zp = int(a_zp), int(b_zp), int(y_zp)
        sa, sb, sy = _F32(a_scale), _F32(b_scale), _F32(y_scale)
        lo = float(y_zp if relu else 0)
        #: elements per SIMD block of the fbgemm kernel (0: every element rounds alike, wherever it sits)
        self.block = torch_vector_block(ar) if ar.name == "fbgemm" else 0
        if ar.name == "fbgemm":
            self.consts = (sa, sb, _F32(sa * _F32(-a_zp)), _F32(sb * _F32(-b_zp)), np.int32(a_zp), np.int32(b_zp),
                           _F32(_F32(1) / sy), _F32(y_zp), _F32(lo), bool(relu))
        elif ar.name == "qnnpack":
            m_a, m_b, shift = qnnpack_add_params(a_scale, b_scale, y_scale)
            self.consts = (np.int64(m_a), np.int64(m_b), np.int64(shift), np.int64(a_zp), np.int64(b_zp),
                           np.int64(y_zp), lo)
        elif ar.name == "onnxruntime":
            r_a, r_b = _F32(sa / sy), _F32(sb / sy)
            k_ort = _F32(_F32(y_zp) - fma_f32_reference(r_a, _F32(a_zp), _F32(r_b * _F32(b_zp)))[()])
            self.consts = (r_a, r_b, k_ort, _F32(lo))
        else:
            self.consts = (float(a_scale), float(b_scale), float(y_scale), float(a_zp), float(b_zp), float(y_zp),
                           lo, bool(relu))

    def __call__(self, a_q, b_q):
        if not isinstance(a_q, np.ndarray) or not isinstance(b_q, np.ndarray) or a_q.dtype != np.uint8 \
                or b_q.dtype != np.uint8 or a_q.shape != b_q.shape:
            a_q, b_q = _check_inputs(a_q, 1.0, 0, b_q, 1.0, 0, 1.0, 0)   # raises the error in the user's terms
        shape = a_q.shape
        a = np.ascontiguousarray(a_q).ravel()
        b = np.ascontiguousarray(b_q).ravel()
        out = np.empty(a.size, dtype=np.uint8)
        if self.name == "fbgemm":
            n_vec = (a.size // self.block) * self.block if self.block else 0
            _add_fbgemm_kernel(a, b, n_vec, *self.consts, out)
        elif self.name == "qnnpack":
            _add_qnnpack_kernel(a, b, *self.consts, out)
        elif self.name == "onnxruntime":
            _add_ort_kernel(a, b, *self.consts, out)
        else:
            _add_f64_kernel(a, b, *self.consts, out)
        return out.reshape(shape)


def qadd(a_q, a_scale, a_zp, b_q, b_scale, b_zp, y_scale, y_zp, *, relu=False, target="fbgemm"):
    """Fast quantized add (Numba); same contract and bit-identical result as :func:`qadd_reference`.

    a_q, b_q: uint8 arrays of equal shape; scales/zero points per tensor; ``relu`` fuses a ReLU
    (``add_relu``); ``target`` in 'fbgemm', 'qnnpack', 'onnxruntime', 'minquant'. Returns uint8.
    A model prepares a :class:`QAdd` once instead."""
    a_q, b_q = _check_inputs(a_q, a_scale, a_zp, b_q, b_scale, b_zp, y_scale, y_zp)
    return QAdd(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp, relu=relu, target=target)(a_q, b_q)
