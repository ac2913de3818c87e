"""Argument checks of the integer kernels, written once per kernel family.

Every kernel family has one check function, called by its readable ``*_reference`` *and* by its fast
version, so the two cannot disagree about what they accept: ``check_output_stage_args`` (the output stage
every static linear / conv layer shares), ``check_linear_args``, ``check_conv_args``,
``check_dynamic_args`` (dynamic linear and conv), ``check_elementwise_qparams`` (add, mul, activations),
``check_pool_qparams``; the small rules below them (a scale, a zero point, per-channel weights, a bias)
are the shared vocabulary. Messages name the argument and the rule in the caller's terms, e.g.
"x_zp must be a whole number in [0, 255], got 3.7". Checks only read: they never change a value the
arithmetic uses.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..graph import int_pair

__all__ = ["check_scale", "check_zero_point", "check_weight_scale", "check_weight_zp", "check_bias",
           "check_clamp", "check_geometry", "check_groups", "check_whole", "check_output_stage_args",
           "check_linear_args", "check_conv_args", "check_dynamic_args", "check_elementwise_qparams",
           "check_pool_qparams"]


def _show(v):
    """A value as the user wrote it: NumPy scalars shown as plain numbers."""
    return v.item() if isinstance(v, np.generic) else v


def _is_number(v) -> bool:
    return isinstance(v, (numbers.Real, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _one_value(v, name):
    """A per-tensor quantity: a number, or an array holding exactly one number → that number."""
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number, got {v!r}")
    if _is_number(v):
        return v
    if isinstance(v, (str, bytes)) or v is None:
        raise TypeError(f"{name} must be a number, got {v!r}")
    a = np.asarray(v)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a number, got {type(v).__name__} of dtype {a.dtype}")
    if a.size != 1:
        raise ValueError(f"{name} must be one number (per tensor), got an array of shape {a.shape}")
    return a.reshape(())[()]


def check_scale(v, name: str) -> None:
    """One finite scale > 0."""
    s = _one_value(v, name)
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {_show(s)!r}")


def check_zero_point(v, name: str, lo: int = 0, hi: int = 255) -> None:
    """One whole number in [lo, hi] (a float with a fractional part would be truncated silently)."""
    z = _one_value(v, name)
    if not np.isfinite(z) or z != np.floor(z) or not lo <= z <= hi:
        raise ValueError(f"{name} must be a whole number in [{lo}, {hi}], got {_show(z)!r} "
                         f"(a zero point is one code of the quantized type)")


def check_whole(v, name: str, minimum: int = 1) -> None:
    """A Python/NumPy integer ≥ minimum (not a bool, not a float)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}, got {v!r}")


def _per_channel_values(v, n_out: int, name: str, what: str) -> np.ndarray:
    """``v`` as an array of numbers with one value (per tensor) or ``n_out`` values (per output channel)."""
    if isinstance(v, (str, bytes)) or v is None:
        raise TypeError(f"{name} must be {what}, got {v!r}")
    a = np.asarray(v)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be {what}, got dtype {a.dtype}")
    if a.ndim > 1 or (a.ndim == 1 and a.size not in (1, n_out)):
        raise ValueError(f"{name} has {a.size} values (shape {a.shape}); per-channel weights need one per "
                         f"output channel ({n_out})")
    return a


def check_weight_scale(w_scale, n_out: int, name: str = "w_scale") -> None:
    """Per tensor (one value) or per output channel (n_out values); every value finite and > 0."""
    ws = _per_channel_values(w_scale, n_out, name, "a number or an array of numbers")
    bad = ~np.isfinite(ws.astype(np.float64)) | (ws <= 0)
    if np.any(bad):
        raise ValueError(f"{name} must be finite and > 0; {int(bad.sum())} value(s) are not "
                         f"(first: {_show(ws.ravel()[np.argmax(bad.ravel())])!r})")


def check_weight_zp(w_zp, n_out: int, name: str = "w_zp", lo: int = -128, hi: int = 127) -> None:
    """Per tensor or per output channel; whole numbers in [lo, hi] (int8 weights: [-128, 127])."""
    z = _per_channel_values(w_zp, n_out, name, "an integer or an array of integers")
    zf = z.astype(np.float64)
    bad = ~np.isfinite(zf) | (zf != np.floor(zf)) | (zf < lo) | (zf > hi)
    if np.any(bad):
        raise ValueError(f"{name} must be whole numbers in [{lo}, {hi}], got {_show(z.ravel()[np.argmax(bad.ravel())])!r}")


def check_bias(bias, n_out: int, *, allow_int: bool = True, name: str = "bias") -> None:
    """None, or (n_out,) float (or int32 codes on s_x·s_w when ``allow_int``) without NaN / Inf."""
    if bias is None:
        return
    b = np.asarray(bias)
    kinds = "iuf" if allow_int else "f"
    if b.dtype.kind not in kinds:
        what = "float or integer" if allow_int else "float"
        raise TypeError(f"{name} must be {what}, got dtype {b.dtype}")
    if b.shape != (n_out,):
        raise ValueError(f"{name} has shape {b.shape}; it needs one value per output channel ({n_out},)")
    if b.dtype.kind == "f":
        n_nan, n_inf = int(np.isnan(b).sum()), int(np.isinf(b).sum())
        if n_nan:
            raise ValueError(f"{name} contains {n_nan} NaN value(s)")
        if n_inf:
            raise ValueError(f"{name} contains {n_inf} infinite value(s)")
    elif b.size and (b.min() < -2 ** 31 or b.max() > 2 ** 31 - 1):
        raise ValueError(f"integer {name} must fit int32 (it is added to the int32 accumulator)")


