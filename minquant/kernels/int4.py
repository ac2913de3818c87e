"""Weight-only int4 linear layer: 4-bit weights with one scale per group, float32 activations
(docs/quantization.md, step 10; the affine map of steps 1–2 per group).

Weights are stored as 4-bit codes, two per byte (:func:`minquant.affine.pack_int4`: element 2i in the low
nibble), for an (out, in) matrix in row-major order; every ``group_size`` consecutive inputs of an output
row share a scale s[n, g] and zero point z[n, g]. The layer *dequantizes, then multiplies in float32*:

    W[n, k] = f32(f32(q[n, k] − z[n, g]) · s[n, g])      g = k // group_size      (step 1, float32)
    y[m, n] = Σ_k x[m, k] · W[n, k]  (+ b[n])

Memory shrinks 8× against float32; arithmetic stays float, so the only question is the order of the float
sum, and that is all ``target`` chooses. ``target`` is anything :func:`minquant.target.resolve_linear`
accepts (``"minquant"``, ``"onnxruntime"``, ``"onnxruntime@avx2"``, a :class:`~minquant.target.Target`, or
an already resolved :class:`~minquant.target.Arithmetic`); its framework must be ``minquant`` or
``onnxruntime`` (torch has no int4 weight-only linear to reproduce). The kernel never reads the CPU: the
resolved arithmetic's ``cpu`` decides.

``minquant``     one fused multiply-add per k, in order: ``acc = fma(x[m,k], W[n,k], acc)`` for k = 0…K−1,
                 then ``y = f32(acc + b)``.
``onnxruntime``  ONNX Runtime ``com.microsoft.MatMulNBits`` (bits=4), MLAS's SQNBit **float32** path
                 (``CompFp32``), which x86 MLAS uses for accuracy_level 0, 1, 2 and 3 alike (level 4 is
                 ``CompInt8``: the activations are quantized to int8 per block and summed with integer dot
                 products — *not* emulated here). With more than one row (M > 1) MLAS dequantizes the
                 weights and runs its SGEMM, which is exactly the chain above, on every CPU. With one row
                 (M = 1, the decode step; ``SQ4BitGemmM1Kernel_CompFp32``) it runs a dot-product kernel
                 that keeps L partial sums per output, ``acc[ℓ] = fma(W[n,k], x[k], acc[ℓ])`` with lane
                 ℓ = k mod L and k increasing (masked tails add exact zeros), then folds the L lanes —
                 one way for the outputs in whole groups of four (n < 4⌊N/4⌋, ``FoldAccumulators``) and
                 another for the last N mod 4 — and finally adds the bias (one float32 add). Per CPU (the
                 ``cpu`` of the resolved target; every + rounds to float32):

                 * AVX2 and AVX-VNNI (``cpu.avx512`` False; MLAS's Avx2 / Avx2vnni dispatch): L = 8.
                   Groups of four: ``(((ℓ0+ℓ1)+ℓ2)+ℓ3) + (((ℓ4+ℓ5)+ℓ6)+ℓ7)``;
                   last N mod 4: ``((ℓ0+ℓ4)+(ℓ1+ℓ5)) + ((ℓ2+ℓ6)+(ℓ3+ℓ7))``.
                 * AVX-512 F/BW/DQ/VL, with or without AVX512-VNNI (``cpu.avx512`` True; MLAS's Avx512 /
                   Avx512vnni dispatch): L = 16. Groups of four, per 128-bit chunk j = 0…3:
                   ``s[j] = ((ℓ[4j]+ℓ[4j+1])+ℓ[4j+2])+ℓ[4j+3]``, then ``(s[0]+s[2]) + (s[1]+s[3])``;
                   last N mod 4 (``_mm512_reduce_add_ps``): ``t[i] = ℓ[i]+ℓ[i+8]`` (i < 8),
                   ``u[i] = t[i]+t[i+4]`` (i < 4), then ``(u[0]+u[2]) + (u[1]+u[3])``.

                 The 8-lane fold was measured bit-exact on an AVX2 machine; the 16-lane fold on an AVX-512 +
                 VNNI machine (AMD Zen 4; block sizes 16–128, N 1–69, K up to 5120, with and without zero
                 points and bias). On the same inputs the two folds differ (tests/test_kernels_ops.py).

A float32 GEMM (torch, BLAS) adds the same products in another order; the difference is float
reassociation, bounded by ≈ K·2⁻²⁴·Σ_k |x_k·W_k| per output (tests/test_kernels_ops.py measures it).

MatMulNBits stores unsigned codes (uint4, default zero point 8); signed codes (int4, [−8, 7]) with zero
point z give the same W as uint4 codes q + 8 with zero point z + 8.

``int4_linear_reference`` is the NumPy spec (unpack, :func:`minquant.affine.dequantize`, the chain);
``int4_linear`` reads the packed nibbles directly in Numba, dequantizing one K × 64 tile of W at a time
(bit-identical).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..affine import dequantize, unpack_int4
from ..target import resolve_linear
from .checks import check_bias, check_whole
from .int4_conv import check_int4_weights
from .requantize import fma_f32_reference
from .requantize import _fma32

__all__ = ["int4_linear", "int4_linear_reference"]

_F32 = np.float32


def _m1_lanes(target) -> int:
    """MLAS's partial sums per output for M = 1 under ``target``: 0 (not the M = 1 dot-product kernel: the
    one-chain order), 8 (AVX2 / AVX-VNNI dispatch) or 16 (AVX-512 dispatch) — module docstring."""
    try:
        ar = resolve_linear(target)
    except (TypeError, ValueError) as e:
        raise ValueError(f"int4 linear: bad target={target!r} ({e}); expected 'minquant', 'onnxruntime' "
                         f"(optionally '@cpu'), a Target or an Arithmetic of one of these") from None
    if ar.name == "minquant":
        return 0
    if ar.name == "onnxruntime":
        return 16 if ar.cpu.avx512 else 8
    raise ValueError(f"int4 linear: target {target!r} resolves to {ar.name!r}; only 'minquant' and "
                     f"'onnxruntime' have an int4 weight-only linear")


def _check(x, w_packed, w_scale, w_zp, group_size, in_features, bias, dtype):
    """The activation side here; the packed weights, scales and zero points by the int4 row layout's one check
    (:func:`~minquant.kernels.int4_conv.check_int4_weights`). ``w_packed`` may be flat (ONNX's INT4 bytes):
    any shape with out·in/2 bytes."""
    if dtype not in ("int4", "uint4"):
        raise ValueError(f"dtype must be 'int4' or 'uint4', got {dtype!r}")
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise ValueError(f"x must be float32, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or Inf")
    check_whole(in_features, "in_features", 2)
    check_whole(group_size, "group_size", 1)
    k = int(in_features)
    if x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"shape mismatch: x has {x.shape[-1] if x.ndim else 0} features, in_features={k}")
    gs = int(group_size)
    if k % gs or k % 2:
        raise ValueError(f"in_features={k} must be even and a multiple of group_size={gs}")
    n = np.shape(w_scale)[0] if np.ndim(w_scale) == 2 else 0
    packed = np.asarray(w_packed)
    if packed.dtype == np.uint8 and n and packed.size != n * k // 2:
        raise ValueError(f"w_packed has {packed.size} bytes; ({n}, {k}) 4-bit weights need {n * k // 2}")
    if packed.dtype == np.uint8 and n:
        packed = np.ascontiguousarray(packed).reshape(n, k // 2)
    packed, scale, zp, n, _ = check_int4_weights(packed, w_scale, w_zp, k, gs, dtype)
    check_bias(bias, n, allow_int=False)
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=_F32)
    return x, packed.ravel(), scale, zp, k, gs, n, bias


def _fold8(ln, whole_group):
    """AVX2 fold of 8 partial sums (module docstring table)."""
    if whole_group:                                   # FoldAccumulators
        return _F32(_F32(_F32(_F32(ln[0] + ln[1]) + ln[2]) + ln[3])
                    + _F32(_F32(_F32(ln[4] + ln[5]) + ln[6]) + ln[7]))
    return _F32(_F32(_F32(ln[0] + ln[4]) + _F32(ln[1] + ln[5]))
                + _F32(_F32(ln[2] + ln[6]) + _F32(ln[3] + ln[7])))


def _fold16(ln, whole_group):
    """AVX-512 fold of 16 partial sums (module docstring table)."""
    if whole_group:                                   # FoldAccumulators: one sum per 128-bit chunk
        s = [_F32(_F32(_F32(ln[4 * j] + ln[4 * j + 1]) + ln[4 * j + 2]) + ln[4 * j + 3]) for j in range(4)]
        return _F32(_F32(s[0] + s[2]) + _F32(s[1] + s[3]))
    t = [_F32(ln[i] + ln[i + 8]) for i in range(8)]   # _mm512_reduce_add_ps
    u = [_F32(t[i] + t[i + 4]) for i in range(4)]
    return _F32(_F32(u[0] + u[2]) + _F32(u[1] + u[3]))


def _fold_lanes(lanes, n_groups_of_four):
    """MLAS's horizontal sums of the 8 or 16 partial sums of each output (module docstring)."""
    fold = _fold16 if lanes.shape[1] == 16 else _fold8
    return np.array([fold(lanes[n], n < n_groups_of_four) for n in range(lanes.shape[0])], _F32)


def int4_linear_reference(x, w_packed, w_scale, w_zp, *, group_size, in_features, bias=None, dtype="int4",
                          target="minquant"):
    """Readable int4 weight-only linear (module docstring).

    x float32 (..., in_features); w_packed uint8 of out·in/2 bytes; w_scale (out, in/group_size);
    w_zp None (0 for int4, 8 for uint4), one integer, or (out, in/group_size); bias float (out,) or None.
    ``target``: anything :func:`minquant.target.resolve_linear` accepts, framework minquant or onnxruntime.
    Returns float32 (..., out)."""
    n_lanes = _m1_lanes(target)
    x, packed, scale, zp, k, gs, n, bias = _check(x, w_packed, w_scale, w_zp, group_size, in_features, bias,
                                                  dtype)
    q = unpack_int4(packed, n * k, signed=dtype == "int4").reshape(n, k)
    w = dequantize(q, scale, zp, axis=1, group_size=gs)                   # (out, in) float32
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    if n_lanes and m == 1:                                                # MLAS's M = 1 kernel
        lanes = np.zeros((n, n_lanes), _F32)
        for kk in range(k):                                               # lane k mod L, k increasing
            lanes[:, kk % n_lanes] = fma_f32_reference(w[:, kk], np.full(n, x2[0, kk], _F32),
                                                       lanes[:, kk % n_lanes])
        y = _fold_lanes(lanes, (n // 4) * 4)[None, :]
    else:
        y = np.zeros((m, n), _F32)
        for kk in range(k):                                               # one fma per k, in order
            y = fma_f32_reference(np.broadcast_to(x2[:, kk:kk + 1], (m, n)),
                                  np.broadcast_to(w[None, :, kk], (m, n)), y)
    if bias is not None:
        y = (y + bias).astype(_F32)
    return y.reshape(x.shape[:-1] + (n,))


@njit(cache=True)
def _nibble(v, signed):
    """One 4-bit code (0..15) as int64, sign-extended for int4."""
    v = np.int64(v)
    if signed:
        v -= (v >> 3) * 16
    return v


@njit(cache=True)
def _dequant_row(packed, scale, zp, signed, gs, k_total, n, buf):
    """buf[k] = W[n, k] straight from the packed nibbles (row n is k_total/2 bytes)."""
    base = n * (k_total // 2)
    if gs % 2 == 0:                               # both nibbles of a byte share a group: byte at a time
        for g in range(k_total // gs):
            s = scale[n, g]
            z = zp[n, g]
            for i in range(g * (gs // 2), (g + 1) * (gs // 2)):
                byte = packed[base + i]
                buf[2 * i] = np.float32(np.float32(_nibble(byte & 15, signed) - z) * s)
                buf[2 * i + 1] = np.float32(np.float32(_nibble(byte >> 4, signed) - z) * s)
    else:
        for k in range(k_total):
            g = k // gs
            byte = packed[base + (k >> 1)]
            v = _nibble(byte & 15, signed) if (k & 1) == 0 else _nibble(byte >> 4, signed)
            buf[k] = np.float32(np.float32(v - zp[n, g]) * scale[n, g])


_BLOCK_N = 64   # outputs dequantized at a time (a K × 64 float32 tile)


@njit(cache=True)
def _int4_kernel(x, packed, scale, zp, signed, gs, n_lanes, bias, has_bias, out):
    m_rows, k_total = x.shape
    n_out = scale.shape[0]
    buf = np.empty(k_total, np.float32)
    if n_lanes > 0 and m_rows == 1:               # M = 1, ONNX Runtime's 8- or 16-lane dot products
        n4 = (n_out // 4) * 4
        ln = np.empty(n_lanes, np.float32)
        for n in range(n_out):
            _dequant_row(packed, scale, zp, signed, gs, k_total, n, buf)
            for l in range(n_lanes):
                ln[l] = np.float32(0)
            kl = k_total - k_total % n_lanes
            for k0 in range(0, kl, n_lanes):      # lane l takes k = l (mod L): L-wide, in order
                for l in range(n_lanes):
                    ln[l] = _fma32(buf[k0 + l], x[0, k0 + l], ln[l])
            for k in range(kl, k_total):
                ln[k - kl] = _fma32(buf[k], x[0, k], ln[k - kl])
            if n_lanes == 16:
                if n < n4:                        # FoldAccumulators, 128-bit chunks
                    s0 = np.float32(np.float32(np.float32(ln[0] + ln[1]) + ln[2]) + ln[3])
                    s1 = np.float32(np.float32(np.float32(ln[4] + ln[5]) + ln[6]) + ln[7])
                    s2 = np.float32(np.float32(np.float32(ln[8] + ln[9]) + ln[10]) + ln[11])
                    s3 = np.float32(np.float32(np.float32(ln[12] + ln[13]) + ln[14]) + ln[15])
                    out[0, n] = np.float32(np.float32(s0 + s2) + np.float32(s1 + s3))
                else:                             # _mm512_reduce_add_ps
                    u0 = np.float32(np.float32(ln[0] + ln[8]) + np.float32(ln[4] + ln[12]))
                    u1 = np.float32(np.float32(ln[1] + ln[9]) + np.float32(ln[5] + ln[13]))
                    u2 = np.float32(np.float32(ln[2] + ln[10]) + np.float32(ln[6] + ln[14]))
                    u3 = np.float32(np.float32(ln[3] + ln[11]) + np.float32(ln[7] + ln[15]))
                    out[0, n] = np.float32(np.float32(u0 + u2) + np.float32(u1 + u3))
            else:
                if n < n4:
                    h0 = np.float32(np.float32(np.float32(ln[0] + ln[1]) + ln[2]) + ln[3])
                    h1 = np.float32(np.float32(np.float32(ln[4] + ln[5]) + ln[6]) + ln[7])
                    out[0, n] = np.float32(h0 + h1)
                else:
                    out[0, n] = np.float32(np.float32(np.float32(ln[0] + ln[4]) + np.float32(ln[1] + ln[5]))
                                           + np.float32(np.float32(ln[2] + ln[6]) + np.float32(ln[3] + ln[7])))
    else:                                         # one fma per k, in order, for every output
        tile = np.empty((k_total, _BLOCK_N), np.float32)
        for n0 in range(0, n_out, _BLOCK_N):
            nb = min(_BLOCK_N, n_out - n0)
            for j in range(nb):                   # each weight dequantized once per call
                _dequant_row(packed, scale, zp, signed, gs, k_total, n0 + j, buf)
                for k in range(k_total):
                    tile[k, j] = buf[k]
            for m in range(m_rows):
                acc = np.zeros(_BLOCK_N, np.float32)
                for k in range(k_total):
                    xv = x[m, k]
                    for j in range(nb):           # independent outputs: vectorizes
                        acc[j] = _fma32(xv, tile[k, j], acc[j])
                for j in range(nb):
                    out[m, n0 + j] = acc[j]
    if has_bias:
        for m in range(m_rows):
            for n in range(n_out):
                out[m, n] = np.float32(out[m, n] + bias[n])


def int4_linear(x, w_packed, w_scale, w_zp, *, group_size, in_features, bias=None, dtype="int4",
                target="minquant"):
    """Fast :func:`int4_linear_reference` (Numba, reads the packed weights directly; bit-identical)."""
    n_lanes = _m1_lanes(target)
    x, packed, scale, zp, k, gs, n, bias = _check(x, w_packed, w_scale, w_zp, group_size, in_features, bias,
                                                  dtype)
    x2 = np.ascontiguousarray(x.reshape(-1, k))
    out = np.empty((x2.shape[0], n), _F32)
    _int4_kernel(x2, packed, scale, zp, dtype == "int4", gs, n_lanes,
                 np.zeros(n, _F32) if bias is None else bias, bias is not None, out)
    return out.reshape(x.shape[:-1] + (n,))
