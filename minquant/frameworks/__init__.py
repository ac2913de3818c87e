"""What the frameworks do, as callable recipes — the oracles minquant is compared with, installed with the
package so that tests, benchmarks, the demo, ``minquant doctor`` and a user's own checks share them. One
module per framework:

``torch_oracle``  everything PyTorch: the ``engine(...)`` context manager, the quantized operators
                  (``torch.ops.quantized``, engines fbgemm / x86 / qnnpack) on the same integer inputs
                  minquant's kernels get, the whole-model recipes as the lesson writes them (eager PTQ,
                  the seed's ``quantize_dynamic``) and the one ``torch.onnx.export`` wrapper (``export_onnx``);
``ort_oracle``    everything ONNX Runtime: one-node models (``run_node``), sessions and ``ort_runner`` on
                  whole models, and ONNX Runtime's own quantization tool (``ort_quantize``).

They import torch / onnxruntime; nothing below this layer imports them. :func:`quiet` (here: both use it)
silences the frameworks' warnings and advice inside a block."""
import contextlib
import logging
import warnings


@contextlib.contextmanager
def quiet():
    """Silence the frameworks' deprecation / export warnings (and ONNX Runtime's quantizer's advice, logged
    on the root logger) inside the block."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
