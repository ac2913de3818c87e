"""Integer kernels: each a readable reference beside a fast Numba version with the same contract.

``emulate=`` chooses whose integer arithmetic is reproduced bit for bit (see :mod:`.arithmetic`).
"""
from .arithmetic import EMULATIONS, Arithmetic, arithmetic, cpu_has_vnni, describe_cpu
from .conv import PackedConvWeight, QConv2d, pack_conv_weight, qconv2d, qconv2d_reference
from .gemm import PackedWeight, gemm_u8s8, gemm_u8s8_reference, pack_weight
from .im2col import conv_out_size, im2col, im2col_reference
from .linear import QLinear, qlinear, qlinear_reference
from .requantize import output_stage, requantize, requantize_reference

__all__ = ["EMULATIONS", "Arithmetic", "arithmetic", "cpu_has_vnni", "describe_cpu",
           "PackedConvWeight", "QConv2d", "QLinear", "pack_conv_weight", "qconv2d", "qconv2d_reference",
           "PackedWeight", "gemm_u8s8", "gemm_u8s8_reference", "pack_weight",
           "conv_out_size", "im2col", "im2col_reference", "qlinear", "qlinear_reference",
           "output_stage", "requantize", "requantize_reference"]
