"""Whole models, bit for bit: minquant against PyTorch's quantized engines and ONNX Runtime, per CPU path.

    ./run python -m benchmarks.bit_exact_models            # ~3 min on 2 cores; writes RESULTS_bit_exact.md
    ./run python -m benchmarks.bit_exact_models --quick    # 4 images, prints only

One table: one row per (model × torch engine or ONNX Runtime format × CPU path), saying how the row is
verified and how many logits differ from the framework's own (``!=``, float32 logits; 0 = bit-exact).

* **live on host** — torch eager-mode PTQ (:func:`torch_eager_ptq`: fuse → default qconfig of the engine →
  prepare → calibrate on 8 ``photo_crops(split="calib")`` → convert) run on 16 ``photo_crops(split="eval")`` by torch in this process, against
  ``minquant.from_torch_quantized(qmodel, (1, 3, 224, 224), target=Target(engine))``; ONNX Runtime's own
  ``quantize_static`` (QDQ and QOperator, per-channel) run by ORT, against ``minquant.from_onnx``.
* **live, ISA capped in a subprocess** — the converted model's state dict goes through a temporary file
  (``torch.save`` / ``torch.load(weights_only=True)``) to a child process started with
  ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``; the child rebuilds
  the quantizable torchvision model (fuse, qconfig, prepare, convert under the engine), loads the state dict
  and runs the same crops (:func:`child_logits`). minquant runs ``Target(engine, forced_cpu)``.
  Under engine x86 the capped child still routes convolutions to oneDNN (torch's choice reads cpuinfo), now
  with oneDNN's AVX2 kernels, which minquant refuses — no real CPU takes that path. What an AVX2 CPU does
  under x86 is fbgemm for every conv: the child runs the *x86-converted* weights under engine fbgemm, and
  minquant runs ``Target("x86", "avx2")`` (the AVX2 preset CPU).
* **golden recording** — ``tests/golden/recordings/*/mobilenet_v2_x86`` replayed with
  :mod:`minquant.lesson.golden` under ``Target("x86", cpu of the recording)``.

ONNX Runtime rows are native only: MLAS picks its kernels from cpuid and has no ISA cap.
Same batches (4 images) on both sides; one thread everywhere.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from .provenance import commit  # noqa: E402
from minquant.files import atomic_write_text  # noqa: E402

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
#: the environment of the capped child (as tests/forced_isa.py and minquant.lesson.golden use)
FORCED_ENV = {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
BATCH = 4
SHAPE = (1, 3, 224, 224)
ARCH_NAMES = {"mobilenet_v2": "MobileNetV2 (ImageNet weights)", "resnet18": "ResNet-18 (random, seed 0)",
              "mobilenet_v3": "MobileNetV3-large (random, seed 0)"}


# ------------------------------------------------------------------------------------------------------
# torch models
# ------------------------------------------------------------------------------------------------------
def float_model(arch, calib):
    """The float, unfused quantizable torchvision model (eval mode)."""
    import torch
    from torchvision.models.quantization import resnet18

    from minquant.data.zoo import mobilenet_v2_imagenet, mobilenet_v3_random
    if arch == "mobilenet_v2":
        return mobilenet_v2_imagenet(quantizable=True)
    if arch == "resnet18":
        torch.manual_seed(0)
        return resnet18(weights=None, quantize=False).eval()
    if arch == "mobilenet_v3":
        return mobilenet_v3_random(calib, seed=0)
    raise ValueError(arch)


def convert(arch, engine, calib):
    """torch eager PTQ of ``arch`` under ``engine`` (calibration in one pass)."""
    import torch

    from minquant.frameworks.torch_oracle import torch_eager_ptq
    torch.backends.quantized.engine = engine
    m = float_model(arch, calib)
    m.fuse_model()
    return torch_eager_ptq(m, engine, calib)


def torch_logits(qmodel, engine, x):
    import torch
    torch.backends.quantized.engine = engine
    with torch.no_grad():
        return np.concatenate([qmodel(torch.from_numpy(np.ascontiguousarray(x[i:i + BATCH]))).numpy()
                               for i in range(0, len(x), BATCH)])


def mq_logits(qm, x):
    return np.concatenate([np.asarray(qm(np.ascontiguousarray(x[i:i + BATCH])), np.float32)
                           for i in range(0, len(x), BATCH)])


# ------------------------------------------------------------------------------------------------------
# the capped child
# ------------------------------------------------------------------------------------------------------
def child_logits(arch, qconfig_engine, run_engine, state_path, x):
    """In the child: rebuild the quantizable torchvision ``arch`` (no weights), fuse, default qconfig of
    ``qconfig_engine``, prepare and convert with ``torch.backends.quantized.engine = run_engine`` (weights are
    packed for that engine when the state dict loads), load the state dict, run ``x`` in batches of BATCH."""
    import torch
    import torch.ao.quantization as taq
    from torchvision.models.quantization import mobilenet_v2, resnet18

    torch.set_num_threads(1)
    torch.backends.quantized.engine = run_engine
    m = {"mobilenet_v2": mobilenet_v2, "resnet18": resnet18}[arch](weights=None, quantize=False).eval()
    m.fuse_model()
    m.qconfig = taq.get_default_qconfig(qconfig_engine)
    taq.prepare(m, inplace=True)
    taq.convert(m, inplace=True)
    m.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
    m.eval()
    return torch_logits(m, run_engine, x)


def _child_main(spec_path):
    import torch
    spec = json.loads(Path(spec_path).read_text())
    with np.load(spec["x"], allow_pickle=False) as z:
        x = z["x"]
    outs = {f"out{i}": child_logits(spec["arch"], c["qconfig_engine"], c["run_engine"], spec["state"], x)
            for i, c in enumerate(spec["calls"])}
    np.savez(spec["out"], capability=np.array(torch.backends.cpu.get_cpu_capability()), **outs)


def run_capped(arch, qmodel, x, calls):
    """One child process with FORCED_ENV: ``[child_logits(arch, qe, re, state, x) for qe, re in calls]``."""
    import torch
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        torch.save(qmodel.state_dict(), d / "state.pt")
        np.savez(d / "x.npz", x=x)
        spec = {"arch": arch, "state": str(d / "state.pt"), "x": str(d / "x.npz"), "out": str(d / "out.npz"),
                "calls": [{"qconfig_engine": q, "run_engine": r} for q, r in calls]}
        atomic_write_text((d / "spec.json"), json.dumps(spec))
        env = {**os.environ, **FORCED_ENV, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, "-m", "benchmarks.bit_exact_models", "--child", str(d / "spec.json")],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"capped child failed:\n{r.stderr[-3000:]}")
        with np.load(d / "out.npz", allow_pickle=False) as z:
            cap = str(z["capability"])
            if cap.lower() != FORCED_ENV["ATEN_CPU_CAPABILITY"]:
                raise RuntimeError(f"child ran with ATen capability {cap}, asked for avx2")
            return [z[f"out{i}"] for i in range(len(calls))]


# ------------------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------------------
def _row(model, fw, path, how, target, ref, out, note=""):
    d = dict(model=model, fw=fw, path=path, how=how, target=target, images=len(ref), bad=int((out != ref).sum()),
             total=int(ref.size), maxd=float(np.abs(out.astype(np.float64) - ref.astype(np.float64)).max()),
             note=note)
    print(f"  {model} | {fw} | {path} | {how}: {d['bad']} / {d['total']} differ, max |Δ| {d['maxd']:.3g}",
          flush=True)
    return d


def _unreproduced(model, fw, path, how, target, images, note):
    print(f"  {model} | {fw} | {path} | {how}: not reproduced — {note}", flush=True)
    return dict(model=model, fw=fw, path=path, how=how, target=target, images=images, bad=None, total=None,
                maxd=None, note=note)


def _vs_native(native, capped):
    """How much the capped path changes torch's own answer (0 would make the capped row prove nothing new)."""
    return f"torch capped vs torch native: {int((native != capped).sum())} / {native.size} logits differ"


