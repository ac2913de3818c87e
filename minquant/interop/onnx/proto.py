"""Reading an ONNX file: :func:`load_onnx` (a path, bytes or ModelProto, checked and never executed),
:class:`OnnxGraph` (nodes with decoded attributes, initializers and Constant nodes as NumPy constants, input
shapes, opset) and the small attribute helpers the handlers share (``pads`` / ``auto_pad``, 2-D ints, the
error that names a node).

This module imports ``onnx`` inside the functions that need it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ONode", "OnnxGraph", "load_onnx", "describe", "onnx_pads"]


# ----------------------------------------------------------------------------------------------------------
# Reading the file
# ----------------------------------------------------------------------------------------------------------

@dataclass
class ONode:
    """One ONNX node, with its attributes decoded to Python values (ints, floats, strings, lists, arrays)."""
    op: str
    name: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    domain: str = ""
    opset: int = 0          # the version of its domain the model imports (0: unknown)

    def where(self) -> str:
        return f"{self.op} (node {self.name!r})"


def _tensor(t, where: str) -> np.ndarray:
    from onnx import TensorProto, numpy_helper
    if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
        raise ValueError(f"{where}: tensor {t.name!r} is stored in an external data file; from_onnx reads "
                         "self-contained .onnx files only")
    try:
        return np.array(numpy_helper.to_array(t))
    except Exception as e:
        raise ValueError(f"{where}: tensor {t.name!r} cannot be read ({type(e).__name__}: {e}); the file is "
                         "corrupt or truncated") from None


def _attr_value(a, where: str):
    from onnx import helper
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if hasattr(v, "dims") and hasattr(v, "data_type"):       # a TensorProto (Constant's value)
        return _tensor(v, where)
    if isinstance(v, list):
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
    return v


def describe(model) -> str:
    """How messages name ``model`` (a path, bytes or ModelProto): the path quoted, "the given bytes" or
    "the ModelProto"."""
    if isinstance(model, (str, os.PathLike)):
        return repr(str(Path(model)))
    if isinstance(model, (bytes, bytearray)):
        return "the given bytes"
    return "the ModelProto"


def load_onnx(model):
    """An ``onnx.ModelProto`` from a path, raw bytes or a ModelProto — checked, never executed.

    Raises ValueError for a missing file, bytes that are not an ONNX protobuf (or are truncated), a model
    that fails ``onnx.checker`` or that needs external data files."""
    import onnx

    what = describe(model)
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        if isinstance(model, (bytes, bytearray)):
            data = bytes(model)
        elif isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not path.is_file():
                raise ValueError(f"ONNX file {what} does not exist")
            data = path.read_bytes()
        else:
            raise ValueError(f"from_onnx needs a path, bytes or an onnx.ModelProto, got {type(model).__name__}")
        if not data:
            raise ValueError(f"{what} is empty, not an ONNX model")
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except Exception as e:
            raise ValueError(f"{what} is not a valid ONNX model (protobuf parse error: {e}); the file is "
                             "corrupt, truncated or not ONNX") from None
    if proto.ir_version <= 0 or not proto.opset_import or not proto.HasField("graph"):
        raise ValueError(f"{what} is not a valid ONNX model (no IR version, opset or graph); the file is "
                         "corrupt, truncated or not ONNX")
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
            raise ValueError(f"{what}: initializer {t.name!r} is stored in an external data file; from_onnx "
                             "reads self-contained .onnx files only")
    try:
        onnx.checker.check_model(_with_shape_fields(proto))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{what} is not a valid ONNX model ({type(e).__name__}: {msg}); the file is corrupt, "
                         "truncated or not ONNX") from None
    return proto


def _with_shape_fields(proto):
    """``proto``, or a copy in which every graph input / output declared without a ``shape`` field gets an
    empty one: the IR makes the shape optional (ONNX Runtime runs such files, minquant's golden recordings
    hold some), ``onnx.checker`` requires the field. The copy is only checked, never read."""
    def missing(vi):
        return vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")
    if not any(missing(vi) for vi in list(proto.graph.input) + list(proto.graph.output)):
        return proto
    copy = type(proto)()
    copy.CopyFrom(proto)
    for vi in list(copy.graph.input) + list(copy.graph.output):
        if missing(vi):
            vi.type.tensor_type.shape.SetInParent()
    return copy


class OnnxGraph:
    """The parts of an ONNX graph the importer needs: ``nodes`` (:class:`ONode`, Constant nodes folded
    into ``consts``), ``consts`` (initializers and constants by name, NumPy), ``input_types`` (name →
    (ONNX element type number, dims with None where symbolic), every non-initializer input), ``inputs``
    (name → example shape, batch 1 where symbolic — only for a model taking float32 images: reading it checks
    that, :meth:`image_inputs`), ``outputs`` (names), ``opset`` (domain → version)."""

    def __init__(self, proto):
        g = proto.graph
        self.name = g.name or "onnx_model"
        self.opset = {o.domain or "": o.version for o in proto.opset_import}
        self.consts: dict[str, np.ndarray] = {t.name: _tensor(t, "initializer") for t in g.initializer}
        self.nodes: list[ONode] = []
        self.input_types: dict[str, tuple] = {}
        self._inputs = None
        for vi in g.input:
            if vi.name in self.consts:
                continue
            if not vi.type.HasField("tensor_type"):
                self.input_types[vi.name] = (None, None)
                continue
            tt = vi.type.tensor_type
            dims = None if not tt.HasField("shape") else [
                int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
            self.input_types[vi.name] = (int(tt.elem_type), dims)
        self.outputs = [vi.name for vi in g.output]
        for n in g.node:
            where = f"{n.op_type} (node {n.name!r})"
            attrs = {a.name: _attr_value(a, where) for a in n.attribute}
            if n.op_type == "Constant" and (n.domain or "") == "":
                if "value" not in attrs:
                    raise ValueError(f"{where}: only Constant nodes with a tensor 'value' are supported")
                self.consts[n.output[0]] = np.asarray(attrs["value"])
                continue
            domain = n.domain or ""
            self.nodes.append(ONode(n.op_type, n.name or n.output[0], list(n.input), list(n.output), attrs,
                                    domain, self.opset.get(domain, self.opset.get("ai.onnx" if not domain else
                                                                                  domain, 0))))

    @property
    def inputs(self) -> dict:
        """name → example shape of each input of a model taking float32 images (:meth:`image_inputs`)."""
        if self._inputs is None:
            self._inputs = self.image_inputs()
        return self._inputs

    def image_inputs(self) -> dict:
        """name → example shape (batch 1 where symbolic) of every graph input, checking that each is a float32
        tensor with a batch dimension and fixed other sizes, as minquant's float and quantized models take
        (ValueError naming the input otherwise)."""
        out = {}
        for name, (elem, dims) in self.input_types.items():
            if elem != 1:
                raise ValueError(f"graph input {name!r} must be a float32 tensor (minquant models take float "
                                 "input)")
            shape = []
            for i, d in enumerate(dims or []):
                if d is not None:
                    shape.append(d)
                elif i == 0:
                    shape.append(1)                      # symbolic batch
                else:
                    raise ValueError(f"graph input {name!r} has a symbolic size in dimension {i}; only the "
                                     "batch (dimension 0) may be symbolic")
            if len(shape) < 2:
                raise ValueError(f"graph input {name!r} needs a batch dimension and at least one more, got "
                                 f"rank {len(shape)}")
            out[name] = tuple(shape)
        if not out:
            raise ValueError("the ONNX graph has no (non-initializer) input")
        return out


# ----------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------

def _fail(n: ONode, problem: str):
    raise ValueError(f"cannot import ONNX {n.where()}: {problem}")


def onnx_pads(n: ONode, in_size, kernel, strides, dilations) -> list:
    """ONNX's ``pads`` [begin₁ … begin_d, end₁ … end_d] of a d-dimensional window op, from the ``pads`` or
    ``auto_pad`` attribute: SAME_UPPER / SAME_LOWER give each axis ``total = max(0, (⌈size/stride⌉ − 1)·stride
    + dilation·(kernel − 1) + 1 − size)``, the odd unit at the end (UPPER) or the beginning (LOWER)."""
    d = len(in_size)
    auto = n.attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = [int(p) for p in n.attrs.get("pads", [0] * 2 * d)]
    elif auto == "VALID":
        pads = [0] * 2 * d
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * 2 * d
        for i in range(d):
            out = -(-in_size[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - in_size[i])
            small, big = total // 2, total - total // 2
            pads[i], pads[i + d] = (small, big) if auto == "SAME_UPPER" else (big, small)
    else:
        _fail(n, f"unknown auto_pad {auto!r}")
    if len(pads) != 2 * d:
        _fail(n, f"pads {pads} do not have two values per spatial axis ({d})")
    if min(pads) < 0:
        _fail(n, f"negative pads {pads} are not supported")
    return pads


def _pads2d(n: ONode, in_hw, kernel, strides, dilations=(1, 1)):
    """Symmetric (ph, pw) from ONNX ``pads`` [top, left, bottom, right] / ``auto_pad`` (ValueError if
    asymmetric: minquant's ops pad both sides equally)."""
    if len(n.attrs.get("pads", [0] * 4)) != 4:
        _fail(n, f"only 2-D (NCHW) operators are supported, got pads {list(n.attrs['pads'])}")
    pads = onnx_pads(n, in_hw, kernel, strides, dilations)
    if pads[0] != pads[2] or pads[1] != pads[3]:
        _fail(n, f"asymmetric padding {pads} (top, left, bottom, right) is not supported")
    return int(pads[0]), int(pads[1])


def _ints2(n: ONode, key: str, default):
    v = n.attrs.get(key, default)
    v = [int(t) for t in v]
    if len(v) != 2:
        _fail(n, f"only 2-D operators are supported ({key} = {v})")
    return tuple(v)

