"""QuantizedModel: save/load round trip (bit-identical), corrupt files, summary, intermediates, size."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

import minquant
from minquant.quantized import QuantizedModel, load, quantize_static
from minquant.quantized.model import FORMAT
from minquant.data.zoo import tiny_cnn_digits

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def qmodel():
    model, (x_tr, _, x_te, _) = tiny_cnn_digits()
    return quantize_static(model, x_tr[:128], progress=False), x_te[:50]


def test_round_trip_is_bit_identical(qmodel, tmp_path):
    qm, x = qmodel
    path = qm.save(tmp_path / "tiny.mq")              # the name is kept as given
    assert path.name == "tiny.mq" and path.exists()
    back = load(path)
    assert np.array_equal(back(x), qm(x))
    assert back.target == qm.target and back.qparams == qm.qparams and back.meta == qm.meta
    assert back.float_names == qm.float_names and back.size_bytes() == qm.size_bytes()
    for a, b in zip(qm.graph.nodes, back.graph.nodes):
        assert (a.name, a.op, a.inputs, a.attrs, a.source) == (b.name, b.op, b.inputs, b.attrs, b.source)
        assert a.params.keys() == b.params.keys()
        for k in a.params:
            assert a.params[k].dtype == b.params[k].dtype and np.array_equal(a.params[k], b.params[k])
    # documented layout: an npz without pickles, JSON description inside
    with np.load(path, allow_pickle=False) as f:
        doc = json.loads(f["__model__"].tobytes().decode())
        assert doc["format"] == FORMAT and doc["version"] == 2
        key = doc["nodes"][1]["params"]["weight"]
        assert f[key].dtype == np.int8


def test_torch_imported_model_round_trip(tmp_path):
    import torch.ao.quantization as tq
    from minquant.interop.torch import from_torch_quantized
    from minquant.data.zoo import TinyCNN

    model, (x_tr, _, x_te, _) = tiny_cnn_digits()
    m = tq.QuantWrapper(TinyCNN())
    m.module.load_state_dict(model.state_dict())
    m.eval()
    m.qconfig = tq.get_default_qconfig("x86")
    tq.prepare(m, inplace=True)
    m(torch.from_numpy(x_tr[:64]))
    tq.convert(m, inplace=True)
    qm = from_torch_quantized(m, (1, 1, 28, 28), engine="x86")
    back = load(qm.save(tmp_path / "t.npz"))
    assert np.array_equal(back(x_te[:20]), qm(x_te[:20]))


def test_corrupt_files_raise_clear_errors(qmodel, tmp_path):
    qm, _ = qmodel
    good = qm.save(tmp_path / "good.npz").read_bytes()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a readable minquant quantized model"):
        load(trunc)
    # flip one byte inside the int8 weights of the second conv: zip CRC or our SHA-256 catches it
    flipped = bytearray(good)
    with zipfile.ZipFile(tmp_path / "good.npz") as z:
        info = z.getinfo("2.weight.npy")
    pos = info.header_offset + 30 + len(info.filename) + info.extra.__len__() + 200
    flipped[pos] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="not a readable minquant quantized model"):
        load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(ValueError, match="__model__"):
        load(other)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, __model__=np.frombuffer(json.dumps({"format": "x"}).encode(), np.uint8))
    with pytest.raises(ValueError, match="format tag"):
        load(wrong)
    with pytest.raises(ValueError, match="cannot read"):
        load(tmp_path / "missing.npz")
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable"):
        load(text)


def test_summary_and_intermediates(qmodel):
    qm, x = qmodel
    text = qm.summary()
    for needle in ("qconv2d", "qlinear", "per-channel", "relu clamp", "uint8", "float32", "scale / zp"):
        assert needle in text
    s, z = qm.qparams["features.0"]
    assert f"{s:.6g} / {z}" in text
    out, vals = qm.run(x, intermediates=True)
    assert np.array_equal(out, qm(x))
    assert set(vals) == {"x"} | {n.name for n in qm.graph.nodes}
    assert all(v.dtype == np.float32 for v in vals.values())
    _, raw = qm.run(x, intermediates=True, raw=True)
    assert raw["features.0"].dtype == np.uint8
    deq = (raw["features.0"].astype(np.float32) - z) * np.float32(s)
    # TinyCNN's two convs were equalized: intermediates come back in the float model's units
    scale = qm.channel_scales["features.0"].astype(np.float32).reshape(1, -1, 1, 1)
    assert np.array_equal(vals["features.0"], deq * scale)


def test_bad_inputs(qmodel):
    qm, x = qmodel
    with pytest.raises(ValueError, match="float32"):
        qm(x.astype(np.float64))
    with pytest.raises(ValueError, match="shape"):
        qm(np.zeros((2, 1, 20, 20), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        qm(np.full((2, 1, 28, 28), np.nan, np.float32))
    with pytest.raises(ValueError, match="Graph"):
        QuantizedModel("not a graph")


