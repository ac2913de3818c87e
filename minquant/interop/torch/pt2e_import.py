"""Import a torchao pt2e model (the Q/DQ graph of ``convert_pt2e``) and run it on minquant's kernels as
Inductor runs it after ``torch.compile`` (target ``x86-inductor``, :mod:`minquant.target`).

    ep = torch.export.export(model, (x,), strict=True)               # strict: ResNet's shared ReLU modules
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(ep.module(), quantizer)                    # torchao.quantization.pt2e
    ...calibrate prepared...                 (minquant.frameworks.torch_pt2e.pt2e_ptq does these steps)
    converted = convert_pt2e(prepared)
    qm = minquant.from_torch_pt2e(converted)                          # or the ExportedProgram of it
    torch._inductor.config.freezing = True
    assert np.array_equal(qm(x), torch.compile(converted)(torch.from_numpy(x)).numpy())   # bit for bit

The converted graph is ATen-level: ``quantized_decomposed.quantize_per_tensor`` (float → uint8) and
``dequantize_per_tensor`` / ``dequantize_per_channel`` around float ops. Executed by torch as it stands it is
a *reference*: every op between a DQ and a Q runs in float32. Inductor instead matches the patterns
DQ → conv / linear (→ ReLU / hardtanh) (→ add DQ (→ ReLU)) → Q and lowers each to one oneDNN int8 call;
what is left (pools, flatten, dropout, re-quantizations) it compiles to float32 C++. This importer makes
the same groups, each one node of minquant's quantized vocabulary (:mod:`minquant.quantized.ops`):

=====================================================  ==================================================
pt2e pattern (between the DQ of the input and the Q)   node (arithmetic under ``x86-inductor``)
=====================================================  ==================================================
Q of the graph input                                   ``quantize`` (× f32(1/s), Inductor's rule)
conv2d [relu | hardtanh(0, h)]                         ``qconv2d`` (oneDNN, scales handed directly; the
                                                       activation is the clamp on codes)
conv2d + add(DQ r) [relu]                              ``qconv2d_add`` (oneDNN's ``sum`` post-op)
linear [relu] → Q  /  linear → graph output            ``qlinear``  /  ``qlinear_float``
adaptive_avg_pool2d, mean over H, W                    ``qadaptive_avg_pool2d`` (Inductor's float32 sum)
max_pool2d                                             ``qmax_pool2d`` (on codes)
flatten, view, reshape, dropout (eval), clone          ``qflatten`` / ``qreshape`` / nothing
a DQ → Q with other qparams                            ``dequantize`` + ``quantize``
=====================================================  ==================================================

Not imported (ValueError): an add that is not fused into a conv, cat, mul, hardswish, avg_pool2d, any op
on float values outside these groups.

A ReLU / hardtanh(0, h) before the Q is a clamp of codes — exact, since every float32 step of the output
stage is monotone: the top code is ``rne(f32(f32(h·m_y) + z_y))`` as oneDNN rounds it. Anything else raises
ValueError naming the op and its place (module path from the export's ``nn_module_stack``). Each node's
``source`` names the fx node of its Q; ``meta["pt2e_codes"]`` maps minquant values to those Q nodes (for
the per-layer comparison with the reference graph, :func:`minquant.frameworks.torch_pt2e.reference_run`).

This module imports torch.
"""
from __future__ import annotations

import operator

import numpy as np

from ...graph import FlattenAttrs, Graph, MaxPool2dAttrs, Node, ReshapeAttrs, unique_name
from ...quantized import ops
from ...quantized.model import QuantizedModel
from ...target import Target

__all__ = ["from_torch_pt2e"]


def _qd():
    import torch
    return torch.ops.quantized_decomposed


class _Codes:
    """A uint8 value of the minquant graph (after a Q): its name and qparams."""
    def __init__(self, name, scale, zp):
        self.name, self.scale, self.zp = name, float(scale), int(zp)


class _Pending:
    """A float expression between DQ and Q that Inductor fuses: ``kind`` + what the node needs."""
    def __init__(self, kind, fxn, **kw):
        self.kind, self.fxn, self.kw = kind, fxn, kw
        self.act = None            # ("relu",) or ("hardtanh", lo, hi)


