"""Unstructured magnitude pruning: masks equal torch.nn.utils.prune's, pruning is permanent, fine-tuning
keeps zeros at zero."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from minquant.prune import (global_magnitude_masks, magnitude_mask, masked_training, prune_magnitude)
from minquant.prune.magnitude import n_to_prune, weight_arrays
from minquant.data.training import fit
from minquant.data.zoo import TinyCNN

torch.set_num_threads(1)


def _distinct(arrays: dict, seed: int) -> dict:
    """Replace |w| by its rank (1..N over all arrays, /N), keeping signs and each layer's ordering: float32
    normal draws repeat in tensors of ~10⁴ elements (birthday), ranks never do."""
    flat = np.concatenate([np.abs(a).ravel() for a in arrays.values()])
    rank = np.empty(flat.size)
    rank[np.argsort(flat, kind="stable")] = np.arange(1, flat.size + 1)
    out, i = {}, 0
    for k, a in arrays.items():
        out[k] = (np.sign(a).ravel() * rank[i:i + a.size] / flat.size).astype(np.float32).reshape(a.shape)
        i += a.size
    assert np.unique(np.abs(np.concatenate([v.ravel() for v in out.values()]))).size == flat.size
    return out


def _tie_free(shape, seed):
    return _distinct({"w": np.random.default_rng(seed).standard_normal(shape)}, seed)["w"]


@pytest.mark.parametrize("shape", [(7,), (16, 9), (8, 4, 3, 3), (10, 1024)])
@pytest.mark.parametrize("amount", [0.0, 0.1, 0.3, 0.5, 0.75, 0.9, 0.999, 1.0, 5])
def test_layer_mask_equals_torch_l1_unstructured(shape, amount):
    w = _tie_free(shape, seed=len(shape) * 100 + int(1000 * float(amount)) % 97)
    if isinstance(amount, int) and amount > w.size:
        pytest.skip("count larger than the tensor")
    lin = nn.Linear(1, 1)
    lin.weight = nn.Parameter(torch.from_numpy(w.copy()))
    tprune.l1_unstructured(lin, "weight", amount=amount)
    ref = lin.weight_mask.numpy().astype(bool)
    ours = magnitude_mask(w, amount)
    np.testing.assert_array_equal(ours, ref)
    assert (~ours).sum() == n_to_prune(amount, w.size)


def test_round_half_to_even_like_torch():
    # 0.5 · 5 = 2.5 → 2 (Python round), 0.5 · 7 = 3.5 → 4
    assert n_to_prune(0.5, 5) == 2 and n_to_prune(0.5, 7) == 4
    for n in (5, 7):
        lin = nn.Linear(n, 1)
        tprune.l1_unstructured(lin, "weight", amount=0.5)
        assert int((lin.weight_mask == 0).sum()) == n_to_prune(0.5, n)


@pytest.mark.parametrize("amount", [0.2, 0.5, 0.8, 0.95, 1000])
def test_global_masks_equal_torch_global_unstructured(amount):
    torch.manual_seed(0)
    model = TinyCNN()
    arrays = _distinct(weight_arrays(model), seed=0)  # keeps torch init's per-layer scales' ordering
    with torch.no_grad():
        for n, a in arrays.items():
            model.get_submodule(n).weight.copy_(torch.from_numpy(a))
    ref = copy.deepcopy(model)
    params = [(ref.get_submodule(n), "weight") for n in arrays]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    ours = global_magnitude_masks(arrays, amount)
    for name in arrays:
        np.testing.assert_array_equal(ours[name], ref.get_submodule(name).weight_mask.numpy().astype(bool))
    # global ≠ per-layer: layers with smaller weights lose more
    per_layer = {n: (~m).mean() for n, m in ours.items()}
    if isinstance(amount, float) and amount < 1:
        assert max(per_layer.values()) - min(per_layer.values()) > 0.05


def test_ties_break_toward_lower_index():
    # documented rule: among equal |w| the lowest flat index is pruned first
    w = np.array([3.0, -1.0, 1.0, 2.0, 1.0, -1.0], dtype=np.float32)
    np.testing.assert_array_equal(magnitude_mask(w, 2), [True, False, False, True, True, True])
    # torch prunes the same *number* of weights, maybe different ones among the ties
    lin = nn.Linear(6, 1)
    lin.weight = nn.Parameter(torch.from_numpy(w.copy()))
    tprune.l1_unstructured(lin, "weight", amount=2)
    ref = lin.weight_mask.numpy().astype(bool)
    assert (~ref).sum() == 2 and set(np.flatnonzero(~ref)) <= {1, 2, 4, 5}


def test_pruning_is_permanent_and_reloads():
    torch.manual_seed(1)
    model = TinyCNN().eval()
    keys = list(model.state_dict())
    masks = prune_magnitude(model, 0.7, scope="layer")
    for name, mask in masks.items():
        w = model.get_submodule(name).weight.detach().numpy()
        np.testing.assert_array_equal(w != 0, mask)
        assert (~mask).sum() == n_to_prune(0.7, mask.size)
    assert list(model.state_dict()) == keys  # no weight_orig / weight_mask
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    fresh = TinyCNN().eval()
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(fresh(x), model(x))


def test_second_call_extends_mask():
    torch.manual_seed(2)
    model = TinyCNN()
    m1 = prune_magnitude(model, 0.5)
    m2 = prune_magnitude(model, 0.8)
    for n in m1:
        assert not np.any(m2[n] & ~m1[n])  # nothing revived
    total = sum(m.size for m in m2.values())
    assert sum((~m).sum() for m in m2.values()) == round(0.8 * total)


def test_masked_training_keeps_zeros_and_removes_hooks():
    torch.manual_seed(3)
    model = TinyCNN()
    masks = prune_magnitude(model, 0.6)
    before = {n: model.get_submodule(n).weight.detach().clone() for n in masks}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 12, 12)).astype(np.float32)  # TinyCNN pools adaptively
    y = rng.integers(0, 10, 64)
    # SGD with momentum and weight decay, and a mask tightened mid-way: the hooks must still hold zeros
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    with masked_training(model, masks):
        for i in range(0, 64, 16):
            loss = nn.functional.cross_entropy(model(torch.from_numpy(x[i:i + 16])), torch.from_numpy(y[i:i + 16]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    tighter = prune_magnitude(model, 0.8)
    with masked_training(model, tighter):
        fit(model, x, y, epochs=1, batch_size=16)
        for _ in range(2):  # leftover momentum from before the mask changed
            loss = nn.functional.cross_entropy(model(torch.from_numpy(x[:16])), torch.from_numpy(y[:16]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    for n, mask in tighter.items():
        w = model.get_submodule(n).weight.detach()
        assert torch.all(w[~torch.from_numpy(mask)] == 0)
        assert not torch.equal(w, before[n])  # the kept weights did train
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert all(not p._backward_hooks for p in model.parameters() if p._backward_hooks is not None)


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        magnitude_mask(np.array([1.0, np.nan]), 0.5)
    with pytest.raises(ValueError, match="amount"):
        magnitude_mask(np.ones(4), 1.5)
    with pytest.raises(ValueError, match="amount"):
        magnitude_mask(np.ones(4), 7)
    with pytest.raises(ValueError, match="scope"):
        prune_magnitude(TinyCNN(), 0.5, scope="row")
    with pytest.raises(ValueError, match="not in the model"):
        prune_magnitude(TinyCNN(), 0.5, exclude=("conv9",))
