"""Kernels for quantized graphs: the table :func:`minquant.executor.run` uses to run a quantized model.

The loop is minquant's ordinary executor; only the table differs. :func:`prepare_kernels` builds, once per
model, everything that does not depend on the input (packed weights, output stages — the
:class:`~minquant.kernels.QConv2d` / :class:`~minquant.kernels.QLinear` layers), and returns
``{op: kernel(node, inputs)}`` covering the quantized ops of :mod:`minquant.quantized.ops` plus every float
op (:data:`minquant.executor.FLOAT_KERNELS`: float fallbacks and unquantized layers).

``target`` (one per model) says whose integer arithmetic every kernel reproduces
(:mod:`minquant.target`): a framework × CPU, resolved per layer.
Where a framework has no such kernel the nearest exact formula is used and said so:

* ``qavg_pool2d`` under 'onnxruntime' is ORT's ``QLinearAveragePool``
  (:func:`~minquant.kernels.pool.qavg_pool2d_onnxruntime`; with ``ceil_mode`` or ``divisor_override``,
  which ORT does not have, it rounds as 'minquant'); non-global ``qadaptive_avg_pool2d`` under
  'onnxruntime' rounds as 'minquant' (ORT has only the global average pool);
* ``qcat`` is torch's definition — dequantize every input (step 1), concatenate, quantize (step 3) with
  the emulation's quantize rule; it matched torch (x86 and qnnpack) bit for bit on the model of
  tests/test_quantize_torch_import.py, but torch's vectorised channels-last kernel was not studied;
* ``dynamic_conv2d`` has no torch counterpart (torch's ``quantize_dynamic`` leaves Conv2d float): it is
  the emulation's ``dynamic_linear`` arithmetic on the im2col matrix of the quantized input — except that
  under 'onnxruntime' the integer accumulation is exact, as ORT's ``ConvInteger`` (no pair saturation;
  :func:`minquant.kernels.dynamic.dynamic_conv2d`).
* ``qhardswish`` / ``qhardsigmoid`` (256-entry tables) and ``qmul`` under 'onnxruntime' use the float64
  textbook formula (:mod:`minquant.kernels.elementwise`; ONNX Runtime's counterparts were not studied);
* under a LiteRT target (``Arithmetic.litert``) quantize, dequantize, add and the average pools are LiteRT's
  own (:mod:`minquant.kernels.litert`; an average pool must have VALID windows and keep its qparams, as
  LiteRT's AVERAGE_POOL_2D does), and so are ``qmul`` (MUL), ``qhardswish`` (HARD_SWISH) and ``qmean`` (MEAN, which
  runs only there); ``qhardsigmoid`` / ``qcat`` are not reproduced for LiteRT (``ValueError``);
* ``qconv2d_add``, ``qlinear_float`` and, under 'x86-inductor', ``qadaptive_avg_pool2d`` are what Inductor
  makes of a torchao pt2e graph (:mod:`minquant.quantized.pt2e_kernels`);
* float ops run minquant's float kernels (torch's arithmetic), except a global ``adaptive_avg_pool2d``
  under 'onnxruntime', which sums in MLAS's order (:func:`global_avg_pool_mlas`).

This module imports only NumPy and minquant's kernels.
"""
from __future__ import annotations

import numpy as np

from ..affine import dequantize, quantize
from ..executor import FLOAT_KERNELS
from ..kernels import QConv2d, QLinear
from ..target import Target, as_target
from ..kernels.add import QAdd, torch_vector_block
from ..kernels.elementwise import activation_tables, apply_tables, qmul
from ..kernels.dynamic import dynamic_conv2d, dynamic_linear, pack_dynamic_conv_weight
from ..kernels.gemm import pack_weight
from ..kernels.quantize import dequantize_u8_runner, quantize_u8_runner
from ..kernels.fp16 import fp16_aware, widen
from ..kernels.litert import (avg_pool_litert, dequantize_litert, hard_swish_table, mean_litert,
                              qadd_litert, qmul_litert, quantize_litert)
from ..kernels.pool import (qadaptive_avg_pool2d_runner, qavg_pool2d_onnxruntime_runner, qavg_pool2d_runner,
                            qmax_pool2d)
