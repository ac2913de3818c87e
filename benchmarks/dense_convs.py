"""The dense convolutions of MobileNetV2 int8 at batch 1, channels-last, one thread: minquant layer by layer
beside ONNX Runtime's own nodes and torch int8 (fbgemm), interleaved round by round.

    ./run python -m benchmarks.dense_convs          # prints, writes benchmarks/RESULTS_dense_convs.md
    ./run python -m benchmarks.dense_convs --quick  # a few rounds, prints only

The 35 groups = 1 convolutions (the first 3×3, stride 2, and the 34 1×1) of ONNX Runtime's own QOperator file
(``ort_quantize``, per-channel int8 weights, uint8 activations), as minquant runs them in that model's
channels-last plan (``qconv2d_nhwc``: the kernel table of the imported model called on each node's real input)
and as ONNX Runtime runs them in its session (its profiler's ``kernel_time`` per node). torch int8: the same
shapes from torchvision's MobileNetV2 (``mobilenet_v2_conv_cases``: real weights and activations, quantized per
channel), ``torch.ops.quantized.conv2d`` on prepacked weights (fbgemm engine) and channels-last input.

Each round times every minquant layer and every torch layer (best of two calls each), then runs the ORT
session once; each figure is the best over the rounds, so that load from other processes hits all three alike.
GOPS count 2 operations per multiply-add.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from .kernels import VNNI_PER_CYCLE, host  # noqa: E402

ROUNDS = 100
OUT = Path(__file__).resolve().parent / "RESULTS_dense_convs.md"


def _best(f, n=2):
    best = 1e9
    for _ in range(n):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def collect():
    """(layers, ORT session, ORT input, onnx node name of each layer): minquant's dense conv nodes of the imported
    QOperator MobileNetV2, each with its real channels-last input, and the ORT session of the same file."""
    import onnx
    import onnxruntime as ort

    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet
    from minquant.executor import run as run_graph
    from minquant.frameworks.ort_oracle import ort_quantize
    from minquant.frameworks.torch_oracle import export_onnx
    from minquant.interop.onnx.importer import from_onnx_quantized
    from minquant.quantized.executor import _prepare_qconv

    d = tempfile.mkdtemp()
    fp32 = export_onnx(mobilenet_v2_imagenet(), (1, 3, 224, 224), Path(d) / "mnv2.onnx")
    qop = ort_quantize(fp32, photo_crops(16), Path(d) / "mnv2_qop.onnx", "qoperator")
    x = np.ascontiguousarray(photo_crops(1, split="eval")[:1])
    qm = from_onnx_quantized(qop)
    inputs = {}
    table = dict(qm._kernels.items())
    conv = table["qconv2d_nhwc"]

    def capture(n, xs):
        inputs[n.name] = xs[0].copy()
        return conv(n, xs)
    table["qconv2d_nhwc"] = capture
    run_graph(qm.execution_plan, x, kernels=table)
    out_to_node = {nd.output[0]: nd.name for nd in onnx.load(str(qop)).graph.node}
    layers = []
    for n in qm.execution_plan.nodes:
        if n.op == "qconv2d_nhwc" and n.attrs.groups == 1:
            layers.append(dict(node=n, x=inputs[n.name], layer=_prepare_qconv(n, qm.target),
                               ort_name=out_to_node[n.name]))
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(d) / "p")
    sess = ort.InferenceSession(str(qop), so, providers=["CPUExecutionProvider"])
    return layers, sess, x, qm._kernels["qconv2d_nhwc"]


def torch_layers():
    """[(callable, weight shape)] of torchvision's MobileNetV2 groups = 1 convs on fbgemm, channels-last."""
    import torch

    from minquant.data.zoo import mobilenet_v2_conv_cases
    from minquant.frameworks import torch_oracle
    out = []
    for case in mobilenet_v2_conv_cases(with_bias=True):
        x_q, xs, xz, w_q, ws, wz, b, ys, yz = case["args"]
        kw = case["kwargs"]
        if kw["groups"] != 1:
            continue
        s, p, dl = kw["stride"], kw["padding"], kw["dilation"]
        with torch_oracle.engine("fbgemm"):
            tp = torch.ops.quantized.conv2d_prepack(torch_oracle.weight_qtensor(w_q, ws, wz), torch.from_numpy(b)
                                                    if b is not None else None, [s, s], [p, p], [dl, dl], 1)
        xq_t = torch_oracle.to_qtensor(x_q, xs, xz).contiguous(memory_format=torch.channels_last)
        out.append((lambda xq_t=xq_t, tp=tp, ys=ys, yz=yz: torch.ops.quantized.conv2d(xq_t, tp, float(ys), int(yz)),
                    w_q.shape))
    return out


