"""The minquant graph built from the (fused) ONNX node list: :class:`Builder` walks the nodes once,
calling one handler per op (:mod:`minquant.interop.onnx.handlers`), and tracks each value's minquant name,
shape and uint8 qparams; the qparams readers (:func:`_act_qparams`, :func:`_weight_qparams`) and
:func:`bias_param` (a file's int32 bias as minquant's ``bias`` parameter).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ...graph import Graph, Node, unique_name
from .proto import ONode, OnnxGraph, _fail

__all__ = ["Builder", "bias_param"]


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
    """Walks the (fused) ONNX node list once, in order, emitting minquant nodes through ``handlers`` (ONNX
    op key → ``handler(builder, node)``, :data:`~minquant.interop.onnx.handlers.HANDLERS`). Tracks for every
    value its minquant name, example shape (batch 1) and, for uint8 code values, (scale, zero point)."""

    def __init__(self, graph: OnnxGraph, nodes: list, handlers: dict):
        self.g = graph
        self.handlers = handlers      # ONNX op key → handler(builder, node) (handlers.HANDLERS)
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
            self.handlers[key](self, n)
        outputs = []
        for o in self.g.outputs:
            if o not in self.val:
                raise ValueError(f"graph output {o!r} is not computed by any supported node (a constant output "
                                 "is not supported)")
            outputs.append(self.val[o])
        return Graph(list(self.g.inputs), self.nodes, outputs, dict(self.g.inputs), name=self.g.name)


