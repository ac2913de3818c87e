"""ONNX Runtime as the oracle minquant is checked against (``target="onnxruntime"``): everything ONNX Runtime,
in one module.

    y = run_node("QLinearAdd", {"a": a}, {...}, np.uint8, domain="com.microsoft")   # one node
    run = ort_runner("model.onnx")                       # one thread, CPU provider, default optimizations
    y = run(x)                                           # the first output for the first input
    int8 = ort_quantize(fp32, calib, "model_qdq.onnx", "qdq")   # onnxruntime.quantization

* :func:`ort_session` / :func:`ort_runner` — an ``InferenceSession`` with one intra-op and one inter-op
  thread (ORT's results must not depend on how the work is split), the CPU execution provider, ORT's default
  graph optimizations (or none: ``optimize=False``) and warnings silenced; ``optimized=PATH`` also writes the
  graph ORT actually runs (``SessionOptions.optimized_model_filepath``: what the QDQ pairs were fused into).
* :func:`run_node` — one ONNX node built with ``onnx.helper`` (the integer inputs as graph inputs, the
  constant parameters as initializers), run with graph optimizations off; on it :func:`quantize_linear`,
  :func:`qlinear_conv`, :func:`qgemm`, :func:`qlinear_matmul`, :func:`qlinear_add`,
  :func:`qlinear_global_average_pool`, :func:`matmul_nbits` take minquant-style arguments.
* :func:`ort_quantize` — ONNX Runtime's own quantizers: ``quantize_static`` (QDQ or QOperator, uint8
  activations, int8 per-channel weights, one calibration image per step, optionally after
  ``quant_pre_process`` — the lesson's recipe) or ``quantize_dynamic`` (int8 weights).
* :func:`onnx_initializer_bytes` — the bytes of an ONNX file's initializers, as stored.

A float model becomes an ONNX file with :func:`minquant.frameworks.torch_oracle.export_onnx` (torch's side).
onnx / onnxruntime are imported inside the functions. Pinned: onnx 1.23.2, onnxruntime 1.32.0
(requirements.txt).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import quiet

__all__ = ["ort_session", "ort_runner", "run_node", "quantize_linear", "qlinear_conv", "qgemm", "qlinear_matmul",
           "qlinear_add", "qlinear_global_average_pool", "matmul_nbits", "ort_quantize", "ORT_FORMATS",
           "onnx_initializer_bytes"]

#: what :func:`ort_quantize` writes
ORT_FORMATS = ("qdq", "qoperator", "dynamic")

#: ONNX tensor types ↔ NumPy dtypes (model inputs / outputs)
_NP_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
              "tensor(int32)": np.int32, "tensor(int64)": np.int64}


# ------------------------------------------------------------------------------------------------------
# sessions
# ------------------------------------------------------------------------------------------------------
def ort_session(model, optimized=None, *, optimize: bool = True):
    """``onnxruntime.InferenceSession`` for ``model`` (a path or an ``onnx.ModelProto``): CPU provider, one
    intra-op / one inter-op thread, log severity 3 (errors only), ORT's default graph optimizations
    (``optimize=False``: none — the model runs node by node as written). ``optimized``: also save the
    optimized graph there."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def ort_runner(model, optimized=None):
    """``x ↦`` the first output of :func:`ort_session` ``(model, optimized)`` for ``x`` fed to its first
    input (as a contiguous array of that input's dtype: float64 data runs a float model as float32)."""
    sess = ort_session(model, optimized)
    inp = sess.get_inputs()[0]
    name, dtype = inp.name, _NP_DTYPES.get(inp.type)
    return lambda x: sess.run(None, {name: np.ascontiguousarray(x, dtype=dtype)})[0]


