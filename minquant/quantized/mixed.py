"""Mixed precision by sensitivity: each layer as low as the model's budget allows.

    qm = quantize_mixed(model, calib, Budget(max_bytes=1_000_000))        # best output within a size
    qm = quantize_mixed(model, calib, Budget(min_sqnr_db=30.0))           # smallest model above an SQNR
    print(precision_table(qm))                                            # the choice, layer by layer

**Sensitivity** (:func:`measure_sensitivity`). For every candidate precision c, the whole model is lowered to
c once (:func:`~minquant.quantized.precision_convert.quantize_precision`: calibrated activation qparams,
int4 weights...). Then, one layer L at a time, the float model is run with *only L* taken from that model —
an int8 layer between a ``quantize`` and a ``dequantize`` with its calibrated qparams, a float16 / int4 layer
with its float16 output widened back — on held-out samples, and the SQNR of the model output against the
float model is recorded:

    SQNR_L(c) = 10·log10( Σ f² / Σ (f − y_L,c)² )            f: float logits, y_L,c: only L at precision c

**Choice** (:func:`choose_precisions`). Independent noises add, so the output noise of a mixed model is
predicted as the sum of the layers' relative noises ``r_L(c) = 10^(−SQNR_L(c)/10)``:
``SQNR ≈ −10·log10 Σ_L r_L(c_L)``. Each layer's options are its candidates (and float32) that are not
dominated (no other option is both smaller and less noisy). Greedy, by marginal rate:

* ``Budget(min_sqnr_db=t)``: start every layer at its smallest option; while the predicted SQNR is below
  t, move the layer whose next larger option removes the most noise per byte added.
* ``Budget(max_bytes=B)``: start every layer at its least noisy option; while the layers' bytes exceed B,
  move the layer whose next smaller option adds the least noise per byte saved — or, once single moves can
  reach B, the one of those that adds the least noise; then, the steps being coarse, spend the bytes left
  under B on the largest noise cuts that still fit.

**Check** (:func:`quantize_mixed`): the chosen model is built and measured on the same held-out samples; if
it misses the budget (the prediction ignores interactions, and a model's size also counts the qparams at
int8 / float boundaries) the target is tightened by the miss and the choice repeated (``max_rounds``). The
model's ``meta["mixed"]`` records the budget, the predicted and measured SQNR, the bytes and every layer's
choice; :func:`precision_table` prints it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..executor import run as run_graph
from ..graph import Graph, Node
from ..target import as_target
from .calibration import iter_batches
from .comparison import sqnr_db
from .model import QuantizedModel
from .ops import QuantizeAttrs
from .precision import FP16, FP32, INT8, Numbers, Precision, w4a8, w4a16
from .precision_convert import prepare_graph, quantize_precision, weight_layers
from .precision_ops import FLOAT_ACTIVATION_OPS, float_param_count

__all__ = ["Budget", "Sensitivity", "DEFAULT_CANDIDATES", "measure_sensitivity", "sensitivity_of", "choose_precisions",
           "quantize_mixed", "precision_table"]

#: the precisions the chooser picks from by default (float32 is always an option too)
DEFAULT_CANDIDATES = (FP16, INT8, w4a16(32), w4a8(32))
#: held-out samples taken from the end of an array of calibration data when none are given
SENSITIVITY_SAMPLES = 8


@dataclass(frozen=True)
class Budget:
    """What the mixed model must meet: at most ``max_bytes`` (``QuantizedModel.size_bytes()``) *or* at
    least ``min_sqnr_db`` of output SQNR against the float model (on the held-out samples) — exactly one."""
    max_bytes: int | None = None
    min_sqnr_db: float | None = None

    def __post_init__(self):
        if (self.max_bytes is None) == (self.min_sqnr_db is None):
            raise ValueError("a Budget is either max_bytes=... or min_sqnr_db=..., exactly one of them")
        if self.max_bytes is not None:
            if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, (int, np.integer)):
                raise TypeError(f"max_bytes must be a whole number of bytes, got {self.max_bytes!r}")
            if self.max_bytes <= 0:
                raise ValueError(f"max_bytes must be > 0, got {self.max_bytes}")
        else:
            if isinstance(self.min_sqnr_db, bool) or not isinstance(self.min_sqnr_db, (int, float, np.floating)):
                raise TypeError(f"min_sqnr_db must be a number of dB, got {self.min_sqnr_db!r}")
            if not math.isfinite(self.min_sqnr_db):
                raise ValueError(f"min_sqnr_db must be finite, got {self.min_sqnr_db}")

    def describe(self) -> str:
        return (f"size ≤ {self.max_bytes:,} bytes" if self.max_bytes is not None
                else f"output SQNR ≥ {self.min_sqnr_db:g} dB")


@dataclass
class Sensitivity:
    """Per layer and candidate: the model-output SQNR with only that layer lowered (dB) and the layer's
    stored bytes; ``fp32_bytes``: each layer in float32. ``samples``: how many held-out samples."""
    layers: list
    candidates: tuple
    sqnr_db: dict = field(default_factory=dict)
    bytes: dict = field(default_factory=dict)
    fp32_bytes: dict = field(default_factory=dict)
    samples: int = 0

    def options(self, layer):
        """The layer's non-dominated options, ``[(bytes, relative noise, Precision)]`` from largest to
        smallest (float32 first: 0 noise)."""
        opts = [(self.fp32_bytes[layer], 0.0, FP32)]
        opts += [(self.bytes[layer][c], 10.0 ** (-self.sqnr_db[layer][c] / 10.0), c) for c in self.candidates]
        opts.sort(key=lambda o: (-o[0], o[1]))
        kept = []
        for o in sorted(opts, key=lambda o: (o[1], -o[0])):        # by noise; keep if smaller than all before
            if all(o[0] < k[0] for k in kept):
                kept.append(o)
        return sorted(kept, key=lambda o: -o[0])


def _held_out(calibration_data, x_sensitivity):
    if x_sensitivity is not None:
        return calibration_data, np.asarray(x_sensitivity, np.float32)
    if not isinstance(calibration_data, np.ndarray) or calibration_data.shape[0] <= SENSITIVITY_SAMPLES:
        raise ValueError(f"pass x_sensitivity (held-out samples to measure on), or calibration data as one array "
                         f"of more than {SENSITIVITY_SAMPLES} samples (its last {SENSITIVITY_SAMPLES} are held out)")
    return calibration_data[:-SENSITIVITY_SAMPLES], calibration_data[-SENSITIVITY_SAMPLES:]


def _isolated(g: Graph, lowered: QuantizedModel, layer: str) -> Graph:
    """The float graph ``g`` with only ``layer`` taken from the lowered model (module docstring), from that
    layer on: its inputs are the float values computed before it that it or a later node reads."""
    q = lowered.graph.node(layer)
    start = [n.name for n in g.nodes].index(layer)
    before = set(g.inputs) | {n.name for n in g.nodes[:start]}
    live = list(dict.fromkeys(v for n in g.nodes[start:] for v in n.inputs if v in before))
    nodes = []
    for n in g.nodes[start:]:
        if n.name != layer:
            nodes.append(n)
            continue
        x = n.inputs[0]
        inner = Node(f"{layer}:lowered", q.op, [x], q.attrs, q.params, q.shape, q.source)
        if q.op in FLOAT_ACTIVATION_OPS:
            nodes += [inner, Node(layer, "fp16_widen", [inner.name], None, {}, n.shape, n.source)]
        else:                                   # reads and writes codes: quantize → layer → dequantize
            a = q.attrs
            inner.inputs = [f"{layer}:quantize"]
            nodes += [Node(f"{layer}:quantize", "quantize", [x], QuantizeAttrs(a.x_scale, a.x_zp)), inner,
                      Node(layer, "dequantize", [inner.name], QuantizeAttrs(a.y_scale, a.y_zp), {}, n.shape)]
    return Graph(live, nodes, g.outputs, {}, g.name)


def _sensitivity(g, batches, x_sens, candidates, target, **kw) -> Sensitivity:
    lowered = {c: quantize_precision(g, c, batches, target=target, equalize=False, **kw) for c in candidates}
    return sensitivity_of(g, lowered, x_sens)


def sensitivity_of(graph: Graph, lowered, x_sensitivity) -> Sensitivity:
    """:class:`Sensitivity` from models already lowered whole (``{Precision: QuantizedModel}``, each made by
    ``quantize_precision(graph, precision, ..., equalize=False)`` from the prepared float ``graph`` of
    :func:`~minquant.quantized.precision_convert.prepare_graph`), measured on ``x_sensitivity``."""
    g, x_sens = graph, np.asarray(x_sensitivity, np.float32)
    layers = weight_layers(g)
    f_ref, values = run_graph(g, x_sens, intermediates=True)           # the float prefix, computed once
    sens = Sensitivity(layers, tuple(_checked(lowered)), samples=int(x_sens.shape[0]))
    sens.fp32_bytes = {name: 4 * g.node(name).num_params() for name in layers}
    for c, qm in lowered.items():
        for name in layers:
            sub = _isolated(g, qm, name)
            y = QuantizedModel(sub, qm.target)({v: values[v] for v in sub.inputs})
            sens.sqnr_db.setdefault(name, {})[c] = float(sqnr_db(f_ref, y))
            sens.bytes.setdefault(name, {})[c] = qm.node_bytes(qm.graph.node(name))
    return sens


def measure_sensitivity(model, calibration_data, candidates=DEFAULT_CANDIDATES, *, x_sensitivity=None,
                        target="x86", input_shape=None, batch_size: int = 32, equalize: bool = True,
                        **kw) -> Sensitivity:
    """Each layer's :class:`Sensitivity` (module docstring) for ``candidates``, measured on
    ``x_sensitivity`` (default: the last :data:`SENSITIVITY_SAMPLES` samples of an array of calibration
    data, held out from calibration). Other keywords go to ``quantize_precision``."""
    calib, x_sens = _held_out(calibration_data, x_sensitivity)
    batches = list(iter_batches(calib, batch_size))
    g, _, _ = prepare_graph(model, batches, input_shape=input_shape, equalize=equalize)
    return _sensitivity(g, batches, x_sens, _checked(candidates), as_target(target), batch_size=batch_size, **kw)


def _checked(candidates):
    candidates = tuple(candidates)
    if not candidates or not all(isinstance(c, Precision) for c in candidates):
        raise TypeError(f"candidates must be a non-empty sequence of Precision, got {candidates!r}")
    return candidates


def _predicted(noise: float) -> float:
    return math.inf if noise <= 0 else -10.0 * math.log10(noise)


def choose_precisions(sens: Sensitivity, budget: Budget) -> dict:
    """The greedy choice of the module docstring: ``{layer: Precision}`` (predicted from ``sens``).
    Raises ValueError if no choice can meet a size budget (the smallest options are still too big)."""
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a Budget, got {type(budget).__name__}")
    opts = {name: sens.options(name) for name in sens.layers}
    if budget.max_bytes is not None:
        at = {name: 0 for name in sens.layers}                       # least noisy option
        total = sum(opts[n][0][0] for n in sens.layers)
        while total > budget.max_bytes:
            best = None
            for n in sens.layers:
                i = at[n]
                if i + 1 < len(opts[n]):
                    saved = opts[n][i][0] - opts[n][i + 1][0]
                    added = opts[n][i + 1][1] - opts[n][i][1]
                    key = (0, added) if saved >= total - budget.max_bytes else (1, added / saved)
                    if best is None or key < best[0]:     # a last step that fits: the least noise; else per byte
                        best = (key, n)
            if best is None:
                raise ValueError(f"no choice meets {budget.describe()}: every layer at its smallest option "
                                 f"still takes {total:,} bytes")
            n = best[1]
            total -= opts[n][at[n]][0] - opts[n][at[n] + 1][0]
            at[n] += 1
        while True:                   # steps are coarse: spend what is left on the largest noise cut that fits
            best = None
            for n in sens.layers:
                i = at[n]
                if i > 0 and opts[n][i - 1][0] - opts[n][i][0] <= budget.max_bytes - total:
                    cut = opts[n][i][1] - opts[n][i - 1][1]
                    if best is None or cut > best[0]:
                        best = (cut, n)
            if best is None or best[0] <= 0:
                break
            n = best[1]
            total += opts[n][at[n] - 1][0] - opts[n][at[n]][0]
            at[n] -= 1
    else:
        at = {name: len(opts[name]) - 1 for name in sens.layers}     # smallest option
        target_noise = 10.0 ** (-budget.min_sqnr_db / 10.0)
        while sum(opts[n][at[n]][1] for n in sens.layers) > target_noise:
            best = None
            for n in sens.layers:
                i = at[n]
                if i > 0:
                    gain = (opts[n][i][1] - opts[n][i - 1][1]) / max(opts[n][i - 1][0] - opts[n][i][0], 1)
                    if best is None or gain > best[0]:
                        best = (gain, n)
            if best is None:
                break                                                # every layer at float32
            at[best[1]] -= 1
    return {n: opts[n][at[n]][2] for n in sens.layers}


def _predicted_sqnr(sens, choice) -> float:
    return _predicted(sum(o[1] for n in sens.layers for o in sens.options(n) if o[2] == choice[n]))


def quantize_mixed(model, calibration_data, budget: Budget, candidates=DEFAULT_CANDIDATES, *, x_sensitivity=None,
                   target="x86", input_shape=None, batch_size: int = 32, max_rounds: int = 4,
                   sensitivity: Sensitivity | None = None, equalize: bool = True, **kw) -> QuantizedModel:
    """The mixed-precision model for ``budget`` (module docstring): sensitivity (or the given
    ``sensitivity``, measured on the same model and samples), choice, build, check. Other keywords go to
    ``quantize_precision``. ``meta["mixed"]`` says whether the budget was met on the held-out samples
    (``"met"``); a size budget that cannot be met raises ValueError."""
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a Budget, got {type(budget).__name__}")
    tgt = as_target(target)
    calib, x_sens = _held_out(calibration_data, x_sensitivity)
    batches = list(iter_batches(calib, batch_size))
    g, _, _ = prepare_graph(model, batches, input_shape=input_shape, equalize=equalize)
    sens = sensitivity or _sensitivity(g, batches, x_sens, _checked(candidates), tgt, batch_size=batch_size, **kw)
    f_ref = run_graph(g, x_sens)
    aim = budget
    for _ in range(max(1, int(max_rounds))):
        choice = choose_precisions(sens, aim)
        qm = quantize_precision(g, FP32, batches, layers=choice, target=tgt, equalize=False, batch_size=batch_size,
                                **kw)
        measured, size = float(sqnr_db(f_ref, qm(x_sens))), qm.size_bytes()
        if budget.max_bytes is not None:
            met = size <= budget.max_bytes
            if not met:
                aim = Budget(max_bytes=aim.max_bytes - (size - budget.max_bytes))
        else:
            met = measured >= budget.min_sqnr_db
            if not met:
                aim = Budget(min_sqnr_db=aim.min_sqnr_db + (budget.min_sqnr_db - measured) + 0.5)
        if met:
            break
    qm.meta["mixed"] = {"budget": budget.describe(), "met": bool(met), "bytes": int(size),
                        "predicted_sqnr_db": _predicted_sqnr(sens, choice), "measured_sqnr_db": measured,
                        "held_out_samples": int(x_sens.shape[0]),
                        "choice": {n: choice[n].name for n in sens.layers},
                        "sensitivity_db": {n: {c.name: round(v, 2) for c, v in sens.sqnr_db[n].items()}
                                           for n in sens.layers}}
    qm.sensitivity = sens
    return qm


def precision_table(qm: QuantizedModel) -> str:
    """One line per conv / linear layer: its precision, stored bytes (and float32 bytes), and — for a model
    made by :func:`quantize_mixed` — each candidate's SQNR with only that layer lowered (dB)."""
    prec = qm.meta.get("precisions")
    if prec is None:
        raise ValueError("this model has no per-layer precisions (made by quantize_precision / quantize_mixed)")
    mixed = qm.meta.get("mixed", {})
    sens = mixed.get("sensitivity_db", {})
    cands = list(next(iter(sens.values()))) if sens else []
    nodes = {n.name: n for n in qm.graph.nodes}
    head = ["layer", "op", "precision", "bytes", "fp32 bytes"] + [f"{c} dB" for c in cands]
    rows = []
    for name, p in prec.items():
        n = nodes[name]
        fp32 = 4 * (float_param_count(n) if n.op not in ("conv2d", "linear", "qconv2d", "qlinear")
                    else n.params["weight"].size + (n.params["bias"].size if "bias" in n.params else 0))
        rows.append([name, n.op, p, f"{qm.node_bytes(n):,}", f"{fp32:,}"]
                    + [f"{sens[name][c]:.1f}" for c in cands])
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head] + rows]
    title = f"{qm.name}: {qm.size_bytes():,} bytes"
    if mixed:
        title += (f"; budget {mixed['budget']} ({'met' if mixed['met'] else 'NOT met'}): output SQNR "
                  f"{mixed['measured_sqnr_db']:.1f} dB measured, {mixed['predicted_sqnr_db']:.1f} dB predicted, "
                  f"on {mixed['held_out_samples']} held-out samples")
    return "\n".join([title] + lines)
