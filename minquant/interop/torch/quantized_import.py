"""Import a model quantized by PyTorch (eager mode) and run torch's own weights and qparams on minquant.

    torch.backends.quantized.engine = "x86"               # or "fbgemm", "qnnpack"
    model.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    prepared = torch.ao.quantization.prepare(model)       # (after fusing modules)
    ...calibrate prepared...
    qmodel = torch.ao.quantization.convert(prepared)
    qm = minquant.interop.torch.quantized_import(qmodel, (1, 3, 224, 224))
    assert np.array_equal(qm(x), qmodel(torch.from_numpy(x)).numpy())     # bit for bit

This is the cross-checking use case: the integer weights, the weight scales / zero points, every
activation's (scale, zero point) and the float biases are read from the converted torch modules, and
minquant's kernels with the matching emulation (engine x86/fbgemm → ``target="fbgemm"``, qnnpack →
``"qnnpack"``) recompute what torch computes. Where the two differ, one of them has a bug or an
undocumented rounding — and :func:`minquant.quantized.compare` shows per layer where quantization hurts.

How: the converted model is traced with ``torch.fx`` (quantized modules are leaves; functional calls such
as ``torch.ops.quantized.add`` appear with their output qparams as constants) and run once on zeros of
``input_shape`` to record, for every value, whether it is a quantized tensor, its qparams and whether it
is channels-last in memory. Several torch kernels round differently by memory layout — average pooling,
and fbgemm's residual add, hardswish and hardsigmoid (their SIMD blocks and scalar tail follow memory
order) — so that layout is stored in the node. The walk over the fx graph is
:class:`minquant.interop.torch.fx_import.Importer`'s; this module only overrides its two lookups (which handler
computes a call: quantized tables first, :func:`minquant.from_torch`'s for float values). Supported:

* modules — ``Quantize`` (QuantStub after convert), ``DeQuantize``, quantized ``Conv2d`` / ``ConvReLU2d``
  / ``Linear`` / ``LinearReLU`` / ``ReLU6`` / ``Hardswish``, dynamic quantized ``Linear``
  (``quantize_dynamic``), and on quantized tensors ``ReLU``, ``ReLU6``, ``Hardtanh(0, 6)``,
  ``Hardsigmoid``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``Flatten``, ``Identity``,
  ``Dropout`` — which covers torchvision's quantizable MobileNetV2, MobileNetV3-large (squeeze-excite:
  hardsigmoid and ``FloatFunctional.mul``) and ResNet18; float modules (regions between
  DeQuantStub and QuantStub, layers ``quantize_dynamic`` left float) go to :func:`minquant.from_torch`'s
  handlers;
* functions — ``torch.ops.quantized.add`` / ``add_relu`` / ``cat`` / ``mul`` / ``mul_relu`` (what
  ``FloatFunctional`` becomes) / ``hardswish``, and on quantized tensors ``relu``, ``relu6``/``hardtanh``,
  ``hardsigmoid``, ``flatten``, ``view``/``reshape``, ``adaptive_avg_pool2d``, ``avg_pool2d``,
  ``max_pool2d``, ``dropout``; float functions as ``from_torch``.

Hardswish and hardsigmoid on codes are 256-entry tables and the quantized product one multiplier
(``qhardswish``, ``qhardsigmoid``, ``qmul``; formulas and torch's exact roundings per engine in
:mod:`minquant.kernels.elementwise`, docs/quantization.md step 10) — integer-exact, no float fallback.

Anything else raises ValueError naming the op and where it sits. Bit-exactness assumes one torch thread
(``torch.set_num_threads(1)``): with several, torch splits big element-wise adds into chunks that each get
their own scalar tail. The model must run under the engine it was converted with.

This module imports torch.
"""
from __future__ import annotations

import numpy as np

from ...affine import quantize
from .fx_import import (MODULE_HANDLERS, Importer, _arg, adaptive_avg_pool2d_attrs, alias, avg_pool2d_attrs,
                        check_dropout_off, check_relu6, flatten_attrs, is_fx_quantized, is_inplace,
                        max_pool2d_attrs, op_name, quiet_shape_prop, reshape_attrs, trace)
from ...quantized import ops
from ...target import Target, as_target
from ...quantized.model import DeferredModel, QuantizedModel

__all__ = ["from_torch_quantized", "engine_target"]

_ENGINES = ("x86", "fbgemm", "qnnpack")


def engine_target(engine: str, cpu="host") -> Target:
    """minquant's :class:`~minquant.target.Target` for a torch quantized engine on ``cpu`` (default: this
    host): the engine names are target framework names ('x86' resolves per convolution to oneDNN or fbgemm)."""
    if engine not in _ENGINES:
        raise ValueError(f"torch quantized engine {engine!r} is not emulated; supported: {list(_ENGINES)}")
    return Target(engine, cpu)


