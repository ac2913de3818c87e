"""Saved files survive concurrency and interrupts, and an edited file is refused (minquant.files,
QuantizedModel.save / load)."""
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import minquant as mq
from minquant.files import atomic_path, atomic_write, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_models(digits_model, tmp_path_factory):
    """Two small saved models with different names (so a reader can tell them apart)."""
    model, (x_tr, _, _, _) = digits_model
    d = tmp_path_factory.mktemp("models")
    paths = []
    for i, n in enumerate((64, 128)):
        qm = mq.quantize_static(model, x_tr[:n], progress=False)
        qm.graph.name = f"model_{i}"
        paths.append(qm.save(d / f"m{i}.mq.npz"))
    return paths


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert p.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["f.bin"]
    with atomic_write(p) as f:
        f.write(b"new")
    assert p.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["f.bin"]


def test_atomic_write_text_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "RESULTS.md"
    p.write_text("old results\n")
    atomic_write_text(p, "new — ünïcode\n" * 3)
    assert p.read_text(encoding="utf-8") == "new — ünïcode\n" * 3
    assert sorted(os.listdir(tmp_path)) == ["RESULTS.md"]
    with pytest.raises(TypeError):
        atomic_write_text(p, b"bytes are not text")
    assert p.read_text(encoding="utf-8") == "new — ünïcode\n" * 3 and sorted(os.listdir(tmp_path)) == ["RESULTS.md"]


def test_saving_onto_a_directory_is_refused_and_leaves_nothing(two_models, tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        mq.load(two_models[0]).save(tmp_path / "d")
    with pytest.raises(ValueError, match="does not exist"):
        mq.load(two_models[0]).save(tmp_path / "nope" / "m.npz")
    assert sorted(os.listdir(tmp_path)) == ["d"] and os.listdir(tmp_path / "d") == []


def test_atomic_path_gives_unique_names(tmp_path):
    with atomic_path(tmp_path / "x.png", suffix=".png") as a, atomic_path(tmp_path / "x.png", suffix=".png") as b:
        assert a != b and a.name.endswith(".png") and a.parent == tmp_path
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert (tmp_path / "x.png").read_bytes() in (b"a", b"b") and os.listdir(tmp_path) == ["x.png"]


_WRITER = r"""
import sys, time, minquant as mq
src, dst, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
qm = mq.load(src)
n = 0
end = time.time() + seconds
while time.time() < end or n < 6:       # at least 6 saves, however loaded the machine
    qm.save(dst); n += 1
print(n)
"""

_READER = r"""
import sys, time, minquant as mq
dst, seconds = sys.argv[1], float(sys.argv[2])
ok = bad = 0
end = time.time() + seconds
while time.time() < end or ok + bad < 6:   # at least 6 loads, however loaded the machine
    try:
        m = mq.load(dst)
        assert m.graph.name in ("model_0", "model_1")
        ok += 1
    except Exception as e:
        bad += 1
        print(type(e).__name__, e, file=sys.stderr)
print(ok, bad)
"""


def test_two_writers_and_a_reader(two_models, tmp_path):
    """Two processes save different models to one path while a third loads it, for 4 s: every load gets
    one whole model, no writer fails, no temporary file is left. (Each process also makes at least 6 saves or
    loads: on a loaded machine 4 s can pass while a process is still importing.)"""
    dst = tmp_path / "shared.mq.npz"
    mq.load(two_models[0]).save(dst)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(src), str(dst), "4"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env) for src in two_models]
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(dst), "4"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    outs = [p.communicate(timeout=120) for p in writers + [reader]]
    for p, (out, err) in zip(writers + [reader], outs):
        assert p.returncode == 0, err[-2000:]
    saves = [int(o.split()[0]) for o, _ in outs[:2]]
    ok, bad = (int(v) for v in outs[2][0].split())
    assert min(saves) > 5 and ok > 5, (saves, ok)
    assert bad == 0, outs[2][1][-2000:]
    assert os.listdir(tmp_path) == ["shared.mq.npz"]


_LOOP_SAVER = r"""
import sys, minquant as mq
qm = mq.load(sys.argv[1])
print("ready", flush=True)
while True:
    qm.save(sys.argv[2])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_interrupt_during_saves_leaves_old_or_new_file_and_no_temporary(two_models, tmp_path):
    dst = tmp_path / "m.mq.npz"
    mq.load(two_models[1]).save(dst)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = np.random.default_rng(0)
    for trial in range(4):
        p = subprocess.Popen([sys.executable, "-c", _LOOP_SAVER, str(two_models[0]), str(dst)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.4)))
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
        assert mq.load(dst).graph.name in ("model_0", "model_1")
        assert os.listdir(tmp_path) == ["m.mq.npz"], os.listdir(tmp_path)


def _rewrite(path, change):
    """Rewrite the .npz at ``path`` with ``change(name, bytes) -> bytes`` applied to each member."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, b in members.items():
            z.writestr(n, change(n, b))
    path.write_bytes(buf.getvalue())


def test_an_edited_description_is_refused(two_models, tmp_path):
    dst = tmp_path / "m.mq.npz"
    dst.write_bytes(two_models[0].read_bytes())
    doc = json.loads(bytes(np.load(dst)["__model__"]).decode())
    ys = next(n["attrs"]["y_scale"] for n in doc["nodes"] if n["attrs"] and "y_scale" in n["attrs"])
    old = json.dumps(ys).encode()

    def edit(name, b):
        if name != "__model__.npy":
            return b
        i = b.index(old)
        digit = b[i + len(old) - 1:i + len(old)]
        return b[:i + len(old) - 1] + (b"3" if digit != b"3" else b"4") + b[i + len(old):]

    _rewrite(dst, edit)
    with pytest.raises(ValueError, match="description .* was modified"):
        mq.load(dst)


def test_an_edited_array_is_refused_naming_it(two_models, tmp_path):
    dst = tmp_path / "m.mq.npz"
    dst.write_bytes(two_models[0].read_bytes())
    target = next(n for n in np.load(dst).files if n.endswith(".bias"))

    def edit(name, b):
        return b[:-1] + bytes([b[-1] ^ 1]) if name == target + ".npy" else b

    _rewrite(dst, edit)
    with pytest.raises(ValueError, match=f"array '{target}' does not match its SHA-256"):
        mq.load(dst)
