"""Import a model quantized by PyTorch (eager mode) and run torch's own weights and qparams on minquant.

    torch.backends.quantized.engine = "x86"               # or "fbgemm", "qnnpack"
    model.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    prepared = torch.ao.quantization.prepare(model)       # (after fusing modules)
    ...calibrate prepared...
    qmodel = torch.ao.quantization.convert(prepared)
    qm = minquant.quantized.from_torch_quantized(qmodel, (1, 3, 224, 224))
    assert np.array_equal(qm(x), qmodel(torch.from_numpy(x)).numpy())     # bit for bit

This is the cross-checking use case: the integer weights, the weight scales / zero points, every
activation's (scale, zero point) and the float biases are read from the converted torch modules, and
minquant's kernels with the matching emulation (engine x86/fbgemm → ``emulate="fbgemm"``, qnnpack →
``"qnnpack"``) recompute what torch computes. Where the two differ, one of them has a bug or an
undocumented rounding — and :func:`minquant.quantized.compare` shows per layer where quantization hurts.

How: the converted model is traced with ``torch.fx`` (quantized modules are leaves; functional calls such
as ``torch.ops.quantized.add`` appear with their output qparams as constants) and run once on zeros of
``input_shape`` to record, for every value, whether it is a quantized tensor, its qparams and whether it
is channels-last in memory. Two torch kernels round differently by memory layout — average pooling and
the fbgemm residual add (its SIMD blocks and scalar tail follow memory order) — so that layout is stored
in the node. Supported:

* modules — ``Quantize`` (QuantStub after convert), ``DeQuantize``, quantized ``Conv2d`` / ``ConvReLU2d``
  / ``Linear`` / ``LinearReLU`` / ``ReLU6``, dynamic quantized ``Linear`` (``quantize_dynamic``), and on
  quantized tensors ``ReLU``, ``ReLU6``, ``Hardtanh(0, 6)``, ``MaxPool2d``, ``AvgPool2d``,
  ``AdaptiveAvgPool2d``, ``Flatten``, ``Identity``, ``Dropout``; float modules (regions between
  DeQuantStub and QuantStub, layers ``quantize_dynamic`` left float) go to :func:`minquant.from_torch`'s
  handlers;
* functions — ``torch.ops.quantized.add`` / ``add_relu`` / ``cat`` (what ``FloatFunctional`` becomes),
  ``relu``, ``relu6``/``hardtanh``, ``flatten``, ``view``/``reshape``, ``adaptive_avg_pool2d``,
  ``avg_pool2d``, ``max_pool2d``, ``dropout`` on quantized tensors; float functions as ``from_torch``.

Anything else raises ValueError naming the op and where it sits. Bit-exactness assumes one torch thread
(``torch.set_num_threads(1)``): with several, torch splits big element-wise adds into chunks that each get
their own scalar tail. The model must run under the engine it was converted with.

This module imports torch.
"""
from __future__ import annotations

import numpy as np

from ..affine import quantize
from ..graph import FlattenAttrs, Graph, MaxPool2dAttrs, ReshapeAttrs
from ..torch_import import Importer, _arg
from . import ops
from .model import QuantizedModel

__all__ = ["from_torch_quantized", "engine_emulation"]

_ENGINES = {"x86": "fbgemm", "fbgemm": "fbgemm", "qnnpack": "qnnpack"}


def engine_emulation(engine: str) -> str:
    """minquant's ``emulate`` for a torch quantized engine ('x86' and 'fbgemm' → 'fbgemm', 'qnnpack')."""
    if engine not in _ENGINES:
        raise ValueError(f"torch quantized engine {engine!r} is not emulated; supported: {sorted(_ENGINES)}")
    return _ENGINES[engine]


def _f32_if_exact(a: np.ndarray) -> np.ndarray:
    """float64 scales from torch → float32 when no information is lost (they come from float32 math)."""
    a = np.asarray(a, np.float64)
    f = a.astype(np.float32)
    return f if np.array_equal(f.astype(np.float64), a) else a


