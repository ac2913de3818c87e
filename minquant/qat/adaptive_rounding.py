"""AdaRound: learn, per weight, whether to round down or up (Nagel et al. 2020, "Up or Down? Adaptive
Rounding for Post-Training Quantization"), layer by layer on calibration data.

Rounding to nearest minimises each weight's own error, not the layer's output error. AdaRound keeps the
scale ``s`` and learns, for every weight, a continuous variable ``V`` whose *rectified sigmoid*

    h(V) = clip(σ(V)·(ζ − γ) + γ, 0, 1),        ζ = 1.1, γ = −0.1

chooses between the two neighbouring codes: ``W̃ = s · clamp(⌊W · f32(1/s)⌋ + h(V), qmin, qmax)``
(⌊·⌋ with the weights' quantize rule, :data:`minquant.qat.weights.WEIGHT_RULE`, so that round-to-nearest is
one of the two candidates). Per layer it minimises the reconstruction error of the layer's output on
calibration rows plus a regulariser that drives every ``h`` to 0 or 1::

    min_V  mean_rows ‖ f_a(W x + b) − f_a(W̃ x̂ + b) ‖²  +  λ · Σ_ij (1 − |2 h(V_ij) − 1|^β)

``x`` is the layer's input in the float model, ``x̂`` its input in the quantized model with every earlier
layer already rounded by AdaRound (the paper's asymmetric reconstruction, eq. 25), ``f_a`` the layer's fused
activation (ReLU / ReLU6 / equalization's per-channel ReLU6). ``β`` anneals linearly from 20 to 2 after a
warm-up (20 % of the iterations, no regulariser) — large β lets ``h`` move freely, small β pushes it to the
ends. ``V`` starts where ``h(V)`` equals the fractional part of ``W/s`` (so the first ``W̃`` is ``W``), Adam
(lr 1e-2) optimises it. The final codes are ``⌊W/s⌋ + [h(V) ≥ 0.5]`` — at most one code from the nearest,
since nearest is ⌊W/s⌋ or ⌊W/s⌋ + 1.

A conv layer's rows are sampled output positions: the input patch under the kernel at that position (per
group), so depthwise and grouped convs are handled alike (the patches are gathered only at the sampled
positions, never the whole im2col matrix).

Use it between two calls of :func:`minquant.quantize_static`::

    nearest = NearestWeights("int4")
    qm0 = mq.quantize_static(model, calib, weight_rounding=nearest, target="x86")      # W4A8, nearest
    rounding = adaround(qm0, nearest, calib[:64])
    qm = mq.quantize_static(model, calib, weight_rounding=rounding, target="x86")      # W4A8, AdaRound

(the second call re-calibrates the activations and re-computes bias correction with the learned codes; it must
see the same float weights, i.e. the same model, data and settings — checked, a ValueError otherwise).
This module imports torch: it is not part of the numpy-only core.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..quantized.model import QuantizedModel
from .model import FakeQuantModel
from .weights import WEIGHT_RULE, NearestWeights, dequantize_weight, scale_like

__all__ = ["adaround", "AdaRoundWeights", "rectified_sigmoid", "rounding_regularizer"]

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """``h(V) = clip(σ(V)·(ζ − γ) + γ, 0, 1)``."""
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def rounding_regularizer(h: torch.Tensor, beta: float) -> torch.Tensor:
    """``Σ (1 − |2h − 1|^β)``: 0 when every h is 0 or 1, largest at h = ½."""
    return (1.0 - (2.0 * h - 1.0).abs().pow(beta)).sum()


class AdaRoundWeights(NearestWeights):
    """The learned rounding, as a ``weight_rounding`` for :func:`minquant.quantize_static`.

    ``learned[name]``: the float ``weight`` AdaRound saw, its ``scale`` and the learned ``codes``.
    ``report[name]``: the layer's reconstruction error (mean over rows of the squared output error) with
    nearest and with learned rounding on the calibration rows, and the fraction of codes that differ from
    nearest. ``quantize_weight`` refuses a layer whose float weights or scale are not the ones learned on."""
    kind = "adaround"

    def __init__(self, dtype: str, learned: dict, report: dict, *, mse_scale: bool = False, int8_layers=()):
        super().__init__(dtype, mse_scale=mse_scale, int8_layers=int8_layers)
        self.learned, self.report = learned, report

    def codes(self, node, w, s, qt, group_size=None):
        rec = self.learned.get(node.name)
        if rec is None:
            raise ValueError(f"AdaRound learned no rounding for layer {node.name!r} (learned: "
                             f"{sorted(self.learned)[:4]}...)")
        if (rec["weight"].shape != w.shape or not np.array_equal(rec["weight"], w) or rec["scale"].shape != s.shape
                or not np.array_equal(rec["scale"], s) or rec.get("group_size") != group_size):
            raise ValueError(f"layer {node.name!r}: these float weights / scales are not the ones AdaRound learned "
                             "on — quantize the same model with the same calibration data and settings")
        return rec["codes"].copy()

    def latent_weight(self, name: str) -> np.ndarray:
        """QAT starts from the learned codes' float values ``s·q`` (the middle of each chosen code's bin)."""
        rec = self.learned[name]
        return dequantize_weight(rec["codes"], rec["scale"], rec.get("group_size"))


class _Stop(Exception):
    pass


def _layer_input(fq: FakeQuantModel, x: torch.Tensor, value: str, quantized: bool, chunk: int) -> torch.Tensor:
    """The value ``value`` (a layer's input) of ``fq`` on ``x``, stopping the forward once it is computed."""
    outs = []

    def hook(name, v):
        if name == value:
            outs.append(v)
            raise _Stop

    with torch.no_grad():
        for i in range(0, len(x), chunk):
            try:
                fq(x[i:i + chunk], quantized=quantized, hook=hook)
            except _Stop:
                pass
    return torch.cat(outs)


def _positions(n_samples, out_hw, rows, rng):
    total = n_samples * out_hw[0] * out_hw[1]
    idx = rng.choice(total, size=min(rows, total), replace=False)
    n, rest = np.divmod(idx, out_hw[0] * out_hw[1])
    oy, ox = np.divmod(rest, out_hw[1])
    return torch.from_numpy(n), torch.from_numpy(oy), torch.from_numpy(ox)


def _rows(x, node, pos, groups, kernel):
    """(R, groups, K) input rows of a layer: conv patches at the sampled positions, or the linear inputs."""
    if node.op in ("qlinear", "w4a8_linear"):
        return x[pos].unsqueeze(1)
    a = node.attrs
    kh, kw = kernel
    (sh, sw), (ph, pw), (dh, dw) = a.stride, a.padding, a.dilation
    n, oy, ox = pos
    xp = F.pad(x, (pw, pw, ph, ph))
    iy = oy[:, None] * sh + torch.arange(kh) * dh
    ix = ox[:, None] * sw + torch.arange(kw) * dw
    c = torch.arange(x.shape[1])
    patch = xp[n[:, None, None, None], c[None, :, None, None], iy[:, None, :, None], ix[:, None, None, :]]
    return patch.reshape(len(n), groups, -1)


def _layer_out(rows, w, b, act, hi, groups):
    """``f_a(W x + b)`` on rows (R, G, K) with W (O, ...) → (R, O)."""
    o = w.shape[0]
    y = torch.einsum("rgk,gok->rgo", rows, w.reshape(groups, o // groups, -1)).reshape(len(rows), o)
    if b is not None:
        y = y + b
    return FakeQuantModel._activation(y, act, hi)


def adaround(qm: QuantizedModel, rounding: NearestWeights, calibration_data, *, iterations: int = 1000,
             rows: int = 4096, batch_rows: int = 256, reg_weight: float = 0.01, beta=(20.0, 2.0),
             warmup: float = 0.2, lr: float = 1e-2, chunk: int = 16, seed: int = 0, min_rows_per_input: float = 0.0,
             progress: bool = False) -> AdaRoundWeights:
    """Learn the rounding of every conv / linear layer of ``qm``, first to last (module docstring).

    ``qm``: the model ``quantize_static(..., weight_rounding=rounding)`` returned, ``rounding`` that
    :class:`~minquant.qat.weights.NearestWeights` (it holds the float layers and their code type — int8 or
    int4). ``calibration_data``: float32 array (N, ...) of model inputs (a few dozen to a few hundred).
    ``rows``: output positions (conv) or samples (linear) per layer; ``batch_rows`` per Adam step;
    ``iterations`` Adam steps per layer; ``reg_weight`` λ; ``beta`` (start, end) of the annealing;
    ``warmup`` the fraction of steps without the regulariser. ``min_rows_per_input``: a layer is learned only
    if it has at least this many rows per input of one output (``K`` = C/groups·kh·kw, or in_features), else
    it keeps nearest rounding (``report[name]["skipped"]``) — with fewer rows than inputs the reconstruction
    can be fit exactly by flipping roundings, and AdaRound then fits the calibration rows, not the layer
    (seen on MobileNetV2's classifier: 16 rows for 1,280 inputs). Returns :class:`AdaRoundWeights`."""
    if not isinstance(rounding, NearestWeights) or not rounding.layers:
        raise TypeError("adaround needs the NearestWeights that quantized qm (it recorded the float layers)")
    x = np.asarray(calibration_data, np.float32)
    if x.ndim < 2 or len(x) < 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"calibration_data must be a finite float array (N, ...), got shape {x.shape}")
    if iterations < 1 or rows < 1 or batch_rows < 1 or not 0 <= warmup < 1 or reg_weight < 0:
        raise ValueError("adaround needs iterations, rows, batch_rows ≥ 1, 0 ≤ warmup < 1 and reg_weight ≥ 0")
    x = torch.from_numpy(x)
    fq = FakeQuantModel(qm, rounding, exact=False).eval().requires_grad_(False)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    learned, report = {}, {}
    layers = [n for n in qm.graph.nodes if n.op in ("qconv2d", "qlinear", "w4a8_conv2d", "w4a8_linear")]
    for li, node in enumerate(layers):
        rec, lay = rounding.layers[node.name], fq.layer[node.name]
        conv = node.op in ("qconv2d", "w4a8_conv2d")
        groups = node.attrs.groups if conv else 1
        xf = _layer_input(fq, x, node.inputs[0], False, chunk)
        xq = _layer_input(fq, x, node.inputs[0], True, chunk)
        if conv:
            out_hw = F.conv2d(xf[:1], lay["float_weight"], None, node.attrs.stride, node.attrs.padding,
                              node.attrs.dilation, groups).shape[2:]
            pos = _positions(len(x), out_hw, rows, rng)
        else:
            pos = torch.from_numpy(rng.choice(len(x), size=min(rows, len(x)), replace=False))
        kernel = tuple(lay["float_weight"].shape[2:])
        rf, rq = _rows(xf, node, pos, groups, kernel), _rows(xq, node, pos, groups, kernel)
        del xf, xq
        if len(rq) < min_rows_per_input * rq.shape[2]:
            learned[node.name] = dict(weight=rec["weight"], scale=rec["scale"], codes=rec["codes"].copy(),
                                      group_size=rec.get("group_size"))
            report[node.name] = dict(skipped=f"{len(rq)} rows < {min_rows_per_input:g} × {rq.shape[2]} inputs",
                                     changed=0.0)
            if progress:
                print(f"adaround {li + 1}/{len(layers)} {node.name}: kept nearest ({report[node.name]['skipped']})",
                      flush=True)
            continue
        w, b, act, hi = lay["float_weight"], lay["float_bias"], node.attrs.activation, lay["hi"]
        target = _layer_out(rf, w, b, act, hi, groups)
        gs = rec.get("group_size")
        s = torch.from_numpy(scale_like(rec["scale"], tuple(w.shape), gs))
        qt = rec["qtype"]
        f = w * (1.0 / s) if rec.get("rule", WEIGHT_RULE) == WEIGHT_RULE else w / s
        floor = torch.floor(f)
        rest = (f - floor).clamp(0.0, 1.0)
        v = torch.logit(((rest - GAMMA) / (ZETA - GAMMA)).clamp(1e-6, 1 - 1e-6)).requires_grad_(True)
        opt = torch.optim.Adam([v], lr=lr)
        start = int(warmup * iterations)

        def w_soft():
            return s * (floor + rectified_sigmoid(v)).clamp(qt.qmin, qt.qmax)

        for it in range(iterations):
            pick = torch.randint(len(rq), (min(batch_rows, len(rq)),), generator=gen)
            err = (_layer_out(rq[pick], w_soft(), b, act, hi, groups) - target[pick]).pow(2).sum(1).mean()
            loss = err
            if it >= start:
                t = (it - start) / max(iterations - start, 1)
                loss = err + reg_weight * rounding_regularizer(rectified_sigmoid(v), beta[0] + t * (beta[1] - beta[0]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            codes = (floor + (v >= 0).float()).clamp(qt.qmin, qt.qmax)
            q = codes.numpy().astype(np.int8)

            def recon(c):
                return float((_layer_out(rq, s * c, b, act, hi, groups) - target).pow(2).sum(1).mean())

            near = torch.from_numpy(rec["codes"].astype(np.float32))
            report[node.name] = dict(nearest=recon(near), adaround=recon(codes),
                                     changed=float((codes != near).float().mean()))
            learned[node.name] = dict(weight=rec["weight"], scale=rec["scale"], codes=q, group_size=gs)
            fq.weights[fq.key[node.name]].copy_(torch.from_numpy(dequantize_weight(q, rec["scale"], gs)))
        if progress:
            r = report[node.name]
            print(f"adaround {li + 1}/{len(layers)} {node.name}: recon {r['nearest']:.4g} → {r['adaround']:.4g}, "
                  f"{100 * r['changed']:.1f} % codes changed", flush=True)
    return AdaRoundWeights(rounding.dtype, learned, report, mse_scale=rounding.mse_scale,
                           int8_layers=rounding.int8_layers)
