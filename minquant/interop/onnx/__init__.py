"""ONNX ↔ minquant: :func:`from_onnx` (a float model → a Graph; a graph of quantization operators → an
:class:`OnnxProgram`, run node by node with any input types, ranks and counts), :func:`from_onnx_quantized` (a QDQ, QOperator
or dynamic model → a QuantizedModel, as ONNX Runtime runs it; :func:`onnx_is_quantized` tells which kind a file
is) and :func:`to_onnx` (QDQ or QOperator files that ONNX Runtime runs bit-identically to
``target="onnxruntime"``). The importer's modules: ``proto`` (reading the file), ``fuse`` (what ORT's optimizer
makes of it), ``build`` (the graph builder), ``handlers`` (one per ONNX op), ``importer`` (the entry points); the executor's:
``dtypes`` (ONNX types as minquant stores them), ``node_ops`` (one function per quantization operator, on
run-time values), ``program`` (:class:`OnnxProgram`).
onnx and onnxruntime are imported only inside the functions."""
from .importer import from_onnx, from_onnx_quantized, onnx_is_quantized
from .exporter import to_onnx
from .program import OnnxProgram

__all__ = ["from_onnx", "from_onnx_quantized", "onnx_is_quantized", "to_onnx", "OnnxProgram"]
