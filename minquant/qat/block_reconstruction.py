"""Block reconstruction (BRECQ-style AdaRound): learn the up/down rounding of every layer of a *block* at once,
on the block's output (Li et al. 2021, "BRECQ: Pushing the Limit of Post-Training Quantization by Block
Reconstruction").

Layer-by-layer AdaRound (:mod:`.adaptive_rounding`) makes each layer's output close to the float layer's; the
errors of the layers of an inverted-residual block (expand 1×1 → depthwise 3×3 → project 1×1, plus the
residual add) can then still add up, and a layer cannot trade its error against its neighbour's. Here the
objective is the output of the whole block, with every activation of the block fake-quantized as the integer
model will run it::

    min_{V_1..V_L}  mean_samples ‖ B_float(x) − B_quant(x̂; W̃_1..W̃_L) ‖²  +  λ · Σ_l Σ_ij (1 − |2 h(V_l,ij) − 1|^β)

``x`` the block's input in the float model, ``x̂`` in the quantized model with every earlier block already
rounded (asymmetric, as in :func:`~.adaptive_rounding.adaround`), ``W̃_l`` each layer's soft-rounded weights
(same ``h``, ``β`` annealing, warm-up and initialisation as AdaRound). Whole feature maps are used (a batch of
calibration samples per Adam step), not sampled output positions.

**Blocks** (:func:`blocks`): the graph is cut after every node whose output is the only value still needed
by later nodes (a single-tensor boundary: in MobileNetV2 the end of each inverted-residual block, and, in
blocks without a residual, each layer); consecutive pieces are merged until each holds at least
``min_layers`` weight layers (MobileNetV2 with 2: its 17 inverted-residual blocks, the first conv joined to
the first block, the last 1×1 conv and the classifier one block).

Returns :class:`~.adaptive_rounding.AdaRoundWeights`, so the result is used as AdaRound's is. This module
imports torch.
"""
from __future__ import annotations

import numpy as np
import torch

from ..graph import Graph
from ..quantized.model import QuantizedModel
from .adaptive_rounding import GAMMA, ZETA, AdaRoundWeights, _layer_input, rectified_sigmoid, rounding_regularizer
from .model import _LAYERS, FakeQuantModel
from .weights import WEIGHT_RULE, NearestWeights, dequantize_weight, scale_like

__all__ = ["blocks", "block_adaround"]


def blocks(graph: Graph, min_layers: int = 2) -> list[tuple[str, list[str]]]:
    """``[(input value, [node names])]``: the graph cut at single-tensor boundaries (module docstring), pieces
    merged until each has ``min_layers`` weight layers (the last piece joins the one before it)."""
    nodes = graph.nodes
    last_use = {}
    for i, n in enumerate(nodes):
        for v in n.inputs:
            last_use[v] = i
    for v in graph.outputs:
        last_use[v] = len(nodes)
    pieces, current, start = [], [], graph.inputs[0]
    live = {graph.inputs[0]}
    for i, n in enumerate(nodes):
        current.append(n.name)
        live.add(n.name)
        live = {v for v in live if last_use.get(v, -1) > i}
        if live == {n.name} or i == len(nodes) - 1:
            pieces.append((start, current))
            start, current = n.name, []
    layer_names = {n.name for n in nodes if n.op in _LAYERS}
    merged = []
    for start, names in pieces:
        if merged and sum(v in layer_names for v in merged[-1][1]) < min_layers:
            merged[-1] = (merged[-1][0], merged[-1][1] + names)
        else:
            merged.append((start, list(names)))
    if len(merged) > 1 and sum(v in layer_names for v in merged[-1][1]) < min_layers:
        last = merged.pop()
        merged[-1] = (merged[-1][0], merged[-1][1] + last[1])
    return merged


def _run_block(fq, nodes, value, x, quantized, soft=None):
    env = {value: x}
    for n in nodes:
        w = None if soft is None else soft.get(n.name)
        env[n.name] = fq.node_output(n, [env[v] for v in n.inputs], quantized=quantized, weight=w)
    return env[nodes[-1].name]


def _block_input(fq, x, value, quantized, chunk, graph):
    if value == graph.inputs[0]:
        return x
    return _layer_input(fq, x, value, quantized, chunk)


