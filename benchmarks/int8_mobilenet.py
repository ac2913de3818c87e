"""int8 per-channel MobileNetV2: which quantize_static setting gives the most top-1 agreement with fp32 (issue 15).

    .venv/bin/python -m benchmarks.int8_mobilenet --option default
    .venv/bin/python -m benchmarks.int8_mobilenet --option calib300
    .venv/bin/python -m benchmarks.int8_mobilenet --option adaround
    .venv/bin/python -m benchmarks.int8_mobilenet --option p99.9
    .venv/bin/python -m benchmarks.int8_mobilenet --report          # the table, printed (and in JSON)

Every option is ``minquant.quantize_static(model, calib, target="x86")`` (per-channel int8 weights, percentile
calibration, cross-layer equalization, bias correction — the defaults) with one thing changed, scored on the
same 200 held-out crops (``photo_crops(200, split="eval")``): top-1 agreement with the fp32 model and logit
SQNR. Calibration crops: ``photo_crops(n, split="calib")`` (100 unless the option says otherwise). One thread.
Each option appends its row to ``benchmarks/figures/int8_mobilenet.json`` (the same option again replaces it).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from .provenance import commit  # noqa: E402
from minquant.files import atomic_write_text  # noqa: E402

JSON = Path(__file__).resolve().parent / "figures" / "int8_mobilenet.json"

#: option → (what it changes, calibration crops)
OPTIONS = {
    "default": ("quantize_static defaults", 100),
    "calib300": ("300 calibration crops", 300),
    "calib500": ("500 calibration crops", 500),
    "adaround": ("AdaRound int8 weights (200 Adam steps per layer, 2,048 rows of 32 crops, min_rows_per_input=1)", 100),
    "adaround300": ("AdaRound int8 weights as above, 300 calibration crops", 300),
    "p99.9": ("percentile 99.9 instead of 99.99", 100),
    "p99.995": ("percentile 99.995 instead of 99.99", 100),
    "mse_weights": ("int8 weight scales by the clipped-range search (NearestWeights('int8', mse_scale=True))", 100),
    # the defaults with another calibration batch size (32 by default): how much of the agreement is noise
    "batch16": ("calibration batch_size=16 (the defaults otherwise)", 100),
    "batch100": ("calibration batch_size=100: one batch (equalization's head is then 100 crops, not 32)", 100),
}


def run_option(option: str) -> dict:
    import torch

    import minquant as mq
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet
    from minquant.observers import PercentileObserver
    from minquant.qat import NearestWeights, adaround
    from minquant.quantized.comparison import sqnr_db

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    what, n_calib = OPTIONS[option]
    model = mobilenet_v2_imagenet()
    calib, ev = photo_crops(n_calib, split="calib"), photo_crops(200, split="eval")
    with torch.no_grad():
        f = torch.cat([model(torch.from_numpy(ev[i:i + 25])) for i in range(0, len(ev), 25)]).numpy()
    t = time.time()
    kw = dict(target="x86", progress=False)
    if option.startswith("p99"):
        kw["calibrator"] = functools.partial(PercentileObserver, percentile=float(option[1:]))
    if option.startswith("batch"):
        kw["batch_size"] = int(option[len("batch"):])
    if option == "mse_weights":
        kw["weight_rounding"] = NearestWeights("int8", mse_scale=True)
    if option.startswith("adaround"):
        nearest = NearestWeights("int8")
        qm0 = mq.quantize_static(model, calib, weight_rounding=nearest, **kw)
        kw["weight_rounding"] = adaround(qm0, nearest, calib[:32], iterations=200, rows=2048, seed=0,
                                         min_rows_per_input=1.0)
    qm = mq.quantize_static(model, calib, **kw)
    seconds = time.time() - t
    q = np.concatenate([qm(ev[i:i + 25]) for i in range(0, len(ev), 25)])
    return dict(option=option, what=what, calib=n_calib, agree=float((q.argmax(1) == f.argmax(1)).mean()),
                sqnr=float(sqnr_db(f, q)), seconds=round(seconds, 1), commit=commit(), date=str(datetime.date.today()),
                command=".venv/bin/python -m benchmarks.int8_mobilenet --option " + option)


def table(rows) -> str:
    lines = ["| option | calibration crops | top-1 agreement with fp32 % | logit SQNR dB | quantize s | command |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['calib']} | {100 * r['agree']:.1f} | {r['sqnr']:.2f} | {r['seconds']:.0f} | "
                     f"`{r['command']}` |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--option", choices=sorted(OPTIONS))
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args(argv)
    rows = json.loads(JSON.read_text()) if JSON.exists() else []
    if args.option:
        r = run_option(args.option)
        print(json.dumps(r), flush=True)
        rows = [x for x in rows if x["option"] != args.option] + [r]
        atomic_write_text(JSON, json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
