"""Bad input to the integer kernels gets a clear error naming the argument and the rule — a catalogue as data.

Each case is (id, family, call, exception class, phrase the message must contain). ``call`` takes the
kernel function of its family; a family with a fast kernel and a readable reference runs every case against
*both* (they share one argument check, minquant/kernels/checks.py, so they cannot disagree). Families with
one function (constructors, qmul, qactivation, output_stage, quantize_u8) run it once.
"""
import numpy as np
import pytest

from minquant.affine import pack_int4
from minquant.kernels import (QConv2d, QLinear, qconv2d, qconv2d_reference, qlinear, qlinear_reference,
                              output_stage)
from minquant.kernels.add import qadd, qadd_reference
from minquant.kernels.dynamic import (dynamic_conv2d, dynamic_conv2d_reference, dynamic_linear,
                                      dynamic_linear_reference)
from minquant.kernels.elementwise import qactivation, qmul
from minquant.kernels.int4 import int4_linear, int4_linear_reference
from minquant.kernels.pool import (qadaptive_avg_pool2d, qadaptive_avg_pool2d_reference, qavg_pool2d,
                                   qavg_pool2d_reference, qmax_pool2d, qmax_pool2d_reference)
from minquant.kernels.quantize import quantize_u8

F32 = np.float32
RNG = np.random.default_rng(0)
XC = RNG.integers(0, 256, (1, 3, 12, 12), dtype=np.uint8)          # conv input, NCHW
WC = RNG.integers(-127, 128, (16, 3, 3, 3), dtype=np.int8)         # 16 output channels
BC = np.zeros(16, F32)
XL = RNG.integers(0, 256, (4, 8), dtype=np.uint8)                  # linear input
WL = RNG.integers(-127, 128, (6, 8), dtype=np.int8)                # 6 output channels
BL = np.zeros(6, F32)
XF = RNG.standard_normal((4, 8)).astype(F32)                       # dynamic linear input
XFC = RNG.standard_normal((1, 3, 8, 8)).astype(F32)                # dynamic conv input
XP = RNG.integers(0, 256, (1, 2, 6, 6), dtype=np.uint8)            # pooling input
A = RNG.integers(0, 256, (2, 3), dtype=np.uint8)
X4 = RNG.standard_normal((2, 64)).astype(F32)
W4 = pack_int4(RNG.integers(-8, 8, (4, 64)))
S4 = np.full((4, 2), 0.1, F32)

PAIRS = {
    "qconv2d": (qconv2d, qconv2d_reference),
    "qlinear": (qlinear, qlinear_reference),
    "dynamic_linear": (dynamic_linear, dynamic_linear_reference),
    "dynamic_conv2d": (dynamic_conv2d, dynamic_conv2d_reference),
    "qadd": (qadd, qadd_reference),
    "qmax_pool2d": (qmax_pool2d, qmax_pool2d_reference),
    "qavg_pool2d": (qavg_pool2d, qavg_pool2d_reference),
    "qadaptive_avg_pool2d": (qadaptive_avg_pool2d, qadaptive_avg_pool2d_reference),
    "int4_linear": (int4_linear, int4_linear_reference),
    "QConv2d": (QConv2d,),
    "QLinear": (QLinear,),
    "qmul": (qmul,),
    "qactivation": (qactivation,),
    "output_stage": (output_stage,),
    "quantize_u8": (quantize_u8,),
}


def conv(f, **kw):
    a = dict(x_scale=0.1, x_zp=3, w_scale=0.01, w_zp=0, bias=BC, y_scale=0.2, y_zp=5)
    geo = {k: kw.pop(k) for k in ("stride", "padding", "dilation", "groups", "clamp", "clamp_hi", "relu")
           if k in kw}
    a.update(kw)
    return f(XC, a["x_scale"], a["x_zp"], WC, a["w_scale"], a["w_zp"], a["bias"], a["y_scale"], a["y_zp"], **geo)


def conv_ctor(f, **kw):
    a = dict(x_scale=0.1, x_zp=3, w_scale=0.01, w_zp=0, bias=BC, y_scale=0.2, y_zp=5)
    geo = {k: kw.pop(k) for k in ("stride", "padding", "dilation", "groups") if k in kw}
    a.update(kw)
    return f(WC, a["w_scale"], a["w_zp"], a["bias"], a["x_scale"], a["x_zp"], a["y_scale"], a["y_zp"], **geo)