def block_adaround(qm: QuantizedModel, rounding: NearestWeights, calibration_data, *, iterations: int = 500,
                   batch: int = 8, reg_weight: float = 0.01, beta=(20.0, 2.0), warmup: float = 0.2,
                   lr: float = 1e-2, min_layers: int = 2, chunk: int = 16, seed: int = 0,
                   progress: bool = False) -> AdaRoundWeights:
    """Learn the rounding of every conv / linear layer of ``qm``, block by block (module docstring).

    ``qm``, ``rounding``: as :func:`~.adaptive_rounding.adaround` (the model ``quantize_static`` or
    ``quantize_precision`` made with that :class:`~.weights.NearestWeights`). ``calibration_data``: float32
    (N, ...) model inputs. ``iterations`` Adam steps per block, ``batch`` samples per step. ``report[name]``
    holds, for every layer, its block's mean squared output error with nearest and with the learned rounding
    (``block``: the block's last node) and the fraction of its codes that changed."""
    if not isinstance(rounding, NearestWeights) or not rounding.layers:
        raise TypeError("block_adaround needs the NearestWeights that quantized qm (it recorded the float layers)")
    x = np.asarray(calibration_data, np.float32)
    if x.ndim < 2 or len(x) < 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"calibration_data must be a finite float array (N, ...), got shape {x.shape}")
    if iterations < 1 or batch < 1 or not 0 <= warmup < 1 or reg_weight < 0 or min_layers < 1:
        raise ValueError("block_adaround needs iterations, batch, min_layers ≥ 1, 0 ≤ warmup < 1, reg_weight ≥ 0")
    x = torch.from_numpy(x)
    g = qm.graph
    fq = FakeQuantModel(qm, rounding, exact=False).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    learned, report = {}, {}
    parts = blocks(g, min_layers)
    for bi, (value, names) in enumerate(parts):
        nodes = [g.node(name) for name in names]
        layers = [n for n in nodes if n.op in _LAYERS]
        if not layers:
            continue
        xf = _block_input(fq, x, value, False, chunk, g)
        xq = _block_input(fq, x, value, True, chunk, g)
        with torch.no_grad():
            target = torch.cat([_run_block(fq, nodes, value, xf[i:i + chunk], False) for i in range(0, len(x), chunk)])
        del xf
        state = {}
        for n in layers:
            rec, lay = rounding.layers[n.name], fq.layer[n.name]
            w = lay["float_weight"]
            s = torch.from_numpy(scale_like(rec["scale"], tuple(w.shape), rec.get("group_size")))
            f = w * (1.0 / s) if rec.get("rule", WEIGHT_RULE) == WEIGHT_RULE else w / s
            floor = torch.floor(f)
            rest = (f - floor).clamp(0.0, 1.0)
            v = torch.logit(((rest - GAMMA) / (ZETA - GAMMA)).clamp(1e-6, 1 - 1e-6)).requires_grad_(True)
            state[n.name] = (s, floor, v, rec)
        opt = torch.optim.Adam([st[2] for st in state.values()], lr=lr)
        start = int(warmup * iterations)

        def soft():
            return {name: s * (floor + rectified_sigmoid(v)).clamp(rec["qtype"].qmin, rec["qtype"].qmax)
                    for name, (s, floor, v, rec) in state.items()}

        def block_error(weights):
            with torch.no_grad():
                errs = [(_run_block(fq, nodes, value, xq[i:i + chunk], True, weights) - target[i:i + chunk])
                        .pow(2).flatten(1).sum(1) for i in range(0, len(x), chunk)]
            return float(torch.cat(errs).mean())

        before = block_error(None)               # the current (nearest) codes
        for it in range(iterations):
            pick = torch.randint(len(x), (min(batch, len(x)),), generator=gen)
            out = _run_block(fq, nodes, value, xq[pick], True, soft())
            loss = (out - target[pick]).pow(2).flatten(1).sum(1).mean()
            if it >= start:
                t = (it - start) / max(iterations - start, 1)
                b = beta[0] + t * (beta[1] - beta[0])
                loss = loss + reg_weight * sum(rounding_regularizer(rectified_sigmoid(st[2]), b) for st in state.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        hard = {}
        with torch.no_grad():
            for name, (s, floor, v, rec) in state.items():
                codes = (floor + (v >= 0).float()).clamp(rec["qtype"].qmin, rec["qtype"].qmax)
                hard[name] = s * codes
                q = codes.numpy().astype(np.int8)
                gs = rec.get("group_size")
                learned[name] = dict(weight=rec["weight"], scale=rec["scale"], codes=q, group_size=gs)
                report[name] = dict(changed=float(np.mean(q != rec["codes"])), block=names[-1])
            after = block_error(hard)
            for name in state:
                report[name].update(nearest=before, adaround=after)
                fq.weights[fq.key[name]].copy_(torch.from_numpy(dequantize_weight(
                    learned[name]["codes"], learned[name]["scale"], learned[name]["group_size"])))
        del xq, target
        if progress:
            print(f"block {bi + 1}/{len(parts)} ({len(layers)} layers, ends {names[-1]}): output error "
                  f"{before:.4g} → {after:.4g}", flush=True)
    return AdaRoundWeights(rounding.dtype, learned, report, mse_scale=rounding.mse_scale,
                           int8_layers=rounding.int8_layers)
