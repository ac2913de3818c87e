"""PyTorch's quantized operators on integer inputs (the oracle for ``target="fbgemm"`` / ``"qnnpack"``).

Each function wraps minquant-style arguments (NumPy codes + scales + zero points) into torch quantized
tensors, calls the eager-mode operator under the requested engine, and returns the NumPy codes.
Pinned: torch 2.14.1 (requirements.txt). torch warns that quantized tensors are deprecated; these helpers
silence exactly that warning so that a test run with warnings-as-errors still compares arithmetic.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

__all__ = ["engine", "to_qtensor", "weight_qtensor", "quantize", "qlinear", "qconv2d", "dynamic_linear"]


@contextlib.contextmanager
def engine(name: str):
    """Run under torch.backends.quantized.engine = name ('fbgemm', 'x86', 'qnnpack'), then restore."""
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecated.*")
            yield
    finally:
        torch.backends.quantized.engine = old


def to_qtensor(codes, scale, zero_point):
    """uint8 codes → torch.quint8 per-tensor tensor with exactly these codes."""
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(np.ascontiguousarray(codes)),
                                                   float(scale), int(zero_point))


def weight_qtensor(w_q, w_scale, w_zp):
    """int8 codes → torch.qint8 tensor, per tensor (scalar scale) or per channel along axis 0."""
    w = torch.from_numpy(np.ascontiguousarray(w_q))
    if np.ndim(w_scale) == 0:
        return torch._make_per_tensor_quantized_tensor(w, float(w_scale), int(w_zp))
    n = w_q.shape[0]
    scales = torch.from_numpy(np.asarray(w_scale, np.float64).reshape(n))
    zps = torch.from_numpy(np.broadcast_to(np.asarray(w_zp, np.int64), (n,)).copy())
    return torch._make_per_channel_quantized_tensor(w, scales, zps, 0)


def quantize(x, scale, zero_point, dtype="uint8", axis=None):
    """torch.quantize_per_tensor / quantize_per_channel → codes."""
    tdt = {"uint8": torch.quint8, "int8": torch.qint8, "int32": torch.qint32}[dtype]
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        if axis is None:
            q = torch.quantize_per_tensor(xt, float(scale), int(zero_point), tdt)
        else:
            q = torch.quantize_per_channel(xt, torch.from_numpy(np.asarray(scale, np.float64)),
                                           torch.from_numpy(np.asarray(zero_point, np.int64)), axis, tdt)
    return q.int_repr().numpy()


def qlinear(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, y_scale, y_zp, *, relu=False):
    """torch.ops.quantized.linear(_relu) under the current engine (use inside ``engine(...)``)."""
    b = None if bias is None else torch.from_numpy(np.asarray(bias, np.float32))
    packed = torch.ops.quantized.linear_prepack(weight_qtensor(w_q, w_scale, w_zp), b)
    op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
    return op(to_qtensor(x_q, x_scale, x_zp), packed, float(y_scale), int(y_zp)).int_repr().numpy()


def qconv2d(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, y_scale, y_zp, *, stride=1, padding=0,
            dilation=1, groups=1, relu=False):
    """torch.ops.quantized.conv2d(_relu) under the current engine."""
    two = lambda v: [int(v), int(v)] if np.isscalar(v) else [int(t) for t in v]  # noqa: E731
    b = None if bias is None else torch.from_numpy(np.asarray(bias, np.float32))
    packed = torch.ops.quantized.conv2d_prepack(weight_qtensor(w_q, w_scale, w_zp), b, two(stride),
                                                two(padding), two(dilation), int(groups))
    op = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
    return op(to_qtensor(x_q, x_scale, x_zp), packed, float(y_scale), int(y_zp)).int_repr().numpy()


def dynamic_linear(x, w_q, w_scale, w_zp, bias, *, reduce_range=True):
    """torch.ops.quantized.linear_dynamic: float x, int8 weights, float output."""
    b = None if bias is None else torch.from_numpy(np.asarray(bias, np.float32))
    packed = torch.ops.quantized.linear_prepack(weight_qtensor(w_q, w_scale, w_zp), b)
    return torch.ops.quantized.linear_dynamic(torch.from_numpy(np.ascontiguousarray(x, np.float32)), packed,
                                              bool(reduce_range)).numpy()
