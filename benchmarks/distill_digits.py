"""The seed's distillation challenge on scikit-learn's digits (issue 5).

    .venv/bin/python -m benchmarks.distill_digits            # ~30 min on one shared core; writes the files below
    .venv/bin/python -m benchmarks.distill_digits --quick    # smoke run (2 seeds, few configs), writes nothing
    .venv/bin/python -m benchmarks.distill_digits --quantize-only   # ~1 min: re-trains only the scratch and
        # default distilled students (bit-identical to the sweep's), quantizes them with minquant static int8
        # and rewrites only that section of RESULTS_distill.md

Teacher: torchvision ResNet-18 with a 3×3 stride-1 stem and no max-pool (minquant.distill.resnet18_digits,
11.17 M parameters), trained on the full 1,257-image training split at 28×28 and cached as npz.
Student: minquant.distill.student_cnn (conv·conv·linear, 9,098 parameters), trained on a stratified subset
of the training split (``--per-class`` images per class) — small enough that it does not saturate. For each
seed the subset, the student's initial weights and the data order are shared by every arm (scratch and all
distillation configs), so the comparison is paired. Test accuracy on the fixed 540-image test split.

The scratch student and the default distilled student (T = 4, α = 0.7, ×T²) are then quantized with minquant
post-training static int8 (``minquant.quantize_static``, calibrated on the student's own training images) through
``train(..., quantize=int8_static)``.

Writes benchmarks/RESULTS_distill.md (a section for benchmarks/RESULTS.md, per-seed numbers included) and
benchmarks/figures/distill_digits.png.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import platform
import time
from pathlib import Path

import numpy as np
import torch
from minquant.files import atomic_write_text

HERE = Path(__file__).resolve().parent
SECTION = "## Knowledge distillation on digits (issue 5)"


def int8_static(model, calib):
    """The ``train(..., quantize=...)`` hook: minquant post-training static int8 (issue 3) with its defaults —
    per-channel int8 weights, uint8 activations calibrated on ``calib`` (the student's own training images),
    fbgemm's integer arithmetic. Returns a QuantizedModel: callable on NCHW float32 images, ``size_bytes()``."""
    import minquant

    return minquant.quantize_static(model, [calib], per_channel=True, target="fbgemm", progress=False)


def float_bytes(model) -> int:
    return 4 * sum(p.numel() for p in model.parameters())


def _ms(v) -> str:
    v = np.asarray(v, dtype=np.float64)
    return f"{100 * v.mean():.2f} ± {100 * v.std(ddof=1):.2f}" if len(v) > 1 else f"{100 * v.mean():.2f}"


def run(args):
    from tqdm.auto import tqdm

    from minquant.distill import (count_params, stratified_subset, student_cnn, teacher_resnet18_digits,
                                  train)
    from minquant.data.training import accuracy, predict_logits

    torch.set_num_threads(1)
    t0 = time.time()
    teacher, (x_tr, y_tr, x_te, y_te) = teacher_resnet18_digits(epochs=args.teacher_epochs, seed=0,
                                                                progress=True)
    teacher_time = time.time() - t0
    teacher_acc = accuracy(teacher, x_te, y_te)
    n_teacher, n_student = count_params(teacher), count_params(student_cnn())
    print(f"teacher: test accuracy {teacher_acc:.4f}, {n_teacher:,} parameters (ready in {teacher_time:.0f} s)")

    # configurations: (name, T, alpha, scale_by_T2); "seed" = the seed's formula verbatim (no T²)
    main_cfg = f"T{args.main_T:g}_a{args.main_alpha:g}"
    if args.quantize_only:  # only the two students that get quantized; same training as in the sweep
        configs = [(main_cfg, args.main_T, args.main_alpha, True)]
    else:
        configs = [(f"T{T:g}_a{a:g}", T, a, True) for T in args.temps for a in args.alphas]
        configs += [(f"T{T:g}_a0.7_noT2", T, 0.7, False) for T in args.temps if T != 1]
    # eval_every only changes how often the curve is sampled, not the training (evaluation draws no random
    # numbers), so --quantize-only reproduces the sweep's students bit for bit
    curve_cfgs = {"scratch", main_cfg, f"T{args.main_T:g}_a0.7_noT2"}
    acc = {name: [] for name in ["scratch"] + [c[0] for c in configs]}
    curves = {name: [] for name in curve_cfgs}
    quant = {"scratch": [], "kd": []}   # per seed: float acc, int8 acc, int8 bytes, fp32 bytes
    kw = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, progress=False)
    full = None
    # saturation reference: the same student from scratch on all 1,257 images, seed 0
    if args.full_epochs and not args.quantize_only:
        torch.manual_seed(0)
        full = train(student_cnn(), None, (x_tr, y_tr, x_te, y_te), seed=0, epochs=args.full_epochs,
                     batch_size=args.batch_size, lr=args.lr, eval_every=args.full_epochs,
                     progress=True).test_accuracy
        print(f"student from scratch on all {len(x_tr)} images: {full:.4f}")
    summary = ""
    bar = tqdm(total=args.seeds * len(acc), desc="students", unit="run")
    t1 = time.time()
    for seed in range(args.seeds):
        xs, ys = stratified_subset(x_tr, y_tr, args.per_class, seed=seed)
        t_logits = predict_logits(teacher, xs)                 # the teacher runs once per subset
        torch.manual_seed(seed)
        init = student_cnn()
        data = (xs, ys, x_te, y_te)
        for name, T, alpha, t2 in [("scratch", None, None, None)] + configs:
            every = args.epochs // 6 if name in curve_cfgs else args.epochs
            hook = int8_static if name in ("scratch", main_cfg) else None
            if name == "scratch":
                r = train(copy.deepcopy(init), None, data, seed=seed, eval_every=every, quantize=hook, **kw)
            else:
                r = train(copy.deepcopy(init), t_logits, data, seed=seed, T=T, alpha=alpha, scale_by_T2=t2,
                          eval_every=every, quantize=hook, **kw)
            acc[name].append(r.test_accuracy)
            if name in curves:
                curves[name].append([(h["epoch"], h["test_accuracy"]) for h in r.history])
            if hook is not None:
                quant["scratch" if name == "scratch" else "kd"].append(
                    (r.test_accuracy, r.quantized_accuracy, r.quantized.size_bytes(), float_bytes(r.student)))
                if seed == 0 and name == main_cfg:
                    summary = r.quantized.summary()
            bar.update(1)
            bar.set_postfix(seed=seed, cfg=name, acc=f"{r.test_accuracy:.3f}")
    bar.close()
    return dict(teacher_acc=teacher_acc, full_acc=full, n_teacher=n_teacher, n_student=n_student,
                teacher_time=teacher_time, student_time=time.time() - t1, acc=acc, curves=curves, quant=quant,
                summary=summary, configs=[list(c) for c in configs], args=vars(args))


