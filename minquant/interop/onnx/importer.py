"""Import an ONNX model into minquant: float models → a :class:`~minquant.graph.Graph`, quantized models →
a :class:`~minquant.quantized.QuantizedModel` whose integer kernels reproduce ONNX Runtime bit for bit.

    graph = from_onnx("model.onnx")              # float model
    y = minquant.run(graph, x)                   # ≈ onnxruntime (max |Δ| ≤ 1e-4 on logits)
    qm = from_onnx("model_int8.onnx")            # QDQ / QOperator / quantize_dynamic output
    y = qm(x)                                    # == onnxruntime, bit for bit (target="onnxruntime")

**Quantized models: build what ONNX Runtime runs.** A QDQ file (``QuantizeLinear`` / ``DequantizeLinear``
around float ops, what ``onnxruntime.quantization.quantize_static`` writes by default) is *not* run as
written: ORT's graph optimizer first fuses every ``DQ → op → Q`` group into one integer operator
(``QLinearConv``, ``QGemm``...). A group it does not fuse runs in float between the DQ and the Q, so the
same file gives different numbers depending on which groups fuse. :func:`fuse_qdq` reproduces the rules of
ORT's ``QDQSelectorActionTransformer`` (ORT 1.32, checked by dumping ``SessionOptions
.optimized_model_filepath``):

* ``Relu``/``Clip`` → ``Q`` whose codes cannot leave the clip range is deleted first (ORT's
  ``ReluQuantFusion``/``ClipQuantFusion``: ReLU when z = 0; Clip when s·(0 − z) ≥ lo − ε and
  s·(255 − z) ≤ hi + ε, float32, ε = FLT_EPSILON); ``quantize_static`` itself already drops such
  activations and gives the producer the activation's qparams;
* ``DQ(x), DQ(w), [DQ(b int32)] → Conv → Q`` → ``QLinearConv``; ``DQ, DQ, [DQ(b)] → Gemm → Q`` → ``QGemm``;
  ``DQ, DQ → MatMul → Q`` → ``QLinearMatMul``; ``DQ, DQ → Add → Q`` → ``QLinearAdd``;
  ``DQ → AveragePool / GlobalAveragePool → Q`` → ``QLinearAveragePool`` / ``QLinearGlobalAveragePool``;
  ``DQ… → Concat → Q`` → ``QLinearConcat`` — only when *every* input comes from a DQ and the op's only reader
  is the Q (a ``Relu``/``Clip`` made redundant by that Q may sit in between);
* ``DQ → MaxPool / Flatten / Reshape → Q`` with the same (scale, zero point) on both sides: DQ and Q are
  dropped and the op moves codes (its output keeps the input's qparams).

A QOperator file already contains those operators. Every integer operator then becomes a minquant node
(kernels under ``target="onnxruntime"``, minquant/target.py; steps of docs/quantization.md):

=============================  ==========================  =====================================================
ONNX op (after fusion)         minquant op                 kernel · the arithmetic facts that matter
=============================  ==========================  =====================================================
QuantizeLinear (per tensor)    ``quantize``                :func:`~minquant.affine.quantize`, rule 'onnxruntime':
                                                           ``clamp(rne(x / s) + z)`` — a division (steps 3, 6a)
DequantizeLinear               ``dequantize``              ``f32(s)·f32(q − z)`` (step 1)
QLinearConv                    ``qconv2d``                 :class:`~minquant.kernels.QConv2d`: u8×s8 products in
                                                           (kh, kw, c) pairs with int16 saturation on AVX2 without
                                                           VNNI, depthwise exact (steps 4, 8, 9); the file's int32
                                                           bias (step 5, :func:`bias_param`);
                                                           ``rne(f32(f32(acc + b)·f32(f32(s_x·s_w)/s_y))) + z_y``
                                                           (steps 6b, 7)
QGemm / QLinearMatMul          ``qlinear``                 :class:`~minquant.kernels.QLinear`, same arithmetic
                                                           (QLinearMatMul: no bias, weight = Bᵀ)
QLinearAdd                     ``qadd``                    :func:`~minquant.kernels.add.qadd`: float32 FMAs,
                                                           z_y added before rounding (steps 6c, 10)
QLinearGlobalAveragePool       ``qadaptive_avg_pool2d``    exact integer sum, then
                               (1×1, own y qparams)        ``rne(f32(acc)·f32(s_x/f32(s_y·f32(H·W)))) + z_y``
QLinearAveragePool             ``qavg_pool2d``             :func:`~minquant.kernels.pool.qavg_pool2d_onnxruntime`:
                               (own y qparams)             float32 — dequantize, sum row-major, ÷ count, then
                                                           ``rne(f32(f32(y/s_y) + z_y))``: z_y *before* rounding,
                                                           which moves ties (step 7 adds it after)
QLinearConcat                  ``qcat``                    equal qparams: codes copied; else dequantize →
                                                           quantize 'onnxruntime' (steps 1, 3)
MaxPool / Flatten / Reshape    ``qmax_pool2d`` /           codes move unchanged (max commutes with step 1)
on codes                       ``qflatten`` / ``qreshape``
DynamicQuantizeLinear →        ``dynamic_conv2d``          run-time uint8 qparams from min/max (with 0) in
ConvInteger → Cast → Mul →                                 float32, quantize by division, *exact* int32
Mul(s_x, s_w) → [Add(b)]                                   accumulation (ConvInteger does not saturate pairs),
                                                           ``f32(f32(acc)·f32(s_x·s_w)) + b`` (steps 3, 4, 10)
DynamicQuantizeLinear →        ``dynamic_linear``          the same with MLAS's u8×s8 GEMM (pairs saturate, as
MatMulInteger → … (ORT:                                    for QLinearMatMul; step 8)
DynamicQuantizeMatMul)
a float op ORT leaves          the float op                runs in float between ``dequantize`` and ``quantize``
between DQ and Q                                           (see below)
=============================  ==========================  =====================================================

Float ops inside quantized models must round as ORT's CPU kernels do. Relu, Clip, MaxPool, Add, Mul,
Flatten, Reshape, Concat are exact, and AveragePool sums row-major and divides as minquant does (measured).
Two are built in ORT's form: HardSigmoid as ``clip(f32(f32(x·α) + β), 0, 1)`` (an affine ``batch_norm`` +
``clip``) and HardSwish as ``x · HardSigmoid(x)`` (α = 1/6, β = ½), which is how ONNX defines it and ORT runs
it (minquant's one-op formulas differ in the last bit on ~30 % of values). A global average pool sums in
MLAS's order under 'onnxruntime' (:func:`~minquant.quantized.executor.global_avg_pool_mlas`) — it decides the
run-time qparams of a following DynamicQuantizeLinear. Not reproduced: a float Conv/Gemm that ORT does not
fuse (MLAS's float GEMM), and a pool that ORT's ``NchwcTransformer`` rewrites into its blocked kernel (one
reading the graph input directly or a float Conv's output).

**Clamps on codes** (how minquant's exporter writes a fused ReLU/ReLU6 whose range is not the codes', the
per-channel ReLU6 top after cross-layer equalization, a ``qclamp``): a uint8 ``Clip`` / ``Min`` / ``Max``
with constant uint8 bounds (QOperator), or ``DQ(s, z) → Clip / Min / Max / Relu → Q(s, z)`` with the same
qparams on both sides (QDQ; :func:`fuse_code_clamps` turns it into the uint8 form exactly: each float bound t
becomes the code Q(t), and ``Q(min(D(q), t)) = min(q, Q(t))``). The clamp then joins the node it reads when it
is that node's only reader: a ``qconv2d`` / ``qlinear`` output stage (``clamp``; a per-channel top becomes
``clamp_hi``), a ``qclamp``, a ``qadd`` (Clip to [z_y, 255] is its fused ReLU); else it is a ``qclamp``.
A plain ``Concat`` of codes with equal qparams is a ``qcat``; a Relu after a ``dynamic_*`` node is its fused
ReLU. So a minquant model read back from its own export has the same integer layers.

Each quantized value's ``float_names`` entry is the float tensor its QuantizeLinear read, so
``minquant.quantized.compare(from_onnx(fp32), from_onnx(int8), x)`` lines up the two imports layer by layer.

Float ops (both paths): Conv → ``conv2d``; Gemm, MatMul with a constant 2-D weight (+ a following Add of
a constant bias) → ``linear``; BatchNormalization → ``batch_norm``; Relu → ``relu``; Clip → ``relu6`` (0, 6),
``relu`` (0, ∞), ``identity`` (−∞, ∞) or ``clip``; Add / Mul of two activations → ``add`` / ``mul``, of an
activation and a per-channel or scalar constant → ``batch_norm`` with mean 0, var 1, eps 0 (which computes
exactly ``x·a + b``); GlobalAveragePool, and an AveragePool over the whole image → ``adaptive_avg_pool2d``
(1, 1); AveragePool / MaxPool → ``avg_pool2d`` / ``max_pool2d``; Flatten (axis 1) → ``flatten``; Reshape
(batch kept) → ``reshape``; Concat (axis ≥ 1) → ``cat``; HardSigmoid (α = 1/6, β = ½ — torch's) →
``hardsigmoid``, other α, β → ``batch_norm`` + ``clip``; HardSwish → ``hardswish``; Identity / Dropout → no
node; Min / Max with a scalar constant → ``clip``, Relu → Min with one value per channel → ``relu_clip``.
The float32 sequences minquant's exporter writes for ops ONNX has no exact form of come back as those ops
(:func:`fuse_float_patterns`): Add(3) → Clip(0, 6) → Mul(x) → Div(6) → ``hardswish``, Add(3) → Clip(0, 6) →
Div(6) → ``hardsigmoid``, Cast(double) → Reshape → ReduceSum → Div → Div → Cast(float) →
``adaptive_avg_pool2d``; Mul then Add of per-channel constants (a float ``batch_norm``) → one ``batch_norm``.
2-D NCHW only; symmetric padding only; the batch dimension may be symbolic, all others must be fixed.
Quantized models need uint8 activations and int8 weights (quantize_static's defaults); Sigmoid has no
minquant op.

Anything else raises ``ValueError`` naming every unsupported op type and node; a file that is not ONNX,
truncated or corrupt raises ``ValueError`` too. Nothing in the file is executed: tensors are read with
``onnx.numpy_helper``, external data files are refused.

This module imports ``onnx`` (inside the functions that need it); the graphs it builds hold only NumPy.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...graph import (AdaptiveAvgPool2dAttrs, AvgPool2dAttrs, BatchNormAttrs, CatAttrs, ClipAttrs, Conv2dAttrs,
                      FlattenAttrs, Graph, MaxPool2dAttrs, Node, ReshapeAttrs, unique_name)
from ...im2col import conv_out_size
from ...float_ops import pool_out_size

__all__ = ["from_onnx", "load_onnx", "fuse_qdq", "fuse_code_clamps", "fuse_float_patterns", "FLOAT_OPS",
           "QUANTIZED_OPS"]

_F32 = np.float32
_EPS32 = float(np.finfo(np.float32).eps)


# ----------------------------------------------------------------------------------------------------------
# Reading the file
# ----------------------------------------------------------------------------------------------------------

@dataclass
class ONode:
    """One ONNX node, with its attributes decoded to Python values (ints, floats, strings, lists, arrays)."""
    op: str
    name: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    domain: str = ""

    def where(self) -> str:
        return f"{self.op} (node {self.name!r})"


def _tensor(t, where: str) -> np.ndarray:
    from onnx import TensorProto, numpy_helper
    if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
        raise ValueError(f"{where}: tensor {t.name!r} is stored in an external data file; from_onnx reads "
                         "self-contained .onnx files only")
    try:
        return np.array(numpy_helper.to_array(t))
    except Exception as e:
        raise ValueError(f"{where}: tensor {t.name!r} cannot be read ({type(e).__name__}: {e}); the file is "
                         "corrupt or truncated") from None


def _attr_value(a, where: str):
    from onnx import helper
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if hasattr(v, "dims") and hasattr(v, "data_type"):       # a TensorProto (Constant's value)
        return _tensor(v, where)
    if isinstance(v, list):
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
    return v


def load_onnx(model):
    """An ``onnx.ModelProto`` from a path, raw bytes or a ModelProto — checked, never executed.

    Raises ValueError for a missing file, bytes that are not an ONNX protobuf (or are truncated), a model
    that fails ``onnx.checker`` or that needs external data files."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        proto, what = model, "the ModelProto"
    else:
        if isinstance(model, (bytes, bytearray)):
            data, what = bytes(model), "the given bytes"
        elif isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not path.is_file():
                raise ValueError(f"ONNX file {str(path)!r} does not exist")
            data, what = path.read_bytes(), f"{str(path)!r}"
        else:
            raise ValueError(f"from_onnx needs a path, bytes or an onnx.ModelProto, got {type(model).__name__}")
        if not data:
            raise ValueError(f"{what} is empty, not an ONNX model")
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except Exception as e:
            raise ValueError(f"{what} is not a valid ONNX model (protobuf parse error: {e}); the file is "
                             "corrupt, truncated or not ONNX") from None
    if proto.ir_version <= 0 or not proto.opset_import or not proto.HasField("graph"):
        raise ValueError(f"{what} is not a valid ONNX model (no IR version, opset or graph); the file is "
                         "corrupt, truncated or not ONNX")
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
            raise ValueError(f"{what}: initializer {t.name!r} is stored in an external data file; from_onnx "
                             "reads self-contained .onnx files only")
    try:
        onnx.checker.check_model(proto)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{what} is not a valid ONNX model ({type(e).__name__}: {msg}); the file is corrupt, "
                         "truncated or not ONNX") from None
    return proto