def check_clamp(clamp, clamp_hi, n_out: int) -> None:
    """clamp: None or (lo, hi) whole codes with 0 ≤ lo ≤ hi ≤ 255; clamp_hi: None or n_out integer codes."""
    if clamp is not None:
        try:
            lo, hi = clamp
        except (TypeError, ValueError):
            raise ValueError(f"clamp must be a pair (lo_code, hi_code), got {clamp!r}") from None
        for v in (lo, hi):
            if not _is_number(v) or not np.isfinite(v) or v != np.floor(v):
                raise ValueError(f"clamp must be two whole codes, got {clamp!r}")
        if not 0 <= lo <= hi <= 255:
            raise ValueError(f"clamp {clamp} is not a sub-range of [0, 255] (need 0 ≤ lo ≤ hi ≤ 255)")
    if clamp_hi is not None:
        ch = np.asarray(clamp_hi)
        if ch.shape != (n_out,) or ch.dtype.kind not in "iu":
            raise ValueError(f"clamp_hi must be {n_out} integer codes, got {ch.dtype} {ch.shape}")


def check_geometry(stride, padding, dilation):
    """(stride, padding, dilation) as pairs: stride ≥ 1, padding ≥ 0, dilation ≥ 1 (torch's rules)."""
    return (int_pair(stride, "stride", minimum=1), int_pair(padding, "padding", minimum=0),
            int_pair(dilation, "dilation", minimum=1))


def check_groups(groups, c_out: int, c_in: int | None = None) -> None:
    """groups: an integer ≥ 1 dividing the output channels (and the input channels, when known)."""
    check_whole(groups, "groups", 1)
    if c_out % groups or (c_in is not None and c_in % groups):
        chans = f"input channels {c_in} and output channels {c_out}" if c_in is not None \
            else f"output channels {c_out}"
        raise ValueError(f"groups={groups} must divide {chans}")


# --------------------------------------------------------------------------------------------- families
def check_output_stage_args(n_out, x_scale, w_scale, bias, y_scale, y_zp, clamp=None, clamp_hi=None) -> None:
    """The output stage (:func:`~minquant.kernels.requantize.output_stage`) of a static linear / conv."""
    check_scale(x_scale, "x_scale")
    check_weight_scale(w_scale, n_out)
    check_scale(y_scale, "y_scale")
    check_zero_point(y_zp, "y_zp")
    check_bias(bias, n_out)
    check_clamp(clamp, clamp_hi, n_out)


def check_linear_args(w_shape, x_scale, x_zp, w_scale, w_zp, bias, y_scale, y_zp, clamp=None,
                      clamp_hi=None) -> None:
    """qlinear / qlinear_reference / QLinear: everything but the activations (checked per call)."""
    n_out = int(w_shape[0])
    check_zero_point(x_zp, "x_zp")
    check_weight_zp(w_zp, n_out)
    check_output_stage_args(n_out, x_scale, w_scale, bias, y_scale, y_zp, clamp, clamp_hi)


def check_conv_args(w_shape, x_scale, x_zp, w_scale, w_zp, bias, y_scale, y_zp, stride, padding, dilation,
                    groups, clamp=None, clamp_hi=None):
    """qconv2d / qconv2d_reference / QConv2d; returns (stride, padding, dilation) as pairs."""
    c_out = int(w_shape[0])
    check_groups(groups, c_out)
    geometry = check_geometry(stride, padding, dilation)
    check_linear_args(w_shape, x_scale, x_zp, w_scale, w_zp, bias, y_scale, y_zp, clamp, clamp_hi)
    return geometry


def check_dynamic_args(n_out, w_scale, w_zp, bias, reduce_range) -> None:
    """dynamic_linear / dynamic_conv2d and their references: weight qparams, float bias, reduce_range."""
    check_weight_scale(w_scale, n_out)
    check_weight_zp(w_zp, n_out)
    check_bias(bias, n_out, allow_int=False)
    if not isinstance(reduce_range, (bool, np.bool_)):
        raise TypeError(f"reduce_range must be True or False, got {reduce_range!r}")


def check_elementwise_qparams(**qparams) -> None:
    """qadd / qmul / activations: every ``*_scale`` one finite number > 0, every ``*_zp`` a whole code."""
    for name, v in qparams.items():
        if name.endswith("_scale"):
            check_scale(v, name)
        else:
            check_zero_point(v, name)


def check_pool_qparams(scale, zp, what: str):
    """A pooling input's / output's per-tensor qparams → (float scale, int zero point)."""
    check_scale(scale, f"{what} scale")
    check_zero_point(zp, f"{what} zero point")
    return float(_one_value(scale, what)), int(_one_value(zp, what))
