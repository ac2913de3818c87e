"""Whole-model quantization (issue 3), one run, one thread: writes benchmarks/RESULTS_models.md.

    .venv/bin/python -m benchmarks.quantize_models            # everything (~15 min on 2 cores)
    .venv/bin/python -m benchmarks.quantize_models --quick    # smoke run, prints only

Sections, in the order the issue asks for them:

1. **Bit-exactness** of :func:`minquant.interop.torch.quantized_import`: torch eager-mode quantized TinyCNN
   (QuantWrapper, default qconfig), torchvision quantizable MobileNetV2 (ImageNet weights) and ResNet18
   (seeded random init), engines x86 and qnnpack: logits that differ from ``qmodel(x)``.
2. **Seed TinyCNN on digits**: fp32 vs minquant static int8 test accuracy (540 images) and size.
3. **MobileNetV2, ImageNet weights**: calibrate on 100 photo crops (``split="calib"``), evaluate on 200
   disjoint crops (``split="eval"``): top-1 agreement with fp32 and logit SQNR, for minquant's default,
   an ablation from torch's recipe to minquant's default, torch eager x86 PTQ (torchvision's quantizable
   model, fuse_model, default x86 qconfig) and ONNX Runtime ``quantize_static`` (QDQ, per-channel).
4. **Latency**, batch 1 and 32: minquant int8 vs torch fp32 / int8 (x86) and ONNX Runtime fp32 / int8.

Everything runs with torch.set_num_threads(1) and OMP/OpenBLAS/MKL/Numba threads = 1 (set below before
NumPy loads).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from minquant.frameworks.ort_oracle import ort_quantize, ort_runner  # noqa: E402
from minquant.lesson.timing import median_ms as _median_ms  # noqa: E402
from minquant.frameworks.torch_oracle import (export_onnx, torch_eager_ptq,  # noqa: E402
                                              torch_static_tinycnn as torch_tiny_ptq)
from minquant.files import atomic_write_text  # noqa: E402

warnings.filterwarnings("ignore")


def _sqnr(f, q):
    from minquant.quantized.comparison import sqnr_db
    return sqnr_db(f, q)


def _agree(f, q):
    return float((np.asarray(f).argmax(1) == np.asarray(q).argmax(1)).mean())


# ------------------------------------------------------------------------------------------------------
# torch recipes
# ------------------------------------------------------------------------------------------------------
def torchvision_ptq(arch, engine, calib, batch=25):
    import torch
    from torchvision.models.quantization import resnet18

    from minquant.data.zoo import mobilenet_v2_imagenet
    torch.backends.quantized.engine = engine
    torch.manual_seed(0)
    m = mobilenet_v2_imagenet(quantizable=True) if arch == "mobilenet_v2" else resnet18(weights=None,
                                                                                          quantize=False).eval()
    m.fuse_model()
    return torch_eager_ptq(m, engine, calib, batch=batch)


def torch_run(m, x, batch=50):
    import torch
    with torch.no_grad():
        return np.concatenate([m(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def mq_run(qm, x, batch=25):
    return np.concatenate([qm(x[i:i + batch]) for i in range(0, len(x), batch)])


# ------------------------------------------------------------------------------------------------------
# ONNX Runtime recipe
# ------------------------------------------------------------------------------------------------------
def ort_models(model, shape, calib, workdir, method="MinMax"):
    """(fp32 path, int8 QDQ per-channel path): torch.onnx.export + onnxruntime.quantization.quantize_static
    (``method`` calibration on ``calib``, QUInt8 activations, QInt8 per-channel weights)."""
    fp32 = export_onnx(model, shape, Path(workdir) / "model.onnx")
    int8 = ort_quantize(fp32, calib, Path(workdir) / "model_int8.onnx", "qdq", method=method, pre_process=True)
    return fp32, int8


# ------------------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------------------
def section_bit_exact(quick):
    import torch

    from minquant.data.datasets import photo_crops
    from minquant.interop.torch import from_torch_quantized
    from minquant.data.zoo import tiny_cnn_digits
    model, (x_tr, _, x_te, _) = tiny_cnn_digits()
    photos_c, photos_e = photo_crops(8, split="calib"), photo_crops(4 if quick else 16, split="eval")
    rows = []
    for engine in ("x86", "qnnpack"):
        cases = [("TinyCNN (QuantWrapper, fused)", lambda: torch_tiny_ptq(model, x_tr[:256], engine), x_te, (1, 1, 28, 28)),
                 ("MobileNetV2 (ImageNet weights)", lambda: torchvision_ptq("mobilenet_v2", engine, photos_c),
                  photos_e, (1, 3, 224, 224)),
                 ("ResNet18 (seeded random init)", lambda: torchvision_ptq("resnet18", engine, photos_c), photos_e,
                  (1, 3, 224, 224))]
        for name, build, x, shape in cases:
            qmodel = build()
            qm = from_torch_quantized(qmodel, shape, engine=engine)
            torch.backends.quantized.engine = engine
            ref = torch_run(qmodel, x)
            out = mq_run(qm, x, batch=4 if shape[1] == 3 else 100)
            rows.append((name, engine, qm.target, len(x), int((out != ref).sum()), out.size,
                         float(np.abs(out - ref).max())))
    lines = ["## 1. from_torch_quantized: bit-exactness with torch eager-mode quantized models", "",
             "Torch model converted with fuse → prepare → calibrate → convert under the engine; minquant runs "
             "the imported weights and qparams with the matching emulation. Logits compared with "
             "`np.array_equal` (tests: tests/test_quantize_torch_import.py).", "",
             "| model | engine | target | images | logits differing | max abs diff |", "|---|---|---|---:|---:|---:|"]
    for name, engine, em, n, bad, size, mx in rows:
        lines.append(f"| {name} | {engine} | {em} | {n} | {bad} / {size} | {mx:.3g} |")
    return "\n".join(lines), rows


def section_tiny(quick):
    from minquant.quantized import quantize_static
    from minquant.data.zoo import tiny_cnn_digits
    model, (x_tr, y_tr, x_te, y_te) = tiny_cnn_digits()
    f = torch_run(model, x_te)
    acc_f = float((f.argmax(1) == y_te).mean())
    t = time.perf_counter()
    qm = quantize_static(model, x_tr[:256], progress=False)
    t_q = time.perf_counter() - t
    q = qm(x_te)
    acc_q = float((q.argmax(1) == y_te).mean())
    tq_m = torch_tiny_ptq(model, x_tr[:256], "x86")
    tq_out = torch_run(tq_m, x_te)
    acc_t = float((tq_out.argmax(1) == y_te).mean())
    fp32 = qm.fp32_param_bytes()
    lines = ["## 2. Seed TinyCNN on digits (540 test images)", "",
             f"minquant `quantize_static(model, x_train[:256])` with the defaults ({qm.meta['calibrator']}, "
             f"per-channel weights, reduce_range={qm.meta['reduce_range']!r}, bias correction), target="
             f"{qm.target!r}; quantization took {t_q:.1f} s.", "",
             "| model | test accuracy | Δ vs fp32 (points) | top-1 agreement | logit SQNR dB | bytes |",
             "|---|---:|---:|---:|---:|---:|",
             f"| fp32 | {100 * acc_f:.2f}% | | | | {fp32:,} (parameters) |",
             f"| minquant static int8 | {100 * acc_q:.2f}% | {100 * (acc_q - acc_f):+.2f} | {100 * _agree(f, q):.1f}% | "
             f"{_sqnr(f, q):.1f} | {qm.size_bytes():,} (`size_bytes()`, {fp32 / qm.size_bytes():.2f}× smaller) |",
             f"| torch x86 PTQ (default qconfig) | {100 * acc_t:.2f}% | {100 * (acc_t - acc_f):+.2f} | "
             f"{100 * _agree(f, tq_out):.1f}% | {_sqnr(f, tq_out):.1f} | |", "",
             "```", qm.summary(), "```"]
    return "\n".join(lines), dict(acc_f=acc_f, acc_q=acc_q, ratio=fp32 / qm.size_bytes())


def section_mobilenet(quick):
    import torch

    from minquant.data.datasets import photo_crops
    from minquant.quantized import compare, quantize_static
    from minquant.interop.torch.fx_import import from_torch
    from minquant.data.zoo import mobilenet_v2_imagenet
    n_cal, n_eval = (24, 16) if quick else (100, 200)
    calib, ev = photo_crops(n_cal, split="calib"), photo_crops(n_eval, split="eval")
    fm = mobilenet_v2_imagenet()
    f = torch_run(fm, ev)
    g = from_torch(fm, (1, 3, 224, 224))
    rows = []

    def add(label, q, note=""):
        rows.append((label, _agree(f, q), _sqnr(f, q), note))
        print(f"  {label}: agreement {100 * rows[-1][1]:.1f}%, SQNR {rows[-1][2]:.2f} dB", flush=True)

    configs = [
        ("minquant, torch's recipe: histogram, 7-bit activations, no bias correction, no equalization",
         dict(calibrator="histogram", reduce_range="activations", bias_correction=False, equalize=False)),
        ("  + percentile calibrator",
         dict(calibrator="percentile", reduce_range="activations", bias_correction=False, equalize=False)),
        ("  + 7-bit weights instead of 7-bit activations",
         dict(calibrator="percentile", reduce_range="weights", bias_correction=False, equalize=False)),
        ("  + bias correction", dict(equalize=False)),
        ("  + activation-aware cross-layer equalization = **minquant default**", dict()),
        ("minquant default, calibrator → mse", dict(calibrator="mse")),
        ("minquant default, calibrator → minmax", dict(calibrator="minmax")),
        ("minquant default, calibrator → histogram (torch's)", dict(calibrator="histogram")),
        ("minquant default, target='minquant' (exact int32 accumulation, 8-bit weights and activations)",
         dict(target="minquant")),
    ]
    if quick:
        configs = configs[4:5]
    default_qm = None
    for label, kw in configs:
        t = time.perf_counter()
        qm = quantize_static(g, calib, batch_size=25, progress=False, **kw)
        t_q = time.perf_counter() - t
        add(label, mq_run(qm, ev), f"quantize {t_q:.0f} s")
        if not kw:
            default_qm = qm
    tq_m = torchvision_ptq("mobilenet_v2", "x86", calib)
    torch.backends.quantized.engine = "x86"
    add("torch eager x86 PTQ (quantizable MobileNetV2: ReLU6→ReLU, fuse_model, default x86 qconfig)",
        torch_run(tq_m, ev))
    ort_note = ""
    for method in ("MinMax", "Percentile"):
        try:
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                _, int8 = ort_models(fm, (1, 3, 224, 224), calib, d, method=method)
                add(f"ONNX Runtime quantize_static (QDQ, per-channel, {method} calibration)", ort_runner(int8)(ev),
                    f"quantize {time.perf_counter() - t0:.0f} s")
        except Exception as e:  # pragma: no cover
            ort_note += f" ONNX Runtime {method} failed: {type(e).__name__}: {e}."
    rep = compare(g, default_qm, ev[:32], batch_size=8)
    d = next(r for r in rows if "default**" in r[0])
    t = next(r for r in rows if r[0].startswith("torch"))
    o = max((r for r in rows if r[0].startswith("ONNX")), key=lambda r: r[2], default=None)
    lines = ["## 3. MobileNetV2 with ImageNet weights: minquant vs torch x86 PTQ vs ONNX Runtime", "",
             f"Calibration: {n_cal} crops of `photo_crops(split='calib')`; evaluation: {n_eval} disjoint crops "
             "(`split='eval'`). Reference: torchvision's fp32 MobileNetV2 with its ImageNet weights. "
             "Top-1 agreement = argmax equal to fp32's; SQNR = 10·log10(Σf² / Σ(f − q)²) over all logits.", "",
             "| quantizer | top-1 agreement with fp32 | logit SQNR dB | note |", "|---|---:|---:|---|"]
    for label, a, s, note in rows:
        lines.append(f"| {label} | {100 * a:.1f}% | {s:.2f} | {note} |")
    versus = f"minquant's default vs torch x86 PTQ: {100 * (d[1] - t[1]):+.1f} points of agreement, {d[2] - t[2]:+.2f} dB"
    if o is not None:
        versus += f"; vs the better ONNX Runtime row: {100 * (d[1] - o[1]):+.1f} points, {d[2] - o[2]:+.2f} dB"
    lines += ["", versus + "." + ort_note, "",
              "Worst layers of minquant's default (compare(), 32 eval crops):", "", "```", rep.table(12), "```"]
    return "\n".join(lines), rows


def section_latency(quick):
    import torch

    from minquant.data.datasets import photo_crops
    from minquant.quantized import quantize_static
    from minquant.data.zoo import mobilenet_v2_imagenet, tiny_cnn_digits
    torch.set_num_threads(1)
    model, (x_tr, _, x_te, _) = tiny_cnn_digits()
    fm = mobilenet_v2_imagenet()
    calib = photo_crops(8 if quick else 32, split="calib")
    x_big = photo_crops(32, split="eval")
    cases = [("TinyCNN", model, x_te, x_tr[:256], lambda: torch_tiny_ptq(model, x_tr[:256], "x86"), (1, 1, 28, 28)),
             ("MobileNetV2", fm, x_big, calib, lambda: torchvision_ptq("mobilenet_v2", "x86", calib),
              (1, 3, 224, 224))]
    rows = []
    for name, m, x, cal, tbuild, shape in cases:
        qm = quantize_static(m, cal, batch_size=16, progress=False)
        tq_m = tbuild()
        torch.backends.quantized.engine = "x86"
        runners = [("minquant int8", lambda b: qm(b)),
                   ("torch fp32", lambda b: torch_run(m, b)),
                   ("torch int8 (x86)", lambda b: torch_run(tq_m, b))]
        tmp = tempfile.TemporaryDirectory()
        try:
            fp32, int8 = ort_models(m, shape, cal[:16], tmp.name)
            runners += [("ONNX Runtime fp32", ort_runner(fp32)), ("ONNX Runtime int8 (QDQ)", ort_runner(int8))]
        except Exception as e:  # pragma: no cover
            print("ORT skipped:", e)
        for batch in (1, 32):
            b = np.ascontiguousarray(x[:batch])
            reps = (3 if quick else 20) if batch == 1 else (2 if quick else 5)
            if name == "MobileNetV2" and batch == 32:
                reps = 2 if quick else 3
            for label, fn in runners:
                ms = _median_ms(lambda: fn(b), reps)
                rows.append((name, batch, label, ms))
                print(f"  {name} batch {batch} {label}: {ms:.2f} ms", flush=True)
        tmp.cleanup()
    lines = ["## 4. Latency, one thread (median of repeated runs after a warm-up)", "",
             "minquant int8 = `quantize_static` default (target='fbgemm'), the whole forward pass including "
             "quantize/dequantize; torch int8 = eager x86 PTQ model; ONNX Runtime: CPU provider, 1 intra-op thread.",
             "", "| model | batch | runtime | ms / batch | ms / image | vs minquant int8 |", "|---|---:|---|---:|---:|---:|"]
    base = {(n, b): ms for n, b, lab, ms in rows if lab == "minquant int8"}
    for n, b, lab, ms in rows:
        lines.append(f"| {n} | {b} | {lab} | {ms:.2f} | {ms / b:.2f} | {base[(n, b)] / ms:.2f}× |")
    lines += ["", "Last column: minquant's time divided by the runtime's (above 1: that runtime is faster)."]
    return "\n".join(lines), rows


def main(argv=None):
    import torch
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, print only")
    ap.add_argument("--sections", default="1,2,3,4", help="comma-separated subset of 1,2,3,4")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    from benchmarks.kernels import _machine
    model, pyv, cpu, commit = _machine()
    header = ["# Whole-model quantization results (issue 3)", "",
              f"Machine: {model}, {os.cpu_count()} cores, Python {pyv}, torch {torch.__version__}; {cpu}.  ",
              f"Commit: {commit}; date {datetime.date.today().isoformat()}; one thread everywhere; produced by "
              f"`.venv/bin/python -m benchmarks.quantize_models`.", ""]
    parts = []
    funcs = {"1": section_bit_exact, "2": section_tiny, "3": section_mobilenet, "4": section_latency}
    for s in args.sections.split(","):
        t = time.perf_counter()
        print(f"[section {s}]", flush=True)
        text, _ = funcs[s](args.quick)
        print(text, flush=True)
        print(f"[section {s}: {time.perf_counter() - t:.0f} s]", flush=True)
        parts.append(text)
    out = "\n".join(header) + "\n" + "\n\n".join(parts) + "\n"
    if not args.quick and not args.no_write:
        path = Path(__file__).resolve().parent / "RESULTS_models.md"
        atomic_write_text(path, out)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
