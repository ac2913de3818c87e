"""minquant's graph IR: a model as a list of :class:`Node` s over NumPy arrays.

A :class:`Graph` is what every other part of minquant works on — the float executor runs it, the
quantizer rewrites it (BatchNorm folding, Conv+ReLU fusion, inserting quantize steps), ``summary()``
prints it. It is deliberately small:

* a **value** is named by a string: either a graph input (``graph.inputs``) or the output of the node of
  that name (every node has exactly one output, named like the node);
* a **node** has an ``op`` name (``"conv2d"``, ``"relu"``, ...), the names of its ``inputs`` (in order),
  its ``attrs`` (a small frozen dataclass per op, e.g. :class:`Conv2dAttrs`; ``None`` for ops without
  attributes) and its ``params`` (NumPy arrays: ``weight``, ``bias``, ``running_mean``...);
* ``graph.nodes`` is kept in **topological order** (a node comes after the producers of its inputs), so
  executing the graph is one loop over the list.

Tensor layout is PyTorch's: activations are NCHW float32 with the batch first; weights are stored as in
``torch.nn`` (conv ``(O, C/groups, KH, KW)``, linear ``(O, I)``). The batch size is free; every other
dimension is fixed by the model.

Which ops exist, their arity, attribute class and parameters are listed in :data:`OPS` (an
:class:`OpSpec` per op). A later stage that needs new ops (``quantize``, a quantized conv...) adds
them with :func:`register_op`; :meth:`Graph.validate` checks every node against its spec.

Rewriting helpers (all keep the list topologically ordered and the names consistent):
:meth:`Graph.consumers`, :meth:`Graph.producer`, :meth:`Graph.replace_node`, :meth:`Graph.remove_node`
(bypass a one-input node), :meth:`Graph.insert_after`, :meth:`Graph.toposort`, :meth:`Graph.copy`.

This module imports only NumPy.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Iterator

import numpy as np

__all__ = [
    "Node", "Graph", "OpSpec", "OPS", "register_op",
    "Conv2dAttrs", "BatchNormAttrs", "AvgPool2dAttrs", "MaxPool2dAttrs", "AdaptiveAvgPool2dAttrs",
    "CatAttrs", "FlattenAttrs", "ReshapeAttrs", "ClipAttrs", "unique_name", "int_pair", "format_graph",
    "shape_text", "number_text", "param_text",
]


# ----------------------------------------------------------------------------------------------------------
# Attributes: one small frozen dataclass per op (validated on construction)
# ----------------------------------------------------------------------------------------------------------

def int_pair(v, name: str, *, minimum: int = 0) -> tuple[int, int]:
    """An int, or a sequence of one or two ints (PyTorch's ``_pair``), → a pair of Python ints ≥ ``minimum``.

    The one place minquant reads a 2-D geometry argument (stride, padding, dilation, kernel_size,
    output_size): the graph's attributes, the float ops, im2col and the integer kernels all call it.
    Raises ValueError naming ``name`` for anything else — a float (``2.0``), a bool, a string, three
    values, or a value below ``minimum``."""
    def one(t):
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        return int(t)

    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v[()]
    if isinstance(v, (int, np.integer, bool, np.bool_)):
        pair = (one(v),) * 2
    else:
        try:
            items = tuple(v)
        except TypeError:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}") from None
        if len(items) not in (1, 2) or isinstance(v, (str, bytes)):
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        pair = tuple(one(t) for t in items) * (2 // len(items))
    if min(pair) < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}, got {v!r}")
    return pair


@dataclass(frozen=True)
class Conv2dAttrs:
    """``conv2d``: out[n, o, y, x] = bias[o] + Σ_{c, i, j} w[o, c, i, j] · x_pad[n, g·C/G + c, y·sh + i·dh,
    x·sw + j·dw] for output channel ``o`` in group ``g = o // (O/G)``. Zero padding only."""
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def __post_init__(self):
        object.__setattr__(self, "stride", int_pair(self.stride, "stride", minimum=1))
        object.__setattr__(self, "padding", int_pair(self.padding, "padding", minimum=0))
        object.__setattr__(self, "dilation", int_pair(self.dilation, "dilation", minimum=1))
        if int(self.groups) < 1:
            raise ValueError(f"groups must be ≥ 1, got {self.groups}")
        object.__setattr__(self, "groups", int(self.groups))


@dataclass(frozen=True)
class BatchNormAttrs:
    """``batch_norm`` (inference): y = (x − running_mean) / √(running_var + eps) · weight + bias, per channel."""
    eps: float = 1e-5

    def __post_init__(self):
        if not float(self.eps) >= 0:
            raise ValueError(f"eps must be ≥ 0, got {self.eps}")
        object.__setattr__(self, "eps", float(self.eps))


@dataclass(frozen=True)
class AvgPool2dAttrs:
    """``avg_pool2d`` with PyTorch's semantics (see :func:`minquant.float_ops.avg_pool2d`)."""
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None

    def __post_init__(self):
        k = int_pair(self.kernel_size, "kernel_size", minimum=1)
        p = int_pair(self.padding, "padding", minimum=0)
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise ValueError(f"padding {p} must be at most half the kernel size {k}")
        object.__setattr__(self, "kernel_size", k)
        object.__setattr__(self, "stride", int_pair(self.stride, "stride", minimum=1))
        object.__setattr__(self, "padding", p)
        object.__setattr__(self, "ceil_mode", bool(self.ceil_mode))
        object.__setattr__(self, "count_include_pad", bool(self.count_include_pad))
        if self.divisor_override is not None:
            if int(self.divisor_override) < 1:
                raise ValueError(f"divisor_override must be ≥ 1, got {self.divisor_override}")
            object.__setattr__(self, "divisor_override", int(self.divisor_override))


@dataclass(frozen=True)
class MaxPool2dAttrs:
    """``max_pool2d`` with PyTorch's semantics: padding reads −∞, dilation spreads the window."""
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False

    def __post_init__(self):
        k = int_pair(self.kernel_size, "kernel_size", minimum=1)
        p = int_pair(self.padding, "padding", minimum=0)
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise ValueError(f"padding {p} must be at most half the kernel size {k}")
        object.__setattr__(self, "kernel_size", k)
        object.__setattr__(self, "stride", int_pair(self.stride, "stride", minimum=1))
        object.__setattr__(self, "padding", p)
        object.__setattr__(self, "dilation", int_pair(self.dilation, "dilation", minimum=1))
        object.__setattr__(self, "ceil_mode", bool(self.ceil_mode))


@dataclass(frozen=True)
class AdaptiveAvgPool2dAttrs:
    """``adaptive_avg_pool2d`` to a fixed ``output_size`` (oh, ow)."""
    output_size: tuple[int, int]

    def __post_init__(self):
        object.__setattr__(self, "output_size", int_pair(self.output_size, "output_size", minimum=1))


@dataclass(frozen=True)
class CatAttrs:
    """``cat``: concatenate the inputs along ``dim`` (≥ 1: the batch dimension is never concatenated)."""
    dim: int = 1

    def __post_init__(self):
        if int(self.dim) < 1:
            raise ValueError(f"cat dim must be ≥ 1 (dim 0 is the batch), got {self.dim}")
        object.__setattr__(self, "dim", int(self.dim))


@dataclass(frozen=True)
class FlattenAttrs:
    """``flatten`` dims ``start_dim..end_dim`` (inclusive, ``end_dim = -1`` is the last) into one."""
    start_dim: int = 1
    end_dim: int = -1

    def __post_init__(self):
        if int(self.start_dim) < 1:
            raise ValueError(f"flatten start_dim must be ≥ 1 (dim 0 is the batch), got {self.start_dim}")
        object.__setattr__(self, "start_dim", int(self.start_dim))
        object.__setattr__(self, "end_dim", int(self.end_dim))


@dataclass(frozen=True)
class ReshapeAttrs:
    """``reshape`` every sample to ``shape`` (without the batch dimension): out = x.reshape(N, *shape)."""
    shape: tuple[int, ...]

    def __post_init__(self):
        shape = tuple(int(s) for s in self.shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"reshape needs a concrete per-sample shape (no -1), got {shape}")
        object.__setattr__(self, "shape", shape)


@dataclass(frozen=True)
class ClipAttrs:
    """``clip``: y = min(max(x, lo), hi) (ONNX ``Clip``; ±inf for an absent bound)."""
    lo: float = float("-inf")
    hi: float = float("inf")

    def __post_init__(self):
        lo, hi = float(self.lo), float(self.hi)
        if np.isnan(lo) or np.isnan(hi) or lo > hi:
            raise ValueError(f"clip needs lo <= hi (no NaN), got ({self.lo}, {self.hi})")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)