class OnnxGraph:
    """The parts of an ONNX graph the importer needs: ``nodes`` (:class:`ONode`, Constant nodes folded
    into ``consts``), ``consts`` (initializers and constants by name, NumPy), ``inputs`` (name → example
    shape, batch 1 where symbolic), ``outputs`` (names), ``opset`` (domain → version)."""

    def __init__(self, proto):
        g = proto.graph
        self.name = g.name or "onnx_model"
        self.opset = {o.domain or "": o.version for o in proto.opset_import}
        self.consts: dict[str, np.ndarray] = {t.name: _tensor(t, "initializer") for t in g.initializer}
        self.nodes: list[ONode] = []
        self.inputs: dict[str, tuple] = {}
        for vi in g.input:
            if vi.name in self.consts:
                continue
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type") or tt.elem_type != 1:
                raise ValueError(f"graph input {vi.name!r} must be a float32 tensor (minquant models take float "
                                 "input)")
            dims = []
            for i, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(int(d.dim_value))
                elif i == 0:
                    dims.append(1)                      # symbolic batch
                else:
                    raise ValueError(f"graph input {vi.name!r} has a symbolic size in dimension {i}; only the "
                                     "batch (dimension 0) may be symbolic")
            if len(dims) < 2:
                raise ValueError(f"graph input {vi.name!r} needs a batch dimension and at least one more, got "
                                 f"rank {len(dims)}")
            self.inputs[vi.name] = tuple(dims)
        if not self.inputs:
            raise ValueError("the ONNX graph has no (non-initializer) input")
        self.outputs = [vi.name for vi in g.output]
        for n in g.node:
            where = f"{n.op_type} (node {n.name!r})"
            attrs = {a.name: _attr_value(a, where) for a in n.attribute}
            if n.op_type == "Constant" and (n.domain or "") == "":
                if "value" not in attrs:
                    raise ValueError(f"{where}: only Constant nodes with a tensor 'value' are supported")
                self.consts[n.output[0]] = np.asarray(attrs["value"])
                continue
            self.nodes.append(ONode(n.op_type, n.name or n.output[0], list(n.input), list(n.output), attrs,
                                    n.domain or ""))


# ----------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------

def _fail(n: ONode, problem: str):
    raise ValueError(f"cannot import ONNX {n.where()}: {problem}")


def _pads2d(n: ONode, in_hw, kernel, strides, dilations=(1, 1)):
    """Symmetric (ph, pw) from ONNX ``pads`` [top, left, bottom, right] / ``auto_pad`` (ValueError if
    asymmetric: minquant's ops pad both sides equally)."""
    auto = n.attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(n.attrs.get("pads", [0, 0, 0, 0]))
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0, 0, 0, 0]
        for i in range(2):
            out = -(-in_hw[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - in_hw[i])
            small, big = total // 2, total - total // 2
            pads[i], pads[i + 2] = (small, big) if auto == "SAME_UPPER" else (big, small)
    else:
        _fail(n, f"unknown auto_pad {auto!r}")
    if len(pads) != 4:
        _fail(n, f"only 2-D (NCHW) operators are supported, got pads {pads}")
    if pads[0] != pads[2] or pads[1] != pads[3]:
        _fail(n, f"asymmetric padding {pads} (top, left, bottom, right) is not supported")
    return int(pads[0]), int(pads[1])


def _ints2(n: ONode, key: str, default):
    v = n.attrs.get(key, default)
    v = [int(t) for t in v]
    if len(v) != 2:
        _fail(n, f"only 2-D operators are supported ({key} = {v})")
    return tuple(v)


# ----------------------------------------------------------------------------------------------------------
# QDQ → what ONNX Runtime runs
# ----------------------------------------------------------------------------------------------------------

def _const_scalar(consts, name):
    if name not in consts:
        return None
    v = np.asarray(consts[name])
    return v.reshape(()) if v.size == 1 else None


def _q_range(consts, q: ONode):
    """(lower, upper) real values a QuantizeLinear can represent (float32, as ORT computes them), or None."""
    s = _const_scalar(consts, q.inputs[1])
    zname = q.inputs[2] if len(q.inputs) > 2 else ""
    z = _const_scalar(consts, zname) if zname else np.uint8(0)
    if s is None or z is None or s.dtype != np.float32:
        return None
    lo, hi = (0, 255) if z.dtype == np.uint8 else (-128, 127)
    return float(_F32(s) * _F32(lo - int(z))), float(_F32(s) * _F32(hi - int(z))), int(z), z.dtype


def _clip_bounds(consts, n: ONode):
    """(lo, hi) of a Clip / Relu node as floats (±inf when absent), or None if not constant."""
    if n.op == "Relu":
        return 0.0, math.inf
    if "min" in n.attrs or "max" in n.attrs:                      # opset < 11
        return float(n.attrs.get("min", -math.inf)), float(n.attrs.get("max", math.inf))
    out = []
    for i, default in ((1, -math.inf), (2, math.inf)):
        name = n.inputs[i] if len(n.inputs) > i else ""
        if not name:
            out.append(default)
        elif name in consts and np.asarray(consts[name]).size == 1:
            out.append(float(np.asarray(consts[name]).reshape(())))
        else:
            return None
    return tuple(out)


def _clip_redundant(consts, act: ONode, q: ONode) -> bool:
    """ORT's ``ReluQuantFusion`` / ``ClipQuantFusion`` test: the Q's codes already cover the clip."""
    r = _q_range(consts, q)
    if r is None:
        return False
    lower, upper, z, dtype = r
    if act.op == "Relu":
        return z == (0 if dtype == np.uint8 else -128)
    b = _clip_bounds(consts, act)
    if b is None:
        return False
    lo, hi = b
    return not (_EPS32 < float(_F32(lo) - _F32(lower)) or _EPS32 < float(_F32(upper) - _F32(hi)))


class _Uses:
    """Producer / consumer maps of a node list."""

    def __init__(self, nodes, outputs):
        self.producer = {o: n for n in nodes for o in n.outputs if o}
        self.consumers = defaultdict(list)
        for n in nodes:
            for v in n.inputs:
                if v:
                    self.consumers[v].append(n)
        self.outputs = set(outputs)

    def only_consumer(self, value):
        c = self.consumers.get(value, [])
        if len(c) != 1 or value in self.outputs:
            return None
        return c[0]


def _is_dq(n):
    return n is not None and n.op == "DequantizeLinear" and n.domain in ("", "com.microsoft")


def _is_q(n):
    return n is not None and n.op == "QuantizeLinear" and n.domain in ("", "com.microsoft")


def _qp_inputs(n: ONode):
    """(value, scale name, zero-point name) of a Q or DQ node ('' for an omitted zero point)."""
    return n.inputs[0], n.inputs[1], (n.inputs[2] if len(n.inputs) > 2 else "")


def _same_qparams(consts, a: ONode, b: ONode) -> bool:
    sa, sb = _const_scalar(consts, a.inputs[1]), _const_scalar(consts, b.inputs[1])
    za = _const_scalar(consts, a.inputs[2]) if len(a.inputs) > 2 and a.inputs[2] else np.uint8(0)
    zb = _const_scalar(consts, b.inputs[2]) if len(b.inputs) > 2 and b.inputs[2] else np.uint8(0)
    if sa is None or sb is None or za is None or zb is None:
        return False
    return float(sa) == float(sb) and float(sa) > 0 and int(za) == int(zb) and za.dtype == zb.dtype


def _code_dtype(consts, qdq: ONode):
    """dtype of the codes a Q produces / a DQ reads: the zero point's (uint8 when omitted)."""
    if len(qdq.inputs) > 2 and qdq.inputs[2]:
        z = consts.get(qdq.inputs[2])
        return None if z is None else np.asarray(z).dtype
    return np.dtype(np.uint8)


_UNARY_QLINEAR = {"AveragePool": "QLinearAveragePool", "GlobalAveragePool": "QLinearGlobalAveragePool",
                  "LeakyRelu": "QLinearLeakyRelu", "Sigmoid": "QLinearSigmoid", "Softmax": "QLinearSoftmax"}
_BINARY_QLINEAR = {"Add": "QLinearAdd", "Mul": "QLinearMul"}
_DROP_QDQ = {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Expand", "Gather", "Slice",
             "Tile", "GatherElements", "Resize"}


def fuse_qdq(graph: OnnxGraph) -> list:
    """The node list ONNX Runtime's optimizer makes of a QDQ graph (module docstring): fused groups
    become QOperator nodes (``QLinearConv``, ``QGemm``, ``QLinearMatMul``, ``QLinearAdd``, ...); data-movement
    ops between equal DQ/Q pairs run on codes; everything else is left as it is. Dead nodes are removed."""
    consts = graph.consts
    nodes = [ONode(n.op, n.name, list(n.inputs), list(n.outputs), dict(n.attrs), n.domain) for n in graph.nodes]

    # 0. inference no-ops (ORT's EliminateIdentity / EliminateDropout); one that writes a graph output stays
    alias = {}
    kept = []
    for n in nodes:
        n.inputs = [alias.get(v, v) for v in n.inputs]
        training = n.op == "Dropout" and len(n.inputs) > 2 and n.inputs[2]       # left for the builder to refuse
        if n.op in ("Identity", "Dropout") and n.domain == "" and n.outputs[0] not in graph.outputs \
                and not training:
            alias[n.outputs[0]] = n.inputs[0]
            continue
        kept.append(n)
    nodes = kept
    outputs = list(graph.outputs)

    # 1. Relu / Clip → Q that the Q makes redundant (ReluQuantFusion, ClipQuantFusion)
    uses = _Uses(nodes, outputs)
    drop = set()
    for n in nodes:
        if n.op in ("Relu", "Clip") and n.domain == "":
            q = uses.only_consumer(n.outputs[0])
            if _is_q(q) and _clip_redundant(consts, n, q):
                q.inputs[0] = n.inputs[0]
                drop.add(id(n))
    nodes = [n for n in nodes if id(n) not in drop]

    # 2. selectors and actions
    uses = _Uses(nodes, outputs)
    replace: dict[int, ONode] = {}
    removed: set[int] = set()

    def dq_of(value):
        p = uses.producer.get(value)
        return p if _is_dq(p) else None

    def q_after(n):
        """(Q, redundant Relu/Clip or None, blocked) for n's output. ORT's selector takes the Q when it is the
        only reader, or the only reader of a Relu/Clip that is n's only reader and that the Q makes
        redundant; a Relu/Clip that is not redundant, or a Q beside other readers, blocks the fusion."""
        readers = uses.consumers.get(n.outputs[0], [])
        nxt = uses.only_consumer(n.outputs[0])
        if nxt is None:
            return None, None, any(_is_q(r) for r in readers) or n.outputs[0] in uses.outputs
        if _is_q(nxt):
            return nxt, None, False
        if nxt.op in ("Relu", "Clip") and nxt.domain == "":
            q = uses.only_consumer(nxt.outputs[0])
            if _is_q(q) and _clip_redundant(consts, nxt, q):
                return q, nxt, False
            return None, None, True
        return None, None, False

    def dqs(n, count=None):
        ins = [v for v in n.inputs if v]
        if count is not None:
            ins = ins[:count] if len(ins) >= count else None
        if not ins:
            return None
        d = [dq_of(v) for v in ins]
        return d if all(x is not None for x in d) else None

    for n in nodes:
        if n.domain != "" or id(n) in removed:
            continue
        op = n.op
        if len(n.outputs) != 1:
            continue
        q, clip, blocked = q_after(n)
        if blocked:
            continue
        new = None
        if op == "Conv" and q is not None:
            d = dqs(n)
            if d and len(d) == len([v for v in n.inputs if v]) and len(d) >= 2:
                dt_x, dt_w, dt_y = _code_dtype(consts, d[0]), _code_dtype(consts, d[1]), _code_dtype(consts, q)
                ok = dt_x == dt_y and (dt_x != np.int8 or dt_w == np.int8)
                if len(d) == 3:
                    b = consts.get(d[2].inputs[0])
                    ok = ok and b is not None and b.dtype == np.int32
                if ok:
                    new = ONode("QLinearConv", n.name, [*_qp_inputs(d[0]), *_qp_inputs(d[1]), q.inputs[1],
                                                        q.inputs[2] if len(q.inputs) > 2 else "",
                                                        d[2].inputs[0] if len(d) == 3 else ""],
                                [q.outputs[0]], dict(n.attrs))
        elif op == "Gemm":
            d = dqs(n)
            if d and len(d) == len([v for v in n.inputs if v]) and len(d) >= 2:
                ok = True
                if len(d) == 3:
                    b = consts.get(d[2].inputs[0])
                    ok = float(n.attrs.get("beta", 1.0)) == 1.0 and b is not None and b.dtype == np.int32
                if q is not None and _code_dtype(consts, q) != _code_dtype(consts, d[0]):
                    ok = False
                if ok:                                   # without a Q: QGemm with float output
                    ins = [*_qp_inputs(d[0]), *_qp_inputs(d[1]), d[2].inputs[0] if len(d) == 3 else ""]
                    if q is not None:
                        ins += [q.inputs[1], q.inputs[2] if len(q.inputs) > 2 else ""]
                    new = ONode("QGemm", n.name, ins, [q.outputs[0] if q is not None else n.outputs[0]],
                                dict(n.attrs), "com.microsoft")
        elif op == "MatMul":
            d = dqs(n)
            if d and len(d) == 2:
                if q is not None and _code_dtype(consts, q) == _code_dtype(consts, d[0]):
                    new = ONode("QLinearMatMul", n.name, [*_qp_inputs(d[0]), *_qp_inputs(d[1]), q.inputs[1],
                                                          q.inputs[2] if len(q.inputs) > 2 else ""],
                                [q.outputs[0]], {})
                elif q is None:
                    new = ONode("MatMulIntegerToFloat", n.name, [d[0].inputs[0], d[1].inputs[0]],
                                list(n.outputs), {}, "com.microsoft")
        elif op in _BINARY_QLINEAR and q is not None:
            d = dqs(n)
            if d and len(d) == 2 and len(set(_code_dtype(consts, x) for x in (*d, q))) == 1:
                new = ONode(_BINARY_QLINEAR[op], n.name, [*_qp_inputs(d[0]), *_qp_inputs(d[1]), q.inputs[1],
                                                          q.inputs[2] if len(q.inputs) > 2 else ""],
                            [q.outputs[0]], {}, "com.microsoft")
        elif op in _UNARY_QLINEAR and q is not None:
            d = dqs(n, 1)
            if d and _code_dtype(consts, d[0]) == _code_dtype(consts, q) and len([v for v in n.inputs if v]) == 1:
                new = ONode(_UNARY_QLINEAR[op], n.name, [*_qp_inputs(d[0]), q.inputs[1],
                                                         q.inputs[2] if len(q.inputs) > 2 else ""],
                            [q.outputs[0]], dict(n.attrs), "com.microsoft")
        elif op == "Concat" and q is not None:
            d = dqs(n)
            if d and len(d) == len([v for v in n.inputs if v]) and \
                    len(set(_code_dtype(consts, x) for x in (*d, q))) == 1:
                ins = [q.inputs[1], q.inputs[2] if len(q.inputs) > 2 else ""]
                for x in d:
                    ins += list(_qp_inputs(x))
                new = ONode("QLinearConcat", n.name, ins, [q.outputs[0]], dict(n.attrs), "com.microsoft")
        elif op in _DROP_QDQ and q is not None and clip is None:
            d = dq_of(n.inputs[0])
            if d is not None and _same_qparams(consts, d, q) and _code_dtype(consts, d) == _code_dtype(consts, q):
                new = ONode(op, n.name, [d.inputs[0], *n.inputs[1:]], [q.outputs[0]], dict(n.attrs))
        if new is not None:
            replace[id(n)] = new
            if q is not None:
                removed.add(id(q))
            if clip is not None:
                removed.add(id(clip))
    nodes = [replace.get(id(n), n) for n in nodes if id(n) not in removed]

    # 3. dead nodes (DQs whose readers were all fused)
    while True:
        uses = _Uses(nodes, outputs)
        live = [n for n in nodes if any(o in uses.consumers or o in uses.outputs for o in n.outputs if o)]
        if len(live) == len(nodes):
            break
        nodes = live
    return nodes


# ----------------------------------------------------------------------------------------------------------
# Constant folding and the dynamic-quantization patterns
# ----------------------------------------------------------------------------------------------------------

_FOLDABLE = {"Reshape", "Cast", "Squeeze", "Unsqueeze", "Transpose"}
_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 10: np.float16,
                11: np.float64}


