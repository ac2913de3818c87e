"""``minquant demo``: the Day-2 lesson's exercise end to end, on real data that installs with minquant.

Two models, one table:

* **TinyCNN** — the seed's model, trained on scikit-learn's digits (:func:`minquant.data.zoo.tiny_cnn_digits`,
  cached); accuracy on the 540 test digits.
* **MobileNetV2** — torchvision's model with torchvision's ImageNet weights
  (:func:`minquant.data.zoo.mobilenet_v2_imagenet`); no ImageNet here, so the measure is top-1 *agreement* with
  the fp32 model and logit SQNR on crops of scikit-image's photos (:func:`minquant.data.datasets.photo_crops`,
  calibration and evaluation crops from disjoint halves of each photo).

Rows per model (the seed's exercises 1–5 and its challenge):

1. fp32 baseline (torch).
2. PyTorch ``quantize_dynamic(model, {nn.Linear, nn.Conv2d}, dtype=torch.qint8)`` exactly as the seed writes
   it — and what it actually quantized (:func:`minquant.quantized.report_torch_quantized`: its Conv2d stay
   float).
3. PyTorch eager static int8 (QuantStub/DeQuantStub, fuse, calibrate, convert), and minquant running that
   very model (:func:`minquant.interop.torch.quantized_import`): the logits must be bit-identical.
4. minquant dynamic (:func:`minquant.quantize_dynamic`, Linear *and* Conv2d), minquant static per-tensor
   and per-channel (:func:`minquant.quantize_static`).
5. Pruned: TinyCNN magnitude-pruned to 90 % and fine-tuned on digits, then int8; MobileNetV2 pruned
   *without* fine-tuning (there is no ImageNet to fine-tune on) — the rows say how much that costs.
6. Distilled student (TinyCNN only): a 9k-parameter CNN trained on 100 digits from scratch vs with
   TinyCNN as teacher (:func:`minquant.distill.train`), then int8.
7. ONNX: ``torch.onnx.export`` run by ONNX Runtime (fp32), ONNX Runtime's own ``quantize_static`` (QDQ),
   and minquant's int8 model exported with ``to_onnx`` (QDQ and QOperator) run by ONNX Runtime — if the
   exporter is installed (checked at run time), else the row says "not yet available".
8. LiteRT: minquant's int8 model for LiteRT (``quantize_static(target='litert')``) written with ``to_tflite`` and
   run by the LiteRT interpreter (XNNPACK, its default path, one thread), and minquant running that very
   ``.tflite`` (``from_tflite``): the logits must be bit-identical — if ``ai_edge_litert`` is installed, else the
   rows say so.

Latency is measured at the end of each model's block, round-robin over its variants
(:func:`measure_latencies`), so that a load change on a shared machine hits them all alike.

Columns: bytes of the saved file (``torch.save(state_dict)`` / ``QuantizedModel.save`` / the ``.onnx``),
bytes of the stored parameters (fp32: 4 per parameter, as the seed counts; torch int8: the weights, biases
and scales of its quantized layers; minquant: ``size_bytes()``; ONNX: the initializers), batch-1 latency
(one thread, median after a warm-up), digits test accuracy, top-1 agreement with the model's fp32 row and
logit SQNR = 10·log10(Σf²/Σ(f − q)²) against it.

Then the lesson's precision ladder on TinyCNN (:func:`ladder_rows`): fp32 → fp16 → int8 → int4 weights
(W4A16, W4A8) and two mixed-precision models, with :func:`minquant.quantize_precision` and
:func:`minquant.quantize_mixed`, scored on the 540 test digits — a table of its own, and the plot
``precision_ladder.png`` (size against top-1 agreement, beside the main table's fp32 and int8 rows of both
models). MobileNetV2's ladder is ``benchmarks/precision_ladder.py`` (too slow for the demo).

``main(quick=True)`` uses fewer photo crops, fewer timing repeats and fewer fine-tuning epochs. With a
``report_dir`` the demo also writes PNG figures (:mod:`minquant.lesson.report`), ``results.json`` and
``report.md`` there. The frameworks' recipes are in :mod:`minquant.frameworks.torch_oracle` and
:mod:`minquant.frameworks.ort_oracle` (beside the operator-level test oracles). Imports torch: not part of the
numpy-only core.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..files import atomic_write


__all__ = ["main", "Row", "Settings", "settings", "format_table", "markdown_table"]


# ------------------------------------------------------------------------------------------------------
# what is measured, and how much of it
# ------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the demo's table. Fractions in [0, 1]; None = not measured / not applicable."""
    model: str
    variant: str
    runtime: str                      # 'torch', 'minquant', 'ONNX Runtime', 'LiteRT'
    file_bytes: int | None = None     # bytes of the saved file
    param_bytes: int | None = None    # bytes of the stored parameters (see module docstring)
    ms: float | None = None           # batch 1, one thread, median (a pending _Timed until measured)
    accuracy: float | None = None     # digits test accuracy
    agreement: float | None = None    # top-1 agreement with the fp32 row
    sqnr_db: float | None = None      # logit SQNR against the fp32 row
    note: str = ""


@dataclass
class Settings:
    quick: bool
    tiny_repeats: int          # timed calls, TinyCNN
    big_repeats: int           # timed calls, MobileNetV2 (dynamic: fewer, it is slow)
    n_calib: int               # MobileNetV2 calibration crops
    n_eval: int                # MobileNetV2 evaluation crops
    n_eval_dynamic: int        # evaluation crops for minquant's dynamic MobileNetV2 (~0.5 s per crop)
    finetune_epochs: int       # TinyCNN pruning fine-tune
    sparsity_finetuned: tuple  # TinyCNN sparsities fine-tuned for the curve (90 % is the table's row)
    compare_samples: int       # MobileNetV2 samples for the per-layer SQNR
    dynamic_repeats: int       # timed calls of minquant's dynamic models (one warm-up call)
    tiny_compare_samples: int  # TinyCNN test digits for the per-layer SQNR
    distill_epochs: int = 60
    distill_per_class: int = 10
    ladder_repeats: int = 50   # timed calls of each TinyCNN ladder rung (the int4 ones take 17–29 ms each)


def settings(quick: bool) -> Settings:
    if quick:
        return Settings(True, tiny_repeats=30, big_repeats=5, n_calib=16, n_eval=24, n_eval_dynamic=4,
                        finetune_epochs=3, sparsity_finetuned=(0.9,), compare_samples=8, dynamic_repeats=2,
                        tiny_compare_samples=128, ladder_repeats=10)
    return Settings(False, tiny_repeats=200, big_repeats=20, n_calib=100, n_eval=200, n_eval_dynamic=200,
                    finetune_epochs=20, sparsity_finetuned=(0.5, 0.7, 0.9), compare_samples=32,
                    dynamic_repeats=10, tiny_compare_samples=540)