# ----------------------------------------------------------------------------------------------------------
# The op table
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpSpec:
    """What a node of one op must look like.

    ``n_inputs``: exact number of inputs (``None``: one or more, e.g. ``cat``); ``attrs``: the attribute
    dataclass (``None``: the op takes no attributes); ``params``: required parameter names with the
    number of dimensions of each; ``optional``: parameters that may be absent (same format)."""
    n_inputs: int | None
    attrs: type | None = None
    params: tuple[tuple[str, int], ...] = ()
    optional: tuple[tuple[str, int], ...] = ()
    doc: str = ""


OPS: dict[str, OpSpec] = {
    "conv2d": OpSpec(1, Conv2dAttrs, (("weight", 4),), (("bias", 1),), "2-D convolution, any groups"),
    "linear": OpSpec(1, None, (("weight", 2),), (("bias", 1),), "y = x·Wᵀ + b over the last dimension"),
    "batch_norm": OpSpec(1, BatchNormAttrs, (("running_mean", 1), ("running_var", 1), ("weight", 1),
                                             ("bias", 1)), (), "inference BatchNorm over dim 1"),
    "relu": OpSpec(1, None, (), (), "max(x, 0)"),
    "relu6": OpSpec(1, None, (), (), "min(max(x, 0), 6)"),
    "hardswish": OpSpec(1, None, (), (), "x · relu6(x + 3) / 6"),
    "hardsigmoid": OpSpec(1, None, (), (), "relu6(x + 3) / 6"),
    "add": OpSpec(2, None, (), (), "a + b (NumPy broadcasting)"),
    "mul": OpSpec(2, None, (), (), "a · b (NumPy broadcasting, e.g. squeeze-excite scales)"),
    "cat": OpSpec(None, CatAttrs, (), (), "concatenate along dim"),
    "flatten": OpSpec(1, FlattenAttrs, (), (), "merge dims start_dim..end_dim"),
    "reshape": OpSpec(1, ReshapeAttrs, (), (), "x.reshape(N, *shape)"),
    "adaptive_avg_pool2d": OpSpec(1, AdaptiveAvgPool2dAttrs, (), (), "average over adaptive windows"),
    "avg_pool2d": OpSpec(1, AvgPool2dAttrs, (), (), "average over fixed windows"),
    "max_pool2d": OpSpec(1, MaxPool2dAttrs, (), (), "maximum over fixed windows"),
    "identity": OpSpec(1, None, (), (), "x (what Dropout and Identity are at inference)"),
    "clip": OpSpec(1, ClipAttrs, (), (), "min(max(x, lo), hi) (ONNX Clip)"),
    "relu_clip": OpSpec(1, None, (("hi", 1),), (), "min(max(x, 0), hi[c]) per channel (ReLU6 after equalization)"),
}