def _fold(n: ONode, ins):
    """Evaluate a shape/type op on constant inputs (NumPy), or None if it cannot be folded."""
    a = ins[0]
    if n.op == "Cast":
        to = _ONNX_DTYPES.get(int(n.attrs.get("to", 0)))
        return None if to is None else a.astype(to)
    if n.op == "Reshape":
        shape = [int(d) for d in ins[1]]
        if not n.attrs.get("allowzero", 0):
            shape = [a.shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return a.reshape(shape)
    if n.op == "Transpose":
        return np.transpose(a, n.attrs.get("perm"))
    axes = n.attrs.get("axes")
    if axes is None and len(ins) > 1:
        axes = [int(t) for t in ins[1]]
    if n.op == "Squeeze":
        return np.squeeze(a, axis=None if axes is None else tuple(axes))
    if n.op == "Unsqueeze" and axes is not None:
        out = a
        for ax in sorted(int(t) % (a.ndim + len(axes)) for t in axes):
            out = np.expand_dims(out, ax)
        return out
    return None


def fold_constants(graph: OnnxGraph) -> None:
    """Replace Reshape / Cast / Squeeze / Unsqueeze / Transpose nodes whose inputs are all constants by
    their value (in ``graph.consts``). DequantizeLinear is *not* folded: ORT keeps it, and the QDQ
    fusion needs to see it."""
    kept = []
    for n in graph.nodes:
        ins = [v for v in n.inputs if v]
        if n.op in _FOLDABLE and n.domain == "" and ins and all(v in graph.consts for v in ins):
            try:
                val = _fold(n, [graph.consts[v] for v in n.inputs if v])
            except Exception:
                val = None
            if val is not None:
                graph.consts[n.outputs[0]] = np.asarray(val)
                continue
        kept.append(n)
    graph.nodes = kept


def fuse_dynamic(graph: OnnxGraph, nodes: list) -> list:
    """Recognise what ``quantize_dynamic`` writes and replace each group by one node:

    ``DynamicQuantizeLinear(x) → ConvInteger(x_q, w, z_x, z_w) → Cast(float) → Mul(·, Mul(s_x, s_w))
    [→ Add(b)]`` becomes ``_DynamicConv`` (ORT runs these nodes one by one: no fusion to mirror), and the
    same with ``MatMulInteger`` becomes ``DynamicQuantizeMatMul`` (what ORT's optimizer fuses it into).
    Groups whose intermediate values have other readers are left alone."""
    consts = graph.consts
    uses = _Uses(nodes, graph.outputs)
    replace, removed = {}, set()

    def single(v, op):
        n = uses.only_consumer(v)
        return n if n is not None and n.op == op and n.domain == "" else None

    for n in nodes:
        if n.op not in ("ConvInteger", "MatMulInteger") or n.domain != "":
            continue
        dql = uses.producer.get(n.inputs[0])
        if dql is None or dql.op != "DynamicQuantizeLinear" or n.inputs[0] != dql.outputs[0] or len(n.inputs) < 3 \
                or n.inputs[2] != dql.outputs[2]:
            continue
        w = n.inputs[1]
        wz = n.inputs[3] if len(n.inputs) > 3 else ""
        if w not in consts or (wz and wz not in consts):
            continue
        cast = single(n.outputs[0], "Cast")
        if cast is None or int(cast.attrs.get("to", 0)) != 1:
            continue
        mul = single(cast.outputs[0], "Mul")
        if mul is None:
            continue
        s_val = mul.inputs[1] if mul.inputs[0] == cast.outputs[0] else mul.inputs[0]
        smul = uses.producer.get(s_val)
        if smul is None or smul.op != "Mul" or dql.outputs[1] not in smul.inputs:
            continue
        ws = smul.inputs[1] if smul.inputs[0] == dql.outputs[1] else smul.inputs[0]
        if ws not in consts or len(uses.consumers.get(s_val, [])) != 1:
            continue
        last, bias = mul, ""
        add = single(mul.outputs[0], "Add")
        if add is not None:
            b = add.inputs[1] if add.inputs[0] == mul.outputs[0] else add.inputs[0]
            if b in consts:
                last, bias = add, b
        if n.op == "ConvInteger":
            new = ONode("_DynamicConv", n.name, [dql.inputs[0], w, wz, ws, bias], [last.outputs[0]], dict(n.attrs))
        else:
            new = ONode("DynamicQuantizeMatMul", n.name, [dql.inputs[0], w, ws, wz, bias], [last.outputs[0]], {},
                        "com.microsoft")
        replace[id(n)] = new
        removed.update({id(cast), id(mul), id(smul)} | ({id(add)} if bias else set()))
    return _live(graph, [replace.get(id(n), n) for n in nodes if id(n) not in removed])


def _live(graph: OnnxGraph, nodes: list) -> list:
    """``nodes`` without the dead ones (no reader, not a graph output), repeatedly."""
    while True:
        uses = _Uses(nodes, graph.outputs)
        live = [n for n in nodes if any(o in uses.consumers or o in uses.outputs for o in n.outputs if o)]
        if len(live) == len(nodes):
            return nodes
        nodes = live


def _new_const(graph: OnnxGraph, base: str, value) -> str:
    """Add ``value`` to ``graph.consts`` under a fresh name derived from ``base``; returns the name."""
    name = unique_name(base, graph.consts, "#")
    graph.consts[name] = np.asarray(value)
    return name


def fuse_code_clamps(graph: OnnxGraph, nodes: list, q_source: dict | None = None) -> list:
    """``DQ(s, z) → Clip / Min / Max / Relu (constant bounds) → Q(s, z)`` (the same uint8 qparams on both
    sides, the op's only reader the Q) becomes the op on the codes: ``Clip`` with uint8 bounds or ``Min`` /
    ``Max`` with a uint8 constant — what a QOperator file writes (minquant's exporter writes a clamp on
    codes either way). Not an ORT rewrite (ORT runs these three nodes in float) but an exact one: with
    ``Q(t) = clamp(rne(t / s) + z)`` (ORT's QuantizeLinear) and ``D(q) = s·(q − z)``, D is increasing and
    ``Q(D(q)) = q``, so ``Q(min(D(q), t)) = min(q, Q(t))`` for every code q (if D(q) ≤ t both sides are q,
    else both are Q(t) ≤ Q(D(q)) = q); likewise for max, and Clip is a max then a min. Each bound t becomes
    the code Q(t) (per element: a per-channel Min keeps its shape); an absent Clip bound stays 0 / 255.

    ``q_source`` (Q output → the float tensor it read) is updated: the clamped codes approximate what
    the unclamped codes approximated."""
    from ...affine import quantize
    consts = graph.consts
    uses = _Uses(nodes, graph.outputs)
    replace, removed = {}, set()
    for n in nodes:
        if n.domain != "" or n.op not in ("Clip", "Min", "Max", "Relu") or len(n.outputs) != 1:
            continue
        q = uses.only_consumer(n.outputs[0])
        if not _is_q(q):
            continue
        c = None
        if n.op in ("Min", "Max"):
            ins = [v for v in n.inputs if v]
            acts = [v for v in ins if v not in consts]
            if len(ins) != 2 or len(acts) != 1:
                continue
            x, c = acts[0], ins[1] if ins[0] == acts[0] else ins[0]
        else:
            x = n.inputs[0]
        dq = uses.producer.get(x)
        if not _is_dq(dq) or not _same_qparams(consts, dq, q) or _code_dtype(consts, q) != np.uint8:
            continue
        s = float(_const_scalar(consts, dq.inputs[1]))
        z = int(_const_scalar(consts, dq.inputs[2])) if len(dq.inputs) > 2 and dq.inputs[2] else 0

        def code(t):
            return quantize(np.asarray(t, np.float32), s, z, "uint8", target="onnxruntime")

        codes = dq.inputs[0]
        if n.op in ("Relu", "Clip"):
            bounds = _clip_bounds(consts, n)
            if bounds is None or bounds[0] > bounds[1] or any(math.isnan(t) for t in bounds):
                continue
            lo = np.uint8(0) if bounds[0] == -math.inf else code(bounds[0])
            hi = np.uint8(255) if bounds[1] == math.inf else code(bounds[1])
            ins = [codes, _new_const(graph, f"{n.outputs[0]}:lo_code", lo),
                   _new_const(graph, f"{n.outputs[0]}:hi_code", hi)]
            new = ONode("Clip", n.name, ins, [q.outputs[0]], {})
        else:
            t = np.asarray(consts[c])
            if t.dtype != np.float32 or not np.all(np.isfinite(t)) or (n.op == "Max" and t.size != 1):
                continue
            new = ONode(n.op, n.name, [codes, _new_const(graph, f"{n.outputs[0]}:codes", code(t))], [q.outputs[0]],
                        {})
        replace[id(n)] = new
        removed.add(id(q))
        if q_source is not None and codes in q_source:
            q_source[q.outputs[0]] = q_source[codes]
    return _live(graph, [replace.get(id(n), n) for n in nodes if id(n) not in removed])


def _scalar_const(consts, name, value) -> bool:
    """``name`` is a one-element float constant equal to ``value``."""
    if name not in consts:
        return False
    v = np.asarray(consts[name])
    return v.size == 1 and v.dtype.kind == "f" and float(v.reshape(())) == value


def fuse_float_patterns(graph: OnnxGraph, nodes: list) -> list:
    """Recognise the float sequences minquant's exporter writes for ops ONNX has no exact equivalent of,
    and turn each back into one node (each intermediate value must have the next node as only reader):

    * ``Add(x, 3) → Clip(0, 6) → Mul(x, ·) → Div(·, 6)`` → ``_HardSwish`` (minquant's ``hardswish``:
      ``x·relu6(x + 3)/6``, product first — the same float32 operations in the same order);
    * ``Add(x, 3) → Clip(0, 6) → Div(·, 6)`` → ``_HardSigmoid`` (``hardsigmoid``);
    * ``Cast(double) → Reshape(0, 0, oh, kh, ow, kw) → ReduceSum(axes 3, 5) → Div(kh) → Div(kw) →
      Cast(float)`` → ``_AdaptiveAvgPool`` (``adaptive_avg_pool2d`` to (oh, ow): each window summed in
      float64, divided by kh then by kw, rounded once to float32).

    Anything else is left as it is (and refused later if it stays unsupported)."""
    consts = graph.consts
    uses = _Uses(nodes, graph.outputs)
    replace, removed = {}, set()

    def only(v, op):
        c = uses.only_consumer(v)
        return c if c is not None and c.op == op and c.domain == "" and id(c) not in removed else None

    def other_input(n, v):
        ins = [t for t in n.inputs if t]
        if len(ins) != 2 or v not in ins:
            return None
        return ins[1] if ins[0] == v else ins[0]

    for n in nodes:
        if n.domain != "" or id(n) in removed:
            continue
        if n.op == "Add" and len(n.inputs) == 2:
            k = [i for i, v in enumerate(n.inputs) if _scalar_const(consts, v, 3.0)]
            if len(k) != 1 or n.inputs[1 - k[0]] in consts:
                continue
            x = n.inputs[1 - k[0]]
            clip = only(n.outputs[0], "Clip")
            if clip is None or clip.inputs[0] != n.outputs[0] or _clip_bounds(consts, clip) != (0.0, 6.0):
                continue
            nxt = uses.only_consumer(clip.outputs[0])
            chain, op = [n, clip], None
            if nxt is not None and nxt.op == "Mul" and nxt.domain == "" and other_input(nxt, clip.outputs[0]) == x:
                div = only(nxt.outputs[0], "Div")
                chain, op = chain + [nxt, div], "_HardSwish"
            else:
                div = only(clip.outputs[0], "Div")
                chain, op = chain + [div], "_HardSigmoid"
            if div is None or div.inputs[0] != chain[-2].outputs[0] or not _scalar_const(consts, div.inputs[1], 6.0):
                continue
            replace[id(n)] = ONode(op, div.name, [x], [div.outputs[0]], {})
            removed.update(id(m) for m in chain[1:])
        elif n.op == "Cast" and int(n.attrs.get("to", 0)) == 11:           # float64
            reshape = only(n.outputs[0], "Reshape")
            red = reshape and only(reshape.outputs[0], "ReduceSum")
            d1 = red and only(red.outputs[0], "Div")
            d2 = d1 and only(d1.outputs[0], "Div")
            back = d2 and only(d2.outputs[0], "Cast")
            if not back or int(back.attrs.get("to", 0)) != 1 or reshape.inputs[1] not in consts:
                continue
            shape = [int(t) for t in np.asarray(consts[reshape.inputs[1]]).reshape(-1)]
            axes = red.attrs.get("axes")
            if axes is None and len(red.inputs) > 1 and red.inputs[1] in consts:
                axes = np.asarray(consts[red.inputs[1]]).reshape(-1).tolist()
            if len(shape) != 6 or shape[:2] != [0, 0] or min(shape[2:]) < 1 or axes is None \
                    or sorted(int(a) % 6 for a in axes) != [3, 5] or int(red.attrs.get("keepdims", 1)) != 0:
                continue
            oh, kh, ow, kw = shape[2:]
            if d1.inputs[0] != red.outputs[0] or d2.inputs[0] != d1.outputs[0] \
                    or not _scalar_const(consts, d1.inputs[1], kh) or not _scalar_const(consts, d2.inputs[1], kw):
                continue
            replace[id(n)] = ONode("_AdaptiveAvgPool", back.name, [n.inputs[0]], [back.outputs[0]],
                                   {"output_size": (oh, ow), "window": (kh, kw)})
            removed.update(id(m) for m in (reshape, red, d1, d2, back))
    return _live(graph, [replace.get(id(n), n) for n in nodes if id(n) not in removed])


# ----------------------------------------------------------------------------------------------------------
# Building the minquant graph
# ----------------------------------------------------------------------------------------------------------

def _scalar(consts, name, n: ONode, what, dtype=None):
    if not name:
        return None
    if name not in consts:
        _fail(n, f"{what} must be a constant (initializer), {name!r} is computed at run time")
    v = np.asarray(consts[name])
    if v.size != 1:
        _fail(n, f"{what} must be one value (per-tensor), got shape {v.shape}")
    if dtype is not None and v.dtype != dtype:
        _fail(n, f"{what} must be {np.dtype(dtype).name}, got {v.dtype.name}")
    return v.reshape(())


def _act_qparams(consts, n: ONode, s_name, z_name, what):
    """(scale float, zero point int) of uint8 activation codes (int8 activations are refused)."""
    s = _scalar(consts, s_name, n, f"{what} scale", np.float32)
    z = _scalar(consts, z_name, n, f"{what} zero point") if z_name else np.uint8(0)
    if z.dtype != np.uint8:
        _fail(n, f"{what} zero point is {z.dtype.name}; minquant's quantized kernels take uint8 activations "
                 "(quantize with activation_type=QUInt8)")
    if not (np.isfinite(s) and s > 0):
        _fail(n, f"{what} scale must be finite and > 0, got {float(s)!r}")
    return float(s), int(z)


def _weight_qparams(consts, n: ONode, w_name, s_name, z_name, out_axis: int):
    """(int8 weight, w_scale float32 (O,) or (1,), w_zp int8 same length, per_channel)."""
    if w_name not in consts:
        _fail(n, f"the weight {w_name!r} must be a constant (initializer)")
    w = np.asarray(consts[w_name])
    if w.dtype != np.int8:
        _fail(n, f"weights are {w.dtype.name}; only int8 weights are supported (MLAS runs uint8 weights with a "
                 "different kernel; quantize with weight_type=QInt8)")
    if s_name not in consts:
        _fail(n, "the weight scale must be a constant")
    ws = np.asarray(consts[s_name])
    if ws.dtype != np.float32:
        _fail(n, f"the weight scale must be float32, got {ws.dtype.name}")
    wz = np.asarray(consts[z_name]) if z_name else np.zeros(ws.shape, np.int8)
    if z_name and z_name not in consts:
        _fail(n, "the weight zero point must be a constant")
    if wz.dtype != np.int8:
        _fail(n, f"the weight zero point must be int8, got {wz.dtype.name}")
    o = w.shape[out_axis]
    ws, wz = ws.reshape(-1), wz.reshape(-1)
    if ws.size == 1 and wz.size == 1:
        return w, ws.astype(np.float32), wz.astype(np.int8), False
    if ws.size != o or wz.size not in (1, o):
        _fail(n, f"per-channel weight scales must have one value per output channel ({o}), got {ws.size}")
    if not np.all(np.isfinite(ws)) or np.any(ws <= 0):
        _fail(n, "weight scales must be finite and > 0")
    return w, ws.astype(np.float32), np.broadcast_to(wz, (o,)).astype(np.int8), True


def bias_param(b_q, x_scale, w_scale):
    """The ``bias`` parameter for a qconv2d / qlinear node that must add exactly the file's int32 ``b_q``.

    minquant stores bias in float32 and quantizes it when the layer is prepared, ORT's way
    (:func:`~minquant.affine.quantize_bias`: ``rne(f64(b) / f64(s_xw))``, ``s_xw = f32(s_x·s_w)``). The
    float32 ``b = f32(b_q·s_xw)`` round-trips whenever ``|b_q| < 2^23`` (its relative error 2⁻²⁴ moves
    ``b/s_xw`` by less than ½); this is checked, and if any channel does not come back exactly the int32
    array itself is stored — the kernels' output stage adds an integer bias as given."""
    from ...affine import quantize_bias
    b_q = np.asarray(b_q, np.int32).reshape(-1)
    ats = (np.float32(x_scale) * np.asarray(w_scale, np.float32)).astype(np.float32)
    ats = np.broadcast_to(ats, b_q.shape)
    b = (b_q.astype(np.float64) * ats.astype(np.float64)).astype(np.float32)
    if np.all(np.isfinite(b)) and np.array_equal(quantize_bias(b, x_scale, w_scale, target="onnxruntime"), b_q):
        return b
    return b_q.copy()


class Builder:
    """Walks the (fused) ONNX node list once, in order, emitting minquant nodes. Tracks for every value
    its minquant name, example shape (batch 1) and, for uint8 code values, (scale, zero point)."""

    def __init__(self, graph: OnnxGraph, nodes: list):
        self.g = graph
        self.onodes = nodes
        self.consts = graph.consts
        self.nodes: list[Node] = []
        self.val: dict[str, str] = {k: k for k in graph.inputs}
        self.shape: dict[str, tuple] = dict(graph.inputs)
        self.qp: dict[str, tuple] = {}
        self.symbolic_batch = False
        self.exact = False          # quantized model: float ops in ORT's exact form where they differ
        self.names = set(graph.inputs)
        self.readers = defaultdict(int)
        for n in nodes:
            for v in n.inputs:
                if v:
                    self.readers[v] += 1
        for v in graph.outputs:
            self.readers[v] += 1

    # -- helpers ------------------------------------------------------------------------------------------
    def act(self, n: ONode, i: int, *, codes=None) -> str:
        """minquant value of input i (an activation). codes=True/False: it must / must not be uint8 codes."""
        name = n.inputs[i] if len(n.inputs) > i else ""
        if not name:
            _fail(n, f"input {i} is missing")
        if name not in self.val:
            if name in self.consts:
                _fail(n, f"input {i} ({name!r}) is a constant; minquant supports constants here only as "
                         "weights/parameters")
            _fail(n, f"input {name!r} is not produced by a supported node")
        v = self.val[name]
        if codes is True and v not in self.qp:
            _fail(n, f"input {name!r} is float; this op takes uint8 codes")
        if codes is False and v in self.qp:
            _fail(n, f"input {name!r} is uint8 codes; this op takes float")
        return v

    def const(self, n: ONode, i: int, what: str, *, ndim=None, dtype=np.float32, optional=False):
        name = n.inputs[i] if len(n.inputs) > i else ""
        if not name:
            if optional:
                return None
            _fail(n, f"{what} is missing")
        if name not in self.consts:
            _fail(n, f"{what} must be a constant (initializer); {name!r} is computed at run time")
        v = np.asarray(self.consts[name])
        if dtype is not None and v.dtype != dtype:
            _fail(n, f"{what} must be {np.dtype(dtype).name}, got {v.dtype.name}")
        if ndim is not None and v.ndim != ndim:
            _fail(n, f"{what} must have {ndim} dimensions, got shape {v.shape}")
        return v

    def _name(self, base: str) -> str:
        name = unique_name(base or "node", self.names, "#")
        self.names.add(name)
        return name

    def emit(self, n: ONode, op, inputs, attrs=None, params=None, *, shape, qp=None, out=None, suffix=""):
        """Append a node; it becomes the value of ONNX output ``out`` (default: the node's first output)."""
        out = n.outputs[0] if out is None else out
        name = self._name(out + suffix)
        node = Node(name, op, list(inputs), attrs, {k: v for k, v in (params or {}).items() if v is not None},
                    tuple(int(d) for d in shape), source=f"{n.op} {n.name!r}")
        self.nodes.append(node)
        if not suffix:
            self.val[out] = name
        self.shape[name] = tuple(int(d) for d in shape)
        if qp is not None:
            self.qp[name] = qp
        return name

    def alias(self, n: ONode, v: str, out=None):
        self.val[n.outputs[0] if out is None else out] = v

    def sole_producer(self, n: ONode, i: int):
        """The minquant node computing input ``i`` of ``n`` if ``n`` is that value's only reader (no other
        ONNX reader, not a graph output, no alias), else None — a node ``n`` may then be merged into."""
        name = n.inputs[i]
        v = self.val.get(name)
        if v is None or self.readers[name] != 1 or sum(1 for t in self.val.values() if t == v) != 1:
            return None
        for node in reversed(self.nodes):
            if node.name == v:
                return node
        return None

    def absorb(self, n: ONode, prod: Node, attrs, params, op=None):
        """Replace ``prod`` (see :meth:`sole_producer`) by the same op (or ``op``) with new ``attrs`` /
        ``params``, now computing ``n``'s output (and named after it)."""
        name = self._name(n.outputs[0])
        new = Node(name, op or prod.op, prod.inputs, attrs, {k: v for k, v in params.items() if v is not None},
                   prod.shape, prod.source + f" + {n.op} {n.name!r}")
        self.nodes[next(i for i, m in enumerate(self.nodes) if m is prod)] = new
        for k in [k for k, t in self.val.items() if t == prod.name]:
            del self.val[k]
        self.val[n.outputs[0]] = name
        self.shape[name] = self.shape[prod.name]
        if prod.name in self.qp:
            self.qp[name] = self.qp[prod.name]
        return name

    # -- the walk -----------------------------------------------------------------------------------------
    def build(self) -> Graph:
        for n in self.onodes:
            key = n.op if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op}"
            HANDLERS[key](self, n)
        outputs = []
        for o in self.g.outputs:
            if o not in self.val:
                raise ValueError(f"graph output {o!r} is not computed by any supported node (a constant output "
                                 "is not supported)")
            outputs.append(self.val[o])
        return Graph(list(self.g.inputs), self.nodes, outputs, dict(self.g.inputs), name=self.g.name)


