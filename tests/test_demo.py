"""minquant.lesson.demo, in parts (the whole demo takes minutes even with --quick; it is run by hand).

The seed's TinyCNN (cached), a few hundred digits, one timing repeat. Checked: the seed's quantize_dynamic
really leaves Conv2d float; minquant's run of torch's int8 model is bit-identical; minquant's static int8
keeps the accuracy; the LiteRT rows: minquant's .tflite run by the interpreter and by minquant, bit-identical;
the pruning helper hits its sparsity; the ONNX rows degrade to "not yet available"
without the exporter; the weight panels show what per-channel buys; the table printers; the precision
ladder's rows (fp32 → fp16 → int8 → int4, mixed) and its plot.
"""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from minquant.lesson import demo  # noqa: E402
from minquant.target import Cpu  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_seed_quantize_dynamic_leaves_conv_float(digits_model):
    from minquant.frameworks import torch_oracle
    from minquant.quantized import report_torch_quantized
    model, (_, _, x_te, _) = digits_model
    q = torch_oracle.seed_quantize_dynamic(model)
    rep = report_torch_quantized(q)
    assert rep.by_kind() == {"conv2d": (0, 2), "linear": (1, 1)}
    f, g = torch_oracle.torch_logits(model, x_te[:64]), torch_oracle.torch_logits(q, x_te[:64])
    assert not np.array_equal(f, g)                      # the Linear really is int8 …
    assert (f.argmax(1) == g.argmax(1)).mean() >= 0.95    # … and barely changes the predictions


def test_common_rows_on_tinycnn(digits_model):
    from minquant.frameworks import torch_oracle
    model, (x_tr, _, x_te, y_te) = digits_model
    x_ev, y_ev = x_te[:120], y_te[:120]
    f_ref = torch_oracle.torch_logits(model, x_ev)
    cfg = demo.settings(quick=True)
    art = {}
    rows = demo._common_rows("TinyCNN", model, (1, 1, 28, 28), x_tr[:64], x_ev, y_ev, f_ref, x_ev[:1], 1,
                             lambda c: torch_oracle.torch_static_tinycnn(model, c, "x86"), cfg, art)
    demo.measure_latencies(rows)
    by = {r.variant.strip(): r for r in rows}
    fp32 = by["fp32"]
    assert list(by) == ["fp32", "torch quantize_dynamic (seed's line)", "torch static int8 (eager, x86)",
                        "torch's int8 model, run by minquant", "torch pt2e int8 (Inductor, oneDNN)",
                        "torch's pt2e model, run by minquant", "minquant dynamic int8",
                        "minquant static int8, per-tensor", "minquant static int8, per-channel"]
    assert art["bit_exact"] == [("TinyCNN", 0, 1200)]
    assert by["torch's int8 model, run by minquant"].note.startswith("bit-identical to torch: 0/1200")
    if Cpu.host().onednn_vnni:      # the path minquant reproduces: oneDNN with VNNI (or AMX)
        assert art["pt2e_exact"] == [("TinyCNN", 0, 1200)]
        assert by["torch's pt2e model, run by minquant"].note.startswith("bit-identical to Inductor: 0/1200")
    else:                           # an AVX2 host: Inductor's oneDNN pairs products; the row says so
        assert "pt2e_exact" not in art
        assert by["torch's pt2e model, run by minquant"].note.startswith("not reproduced on this CPU")
    pt2e = by["torch pt2e int8 (Inductor, oneDNN)"]
    assert abs(pt2e.accuracy - fp32.accuracy) <= 0.03 and pt2e.ms > 0
    assert fp32.param_bytes == 4 * sum(p.numel() for p in model.parameters())
    # the seed's "int8" model keeps its convolutions in float: most of the fp32 bytes remain
    assert by["torch quantize_dynamic (seed's line)"].param_bytes > 0.7 * fp32.param_bytes
    for name in ("minquant static int8, per-tensor", "minquant static int8, per-channel", "minquant dynamic int8"):
        r = by[name]
        assert r.param_bytes < 0.3 * fp32.param_bytes
        assert r.file_bytes > r.param_bytes                      # the npz also holds the graph's JSON
        assert abs(r.accuracy - fp32.accuracy) <= 0.03
        assert r.agreement >= 0.95 and r.sqnr_db > 20
        assert r.ms > 0


def test_latencies_are_measured_round_robin():
    calls = []
    rows = [demo.Row("M", "a", "torch", ms=demo._Timed(lambda: calls.append("a"), 3)),
            demo.Row("M", "b", "torch", ms=demo._Timed(lambda: calls.append("b"), 2, warmup=1)),
            demo.Row("M", "c", "torch", ms=1.5)]
    demo.measure_latencies(rows)
    assert calls == ["a", "a", "b"] + ["a", "b"] * 2 + ["a"]     # warm-ups, then one call of each per round
    assert all(isinstance(r.ms, float) and r.ms >= 0 for r in rows) and rows[2].ms == 1.5


