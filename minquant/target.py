"""The target: *whose* integer arithmetic minquant reproduces, on *which* CPU (docs/quantization.md, step 6).

Every framework computes the same real-number formula (step 7)

    y_q = clamp(z_y + round(M · (acc + bias / (s_x·s_w)))),   M = s_x·s_w / s_y,
    acc = Σ_k (a_k − z_x)(w_k − z_w)                          (step 4)

but evaluates it with its own roundings — and the roundings depend on the CPU: fbgemm adds u8×s8 products
in int16-saturating pairs on CPUs without AVX512-VNNI and exactly with it; torch's default engine ``x86``
sends a convolution to oneDNN instead of fbgemm when the CPU has AVX512-VNNI; ATen's quantized elementwise
kernels round the elements of each vector block differently from the scalar tail, so the width of the
kernel build that runs decides which positions round which way. A :class:`Target` is therefore two pieces of data:

``framework``  ``"fbgemm"``, ``"x86"`` (torch's default engine: oneDNN or fbgemm per convolution, by torch's
               own rule), ``"x86-inductor"`` (a torchao pt2e model lowered by ``torch.compile``: every conv and
               linear on oneDNN, handed the scales themselves, the rest in Inductor's float32 C++), ``"qnnpack"``, ``"onnxruntime"`` (ONNX Runtime's CPU provider, MLAS) or
               ``"minquant"`` (the textbook arithmetic of docs/quantization.md);
``cpu``        a :class:`Cpu`: the instruction sets the libraries use (AVX2, AVX-512 F/BW/VL/DQ,
               AVX512-VNNI, AVX-VNNI) — the host's by default, or a named preset (:data:`CPUS`) to ask what
               *another* machine computes.

A target *resolves*, layer by layer, to an :class:`Arithmetic` — the handful of facts a kernel needs (do
pairs saturate, is the bias float or int32, how is the multiplier rounded, how wide are the vector blocks).
Kernels take ``target=`` (a name, a :class:`Target` or an already resolved :class:`Arithmetic`) and call
:func:`resolve_conv` / :func:`resolve_linear` / :func:`resolve_ops` once; nothing compares framework names
outside this module and the kernel that implements a path. A saved model records its full target
(:meth:`Target.to_dict`), so it computes the same codes when loaded on a host with another CPU.

    >>> Target("x86", "avx2").conv(groups=1, symmetric_weights=True).name      # an AVX2 server: fbgemm
    'fbgemm'
    >>> Target("x86", "avx512-vnni").conv(groups=1, symmetric_weights=True).name
    'onednn'

This module imports only the standard library (and NumPy for nothing); the host CPU is read lazily, on the
first call of :meth:`Cpu.host`, never at import.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
from dataclasses import dataclass

__all__ = ["Cpu", "CPUS", "Target", "Arithmetic", "LiteRTPath", "LITERT_PATHS", "FRAMEWORKS", "QUANTIZE_RULES", "as_target", "fbgemm_conv_path",
           "resolve_conv",
           "resolve_linear", "resolve_ops", "quantize_rule_of", "onednn_matmul_combines"]

#: framework names a :class:`Target` accepts (module docstring)
FRAMEWORKS = ("fbgemm", "x86", "qnnpack", "onnxruntime", "minquant", "litert", "litert-builtin", "litert-ref", "x86-inductor")
#: the two ways frameworks quantize a float (``affine.quantize``): multiply by f32(1/s), or divide by s
QUANTIZE_RULES = ("torch", "onnxruntime")
_ISAS = ("avx2", "avx512", "avx512_vnni", "avx512_amx")   # ISA levels a library can be capped at, low to high
#                                                    (fbgemm has no AMX level)
_ATEN_CAPS = ("default", "avx2", "avx512")          # ATen's capabilities, low to high


# ----------------------------------------------------------------------------------------------- the CPU
@dataclass(frozen=True)
class Cpu:
    """The instruction sets that decide which integer code path a framework takes.

    avx512      : AVX-512 F, BW, VL and DQ — ATen's ``avx512`` capability (64-byte vectors) and fbgemm's
                  AVX-512 kernels;
    avx512_vnni : AVX512-VNNI (``vpdpbusd``: u8×s8 products summed exactly into int32) — fbgemm's VNNI
                  kernels, torch's choice of oneDNN under engine ``x86``, MLAS's VNNI kernels;
    avx_vnni    : the 256-bit VEX form of VNNI (Intel client chips since Alder Lake) — MLAS only;
    amx         : AMX-INT8 tiles (Intel Sapphire Rapids and later; needs avx512_vnni) — oneDNN's AMX (brgemm)
                  convolution kernels, which multiply the two scales before the accumulator (step 7c);
    linux       : torch's ``x86`` engine considers oneDNN only on Linux.

    The three ``*_isa`` caps say what a library was *told* to use, as the environment variables
    ``FBGEMM_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA`` and ``ATEN_CPU_CAPABILITY`` do (each library reads
    its variable once, when it loads): ``None`` = the best the CPU has, else one of ``"avx2"``, ``"avx512"``,
    ``"avx512_vnni"``, ``"avx512_amx"`` (oneDNN only; ATen: ``"default"``, ``"avx2"``, ``"avx512"``). torch's choice of oneDNN and fbgemm's
    groupwise kernel read the CPU itself (cpuinfo) and ignore the caps.
    """
    name: str
    avx512: bool = False
    avx512_vnni: bool = False
    avx_vnni: bool = False
    amx: bool = False
    linux: bool = True
    fbgemm_isa: str | None = None
    onednn_isa: str | None = None
    aten_isa: str | None = None

    def __post_init__(self):
        if self.avx512_vnni and not self.avx512:
            raise ValueError(f"Cpu {self.name!r}: avx512_vnni needs avx512")
        if self.amx and not self.avx512_vnni:
            raise ValueError(f"Cpu {self.name!r}: amx needs avx512_vnni")
        for field, allowed in (("fbgemm_isa", _ISAS[:3]), ("onednn_isa", _ISAS), ("aten_isa", _ATEN_CAPS)):
            v = getattr(self, field)
            if v is not None and v not in allowed:
                raise ValueError(f"Cpu {self.name!r}: {field}={v!r}; expected None or one of {allowed}")

    # --- what each library uses on this CPU ------------------------------------------------------------
    def _level(self, cap):
        best = 3 if self.amx else (2 if self.avx512_vnni else (1 if self.avx512 else 0))
        return best if cap is None else min(best, _ISAS.index(cap))

    @property
    def fbgemm_vnni(self) -> bool:
        """fbgemm's GEMM uses vpdpbusd (exact int32) rather than vpmaddubsw (int16-saturating pairs)."""
        return self._level(self.fbgemm_isa) >= 2

    @property
    def onednn_vnni(self) -> bool:
        """oneDNN's int8 kernels use vpdpbusd or AMX tiles (exact) rather than vpmaddubsw pairs."""
        return self._level(self.onednn_isa) >= 2

    @property
    def onednn_amx(self) -> bool:
        """oneDNN's dense and grouped int8 convolutions run its AMX kernels (their own output stage order)."""
        return self._level(self.onednn_isa) == 3

    @property
    def torch_picks_onednn(self) -> bool:
        """torch's x86 engine may route a convolution to oneDNN (``cpuinfo_has_x86_avx512vnni()`` on Linux)."""
        return self.avx512_vnni and self.linux

    @property
    def mlas_vnni(self) -> bool:
        """ONNX Runtime's MLAS u8×s8 kernels use a VNNI instruction (AVX512-VNNI or AVX-VNNI): no saturation."""
        return self.avx512_vnni or self.avx_vnni

    @property
    def aten_capability(self) -> str:
        """ATen's CPU capability ('default', 'avx2', 'avx512'): avx512 needs AVX-512 F/BW/VL/DQ;
        ``ATEN_CPU_CAPABILITY`` can only lower it."""
        best = "avx512" if self.avx512 else "avx2"
        if self.aten_isa is None:
            return best
        return _ATEN_CAPS[min(_ATEN_CAPS.index(best), _ATEN_CAPS.index(self.aten_isa))]

    @property
    def aten_vector_bits(self) -> int:
        """Width of the build of ATen's quantized elementwise kernels (qadd, qmul, qhardswish, the float
        sum...) that runs: torch 2.14 registers them with ``REGISTER_DISPATCH`` only, which leaves the AVX512
        slot empty, so an AVX-512 CPU runs their **AVX2 (256-bit)** build; 0 (scalar rounding only) under the
        ``default`` capability. Measured: the 512-bit model is wrong on this kind of kernel under AVX512."""
        return 0 if self.aten_capability == "default" else 256

    @property
    def aten_avx512_kernel_bits(self) -> int:
        """Width of ATen kernels torch also registers for AVX-512 (``ALSO_REGISTER_AVX512_DISPATCH``; of the
        ones minquant emulates, the channels-last average pool): the capability's own width."""
        return {"default": 0, "avx2": 256, "avx512": 512}[self.aten_capability]

    @property
    def vector_bits(self) -> int:
        """The widest SIMD register the CPU has (bits)."""
        return 512 if self.avx512 else 256

    # --- constructors -------------------------------------------------------------------------------------
    @classmethod
    def from_flags(cls, flags, name: str = "", *, linux: bool = True, environ=None) -> "Cpu":
        """A Cpu from /proc/cpuinfo-style flag names; ``environ`` (a mapping) applies the three ISA caps."""
        flags = set(flags)
        avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
        vnni = avx512 and "avx512_vnni" in flags
        amx = vnni and {"amx_int8", "amx_tile"} <= flags
        caps = _caps_from_environ(environ or {})
        if not name:
            name = "avx512-vnni-amx" if amx else "avx512-vnni" if vnni else ("avx512" if avx512 else ("avx-vnni" if "avx_vnni" in flags else "avx2"))
            if any(caps.values()):
                name += "/" + ",".join(f"{k.split('_')[0]}={v}" for k, v in caps.items() if v)
        return cls(name, avx512=avx512, avx512_vnni=vnni, avx_vnni="avx_vnni" in flags, amx=amx, linux=linux,
                   **caps)

    @classmethod
    def host(cls, *, respect_environment: bool = True) -> "Cpu":
        """This machine's CPU, read now (not at import): /proc/cpuinfo on Linux, LLVM's feature map
        elsewhere. With ``respect_environment`` the ISA caps of this process's environment variables apply
        (they are what torch loaded in this process sees)."""
        flags = _host_flags()
        return cls.from_flags(flags, linux=sys.platform.startswith("linux"),
                              environ=os.environ if respect_environment else None)

    def with_environment(self, environ) -> "Cpu":
        """This CPU as a process with ``environ``'s ISA caps sees it (e.g. the AVX2-forced subprocess of a
        test: ``Cpu.host().with_environment({"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", ...})``)."""
        caps = _caps_from_environ(environ)
        base = self.name.split("/")[0]
        tag = ",".join(f"{k.split('_')[0]}={v}" for k, v in caps.items() if v)
        return dataclasses.replace(self, name=base + ("/" + tag if tag else ""), **caps)

    @classmethod
    def named(cls, name: str) -> "Cpu":
        """A preset from :data:`CPUS` (or ``"host"``)."""
        if name == "host":
            return cls.host()
        if name not in CPUS:
            raise ValueError(f"unknown CPU {name!r}; expected 'host' or one of {sorted(CPUS)}")
        return CPUS[name]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d) -> "Cpu":
        if not isinstance(d, dict):
            raise ValueError(f"a saved CPU must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"saved CPU has unknown fields {sorted(unknown)}")
        return cls(**d)

    def describe(self) -> str:
        feats = ["AVX2"] + (["AVX-512 F/BW/VL/DQ"] if self.avx512 else []) + \
                (["AVX512-VNNI"] if self.avx512_vnni else []) + (["AVX-VNNI"] if self.avx_vnni else []) + \
                (["AMX-INT8"] if self.amx else [])
        caps = [f"{k}={getattr(self, k)}" for k in ("fbgemm_isa", "onednn_isa", "aten_isa") if getattr(self, k)]
        return f"{self.name}: " + " + ".join(feats) + (f" (capped: {', '.join(caps)})" if caps else "")


def _caps_from_environ(environ) -> dict:
    """The ISA caps that FBGEMM_ENABLE_INSTRUCTIONS / ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY set."""
    def norm(v, table):
        v = (v or "").strip().lower()
        return table.get(v) if v else None
    fb = norm(environ.get("FBGEMM_ENABLE_INSTRUCTIONS"), {"avx2": "avx2", "avx512": "avx512",
                                                          "avx512_vnni": "avx512_vnni", "avx512_e1": "avx512_vnni"})
    dn = norm(environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA"),
              {"avx2": "avx2", "avx2_vnni": "avx2", "avx2_vnni_2": "avx2", "avx512_core": "avx512",
               "avx512_core_vnni": "avx512_vnni", "avx512_core_bf16": "avx512_vnni", "avx512_core_fp16": "avx512_vnni",
               "avx512_core_amx": "avx512_amx", "avx512_core_amx_fp16": "avx512_amx", "all": None})
    at = norm(environ.get("ATEN_CPU_CAPABILITY"), {"default": "default", "avx2": "avx2", "avx512": "avx512"})
    return {"fbgemm_isa": fb, "onednn_isa": dn, "aten_isa": at}


@functools.lru_cache(maxsize=1)
def _host_flags() -> frozenset:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:   # other systems: LLVM's view of the host ('+avx512vnni' → 'avx512_vnni')
        from llvmlite import binding
        feats = binding.get_host_cpu_features()
        ren = {"avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni"}
        return frozenset(ren.get(k, k) for k, on in feats.items() if on)
    except Exception:   # noqa: BLE001 — no way to read the CPU: assume the AVX2 baseline
        return frozenset({"avx2"})


#: named CPUs, to ask what another machine computes: ``Target("x86", "avx2")``
CPUS = {
    "avx2": Cpu("avx2"),                                              # AMD Zen 2/3, Intel Haswell–Skylake client
    "avx512": Cpu("avx512", avx512=True),                             # Intel Skylake-SP (no VNNI)
    "avx512-vnni": Cpu("avx512-vnni", avx512=True, avx512_vnni=True),  # Cascade Lake+, Ice Lake, AMD Zen 4/5
    "avx-vnni": Cpu("avx-vnni", avx_vnni=True),                       # Intel Alder/Raptor Lake client
    "avx512-vnni-amx": Cpu("avx512-vnni-amx", avx512=True, avx512_vnni=True, avx_vnni=True, amx=True),
    #                                                                   Intel Sapphire Rapids and later
    # an AVX512-VNNI machine with every library capped at AVX2 by its environment variable (what
    # FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 give)
    "avx512-vnni/forced-avx2": Cpu("avx512-vnni/forced-avx2", avx512=True, avx512_vnni=True,
                                   fbgemm_isa="avx2", onednn_isa="avx2", aten_isa="avx2"),
}


# ------------------------------------------------------------------------------- LiteRT's kernel paths
@dataclass(frozen=True)
class LiteRTPath:
    """One kernel path of the LiteRT (TensorFlow Lite) interpreter, as measured on x86 (docs/quantization.md,
    step 7d). int8 activations run on minquant's uint8 kernels as codes + 128 (zero points + 128: the same
    affine map), so every field below is about roundings only.

    name        'xnnpack' (``OpResolverType.AUTO`` / ``BUILTIN``: the XNNPACK delegate), 'builtin' (the optimized
                builtin kernels, ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``), 'reference' (``BUILTIN_REF``);
    conv        output stage of CONV_2D (an :attr:`Arithmetic.multiplier` value);
    depthwise   output stage of DEPTHWISE_CONV_2D ('q31_double_up_blocks8': ties up in whole blocks of 8
                output channels, gemmlowp's double rounding on the last C_out mod 8 — measured);
    linear      output stage of FULLY_CONNECTED;
    add         ADD: 'xnnpack' (20-bit multipliers, one rounding half up), 'q31_double' (TFLite's: inputs
                shifted left 20, three MultiplyByQuantizedMultiplier, double rounding) or 'q31_mixed' (the
                inputs' two with single rounding, the output's with double rounding — measured);
    mul         MUL: 'q31_double' (MultiplyByQuantizedMultiplier of the int32 product) or 'f32' (XNNPACK);
    quantize    QUANTIZE: 'mul_rne' (rne(x·f32(1/s))), 'div_away' (round-half-away(f32(x/s))) or 'blocks8'
                ('mul_rne' in blocks of 8 values, round-half-away(f64(x)/f64(s)) on the n mod 8 tail);
    dequantize  DEQUANTIZE: 'f32' f32(s·(q − z)) or 'split' (f32(f32(q·s) − f32(z·s)) in blocks of 8, 'f32' on the
                tail; q, z the int8 codes);
    mean        MEAN over H and W: 'f32' (XNNPACK), 'q31_blocks16' (the optimized kernel: ties up in blocks of
                16 channels — only for a 4-D MEAN that keeps its dims, :meth:`mean_rule`) or 'q31_reduce'
                (``QuantizedMeanOrSum``).

    HARD_SWISH computes the same codes on every path (measured), so it has no field here."""
    name: str
    conv: str
    depthwise: str
    linear: str
    add: str
    mul: str
    quantize: str
    dequantize: str
    mean: str

    def mean_rule(self, keep_dims: bool) -> str:
        """The rule of a MEAN over H and W: the optimized kernel has its own only for ``keep_dims``; without it
        LiteRT falls back to the reference kernel's ``QuantizedMeanOrSum``."""
        return self.mean if keep_dims or self.mean != "q31_blocks16" else "q31_reduce"


#: framework name → its LiteRT kernel path
LITERT_PATHS = {
    "litert": LiteRTPath("xnnpack", "f32_ats_over_ys", "f32_ats_over_ys", "f32_ats_over_ys", "xnnpack", "f32",
                         "mul_rne", "f32", "f32"),
    "litert-builtin": LiteRTPath("builtin", "q31_double_up", "q31_double_up_blocks8", "q31_double_up", "q31_mixed",
                                 "q31_double", "blocks8", "split", "q31_blocks16"),
    "litert-ref": LiteRTPath("reference", "q31_double", "q31_double", "f64_away", "q31_double", "q31_double", "div_away",
                         "f32", "q31_reduce"),
}


# ------------------------------------------------------------------------------- the resolved arithmetic
@dataclass(frozen=True)
class Arithmetic:
    """One framework kernel's evaluation of a quantized op, resolved for one CPU (module docstring).

    name               : whose kernel — 'fbgemm' (torch fbgemm, and ATen's own quantized ops under engines
                         x86/fbgemm), 'onednn' (torch x86 → oneDNN), 'qnnpack', 'onnxruntime', 'minquant';
    saturate_pairs     : adjacent u8×s8 products (along K in im2col's (kh, kw, c) order; for a depthwise
                         kernel, consecutive taps) are summed and clamped to int16 before the int32
                         accumulation (vpmaddubsw, steps 8–9) — resolved per layer for convolutions;
    float_bias         : bias stays float and is added to the float accumulator (fbgemm); otherwise it is
                         quantized to int32 on the scale s_x·s_w and added to the integer accumulator;
    bias_rule          : the quantize rule turning a float bias into int32 ('torch' multiplies by the
                         reciprocal, 'onnxruntime' divides);
    multiplier         : 'f32_ats_over_ys' — f32(f32(s_x·s_w) / s_y); 'f32_ats_times_inv_ys' —
                         f32(f32(s_x·s_w) · f32(1/s_y)) (qnnpack); 'f64' (float64, minquant); 'onednn'
                         (oneDNN's scale-then-bias-then-1/s_y stage, docs/quantization.md step 7c); 'onednn_amx'
                         (the same with the two scales multiplied first: oneDNN's AMX kernels); LiteRT's
                         'q31_double' (QuantizeMultiplier + gemmlowp's double rounding), 'q31_double_up'
                         (both roundings ties up), 'q31_double_up_blocks8' (ties up in whole blocks of 8
                         output channels, 'q31_double' on the rest) and 'f64_away' (round-half-away(acc·f64 M)),
                         step 7d;
    quantize_rule      : how this framework quantizes float activations ('torch' or 'onnxruntime');
    vector_bits        : width of the build of ATen's quantized elementwise kernels that runs (256; 0 under
                         the ``default`` capability; :attr:`Cpu.aten_vector_bits`): positions inside whole
                         SIMD blocks round one way, the tail another;
    vector_bits_avx512_kernels : the width of ATen kernels also built for AVX-512 (channels-last average
                         pool; :attr:`Cpu.aten_avx512_kernel_bits`);
    cpu                : the :class:`Cpu` this was resolved for (kernels that need more read it here);
    litert             : the :class:`LiteRTPath` of a LiteRT target (None otherwise): its ops' roundings.
    """
    name: str
    saturate_pairs: bool
    float_bias: bool
    bias_rule: str
    multiplier: str
    quantize_rule: str
    vector_bits: int = 256
    vector_bits_avx512_kernels: int = 256
    cpu: Cpu = CPUS["avx2"]
    litert: LiteRTPath | None = None


def _two(v):
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(x) for x in v)
    return t if len(t) == 2 else (t[0], t[0])


