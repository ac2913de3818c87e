"""Int8 kernels on the CPU's own instructions (issue 14): one thread, ratios measured side by side.

    ./run bench                  # everything, rewrites the "Int8 SIMD kernels" section of RESULTS.md
    ./run bench --quick          # smoke run (few rounds), prints only

Every comparison runs in this one process with one thread (torch.set_num_threads(1); OMP/OpenBLAS/MKL/Numba
threads = 1, set by ./run bench and below; ONNX Runtime intra/inter-op threads = 1). The contestants of
one table are timed **interleaved**: ``ROUNDS`` rounds, each timing every contestant ``reps`` times in
turn, so that load from other processes hits them alike. The figure is the best call (``best``); the median
of all calls is printed beside it to show the noise. Warm-up (and Numba compilation) happens before the
timed rounds. Each table says which instruction set each minquant figure used (the layer's ``plan``).

1. GEMM 256×1024×1024, u8 × s8 → u8 (per-channel weights N(0, 0.05²), bias): torch int8 (fbgemm,
   ``torch.ops.quantized.linear`` on prepacked weights) vs ``minquant.kernels.QLinear`` for an exact target
   (``fbgemm`` on this host) and a pair-saturating one (``fbgemm@avx2``, what fbgemm computes without VNNI),
   also capped to the lower instruction sets (``isa_cap``) and on the float32 BLAS fallback.
2. The 52 convolutions of torchvision's MobileNetV2 at 224², batch 1 (real weights and activations):
   torch int8 (fbgemm engine, prepacked) vs ``QConv2d(target="fbgemm")``.
3. Whole models, batch 1 (and 32 per image for MobileNetV2): ONNX Runtime int8 running its *own* quantized
   QOperator model (``onnxruntime.quantization.quantize_static``, per-channel, uint8 activations) vs minquant
   running that same file (``from_onnx_quantized``: ORT's arithmetic on this host, logits compared bit for
   bit), with the int8 SIMD kernels and with them off (``isa_cap(ISA_NONE)``: the float32 BLAS paths).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from .provenance import commit  # noqa: E402

SECTION = "## Int8 SIMD kernels (issue 14)"

#: vpdpbusd zmm per cycle on the host (Intel Golden Cove server cores — Sapphire Rapids — issue it on
#: ports 0 and 5; AMD Zen 4 runs one 512-bit op per cycle as two 256-bit halves)
VNNI_PER_CYCLE = {"intel": 2, "amd": 1}


def interleaved(fns: dict, rounds: int, reps: int) -> dict:
    """{name: (best ms, median ms)} over ``rounds`` rounds of ``reps`` calls of every function in turn."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            for _ in range(reps):
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    return {k: (1e3 * min(v), 1e3 * float(np.median(v))) for k, v in times.items()}


def host():
    """(model name, MHz from /proc/cpuinfo, vendor key, commit) of this machine."""
    model, mhz, vendor = "unknown CPU", 0.0, "intel"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("cpu MHz") and not mhz:
                    mhz = float(line.split(":", 1)[1])
                elif line.startswith("vendor_id"):
                    vendor = "amd" if "AMD" in line else "intel"
    except OSError:
        pass
    return model, mhz, vendor, commit()


def _gops(m, k, n, ms):
    return 2.0 * m * k * n / (ms * 1e-3) / 1e9