class _Builder:
    def __init__(self, gm, name):
        self.gm, self.name = gm, name
        self.nodes: list[Node] = []
        self.used: set[str] = set()
        self.inputs, self.input_shapes, self.outputs = [], {}, []
        self.env: dict = {}         # fx node → ("float", value) | _Codes | ("dq", _Codes) | ("w", ...) | _Pending | const
        self.pt2e_codes: dict[str, str] = {}

    # -- helpers ------------------------------------------------------------------------------------------
    def where(self, fxn) -> str:
        stack = fxn.meta.get("nn_module_stack") or {}
        inside = f" in module '{list(stack.values())[-1][0]}'" if stack else ""
        return f"fx node '{fxn.name}'{inside}"

    def fail(self, fxn, problem):
        raise ValueError(f"cannot import {self.name}'s pt2e graph at {self.where(fxn)}: {problem}")

    def shape(self, fxn):
        meta = fxn.meta.get("tensor_meta")
        if meta is None:
            self.fail(fxn, "no shape recorded (not a tensor)")
        return tuple(int(d) for d in meta.shape)

    def base_name(self, fxn):
        stack = fxn.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        return path or fxn.name

    def emit(self, fxn, op, inputs, attrs=None, params=None, *, source=None, base=None) -> str:
        name = unique_name(base or self.base_name(fxn), self.used, "@")
        self.used.add(name)
        params = {k: v for k, v in (params or {}).items() if v is not None}
        self.nodes.append(Node(name, op, inputs, attrs, params, shape=self.shape(fxn),
                               source=source or f"fx node {fxn.name}"))
        return name

    def codes_in(self, arg, fxn) -> _Codes:
        """The codes a DQ input ``arg`` reads (fails for anything else)."""
        v = self.env.get(arg)
        if isinstance(v, tuple) and v[0] == "dq":
            return v[1]
        self.fail(fxn, f"operand {getattr(arg, 'name', arg)!r} is not a dequantized uint8 tensor "
                       "(X86InductorQuantizer quantizes the inputs of the ops minquant imports)")

    def const(self, fxn):
        import torch
        if fxn.op != "get_attr":
            self.fail(fxn, "expected a constant (get_attr)")
        t = operator.attrgetter(fxn.target)(self.gm)
        return t.detach() if isinstance(t, torch.Tensor) else t

    # -- the walk -------------------------------------------------------------------------------------------
    def build(self) -> Graph:
        qd = _qd()
        handlers = {qd.quantize_per_tensor.default: self.h_quantize,
                    qd.dequantize_per_tensor.default: self.h_dequantize,
                    qd.dequantize_per_channel.default: self.h_dequantize_channel}
        for name, h in _FLOAT_OPS.items():
            handlers[name] = getattr(self, h)
        for fxn in self.gm.graph.nodes:
            if fxn.op == "placeholder":
                name = unique_name(fxn.name, self.used, "@")
                self.used.add(name)
                self.inputs.append(name)
                self.input_shapes[name] = self.shape(fxn)
                self.env[fxn] = ("float", name)
            elif fxn.op == "get_attr":
                self.env[fxn] = ("const", fxn)
            elif fxn.op == "call_module" and fxn.target.startswith("_guards"):
                continue
            elif fxn.op == "call_function":
                h = handlers.get(fxn.target)
                if h is None:
                    self.fail(fxn, f"unsupported op {fxn.target} (supported: {sorted(str(k) for k in handlers)})")
                h(fxn)
            elif fxn.op == "output":
                res = fxn.args[0]
                for r in (list(res) if isinstance(res, (tuple, list)) else [res]):
                    self.outputs.append(self.output_value(r, fxn))
            else:
                self.fail(fxn, f"unsupported fx node kind {fxn.op!r}")
        return Graph(self.inputs, self.nodes, self.outputs, self.input_shapes, name=self.name)

    # -- Q / DQ ---------------------------------------------------------------------------------------------
    def _check_u8(self, fxn):
        import torch
        qmin, qmax, dtype = fxn.args[3:6]
        if (qmin, qmax, dtype) != (0, 255, torch.uint8):
            self.fail(fxn, f"activations quantized to {dtype} [{qmin}, {qmax}]; minquant's are uint8 [0, 255]")

    def h_quantize(self, fxn):
        self._check_u8(fxn)
        src, s, z = fxn.args[0], float(fxn.args[1]), int(fxn.args[2])
        _check_inductor_reciprocal(self, fxn, s)
        v = self.env.get(src)
        if isinstance(v, tuple) and v[0] == "float":
            out = self.emit(fxn, "quantize", [v[1]], ops.QuantizeAttrs(s, z), base=fxn.name)
        elif isinstance(v, _Pending):
            out = self.lower(v, fxn, s, z)
        elif isinstance(v, tuple) and v[0] == "dq":      # DQ → Q: a re-quantization (or the same codes)
            out = self.lower(_Pending("move", src, x=v[1], steps=[]), fxn, s, z)
        else:
            self.fail(fxn, f"quantizes {getattr(src, 'name', src)!r}, which is not a float value minquant computes")
        self.env[fxn] = _Codes(out, s, z)
        self.pt2e_codes[out] = fxn.name

    def h_dequantize(self, fxn):
        src = fxn.args[0]
        v = self.env.get(src)
        if isinstance(v, tuple) and v[0] == "const":       # a per-tensor weight
            self.env[fxn] = ("w", self.const(src), np.array([fxn.args[1]], np.float32), np.array([fxn.args[2]]), False)
            return
        if not isinstance(v, _Codes):
            self.fail(fxn, "dequantizes something that is not the output of a quantize_per_tensor")
        self._check_u8(fxn)
        if (float(fxn.args[1]), int(fxn.args[2])) != (v.scale, v.zp):
            self.fail(fxn, "dequantizes with other qparams than its quantize")
        self.env[fxn] = ("dq", v)

    def h_dequantize_channel(self, fxn):
        import torch
        w, s, z, axis, qmin, qmax, dtype = fxn.args[:7]
        if axis != 0 or dtype != torch.int8:
            self.fail(fxn, f"per-channel weights along axis {axis} as {dtype}; minquant takes int8 along axis 0")
        self.env[fxn] = ("w", self.const(w), self.const(s), self.const(z), True)

    def weight(self, arg, fxn):
        v = self.env.get(arg)
        if not (isinstance(v, tuple) and v[0] == "w"):
            self.fail(fxn, "its weight is not a dequantized int8 constant")
        _, w, s, z, per_channel = v
        import torch
        if w.dtype != torch.int8:
            self.fail(fxn, f"weights are {w.dtype}; int8 only")
        s = np.asarray(s.numpy() if hasattr(s, "numpy") else s, np.float64)
        s32 = s.astype(np.float32)
        return {"weight": w.numpy().copy(), "w_scale": s32 if np.array_equal(s32, s) else s,
                "w_zp": np.asarray(z.numpy() if hasattr(z, "numpy") else z).astype(np.int8)}, per_channel

    def bias(self, arg, fxn):
        if arg is None:
            return None
        v = self.env.get(arg)
        if not (isinstance(v, tuple) and v[0] == "const"):
            self.fail(fxn, "its bias is not a constant")
        return self.const(arg).numpy().astype(np.float32, copy=True)

    # -- float ops (pending until their Q) ------------------------------------------------------------------
    def h_conv(self, fxn):
        a = list(fxn.args) + [None] * (7 - len(fxn.args))
        x, w, b = a[0], a[1], a[2]
        stride, padding, dilation = a[3] or [1, 1], a[4] or [0, 0], a[5] or [1, 1]
        groups = a[6] or 1
        if isinstance(padding, str):
            self.fail(fxn, f"padding={padding!r}; explicit padding only")
        params, per_channel = self.weight(w, fxn)
        params["bias"] = self.bias(b, fxn)
        self.env[fxn] = _Pending("conv", fxn, x=self.codes_in(x, fxn), params=params, per_channel=per_channel,
                                 geo=(tuple(stride), tuple(padding), tuple(dilation), int(groups)))

    def h_linear(self, fxn):
        x, w = fxn.args[0], fxn.args[1]
        b = fxn.args[2] if len(fxn.args) > 2 else None
        params, per_channel = self.weight(w, fxn)
        params["bias"] = self.bias(b, fxn)
        self.env[fxn] = _Pending("linear", fxn, x=self.codes_in(x, fxn), params=params, per_channel=per_channel)

    def h_act(self, fxn):
        p = self.env.get(fxn.args[0])
        if not isinstance(p, _Pending) or p.kind not in ("conv", "linear", "add") or p.act is not None:
            self.fail(fxn, f"{fxn.target} not directly after a conv, linear or conv + add (Inductor fuses "
                           "only those)")
        if "hardtanh" in str(fxn.target):
            lo, hi = float(fxn.args[1]), float(fxn.args[2])
            if lo != 0.0 or p.kind == "add":
                self.fail(fxn, f"hardtanh({lo}, {hi}); minquant imports hardtanh(0, h) after a conv or linear")
            p.act = ("hardtanh", lo, hi)
        else:
            p.act = ("relu",)
        self.env[fxn] = p

    def h_add(self, fxn):
        a, b = fxn.args[0], fxn.args[1]
        pa, pb = self.env.get(a), self.env.get(b)
        conv, other = (pa, b) if isinstance(pa, _Pending) else (pb, a)
        if not (isinstance(conv, _Pending) and conv.kind == "conv" and conv.act is None):
            self.fail(fxn, "an add that is not conv + residual (Inductor's fused pattern); unfused quantized adds "
                           "are not imported")
        if len(fxn.args) > 2 or fxn.kwargs.get("alpha", 1) != 1:
            self.fail(fxn, "add with alpha")
        self.env[fxn] = _Pending("add", fxn, conv=conv, r=self.codes_in(other, fxn))

    def h_pool(self, fxn):
        x = self.codes_in(fxn.args[0], fxn)
        if "mean" in str(fxn.target):
            dims = sorted(int(d) % 4 for d in fxn.args[1])
            keep = bool(fxn.args[2]) if len(fxn.args) > 2 else bool(fxn.kwargs.get("keepdim", False))
            if dims != [2, 3]:
                self.fail(fxn, f"mean over dims {fxn.args[1]}; only the spatial mean is imported")
            self.env[fxn] = _Pending("pool", fxn, x=x, size=(1, 1), flat=not keep)
        else:
            size = fxn.args[1]
            size = (size, size) if isinstance(size, int) else tuple(size)
            self.env[fxn] = _Pending("pool", fxn, x=x, size=size, flat=False)

    def h_maxpool(self, fxn):
        x = self.codes_in(fxn.args[0], fxn)
        a = list(fxn.args) + [None] * (6 - len(fxn.args))
        k = a[1]
        attrs = MaxPool2dAttrs(k, a[2] or k, a[3] or 0, a[4] or 1, bool(a[5]))
        self.env[fxn] = _Pending("move", fxn, x=x, steps=[("qmax_pool2d", attrs, fxn)])

    def h_move(self, fxn):
        """flatten / view / reshape / dropout (eval) / clone on a DQ: codes move, qparams stay."""
        src = fxn.args[0]
        v = self.env.get(src)
        if isinstance(v, tuple) and v[0] == "dq":
            base = _Pending("move", fxn, x=v[1], steps=[])
        elif isinstance(v, _Pending) and v.kind == "move":
            base = _Pending("move", fxn, x=v.kw["x"], steps=list(v.kw["steps"]))
        else:
            self.fail(fxn, f"{fxn.target} of a value that is not dequantized codes")
        t = str(fxn.target)
        if "dropout" in t:
            if (fxn.args[2] if len(fxn.args) > 2 else fxn.kwargs.get("train", False)):
                self.fail(fxn, "dropout in training mode")
        elif "clone" in t:
            pass
        elif "flatten" in t:
            start = int(fxn.args[1]) if len(fxn.args) > 1 else 0
            end = int(fxn.args[2]) if len(fxn.args) > 2 else -1
            if start % len(self.shape(src)) == 0:
                self.fail(fxn, "flatten over the batch dimension")
            base.kw["steps"].append(("qflatten", FlattenAttrs(start, end), fxn))
        else:   # view / reshape: the shape without the batch
            base.kw["steps"].append(("qreshape", ReshapeAttrs(self.shape(fxn)[1:]), fxn))
        self.env[fxn] = base

    # -- lowering a pending group at its Q -------------------------------------------------------------------
    def lower(self, p, qn, ys, yz) -> str:
        fxn = p.fxn
        if p.kind in ("conv", "linear"):
            x = p.kw["x"]
            clamp = _clamp_codes(p.act, ys, yz)
            act = p.act[0] if p.act else ""
            if p.kind == "conv":
                attrs = ops.QConv2dAttrs(*p.kw["geo"], x.scale, x.zp, ys, yz, clamp, act, p.kw["per_channel"])
                return self.emit(fxn, "qconv2d", [x.name], attrs, p.kw["params"], source=f"fx node {qn.name}")
            attrs = ops.QLinearAttrs(x.scale, x.zp, ys, yz, clamp, act, p.kw["per_channel"])
            return self.emit(fxn, "qlinear", [x.name], attrs, p.kw["params"], source=f"fx node {qn.name}")
        if p.kind == "add":
            c, r = p.kw["conv"], p.kw["r"]
            x = c.kw["x"]
            attrs = ops.QConv2dAddAttrs(*c.kw["geo"], x.scale, x.zp, ys, yz, _clamp_codes(p.act, ys, yz),
                                        p.act[0] if p.act else "", c.kw["per_channel"], r.scale, r.zp)
            return self.emit(c.fxn, "qconv2d_add", [x.name, r.name], attrs, c.kw["params"],
                             source=f"fx node {qn.name}")
        if p.kind == "pool":
            x = p.kw["x"]
            attrs = ops.QAdaptiveAvgPool2dAttrs(p.kw["size"], x.scale, x.zp, True, ys, yz)
            if p.kw["flat"]:
                pooled = self.emit(fxn, "qadaptive_avg_pool2d", [x.name], attrs, base=self.base_name(fxn) + ".pool",
                                   source=f"fx node {qn.name}")
                self.nodes[-1].shape = self.shape(fxn) + (1, 1)
                return self.emit(fxn, "qflatten", [pooled], FlattenAttrs(1, -1), source=f"fx node {qn.name}")
            return self.emit(fxn, "qadaptive_avg_pool2d", [x.name], attrs, source=f"fx node {qn.name}")
        # "move": codes move, then a requantization if the Q has other qparams
        x = p.kw["x"]
        cur = x.name
        for op, attrs, step in p.kw["steps"]:
            cur = self.emit(step, op, [cur], attrs)
        if (ys, yz) != (x.scale, x.zp):
            real = self.emit(fxn, "dequantize", [cur], ops.QuantizeAttrs(x.scale, x.zp), base=qn.name + ".dq")
            cur = self.emit(fxn, "quantize", [real], ops.QuantizeAttrs(ys, yz), base=qn.name)
        elif cur == x.name:   # a Q/DQ pair with nothing between: the same codes, one more name
            cur = self.emit(fxn, "qreshape", [cur], ReshapeAttrs(self.shape(fxn)[1:]), base=qn.name)
        return cur

    def output_value(self, r, fxn) -> str:
        v = self.env.get(r)
        if isinstance(v, _Pending) and v.kind == "linear" and v.act is None:
            x = v.kw["x"]
            attrs = ops.QLinearFloatAttrs(x.scale, x.zp, v.kw["per_channel"])
            return self.emit(v.fxn, "qlinear_float", [x.name], attrs, v.kw["params"])
        if isinstance(v, tuple) and v[0] == "dq":
            c = v[1]
            return self.emit(r, "dequantize", [c.name], ops.QuantizeAttrs(c.scale, c.zp), base=r.name)
        if isinstance(v, _Codes):
            return v.name
        self.fail(fxn, f"graph output {getattr(r, 'name', r)!r} is a float value Inductor computes outside an "
                       "int8 kernel (only a final linear layer, or dequantized codes, are imported)")


