"""``minquant doctor``: which integer code path each framework takes on this machine, and whether minquant
reproduces it — checked live.

For every framework (torch engines fbgemm, x86 and qnnpack; ONNX Runtime's CPU provider) and op family the
doctor resolves the :class:`~minquant.target.Arithmetic` of this host (:mod:`minquant.target`), names the
kernel it stands for ("oneDNN, exact int32 (VNNI)", "fbgemm depthwise kernel, int16 pair saturation",
"ATen 256-bit build, blocks of 64 + scalar tail", ...) and then runs **one small random case** through the
framework and through minquant's fast kernel, counting the output elements that differ (integer codes, or
the float32 bits of a float output). The cases are built so that a wrong emulation shows:

* full-range int8 weights and large activations (codes 128…255), so that u8×s8 pairs overflow int16 and
  pair saturation, if the kernel has it, really changes accumulators — for every GEMM-type row the doctor
  also counts how many elements differ when minquant uses the *opposite* pair rule (``control``: > 0 means
  the case tells the two rules apart);
* output qparams chosen from the exact real result so that outputs span the uint8 range without piling up
  at 0 or 255 (``clipped`` = the fraction of the framework's outputs at 0 or 255);
* element counts that are not a multiple of ATen's SIMD block, so the scalar tail is exercised;
* one row per torch engine, "conv 1x1, rounding ties" (:func:`_ties_case`), built so that the *order* of
  the output stage's float32 multiplications decides a few codes: random cases almost never land close enough
  to a .5 tie (eager x86 on an AMX CPU once differed in 928 of 4,000 MobileNetV2 logits while every random
  row here matched).

The framework side is the package's oracles, :mod:`minquant.frameworks.torch_oracle` (one op under
``engine(...)``) and :mod:`minquant.frameworks.ort_oracle` (one-node models), imported inside the functions; a
missing framework gives rows that say so (``checked=False``) instead of failing. Everything runs on one thread (torch's thread count is restored).

    rows = doctor()                 # list[Row]
    print(format_table(rows))
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ..target import Arithmetic, Cpu, Target, fbgemm_conv_path

__all__ = ["Row", "doctor", "format_table", "format_host", "FAMILIES"]

_F32 = np.float32

#: framework label → (Target framework, the package it needs)
_FRAMEWORKS = {"torch fbgemm": ("fbgemm", "torch"), "torch x86": ("x86", "torch"),
               "torch qnnpack": ("qnnpack", "torch"), "onnxruntime": ("onnxruntime", "onnxruntime")}
_TORCH_FAMILIES = ("linear", "conv dense", "conv depthwise 3x3", "conv groupwise", "conv 1x1, rounding ties",
                   "add", "mul", "hardswish", "global avg pool", "dynamic linear")
_ORT_FAMILIES = ("QLinearConv dense", "QLinearConv depthwise 3x3", "QLinearMatMul", "QLinearAdd",
                 "QLinearGlobalAveragePool", "MatMulNBits")
#: framework label → op families checked
FAMILIES = {k: (_ORT_FAMILIES if k == "onnxruntime" else _TORCH_FAMILIES) for k in _FRAMEWORKS}

# the convolution geometries (N, C_in, C_out, H=W, groups), all 3×3, stride 1, padding 1, dilation 1:
# dense; depthwise with 32 channels (fbgemm's depthwise kernel: a multiple of 8, "same" padding); groupwise
# with 4 channels per group in and out and 8 groups (fbgemm's groupwise kernel on AVX-512 and AVX2 hosts)
_CONV = {"dense": (1, 16, 24, 11, 1), "depthwise": (1, 32, 32, 11, 32), "groupwise": (1, 32, 32, 11, 8)}
_CONV_GEO = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
# the rounding-ties case: a dense 1×1 convolution, no padding, 8 × 28 × 28 pixels × 64 channels (:func:`_ties_case`)
_TIES = (8, 64, 64, 28)
_TIES_GEO = dict(kernel=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1))
_LINEAR = (7, 200, 37)          # M, K, N
_ELEMENTS = 1000                # add / mul / hardswish: 15 blocks of 64 + a tail of 40
_POOL = (1, 48, 7, 7)


@dataclass
class Row:
    """One framework × op family.

    framework : 'torch fbgemm', 'torch x86', 'torch qnnpack' or 'onnxruntime';
    family    : the op family ('conv dense', 'add', 'QLinearMatMul', ...);
    path      : the kernel the framework takes on this host and how it rounds (from the resolved Arithmetic);
    checked   : a live case ran (False: framework missing, ``live=False`` or the path did not resolve);
    differing : output elements where minquant's fast kernel and the framework differ (None: not checked
                or the check failed — see ``note``);
    elements  : output elements compared;
    control   : GEMM-type rows: elements that differ when minquant uses the opposite int16-pair rule
                (> 0: this case would have caught the wrong rule); the rounding-ties row on oneDNN: elements
                that differ under oneDNN's other output-stage order (VNNI ↔ AMX); None elsewhere;
    clipped   : fraction of the framework's uint8 outputs at 0 or 255 (None for float outputs);
    note      : why a row is not checked, or the error a check raised."""
    framework: str
    family: str
    path: str
    checked: bool
    differing: int | None
    elements: int | None
    control: int | None = None
    clipped: float | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        """Not a failure: matched bit for bit, or not checked at all."""
        return (not self.checked) or self.differing == 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------------
# path names (from the resolved arithmetic only)
# ------------------------------------------------------------------------------------------------------
def _accumulation(ar: Arithmetic, vnni_gemm: bool) -> str:
    if ar.saturate_pairs:
        return "int16 pair saturation"
    return "exact int32 (VNNI)" if vnni_gemm else "exact int32"


def _conv_kind(family: str) -> str:
    return {"conv dense": "dense", "QLinearConv dense": "dense", "conv depthwise 3x3": "depthwise",
            "QLinearConv depthwise 3x3": "depthwise", "conv groupwise": "groupwise",
            "conv 1x1, rounding ties": "ties"}[family]


def _conv_layer(kind: str) -> dict:
    if kind == "ties":
        return dict(groups=1, c_in=_TIES[1], c_out=_TIES[2], symmetric_weights=True, **_TIES_GEO)
    _, c_in, c_out, _, groups = _CONV[kind]
    return dict(groups=groups, c_in=c_in, c_out=c_out, symmetric_weights=True, **_CONV_GEO)


def _resolve(target: Target, family: str) -> Arithmetic:
    if "Conv" in family or family.startswith("conv"):
        return target.conv(**_conv_layer(_conv_kind(family)))
    if family in ("linear", "dynamic linear", "QLinearMatMul", "MatMulNBits"):
        return target.linear()
    return target.ops()


def _path(target: Target, family: str, ar: Arithmetic) -> str:
    cpu = target.cpu
    if ar.name == "onednn":
        kernel = "oneDNN AMX (s_x·s_w first)" if ar.multiplier == "onednn_amx" else "oneDNN"
        return f"{kernel}, " + _accumulation(ar, cpu.onednn_vnni)
    if family.startswith("conv") or family.startswith("QLinearConv"):
        if ar.name == "fbgemm":
            layer = _conv_layer(_conv_kind(family))
            kernel = fbgemm_conv_path(cpu, layer["groups"], layer["c_in"], layer["c_out"], layer["kernel"],
                                      layer["stride"], layer["padding"], layer["dilation"])
            name = {"depthwise": "fbgemm depthwise kernel", "groupwise": "fbgemm groupwise kernel",
                    "pointwise": "fbgemm GEMM (1x1)", "im2col": "fbgemm GEMM (im2col)"}[kernel]
            vnni = cpu.avx512_vnni if kernel == "groupwise" else (cpu.fbgemm_vnni and kernel != "depthwise")
            return f"{name}, {_accumulation(ar, vnni)}"
        if ar.name == "qnnpack":
            return "QNNPACK, " + _accumulation(ar, False)
        if ar.name == "onnxruntime":
            if _conv_kind(family) == "depthwise":
                return "MLAS depthwise kernel, " + _accumulation(ar, False)
            return "MLAS u8s8 GEMM, " + _accumulation(ar, cpu.mlas_vnni)
    if family in ("linear", "dynamic linear", "QLinearMatMul"):
        extra = ""
        if family == "dynamic linear":
            extra = " (reduce_range ignored)" if ar.name == "qnnpack" else " (reduce_range: codes 0..127)"
        name = {"fbgemm": "fbgemm GEMM", "qnnpack": "QNNPACK GEMM", "onnxruntime": "MLAS u8s8 GEMM"}[ar.name]
        vnni = {"fbgemm": cpu.fbgemm_vnni, "onnxruntime": cpu.mlas_vnni}.get(ar.name, False)
        return f"{name}{extra}, {_accumulation(ar, vnni)}"
    if family == "MatMulNBits":
        from ..kernels.int4 import _m1_lanes
        lanes = _m1_lanes(ar)
        isa = "AVX-512" if lanes == 16 else "AVX2"
        return f"MLAS SQNBit fp32, M=1 dot kernel, {lanes} lanes ({isa})"
    if family in ("add", "hardswish"):
        if ar.name == "fbgemm":
            from ..kernels.add import torch_vector_block
            blk = torch_vector_block(ar)
            what = "" if family == "add" else " tables"
            if not blk:
                return f"ATen scalar loop{what}"
            return f"ATen {ar.vector_bits}-bit build{what}, blocks of {blk} + scalar tail"
        if ar.name == "qnnpack":
            return "QNNPACK fixed point, round half away" if family == "add" else "QNNPACK float32 table"
    if family == "QLinearAdd":
        return "MLAS float32 FMAs, z_y before rounding"
    if family == "mul":
        return "ATen qmul, float32 (position-independent)"
    if family == "global avg pool":
        if ar.name == "qnnpack":
            return "QNNPACK average pool (kernel = H x W)"
        return "ATen adaptive avg pool, NCHW raw sum"
    if family == "QLinearGlobalAveragePool":
        return "MLAS float32 scale, z_y after rounding"
    return ar.name


# ------------------------------------------------------------------------------------------------------
# case construction (framework-independent)
# ------------------------------------------------------------------------------------------------------
def _out_qparams(real):
    """(y_scale, y_zp) mapping the real output range onto ~[16, 240]: full range, not saturated."""
    lo, hi = min(float(np.min(real)), 0.0), max(float(np.max(real)), 0.0)
    ys = _F32(max(hi - lo, 1e-3) / 224.0)
    yz = int(np.clip(round(-lo / float(ys)) + 16, 0, 255))
    return ys, yz


def _big_codes(rng, shape):
    """Large activations: u8 codes 128…255 (with full-range int8 weights, u8×s8 pairs overflow int16)."""
    return rng.integers(128, 256, shape).astype(np.uint8)


def _weights(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def _linear_case(rng):
    m, k, n = _LINEAR
    x = _big_codes(rng, (m, k))
    xs, xz = _F32(0.02), 190
    w = _weights(rng, (n, k))
    ws = rng.uniform(0.002, 0.01, n).astype(_F32)
    bias = rng.normal(0, 2, n).astype(_F32)
    real = ((x.astype(np.float64) - xz) @ w.astype(np.float64).T) * float(xs) * ws.astype(np.float64) + bias
    ys, yz = _out_qparams(real)
    return dict(x=x, xs=xs, xz=xz, w=w, ws=ws, wz=np.zeros(n, np.int64), bias=bias, ys=ys, yz=yz)


def _conv_real(x, xz, w, groups):
    """Exact Σ (x − z_x)·w of a 3×3, stride 1, padding 1 convolution (padding = real 0), float64."""
    n, c, h, wd = x.shape
    o, cg = w.shape[:2]
    og = o // groups
    xp = np.pad(x.astype(np.float64) - xz, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, o, h, wd))
    for g in range(groups):
        for i in range(3):
            for j in range(3):
                patch = xp[:, g * cg:(g + 1) * cg, i:i + h, j:j + wd]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch,
                                                         w[g * og:(g + 1) * og, :, i, j].astype(np.float64))
    return out


def _conv_case(rng, kind):
    n, c_in, c_out, hw, groups = _CONV[kind]
    x = _big_codes(rng, (n, c_in, hw, hw))
    xs, xz = _F32(0.02), 190
    w = _weights(rng, (c_out, c_in // groups, 3, 3))
    ws = rng.uniform(0.002, 0.01, c_out).astype(_F32)
    bias = rng.normal(0, 2, c_out).astype(_F32)
    real = _conv_real(x, xz, w, groups) * float(xs) * ws.astype(np.float64)[None, :, None, None] \
        + bias[None, :, None, None]
    ys, yz = _out_qparams(real)
    return dict(x=x, xs=xs, xz=xz, w=w, ws=ws, wz=np.zeros(c_out, np.int64), bias=bias, ys=ys, yz=yz,
                groups=groups)


def _ties_case(rng):
    """A case where the *order* of an output stage's float32 multiplications shows: large codes, positive-mean
    weights and a small z_x make every accumulator large, and a bias cancelling each channel's mean leaves
    v = acc·s_x·s_w + b small, so the products' rounding errors are magnified ~30× relative to v — a few
    outputs per 100 000 then lie close enough to a .5 tie that the order decides them (oneDNN's VNNI and AMX
    kernels differ exactly there: docs/quantization.md step 7c). 1×1, no padding, so no border pulls the
    output range wide; ``control`` counts the outputs the other oneDNN order gets wrong."""
    n, c_in, c_out, hw = _TIES
    x = rng.integers(100, 256, (n, c_in, hw, hw)).astype(np.uint8)
    xs, xz = _F32(0.02), 5
    w = np.clip(np.rint(rng.normal(40, 30, (c_out, c_in, 1, 1))), -127, 127).astype(np.int8)
    ws = rng.uniform(0.001, 0.004, c_out).astype(_F32)
    prod = np.einsum("nchw,oc->nohw", x.astype(np.float64) - xz, w[:, :, 0, 0].astype(np.float64)) \
        * float(xs) * ws.astype(np.float64)[None, :, None, None]
    bias = (-prod.mean(axis=(0, 2, 3)) + rng.normal(0, 0.05, c_out)).astype(_F32)
    ys, yz = _out_qparams(prod + bias[None, :, None, None])
    return dict(x=x, xs=xs, xz=xz, w=w, ws=ws, wz=np.zeros(c_out, np.int64), bias=bias, ys=ys, yz=yz,
                groups=1, padding=0)


def _pair_case(rng, product=False):
    a = rng.integers(0, 256, _ELEMENTS).astype(np.uint8)
    b = rng.integers(0, 256, _ELEMENTS).astype(np.uint8)
    sa, za, sb, zb = _F32(0.0231), 117, _F32(0.0412), 140
    ra = float(sa) * (a.astype(np.float64) - za)
    rb = float(sb) * (b.astype(np.float64) - zb)
    ys, yz = _out_qparams(ra * rb if product else ra + rb)
    return dict(a=a, sa=sa, za=za, b=b, sb=sb, zb=zb, ys=ys, yz=yz)


def _hardswish_case(rng):
    x = rng.integers(0, 256, _ELEMENTS).astype(np.uint8)
    xs, xz = _F32(0.0317), 128
    r = float(xs) * (np.arange(256) - xz)
    ys, yz = _out_qparams(r * np.clip(r + 3, 0, 6) / 6)
    return dict(x=x, xs=xs, xz=xz, ys=ys, yz=yz)


def _pool_case(rng):
    return dict(x=rng.integers(0, 256, _POOL).astype(np.uint8), xs=_F32(0.0317), xz=13)


# ------------------------------------------------------------------------------------------------------
# the two sides: minquant's fast kernels and the frameworks' oracles (minquant.frameworks.torch_oracle /
# ort_oracle) take the same arguments
# ------------------------------------------------------------------------------------------------------
def _gemm_args(c):
    return c["x"], c["xs"], c["xz"], c["w"], c["ws"], c["wz"], c["bias"], c["ys"], c["yz"]


def _pair_args(c):
    return c["a"], c["sa"], c["za"], c["b"], c["sb"], c["zb"], c["ys"], c["yz"]


def _conv_kw(c):
    return dict(stride=1, padding=c.get("padding", 1), dilation=1, groups=c["groups"])


def _minquant(family, c, ar):
    """minquant's fast kernel on case ``c`` under the resolved arithmetic ``ar``."""
    from ..kernels import dynamic_linear, int4_linear, qadaptive_avg_pool2d, qadd, qconv2d, qlinear
    from ..kernels.elementwise import qactivation, qmul
    if family in ("linear", "QLinearMatMul"):
        return qlinear(*_gemm_args(c), target=ar)
    if "onv" in family:
        return qconv2d(*_gemm_args(c), **_conv_kw(c), target=ar)
    if family in ("add", "QLinearAdd"):
        return qadd(*_pair_args(c), target=ar)
    if family == "mul":
        return qmul(*_pair_args(c), target=ar)
    if family == "hardswish":
        return qactivation("hardswish", c["x"], c["xs"], c["xz"], c["ys"], c["yz"], target=ar)
    if family == "global avg pool":
        return qadaptive_avg_pool2d(c["x"], 1, x_scale=c["xs"], x_zp=c["xz"], target=ar)
    if family == "QLinearGlobalAveragePool":
        return qadaptive_avg_pool2d(c["x"], 1, x_scale=c["xs"], x_zp=c["xz"], y_scale=c["ys"], y_zp=c["yz"],
                                    target=ar)
    if family == "dynamic linear":
        return dynamic_linear(c["xf"], c["w"], c["ws"], c["wz"], c["bias"], reduce_range=True, target=ar)
    if family == "MatMulNBits":
        return int4_linear(c["xf"], c["packed"].reshape(-1), c["scales"], c["zp"], group_size=c["block"],
                           in_features=c["k"], dtype="uint4", target=ar)
    raise ValueError(f"no minquant kernel for family {family!r}")


