"""Write a minquant model as an ONNX file that ONNX Runtime runs — bit for bit like minquant.

    qm = minquant.quantize_static(model, calib, target="onnxruntime")
    to_onnx(qm, "model_qdq.onnx")                       # QDQ: float ops between DequantizeLinear/QuantizeLinear
    to_onnx(qm, "model_qop.onnx", format="qoperator")   # integer operators: QLinearConv, QGemm, QLinearAdd...
    to_onnx(graph, "model_fp32.onnx")                   # a float Graph (from minquant.from_torch)

Open the file in Netron (https://netron.app, or ``pip install netron; netron model.onnx``) to see the graph.

**Two ways to write an integer model.** Every uint8 value of a minquant quantized graph carries one
(scale, zero point): ``r = s·(q − z)`` (docs/quantization.md, step 1). ONNX can say this in two ways:

* ``format="qoperator"`` — the integer operators themselves. A ``qconv2d`` becomes ``QLinearConv`` (uint8
  input, int8 weights, int32 bias, output scale/zero point), ``qlinear`` ``QGemm`` (com.microsoft,
  ``transB=1``), ``qadd`` ``QLinearAdd``, ``qcat`` ``QLinearConcat`` (or a plain ``Concat`` when all
  qparams agree), pools ``MaxPool`` on uint8 / ``QLinearAveragePool`` / ``QLinearGlobalAveragePool``,
  flatten/reshape move uint8 codes, and a clamp on codes (fused ReLU/ReLU6, ``qclamp``) is a ``Clip`` with
  uint8 bounds — plus ``Min`` with a (1, C, 1, 1) uint8 tensor for a per-channel top (``qclamp``'s
  ``hi_channels``, a layer's ``clamp_hi``).
* ``format="qdq"`` — what ``onnxruntime.quantization.quantize_static(quant_format=QDQ)`` writes: every
  uint8 value is the output of a ``QuantizeLinear`` and is read through a ``DequantizeLinear``; the ops in
  between are *float* ops (``Conv``, ``Gemm``, ``Add``, ``GlobalAveragePool``...), weights are int8
  initializers behind a per-channel ``DequantizeLinear`` (axis 0) and biases int32 initializers behind a
  ``DequantizeLinear`` with scale ``f32(s_x·s_w)``. ONNX Runtime's graph optimizer recognises each
  ``DQ → op → Q`` group and runs the same integer kernel as the QOperator file (QLinearConv, QGemm...).
  A clamp on codes is ``DQ → Clip/Min (float) → Q``, which ORT runs in float — exactly: for codes
  q ≤ h, ``s·(q − z) ≤ s·(h − z)`` (rounding is monotone) and requantizing ``s·(k − z)`` gives k back.

**Why the numbers agree with minquant.** ``QuantizedModel(graph, target="onnxruntime")`` reproduces
ORT's QLinearConv / QGemm / QLinearAdd / QLinearGlobalAveragePool / QuantizeLinear arithmetic bit for bit
(tests/test_kernels_vs_frameworks.py, tests/test_kernels_ops.py). The file holds exactly the numbers the
emulation uses: int8 weights and their float32 scales as stored, the int32 bias
``b_q = rne(f64(b) / f64(f32(s_x·s_w)))`` (:func:`minquant.affine.quantize_bias`, ORT's own rule), float32
activation scales and uint8 zero points. Float fallback ops of a quantized model are written as the same
sequence of float32 operations minquant performs (``hardswish`` as Add → Clip → Mul → Div, a leftover
``batch_norm`` as Mul → Add with minquant's α, β), so they round identically too.

Measured (tests/test_onnx_export.py, benchmarks/RESULTS_onnx.md): TinyCNN and MobileNetV2, both formats,
0 differing logits; every static op kind, the code clamps and the dynamic ops, 0 differing elements.
Where exactness is not promised:

* a float ``conv2d`` / ``linear`` / ``avg_pool2d`` (a float Graph, or a layer left float in a quantized
  model): ORT and minquant accumulate float32 sums in different orders — agreement to ~1e-5, not bitwise;
* a float *global* ``adaptive_avg_pool2d`` is written as ``GlobalAveragePool``, which minquant's
  'onnxruntime' emulation sums in MLAS's order (``quantized.executor.global_avg_pool_mlas``); when ORT's
  NCHWc layout transformer rewrites that pool (it does for a lone GlobalAveragePool, not inside the
  models measured) ORT sums sequentially instead and the last bit differs for about a third of the values;
  a non-global one (divisible windows) is written as minquant computes it: Cast(double) → ReduceSum →
  Div → Div → Cast(float);
* ``qavg_pool2d`` with ``ceil_mode``, and non-global ``qadaptive_avg_pool2d`` (written as
  ``QLinearAveragePool``): the emulation rounds them as 'minquant' (exact rational mean), ORT in float32
  with the zero point added before rounding — they can differ on means within float error of a .5 tie.

**Reading it back.** :func:`minquant.interop.onnx.importer.from_onnx_quantized` reads these files back: a
quantized model with the same integer layers (the clamps on codes go back into the layers' ``clamp`` /
``clamp_hi``, the float fallback sequences back into ``hardswish`` / ``hardsigmoid`` / ``batch_norm`` /
``adaptive_avg_pool2d``) whose numbers are ORT's — and the 'onnxruntime' emulation's — bit for bit
(tests/test_onnx_import.py, TinyCNN and MobileNetV2, both formats); :func:`~minquant.interop.onnx.importer.from_onnx`
reads a float Graph back within ~1e-5 (a non-global adaptive pool comes back as the equivalent ``avg_pool2d``).
A qconv2d / qlinear bias may be int32 (from_onnx_quantized keeps a file's int32 bias that float32 cannot
represent): it is written as it is.

Dynamic ops are written as ORT's ``quantize_dynamic`` writes them — DynamicQuantizeLinear →
MatMulInteger / ConvInteger → Cast → Mul(s_x·s_w) → Mul → Add(bias) — and ORT fuses the MatMul chain
into ``DynamicQuantizeMatMul``; the 'onnxruntime' emulation reproduces both (ConvInteger accumulates
exactly, without the u8×s8 pair saturation of QLinearConv).

An op the exporter cannot write raises ``ValueError`` naming the op and the node. The file is written all or
nothing (:func:`minquant.files.atomic_write`), so a failed export never leaves a half-written model. This module imports
``onnx`` (and nothing from minquant's core imports it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...files import atomic_write
from ...graph import unique_name

__all__ = ["to_onnx", "FORMATS", "DEFAULT_OPSET", "MIN_OPSET"]

FORMATS = ("qdq", "qoperator")
#: opset written by default (ONNX 1.16+ / ONNX Runtime 1.17+ understand it)
DEFAULT_OPSET = 21
#: oldest opset the exporter can write (HardSwish and per-axis Q/DQ need 14 / 13)
MIN_OPSET = 14
MS_DOMAIN = "com.microsoft"

_F32 = np.float32


def _onnx():
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - onnx missing
        raise ValueError(f"to_onnx needs the 'onnx' package: {e}") from e
    return onnx


class _Writer:
    """Collects ONNX nodes, initializers and value infos; names helper tensors uniquely."""

    def __init__(self, onnx, name: str):
        self.onnx = onnx
        self.helper = onnx.helper
        self.name = name
        self.nodes = []
        self.inits = []
        self._init_names: dict[tuple, str] = {}
        self._used: set[str] = set()        # tensor names
        self._node_names: set[str] = set()  # node names (a separate namespace in ONNX)
        self.uses_ms = False

    def fresh(self, base: str) -> str:
        """A tensor name not used yet: ``base``, else ``base_1``, ``base_2``..."""
        name = unique_name(base, self._used)
        self._used.add(name)
        return name

    def node_name(self, base: str) -> str:
        """The same for node names (their own namespace)."""
        name = unique_name(base, self._node_names)
        self._node_names.add(name)
        return name

    def reserve(self, name: str) -> str:
        if name in self._used:
            raise ValueError(f"ONNX export: tensor name {name!r} is used twice")
        self._used.add(name)
        return name

    def const(self, base: str, value, dtype=None, *, share: bool = True) -> str:
        """An initializer holding ``value``; identical small constants (qparams) are stored once."""
        arr = np.asarray(value, dtype=dtype)
        key = None
        if share and arr.size <= 16:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            if key in self._init_names:
                return self._init_names[key]
        name = self.fresh(base)
        self.inits.append(self.onnx.numpy_helper.from_array(arr.copy(order="C"), name))  # keeps 0-d scalars 0-d
        if key is not None:
            self._init_names[key] = name
        return name

    def node(self, op: str, inputs, output: str | None = None, *, name: str | None = None, domain: str = "",
             doc: str = "", n_out: int = 1, **attrs):
        """Append one node; returns its output name (or names, for ``n_out`` > 1)."""
        if n_out == 1:
            outs = [output if output is not None else self.fresh(f"{name or op}:out")]
        else:
            outs = [self.fresh(f"{name or op}:out{i}") for i in range(n_out)]
        if domain == MS_DOMAIN:
            self.uses_ms = True
        nd = self.helper.make_node(op, list(inputs), outs, name=self.node_name(name or op), domain=domain or None,
                                   **attrs)
        if doc:
            nd.doc_string = doc
        self.nodes.append(nd)
        return outs[0] if n_out == 1 else outs


def _pads(padding) -> list[int]:
    ph, pw = padding
    return [int(ph), int(pw), int(ph), int(pw)]


def _max_pool_attrs(a) -> dict:
    """ONNX ``MaxPool`` attributes of a ``max_pool2d`` / ``qmax_pool2d`` node's attrs."""
    return dict(kernel_shape=list(a.kernel_size), strides=list(a.stride), pads=_pads(a.padding),
                dilations=list(a.dilation), ceil_mode=int(a.ceil_mode))


