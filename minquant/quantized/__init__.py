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
``quantize_precision``         any precision per model and per layer: fp16, int8, int4 per group with
                               float or int8 activations (precision.py, precision_convert.py)
``quantize_mixed``             the lowest precision per layer within a size or SQNR ``Budget``, chosen by
                               per-layer sensitivity; ``precision_table`` prints it (mixed.py)
=============================  ====================================================================

The quantized graph's ops are in :mod:`.ops`, their kernels in :mod:`.executor`.

"""
from . import ops, passes
from .calibration import calibrate
from .comparison import Comparison, compare, sqnr_db
from .dynamic import QuantizationReport, quantize_dynamic, report_torch_quantized
from .model import DeferredModel, QuantizedModel, load
from .static import CALIBRATORS, DEFAULT_CALIBRATOR, quantize_static, quantize_weight
from .precision import FP16, FP16_W, FP32, INT8, Numbers, Precision, w4a8, w4a16, w4a32
from .precision_convert import quantize_precision
from .mixed import Budget, precision_table, quantize_mixed


__all__ = ["quantize_static", "quantize_dynamic", "compare", "Comparison", "sqnr_db",
           "report_torch_quantized", "QuantizationReport", "QuantizedModel", "DeferredModel", "load", "calibrate", "passes", "ops",
           "CALIBRATORS", "DEFAULT_CALIBRATOR", "quantize_weight", "quantize_precision", "quantize_mixed", "Budget",
           "precision_table", "Precision", "Numbers", "FP32", "FP16", "FP16_W", "INT8", "w4a16", "w4a32", "w4a8"]
