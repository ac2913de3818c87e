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
quantized model's codes stand for.

**int4 weights per group** (W4A8 g32, the precision ladder's form: :func:`minquant.quantize_precision` with
``w4a8(group_size)`` and ``weight_rounding=``): :meth:`NearestWeights.quantize_int4` gives a layer's codes in
the row layout of :mod:`minquant.kernels.int4_conv` — rows in (kh, kw, c) order, ``group_size`` consecutive
entries per scale (one group per row where ``group_size`` does not divide the row: a 3×3 depthwise kernel's
9) — with **float16** scales as the W4A8 kernels store them (:func:`int4_group_scale`: max|w|/7.5 rounded up,
``mse=True`` the clipped search per group) and codes by :data:`GROUP_WEIGHT_RULE`, the rule of
:func:`minquant.quantized.precision_convert.quantize_int4_rows`: ``clamp(rne(w / s), −8, 7)``. Its record keeps
the codes in the weight's own shape, the scales (O, G) and ``group_size``; :func:`scale_like` spreads any
record's scales over the weight's shape. NumPy only.
"""
from __future__ import annotations

import numpy as np

from ..affine import QType, choose_qparams, dequantize, qtype, quantize, to_float16
from ..kernels.int4_conv import conv_weight_rows, rows_to_conv_weight

__all__ = ["WEIGHT_DTYPES", "INT8_7BIT", "WEIGHT_RULE", "GROUP_WEIGHT_RULE", "weight_qtype", "weight_scale",
           "round_nearest", "dequantize_weight", "weight_rows", "int4_group_scale", "scale_like", "round_codes",
           "NearestWeights"]

#: weight code types a rounding accepts
WEIGHT_DTYPES = ("int8", "int4")
#: the weight codes of a layer whose pairs can saturate int16 (quantize_static's 7-bit weights): [−64, 64]
INT8_7BIT = QType("int8_7bit", -64, 64, np.int8, 8)
#: the quantize rule of weights (module docstring)
WEIGHT_RULE = "torch"
#: the quantize rule of int4 weights per group: divide, as ``quantize_int4_rows`` (the ladder's W4A8) does
GROUP_WEIGHT_RULE = "onnxruntime"
#: the candidate clipping factors of the least-squares scale search
_ALPHAS = np.round(np.arange(0.30, 1.0001, 0.01), 2)


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
    for alpha in _ALPHAS:
        sa = (s * np.float32(alpha)).astype(np.float32)
        q = quantize(flat, sa, np.zeros(sa.shape, np.int32), qt, axis=0, target=WEIGHT_RULE)
        err = ((flat - q.astype(np.float32) * sa[:, None]) ** 2).sum(axis=1)
        better = err < best_err
        best[better], best_err[better] = sa[better], err[better]
    return best


def weight_rows(w) -> np.ndarray:
    """A layer's weights as the (O, K) rows of the int4 layout: a conv's in (kh, kw, c) order, a linear's as is."""
    w = np.asarray(w, np.float32)
    return conv_weight_rows(w) if w.ndim == 4 else w


