"""Run a :class:`~minquant.graph.Graph` on a NumPy batch.

Execution is one loop over ``graph.nodes`` (they are in topological order): look up the node's kernel
by op, call it with the values of the node's inputs, store the result under the node's name. A *kernel*
is any function ``kernel(node, inputs: list[np.ndarray]) -> np.ndarray``; :data:`FLOAT_KERNELS` maps
every op of the IR to its float implementation in :mod:`minquant.float_ops`. Another executor (the
quantized one) passes its own table — the loop, the input checks and the intermediate-value plumbing
stay the same.

Values nobody reads any more are dropped as the loop goes (peak memory ≈ the widest cut of the graph),
unless ``intermediates=True`` asks for all of them, or a ``hook(name, value)`` wants to see each one as
it is produced (e.g. calibration observers, which need not keep them).

This module imports only NumPy (and minquant's NumPy/Numba code).
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from . import float_ops as F
from .graph import Graph, Node

__all__ = ["run", "Schedule", "value_info", "infer_shapes", "FLOAT_KERNELS", "Kernel"]

Kernel = Callable[[Node, list], np.ndarray]


def _p(node: Node, name: str):
    return node.params.get(name)


#: op name → float kernel ``(node, inputs) -> output``.
FLOAT_KERNELS: dict[str, Kernel] = {
    "conv2d": lambda n, xs: F.conv2d(xs[0], n.params["weight"], _p(n, "bias"), n.attrs.stride, n.attrs.padding,
                                     n.attrs.dilation, n.attrs.groups),
    "linear": lambda n, xs: F.linear(xs[0], n.params["weight"], _p(n, "bias")),
    "batch_norm": lambda n, xs: F.batch_norm(xs[0], n.params["running_mean"], n.params["running_var"],
                                             n.params["weight"], n.params["bias"], n.attrs.eps),
    "relu": lambda n, xs: F.relu(xs[0]),
    "relu6": lambda n, xs: F.relu6(xs[0]),
    "hardswish": lambda n, xs: F.hardswish(xs[0]),
    "hardsigmoid": lambda n, xs: F.hardsigmoid(xs[0]),
    "add": lambda n, xs: F.add(xs[0], xs[1]),
    "mul": lambda n, xs: F.mul(xs[0], xs[1]),
    "cat": lambda n, xs: F.cat(xs, n.attrs.dim),
    "flatten": lambda n, xs: F.flatten(xs[0], n.attrs.start_dim, n.attrs.end_dim),
    "reshape": lambda n, xs: F.reshape(xs[0], n.attrs.shape),
    "adaptive_avg_pool2d": lambda n, xs: F.adaptive_avg_pool2d(xs[0], n.attrs.output_size),
    "avg_pool2d": lambda n, xs: F.avg_pool2d(xs[0], n.attrs.kernel_size, n.attrs.stride, n.attrs.padding,
                                             n.attrs.ceil_mode, n.attrs.count_include_pad,
                                             n.attrs.divisor_override),
    "max_pool2d": lambda n, xs: F.max_pool2d(xs[0], n.attrs.kernel_size, n.attrs.stride, n.attrs.padding,
                                             n.attrs.dilation, n.attrs.ceil_mode),
    "identity": lambda n, xs: F.identity(xs[0]),
    "clip": lambda n, xs: F.clip(xs[0], n.attrs.lo, n.attrs.hi),
    "relu_clip": lambda n, xs: F.relu_clip(xs[0], n.params["hi"]),
}


def _bind_inputs(graph: Graph, x) -> dict[str, np.ndarray]:
    """Map the caller's input(s) to graph input names and check dtype, shape and finiteness."""
    if isinstance(x, Mapping):
        feeds = dict(x)
        if set(feeds) != set(graph.inputs):
            raise ValueError(f"graph {graph.name!r} takes inputs {graph.inputs}, got {sorted(feeds)}")
    elif isinstance(x, (list, tuple)):
        if len(x) != len(graph.inputs):
            raise ValueError(f"graph {graph.name!r} takes {len(graph.inputs)} input(s), got {len(x)}")
        feeds = dict(zip(graph.inputs, x))
    else:
        if len(graph.inputs) != 1:
            raise ValueError(f"graph {graph.name!r} takes inputs {graph.inputs}: pass a dict or a list")
        feeds = {graph.inputs[0]: x}
    for name, v in feeds.items():
        if not isinstance(v, np.ndarray):
            raise ValueError(f"input {name!r} must be a NumPy array, got {type(v).__name__}")
        if v.dtype != np.float32:
            raise ValueError(f"input {name!r} must be float32, got {v.dtype} (use x.astype(np.float32))")
        want = graph.input_shapes.get(name)
        if want is not None and (v.ndim != len(want) or v.shape[1:] != tuple(want[1:])):
            raise ValueError(f"input {name!r} has shape {v.shape}; the graph expects (N, {', '.join(map(str, want[1:]))})")
        if v.shape[0] == 0:
            raise ValueError(f"input {name!r} is an empty batch")
        if not np.isfinite(v).all():
            raise ValueError(f"input {name!r} contains NaN or infinite values")
    return feeds