def torch_rows(x, calib, host_cpu, forced_cpu, quick):
    import torch

    from minquant import Target, from_torch_quantized
    plan = [("mobilenet_v2", ("x86", "fbgemm", "qnnpack"), True), ("resnet18", ("x86", "fbgemm", "qnnpack"), True),
            ("mobilenet_v3", ("x86", "qnnpack"), False)]
    rows = []
    for arch, engines, capped in plan:
        name = ARCH_NAMES[arch]
        for engine in engines:
            t0 = time.perf_counter()
            qmodel = convert(arch, engine, calib)
            ref = torch_logits(qmodel, engine, x)
            tgt = Target(engine)
            qm = from_torch_quantized(qmodel, SHAPE, target=tgt)
            rows.append(_row(name, f"torch {engine}", f"{host_cpu.name} (native)", "live on host", str(tgt), ref,
                             mq_logits(qm, x)))
            if capped:
                if engine == "x86":
                    # one child: the x86 model under x86 (oneDNN AVX2 — for the record) and under fbgemm
                    (capped_x86, as_avx2) = run_capped(arch, qmodel, x, [("x86", "x86"), ("x86", "fbgemm")])
                    ftgt = Target("x86", forced_cpu)
                    try:
                        out = mq_logits(from_torch_quantized(qmodel, SHAPE, target=ftgt), x)
                        rows.append(_row(name, "torch x86", forced_cpu.name, "live, ISA capped (subprocess)",
                                         str(ftgt), capped_x86, out))
                    except ValueError as e:
                        same = int((capped_x86 != as_avx2).sum())
                        cause = str(e.__cause__ or e)
                        rows.append(_unreproduced(
                            name, "torch x86", forced_cpu.name, "live, ISA capped (subprocess)", str(ftgt), len(x),
                            "oneDNN capped below VNNI; no real CPU takes this path. minquant raises ValueError "
                            f"({cause.split(';')[0].split(': ', 1)[-1] if 'oneDNN' in cause else cause[:120]}); "
                            f"torch's capped-oneDNN logits differ from the capped-fbgemm row below in {same} / "
                            f"{capped_x86.size}"))
                    atgt = Target("x86", "avx2")
                    out = mq_logits(from_torch_quantized(qmodel, SHAPE, target=atgt), x)
                    rows.append(_row(name, "torch x86", "x86 on an AVX2 CPU (every conv on fbgemm)",
                                     "live, ISA capped (subprocess): x86-converted weights run under engine fbgemm",
                                     str(atgt), as_avx2, out,
                                     note="minquant: the AVX2 preset CPU Target('x86', 'avx2'); " + _vs_native(ref, as_avx2)))
                else:
                    (capped_ref,) = run_capped(arch, qmodel, x, [(engine, engine)])
                    ftgt = Target(engine, forced_cpu)
                    out = mq_logits(from_torch_quantized(qmodel, SHAPE, target=ftgt), x)
                    rows.append(_row(name, f"torch {engine}", forced_cpu.name, "live, ISA capped (subprocess)",
                                     str(ftgt), capped_ref, out, note=_vs_native(ref, capped_ref)))
            print(f"  [{arch} {engine}: {time.perf_counter() - t0:.0f} s]", flush=True)
            del qmodel
            torch.backends.quantized.engine = "x86"
    return rows


