"""Kernels for what Inductor makes of a torchao pt2e graph that eager torch has no op for (target
``x86-inductor``, :mod:`minquant.target`): a convolution with the residual add fused into it, a linear
layer with a float output, and an average pool computed in float32 between dequantize and quantize.

``qconv2d_add`` — ``onednn.qconv2d_pointwise.binary(..., "sum")``: the residual's codes are added to the
convolution's float value before the output scale (oneDNN's ``sum`` post-op; the arithmetic is
:func:`~minquant.kernels.requantize.onednn_sum_requantize_reference`), so no code is rounded between the
conv and the add:

    v  = f32(f32(f32(acc)·a_x)·a_w[n]) + b[n]        (or f32(acc)·f32(a_x·a_w[n]) + b[n] on AMX)
    v' = fma(f32(r − z_r), f32(s_r), v)              r: residual codes (s_r, z_r)
    y  = clamp(rne(f32(f32(v'·m_y) + z_y)))          (a ReLU after the add: the lower clamp at z_y)

``qlinear_float`` — ``onednn.qlinear_pointwise(..., output_dtype=float32)``: ``v`` itself is the output.
oneDNN's matmul picks its AMX kernel (scales multiplied first) by problem size:
:func:`~minquant.target.onednn_matmul_combines`, decided per call from the batch — for a uint8-output
``qlinear`` too (:class:`QLinearInductor`, minquant's fast QLinear in both orders).

``adaptive_avg_pool_inductor`` — Inductor's C++ for ``dequantize → adaptive_avg_pool2d / mean → quantize``:

    r = f32(f32(q − z_x)·s_x);   S = ((r_0 + r_1) + r_2) + …  (float32, the window in row-major order)
    y = clamp(rne(f32(f32(S / count)·f32(1/s_y))) + z_y)

Both weight kernels compute the exact int32 accumulator as a float64 product (|acc| < 2^53) on im2col
rows; they are readable NumPy, not the fast fused kernels of :mod:`minquant.kernels` (a pt2e model has
one or two such layers per residual block). This module imports NumPy and minquant's kernels only.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..float_ops import adaptive_pool_bounds
from ..im2col import conv_out_size, im2col_reference
from ..kernels.conv import conv_arithmetic
from ..kernels.requantize import onednn_sum_requantize_reference, onednn_value_reference, output_stage
from ..target import as_target, onednn_matmul_combines

__all__ = ["QConv2dAdd", "QLinearFloat", "QLinearInductor", "adaptive_avg_pool_inductor"]

_F32 = np.float32


def _acc_rows(x_nhwc, w_q, x_zp, kh, kw, stride, padding, dilation, groups):
    """Exact accumulators (N·OH·OW, C_out) = Σ (x − z_x)·w over im2col rows, per group, in float64."""
    c_out, cg = w_q.shape[:2]
    og = c_out // groups
    out = []
    for g in range(groups):
        cols = im2col_reference(x_nhwc[..., g * cg:(g + 1) * cg], kh, kw, stride, padding, dilation,
                                pad_value=x_zp).astype(np.float64) - x_zp
        wg = w_q[g * og:(g + 1) * og].transpose(0, 2, 3, 1).reshape(og, -1).astype(np.float64)   # (kh, kw, c)
        out.append(cols @ wg.T)
    return np.concatenate(out, axis=1)


class QConv2dAdd:
    """A ``qconv2d_add`` node ready to run (module docstring): ``layer(x_q, r_q)`` → uint8 NCHW codes."""

    def __init__(self, node, target):
        a = node.attrs
        self.a = a
        self.w = node.params["weight"]
        ws = node.params["w_scale"] if a.per_channel else node.params["w_scale"][0]
        self.arith = conv_arithmetic(target, self.w.shape, node.params["w_zp"], a.groups, a.stride, a.padding,
                                     a.dilation)
        if not self.arith.multiplier.startswith("onednn"):
            raise ValueError(f"a conv with a fused residual add is oneDNN's (target 'x86-inductor'), not "
                             f"{self.arith.name}'s")
        self.stage = output_stage(self.w.shape[0], a.x_scale, ws, node.params.get("bias"), a.y_scale, a.y_zp,
                                  clamp=a.clamp, target=self.arith)

    def __call__(self, x_q, r_q):
        a, w = self.a, self.w
        n, _, h, wd = x_q.shape
        c_out, _, kh, kw = w.shape
        oh = conv_out_size(h, kh, a.stride[0], a.padding[0], a.dilation[0])
        ow = conv_out_size(wd, kw, a.stride[1], a.padding[1], a.dilation[1])
        if r_q.shape != (n, c_out, oh, ow):
            raise ValueError(f"residual of shape {r_q.shape} does not match the conv output {(n, c_out, oh, ow)}")
        acc = _acc_rows(x_q.transpose(0, 2, 3, 1), w, a.x_zp, kh, kw, a.stride, a.padding, a.dilation, a.groups)
        r_rows = r_q.transpose(0, 2, 3, 1).reshape(-1, c_out)
        y = onednn_sum_requantize_reference(acc, self.stage, r_rows, a.accum_scale, a.accum_zp)
        return np.ascontiguousarray(y.reshape(n, oh, ow, c_out).transpose(0, 3, 1, 2))


class QLinearFloat:
    """A ``qlinear_float`` node ready to run: ``layer(x_q)`` (…, in) uint8 → (…, out) float32."""

    def __init__(self, node, target):
        a = node.attrs
        tgt = as_target(target)
        self.cpu = tgt.cpu
        self.x_zp = a.x_zp
        self.w = node.params["weight"].astype(np.float64)
        if np.any(node.params["w_zp"]):
            raise ValueError("oneDNN's matmul takes symmetric weights (zero points 0)")
        ws = node.params["w_scale"] if a.per_channel else node.params["w_scale"][0]
        ar = tgt.linear()
        if ar.multiplier != "onednn_direct":
            raise ValueError(f"a linear layer with a float output is oneDNN's as Inductor calls it (target "
                             f"'x86-inductor'), not {tgt}")
        n_out = self.w.shape[0]
        stages = {}
        for combined in (False, True):
            mult = ar.multiplier + ("_amx" if combined else "")
            stages[combined] = output_stage(n_out, a.x_scale, ws, node.params.get("bias"), 1.0, 0,
                                            target=dataclasses.replace(ar, multiplier=mult))
        self.stages = stages

    def __call__(self, x_q):
        rows = x_q.reshape(-1, x_q.shape[-1])
        acc = (rows.astype(np.float64) - self.x_zp) @ self.w.T
        st = self.stages[onednn_matmul_combines(self.cpu, rows.shape[0], self.w.shape[0], self.w.shape[1])]
        return onednn_value_reference(acc, st).reshape(x_q.shape[:-1] + (self.w.shape[0],))


class QLinearInductor:
    """A uint8-output ``qlinear`` under ``x86-inductor``: two prepared :class:`~minquant.kernels.QLinear` (oneDNN's
    VNNI and AMX orders of the scales), the one oneDNN's matmul takes chosen per call from the number of rows
    (:func:`~minquant.target.onednn_matmul_combines`)."""

    def __init__(self, node, target):
        from ..kernels import QLinear

        a = node.attrs
        tgt = as_target(target)
        self.cpu = tgt.cpu
        ar = tgt.linear()
        ws = node.params["w_scale"] if a.per_channel else node.params["w_scale"][0]
        wz = node.params["w_zp"].astype(np.int64) if a.per_channel else int(node.params["w_zp"][0])
        self.n_out, self.k = node.params["weight"].shape
        self.layers = {c: QLinear(node.params["weight"], ws, wz, node.params.get("bias"), a.x_scale, a.x_zp,
                                  a.y_scale, a.y_zp, clamp=a.clamp, clamp_hi=node.params.get("clamp_hi"),
                                  target=dataclasses.replace(ar, multiplier=ar.multiplier + ("_amx" if c else "")))
                       for c in (False, True)}

    def __call__(self, x_q):
        return self.layers[onednn_matmul_combines(self.cpu, x_q.shape[0], self.n_out, self.k)](x_q)


def adaptive_avg_pool_inductor(x_q, output_size, x_scale, x_zp, y_scale, y_zp) -> np.ndarray:
    """Inductor's float32 adaptive average pool on codes (module docstring): uint8 NCHW → uint8."""
    n, c, h, w = x_q.shape
    oh, ow = output_size
    r = ((x_q.astype(np.int64) - int(x_zp)).astype(_F32) * _F32(x_scale)).astype(_F32)
    inv = _F32(1.0 / float(y_scale))          # Inductor folds 1/s in Python (float64), then casts
    out = np.empty((n, c, oh, ow), np.uint8)
    for i, (h0, h1) in enumerate(adaptive_pool_bounds(h, oh)):
        for j, (w0, w1) in enumerate(adaptive_pool_bounds(w, ow)):
            s = np.zeros((n, c), _F32)
            for y in range(h0, h1):
                for xx in range(w0, w1):
                    s = (s + r[:, :, y, xx]).astype(_F32)
            m = (s / _F32((h1 - h0) * (w1 - w0))).astype(_F32)
            out[:, :, i, j] = np.clip(np.rint((m * inv).astype(_F32)) + _F32(y_zp), 0, 255).astype(np.uint8)
    return out
