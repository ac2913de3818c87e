"""int8 per-channel MobileNetV2 (issue 15): top-1 agreement with fp32 on many crops, with its interval,
for minquant's quantize_static settings and for torch / ONNX Runtime on the same crops.

    .venv/bin/python -m benchmarks.int8_mobilenet                                  # minquant defaults
    .venv/bin/python -m benchmarks.int8_mobilenet --calibrator mse --calib 300     # one setting changed
    .venv/bin/python -m benchmarks.int8_mobilenet --batch-size 7 --calib-seed 1    # does it hold?
    .venv/bin/python -m benchmarks.int8_mobilenet --framework torch-eager          # torch's eager x86 PTQ
    .venv/bin/python -m benchmarks.int8_mobilenet --framework ort                  # ONNX Runtime QDQ
    .venv/bin/python -m benchmarks.int8_mobilenet --score-on holdout ...           # for CHOOSING a setting
    .venv/bin/python -m benchmarks.int8_mobilenet --score-on holdout --qat-steps 64 --save m.mq   # int8 QAT
    .venv/bin/python -m benchmarks.int8_mobilenet --load m.mq                      # a saved model, scored
    .venv/bin/python -m benchmarks.int8_mobilenet --report                         # the table

Crops: ``photo_crops(calib, split="calib", seed=calib_seed)`` calibrate; they are scored on
``photo_crops(eval, split="eval")`` (default 1 000 crops, seed 0: the other half of every photo) or, with
``--score-on eval2``, on a second draw of eval crops (``photo_crops(eval, split="eval", seed=1)``: other random crops
of the same halves — for confirming, without selection bias, a setting chosen with the first draw in view) or, with
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
CACHE = Path(tempfile.gettempdir()) / "minquant_int8_mobilenet"      # fp32 logits of the scored crops


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
    if a.load:
        return f"minquant load={Path(a.load).name} on={a.score_on}"
    qat = (f" qat={a.qat_steps}x{a.qat_batch} lr={a.qat_lr:g}/{a.qat_scale_lr or a.qat_lr:g}"
           f"/{a.qat_weight_scale_lr:g}{' weights-fixed' if a.qat_weight_lr == 0 else ''} inputs={a.qat_crops}+{a.qat_extra}x{1 + a.qat_augment} "
           f"val={a.qat_val}/{a.qat_val_every}{f' T={a.qat_T:g}' if a.qat_T != 1 else ''}"
           if a.qat_steps else "")
    return (f"minquant {a.calibrator} weights={a.weights} bias_correction={not a.no_bias_correction} "
            f"equalize={not a.no_equalize} calib={a.calib} seed={a.calib_seed} batch={a.batch_size}{qat} "
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
        calib = photo_crops(a.calib, split="calib", seed=a.calib_seed)
        ev = photo_crops(a.eval, split="eval", seed=1 if a.score_on == "eval2" else 0)
    f = _float_logits(model, ev, f"{a.score_on}_{len(ev)}_{a.calib_seed}")
    t = time.time()
    qat = None
    if a.load:
        from minquant.quantized.model import load as load_model
        qm = load_model(a.load)
        q = np.concatenate([qm(ev[i:i + 25]) for i in range(0, len(ev), 25)])
    elif a.framework == "minquant" and a.qat_steps:
        q, qat = _minquant_qat(a, model, calib, ev)
    elif a.framework == "minquant":
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
                command=".venv/bin/python -m benchmarks.int8_mobilenet " + " ".join(a.argv),
                **({} if qat is None else dict(qat=qat)))


def _float_logits(model, x, tag):
    """The fp32 model's logits on ``x`` (cached in the temp folder: a run scores 1 000 crops)."""
    import torch
    path = CACHE / f"fp32_{tag}.npz"
    if path.exists():
        d = np.load(path)
        if d["x_sum"] == np.float64(x.sum(dtype=np.float64)):
            return d["logits"]
    with torch.no_grad():
        f = torch.cat([model(torch.from_numpy(x[i:i + 25])) for i in range(0, len(x), 25)]).numpy()
    CACHE.mkdir(exist_ok=True)
    np.savez(path, logits=f, x_sum=np.float64(x.sum(dtype=np.float64)))
    return f


