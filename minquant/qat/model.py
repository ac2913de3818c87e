"""Quantization-aware training on a quantized model's own graph: :class:`FakeQuantModel`.

A :class:`~minquant.quantized.model.QuantizedModel` made by :func:`minquant.quantize_static` (BN folded, ReLU /
ReLU6 fused into the output clamp, activations calibrated) is mirrored op for op in torch, every uint8 value
replaced by its fake-quantized float (:func:`.fake_quant.fake_quantize`)::

    quantize  x → x̂ = FQ(x; s_x, z_x)                    (rule of the target: x·(1/s) or x/s)
    qconv2d   x̂ → FQ(act(conv(x̂, FQ_w(W; s_w)) + b); s_y, z_y)        (qlinear alike)
    qadd      â, b̂ → FQ(act(â + b̂); s_y, z_y)      qcat → FQ(cat(...); s_y, z_y)
    pools     max: max of x̂ (max commutes with the affine map); average: FQ(avg(x̂); s_x, z_x)
    qclamp, qflatten, qreshape, dequantize: the same op on x̂ (the values stay on the grid)

with ``act`` the fused activation as a clip on floats — ReLU ``max(y, 0)``, ReLU6 ``min(max(y, 0), 6)``,
equalization's per-channel ReLU6 ``min(max(y, 0), hi_c)`` — which is the integer model's clamp on codes:
rounding is monotone, so ``rne(min(y, h)/s) + z = min(rne(y/s) + z, rne(h/s) + z)``. The learnable parameters
are the latent float weights ``W`` (initialised from the rounding's :meth:`latent_weight`), the biases, every
weight scale (per output channel) and every activation scale — LSQ (:mod:`.fake_quant`); zero points stay fixed.
``forward(x, quantized=False)`` runs the same graph in float with the float layers' weights and biases (the
folded, equalized float model).

:meth:`FakeQuantModel.to_quantized` writes the trained values back into a copy of the graph: weight codes
``clamp(rne(W · f32(1/s_w)))`` — exactly the codes the training forward used — every attribute that holds a
learned scale (x/y qparams, clamps, ReLU6's top code), the biases. **What the integer model computes vs what
training saw**: the input codes and the weight codes are identical; each layer's output codes, *given the
same input codes*, differ by at most one code, and only where the real value ``y/s_y`` lies within float32
rounding of a half-way point — training evaluates ``conv(x̂, ŵ) + b`` in float32 (its own summation order),
the kernel sums integers exactly and requantizes with the target's float steps (docs/quantization.md,
step 7). Average pools round a mean of codes the same way. With int4 or 7-bit weights no int16 pair can
saturate, so no larger difference exists (tests/test_qat_model.py measures both).

**Exact forward** (``exact=True``, the default): the differences above are removed. Each forward first
converts the model as it stands (:meth:`to_quantized`) and runs the integer model on the batch
(:meth:`integer_codes`: every node's raw output codes, the integer kernels' own arithmetic); the torch graph
then runs as described, but every fake quantization returns the integer model's codes ``(q_int − z)·s``
(``fake_quantize(..., codes=)``) with its STE / LSQ backward evaluated at the float value ``y``, and every
other node's value is replaced by the integer model's (identity gradient). So the forward *is* the converted
model, bit for bit — logits included — and the gradient is the fake-quant one: nothing is lost at conversion
(tests/test_qat_exact.py, on TinyCNN and MobileNetV2). The cost is one integer run per step.
``exact=False`` is the plain float32 forward (AdaRound and block reconstruction read layer inputs with it).

**int4 per group** (``w4a8_conv2d`` / ``w4a8_linear``, the precision ladder's W4A8 g32 model from
``quantize_precision(..., weight_rounding=)``): the layer's rows ((kh, kw, c) order, :mod:`minquant.kernels.int4_conv`)
are fake-quantized per group, ``ŵ = s_g · clamp(rne(W / s_g), −8, 7)`` (divide: the rule of
``quantize_int4_rows``), with ``s_g`` the learned float32 scale *rounded to float16* in the forward (gradient
straight through) — the converted model stores float16 scales, so the codes and the dequantized weights the
W4A8 kernels use are, bit for bit, the ones training used (tests/test_qat_groups.py). The kernel then sums
integers per group and combines the groups in float32 (:mod:`minquant.kernels.w4a8`); training sums floats:
the same one-code-at-a-tie difference as above.

This module imports torch: it is not part of the numpy-only core.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..affine import quantize
from ..graph import Graph, Node
from ..quantized.model import QuantizedModel
from .fake_quant import fake_quantize, lsq_grad_factor
from ..kernels.int4_conv import conv_weight_rows, pack_int4_rows, unpack_int4_rows, rows_to_conv_weight
from .weights import GROUP_WEIGHT_RULE, WEIGHT_RULE, round_codes, round_nearest, scale_like

__all__ = ["FakeQuantModel"]


class _Replace(torch.autograd.Function):
    """``_Replace.apply(y, value)``: returns ``value`` (bit for bit), passes the gradient to ``y`` unchanged."""

    @staticmethod
    def forward(ctx, y, value):
        return value.to(y.dtype).reshape(y.shape).clone()

    @staticmethod
    def backward(ctx, dy):
        return dy, None

_SUPPORTED = ("quantize", "dequantize", "qconv2d", "qlinear", "w4a8_conv2d", "w4a8_linear", "qadd", "qcat",
              "qmax_pool2d", "qavg_pool2d", "qadaptive_avg_pool2d", "qclamp", "qflatten", "qreshape")
_LAYERS = ("qconv2d", "qlinear", "w4a8_conv2d", "w4a8_linear")
_CONVS = ("qconv2d", "w4a8_conv2d")
_FQ_OPS = ("quantize", *_LAYERS, "qadd", "qcat", "qavg_pool2d", "qadaptive_avg_pool2d")   # end in fake_quantize
_FP16_TINY = 2.0 ** -24          # float16's smallest positive number: the least a stored int4 group scale can be
_MIN_SCALE = 1e-12


class FakeQuantModel(nn.Module):
    """``FakeQuantModel(qm, rounding)``: ``qm`` a QuantizedModel from ``quantize_static(...,
    weight_rounding=rounding)``, ``rounding`` that weight rounding (:class:`~minquant.qat.weights.NearestWeights`
    or :class:`~minquant.qat.adaptive_rounding.AdaRoundWeights`), which recorded each layer's float weights, code type
    and scale. Raises ValueError for ops it has no fake-quant form of (float fallbacks, qmul, hardswish...)."""

    def __init__(self, qm: QuantizedModel, rounding, *, exact: bool = True):
        super().__init__()
        if not isinstance(qm, QuantizedModel):
            raise TypeError(f"FakeQuantModel needs a QuantizedModel, got {type(qm).__name__}")
        bad = sorted({n.op for n in qm.graph.nodes if n.op not in _SUPPORTED})
        if bad:
            raise ValueError(f"FakeQuantModel has no fake-quantized form of op(s) {bad}; it trains models made of "
                             f"{_SUPPORTED}")
        if getattr(qm.target.linear(), "litert", None) is not None:
            raise ValueError(f"FakeQuantModel does not train LiteRT targets ({qm.target}): LiteRT rounds half away "
                             "from zero when it quantizes and computes ReLU6's top code its own way")
        if len(qm.graph.inputs) != 1 or len(qm.graph.outputs) != 1:
            raise ValueError("FakeQuantModel trains one-input, one-output models")
        self.qm = qm
        self.exact = bool(exact)
        self.rule = qm.target.quantize_rule
        self.scales = nn.ParameterDict()          # activation scale per value with its own qparams
        self.zero_points: dict[str, int] = {}
        self.key: dict[str, str] = {}             # graph value → key of its qparams in self.scales
        self.weights, self.w_scales, self.biases = nn.ParameterDict(), nn.ParameterDict(), nn.ParameterDict()
        self.layer: dict[str, dict] = {}          # layer name → its fixed facts (key, qtype, float weight...)
        for n in qm.graph.nodes:
            self._add(n, rounding)

    # -- building --------------------------------------------------------------------------------------
    def _own_qparams(self, name, s, z):
        k = f"v{len(self.zero_points)}"
        self.scales[k] = nn.Parameter(torch.tensor([float(s)], dtype=torch.float32))
        self.zero_points[k] = int(z)
        self.key[name] = k

    def _add(self, n: Node, rounding):
        a = n.attrs
        if n.op == "quantize":
            self._own_qparams(n.name, a.scale, a.zero_point)
        elif n.op in _LAYERS:
            if n.name not in rounding.layers:
                raise ValueError(f"the weight rounding has no record of layer {n.name!r}: give FakeQuantModel the "
                                 "rounding the model was quantized with")
            rec = rounding.layers[n.name]
            grouped = n.op.startswith("w4a8")
            if grouped:
                if "w_zp" in n.params or not a.symmetric:
                    raise ValueError(f"layer {n.name!r}: FakeQuantModel needs symmetric int4 groups (no zero points)")
                k_row = int(np.prod(a.weight_shape[1:]))
                rows = unpack_int4_rows(n.params["weight_packed"], k_row, signed=True)
                codes = rows_to_conv_weight(rows, a.weight_shape) if n.op == "w4a8_conv2d" else rows
                if rec.get("group_size") != a.group_size:
                    raise ValueError(f"layer {n.name!r}: the rounding's record is not per group of {a.group_size}")
            else:
                codes = n.params["weight"]
                if np.any(n.params["w_zp"] != 0):
                    raise ValueError(f"layer {n.name!r}: FakeQuantModel needs symmetric weights (zero point 0)")
            if not np.array_equal(rec["codes"], codes):
                raise ValueError(f"layer {n.name!r}: the model's weight codes are not the rounding's — was it "
                                 "quantized with this weight_rounding?")
            self._own_qparams(n.name, a.y_scale, a.y_zp)
            k = self.key[n.name]
            self.weights[k] = nn.Parameter(torch.from_numpy(np.array(rounding.latent_weight(n.name), np.float32)))
            self.w_scales[k] = nn.Parameter(torch.from_numpy(np.array(n.params["w_scale"], np.float32)))
            b = n.params.get("bias")
            b = np.zeros(codes.shape[0], np.float32) if b is None else np.array(b, np.float32)
            self.biases[k] = nn.Parameter(torch.from_numpy(b))
            hi = None
            if "clamp_hi" in n.params:       # per-channel ReLU6 after equalization: its top as a float clip
                hi = torch.from_numpy(((n.params["clamp_hi"].astype(np.float32) - np.float32(a.y_zp))
                                       * np.float32(a.y_scale)).astype(np.float32))
            fb = rec["bias"]
            self.layer[n.name] = dict(qtype=rec["qtype"], hi=hi, float_weight=torch.from_numpy(rec["weight"]),
                                      float_bias=None if fb is None else torch.from_numpy(fb),
                                      group_size=a.group_size if grouped else None)
        elif n.op in ("qadd", "qcat"):
            self._own_qparams(n.name, a.y_scale, a.y_zp)
        elif n.op in ("qavg_pool2d", "qadaptive_avg_pool2d") and a.y_scale is not None:
            raise ValueError(f"{n.name!r}: an average pool with its own output qparams (ONNX) is not supported")
        elif n.op == "qclamp" and a.activation not in ("relu", "relu6"):
            raise ValueError(f"{n.name!r}: qclamp {a.activation!r} is not a ReLU / ReLU6")
        elif n.op != "dequantize":
            self.key[n.name] = self.key[n.inputs[0]]      # pools, clamp, flatten, reshape keep their input's

    # -- running ---------------------------------------------------------------------------------------
    def scale(self, key) -> torch.Tensor:
        """An activation scale as used (kept ≥ 1e-12 so that a step of SGD cannot make it ≤ 0)."""
        return self.scales[key].clamp_min(_MIN_SCALE)

    def _fq(self, x, key, codes=None):
        z = self.zero_points[key]
        return fake_quantize(x, self.scale(key), torch.tensor([float(z)]), 0, 255, rule=self.rule,
                             grad_factor=lsq_grad_factor(max(x.numel(), 1), 255),
                             codes=None if codes is None else torch.from_numpy(codes))

    def group_scale(self, name) -> torch.Tensor:
        """An int4 layer's (O, G) group scales as used: rounded to float16 (the W4A8 kernels store float16),
        with the gradient passed straight through the rounding."""
        s = self.w_scales[self.key[name]].clamp_min(_FP16_TINY)
        return s + (s.to(torch.float16).to(torch.float32).clamp_min(_FP16_TINY) - s).detach()

    def _weight(self, name):
        k = self.key[name]
        qt, gs = self.layer[name]["qtype"], self.layer[name]["group_size"]
        if gs is not None:         # per group of the (kh, kw, c) rows: fake-quantize (O·G, gs) along axis 0
            w, s = self.weights[k], self.group_scale(name)
            rows = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1) if w.dim() == 4 else w
            fq = fake_quantize(rows.reshape(-1, gs), s.reshape(-1), torch.zeros(s.numel()), qt.qmin, qt.qmax,
                               axis=0, rule=GROUP_WEIGHT_RULE, grad_factor=lsq_grad_factor(gs, qt.qmax)).reshape(rows.shape)
            if w.dim() == 4:
                o, cg, kh, kw = w.shape
                return fq.reshape(o, kh, kw, cg).permute(0, 3, 1, 2)
            return fq
        w, s = self.weights[k], self.w_scales[k].clamp_min(_MIN_SCALE)
        axis = 0 if s.numel() > 1 else None
        n_per = w.numel() // s.numel()
        return fake_quantize(w, s, torch.zeros(s.numel()), qt.qmin, qt.qmax, axis=axis, rule=WEIGHT_RULE,
                             grad_factor=lsq_grad_factor(n_per, qt.qmax))

    @staticmethod
    def _activation(y, act, hi):
        if act in ("relu", "relu6", "relu_clip"):
            y = torch.relu(y)
        if act == "relu6":
            y = y.clamp_max(6.0)
        if hi is not None:
            y = torch.minimum(y, hi.reshape((1, -1) + (1,) * (y.dim() - 2)))
        return y

    def forward(self, x: torch.Tensor, *, quantized: bool = True, hook=None, exact: bool | None = None) -> torch.Tensor:
        """Logits of the fake-quantized model (``quantized=False``: of the float model it stands for).
        ``hook(name, value)`` is called after every node (AdaRound reads layer inputs with it). ``exact``
        (default: the model's :attr:`exact`): every value is the converted integer model's, bit for bit
        (module docstring, "Exact forward")."""
        g = self.qm.graph
        exact = self.exact if exact is None else exact
        raw = None
        if quantized and exact:
            _, raw = self.integer_codes(x)
        env = {g.inputs[0]: x}
        for n in g.nodes:
            env[n.name] = y = self.node_output(n, [env[v] for v in n.inputs], quantized=quantized,
                                               codes=None if raw is None else raw[n.name])
            if hook is not None:
                hook(n.name, y)
        return env[g.outputs[0]]

    def integer_codes(self, x) -> tuple[QuantizedModel, dict]:
        """(the model as converted now, ``{value: its raw output on x}``: uint8 codes, or the float logits)."""
        with torch.no_grad():
            qm = self.to_quantized()
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
        _, raw = qm.run(np.ascontiguousarray(x, np.float32), intermediates=True, raw=True)
        return qm, raw

    def node_output(self, n: Node, ins: list, *, quantized: bool = True, weight=None, codes=None) -> torch.Tensor:
        """One node of the graph on its (fake-quantized) float inputs (module docstring). ``weight``: a layer's
        weights to use instead of its fake-quantized ones (block reconstruction passes its soft rounding).
        ``codes``: the integer model's output of this node (its uint8 codes, or float for ``dequantize``) —
        the value returned is then that, exactly, with this node's gradients (the exact forward)."""
        y = self._node_output(n, ins, quantized, weight, codes)
        if codes is None or n.op in _FQ_OPS:
            return y
        if codes.dtype == np.uint8:
            k = self.key[n.name]
            value = (torch.from_numpy(codes.astype(np.float32)) - float(self.zero_points[k])) * self.scale(k).detach()
        else:
            value = torch.from_numpy(np.asarray(codes, np.float32))
        return _Replace.apply(y, value)

    def _node_output(self, n, ins, quantized, weight, codes):
        a, xin = n.attrs, ins[0]
        if n.op == "quantize":
            return self._fq(xin, self.key[n.name], codes) if quantized else xin
        if n.op in _LAYERS:
            k, lay = self.key[n.name], self.layer[n.name]
            w, b = (self._weight(n.name), self.biases[k]) if quantized else (lay["float_weight"], lay["float_bias"])
            if weight is not None:
                w = weight
            if n.op in _CONVS:
                y = F.conv2d(xin, w, b, a.stride, a.padding, a.dilation, a.groups)
            else:
                y = F.linear(xin, w, b)
            y = self._activation(y, a.activation, lay["hi"])
            return self._fq(y, k, codes) if quantized else y
        if n.op == "qadd":
            y = ins[0] + ins[1]
            y = torch.relu(y) if a.relu else y
            return self._fq(y, self.key[n.name], codes) if quantized else y
        if n.op == "qcat":
            y = torch.cat(ins, dim=a.dim)
            return self._fq(y, self.key[n.name], codes) if quantized else y
        if n.op == "qmax_pool2d":
            return F.max_pool2d(xin, a.kernel_size, a.stride, a.padding, a.dilation, a.ceil_mode)
        if n.op in ("qavg_pool2d", "qadaptive_avg_pool2d"):
            y = (F.avg_pool2d(xin, a.kernel_size, a.stride, a.padding, a.ceil_mode, a.count_include_pad,
                              a.divisor_override) if n.op == "qavg_pool2d" else F.adaptive_avg_pool2d(xin, a.output_size))
            return self._fq(y, self.key[n.name], codes) if quantized else y
        if n.op == "qclamp":
            return self._activation(xin, a.activation, None)
        if n.op == "qflatten":
            return torch.flatten(xin, a.start_dim, a.end_dim)
        if n.op == "qreshape":
            return xin.reshape((xin.shape[0],) + tuple(a.shape))
        return xin   # dequantize

    # -- converting ------------------------------------------------------------------------------------
    def qparams(self, value: str) -> tuple[float, int]:
        """(scale as the float32 the model uses, zero point) of a graph value."""
        k = self.key[value]
        return float(self.scale(k).detach().numpy()[0]), self.zero_points[k]

    def weight_codes(self, name: str):
        """(codes int8 in the weight's shape, scale) of a layer — what the forward used:
        ``clamp(rne(W · f32(1/s_w)))`` per channel (scale float32), ``clamp(rne(W / s_w))`` per group (scale
        (O, G) float16)."""
        k = self.key[name]
        w = self.weights[k].detach().numpy()
        gs = self.layer[name]["group_size"]
        if gs is not None:
            s16 = self.group_scale(name).detach().to(torch.float16).numpy()
            return round_codes(w, scale_like(s16.astype(np.float32), w.shape, gs), self.layer[name]["qtype"],
                               GROUP_WEIGHT_RULE), s16
        s = self.w_scales[k].detach().clamp_min(_MIN_SCALE).numpy().astype(np.float32)
        return round_nearest(w, s, self.layer[name]["qtype"]), s

    def to_quantized(self) -> QuantizedModel:
        """A copy of the QuantizedModel with the trained weights, biases and scales (module docstring)."""
        g = self.qm.graph
        nodes = []
        for n in g.nodes:
            a, params = n.attrs, {k: v.copy() for k, v in n.params.items()}
            if n.op == "quantize":
                a = dataclasses.replace(a, scale=self.qparams(n.name)[0])
            elif n.op == "dequantize":
                a = dataclasses.replace(a, scale=self.qparams(n.inputs[0])[0])
            elif n.op in _LAYERS:
                (xs, xz), (ys, yz) = self.qparams(n.inputs[0]), self.qparams(n.name)
                top = 255
                if a.activation == "relu6":
                    top = int(quantize(np.float32(6.0), ys, yz, "uint8", target=self.rule))
                a = dataclasses.replace(a, x_scale=xs, x_zp=xz, y_scale=ys, y_zp=yz,
                                        clamp=(0, 255) if not a.activation else (yz, top))
                q, params["w_scale"] = self.weight_codes(n.name)
                if n.op.startswith("w4a8"):
                    params["weight_packed"] = pack_int4_rows(conv_weight_rows(q) if q.ndim == 4 else q)
                else:
                    params["weight"] = q
                params["bias"] = self.biases[self.key[n.name]].detach().numpy().astype(np.float32).copy()
                hi = self.layer[n.name]["hi"]
                if hi is not None:
                    params["clamp_hi"] = quantize(hi.numpy(), ys, yz, "uint8", target=self.rule)
            elif n.op == "qadd":
                (sa, za), (sb, zb), (ys, yz) = (self.qparams(v) for v in (*n.inputs, n.name))
                a = dataclasses.replace(a, a_scale=sa, a_zp=za, b_scale=sb, b_zp=zb, y_scale=ys, y_zp=yz)
            elif n.op == "qcat":
                ins = [self.qparams(v) for v in n.inputs]
                ys, yz = self.qparams(n.name)
                a = dataclasses.replace(a, in_scales=tuple(s for s, _ in ins), in_zps=tuple(z for _, z in ins),
                                        y_scale=ys, y_zp=yz)
            elif n.op in ("qavg_pool2d", "qadaptive_avg_pool2d"):
                xs, xz = self.qparams(n.inputs[0])
                a = dataclasses.replace(a, x_scale=xs, x_zp=xz)
            elif n.op == "qclamp":
                s, z = self.qparams(n.inputs[0])
                top = int(quantize(np.float32(6.0), s, z, "uint8", target=self.rule)) if a.activation == "relu6" else 255
                a = dataclasses.replace(a, lo=z, hi=top)
            nodes.append(Node(n.name, n.op, list(n.inputs), a, params, n.shape, n.source))
        graph = Graph(list(g.inputs), nodes, list(g.outputs), dict(g.input_shapes), g.name)
        meta = dict(self.qm.meta, quantization_aware_training=True)
        return QuantizedModel(graph, self.qm.target, float_names=self.qm.float_names, meta=meta,
                              channel_scales=self.qm.channel_scales)
