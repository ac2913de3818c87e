"""Float8 and float4 codes (ONNX's FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ, FLOAT4E2M1): a
float32 value → the nearest code, rounding half to even on the type's 3-, 2- or 1-bit mantissa, with ONNX's
``saturate`` rule (the tables of the Cast operator, which QuantizeLinear applies):

=================  ===========================  ==========================================================
x                  saturate = 1 (the default)   saturate = 0
=================  ===========================  ==========================================================
±Inf               ±max                         NaN (E4M3FN, the FNUZ types), ±Inf (E5M2)
[x] beyond ±max    ±max                         the same as ±Inf
NaN                NaN                          NaN
else               round half to even           round half to even
=================  ===========================  ==========================================================

``[x]`` is x rounded to the type's mantissa, so a value just above max that rounds down to max stays max
(E4M3FN: 464 → 448, 470 → NaN unless saturating). max = 448 (E4M3FN), 240 (E4M3FNUZ), 57344 (E5M2, E5M2FNUZ),
6 (FLOAT4E2M1, which has no Inf or NaN: it always saturates). The FNUZ types have no −0 (−0 → 0) and one NaN.

The codes are held in ``ml_dtypes``' dtypes (the ones ``onnx.numpy_helper`` uses), whose float32 cast is the
round-half-to-even conversion; saturation clamps first. This module imports ``ml_dtypes`` inside its
functions.
"""
from __future__ import annotations

import numpy as np

from .dtypes import storage

__all__ = ["to_minifloat", "from_minifloat"]


def to_minifloat(x, onnx_type: str, *, saturate: bool = True) -> np.ndarray:
    """float32 ``x`` → codes of ``onnx_type`` (module docstring: rounding and the ``saturate`` rule)."""
    import ml_dtypes
    dt = storage(onnx_type)
    x = np.asarray(x, np.float32)
    if saturate or onnx_type == "FLOAT4E2M1":
        top = np.float32(ml_dtypes.finfo(dt).max)
        x = np.clip(x, -top, top)                 # ±Inf and values beyond ±max → ±max; NaN stays NaN
    return x.astype(dt)


def from_minifloat(codes) -> np.ndarray:
    """float8 / float4 codes → their values in float32 (exact: every code is a float32)."""
    return np.asarray(codes).astype(np.float32)