def lin(f, **kw):
    a = dict(x_scale=0.1, x_zp=3, w_scale=0.01, w_zp=0, bias=BL, y_scale=0.2, y_zp=5)
    opt = {k: kw.pop(k) for k in ("clamp", "clamp_hi", "relu") if k in kw}
    a.update(kw)
    return f(XL, a["x_scale"], a["x_zp"], WL, a["w_scale"], a["w_zp"], a["bias"], a["y_scale"], a["y_zp"], **opt)


def lin_ctor(f, **kw):
    a = dict(x_scale=0.1, x_zp=3, w_scale=0.01, w_zp=0, bias=BL, y_scale=0.2, y_zp=5)
    a.update(kw)
    return f(WL, a["w_scale"], a["w_zp"], a["bias"], a["x_scale"], a["x_zp"], a["y_scale"], a["y_zp"])


def dyn_lin(f, w_scale=0.01, w_zp=0, bias=None, **kw):
    return f(XF, WL, w_scale, w_zp, bias, **kw)


def dyn_conv(f, w_scale=0.01, w_zp=0, bias=None, **kw):
    return f(XFC, WC, w_scale, w_zp, bias, **kw)


def add(f, **kw):
    a = dict(a_scale=0.1, a_zp=3, b_scale=0.2, b_zp=4, y_scale=0.3, y_zp=5)
    a.update(kw)
    return f(A, a["a_scale"], a["a_zp"], A, a["b_scale"], a["b_zp"], a["y_scale"], a["y_zp"])


def avg(f, *args, **kw):
    kw = {"x_scale": 0.1, "x_zp": 3, **kw}
    return f(XP, *args, **kw)


def int4(f, **kw):
    a = dict(w_scale=S4, w_zp=None, group_size=32, in_features=64, bias=None)
    a.update(kw)
    return f(X4, W4, a["w_scale"], a["w_zp"], group_size=a["group_size"], in_features=a["in_features"],
             bias=a["bias"])


def stage(f, **kw):
    a = dict(x_scale=0.1, w_scale=0.01, bias=None, y_scale=0.2, y_zp=5)
    opt = {k: kw.pop(k) for k in ("clamp", "clamp_hi", "relu") if k in kw}
    a.update(kw)
    return f(6, a["x_scale"], a["w_scale"], a["bias"], a["y_scale"], a["y_zp"], **opt)


NAN1 = np.array([np.nan] + [0.0] * 15, F32)