def plot(res, path: Path, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc, t_acc = res["acc"], res["teacher_acc"]
    sc = np.array(acc["scratch"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12.5, 4.8))
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(args.alphas)))
    for i, (a, col) in enumerate(zip(args.alphas, colors)):
        jitter = 2 ** (0.04 * (i - (len(args.alphas) - 1) / 2))   # spread the error bars apart
        m = [np.mean(acc[f"T{T:g}_a{a:g}"]) for T in args.temps]
        s = [np.std(acc[f"T{T:g}_a{a:g}"], ddof=1) for T in args.temps]
        ax1.errorbar(np.array(args.temps) * jitter, 100 * np.array(m), yerr=100 * np.array(s), marker="o",
                     ms=4, capsize=2, color=col, label=f"distilled, α={a:g}, ×T²")
    t_no = [T for T in args.temps if T != 1]
    if t_no:
        m = [np.mean(acc[f"T{T:g}_a0.7_noT2"]) for T in t_no]
        ax1.plot(t_no, 100 * np.array(m), "k--", marker="x", label="distilled, α=0.7, no T² (seed's formula)")
    ax1.axhline(100 * t_acc, color="tab:green", lw=1.5, label=f"teacher ResNet-18 ({100 * t_acc:.1f})")
    ax1.axhspan(100 * (sc.mean() - sc.std(ddof=1)), 100 * (sc.mean() + sc.std(ddof=1)), color="tab:red",
                alpha=0.12)
    ax1.axhline(100 * sc.mean(), color="tab:red", lw=1.5, label=f"student from scratch ({100 * sc.mean():.1f} ± std)")
    ax1.set_xscale("log", base=2)
    ax1.set_xticks(args.temps, [f"{T:g}" for T in args.temps])
    ax1.set_xlabel("temperature T")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title(f"student ({res['n_student']:,} params) on {args.per_class}/class: mean ± std, {args.seeds} seeds",
                  fontsize=10)
    ax1.legend(fontsize=7.5, loc="upper left", ncol=2)
    ax1.set_ylim(84, 101)
    ax1.grid(alpha=0.3)
    styles = {"scratch": ("tab:red", "-", "scratch"),
              f"T{args.main_T:g}_a{args.main_alpha:g}": ("tab:blue", "-",
                                                        f"distilled T={args.main_T:g} α={args.main_alpha:g} ×T²"),
              f"T{args.main_T:g}_a0.7_noT2": ("black", "--", f"distilled T={args.main_T:g} α=0.7 no T² (seed)")}
    for name, runs in res["curves"].items():
        if not runs:
            continue
        col, ls, label = styles[name]
        ep = [e for e, _ in runs[0]]
        a = np.array([[v for _, v in r] for r in runs])
        ax2.errorbar(ep, 100 * a.mean(0), yerr=100 * a.std(0, ddof=1) if len(a) > 1 else None, marker="o",
                     ms=4, capsize=2, color=col, ls=ls, label=label)
    ax2.axhline(100 * t_acc, color="tab:green", lw=1.5, label="teacher")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test accuracy (%)")
    ax2.set_title("learning curves (per seed: same subset, init and data order)", fontsize=10)
    ax2.legend(fontsize=8, loc="lower right")
    ax2.set_ylim(80, 100)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(res, args) -> str:
    acc, t_acc = res["acc"], res["teacher_acc"]
    sc = np.array(acc["scratch"])
    main = f"T{args.main_T:g}_a{args.main_alpha:g}"
    kd = np.array(acc[main])
    rec = lambda v: (np.mean(v) - sc.mean()) / (t_acc - sc.mean())  # noqa: E731
    n_sub = 10 * args.per_class
    teacher_note = (f"loaded from the npz cache; training it took 21 min on this shared machine"
                    if res["teacher_time"] < 60 else f"{res['teacher_time'] / 60:.0f} min on this machine")
    full_note = (f"trained the same way on all 1,257 images ({args.full_epochs} epochs, seed 0) the student "
                 f"reaches {100 * res['full_acc']:.2f} %, so {n_sub} images leave room to recover"
                 if res["full_acc"] is not None else "")
    lines = [
        SECTION, "",
        f"`.venv/bin/python -m benchmarks.distill_digits` — {res['date']}, {res['machine']}, torch "
        f"{torch.__version__}, one thread (`torch.set_num_threads(1)`), on a shared 2-core machine.", "",
        f"Teacher: torchvision ResNet-18 adapted to 1×28×28 digits (3×3 stride-1 stem, no max-pool), "
        f"{res['n_teacher']:,} parameters, trained {args.teacher_epochs} epochs (Adam 1e-3, batch 64) on the "
        f"full 1,257-image training split ({teacher_note}). "
        f"Student: `student_cnn()` (conv 1→8 · conv 8→16 · linear, each conv with ReLU and 2×2 max-pool), "
        f"{res['n_student']:,} parameters ({res['n_teacher'] / res['n_student']:.0f}× fewer). The students "
        f"see only {n_sub} training images ({args.per_class} per class, stratified, a different subset per "
        f"seed) — {full_note}. "
        f"{args.epochs} epochs, Adam {args.lr:g}, batch {args.batch_size}, for every arm; per seed the subset, "
        f"initial weights and data order are shared by all arms. Test split: 540 images. "
        f"Mean ± sample std over {args.seeds} seeds (0–{args.seeds - 1}), accuracies in %.", "",
        "| model | test accuracy (%) | recovered (KD − scratch)/(teacher − scratch) |",
        "|---|---|---|",
        f"| teacher (ResNet-18, all 1,257 images, one model, seed 0) | {100 * t_acc:.2f} | |",
        f"| student from scratch ({n_sub} images) | {_ms(sc)} | 0 |",
        f"| student distilled, T={args.main_T:g}, α={args.main_alpha:g}, ×T² (default) | {_ms(kd)} | "
        f"{100 * rec(kd):.0f} % |",
    ]
    seed_f = f"T{args.main_T:g}_a0.7_noT2"
    if seed_f in acc:
        v = np.array(acc[seed_f])
        lines.append(f"| student distilled, seed's formula 0.7·CE + 0.3·KL, T={args.main_T:g} (no T²) | "
                     f"{_ms(v)} | {100 * rec(v):.0f} % |")
    d = kd - sc
    per_seed = lambda v: ", ".join(f"{100 * x:.2f}" for x in v)  # noqa: E731
    lines += ["", f"Per seed — scratch: {per_seed(sc)}; distilled (default): {per_seed(kd)}"
              + (f"; seed's formula: {per_seed(acc[seed_f])}" if seed_f in acc else "") + "."]
    lines += ["", f"Paired gain of the default over scratch, per seed: "
              f"{', '.join(f'{100 * x:+.2f}' for x in d)} points (mean {100 * d.mean():+.2f}, "
              f"distilled better on {int((d > 0).sum())}/{len(d)} seeds).", ""]
    # sweep table
    lines += ["Sweep (×T²): mean ± std test accuracy (%), recovered fraction in brackets.", "",
              "| α \\ T | " + " | ".join(f"{T:g}" for T in args.temps) + " |",
              "|---|" + "---|" * len(args.temps)]
    for a in args.alphas:
        cells = [f"{_ms(acc[f'T{T:g}_a{a:g}'])} [{100 * rec(acc[f'T{T:g}_a{a:g}']):.0f} %]" for T in args.temps]
        lines.append(f"| {a:g} | " + " | ".join(cells) + " |")
    t_no = [T for T in args.temps if T != 1]
    if t_no:
        cells = [f"{_ms(acc[f'T{T:g}_a0.7_noT2'])} [{100 * rec(acc[f'T{T:g}_a0.7_noT2']):.0f} %]" for T in t_no]
        lines.append("| 0.7, no T² (seed) | " + ("| " if 1 in args.temps else "")
                     + " | ".join(cells) + " |")
    best = max((k for k in acc if k != "scratch"), key=lambda k: np.mean(acc[k]))
    lines += ["", f"Best configuration: `{best}` ({_ms(acc[best])}, recovered {100 * rec(acc[best]):.0f} %)."]
    lines += [""] + quant_section(res, args)
    lines += ["", f"Student runs took {res['student_time'] / 60:.1f} min in all (wall clock, shared machine). "
              "Figure: `benchmarks/figures/distill_digits.png`.", ""]
    return "\n".join(lines)


