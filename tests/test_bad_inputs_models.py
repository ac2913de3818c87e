"""Bad models and bad whole-model arguments get an error naming the cause in the user's terms — a catalogue
held as data, like tests/test_bad_inputs.py (which covers the quantization math).

Each case: (id, callable, expected exception class, a phrase the message must contain). Every case here
was accepted silently, or failed with an error hiding its cause (torch.fx's ``ShapeProp error for: node=...``
with the real cause printed to stderr as a torch traceback, a temporary file's name, a Python internal),
before its fix. Cases that run the model must also print nothing. Plus the command line: bad ``--out`` /
``--input-shape`` and a Ctrl-C early in the process.
"""
import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import minquant as mq
from minquant.data.zoo import TinyCNN
from minquant.lesson import cli
from minquant.prune import prune_channels, prune_magnitude

F32 = np.float32
X1 = np.random.default_rng(0).random((8, 1, 28, 28), dtype=F32)      # what TinyCNN takes
X3 = np.random.default_rng(1).random((8, 3, 28, 28), dtype=F32)      # three channels: wrong


def tiny():
    torch.manual_seed(0)
    return TinyCNN().eval()


def static(model, data, **kw):
    return lambda: mq.quantize_static(model() if callable(model) else model, data, progress=False, **kw)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, a, b):
        return self.fc(a) + b


def nan_weight():
    m = tiny()
    with torch.no_grad():
        m.features[0].weight[0, 0, 0, 0] = float("nan")
    return m


