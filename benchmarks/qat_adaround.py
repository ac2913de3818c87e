"""W4A8 (int4 weights per output channel, uint8 activations) with nearest rounding, AdaRound and QAT (issue 15).

    .venv/bin/python -m benchmarks.qat_adaround --part tiny         # TinyCNN on digits, 5 seeds
    .venv/bin/python -m benchmarks.qat_adaround --part mobilenet    # MobileNetV2 on photo crops
    .venv/bin/python -m benchmarks.qat_adaround --part report       # RESULTS_qat_adaround.md from the two JSONs

Every model is made by ``minquant.quantize_static`` (torch's ``x86`` engine on this CPU, per-channel weights,
percentile calibration, bias correction and cross-layer equalization — the defaults) with a weight rounding
from :mod:`minquant.qat`: ``NearestWeights("int4")`` (PTQ), ``adaround(...)`` (learned up/down rounding, layer
by layer), and quantization-aware training (``FakeQuantModel`` + ``finetune``, LSQ scales) converted back with
``to_quantized()``. W4A8 runs on minquant's int8 kernels (int4 codes are a subset of int8 codes); sizes are
not reported here (packing int4 two per byte is the precision ladder's part of the issue).

TinyCNN: ``tiny_cnn_digits(seed=s)`` for s = 0..4 (each seed its own trained float model, calibration subset,
AdaRound rows and QAT data order); accuracy on the 540 test digits and logit SQNR against the float model.
QAT trains on the 1,257 training digits with labels and the float model's logits (α = 0.5, T = 2).
MobileNetV2 (ImageNet weights): no labels — QAT distils the float model's logits (α = 0) on the calibration
crops; top-1 agreement with fp32 and logit SQNR on held-out crops (``photo_crops(n, split="eval")``).
One torch thread.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pickle
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .provenance import commit as provenance_commit
from minquant.files import atomic_write_text

HERE = Path(__file__).resolve().parent
JSON = {"tiny": HERE / "figures" / "qat_adaround_tiny.json", "mobilenet": HERE / "figures" / "qat_adaround_mobilenet.json"}
RESULTS = HERE / "RESULTS_qat_adaround.md"
TARGET = "x86"


def sqnr(ref, x) -> float:
    ref, x = np.asarray(ref, np.float64), np.asarray(x, np.float64)
    return float(10 * np.log10((ref ** 2).sum() / max(((x - ref) ** 2).sum(), 1e-30)))


def wilson(k: int, n: int, z: float = 1.96) -> list:
    """Wilson score interval of a binomial proportion k / n (95 % for z = 1.96)."""
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(c - h), float(c + h)]


def logits(model, x, batch=50):
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)]).numpy()


def run_batched(qm, x, batch=50):
    return np.concatenate([qm(x[i:i + batch]) for i in range(0, len(x), batch)])


def tiny(args):
    import minquant as mq
    from minquant.data.zoo import tiny_cnn_digits
    from minquant.qat import FakeQuantModel, NearestWeights, adaround, finetune

    rows = []
    for seed in range(args.seeds):
        t0 = time.time()
        model, (x_tr, y_tr, x_te, y_te) = tiny_cnn_digits(seed=seed)
        calib = x_tr[np.random.default_rng(seed).permutation(len(x_tr))[:256]]
        f_te, f_tr = logits(model, x_te), logits(model, x_tr)

        def score(qm):
            out = qm(x_te)
            return dict(acc=float(np.mean(out.argmax(1) == y_te)), sqnr=sqnr(f_te, out))

        r = dict(seed=seed, fp32=dict(acc=float(np.mean(f_te.argmax(1) == y_te)), sqnr=None))
        r["int8"] = score(mq.quantize_static(model, [calib], target=TARGET, progress=False))
        nearest = NearestWeights("int4")
        qm0 = mq.quantize_static(model, [calib], target=TARGET, weight_rounding=nearest, progress=False)
        r["w4a8_nearest"] = score(qm0)
        ada = adaround(qm0, nearest, calib[:128], iterations=args.tiny_ada_iters, rows=2048, seed=seed)
        qa = mq.quantize_static(model, [calib], target=TARGET, weight_rounding=ada, progress=False)
        r["w4a8_adaround"] = score(qa)
        for name, (q, rnd) in (("w4a8_qat", (qm0, nearest)), ("w4a8_adaround_qat", (qa, ada))):
            fq = FakeQuantModel(q, rnd)
            finetune(fq, x_tr, f_tr, y_tr, epochs=args.tiny_qat_epochs, lr=1e-4, alpha=0.5, T=2.0, seed=seed)
            r[name] = score(fq.to_quantized())
        r["seconds"] = time.time() - t0
        rows.append(r)
        print(json.dumps(r), flush=True)
    return dict(rows=rows, seeds=args.seeds, ada_iters=args.tiny_ada_iters, qat_epochs=args.tiny_qat_epochs)


def mobilenet(args):
    import minquant as mq
    from minquant.data.datasets import augment_crops, photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet
    from minquant.qat import FakeQuantModel, NearestWeights, adaround, finetune
    from minquant.quantized.precision import INT8, w4a8

    t_start = time.time()
    timing = {}

    def lap(what, t):
        timing[what] = round(time.time() - t, 1)
        print(f"[{time.time() - t_start:7.1f} s] {what}: {timing[what]} s", flush=True)

    t = time.time()
    model = mobilenet_v2_imagenet()
    calib = photo_crops(args.calib, split="calib", seed=0)
    train = photo_crops(args.qat_crops, split="calib", seed=1)        # QAT's crops: the calibration half too
    if args.qat_extra:      # whole photos outside the benchmark's set (never evaluated on)
        train = np.concatenate([train, photo_crops(args.qat_extra, split="extra", seed=1)])
    if args.qat_augment:    # mixup + colour jitter copies (the teacher is run on them)
        train = np.concatenate([train] + [augment_crops(train, seed=10 + i) for i in range(args.qat_augment)])
    val = photo_crops(args.qat_val, split="calib", seed=2) if args.qat_val else None   # early stop: calib half
    n_eval = max(args.eval, args.eval_final)
    ev = photo_crops(n_eval, split="eval", seed=0)    # its first args.eval crops are photo_crops(args.eval, ...)'s
    from .int8_mobilenet import _float_logits        # the fp32 logits, cached (checked by the inputs' sum)
    f_ev = _float_logits(model, ev, f"eval_{n_eval}_0")
    f_train = _float_logits(model, train, f"qat_train_{args.qat_crops}_{args.qat_extra}_{args.qat_augment}")
    validation = None if val is None else (val, _float_logits(model, val, f"qat_val_{args.qat_val}"))
    lap("float logits", t)

    res = {}

    def score(name, qm, n=args.eval):
        t = time.time()
        out = run_batched(qm, ev[:n], 25)
        agree = out.argmax(1) == f_ev[:n].argmax(1)
        res[name] = dict(agree=float(np.mean(agree)), sqnr=sqnr(f_ev[:n], out), seconds=round(time.time() - t, 1))
        if n > args.eval:       # the first args.eval crops as the other rows, and all n with a 95 % interval
            res[name].update(agree_all=float(np.mean(agree)), n_all=int(n), wilson95=wilson(int(agree.sum()), n),
                             agree=float(np.mean(agree[:args.eval])), sqnr=sqnr(f_ev[:args.eval], out[:args.eval]),
                             sqnr_all=sqnr(f_ev[:n], out))
        print(name, res[name], flush=True)
        return out

    t = time.time()
    ends = ("features.0.0", "classifier.1") if args.int8_ends else ()
    if args.int8_depthwise:     # the 17 depthwise convs (9 weights per channel, one int4 scale each) keep int8
        ends += tuple(n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1)
    ends += tuple(args.int8_also)
    nearest = NearestWeights("int4", mse_scale=args.mse_scale, int8_layers=ends)

    def quantize(rounding):
        if args.group_size:         # the ladder's W4A8 g<N> form: w4a8_* nodes, int4 packed, float16 group scales
            return mq.quantize_precision(model, w4a8(args.group_size), calib, layers={n: INT8 for n in ends},
                                         target=TARGET, weight_rounding=rounding)
        return mq.quantize_static(model, calib, target=TARGET, weight_rounding=rounding, progress=False)

    # the PTQ part (nearest, AdaRound) depends only on these settings: cached, so that QAT recipes can be
    # compared from the same AdaRound model without re-running it
    key = dict(calib=args.calib, eval=args.eval, mse_scale=args.mse_scale, int8_ends=args.int8_ends,
               group_size=args.group_size, ada_samples=args.ada_samples, ada_iters=args.ada_iters,
               ada_rows=args.ada_rows, ada_min_rows=args.ada_min_rows)
    if args.ada_batch_rows != 256:      # (the caches made before the option existed used 256)
        key.update(ada_batch_rows=args.ada_batch_rows)
    if args.int8_depthwise:
        key.update(int8_depthwise=True)
    if args.int8_also:
        key.update(int8_also=list(args.int8_also))
    if args.block:
        key.update(block=True, block_batch=args.block_batch)
    cache = Path(args.ada_cache) if args.ada_cache else None
    cached = pickle.loads(cache.read_bytes()) if cache and cache.exists() else None
    if cached is not None and cached["key"] == key:
        from minquant.quantized.model import load as load_model
        ada, qa = cached["ada"], load_model(cache.with_suffix(".mq"))
        res.update(cached["res"])
        timing.update({f"{k} (cached)": v for k, v in cached["timing"].items()})
        print("PTQ part from", cache, res, flush=True)
    else:
        qm0 = quantize(nearest)
        lap("quantize_static W4A8 nearest", t)
        if not args.skip_nearest_score:
            score("w4a8_nearest", qm0)
        t = time.time()
        if args.block:      # BRECQ-style: the rounding of each block's layers on the block's output
            from minquant.qat.block_reconstruction import block_adaround
            ada = block_adaround(qm0, nearest, calib[:args.ada_samples], iterations=args.ada_iters,
                                 batch=args.block_batch, seed=0, progress=True)
        else:
            ada = adaround(qm0, nearest, calib[:args.ada_samples], iterations=args.ada_iters, rows=args.ada_rows,
                           batch_rows=args.ada_batch_rows, seed=0, min_rows_per_input=args.ada_min_rows,
                           progress=True)
        lap("adaround", t)
        t = time.time()
        qa = quantize(ada)
        lap("quantize_static W4A8 AdaRound", t)
        if cache:       # written before scoring, so that a QAT run can start from it at once
            qa.save(cache.with_suffix(".mq"))
            cache.write_bytes(pickle.dumps(dict(key=key, ada=ada, res=dict(res), timing=dict(timing))))
        score("w4a8_adaround", qa)
        if cache:
            qa.save(cache.with_suffix(".mq"))
            cache.write_bytes(pickle.dumps(dict(key=key, ada=ada, res=dict(res), timing=dict(timing))))
    t = time.time()
    fq = FakeQuantModel(qa, ada)
    # alpha > 0: a hard-label term on the teacher's own top-1 (no ImageNet labels here): the argmax the
    # agreement counts, beside the KL to the whole softened distribution
    hist = finetune(fq, train, f_train, f_train.argmax(1) if args.qat_alpha else None, epochs=args.qat_epochs,
                    lr=args.qat_lr, batch_size=args.qat_batch, T=args.qat_T, alpha=args.qat_alpha, seed=args.qat_seed,
                    scale_lr=args.qat_scale_lr, validation=validation,
                    validate_every=args.qat_val_every, feature_weight=args.qat_feature_weight, progress=True)
    lap("QAT (distillation, label-free)", t)
    qq = fq.to_quantized()
    t = time.time()
    out = score("w4a8_adaround_qat", qq, n_eval)
    lap("evaluate the converted model", t)
    n_fc = n_eval if not fq.exact else min(n_eval, 50)     # exact: the same model by construction — checked
    with torch.no_grad():       # what training's fake-quantized forward says on the same crops
        fq_out = torch.cat([fq(torch.from_numpy(ev[i:i + 25])) for i in range(0, n_fc, 25)]).numpy()
    res["fake_quant_vs_converted"] = dict(argmax_equal=float(np.mean(fq_out.argmax(1) == out[:n_fc].argmax(1))),
                                          sqnr=sqnr(fq_out, out[:n_fc]), n=int(n_fc), exact=fq.exact,
                                          bit_equal=bool(np.array_equal(fq_out, out[:n_fc])))
    print("fake quant vs converted", res["fake_quant_vs_converted"], flush=True)
    res["size_bytes"] = int(qq.size_bytes())
    if args.save:
        qq.save(args.save)
    recon = {k: v for k, v in ada.report.items()}
    return dict(results=res, timing=timing, calib=args.calib, qat_crops=args.qat_crops, eval=args.eval,
                mse_scale=args.mse_scale, int8_ends=args.int8_ends, int8_depthwise=args.int8_depthwise,
                group_size=args.group_size, block=args.block,
                block_batch=args.block_batch, ada_min_rows=args.ada_min_rows, ada_samples=args.ada_samples,
                ada_iters=args.ada_iters, ada_rows=args.ada_rows, qat_epochs=args.qat_epochs, qat_lr=args.qat_lr,
                qat_scale_lr=args.qat_scale_lr, qat_batch=args.qat_batch, qat_T=args.qat_T, qat_alpha=args.qat_alpha,
                ada_batch_rows=args.ada_batch_rows, qat_seed=args.qat_seed, int8_also=list(args.int8_also),
                qat_extra=args.qat_extra, qat_augment=args.qat_augment, qat_val=args.qat_val,
                qat_val_every=args.qat_val_every, qat_samples=int(len(train)),
                qat_feature_weight=args.qat_feature_weight,
                qat_history=hist, adaround_report=recon, total_seconds=round(time.time() - t_start, 1))


def evaluate(args):
    """A saved model (``--load``) on ``--eval-final`` evaluation crops: agreement with fp32 on all of them
    (95 % Wilson interval) and on the first ``--eval`` (the 200 of the other rows)."""
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet
    from minquant.quantized.model import load as load_model

    t0 = time.time()
    n = max(args.eval_final, args.eval)
    ev = photo_crops(n, split="eval", seed=0)
    from .int8_mobilenet import _float_logits        # the fp32 logits, cached (same crops, same model)
    f = _float_logits(mobilenet_v2_imagenet(), ev, f"eval_{n}_0")
    qm = load_model(args.load)
    t = time.time()
    out = run_batched(qm, ev, 25)
    agree = out.argmax(1) == f.argmax(1)
    return dict(model=args.load, n_all=int(n), agree_all=float(agree.mean()), wilson95=wilson(int(agree.sum()), n),
                sqnr_all=sqnr(f, out), n_first=args.eval, agree_first=float(agree[:args.eval].mean()),
                sqnr_first=sqnr(f[:args.eval], out[:args.eval]), size_bytes=int(qm.size_bytes()),
                meta_rounding=str(qm.meta.get("weight_rounding")), run_seconds=round(time.time() - t, 1),
                total_seconds=round(time.time() - t0, 1))


def _ms(v, pct=True):
    v = np.asarray(v, np.float64) * (100 if pct else 1)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"


#: what the runs with the exact forward (2026-12-07, commits 6ea49d5..62832e3, load ≈ 2 on 2 cores) showed
READING_EXACT = [
    "- **Exact-forward QAT, per-channel int4 on the int8 kernels** (`--mse-scale --int8-ends`, no "
    "`--group-size`; the codes are saved and counted two per byte: 2,542,544 bytes, the int4 encoding of "
    "`minquant.sparse`). On an unloaded core a training step (batch 16, one integer run + torch forward and "
    "backward) takes ~4 s, and 200 evaluation crops 1 s — the W4A8 g32 kernels' float group sums take ~2 min (545 ms a crop in the "
    "ladder). "
    "AdaRound 46.5 % / 5.71 dB → QAT (1,024 inputs, 128 steps) **67.0 % / 7.19 dB** (`--tag pc_exact`): the same "
    "as the g32 model's 67.0 % — training now converts without loss, but the model it trains is no better.",
    "- **Depthwise convs in int8** (`--int8-depthwise`: the 17 layers whose 9 weights share one int4 scale): "
    "nearest 50.5 % against 32.0 % with them int4, but after AdaRound + QAT **67.5 % / 7.51 dB** against 67.0 % "
    "/ 7.19 dB — QAT recovers what the depthwise rounding costs; they are not what keeps W4A8 below 75 %. "
    "Keeping the last 1×1 conv (features.18.0, 410k weights) in int8 too: nearest 32.5 % (no gain).",
    "- **4.5× more training inputs** (2,048 calibration-half crops + 256 extra + one augmented copy each = 4,608 "
    "inputs, one epoch of 288 steps; `--tag pc_big_1e-4`): validation loss 0.20 → 0.156 but **68.5 % / 7.57 dB** "
    "on the 200 crops, **63.8 % (60.8–66.7 %)** on 1,000; lr 2e-4 64.0 % / 5.35 dB. The held-out crops are "
    "calibration halves: they improve faster than the evaluation halves.",
    "- **Distillation temperature** (the biggest step this session): the same run at T = 4 (`--qat-T 4`, "
    "`--tag pc_big_T4`) gives **70.0 % / 10.07 dB** on the 200 crops, **66.4 % (63.4–69.3 %) / 9.83 dB on 1,000** "
    "and 65.6 % (62.6–68.5 %) / 9.64 dB on a fresh draw of 1,000 (`benchmarks.int8_mobilenet --score-on eval2 "
    "--load ...`): +2.5 dB and +2.6 points over T = 1. A softer target spreads the loss over the whole logit "
    "vector, and the crops' small top-2 margins need the whole vector right.",
    "- **Layer-wise distillation** (`finetune(feature_weight=2)`, with T = 4: every conv's output pulled "
    "towards the float model's, `--tag pc_big_T4_feat2`): 68.0 % / 10.00 dB — no gain over T = 4 alone.",
    "- **T = 8** (`--tag pc_big_T8`): 71.5 % / 10.01 dB on the 200 crops, but 65.0 % (62.0–67.9 %) / 9.88 dB on "
    "1,000 and 62.8 % / 9.68 dB on the fresh draw — no better than T = 4; T = 4 stays the best model.",
    "- **Twice the steps at T = 4** (2 epochs, 576 steps, `--tag pc_big_T4_2ep`; validation loss 0.157 → 0.125): "
    "72.0 % / 10.18 dB on the 200 crops, 66.0 % (63.0–68.9 %) / 10.03 dB on 1,000, 66.1 % / 9.87 dB on the fresh "
    "draw — the same model as one epoch within noise.",
    "- **Depthwise convs in int8, now at T = 4 on the 4,608 inputs** (`--int8-depthwise`, `--tag dw8_T4`; 2026-12-07, "
    "this CPU, load ≈ 2): AdaRound 56.0 % → **74.0 % / 10.76 dB on the 200 crops, 70.1 % (67.2–72.9 %) / 10.71 dB on "
    "1,000, 68.4 % (65.5–71.2 %) / 10.43 dB on the fresh draw** — +3.7 / +2.8 points over the same recipe with int4 "
    "depthwise (66.4 / 65.6 %), for 32 KB (2,574,656 bytes against 2,542,544). At T = 1 on 1,024 inputs the two "
    "were level (67.5 / 67.0 %): the depthwise layers' error, small beside T = 1's, is one of the larger ones left "
    "once the distillation is right. Their 9 weights per output channel share one scale; in int4 that is 15 levels "
    "for a whole 3×3 filter.",
    "- **More steps or more inputs, int8 depthwise, T = 4**: 2 epochs over the 4,608 inputs (576 steps, "
    "`--tag dw8_T4_2ep`) 70.5 % / 11.21 dB on 200, **70.3 % (67.4–73.1 %) / 11.03 dB on 1,000, 69.2 % / 10.79 dB on "
    "the fresh draw**; one epoch over 9,216 inputs (4,096 calibration-half crops + 512 extra + one augmented copy "
    "each, 576 steps, `--tag dw8_T4_big2`) 71.0 % / 11.15 dB, **69.9 % (67.0–72.7 %) / 10.93 dB on 1,000, 70.0 % "
    "(67.1–72.8 %) / 10.70 dB on the fresh draw** (pooled over the two draws: 1,399 / 2,000 = 70.0 %). Twice the "
    "compute buys +0.2–0.4 dB and no top-1: the held-out calibration-half crops reach 75–84 % (64 crops, loss "
    "0.13 → 0.10) while the evaluation halves stay at 70 %.",
    "- **Run-to-run spread**: the one-epoch int8-depthwise run again with the inputs in another order "
    "(`--qat-seed 1`, `--tag dw8_T4_seed1`): 71.5 % / 10.72 dB on the 200 crops (74.0 % with seed 0), **70.3 % "
    "(67.4–73.1 %) / 10.61 dB on 1,000 (70.1 %), 69.1 % / 10.37 dB on the fresh draw (68.4 %)**. The seed moves "
    "the 200-crop figure by 2.5 points and the 1,000-crop ones by under 1: compare recipes on 1,000 crops.",
    "- **Four more layers in int8** — the pointwise convs whose W4 alone costs the model most (the ladder's per-layer "
    "sensitivity, RESULTS_precision_ladder.md: features.2.conv.0.0, features.14.conv.2, features.16.conv.2, "
    "features.17.conv.0.0; `--int8-also ...`, `--tag dw8_plus4_T4`, 2,775,104 bytes, +200 KB): nearest 56.5 %, "
    "AdaRound 61.5 %, QAT 72.5 % / 11.26 dB on 200, **69.4 % (66.5–72.2 %) / 11.18 dB on 1,000, 67.6 % / 10.94 dB "
    "on the fresh draw** — +0.4 dB, no top-1. What stops W4A8 near 70 % is not one layer's precision.",
    "- **Mostly mixed inputs** (Beyer et al.'s function matching leans on mixup): 1,024 calibration-half crops + 128 "
    "extra + three mixup / colour-jitter copies of each (4,608 inputs, 75 % of them augmented; `--qat-augment 3`, "
    "`--tag dw8_T4_mix3`): 68.5 % / 10.89 dB on 200, **68.5 % (65.6–71.3 %) / 10.81 dB on 1,000, 68.1 % / 10.56 dB on "
    "the fresh draw** — no better than real crops: mixing the same photos adds no new content.",
    "- **Hard labels from the teacher** (`--qat-alpha 0.5`: cross-entropy on the fp32 model's top-1 beside the "
    "T = 4 KL, per-channel int4 depthwise): stopped at step 64 of 288 — validation loss (the KL) 0.56 against 0.27 "
    "and agreement 56 % against 70 % for the plain T = 4 run at the same step. On crops whose top-2 logits are "
    "close the hard label is a noisy target.",
    "- **Longer AdaRound** (1,000 Adam steps per layer instead of 200, 8,192 rows of 64 crops, 512 per step, "
    "`--ada-iters 1000 --ada-rows 8192 --ada-batch-rows 512 --ada-samples 64`; 11 min): per-layer error on its "
    "rows fell further (e.g. features.2.conv.2 1.24 → 0.32 against 0.68 → 0.28) and a median 24 % of a layer's "
    "codes moved (15 % before), but the whole model got worse: **42.0 % / 4.83 dB** against 46.5 % / 5.71 dB. With a few "
    "rows per weight the layer objective is fitted on its calibration rows, not the layer; the QAT run from it "
    "was stopped (QAT, not the AdaRound start, decides the end point here).",
    "- **Where that leaves W4A8**: int4 pointwise convs (97 % of the conv weights) with the first conv, the "
    "depthwise convs and the classifier in int8: **≈ 70 % on 2,000 crops (two independent draws), 10.7–11.0 dB, "
    "2.57 MB** (int8: 3.64 MB, 85 %); all int4 but the ends: 66 %. Still 5 points below 75 %. Every variant "
    "since — 2× the steps, 2× the inputs, mostly mixed inputs, another seed, four more int8 layers — lands at "
    "68.5–70 % on 1,000 crops "
    "while the held-out calibration-half crops (64, noisy) end at 70–78 %: what is missing is varied unlabelled "
    "images, not steps, precision or the rounding start.",
]


#: what the group-wise runs (2026-12-06, commits 25d797a..ae180c5) showed — figures from the sections above
READING_GROUPS = [
    "- **int4 per group of 32 (the ladder's W4A8 g32), unified with AdaRound and QAT.** "
    "`quantize_precision(w4a8(32), weight_rounding=...)` now takes the qat roundings, and `FakeQuantModel` trains "
    "and converts the `w4a8_*` nodes (float16 group scales rounded in the forward, so the converted codes and "
    "dequantized weights are training's bit for bit; tests/test_qat_groups.py). With MSE-clipped group scales and "
    "int8 ends: nearest 25.5 % / 4.48 dB, AdaRound 52.5 % / 5.63 dB, AdaRound + QAT (512 crops × 1 epoch, the "
    "per-channel run's recipe) 67.0 % / 6.42 dB — against 31.0 / 51.0 / 63.5 % per output channel (the nearest "
    "and AdaRound part of both g32 runs is one computation, `--ada-cache`, made by the same command at commit "
    "25d797a with the cache option that 5e3703b committed; 26 min of it AdaRound on the loaded CPU). Per-group "
    "scales help by a few points at most: every difference here is within the ±3.3-point standard error of 200 "
    "crops.",
    "- **More varied inputs + early stopping.** QAT on 384 calibration-half crops + 128 crops of photos outside "
    "the benchmark set (`photo_crops(split=\"extra\")`: scikit-learn's china / flower, matplotlib's Grace Hopper, "
    "scikit-image's cell) + one mixup / colour-jitter copy of each (1,024 inputs, 64 steps), stopped on 64 "
    "held-out calibration-half crops: 66.5 % / 6.75 dB. The validation loss fell at every check "
    "(0.88 → 0.43 → 0.38 → 0.29 → 0.28), so the stop kept the last step: one epoch does not reach the overfitting "
    "the 4-epoch per-channel run showed; a longer run with these inputs was not affordable here (the 64 steps "
    "took 18 min on the shared CPU).",
    "- **Block reconstruction (BRECQ-style, `block_adaround`)** is implemented and tested (TinyCNN: the block's "
    "output error falls below nearest's, held-out digits too), but on MobileNetV2 with 200 Adam steps of 8 crops "
    "per block the first block's output error rose (350 → 375: the soft rounding had not settled when it was "
    "hardened) and a block took ~5 min on the loaded CPU (19 blocks): stopped, not measured further. "
    "The layer-wise AdaRound is already sequential on the quantized inputs (each layer learns on the outputs of "
    "the earlier, already rounded, layers: the paper's asymmetric reconstruction).",
    "- **Training's forward vs the converted model.** Layer by layer, given the integer model's own input codes, "
    "the fake-quantized layers of the AdaRound g32 model give the integer codes except for one code on at most "
    "4·10⁻⁵ of the values (4 crops, every node) — ties of float32 rounding. Over 53 layers these few codes "
    "compound: on the 200 evaluation crops the fake-quantized forward and the converted model have the same top-1 "
    "on 90.0 % (plain recipe) / 93.5 % (varied inputs) of the crops, logits 21.6 / 21.1 dB apart. At W4 the "
    "model is that sensitive, and these crops' float top-2 margins are that small. **Fixed since** (2026-12-07): "
    "`FakeQuantModel(exact=True)`, the default, runs the converted integer model at every step and makes every "
    "fake quantization return its codes (`fake_quantize(codes=)`, the STE / LSQ backward evaluated at the float "
    "value): the forward is the converted model bit for bit, logits included (tests/test_qat_exact.py: TinyCNN "
    "int8 / W4A8 per channel / W4A8 g32 after training, and MobileNetV2 int8 after a QAT step, where the plain "
    "float32 forward differs from the integer model); on MobileNetV2 at batch 16 it adds ~15 % to a training "
    "step (one integer run).",
    "- **torch / ONNX Runtime have no W4A8 convolution** (the ladder's rows): torch's int4 modes (torchao) are "
    "for `nn.Linear` with bf16 / int8-dynamic activations; ONNX Runtime's `MatMulNBits` is a MatMul (here only "
    "the classifier) and quantizes activations at run time per block. There is no framework figure to put "
    "beside these.",
    "- **75 % is not reached**: best 67.0 % = 134 of the 200 crops, 95 % Wilson interval 60.2–73.1 % — the goal "
    "lies outside it, so this is not the crops' noise (66.5 %: 59.7–72.7 %). **On 1,000 evaluation crops** (added "
    "2026-12-07 00:28 UTC, `--part evaluate --load /tmp/w4a8/g32_short.mq --eval-final 1000 --tag g32_short`, commit "
    "90806a5, load ≈ 6): that model gives **61.4 % (95 % Wilson 58.3–64.4 %) / 6.47 dB** — its first 200 crops "
    "reproduce the 67.0 %; the 200-crop figure was on the lucky side. A W4A8 QAT run with the exact forward "
    "(`--qat-crops 256 --qat-extra 64 --qat-augment 1 --qat-val 48 --qat-val-every 10 --tag g32_exact`, from the same "
    "cached AdaRound model) was started at 23:31 and stopped at 00:09 after its first validation check (0.821 / "
    "47.9 %): on the shared CPU each W4A8 step took minutes and it could not finish with its 1,000-crop evaluation "
    "before the deadline. What is left: that run (the exact forward removes the 6.5–10 % top-1 loss at "
    "conversion measured above, not the gap to 75 %), longer QAT on the varied inputs with the early stop, "
    "intermediate-feature distillation, and real, varied unlabelled images — the photos here are ~20 plus 4, and "
    "the evaluation crops are the other halves of the same photos.",
]


def _cpu() -> str:
    from minquant.target import Cpu
    return Cpu.host().name


def _run_tag(path) -> str:
    """The ``--tag`` of a MobileNetV2 run, from its JSON's name (``qat_adaround_mobilenet_<tag>.json``)."""
    return path.stem.removeprefix("qat_adaround_mobilenet").lstrip("_") or "(no tag)"


