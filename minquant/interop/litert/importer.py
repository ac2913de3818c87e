"""``from_tflite``: an int8 ``.tflite`` model (written by minquant or by anything else) → a minquant
:class:`~minquant.quantized.QuantizedModel` that computes the codes of one LiteRT kernel path
(``target="litert"`` — the XNNPACK delegate —, ``"litert-builtin"`` or ``"litert-ref"``; docs/quantization.md,
step 7d).

The graph is rebuilt in minquant's layout: NCHW, uint8 codes = int8 codes + 128 (zero points + 128: the same
affine map). So the imported model takes the float input in **NCHW** (``x.transpose(0, 3, 1, 2)`` of the
file's NHWC input) and returns float32 outputs. An int8 model input gets a ``quantize`` node with its qparams
(feed it the real values ``s·(q − z)``); an int8 output gets a ``dequantize``.

Operators read: QUANTIZE (float → int8) and DEQUANTIZE (int8 → float) at the edges, CONV_2D,
DEPTHWISE_CONV_2D, FULLY_CONNECTED (int8 weights with zero point 0, per channel or per tensor, int32 bias
added as given), ADD and MUL (same shapes, or broadcasting as NumPy does — squeeze-excite's (1, 1, 1, C)),
HARD_SWISH (``qhardswish``), MEAN over H and W (axes {1, 2} of a 4-D map, either ``keep_dims``: ``qmean``),
AVERAGE_POOL_2D and MAX_POOL_2D with VALID windows (or SAME ones that pad nothing), RESHAPE to (N, features),
and PAD of H and W (int8: the zero point pads). A PAD that a lone VALID convolution follows, padding both
sides alike, is folded into the convolution; any other becomes a ``qpad`` node. SAME padding that pads
unevenly (stride 2 on an even size: one row more at the bottom and right, as the TF converter's models do)
becomes a ``qpad`` before a VALID convolution — a padded code is the zero point, whose product with a weight
is 0, as a skipped tap is. Fused activations NONE, RELU, RELU6. Anything else — SAME pools that pad, uint8 or
int16 activations, constant operands of ADD/MUL — raises ``ValueError`` naming the operator.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .exporter import activation_range
from .flatbuffer import read_model

__all__ = ["from_tflite"]


def _same_pad(size, k, s, d):
    """(top, bottom) padding of LiteRT's SAME on one axis."""
    eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


class _Importer:
    def __init__(self, tm, target):
        self.tm, self.target = tm, target
        self.nodes, self.value = [], {}      # tensor index → graph value name
        self.names = set()
        self.flat_from = {}                  # value → (C, H, W) it was flattened from (NHWC order)
        self.pads = {}                       # PAD output tensor → (input tensor, (ph, pw))

    def name(self, t):
        base = re.sub(r"[^A-Za-z0-9_.:/-]", "_", self.tm.tensors[t].name or f"t{t}") or f"t{t}"
        n, i = base, 1
        while n in self.names:
            n, i = f"{base}_{i}", i + 1
        self.names.add(n)
        return n

    def tensor(self, t):
        return self.tm.tensors[t]

    def qp(self, t, op):
        ten = self.tensor(t)
        if ten.dtype != "int8":
            raise ValueError(f"{op}: tensor {ten.name!r} is {ten.dtype}; minquant reads int8 activations")
        if not ten.quantized or len(ten.scale) != 1:
            raise ValueError(f"{op}: activation {ten.name!r} needs one scale and zero point")
        return float(ten.scale[0]), int(ten.zero_point[0]) + 128

    def add(self, node, t):
        from ...graph import Node  # noqa: F401 (type)
        self.nodes.append(node)
        self.value[t] = node.name


def _shape_nchw(shape):
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else tuple(shape)


