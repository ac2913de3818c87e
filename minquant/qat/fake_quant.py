"""Fake quantization in torch, with the straight-through estimator and a learnable scale (LSQ).

Forward — the value the integer model will see, computed as the target quantizes (``Target.quantize_rule``,
:func:`minquant.affine.quantize`, docs/quantization.md step 6)::

    v = x · f32(1/s)   (rule 'torch': PyTorch multiplies by the float32 reciprocal)
    v = x / s          (rule 'onnxruntime': ONNX Runtime divides)
    q = clamp(rne(v) + z, qmin, qmax)          x̂ = (q − z) · s

bit for bit what :func:`minquant.affine.fake_quantize` returns (NumPy, the reference) and, for rule 'torch',
what ``torch.fake_quantize_per_tensor_affine`` / ``_per_channel_affine`` / ``FakeQuantize`` /
``_fake_quantize_learnable_per_tensor_affine`` return (tests/test_qat_fake_quant.py).

Backward — the straight-through estimator for ``x`` (rounding is treated as the identity inside the code
range, the clamp as a wall outside it) and LSQ's gradient for ``s`` (Esser et al. 2020, "Learned Step Size
Quantization", eq. 3, with the zero point ``z`` held fixed)::

    ∂x̂/∂x = 1 if qmin ≤ rne(v) + z ≤ qmax else 0
    ∂x̂/∂s = rne(v) − v        inside the range
           = qmin − z          below it (x̂ = s·(qmin − z))
           = qmax − z          above it (x̂ = s·(qmax − z))

and the scale's gradient is multiplied by LSQ's ``g = 1 / sqrt(N · Q_p)``, ``N`` the number of elements that
share the scale (the whole tensor per tensor, one channel's elements per channel) and ``Q_p = qmax`` — as
torch's ``_LearnableFakeQuantize(use_grad_scaling=True)`` defines it — so that the scale's update is about as
large, relative to the scale, as a weight's update relative to the weight. ``g`` only matters to SGD-like
optimizers (Adam divides it out).

This module imports torch: it is not part of the numpy-only core.
"""
from __future__ import annotations

import math

import torch

from ..target import QUANTIZE_RULES

__all__ = ["fake_quantize", "lsq_grad_factor"]


def lsq_grad_factor(elements_per_scale: int, qmax: int) -> float:
    """LSQ's gradient scale ``g = 1 / sqrt(N · Q_p)`` (module docstring)."""
    if elements_per_scale < 1 or qmax < 1:
        raise ValueError(f"LSQ's gradient scale needs N ≥ 1 and Q_p = qmax ≥ 1, got N={elements_per_scale}, "
                         f"qmax={qmax}")
    return 1.0 / math.sqrt(elements_per_scale * qmax)


def _view(p: torch.Tensor, x: torch.Tensor, axis):
    """A per-tensor (one value) or per-channel (length ``x.shape[axis]``) parameter shaped to broadcast."""
    if axis is None:
        return p.reshape(())
    shape = [1] * x.dim()
    shape[axis] = x.shape[axis]
    return p.reshape(shape)


def _codes(x, s, z, qmin, qmax, rule):
    """(v, rne(v), unclamped codes, clamped codes) — the forward's integer part, in float32."""
    v = x / s if rule == "onnxruntime" else x * (1.0 / s)
    r = torch.round(v)                          # half to even, like np.rint / std::nearbyint
    q = r + z
    return v, r, q, q.clamp(qmin, qmax)


