"""ONNX Runtime as the reference minquant is checked against (tests, benchmarks, the ``onnxruntime`` emulation).

    run = ort_runner("model.onnx")                       # one thread, CPU provider, default optimizations
    y = run(x)                                           # the first output for the first input
    fp32 = export_torch(model, (1, 3, 224, 224), "model.onnx")
    int8 = ort_quantize(fp32, calib, "model_qdq.onnx", "qdq")   # onnxruntime.quantization

* :func:`ort_session` / :func:`ort_runner` — an ``InferenceSession`` with one intra-op and one inter-op
  thread (ORT's results must not depend on how the work is split), the CPU execution provider, ORT's default
  graph optimizations and warnings silenced; ``optimized=PATH`` also writes the graph ORT actually runs
  (``SessionOptions.optimized_model_filepath``: what the QDQ pairs were fused into).
* :func:`export_torch` — ``torch.onnx.export`` with the legacy TorchScript exporter (``dynamo=False``; the
  dynamo exporter needs onnxscript), opset 17, input ``x`` / output ``y`` with a dynamic batch dimension.
* :func:`ort_quantize` — ONNX Runtime's own quantizers: ``quantize_static`` (QDQ or QOperator, uint8
  activations, int8 per-channel weights, one calibration image per step) or ``quantize_dynamic`` (int8
  weights).

This module imports onnxruntime (and torch, for :func:`export_torch`) inside its functions; nothing in
minquant's core imports it.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["ort_session", "ort_runner", "export_torch", "ort_quantize", "ORT_FORMATS"]

#: what :func:`ort_quantize` writes
ORT_FORMATS = ("qdq", "qoperator", "dynamic")


def ort_session(model, optimized=None):
    """``onnxruntime.InferenceSession`` for ``model`` (a path or an ``onnx.ModelProto``): CPU provider, one
    intra-op / one inter-op thread, default graph optimizations, log severity 3 (errors only).
    ``optimized``: also save the optimized graph there."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def ort_runner(model, optimized=None):
    """``x ↦`` the first output of :func:`ort_session` ``(model, optimized)`` for ``x`` fed to its first
    input."""
    sess = ort_session(model, optimized)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def export_torch(model, input_shape, path) -> Path:
    """``torch.onnx.export`` of ``model`` traced on zeros of ``input_shape`` (legacy exporter, opset 17,
    input ``x`` / output ``y``, batch dimension dynamic). Returns ``Path(path)``. The legacy exporter's
    DeprecationWarning is silenced: it is chosen on purpose."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(input_shape),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    return Path(path)


def ort_quantize(fp32, calib, path, format: str = "qdq", *, method: str = "MinMax",
                 pre_process: bool = False) -> Path:
    """ONNX Runtime's quantization of the float file ``fp32`` (input named ``x``), written to ``path``.

    ``format`` "qdq" / "qoperator": ``quantize_static`` with ``calib`` fed one image at a time, ``method``
    calibration (a ``CalibrationMethod`` name: "MinMax", "Entropy", "Percentile"), uint8 activations and
    per-channel int8 weights, in that format. ``pre_process=True`` first runs ORT's recommended
    ``quant_pre_process`` (shape inference + graph cleanup; skipped if it fails). "dynamic":
    ``quantize_dynamic`` with int8 weights (``calib`` unused). Returns ``Path(path)``."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    if format not in ORT_FORMATS:
        raise ValueError(f"ort_quantize: format must be one of {ORT_FORMATS}, got {format!r}")
    if format == "dynamic":
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
        return Path(path)
    if not hasattr(CalibrationMethod, method):
        raise ValueError(f"ort_quantize: unknown calibration method {method!r}; ORT has "
                         f"{[m.name for m in CalibrationMethod]}")
    if calib is None or len(calib) == 0:
        raise ValueError("ort_quantize: static quantization needs calibration data, got none")
    src = Path(fp32)
    if pre_process:
        pre = Path(path).with_name(Path(path).stem + "_pre.onnx")
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process
            quant_pre_process(str(fp32), str(pre))
            src = pre
        except Exception:
            pass

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(path), Reader(), per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, method),
                    quant_format=QuantFormat.QDQ if format == "qdq" else QuantFormat.QOperator)
    return Path(path)
