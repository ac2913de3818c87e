"""The .tflite file itself: a neutral description of one subgraph, written with and read back through the
``tflite`` package's flatbuffer builders (the TFLite schema; no TensorFlow needed).

    TfModel(tensors=[TfTensor...], ops=[TfOp...], inputs=[tensor index], outputs=[tensor index])
    data = write_model(model)            # bytes of a .tflite file (schema version 3)
    model = read_model(data)             # the same description from any .tflite file (first subgraph)

A :class:`TfTensor` holds its name, shape, type (``"float32"``, ``"int8"``, ``"int32"``, ``"uint8"``,
``"int16"``, ``"int64"``), constant data (or None for an activation) and quantization (scales, zero points,
``quantized_dimension``). A :class:`TfOp` names its builtin operator (``"CONV_2D"``...), its tensor indices
and its options as one of the small option dataclasses below (no string-keyed bags). Only what minquant
reads and writes is described; anything else in a file is refused by the importer, not here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["TfTensor", "TfOp", "TfModel", "ConvOptions", "DepthwiseOptions", "FullyConnectedOptions",
           "PoolOptions", "ReducerOptions", "ActivationOptions", "ReshapeOptions", "write_model", "read_model",
           "TYPES"]

#: TensorType name → (schema number, NumPy dtype)
TYPES = {"float32": (0, np.float32), "int32": (2, np.int32), "uint8": (3, np.uint8), "int64": (4, np.int64),
         "int16": (7, np.int16), "int8": (9, np.int8)}
_TYPE_NAMES = {num: name for name, (num, _) in TYPES.items()}
#: fused activations: schema number ↔ name
ACTIVATIONS = {0: "", 1: "relu", 3: "relu6"}
_ACT_NUM = {v: k for k, v in ACTIVATIONS.items()}
_PADDING = {0: "SAME", 1: "VALID"}


@dataclass
class TfTensor:
    name: str
    shape: tuple
    dtype: str
    data: np.ndarray | None = None
    scale: np.ndarray | None = None          # float32, one per tensor or per quantized_dimension slice
    zero_point: np.ndarray | None = None     # int64
    quantized_dimension: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale is not None and len(self.scale) > 0


@dataclass(frozen=True)
class ConvOptions:          # CONV_2D
    padding: str = "VALID"
    stride: tuple = (1, 1)   # (h, w)
    dilation: tuple = (1, 1)
    activation: str = ""


@dataclass(frozen=True)
class DepthwiseOptions:     # DEPTHWISE_CONV_2D
    padding: str = "VALID"
    stride: tuple = (1, 1)
    dilation: tuple = (1, 1)
    depth_multiplier: int = 1
    activation: str = ""


@dataclass(frozen=True)
class FullyConnectedOptions:
    activation: str = ""
    keep_num_dims: bool = False


@dataclass(frozen=True)
class PoolOptions:          # AVERAGE_POOL_2D, MAX_POOL_2D
    padding: str = "VALID"
    stride: tuple = (1, 1)
    filter: tuple = (1, 1)
    activation: str = ""


@dataclass(frozen=True)
class ReducerOptions:       # MEAN
    keep_dims: bool = True


@dataclass(frozen=True)
class ActivationOptions:    # ADD, MUL
    activation: str = ""


@dataclass(frozen=True)
class ReshapeOptions:
    new_shape: tuple = ()


@dataclass
class TfOp:
    kind: str                # builtin operator name, e.g. "CONV_2D"
    inputs: list
    outputs: list
    options: object = None


@dataclass
class TfModel:
    tensors: list = field(default_factory=list)
    ops: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    description: str = "minquant"

    def add(self, tensor: TfTensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1


# ---------------------------------------------------------------------------------------------- writing
def _vector(b, start, items, prepend):
    start(b, len(items))
    for it in reversed(items):
        prepend(it)
    return b.EndVector()


def _options(b, op):
    """(BuiltinOptions type number, table offset) of an op's options."""
    import tflite
    o, k = op.options, op.kind
    if k == "CONV_2D":
        o = o or ConvOptions()
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, 0 if o.padding == "SAME" else 1)
        tflite.Conv2DOptionsAddStrideH(b, o.stride[0])
        tflite.Conv2DOptionsAddStrideW(b, o.stride[1])
        tflite.Conv2DOptionsAddDilationHFactor(b, o.dilation[0])
        tflite.Conv2DOptionsAddDilationWFactor(b, o.dilation[1])
        tflite.Conv2DOptionsAddFusedActivationFunction(b, _ACT_NUM[o.activation])
        return tflite.BuiltinOptions.Conv2DOptions, tflite.Conv2DOptionsEnd(b)
    if k == "DEPTHWISE_CONV_2D":
        tflite.DepthwiseConv2DOptionsStart(b)
        tflite.DepthwiseConv2DOptionsAddPadding(b, 0 if o.padding == "SAME" else 1)
        tflite.DepthwiseConv2DOptionsAddStrideH(b, o.stride[0])
        tflite.DepthwiseConv2DOptionsAddStrideW(b, o.stride[1])
        tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, o.dilation[0])
        tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, o.dilation[1])
        tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, o.depth_multiplier)
        tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, _ACT_NUM[o.activation])
        return tflite.BuiltinOptions.DepthwiseConv2DOptions, tflite.DepthwiseConv2DOptionsEnd(b)
    if k == "FULLY_CONNECTED":
        o = o or FullyConnectedOptions()
        tflite.FullyConnectedOptionsStart(b)
        tflite.FullyConnectedOptionsAddFusedActivationFunction(b, _ACT_NUM[o.activation])
        tflite.FullyConnectedOptionsAddKeepNumDims(b, o.keep_num_dims)
        return tflite.BuiltinOptions.FullyConnectedOptions, tflite.FullyConnectedOptionsEnd(b)
    if k in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        tflite.Pool2DOptionsStart(b)
        tflite.Pool2DOptionsAddPadding(b, 0 if o.padding == "SAME" else 1)
        tflite.Pool2DOptionsAddStrideH(b, o.stride[0])
        tflite.Pool2DOptionsAddStrideW(b, o.stride[1])
        tflite.Pool2DOptionsAddFilterHeight(b, o.filter[0])
        tflite.Pool2DOptionsAddFilterWidth(b, o.filter[1])
        tflite.Pool2DOptionsAddFusedActivationFunction(b, _ACT_NUM[o.activation])
        return tflite.BuiltinOptions.Pool2DOptions, tflite.Pool2DOptionsEnd(b)
    if k == "MEAN":
        o = o or ReducerOptions()
        tflite.ReducerOptionsStart(b)
        tflite.ReducerOptionsAddKeepDims(b, o.keep_dims)
        return tflite.BuiltinOptions.ReducerOptions, tflite.ReducerOptionsEnd(b)
    if k in ("ADD", "MUL"):
        o = o or ActivationOptions()
        start, act, end, num = ((tflite.AddOptionsStart, tflite.AddOptionsAddFusedActivationFunction,
                                 tflite.AddOptionsEnd, tflite.BuiltinOptions.AddOptions) if k == "ADD" else
                                (tflite.MulOptionsStart, tflite.MulOptionsAddFusedActivationFunction,
                                 tflite.MulOptionsEnd, tflite.BuiltinOptions.MulOptions))
        start(b)
        act(b, _ACT_NUM[o.activation])
        return num, end(b)
    if k == "RESHAPE":
        shape = _vector(b, tflite.ReshapeOptionsStartNewShapeVector, list(o.new_shape), b.PrependInt32)
        tflite.ReshapeOptionsStart(b)
        tflite.ReshapeOptionsAddNewShape(b, shape)
        return tflite.BuiltinOptions.ReshapeOptions, tflite.ReshapeOptionsEnd(b)
    return 0, None


