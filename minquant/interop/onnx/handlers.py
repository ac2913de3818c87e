"""One handler per ONNX op: ``handler(builder, node)`` emits the minquant node(s) for that ONNX node
(the table of ops is in :mod:`minquant.interop.onnx.importer`'s docstring). :data:`FLOAT_HANDLERS` serve
float models and the float ops inside quantized ones; :data:`QUANTIZED_HANDLERS` take the QOperator-level
nodes left by :mod:`minquant.interop.onnx.fuse`. :func:`_check_supported` names every op a file uses that
has no handler.
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import numpy as np

from ...graph import (AdaptiveAvgPool2dAttrs, AvgPool2dAttrs, BatchNormAttrs, CatAttrs, ClipAttrs, Conv2dAttrs,
                      FlattenAttrs, MaxPool2dAttrs, Node, ReshapeAttrs)
from ...im2col import conv_out_size
from ...float_ops import pool_out_size
from .build import Builder, _act_qparams, _weight_qparams, bias_param
from .fuse import _clip_bounds
from .proto import ONode, _fail, _ints2, _pads2d

__all__ = ["FLOAT_HANDLERS", "QUANTIZED_HANDLERS", "HANDLERS", "FLOAT_OPS", "QUANTIZED_OPS"]

_F32 = np.float32


# ----------------------------------------------------------------------------------------------------------
# Float handlers
# ----------------------------------------------------------------------------------------------------------

def _conv_geometry(b: Builder, n: ONode, x_shape, w_shape):
    if len(x_shape) != 4 or len(w_shape) != 4:
        _fail(n, f"only 2-D convolution (NCHW input, OIHW weight) is supported, got input {x_shape}, weight "
                 f"{w_shape}")
    kernel = tuple(w_shape[2:])
    if "kernel_shape" in n.attrs and tuple(n.attrs["kernel_shape"]) != kernel:
        _fail(n, f"kernel_shape {n.attrs['kernel_shape']} does not match the weight {w_shape}")
    strides = _ints2(n, "strides", [1, 1])
    dil = _ints2(n, "dilations", [1, 1])
    pads = _pads2d(n, x_shape[2:], kernel, strides, dil)
    g = int(n.attrs.get("group", 1))
    if x_shape[1] != w_shape[1] * g or w_shape[0] % g:
        _fail(n, f"input channels {x_shape[1]} do not match weight {w_shape} with group={g}")
    oh = conv_out_size(x_shape[2], kernel[0], strides[0], pads[0], dil[0])
    ow = conv_out_size(x_shape[3], kernel[1], strides[1], pads[1], dil[1])
    return Conv2dAttrs(strides, pads, dil, g), (x_shape[0], w_shape[0], oh, ow)


def _conv(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    w = b.const(n, 1, "Conv weight", ndim=4)
    bias = b.const(n, 2, "Conv bias", ndim=1, optional=True)
    attrs, shape = _conv_geometry(b, n, b.shape[x], w.shape)
    b.emit(n, "conv2d", [x], attrs, {"weight": w.copy(), "bias": None if bias is None else bias.copy()},
           shape=shape)


def _gemm_weights(b: Builder, n: ONode, k_in):
    """(weight (N, K) float32, bias (N,) or None) of a float Gemm with a constant B."""
    if int(n.attrs.get("transA", 0)):
        _fail(n, "transA=1 is not supported")
    w = b.const(n, 1, "Gemm B (weight)", ndim=2)
    w = w.T if not int(n.attrs.get("transB", 0)) else w
    if w.shape[1] != k_in:
        _fail(n, f"weight {w.shape} does not match {k_in} input features")
    alpha, beta = float(n.attrs.get("alpha", 1.0)), float(n.attrs.get("beta", 1.0))
    w = (w * _F32(alpha)).astype(np.float32) if alpha != 1.0 else w.astype(np.float32)
    c = b.const(n, 2, "Gemm C (bias)", optional=True)
    if c is not None:
        if c.size not in (1, w.shape[0]) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
            _fail(n, f"bias C of shape {c.shape} is not one value per output feature")
        c = np.broadcast_to(c.reshape(-1), (w.shape[0],)).astype(np.float32)
        c = (c * _F32(beta)).astype(np.float32) if beta != 1.0 else c.copy()
    return np.ascontiguousarray(w), c


def _gemm(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    xs = b.shape[x]
    if len(xs) != 2:
        _fail(n, f"Gemm input must be 2-D (batch, features), got {xs}")
    w, c = _gemm_weights(b, n, xs[1])
    b.emit(n, "linear", [x], None, {"weight": w, "bias": c}, shape=(xs[0], w.shape[0]))


def _matmul(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    name1 = n.inputs[1]
    if name1 not in b.consts:
        _fail(n, "MatMul of two activations is not supported (the second operand must be a constant weight)")
    w = b.const(n, 1, "MatMul weight", ndim=2)
    xs = b.shape[x]
    if len(xs) < 2 or xs[-1] != w.shape[0]:
        _fail(n, f"input {xs} does not match weight {w.shape}")
    b.emit(n, "linear", [x], None, {"weight": np.ascontiguousarray(w.T)}, shape=xs[:-1] + (w.shape[1],))


def _batch_norm(b: Builder, n: ONode):
    if int(n.attrs.get("training_mode", 0)) or len([o for o in n.outputs if o]) > 1:
        _fail(n, "training-mode BatchNormalization (batch statistics) is not supported")
    x = b.act(n, 0, codes=False)
    c = b.shape[x][1]
    p = {k: b.const(n, i, f"BatchNormalization {k}", ndim=1) for i, k in
         enumerate(("weight", "bias", "running_mean", "running_var"), start=1)}
    if any(v.shape != (c,) for v in p.values()):
        _fail(n, f"parameters must have one value per channel ({c})")
    b.emit(n, "batch_norm", [x], BatchNormAttrs(float(n.attrs.get("epsilon", 1e-5))),
           {k: v.copy() for k, v in p.items()}, shape=b.shape[x])


def _unary(op):
    def handler(b: Builder, n: ONode):
        x = b.act(n, 0, codes=False)
        b.emit(n, op, [x], shape=b.shape[x])
    return handler


def _relu(b: Builder, n: ONode):
    """Relu → ``relu``; right after a ``dynamic_linear`` / ``dynamic_conv2d`` (its only reader) → that node's
    fused ReLU (applied last, in float: the same numbers)."""
    x = b.act(n, 0, codes=False)
    prod = b.sole_producer(n, 0)
    if prod is not None and prod.op in ("dynamic_linear", "dynamic_conv2d") and not prod.attrs.relu:
        b.absorb(n, prod, dataclasses.replace(prod.attrs, relu=True), dict(prod.params))
        return
    b.emit(n, "relu", [x], shape=b.shape[x])


def _emit_clip(b: Builder, n: ONode, x, lo, hi, **kw):
    if lo == 0.0 and hi == 6.0:
        return b.emit(n, "relu6", [x], shape=b.shape[x], **kw)
    if lo == 0.0 and hi == math.inf:
        return b.emit(n, "relu", [x], shape=b.shape[x], **kw)
    if lo == -math.inf and hi == math.inf:
        b.alias(n, x)
        return x
    return b.emit(n, "clip", [x], ClipAttrs(lo, hi), shape=b.shape[x], **kw)


def _clip(b: Builder, n: ONode):
    x = b.act(n, 0)
    bounds = _clip_bounds(b.consts, n)
    if bounds is None:
        _fail(n, "Clip bounds must be constant scalars")
    lo, hi = bounds
    if lo > hi:
        _fail(n, f"Clip min {lo} > max {hi}")
    if x in b.qp:                                     # on uint8 codes (QOperator, or fuse_code_clamps)
        _code_clamp(b, n, 0, _code_bound(n, lo, 0), _code_bound(n, hi, 255), None)
        return
    _emit_clip(b, n, x, lo, hi)


def _code_bound(n: ONode, t: float, absent: int) -> int:
    if math.isinf(t):
        return absent
    if t != int(t) or not 0 <= t <= 255:
        _fail(n, f"a bound on uint8 codes must be an integer code in [0, 255], got {t}")
    return int(t)


def _channel_values(const, x_shape):
    """``const`` as one value per channel (dim 1) of an activation of shape x_shape (its dtype kept), or
    None if it does not broadcast that way (a scalar counts: it is repeated)."""
    c = np.asarray(const)
    ch = x_shape[1]
    if c.size == 1 and c.ndim <= len(x_shape):
        return np.full(ch, c.reshape(()), c.dtype)
    if c.ndim > len(x_shape):
        return None
    full = (1,) * (len(x_shape) - c.ndim) + c.shape
    if full[1] == ch and all(d == 1 for i, d in enumerate(full) if i != 1):
        return c.reshape(-1).copy()
    return None


def _channel_vector(const, x_shape):
    """:func:`_channel_values` as float32."""
    v = _channel_values(const, x_shape)
    return None if v is None else v.astype(np.float32)


def _compose_clamp(lo, hi, top, lo2, hi2, top2):
    """A clamp on codes ``(lo, hi, top)`` — ``min(clip(q, lo, hi), top[c])``, ``top`` None or ≥ lo — followed by
    a Clip to [lo2, hi2] (``top2`` None) or a per-channel Min ``top2`` ((lo2, hi2) = (0, 255)), as one clamp
    of the same form, or None when there is none:

    * Clip: clip(min(clip(q, lo, hi), top), lo2, hi2) = min(clip(q, L, H), max(top, L)) with L = max(lo, lo2),
      H = min(hi, hi2) — when L ≤ H (else the result is a constant, which no clamp of this form gives).
      (Because top ≥ lo, min(clip(q, lo, hi), top) = clip(min(q, top), lo, hi), and clips compose.)
    * Min: min(min(clip(q, lo, hi), top), top2) = min(clip(q, lo, hi), min(top, top2)) — a valid form when
      min(top, top2) ≥ lo in every channel (the output stage requires a top at or above the clamp's floor).

    A top that is ≥ H in every channel does nothing and is dropped."""
    if top2 is None:
        L, H = max(lo, lo2), min(hi, hi2)
        if L > H:
            return None
        t = None if top is None else np.maximum(top, L)
    else:
        L, H = lo, hi
        t = top2 if top is None else np.minimum(top, top2)
        if np.any(t < L):
            return None
    if t is not None and np.all(t >= H):
        t = None
    return L, H, t


def _code_clamp(b: Builder, n: ONode, i: int, lo: int, hi: int, top):
    """Codes (input ``i`` of ``n``) clamped to [lo, hi] (a Clip: ``top`` None) or to ``top[c]``, one code per
    channel (a Min: (lo, hi) = (0, 255)). Merged into the producer when ``n`` is its only reader — a
    ``qconv2d`` / ``qlinear`` output stage (``clamp``, ``clamp_hi``), a ``qclamp`` (``lo``, ``hi``,
    ``hi_channels``), a ``qadd`` whose clip is its fused ReLU (``[z_y, 255]``) — when the two clamps compose
    into one (:func:`_compose_clamp`); else a ``qclamp`` node."""
    from ...quantized import ops
    x = b.act(n, i, codes=True)
    top = None if top is None else np.asarray(top, np.int64)
    prod = b.sole_producer(n, i)
    if prod is not None and prod.op in ("qconv2d", "qlinear", "qclamp"):
        layer = prod.op != "qclamp"
        a = prod.attrs
        plo, phi = a.clamp if layer else (a.lo, a.hi)
        ptop = prod.params.get("clamp_hi" if layer else "hi_channels")
        merged = _compose_clamp(plo, phi, None if ptop is None else np.asarray(ptop, np.int64), lo, hi, top)
        if merged is not None:
            L, H, t = merged
            attrs = dataclasses.replace(a, clamp=(L, H)) if layer else ops.QClampAttrs(L, H, a.activation)
            params = dict(prod.params)
            params["clamp_hi" if layer else "hi_channels"] = None if t is None else t.astype(np.uint8)
            b.absorb(n, prod, attrs, params)
            return
    if prod is not None and prod.op == "qadd" and top is None and (lo, hi) == (prod.attrs.y_zp, 255) \
            and not prod.attrs.relu:
        b.absorb(n, prod, dataclasses.replace(prod.attrs, relu=True), dict(prod.params))
        return
    if top is not None and np.all(top >= hi):
        top = None
    b.emit(n, "qclamp", [x], ops.QClampAttrs(lo, hi), {"hi_channels": None if top is None else top.astype(np.uint8)},
           shape=b.shape[x], qp=b.qp[x])


def _min_max(b: Builder, n: ONode):
    """Min / Max of an activation and a constant. On uint8 codes (QOperator, or :func:`fuse_code_clamps`):
    a clamp (:func:`_code_clamp`) — Min by a scalar or one code per channel, Max by a scalar. On floats:
    Min / Max by a scalar → ``clip``; Min by one value per channel right after a Relu → ``relu_clip``
    (what the exporter writes for it)."""
    ins = [v for v in n.inputs if v]
    acts = [k for k, v in enumerate(n.inputs) if v and not (v in b.consts and v not in b.val)]
    if len(ins) != 2 or len(acts) != 1:
        _fail(n, "only the Min / Max of one activation and one constant is supported")
    i = acts[0]
    x = b.act(n, i)
    const = np.asarray(b.consts[next(v for k, v in enumerate(n.inputs) if v and k != i)])
    xs = b.shape[x]
    vec = _channel_values(const, xs) if len(xs) >= 2 else (const.reshape(-1) if const.size == 1 else None)
    if vec is None:
        _fail(n, f"constant of shape {const.shape} is neither a scalar nor one value per channel of {xs}")
    scalar = const.size == 1
    if x in b.qp:
        if const.dtype != np.uint8:
            _fail(n, f"the constant bound on uint8 codes must be uint8, got {const.dtype.name}")
        if n.op == "Max":
            if not scalar:
                _fail(n, "a per-channel Max on codes (a per-channel floor) is not supported")
            _code_clamp(b, n, i, int(vec[0]), 255, None)
        elif scalar:
            _code_clamp(b, n, i, 0, int(vec[0]), None)
        else:
            _code_clamp(b, n, i, 0, 255, vec)
        return
    if const.dtype != np.float32:
        _fail(n, f"constant operand must be float32, got {const.dtype.name}")
    if scalar:
        t = float(vec[0])
        _emit_clip(b, n, x, t if n.op == "Max" else -math.inf, math.inf if n.op == "Max" else t)
        return
    prod = b.sole_producer(n, i)
    if n.op == "Min" and prod is not None and prod.op == "relu":
        b.absorb(n, prod, None, {"hi": vec.astype(np.float32)}, op="relu_clip")
        return
    _fail(n, "a per-channel float Min is supported only right after a Relu (minquant's relu_clip), and a "
             "per-channel Max not at all")


def _affine(b: Builder, n: ONode, x, scale, shift, **kw):
    """x·scale + shift per channel, as a batch_norm with mean 0, var 1, eps 0 (1/√1 = 1 exactly, so the
    node computes exactly ``x·scale + shift`` in float32)."""
    c = b.shape[x][1]
    return b.emit(n, "batch_norm", [x], BatchNormAttrs(0.0),
                  {"running_mean": np.zeros(c, np.float32), "running_var": np.ones(c, np.float32),
                   "weight": scale.astype(np.float32), "bias": shift.astype(np.float32)}, shape=b.shape[x], **kw)


def _is_scale_only(node: Node) -> bool:
    """A ``batch_norm`` that computes exactly ``x·weight`` (mean 0, var 1, eps 0, bias 0: an imported Mul)."""
    p = node.params
    return node.op == "batch_norm" and node.attrs.eps == 0.0 and not np.any(p["running_mean"]) \
        and np.all(p["running_var"] == 1) and not np.any(p.get("bias", 0))


def _binary(op):
    def handler(b: Builder, n: ONode):
        a_name, c_name = n.inputs[0], n.inputs[1]
        a_const, c_const = a_name in b.consts and a_name not in b.val, c_name in b.consts and c_name not in b.val
        if a_const and c_const:
            _fail(n, "both operands are constants")
        if not a_const and not c_const:
            x, y = b.act(n, 0, codes=False), b.act(n, 1, codes=False)
            try:
                shape = np.broadcast_shapes(b.shape[x], b.shape[y])
            except ValueError:
                _fail(n, f"shapes {b.shape[x]} and {b.shape[y]} do not broadcast")
            b.emit(n, op, [x, y], shape=shape)
            return
        x = b.act(n, 1 if a_const else 0, codes=False)
        const = np.asarray(b.consts[a_name if a_const else c_name])
        if const.dtype != np.float32:
            _fail(n, f"constant operand must be float32, got {const.dtype.name}")
        xs = b.shape[x]
        prod = b.nodes[-1] if b.nodes and b.nodes[-1].name == x else None
        flat = const.reshape(-1)
        if op == "add" and prod is not None and prod.op == "linear" and "bias" not in prod.params \
                and b.readers[n.inputs[1 if a_const else 0]] == 1 and flat.size == xs[-1] \
                and const.ndim <= len(xs) and all(d == 1 for d in const.shape[:-1]):
            prod.params["bias"] = flat.astype(np.float32).copy()      # MatMul + Add → linear with bias
            b.alias(n, x)
            return
        vec = _channel_vector(const, xs) if len(xs) >= 2 else None
        if vec is None:
            _fail(n, f"constant of shape {const.shape} is neither a scalar nor one value per channel of {xs}")
        prod = b.sole_producer(n, 1 if a_const else 0)
        if op == "add" and prod is not None and _is_scale_only(prod):
            # Mul(x, α) → Add(·, β) — how the exporter writes a batch_norm left in float — is one affine node:
            # f32(f32(x·α) + β) either way
            b.absorb(n, prod, prod.attrs, dict(prod.params, bias=vec))
            return
        if op == "add":
            _affine(b, n, x, np.ones_like(vec), vec)
        else:
            _affine(b, n, x, vec, np.zeros_like(vec))
    return handler


def _pool_geometry(b: Builder, n: ONode, x_shape, *, dilations=False):
    if len(x_shape) != 4:
        _fail(n, f"only 2-D pooling on NCHW input is supported, got {x_shape}")
    k = _ints2(n, "kernel_shape", [])
    s = _ints2(n, "strides", [1, 1])
    d = _ints2(n, "dilations", [1, 1]) if dilations else (1, 1)
    if not dilations and "dilations" in n.attrs and tuple(n.attrs["dilations"]) != (1, 1):
        _fail(n, "dilated average pooling is not supported")
    p = _pads2d(n, x_shape[2:], k, s, d)
    ceil = bool(n.attrs.get("ceil_mode", 0))
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        _fail(n, f"padding {p} larger than half the kernel {k} is not supported")
    out = tuple(pool_out_size(x_shape[2 + i], k[i], s[i], p[i], d[i], ceil) for i in range(2))
    return k, s, p, d, ceil, (x_shape[0], x_shape[1]) + out


def _avg_pool(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    k, s, p, _, ceil, shape = _pool_geometry(b, n, b.shape[x])
    if k == tuple(b.shape[x][2:]) and p == (0, 0):    # one window = the image: ORT runs its global kernel
        b.emit(n, "adaptive_avg_pool2d", [x], AdaptiveAvgPool2dAttrs((1, 1)), shape=shape)
        return
    b.emit(n, "avg_pool2d", [x], AvgPool2dAttrs(k, s, p, ceil, bool(n.attrs.get("count_include_pad", 0))),
           shape=shape)


def _max_pool_attrs(b: Builder, n: ONode, x):
    if int(n.attrs.get("storage_order", 0)) or len([o for o in n.outputs if o]) > 1:
        _fail(n, "MaxPool with storage_order=1 or an Indices output is not supported")
    k, s, p, d, ceil, shape = _pool_geometry(b, n, b.shape[x], dilations=True)
    return MaxPool2dAttrs(k, s, p, d, ceil), shape


def _max_pool(b: Builder, n: ONode):
    x = b.act(n, 0)
    attrs, shape = _max_pool_attrs(b, n, x)
    if x in b.qp:
        b.emit(n, "qmax_pool2d", [x], attrs, shape=shape, qp=b.qp[x])
    else:
        b.emit(n, "max_pool2d", [x], attrs, shape=shape)


def _global_avg_pool(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    xs = b.shape[x]
    if len(xs) != 4:
        _fail(n, f"only NCHW input is supported, got {xs}")
    b.emit(n, "adaptive_avg_pool2d", [x], AdaptiveAvgPool2dAttrs((1, 1)), shape=xs[:2] + (1, 1))


def _flatten(b: Builder, n: ONode):
    x = b.act(n, 0)
    xs = b.shape[x]
    axis = int(n.attrs.get("axis", 1))
    axis = axis + len(xs) if axis < 0 else axis
    if axis != 1:
        _fail(n, f"Flatten(axis={n.attrs.get('axis', 1)}) would mix the batch with other dimensions; only "
                 "axis=1 is supported")
    shape = (xs[0], int(np.prod(xs[1:])))
    if x in b.qp:
        b.emit(n, "qflatten", [x], FlattenAttrs(1, -1), shape=shape, qp=b.qp[x])
    else:
        b.emit(n, "flatten", [x], FlattenAttrs(1, -1), shape=shape)


def _reshape(b: Builder, n: ONode):
    x = b.act(n, 0)
    xs = b.shape[x]
    target = b.const(n, 1, "Reshape shape", ndim=1, dtype=np.int64)
    allowzero = int(n.attrs.get("allowzero", 0))
    t = [xs[i] if (d == 0 and not allowzero) else int(d) for i, d in enumerate(target)]
    if t.count(-1) > 1:
        _fail(n, f"shape {list(target)} has more than one -1")
    if -1 in t:
        known = int(np.prod([d for d in t if d != -1]))
        t[t.index(-1)] = int(np.prod(xs)) // max(known, 1)
    if int(np.prod(t)) != int(np.prod(xs)) or not t:
        _fail(n, f"cannot reshape {xs} to {list(target)}")
    if t[0] != xs[0] or (b.symbolic_batch and int(target[0]) not in (0, -1)):
        _fail(n, f"reshape {xs} → {list(target)} does not keep the batch dimension first")
    if int(target[0]) == -1 and -1 in [int(d) for d in target[1:]]:
        _fail(n, f"shape {list(target)} is ambiguous")
    shape = tuple(t)
    if x in b.qp:
        b.emit(n, "qreshape", [x], ReshapeAttrs(shape[1:]), shape=shape, qp=b.qp[x])
    else:
        b.emit(n, "reshape", [x], ReshapeAttrs(shape[1:]), shape=shape)


def _concat_axis(b: Builder, n: ONode, rank):
    axis = int(n.attrs.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if not 1 <= axis < rank:
        _fail(n, f"Concat along axis {n.attrs.get('axis')} (the batch, or out of range) is not supported")
    return axis


def _concat_shape(b: Builder, n: ONode, xs, axis):
    shapes = [b.shape[x] for x in xs]
    for s in shapes[1:]:
        if len(s) != len(shapes[0]) or any(a != c for i, (a, c) in enumerate(zip(s, shapes[0])) if i != axis):
            _fail(n, f"input shapes {shapes} do not fit together along axis {axis}")
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return tuple(out)


def _concat(b: Builder, n: ONode):
    xs = [b.act(n, i) for i in range(len(n.inputs)) if n.inputs[i]]
    axis = _concat_axis(b, n, len(b.shape[xs[0]]))
    shape = _concat_shape(b, n, xs, axis)
    coded = [x in b.qp for x in xs]
    if not any(coded):
        b.emit(n, "cat", xs, CatAttrs(axis), shape=shape)
        return
    # a Concat of uint8 codes (QOperator, as minquant's exporter writes a qcat whose qparams all agree)
    qps = {b.qp[x] for x in xs if x in b.qp}
    if not all(coded) or len(qps) != 1:
        _fail(n, "a Concat of uint8 codes needs every input to be codes with the same (scale, zero point) — "
                 "else QLinearConcat")
    from ...quantized import ops
    (s, z), = qps
    b.emit(n, "qcat", xs, ops.QCatAttrs(axis, (s,) * len(xs), (z,) * len(xs), s, z), shape=shape, qp=(s, z))


def _hard_sigmoid_exact(b: Builder, n: ONode, x, alpha, beta, **kw):
    """ORT's HardSigmoid, bit for bit: ``min(max(f32(f32(x·α) + β), 0), 1)`` (multiply, then add) — an affine
    batch_norm and a clip (measured: 0 of 10⁶ values differ; minquant's ``relu6(x + 3)/6`` differs on ~25 %)."""
    c = b.shape[x][1]
    mid = _affine(b, n, x, np.full(c, alpha, np.float32), np.full(c, beta, np.float32), suffix="/affine")
    return b.emit(n, "clip", [mid], ClipAttrs(0.0, 1.0), shape=b.shape[x], **kw)


def _hard_sigmoid(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    alpha, beta = _F32(n.attrs.get("alpha", 0.2)), _F32(n.attrs.get("beta", 0.5))
    if alpha == _F32(1 / 6) and beta == _F32(0.5) and not b.exact:
        b.emit(n, "hardsigmoid", [x], shape=b.shape[x])
        return
    _hard_sigmoid_exact(b, n, x, alpha, beta)


def _hard_swish(b: Builder, n: ONode):
    """HardSwish: ``hardswish`` in a float graph; in a quantized one ORT's own form, x · HardSigmoid(x)
    with α = 1/6, β = ½ (ONNX defines HardSwish as that function and ORT runs it so)."""
    x = b.act(n, 0, codes=False)
    if not b.exact:
        b.emit(n, "hardswish", [x], shape=b.shape[x])
        return
    hsig = _hard_sigmoid_exact(b, n, x, _F32(1 / 6), _F32(0.5), suffix="/hardsigmoid")
    b.emit(n, "mul", [x, hsig], shape=b.shape[x])


def _adaptive_avg_pool(b: Builder, n: ONode):
    """``_AdaptiveAvgPool`` of :func:`fuse_float_patterns` → ``adaptive_avg_pool2d``."""
    x = b.act(n, 0, codes=False)
    xs = b.shape[x]
    (oh, ow), (kh, kw) = n.attrs["output_size"], n.attrs["window"]
    if len(xs) != 4 or xs[2:] != (oh * kh, ow * kw):
        _fail(n, f"the windows {oh}×{kh}, {ow}×{kw} do not tile the input {xs}")
    b.emit(n, "adaptive_avg_pool2d", [x], AdaptiveAvgPool2dAttrs((oh, ow)), shape=xs[:2] + (oh, ow))


def _identity(b: Builder, n: ONode):
    if n.op == "Dropout" and len(n.inputs) > 2 and n.inputs[2]:
        tm = b.consts.get(n.inputs[2])
        if tm is None or bool(np.asarray(tm).reshape(())):
            _fail(n, "Dropout in training mode is not supported")
    b.alias(n, b.act(n, 0))


# ----------------------------------------------------------------------------------------------------------
# Quantized handlers
# ----------------------------------------------------------------------------------------------------------

def _quantize_linear(b: Builder, n: ONode):
    x = b.act(n, 0, codes=False)
    s, z = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2] if len(n.inputs) > 2 else "", "QuantizeLinear")
    from ...quantized.ops import QuantizeAttrs
    b.emit(n, "quantize", [x], QuantizeAttrs(s, z), shape=b.shape[x], qp=(s, z))


def _dequantize_linear(b: Builder, n: ONode):
    src = n.inputs[0]
    if src in b.consts and src not in b.val:          # a constant (e.g. a weight of an unfused float op)
        from ...affine import dequantize
        q = np.asarray(b.consts[src])
        s = b.const(n, 1, "DequantizeLinear scale")
        z = b.const(n, 2, "DequantizeLinear zero point", dtype=None, optional=True)
        z = np.zeros(s.shape, q.dtype) if z is None else z
        axis = int(n.attrs.get("axis", 1)) if s.size > 1 else None
        b.consts[n.outputs[0]] = dequantize(q, s, z, axis=None if axis is None else axis % q.ndim)
        return
    x = b.act(n, 0, codes=True)
    s, z = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2] if len(n.inputs) > 2 else "", "DequantizeLinear")
    from ...quantized.ops import QuantizeAttrs
    b.emit(n, "dequantize", [x], QuantizeAttrs(s, z), shape=b.shape[x])