def _torch_run(family, c):
    """torch's operator on case ``c`` under the current engine (:mod:`minquant.frameworks.torch_oracle`)."""
    from ..frameworks import torch_oracle as tor
    if family == "linear":
        return tor.qlinear(*_gemm_args(c))
    if family == "dynamic linear":
        return tor.dynamic_linear(c["xf"], c["w"], c["ws"], c["wz"], c["bias"], reduce_range=True)
    if family.startswith("conv"):
        return tor.qconv2d(*_gemm_args(c), **_conv_kw(c))
    if family in ("add", "mul"):
        return (tor.qadd if family == "add" else tor.qmul)(*_pair_args(c))
    if family == "hardswish":
        return tor.qhardswish(c["x"], c["xs"], c["xz"], c["ys"], c["yz"])
    if family == "global avg pool":
        return tor.qadaptive_avg_pool2d(c["x"], c["xs"], c["xz"], 1)
    raise ValueError(family)


@contextlib.contextmanager
def _torch_engine(framework):
    """torch_oracle.engine(framework) on one torch thread; engine and thread count restored after."""
    import torch

    from ..frameworks.torch_oracle import engine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with engine(framework):
            yield
    finally:
        torch.set_num_threads(threads)


def _ort_case_and_run(rng, family):
    """(case, ORT's output) for an ONNX Runtime family: one-node models of
    :mod:`minquant.frameworks.ort_oracle` (CPU provider, one thread, graph optimizations off)."""
    from ..affine import quantize_bias
    from ..frameworks import ort_oracle as ort
    if family.startswith("QLinearConv"):
        c = _conv_case(rng, _conv_kind(family))
        b_q = quantize_bias(c["bias"], c["xs"], c["ws"], target="onnxruntime").astype(np.int32)
        # minquant gets the float bias that quantizes to exactly these int32 codes
        c["bias"] = (b_q.astype(np.float64) * (c["xs"] * c["ws"]).astype(_F32).astype(np.float64)).astype(_F32)
        if not np.array_equal(quantize_bias(c["bias"], c["xs"], c["ws"], target="onnxruntime"), b_q):
            raise RuntimeError("doctor: the QLinearConv bias does not round-trip")
        y = ort.qlinear_conv(c["x"], c["xs"], c["xz"], c["w"], c["ws"], c["wz"], b_q, c["ys"], c["yz"], **_conv_kw(c))
        return c, y
    if family == "QLinearMatMul":
        c = _linear_case(rng)
        c["ws"], c["wz"], c["bias"] = _F32(0.006), 0, None      # per-tensor B, no bias
        real = ((c["x"].astype(np.float64) - c["xz"]) @ c["w"].astype(np.float64).T) * float(c["xs"]) * 0.006
        c["ys"], c["yz"] = _out_qparams(real)
        y = ort.qlinear_matmul(c["x"], c["xs"], c["xz"], c["w"], c["ws"], c["wz"], c["ys"], c["yz"])
        return c, y
    if family == "QLinearAdd":
        c = _pair_case(rng)
        return c, ort.qlinear_add(*_pair_args(c))
    if family == "QLinearGlobalAveragePool":
        c = _pool_case(rng)
        c["ys"], c["yz"] = _F32(0.0211), 40
        return c, ort.qlinear_global_average_pool(c["x"], c["xs"], c["xz"], c["ys"], c["yz"])
    if family == "MatMulNBits":
        k, n, block = 256, 37, 32                  # one row (M = 1: the decode kernel), N mod 4 = 1
        nb = k // block
        q = rng.integers(0, 16, (n, nb, block)).astype(np.uint8)
        packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
        scales = rng.uniform(0.005, 0.05, (n, nb)).astype(_F32)
        z = rng.integers(0, 16, (n, nb)).astype(np.uint8)
        zp_packed = (z[:, 0::2] | (z[:, 1::2] << 4)).astype(np.uint8).reshape(-1)
        x = rng.normal(0, 1, (1, k)).astype(_F32)
        c = dict(xf=x, packed=packed, scales=scales, zp=z.astype(np.int64), block=block, k=k)
        return c, ort.matmul_nbits(x, packed, scales, zp_packed, k=k, n=n, block_size=block)
    raise ValueError(family)