def write_model(model: TfModel) -> bytes:
    """The flatbuffer bytes of ``model`` (module docstring)."""
    import flatbuffers
    import tflite
    b = flatbuffers.Builder(1 << 16)
    kinds = []
    for op in model.ops:
        if op.kind not in kinds:
            kinds.append(op.kind)
    codes = []
    for k in kinds:
        num = getattr(tflite.BuiltinOperator, k, None)
        if num is None:
            raise ValueError(f"unknown TFLite builtin operator {k!r}")
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(num, 127))
        tflite.OperatorCodeAddBuiltinCode(b, num)
        tflite.OperatorCodeAddVersion(b, 1)
        codes.append(tflite.OperatorCodeEnd(b))
    buffers = []
    tflite.BufferStart(b)
    buffers.append(tflite.BufferEnd(b))      # buffer 0: empty, by convention
    tensors = []
    for t in model.tensors:
        if t.dtype not in TYPES:
            raise ValueError(f"tensor {t.name!r}: unsupported type {t.dtype!r}")
        buf_index = 0
        if t.data is not None:
            raw = np.ascontiguousarray(t.data, dtype=TYPES[t.dtype][1]).tobytes()
            b.StartVector(1, len(raw), 16)          # 16-byte aligned, as LiteRT's own writer does
            b.head = b.head - len(raw)
            b.Bytes[b.head:b.head + len(raw)] = raw
            b.vectorNumElems = len(raw)
            data = b.EndVector()
            tflite.BufferStart(b)
            tflite.BufferAddData(b, data)
            buffers.append(tflite.BufferEnd(b))
            buf_index = len(buffers) - 1
        name = b.CreateString(t.name)
        shape = _vector(b, tflite.TensorStartShapeVector, [int(d) for d in t.shape], b.PrependInt32)
        quant = None
        if t.quantized:
            sc = _vector(b, tflite.QuantizationParametersStartScaleVector,
                         [float(v) for v in np.asarray(t.scale, np.float32)], b.PrependFloat32)
            zp = _vector(b, tflite.QuantizationParametersStartZeroPointVector,
                         [int(v) for v in np.asarray(t.zero_point)], b.PrependInt64)
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, sc)
            tflite.QuantizationParametersAddZeroPoint(b, zp)
            tflite.QuantizationParametersAddQuantizedDimension(b, int(t.quantized_dimension))
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, TYPES[t.dtype][0])
        tflite.TensorAddBuffer(b, buf_index)
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        tensors.append(tflite.TensorEnd(b))
    ops = []
    for op in model.ops:
        ins = _vector(b, tflite.OperatorStartInputsVector, [int(i) for i in op.inputs], b.PrependInt32)
        outs = _vector(b, tflite.OperatorStartOutputsVector, [int(i) for i in op.outputs], b.PrependInt32)
        opt_type, opt = _options(b, op)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, kinds.index(op.kind))
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if opt is not None:
            tflite.OperatorAddBuiltinOptionsType(b, opt_type)
            tflite.OperatorAddBuiltinOptions(b, opt)
        ops.append(tflite.OperatorEnd(b))
    t_vec = _vector(b, tflite.SubGraphStartTensorsVector, tensors, b.PrependUOffsetTRelative)
    i_vec = _vector(b, tflite.SubGraphStartInputsVector, list(model.inputs), b.PrependInt32)
    o_vec = _vector(b, tflite.SubGraphStartOutputsVector, list(model.outputs), b.PrependInt32)
    op_vec = _vector(b, tflite.SubGraphStartOperatorsVector, ops, b.PrependUOffsetTRelative)
    sg_name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, t_vec)
    tflite.SubGraphAddInputs(b, i_vec)
    tflite.SubGraphAddOutputs(b, o_vec)
    tflite.SubGraphAddOperators(b, op_vec)
    tflite.SubGraphAddName(b, sg_name)
    sg = tflite.SubGraphEnd(b)
    sg_vec = _vector(b, tflite.ModelStartSubgraphsVector, [sg], b.PrependUOffsetTRelative)
    code_vec = _vector(b, tflite.ModelStartOperatorCodesVector, codes, b.PrependUOffsetTRelative)
    buf_vec = _vector(b, tflite.ModelStartBuffersVector, buffers, b.PrependUOffsetTRelative)
    desc = b.CreateString(model.description)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, code_vec)
    tflite.ModelAddSubgraphs(b, sg_vec)
    tflite.ModelAddDescription(b, desc)
    tflite.ModelAddBuffers(b, buf_vec)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