CASES = [
    # --- qconv2d (fast and reference) ----------------------------------------------------------------------
    ("conv stride=0", "qconv2d", lambda f: conv(f, stride=0), ValueError, "stride must be ≥ 1, got 0"),
    ("conv dilation=0", "qconv2d", lambda f: conv(f, dilation=0), ValueError, "dilation must be ≥ 1"),
    ("conv padding=-1", "qconv2d", lambda f: conv(f, padding=-1), ValueError, "padding must be ≥ 0"),
    ("conv stride=1.5", "qconv2d", lambda f: conv(f, stride=1.5), ValueError, "stride must be an int"),
    ("conv groups=0", "qconv2d", lambda f: conv(f, groups=0), ValueError, "groups must be ≥ 1"),
    ("conv groups=2.0", "qconv2d", lambda f: conv(f, groups=2.0), TypeError, "groups must be an integer"),
    ("conv groups=5", "qconv2d", lambda f: conv(f, groups=5), ValueError, "must divide"),
    ("conv x_zp=3.7", "qconv2d", lambda f: conv(f, x_zp=3.7), ValueError,
     "x_zp must be a whole number in [0, 255], got 3.7"),
    ("conv x_zp=256", "qconv2d", lambda f: conv(f, x_zp=256), ValueError, "x_zp must be a whole number in [0, 255]"),
    ("conv x_zp=True", "qconv2d", lambda f: conv(f, x_zp=True), TypeError, "x_zp must be a number"),
    ("conv w_zp=200", "qconv2d", lambda f: conv(f, w_zp=200), ValueError, "w_zp must be whole numbers in [-128, 127]"),
    ("conv w_zp=0.5", "qconv2d", lambda f: conv(f, w_zp=0.5), ValueError, "w_zp must be whole numbers"),
    ("conv NaN bias", "qconv2d", lambda f: conv(f, bias=NAN1), ValueError, "bias contains 1 NaN value(s)"),
    ("conv Inf bias", "qconv2d", lambda f: conv(f, bias=np.full(16, np.inf, F32)), ValueError,
     "bias contains 16 infinite value(s)"),
    ("conv bias length 7", "qconv2d", lambda f: conv(f, bias=np.zeros(7, F32)), ValueError, "bias has shape (7,)"),
    ("conv w_scale length 7", "qconv2d", lambda f: conv(f, w_scale=np.full(7, 0.01)), ValueError,
     "w_scale has 7 values (shape (7,)); per-channel weights need one per output channel (16)"),
    ("conv w_scale negative", "qconv2d", lambda f: conv(f, w_scale=np.r_[-0.1, np.full(15, 0.01)]), ValueError,
     "w_scale must be finite and > 0"),
    ("conv x_scale vector", "qconv2d", lambda f: conv(f, x_scale=np.array([0.1, 0.2])), ValueError,
     "x_scale must be one number (per tensor)"),
    ("conv x_scale='0.1'", "qconv2d", lambda f: conv(f, x_scale="0.1"), TypeError, "x_scale must be a number"),
    ("conv y_scale=0", "qconv2d", lambda f: conv(f, y_scale=0.0), ValueError, "y_scale must be a finite number > 0"),
    ("conv y_scale=NaN", "qconv2d", lambda f: conv(f, y_scale=np.nan), ValueError, "y_scale must be a finite"),
    ("conv y_zp=-1", "qconv2d", lambda f: conv(f, y_zp=-1), ValueError, "y_zp must be a whole number in [0, 255]"),
    ("conv clamp (3, 300)", "qconv2d", lambda f: conv(f, clamp=(3, 300)), ValueError, "not a sub-range of [0, 255]"),
    ("conv clamp (9, 3)", "qconv2d", lambda f: conv(f, clamp=(9, 3)), ValueError, "0 ≤ lo ≤ hi ≤ 255"),
    ("conv w_q float", "qconv2d", lambda f: f(XC, 0.1, 3, WC.astype(F32), 0.01, 0, BC, 0.2, 5), ValueError,
     "w_q must be a 4-D int8"),
    # --- QConv2d / QLinear constructors --------------------------------------------------------------------
    ("QConv2d stride=0", "QConv2d", lambda f: conv_ctor(f, stride=0), ValueError, "stride must be ≥ 1"),
    ("QConv2d w_zp=200", "QConv2d", lambda f: conv_ctor(f, w_zp=200), ValueError, "w_zp must be whole numbers"),
    ("QConv2d x_zp=3.7", "QConv2d", lambda f: conv_ctor(f, x_zp=3.7), ValueError, "x_zp must be a whole number"),
    ("QConv2d w_scale length 7", "QConv2d", lambda f: conv_ctor(f, w_scale=np.full(7, 0.01)), ValueError,
     "one per output channel (16)"),
    ("QLinear w_zp=-129", "QLinear", lambda f: lin_ctor(f, w_zp=-129), ValueError, "w_zp must be whole numbers"),
    ("QLinear bias NaN", "QLinear", lambda f: lin_ctor(f, bias=np.r_[np.nan, np.nan, np.zeros(4)]), ValueError,
     "bias contains 2 NaN value(s)"),
    # --- qlinear (fast and reference) ----------------------------------------------------------------------
    ("linear w_zp=-129", "qlinear", lambda f: lin(f, w_zp=-129), ValueError, "w_zp must be whole numbers in [-128, 127]"),
    ("linear w_zp per-channel length 4", "qlinear", lambda f: lin(f, w_zp=np.zeros(4, int)), ValueError,
     "w_zp has 4 values"),
    ("linear x_zp=3.7", "qlinear", lambda f: lin(f, x_zp=3.7), ValueError, "got 3.7"),
    ("linear x_zp=-1", "qlinear", lambda f: lin(f, x_zp=-1), ValueError, "x_zp must be a whole number in [0, 255]"),
    ("linear w_scale length 7", "qlinear", lambda f: lin(f, w_scale=np.full(7, 0.01)), ValueError,
     "one per output channel (6)"),
    ("linear x_scale vector", "qlinear", lambda f: lin(f, x_scale=np.full(3, 0.1)), ValueError,
     "x_scale must be one number"),
    ("linear NaN bias", "qlinear", lambda f: lin(f, bias=np.r_[np.nan, np.zeros(5)].astype(F32)), ValueError,
     "bias contains 1 NaN value(s)"),
    ("linear int bias beyond int32", "qlinear", lambda f: lin(f, bias=np.full(6, 2 ** 40)), ValueError,
     "must fit int32"),
    ("linear y_zp=256", "qlinear", lambda f: lin(f, y_zp=256), ValueError, "y_zp must be a whole number"),
    ("linear clamp_hi wrong length", "qlinear", lambda f: lin(f, clamp_hi=np.full(3, 200)), ValueError,
     "clamp_hi must be 6 integer codes"),
    ("linear features mismatch", "qlinear", lambda f: f(XL[:, :5], 0.1, 3, WL, 0.01, 0, BL, 0.2, 5), ValueError,
     "shape mismatch"),
    # --- dynamic linear / conv (fast and reference) --------------------------------------------------------
    ("dynamic_linear w_zp=200", "dynamic_linear", lambda f: dyn_lin(f, w_zp=200), ValueError,
     "w_zp must be whole numbers in [-128, 127]"),
    ("dynamic_linear NaN bias", "dynamic_linear", lambda f: dyn_lin(f, bias=np.r_[np.nan, np.zeros(5)].astype(F32)),
     ValueError, "bias contains 1 NaN value(s)"),
    ("dynamic_linear int bias", "dynamic_linear", lambda f: dyn_lin(f, bias=np.zeros(6, np.int32)), TypeError,
     "bias must be float"),
    ("dynamic_linear w_scale length 7", "dynamic_linear", lambda f: dyn_lin(f, w_scale=np.full(7, 0.01)),
     ValueError, "w_scale has 7 values"),
    ("dynamic_linear reduce_range='yes'", "dynamic_linear", lambda f: dyn_lin(f, reduce_range="yes"), TypeError,
     "reduce_range must be True or False"),
    ("dynamic_conv2d stride=0", "dynamic_conv2d", lambda f: dyn_conv(f, stride=0), ValueError, "stride must be ≥ 1"),
    ("dynamic_conv2d padding=-1", "dynamic_conv2d", lambda f: dyn_conv(f, padding=-1), ValueError,
     "padding must be ≥ 0"),
    ("dynamic_conv2d w_zp=200", "dynamic_conv2d", lambda f: dyn_conv(f, w_zp=200), ValueError,
     "w_zp must be whole numbers"),
    ("dynamic_conv2d NaN bias", "dynamic_conv2d", lambda f: dyn_conv(f, bias=NAN1), ValueError,
     "bias contains 1 NaN value(s)"),
    ("dynamic_conv2d groups=2.0", "dynamic_conv2d", lambda f: dyn_conv(f, groups=2.0), TypeError,
     "groups must be an integer"),
    # --- qadd (fast and reference), qmul, qactivation ------------------------------------------------------
    ("qadd a_zp=3.7", "qadd", lambda f: add(f, a_zp=3.7), ValueError, "a_zp must be a whole number in [0, 255]"),
    ("qadd y_scale=NaN", "qadd", lambda f: add(f, y_scale=np.nan), ValueError, "y_scale must be a finite number > 0"),
    ("qadd b_scale vector", "qadd", lambda f: add(f, b_scale=np.full(2, 0.1)), ValueError, "b_scale must be one number"),
    ("qadd y_zp=256", "qadd", lambda f: add(f, y_zp=256), ValueError, "y_zp must be a whole number"),
    ("qmul b_zp=-3", "qmul", lambda f: f(A, 0.1, 3, A, 0.2, -3, 0.3, 5), ValueError, "b_zp must be a whole number"),
    ("qmul y_scale=0", "qmul", lambda f: f(A, 0.1, 3, A, 0.2, 3, 0.0, 5), ValueError, "y_scale must be a finite"),
    ("qactivation x_zp=1.5", "qactivation", lambda f: f("hardswish", A, 0.1, 1.5, 0.1, 3), ValueError,
     "x_zp must be a whole number"),
    ("qactivation y_scale=-1", "qactivation", lambda f: f("hardswish", A, 0.1, 3, -1.0, 3), ValueError,
     "y_scale must be a finite number > 0"),
    # --- pools (fast and reference) -----------------------------------------------------------------------
    ("max pool kernel_size=0", "qmax_pool2d", lambda f: f(XP, 0), ValueError, "kernel_size must be ≥ 1"),
    ("max pool stride=0", "qmax_pool2d", lambda f: f(XP, 2, 0), ValueError, "stride must be ≥ 1"),
    ("max pool padding > kernel/2", "qmax_pool2d", lambda f: f(XP, 3, 1, 2), ValueError,
     "at most half of the kernel size"),
    ("max pool dilation=0", "qmax_pool2d", lambda f: f(XP, 2, 1, 0, 0), ValueError, "dilation must be ≥ 1"),
    ("avg pool kernel_size=0", "qavg_pool2d", lambda f: avg(f, 0), ValueError, "kernel_size must be ≥ 1"),
    ("avg pool stride=0", "qavg_pool2d", lambda f: avg(f, 2, 0), ValueError, "stride must be ≥ 1"),
    ("avg pool padding > kernel/2", "qavg_pool2d", lambda f: avg(f, 2, 2, 2), ValueError, "at most half"),
    ("avg pool x_zp=3.7", "qavg_pool2d", lambda f: avg(f, 2, x_zp=3.7), ValueError,
     "input zero point must be a whole number"),
    ("avg pool x_scale=0", "qavg_pool2d", lambda f: avg(f, 2, x_scale=0.0), ValueError,
     "input scale must be a finite number > 0"),
    ("avg pool divisor_override=2.5", "qavg_pool2d", lambda f: avg(f, 2, divisor_override=2.5), TypeError,
     "divisor_override must be an integer"),
    ("adaptive pool output_size=0", "qadaptive_avg_pool2d", lambda f: avg(f, 0), ValueError,
     "output_size must be ≥ 1"),
    ("adaptive pool x_zp=300", "qadaptive_avg_pool2d", lambda f: avg(f, 1, x_zp=300), ValueError,
     "input zero point must be a whole number in [0, 255]"),
    # --- int4 linear (fast and reference) ------------------------------------------------------------------
    ("int4 group_size=0", "int4_linear", lambda f: int4(f, group_size=0), ValueError, "group_size must be ≥ 1"),
    ("int4 group_size=32.0", "int4_linear", lambda f: int4(f, group_size=32.0), TypeError,
     "group_size must be an integer"),
    ("int4 NaN bias", "int4_linear", lambda f: int4(f, bias=np.array([np.nan, 0, 0, 0], F32)), ValueError,
     "bias contains 1 NaN value(s)"),
    ("int4 w_zp=9", "int4_linear", lambda f: int4(f, w_zp=9), ValueError, "w_zp outside the int4 range"),
    ("int4 w_scale zero", "int4_linear", lambda f: int4(f, w_scale=np.zeros((4, 2), F32)), ValueError,
     "w_scale must be finite and > 0"),
    # --- output_stage, quantize_u8 -------------------------------------------------------------------------
    ("output_stage y_scale=0", "output_stage", lambda f: stage(f, y_scale=0.0), ValueError,
     "y_scale must be a finite number > 0"),
    ("output_stage y_scale=NaN", "output_stage", lambda f: stage(f, y_scale=np.nan), ValueError,
     "y_scale must be a finite number > 0"),
    ("output_stage y_zp=256", "output_stage", lambda f: stage(f, y_zp=256), ValueError,
     "y_zp must be a whole number in [0, 255]"),
    ("output_stage y_zp=-1", "output_stage", lambda f: stage(f, y_zp=-1), ValueError, "y_zp must be a whole number"),
    ("output_stage clamp (-1, 200)", "output_stage", lambda f: stage(f, clamp=(-1, 200)), ValueError,
     "not a sub-range of [0, 255]"),
    ("output_stage clamp (0, 256)", "output_stage", lambda f: stage(f, clamp=(0, 256)), ValueError,
     "not a sub-range"),
    ("output_stage clamp 3 values", "output_stage", lambda f: stage(f, clamp=(0, 1, 2)), ValueError,
     "clamp must be a pair"),
    ("quantize_u8 zero_point=3.7", "quantize_u8", lambda f: f(XF, 0.1, 3.7), ValueError,
     "zero_point must be a whole number in [0, 255]"),
    ("quantize_u8 zero_point=True", "quantize_u8", lambda f: f(XF, 0.1, True), TypeError, "zero_point must be a number"),
    ("quantize_u8 scale NaN", "quantize_u8", lambda f: f(XF, np.nan, 3), ValueError, "scale must be a finite number"),
    ("quantize_u8 scale vector", "quantize_u8", lambda f: f(XF, np.full(3, 0.1), 3), ValueError,
     "scale must be one number"),
]

