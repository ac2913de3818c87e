"""Post-training static quantization: float model + calibration data → :class:`QuantizedModel`.

    qm = quantize_static(model, calibration_data)      # torch nn.Module or minquant Graph

Steps (each a small function below):

1. **Import** a torch model with :func:`minquant.from_torch` (or take a :class:`~minquant.graph.Graph`).
2. **Prepare** (:mod:`.passes`): fold BatchNorm into convolutions; activation-aware cross-layer
   equalization of conv → (ReLU/ReLU6) → conv pairs (ReLU6 keeps its clip at 6, per channel); find
   Conv/Linear+ReLU/ReLU6 and Add+ReLU groups (the activation becomes the output clamp).
3. **Plan** which value is float and which is codes. Layers with integer kernels (conv2d, linear, add,
   cat) read and write uint8 codes; pools, flatten/reshape and standalone ReLU/ReLU6 work on the codes
   of their input and keep its qparams; every other op (hardswish, mul, an unfolded BatchNorm...) runs
   in float between a ``dequantize`` and a ``quantize`` (a *float fallback*) — except hardswish under a
   LiteRT target, an integer op there (HARD_SWISH, ``qhardswish``) with output qparams of its own.
4. **Calibrate** (:mod:`.calibrate`): one activation observer per value that gets its own qparams — the
   model input, every layer group's output, every float value a quantized op reads.
5. **Convert**: weights to int8 — symmetric, ``s_w = max|w| / 127.5`` (torch's rule, zero point 0) per
   output channel (``per_channel=True``) or per tensor; bias stays float32 (each emulation adds it its
   own way, step 5); activation qparams from the observers (``choose_qparams``, uint8).

**Saturation and the lost bit.** fbgemm on a CPU without VNNI adds pairs of u8×s8 products in int16 and
saturates (docs/quantization.md, step 8). Torch avoids it with 7-bit *activations* (``reduce_range``,
uint8 [0, 127]). minquant's default (``reduce_range=None``) gives the bit up on the *weights* instead —
int8 codes in [−64, 64], so a pair is at most 255·128 = 32640 — because weights are quantized per
channel and lose little, while activations are per tensor and need every level (measured on MobileNetV2:
benchmarks/RESULTS_models.md). Emulations that accumulate exactly (qnnpack, onnxruntime, minquant) keep
8 bits for both.

**Bias correction** (``bias_correction=True``): weight rounding shifts each output channel's mean by
``Σ ε·E[x]``; calibration also records every layer input's per-channel mean and the bias is corrected
(:func:`bias_correction`).

Default calibrator: :data:`DEFAULT_CALIBRATOR` (see its comment for the measurement behind the choice).

**Calibration report**: every observed value's range is checked against what the data held
(:func:`minquant.quantized.calibration.range_problems`: degenerate — the value never changed; identical
calibration samples; outlier-dominated — the range is over 100× the 99.9th percentile of ``|x|``). The
findings are in ``meta["calibration_warnings"]`` (``[{value, problem, numbers}]``, empty when all is well)
and one :class:`~minquant.observers.CalibrationWarning` names them.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import observers as O
from ..affine import dequantize, quantize
from ..graph import Graph, Node
from ..target import as_target
from . import ops
from .calibration import (ChannelMean, RangeStats, calibrate, first_samples, range_problems, reiterable,
                          warn_calibration)
from .model import QuantizedModel
from .passes import equalizable_pairs, equalize as equalize_pass, fusion_groups, prepare_float_graph

__all__ = ["quantize_static", "quantize_weight", "bias_correction", "ChannelMean", "CALIBRATORS", "DEFAULT_CALIBRATOR", "make_observer",
           "to_graph"]

CALIBRATORS = {
    "minmax": O.MinMaxObserver,
    "moving_average": O.MovingAverageMinMaxObserver,
    "histogram": O.HistogramObserver,        # torch's HistogramObserver, bit for bit
    "percentile": O.PercentileObserver,      # 99.99th percentile
    "mse": O.MSEObserver,
    "entropy": functools.partial(O.EntropyObserver, symmetric=False),  # TensorRT KL threshold, one-sided ranges kept
}

#: The activation calibrator quantize_static uses by default. Chosen by measurement
#: (benchmarks/quantize_models.py, benchmarks/RESULTS_models.md): on MobileNetV2 it gave the highest
#: logit SQNR and top-1 agreement of the observers above, and on TinyCNN it loses no accuracy.
DEFAULT_CALIBRATOR = "percentile"

#: exponent α of activation-aware cross-layer equalization, s_c = r_x[c]^α / r_w[c]^(1−α). Chosen on
#: MobileNetV2 with held-out crops of the *calibration* split (seed 7; α ∈ {0, 0.3, 0.5} gave logit SQNR
#: 14.2 / 15.4 / 14.6 dB), never on the evaluation crops.
EQUALIZE_ALPHA = 0.3
#: calibration samples used to measure the per-channel activation ranges equalization needs: always the
#: first 32 samples, whatever the batch size
EQUALIZE_SAMPLES = 32

_CODE_OPS = {"max_pool2d": "qmax_pool2d", "avg_pool2d": "qavg_pool2d",
             "adaptive_avg_pool2d": "qadaptive_avg_pool2d", "flatten": "qflatten", "reshape": "qreshape",
             "relu": "qclamp", "relu6": "qclamp"}


def make_observer(calibrator, reduce_range: bool):
    """An activation observer (uint8) from a name in :data:`CALIBRATORS`, an Observer subclass or a factory
    accepting ``dtype=`` and ``reduce_range=`` keywords (e.g. ``functools.partial(PercentileObserver,
    percentile=99.9)``)."""
    if isinstance(calibrator, str):
        if calibrator not in CALIBRATORS:
            raise ValueError(f"unknown calibrator {calibrator!r}; expected one of {sorted(CALIBRATORS)} or an "
                             "observer class / factory")
        calibrator = CALIBRATORS[calibrator]
    if not callable(calibrator):
        raise ValueError(f"calibrator must be a name, an observer class or a factory, got {calibrator!r}")
    obs = calibrator(dtype="uint8", reduce_range=reduce_range)
    if not (hasattr(obs, "update") and hasattr(obs, "compute")):
        raise ValueError(f"calibrator {calibrator!r} did not produce an observer (needs update() and compute())")
    return obs


def _calibrator_name(calibrator) -> str:
    if isinstance(calibrator, str):
        return calibrator
    if isinstance(calibrator, functools.partial):
        kw = ", ".join(f"{k}={v!r}" for k, v in calibrator.keywords.items())
        return f"{getattr(calibrator.func, '__name__', calibrator.func)}({kw})"
    return getattr(calibrator, "__name__", repr(calibrator))


def quantize_weight(w, *, per_channel: bool = True, reduce_range: bool = False, narrow: bool = False):
    """int8 weight codes, symmetric: ``s = max(|min|, |max|) / 127.5`` (torch's symmetric rule,
    :func:`minquant.affine.choose_qparams`), ``z = 0``, per output channel (axis 0) or per tensor.
    ``reduce_range``: 7-bit scale ``s = max|w| / 63.5`` (torch's rule for the range [−64, 63]); the codes
    then lie in [−64, 64] (max|w|/s = 63.5 rounds to 64), so two adjacent u8×s8 products stay within int16:
    255·(64 + 64) = 32640 ≤ 32767. ``narrow``: LiteRT's quantization spec — ``s = max|w| / 127`` and codes in
    [−127, 127] (the converter's symmetric rule). Returns ``(w_q int8, w_scale float32
    (O,) or (1,), w_zp int8 of the same length)``."""
    w = np.asarray(w, dtype=np.float32)
    if narrow:
        if reduce_range:
            raise ValueError("narrow (LiteRT) weights have no 7-bit variant")
        m = np.abs(w).reshape(w.shape[0], -1).max(axis=1) if per_channel else np.abs(w).max().reshape(1)
        s = np.where(m > 0, m / np.float32(127), np.float32(1)).astype(np.float32)
        z0 = np.zeros(s.shape, np.int64)
        w_q = np.clip(quantize(w, s, z0, "int8", axis=0, target="onnxruntime") if per_channel else
                      quantize(w, s[0], 0, "int8", target="onnxruntime"), -127, 127).astype(np.int8)
        return w_q, s, np.zeros(s.shape, np.int8)
    if per_channel:
        obs = O.PerChannelMinMaxObserver(axis=0, dtype="int8", symmetric=True, reduce_range=reduce_range).update(w)
        s, z = obs.compute()
        w_q = quantize(w, s, z, "int8", axis=0, target="torch")
    else:
        s, z = O.MinMaxObserver("int8", symmetric=True, reduce_range=reduce_range).update(w).compute()
        w_q = quantize(w, s, z, "int8", target="torch")
        s, z = np.reshape(s, (1,)), np.reshape(z, (1,))
    return w_q, np.asarray(s, np.float32).reshape(-1), np.asarray(z).astype(np.int8).reshape(-1)


def bias_correction(node, w_q, w_s, w_z, mean_in) -> np.ndarray:
    """The bias that cancels the mean shift weight rounding causes (Nagel et al. 2019, "Data-Free
    Quantization", empirical variant): with ``ε = W̃ − W`` (dequantized minus float weights) and ``μ_c`` the
    calibration mean of input channel c,

        E[y] shifts by  δ_o = Σ_{c,i,j} ε[o, c, i, j] · μ_c       (linear: δ = ε · μ)

    so ``b' = b − δ``. Zero padding is ignored (the border pixels' missing terms are a small part of the
    mean). Returns the new float32 bias."""
    if w_s.size > 1:
        wd = dequantize(w_q, w_s, w_z.astype(np.int32), axis=0)
    else:
        wd = dequantize(w_q, w_s[0], int(w_z[0]))
    return corrected_bias(node, wd, mean_in)


def corrected_bias(node, w_dequantized, mean_in) -> np.ndarray:
    """:func:`bias_correction` from the weights the layer will really use (any quantization: int8, int4 per
    group...): ``b − ε·μ`` with ``ε = w_dequantized − W``. Returns the new float32 bias."""
    w = node.params["weight"].astype(np.float64)
    eps = np.asarray(w_dequantized, np.float64).reshape(w.shape) - w
    mu = np.asarray(mean_in, np.float64)
    if node.op == "linear":
        delta = eps @ mu
    else:
        o, cg = w.shape[:2]
        g = node.attrs.groups
        delta = np.einsum("gock,gc->go", eps.reshape(g, o // g, cg, -1), mu.reshape(g, cg)).reshape(o)
    b = node.params.get("bias")
    b = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
    return (b - delta).astype(np.float32)


def to_graph(model, input_shape=None, first_batch=None) -> Graph:
    """A minquant Graph from a Graph (copied) or a torch nn.Module (imported with ``from_torch``; the input
    shape is ``input_shape`` or the first calibration batch's)."""
    if isinstance(model, Graph):
        return model.copy()
    if input_shape is None:
        if first_batch is None:
            raise ValueError("input_shape is needed to import a torch model")
        input_shape = (1,) + tuple(first_batch.shape[1:])
    try:
        from ..interop.torch.fx_import import from_torch
    except ImportError as e:  # pragma: no cover - torch missing
        raise ValueError(f"model is not a minquant Graph and torch is not available: {e}") from e
    return from_torch(model, tuple(input_shape))


def _plan(g: Graph, groups, float_nodes=frozenset(), code_layers=frozenset()):
    """Which values are codes, which node becomes what (module docstring, step 3). Nodes named in
    ``float_nodes`` stay float (their activation is not fused into them); ops in ``code_layers`` (the
    target's integer activations: hardswish under LiteRT) become layers when they read codes.

    Returns (kind per value: 'codes'/'float', role per node: 'layer'/'absorbed'/'code'/'float',
    observed values: {value: reason})."""
    kind = {v: "float" for v in g.inputs}
    role, observed = {}, {}
    absorbed = {f.activation for k, f in groups.items() if f.activation and k not in float_nodes}
    shapes = {n.name: n.shape for n in g.nodes}
    shapes.update(g.input_shapes)
    for n in g.nodes:
        if n.name in absorbed:
            role[n.name] = "absorbed"
            continue
        same_shapes = n.op == "add" and shapes.get(n.inputs[0]) is not None and \
            shapes.get(n.inputs[0]) == shapes.get(n.inputs[1])
        is_layer = n.name not in float_nodes and (n.op in ("conv2d", "linear", "cat") or same_shapes
                                                  or (n.op in code_layers and kind[n.inputs[0]] == "codes"))
        if is_layer:
            role[n.name] = "layer"
            out = groups[n.name].output if n.name in groups else n.name
            for v in n.inputs:
                if kind[v] == "float":
                    observed[v] = "input of a quantized layer"
            observed[out] = "layer output"
            kind[n.name] = kind[out] = "codes"
        elif n.op in _CODE_OPS and kind[n.inputs[0]] == "codes":
            role[n.name] = "code"
            kind[n.name] = "codes"
        else:
            role[n.name] = "float"
            kind[n.name] = "float"
    return kind, role, observed


def _channel_ranges(g: Graph, batches) -> dict[str, np.ndarray]:
    """Per-channel max|x| of every value an equalizable conv reads, over ``batches`` (float graph)."""
    want = {act or a for a, act, _ in equalizable_pairs(g)}
    ranges: dict[str, np.ndarray] = {}

    def hook(name, v):
        if name in want:
            m = np.abs(v).max(axis=tuple(i for i in range(v.ndim) if i != 1)).astype(np.float64)
            ranges[name] = np.maximum(ranges[name], m) if name in ranges else m

    from ..executor import run as run_graph
    for b in batches:
        run_graph(g, b, hook=hook)
    return ranges


def _clamped_head(head, calibrator, act_rr):
    """The equalization samples (one array) as the quantized model will see them: if the calibrator clamps
    the input (``clamps_input``, e.g. percentile), they are clipped to the range it chooses over the head,
    ``[min(lo, 0), max(hi, 0)]`` — the rule calibration applies (:mod:`.calibration`) — so one extreme pixel
    among the first samples cannot set a layer's per-channel range. Other calibrators leave the samples as
    they are, as calibration does."""
    obs = make_observer(calibrator, act_rr)
    if not getattr(obs, "clamps_input", False):
        return head
    lo, hi = obs.update(head).clip_range()
    lo, hi = np.float32(min(float(np.min(lo)), 0.0)), np.float32(max(float(np.max(hi)), 0.0))
    return np.clip(head, lo, hi)


def _ranges(reduce_range, tgt):
    """(activations 7-bit?, weights 7-bit? — a bool, or for the default a predicate on the layer node, label)
    from the ``reduce_range`` argument (see quantize_static)."""
    if reduce_range is None:
        return False, lambda n: _layer_saturates(tgt, n), "weights"
    if reduce_range is True:
        reduce_range = "activations"
    if reduce_range not in (False, "activations", "weights"):
        raise ValueError(f"reduce_range must be None, False, True, 'activations' or 'weights', got {reduce_range!r}")
    return reduce_range == "activations", reduce_range == "weights", reduce_range


def _layer_saturates(tgt, n) -> bool:
    """Can this conv / linear layer's u8×s8 pairs saturate int16 under ``tgt`` (the arithmetic the target
    resolves to for this very layer: fbgemm's depthwise kernel saturates on every CPU, its GEMM only without
    VNNI, oneDNN with VNNI never)? Weights are symmetric, so every weight zero point is 0."""
    if n.op == "linear":
        return tgt.linear().saturate_pairs
    c_out, cg, kh, kw = n.params["weight"].shape
    a = n.attrs
    return tgt.conv(groups=a.groups, c_in=cg * a.groups, c_out=c_out, kernel=(kh, kw), stride=a.stride,
                    padding=a.padding, dilation=a.dilation, symmetric_weights=True).saturate_pairs


def quantize_static(model, calibration_data, *, per_channel: bool = True, calibrator=DEFAULT_CALIBRATOR,
                    target="fbgemm", input_shape=None, reduce_range=None, bias_correction: bool = True,
                    equalize: bool = True, batch_size: int = 32, progress: bool = True,
                    weight_rounding=None, float_nodes=()) -> QuantizedModel:
    """Post-training static int8 quantization (module docstring).

    ``model``: a torch ``nn.Module`` in eval mode (imported with :func:`minquant.from_torch`) or a minquant
    :class:`~minquant.graph.Graph`. ``calibration_data``: an array (N, ...) or an iterable of batches /
    a torch DataLoader (:mod:`.calibrate`). ``per_channel``: int8 weights per output channel (else per
    tensor). ``calibrator``: activation observer (:func:`make_observer`). ``target``: whose integer
    arithmetic the model runs, on which CPU — a :class:`~minquant.target.Target` or a framework name
    ('x86', 'fbgemm', 'qnnpack', 'onnxruntime', 'minquant') for this host. ``input_shape``: for a
    torch model, the input shape with batch (default: the calibration data's).
    ``reduce_range``: which operand gives up one bit so that fbgemm's int16 pairs cannot saturate —
    ``'activations'`` (or True: uint8 [0, 127], torch's choice), ``'weights'`` (int8 codes in [−64, 64]: a
    pair is at most 255·(64 + 64) = 32640 ≤ 32767), or False (none). Default None: 7-bit weights for exactly
    the layers whose arithmetic under the target can saturate pairs (:func:`_layer_saturates` — e.g. fbgemm's
    depthwise kernel on every CPU, its GEMM only without VNNI), full 8-bit elsewhere; ``meta["weights_7bit"]``
    lists them. ``bias_correction``: cancel the mean output shift
    caused by weight rounding (:func:`bias_correction`), using per-channel input means from calibration.
    ``equalize``: (skipped for LiteRT targets: a ReLU6 clipped per channel has no .tflite form)
    activation-aware cross-layer equalization of conv → (ReLU/ReLU6) → conv pairs before
    calibration (:func:`minquant.quantized.passes.equalize` with ranges measured on the first
    :data:`EQUALIZE_SAMPLES` calibration samples, α = :data:`EQUALIZE_ALPHA`; ReLU6 keeps its clip, per
    channel).
    ``weight_rounding``: None (round to nearest, :func:`quantize_weight`) or an object whose method
    ``quantize_weight(node, *, per_channel, reduce_range) → (w_q, w_scale, w_zp)`` gives the weight codes of
    each conv / linear layer from its float node (after BN folding and equalization) — e.g. the learned
    up/down rounding of :func:`minquant.qat.adaround` (``meta["weight_rounding"]`` names it).

    ``float_nodes``: names of nodes of the (prepared) float graph to leave in float — the float16 / int4 layers
    of a mixed-precision model (:func:`minquant.quantized.precision_convert.quantize_precision`).

    Raises ValueError for empty / NaN calibration data, an unknown calibrator or emulation, or a model
    the importer cannot read."""
    if not isinstance(per_channel, (bool, np.bool_)):
        raise TypeError(f"per_channel must be True or False (int8 weights per output channel or per "
                        f"tensor), got {per_channel!r}")
    per_channel = bool(per_channel)
    if weight_rounding is not None and not callable(getattr(weight_rounding, "quantize_weight", None)):
        raise TypeError(f"weight_rounding must be None or an object with a quantize_weight(node, *, per_channel, "
                        f"reduce_range) method, got {type(weight_rounding).__name__}")
    tgt = as_target(target)
    ar = tgt.linear()
    if ar.litert is not None:   # a ReLU6 clipped per channel (equalization) cannot be written in a .tflite
        equalize = False
    act_rr, w_rr, rr_label = _ranges(reduce_range, tgt)
    make_observer(calibrator, act_rr)  # fail early on a bad calibrator
    data = reiterable(calibration_data, batch_size)   # read more than once: the head, the input range, the model
    head = first_samples(data, EQUALIZE_SAMPLES, batch_size)   # the input shape, and equalization's ranges
    graph = to_graph(model, input_shape, head)
    if any(n.shape is None for n in graph.nodes):
        from ..executor import infer_shapes
        infer_shapes(graph)
    g, groups, folded, channel_scales = prepare_float_graph(graph)
    _check_int8_layers(weight_rounding, g)
    if equalize:
        g, channel_scales = equalize_pass(g, act_ranges=_channel_ranges(g, [_clamped_head(head, calibrator, act_rr)]),
                                          alpha=EQUALIZE_ALPHA, iterations=1)
        groups = fusion_groups(g)
    kind, role, observed = _plan(g, groups, frozenset(float_nodes),
                                 frozenset({"hardswish"}) if ar.litert is not None else frozenset())
    observers = {v: [make_observer(calibrator, act_rr)] for v in observed}
    means = {}
    if bias_correction:
        for n in g.nodes:
            if role[n.name] == "layer" and n.op in ("conv2d", "linear"):
                means.setdefault(n.inputs[0], ChannelMean())
                observers.setdefault(n.inputs[0], []).append(means[n.inputs[0]])
    stats = {v: RangeStats(samples=v in g.inputs) for v in observed}   # the calibration report's facts
    for v, st in stats.items():
        observers[v].append(st)
    n_samples = calibrate(g, data, observers, batch_size=batch_size, progress=progress)
    qparams = {}
    for v in observed:
        s, z = observers[v][0].compute()
        qparams[v] = (float(s), int(z))
    problems = range_problems(stats, qparams, dtype="uint8", reduce_range=act_rr)
    seven_bit: list[str] = []
    qgraph, float_names = _convert(g, groups, role, qparams, per_channel, ar.quantize_rule, w_rr,
                                   {v: m.mean() for v, m in means.items()}, seven_bit,
                                   weight_rounding=weight_rounding, litert=ar.litert is not None)
    if callable(w_rr) and not seven_bit:
        rr_label = False
    q_scales = {q: channel_scales[v] for q, v in float_names.items() if v in channel_scales}
    float_names = {k: folded.get(v, v) for k, v in float_names.items()}  # a folded conv's output was its BN's
    meta = {"method": "quantize_static", "calibrator": _calibrator_name(calibrator), "per_channel": per_channel,
            "reduce_range": rr_label or False, "weights_7bit": seven_bit, "bias_correction": bool(bias_correction),
            "equalized": bool(equalize), "equalize_alpha": EQUALIZE_ALPHA if equalize else None,
            "weight_rounding": getattr(weight_rounding, "name", "nearest" if weight_rounding is None
                                       else type(weight_rounding).__name__),
            "calibration_samples": n_samples, "folded_batch_norms": sorted(folded.values()),
            "float_fallback": [n for n, r in role.items() if r == "float"], "calibration_warnings": problems}
    warn_calibration(problems, calibrator=meta["calibrator"], stacklevel=3)
    return QuantizedModel(qgraph, tgt, float_names=float_names, meta=meta, channel_scales=q_scales)


def _check_int8_layers(weight_rounding, g):
    """A rounding that keeps some layers in int8 (``NearestWeights(int8_layers=...)``) must name layers of this
    model: a misspelt name would otherwise leave that layer in int4 without a word."""
    wanted = getattr(weight_rounding, "int8_layers", ())
    layers = [n.name for n in g.nodes if n.op in ("conv2d", "linear")]
    unknown = [name for name in wanted if name not in layers]
    if unknown:
        raise ValueError(f"weight_rounding keeps {unknown} in int8, but the model has no conv / linear layer of that "
                         f"name (its {len(layers)} layers: {', '.join(layers[:4])}{', …' if len(layers) > 4 else ''})")


def _rounded_weight(weight_rounding, node, per_channel, reduce_range):
    """A ``weight_rounding`` object's codes for one layer, checked: int8 codes of the weight's shape, one
    positive scale and one zero point per output channel (or one for the tensor)."""
    w_q, w_s, w_z = weight_rounding.quantize_weight(node, per_channel=per_channel, reduce_range=reduce_range)
    w_q, w_s, w_z = np.asarray(w_q), np.asarray(w_s, np.float32).reshape(-1), np.asarray(w_z).reshape(-1)
    o = node.params["weight"].shape[0]
    if w_q.dtype != np.int8 or w_q.shape != node.params["weight"].shape:
        raise ValueError(f"weight_rounding gave {node.name!r} codes of dtype {w_q.dtype} and shape {w_q.shape}; "
                         f"expected int8 {node.params['weight'].shape}")
    if w_s.shape != w_z.shape or w_s.size != (o if per_channel else 1) or not np.all(w_s > 0):
        raise ValueError(f"weight_rounding gave {node.name!r} {w_s.size} scale(s) and {w_z.size} zero point(s); "
                         f"expected {o if per_channel else 1} positive scales")
    return w_q, w_s, w_z.astype(np.int8)


def _convert(g: Graph, groups, role, qparams, per_channel, quantize_rule, weight_reduce_range=False, means=None,
             seven_bit=None, weight_rounding=None, litert=False):
    """Build the quantized graph from the plan (module docstring, step 5). ``weight_reduce_range``: a bool,
    or a predicate on the float layer node; the names of layers given 7-bit weights are appended to
    ``seven_bit``."""
    seven_bit = [] if seven_bit is None else seven_bit
    nodes: list[Node] = []
    codes: dict[str, str] = {}      # float-graph value → its codes value in the new graph
    floats: dict[str, str] = {v: v for v in g.inputs}   # float-graph value → its float value in the new graph
    qp: dict[str, tuple[float, int]] = {}                # new-graph codes value → (scale, zp)
    float_names: dict[str, str] = {}

    def get_codes(v):
        if v not in codes:
            s, z = qparams[v]
            name = f"{v}:quantize"
            nodes.append(Node(name, "quantize", [floats[v]], ops.QuantizeAttrs(s, z), source=f"input of {v}"))
            codes[v], qp[name], float_names[name] = name, (s, z), v
        return codes[v]

    def get_float(v):
        if v not in floats:
            c = codes[v]
            s, z = qp[c]
            name = f"{v}:dequantize"
            nodes.append(Node(name, "dequantize", [c], ops.QuantizeAttrs(s, z), source=f"output of {v}"))
            floats[v], float_names[name] = name, v
        return floats[v]

    def q6(s, z):
        if litert:   # LiteRT's CalculateActivationRangeQuantized: z + round-half-away(f32(6 / s))
            return int(min(255, z + np.sign(np.float32(6.0) / np.float32(s)) *
                           np.floor(np.abs(np.float32(6.0) / np.float32(s)) + 0.5)))
        return int(quantize(np.float32(6.0), s, z, "uint8", target=quantize_rule))

    for n in g.nodes:
        r = role[n.name]
        if r == "absorbed":
            continue
        if r == "layer":
            fusion = groups.get(n.name)
            out = fusion.output if fusion else n.name
            ys, yz = qparams[out]
            act = fusion.activation_op if fusion else None
            clamp = (0, 255) if act is None else (yz, q6(ys, yz)) if act == "relu6" else (yz, 255)
            ins = [get_codes(v) for v in n.inputs]
            if n.op in ("conv2d", "linear"):
                xs, xz = qp[ins[0]]
                w7 = weight_reduce_range(n) if callable(weight_reduce_range) else bool(weight_reduce_range)
                if w7:
                    seven_bit.append(n.name)
                if weight_rounding is not None:
                    w_q, w_s, w_z = _rounded_weight(weight_rounding, n, per_channel, w7)
                else:
                    w_q, w_s, w_z = quantize_weight(n.params["weight"], per_channel=per_channel, reduce_range=w7,
                                                    narrow=litert)
                params = {"weight": w_q, "w_scale": w_s, "w_zp": w_z}
                if means and n.inputs[0] in means:
                    params["bias"] = bias_correction(n, w_q, w_s, w_z, means[n.inputs[0]])
                elif "bias" in n.params:
                    params["bias"] = n.params["bias"].astype(np.float32)
                common = dict(x_scale=xs, x_zp=xz, y_scale=ys, y_zp=yz, clamp=clamp, activation=act or "",
                              per_channel=per_channel)
                if n.op == "conv2d":
                    a = n.attrs
                    attrs = ops.QConv2dAttrs(a.stride, a.padding, a.dilation, a.groups, **common)
                    new = Node(n.name, "qconv2d", ins, attrs, params, n.shape, n.source)
                else:
                    new = Node(n.name, "qlinear", ins, ops.QLinearAttrs(**common), params, n.shape, n.source)
            elif n.op == "hardswish":       # LiteRT's HARD_SWISH (the plan makes it a layer only there)
                (xs, xz) = qp[ins[0]]
                new = Node(n.name, "qhardswish", ins, ops.QActivationAttrs(xs, xz, ys, yz), shape=n.shape,
                           source=n.source)
            elif n.op == "add":
                (sa, za), (sb, zb) = qp[ins[0]], qp[ins[1]]
                new = Node(n.name, "qadd", ins, ops.QAddAttrs(sa, za, sb, zb, ys, yz, relu=act == "relu"),
                           shape=n.shape, source=n.source)
            else:  # cat
                new = Node(n.name, "qcat", ins, ops.QCatAttrs(n.attrs.dim, tuple(qp[v][0] for v in ins),
                                                              tuple(qp[v][1] for v in ins), ys, yz),
                           shape=n.shape, source=n.source)
            if act == "relu_clip":   # ReLU6 after equalization: a per-channel top on the codes, in the output stage
                hi = quantize(g.node(fusion.activation).params["hi"], ys, yz, "uint8", target=quantize_rule)
                if hi.min() < 255:
                    new.params["clamp_hi"] = hi
            nodes.append(new)
            codes[out] = codes[n.name] = new.name
            qp[new.name] = (ys, yz)
            float_names[new.name] = out
        elif r == "code":
            x = codes[n.inputs[0]]
            s, z = qp[x]
            a = n.attrs
            if n.op == "relu":
                attrs = ops.QClampAttrs(z, 255, "relu")
            elif n.op == "relu6":
                attrs = ops.QClampAttrs(z, q6(s, z), "relu6")
            elif n.op == "avg_pool2d":
                attrs = ops.QAvgPool2dAttrs(a.kernel_size, a.stride, a.padding, a.ceil_mode, a.count_include_pad,
                                            a.divisor_override, s, z)
            elif n.op == "adaptive_avg_pool2d":
                attrs = ops.QAdaptiveAvgPool2dAttrs(a.output_size, s, z)
            else:  # max_pool2d (MaxPool2dAttrs), flatten, reshape: the float op's attributes apply to codes
                attrs = a
            new = Node(n.name, _CODE_OPS[n.op], [x], attrs, shape=n.shape, source=n.source)
            nodes.append(new)
            codes[n.name] = new.name
            qp[new.name] = (s, z)
            float_names[new.name] = n.name
        else:  # float fallback
            new = Node(n.name, n.op, [get_float(v) for v in n.inputs], n.attrs,
                       {k: v.copy() for k, v in n.params.items()}, n.shape, n.source)
            nodes.append(new)
            floats[n.name] = new.name
            float_names[new.name] = n.name
    outputs = [get_float(v) for v in g.outputs]
    qgraph = Graph(g.inputs, nodes, outputs, g.input_shapes, g.name)
    return qgraph, float_names
