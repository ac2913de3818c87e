"""Prune, then quantize: pruned TinyCNNs through ``minquant.quantize_static`` (issue 4).

Re-creates two models of ``benchmarks/prune_tinycnn.py`` the same way (its functions, seeds and
fine-tuning budget), starting from the cached trained TinyCNN (``minquant.data.zoo.tiny_cnn_digits``):

* **unstructured 90 %, one-shot + fine-tune** — per-layer magnitude pruning (first conv kept dense, the
  others pruned harder so that all conv/linear weights are 90 % zero), then ``--epochs`` of Adam with the
  masks held;
* **structured 50 % of channels** (L1 filter norms), physically removed, then ``--epochs`` of Adam;
* and the unpruned model, as the reference.

Each goes through ``minquant.quantize_static`` (defaults: per-channel weights, percentile calibrator,
target='fbgemm') calibrated on the first ``--calib`` training images. Reported: float and int8 test
accuracy, argmax agreement int8 vs float, ``size_bytes()``, and the honest prune-then-quantize storage:

    sparse size = size_bytes() = Σ best encoding of each int8 weight tensor + everything else, as
    QuantizedModel.save stores it (the dense size is the same with every weight tensor dense)

i.e. every qconv2d/qlinear node's ``weight`` (int8 codes, zero point 0 so a pruned weight is code 0) is
stored in the smallest of dense / bitmask / CSR (``minquant.sparse.smallest_encoding``), and the
rest of what ``size_bytes()`` counts stays dense: per-channel ``w_scale`` (float32), ``w_zp`` (int8),
``bias`` (float32) and 8 bytes per activation (scale, zero point) pair.

Writes benchmarks/figures/prune_quantize.json, prints a markdown table.
Run:  .venv/bin/python benchmarks/prune_quantize.py      (~3 min: two 20-epoch fine-tunings)
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import minquant
from minquant.prune import count_params, masked_training, prune_channels, prune_magnitude
from minquant.sparse import encoded_nbytes, smallest_encoding
from minquant.data.training import accuracy, fit
from minquant.data.zoo import tiny_cnn_digits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prune_tinycnn import FIRST, rest_amount, weight_sparsity  # noqa: E402
from minquant.files import atomic_write_text  # noqa: E402

FIG = Path(__file__).resolve().parent / "figures"
WEIGHT_OPS = ("qconv2d", "qlinear")


def pruned_tinycnns(base, xtr, ytr, epochs: int = 20, lr: float = 1e-3) -> dict:
    """{label: fine-tuned model} for the 90 % one-shot unstructured and 50 % structured TinyCNNs, made as in
    benchmarks/prune_tinycnn.py (same seeds: fit seed 10 and 200)."""
    out = {}
    m = copy.deepcopy(base)
    masks = prune_magnitude(m, rest_amount(base, 0.9), scope="layer", exclude=(FIRST,))
    with masked_training(m, masks):
        fit(m, xtr, ytr, epochs=epochs, lr=lr, seed=10)
    out["unstructured 90% (one-shot, then fine-tune)"] = m.eval()
    m = prune_channels(base, (1, 1, 28, 28), 0.5, norm="l1")
    fit(m, xtr, ytr, epochs=epochs, lr=lr, seed=200)
    out["structured 50% of channels (L1), removed"] = m.eval()
    return out


def sparse_int8_storage(qm) -> dict:
    """Storage of a QuantizedModel with each int8 weight tensor in its smallest encoding (module
    docstring). Returns totals and, per weight node, the chosen format, bytes and code sparsity."""
    layers, dense_w, best_w = {}, 0, 0
    for n in qm.graph.nodes:
        if n.op not in WEIGHT_OPS:
            continue
        w = n.params["weight"]
        if w.dtype != np.int8 or np.any(n.params["w_zp"] != 0):
            raise ValueError(f"{n.name}: expected int8 codes with zero point 0, got {w.dtype}")
        enc = smallest_encoding(w)
        b = encoded_nbytes(enc)
        layers[n.name] = {"format": str(enc["format"]), "dense_bytes": int(w.nbytes), "encoded_bytes": b,
                          "code_sparsity": float(1 - np.count_nonzero(w) / w.size), "size": int(w.size),
                          "codes_range": [int(w.min()), int(w.max())]}
        dense_w += w.nbytes
        best_w += b
    total = qm.size_bytes()   # QuantizedModel.save stores each int8 weight in its smallest encoding
    other = total - best_w
    if total != other + best_w or other < 0:
        raise AssertionError("size_bytes() should count the best encoding of every int8 weight")
    return {"size_bytes": total, "weight_codes_dense": int(dense_w), "weight_codes_best": int(best_w),
            "other_bytes": int(other), "sparse_total": int(total), "dense_total": int(other + dense_w),
            "layers": layers}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs (prune_tinycnn.py: 20)")
    ap.add_argument("--calib", type=int, default=256, help="calibration images (first N of the train split)")
    ap.add_argument("--out", default=str(FIG / "prune_quantize.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    base, (xtr, ytr, xte, yte) = tiny_cnn_digits()
    base.eval()
    xtr_np = xtr.numpy() if hasattr(xtr, "numpy") else np.asarray(xtr)
    xte_np = xte.numpy() if hasattr(xte, "numpy") else np.asarray(xte)
    yte_np = yte.numpy() if hasattr(yte, "numpy") else np.asarray(yte)
    calib = [np.ascontiguousarray(xtr_np[i:i + 64], dtype=np.float32) for i in range(0, args.calib, 64)]
    t = time.time()
    models = {"unpruned (cached tiny_cnn_digits)": base, **pruned_tinycnns(base, xtr, ytr, args.epochs)}
    print(f"models built in {time.time() - t:.0f} s", flush=True)
    base_fp32 = 4 * count_params(base)
    rows = []
    for label, m in models.items():
        m.eval()
        with torch.inference_mode():
            f_pred = m(torch.as_tensor(xte_np)).argmax(1).numpy()
        t = time.time()
        qm = minquant.quantize_static(m, calib, progress=False)
        tq = time.time() - t
        q_pred = np.asarray(qm(xte_np)).argmax(1)
        st = sparse_int8_storage(qm)
        row = {"label": label, "float_accuracy": float(accuracy(m, xte, yte)),
               "int8_accuracy": float((q_pred == yte_np).mean()), "argmax_agreement": float((q_pred == f_pred).mean()),
               "params": count_params(m), "nonzero_params": count_params(m, nonzero=True),
               "weight_sparsity": None if label.startswith("structured") else weight_sparsity(m),
               "fp32_dense_bytes": 4 * count_params(m), "fp32_param_bytes_qm": qm.fp32_param_bytes(),
               "quantize_seconds": round(tq, 1), "meta": qm.meta, **st}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "meta"}), flush=True)
        print(qm.summary(), flush=True)
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "epochs": args.epochs, "calibration_images": args.calib,
            "unpruned_fp32_bytes": base_fp32}
    Path(args.out).parent.mkdir(exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\nTinyCNN/digits prune → quantize_static, {meta['date']}, {meta['machine']}, torch {meta['torch']}")
    print("| model | float acc. | int8 acc. | int8 = float argmax | int8, all weights dense | size_bytes() "
          "(weights in best encoding, as saved) | vs unpruned fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        fmt = "/".join(sorted({v["format"] for v in r["layers"].values()}))
        print(f"| {r['label']} | {100 * r['float_accuracy']:.2f}% | {100 * r['int8_accuracy']:.2f}% | "
              f"{100 * r['argmax_agreement']:.2f}% | {r['dense_total']:,} B | {r['size_bytes']:,} B ({fmt}) | "
              f"{base_fp32 / r['sparse_total']:.1f}× |")


if __name__ == "__main__":
    main()
