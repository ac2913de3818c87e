"""Structured pruning: parameters, FLOPs and measured torch fp32 latency before/after (issue 4).

* TinyCNN (trained on digits, ``minquant.data.zoo.tiny_cnn_digits``), 50 % of channels, input 1×1×28×28;
* torchvision MobileNetV2 (ImageNet weights from the offline package) and ResNet-18 (random init: no
  weights offline — latency and counts do not depend on the values), 30 % of channels, input 1×3×224×224;
  with ``round_to=1`` and ``round_to=8`` (kept channel counts rounded up to multiples of 8, which
  vectorised conv kernels prefer).

Latency: ``torch.set_num_threads(1)``, ``torch.inference_mode()``, batch 1; warm-up calls excluded; the
original and pruned models are timed alternately (so machine load hits both alike) and the median of the
repeats is reported (TinyCNN: each repeat times a block of 50 calls).

minquant int8 column (TinyCNN, MobileNetV2 and ResNet-18 rows): the original and the pruned model each go through
``minquant.quantize_static`` (defaults: per-channel, percentile calibrator, target='fbgemm'), calibrated
on 64 digits training images (TinyCNN) or 16 ``photo_crops(split='calib')`` (MobileNetV2); ``qm(x)`` on a
float32 NumPy batch of 1 (quantize → int8 layers → dequantize, the whole forward pass) is timed the same
way, alternately, after its own warm-up (Numba compilation excluded). ResNet-18 rows (random weights) get
no int8 column.

``--cases`` re-runs only some rows; rows already in the JSON for other cases are kept (each row carries
its own date and load average).

MobileNetV2 without fine-tuning (no ImageNet here to fine-tune on): the table also gives top-1 agreement
with the unpruned model on 64 held-out scikit-image photo crops — what one-shot 30 % costs before
any recovery.

Run:  .venv/bin/python benchmarks/prune_latency.py      (~3 min)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from minquant.prune import model_report, prune_channels
from minquant.files import atomic_write_text

FIG = Path(__file__).resolve().parent / "figures"


def time_pair(a, b, x, *, warmup: int, repeats: int, block: int):
    """Median seconds per call of ``a(x)`` and ``b(x)``, timed alternately."""
    ta, tb = [], []
    with torch.inference_mode():
        for _ in range(warmup):
            a(x)
            b(x)
        for _ in range(repeats):
            for m, acc in ((a, ta), (b, tb)):
                t = time.perf_counter()
                for _ in range(block):
                    m(x)
                acc.append((time.perf_counter() - t) / block)
    return statistics.median(ta), statistics.median(tb), ta, tb


CASES = ("tiny", "mnv2", "mnv2x8", "r18", "r18x8")


def int8_pair(model, pruned, calib, x, *, warmup: int, repeats: int, block: int):
    """minquant int8 (quantize_static) latency of both models: (ms, ms, qm, qm_pruned)."""
    import minquant

    qa = minquant.quantize_static(model, calib, progress=False)
    qb = minquant.quantize_static(pruned, calib, progress=False)
    xn = x.numpy()
    t0, t1, _, _ = time_pair(lambda _: qa(xn), lambda _: qb(xn), x, warmup=warmup, repeats=repeats, block=block)
    return 1e3 * t0, 1e3 * t1, qa, qb


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--out", default=str(FIG / "prune_latency.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    import torchvision

    from minquant.data.datasets import photo_crops
    from minquant.data.training import accuracy
    from minquant.data.zoo import mobilenet_v2_imagenet, tiny_cnn_digits

    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = sorted(set(wanted) - set(CASES))
    if bad:
        raise ValueError(f"unknown case(s) {bad}; choose from {CASES}")
    tiny, (xtr, _, xte, yte) = tiny_cnn_digits()
    torch.manual_seed(0)
    # random init: parameter counts, MACs and latency do not depend on the values
    r18 = [torchvision.models.resnet18().eval(), torchvision.models.resnet18().eval()]
    cases = [("tiny", "TinyCNN (digits-trained)", lambda: tiny, (1, 1, 28, 28), 0.5, 1, 50),
             ("mnv2", "MobileNetV2 (ImageNet weights)", mobilenet_v2_imagenet, (1, 3, 224, 224), 0.3, 1, 1),
             ("mnv2x8", "MobileNetV2 (ImageNet weights)", mobilenet_v2_imagenet, (1, 3, 224, 224), 0.3, 8, 1),
             ("r18", "ResNet-18 (random init)", lambda: r18[0], (1, 3, 224, 224), 0.3, 1, 1),
             ("r18x8", "ResNet-18 (random init)", lambda: r18[1], (1, 3, 224, 224), 0.3, 8, 1)]
    crops = None
    rows = []
    for case, name, make, shape, amount, round_to, block in cases:
        if case not in wanted:
            continue
        model = make()
        model.eval()
        pruned = prune_channels(model, shape, amount, round_to=round_to).eval()
        r0, r1 = model_report(model, shape), model_report(pruned, shape)
        x = torch.randn(*shape)
        t0, t1, _, _ = time_pair(model, pruned, x, warmup=10 if block > 1 else 3, repeats=args.repeats,
                                 block=block)
        row = {"case": case, "model": name, "amount": amount, "round_to": round_to,
               "params": [r0.params, r1.params], "macs": [r0.macs, r1.macs], "latency_ms": [1e3 * t0, 1e3 * t1],
               "speedup": t0 / t1, "date": datetime.datetime.now().isoformat(timespec="minutes"),
               "load_average": os.getloadavg()}
        if case in ("tiny", "mnv2", "r18"):
            calib = ([xtr[i:i + 32] for i in range(0, 64, 32)] if case == "tiny"
                     else [photo_crops(16, split="calib")])
            i0, i1, qa, qb = int8_pair(model, pruned, calib, x, warmup=10 if block > 1 else 3,
                                       repeats=args.repeats, block=block)
            row["int8_latency_ms"] = [i0, i1]
            row["int8_speedup"] = i0 / i1
            if case == "tiny":
                row["digits_int8_accuracy_no_ft"] = [float((np.asarray(q(xte)).argmax(1) == yte).mean())
                                                     for q in (qa, qb)]
        if name.startswith("TinyCNN"):
            row["digits_accuracy_no_ft"] = [accuracy(model, xte, yte), accuracy(pruned, xte, yte)]
        if name.startswith("MobileNetV2"):
            if crops is None:
                crops = torch.from_numpy(photo_crops(64, split="eval"))
            with torch.inference_mode():
                agree = (model(crops).argmax(1) == pruned(crops).argmax(1)).float().mean().item()
            row["top1_agreement_no_ft"] = agree
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "repeats": args.repeats}
    Path(args.out).parent.mkdir(exist_ok=True)
    if Path(args.out).exists():  # keep the rows of cases not re-run
        old = json.loads(Path(args.out).read_text())
        key = lambda r: (r["model"], r["round_to"])  # noqa: E731
        new = {key(r): r for r in rows}
        for r in old["rows"]:
            r.setdefault("date", old["meta"]["date"])
            r.setdefault("load_average", old["meta"]["load_average"])
        rows = [new.pop(key(r), r) for r in old["rows"]] + list(new.values())
    atomic_write_text(Path(args.out), json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\n{meta['date']}, {meta['machine']}, torch {meta['torch']}, 1 thread, load avg "
          f"{meta['load_average'][0]:.1f} (shared machine), median of {args.repeats}")
    print("| model | channels removed | params | MACs | fp32 latency | speed-up | minquant int8 latency "
          "| int8 speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rt = "" if r["round_to"] == 1 else f", kept ×{r['round_to']}"
        q8 = (f"{r['int8_latency_ms'][0]:.3f} → {r['int8_latency_ms'][1]:.3f} ms | {r['int8_speedup']:.2f}×"
              if "int8_latency_ms" in r else "— | —")
        print(f"| {r['model']} | {r['amount']:.0%}{rt} | {r['params'][0]:,} → {r['params'][1]:,} "
              f"(−{1 - r['params'][1] / r['params'][0]:.0%}) | {r['macs'][0] / 1e6:,.1f}M → "
              f"{r['macs'][1] / 1e6:,.1f}M (−{1 - r['macs'][1] / r['macs'][0]:.0%}) | "
              f"{r['latency_ms'][0]:.3f} → {r['latency_ms'][1]:.3f} ms | {r['speedup']:.2f}× | {q8} |")


if __name__ == "__main__":
    main()
