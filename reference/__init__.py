"""How the frameworks do each step — the recipes minquant is compared with.

``reference.torch_quant``: PyTorch's quantized operators (``torch.ops.quantized``, eager engines fbgemm /
x86 / qnnpack), called on the same integer inputs minquant's kernels get.
``reference.ort_quant``: single-node ONNX models run by ONNX Runtime's CPU execution provider.

These modules are test oracles and teaching material; minquant itself never imports them.
"""
