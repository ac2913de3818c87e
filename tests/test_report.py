"""minquant.lesson.report: every plot draws the data it is given and writes a valid PNG, bad input raises
ValueError, write_report embeds all.

Small seeded synthetic inputs, plus one real ``compare`` result on the seed's TinyCNN (cached model,
64 test digits). A PNG is "valid" when it starts with the PNG signature, matplotlib reads it back as an
RGBA image of the expected size, and it is not blank. What was drawn is read back from the matplotlib
Figure that was saved (the ``drawn`` fixture records it): bar lengths, histogram counts, grid lines, line
points, colours — so a plot of the wrong data fails.
"""
import math
import re

import numpy as np
import pytest

from matplotlib.colors import to_rgba

from minquant.lesson import report
from minquant.quantized.comparison import Comparison, LayerSQNR

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RED, BLUE = to_rgba("#C44E52"), to_rgba("#4C72B0")


@pytest.fixture
def drawn(monkeypatch):
    """The Figures the plotting functions save, in order; the real ``_save`` still writes each PNG."""
    figs, real_save = [], report._save

    def save(fig, path):
        figs.append(fig)
        return real_save(fig, path)
    monkeypatch.setattr(report, "_save", save)
    return figs


def bars_by_label(ax, labels_ax=None):
    """``{y tick label: (bar length, face colour)}`` of a horizontal bar chart (labels from ``labels_ax``,
    for panels that share the first column's labels), plus the labels top to bottom."""
    labels_ax = labels_ax or ax
    names = {round(float(y), 6): t.get_text() for y, t in zip(labels_ax.get_yticks(), labels_ax.get_yticklabels())}
    bars = {}
    for c in ax.containers:
        for p in c.patches:
            y = round(p.get_y() + p.get_height() / 2, 6)
            assert y in names, (y, names)
            bars[names[y]] = (p.get_width(), p.get_facecolor())
    top_down = [names[y] for y in sorted(names, reverse=True)]
    return bars, top_down


def assert_png(path, min_side=200):
    import matplotlib.image as mpimg
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert min(img.shape[:2]) >= min_side
    assert float(img[..., :3].std()) > 0.01          # something was drawn
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []                            # written via a temporary file, then renamed


def synthetic_comparison(values):
    layers = [LayerSQNR(f"layer{i}", f"float{i}", "qconv2d", (1, 4, 8, 8), v, 1.0, 0.1) for i, v in enumerate(values)]
    layers.sort(key=lambda r: r.sqnr_db)
    return Comparison(layers, 20.0, 0.9, 16, [])


# ---------------------------------------------------------------------------------------------------------
# histograms
# ---------------------------------------------------------------------------------------------------------
def test_histograms_synthetic(tmp_path, drawn):
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (16, 8, 3, 3)).astype(np.float32)
    act = np.maximum(rng.normal(0.5, 1.0, 5000), 0).astype(np.float32)
    panels = [dict(label="weights, per tensor", values=w, scale=float(np.abs(w).max() / 127.5)),
              report.HistogramPanel("weights, 7-bit codes", w, float(np.abs(w).max() / 63.5), 0, "int8", -64, 64),
              dict(label="ReLU output (log counts)", values=act, scale=act.max() / 255 * 0.8, zero_point=0,
                   dtype="uint8")]
    out = report.plot_histograms(panels, tmp_path / "h.png", title="synthetic")
    assert out == tmp_path / "h.png"
    assert_png(out)
    (fig,) = drawn
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3
    spans = [(w, float(np.abs(w).max() / 127.5), 0, -128, 127), (w, float(np.abs(w).max() / 63.5), 0, -64, 64),
             (act, float(act.max() / 255 * 0.8), 0, 0, 255)]
    for ax, (values, s, z, qmin, qmax) in zip(axes, spans):
        check_histogram_panel(ax, values, s, z, qmin, qmax)
    assert [ax.get_yscale() for ax in axes] == ["linear", "linear", "log"]   # the ReLU zeros: log counts
    clip_hi = spans[2][1] * 255
    above = float((act > clip_hi + spans[2][1] / 2).mean())
    assert above > 0.001                                                     # its scale clips the top
    assert any(f"0.00 % below, {100 * above:.2f} % above" in t.get_text() for t in axes[2].texts)