def fx_quantized():
    """TinyCNN quantized in FX graph mode (prepare_fx / convert_fx): quantize calls in the graph."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    prepared = prepare_fx(tiny(), get_default_qconfig_mapping("x86"), (torch.zeros(1, 1, 28, 28),))
    prepared(torch.from_numpy(X1))
    return convert_fx(prepared)


def dynamic_qm():
    return mq.quantize_dynamic(tiny(), input_shape=(1, 1, 28, 28))


CASES = [
    # --- a model that does not run on the calibration shape: the model's own error, nothing printed ------
    ("quantize_static 3-channel data for a 1-channel model", static(tiny, X3), ValueError,
     "expected input[2, 3, 28, 28] to have 1 channels, but got 3"),
    ("quantize_static data without the channel dimension", static(tiny, X1[:, 0]), ValueError,
     "is a dimension missing"),
    ("from_torch example shape without batch", lambda: mq.from_torch(tiny(), (1, 28, 28)), ValueError,
     "Conv2d takes 4-D input (N, C, H, W), got 3-D"),
    ("quantize_static two-input model", static(lambda: TwoInputs().eval(), np.zeros((4, 4), F32)), ValueError,
     "forward takes 2 inputs (a, b)"),
    ("quantize_static .half() model", static(lambda: tiny().half(), X1), ValueError,
     "torch.float16 (e.g. 'features.0.weight'); minquant imports float32 models only: call model.float()"),
    ("from_torch .double() model", lambda: mq.from_torch(tiny().double(), (1, 1, 28, 28)), ValueError,
     "torch.float64"),
    ("prune_channels example of the wrong shape", lambda: prune_channels(tiny(), torch.zeros(1, 3, 28, 28), 0.5),
     ValueError, "example_input of shape (1, 3, 28, 28) does not run through TinyCNN: RuntimeError: Given groups=1"),
    # --- NaN weights are the model's, not the calibration data's -----------------------------------------
    ("quantize_static NaN weight", static(nan_weight, X1), ValueError,
     "module 'features.0' (Conv2d): weight has 1 NaN and 0 infinite value(s): the model's own parameters"),
    # --- arguments -----------------------------------------------------------------------------------------
    ("QuantizedModel(x.tolist())", lambda: dynamic_qm()(X1.tolist()), ValueError,
     "takes a NumPy array (N, ...) per input, got a nested Python list"),
    ("quantize_dynamic('not a model', input_shape=)",
     lambda: mq.quantize_dynamic("not a model", input_shape=(1, 1, 28, 28)), ValueError,
     "quantize_dynamic needs a torch nn.Module or a minquant Graph, got str"),
    ("quantize_dynamic per_channel='no'", lambda: mq.quantize_dynamic(tiny(), per_channel="no",
                                                                      input_shape=(1, 1, 28, 28)),
     TypeError, "per_channel must be True or False, got 'no'"),
    ("quantize_static per_channel='no'", static(tiny, X1, per_channel="no"), TypeError,
     "per_channel must be True or False"),
    ("quantize_static batch_size=0", static(tiny, X1, batch_size=0), ValueError,
     "batch_size must be at least 1, got 0"),
    ("quantize_static batch_size=-5", static(tiny, X1, batch_size=-5), ValueError,
     "batch_size must be at least 1, got -5"),
    ("quantize_static batch_size=2.5", static(tiny, X1, batch_size=2.5), TypeError,
     "batch_size must be a whole number of samples, got 2.5"),
    ("prune_magnitude('x', .5)", lambda: prune_magnitude("x", .5), ValueError,
     "prune_magnitude needs a torch nn.Module, got str"),
    ("prune_channels('x', ...)", lambda: prune_channels("x", (1, 1, 28, 28), .5), ValueError,
     "prune_channels needs a torch nn.Module, got str"),
    ("load(None)", lambda: mq.load(None), TypeError, "load needs the path (str or os.PathLike)"),
    # --- from_torch_quantized: what it cannot import, said as such -----------------------------------------
    ("from_torch_quantized(FX-converted model)", lambda: mq.from_torch_quantized(fx_quantized(), (1, 1, 28, 28)),
     ValueError, "quantized with torch.fx graph mode or pt2e (convert_fx / convert_pt2e): not supported yet"),
    ("from_torch_quantized(FX-converted model), no shape", lambda: mq.from_torch_quantized(fx_quantized()),
     ValueError, "not supported yet"),
    ("from_torch(FX-converted model)", lambda: mq.from_torch(fx_quantized(), (1, 1, 28, 28)), ValueError,
     "from_torch imports float models"),
    ("from_torch_quantized(float model)", lambda: mq.from_torch_quantized(tiny(), (1, 1, 28, 28)), ValueError,
     "TinyCNN has no quantized modules; quantize it first"),
    ("from_torch_quantized(float model), no shape", lambda: mq.from_torch_quantized(tiny()), ValueError,
     "has no quantized modules"),
]


@pytest.mark.parametrize("name,call,exc,phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_model_input_is_refused_clearly(name, call, exc, phrase, capfd):
    with pytest.raises(exc) as info:
        call()
    assert phrase.lower() in str(info.value).lower(), f"{name}: message {str(info.value)!r} lacks {phrase!r}"
    assert "ShapeProp" not in str(info.value)
    out, err = capfd.readouterr()
    assert out == "" and err == "", f"{name}: printed {out + err!r}"


def test_the_good_inputs_next_to_the_cases_still_work():
    """The checks refuse only what they should: the same calls with good arguments succeed."""
    qm = dynamic_qm()
    assert qm(X1).shape == (8, 10)
    assert mq.from_torch(tiny(), (1, 1, 28, 28)).inputs
    assert prune_channels(tiny(), torch.zeros(1, 1, 28, 28), 0.5) is not None
    assert mq.quantize_dynamic(tiny(), per_channel=False, input_shape=(1, 1, 28, 28)).meta["per_channel"] is False
    assert static(tiny, X1, per_channel=np.bool_(False))().meta["per_channel"] is False


def test_a_torch_tensor_is_calibration_data_like_an_array():
    """A whole torch tensor (N, C, H, W) is split into batches as its NumPy array is — not iterated sample
    by sample (which dropped the batch dimension): the same model, bit for bit."""
    a = static(tiny, X1, batch_size=3)()
    t = static(tiny, torch.from_numpy(X1), batch_size=3)()
    assert a.meta["calibration_samples"] == t.meta["calibration_samples"] == len(X1)
    np.testing.assert_array_equal(a(X1), t(X1))


# ------------------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------------------
def run_cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.skipif(sys.platform != "linux", reason="needs Linux's /proc (a folder in which no file can be created)")
@pytest.mark.parametrize("command", [["quantize", "tinycnn", "--calib", "digits"], ["prune", "tinycnn", "--amount", "0.5"]])
def test_cli_out_where_no_file_can_be_created_names_the_out_file(command):
    code, out, err = run_cli(*command, "--out", "/proc/x.npz")
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minquant: error: cannot write /proc/x.npz"), err
    assert ".tmp" not in err and "Traceback" not in err


def test_cli_input_shape_that_does_not_fit_the_builtin_is_refused(tmp_path):
    code, out, err = run_cli("quantize", "tinycnn", "--calib", "digits", "--input-shape", "3,28,28",
                             "--out", tmp_path / "t.npz")
    assert code == 2, err
    assert "--input-shape 3,28,28 does not fit tinycnn: it takes 1 input channel(s)" in err, err
    assert not (tmp_path / "t.npz").exists()


def test_cli_input_shape_is_used_for_the_builtin(tmp_path):
    """A size the model can take is used (here refused by the digits data, which are 28×28: proof it was read)."""
    code, out, err = run_cli("quantize", "tinycnn", "--calib", "digits", "--input-shape", "1,32,32",
                             "--out", tmp_path / "t.npz")
    assert code == 2 and "digits are 1×28×28 images but the model takes 1×32×32" in err, err


ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def _interrupt(cmd, delay, *, wait_for=None, cwd):
    p = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if wait_for is not None:
            assert p.stdout.readline().strip() == wait_for
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, err


def test_sigint_once_the_cli_runs_exits_130_with_one_line(tmp_path):
    """Ctrl-C anywhere after main() starts — loading the quantized layer, torch, the model, the data,
    calibrating: one line, exit 130, no traceback, no output file."""
    code = textwrap.dedent(f"""
        import sys
        from minquant.lesson.cli import main      # `import minquant` alone loads nothing heavy
        print("ready", flush=True)
        sys.exit(main(["quantize", "tinycnn", "--calib", "digits", "--out", {str(tmp_path / 'x.npz')!r}]))
    """)
    for delay in (0.05, 0.3, 1.0):
        rc, err = _interrupt([sys.executable, "-c", code], delay, wait_for="ready", cwd=tmp_path)
        assert rc == 130, (delay, rc, err)
        assert err.strip() == "minquant: interrupted", (delay, err)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("delay", [0.1, 0.3])
def test_sigint_early_in_the_console_script(tmp_path, delay):
    """The console script (minquant.lesson.console) takes Ctrl-C before NumPy, Numba or torch load:
    `import minquant` is lazy, and the entry point installs a one-line handler first."""
    exe = Path(sys.executable).with_name("minquant")
    rc, err = _interrupt([str(exe), "quantize", "tinycnn", "--calib", "digits", "--out", str(tmp_path / "x.npz")],
                         delay, cwd=tmp_path)
    assert rc == 130, (rc, err)
    assert len(err.strip().splitlines()) <= 2, err


def test_a_swallowed_interrupt_still_publishes_no_file(tmp_path):
    """Ctrl-C's SystemExit can be swallowed by a library's bare ``except:`` (seen inside an import): the flag the
    handler sets still stops the output file from appearing."""
    from minquant.lesson.cli_models import INTERRUPTED, atomic_output
    out = tmp_path / "x.npz"
    with atomic_output(out) as tmp:              # not interrupted: the file appears
        Path(tmp).write_bytes(b"ok")
    assert out.read_bytes() == b"ok"
    out.unlink()
    INTERRUPTED.set()
    try:
        with pytest.raises(SystemExit) as e:
            with atomic_output(out) as tmp:
                Path(tmp).write_bytes(b"late")
        assert e.value.code == 130 and os.listdir(tmp_path) == []
    finally:
        INTERRUPTED.clear()
