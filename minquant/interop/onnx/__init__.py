"""ONNX ↔ minquant: :func:`from_onnx` (float, QDQ, QOperator and dynamic models, as ONNX Runtime runs them) and
:func:`to_onnx` (QDQ or QOperator files that ONNX Runtime runs bit-identically to ``target="onnxruntime"``).
onnx and onnxruntime are imported only inside the functions."""
from .importer import from_onnx
from .exporter import to_onnx

__all__ = ["from_onnx", "to_onnx"]