def _f32_if_exact(a: np.ndarray) -> np.ndarray:
    """float64 scales from torch → float32 when no information is lost (they come from float32 math)."""
    a = np.asarray(a, np.float64)
    f = a.astype(np.float32)
    return f if np.array_equal(f.astype(np.float64), a) else a


class _QImporter(Importer):
    """:class:`minquant.interop.torch.fx_import.Importer` whose lookups try the quantized tables first; ``info[fx node]``
    holds what the probe run saw: quantized?, (scale, zero point), channels-last?"""

    def __init__(self, gm, batch, name, info):
        super().__init__(gm, batch, name, MODULE_HANDLERS)
        self.info = info
        self.qp: dict[str, tuple[float, int]] = {}     # IR value → qparams (quantized values only)

    # -- the lookups (the walk itself is Importer.build) -----------------------------------------------
    def module_handler(self, fxn, mod):
        """Quantized module types first; a float module applied to a quantized tensor (nn.ReLU, pools...)
        needs a handler for codes; anything else is a float module, as in :func:`minquant.from_torch`."""
        handler = _Q_MODULES.get(type(mod))
        if handler is None and self.is_q(fxn.args[0] if fxn.args else None):
            handler = _Q_ON_QUANTIZED.get(type(mod))
            if handler is None:
                self.fail(fxn, f"unsupported module {type(mod).__module__}.{type(mod).__name__} on a "
                               "quantized tensor")
        return handler or super().module_handler(fxn, mod)

    def function_handler(self, fxn, key):
        """A call with a quantized tensor operand (or a ``torch.ops.quantized`` op) → the quantized table."""
        tensors = [a for a in list(fxn.args) + list(fxn.kwargs.values()) if _hashable_node(a) and a in self.info]
        for a in fxn.args:
            if isinstance(a, (list, tuple)):
                tensors += [t for t in a if _hashable_node(t) and t in self.info]
        if not (any(self.is_q(a) for a in tensors) or key in _Q_FUNCTIONS_ONLY):
            return super().function_handler(fxn, key)
        handler = _Q_FUNCTIONS.get(key)
        if handler is None:
            self.fail(fxn, f"unsupported op on quantized tensors: {op_name(fxn)}")
        return handler

    # -- helpers for the handlers ---------------------------------------------------------------------
    def is_q(self, arg) -> bool:
        return _hashable_node(arg) and bool(self.info.get(arg, {}).get("quantized"))

    def qparams_of(self, arg, fxn):
        v = self.value(arg, fxn)
        if v not in self.qp:
            self.fail(fxn, f"operand {arg} is not a quantized tensor")
        return self.qp[v]

    def emit_q(self, fxn, op, inputs, attrs=None, params=None, qparams=None, *, inplace=False):
        """Emit a node whose output is uint8 codes with ``qparams`` (default: the probe's)."""
        node = self.emit(fxn, op, inputs, attrs, params, inplace=inplace)
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


def _hashable_node(a) -> bool:
    return hasattr(a, "op") and hasattr(a, "meta")      # an fx node (constants and lists are not)


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
        return (yz, int(quantize(np.float32(6.0), ys, yz, "uint8", target=quantize_rule)))
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


def _on_q_activation(act):
    """ReLU / ReLU6 / Hardtanh(0, 6) on codes: a clamp, qparams unchanged (a module, a function or a
    method call; in place when the call is)."""
    def handler(imp, fxn, m=None):
        x = fxn.args[0]
        s, z = imp.qparams_of(x, fxn)
        name = act
        if act == "hardtanh":
            check_relu6(imp, fxn, m)
            name = "relu6"
        imp.emit_q(fxn, "qclamp", [x], ops.QClampAttrs(*_relu_clamp(name, s, z), name), qparams=(s, z),
                   inplace=is_inplace(fxn, m, 3 if act == "hardtanh" else 1))
    return handler


def _pass_q(op, attrs_of):
    """A handler for an op that moves or selects codes (pools, flatten, reshape): the output keeps the
    input's qparams; ``attrs_of(imp, fxn, m)`` reads the geometry as :mod:`minquant.interop.torch.fx_import` does."""
    def handler(imp, fxn, m=None):
        s, z = imp.qparams_of(fxn.args[0], fxn)
        imp.emit_q(fxn, op, [fxn.args[0]], attrs_of(imp, fxn, m), qparams=(s, z))
    return handler


def _q_avg_pool2d_attrs(imp, fxn, m=None):
    g = avg_pool2d_attrs(imp, fxn, m)
    s, z = imp.qparams_of(fxn.args[0], fxn)
    return ops.QAvgPool2dAttrs(g.kernel_size, g.stride, g.padding, g.ceil_mode, g.count_include_pad,
                               g.divisor_override, s, z, imp.channels_last(fxn.args[0]))