def from_tflite(source, target="litert"):
    """A :class:`~minquant.quantized.QuantizedModel` from a .tflite file path or its bytes (module
    docstring), computing the codes of ``target`` (a LiteRT framework name or Target)."""
    from ...graph import FlattenAttrs, Graph, MaxPool2dAttrs, Node
    from ...quantized import ops as Q
    from ...quantized.model import QuantizedModel
    from ...target import as_target
    tgt = as_target(target)
    if tgt.ops().litert is None:
        raise ValueError(f"from_tflite computes a LiteRT kernel path; target {tgt} is not one "
                         "('litert', 'litert-builtin' or 'litert-ref')")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = bytes(source), "model"
    elif isinstance(source, (str, Path)):
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise ValueError(f"cannot read {source}: {e}") from e
        label = Path(source).stem
    else:
        raise TypeError(f"from_tflite takes a path or the bytes of a .tflite file, got {type(source).__name__}")
    tm = read_model(data)
    im = _Importer(tm, tgt)
    if len(tm.inputs) != 1:
        raise ValueError(f"from_tflite reads one-input models; this one has {len(tm.inputs)}")
    t_in = tm.inputs[0]
    inp = tm.tensors[t_in]
    in_name = im.name(t_in)
    input_shape = (1,) + tuple(_shape_nchw(inp.shape))[1:]
    im.value[t_in] = in_name
    if inp.dtype == "int8":         # codes in: the model takes real values and quantizes them itself
        s, z = im.qp(t_in, "input")
        node = Node(in_name + ":quantize", "quantize", [in_name], Q.QuantizeAttrs(s, z), source="int8 input")
        im.names.add(node.name)
        im.add(node, t_in)
    elif inp.dtype != "float32":
        raise ValueError(f"the model's input is {inp.dtype}; minquant reads float32 or int8 inputs")
    uses = {}
    for op in tm.ops:
        for t in op.inputs:
            uses.setdefault(t, []).append(op)
    for k, op in enumerate(tm.ops):
        where = f"operator {k} ({op.kind})"
        try:
            _import_op(im, op, uses, Q, Node, FlattenAttrs, MaxPool2dAttrs)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
    outputs = []
    for t in tm.outputs:
        if t not in im.value:
            raise ValueError(f"output tensor {tm.tensors[t].name!r} is not computed by a supported operator")
        v = im.value[t]
        if tm.tensors[t].dtype == "int8":      # codes out: minquant returns real values
            s, z = im.qp(t, "output")
            node = Node(v + ":dequantize", "dequantize", [v], Q.QuantizeAttrs(s, z), source="int8 output")
            im.nodes.append(node)
            v = node.name
        outputs.append(v)
    graph = Graph([in_name], im.nodes, outputs, {in_name: input_shape}, label)
    return QuantizedModel(graph, tgt, meta={"method": "from_tflite", "description": tm.description})