def _onnx_import(path, target):
    """``minquant.from_onnx_quantized`` where it exists (the importer split float / quantized files), else
    ``minquant.from_onnx(path, target=...)``."""
    import minquant
    try:
        imp = minquant.from_onnx_quantized
    except AttributeError:
        return minquant.from_onnx(path, target=target), "minquant.from_onnx"
    return imp(path, target=target), "minquant.from_onnx_quantized"


def ort_rows(x, calib, host_cpu):
    from minquant import Target
    from minquant.data.zoo import mobilenet_v2_imagenet
    from minquant.frameworks.ort_oracle import ort_quantize, ort_runner
    from minquant.frameworks.torch_oracle import export_onnx
    rows = []
    name = ARCH_NAMES["mobilenet_v2"]
    with tempfile.TemporaryDirectory() as d:
        fp32 = export_onnx(mobilenet_v2_imagenet(), SHAPE, Path(d) / "mnv2.onnx")
        for fmt in ("qdq", "qoperator"):
            label = f"ONNX Runtime quantize_static {'QDQ' if fmt == 'qdq' else 'QOperator'}"
            t0 = time.perf_counter()
            path = ort_quantize(fp32, calib, Path(d) / f"mnv2_{fmt}.onnx", fmt)
            run = ort_runner(path)
            ref = np.concatenate([run(np.ascontiguousarray(x[i:i + BATCH])) for i in range(0, len(x), BATCH)])
            tgt = Target("onnxruntime")
            try:
                qm, how = _onnx_import(path, tgt)
                rows.append(_row(name, label, f"{host_cpu.name} (native)", "live on host", str(tgt), ref,
                                 mq_logits(qm, x), note=f"imported with `{how}`; MLAS has no ISA cap: native only"))
            except Exception as e:  # noqa: BLE001 — reported as a row
                rows.append(_unreproduced(name, label, f"{host_cpu.name} (native)", "live on host", str(tgt), len(x),
                                          f"from_onnx failed: {type(e).__name__}: {e}"))
            print(f"  [ORT {fmt}: {time.perf_counter() - t0:.0f} s]", flush=True)
    return rows


