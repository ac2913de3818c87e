"""Where does quantization hurt? Per-layer SQNR between a float model and its quantized version.

    report = compare(float_model, quantized_model, x)      # x: float32 (N, ...) batch
    print(report)                                          # worst layers first

For every activation the two models share, the *signal-to-quantization-noise ratio*

    SQNR = 10 · log10( Σ f² / Σ (f − q)² )   dB        f: float activation, q: dequantized quantized one

summed over all elements of all samples. +6 dB ≈ one more bit of precision; 40 dB means the noise energy
is 1/10,000 of the signal's. A low value at one layer that the following layers recover from is harmless;
a drop that persists to the output is where to look (a clipped range, an outlier channel...).

``quantized_model`` is a :class:`~minquant.quantized.model.QuantizedModel` — from
:func:`~minquant.quantized.static.quantize_static` (its ``float_names`` say which float value each quantized value
approximates) or from :func:`~minquant.interop.torch.quantized_import` (the cross-checking case: torch's
quantized model against its float original). Values are matched by name:

* a quantized value ``v`` is compared with the float value ``float_names[v]`` if given (``""``: not
  comparable, skipped), else the float
  node of the same name — also with a leading module path dropped (``module.features.0`` of a
  ``QuantWrapper`` matches ``features.0``);
* fusion: a conv / linear / add whose float readers (BatchNorm, ReLU, ReLU6 — single reader each) have
  no node of their own in the quantized model absorbed them, so it is compared with the end of that
  chain (a torch ``ConvReLU2d`` named ``features.0.0`` with the float ``features.0.2`` after Conv-BN-ReLU6);
* the model outputs are always compared (row ``(output)``).

``float_model``: a torch ``nn.Module`` (imported with :func:`minquant.from_torch`) or a minquant Graph.
This module imports NumPy (torch only to import a torch float model).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..executor import run as run_graph
from ..graph import Graph

__all__ = ["compare", "Comparison", "LayerSQNR", "sqnr_db"]


def sqnr_db(signal, approx) -> float:
    """10·log10(Σ signal² / Σ (signal − approx)²) in dB; +inf if they are equal."""
    s = np.asarray(signal, np.float64)
    e = s - np.asarray(approx, np.float64)
    noise = float((e * e).sum())
    power = float((s * s).sum())
    if noise == 0:
        return float("inf")
    if power == 0:
        return float("-inf")
    return 10 * np.log10(power / noise)


@dataclass
class LayerSQNR:
    name: str          # value in the quantized model
    float_name: str    # value in the float model
    op: str
    shape: tuple
    sqnr_db: float
    signal: float      # Σ f²
    noise: float       # Σ (f − q)²


@dataclass
class Comparison:
    """Result of :func:`compare`: ``layers`` sorted worst (lowest SQNR) first, the output's SQNR, top-1
    agreement of the outputs (classifiers) and the names that could not be matched."""
    layers: list
    output_sqnr_db: float
    top1_agreement: float | None
    samples: int
    unmatched: list

    def worst(self, k: int = 5) -> list:
        return self.layers[:k]

    def table(self, limit: int | None = None) -> str:
        rows = self.layers if limit is None else self.layers[:limit]
        head = ("#", "layer (quantized)", "op", "float value", "shape", "SQNR dB")
        body = [(str(i + 1), r.name, r.op, r.float_name, "×".join(map(str, r.shape[1:])), f"{r.sqnr_db:7.2f}")
                for i, r in enumerate(rows)]
        widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
        agree = "" if self.top1_agreement is None else f", top-1 agreement {100 * self.top1_agreement:.1f}%"
        lines = [f"SQNR per layer, worst first ({self.samples} samples): output {self.output_sqnr_db:.2f} dB{agree}; "
                 f"{len(self.layers)} matched values" + (f", {len(self.unmatched)} unmatched" if self.unmatched else "")]
        for r in [head] + body:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if limit is not None and len(self.layers) > limit:
            lines.append(f"  … {len(self.layers) - limit} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _float_graph(float_model, example_shape) -> Graph:
    if isinstance(float_model, Graph):
        return float_model
    from ..interop.torch.fx_import import from_torch
    return from_torch(float_model, example_shape)


def _match(qgraph: Graph, fgraph: Graph, float_names: dict) -> dict[str, str]:
    """quantized value → float value (module docstring)."""
    fnames = {n.name: n for n in fgraph.nodes}
    qnames = {n.name for n in qgraph.nodes}
    absorbable = {"batch_norm", "relu", "relu6", "identity"}

    def lookup(name):
        parts = name.split(".")
        for i in range(len(parts)):
            cand = ".".join(parts[i:])
            if cand in fnames:
                return cand
        return None

    present = {lookup(q) for q in qnames} - {None}   # float nodes the quantized model has its own node for
    mapping = {}
    for n in qgraph.nodes:
        if (n.op in ("quantize", "dequantize") and n.name not in float_names) or float_names.get(n.name) == "":
            continue            # "" = no float counterpart (e.g. a conv before its per-channel ReLU6 clip)
        f = float_names.get(n.name) or lookup(n.name)
        if f is None or f not in fnames:
            continue
        if n.name not in float_names and fnames[f].op in ("conv2d", "linear", "add"):
            while True:   # follow the float chain this layer absorbed
                readers = fgraph.consumers(f)
                if len(readers) != 1 or readers[0].op not in absorbable or readers[0].name in present \
                        or fgraph.is_output(f):
                    break
                f = readers[0].name
        mapping[n.name] = f
    return mapping


def compare(float_model, quantized_model, data, *, batch_size: int = 8) -> Comparison:
    """Per-layer SQNR of ``quantized_model`` against ``float_model`` on ``data`` (float32 (N, ...)),
    worst first (module docstring). Runs both models batch by batch and keeps only running sums."""
    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim < 2 or data.shape[0] == 0:
        raise ValueError(f"compare needs a non-empty batch (N, ...), got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("compare: data contains NaN or infinite values")
    qgraph = quantized_model.graph
    fgraph = _float_graph(float_model, (1,) + data.shape[1:])
    mapping = _match(qgraph, fgraph, quantized_model.float_names)
    wanted_f = set(mapping.values())
    sums = {q: [0.0, 0.0] for q in mapping}
    shapes, ops_of = {}, {n.name: n.op for n in qgraph.nodes}
    out_sig = out_noise = 0.0
    agree = total = 0
    for i in range(0, data.shape[0], batch_size):
        x = data[i:i + batch_size]
        fvals = {}
        fout = run_graph(fgraph, x, hook=lambda k, v: fvals.__setitem__(k, v) if k in wanted_f else None)
        qout, qvals = quantized_model.run(x, intermediates=True)
        for q, f in mapping.items():
            a, b = fvals[f], qvals[q]
            if a.shape != b.shape:
                if a.size != b.size:
                    continue
                b = b.reshape(a.shape)
            a64 = a.astype(np.float64)
            e = a64 - b
            sums[q][0] += float((a64 * a64).sum())
            sums[q][1] += float((e * e).sum())
            shapes[q] = a.shape
        fo = fout[0] if isinstance(fout, tuple) else fout
        qo = qout[0] if isinstance(qout, tuple) else qout
        fo64 = fo.astype(np.float64)
        out_sig += float((fo64 * fo64).sum())
        out_noise += float(((fo64 - qo) ** 2).sum())
        if fo.ndim == 2 and fo.shape[1] > 1:
            agree += int((fo.argmax(1) == qo.argmax(1)).sum())
            total += fo.shape[0]

    def db(sig, noise):
        return float("inf") if noise == 0 else (float("-inf") if sig == 0 else 10 * np.log10(sig / noise))

    layers = [LayerSQNR(q, mapping[q], ops_of[q], shapes[q], db(*sums[q]), sums[q][0], sums[q][1])
              for q in mapping if q in shapes]
    layers.sort(key=lambda r: (r.sqnr_db, r.name))
    matched = set(mapping)
    unmatched = [n.name for n in qgraph.nodes if n.name not in matched and n.op not in ("quantize", "dequantize")
                 and quantized_model.float_names.get(n.name) != ""]
    return Comparison(layers, db(out_sig, out_noise), agree / total if total else None, int(data.shape[0]), unmatched)
