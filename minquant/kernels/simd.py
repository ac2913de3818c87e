"""The CPU's int8 instructions, callable from Numba (docs/quantization.md, steps 4 and 8).

Numba has no vector type of its own, so this module defines two — ``i32x16`` (a 512-bit zmm register as
16 int32 lanes) and ``i32x8`` (a 256-bit ymm register as 8 int32 lanes) — and a handful of
``numba.extending.intrinsic`` functions that emit one LLVM instruction or intrinsic each (``_emit_*`` for
the arithmetic). Every wrapper states what it computes per 32-bit lane and the x86 instruction it
becomes. Byte vectors (64 × u8 or s8) and int16 vectors (32 × i16) travel in the same registers,
reinterpreted (a free ``bitcast``).

The instructions (per 32-bit lane i, bytes u[4i..4i+3] unsigned, s[4i..4i+3] signed):

    vpdpbusd   acc[i] += u0·s0 + u1·s1 + u2·s2 + u3·s3                 exact int32     (AVX512-VNNI)
    vpmaddubsw h[2i] = sat16(u0·s0 + u1·s1), h[2i+1] = sat16(u2·s2 + u3·s3)   int16 pair saturation
                                                                          (AVX-512BW / AVX2)
    vpmaddwd   d[i] = h[2i]·1 + h[2i+1]·1                              exact int32     (AVX-512BW / AVX2)
    vpdpwssd   acc[i] += h[2i]·1 + h[2i+1]·1                           exact int32     (AVX512-VNNI)

``vpmaddubsw`` then ``vpmaddwd`` with ones is fbgemm's accumulation on CPUs without VNNI: the hardware does
the int16 pair saturation of step 8 itself.

Pitfalls (why the kernels are organised as they are):

* compiling a function that uses an instruction the CPU lacks aborts the process (LLVM "Cannot select",
  SIGABRT, not catchable). :func:`host_isa` reads the CPU's features first, and :func:`mac` — the one
  multiply-add the micro-kernels call — reads its *kind* from the Numba type of a :class:`MacKind` argument:
  each kind compiles to its own machine code, and a kind this CPU cannot run compiles to nothing.
* kernels are cached (``cache=True``) per kind, since the kind is part of the signature's types. (Passing
  jitted step functions as arguments cannot be cached by Numba; ``numba.literally`` can, but re-runs the
  compiler front end on every call from Python.)
* under ``NUMBA_DISABLE_JIT=1`` an intrinsic cannot run: :func:`host_isa` then says :data:`ISA_NONE` and the
  callers take their plain NumPy/Numba paths.
* no bounds checks: a load reads 64 (or 32) bytes from ``array data + byte offset`` whatever the array's
  shape — callers pad their operands so that every read stays inside.
"""
from __future__ import annotations

import contextlib
import functools

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import NativeValue, intrinsic, models, register_model, typeof_impl, unbox

__all__ = ["ISA_NONE", "ISA_AVX2", "ISA_AVX512BW", "ISA_AVX512VNNI", "ISA_NAMES", "host_isa", "isa_cap",
           "isa_available", "i32x16", "i32x8", "MAC_VNNI", "MAC_PAIRS_VNNI", "MAC_PAIRS_512", "MAC_PAIRS_256",
           "MAC_SWAP", "MacKind", "mac", "is_ymm"]

# instruction sets, best last (an int so it can be passed to / compared in compiled code)
ISA_NONE = 0          # no SIMD kernels (no JIT, or a CPU without AVX2): the float32 / plain paths
ISA_AVX2 = 1          # vpmaddubsw + vpmaddwd on ymm (256-bit)
ISA_AVX512BW = 2      # vpmaddubsw + vpmaddwd on zmm (512-bit)
ISA_AVX512VNNI = 3    # vpdpbusd on zmm
ISA_NAMES = {ISA_NONE: "none", ISA_AVX2: "AVX2", ISA_AVX512BW: "AVX-512BW", ISA_AVX512VNNI: "AVX512-VNNI"}