def _replay_mobilenet(golden, arrays, target):
    """The recording's MobileNetV2 case as ``golden._replay_mobilenet_v2_x86`` means to replay it: rebuild the
    module (x86, fuse, prepare, convert), load the recorded state dict, import, one image at a time."""
    import torch.ao.quantization as taq

    from minquant import from_torch_quantized
    m = golden._build_quantizable_mobilenet()
    taq.convert(m, inplace=True)
    m.load_state_dict(arrays["state_dict"])
    m.eval()
    qm = from_torch_quantized(m, SHAPE, target=target)
    x = np.asarray(arrays["x"], np.float32)
    return arrays["logits"], np.concatenate([np.asarray(qm(x[i:i + 1]), np.float32) for i in range(len(x))])


def golden_rows():
    from minquant.lesson import golden
    rows = []
    root = ROOT / "tests" / "golden" / "recordings"
    for folder in golden.find_recordings(root):
        manifest = golden.load_manifest(folder)
        if "mobilenet_v2_x86" not in golden.families_of(manifest):
            continue
        cpu = golden.cpu_of(manifest)
        (params, arrays), = golden.load_family(folder, "mobilenet_v2_x86", manifest)
        tgt = golden.target_for("mobilenet_v2_x86", params, cpu)
        how = f"golden recording {folder.name}"
        try:
            expected, got = golden.replay_case("mobilenet_v2_x86", params, arrays, tgt)
            note = "replayed by `minquant.lesson.golden.replay_case`"
        except Exception as e:  # noqa: BLE001 — the module's replay is broken: replay its recipe here
            print(f"  golden.replay_case failed: {type(e).__name__}: {e}", flush=True)
            expected, got = _replay_mobilenet(golden, arrays, tgt)
            note = (f"`minquant.lesson.golden.replay_case` fails ({type(e).__name__}: {e}); replayed here with "
                    "the same recipe and `minquant.from_torch_quantized`")
        expected, got = np.asarray(expected), np.asarray(got)
        bits = golden.count_mismatches(expected, got)
        v = manifest.get("versions", {})
        rows.append(_row("MobileNetV2 (ImageNet weights, recorded state dict)", "torch x86", f"{cpu.name} (native)",
                         how, str(tgt), expected, got,
                         note=f"{note}; recorded with torch {v.get('torch', '?')}; {bits} differ by bits"))
    return rows