# ----------------------------------------------------------------------------------------------------------
# Float handlers
# ----------------------------------------------------------------------------------------------------------

def _conv_geometry(b: Builder, n: ONode, x_shape, w_shape):
    if len(x_shape) != 4 or len(w_shape) != 4:
        _fail(n, f"only 2-D convolution (NCHW input, OIHW weight) is supported, got input {x_shape}, weight "
                 f"{w_shape}")
    kernel = tuple(w_shape[2:])
    if "kernel_shape" in n.attrs and tuple(n.attrs["kernel_shape"]) != kernel:
        _fail(n, f"kernel_shape {n.attrs['kernel_shape']} does not match the weight {w_shape}")
    strides = _ints2(n, "strides", [1, 1])
    dil = _ints2(n, "dilations", [1, 1])
    pads = _pads2d(n, x_shape[2:], kernel, strides, dil)
    g = int(n.attrs.get("group", 1))
    if x_shape[1] != w_shape[1] * g or w_shape[0] % g:
        _fail(n, f"input channels {x_shape[1]} do not match weight {w_shape} with group={g}")
    oh = conv_out_size(x_shape[2], kernel[0], strides[0], pads[0], dil[0])
    ow = conv_out_size(x_shape[3], kernel[1], strides[1], pads[1], dil[1])
    return Conv2dAttrs(strides, pads, dil, g), (x_shape[0], w_shape[0], oh, ow)