RUNS = [pytest.param(call, fn, exc, phrase, id=f"{name} [{fn.__name__}]")
        for name, family, call, exc, phrase in CASES for fn in PAIRS[family]]


def test_catalogue_size():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("call,fn,exc,phrase", RUNS)
def test_bad_input_is_refused_clearly(call, fn, exc, phrase):
    with pytest.raises(exc) as info:
        call(fn)
    assert phrase.lower() in str(info.value).lower(), f"message {str(info.value)!r} lacks {phrase!r}"


# --- valid edge cases still run, fast == reference --------------------------------------------------------
EDGE = [
    ("conv stride 2", "qconv2d", lambda f: conv(f, stride=2)),
    ("conv padding = kernel//2", "qconv2d", lambda f: conv(f, padding=1)),
    ("conv per-channel scales and zero points", "qconv2d",
     lambda f: conv(f, w_scale=np.linspace(0.005, 0.02, 16), w_zp=np.arange(16) - 8)),
    ("conv x_zp 0", "qconv2d", lambda f: conv(f, x_zp=0)),
    ("conv x_zp 255", "qconv2d", lambda f: conv(f, x_zp=255, padding=1)),
    ("conv whole-number float x_zp", "qconv2d", lambda f: conv(f, x_zp=3.0)),
    ("conv depthwise stride 2", "qconv2d",
     lambda f: f(np.repeat(XC, 3, axis=1)[:, :8], 0.1, 7, WC[:8, :1], np.full(8, 0.01), 0, BC[:8], 0.2, 5, stride=2,
                 padding=1, groups=8)),
    ("conv int32 bias, clamp", "qconv2d", lambda f: conv(f, bias=np.arange(16, dtype=np.int32), clamp=(5, 200))),
    ("linear per-channel, x_zp 255", "qlinear", lambda f: lin(f, w_scale=np.full(6, 0.01), x_zp=255)),
    ("linear w_zp -128 and 127", "qlinear", lambda f: lin(f, w_zp=np.array([-128, 127, 0, 1, 2, 3]))),
    ("linear scale as 0-d array", "qlinear", lambda f: lin(f, x_scale=np.array(0.1, F32), y_zp=np.int64(0))),
    ("dynamic conv stride 2 padding 1", "dynamic_conv2d", lambda f: dyn_conv(f, stride=2, padding=1)),
    ("dynamic linear per-channel", "dynamic_linear", lambda f: dyn_lin(f, w_scale=np.full(6, 0.01), bias=BL)),
    ("max pool padding = kernel//2", "qmax_pool2d", lambda f: f(XP, 3, 2, 1)),
    ("avg pool x_zp 255", "qavg_pool2d", lambda f: avg(f, 2, x_zp=255)),
    ("adaptive pool x_zp 0", "qadaptive_avg_pool2d", lambda f: avg(f, 2, x_zp=0)),
    ("qadd zero points 0 and 255", "qadd", lambda f: add(f, a_zp=0, b_zp=255)),
    ("int4 with bias", "int4_linear", lambda f: int4(f, bias=np.ones(4, F32))),
]


@pytest.mark.parametrize("call,family", [pytest.param(c, fam, id=n) for n, fam, c in EDGE])
def test_valid_edge_cases_still_work(call, family):
    outs = [call(f) for f in PAIRS[family]]
    for y in outs[1:]:
        np.testing.assert_array_equal(outs[0], y)
