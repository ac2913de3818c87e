"""Pictures of what quantization and pruning did, and a ``report.md`` that puts them beside the numbers.

=====================  =================================================================================
``plot_histograms``    float values of chosen tensors with the int8 clip range and grid drawn on
``plot_sqnr``          per-layer SQNR (float vs int8) from :func:`minquant.quantized.compare`, worst marked
``plot_variants``      size / latency / accuracy of every variant of every model (the demo's table)
``plot_sparsity``      accuracy (or agreement) against sparsity, one line per series
``plot_ladder``        the precision ladder: stored size against top-1 agreement, one panel per model
``write_report``       ``report.md``: title, the table, every image with its caption, notes
=====================  =================================================================================

**The picture behind a histogram panel.** An affine int8 code ``q`` stands for the real number
``r = s·(q − z)`` (docs/quantization.md). With codes in ``[q_min, q_max]`` only the ``q_max − q_min + 1``
values ``s·(q − z)`` exist: that is the *grid* (drawn as a rug of ticks under the histogram, and as faint
lines when few enough levels are in view). Everything below ``s·(q_min − z)`` or above ``s·(q_max − z)`` is
*clipped* to the end of the grid (the two red lines; the clipped tails are shaded and their share printed).
A wide grid step wastes precision on the bulk of the values; a narrow clip range clips the tails — the
trade-off every calibrator makes. The grid comes from :func:`minquant.affine.dequantize`; this module never
computes quantization parameters, it only draws the ones it is given.

Every function writes a PNG (matplotlib's Agg renderer through ``matplotlib.figure.Figure``: no pyplot, no
global backend switch, no display needed), first to a temporary file beside ``path`` and then renamed over
it, so a reader never sees half a file. Bad input — nothing to draw, NaN or infinite values, a non-positive
scale — raises ``ValueError`` naming the problem. Imports matplotlib inside the functions: ``import
minquant.lesson.report`` is cheap and the numpy-only core never loads it.
"""
from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..files import atomic_path, atomic_write

__all__ = ["HistogramPanel", "plot_histograms", "plot_sqnr", "plot_variants", "plot_sparsity", "plot_ladder",
           "write_report"]

_RUNTIME_COLORS = {"torch": "#4C72B0", "minquant": "#DD8452", "ONNX Runtime": "#55A868"}
_OTHER_COLOR = "#8172B3"
_RUNTIME_MARKERS = {"minquant": "o", "torch": "s", "ONNX Runtime": "^", "LiteRT": "D"}
_OTHER_MARKER = "P"


# ------------------------------------------------------------------------------------------------------
# shared helpers
# ------------------------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=110)


