"""Training-aware quantization: quantization-aware training (fake quantization with the straight-through
estimator and learned scales, LSQ) and AdaRound (learned up/down rounding of the weights), on the same target
arithmetic as the converted :class:`~minquant.quantized.model.QuantizedModel`.

* :func:`fake_quantize` — fake quantization in torch, the target's rule, STE / LSQ backward (``fake_quant.py``).
* :class:`NearestWeights` — round-to-nearest weights (int8 or int4) for ``quantize_static(...,
  weight_rounding=)``, recording the float layers (``weights.py``).
* :class:`FakeQuantModel` — a QuantizedModel mirrored in torch, trained, converted back (``model.py``).
* :func:`finetune` — the training loop, distillation from the float logits, labels optional (``train.py``).
* :func:`adaround`, :class:`AdaRoundWeights` — learned rounding, layer by layer (``adaptive_rounding.py``; not ``adaround.py``, which would shadow the function).
* :func:`block_adaround` — learned rounding block by block, on each block's output (BRECQ; ``block_reconstruction.py``).

Every rounding works per output channel (``quantize_static(weight_rounding=)``, int4 codes on the int8
kernels) and per group of int4 weights (``quantize_precision(w4a8(32), weight_rounding=)``, the ladder's W4A8
g32 model with packed int4 and float16 group scales, run by the W4A8 kernels).

``import minquant.qat`` loads only NumPy; the torch parts load on first use. Layer 4 of docs/architecture.md
(beside ``prune/`` and ``distill/``).
"""
from __future__ import annotations

from .weights import WEIGHT_DTYPES, NearestWeights, weight_qtype, weight_scale

__all__ = ["fake_quantize", "lsq_grad_factor", "NearestWeights", "WEIGHT_DTYPES", "weight_qtype", "weight_scale",
           "FakeQuantModel", "finetune", "adaround", "AdaRoundWeights", "block_adaround"]

_LAZY = {"fake_quantize": "fake_quant", "lsq_grad_factor": "fake_quant", "FakeQuantModel": "model",
         "finetune": "train", "adaround": "adaptive_rounding", "AdaRoundWeights": "adaptive_rounding",
         "block_adaround": "block_reconstruction"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
