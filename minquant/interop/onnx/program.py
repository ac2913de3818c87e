"""A general executor for ONNX graphs of quantization operators: what :func:`~minquant.interop.onnx.from_onnx`
returns for a graph made only of the ops in :data:`~minquant.interop.onnx.node_ops.NODE_OPS` (ONNX's
QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearMatMul, MatMulInteger, QLinearConv,
ConvInteger, Identity, and ONNX Runtime's com.microsoft QGemm, QLinearAdd, QLinearMul,
QLinearGlobalAveragePool, MatMulNBits).

    prog = minquant.from_onnx("qlinear_matmul.onnx")      # target="onnxruntime" on this CPU by default
    y = prog(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp)    # positional, in graph-input order
    outs = prog.run({"a": a, ...})                          # {output name: array}

Unlike a :class:`~minquant.graph.Graph` (one float32 image input) it takes any number of inputs of any
rank and of the types in :mod:`~minquant.interop.onnx.dtypes` (uint8, int8, uint16, int16, uint4, int4,
uint2, int2, int32, float16, float32), returns several outputs, and reads scales, zero points and weights
at run time when the graph makes them inputs. It runs the nodes one by one, as written — no fusion: that
is ONNX's definition of the graph (whole quantized image models, which ONNX Runtime rewrites before running,
are read by :func:`~minquant.interop.onnx.from_onnx_quantized`).

Each feed is checked against the graph's declaration (element type; rank and every fixed dimension), each
node's inputs against the op's rules; a problem raises ValueError naming the input or node. The output
arrays are in minquant's storage (:mod:`~minquant.interop.onnx.dtypes`: int4 codes one per int8...);
:attr:`OnnxProgram.output_types` gives their ONNX types once run.
"""
from __future__ import annotations

from collections import defaultdict

from .dtypes import MINIFLOATS, STORAGE, UNSUPPORTED, Tensor, tensor_of, type_name
from .node_ops import NODE_OPS
from .proto import OnnxGraph

__all__ = ["OnnxProgram", "is_program", "is_program_op"]


def _key(n) -> str:
    return n.op if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op}"


def is_program_op(n) -> bool:
    """True if :class:`OnnxProgram` runs the ONNX node ``n`` (:data:`~minquant.interop.onnx.node_ops.NODE_OPS`)."""
    return _key(n) in NODE_OPS


def is_program(g: OnnxGraph) -> bool:
    """True if every node of ``g`` is an op :class:`OnnxProgram` runs and at least one is a quantization op."""
    return bool(g.nodes) and all(map(is_program_op, g.nodes)) and any(n.op != "Identity" for n in g.nodes)


class OnnxProgram:
    """An ONNX graph of quantization operators, run node by node on minquant's kernels under ``target``
    (module docstring). Attributes: ``name``, ``target``, ``input_names``, ``input_types`` (name → ONNX type
    name), ``input_dims`` (name → dims, None where symbolic; None if undeclared), ``output_names``,
    ``output_types`` (filled by a run), ``nodes`` (:class:`~minquant.interop.onnx.proto.ONode`)."""

    def __init__(self, graph: OnnxGraph, *, target="onnxruntime"):
        self.name = graph.name
        self.target = target
        self.nodes = list(graph.nodes)
        self.input_names = list(graph.input_types)
        self.input_types, self.input_dims = {}, {}
        for k, (elem, dims) in graph.input_types.items():
            if elem is None:
                raise ValueError(f"graph input {k!r} is not a tensor")
            t = type_name(elem)
            if t in UNSUPPORTED:
                raise ValueError(f"graph input {k!r} is {t.lower()}: {UNSUPPORTED[t]}")
            if t not in STORAGE and t not in MINIFLOATS:
                raise ValueError(f"graph input {k!r} is {t.lower()}, not a type of the quantization operators")
            self.input_types[k], self.input_dims[k] = t, dims
        self.consts = {k: tensor_of(v, f"initializer {k!r}") for k, v in graph.consts.items()}
        self.output_names = list(graph.outputs)
        self.output_types: dict[str, str] = {}
        bad = defaultdict(list)
        known = set(self.input_names) | set(self.consts)
        for n in self.nodes:
            if _key(n) not in NODE_OPS:
                bad[_key(n)].append(n.name)
            for v in n.inputs:
                if v and v not in known:
                    raise ValueError(f"{n.where()} reads {v!r}, which no earlier node, input or initializer gives")
            known.update(o for o in n.outputs if o)
        if bad:
            raise ValueError("unsupported ONNX op(s) for minquant's quantization-operator executor: " + "; ".join(
                f"{op} (nodes {', '.join(repr(x) for x in names[:5])})" for op, names in bad.items()))
        missing = [o for o in self.output_names if o not in known]
        if missing:
            raise ValueError(f"graph output(s) {missing} are not computed by any node")

    # -- running ------------------------------------------------------------------------------------------
    def _feed(self, name: str, value) -> Tensor:
        t = tensor_of(value, f"input {name!r}", self.input_types[name])
        dims = self.input_dims[name]
        if dims is not None:
            if t.array.ndim != len(dims) or any(d is not None and d != s for d, s in zip(dims, t.array.shape)):
                shown = tuple("?" if d is None else d for d in dims)
                raise ValueError(f"input {name!r} has shape {t.array.shape}; the graph declares {shown}")
        return t

    def run(self, feeds) -> dict:
        """``{output name: array}`` for ``feeds`` (``{input name: array}``, every graph input given)."""
        if not hasattr(feeds, "keys"):
            raise TypeError(f"feeds must be a mapping of input name → array, got {type(feeds).__name__}")
        unknown = sorted(set(feeds) - set(self.input_names))
        missing = [k for k in self.input_names if k not in feeds]
        if unknown or missing:
            raise ValueError(f"feeds do not match the graph inputs {self.input_names}: "
                             + ", ".join(p for p in (f"missing {missing}" if missing else "",
                                                     f"unknown {unknown}" if unknown else "") if p))
        env: dict[str, Tensor] = dict(self.consts)
        env.update({k: self._feed(k, v) for k, v in feeds.items()})
        for n in self.nodes:
            ins = [env[v] if v else None for v in n.inputs]
            outs = NODE_OPS[_key(n)](n, ins, self.target)
            for name, t in zip(n.outputs, outs):
                if name:
                    env[name] = t
        self.output_types = {k: env[k].type for k in self.output_names}
        return {k: env[k].array for k in self.output_names}

    def __call__(self, *args, **feeds):
        """Run with the inputs given positionally (graph-input order) and/or by name; one output → its array,
        several → a tuple."""
        if len(args) > len(self.input_names):
            raise TypeError(f"{len(args)} positional inputs given; the graph has {len(self.input_names)}")
        dup = [k for k in self.input_names[:len(args)] if k in feeds]
        if dup:
            raise TypeError(f"input(s) {dup} given both by position and by name")
        outs = self.run({**dict(zip(self.input_names, args)), **feeds})
        vals = tuple(outs[k] for k in self.output_names)
        return vals[0] if len(vals) == 1 else vals

    def __repr__(self) -> str:
        ins = ", ".join(f"{k}: {self.input_types[k].lower()}" for k in self.input_names)
        ops = ", ".join(n.op for n in self.nodes[:6]) + (" …" if len(self.nodes) > 6 else "")
        return f"OnnxProgram({self.name!r}, inputs=({ins}), nodes=[{ops}], outputs={self.output_names}, " \
               f"target={self.target!r})"
