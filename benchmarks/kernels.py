"""Kernel throughput, one thread, one run: minquant's fast qlinear / qconv2d vs torch fp32 and torch int8.

* GEMM: x (256 × 1024) · wᵀ (1024 × 1024) — torch F.linear fp32, torch.ops.quantized.linear (fbgemm,
  prepacked), minquant.kernels.QLinear (weights packed and output stage precomputed once, as torch's prepacked ops)
  with target="fbgemm".
* Every Conv2d of torchvision MobileNetV2 at 224², batch 1, with its real ImageNet weights quantized
  per channel and its real input activations (a photo crop through the float model) quantized per tensor;
  torch.ops.quantized.conv2d (prepacked) vs minquant.kernels.QConv2d.

All three run in this process with 1 thread (torch.set_num_threads(1); OMP/OpenBLAS/Numba threads pinned
by ./run bench), after a warm-up that also triggers Numba compilation; each figure is the median of
``repeats`` timed calls. Every minquant output is also checked equal to torch's int8 output.
"""
from __future__ import annotations

import subprocess
import time
import warnings

import numpy as np

from minquant.lesson.timing import median_ms as _median_ms


def _machine():
    import platform

    from minquant.kernels.arithmetic import describe_cpu
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/RESULTS*.md"], capture_output=True, text=True).stdout.strip()
        commit += " (+ uncommitted changes)" if dirty else ""
    except Exception:
        commit = "unknown"
    return model, platform.python_version(), describe_cpu(), commit