# ---------------------------------------------------------------------------------------------- reading
def _read_options(op, kind):
    import tflite
    tab = op.BuiltinOptions()
    if tab is None:
        return None

    def as_(cls):
        o = cls()
        o.Init(tab.Bytes, tab.Pos)
        return o
    if kind == "CONV_2D":
        o = as_(tflite.Conv2DOptions)
        return ConvOptions(_PADDING[o.Padding()], (o.StrideH(), o.StrideW()),
                           (o.DilationHFactor(), o.DilationWFactor()), _act(o.FusedActivationFunction()))
    if kind == "DEPTHWISE_CONV_2D":
        o = as_(tflite.DepthwiseConv2DOptions)
        return DepthwiseOptions(_PADDING[o.Padding()], (o.StrideH(), o.StrideW()),
                                (o.DilationHFactor(), o.DilationWFactor()), o.DepthMultiplier(),
                                _act(o.FusedActivationFunction()))
    if kind == "FULLY_CONNECTED":
        o = as_(tflite.FullyConnectedOptions)
        if o.WeightsFormat() != 0:
            raise ValueError("FULLY_CONNECTED with shuffled weights is not supported")
        return FullyConnectedOptions(_act(o.FusedActivationFunction()), bool(o.KeepNumDims()))
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        o = as_(tflite.Pool2DOptions)
        return PoolOptions(_PADDING[o.Padding()], (o.StrideH(), o.StrideW()), (o.FilterHeight(), o.FilterWidth()),
                           _act(o.FusedActivationFunction()))
    if kind == "MEAN":
        return ReducerOptions(bool(as_(tflite.ReducerOptions).KeepDims()))
    if kind == "ADD":
        return ActivationOptions(_act(as_(tflite.AddOptions).FusedActivationFunction()))
    if kind == "MUL":
        return ActivationOptions(_act(as_(tflite.MulOptions).FusedActivationFunction()))
    if kind == "RESHAPE":
        o = as_(tflite.ReshapeOptions)
        return ReshapeOptions(tuple(int(v) for v in o.NewShapeAsNumpy()) if o.NewShapeLength() else ())
    return None