# ------------------------------------------------------------------------------------------------------
# the check
# ------------------------------------------------------------------------------------------------------
def _count(got, want) -> int:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise RuntimeError(f"shape {got.shape} from minquant, {want.shape} from the framework")
    if want.dtype == np.float32:
        return int(np.count_nonzero(got.astype(_F32).view(np.uint32) != want.view(np.uint32)))
    return int(np.count_nonzero(got != want))


#: oneDNN's two output-stage orders (VNNI kernels / AMX kernels), each the other's control
_ONEDNN_ORDERS = {"onednn": "onednn_amx", "onednn_amx": "onednn"}
_GEMM_FAMILIES = ("linear", "conv dense", "conv depthwise 3x3", "conv groupwise", "QLinearConv dense",
                  "QLinearConv depthwise 3x3", "QLinearMatMul")


def _torch_case(rng, family):
    if family == "linear":
        return _linear_case(rng)
    if family == "conv 1x1, rounding ties":
        return _ties_case(rng)
    if family.startswith("conv"):
        return _conv_case(rng, _conv_kind(family))
    if family in ("add", "mul"):
        return _pair_case(rng, product=family == "mul")
    if family == "hardswish":
        return _hardswish_case(rng)
    if family == "global avg pool":
        return _pool_case(rng)
    if family == "dynamic linear":
        c = _linear_case(rng)
        c["xf"] = (rng.normal(0, 2, c["x"].shape) + 3).astype(_F32)      # mostly large positive inputs
        return c
    raise ValueError(family)


