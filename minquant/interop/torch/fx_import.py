"""Import a PyTorch model into minquant's graph IR with ``torch.fx`` symbolic tracing.

    graph = from_torch(model, (1, 3, 224, 224))     # model in eval mode
    y = minquant.executor.run(graph, x)             # ≈ model(torch.from_numpy(x)).numpy()

``torch.fx.symbolic_trace`` records ``model.forward`` as a list of calls: to leaf modules (``nn.Conv2d``,
``nn.ReLU``...), to functions (``operator.add``, ``torch.flatten``, ``F.relu``...) and to tensor methods
(``x.view``...). Container modules — ``nn.Sequential``, torchvision's blocks, its ``SqueezeExcitation`` —
are traced *through*, so only their leaves appear. Each call becomes one :class:`~minquant.graph.Node`
(or none: Dropout, Identity and ``contiguous`` are inference no-ops and are skipped). The example shape
is pushed through the traced model (``ShapeProp``) to learn every output shape; ``view``/``reshape``/
``flatten`` are read from those shapes, so ``x.view(x.size(0), -1)`` works.

Node names follow the module tree: a module call is named by its path (``features.0.0``; a module called
twice gets ``@1`` on its second call, as in torch's ``nn_module_stack``), a function call by the module
whose ``forward`` made it plus the function (``layer1.0.add``). ``node.source`` records module type / fx
node for messages.

Supported (exact module types — a subclass such as a QAT ``Conv2d`` may change ``forward``, so it is
refused rather than silently imported as float): Conv2d (any groups, zero padding), Linear, BatchNorm2d
(with running statistics), ReLU, ReLU6, Hardtanh(0, 6), Hardswish, Hardsigmoid, AdaptiveAvgPool2d,
AvgPool2d, MaxPool2d, Flatten, Dropout/Dropout2d/Identity; functions and methods for add, mul, cat,
flatten, view/reshape, relu/relu6/hardtanh/hardswish/hardsigmoid, adaptive_avg_pool2d, avg_pool2d,
max_pool2d, dropout. Anything else raises ValueError naming the op and the module / fx node it sits in.

In-place activations (``nn.ReLU(inplace=True)``, ``F.relu(x, inplace=True)``, ``x.relu_()``) overwrite
their input, so later readers of that input see the activated value: the importer follows this (also
through Dropout/Identity aliases). fx records ``a += b`` as ``a + b``; like fx itself, the importer does
not model a later read of the overwritten ``a`` (none of torchvision's models has one).

Extending: a module handler is ``handler(importer, fx_node, module)``, a function handler
``handler(importer, fx_node)``; both call :meth:`Importer.emit` (examples: :data:`MODULE_HANDLERS`).
``from_torch(..., module_handlers=)`` adds module types. A whole other importer — the one for
torch-quantized models (:mod:`minquant.interop.torch.quantized_import`) — subclasses :class:`Importer`
and overrides its two lookups, :meth:`Importer.module_handler` and :meth:`Importer.function_handler`
(which handler computes this call?); the walk over the fx graph, inputs, outputs, shape arithmetic and
error messages stay here. :func:`trace` (checks, symbolic tracing, one probe run) is shared the same way.
This module imports torch; the graph itself holds only NumPy.
"""
from __future__ import annotations

import operator
import re
from typing import Callable, Mapping

import numpy as np

from ...graph import (AdaptiveAvgPool2dAttrs, AvgPool2dAttrs, BatchNormAttrs, CatAttrs, Conv2dAttrs, FlattenAttrs,
                      Graph, MaxPool2dAttrs, Node, ReshapeAttrs, unique_name)

__all__ = ["from_torch", "Importer", "MODULE_HANDLERS", "trace", "quiet_shape_prop", "ModelRunError",
           "is_fx_quantized"]


def _arg(fxn, i: int, name: str, default=None):
    """Argument ``i`` (positional) or ``name`` (keyword) of an fx call, else ``default``."""
    if len(fxn.args) > i:
        return fxn.args[i]
    return fxn.kwargs.get(name, default)