class _QImporter(Importer):
    """:class:`minquant.torch_import.Importer` plus quantized handlers; ``info[fx node]`` holds what the
    probe run saw: quantized?, (scale, zero point), channels-last?"""

    def __init__(self, gm, batch, name, float_modules, float_functions):
        super().__init__(gm, batch, name, float_modules)
        self.float_functions = float_functions
        self.info: dict = {}
        self.qp: dict[str, tuple[float, int]] = {}     # IR value → qparams (quantized values only)

    # -- helpers --------------------------------------------------------------------------------------
    def is_q(self, arg) -> bool:
        return bool(self.info.get(arg, {}).get("quantized"))

    def qparams_of(self, arg, fxn):
        v = self.value(arg, fxn)
        if v not in self.qp:
            self.fail(fxn, f"operand {arg} is not a quantized tensor")
        return self.qp[v]

    def emit_q(self, fxn, op, inputs, attrs=None, params=None, qparams=None):
        """Emit a node whose output is uint8 codes with ``qparams`` (default: the probe's)."""
        node = self.emit(fxn, op, inputs, attrs, params)
        if qparams is None:
            inf = self.info.get(fxn, {})
            if not inf.get("quantized"):
                self.fail(fxn, "expected a quantized result")
            qparams = (inf["scale"], inf["zero_point"])
        self.qp[node.name] = (float(qparams[0]), int(qparams[1]))
        return node

    def weight(self, fxn, w):
        """(int8 codes, scales, zero points as int8, per_channel) of a torch qint8 weight."""
        import torch

        if w.dtype != torch.qint8:
            self.fail(fxn, f"weights are {w.dtype}; only torch.qint8 weights are supported")
        scheme = w.qscheme()
        codes = w.int_repr().numpy().copy()
        if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            return codes, _f32_if_exact([w.q_scale()]), np.array([w.q_zero_point()], np.int8), False
        if scheme in (torch.per_channel_affine, torch.per_channel_symmetric):
            if w.q_per_channel_axis() != 0:
                self.fail(fxn, f"per-channel weights along axis {w.q_per_channel_axis()}; only axis 0 is supported")
            return (codes, _f32_if_exact(w.q_per_channel_scales().numpy()),
                    w.q_per_channel_zero_points().numpy().astype(np.int8), True)
        self.fail(fxn, f"weight quantization scheme {scheme} is not supported")

    def bias(self, b):
        return None if b is None else b.detach().numpy().astype(np.float32, copy=True)

    def channels_last(self, arg) -> bool:
        return bool(self.info.get(arg, {}).get("channels_last"))

    # -- the walk (as Importer.build, with the quantized tables first) ----------------------------------
    def build(self) -> Graph:
        outputs = []
        for fxn in self.gm.graph.nodes:
            if fxn.op == "placeholder":
                self.add_input(fxn)
            elif fxn.op == "call_module":
                mod = self.gm.get_submodule(fxn.target)
                arg0 = fxn.args[0] if fxn.args else None
                handler = _Q_MODULES.get(type(mod))
                if handler is None and self.is_q(arg0):
                    handler = _Q_ON_QUANTIZED.get(type(mod))
                    if handler is None:
                        self.fail(fxn, f"unsupported module {type(mod).__module__}.{type(mod).__name__} on a "
                                       "quantized tensor")
                if handler is None:
                    handler = self.module_handlers.get(type(mod))
                if handler is None:
                    self.fail(fxn, f"unsupported module type {type(mod).__module__}.{type(mod).__name__}")
                handler(self, fxn, mod)
            elif fxn.op in ("call_function", "call_method"):
                if self._is_shape_value(fxn):
                    self.shape_values.add(fxn)
                    continue
                key = fxn.target if fxn.op == "call_function" else ("method", fxn.target)
                tensors = [a for a in list(fxn.args) + list(fxn.kwargs.values()) if a in self.info]
                for a in list(fxn.args):
                    if isinstance(a, (list, tuple)):
                        tensors += [t for t in a if t in self.info]
                quantized = any(self.is_q(a) for a in tensors) or key in _Q_FUNCTIONS_ONLY
                table = _Q_FUNCTIONS if quantized else self.float_functions
                handler = table.get(key)
                if handler is None:
                    what = getattr(fxn.target, "__name__", str(fxn.target))
                    kind = "quantized" if quantized else "float"
                    self.fail(fxn, f"unsupported op on {kind} tensors: {what}")
                handler(self, fxn)
            elif fxn.op == "get_attr":
                self.fail(fxn, f"reads the tensor attribute '{fxn.target}' directly")
            elif fxn.op == "output":
                res = fxn.args[0]
                for r in (list(res) if isinstance(res, (tuple, list)) else [res]):
                    outputs.append(self.value(r, fxn))
        return Graph(self.inputs, self.nodes, outputs, self.input_shapes, name=self.name)