def _check(row: Row, family, ar, case_and_want):
    """Fill ``row`` with the live comparison (any exception → note, differing None)."""
    row.checked = True
    try:
        c, want = case_and_want()
        got = _minquant(family, c, ar)
        row.differing, row.elements = _count(got, want), int(np.asarray(want).size)
        if np.asarray(want).dtype == np.uint8:
            row.clipped = float(np.mean((want == 0) | (want == 255)))
        if family in _GEMM_FAMILIES:
            other = dataclasses.replace(ar, saturate_pairs=not ar.saturate_pairs)
            row.control = _count(_minquant(family, c, other), want)
        elif family == "conv 1x1, rounding ties" and ar.multiplier in _ONEDNN_ORDERS:
            other = dataclasses.replace(ar, multiplier=_ONEDNN_ORDERS[ar.multiplier])
            row.control = _count(_minquant(family, c, other), want)
    except Exception as e:  # noqa: BLE001 — a doctor reports, it does not crash
        row.differing = None
        row.note = f"error: {type(e).__name__}: {' '.join(str(e).split())}"[:300]


def _available(package: str) -> str:
    """'' if ``package`` imports, else the reason."""
    try:
        if package == "onnxruntime":
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        else:
            import torch  # noqa: F401
        return ""
    except Exception as e:  # noqa: BLE001
        return f"{package} not available ({type(e).__name__}: {e})"


