"""LiteRT whole models (issue 17): TinyCNN, MobileNetV2 and a MobileNetV3-style net with hard-swish quantized by
minquant for LiteRT, written with ``to_tflite`` and run by the interpreter on every kernel path — logits equal,
bit for bit, to minquant's under the matching target; the file read back with ``from_tflite`` computes the same
logits again."""
import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite")

from minquant.interop.litert import from_tflite, tflite_bytes, to_tflite  # noqa: E402
from minquant.interop.litert.runtime import interpreter, run_tflite  # noqa: E402
from minquant.quantized import quantize_static  # noqa: E402
from minquant.quantized.model import QuantizedModel  # noqa: E402
from minquant.target import Target  # noqa: E402

PATHS = {"xnnpack": "litert", "builtin+xnnpack": "litert", "builtin": "litert-builtin", "reference": "litert-ref"}


def _nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def tiny(digits_model):
    model, (x_tr, _, x_te, _) = digits_model
    qm = quantize_static(model, x_tr[:256], target="litert", batch_size=64, progress=False)
    return qm, x_te[:120]


@pytest.fixture(scope="module")
def mobilenet():
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet
    try:
        model = mobilenet_v2_imagenet()
    except (OSError, ValueError) as e:       # weights not installed
        pytest.skip(f"MobileNetV2 weights unavailable: {e}")
    qm = quantize_static(model, photo_crops(8, split="calib"), target="litert", batch_size=8, progress=False)
    return qm, photo_crops(3, split="eval")


def _check(qm, x, tmp_path):
    data = tflite_bytes(qm)
    written = to_tflite(qm, tmp_path / f"{qm.name}.tflite")
    assert written.read_bytes() == data
    per_path = {}
    for path, fw in PATHS.items():
        mine = QuantizedModel(qm.graph, Target(fw, qm.target.cpu))(x)
        got = run_tflite(interpreter(data, path), _nhwc(x), path)
        assert got.shape == mine.shape
        assert int((got != mine).sum()) == 0, f"{qm.name} on {path}: {int((got != mine).sum())} differing logits"
        back = from_tflite(written, target=fw)(x)
        assert np.array_equal(back, got), f"{qm.name}: from_tflite on {fw}"
        per_path[path] = got
    # the paths are different arithmetics: on a whole model they do not all agree
    assert not all(np.array_equal(per_path["xnnpack"], v) for v in per_path.values())


def test_tinycnn_every_path(tiny, tmp_path):
    qm, x = tiny
    _check(qm, x, tmp_path)


def test_mobilenet_v2_every_path(mobilenet, tmp_path):
    qm, x = mobilenet
    assert {n.op for n in qm.graph.nodes} >= {"qconv2d", "qadd", "qlinear", "qadaptive_avg_pool2d"}
    _check(qm, x, tmp_path)


@pytest.fixture(scope="module")
def hardswish_net(digits_model):
    """A MobileNetV3-style net (hard-swish after the stem and inside two inverted residual blocks, a
    global average pool, a classifier), random weights and BatchNorm statistics, calibrated on digits."""
    torch = pytest.importorskip("torch")
    from torch import nn
    _, (x_tr, _, x_te, _) = digits_model
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, c, e):
            super().__init__()
            self.expand = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.Hardswish())
            self.dw = nn.Sequential(nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), nn.BatchNorm2d(e),
                                    nn.Hardswish())
            self.project = nn.Sequential(nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return x + self.project(self.dw(self.expand(x)))
    model = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.Hardswish(),
                          Block(8, 24), Block(8, 16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    qm = quantize_static(model, x_tr[:128], target="litert", batch_size=64, progress=False)
    return qm, x_te[:100]


def test_hardswish_net_every_path(hardswish_net, tmp_path):
    """HARD_SWISH inside a whole model: quantize_static(target='litert') makes hard-swish LiteRT's integer op
    (qhardswish, not a float fallback), and the file runs bit-exactly on every path."""
    qm, x = hardswish_net
    ops = [n.op for n in qm.graph.nodes]
    assert ops.count("qhardswish") == 5 and "hardswish" not in ops and not qm.meta["float_fallback"]
    _, env = qm.run(x, intermediates=True, raw=True)
    for n in qm.graph.nodes:
        if n.op == "qhardswish":
            assert np.isin(env[n.name], [0, 255]).mean() < 0.05 and len(np.unique(env[n.name])) > 60, n.name
    _check(qm, x, tmp_path)
