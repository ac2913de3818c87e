"""Per-node time of MobileNetV2 int8 (ONNX Runtime's own QOperator file, batch 1, one thread): minquant's
execution plan channels-last and NCHW, beside ONNX Runtime's own profile (``enable_profiling``), summed by
kind of node — where the time goes, and what is left to win.

    ./run python -m benchmarks.node_profile          # prints, writes benchmarks/RESULTS_node_profile.md

Each minquant node is timed around its kernel call (the table of :func:`minquant.quantized.executor.prepare_kernels`
wrapped), the best of ``REPS`` runs per node; the two layouts are run in turn, round after round. ORT's figures are
the median ``kernel_time`` per node over the same number of runs. On a shared machine the absolute numbers move;
the sums of one run are comparable with each other.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.provenance import commit
from minquant.files import atomic_write_text

REPS = 20
OUT = Path(__file__).resolve().parent / "RESULTS_node_profile.md"


def _kind(node) -> str:
    """A row label: the op, and for a convolution its shape class."""
    if node.op in ("to_nhwc", "to_nchw"):
        return f"transpose ({node.op})"
    if not node.op.startswith("qconv2d"):
        return node.op.removesuffix("_nhwc")
    w = node.params["weight"]
    if node.attrs.groups > 1:
        return "conv depthwise 3×3"
    return "conv 1×1" if w.shape[2:] == (1, 1) else f"conv {w.shape[2]}×{w.shape[3]} (dense)"


def minquant_profile(qm, x, reps=REPS):
    """{layout: {node name: best seconds}} for channels-last and NCHW, interleaved round by round."""
    from minquant.executor import run as run_graph
    times = {True: defaultdict(lambda: 1e9), False: defaultdict(lambda: 1e9)}

    def table(layout):
        def wrap(k):
            def f(n, xs):
                t = time.perf_counter()
                y = k(n, xs)
                times[layout][n.name] = min(times[layout][n.name], time.perf_counter() - t)
                return y
            return f
        return {op: wrap(k) for op, k in qm._kernels.items()}
    tables = {layout: table(layout) for layout in times}
    for _ in range(reps):
        for layout in times:
            qm.channels_last = layout
            run_graph(qm.execution_plan, x, kernels=tables[layout])
    qm.channels_last = True
    return times


def ort_profile(path, x, reps=REPS):
    """{(node name, op type): median µs} from ONNX Runtime's profiler (one thread)."""
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(d) / "p")
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        for _ in range(reps + 5):
            s.run(None, {name: x})
        events = json.loads(Path(s.end_profiling()).read_text())
    per = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per[(e["name"][:-len("_kernel_time")], e["args"].get("op_name"))].append(e["dur"])
    return {k: float(np.median(v[5:] or v)) for k, v in per.items()}


def main():
    import torch
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet
    from minquant.frameworks.ort_oracle import ort_quantize
    from minquant.frameworks.torch_oracle import export_onnx
    from minquant.interop.onnx.importer import from_onnx_quantized
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as d:
        fp32 = export_onnx(mobilenet_v2_imagenet(), (1, 3, 224, 224), Path(d) / "mnv2.onnx")
        qop = ort_quantize(fp32, photo_crops(16), Path(d) / "mnv2_qop.onnx", "qoperator")
        x = np.ascontiguousarray(photo_crops(1, split="eval")[:1])
        qm = from_onnx_quantized(qop)
        qm(x)
        mq = minquant_profile(qm, x)
        ort_t = ort_profile(qop, x)
    plan = {n.name: n for n in qm.execution_plan.nodes}
    orig = {n.name: n for n in qm.graph.nodes}
    by_kind = defaultdict(lambda: [0.0, 0.0, 0])
    for name, n in plan.items():
        k = _kind(n)
        by_kind[k][0] += mq[True][name] * 1e6
        by_kind[k][2] += 1
    for name, n in orig.items():
        by_kind[_kind(n)][1] += mq[False][name] * 1e6
    ort_kind = defaultdict(lambda: [0.0, 0])
    for (_, op), us in ort_t.items():
        ort_kind[op][0] += us
        ort_kind[op][1] += 1
    tot_cl, tot_nchw = sum(mq[True].values()) * 1e6, sum(mq[False].values()) * 1e6
    lines = ["# Per-node profile: MobileNetV2 int8, batch 1, one thread", "",
             f"`./run python -m benchmarks.node_profile` (benchmarks/node_profile.py); commit {commit()}; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {os.getloadavg()[0]:.1f} "
             f"(1 min) on {os.cpu_count()} cores (shared: absolute figures move, compare within the run). "
             f"ONNX Runtime's own QOperator file, run by ORT and imported by minquant (`from_onnx_quantized`); "
             f"minquant: best of {REPS} runs per node, both layouts in turn; ORT: median kernel time per node "
             "(its profiler).", "",
             "## minquant by kind of node (µs, summed)", "",
             "| kind | nodes | channels-last | NCHW |", "|---|---:|---:|---:|"]
    for k, (cl, nc, cnt) in sorted(by_kind.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {k} | {cnt} | {cl:.0f} | {nc:.0f} |")
    lines += [f"| **all nodes** | {len(plan)} | **{tot_cl:.0f}** | **{tot_nchw:.0f}** |", "",
              "## ONNX Runtime by op type (µs, summed)", "", "| op | nodes | µs |", "|---|---:|---:|"]
    for op, (us, cnt) in sorted(ort_kind.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {op} | {cnt} | {us:.0f} |")
    lines += [f"| **all nodes** | {len(ort_t)} | **{sum(ort_t.values()):.0f}** |", "",
              "## minquant node by node (µs)", "", "| node | op (plan) | channels-last | NCHW |", "|---|---|---:|---:|"]
    for name, n in plan.items():
        nc = f"{mq[False][name] * 1e6:.0f}" if name in orig else "—"
        lines.append(f"| {name} | {n.op} ({_kind(n)}) | {mq[True][name] * 1e6:.0f} | {nc} |")
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(OUT, text)


if __name__ == "__main__":
    main()
