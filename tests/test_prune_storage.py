"""Bitmask / CSR encodings: exact round trips through np.savez (no pickle), byte counts by formula, and a
pruned model's honest size."""
import copy

import numpy as np
import pytest
import torch

from minquant.prune import (decode, encode_bitmask, encode_csr, encode_dense, encoded_nbytes,
                            prune_magnitude, smallest_encoding, storage_report)
from minquant.sparse import min_uint
from minquant.data.zoo import TinyCNN

torch.set_num_threads(1)


def _sparse(shape, density, dtype, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        a = rng.standard_normal(shape).astype(dtype)
    else:
        a = rng.integers(-127, 128, shape).astype(dtype)
    a[rng.random(shape) >= density] = 0
    return a


SHAPES = [(37,), (16, 9), (8, 3, 3, 3), (300, 300), (1, 1), (5, 0), ()]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.float16])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
def test_round_trip_through_npz(shape, dtype, density, tmp_path):
    a = _sparse(shape, density, dtype, seed=len(shape))
    for enc in (encode_dense(a), encode_bitmask(a), encode_csr(a)):
        back = decode(enc)
        assert back.dtype == a.dtype and back.shape == a.shape
        np.testing.assert_array_equal(back, a)
        path = tmp_path / "t.npz"
        np.savez(path, **enc)
        with np.load(path, allow_pickle=False) as f:
            np.testing.assert_array_equal(decode({k: f[k] for k in f.files}), a)


def test_negative_zero_and_byte_formulas():
    a = _sparse((64, 200), 0.2, np.float32, seed=1)
    a[0, 0] = -0.0  # counts as zero
    n, nnz, b = a.size, int(np.count_nonzero(a)), 4
    assert encoded_nbytes(encode_dense(a)) == n * b
    assert encoded_nbytes(encode_bitmask(a)) == -(-n // 8) + nnz * b
    csr = encode_csr(a)
    assert csr["indices"].dtype == np.uint8 and csr["indptr"].dtype == np.uint16  # cols ≤ 256, nnz < 65536
    assert encoded_nbytes(csr) == (64 + 1) * 2 + nnz * (1 + b)
    assert min_uint(255) == np.uint8 and min_uint(256) == np.uint16 and min_uint(70000) == np.uint32


def test_crossover_points():
    # bitmask beats dense below density 1 − 1/(8b): 96.9 % for float32, 87.5 % for int8
    for dtype, edge in ((np.float32, 1 - 1 / 32), (np.int8, 1 - 1 / 8)):
        lo = _sparse((1000, 64), edge - 0.02, dtype, seed=2)
        hi = _sparse((1000, 64), min(edge + 0.02, 1.0), dtype, seed=3)
        assert encoded_nbytes(encode_bitmask(lo)) < encoded_nbytes(encode_dense(lo))
        assert encoded_nbytes(encode_bitmask(hi)) > encoded_nbytes(encode_dense(hi))
    very_sparse = _sparse((1000, 64), 0.01, np.float32, seed=4)
    assert str(smallest_encoding(very_sparse)["format"]) == "csr"


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        encode_bitmask(np.array([1.0, np.nan]))
    enc = encode_bitmask(np.array([1.0, 0.0, 2.0]))
    enc["values"] = enc["values"][:1]
    with pytest.raises(ValueError, match="set bits"):
        decode(enc)
    with pytest.raises(ValueError, match="unknown"):
        decode({"format": np.array("coo")})


def test_pruned_model_really_shrinks():
    torch.manual_seed(0)
    model = TinyCNN()
    dense = storage_report(model)
    assert dense["dense"] == 29066 * 4 and dense["best"] == dense["dense"]
    pruned = copy.deepcopy(model)
    prune_magnitude(pruned, 0.9)
    rep = storage_report(pruned)
    nnz = sum(int((pruned.get_submodule(n).weight != 0).sum()) for n in ("features.0", "features.2", "classifier"))
    bits = sum(-(-n // 8) for n in (288, 18432, 10240))
    other = (32 + 64 + 10) * 4  # biases stay dense
    assert rep["bitmask"] == bits + 4 * nnz + other
    assert rep["dense"] == dense["dense"]  # a dense file does not shrink
    assert rep["best"] < 0.15 * dense["dense"]
    q = storage_report(pruned, int8=True)
    scales = (32 + 64 + 10) * 4
    assert q["bitmask"] <= bits + nnz + scales + other  # codes are 1 byte; rounding to 0 only helps
    assert q["best"] < rep["best"] / 2


def test_int4_codes_are_stored_two_per_byte(tmp_path):
    """int4 codes held in int8 (W4A8 per channel on the int8 kernels) cost half a byte, round-trip exactly,
    and only codes in [-8, 7] qualify; the smallest encoding still prefers bitmask / CSR when sparser."""
    from minquant.sparse import decode_int4, encode_int4, int4_codes
    rng = np.random.default_rng(0)
    w = rng.integers(-8, 8, size=(7, 3, 3, 3)).astype(np.int8)      # 189 codes: an odd count
    enc = smallest_encoding(w)
    assert str(enc["format"]) == "int4" and encoded_nbytes(enc) == 95
    np.savez(tmp_path / "a.npz", **enc)
    back = dict(np.load(tmp_path / "a.npz", allow_pickle=False))
    out = decode(back)
    assert out.dtype == np.int8 and np.array_equal(out, w)
    assert np.array_equal(decode_int4(encode_int4(w)), w)
    assert not int4_codes(np.array([-9, 0], np.int8)) and not int4_codes(np.array([8], np.int8))
    assert not int4_codes(np.array([1, 2], np.int16)) and not int4_codes(np.zeros(0, np.int8))
    with pytest.raises(ValueError, match=r"int4 encoding needs int8 codes in \[-8, 7\].*\[-9, 3\]"):
        encode_int4(np.array([-9, 3], np.int8))
    sparse = np.zeros((64, 64), np.int8)
    sparse[0, :5] = 3                                   # 5 non-zeros of 4096: CSR beats 2048 nibble bytes
    assert str(smallest_encoding(sparse)["format"]) == "csr"
