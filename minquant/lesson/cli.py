"""The ``minquant`` command line (``python -m minquant`` too): the Day-2 steps on your own models.

    minquant demo [--quick] [--report DIR]             the lesson end to end
    minquant quantize MODEL --calib DATA --out FILE    float model → int8 minquant model (.npz + JSON)
    minquant inspect FILE                              what a saved / ONNX model holds, layer by layer
    minquant compare QUANTIZED --float MODEL           per-layer SQNR, worst layers first
    minquant prune MODEL --amount 0.5 --out FILE       magnitude or channel pruning
    minquant bench [MODEL...]                          one-thread latency: torch fp32, torch int8, minquant int8
    minquant doctor [--json]                           each framework's integer path here, checked live

MODEL and DATA arguments are resolved by :mod:`minquant.lesson.cli_models`. Exit codes: 0 success; 1 a problem
with the input (missing or corrupt file, unsupported layer, empty calibration set, NaN in data), reported
as one line ``minquant: error: ...`` on stderr; 2 a usage error (bad or missing options). ``--debug``
shows the traceback instead; Ctrl-C prints ``minquant: interrupted`` and exits with 130 (the SIGINT handler is
installed first thing in :func:`main`, before the quantized layer and torch load). Output files are written to a temporary name and renamed when complete, so a
failed command leaves no output behind. Heavy modules (torch, torchvision, onnx) load inside the
subcommands; ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings

from .cli_models import ARCHS, BUILTINS, INTERRUPTED, InputError, UsageError
from ..target import CPUS, FRAMEWORKS, as_target

EPILOG = ("Docs: docs/quantization.md (the integer arithmetic, step by step), docs/walkthrough.md (the demo), "
          "README.md (API in ten lines). Exit codes: 0 ok, 1 bad input/model, 2 usage error.")

MODEL_HELP = (f"a built-in model ({', '.join(BUILTINS)}), a torch state dict (.pt/.pth, or .npz from "
              "`minquant prune`) with --arch, a TorchScript file, or an ONNX float model")


# ------------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------------
def _shape(text: str) -> tuple[int, int, int]:
    """argparse type for --input-shape: 'C,H,W' or 'CxHxW'."""
    parts = text.replace("x", ",").replace("×", ",").split(",")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W (e.g. 3,224,224), got {text!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive sizes C,H,W, got {text!r}")
    return dims


def _number(text: str, cast, ok, unparsable: str, out_of_range: str):
    """argparse type body: ``cast(text)`` if it parses and ``ok`` accepts it; otherwise ArgumentTypeError
    "``unparsable``, got 'text'" / "``out_of_range``, got value"."""
    try:
        v = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{unparsable}, got {text!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"{out_of_range}, got {v}")
    return v


def _fraction(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < 1, "expected a number in (0, 1)",
                   "the amount pruned must be in (0, 1)")


def _target(text):
    """argparse type for --target: 'x86', 'x86@avx2', ... (a framework, optionally @ a CPU preset)."""
    try:
        return as_target(text)
    except (ValueError, TypeError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "expected a positive integer", "expected a positive integer")


def _progress() -> bool:
    """tqdm bars only on an interactive terminal (they would only clutter logs and pipes)."""
    return sys.stderr.isatty()


def _one_thread() -> None:
    """One thread for torch, Numba and the BLAS NumPy loaded (the benchmark's rule, README)."""
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[v] = "1"   # for libraries not loaded yet
    import numba
    import torch
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


def _default_data(shape) -> str:
    return "digits" if shape is not None and tuple(shape[-3:]) == (1, 28, 28) else "photos"


def _bytes(n: int) -> str:
    return f"{n:,} bytes"


# ------------------------------------------------------------------------------------------------------
# subcommands
# ------------------------------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    import inspect

    from .demo import main as demo_main
    kwargs = {"quick": args.quick}
    if args.report is not None or args.no_report:
        if "report_dir" not in inspect.signature(demo_main).parameters:
            raise InputError("this version of the demo cannot write a report (no report_dir); run without "
                             "--report / --no-report")
        kwargs["report_dir"] = None if args.no_report else args.report
    return int(demo_main(**kwargs) or 0)


def cmd_quantize(args) -> int:
    from .cli_models import atomic_output, check_writable, data_shape, load_float_model, load_inputs
    out = check_writable(args.out)      # a folder that takes no file fails before any work
    hint = data_shape(args.calib)      # a missing / empty folder fails before the model loads
    t0 = time.perf_counter()
    fm = load_float_model(args.model, args.arch, args.input_shape, fallback_shape=hint)
    sample = fm.input_shape[1:] if fm.input_shape else None
    n = args.num_calib if args.num_calib is not None else (256 if args.calib == "digits" else None)
    calib = load_inputs(args.calib, sample, fm.norm, n=n, split="calib", progress=_progress())
    from ..quantized import quantize_static
    qm = quantize_static(fm.model, calib, per_channel=args.per_channel, calibrator=args.calibrator,
                         target=args.target, input_shape=(1,) + tuple(calib.shape[1:]), progress=_progress())
    with atomic_output(out) as tmp:
        qm.save(tmp)
    seconds = time.perf_counter() - t0
    size, fp32 = qm.size_bytes(), qm.fp32_param_bytes()
    print(f"{fm.name} → {out}: int8 {_bytes(size)} vs fp32 {_bytes(fp32)} ({fp32 / max(size, 1):.2f}× smaller; "
          f"file {_bytes(out.stat().st_size)}), {calib.shape[0]} calibration samples ({args.calib}), "
          f"calibrator {args.calibrator}, {'per-channel' if args.per_channel else 'per-tensor'} weights, "
          f"target {args.target}, {seconds:.1f} s")
    return 0


def _tensor_table(named) -> str:
    rows, total, nonzero = [], 0, 0
    for k, a in named:
        z = int((a != 0).sum())
        total, nonzero = total + a.size, nonzero + z
        rows.append((k, "×".join(map(str, a.shape)) or "scalar", str(a.dtype), f"{a.size:,}",
                     f"{1 - z / max(a.size, 1):.1%}"))
    head = ("tensor", "shape", "dtype", "elements", "zeros")
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = [f"{len(rows)} tensors, {total:,} elements, {total - nonzero:,} zeros ({1 - nonzero / max(total, 1):.1%})"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + rows]
    return "\n".join(lines)


def _onnx_node_listing(path) -> str:
    import onnx
    try:
        m = onnx.load(str(path))
        onnx.checker.check_model(m)
    except Exception as e:
        raise InputError(f"{path} is not a valid ONNX model: {str(e).splitlines()[0][:200]}") from None
    inits = {i.name: tuple(i.dims) for i in m.graph.initializer}
    opset = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in m.opset_import)
    lines = [f"ONNX model {path} (ir {m.ir_version}, opset {opset}): {len(m.graph.node)} nodes, "
             f"{len(inits)} initializers",
             "  inputs:  " + ", ".join(i.name for i in m.graph.input if i.name not in inits),
             "  outputs: " + ", ".join(o.name for o in m.graph.output)]
    for n in m.graph.node:
        ins = ", ".join(f"{v}{list(inits[v])}" if v in inits else v for v in n.input)
        lines.append(f"  {n.op_type:18s} {n.name or '-':28s} {ins} → {', '.join(n.output)}")
    return "\n".join(lines)


