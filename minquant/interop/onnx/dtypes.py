"""ONNX tensor element types as :class:`~minquant.interop.onnx.program.OnnxProgram` holds them: a
:class:`Tensor` is a NumPy array plus the ONNX type it stands for, because the array alone does not say it
(minquant keeps int4 / int2 codes one per ``int8`` byte, uint4 / uint2 one per ``uint8`` byte — the type
decides the code range, and a zero point's type decides what QuantizeLinear produces).

=============================  =================  =========================================================
ONNX type                      NumPy storage      range / note
=============================  =================  =========================================================
UINT8, INT8                    uint8, int8        [0, 255], [−128, 127]
UINT16, INT16                  uint16, int16      [0, 65535], [−32768, 32767]
UINT4, INT4                    uint8, int8        [0, 15], [−8, 7], one code per byte
UINT2, INT2                    uint8, int8        [0, 3], [−2, 1], one code per byte
INT32, INT64                   int32, int64       accumulators, biases, shapes
FLOAT, FLOAT16                 float32, float16
FLOAT8E4M3FN, …E5M2(FNUZ),     ml_dtypes'         float8 / float4 codes (QuantizeLinear / DequantizeLinear)
FLOAT4E2M1                     float8_* / float4
=============================  =================  =========================================================

Arrays of ``ml_dtypes``' int4 / uint4 / int2 / uint2 (what ``onnx.numpy_helper.to_array`` returns for those
types) are taken as codes too. The float8 types (FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ)
and FLOAT4E2M1 are held in ``ml_dtypes``' own dtypes (:data:`MINIFLOATS`; only QuantizeLinear /
DequantizeLinear take them, :mod:`~minquant.interop.onnx.minifloat`). float8e8m0, float6 and bfloat16
tensors are refused with the reason (:data:`UNSUPPORTED`).

This module imports ``onnx`` inside :func:`type_name` and ``ml_dtypes`` inside :func:`storage` only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Tensor", "STORAGE", "CODE_TYPES", "MINIFLOATS", "UNSUPPORTED", "type_name", "tensor_of", "storage"]

#: ONNX type name → NumPy dtype minquant stores it in
STORAGE = {"UINT8": np.uint8, "INT8": np.int8, "UINT16": np.uint16, "INT16": np.int16, "UINT4": np.uint8,
           "INT4": np.int8, "UINT2": np.uint8, "INT2": np.int8, "INT32": np.int32, "INT64": np.int64,
           "FLOAT": np.float32, "FLOAT16": np.float16}
#: ONNX code type → :func:`minquant.affine.qtype` name (the types QuantizeLinear may produce)
CODE_TYPES = {"UINT8": "uint8", "INT8": "int8", "UINT16": "uint16", "INT16": "int16", "UINT4": "uint4",
              "INT4": "int4", "UINT2": "uint2", "INT2": "int2"}
#: ONNX float8 / float4 type → its ``ml_dtypes`` dtype name (QuantizeLinear / DequantizeLinear only)
MINIFLOATS = {"FLOAT8E4M3FN": "float8_e4m3fn", "FLOAT8E4M3FNUZ": "float8_e4m3fnuz", "FLOAT8E5M2": "float8_e5m2",
              "FLOAT8E5M2FNUZ": "float8_e5m2fnuz", "FLOAT4E2M1": "float4_e2m1fn"}
#: ONNX types minquant does not compute with → why
UNSUPPORTED = {
    "FLOAT8E8M0": "float8e8m0 (power-of-two scales, rounded up) is a format minquant does not implement",
    "FLOAT6E2M3": "float6 codes are a floating-point format minquant does not implement",
    "FLOAT6E3M2": "float6 codes are a floating-point format minquant does not implement",
    "BFLOAT16": "NumPy has no bfloat16 type; minquant computes in float16 and float32 only",
}
#: ml_dtypes' sub-byte integer dtypes (as numpy_helper returns them) → ONNX type name
_ML_DTYPES = {"int4": "INT4", "uint4": "UINT4", "int2": "INT2", "uint2": "UINT2"}
_ML_FLOATS = {v: k for k, v in MINIFLOATS.items()}
_RANGES = {"UINT4": (0, 15), "INT4": (-8, 7), "UINT2": (0, 3), "INT2": (-2, 1)}


@dataclass(frozen=True)
class Tensor:
    """A value of an ONNX graph: ``array`` in its NumPy storage and ``type``, the ONNX type name."""
    array: np.ndarray
    type: str

    @property
    def shape(self):
        return self.array.shape


def type_name(elem_type: int) -> str:
    """The ONNX name ('UINT8', 'FLOAT16'...) of an element type number (``TensorProto.DataType``)."""
    from onnx import TensorProto
    return TensorProto.DataType.Name(int(elem_type))


def storage(t: str) -> np.dtype:
    """The NumPy dtype an ONNX type is held in (``ml_dtypes``' for float8 / float4)."""
    if t in MINIFLOATS:
        import ml_dtypes
        return np.dtype(getattr(ml_dtypes, MINIFLOATS[t]))
    return np.dtype(STORAGE[t])


def _check_type(t: str, what: str) -> None:
    if t in UNSUPPORTED:
        raise ValueError(f"{what} is {t.lower()}: {UNSUPPORTED[t]}")
    if t not in STORAGE and t not in MINIFLOATS:
        raise ValueError(f"{what} is {t.lower()}, not a type of the quantization operators minquant runs "
                         f"(one of {', '.join(k.lower() for k in STORAGE)})")


def tensor_of(value, what: str, declared: str | None = None) -> Tensor:
    """``value`` (an array, a NumPy scalar or an ml_dtypes sub-byte array) as a :class:`Tensor`.

    Its type is ``declared`` (the graph's ONNX type name) when given — the array must then be stored as that
    type is (sub-byte codes: int8 / uint8 in range, or ml_dtypes' own dtype) — else read from the dtype.
    Raises ValueError naming ``what`` for a mismatch, an unsupported type or codes out of range."""
    a = np.asarray(value)
    found = _ML_DTYPES.get(a.dtype.name)
    if found is not None:
        a = a.astype(STORAGE[found])
    if found is None and a.dtype.name in _ML_FLOATS:
        found = _ML_FLOATS[a.dtype.name]
    if declared is None:
        if found is None:
            found = next((k for k, v in STORAGE.items() if np.dtype(v) == a.dtype and k not in _RANGES), None)
            if found is None:
                raise ValueError(f"{what} has dtype {a.dtype}, not a type of the quantization operators")
        declared = found
    _check_type(declared, what)
    want = storage(declared)
    if a.dtype != want or (found is not None and found != declared and found in _RANGES):
        raise ValueError(f"{what} must be {declared.lower()} (stored as {want.name}), got {a.dtype.name}"
                         + (f" {found.lower()}" if found else ""))
    if declared in _RANGES and a.size:
        lo, hi = _RANGES[declared]
        if a.min() < lo or a.max() > hi:
            raise ValueError(f"{what} holds {declared.lower()} codes outside [{lo}, {hi}] "
                             f"(min {int(a.min())}, max {int(a.max())})")
    return Tensor(a, declared)
