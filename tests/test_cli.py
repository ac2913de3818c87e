"""The ``minquant`` command line, run as a user runs it: ``minquant ...`` / ``python -m minquant ...`` in a folder.

Most behaviours run in-process through ``minquant.lesson.cli.main(argv)`` (the function the console script
calls: it returns the exit code; argparse's usage errors raise SystemExit(2)), with the working folder,
stdout and stderr redirected. Only what needs a real process runs in one: the ``python -m minquant`` module
entry, the installed ``minquant`` console script turning the returned code into the exit status, and a
real SIGINT arriving while a subcommand runs.

Success paths are checked against the same work done in-process (the saved model gives the outputs of
``quantize_static`` with the same arguments; the printed SQNR is ``compare``'s; the pruned weights are
``prune_magnitude``'s). Each bad input must exit 1 with one line ``minquant: error: ...`` on stderr, no
traceback and no output file; bad options exit 2. The quantized model is made once and shared.
"""
import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from minquant.lesson import cli

N_CALIB = 64
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
ENV = dict(os.environ, **{v: "1" for v in THREAD_VARS}, PYTHONWARNINGS="ignore")


def run(*args, cwd):
    """``minquant ARGS`` in-process in folder ``cwd``: (returncode, stdout, stderr) like a CompletedProcess.
    An exception escaping ``main`` fails the test (a user would have seen a traceback)."""
    out, err, old = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main([str(a) for a in args])
            except SystemExit as e:              # argparse: --help, --version, usage errors
                code = e.code
    finally:
        os.chdir(old)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def mq(*args, cwd, timeout=240, exe=(sys.executable, "-m", "minquant")):
    """Run ``python -m minquant ARGS`` (or ``exe ARGS``) in ``cwd`` as a real process (text output)."""
    return subprocess.run([*exe, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def assert_fails(r, code=1, *, mentions=(), no_files=(), folder=None, before=None):
    """Exit ``code``, one ``minquant: error:`` line on stderr (no traceback), no output left behind."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    if code == 1:
        assert len(lines) == 1, r.stderr
    assert lines[-1].startswith(("minquant: error:", "minquant quantize: error:", "minquant prune: error:")), r.stderr
    for word in mentions:
        assert word.lower() in lines[-1].lower(), (word, lines[-1])
    for f in no_files:
        assert not os.path.exists(f), f
    if folder is not None:
        assert sorted(os.listdir(folder)) == sorted(before), (os.listdir(folder), before)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def in_process():
    import torch
    torch.set_num_threads(1)
    from minquant.data.zoo import tiny_cnn_digits
    model, data = tiny_cnn_digits()
    return model, data


@pytest.fixture(scope="module")
def quantized(work, in_process):
    """`minquant quantize tinycnn --calib digits` once for the module: (path, result)."""
    r = run("quantize", "tinycnn", "--calib", "digits", "--num-calib", N_CALIB, "--out", "tiny.mq.npz", cwd=work)
    assert r.returncode == 0, r.stderr
    return work / "tiny.mq.npz", r


# ------------------------------------------------------------------------------------------------------
# real processes: the entry points, the exit status, SIGINT
# ------------------------------------------------------------------------------------------------------
def test_python_m_minquant_runs_a_command_and_exits_with_its_code(quantized):
    """`python -m minquant` runs main and exits 0 on success, 2 on a usage error."""
    import minquant as mq_
    path, _ = quantized
    r = mq("inspect", path.name, cwd=path.parent)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert mq_.load(path).summary() in r.stdout
    r = mq("frobnicate", cwd=path.parent)
    assert_fails(r, 2, mentions=["frobnicate"])


def test_console_script_exits_1_with_one_line(work):
    """The installed `minquant` script (pyproject [project.scripts]) exits with main's return code."""
    exe = Path(sys.executable).with_name("minquant")
    assert exe.exists(), exe
    before = os.listdir(work)
    r = mq("inspect", "no_such_model.npz", cwd=work, exe=(str(exe),))
    assert_fails(r, mentions=["no_such_model.npz", "no such file"], folder=work, before=before)


def test_sigint_exits_130_without_traceback(work):
    """Ctrl-C while a subcommand runs (a real SIGINT to the process): one line, exit 130, no traceback."""
    code = textwrap.dedent("""
        import os, signal, sys, time
        from minquant.lesson import cli
        def busy(args):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(60)
            return 0
        cli.cmd_inspect = busy
        sys.exit(cli.main(["inspect", "anything.npz"]))
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=work, env=ENV, capture_output=True, text=True, timeout=50)
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr.strip() == "minquant: interrupted" and r.stdout == ""


# ------------------------------------------------------------------------------------------------------
# success paths
# ------------------------------------------------------------------------------------------------------
def test_quantize_matches_in_process_quantize_static(quantized, in_process):
    import minquant as mq_
    path, r = quantized
    model, (x_tr, _, x_te, _) = in_process
    assert "3.88× smaller" in r.stdout and f"{N_CALIB} calibration samples" in r.stdout, r.stdout
    loaded = mq_.load(path)
    want = mq_.quantize_static(model, x_tr[:N_CALIB], progress=False)
    x = x_te[:100]
    got, ref = loaded(x), want(x)
    assert np.array_equal(got, ref)                       # bit for bit: same codes, same dequantization
    assert loaded.meta["calibration_samples"] == N_CALIB and loaded.meta["calibrator"] == "percentile"
    assert loaded.size_bytes() == want.size_bytes()
    assert not [f for f in os.listdir(path.parent) if "partial" in f]


def test_inspect_prints_the_summary(quantized):
    import minquant as mq_
    path, _ = quantized
    r = run("inspect", path.name, cwd=path.parent)
    assert r.returncode == 0, r.stderr
    summary = mq_.load(path).summary()
    assert summary in r.stdout
    assert "qconv2d" in r.stdout and "calibrator=percentile" in r.stdout


def test_compare_prints_compare_sqnr_worst_first(quantized, in_process):
    from minquant.quantized import compare, load
    path, _ = quantized
    model, (_, _, x_te, _) = in_process
    r = run("compare", path.name, "--float", "tinycnn", "--data", "digits", "--num", 32, cwd=path.parent)
    assert r.returncode == 0, r.stderr
    want = compare(model, load(path), x_te[:32])
    assert f"output {want.output_sqnr_db:.2f} dB" in r.stdout, r.stdout
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.strip()[:1].isdigit() and ln.split()[0].isdigit()]
    got_db = [float(row[-1]) for row in rows]
    assert got_db == sorted(got_db) and len(got_db) == len(want.layers)      # worst first
    assert rows[0][1] == want.layers[0].name


def test_prune_writes_the_magnitude_pruned_state(work, in_process):
    import copy

    from minquant.prune import prune_magnitude
    model, _ = in_process
    r = run("prune", "tinycnn", "--amount", 0.5, "--out", "pruned.npz", cwd=work)
    assert r.returncode == 0, r.stderr
    ref = copy.deepcopy(model)
    prune_magnitude(ref, 0.5)
    with np.load(work / "pruned.npz", allow_pickle=False) as f:
        got = {k: f[k] for k in f.files}
    want = {k: v.numpy() for k, v in ref.state_dict().items()}
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    total = sum(v.size for v in want.values())
    nonzero = sum(int((v != 0).sum()) for v in want.values())
    assert f"non-zero: {total:,} → {nonzero:,}" in r.stdout, r.stdout
    weights = sum(v.size for k, v in want.items() if k.endswith("weight"))
    assert total - nonzero == pytest.approx(weights / 2, abs=1)         # half of the conv/linear weights


@pytest.fixture
def thread_settings_restored():
    """`bench` sets one thread for torch, Numba, the BLAS and the environment: put them back afterwards."""
    import numba
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits
    env = {v: os.environ.get(v) for v in THREAD_VARS}
    torch_n, numba_n = torch.get_num_threads(), numba.get_num_threads()
    blas = {lib["prefix"]: lib["num_threads"] for lib in threadpool_info()}
    yield
    for v, val in env.items():
        if val is None:
            os.environ.pop(v, None)
        else:
            os.environ[v] = val
    torch.set_num_threads(torch_n)
    numba.set_num_threads(numba_n)
    threadpool_limits(blas)


def test_bench_quick_prints_three_runtimes(work, thread_settings_restored):
    """The smallest bench (--quick, batch 1, TinyCNN) in-process: one row per runtime, in this order."""
    r = run("bench", "tinycnn", "--quick", "--batch", 1, cwd=work)
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.strip().startswith("tinycnn")]
    labels = [" ".join(row[2:-4]) for row in rows]
    assert labels == ["torch fp32", "torch int8 (x86)", "minquant int8"], r.stdout
    for row in rows:
        ms = float(row[-4])
        assert 0 < ms < 10_000 and row[-1].endswith("%")


def test_help_teaches_with_examples(work):
    r = run("--help", cwd=work)
    assert r.returncode == 0 and "docs/" in r.stdout and r.stdout.startswith("usage: minquant")
    from minquant.lesson.cli import build_parser
    ap = build_parser()
    sub = next(a for a in ap._actions if a.dest == "command")
    assert set(sub.choices) == {"demo", "quantize", "inspect", "compare", "prune", "bench", "doctor"}
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "Example:" in text and f"minquant {name}" in text and "docs/" in text, name


# ------------------------------------------------------------------------------------------------------
# bad input: exit 1, one line, nothing written
# ------------------------------------------------------------------------------------------------------
def test_missing_model_path(work):
    before = os.listdir(work)
    r = run("quantize", "no_such_model.pt", "--calib", "digits", "--out", "x.npz", cwd=work)
    assert_fails(r, mentions=["no_such_model.pt", "no such file"], folder=work, before=before)


def test_corrupt_files(work, quantized):
    path, _ = quantized
    raw = path.read_bytes()
    (work / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    before = os.listdir(work)
    assert_fails(run("inspect", "truncated.npz", cwd=work), mentions=["truncated.npz", "corrupt"])
    r = run("quantize", "truncated.npz", "--arch", "tinycnn", "--calib", "digits", "--out", "x.npz", cwd=work)
    assert_fails(r, mentions=["truncated.npz"], folder=work, before=before)
    r = run("compare", "truncated.npz", "--float", "tinycnn", cwd=work)
    assert_fails(r, mentions=["truncated.npz"], folder=work, before=before)


@pytest.fixture(scope="module")
def torch_files(work, in_process):
    """TorchScript files of the trained TinyCNN and of a TinyCNN with a GELU; a state dict missing a key."""
    import torch
    import torch.nn as nn

    from minquant.data.zoo import TinyCNN
    model, _ = in_process
    torch.jit.trace(model, torch.zeros(1, 1, 28, 28)).save(str(work / "tiny.ts"))
    m = TinyCNN().eval()
    m.features[1] = nn.GELU()                      # minquant has no GELU
    torch.jit.trace(m, torch.zeros(1, 1, 28, 28)).save(str(work / "gelu.ts"))
    state = TinyCNN().state_dict()
    del state["classifier.bias"]
    torch.save(state, work / "partial.pt")


def test_quantize_torchscript_file(work, torch_files, in_process):
    """A TorchScript file without --arch goes TorchScript → ONNX → minquant Graph; the input size comes from
    the calibration data. Same arithmetic as quantizing the torch model itself."""
    import minquant as mq_
    model, (x_tr, _, x_te, _) = in_process
    r = run("quantize", "tiny.ts", "--calib", "digits", "--num-calib", 16, "--out", "ts.mq.npz", cwd=work)
    assert r.returncode == 0, r.stderr
    want = mq_.quantize_static(model, x_tr[:16], progress=False)
    got = mq_.load(work / "ts.mq.npz")
    # the ONNX file pools with AveragePool (float32 sums over the taps), the torch model with an adaptive pool
    # (float64 sums): calibration sees the same values up to the last float32 bits, so the output scales may
    # differ in the 7th digit — the integer codes must not
    (sa, za), (sb, zb) = ((m.graph.nodes[-1].attrs.scale, m.graph.nodes[-1].attrs.zero_point) for m in (got, want))
    assert za == zb and abs(sa / sb - 1) < 1e-6, (sa, sb, za, zb)
    codes = [np.rint(m(x_te[:100]) / s) for m, s in ((got, sa), (want, sb))]
    assert np.array_equal(*codes) and np.ptp(codes[0]) > 50        # every code equal, not a saturated output


def test_unsupported_layer_and_mismatched_checkpoint(work, torch_files):
    before = os.listdir(work)
    r = run("quantize", "gelu.ts", "--calib", "digits", "--out", "x.npz", cwd=work)
    assert_fails(r, mentions=["unsupported layer GELU", "features.1"], folder=work, before=before)
    r = run("quantize", "partial.pt", "--arch", "tinycnn", "--calib", "digits", "--out", "x.npz", cwd=work)
    assert_fails(r, mentions=["partial.pt", "classifier.bias"], folder=work, before=before)
    r = run("quantize", "partial.pt", "--calib", "digits", "--out", "x.npz", cwd=work)       # weights only
    assert_fails(r, 2, mentions=["--arch"], folder=work, before=before)


def test_empty_calibration_folder(work):
    (work / "empty").mkdir()
    (work / "empty" / "notes.txt").write_text("not an image")
    before = os.listdir(work)
    r = run("quantize", "tinycnn", "--calib", "empty", "--out", "x.npz", cwd=work)
    assert_fails(r, mentions=["empty", "set of inputs is empty"], folder=work, before=before)


def test_nan_in_calibration_npy(work):
    (work / "nan").mkdir()
    good = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    bad = good.copy()
    bad[3, 0, 5, 5] = np.nan
    np.save(work / "nan" / "a.npy", good)
    np.save(work / "nan" / "b.npy", bad)
    before = os.listdir(work)
    r = run("quantize", "tinycnn", "--calib", "nan", "--out", "x.npz", cwd=work)
    assert_fails(r, mentions=["b.npy", "NaN"], folder=work, before=before)


def test_bad_arguments_exit_2(work):
    before = os.listdir(work)
    r = run("quantize", "tinycnn", "--calib", "digits", cwd=work)                      # no --out
    assert_fails(r, 2, mentions=["--out"], folder=work, before=before)
    r = run("prune", "tinycnn", "--amount", 1.5, "--out", "x.npz", cwd=work)
    assert_fails(r, 2, mentions=["(0, 1)"], folder=work, before=before)
    r = run("quantize", "tinycnn", "--calib", "digits", "--out", "x.npz", "--calibrator", "magic", cwd=work)
    assert_fails(r, 2, mentions=["calibrator"], folder=work, before=before)
    r = run("frobnicate", cwd=work)
    assert_fails(r, 2, folder=work, before=before)