def _conv(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    w = b.const(n, 1, "Conv weight", ndim=4)
    bias = b.const(n, 2, "Conv bias", ndim=1, optional=True)
    attrs, shape = _conv_geometry(b, n, b.shape[x], w.shape)
    b.emit(n, "conv2d", [x], attrs, {"weight": w.copy(), "bias": None if bias is None else bias.copy()},
           shape=shape)


def _gemm_weights(b: Builder, n: ONode, k_in):
    """(weight (N, K) float32, bias (N,) or None) of a float Gemm with a constant B."""
    if int(n.attrs.get("transA", 0)):
        _fail(n, "transA=1 is not supported")
    w = b.const(n, 1, "Gemm B (weight)", ndim=2)
    w = w.T if not int(n.attrs.get("transB", 0)) else w
    if w.shape[1] != k_in:
        _fail(n, f"weight {w.shape} does not match {k_in} input features")
    alpha, beta = float(n.attrs.get("alpha", 1.0)), float(n.attrs.get("beta", 1.0))
    w = (w * _F32(alpha)).astype(np.float32) if alpha != 1.0 else w.astype(np.float32)
    c = b.const(n, 2, "Gemm C (bias)", optional=True)
    if c is not None:
        if c.size not in (1, w.shape[0]) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
            _fail(n, f"bias C of shape {c.shape} is not one value per output feature")
        c = np.broadcast_to(c.reshape(-1), (w.shape[0],)).astype(np.float32)
        c = (c * _F32(beta)).astype(np.float32) if beta != 1.0 else c.copy()
    return np.ascontiguousarray(w), c


def _gemm(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    xs = b.shape[x]
    if len(xs) != 2:
        _fail(n, f"Gemm input must be 2-D (batch, features), got {xs}")
    w, c = _gemm_weights(b, n, xs[1])
    b.emit(n, "linear", [x], None, {"weight": w, "bias": c}, shape=(xs[0], w.shape[0]))


def _matmul(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    name1 = n.inputs[1]
    if name1 not in b.consts:
        _fail(n, "MatMul of two activations is not supported (the second operand must be a constant weight)")
    w = b.const(n, 1, "MatMul weight", ndim=2)
    xs = b.shape[x]
    if len(xs) < 2 or xs[-1] != w.shape[0]:
        _fail(n, f"input {xs} does not match weight {w.shape}")
    b.emit(n, "linear", [x], None, {"weight": np.ascontiguousarray(w.T)}, shape=xs[:-1] + (w.shape[1],))


def _batch_norm(b: Builder, n: ONode):
    if int(n.attrs.get("training_mode", 0)) or len([o for o in n.outputs if o]) > 1:
        _fail(n, "training-mode BatchNormalization (batch statistics) is not supported")
    x = b.act(n, 0, codes=False)
    c = b.shape[x][1]
    p = {k: b.const(n, i, f"BatchNormalization {k}", ndim=1) for i, k in
         enumerate(("weight", "bias", "running_mean", "running_var"), start=1)}
    if any(v.shape != (c,) for v in p.values()):
        _fail(n, f"parameters must have one value per channel ({c})")
    b.emit(n, "batch_norm", [x], BatchNormAttrs(float(n.attrs.get("epsilon", 1e-5))),
           {k: v.copy() for k, v in p.items()}, shape=b.shape[x])


def _unary(op):
    def handler(b: Builder, n: ONode):
        x = b.act(n, 0, codes=False)
        b.emit(n, op, [x], shape=b.shape[x])
    return handler


def _relu(b: Builder, n: ONode):
    """Relu → ``relu``; right after a ``dynamic_linear`` / ``dynamic_conv2d`` (its only reader) → that node's
    fused ReLU (applied last, in float: the same numbers)."""
    x = b.act(n, 0, codes=False)
    prod = b.sole_producer(n, 0)
    if prod is not None and prod.op in ("dynamic_linear", "dynamic_conv2d") and not prod.attrs.relu:
        b.absorb(n, prod, dataclasses.replace(prod.attrs, relu=True), dict(prod.params))
        return
    b.emit(n, "relu", [x], shape=b.shape[x])


def _emit_clip(b: Builder, n: ONode, x, lo, hi, **kw):
    if lo == 0.0 and hi == 6.0:
        return b.emit(n, "relu6", [x], shape=b.shape[x], **kw)
    if lo == 0.0 and hi == math.inf:
        return b.emit(n, "relu", [x], shape=b.shape[x], **kw)
    if lo == -math.inf and hi == math.inf:
        b.alias(n, x)
        return x
    return b.emit(n, "clip", [x], ClipAttrs(lo, hi), shape=b.shape[x], **kw)


def _clip(b: Builder, n: ONode):
    x = b.act(n, 0)
    bounds = _clip_bounds(b.consts, n)
    if bounds is None:
        _fail(n, "Clip bounds must be constant scalars")
    lo, hi = bounds
    if lo > hi:
        _fail(n, f"Clip min {lo} > max {hi}")
    if x in b.qp:                                     # on uint8 codes (QOperator, or fuse_code_clamps)
        _code_clamp(b, n, 0, _code_bound(n, lo, 0), _code_bound(n, hi, 255), None)
        return
    _emit_clip(b, n, x, lo, hi)


def _code_bound(n: ONode, t: float, absent: int) -> int:
    if math.isinf(t):
        return absent
    if t != int(t) or not 0 <= t <= 255:
        _fail(n, f"a bound on uint8 codes must be an integer code in [0, 255], got {t}")
    return int(t)


def _channel_values(const, x_shape):
    """``const`` as one value per channel (dim 1) of an activation of shape x_shape (its dtype kept), or
    None if it does not broadcast that way (a scalar counts: it is repeated)."""
    c = np.asarray(const)
    ch = x_shape[1]
    if c.size == 1 and c.ndim <= len(x_shape):
        return np.full(ch, c.reshape(()), c.dtype)
    if c.ndim > len(x_shape):
        return None
    full = (1,) * (len(x_shape) - c.ndim) + c.shape
    if full[1] == ch and all(d == 1 for i, d in enumerate(full) if i != 1):
        return c.reshape(-1).copy()
    return None


def _channel_vector(const, x_shape):
    """:func:`_channel_values` as float32."""
    v = _channel_values(const, x_shape)
    return None if v is None else v.astype(np.float32)


def _compose_clamp(lo, hi, top, lo2, hi2, top2):
    """A clamp on codes ``(lo, hi, top)`` — ``min(clip(q, lo, hi), top[c])``, ``top`` None or ≥ lo — followed by
    a Clip to [lo2, hi2] (``top2`` None) or a per-channel Min ``top2`` ((lo2, hi2) = (0, 255)), as one clamp
    of the same form, or None when there is none:

    * Clip: clip(min(clip(q, lo, hi), top), lo2, hi2) = min(clip(q, L, H), max(top, L)) with L = max(lo, lo2),
      H = min(hi, hi2) — when L ≤ H (else the result is a constant, which no clamp of this form gives).
      (Because top ≥ lo, min(clip(q, lo, hi), top) = clip(min(q, top), lo, hi), and clips compose.)
    * Min: min(min(clip(q, lo, hi), top), top2) = min(clip(q, lo, hi), min(top, top2)) — a valid form when
      min(top, top2) ≥ lo in every channel (the output stage requires a top at or above the clamp's floor).

    A top that is ≥ H in every channel does nothing and is dropped."""
    if top2 is None:
        L, H = max(lo, lo2), min(hi, hi2)
        if L > H:
            return None
        t = None if top is None else np.maximum(top, L)
    else:
        L, H = lo, hi
        t = top2 if top is None else np.minimum(top, top2)
        if np.any(t < L):
            return None
    if t is not None and np.all(t >= H):
        t = None
    return L, H, t


def _code_clamp(b: Builder, n: ONode, i: int, lo: int, hi: int, top):
    """Codes (input ``i`` of ``n``) clamped to [lo, hi] (a Clip: ``top`` None) or to ``top[c]``, one code per
    channel (a Min: (lo, hi) = (0, 255)). Merged into the producer when ``n`` is its only reader — a
    ``qconv2d`` / ``qlinear`` output stage (``clamp``, ``clamp_hi``), a ``qclamp`` (``lo``, ``hi``,
    ``hi_channels``), a ``qadd`` whose clip is its fused ReLU (``[z_y, 255]``) — when the two clamps compose
    into one (:func:`_compose_clamp`); else a ``qclamp`` node."""
    from ...quantized import ops
    x = b.act(n, i, codes=True)
    top = None if top is None else np.asarray(top, np.int64)
    prod = b.sole_producer(n, i)
    if prod is not None and prod.op in ("qconv2d", "qlinear", "qclamp"):
        layer = prod.op != "qclamp"
        a = prod.attrs
        plo, phi = a.clamp if layer else (a.lo, a.hi)
        ptop = prod.params.get("clamp_hi" if layer else "hi_channels")
        merged = _compose_clamp(plo, phi, None if ptop is None else np.asarray(ptop, np.int64), lo, hi, top)
        if merged is not None:
            L, H, t = merged
            attrs = dataclasses.replace(a, clamp=(L, H)) if layer else ops.QClampAttrs(L, H, a.activation)
            params = dict(prod.params)
            params["clamp_hi" if layer else "hi_channels"] = None if t is None else t.astype(np.uint8)
            b.absorb(n, prod, attrs, params)
            return
    if prod is not None and prod.op == "qadd" and top is None and (lo, hi) == (prod.attrs.y_zp, 255) \
            and not prod.attrs.relu:
        b.absorb(n, prod, dataclasses.replace(prod.attrs, relu=True), dict(prod.params))
        return
    if top is not None and np.all(top >= hi):
        top = None
    b.emit(n, "qclamp", [x], ops.QClampAttrs(lo, hi), {"hi_channels": None if top is None else top.astype(np.uint8)},
           shape=b.shape[x], qp=b.qp[x])


def _min_max(b: Builder, n: ONode):
    """Min / Max of an activation and a constant. On uint8 codes (QOperator, or :func:`fuse_code_clamps`):
    a clamp (:func:`_code_clamp`) — Min by a scalar or one code per channel, Max by a scalar. On floats:
    Min / Max by a scalar → ``clip``; Min by one value per channel right after a Relu → ``relu_clip``
    (what the exporter writes for it)."""
    ins = [v for v in n.inputs if v]
    acts = [k for k, v in enumerate(n.inputs) if v and not (v in b.consts and v not in b.val)]
    if len(ins) != 2 or len(acts) != 1:
        _fail(n, "only the Min / Max of one activation and one constant is supported")
    i = acts[0]
    x = b.act(n, i)
    const = np.asarray(b.consts[next(v for k, v in enumerate(n.inputs) if v and k != i)])
    xs = b.shape[x]
    vec = _channel_values(const, xs) if len(xs) >= 2 else (const.reshape(-1) if const.size == 1 else None)
    if vec is None:
        _fail(n, f"constant of shape {const.shape} is neither a scalar nor one value per channel of {xs}")
    scalar = const.size == 1
    if x in b.qp:
        if const.dtype != np.uint8:
            _fail(n, f"the constant bound on uint8 codes must be uint8, got {const.dtype.name}")
        if n.op == "Max":
            if not scalar:
                _fail(n, "a per-channel Max on codes (a per-channel floor) is not supported")
            _code_clamp(b, n, i, int(vec[0]), 255, None)
        elif scalar:
            _code_clamp(b, n, i, 0, int(vec[0]), None)
        else:
            _code_clamp(b, n, i, 0, 255, vec)
        return
    if const.dtype != np.float32:
        _fail(n, f"constant operand must be float32, got {const.dtype.name}")
    if scalar:
        t = float(vec[0])
        _emit_clip(b, n, x, t if n.op == "Max" else -math.inf, math.inf if n.op == "Max" else t)
        return
    prod = b.sole_producer(n, i)
    if n.op == "Min" and prod is not None and prod.op == "relu":
        b.absorb(n, prod, None, {"hi": vec.astype(np.float32)}, op="relu_clip")
        return
    _fail(n, "a per-channel float Min is supported only right after a Relu (minquant's relu_clip), and a "
             "per-channel Max not at all")


def _affine(b: Builder, n: ONode, x, scale, shift, **kw):
    """x·scale + shift per channel, as a batch_norm with mean 0, var 1, eps 0 (1/√1 = 1 exactly, so the
    node computes exactly ``x·scale + shift`` in float32)."""
    c = b.shape[x][1]
    return b.emit(n, "batch_norm", [x], BatchNormAttrs(0.0),
                  {"running_mean": np.zeros(c, np.float32), "running_var": np.ones(c, np.float32),
                   "weight": scale.astype(np.float32), "bias": shift.astype(np.float32)}, shape=b.shape[x], **kw)


def _is_scale_only(node: Node) -> bool:
    """A ``batch_norm`` that computes exactly ``x·weight`` (mean 0, var 1, eps 0, bias 0: an imported Mul)."""
    p = node.params
    return node.op == "batch_norm" and node.attrs.eps == 0.0 and not np.any(p["running_mean"]) \
        and np.all(p["running_var"] == 1) and not np.any(p.get("bias", 0))


def _binary(op):
    def handler(b: Builder, n: ONode):
        a_name, c_name = n.inputs[0], n.inputs[1]
        a_const, c_const = a_name in b.consts and a_name not in b.val, c_name in b.consts and c_name not in b.val
        if a_const and c_const:
            _fail(n, "both operands are constants")
        if not a_const and not c_const:
            x, y = b.act(n, 0, codes=False), b.act(n, 1, codes=False)
            try:
                shape = np.broadcast_shapes(b.shape[x], b.shape[y])
            except ValueError:
                _fail(n, f"shapes {b.shape[x]} and {b.shape[y]} do not broadcast")
            b.emit(n, op, [x, y], shape=shape)
            return
        x = b.act(n, 1 if a_const else 0, codes=False)
        const = np.asarray(b.consts[a_name if a_const else c_name])
        if const.dtype != np.float32:
            _fail(n, f"constant operand must be float32, got {const.dtype.name}")
        xs = b.shape[x]
        prod = b.nodes[-1] if b.nodes and b.nodes[-1].name == x else None
        flat = const.reshape(-1)
        if op == "add" and prod is not None and prod.op == "linear" and "bias" not in prod.params \
                and b.readers[n.inputs[1 if a_const else 0]] == 1 and flat.size == xs[-1] \
                and const.ndim <= len(xs) and all(d == 1 for d in const.shape[:-1]):
            prod.params["bias"] = flat.astype(np.float32).copy()      # MatMul + Add → linear with bias
            b.alias(n, x)
            return
        vec = _channel_vector(const, xs) if len(xs) >= 2 else None
        if vec is None:
            _fail(n, f"constant of shape {const.shape} is neither a scalar nor one value per channel of {xs}")
        prod = b.sole_producer(n, 1 if a_const else 0)
        if op == "add" and prod is not None and _is_scale_only(prod):
            # Mul(x, α) → Add(·, β) — how the exporter writes a batch_norm left in float — is one affine node:
            # f32(f32(x·α) + β) either way
            b.absorb(n, prod, prod.attrs, dict(prod.params, bias=vec))
            return
        if op == "add":
            _affine(b, n, x, np.ones_like(vec), vec)
        else:
            _affine(b, n, x, vec, np.zeros_like(vec))
    return handler


def _pool_geometry(b: Builder, n: ONode, x_shape, *, dilations=False):
    if len(x_shape) != 4:
        _fail(n, f"only 2-D pooling on NCHW input is supported, got {x_shape}")
    k = _ints2(n, "kernel_shape", [])
    s = _ints2(n, "strides", [1, 1])
    d = _ints2(n, "dilations", [1, 1]) if dilations else (1, 1)
    if not dilations and "dilations" in n.attrs and tuple(n.attrs["dilations"]) != (1, 1):
        _fail(n, "dilated average pooling is not supported")
    p = _pads2d(n, x_shape[2:], k, s, d)
    ceil = bool(n.attrs.get("ceil_mode", 0))
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        _fail(n, f"padding {p} larger than half the kernel {k} is not supported")
    out = tuple(pool_out_size(x_shape[2 + i], k[i], s[i], p[i], d[i], ceil) for i in range(2))
    return k, s, p, d, ceil, (x_shape[0], x_shape[1]) + out


def _avg_pool(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    k, s, p, _, ceil, shape = _pool_geometry(b, n, b.shape[x])
    if k == tuple(b.shape[x][2:]) and p == (0, 0):    # one window = the image: ORT runs its global kernel
        b.emit(n, "adaptive_avg_pool2d", [x], AdaptiveAvgPool2dAttrs((1, 1)), shape=shape)
        return
    b.emit(n, "avg_pool2d", [x], AvgPool2dAttrs(k, s, p, ceil, bool(n.attrs.get("count_include_pad", 0))),
           shape=shape)


def _max_pool_attrs(b: Builder, n: ONode, x):
    if int(n.attrs.get("storage_order", 0)) or len([o for o in n.outputs if o]) > 1:
        _fail(n, "MaxPool with storage_order=1 or an Indices output is not supported")
    k, s, p, d, ceil, shape = _pool_geometry(b, n, b.shape[x], dilations=True)
    return MaxPool2dAttrs(k, s, p, d, ceil), shape


def _max_pool(b: Builder, n: ONode):
    x = b.act(n, 0)
    attrs, shape = _max_pool_attrs(b, n, x)
    if x in b.qp:
        b.emit(n, "qmax_pool2d", [x], attrs, shape=shape, qp=b.qp[x])
    else:
        b.emit(n, "max_pool2d", [x], attrs, shape=shape)


def _global_avg_pool(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    xs = b.shape[x]
    if len(xs) != 4:
        _fail(n, f"only NCHW input is supported, got {xs}")
    b.emit(n, "adaptive_avg_pool2d", [x], AdaptiveAvgPool2dAttrs((1, 1)), shape=xs[:2] + (1, 1))


def _flatten(b: Builder, n: ONode):
    x = b.act(n, 0)
    xs = b.shape[x]
    axis = int(n.attrs.get("axis", 1))
    axis = axis + len(xs) if axis < 0 else axis
    if axis != 1:
        _fail(n, f"Flatten(axis={n.attrs.get('axis', 1)}) would mix the batch with other dimensions; only "
                 "axis=1 is supported")
    shape = (xs[0], int(np.prod(xs[1:])))
    if x in b.qp:
        b.emit(n, "qflatten", [x], FlattenAttrs(1, -1), shape=shape, qp=b.qp[x])
    else:
        b.emit(n, "flatten", [x], FlattenAttrs(1, -1), shape=shape)


def _reshape(b: Builder, n: ONode):
    x = b.act(n, 0)
    xs = b.shape[x]
    target = b.const(n, 1, "Reshape shape", ndim=1, dtype=np.int64)
    allowzero = int(n.attrs.get("allowzero", 0))
    t = [xs[i] if (d == 0 and not allowzero) else int(d) for i, d in enumerate(target)]
    if t.count(-1) > 1:
        _fail(n, f"shape {list(target)} has more than one -1")
    if -1 in t:
        known = int(np.prod([d for d in t if d != -1]))
        t[t.index(-1)] = int(np.prod(xs)) // max(known, 1)
    if int(np.prod(t)) != int(np.prod(xs)) or not t:
        _fail(n, f"cannot reshape {xs} to {list(target)}")
    if t[0] != xs[0] or (b.symbolic_batch and int(target[0]) not in (0, -1)):
        _fail(n, f"reshape {xs} → {list(target)} does not keep the batch dimension first")
    if int(target[0]) == -1 and -1 in [int(d) for d in target[1:]]:
        _fail(n, f"shape {list(target)} is ambiguous")
    shape = tuple(t)
    if x in b.qp:
        b.emit(n, "qreshape", [x], ReshapeAttrs(shape[1:]), shape=shape, qp=b.qp[x])
    else:
        b.emit(n, "reshape", [x], ReshapeAttrs(shape[1:]), shape=shape)


def _concat_axis(b: Builder, n: ONode, rank):
    axis = int(n.attrs.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if not 1 <= axis < rank:
        _fail(n, f"Concat along axis {n.attrs.get('axis')} (the batch, or out of range) is not supported")
    return axis


def _concat_shape(b: Builder, n: ONode, xs, axis):
    shapes = [b.shape[x] for x in xs]
    for s in shapes[1:]:
        if len(s) != len(shapes[0]) or any(a != c for i, (a, c) in enumerate(zip(s, shapes[0])) if i != axis):
            _fail(n, f"input shapes {shapes} do not fit together along axis {axis}")
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return tuple(out)


def _concat(b: Builder, n: ONode):
    xs = [b.act(n, i) for i in range(len(n.inputs)) if n.inputs[i]]
    axis = _concat_axis(b, n, len(b.shape[xs[0]]))
    shape = _concat_shape(b, n, xs, axis)
    coded = [x in b.qp for x in xs]
    if not any(coded):
        b.emit(n, "cat", xs, CatAttrs(axis), shape=shape)
        return
    # a Concat of uint8 codes (QOperator, as minquant's exporter writes a qcat whose qparams all agree)
    qps = {b.qp[x] for x in xs if x in b.qp}
    if not all(coded) or len(qps) != 1:
        _fail(n, "a Concat of uint8 codes needs every input to be codes with the same (scale, zero point) — "
                 "else QLinearConcat")
    from ...quantized import ops
    (s, z), = qps
    b.emit(n, "qcat", xs, ops.QCatAttrs(axis, (s,) * len(xs), (z,) * len(xs), s, z), shape=shape, qp=(s, z))


def _hard_sigmoid_exact(b: Builder, n: ONode, x, alpha, beta, **kw):
    """ORT's HardSigmoid, bit for bit: ``min(max(f32(f32(x·α) + β), 0), 1)`` (multiply, then add) — an affine
    batch_norm and a clip (measured: 0 of 10⁶ values differ; minquant's ``relu6(x + 3)/6`` differs on ~25 %)."""
    c = b.shape[x][1]
    mid = _affine(b, n, x, np.full(c, alpha, np.float32), np.full(c, beta, np.float32), suffix="/affine")
    return b.emit(n, "clip", [mid], ClipAttrs(0.0, 1.0), shape=b.shape[x], **kw)


def _hard_sigmoid(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    alpha, beta = _F32(n.attrs.get("alpha", 0.2)), _F32(n.attrs.get("beta", 0.5))
    if alpha == _F32(1 / 6) and beta == _F32(0.5) and not b.exact:
        b.emit(n, "hardsigmoid", [x], shape=b.shape[x])
        return
    _hard_sigmoid_exact(b, n, x, alpha, beta)


def _hard_swish(b: Builder, n: ONode):
    """HardSwish: ``hardswish`` in a float graph; in a quantized one ORT's own form, x · HardSigmoid(x)
    with α = 1/6, β = ½ (ONNX defines HardSwish as that function and ORT runs it so)."""
    x = b.act(n, 0, codes=False)
    if not b.exact:
        b.emit(n, "hardswish", [x], shape=b.shape[x])
        return
    hsig = _hard_sigmoid_exact(b, n, x, _F32(1 / 6), _F32(0.5), suffix="/hardsigmoid")
    b.emit(n, "mul", [x, hsig], shape=b.shape[x])


def _adaptive_avg_pool(b: Builder, n: ONode):
    """``_AdaptiveAvgPool`` of :func:`fuse_float_patterns` → ``adaptive_avg_pool2d``."""
    x = b.act(n, 0, codes=False)
    xs = b.shape[x]
    (oh, ow), (kh, kw) = n.attrs["output_size"], n.attrs["window"]
    if len(xs) != 4 or xs[2:] != (oh * kh, ow * kw):
        _fail(n, f"the windows {oh}×{kh}, {ow}×{kw} do not tile the input {xs}")
    b.emit(n, "adaptive_avg_pool2d", [x], AdaptiveAvgPool2dAttrs((oh, ow)), shape=xs[:2] + (oh, ow))


def _identity(b: Builder, n: ONode):
    if n.op == "Dropout" and len(n.inputs) > 2 and n.inputs[2]:
        tm = b.consts.get(n.inputs[2])
        if tm is None or bool(np.asarray(tm).reshape(())):
            _fail(n, "Dropout in training mode is not supported")
    b.alias(n, b.act(n, 0))


# ----------------------------------------------------------------------------------------------------------
# Quantized handlers
# ----------------------------------------------------------------------------------------------------------

def _quantize_linear(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    s, z = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2] if len(n.inputs) > 2 else "", "QuantizeLinear")
    from ...quantized.ops import QuantizeAttrs
    b.emit(n, "quantize", [x], QuantizeAttrs(s, z), shape=b.shape[x], qp=(s, z))


def _dequantize_linear(b: Builder, n: ONode):
    src = n.inputs[0]
    if src in b.consts and src not in b.val:          # a constant (e.g. a weight of an unfused float op)
        from ...affine import dequantize
        q = np.asarray(b.consts[src])
        s = b.const(n, 1, "DequantizeLinear scale")
        z = b.const(n, 2, "DequantizeLinear zero point", dtype=None, optional=True)
        z = np.zeros(s.shape, q.dtype) if z is None else z
        axis = int(n.attrs.get("axis", 1)) if s.size > 1 else None
        b.consts[n.outputs[0]] = dequantize(q, s, z, axis=None if axis is None else axis % q.ndim)
        return
    x = b.act(n, 0, codes=True)
    s, z = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2] if len(n.inputs) > 2 else "", "DequantizeLinear")
    from ...quantized.ops import QuantizeAttrs
    b.emit(n, "dequantize", [x], QuantizeAttrs(s, z), shape=b.shape[x])


def _qlinear_conv(b: Builder, n: ONode):
    from ...quantized import ops
    x = b.act(n, 0, codes=True)
    xs_, xz = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2], "input")
    w, ws, wz, per_channel = _weight_qparams(b.consts, n, n.inputs[3], n.inputs[4], n.inputs[5], 0)
    ys, yz = _act_qparams(b.consts, n, n.inputs[6], n.inputs[7], "output")
    geo, shape = _conv_geometry(b, n, b.shape[x], w.shape)
    bias = None
    if len(n.inputs) > 8 and n.inputs[8]:
        bq = b.const(n, 8, "QLinearConv bias", ndim=1, dtype=np.int32)
        if bq.shape != (w.shape[0],):
            _fail(n, f"bias must have {w.shape[0]} values, got {bq.shape}")
        bias = bias_param(bq, xs_, ws if per_channel else ws[0])
    attrs = ops.QConv2dAttrs(geo.stride, geo.padding, geo.dilation, geo.groups, xs_, xz, ys, yz, (0, 255), "",
                             per_channel)
    b.emit(n, "qconv2d", [x], attrs, {"weight": w.copy(), "w_scale": ws, "w_zp": wz, "bias": bias}, shape=shape,
           qp=(ys, yz))


def _emit_qlinear(b: Builder, n: ONode, x, xq, w, ws, wz, per_channel, bias_q, yq):
    from ...quantized import ops
    xs = b.shape[x]
    if xs[-1] != w.shape[1]:
        _fail(n, f"input {xs} does not match weight (out, in) {w.shape}")
    bias = None
    if bias_q is not None:
        bias_q = np.asarray(bias_q).reshape(-1)
        if bias_q.shape != (w.shape[0],):
            _fail(n, f"bias must have {w.shape[0]} values, got {bias_q.shape}")
        bias = bias_param(bias_q, xq[0], ws if per_channel else ws[0])
    attrs = ops.QLinearAttrs(xq[0], xq[1], yq[0], yq[1], (0, 255), "", per_channel)
    b.emit(n, "qlinear", [x], attrs, {"weight": np.ascontiguousarray(w), "w_scale": ws, "w_zp": wz, "bias": bias},
           shape=xs[:-1] + (w.shape[0],), qp=yq)


def _qgemm(b: Builder, n: ONode):
    x = b.act(n, 0, codes=True)
    if int(n.attrs.get("transA", 0)) or float(n.attrs.get("alpha", 1.0)) != 1.0:
        _fail(n, "only transA=0, alpha=1 is supported")
    if len(n.inputs) < 9 or not n.inputs[7]:
        _fail(n, "QGemm without output scale (float output) is not supported")
    xq = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2], "input")
    trans_b = int(n.attrs.get("transB", 0))
    w, ws, wz, pc = _weight_qparams(b.consts, n, n.inputs[3], n.inputs[4], n.inputs[5], 0 if trans_b else 1)
    if w.ndim != 2:
        _fail(n, f"weight must be 2-D, got {w.shape}")
    w = w if trans_b else w.T
    bias_q = b.const(n, 6, "QGemm bias C", dtype=np.int32, optional=True)
    yq = _act_qparams(b.consts, n, n.inputs[7], n.inputs[8], "output")
    if len(b.shape[x]) != 2:
        _fail(n, f"QGemm input must be 2-D, got {b.shape[x]}")
    _emit_qlinear(b, n, x, xq, w, ws, wz, pc, bias_q, yq)


