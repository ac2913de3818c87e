"""Integer kernels: each a readable reference beside a fast Numba version with the same contract."""
from .im2col import conv_out_size, im2col, im2col_reference

__all__ = ["conv_out_size", "im2col", "im2col_reference"]
