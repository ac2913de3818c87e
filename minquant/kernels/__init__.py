"""Integer kernels: each a readable reference beside a fast Numba version with the same contract.

``target=`` chooses whose integer arithmetic is reproduced bit for bit, on which CPU: a framework name
('fbgemm', 'x86', 'qnnpack', 'onnxruntime', 'minquant'; on this host), a :class:`minquant.target.Target`
(framework × CPU), or an already resolved :class:`minquant.target.Arithmetic` (see :mod:`minquant.target`).
"""
from ..target import Arithmetic, Cpu, Target
from .conv import PackedConvWeight, QConv2d, pack_conv_weight, qconv2d, qconv2d_reference
from .gemm import PackedWeight, gemm_u8s8, gemm_u8s8_reference, pack_weight
from ..im2col import conv_out_size, im2col, im2col_reference
from .linear import QLinear, qlinear, qlinear_reference
from .requantize import output_stage, requantize_reference

__all__ = ["Arithmetic", "Cpu", "Target",
           "PackedConvWeight", "QConv2d", "QLinear", "pack_conv_weight", "qconv2d", "qconv2d_reference",
           "PackedWeight", "gemm_u8s8", "gemm_u8s8_reference", "pack_weight",
           "conv_out_size", "im2col", "im2col_reference", "qlinear", "qlinear_reference",
           "output_stage", "requantize_reference"]

from .add import qadd, qadd_reference  # noqa: E402
from .dynamic import (dynamic_conv2d, dynamic_conv2d_reference, dynamic_linear,  # noqa: E402
                      dynamic_linear_reference)
from .int4 import int4_linear, int4_linear_reference  # noqa: E402
from .pool import (qadaptive_avg_pool2d, qadaptive_avg_pool2d_reference, qavg_pool2d,  # noqa: E402
                   qavg_pool2d_reference, qmax_pool2d, qmax_pool2d_reference)

__all__ += ["qadd", "qadd_reference", "dynamic_linear", "dynamic_linear_reference", "dynamic_conv2d",
            "dynamic_conv2d_reference", "int4_linear",
            "int4_linear_reference", "qmax_pool2d", "qmax_pool2d_reference", "qavg_pool2d",
            "qavg_pool2d_reference", "qadaptive_avg_pool2d", "qadaptive_avg_pool2d_reference"]