def cmd_inspect(args) -> int:
    from pathlib import Path

    import numpy as np

    from .cli_models import atomic_output, file_kind
    path = Path(args.file)
    kind = file_kind(path)
    if args.png:
        try:
            from .render import to_png
        except ImportError:
            raise InputError("--png needs minquant.lesson.render, which this installation does not have yet") from None
        if not Path(args.png).parent.is_dir():
            raise InputError(f"cannot write {args.png}: folder {Path(args.png).parent} does not exist")
    png_target = None
    if kind == "minquant":
        from ..quantized import load
        qm = load(path)
        print(qm.summary())
        if qm.meta:
            print("made by: " + ", ".join(f"{k}={v}" for k, v in qm.meta.items()
                                          if not isinstance(v, (list, dict)) or len(v) <= 8))
        png_target = qm
    elif kind == "onnx":
        obj, text = None, None
        try:
            from ..interop.onnx.importer import from_onnx, from_onnx_quantized, onnx_is_quantized
            obj = (from_onnx_quantized if onnx_is_quantized(str(path)) else from_onnx)(str(path))
        except ImportError:
            pass
        except ValueError as e:           # minquant cannot run it: still list what it holds
            print(f"(minquant cannot import this model: {e})")
        if obj is not None:
            try:
                from .render import to_text
                text = to_text(obj)
            except ImportError:
                text = obj.summary()
        print(text if text is not None else _onnx_node_listing(path))
        png_target = obj
    elif kind in ("state-npz", "pruned-npz"):
        from ..prune.architecture import ARCH_KEY
        with np.load(path, allow_pickle=False) as f:
            named = [(k, f[k]) for k in f.files if k != ARCH_KEY]
        print(f"{path}: {'structurally pruned model (channel counts inside)' if kind == 'pruned-npz' else 'state dict'}"
              " (.npz); load it with --arch NAME")
        print(_tensor_table(named))
    elif kind == "checkpoint":
        from .cli_models import _torch_state
        state = _torch_state(path)
        print(f"{path}: torch state dict; load it with --arch NAME")
        print(_tensor_table([(k, v.detach().numpy()) for k, v in state.items()]))
    else:  # torchscript
        import torch
        try:
            ts = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise InputError(f"{path} is not a readable TorchScript file: {str(e).splitlines()[0][:160]}") from None
        print(f"{path}: TorchScript model {getattr(ts, 'original_name', '')!r}; modules:")
        for name, m in ts.named_modules():
            if name:
                print(f"  {name:30s} {getattr(m, 'original_name', type(m).__name__)}")
        print(_tensor_table([(k, v.detach().numpy()) for k, v in ts.state_dict().items()]))
    if args.png:
        if png_target is None:
            raise InputError(f"--png draws minquant or ONNX models that minquant can import; {path} is a {kind}")
        out = Path(args.png)
        with atomic_output(out) as tmp:
            written = Path(to_png(png_target, tmp))
            if written != tmp:
                os.replace(written, tmp)
        print(f"drew {out}")
    return 0