QUANT_HEADING = "### The students quantized: minquant static int8"


def quant_section(res, args) -> list[str]:
    """The quantized-student part of the report (also rewritten on its own by ``--quantize-only``)."""
    q = res["quant"]
    qs, qk = np.array(q["scratch"]), np.array(q["kd"])   # columns: float acc, int8 acc, int8 bytes, fp32 bytes
    per = lambda v: ", ".join(f"{100 * x:.2f}" for x in v)  # noqa: E731
    drop = lambda a: ", ".join(f"{100 * x:+.2f}" for x in a[:, 1] - a[:, 0])  # noqa: E731
    lines = [
        QUANT_HEADING, "",
        f"`.venv/bin/python -m benchmarks.distill_digits{' --quantize-only' if args.quantize_only else ''}` — "
        f"{res['date']}. " + ("Re-trains only the scratch student and the default distilled student "
                              f"(T={args.main_T:g}, α={args.main_alpha:g}, ×T²) for the {args.seeds} seeds, "
                              "exactly as in the sweep above (same subset, initial weights, data order: the "
                              "float accuracies below are the sweep's, bit for bit), then quantizes them. "
                              if args.quantize_only else "") +
        "Each trained student goes through `train(..., quantize=...)` into "
        "`minquant.quantize_static(student, [x_sub], per_channel=True, target=\"fbgemm\")` with the "
        "converter's other defaults (percentile activation calibrator, bias correction, cross-layer "
        "equalization): int8 per-output-channel weights, uint8 activations, every layer — conv, ReLU "
        "(fused), max-pool, flatten, linear — run in integers. Calibration data: the student's own "
        f"{10 * args.per_class} training images (`x_sub`), nothing else. Test accuracy on the 540-image test "
        "split, mean ± sample std over seeds, in %; int8 bytes = `QuantizedModel.size_bytes()` (int8 "
        "weights, float32 per-channel scales, weight zero points, float32 biases, 8 bytes per activation "
        "scale/zero point), float32 bytes = 4 × the student's parameters.", "",
        "| student | float32 test acc (%) | static int8 test acc (%) | int8 − float (points) | float32 bytes "
        "| int8 bytes | smaller |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, a in (("scratch", qs), (f"distilled (T={args.main_T:g}, α={args.main_alpha:g}, ×T²)", qk)):
        d = a[:, 1] - a[:, 0]
        lines.append(f"| {name} | {_ms(a[:, 0])} | {_ms(a[:, 1])} | {100 * d.mean():+.2f} ± "
                     f"{100 * d.std(ddof=1) if len(d) > 1 else 0:.2f} | {int(a[0, 3]):,} | {int(a[0, 2]):,} | "
                     f"{a[0, 3] / a[0, 2]:.2f}× |")
    lines += ["", f"Per seed (0–{args.seeds - 1}) — scratch float {per(qs[:, 0])}, int8 {per(qs[:, 1])} "
              f"(change {drop(qs)}); distilled float {per(qk[:, 0])}, int8 {per(qk[:, 1])} "
              f"(change {drop(qk)}).", "",
              f"Distilled minus scratch after int8: {_ms(qk[:, 1] - qs[:, 1])} points (float: "
              f"{_ms(qk[:, 0] - qs[:, 0])}); distillation's gain survives quantization.", "",
              "The distilled student of seed 0, as `QuantizedModel.summary()` prints it:", "", "```",
              res["summary"].rstrip(), "```"]
    if args.quantize_only:
        lines += ["", f"These {2 * args.seeds} students took {res['student_time'] / 60:.1f} min to train and "
                      "quantize (wall clock, shared machine)."]
    return lines


def replace_quant_section(text: str, new_lines: list[str]) -> str:
    """``text`` with its quantized-student section — from :data:`QUANT_HEADING` (or the earlier stand-in's
    first line) up to the "Student runs took" line — replaced by ``new_lines``; the rest unchanged."""
    lines = text.split("\n")
    starts = [i for i, l in enumerate(lines) if l == QUANT_HEADING or l.startswith("Quantized student")]
    ends = [i for i, l in enumerate(lines) if l.startswith("Student runs took")]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError("RESULTS_distill.md has no single quantized-student section followed by the "
                         "'Student runs took' line: run the full benchmark instead of --quantize-only")
    return "\n".join(lines[:starts[0]] + new_lines + [""] + lines[ends[0]:])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.distill_digits", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=10, help="student training images per class")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--temps", type=float, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.5, 0.7, 0.9])
    ap.add_argument("--full-epochs", type=int, default=20,
                    help="epochs of the reference student trained on all images (0: skip)")
    ap.add_argument("--main-T", type=float, default=4.0)
    ap.add_argument("--main-alpha", type=float, default=0.7)
    ap.add_argument("--quick", action="store_true", help="2 seeds, T ∈ {1, 4}, α = 0.7; prints, writes nothing")
    ap.add_argument("--quantize-only", action="store_true",
                    help="re-train only the scratch and default distilled students (all seeds, ~1 min), quantize "
                         "them with minquant static int8 and rewrite only that section of RESULTS_distill.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.temps, args.alphas, args.full_epochs = 2, [1.0, 4.0], [0.7], 0
    res = run(args)
    res["date"] = datetime.date.today().isoformat()
    res["machine"] = f"{platform.machine()} {platform.processor() or ''} ({platform.system()})".replace("  ", " ")
    try:
        model = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
        res["machine"] = model
    except (OSError, IndexError):
        pass
    if args.quantize_only:
        body = "\n".join(quant_section(res, args))
        print(body)
        if not args.quick:
            path = HERE / "RESULTS_distill.md"
            atomic_write_text(path, replace_quant_section(path.read_text(), quant_section(res, args)))
            print(f"rewrote the quantized section of {path}")
        return body
    body = report(res, args)
    print(body)
    if not args.quick:
        atomic_write_text((HERE / "RESULTS_distill.md"), body)
        plot(res, HERE / "figures" / "distill_digits.png", args)
        print(f"wrote {HERE / 'RESULTS_distill.md'} and {HERE / 'figures' / 'distill_digits.png'}")
    return body


if __name__ == "__main__":
    main()