_cap = [ISA_AVX512VNNI]   # the ceiling set by isa_cap (tests and benchmarks run the lower sets this way)


def host_isa() -> int:
    """The instruction set the int8 kernels use: the best one this process can compile and run, lowered by
    an enclosing :func:`isa_cap`."""
    return min(_detected_isa(), _cap[0])


@contextlib.contextmanager
def isa_cap(isa: int):
    """Within the block, use at most ``isa`` (e.g. ``ISA_AVX2`` on an AVX-512 host, to run and test the
    kernels an AVX2 machine gets; ``ISA_NONE`` for the float32 path)."""
    old = _cap[0]
    _cap[0] = isa
    try:
        yield
    finally:
        _cap[0] = old


@functools.lru_cache(maxsize=1)
def _detected_isa() -> int:
    """The best instruction set this process can compile and run (LLVM's view of the host CPU)."""
    if numba.config.DISABLE_JIT:
        return ISA_NONE
    try:
        from llvmlite import binding
        f = binding.get_host_cpu_features()
    except Exception:   # noqa: BLE001 — no way to ask: no SIMD kernels
        return ISA_NONE
    if f.get("avx512f") and f.get("avx512bw") and f.get("avx512vl"):
        return ISA_AVX512VNNI if f.get("avx512vnni") else ISA_AVX512BW
    return ISA_AVX2 if f.get("avx2") else ISA_NONE


def isa_available(isa: int) -> bool:
    """Whether kernels for ``isa`` can run here (every lower instruction set is available too)."""
    return isa <= _detected_isa()


# ------------------------------------------------------------------------------------------ vector types
class _Int32Vector(types.Type):
    def __init__(self, lanes):
        self.lanes = lanes
        super().__init__(name=f"i32x{lanes}")


i32x16 = _Int32Vector(16)   #: a zmm register: 16 × int32 (or 64 bytes, or 32 × int16)
i32x8 = _Int32Vector(8)     #: a ymm register: 8 × int32 (or 32 bytes, or 16 × int16)


@register_model(_Int32Vector)
class _Int32VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.IntType(32), fe_type.lanes))