def _minquant_qat(a, model, calib, ev):
    """Label-free int8 QAT from the defaults' model: distillation from the fp32 logits on crops of the
    calibration halves (seed 1) + crops of the photos outside the benchmark (``split='extra'``) + their
    mixup / colour-jitter copies, early stopping on other calibration-half crops (seed 2); the converted
    model is what training's exact forward computed."""
    import minquant as mq
    import torch
    from minquant.data.datasets import augment_crops, photo_crops
    from minquant.qat import FakeQuantModel, NearestWeights, finetune

    kw = dict(target="x86", progress=False, calibrator=_calibrator(a.calibrator), batch_size=a.batch_size,
              bias_correction=not a.no_bias_correction, equalize=not a.no_equalize)
    rounding = NearestWeights("int8")
    qm0 = mq.quantize_static(model, calib, weight_rounding=rounding, **kw)
    train = photo_crops(a.qat_crops, split="calib", seed=1)
    if a.qat_extra:
        train = np.concatenate([train, photo_crops(a.qat_extra, split="extra", seed=1)])
    if a.qat_augment:
        train = np.concatenate([train] + [augment_crops(train, seed=10 + i) for i in range(a.qat_augment)])
    val = photo_crops(a.qat_val, split="calib", seed=2)
    t_train = _float_logits(model, train, f"qat_train_{a.qat_crops}_{a.qat_extra}_{a.qat_augment}")
    t_val = _float_logits(model, val, f"qat_val_{a.qat_val}")
    fq = FakeQuantModel(qm0, rounding)             # exact: its forward is the converted int8 model
    if a.qat_weight_lr == 0:                       # weights fixed: biases (rate --qat-lr) and scales learn
        for p in fq.weights.values():
            p.requires_grad_(False)
    epochs = max(1, -(-a.qat_steps * a.qat_batch // len(train)))
    keep = np.random.default_rng(0).permutation(len(train))[:min(len(train), a.qat_steps * a.qat_batch)]
    if epochs == 1:         # one epoch of at most qat_steps: a random subset of the inputs
        train, t_train = train[keep], t_train[keep]
    t = time.time()
    hist = finetune(fq, train, t_train, epochs=epochs, lr=a.qat_lr, batch_size=a.qat_batch, T=a.qat_T,
                    scale_lr=a.qat_scale_lr, weight_scale_lr=a.qat_weight_scale_lr, seed=0, validation=(val, t_val), validate_every=a.qat_val_every,
                    progress=True)
    seconds = time.time() - t
    qm = fq.to_quantized()
    if a.save:
        qm.save(a.save)
    q = np.concatenate([qm(ev[i:i + 25]) for i in range(0, len(ev), 25)])
    return q, dict(history=hist, train_inputs=int(len(train)), epochs=epochs, seconds=round(seconds, 1))


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
    ref = {r["score_on"] + str(r["n"]): r for r in rows
           if r["key"] == ("minquant percentile weights=nearest bias_correction=True equalize=True calib=100 seed=0 "
                           f"batch=32 on={r['score_on']}")}
    lines = ["| setting | scored on | crops | top-1 agreement % | ± SE | 95 % Wilson | changed vs defaults | "
             "logit SQNR dB | s |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["score_on"], r["framework"] != "minquant", r["key"])):
        base = ref.get(r["score_on"] + str(r["n"]))
        changed = ("" if base is None or base is r else "—" if "top1" not in base or "top1" not in r
                   else str(int((np.array(base["top1"]) != np.array(r["top1"])).sum())))
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
    ap.add_argument("--score-on", choices=("eval", "eval2", "holdout"), default="eval")
    ap.add_argument("--qat-steps", type=int, default=0,
                    help="label-free int8 QAT from the model (exact forward), at most this many steps of --qat-batch")
    ap.add_argument("--qat-crops", type=int, default=256, help="QAT: calibration-half crops (seed 1)")
    ap.add_argument("--qat-extra", type=int, default=64, help="QAT: crops of the photos outside the benchmark")
    ap.add_argument("--qat-augment", type=int, default=1, help="QAT: mixup + colour-jitter copies of the inputs")
    ap.add_argument("--qat-val", type=int, default=64, help="QAT early stopping: calibration-half crops (seed 2)")
    ap.add_argument("--qat-val-every", type=int, default=8, help="QAT: steps between early-stopping checks")
    ap.add_argument("--qat-lr", type=float, default=5e-5)
    ap.add_argument("--qat-scale-lr", type=float, default=None)
    ap.add_argument("--qat-weight-scale-lr", type=float, default=0.0,
                    help="QAT: the weight scales' rate (0: fixed — the int8 weight scales are ~1e-4, Adam's steps ~lr)")
    ap.add_argument("--qat-weight-lr", type=float, default=None,
                    help="QAT: 0 keeps the weights fixed (biases at --qat-lr and the scales learn); default --qat-lr")
    ap.add_argument("--qat-batch", type=int, default=16)
    ap.add_argument("--qat-T", type=float, default=1.0, help="QAT: distillation temperature")
    ap.add_argument("--save", default="", help="save the (QAT) model there")
    ap.add_argument("--load", default="", help="score a saved QuantizedModel instead of quantizing")
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