# ----------------------------------------------------------------------------------------------------------
# Quantized modules
# ----------------------------------------------------------------------------------------------------------

def _h_quantize(imp, fxn, m):
    import torch

    if m.dtype != torch.quint8:
        imp.fail(fxn, f"QuantStub produces {m.dtype}; minquant's activations are quint8")
    s, z = float(m.scale.reshape(-1)[0]), int(m.zero_point.reshape(-1)[0])
    imp.emit_q(fxn, "quantize", [fxn.args[0]], ops.QuantizeAttrs(s, z), qparams=(s, z))


def _h_dequantize(imp, fxn, m):
    s, z = imp.qparams_of(fxn.args[0], fxn)
    imp.emit(fxn, "dequantize", [fxn.args[0]], ops.QuantizeAttrs(s, z))


def _relu_clamp(act, ys, yz, quantize_rule="torch"):
    if act == "relu":
        return (yz, 255)
    if act == "relu6":
        return (yz, int(quantize(np.float32(6.0), ys, yz, "uint8", emulate=quantize_rule)))
    return (0, 255)


def _layer_params(imp, fxn, m):
    """Input/output qparams, weight codes/scales/zero points and bias of a torch quantized conv or linear."""
    xs, xz = imp.qparams_of(fxn.args[0], fxn)
    w_q, w_s, w_z, per_channel = imp.weight(fxn, m.weight())
    params = {"weight": w_q, "w_scale": w_s, "w_zp": w_z}
    b = imp.bias(m.bias())
    if b is not None:
        params["bias"] = b
    return xs, xz, float(m.scale), int(m.zero_point), params, per_channel


def _h_conv(act):
    def handler(imp, fxn, m):
        if getattr(m, "padding_mode", "zeros") != "zeros":
            imp.fail(fxn, f"padding_mode={m.padding_mode!r}; only zero padding is supported")
        xs, xz, ys, yz, params, per_channel = _layer_params(imp, fxn, m)
        attrs = ops.QConv2dAttrs(m.stride, m.padding, m.dilation, m.groups, xs, xz, ys, yz,
                                 _relu_clamp(act, ys, yz), act, per_channel)
        imp.emit_q(fxn, "qconv2d", [fxn.args[0]], attrs, params, (ys, yz))
    return handler


def _h_linear(act):
    def handler(imp, fxn, m):
        xs, xz, ys, yz, params, per_channel = _layer_params(imp, fxn, m)
        attrs = ops.QLinearAttrs(xs, xz, ys, yz, _relu_clamp(act, ys, yz), act, per_channel)
        imp.emit_q(fxn, "qlinear", [fxn.args[0]], attrs, params, (ys, yz))
    return handler


def _h_dynamic_linear(imp, fxn, m):
    import torch

    if m._packed_params.dtype != torch.qint8:
        imp.fail(fxn, f"dynamic Linear with {m._packed_params.dtype} weights; only qint8 is supported")
    w, b = m._packed_params._weight_bias()
    w_q, w_s, w_z, per_channel = imp.weight(fxn, w)
    params = {"weight": w_q, "w_scale": w_s, "w_zp": w_z}
    if b is not None:
        params["bias"] = imp.bias(b)
    reduce_range = not (m.version is None or m.version < 4)
    imp.emit(fxn, "dynamic_linear", [fxn.args[0]], ops.DynamicLinearAttrs(per_channel, reduce_range, False), params)


def _h_qrelu6_module(imp, fxn, m):
    s, z = imp.qparams_of(fxn.args[0], fxn)
    imp.emit_q(fxn, "qclamp", [fxn.args[0]], ops.QClampAttrs(*_relu_clamp("relu6", s, z), "relu6"), qparams=(s, z))


