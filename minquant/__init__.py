"""minquant: model compression for edge deployment, from first principles in NumPy + Numba.

The core — quantization math (:mod:`minquant.affine`), calibration observers (:mod:`minquant.observers`),
integer kernels (:mod:`minquant.kernels`), the graph IR and its executor — imports only numpy, numba and
scipy. Modules that talk to torch or onnx (``minquant.torch_import``, ``minquant.onnx_import``,
``minquant.onnx_export``, ``minquant.zoo``, ``minquant.training``, ``minquant.prune``, ``minquant.distill``) and
the plotting ones (``minquant.render``, ``minquant.report``) load only when you ask for them.

Start reading at docs/quantization.md; every kernel docstring cites its steps.
"""
from . import affine, kernels, observers, target
from .target import CPUS, Cpu, Target
from .affine import (QType, choose_qparams, dequantize, fake_quantize, pack_int4, qtype, quantize,
                     quantize_bias, to_float16, unpack_int4)
from .executor import infer_shapes, run
from .observers import (EntropyObserver, HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver,
                        MovingAveragePerChannelMinMaxObserver, MSEObserver, Observer, PercentileObserver,
                        PerChannelMinMaxObserver, RunningHistogram)
from .graph import OPS, Graph, Node, register_op

__version__ = "0.1.0"

__all__ = ["affine", "kernels", "observers", "target", "Target", "Cpu", "CPUS",
           "quantize_static", "quantize_dynamic", "from_torch_quantized", "compare", "load", "QuantizedModel",
           "report_torch_quantized", "QType", "qtype", "choose_qparams", "quantize", "dequantize",
           "fake_quantize", "quantize_bias", "pack_int4", "unpack_int4", "to_float16", "Graph", "Node", "OPS",
           "register_op", "run", "infer_shapes", "from_torch", "from_onnx", "to_onnx", "Observer", "MinMaxObserver",
           "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver",
           "PercentileObserver", "MSEObserver", "EntropyObserver", "HistogramObserver", "RunningHistogram"]

_LAZY_MODULES = {"prune", "distill", "zoo", "datasets", "training", "torch_import", "onnx_export", "onnx_import",
                 "render", "report", "ort_reference"}
_WHOLE_MODEL = {"quantize_static", "quantize_dynamic", "from_torch_quantized", "compare", "load", "QuantizedModel",
                "report_torch_quantized"}


def __getattr__(name):
    """torch-dependent entry points load on first use, so ``import minquant`` needs no torch."""
    if name == "from_torch":
        from .torch_import import from_torch
        return from_torch
    if name == "from_onnx":
        from .onnx_import import from_onnx
        return from_onnx
    if name == "to_onnx":
        from .onnx_export import to_onnx
        return to_onnx
    if name in _WHOLE_MODEL:
        import importlib
        return getattr(importlib.import_module(".quantized", __name__), name)
    if name in _LAZY_MODULES:
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'minquant' has no attribute {name!r}")