class Importer:
    """Walks an fx-traced model and builds the graph. Handlers call :meth:`emit`, :meth:`value`,
    :meth:`alias`, :meth:`param`, :meth:`out_shape` and :meth:`fail`. ``module_handlers`` (by exact module
    type) and ``function_handlers`` (by function, or ``("method", name)`` for a tensor method; default
    :func:`from_torch`'s) say which handler computes a call; subclasses may override the lookups
    :meth:`module_handler` / :meth:`function_handler` instead."""

    def __init__(self, gm, batch: int, name: str, module_handlers: Mapping[type, Callable],
                 function_handlers: Mapping | None = None):
        _ensure_tables()
        self.gm = gm
        self.batch = batch
        self.name = name
        self.module_handlers = module_handlers
        self.function_handlers = _FUNCTION_HANDLERS if function_handlers is None else function_handlers
        self.value_of: dict = {}      # fx node → IR value name (tensor results only)
        self.shape_values: set = set()  # fx nodes that compute sizes (x.size(0), x.shape[1]...)
        self.nodes: list[Node] = []
        self.used: set[str] = set()
        self.inputs: list[str] = []
        self.input_shapes: dict[str, tuple[int, ...]] = {}

    # -- helpers for handlers -------------------------------------------------------------------------
    def where(self, fxn) -> str:
        """Human-readable location of an fx node: module path and type, or the enclosing module."""
        if fxn.op == "call_module":
            return f"module '{fxn.target}' ({type(self.gm.get_submodule(fxn.target)).__name__})"
        stack = fxn.meta.get("nn_module_stack") or {}
        if stack:
            path, cls = list(stack.values())[-1]
            inside = f"in the forward of module '{path}' ({getattr(cls, '__name__', cls)})"
        else:
            inside = f"in {self.name}.forward"
        return f"fx node '{fxn.name}' {inside}"

    def fail(self, fxn, problem: str):
        raise ValueError(f"cannot import {self.where(fxn)}: {problem}")

    def value(self, arg, fxn) -> str:
        """IR value name of a tensor argument ``arg`` of ``fxn``."""
        if arg in self.shape_values:
            self.fail(fxn, f"operand {arg.name!r} is a size, not a tensor (sizes may only feed view/reshape)")
        if arg not in self.value_of:
            what = f"constant {arg!r}" if not hasattr(arg, "op") else f"value {arg.name!r}"
            self.fail(fxn, f"operand {what} is not a tensor produced by the model (constant operands "
                           "are not supported)")
        return self.value_of[arg]

    def out_shape(self, fxn) -> tuple[int, ...]:
        meta = fxn.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            self.fail(fxn, "its result is not a single tensor")
        return tuple(int(d) for d in meta.shape)

    def param(self, t, fxn, what: str) -> np.ndarray:
        """A float32 NumPy copy of parameter/buffer ``t``."""
        import torch

        if t is None:
            return None
        if t.dtype != torch.float32:
            self.fail(fxn, f"{what} is {t.dtype}; minquant imports float32 models only")
        a = t.detach().cpu().numpy().astype(np.float32, copy=True)
        if not np.isfinite(a).all():
            self.fail(fxn, f"{what} has {int(np.isnan(a).sum())} NaN and {int(np.isinf(a).sum())} infinite "
                           "value(s): the model's own parameters are broken (not the calibration data); "
                           "minquant imports finite parameters only")
        return a

    def alias(self, fxn, arg) -> None:
        """``fxn`` returns its input unchanged (Dropout, Identity...): no node, same value."""
        self.value_of[fxn] = self.value(arg, fxn)

    def _unique(self, base: str) -> str:
        name = unique_name(base, self.used, "@")
        self.used.add(name)
        return name

    def emit(self, fxn, op: str, inputs: list, attrs=None, params=None, *, inplace: bool = False) -> Node:
        """Add a node computing ``fxn`` (``inputs``: fx args that are tensors). ``inplace=True``: the op
        overwrote ``inputs[0]``, so later readers of that value read this node instead."""
        names = [self.value(a, fxn) for a in inputs]
        if fxn.op == "call_module":
            base, source = str(fxn.target), f"{fxn.target} ({type(self.gm.get_submodule(fxn.target)).__name__})"
        else:
            stack = fxn.meta.get("nn_module_stack") or {}
            prefix = list(stack.values())[-1][0] + "." if stack else ""
            base = prefix + re.sub(r"_\d+$", "", fxn.name)
            source = f"fx node {fxn.name} ({getattr(fxn.target, '__name__', fxn.target)})"
        params = {k: v for k, v in (params or {}).items() if v is not None}
        node = Node(self._unique(base), op, names, attrs, params,
                    shape=(self.batch,) + self.out_shape(fxn)[1:], source=source)
        self.nodes.append(node)
        self.value_of[fxn] = node.name
        if inplace:
            old = names[0]
            for k, v in list(self.value_of.items()):
                if v == old:
                    self.value_of[k] = node.name
        return node

    def add_input(self, fxn) -> str:
        """The graph input for an fx placeholder (one input is supported), with its batch-1 shape."""
        if self.inputs:
            self.fail(fxn, "the model takes more than one input; one is supported")
        name = self._unique(fxn.name)
        self.inputs.append(name)
        self.value_of[fxn] = name
        self.input_shapes[name] = (self.batch,) + self.out_shape(fxn)[1:]
        return name

    # -- which handler computes a call (the hooks a subclass overrides) --------------------------------
    def module_handler(self, fxn, mod) -> Callable:
        """The handler for a call of module ``mod`` (exact type), or fail naming the type."""
        handler = self.module_handlers.get(type(mod))
        if handler is None:
            known = [b.__name__ for b in type(mod).__mro__[1:] if b in self.module_handlers]
            hint = (f" (a subclass of {known[0]}, which may change its forward: only exact types "
                    "are imported)") if known else ""
            self.fail(fxn, f"unsupported module type {type(mod).__module__}.{type(mod).__name__}{hint}")
        return handler

    def function_handler(self, fxn, key) -> Callable:
        """The handler for a function / method call (``key``: the function or ``("method", name)``)."""
        handler = self.function_handlers.get(key) if _hashable(key) else None
        if handler is None:
            self.fail(fxn, f"unsupported op: {op_name(fxn)}")
        return handler

    # -- the walk -------------------------------------------------------------------------------------
    def build(self) -> Graph:
        outputs: list[str] = []
        for fxn in self.gm.graph.nodes:
            if fxn.op == "placeholder":
                self.add_input(fxn)
            elif fxn.op == "call_module":
                mod = self.gm.get_submodule(fxn.target)
                self.module_handler(fxn, mod)(self, fxn, mod)
            elif fxn.op in ("call_function", "call_method"):
                if self._is_shape_value(fxn):
                    self.shape_values.add(fxn)
                    continue
                key = fxn.target if fxn.op == "call_function" else ("method", fxn.target)
                self.function_handler(fxn, key)(self, fxn)
            elif fxn.op == "get_attr":
                self.fail(fxn, f"reads the tensor attribute '{fxn.target}' directly (only module calls "
                               "may use parameters)")
            elif fxn.op == "output":
                res = fxn.args[0]
                for r in (list(res) if isinstance(res, (tuple, list)) else [res]):
                    outputs.append(self.value(r, fxn))
        return Graph(self.inputs, self.nodes, outputs, self.input_shapes, name=self.name)

    def _is_shape_value(self, fxn) -> bool:
        """Does ``fxn`` compute a size (``x.size(0)``, ``x.shape[1]``, arithmetic on sizes)?"""
        if fxn.meta.get("tensor_meta") is not None:
            return False
        if fxn.op == "call_method" and fxn.target in ("size", "dim"):
            return True
        if fxn.op == "call_function" and fxn.target is getattr and _arg(fxn, 1, "name") == "shape":
            return True
        if fxn.op == "call_function" and fxn.target in (operator.getitem, operator.add, operator.mul,
                                                         operator.floordiv, operator.sub):
            args = list(fxn.args)
            return all(a in self.shape_values or isinstance(a, (int, slice)) for a in args) and any(
                a in self.shape_values for a in args)
        return False