# --------------------------------------------------------------------------------------------- 1. GEMM
def bench_gemm(rounds, reps):
    import torch

    from minquant.affine import choose_qparams, quantize
    from minquant.frameworks import torch_oracle
    from minquant.kernels import QLinear, qlinear_reference
    from minquant.kernels.simd import ISA_AVX2, ISA_AVX512BW, ISA_NONE, host_isa, isa_cap

    rng = np.random.default_rng(0)
    m, k, n = 256, 1024, 1024
    x = np.maximum(rng.standard_normal((m, k)), 0).astype(np.float32)   # post-ReLU-like activations
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)          # bell-shaped, like trained weights
    b = (rng.standard_normal(n) * 0.1).astype(np.float32)
    xs, xz = choose_qparams(x.min(), x.max(), "uint8")
    ws, wz = choose_qparams(w.min(1), w.max(1), "int8", symmetric=True)
    x_q = quantize(x, xs, xz, "uint8")
    w_q = quantize(w, ws, wz, "int8", axis=0)
    w7 = np.clip(w_q, -64, 63).astype(np.int8)                          # 7-bit: no pair can saturate
    y = x @ w.T + b
    ys, yz = choose_qparams(y.min(), y.max(), "uint8")
    with torch_oracle.engine("fbgemm"):
        tp = torch.ops.quantized.linear_prepack(torch_oracle.weight_qtensor(w_q, ws, wz), torch.from_numpy(b))
        xq_t = torch_oracle.to_qtensor(x_q, xs, xz)
        torch_out = torch.ops.quantized.linear(xq_t, tp, float(ys), int(yz)).int_repr().numpy()

    def torch_int8():
        return torch.ops.quantized.linear(xq_t, tp, float(ys), int(yz))

    rows = []   # (label, target, weights, cap, layer)
    exact = QLinear(w_q, ws, wz, b, xs, xz, ys, yz, target="fbgemm")
    sat = QLinear(w_q, ws, wz, b, xs, xz, ys, yz, target="fbgemm@avx2")
    sat7 = QLinear(w7, ws, wz, b, xs, xz, ys, yz, target="fbgemm@avx2")
    best = host_isa()
    for label, layer, wq, cap in (
            ("exact (fbgemm, this host)", exact, w_q, best),
            ("saturating (fbgemm@avx2), 8-bit weights", sat, w_q, best),
            ("saturating (fbgemm@avx2), 7-bit weights", sat7, w7, best),
            ("exact, capped at AVX-512BW", exact, w_q, ISA_AVX512BW),
            ("saturating, capped at AVX-512BW", sat, w_q, ISA_AVX512BW),
            ("exact, capped at AVX2", exact, w_q, ISA_AVX2),
            ("saturating, capped at AVX2", sat, w_q, ISA_AVX2),
            ("exact, float32 BLAS fallback", exact, w_q, ISA_NONE)):
        if cap > best:
            continue
        rows.append((label, layer, wq, cap))
    fns = {"torch": torch_int8}
    info = {}
    for label, layer, wq, cap in rows:
        def run(layer=layer, cap=cap):
            with isa_cap(cap):
                return layer(x_q)
        fns[label] = run
        with isa_cap(cap):
            plan = layer.plan.describe()
        got = run()
        want = torch_out if layer is exact else qlinear_reference(
            x_q, xs, xz, wq, ws, wz, b, ys, yz, target=layer.arith)
        info[label] = (plan, int((got != want).sum()), "torch" if layer is exact else "qlinear_reference")
    with torch_oracle.engine("fbgemm"):
        for f in fns.values():      # warm-up (Numba compilation, caches)
            f()
            f()
        t = interleaved(fns, rounds, reps)
    return dict(shape=(m, k, n), times=t, info=info, risky=len(sat.packed.risky), pairs=n * k // 2)


def _depthwise_path(ow):
    """Which depthwise kernel a MobileNetV2 3×3 layer (one channel per group) runs on this host."""
    from minquant.kernels import conv
    from minquant.kernels.simd import ISA_NONE, host_isa
    lanes = "16-lane vfmadd + 16-lane output stage" if host_isa() != ISA_NONE else "Numba loops"
    layout = "channels-last" if ow <= conv._NHWC_MAX_OW else "NCHW planes"
    return f"depthwise, {layout}: float32 exact, {lanes}"


# -------------------------------------------------------------------------------------------- 2. convs
def bench_convs(rounds, reps):
    import torch

    from minquant.data.zoo import mobilenet_v2_conv_cases
    from minquant.frameworks import torch_oracle
    from minquant.kernels import QConv2d

    rows = []
    with torch_oracle.engine("fbgemm"):
        for case in mobilenet_v2_conv_cases(with_bias=True):
            x_q, xs, xz, w_q, ws, wz, b, ys, yz = case["args"]
            kw, xf = case["kwargs"], case["x"]
            s, p, d, g = kw["stride"], kw["padding"], kw["dilation"], kw["groups"]
            layer = QConv2d(w_q, ws, wz, b, xs, xz, ys, yz, **kw, target="fbgemm")
            tp = torch.ops.quantized.conv2d_prepack(torch_oracle.weight_qtensor(w_q, ws, wz),
                                                    None if b is None else torch.from_numpy(b), [s, s], [p, p],
                                                    [d, d], g)
            xq_t = torch_oracle.to_qtensor(x_q, xs, xz)
            want = torch.ops.quantized.conv2d(xq_t, tp, float(ys), int(yz)).int_repr().numpy()
            mism = int((layer(x_q) != want).sum())
            fns = {"torch": lambda xq_t=xq_t, tp=tp: torch.ops.quantized.conv2d(xq_t, tp, float(ys), int(yz)),
                   "minquant": lambda layer=layer, x_q=x_q: layer(x_q)}
            for f in fns.values():
                f()
            t = interleaved(fns, rounds, reps)
            w = case["conv"].weight
            macs = w.shape[0] * w.shape[1] * w.shape[2] * w.shape[3] * want.shape[2] * want.shape[3]
            rows.append(dict(name=case["name"], shape=f"{xf.shape[1]}x{xf.shape[2]}x{xf.shape[3]} → {w.shape[0]}, "
                                                      f"k{w.shape[2]} s{s} g{g}",
                             torch=t["torch"], mq=t["minquant"], mism=mism, n=want.size, macs=macs,
                             plan=layer.plan.describe() if g == 1 else _depthwise_path(want.shape[3])))
    return rows


# ------------------------------------------------------------------------------------------- 3. models
def bench_models(rounds, quick):
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet, tiny_cnn_digits
    from minquant.frameworks.ort_oracle import ort_quantize, ort_runner
    from minquant.frameworks.torch_oracle import export_onnx
    from minquant.interop.onnx.importer import from_onnx_quantized
    from minquant.kernels.simd import ISA_NONE, isa_cap

    tiny, (x_tr, _, x_te, _) = tiny_cnn_digits()
    out = []
    with tempfile.TemporaryDirectory() as d:
        for name, model, shape, calib, ev, batches in (
                ("TinyCNN", tiny, (1, 1, 28, 28), x_tr[:64], x_te[:32], (1,)),
                ("MobileNetV2", mobilenet_v2_imagenet(), (1, 3, 224, 224), photo_crops(8 if quick else 16),
                 photo_crops(32, split="eval"), (1, 32))):
            fp32 = export_onnx(model, shape, Path(d) / f"{name}.onnx")
            qop = ort_quantize(fp32, calib, Path(d) / f"{name}_qop.onnx", "qoperator")
            ort = ort_runner(qop)
            qm = from_onnx_quantized(qop)
            for batch in batches:
                xb = np.ascontiguousarray(ev[:batch])

                def mq_nchw(xb=xb):       # the same model, run NCHW (no channels-last regions)
                    qm.channels_last = False
                    try:
                        return qm(xb)
                    finally:
                        qm.channels_last = True

                def mq_plain(xb=xb):
                    with isa_cap(ISA_NONE):
                        return mq_nchw(xb)
                fns = {"ONNX Runtime int8 (QOperator)": lambda xb=xb: ort(xb),
                       "minquant int8 (int8 SIMD, channels-last)": lambda xb=xb: qm(xb),
                       "minquant int8 (int8 SIMD, NCHW)": mq_nchw,
                       "minquant int8 (float32 paths)": mq_plain}
                same = all(bool(np.array_equal(ort(xb), f(xb))) for f in list(fns.values())[1:3])
                for f in fns.values():
                    f()
                    f()
                reps = 10 if batch == 1 else 2
                if name == "TinyCNN":
                    reps = 50
                t = interleaved(fns, rounds, 2 if quick else reps)
                out.append(dict(name=name, batch=batch, times=t, same=same))
                print(f"  {name} batch {batch}: " + ", ".join(f"{k} {v[0]:.2f} ms" for k, v in t.items()), flush=True)
    return out


# --------------------------------------------------------------------------------------------- report
def main(quick=False):
    import torch

    from minquant.kernels.simd import ISA_NAMES, host_isa
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    model, mhz, vendor, commit = host()
    rounds = 2 if quick else 7
    print("GEMM ...", flush=True)
    gemm = bench_gemm(rounds, 2 if quick else 5)
    print("MobileNetV2 convs ...", flush=True)
    convs = bench_convs(rounds, 1 if quick else 3)
    print("models ...", flush=True)
    models = bench_models(rounds, quick)
    m, k, n = gemm["shape"]
    ipc = VNNI_PER_CYCLE[vendor]
    limit = ipc * 16 * 4 * 2 * mhz / 1e3      # instructions/cycle × 16 lanes × 4 MACs × 2 ops × GHz
    lines = [SECTION, "",
             f"Machine: {model}, {os.cpu_count()} cores (shared with other work: see the medians), "
             f"{mhz:.0f} MHz in /proc/cpuinfo; host int8 instruction set: {ISA_NAMES[host_isa()]}.  ",
             f"Commit {commit}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the end of "
             f"the run {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores; command: "
             f"`./run bench{' --quick' if quick else ''}` (benchmarks/kernels.py).  ",
             f"One thread everywhere; contestants of a table timed interleaved, {rounds} rounds; **best** call "
             "reported, the median of all calls beside it (their gap is the noise of the shared machine). "
             "Ratio = torch (or ONNX Runtime) best time / minquant best time: ≥ 1 means minquant is faster.", "",
             f"Host limit for u8×s8: {ipc} vpdpbusd zmm / cycle × 16 lanes × 4 multiply-adds × 2 ops × "
             f"{mhz / 1e3:.2f} GHz = **{limit:.0f} GOPS** (at the /proc/cpuinfo clock; with turbo the core runs "
             "faster, so a measured figure can exceed it). The vpmaddubsw pair paths need two multiply "
             "instructions per 4 bytes, so their limit is half of that; AVX2 (ymm) a quarter.", "",
             f"### GEMM {m}×{k}×{n} (uint8 x · int8 wᵀ → uint8, per-channel weights, bias)", "",
             "| contestant | instructions | best ms | median ms | GOPS (best) | vs torch int8 | mism. |",
             "|---|---|---:|---:|---:|---:|---:|"]
    t = gemm["times"]
    tb = t["torch"][0]
    lines.append(f"| torch int8 (fbgemm, prepacked) | fbgemm's own (AVX512-VNNI here) | {tb:.3f} | {t['torch'][1]:.3f} | "
                 f"{_gops(m, k, n, tb):.0f} | 1.00× | — |")
    for label, (plan, mism, ref) in gemm["info"].items():
        b_, md = t[label]
        lines.append(f"| minquant {label} | {plan} | {b_:.3f} | {md:.3f} | {_gops(m, k, n, b_):.0f} | "
                     f"{tb / b_:.2f}× | {mism} vs {ref} |")
    lines += ["", f"{gemm['risky']} of {gemm['pairs']} weight pairs can saturate int16 (8-bit weights): the "
              "saturating target then needs the vpmaddubsw pair instructions; with 7-bit weights (minquant's "
              "default where a target saturates) nothing can saturate and vpdpbusd gives the same integers.", "",
              "### Every Conv2d of MobileNetV2, 224², batch 1 (torch int8 = fbgemm engine, prepacked)", "",
              "| layer | input → out, kernel, stride, groups | minquant path | torch best ms | minquant best ms "
              "(median) | vs torch int8 | GOPS | mism. |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in convs:
        lines.append(f"| {r['name']} | {r['shape']} | {r['plan']} | {r['torch'][0]:.3f} | {r['mq'][0]:.3f} "
                     f"({r['mq'][1]:.3f}) | {r['torch'][0] / r['mq'][0]:.2f}× | "
                     f"{2 * r['macs'] / (r['mq'][0] * 1e-3) / 1e9:.0f} | {r['mism']} |")
    ti, tm = sum(r["torch"][0] for r in convs), sum(r["mq"][0] for r in convs)
    dense = [r for r in convs if "depthwise" not in r["plan"]]
    dw = [r for r in convs if "depthwise" in r["plan"]]
    ratios = [r["torch"][0] / r["mq"][0] for r in convs]
    lines += [f"| **all {len(convs)} convs** | | | **{ti:.2f}** | **{tm:.2f}** | **{ti / tm:.2f}×** | | "
              f"{sum(r['mism'] for r in convs)} |", "",
              f"Dense (groups = 1, int8 SIMD): torch {sum(r['torch'][0] for r in dense):.2f} ms, minquant "
              f"{sum(r['mq'][0] for r in dense):.2f} ms ({sum(r['torch'][0] for r in dense) / sum(r['mq'][0] for r in dense):.2f}×); "
              f"depthwise: torch {sum(r['torch'][0] for r in dw):.2f} ms, minquant {sum(r['mq'][0] for r in dw):.2f} ms "
              f"({sum(r['torch'][0] for r in dw) / sum(r['mq'][0] for r in dw):.2f}×). Per layer: min "
              f"{min(ratios):.2f}×, median {np.median(ratios):.2f}×, max {max(ratios):.2f}×; below 0.7×: "
              f"{sum(x < 0.7 for x in ratios)}.", ""] + model_table(models)
    return "\n".join(lines)


MODEL_TABLE = "### Whole models (ONNX Runtime's own int8 QOperator file; minquant runs the same file)"
MODEL_TABLE_END = "Ratio in the model table: ORT best / contestant best (≥ 1: faster than ONNX Runtime int8)."


def model_table(models, note=None) -> list:
    """The whole-model table (3.) as markdown lines, from :data:`MODEL_TABLE` to :data:`MODEL_TABLE_END`."""
    lines = [MODEL_TABLE, ""] + ([note, ""] if note else []) + [
             "| model | batch | contestant | best ms | median ms | ms / image | vs ORT int8 | logits equal to ORT |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for r in models:
        base = r["times"]["ONNX Runtime int8 (QOperator)"][0]
        for label, (b_, md) in r["times"].items():
            eq = "—" if label.startswith("ONNX") else ("yes" if r["same"] else "**no**")
            lines.append(f"| {r['name']} | {r['batch']} | {label} | {b_:.2f} | {md:.2f} | {b_ / r['batch']:.2f} | "
                         f"{base / b_:.2f}× | {eq} |")
    return lines + ["", MODEL_TABLE_END, ""]


def models_only(quick=False):
    """Only the whole-model table (``./run bench --models-only``), with its own provenance line: the rest of
    the section keeps the commit it names."""
    import torch
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    rounds = 2 if quick else 7
    models = bench_models(rounds, quick)
    note = (f"Re-measured alone by `./run bench --models-only`: commit {commit()}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the end of the run "
            f"{os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores; {rounds} interleaved rounds, one thread.")
    return "\n".join(model_table(models, note))
