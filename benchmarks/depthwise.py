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


def _capped(isa, f, *args):
    from minquant.kernels.simd import isa_cap
    with isa_cap(isa):
        return f(*args)


def bench(rounds, reps):
    import torch

    from minquant.data.zoo import mobilenet_v2_conv_cases
    from minquant.frameworks import torch_oracle
    from minquant.kernels import QConv2d, qconv2d_reference
    from minquant.kernels.depthwise import Depthwise3x3NHWC
    from minquant.kernels.simd import ISA_AVX2

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
                   "new_ort": lambda f=new_o, x=x_nhwc, o=out_o: f(x, o),
                   "new_ort_avx2": lambda f=new_o, x=x_nhwc, o=out_o: _capped(ISA_AVX2, f, x, o)}
            for f in fns.values():
                f()
            t = interleaved(fns, rounds, reps)
            c, h, w = case["x"].shape[1:]
            macs = want.size * 9
            rows.append(dict(name=case["name"], shape=f"{c}×{h}×{w} s{s}", t=t, macs=macs, mism=mism,
                             clamp=f"{int(new_f.risky.sum())}/{len(new_f.risky)}"))
            print(f"  {case['name']}: " + ", ".join(f"{k} {v[0]:.3f}" for k, v in t.items()), flush=True)
    return rows


def ort_node_times(runs):
    """{torch layer name: (best µs, median µs)} of ONNX Runtime's depthwise QLinearConv nodes in its own
    int8 QOperator MobileNetV2 (``ort_quantize``, one thread), from ONNX Runtime's profiler over ``runs``
    batch-1 runs — kernel time per node, so not interleaved with the other contestants."""
    import json
    import tempfile
    from collections import defaultdict

    import onnxruntime as ort

    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet
    from minquant.frameworks.ort_oracle import ort_quantize
    from minquant.frameworks.torch_oracle import export_onnx

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        fp32 = export_onnx(mobilenet_v2_imagenet(), (1, 3, 224, 224), d / "mnv2.onnx")
        qop = ort_quantize(fp32, photo_crops(16), d / "mnv2_qop.onnx", "qoperator")
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = str(d / "prof")
        sess = ort.InferenceSession(str(qop), so, providers=["CPUExecutionProvider"])
        x = photo_crops(1, split="eval")[:1].astype(np.float32)
        name = sess.get_inputs()[0].name
        for _ in range(runs):
            sess.run(None, {name: x})
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    per_node = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["args"].get("op_name") == "QLinearConv":
            per_node[e["name"]].append(e["dur"])
    out = {}
    for node, durs in per_node.items():   # /features/features.3/conv/conv.1/conv.1.0/Conv_quant… → features.3.conv.1.0
        parts = node.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "conv" and parts[4].startswith("conv."):
            out[f"{parts[1]}.conv.{parts[4].split('.', 1)[1]}"] = (min(durs), float(np.median(durs[5:] or durs)))
    return out


def report(rows, rounds, quick, ort_times):
    from minquant.kernels.simd import ISA_NAMES, host_isa
    model, mhz, _, commit = host()
    lines = [SECTION, "",
             f"Machine: {model}, {os.cpu_count()} cores shared with other work, host instruction set "
             f"{ISA_NAMES[host_isa()]}. Commit {commit}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"load average at the end {os.getloadavg()[0]:.1f} (1 min); command: "
             f"`./run python -m benchmarks.depthwise{' --quick' if quick else ''}`. One thread, {rounds} "
             "interleaved rounds, best call in ms (GOPS = 2·MACs / best time).", "",
             "ORT: ONNX Runtime's own int8 QOperator MobileNetV2 (its quantization tool, per-channel weights), the "
             "node's kernel time from ONNX Runtime's profiler (best of the runs; median in brackets) — measured after "
             "the interleaved rounds, in the same process, not interleaved. "
             "torch int8: fbgemm's depthwise kernel, input handed over channels-last. *today*: `QConv2d` (NCHW in "
             "and out). *new*: `Depthwise3x3NHWC` (minquant/kernels/depthwise.py), input already channels-last, "
             "output channels-last; *fbgemm* target (pairs clamped in the 16-channel blocks that can saturate: "
             "column *clamped blocks*) and *onnxruntime* target (exact). Ratio = torch best / contestant best "
             "(≥ 1: faster than torch). Mismatches: today and new fbgemm vs torch's codes, new onnxruntime vs "
             "`qconv2d_reference(target='onnxruntime')`. Instructions (host AVX512-VNNI): new fbgemm = vpmaddubsw "
             "pairs + vpdpwssd; new ORT = one vpdpbusd per kernel column; *AVX2 code* = the same layer capped at "
             "AVX2 (`isa_cap`): generic vector IR, vpmaddwd products (what a Zen 3 host runs, here on 512-bit "
             "registers since LLVM targets this CPU).", "",
             "| layer | input | ORT (own model) ms | torch ms | today ms | new fbgemm ms | new ORT ms | new ORT, "
             "AVX2 code ms | today vs torch | new fbgemm vs torch | new ORT vs torch | new ORT vs ORT | GOPS new "
             "fbgemm / ORT | clamped blocks | mism. |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = {k: v[0] for k, v in r["t"].items()}
        o = ort_times.get(r["name"])
        o_ms = f"{o[0] / 1e3:.3f} ({o[1] / 1e3:.3f})" if o else "—"
        o_ratio = f"{o[0] / 1e3 / t['new_ort']:.2f}×" if o else "—"
        lines.append(f"| {r['name']} | {r['shape']} | {o_ms} | {t['torch']:.3f} | {t['today']:.3f} | "
                     f"{t['new_fbgemm']:.3f} | {t['new_ort']:.3f} | {t['new_ort_avx2']:.3f} | "
                     f"{t['torch'] / t['today']:.2f}× | "
                     f"{t['torch'] / t['new_fbgemm']:.2f}× | {t['torch'] / t['new_ort']:.2f}× | {o_ratio} | "
                     f"{2 * r['macs'] / (t['new_fbgemm'] * 1e-3) / 1e9:.1f} / "
                     f"{2 * r['macs'] / (t['new_ort'] * 1e-3) / 1e9:.1f} | {r['clamp']} | {sum(r['mism'].values())} |")
    tot = {k: sum(r["t"][k][0] for r in rows) for k in rows[0]["t"]}
    below = {k: sum(r["t"]["torch"][0] / r["t"][k][0] < 0.7 for r in rows) for k in ("today", "new_fbgemm", "new_ort")}
    o_tot = sum(ort_times[r["name"]][0] / 1e3 for r in rows) if all(r["name"] in ort_times for r in rows) else None
    lines += [f"| **all {len(rows)}** | | **{o_tot or float('nan'):.2f}** | **{tot['torch']:.2f}** | "
              f"**{tot['today']:.2f}** | **{tot['new_fbgemm']:.2f}** | **{tot['new_ort']:.2f}** | "
              f"**{tot['new_ort_avx2']:.2f}** | "
              f"**{tot['torch'] / tot['today']:.2f}×** | **{tot['torch'] / tot['new_fbgemm']:.2f}×** | "
              f"**{tot['torch'] / tot['new_ort']:.2f}×** | **{(o_tot or float('nan')) / tot['new_ort']:.2f}×** | | | "
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
    print("ONNX Runtime profile ...", flush=True)
    body = report(rows, rounds, args.quick, ort_node_times(10 if args.quick else 60))
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