def measure(rounds):
    import torch
    from minquant.frameworks import torch_oracle
    torch.set_num_threads(1)
    layers, sess, x, kernel = collect()
    tl = torch_layers()
    assert len(tl) == len(layers) and all(tuple(w) == tuple(L["node"].params["weight"].shape) for (_, w), L
                                          in zip(tl, layers)), "torch and ONNX layers out of step"
    name = sess.get_inputs()[0].name
    mq = [1e9] * len(layers)
    th = [1e9] * len(layers)
    calls = [(lambda n=L["node"], xi=L["x"]: kernel(n, [xi])) for L in layers]
    with torch_oracle.engine("fbgemm"):
        for f in calls + [f for f, _ in tl]:
            f()
        for _ in range(5):
            sess.run(None, {name: x})
        for _ in range(rounds):
            for i, f in enumerate(calls):
                mq[i] = min(mq[i], _best(f))
            for i, (f, _) in enumerate(tl):
                th[i] = min(th[i], _best(f))
            sess.run(None, {name: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    ort_t = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            k = re.sub(r"_token_\d+$", "", e["name"][:-len("_kernel_time")])
            ort_t.setdefault(k, []).append(e["dur"] * 1e-6)
    rows = []
    for i, L in enumerate(layers):
        n = L["node"]
        w = n.params["weight"]
        y_shape = kernel(n, [L["x"]]).shape
        macs = int(np.prod(w.shape)) * y_shape[1] * y_shape[2]
        o = ort_t[L["ort_name"]][5:] or ort_t[L["ort_name"]]
        rows.append(dict(name=n.name, x=L["x"].shape[1:], w=w.shape, macs=macs, mq=mq[i], ort=min(o), torch=th[i],
                         plan=L["layer"].plan.describe()))
    return rows


def _gops(macs, s):
    return 2 * macs / s / 1e9


def report(rows, rounds, quick):
    from benchmarks.provenance import commit
    from minquant.kernels.simd import ISA_AVX512BW, host_isa
    model, mhz, vendor, _ = host()
    peak = VNNI_PER_CYCLE[vendor] * 64 * 2 * mhz / 1e3
    fused = host_isa() >= ISA_AVX512BW
    lines = ["# MobileNetV2 int8 dense convolutions, batch 1, channels-last, one thread", "",
             f"`./run python -m benchmarks.dense_convs{' --quick' if quick else ''}` (benchmarks/dense_convs.py); "
             f"commit {commit()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {model} ({mhz:.0f} MHz "
             f"nominal); load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores (shared machine: "
             f"compare within the run); {rounds} interleaved rounds, best per layer.", "",
             "Instructions: **minquant** " + (rows[1]["plan"] if len(rows) > 1 else "?")
             + (", the zero-point term and the float32 output stage in registers (`kernels/tiles_out.py`)"
                if fused else "") + "; the first conv runs on the channels-last im2col rows (K = 27 → 28). "
             "**ONNX Runtime** (MLAS, source read at its `platform.cpp`, `convsym.cpp`, `qlinearconv.cc`): the 1×1 "
             "convs have symmetric weights and channel counts that are multiples of 4, so they run MLAS's "
             "`ConvSym` kernel (AVX512-VNNI `vpdpbusd`, 6 pixels × 64 channels, output stage in registers); the "
             "first conv (3 input channels, not a multiple of 4) falls back to im2col + MLAS's u8s8 QGEMM, whose "
             "dispatch on this AMX host is `MlasGemmU8S8DispatchAmx` (`tdpbusd`; the wheel holds AMX code). "
             "**torch** int8: fbgemm's VNNI kernels (`vpdpbusd`).", "",
             f"Host limit for `vpdpbusd`: {VNNI_PER_CYCLE[vendor]} per cycle × 64 multiply-adds × 2 ops × "
             f"{mhz / 1e3:.1f} GHz = **{peak:.0f} GOPS** (at the nominal clock; turbo raises it).", "",
             "| layer | input | weight | MMAC | minquant µs | GOPS | ORT µs | GOPS | torch µs | GOPS | mq/ORT | mq/torch |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name'].split('/features/')[-1].split('/Conv')[0]} | {'×'.join(map(str, r['x']))} | "
                     f"{r['w'][0]}×{r['w'][1]}×{r['w'][2]}×{r['w'][3]} | {r['macs'] / 1e6:.2f} | "
                     f"{r['mq'] * 1e6:.1f} | {_gops(r['macs'], r['mq']):.0f} | {r['ort'] * 1e6:.1f} | "
                     f"{_gops(r['macs'], r['ort']):.0f} | {r['torch'] * 1e6:.1f} | {_gops(r['macs'], r['torch']):.0f} | "
                     f"{r['mq'] / r['ort']:.2f} | {r['mq'] / r['torch']:.2f} |")
    lines += ["", "| sum | layers | MMAC | minquant µs | GOPS | ORT µs | GOPS | torch µs | GOPS | mq/ORT | mq/torch |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, sel in (("first conv (3×3, s2)", rows[:1]), ("34 1×1 convs", rows[1:]), ("all 35", rows)):
        m = sum(r["macs"] for r in sel)
        a, b, c = (sum(r[k] for r in sel) for k in ("mq", "ort", "torch"))
        lines.append(f"| {label} | {len(sel)} | {m / 1e6:.1f} | {a * 1e6:.0f} | {_gops(m, a):.0f} | {b * 1e6:.0f} | "
                     f"{_gops(m, b):.0f} | {c * 1e6:.0f} | {_gops(m, c):.0f} | {a / b:.2f} | {a / c:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    warnings.filterwarnings("ignore")
    rounds = 4 if quick else ROUNDS
    text = report(measure(rounds), rounds, quick)
    print(text)
    if not quick:
        from minquant.files import atomic_write_text
        atomic_write_text(OUT, text)


if __name__ == "__main__":
    main()