def test_prune_helper_reaches_the_target_sparsity(digits_model):
    model, (x_tr, y_tr, _, _) = digits_model
    for target in (0.5, 0.9):
        m = demo._prune_tiny(model, target, 0, x_tr, y_tr)
        assert demo._weight_sparsity(m, demo.TINY_LAYERS) == pytest.approx(target, abs=2e-3)
        assert (m.get_submodule(demo.FIRST_CONV).weight != 0).all()       # the first conv stays dense
    assert demo._weight_sparsity(model, demo.TINY_LAYERS) < 0.01          # the cached model is untouched


def test_onnx_rows_without_exporter(digits_model, monkeypatch):
    pytest.importorskip("onnxruntime")
    from minquant.frameworks import torch_oracle
    model, (x_tr, _, x_te, y_te) = digits_model
    monkeypatch.setattr(demo, "_to_onnx", lambda: None)
    x_ev, y_ev = x_te[:100], y_te[:100]
    f_ref = torch_oracle.torch_logits(model, x_ev)
    rows = demo._onnx_rows("TinyCNN", model, (1, 1, 28, 28), x_tr[:32], x_ev, y_ev, f_ref, x_ev[:1], 1, {})
    assert [r.variant for r in rows] == ["ONNX Runtime fp32 (torch.onnx.export)",
                                         "ONNX Runtime int8 (its quantize_static, QDQ)",
                                         "ONNX Runtime runs minquant int8 (QDQ)",
                                         "ONNX Runtime runs minquant int8 (QOperator)"]
    fp32, int8 = rows[0], rows[1]
    assert fp32.agreement == 1.0 and fp32.sqnr_db > 60           # same float model, other runtime
    assert int8.param_bytes < 0.4 * fp32.param_bytes and int8.agreement >= 0.9
    assert all(r.note.startswith("not yet available") and r.ms is None for r in rows[2:])


def test_weight_panels_show_what_per_channel_buys(digits_model):
    from minquant.lesson import report
    model, _ = digits_model
    w = model.features[2].weight.detach().numpy()
    panels = [report._panel(p) for p in demo._weight_panels("conv 2", w)]
    whole, ch_tensor_grid, ch_own_grid = panels
    assert whole.scale == ch_tensor_grid.scale > ch_own_grid.scale
    np.testing.assert_array_equal(ch_tensor_grid.values, ch_own_grid.values)
    # the narrowest channel reaches the ends of its own grid: max|w_c| / s_c = 127.5
    assert np.abs(ch_own_grid.values).max() / ch_own_grid.scale == pytest.approx(127.5, rel=1e-5)


def test_tables():
    rows = [demo.Row("A", "fp32", "torch", 1000, 900, 0.5, 0.9667, None, None, "ref"),
            demo.Row("A", "int8", "minquant", 300, 250, 1.25, 0.95, 0.98, math.inf),
            demo.Row("B", "skipped", "", note="not yet available")]
    text = demo.format_table(rows)
    assert "A:" in text and "B:" in text
    assert "96.67 %" in text and "98.0 %" in text and "∞" in text and "1,000" in text
    md = demo.markdown_table(rows).splitlines()
    assert len({line.count("|") for line in md}) == 1              # every row has every column
    assert md[-1].startswith("| B | skipped | — | — | — | — |")


def test_sparsity_text():
    art = {"tiny_sparsity": [("one-shot", 0.5, 0.9), ("one-shot", 0.0, 0.9667)],
           "mnv2_sparsity": [("global", 0.1, 0.89)]}
    assert demo.format_sparsity(art).splitlines() == ["  TinyCNN, one-shot: 0 % → 96.67 %, 50 % → 90.00 %",
                                                      "  MobileNetV2, global: 10 % → 89.00 %"]


def test_quick_settings_are_smaller():
    q, f = demo.settings(True), demo.settings(False)
    for field in ("tiny_repeats", "big_repeats", "n_calib", "n_eval", "n_eval_dynamic", "finetune_epochs",
                  "compare_samples", "dynamic_repeats"):
        assert getattr(q, field) < getattr(f, field), field


