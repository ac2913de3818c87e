"""minquant: model compression for edge deployment, from first principles in NumPy + Numba.

The core — quantization math (:mod:`minquant.affine`), calibration observers (:mod:`minquant.observers`),
integer kernels (:mod:`minquant.kernels`), the graph IR and its executor — imports only numpy, numba and
scipy. One folder per layer above it, imports pointing only downward (docs/architecture.md): ``kernels``,
``quantized`` (whole models), ``interop`` (torch and ONNX import/export), ``frameworks`` (what torch and ONNX
Runtime do, as callable recipes), ``prune``, ``distill``, ``lesson`` (the CLI, the demo, plots, data and model
zoo). What needs torch, onnx or matplotlib loads only when you ask for it.

Start reading at docs/quantization.md; every kernel docstring cites its steps.
"""
__version__ = "0.1.0"

__all__ = ["affine", "kernels", "observers", "target", "Target", "Cpu", "CPUS",
           "quantize_static", "quantize_dynamic", "from_torch_quantized", "from_torch_pt2e", "compare", "load", "QuantizedModel",
           "quantize_precision", "quantize_mixed",
           "report_torch_quantized", "QType", "qtype", "choose_qparams", "quantize", "dequantize",
           "fake_quantize", "quantize_bias", "pack_int4", "unpack_int4", "to_float16", "Graph", "Node", "OPS",
           "register_op", "run", "infer_shapes", "from_torch", "from_onnx", "from_onnx_quantized", "to_onnx",
           "to_tflite", "from_tflite",
           "Observer", "MinMaxObserver",
           "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver",
           "PercentileObserver", "MSEObserver", "EntropyObserver", "HistogramObserver", "RunningHistogram",
           "CalibrationWarning"]

#: modules loaded on first use (they import torch, onnx or matplotlib), by the name ``minquant.<name>`` gives
_LAZY_MODULES = {"prune": "prune", "distill": "distill", "quantized": "quantized", "interop": "interop",
                 "frameworks": "frameworks", "lesson": "lesson", "zoo": "lesson.zoo", "datasets": "lesson.datasets",
                 "training": "lesson.training", "render": "lesson.render", "report": "lesson.report",
                 "doctor": "lesson.doctor", "golden": "lesson.golden", "qat": "qat"}
#: core modules, also loaded on first use: ``import minquant`` itself loads nothing heavy (0.4 s of numpy
#: and numba otherwise), so the ``minquant`` command can take Ctrl-C from its first instant
_LAZY_MODULES.update({m: m for m in ("affine", "kernels", "observers", "target", "executor", "graph")})
#: functions and classes loaded on first use, by the module that defines them
_LAZY_NAMES = {**{n: "target" for n in ("CPUS", "Cpu", "Target")},
               **{n: "affine" for n in ("QType", "choose_qparams", "dequantize", "fake_quantize", "pack_int4",
                                        "qtype", "quantize", "quantize_bias", "to_float16", "unpack_int4")},
               **{n: "executor" for n in ("infer_shapes", "run")},
               **{n: "observers" for n in ("EntropyObserver", "HistogramObserver", "MinMaxObserver",
                                           "MovingAverageMinMaxObserver", "MovingAveragePerChannelMinMaxObserver",
                                           "MSEObserver", "Observer", "PercentileObserver",
                                           "PerChannelMinMaxObserver", "RunningHistogram", "CalibrationWarning")},
               **{n: "graph" for n in ("OPS", "Graph", "Node", "register_op")},"quantize_static": "quantized", "quantize_dynamic": "quantized", "compare": "quantized",
               "quantize_precision": "quantized", "quantize_mixed": "quantized",
               "load": "quantized", "QuantizedModel": "quantized", "report_torch_quantized": "quantized",
               "from_torch": "interop.torch", "from_torch_quantized": "interop.torch", "from_torch_pt2e": "interop.torch",
               "from_onnx": "interop.onnx", "from_onnx_quantized": "interop.onnx",
               "to_onnx": "interop.onnx", "to_tflite": "interop.litert", "from_tflite": "interop.litert"}


def __getattr__(name):
    """Every public name loads on first use (and is then cached here), so ``import minquant`` needs no
    torch and costs almost nothing."""
    import importlib
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f".{_LAZY_MODULES[name]}", __name__)
    else:
        raise AttributeError(f"module 'minquant' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
