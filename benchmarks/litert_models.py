"""LiteRT (issue 17), one run, one thread: writes benchmarks/RESULTS_litert.md.

    .venv/bin/python -m benchmarks.litert_models            # everything (~10 min on 2 shared cores)
    .venv/bin/python -m benchmarks.litert_models --quick    # smoke run, prints only

1. **Bit-exactness per kernel path.** TinyCNN (digits) and MobileNetV2 (ImageNet weights) quantized by
   minquant's ``quantize_static(target="litert")``, written with ``to_tflite`` and run by the LiteRT interpreter
   (ai-edge-litert) with each ``OpResolverType``; differing logits against minquant under the matching target
   (AUTO / BUILTIN → "litert", BUILTIN_WITHOUT_DEFAULT_DELEGATES → "litert-builtin", BUILTIN_REF → "litert-ref"),
   and how far the paths are from each other.
2. **Three runtimes side by side** on the same MobileNetV2 crops, each with its own quantization recipe: torch
   engine x86 (eager PTQ, torchvision's quantizable MobileNetV2), ONNX Runtime (its own ``quantize_static``,
   QDQ, MinMax, per-channel), LiteRT (minquant's quantization for LiteRT, XNNPACK delegate): top-1 agreement
   with the fp32 model, logit SQNR against fp32, one-thread batch-1 latency (median of interleaved rounds).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

RESOLVERS = {"AUTO": ("xnnpack", "litert"), "BUILTIN": ("builtin+xnnpack", "litert"),
             "BUILTIN_WITHOUT_DEFAULT_DELEGATES": ("builtin", "litert-builtin"),
             "BUILTIN_REF": ("reference", "litert-ref")}


def _nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def section_exact(quick):
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet, tiny_cnn_digits
    from minquant.interop.litert import tflite_bytes
    from minquant.interop.litert.runtime import interpreter, run_tflite
    from minquant.quantized import quantize_static
    from minquant.quantized.model import QuantizedModel
    from minquant.target import Target
    tiny, (x_tr, _, x_te, _) = tiny_cnn_digits()
    cases = [("TinyCNN", tiny, x_tr[:256], x_te[:64] if quick else x_te),
             ("MobileNetV2", mobilenet_v2_imagenet(), photo_crops(8 if quick else 32, split="calib"),
              photo_crops(4 if quick else 64, split="eval"))]
    rows, cross, models = [], [], {}
    for name, model, calib, x in cases:
        t = time.perf_counter()
        qm = quantize_static(model, calib, target="litert", batch_size=16, progress=False)
        data = tflite_bytes(qm)
        print(f"  {name}: quantized + written in {time.perf_counter() - t:.1f} s ({len(data):,} bytes)", flush=True)
        models[name] = (model, qm, data, calib, x)
        outs = {}
        for resolver, (path, fw) in RESOLVERS.items():
            mine = QuantizedModel(qm.graph, Target(fw, qm.target.cpu))(x)
            got = run_tflite(interpreter(data, path), _nhwc(x), path)
            outs[resolver] = got
            rows.append((name, resolver, fw, got.size, int((got != mine).sum()),
                         float(np.abs(got - mine).max())))
        for a, b in (("AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES"), ("AUTO", "BUILTIN_REF"),
                     ("BUILTIN_WITHOUT_DEFAULT_DELEGATES", "BUILTIN_REF")):
            d = outs[a] != outs[b]
            cross.append((name, a, b, outs[a].size, int(d.sum()), int((outs[a].argmax(1) != outs[b].argmax(1)).sum())))
    return rows, cross, models


def _median_latency(fns, x1, rounds, reps):
    """Median over ``rounds`` interleaved rounds of each fn's per-call time (``reps`` calls per round)."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            fn(x1)
            t = time.perf_counter()
            for _ in range(reps):
                fn(x1)
            times[k].append((time.perf_counter() - t) / reps)
    return {k: float(np.median(v)) for k, v in times.items()}


