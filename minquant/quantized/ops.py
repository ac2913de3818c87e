"""The quantized ops of minquant's graph IR: what a node of a quantized model looks like.

A quantized model is an ordinary :class:`~minquant.graph.Graph` whose values are either float32 arrays
or **uint8 codes** with one (scale, zero point) per tensor (docs/quantization.md, step 1:
``r = s·(q − z)``). This module registers the ops that work on codes (with :func:`minquant.graph.register_op`)
and their attribute dataclasses; :mod:`minquant.quantized.executor` holds their kernels.

====================  ========================  =================================================================
op                    inputs → output           attributes / parameters
====================  ========================  =================================================================
quantize              float → uint8             scale, zero_point (the codes of the next op's input)
dequantize            uint8 → float             scale, zero_point
qconv2d               uint8 → uint8             conv geometry, x/y qparams, output clamp; weight int8 OIHW,
                                                w_scale, w_zp (per output channel, or one), bias float32,
                                                optional ``clamp_hi`` (uint8 per output channel): a per-channel
                                                top code after the clamp (ReLU6 after cross-layer equalization)
qlinear               uint8 → uint8             x/y qparams, clamp; weight int8 (O, I), w_scale, w_zp, bias,
                                                optional ``clamp_hi``
qconv2d_add           uint8, uint8 → uint8      qconv2d + the codes of a residual (accum_scale, accum_zp) added
                                                before the output scale: oneDNN's ``sum`` post-op (pt2e)
qlinear_float         uint8 → float             qlinear without an output quantization: x qparams, weight,
                                                bias (a pt2e model's classifier, oneDNN's float output)
qadd                  uint8, uint8 → uint8      a/b/y qparams, fused ReLU, element order (torch layout)
qcat                  uint8… → uint8            dim, input and output qparams
qmul                  uint8, uint8 → uint8      a/b/y qparams, fused ReLU; inputs broadcast (squeeze-excite)
qhardswish            uint8 → uint8             x/y qparams, element order (torch layout): a lookup table
qhardsigmoid          uint8 → uint8             as qhardswish (torch's output qparams are (1/256, 0))
qmax_pool2d           uint8 → uint8             as max_pool2d (max commutes with r = s·(q − z): same qparams)
qavg_pool2d           uint8 → uint8             as avg_pool2d + input qparams (output keeps them, like torch,
                                                unless y_scale/y_zp are given, like ONNX QLinearAveragePool)
qadaptive_avg_pool2d  uint8 → uint8             output size + input qparams (output keeps them unless
                                                y_scale/y_zp are given: ONNX QLinearGlobalAveragePool)
qmean                 uint8 → uint8             LiteRT's MEAN over H and W: x/y qparams, keep_dims (output
                                                (N, C, 1, 1), else (N, C)); run only under a LiteRT target
qpad                  uint8 → uint8             H and W padded (top, bottom, left, right) with one code (the zero
                                                point: real 0) — LiteRT's PAD, and its uneven SAME padding
qclamp                uint8 → uint8             codes clamped to [lo, hi] — a standalone ReLU (lo = z) or ReLU6;
                                                optional ``hi_channels`` (uint8 per channel): a per-channel top
qflatten / qreshape   uint8 → uint8             as flatten / reshape (codes move, qparams stay)
dynamic_linear        float → float             int8 weight; activations quantized at run time
dynamic_conv2d        float → float             conv geometry; int8 weight; activations quantized at run time
====================  ========================  =================================================================

Every float op of the IR (``conv2d``, ``hardswish``, ``mul``, ``relu_clip``...) may also appear: an op minquant has no
integer kernel for runs in float between a ``dequantize`` and a ``quantize`` (the "fallback"), and a
layer left unquantized (e.g. by :func:`~minquant.quantized.dynamic.quantize_dynamic`) stays a float node.

Weight parameters (all nodes that hold int8 weights): ``weight`` int8, ``w_scale`` float32 (float64 when
a framework's scale is not a float32 number) of length O — or length 1 with ``per_channel=False`` —,
``w_zp`` int8 of the same length, optional ``bias`` float32 (O,). Emulations that add an integer bias
(qnnpack, ONNX Runtime) quantize it when the layer is prepared; it is stored once, in float — or, for a
bias imported from ONNX that has no exact float32 preimage, as the file's int32 (added as given).

Attribute dataclasses are frozen, hold only ints, floats, bools, strings and tuples of them (so that
:mod:`minquant.quantized.model` can write them as JSON) and normalise tuples in ``__post_init__``.
This module imports only NumPy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import graph as G
from ..graph import OPS, OpSpec, register_op

__all__ = ["QuantizeAttrs", "QConv2dAttrs", "QLinearAttrs", "QAddAttrs", "QCatAttrs", "QAvgPool2dAttrs",
           "QAdaptiveAvgPool2dAttrs", "QClampAttrs", "DynamicLinearAttrs", "DynamicConv2dAttrs", "QMulAttrs",
           "QActivationAttrs", "QConv2dAddAttrs", "QLinearFloatAttrs", "QMeanAttrs", "QPadAttrs",
           "ATTRS_CLASSES", "QUANTIZED_OPS", "CODE_OPS", "WEIGHT_OPS", "value_qparams", "attrs_to_json",
           "attrs_from_json"]


def _scale(v, what):
    v = float(v)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{what} must be a finite scale > 0, got {v!r}")
    return v


def _zp(v, what, lo=0, hi=255):
    if int(v) != v or not lo <= int(v) <= hi:
        raise ValueError(f"{what} must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)


def _clamp(c):
    lo, hi = (int(t) for t in c)
    if not 0 <= lo <= hi <= 255:
        raise ValueError(f"clamp {c} must be a code range inside [0, 255]")
    return lo, hi


@dataclass(frozen=True)
class QuantizeAttrs:
    """``quantize`` q = clamp(z + rne(x / s)) / ``dequantize`` r = s·(q − z): one tensor's qparams."""
    scale: float
    zero_point: int

    def __post_init__(self):
        object.__setattr__(self, "scale", _scale(self.scale, "scale"))
        object.__setattr__(self, "zero_point", _zp(self.zero_point, "zero_point"))


