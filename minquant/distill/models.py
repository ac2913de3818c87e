"""Teacher and student for the seed's distillation challenge on scikit-learn's digits.

* :func:`resnet18_digits` — torchvision's ResNet-18 (11.2 M parameters) adapted to small one-channel images:
  the 7×7 stride-2 stem becomes a 3×3 stride-1 convolution with 1 input channel and the max-pool is removed
  (the CIFAR-style adaptation), so a 28×28 digit reaches layer4 as 4×4 instead of 1×1.
* :func:`student_cnn` — a 3-layer CNN (two convolutions and one linear layer, ~9 k parameters: >1000× fewer),
  built only from layers minquant's static int8 converter targets (Conv2d, ReLU, MaxPool2d, Flatten, Linear).
* :func:`teacher_resnet18_digits` — the teacher trained on the full digits training split, cached as a
  NumPy ``.npz`` in :func:`minquant.data.zoo.cache_dir`.

This module imports torch and torchvision: it is not part of the numpy-only core.
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["resnet18_digits", "student_cnn", "count_params", "teacher_resnet18_digits"]


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def resnet18_digits(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """torchvision ``resnet18(weights=None)`` with a 3×3 stride-1 stem (``in_channels`` → 64, no bias) and
    no max-pool: the usual adaptation to 32×32-or-smaller images. Randomly initialised (torch's RNG)."""
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def student_cnn(size: int = 28, widths: tuple[int, int] = (8, 16), num_classes: int = 10) -> nn.Sequential:
    """The student: conv3×3(1→w1)·ReLU·maxpool2 · conv3×3(w1→w2)·ReLU·maxpool2 · flatten · linear(→classes).

    Three weight layers. For 28×28 input and widths (8, 16): 80 + 1,168 + 7,850 = 9,098 parameters.
    ``size`` must be divisible by 4 (two 2×2 max-pools). Randomly initialised (torch's RNG)."""
    if size % 4 != 0 or size <= 0:
        raise ValueError(f"student_cnn needs an input size divisible by 4, got {size}")
    w1, w2 = widths
    return nn.Sequential(
        nn.Conv2d(1, w1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(w2 * (size // 4) ** 2, num_classes),
    )


def teacher_resnet18_digits(epochs: int = 8, seed: int = 0, *, size: int = 28, lr: float = 1e-3,
                            batch_size: int = 64, cache: bool = True, progress: bool = False):
    """:func:`resnet18_digits` trained on the full training split of :func:`minquant.data.datasets.digits`
    (1,257 images, ``size``×``size``) with Adam and cross-entropy, seeded; eval mode.

    Returns ``(model, (x_train, y_train, x_test, y_test))``. The weights (and BatchNorm statistics) are
    cached as ``resnet18_digits_s{size}_e{epochs}_seed{seed}.npz`` in :func:`minquant.data.zoo.cache_dir`
    (no pickle). At 28×28 one epoch takes about a minute on one core."""
    from ..data.datasets import digits
    from ..data.training import fit
    from ..data.zoo import cache_dir, load_state_npz, save_state_npz

    data = digits(size=size)
    path = cache_dir() / f"resnet18_digits_s{size}_e{epochs}_seed{seed}.npz"
    model = resnet18_digits()
    if cache and path.exists():
        try:
            load_state_npz(model, path)
            return model.eval(), data
        except Exception:  # a stale or corrupt cache file is retrained, not trusted
            path.unlink(missing_ok=True)
    torch.manual_seed(seed)
    model = resnet18_digits()
    fit(model, data[0], data[1], epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=progress)
    if cache:
        save_state_npz(model, path)
    return model.eval(), data
