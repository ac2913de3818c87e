"""The target (framework × CPU): presets, torch's and fbgemm's per-layer routing rules, the saved form, and a
model saved for one CPU computing that CPU's codes on any host (checked live against torch capped at AVX2)."""
import dataclasses
import json

import numpy as np
import pytest

import minquant as mq
from minquant.target import CPUS, Arithmetic, Cpu, Target, as_target, fbgemm_conv_path, quantize_rule_of

import forced_isa


def test_public_names_resolve():
    assert all(hasattr(mq, n) for n in mq.__all__)
    assert {"Target", "Cpu", "quantize_static", "quantize_dynamic", "from_torch_quantized", "load"} <= set(mq.__all__)


def test_host_cpu_is_read_at_call_time_and_honours_the_environment(monkeypatch):
    monkeypatch.setenv("FBGEMM_ENABLE_INSTRUCTIONS", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    c = Cpu.host()
    assert c.fbgemm_isa == "avx2" and c.aten_isa == "avx2" and not c.fbgemm_vnni and c.aten_vector_bits == 256
    monkeypatch.delenv("FBGEMM_ENABLE_INSTRUCTIONS")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    assert Cpu.host().fbgemm_isa is None


def test_cpu_from_flags():
    zen4 = Cpu.from_flags({"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"})
    assert zen4.avx512 and zen4.avx512_vnni and zen4.torch_picks_onednn and zen4.name == "avx512-vnni"
    zen3 = Cpu.from_flags({"avx2", "fma"})
    assert not zen3.avx512 and not zen3.mlas_vnni and zen3.aten_vector_bits == 256
    alder = Cpu.from_flags({"avx2", "avx_vnni"})
    assert alder.mlas_vnni and not alder.fbgemm_vnni and not alder.torch_picks_onednn
    knl = Cpu.from_flags({"avx2", "avx512f"})            # AVX-512 F without BW/VL/DQ: ATen stays at AVX2
    assert not knl.avx512 and knl.aten_vector_bits == 256
    with pytest.raises(ValueError, match="avx512_vnni needs avx512"):
        Cpu("bad", avx512_vnni=True)


@pytest.mark.parametrize("spec,want", [("x86", "x86"), ("x86@avx2", "x86@avx2"), (Target("qnnpack", "avx2"), "qnnpack@avx2")])
def test_as_target(spec, want):
    t = as_target(spec)
    assert str(t).startswith(want)


@pytest.mark.parametrize("bad", ["tensorrt", "x86@pentium", 3])
def test_bad_targets_name_the_problem(bad):
    with pytest.raises((ValueError, TypeError), match="target|CPU|framework"):
        as_target(bad)


def test_x86_routes_convolutions_by_torchs_rule():
    vnni, avx2 = Target("x86", "avx512-vnni"), Target("x86", "avx2")
    dense = dict(groups=1, c_in=16, c_out=32, kernel=(3, 3), padding=(1, 1))
    assert vnni.conv(**dense).name == "onednn" and not vnni.conv(**dense).saturate_pairs
    assert avx2.conv(**dense).name == "fbgemm" and avx2.conv(**dense).saturate_pairs
    assert vnni.conv(**dense, symmetric_weights=False).name == "fbgemm"        # a weight zero point ≠ 0
    assert vnni.conv(groups=128, c_in=128, c_out=128, kernel=(3, 3), padding=(1, 1)).name == "fbgemm"  # groups > 100
    assert vnni.conv(groups=96, c_in=96, c_out=96, kernel=(3, 3), padding=(1, 1)).name == "onednn"
    assert vnni.linear().name == "fbgemm"                                      # every quantized linear: fbgemm
    assert Target("x86", dataclasses.replace(CPUS["avx512-vnni"], linux=False)).conv(**dense).name == "fbgemm"
    with pytest.raises(ValueError, match="capped below AVX512-VNNI"):
        Target("x86", "avx512-vnni/forced-avx2").conv(**dense)


def test_fbgemm_kernel_choice():
    vnni = CPUS["avx512-vnni"]
    dw = dict(groups=32, c_in=32, c_out=32, kernel=3, stride=1, padding=1, dilation=1)
    assert fbgemm_conv_path(vnni, **dw) == "depthwise"
    assert fbgemm_conv_path(vnni, **{**dw, "padding": 0}) == "im2col"          # not "same" padding
    assert fbgemm_conv_path(vnni, **{**dw, "groups": 12, "c_in": 12, "c_out": 12}) == "im2col"   # 12 % 8 ≠ 0
    assert fbgemm_conv_path(vnni, **{**dw, "c_out": 64}) == "depthwise"       # channel multiplier 2
    assert fbgemm_conv_path(vnni, groups=32, c_in=128, c_out=128, kernel=3, stride=1, padding=1,
                            dilation=1) == "groupwise"
    assert fbgemm_conv_path(vnni, groups=1, c_in=8, c_out=8, kernel=1, stride=1, padding=0, dilation=1) == "pointwise"
    # the depthwise kernel saturates tap pairs on every CPU; the GEMM only without VNNI
    for name in ("avx2", "avx512", "avx512-vnni"):
        t = Target("fbgemm", name)
        assert t.conv(groups=32, c_in=32, c_out=32, kernel=(3, 3), padding=(1, 1)).saturate_pairs
        assert t.conv(groups=1, c_in=8, c_out=8).saturate_pairs == (name != "avx512-vnni")
    # the groupwise kernel reads the real CPU: a VNNI host capped at AVX2 keeps it exact
    capped = Target("fbgemm", "avx512-vnni/forced-avx2")
    assert not capped.conv(groups=32, c_in=128, c_out=128, kernel=(3, 3), padding=(1, 1)).saturate_pairs
    assert capped.conv(groups=1, c_in=8, c_out=8).saturate_pairs
    # ONNX Runtime's depthwise kernel is exact on every CPU
    assert not Target("onnxruntime", "avx2").conv(groups=8, c_in=8, c_out=8, kernel=(3, 3)).saturate_pairs
    assert Target("onnxruntime", "avx2").conv(groups=1, c_in=8, c_out=8).saturate_pairs


def test_elementwise_lanes_follow_atens_capability():
    """torch 2.14 runs the AVX2 build of qadd / qmul / qhardswish on AVX-512 CPUs too; only kernels also
    registered for AVX-512 (the channels-last average pool) run 512 bits wide."""
    assert Target("fbgemm", "avx2").ops().vector_bits == 256
    assert Target("fbgemm", "avx512-vnni").ops().vector_bits == 256
    assert Target("fbgemm", "avx512-vnni").ops().vector_bits_avx512_kernels == 512
    assert Target("fbgemm", "avx512-vnni/forced-avx2").ops().vector_bits_avx512_kernels == 256
    default = Cpu.host(respect_environment=False).with_environment({"ATEN_CPU_CAPABILITY": "default"})
    assert Target("fbgemm", default).ops().vector_bits == 0


def test_quantize_accepts_every_target_name():
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    for t, rule in [("fbgemm", "torch"), ("x86", "torch"), ("qnnpack", "torch"), ("onnxruntime", "onnxruntime"),
                    ("minquant", "onnxruntime"), (Target("x86", "avx2"), "torch")]:
        assert quantize_rule_of(t) == rule
        np.testing.assert_array_equal(mq.quantize(x, 0.0079, 128, target=t), mq.quantize(x, 0.0079, 128, target=rule))
    with pytest.raises(ValueError, match="unknown quantize rule or target"):
        mq.quantize(x, 0.01, 0, target="tflite")


def test_target_round_trips_through_json():
    for t in [Target("x86", "avx2"), Target("onnxruntime", "avx-vnni"), Target("fbgemm", forced_isa.forced_cpu())]:
        assert Target.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    with pytest.raises(ValueError, match="unknown fields"):
        Target.from_dict({"framework": "x86", "cpu": {"name": "x", "sse9": True}})


def _tiny_model(digits_model, target):
    model, (x_tr, _, x_te, _) = digits_model
    qm = mq.quantize_static(model, x_tr[:128], target=target, reduce_range=False, progress=False)
    return qm, x_te[:32]


def test_saved_model_computes_its_recorded_cpu_on_this_host(digits_model, tmp_path):
    """A model quantized for fbgemm on an AVX2 CPU, saved and loaded here, computes what torch's fbgemm
    computes on AVX2 — checked live, layer by layer, against torch in a subprocess capped at AVX2 — and (on a
    VNNI host) not what this host's fbgemm computes: full-range weights and activations (reduce_range=False)
    make int16 pairs saturate."""
    avx2 = Target("fbgemm", forced_isa.forced_cpu())
    qm, x = _tiny_model(digits_model, avx2)
    path = qm.save(tmp_path / "tiny_avx2.mq.npz")
    doc = json.loads(bytes(np.load(path, allow_pickle=False)["__model__"]).decode())
    assert doc["version"] == 2 and doc["target"] == avx2.to_dict()
    back = mq.load(path)
    assert back.target == avx2
    _, codes = back.run(x, intermediates=True, raw=True)
    calls, mine = [], []
    for n in back.graph.nodes:
        if n.op != "qconv2d":
            continue
        a = n.attrs
        lo, hi = a.clamp if a.clamp is not None else (0, 255)
        assert hi == 255 and lo in (0, a.y_zp)
        ws, wz = n.params["w_scale"], n.params["w_zp"]
        ws = ws if a.per_channel else ws[0]
        wz = wz if a.per_channel else int(wz[0])
        calls.append(((codes[n.inputs[0]], a.x_scale, a.x_zp, n.params["weight"], ws, wz, n.params.get("bias"),
                       a.y_scale, a.y_zp), dict(stride=list(a.stride), padding=list(a.padding),
                                                dilation=list(a.dilation), groups=a.groups, relu=lo == a.y_zp)))
        mine.append(codes[n.name])
    assert len(calls) == 2
    want_avx2 = forced_isa.call_many("minquant.frameworks.torch_oracle:qconv2d", calls, engine="fbgemm")
    for got, want in zip(mine, want_avx2):
        np.testing.assert_array_equal(got, want)
    if Cpu.host().fbgemm_vnni:      # this host's own fbgemm is exact: the recorded CPU really mattered
        from minquant.frameworks import torch_oracle as torch_quant
        with torch_quant.engine("fbgemm"):
            native = [torch_quant.qconv2d(*args, **kw) for args, kw in calls]
        assert sum(int((w != v).sum()) for w, v in zip(want_avx2, native)) > 0
        host = mq.QuantizedModel(back.graph, Target("fbgemm"))
        assert not np.array_equal(host(x), back(x))


def test_version_1_files_still_load(digits_model, tmp_path):
    """A version-1 file (the target stored as a name under "emulate") loads as that framework on this host."""
    qm, x = _tiny_model(digits_model, "fbgemm")
    doc, arrays = qm.to_json_and_arrays()
    doc = dict(doc, version=1, emulate="fbgemm")
    del doc["target"]
    arrays["__model__"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
    np.savez(tmp_path / "v1.npz", **arrays)
    back = mq.load(tmp_path / "v1.npz")
    assert back.target == Target("fbgemm")
    np.testing.assert_array_equal(back(x), qm(x))


def test_an_arithmetic_is_not_a_target():
    with pytest.raises(TypeError, match="not a Target"):
        as_target(Target("x86").ops())
    assert isinstance(Target("x86").ops(), Arithmetic)
