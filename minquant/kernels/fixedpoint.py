"""LiteRT's (TensorFlow Lite's) fixed-point output stage: a 31-bit multiplier and a shift
(docs/quantization.md, step 7d).

A real multiplier ``M > 0`` (typically ``M = s_x·s_w / s_y < 1``) is written ``M = M₀·2^shift`` with
``M₀ ∈ [0.5, 1)`` and stored as the Q31 integer ``q = round(M₀·2³¹)`` (``QuantizeMultiplier``; ``round`` is
C's ``round``: half away from zero). An int32 ``x`` is then multiplied by ``M`` without floats:

* **double rounding** (gemmlowp; TFLite's default, ``MultiplyByQuantizedMultiplier``)::

      left  = max(shift, 0),  right = max(−shift, 0)
      h     = SaturatingRoundingDoublingHighMul(x·2^left, q)    = round_half_up(x·2^left·q / 2³¹)
      y     = RoundingDivideByPOT(h, right)                      = round_half_away(h / 2^right)

  ``SaturatingRoundingDoublingHighMul(a, b)`` is the high 32 bits of the doubled 64-bit product, rounded:
  ``(a·b + nudge) / 2³¹`` truncated toward zero with ``nudge = 2³⁰`` (``a·b ≥ 0``) or ``1 − 2³⁰`` — ties go
  up (toward +∞) for both signs; it saturates the single overflowing case ``a = b = −2³¹`` to ``2³¹ − 1``.
  ``RoundingDivideByPOT(x, e)`` is an arithmetic shift plus one when the remainder exceeds half (with one
  more for negative ``x``): ties go away from zero. Two roundings: a value just below a tie after the
  first can land on a tie for the second.

* **double rounding, ties up** (measured: LiteRT's optimized builtin kernels on x86 — the NEON semantics of
  ``vqrdmulh`` + ``vrshl``, which its x86 build emulates): the same two steps, but the second rounds ties
  up too, ``y = (h + 2^(right − 1)) >> right``.

* **single rounding** (``TFLITE_SINGLE_ROUNDING``; ruy's GEMM output stage)::

      y = (x·q + 2^(30 − shift)) >> (31 − shift)                 = round_half_up(x·q / 2^(31 − shift))

  one 64-bit product, one rounding, ties up; ``QuantizeMultiplier`` then also caps ``shift ≤ 30`` (with
  ``q = 2³¹ − 1``).

The two differ from each other (and from the float multiplier ``rne(f32(x·f32(M)))`` of step 7b) only on
values within a hair of a tie. ``*_reference`` functions spell the formulas out on Python integers, one
value at a time; :func:`multiply_by_quantized_multiplier` is the array version (NumPy int64) and
``mbqm_double`` / ``mbqm_single`` the scalar Numba versions the fused output stages
(:mod:`minquant.kernels.requantize`) call.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["quantize_multiplier", "quantize_multiplier_reference", "saturating_rounding_doubling_high_mul_reference",
           "rounding_divide_by_pot_reference", "multiply_by_quantized_multiplier_reference",
           "multiply_by_quantized_multiplier", "mbqm_double", "mbqm_double_up", "mbqm_single"]

_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1


# ------------------------------------------------------------------------------------- the readable spec
def _round_half_away(t: float) -> int:
    """C's ``round`` (TfLiteRound): halves go away from zero."""
    return int(math.copysign(math.floor(abs(t) + 0.5), t))


def quantize_multiplier_reference(m: float, *, single_rounding: bool = False) -> tuple[int, int]:
    """``QuantizeMultiplier``: ``(q, shift)`` with ``m ≈ q·2^(shift − 31)``, ``q ∈ [2³⁰, 2³¹)`` (or 0).

    ``m₀, shift = frexp(m)`` (``m₀ ∈ [0.5, 1)``); ``q = round(m₀·2³¹)`` half away from zero; ``q = 2³¹``
    (``m₀`` within half a Q31 step of 1) becomes ``2³⁰`` with ``shift + 1``; ``shift < −31`` flushes to
    ``(0, 0)``. ``single_rounding``: ``shift > 30`` is capped to ``(2³¹ − 1, 30)``."""
    m = float(m)
    if not math.isfinite(m) or m < 0:
        raise ValueError(f"a quantized multiplier needs a finite M ≥ 0, got {m!r}")
    if m == 0.0:
        return 0, 0
    m0, shift = math.frexp(m)
    q = _round_half_away(m0 * (1 << 31))
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if single_rounding and shift > 30:
        return _I32_MAX, 30
    return q, shift


def saturating_rounding_doubling_high_mul_reference(a: int, b: int) -> int:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul``: round_half_up(a·b / 2³¹) on int32 (module docstring)."""
    a, b = int(a), int(b)
    if a == b == _I32_MIN:
        return _I32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    t = ab + nudge
    return t // (1 << 31) if t >= 0 else -((-t) // (1 << 31))     # C++ division truncates toward zero


def rounding_divide_by_pot_reference(x: int, exponent: int) -> int:
    """gemmlowp's ``RoundingDivideByPOT``: x / 2^exponent, ties away from zero."""
    x, exponent = int(x), int(exponent)
    if not 0 <= exponent <= 31:
        raise ValueError(f"RoundingDivideByPOT needs an exponent in [0, 31], got {exponent}")
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def multiply_by_quantized_multiplier_reference(x: int, q: int, shift: int, *, single_rounding: bool = False,
                                                ties_up: bool = False) -> int:
    """``MultiplyByQuantizedMultiplier(x, q, shift)``, double or single rounding (module docstring);
    ``ties_up``: double rounding whose second step also rounds ties up (LiteRT's optimized kernels)."""
    x, q, shift = int(x), int(q), int(shift)
    if single_rounding:
        if not -31 <= shift <= 30:
            raise ValueError(f"single rounding needs a shift in [-31, 30], got {shift}")
        total = 31 - shift
        return (x * q + (1 << (total - 1))) >> total
    left, right = max(shift, 0), max(-shift, 0)
    xl = x * (1 << left)
    xl = ((xl + (1 << 31)) % (1 << 32)) - (1 << 31)      # int32 wrap-around of x·2^left, as in C++
    h = saturating_rounding_doubling_high_mul_reference(xl, q)
    if ties_up:
        return (h + (1 << right >> 1)) >> right
    return rounding_divide_by_pot_reference(h, right)


