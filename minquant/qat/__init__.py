"""Training-aware quantization: quantization-aware training (fake quantization with the straight-through
estimator and learned scales, LSQ) and AdaRound (learned up/down rounding of the weights), on the same target
arithmetic as the converted :class:`~minquant.quantized.model.QuantizedModel`.

* :func:`fake_quantize` — fake quantization in torch, the target's rule, STE / LSQ backward (``fake_quant.py``).
* :class:`NearestWeights` — round-to-nearest weights (int8 or int4) for ``quantize_static(...,
  weight_rounding=)``, recording the float layers (``weights.py``).
* :class:`FakeQuantModel` — a QuantizedModel mirrored in torch, trained, converted back (``model.py``).
* :func:`finetune` — the training loop, distillation from the float logits, labels optional (``train.py``).
* :func:`adaround`, :class:`AdaRoundWeights` — learned rounding, layer by layer (``adaptive_rounding.py``; not ``adaround.py``, which would shadow the function).

``import minquant.qat`` loads only NumPy; the torch parts load on first use. Layer 4 of docs/architecture.md
(beside ``prune/`` and ``distill/``).
"""
from __future__ import annotations

from .weights import WEIGHT_DTYPES, NearestWeights, weight_qtype, weight_scale

__all__ = ["fake_quantize", "lsq_grad_factor", "NearestWeights", "WEIGHT_DTYPES", "weight_qtype", "weight_scale",
           "FakeQuantModel", "finetune", "adaround", "AdaRoundWeights"]

_LAZY = {"fake_quantize": "fake_quant", "lsq_grad_factor": "fake_quant", "FakeQuantModel": "model",
         "finetune": "train", "adaround": "adaptive_rounding", "AdaRoundWeights": "adaptive_rounding"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