def report():
    commit = provenance_commit()
    lines = ["# W4A8: nearest rounding vs AdaRound vs quantization-aware training (issue 15)", "",
             f"Report written at commit {commit}, {datetime.date.today()}; CPU `{_cpu()}` "
             f"({platform.machine()}), one torch thread, target `x86` on this CPU (a 2-core machine shared with other "
             "jobs: wall times are loaded). The runs added for the group-wise models record their own commit, date "
             "and load average (below each table).",
             "", "Made by:", "", "```"]
    mobilenet_runs = sorted(HERE.glob("figures/qat_adaround_mobilenet*.json"))
    for path in ([JSON["tiny"]] if JSON["tiny"].exists() else []) + mobilenet_runs + sorted(
            HERE.glob("figures/qat_adaround_eval_*.json")):
        lines.append(json.loads(path.read_text())["command"])
    lines += ["```", ""]
    if JSON["tiny"].exists():
        d = json.loads(JSON["tiny"].read_text())
        rows = d["rows"]
        lines += ["## TinyCNN on digits (540 test images), mean ± std over "
                  f"{len(rows)} seeds", "",
                  "Per seed: its own float TinyCNN (`tiny_cnn_digits(seed=s)`), 256 calibration digits, AdaRound "
                  f"({d['ada_iters']} Adam steps per layer on 2,048 rows of 128 digits), QAT {d['qat_epochs']} "
                  "epochs on the 1,257 training digits (labels + the float logits, α = 0.5, T = 2, Adam lr 1e-4).",
                  "", "| model | accuracy % | logit SQNR vs fp32 (dB) |", "|---|---|---|"]
        names = [("fp32", "fp32"), ("int8", "W8A8 (int8 per channel, the default)"),
                 ("w4a8_nearest", "W4A8 PTQ, nearest rounding"), ("w4a8_adaround", "W4A8 AdaRound"),
                 ("w4a8_qat", "W4A8 QAT (from nearest)"), ("w4a8_adaround_qat", "W4A8 AdaRound + QAT")]
        for key, label in names:
            acc = [r[key]["acc"] for r in rows]
            sq = [r[key]["sqnr"] for r in rows]
            lines.append(f"| {label} | {_ms(acc)} | {'—' if sq[0] is None else _ms(sq, pct=False)} |")
        base = np.array([r["w4a8_nearest"]["acc"] for r in rows])
        lines += ["", "Paired with nearest rounding (same seed), accuracy difference in points: " + "; ".join(
            f"{label} {_ms(np.array([r[key]['acc'] for r in rows]) - base)}" for key, label in names[3:]) + ". "
                  "QAT trains on labels as well as on the float logits, so it may end above the float model's "
                  "accuracy and further from its logits (lower SQNR) — it fine-tunes, it does not only imitate.",
                  f"Compute: {d.get('seconds', 0):.0f} s wall for the {len(rows)} seeds (each: train or load the float "
                  "model, 5 quantizations, 2 AdaRound runs, 2 QAT runs).", ""]
        lines += ["Per seed (accuracy %; fp32 / W8A8 / nearest / AdaRound / QAT / AdaRound + QAT): " + "; ".join(
            f"s{r['seed']}: " + " / ".join(f"{100 * r[k]['acc']:.2f}" for k, _ in names) for r in rows), ""]
    for path in mobilenet_runs:
        d = json.loads(path.read_text())
        res, tm = d["results"], d["timing"]
        rule = ("per-channel scale clipped by the least-squares search (`NearestWeights(\"int4\", mse_scale=True)`)"
                if d.get("mse_scale") else "per-channel scale max|w|/7.5 (`NearestWeights(\"int4\")`)")
        if d.get("group_size"):
            rule = (f"int4 **per group of {d['group_size']}** (the ladder's W4A8 g{d['group_size']}: "
                    f"`quantize_precision(w4a8({d['group_size']}), weight_rounding=...)`, float16 group scales, "
                    "depthwise one group of 9 per channel), group scales "
                    + ("clipped by the least-squares search per group" if d.get("mse_scale") else "max|w|/7.5"))
        if d.get("int8_ends"):
            rule += ('; the first conv and the classifier keep int8 weights '
                     '(`int8_layers=("features.0.0", "classifier.1")`)')
        if d.get("int8_depthwise"):
            rule += "; **the 17 depthwise convs keep int8 weights** (`--int8-depthwise`)"
        tag = _run_tag(path)
        lines += [f"## MobileNetV2 W4A8, run `{tag}` — {rule}", "",
                  f"{d['calib']} calibration crops (`photo_crops({d['calib']}, split=\"calib\")`), {d['eval']} held-out "
                  f"evaluation crops (`split=\"eval\"`). AdaRound: {d['ada_iters']} Adam steps per layer on "
                  f"{d['ada_rows']} sampled output positions of {d['ada_samples']} crops (53 layers). QAT: "
                  f"{d['qat_epochs']} epochs over {d['qat_crops']} other crops of the calibration half "
                  "(`photo_crops(n, split=\"calib\", seed=1)`), batch "
                  f"{d.get('qat_batch', 16)}, Adam lr {d['qat_lr']}"
                  + (f" (scales {d['qat_scale_lr']})" if d.get("qat_scale_lr") else "")
                  + f", cosine decay, loss = KL to the float model's softmax (T = {d.get('qat_T', 1.0):g}; no labels)"
                  + (f" + {d['qat_feature_weight']:g} × the mean relative squared error of every conv output against "
                     "the float model's (`feature_weight`)" if d.get("qat_feature_weight") else "")
                  + (f"; plus {d['qat_extra']} crops of the photos outside the benchmark set (`split=\"extra\"`)"
                     if d.get("qat_extra") else "")
                  + (f"; plus {d['qat_augment']} mixup + colour-jitter cop{'y' if d['qat_augment'] == 1 else 'ies'} "
                     "of those inputs (`augment_crops`, teacher run on them)" if d.get("qat_augment") else "")
                  + (f" — {d['qat_samples']} training inputs" if d.get("qat_samples") else "")
                  + (f"; early stopping on {d['qat_val']} held-out calibration-half crops (`photo_crops(n, "
                     f"split=\"calib\", seed=2)`) every {d['qat_val_every'] or 'epoch'} steps" if d.get("qat_val") else "")
                  + ".", "",
                  f"| model | top-1 agreement with fp32 % ({d['eval']} crops) | logit SQNR (dB) |", "|---|---|---|"]
        for key, label in (("w4a8_nearest", "W4A8 PTQ, nearest rounding"), ("w4a8_adaround", "W4A8 AdaRound"),
                           ("w4a8_adaround_qat", "W4A8 AdaRound + QAT")):
            if key in res:
                lines.append(f"| {label} | {100 * res[key]['agree']:.1f} | {res[key]['sqnr']:.2f} |")
        q = res.get("w4a8_adaround_qat", {})
        if "agree_all" in q:
            lo, hi = q["wilson95"]
            lines += ["", f"The AdaRound + QAT model on {q['n_all']} evaluation crops (the {d['eval']} above and "
                      f"{q['n_all'] - d['eval']} more of the same split): **{100 * q['agree_all']:.1f} %** agreement "
                      f"(95 % Wilson interval {100 * lo:.1f}–{100 * hi:.1f} %), {q['sqnr_all']:.2f} dB."]
        if "fake_quant_vs_converted" in res:
            fc = res["fake_quant_vs_converted"]
            if fc.get("exact"):
                lines += ["", f"Training's forward is the exact one (`FakeQuantModel(exact=True)`: each step runs the "
                          f"integer model): on {fc['n']} evaluation crops its logits and the converted model's are "
                          + ("equal bit for bit" if fc.get("bit_equal") else "**not** equal (a bug)")
                          + f"; converted size {res['size_bytes']:,} bytes (`size_bytes()`)."]
            else:
                lines += ["", f"Training's fake-quantized forward against the converted integer model on the same "
                          f"{fc['n']} crops: equal top-1 on {100 * fc['argmax_equal']:.1f} %, logits {fc['sqnr']:.1f} dB "
                          f"apart; converted size {res['size_bytes']:,} bytes (`size_bytes()`)."]
        checks = [h for h in d.get("qat_history", []) if "val_loss" in h and "step" in h]
        kept = [h for h in d.get("qat_history", []) if "kept_step" in h]
        if checks:
            lines += ["", "Early-stopping checks (step: validation loss / agreement on the held-out calibration "
                      "crops): " + "; ".join(f"{h['step']}: {h['val_loss']:.3f} / {100 * h['val_agree']:.1f} %"
                                              for h in checks)
                      + (f"; kept step {kept[0]['kept_step']}." if kept else ".")]
        lines += ["", "Compute (wall seconds on the loaded machine): " + ", ".join(f"{k} {v}" for k, v in tm.items())
                  + f"; total {d['total_seconds']} s."
                  + (f" Run at commit {d['commit']}, {d['date']}, load average {d['load_average']} (1/5/15 min) at "
                     "its end." if d.get("commit") else ""), ""]
        rr = {k: v for k, v in d["adaround_report"].items() if "skipped" not in v}
        skipped = [k for k, v in d["adaround_report"].items() if "skipped" in v]
        if skipped:
            lines += [f"AdaRound kept nearest rounding for {len(skipped)} layer(s) with fewer rows than "
                      f"{d['ada_min_rows']:g} × their inputs (`min_rows_per_input`): {', '.join(skipped)}.", ""]
        ratio = [v["adaround"] / max(v["nearest"], 1e-30) for v in rr.values()]
        lines += [f"AdaRound's per-layer reconstruction error (mean squared output error on its rows) fell to "
                  f"{np.median(ratio):.2f}× nearest's (median over {len(rr)} layers; range {min(ratio):.2f}–"
                  f"{max(ratio):.2f}); {100 * np.mean([v['changed'] for v in rr.values()]):.1f} % of codes "
                  "moved one step from nearest on average.", ""]
    evals = sorted(HERE.glob("figures/qat_adaround_eval_*.json"))
    if evals:
        lines += ["## Saved models on more evaluation crops", "",
                  "`--part evaluate --load <model> --eval-final N`: the converted model saved by a run above (`--save`) "
                  "on N evaluation crops (`photo_crops(N, split=\"eval\")`, whose first 200 are the 200 above); "
                  "95 % Wilson interval of the agreement. On these crops the float model's top-2 logits are often "
                  "close, so 200 crops move a figure by about ±3 points (one standard error).", "",
                  "| command | crops | agreement % (95 % interval) | SQNR dB | first 200: agreement % / dB | bytes |",
                  "|---|---:|---|---:|---|---:|"]
        for path in evals:
            e = json.loads(path.read_text())
            lo, hi = e["wilson95"]
            lines.append(f"| `{e['command']}` | {e['n_all']} | {100 * e['agree_all']:.1f} ({100 * lo:.1f}–{100 * hi:.1f}) "
                         f"| {e['sqnr_all']:.2f} | {100 * e['agree_first']:.1f} / {e['sqnr_first']:.2f} | "
                         f"{e['size_bytes']:,} |")
        lines.append("")
    if mobilenet_runs:
        runs = [json.loads(path.read_text()) for path in mobilenet_runs]
        best = max(runs, key=lambda d: d["results"].get("w4a8_adaround_qat", {}).get("agree", 0))
        # on 1,000 crops: the saved models scored by --part evaluate, and the runs that scored with --eval-final
        scored = [dict(e, model=f"`{e['model']}`") for e in (json.loads(p.read_text()) for p in evals)]
        scored += [dict(d["results"]["w4a8_adaround_qat"], model=f"the run `{_run_tag(path)}`")
                   for path, d in zip(mobilenet_runs, runs) if "agree_all" in d["results"].get("w4a8_adaround_qat", {})]
        best_1000 = max(scored, key=lambda e: e["agree_all"], default=None)
        lines += ["## Reading (MobileNetV2)", "",
                  f"Best W4A8 top-1 agreement on the 200 crops: {100 * best['results']['w4a8_adaround_qat']['agree']:.1f} % "
                  f"/ {best['results']['w4a8_adaround_qat']['sqnr']:.2f} dB (AdaRound + QAT, `{best['command']}`)"
                  + ("" if best_1000 is None else
                     f"; on {best_1000['n_all']} crops the best is {best_1000['model']}: "
                     f"{100 * best_1000['agree_all']:.1f} % ({100 * best_1000['wilson95'][0]:.1f}–"
                     f"{100 * best_1000['wilson95'][1]:.1f} %) / {best_1000['sqnr_all']:.2f} dB")
                  + ". The issue's goal of ≥ 75 % is **not reached**. What was learned on the way:", "",
                  "- **The PTQ starting point.** Int4 weight scales chosen by the clipped-range search (`--mse-scale`) "
                  "make nearest rounding worse (31.0 % against 42.5 % with max|w|/7.5) but AdaRound from them much "
                  "better: 51.0 % / 5.60 dB against 40.5 % / 3.50 dB (first conv and classifier int8, 32 crops, "
                  "`min_rows_per_input=1`). AdaRound as run here (200 steps per layer on 16–32 crops, against the "
                  "paper's 10,000 steps on 1,024 images) with 16 crops overfits the classifier (16 rows for 1,280 "
                  "inputs: 42.5 → 25.0 %) — hence `min_rows_per_input`.",
                  "- **Longer QAT overfits the photos.** From that 51.0 % start, 1,024 crops × 4 epochs (256 steps, "
                  "lr 2e-4, scales 5e-4; 34 min) lowered the training loss 0.86 → 0.26 but ended at 56.5 % / 3.69 dB, "
                  "while 512 crops × 1 epoch (32 steps, lr 1e-4; 7 min) gave 63.5 % / 6.29 dB. The long run's "
                  "converted model (saved with `--save`) agrees with fp32 on 84.0 % of 150 of its own training crops, "
                  "73.3 % of 150 new crops of the calibration halves (`photo_crops(150, split=\"calib\", seed=7)`) "
                  "and 56.5 % of the evaluation crops: the crops all come from the ~20 scikit-image photos, the "
                  "evaluation crops from the other half of each, so more crops of the same halves add little new "
                  "content and more steps fit those pixels. Label-free QAT still gives the largest single step "
                  "(+12.5 to +37.5 points over its PTQ start in 1–3 short epochs; +5.5 in the long run).",
                  ] + READING_GROUPS + READING_EXACT + [""]
    atomic_write_text(RESULTS, "\n".join(lines))
    print(RESULTS.read_text())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("tiny", "mobilenet", "evaluate", "report"), required=True)
    ap.add_argument("--load", default="", help="--part evaluate: the saved QuantizedModel (from --save)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tiny-ada-iters", type=int, default=500)
    ap.add_argument("--tiny-qat-epochs", type=int, default=2)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--eval", type=int, default=200)
    ap.add_argument("--ada-samples", type=int, default=16)
    ap.add_argument("--ada-iters", type=int, default=200)
    ap.add_argument("--ada-rows", type=int, default=2048)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--qat-crops", type=int, default=256)
    ap.add_argument("--qat-lr", type=float, default=1e-4)
    ap.add_argument("--qat-scale-lr", type=float, default=None, help="finetune(scale_lr=): the scales' own rate")
    ap.add_argument("--qat-batch", type=int, default=16)
    ap.add_argument("--qat-T", type=float, default=1.0, help="distillation temperature")
    ap.add_argument("--qat-alpha", type=float, default=0.0,
                    help="finetune(alpha=): weight of cross-entropy on the fp32 model's top-1 (pseudo-labels)")
    ap.add_argument("--qat-seed", type=int, default=0, help="finetune(seed=): the order of the training inputs")
    ap.add_argument("--int8-also", nargs="*", default=(), metavar="LAYER",
                    help="more layers (module names, e.g. features.18.0) that keep int8 weights")
    ap.add_argument("--ada-batch-rows", type=int, default=256, help="adaround(batch_rows=): rows per Adam step")
    ap.add_argument("--save", default="", help="save the AdaRound + QAT QuantizedModel there")
    ap.add_argument("--mse-scale", action="store_true", help="int4 weight scales by the clipped-range search")
    ap.add_argument("--ada-min-rows", type=float, default=0.0, help="adaround(min_rows_per_input=)")
    ap.add_argument("--int8-ends", action="store_true", help="first conv and classifier keep int8 weights")
    ap.add_argument("--int8-depthwise", action="store_true", help="the depthwise convs keep int8 weights")
    ap.add_argument("--group-size", type=int, default=0,
                    help="int4 weights per group of this many (the ladder's W4A8 g<N>, quantize_precision); 0: per "
                         "output channel (quantize_static)")
    ap.add_argument("--qat-extra", type=int, default=0,
                    help="add this many crops of the photos outside the benchmark set (photo_crops split='extra')")
    ap.add_argument("--qat-augment", type=int, default=0,
                    help="add this many mixup + colour-jitter copies of the QAT inputs (augment_crops)")
    ap.add_argument("--qat-val", type=int, default=0,
                    help="early stopping on this many held-out calibration-half crops (photo_crops seed 2)")
    ap.add_argument("--qat-feature-weight", type=float, default=0.0,
                    help="finetune(feature_weight=): layer-wise distillation (0: logits only)")
    ap.add_argument("--qat-val-every", type=int, default=0, help="finetune(validate_every=): steps between checks")
    ap.add_argument("--block", action="store_true",
                    help="block reconstruction (block_adaround: each block's rounding on its output) instead of "
                         "layer-by-layer AdaRound; --ada-iters steps per block")
    ap.add_argument("--block-batch", type=int, default=8, help="block_adaround(batch=): samples per step")
    ap.add_argument("--skip-nearest-score", action="store_true",
                    help="do not evaluate the nearest-rounding model (measured by another run with the same scales)")
    ap.add_argument("--ada-cache", default="", help="pickle of the nearest / AdaRound part, reused when its "
                    "settings match (QAT recipes compared from one AdaRound model)")
    ap.add_argument("--eval-final", type=int, default=0,
                    help="evaluate the final model on this many eval crops (the first --eval of them as the rest)")
    ap.add_argument("--tag", default="", help="suffix of the MobileNetV2 JSON (several runs side by side)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.part == "report":
        report()
        return
    t = time.time()
    out = {"tiny": tiny, "mobilenet": mobilenet, "evaluate": evaluate}[args.part](args)
    out["command"] = ".venv/bin/python -m benchmarks.qat_adaround " + " ".join(sys.argv[1:] if argv is None else argv)
    out["seconds"] = round(time.time() - t, 1)
    out["load_average"] = [round(v, 2) for v in os.getloadavg()]          # at the end: 1, 5, 15 minutes
    out["commit"] = provenance_commit()
    out["date"] = str(datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    if args.part == "evaluate":
        path = HERE / "figures" / f"qat_adaround_eval_{args.tag or 'model'}.json"
    else:
        path = JSON[args.part] if args.part == "tiny" or not args.tag else JSON["mobilenet"].with_name(
            f"qat_adaround_mobilenet_{args.tag}.json")
    atomic_write_text(path, json.dumps(out, indent=1))
    report()


if __name__ == "__main__":
    main()