def int4_group_scale(rows, group_size: int, *, mse: bool = False) -> np.ndarray:
    """float16 scales (O, K / group_size) of (O, K) rows, symmetric int4: ``max|w| / 7.5`` per group rounded
    *up* to float16 (nothing clipped; :func:`~minquant.quantized.precision_convert.quantize_int4_rows`'s
    scales exactly). ``mse=True``: of the float16 values of ``α · s`` (α as :func:`weight_scale`) the one whose
    codes give the smallest ``Σ (w − s·q)²`` over the group."""
    rows = np.asarray(rows, np.float32)
    o, k = rows.shape
    if group_size < 1 or k % group_size:
        raise ValueError(f"group_size {group_size} does not divide the rows' {k} entries")
    g = rows.reshape(o, k // group_size, group_size)
    s, _ = choose_qparams(g.min(axis=2), g.max(axis=2), "int4", symmetric=True)
    s16 = to_float16(s)
    low = s16.astype(np.float32) < s
    s16[low] = np.nextafter(s16[low], np.float16(np.inf))
    s16 = np.maximum(s16, np.float16(2.0 ** -24))
    if not mse:
        return s16
    best, best_err = s16.copy(), np.full(s16.shape, np.inf)
    for alpha in _ALPHAS:
        sa = np.maximum(to_float16(s16.astype(np.float32) * np.float32(alpha)), np.float16(2.0 ** -24))
        q = quantize(rows, sa.astype(np.float32), np.zeros(sa.shape, np.int32), "int4", axis=1,
                     group_size=group_size, target=GROUP_WEIGHT_RULE)
        err = ((g - q.reshape(g.shape).astype(np.float32) * sa.astype(np.float32)[..., None]) ** 2).sum(axis=2)
        better = err < best_err
        best[better], best_err[better] = sa[better], err[better]
    return best


def scale_like(scale, weight_shape, group_size=None) -> np.ndarray:
    """A layer's scales spread over its weight's shape (float32): one per output channel (``group_size``
    None, or a length-1 per-tensor scale), or (O, G) per group of ``group_size`` entries of the (kh, kw, c)
    rows."""
    s = np.asarray(scale, np.float32)
    shape = tuple(int(v) for v in weight_shape)
    if group_size is None:
        return np.broadcast_to(s.reshape((-1,) + (1,) * (len(shape) - 1)), shape).astype(np.float32)
    rows = np.repeat(s.reshape(shape[0], -1), int(group_size), axis=1)
    return rows_to_conv_weight(rows, shape) if len(shape) == 4 else rows.reshape(shape)


def round_codes(w, s_full, qt: QType, rule: str) -> np.ndarray:
    """``clamp(rne(w / s), qmin, qmax)`` element by element with ``s_full`` the scales spread over ``w``
    (:func:`scale_like`) and the weights' rule: 'torch' (``w · f32(1/s)``, per channel) or 'onnxruntime'
    (``w / s``, per group). int8 codes of ``w``'s shape."""
    w, s = np.asarray(w, np.float32), np.asarray(s_full, np.float32)
    v = w * (np.float32(1) / s) if rule == WEIGHT_RULE else w / s
    return np.clip(np.rint(v), qt.qmin, qt.qmax).astype(np.int8)


def round_nearest(w, s, qt: QType) -> np.ndarray:
    """``clamp(rne(w · f32(1/s)), qmin, qmax)`` per output channel (``s`` of length O or 1), int8 codes."""
    if s.size == 1:
        return quantize(w, s[0], 0, qt, target=WEIGHT_RULE)
    return quantize(w, s, np.zeros(s.shape, np.int32), qt, axis=0, target=WEIGHT_RULE)


def dequantize_weight(q, s, group_size=None) -> np.ndarray:
    """``s · q`` per output channel (or per tensor, or per group of ``group_size``: ``s`` (O, G)): the float
    weights the codes stand for."""
    if group_size is not None:
        return (np.asarray(q).astype(np.float32) * scale_like(s, np.shape(q), group_size)).astype(np.float32)
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

    def codes(self, node, w: np.ndarray, s: np.ndarray, qt: QType, group_size=None) -> np.ndarray:
        """The layer's codes in the weight's shape (round to nearest here;
        :class:`~minquant.qat.adaptive_rounding.AdaRoundWeights` overrides). ``s``: per channel, or (O, G)
        per group of ``group_size``."""
        if group_size is None:
            return round_nearest(w, s, qt)
        return round_codes(w, scale_like(s, w.shape, group_size), qt, GROUP_WEIGHT_RULE)

    def latent_weight(self, name: str) -> np.ndarray:
        """The float weights quantization-aware training starts from: the layer's own float weights."""
        return self.layers[name]["weight"]

    def quantize_int4(self, node, *, group_size: int, symmetric: bool = True):
        """int4 codes per group of one layer, for ``quantize_precision(..., weight_rounding=)`` (module
        docstring): ``(codes (O, K) int8 rows, scale (O, G) float16, None, group size used)``. Symmetric only."""
        if node.op not in ("conv2d", "linear") or "weight" not in node.params:
            raise ValueError(f"{type(self).__name__} rounds conv2d / linear weights; {node.name!r} is {node.op}")
        if not symmetric:
            raise ValueError(f"{type(self).__name__} gives symmetric int4 groups (zero point 0); layer "
                             f"{node.name!r} asks for zero points")
        if self.dtype_of(node.name) != "int4":
            raise ValueError(f"layer {node.name!r} is one of int8_layers but is lowered to int4 groups")
        w = np.asarray(node.params["weight"], np.float32)
        rows = weight_rows(w)
        gs = int(group_size) if rows.shape[1] % int(group_size) == 0 else rows.shape[1]
        s16 = int4_group_scale(rows, gs, mse=self.mse_scale)
        s = s16.astype(np.float32)
        qt = qtype("int4")
        q = self.codes(node, w, s, qt, gs)
        b = node.params.get("bias")
        self.layers[node.name] = dict(weight=w.copy(), bias=None if b is None else np.asarray(b, np.float32).copy(),
                                      qtype=qt, scale=s, codes=q, per_channel=True, group_size=gs,
                                      rule=GROUP_WEIGHT_RULE)
        return (conv_weight_rows(q) if q.ndim == 4 else q).astype(np.int8), s16, None, gs

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
                                      qtype=qt, scale=s, codes=q, per_channel=bool(per_channel), group_size=None,
                                      rule=WEIGHT_RULE)
        return q, s, np.zeros(s.shape, np.int8)