def _avg_pool_attrs(kernel, stride, padding, ceil_mode=False, count_include_pad=True) -> dict:
    """ONNX ``AveragePool`` / ``QLinearAveragePool`` attributes."""
    return dict(kernel_shape=list(kernel), strides=list(stride), pads=_pads(padding), ceil_mode=int(ceil_mode),
                count_include_pad=int(count_include_pad))


def _channel_shape(ndim: int, c: int) -> tuple:
    return (1, c) + (1,) * (ndim - 2)


class _Exporter:
    """Walks a minquant graph once, writing each node (module docstring)."""

    def __init__(self, graph, fmt: str, *, quantized: bool, qparams=None, shapes=None, onnx=None):
        self.g = graph
        self.fmt = fmt
        self.quantized = quantized          # exact float decompositions for fallback ops
        self.qp = dict(qparams or {})       # uint8 value → (scale, zero point)
        self.shapes = shapes or {}          # value → (shape, dtype name), batch 1
        self.w = _Writer(onnx, graph.name)
        self.onnx = onnx
        self.name_of: dict[str, str] = {}   # minquant value → ONNX tensor
        self.float_of: dict[tuple, str] = {}  # (uint8 value, s, z) → its DequantizeLinear output (QDQ)
        self.codes: set[str] = set()        # minquant values that are uint8 codes

    # -- small helpers ------------------------------------------------------------------------------
    def fail(self, n, why: str):
        raise ValueError(f"to_onnx: cannot export node {n.name!r} (op {n.op!r}, from {n.source or '?'}): {why}")

    def ndim(self, v: str) -> int:
        if v in self.shapes:
            return len(self.shapes[v][0])
        raise ValueError(f"to_onnx: no shape known for value {v!r}")

    def shape(self, v: str) -> tuple:
        return tuple(self.shapes[v][0])

    def scale_zp(self, s, z):
        """float32 scale and uint8 zero point initializers (shared between nodes)."""
        return self.w.const("scale", _F32(s), _F32), self.w.const("zero_point", np.uint8(z), np.uint8)

    def emit_output(self, n, tensor: str, *, codes: bool):
        self.name_of[n.name] = tensor
        if codes:
            self.codes.add(n.name)

    def out_name(self, n) -> str:
        """The ONNX tensor of node ``n``'s output: the node's own name (reserved up front in :meth:`run`)."""
        return n.name

    def inp(self, v: str) -> str:
        return self.name_of[v]

    def float_in(self, v: str, s=None, z=None) -> str:
        """The float tensor for value ``v``: itself, or (QDQ) a DequantizeLinear of its codes with (s, z) —
        the qparams the *reading* node's kernel assumes (its ``x_scale``/``x_zp``...), by default the
        value's own. One DequantizeLinear per (value, s, z), shared by its readers (as ORT's quantizer
        writes it; ORT's optimizer duplicates it per reader before fusing)."""
        if v not in self.codes:
            return self.name_of[v]
        if s is None:
            s, z = self.qp[v]
        key = (v, float(s), int(z))
        if key not in self.float_of:
            ss, zz = self.scale_zp(s, z)
            self.float_of[key] = self.w.node("DequantizeLinear", [self.name_of[v], ss, zz],
                                             self.w.fresh(f"{v}:dequantized"), name=f"{v}:DequantizeLinear")
        return self.float_of[key]

    def quantize(self, tensor: str, s, z, output: str, name: str, doc: str = "") -> str:
        ss, zz = self.scale_zp(s, z)
        return self.w.node("QuantizeLinear", [tensor, ss, zz], output, name=name, doc=doc)

    # -- clamps on codes ----------------------------------------------------------------------------
    def clamp_codes(self, n, tensor: str, s, z, lo: int, hi: int, hi_channels, final: str) -> str:
        """Codes ``tensor`` clamped to [lo, hi] and then to ``hi_channels[c]`` (each step only if it does
        something); the last step writes ``final``. QOperator: Clip / Min on uint8; QDQ: the same in
        float between DequantizeLinear and QuantizeLinear (exact: module docstring).

        minquant's ``qclamp`` takes the per-channel top first and clips after, a layer's output stage clips
        first (its ``clamp_hi`` is ≥ lo); the two orders agree once every top is raised to at least ``lo``
        (``clip(min(q, t), lo, hi) = min(clip(q, lo, hi), max(t, lo))``), which is what is written."""
        steps = []
        if (lo, hi) != (0, 255):
            steps.append("clip")
        if hi_channels is not None:
            hi_channels = np.maximum(np.asarray(hi_channels).astype(np.int64), lo)
            if np.any(hi_channels < hi):
                steps.append("min")
        if not steps:
            return self.w.node("Identity", [tensor], final, name=f"{n.name}:Identity")
        cur = tensor
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            if self.fmt == "qoperator":
                out = final if last else self.w.fresh(f"{n.name}:{step}")
                if step == "clip":
                    cur = self.w.node("Clip", [cur, self.w.const("clamp_lo", np.uint8(lo)),
                                               self.w.const("clamp_hi", np.uint8(hi))], out,
                                      name=f"{n.name}:Clip", doc=f"clamp codes to [{lo}, {hi}]")
                else:
                    hc = np.asarray(hi_channels).astype(np.uint8)
                    t = self.w.const(f"{n.name}.hi_channels", hc.reshape(_channel_shape(self.ndim(n.name), hc.size)),
                                     share=False)
                    cur = self.w.node("Min", [cur, t], out, name=f"{n.name}:Min", doc="per-channel top on codes")
            else:
                ss, zz = self.scale_zp(s, z)
                f = self.w.node("DequantizeLinear", [cur, ss, zz], self.w.fresh(f"{n.name}:{step}_in"),
                                name=f"{n.name}:{step}:DequantizeLinear")
                if step == "clip":
                    flo = self.w.const("clamp_lo_f", dequant(lo, s, z), _F32)
                    fhi = self.w.const("clamp_hi_f", dequant(hi, s, z), _F32)
                    f = self.w.node("Clip", [f, flo, fhi], name=f"{n.name}:Clip",
                                    doc=f"clamp codes to [{lo}, {hi}] (in float: exact)")
                else:
                    hc = dequant(np.asarray(hi_channels).astype(np.int64), s, z)
                    t = self.w.const(f"{n.name}.hi_channels_f", hc.reshape(_channel_shape(self.ndim(n.name), hc.size)),
                                     share=False)
                    f = self.w.node("Min", [f, t], name=f"{n.name}:Min", doc="per-channel top (in float: exact)")
                out = final if last else self.w.fresh(f"{n.name}:{step}")
                cur = self.quantize(f, s, z, out, f"{n.name}:{step}:QuantizeLinear")
        return cur

    # -- the walk -----------------------------------------------------------------------------------
    def run(self):
        g, h = self.g, self.w.helper
        TP = self.onnx.TensorProto
        graph_inputs = []
        for v in list(g.inputs) + [n.name for n in g.nodes]:   # helper tensors never take these names
            self.w.reserve(v)
        for v in g.inputs:
            self.name_of[v] = v
            shp = g.input_shapes.get(v)
            dims = ["N"] + list(shp[1:]) if shp else None
            graph_inputs.append(h.make_tensor_value_info(v, TP.FLOAT, dims))
        for n in g.nodes:
            fn = getattr(self, "op_" + n.op, None)
            if fn is None:
                self.fail(n, "no ONNX translation for this op (supported: "
                             + ", ".join(sorted(k[3:] for k in dir(self) if k.startswith("op_"))) + ")")
            fn(n)
        graph_outputs = []
        for v in g.outputs:
            t = self.name_of[v]
            if v in self.codes:   # QuantizedModel returns dequantized floats: so does the file
                s, z = self.qp[v]
                ss, zz = self.scale_zp(s, z)
                t = self.w.node("DequantizeLinear", [t, ss, zz], self.w.fresh(f"{v}:output"),
                                name=f"{v}:output:DequantizeLinear")
            shp = self.shapes.get(v)
            dims = ["N"] + list(shp[0][1:]) if shp else None
            graph_outputs.append(h.make_tensor_value_info(t, TP.FLOAT, dims))
        return h.make_graph(self.w.nodes, g.name, graph_inputs, graph_outputs, initializer=self.w.inits)

    # ================================================================================================
    # quantized ops
    # ================================================================================================
    def op_quantize(self, n):
        a = n.attrs
        self.quantize(self.float_in(n.inputs[0]), a.scale, a.zero_point, self.out_name(n), n.name,
                      doc=f"q = clamp(rne(x / {a.scale:.6g}) + {a.zero_point})")
        self.emit_output(n, n.name, codes=True)
        self.qp.setdefault(n.name, (a.scale, a.zero_point))

    def op_dequantize(self, n):
        a = n.attrs
        ss, zz = self.scale_zp(a.scale, a.zero_point)
        self.w.node("DequantizeLinear", [self.inp(n.inputs[0]), ss, zz], self.out_name(n), name=n.name)
        self.emit_output(n, n.name, codes=False)

    def _weights(self, n):
        """int8 weight, float32 scale and int8 zero point initializers (per channel: 1-D; else scalars)."""
        a = n.attrs
        w = n.params["weight"]
        if w.dtype != np.int8:
            self.fail(n, f"weights must be int8 codes, got {w.dtype}")
        ws = np.asarray(n.params["w_scale"]).astype(_F32)
        wz = np.asarray(n.params["w_zp"]).astype(np.int8)
        if not a.per_channel:
            ws, wz = ws.reshape(()), wz.reshape(())
        elif np.any(wz != 0):
            self.fail(n, "ONNX Runtime needs symmetric per-channel int8 weights (zero point 0)")
        return (self.w.const(f"{n.name}.weight_quantized", w, share=False),
                self.w.const(f"{n.name}.weight_scale", ws, share=False),
                self.w.const(f"{n.name}.weight_zero_point", wz, share=False), ws)

    def _bias_int32(self, n, ws):
        """The int32 bias the emulation adds: ``rne(f64(b) / f64(f32(s_x·s_w)))`` (affine.quantize_bias) for
        a float bias; an integer bias (from_onnx_quantized keeps a file's int32 bias that has no float32 preimage) is
        what the output stage adds as given, so it is written as is."""
        if "bias" not in n.params:
            return None, None
        from ...affine import quantize_bias
        o = n.params["weight"].shape[0]
        ws_o = np.broadcast_to(np.asarray(ws, _F32), (o,))
        b = n.params["bias"]
        if b.dtype.kind in "iu":
            bq = b.astype(np.int32)
        else:
            bq = quantize_bias(b.astype(_F32), n.attrs.x_scale, ws_o, target="onnxruntime")
        bs = (_F32(n.attrs.x_scale) * ws_o).astype(_F32)
        return bq, bs

    def _layer_clamp(self, n, pre: str):
        """The output clamp of a qconv2d / qlinear (``clamp`` attr, optional ``clamp_hi`` per channel)."""
        a = n.attrs
        lo, hi = a.clamp
        hc = n.params.get("clamp_hi")
        if hc is not None and np.all(np.asarray(hc) >= hi):
            hc = None
        return self.clamp_codes(n, pre, a.y_scale, a.y_zp, lo, hi, hc, self.out_name(n))

    def _needs_clamp(self, n) -> bool:
        a = n.attrs
        hc = n.params.get("clamp_hi")
        return tuple(a.clamp) != (0, 255) or (hc is not None and bool(np.any(np.asarray(hc) < a.clamp[1])))

    def op_qconv2d(self, n):
        a = n.attrs
        w_t, ws_t, wz_t, ws = self._weights(n)
        bq, bs = self._bias_int32(n, ws)
        kh, kw = n.params["weight"].shape[2:]
        geo = dict(kernel_shape=[int(kh), int(kw)], strides=list(a.stride), pads=_pads(a.padding),
                   dilations=list(a.dilation), group=int(a.groups))
        pre = self.w.fresh(f"{n.name}:unclamped") if self._needs_clamp(n) else self.out_name(n)
        doc = f"{n.source} — qconv2d, activation {a.activation or 'none'}, clamp {list(a.clamp)}"
        if self.fmt == "qoperator":
            xs, xz = self.scale_zp(a.x_scale, a.x_zp)
            ys, yz = self.scale_zp(a.y_scale, a.y_zp)
            ins = [self.inp(n.inputs[0]), xs, xz, w_t, ws_t, wz_t, ys, yz]
            if bq is not None:
                ins.append(self.w.const(f"{n.name}.bias_quantized", bq, share=False))
            self.w.node("QLinearConv", ins, pre, name=n.name, doc=doc, **geo)
        else:
            wf = self._dequantized_weight(n, w_t, ws_t, wz_t)
            ins = [self.float_in(n.inputs[0], a.x_scale, a.x_zp), wf, *self._dequantized_bias(n, bq, bs)]
            f = self.w.node("Conv", ins, self.w.fresh(f"{n.name}:float"), name=n.name, doc=doc, **geo)
            self.quantize(f, a.y_scale, a.y_zp, pre, f"{n.name}:QuantizeLinear")
        if pre != n.name:
            self._layer_clamp(n, pre)
        self.emit_output(n, n.name, codes=True)

    def _dequantized_weight(self, n, w_t, ws_t, wz_t) -> str:
        """QDQ format, a ``qconv2d`` / ``qlinear``: ``DequantizeLinear(int8 weight)`` (per channel: ``axis=0``),
        the float weight operand of the layer's Conv / Gemm."""
        return self.w.node("DequantizeLinear", [w_t, ws_t, wz_t], self.w.fresh(f"{n.name}.weight_dequantized"),
                           name=f"{n.name}.weight:DequantizeLinear", **({"axis": 0} if n.attrs.per_channel else {}))

    def _dequantized_bias(self, n, bq, bs) -> list:
        """QDQ format: ``[DequantizeLinear(int32 bias, scale bs, zero point 0)]``, or ``[]`` without a bias."""
        if bq is None:
            return []
        bt = self.w.const(f"{n.name}.bias_quantized", bq, share=False)
        bst = self.w.const(f"{n.name}.bias_scale", bs, share=False)
        bzt = self.w.const(f"{n.name}.bias_zero_point", np.zeros(bq.shape, np.int32), share=False)
        return [self.w.node("DequantizeLinear", [bt, bst, bzt], self.w.fresh(f"{n.name}.bias_dequantized"),
                            name=f"{n.name}.bias:DequantizeLinear", axis=0)]

    def op_qlinear(self, n):
        a = n.attrs
        w_t, ws_t, wz_t, ws = self._weights(n)
        bq, bs = self._bias_int32(n, ws)
        o, k = n.params["weight"].shape
        shp = self.shape(n.inputs[0])
        x = self.inp(n.inputs[0]) if self.fmt == "qoperator" else self.float_in(n.inputs[0], a.x_scale, a.x_zp)
        if len(shp) != 2:   # Gemm is 2-D: (N, ..., K) → (N·…, K) → Gemm → (N, ..., O)
            x = self.w.node("Reshape", [x, self.w.const("shape", np.array([-1, k], np.int64))],
                            name=f"{n.name}:flatten_rows")
        final_pre = self.w.fresh(f"{n.name}:unclamped") if self._needs_clamp(n) else self.out_name(n)
        pre = final_pre if len(shp) == 2 else self.w.fresh(f"{n.name}:rows")
        doc = f"{n.source} — qlinear, activation {a.activation or 'none'}, clamp {list(a.clamp)}"
        if self.fmt == "qoperator":
            xs, xz = self.scale_zp(a.x_scale, a.x_zp)
            ys, yz = self.scale_zp(a.y_scale, a.y_zp)
            bt = "" if bq is None else self.w.const(f"{n.name}.bias_quantized", bq, share=False)
            self.w.node("QGemm", [x, xs, xz, w_t, ws_t, wz_t, bt, ys, yz], pre, name=n.name, domain=MS_DOMAIN,
                        doc=doc, transB=1)
        else:
            ins = [x, self._dequantized_weight(n, w_t, ws_t, wz_t), *self._dequantized_bias(n, bq, bs)]
            f = self.w.node("Gemm", ins, self.w.fresh(f"{n.name}:float"), name=n.name, doc=doc, transB=1)
            self.quantize(f, a.y_scale, a.y_zp, pre, f"{n.name}:QuantizeLinear")
        if len(shp) != 2:
            self.w.node("Reshape", [pre, self.w.const("shape", np.array([-1, *shp[1:-1], o], np.int64))],
                        final_pre, name=f"{n.name}:unflatten_rows")
        if final_pre != n.name:
            self._layer_clamp(n, final_pre)
        self.emit_output(n, n.name, codes=True)

    def op_qadd(self, n):
        a = n.attrs
        lo = a.y_zp if a.relu else 0
        pre = self.w.fresh(f"{n.name}:unclamped") if lo > 0 else self.out_name(n)
        if self.fmt == "qoperator":
            as_, az = self.scale_zp(a.a_scale, a.a_zp)
            bs, bz = self.scale_zp(a.b_scale, a.b_zp)
            ys, yz = self.scale_zp(a.y_scale, a.y_zp)
            self.w.node("QLinearAdd", [self.inp(n.inputs[0]), as_, az, self.inp(n.inputs[1]), bs, bz, ys, yz], pre,
                        name=n.name, domain=MS_DOMAIN, doc=n.source)
        else:
            f = self.w.node("Add", [self.float_in(n.inputs[0], a.a_scale, a.a_zp),
                                    self.float_in(n.inputs[1], a.b_scale, a.b_zp)],
                            self.w.fresh(f"{n.name}:float"), name=n.name, doc=n.source)
            self.quantize(f, a.y_scale, a.y_zp, pre, f"{n.name}:QuantizeLinear")
        if lo > 0:   # QLinearAdd has no fused ReLU: clamp the codes at z_y (real 0)
            self.clamp_codes(n, pre, a.y_scale, a.y_zp, lo, 255, None, self.out_name(n))
        self.emit_output(n, n.name, codes=True)

    def op_qcat(self, n):
        a = n.attrs
        axis = int(a.dim)
        same = all(s == a.y_scale and z == a.y_zp for s, z in zip(a.in_scales, a.in_zps))
        if self.fmt == "qoperator":
            if same:
                self.w.node("Concat", [self.inp(v) for v in n.inputs], self.out_name(n), name=n.name, axis=axis)
            else:
                ys, yz = self.scale_zp(a.y_scale, a.y_zp)
                ins = [ys, yz]
                for v, s, z in zip(n.inputs, a.in_scales, a.in_zps):
                    ins += [self.inp(v), *self.scale_zp(s, z)]
                self.w.node("QLinearConcat", ins, self.out_name(n), name=n.name, domain=MS_DOMAIN, axis=axis)
        else:
            f = self.w.node("Concat", [self.float_in(v, s, z) for v, s, z in zip(n.inputs, a.in_scales, a.in_zps)],
                            self.w.fresh(f"{n.name}:float"),
                            name=n.name, axis=axis)
            self.quantize(f, a.y_scale, a.y_zp, self.out_name(n), f"{n.name}:QuantizeLinear")
        self.emit_output(n, n.name, codes=True)
        self.qp.setdefault(n.name, (a.y_scale, a.y_zp))

    def _code_op(self, n, op: str, extra_inputs=(), **attrs):
        """An op that moves or selects codes (qparams unchanged): on uint8 directly (QOperator) or
        DQ → op → Q (QDQ; ONNX Runtime drops the pair and runs it on uint8)."""
        s, z = self.qp[n.inputs[0]]
        if self.fmt == "qoperator":
            self.w.node(op, [self.inp(n.inputs[0]), *extra_inputs], self.out_name(n), name=n.name, doc=n.source,
                        **attrs)
        else:
            f = self.w.node(op, [self.float_in(n.inputs[0]), *extra_inputs], self.w.fresh(f"{n.name}:float"),
                            name=n.name, doc=n.source, **attrs)
            self.quantize(f, s, z, self.out_name(n), f"{n.name}:QuantizeLinear")
        self.emit_output(n, n.name, codes=True)
        self.qp.setdefault(n.name, (s, z))

    def op_qmax_pool2d(self, n):
        self._code_op(n, "MaxPool", **_max_pool_attrs(n.attrs))

    def _pool_out_qparams(self, n):
        """Output (scale, zero point) of an average pool: its own ``y_scale``/``y_zp`` if set, else the input's."""
        a = n.attrs
        if getattr(a, "y_scale", None) is not None:
            return a.y_scale, a.y_zp
        return a.x_scale, a.x_zp

    def _avg_pool2d_attrs(self, n) -> dict:
        """ONNX attributes of an ``avg_pool2d`` / ``qavg_pool2d`` node (``divisor_override`` has none)."""
        a = n.attrs
        if a.divisor_override is not None:
            self.fail(n, "divisor_override has no ONNX equivalent")
        return _avg_pool_attrs(a.kernel_size, a.stride, a.padding, a.ceil_mode, a.count_include_pad)

    def _qavg(self, n, geo: dict):
        a = n.attrs
        ys, yz = self._pool_out_qparams(n)
        if self.fmt == "qoperator":
            xs, xz = self.scale_zp(a.x_scale, a.x_zp)
            self.w.node("QLinearAveragePool", [self.inp(n.inputs[0]), xs, xz, *self.scale_zp(ys, yz)],
                        self.out_name(n), name=n.name, domain=MS_DOMAIN, doc=n.source, **geo)
        else:
            f = self.w.node("AveragePool", [self.float_in(n.inputs[0], a.x_scale, a.x_zp)],
                            self.w.fresh(f"{n.name}:float"), name=n.name, doc=n.source, **geo)
            self.quantize(f, ys, yz, self.out_name(n), f"{n.name}:QuantizeLinear")
        self.emit_output(n, n.name, codes=True)
        self.qp.setdefault(n.name, (ys, yz))

    def op_qavg_pool2d(self, n):
        self._qavg(n, self._avg_pool2d_attrs(n))

    def op_qadaptive_avg_pool2d(self, n):
        a = n.attrs
        h, w = self.shape(n.inputs[0])[2:]
        oh, ow = a.output_size
        if (oh, ow) == (1, 1):
            ys, yz = self._pool_out_qparams(n)
            if self.fmt == "qoperator":
                xs, xz = self.scale_zp(a.x_scale, a.x_zp)
                self.w.node("QLinearGlobalAveragePool", [self.inp(n.inputs[0]), xs, xz, *self.scale_zp(ys, yz)],
                            self.out_name(n), name=n.name, domain=MS_DOMAIN, doc=n.source, channels_last=0)
            else:
                f = self.w.node("GlobalAveragePool", [self.float_in(n.inputs[0], a.x_scale, a.x_zp)],
                                self.w.fresh(f"{n.name}:float"), name=n.name, doc=n.source)
                self.quantize(f, ys, yz, self.out_name(n), f"{n.name}:QuantizeLinear")
            self.emit_output(n, n.name, codes=True)
            self.qp.setdefault(n.name, (ys, yz))
            return
        if h % oh or w % ow:
            self.fail(n, f"adaptive pooling {h}×{w} → {oh}×{ow} has unequal windows (ONNX has no adaptive pool; "
                         "only divisible sizes become AveragePool)")
        self._qavg(n, _avg_pool_attrs((h // oh, w // ow), (h // oh, w // ow), (0, 0)))

    def _flatten_like(self, n, start, end):
        nd = self.ndim(n.inputs[0])
        s, e = start % nd, end % nd
        if s == 1 and e == nd - 1:
            return "Flatten", (), {"axis": 1}
        shape = [0] * s + [-1] + [0] * (nd - 1 - e)
        return "Reshape", (self.w.const("shape", np.array(shape, np.int64)),), {}

    def op_qflatten(self, n):
        op, extra, attrs = self._flatten_like(n, n.attrs.start_dim, n.attrs.end_dim)
        self._code_op(n, op, extra, **attrs)

    def op_qreshape(self, n):
        self._code_op(n, "Reshape", (self.w.const("shape", np.array([0, *n.attrs.shape], np.int64)),))

    def op_qclamp(self, n):
        s, z = self.qp[n.inputs[0]]
        a = n.attrs
        hc = n.params.get("hi_channels")
        self.clamp_codes(n, self.inp(n.inputs[0]), s, z, a.lo, a.hi, hc, self.out_name(n))
        self.emit_output(n, n.name, codes=True)
        self.qp.setdefault(n.name, (s, z))

    # -- dynamic quantization (float in, float out) ---------------------------------------------------
    def _dynamic(self, n, conv: bool):
        a = n.attrs
        w = n.params["weight"]
        ws = np.asarray(n.params["w_scale"]).astype(_F32)
        wz = np.asarray(n.params["w_zp"]).astype(np.int8)
        if np.any(wz != 0):
            self.fail(n, "dynamic export needs symmetric weights (zero point 0)")
        o = w.shape[0]
        xq, xs, xz = self.w.node("DynamicQuantizeLinear", [self.float_in(n.inputs[0])], name=f"{n.name}:DynamicQuantizeLinear",
                                 n_out=3)
        wzt = self.w.const("weight_zero_point_i8", np.int8(0))
        if conv:
            kh, kw = w.shape[2:]
            acc = self.w.node("ConvInteger", [xq, self.w.const(f"{n.name}.weight_quantized", w, share=False), xz, wzt],
                              name=n.name, doc=n.source, kernel_shape=[int(kh), int(kw)], strides=list(a.stride),
                              pads=_pads(a.padding), dilations=list(a.dilation), group=int(a.groups))
            shape = (1, o, 1, 1) if a.per_channel else ()
        else:
            acc = self.w.node("MatMulInteger", [xq, self.w.const(f"{n.name}.weight_quantized",
                                                                 np.ascontiguousarray(w.T), share=False), xz, wzt],
                              name=n.name, doc=n.source)
            shape = (o,) if a.per_channel else ()
        accf = self.w.node("Cast", [acc], name=f"{n.name}:Cast", to=self.onnx.TensorProto.FLOAT)
        s = self.w.node("Mul", [xs, self.w.const(f"{n.name}.weight_scale", ws.reshape(shape), share=False)],
                        name=f"{n.name}:scale")
        b = n.params.get("bias")
        last = not a.relu and b is None
        y = self.w.node("Mul", [accf, s], self.out_name(n) if last else None, name=f"{n.name}:Mul")
        if b is not None:
            bshape = (1, o, 1, 1) if conv else (o,)
            last = not a.relu
            y = self.w.node("Add", [y, self.w.const(f"{n.name}.bias", b.astype(_F32).reshape(bshape), share=False)],
                            self.out_name(n) if last else None, name=f"{n.name}:Add")
        if a.relu:
            self.w.node("Relu", [y], self.out_name(n), name=f"{n.name}:Relu")
        self.emit_output(n, n.name, codes=False)

    def op_dynamic_linear(self, n):
        self._dynamic(n, conv=False)

    def op_dynamic_conv2d(self, n):
        self._dynamic(n, conv=True)

    # ================================================================================================
    # float ops
    # ================================================================================================
    def _float(self, n, op, inputs=None, **attrs):
        ins = [self.float_in(v) for v in n.inputs] if inputs is None else inputs
        self.w.node(op, ins, self.out_name(n), name=n.name, doc=n.source, **attrs)
        self.emit_output(n, n.name, codes=False)

    def _exact_adaptive_avg(self, n, h, w, oh, ow):
        """minquant's float adaptive pool, operation for operation: each window summed in float64, divided
        by kh then by kw (float64), rounded once to float32 (float_ops.adaptive_avg_pool2d). Written as
        Cast(double) → Reshape into windows → ReduceSum → Div → Div → Cast(float): a float64 sum of a few
        float32 values of similar magnitude is exact in any order, so ORT and NumPy agree. (A *global* pool
        is written as GlobalAveragePool: under target='onnxruntime' minquant reproduces MLAS's float32
        summation order for it, ``quantized.executor.global_avg_pool_mlas``.)"""
        TP = self.onnx.TensorProto
        kh, kw = h // oh, w // ow
        x = self.w.node("Cast", [self.float_in(n.inputs[0])], name=f"{n.name}:to_double", doc=n.source, to=TP.DOUBLE)
        x = self.w.node("Reshape", [x, self.w.const("shape", np.array([0, 0, oh, kh, ow, kw], np.int64))],
                        name=f"{n.name}:windows")
        t = self.w.node("ReduceSum", [x, self.w.const("axes", np.array([3, 5], np.int64))], name=f"{n.name}:sum",
                        keepdims=0)
        t = self.w.node("Div", [t, self.w.const("kh_f64", np.float64(kh))], name=f"{n.name}:div_kh")
        t = self.w.node("Div", [t, self.w.const("kw_f64", np.float64(kw))], name=f"{n.name}:div_kw")
        self._float(n, "Cast", [t], to=TP.FLOAT)

    def op_conv2d(self, n):
        a = n.attrs
        w = n.params["weight"].astype(_F32)
        ins = [self.float_in(n.inputs[0]), self.w.const(f"{n.name}.weight", w, share=False)]
        if "bias" in n.params:
            ins.append(self.w.const(f"{n.name}.bias", n.params["bias"].astype(_F32), share=False))
        self._float(n, "Conv", ins, kernel_shape=list(w.shape[2:]), strides=list(a.stride), pads=_pads(a.padding),
                    dilations=list(a.dilation), group=int(a.groups))

    def op_linear(self, n):
        w = n.params["weight"].astype(_F32)
        x = self.float_in(n.inputs[0])
        b = n.params.get("bias")
        if self.ndim(n.inputs[0]) == 2:
            ins = [x, self.w.const(f"{n.name}.weight", w, share=False)]
            if b is not None:
                ins.append(self.w.const(f"{n.name}.bias", b.astype(_F32), share=False))
            self._float(n, "Gemm", ins, transB=1)
            return
        wt = self.w.const(f"{n.name}.weight_t", np.ascontiguousarray(w.T), share=False)
        if b is None:
            self._float(n, "MatMul", [x, wt])
            return
        y = self.w.node("MatMul", [x, wt], name=f"{n.name}:MatMul", doc=n.source)
        self._float(n, "Add", [y, self.w.const(f"{n.name}.bias", b.astype(_F32), share=False)])

    def op_batch_norm(self, n):
        p = n.params
        x = self.float_in(n.inputs[0])
        if not self.quantized:
            self._float(n, "BatchNormalization", [x] + [self.w.const(f"{n.name}.{k}", p[k].astype(_F32), share=False)
                                                         for k in ("weight", "bias", "running_mean", "running_var")],
                        epsilon=float(n.attrs.eps))
            return
        # minquant's arithmetic: α = (1/√(var + eps))·γ, β = b − mean·α, y = x·α + β (float_ops.batch_norm)
        var, mean = p["running_var"].astype(_F32), p["running_mean"].astype(_F32)
        alpha = ((_F32(1) / np.sqrt(var + _F32(n.attrs.eps))) * p["weight"].astype(_F32)).astype(_F32)
        beta = (p["bias"].astype(_F32) - mean * alpha).astype(_F32)
        shape = _channel_shape(self.ndim(n.inputs[0]), alpha.size)
        y = self.w.node("Mul", [x, self.w.const(f"{n.name}.alpha", alpha.reshape(shape), share=False)],
                        name=f"{n.name}:Mul", doc=n.source)
        self._float(n, "Add", [y, self.w.const(f"{n.name}.beta", beta.reshape(shape), share=False)])

    def op_relu(self, n):
        self._float(n, "Relu")

    def op_relu6(self, n):
        self._float(n, "Clip", [self.float_in(n.inputs[0]), self.w.const("zero_f", _F32(0)), self.w.const("six_f", _F32(6))])

    def op_clip(self, n):
        a = n.attrs
        lo = "" if np.isinf(a.lo) else self.w.const("clip_lo_f", _F32(a.lo))
        hi = "" if np.isinf(a.hi) else self.w.const("clip_hi_f", _F32(a.hi))
        ins = [self.float_in(n.inputs[0]), lo, hi]
        while ins[-1] == "":   # an absent bound is an empty (optional) input; trailing ones are dropped
            ins.pop()
        self._float(n, "Clip", ins)

    def op_relu_clip(self, n):
        hi = n.params["hi"].astype(_F32)
        y = self.w.node("Relu", [self.float_in(n.inputs[0])], name=f"{n.name}:Relu", doc=n.source)
        t = self.w.const(f"{n.name}.hi", hi.reshape(_channel_shape(self.ndim(n.inputs[0]), hi.size)), share=False)
        self._float(n, "Min", [y, t])

    def _relu6_of_x_plus_3(self, n, x):
        t = self.w.node("Add", [x, self.w.const("three_f", _F32(3))], name=f"{n.name}:add3", doc=n.source)
        return self.w.node("Clip", [t, self.w.const("zero_f", _F32(0)), self.w.const("six_f", _F32(6))],
                           name=f"{n.name}:relu6")

    def op_hardswish(self, n):
        x = self.float_in(n.inputs[0])
        if not self.quantized:
            self._float(n, "HardSwish")
            return
        r = self._relu6_of_x_plus_3(n, x)       # x · relu6(x + 3) / 6, in minquant's order of operations
        p = self.w.node("Mul", [x, r], name=f"{n.name}:Mul")
        self._float(n, "Div", [p, self.w.const("six_f", _F32(6))])

    def op_hardsigmoid(self, n):
        x = self.float_in(n.inputs[0])
        if not self.quantized:
            self._float(n, "HardSigmoid", alpha=1.0 / 6.0, beta=0.5)
            return
        r = self._relu6_of_x_plus_3(n, x)
        self._float(n, "Div", [r, self.w.const("six_f", _F32(6))])

    def op_add(self, n):
        self._float(n, "Add")

    def op_mul(self, n):
        self._float(n, "Mul")

    def op_cat(self, n):
        self._float(n, "Concat", axis=int(n.attrs.dim))

    def op_flatten(self, n):
        op, extra, attrs = self._flatten_like(n, n.attrs.start_dim, n.attrs.end_dim)
        self._float(n, op, [self.float_in(n.inputs[0]), *extra], **attrs)

    def op_reshape(self, n):
        self._float(n, "Reshape", [self.float_in(n.inputs[0]),
                                   self.w.const("shape", np.array([0, *n.attrs.shape], np.int64))])

    def op_identity(self, n):
        self._float(n, "Identity")

    def op_max_pool2d(self, n):
        self._float(n, "MaxPool", **_max_pool_attrs(n.attrs))

    def op_avg_pool2d(self, n):
        self._float(n, "AveragePool", **self._avg_pool2d_attrs(n))

    def op_adaptive_avg_pool2d(self, n):
        h, w = self.shape(n.inputs[0])[2:]
        oh, ow = n.attrs.output_size
        if (oh, ow) == (1, 1):   # target='onnxruntime' reproduces MLAS's float global pool (global_avg_pool_mlas)
            self._float(n, "GlobalAveragePool")
        elif self.quantized and h % oh == 0 and w % ow == 0:
            self._exact_adaptive_avg(n, h, w, oh, ow)
        elif h % oh == 0 and w % ow == 0:
            k = [h // oh, w // ow]
            self._float(n, "AveragePool", kernel_shape=k, strides=k)
        else:
            self.fail(n, f"adaptive pooling {h}×{w} → {oh}×{ow} has unequal windows (ONNX has no adaptive pool)")


def dequant(q, s, z):
    """``f32(f32(q − z) · f32(s))``: the float value DequantizeLinear gives code ``q`` (affine.dequantize)."""
    from ...affine import dequantize
    return dequantize(np.asarray(q, np.int64), s, z)


def to_onnx(model, path, *, format: str = "qdq", opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` — a :class:`~minquant.quantized.QuantizedModel` or a float
    :class:`~minquant.graph.Graph` — to the ONNX file ``path`` (module docstring). Returns the path.

    ``format``: 'qdq' (float ops between QuantizeLinear / DequantizeLinear, as ONNX Runtime's quantizer
    writes them) or 'qoperator' (QLinearConv, QGemm, QLinearAdd...); ignored for a float Graph, which has
    no quantized values. ``opset``: ONNX opset of the default domain (≥ 14; com.microsoft ops use version 1).

    The batch dimension of inputs and outputs is symbolic (``N``); the other dimensions are the graph's
    ``input_shapes``. The model passes ``onnx.checker.check_model`` before it is written (all or nothing,
    :mod:`minquant.files`). Raises ValueError for an unsupported op (naming op and node), an unknown format, or a
    model that is neither a QuantizedModel nor a Graph."""
    onnx = _onnx()
    from ...graph import Graph
    from ...executor import value_info as run_value_info

    def value_info(model_or_graph):
        if isinstance(model_or_graph, Graph):
            return run_value_info(model_or_graph)
        return model_or_graph.shapes()
    if format not in FORMATS:
        raise ValueError(f"unknown ONNX format {format!r}; expected one of {FORMATS}")
    opset = int(opset)
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"opset {opset} outside [{MIN_OPSET}, {onnx.defs.onnx_opset_version()}]")
    if isinstance(model, Graph):
        graph, quantized, qparams, target = model, False, {}, None
        from ...quantized import ops as qops
        qnodes = [n.name for n in graph.nodes if n.op in qops.QUANTIZED_OPS]
        if qnodes:
            raise ValueError(f"to_onnx: graph {graph.name!r} has quantized nodes {qnodes[:3]}...; wrap it in a "
                             "QuantizedModel to export it")
    elif hasattr(model, "graph") and hasattr(model, "qparams") and hasattr(model, "target"):
        graph, quantized, qparams, target = model.graph, True, model.qparams, model.target
    else:
        raise ValueError(f"to_onnx expects a minquant QuantizedModel or Graph, got {type(model).__name__}")
    missing = [v for v in graph.inputs if v not in graph.input_shapes]
    if missing:
        raise ValueError(f"to_onnx: graph inputs {missing} have no input_shapes (needed for the ONNX signature)")
    ex = _Exporter(graph, format if quantized else "qdq", quantized=quantized, qparams=qparams,
                   shapes=value_info(model), onnx=onnx)
    g = ex.run()
    opsets = [onnx.helper.make_opsetid("", opset)]
    if ex.w.uses_ms:
        opsets.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    m = onnx.helper.make_model(g, opset_imports=opsets, producer_name="minquant",
                               doc_string=f"minquant {'quantized (' + format + ')' if quantized else 'float'} model "
                                          f"{graph.name!r}")
    m.ir_version = onnx.helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    meta = {"minquant.kind": "quantized" if quantized else "float", "minquant.format": format if quantized else "float"}
    if target:
        meta["minquant.target"] = str(target)
    onnx.helper.set_model_props(m, meta)
    try:
        onnx.checker.check_model(m)
    except onnx.checker.ValidationError as e:
        raise ValueError(f"to_onnx produced an invalid model (bug): {e}") from e
    path = Path(path)
    with atomic_write(path) as f:            # unique temporary file, fsync, rename: all or nothing
        f.write(m.SerializeToString())
    return path