def _on_q_activation(act):
    def handler(imp, fxn, m=None):
        x = fxn.args[0]
        s, z = imp.qparams_of(x, fxn)
        if act == "hardtanh":
            if m is not None:
                lo, hi = float(m.min_val), float(m.max_val)
            else:
                lo, hi = float(_arg(fxn, 1, "min_val", -1.0)), float(_arg(fxn, 2, "max_val", 1.0))
            if (lo, hi) != (0.0, 6.0):
                imp.fail(fxn, f"hardtanh({lo}, {hi}) is supported only as relu6")
            name = "relu6"
        else:
            name = act
        imp.emit_q(fxn, "qclamp", [x], ops.QClampAttrs(*_relu_clamp(name, s, z), name), qparams=(s, z))
        if m is not None:
            inplace = bool(getattr(m, "inplace", False))
        elif fxn.op == "call_method":
            inplace = str(fxn.target).endswith("_")
        else:
            inplace = getattr(fxn.target, "__name__", "").endswith("_") or bool(_arg(fxn, 1, "inplace", False)) \
                if act == "relu" else bool(_arg(fxn, 3 if act == "hardtanh" else 1, "inplace", False))
        if inplace:
            old = imp.value_of[x]
            for k, v in list(imp.value_of.items()):
                if v == old:
                    imp.value_of[k] = imp.value_of[fxn]
    return handler


def _pass_q(imp, fxn, op, attrs):
    s, z = imp.qparams_of(fxn.args[0], fxn)
    imp.emit_q(fxn, op, [fxn.args[0]], attrs, qparams=(s, z))


def _h_maxpool(imp, fxn, m):
    if m.return_indices:
        imp.fail(fxn, "MaxPool2d(return_indices=True) is not supported")
    _pass_q(imp, fxn, "qmax_pool2d", MaxPool2dAttrs(m.kernel_size, m.stride if m.stride is not None else m.kernel_size,
                                                    m.padding, m.dilation, m.ceil_mode))


def _h_avgpool(imp, fxn, m):
    s, z = imp.qparams_of(fxn.args[0], fxn)
    attrs = ops.QAvgPool2dAttrs(m.kernel_size, m.stride if m.stride is not None else m.kernel_size, m.padding,
                                m.ceil_mode, m.count_include_pad, m.divisor_override, s, z,
                                imp.channels_last(fxn.args[0]))
    _pass_q(imp, fxn, "qavg_pool2d", attrs)


def _h_adaptive(imp, fxn, m=None):
    s, z = imp.qparams_of(fxn.args[0], fxn)
    attrs = ops.QAdaptiveAvgPool2dAttrs(imp.out_shape(fxn)[-2:], s, z, imp.channels_last(fxn.args[0]))
    _pass_q(imp, fxn, "qadaptive_avg_pool2d", attrs)


def _emit_qflatten(imp, fxn, start, end):
    r = len(imp.out_shape(fxn.args[0]))
    s, e = int(start) % r, int(end) % r
    if s == 0:
        imp.fail(fxn, "flatten from dim 0 would merge the batch dimension")
    _pass_q(imp, fxn, "qflatten", FlattenAttrs(s, -1 if e == r - 1 else e))


def _h_flatten_module(imp, fxn, m):
    _emit_qflatten(imp, fxn, m.start_dim, m.end_dim)


def _h_alias(imp, fxn, m=None):
    imp.alias(fxn, fxn.args[0])


# ----------------------------------------------------------------------------------------------------------
# Functions on quantized tensors
# ----------------------------------------------------------------------------------------------------------

def _f_qadd(relu):
    def handler(imp, fxn):
        a, b = fxn.args[0], fxn.args[1]
        sa, za = imp.qparams_of(a, fxn)
        sb, zb = imp.qparams_of(b, fxn)
        ys, yz = float(_arg(fxn, 2, "scale")), int(_arg(fxn, 3, "zero_point"))
        cl_a, cl_b = imp.channels_last(a), imp.channels_last(b)
        if len(imp.out_shape(a)) == 4 and cl_a != cl_b:
            imp.fail(fxn, "quantized add of a channels-last and a contiguous tensor (element order undefined here)")
        if imp.out_shape(a) != imp.out_shape(b):
            imp.fail(fxn, f"quantized add of shapes {imp.out_shape(a)} and {imp.out_shape(b)}; equal shapes only")
        attrs = ops.QAddAttrs(sa, za, sb, zb, ys, yz, relu, cl_a and len(imp.out_shape(a)) == 4)
        imp.emit_q(fxn, "qadd", [a, b], attrs, qparams=(ys, yz))
    return handler


