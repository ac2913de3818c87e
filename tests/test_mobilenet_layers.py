"""Every Conv2d of MobileNetV2 with its real ImageNet weights and real activations (a photo crop): minquant's
fast kernels give the same uint8 codes as torch's fbgemm conv and ONNX Runtime's QLinearConv — and the exact
textbook arithmetic would not (so the comparison is sensitive to the int16 pair saturation)."""

import numpy as np

from minquant.kernels import QConv2d
from minquant.data.zoo import mobilenet_v2_conv_cases
from minquant.frameworks import ort_oracle as ort_quant, torch_oracle as torch_quant  # the frameworks' oracles


def mobilenet_kernels_crosscheck():
    """Every conv of MobileNetV2 through minquant (fbgemm, onnxruntime and exact emulations), torch fbgemm
    and ONNX Runtime: (layers, mismatch totals)."""
    totals = dict(elements=0, torch=0, ort=0, exact_vs_torch=0)
    n_layers = 0
    for case in mobilenet_v2_conv_cases():
        x_q, xs, xz, w_q, ws, wz, b, ys, yz = case["args"]
        kw = case["kwargs"]
        with torch_quant.engine("fbgemm"):
            want_t = torch_quant.qconv2d(*case["args"], **kw)
        want_o = ort_quant.qlinear_conv(x_q, xs, xz, w_q, ws, wz.astype(np.int8), None, ys, yz, **kw)
        mine_fb = QConv2d(w_q, ws, wz, b, xs, xz, ys, yz, **kw, target="fbgemm")(x_q)
        mine_ort = QConv2d(w_q, ws, wz, b, xs, xz, ys, yz, **kw, target="onnxruntime")(x_q)
        exact = QConv2d(w_q, ws, wz, b, xs, xz, ys, yz, **kw, target="minquant")(x_q)
        n_layers += 1
        totals["elements"] += want_t.size
        totals["torch"] += int((mine_fb != want_t).sum())
        totals["ort"] += int((mine_ort != want_o).sum())
        totals["exact_vs_torch"] += int((exact != want_t).sum())
    return n_layers, totals


def test_mobilenet_v2_every_conv_bit_exact_with_torch_and_onnxruntime():
    n_layers, totals = mobilenet_kernels_crosscheck()
    assert n_layers == 52
    assert totals["elements"] > 6_000_000
    assert totals["torch"] == 0
    assert totals["ort"] == 0
    assert totals["exact_vs_torch"] > 1000   # fbgemm's depthwise kernel saturates tap pairs on every CPU
