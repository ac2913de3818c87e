"""A layer's precision as data: how its weights and its activations are stored.

The lesson's ladder — float32 (4 bytes) → float16 (2) → int8 (1) → int4 (½) — is a choice made per layer
of two things: the numbers a layer's **weights** are stored in, and the numbers its **activations** (its
input and output) are stored in. :class:`Precision` holds them (plus the int4 group layout); the rungs:

============  ==========  ===========  ======================================================================
name          weights     activations  runs as
============  ==========  ===========  ======================================================================
``FP32``      float32     float32      the float model
``FP16``      float16     float16      float32 arithmetic rounded to float16 after every op (torch ``.half()``
                                       on the CPU, measured: :mod:`minquant.kernels.fp16`)
``FP16_W``    float16     float32      float16 weights, float32 arithmetic throughout — what ONNX Runtime's
                                       CPU provider computes for a float16 ONNX model on x86 (it has no
                                       float16 Conv/Gemm there and inserts Casts around the float32 chain)
``INT8``      int8        uint8        ``quantize_static``: integer kernels of the target
``w4a16()``   int4/group  float16      weights dequantized per group, float32 arithmetic, float16 storage —
                                       ONNX Runtime's ``MatMulNBits`` for linear layers
``w4a32()``   int4/group  float32      ``MatMulNBits`` on float32 activations, exactly
``w4a8()``    int4/group  uint8        integer group sums, float combination (:mod:`minquant.kernels.w4a8`)
============  ==========  ===========  ======================================================================

int4 weights: ``group_size`` consecutive weights of a row share one scale (stored float16: ``W4A16``'s 4 +
16/group_size bits per weight) and, unless ``symmetric``, one zero point (uint4 codes [0, 15], stored one per
byte); symmetric groups use int4 codes [−8, 7] with ``s = max|w| / 7.5`` (torch's symmetric rule,
:func:`minquant.affine.choose_qparams`). A convolution's row is (kh, kw, c) (:mod:`minquant.kernels.int4_conv`);
a layer whose row length K is not a multiple of ``group_size`` (a 3×3 depthwise kernel has K = 9) takes one
group per output channel instead, and the converted model says so per layer.

Precisions are ordered by the bits they spend per weight (:attr:`Precision.weight_bits`), which is how the
mixed-precision chooser (:mod:`minquant.quantized.mixed`) walks down the ladder.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Numbers", "Precision", "FP32", "FP16", "FP16_W", "INT8", "w4a16", "w4a32", "w4a8", "LADDER"]


class Numbers(enum.Enum):
    """How a tensor is stored. The value is its bits per element."""
    FP32 = 32
    FP16 = 16
    INT8 = 8
    INT4 = 4

    @property
    def is_float(self) -> bool:
        return self in (Numbers.FP32, Numbers.FP16)


_ACTIVATIONS = {Numbers.FP32: (Numbers.FP32,), Numbers.FP16: (Numbers.FP16, Numbers.FP32),
                Numbers.INT8: (Numbers.INT8,), Numbers.INT4: (Numbers.FP16, Numbers.FP32, Numbers.INT8)}


@dataclass(frozen=True)
class Precision:
    """One layer's storage (module docstring). ``group_size`` and ``symmetric`` are for int4 weights only."""
    weights: Numbers
    activations: Numbers
    group_size: int | None = None
    symmetric: bool = True

    def __post_init__(self):
        for f in ("weights", "activations"):
            if not isinstance(getattr(self, f), Numbers):
                raise TypeError(f"Precision.{f} must be a Numbers member (Numbers.FP32, FP16, INT8, INT4), "
                                f"got {getattr(self, f)!r}")
        if self.activations not in _ACTIVATIONS[self.weights]:
            allowed = ", ".join(a.name for a in _ACTIVATIONS[self.weights])
            raise ValueError(f"{self.weights.name} weights run with {allowed} activations, not "
                             f"{self.activations.name}")
        if not isinstance(self.symmetric, bool):
            raise TypeError(f"symmetric must be True or False, got {self.symmetric!r}")
        if self.weights is Numbers.INT4:
            gs = self.group_size
            if isinstance(gs, bool) or not isinstance(gs, int):
                raise TypeError(f"int4 weights need an integer group_size (weights per scale), got {gs!r}")
            if gs < 2 or gs % 2:
                raise ValueError(f"group_size must be an even number ≥ 2, got {gs}")
        elif self.group_size is not None or not self.symmetric:
            raise ValueError(f"group_size / symmetric=False apply to int4 weights only, not {self.weights.name}")

    @property
    def weight_bits(self) -> int:
        return self.weights.value

    @property
    def name(self) -> str:
        if self.weights is Numbers.INT4:
            a = {Numbers.FP16: "16", Numbers.FP32: "32", Numbers.INT8: "8"}[self.activations]
            return f"W4A{a} g{self.group_size}" + ("" if self.symmetric else " zp")
        if self.weights is Numbers.FP16 and self.activations is Numbers.FP32:
            return "fp16 weights"
        return self.weights.name.lower()

    def __str__(self) -> str:
        return self.name


FP32 = Precision(Numbers.FP32, Numbers.FP32)
FP16 = Precision(Numbers.FP16, Numbers.FP16)
FP16_W = Precision(Numbers.FP16, Numbers.FP32)
INT8 = Precision(Numbers.INT8, Numbers.INT8)


def w4a16(group_size: int = 32, *, symmetric: bool = True) -> Precision:
    """int4 weights per group, float16 activations."""
    return Precision(Numbers.INT4, Numbers.FP16, group_size, symmetric)


def w4a32(group_size: int = 32, *, symmetric: bool = True) -> Precision:
    """int4 weights per group, float32 activations (MatMulNBits on float32 input)."""
    return Precision(Numbers.INT4, Numbers.FP32, group_size, symmetric)


def w4a8(group_size: int = 32, *, symmetric: bool = True) -> Precision:
    """int4 weights per group, uint8 activations."""
    return Precision(Numbers.INT4, Numbers.INT8, group_size, symmetric)


#: the ladder of the lesson, high to low
LADDER = (FP32, FP16, INT8, w4a16(), w4a8())