def _f_qcat(imp, fxn):
    tensors = list(_arg(fxn, 0, "qx"))
    dim = int(_arg(fxn, 1, "dim", 0)) % len(imp.out_shape(tensors[0]))
    if dim == 0:
        imp.fail(fxn, "cat along the batch dimension is not supported")
    ys, yz = float(_arg(fxn, 2, "scale")), int(_arg(fxn, 3, "zero_point"))
    qps = [imp.qparams_of(t, fxn) for t in tensors]
    attrs = ops.QCatAttrs(dim, tuple(q[0] for q in qps), tuple(q[1] for q in qps), ys, yz)
    imp.emit_q(fxn, "qcat", tensors, attrs, qparams=(ys, yz))


def _f_flatten(imp, fxn):
    _emit_qflatten(imp, fxn, _arg(fxn, 1, "start_dim", 0), _arg(fxn, 2, "end_dim", -1))


def _f_reshape(imp, fxn):
    before, after = imp.out_shape(fxn.args[0]), imp.out_shape(fxn)
    if after[0] != before[0]:
        imp.fail(fxn, f"reshape from {before} to {after} changes the batch dimension")
    _pass_q(imp, fxn, "qreshape", ReshapeAttrs(after[1:]))


def _f_maxpool(imp, fxn):
    if _arg(fxn, 6, "return_indices", False):
        imp.fail(fxn, "max_pool2d(return_indices=True) is not supported")
    k = _arg(fxn, 1, "kernel_size")
    stride = _arg(fxn, 2, "stride", None) or k
    _pass_q(imp, fxn, "qmax_pool2d", MaxPool2dAttrs(k, stride, _arg(fxn, 3, "padding", 0), _arg(fxn, 4, "dilation", 1),
                                                    _arg(fxn, 5, "ceil_mode", False)))


def _f_avgpool(imp, fxn):
    s, z = imp.qparams_of(fxn.args[0], fxn)
    k = _arg(fxn, 1, "kernel_size")
    stride = _arg(fxn, 2, "stride", None) or k
    attrs = ops.QAvgPool2dAttrs(k, stride, _arg(fxn, 3, "padding", 0), _arg(fxn, 4, "ceil_mode", False),
                                _arg(fxn, 5, "count_include_pad", True), _arg(fxn, 6, "divisor_override", None),
                                s, z, imp.channels_last(fxn.args[0]))
    _pass_q(imp, fxn, "qavg_pool2d", attrs)


def _f_dropout(imp, fxn):
    if _arg(fxn, 2, "training", True):
        imp.fail(fxn, "F.dropout(training=True) in a quantized model")
    imp.alias(fxn, fxn.args[0])


_Q_MODULES: dict = {}        # exact type → handler, whatever the input
_Q_ON_QUANTIZED: dict = {}   # float module types applied to a quantized tensor
_Q_FUNCTIONS: dict = {}
_Q_FUNCTIONS_ONLY: set = set()


def _tables():
    if _Q_MODULES:
        return
    import torch
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq
    import torch.ao.nn.quantized.dynamic as nnqd
    import torch.nn as nn
    import torch.nn.functional as F

    _Q_MODULES.update({
        nnq.Quantize: _h_quantize, nnq.DeQuantize: _h_dequantize,
        nnq.Conv2d: _h_conv(""), nniq.ConvReLU2d: _h_conv("relu"),
        nnq.Linear: _h_linear(""), nniq.LinearReLU: _h_linear("relu"),
        nnq.ReLU6: _h_qrelu6_module, nnqd.Linear: _h_dynamic_linear,
        nnq.Dropout: _h_alias,   # torch's quantized Dropout is the identity (convert leaves it in train mode)
    })
    _Q_ON_QUANTIZED.update({
        nn.ReLU: _on_q_activation("relu"), nn.ReLU6: _on_q_activation("relu6"),
        nn.Hardtanh: _on_q_activation("hardtanh"),
        nn.MaxPool2d: _h_maxpool, nn.AvgPool2d: _h_avgpool, nn.AdaptiveAvgPool2d: _h_adaptive,
        nn.Flatten: _h_flatten_module, nn.Identity: _h_alias, nn.Dropout: _h_alias, nn.Dropout2d: _h_alias,
    })
    q_on = {
        torch.ops.quantized.add: _f_qadd(False), torch.ops.quantized.add_relu: _f_qadd(True),
        torch.ops.quantized.cat: _f_qcat,
    }
    _Q_FUNCTIONS_ONLY.update(q_on)
    _Q_FUNCTIONS.update(q_on)
    relu = _on_q_activation("relu")
    _Q_FUNCTIONS.update({
        torch.relu: relu, torch.relu_: relu, F.relu: relu, F.relu6: _on_q_activation("relu6"),
        F.hardtanh: _on_q_activation("hardtanh"),
        torch.flatten: _f_flatten, torch.reshape: _f_reshape,
        F.adaptive_avg_pool2d: lambda imp, fxn: _h_adaptive(imp, fxn),
        F.max_pool2d: _f_maxpool, F.avg_pool2d: _f_avgpool, F.dropout: _f_dropout,
        ("method", "relu"): relu, ("method", "relu_"): relu, ("method", "flatten"): _f_flatten,
        ("method", "view"): _f_reshape, ("method", "reshape"): _f_reshape,
        ("method", "contiguous"): lambda imp, fxn: imp.alias(fxn, fxn.args[0]),
    })


