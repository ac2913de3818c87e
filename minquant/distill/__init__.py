"""Knowledge distillation: train a small student to match a large teacher's softened outputs.

* :func:`kd_loss` — the loss ``α·CE + (1 − α)·T²·KL(softmax(t/T) ‖ softmax(z/T))`` and its gradient, in
  NumPy (``loss.py``; derivation in docs/distillation.md).
* :class:`KDLoss` — the same loss as a torch ``nn.Module`` (``torch_loss.py``), checked against it.
* :func:`train` — train a student with or without a teacher, on top of :func:`minquant.data.training.fit`
  (``trainer.py``; not ``train.py``, which would shadow the function).
* :func:`resnet18_digits`, :func:`student_cnn`, :func:`teacher_resnet18_digits` — the seed's teacher and
  student for scikit-learn's digits (``models.py``).

``import minquant.distill`` loads only NumPy; the torch parts load on first use.
"""
from __future__ import annotations

from .loss import kd_loss, log_softmax, softmax

__all__ = ["kd_loss", "log_softmax", "softmax", "KDLoss", "train", "DistillResult", "stratified_subset",
           "resnet18_digits", "student_cnn", "count_params", "teacher_resnet18_digits"]

_LAZY = {
    "KDLoss": "torch_loss",
    "train": "trainer", "DistillResult": "trainer", "stratified_subset": "trainer",
    "resnet18_digits": "models", "student_cnn": "models", "count_params": "models",
    "teacher_resnet18_digits": "models",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        for other, where in _LAZY.items():  # cache every name of that module: __getattr__ runs once each
            if where == _LAZY[name]:
                globals()[other] = getattr(module, other)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