class Schedule:
    """:func:`run`'s loop worked out once for a graph and a kernel table: per node, its kernel, the names of
    its inputs and the values nobody reads after it (dropped as the loop goes). A model that runs the same
    graph on many batches keeps one (:class:`~minquant.quantized.QuantizedModel` does) and calls
    :meth:`run`; the schedule describes the nodes as they were when it was made."""

    def __init__(self, graph: Graph, kernels: Mapping[str, Kernel] | None = None):
        kernels = FLOAT_KERNELS if kernels is None else kernels
        self.graph = graph
        self.nodes = tuple(graph.nodes)
        last_use: dict[str, int] = {}
        for i, n in enumerate(graph.nodes):
            for v in n.inputs:
                last_use[v] = i
        keep = set(graph.outputs)
        get = kernels.get
        self.steps = []      # (node, kernel or None, input names, values to drop after it)
        for i, n in enumerate(self.nodes):
            ins = tuple(n.inputs)
            drop = [v for v in (ins if len(ins) == 1 else set(ins)) if last_use[v] == i and v not in keep]
            if n.name not in last_use and n.name not in keep:
                drop.append(n.name)
            self.steps.append((n, get(n.op), ins, drop))

    def run(self, x, *, intermediates: bool = False, hook: Callable[[str, np.ndarray], None] | None = None):
        """:func:`run` on this schedule's graph and kernels (same arguments, same results)."""
        env = _bind_inputs(self.graph, x)
        if hook is not None:
            for name, v in env.items():
                hook(name, v)
        fast = hook is None and not intermediates
        for node, kernel, ins, drop in self.steps:
            if kernel is None:
                raise ValueError(f"no kernel for op {node.op!r} (node {node.name!r}) in this executor")
            try:        # (free in Python ≥ 3.11 when nothing is raised)
                out = kernel(node, [env[v] for v in ins])
            except ValueError as e:
                raise ValueError(f"node {node.name!r} ({node.op}, from {node.source or '?'}): {e}") from e
            env[node.name] = out
            if fast:
                for v in drop:
                    del env[v]
                continue
            if hook is not None:
                hook(node.name, out)
            if not intermediates:
                for v in drop:
                    del env[v]
        outs = tuple(env[v] for v in self.graph.outputs)
        result = outs[0] if len(outs) == 1 else outs
        return (result, env) if intermediates else result


def run(graph: Graph, x, *, kernels: Mapping[str, Kernel] | None = None, intermediates: bool = False,
        hook: Callable[[str, np.ndarray], None] | None = None):
    """Run ``graph`` on a batch.

    ``x``: a float32 array for a one-input graph (batch first, other dims as ``graph.input_shapes``),
    or a list / dict of arrays by input name. ``kernels`` defaults to :data:`FLOAT_KERNELS`.

    Returns the output array (a tuple of arrays if the graph has several outputs). With
    ``intermediates=True`` returns ``(output, values)`` where ``values`` maps every graph input and every
    node name to its value, in execution order. ``hook(name, value)`` is called for every input and node
    output as soon as it exists. (The loop is :class:`Schedule`'s, made for this call.)"""
    return Schedule(graph, kernels).run(x, intermediates=intermediates, hook=hook)


def value_info(graph: Graph, kernels=None, batch: int = 1) -> dict:
    """``{value: (shape, dtype name)}`` for every graph input and node output, found the one way minquant
    finds shapes: by running the graph once on zeros of ``graph.input_shapes`` (batch set to ``batch``) with
    ``kernels`` (default: the float kernels; a quantized model passes its own table)."""
    missing = [v for v in graph.inputs if v not in graph.input_shapes]
    if missing:
        raise ValueError(f"graph {graph.name!r}: inputs {missing} have no input_shapes")
    feeds = {v: np.zeros((batch,) + tuple(graph.input_shapes[v][1:]), np.float32) for v in graph.inputs}
    info: dict[str, tuple] = {}
    run(graph, feeds, kernels=kernels, hook=lambda name, v: info.__setitem__(name, (tuple(v.shape), v.dtype.name)))
    return info


def infer_shapes(graph: Graph, batch: int = 1) -> Graph:
    """Fill every ``node.shape`` from :func:`value_info` (float kernels). Returns the graph (modified in
    place)."""
    info = value_info(graph, batch=batch)
    for n in graph.nodes:
        n.shape = info[n.name][0]
    return graph
