"""Every Conv2d of MobileNetV2 with its real ImageNet weights and real activations (a photo crop): minquant's
fast kernels give the same uint8 codes as torch's fbgemm conv and ONNX Runtime's QLinearConv — and the exact
textbook arithmetic would not (so the comparison is sensitive to the int16 pair saturation)."""

from minquant.demo import mobilenet_kernels_crosscheck
from minquant.kernels import arithmetic


def test_mobilenet_v2_every_conv_bit_exact_with_torch_and_onnxruntime():
    n_layers, totals, _ = mobilenet_kernels_crosscheck()
    assert n_layers == 52
    assert totals["elements"] > 6_000_000
    assert totals["torch"] == 0
    assert totals["ort"] == 0
    if arithmetic("fbgemm").saturate_pairs:
        assert totals["exact_vs_torch"] > 1000