def register_op(name: str, spec: OpSpec, *, replace: bool = False) -> None:
    """Add an op to :data:`OPS` (for later stages: quantize/dequantize, quantized kernels...)."""
    if not isinstance(spec, OpSpec):
        raise ValueError(f"spec for op {name!r} must be an OpSpec, got {type(spec).__name__}")
    if name in OPS and not replace:
        raise ValueError(f"op {name!r} is already registered (pass replace=True to redefine it)")
    OPS[name] = spec


# ----------------------------------------------------------------------------------------------------------
# Node and Graph
# ----------------------------------------------------------------------------------------------------------

def unique_name(base: str, taken, sep: str = "_") -> str:
    """``base`` if it is not in ``taken`` (a set, dict... anything supporting ``in``), else the first free
    ``base{sep}1``, ``base{sep}2``, ... — the importers' and the exporter's way to name nodes after their
    source without collisions. Does not add the name to ``taken``."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}{sep}{k}"
    return name


@dataclass
class Node:
    """One operation. Its single output value carries the node's ``name``.

    ``shape`` is the output shape seen with the example input the graph was built from (batch included;
    informational, filled by :func:`minquant.executor.infer_shapes`). ``source`` says where the node came
    from (e.g. ``"features.0.0 (Conv2d)"``) for error messages and for mapping back to a framework model."""
    name: str
    op: str
    inputs: list[str]
    attrs: Any = None
    params: dict[str, np.ndarray] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None
    source: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"node name must be a non-empty string, got {self.name!r}")
        if isinstance(self.inputs, str):
            raise ValueError(f"node {self.name!r}: inputs must be a list of names, got the string {self.inputs!r}")
        self.inputs = list(self.inputs)
        self.params = dict(self.params)

    def attrs_text(self) -> str:
        """``stride=(2, 2) padding=(1, 1) ...`` — the attributes that differ from their defaults."""
        if self.attrs is None:
            return ""
        parts = []
        for f in fields(self.attrs):
            v = getattr(self.attrs, f.name)
            if f.default is not MISSING and v == f.default:
                continue
            parts.append(f"{f.name}={v}")
        return " ".join(parts)

    def num_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}{list(v.shape)}" for k, v in self.params.items())
        return (f"Node({self.name!r}, {self.op!r}, inputs={self.inputs}"
                + (f", attrs=[{self.attrs_text()}]" if self.attrs is not None else "")
                + (f", params=[{params}]" if params else "") + ")")


class Graph:
    """A model: graph ``inputs`` (names), ``nodes`` in topological order, ``outputs`` (value names).

    ``input_shapes[name]`` is the example shape of each input (batch first); the executor accepts any
    batch size but checks the other dimensions. ``name`` is a label for printing."""

    def __init__(self, inputs, nodes, outputs, input_shapes=None, name: str = "graph"):
        self.inputs: list[str] = list(inputs)
        self.nodes: list[Node] = list(nodes)
        self.outputs: list[str] = list(outputs)
        self.input_shapes: dict[str, tuple[int, ...]] = {k: tuple(int(d) for d in v)
                                                         for k, v in dict(input_shapes or {}).items()}
        self.name = name
        self.validate()

    # -- lookup ---------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, name: str) -> bool:
        return any(n.name == name for n in self.nodes)

    def node(self, name: str) -> Node:
        """The node called ``name`` (ValueError if there is none)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise ValueError(f"graph {self.name!r} has no node named {name!r}")

    def index(self, name: str) -> int:
        """Position of node ``name`` in ``nodes``."""
        for i, n in enumerate(self.nodes):
            if n.name == name:
                return i
        raise ValueError(f"graph {self.name!r} has no node named {name!r}")

    def producer(self, value: str) -> Node | None:
        """The node whose output is ``value``; ``None`` for a graph input."""
        if value in self.inputs:
            return None
        return self.node(value)

    def consumers(self, value: str) -> list[Node]:
        """Nodes that read ``value`` (each listed once, in graph order). Graph outputs are not nodes:
        see :meth:`is_output`."""
        return [n for n in self.nodes if value in n.inputs]

    def is_output(self, value: str) -> bool:
        return value in self.outputs

    def nodes_of(self, op: str) -> list[Node]:
        """All nodes with the given op, in graph order."""
        return [n for n in self.nodes if n.op == op]

    # -- rewriting ------------------------------------------------------------------------------------
    def _rename_uses(self, old: str, new: str, *, skip: Node | None = None) -> None:
        """Make every reader of value ``old`` (nodes except ``skip``, graph outputs) read ``new``."""
        for n in self.nodes:
            if n is not skip:
                n.inputs = [new if v == old else v for v in n.inputs]
        self.outputs = [new if v == old else v for v in self.outputs]

    def replace_node(self, name: str, new: Node) -> Node:
        """Put ``new`` where node ``name`` was. If ``new`` has another name, the readers of ``name`` now
        read ``new.name``. Returns the old node. (E.g. conv2d → conv2d with folded BatchNorm params.)"""
        i = self.index(name)
        old = self.nodes[i]
        self.nodes[i] = new
        if new.name != name:
            self._rename_uses(name, new.name, skip=new)
        self.validate()
        return old

    def remove_node(self, name: str) -> Node:
        """Delete a node by *bypassing* it: its readers (and the graph outputs) read its first input
        instead. Used for identity-like nodes and, after folding its numbers into the producer, for
        BatchNorm or a fused activation. The node must have exactly one input. Returns the removed node."""
        i = self.index(name)
        node = self.nodes[i]
        if len(node.inputs) != 1:
            raise ValueError(f"remove_node({name!r}): only a one-input node can be bypassed, "
                             f"this {node.op} has inputs {node.inputs}")
        del self.nodes[i]
        self._rename_uses(name, node.inputs[0])
        self.validate()
        return node

    def insert_after(self, value: str, new: Node) -> Node:
        """Insert ``new`` reading ``value`` and make every other reader of ``value`` (and the graph outputs)
        read ``new`` instead — e.g. a quantize step after an activation. ``new.inputs`` must contain
        ``value``. ``new`` is placed right after the producer of ``value`` (first, for a graph input)."""
        if value not in new.inputs:
            raise ValueError(f"insert_after({value!r}): the new node {new.name!r} must read {value!r}, "
                             f"its inputs are {new.inputs}")
        pos = 0 if value in self.inputs else self.index(value) + 1
        self.nodes.insert(pos, new)
        self._rename_uses(value, new.name, skip=new)
        self.toposort()  # new may also read values produced later than `value`
        self.validate()
        return new

    def toposort(self) -> None:
        """Reorder ``nodes`` topologically, keeping the current order wherever it is already valid."""
        available = set(self.inputs)
        pending = list(self.nodes)
        ordered: list[Node] = []
        while pending:
            for i, n in enumerate(pending):
                if all(v in available for v in n.inputs):
                    ordered.append(n)
                    available.add(n.name)
                    del pending[i]
                    break
            else:
                missing = {v for n in pending for v in n.inputs if v not in available}
                raise ValueError(f"graph {self.name!r} has a cycle or reads undefined values: "
                                 f"nodes {[n.name for n in pending]} wait for {sorted(missing)}")
        self.nodes = ordered

    def copy(self) -> "Graph":
        """A deep copy (nodes, attribute dataclasses and parameter arrays are all copied)."""
        nodes = [Node(n.name, n.op, list(n.inputs), n.attrs,  # attrs are frozen: sharing is safe
                      {k: v.copy() for k, v in n.params.items()}, n.shape, n.source) for n in self.nodes]
        return Graph(self.inputs, nodes, self.outputs, self.input_shapes, self.name)

    # -- checking -------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError unless: names are unique and do not shadow inputs; every node reads values
        defined earlier (topological order); ops are known; arity, attrs type and params match the op's
        :class:`OpSpec`; params are float/integer NumPy arrays; outputs exist."""
        if not self.inputs:
            raise ValueError(f"graph {self.name!r} has no inputs")
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"graph {self.name!r}: duplicate input names {self.inputs}")
        defined = set(self.inputs)
        for n in self.nodes:
            where = f"graph {self.name!r}, node {n.name!r} ({n.op})"
            if n.name in defined:
                raise ValueError(f"{where}: the name {n.name!r} is already used")
            spec = OPS.get(n.op)
            if spec is None:
                raise ValueError(f"{where}: unknown op {n.op!r}; known ops: {sorted(OPS)}")
            for v in n.inputs:
                if v not in defined:
                    raise ValueError(f"{where}: input {v!r} is not a graph input or an earlier node")
            if spec.n_inputs is None:
                if not n.inputs:
                    raise ValueError(f"{where}: needs at least one input")
            elif len(n.inputs) != spec.n_inputs:
                raise ValueError(f"{where}: needs {spec.n_inputs} input(s), has {len(n.inputs)}")
            if spec.attrs is None:
                if n.attrs is not None:
                    raise ValueError(f"{where}: takes no attributes, got {n.attrs!r}")
            elif not isinstance(n.attrs, spec.attrs):
                raise ValueError(f"{where}: attrs must be a {spec.attrs.__name__}, got {type(n.attrs).__name__}")
            allowed = dict(spec.params) | dict(spec.optional)
            for p, ndim in spec.params:
                if p not in n.params:
                    raise ValueError(f"{where}: missing parameter {p!r}")
            for p, arr in n.params.items():
                if p not in allowed:
                    raise ValueError(f"{where}: unexpected parameter {p!r} (allowed: {sorted(allowed)})")
                if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
                    raise ValueError(f"{where}: parameter {p!r} must be a numeric NumPy array, "
                                     f"got {type(arr).__name__}")
                if arr.ndim != allowed[p]:
                    raise ValueError(f"{where}: parameter {p!r} must have {allowed[p]} dims, has shape {arr.shape}")
            defined.add(n.name)
        for v in self.outputs:
            if v not in defined:
                raise ValueError(f"graph {self.name!r}: output {v!r} is not a graph input or a node")
        if not self.outputs:
            raise ValueError(f"graph {self.name!r} has no outputs")

    # -- printing -------------------------------------------------------------------------------------
    def num_params(self) -> int:
        """Total number of parameter elements."""
        return sum(n.num_params() for n in self.nodes)

    def param_bytes(self) -> int:
        """Total bytes of all parameter arrays as stored (fp32: 4 bytes per element)."""
        return int(sum(p.nbytes for n in self.nodes for p in n.params.values()))

    def summary(self) -> str:
        """A readable table: one line per node with its op, inputs, output shape, attributes and params
        (:func:`format_graph`)."""
        return format_graph(self)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (f"Graph({self.name!r}, inputs={self.inputs}, outputs={self.outputs}, "
                f"{len(self.nodes)} nodes)")

    def __deepcopy__(self, memo):
        return self.copy()


# ----------------------------------------------------------------------------------------------------------
# Printing a graph as text (Graph.summary, QuantizedModel.summary, lesson.render.to_text)
# ----------------------------------------------------------------------------------------------------------

def number_text(v) -> str:
    """A float with 6 significant digits (``0.0441996``)."""
    return f"{float(v):.6g}"


def shape_text(info, v, *, batch: bool = False, sep: str = "×", dtype_first: bool = True) -> str:
    """The shape and dtype of value ``v`` from ``info`` (``{value: (shape, dtype name)}``, e.g.
    :func:`minquant.executor.value_info`): ``uint8 32×28×28`` (batch dimension dropped) or, with ``batch``,
    ``float32 N×1×28×28``; ``?`` for a value ``info`` does not know. ``dtype_first=False``: ``32×28×28 uint8``."""
    if not info or v not in info:
        return "?"
    shape, dtype = info[v]
    dims = ("N",) + tuple(shape[1:]) if batch else tuple(shape[1:])
    dims_text = sep.join(str(d) for d in dims) if dims else "scalar"
    return f"{dtype} {dims_text}" if dtype_first else f"{dims_text} {dtype}"


def param_text(name, arr) -> str:
    """``weight int8[64, 32, 3, 3] −64…64`` (one value: ``= v``)."""
    arr = np.asarray(arr)
    text = f"{name} {arr.dtype.name}{list(arr.shape)}"
    if arr.size == 1:
        return text + f" = {number_text(arr.ravel()[0])}"
    if arr.size:
        text += f" {number_text(arr.min())}…{number_text(arr.max())}"
    return text


def _attrs_long(node) -> str:
    """Every attribute that differs from its default, floats with 6 digits, other values as ``repr``."""
    a = node.attrs
    if a is None or not hasattr(a, "__dataclass_fields__"):
        return ""
    parts = []
    for f in fields(a):
        v = getattr(a, f.name)
        if f.default is not MISSING and v == f.default:
            continue
        if isinstance(v, float):
            v = number_text(v)
        elif isinstance(v, tuple) and v and all(isinstance(t, float) for t in v):
            v = "(" + ", ".join(number_text(t) for t in v) + ")"
        else:
            v = repr(v)
        parts.append(f"{f.name}={v}")
    return " ".join(parts)


def _table(lines, head, rows):
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    for r in [head] + rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def format_graph(graph: "Graph", *, header: str | None = None, info=None, qparams=None, columns=None,
                 listing: bool = False) -> str:
    """The one way minquant prints a graph as text.

    ``info``: ``{value: (shape, dtype name)}`` (:func:`minquant.executor.value_info`; without it the
    nodes' own ``shape``); ``qparams``: ``{value: (scale, zero point)}`` of uint8 values; ``header``: the
    first line (default: the graph's name, inputs, outputs, node and parameter counts).

    * a **table** (default), one row per node; ``columns`` is a list of ``(title, node -> str)`` (default:
      name, op, inputs, shape, attrs, params — :meth:`Graph.summary`; :meth:`QuantizedModel.summary
      <minquant.quantized.model.QuantizedModel.summary>` passes its own);
    * a **listing** (``listing=True``, :func:`minquant.lesson.render.to_text`): the inputs, then one block
      per node — number, name, op, inputs and source; output dtype and shape with the (scale, zero point);
      every non-default attribute; every parameter with dtype, shape and min…max — then the outputs."""
    qparams = qparams or {}
    if header is None:
        def shp(s):
            return "[" + ", ".join(str(d) for d in s) + "]" if s is not None else "?"
        ins = ", ".join(f"{v}{shp(graph.input_shapes.get(v))}" for v in graph.inputs)
        header = (f"Graph {graph.name!r}: inputs {ins} → outputs {', '.join(graph.outputs)}; "
                  f"{len(graph.nodes)} nodes, {graph.num_params():,} params ({graph.param_bytes():,} bytes)")
    lines = [header]
    if listing:
        for v in graph.inputs:
            lines.append(f"  input  {v}  {shape_text(info, v, batch=True)}")
        width = len(str(len(graph.nodes)))
        for i, n in enumerate(graph.nodes, 1):
            src = f"   [{n.source}]" if n.source else ""
            lines.append(f"  {i:>{width}}. {n.name}  {n.op}  ← {', '.join(n.inputs)}{src}")
            pad = " " * (width + 6)
            out = f"{pad}out    {shape_text(info, n.name)}"
            if n.name in qparams:
                s, z = qparams[n.name]
                out += f"   scale {number_text(s)}  zero point {z}"
            lines.append(out)
            attrs = _attrs_long(n)
            if attrs:
                lines.append(f"{pad}attrs  {attrs}")
            if n.params:
                lines.append(f"{pad}params " + " · ".join(param_text(k, p) for k, p in n.params.items()))
        for v in graph.outputs:
            lines.append(f"  output {v}  {shape_text(info, v, batch=True)}")
        return "\n".join(lines)
    if columns is None:
        def shape_of(n):
            if info is not None:
                return "[" + ", ".join(str(d) for d in info[n.name][0]) + "]" if n.name in info else "?"
            return "[" + ", ".join(str(d) for d in n.shape) + "]" if n.shape is not None else "?"
        columns = [("name", lambda n: n.name), ("op", lambda n: n.op), ("inputs", lambda n: ", ".join(n.inputs)),
                   ("shape", shape_of), ("attrs", lambda n: n.attrs_text()),
                   ("params", lambda n: " ".join(f"{k}[{', '.join(str(d) for d in v.shape)}]"
                                                 for k, v in n.params.items()))]
    head = tuple(t for t, _ in columns)
    rows = [tuple(f(n) for _, f in columns) for n in graph.nodes]
    _table(lines, head, rows)
    return "\n".join(lines)