def cmd_compare(args) -> int:
    from pathlib import Path

    from .cli_models import data_shape, file_kind, load_float_model, load_inputs
    qpath = Path(args.quantized)
    kind = file_kind(qpath)
    if args.report is not None:
        try:
            from .report import plot_sqnr
        except ImportError:
            raise InputError("--report needs minquant.lesson.report, which this installation does not have yet") from None
        if Path(args.report).exists() and not Path(args.report).is_dir():
            raise InputError(f"--report {args.report} is a file; give a folder")
    if kind == "minquant":
        from ..quantized import load
        qm = load(qpath)
    elif kind == "onnx":
        try:
            from ..interop.onnx.importer import from_onnx_quantized, onnx_is_quantized
        except ImportError:
            raise InputError(f"{qpath}: reading ONNX models needs minquant.interop.onnx.importer") from None
        if not onnx_is_quantized(str(qpath)):
            raise InputError(f"{qpath} is a float ONNX model; compare needs a quantized one")
        qm = from_onnx_quantized(str(qpath))
    else:
        raise InputError(f"{qpath} is a {kind}, not a quantized model (make one with `minquant quantize`)")
    if args.data is not None:
        data_shape(args.data)          # check the data before loading models
    qshape = qm.graph.input_shapes.get(qm.graph.inputs[0])
    fm = load_float_model(args.float, args.arch, args.input_shape,
                          fallback_shape=tuple(qshape[1:]) if qshape else None)
    sample = tuple(qshape[1:]) if qshape else (fm.input_shape[1:] if fm.input_shape else None)
    if fm.input_shape and qshape and tuple(fm.input_shape[1:]) != tuple(qshape[1:]):
        raise InputError(f"{qpath} takes {'×'.join(map(str, qshape[1:]))} inputs but the float model "
                         f"{args.float} takes {'×'.join(map(str, fm.input_shape[1:]))}: not its original")
    source = args.data or _default_data(sample)
    n = args.num
    x = load_inputs(source, sample, fm.norm, n=n, split="eval", progress=_progress())
    from ..quantized import compare
    t0 = time.perf_counter()
    comp = compare(fm.model, qm, x)
    print(comp.table(limit=args.top))
    print(f"({x.shape[0]} inputs from {source}, {time.perf_counter() - t0:.1f} s)")
    if args.report is not None:
        folder = Path(args.report)
        folder.mkdir(parents=True, exist_ok=True)
        from .cli_models import atomic_output
        png = folder / "sqnr.png"
        with atomic_output(png) as tmp:
            plot_sqnr(comp, tmp, order=[n.name for n in qm.graph.nodes],
                      title=f"{fm.name}: per-layer SQNR of the int8 model ({x.shape[0]} inputs from {source})")
        with atomic_output(folder / "sqnr.txt") as tmp:
            tmp.write_text(comp.table() + "\n", encoding="utf-8")
        print(f"wrote {png} and {folder / 'sqnr.txt'}")
    return 0