def _qlinear_conv(b: Builder, n: ONode):
    from ...quantized import ops
    x = b.act(n, 0, codes=True)
    xs_, xz = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2], "input")
    w, ws, wz, per_channel = _weight_qparams(b.consts, n, n.inputs[3], n.inputs[4], n.inputs[5], 0)
    ys, yz = _act_qparams(b.consts, n, n.inputs[6], n.inputs[7], "output")
    geo, shape = _conv_geometry(b, n, b.shape[x], w.shape)
    bias = None
    if len(n.inputs) > 8 and n.inputs[8]:
        bq = b.const(n, 8, "QLinearConv bias", ndim=1, dtype=np.int32)
        if bq.shape != (w.shape[0],):
            _fail(n, f"bias must have {w.shape[0]} values, got {bq.shape}")
        bias = bias_param(bq, xs_, ws if per_channel else ws[0])
    attrs = ops.QConv2dAttrs(geo.stride, geo.padding, geo.dilation, geo.groups, xs_, xz, ys, yz, (0, 255), "",
                             per_channel)
    b.emit(n, "qconv2d", [x], attrs, {"weight": w.copy(), "w_scale": ws, "w_zp": wz, "bias": bias}, shape=shape,
           qp=(ys, yz))


def _emit_qlinear(b: Builder, n: ONode, x, xq, w, ws, wz, per_channel, bias_q, yq):
    from ...quantized import ops
    xs = b.shape[x]
    if xs[-1] != w.shape[1]:
        _fail(n, f"input {xs} does not match weight (out, in) {w.shape}")
    bias = None
    if bias_q is not None:
        bias_q = np.asarray(bias_q).reshape(-1)
        if bias_q.shape != (w.shape[0],):
            _fail(n, f"bias must have {w.shape[0]} values, got {bias_q.shape}")
        bias = bias_param(bias_q, xq[0], ws if per_channel else ws[0])
    attrs = ops.QLinearAttrs(xq[0], xq[1], yq[0], yq[1], (0, 255), "", per_channel)
    b.emit(n, "qlinear", [x], attrs, {"weight": np.ascontiguousarray(w), "w_scale": ws, "w_zp": wz, "bias": bias},
           shape=xs[:-1] + (w.shape[0],), qp=yq)


