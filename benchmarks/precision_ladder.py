"""The precision ladder (issue 15), one run, one thread: writes benchmarks/RESULTS_precision_ladder.md and the
plot ``precision_ladder_models.png`` (the three models; into the demo's report folder, beside the demo's own
TinyCNN ``precision_ladder.png``) and ``docs/figures/precision_ladder.png``.

    .venv/bin/python -m benchmarks.precision_ladder                 # TinyCNN, MobileNetV2, EfficientNet-Lite0
    .venv/bin/python -m benchmarks.precision_ladder --quick         # fewer crops, prints only
    .venv/bin/python -m benchmarks.precision_ladder --replot        # the plot again, from the kept rows

For each model: fp32 / fp16 / int8 / W4A16 / W4A8 / mixed — minquant's ``quantize_precision`` (and
``quantize_mixed``) from one prepared float graph (BatchNorm folded, cross-layer equalized on the calibration
crops), target ``x86`` on this CPU — beside what torch and ONNX Runtime give on the same inputs where they have
the mode: bytes, accuracy (TinyCNN, digits) or top-1 agreement with fp32 (ImageNet models, held-out photo
crops of ``split="eval"``), logit SQNR, batch-1 latency on one thread. The mixed rows choose each layer's
precision by the output SQNR with only that layer lowered, measured on 8 *calibration-split* crops that
calibration does not see (never on the evaluation crops).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from minquant.files import atomic_write  # noqa: E402
from minquant.lesson.timing import median_ms  # noqa: E402

from .provenance import commit  # noqa: E402

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS_precision_ladder.md"
KEPT = ROOT / "benchmarks" / "figures" / "precision_ladder"      # the rows of RESULTS_precision_ladder.md


@dataclass
class Row:
    model: str
    runtime: str
    variant: str
    bytes: int | None = None
    accuracy: float | None = None
    agreement: float | None = None
    sqnr: float | None = None
    ms: float | None = None
    note: str = ""


def _sqnr(f, q):
    from minquant.quantized.comparison import sqnr_db
    return float(sqnr_db(f, q))


def _agree(f, q):
    return float((np.asarray(f).argmax(1) == np.asarray(q).argmax(1)).mean())


def _mq(qm, x, batch=25):
    return np.concatenate([qm(x[i:i + batch]) for i in range(0, len(x), batch)])


def _scores(row, f_ref, logits, y):
    row.agreement, row.sqnr = _agree(f_ref, logits), _sqnr(f_ref, logits)
    if y is not None:
        row.accuracy = float((np.asarray(logits).argmax(1) == y).mean())
    return row


# ------------------------------------------------------------------------------------------------------
# the three models and their data
# ------------------------------------------------------------------------------------------------------
@dataclass
class Spec:
    name: str
    model: object
    calib: np.ndarray
    x_sens: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray | None
    repeats: int


def specs(quick: bool):
    from minquant.data import efficientnet_lite as effl
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import efficientnet_lite0_imagenet, mobilenet_v2_imagenet, tiny_cnn_digits

    model, (x_tr, _, x_te, y_te) = tiny_cnn_digits()
    n_cal, n_ev = (32, 40) if quick else (100, 200)
    yield Spec("TinyCNN", model, x_tr[:256], x_tr[256:264], x_te, y_te, 50)
    yield Spec("MobileNetV2", mobilenet_v2_imagenet(), photo_crops(n_cal, split="calib"),
               photo_crops(8, split="calib", seed=1), photo_crops(n_ev, split="eval"), None, 10)
    m, s = effl.MEAN, effl.STD
    yield Spec("EfficientNet-Lite0", efficientnet_lite0_imagenet(), photo_crops(n_cal, split="calib", mean=m, std=s),
               photo_crops(8, split="calib", seed=1, mean=m, std=s), photo_crops(n_ev, split="eval", mean=m, std=s),
               None, 10)


# ------------------------------------------------------------------------------------------------------
# minquant's ladder
# ------------------------------------------------------------------------------------------------------
def minquant_rows(sp: Spec, f_ref, log):
    from minquant.quantized.mixed import Budget, precision_table, quantize_mixed, sensitivity_of
    from minquant.quantized.precision import FP16, FP32, INT8, w4a8, w4a16
    from minquant.quantized.precision_convert import prepare_graph, quantize_precision

    x1 = sp.x_eval[:1]
    batches = [sp.calib[i:i + 32] for i in range(0, len(sp.calib), 32)]
    g, _, _ = prepare_graph(sp.model, batches)
    rungs = [FP32, FP16, INT8, w4a16(32), w4a8(32)]
    lowered, rows = {}, []
    for p in rungs:
        t = time.time()
        qm = quantize_precision(g, p, batches, target="x86", equalize=False)
        lowered[p] = qm
        row = Row(sp.name, "minquant", p.name, qm.size_bytes())
        if p is FP32:      # the prepared float graph: the float model up to float rounding (not re-evaluated)
            row.note = "minquant's float executor on the prepared graph (BN folded, equalized)"
        else:
            _scores(row, f_ref, _mq(qm, sp.x_eval), sp.y_eval)
        row.ms = median_ms(lambda: qm(x1), sp.repeats)
        if p is INT8:
            row.note = "quantize_static defaults (per-channel, percentile, equalization, bias correction)"
        if p.weights.name == "INT4":
            k = qm.meta["int4_group_sizes"]
            row.note = (f"{sum(v == 32 for v in k.values())} of {len(k)} layers in groups of 32, the rest "
                        f"one group per output channel")
        rows.append(row)
        log(f"  {sp.name} {p.name}: {row.bytes:,} B, agree {row.agreement}, {row.sqnr} dB ({time.time() - t:.0f} s)")
    rows.insert(2, fp16_unfolded_row(sp, f_ref, log))
    t = time.time()
    sens = sensitivity_of(g, {p: lowered[p] for p in rungs[1:]}, sp.x_sens)
    log(f"  {sp.name} sensitivity: {len(sens.layers)} layers × {len(sens.candidates)} ({time.time() - t:.0f} s)")
    tables = []
    for budget in (Budget(max_bytes=lowered[INT8].size_bytes()), Budget(min_sqnr_db=30.0)):
        t = time.time()
        qm = quantize_mixed(g, sp.calib, budget, x_sensitivity=sp.x_sens, equalize=False, sensitivity=sens)
        mx = qm.meta["mixed"]
        counts = {}
        for c in mx["choice"].values():
            counts[c] = counts.get(c, 0) + 1
        row = _scores(Row(sp.name, "minquant", f"mixed, {budget.describe()}", qm.size_bytes()), f_ref,
                      _mq(qm, sp.x_eval), sp.y_eval)
        row.ms = median_ms(lambda: qm(x1), sp.repeats)
        row.note = (("budget met" if mx["met"] else "budget NOT met") + f" on 8 held-out calibration crops "
                    f"({mx['measured_sqnr_db']:.1f} dB there); layers: "
                    + ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
        rows.append(row)
        tables.append(precision_table(qm))
        log(f"  {sp.name} mixed {budget.describe()}: {row.bytes:,} B, agree {row.agreement:.3f}, {row.sqnr:.2f} dB "
            f"({time.time() - t:.0f} s)")
    return rows, tables


def fp16_unfolded_row(sp: Spec, f_ref, log):
    """fp16 on the model as it is — BatchNorm kept as its own op, nothing equalized — like torch's ``.half()``
    (rounding BN-folded, equalized weights to float16 costs MobileNetV2 ~10 dB of output SQNR)."""
    from minquant.quantized.precision import FP16
    from minquant.quantized.precision_convert import quantize_precision

    t = time.time()
    qm = quantize_precision(sp.model, FP16, input_shape=(1,) + sp.x_eval.shape[1:], fold_batch_norm=False)
    row = _scores(Row(sp.name, "minquant", "fp16, BatchNorm kept (not folded, not equalized)", qm.size_bytes(),
                      note="BatchNorm parameters stored float32"), f_ref, _mq(qm, sp.x_eval), sp.y_eval)
    row.ms = median_ms(lambda: qm(sp.x_eval[:1]), sp.repeats)
    log(f"  {sp.name} fp16 unfolded: {row.bytes:,} B, agree {row.agreement}, {row.sqnr} dB ({time.time() - t:.0f} s)")
    return row


# ------------------------------------------------------------------------------------------------------
# torch and ONNX Runtime on the same inputs
# ------------------------------------------------------------------------------------------------------
def torch_rows(sp: Spec, f_ref):
    import copy

    import torch

    from minquant.frameworks import torch_oracle

    torch.set_num_threads(1)
    x1 = torch.from_numpy(sp.x_eval[:1])
    rows = []
    n_params = sum(p.numel() for p in sp.model.parameters())
    r = Row(sp.name, "torch", "fp32", 4 * n_params)
    rows.append(_scores(r, f_ref, f_ref, sp.y_eval))
    with torch.no_grad():
        r.ms = median_ms(lambda: sp.model(x1), sp.repeats)
        half = copy.deepcopy(sp.model).half()
        logits = torch_oracle.torch_logits(half, sp.x_eval.astype(np.float16)).astype(np.float32)
        r = _scores(Row(sp.name, "torch", "fp16 (`.half()`)", 2 * n_params), f_ref, logits, sp.y_eval)
        x1h = x1.half()
        r.ms = median_ms(lambda: half(x1h), sp.repeats)
        rows.append(r)
    if sp.name in ("TinyCNN", "MobileNetV2"):
        if sp.name == "TinyCNN":
            qt = torch_oracle.torch_static_tinycnn(sp.model, sp.calib, "x86")
        else:
            qt = torch_oracle.torch_static_mobilenet_v2(sp.calib, "x86")
        from minquant.quantized import report_torch_quantized
        r = _scores(Row(sp.name, "torch", "int8 (eager x86 PTQ, default qconfig)",
                        sum(v.bytes for v in report_torch_quantized(qt).layers)), f_ref,
                    torch_oracle.torch_logits(qt, sp.x_eval), sp.y_eval)
        with torch.no_grad():
            r.ms = median_ms(lambda: qt(x1), sp.repeats)
        rows.append(r)
    else:
        rows.append(Row(sp.name, "torch", "int8", note="not run: torch's eager PTQ needs QuantStubs and fusable "
                                                      "modules written into the model"))
    rows.append(Row(sp.name, "torch", "W4A16 / W4A8", note="none for convolutions (torchao's int4 modes are for "
                                                              "nn.Linear, bf16/int8 activations)"))
    return rows


def ort_rows(sp: Spec, f_ref, workdir: Path):
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from minquant.frameworks.ort_oracle import onnx_initializer_bytes, ort_quantize, ort_runner
    from minquant.frameworks.torch_oracle import export_onnx

    rows = []
    fp32 = export_onnx(sp.model, (1,) + sp.x_eval.shape[1:], workdir / f"{sp.name}.onnx")
    fp16 = workdir / f"{sp.name}.fp16.onnx"
    m16 = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    onnx.save(m16, str(fp16))
    int8 = ort_quantize(fp32, sp.calib, workdir / f"{sp.name}.qdq.onnx", "qdq", method="MinMax")
    for variant, path, note in (("fp32", fp32, ""),
                                ("fp16 (convert_float_to_float16)", fp16,
                                 "x86 CPU provider: no float16 Conv/Gemm — Casts around a float32 chain"),
                                ("int8 (quantize_static QDQ, per-channel, MinMax)", int8, "")):
        run = ort_runner(path)
        logits = np.concatenate([run(sp.x_eval[i:i + 25]) for i in range(0, len(sp.x_eval), 25)])
        r = _scores(Row(sp.name, "ONNX Runtime", variant, onnx_initializer_bytes(path), note=note), f_ref, logits,
                    sp.y_eval)
        x1 = sp.x_eval[:1]
        r.ms = median_ms(lambda: run(x1), sp.repeats)
        rows.append(r)
    rows.append(Row(sp.name, "ONNX Runtime", "W4A16 / W4A8",
                    note="MatMulNBits is a MatMul only (here: the classifier); no 4-bit Conv. Its quantizer "
                         "(matmul_nbits_quantizer) needs onnx_ir, not installed"))
    return rows


# ------------------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------------------
def _pct(v):
    return "" if v is None else f"{100 * v:.1f} %"


def _table(rows):
    out = ["| model | runtime | precision | bytes | accuracy | agreement with fp32 | logit SQNR dB | ms (batch 1) | "
           "note |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r.model} | {r.runtime} | {r.variant} | {'' if r.bytes is None else f'{r.bytes:,}'} | "
                   f"{_pct(r.accuracy)} | {_pct(r.agreement)} | "
                   f"{'' if r.sqnr is None else ('∞' if not np.isfinite(r.sqnr) else f'{r.sqnr:.1f}')} | "
                   f"{'' if r.ms is None else f'{r.ms:.2f}'} | {r.note} |")
    return "\n".join(out)


def plot(rows, paths):
    """Size (bytes, log scale) against agreement with fp32, one panel per model, one marker per runtime
    (:func:`minquant.lesson.report.plot_ladder`), written to each of ``paths``."""
    from minquant.lesson.report import plot_ladder

    def label(v):       # "mixed, size ≤ 29,986 bytes" → "mixed ≤ 29,986 bytes"
        return v.split(" (")[0].replace("size ", "").replace("output SQNR ", "").replace("mixed,", "mixed")

    drawn = [dict(dataclasses.asdict(r), size_bytes=r.bytes, label=label(r.variant)) for r in rows]
    for p in paths:
        plot_ladder(drawn, p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer crops; print only")
    ap.add_argument("--report", default="minquant-report", help="the demo's report folder (for the plot)")
    ap.add_argument("--models", nargs="*", default=None, help="subset: TinyCNN MobileNetV2 EfficientNet-Lite0")
    ap.add_argument("--part", default=None, help="write this run's rows to a JSON file (no markdown)")
    ap.add_argument("--merge", nargs="*", default=None, help="write the markdown and plot from --part files")
    ap.add_argument("--fp16-unfolded-only", action="store_true",
                    help="only the row 'fp16, BatchNorm kept' (a part added to an earlier run's parts)")
    ap.add_argument("--replot", action="store_true",
                    help="only the plot, from the rows kept in benchmarks/figures/precision_ladder")
    args = ap.parse_args(argv)
    if args.replot:
        return replot(args.report)
    if args.merge:
        return write_outputs([json.loads(Path(p).read_text()) for p in args.merge], args.report)
    import torch
    torch.set_num_threads(1)
    from minquant.data.training import predict_logits

    t0 = time.time()
    rows, tables = [], {}

    def log(s):
        print(s, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        for sp in specs(args.quick):
            if args.models and sp.name not in args.models:
                continue
            log(f"{sp.name}: {len(sp.calib)} calibration, {len(sp.x_eval)} evaluation samples")
            f_ref = predict_logits(sp.model, sp.x_eval, batch_size=16)
            if args.fp16_unfolded_only:
                rows.append(fp16_unfolded_row(sp, f_ref, log))
                continue
            rows += torch_rows(sp, f_ref)
            rows += ort_rows(sp, f_ref, Path(tmp))
            mrows, mtables = minquant_rows(sp, f_ref, log)
            rows += mrows
            tables[sp.name] = mtables
    print(_table(rows))
    if args.quick:
        return 0
    part = {"rows": [dataclasses.asdict(r) for r in rows], "tables": tables, "minutes": (time.time() - t0) / 60,
            "command": "./run python -m benchmarks.precision_ladder" + " ".join(sys.argv[1:] and [""] + sys.argv[1:])}
    if args.part:
        with atomic_write(Path(args.part), "w") as f:
            json.dump(part, f)
        log(f"wrote {args.part}")
        return 0
    return write_outputs([part], args.report)


def kept_rows() -> list:
    """The table's rows: the six part files kept in benchmarks/figures/precision_ladder, with each row of
    ``added_rows.json`` (measured later by another benchmark) added — or put in place of the part row it
    names under ``replaces`` (model, runtime, variant)."""
    names = [f"{p}{m}.json" for m in ("TinyCNN", "MobileNetV2", "EfficientNet-Lite0") for p in ("", "fp16_")]
    rows = [Row(**r) for n in names for r in json.loads((KEPT / n).read_text())["rows"]]
    for add in json.loads((KEPT / "added_rows.json").read_text()):
        new = Row(**add["row"])
        old = add.get("replaces")
        at = [i for i, r in enumerate(rows) if old and (r.model, r.runtime, r.variant) == tuple(old)]
        if old and not at:
            raise ValueError(f"added_rows.json: no row {old} to replace")
        if at:
            rows[at[0]] = new
        else:
            rows.append(new)
    return rows


def replot(report) -> int:
    figs = [Path(report) / "precision_ladder_models.png", ROOT / "docs" / "figures" / "precision_ladder.png"]
    plot(kept_rows(), figs)
    print("wrote", ", ".join(map(str, figs)))
    return 0


def write_outputs(parts_in, report):
    """RESULTS_precision_ladder.md and the plot from one run's rows (or several --part files)."""
    import torch
    from minquant.target import Cpu

    rows = [Row(**r) for p in parts_in for r in p["rows"]]
    models = list(dict.fromkeys(r.model for r in rows))
    rank = ("fp32", "fp16 (", "fp16, BatchNorm", "fp16", "int8", "W4A16", "W4A8", "mixed")
    rows.sort(key=lambda r: (models.index(r.model), ("torch", "ONNX Runtime", "minquant").index(r.runtime),
                             next((i for i, v in enumerate(rank) if r.variant.startswith(v)), len(rank))))
    tables = {k: v for p in parts_in for k, v in p["tables"].items()}
    table = _table(rows)
    figs = [Path(report) / "precision_ladder_models.png", ROOT / "docs" / "figures" / "precision_ladder.png"]
    plot(rows, figs)
    cmds = [p["command"] for p in parts_in]
    if len(parts_in) > 1:
        cmds.append("./run python -m benchmarks.precision_ladder --merge " + " ".join("<part>" for _ in parts_in))
    minutes = max(p["minutes"] for p in parts_in)
    parts = [
        "# The precision ladder: fp32 → fp16 → int8 → int4, and mixed (issue 15)", "",
        f"Machine: {Cpu.host().describe()}; {platform.python_version()}, torch {torch.__version__}. "
        f"Commit {commit()}; {datetime.date.today()}; one thread everywhere; produced by "
        + "; ".join(f"`{c}`" for c in cmds) + f" (longest part {minutes:.0f} min; the 2-core CPU was shared with "
        "other jobs: latencies are noisy, compare within a runtime).", "",
        "Data: TinyCNN — calibration 256 training digits, evaluation the 540 test digits (accuracy against the "
        "labels); MobileNetV2 and EfficientNet-Lite0 — calibration 100 photo crops (`split='calib'`), evaluation "
        "200 disjoint crops (`split='eval'`); agreement = top-1 equal to the fp32 model's, SQNR = "
        "10·log10(Σf²/Σ(f − q)²) over all logits. EfficientNet-Lite0's crops are normalized with mean 0.5 / "
        "std 0.5. minquant: `quantize_precision(graph, precision, calib, target='x86')` from one prepared float "
        "graph (BatchNorm folded, cross-layer equalized); the int8 row is `quantize_static`'s defaults. int4: "
        "groups of 32 weights along each row ((kh, kw, c) for convolutions), symmetric, float16 scales; a layer "
        "whose row length is not a multiple of 32 (depthwise 3×3: 9, the first conv: 27) takes one group per "
        "output channel. Bytes: minquant `size_bytes()` (int4 packed two per byte); torch: parameter bytes "
        "(fp16: 2 per parameter; int8: the quantized model's stored weights); ONNX Runtime: the file's "
        "initializers.", "",
        "fp16 arithmetic (measured, minquant/kernels/fp16.py): torch `.half()` on this CPU rounds every op's output "
        "to float16 after a float32 computation (a conv's output equals the float32 result rounded on all but "
        "0.1–0.2 % of values, linear 0.25–0.5 %: float32 sums in another order); minquant's fp16 does the same. "
        "ONNX Runtime 1.32's CPU provider has no float16 Conv/Gemm on x86: it casts the float16 model's weights and "
        "input to float32 once and runs the whole graph in float32 (no rounding between ops) — minquant's "
        "`Precision(FP16, FP32)` ('fp16 weights').", "",
        table, "",
        "![ladder](../docs/figures/precision_ladder.png)", "",
        "## Mixed precision: the choice per layer", "",
        "Sensitivity: for each candidate the whole model is lowered once; each layer alone is then taken from it "
        "into the float model and the output SQNR is measured on 8 held-out calibration crops (columns \"… dB\"). "
        "The chooser adds the layers' relative noises (greedy by noise per byte) and checks the built model.", "",
    ]
    for name, tbs in tables.items():
        for tb in tbs:
            parts += [f"### {name}", "", "```", tb, "```", ""]
    with atomic_write(RESULTS, "w") as f:
        f.write("\n".join(parts))
    print(f"wrote {RESULTS} and {', '.join(map(str, figs))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
