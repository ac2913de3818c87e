"""Import an ONNX model into minquant: a float model with :func:`from_onnx` → a
:class:`~minquant.graph.Graph`, a quantized one with :func:`from_onnx_quantized` → a
:class:`~minquant.quantized.QuantizedModel` whose integer kernels reproduce ONNX Runtime bit for bit
(as :func:`~minquant.interop.torch.from_torch` / :func:`~minquant.interop.torch.from_torch_quantized` do for
torch). Each refuses the other kind of file; :func:`onnx_is_quantized` tells which kind a file is.

    graph = from_onnx("model.onnx")              # float model
    y = minquant.run(graph, x)                   # ≈ onnxruntime (max |Δ| ≤ 1e-4 on logits)
    qm = from_onnx_quantized("model_int8.onnx")  # QDQ / QOperator / quantize_dynamic output
    y = qm(x)                                    # == onnxruntime, bit for bit (target="onnxruntime")

A graph made *only* of quantization operators (QuantizeLinear, DequantizeLinear, QLinearConv, QLinearMatMul,
ConvInteger, MatMulInteger, DynamicQuantizeLinear, and ORT's QGemm, QLinearAdd, QLinearMul,
QLinearGlobalAveragePool, MatMulNBits) comes back from :func:`from_onnx` as an
:class:`~minquant.interop.onnx.program.OnnxProgram` instead: run node by node, any input types, ranks and
counts, scales and weights as run-time inputs (:mod:`~minquant.interop.onnx.node_ops`, docs/onnx.md).

The work is split into modules beside this one: :mod:`~minquant.interop.onnx.proto` reads and checks the
file, :mod:`~minquant.interop.onnx.fuse` rewrites the graph into what ONNX Runtime runs,
:mod:`~minquant.interop.onnx.build` walks it into a minquant graph and :mod:`~minquant.interop.onnx.handlers`
holds one handler per ONNX op.

**Quantized models: build what ONNX Runtime runs.** A QDQ file (``QuantizeLinear`` / ``DequantizeLinear``
around float ops, what ``onnxruntime.quantization.quantize_static`` writes by default) is *not* run as
written: ORT's graph optimizer first fuses every ``DQ → op → Q`` group into one integer operator
(``QLinearConv``, ``QGemm``...). A group it does not fuse runs in float between the DQ and the Q, so the
same file gives different numbers depending on which groups fuse. :func:`fuse_qdq` reproduces the rules of
ORT's ``QDQSelectorActionTransformer`` (ORT 1.32, checked by dumping ``SessionOptions
.optimized_model_filepath``):

* ``Relu``/``Clip`` → ``Q`` whose codes cannot leave the clip range is deleted first (ORT's
  ``ReluQuantFusion``/``ClipQuantFusion``: ReLU when z = 0; Clip when s·(0 − z) ≥ lo − ε and
  s·(255 − z) ≤ hi + ε, float32, ε = FLT_EPSILON); ``quantize_static`` itself already drops such
  activations and gives the producer the activation's qparams;
* ``DQ(x), DQ(w), [DQ(b int32)] → Conv → Q`` → ``QLinearConv``; ``DQ, DQ, [DQ(b)] → Gemm → Q`` → ``QGemm``;
  ``DQ, DQ → MatMul → Q`` → ``QLinearMatMul``; ``DQ, DQ → Add → Q`` → ``QLinearAdd``;
  ``DQ → AveragePool / GlobalAveragePool → Q`` → ``QLinearAveragePool`` / ``QLinearGlobalAveragePool``;
  ``DQ… → Concat → Q`` → ``QLinearConcat`` — only when *every* input comes from a DQ and the op's only reader
  is the Q (a ``Relu``/``Clip`` made redundant by that Q may sit in between);
* ``DQ → MaxPool / Flatten / Reshape → Q`` with the same (scale, zero point) on both sides: DQ and Q are
  dropped and the op moves codes (its output keeps the input's qparams).

A QOperator file already contains those operators. Every integer operator then becomes a minquant node
(kernels under ``target="onnxruntime"``, minquant/target.py; steps of docs/quantization.md):

=============================  ==========================  =====================================================
ONNX op (after fusion)         minquant op                 kernel · the arithmetic facts that matter
=============================  ==========================  =====================================================
QuantizeLinear (per tensor)    ``quantize``                :func:`~minquant.affine.quantize`, rule 'onnxruntime':
                                                           ``clamp(rne(x / s) + z)`` — a division (steps 3, 6a)
DequantizeLinear               ``dequantize``              ``f32(s)·f32(q − z)`` (step 1)
QLinearConv                    ``qconv2d``                 :class:`~minquant.kernels.QConv2d`: u8×s8 products in
                                                           (kh, kw, c) pairs with int16 saturation on AVX2 without
                                                           VNNI, depthwise exact (steps 4, 8, 9); the file's int32
                                                           bias (step 5, :func:`bias_param`);
                                                           ``rne(f32(f32(acc + b)·f32(f32(s_x·s_w)/s_y))) + z_y``
                                                           (steps 6b, 7)
QGemm / QLinearMatMul          ``qlinear``                 :class:`~minquant.kernels.QLinear`, same arithmetic
                                                           (QLinearMatMul: no bias, weight = Bᵀ)
QLinearAdd                     ``qadd``                    :func:`~minquant.kernels.add.qadd`: float32 FMAs,
                                                           z_y added before rounding (steps 6c, 10)
QLinearGlobalAveragePool       ``qadaptive_avg_pool2d``    exact integer sum, then
                               (1×1, own y qparams)        ``rne(f32(acc)·f32(s_x/f32(s_y·f32(H·W)))) + z_y``
QLinearAveragePool             ``qavg_pool2d``             :func:`~minquant.kernels.pool.qavg_pool2d_onnxruntime`:
                               (own y qparams)             float32 — dequantize, sum row-major, ÷ count, then
                                                           ``rne(f32(f32(y/s_y) + z_y))``: z_y *before* rounding,
                                                           which moves ties (step 7 adds it after)
QLinearConcat                  ``qcat``                    equal qparams: codes copied; else dequantize →
                                                           quantize 'onnxruntime' (steps 1, 3)
MaxPool / Flatten / Reshape    ``qmax_pool2d`` /           codes move unchanged (max commutes with step 1)
on codes                       ``qflatten`` / ``qreshape``
DynamicQuantizeLinear →        ``dynamic_conv2d``          run-time uint8 qparams from min/max (with 0) in
ConvInteger → Cast → Mul →                                 float32, quantize by division, *exact* int32
Mul(s_x, s_w) → [Add(b)]                                   accumulation (ConvInteger does not saturate pairs),
                                                           ``f32(f32(acc)·f32(s_x·s_w)) + b`` (steps 3, 4, 10)
DynamicQuantizeLinear →        ``dynamic_linear``          the same with MLAS's u8×s8 GEMM (pairs saturate, as
MatMulInteger → … (ORT:                                    for QLinearMatMul; step 8)
DynamicQuantizeMatMul)
a float op ORT leaves          the float op                runs in float between ``dequantize`` and ``quantize``
between DQ and Q                                           (see below)
=============================  ==========================  =====================================================

Float ops inside quantized models must round as ORT's CPU kernels do. Relu, Clip, MaxPool, Add, Mul,
Flatten, Reshape, Concat are exact, and AveragePool sums row-major and divides as minquant does (measured).
Two are built in ORT's form: HardSigmoid as ``clip(f32(f32(x·α) + β), 0, 1)`` (an affine ``batch_norm`` +
``clip``) and HardSwish as ``x · HardSigmoid(x)`` (α = 1/6, β = ½), which is how ONNX defines it and ORT runs
it (minquant's one-op formulas differ in the last bit on ~30 % of values). A global average pool sums in
MLAS's order under 'onnxruntime' (:func:`~minquant.quantized.executor.global_avg_pool_mlas`) — it decides the
run-time qparams of a following DynamicQuantizeLinear. Not reproduced: a float Conv/Gemm that ORT does not
fuse (MLAS's float GEMM), and a pool that ORT's ``NchwcTransformer`` rewrites into its blocked kernel (one
reading the graph input directly or a float Conv's output).

**Clamps on codes** (how minquant's exporter writes a fused ReLU/ReLU6 whose range is not the codes', the
per-channel ReLU6 top after cross-layer equalization, a ``qclamp``): a uint8 ``Clip`` / ``Min`` / ``Max``
with constant uint8 bounds (QOperator), or ``DQ(s, z) → Clip / Min / Max / Relu → Q(s, z)`` with the same
qparams on both sides (QDQ; :func:`fuse_code_clamps` turns it into the uint8 form exactly: each float bound t
becomes the code Q(t), and ``Q(min(D(q), t)) = min(q, Q(t))``). The clamp then joins the node it reads when it
is that node's only reader: a ``qconv2d`` / ``qlinear`` output stage (``clamp``; a per-channel top becomes
``clamp_hi``), a ``qclamp``, a ``qadd`` (Clip to [z_y, 255] is its fused ReLU); else it is a ``qclamp``.
A plain ``Concat`` of codes with equal qparams is a ``qcat``; a Relu after a ``dynamic_*`` node is its fused
ReLU. So a minquant model read back from its own export has the same integer layers.

Each quantized value's ``float_names`` entry is the float tensor its QuantizeLinear read, so
``minquant.quantized.compare(from_onnx(fp32), from_onnx_quantized(int8), x)`` lines up the two imports layer by layer.

Float ops (both paths): Conv → ``conv2d``; Gemm, MatMul with a constant 2-D weight (+ a following Add of
a constant bias) → ``linear``; BatchNormalization → ``batch_norm``; Relu → ``relu``; Clip → ``relu6`` (0, 6),
``relu`` (0, ∞), ``identity`` (−∞, ∞) or ``clip``; Add / Mul of two activations → ``add`` / ``mul``, of an
activation and a per-channel or scalar constant → ``batch_norm`` with mean 0, var 1, eps 0 (which computes
exactly ``x·a + b``); GlobalAveragePool, and an AveragePool over the whole image → ``adaptive_avg_pool2d``
(1, 1); AveragePool / MaxPool → ``avg_pool2d`` / ``max_pool2d``; Flatten (axis 1) → ``flatten``; Reshape
(batch kept) → ``reshape``; Concat (axis ≥ 1) → ``cat``; HardSigmoid (α = 1/6, β = ½ — torch's) →
``hardsigmoid``, other α, β → ``batch_norm`` + ``clip``; HardSwish → ``hardswish``; Identity / Dropout → no
node; Min / Max with a scalar constant → ``clip``, Relu → Min with one value per channel → ``relu_clip``.
The float32 sequences minquant's exporter writes for ops ONNX has no exact form of come back as those ops
(:func:`fuse_float_patterns`): Add(3) → Clip(0, 6) → Mul(x) → Div(6) → ``hardswish``, Add(3) → Clip(0, 6) →
Div(6) → ``hardsigmoid``, Cast(double) → Reshape → ReduceSum → Div → Div → Cast(float) →
``adaptive_avg_pool2d``; Mul then Add of per-channel constants (a float ``batch_norm``) → one ``batch_norm``.
2-D NCHW only; symmetric padding only; the batch dimension may be symbolic, all others must be fixed.
Quantized models need uint8 activations and int8 weights (quantize_static's defaults); Sigmoid has no
minquant op.

Anything else raises ``ValueError`` naming every unsupported op type and node; a file that is not ONNX,
truncated or corrupt raises ``ValueError`` too. Nothing in the file is executed: tensors are read with
``onnx.numpy_helper``, external data files are refused.

This module imports ``onnx`` (inside the functions that need it); the graphs it builds hold only NumPy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ...graph import Graph
from .build import Builder, bias_param  # noqa: F401  (bias_param: read by minquant.lesson.golden)
from .fuse import fold_constants, fuse_code_clamps, fuse_dynamic, fuse_float_patterns, fuse_qdq, _is_q
from .handlers import FLOAT_OPS, HANDLERS, QUANTIZED_OPS, _QUANT_MARKERS, _check_supported
from .proto import OnnxGraph, describe, load_onnx
from .program import OnnxProgram, is_program, is_program_op

if TYPE_CHECKING:
    from ...quantized import QuantizedModel

__all__ = ["from_onnx", "from_onnx_quantized", "onnx_is_quantized", "OnnxProgram", "load_onnx", "fuse_qdq", "fuse_code_clamps",
           "fuse_float_patterns", "FLOAT_OPS", "QUANTIZED_OPS"]


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------

def _read(model, name):
    """(proto, :class:`OnnxGraph` with constants folded) of ``model``, renamed to ``name`` if given."""
    proto = load_onnx(model)
    g = OnnxGraph(proto)
    if name:
        g.name = name
    fold_constants(g)
    return proto, g


def _has_quantized_ops(g: OnnxGraph) -> bool:
    return any(n.op in _QUANT_MARKERS for n in g.nodes)


def onnx_is_quantized(model) -> bool:
    """True if the ONNX model (path, bytes or ``onnx.ModelProto``) has quantized operators — QDQ
    (``QuantizeLinear`` / ``DequantizeLinear``), QOperator (``QLinearConv``, ``QGemm``...) or
    ``quantize_dynamic``'s (``DynamicQuantizeLinear``, ``ConvInteger``, ``MatMulInteger``): read it with
    :func:`from_onnx_quantized`; False for a float model: read it with :func:`from_onnx`. Raises ValueError
    for a file that is not (valid) ONNX, like both."""
    return _has_quantized_ops(_read(model, None)[1])


def from_onnx(model, *, name: str | None = None, target="onnxruntime") -> Graph | OnnxProgram:
    """Import an ONNX model (path, bytes or ``onnx.ModelProto``):

    * a graph made only of quantization operators (QuantizeLinear, DequantizeLinear, QLinearConv,
      QLinearMatMul, ConvInteger, MatMulInteger, DynamicQuantizeLinear, ONNX Runtime's QGemm / QLinearAdd /
      QLinearMul / QLinearGlobalAveragePool / MatMulNBits) → an :class:`~minquant.interop.onnx.program.
      OnnxProgram`: any number of inputs and outputs of any rank and integer / float16 / float32 type, run
      node by node on minquant's kernels with ``target``'s arithmetic (default ONNX Runtime on this CPU);
    * a float model → a :class:`~minquant.graph.Graph`; run it with :func:`minquant.run` (module docstring:
      which ops, and the exporter's float sequences that come back as one op).

    Raises ValueError for a model that mixes quantized operators with float ops (a whole QDQ / QOperator /
    dynamic model, which ONNX Runtime rewrites before running: read it with :func:`from_onnx_quantized`),
    for files that are not (valid) ONNX and for unsupported ops or types (naming each op type and node)."""
    proto, g = _read(model, name)
    if is_program(g):
        return OnnxProgram(g, target=target)
    if _has_quantized_ops(g):
        try:
            g.image_inputs()
        except ValueError as e:                         # not an image model either: say what stops the executor
            others = sorted({n.op for n in g.nodes if not is_program_op(n)})
            raise ValueError(f"{describe(model)} mixes quantization operators with ops that minquant's executor "
                             f"of quantization operators does not run ({', '.join(others)}), and is not a whole "
                             f"image model for from_onnx_quantized ({e})") from None
    g.image_inputs()                                    # a Graph takes float32 images (ValueError naming the input)
    if _has_quantized_ops(g):
        raise ValueError(f"{describe(model)} has quantized operators (QDQ/QOperator/dynamic); use "
                         "from_onnx_quantized")
    nodes = fuse_float_patterns(g, g.nodes)
    _check_supported(nodes, False)
    b = Builder(g, nodes, HANDLERS)
    b.symbolic_batch = _symbolic_batch(proto)
    return b.build()


def from_onnx_quantized(model, *, name: str | None = None, target="onnxruntime") -> QuantizedModel:
    """Import a quantized ONNX model (QDQ, QOperator, or ``quantize_dynamic`` output; path, bytes or
    ``onnx.ModelProto``) as a :class:`~minquant.quantized.QuantizedModel` built from what ONNX Runtime
    actually runs after its graph optimizer (module docstring), so that its output equals ORT's bit for bit
    under ``target`` (default ``"onnxruntime"`` on this host; ``Target("onnxruntime", "avx2")`` gives what
    ORT computes on an AVX2 machine without VNNI; another framework runs the same integer graph with that
    framework's arithmetic).

    Raises ValueError for a model without quantized operators (read it with :func:`from_onnx`), for files
    that are not (valid) ONNX and for unsupported ops (naming each op type and node)."""
    proto, g = _read(model, name)
    try:
        g.image_inputs()
    except ValueError as e:
        if is_program(g):
            raise ValueError(f"{e}; {describe(model)} is a graph of quantization operators only: run it with "
                             "from_onnx (an OnnxProgram takes any input types)") from None
        raise
    if not _has_quantized_ops(g):
        raise ValueError(f"{describe(model)} has no quantized operators; use from_onnx")
    # the float tensor each QuantizeLinear reads: what the quantized value approximates (for compare())
    q_source = {n.outputs[0]: n.inputs[0] for n in g.nodes if _is_q(n)}
    nodes = fuse_dynamic(g, fuse_qdq(g))
    nodes = fuse_float_patterns(g, fuse_code_clamps(g, nodes, q_source))
    _check_supported(nodes, True)
    b = Builder(g, nodes, HANDLERS)
    b.symbolic_batch = _symbolic_batch(proto)
    b.exact = True
    graph = b.build()
    from ...quantized import QuantizedModel
    float_names = {n.name: q_source[n.name] for n in graph.nodes if n.name in q_source}
    return QuantizedModel(graph, target, float_names=float_names,
                          meta={"source": "onnx", "onnx_opset": g.opset.get("", 0)})


def _symbolic_batch(proto) -> bool:
    for vi in proto.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            return True
    return False
