"""ONNX Runtime's quantized operators, one node at a time (the oracle for ``target="onnxruntime"``).

Each function builds a one-node ONNX model with ``onnx.helper`` — the integer inputs as graph inputs, the
constant parameters as initializers — and runs it with ONNX Runtime's CPU execution provider on one thread.
Pinned: onnx 1.23.2, onnxruntime 1.32.0 (requirements.txt).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

__all__ = ["run_node", "quantize_linear", "qlinear_conv", "qgemm", "qlinear_matmul"]

_NP_TO_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.uint8): TensorProto.UINT8,
               np.dtype(np.int8): TensorProto.INT8, np.dtype(np.int32): TensorProto.INT32,
               np.dtype(np.int64): TensorProto.INT64}


def run_node(op_type, inputs: dict, initializers: dict, out_dtype, attrs=None, domain="", opset=21):
    """Run one ONNX node. ``inputs``: name → array fed at run time; ``initializers``: name → constant array
    (None for an omitted optional input). Input order is inputs then initializers as given."""
    names, vi, inits = [], [], []
    for k, v in inputs.items():
        names.append(k)
        vi.append(helper.make_tensor_value_info(k, _NP_TO_ONNX[np.asarray(v).dtype], np.asarray(v).shape))
    for k, v in initializers.items():
        if v is None:
            names.append("")
            continue
        names.append(k)
        inits.append(numpy_helper.from_array(np.asarray(v), k))
    node = helper.make_node(op_type, names, ["y"], domain=domain, **(attrs or {}))
    out = helper.make_tensor_value_info("y", _NP_TO_ONNX[np.dtype(out_dtype)], None)
    graph = helper.make_graph([node], "one_node", vi, [out], initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {k: np.asarray(v) for k, v in inputs.items()})[0]


def quantize_linear(x, scale, zero_point, axis=None):
    """ONNX ``QuantizeLinear``: ``saturate(rne(x / scale) + zero_point)``; uint8 or int8 by zp's dtype."""
    zp = np.asarray(zero_point)
    attrs = {} if axis is None else {"axis": axis}
    return run_node("QuantizeLinear", {"x": np.asarray(x, np.float32)},
                    {"s": np.asarray(scale, np.float32), "z": zp}, zp.dtype, attrs)


def qlinear_conv(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias_i32, y_scale, y_zp, *, stride=1, padding=0,
                 dilation=1, groups=1):
    """ONNX ``QLinearConv`` (uint8 x, int8 w per tensor or per output channel, int32 bias)."""
    kh, kw = w_q.shape[2:]
    p = [padding] * 4 if np.isscalar(padding) else [padding[0], padding[1], padding[0], padding[1]]
    attrs = dict(strides=[stride] * 2 if np.isscalar(stride) else list(stride), pads=p,
                 dilations=[dilation] * 2 if np.isscalar(dilation) else list(dilation), group=groups,
                 kernel_shape=[kh, kw])
    return run_node("QLinearConv", {"x": x_q},
                    {"xs": np.float32(x_scale), "xz": np.uint8(x_zp), "w": w_q,
                     "ws": np.asarray(w_scale, np.float32), "wz": np.asarray(w_zp).astype(np.int8),
                     "ys": np.float32(y_scale), "yz": np.uint8(y_zp),
                     "b": None if bias_i32 is None else np.asarray(bias_i32, np.int32)}, np.uint8, attrs)


def qgemm(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias_i32, y_scale, y_zp):
    """com.microsoft ``QGemm`` with transB=1: y = requant(x_q · w_qᵀ + bias_i32) (the form ORT's
    quantizer gives a Gemm/Linear with bias)."""
    return run_node("QGemm", {"a": x_q},
                    {"as": np.float32(x_scale), "az": np.uint8(x_zp), "b": w_q,
                     "bs": np.asarray(w_scale, np.float32), "bz": np.asarray(w_zp).astype(np.int8),
                     "c": None if bias_i32 is None else np.asarray(bias_i32, np.int32),
                     "ys": np.float32(y_scale), "yz": np.uint8(y_zp)}, np.uint8,
                    {"transB": 1}, domain="com.microsoft")


def qlinear_matmul(x_q, x_scale, x_zp, w_q, w_scale, w_zp, y_scale, y_zp):
    """ONNX ``QLinearMatMul`` y = requant(x_q · w_qᵀ) (no bias; w given as (out, in) like torch)."""
    return run_node("QLinearMatMul", {"a": x_q},
                    {"as": np.float32(x_scale), "az": np.uint8(x_zp), "b": np.ascontiguousarray(w_q.T),
                     "bs": np.asarray(w_scale, np.float32), "bz": np.asarray(w_zp).astype(np.int8),
                     "ys": np.float32(y_scale), "yz": np.uint8(y_zp)}, np.uint8)