def _qgemm(b: Builder, n: ONode):
    x = b.act(n, 0, codes=True)
    if int(n.attrs.get("transA", 0)) or float(n.attrs.get("alpha", 1.0)) != 1.0:
        _fail(n, "only transA=0, alpha=1 is supported")
    if len(n.inputs) < 9 or not n.inputs[7]:
        _fail(n, "QGemm without output scale (float output) is not supported")
    xq = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2], "input")
    trans_b = int(n.attrs.get("transB", 0))
    w, ws, wz, pc = _weight_qparams(b.consts, n, n.inputs[3], n.inputs[4], n.inputs[5], 0 if trans_b else 1)
    if w.ndim != 2:
        _fail(n, f"weight must be 2-D, got {w.shape}")
    w = w if trans_b else w.T
    bias_q = b.const(n, 6, "QGemm bias C", dtype=np.int32, optional=True)
    yq = _act_qparams(b.consts, n, n.inputs[7], n.inputs[8], "output")
    if len(b.shape[x]) != 2:
        _fail(n, f"QGemm input must be 2-D, got {b.shape[x]}")
    _emit_qlinear(b, n, x, xq, w, ws, wz, pc, bias_q, yq)


def _qlinear_matmul(b: Builder, n: ONode):
    x = b.act(n, 0, codes=True)
    if n.inputs[3] not in b.consts:
        _fail(n, "the second operand must be a constant weight")
    xq = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2], "input")
    w, ws, wz, pc = _weight_qparams(b.consts, n, n.inputs[3], n.inputs[4], n.inputs[5], 1)
    if w.ndim != 2:
        _fail(n, f"weight must be 2-D, got {w.shape}")
    yq = _act_qparams(b.consts, n, n.inputs[6], n.inputs[7], "output")
    _emit_qlinear(b, n, x, xq, w.T, ws, wz, pc, None, yq)