def cmd_prune(args) -> int:
    import numpy as np

    from .cli_models import atomic_output, check_writable, load_float_model
    out = check_writable(args.out)
    fm = load_float_model(args.model, args.arch, args.input_shape)
    if not fm.is_torch:
        raise InputError(f"{args.model} is a {fm.kind} model; pruning works on torch models (a built-in name or "
                         "a state dict with --arch)")
    import torch

    from ..prune import count_params, prune_channels, prune_magnitude, save_pruned
    model = fm.model
    digits = tuple(fm.input_shape) == (1, 1, 28, 28)

    def acc(m):
        from .cli_models import digits_data
        from ..data.training import accuracy
        _, _, x_te, y_te = digits_data()
        return accuracy(m, x_te, y_te)

    before = (count_params(model), count_params(model, nonzero=True))
    acc_before = acc(model) if digits else None
    if args.structured:
        pruned = prune_channels(model, torch.zeros(fm.input_shape), args.amount)
        how = f"structured: {args.amount:.0%} of the channels of every prunable group removed (L1 norm)"
    else:
        prune_magnitude(model, args.amount, scope=args.scope)
        pruned = model
        how = f"unstructured: {args.amount:.0%} of the conv/linear weights zeroed by magnitude ({args.scope})"
    after = (count_params(pruned), count_params(pruned, nonzero=True))
    with atomic_output(out) as tmp:
        if args.structured:
            save_pruned(pruned, tmp)
        else:
            arrays = {k: v.detach().cpu().numpy() for k, v in pruned.state_dict().items()}
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
    print(f"{fm.name}, {how}")
    print(f"  parameters: {before[0]:,} → {after[0]:,}; non-zero: {before[1]:,} → {after[1]:,} "
          f"(zeros {before[0] - before[1]:,} → {after[0] - after[1]:,})")
    if acc_before is not None:
        print(f"  digits test accuracy (no fine-tuning): {acc_before:.2%} → {acc(pruned):.2%}")
    arch = args.arch or (fm.name if fm.name in ARCHS else "NAME")
    print(f"wrote {out} ({_bytes(out.stat().st_size)}); reload: minquant quantize {out} --arch {arch} ...")
    return 0


def _torch_int8_x86(model, calib, batch: int = 32):
    """torch's own PTQ of the same model (FX graph mode, default x86 qconfig: fbgemm kernels)."""
    import copy

    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = "x86"
    m = copy.deepcopy(model).eval()
    p = prepare_fx(m, get_default_qconfig_mapping("x86"), (torch.from_numpy(calib[:1]),))
    with torch.no_grad():
        for i in range(0, len(calib), batch):
            p(torch.from_numpy(calib[i:i + batch]))
    return convert_fx(p)