# ------------------------------------------------------------------------------------------------------
# one node
# ------------------------------------------------------------------------------------------------------
def run_node(op_type, inputs: dict, initializers: dict, out_dtype, attrs=None, domain="", opset=21):
    """Run one ONNX node. ``inputs``: name → array fed at run time; ``initializers``: name → constant array
    (None for an omitted optional input). Input order is inputs then initializers as given. Graph
    optimizations off, one thread."""
    from onnx import TensorProto, helper, numpy_helper

    types = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.uint8): TensorProto.UINT8,
             np.dtype(np.int8): TensorProto.INT8, np.dtype(np.int32): TensorProto.INT32,
             np.dtype(np.int64): TensorProto.INT64}
    names, vi, inits = [], [], []
    for k, v in inputs.items():
        names.append(k)
        vi.append(helper.make_tensor_value_info(k, types[np.asarray(v).dtype], np.asarray(v).shape))
    for k, v in initializers.items():
        if v is None:
            names.append("")
            continue
        names.append(k)
        inits.append(numpy_helper.from_array(np.asarray(v), k))
    node = helper.make_node(op_type, names, ["y"], domain=domain, **(attrs or {}))
    out = helper.make_tensor_value_info("y", types[np.dtype(out_dtype)], None)
    graph = helper.make_graph([node], "one_node", vi, [out], initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    sess = ort_session(model, optimize=False)
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


def qlinear_add(a_q, a_scale, a_zp, b_q, b_scale, b_zp, y_scale, y_zp):
    """com.microsoft ``QLinearAdd`` of two uint8 tensors (b given with the constants, to keep the node's
    input order)."""
    return run_node("QLinearAdd", {"a": a_q},
                    {"as": np.float32(a_scale), "az": np.uint8(a_zp), "b": np.asarray(b_q),
                     "bs": np.float32(b_scale), "bz": np.uint8(b_zp), "cs": np.float32(y_scale),
                     "cz": np.uint8(y_zp)}, np.uint8, domain="com.microsoft")


def qlinear_global_average_pool(x_q, x_scale, x_zp, y_scale, y_zp):
    """com.microsoft ``QLinearGlobalAveragePool`` on a uint8 NCHW tensor."""
    return run_node("QLinearGlobalAveragePool", {"x": x_q},
                    {"xs": np.float32(x_scale), "xz": np.uint8(x_zp), "ys": np.float32(y_scale),
                     "yz": np.uint8(y_zp)}, np.uint8, {"channels_last": 0}, domain="com.microsoft")


def matmul_nbits(x, packed, scales, zp_packed, *, k, n, block_size, bits=4):
    """com.microsoft ``MatMulNBits``: float ``x`` (…, k) times ``bits``-bit weights ``packed`` (n, k/block,
    block·bits/8) with float ``scales`` and packed zero points ``zp_packed`` (None: the default) per block;
    float32 output."""
    return run_node("MatMulNBits", {"a": np.asarray(x, np.float32)},
                    {"b": packed, "scales": np.asarray(scales, np.float32).reshape(-1), "zp": zp_packed},
                    np.float32, dict(K=k, N=n, bits=bits, block_size=block_size), domain="com.microsoft")


# ------------------------------------------------------------------------------------------------------
# ONNX Runtime's quantization tool
# ------------------------------------------------------------------------------------------------------
def ort_quantize(fp32, calib, path, format: str = "qdq", *, method: str = "MinMax",
                 pre_process: bool = False) -> Path:
    """ONNX Runtime's quantization of the float file ``fp32`` (input named ``x``), written to ``path``.

    ``format`` "qdq" / "qoperator": ``quantize_static`` with ``calib`` fed one image at a time, ``method``
    calibration (a ``CalibrationMethod`` name: "MinMax", "Entropy", "Percentile"), uint8 activations and
    per-channel int8 weights, in that format. ``pre_process=True`` first runs ORT's recommended
    ``quant_pre_process`` (shape inference + graph cleanup; skipped if it fails) — with "qdq", the lesson's
    recipe. "dynamic": ``quantize_dynamic`` with int8 weights (``calib`` unused). The quantizer's warnings and
    advice are silenced. Returns ``Path(path)``."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    if format not in ORT_FORMATS:
        raise ValueError(f"ort_quantize: format must be one of {ORT_FORMATS}, got {format!r}")
    if format == "dynamic":
        with quiet():
            quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
        return Path(path)
    if not hasattr(CalibrationMethod, method):
        raise ValueError(f"ort_quantize: unknown calibration method {method!r}; ORT has "
                         f"{[m.name for m in CalibrationMethod]}")
    if calib is None or len(calib) == 0:
        raise ValueError("ort_quantize: static quantization needs calibration data, got none")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    src = Path(fp32)
    with quiet():
        if pre_process:
            pre = Path(path).with_name(Path(path).stem + "_pre.onnx")
            try:
                from onnxruntime.quantization.shape_inference import quant_pre_process
                quant_pre_process(str(fp32), str(pre))
                src = pre
            except Exception:   # pre-processing is advice, not a requirement
                pass
        quantize_static(str(src), str(path), Reader(), per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, method),
                        quant_format=QuantFormat.QDQ if format == "qdq" else QuantFormat.QOperator)
    return Path(path)


def onnx_initializer_bytes(path) -> int:
    """Bytes of all initializers (weights, scales, zero points) of an ONNX file, as stored."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(path))
    return int(sum(numpy_helper.to_array(t).nbytes for t in m.graph.initializer))