from . import ops  # noqa: F401  (registers the quantized ops)
from .layout import to_nchw, to_nhwc
from .precision_ops import prepare_precision_kernels
from .pt2e_kernels import QConv2dAdd, QLinearFloat, QLinearInductor, adaptive_avg_pool_inductor

__all__ = ["prepare_kernels", "KernelTable", "weight_qparams", "global_avg_pool_mlas"]

_F32 = np.float32


def weight_qparams(node):
    """(w_scale, w_zp) as the kernels take them: 1-D per output channel, or scalars (per tensor)."""
    ws, wz = node.params["w_scale"], node.params["w_zp"].astype(np.int64)
    if node.attrs.per_channel:
        return ws, wz
    if ws.shape != (1,) or wz.shape != (1,):
        raise ValueError(f"node {node.name!r}: per-tensor weights need one scale and zero point, got "
                         f"{ws.shape} and {wz.shape}")
    return ws.dtype.type(ws[0]), int(wz[0])


def global_avg_pool_mlas(x):
    """Float global average pooling as ONNX Runtime's CPU kernel computes it (MLAS ``MlasPoolGlobalKernel``,
    used for GlobalAveragePool and for an AveragePool whose window is the whole image): per channel, four
    float32 partial sums over consecutive groups of four pixels, reduced as ``(s0 + s2) + (s1 + s3)``, the
    remaining pixels added one by one, then ``f32(sum / (H·W))``. minquant's float kernel sums in float64
    (torch's result); the two differ in the last bit for about a third of the values (measured on
    MobileNetV2), which moves the run-time qparams of a following ``DynamicQuantizeLinear``."""
    if x.dtype != _F32 or x.ndim != 4:
        raise ValueError(f"global average pooling expects a float32 NCHW input, got {x.dtype} {x.shape}")
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    m = (h * w) // 4
    lanes = np.zeros((n, c, 4), _F32)
    if m:   # sequential float32 accumulation of the 4-wide blocks (cumsum adds in order)
        lanes = np.cumsum(flat[:, :, :4 * m].reshape(n, c, m, 4), axis=2, dtype=_F32)[:, :, -1]
    total = ((lanes[..., 0] + lanes[..., 2]).astype(_F32) + (lanes[..., 1] + lanes[..., 3]).astype(_F32)).astype(_F32)
    for i in range(4 * m, h * w):
        total = (total + flat[:, :, i]).astype(_F32)
    return (total / _F32(h * w)).astype(_F32).reshape(n, c, 1, 1)


def _check_codes(x, node):
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise ValueError(f"{node.op} expects uint8 codes as input, got {getattr(x, 'dtype', type(x))}")
    return x


def per_shape(make_runner):
    """A kernel ``(node, inputs)`` over uint8 codes whose checked, planned form ``run(codes)`` is made once per
    node and input shape by ``make_runner(node, codes)`` (which checks the arguments, e.g.
    :func:`~minquant.kernels.pool.qavg_pool2d_runner`) and reused for every later input of that shape."""
    runners = {}    # (node name, shape) → (the attributes it was made for, run)

    def kernel(n, xs):
        x = _check_codes(xs[0], n)
        key = (n.name, x.shape)
        made = runners.get(key)
        if made is None or made[0] is not n.attrs:
            made = runners[key] = (n.attrs, make_runner(n, x))
        return made[1](x)
    return kernel


def _prepare_qconv(node, target):
    a = node.attrs
    ws, wz = weight_qparams(node)
    return QConv2d(node.params["weight"], ws, wz, node.params.get("bias"), a.x_scale, a.x_zp, a.y_scale, a.y_zp,
                   stride=a.stride, padding=a.padding, dilation=a.dilation, groups=a.groups, clamp=a.clamp,
                   clamp_hi=node.params.get("clamp_hi"), target=target)


def _prepare_qlinear(node, target):
    a = node.attrs
    ws, wz = weight_qparams(node)
    return QLinear(node.params["weight"], ws, wz, node.params.get("bias"), a.x_scale, a.x_zp, a.y_scale, a.y_zp,
                   clamp=a.clamp, clamp_hi=node.params.get("clamp_hi"), target=target)