@dataclass(frozen=True)
class QConv2dAttrs:
    """``qconv2d``: conv geometry (as :class:`~minquant.graph.Conv2dAttrs`), input qparams (x_scale, x_zp),
    output qparams (y_scale, y_zp), the output clamp on codes (``(0, 255)``; a fused ReLU is ``(z_y, 255)``,
    a fused ReLU6 ``(z_y, q(6))``), ``activation`` (its name, for printing) and whether the weights are
    quantized per output channel."""
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
    per_channel: bool = True

    def __post_init__(self):
        geo = G.Conv2dAttrs(self.stride, self.padding, self.dilation, self.groups)
        for f in ("stride", "padding", "dilation", "groups"):
            object.__setattr__(self, f, getattr(geo, f))
        _common_layer_attrs(self)

    def conv(self) -> G.Conv2dAttrs:
        return G.Conv2dAttrs(self.stride, self.padding, self.dilation, self.groups)


def _checked_qparams(a, *prefixes: str) -> None:
    """Validate and normalize, on the frozen attrs ``a``, ``{p}_scale`` (positive finite float) and ``{p}_zp``
    (int) for each prefix ``p`` ("x", "a", "y"...)."""
    for p in prefixes:
        object.__setattr__(a, f"{p}_scale", _scale(getattr(a, f"{p}_scale"), f"{p}_scale"))
        object.__setattr__(a, f"{p}_zp", _zp(getattr(a, f"{p}_zp"), f"{p}_zp"))


def _as_bools(a, *names: str) -> None:
    """The flags ``names`` of the frozen attrs ``a`` as plain bools."""
    for f in names:
        object.__setattr__(a, f, bool(getattr(a, f)))


def _common_layer_attrs(a):
    _checked_qparams(a, "x", "y")
    object.__setattr__(a, "clamp", _clamp(a.clamp))
    object.__setattr__(a, "activation", str(a.activation))
    _as_bools(a, "per_channel")