def _qlinear_matmul(b: Builder, n: ONode):
    x = b.act(n, 0, codes=True)
    if n.inputs[3] not in b.consts:
        _fail(n, "the second operand must be a constant weight")
    xq = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2], "input")
    w, ws, wz, pc = _weight_qparams(b.consts, n, n.inputs[3], n.inputs[4], n.inputs[5], 1)
    if w.ndim != 2:
        _fail(n, f"weight must be 2-D, got {w.shape}")
    yq = _act_qparams(b.consts, n, n.inputs[6], n.inputs[7], "output")
    _emit_qlinear(b, n, x, xq, w.T, ws, wz, pc, None, yq)


def _qlinear_add(b: Builder, n: ONode):
    from ...quantized import ops
    a, c = b.act(n, 0, codes=True), b.act(n, 3, codes=True)
    aq = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2], "A")
    cq = _act_qparams(b.consts, n, n.inputs[4], n.inputs[5], "B")
    yq = _act_qparams(b.consts, n, n.inputs[6], n.inputs[7], "output")
    if b.shape[a] != b.shape[c]:
        _fail(n, f"QLinearAdd with broadcasting ({b.shape[a]} + {b.shape[c]}) is not supported")
    b.emit(n, "qadd", [a, c], ops.QAddAttrs(aq[0], aq[1], cq[0], cq[1], yq[0], yq[1]), shape=b.shape[a], qp=yq)