def cmd_bench(args) -> int:
    _one_thread()
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from .cli_models import data_shape, load_float_model, load_inputs
    from ..executor import run as run_graph
    from ..quantized import quantize_static
    from .timing import median_ms
    batches = sorted(set(args.batch))
    target_s, lo, hi = (0.2, 3, 30) if args.quick else (2.0, 5, 500)
    rows = []
    for spec in args.models:
        fm = load_float_model(spec, args.arch, args.input_shape,
                              fallback_shape=data_shape(args.data) if args.data else None)
        sample = fm.input_shape[1:] if fm.input_shape else None
        source = args.data or _default_data(sample)
        calib = load_inputs(source, sample, fm.norm, n=16 if args.quick else 128, split="calib")
        x = load_inputs(source, sample, fm.norm, n=max(batches), split="eval")
        if x.shape[0] < max(batches):
            x = np.concatenate([x] * -(-max(batches) // x.shape[0]))[:max(batches)]
        qm = quantize_static(fm.model, calib, progress=False)
        runners = []
        if fm.is_torch:
            model = fm.model

            def fp32(b, m=model):
                with torch.no_grad():
                    return m(torch.from_numpy(b)).numpy()
            runners.append(("torch fp32", fp32))
            try:
                tq = _torch_int8_x86(model, calib)

                def int8(b, m=tq):
                    with torch.no_grad():
                        return m(torch.from_numpy(b)).numpy()
                runners.append(("torch int8 (x86)", int8))
            except Exception as e:   # a model torch's FX quantizer cannot trace: say so, keep going
                print(f"{fm.name}: torch int8 skipped ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
        else:
            runners.append(("minquant fp32 (graph executor)", lambda b, g=fm.model: run_graph(g, b)))
        runners.append(("minquant int8", qm))
        ref = runners[0][1](x)
        cells = [(b, label, fn) for b in batches for label, fn in runners]
        for b, label, fn in tqdm(cells, desc=f"bench {fm.name}", disable=not _progress(), leave=False):
            xb = np.ascontiguousarray(x[:b])
            t0 = time.perf_counter()
            fn(xb)                                        # warm-up (JIT, caches); also sizes the repeats
            once = max(time.perf_counter() - t0, 1e-6)
            ms = median_ms(lambda: fn(xb), int(min(hi, max(lo, target_s / once))), warmup=1)
            agree = None
            if b == max(batches) and ref.ndim == 2 and ref.shape[1] > 1:
                agree = float((np.asarray(fn(xb)).argmax(1) == ref[:b].argmax(1)).mean())
            rows.append((fm.name, b, label, ms, agree))
    base = {(m, b): ms for m, b, label, ms, _ in rows if label in ("torch fp32", "minquant fp32 (graph executor)")}
    head = ("model", "batch", "runtime", "ms / batch", "ms / image", "vs fp32", "top-1 = fp32")
    body = [(m, str(b), label, f"{ms:.3f}", f"{ms / b:.3f}", f"{base[(m, b)] / ms:.2f}×",
             "" if agree is None else f"{agree:.1%}") for m, b, label, ms, agree in rows]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    print("One thread, median latency after a warm-up; 'vs fp32' > 1 means faster than fp32; top-1 agreement "
          f"with fp32 on the batch-{max(batches)} inputs.")
    for r in [head] + body:
        print("  " + "  ".join(c.rjust(w) if i in (1, 3, 4, 5, 6) else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    return 0


def cmd_doctor(args) -> int:
    from .doctor import main as doctor_main
    return doctor_main(json_output=args.json)


# ------------------------------------------------------------------------------------------------------
# the parser
# ------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from ..quantized.static import CALIBRATORS, DEFAULT_CALIBRATOR   # (loads the quantized layer: not at import)

    fmt = argparse.RawDescriptionHelpFormatter
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback when something fails")
    ap = argparse.ArgumentParser(
        prog="minquant", formatter_class=fmt, epilog=EPILOG,
        description="Model compression for edge deployment, from first principles: quantize, prune, inspect, "
                    "compare and time models.\n\nStart with:  minquant demo --quick\n"
                    "Then:        minquant quantize tinycnn --calib digits --out tiny.mq.npz")
    ap.add_argument("--debug", action="store_true", help="show the full traceback when something fails")
    from importlib.metadata import PackageNotFoundError, version
    try:
        __version__ = version("minquant")
    except PackageNotFoundError:   # running from a source tree that was not installed
        __version__ = "0.1.0 (not installed)"
    ap.add_argument("--version", action="version", version=f"minquant {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, help_, description, example):
        return sub.add_parser(name, parents=[common], help=help_, formatter_class=fmt, epilog=EPILOG,
                              description=f"{description}\n\nExample:\n  {example}")

    def model_options(p):
        p.add_argument("--arch", choices=list(ARCHS),
                       help="architecture of a state-dict / TorchScript MODEL (torchvision models are built "
                            "without downloading weights)")
        p.add_argument("--input-shape", type=_shape, metavar="C,H,W",
                       help="input size when the model does not say (TorchScript/ONNX with image folders)")

    p = add("demo", "run the Day-2 lesson end to end on data that installs with minquant",
            "The lesson's exercise on the seed's TinyCNN (scikit-learn digits) and MobileNetV2 (ImageNet weights, "
            "scikit-image photo crops): fp32, PyTorch's quantize_dynamic as the lesson writes it, torch and "
            "minquant static int8, pruned, distilled, ONNX Runtime and LiteRT rows in one table — size, latency, "
            "accuracy / agreement — plus figures and report.md. Nothing is downloaded.",
            "minquant demo --quick --report report/")
    p.add_argument("--quick", action="store_true", help="fewer timing repeats (a minute instead of several)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--report", metavar="DIR", help="write the figures and report.md into DIR (default: the demo's "
                                                   "own folder, minquant-report/)")
    g.add_argument("--no-report", action="store_true", help="print the table only, write no files")
    p.set_defaults(func=cmd_demo)

    p = add("quantize", "post-training static int8 quantization of a float model",
            "Calibrate activation ranges on sample inputs, quantize weights and activations to int8 "
            "(minquant.quantize_static) and save the model as .npz + JSON (no pickle). Load it with "
            "minquant.load(FILE).\n\nDATA for --calib: 'digits' (scikit-learn digits, 1×28×28), 'photos' "
            "(scikit-image photo crops, 3×224×224) or a folder of images (PNG/JPEG) or .npy arrays; images "
            "are center-cropped, resized and normalised for the model.",
            "minquant quantize tinycnn --calib digits --out tiny.mq.npz\n"
            "  minquant quantize resnet.pth --arch resnet18 --calib my_images/ --out resnet.mq.npz")
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--calib", required=True, metavar="DATA", help="calibration inputs: digits, photos or a folder")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the quantized model (.npz)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--per-channel", dest="per_channel", action="store_true", default=True,
                   help="one weight scale per output channel (default)")
    g.add_argument("--per-tensor", dest="per_channel", action="store_false", help="one weight scale per layer")
    p.add_argument("--calibrator", default=DEFAULT_CALIBRATOR, choices=sorted(CALIBRATORS),
                   help=f"how activation ranges are chosen from calibration data (default: {DEFAULT_CALIBRATOR})")
    p.add_argument("--target", default="fbgemm", type=_target, metavar="FRAMEWORK[@CPU]",
                   help=f"whose integer arithmetic the model reproduces bit for bit, on which CPU: a framework "
                        f"({', '.join(FRAMEWORKS)}), optionally @ a CPU preset ({', '.join(CPUS)}) — "
                        "default: fbgemm on this host")
    p.add_argument("--num-calib", type=_positive, metavar="N",
                   help="calibration samples (default: 256 digits, 64 photos, every file of a folder)")
    model_options(p)
    p.set_defaults(func=cmd_quantize)

    p = add("inspect", "print what a model file holds, layer by layer",
            "A saved minquant model: every layer's op, shapes, scales and bytes. An ONNX file: its graph. "
            "A state dict / pruned .npz / TorchScript file: its tensors and their sparsity.",
            "minquant inspect tiny.mq.npz --png tiny.png")
    p.add_argument("file", metavar="FILE", help="a minquant .npz, an ONNX file, a state dict or a TorchScript file")
    p.add_argument("--png", metavar="OUT", help="also draw the graph as a PNG (minquant and ONNX models)")
    p.set_defaults(func=cmd_inspect)

    p = add("compare", "per-layer SQNR of a quantized model against its float original, worst first",
            "Run both models on the same inputs and report, for every layer, the signal-to-quantization-noise "
            "ratio SQNR = 10·log10(Σf² / Σ(f−q)²) dB (+6 dB ≈ one more bit), worst layers first, plus the "
            "output's SQNR and top-1 agreement.",
            "minquant compare tiny.mq.npz --float tinycnn --data digits --report out/")
    p.add_argument("quantized", metavar="QUANTIZED",
                   help="a model written by `minquant quantize` (or a quantized ONNX)")
    p.add_argument("--float", required=True, metavar="MODEL", help="the float original: " + MODEL_HELP)
    p.add_argument("--data", metavar="DATA",
                   help="inputs: digits, photos or a folder (default: digits for 1×28×28 models, else photos); "
                        "the held-out split, not the calibration one")
    p.add_argument("--num", type=_positive, metavar="N",
                   help="use at most N inputs (default: all 540 test digits / 64 photo crops)")
    p.add_argument("--top", type=_positive, metavar="K", help="print only the K worst layers")
    p.add_argument("--report", metavar="DIR", help="write sqnr.png and sqnr.txt into DIR")
    model_options(p)
    p.set_defaults(func=cmd_compare)

    p = add("prune", "remove weights (unstructured) or whole channels (--structured)",
            "Magnitude pruning zeroes the smallest weights (global ranking across layers by default); "
            "--structured removes whole conv channels (L1 norm), so the model really gets smaller. No "
            "fine-tuning is done. The output .npz reloads with --arch in the other commands.",
            "minquant prune tinycnn --amount 0.5 --out tiny_pruned.npz\n"
            "  minquant quantize tiny_pruned.npz --arch tinycnn --calib digits --out tiny_pruned.mq.npz")
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP + " (torch models only)")
    p.add_argument("--amount", type=_fraction, required=True, metavar="F", help="fraction to remove, in (0, 1)")
    p.add_argument("--structured", action="store_true", help="remove whole channels instead of single weights")
    p.add_argument("--scope", choices=("global", "layer"), default="global",
                   help="unstructured: rank weights across all layers (global) or prune each layer by F (layer)")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the pruned model (.npz)")
    model_options(p)
    p.set_defaults(func=cmd_prune)

    p = add("bench", "one-thread latency: torch fp32, torch int8 (x86) and minquant int8",
            "Median latency after a warm-up, one thread, for each model and batch size; the int8 models are "
            "calibrated on the model's data first. Long studies live in benchmarks/ (./run bench).",
            "minquant bench tinycnn mobilenet_v2 --batch 1 32")
    p.add_argument("models", nargs="*", metavar="MODEL", default=list(BUILTINS), help=MODEL_HELP +
                   f" (default: {' '.join(BUILTINS)})")
    p.add_argument("--batch", type=_positive, nargs="+", default=[1, 32], metavar="B",
                   help="batch sizes (default: 1 32)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and calibration samples (a rough figure)")
    p.add_argument("--data", metavar="DATA", help="inputs: digits, photos or a folder (default: by input size)")
    model_options(p)
    p.set_defaults(func=cmd_bench)

    p = add("doctor", "which integer code path each framework takes on this CPU; checked live against minquant",
            "Prints the CPU features, then for torch (engines fbgemm, x86, qnnpack) and ONNX Runtime, per op "
            "family, the kernel the framework takes on this host and how it accumulates and rounds, and "
            "whether minquant reproduces it: one small random case per row (full-range int8 weights, large "
            "activations) run through both, 'N / M differ'. Exit code 1 if any row differs.",
            "minquant doctor --json > doctor.json")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_doctor)
    return ap


def _interrupted(signum, frame):
    """SIGINT (Ctrl-C) anywhere in the command — loading the quantized layer, torch or the data, parsing the
    arguments, computing: one line on stderr and exit status 130, no traceback. ``SystemExit`` unwinds the
    stack, so ``finally`` blocks still run (a temporary output file is removed); a second Ctrl-C while
    unwinding is ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    INTERRUPTED.set()                     # in case a library's bare ``except:`` swallows the SystemExit
    os.write(2, b"minquant: interrupted\n")
    raise SystemExit(130)


def main(argv=None) -> int:
    # first, before anything heavy is imported (build_parser loads the quantized layer, the commands torch);
    # the previous handler is back when main returns (main may be called from Python, e.g. the tests)
    INTERRUPTED.clear()
    previous = signal.signal(signal.SIGINT, _interrupted) if _main_thread() else None
    try:
        rc = _main(argv)
        return 130 if INTERRUPTED.is_set() else rc
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()   # signal.signal works only there


def _main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    debug = getattr(args, "debug", False)
    if not debug:
        warnings.filterwarnings("ignore")    # torch's deprecation chatter (minquant itself does not warn)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("minquant: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                    # `minquant inspect big.npz | head`: the reader left, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:
        if debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, UsageError):
            print(f"minquant: error: {msg} (see: minquant {args.command} --help)", file=sys.stderr)
            return 2
        if not isinstance(e, (ValueError, OSError, RuntimeError)):
            msg += f" [{type(e).__name__}; rerun with --debug for the traceback]"
        print(f"minquant: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
