"""Whole models at any precision, chosen per model and per layer: float model → :class:`QuantizedModel`.

    qm = quantize_precision(model, FP16)                                  # every layer float16
    qm = quantize_precision(model, w4a16(32), calib)                      # int4 weights per group of 32
    qm = quantize_precision(model, INT8, calib, layers={"classifier": FP16})   # mixed

Steps (the same preparation as :func:`~minquant.quantized.static.quantize_static`, whose machinery does the
int8 part):

1. **Prepare** the float graph: fold BatchNorm; with calibration data, activation-aware cross-layer
   equalization (as ``quantize_static``: the first calibration samples, α = ``EQUALIZE_ALPHA``).
2. **Assign** each conv / linear layer its :class:`~minquant.quantized.precision.Precision` (``precision``, or
   ``layers[name]``). A value is *codes* if an int8-activation layer (INT8, W4A8) wrote it or if it is an
   add / concatenation of codes (or a ReLU / pool / flatten of codes); everything else stays float.
3. **int8 part**: ``quantize_static`` on the prepared graph with every float layer (and float add / cat)
   named in ``float_nodes``: it calibrates the activations the int8 layers read and write (on the float model)
   and converts them; the float layers come back as float nodes between ``dequantize`` / ``quantize``.
4. **Lower** the rest: float layers become ``fp16_*`` (weights float16) or ``w4_*`` nodes; INT8-activation
   layers with int4 weights become ``w4a8_*`` nodes (the int8 layer's calibrated qparams and clamp, int4
   weights from the float weights). int4 weights: :func:`quantize_int4_rows`. With calibration data the
   int4 layers' biases are corrected for the mean shift of their weight rounding
   (:func:`~minquant.quantized.static.corrected_bias`, per-channel input means measured on the float model).

``meta["precisions"]`` names each layer's precision and ``meta["int4_group_sizes"]`` the group size each
int4 layer really uses (one per output channel where ``group_size`` does not divide its row);
:func:`minquant.quantized.mixed.precision_table` prints them.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..affine import choose_qparams, dequantize, quantize, to_float16
from ..executor import infer_shapes, run as run_graph
from ..graph import Graph, Node
from ..kernels.int4_conv import conv_weight_rows, pack_int4_rows, rows_to_conv_weight
from ..target import as_target
from .calibration import first_samples, iter_batches
from .model import QuantizedModel
from .passes import equalize as equalize_pass, prepare_float_graph
from .precision import INT8, Numbers, Precision
from .precision_ops import Fp16Attrs, Int4Attrs, W4A8Attrs
from .static import (DEFAULT_CALIBRATOR, EQUALIZE_ALPHA, EQUALIZE_SAMPLES, ChannelMean, _channel_ranges,
                     _clamped_head, corrected_bias, quantize_static, quantize_weight, to_graph)

__all__ = ["quantize_precision", "prepare_graph", "quantize_int4_rows", "weight_layers", "layer_precisions"]

_PASS_CODES = ("relu", "relu6", "relu_clip", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "flatten", "reshape")


def weight_layers(graph: Graph) -> list[str]:
    """Names of the conv / linear layers of a (prepared) float graph, in order — the layers a precision is
    chosen for."""
    return [n.name for n in graph.nodes if n.op in ("conv2d", "linear")]


def quantize_int4_rows(rows, group_size: int, *, symmetric: bool = True):
    """int4 codes of an (N, K) weight matrix, ``group_size`` weights per scale (module docstring of
    :mod:`minquant.quantized.precision`). Scales are chosen by torch's rule
    (:func:`minquant.affine.choose_qparams`: symmetric ``s = max|w| / 7.5`` with int4 codes, or affine with
    uint4 codes and a zero point) and stored in float16, rounded *up* so that no weight is clipped; codes are
    ``rne(w / s) + z``. A row length K that ``group_size`` does not divide gets one group per row.

    Returns ``(codes (N, K) int8/uint8, scale (N, G) float16, zero point (N, G) int8 or None, group size)``."""
    rows = np.asarray(rows, np.float32)
    if rows.ndim != 2:
        raise ValueError(f"weights must be an (N, K) matrix, got shape {rows.shape}")
    n, k = rows.shape
    gs = int(group_size) if k % int(group_size) == 0 else k
    g = rows.reshape(n, k // gs, gs)
    dtype = "int4" if symmetric else "uint4"
    s, z = choose_qparams(g.min(axis=2), g.max(axis=2), dtype, symmetric=symmetric)
    s16 = to_float16(s)
    low = s16.astype(np.float32) < s
    s16[low] = np.nextafter(s16[low], np.float16(np.inf))              # round up: nothing clipped
    s16 = np.maximum(s16, np.float16(2.0 ** -24))                      # float16's smallest positive number
    codes = quantize(rows, s16.astype(np.float32), z, dtype, axis=1, group_size=gs, target="onnxruntime")
    return codes, s16, (None if symmetric else z.astype(np.int8)), gs


class _Int8Part:
    """A ``weight_rounding`` for the ``quantize_static`` call of :func:`quantize_precision`: the given
    rounding for the INT8 layers; plain nearest int8 for the layers lowered afterwards (their codes are
    replaced by the rounding's ``quantize_int4``)."""

    def __init__(self, rounding, int8_layers):
        if not callable(getattr(rounding, "quantize_int4", None)):
            raise TypeError(f"weight_rounding must have a quantize_int4(node, *, group_size, symmetric) method "
                            f"(minquant.qat.NearestWeights, AdaRoundWeights), got {type(rounding).__name__}")
        self.rounding, self.int8_layers = rounding, set(int8_layers)
        self.name = getattr(rounding, "name", type(rounding).__name__)

    def quantize_weight(self, node, *, per_channel, reduce_range):
        if node.name not in self.int8_layers:
            return quantize_weight(node.params["weight"], per_channel=per_channel, reduce_range=reduce_range)
        dtype_of = getattr(self.rounding, "dtype_of", None)
        if dtype_of is not None and dtype_of(node.name) != "int8":
            raise ValueError(f"layer {node.name!r} is INT8 in this model but the weight rounding gives it "
                             f"{dtype_of(node.name)} codes: name it in the rounding's int8_layers")
        return self.rounding.quantize_weight(node, per_channel=per_channel, reduce_range=reduce_range)


def layer_precisions(graph: Graph, precision: Precision, layers=None) -> dict[str, Precision]:
    """Each weight layer's precision: ``layers[name]`` where given, else ``precision``. Unknown names and
    values that are not :class:`Precision` raise (naming the valid layers)."""
    if not isinstance(precision, Precision):
        raise TypeError(f"precision must be a Precision (e.g. minquant.quantized.precision.FP16, INT8, "
                        f"w4a16()), got {precision!r}")
    names = weight_layers(graph)
    chosen = {name: precision for name in names}
    if layers is None:
        return chosen
    if not isinstance(layers, Mapping):
        raise TypeError(f"layers must map layer names to Precision, got {type(layers).__name__}")
    unknown = sorted(set(layers) - set(names))
    if unknown:
        raise ValueError(f"layers {unknown} are not conv / linear layers of the model; its layers are: "
                         f"{', '.join(names)}")
    for name, p in layers.items():
        if not isinstance(p, Precision):
            raise TypeError(f"layers[{name!r}] must be a Precision, got {p!r}")
        chosen[name] = p
    return chosen


def _float_nodes(g: Graph, chosen) -> set[str]:
    """Nodes that stay float: float-activation layers, and adds / cats that read a float value (step 2)."""
    codes: set[str] = set()
    floats: set[str] = set()
    for n in g.nodes:
        if n.name in chosen:
            if chosen[n.name].activations is Numbers.INT8:
                codes.add(n.name)
            else:
                floats.add(n.name)
        elif n.op in ("add", "cat"):
            if all(v in codes for v in n.inputs):
                codes.add(n.name)
            else:
                floats.add(n.name)
        elif n.op in _PASS_CODES and n.inputs[0] in codes:
            codes.add(n.name)
    return floats


def _channel_means(g: Graph, batches, layers) -> dict[str, np.ndarray]:
    """Per-channel mean of each listed layer's input over the calibration batches (float model)."""
    want = {g.node(name).inputs[0]: ChannelMean() for name in layers}

    def hook(name, v):
        if name in want:
            want[name].update(v)

    for b in batches:
        run_graph(g, b, hook=hook)
    return {name: want[g.node(name).inputs[0]].mean() for name in layers}


def _int4_params(fnode: Node, p: Precision, mean, rounding=None):
    """Packed codes, scales, zero points and (corrected) bias of an int4 layer from its float node
    (``rounding``: a weight rounding's ``quantize_int4``, else :func:`quantize_int4_rows`)."""
    w = fnode.params["weight"]
    rows = conv_weight_rows(w) if fnode.op == "conv2d" else w
    if rounding is not None:
        codes, s16, zp, gs = rounding.quantize_int4(fnode, group_size=p.group_size, symmetric=p.symmetric)
    else:
        codes, s16, zp, gs = quantize_int4_rows(rows, p.group_size, symmetric=p.symmetric)
    params = {"weight_packed": pack_int4_rows(codes), "w_scale": s16}
    if zp is not None:
        params["w_zp"] = zp
    z = np.zeros(s16.shape, np.int64) if zp is None else zp.astype(np.int64)
    wd = dequantize(codes, s16.astype(np.float32), z, axis=1, group_size=gs)
    if mean is not None:
        params["bias"] = corrected_bias(fnode, rows_to_conv_weight(wd, w.shape) if fnode.op == "conv2d" else wd,
                                        mean)
    elif "bias" in fnode.params:
        params["bias"] = fnode.params["bias"].astype(np.float32)
    return params, gs


def _geometry(fnode):
    a = fnode.attrs
    return dict(stride=a.stride, padding=a.padding, dilation=a.dilation, groups=a.groups) if fnode.op == "conv2d" else {}


def _lowered(node: Node, fnode: Node, p: Precision, mean, rounding=None) -> tuple[Node, int | None]:
    """The node that replaces ``node`` (a float conv2d / linear, or the qconv2d / qlinear of an int8
    layer) at precision ``p``; ``fnode`` is the float layer. Returns (node, int4 group size or None)."""
    conv = fnode.op == "conv2d"
    w = fnode.params["weight"]
    if p.weights is Numbers.FP16:
        params = {"weight": to_float16(w, saturate=False)}
        if "bias" in fnode.params:
            params["bias"] = to_float16(fnode.params["bias"], saturate=False)
        attrs = Fp16Attrs(**_geometry(fnode), round_output=p.activations is Numbers.FP16)
        return Node(node.name, "fp16_conv2d" if conv else "fp16_linear", node.inputs, attrs, params, node.shape,
                    node.source), None
    params, gs = _int4_params(fnode, p, mean, rounding)
    if p.activations is Numbers.INT8:
        a = node.attrs
        attrs = W4A8Attrs(tuple(w.shape), gs, p.symmetric, **_geometry(fnode), x_scale=a.x_scale, x_zp=a.x_zp,
                          y_scale=a.y_scale, y_zp=a.y_zp, clamp=a.clamp, activation=a.activation)
        if "clamp_hi" in node.params:
            params["clamp_hi"] = node.params["clamp_hi"]
        return Node(node.name, "w4a8_conv2d" if conv else "w4a8_linear", node.inputs, attrs, params, node.shape,
                    node.source), gs
    attrs = Int4Attrs(tuple(w.shape), gs, p.symmetric, **_geometry(fnode), round_output=p.activations is Numbers.FP16)
    return Node(node.name, "w4_conv2d" if conv else "w4_linear", node.inputs, attrs, params, node.shape,
                node.source), gs


def prepare_graph(model, batches, *, equalize: bool = True, calibrator=DEFAULT_CALIBRATOR, input_shape=None,
                  fold_batch_norm: bool = True):
    """Step 1: the float graph every precision starts from — BatchNorm folded and, with calibration batches
    and ``equalize``, cross-layer equalized as ``quantize_static`` does it. Returns ``(graph, folded,
    channel_scales)``. A graph prepared here can be given back to :func:`quantize_precision` with
    ``equalize=False`` (the mixed-precision search does, so that every candidate starts from the same
    weights). ``fold_batch_norm=False`` keeps BatchNorm as its own (float) op and skips equalization: what a
    float16 model should do (measured on MobileNetV2: rounding the BN-folded weights to float16 costs 4.5 dB of
    output SQNR, torch's ``.half()`` alike; equalizing them first 5 dB more)."""
    graph = to_graph(model, input_shape, batches[0] if batches else None)
    if any(n.shape is None for n in graph.nodes):
        infer_shapes(graph)
    if not fold_batch_norm:
        for n in list(graph.nodes):
            if n.op == "identity" and n.name not in graph.outputs:
                graph.remove_node(n.name)
        return graph, {}, {}
    g, _, folded, channel_scales = prepare_float_graph(graph)
    if equalize and batches:
        head = first_samples(batches, EQUALIZE_SAMPLES)   # the first 32 samples, whatever the batches
        g, channel_scales = equalize_pass(g, act_ranges=_channel_ranges(g, [_clamped_head(head, calibrator, False)]),
                                          alpha=EQUALIZE_ALPHA, iterations=1)
    return g, folded, channel_scales


def quantize_precision(model, precision: Precision = INT8, calibration_data=None, *, layers=None, target="x86",
                       input_shape=None, per_channel: bool = True, calibrator=DEFAULT_CALIBRATOR,
                       reduce_range=None, bias_correction: bool = True, equalize: bool = True,
                       fold_batch_norm: bool = True, batch_size: int = 32, weight_rounding=None,
                       progress: bool = False) -> QuantizedModel:
    """A model at ``precision``, layer by layer overridden by ``layers`` ({layer name: Precision}); module
    docstring. ``calibration_data`` (as ``quantize_static``) is needed when a layer has int8 activations
    (INT8, W4A8) and is used, when given, for equalization and for the bias correction of int4 layers.
    ``target``: the integer arithmetic of the int8 layers (and of ``w4_linear``: 'onnxruntime' or 'minquant'
    reproduce ``MatMulNBits``; other targets use 'minquant'). The other keywords are ``quantize_static``'s.
    A torch model needs ``input_shape`` when no calibration data is given. ``fold_batch_norm=False`` (float
    activations only) keeps BatchNorm layers as float ops, unequalized (:func:`prepare_graph`).
    ``weight_rounding``: None (round to nearest) or a rounding of :mod:`minquant.qat` (``NearestWeights``,
    ``AdaRoundWeights``): its ``quantize_int4(node, group_size=, symmetric=)`` gives the int4 layers' codes and
    scales, its ``quantize_weight`` the INT8 layers' (whose code type it must say is int8) — how AdaRound and
    quantization-aware training make W4A8 g32 models."""
    tgt = as_target(target)
    batches = list(iter_batches(calibration_data, batch_size)) if calibration_data is not None else []
    g, folded, channel_scales = prepare_graph(model, batches, equalize=equalize, calibrator=calibrator,
                                              input_shape=input_shape, fold_batch_norm=fold_batch_norm)
    chosen = layer_precisions(g, precision, layers)
    needs_codes = any(p.activations is Numbers.INT8 for p in chosen.values())
    if needs_codes and not fold_batch_norm:
        raise ValueError("fold_batch_norm=False is for float activations only: int8 layers need BatchNorm folded")
    if needs_codes and not batches:
        raise ValueError("layers with int8 activations (INT8, W4A8) need calibration_data")
    float_nodes = _float_nodes(g, chosen)
    meta = {"method": "quantize_precision", "precision": precision.name,
            "precisions": {name: p.name for name, p in chosen.items()},
            "equalized": bool(equalize and batches and fold_batch_norm), "batch_norm_folded": bool(fold_batch_norm)}
    int8_rounding = None
    if weight_rounding is not None:
        int8_rounding = _Int8Part(weight_rounding, {n for n, p in chosen.items() if p.weights is Numbers.INT8})
        meta["weight_rounding"] = getattr(weight_rounding, "name", type(weight_rounding).__name__)
    if needs_codes:
        qm = quantize_static(g, batches, per_channel=per_channel, calibrator=calibrator, target=tgt,
                             reduce_range=reduce_range, bias_correction=bias_correction, equalize=False,
                             batch_size=batch_size, progress=progress, float_nodes=float_nodes,
                             weight_rounding=int8_rounding)
        qgraph, float_names = qm.graph, qm.float_names
        meta.update({k: v for k, v in qm.meta.items() if k not in ("method", "equalized", "equalize_alpha")})
    else:
        qgraph, float_names = g.copy(), {n.name: n.name for n in g.nodes}
    meta["equalize_alpha"] = EQUALIZE_ALPHA if meta["equalized"] else None
    int4 = [name for name, p in chosen.items() if p.weights is Numbers.INT4]
    means = _channel_means(g, batches, int4) if (bias_correction and batches and int4) else {}
    group_sizes = {}
    nodes = []
    for node in qgraph.nodes:
        p = chosen.get(node.name)
        if p is None or p.weights in (Numbers.FP32, Numbers.INT8):
            nodes.append(node)
            continue
        new, gs = _lowered(node, g.node(node.name), p, means.get(node.name), weight_rounding)
        if gs is not None:
            group_sizes[node.name] = gs
        nodes.append(new)
    meta["int4_group_sizes"] = group_sizes
    meta["int4_bias_correction"] = bool(means)
    out = Graph(qgraph.inputs, nodes, qgraph.outputs, qgraph.input_shapes, qgraph.name)
    q_scales = {q: channel_scales[v] for q, v in float_names.items() if v in channel_scales}
    float_names = {k: folded.get(v, v) for k, v in float_names.items()}
    return QuantizedModel(out, tgt, float_names=float_names, meta=meta, channel_scales=q_scales)
