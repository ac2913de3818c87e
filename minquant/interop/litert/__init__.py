"""LiteRT (TensorFlow Lite): .tflite export and import, and the interpreter's kernel paths
(docs/quantization.md, step 7d).

    minquant.to_tflite(qm, "model.tflite")          # qm quantized with target="litert" (or -builtin / -ref)
    qm2 = minquant.from_tflite("model.tflite", target="litert-ref")

``flatbuffer`` (the file: ``tflite``'s builders and readers), ``exporter``, ``importer``, ``runtime`` (the
``ai_edge_litert`` interpreter on one kernel path). Only this package imports ``tflite`` and ``ai_edge_litert``,
and only inside functions.
"""
from .exporter import tflite_bytes, to_tflite
from .importer import from_tflite

__all__ = ["to_tflite", "tflite_bytes", "from_tflite"]
