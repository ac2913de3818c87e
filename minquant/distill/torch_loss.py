"""The distillation loss as a PyTorch module, written with torch's own primitives.

Same math as :func:`minquant.distill.kd_loss` (docs/distillation.md)::

    loss = α · cross_entropy(z, y) + (1 − α) · w · KL(softmax(t/T) ‖ softmax(z/T)),   w = T² or 1

built from ``F.cross_entropy``, ``F.log_softmax`` and ``F.kl_div(..., log_target=True,
reduction="batchmean")`` — torch's reference implementations — so that ``tests/test_distill_loss.py`` can
check the hand-written NumPy loss *and its hand-derived gradient* against torch autograd. This module
imports torch: it is not part of the numpy-only core.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .loss import _check_hyper

__all__ = ["KDLoss"]


class KDLoss(nn.Module):
    """``KDLoss(T=4.0, alpha=0.7, scale_by_T2=True)(student_logits, teacher_logits, labels)`` → scalar.

    ``teacher_logits`` are detached (the teacher is not trained). ``labels`` may be ``None`` only when
    ``alpha == 0``. The loss is the batch mean (``batchmean`` is the per-sample KL summed over classes,
    averaged over samples — ``reduction="mean"`` would also divide by the number of classes).
    Raises ValueError on mismatched shapes, non-finite logits or bad hyper-parameters."""

    def __init__(self, T: float = 4.0, alpha: float = 0.7, scale_by_T2: bool = True):
        super().__init__()
        self.T, self.alpha = _check_hyper(T, alpha)
        self.scale_by_T2 = bool(scale_by_T2)

    def extra_repr(self) -> str:
        return f"T={self.T}, alpha={self.alpha}, scale_by_T2={self.scale_by_T2}"

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
            raise ValueError(f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                             f"{tuple(teacher_logits.shape)} must both have shape (batch, classes)")
        if not (torch.isfinite(student_logits).all() and torch.isfinite(teacher_logits).all()):
            raise ValueError("student_logits or teacher_logits contain NaN or infinity")
        T, alpha = self.T, self.alpha
        teacher_logits = teacher_logits.detach()
        log_ps = F.log_softmax(student_logits / T, dim=1)
        log_pt = F.log_softmax(teacher_logits / T, dim=1)
        soft = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
        if self.scale_by_T2:
            soft = soft * (T * T)
        if labels is None:
            if alpha != 0.0:
                raise ValueError("labels=None is only allowed for pure distillation (alpha=0)")
            return soft
        if labels.shape != student_logits.shape[:1]:
            raise ValueError(f"labels must have shape ({student_logits.shape[0]},), got {tuple(labels.shape)}")
        return alpha * F.cross_entropy(student_logits, labels) + (1.0 - alpha) * soft
