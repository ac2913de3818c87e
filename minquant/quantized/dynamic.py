"""Dynamic quantization: int8 weights ahead of time, activations quantized at run time — and a report of
what a quantizer actually quantized.

    qm = quantize_dynamic(model, input_shape=(1, 1, 28, 28))
    print(qm.report)                      # every weighted layer: int8 or float, and why

No calibration: each call measures the input's range, picks uint8 qparams, quantizes, runs the integer
product and dequantizes the accumulator straight to float (:mod:`minquant.kernels.dynamic`). minquant
does this for Linear **and** Conv2d (``dynamic_conv2d``: the same arithmetic on the im2col matrix).

The seed's surprise: ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear, nn.Conv2d},
dtype=torch.qint8)`` returns a model whose Conv2d layers are still float — torch's default dynamic
mapping has no Conv2d entry, and asking for it is silently ignored. :func:`report_torch_quantized` makes
that visible: one row per layer with weights, its module type and whether its weights are int8.

BatchNorm after a conv is folded first (:func:`~minquant.quantized.passes.fold_batch_norm`); a ReLU right
after a quantized layer becomes its ``relu`` flag (torch's ``linear_relu_dynamic``). Everything else
stays float.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..graph import Graph, Node
from ..target import as_target
from . import ops
from .model import DeferredModel, QuantizedModel
from .passes import fold_batch_norm, fusion_groups
from .static import quantize_weight, to_graph

__all__ = ["quantize_dynamic", "QuantizationReport", "LayerReport", "report_torch_quantized"]


@dataclass
class LayerReport:
    name: str
    kind: str          # 'conv2d', 'linear', ...
    module: str        # where it came from (torch module type)
    quantized: bool
    how: str           # 'int8 dynamic', 'int8 static', 'float', ...
    params: int
    bytes: int
    note: str = ""


@dataclass
class QuantizationReport:
    """Which layers with weights were quantized, and how. ``str(report)`` is a table."""
    title: str
    layers: list = field(default_factory=list)

    @property
    def quantized(self) -> list:
        return [r for r in self.layers if r.quantized]

    @property
    def not_quantized(self) -> list:
        return [r for r in self.layers if not r.quantized]

    def by_kind(self) -> dict:
        """{kind: (quantized count, total count)}."""
        out = {}
        for r in self.layers:
            q, t = out.get(r.kind, (0, 0))
            out[r.kind] = (q + int(r.quantized), t + 1)
        return out

    def __str__(self) -> str:
        head = ("layer", "kind", "module", "weights", "params", "bytes", "note")
        rows = [(r.name, r.kind, r.module, r.how, f"{r.params:,}", f"{r.bytes:,}", r.note) for r in self.layers]
        widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
        kinds = ", ".join(f"{k}: {q}/{t} quantized" for k, (q, t) in self.by_kind().items())
        lines = [f"{self.title} — {kinds}"]
        for r in [head] + rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        return "\n".join(lines)


def quantize_dynamic(model, *, layers=("linear", "conv2d"), per_channel: bool = True, target="fbgemm",
                     reduce_range=None, input_shape=None):
    """Dynamic int8 quantization of the Linear and Conv2d layers of ``model`` (torch nn.Module or minquant
    Graph). Returns the :class:`QuantizedModel`; its ``report`` attribute is the :class:`QuantizationReport`
    (which layers became int8, which stayed float and why). A torch model given without ``input_shape``
    gives a :class:`~minquant.quantized.model.DeferredModel`, quantized at its first call from that input's
    shape (no calibration is involved, so nothing else waits for data).

    ``layers``: which op kinds to quantize ('linear', 'conv2d'). Weights: symmetric int8 per output channel
    (``per_channel``) or per tensor, as :func:`~minquant.quantized.static.quantize_weight`. Activations:
    per call, uint8 from the input's min/max (``reduce_range``: 7-bit; default: True for 'fbgemm', as
    torch's dynamic Linear, False otherwise)."""
    if not isinstance(model, Graph) and not hasattr(model, "named_modules"):
        raise ValueError(f"quantize_dynamic needs a torch nn.Module or a minquant Graph, got {type(model).__name__}")
    if not isinstance(per_channel, (bool, np.bool_)):
        raise TypeError(f"per_channel must be True or False, got {per_channel!r}")
    layers = tuple(layers)
    bad = set(layers) - {"linear", "conv2d"}
    if bad:
        raise ValueError(f"quantize_dynamic quantizes 'linear' and 'conv2d' layers; got {sorted(bad)}")
    tgt = as_target(target)
    ar = tgt.linear()
    if reduce_range is None:
        reduce_range = ar.name == "fbgemm"
    if not isinstance(model, Graph) and input_shape is None:
        return DeferredModel(lambda shape: quantize_dynamic(model, layers=layers, per_channel=per_channel,
                                                            target=target, reduce_range=reduce_range,
                                                            input_shape=shape),
                             f"quantize_dynamic({type(model).__name__})")
    graph = to_graph(model, input_shape)
    g, folded = fold_batch_norm(graph)
    groups = fusion_groups(g)
    absorbed = {}
    for f in groups.values():
        node = g.node(f.layer)
        if node.op in layers and f.activation_op == "relu":
            absorbed[f.activation] = f.layer
    nodes, report = [], QuantizationReport(f"quantize_dynamic({graph.name}, target={ar.name!r})")
    float_names = {}
    for n in g.nodes:
        if n.name in absorbed:
            continue
        if n.op in layers:
            relu = any(v == n.name for v in absorbed.values())
            w_q, w_s, w_z = quantize_weight(n.params["weight"], per_channel=per_channel)
            params = {"weight": w_q, "w_scale": w_s, "w_zp": w_z}
            if "bias" in n.params:
                params["bias"] = n.params["bias"].astype(np.float32)
            if n.op == "linear":
                attrs = ops.DynamicLinearAttrs(per_channel, reduce_range, relu)
                new = Node(n.name, "dynamic_linear", n.inputs, attrs, params, n.shape, n.source)
            else:
                a = n.attrs
                attrs = ops.DynamicConv2dAttrs(a.stride, a.padding, a.dilation, a.groups, per_channel, reduce_range,
                                               relu)
                new = Node(n.name, "dynamic_conv2d", n.inputs, attrs, params, n.shape, n.source)
            nodes.append(new)
            act = next((k for k, v in absorbed.items() if v == n.name), None)
            float_names[n.name] = act or folded.get(n.name, n.name)
            if act:   # readers of the ReLU read the layer
                for m in g.nodes:
                    m.inputs = [n.name if v == act else v for v in m.inputs]
                g.outputs = [n.name if v == act else v for v in g.outputs]
            qm_bytes = sum(p.nbytes for p in params.values())
            note = "+ReLU" if relu else ""
            if n.name in folded:
                note = (note + " BatchNorm folded").strip()
            report.layers.append(LayerReport(n.name, n.op, n.source, True, "int8 dynamic", n.params["weight"].size
                                             + (n.params["bias"].size if "bias" in n.params else 0), qm_bytes, note))
        else:
            nodes.append(Node(n.name, n.op, n.inputs, n.attrs, {k: v.copy() for k, v in n.params.items()},
                              n.shape, n.source))
            if n.params and n.op in ("conv2d", "linear", "batch_norm"):
                report.layers.append(LayerReport(n.name, n.op, n.source, False, "float", n.num_params(),
                                                 4 * n.num_params(), "not selected" if n.op != "batch_norm"
                                                 else "not foldable"))
    qgraph = Graph(g.inputs, nodes, g.outputs, g.input_shapes, g.name)
    meta = {"method": "quantize_dynamic", "per_channel": per_channel, "reduce_range": bool(reduce_range),
            "layers": list(layers), "folded_batch_norms": sorted(folded.values())}
    qm = QuantizedModel(qgraph, tgt, float_names=float_names, meta=meta)
    qm.report = report
    return qm