@contextlib.contextmanager
def _step(what: str):
    """A short progress line per long step: '  · what … 2.3 s'."""
    print(f"  · {what} …", end="", flush=True)
    t = time.perf_counter()
    yield
    print(f" {time.perf_counter() - t:.1f} s", flush=True)


# ------------------------------------------------------------------------------------------------------
# measuring helpers
# ------------------------------------------------------------------------------------------------------
def _agree(f, q) -> float:
    return float((np.asarray(f).argmax(1) == np.asarray(q).argmax(1)).mean())


def _sqnr(f, q) -> float:
    from ..quantized.comparison import sqnr_db
    return float(sqnr_db(f, q))


def _mq_logits(qm, x, batch: int = 25) -> np.ndarray:
    return np.concatenate([np.asarray(qm(x[i:i + batch])) for i in range(0, len(x), batch)])


@dataclass
class _Timed:
    """A latency still to measure: ``fn()`` runs the variant on one batch-1 input."""
    fn: object
    repeats: int
    warmup: int = 2


def _torch_timed(model, x1, repeats: int) -> _Timed:
    import torch
    t = torch.from_numpy(np.ascontiguousarray(x1))

    def call():
        with torch.inference_mode():
            return model(t)
    return _Timed(call, repeats)


def measure_latencies(rows: list) -> None:
    """Replace every pending :class:`_Timed` latency of ``rows`` by milliseconds, measured round-robin:
    each variant is warmed up (``warmup`` untimed calls — JIT compilation, caches), then the variants are
    called in turn, one timed call each per round, and each gets the median of its ``repeats`` times
    (``time.perf_counter``). Interleaving makes a load change on a shared machine hit every variant alike,
    instead of whichever happened to be timed at that moment. Same rule as :func:`minquant.lesson.timing.median_ms`
    otherwise."""
    items = [r for r in rows if isinstance(r.ms, _Timed)]
    for r in items:
        for _ in range(r.ms.warmup):
            r.ms.fn()
    times = {id(r): [] for r in items}
    for i in range(max((r.ms.repeats for r in items), default=0)):
        for r in items:
            if i < r.ms.repeats:
                t = time.perf_counter()
                r.ms.fn()
                times[id(r)].append(time.perf_counter() - t)
    for r in items:
        r.ms = 1e3 * float(np.median(times[id(r)]))


def _saved_bytes(qm) -> int:
    with tempfile.TemporaryDirectory() as d:
        return os.path.getsize(qm.save(Path(d) / "model.mq.npz"))


def _fp32_param_bytes(model) -> int:
    return 4 * sum(p.numel() for p in model.parameters())


def _torch_q_param_bytes(qmodel) -> int:
    from ..quantized import report_torch_quantized
    return sum(r.bytes for r in report_torch_quantized(qmodel).layers)


def _scores(row: Row, f_ref, logits, y=None, sqnr: bool = True) -> Row:
    row.agreement = _agree(f_ref, logits)
    if sqnr:
        row.sqnr_db = _sqnr(f_ref, logits)
    if y is not None:
        row.accuracy = float((np.asarray(logits).argmax(1) == y).mean())
    return row


def _to_onnx():
    """minquant's ONNX exporter, if installed: ``fn(qm, path, format)`` or None."""
    try:
        from ..interop.onnx.exporter import to_onnx
    except Exception:   # not written yet / onnx missing
        return None
    return lambda qm, path, fmt: (qm.to_onnx(path, format=fmt) if hasattr(qm, "to_onnx")
                                  else to_onnx(qm, path, format=fmt))


# ------------------------------------------------------------------------------------------------------
# the rows every model gets
# ------------------------------------------------------------------------------------------------------
def _common_rows(name, model, shape, calib, x_eval, y_eval, f_ref, x1, reps, torch_static, cfg, art,
                 n_eval_dynamic=None):
    """fp32, torch dynamic (seed), torch static + minquant's run of it, minquant dynamic / static."""
    from ..frameworks import torch_oracle
    from ..interop.torch import from_torch_quantized
    from ..quantized import quantize_dynamic, quantize_static, report_torch_quantized

    rows = []
    r = Row(name, "fp32", "torch", torch_oracle.state_dict_file_bytes(model), _fp32_param_bytes(model),
            _torch_timed(model, x1, reps), note="the reference for 'agree' and 'SQNR'")
    r.accuracy = None if y_eval is None else float((f_ref.argmax(1) == y_eval).mean())
    rows.append(r)

    with _step("PyTorch quantize_dynamic, as the seed writes it"):
        qd = torch_oracle.seed_quantize_dynamic(model)
        rep = report_torch_quantized(qd)
        kinds = rep.by_kind()
        conv_q, conv_n = kinds.get("conv2d", (0, 0))
        lin_q, lin_n = kinds.get("linear", (0, 0))
        r = Row(name, "torch quantize_dynamic (seed's line)", "torch", torch_oracle.state_dict_file_bytes(qd),
                _torch_q_param_bytes(qd),
                _torch_timed(qd, x1, reps),
                note=f"int8: {lin_q}/{lin_n} Linear, {conv_q}/{conv_n} Conv2d (Conv2d stays float)")
        rows.append(_scores(r, f_ref, torch_oracle.torch_logits(qd, x_eval), y_eval))
    art[f"{name}_torch_dynamic_report"] = str(rep)

    with _step("PyTorch static int8 (QuantStub/DeQuantStub, fuse, calibrate, convert; engine x86)"):
        tq = torch_static(calib)
        t_logits = torch_oracle.torch_logits(tq, x_eval)
        r = Row(name, "torch static int8 (eager, x86)", "torch", torch_oracle.state_dict_file_bytes(tq),
                _torch_q_param_bytes(tq), _torch_timed(tq, x1, reps))
        rows.append(_scores(r, f_ref, t_logits, y_eval))
    with _step("minquant runs torch's int8 model (from_torch_quantized)"):
        mt = from_torch_quantized(tq, shape, engine="x86")
        m_logits = _mq_logits(mt, x_eval)
        differ = int((m_logits != t_logits).sum())
        r = Row(name, "  torch's int8 model, run by minquant", "minquant", _saved_bytes(mt), mt.size_bytes(),
                _Timed(partial(mt, x1), reps),
                note=f"bit-identical to torch: {differ}/{t_logits.size} logits differ")
        rows.append(_scores(r, f_ref, m_logits, y_eval))
    art.setdefault("bit_exact", []).append((name, differ, t_logits.size))
    rows += _pt2e_rows(name, model, shape, calib, x_eval, y_eval, f_ref, x1, reps, art)

    with _step("minquant quantize_dynamic (Linear and Conv2d)"):
        qm = quantize_dynamic(model, input_shape=shape)
        rep_d = qm.report
        xe = x_eval if n_eval_dynamic is None else x_eval[:n_eval_dynamic]
        kinds = rep_d.by_kind()
        note = ", ".join(f"{q}/{t} {k}" for k, (q, t) in kinds.items()) + " int8"
        if len(xe) < len(x_eval):
            note += f"; scored on the first {len(xe)} crops"
        r = Row(name, "minquant dynamic int8", "minquant", _saved_bytes(qm), qm.size_bytes(),
                _Timed(partial(qm, x1), cfg.dynamic_repeats, warmup=1), note=note)
        rows.append(_scores(r, f_ref[:len(xe)], _mq_logits(qm, xe, batch=8), None if y_eval is None
                            else y_eval[:len(xe)]))

    for per_channel in (False, True):
        label = "per-channel" if per_channel else "per-tensor"
        with _step(f"minquant quantize_static, {label} weights"):
            qm = quantize_static(model, calib, per_channel=per_channel, batch_size=16, progress=False)
            r = Row(name, f"minquant static int8, {label}", "minquant", _saved_bytes(qm), qm.size_bytes(),
                    _Timed(partial(qm, x1), reps),
                    note=f"{qm.meta['calibrator']} calibration, {qm.meta['calibration_samples']} samples")
            rows.append(_scores(r, f_ref, _mq_logits(qm, x_eval), y_eval))
        art[f"{name}_static_{label}"] = qm
    return rows