def section_runtimes(models, quick, workdir):
    import torch
    from minquant.frameworks.ort_oracle import ort_quantize, ort_session
    from minquant.frameworks.torch_oracle import export_onnx, torch_logits, torch_static_mobilenet_v2
    from minquant.interop.litert.runtime import interpreter
    from minquant.quantized.comparison import sqnr_db
    torch.set_num_threads(1)
    model, qm, data, calib, x = models["MobileNetV2"]
    model.eval()
    ref = torch_logits(model, x)
    top_ref = ref.argmax(1)
    # torch x86: torchvision's quantizable MobileNetV2, eager PTQ with the default x86 qconfig
    tq = torch_static_mobilenet_v2(calib, "x86", batch=len(calib))
    # ONNX Runtime: its own static quantization of the fp32 export (QDQ, MinMax, per channel), one thread
    fp32 = export_onnx(model, (1, 3, 224, 224), workdir / "mnv2_fp32.onnx")
    qdq = ort_quantize(fp32, calib, workdir / "mnv2_qdq.onnx", "qdq", method="MinMax", pre_process=True)
    sess = ort_session(str(qdq))
    iname = sess.get_inputs()[0].name
    # LiteRT: the .tflite minquant wrote, XNNPACK delegate (AUTO), one thread
    it = interpreter(data, "xnnpack")
    d_in, d_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

    def run_torch(xb):
        with torch.no_grad():
            return tq(torch.from_numpy(xb)).numpy()

    def run_ort(xb):
        return sess.run(None, {iname: xb})[0]

    def run_litert(xb):
        it.set_tensor(d_in, _nhwc(xb))
        it.invoke()
        return it.get_tensor(d_out).copy()

    def run_fp32(xb):
        with torch.no_grad():
            return model(torch.from_numpy(xb)).numpy()
    fns = {"torch fp32": run_fp32, "torch x86 (eager PTQ)": run_torch, "ONNX Runtime (QDQ)": run_ort,
           "LiteRT XNNPACK (minquant .tflite)": run_litert}
    rows = []
    logits = {k: np.concatenate([fn(np.ascontiguousarray(x[i:i + 1])) for i in range(len(x))]) for k, fn in fns.items()}
    lat = _median_latency(fns, np.ascontiguousarray(x[:1]), 3 if quick else 9, 2 if quick else 5)
    for k in fns:
        lg = logits[k]
        rows.append((k, float((lg.argmax(1) == top_ref).mean()), sqnr_db(ref, lg), lat[k] * 1e3))
    return rows, len(x)


def write(rows, cross, rt_rows, n_eval, quick, seconds):
    from minquant.target import Cpu
    lines = ["# LiteRT: export, bit-exactness per kernel path, three runtimes side by side (issue 17)", "",
             f"Made by `.venv/bin/python -m benchmarks.litert_models{' --quick' if quick else ''}` on "
             f"{datetime.date.today()} ({seconds:.0f} s), one thread everywhere. CPU: {Cpu.host().describe()}; "
             "ai-edge-litert 2.3.0, tflite 2.18.0 (schema), torch, onnxruntime as pinned in requirements.txt.", "",
             "## 1. minquant's .tflite run by the LiteRT interpreter, per kernel path", "",
             "`quantize_static(model, calib, target=\"litert\")`, `to_tflite`, then the interpreter with each "
             "`experimental_op_resolver_type` (num_threads=1) against `QuantizedModel(graph, Target(fw))` — "
             "float32 logits compared with `!=` (so the DEQUANTIZE at the end is compared too).", "",
             "| model | OpResolverType | minquant target | logits | differing | max abs diff |",
             "|---|---|---|---|---|---|"]
    for name, resolver, fw, n, bad, mx in rows:
        lines.append(f"| {name} | {resolver} | `{fw}` | {n:,} | **{bad}** | {mx:g} |")
    lines += ["", "How far apart the paths are (the same file, two resolvers):", "",
              "| model | path A | path B | logits | differing | top-1 flips |", "|---|---|---|---|---|---|"]
    for name, a, b, n, d, flips in cross:
        lines.append(f"| {name} | {a} | {b} | {n:,} | {d:,} | {flips} |")
    lines += ["", f"## 2. MobileNetV2 under three runtimes ({n_eval} photo crops, batch 1, one thread)", "",
              "Each runtime's own quantization recipe on the same 32 calibration crops (photo_crops split "
              "'calib'): torch — torchvision's quantizable MobileNetV2 (ReLU for ReLU6), default x86 qconfig "
              "(histogram observers); ONNX Runtime — `quantize_static` MinMax, QDQ, per-channel, after "
              "`quant_pre_process`; LiteRT — minquant's `quantize_static(target=\"litert\")` (percentile "
              "calibration, bias correction, LiteRT's symmetric [−127, 127] weights, no equalization). "
              "Evaluated on the 'eval' crops (photos, not ImageNet: low agreement is expected). Agreement = top-1 equal to the fp32 model's; SQNR of the "
              "logits against fp32; latency = median over interleaved rounds (2 shared cores: compare ratios "
              "within this table, not across runs).", "",
              "| runtime | top-1 agreement with fp32 | logit SQNR (dB) | latency (ms) |", "|---|---|---|---|"]
    for k, agree, sq, ms in rt_rows:
        lines.append(f"| {k} | {agree:.1%} | {sq:.1f} | {ms:.1f} |")
    lines += ["", "What each LiteRT path computes: docs/quantization.md, step 7d."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run; prints, writes nothing")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print("1. bit-exactness per kernel path", flush=True)
    rows, cross, models = section_exact(args.quick)
    for r in rows:
        print("  ", r)
    print("2. three runtimes", flush=True)
    with tempfile.TemporaryDirectory() as d:
        rt_rows, n_eval = section_runtimes(models, args.quick, Path(d))
    for r in rt_rows:
        print("  ", r)
    text = write(rows, cross, rt_rows, n_eval, args.quick, time.perf_counter() - t0)
    if args.quick:
        print(text)
        return 0
    from minquant.files import atomic_write
    out = Path(__file__).resolve().parent / "RESULTS_litert.md"
    with atomic_write(out, "w") as f:
        f.write(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