def fbgemm_conv_path(cpu: Cpu, groups, c_in, c_out, kernel, stride, padding, dilation) -> str:
    """Which of its kernels fbgemm (``fbgemmConv``'s ``ConvFastPath``) runs a 2-D convolution on — read from
    FBGEMM's source and verified live (native and capped) and on the golden recordings:

    ``"depthwise"``  G == C_in, C_out ∈ {G, 2G}, G a multiple of 8, a square 3×3, 5×5 or 7×7 kernel, stride
                     1 or 2, dilation 1, "same" padding (k − 1)/2: the JIT depthwise kernel (AVX2 only, on
                     every CPU) — consecutive taps in (kh, kw) order paired with int16 saturation;
    ``"groupwise"``  2, 4, 8 or 16 channels per group in and out, 3×3, padding 1, dilation 1, stride 1 or 2
                     (both), and at least as many groups as one vector holds (64 bytes with AVX-512, 32
                     without, over ``C_out/G · max(C_in/G, 4)``): vpdpbusd on an AVX512-VNNI CPU, else
                     vpmaddubsw pairs — dispatched on the real CPU, ignoring FBGEMM_ENABLE_INSTRUCTIONS;
    ``"pointwise"`` / ``"im2col"``  the packed GEMM: exact with VNNI, pairs along K otherwise; follows
                     FBGEMM_ENABLE_INSTRUCTIONS.
    Weight granularity and zero points change neither the path nor the accumulation."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _two(kernel), _two(stride), _two(padding), _two(dilation)
    g = int(groups)
    if (g == c_in and c_out in (g, 2 * g) and g % 8 == 0 and sh in (1, 2) and sw in (1, 2) and kh == kw
            and kh in (3, 5, 7) and (dh, dw) == (1, 1) and ph == (kh - 1) // 2 and pw == (kw - 1) // 2):
        return "depthwise"
    cpg, kpg = c_in // g, c_out // g
    together = max((64 if cpu.avx512 else 32) // kpg // max(cpg, 4), 1)
    if (cpg == kpg and cpg in (2, 4, 8, 16) and g >= together and (kh, kw) == (3, 3) and (ph, pw) == (1, 1)
            and (dh, dw) == (1, 1) and (sh, sw) in ((1, 1), (2, 2))):
        return "groupwise"
    if (kh, kw) == (1, 1) and (sh, sw) == (1, 1) and (ph, pw) == (0, 0) and (dh, dw) == (1, 1):
        return "pointwise"
    return "im2col"


# ------------------------------------------------------------------------------------------- the target
@dataclass(frozen=True, init=False)
class Target:
    """framework × CPU (module docstring). ``Target("x86")`` is torch's x86 engine on this host;
    ``Target("x86", "avx2")`` on an AVX2 machine; ``cpu`` may be a :class:`Cpu`, a preset name or ``"host"``."""
    framework: str
    cpu: Cpu

    def __init__(self, framework: str, cpu="host"):
        if isinstance(framework, Target):
            framework = framework.framework
        if framework not in FRAMEWORKS:
            raise ValueError(f"unknown target framework {framework!r}; expected one of {list(FRAMEWORKS)}")
        if isinstance(cpu, str):
            cpu = Cpu.named(cpu)
        elif cpu is None:
            cpu = Cpu.host()
        elif not isinstance(cpu, Cpu):
            raise TypeError(f"cpu must be a Cpu, a preset name or 'host', got {type(cpu).__name__}")
        object.__setattr__(self, "framework", framework)
        object.__setattr__(self, "cpu", cpu)

    def __str__(self):
        return f"{self.framework}@{self.cpu.name}"

    # --- resolution -----------------------------------------------------------------------------------
    @property
    def quantize_rule(self) -> str:
        """How the framework quantizes a float: 'torch' (× f32(1/s)) or 'onnxruntime' (÷ s)."""
        if self.framework in LITERT_PATHS:   # the nearest of the two rules (the exact one: LiteRTPath.quantize)
            return "onnxruntime" if LITERT_PATHS[self.framework].quantize == "div_away" else "torch"
        return "torch" if self.framework in ("fbgemm", "x86", "qnnpack", "x86-inductor") else "onnxruntime"

    def _fbgemm(self) -> Arithmetic:
        sat = not self.cpu.fbgemm_vnni
        c = self.cpu
        return Arithmetic("fbgemm", sat, True, "torch", "f32_ats_over_ys", "torch", c.aten_vector_bits,
                          c.aten_avx512_kernel_bits, c)

    def ops(self) -> Arithmetic:
        """The arithmetic of the non-GEMM ops (quantize, add, mul, activations, pooling) and the default for
        linear layers."""
        c = self.cpu
        bits = (c.aten_vector_bits, c.aten_avx512_kernel_bits)
        if self.framework in ("fbgemm", "x86"):
            return self._fbgemm()
        if self.framework == "x86-inductor":   # linear layers: oneDNN's matmul (see onednn_matmul_combines)
            return Arithmetic("inductor", False, True, "torch", "onednn_direct", "torch", *bits, c)
        if self.framework == "qnnpack":
            return Arithmetic("qnnpack", False, False, "torch", "f32_ats_times_inv_ys", "torch", *bits, c)
        if self.framework == "onnxruntime":
            sat = not c.mlas_vnni
            return Arithmetic("onnxruntime", sat, False, "onnxruntime", "f32_ats_over_ys", "onnxruntime",
                              *bits, c)
        if self.framework in LITERT_PATHS:   # exact int32 accumulation, int32 bias on s_x·s_w
            lp = LITERT_PATHS[self.framework]
            return Arithmetic("litert", False, False, "onnxruntime", lp.conv, self.quantize_rule, *bits, c, lp)
        return Arithmetic("minquant", False, False, "onnxruntime", "f64", "onnxruntime", *bits, c)

    def linear(self) -> Arithmetic:
        """A quantized linear layer: torch's x86 engine runs every quantized linear on fbgemm; LiteRT's
        FULLY_CONNECTED has its own output stage on some paths."""
        ar = self.ops()
        return dataclasses.replace(ar, multiplier=ar.litert.linear) if ar.litert is not None else ar

    def conv(self, *, groups: int = 1, c_in: int | None = None, c_out: int | None = None, kernel=(1, 1),
             stride=(1, 1), padding=(0, 0), dilation=(1, 1), symmetric_weights: bool = True,
             transposed: bool = False) -> Arithmetic:
        """A quantized 2-D convolution (``c_in`` / ``c_out`` channels, default ``groups`` each). Under
        ``x86`` torch sends it to oneDNN when ``should_use_onednn_quant`` holds (AVX512-VNNI in cpuinfo, Linux,
        groups ≤ 100, every weight zero point 0, no output padding), else to fbgemm; fbgemm then picks one of
        its kernels (:func:`fbgemm_conv_path`), and that kernel decides whether u8×s8 pairs saturate."""
        c_in = groups if c_in is None else int(c_in)
        c_out = groups if c_out is None else int(c_out)
        if self.framework == "x86-inductor":
            return self._inductor_conv(groups, c_in, c_out, symmetric_weights, transposed)
        if self.framework == "x86" and self.cpu.torch_picks_onednn and groups <= 100 and symmetric_weights \
                and not transposed:
            if not self.cpu.onednn_vnni:
                raise ValueError(
                    f"target {self}: torch sends this convolution to oneDNN, and this CPU's oneDNN is capped below "
                    "AVX512-VNNI (ONEDNN_MAX_CPU_ISA); oneDNN's AVX2 int8 kernels pair u8×s8 products per tap "
                    "with int16 saturation in a way minquant does not reproduce yet (dense convolutions with an "
                    "odd channel count and grouped convolutions differ) — no real CPU takes this path")
            c = self.cpu
            depthwise = groups > 1 and c_in == c_out == groups   # one channel per group in and out (measured:
            #                                   a channel multiplier of 2 already runs on the AMX kernels)
            mult = "onednn_amx" if c.onednn_amx and not depthwise else "onednn"
            return Arithmetic("onednn", False, True, "torch", mult, "torch", c.aten_vector_bits,
                              c.aten_avx512_kernel_bits, c)
        ar = self.ops()
        if ar.litert is not None and groups > 1 and c_in == groups:   # DEPTHWISE_CONV_2D
            return dataclasses.replace(ar, multiplier=ar.litert.depthwise)
        if ar.name == "onnxruntime" and groups > 1 and c_in == c_out == groups:
            return dataclasses.replace(ar, saturate_pairs=False)   # MLAS's depthwise kernel: exact int32
        if ar.name != "fbgemm":
            return ar
        path = fbgemm_conv_path(self.cpu, groups, c_in, c_out, kernel, stride, padding, dilation)
        if path == "depthwise":
            sat = True                          # GenI8Depthwise: AVX2 vpmaddubsw on every CPU
        elif path == "groupwise":
            sat = not self.cpu.avx512_vnni      # reads the real CPU (cpuinfo), not FBGEMM_ENABLE_INSTRUCTIONS
        else:
            sat = not self.cpu.fbgemm_vnni      # the packed GEMM follows FBGEMM_ENABLE_INSTRUCTIONS
        return dataclasses.replace(ar, saturate_pairs=sat)

    def _inductor_conv(self, groups, c_in, c_out, symmetric_weights, transposed) -> Arithmetic:
        """``x86-inductor``: Inductor lowers every quantized conv of a pt2e graph to ``onednn.qconv_pointwise``
        (no fbgemm, no groups limit) with the scales themselves as oneDNN's scales, so the constants are
        a_x = f32(s_x), m_y = f32(1/f32(s_y)) — not the reciprocals-of-reciprocals of eager ``x86``
        (:func:`minquant.kernels.requantize.output_stage`). AMX machines: dense and grouped convolutions
        multiply the scales first ('onednn_direct_amx'); one-channel-per-group convolutions and AVX512-VNNI
        CPUs do not (the same kernel choice as eager ``x86``)."""
        c = self.cpu
        if not symmetric_weights or transposed:
            raise ValueError(f"target {self}: oneDNN takes symmetric weights (zero points 0) and no transposed "
                             "convolution; X86InductorQuantizer makes neither")
        if not c.onednn_vnni:
            raise ValueError(f"target {self}: oneDNN below AVX512-VNNI pairs u8×s8 products with int16 saturation "
                             "in a way minquant does not reproduce yet")
        depthwise = groups > 1 and c_in == c_out == groups
        mult = "onednn_direct_amx" if c.onednn_amx and not depthwise else "onednn_direct"
        return Arithmetic("onednn", False, True, "torch", mult, "torch", c.aten_vector_bits,
                          c.aten_avx512_kernel_bits, c)

    # --- saved form ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"framework": self.framework, "cpu": self.cpu.to_dict()}

    @classmethod
    def from_dict(cls, d) -> "Target":
        if not isinstance(d, dict) or set(d) != {"framework", "cpu"}:
            raise ValueError(f"a saved target must be {{'framework': ..., 'cpu': {{...}}}}, got {d!r}")
        return cls(d["framework"], Cpu.from_dict(d["cpu"]))

    def describe(self) -> str:
        return f"{self.framework} on {self.cpu.describe()}"


def as_target(spec, cpu="host") -> Target:
    """A :class:`Target` from a Target, a framework name, or ``"framework@cpu"`` (e.g. ``"x86@avx2"``)."""
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, Arithmetic):
        raise TypeError("an already resolved Arithmetic is not a Target; pass the Target it came from")
    if not isinstance(spec, str):
        raise TypeError(f"target must be a framework name or a Target, got {type(spec).__name__}")
    if "@" in spec:
        spec, cpu = spec.split("@", 1)
    return Target(spec, cpu)


def onednn_matmul_combines(cpu: Cpu, m: int, n: int, k: int) -> bool:
    """Does oneDNN's int8 matmul (``onednn.qlinear_pointwise``, Inductor's quantized linear; m rows, k input
    and n output features) take its AMX kernel, which multiplies the two scales first — ``f32(acc)·f32(a_x·a_w)
    + b`` — rather than the VNNI kernel's ``f32(f32(acc)·a_x)·a_w + b``? On an AMX machine, yes unless the
    problem is "small" for oneDNN's brgemm matmul (``init_brgemm_matmul_conf``, int8, 2-D): ``m = 1 and
    k = 256``, or ``m ≤ 32 and m·n ≤ 256``, or ``k ≤ 16`` — then its VNNI kernel runs. Read from oneDNN's
    source and matching every shape measured with torch 2.14.1 on an Intel Xeon with AMX-INT8 (float outputs,
    where the two orders differ in ~1/3 of the values), including the m = 1, k = 256 exception."""
    if not cpu.onednn_amx:
        return False
    small = (m == 1 and k == 256) or (m <= 32 and m * n <= 256) or k <= 16
    return not small


def resolve_ops(target) -> Arithmetic:
    """The :class:`Arithmetic` of non-GEMM ops for ``target`` (an Arithmetic passes through)."""
    return target if isinstance(target, Arithmetic) else as_target(target).ops()


def resolve_linear(target) -> Arithmetic:
    """The :class:`Arithmetic` of a quantized linear layer for ``target`` (an Arithmetic passes through)."""
    return target if isinstance(target, Arithmetic) else as_target(target).linear()


def resolve_conv(target, **layer) -> Arithmetic:
    """The :class:`Arithmetic` of one convolution (``layer``: the keywords of :meth:`Target.conv`)."""
    return target if isinstance(target, Arithmetic) else as_target(target).conv(**layer)


def quantize_rule_of(target) -> str:
    """'torch' or 'onnxruntime' for a rule name, a framework name, a Target or an Arithmetic."""
    if isinstance(target, Arithmetic):
        return target.quantize_rule
    if isinstance(target, Target):
        return target.quantize_rule
    if isinstance(target, str):
        if target in QUANTIZE_RULES:
            return target
        if target.split("@", 1)[0] in FRAMEWORKS:
            return Target(target.split("@", 1)[0], CPUS["avx2"]).quantize_rule   # the rule does not depend on the CPU
    raise ValueError(f"unknown quantize rule or target {target!r}; expected a rule {list(QUANTIZE_RULES)}, "
                     f"a framework {list(FRAMEWORKS)} or a Target")
