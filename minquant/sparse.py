"""Sparse storage: what a pruned tensor really costs on disk.

A dense tensor of ``n`` elements of ``b`` bytes costs ``n·b`` bytes however many zeros it holds. Two
encodings make unstructured sparsity pay (``nnz`` = non-zeros, sizes in bytes, shape stored separately):

* **bitmask** — one bit per element (1 = non-zero) + the non-zero values in row-major order::

      size = ⌈n / 8⌉ + nnz·b          smaller than dense when density < 1 − 1/(8b)
                                      (float32: < 96.9 %, int8: < 87.5 %)

* **CSR** (compressed sparse row) on the (rows = dim 0, cols = everything else) matrix: ``indptr``
  (rows + 1 offsets), ``indices`` (column of each non-zero, the smallest unsigned type that holds
  cols − 1) and the values::

      size = (rows + 1)·p + nnz·(i + b)    p, i = bytes of the offset / index type

  CSR wins only at high sparsity (each non-zero carries an index); the bitmask's cost per *zero* is 1 bit.

A third encoding is for *narrow* codes rather than zeros:

* **int4** — int8 codes that all lie in [−8, 7] (int4 weights run on the int8 kernels: W4A8 per output
  channel, as LiteRT unpacks its int4 convolution weights to int8 before running them), two per byte, low
  nibble first (:func:`minquant.affine.pack_int4`, ONNX's INT4 layout)::

      size = ⌈n / 2⌉


Each encoder returns a dict of plain NumPy arrays (no objects: it goes into ``np.savez`` and loads with
``allow_pickle=False``) that the decoder inverts exactly. For prune-then-quantize, encode the integer
codes (int8 with zero point 0, so a pruned weight is code 0): values then cost 1 byte.
"""
from __future__ import annotations

import numpy as np

from .affine import pack_int4, unpack_int4

__all__ = ["encode_dense", "encode_bitmask", "decode_bitmask", "encode_csr", "decode_csr", "encode_int4",
           "decode_int4", "int4_codes", "decode", "encoded_nbytes", "smallest_encoding", "min_uint"]


