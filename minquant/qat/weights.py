"""Weight code types and round-to-nearest weights for ``quantize_static(..., weight_rounding=...)``.

A *weight rounding* is any object with the method ``quantize_weight(node, *, per_channel, reduce_range) →
(w_q int8, w_scale float32, w_zp int8)``; :func:`minquant.quantize_static` calls it for every conv / linear
layer with the layer's float node (after BatchNorm folding and cross-layer equalization). This module holds
the one that rounds to nearest, :class:`NearestWeights`, and the choices every rounding shares:

* the **code type** (:func:`weight_qtype`): int8 [−128, 127]; int8 with the lost bit, [−64, 64], for the
  layers whose u8×s8 pairs can saturate int16 under the target (``reduce_range=True``:
  255·(64 + 64) = 32640 ≤ 32767); int4 [−8, 7] — W4A8: int4 codes run on the int8 kernels, and cannot
  saturate a pair (255·8·2 = 4080), so ``reduce_range`` does not apply to them;
* the **scale** (:func:`weight_scale`): symmetric, ``s = max(|min|, |max|) / ((qmax − qmin) / 2)`` per output
  channel (torch's symmetric rule, :func:`minquant.affine.choose_qparams`): /127.5 for int8, /63.5 for the
  7-bit range, /7.5 for int4; zero point 0. With ``mse=True`` the range is clipped per channel: of the
  scales ``α · s`` for ``α ∈ {0.30, 0.31, …, 1.00}`` the one whose round-to-nearest codes give the smallest
  ``Σ (w − α·s·q)²`` (at 4 bits a few large weights otherwise waste most of the 16 levels);
* the **rounding rule** of weights: minquant's converter multiplies by the float32 reciprocal
  (``quantize(..., target="torch")``) for every target, as :func:`minquant.quantized.static.quantize_weight`
  does.

:class:`NearestWeights` also *records* each layer's float weights and bias: that is how quantization-aware
training (:mod:`.model`) and AdaRound (:mod:`.adaptive_rounding`) get the folded, equalized float weights that the
quantized model's codes stand for. NumPy only.
"""
from __future__ import annotations

import numpy as np

from ..affine import QType, choose_qparams, dequantize, qtype, quantize

__all__ = ["WEIGHT_DTYPES", "INT8_7BIT", "WEIGHT_RULE", "weight_qtype", "weight_scale", "round_nearest", "dequantize_weight",
           "NearestWeights"]

#: weight code types a rounding accepts
WEIGHT_DTYPES = ("int8", "int4")
#: the weight codes of a layer whose pairs can saturate int16 (quantize_static's 7-bit weights): [−64, 64]
INT8_7BIT = QType("int8_7bit", -64, 64, np.int8, 8)
#: the quantize rule of weights (module docstring)
WEIGHT_RULE = "torch"


def _check_dtype(dtype) -> str:
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight dtype must be one of {WEIGHT_DTYPES}, got {dtype!r}")
    return dtype


def weight_qtype(dtype: str, reduce_range: bool) -> QType:
    """The code range of a layer's weights: int8, int8 [−64, 64] (``reduce_range``), or int4."""
    _check_dtype(dtype)
    if dtype == "int4":
        return qtype("int4")
    return INT8_7BIT if reduce_range else qtype("int8")


def weight_scale(w, dtype: str, *, per_channel: bool, reduce_range: bool, mse: bool = False) -> np.ndarray:
    """Symmetric scale per output channel (axis 0) or per tensor (length 1), float32 (module docstring)."""
    _check_dtype(dtype)
    w = np.asarray(w, np.float32)
    flat = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    rr = bool(reduce_range) and dtype == "int8"
    s, _ = choose_qparams(flat.min(axis=1), flat.max(axis=1), dtype, symmetric=True, reduce_range=rr)
    s = np.asarray(s, np.float32).reshape(-1)
    if not mse:
        return s
    qt = weight_qtype(dtype, reduce_range)
    best, best_err = s.copy(), np.full(s.shape, np.inf)
    for alpha in np.round(np.arange(0.30, 1.0001, 0.01), 2):
        sa = (s * np.float32(alpha)).astype(np.float32)
        q = quantize(flat, sa, np.zeros(sa.shape, np.int32), qt, axis=0, target=WEIGHT_RULE)
        err = ((flat - q.astype(np.float32) * sa[:, None]) ** 2).sum(axis=1)
        better = err < best_err
        best[better], best_err[better] = sa[better], err[better]
    return best