class _FakeQuantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, axis, rule, grad_factor, codes=None):
        s, z = _view(scale, x, axis), _view(zero_point, x, axis)
        qc = _codes(x, s, z, qmin, qmax, rule)[3] if codes is None else codes
        ctx.save_for_backward(x, scale, zero_point)
        ctx.args = (qmin, qmax, axis, rule, grad_factor)
        return (qc - z) * s

    @staticmethod
    def backward(ctx, dy):
        x, scale, zero_point = ctx.saved_tensors
        qmin, qmax, axis, rule, g = ctx.args
        s, z = _view(scale, x, axis), _view(zero_point, x, axis)
        v, r, q, _ = _codes(x, s, z, qmin, qmax, rule)
        below, above = q < qmin, q > qmax
        inside = ~(below | above)
        dx = dy * inside if ctx.needs_input_grad[0] else None
        ds = None
        if ctx.needs_input_grad[1]:
            local = torch.where(inside, r - v, torch.where(below, qmin - z, qmax - z))
            per = dy * local * g
            if axis is None:
                ds = per.sum().reshape(scale.shape)
            else:
                dims = [d for d in range(x.dim()) if d != axis % x.dim()]
                ds = per.sum(dim=dims).reshape(scale.shape)
        return dx, ds, None, None, None, None, None, None, None


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point, qmin: int, qmax: int, *, axis=None,
                  rule: str = "torch", grad_factor: float | None = None, codes=None) -> torch.Tensor:
    """``x̂ = (clamp(rne(x/s) + z, qmin, qmax) − z) · s`` with the STE / LSQ backward (module docstring).

    ``x``: float32 tensor. ``scale``: float32 tensor, one value (per tensor, ``axis=None``) or one per index of
    ``x`` along ``axis`` (per channel); it may require grad (learnable). ``zero_point``: whole numbers of the
    same length (fixed: no gradient). ``rule``: 'torch' (x·(1/s)) or 'onnxruntime' (x/s) —
    ``Target.quantize_rule``. ``grad_factor``: the scale gradient's factor, default LSQ's ``1/sqrt(N·qmax)``
    (:func:`lsq_grad_factor`; pass 1.0 for the plain gradient).

    ``codes``: the clamped codes the forward returns ``(codes − z)·s`` of, instead of ``clamp(rne(v) + z)`` —
    the codes an integer kernel computed for this value (:class:`~minquant.qat.model.FakeQuantModel`'s exact
    forward: the integer model's output, with the backward above evaluated at ``x``). Same shape as ``x``,
    whole numbers in ``[qmin, qmax]``."""
    if rule not in QUANTIZE_RULES:
        raise ValueError(f"unknown quantize rule {rule!r}; expected one of {QUANTIZE_RULES}")
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        raise TypeError(f"fake_quantize needs a float32 torch tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if not isinstance(scale, torch.Tensor) or scale.dtype != torch.float32:
        raise TypeError("scale must be a float32 torch tensor (one value, or one per channel)")
    if not (isinstance(qmin, int) and isinstance(qmax, int) and qmin < qmax):
        raise ValueError(f"the code range must be two ints qmin < qmax, got [{qmin!r}, {qmax!r}]")
    if not bool(torch.all(torch.isfinite(scale) & (scale > 0))):
        raise ValueError(f"scale must be finite and > 0, got {scale.detach().flatten()[:4].tolist()}")
    zero_point = torch.as_tensor(zero_point, dtype=torch.float32)
    if torch.any(zero_point != torch.round(zero_point)) or torch.any(zero_point < qmin) or torch.any(zero_point > qmax):
        raise ValueError(f"zero_point must be whole numbers in [{qmin}, {qmax}], got {zero_point.flatten()[:4].tolist()}")
    want = 1 if axis is None else x.shape[axis]
    if scale.numel() != want or zero_point.numel() != want:
        raise ValueError(f"{'per tensor' if axis is None else f'per channel along axis {axis}'} needs {want} "
                         f"scale(s) and zero point(s), got {scale.numel()} and {zero_point.numel()}")
    if grad_factor is None:
        grad_factor = lsq_grad_factor(max(x.numel() // want, 1), qmax)
    if codes is not None:
        codes = torch.as_tensor(codes).to(torch.float32)
        if codes.shape != x.shape:
            raise ValueError(f"codes must have the shape of x {tuple(x.shape)}, got {tuple(codes.shape)}")
        if codes.numel() and (float(codes.min()) < qmin or float(codes.max()) > qmax):
            raise ValueError(f"codes must lie in [{qmin}, {qmax}], got [{float(codes.min())}, {float(codes.max())}]")
    return _FakeQuantize.apply(x, scale, zero_point, int(qmin), int(qmax), axis, rule, float(grad_factor), codes)