@dataclass(frozen=True)
class QConv2dAddAttrs(QConv2dAttrs):
    """``qconv2d_add``: :class:`QConv2dAttrs` plus the qparams of the residual input (its second input); the
    clamp and ``activation`` apply after the sum (``"relu"``: ResNet's add + ReLU)."""
    accum_scale: float = 1.0
    accum_zp: int = 0

    def __post_init__(self):
        super().__post_init__()
        _checked_qparams(self, "accum")


@dataclass(frozen=True)
class QLinearFloatAttrs:
    """``qlinear_float``: input qparams and per-channel weights; the output is float32 (no y qparams)."""
    x_scale: float = 1.0
    x_zp: int = 0
    per_channel: bool = True

    def __post_init__(self):
        _checked_qparams(self, "x")
        _as_bools(self, "per_channel")


@dataclass(frozen=True)
class QLinearAttrs:
    """``qlinear``: input / output qparams, output clamp, activation name, per-channel weights."""
    x_scale: float = 1.0
    x_zp: int = 0
    y_scale: float = 1.0
    y_zp: int = 0
    clamp: tuple = (0, 255)
    activation: str = ""
    per_channel: bool = True

    def __post_init__(self):
        _common_layer_attrs(self)


@dataclass(frozen=True)
class QAddAttrs:
    """``qadd``: y = s_a·(a − z_a) + s_b·(b − z_b) requantized to (y_scale, y_zp); ``relu`` clamps at z_y.
    ``channels_last``: the framework tensors being emulated are NHWC in memory, so fbgemm's position-
    dependent rounding (SIMD blocks + scalar tail) follows NHWC order (:func:`minquant.kernels.add.qadd`)."""
    a_scale: float
    a_zp: int
    b_scale: float
    b_zp: int
    y_scale: float
    y_zp: int
    relu: bool = False
    channels_last: bool = False

    def __post_init__(self):
        _checked_qparams(self, "a", "b", "y")
        _as_bools(self, "relu", "channels_last")


@dataclass(frozen=True)
class QCatAttrs:
    """``qcat``: concatenate along ``dim`` after requantizing every input to (y_scale, y_zp) — torch's
    ``quantized::cat``: dequantize each input, concatenate, quantize."""
    dim: int
    in_scales: tuple
    in_zps: tuple
    y_scale: float
    y_zp: int

    def __post_init__(self):
        if int(self.dim) < 1:
            raise ValueError(f"cat dim must be ≥ 1, got {self.dim}")
        object.__setattr__(self, "dim", int(self.dim))
        object.__setattr__(self, "in_scales", tuple(_scale(s, "input scale") for s in self.in_scales))
        object.__setattr__(self, "in_zps", tuple(_zp(z, "input zero point") for z in self.in_zps))
        if len(self.in_scales) != len(self.in_zps):
            raise ValueError("qcat needs one scale and one zero point per input")
        object.__setattr__(self, "y_scale", _scale(self.y_scale, "y_scale"))
        object.__setattr__(self, "y_zp", _zp(self.y_zp, "y_zp"))


@dataclass(frozen=True)
class QMulAttrs:
    """``qmul``: y = s_a·(a − z_a) · s_b·(b − z_b) requantized to (y_scale, y_zp); ``relu`` clamps at z_y.
    Kernel and roundings: :func:`minquant.kernels.elementwise.qmul`."""
    a_scale: float
    a_zp: int
    b_scale: float
    b_zp: int
    y_scale: float
    y_zp: int
    relu: bool = False

    def __post_init__(self):
        _checked_qparams(self, "a", "b", "y")
        _as_bools(self, "relu")


@dataclass(frozen=True)
class QActivationAttrs:
    """``qhardswish`` / ``qhardsigmoid``: input and output qparams and the layout of the framework tensor
    emulated (torch fbgemm's rounding depends on the position in memory order). A 256-entry table
    (:mod:`minquant.kernels.elementwise`)."""
    x_scale: float
    x_zp: int
    y_scale: float
    y_zp: int
    channels_last: bool = False

    def __post_init__(self):
        _checked_qparams(self, "x", "y")
        _as_bools(self, "channels_last")