def min_uint(max_value: int):
    """The smallest unsigned NumPy dtype holding ``max_value``."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"{max_value} does not fit in 64 bits")


def _check(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == object:
        raise ValueError("object arrays cannot be encoded")
    if a.dtype.kind == "f" and a.size and not np.all(np.isfinite(a)):
        raise ValueError("tensor contains NaN or Inf")
    return a


def encode_dense(a) -> dict:
    """The reference: ``{"format": "dense", "shape", "values"}`` (values = the whole tensor, flat)."""
    a = _check(a)
    return {"format": np.array("dense"), "shape": np.array(a.shape, dtype=np.int64),
            "values": np.ascontiguousarray(a).ravel()}


def encode_bitmask(a) -> dict:
    """``{"format": "bitmask", "shape", "bits" (uint8, packbits of a != 0, big-endian bit order),
    "values" (the non-zeros, a's dtype)}``."""
    a = _check(a)
    flat = np.ascontiguousarray(a).ravel()
    nz = flat != 0
    return {"format": np.array("bitmask"), "shape": np.array(a.shape, dtype=np.int64),
            "bits": np.packbits(nz), "values": flat[nz]}


def decode_bitmask(enc: dict) -> np.ndarray:
    shape = tuple(int(s) for s in enc["shape"])
    n = int(np.prod(shape, dtype=np.int64))
    nz = np.unpackbits(enc["bits"], count=n).astype(bool)
    if int(nz.sum()) != enc["values"].size:
        raise ValueError(f"bitmask has {int(nz.sum())} set bits but {enc['values'].size} values")
    out = np.zeros(n, dtype=enc["values"].dtype)
    out[nz] = enc["values"]
    return out.reshape(shape)


def encode_csr(a) -> dict:
    """``{"format": "csr", "shape", "indptr", "indices", "values"}`` of ``a`` viewed as
    (shape[0], rest); a 0-D or 1-D tensor is one row. ``indptr``/``indices`` use the smallest unsigned types."""
    a = _check(a)
    shape = a.shape
    rows = shape[0] if a.ndim >= 2 else 1
    cols = a.size // rows if rows else 0
    m = np.ascontiguousarray(a).reshape(rows, cols)
    nz = m != 0
    counts = nz.sum(1)
    nnz = int(counts.sum())
    indptr = np.zeros(rows + 1, dtype=min_uint(nnz))
    np.cumsum(counts, out=indptr[1:])
    r, c = np.nonzero(nz)  # row-major order
    return {"format": np.array("csr"), "shape": np.array(shape, dtype=np.int64), "indptr": indptr,
            "indices": c.astype(min_uint(max(cols - 1, 0))), "values": m[r, c]}


def decode_csr(enc: dict) -> np.ndarray:
    shape = tuple(int(s) for s in enc["shape"])
    rows = len(enc["indptr"]) - 1
    n = int(np.prod(shape, dtype=np.int64))
    cols = n // rows if rows else 0
    indptr = enc["indptr"].astype(np.int64)
    if indptr[-1] != enc["values"].size or enc["indices"].size != enc["values"].size:
        raise ValueError("CSR arrays are inconsistent (indptr[-1], indices and values disagree)")
    out = np.zeros((rows, cols), dtype=enc["values"].dtype)
    row_of = np.repeat(np.arange(rows), np.diff(indptr))
    out[row_of, enc["indices"].astype(np.int64)] = enc["values"]
    return out.reshape(shape)


def int4_codes(a) -> bool:
    """True when ``a`` is an int8 array whose every value lies in [−8, 7] (int4 codes in int8)."""
    a = np.asarray(a)
    return a.dtype == np.int8 and a.size > 0 and int(a.min()) >= -8 and int(a.max()) <= 7


def encode_int4(a) -> dict:
    """``{"format": "int4", "shape", "nibbles" (uint8, ⌈n/2⌉ bytes)}`` of int8 codes in [−8, 7]."""
    a = _check(a)
    if not int4_codes(a):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        raise ValueError(f"int4 encoding needs int8 codes in [-8, 7], got dtype {a.dtype} spanning [{lo}, {hi}]")
    return {"format": np.array("int4"), "shape": np.array(a.shape, dtype=np.int64), "nibbles": pack_int4(a)}


def decode_int4(enc: dict) -> np.ndarray:
    shape = tuple(int(s) for s in enc["shape"])
    n = int(np.prod(shape, dtype=np.int64))
    return unpack_int4(enc["nibbles"], n, signed=True).astype(np.int8).reshape(shape)


def decode(enc: dict) -> np.ndarray:
    """Decode any of the four formats."""
    fmt = str(enc["format"])
    if fmt == "dense":
        return enc["values"].reshape(tuple(int(s) for s in enc["shape"]))
    if fmt == "bitmask":
        return decode_bitmask(enc)
    if fmt == "csr":
        return decode_csr(enc)
    if fmt == "int4":
        return decode_int4(enc)
    raise ValueError(f"unknown sparse format {fmt!r}")


def encoded_nbytes(enc: dict, *, include_shape: bool = False) -> int:
    """Bytes of the encoded payload: the sum of its arrays' ``nbytes`` (the format tag and, unless
    ``include_shape``, the shape are metadata every format shares and are left out)."""
    skip = {"format"} | (set() if include_shape else {"shape"})
    return int(sum(v.nbytes for k, v in enc.items() if k not in skip))


def smallest_encoding(a) -> dict:
    """Whichever of dense, bitmask, CSR and (for int8 codes in [−8, 7]) int4 is smallest for ``a`` (ties:
    dense, then bitmask, then CSR)."""
    encs = [encode_dense(a), encode_bitmask(a), encode_csr(a)] + ([encode_int4(a)] if int4_codes(a) else [])
    return min(encs, key=encoded_nbytes)
