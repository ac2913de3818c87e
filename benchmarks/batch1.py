"""Batch-1 latency of whole int8 models, minquant against ONNX Runtime, and against an older minquant.

    ./run python -m benchmarks.batch1                       # this checkout only
    ./run python -m benchmarks.batch1 --against DIR         # also the minquant in DIR (e.g. `git archive` of a commit)

writes benchmarks/RESULTS_batch1.md. TinyCNN (digits) and MobileNetV2 (ImageNet) are exported, quantized by ONNX
Runtime's own tool (QOperator, one file per model, made once here) and imported by minquant
(``from_onnx_quantized``); every version runs the *same* file on the same image, one thread. Each measurement
is a child process (this file run with ``--child``, ``PYTHONPATH`` = the version's root) that imports one minquant — this checkout's or DIR's — checks that its output
equals ONNX Runtime's bit for bit, then times both, ``RUNS`` calls each, alternating, and reports the best
and the median. Rounds alternate between the versions, so the load of the shared machine falls on both; the
ratio minquant / ONNX Runtime is taken inside each child (same moment, same load).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "RESULTS_batch1.md"
RUNS, ROUNDS = {"tiny": 200, "mnv2": 30}, 3
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}


def _input(which):
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import tiny_cnn_digits
    if which == "tiny":
        return np.ascontiguousarray(tiny_cnn_digits()[1][2][:1])
    return np.ascontiguousarray(photo_crops(1, split="eval")[:1])


def child(which, path):
    """Time ONNX Runtime and the minquant on sys.path on ``path``; print one JSON line."""
    import minquant
    from minquant.frameworks.ort_oracle import ort_runner
    from minquant.interop.onnx.importer import from_onnx_quantized
    x = _input(which)
    ort, qm = ort_runner(path), from_onnx_quantized(path)
    if not np.array_equal(ort(x), qm(x)):
        raise SystemExit(f"{which}: minquant's output differs from ONNX Runtime's")
    times = {"ort": [], "mq": []}
    for _ in range(5):
        ort(x), qm(x)
    for _ in range(RUNS[which]):
        for k, f in (("ort", ort), ("mq", qm)):
            t = time.perf_counter()
            f(x)
            times[k].append(time.perf_counter() - t)
    print(json.dumps({"minquant": str(Path(minquant.__file__).parent),
                      **{f"{k}_{s}": float(fn(v)) * 1e3 for k, v in times.items()
                         for s, fn in (("best", np.min), ("median", np.median))}}))


def _files(d):
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet, tiny_cnn_digits
    from minquant.frameworks.ort_oracle import ort_quantize
    from minquant.frameworks.torch_oracle import export_onnx
    tiny, (x_tr, _, _, _) = tiny_cnn_digits()
    made = {}
    for which, model, shape, calib in (("tiny", tiny, (1, 1, 28, 28), x_tr[:64]),
                                       ("mnv2", mobilenet_v2_imagenet(), (1, 3, 224, 224), photo_crops(16))):
        fp32 = export_onnx(model, shape, Path(d) / f"{which}.onnx")
        made[which] = ort_quantize(fp32, calib, Path(d) / f"{which}_qop.onnx", "qoperator")
    return made


def main(argv):
    import warnings

    from benchmarks.provenance import commit
    from minquant.files import atomic_write_text
    from minquant.target import Cpu
    warnings.filterwarnings("ignore")
    against = Path(argv[argv.index("--against") + 1]).resolve() if "--against" in argv else None
    versions = {"this checkout": ROOT} | ({f"{against}": against} if against else {})
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        files = _files(d)
        for r in range(ROUNDS):
            for which, path in files.items():
                for name, root in versions.items():
                    env = dict(os.environ, PYTHONPATH=str(root), **ONE_THREAD)
                    out = subprocess.run([sys.executable, __file__, "--child", which, str(path)], cwd=d, env=env,
                                         capture_output=True, text=True)     # (imports the minquant in root)
                    if out.returncode:
                        raise SystemExit(out.stderr[-2000:])
                    got = json.loads(out.stdout.strip().splitlines()[-1])
                    if Path(got["minquant"]).parent != root:
                        raise SystemExit(f"{name}: the child imported {got['minquant']}, not {root}")
                    rows.setdefault((which, name), []).append(got)
                    print(which, name, r, {k: round(v, 3) for k, v in got.items() if k != "minquant"}, flush=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?") if Path("/proc/cpuinfo").exists() else "?"
    lines = ["# Batch 1, whole int8 models: minquant against ONNX Runtime", "",
             f"`./run python -m benchmarks.batch1{' --against ' + str(against) if against else ''}` "
             f"(benchmarks/batch1.py); commit {commit()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"{cpu} (minquant: `{Cpu.host().name}`); load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores, shared — absolute "
             "figures move with the load, the ratio inside one child does less. One thread; ONNX Runtime's own "
             "QOperator file run by ORT and imported by minquant (outputs equal, checked in every child); "
             f"{ROUNDS} rounds alternating the versions, {RUNS['tiny']} (TinyCNN) / {RUNS['mnv2']} (MobileNetV2) "
             "calls per child alternating ORT and minquant; per version the round with the best minquant "
             "time, and the median over all rounds of each child's median ratio.", "",
             "| model | minquant | ORT best (ms) | minquant best (ms) | best ratio | median ratio (minquant / ORT) |",
             "|---|---|---:|---:|---:|---:|"]
    for (which, name), got in rows.items():
        b = min(got, key=lambda g: g["mq_best"])
        med = float(np.median([g["mq_median"] / g["ort_median"] for g in got]))
        lines.append(f"| {'TinyCNN' if which == 'tiny' else 'MobileNetV2'} | {name} | {b['ort_best']:.3f} | "
                     f"{b['mq_best']:.3f} | {b['mq_best'] / b['ort_best']:.2f}× | {med:.2f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(OUT, text)


if __name__ == "__main__":
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        child(sys.argv[i + 1], sys.argv[i + 2])
    else:
        main(sys.argv[1:])
