"""How much a pruned model really saves: per-layer and total sparsity, parameters, FLOPs and bytes.

Counting (per input sample, conv/linear layers only — BatchNorm, activations, pooling and adds are left
out, they are a few percent of the work):

    conv MACs   = C_out · H_out · W_out · (C_in / groups) · k_h · k_w
    linear MACs = out_features · in_features         (× the extra leading dims, if any)
    FLOPs       = 2 · MACs                           (one multiply + one add)

``nonzero_macs`` counts only the products with a non-zero weight (``nnz(W) · H_out · W_out`` for a conv,
padding ignored): the work a sparse kernel *could* skip. A dense kernel — torch's, and minquant's int8
one — still does ``macs``; only structured pruning lowers that.

``params`` counts every parameter (biases and BatchNorm included); ``nonzero`` the non-zero ones.
:func:`storage_report` prices each weight tensor dense, as a bitmask and as CSR
(:mod:`minquant.sparse`), in float32 or as int8 codes after per-channel symmetric quantization
(:mod:`minquant.affine`), so prune-then-quantize sizes count what a file would really hold.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LayerStats", "ModelReport", "model_report", "count_params", "storage_report"]


@dataclass
class LayerStats:
    name: str
    kind: str
    weight_shape: tuple
    params: int          # weight + bias
    nonzero: int
    macs: int            # per sample, dense
    nonzero_macs: int    # per sample, only non-zero weights

    @property
    def sparsity(self) -> float:
        return 1 - self.nonzero / self.params if self.params else 0.0


@dataclass
class ModelReport:
    layers: list = field(default_factory=list)
    params: int = 0       # all parameters of the model
    nonzero: int = 0

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def nonzero_macs(self) -> int:
        return sum(r.nonzero_macs for r in self.layers)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def sparsity(self) -> float:
        return 1 - self.nonzero / self.params if self.params else 0.0

    def to_markdown(self) -> str:
        lines = ["| layer | type | weight shape | params | non-zero | sparsity | MACs | non-zero MACs |",
                 "|---|---|---|---:|---:|---:|---:|---:|"]
        for r in self.layers:
            lines.append(f"| {r.name} | {r.kind} | {'×'.join(map(str, r.weight_shape))} | {r.params:,} | "
                         f"{r.nonzero:,} | {r.sparsity:.1%} | {r.macs:,} | {r.nonzero_macs:,} |")
        lines.append(f"| **total** (all params) | | | {self.params:,} | {self.nonzero:,} | {self.sparsity:.1%} | "
                     f"{self.macs:,} | {self.nonzero_macs:,} |")
        return "\n".join(lines)


def count_params(model, nonzero: bool = False) -> int:
    """Number of parameters (or of non-zero ones)."""
    return int(sum((p != 0).sum().item() if nonzero else p.numel() for p in model.parameters()))


def model_report(model, example_input) -> ModelReport:
    """Run one forward of ``example_input`` (eval mode, no grad; temporary hooks record output shapes) and
    count per conv/linear layer. MACs are per sample (divided by the batch size)."""
    import torch
    import torch.nn as nn

    if isinstance(example_input, (tuple, list)) and all(isinstance(d, int) for d in example_input):
        example_input = torch.zeros(*example_input)
    shapes, handles = {}, []

    def record(name):
        def hook(mod, inp, out):  # must return None: a returned value would replace the output
            shapes.setdefault(name, tuple(out.shape))
        return hook

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            handles.append(m.register_forward_hook(record(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    rep = ModelReport(params=count_params(model), nonzero=count_params(model, nonzero=True))
    for name, m in model.named_modules():
        if name not in shapes:
            continue
        out = shapes[name]
        batch = out[0]
        w = m.weight.detach()
        nnz_w = int((w != 0).sum())
        params = w.numel() + (m.bias.numel() if m.bias is not None else 0)
        nonzero = nnz_w + (int((m.bias != 0).sum()) if m.bias is not None else 0)
        if isinstance(m, nn.Linear):
            positions = int(np.prod(out[:-1], dtype=np.int64)) // batch
            macs = positions * m.out_features * m.in_features
            nz_macs = positions * nnz_w
        else:
            positions = int(np.prod(out[2:], dtype=np.int64))
            macs = positions * m.out_channels * (m.in_channels // m.groups) * int(np.prod(m.kernel_size))
            nz_macs = positions * nnz_w
        rep.layers.append(LayerStats(name, type(m).__name__, tuple(w.shape), params, nonzero, macs, nz_macs))
    return rep


def _int8_codes(w: np.ndarray):
    """Per-output-channel symmetric int8 codes of a weight (zero point 0: a pruned weight is code 0) and
    the float32 scales, via minquant.affine."""
    from ..affine import choose_qparams, quantize

    flat = w.reshape(w.shape[0], -1)
    scale, zp = choose_qparams(flat.min(1), flat.max(1), "int8", symmetric=True)
    return quantize(w.astype(np.float32), scale, zp, "int8", axis=0), np.asarray(scale, dtype=np.float32)


def storage_report(model, *, int8: bool = False, types=("Conv1d", "Conv2d", "Conv3d", "Linear")) -> dict:
    """Bytes to store the model's weights: ``{"dense", "bitmask", "csr", "best", "other", "layers"}``.

    Conv/linear weights are encoded each way (``best`` picks the smallest per tensor). With ``int8=True``
    the weights are first quantized per output channel (symmetric int8), encoded as codes, and each layer
    adds its float32 scales. ``other`` is every remaining parameter and buffer (biases, BatchNorm) kept
    dense float32; it is included in the totals. Shapes and format tags (a few bytes per tensor) are left
    out."""
    import torch.nn as nn

    from ..sparse import encode_bitmask, encode_csr, encode_dense, encoded_nbytes

    classes = tuple(getattr(nn, t) for t in types)
    layers, weight_keys = {}, set()
    for name, m in model.named_modules():
        if isinstance(m, classes):
            w = m.weight.detach().cpu().numpy()
            extra = 0
            if int8:
                w, scale = _int8_codes(w)
                extra = scale.nbytes
            sizes = {k: encoded_nbytes(f(w)) + extra for k, f in
                     (("dense", encode_dense), ("bitmask", encode_bitmask), ("csr", encode_csr))}
            sizes["best"] = min(sizes.values())
            sizes["nonzero"] = int(np.count_nonzero(w))
            sizes["size"] = int(w.size)
            layers[name] = sizes
            weight_keys.add(f"{name}.weight" if name else "weight")
    other = sum(v.numel() * 4 for k, v in model.state_dict().items()
                if k not in weight_keys and v.is_floating_point())
    tot = {k: sum(s[k] for s in layers.values()) + other for k in ("dense", "bitmask", "csr", "best")}
    return {**tot, "other": other, "layers": layers}
