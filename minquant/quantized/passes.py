"""Graph rewrites before quantization: fold BatchNorm into the convolution, fuse activations into layers.

**BatchNorm folding.** At inference BatchNorm is an affine map per channel, ``y = α·x + β`` with
``α = γ / √(σ² + ε)`` and ``β = b_bn − μ·α``. After a convolution ``x = W∗u + b`` this is again a
convolution:

    W' = α[o] · W[o, ...]          b' = α[o] · (b[o] − μ[o]) + b_bn[o]

so the BatchNorm disappears and only W', b' are quantized (one rounding instead of two). Computed in
float64 and rounded once to float32. A BatchNorm whose input is not a convolution read by it alone stays
a float ``batch_norm`` node (the quantizer then runs it as a float fallback).

**Activation fusion.** A ReLU or ReLU6 right after a conv / linear (its only reader) — or a ReLU right
after an add — is not a separate step in integer inference: it is the *clamp of the output stage*
(docs/quantization.md, step 7). With output qparams (s_y, z_y) real 0 is the code z_y, real 6 the code
``q(6) = z_y + rne(6 / s_y)``, so

    ReLU  → clamp codes to [z_y, 255]          ReLU6 → clamp codes to [z_y, min(255, q(6))]

ReLU6 stays ReLU6: the clamp at 6 is kept (torchvision's quantizable MobileNetV2 replaces ReLU6 by ReLU
before quantizing, which changes the function the float model computes). :func:`fusion_groups` does not
rewrite the float graph — calibration must still see the float activation's output — it returns which
nodes form one quantized step and which value carries the group's result.

**Cross-layer equalization** (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization
and Bias Correction"). For two convolutions A → (ReLU / ReLU6 / nothing) → B, scaling output channel c
of A by 1/s_c and input channel c of B by s_c leaves the function unchanged, because ReLU is positively
homogeneous: ``relu(x / s) = relu(x) / s``. With the weight ranges ``r_A[c] = max|W_A[c, ...]|`` and
``r_B[c] = max|W_B[:, c, ...]|``, the choice

    s_c = √(r_A[c] / r_B[c])          gives both ranges √(r_A[c]·r_B[c])

balances the two layers — and, what matters most with per-channel weights, scales A's *activation*
channels towards a common range, so a per-tensor activation scale serves them all (MobileNetV2's
depthwise outputs span orders of magnitude). ReLU6 is not homogeneous: ``min(max(x/s, 0), 6)`` clips at
6·s in the original units. Instead of replacing it by ReLU (what DFQ and torchvision do), the clip moves
with the channel: ReLU6 becomes ``relu_clip`` with ``hi[c] = 6 / s_c`` — the same function, exactly
(:func:`equalize`; the quantized model applies the per-channel top as a clamp on codes).

*Activation-aware variant* (what :func:`~minquant.quantized.static.quantize_static` uses): ``r_A[c]`` is the
measured range ``max|x_c|`` of the activation B reads (a few calibration batches), and

    s_c = r_A[c]^α / r_B[c]^(1−α)

α = 0.5 balances activation and weight ranges (SmoothQuant's form); smaller α pushes B's input-channel
weight ranges towards equal, so every activation channel reaches B with a similar weight — its share of
the per-tensor quantization noise then matches its share of B's output.

These functions import only NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..graph import Graph, Node

__all__ = ["fold_batch_norm", "Fusion", "fusion_groups", "equalize", "equalizable_pairs", "prepare_float_graph"]


def fold_batch_norm(graph: Graph) -> tuple[Graph, dict[str, str]]:
    """A copy of ``graph`` with every foldable ``conv2d → batch_norm`` pair merged into the conv (module
    docstring). Returns ``(graph, folded)``: ``folded`` maps each folded conv's name to the BatchNorm it
    absorbed — the conv's output now carries what was that BatchNorm's output."""
    g = graph.copy()
    folded = {}
    for bn in list(g.nodes):
        if bn.op != "batch_norm":
            continue
        src = g.producer(bn.inputs[0])
        if src is None or src.op != "conv2d" or len(g.consumers(src.name)) != 1 or g.is_output(src.name):
            continue
        p = bn.params
        alpha = p["weight"].astype(np.float64) / np.sqrt(p["running_var"].astype(np.float64) + bn.attrs.eps)
        w = src.params["weight"].astype(np.float64)
        if alpha.shape[0] != w.shape[0]:
            raise ValueError(f"cannot fold {bn.name!r}: {alpha.shape[0]} channels, conv {src.name!r} has "
                             f"{w.shape[0]} outputs")
        b = src.params.get("bias")
        b = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
        new_w = (w * alpha[:, None, None, None]).astype(np.float32)
        new_b = (alpha * (b - p["running_mean"].astype(np.float64)) + p["bias"].astype(np.float64)).astype(np.float32)
        g.replace_node(src.name, Node(src.name, "conv2d", list(src.inputs), src.attrs,
                                      {"weight": new_w, "bias": new_b}, bn.shape,
                                      f"{src.source} + {bn.source} (BatchNorm folded)"))
        g.remove_node(bn.name)          # its readers now read the conv
        folded[src.name] = bn.name
    return g, folded


@dataclass(frozen=True)
class Fusion:
    """One quantized step: ``layer`` (a conv2d / linear / add node) possibly followed by its fused
    ``activation`` node ('relu' or 'relu6'); ``output`` is the value that carries the group's result
    (the activation's output if there is one)."""
    layer: str
    activation: str | None
    activation_op: str | None
    output: str


_FUSABLE = {"conv2d": ("relu", "relu6", "relu_clip"), "linear": ("relu", "relu6"), "add": ("relu",)}


def fusion_groups(graph: Graph) -> dict[str, Fusion]:
    """For every conv2d / linear / add node: its :class:`Fusion` (module docstring), by layer name.

    An activation is fused only if it is the *only* reader of the layer's output and that output is not a
    graph output (otherwise the un-activated value is needed too)."""
    groups = {}
    for n in graph.nodes:
        if n.op not in _FUSABLE:
            continue
        readers = graph.consumers(n.name)
        act = None
        if len(readers) == 1 and not graph.is_output(n.name) and readers[0].op in _FUSABLE[n.op] \
                and readers[0].inputs == [n.name]:
            act = readers[0]
        groups[n.name] = Fusion(n.name, act.name if act else None, act.op if act else None,
                                act.name if act else n.name)
    return groups


def equalizable_pairs(g: Graph):
    """(A, activation or None, B) for conv A → [relu | relu6 | relu_clip] → conv B where every link is the
    only reader and B mixes A's channels in a way per-input-channel scaling can follow (groups = 1, or
    depthwise with one output per input channel)."""
    pairs = []
    for a in g.nodes:
        if a.op != "conv2d" or g.is_output(a.name):
            continue
        readers = g.consumers(a.name)
        if len(readers) != 1:
            continue
        act, b = None, readers[0]
        if b.op in ("relu", "relu6", "relu_clip"):
            if g.is_output(b.name) or len(g.consumers(b.name)) != 1:
                continue
            act, b = b, g.consumers(b.name)[0]
        if b.op != "conv2d" or b.inputs != [act.name if act else a.name]:
            continue
        o_b, cg_b = b.params["weight"].shape[:2]
        c = a.params["weight"].shape[0]
        if not (b.attrs.groups == 1 or (b.attrs.groups == c and cg_b == 1 and o_b == c)):
            continue
        pairs.append((a.name, act.name if act else None, b.name))
    return pairs


def equalize(graph: Graph, *, iterations: int = 20, tol: float = 1e-3, act_ranges=None,
             alpha: float = 0.5) -> tuple[Graph, dict[str, np.ndarray]]:
    """Cross-layer equalization of every conv → (activation) → conv pair (module docstring), repeated over
    the chain until no scale moves by more than ``tol`` (relative) or ``iterations`` passes.

    ``act_ranges``: {value B reads: per-channel max|x|} measured on the float graph — then ``r_A`` is that
    activation range (divided by the scales already applied) instead of A's weight range; ``alpha``: the
    exponent of ``s_c = r_A^α / r_B^(1−α)`` (0.5: DFQ's square root).

    Returns ``(graph, channel_scales)``: ``channel_scales[value]`` (float64 per channel) turns a value of
    the equalized graph back into the original model's units, ``original = equalized · scale`` — for A's
    output and its activation's output. Channels whose weights are all zero are left alone (s = 1)."""
    g = graph.copy()
    pairs = equalizable_pairs(g)
    scales: dict[str, np.ndarray] = {}
    for _ in range(iterations):
        moved = 0.0
        for a_name, act_name, b_name in pairs:
            a, b = g.node(a_name), g.node(b_name)
            wa, wb = a.params["weight"].astype(np.float64), b.params["weight"].astype(np.float64)
            b_in = act_name or a_name
            if act_ranges is not None and b_in in act_ranges:
                r_a = np.asarray(act_ranges[b_in], np.float64) / scales.get(b_in, 1.0)
            else:
                r_a = np.abs(wa).reshape(wa.shape[0], -1).max(axis=1)
            if b.attrs.groups == 1:
                r_b = np.abs(wb).transpose(1, 0, 2, 3).reshape(wb.shape[1], -1).max(axis=1)
            else:
                r_b = np.abs(wb).reshape(wb.shape[0], -1).max(axis=1)
            ok = (r_a > 0) & (r_b > 0)
            s = np.ones_like(r_a)
            s[ok] = r_a[ok] ** alpha / r_b[ok] ** (1 - alpha)
            moved = max(moved, float(np.abs(s - 1).max()))
            a.params["weight"] = (wa / s[:, None, None, None]).astype(np.float32)
            if "bias" in a.params:
                a.params["bias"] = (a.params["bias"].astype(np.float64) / s).astype(np.float32)
            if b.attrs.groups == 1:
                b.params["weight"] = (wb * s[None, :, None, None]).astype(np.float32)
            else:
                b.params["weight"] = (wb * s[:, None, None, None]).astype(np.float32)
            for v in (a_name, act_name):
                if v is not None:
                    scales[v] = scales.get(v, 1.0) * s
            if act_name is not None:
                act = g.node(act_name)
                if act.op == "relu6":
                    g.replace_node(act_name, Node(act_name, "relu_clip", list(act.inputs), None,
                                                  {"hi": (6.0 / s).astype(np.float32)}, act.shape,
                                                  f"{act.source} (ReLU6, clip per channel after equalization)"))
                elif act.op == "relu_clip":
                    act.params["hi"] = (act.params["hi"].astype(np.float64) / s).astype(np.float32)
        if moved < tol:
            break
    return g, scales


#: the pass under another name: ``prepare_float_graph``'s keyword ``equalize`` shadows the function
_equalize_pass = equalize


def prepare_float_graph(graph: Graph, *, equalize: bool = False):
    """Everything the quantizer does to the float graph: identity nodes dropped, BatchNorm folded,
    optionally cross-layer equalization, fusion groups found. Returns ``(graph, groups, folded,
    channel_scales)`` (``folded``: conv → the BatchNorm it absorbed; ``channel_scales``: see
    :func:`equalize`, empty without it); the float function is unchanged up to float rounding."""
    g = graph.copy()
    for n in list(g.nodes):
        if n.op == "identity" and n.name not in g.outputs:
            g.remove_node(n.name)
    g, folded = fold_batch_norm(g)
    scales = {}
    if equalize:
        g, scales = _equalize_pass(g)
    return g, fusion_groups(g), folded, scales