def doctor(live: bool = True, cpu: Cpu | None = None, seed: int = 0) -> list[Row]:
    """One :class:`Row` per framework × op family: the path the framework takes on ``cpu`` (default: this
    host, as this process's environment caps it) and, with ``live``, a bit-exact check of minquant against
    the framework on one random case (module docstring). Live checks only make sense for the host."""
    cpu = Cpu.host() if cpu is None else cpu
    rows: list[Row] = []
    for label, (framework, package) in _FRAMEWORKS.items():
        target = Target(framework, cpu)
        missing = _available(package) if live else ""
        if live and not missing and package == "torch":
            import torch
            if framework not in torch.backends.quantized.supported_engines:
                missing = f"torch engine {framework!r} not supported by this torch build"
        torch_live = live and not missing and package == "torch"
        with _torch_engine(framework) if torch_live else contextlib.nullcontext():
            for i, family in enumerate(FAMILIES[label]):
                try:
                    ar = _resolve(target, family)
                    path = _path(target, family, ar)
                except ValueError as e:
                    rows.append(Row(label, family, "unresolved", False, None, None,
                                    note=" ".join(str(e).split())[:300]))
                    continue
                row = Row(label, family, path, False, None, None)
                rows.append(row)
                if not live:
                    row.note = "not checked (live=False)"
                    continue
                if missing:
                    row.note = missing
                    continue
                rng = np.random.default_rng([seed, i, list(_FRAMEWORKS).index(label)])
                if package == "torch":
                    def run(family=family, rng=rng):
                        c = _torch_case(rng, family)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            return c, _torch_run(family, c)
                else:
                    def run(family=family, rng=rng):
                        return _ort_case_and_run(rng, family)
                _check(row, family, ar, run)
    return rows


