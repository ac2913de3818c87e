"""TinyCNN on scikit-learn digits: test accuracy vs sparsity, with fine-tuning (issue 4).

Starts from the cached trained TinyCNN (``minquant.data.zoo.tiny_cnn_digits``: 15 epochs, Adam 1e-3) and,
with the same fine-tuning budget for every point (``--epochs``, default 20, Adam 1e-3, batch 64):

* unstructured 50 / 70 / 90 % — per-layer magnitude pruning on Zhu & Gupta's gradual schedule during
  one training run (mask tightened after each of the first ``--steps`` epochs, then training goes on at
  the final sparsity; ``minquant.prune.gradual_prune``). The first conv
  (288 weights, 1 % of the total) stays dense — 90 % of its 9 weights per filter would kill most filters —
  and the other layers are pruned a little harder so that the sparsity over *all* conv/linear weights is
  the target;
* at 90 %: one-shot (prune once, then fine-tune) and the seed's loop (prune 10 more points, retrain one
  epoch, … ; the rest of the budget at 90 %) for comparison, same epoch budget;
* structured 25 / 50 % of channels (L1 filter norms, Li et al.), physically removed, then fine-tuned;
* controls: every point's accuracy *before* fine-tuning, and the dense model fine-tuned for the same
  budget (the cached model is not fully converged, so extra epochs alone help).

Writes benchmarks/figures/prune_tinycnn.png and prune_tinycnn.json, prints a markdown table.
Run:  .venv/bin/python benchmarks/prune_tinycnn.py        (~15 min on one shared core)
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from minquant.prune import (constant_step_targets, count_params, gradual_prune, iterative_prune,
                            masked_training, model_report, prune_channels, prune_magnitude, storage_report)
from minquant.data.training import accuracy, fit
from minquant.data.zoo import tiny_cnn_digits
from minquant.files import atomic_write_text

FIG = Path(__file__).resolve().parent / "figures"
FIRST = "features.0"
LAYERS = ("features.0", "features.2", "classifier")


def weight_sparsity(model) -> float:
    ws = [model.get_submodule(n).weight for n in LAYERS]
    return 1 - sum(int((w != 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def rest_amount(model, target: float) -> float:
    """Per-layer amount for the non-first layers so that all conv/linear weights reach ``target``."""
    sizes = {n: model.get_submodule(n).weight.numel() for n in LAYERS}
    total = sum(sizes.values())
    return min(1.0, target * total / (total - sizes[FIRST]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs per point")
    ap.add_argument("--steps", type=int, default=10, help="Zhu & Gupta pruning steps (one per epoch)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default=str(FIG / "prune_tinycnn"))
    ap.add_argument("--replot", action="store_true", help="only redraw the figure from the saved JSON")
    args = ap.parse_args()
    if args.replot:
        saved = json.loads(Path(args.out + ".json").read_text())
        plot(saved["meta"], saved["results"], args.out + ".png")
        print_table(saved["meta"], saved["results"])
        return
    torch.set_num_threads(1)
    FIG.mkdir(exist_ok=True)
    base, (xtr, ytr, xte, yte) = tiny_cnn_digits()
    acc = lambda m: accuracy(m, xte, yte)  # noqa: E731
    base_acc = acc(base)
    base_params = count_params(base)
    base_macs = model_report(base, (1, 1, 28, 28)).macs
    print(f"baseline TinyCNN: test accuracy {base_acc:.4f}, {base_params} params, {base_macs} MACs", flush=True)
    results = []

    def record(kind, label, model, acc_before, seconds, extra=None):
        rep = model_report(model, (1, 1, 28, 28))
        row = {"kind": kind, "label": label, "accuracy": acc(model), "accuracy_before_ft": acc_before,
               "weight_sparsity": weight_sparsity(model) if kind != "structured" else None,
               "params": count_params(model), "nonzero_params": count_params(model, nonzero=True),
               "param_fraction_removed": 1 - count_params(model, nonzero=True) / base_params,
               "macs": rep.macs, "nonzero_macs": rep.nonzero_macs, "seconds": round(seconds, 1), **(extra or {})}
        results.append(row)
        print(json.dumps(row), flush=True)
        return row

    # control: the dense model, fine-tuned for the same budget
    t = time.time()
    dense = copy.deepcopy(base)
    fit(dense, xtr, ytr, epochs=args.epochs, lr=args.lr, seed=100)
    record("dense", "dense + same fine-tuning", dense, base_acc, time.time() - t)

    def finish(label, model, t, extra):
        # accuracy before fine-tuning: the same sparsity applied to the unpruned model in one shot
        oneshot = copy.deepcopy(base)
        prune_magnitude(oneshot, rest_amount(base, extra["target"]), scope="layer", exclude=(FIRST,))
        st, st8 = storage_report(model), storage_report(model, int8=True)
        extra = {**extra, "storage_fp32": {k: st[k] for k in ("dense", "bitmask", "csr", "best")},
                 "storage_int8": {k: st8[k] for k in ("dense", "bitmask", "csr", "best")}}
        return record("unstructured", label, model, acc(oneshot), time.time() - t, extra)

    for s in (0.5, 0.7, 0.9):  # Zhu & Gupta during one fit: prune after epochs 1..steps, then train on
        model, t = copy.deepcopy(base), time.time()
        hist = gradual_prune(model, xtr, ytr, rest_amount(base, s), epochs=args.epochs, n=args.steps, t0=0,
                             dt=1, scope="layer", exclude=(FIRST,), lr=args.lr, seed=10, progress=True,
                             evaluate=acc)
        finish(f"unstructured {s:.0%} (Zhu & Gupta, {args.steps} steps in one run)", model, t,
               {"target": s, "curve": [round(h["metric"], 4) for h in hist]})

    model, t = copy.deepcopy(base), time.time()  # one-shot: prune once, fine-tune
    masks = prune_magnitude(model, rest_amount(base, 0.9), scope="layer", exclude=(FIRST,))
    with masked_training(model, masks):
        fit(model, xtr, ytr, epochs=args.epochs, lr=args.lr, seed=10)
    finish("unstructured 90% (one-shot, then fine-tune)", model, t, {"target": 0.9})

    # the seed's loop: +10 points, retrain 1 epoch (fresh Adam), …; the rest of the budget at 90 %
    targets = constant_step_targets(0.1, 0.9, of="original")
    model, t = copy.deepcopy(base), time.time()
    n_steps = len(targets)

    def fine_tune(m, step, s):
        fit(m, xtr, ytr, epochs=1 if step < n_steps - 1 else args.epochs - (n_steps - 1), lr=args.lr,
            seed=10 + step)

    hist = iterative_prune(model, [rest_amount(base, s) for s in targets], fine_tune, scope="layer",
                           exclude=(FIRST,), evaluate=acc, progress=True)
    finish("unstructured 90% (seed loop: +10 points, retrain, …)", model, t,
           {"target": 0.9, "curve": [round(h["metric"], 4) for h in hist]})

    for s in (0.25, 0.5):
        t = time.time()
        model = prune_channels(base, (1, 1, 28, 28), s, norm="l1")
        before = acc(model)
        fit(model, xtr, ytr, epochs=args.epochs, lr=args.lr, seed=200)
        record("structured", f"structured {s:.0%} of channels (L1)", model, before, time.time() - t,
               {"channels": [model.features[0].out_channels, model.features[2].out_channels]})

    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "epochs": args.epochs, "steps": args.steps, "lr": args.lr,
            "baseline_accuracy": base_acc, "baseline_params": base_params, "baseline_macs": base_macs}
    atomic_write_text(Path(args.out + ".json"), json.dumps({"meta": meta, "results": results}, indent=1))
    plot(meta, results, args.out + ".png")
    print_table(meta, results)


def plot(meta, results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    base = meta["baseline_accuracy"] * 100
    ax.axhline(base, color="k", lw=1, label=f"dense baseline {base:.2f}%")
    ax.axhline(base - 1, color="k", lw=1, ls=":", label="baseline − 1 point")
    dense = [r for r in results if r["kind"] == "dense"]
    if dense:
        ax.axhline(dense[0]["accuracy"] * 100, color="gray", lw=1, ls="--",
                   label=f"dense + same fine-tuning {dense[0]['accuracy'] * 100:.2f}%")
    for kind, color in (("unstructured", "C0"), ("structured", "C3")):
        rows = [r for r in results if r["kind"] == kind and "one-shot" not in r["label"]
                and "seed loop" not in r["label"]]
        x = [0] + [100 * r["param_fraction_removed"] for r in rows]
        what = "Zhu & Gupta" if kind == "unstructured" else "L1 channels"
        ax.plot(x, [base] + [100 * r["accuracy"] for r in rows], "o-", color=color,
                label=f"{kind} ({what}), fine-tuned")
        ax.plot(x, [base] + [100 * r["accuracy_before_ft"] for r in rows], "x--", color=color, alpha=0.6,
                label=f"{kind}, one-shot, before fine-tuning")
    for r in results:
        if "one-shot" in r["label"] or "seed loop" in r["label"]:
            one = "one-shot" in r["label"]
            ax.plot([100 * r["param_fraction_removed"] + (-0.8 if one else 0.8)], [100 * r["accuracy"]],
                    "s" if one else "^", color="C2" if one else "C4", ms=7,
                    label=r["label"].replace("unstructured 90% ", "90% "))
    ax.set_xlabel("parameters removed (%) — zeroed (unstructured) or physically removed (structured)")
    ax.set_ylabel("digits test accuracy (%)  [1 test image = 0.19 points]")
    ax.set_ylim(60, 100)
    ax.set_title("TinyCNN on digits: accuracy vs pruning, fine-tuned %d epochs" % meta["epochs"])
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_table(meta, results):
    print(f"\nTinyCNN/digits, {meta['date']}, {meta['machine']}, torch {meta['torch']}, 1 thread")
    print("| run | params removed | weight sparsity | MACs (dense) | acc. before FT | acc. after FT | Δ vs baseline |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ws = "—" if r["weight_sparsity"] is None else f"{100 * r['weight_sparsity']:.1f}%"
        print(f"| {r['label']} | {100 * r['param_fraction_removed']:.1f}% | {ws} | {r['macs']:,} | "
              f"{100 * r['accuracy_before_ft']:.2f}% | {100 * r['accuracy']:.2f}% | "
              f"{100 * (r['accuracy'] - meta['baseline_accuracy']):+.2f} |")


if __name__ == "__main__":
    main()
