"""minquant.lesson.render: the text listing names every node with its qparams, the attributes that differ from
their defaults and its params; the PNG is a real, sanely sized image with int8 and float boxes in their
colours, a straight arrow between consecutive nodes and a bracket at the column's side for a skip connection
(read from the pixels); bad input raises ValueError."""
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minquant  # noqa: E402
from minquant.graph import Graph, Node  # noqa: E402
from minquant.lesson.render import KIND_COLORS, node_kind, to_png, to_text, value_info  # noqa: E402

torch.set_num_threads(1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(digits_model):
    from minquant.quantized import quantize_static
    model, (x_train, _, _, _) = digits_model
    graph = minquant.from_torch(model, (1, 1, 28, 28))
    qm = quantize_static(model, x_train[:128], target="onnxruntime", progress=False)
    return graph, qm


def residual_graph():
    """A float graph with a skip connection: x → conv → relu → conv → add(x) → relu."""
    rng = np.random.default_rng(0)
    conv = minquant.graph.Conv2dAttrs(padding=1)
    w = lambda: rng.normal(0, 0.2, (4, 4, 3, 3)).astype(np.float32)  # noqa: E731
    nodes = [Node("c1", "conv2d", ["x"], conv, {"weight": w()}), Node("r1", "relu", ["c1"]),
             Node("c2", "conv2d", ["r1"], conv, {"weight": w()}), Node("add", "add", ["c2", "x"]),
             Node("out", "relu", ["add"])]
    return Graph(["x"], nodes, ["out"], {"x": (1, 4, 6, 6)}, "residual")


def test_text_float_graph_lists_every_node(tiny):
    graph, _ = tiny
    text = to_text(graph)
    assert text.splitlines()[0].startswith("Graph 'TinyCNN' (float)")
    for i, n in enumerate(graph.nodes, 1):
        assert re.search(rf"^\s*{i}\. {re.escape(n.name)}  {n.op}  ← ", text, re.M), n.name
    assert "float32 64×4×4" in text                      # output shape of the adaptive pool
    assert "weight float32[32, 1, 3, 3]" in text
    assert "input  x  float32 N×1×28×28" in text and "output classifier  float32 N×10" in text


def test_text_quantized_model_has_qparams_and_params(tiny):
    _, qm = tiny
    text = to_text(qm)
    info = qm.shapes()
    assert text.splitlines()[0].startswith("QuantizedModel 'TinyCNN' (target='onnxruntime@")
    for n in qm.graph.nodes:
        assert f"{n.name}  {n.op}" in text
        if n.name in qm.qparams:
            s, z = qm.qparams[n.name]
            assert f"scale {float(s):.6g}  zero point {z}" in text, n.name
        assert info[n.name][1] in text
    conv = qm.graph.node("features.2")
    w = conv.params["weight"]
    assert f"weight int8{list(w.shape)} {w.min()}…{w.max()}" in text
    # attributes are listed when they differ from the default (x_zp=0): the first conv reads the quantized
    # input (zero point 86-ish), the second reads a ReLU's codes (zero point 0)
    first, second = qm.graph.node("features.0").attrs.x_zp, conv.attrs.x_zp
    assert first != 0 and second == 0
    assert attrs_line(text, "features.0").split().count(f"x_zp={first}") == 1
    assert "x_zp=" not in attrs_line(text, "features.2")
    assert f"x_scale={float(conv.attrs.x_scale):.6g}" in attrs_line(text, "features.2").split()


def attrs_line(text, name):
    """The ``attrs`` line of node ``name``'s block in a listing ('' when the block has none)."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"^\s*\d+\. {re.escape(name)}  ", ln))
    for ln in lines[start + 1:]:
        if re.match(r"^\s*(\d+\. |output )", ln):
            break
        if ln.strip().startswith("attrs "):
            return ln
    return ""


def test_text_reads_onnx_files(tiny, tmp_path):
    pytest.importorskip("onnx")
    import minquant.interop.onnx.importer  # noqa: F401  (part of minquant: an ImportError here is a failure)
    from minquant.interop.onnx.exporter import to_onnx
    graph, qm = tiny
    text = to_text(to_onnx(qm, tmp_path / "q.onnx", format="qoperator"))
    assert "QuantizedModel" in text and "qconv2d" in text and "QLinearConv" in text
    text = to_text(to_onnx(graph, tmp_path / "f.onnx"))
    assert text.startswith("Graph") and "conv2d" in text


def _colour_fraction(img, hex_colour):
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
    return float(np.mean(np.all(np.abs(img[..., :3] - rgb) < 0.02, axis=-1)))


def test_png_quantized_and_float(tiny, tmp_path):
    import matplotlib.image as mpimg
    graph, qm = tiny
    for model, want, absent in ((qm, ("int8", "convert"), "float"), (graph, ("float",), "int8")):
        path = to_png(model, tmp_path / "m.png", rows=3)          # 3 rows: several columns, routed edges
        raw = path.read_bytes()
        assert raw[:8] == PNG_MAGIC and 10_000 < len(raw) < 3_000_000
        img = mpimg.imread(str(path))
        h, w = img.shape[:2]
        assert 300 < h < 4000 and 300 < w < 4000
        assert w > h                                             # 8 boxes in 3 rows → 3 columns: wide
        for kind in want:
            assert _colour_fraction(img, KIND_COLORS[kind]) > 0.005, kind
        assert _colour_fraction(img, KIND_COLORS[absent]) == 0.0
    assert not list(tmp_path.glob("*.tmp*"))


def _box_rows_and_right_edge(img, colours):
    """(row bands [(top, bottom)] of the boxes filled with one of ``colours``, their x centre, right edge)."""
    fill = np.zeros(img.shape[:2], bool)
    for c in colours:
        rgb = np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
        fill |= np.all(np.abs(img[..., :3] - rgb) < 0.02, axis=-1)
    wide = fill.sum(axis=1) > fill.shape[1] // 4            # box rows, not the legend's small swatches
    rows = np.flatnonzero(wide)
    bands = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
    cols = np.flatnonzero(fill[wide].any(axis=0))
    bands = [b for b in bands if b.size > 5]                # not an anti-aliased edge row that matches by chance
    return [(int(b[0]), int(b[-1])) for b in bands], int((cols[0] + cols[-1]) // 2), int(cols[-1])


def test_png_default_layout_and_skip_edges(tmp_path):
    """The residual graph and the same chain without its skip (add reads c2 twice: one edge) are drawn in
    the same default layout (one column of six boxes). Both have a straight arrow in every gap between
    consecutive boxes; the pixels that differ are exactly the skip's bracket: right of the boxes, from the
    middle of the input box x down to the middle of the add box, a vertical line the whole way."""
    import matplotlib.image as mpimg
    g = residual_graph()
    chain = residual_graph()
    chain.node("add").inputs[:] = ["c2", "c2"]
    assert [node_kind(n, value_info(g)) for n in g.nodes] == ["float"] * 5
    imgs = []
    for graph, name in ((g, "r.png"), (chain, "c.png")):
        path = to_png(graph, tmp_path / name, title="residual")
        assert path.read_bytes()[:8] == PNG_MAGIC
        imgs.append(mpimg.imread(str(path)))
    with_skip, without = imgs
    assert with_skip.shape == without.shape
    bands, centre, right = _box_rows_and_right_edge(without, [KIND_COLORS["input"], KIND_COLORS["float"]])
    assert len(bands) == 6                                  # x, c1, r1, c2, add, out in one column
    assert _box_rows_and_right_edge(with_skip, [KIND_COLORS["input"], KIND_COLORS["float"]])[0] == bands
    dark = lambda img: img[..., :3].max(axis=-1) < 0.5       # noqa: E731  (black / grey strokes)
    for img in imgs:                                         # x→c1, c1→r1, r1→c2, c2→add, add→out
        for (_, bottom), (top, _) in zip(bands, bands[1:]):
            assert dark(img)[bottom + 3:top - 2, centre - 3:centre + 4].any(), (bottom, top)
    mid_x, mid_add = [(a + b) // 2 for a, b in (bands[0], bands[4])]
    diff = np.flatnonzero(np.any(with_skip != without, axis=-1).any(axis=0)), \
        np.flatnonzero(np.any(with_skip != without, axis=-1).any(axis=1))
    cols, rows = diff
    assert cols.size and rows.size
    assert cols.min() >= right - 3                           # nothing changed inside or left of the boxes
    assert mid_x - 6 <= rows.min() and rows.max() <= mid_add + 6
    strip = dark(with_skip)[mid_x + 2:mid_add - 1, right + 3:]
    assert strip.any(axis=0).any() and strip.all(axis=0).any()   # one pixel column dark from x down to add
    assert not dark(without)[bands[0][0]:bands[-1][1], right + 3:].any()   # no skip: nothing right of the boxes


def test_bad_input_raises(tiny, tmp_path):
    graph, _ = tiny
    with pytest.raises(ValueError, match="Graph, a QuantizedModel or an ONNX file"):
        to_text(42)
    with pytest.raises(ValueError, match="not a file"):
        to_text(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match=r"\.png"):
        to_png(graph, tmp_path / "m.jpg")
    no_shapes = Graph(["x"], [Node("r", "relu", ["x"])], ["r"], None, "noshape")
    with pytest.raises(ValueError, match="input_shapes"):
        to_text(no_shapes)
    assert not list(tmp_path.iterdir())
