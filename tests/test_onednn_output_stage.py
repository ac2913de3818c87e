"""torch x86 → oneDNN convolutions: the float output stage, reproduced bit for bit per oneDNN kernel family.

oneDNN's output stage (docs/quantization.md step 7c, ``minquant.kernels.requantize._onednn_stage``) differs
between its kernels only in the *order of float32 multiplications*, which changes a code only when the exact
value lies within a few float32 ulps of a rounding tie — about 1 output in a million on ordinary data, so
small random tests (the doctor's 2 904 elements) cannot tell the variants apart. The cases here are built
to make ties frequent: high input codes and positive-mean weights make every accumulator large, and a bias
cancelling its mean leaves a small ``v = acc·s_x·s_w + b``, so the products' rounding errors are magnified
≈ 20× relative to v. Not saturated: < 1 % of codes at 0 or 255.

Paths verified:

* **live, host**: whatever oneDNN kernel this CPU runs (AMX brgemm for dense/grouped convs on an AMX host,
  the AVX512-VNNI kernels otherwise; depthwise always the non-AMX kernel);
* **live, capped**: on an AMX host, a subprocess with ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI`` runs the
  VNNI kernels — both orders verified live on one machine;
* **recorded**: ``tests/golden/onednn_ties.json`` holds, per recorded CPU, the SHA-256 of torch's output
  codes for every case (regenerated here from its seed), so an AVX2 or Zen 4 machine checks the AMX order
  and vice versa.

Each check also shows it can fail: the *other* order (``Cpu.amx`` flipped) mismatches the framework on the
dense and grouped cases.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from minquant.kernels.conv import qconv2d
from minquant.target import Cpu, Target

GOLDEN = Path(__file__).parent / "golden" / "onednn_ties.json"
VNNI_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}

#: conv kinds (the oneDNN kernel families torch's x86 engine reaches: groups ≤ 100, symmetric weights)
KINDS = {"dense 1x1": dict(c_in=64, c_out=64, k=1, groups=1),
         "dense 3x3": dict(c_in=32, c_out=64, k=3, groups=1),
         "grouped 3x3 g=4": dict(c_in=64, c_out=64, k=3, groups=4),
         "depthwise 3x3": dict(c_in=64, c_out=64, k=3, groups=64),
         "depthwise 3x3, channel multiplier 2": dict(c_in=64, c_out=128, k=3, groups=64)}
SEEDS = (0, 1, 2)


def tie_case(kind: str, seed: int, n: int = 4, hw: int = 28) -> dict:
    """qconv2d keyword arguments for one tie-rich case (module docstring), from ``seed`` alone."""
    p = KINDS[kind]
    rng = np.random.default_rng(seed)
    cg = p["c_in"] // p["groups"]
    x = rng.integers(100, 256, (n, p["c_in"], hw, hw)).astype(np.uint8)
    xs, xz = float(rng.uniform(0.01, 0.03)), int(rng.integers(0, 10))
    w = np.clip(np.rint(rng.normal(40, 30, (p["c_out"], cg, p["k"], p["k"]))), -127, 127).astype(np.int8)
    ws = rng.uniform(0.001, 0.004, p["c_out"])
    mean_acc = (float(x.mean()) - xz) * w.reshape(p["c_out"], -1).astype(np.float64).sum(1)
    bias = (-mean_acc * xs * ws + rng.normal(0, 0.05, p["c_out"])).astype(np.float32)
    ys = float(4 * np.sqrt(cg * p["k"] ** 2) * 45 * 45 * xs * ws.mean() / 127)
    return dict(x_q=x, x_scale=xs, x_zp=xz, w_q=w, w_scale=ws, w_zp=0, bias=bias, y_scale=ys, y_zp=128,
                padding=0, groups=p["groups"])


def _digest(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _inputs_digest(c) -> str:
    return _digest(np.concatenate([c["x_q"].ravel()[:4096].view(np.uint8), c["w_q"].ravel().view(np.uint8),
                                   c["bias"].view(np.uint8)]))


def torch_codes(c) -> np.ndarray:
    """torch.ops.quantized.conv2d under engine x86 (this process's oneDNN)."""
    from minquant.frameworks.torch_oracle import engine, qconv2d as torch_qconv2d
    with engine("x86"):
        return torch_qconv2d(c["x_q"], c["x_scale"], c["x_zp"], c["w_q"], c["w_scale"], c["w_zp"], c["bias"],
                             c["y_scale"], c["y_zp"], padding=c["padding"], groups=c["groups"])


def _flipped(cpu: Cpu) -> Cpu:
    """The same CPU with the other oneDNN kernel family (AMX ↔ AVX512-VNNI): the test's proof of power."""
    return dataclasses.replace(cpu, amx=not cpu.onednn_amx, onednn_isa=None, name=cpu.name + "/amx-flipped")


def _check(cpu: Cpu, outputs: dict) -> None:
    """``outputs[(kind, seed)]`` = torch's codes (or their SHA-256) on ``cpu``: minquant equal on every case,
    and the flipped order unequal on at least one dense / grouped case."""
    power = 0
    for (kind, seed), ref in outputs.items():
        c = tie_case(kind, seed)
        mine = qconv2d(**c, target=Target("x86", cpu))
        other = qconv2d(**c, target=Target("x86", _flipped(cpu)))
        if isinstance(ref, str):
            assert _digest(mine) == ref, f"{kind} seed {seed} on {cpu.name}: minquant's codes differ"
            power += _digest(other) != ref
        else:
            sat = float(((ref == 0) | (ref == 255)).mean())
            assert sat < 0.01, f"test data saturated ({sat:.1%})"
            assert np.array_equal(mine, ref), \
                f"{kind} seed {seed} on {cpu.name}: {int((mine != ref).sum())} of {ref.size} codes differ"
            power += int((other != ref).sum())
    assert power > 0, "the flipped order matched everywhere: these cases cannot tell the orders apart"


def _skip_unless_onednn(cpu: Cpu):
    if not cpu.torch_picks_onednn:
        pytest.skip(f"{cpu.describe()}: torch's x86 engine sends convolutions to fbgemm here (no AVX512-VNNI); "
                    "the oneDNN orders are checked against tests/golden/onednn_ties.json")


def test_host_onednn_output_stage_bit_exact():
    cpu = Cpu.host()
    _skip_unless_onednn(cpu)
    _check(cpu, {(k, s): torch_codes(tie_case(k, s)) for k in KINDS for s in SEEDS})


def _child_codes(env) -> dict:
    from forced_isa import call_many
    cases = [(k, s) for k in KINDS for s in SEEDS]
    calls = []
    for k, s in cases:
        c = tie_case(k, s)
        calls.append(((c["x_q"], c["x_scale"], c["x_zp"], c["w_q"], c["w_scale"], c["w_zp"], c["bias"],
                       c["y_scale"], c["y_zp"]), {"padding": c["padding"], "groups": c["groups"]}))
    outs = call_many("minquant.frameworks.torch_oracle:qconv2d", calls, engine="x86", env=env)
    return dict(zip(cases, outs))


def test_capped_vnni_onednn_output_stage_bit_exact():
    """On an AMX host: oneDNN capped at AVX512_CORE_VNNI in a subprocess runs the non-AMX kernels."""
    host = Cpu.host(respect_environment=False)
    _skip_unless_onednn(host)
    if not host.amx:
        pytest.skip(f"{host.describe()}: no AMX, so the host test above already runs the AVX512-VNNI kernels")
    _check(host.with_environment(VNNI_ENV), _child_codes(VNNI_ENV))


def _recordings():
    return json.loads(GOLDEN.read_text())["recordings"] if GOLDEN.exists() else []


@pytest.mark.parametrize("rec", _recordings(), ids=lambda r: r["name"])
def test_recorded_onednn_output_stage_bit_exact(rec):
    cpu = Cpu.from_dict(rec["cpu"])
    for r in rec["cases"]:
        assert _inputs_digest(tie_case(r["kind"], r["seed"])) == r["inputs_sha256"], \
            "the regenerated inputs differ from the recorded ones (NumPy's generator changed?)"
    _check(cpu, {(r["kind"], r["seed"]): r["codes_sha256"] for r in rec["cases"]})


def test_recordings_cover_both_orders():
    cpus = [Cpu.from_dict(r["cpu"]) for r in _recordings()]
    assert any(c.onednn_amx for c in cpus) and any(c.onednn_vnni and not c.onednn_amx for c in cpus)


def record(name: str, env: dict | None = None) -> dict:
    """A recording of this host (``env``: ISA caps for a subprocess), for tests/golden/onednn_ties.json
    (``./run python tests/test_onednn_output_stage.py`` adds this host's)."""
    cpu = Cpu.host(respect_environment=False)
    if env:
        cpu, outs = cpu.with_environment(env), _child_codes(env)
    else:
        outs = {(k, s): torch_codes(tie_case(k, s)) for k in KINDS for s in SEEDS}
    return {"name": name, "cpu": cpu.to_dict(),
            "cases": [{"kind": k, "seed": s, "inputs_sha256": _inputs_digest(tie_case(k, s)),
                       "codes_sha256": _digest(o)} for (k, s), o in outs.items()]}


def main():
    """Add this host's recordings (native, and capped at AVX512_CORE_VNNI on an AMX host) to the file."""
    from datetime import date

    from minquant.files import atomic_write
    host = Cpu.host(respect_environment=False)
    tag = f"{host.name}-{date.today().isoformat()}"
    recs = [r for r in _recordings() if not r["name"].startswith(tag)]
    recs.append(record(f"{tag}-native"))
    if host.amx:
        recs.append(record(f"{tag}-onednn-avx512-vnni", VNNI_ENV))
    data = {"about": "SHA-256 of torch x86 (oneDNN) conv output codes on tie-rich cases "
                     "(tests/test_onednn_output_stage.py::tie_case), per recorded CPU", "recordings": recs}
    with atomic_write(GOLDEN, "w") as f:
        f.write(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()


def test_amx_is_read_from_the_flags_and_capped_by_onednn_max_cpu_isa():
    base = {"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"}
    spr = Cpu.from_flags(base | {"amx_tile", "amx_int8", "avx_vnni"})
    assert spr.name == "avx512-vnni-amx" and spr.amx and spr.onednn_amx and spr.fbgemm_vnni
    assert not Cpu.from_flags(base).amx and not Cpu.from_flags(base | {"amx_tile"}).amx
    assert not spr.with_environment(VNNI_ENV).onednn_amx and spr.with_environment(VNNI_ENV).onednn_vnni
    assert spr.with_environment({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}).onednn_amx
    with pytest.raises(ValueError, match="amx needs avx512_vnni"):
        Cpu("bad", avx512=True, amx=True)
    with pytest.raises(ValueError, match="fbgemm_isa"):
        Cpu("bad", avx512=True, avx512_vnni=True, fbgemm_isa="avx512_amx")      # fbgemm has no AMX kernels
    # per layer: AMX for dense and grouped convolutions, the VNNI kernel's order for depthwise ones
    t = Target("x86", "avx512-vnni-amx")
    assert t.conv(groups=1, c_in=32, c_out=64, kernel=(3, 3)).multiplier == "onednn_amx"
    assert t.conv(groups=4, c_in=64, c_out=64, kernel=(3, 3)).multiplier == "onednn_amx"
    assert t.conv(groups=64, c_in=64, c_out=64, kernel=(3, 3)).multiplier == "onednn"
    assert t.conv(groups=64, c_in=64, c_out=128, kernel=(3, 3)).multiplier == "onednn_amx"
    assert Target("x86", "avx512-vnni").conv(groups=1, c_in=32, c_out=64).multiplier == "onednn"
