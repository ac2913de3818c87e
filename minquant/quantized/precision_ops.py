"""The graph ops of float16 and int4 layers, and their prepared kernels.

====================  ===================  =============================================================
op                    input → output       parameters
====================  ===================  =============================================================
``fp16_conv2d``       float → float16/32   ``weight`` float16 OIHW, ``bias`` float16 (optional)
``fp16_linear``       float → float16/32   ``weight`` float16 (O, I), ``bias`` float16
``w4_conv2d``         float → float16/32   ``weight_packed`` uint8 (O, ceil(K/2)): 4-bit codes of the rows
``w4_linear``         float → float16/32   in (kh, kw, c) order; ``w_scale`` float16 (O, K/group_size);
                                           ``w_zp`` int8 (O, K/group_size) unless symmetric; ``bias`` float32
``w4a8_conv2d``       uint8 → uint8        as ``w4_*``, input / output qparams and clamp like ``qconv2d``
``w4a8_linear``       uint8 → uint8        (``clamp_hi`` optional, as ``qconv2d``)
``fp16_widen``        float16 → float32    none (exact widening)
====================  ===================  =============================================================

Float-activation layers (``fp16_*``, ``w4_*``) read float32 or float16, compute in float32 and round
their output to float16 when ``round_output`` (activations FP16, torch's ``.half()``) or leave it float32
(activations FP32); with float16 activations they also round their *input* to float16 first (a float32
value arriving from a ``dequantize`` or the model input is stored in float16 like every other activation).
Float ops between them (ReLU, add, pooling...) take float16 inputs through
:func:`minquant.kernels.fp16.fp16_aware` (widen, compute, round). ``w4_linear`` is ONNX Runtime's
``MatMulNBits`` (:func:`minquant.kernels.int4.int4_linear` under the model's target when it is
'onnxruntime' or 'minquant'; other targets, which have no such op, run it as 'minquant');
``w4_conv2d`` and the ``w4a8_*`` layers are minquant's own arithmetic (:mod:`minquant.kernels.int4_conv`,
:mod:`minquant.kernels.w4a8`: no framework has them).

This module registers the ops (:func:`minquant.graph.register_op`) and their attribute classes (so models
holding them save and load), and :func:`prepare_precision_kernels` gives the executor their kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import graph as G
from ..graph import OPS, OpSpec, register_op
from ..kernels.fp16 import round_fp16, widen
from ..kernels.int4 import int4_linear
from ..kernels.int4_conv import Int4Conv2d
from ..kernels.w4a8 import W4A8Conv2d, W4A8Layer
from ..target import Target
from . import ops

__all__ = ["Fp16Attrs", "Int4Attrs", "W4A8Attrs", "PRECISION_OPS", "FLOAT_ACTIVATION_OPS", "prepare_precision_kernels",
           "float_param_count", "describe"]

_F32 = np.float32


def _geometry(a):
    geo = G.Conv2dAttrs(a.stride, a.padding, a.dilation, a.groups)
    for f in ("stride", "padding", "dilation", "groups"):
        object.__setattr__(a, f, getattr(geo, f))


def _weight_shape(a):
    shape = tuple(int(v) for v in a.weight_shape)
    if len(shape) not in (2, 4) or min(shape) < 1:
        raise ValueError(f"weight_shape must be (O, I) or (O, C/G, KH, KW) of positive sizes, got {a.weight_shape!r}")
    object.__setattr__(a, "weight_shape", shape)
    k = int(np.prod(shape[1:]))
    gs = int(a.group_size)
    if gs < 1 or k % gs:
        raise ValueError(f"group_size={a.group_size} does not divide the {k} weights of a row")
    object.__setattr__(a, "group_size", gs)
    object.__setattr__(a, "symmetric", bool(a.symmetric))


@dataclass(frozen=True)
class Fp16Attrs:
    """``fp16_conv2d`` / ``fp16_linear``: conv geometry (ignored by linear) and whether the output is
    rounded to float16 (activations FP16) or left float32 (FP32)."""
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    round_output: bool = True

    def __post_init__(self):
        _geometry(self)
        object.__setattr__(self, "round_output", bool(self.round_output))


@dataclass(frozen=True)
class Int4Attrs:
    """``w4_conv2d`` / ``w4_linear``: the float weight shape, the group layout, the conv geometry and the
    activation storage (``round_output``)."""
    weight_shape: tuple
    group_size: int
    symmetric: bool = True
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    round_output: bool = True

    def __post_init__(self):
        _weight_shape(self)
        _geometry(self)
        object.__setattr__(self, "round_output", bool(self.round_output))


@dataclass(frozen=True)
class W4A8Attrs:
    """``w4a8_conv2d`` / ``w4a8_linear``: as :class:`Int4Attrs` plus the input / output qparams, the output
    clamp on codes and the fused activation's name (as :class:`~minquant.quantized.ops.QConv2dAttrs`)."""
    weight_shape: tuple
    group_size: int
    symmetric: bool = True
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    x_scale: float = 1.0
    x_zp: int = 0
    y_scale: float = 1.0
    y_zp: int = 0
    clamp: tuple = (0, 255)
    activation: str = ""

    def __post_init__(self):
        _weight_shape(self)
        _geometry(self)
        ops._checked_qparams(self, "x", "y")
        object.__setattr__(self, "clamp", ops._clamp(self.clamp))
        object.__setattr__(self, "activation", str(self.activation))