def _hashable(k) -> bool:
    try:
        hash(k)
        return True
    except TypeError:
        return False


def op_name(fxn) -> str:
    """``function torch.nn.functional.gelu`` / ``tensor method .sigmoid()``: a call's op, for messages."""
    if fxn.op == "call_method":
        return f"tensor method .{fxn.target}()"
    mod = getattr(fxn.target, "__module__", None)
    return f"function {mod + '.' if mod else ''}{getattr(fxn.target, '__name__', fxn.target)}"


# ----------------------------------------------------------------------------------------------------------
# Argument readers (shared with the quantized importer). ``m``: the module for a module call, None for a
# function / method call, whose arguments are read from the fx node instead.
# ----------------------------------------------------------------------------------------------------------

def is_inplace(fxn, m=None, arg_index: int = 1) -> bool:
    """Does this activation overwrite its input? A module: its ``inplace`` flag; a method: a trailing
    underscore (``x.relu_()``); a function: ``torch.relu_`` or ``inplace=True`` (positional ``arg_index``)."""
    if m is not None:
        return bool(getattr(m, "inplace", False))
    if fxn.op == "call_method":
        return str(fxn.target).endswith("_")
    return getattr(fxn.target, "__name__", "").endswith("_") or bool(_arg(fxn, arg_index, "inplace", False))