# -------------------------------------------------------------------------------------- array versions
def quantize_multiplier(m, *, single_rounding: bool = False):
    """:func:`quantize_multiplier_reference` of every element of ``m`` (a scalar or an array of float64
    multipliers): ``(q int64 array, shift int64 array)`` of ``m``'s shape."""
    m = np.asarray(m, np.float64)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("a quantized multiplier needs finite multipliers M ≥ 0")
    pairs = [quantize_multiplier_reference(v, single_rounding=single_rounding) for v in m.reshape(-1)]
    q = np.array([p[0] for p in pairs], np.int64).reshape(m.shape)
    shift = np.array([p[1] for p in pairs], np.int64).reshape(m.shape)
    return q, shift


@njit(cache=True, inline="always")
def _srdhm(a, b):
    """Scalar SaturatingRoundingDoublingHighMul on int64 holding int32 values."""
    if a == b and a == -2147483648:
        return np.int64(2147483647)
    ab = a * b
    t = ab + (np.int64(1073741824) if ab >= 0 else np.int64(1 - 1073741824))
    return t >> 31 if t >= 0 else -((-t) >> 31)


@njit(cache=True, inline="always")
def _rdbpot(x, e):
    """Scalar RoundingDivideByPOT (arithmetic shift, ties away from zero)."""
    mask = (np.int64(1) << e) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if (x & mask) > threshold else 0)


@njit(cache=True, inline="always")
def mbqm_double(x, q, shift):
    """Scalar MultiplyByQuantizedMultiplier, double rounding (int64 in, int64 out)."""
    xl = x << shift if shift > 0 else x
    xl = ((xl + 2147483648) & 0xFFFFFFFF) - 2147483648      # the int32 wrap-around of x·2^left
    return _rdbpot(_srdhm(xl, q), -shift if shift < 0 else 0)


@njit(cache=True, inline="always")
def mbqm_double_up(x, q, shift):
    """Scalar double rounding with ties up in both steps (int64 in, int64 out)."""
    xl = x << shift if shift > 0 else x
    xl = ((xl + 2147483648) & 0xFFFFFFFF) - 2147483648
    h = _srdhm(xl, q)
    right = -shift if shift < 0 else 0
    return (h + ((np.int64(1) << right) >> 1)) >> right


@njit(cache=True, inline="always")
def mbqm_single(x, q, shift):
    """Scalar MultiplyByQuantizedMultiplier, single rounding (int64 in, int64 out)."""
    total = 31 - shift
    return (x * q + (np.int64(1) << (total - 1))) >> total


@njit(cache=True)
def _mbqm_kernel(x, q, shift, kind, out):
    """out[i, n] = MultiplyByQuantizedMultiplier(x[i, n], q[n], shift[n]); kind 0 double, 1 single, 2 double
    with ties up."""
    rows, cols = x.shape
    for i in range(rows):
        for n in range(cols):
            if kind == 1:
                out[i, n] = mbqm_single(x[i, n], q[n], shift[n])
            elif kind == 2:
                out[i, n] = mbqm_double_up(x[i, n], q[n], shift[n])
            else:
                out[i, n] = mbqm_double(x[i, n], q[n], shift[n])


def multiply_by_quantized_multiplier(x, q, shift, *, single_rounding: bool = False, ties_up: bool = False) -> np.ndarray:
    """Array ``MultiplyByQuantizedMultiplier``: ``x`` int32 values (..., N); ``q``, ``shift`` scalars or
    (N,) (one per output channel, along the last axis). Returns int64 of ``x``'s shape."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"MultiplyByQuantizedMultiplier takes integer accumulators, got {x.dtype}")
    if x.size and (x.min() < _I32_MIN or x.max() > _I32_MAX):
        raise ValueError("MultiplyByQuantizedMultiplier takes int32 values; some are out of range")
    n = x.shape[-1] if x.ndim else 1
    q = np.broadcast_to(np.asarray(q, np.int64), (n,)).copy()
    shift = np.broadcast_to(np.asarray(shift, np.int64), (n,)).copy()
    if np.any(q < 0) or np.any(q > _I32_MAX):
        raise ValueError("the Q31 multiplier must lie in [0, 2³¹ − 1]")
    if np.any(shift > 30 if single_rounding else shift > 31) or np.any(shift < -31):
        raise ValueError(f"shift out of range: {shift.min()}..{shift.max()}")
    x2 = np.ascontiguousarray(x.reshape(-1, n), dtype=np.int64)
    out = np.empty_like(x2)
    _mbqm_kernel(x2, q, shift, 1 if single_rounding else (2 if ties_up else 0), out)
    return out.reshape(x.shape)