#: ATen op (by name) → handler method
_FLOAT_OPS = {}


def _tables():
    if _FLOAT_OPS:
        return
    import torch
    aten = torch.ops.aten
    for op, h in ((aten.conv2d.default, "h_conv"), (aten.linear.default, "h_linear"),
                  (aten.relu.default, "h_act"), (aten.relu_.default, "h_act"),
                  (aten.hardtanh.default, "h_act"), (aten.hardtanh_.default, "h_act"),
                  (aten.add.Tensor, "h_add"), (aten.add_.Tensor, "h_add"),
                  (aten.adaptive_avg_pool2d.default, "h_pool"), (aten.mean.dim, "h_pool"),
                  (aten.max_pool2d.default, "h_maxpool"),
                  (aten.flatten.using_ints, "h_move"), (aten.view.default, "h_move"),
                  (aten.reshape.default, "h_move"), (aten.dropout.default, "h_move"),
                  (aten.clone.default, "h_move")):
        _FLOAT_OPS[op] = h


def _clamp_codes(act, ys, yz):
    """The code range of a fused activation: ReLU → [z_y, 255]; hardtanh(0, h) → [z_y, rne(f32(f32(h·m_y) +
    z_y))], m_y = f32(1/f32(s_y)) as oneDNN computes it (module docstring)."""
    if act is None:
        return (0, 255)
    if act[0] == "relu":
        return (yz, 255)
    m_y = np.float32(np.float32(1.0) / np.float32(ys))
    hi = float(np.rint(np.float32(np.float32(np.float32(act[2]) * m_y) + np.float32(yz))))
    return (yz, int(min(max(hi, yz), 255)))


