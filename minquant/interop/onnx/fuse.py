"""The ONNX graph rewritten into what ONNX Runtime runs (the rules are in
:mod:`minquant.interop.onnx.importer`'s docstring): :func:`fuse_qdq` (``DQ → op → Q`` groups into
QOperator nodes, as ORT's ``QDQSelectorActionTransformer`` does), :func:`fold_constants`,
:func:`fuse_dynamic` (``quantize_dynamic``'s patterns), :func:`fuse_code_clamps` (clamps on codes) and
:func:`fuse_float_patterns` (the float sequences minquant's exporter writes). Each takes and returns a
list of :class:`~minquant.interop.onnx.proto.ONode`.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ...graph import unique_name
from .proto import ONode, OnnxGraph

__all__ = ["fuse_qdq", "fold_constants", "fuse_dynamic", "fuse_code_clamps", "fuse_float_patterns"]

_F32 = np.float32
_EPS32 = float(np.finfo(np.float32).eps)


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