@dataclass(frozen=True)
class QAvgPool2dAttrs:
    """``qavg_pool2d``: avg_pool2d geometry + the input's qparams + the layout of the framework tensor
    emulated (torch rounds differently for channels-last tensors). The output keeps the input's qparams
    (torch) unless ``y_scale``/``y_zp`` are given (ONNX ``QLinearAveragePool`` has its own)."""
    kernel_size: tuple
    stride: tuple
    padding: tuple = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None
    x_scale: float = 1.0
    x_zp: int = 0
    channels_last: bool = False
    y_scale: float | None = None
    y_zp: int | None = None

    def __post_init__(self):
        geo = self.pool()
        for f in ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"):
            object.__setattr__(self, f, getattr(geo, f))
        _checked_qparams(self, "x")
        _as_bools(self, "channels_last")
        _optional_output_qparams(self)

    def pool(self) -> G.AvgPool2dAttrs:
        return G.AvgPool2dAttrs(self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                self.count_include_pad, self.divisor_override)


@dataclass(frozen=True)
class QAdaptiveAvgPool2dAttrs:
    """``qadaptive_avg_pool2d``: output size + the input's qparams + framework tensor layout; the output
    keeps the input's qparams unless ``y_scale``/``y_zp`` are given (ONNX ``QLinearGlobalAveragePool``)."""
    output_size: tuple
    x_scale: float = 1.0
    x_zp: int = 0
    channels_last: bool = False
    y_scale: float | None = None
    y_zp: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "output_size", G.AdaptiveAvgPool2dAttrs(self.output_size).output_size)
        _checked_qparams(self, "x")
        _as_bools(self, "channels_last")
        _optional_output_qparams(self)


@dataclass(frozen=True)
class QMeanAttrs:
    """``qmean``: LiteRT's MEAN over H and W with qparams of its own (the global average pool a converter
    writes); ``keep_dims`` keeps the (1, 1) spatial dims — which also chooses LiteRT's optimized kernel
    (:meth:`minquant.target.LiteRTPath.mean_rule`)."""
    x_scale: float
    x_zp: int
    y_scale: float
    y_zp: int
    keep_dims: bool = True

    def __post_init__(self):
        _checked_qparams(self, "x", "y")
        _as_bools(self, "keep_dims")


@dataclass(frozen=True)
class QPadAttrs:
    """``qpad``: (top, bottom, left, right) rows and columns of ``value`` (a uint8 code: the zero point, so
    that they are real zeros) around an NCHW map; qparams unchanged."""
    pads: tuple
    value: int

    def __post_init__(self):
        pads = tuple(int(p) for p in self.pads)
        if len(pads) != 4 or min(pads) < 0:
            raise ValueError(f"pads must be four numbers ≥ 0 (top, bottom, left, right), got {self.pads!r}")
        object.__setattr__(self, "pads", pads)
        object.__setattr__(self, "value", _zp(self.value, "value"))


def _optional_output_qparams(a):
    """y_scale / y_zp: both None (the output keeps the input's qparams) or both set."""
    if (a.y_scale is None) != (a.y_zp is None):
        raise ValueError("y_scale and y_zp must be given together")
    if a.y_scale is not None:
        _checked_qparams(a, "y")


@dataclass(frozen=True)
class QClampAttrs:
    """``qclamp``: codes clamped to [lo, hi], qparams unchanged. ReLU is ``lo = z`` (real 0), ReLU6 adds
    ``hi = q(6)``; ``activation`` names it."""
    lo: int
    hi: int
    activation: str = ""

    def __post_init__(self):
        lo, hi = _clamp((self.lo, self.hi))
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "activation", str(self.activation))


@dataclass(frozen=True)
class DynamicLinearAttrs:
    """``dynamic_linear``: per-channel weights?, reduce_range of the run-time activation qparams, fused ReLU."""
    per_channel: bool = True
    reduce_range: bool = True
    relu: bool = False

    def __post_init__(self):
        for f in ("per_channel", "reduce_range", "relu"):
            object.__setattr__(self, f, bool(getattr(self, f)))