def _q_adaptive_attrs(imp, fxn, m=None):
    s, z = imp.qparams_of(fxn.args[0], fxn)
    return ops.QAdaptiveAvgPool2dAttrs(adaptive_avg_pool2d_attrs(imp, fxn, m).output_size, s, z,
                                       imp.channels_last(fxn.args[0]))


def _q_activation_table(op, *, may_be_inplace=True):
    """Hardswish / hardsigmoid on codes: a 256-entry table (``qhardswish`` / ``qhardsigmoid``, kernel
    :mod:`minquant.kernels.elementwise`). Output qparams: the probe's — a ``QuantizedHardswish`` module's
    own, torch's fixed (1/256, 0) for hardsigmoid. The input's memory layout is stored: torch fbgemm's two
    rounding paths split the tensor in memory order."""
    def handler(imp, fxn, m=None):
        x = fxn.args[0]
        if may_be_inplace and is_inplace(fxn, m):
            imp.fail(fxn, f"in-place {op} on a quantized tensor is not supported")
        xs, xz = imp.qparams_of(x, fxn)
        inf = imp.info.get(fxn, {})
        if not inf.get("quantized"):
            imp.fail(fxn, f"quantized {op} without a quantized result")
        attrs = ops.QActivationAttrs(xs, xz, inf["scale"], inf["zero_point"], imp.channels_last(x))
        imp.emit_q(fxn, "q" + op, [x], attrs)
    return handler


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


def _f_qmul(relu):
    """``torch.ops.quantized.mul`` / ``mul_relu`` (what ``FloatFunctional.mul`` becomes): ``qmul``, inputs
    may broadcast (squeeze-excite: an (N, C, 1, 1) scale times an (N, C, H, W) tensor)."""
    def handler(imp, fxn):
        a, b = fxn.args[0], fxn.args[1]
        sa, za = imp.qparams_of(a, fxn)
        sb, zb = imp.qparams_of(b, fxn)
        ys, yz = float(_arg(fxn, 2, "scale")), int(_arg(fxn, 3, "zero_point"))
        imp.emit_q(fxn, "qmul", [a, b], ops.QMulAttrs(sa, za, sb, zb, ys, yz, relu), qparams=(ys, yz))
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


def _f_dropout(imp, fxn):
    check_dropout_off(imp, fxn)
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

    relu, relu6, hardtanh = _on_q_activation("relu"), _on_q_activation("relu6"), _on_q_activation("hardtanh")
    maxpool, avgpool = _pass_q("qmax_pool2d", max_pool2d_attrs), _pass_q("qavg_pool2d", _q_avg_pool2d_attrs)
    adaptive, flatten = _pass_q("qadaptive_avg_pool2d", _q_adaptive_attrs), _pass_q("qflatten", flatten_attrs)
    reshape = _pass_q("qreshape", reshape_attrs)
    _Q_MODULES.update({
        nnq.Quantize: _h_quantize, nnq.DeQuantize: _h_dequantize,
        nnq.Conv2d: _h_conv(""), nniq.ConvReLU2d: _h_conv("relu"),
        nnq.Linear: _h_linear(""), nniq.LinearReLU: _h_linear("relu"),
        nnq.ReLU6: relu6, nnqd.Linear: _h_dynamic_linear, nnq.Hardswish: _q_activation_table("hardswish"),
        nnq.Dropout: alias,   # torch's quantized Dropout is the identity (convert leaves it in train mode)
    })
    _Q_ON_QUANTIZED.update({
        nn.ReLU: relu, nn.ReLU6: relu6, nn.Hardtanh: hardtanh,
        nn.MaxPool2d: maxpool, nn.AvgPool2d: avgpool, nn.AdaptiveAvgPool2d: adaptive,
        nn.Flatten: flatten, nn.Identity: alias, nn.Dropout: alias, nn.Dropout2d: alias,
        nn.Hardsigmoid: _q_activation_table("hardsigmoid"),
    })
    q_on = {
        torch.ops.quantized.add: _f_qadd(False), torch.ops.quantized.add_relu: _f_qadd(True),
        torch.ops.quantized.cat: _f_qcat, torch.ops.quantized.mul: _f_qmul(False),
        torch.ops.quantized.mul_relu: _f_qmul(True),
        torch.ops.quantized.hardswish: _q_activation_table("hardswish", may_be_inplace=False),   # (x, scale, zp)
    }
    _Q_FUNCTIONS_ONLY.update(q_on)
    _Q_FUNCTIONS.update(q_on)
    _Q_FUNCTIONS.update({
        torch.relu: relu, torch.relu_: relu, F.relu: relu, F.relu6: relu6, F.hardtanh: hardtanh,
        torch.flatten: flatten, torch.reshape: reshape, F.adaptive_avg_pool2d: adaptive,
        F.max_pool2d: maxpool, F.avg_pool2d: avgpool, F.dropout: _f_dropout,
        F.hardsigmoid: _q_activation_table("hardsigmoid"),
        ("method", "relu"): relu, ("method", "relu_"): relu, ("method", "flatten"): flatten,
        ("method", "view"): reshape, ("method", "reshape"): reshape, ("method", "contiguous"): alias,
    })