def report_torch_quantized(qmodel) -> QuantizationReport:
    """What a torch (eager-mode) quantized model really holds: one row per module with weights —
    quantized modules (``torch.ao.nn.quantized``, ``.dynamic``, ``.intrinsic.quantized``) with their int8
    weight bytes, float modules (``nn.Conv2d``, ``nn.Linear``...) with their float32 bytes.

    Applied to ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear, nn.Conv2d}, dtype=torch.qint8)``
    it shows the Linear layers as 'int8 dynamic' and the Conv2d layers as 'float'."""
    import torch

    report = QuantizationReport(f"torch model {type(qmodel).__name__}")
    for name, m in qmodel.named_modules():
        mod = type(m).__module__
        kind = type(m).__name__.lower()
        kind = "conv2d" if "conv" in kind else "linear" if "linear" in kind else kind
        if mod.startswith("torch.ao.nn.quantized") or mod.startswith("torch.ao.nn.intrinsic.quantized"):
            w = b = None
            if hasattr(m, "_packed_params") and hasattr(m._packed_params, "_weight_bias"):
                w, b = m._packed_params._weight_bias()
            elif callable(getattr(m, "weight", None)):
                w, b = m.weight(), m.bias()
            if w is None:
                continue
            dynamic = ".dynamic" in mod
            nbytes = w.numel() * w.element_size() + (0 if b is None else b.numel() * 4)
            if w.is_quantized:
                per_ch = w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
                nbytes += (w.size(0) if per_ch else 1) * 8
            how = ("int8 dynamic" if dynamic else "int8 static") if w.dtype == torch.qint8 else str(w.dtype)
            report.layers.append(LayerReport(name, kind, f"{mod}.{type(m).__name__}", w.dtype == torch.qint8, how,
                                             w.numel() + (0 if b is None else b.numel()), int(nbytes)))
        else:
            own = list(m.parameters(recurse=False))
            if not own:
                continue
            n = sum(p.numel() for p in own)
            report.layers.append(LayerReport(name, kind, f"{mod}.{type(m).__name__}", False, "float", n,
                                             sum(p.numel() * p.element_size() for p in own),
                                             "float module: not quantized"))
    return report