def _save(fig, path) -> Path:
    """Write ``fig`` as PNG to a temporary name beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def _finite_number(x, what: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {x!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{what} is {v} (NaN or infinite)")
    return v


def _get(row, key, default=None):
    if isinstance(row, Mapping):
        return row.get(key, default)
    return getattr(row, key, default)


# ------------------------------------------------------------------------------------------------------
# histograms with the clip range and the int8 grid
# ------------------------------------------------------------------------------------------------------
@dataclass
class HistogramPanel:
    """One panel of :func:`plot_histograms`.

    ``values``: the float tensor (any shape; flattened). ``scale`` / ``zero_point``: the *per-tensor*
    quantization parameters of these values (for a per-channel weight, pass one channel and its own
    scale). ``dtype``: 'int8' or 'uint8' — or give ``qmin`` / ``qmax`` for a narrower code range (fbgemm's
    7-bit weights: −64…64). ``log``: logarithmic count axis (None: automatic, when one bin holds over 30 %
    of the values, e.g. the zeros after a ReLU)."""
    label: str
    values: np.ndarray
    scale: float
    zero_point: int = 0
    dtype: str = "int8"
    qmin: int | None = None
    qmax: int | None = None
    log: bool | None = None

    def code_range(self) -> tuple[int, int]:
        from ..affine import qtype
        qt = qtype(self.dtype)
        lo = qt.qmin if self.qmin is None else int(self.qmin)
        hi = qt.qmax if self.qmax is None else int(self.qmax)
        if lo >= hi:
            raise ValueError(f"panel {self.label!r}: code range [{lo}, {hi}] is empty")
        return lo, hi


def _panel(p) -> HistogramPanel:
    if isinstance(p, HistogramPanel):
        panel = p
    elif isinstance(p, Mapping):
        unknown = set(p) - set(HistogramPanel.__dataclass_fields__)
        if unknown:
            raise ValueError(f"histogram panel has unknown keys {sorted(unknown)}")
        panel = HistogramPanel(**p)
    else:
        raise ValueError(f"a histogram panel must be a HistogramPanel or a dict, got {type(p).__name__}")
    v = np.asarray(panel.values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError(f"panel {panel.label!r} has no values")
    if not np.isfinite(v).all():
        raise ValueError(f"panel {panel.label!r}: values contain NaN or infinite entries")
    if np.ndim(panel.scale) != 0:
        raise ValueError(f"panel {panel.label!r}: scale must be one number (pass one channel of a per-channel "
                         f"tensor with its own scale), got shape {np.shape(panel.scale)}")
    s = _finite_number(panel.scale, f"panel {panel.label!r}: scale")
    if s <= 0:
        raise ValueError(f"panel {panel.label!r}: scale must be > 0, got {s}")
    lo, hi = panel.code_range()
    z = int(panel.zero_point)
    if not lo <= z <= hi:
        raise ValueError(f"panel {panel.label!r}: zero point {z} is outside the code range [{lo}, {hi}]")
    return HistogramPanel(panel.label, v, s, z, panel.dtype, lo, hi, panel.log)


def plot_histograms(panels: Sequence, path, *, title: str | None = None, bins: int = 80,
                    columns: int = 2) -> Path:
    """Histograms of float tensors with their quantization drawn on, one panel per entry of ``panels``
    (:class:`HistogramPanel` or dicts with its fields). Returns ``path``.

    Per panel: the histogram of the values (counts); red lines at the clip range
    ``[s·(q_min − z), s·(q_max − z)]`` with the clipped tails shaded; the grid ``{s·(q − z)}`` as a rug of
    ticks along the bottom (and faint full-height lines when at most 40 levels are in view); a box with
    ``s``, ``z``, the levels the values actually span and the share of values clipped below / above."""
    from ..affine import dequantize, quantize

    panels = [_panel(p) for p in panels]
    if not panels:
        raise ValueError("plot_histograms needs at least one panel")
    if bins < 2:
        raise ValueError(f"bins must be ≥ 2, got {bins}")
    cols = max(1, min(int(columns), len(panels)))
    rows = -(-len(panels) // cols)
    fig = _figure(6.2 * cols, 3.6 * rows + (0.5 if title else 0))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, p in zip(axes.ravel(), panels):
        lo_q, hi_q = p.qmin, p.qmax
        grid = dequantize(np.arange(lo_q, hi_q + 1, dtype=np.int32), np.float32(p.scale), p.zero_point)
        grid = np.asarray(grid, np.float64)
        clip_lo, clip_hi = float(grid[0]), float(grid[-1])
        v = p.values
        vmin, vmax = float(v.min()), float(v.max())
        span_lo, span_hi = min(vmin, clip_lo), max(vmax, clip_hi)
        pad = 0.04 * max(span_hi - span_lo, 1e-12)
        x0, x1 = span_lo - pad, span_hi + pad
        counts, edges = np.histogram(v, bins=bins, range=(min(vmin, clip_lo), max(vmax, clip_hi)))
        log = p.log if p.log is not None else counts.max() > 0.3 * v.size
        ax.hist(edges[:-1], bins=edges, weights=counts, color="#4C72B0", alpha=0.85, label="values")
        if log:
            ax.set_yscale("log")
            ax.set_ylim(0.7, counts.max() * 40)      # headroom for the legend and the box
        else:
            ax.set_ylim(0, counts.max() * 1.5)
        ax.set_xlim(x0, x1)
        ax.axvspan(x0, clip_lo, color="#C44E52", alpha=0.08, lw=0)
        ax.axvspan(clip_hi, x1, color="#C44E52", alpha=0.08, lw=0)
        ax.axvline(clip_lo, color="#C44E52", lw=1.6, label=f"clip range [{clip_lo:.3g}, {clip_hi:.3g}]")
        ax.axvline(clip_hi, color="#C44E52", lw=1.6)
        in_view = grid[(grid >= x0) & (grid <= x1)]
        trans = ax.get_xaxis_transform()   # x in data units, y in axes fraction
        ax.vlines(in_view, 0.0, 0.05, transform=trans, color="k", lw=0.6, alpha=0.7,
                  label=f"int grid: {hi_q - lo_q + 1} codes {lo_q}…{hi_q}, step {p.scale:.3g}")
        if len(in_view) <= 40:
            ax.vlines(in_view, 0.05, 1.0, transform=trans, color="k", lw=0.4, alpha=0.15)
        # a value is clipped when its code would lie beyond the grid: more than half a step outside
        below = float((v < clip_lo - p.scale / 2).mean())
        above = float((v > clip_hi + p.scale / 2).mean())
        wide = "int8" if lo_q < 0 else "uint8"
        codes = np.clip(quantize(v.astype(np.float32), np.float32(p.scale), p.zero_point, wide).astype(np.int32),
                        lo_q, hi_q)
        used = int(codes.max() - codes.min() + 1)
        info = (f"s = {p.scale:.4g}, z = {p.zero_point}\n"
                f"values span {used} of {hi_q - lo_q + 1} codes\n"
                f"clipped: {100 * below:.2f} % below, {100 * above:.2f} % above")
        ax.text(0.98, 0.96, info, transform=ax.transAxes, ha="right", va="top", fontsize=7.5,
                bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="0.7", alpha=0.9))
        ax.set_title(textwrap.fill(p.label, 70), fontsize=9.5)
        ax.set_xlabel("float value")
        ax.set_ylabel("count" + (" (log scale)" if log else ""))
        ax.legend(loc="upper left", fontsize=7, framealpha=0.9)
        ax.grid(alpha=0.2, axis="y")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------------
# per-layer SQNR
# ------------------------------------------------------------------------------------------------------
def plot_sqnr(comparison, path, *, order: Sequence[str] | None = None, worst: int = 5,
              title: str | None = None) -> Path:
    """Per-layer SQNR bars of a :class:`minquant.quantized.Comparison` (from
    :func:`minquant.quantized.compare`), one bar per matched value, the ``worst`` lowest marked in red
    with their rank, and the model output's SQNR as a dashed line. Returns ``path``.

    ``order``: value names (e.g. ``[n.name for n in qm.graph.nodes]``) to draw the bars in graph order,
    first layer at the top (default: the comparison's order, worst first). SQNR =
    10·log10(Σf² / Σ(f − q)²) dB; +inf (identical values) is drawn at the right edge and labelled ∞.
    Raises ValueError for an empty comparison or a NaN SQNR."""
    layers = list(getattr(comparison, "layers", None) or [])
    if not layers:
        raise ValueError("plot_sqnr: the comparison has no matched layers (empty comparison)")
    values = []
    for r in layers:
        v = float(r.sqnr_db)
        if math.isnan(v):
            raise ValueError(f"plot_sqnr: layer {r.name!r} has SQNR NaN")
        values.append(v)
    out = float(getattr(comparison, "output_sqnr_db", float("nan")))
    if math.isnan(out):
        raise ValueError("plot_sqnr: the comparison's output SQNR is NaN")
    if order is not None:
        pos = {name: i for i, name in enumerate(order)}
        idx = sorted(range(len(layers)), key=lambda i: (pos.get(layers[i].name, len(pos)), i))
    else:
        idx = list(range(len(layers)))
    worst = min(max(0, int(worst)), max(1, len(layers) // 3))   # mark a few, never most of the bars
    rank = {i: k for k, i in enumerate(sorted(range(len(layers)), key=lambda i: values[i])[:worst])}
    finite = [v for v in values + [out] if math.isfinite(v)]
    top = (max(finite) if finite else 40.0)
    floor = (min(finite) if finite else 0.0)
    cap_hi, cap_lo = top + 0.12 * max(top - min(floor, 0), 10), min(floor, 0) - 2
    n = len(layers)
    fig = _figure(9.0, 1.6 + 0.2 * n)
    ax = fig.subplots()
    ys = np.arange(n)[::-1]
    for y, i in zip(ys, idx):
        v = values[i]
        shown = cap_hi if v == float("inf") else (cap_lo if v == float("-inf") else v)
        bad = i in rank
        ax.barh(y, shown, color="#C44E52" if bad else "#4C72B0", height=0.72)
        if bad or not math.isfinite(v):
            txt = ("∞" if v > 0 else "−∞") if not math.isfinite(v) else f"{v:.1f} dB"
            if bad:
                txt += f"  (#{rank[i] + 1} worst)"
            ax.text(max(shown, 0) + 0.01 * (cap_hi - cap_lo), y, txt, va="center", fontsize=7,
                    color="#C44E52" if bad else "k")
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{layers[i].name}  ({layers[i].op})" for i in idx], fontsize=7)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlim(min(cap_lo, 0), cap_hi * 1.08 + 6)
    if math.isfinite(out):
        ax.axvline(out, color="k", ls="--", lw=1)
    agree = getattr(comparison, "top1_agreement", None)
    samples = getattr(comparison, "samples", None)
    ax.set_xlabel("SQNR, float vs int8 (dB) — higher is better; +6 dB ≈ one more bit")
    sub = f"{samples} samples" if samples else ""
    if agree is not None:
        sub += f", top-1 agreement {100 * agree:.1f} %"
    head = title or f"Per-layer SQNR ({sub.strip(', ')})"
    out_txt = "∞" if out == float("inf") else ("−∞" if out == float("-inf") else f"{out:.1f} dB")
    ax.set_title(textwrap.fill(head, 90) + f"\ndashed line: model output {out_txt}; red: the {worst} worst",
                 fontsize=9.5)
    ax.grid(alpha=0.25, axis="x")
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------------
# variants: size, latency, accuracy
# ------------------------------------------------------------------------------------------------------
def _variant_fields(row):
    name = _get(row, "variant")
    if not name:
        raise ValueError(f"plot_variants: every row needs a 'variant' name, got {row!r}")
    size = _get(row, "size_bytes", _get(row, "file_bytes"))
    vals = {}
    for key, v in (("size", size), ("ms", _get(row, "ms")), ("accuracy", _get(row, "accuracy")),
                   ("agreement", _get(row, "agreement"))):
        if v is None:
            vals[key] = None
            continue
        v = _finite_number(v, f"plot_variants: {name!r} {key}")
        if v < 0 or (key in ("accuracy", "agreement") and v > 1):
            raise ValueError(f"plot_variants: {name!r} {key} = {v} is out of range"
                             + (" (fractions in [0, 1])" if key in ("accuracy", "agreement") else ""))
        vals[key] = v
    return str(_get(row, "model", "") or ""), str(name), str(_get(row, "runtime", "") or ""), vals


def plot_variants(rows: Sequence, path, *, title: str | None = None) -> Path:
    """One horizontal bar chart per model and metric: size on disk (KB, log scale), batch-1 latency (ms,
    log scale) and accuracy — or top-1 agreement with the float model for models without labels — in %.
    Returns ``path``.

    ``rows``: dicts (or objects) with ``variant`` and optionally ``model`` (one block of charts per model),
    ``runtime`` ('torch', 'minquant', 'ONNX Runtime': the bar colour), ``size_bytes`` (or ``file_bytes``),
    ``ms``, ``accuracy`` and ``agreement`` (fractions in [0, 1]). A missing value (None) leaves its bar out
    and writes "n/a". Raises ValueError for no rows, a row without a name, NaN or out-of-range values."""
    parsed = [_variant_fields(r) for r in rows]
    if not parsed:
        raise ValueError("plot_variants needs at least one row")
    models = list(dict.fromkeys(m for m, _, _, _ in parsed))
    blocks = [[p for p in parsed if p[0] == m] for m in models]
    heights = [max(len(b), 2) * 0.32 + 1.1 for b in blocks]
    fig = _figure(15.0, sum(heights) + (0.6 if title else 0.2))
    axes = fig.subplots(len(blocks), 3, squeeze=False, gridspec_kw={"height_ratios": heights})
    for r, (model, block) in enumerate(zip(models, blocks)):
        has_acc = any(v["accuracy"] is not None for _, _, _, v in block)
        metrics = [("size", "size on disk (KB, log scale)", lambda x: x / 1024, "{:,.1f} KB", True),
                   ("ms", "latency, batch 1, one thread (ms, log scale)", lambda x: x, "{:.2f} ms", True),
                   ("accuracy" if has_acc else "agreement",
                    "test accuracy (%)" if has_acc else "top-1 agreement with fp32 (%)",
                    lambda x: 100 * x, "{:.1f} %", False)]
        ys = np.arange(len(block))[::-1]
        for c, (key, label, conv, fmt, logx) in enumerate(metrics):
            ax = axes[r, c]
            shown = [conv(v[key]) if v[key] is not None else None for _, _, _, v in block]
            present = [s for s in shown if s is not None and s > 0]
            for y, s, (_, _, rt, _) in zip(ys, shown, block):
                color = _RUNTIME_COLORS.get(rt, _OTHER_COLOR)
                if s is None:
                    ax.text(0.01, y, "n/a", transform=ax.get_yaxis_transform(), va="center", fontsize=7,
                            color="0.4")
                    continue
                ax.barh(y, s, color=color, height=0.7)
            if logx and present:
                from matplotlib.ticker import FuncFormatter, NullFormatter
                ax.set_xscale("log")
                lo, hi = min(present), max(present)
                ax.set_xlim(lo / 2.5, hi * 6)
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.10g}"))
            elif not logx:
                ax.set_xlim(0, 118)
            for y, s in zip(ys, shown):
                if s is not None and (s > 0 or not logx):
                    ax.text(s * (1.08 if logx else 1) + (0 if logx else 1.0), y, fmt.format(s), va="center",
                            fontsize=7)
            ax.set_yticks(ys)
            ax.set_yticklabels([name for _, name, _, _ in block] if c == 0 else [], fontsize=8)
            ax.set_ylim(-0.7, len(block) - 0.3)
            ax.set_xlabel(label, fontsize=8)
            ax.tick_params(axis="x", labelsize=7)
            ax.grid(alpha=0.25, axis="x")
            if c == 1 and model:
                ax.set_title(model, fontsize=10, fontweight="bold")
    used = list(dict.fromkeys(rt for _, _, rt, _ in parsed if rt))
    if used:
        from matplotlib.patches import Patch
        handles = [Patch(color=_RUNTIME_COLORS.get(rt, _OTHER_COLOR), label=f"runs on {rt}") for rt in used]
        fig.legend(handles=handles, loc="upper right", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.985 if (title or used) else 1))
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------------
# accuracy vs sparsity
# ------------------------------------------------------------------------------------------------------
def plot_sparsity(points: Sequence, path, *, title: str | None = None,
                  ylabel: str = "test accuracy (%)", baseline: float | None = None,
                  baseline_label: str = "unpruned") -> Path:
    """Accuracy (or agreement) against weight sparsity, one line per series. Returns ``path``.

    ``points``: dicts with ``series``, ``sparsity`` and ``value`` (both fractions in [0, 1]) or tuples
    ``(series, sparsity, value)``. Points of a series are joined in order of sparsity. ``baseline``: a
    fraction drawn as a horizontal line (e.g. the unpruned model's accuracy). Raises ValueError for no
    points, NaN, or values outside [0, 1]."""
    series: dict[str, list] = {}
    for p in points:
        if isinstance(p, Mapping):
            name, s, v = p.get("series", ""), p.get("sparsity"), p.get("value")
        else:
            try:
                name, s, v = p
            except (TypeError, ValueError):
                raise ValueError(f"a sparsity point must be (series, sparsity, value) or a dict, got {p!r}") \
                    from None
        s = _finite_number(s, f"plot_sparsity: sparsity of {name!r}")
        v = _finite_number(v, f"plot_sparsity: value of {name!r}")
        if not (0 <= s <= 1 and 0 <= v <= 1):
            raise ValueError(f"plot_sparsity: point ({s}, {v}) of {name!r} is outside [0, 1] (use fractions)")
        series.setdefault(str(name), []).append((s, v))
    if not series:
        raise ValueError("plot_sparsity needs at least one point")
    fig = _figure(8.0, 4.8)
    ax = fig.subplots()
    markers = "osD^vP*X"
    for k, (name, pts) in enumerate(series.items()):
        pts.sort()
        xs, vs = [100 * s for s, _ in pts], [100 * v for _, v in pts]
        ax.plot(xs, vs, marker=markers[k % len(markers)], ms=5, lw=1.5, label=name)
    if baseline is not None:
        b = _finite_number(baseline, "plot_sparsity: baseline")
        ax.axhline(100 * b, color="k", lw=1, ls="--", label=f"{baseline_label}: {100 * b:.1f} %")
    ax.set_xlabel("weight sparsity (% of conv/linear weights that are zero)")
    ax.set_ylabel(ylabel)
    top = max(s for pts in series.values() for s, _ in pts)
    ax.set_xlim(-2, min(102, 100 * top + 8))
    ax.set_ylim(-2, 104)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------------
# the precision ladder: size against agreement
# ------------------------------------------------------------------------------------------------------
def _ladder_fields(row):
    """``(model, label, runtime, size_bytes, agreement)`` of a row, or None for a row with nothing to place
    (no size or no agreement: a mode that runtime does not have)."""
    name = _get(row, "variant")
    if not name:
        raise ValueError(f"plot_ladder: every row needs a 'variant' name, got {row!r}")
    size, agree = _get(row, "size_bytes"), _get(row, "agreement")
    if size is None or agree is None:
        return None
    size = _finite_number(size, f"plot_ladder: {name!r} size_bytes")
    if size <= 0:
        raise ValueError(f"plot_ladder: {name!r} size_bytes = {size} must be > 0 (the size axis is logarithmic)")
    agree = _finite_number(agree, f"plot_ladder: {name!r} agreement")
    if not 0 <= agree <= 1:
        raise ValueError(f"plot_ladder: {name!r} agreement = {agree} is out of range (fractions in [0, 1])")
    label = str(_get(row, "label", "") or str(name).strip().split(" (")[0])
    return str(_get(row, "model", "") or ""), label, str(_get(row, "runtime", "") or ""), size, agree


def _bytes_tick(x, _pos=None) -> str:
    """20000 → '20 k', 5000000 → '5 M' (decimal, as the table's byte counts)."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:g} {unit}"
    return f"{x:g}"


def plot_ladder(rows: Sequence, path, *, title: str | None = None, min_span: float = 2.0) -> Path:
    """The precision ladder (fp32 → fp16 → int8 → int4, mixed): one panel per model, one point per row.
    Returns ``path``.

    x axis: the stored bytes of the parameters (``QuantizedModel.size_bytes()``, a framework's parameter
    or initializer bytes), log scale — each rung fp32 → fp16 → int8 → int4 halves the bytes, so the rungs
    sit at equal steps. y axis: top-1 agreement with the model's fp32 output, in % (the predicted class is
    the same); at least ``min_span`` points tall, so that 99.6 % does not look like a collapse. Up and to the
    left is better: fewer bytes, same answers. The marker and colour say the runtime; the label is the row's
    ``label``, else its ``variant`` up to the first " (" (points that nearly coincide share one label, their
    names joined by " / ").

    ``rows``: dicts (or objects) with ``variant`` and optionally ``label``, ``model`` (the panel), ``runtime``
    ('minquant', 'torch', 'ONNX Runtime', 'LiteRT'), ``size_bytes`` and ``agreement`` (a fraction in
    [0, 1]). A row without ``size_bytes`` or ``agreement`` (a mode the runtime does not have) is left out.
    Raises ValueError when no row can be drawn, for a row without a name, NaN, a size ≤ 0 or an agreement
    outside [0, 1]."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    parsed = [p for p in (_ladder_fields(r) for r in rows) if p is not None]
    if not parsed:
        raise ValueError("plot_ladder needs at least one row with size_bytes and agreement")
    if not _finite_number(min_span, "plot_ladder: min_span") > 0:
        raise ValueError(f"plot_ladder: min_span must be > 0 percentage points, got {min_span}")
    models = list(dict.fromkeys(p[0] for p in parsed))
    fig = _figure(5.4 * len(models), 4.6 + (0.3 if title else 0))
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    runtimes = list(dict.fromkeys(p[2] for p in parsed))
    for ax, model in zip(axes, models):
        pts = [p for p in parsed if p[0] == model]
        sizes = [p[3] for p in pts]
        ys = [100 * p[4] for p in pts]
        x0, x1 = min(sizes) / 1.5, max(sizes) * 2.6          # room on the right for the labels
        y_hi = max(ys) + 0.06 * max(max(ys) - min(ys), min_span)
        y_lo = min(min(ys), y_hi - min_span) - 0.06 * max(max(ys) - min(ys), min_span)
        for rt in runtimes:
            mine = [p for p in pts if p[2] == rt]
            if mine:
                ax.scatter([p[3] for p in mine], [100 * p[4] for p in mine], s=42, zorder=3,
                           marker=_RUNTIME_MARKERS.get(rt, _OTHER_MARKER),
                           color=_RUNTIME_COLORS.get(rt, _OTHER_COLOR))
        # one label per group of points that (nearly) coincide on the page: their names joined by " / "
        lx0, lx1 = math.log10(x0), math.log10(x1)
        groups = []                                   # [(axes-fraction x, y, data x, data y, [labels])]
        for _, label, _, size, agree in sorted(pts, key=lambda p: (p[3], -p[4])):
            fx = (math.log10(size) - lx0) / (lx1 - lx0)
            fy = (100 * agree - y_lo) / (y_hi - y_lo)
            near = next((g for g in groups if abs(fx - g[0]) < 0.04 and abs(fy - g[1]) < 0.03), None)
            if near is None:
                groups.append((fx, fy, size, 100 * agree, [label]))
            elif label not in near[4]:
                near[4].append(label)
        for k, (fx, fy, size, y, labels) in enumerate(groups):   # below the point if one is close on its right
            crowded = any(0 < g[0] - fx < 0.3 and abs(g[1] - fy) < 0.07 for g in groups[k + 1:])
            ax.annotate(" / ".join(labels), (size, y), fontsize=7, xytext=(5, -10 if crowded else 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(_bytes_tick))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(x0, x1)
        ax.set_ylim(y_lo, y_hi)
        ax.set_xlabel("stored bytes of the parameters (log scale; k = 1,000)")
        ax.set_ylabel("top-1 agreement with fp32 (%)")
        ax.set_title(model, fontsize=10)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], ls="", marker=_RUNTIME_MARKERS.get(rt, _OTHER_MARKER), ms=7,
                      color=_RUNTIME_COLORS.get(rt, _OTHER_COLOR), label=rt or "other") for rt in runtimes]
    axes[0].legend(handles=handles, fontsize=8, loc="lower right", framealpha=0.9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------------
# report.md
# ------------------------------------------------------------------------------------------------------
def write_report(folder, *, table: str, images: Sequence | Mapping = (), title: str = "minquant report",
                 notes: Sequence[str] = (), intro: str = "", name: str = "report.md") -> Path:
    """Write ``folder/name`` (default ``report.md``): the title, ``intro``, the markdown ``table``, every
    image of ``images`` embedded (``![caption](relative path)``) under its caption, then ``notes`` as a list.
    Returns the path. ``images``: ``[(path, caption), ...]`` or ``{path: caption}``; relative paths are
    taken relative to ``folder``. Written to a temporary file, then renamed.

    Raises ValueError for an empty table or an image that does not exist."""
    folder = Path(folder)
    if not str(table).strip():
        raise ValueError("write_report needs a non-empty table")
    items = list(images.items()) if isinstance(images, Mapping) else [tuple(i) for i in images]
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    if intro:
        lines += [intro.strip(), ""]
    lines += [str(table).rstrip(), ""]
    for item in items:
        if len(item) != 2:
            raise ValueError(f"write_report: an image must be (path, caption), got {item!r}")
        img, caption = item
        p = Path(img)
        full = p if p.is_absolute() else folder / p
        if not full.is_file():
            raise ValueError(f"write_report: image {str(img)!r} does not exist")
        rel = os.path.relpath(full, folder).replace(os.sep, "/")
        caption = str(caption).strip()
        lines += [f"### {caption}" if caption else f"### {p.name}", "", f"![{caption or p.name}]({rel})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    path = folder / name
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines))
    return path
