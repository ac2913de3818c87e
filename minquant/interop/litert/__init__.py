"""LiteRT (TensorFlow Lite): .tflite export, import and the interpreter (docs/quantization.md, step 7d)."""