_W4 = (("weight_packed", 2), ("w_scale", 2))
_SPECS = {
    "fp16_conv2d": OpSpec(1, Fp16Attrs, (("weight", 4),), (("bias", 1),), "float16 weights, float32 arithmetic"),
    "fp16_linear": OpSpec(1, Fp16Attrs, (("weight", 2),), (("bias", 1),), "float16 weights, float32 arithmetic"),
    "w4_conv2d": OpSpec(1, Int4Attrs, _W4, (("w_zp", 2), ("bias", 1)), "int4 weights per group, float activations"),
    "w4_linear": OpSpec(1, Int4Attrs, _W4, (("w_zp", 2), ("bias", 1)), "int4 weights per group (MatMulNBits)"),
    "w4a8_conv2d": OpSpec(1, W4A8Attrs, _W4, (("w_zp", 2), ("bias", 1), ("clamp_hi", 1)),
                          "int4 weights per group, uint8 in/out"),
    "w4a8_linear": OpSpec(1, W4A8Attrs, _W4, (("w_zp", 2), ("bias", 1), ("clamp_hi", 1)),
                          "int4 weights per group, uint8 in/out"),
    "fp16_widen": OpSpec(1, None, (), (), "float16 → float32, exactly (float32 passes)"),
}
for _name, _spec in _SPECS.items():
    if _name not in OPS:
        register_op(_name, _spec)
for _cls in (Fp16Attrs, Int4Attrs, W4A8Attrs):
    ops.ATTRS_CLASSES.setdefault(_cls.__name__, _cls)

#: the layers this module adds (``fp16_widen`` aside: it only widens float16 values, e.g. to measure one
#: float16 layer inside a float32 model)
PRECISION_OPS = frozenset(_SPECS) - {"fp16_widen"}
#: the ones that read and write float values
FLOAT_ACTIVATION_OPS = frozenset({"fp16_conv2d", "fp16_linear", "w4_conv2d", "w4_linear"})


def float_param_count(node) -> int:
    """How many float parameters the layer had before it was lowered (weights + bias)."""
    a = node.attrs
    shape = node.params["weight"].shape if node.op.startswith("fp16") else a.weight_shape
    return int(np.prod(shape)) + (node.params["bias"].size if "bias" in node.params else 0)


def describe(node) -> str:
    """One line for ``QuantizedModel.summary``."""
    a = node.attrs
    if node.op.startswith("fp16"):
        return "w float16; out " + ("float16" if a.round_output else "float32")
    k = int(np.prod(a.weight_shape[1:]))
    group = "per channel" if a.group_size == k else f"groups of {a.group_size}"
    text = f"w int4{list(a.weight_shape)} {group}" + ("" if a.symmetric else " + zero points")
    if node.op.startswith("w4a8"):
        return text + f"; in {a.x_scale:.4g}/{a.x_zp}" + (f"; {a.activation} clamp {list(a.clamp)}" if a.activation else "")
    return text + "; out " + ("float16" if a.round_output else "float32")