@dataclass(frozen=True)
class DynamicConv2dAttrs:
    """``dynamic_conv2d``: conv geometry + as :class:`DynamicLinearAttrs`."""
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    per_channel: bool = True
    reduce_range: bool = True
    relu: bool = False

    def __post_init__(self):
        geo = G.Conv2dAttrs(self.stride, self.padding, self.dilation, self.groups)
        for f in ("stride", "padding", "dilation", "groups"):
            object.__setattr__(self, f, getattr(geo, f))
        for f in ("per_channel", "reduce_range", "relu"):
            object.__setattr__(self, f, bool(getattr(self, f)))


_W = (("weight", 4), ("w_scale", 1), ("w_zp", 1))
_WL = (("weight", 2), ("w_scale", 1), ("w_zp", 1))
_B = (("bias", 1),)
_BQ = (("bias", 1), ("clamp_hi", 1))      # + the optional per-channel top code of the output stage

_SPECS = {
    "quantize": OpSpec(1, QuantizeAttrs, (), (), "float → uint8 codes: q = clamp(z + rne(x / s))"),
    "dequantize": OpSpec(1, QuantizeAttrs, (), (), "uint8 codes → float: r = s·(q − z)"),
    "qconv2d": OpSpec(1, QConv2dAttrs, _W, _BQ, "quantized conv2d, int8 weights, uint8 in/out"),
    "qlinear": OpSpec(1, QLinearAttrs, _WL, _BQ, "quantized linear, int8 weights, uint8 in/out"),
    "qconv2d_add": OpSpec(2, QConv2dAddAttrs, _W, _B, "quantized conv2d + residual codes (oneDNN sum post-op)"),
    "qlinear_float": OpSpec(1, QLinearFloatAttrs, _WL, _B, "quantized linear, uint8 in, float32 out"),
    "qadd": OpSpec(2, QAddAttrs, (), (), "quantized residual add"),
    "qcat": OpSpec(None, QCatAttrs, (), (), "quantized concatenation (requantize to one scale)"),
    "qmul": OpSpec(2, QMulAttrs, (), (), "quantized product (broadcasting)"),
    "qhardswish": OpSpec(1, QActivationAttrs, (), (), "quantized hardswish (lookup table)"),
    "qhardsigmoid": OpSpec(1, QActivationAttrs, (), (), "quantized hardsigmoid (lookup table)"),
    "qmax_pool2d": OpSpec(1, G.MaxPool2dAttrs, (), (), "max pooling on codes"),
    "qavg_pool2d": OpSpec(1, QAvgPool2dAttrs, (), (), "quantized average pooling"),
    "qadaptive_avg_pool2d": OpSpec(1, QAdaptiveAvgPool2dAttrs, (), (), "quantized adaptive average pooling"),
    "qmean": OpSpec(1, QMeanAttrs, (), (), "LiteRT's MEAN over H and W (qparams of its own)"),
    "qpad": OpSpec(1, QPadAttrs, (), (), "pad H and W with one code (LiteRT's PAD)"),
    "qclamp": OpSpec(1, QClampAttrs, (), (("hi_channels", 1),), "clamp codes (standalone ReLU / ReLU6)"),
    "qflatten": OpSpec(1, G.FlattenAttrs, (), (), "flatten codes"),
    "qreshape": OpSpec(1, G.ReshapeAttrs, (), (), "reshape codes"),
    "dynamic_linear": OpSpec(1, DynamicLinearAttrs, _WL, _B, "float in/out, int8 weights, run-time qparams"),
    "dynamic_conv2d": OpSpec(1, DynamicConv2dAttrs, _W, _B, "float in/out, int8 weights, run-time qparams"),
}
for _name, _spec in _SPECS.items():
    if _name not in OPS:
        register_op(_name, _spec)

