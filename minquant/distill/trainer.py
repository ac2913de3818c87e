"""Train a student with (or without) a teacher: :func:`train`, built on :func:`minquant.data.training.fit`.

``fit`` owns the loop (Adam, seeded data order); distillation plugs in through its ``loss_fn`` hook. The
hook receives the batch's *inputs*, not their indices, yet the teacher's logits should be computed once and
looked up per sample. So ``train`` hands ``fit`` the sample indices as its "images" (a float column, exact up
to 2²⁴) and wraps the student in :class:`_ByIndex`, which fetches the real images; ``loss_fn`` then reads
the teacher's row for the same indices. Per batch::

    z = student(x[idx]);   t = teacher_logits[idx];   loss = KDLoss(T, alpha)(z, t, y[idx])

Quantizing the distilled student: ``train(..., quantize=fn)`` calls ``fn(student, x_train)`` after training —
the training images serve as calibration data — and expects back a callable ``NCHW float32 → logits``
(the shape of minquant's ``QuantizedModel``); its test accuracy is reported beside the float one. With
minquant's post-training static int8 converter::

    train(student, teacher, data, quantize=lambda m, calib: minquant.quantize_static(m, [calib]))

The student from :func:`minquant.distill.student_cnn` uses only layers that converter runs in integers
(Conv2d + ReLU fused, MaxPool2d, Flatten, Linear); benchmarks/distill_digits.py does exactly this.
This module imports torch: it is not part of the numpy-only core.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..data.training import accuracy, fit, predict_logits
from .torch_loss import KDLoss

__all__ = ["train", "DistillResult", "stratified_subset"]


@dataclass
class DistillResult:
    """What :func:`train` returns.

    ``history``: one dict per evaluated epoch (``epoch``, ``train_accuracy`` and, when test data was given,
    ``test_accuracy``). ``test_accuracy``: after the last epoch. ``quantized`` / ``quantized_accuracy``:
    set by the ``quantize`` hook (the accuracy only when test data was given)."""
    student: nn.Module
    history: list[dict] = field(default_factory=list)
    test_accuracy: float | None = None
    quantized: object | None = None
    quantized_accuracy: float | None = None


class _ByIndex(nn.Module):
    """``student(x[idx])`` for a column of float sample indices: lets ``fit`` iterate over indices."""

    def __init__(self, student: nn.Module, x: np.ndarray):
        super().__init__()
        self.student = student
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.student(self.x[idx[:, 0].long()])


def stratified_subset(x: np.ndarray, y: np.ndarray, per_class: int, seed: int = 0):
    """``per_class`` samples of every class, drawn without replacement (seeded), in a shuffled order.

    Raises ValueError if a class has fewer than ``per_class`` samples."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    if per_class < 1:
        raise ValueError(f"per_class must be ≥ 1, got {per_class}")
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} samples, fewer than per_class={per_class}")
        picks.append(rng.choice(idx, per_class, replace=False))
    order = rng.permutation(np.concatenate(picks))
    return x[order], y[order]


def _teacher_logits(teacher, x: np.ndarray, n_classes_hint: int | None) -> torch.Tensor:
    if isinstance(teacher, nn.Module):
        logits = predict_logits(teacher, x)
    else:
        logits = np.asarray(teacher)
        if logits.ndim != 2 or logits.shape[0] != len(x):
            raise ValueError(f"teacher logits must have shape ({len(x)}, classes) to match x_train, "
                             f"got {logits.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("teacher logits contain NaN or infinity")
    if n_classes_hint is not None and logits.shape[1] <= n_classes_hint:
        raise ValueError(f"teacher gives {logits.shape[1]} classes but labels go up to {n_classes_hint}")
    return torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))


