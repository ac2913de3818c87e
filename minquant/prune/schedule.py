"""Iterative pruning: prune a little, fine-tune, prune more — instead of one big cut.

Two schedules of target sparsities (fraction of zero weights after each step):

* Zhu & Gupta 2017 ("To prune, or not to prune"), the *gradual* schedule — prune fast while many weights
  are redundant, slowly near the end::

      s_t = s_f + (s_i − s_f) · (1 − (t − t0) / (n·Δt))³      for t0 ≤ t ≤ t0 + n·Δt

  ``s_i`` initial sparsity, ``s_f`` final, pruning every ``Δt`` steps from ``t0`` for ``n`` steps;
  ``s_t = s_i`` before ``t0`` and ``s_f`` after.
* The seed's "prune 10%, retrain, prune 10%, retrain…": each step prunes ``step`` of the weights that are
  still there (``of='remaining'``, the meaning of repeated ``torch.nn.utils.prune`` calls:
  ``s_k = 1 − (1 − step)^k``), or ``step`` of the original count (``of='original'``: ``s_k = k·step``),
  until ``final``.

:func:`gradual_prune` is Zhu & Gupta as they ran it: pruning *during* one training run
(:func:`minquant.data.training.fit`, one optimizer throughout; ``t`` counts epochs), the mask tightened at the
end of epochs t0 + Δt, …, t0 + n·Δt, then training goes on at ``s_f``.

:func:`iterative_prune` runs a list of targets the seed's way: magnitude-prune to ``s_k`` (global or per
layer), then call ``fine_tune(model, k, s_k)`` with the pruned weights held at zero
(:func:`~minquant.prune.magnitude.masked_training`), with a tqdm progress bar. :func:`fit_fine_tune`
makes a ``fine_tune`` from :func:`minquant.data.training.fit` (a fresh Adam every step).
"""
from __future__ import annotations

import numpy as np

__all__ = ["zhu_gupta_sparsity", "zhu_gupta_targets", "constant_step_targets", "iterative_prune",
           "fit_fine_tune", "gradual_prune"]


def zhu_gupta_sparsity(t, s_i: float, s_f: float, t0: float, n: int, dt: float):
    """The gradual-pruning target ``s_t`` (scalar or array ``t``), clipped to [t0, t0 + n·Δt]."""
    if not (0 <= s_i <= 1 and 0 <= s_f <= 1):
        raise ValueError(f"sparsities must be in [0, 1], got s_i={s_i}, s_f={s_f}")
    if n < 1 or dt <= 0:
        raise ValueError(f"need n ≥ 1 and Δt > 0, got n={n}, dt={dt}")
    t = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise ValueError("t contains NaN or Inf")
    frac = np.clip((t - t0) / (n * dt), 0.0, 1.0)
    s = s_f + (s_i - s_f) * (1.0 - frac) ** 3
    return float(s) if s.ndim == 0 else s


def zhu_gupta_targets(s_f: float, n: int, s_i: float = 0.0) -> list:
    """The ``n`` targets at the pruning steps t = t0 + Δt, …, t0 + n·Δt (the last is ``s_f``)."""
    return [zhu_gupta_sparsity(k, s_i, s_f, 0, n, 1) for k in range(1, n + 1)]


def constant_step_targets(step: float = 0.1, final: float = 0.9, of: str = "remaining") -> list:
    """The seed's loop: targets ``1 − (1 − step)^k`` (``of='remaining'``) or ``k·step``
    (``of='original'``), k = 1, 2, … while below ``final``; the last target is ``final`` itself."""
    if not (0 < step < 1 and 0 < final < 1):
        raise ValueError(f"need 0 < step < 1 and 0 < final < 1, got step={step}, final={final}")
    if of not in ("remaining", "original"):
        raise ValueError(f"of must be 'remaining' or 'original', got {of!r}")
    out, k = [], 1
    while True:
        s = 1 - (1 - step) ** k if of == "remaining" else k * step
        if s >= final - 1e-12:
            break
        out.append(float(s))
        k += 1
    return out + [float(final)]


