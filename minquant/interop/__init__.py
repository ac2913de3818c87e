"""Interop: minquant models from and to other frameworks' formats — ``interop.torch`` (torch.fx import of
float models, import of torch's eager int8 models) and ``interop.onnx`` (ONNX import and export). May import
the core, ``kernels`` and ``quantized``; imports torch / onnx only inside the functions that need them."""