def _qlinear_add(b: Builder, n: ONode):
    from ...quantized import ops
    a, c = b.act(n, 0, codes=True), b.act(n, 3, codes=True)
    aq = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2], "A")
    cq = _act_qparams(b.consts, n, n.inputs[4], n.inputs[5], "B")
    yq = _act_qparams(b.consts, n, n.inputs[6], n.inputs[7], "output")
    if b.shape[a] != b.shape[c]:
        _fail(n, f"QLinearAdd with broadcasting ({b.shape[a]} + {b.shape[c]}) is not supported")
    b.emit(n, "qadd", [a, c], ops.QAddAttrs(aq[0], aq[1], cq[0], cq[1], yq[0], yq[1]), shape=b.shape[a], qp=yq)


def _qlinear_pool_io(b: Builder, n: ONode):
    """com.microsoft QLinearGlobalAveragePool / QLinearAveragePool (inputs X, x_scale, x_zp, y_scale, y_zp):
    ``(X's codes, (x_scale, x_zp), (y_scale, y_zp))``; NHWC (``channels_last=1``) is refused."""
    if int(n.attrs.get("channels_last", 0)):
        _fail(n, "channels_last=1 (NHWC) tensors are not supported")
    x = b.act(n, 0, codes=True)
    xq = _act_qparams(b.consts, n, n.inputs[1], n.inputs[2], "input")
    yq = _act_qparams(b.consts, n, n.inputs[3], n.inputs[4], "output")
    return x, xq, yq