def iterative_prune(model, targets, fine_tune=None, *, scope: str = "global", types=None, exclude=(),
                    evaluate=None, progress: bool = True):
    """Prune ``model`` in place to each sparsity in ``targets`` in turn, fine-tuning after every step.

    ``fine_tune(model, step, sparsity)`` trains the model (pruned weights are kept at zero); ``evaluate
    (model) -> float`` (optional) is recorded after each step. ``scope``: 'global' or 'layer' magnitude
    pruning. Returns a list of dicts ``{step, target, sparsity, metric}`` (``sparsity`` measured on the
    pruned layers after fine-tuning)."""
    from .magnitude import DEFAULT_TYPES, masked_training, prune_magnitude

    targets = [float(s) for s in targets]
    if not targets or any(not 0 <= s <= 1 for s in targets) or np.any(np.diff(targets) < 0):
        raise ValueError(f"targets must be a non-empty, non-decreasing list in [0, 1], got {targets}")
    types = DEFAULT_TYPES if types is None else types
    steps = range(len(targets))
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(targets), desc="prune", unit="step")
    history = []
    try:
        for k in steps:
            masks = prune_magnitude(model, targets[k], scope=scope, types=types, exclude=exclude)
            if fine_tune is not None:
                with masked_training(model, masks):
                    fine_tune(model, k, targets[k])
            model.eval()
            kept = sum(int(m.sum()) for m in masks.values())
            total = sum(m.size for m in masks.values())
            rec = {"step": k, "target": targets[k], "sparsity": 1 - kept / total,
                   "metric": None if evaluate is None else float(evaluate(model))}
            history.append(rec)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(sparsity=f"{rec['sparsity']:.3f}",
                                **({} if rec["metric"] is None else {"metric": f"{rec['metric']:.4f}"}))
    finally:
        if bar is not None:
            bar.close()
    return history


def fit_fine_tune(x, y, *, epochs: int = 1, lr: float = 1e-3, batch_size: int = 64, seed: int = 0, **kw):
    """A ``fine_tune`` callback for :func:`iterative_prune`: :func:`minquant.data.training.fit` for ``epochs``
    epochs on (x, y) (a fresh Adam each step; data order seeded by ``seed + step``)."""
    def fine_tune(model, step, sparsity):
        from ..data.training import fit
        fit(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed + step, **kw)
    return fine_tune


def gradual_prune(model, x, y, s_f: float, *, epochs: int, n: int, t0: int = 0, dt: int = 1, s_i: float = 0.0,
                  scope: str = "layer", types=None, exclude=(), evaluate=None, progress: bool = True,
                  **fit_kwargs):
    """Zhu & Gupta's gradual pruning inside one :func:`minquant.data.training.fit` run of ``epochs`` epochs.

    ``t`` = epochs completed. Before training the model is pruned to ``s_i``; after epoch ``t`` with
    ``t = t0 + k·Δt`` (k = 1…n) the mask is tightened to ``s_t`` (:func:`zhu_gupta_sparsity`); the
    remaining epochs fine-tune at ``s_f``. Pruned weights stay zero throughout (the optimizer's leftover
    momentum included, see :func:`~minquant.prune.magnitude.masked_training`). ``fit_kwargs`` go to
    ``fit`` (lr, batch_size, seed…); ``progress`` shows fit's tqdm bar. Returns per-epoch dicts
    ``{epoch, sparsity, metric}`` (``metric = evaluate(model)`` if given)."""
    from ..data.training import fit
    from .magnitude import DEFAULT_TYPES, apply_masks, masked_training, prune_magnitude

    if t0 + n * dt > epochs:
        raise ValueError(f"the schedule ends at epoch {t0 + n * dt} but training has only {epochs} epochs")
    types = DEFAULT_TYPES if types is None else types
    masks = prune_magnitude(model, s_i, scope=scope, types=types, exclude=exclude)
    history = []

    def density(ms):
        return sum(int(m.sum()) for m in ms.values()) / sum(m.size for m in ms.values())

    with masked_training(model, masks) as live:
        def on_epoch(epoch, m):
            t = epoch + 1
            apply_masks(m, live.as_numpy())  # undo the optimizer's drift of masked weights before ranking
            if t0 < t <= t0 + n * dt and (t - t0) % dt == 0:
                s = zhu_gupta_sparsity(t, s_i, s_f, t0, n, dt)
                live.update(prune_magnitude(m, s, scope=scope, types=types, exclude=exclude))
            history.append({"epoch": t, "sparsity": 1 - density(live.as_numpy()),
                            "metric": None if evaluate is None else float(evaluate(m))})
        fit(model, x, y, epochs=epochs, on_epoch=on_epoch, progress=progress, **fit_kwargs)
    return history