def _onnx_rows(name, model, shape, calib, x_eval, y_eval, f_ref, x1, reps, art):
    """torch.onnx.export → ONNX Runtime fp32; ORT quantize_static (QDQ); minquant to_onnx → ORT."""
    from ..frameworks import ort_oracle, torch_oracle
    from ..quantized import quantize_static

    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        with _step("torch.onnx.export, ONNX Runtime fp32"):
            fp32 = torch_oracle.export_onnx(model, shape, d / "model.onnx")
            run = ort_oracle.ort_runner(fp32)
            r = Row(name, "ONNX Runtime fp32 (torch.onnx.export)", "ONNX Runtime", fp32.stat().st_size,
                    ort_oracle.onnx_initializer_bytes(fp32), _Timed(partial(run, x1), reps))
            rows.append(_scores(r, f_ref, run(x_eval), y_eval))
        with _step("ONNX Runtime quantize_static (QDQ, per-channel, MinMax)"):
            int8 = ort_oracle.ort_quantize(fp32, calib, d / "model_int8.onnx", "qdq", pre_process=True)
            run = ort_oracle.ort_runner(int8)
            r = Row(name, "ONNX Runtime int8 (its quantize_static, QDQ)", "ONNX Runtime", int8.stat().st_size,
                    ort_oracle.onnx_initializer_bytes(int8), _Timed(partial(run, x1), reps),
                    note=f"MinMax calibration, {len(calib)} samples")
            rows.append(_scores(r, f_ref, run(x_eval), y_eval))
        export = _to_onnx()
        if export is None:
            for fmt in ("QDQ", "QOperator"):
                rows.append(Row(name, f"ONNX Runtime runs minquant int8 ({fmt})", "ONNX Runtime",
                                note="not yet available: minquant.interop.onnx.exporter is not installed"))
            return rows
        with _step("minquant quantize_static(target='onnxruntime') → to_onnx → ONNX Runtime"):
            qm = quantize_static(model, calib, target="onnxruntime", batch_size=16, progress=False)
            mine = _mq_logits(qm, x_eval)
            for fmt in ("qdq", "qoperator"):
                label = {"qdq": "QDQ", "qoperator": "QOperator"}[fmt]
                try:
                    path = Path(export(qm, d / f"model_mq_{fmt}.onnx", fmt))
                    run = ort_oracle.ort_runner(path)
                    got = run(x_eval)
                except Exception as e:  # the exporter is new: report, do not crash the demo
                    rows.append(Row(name, f"ONNX Runtime runs minquant int8 ({label})", "ONNX Runtime",
                                    note=f"not yet available: {type(e).__name__}: {str(e)[:80]}"))
                    continue
                differ = int((got != mine).sum())
                r = Row(name, f"ONNX Runtime runs minquant int8 ({label})", "ONNX Runtime", path.stat().st_size,
                        ort_oracle.onnx_initializer_bytes(path), _Timed(partial(run, x1), reps),
                        note=f"vs minquant target='onnxruntime': {differ}/{got.size} logits differ")
                rows.append(_scores(r, f_ref, got, y_eval))
                art.setdefault("ort_exact", []).append((name, label, differ, got.size))
    return rows


def _litert_rows(name, model, calib, x_eval, y_eval, f_ref, x1, reps, art):
    """minquant int8 for LiteRT → ``to_tflite`` → the LiteRT interpreter (XNNPACK, one thread); minquant
    running the file (``from_tflite``, target 'litert') — the interpreter's and minquant's logits compared."""
    from ..quantized import quantize_static
    try:
        from ..interop.litert import from_tflite, tflite_bytes
        from ..interop.litert.flatbuffer import read_model
        from ..interop.litert.runtime import interpreter, run_tflite
        import ai_edge_litert  # noqa: F401
    except ImportError as e:
        return [Row(name, v, "LiteRT" if "LiteRT" in v else "minquant", note=f"not available: {e}")
                for v in ("LiteRT runs minquant int8 (.tflite, XNNPACK)", "  minquant's .tflite, run by minquant")]

    def nhwc(x):
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    rows = []
    with _step("minquant quantize_static(target='litert') → to_tflite → LiteRT interpreter (XNNPACK)"):
        qm = quantize_static(model, calib, target="litert", batch_size=16, progress=False)
        data = tflite_bytes(qm)
        it = interpreter(data, "xnnpack")
        got = run_tflite(it, nhwc(x_eval), "xnnpack")
        consts = sum(t.data.nbytes for t in read_model(data).tensors if t.data is not None)
        r = Row(name, "LiteRT runs minquant int8 (.tflite, XNNPACK)", "LiteRT", len(data), consts,
                _Timed(partial(run_tflite, it, nhwc(x1), "xnnpack"), reps), note="LiteRT's rules: int8 "
                "activations, weights in [-127, 127]")
        rows.append(_scores(r, f_ref, got, y_eval))
    with _step("minquant runs the .tflite (from_tflite, target 'litert')"):
        back = from_tflite(data, target="litert")
        mine = _mq_logits(back, x_eval)
        differ = int((mine != got).sum())
        r = Row(name, "  minquant's .tflite, run by minquant", "minquant", len(data), back.size_bytes(),
                _Timed(partial(back, x1), reps), note=f"bit-identical to LiteRT (XNNPACK): {differ}/{got.size} differ")
        rows.append(_scores(r, f_ref, mine, y_eval))
    art.setdefault("litert_exact", []).append((name, differ, got.size))
    return rows


# ------------------------------------------------------------------------------------------------------
# TinyCNN
# ------------------------------------------------------------------------------------------------------
FIRST_CONV = "features.0"
TINY_LAYERS = ("features.0", "features.2", "classifier")


