"""Fine-tune a :class:`~minquant.qat.model.FakeQuantModel`: quantization-aware training, with or without labels.

Per batch (``KDLoss`` of :mod:`minquant.distill`, docs/distillation.md)::

    loss = α · cross_entropy(z, y) + (1 − α) · T² · KL(softmax(t/T) ‖ softmax(z/T))

``z`` the fake-quantized student's logits, ``t`` the float model's logits on the same inputs. Without labels
(the photo models: there is no ImageNet here, only unlabelled calibration crops) ``α = 0``: the quantized model
learns to reproduce the float model's outputs — distillation from the model it was made from.

Adam updates every learnable tensor — latent weights, biases, weight and activation scales — with a cosine
decay to 0. Adam normalises each parameter's gradient, so LSQ's gradient factor (:mod:`.fake_quant`) does not
change its steps; what makes a shared learning rate workable is that a step ``lr`` is a similar fraction of a
scale (≈1e-2…1e-1) as of a weight. ``scale_lr`` gives the scales (weight and activation) their own learning
rate — LSQ's authors and later 4-bit QAT recipes let the step sizes move faster than the weights.

**Intermediate features** (``feature_weight=β > 0``): the loss adds β times the mean, over the model's conv /
linear layers (all but the last), of each layer's relative squared error against the float model the
quantized one stands for (``fq(x, quantized=False)``: same graph, same folded and equalized float weights)::

    loss += β · mean_layers ‖y_q − y_f‖² / ‖y_f‖²          (over the batch)

— a signal at every layer, not only at the logits (FitNets, Romero et al. 2015; used for low-bit QAT as
"layer-wise distillation"): each layer is pulled towards the float layer's function, which the logits alone
determine only on the training inputs. The float forward adds one no-grad pass per step. The validation loss
(early stopping) stays the logit distillation alone.

**Early stopping** (``validation=(x_val, t_val)``): every ``validate_every`` steps (and at the end) the
fake-quantized model's distillation loss on held-out inputs is measured; the parameters with the lowest one
are kept (restored at the end). The held-out inputs must not be the evaluation data — e.g. other crops of the
calibration photos — or the stop would be chosen on the test set.
This module imports torch.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .model import FakeQuantModel

__all__ = ["finetune"]


def finetune(fq: FakeQuantModel, x, teacher_logits, labels=None, *, epochs: int = 3, lr: float = 1e-4,
             batch_size: int = 32, T: float = 1.0, alpha: float = 0.0, seed: int = 0,
             scale_lr: float | None = None, weight_scale_lr: float | None = None, validation=None,
             validate_every: int = 0, feature_weight: float = 0.0, progress: bool = False) -> list[dict]:
    """Train ``fq`` in place on inputs ``x`` (float32 array (N, ...)) against ``teacher_logits`` (N, classes)
    and, if ``alpha > 0``, ``labels`` (N,). Returns one dict per epoch (``epoch``, mean ``loss``) and, with
    ``validation``, one per check (``step``, ``val_loss``, ``val_agree``: top-1 agreement with the teacher).
    Convert afterwards with ``fq.to_quantized()``. ``scale_lr``: the learning rate of the weight and activation
    scales (default: ``lr``, one rate for all). ``weight_scale_lr``: the weight scales' own rate (default:
    ``scale_lr``; 0: kept fixed) — Adam's steps are about ``lr`` in absolute terms, and an int8 weight scale
    (max|w|/127.5, often ~1e-4) is far smaller than an activation scale, so one rate that suits the
    activations can double a weight scale in a few steps. ``validation``: ``(x_val, teacher_logits_val)`` held-out inputs
    for early stopping (module docstring), checked every ``validate_every`` steps (0: once per epoch).
    ``feature_weight``: β of the intermediate-feature loss (module docstring; 0: logits only)."""
    from ..distill.torch_loss import KDLoss        # same rank (layer 4): imported where used

    if not isinstance(fq, FakeQuantModel):
        raise TypeError(f"finetune trains a FakeQuantModel, got {type(fq).__name__}")
    x = np.asarray(x, np.float32)
    t = np.asarray(teacher_logits, np.float32)
    if t.ndim != 2 or len(t) != len(x):
        raise ValueError(f"teacher_logits must be (N, classes) for the {len(x)} inputs, got shape {t.shape}")
    if alpha > 0 and (labels is None or len(labels) != len(x)):
        raise ValueError("alpha > 0 needs one label per input")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"finetune needs epochs ≥ 1, batch_size ≥ 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    if scale_lr is not None and not scale_lr > 0:
        raise ValueError(f"scale_lr must be > 0 (or None: the same as lr), got {scale_lr}")
    if weight_scale_lr is not None and not weight_scale_lr >= 0:
        raise ValueError(f"weight_scale_lr must be ≥ 0 (0: fixed; None: scale_lr), got {weight_scale_lr}")
    if not (np.isfinite(feature_weight) and feature_weight >= 0):
        raise ValueError(f"feature_weight must be ≥ 0 (0: logits only), got {feature_weight}")
    if validate_every < 0:
        raise ValueError(f"validate_every must be ≥ 0 (0: once per epoch), got {validate_every}")
    if validation is not None:
        xv, tv = (np.asarray(a, np.float32) for a in validation)
        if tv.ndim != 2 or len(tv) != len(xv) or len(xv) < 1 or tv.shape[1] != t.shape[1]:
            raise ValueError(f"validation must be (inputs, teacher logits (N, {t.shape[1]})) of one length, got "
                             f"shapes {xv.shape} and {tv.shape}")
        xv, tv = torch.from_numpy(xv), torch.from_numpy(tv)
    loss_fn = KDLoss(T=T, alpha=alpha, scale_by_T2=True)
    val_loss = KDLoss(T=T, alpha=0.0, scale_by_T2=True)
    best = dict(loss=math.inf, state=None, step=0)

    def validate(step):
        fq.eval()
        with torch.no_grad():
            z = torch.cat([fq(xv[i:i + batch_size]) for i in range(0, len(xv), batch_size)])
            loss = float(val_loss(z, tv, None))
        agree = float((z.argmax(1) == tv.argmax(1)).float().mean())
        fq.train()
        history.append(dict(step=step, val_loss=loss, val_agree=agree))
        if loss < best["loss"]:
            best.update(loss=loss, step=step, state={k: v.detach().clone() for k, v in fq.state_dict().items()})
        if progress:
            print(f"qat step {step}: validation loss {loss:.4g}, agreement {100 * agree:.1f} %", flush=True)
    xs, ts = torch.from_numpy(x), torch.from_numpy(t)
    ys = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64))
    act_scales = [p for p in fq.scales.values() if p.requires_grad]
    w_scales = [p for p in fq.w_scales.values() if p.requires_grad]
    others = [p for p in fq.parameters() if p.requires_grad and all(p is not q for q in act_scales + w_scales)]
    s_lr = lr if scale_lr is None else scale_lr
    ws_lr = s_lr if weight_scale_lr is None else weight_scale_lr
    groups = [{"params": others, "lr": lr}, {"params": act_scales, "lr": s_lr}]
    if ws_lr > 0:
        groups.append({"params": w_scales, "lr": ws_lr})
    opt = torch.optim.Adam(groups)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i / steps, 1.0))))
    rng = np.random.default_rng(seed)
    history = []
    fq.train()
    step = 0
    if validation is not None:
        validate(0)
    for epoch in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        total, count = 0.0, 0
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            if feature_weight > 0:
                z, feats = _with_features(fq, xs[idx])
                loss = loss_fn(z, ts[idx], None if ys is None or alpha == 0 else ys[idx]) + feature_weight * feats
            else:
                z = fq(xs[idx])
                loss = loss_fn(z, ts[idx], None if ys is None or alpha == 0 else ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            step += 1
            if validation is not None and validate_every and step % validate_every == 0 and step < steps:
                validate(step)
        history.append(dict(epoch=epoch + 1, loss=total / count))
        if progress:
            print(f"qat epoch {epoch + 1}/{epochs}: loss {total / count:.4g}", flush=True)
        if validation is not None and (not validate_every or step == steps):
            validate(step)
    if validation is not None:
        fq.load_state_dict(best["state"])
        history.append(dict(kept_step=best["step"], val_loss=best["loss"]))
    fq.eval()
    return history


def _with_features(fq: FakeQuantModel, x):
    """(logits, mean over the conv / linear layers but the last of ‖y_q − y_f‖² / ‖y_f‖²) on batch ``x``."""
    layers = [n.name for n in fq.qm.graph.nodes if n.name in fq.layer][:-1]
    want = set(layers)
    ref, out = {}, {}
    with torch.no_grad():
        fq(x, quantized=False, hook=lambda name, y: ref.__setitem__(name, y) if name in want else None)
    z = fq(x, hook=lambda name, y: out.__setitem__(name, y) if name in want else None)
    if not layers:
        return z, z.new_zeros(())
    errs = [((out[k] - ref[k]) ** 2).sum() / (ref[k] ** 2).sum().clamp_min(1e-12) for k in layers]
    return z, torch.stack(errs).mean()
