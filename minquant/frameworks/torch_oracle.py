"""PyTorch as the oracle minquant is checked against (``target="fbgemm"`` / ``"x86"`` / ``"qnnpack"``):
everything torch, in one module.

    with engine("fbgemm"):                                  # torch.backends.quantized.engine, restored after
        y_q = qconv2d(x_q, xs, xz, w_q, ws, wz, bias, ys, yz, padding=1)
    qmodel = torch_eager_ptq(model, "x86", calib)           # eager PTQ (fuse first)
    fp32 = export_onnx(model, (1, 3, 224, 224), "model.onnx")

* **one op on integer inputs** — :func:`engine`, :func:`to_qtensor`, :func:`weight_qtensor`, :func:`quantize`,
  :func:`qlinear`, :func:`qconv2d`, :func:`dynamic_linear`, :func:`qadd`, :func:`qmul`, :func:`qhardswish`,
  :func:`qadaptive_avg_pool2d`: minquant-style arguments (NumPy codes + scales + zero points) wrapped into
  torch quantized tensors, the eager-mode operator called under the current engine, NumPy codes returned.
* **whole-model recipes, as the Day-2 lesson writes them** — :func:`seed_quantize_dynamic` (the seed's
  ``quantize_dynamic(model, {nn.Linear, nn.Conv2d}, dtype=torch.qint8)``: its Conv2d layers stay float);
  :func:`torch_eager_ptq` (``get_default_qconfig`` → ``prepare`` → calibrate → ``convert``) and its two
  lesson models :func:`torch_static_tinycnn`, :func:`torch_static_mobilenet_v2`; :func:`torch_logits`,
  :func:`torch_quantized_codes` (the codes of every quantized submodule, for a cross-check with
  ``QuantizedModel.run(..., intermediates=True, raw=True)``), :func:`state_dict_file_bytes` (the seed's size
  measurement).
* **torch → ONNX** — :func:`export_onnx`, the one ``torch.onnx.export`` wrapper (legacy TorchScript exporter,
  opset 17) of the demo, the tests, the benchmarks and ``minquant``'s TorchScript loader; ONNX Runtime's side
  is :mod:`minquant.frameworks.ort_oracle`.

Pinned: torch 2.14.1 (requirements.txt). torch warns that quantized tensors and ``torch.ao.quantization`` are
deprecated; these helpers silence exactly that, so that a run with warnings-as-errors still compares
arithmetic.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from . import quiet

__all__ = ["engine", "to_qtensor", "weight_qtensor", "quantize", "qlinear", "qconv2d", "dynamic_linear", "qadd",
           "qmul", "qhardswish", "qadaptive_avg_pool2d", "seed_quantize_dynamic", "torch_eager_ptq",
           "torch_static_tinycnn", "torch_static_mobilenet_v2", "torch_logits", "torch_quantized_codes",
           "state_dict_file_bytes", "export_onnx", "quiet"]


# ------------------------------------------------------------------------------------------------------
# one op on integer inputs
# ------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def engine(name: str):
    """Run under torch.backends.quantized.engine = name ('fbgemm', 'x86', 'qnnpack'), then restore."""
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecated.*")
            yield
    finally:
        torch.backends.quantized.engine = old


def to_qtensor(codes, scale, zero_point):
    """uint8 codes → torch.quint8 per-tensor tensor with exactly these codes."""
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(np.ascontiguousarray(codes)),
                                                   float(scale), int(zero_point))


def weight_qtensor(w_q, w_scale, w_zp):
    """int8 codes → torch.qint8 tensor, per tensor (scalar scale) or per channel along axis 0."""
    w = torch.from_numpy(np.ascontiguousarray(w_q))
    if np.ndim(w_scale) == 0:
        return torch._make_per_tensor_quantized_tensor(w, float(w_scale), int(w_zp))
    n = w_q.shape[0]
    scales = torch.from_numpy(np.asarray(w_scale, np.float64).reshape(n))
    zps = torch.from_numpy(np.broadcast_to(np.asarray(w_zp, np.int64), (n,)).copy())
    return torch._make_per_channel_quantized_tensor(w, scales, zps, 0)


def quantize(x, scale, zero_point, dtype="uint8", axis=None):
    """torch.quantize_per_tensor / quantize_per_channel → codes."""
    tdt = {"uint8": torch.quint8, "int8": torch.qint8, "int32": torch.qint32}[dtype]
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        if axis is None:
            q = torch.quantize_per_tensor(xt, float(scale), int(zero_point), tdt)
        else:
            q = torch.quantize_per_channel(xt, torch.from_numpy(np.asarray(scale, np.float64)),
                                           torch.from_numpy(np.asarray(zero_point, np.int64)), axis, tdt)
    return q.int_repr().numpy()


def _bias(bias):
    return None if bias is None else torch.from_numpy(np.asarray(bias, np.float32))


def qlinear(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, y_scale, y_zp, *, relu=False):
    """torch.ops.quantized.linear(_relu) under the current engine (use inside ``engine(...)``)."""
    packed = torch.ops.quantized.linear_prepack(weight_qtensor(w_q, w_scale, w_zp), _bias(bias))
    op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
    return op(to_qtensor(x_q, x_scale, x_zp), packed, float(y_scale), int(y_zp)).int_repr().numpy()


def qconv2d(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, y_scale, y_zp, *, stride=1, padding=0,
            dilation=1, groups=1, relu=False):
    """torch.ops.quantized.conv2d(_relu) under the current engine."""
    two = lambda v: [int(v), int(v)] if np.isscalar(v) else [int(t) for t in v]  # noqa: E731
    packed = torch.ops.quantized.conv2d_prepack(weight_qtensor(w_q, w_scale, w_zp), _bias(bias), two(stride),
                                                two(padding), two(dilation), int(groups))
    op = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
    return op(to_qtensor(x_q, x_scale, x_zp), packed, float(y_scale), int(y_zp)).int_repr().numpy()


def dynamic_linear(x, w_q, w_scale, w_zp, bias, *, reduce_range=True):
    """torch.ops.quantized.linear_dynamic: float x, int8 weights, float output."""
    packed = torch.ops.quantized.linear_prepack(weight_qtensor(w_q, w_scale, w_zp), _bias(bias))
    return torch.ops.quantized.linear_dynamic(torch.from_numpy(np.ascontiguousarray(x, np.float32)), packed,
                                              bool(reduce_range)).numpy()


def _binary(name, a_q, a_scale, a_zp, b_q, b_scale, b_zp, y_scale, y_zp, relu):
    op = getattr(torch.ops.quantized, name + ("_relu" if relu else ""))
    return op(to_qtensor(a_q, a_scale, a_zp), to_qtensor(b_q, b_scale, b_zp), float(y_scale),
              int(y_zp)).int_repr().numpy()


def qadd(a_q, a_scale, a_zp, b_q, b_scale, b_zp, y_scale, y_zp, *, relu=False):
    """torch.ops.quantized.add(_relu) of two uint8 tensors under the current engine."""
    return _binary("add", a_q, a_scale, a_zp, b_q, b_scale, b_zp, y_scale, y_zp, relu)


def qmul(a_q, a_scale, a_zp, b_q, b_scale, b_zp, y_scale, y_zp, *, relu=False):
    """torch.ops.quantized.mul(_relu) of two uint8 tensors under the current engine."""
    return _binary("mul", a_q, a_scale, a_zp, b_q, b_scale, b_zp, y_scale, y_zp, relu)


def qhardswish(x_q, x_scale, x_zp, y_scale, y_zp):
    """torch.ops.quantized.hardswish under the current engine."""
    return torch.ops.quantized.hardswish(to_qtensor(x_q, x_scale, x_zp), float(y_scale),
                                         int(y_zp)).int_repr().numpy()


def qadaptive_avg_pool2d(x_q, x_scale, x_zp, output_size=1):
    """torch.nn.functional.adaptive_avg_pool2d on a quantized NCHW tensor (output qparams = input's)."""
    return torch.nn.functional.adaptive_avg_pool2d(to_qtensor(x_q, x_scale, x_zp),
                                                   output_size).int_repr().numpy()


# ------------------------------------------------------------------------------------------------------
# whole-model recipes
# ------------------------------------------------------------------------------------------------------
def seed_quantize_dynamic(model):
    """The seed's line, verbatim: returns torch's dynamically quantized copy of ``model``."""
    import torch.nn as nn

    with quiet():
        return torch.quantization.quantize_dynamic(model, {nn.Linear, nn.Conv2d}, dtype=torch.qint8)


def torch_eager_ptq(model, engine: str, calib, *, batch: int | None = None):
    """torch's eager-mode post-training static quantization of ``model``, in place; returns it converted.

    ``model.qconfig = get_default_qconfig(engine)`` → ``prepare`` → forward ``calib`` (a NumPy array or a
    tensor; in one pass, or in slices of ``batch`` — torch's histogram observers merge batches, so the two
    may give different qparams) under ``torch.no_grad()`` → ``convert``. Fuse modules *before* calling
    (``model.fuse_model()`` / ``fuse_modules``); select the engine too (``torch.backends.quantized.engine =
    engine``): this function does not change it. torch's DeprecationWarnings about ``torch.ao.quantization``
    are silenced here (this *is* the eager API being cross-checked)."""
    import torch.ao.quantization as tq

    data = torch.from_numpy(calib) if isinstance(calib, np.ndarray) else calib
    if len(data) == 0:
        raise ValueError("torch_eager_ptq: the calibration data is empty")
    if batch is not None and batch < 1:
        raise ValueError(f"torch_eager_ptq: batch must be ≥ 1, got {batch}")
    step = len(data) if batch is None else batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model.qconfig = tq.get_default_qconfig(engine)
        tq.prepare(model, inplace=True)
        with torch.no_grad():
            for i in range(0, len(data), step):
                model(data[i:i + step])
        return tq.convert(model, inplace=True)


def torch_static_tinycnn(model, calib, engine: str = "x86", batch: int = 32):
    """Eager-mode static int8 of the seed's TinyCNN (exercise 3): ``QuantWrapper`` (QuantStub → model →
    DeQuantStub), fuse (Conv2d, ReLU) pairs, then :func:`torch_eager_ptq` with the default ``engine`` qconfig
    on ``calib``. Leaves ``torch.backends.quantized.engine = engine`` (the model runs under it)."""
    import torch.ao.quantization as tq

    from ..data.zoo import TinyCNN

    with quiet():
        torch.backends.quantized.engine = engine
        m = tq.QuantWrapper(TinyCNN())
        m.module.load_state_dict(model.state_dict())
        m.eval()
        tq.fuse_modules(m.module, [["features.0", "features.1"], ["features.2", "features.3"]], inplace=True)
        return torch_eager_ptq(m, engine, np.ascontiguousarray(calib), batch=batch)


def torch_static_mobilenet_v2(calib, engine: str = "x86", batch: int = 25):
    """Eager-mode static int8 of torchvision's quantizable MobileNetV2 (ImageNet weights; QuantStub /
    DeQuantStub built in, ReLU6 → ReLU, ``fuse_model()``), then :func:`torch_eager_ptq` with the default
    ``engine`` qconfig on ``calib`` — torchvision's own recipe. Leaves the engine set, as above."""
    from ..data.zoo import mobilenet_v2_imagenet

    with quiet():
        torch.backends.quantized.engine = engine
        m = mobilenet_v2_imagenet(quantizable=True)
        m.fuse_model()
        return torch_eager_ptq(m, engine, np.ascontiguousarray(calib), batch=batch)


def torch_logits(model, x, batch: int = 50) -> np.ndarray:
    """``model(x)`` under ``torch.no_grad()``, batched, as float32 NumPy."""
    with torch.no_grad(), quiet():
        return np.concatenate([model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))).numpy()
                               for i in range(0, len(x), batch)])