def _qlinear_pool_io(b: Builder, n: ONode):
    """com.microsoft QLinearGlobalAveragePool / QLinearAveragePool (inputs X, x_scale, x_zp, y_scale, y_zp):
    ``(X's codes, (x_scale, x_zp), (y_scale, y_zp))``; NHWC (``channels_last=1``) is refused."""
    if int(n.attrs.get("channels_last", 0)):
        _fail(n, "channels_last=1 (NHWC) tensors are not supported")
    x = b.act(n, 0, codes=True)
    xq = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2], "input")
    yq = _act_qparams(b.consts, n, n.inputs[3], n.inputs[4], "output")
    return x, xq, yq


def _qlinear_global_avg_pool(b: Builder, n: ONode):
    from ...quantized import ops
    x, xq, yq = _qlinear_pool_io(b, n)
    xs = b.shape[x]
    if len(xs) != 4:
        _fail(n, f"only NCHW input is supported, got {xs}")
    b.emit(n, "qadaptive_avg_pool2d", [x],
           ops.QAdaptiveAvgPool2dAttrs((1, 1), xq[0], xq[1], False, yq[0], yq[1]), shape=xs[:2] + (1, 1), qp=yq)


def _qlinear_avg_pool(b: Builder, n: ONode):
    from ...quantized import ops
    x, xq, yq = _qlinear_pool_io(b, n)
    k, s, p, _, ceil, shape = _pool_geometry(b, n, b.shape[x])
    if ceil:
        _fail(n, "ceil_mode=1 is not supported for QLinearAveragePool")
    attrs = ops.QAvgPool2dAttrs(k, s, p, False, bool(n.attrs.get("count_include_pad", 0)), None, xq[0], xq[1],
                                False, yq[0], yq[1])
    b.emit(n, "qavg_pool2d", [x], attrs, shape=shape, qp=yq)