def _qlinear_global_avg_pool(b: Builder, n: ONode):
    from ...quantized import ops
    x, xq, yq = _qlinear_pool_io(b, n)
    xs = b.shape[x]
    if len(xs) != 4:
        _fail(n, f"only NCHW input is supported, got {xs}")
    b.emit(n, "qadaptive_avg_pool2d", [x],
           ops.QAdaptiveAvgPool2dAttrs((1, 1), xq[0], xq[1], False, yq[0], yq[1]), shape=xs[:2] + (1, 1), qp=yq)


def _qlinear_avg_pool(b: Builder, n: ONode):
    from ...quantized import ops
    x, xq, yq = _qlinear_pool_io(b, n)
    k, s, p, _, ceil, shape = _pool_geometry(b, n, b.shape[x])
    if ceil:
        _fail(n, "ceil_mode=1 is not supported for QLinearAveragePool")
    attrs = ops.QAvgPool2dAttrs(k, s, p, False, bool(n.attrs.get("count_include_pad", 0)), None, xq[0], xq[1],
                                False, yq[0], yq[1])
    b.emit(n, "qavg_pool2d", [x], attrs, shape=shape, qp=yq)


def _qlinear_concat(b: Builder, n: ONode):
    from ...quantized import ops
    yq = _act_qparams(b.consts, n, n.inputs[0], n.inputs[1], "output")
    rest = n.inputs[2:]
    if len(rest) % 3 or not rest:
        _fail(n, "inputs must be (Y_scale, Y_zero_point) followed by (X, X_scale, X_zero_point) triples")
    xs, scales, zps = [], [], []
    for i in range(0, len(rest), 3):
        xs.append(b.act(n, 2 + i, codes=True))
        s, z = _act_qparams(b.consts, n, rest[i + 1], rest[i + 2], f"input {i // 3}")
        scales.append(s)
        zps.append(z)
    axis = _concat_axis(b, n, len(b.shape[xs[0]]))
    b.emit(n, "qcat", xs, ops.QCatAttrs(axis, tuple(scales), tuple(zps), yq[0], yq[1]),
           shape=_concat_shape(b, n, xs, axis), qp=yq)