#: ops whose output is uint8 codes
CODE_OPS = frozenset({"quantize", "qconv2d", "qlinear", "qadd", "qcat", "qmax_pool2d", "qavg_pool2d",
                      "qadaptive_avg_pool2d", "qclamp", "qflatten", "qreshape", "qmul", "qhardswish",
                      "qhardsigmoid", "qconv2d_add", "qmean", "qpad"})
#: every op this module adds
QUANTIZED_OPS = frozenset(_SPECS)
#: ops that hold int8 weights
WEIGHT_OPS = frozenset({"qconv2d", "qlinear", "dynamic_linear", "dynamic_conv2d", "qconv2d_add", "qlinear_float"})

ATTRS_CLASSES = {c.__name__: c for c in (
    QuantizeAttrs, QConv2dAttrs, QLinearAttrs, QAddAttrs, QCatAttrs, QAvgPool2dAttrs, QAdaptiveAvgPool2dAttrs,
    QClampAttrs, DynamicLinearAttrs, DynamicConv2dAttrs, G.Conv2dAttrs, G.BatchNormAttrs, G.AvgPool2dAttrs,
    G.MaxPool2dAttrs, G.AdaptiveAvgPool2dAttrs, G.CatAttrs, G.FlattenAttrs, G.ReshapeAttrs, G.ClipAttrs,
    QMulAttrs, QActivationAttrs, QConv2dAddAttrs, QLinearFloatAttrs, QMeanAttrs, QPadAttrs)}


def attrs_to_json(attrs):
    """A node's attrs as a JSON-ready dict ``{"class": name, field: value...}`` (tuples become lists)."""
    if attrs is None:
        return None
    name = type(attrs).__name__
    if ATTRS_CLASSES.get(name) is not type(attrs):
        raise ValueError(f"attrs of type {name} cannot be saved (not one of minquant's attribute classes)")
    d = {"class": name}
    for f in dataclasses.fields(attrs):
        v = getattr(attrs, f.name)
        d[f.name] = list(v) if isinstance(v, tuple) else v
    return d


def attrs_from_json(d):
    """Inverse of :func:`attrs_to_json` (the dataclass re-validates and re-normalises every field)."""
    if d is None:
        return None
    if not isinstance(d, dict) or d.get("class") not in ATTRS_CLASSES:
        raise ValueError(f"unknown attribute class in model file: {d!r:.80}")
    cls = ATTRS_CLASSES[d["class"]]
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k != "class"}
    names = {f.name for f in dataclasses.fields(cls)}
    if set(kwargs) - names:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(set(kwargs) - names)} in model file")
    return cls(**kwargs)


def value_qparams(graph) -> dict[str, tuple[float, int]]:
    """(scale, zero point) of every uint8 value of a quantized graph, by value name.

    Produced by ``quantize``/``qconv2d``/``qlinear``/``qadd``/``qcat``/``qmul``/``qhardswish``/``qhardsigmoid``/
    ``qmean`` (their own output qparams); ops that only move or select codes (pools, clamp, flatten, reshape) pass
    their input's on."""
    qp: dict[str, tuple[float, int]] = {}
    for n in graph.nodes:
        a = n.attrs
        if n.op == "quantize":
            qp[n.name] = (a.scale, a.zero_point)
        elif n.op in ("qconv2d", "qlinear", "qcat", "qconv2d_add", "w4a8_conv2d", "w4a8_linear"):
            qp[n.name] = (a.y_scale, a.y_zp)
        elif n.op in ("qadd", "qmul", "qhardswish", "qhardsigmoid", "qmean"):
            qp[n.name] = (a.y_scale, a.y_zp)
        elif n.op in ("qavg_pool2d", "qadaptive_avg_pool2d") and getattr(a, "y_scale", None) is not None:
            qp[n.name] = (a.y_scale, a.y_zp)
        elif n.op in ("qmax_pool2d", "qavg_pool2d", "qadaptive_avg_pool2d", "qclamp", "qflatten", "qreshape", "qpad"):
            if n.inputs[0] not in qp:
                raise ValueError(f"node {n.name!r} ({n.op}) reads {n.inputs[0]!r}, which is not a uint8 value")
            qp[n.name] = qp[n.inputs[0]]
    return qp
