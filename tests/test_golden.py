"""Replay the golden recordings (tests/golden/README.md): for every recording × family, minquant's kernels under
``Target(<engine or 'onnxruntime'>, cpu_of_recording)`` must return exactly what the framework returned on
the recording's CPU — 0 mismatching output elements.

Integer outputs (codes, int32 accumulators, qparams) compare by value. Float outputs compare by their bits
too: dynamic_linear (torch's ``linear_dynamic``), MatMulNBits, DequantizeLinear, the scale of
DynamicQuantizeLinear and MobileNetV2's logits (dequantized codes) all are bit-exact, so no ULP tolerance is
granted anywhere.

A family that still fails because its kernel is being fixed is listed in :data:`KNOWN_FAILURES` with the
mismatch count measured; it runs as ``xfail(strict=True)``, so the test turns red (XPASS) the moment the
fix lands — then delete its entry.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from minquant.lesson import golden

RECORDINGS = Path(__file__).resolve().parent / "golden" / "recordings"

#: (recording folder, family) → why it fails today and how badly (measured; remove when fixed)
KNOWN_FAILURES = {
    ("avx512-vnni-forced-avx2", "conv2d"):
        "oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA=AVX2) is not emulated: the 32 engine-x86 cases torch routes to "
        "oneDNN (symmetric weights, groups <= 100) raise ValueError in Target.conv; before that refusal they gave "
        "17875 mismatching codes in 22 of the 32 (up to 40 LSB). The 88 fbgemm/qnnpack/x86->fbgemm cases match",
    ("zen4-avx512-vnni-forced-avx2-2026-12-04", "conv2d"):
        "same inputs and outputs as avx512-vnni-forced-avx2 (byte-identical conv2d.npz): 32 x86 cases routed to "
        "oneDNN/AVX2 raise ValueError (earlier: 17875 mismatching codes in 22 of them)",
    ("spr-avx512-vnni-amx-forced-avx2-2026-12-06", "conv2d"):
        "same inputs and outputs again (byte-identical conv2d.npz, recorded on an Intel Xeon with AMX): oneDNN "
        "capped at AVX2 computes the same on Intel as on AMD; its 32 x86 cases raise ValueError",
}

# the packages each family's replay needs beyond NumPy (skipped when missing)
NEEDS = {"ort_nodes": ("onnx",), "mobilenet_v2_x86": ("torch", "torchvision")}


def _cases():
    out = []
    for manifest_path in sorted(RECORDINGS.glob("*/manifest.json")):
        folder = manifest_path.parent
        manifest = golden.load_manifest(folder)
        for family in golden.families_of(manifest):
            reason = KNOWN_FAILURES.get((folder.name, family))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(folder, family, id=f"{folder.name}-{family}", marks=marks))
    return out


CASES = _cases()


def test_recordings_present():
    assert CASES, f"no recordings under {RECORDINGS}"
    assert {k for k in KNOWN_FAILURES} <= {(p.values[0].name, p.values[1]) for p in CASES}, \
        "KNOWN_FAILURES names a recording or family that does not exist"


@pytest.mark.parametrize("folder, family", CASES)
def test_golden(folder, family):
    for mod in NEEDS.get(family, ()):
        pytest.importorskip(mod)
    result = golden.replay_family(folder, family)
    assert result["cases"] > 0
    assert not result["errors"], f"{family}: cases raised: {result['errors'][:5]}"
    failing = ", ".join(f"case {i} ({label}): {n}" for i, n, label in result["failing"][:12])
    assert result["mismatches"] == 0, \
        f"{family} on {folder.name}: {result['mismatches']} mismatching elements in {len(result['failing'])} " \
        f"of {result['cases']} cases — {failing}"


@pytest.mark.parametrize("folder", sorted({p.values[0] for p in CASES}), ids=lambda p: p.name)
def test_recording_cpu(folder):
    """The manifest's flags and ISA variables give the Cpu the recording was made on: a forced-AVX2 variant
    has every library capped at AVX2, a native one none."""
    manifest = golden.load_manifest(folder)
    cpu = golden.cpu_of(manifest)
    caps = (cpu.fbgemm_isa, cpu.onednn_isa, cpu.aten_isa)
    if "forced-avx2" in folder.name:
        assert caps == ("avx2", "avx2", "avx2") and cpu.aten_vector_bits == 256
    else:
        assert caps == (None, None, None)


def test_module_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None; import minquant.lesson.golden"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_count_mismatches_compares_float_bits():
    import numpy as np
    a = np.array([0.0, 1.0, np.nan], np.float32)
    assert golden.count_mismatches(a, a.copy()) == 0
    assert golden.count_mismatches(a, np.array([-0.0, 1.0, np.nan], np.float32)) == 1
    assert golden.count_mismatches(a, np.nextafter(a, np.float32(2))) == 2   # NaN stays the same NaN
    assert golden.count_mismatches(np.zeros(3, np.uint8), np.zeros(4, np.uint8)) == 3