def _to_nhwc_order(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def _from_nhwc_order(y):
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if y.ndim == 4 else y


def _litert_pool_window(node, graph):
    """(kernel, stride) of an average pool LiteRT can run: VALID windows, output qparams = input's."""
    a = node.attrs
    if a.y_scale is not None:
        from .ops import value_qparams
        if value_qparams(graph).get(node.inputs[0]) != (a.y_scale, a.y_zp):
            raise ValueError("LiteRT's AVERAGE_POOL_2D keeps its input's qparams; this pool changes them")
    if node.op == "qadaptive_avg_pool2d":
        return None
    if a.padding != (0, 0) or a.ceil_mode or a.divisor_override is not None:
        raise ValueError("LiteRT's AVERAGE_POOL_2D is reproduced for VALID windows (no padding, floor mode, "
                         "no divisor override)")
    return a.kernel_size, a.stride


class KernelTable(dict):
    """``{op: kernel(node, inputs)}`` — and :meth:`nhwc_ok`: whether a node of the graph the table was
    prepared for has a channels-last kernel here (the question :func:`~minquant.quantized.layout.channels_last_graph`
    asks)."""

    def __init__(self, kernels, channels_last_nodes):
        super().__init__(kernels)
        self.channels_last_nodes = frozenset(channels_last_nodes)

    def nhwc_ok(self, node) -> bool:
        return node.name in self.channels_last_nodes


def prepare_kernels(graph, target) -> KernelTable:
    """The kernel table for ``graph`` under ``target`` (a :class:`~minquant.target.Target` or a framework
    name; module docstring): every layer prepared once, each convolution with the arithmetic its framework
    picks for that layer on the target's CPU. It also runs the channels-last ops of an execution plan
    (:mod:`~minquant.quantized.layout`: ``qconv2d_nhwc``, ``qadd_nhwc``, ``qclamp_nhwc``, ``qmax_pool2d_nhwc``,
    ``qavg_pool2d_nhwc``, ``qadaptive_avg_pool2d_nhwc``,
    ``to_nhwc``, ``to_nchw``) for the nodes :meth:`KernelTable.nhwc_ok` names: convolutions whose channels-last
    path reads the codes in place (:attr:`~minquant.kernels.QConv2d.channels_last_native`), clamps, max pools,
    the average pools (not LiteRT's, nor Inductor's adaptive one),
    and adds whose rounding does not
    depend on where an element sits in NCHW order (fbgemm's does unless the emulated tensors are
    channels-last: ``QAddAttrs.channels_last``)."""
    tgt = as_target(target)
    ar = tgt.ops()
    minq = Target("minquant", tgt.cpu)
    pool_target = minq if ar.name == "onnxruntime" else tgt
    prepared: dict[str, object] = {}
    lp = ar.litert
    for n in graph.nodes:
        try:
            if lp is not None and n.op in ("qhardsigmoid", "qcat"):
                raise ValueError(f"minquant does not reproduce LiteRT's {n.op[1:].upper()} (target {tgt})")
            if lp is not None and n.op in ("qavg_pool2d", "qadaptive_avg_pool2d"):
                prepared[n.name] = _litert_pool_window(n, graph)
            if n.op == "quantize" and lp is None:
                prepared[n.name] = quantize_u8_runner(n.attrs.scale, n.attrs.zero_point, target=ar.quantize_rule)
            elif n.op == "dequantize" and lp is None:
                prepared[n.name] = dequantize_u8_runner(n.attrs.scale, n.attrs.zero_point)
            elif n.op == "qconv2d":
                prepared[n.name] = _prepare_qconv(n, tgt)
            elif n.op == "qlinear":
                prepared[n.name] = QLinearInductor(n, tgt) if ar.name == "inductor" else _prepare_qlinear(n, tgt)
            elif n.op == "qadd" and lp is None:
                a = n.attrs
                prepared[n.name] = QAdd(a.a_scale, a.a_zp, a.b_scale, a.b_zp, a.y_scale, a.y_zp, relu=a.relu,
                                        target=ar)
            elif n.op == "qconv2d_add":
                prepared[n.name] = QConv2dAdd(n, tgt)
            elif n.op == "qlinear_float":
                prepared[n.name] = QLinearFloat(n, tgt)
            elif n.op == "qhardswish" and lp is not None:
                a = n.attrs
                prepared[n.name] = hard_swish_table(a.x_scale, a.x_zp, a.y_scale, a.y_zp)
            elif n.op == "qmean" and lp is None:
                raise ValueError(f"qmean is LiteRT's MEAN; it runs under a LiteRT target, not {tgt}")
            elif n.op in ("qhardswish", "qhardsigmoid"):
                a = n.attrs
                prepared[n.name] = activation_tables(n.op[1:], a.x_scale, a.x_zp, a.y_scale, a.y_zp,
                                                     target=ar)
            elif n.op == "dynamic_linear":
                ws, wz = weight_qparams(n)
                prepared[n.name] = (pack_weight(n.params["weight"], wz), ws)
            elif n.op == "dynamic_conv2d":
                ws, wz = weight_qparams(n)
                prepared[n.name] = (pack_dynamic_conv_weight(n.params["weight"], wz, n.attrs.groups), ws)
        except ValueError as e:
            raise ValueError(f"cannot prepare node {n.name!r} ({n.op}, from {n.source or '?'}): {e}") from e

    vector_block = torch_vector_block(ar)
    nhwc_nodes = set()
    for n in graph.nodes:
        if n.op == "qconv2d" and prepared[n.name].channels_last_native:
            nhwc_nodes.add(n.name)
        elif n.op in ("qclamp", "qmax_pool2d") or (n.op == "qadd" and (lp is not None or not prepared[n.name].block
                                                      or n.attrs.channels_last)):
            nhwc_nodes.add(n.name)
        elif lp is None and (n.op == "qavg_pool2d" or (n.op == "qadaptive_avg_pool2d" and ar.name != "inductor")):
            nhwc_nodes.add(n.name)     # the Numba pools run channels-last codes too (same codes)

    def k_quantize(n, xs):
        if lp is not None:
            return quantize_litert(xs[0], n.attrs.scale, n.attrs.zero_point, lp.quantize)
        return prepared[n.name](widen(xs[0]))

    def k_dequantize(n, xs):
        if lp is not None:
            return dequantize_litert(_check_codes(xs[0], n), n.attrs.scale, n.attrs.zero_point, lp.dequantize)
        return prepared[n.name](_check_codes(xs[0], n))

    def k_qconv(n, xs):
        return prepared[n.name](_check_codes(xs[0], n))

    def k_qlinear(n, xs):
        x = _check_codes(xs[0], n)
        y = prepared[n.name](x.reshape(-1, x.shape[-1]))
        return y.reshape(x.shape[:-1] + (y.shape[-1],))

    def k_qadd(n, xs):
        a = n.attrs
        x0, x1 = _check_codes(xs[0], n), _check_codes(xs[1], n)
        if lp is not None:
            return qadd_litert(x0, a.a_scale, a.a_zp, x1, a.b_scale, a.b_zp, a.y_scale, a.y_zp, relu=a.relu,
                               rule=lp.add)
        add = prepared[n.name]
        if a.channels_last and add.block:   # fbgemm rounds by position: run it in the channels-last order
            return _from_nhwc_order(add(_to_nhwc_order(x0), _to_nhwc_order(x1)))
        return add(x0, x1)

    def k_qadd_nhwc(n, xs):    # elementwise, and fbgemm's position rule (if any) counts in NHWC order
        a = n.attrs
        x0, x1 = _check_codes(xs[0], n), _check_codes(xs[1], n)
        if lp is not None:
            return qadd_litert(x0, a.a_scale, a.a_zp, x1, a.b_scale, a.b_zp, a.y_scale, a.y_zp, relu=a.relu,
                               rule=lp.add)
        return prepared[n.name](x0, x1)

    def k_qcat(n, xs):
        a = n.attrs
        if all(s == a.y_scale and z == a.y_zp for s, z in zip(a.in_scales, a.in_zps)):
            return np.concatenate([_check_codes(x, n) for x in xs], axis=a.dim)
        real = [dequantize(_check_codes(x, n), s, z) for x, s, z in zip(xs, a.in_scales, a.in_zps)]
        return quantize(np.concatenate(real, axis=a.dim), a.y_scale, a.y_zp, "uint8", target=ar.quantize_rule)

    def k_qmax(n, xs):
        a = n.attrs
        return qmax_pool2d(_check_codes(xs[0], n), a.kernel_size, a.stride, a.padding, a.dilation, a.ceil_mode)

    def qavg_runner(n, x, nhwc):
        a = n.attrs
        if ar.name == "onnxruntime" and not a.ceil_mode and a.divisor_override is None:
            return qavg_pool2d_onnxruntime_runner(x, a.kernel_size, a.stride, a.padding, a.count_include_pad,
                                                  x_scale=a.x_scale, x_zp=a.x_zp, y_scale=a.y_scale, y_zp=a.y_zp,
                                                  codes_nhwc=nhwc)
        return qavg_pool2d_runner(x, a.kernel_size, a.stride, a.padding, a.ceil_mode, a.count_include_pad,
                                  a.divisor_override, x_scale=a.x_scale, x_zp=a.x_zp, y_scale=a.y_scale,
                                  y_zp=a.y_zp, target=pool_target, channels_last=a.channels_last, codes_nhwc=nhwc)

    k_qavg_runs = {False: per_shape(lambda n, x: qavg_runner(n, x, False)),
                   True: per_shape(lambda n, x: qavg_runner(n, x, True))}

    def k_qavg(n, xs, nhwc=False):
        if lp is not None:
            return avg_pool_litert(_check_codes(xs[0], n), *prepared[n.name])
        return k_qavg_runs[nhwc](n, xs)

    def k_qmax_nhwc(n, xs):
        a = n.attrs
        return qmax_pool2d(_check_codes(xs[0], n), a.kernel_size, a.stride, a.padding, a.dilation, a.ceil_mode,
                           channels_last=True)

    def k_qadaptive(n, xs, nhwc=False):
        a = n.attrs
        if ar.name == "inductor":   # pt2e lowered by Inductor: float32 between dequantize and quantize
            ys, yz = (a.x_scale, a.x_zp) if a.y_scale is None else (a.y_scale, a.y_zp)
            return adaptive_avg_pool_inductor(_check_codes(xs[0], n), a.output_size, a.x_scale, a.x_zp, ys, yz)
        if lp is not None:
            x = _check_codes(xs[0], n)
            (oh, ow) = a.output_size
            if x.shape[2] % oh or x.shape[3] % ow:
                raise ValueError(f"node {n.name!r}: LiteRT pools fixed windows; {x.shape[2]}x{x.shape[3]} → "
                                 f"{oh}x{ow} is not a whole number of windows")
            k = (x.shape[2] // oh, x.shape[3] // ow)
            return avg_pool_litert(x, k, k)
        return k_qadaptive_runs[nhwc](n, xs)

    def qadaptive_runner(n, x, nhwc):
        a = n.attrs
        em = tgt if (ar.name != "onnxruntime" or a.output_size == (1, 1)) else minq
        return qadaptive_avg_pool2d_runner(x, a.output_size, x_scale=a.x_scale, x_zp=a.x_zp, y_scale=a.y_scale,
                                           y_zp=a.y_zp, target=em, channels_last=a.channels_last, codes_nhwc=nhwc)

    k_qadaptive_runs = {False: per_shape(lambda n, x: qadaptive_runner(n, x, False)),
                        True: per_shape(lambda n, x: qadaptive_runner(n, x, True))}

    def clamp(n, x, channel_axis):
        hi = n.params.get("hi_channels")
        if hi is not None:   # one pass: the per-channel top (the [lo, hi] clip below is usually a no-op)
            shape = [1] * x.ndim
            shape[channel_axis] = -1
            x = np.minimum(x, hi.astype(np.uint8).reshape(shape))
        if (n.attrs.lo, n.attrs.hi) != (0, 255):
            x = np.clip(x, n.attrs.lo, n.attrs.hi).astype(np.uint8)
        return x

    def k_qclamp(n, xs):
        return clamp(n, _check_codes(xs[0], n), 1)

    def k_qclamp_nhwc(n, xs):
        return clamp(n, _check_codes(xs[0], n), 3)

    def k_qflatten(n, xs):
        x = _check_codes(xs[0], n)
        s, e = n.attrs.start_dim % x.ndim, n.attrs.end_dim % x.ndim
        return x.reshape(x.shape[:s] + (-1,) + x.shape[e + 1:])

    def k_qreshape(n, xs):
        x = _check_codes(xs[0], n)
        return x.reshape((x.shape[0],) + tuple(n.attrs.shape))

    def k_qmul(n, xs):
        a = n.attrs
        if lp is not None:
            return qmul_litert(_check_codes(xs[0], n), a.a_scale, a.a_zp, _check_codes(xs[1], n), a.b_scale, a.b_zp,
                               a.y_scale, a.y_zp, relu=a.relu, rule=lp.mul)
        return qmul(_check_codes(xs[0], n), a.a_scale, a.a_zp, _check_codes(xs[1], n), a.b_scale, a.b_zp,
                    a.y_scale, a.y_zp, relu=a.relu, target=ar)

    def k_qpad(n, xs):
        t, b, l, r = n.attrs.pads
        x = _check_codes(xs[0], n)
        return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=n.attrs.value)

    def k_qmean(n, xs):
        a = n.attrs
        y = mean_litert(_check_codes(xs[0], n), a.x_scale, a.x_zp, a.y_scale, a.y_zp, lp.mean_rule(a.keep_dims))
        return y if a.keep_dims else y.reshape(y.shape[:2])

    def k_qactivation(n, xs):
        if lp is not None:
            return prepared[n.name][_check_codes(xs[0], n)]       # LiteRT's HARD_SWISH: its 256-entry table
        t_vec, t_tail = prepared[n.name]
        return apply_tables(_check_codes(xs[0], n), t_vec, t_tail, block=vector_block,
                            channels_last=n.attrs.channels_last)

    def k_dyn_linear(n, xs):
        packed, ws = prepared[n.name]
        return dynamic_linear(xs[0], packed, ws, None, n.params.get("bias"), reduce_range=n.attrs.reduce_range,
                              relu=n.attrs.relu, target=tgt)

    def k_dyn_conv(n, xs):
        packed, ws = prepared[n.name]
        a = n.attrs
        return dynamic_conv2d(xs[0], packed, ws, None, n.params.get("bias"), stride=a.stride, padding=a.padding,
                              dilation=a.dilation, reduce_range=a.reduce_range, relu=a.relu, target=tgt)

    table = {op: fp16_aware(k) for op, k in FLOAT_KERNELS.items()}   # float16 values: widen, compute, round
    if ar.name == "onnxruntime":   # ORT's float global average pool sums in MLAS's order
        float_adaptive = table["adaptive_avg_pool2d"]
        table["adaptive_avg_pool2d"] = lambda n, xs: (global_avg_pool_mlas(xs[0]) if n.attrs.output_size == (1, 1)
                                                      else float_adaptive(n, xs))
    table.update({"quantize": k_quantize, "dequantize": k_dequantize, "qconv2d": k_qconv, "qlinear": k_qlinear,
                  "qadd": k_qadd, "qcat": k_qcat, "qmax_pool2d": k_qmax, "qavg_pool2d": k_qavg,
                  "qadaptive_avg_pool2d": k_qadaptive, "qclamp": k_qclamp, "qflatten": k_qflatten,
                  "qreshape": k_qreshape, "dynamic_linear": k_dyn_linear, "dynamic_conv2d": k_dyn_conv,
                  "qmul": k_qmul, "qmean": k_qmean, "qpad": k_qpad,
                  "qhardswish": k_qactivation, "qhardsigmoid": k_qactivation,
                  "qconv2d_add": lambda n, xs: prepared[n.name](_check_codes(xs[0], n), _check_codes(xs[1], n)),
                  "qlinear_float": lambda n, xs: prepared[n.name](_check_codes(xs[0], n)),
                  # the channels-last ops of an execution plan (layout.py)
                  "qconv2d_nhwc": lambda n, xs: prepared[n.name].nhwc(_check_codes(xs[0], n)),
                  "qadd_nhwc": k_qadd_nhwc, "qclamp_nhwc": k_qclamp_nhwc, "qmax_pool2d_nhwc": k_qmax_nhwc,
                  "qavg_pool2d_nhwc": lambda n, xs: k_qavg(n, xs, True),
                  "qadaptive_avg_pool2d_nhwc": lambda n, xs: k_qadaptive(n, xs, True),
                  "to_nhwc": lambda n, xs: to_nhwc(xs[0]), "to_nchw": lambda n, xs: to_nchw(xs[0])})
    table.update(prepare_precision_kernels(graph, tgt))   # float16 and int4 layers (precision_ops.py)
    return KernelTable(table, nhwc_nodes)
