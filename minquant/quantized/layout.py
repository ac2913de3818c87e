"""Channels-last execution: the graph pass that runs a quantized model's int8 layers NHWC.

minquant's graph is NCHW (PyTorch's layout, :mod:`minquant.graph`). The int8 kernels are faster on
channels-last codes: a 1×1 stride-1 convolution *is* the GEMM of the pixel rows (batch·H·W, C) by the
weights, with no im2col and no repacking; the depthwise kernel reads 16 channels of a pixel in one load; an
add or a clamp does not care. So, like ONNX Runtime's NHWC transformer (which turns ``QLinearConv`` into
``NhwcQLinearConv`` and inserts ``Transpose`` nodes), :func:`channels_last_graph` rewrites a quantized graph
into an *execution plan*:

* every node whose kernel has a channels-last form (``nhwc_ok``: decided by the kernel table,
  :func:`minquant.quantized.executor.prepare_kernels`, from the layer and its target) joins a
  channels-last *region* — a convolution always, an add or a clamp when all its inputs come from the region
  (so that they are 4-D codes in the same order), a max or average pool likewise (a global pool's
  output is 1×1: its ``to_nchw`` moves no byte) — and becomes its channels-last op (:data:`NHWC_OPS`:
  ``qconv2d`` → ``qconv2d_nhwc``...);
* a ``to_nhwc`` node transposes each value entering a region (uint8 codes: a quarter of the float bytes), a
  ``to_nchw`` node each value leaving it (read by another node, or a graph output).

The layout is data in the plan — which op a node runs and where the transposes are — not a flag the
kernels test. Node names (and so every prepared layer and every output name) stay as they are; the
transposes get new names. Every channels-last kernel is bit-identical to its NCHW form, so the plan
computes the same codes as the graph (tests/test_channels_last.py); the plan is used only to run the
model (:class:`~minquant.quantized.model.QuantizedModel`), never to show intermediate values, which stay
NCHW. This module imports only NumPy and minquant's kernels.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..graph import OPS, Graph, Node, OpSpec, register_op, unique_name
from ..kernels.transpose import nchw_to_nhwc, nhwc_to_nchw
from . import ops  # noqa: F401  (registers the quantized ops first)

__all__ = ["NHWC_OPS", "channels_last_graph", "to_nhwc", "to_nchw"]

#: NCHW op → its channels-last op (same inputs, attributes and parameters; activations (N, H, W, C))
NHWC_OPS = {"qconv2d": "qconv2d_nhwc", "qadd": "qadd_nhwc", "qclamp": "qclamp_nhwc", "qmax_pool2d": "qmax_pool2d_nhwc",
            "qavg_pool2d": "qavg_pool2d_nhwc", "qadaptive_avg_pool2d": "qadaptive_avg_pool2d_nhwc"}

#: ops that may start a region (the others join only when every input is already channels-last)
_SEEDS = frozenset({"qconv2d"})


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) → (N, H, W, C), contiguous (:func:`~minquant.kernels.transpose.nchw_to_nhwc`)."""
    return nchw_to_nhwc(x)


def to_nchw(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) → (N, C, H, W), contiguous (:func:`~minquant.kernels.transpose.nhwc_to_nchw`)."""
    return nhwc_to_nchw(x)


for _op, _nhwc in NHWC_OPS.items():
    if _nhwc not in OPS:
        register_op(_nhwc, dataclasses.replace(OPS[_op], doc=f"{_op} on channels-last codes (execution plan)"))
for _op, _doc in (("to_nhwc", "codes NCHW → NHWC (execution plan)"), ("to_nchw", "codes NHWC → NCHW (execution plan)")):
    if _op not in OPS:
        register_op(_op, OpSpec(1, None, (), (), _doc))


def channels_last_graph(graph: Graph, nhwc_ok) -> Graph:
    """The execution plan of ``graph`` with channels-last regions (module docstring). ``nhwc_ok(node)``: whether
    the node's kernel has a channels-last form. Nodes share their attributes and parameter arrays with
    ``graph`` (nothing is copied); ``graph`` itself is not changed."""
    region: set[str] = set()
    for n in graph.nodes:
        if n.op in NHWC_OPS and nhwc_ok(n) and (n.op in _SEEDS or all(v in region for v in n.inputs)):
            region.add(n.name)
    taken = set(graph.inputs) | {n.name for n in graph.nodes}
    converted: dict[tuple[str, str], str] = {}   # (value, "to_nhwc" | "to_nchw") → the transposed value
    nodes: list[Node] = []

    def moved(value: str, op: str) -> str:
        key = (value, op)
        if key not in converted:
            name = unique_name(f"{value}.{op[3:]}", taken)
            taken.add(name)
            nodes.append(Node(name, op, [value], source=f"layout transpose of {value}"))
            converted[key] = name
        return converted[key]

    for n in graph.nodes:
        if n.name in region:
            inputs = [v if v in region else moved(v, "to_nhwc") for v in n.inputs]
            nodes.append(Node(n.name, NHWC_OPS[n.op], inputs, n.attrs, n.params, n.shape, n.source))
        else:
            inputs = [moved(v, "to_nchw") if v in region else v for v in n.inputs]
            nodes.append(n if inputs == n.inputs else Node(n.name, n.op, inputs, n.attrs, n.params, n.shape, n.source))
    outputs = [moved(v, "to_nchw") if v in region else v for v in graph.outputs]
    return Graph(graph.inputs, nodes, outputs, graph.input_shapes, graph.name)