def _zp(node):
    return node.params.get("w_zp")


def _dtype(node):
    return "int4" if node.attrs.symmetric else "uint4"


def _float_layer(fn, round_output):
    """The float-activation layer's storage around its float32 computation (module docstring)."""
    if round_output:
        return lambda x: round_fp16(fn(widen(round_fp16(x))))
    return lambda x: fn(widen(x))


def _prepare(node, target: Target):
    a, p = node.attrs, node.params
    if node.op in ("fp16_conv2d", "fp16_linear"):
        from .. import float_ops as F
        w = widen(p["weight"])
        b = widen(p["bias"]) if "bias" in p else None
        if node.op == "fp16_conv2d":
            fn = lambda x: F.conv2d(x, w, b, a.stride, a.padding, a.dilation, a.groups)  # noqa: E731
        else:
            fn = lambda x: F.linear(x, w, b)  # noqa: E731
        return _float_layer(fn, a.round_output)
    bias = p["bias"].astype(_F32) if "bias" in p else None
    if node.op == "w4_conv2d":
        layer = Int4Conv2d(p["weight_packed"], p["w_scale"], _zp(node), weight_shape=a.weight_shape,
                           group_size=a.group_size, bias=bias, stride=a.stride, padding=a.padding,
                           dilation=a.dilation, groups=a.groups, dtype=_dtype(node))
        return _float_layer(layer, a.round_output)
    if node.op == "w4_linear":
        k = a.weight_shape[1]
        arith = target if target.framework in ("onnxruntime", "minquant") else Target("minquant", target.cpu)
        packed, scale = p["weight_packed"].ravel(), p["w_scale"].astype(_F32)

        def fn(x):
            return int4_linear(x, packed, scale, _zp(node), group_size=a.group_size, in_features=k, bias=bias,
                               dtype=_dtype(node), target=arith)
        if k % 2:
            raise ValueError(f"w4_linear needs an even number of inputs (MatMulNBits' packing), got {k}")
        return _float_layer(fn, a.round_output)
    common = dict(group_size=a.group_size, x_scale=a.x_scale, x_zp=a.x_zp, y_scale=a.y_scale, y_zp=a.y_zp, bias=bias,
                  clamp=a.clamp, clamp_hi=p.get("clamp_hi"), dtype=_dtype(node))
    if node.op == "w4a8_linear":
        layer = W4A8Layer(p["weight_packed"], p["w_scale"], _zp(node), k=a.weight_shape[1], **common)

        def run_linear(x):
            y = layer(x.reshape(-1, x.shape[-1]))
            return y.reshape(x.shape[:-1] + (y.shape[-1],))
        return run_linear
    o, cg = a.weight_shape[:2]
    return W4A8Conv2d(p["weight_packed"], p["w_scale"], _zp(node), weight_shape=a.weight_shape, c_in=cg * a.groups,
                      stride=a.stride, padding=a.padding, dilation=a.dilation, groups=a.groups, **common)


def prepare_precision_kernels(graph, target: Target) -> dict:
    """``{op: kernel(node, inputs)}`` for the ops of this module present in ``graph``, each layer prepared
    once (weights widened or dequantized, scales combined)."""
    prepared = {}
    for n in graph.nodes:
        if n.op in PRECISION_OPS:
            try:
                prepared[n.name] = _prepare(n, target)
            except ValueError as e:
                raise ValueError(f"cannot prepare node {n.name!r} ({n.op}, from {n.source or '?'}): {e}") from e

    def run(node, xs):
        x = xs[0]
        if node.op.startswith("w4a8") and (not isinstance(x, np.ndarray) or x.dtype != np.uint8):
            raise ValueError(f"{node.op} expects uint8 codes as input, got {getattr(x, 'dtype', type(x))}")
        return prepared[node.name](x)

    table = {op: run for op in PRECISION_OPS}
    table["fp16_widen"] = lambda node, xs: widen(xs[0])
    return table