def _act(num):
    if num not in ACTIVATIONS:
        raise ValueError(f"fused activation {num} (TFLite ActivationFunctionType) is not supported")
    return ACTIVATIONS[num]


def read_model(data: bytes) -> TfModel:
    """The description of the first subgraph of a .tflite file's bytes (module docstring)."""
    import tflite
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"read_model takes the bytes of a .tflite file, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("not a .tflite file (no 'TFL3' flatbuffer identifier)")
    try:
        m = tflite.Model.GetRootAs(data, 0)
        if m.SubgraphsLength() < 1:
            raise ValueError("the model has no subgraph")
        if m.SubgraphsLength() > 1:
            raise ValueError(f"the model has {m.SubgraphsLength()} subgraphs; minquant reads one")
        names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        kinds = []
        for j in range(m.OperatorCodesLength()):
            c = m.OperatorCodes(j)
            num = max(c.BuiltinCode(), c.DeprecatedBuiltinCode())
            kinds.append(names.get(num, f"builtin {num}") if num != tflite.BuiltinOperator.CUSTOM
                         else f"custom {c.CustomCode()!r}")
        sg = m.Subgraphs(0)
        out = TfModel(description=(m.Description() or b"").decode("utf-8", "replace"))
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            tnum = t.Type()
            if tnum not in _TYPE_NAMES:
                raise ValueError(f"tensor {i} has TensorType {tnum}, which minquant does not read")
            dtype = _TYPE_NAMES[tnum]
            arr = None
            buf = m.Buffers(t.Buffer())
            if buf is not None and buf.DataLength() > 0:
                arr = np.frombuffer(buf.DataAsNumpy().tobytes(), dtype=TYPES[dtype][1])
                arr = arr.reshape(tuple(t.ShapeAsNumpy())) if t.ShapeLength() else arr.reshape(())
            elif buf is not None and buf.Offset() > 1:
                raise ValueError("buffers stored outside the flatbuffer (offset/size) are not supported")
            q = t.Quantization()
            scale = zp = None
            qdim = 0
            if q is not None and q.ScaleLength() > 0:
                if q.DetailsType() != 0:
                    raise ValueError(f"tensor {i}: custom quantization details are not supported")
                scale = q.ScaleAsNumpy().astype(np.float32)
                zp = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros(len(scale), np.int64)
                qdim = q.QuantizedDimension()
            if t.Sparsity() is not None:
                raise ValueError(f"tensor {i}: sparse tensors are not supported")
            shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            out.tensors.append(TfTensor((t.Name() or b"").decode("utf-8", "replace"), shape, dtype, arr, scale, zp,
                                        qdim))
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            kind = kinds[op.OpcodeIndex()]
            out.ops.append(TfOp(kind, [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else [],
                                [int(v) for v in op.OutputsAsNumpy()], _read_options(op, kind)))
        out.inputs = [int(v) for v in sg.InputsAsNumpy()]
        out.outputs = [int(v) for v in sg.OutputsAsNumpy()]
        return out
    except ValueError:
        raise
    except Exception as e:   # noqa: BLE001 — a damaged flatbuffer raises anything from struct/IndexError
        raise ValueError(f"damaged .tflite file ({type(e).__name__}: {e})") from e