def bench_gemm(repeats=30):
    import torch

    from minquant.affine import choose_qparams, quantize
    from minquant.kernels import QLinear
    from minquant.frameworks import torch_oracle as torch_quant

    rng = np.random.default_rng(0)
    m, k, n = 256, 1024, 1024
    x = np.maximum(rng.standard_normal((m, k)), 0).astype(np.float32)   # post-ReLU-like activations
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)          # bell-shaped, like trained weights
    b = (rng.standard_normal(n) * 0.1).astype(np.float32)
    xs, xz = choose_qparams(x.min(), x.max(), "uint8")
    ws, wz = choose_qparams(w.min(1), w.max(1), "int8", symmetric=True)
    x_q = quantize(x, xs, xz, "uint8")
    w_q = quantize(w, ws, wz, "int8", axis=0)
    y = x @ w.T + b
    ys, yz = choose_qparams(y.min(), y.max(), "uint8")
    layer = QLinear(w_q, ws, wz, b, xs, xz, ys, yz, target="fbgemm")
    packed = layer.packed
    xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
    with torch_quant.engine("fbgemm"):
        tp = torch.ops.quantized.linear_prepack(torch_quant.weight_qtensor(w_q, ws, wz), bt)
        xq_t = torch_quant.to_qtensor(x_q, xs, xz)
        t_int8 = _median_ms(lambda: torch.ops.quantized.linear(xq_t, tp, float(ys), int(yz)), repeats)
        want = torch.ops.quantized.linear(xq_t, tp, float(ys), int(yz)).int_repr().numpy()
    with torch.no_grad():
        t_fp32 = _median_ms(lambda: torch.nn.functional.linear(xt, wt, bt), repeats)
    run = lambda: layer(x_q)  # noqa: E731
    t_mq = _median_ms(run, repeats)
    mism = int((run() != want).sum())
    return dict(shape=f"{m}x{k}x{n}", fp32=t_fp32, int8=t_int8, mq=t_mq, mismatches=mism, n=want.size,
                risky=len(packed.risky), pairs=n * ((k + 1) // 2))


def bench_convs(repeats=20):
    import torch

    from minquant.kernels import QConv2d
    from minquant.data.zoo import mobilenet_v2_conv_cases
    from minquant.frameworks import torch_oracle as torch_quant

    rows = []
    for case in mobilenet_v2_conv_cases(with_bias=True):
        x_q, xs, xz, w_q, ws, wz, b, ys, yz = case["args"]
        kw, conv, xf = case["kwargs"], case["conv"], case["x"]
        s, p, d, g = kw["stride"], kw["padding"], kw["dilation"], kw["groups"]
        layer = QConv2d(w_q, ws, wz, b, xs, xz, ys, yz, **kw, target="fbgemm")
        with torch_quant.engine("fbgemm"):
            tp = torch.ops.quantized.conv2d_prepack(torch_quant.weight_qtensor(w_q, ws, wz),
                                                    None if b is None else torch.from_numpy(b), [s, s], [p, p],
                                                    [d, d], g)
            xq_t = torch_quant.to_qtensor(x_q, xs, xz)
            t_int8 = _median_ms(lambda: torch.ops.quantized.conv2d(xq_t, tp, float(ys), int(yz)), repeats)
            want = torch.ops.quantized.conv2d(xq_t, tp, float(ys), int(yz)).int_repr().numpy()
        xt = torch.from_numpy(xf)
        with torch.no_grad():
            t_fp32 = _median_ms(lambda: conv(xt), repeats)
        run = lambda: layer(x_q)  # noqa: E731
        t_mq = _median_ms(run, repeats)
        mism = int((run() != want).sum())
        w = conv.weight
        rows.append(dict(name=case["name"], shape=f"{xf.shape[1]}x{xf.shape[2]}x{xf.shape[3]} → {w.shape[0]}, "
                                                  f"k{w.shape[2]} s{s} g{g}",
                         fp32=t_fp32, int8=t_int8, mq=t_mq, mismatches=mism, n=want.size))
    return rows


def main(quick=False):
    import os

    import torch
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    model, py, cpu, commit = _machine()
    reps = 5 if quick else 30
    gemm = bench_gemm(reps)
    convs = bench_convs(3 if quick else 20)
    lines = ["## Kernel throughput (issue 2)", "",
             f"Machine: {model}, {os.cpu_count()} cores, Python {py}; {cpu}.  ",
             f"Commit: {commit}; date {time.strftime('%Y-%m-%d')}; one thread (torch.set_num_threads(1), "
             "OMP/OpenBLAS/Numba threads = 1), one run, median of repeated calls after warm-up.  ",
             "Throughput ratio = torch int8 time / minquant time (≥ 1 means minquant is faster). "
             "`mism.` = elements where minquant's output differs from torch int8's (expected 0).", "",
             "### GEMM (uint8 x · int8 wᵀ → uint8, per-channel weights, bias)", "",
             "| shape M×K×N | torch fp32 ms | torch int8 (fbgemm) ms | minquant qlinear ms | vs torch int8 | mism. |",
             "|---|---:|---:|---:|---:|---:|",
             f"| {gemm['shape']} | {gemm['fp32']:.2f} | {gemm['int8']:.2f} | {gemm['mq']:.2f} | "
             f"{gemm['int8'] / gemm['mq']:.2f}× | {gemm['mismatches']} / {gemm['n']} |", "",
             f"Weights: N(0, 0.05²) quantized per channel; {gemm['risky']} of {gemm['pairs']} weight pairs can "
             "saturate int16 and get the correction pass.", "",
             "### Every Conv2d of MobileNetV2, 224², batch 1 (real weights, real activations)", "",
             "| layer | input → out, kernel, stride, groups | torch fp32 ms | torch int8 ms | minquant ms | vs torch int8 | mism. |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in convs:
        lines.append(f"| {r['name']} | {r['shape']} | {r['fp32']:.3f} | {r['int8']:.3f} | {r['mq']:.3f} | "
                     f"{r['int8'] / r['mq']:.2f}× | {r['mismatches']} |")
    tf, ti, tm = (sum(r[k] for r in convs) for k in ("fp32", "int8", "mq"))
    ratios = [r["int8"] / r["mq"] for r in convs]
    lines += [f"| **all {len(convs)} convs** | | **{tf:.2f}** | **{ti:.2f}** | **{tm:.2f}** | **{ti / tm:.2f}×** | "
              f"{sum(r['mismatches'] for r in convs)} |", "",
              f"Per-layer throughput vs torch int8: min {min(ratios):.2f}×, median {np.median(ratios):.2f}×, "
              f"max {max(ratios):.2f}×; layers below 0.5×: {sum(r < 0.5 for r in ratios)}.", ""]
    return "\n".join(lines)
