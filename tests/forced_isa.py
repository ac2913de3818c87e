"""Run a framework oracle in a subprocess whose libraries are capped at AVX2 — the live check of the AVX2 code
paths on a host that has AVX-512/VNNI.

fbgemm, oneDNN and ATen read their ISA caps once, when torch loads (``FBGEMM_ENABLE_INSTRUCTIONS``,
``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``), so each variant needs its own process. torch's *choice*
of oneDNN under engine x86 reads the CPU (cpuinfo) and cannot be forced: on a VNNI host the forced process
still routes convolutions to oneDNN, now running oneDNN's AVX2 kernels. The :class:`~minquant.target.Cpu`
that describes such a process is ``forced_cpu()``: the host's features with the three caps.

``call(fn, *arrays, **kwargs)`` imports ``fn`` ("module:function", e.g. "minquant.frameworks.torch_oracle:qconv2d") in
the child, calls it with the arrays (NumPy, passed through a temporary .npz, ``allow_pickle=False``) and
JSON-able keyword arguments, and returns its NumPy result. ``engine=`` (optional) wraps the call in
``minquant.frameworks.torch_oracle.engine(...)``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from minquant.target import Cpu

ROOT = Path(__file__).resolve().parents[1]
FORCED_ENV = {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}

_CHILD = r"""
import importlib, json, sys
import numpy as np
args_path, out_path, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
mod, fn = spec["fn"].split(":")
f = getattr(importlib.import_module(mod), fn)
import contextlib
from minquant.frameworks.torch_oracle import engine
outs = {}
with np.load(args_path, allow_pickle=False) as z, (engine(spec["engine"]) if spec["engine"] else contextlib.nullcontext()):
    for c, call in enumerate(spec["calls"]):
        arrays = []
        for i, (scalar, none) in enumerate(zip(call["scalars"], call["nones"])):
            a = z[f"c{c}_a{i}"]
            arrays.append(None if none else (a[()] if scalar else a))
        outs[f"out{c}"] = np.asarray(f(*arrays, **call["kwargs"]))
import torch
np.savez(out_path, capability=np.array(torch.backends.cpu.get_cpu_capability()), **outs)
"""


def forced_cpu() -> Cpu:
    """The Cpu a FORCED_ENV process computes on: this host's features, every library capped at AVX2."""
    return Cpu.host(respect_environment=False).with_environment(FORCED_ENV)


def call_many(fn: str, calls, *, engine: str | None = None, env=None):
    """``[fn(*arrays, **kwargs) for arrays, kwargs in calls]`` in one child process with ``env`` (default
    FORCED_ENV) added to the environment; NumPy results. The child's ATen capability is checked to be the one
    asked for (a cap the child did not honour would make the test verify the wrong path)."""
    env = FORCED_ENV if env is None else env
    calls = list(calls)
    with tempfile.TemporaryDirectory() as d:
        a_path, o_path = os.path.join(d, "args.npz"), os.path.join(d, "out.npz")
        store, spec_calls = {}, []
        for c, (arrays, kwargs) in enumerate(calls):
            for i, a in enumerate(arrays):
                store[f"c{c}_a{i}"] = np.zeros(0) if a is None else np.asarray(a)
            spec_calls.append({"kwargs": kwargs, "scalars": [a is not None and np.ndim(a) == 0 for a in arrays],
                               "nones": [a is None for a in arrays]})
        np.savez(a_path, **store)
        spec = {"fn": fn, "engine": engine, "calls": spec_calls}
        child_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        r = subprocess.run([sys.executable, "-c", _CHILD, a_path, o_path, json.dumps(spec)], env=child_env,
                           capture_output=True, text=True, timeout=600, cwd=ROOT)
        if r.returncode != 0:
            raise RuntimeError(f"forced-ISA child failed ({fn}):\n{r.stderr[-3000:]}")
        with np.load(o_path, allow_pickle=False) as z:
            cap = str(z["capability"])
            want = env.get("ATEN_CPU_CAPABILITY")
            if want and cap.lower() != want.lower():
                raise RuntimeError(f"child ran with ATen capability {cap}, asked for {want}")
            return [z[f"out{c}"] for c in range(len(calls))]


def call(fn: str, *arrays, engine: str | None = None, env=None, **kwargs):
    """One call of :func:`call_many`."""
    return call_many(fn, [(arrays, kwargs)], engine=engine, env=env)[0]


#: LLVM's feature string of an AVX2-only CPU (Haswell: no AVX-512, no VNNI) — what Numba compiles for on Zen 3.
HASWELL = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+lzcnt,+movbe,+pclmul,+popcnt,+sse,+sse2,"
           "+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,-avx512f,-avx512bw,-avx512vl,-avx512dq,-avx512cd,-avx512vnni")


def run_compiled_for_haswell(code: str) -> dict:
    """Run ``code`` in a child process whose Numba compiles for Haswell (AVX2 only; a fresh cache) and return the
    JSON object its last output line prints; the child must report ``cpu == "haswell"``."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=HASWELL, NUMBA_CACHE_DIR=cache,
                   PYTHONPATH=str(ROOT))
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900,
                           cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["cpu"] == "haswell", out
    return out
