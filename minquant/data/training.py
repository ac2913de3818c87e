"""A small, seeded training loop for classifiers on NumPy data (torch): shared by the lessons.

``fit`` trains with Adam and cross-entropy, optionally calling ``on_epoch(epoch, model)`` after every epoch
(evaluation, pruning schedules); ``accuracy`` evaluates. Imports torch: not part of the numpy-only core."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

__all__ = ["fit", "accuracy", "predict_logits"]


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int = 10, lr: float = 1e-3,
        batch_size: int = 64, seed: int = 0, weight_decay: float = 0.0, loss_fn=None, on_epoch=None,
        progress: bool = False) -> nn.Module:
    """Train ``model`` in place on (x, y); returns it in eval mode.

    ``loss_fn(logits, yb, xb)`` replaces cross-entropy when given (e.g. a distillation loss).
    The data order is fixed by ``seed``; torch's own RNG (dropout, init) is the caller's to seed."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError("empty training set")
    rng = np.random.default_rng(seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    ce = nn.CrossEntropyLoss()
    epochs_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm
        epochs_iter = tqdm(epochs_iter, desc="train", unit="epoch")
    for epoch in epochs_iter:
        model.train()
        order = torch.from_numpy(rng.permutation(len(x)))
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            xb, yb = xt[idx], yt[idx]
            logits = model(xb)
            loss = ce(logits, yb) if loss_fn is None else loss_fn(logits, yb, xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if on_epoch is not None:
            model.eval()
            on_epoch(epoch, model)
    return model.eval()


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Float logits of ``model`` on NumPy input, in eval mode, batched."""
    model.eval()
    outs = [model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32))).numpy()
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs)


def accuracy(model_or_logits, x: np.ndarray | None = None, y: np.ndarray | None = None) -> float:
    """Top-1 accuracy in [0, 1]: ``accuracy(model, x, y)`` or ``accuracy(logits, y=y)``."""
    if isinstance(model_or_logits, nn.Module):
        logits = predict_logits(model_or_logits, x)
    elif callable(model_or_logits):
        logits = np.asarray(model_or_logits(x))
    else:
        logits = np.asarray(model_or_logits)
    return float((logits.argmax(1) == np.asarray(y)).mean())