def check_relu6(imp: Importer, fxn, m=None) -> None:
    """Hardtanh is imported only as ReLU6 = Hardtanh(0, 6)."""
    if m is not None:
        lo, hi = float(m.min_val), float(m.max_val)
    else:
        lo, hi = float(_arg(fxn, 1, "min_val", -1.0)), float(_arg(fxn, 2, "max_val", 1.0))
    if (lo, hi) != (0.0, 6.0):
        imp.fail(fxn, f"hardtanh({lo}, {hi}) is supported only as relu6 = hardtanh(0, 6)")


def _stride(fxn, k):
    stride = _arg(fxn, 2, "stride", None)
    return k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else stride


def max_pool2d_attrs(imp: Importer, fxn, m=None) -> MaxPool2dAttrs:
    if (m.return_indices if m is not None else _arg(fxn, 6, "return_indices", False)):
        imp.fail(fxn, "max_pool2d(return_indices=True) is not supported")
    if m is not None:
        return MaxPool2dAttrs(m.kernel_size, m.stride if m.stride is not None else m.kernel_size, m.padding,
                              m.dilation, m.ceil_mode)
    k = _arg(fxn, 1, "kernel_size")
    return MaxPool2dAttrs(k, _stride(fxn, k), _arg(fxn, 3, "padding", 0), _arg(fxn, 4, "dilation", 1),
                          _arg(fxn, 5, "ceil_mode", False))


def avg_pool2d_attrs(imp: Importer, fxn, m=None) -> AvgPool2dAttrs:
    if m is not None:
        return AvgPool2dAttrs(m.kernel_size, m.stride if m.stride is not None else m.kernel_size, m.padding,
                              m.ceil_mode, m.count_include_pad, m.divisor_override)
    k = _arg(fxn, 1, "kernel_size")
    return AvgPool2dAttrs(k, _stride(fxn, k), _arg(fxn, 3, "padding", 0), _arg(fxn, 4, "ceil_mode", False),
                          _arg(fxn, 5, "count_include_pad", True), _arg(fxn, 6, "divisor_override", None))


def flatten_attrs(imp: Importer, fxn, m=None) -> FlattenAttrs:
    """``nn.Flatten`` (its start/end dims) or ``torch.flatten`` / ``x.flatten`` (defaults 0, −1)."""
    if m is not None:
        start_dim, end_dim = m.start_dim, m.end_dim
    else:
        start_dim, end_dim = _arg(fxn, 1, "start_dim", 0), _arg(fxn, 2, "end_dim", -1)
    r = len(imp.out_shape(fxn.args[0]))
    s, e = int(start_dim) % r, int(end_dim) % r
    if s == 0:
        imp.fail(fxn, "flatten from dim 0 would merge the batch dimension (use start_dim=1)")
    if s > e:
        imp.fail(fxn, f"flatten start_dim {start_dim} comes after end_dim {end_dim}")
    return FlattenAttrs(s, -1 if e == r - 1 else e)


