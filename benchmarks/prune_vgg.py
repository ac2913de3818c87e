"""The seed's claim in miniature: "a VGG-16 can be pruned to 1/10 the original parameters with < 2 %
accuracy loss" — checked on a small VGG-style network trained on scikit-learn digits (issue 4).

VGG-style: three blocks of two 3×3 conv + BatchNorm + ReLU (32, 64, 128 channels) each followed by a 2×2
max-pool, then Linear(128·3·3 → 256) · ReLU · Dropout · Linear(256 → 10) — ~590 k parameters, 20× TinyCNN.
Trained from scratch (Adam 1e-3, ``--epochs``), then pruned to ≤ 1/10 of its parameters two ways (and,
as a control, the dense model trained for the same extra epochs — the short baseline is not converged):

* structured — channels *and* hidden units physically removed (L1, Li et al.), iteratively: keep
  60 % → 45 % → 31 % of every group's channels/units (of the original count), fine-tuning after each cut;
  the result is a smaller dense network;
* unstructured — Zhu & Gupta gradual magnitude pruning (global over all conv/linear weights) to 91 %
  during one fine-tuning run; the network keeps its shape, ≤ 1/10 of the parameters are non-zero
  (Han et al. 2015's VGG-16 result, which the seed's sentence echoes, was of this kind).

Run:  .venv/bin/python benchmarks/prune_vgg.py        (~10 min on one shared core)
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
import torch.nn as nn

from minquant.data.datasets import digits
from minquant.prune import count_params, gradual_prune, model_report, prune_channels, storage_report
from minquant.data.training import accuracy, fit
from minquant.files import atomic_write_text

FIG = Path(__file__).resolve().parent / "figures"


class MiniVGG(nn.Module):
    def __init__(self, cfg=(32, 32, "M", 64, 64, "M", 128, 128, "M"), hidden=256, classes=10):
        super().__init__()
        layers, c = [], 1
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * 3 * 3, hidden), nn.ReLU(inplace=True),
                                        nn.Dropout(0.5), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=12, help="training epochs of the dense baseline")
    ap.add_argument("--ft", type=int, default=4, help="fine-tuning epochs after each structured cut")
    ap.add_argument("--final-ft", type=int, default=8, help="extra epochs after the last structured cut")
    ap.add_argument("--gradual-epochs", type=int, default=16, help="unstructured run length")
    ap.add_argument("--out", default=str(FIG / "prune_vgg.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = digits()
    shape = (1, 1, 28, 28)
    acc = lambda m: accuracy(m, xte, yte)  # noqa: E731

    torch.manual_seed(0)
    base = MiniVGG()
    t = time.time()
    fit(base, xtr, ytr, epochs=args.epochs, lr=1e-3, seed=0, progress=True)
    base_acc, base_params, base_macs = acc(base), count_params(base), model_report(base, shape).macs
    rows = [{"run": f"dense MiniVGG ({args.epochs} epochs)", "accuracy": base_acc, "params": base_params,
             "nonzero": base_params, "macs": base_macs, "seconds": round(time.time() - t)}]
    print(json.dumps(rows[-1]), flush=True)

    # control: the dense model trained for the same extra epochs as the structured run
    t = time.time()
    dense = copy.deepcopy(base)
    fit(dense, xtr, ytr, epochs=3 * args.ft, lr=1e-3, seed=1)
    fit(dense, xtr, ytr, epochs=args.final_ft, lr=3e-4, seed=7)
    rows.append({"run": f"dense + the structured run's {3 * args.ft + args.final_ft} extra epochs",
                 "accuracy": acc(dense), "params": base_params, "nonzero": base_params, "macs": base_macs,
                 "seconds": round(time.time() - t)})
    print(json.dumps(rows[-1]), flush=True)

    # structured, iterative: keep 60 % → 45 % → 31 % of the original channels of every group
    t = time.time()
    model, kept_before, curve = copy.deepcopy(base), 1.0, []
    for keep in (0.60, 0.45, 0.31):
        model = prune_channels(model, shape, 1 - keep / kept_before, norm="l1")
        kept_before = keep
        a_cut = acc(model)
        fit(model, xtr, ytr, epochs=args.ft, lr=1e-3, seed=int(100 * keep))
        curve.append({"kept": keep, "params": count_params(model), "acc_after_cut": a_cut,
                      "acc_after_ft": acc(model)})
        print(json.dumps(curve[-1]), flush=True)
    fit(model, xtr, ytr, epochs=args.final_ft, lr=3e-4, seed=7)
    rep = model_report(model, shape)
    rows.append({"run": "structured (channels + hidden units removed, 3 cuts)", "accuracy": acc(model),
                 "params": rep.params, "nonzero": rep.nonzero, "macs": rep.macs, "curve": curve,
                 "widths": [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
                 + [model.classifier[1].out_features], "seconds": round(time.time() - t)})
    print(json.dumps(rows[-1]), flush=True)

    # unstructured, Zhu & Gupta during one run (global magnitude over all conv/linear weights)
    t = time.time()
    model = copy.deepcopy(base)
    hist = gradual_prune(model, xtr, ytr, 0.91, epochs=args.gradual_epochs, n=args.gradual_epochs // 2,
                         scope="global", lr=1e-3, seed=11, evaluate=acc, progress=True)
    rep = model_report(model, shape)
    st = storage_report(model)
    rows.append({"run": "unstructured (Zhu & Gupta to 91 %, global)", "accuracy": acc(model),
                 "params": rep.params, "nonzero": rep.nonzero, "macs": rep.macs,
                 "nonzero_macs": rep.nonzero_macs, "storage_fp32": {k: st[k] for k in ("dense", "bitmask", "csr", "best")},
                 "curve": [round(h["metric"], 4) for h in hist], "seconds": round(time.time() - t)})
    print(json.dumps(rows[-1]), flush=True)

    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), **vars(args)}
    Path(args.out).parent.mkdir(exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\nMiniVGG/digits, {meta['date']}, {meta['machine']}, torch {meta['torch']}, 1 thread")
    print("| run | params (non-zero) | of dense | MACs | test accuracy | Δ |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['nonzero']:,} | {r['nonzero'] / base_params:.1%} | {r['macs'] / 1e6:.1f}M | "
              f"{100 * r['accuracy']:.2f}% | {100 * (r['accuracy'] - base_acc):+.2f} |")


if __name__ == "__main__":
    main()