#: where torch keeps the modules of an eager-mode quantized model (after convert / quantize_dynamic)
_QUANTIZED_PACKAGES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized", "torch.nn.quantized",
                       "torch.nn.intrinsic.quantized")


def _check_quantized(qmodel, name) -> None:
    """ValueError unless ``qmodel`` is an nn.Module holding torch eager-mode quantized modules."""
    import torch

    if not isinstance(qmodel, torch.nn.Module):
        raise ValueError(f"from_torch_quantized needs a torch.nn.Module, got {type(qmodel).__name__}")
    label = name or type(qmodel).__name__
    if is_fx_quantized(qmodel):
        raise ValueError(f"{label} was quantized with torch.fx graph mode or pt2e (convert_fx / convert_pt2e): "
                         "not supported yet — from_torch_quantized imports eager-mode quantized models "
                         "(torch.ao.quantization.convert or quantize_dynamic); quantize the float model with "
                         "minquant.quantize_static instead")
    if not any(type(m).__module__.startswith(_QUANTIZED_PACKAGES) for m in qmodel.modules()):
        raise ValueError(f"{label} has no quantized modules; quantize it first (torch.ao.quantization prepare, "
                         "calibrate, convert — or quantize_dynamic) or use minquant.quantize_static / "
                         "quantize_dynamic on the float model")


def from_torch_quantized(qmodel, input_shape=None, *, engine: str | None = None, target=None,
                         name: str | None = None) -> QuantizedModel:
    """A :class:`QuantizedModel` that runs ``qmodel`` (a torch eager-mode model after ``convert``, or after
    ``quantize_dynamic``) with torch's weights and qparams on minquant's kernels (module docstring).

    ``input_shape``: input shape with batch, e.g. ``(1, 3, 224, 224)``; without it the result is a
    :class:`~minquant.quantized.model.DeferredModel`, imported at its first call from that input's shape. ``engine``: the torch quantized
    engine the model was converted for (default: the current ``torch.backends.quantized.engine``).
    ``target``: the :class:`~minquant.target.Target` to reproduce (default: ``Target(engine)``, the engine
    on this host; e.g. ``Target("x86", "avx2")`` for what the model computes on an AVX2 server); its
    framework must be the engine. Raises ValueError for an unsupported module / op (naming it and where it sits),
    a model in training mode, a model with no quantized module (a float model), a model quantized with
    torch.fx graph mode / pt2e (not supported yet), one that does not run on ``input_shape`` (with its own
    error), or an unsupported engine."""
    import torch

    _tables()
    _check_quantized(qmodel, name)
    if input_shape is None:
        engine_now = engine or torch.backends.quantized.engine   # the engine is fixed now, not at the call
        return DeferredModel(lambda shape: from_torch_quantized(qmodel, shape, engine=engine_now, target=target,
                                                                name=name),
                             f"from_torch_quantized({name or type(qmodel).__name__})")
    if target is not None:
        target = as_target(target)
        if engine is not None and engine != target.framework:
            raise ValueError(f"engine {engine!r} and target {str(target)!r} disagree: the target's framework "
                             "must be the engine the model was converted for")
        engine = target.framework
    engine = engine or torch.backends.quantized.engine
    target = engine_target(engine) if target is None else engine_target(engine, target.cpu)
    # torch's convert() leaves the modules it creates in training mode; only those whose forward depends
    # on it (float BatchNorm, Dropout) matter
    mode_dependent = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd)
    training = [n or type(qmodel).__name__ for n, m in qmodel.named_modules()
                if m.training and isinstance(m, mode_dependent) and type(m) not in _Q_MODULES]
    if training:
        raise ValueError(f"model is in training mode (e.g. {training[0]!r}); call .eval() first")
    label = name or type(qmodel).__name__
    info: dict = {}

    class _Probe(quiet_shape_prop()):
        """Records, for every tensor an fx node produces: quantized?, its qparams, channels-last?"""
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

    gm, shape = trace(qmodel, input_shape, label, probe=_Probe, argname="input_shape",
                      context=f" under engine {engine!r}")
    graph = _QImporter(gm, shape[0], label, info).build()
    return QuantizedModel(graph, target, meta={"method": "from_torch_quantized", "engine": engine,
                                                "torch_version": torch.__version__})