def _import_op(im, op, uses, Q, Node, FlattenAttrs, MaxPool2dAttrs):
    k = op.kind
    t_out = op.outputs[0]
    out = im.tensor(t_out)
    if k == "PAD":
        pads = im.tensor(op.inputs[1]).data
        if pads is None or len(op.inputs) != 2:
            raise ValueError("PAD with computed paddings (or a constant value: PADV2) is not supported")
        pads = np.asarray(pads).reshape(-1, 2)
        if pads.shape[0] != 4 or pads[0].any() or pads[3].any() or (pads < 0).any():
            raise ValueError(f"PAD {pads.tolist()}: only H and W of an NHWC map are padded by minquant")
        if im.qp(t_out, k) != im.qp(op.inputs[0], k):
            raise ValueError("PAD whose output qparams differ from its input's is not supported")
        consumers = uses.get(t_out, [])
        if (pads[1, 0] == pads[1, 1] and pads[2, 0] == pads[2, 1] and len(consumers) == 1 and t_out not in
                im.tm.outputs and consumers[0].kind in ("CONV_2D", "DEPTHWISE_CONV_2D")
                and consumers[0].options.padding == "VALID"):
            im.pads[t_out] = (op.inputs[0], (int(pads[1, 0]), int(pads[2, 0])))   # folded into the convolution
            return
        if op.inputs[0] not in im.value:
            raise ValueError(f"reads tensor {im.tensor(op.inputs[0]).name!r}, which no supported operator computes")
        s, z = im.qp(op.inputs[0], k)
        pt, pb, pl, pr = (int(v) for v in (pads[1, 0], pads[1, 1], pads[2, 0], pads[2, 1]))
        im.add(Node(im.name(t_out), "qpad", [im.value[op.inputs[0]]], Q.QPadAttrs((pt, pb, pl, pr), z), source=k),
               t_out)
        return
    src_t = op.inputs[0]
    pad = (0, 0)
    if src_t in im.pads:
        src_t, pad = im.pads[src_t]
    if src_t not in im.value:
        raise ValueError(f"reads tensor {im.tensor(src_t).name!r}, which no supported operator computes")
    src = im.value[src_t]
    name = im.name(t_out)
    if k == "QUANTIZE":
        if im.tensor(src_t).dtype != "float32":
            raise ValueError("only float → int8 QUANTIZE (at the model's input) is supported")
        s, z = im.qp(t_out, k)
        im.add(Node(name, "quantize", [src], Q.QuantizeAttrs(s, z), source=k), t_out)
    elif k == "DEQUANTIZE":
        s, z = im.qp(src_t, k)
        im.add(Node(name, "dequantize", [src], Q.QuantizeAttrs(s, z), source=k), t_out)
    elif k in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        im.add(_layer(im, op, name, src, src_t, pad, Q, Node, FlattenAttrs), t_out)
    elif k in ("ADD", "MUL"):
        a_t, b_t = op.inputs
        sa, sb = im.tensor(a_t).shape, im.tensor(b_t).shape
        try:
            joint = np.broadcast_shapes(sa, sb)
        except ValueError:
            joint = None
        if len(sa) != len(sb) or joint is None or joint != tuple(out.shape):
            raise ValueError(f"{k} of shapes {sa} and {sb} (output {out.shape}): only operands of one rank that "
                             "broadcast to the output are supported")
        if a_t not in im.value or b_t not in im.value:
            raise ValueError(f"{k} of a constant tensor is not supported")
        (sa, za), (sb, zb), (sy, zy) = im.qp(a_t, k), im.qp(b_t, k), im.qp(t_out, k)
        act = op.options.activation
        if act not in ("", "relu"):
            raise ValueError(f"{k} with fused {act.upper()} is not supported")
        attrs = (Q.QAddAttrs if k == "ADD" else Q.QMulAttrs)(sa, za, sb, zb, sy, zy, relu=act == "relu")
        im.add(Node(name, "q" + k.lower(), [im.value[a_t], im.value[b_t]], attrs, source=k), t_out)
    elif k == "HARD_SWISH":
        (xs, xz), (ys, yz) = im.qp(src_t, k), im.qp(t_out, k)
        im.add(Node(name, "qhardswish", [src], Q.QActivationAttrs(xs, xz, ys, yz), source=k), t_out)
    elif k == "MEAN":
        axes = im.tensor(op.inputs[1]).data
        shape = im.tensor(src_t).shape
        if axes is None or len(shape) != 4:
            raise ValueError("MEAN is read over constant axes of a 4-D map")
        if sorted(int(a) % 4 for a in np.asarray(axes).reshape(-1)) != [1, 2]:
            raise ValueError(f"MEAN over axes {np.asarray(axes).tolist()}: minquant reads the mean over H and W "
                             "(axes 1 and 2)")
        (xs, xz), (ys, yz) = im.qp(src_t, k), im.qp(t_out, k)
        keep = bool(op.options.keep_dims) if op.options is not None else False
        im.add(Node(name, "qmean", [src], Q.QMeanAttrs(xs, xz, ys, yz, keep), source=k), t_out)
    elif k in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        o = op.options
        ih, iw = im.tensor(src_t).shape[1:3]
        if o.activation:
            raise ValueError(f"{k} with a fused activation is not supported")
        if o.padding == "SAME" and (any(_same_pad(ih, o.filter[0], o.stride[0], 1)) or
                                    any(_same_pad(iw, o.filter[1], o.stride[1], 1))):
            raise ValueError(f"{k} with SAME padding that pads is not supported")
        if im.qp(t_out, k) != im.qp(src_t, k):
            raise ValueError(f"{k} with output qparams other than the input's is not supported")
        s, z = im.qp(src_t, k)
        if k == "MAX_POOL_2D":
            attrs = MaxPool2dAttrs(tuple(o.filter), tuple(o.stride))
            im.add(Node(name, "qmax_pool2d", [src], attrs, source=k), t_out)
        else:
            attrs = Q.QAvgPool2dAttrs(tuple(o.filter), tuple(o.stride), (0, 0), False, True, None, s, z)
            im.add(Node(name, "qavg_pool2d", [src], attrs, source=k), t_out)
    elif k == "RESHAPE":
        in_shape = im.tensor(src_t).shape
        if len(out.shape) != 2 or out.shape[0] != in_shape[0]:
            raise ValueError(f"RESHAPE {in_shape} → {out.shape}: only (N, ...) → (N, features) is supported")
        if im.qp(t_out, k) != im.qp(src_t, k):
            raise ValueError("RESHAPE that changes qparams is not supported")
        im.add(Node(name, "qflatten", [src], FlattenAttrs(1, -1), source=k), t_out)
        if len(in_shape) == 4 and in_shape[1] * in_shape[2] > 1:
            if any(c.kind != "FULLY_CONNECTED" for c in uses.get(t_out, [])) or t_out in im.tm.outputs:
                raise ValueError("a RESHAPE of an (H, W, C) map is read only before FULLY_CONNECTED")
            im.flat_from[name] = (in_shape[3], in_shape[1], in_shape[2])
    else:
        raise ValueError(f"operator {k} is not imported by minquant (supported: QUANTIZE, DEQUANTIZE, CONV_2D, "
                         "DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, MUL, HARD_SWISH, MEAN, AVERAGE_POOL_2D, "
                         "MAX_POOL_2D, RESHAPE, PAD)")


