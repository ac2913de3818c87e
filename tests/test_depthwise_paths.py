"""The depthwise fast paths of :class:`minquant.kernels.QConv2d` (channels-last for small images, the 3×3
kernel, the general phase-plane kernel) against the readable reference, bit for bit — including
weights large enough for pairs to saturate int16 (step 8), weight zero points, channel multipliers,
dilation, strides 1–3 and a per-channel top clamp (``clamp_hi``)."""
import itertools
import zlib

import numpy as np
import pytest

import minquant.kernels.conv as conv
from minquant.kernels import QConv2d, qconv2d_reference

CASES = list(itertools.product(
    [(1, 8, 9), (2, 6, 20), (1, 5, 40)],        # (batch, channels, image size): NHWC and NCHW paths
    [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 1, 2), (5, 2, 2, 1), (2, 3, 0, 1), (1, 1, 0, 1)],  # k, stride, pad, dil
    [1, 2],                                     # channel multiplier
    ["wide", "narrow", "zp"],                   # 8-bit weights (pairs saturate) / 7-bit / weight zero points
    ["fbgemm", "onnxruntime"],
))


@pytest.mark.parametrize("shape,geo,mult,weights,target", CASES)
def test_depthwise_paths_match_reference(shape, geo, mult, weights, target):
    n, c, hw = shape
    k, s, p, d = geo
    if (hw + 2 * p - d * (k - 1) - 1) < 0:
        pytest.skip("empty output")
    rng = np.random.default_rng(zlib.crc32(repr((shape, geo, mult, weights, target)).encode()))
    co = c * mult
    lim = 127 if weights != "narrow" else 64
    w_q = rng.integers(-lim - (weights != "narrow"), lim + 1, (co, 1, k, k)).astype(np.int8)
    if weights == "wide":   # make some pairs reach the int16 limit: 255·(127 + 127) > 32767
        w_q[::2, 0, 0, :2] = 127
    w_zp = rng.integers(-3, 4, co) if weights == "zp" else 0
    x_q = rng.integers(0, 256, (n, c, hw, hw)).astype(np.uint8)
    x_q[0, 0] = 255
    w_s = rng.uniform(0.002, 0.01, co).astype(np.float32)
    bias = rng.normal(0, 1, co).astype(np.float32)
    clamp_hi = rng.integers(140, 256, co)
    kw = dict(stride=s, padding=p, dilation=d, groups=c, clamp=(5, 250), clamp_hi=clamp_hi, target=target)
    ref = qconv2d_reference(x_q, 0.02, 7, w_q, w_s, w_zp, bias, 0.03, 120, **kw)
    top = np.minimum(clamp_hi, 250).reshape(1, -1, 1, 1)
    assert (ref == 5).mean() < 0.7 and (ref == top).mean() < 0.9 and len(np.unique(ref)) > 20   # not saturated
    layer = QConv2d(w_q, w_s, w_zp, bias, 0.02, 7, 0.03, 120, **kw)
    for thr in (0, 10 ** 6):   # every image through the NCHW kernels, then through channels-last
        old = conv._NHWC_MAX_OW
        conv._NHWC_MAX_OW = thr
        try:
            np.testing.assert_array_equal(layer(x_q), ref)
        finally:
            conv._NHWC_MAX_OW = old
