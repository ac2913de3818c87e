"""Look at a model: a text listing (:func:`to_text`) and a box-and-arrow drawing (:func:`to_png`).

    print(minquant.lesson.render.to_text(qm))            # QuantizedModel, float Graph, or an ONNX file's path
    minquant.lesson.render.to_png(qm, "model.png")       # one box per node, top to bottom, int8 vs float coloured

Both accept a :class:`~minquant.graph.Graph`, a :class:`~minquant.quantized.QuantizedModel`, or the path
of an ONNX file (read with ``minquant.interop.onnx.importer.from_onnx`` or ``from_onnx_quantized``). Shapes and dtypes come from one batch-1
run on zeros, so every listed value is what the executor really produces.

**Listing.** One block per node, in execution order::

     3. features.2  qconv2d  ← features.0                          [features.2 (Conv2d)]
          out    uint8 64×28×28   scale 0.0441996  zero point 0
          attrs  padding=(1, 1) x_scale=0.00197746 … clamp=(0, 255) activation='relu'
          params weight int8[64, 32, 3, 3] −64…64 · w_scale float32[64] 0.000263…0.00145 · …

**Drawing.** Nodes in execution order fill columns top to bottom (a new column every ``rows`` nodes, so
MobileNetV2's ~100–150 nodes fit on one page); an arrow joins each node to its readers — straight down
for the next node, an arc at the column's side for a skip (residual) connection, a dashed line into
the next column. Box colour says what the node computes on: **int8** (uint8 codes out or int8 weights),
**float**, **quantize / dequantize** (the boundary), **dynamic** (int8 weights, float activations). Each
box shows the name, the op and the output shape (with the scale / zero point for codes).

The text comes from the one graph formatter, :func:`minquant.graph.format_graph`; matplotlib (its Agg
canvas, never pyplot) is imported by :func:`to_png` only.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from ..files import atomic_path
from ..graph import shape_text

__all__ = ["to_text", "to_png", "value_info", "node_kind", "KIND_COLORS"]

#: box colours by :func:`node_kind`
KIND_COLORS = {"int8": "#f6b26b", "float": "#9fc5e8", "convert": "#b4a7d6", "dynamic": "#ffe599",
               "input": "#d9d9d9"}
_KIND_LABELS = {"int8": "int8 (uint8 codes / int8 weights)", "float": "float32",
                "convert": "quantize / dequantize", "dynamic": "dynamic int8 (float activations)",
                "input": "graph input"}


# ---------------------------------------------------------------------------------------------------------
# what the model is
# ---------------------------------------------------------------------------------------------------------
def _as_model(obj):
    """(graph, QuantizedModel or None) from a Graph, a QuantizedModel or an ONNX file path."""
    from ..graph import Graph
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if not path.is_file():
            raise ValueError(f"{path} is not a file (expected a Graph, a QuantizedModel or an ONNX file)")
        try:
            from ..interop.onnx.importer import from_onnx, from_onnx_quantized, onnx_is_quantized
        except ImportError as e:
            raise ValueError(f"reading {path} needs minquant.interop.onnx.importer.from_onnx, which is not available: {e}") \
                from e
        obj = (from_onnx_quantized if onnx_is_quantized(path) else from_onnx)(path)
    if isinstance(obj, Graph):
        return obj, None
    if hasattr(obj, "graph") and hasattr(obj, "qparams") and isinstance(getattr(obj, "graph"), Graph):
        return obj.graph, obj
    raise ValueError(f"expected a minquant Graph, a QuantizedModel or an ONNX file path, got {type(obj).__name__}")


def value_info(model_or_graph) -> dict:
    """``{value: (shape, dtype name)}`` for every graph input and node output, from one batch-1 run on
    zeros (a QuantizedModel's own kernels; for a Graph the float kernels). Needs ``graph.input_shapes`` for every input."""
    graph, qm = _as_model(model_or_graph)
    if qm is not None:
        return qm.shapes()
    from ..executor import value_info as run_value_info
    return run_value_info(graph)


def node_kind(node, info=None) -> str:
    """'convert' (quantize / dequantize), 'dynamic' (dynamic_linear / dynamic_conv2d), 'int8' (any other
    op of :mod:`minquant.quantized.ops`, or a node whose output is uint8) or 'float'."""
    if node.op in ("quantize", "dequantize"):
        return "convert"
    if node.op.startswith("dynamic_"):
        return "dynamic"
    if info and node.name in info and info[node.name][1] == "uint8":
        return "int8"
    try:
        from ..quantized import ops as qops
        if node.op in qops.QUANTIZED_OPS:
            return "int8"
    except ImportError:  # pragma: no cover
        pass
    return "float"


def _op_label(node) -> str:
    """The op with its geometry in short: ``qconv2d 3×3 /2 g32``, ``max_pool2d 2×2``."""
    a, extra = node.attrs, []
    w = node.params.get("weight")
    if w is not None and w.ndim == 4:
        extra.append(f"{w.shape[2]}×{w.shape[3]}")
    elif getattr(a, "kernel_size", None):
        extra.append("×".join(str(k) for k in a.kernel_size))
    stride = getattr(a, "stride", None)
    if stride and tuple(stride) != (1, 1) and not (getattr(a, "kernel_size", None) and tuple(stride) == tuple(a.kernel_size)):
        extra.append("/" + ("×".join(str(t) for t in stride) if stride[0] != stride[1] else str(stride[0])))
    if getattr(a, "groups", 1) > 1:
        extra.append(f"g{a.groups}")
    return " ".join([node.op] + extra)


# ---------------------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------------------
def to_text(model_or_graph) -> str:
    """A readable listing of the model (module docstring): a header, the inputs, then for each node its
    number, name, op, inputs and source; its output dtype and shape (batch omitted) with the (scale, zero
    point) of uint8 values; its attributes; its parameters (dtype, shape, min…max); then the outputs."""
    from ..graph import format_graph
    graph, qm = _as_model(model_or_graph)
    info = value_info(model_or_graph if not isinstance(model_or_graph, (str, os.PathLike)) else (qm or graph))
    if qm is not None:
        head = (f"QuantizedModel {graph.name!r} (target={str(qm.target)!r}): {len(graph.nodes)} nodes, "
                f"{graph.num_params():,} params, {qm.size_bytes():,} bytes")
    else:
        head = (f"Graph {graph.name!r} (float): {len(graph.nodes)} nodes, {graph.num_params():,} params, "
                f"{graph.param_bytes():,} bytes")
    return format_graph(graph, header=head, info=info, qparams=qm.qparams if qm is not None else None, listing=True)


# ---------------------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------------------
def _layout(n_boxes: int, rows: int | None):
    """(rows per column, columns). Default: columns = ⌈√(n / 8)⌉ — a column is ~5× as tall as it is wide,
    so this keeps the page roughly square (75 nodes: 4 columns of 19; 150 nodes: 5 columns of 30)."""
    if rows is None:
        cols = max(1, math.ceil(math.sqrt(n_boxes / 8)))
        rows = math.ceil(n_boxes / cols)
    rows = max(1, int(rows))
    return rows, math.ceil(n_boxes / rows)


def _polyline(ax, pts, color, arrow_cls, dashed=False):
    """An arrow along the polyline ``pts`` (inches), head at the last point."""
    from matplotlib.path import Path as MPath
    codes = [MPath.MOVETO] + [MPath.LINETO] * (len(pts) - 1)
    ax.add_patch(arrow_cls(path=MPath(pts, codes), arrowstyle="-|>", mutation_scale=8, lw=0.7, color=color,
                           linestyle="--" if dashed else "-"))


def to_png(model_or_graph, path, *, rows: int | None = None, dpi: int = 110, title: str | None = None) -> Path:
    """Draw the model (module docstring) into the PNG file ``path`` with matplotlib (Agg). ``rows``: boxes
    per column (default: chosen so the page is roughly square). Returns the path.

    Raises ValueError for an input that is not a Graph / QuantizedModel / ONNX file, an empty graph, or a
    path without the ``.png`` suffix."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"to_png writes PNG files; {path} does not end in .png")
    graph, qm = _as_model(model_or_graph)
    if not graph.nodes:
        raise ValueError(f"graph {graph.name!r} has no nodes to draw")
    info = value_info(qm or graph)
    qp = qm.qparams if qm is not None else {}

    from matplotlib.backends.backend_agg import FigureCanvasAgg   # Agg, without touching pyplot's state
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

    boxes = [("input", v, v, shape_text(info, v)) for v in graph.inputs]
    for n in graph.nodes:
        extra = shape_text(info, n.name)
        if n.name in qp:
            s, z = qp[n.name]
            extra += f"  s={float(s):.3g} z={z}"
        boxes.append((node_kind(n, info), n.name, _op_label(n), extra))
    pos = {}
    rows, cols = _layout(len(boxes), rows)
    box_w, box_h, col_w, row_h = 3.3, 0.62, 4.6, 0.86       # inches
    fig_w = cols * col_w + 0.4
    fig_h = rows * row_h + 1.3
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, fig_w)
    ax.set_ylim(0, fig_h)
    ax.axis("off")
    top = fig_h - 0.95
    for i, (kind, name, op, extra) in enumerate(boxes):
        c, r = divmod(i, rows)
        x0 = 0.3 + c * col_w
        y0 = top - r * row_h
        pos[name] = (x0, y0, c, r)
        is_out = name in graph.outputs
        ax.add_patch(FancyBboxPatch((x0, y0 - box_h), box_w, box_h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    fc=KIND_COLORS[kind], ec="black", lw=1.8 if is_out else 0.6))
        label = name if len(name) <= 30 else "…" + name[-29:]
        ax.text(x0 + 0.08, y0 - 0.17, label, fontsize=7.5, fontweight="bold", va="center", ha="left")
        ax.text(x0 + box_w - 0.08, y0 - 0.17, "input" if kind == "input" else op, fontsize=7, va="center",
                ha="right", style="italic")
        ax.text(x0 + 0.08, y0 - 0.44, extra + ("  → output" if is_out else ""), fontsize=6.5, va="center",
                ha="left", family="monospace")
    # edges: straight down to the next box; a bracket on the right for a skip inside a column (nested
    # skips get longer arms); for a later column, a route through the gap between the columns
    skips, routes = [], []
    for n in graph.nodes:
        for v in dict.fromkeys(n.inputs):
            (xs, ys, cs, rs), (xd, yd, cd, rd) = pos[v], pos[n.name]
            if cs == cd and rd == rs + 1:
                ax.add_patch(FancyArrowPatch((xs + box_w / 2, ys - box_h), (xd + box_w / 2, yd), arrowstyle="-|>",
                                             mutation_scale=8, lw=0.8, color="black"))
            elif cs == cd:
                skips.append((rs, rd, xs + box_w, ys - box_h / 2, yd - box_h / 2))
            else:
                routes.append((cs, cd, xs + box_w, ys - box_h / 2, xd, yd - box_h / 2))
    gap = col_w - box_w
    levels: list[list[tuple[int, int]]] = []
    for rs, rd, x, y0, y1 in sorted(skips, key=lambda t: t[1] - t[0]):
        lvl = next((i for i, spans in enumerate(levels) if all(rd <= a or rs >= b for a, b in spans)), len(levels))
        if lvl == len(levels):
            levels.append([])
        levels[lvl].append((rs, rd))
        arm = 0.12 + 0.1 * min(lvl, 3)
        _polyline(ax, [(x, y0), (x + arm, y0), (x + arm, y1), (x, y1)], "#333333", FancyArrowPatch)
    lanes: dict[int, int] = {}
    for cs, cd, x, y0, xd, y1 in routes:
        k = lanes.get(cs, 0)
        lanes[cs] = k + 1
        xm = x + 0.5 * gap + 0.09 * (k % 5) - 0.18 if cd == cs + 1 else x + 0.5 * gap
        dy = 0.1 * (k % 3 - 1)                  # lanes leave and enter at slightly different heights
        y0, y1 = y0 + dy, y1 - dy
        pts = [(x, y0), (xm, y0), (xm, y1), (xd, y1)] if cd == cs + 1 else [(x, y0), (xd, y1)]
        _polyline(ax, pts, "#777777", FancyArrowPatch, dashed=cd != cs + 1)
    kinds = [k for k in KIND_COLORS if any(b[0] == k for b in boxes)]
    ax.legend(handles=[Patch(fc=KIND_COLORS[k], ec="black", lw=0.6, label=_KIND_LABELS[k]) for k in kinds],
              loc="upper right", fontsize=7.5, ncol=len(kinds), frameon=False, bbox_to_anchor=(1, 1))
    name = title or (f"{graph.name} — " + (f"QuantizedModel (target={qm.target})" if qm is not None else "float Graph")
                     + f", {len(graph.nodes)} nodes")
    ax.text(0.3, fig_h - 0.3, name, fontsize=11, fontweight="bold", va="center", ha="left")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path