def _dynamic_weights(b: Builder, n: ONode, w_name, z_name, s_name, out_axis):
    if w_name not in b.consts:
        _fail(n, "the weight must be a constant")
    w = np.asarray(b.consts[w_name])
    if w.dtype != np.int8:
        _fail(n, f"weights are {w.dtype.name}; only int8 weights are supported (quantize_dynamic with "
                 "weight_type=QInt8; uint8 weights run on MLAS's exact u8×u8 kernel, which minquant does "
                 "not target)")
    return _weight_qparams(b.consts, n, w_name, s_name, z_name, out_axis)


def _float_bias(b: Builder, n: ONode, name, o):
    if not name:
        return None
    bias = np.asarray(b.consts[name])
    if bias.dtype != np.float32 or bias.size != o or (bias.ndim > 1 and bias.reshape(-1).size != o):
        _fail(n, f"bias must be {o} float32 values, got {bias.dtype.name} {bias.shape}")
    return bias.reshape(-1).copy()


def _dynamic_conv(b: Builder, n: ONode):
    from ...quantized import ops
    x = b.act(n, 0, codes=False)
    w, ws, wz, pc = _dynamic_weights(b, n, n.inputs[1], n.inputs[2], n.inputs[3], 0)
    if w.ndim != 4:
        _fail(n, f"weight must be 4-D, got {w.shape}")
    geo, shape = _conv_geometry(b, n, b.shape[x], w.shape)
    bias = _float_bias(b, n, n.inputs[4], w.shape[0])
    if bias is not None and np.asarray(b.consts[n.inputs[4]]).ndim not in (1, 4):
        _fail(n, "the bias must broadcast per output channel")
    attrs = ops.DynamicConv2dAttrs(geo.stride, geo.padding, geo.dilation, geo.groups, pc, False, False)
    b.emit(n, "dynamic_conv2d", [x], attrs, {"weight": w.copy(), "w_scale": ws, "w_zp": wz, "bias": bias},
           shape=shape)