def _layer(im, op, name, src, src_t, pad, Q, Node, FlattenAttrs):
    k = op.kind
    x_t, w_t = op.inputs[0], op.inputs[1]
    b_t = op.inputs[2] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    wt = im.tensor(w_t)
    if wt.data is None or wt.dtype != "int8" or not wt.quantized:
        raise ValueError(f"weights {wt.name!r} must be constant int8 with quantization parameters")
    if np.any(wt.zero_point != 0):
        raise ValueError(f"weights {wt.name!r} have nonzero zero points; LiteRT's int8 weights are symmetric")
    (xs, xz), (ys, yz) = im.qp(src_t, k), im.qp(op.outputs[0], k)
    o = op.options
    clamp = activation_range(o.activation, ys, yz)
    w = np.asarray(wt.data)
    c_out = w.shape[3] if k == "DEPTHWISE_CONV_2D" else w.shape[0]
    scales = np.asarray(wt.scale, np.float32)
    per_channel = scales.size > 1
    if per_channel and scales.size != c_out:
        raise ValueError(f"weights {wt.name!r}: {scales.size} scales for {c_out} output channels")
    params = {"w_scale": scales, "w_zp": np.zeros(scales.size, np.int8)}
    if b_t is not None:
        bt = im.tensor(b_t)
        if bt.data is None or bt.dtype != "int32":
            raise ValueError(f"bias {bt.name!r} must be constant int32")
        params["bias"] = np.asarray(bt.data, np.int32).reshape(-1)
    if k == "FULLY_CONNECTED":
        if o.keep_num_dims:
            raise ValueError("FULLY_CONNECTED with keep_num_dims is not supported")
        in_shape = im.tensor(src_t).shape
        if len(in_shape) == 4:      # FULLY_CONNECTED flattens its input itself (NHWC order)
            flat = src + ":flatten"
            im.names.add(flat)
            im.nodes.append(Node(flat, "qflatten", [src], FlattenAttrs(1, -1), source="FULLY_CONNECTED input"))
            if in_shape[1] * in_shape[2] > 1:
                im.flat_from[flat] = (in_shape[3], in_shape[1], in_shape[2])
            src = flat
        if src in im.flat_from:     # columns in (h, w, c) order → minquant's (c, h, w)
            c, h, ww = im.flat_from[src]
            w = w.reshape(c_out, h, ww, c).transpose(0, 3, 1, 2).reshape(c_out, -1)
        params["weight"] = np.ascontiguousarray(w, np.int8)
        attrs = Q.QLinearAttrs(xs, xz, ys, yz, clamp, o.activation, per_channel)
        return Node(name, "qlinear", [src], attrs, params, source=k)
    xshape = im.tensor(src_t).shape
    c_in = xshape[3]
    if k == "CONV_2D":
        params["weight"] = np.ascontiguousarray(w.transpose(0, 3, 1, 2), np.int8)
        groups = c_in // w.shape[3]
        if groups != 1:
            raise ValueError("grouped CONV_2D is not supported")
    else:
        kh, kw = w.shape[1:3]
        params["weight"] = np.ascontiguousarray(w[0].transpose(2, 0, 1).reshape(c_out, 1, kh, kw), np.int8)
        groups = c_in
        if c_out % c_in:
            raise ValueError(f"DEPTHWISE_CONV_2D: {c_out} outputs for {c_in} inputs")
    kh, kw = params["weight"].shape[2:]
    if o.padding == "SAME":
        if pad != (0, 0):
            raise ValueError("PAD before a SAME convolution is not supported")
        (pt, pb), (pl, pr) = (_same_pad(xshape[1], kh, o.stride[0], o.dilation[0]),
                              _same_pad(xshape[2], kw, o.stride[1], o.dilation[1]))
        if pt != pb or pl != pr:     # uneven: pad the codes with the zero point, then a VALID convolution
            padded = name + ":same_pad"
            im.names.add(padded)
            im.nodes.append(Node(padded, "qpad", [src], Q.QPadAttrs((pt, pb, pl, pr), xz),
                                 source=f"{k} SAME padding"))
            src, pt, pl = padded, 0, 0
        pad = (pt, pl)
    attrs = Q.QConv2dAttrs(tuple(o.stride), tuple(pad), tuple(o.dilation), groups, xs, xz, ys, yz, clamp,
                           o.activation, per_channel)
    return Node(name, "qconv2d", [src], attrs, params, source=k)
