"""What PyTorch and ONNX Runtime do, as the Day-2 lesson writes it: the demo's comparison rows.

Each function is the framework's own recipe, written out plainly so that it runs from any directory once
minquant is installed (the test oracles in the repository's top-level ``reference/`` package call the
frameworks' *single operators* on integer inputs; these are the *whole-model* recipes):

* :func:`seed_quantize_dynamic` — ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear, nn.Conv2d},
  dtype=torch.qint8)``, exactly the seed's line (exercise 2). Its Conv2d layers stay float.
* :func:`torch_static_tinycnn`, :func:`torch_static_mobilenet_v2` — eager-mode post-training static
  quantization (exercise 3): QuantStub/DeQuantStub (``QuantWrapper`` / torchvision's quantizable model),
  fuse Conv+ReLU, ``prepare`` (observers), calibrate, ``convert``.
* :func:`export_onnx` — ``torch.onnx.export`` of a float model (exercise 4);
  :func:`ort_quantize_static` — ONNX Runtime's own int8 converter (QDQ, per-channel);
  :func:`ort_runner` — an ``ort.InferenceSession`` on one thread (exercise 5).
* :func:`state_dict_file_bytes` — the seed's size measurement: bytes of ``torch.save(state_dict)``.

These import torch / onnxruntime inside the functions; they are not part of the numpy-only core. The
deprecation warnings of ``torch.ao.quantization`` are silenced here (the recipes are what the lesson shows).
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

__all__ = ["seed_quantize_dynamic", "torch_static_tinycnn", "torch_static_mobilenet_v2", "export_onnx",
           "ort_quantize_static", "ort_runner", "onnx_initializer_bytes", "state_dict_file_bytes",
           "torch_logits", "quiet"]


@contextlib.contextmanager
def quiet():
    """Silence the frameworks' deprecation / export warnings (and ONNX Runtime's quantizer's advice, logged
    on the root logger) inside the block."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def seed_quantize_dynamic(model):
    """The seed's line, verbatim: returns torch's dynamically quantized copy of ``model``."""
    import torch
    import torch.nn as nn

    with quiet():
        return torch.quantization.quantize_dynamic(model, {nn.Linear, nn.Conv2d}, dtype=torch.qint8)


def _calibrate(m, calib, batch):
    import torch
    with torch.no_grad():
        for i in range(0, len(calib), batch):
            m(torch.from_numpy(np.ascontiguousarray(calib[i:i + batch])))


def torch_static_tinycnn(model, calib, engine: str = "x86", batch: int = 32):
    """Eager-mode static int8 of the seed's TinyCNN: ``QuantWrapper`` (QuantStub → model → DeQuantStub),
    fuse (Conv2d, ReLU) pairs, default ``engine`` qconfig, calibrate on ``calib``, convert."""
    import torch
    import torch.ao.quantization as tq

    from ..data.zoo import TinyCNN

    with quiet():
        torch.backends.quantized.engine = engine
        m = tq.QuantWrapper(TinyCNN())
        m.module.load_state_dict(model.state_dict())
        m.eval()
        m.qconfig = tq.get_default_qconfig(engine)
        tq.fuse_modules(m.module, [["features.0", "features.1"], ["features.2", "features.3"]], inplace=True)
        tq.prepare(m, inplace=True)
        _calibrate(m, calib, batch)
        return tq.convert(m, inplace=True)


def torch_static_mobilenet_v2(calib, engine: str = "x86", batch: int = 25):
    """Eager-mode static int8 of torchvision's quantizable MobileNetV2 (ImageNet weights; QuantStub /
    DeQuantStub built in, ReLU6 → ReLU, ``fuse_model()``), default ``engine`` qconfig, calibrated on
    ``calib`` — torchvision's own recipe."""
    import torch
    import torch.ao.quantization as tq

    from ..data.zoo import mobilenet_v2_imagenet

    with quiet():
        torch.backends.quantized.engine = engine
        m = mobilenet_v2_imagenet(quantizable=True)
        m.fuse_model()
        m.qconfig = tq.get_default_qconfig(engine)
        tq.prepare(m, inplace=True)
        _calibrate(m, calib, batch)
        return tq.convert(m, inplace=True)


def torch_logits(model, x, batch: int = 50) -> np.ndarray:
    """``model(x)`` under ``torch.no_grad()``, batched, as float32 NumPy."""
    import torch
    with torch.no_grad(), quiet():
        return np.concatenate([model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))).numpy()
                               for i in range(0, len(x), batch)])


def state_dict_file_bytes(model) -> int:
    """Bytes of ``torch.save(model.state_dict(), file)`` — how the seed measures model size."""
    import torch
    with tempfile.TemporaryDirectory() as d, quiet():
        path = os.path.join(d, "m.pt")
        torch.save(model.state_dict(), path)
        return os.path.getsize(path)


def export_onnx(model, input_shape, path) -> Path:
    """``torch.onnx.export`` (TorchScript exporter, opset 17) of a float model; input ``x``, output ``y``,
    dynamic batch. Returns the path."""
    import torch
    path = Path(path)
    with quiet(), contextlib.redirect_stdout(None):
        torch.onnx.export(model, (torch.zeros(input_shape),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    return path


def ort_quantize_static(fp32_path, out_path, calib, method: str = "MinMax") -> Path:
    """ONNX Runtime's recipe: ``quant_pre_process`` (shape inference, graph optimisation), then
    ``quantize_static`` in QDQ format, QUInt8 activations, QInt8 per-channel weights, ``method``
    calibration ('MinMax', 'Percentile', 'Entropy') on ``calib`` (one sample per call)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    src = Path(out_path).with_name(Path(out_path).stem + "_pre.onnx")
    with quiet():
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process
            quant_pre_process(str(fp32_path), str(src))
        except Exception:   # pre-processing is advice, not a requirement
            src = Path(fp32_path)
        quantize_static(str(src), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method))
    return Path(out_path)


def ort_runner(path):
    """``ort.InferenceSession`` on the CPU provider with one intra-op and one inter-op thread; returns
    ``run(x) -> first output`` (the input name is read from the model)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def onnx_initializer_bytes(path) -> int:
    """Bytes of all initializers (weights, scales, zero points) of an ONNX file, as stored."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(path))
    return int(sum(numpy_helper.to_array(t).nbytes for t in m.graph.initializer))