def reshape_attrs(imp: Importer, fxn, m=None) -> ReshapeAttrs:
    """view / reshape: the per-sample shape, read from the traced output shape (so ``-1`` and
    ``x.size(0)`` arguments need no evaluation)."""
    before, after = imp.out_shape(fxn.args[0]), imp.out_shape(fxn)
    if after[0] != before[0] or len(after) < 1:
        imp.fail(fxn, f"reshape from {before} to {after} changes the batch dimension")
    return ReshapeAttrs(after[1:])


def adaptive_avg_pool2d_attrs(imp: Importer, fxn, m=None) -> AdaptiveAvgPool2dAttrs:
    return AdaptiveAvgPool2dAttrs(imp.out_shape(fxn)[-2:])


def alias(imp: Importer, fxn, m=None) -> None:
    """Dropout / Identity / ``contiguous``: no node, the output is the input (module or function)."""
    imp.alias(fxn, fxn.args[0])


# ----------------------------------------------------------------------------------------------------------
# Handlers. Those with an ``m=None`` parameter serve a module call and the matching function call.
# ----------------------------------------------------------------------------------------------------------

def _conv2d(imp: Importer, fxn, m) -> None:
    if m.padding_mode != "zeros":
        imp.fail(fxn, f"padding_mode={m.padding_mode!r}; only zero padding is supported")
    padding = m.padding
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        else:  # 'same' (stride 1): total d·(k − 1) per axis, torch puts the odd pixel on the right
            totals = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
            if any(t % 2 for t in totals):
                imp.fail(fxn, "padding='same' with an even effective kernel pads asymmetrically; unsupported")
            padding = tuple(t // 2 for t in totals)
    attrs = Conv2dAttrs(m.stride, padding, m.dilation, m.groups)
    imp.emit(fxn, "conv2d", [fxn.args[0]], attrs,
             {"weight": imp.param(m.weight, fxn, "weight"), "bias": imp.param(m.bias, fxn, "bias")})


def _linear(imp: Importer, fxn, m) -> None:
    imp.emit(fxn, "linear", [fxn.args[0]], None,
             {"weight": imp.param(m.weight, fxn, "weight"), "bias": imp.param(m.bias, fxn, "bias")})


def _batch_norm(imp: Importer, fxn, m) -> None:
    if not m.track_running_stats or m.running_mean is None:
        imp.fail(fxn, "BatchNorm without running statistics normalises with batch statistics at inference")
    c = m.num_features
    weight = imp.param(m.weight, fxn, "weight") if m.affine else np.ones(c, np.float32)
    bias = imp.param(m.bias, fxn, "bias") if m.affine else np.zeros(c, np.float32)
    imp.emit(fxn, "batch_norm", [fxn.args[0]], BatchNormAttrs(m.eps),
             {"running_mean": imp.param(m.running_mean, fxn, "running_mean"),
              "running_var": imp.param(m.running_var, fxn, "running_var"), "weight": weight, "bias": bias})


def _activation(op: str):
    def handler(imp: Importer, fxn, m=None) -> None:
        imp.emit(fxn, op, [fxn.args[0]], inplace=is_inplace(fxn, m))
    return handler


def _hardtanh(imp: Importer, fxn, m=None) -> None:
    check_relu6(imp, fxn, m)
    imp.emit(fxn, "relu6", [fxn.args[0]], inplace=is_inplace(fxn, m, 3))


def _with_attrs(op: str, attrs_of):
    """A handler emitting ``op`` on the first argument with attributes ``attrs_of(imp, fxn, m)``."""
    def handler(imp: Importer, fxn, m=None) -> None:
        imp.emit(fxn, op, [fxn.args[0]], attrs_of(imp, fxn, m))
    return handler


def _module_handlers() -> dict:
    import torch.nn as nn
    return {
        nn.Conv2d: _conv2d, nn.Linear: _linear, nn.BatchNorm2d: _batch_norm,
        nn.ReLU: _activation("relu"), nn.ReLU6: _activation("relu6"), nn.Hardtanh: _hardtanh,
        nn.Hardswish: _activation("hardswish"), nn.Hardsigmoid: _activation("hardsigmoid"),
        nn.AdaptiveAvgPool2d: _with_attrs("adaptive_avg_pool2d", adaptive_avg_pool2d_attrs),
        nn.AvgPool2d: _with_attrs("avg_pool2d", avg_pool2d_attrs),
        nn.MaxPool2d: _with_attrs("max_pool2d", max_pool2d_attrs),
        nn.Flatten: _with_attrs("flatten", flatten_attrs),
        nn.Dropout: alias, nn.Dropout2d: alias, nn.Identity: alias,
    }


def _binary(op: str):
    def handler(imp: Importer, fxn) -> None:
        if len(fxn.args) < 2 and "other" not in fxn.kwargs:
            imp.fail(fxn, f"{op} needs two operands")
        alpha = fxn.kwargs.get("alpha", 1)
        if alpha != 1:
            imp.fail(fxn, f"{op} with alpha={alpha} is not supported")
        inplace = fxn.op == "call_method" and str(fxn.target).endswith("_")
        imp.emit(fxn, op, [fxn.args[0], _arg(fxn, 1, "other")], inplace=inplace)
    return handler


def _cat(imp: Importer, fxn) -> None:
    tensors = _arg(fxn, 0, "tensors")
    if not isinstance(tensors, (list, tuple)) or not tensors:
        imp.fail(fxn, "cat needs a list of tensors")
    r = len(imp.out_shape(tensors[0]))
    dim = int(_arg(fxn, 1, "dim", 0)) % r
    if dim == 0:
        imp.fail(fxn, "cat along dim 0 (the batch) is not supported")
    imp.emit(fxn, "cat", list(tensors), CatAttrs(dim))


def check_dropout_off(imp: Importer, fxn) -> None:
    if _arg(fxn, 2, "training", True):
        imp.fail(fxn, "F.dropout(training=True) drops values at random; pass training=self.training "
                      "and put the model in eval mode")


def _dropout_fn(imp: Importer, fxn) -> None:
    check_dropout_off(imp, fxn)
    imp.alias(fxn, fxn.args[0])


def _function_handlers() -> dict:
    import torch
    import torch.nn.functional as F
    relu, flatten, reshape = _activation("relu"), _with_attrs("flatten", flatten_attrs), \
        _with_attrs("reshape", reshape_attrs)
    h = {
        operator.add: _binary("add"), torch.add: _binary("add"),
        operator.mul: _binary("mul"), torch.mul: _binary("mul"),
        torch.cat: _cat, torch.concat: _cat, torch.concatenate: _cat,
        torch.flatten: flatten, torch.reshape: reshape,
        torch.relu: relu, torch.relu_: relu, F.relu: relu,
        F.relu6: _activation("relu6"), F.hardtanh: _hardtanh,
        F.hardswish: _activation("hardswish"), F.hardsigmoid: _activation("hardsigmoid"),
        F.adaptive_avg_pool2d: _with_attrs("adaptive_avg_pool2d", adaptive_avg_pool2d_attrs),
        F.avg_pool2d: _with_attrs("avg_pool2d", avg_pool2d_attrs),
        F.max_pool2d: _with_attrs("max_pool2d", max_pool2d_attrs),
        F.dropout: _dropout_fn, F.dropout2d: _dropout_fn,
    }
    for name, fn in (("add", _binary("add")), ("add_", _binary("add")), ("mul", _binary("mul")),
                     ("mul_", _binary("mul")), ("relu", relu), ("relu_", relu), ("flatten", flatten),
                     ("view", reshape), ("reshape", reshape), ("contiguous", alias)):
        h[("method", name)] = fn
    return h


MODULE_HANDLERS: dict = {}
_FUNCTION_HANDLERS: dict = {}


def _ensure_tables() -> None:
    if not MODULE_HANDLERS:
        MODULE_HANDLERS.update(_module_handlers())
        _FUNCTION_HANDLERS.update(_function_handlers())


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------

class ModelRunError(Exception):
    """The model itself failed while the probe ran it: ``node`` (the fx node) raised ``cause``."""

    def __init__(self, node, cause: BaseException):
        super().__init__(f"{node.name}: {type(cause).__name__}: {cause}")
        self.node, self.cause = node, cause


_SHAPE_PROPS: dict = {}


def quiet_shape_prop():
    """A ``ShapeProp`` (``node.meta['tensor_meta']``, ``node.meta['type']``) that, when the model fails, raises
    :class:`ModelRunError` carrying the model's own exception — torch's ``ShapeProp`` prints that traceback
    to stderr and raises a ``RuntimeError`` listing the fx node's metadata instead. A Conv2d module given a
    3-D input (torch would read it as one unbatched image) fails here as a missing dimension."""
    if "quiet" in _SHAPE_PROPS:
        return _SHAPE_PROPS["quiet"]
    import torch
    from torch.fx import Interpreter
    from torch.fx.node import map_aggregate
    from torch.fx.passes.shape_prop import ShapeProp, _extract_tensor_metadata

    class QuietShapeProp(ShapeProp):
        def run_node(self, n):
            if n.op == "call_module":
                self._check_conv_input(n)
            try:
                result = Interpreter.run_node(self, n)
            except ModelRunError:
                raise
            except Exception as e:   # the model's own error, whatever its type
                raise ModelRunError(n, e) from e
            found = []

            def extract(obj):
                if isinstance(obj, torch.Tensor):
                    found.append(True)
                    return _extract_tensor_metadata(obj)
                return obj

            meta = map_aggregate(result, extract)
            if found:
                n.meta["tensor_meta"] = meta
            n.meta["type"] = type(result)
            return result

        def _check_conv_input(self, n):
            mod = self.fetch_attr(n.target)
            if not (isinstance(mod, torch.nn.Conv2d) or type(mod).__name__ in ("Conv2d", "ConvReLU2d")):
                return
            args, _ = self.fetch_args_kwargs_from_env(n)
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.dim() != 4:
                raise ModelRunError(n, ValueError(
                    f"{type(mod).__name__} takes 4-D input (N, C, H, W), got {x.dim()}-D {tuple(x.shape)}"
                    + (" — is a dimension missing (the batch, or the channel of a grayscale image)?"
                       if x.dim() == 3 else "")))

    _SHAPE_PROPS["quiet"] = QuietShapeProp
    return QuietShapeProp


def is_fx_quantized(model) -> bool:
    """Is ``model`` a torch.fx GraphModule quantized in FX graph mode (``convert_fx``) or with pt2e
    (``convert_pt2e``) — quantize / dequantize calls in its graph rather than quantized modules?"""
    import torch
    import torch.fx

    if not isinstance(model, torch.fx.GraphModule):
        return False
    quantize_fns = (torch.quantize_per_tensor, torch.quantize_per_channel, torch.quantize_per_tensor_dynamic)
    for n in model.graph.nodes:
        if n.op == "call_function" and (n.target in quantize_fns or "quantized_decomposed" in str(n.target)):
            return True
    return False


def _where(gm, fxn) -> str:
    if fxn.op == "call_module":
        return f"module '{fxn.target}' ({type(gm.get_submodule(fxn.target)).__name__})"
    if fxn.op in ("call_function", "call_method"):
        return f"fx node '{fxn.name}' ({op_name(fxn)})"
    return f"fx node '{fxn.name}'"


def trace(model, example_input_shape, label: str, *, probe=None, argname: str = "example_input_shape",
          context: str = ""):
    """Check ``example_input_shape``, trace ``model`` with ``torch.fx.symbolic_trace`` and run the traced
    module once on zeros of that shape with the batch raised to ≥ 2 (so that a reshape mixing the batch
    into other dimensions shows) through ``probe`` — a subclass of :func:`quiet_shape_prop`'s class (the
    default), which stores every fx node's output shape in ``node.meta['tensor_meta']``. Returns
    ``(graph_module, shape)``. ValueError for a bad shape, a model fx cannot trace, a model with more than one
    input or non-float32 parameters, or one that does not run — saying where it failed and the model's own
    error (``context`` is added to that message, e.g. the quantized engine); nothing is printed. A
    ValueError raised by the probe itself passes through."""
    import torch
    import torch.fx

    try:
        shape = tuple(int(d) for d in example_input_shape)
    except TypeError:
        raise ValueError(f"{argname} must be a tuple of ints, got {example_input_shape!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"{argname} must be (batch, ...) with positive sizes, got {shape}")
    wrong = next(((n, p.dtype) for n, p in model.named_parameters()
                  if p.is_floating_point() and p.dtype != torch.float32), None)
    if wrong is not None:
        raise ValueError(f"{label}'s parameters are {wrong[1]} (e.g. {wrong[0]!r}); minquant imports float32 "
                         "models only: call model.float() first")
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as e:  # data-dependent control flow and the like
        raise ValueError(f"torch.fx could not trace {label}: {type(e).__name__}: {e}") from e
    inputs = [n.name for n in gm.graph.nodes if n.op == "placeholder" and not n.args]   # args: a default
    if len(inputs) != 1:
        raise ValueError(f"{label}.forward takes {len(inputs)} inputs ({', '.join(inputs)}); minquant imports "
                         "models with exactly one input tensor")
    batch = (max(2, shape[0]),) + shape[1:]
    probed = f"{batch}" if batch == shape else f"{batch} ({argname} {shape} with the batch raised to 2)"
    try:
        with torch.no_grad():
            (probe or quiet_shape_prop())(gm).propagate(torch.zeros(batch, dtype=torch.float32))
    except ModelRunError as e:
        cause = e.cause
        raise ValueError(f"{label} does not run on an input of shape {probed}{context}: {_where(gm, e.node)} "
                         f"fails: {type(cause).__name__}: {cause}") from cause
    except ValueError:
        raise
    except Exception as e:
        cause = e.__cause__ if isinstance(e, RuntimeError) and str(e).startswith("ShapeProp error") and \
            e.__cause__ is not None else e
        raise ValueError(f"{label} does not run on an input of shape {probed}{context}: "
                         f"{type(cause).__name__}: {cause}") from cause
    return gm, shape


def from_torch(model, example_input_shape, *, name: str | None = None,
               module_handlers: Mapping[type, Callable] | None = None) -> Graph:
    """Trace ``model`` (an ``nn.Module`` in eval mode, float32) with torch.fx and return its :class:`Graph`.

    ``example_input_shape`` is the input shape with the batch first, e.g. ``(1, 3, 224, 224)``; the graph
    then accepts any batch size. Shapes are propagated with a batch of at least 2, so a reshape that
    would mix the batch into other dimensions is caught. ``module_handlers`` adds or overrides handlers
    by exact module type. Raises ValueError for a model in training mode, a model fx cannot trace, one that
    does not run on that shape (with the model's own error), more than one input, non-float32 or non-finite
    parameters, or an unsupported op (naming the op and the module / fx node it sits in)."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"from_torch needs a torch.nn.Module, got {type(model).__name__}")
    if is_fx_quantized(model):
        raise ValueError(f"{name or type(model).__name__} is a model quantized with torch.fx graph mode or pt2e "
                         "(convert_fx / convert_pt2e); from_torch imports float models, and such quantized "
                         "models are not supported yet (from_torch_quantized imports eager-mode ones)")
    training = [n or type(model).__name__ for n, m in model.named_modules() if m.training]
    if training:
        raise ValueError(f"model is in training mode (e.g. {training[0]!r}); call model.eval() first — minquant "
                         "imports inference semantics (BatchNorm running statistics, no dropout)")
    label = name or type(model).__name__
    gm, shape = trace(model, example_input_shape, label)
    _ensure_tables()
    return Importer(gm, shape[0], label, {**MODULE_HANDLERS, **(module_handlers or {})}).build()