# ------------------------------------------------------------------------------------------------------
# printing
# ------------------------------------------------------------------------------------------------------
def format_host(cpu: Cpu | None = None) -> str:
    """The CPU features and what each library makes of them."""
    cpu = Cpu.host() if cpu is None else cpu
    yes = {True: "yes", False: "no"}
    lines = [f"CPU  {cpu.describe()}",
             f"     fbgemm VNNI: {yes[cpu.fbgemm_vnni]}   oneDNN VNNI: {yes[cpu.onednn_vnni]}   oneDNN AMX: {yes[cpu.onednn_amx]}   "
             f"torch x86 picks oneDNN for conv: {yes[cpu.torch_picks_onednn]}   MLAS VNNI: {yes[cpu.mlas_vnni]}",
             f"     ATen capability: {cpu.aten_capability}; quantized elementwise kernels run the "
             f"{cpu.aten_vector_bits}-bit build"]
    versions = []
    for mod in ("torch", "onnxruntime"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001
            versions.append(f"{mod}: not installed")
    import numba
    lines.append("     " + ", ".join(versions + [f"numpy {np.__version__}", f"numba {numba.__version__}"]))
    return "\n".join(lines)


def _status(r: Row) -> str:
    if not r.checked:
        note = r.note or "not checked"
        return note if len(note) <= 140 else note[:139] + "…"
    if r.differing is None:
        return "FAILED  " + r.note
    s = f"{r.differing} / {r.elements} differ" + ("" if r.differing == 0 else "   <-- MISMATCH")
    if r.control is not None:
        rule = "other oneDNN order" if r.family == "conv 1x1, rounding ties" else "opposite pair rule"
        s += f"   ({rule}: {r.control} differ)"
    return s


def format_table(rows) -> str:
    """A fixed-width table: framework | op family | path | live check."""
    head = ("framework", "op family", "path on this host", "minquant vs framework")
    body = [(r.framework, r.family, r.path, _status(r)) for r in rows]
    w = [max(len(x[i]) for x in [head, *body]) for i in range(3)]
    fmt = lambda t: f"{t[0]:<{w[0]}}  {t[1]:<{w[1]}}  {t[2]:<{w[2]}}  {t[3]}".rstrip()  # noqa: E731
    lines = [fmt(head), fmt(tuple("-" * n for n in w) + ("-" * len(head[3]),))]
    prev = None
    for r, t in zip(rows, body):
        if prev is not None and r.framework != prev:
            lines.append("")
        prev = r.framework
        lines.append(fmt(t))
    return "\n".join(lines)


def main(json_output: bool = False, live: bool = True) -> int:
    """Print the host and the table (or JSON); 0 if every live row matches, else 1."""
    t0 = time.perf_counter()
    rows = doctor(live=live)
    seconds = time.perf_counter() - t0
    checked = [r for r in rows if r.checked]
    bad = [r for r in checked if not r.ok]
    unchecked = len(rows) - len(checked)
    if json_output:
        import json
        cpu = Cpu.host()
        print(json.dumps({"cpu": cpu.to_dict(), "seconds": round(seconds, 2),
                          "rows": [r.to_dict() for r in rows]}, indent=1))
    else:
        print(format_host())
        print()
        print(format_table(rows))
        print()
        print(f"{len(checked) - len(bad)} of {len(checked)} live rows match bit for bit"
              + (f"; {len(bad)} do not" if bad else "") + (f"; {unchecked} rows not checked" if unchecked else "")
              + f" ({seconds:.1f} s)")
    return 1 if bad else 0