def from_torch_quantized(qmodel, input_shape, *, engine: str | None = None, name: str | None = None) -> QuantizedModel:
    """A :class:`QuantizedModel` that runs ``qmodel`` (a torch eager-mode model after ``convert``, or after
    ``quantize_dynamic``) with torch's weights and qparams on minquant's kernels (module docstring).

    ``input_shape``: input shape with batch, e.g. ``(1, 3, 224, 224)``. ``engine``: the torch quantized
    engine the model was converted for (default: the current ``torch.backends.quantized.engine``); it
    picks the emulation. Raises ValueError for an unsupported module / op (naming it and where it sits),
    a model in training mode, or an unsupported engine."""
    import torch
    import torch.fx
    from torch.fx.passes.shape_prop import ShapeProp

    from ..torch_import import MODULE_HANDLERS, _FUNCTION_HANDLERS, _ensure_tables

    _ensure_tables()
    _tables()
    engine = engine or torch.backends.quantized.engine
    emulate = engine_emulation(engine)
    if not isinstance(qmodel, torch.nn.Module):
        raise ValueError(f"from_torch_quantized needs a torch.nn.Module, got {type(qmodel).__name__}")
    # torch's convert() leaves the modules it creates in training mode; only those whose forward depends
    # on it (float BatchNorm, Dropout) matter
    mode_dependent = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd)
    training = [n or type(qmodel).__name__ for n, m in qmodel.named_modules()
                if m.training and isinstance(m, mode_dependent) and type(m) not in _Q_MODULES]
    if training:
        raise ValueError(f"model is in training mode (e.g. {training[0]!r}); call .eval() first")
    shape = tuple(int(d) for d in input_shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"input_shape must be (batch, ...) with positive sizes, got {shape}")
    label = name or type(qmodel).__name__
    try:
        gm = torch.fx.symbolic_trace(qmodel)
    except Exception as e:
        raise ValueError(f"torch.fx could not trace {label}: {type(e).__name__}: {e}") from e

    info: dict = {}

    class _Probe(ShapeProp):
        def run_node(self, n):
            r = super().run_node(n)
            if isinstance(r, torch.Tensor):
                d = {"quantized": r.is_quantized}
                if r.is_quantized:
                    if r.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                        raise ValueError(f"activation {n.name} is quantized {r.qscheme()}; per-tensor only")
                    if r.dtype != torch.quint8:
                        raise ValueError(f"activation {n.name} is {r.dtype}; minquant activations are quint8")
                    d.update(scale=float(r.q_scale()), zero_point=int(r.q_zero_point()))
                d["channels_last"] = (r.dim() == 4 and r.is_contiguous(memory_format=torch.channels_last)
                                      and not r.is_contiguous())
                info[n] = d
            return r

    probe = (max(2, shape[0]),) + shape[1:]
    try:
        with torch.no_grad():
            _Probe(gm).propagate(torch.zeros(probe, dtype=torch.float32))
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"{label} does not run on an input of shape {probe} under engine {engine!r}: "
                         f"{type(e).__name__}: {e}") from e
    imp = _QImporter(gm, shape[0], label, dict(MODULE_HANDLERS), dict(_FUNCTION_HANDLERS))
    imp.info = info
    graph = imp.build()
    return QuantizedModel(graph, emulate, meta={"method": "from_torch_quantized", "engine": engine,
                                                "torch_version": torch.__version__})
