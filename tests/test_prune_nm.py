"""N:M (2:4) semi-structured sparsity: mask validity and that it keeps the largest weights of each group."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn

from minquant.prune import is_nm_sparse, nm_mask, prune_nm
from minquant.data.zoo import TinyCNN

torch.set_num_threads(1)


def _groups(a, m):
    """Reference grouping written out with loops: groups of m along dim 1 for every (out, kernel pos)."""
    out = []
    a = a.reshape(a.shape[0], a.shape[1], -1)
    for o in range(a.shape[0]):
        for k in range(a.shape[2]):
            for g in range(0, a.shape[1], m):
                out.append(a[o, g:g + m, k])
    return out


@pytest.mark.parametrize("shape, n, m", [(s, n, m) for s in [(6, 8), (5, 16, 3, 3), (3, 4, 1, 1), (2, 12, 2, 5)]
                                          for n, m in [(2, 4), (1, 4), (4, 8), (1, 2)] if s[1] % m == 0])
def test_nm_mask_valid_and_keeps_largest(shape, n, m):
    w = np.random.default_rng(sum(shape) + n + m).standard_normal(shape).astype(np.float32)
    keep = nm_mask(w, n, m)
    assert keep.shape == w.shape
    assert keep.sum() == w.size * n // m  # sparsity exactly 1 − N/M
    assert is_nm_sparse(w * keep, n, m)
    for wg, kg in zip(_groups(np.abs(w), m), _groups(keep, m)):
        assert kg.sum() == n
        if n < m:
            assert wg[kg].min() >= wg[~kg].max()  # kept = the N largest of the group


def test_groups_run_along_input_channels():
    # weight (1, 4, 1, 2): two kernel positions, each with its own group of 4 input channels
    w = np.array([[[[1, 9]], [[2, 8]], [[3, 7]], [[4, 6]]]], dtype=np.float32)
    keep = nm_mask(w, 2, 4)
    np.testing.assert_array_equal(keep[0, :, 0, 0], [False, False, True, True])
    np.testing.assert_array_equal(keep[0, :, 0, 1], [True, True, False, False])


def test_is_nm_sparse_detects_violations():
    w = np.array([[1.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 3.0]])
    assert is_nm_sparse(w, 2, 4)
    w[0, 2] = 5.0
    assert not is_nm_sparse(w, 2, 4)
    # exhaustively: a 1×4 group is 2:4-sparse iff ≤ 2 non-zeros
    for bits in itertools.product([0, 1], repeat=4):
        assert is_nm_sparse(np.array([bits], dtype=float), 2, 4) == (sum(bits) <= 2)


def test_ties_keep_lower_index():
    keep = nm_mask(np.ones((1, 4), dtype=np.float32), 2, 4)
    np.testing.assert_array_equal(keep, [[False, False, True, True]])  # lower indices dropped first


def test_prune_nm_model_skips_indivisible_layers():
    torch.manual_seed(0)
    model = TinyCNN()
    masks = prune_nm(model, 2, 4)
    assert set(masks) == {"features.2", "classifier"}  # conv1 has 1 input channel
    assert is_nm_sparse(model.features[2].weight.detach().numpy(), 2, 4)
    assert is_nm_sparse(model.classifier.weight.detach().numpy(), 2, 4)
    assert (model.features[0].weight != 0).all()
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_bad_input():
    with pytest.raises(ValueError, match="multiple of M"):
        nm_mask(np.ones((2, 6)), 2, 4)
    with pytest.raises(ValueError, match="N ≤ M"):
        nm_mask(np.ones((2, 4)), 5, 4)
    with pytest.raises(ValueError, match="NaN"):
        nm_mask(np.array([[1.0, np.nan, 0.0, 2.0]]), 2, 4)
    with pytest.raises(ValueError, match="≥ 2 dims"):
        nm_mask(np.ones(8), 2, 4)
    with pytest.raises(ValueError, match="divisible"):
        prune_nm(nn.Sequential(nn.Linear(3, 5)), 2, 4)
