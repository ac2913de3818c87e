"""What the frameworks do, as callable recipes — the oracles minquant is compared with, installed with the
package so that tests, benchmarks, the demo and a user's own checks share them:

``torch_ops``     PyTorch's quantized operators (``torch.ops.quantized``, engines fbgemm / x86 / qnnpack) on the
                  same integer inputs minquant's kernels get;
``torch_recipes`` whole-model recipes as the lesson writes them (eager PTQ, ``quantize_dynamic``);
``ort_ops``       single-node ONNX models run by ONNX Runtime's CPU execution provider;
``ort_recipes``   ONNX Runtime's own quantization tool and sessions on whole models.

They import torch / onnxruntime; nothing below this layer imports them."""