def train(student: nn.Module, teacher, data, *, epochs: int = 30, lr: float = 1e-3, batch_size: int = 32,
          seed: int = 0, T: float = 4.0, alpha: float = 0.7, scale_by_T2: bool = True,
          weight_decay: float = 0.0, eval_every: int = 1, progress: bool = True,
          quantize: Callable | None = None) -> DistillResult:
    """Train ``student`` in place with the distillation loss (or plain cross-entropy); return a
    :class:`DistillResult` with the student in eval mode.

    Parameters
    ----------
    student : the model to train (initialised by the caller: seed torch before building it).
    teacher : an ``nn.Module`` (run once, in eval mode, on ``x_train``), or a precomputed (N_train, C) array
        of teacher logits aligned with ``x_train``, or ``None`` to train from scratch with cross-entropy
        (``T``, ``alpha``, ``scale_by_T2`` then unused).
    data : ``(x_train, y_train)`` or ``(x_train, y_train, x_test, y_test)`` NumPy arrays (NCHW float32,
        int labels), e.g. from :func:`minquant.data.datasets.digits`.
    eval_every : evaluate train and test accuracy after every ``eval_every``-th epoch and after the last
        (default: every epoch; large sweeps save time with a coarser curve).
    T, alpha, scale_by_T2 : the loss :class:`~minquant.distill.KDLoss` (defaults: T = 4, α = 0.7 as in the
        seed, with Hinton's T² factor).
    seed : fixes the data order (``fit``) and torch's RNG during training.
    progress : a tqdm bar over epochs showing the latest accuracies.
    quantize : optional ``fn(student, calibration_x) -> callable(x) -> logits``, applied after training
        (see the module docstring; e.g. ``lambda m, calib: minquant.quantize_static(m, [calib])``).
    """
    if len(data) not in (2, 4):
        raise ValueError(f"data must be (x_train, y_train) or (x_train, y_train, x_test, y_test), "
                         f"got a sequence of {len(data)}")
    x_train, y_train = np.asarray(data[0]), np.asarray(data[1])
    x_test, y_test = (data[2], data[3]) if len(data) == 4 else (None, None)
    if len(x_train) != len(y_train):
        raise ValueError(f"x_train has {len(x_train)} samples but y_train has {len(y_train)}")
    if x_test is not None and len(x_test) != len(y_test):
        raise ValueError(f"x_test has {len(x_test)} samples but y_test has {len(y_test)}")
    eval_every = int(eval_every)
    if eval_every < 1:
        raise ValueError(f"eval_every must be ≥ 1, got {eval_every}")
    if len(x_train) >= 2 ** 24:
        raise ValueError("more than 2**24 training samples: indices would not be exact in float32")
    if not np.isfinite(x_train).all():
        raise ValueError("x_train contains NaN or infinity")

    loss_fn = None
    if teacher is not None:
        t_all = _teacher_logits(teacher, x_train, int(y_train.max()))
        kd = KDLoss(T=T, alpha=alpha, scale_by_T2=scale_by_T2)

        def loss_fn(logits, yb, idx):
            return kd(logits, t_all[idx[:, 0].long()], yb)

    result = DistillResult(student=student)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs, desc="distill" if teacher is not None else "scratch", unit="epoch")

    def on_epoch(epoch, wrapped):
        if bar is not None:
            bar.update(1)
        if (epoch + 1) % eval_every != 0 and epoch + 1 != epochs:
            return
        row = {"epoch": epoch + 1, "train_accuracy": accuracy(student, x_train, y_train)}
        if x_test is not None:
            row["test_accuracy"] = accuracy(student, x_test, y_test)
        result.history.append(row)
        if bar is not None:
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "epoch"})

    torch.manual_seed(seed)
    idx_column = np.arange(len(x_train), dtype=np.float32)[:, None]
    try:
        fit(_ByIndex(student, x_train), idx_column, y_train, epochs=epochs, lr=lr, batch_size=batch_size,
            seed=seed, weight_decay=weight_decay, loss_fn=loss_fn, on_epoch=on_epoch)
    finally:
        if bar is not None:
            bar.close()
    student.eval()
    if x_test is not None:
        result.test_accuracy = result.history[-1]["test_accuracy"] if result.history else \
            accuracy(student, x_test, y_test)
    if quantize is not None:
        result.quantized = quantize(student, x_train)
        if x_test is not None:
            result.quantized_accuracy = accuracy(result.quantized, x_test, y_test)
    return result