def _qlinear_concat(b: Builder, n: ONode):
    from ...quantized import ops
    yq = _act_qparams(b.consts, n, n.inputs[0], n.inputs[1], "output")
    rest = n.inputs[2:]
    if len(rest) % 3 or not rest:
        _fail(n, "inputs must be (Y_scale, Y_zero_point) followed by (X, X_scale, X_zero_point) triples")
    xs, scales, zps = [], [], []
    for i in range(0, len(rest), 3):
        xs.append(b.act(n, 2 + i, codes=True))
        s, z = _act_qparams(b.consts, n, rest[i + 1], rest[i + 2], f"input {i // 3}")
        scales.append(s)
        zps.append(z)
    axis = _concat_axis(b, n, len(b.shape[xs[0]]))
    b.emit(n, "qcat", xs, ops.QCatAttrs(axis, tuple(scales), tuple(zps), yq[0], yq[1]),
           shape=_concat_shape(b, n, xs, axis), qp=yq)


def _dynamic_weights(b: Builder, n: ONode, w_name, z_name, s_name, out_axis):
    if w_name not in b.consts:
        _fail(n, "the weight must be a constant")
    w = np.asarray(b.consts[w_name])
    if w.dtype != np.int8:
        _fail(n, f"weights are {w.dtype.name}; only int8 weights are supported (quantize_dynamic with "
                 "weight_type=QInt8; uint8 weights run on MLAS's exact u8×u8 kernel, which minquant does "
                 "not target)")
    return _weight_qparams(b.consts, n, w_name, s_name, z_name, out_axis)


def _float_bias(b: Builder, n: ONode, name, o):
    if not name:
        return None
    bias = np.asarray(b.consts[name])
    if bias.dtype != np.float32 or bias.size != o or (bias.ndim > 1 and bias.reshape(-1).size != o):
        _fail(n, f"bias must be {o} float32 values, got {bias.dtype.name} {bias.shape}")
    return bias.reshape(-1).copy()


def _dynamic_conv(b: Builder, n: ONode):
    from ...quantized import ops
    x = b.act(n, 0, codes=False)
    w, ws, wz, pc = _dynamic_weights(b, n, n.inputs[1], n.inputs[2], n.inputs[3], 0)
    if w.ndim != 4:
        _fail(n, f"weight must be 4-D, got {w.shape}")
    geo, shape = _conv_geometry(b, n, b.shape[x], w.shape)
    bias = _float_bias(b, n, n.inputs[4], w.shape[0])
    if bias is not None and np.asarray(b.consts[n.inputs[4]]).ndim not in (1, 4):
        _fail(n, "the bias must broadcast per output channel")
    attrs = ops.DynamicConv2dAttrs(geo.stride, geo.padding, geo.dilation, geo.groups, pc, False, False)
    b.emit(n, "dynamic_conv2d", [x], attrs, {"weight": w.copy(), "w_scale": ws, "w_zp": wz, "bias": bias},
           shape=shape)


def _dynamic_matmul(b: Builder, n: ONode):
    from ...quantized import ops
    x = b.act(n, 0, codes=False)
    w, ws, wz, pc = _dynamic_weights(b, n, n.inputs[1], n.inputs[3] if len(n.inputs) > 3 else "", n.inputs[2], 1)
    if w.ndim != 2:
        _fail(n, f"weight must be 2-D, got {w.shape}")
    xs = b.shape[x]
    if xs[-1] != w.shape[0]:
        _fail(n, f"input {xs} does not match weight {w.shape}")
    bias = _float_bias(b, n, n.inputs[4] if len(n.inputs) > 4 else "", w.shape[1])
    b.emit(n, "dynamic_linear", [x], ops.DynamicLinearAttrs(pc, False, False),
           {"weight": np.ascontiguousarray(w.T), "w_scale": ws, "w_zp": wz, "bias": bias},
           shape=xs[:-1] + (w.shape[1],))


#: ONNX op → handler for float models (also used for float ops inside quantized ones)
FLOAT_HANDLERS = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "BatchNormalization": _batch_norm,
    "Relu": _relu, "Clip": _clip, "HardSwish": _hard_swish, "HardSigmoid": _hard_sigmoid,
    "Add": _binary("add"), "Mul": _binary("mul"), "GlobalAveragePool": _global_avg_pool,
    "AveragePool": _avg_pool, "MaxPool": _max_pool, "Flatten": _flatten, "Reshape": _reshape,
    "Concat": _concat, "Identity": _identity, "Dropout": _identity, "Min": _min_max, "Max": _min_max,
    # the sequences minquant's exporter writes (fuse_float_patterns)
    "_HardSwish": _unary("hardswish"), "_HardSigmoid": _unary("hardsigmoid"),
    "_AdaptiveAvgPool": _adaptive_avg_pool,
}
#: ONNX op (QOperator level, after :func:`fuse_qdq`) → handler for quantized models
QUANTIZED_HANDLERS = {
    "QuantizeLinear": _quantize_linear, "DequantizeLinear": _dequantize_linear, "QLinearConv": _qlinear_conv,
    "QLinearMatMul": _qlinear_matmul, "com.microsoft.QGemm": _qgemm, "com.microsoft.QLinearAdd": _qlinear_add,
    "com.microsoft.QLinearGlobalAveragePool": _qlinear_global_avg_pool,
    "com.microsoft.QLinearAveragePool": _qlinear_avg_pool, "com.microsoft.QLinearConcat": _qlinear_concat,
    "com.microsoft.DynamicQuantizeMatMul": _dynamic_matmul, "_DynamicConv": _dynamic_conv,
    "com.microsoft.QuantizeLinear": _quantize_linear, "com.microsoft.DequantizeLinear": _dequantize_linear,
}
HANDLERS = {**FLOAT_HANDLERS, **QUANTIZED_HANDLERS}
FLOAT_OPS = frozenset(k for k in FLOAT_HANDLERS if not k.startswith("_"))
QUANTIZED_OPS = frozenset(k.rsplit(".", 1)[-1] for k in QUANTIZED_HANDLERS if not k.startswith("_")) | {
    "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}
_QUANT_MARKERS = QUANTIZED_OPS | {"QLinearMul", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax",
                                  "MatMulIntegerToFloat", "QAttention", "DynamicQuantizeLSTM"}

_WHY = {
    "QLinearMul": "ORT fuses DQ → Mul → Q into QLinearMul, for which minquant has no kernel",
    "QLinearSigmoid": "ORT fuses DQ → Sigmoid → Q into a QLinearSigmoid lookup table minquant does not have",
    "QLinearLeakyRelu": "ORT fuses DQ → LeakyRelu → Q into a lookup table minquant does not have",
    "QLinearSoftmax": "no quantized Softmax in minquant",
    "MatMulIntegerToFloat": "ORT turns DQ → MatMul without a following Q into MatMulIntegerToFloat",
    "ConvInteger": "only in the pattern quantize_dynamic writes (DynamicQuantizeLinear → ConvInteger → Cast → "
                   "Mul → [Add])",
    "MatMulInteger": "only in the pattern quantize_dynamic writes (DynamicQuantizeLinear → MatMulInteger → "
                     "Cast → Mul → [Add])",
    "DynamicQuantizeLinear": "only feeding ConvInteger / MatMulInteger in quantize_dynamic's pattern",
    "Div": "only inside the sequences minquant's exporter writes for hardswish (Add → Clip → Mul → Div), "
           "hardsigmoid (Add → Clip → Div) and adaptive average pooling (Cast → Reshape → ReduceSum → Div → "
           "Div → Cast)",
    "Cast": "only inside the adaptive average pooling sequence minquant's exporter writes (or on constants)",
    "ReduceSum": "only inside the adaptive average pooling sequence minquant's exporter writes",
}


def _key(n: ONode) -> str:
    return n.op if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op}"


def _check_supported(nodes, quantized: bool) -> None:
    """One ValueError listing every op type minquant cannot import, with the nodes that use it."""
    table = HANDLERS if quantized else FLOAT_HANDLERS
    bad = defaultdict(list)
    for n in nodes:
        if _key(n) not in table:
            bad[_key(n)].append(n.name)
    if bad:
        parts = []
        for op, names in bad.items():
            shown = ", ".join(repr(x) for x in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            why = _WHY.get(op.rsplit(".", 1)[-1])
            parts.append(f"{op} (node{'s' if len(names) > 1 else ''} {shown})" + (f": {why}" if why else ""))
        raise ValueError("unsupported ONNX op(s): " + "; ".join(parts))


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------

def from_onnx(model, *, name: str | None = None, target="onnxruntime"):
    """Import an ONNX model (path, bytes or ``onnx.ModelProto``).

    A float model becomes a :class:`~minquant.graph.Graph` (run it with :func:`minquant.run`); a model with
    quantized operators (QDQ, QOperator, or ``quantize_dynamic`` output) becomes a
    :class:`~minquant.quantized.QuantizedModel` built from what ONNX Runtime actually runs after its graph
    optimizer (module docstring), so that its output equals ORT's bit for bit under ``target``
    (default ``"onnxruntime"`` on this host; ``Target("onnxruntime", "avx2")`` gives what ORT computes on
    an AVX2 machine without VNNI; another framework runs the same integer graph with that framework's
    arithmetic).
    Raises ValueError for files that are not (valid) ONNX and for unsupported ops (naming each op type and
    node)."""
    proto = load_onnx(model)
    g = OnnxGraph(proto)
    if name:
        g.name = name
    fold_constants(g)
    quantized = any(n.op in _QUANT_MARKERS for n in g.nodes)
    if not quantized:
        nodes = fuse_float_patterns(g, g.nodes)
        _check_supported(nodes, False)
        b = Builder(g, nodes)
        b.symbolic_batch = _symbolic_batch(proto)
        return b.build()
    # the float tensor each QuantizeLinear reads: what the quantized value approximates (for compare())
    q_source = {n.outputs[0]: n.inputs[0] for n in g.nodes if _is_q(n)}
    nodes = fuse_dynamic(g, fuse_qdq(g))
    nodes = fuse_float_patterns(g, fuse_code_clamps(g, nodes, q_source))
    _check_supported(nodes, True)
    b = Builder(g, nodes)
    b.symbolic_batch = _symbolic_batch(proto)
    b.exact = True
    graph = b.build()
    from ...quantized import QuantizedModel
    float_names = {n.name: q_source[n.name] for n in graph.nodes if n.name in q_source}
    return QuantizedModel(graph, target, float_names=float_names,
                          meta={"source": "onnx", "onnx_opset": g.opset.get("", 0)})


def _symbolic_batch(proto) -> bool:
    for vi in proto.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            return True
    return False
