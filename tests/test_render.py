"""minquant.lesson.render: the text listing names every node with its qparams and params; the PNG is a real,
sanely sized image with int8 and float boxes in their colours; bad input raises ValueError."""
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
    assert f"x_zp={conv.attrs.x_zp}" in text or conv.attrs.x_zp == 0


def test_text_reads_onnx_files(tiny, tmp_path):
    pytest.importorskip("onnx")
    try:
        from minquant.interop.onnx.importer import from_onnx  # noqa: F401
    except ImportError:
        pytest.skip("minquant.interop.onnx.importer is not available")
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


def test_png_default_layout_and_skip_edges(tmp_path):
    g = residual_graph()
    path = to_png(g, tmp_path / "r.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [node_kind(n, value_info(g)) for n in g.nodes] == ["float"] * 5


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