def torch_quantized_codes(qmodel, x: np.ndarray):
    """One torch forward pass of ``qmodel`` on ``x``: ``(output as NumPy, {module name: uint8 codes})`` —
    the codes of every quantized tensor a submodule returns (forward hooks; FloatFunctional outputs are
    named by their module, e.g. ``…skip_mul``), to compare with ``QuantizedModel.run(x, intermediates=True,
    raw=True)``."""
    seen = {}

    def hook(name):
        def f(mod, inp, out):
            if isinstance(out, torch.Tensor) and out.is_quantized:
                seen[name] = out.int_repr().numpy().copy()
        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in qmodel.named_modules() if n]
    try:
        with torch.no_grad():
            out = qmodel(torch.from_numpy(x)).numpy()
    finally:
        for h in handles:
            h.remove()
    return out, seen


def state_dict_file_bytes(model) -> int:
    """Bytes of ``torch.save(model.state_dict(), file)`` — how the seed measures model size."""
    with tempfile.TemporaryDirectory() as d, quiet():
        path = os.path.join(d, "m.pt")
        torch.save(model.state_dict(), path)
        return os.path.getsize(path)


# ------------------------------------------------------------------------------------------------------
# torch → ONNX
# ------------------------------------------------------------------------------------------------------
def export_onnx(model, input_shape, path, *, input_name: str = "x", output_name: str = "y",
                dynamic_batch: bool = True) -> Path:
    """``torch.onnx.export`` of ``model`` (an ``nn.Module`` or a TorchScript module) traced on zeros of
    ``input_shape``: the legacy TorchScript exporter (``dynamo=False``; the dynamo exporter needs onnxscript),
    opset 17, input ``input_name`` / output ``output_name``, the batch dimension dynamic unless
    ``dynamic_batch=False``. The exporter's warnings and printout are silenced (the legacy exporter is chosen
    on purpose). Returns ``Path(path)``."""
    path = Path(path)
    axes = {input_name: {0: "n"}, output_name: {0: "n"}} if dynamic_batch else None
    with quiet(), contextlib.redirect_stdout(None):
        torch.onnx.export(model, (torch.zeros(input_shape),), str(path), input_names=[input_name],
                          output_names=[output_name], dynamic_axes=axes, opset_version=17, dynamo=False)
    return path