def _rest_amount(model, target: float) -> float:
    """Per-layer prune amount for the layers after the first conv so that all conv/linear weights reach
    ``target`` (the first conv, 1 % of the weights, stays dense: benchmarks/prune_tinycnn.py)."""
    sizes = {n: model.get_submodule(n).weight.numel() for n in TINY_LAYERS}
    total = sum(sizes.values())
    return min(1.0, target * total / (total - sizes[FIRST_CONV]))


def _prune_tiny(base, target, epochs, x_tr, y_tr):
    """One-shot per-layer magnitude pruning to ``target`` sparsity (first conv dense), then ``epochs`` of
    fine-tuning with the mask held (the recipe and seed of benchmarks/prune_tinycnn.py's one-shot row)."""
    from ..prune import masked_training, prune_magnitude
    from ..data.training import fit
    model = copy.deepcopy(base)
    masks = prune_magnitude(model, _rest_amount(base, target), scope="layer", exclude=(FIRST_CONV,))
    if epochs:
        with masked_training(model, masks):
            fit(model, x_tr, y_tr, epochs=epochs, lr=1e-3, seed=10)
    return model


def _weight_sparsity(model, names) -> float:
    ws = [model.get_submodule(n).weight for n in names]
    return 1 - sum(int((w != 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def tinycnn_rows(cfg: Settings, art: dict) -> list[Row]:
    from ..frameworks import torch_oracle
    from ..distill import count_params, stratified_subset, student_cnn, train
    from ..prune import storage_report
    from ..quantized import quantize_static
    from ..data.training import predict_logits
    from ..data.zoo import tiny_cnn_digits
    import torch

    name = "TinyCNN"
    with _step("TinyCNN trained on digits (cached after the first run)"):
        model, (x_tr, y_tr, x_te, y_te) = tiny_cnn_digits()
    f_ref = predict_logits(model, x_te)
    x1, calib, reps = x_te[:1], x_tr[:256], cfg.tiny_repeats
    rows = _common_rows(name, model, (1, 1, 28, 28), calib, x_te, y_te, f_ref, x1, reps,
                        lambda c: torch_oracle.torch_static_tinycnn(model, c, "x86"), cfg, art)
    art["tiny"] = dict(model=model, data=(x_tr, y_tr, x_te, y_te))

    # pruning: 90 % one-shot + fine-tune (the table), plus the accuracy-vs-sparsity curve
    points = []
    with _step("pruning curve without fine-tuning (one-shot magnitude, 0–95 %)"):
        for s in (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95):
            m = _prune_tiny(model, s, 0, x_tr, y_tr)
            acc = float((predict_logits(m, x_te).argmax(1) == y_te).mean())
            points.append(("one-shot, no fine-tuning (float)", _weight_sparsity(m, TINY_LAYERS), acc))
    pruned90 = None
    for s in cfg.sparsity_finetuned:
        with _step(f"prune {s:.0%} + fine-tune {cfg.finetune_epochs} epochs, then minquant static int8"):
            m = _prune_tiny(model, s, cfg.finetune_epochs, x_tr, y_tr)
            qm = quantize_static(m, calib, batch_size=64, progress=False)
            sp = _weight_sparsity(m, TINY_LAYERS)
            pf = predict_logits(m, x_te)
            pq = _mq_logits(qm, x_te, batch=100)
            points.append((f"one-shot + {cfg.finetune_epochs} epochs fine-tuning (float)", sp,
                           float((pf.argmax(1) == y_te).mean())))
            points.append((f"one-shot + {cfg.finetune_epochs} epochs fine-tuning → minquant int8", sp,
                           float((pq.argmax(1) == y_te).mean())))
            if abs(s - 0.9) < 1e-9:
                pruned90 = (m, qm, pf, pq, sp)
    art["tiny_sparsity"] = points
    if pruned90 is not None:
        m, qm, pf, pq, sp = pruned90
        best = storage_report(m)["best"]
        r = Row(name, f"pruned {sp:.0%} (magnitude) + {cfg.finetune_epochs} ep fine-tune", "torch",
                torch_oracle.state_dict_file_bytes(m), _fp32_param_bytes(m), _torch_timed(m, x1, reps),
                note=f"zeros stored dense by torch; best sparse encoding {best:,} B")
        rows.append(_scores(r, f_ref, pf, y_te, sqnr=False))
        r = Row(name, "  pruned → minquant static int8", "minquant", _saved_bytes(qm), qm.size_bytes(),
                _Timed(partial(qm, x1), reps), note="int8 weights saved in their smallest sparse encoding")
        rows.append(_scores(r, f_ref, pq, y_te, sqnr=False))

    # distillation: student on 100 digits, from scratch vs with TinyCNN as teacher
    xs, ys = stratified_subset(x_tr, y_tr, cfg.distill_per_class, seed=0)
    torch.manual_seed(0)
    init = student_cnn()
    kw = dict(epochs=cfg.distill_epochs, batch_size=16, lr=1e-3, seed=0, progress=False,
              eval_every=cfg.distill_epochs)
    n_s, n_t = count_params(init), count_params(model)
    with _step(f"student CNN ({n_s:,} params) on {len(xs)} digits: scratch, then distilled from TinyCNN"):
        scratch = train(copy.deepcopy(init), None, (xs, ys, x_te, y_te), **kw).student
        kd = train(copy.deepcopy(init), model, (xs, ys, x_te, y_te), T=4.0, alpha=0.7, **kw).student
        qkd = quantize_static(kd, [xs], progress=False)
    for label, m, note in ((f"student, scratch ({len(xs)} images)", scratch,
                            f"{n_t / n_s:.1f}× fewer params than TinyCNN"),
                           (f"student, distilled from TinyCNN ({len(xs)} images)", kd,
                            "T=4, α=0.7, ×T²; agreement = with the teacher")):
        r = Row(name, label, "torch", torch_oracle.state_dict_file_bytes(m), _fp32_param_bytes(m),
                _torch_timed(m, x1, reps), note=note)
        rows.append(_scores(r, f_ref, predict_logits(m, x_te), y_te, sqnr=False))
    r = Row(name, "  distilled student → minquant static int8", "minquant", _saved_bytes(qkd), qkd.size_bytes(),
            _Timed(partial(qkd, x1), reps), note=f"calibrated on its {len(xs)} training images")
    rows.append(_scores(r, f_ref, _mq_logits(qkd, x_te, batch=100), y_te, sqnr=False))

    rows += _onnx_rows(name, model, (1, 1, 28, 28), calib, x_te, y_te, f_ref, x1, reps, art)
    rows += _litert_rows(name, model, calib, x_te, y_te, f_ref, x1, reps, art)
    with _step(f"latency of {sum(isinstance(r.ms, _Timed) for r in rows)} variants, batch 1, round-robin"):
        measure_latencies(rows)
    art["ladder"] = ladder_rows(name, model, calib, x_tr[256:256 + LADDER_HELD_OUT], x_te, y_te, f_ref, x1,
                                cfg.ladder_repeats)
    return rows


# ------------------------------------------------------------------------------------------------------
# the precision ladder (TinyCNN): fp32 → fp16 → int8 → int4, and mixed
# ------------------------------------------------------------------------------------------------------
LADDER_HELD_OUT = 8       # training digits after the calibration ones: the mixed models' sensitivity samples
LADDER_MIN_SQNR_DB = 30.0


def ladder_rows(name, model, calib, x_sens, x_eval, y_eval, f_ref, x1, reps) -> list[Row]:
    """The lesson's ladder on one model with the public API, every rung from one prepared float graph
    (BatchNorm folded, cross-layer equalized on ``calib``) as ``benchmarks/precision_ladder.py`` does it for
    TinyCNN, MobileNetV2 and EfficientNet-Lite0::

        g, _, _ = prepare_graph(model, batches)
        qm = quantize_precision(g, precision, batches, target="x86", equalize=False)    # each rung
        qm = quantize_mixed(g, calib, Budget(...), x_sensitivity=x_sens, equalize=False, sensitivity=sens)

    Rungs: fp32 (minquant's float executor on that graph), fp16, int8 (``quantize_static``'s defaults),
    W4A16 and W4A8 (int4 weights in groups of 32, float / int8 activations); then two mixed models, each
    layer at the lowest precision its measured sensitivity allows: within int8's bytes, and with an output
    SQNR ≥ 30 dB. Sensitivity is measured on ``x_sens`` (held-out samples calibration does not see).
    Rows (runtime 'minquant'): file bytes = the saved ``.npz``, param bytes = ``size_bytes()`` (int4 packed
    two per byte), accuracy / agreement / SQNR on ``x_eval`` (batches of 25) against ``f_ref``; latencies
    measured round-robin, ``reps`` calls each."""
    from ..quantized import FP16, FP32, INT8, Budget, quantize_mixed, quantize_precision, w4a8, w4a16
    from ..quantized.mixed import sensitivity_of
    from ..quantized.precision_convert import prepare_graph

    batches = [calib[i:i + 32] for i in range(0, len(calib), 32)]
    rows, lowered = [], {}
    with _step(f"precision ladder: fp32, fp16, int8, W4A16, W4A8 (quantize_precision), scored on "
               f"{len(x_eval)} samples"):
        g, _, _ = prepare_graph(model, batches)
        for p in (FP32, FP16, INT8, w4a16(32), w4a8(32)):
            qm = lowered[p] = quantize_precision(g, p, batches, target="x86", equalize=False)
            note = {FP32: "BatchNorm folded, equalized: the graph every rung starts from",
                    INT8: "quantize_static's defaults (per-channel, percentile, bias correction)"}.get(p, "")
            if p.weights.name == "INT4":
                k = qm.meta["int4_group_sizes"]
                note = (f"{sum(v == 32 for v in k.values())} of {len(k)} layers in groups of 32, the rest one "
                        f"group per output channel")
            r = Row(name, p.name, "minquant", _saved_bytes(qm), qm.size_bytes(), _Timed(partial(qm, x1), reps),
                    note=note)
            rows.append(_scores(r, f_ref, _mq_logits(qm, x_eval), y_eval))
    int8_bytes = lowered[INT8].size_bytes()
    with _step(f"mixed precision: sensitivity on {len(x_sens)} held-out samples, then ≤ int8's bytes and "
               f"≥ {LADDER_MIN_SQNR_DB:g} dB"):
        sens = sensitivity_of(g, {p: qm for p, qm in lowered.items() if p is not FP32}, x_sens)
        for variant, budget in (("mixed ≤ int8's bytes", Budget(max_bytes=int8_bytes)),
                                (f"mixed ≥ {LADDER_MIN_SQNR_DB:g} dB", Budget(min_sqnr_db=LADDER_MIN_SQNR_DB))):
            qm = quantize_mixed(g, calib, budget, x_sensitivity=x_sens, equalize=False, sensitivity=sens)
            mx = qm.meta["mixed"]
            counts: dict = {}
            for c in mx["choice"].values():
                counts[c] = counts.get(c, 0) + 1
            note = (f"{budget.describe()}: " + ("met" if mx["met"] else "NOT met") + f" on {len(x_sens)} held-out "
                    f"samples ({mx['measured_sqnr_db']:.1f} dB there); layers: "
                    + ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
            r = Row(name, variant, "minquant", _saved_bytes(qm), qm.size_bytes(), _Timed(partial(qm, x1), reps),
                    note=note)
            rows.append(_scores(r, f_ref, _mq_logits(qm, x_eval), y_eval))
    with _step(f"latency of the {len(rows)} ladder rungs, batch 1, round-robin, {reps} calls each"):
        measure_latencies(rows)
    return rows


#: rows of the main table drawn beside the ladder: {variant: label in the plot}. minquant's own rows only for
#: a model without a ladder (with one, they repeat its int8 rung).
LADDER_FROM_TABLE = {"fp32": "fp32", "torch static int8 (eager, x86)": "int8",
                     "ONNX Runtime int8 (its quantize_static, QDQ)": "int8",
                     "LiteRT runs minquant int8 (.tflite, XNNPACK)": "int8",
                     "minquant static int8, per-tensor": "int8 per-tensor",
                     "minquant static int8, per-channel": "int8 per-channel"}


def ladder_plot_rows(rows: list[Row], ladder: list[Row]) -> list[dict]:
    """What :func:`minquant.lesson.report.plot_ladder` draws: the ladder's rows, and the main table's fp32 and
    int8 rows of every model (:data:`LADDER_FROM_TABLE`; the fp32 row agrees with itself). Bytes: the stored
    parameters (param bytes)."""
    laddered = {r.model for r in ladder}
    out = [dict(asdict(r), size_bytes=r.param_bytes) for r in ladder]
    for r in rows:
        label = LADDER_FROM_TABLE.get(r.variant)
        if label is None or (r.runtime == "minquant" and r.model in laddered):
            continue
        d = dict(asdict(r), size_bytes=r.param_bytes, label=label)
        if r.variant == "fp32":
            d["agreement"] = 1.0
        out.append(d)
    return out


def _pt2e_rows(name, model, shape, calib, x_eval, y_eval, f_ref, x1, reps, art):
    """What torch recommends now (torchao pt2e: export → X86InductorQuantizer → calibrate → convert →
    torch.compile with freezing, i.e. oneDNN int8 kernels), and minquant running the same converted model
    (:func:`minquant.from_torch_pt2e`, target ``x86-inductor``). Exported with batch 1, so the compiled model
    is timed and evaluated one sample at a time."""
    from ..frameworks.torch_pt2e import inductor_compile, pt2e_ptq
    from ..interop.torch import from_torch_pt2e
    from ..target import Cpu

    rows = []
    with _step("PyTorch pt2e int8 (torchao: export, X86InductorQuantizer, convert_pt2e, torch.compile)"):
        converted = pt2e_ptq(copy.deepcopy(model), calib, batch=1)
        compiled = inductor_compile(converted)
        p_logits = np.concatenate([compiled(x_eval[i:i + 1]) for i in range(len(x_eval))])
        r = Row(name, "torch pt2e int8 (Inductor, oneDNN)", "torch", None, None,
                _Timed(partial(compiled, x1), reps), note="torch's current flow; eager mode is deprecated")
        rows.append(_scores(r, f_ref, p_logits, y_eval))
    cpu = Cpu.host()
    if not cpu.onednn_vnni:   # oneDNN's int8 kernels below AVX512-VNNI pair products: not reproduced
        rows.append(Row(name, "  torch's pt2e model, run by minquant", "minquant",
                        note=f"not reproduced on this CPU ({cpu.name}): oneDNN below AVX512-VNNI"))
        return rows
    with _step("minquant runs the pt2e model as Inductor lowers it (from_torch_pt2e)"):
        mp = from_torch_pt2e(converted, shape)
        m_logits = np.concatenate([mp(x_eval[i:i + 1]) for i in range(len(x_eval))])
        differ = int((m_logits != p_logits).sum())
        r = Row(name, "  torch's pt2e model, run by minquant", "minquant", _saved_bytes(mp), mp.size_bytes(),
                _Timed(partial(mp, x1), reps), note=f"bit-identical to Inductor: {differ}/{p_logits.size} differ")
        rows.append(_scores(r, f_ref, m_logits, y_eval))
    art.setdefault("pt2e_exact", []).append((name, differ, p_logits.size))
    return rows


# ------------------------------------------------------------------------------------------------------
# MobileNetV2
# ------------------------------------------------------------------------------------------------------
def mobilenet_rows(cfg: Settings, art: dict) -> list[Row]:
    from ..frameworks import torch_oracle
    from ..data.datasets import photo_crops
    from ..prune import prune_channels, prune_magnitude
    from ..data.training import predict_logits
    from ..data.zoo import mobilenet_v2_imagenet

    name = "MobileNetV2"
    with _step(f"MobileNetV2 (ImageNet weights), {cfg.n_calib} calibration + {cfg.n_eval} evaluation crops"):
        model = mobilenet_v2_imagenet()
        calib = photo_crops(cfg.n_calib, split="calib")
        x_ev = photo_crops(cfg.n_eval, split="eval")
        f_ref = predict_logits(model, x_ev, batch_size=16)
    x1, reps = x_ev[:1], cfg.big_repeats
    rows = _common_rows(name, model, (1, 3, 224, 224), calib, x_ev, None, f_ref, x1, reps,
                        lambda c: torch_oracle.torch_static_mobilenet_v2(c, "x86"), cfg, art,
                        n_eval_dynamic=cfg.n_eval_dynamic)
    art["mnv2"] = dict(model=model, calib=calib, eval=x_ev)

    points = []
    with _step("pruning without fine-tuning (global magnitude 0–50 %, channels 2 %)"):
        for s in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5):
            m = copy.deepcopy(model)
            if s:
                prune_magnitude(m, s, scope="global")
            out = predict_logits(m, x_ev, batch_size=16)
            points.append(("global magnitude, no fine-tuning: agreement with fp32", s, _agree(f_ref, out)))
            if abs(s - 0.1) < 1e-9:
                r = Row(name, "pruned 10 % (global magnitude), no fine-tune", "torch",
                        torch_oracle.state_dict_file_bytes(m), _fp32_param_bytes(m), _torch_timed(m, x1, reps),
                        note="no ImageNet here to fine-tune on")
                rows.append(_scores(r, f_ref, out, None))
        m = prune_channels(model, (1, 3, 224, 224), 0.02)
        r = Row(name, "pruned 2 % of channels (L1, removed), no fine-tune", "torch",
                torch_oracle.state_dict_file_bytes(m), _fp32_param_bytes(m), _torch_timed(m, x1, reps),
                note="structured pruning wrecks it without fine-tuning")
        rows.append(_scores(r, f_ref, predict_logits(m, x_ev, batch_size=16), None))
    art["mnv2_sparsity"] = points
    rows.append(Row(name, "distilled student", "", note="skipped: needs ImageNet training images (TinyCNN only)"))
    rows += _onnx_rows(name, model, (1, 3, 224, 224), calib, x_ev, None, f_ref, x1, reps, art)
    rows += _litert_rows(name, model, calib, x_ev, None, f_ref, x1, reps, art)
    with _step(f"latency of {sum(isinstance(r.ms, _Timed) for r in rows)} variants, batch 1, round-robin"):
        measure_latencies(rows)
    return rows


# ------------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------------
_HEAD = ("variant", "runs on", "file bytes", "param bytes", "ms", "accuracy", "agree", "SQNR dB", "note")


def _cells(r: Row) -> tuple:
    def num(v, fmt):
        if v is None:
            return "—"
        if isinstance(v, float) and math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return fmt.format(v)
    return (r.variant, r.runtime or "—", num(r.file_bytes, "{:,}"), num(r.param_bytes, "{:,}"), num(r.ms, "{:.2f}"),
            num(None if r.accuracy is None else 100 * r.accuracy, "{:.2f} %"),
            num(None if r.agreement is None else 100 * r.agreement, "{:.1f} %"), num(r.sqnr_db, "{:.1f}"), r.note)


def format_table(rows: list[Row]) -> str:
    """The table as plain text, one block per model."""
    models = list(dict.fromkeys(r.model for r in rows))
    cells = [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells + [_HEAD]) for i in range(len(_HEAD))]
    right = {2, 3, 4, 5, 6, 7}

    def line(c):
        return "  ".join(x.rjust(w) if i in right else x.ljust(w) for i, (x, w) in enumerate(zip(c, widths))).rstrip()
    out = [line(_HEAD), "  ".join("-" * w for w in widths)]
    for m in models:
        out.append(f"{m}:")
        out += [line(c) for r, c in zip(rows, cells) if r.model == m]
    return "\n".join(out)


def format_sparsity(art: dict) -> str:
    """The pruning curves as text: one line per series, 'sparsity → value' pairs in %."""
    lines = []
    for model, key in (("TinyCNN", "tiny_sparsity"), ("MobileNetV2", "mnv2_sparsity")):
        series: dict = {}
        for name, sp, v in art.get(key) or []:
            series.setdefault(name, []).append((sp, v))
        for name, pts in series.items():
            pairs = ", ".join(f"{100 * sp:.0f} % → {100 * v:.2f} %" for sp, v in sorted(pts))
            lines.append(f"  {model}, {name}: {pairs}")
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    out = ["| model | " + " | ".join(_HEAD) + " |", "|---|---|---|" + "---:|" * 6 + "---|"]
    for r in rows:
        c = _cells(r)
        out.append(f"| {r.model} | " + " | ".join([c[0].strip()] + list(c[1:])) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------------
# the report folder
# ------------------------------------------------------------------------------------------------------
def _float_values(graph, x, names):
    from ..executor import run
    vals = {}
    run(graph, x, hook=lambda k, v: vals.__setitem__(k, v.copy()) if k in names else None)
    return vals


def _weight_panels(label, w, per_channel_reduce=False):
    """Per-tensor grid on the whole tensor; the narrowest channel under the per-tensor grid and under its
    own per-channel grid (quantize_weight: the rule quantize_static uses)."""
    from ..quantized import quantize_weight
    w = np.asarray(w, np.float32)
    _, s_t, _ = quantize_weight(w, per_channel=False)
    _, s_c, _ = quantize_weight(w, per_channel=True)
    rng = np.abs(w.reshape(len(w), -1)).max(1)
    c = int(np.argmin(np.where(rng > 0, rng, np.inf)))
    return [dict(label=f"{label}: all {w.size:,} weights on the per-tensor grid", values=w, scale=float(s_t[0])),
            dict(label=f"{label}: channel {c} (narrowest range) on the same per-tensor grid", values=w[c],
                 scale=float(s_t[0])),
            dict(label=f"{label}: channel {c} on its own per-channel grid", values=w[c], scale=float(s_c[c]))]


def _activation_panel(qm, fvals, qname, fname, what):
    s, z = qm.qparams[qname]
    return dict(label=f"{what} ({fname}), uint8 from {qm.meta.get('calibrator', '?')} calibration",
                values=fvals[fname], scale=float(s), zero_point=int(z), dtype="uint8")


def write_outputs(folder, rows: list[Row], art: dict, cfg: Settings, elapsed: float) -> Path:
    """Figures, results.json and report.md in ``folder`` (each written to a temporary file, then renamed)."""
    from . import report
    from ..quantized import compare
    from ..quantized.passes import fold_batch_norm
    from ..interop.torch.fx_import import from_torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    with _step(f"figures → {folder}"):
        plotted = [dict(asdict(r), size_bytes=r.file_bytes) for r in rows if r.runtime]
        for d in plotted:
            if d["note"].startswith("the reference"):
                d["agreement"] = 1.0            # the fp32 row agrees with itself
        report.plot_variants(plotted,
                             folder / "variants.png",
                             title="Every variant: saved file size, batch-1 latency (one thread), accuracy")
        images.append(("variants.png", "Size, latency and accuracy of every variant"))

        # TinyCNN: weights of conv 2, activations with the static per-channel model's qparams
        model = art["tiny"]["model"]
        x_tr, _, x_te, _ = art["tiny"]["data"]
        qm = art["TinyCNN_static_per-channel"]
        fg = from_torch(model, (1, 1, 28, 28))
        fv = _float_values(fg, x_te[:64], {"x", "features.3", "features.4"})
        panels = _weight_panels("features.2 weights", model.features[2].weight.detach().numpy())
        panels += [_activation_panel(qm, fv, "x:quantize", "x", "input"),
                   _activation_panel(qm, fv, "features.2", "features.3", "conv 2 + ReLU output"),
                   _activation_panel(qm, fv, "features.4", "features.4", "pooled features")]
        report.plot_histograms(panels, folder / "histograms_tinycnn.png",
                               title="TinyCNN: float values, int8 clip range and grid (64 test digits)")
        images.append(("histograms_tinycnn.png", "TinyCNN: weight and activation histograms with the int8 grid"))
        cmp_t = compare(fg, qm, x_te[:cfg.tiny_compare_samples], batch_size=64)
        report.plot_sqnr(cmp_t, folder / "sqnr_tinycnn.png", order=[n.name for n in qm.graph.nodes],
                         title=f"TinyCNN, minquant static int8 per-channel: per-layer SQNR "
                               f"({cfg.tiny_compare_samples} test digits)")
        images.append(("sqnr_tinycnn.png", "TinyCNN: per-layer SQNR, float vs minquant static int8"))
        base_acc = next(r.accuracy for r in rows if r.model == "TinyCNN" and r.variant == "fp32")
        report.plot_sparsity(art["tiny_sparsity"], folder / "sparsity_tinycnn.png", baseline=base_acc,
                             title="TinyCNN on digits: accuracy vs magnitude pruning (first conv kept dense)",
                             ylabel="digits test accuracy (%)")
        images.append(("sparsity_tinycnn.png", "TinyCNN: accuracy vs sparsity, with and without fine-tuning"))

        # MobileNetV2: a depthwise conv's folded weights; the worst layer's activation
        mm = art["mnv2"]["model"]
        qm = art["MobileNetV2_static_per-channel"]
        fg = from_torch(mm, (1, 3, 224, 224))
        folded, _ = fold_batch_norm(fg)
        w = folded.node("features.1.conv.0.0").params["weight"]
        x_ev = art["mnv2"]["eval"][:cfg.compare_samples]
        cmp_m = compare(fg, qm, x_ev, batch_size=8)
        worst = next((r for r in cmp_m.layers if r.op == "qconv2d" and r.name in qm.qparams
                      and r.name not in qm.channel_scales), None)
        names = {"x"} | ({worst.float_name} if worst else set())
        fv = _float_values(fg, x_ev[:8], names)
        panels = _weight_panels("depthwise conv features.1.conv.0.0 (BN folded)", w)
        panels.append(_activation_panel(qm, fv, "x:quantize", "x", "input"))
        if worst is not None:
            panels.append(_activation_panel(qm, fv, worst.name, worst.float_name,
                                            f"worst conv output, {worst.sqnr_db:.1f} dB"))
        report.plot_histograms(panels, folder / "histograms_mobilenet_v2.png",
                               title="MobileNetV2: float values, int8 clip range and grid (8 evaluation crops)")
        images.append(("histograms_mobilenet_v2.png",
                       "MobileNetV2: a depthwise conv's weights per tensor vs per channel; activations"))
        report.plot_sqnr(cmp_m, folder / "sqnr_mobilenet_v2.png", order=[n.name for n in qm.graph.nodes],
                         title=f"MobileNetV2, minquant static int8 per-channel: per-layer SQNR "
                               f"({cfg.compare_samples} evaluation crops)")
        images.append(("sqnr_mobilenet_v2.png", "MobileNetV2: per-layer SQNR, float vs minquant static int8"))
        report.plot_sparsity(art["mnv2_sparsity"], folder / "sparsity_mobilenet_v2.png", baseline=1.0,
                             baseline_label="unpruned (agreement with itself)",
                             title="MobileNetV2 (ImageNet weights): pruning without fine-tuning",
                             ylabel="top-1 agreement with fp32 (%)")
        images.append(("sparsity_mobilenet_v2.png", "MobileNetV2: agreement vs sparsity, no fine-tuning"))

        ladder = art.get("ladder") or []
        if ladder:
            report.plot_ladder(ladder_plot_rows(rows, ladder), folder / "precision_ladder.png",
                               title="The precision ladder: stored bytes against top-1 agreement with fp32")
            images.append(("precision_ladder.png", "The precision ladder: TinyCNN's rungs (the ladder table), and "
                           "the main table's fp32 and int8 rows of both models"))

    doc = {"quick": cfg.quick, "settings": asdict(cfg), "seconds": round(elapsed, 1),
           "load_average": art.get("load"), "rows": [asdict(r) for r in rows],
           "ladder": [asdict(r) for r in art.get("ladder") or []],
           "sparsity": {"TinyCNN": art.get("tiny_sparsity"), "MobileNetV2": art.get("mnv2_sparsity")},
           "torch_quantize_dynamic_report": art.get("TinyCNN_torch_dynamic_report")}
    with atomic_write(folder / "results.json", "w") as f:
        f.write(json.dumps(doc, indent=1, default=str, allow_nan=True))
    notes = _notes(rows, art, cfg)
    intro = (f"`minquant demo{' --quick' if cfg.quick else ''}`: {cfg.n_calib} calibration and {cfg.n_eval} "
             f"evaluation photo crops for MobileNetV2, the 540 test digits for TinyCNN; latency = batch 1, one "
             f"thread, median of {cfg.tiny_repeats} (TinyCNN) / {cfg.big_repeats} (MobileNetV2) calls after a "
             f"warm-up. 'file bytes' = the saved file, 'param bytes' = the stored parameters. "
             f"Numbers in `results.json`. Run time {elapsed:.0f} s; load average (1 min) at start / end: "
             f"{_load_text(art)} on {os.cpu_count()} cores.")
    table = markdown_table(rows)
    if art.get("ladder"):
        table += "\n\n" + ladder_heading(art["ladder"], cfg) + "\n\n" + markdown_table(art["ladder"])
    return report.write_report(folder, table=table, images=images, notes=notes, intro=intro,
                               title="minquant demo — Day 2: Model Optimization")


def ladder_heading(ladder: list[Row], cfg: Settings) -> str:
    """One line above the ladder's table (printed and in report.md)."""
    return (f"The precision ladder, {ladder[0].model}: minquant's `quantize_precision` / `quantize_mixed` from one "
            f"prepared float graph; calibration 256 training digits, sensitivity {LADDER_HELD_OUT} more; "
            f"scored on the 540 test digits; latency median of {cfg.ladder_repeats} calls "
            f"(MobileNetV2's ladder: `./run python -m benchmarks.precision_ladder`, too slow for the demo).")


def _load():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:   # not on every platform
        return None


def _load_text(art) -> str:
    a, b = art.get("load", (None, None))
    return " / ".join("?" if v is None else f"{v:.1f}" for v in (a, b))


def _notes(rows, art, cfg) -> list[str]:
    notes = ["PyTorch's `quantize_dynamic(model, {nn.Linear, nn.Conv2d})` quantizes only the Linear layers: "
             "torch has no dynamic Conv2d, and asking for one is silently ignored:\n\n```\n"
             + art.get("TinyCNN_torch_dynamic_report", "") + "\n```"]
    for name, differ, size in art.get("bit_exact", []):
        notes.append(f"{name}: minquant running torch's eager int8 model — {differ} of {size} logits differ.")
    for name, differ, size in art.get("pt2e_exact", []):
        notes.append(f"{name}: minquant running torch's pt2e model as Inductor lowers it (target "
                     f"'x86-inductor') — {differ} of {size} logits differ.")
    for name, fmt, differ, size in art.get("ort_exact", []):
        notes.append(f"{name}: ONNX Runtime running minquant's exported int8 model ({fmt}) vs minquant "
                     f"target='onnxruntime' — {differ} of {size} logits differ.")
    for name, differ, size in art.get("litert_exact", []):
        notes.append(f"{name}: minquant running its own .tflite (from_tflite, target 'litert') vs the LiteRT "
                     f"interpreter with XNNPACK — {differ} of {size} logits differ.")
    notes.append("MobileNetV2 has no labels here: 'agree' is top-1 agreement with the fp32 model, 'SQNR' the "
                 "logit SQNR against it. TinyCNN's 'agree' is agreement with fp32 TinyCNN (the teacher, for "
                 "the students); SQNR is left out for retrained models (pruned + fine-tuned, students).")
    if cfg.quick:
        notes.append("--quick: few crops, few timing repeats and a short fine-tune; see the full run for "
                     "figures worth quoting.")
    return notes


def main(quick: bool = False, report_dir: str | None = "minquant-report") -> int:
    """Run the demo, print the table, write ``report_dir`` (None: no files). Returns 0, or 1 if minquant's
    run of torch's int8 model is not bit-identical to torch's, or its run of its .tflite to LiteRT's."""
    import torch
    from threadpoolctl import threadpool_limits   # comes with scikit-learn

    torch.set_num_threads(1)
    with threadpool_limits(1):   # NumPy's BLAS (minquant's float GEMMs) on one thread too
        return _main(quick, report_dir)


def _main(quick, report_dir) -> int:
    cfg = settings(quick)
    t0 = time.perf_counter()
    print("minquant demo — Day 2: Model Optimization" + (" (quick)" if quick else ""))
    print("Everything on one thread; latency = batch 1, median after a warm-up.\n")
    art: dict = {"load": (_load(), None)}
    print("TinyCNN (the seed's model) on scikit-learn digits")
    rows = tinycnn_rows(cfg, art)
    print("\nMobileNetV2 with torchvision's ImageNet weights on scikit-image photo crops")
    rows += mobilenet_rows(cfg, art)
    elapsed = time.perf_counter() - t0
    art["load"] = (art["load"][0], _load())
    print("\n" + format_table(rows))
    print("\nfile bytes = the saved file (torch.save(state_dict) / QuantizedModel.save / .onnx); param bytes = "
          "stored parameters\n(fp32: 4 per parameter; torch int8: its quantized layers' weights, biases, scales; "
          "minquant: size_bytes(); ONNX: initializers).")
    print("TinyCNN: accuracy on the 540 test digits; MobileNetV2: top-1 agreement with fp32 and logit SQNR on "
          f"{cfg.n_eval} photo crops.\nLoad average (1 min) at start / end: {_load_text(art)} on {os.cpu_count()} "
          "cores (other work on the machine slows every latency).")
    if art.get("ladder"):
        print("\n" + ladder_heading(art["ladder"], cfg).replace("`", ""))
        print(format_table(art["ladder"]))
    print("\nAccuracy (TinyCNN) / agreement (MobileNetV2) against weight sparsity:")
    print(format_sparsity(art))
    print("\nWhat the seed's quantize_dynamic({nn.Linear, nn.Conv2d}) really did to TinyCNN:")
    print(art.get("TinyCNN_torch_dynamic_report", ""))
    if report_dir is not None:
        path = write_outputs(report_dir, rows, art, cfg, elapsed)
        print(f"\nreport: {path} (figures and results.json beside it)")
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")
    ok = all(d == 0 for _, d, _ in art.get("bit_exact", []) + art.get("pt2e_exact", []) + art.get("litert_exact", []))
    if not ok:
        print("MISMATCH: minquant's run of torch's int8 model (eager or pt2e) or of its .tflite (LiteRT) is not "
              "bit-identical (see the table)")
    return 0 if ok else 1