def _dynamic_matmul(b: Builder, n: ONode):
    from ...quantized import ops
    x = b.act(n, 0, codes=False)
    w, ws, wz, pc = _dynamic_weights(b, n, n.inputs[1], n.inputs[3] if len(n.inputs) > 3 else "", n.inputs[2], 1)
    if w.ndim != 2:
        _fail(n, f"weight must be 2-D, got {w.shape}")
    xs = b.shape[x]
    if xs[-1] != w.shape[0]:
        _fail(n, f"input {xs} does not match weight {w.shape}")
    bias = _float_bias(b, n, n.inputs[4] if len(n.inputs) > 4 else "", w.shape[1])
    b.emit(n, "dynamic_linear", [x], ops.DynamicLinearAttrs(pc, False, False),
           {"weight": np.ascontiguousarray(w.T), "w_scale": ws, "w_zp": wz, "bias": bias},
           shape=xs[:-1] + (w.shape[1],))


#: ONNX op → handler for float models (also used for float ops inside quantized ones)
FLOAT_HANDLERS = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "BatchNormalization": _batch_norm,
    "Relu": _relu, "Clip": _clip, "HardSwish": _hard_swish, "HardSigmoid": _hard_sigmoid,
    "Add": _binary("add"), "Mul": _binary("mul"), "GlobalAveragePool": _global_avg_pool,
    "AveragePool": _avg_pool, "MaxPool": _max_pool, "Flatten": _flatten, "Reshape": _reshape,
    "Concat": _concat, "Identity": _identity, "Dropout": _identity, "Min": _min_max, "Max": _min_max,
    # the sequences minquant's exporter writes (fuse_float_patterns)
    "_HardSwish": _unary("hardswish"), "_HardSigmoid": _unary("hardsigmoid"),
    "_AdaptiveAvgPool": _adaptive_avg_pool,
}
#: ONNX op (QOperator level, after :func:`fuse_qdq`) → handler for quantized models
QUANTIZED_HANDLERS = {
    "QuantizeLinear": _quantize_linear, "DequantizeLinear": _dequantize_linear, "QLinearConv": _qlinear_conv,
    "QLinearMatMul": _qlinear_matmul, "com.microsoft.QGemm": _qgemm, "com.microsoft.QLinearAdd": _qlinear_add,
    "com.microsoft.QLinearGlobalAveragePool": _qlinear_global_avg_pool,
    "com.microsoft.QLinearAveragePool": _qlinear_avg_pool, "com.microsoft.QLinearConcat": _qlinear_concat,
    "com.microsoft.DynamicQuantizeMatMul": _dynamic_matmul, "_DynamicConv": _dynamic_conv,
    "com.microsoft.QuantizeLinear": _quantize_linear, "com.microsoft.DequantizeLinear": _dequantize_linear,
}
HANDLERS = {**FLOAT_HANDLERS, **QUANTIZED_HANDLERS}
FLOAT_OPS = frozenset(k for k in FLOAT_HANDLERS if not k.startswith("_"))
QUANTIZED_OPS = frozenset(k.rsplit(".", 1)[-1] for k in QUANTIZED_HANDLERS if not k.startswith("_")) | {
    "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}
_QUANT_MARKERS = QUANTIZED_OPS | {"QLinearMul", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax",
                                  "MatMulIntegerToFloat", "QAttention", "DynamicQuantizeLSTM"}

_WHY = {
    "QLinearMul": "ORT fuses DQ → Mul → Q into QLinearMul, for which minquant has no kernel",
    "QLinearSigmoid": "ORT fuses DQ → Sigmoid → Q into a QLinearSigmoid lookup table minquant does not have",
    "QLinearLeakyRelu": "ORT fuses DQ → LeakyRelu → Q into a lookup table minquant does not have",
    "QLinearSoftmax": "no quantized Softmax in minquant",
    "MatMulIntegerToFloat": "ORT turns DQ → MatMul without a following Q into MatMulIntegerToFloat",
    "ConvInteger": "only in the pattern quantize_dynamic writes (DynamicQuantizeLinear → ConvInteger → Cast → "
                   "Mul → [Add])",
    "MatMulInteger": "only in the pattern quantize_dynamic writes (DynamicQuantizeLinear → MatMulInteger → "
                     "Cast → Mul → [Add])",
    "DynamicQuantizeLinear": "only feeding ConvInteger / MatMulInteger in quantize_dynamic's pattern",
    "Div": "only inside the sequences minquant's exporter writes for hardswish (Add → Clip → Mul → Div), "
           "hardsigmoid (Add → Clip → Div) and adaptive average pooling (Cast → Reshape → ReduceSum → Div → "
           "Div → Cast)",
    "Cast": "only inside the adaptive average pooling sequence minquant's exporter writes (or on constants)",
    "ReduceSum": "only inside the adaptive average pooling sequence minquant's exporter writes",
}


def _key(n: ONode) -> str:
    return n.op if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op}"


def _check_supported(nodes, quantized: bool) -> None:
    """One ValueError listing every op type minquant cannot import, with the nodes that use it."""
    table = HANDLERS if quantized else FLOAT_HANDLERS
    bad = defaultdict(list)
    for n in nodes:
        if _key(n) not in table:
            bad[_key(n)].append(n.name)
    if bad:
        parts = []
        for op, names in bad.items():
            shown = ", ".join(repr(x) for x in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            why = _WHY.get(op.rsplit(".", 1)[-1])
            parts.append(f"{op} (node{'s' if len(names) > 1 else ''} {shown})" + (f": {why}" if why else ""))
        raise ValueError("unsupported ONNX op(s): " + "; ".join(parts))