def check_histogram_panel(ax, values, s, z, qmin, qmax, bins=80):
    """The bars are the histogram of ``values`` over [min(values, clip low), max(values, clip high)], the red
    lines sit at the clip range s·(qmin − z), s·(qmax − z), and the rug has one tick per code, s apart."""
    v = np.asarray(values, np.float64).ravel()
    clip_lo, clip_hi = s * (qmin - z), s * (qmax - z)
    want, edges = np.histogram(v, bins=bins, range=(min(v.min(), clip_lo), max(v.max(), clip_hi)))
    (hist,) = ax.containers
    assert [p.get_height() for p in hist.patches] == want.tolist()
    assert sum(p.get_height() for p in hist.patches) == v.size
    np.testing.assert_allclose([p.get_x() for p in hist.patches], edges[:-1], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sorted(line.get_xdata()[0] for line in ax.lines), [clip_lo, clip_hi], rtol=1e-5)
    rug = ax.collections[0]
    xs = np.array([seg[0, 0] for seg in rug.get_segments()])
    np.testing.assert_allclose(xs, s * (np.arange(qmin, qmax + 1) - z), rtol=1e-5, atol=1e-4 * s)
    np.testing.assert_allclose(np.diff(xs), s, rtol=1e-3)
    faint = qmax - qmin + 1 <= 40                   # full-height grid lines only when the levels can be told apart
    assert len(ax.collections) == 2 if faint else len(ax.collections) == 1
    if faint:
        np.testing.assert_allclose([seg[0, 0] for seg in ax.collections[1].get_segments()], xs)
    assert any(f"{qmax - qmin + 1} codes {qmin}…{qmax}" in t.get_text() for t in ax.get_legend().get_texts())


def test_histograms_few_levels_draw_the_grid_lines(tmp_path, drawn):
    """A 3-bit code range (−4…3) with a zero point: eight levels, each drawn as a full-height line at
    s·(q − z); values beyond the grid are counted as clipped on both sides."""
    v = np.linspace(-1.0, 1.5, 501)
    s, z = 0.25, -1
    report.plot_histograms([dict(label="3 bits", values=v, scale=s, zero_point=z, qmin=-4, qmax=3)],
                           tmp_path / "h.png", bins=25)
    (fig,) = drawn
    (ax,) = [a for a in fig.axes if a.get_visible()]
    check_histogram_panel(ax, v, s, z, -4, 3, bins=25)
    below = float((v < s * (-4 - z) - s / 2).mean())
    above = float((v > s * (3 - z) + s / 2).mean())
    assert below > 0 and above > 0
    assert any(f"{100 * below:.2f} % below, {100 * above:.2f} % above" in t.get_text() for t in ax.texts)


