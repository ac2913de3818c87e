"""Prune, then quantize: pruned TinyCNNs go through ``minquant.quantize_static`` (issue 4).

A TinyCNN trained briefly on a slice of digits (seeded, ~1 s), then pruned either way:
* unstructured 80 % magnitude → int8: pruned weights stay int8 code 0 (so a sparse encoding of the codes
  pays), and int8 argmax agrees with the float pruned model on most test images;
* 50 % of channels removed → the smaller model quantizes, its int8 layers have the pruned widths, and
  its argmax agrees with the float model.
"""
import copy

import numpy as np
import pytest
import torch

import minquant
from minquant.prune import prune_channels, prune_magnitude
from minquant.sparse import decode, encode_bitmask, encoded_nbytes, smallest_encoding
from minquant.data.training import fit
from minquant.data.zoo import TinyCNN

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained():
    from minquant.data.datasets import digits

    xtr, ytr, xte, yte = digits()
    torch.manual_seed(0)
    m = TinyCNN()
    fit(m, xtr[:512], ytr[:512], epochs=1, lr=3e-3, seed=0)
    return m.eval(), xtr, xte[:200]


def _float_argmax(m, x):
    with torch.inference_mode():
        return m(torch.from_numpy(x)).argmax(1).numpy()


def _calib(xtr):
    return [np.ascontiguousarray(xtr[i:i + 32]) for i in range(0, 96, 32)]


def test_unstructured_pruned_model_quantizes_and_agrees(trained):
    base, xtr, xte = trained
    m = copy.deepcopy(base)
    prune_magnitude(m, 0.8, scope="layer", exclude=("features.0",))
    zero = {n: (m.get_submodule(n).weight.detach().numpy() == 0) for n in ("features.2", "classifier")}
    assert all(0.79 < z.mean() < 0.81 for z in zero.values())
    qm = minquant.quantize_static(m, _calib(xtr), progress=False)
    nodes = {n.name: n for n in qm.graph.nodes}
    for name, z in zero.items():
        codes = nodes[name].params["weight"]
        assert codes.dtype == np.int8 and codes.shape == z.shape
        assert np.all(codes[z] == 0), f"{name}: a pruned weight got a non-zero int8 code"
        assert np.all(nodes[name].params["w_zp"] == 0)
        enc = smallest_encoding(codes)
        assert str(enc["format"]) != "dense"
        assert np.array_equal(decode(enc), codes)
        assert encoded_nbytes(encode_bitmask(codes)) < 0.4 * codes.nbytes
    q = np.asarray(qm(xte))
    assert q.shape == (len(xte), 10) and q.dtype == np.float32
    f = _float_argmax(m, xte)
    assert len(np.unique(f)) >= 8  # the float model is not degenerate
    agree = float((q.argmax(1) == f).mean())
    assert agree >= 0.9, agree


def test_structured_pruned_model_quantizes_and_runs(trained):
    base, xtr, xte = trained
    m = prune_channels(base, (1, 1, 28, 28), 0.5, norm="l1").eval()
    assert (m.features[0].out_channels, m.features[2].out_channels) == (16, 32)
    qm = minquant.quantize_static(m, _calib(xtr), progress=False)
    nodes = {n.name: n for n in qm.graph.nodes}
    assert nodes["features.0"].params["weight"].shape == (16, 1, 3, 3)
    assert nodes["features.2"].params["weight"].shape == (32, 16, 3, 3)
    assert nodes["classifier"].params["weight"].shape == (10, 32 * 16)
    q = np.asarray(qm(xte))
    assert q.shape == (len(xte), 10) and np.all(np.isfinite(q))
    f = _float_argmax(m, xte)
    assert len(np.unique(f)) >= 8
    agree = float((q.argmax(1) == f).mean())
    assert agree >= 0.9, agree
    full = minquant.quantize_static(base, _calib(xtr), progress=False)
    assert qm.size_bytes() < 0.5 * full.size_bytes()


def test_saved_format_stores_pruned_weights_sparsely(trained, tmp_path):
    """size_bytes() and the saved file count a pruned layer's zero codes at a bit each (bitmask/CSR), the
    round trip is bit-identical, and a damaged sparse part is reported, not silently decoded."""
    import zipfile

    base, xtr, xte = trained
    dense = minquant.quantize_static(base, _calib(xtr), progress=False)
    m = copy.deepcopy(base)
    prune_magnitude(m, 0.9, scope="layer", exclude=("features.0",))
    sparse = minquant.quantize_static(m, _calib(xtr), progress=False)
    assert sparse.size_bytes() < 0.45 * dense.size_bytes()
    path = sparse.save(tmp_path / "pruned.mq.npz")
    dense_path = dense.save(tmp_path / "dense.mq.npz")
    assert path.stat().st_size < 0.7 * dense_path.stat().st_size
    loaded = minquant.load(path)
    np.testing.assert_array_equal(loaded(xte), sparse(xte))
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    parts = [n for n in names if n.endswith((".bits.npy", ".indices.npy"))]
    assert parts, names
    # damage one sparse part: flip its bits
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    key = parts[0][:-4]
    arrays[key] = (arrays[key] ^ np.uint8(0xFF)) if arrays[key].dtype == np.uint8 else arrays[key][::-1].copy()
    bad = tmp_path / "bad.mq.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match="bad.mq.npz"):
        minquant.load(bad)
