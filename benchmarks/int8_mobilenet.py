"""int8 per-channel MobileNetV2 (issue 15): top-1 agreement with fp32 on many crops, with its interval,
for minquant's quantize_static settings and for torch / ONNX Runtime on the same crops.

    .venv/bin/python -m benchmarks.int8_mobilenet                                  # minquant defaults
    .venv/bin/python -m benchmarks.int8_mobilenet --calibrator mse --calib 300     # one setting changed
    .venv/bin/python -m benchmarks.int8_mobilenet --batch-size 7 --calib-seed 1    # does it hold?
    .venv/bin/python -m benchmarks.int8_mobilenet --framework torch-eager          # torch's eager x86 PTQ
    .venv/bin/python -m benchmarks.int8_mobilenet --framework ort                  # ONNX Runtime QDQ
    .venv/bin/python -m benchmarks.int8_mobilenet --score-on holdout ...           # for CHOOSING a setting
    .venv/bin/python -m benchmarks.int8_mobilenet --report                         # the table

Crops: ``photo_crops(calib, split="calib", seed=calib_seed)`` calibrate; they are scored on
``photo_crops(eval, split="eval")`` (default 1 000 crops, seed 0: the other half of every photo) or, with
``--score-on holdout``, on the last 300 of 1 000 crops of the *calibration* split (``photo_crops(1000,
split="calib", seed)[700:]``; calibration then takes the first ``calib`` ≤ 700 of them, the same crops as
``photo_crops(calib, ...)``) — settings are chosen there, never on the eval crops. Scores: top-1
agreement with the fp32 model (torchvision's MobileNetV2, ImageNet weights) with its binomial standard
error and 95 % Wilson interval, and logit SQNR (dB). One thread. Each run appends its row to
``benchmarks/figures/int8_mobilenet.json`` (the same settings again replace it).

The interval treats the crops as independent; they are random crops of ~20 photos, so crops of one photo
are correlated and the true uncertainty is somewhat larger. Two settings scored on the same crops differ
less than their intervals suggest (their errors are paired): ``changed`` in the JSON counts the crops whose
top-1 differs from the defaults' row on the same crops.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from .provenance import commit  # noqa: E402
from minquant.files import atomic_write_text  # noqa: E402

JSON = Path(__file__).resolve().parent / "figures" / "int8_mobilenet.json"
HOLDOUT = 300
POOL = 1000
FRAMEWORKS = ("minquant", "torch-eager", "torch-pt2e", "ort")
CALIBRATORS = ("percentile", "percentile99.9", "percentile99.999", "mse", "entropy", "histogram", "minmax")
WEIGHTS = ("nearest", "adaround", "mse_scale")


def wilson(k: int, n: int, z: float = 1.96):
    """95 % Wilson score interval of a binomial proportion k/n: ``(p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) /
    (1 + z²/n)``."""
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def _calibrator(name):
    from minquant.observers import PercentileObserver
    if name.startswith("percentile") and name != "percentile":
        return functools.partial(PercentileObserver, percentile=float(name[len("percentile"):]))
    return name


def _key(a) -> str:
    if a.framework != "minquant":
        return f"{a.framework} calib={a.calib} seed={a.calib_seed} on={a.score_on}"
    return (f"minquant {a.calibrator} weights={a.weights} bias_correction={not a.no_bias_correction} "
            f"equalize={not a.no_equalize} calib={a.calib} seed={a.calib_seed} batch={a.batch_size} "
            f"on={a.score_on}")


def run(a) -> dict:
    import torch

    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet
    from minquant.quantized.comparison import sqnr_db

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    model = mobilenet_v2_imagenet()
    if a.score_on == "holdout":
        if a.calib > POOL - HOLDOUT:
            raise SystemExit(f"--score-on holdout: at most {POOL - HOLDOUT} calibration crops")
        pool = photo_crops(POOL, split="calib", seed=a.calib_seed)
        calib, ev = pool[:a.calib], pool[POOL - HOLDOUT:]
    else:
        calib, ev = photo_crops(a.calib, split="calib", seed=a.calib_seed), photo_crops(a.eval, split="eval")
    with torch.no_grad():
        f = torch.cat([model(torch.from_numpy(ev[i:i + 25])) for i in range(0, len(ev), 25)]).numpy()
    t = time.time()
    if a.framework == "minquant":
        q = _minquant(a, model, calib, ev)
    elif a.framework == "torch-eager":
        from minquant.frameworks import torch_oracle
        qt = torch_oracle.torch_static_mobilenet_v2(calib, "x86")
        q = torch_oracle.torch_logits(qt, ev)
    elif a.framework == "torch-pt2e":
        from minquant.frameworks.torch_pt2e import pt2e_ptq, run_reference
        conv = pt2e_ptq(mobilenet_v2_imagenet(), calib, batch=20)
        q = np.concatenate([run_reference(conv, ev[i:i + 20]) for i in range(0, len(ev), 20)])
    else:
        from minquant.frameworks.ort_oracle import ort_quantize, ort_runner
        from minquant.frameworks.torch_oracle import export_onnx
        with tempfile.TemporaryDirectory() as d:
            fp32 = export_onnx(model, (1,) + ev.shape[1:], Path(d) / "m.onnx")
            int8 = ort_quantize(fp32, calib, Path(d) / "m.qdq.onnx", "qdq", method="MinMax")
            r = ort_runner(int8)
            q = np.concatenate([r(ev[i:i + 25]) for i in range(0, len(ev), 25)])
    seconds = time.time() - t
    top_f, top_q = f.argmax(1), q.argmax(1)
    k, n = int((top_f == top_q).sum()), len(ev)
    lo, hi = wilson(k, n)
    return dict(key=_key(a), framework=a.framework, calibrator=a.calibrator if a.framework == "minquant" else "",
                weights=a.weights if a.framework == "minquant" else "", calib=a.calib, calib_seed=a.calib_seed,
                batch_size=a.batch_size, score_on=a.score_on, n=n, agree=k / n,
                se=math.sqrt(k / n * (1 - k / n) / n), wilson=[lo, hi], sqnr=float(sqnr_db(f, q)),
                top1=top_q.tolist(), seconds=round(seconds, 1), commit=commit(), date=str(datetime.date.today()),
                cpu=platform.processor() or platform.machine(), load=os.getloadavg()[0],
                command=".venv/bin/python -m benchmarks.int8_mobilenet " + " ".join(a.argv))


def _minquant(a, model, calib, ev):
    import minquant as mq
    from minquant.qat import NearestWeights, adaround

    kw = dict(target="x86", progress=False, calibrator=_calibrator(a.calibrator), batch_size=a.batch_size,
              bias_correction=not a.no_bias_correction, equalize=not a.no_equalize)
    if a.weights == "mse_scale":
        kw["weight_rounding"] = NearestWeights("int8", mse_scale=True)
    if a.weights == "adaround":
        nearest = NearestWeights("int8")
        qm0 = mq.quantize_static(model, calib, weight_rounding=nearest, **kw)
        kw["weight_rounding"] = adaround(qm0, nearest, calib[:32], iterations=200, rows=2048, seed=0,
                                         min_rows_per_input=1.0)
    qm = mq.quantize_static(model, calib, **kw)
    return np.concatenate([qm(ev[i:i + 25]) for i in range(0, len(ev), 25)])


def table(rows) -> str:
    ref = {r["score_on"] + str(r["n"]): r for r in rows if r["key"].startswith("minquant percentile weights=nearest "
                                                                                 "bias_correction=True equalize=True "
                                                                                 "calib=100 seed=0 batch=32")}
    lines = ["| setting | scored on | crops | top-1 agreement % | ± SE | 95 % Wilson | changed vs defaults | "
             "logit SQNR dB | s |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["score_on"], r["framework"] != "minquant", r["key"])):
        base = ref.get(r["score_on"] + str(r["n"]))
        changed = "" if base is None or base is r else str(int((np.array(base["top1"]) != np.array(r["top1"])).sum()))
        lines.append(f"| {r['key'].replace(' on=' + r['score_on'], '')} | {r['score_on']} | {r['n']} | "
                     f"{100 * r['agree']:.1f} | {100 * r['se']:.1f} | {100 * r['wilson'][0]:.1f}–"
                     f"{100 * r['wilson'][1]:.1f} | {changed} | {r['sqnr']:.2f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--framework", choices=FRAMEWORKS, default="minquant")
    ap.add_argument("--calibrator", choices=CALIBRATORS, default="percentile",
                    help="minquant's activation calibrator (percentileP: PercentileObserver(P))")
    ap.add_argument("--weights", choices=WEIGHTS, default="nearest",
                    help="int8 weight rounding: nearest, AdaRound (200 Adam steps per layer on 32 crops), or "
                         "nearest with the MSE-searched weight scale")
    ap.add_argument("--no-bias-correction", action="store_true")
    ap.add_argument("--no-equalize", action="store_true")
    ap.add_argument("--calib", type=int, default=100, help="calibration crops")
    ap.add_argument("--calib-seed", type=int, default=0, help="photo_crops seed of the calibration crops")
    ap.add_argument("--batch-size", type=int, default=32, help="quantize_static's calibration batch size")
    ap.add_argument("--eval", type=int, default=1000, help="eval crops (score-on eval)")
    ap.add_argument("--score-on", choices=("eval", "holdout"), default="eval")
    ap.add_argument("--report", action="store_true", help="only print the table")
    a = ap.parse_args(argv)
    a.argv = argv
    r = None if a.report else run(a)
    rows = json.loads(JSON.read_text()) if JSON.exists() else []     # read after the run: runs may overlap
    rows = [x for x in rows if "key" in x]          # rows of the earlier 200-crop version are dropped
    if r is not None:
        print(json.dumps({k: v for k, v in r.items() if k != "top1"}), flush=True)
        rows = [x for x in rows if x["key"] != r["key"]] + [r]
        atomic_write_text(JSON, json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
