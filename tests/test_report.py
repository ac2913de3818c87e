"""minquant.lesson.report: every plot writes a valid PNG, bad input raises ValueError, write_report embeds all.

Small seeded synthetic inputs, plus one real ``compare`` result on the seed's TinyCNN (cached model,
64 test digits). A PNG is "valid" when it starts with the PNG signature, matplotlib reads it back as an
RGBA image of the expected size, and it is not blank.
"""
import math
import re

import numpy as np
import pytest

from minquant.lesson import report
from minquant.quantized.compare import Comparison, LayerSQNR

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
def test_histograms_synthetic(tmp_path):
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
def test_sqnr_synthetic_with_infinite_layer(tmp_path):
    cmp = synthetic_comparison([35.0, 12.5, math.inf, 3.0, 22.0, 40.0])
    out = report.plot_sqnr(cmp, tmp_path / "s.png", order=[f"layer{i}" for i in range(6)])
    assert_png(out)


def test_sqnr_real_compare_on_tinycnn(tmp_path, digits_model):
    import torch
    import minquant as mq
    torch.set_num_threads(1)
    model, (x_tr, _, x_te, _) = digits_model
    qm = mq.quantize_static(model, [x_tr[:128]], progress=False)
    cmp = mq.compare(model, qm, x_te[:64], batch_size=32)
    assert len(cmp.layers) >= 4 and all(np.isfinite(r.sqnr_db) for r in cmp.layers)
    out = report.plot_sqnr(cmp, tmp_path / "tiny_sqnr.png", order=[n.name for n in qm.graph.nodes])
    assert_png(out)


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


def test_variants_synthetic(tmp_path):
    assert_png(report.plot_variants(ROWS, tmp_path / "v.png", title="variants"))


def test_variants_from_demo_rows(tmp_path):
    from minquant.lesson.demo import Row
    rows = [Row("TinyCNN", "fp32", "torch", 100, 100, 0.5, 0.9), Row("TinyCNN", "int8", "minquant", 30, 30, 1.0, 0.9)]
    assert_png(report.plot_variants(rows, tmp_path / "v.png"))


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


def test_sparsity_synthetic(tmp_path):
    pts = [("no fine-tune", s, a) for s, a in ((0, 0.97), (0.5, 0.94), (0.9, 0.64), (0.95, 0.23))]
    pts += [dict(series="fine-tuned", sparsity=0.9, value=0.959), dict(series="fine-tuned", sparsity=0.5, value=0.974)]
    assert_png(report.plot_sparsity(pts, tmp_path / "p.png", baseline=0.9667, title="synthetic"))


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