def test_litert_rows_on_tinycnn(digits_model):
    """minquant's .tflite run by the LiteRT interpreter (XNNPACK) and by minquant (from_tflite): 0 differing
    logits — the rows' note and the exit status's record say so (a CPU-independent path: XNNPACK's float
    requantization, reproduced on every x86 CPU)."""
    pytest.importorskip("ai_edge_litert")
    from minquant.frameworks import torch_oracle
    model, (x_tr, _, x_te, y_te) = digits_model
    x_ev, y_ev = x_te[:120], y_te[:120]
    f_ref = torch_oracle.torch_logits(model, x_ev)
    art = {}
    rows = demo._litert_rows("TinyCNN", model, x_tr[:64], x_ev, y_ev, f_ref, x_ev[:1], 1, art)
    demo.measure_latencies(rows)
    assert [r.variant.strip() for r in rows] == ["LiteRT runs minquant int8 (.tflite, XNNPACK)",
                                                 "minquant's .tflite, run by minquant"]
    assert art["litert_exact"] == [("TinyCNN", 0, 1200)]
    lite, mine = rows
    assert mine.note.startswith("bit-identical to LiteRT (XNNPACK): 0/1200")
    assert lite.runtime == "LiteRT" and lite.accuracy == mine.accuracy
    fp32_acc = float((f_ref.argmax(1) == y_ev).mean())
    assert abs(lite.accuracy - fp32_acc) <= 0.03 and lite.sqnr_db > 20
    assert lite.param_bytes < 0.3 * 4 * sum(p.numel() for p in model.parameters()) and lite.ms > 0


def test_ladder_rows_on_tinycnn(digits_model, tmp_path):
    """The demo's precision ladder (64 calibration digits, 8 held out, 120 test digits): every rung smaller
    than the one before (fp32 → fp16 → int8 → int4: ×½, ×¼ on the weights), the accuracy kept within 3 points,
    the mixed models within their budgets; then the plot beside the main table's fp32 / int8 rows, a PNG."""
    from minquant.frameworks import torch_oracle
    from minquant.lesson import report
    model, (x_tr, _, x_te, y_te) = digits_model
    x_ev, y_ev = x_te[:120], y_te[:120]
    f_ref = torch_oracle.torch_logits(model, x_ev)
    rows = demo.ladder_rows("TinyCNN", model, x_tr[:64], x_tr[64:72], x_ev, y_ev, f_ref, x_ev[:1], 1)
    by = {r.variant: r for r in rows}
    assert list(by) == ["fp32", "fp16", "int8", "W4A16 g32", "W4A8 g32", "mixed ≤ int8's bytes", "mixed ≥ 30 dB"]
    n_params = sum(p.numel() for p in model.parameters())
    assert by["fp32"].param_bytes == 4 * n_params and by["fp16"].param_bytes == 2 * n_params
    assert by["int8"].param_bytes < 0.27 * by["fp32"].param_bytes
    for w4 in ("W4A16 g32", "W4A8 g32"):
        assert by[w4].param_bytes < 0.6 * by["int8"].param_bytes            # int4 packed two per byte
        assert by[w4].note.startswith("2 of 3 layers in groups of 32")
    assert by["mixed ≤ int8's bytes"].param_bytes <= by["int8"].param_bytes
    assert by["mixed ≥ 30 dB"].note.startswith("output SQNR ≥ 30 dB: met")
    fp32_acc = float((f_ref.argmax(1) == y_ev).mean())
    for r in rows:
        assert r.runtime == "minquant" and r.model == "TinyCNN"
        assert r.file_bytes > r.param_bytes and isinstance(r.ms, float) and r.ms > 0
        assert abs(r.accuracy - fp32_acc) <= 0.03 and r.agreement >= 0.95
    assert by["fp32"].sqnr_db > 80 and by["fp16"].sqnr_db > 50 and by["int8"].sqnr_db > 30
    assert min(by["W4A16 g32"].sqnr_db, by["W4A8 g32"].sqnr_db) > 20

    table = [demo.Row("TinyCNN", "fp32", "torch", 1, 4 * n_params, 0.3, fp32_acc, note="the reference"),
             demo.Row("TinyCNN", "minquant static int8, per-channel", "minquant", 1, 29_986, 1.0, 0.96, 1.0),
             demo.Row("MobileNetV2", "torch static int8 (eager, x86)", "torch", 1, 3_686_432, 14.0, None, 0.435),
             demo.Row("MobileNetV2", "pruned 10 % (global magnitude), no fine-tune", "torch", 1, 14_019_488, 22.0,
                      None, 0.89)]
    drawn = demo.ladder_plot_rows(table, rows)
    assert [(d["model"], d.get("label", d["variant"]), d["size_bytes"]) for d in drawn[len(rows):]] == [
        ("TinyCNN", "fp32", 4 * n_params), ("MobileNetV2", "int8", 3_686_432)]   # minquant's int8: the ladder's
    assert drawn[len(rows)]["agreement"] == 1.0                                  # fp32 agrees with itself
    path = report.plot_ladder(drawn, tmp_path / "precision_ladder.png")
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
