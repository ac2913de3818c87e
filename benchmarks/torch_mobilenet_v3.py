"""MobileNetV3-large quantized by torch (eager mode) and run on minquant: is every output bit identical?

    .venv/bin/python -m benchmarks.torch_mobilenet_v3             # ~2 min on 2 cores; writes RESULTS_mobilenet_v3.md
    .venv/bin/python -m benchmarks.torch_mobilenet_v3 --quick     # one seed, fewer crops, prints only

For each torch engine (x86, qnnpack) and seed: torchvision's quantizable ``mobilenet_v3_large``
(``quantize=False``, seeded random weights, BatchNorm statistics from one train-mode pass over the
calibration crops: :func:`minquant.data.zoo.mobilenet_v3_random`), ``fuse_model`` → default
qconfig → ``prepare`` → calibrate on ``photo_crops(16, split="calib")`` → ``convert``; then
:func:`minquant.interop.torch.quantized_import` and, on ``photo_crops(n, split="eval")`` cut into batches of
several sizes (fbgemm's element-wise rounding depends on the position in the whole batch tensor, see
:mod:`minquant.kernels.elementwise`): logits compared with ``np.array_equal``, and every uint8 tensor a
torch module returns (forward hooks) compared with minquant's value of the same name.
One thread everywhere (torch's fbgemm splits large element-wise ops across threads, each with its own tail).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from minquant.files import atomic_write_text  # noqa: E402

warnings.filterwarnings("ignore")


def quantize(model, engine, calib):
    """A fused, eager-mode quantized copy of ``model`` (default ``engine`` qconfig, calibrated on ``calib``)."""
    from minquant.frameworks.torch_oracle import torch_eager_ptq

    m = copy.deepcopy(model)
    m.fuse_model()
    return torch_eager_ptq(m, engine, calib)


def run(quick: bool):
    import torch

    from minquant.data.datasets import photo_crops
    from minquant.kernels.elementwise import activation_tables
    from minquant.interop.torch import from_torch_quantized
    from minquant.frameworks.torch_oracle import torch_quantized_codes
    from minquant.data.zoo import mobilenet_v3_random

    torch.set_num_threads(1)
    calib = photo_crops(16, split="calib")
    n_eval = 12 if quick else 40
    x_all = photo_crops(n_eval, split="eval")
    batches = [1, 3, 8] if quick else [1, 3, 4, 8, 8, 16]          # sums: 12 and 40
    seeds = [0] if quick else [0, 1]
    rows = []
    for engine in ("x86", "qnnpack"):
        old = torch.backends.quantized.engine
        torch.backends.quantized.engine = engine
        try:
            for seed in seeds:
                qmodel = quantize(mobilenet_v3_random(calib, seed), engine, calib)
                qm = from_torch_quantized(qmodel, (1, 3, 224, 224))
                acts = [n for n in qm.graph.nodes if n.op in ("qhardswish", "qhardsigmoid")]
                two_tables = sum(not np.array_equal(*activation_tables(n.op[1:], n.attrs.x_scale, n.attrs.x_zp,
                                                                         n.attrs.y_scale, n.attrs.y_zp,
                                                                         target="fbgemm")) for n in acts)
                logits = logit_bad = inter = inter_bad = 0
                max_d = 0.0
                start = 0
                for b in batches:
                    x = x_all[start:start + b]
                    start += b
                    ref, codes = torch_quantized_codes(qmodel, x)
                    out, values = qm.run(x, intermediates=True, raw=True)
                    logits += out.size
                    logit_bad += int((out != ref).sum())
                    max_d = max(max_d, float(np.abs(out - ref).max()))
                    for name, c in codes.items():
                        if name in values:
                            inter += c.size
                            inter_bad += int((values[name] != c).sum())
                ops = [n.op for n in qm.graph.nodes]
                rows.append(dict(engine=engine, seed=seed, crops=start, batches=",".join(map(str, batches)),
                                 logits=logits, logit_bad=logit_bad, max_d=max_d, inter=inter, inter_bad=inter_bad,
                                 n_hs=ops.count("qhardswish"), n_hsig=ops.count("qhardsigmoid"),
                                 n_mul=ops.count("qmul"), two_tables=two_tables))
                r = rows[-1]
                print(f"{engine} seed {seed}: {r['logit_bad']} of {r['logits']} logits differ (max |Δ| "
                      f"{r['max_d']}), {r['inter_bad']} of {r['inter']} intermediate codes differ", flush=True)
        finally:
            torch.backends.quantized.engine = old
    return rows


def table(rows) -> str:
    head = ("| engine | seed | crops (batches) | logits compared | differ | max abs diff | intermediate codes "
            "compared | differ | qhardswish / qhardsigmoid / qmul nodes | fbgemm act. layers with 2 distinct "
            "tables |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['seed']} | {r['crops']} ({r['batches']}) | {r['logits']:,} | "
                     f"{r['logit_bad']} | {r['max_d']:g} | {r['inter']:,} | {r['inter_bad']} | "
                     f"{r['n_hs']} / {r['n_hsig']} / {r['n_mul']} | {r['two_tables']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one seed, 12 crops, print only")
    args = ap.parse_args()
    import torch
    import torchvision

    rows = run(args.quick)
    body = table(rows)
    print(body)
    if not args.quick:
        out = Path(__file__).resolve().parent / "RESULTS_mobilenet_v3.md"
        stamp = (f"{datetime.date.today()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
                 f"{platform.machine()}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}, 1 thread")
        atomic_write_text(out, "# torch-quantized MobileNetV3-large on minquant: bit-exactness\n\n"
                       f"`benchmarks/torch_mobilenet_v3.py` ({stamp}). Logits after torch's DeQuantStub compared "
                       "with `np.array_equal`; intermediate codes: every quantized tensor a torch module returns, "
                       "against minquant's value of the same name.\n\n" + body + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