@pytest.mark.parametrize("bad, msg", [
    (dict(values=np.array([0.1, np.nan]), scale=0.01), "NaN"),
    (dict(values=np.array([]), scale=0.01), "no values"),
    (dict(values=np.ones(4), scale=0.0), "scale must be > 0"),
    (dict(values=np.ones(4), scale=np.array([0.1, 0.2])), "scale must be one number"),
    (dict(values=np.ones(4), scale=0.1, zero_point=300, dtype="uint8"), "zero point"),
    (dict(values=np.ones(4), scale=0.1, qmin=5, qmax=5), "code range"),
])
def test_histograms_bad_input(tmp_path, bad, msg):
    with pytest.raises(ValueError, match=msg):
        report.plot_histograms([dict(label="p", **bad)], tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()


def test_histograms_needs_a_panel(tmp_path):
    with pytest.raises(ValueError, match="at least one panel"):
        report.plot_histograms([], tmp_path / "h.png")


# ---------------------------------------------------------------------------------------------------------
# per-layer SQNR
# ---------------------------------------------------------------------------------------------------------
def test_sqnr_synthetic_with_infinite_layer(tmp_path, drawn):
    values = [35.0, 12.5, math.inf, 3.0, 22.0, 40.0]
    cmp = synthetic_comparison(values)
    order = [f"layer{i}" for i in range(6)]
    out = report.plot_sqnr(cmp, tmp_path / "s.png", order=order)
    assert_png(out)
    (fig,) = drawn
    (ax,) = fig.axes
    bars, top_down = bars_by_label(ax)
    assert top_down == [f"{name}  (qconv2d)" for name in order]            # graph order, first layer on top
    lengths = {label.split()[0]: width for label, (width, _) in bars.items()}
    for i, v in enumerate(values):
        if math.isfinite(v):
            assert lengths[f"layer{i}"] == v
    assert lengths["layer2"] > max(v for v in values if math.isfinite(v))   # ∞ drawn at the right edge
    red = {label.split()[0] for label, (_, colour) in bars.items() if colour == RED}
    assert red == {"layer3", "layer1"}                                     # the 6 // 3 = 2 lowest
    assert all(colour == BLUE for label, (_, colour) in bars.items() if label.split()[0] not in red)
    texts = [t.get_text() for t in ax.texts]
    assert "∞" in texts and "3.0 dB  (#1 worst)" in texts and "12.5 dB  (#2 worst)" in texts
    (line,) = ax.lines
    assert list(line.get_xdata()) == [20.0, 20.0] and line.get_linestyle() == "--"   # the output's SQNR


def test_sqnr_real_compare_on_tinycnn(tmp_path, digits_model, drawn):
    import torch
    import minquant as mq
    torch.set_num_threads(1)
    model, (x_tr, _, x_te, _) = digits_model
    qm = mq.quantize_static(model, [x_tr[:128]], progress=False)
    cmp = mq.compare(model, qm, x_te[:64], batch_size=32)
    assert len(cmp.layers) >= 4 and all(np.isfinite(r.sqnr_db) for r in cmp.layers)
    out = report.plot_sqnr(cmp, tmp_path / "tiny_sqnr.png", order=[n.name for n in qm.graph.nodes])
    assert_png(out)
    (fig,) = drawn
    (ax,) = fig.axes
    bars, top_down = bars_by_label(ax)
    want = {r.name: r.sqnr_db for r in cmp.layers}
    assert {label.split()[0]: width for label, (width, _) in bars.items()} == pytest.approx(want, rel=1e-12)
    assert [label.split()[0] for label in top_down] == [n.name for n in qm.graph.nodes if n.name in want]
    n_red = min(5, len(want) // 3)
    red = {label.split()[0] for label, (_, colour) in bars.items() if colour == RED}
    assert red == set(sorted(want, key=want.get)[:n_red])
    assert ax.lines[0].get_xdata()[0] == pytest.approx(cmp.output_sqnr_db)


def test_sqnr_bad_input(tmp_path):
    with pytest.raises(ValueError, match="empty comparison"):
        report.plot_sqnr(Comparison([], 10.0, None, 0, []), tmp_path / "s.png")
    with pytest.raises(ValueError, match="NaN"):
        report.plot_sqnr(synthetic_comparison([10.0, float("nan")]), tmp_path / "s.png")
    cmp = synthetic_comparison([10.0, 20.0])
    cmp.output_sqnr_db = float("nan")
    with pytest.raises(ValueError, match="output SQNR is NaN"):
        report.plot_sqnr(cmp, tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()


# ---------------------------------------------------------------------------------------------------------
# variants and sparsity
# ---------------------------------------------------------------------------------------------------------
ROWS = [
    dict(model="TinyCNN", variant="fp32", runtime="torch", file_bytes=118_861, ms=0.6, accuracy=0.9667),
    dict(model="TinyCNN", variant="minquant static int8", runtime="minquant", file_bytes=39_532, ms=1.3,
         accuracy=0.9667, agreement=1.0),
    dict(model="TinyCNN", variant="not measured", runtime="ONNX Runtime"),
    dict(model="MobileNetV2", variant="fp32", runtime="torch", size_bytes=14_241_483, ms=24.0, agreement=1.0),
    dict(model="MobileNetV2", variant="minquant static int8", runtime="minquant", size_bytes=4_111_465, ms=25.0,
         agreement=0.795),
]


def check_variant_bars(axes, rows):
    """One block of three axes (size KB, ms, accuracy or agreement %): bar lengths and colours are the rows'
    values and runtimes; a missing value has no bar and an "n/a"."""
    metric = "accuracy" if any(r.get("accuracy") is not None for r in rows) else "agreement"
    size = [r.get("size_bytes", r.get("file_bytes")) for r in rows]
    for ax, values, scale in ((axes[0], size, 1 / 1024), (axes[1], [r.get("ms") for r in rows], 1),
                              (axes[2], [r.get(metric) for r in rows], 100)):
        bars, top_down = bars_by_label(ax, axes[0])
        assert top_down == [r["variant"] for r in rows]
        want = {r["variant"]: v * scale for r, v in zip(rows, values) if v is not None}
        assert {k: w for k, (w, _) in bars.items()} == pytest.approx(want, rel=1e-12)
        for r in rows:
            if r["variant"] in bars:
                assert bars[r["variant"]][1] == to_rgba(report._RUNTIME_COLORS[r["runtime"]])
        assert [t.get_text() for t in ax.texts].count("n/a") == sum(v is None for v in values)


def test_variants_synthetic(tmp_path, drawn):
    assert_png(report.plot_variants(ROWS, tmp_path / "v.png", title="variants"))
    (fig,) = drawn
    axes = np.array(fig.axes).reshape(2, 3)
    check_variant_bars(axes[0], ROWS[:3])             # TinyCNN has accuracy: the third column is accuracy
    check_variant_bars(axes[1], ROWS[3:])             # MobileNetV2 has none: top-1 agreement
    assert "accuracy" in axes[0, 2].get_xlabel() and "agreement" in axes[1, 2].get_xlabel()
    assert axes[0, 1].get_title() == "TinyCNN" and axes[1, 1].get_title() == "MobileNetV2"


def test_variants_from_demo_rows(tmp_path, drawn):
    from minquant.lesson.demo import Row
    rows = [Row("TinyCNN", "fp32", "torch", 100, 100, 0.5, 0.9), Row("TinyCNN", "int8", "minquant", 30, 30, 1.0, 0.9)]
    assert_png(report.plot_variants(rows, tmp_path / "v.png"))
    (fig,) = drawn
    check_variant_bars(fig.axes, [dict(variant=r.variant, runtime=r.runtime, file_bytes=r.file_bytes, ms=r.ms,
                                       accuracy=r.accuracy) for r in rows])


@pytest.mark.parametrize("bad, msg", [
    ([], "at least one row"),
    ([dict(model="m", variant="x", ms=float("nan"))], "NaN"),
    ([dict(model="m", variant="x", accuracy=96.7)], "out of range"),
    ([dict(model="m", variant="x", file_bytes=-1)], "out of range"),
    ([dict(model="m", ms=1.0)], "variant"),
])
def test_variants_bad_input(tmp_path, bad, msg):
    with pytest.raises(ValueError, match=msg):
        report.plot_variants(bad, tmp_path / "v.png")


def test_sparsity_synthetic(tmp_path, drawn):
    pts = [("no fine-tune", s, a) for s, a in ((0, 0.97), (0.5, 0.94), (0.9, 0.64), (0.95, 0.23))]
    pts += [dict(series="fine-tuned", sparsity=0.9, value=0.959), dict(series="fine-tuned", sparsity=0.5, value=0.974)]
    assert_png(report.plot_sparsity(pts, tmp_path / "p.png", baseline=0.9667, title="synthetic"))
    (fig,) = drawn
    (ax,) = fig.axes
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}
    assert lines.keys() == {"no fine-tune", "fine-tuned", "unpruned: 96.7 %"}
    assert lines["no fine-tune"] == (pytest.approx([0, 50, 90, 95]), pytest.approx([97, 94, 64, 23]))
    assert lines["fine-tuned"] == (pytest.approx([50, 90]), pytest.approx([97.4, 95.9]))   # sorted by sparsity
    assert lines["unpruned: 96.7 %"][1] == pytest.approx([96.67, 96.67])


@pytest.mark.parametrize("bad, msg", [
    ([], "at least one point"),
    ([("a", 0.5, float("nan"))], "NaN"),
    ([("a", 50, 0.9)], "outside"),
    ([("a", 0.5)], "must be"),
])
def test_sparsity_bad_input(tmp_path, bad, msg):
    with pytest.raises(ValueError, match=msg):
        report.plot_sparsity(bad, tmp_path / "p.png")


# ---------------------------------------------------------------------------------------------------------
# the precision ladder
# ---------------------------------------------------------------------------------------------------------
LADDER = [
    dict(model="TinyCNN", variant="fp32", runtime="torch", size_bytes=116_264, agreement=1.0),
    dict(model="TinyCNN", variant="fp16", runtime="minquant", size_bytes=58_132, agreement=1.0),
    dict(model="TinyCNN", variant="int8 (per-channel)", runtime="minquant", size_bytes=29_986, agreement=0.998),
    dict(model="TinyCNN", variant="int8", runtime="torch", size_bytes=30_232, agreement=0.996),
    dict(model="TinyCNN", variant="W4A8 g32", runtime="minquant", size_bytes=16_848, agreement=0.996),
    dict(model="TinyCNN", variant="W4A16 / W4A8", runtime="torch"),              # no such mode: left out
    dict(model="MobileNetV2", variant="fp32", runtime="torch", size_bytes=14_019_488, agreement=1.0),
    dict(model="MobileNetV2", variant="int8", runtime="ONNX Runtime", size_bytes=3_777_037, agreement=0.47),
    dict(model="MobileNetV2", variant="mixed, size ≤ 3,636,992 bytes", label="mixed ≤ int8", runtime="minquant",
         size_bytes=3_636_992, agreement=0.915),
    dict(model="MobileNetV2", variant="int8", runtime="LiteRT", size_bytes=3_600_000, agreement=0.915),
]


def scatter_points(ax):
    """``{face colour: sorted [(x, y)]}`` of every scatter of ``ax`` (one colour per runtime)."""
    pts = {}
    for c in ax.collections:
        colour = tuple(np.round(c.get_facecolor()[0], 6))
        pts.setdefault(colour, []).extend(map(tuple, np.asarray(c.get_offsets(), float)))
    return {k: sorted(v) for k, v in pts.items()}


def test_ladder_synthetic(tmp_path, drawn):
    assert_png(report.plot_ladder(LADDER, tmp_path / "l.png", title="ladder"))
    (fig,) = drawn
    tiny, mnv2 = fig.axes
    assert (tiny.get_title(), mnv2.get_title()) == ("TinyCNN", "MobileNetV2")
    for ax, model in ((tiny, "TinyCNN"), (mnv2, "MobileNetV2")):
        assert ax.get_xscale() == "log" and "bytes" in ax.get_xlabel() and "agreement" in ax.get_ylabel()
        want = {}
        for r in LADDER:
            if r["model"] == model and r.get("size_bytes") is not None:
                colour = tuple(np.round(to_rgba(report._RUNTIME_COLORS.get(r["runtime"], report._OTHER_COLOR)), 6))
                want.setdefault(colour, []).append((r["size_bytes"], 100 * r["agreement"]))
        got = scatter_points(ax)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_allclose(got[k], sorted(want[k]), rtol=1e-12)
        lo, hi = ax.get_ylim()
        ys = [y for v in want.values() for _, y in v]
        assert lo < min(ys) and hi > max(ys) and hi - lo >= 2.0        # every point in view, ≥ 2 points tall
        xlo, xhi = ax.get_xlim()
        assert xlo < min(x for v in want.values() for x, _ in v) and xhi > max(x for v in want.values() for x, _ in v)
    # the labels: the variant up to " (", or the row's label; near-coinciding points share one label
    assert sorted(t.get_text() for t in tiny.texts) == ["W4A8 g32", "fp16", "fp32", "int8", "int8"]
    assert sorted(t.get_text() for t in mnv2.texts) == ["fp32", "int8", "int8 / mixed ≤ int8"]
    legend = [t.get_text() for t in tiny.get_legend().get_texts()]
    assert legend == ["torch", "minquant", "ONNX Runtime", "LiteRT"]


def test_ladder_keeps_a_small_spread_honest(tmp_path, drawn):
    rows = [dict(variant="a", size_bytes=100, agreement=0.999), dict(variant="b", size_bytes=50, agreement=0.998)]
    report.plot_ladder(rows, tmp_path / "l.png", min_span=5.0)
    (ax,) = drawn[0].axes
    lo, hi = ax.get_ylim()
    assert hi - lo >= 5.0 and lo < 99.8 and 99.9 < hi
    with pytest.raises(ValueError, match="min_span"):
        report.plot_ladder(rows, tmp_path / "l.png", min_span=0)


@pytest.mark.parametrize("bad, msg", [
    ([], "at least one row"),
    ([dict(variant="x", runtime="torch")], "at least one row"),                 # nothing to place
    ([dict(variant="x", size_bytes=100, agreement=float("nan"))], "NaN"),
    ([dict(variant="x", size_bytes=100, agreement=99.6)], "out of range"),
    ([dict(variant="x", size_bytes=0, agreement=0.9)], "must be > 0"),
    ([dict(size_bytes=100, agreement=0.9)], "variant"),
])
def test_ladder_bad_input(tmp_path, bad, msg):
    with pytest.raises(ValueError, match=msg):
        report.plot_ladder(bad, tmp_path / "l.png")
    assert not (tmp_path / "l.png").exists()


# ---------------------------------------------------------------------------------------------------------
# report.md
# ---------------------------------------------------------------------------------------------------------
def test_write_report_embeds_every_image_and_the_table(tmp_path):
    report.plot_sparsity([("a", 0.0, 0.9), ("a", 0.5, 0.8)], tmp_path / "one.png")
    sub = tmp_path / "figs"
    report.plot_variants(ROWS[:2], sub / "two.png")
    table = "| variant | bytes |\n|---|---:|\n| fp32 | 118,861 |\n| int8 | 39,532 |"
    path = report.write_report(tmp_path, table=table, title="T",
                               images=[("one.png", "Sparsity"), (sub / "two.png", "Variants")],
                               notes=["a note"])
    text = path.read_text()
    assert path == tmp_path / "report.md"
    assert table in text
    links = re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", text)
    assert links == [("Sparsity", "one.png"), ("Variants", "figs/two.png")]
    for _, rel in links:
        assert_png(tmp_path / rel)
    assert "- a note" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_write_report_bad_input(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        report.write_report(tmp_path, table="| a |\n|---|\n| 1 |", images=[("missing.png", "x")])
    with pytest.raises(ValueError, match="non-empty table"):
        report.write_report(tmp_path, table="  ")
    assert not (tmp_path / "report.md").exists()
