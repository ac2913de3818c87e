"""``to_tflite``: a minquant :class:`~minquant.quantized.QuantizedModel` quantized for a LiteRT target
(``target="litert"``, ``"litert-builtin"`` or ``"litert-ref"``) → an int8 ``.tflite`` file that follows LiteRT's
quantization spec (docs/quantization.md, step 7d):

* activations int8, asymmetric: minquant's uint8 codes minus 128, zero point ``z − 128`` (same scale);
* weights int8, symmetric, zero point 0, codes in [−127, 127], per output channel (``quantized_dimension``
  0 for CONV_2D / FULLY_CONNECTED, 3 for DEPTHWISE_CONV_2D) or per tensor;
* bias int32 on the scale ``f32(s_x·s_w)``, quantized with the target's bias rule — the very integers
  minquant's output stage adds;
* layout NHWC: the model's input is float32 ``(1, H, W, C)``, CONV_2D weights OHWI, DEPTHWISE_CONV_2D
  ``(1, KH, KW, C_out)``; a flatten of a ``(C, H, W)`` map becomes a RESHAPE of the ``(H, W, C)`` map, and the
  FULLY_CONNECTED after it gets its weight columns permuted to that order (an integer sum does not care);
* one operator per node: QUANTIZE (model input), CONV_2D / DEPTHWISE_CONV_2D (padding SAME when LiteRT's SAME
  pads as the node does, else VALID after a PAD), FULLY_CONNECTED, ADD and MUL (same shapes, or one operand
  broadcast over H and W — squeeze-excite's (N, C, 1, 1)), HARD_SWISH (``qhardswish``), MEAN over H and W
  (``qmean``: axes [1, 2], its ``keep_dims``), PAD (``qpad``, with the zero point), AVERAGE_POOL_2D (average
  pools and adaptive average pools with whole windows), MAX_POOL_2D, RESHAPE, DEQUANTIZE (model output); fused
  activations NONE / RELU / RELU6 when the node's code clamp is the one LiteRT derives from them.

Anything else raises ``ValueError`` naming the node. The file is written all or nothing
(:mod:`minquant.files`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...affine import quantize_bias
from ...files import atomic_write
from .flatbuffer import (ActivationOptions, ConvOptions, DepthwiseOptions, FullyConnectedOptions, PoolOptions,
                         ReducerOptions, ReshapeOptions, TfModel, TfOp, TfTensor, write_model)

__all__ = ["to_tflite", "tflite_bytes", "activation_range"]


def activation_range(activation: str, scale: float, zero_point_u8: int) -> tuple[int, int]:
    """The uint8 code clamp LiteRT derives from a fused activation (``CalculateActivationRangeQuantized``):
    NONE [0, 255]; RELU [z, 255]; RELU6 [z, min(255, z + round_half_away(f32(6 / s)))] (uint8 codes)."""
    z = int(zero_point_u8)
    if activation == "":
        return 0, 255
    if activation == "relu":
        return max(0, z), 255
    if activation == "relu6":
        t = np.float32(6.0) / np.float32(scale)
        return max(0, z), int(min(255, z + np.floor(t + 0.5)))
    raise ValueError(f"unknown fused activation {activation!r}")


def _fused(clamp, y_scale, y_zp, node):
    for act in ("", "relu", "relu6"):
        if tuple(clamp) == activation_range(act, y_scale, y_zp):
            return act
    raise ValueError(f"node {node.name!r}: its output clamp {tuple(clamp)} is none of LiteRT's fused activations "
                     f"(NONE, RELU, RELU6 give {[activation_range(a, y_scale, y_zp) for a in ('', 'relu', 'relu6')]})")


def _same_padding(size, k, s, d, p):
    """Does LiteRT's SAME padding compute what a symmetric padding p does on this axis?"""
    eff = (k - 1) * d + 1
    out_t = (size + 2 * p - eff) // s + 1
    out_l = -(-size // s)
    total = max((out_l - 1) * s + eff - size, 0)
    return out_t == out_l and total // 2 == p


class _Writer:
    def __init__(self, qm):
        self.qm, self.m = qm, TfModel(description=f"minquant {qm.name} (target {qm.target})")
        self.shapes = qm.shapes()
        self.tensor = {}            # graph value → tensor index
        self.layout = {}            # graph value → 'nchw' (4-D, written NHWC) | 'flat_hwc' (flattened from (C,H,W))

    def act(self, value, shape_nhwc, scale, zp_u8):
        return self.m.add(TfTensor(value, tuple(int(d) for d in shape_nhwc), "int8",
                                   scale=np.array([scale], np.float32), zero_point=np.array([int(zp_u8) - 128])))

    def const(self, name, arr, dtype, scale=None, zp=None, qdim=0):
        return self.m.add(TfTensor(name, tuple(arr.shape), dtype, np.ascontiguousarray(arr), scale, zp, qdim))


def _shape(writer, value):
    shp = writer.shapes[value][0]
    return (1,) + tuple(shp[1:])


def _nhwc(shape):
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else shape


def tflite_bytes(qm) -> bytes:
    """The .tflite flatbuffer of ``qm`` (module docstring)."""
    from ...quantized.model import QuantizedModel
    from ...quantized.executor import weight_qparams
    from ...quantized.ops import value_qparams
    if not isinstance(qm, QuantizedModel):
        raise TypeError(f"to_tflite takes a QuantizedModel, got {type(qm).__name__}")
    ar = qm.target.linear()
    if ar.litert is None:
        raise ValueError(f"model {qm.name!r} was quantized for target {qm.target}; a .tflite follows LiteRT's rules "
                         "(symmetric int8 weights in [-127, 127], LiteRT's output stage): quantize it with "
                         "target='litert' (or 'litert-builtin' / 'litert-ref')")
    g = qm.graph
    if len(g.inputs) != 1:
        raise ValueError(f"to_tflite writes one-input models; {qm.name!r} has {len(g.inputs)}")
    w = _Writer(qm)
    qp = value_qparams(g)
    m = w.m
    x0 = g.inputs[0]
    w.tensor[x0] = m.add(TfTensor(x0, _nhwc(_shape(w, x0)), "float32"))
    w.layout[x0] = "nchw"
    m.inputs = [w.tensor[x0]]
    consumers = {}
    for n in g.nodes:
        for v in n.inputs:
            consumers.setdefault(v, []).append(n)
    for n in g.nodes:
        a = n.attrs
        src = n.inputs[0]
        if any(v not in w.tensor for v in n.inputs):
            raise ValueError(f"node {n.name!r} ({n.op}) reads a value that is not in the .tflite model")
        out_shape = _shape(w, n.name)
        layout = "nchw" if len(out_shape) == 4 else "flat"
        if n.op == "quantize":
            s, z = qp[n.name]
            t = w.act(n.name, _nhwc(out_shape), s, z)
            m.ops.append(TfOp("QUANTIZE", [w.tensor[src]], [t]))
        elif n.op == "dequantize":
            t = m.add(TfTensor(n.name, _nhwc(out_shape), "float32"))
            m.ops.append(TfOp("DEQUANTIZE", [w.tensor[src]], [t]))
            layout = w.layout[src]
        elif n.op in ("qconv2d", "qlinear"):
            t = _layer(w, n, a, src, out_shape, weight_qparams(n), ar)
        elif n.op in ("qadd", "qmul"):
            sa, sb = (tuple(w.shapes[v][0][1:]) for v in n.inputs)
            if sa != sb and not (len(sa) == len(sb) == 3 and all(s[0] == max(sa[0], sb[0]) and s[1:] in (
                    (1, 1), tuple(np.maximum(sa[1:], sb[1:]))) for s in (sa, sb))):
                raise ValueError(f"node {n.name!r}: {n.op[1:].upper()} broadcasts {sa} with {sb}; only equal "
                                 "shapes or a (C, 1, 1) operand are written")
            t = w.act(n.name, _nhwc(out_shape), a.y_scale, a.y_zp)
            m.ops.append(TfOp(n.op[1:].upper(), [w.tensor[v] for v in n.inputs], [t],
                              ActivationOptions("relu" if a.relu else "")))
            layout = w.layout[src]
        elif n.op in ("qavg_pool2d", "qadaptive_avg_pool2d", "qmax_pool2d"):
            ih, iw = _shape(w, src)[2:]
            if n.op == "qadaptive_avg_pool2d":
                oh, ow = a.output_size
                if ih % oh or iw % ow:
                    raise ValueError(f"node {n.name!r}: adaptive pool {ih}x{iw} → {oh}x{ow} has unequal windows")
                k = s_ = (ih // oh, iw // ow)
            else:
                k, s_ = a.kernel_size, a.stride
                if a.padding != (0, 0) or a.ceil_mode or getattr(a, "divisor_override", None) is not None \
                        or getattr(a, "dilation", (1, 1)) != (1, 1):
                    raise ValueError(f"node {n.name!r}: only VALID pools (no padding, dilation, ceil mode or "
                                     "divisor) are written")
            if n.op != "qmax_pool2d" and getattr(a, "y_scale", None) is not None and (a.y_scale, a.y_zp) != qp[src]:
                raise ValueError(f"node {n.name!r}: LiteRT's AVERAGE_POOL_2D keeps its input's qparams")
            s, z = qp[n.name]
            t = w.act(n.name, _nhwc(out_shape), s, z)
            m.ops.append(TfOp("MAX_POOL_2D" if n.op == "qmax_pool2d" else "AVERAGE_POOL_2D", [w.tensor[src]], [t],
                              PoolOptions("VALID", tuple(s_), tuple(k), "")))
        elif n.op == "qpad":
            s, z = qp[src]
            if n.attrs.value != z:
                raise ValueError(f"node {n.name!r}: LiteRT's PAD pads with the zero point ({z}), not {n.attrs.value}")
            pt, pb, pl, pr = n.attrs.pads
            t = w.act(n.name, _nhwc(out_shape), s, z)
            pads = w.const(f"{n.name}/paddings", np.array([[0, 0], [pt, pb], [pl, pr], [0, 0]], np.int32), "int32")
            m.ops.append(TfOp("PAD", [w.tensor[src], pads], [t]))
        elif n.op == "qhardswish":
            t = w.act(n.name, _nhwc(out_shape), a.y_scale, a.y_zp)
            m.ops.append(TfOp("HARD_SWISH", [w.tensor[src]], [t]))
        elif n.op == "qmean":
            t = w.act(n.name, _nhwc(out_shape), a.y_scale, a.y_zp)
            axes = w.const(f"{n.name}/axes", np.array([1, 2], np.int32), "int32")
            m.ops.append(TfOp("MEAN", [w.tensor[src], axes], [t], ReducerOptions(a.keep_dims)))
            layout = "nchw" if a.keep_dims else "flat"
        elif n.op in ("qflatten", "qreshape"):
            in_shape = _shape(w, src)
            if len(out_shape) != 2:
                raise ValueError(f"node {n.name!r}: only reshapes to (N, features) are written")
            if len(in_shape) == 4 and in_shape[2] * in_shape[3] > 1:
                if any(c.op != "qlinear" for c in consumers.get(n.name, [])) or n.name in g.outputs:
                    raise ValueError(f"node {n.name!r}: a flatten of a (C, H, W) map is written only before a "
                                     "FULLY_CONNECTED (whose columns take the NHWC order)")
                layout = "flat_hwc"
            s, z = qp[n.name]
            t = w.act(n.name, out_shape, s, z)
            shp = w.const(f"{n.name}/shape", np.array(out_shape, np.int32), "int32")
            m.ops.append(TfOp("RESHAPE", [w.tensor[src], shp], [t], ReshapeOptions(tuple(out_shape))))
            if layout == "flat_hwc":
                w.layout[n.name + "/from"] = in_shape
        else:
            raise ValueError(f"node {n.name!r}: op {n.op!r} has no LiteRT form in minquant's exporter")
        w.tensor[n.name] = t
        w.layout[n.name] = layout if n.op not in ("dequantize", "qadd", "qmul") else w.layout[src]
    m.outputs = [w.tensor[v] for v in g.outputs]
    for v in g.outputs:
        if m.tensors[w.tensor[v]].dtype != "float32":
            raise ValueError(f"output {v!r} is codes; a written model ends in DEQUANTIZE (float32 outputs)")
    return write_model(m)


def _layer(w, n, a, src, out_shape, wq, ar):
    """CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (+ PAD) for a qconv2d / qlinear node."""
    m = w.m
    if "clamp_hi" in n.params:
        raise ValueError(f"node {n.name!r}: a per-channel output clamp has no LiteRT form")
    ws, wz = wq
    ws = np.atleast_1d(np.asarray(ws, np.float32))
    if np.any(np.asarray(wz) != 0):
        raise ValueError(f"node {n.name!r}: LiteRT's weights are symmetric (zero point 0)")
    weight = n.params["weight"]
    if weight.min() < -127:
        raise ValueError(f"node {n.name!r}: LiteRT's weight codes lie in [-127, 127]; this layer has -128")
    c_out = weight.shape[0]
    bias = n.params.get("bias")
    bias_q = np.zeros(c_out, np.int32) if bias is None else (
        bias.astype(np.int32) if bias.dtype.kind in "iu" else
        quantize_bias(bias, a.x_scale, ws if ws.size > 1 else ws[0], target=ar.bias_rule).astype(np.int32))
    b_scale = (np.float32(a.x_scale) * ws).astype(np.float32)
    act = _fused(a.clamp, a.y_scale, a.y_zp, n)
    zeros = np.zeros(ws.size, np.int64)
    x_t = w.tensor[src]
    if n.op == "qlinear":
        wt = weight
        if w.layout.get(src) == "flat_hwc":
            _, c, h, ww = w.layout[src + "/from"]
            wt = weight.reshape(c_out, c, h, ww).transpose(0, 2, 3, 1).reshape(c_out, -1)
        wi = w.const(f"{n.name}/weight", wt, "int8", ws, zeros, 0)
        bi = w.const(f"{n.name}/bias", bias_q, "int32", b_scale, np.zeros(b_scale.size, np.int64), 0)
        t = w.act(n.name, out_shape, a.y_scale, a.y_zp)
        m.ops.append(TfOp("FULLY_CONNECTED", [x_t, wi, bi], [t], FullyConnectedOptions(act)))
        return t
    c_in = _shape(w, src)[1]
    ih, iw = _shape(w, src)[2:]
    kh, kw = weight.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = a.stride, a.padding, a.dilation
    if (ph, pw) == (0, 0):
        padding = "VALID"
    elif _same_padding(ih, kh, sh, dh, ph) and _same_padding(iw, kw, sw, dw, pw):
        padding = "SAME"
    else:
        padding = "VALID"
        xs, xz = a.x_scale, a.x_zp
        padded = w.act(f"{n.name}/pad", (1, ih + 2 * ph, iw + 2 * pw, c_in), xs, xz)
        pads = w.const(f"{n.name}/paddings", np.array([[0, 0], [ph, ph], [pw, pw], [0, 0]], np.int32), "int32")
        m.ops.append(TfOp("PAD", [x_t, pads], [padded]))
        x_t = padded
    t = w.act(n.name, _nhwc(out_shape), a.y_scale, a.y_zp)
    bi = w.const(f"{n.name}/bias", bias_q, "int32", b_scale, np.zeros(b_scale.size, np.int64), 0)
    if a.groups == 1:
        wi = w.const(f"{n.name}/weight", weight.transpose(0, 2, 3, 1), "int8", ws, zeros, 0)
        m.ops.append(TfOp("CONV_2D", [x_t, wi, bi], [t], ConvOptions(padding, (sh, sw), (dh, dw), act)))
    elif a.groups == c_in and weight.shape[1] == 1:
        wd = weight.reshape(c_out, kh, kw).transpose(1, 2, 0)[None]
        wi = w.const(f"{n.name}/weight", wd, "int8", ws, zeros, 3)
        m.ops.append(TfOp("DEPTHWISE_CONV_2D", [x_t, wi, bi], [t],
                          DepthwiseOptions(padding, (sh, sw), (dh, dw), c_out // c_in, act)))
    else:
        raise ValueError(f"node {n.name!r}: grouped convolutions other than depthwise (groups {a.groups}) have no "
                         "LiteRT builtin")
    return t


def to_tflite(model, path) -> Path:
    """Write ``model`` (a QuantizedModel for a LiteRT target) to the .tflite file ``path``, all or nothing;
    returns the path (module docstring)."""
    data = tflite_bytes(model)
    path = Path(path)
    with atomic_write(path) as f:
        f.write(data)
    return path
