"""MobileNetV2's 3×3 depthwise convolutions: torch int8 vs today's QConv2d vs the channels-last kernel
(minquant/kernels/depthwise.py), one thread, timed interleaved.

    ./run python -m benchmarks.depthwise            # rewrites the "Depthwise 3×3" section of RESULTS.md
    ./run python -m benchmarks.depthwise --quick    # smoke run, prints only

The 17 depthwise layers of torchvision's MobileNetV2 at 224², batch 1, real weights and activations
(:func:`minquant.data.zoo.mobilenet_v2_conv_cases`, bias on). Contestants, per layer:

* torch int8 — ``torch.ops.quantized.conv2d`` on prepacked weights, engine fbgemm (its depthwise kernel),
  the input handed over **channels-last** (what fbgemm works on: no conversion inside the timed call);
* ``QConv2d(target="fbgemm")`` — today's path, NCHW in and out (for the 14×14 and 7×7 layers it transposes to
  channels-last and back inside the call);
* ``Depthwise3x3NHWC`` — the new kernel, the input **already channels-last** (N, H, W, C) and the output
  channels-last, for the saturating target (``fbgemm``: pairs clamped in the 16-channel blocks that can
  saturate) and for an exact one (``onnxruntime``: MLAS's arithmetic).

Every contestant's codes are checked: torch's and the fbgemm kernels' must be equal; the onnxruntime
kernel is checked against ``qconv2d_reference`` for its target. GOPS = 2 · multiply-adds / time.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from .kernels import host, interleaved  # noqa: E402

SECTION = "## Depthwise 3×3, channels-last (issue 14)"


def bench(rounds, reps):
    import torch

    from minquant.data.zoo import mobilenet_v2_conv_cases
    from minquant.frameworks import torch_oracle
    from minquant.kernels import QConv2d, qconv2d_reference
    from minquant.kernels.depthwise import Depthwise3x3NHWC

    rows = []
    with torch_oracle.engine("fbgemm"):
        for case in mobilenet_v2_conv_cases(with_bias=True):
            x_q, xs, xz, w_q, ws, wz, b, ys, yz = case["args"]
            kw = case["kwargs"]
            s, p, d, g = kw["stride"], kw["padding"], kw["dilation"], kw["groups"]
            if g == 1:
                continue
            today = QConv2d(w_q, ws, wz, b, xs, xz, ys, yz, **kw, target="fbgemm")
            new_f = Depthwise3x3NHWC.from_qconv2d(today)
            new_o = Depthwise3x3NHWC(w_q, ws, wz, b, xs, xz, ys, yz, stride=s, padding=p, target="onnxruntime")
            tp = torch.ops.quantized.conv2d_prepack(torch_oracle.weight_qtensor(w_q, ws, wz),
                                                    None if b is None else torch.from_numpy(b),
                                                    [s, s], [p, p], [d, d], g)
            xq_t = torch_oracle.to_qtensor(x_q, xs, xz).contiguous(memory_format=torch.channels_last)
            x_nhwc = np.ascontiguousarray(x_q.transpose(0, 2, 3, 1))
            want = torch.ops.quantized.conv2d(xq_t, tp, float(ys), int(yz)).int_repr().numpy()
            want_o = qconv2d_reference(x_q, xs, xz, w_q, ws, wz, b, ys, yz, **kw, target="onnxruntime")
            out_f = np.empty(new_f.out_shape(x_nhwc.shape), np.uint8)
            out_o = np.empty_like(out_f)
            mism = dict(today=int((today(x_q) != want).sum()),
                        fbgemm=int((new_f(x_nhwc, out_f).transpose(0, 3, 1, 2) != want).sum()),
                        ort=int((new_o(x_nhwc, out_o).transpose(0, 3, 1, 2) != want_o).sum()))
            fns = {"torch": lambda xq_t=xq_t, tp=tp: torch.ops.quantized.conv2d(xq_t, tp, float(ys), int(yz)),
                   "today": lambda f=today, x=x_q: f(x),
                   "new_fbgemm": lambda f=new_f, x=x_nhwc, o=out_f: f(x, o),
                   "new_ort": lambda f=new_o, x=x_nhwc, o=out_o: f(x, o)}
            for f in fns.values():
                f()
            t = interleaved(fns, rounds, reps)
            c, h, w = case["x"].shape[1:]
            macs = want.size * 9
            rows.append(dict(name=case["name"], shape=f"{c}×{h}×{w} s{s}", t=t, macs=macs, mism=mism,
                             clamp=f"{int(new_f.risky.sum())}/{len(new_f.risky)}"))
            print(f"  {case['name']}: " + ", ".join(f"{k} {v[0]:.3f}" for k, v in t.items()), flush=True)
    return rows


def report(rows, rounds, quick):
    from minquant.kernels.simd import ISA_NAMES, host_isa
    model, mhz, _, commit = host()
    lines = [SECTION, "",
             f"Machine: {model}, {os.cpu_count()} cores shared with other work, host instruction set "
             f"{ISA_NAMES[host_isa()]}. Commit {commit}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"load average at the end {os.getloadavg()[0]:.1f} (1 min); command: "
             f"`./run python -m benchmarks.depthwise{' --quick' if quick else ''}`. One thread, {rounds} "
             "interleaved rounds, best call in ms (GOPS = 2·MACs / best time).", "",
             "torch int8: fbgemm's depthwise kernel, input handed over channels-last. *today*: `QConv2d` (NCHW in "
             "and out). *new*: `Depthwise3x3NHWC` (minquant/kernels/depthwise.py), input already channels-last, "
             "output channels-last; *fbgemm* target (pairs clamped in the 16-channel blocks that can saturate: "
             "column *clamped blocks*) and *onnxruntime* target (exact). Ratio = torch best / contestant best "
             "(≥ 1: faster than torch). Mismatches: today and new fbgemm vs torch's codes, new onnxruntime vs "
             "`qconv2d_reference(target='onnxruntime')`.", "",
             "| layer | input | torch ms | today ms | new fbgemm ms | new ORT ms | today vs torch | new fbgemm "
             "vs torch | new ORT vs torch | GOPS new fbgemm | clamped blocks | mism. |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = {k: v[0] for k, v in r["t"].items()}
        lines.append(f"| {r['name']} | {r['shape']} | {t['torch']:.3f} | {t['today']:.3f} | {t['new_fbgemm']:.3f} | "
                     f"{t['new_ort']:.3f} | {t['torch'] / t['today']:.2f}× | {t['torch'] / t['new_fbgemm']:.2f}× | "
                     f"{t['torch'] / t['new_ort']:.2f}× | {2 * r['macs'] / (t['new_fbgemm'] * 1e-3) / 1e9:.1f} | "
                     f"{r['clamp']} | {sum(r['mism'].values())} |")
    tot = {k: sum(r["t"][k][0] for r in rows) for k in rows[0]["t"]}
    below = {k: sum(r["t"]["torch"][0] / r["t"][k][0] < 0.7 for r in rows) for k in ("today", "new_fbgemm", "new_ort")}
    lines += [f"| **all {len(rows)}** | | **{tot['torch']:.2f}** | **{tot['today']:.2f}** | "
              f"**{tot['new_fbgemm']:.2f}** | **{tot['new_ort']:.2f}** | **{tot['torch'] / tot['today']:.2f}×** | "
              f"**{tot['torch'] / tot['new_fbgemm']:.2f}×** | **{tot['torch'] / tot['new_ort']:.2f}×** | | | "
              f"{sum(sum(r['mism'].values()) for r in rows)} |", "",
              f"Layers below 0.7× torch: today {below['today']}, new fbgemm {below['new_fbgemm']}, new onnxruntime "
              f"{below['new_ort']}.", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(prog="./run python -m benchmarks.depthwise", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    rounds = 2 if args.quick else 7
    rows = bench(rounds, 1 if args.quick else 5)
    body = report(rows, rounds, args.quick)
    print(body)
    if not args.quick:
        from minquant.files import atomic_write_text
        path = Path(__file__).resolve().parent / "RESULTS.md"
        text = path.read_text()
        pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
        text = pattern.sub(lambda _: body.rstrip() + "\n\n", text) if pattern.search(text) else \
            text.rstrip() + "\n\n" + body.rstrip() + "\n"
        atomic_write_text(path, text)
        print(f"updated {path}")


if __name__ == "__main__":
    main()