def _vty(lanes, bits=32):
    return ir.VectorType(ir.IntType(bits), lanes * 32 // bits)


def _byte_ptr(context, builder, arr_ty, arr, offset):
    """i8* to ``arr``'s data + ``offset`` bytes."""
    data = context.make_array(arr_ty)(context, builder, arr).data
    p = builder.bitcast(data, ir.IntType(8).as_pointer())
    return builder.gep(p, [offset])


def _call(builder, name, ret, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


def _make_vector_ops(vt, lanes):
    """The lane-count-generic intrinsics (zero, load, broadcast, store) for vector type ``vt``."""
    vec = _vty(lanes)

    @intrinsic
    def zero(typingctx):
        def codegen(context, builder, sig, args):
            return ir.Constant(vec, None)
        return vt(), codegen

    @intrinsic
    def load(typingctx, arr, offset):
        if not isinstance(arr, types.Array) or not isinstance(offset, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            p = _byte_ptr(context, builder, sig.args[0], args[0], args[1])
            v = builder.load(builder.bitcast(p, vec.as_pointer()))
            v.align = 1
            return v
        return vt(arr, offset), codegen

    @intrinsic
    def broadcast(typingctx, arr, offset):
        if not isinstance(arr, types.Array) or not isinstance(offset, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            p = _byte_ptr(context, builder, sig.args[0], args[0], args[1])
            x = builder.load(builder.bitcast(p, ir.IntType(32).as_pointer()))
            x.align = 1
            v = builder.insert_element(ir.Constant(vec, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(v, ir.Constant(vec, ir.Undefined), ir.Constant(vec, None))
        return vt(arr, offset), codegen

    @intrinsic
    def store(typingctx, arr, offset, v):
        if not isinstance(arr, types.Array) or v != vt:
            return None

        def codegen(context, builder, sig, args):
            p = _byte_ptr(context, builder, sig.args[0], args[0], args[1])
            st = builder.store(args[2], builder.bitcast(p, vec.as_pointer()))
            st.align = 1
            return context.get_dummy_value()
        return types.none(arr, offset, vt), codegen

    return zero, load, broadcast, store


#: zero16() = 0 in every lane (vpxord); load16(a, o) = the 64 bytes at a's data + o (vmovdqu64);
#: bcast16(a, o) = the 4 bytes at a's data + o in every lane (vpbroadcastd); store16(a, o, v) writes v's
#: 64 bytes at a's data + o (vmovdqu64)
zero16, load16, bcast16, store16 = _make_vector_ops(i32x16, 16)
#: the same on ymm registers, 32 bytes (vpxor, vmovdqu, vpbroadcastd, vmovdqu)
zero8, load8, bcast8, store8 = _make_vector_ops(i32x8, 8)


@intrinsic
def sub16(typingctx, a, b):
    """a − b in each of 16 int32 lanes, wrapping (vpsubd)."""
    if a != i32x16 or b != i32x16:
        return None

    def codegen(context, builder, sig, args):
        return builder.sub(args[0], args[1])
    return i32x16(i32x16, i32x16), codegen


# ------------------------------------------------------------------------------ the multiply-add kinds
MAC_VNNI = 0         # vpdpbusd                              acc + Σ_4 u·s                   exact
MAC_PAIRS_VNNI = 1   # vpmaddubsw + vpdpwssd (ones)          acc + sat16(u·s+u·s) ×2         fbgemm's pairs
MAC_PAIRS_512 = 2    # vpmaddubsw + vpmaddwd (ones) + vpaddd the same, AVX-512BW
MAC_PAIRS_256 = 3    # the same on ymm, AVX2
MAC_SWAP = 4         # added to a kind: the broadcast operand holds the *signed* bytes (weights)
_MAC_NEEDS = {MAC_VNNI: ISA_AVX512VNNI, MAC_PAIRS_VNNI: ISA_AVX512VNNI, MAC_PAIRS_512: ISA_AVX512BW,
              MAC_PAIRS_256: ISA_AVX2}


def _emit_dpbusd(builder, acc, u, s):
    """acc[i] + Σ_{j<4} u[4i+j]·s[4i+j] (u unsigned, s signed bytes), exact — ``vpdpbusd zmm``
    (``llvm.x86.avx512.vpdpbusd.512``, <16 x i32> operands)."""
    return _call(builder, "llvm.x86.avx512.vpdpbusd.512", _vty(16), [acc, u, s])


def _emit_maddubs(builder, u, s, lanes):
    """int16 h[2i] = sat16(u0·s0 + u1·s1), h[2i+1] = sat16(u2·s2 + u3·s3) over lane i's bytes — ``vpmaddubsw``
    (``llvm.x86.avx512.pmaddubs.w.512`` on zmm, ``llvm.x86.avx2.pmadd.ub.sw`` on ymm)."""
    name = "llvm.x86.avx512.pmaddubs.w.512" if lanes == 16 else "llvm.x86.avx2.pmadd.ub.sw"
    b8 = _vty(lanes, 8)
    return _call(builder, name, _vty(lanes, 16), [builder.bitcast(u, b8), builder.bitcast(s, b8)])


def _emit_maddwd_ones(builder, h, lanes):
    """d[i] = h[2i] + h[2i+1], exact int32 — ``vpmaddwd`` with int16 ones (``llvm.x86.avx512.pmaddw.d.512``,
    ``llvm.x86.avx2.pmadd.wd``)."""
    name = "llvm.x86.avx512.pmaddw.d.512" if lanes == 16 else "llvm.x86.avx2.pmadd.wd"
    ones = ir.Constant(_vty(lanes, 16), [1] * (2 * lanes))
    return _call(builder, name, _vty(lanes), [h, ones])


def _emit_dpwssd_ones(builder, acc, h):
    """acc[i] + h[2i] + h[2i+1], exact int32 — ``vpdpwssd zmm`` with int16 ones (``llvm.x86.avx512.vpdpwssd.512``):
    vpmaddwd and vpaddd in one instruction."""
    ones = ir.Constant(_vty(16), [0x00010001] * 16)
    return _call(builder, "llvm.x86.avx512.vpdpwssd.512", _vty(16), [acc, builder.bitcast(h, _vty(16)), ones])


class MacKind:
    """A multiply-add kind as a value whose Numba *type* carries it (:class:`MacKindType`): passed to a
    jitted function, it makes one specialisation — one cached machine code — per kind, and :func:`mac`
    reads the kind at compile time. ``MacKind(MAC_VNNI)``, ``MacKind(MAC_PAIRS_512 + MAC_SWAP)``, ..."""

    def __init__(self, code: int):
        if code % MAC_SWAP not in _MAC_NEEDS or not 0 <= code < 2 * MAC_SWAP:
            raise ValueError(f"unknown multiply-add kind {code}")
        self.code = int(code)
        # the Numba type, read by the dispatcher's C code itself (the ``_numba_type_`` attribute): typing this
        # argument at every call then costs an attribute lookup, not a call back into Python's typeof
        # (measured: ~1.2 µs an argument, ~30 % of a small layer's call)
        self._numba_type_ = MacKindType(self.code)

    def __repr__(self):
        return f"MacKind({self.code})"


class MacKindType(types.Type):
    def __init__(self, code):
        self.code = code
        super().__init__(name=f"MacKind({code})")


@typeof_impl.register(MacKind)
def _typeof_mac_kind(val, c):
    return val._numba_type_


register_model(MacKindType)(models.OpaqueModel)


@unbox(MacKindType)
def _unbox_mac_kind(typ, obj, c):
    return NativeValue(c.context.get_constant_null(types.voidptr))


@intrinsic
def is_ymm(typingctx, kind):
    """True (a compile-time constant) when ``kind`` works on 256-bit ymm registers (AVX2)."""
    if not isinstance(kind, MacKindType):
        return None

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(1), int(kind.code % MAC_SWAP == MAC_PAIRS_256))
    return types.boolean(kind), codegen


@intrinsic
def mac(typingctx, kind, acc, b, v):
    """acc + the products of 4 bytes of ``b`` and 4 bytes of ``v`` in every lane, as ``kind`` says (a
    :class:`MacKind`, read at compile time: ``MAC_*``, plus ``MAC_SWAP`` when ``b`` holds the signed bytes).
    ``acc``'s type (i32x16 / i32x8) picks the register width. A kind for the other width, or one this CPU
    cannot run, compiles to ``acc`` unchanged — such calls sit in branches the kind rules out, and LLVM
    must never see an instruction the CPU lacks (module docstring)."""
    if not isinstance(kind, MacKindType) or acc not in (i32x16, i32x8) or (b, v) != (acc, acc):
        return None
    k = kind.code
    base, swap = k % MAC_SWAP, k >= MAC_SWAP
    lanes = acc.lanes

    def codegen(context, builder, sig, args):
        acc_, b_, v_ = args[1], args[2], args[3]
        u, s = (v_, b_) if swap else (b_, v_)
        if _MAC_NEEDS[base] > _detected_isa() or (lanes == 8) != (base == MAC_PAIRS_256):
            return acc_
        if base == MAC_VNNI:
            return _emit_dpbusd(builder, acc_, u, s)
        h = _emit_maddubs(builder, u, s, lanes)
        if base == MAC_PAIRS_VNNI:
            return _emit_dpwssd_ones(builder, acc_, h)
        return builder.add(acc_, _emit_maddwd_ones(builder, h, lanes))
    return acc(kind, acc, b, v), codegen
