"""Whole-model quantization: static and dynamic int8, torch-quantized model import, per-layer comparison.

=============================  ====================================================================
``quantize_static``            float model + calibration data → :class:`QuantizedModel` (static.py)
``quantize_dynamic``           int8 weights, run-time activation qparams, Linear *and* Conv2d
                               → ``(QuantizedModel, QuantizationReport)`` (dynamic.py)
``from_torch_quantized``       a model quantized by PyTorch eager mode, run on minquant's kernels —
                               bit-identical to torch (from_torch_quantized.py)
``compare``                    per-layer SQNR float vs quantized, worst first (comparison.py)
``report_torch_quantized``     which layers of a torch quantized model really hold int8 weights
``QuantizedModel`` / ``load``  run, ``size_bytes()``, ``summary()``, ``save()`` / ``load()`` (model.py)
``calibrate``                  the calibration loop (calibration.py); ``passes``: BN folding, fusion
=============================  ====================================================================

The quantized graph's ops are in :mod:`.ops`, their kernels in :mod:`.executor`.

"""
from . import ops, passes
from .calibration import calibrate
from .comparison import Comparison, compare, sqnr_db
from .dynamic import QuantizationReport, quantize_dynamic, report_torch_quantized
from .model import DeferredModel, QuantizedModel, load
from .static import CALIBRATORS, DEFAULT_CALIBRATOR, quantize_static, quantize_weight


__all__ = ["quantize_static", "quantize_dynamic", "compare", "Comparison", "sqnr_db",
           "report_torch_quantized", "QuantizationReport", "QuantizedModel", "DeferredModel", "load", "calibrate", "passes", "ops",
           "CALIBRATORS", "DEFAULT_CALIBRATOR", "quantize_weight"]