def round_nearest(w, s, qt: QType) -> np.ndarray:
    """``clamp(rne(w · f32(1/s)), qmin, qmax)`` per output channel (``s`` of length O or 1), int8 codes."""
    if s.size == 1:
        return quantize(w, s[0], 0, qt, target=WEIGHT_RULE)
    return quantize(w, s, np.zeros(s.shape, np.int32), qt, axis=0, target=WEIGHT_RULE)


def dequantize_weight(q, s) -> np.ndarray:
    """``s · q`` per output channel (or per tensor): the float weights the codes stand for."""
    if s.size == 1:
        return dequantize(q, s[0], 0)
    return dequantize(q, s, np.zeros(s.shape, np.int32), axis=0)


class NearestWeights:
    """Round each weight to the nearest code of ``dtype`` ('int8' or 'int4'), recording the float layers.
    ``mse_scale``: choose each channel's scale by the clipped-range search of :func:`weight_scale`.
    ``int8_layers``: names of layers kept at int8 whatever ``dtype`` says — e.g. the first conv and the
    classifier, which 4-bit results in the literature (LSQ, AdaRound) usually keep at 8 bits.

    After ``quantize_static(model, data, weight_rounding=NearestWeights("int4"))`` (the W4A8 model with
    nearest rounding), ``.layers[name]`` holds, per conv / linear layer, a dict with ``weight`` and ``bias``
    (the float node's, after folding and equalization), ``qtype``, ``scale`` and ``codes``."""
    kind = "nearest"

    @property
    def name(self) -> str:
        """What ``quantize_static`` records in ``meta["weight_rounding"]``, e.g. 'nearest int4'."""
        return (f"{self.kind} {self.dtype}" + (", MSE-clipped scales" if self.mse_scale else "")
                + (f", int8 layers {list(self.int8_layers)}" if self.int8_layers else ""))

    def __init__(self, dtype: str = "int8", *, mse_scale: bool = False, int8_layers=()):
        self.dtype = _check_dtype(dtype)
        if not isinstance(mse_scale, bool):
            raise TypeError(f"mse_scale must be True or False, got {mse_scale!r}")
        if isinstance(int8_layers, str) or not all(isinstance(n, str) for n in int8_layers):
            raise TypeError(f"int8_layers must be a collection of layer names, got {int8_layers!r}")
        self.mse_scale = mse_scale
        self.int8_layers = tuple(int8_layers)
        self.layers: dict[str, dict] = {}

    def dtype_of(self, name: str) -> str:
        """The code type of one layer: 'int8' for the ``int8_layers``, else ``dtype``."""
        return "int8" if name in self.int8_layers else self.dtype

    def __repr__(self):
        return f"{type(self).__name__}({self.dtype!r}, mse_scale={self.mse_scale})"

    def codes(self, node, w: np.ndarray, s: np.ndarray, qt: QType) -> np.ndarray:
        """The layer's codes (round to nearest here; :class:`~minquant.qat.adaptive_rounding.AdaRoundWeights` overrides)."""
        return round_nearest(w, s, qt)

    def latent_weight(self, name: str) -> np.ndarray:
        """The float weights quantization-aware training starts from: the layer's own float weights."""
        return self.layers[name]["weight"]

    def quantize_weight(self, node, *, per_channel: bool, reduce_range: bool):
        if node.op not in ("conv2d", "linear") or "weight" not in node.params:
            raise ValueError(f"{type(self).__name__} rounds conv2d / linear weights; {node.name!r} is {node.op}")
        w = np.asarray(node.params["weight"], np.float32)
        dtype = self.dtype_of(node.name)
        qt = weight_qtype(dtype, reduce_range)
        s = weight_scale(w, dtype, per_channel=per_channel, reduce_range=reduce_range, mse=self.mse_scale)
        q = self.codes(node, w, s, qt)
        b = node.params.get("bias")
        self.layers[node.name] = dict(weight=w.copy(), bias=None if b is None else np.asarray(b, np.float32).copy(),
                                      qtype=qt, scale=s, codes=q, per_channel=bool(per_channel))
        return q, s, np.zeros(s.shape, np.int8)