# ------------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------------
def table(rows):
    lines = ["| model | torch engine / ORT format | CPU path | verified | minquant target | images | "
             "logits differing / total | max abs Δ | note |",
             "|---|---|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        if r["bad"] is None:
            diff, mx = "not reproduced", "—"
        else:
            diff, mx = f"{r['bad']} / {r['total']}", f"{r['maxd']:.3g}"
        lines.append(f"| {r['model']} | {r['fw']} | {r['path']} | {r['how']} | `{r['target']}` | {r['images']} | "
                     f"{diff} | {mx} | {r['note']} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 images, print only")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child_main(args.child)
        return
    import onnxruntime
    import torch
    import torchvision

    from minquant import Cpu
    from minquant.data.datasets import photo_crops
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    host = Cpu.host()
    forced = Cpu.host(respect_environment=False).with_environment(FORCED_ENV)
    n = 4 if args.quick else 16
    calib, x = photo_crops(8, split="calib"), photo_crops(n, split="eval")
    rows = torch_rows(x, calib, host, forced, args.quick) + ort_rows(x, calib, host) + golden_rows()
    model_name = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model_name = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    header = [
        "# Whole models, bit for bit: minquant vs torch's quantized engines and ONNX Runtime, per CPU path", "",
        f"Host: {model_name}, {os.cpu_count()} cores; `Cpu.host().describe()`: {host.describe()}.  ",
        f"Capped child: {FORCED_ENV} → {forced.describe()}.  ",
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"Python {platform.python_version()}; commit {commit()}; date {datetime.date.today().isoformat()}; "
        f"one thread; produced by `./run python -m benchmarks.bit_exact_models` "
        f"({time.perf_counter() - t_all:.0f} s).", "",
        f"Models: torchvision's quantizable MobileNetV2 (ImageNet weights), ResNet-18 (`torch.manual_seed(0)`) "
        f"and MobileNetV3-large (`minquant.data.zoo.mobilenet_v3_random(calib, seed=0)`), fused, torch eager PTQ "
        f"(`torch_eager_ptq`, default qconfig of the engine, 8 crops of `photo_crops(split='calib')`); "
        f"evaluated on {n} crops of `photo_crops(split='eval')` in batches of {BATCH} on both sides. ONNX Runtime: "
        f"the float MobileNetV2 exported (opset 17) and quantized by ORT's `quantize_static` (per-channel int8 "
        f"weights, uint8 activations, MinMax on the same 8 crops), imported with `minquant.from_onnx_quantized` (`minquant.from_onnx` before the importer was split). "
        f"\"logits differing\": float32 logits that are not identical (`!=`).", "",
        "How verified: *live on host* — the framework runs in this process on this CPU; *live, ISA capped* — "
        "torch runs in a subprocess with the three ISA variables (the converted state dict passed through "
        "`torch.save` / `torch.load(weights_only=True)`), minquant runs `Target(engine, forced_cpu)`; "
        "*golden recording* — a stored recording replayed by `minquant.lesson.golden`. ONNX Runtime rows are "
        "native only: MLAS chooses its kernels from cpuid and cannot be capped.", ""]
    notes = ["", "Notes:", "",
             "- x86 under the cap: torch's x86 engine chooses oneDNN from cpuinfo (AVX512-VNNI), not from the "
             "environment, so the capped child runs oneDNN's AVX2 int8 kernels — a path no real CPU takes (a CPU "
             "without VNNI makes torch pick fbgemm). minquant refuses it (`Target.conv` raises ValueError).",
             "- \"x86 on an AVX2 CPU\": on such a CPU torch runs every x86 convolution on fbgemm, i.e. the "
             "x86-converted weights under engine fbgemm with fbgemm/ATen capped at AVX2 — what the capped child "
             "computes with engine fbgemm. minquant models that CPU as the preset `Target('x86', 'avx2')` "
             "(`Target('x86', forced_cpu)` would send convs to oneDNN, since the host has VNNI). fbgemm's "
             "groupwise kernel reads the real CPU, but none of these models has a groupwise convolution.",
             "- \"torch capped vs torch native\" says how much the cap changes torch's own logits, i.e. whether a "
             "capped row checks a path the native row does not. qnnpack ignores the caps (0 differ: those rows repeat "
             "the native check). ResNet-18 under fbgemm also gives 0: with the default qconfig's 7-bit activations "
             "(reduce_range) a u8×s8 pair is at most 2·127·128 = 32512, so fbgemm's int16 pairs cannot saturate in its dense "
             "convolutions on either path; MobileNetV2 under fbgemm does change with the cap (its depthwise "
             "and element-wise layers), and minquant follows both."]
    out = "\n".join(header) + "\n" + table(rows) + "\n" + "\n".join(notes) + "\n"
    print()
    print(out)
    print(f"[total {time.perf_counter() - t_all:.0f} s]")
    if not args.quick:
        path = Path(__file__).resolve().parent / "RESULTS_bit_exact.md"
        atomic_write_text(path, out)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