def _check_inductor_reciprocal(b, fxn, s):
    """Inductor quantizes with ``f32(1/s)`` folded in float64; minquant's 'torch' rule divides in float32.
    The two agree unless the float64 quotient rounds onto a float32 tie — refused rather than guessed."""
    if np.float32(1.0 / s) != np.float32(np.float32(1.0) / np.float32(s)):
        b.fail(fxn, f"scale {s!r}: f32(1/s) differs between float64 and float32 division (not reproduced)")


def _module_of(converted):
    """The fx GraphModule of a converted model or of an ExportedProgram of it."""
    import torch
    if isinstance(converted, torch.export.ExportedProgram):
        return converted.module()
    if isinstance(converted, torch.fx.GraphModule):
        return converted
    raise ValueError(f"from_torch_pt2e needs the GraphModule returned by convert_pt2e (or an ExportedProgram of "
                     f"it), got {type(converted).__name__}")


def _example_input(gm, input_shape):
    import torch
    ph = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(ph) != 1:
        raise ValueError(f"the pt2e graph takes {len(ph)} inputs; one is supported")
    if input_shape is None:
        val = ph[0].meta.get("val")
        if val is None:
            raise ValueError("the graph does not record its input shape; pass input_shape")
        input_shape = tuple(int(d) for d in val.shape)
    return torch.zeros(tuple(input_shape))


def from_torch_pt2e(converted, input_shape=None, *, target=None, name: str | None = None) -> QuantizedModel:
    """A :class:`QuantizedModel` computing what ``torch.compile`` (Inductor, freezing on) makes of the pt2e
    model ``converted`` (module docstring). ``input_shape``: with batch (default: the exported one);
    ``target``: a CPU for the ``x86-inductor`` target (default: this host), or a Target whose framework is
    ``x86-inductor``. Raises ValueError for a graph it cannot import, naming the op and where it sits."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    _tables()
    gm = _module_of(converted)
    label = name or type(converted).__name__
    if target is None:
        target = Target("x86-inductor")
    elif isinstance(target, Target):
        if target.framework != "x86-inductor":
            raise ValueError(f"a pt2e model lowered by Inductor computes as target 'x86-inductor', not {target}")
    else:
        target = Target("x86-inductor", target)
    x = _example_input(gm, input_shape)
    with torch.no_grad():
        ShapeProp(gm).propagate(x)
    b = _Builder(gm, label)
    graph = b.build()
    return QuantizedModel(graph, target, meta={"method": "from_torch_pt2e", "torch_version": torch.__version__,
                                                "pt2e_codes": b.pt2e_codes})

