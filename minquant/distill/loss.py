"""The knowledge-distillation loss and its gradient, in NumPy (docs/distillation.md).

For one sample with student logits ``z``, teacher logits ``t`` (both length C) and label ``y``::

    p_T(z)  = softmax(z / T)                                  (temperature T > 0 softens the distribution)
    CE      = −log softmax(z)[y]                              (hard labels, always at T = 1)
    KL      = Σ_c p_T(t)_c · (log p_T(t)_c − log p_T(z)_c)    (KL(teacher ‖ student), at temperature T)
    loss    = α · CE + (1 − α) · w · KL,    w = T² if scale_by_T2 else 1

averaged over the batch. Its gradient with respect to the student's logits (docs/distillation.md, §2–§3)::

    ∂loss/∂z = [ α · (softmax(z) − onehot(y))  +  (1 − α) · w · (p_T(z) − p_T(t)) / T ] / N

Every softmax is computed through log-sum-exp (``log p = u − max(u) − log Σ exp(u − max(u))``), so logits
of magnitude 1e4 at T = 0.5 (exponents of 2e4) neither overflow nor produce NaN.

Why ``scale_by_T2=True`` is the default: the soft term's gradient is (p_T(z) − p_T(t)) / T, and for large T
the difference of the two softened distributions itself shrinks like 1/T (docs/distillation.md, §4), so the
soft gradient falls like 1/T². Multiplying by T² (Hinton, Vinyals & Dean 2015) keeps the soft and hard
terms in the proportion α : (1 − α) whatever T is, so that sweeping T changes *how soft* the targets are
and not, silently, *how much* they count. The seed's formula, ``0.7·CE + 0.3·KL`` with no T², is
``scale_by_T2=False``; at T = 4 it weighs the teacher's gradient about 16× less than the same formula with
T² (benchmarks/RESULTS_distill.md measures both).
"""
from __future__ import annotations

import numpy as np

__all__ = ["log_softmax", "softmax", "kd_loss"]


def log_softmax(u: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log softmax(u)`` along ``axis`` via log-sum-exp: ``u − m − log Σ exp(u − m)`` with ``m = max(u)``.

    Every exponent is ≤ 0, so nothing overflows; the largest term is exp(0) = 1, so the sum is ≥ 1 and its
    log is finite. The result is finite for any finite input, even where softmax(u) underflows to 0."""
    u = np.asarray(u, dtype=np.float64)
    shifted = u - u.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(u: np.ndarray, axis: int = -1) -> np.ndarray:
    """``softmax(u) = exp(log_softmax(u))`` along ``axis`` (float64; rows sum to 1; tiny entries may be 0)."""
    return np.exp(log_softmax(u, axis=axis))


def _check_logits(name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a real-valued array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (batch, classes), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def _check_hyper(T, alpha) -> tuple[float, float]:
    T, alpha = float(T), float(alpha)
    if not (np.isfinite(T) and T > 0):
        raise ValueError(f"temperature T must be a positive finite number, got {T}")
    if not (0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return T, alpha


def _check_labels(labels, n: int, c: int) -> np.ndarray:
    y = np.asarray(labels)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers (class indices), got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the logits, got {y.shape}")
    if y.min() < 0 or y.max() >= c:
        raise ValueError(f"labels must lie in [0, {c - 1}], got values from {y.min()} to {y.max()}")
    return y.astype(np.int64)


def kd_loss(student_logits, teacher_logits, labels, *, T: float = 4.0, alpha: float = 0.7,
            scale_by_T2: bool = True) -> tuple[float, np.ndarray]:
    """Distillation loss ``α·CE(z, y) + (1 − α)·w·KL(p_T(t) ‖ p_T(z))``, mean over the batch, and its
    gradient with respect to the student logits ``z`` (see the module docstring for the formulas).

    Parameters
    ----------
    student_logits, teacher_logits : (N, C) arrays of finite reals (computed in float64).
    labels : (N,) integer class indices in [0, C), or ``None`` when ``alpha == 0`` (pure distillation:
        the loss then needs no labels at all).
    T : temperature > 0 applied to both distributions in the soft term (the hard term is always at T = 1).
    alpha : weight of the hard-label cross-entropy in [0, 1]; ``1 − alpha`` weighs the soft term.
        The seed's formula is ``alpha=0.7, T=4``.
    scale_by_T2 : multiply the soft term by T² (Hinton et al.; default) so its gradient keeps its scale
        as T grows; ``False`` is the seed's formula verbatim.

    Returns
    -------
    (loss, grad) : ``loss`` a Python float; ``grad`` a float64 (N, C) array, ∂loss/∂student_logits.
        Each row of ``grad`` sums to 0 (adding a constant to a row of logits changes no softmax).

    Raises ValueError on shape mismatches, NaN/inf logits, non-integer or out-of-range labels, T ≤ 0 and
    alpha outside [0, 1]. The teacher gets no gradient: its logits are constants of the loss.
    """
    z = _check_logits("student_logits", student_logits)
    t = _check_logits("teacher_logits", teacher_logits)
    if z.shape != t.shape:
        raise ValueError(f"student_logits {z.shape} and teacher_logits {t.shape} must have the same shape")
    T, alpha = _check_hyper(T, alpha)
    n, c = z.shape
    w = T * T if scale_by_T2 else 1.0

    # soft term: KL(p_T(t) ‖ p_T(z)) per sample, from log-probabilities (never log of a 0 probability)
    log_ps = log_softmax(z / T)
    log_pt = log_softmax(t / T)
    ps, pt = np.exp(log_ps), np.exp(log_pt)
    kl = (pt * (log_pt - log_ps)).sum(axis=1)               # ≥ 0; an underflowed pt = 0 contributes 0
    loss = (1.0 - alpha) * w * kl.mean()
    grad = (1.0 - alpha) * w * (ps - pt) / T

    # hard term: cross-entropy at T = 1
    if labels is None:
        if alpha != 0.0:
            raise ValueError("labels=None is only allowed for pure distillation (alpha=0)")
    else:
        y = _check_labels(labels, n, c)
        log_p1 = log_softmax(z)
        rows = np.arange(n)
        loss += alpha * float(-log_p1[rows, y].mean())
        g_ce = np.exp(log_p1)
        g_ce[rows, y] -= 1.0
        grad += alpha * g_ce
    return float(loss), grad / n
