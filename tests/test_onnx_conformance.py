"""ONNX conformance of minquant.from_onnx's executor of quantization operators (OnnxProgram, issue 16).

1. ONNX's own backend node test cases for QuantizeLinear, DequantizeLinear, QLinearConv, QLinearMatMul,
   ConvInteger, MatMulInteger and DynamicQuantizeLinear — generated here from the installed ``onnx`` package
   (``onnx.backend.test.case.node``), never copied — against their expected outputs: values (float ones by
   their bits), shape and ONNX type exactly, integer, float16, float8 and float4 alike. DynamicQuantizeLinear's
   function body written in float ops (the ``_expanded`` cases) is a strict xfail with the reason (refused
   with ValueError). float8 / float4 Q/DQ also against ONNX's reference evaluator on every code, tie and
   special value.
2. Random graphs against ONNX Runtime (CPU, no graph optimization): per-axis and blocked Q/DQ for every code
   type, float16, every u8/s8 type pair of the integer products, batched and broadcast matmuls, 1-D and
   asymmetric-padded convolutions, scales and weights fed at run time — bit-exact under
   ``target="onnxruntime"`` on this CPU.
3. Saturation, several outputs, bad feeds, and the kinds of file from_onnx still hands to the Graph importer.

The golden one-node recordings of ONNX Runtime (tests/golden/recordings/*/ort_nodes.npz) replay through
from_onnx in tests/test_golden.py (minquant.lesson.golden's ort_nodes replay builds an OnnxProgram).
"""
from __future__ import annotations


import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto as TP, helper as oh, numpy_helper  # noqa: E402

import minquant  # noqa: E402
from minquant.frameworks.ort_oracle import ort_session  # noqa: E402
from minquant.interop.onnx import OnnxProgram, from_onnx  # noqa: E402
from minquant.interop.onnx.conformance import QUANTIZATION_OPS, case_feeds, node_cases  # noqa: E402

_FLOAT8 = ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")


def _types_of(case):
    g = case.model.graph
    return {TP.DataType.Name(v.type.tensor_type.elem_type) for v in list(g.input) + list(g.output)}


def unsupported_reason(case) -> str | None:
    """Why minquant does not run a case (None: it must pass exactly)."""
    if case.name.endswith("_expanded") or "_expanded_ver" in case.name:
        return ("DynamicQuantizeLinear's function body written in float ops (ReduceMin, Div, Round, Cast...): "
                "minquant's executor runs quantization operators, not general float graphs")
    return None


def run_case(case):
    """(expected, got, expected types, got types) of one node case through from_onnx."""
    feeds, expected = case_feeds(case)
    prog = from_onnx(case.model)
    assert isinstance(prog, OnnxProgram)
    got = prog.run(feeds)
    names = [vi.name for vi in case.model.graph.output]
    want_types = [TP.DataType.Name(vi.type.tensor_type.elem_type) for vi in case.model.graph.output]
    return expected, [got[k] for k in names], want_types, [prog.output_types[k] for k in names]


CASES = node_cases()


def _params():
    out = []
    for c in CASES:
        why = unsupported_reason(c)
        marks = [pytest.mark.xfail(strict=True, raises=ValueError, reason=why)] if why else []
        out.append(pytest.param(c, id=c.name, marks=marks))
    return out


def test_node_cases_are_generated():
    """The installed onnx package gives the cases the issue counts: 42 node cases (34 integer / float16, 8
    float8 / float4), +3 expanded function bodies."""
    main = [c for c in CASES if "_expanded" not in c.name]
    assert len(main) >= 42, [c.name for c in main]
    assert sum(bool(_types_of(c) & {*_FLOAT8, "FLOAT4E2M1"}) for c in main) >= 8
    assert {n.op_type for c in main for n in c.model.graph.node} == set(QUANTIZATION_OPS)


@pytest.mark.parametrize("case", _params())
def test_onnx_node_case(case):
    want, got, want_types, got_types = run_case(case)
    assert got_types == want_types
    for w, g, t in zip(want, got, want_types):
        assert g.shape == w.shape
        if t.startswith("FLOAT"):                      # float32 / float16 / float8 / float4: the same bits
            assert g.dtype == w.dtype and np.array_equal(g.reshape(-1).view(np.uint8), w.reshape(-1).view(np.uint8)), (g, w)
        else:
            assert np.array_equal(g.astype(np.int64), w.astype(np.int64)), (g, w)


@pytest.mark.parametrize("onnx_type", [*_FLOAT8, "FLOAT4E2M1"])
@pytest.mark.parametrize("saturate", [1, 0])
def test_float8_float4_quantize_dequantize_match_the_reference_evaluator(onnx_type, saturate):
    """Every float8 / float4 type, per axis, saturate 1 and 0, on values around each code, halfway points
    (round half to even), beyond the range, ±Inf, NaN and −0: bit for bit what ONNX's reference evaluator
    gives (ONNX Runtime's Python binding cannot pass these types); DequantizeLinear back."""
    from onnx.reference import ReferenceEvaluator
    import ml_dtypes
    dt = np.dtype(getattr(ml_dtypes, {"FLOAT8E4M3FN": "float8_e4m3fn", "FLOAT8E4M3FNUZ": "float8_e4m3fnuz",
                                      "FLOAT8E5M2": "float8_e5m2", "FLOAT8E5M2FNUZ": "float8_e5m2fnuz",
                                      "FLOAT4E2M1": "float4_e2m1fn"}[onnx_type]))
    codes = np.arange(256 if dt.itemsize * 8 == 8 and onnx_type != "FLOAT4E2M1" else 16, dtype=np.uint8)
    values = np.unique(codes.view(dt).astype(np.float32) if onnx_type != "FLOAT4E2M1" else
                       np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], np.float32))
    values = values[np.isfinite(values)]
    mids = (values[:-1] + values[1:]) / 2                                  # ties: round half to even
    top = float(ml_dtypes.finfo(dt).max)
    special = np.array([top * 1.02, top * 1.2, -top * 1.5, 1e30, np.inf, -np.inf, np.nan, -0.0], np.float32)
    x = np.concatenate([values, -values, mids, -mids, mids * 1.001, special]).astype(np.float32)
    x = np.resize(x, (2, x.size // 2 + 1)).astype(np.float32) * np.float32(2)   # two rows: per-axis scales 2, 4
    s = np.array([2.0, 4.0], np.float32)
    z = oh.make_tensor("z", getattr(TP, onnx_type), (2,), [0.0, 0.0])
    if onnx_type == "FLOAT4E2M1" and not saturate:
        pytest.skip("float4e2m1 has no Inf / NaN: it always saturates, saturate=0 is not defined for it")
    q_model = one_node("QuantizeLinear", {"x": x}, {"s": s, "z": z}, [getattr(TP, onnx_type)],
                       {"axis": 0, "saturate": saturate}, opset=21)
    want = ReferenceEvaluator(q_model).run(None, {"x": x})[0]
    prog = from_onnx(q_model)
    got = prog(x)
    assert prog.output_types == {"y0": onnx_type} and got.dtype == dt
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), \
        f"{int((got.view(np.uint8) != want.view(np.uint8)).sum())} of {got.size} codes differ"
    finite = np.isfinite(got.astype(np.float32))
    assert finite.mean() > 0.8 and len(np.unique(got.view(np.uint8))) > (10 if onnx_type == "FLOAT4E2M1" else 100)
    dq = one_node("DequantizeLinear", {}, {"q": want, "s": s, "z": z}, [TP.FLOAT], {"axis": 0}, opset=21)
    back, ref = from_onnx(dq)(), ReferenceEvaluator(dq).run(None, {})[0]
    assert np.array_equal(back.view(np.uint32), ref.view(np.uint32))


# ---------------------------------------------------------------------------------------------------------
# 2. random graphs against ONNX Runtime
# ---------------------------------------------------------------------------------------------------------
_NP = {np.dtype(np.float32): TP.FLOAT, np.dtype(np.float16): TP.FLOAT16, np.dtype(np.uint8): TP.UINT8,
       np.dtype(np.int8): TP.INT8, np.dtype(np.uint16): TP.UINT16, np.dtype(np.int16): TP.INT16,
       np.dtype(np.int32): TP.INT32}


def one_node(op, feeds: dict, inits: dict, out_types, attrs=None, opset=21, order=None, domain=""):
    """A one-node model: ``feeds`` are graph inputs (name → array), ``inits`` initializers (name → array or a
    TensorProto; None = omitted optional input); inputs in ``order`` (default feeds then inits)."""
    vis = [oh.make_tensor_value_info(k, _NP[v.dtype], v.shape) for k, v in feeds.items()]
    init = [v if isinstance(v, onnx.TensorProto) else numpy_helper.from_array(np.asarray(v), k)
            for k, v in inits.items() if v is not None]
    names = ["" if k in inits and inits[k] is None else k for k in (order or [*feeds, *inits])]
    outs = [f"y{i}" for i in range(len(out_types))]
    node = oh.make_node(op, names, outs, domain=domain, **(attrs or {}))
    g = oh.make_graph([node], "n", vis, [oh.make_tensor_value_info(o, t, None) for o, t in zip(outs, out_types)],
                      initializer=init)
    opsets = [oh.make_opsetid("", opset)] + ([oh.make_opsetid(domain, 1)] if domain else [])
    m = oh.make_model(g, opset_imports=opsets)
    m.ir_version = 10
    return m


def ort_vs_minquant(model, feeds):
    """Both outputs lists for ``feeds``; asserts they are identical (bits for floats)."""
    want = ort_session(model, optimize=False).run(None, feeds)
    got = from_onnx(model).run(feeds)
    got = [got[o.name] for o in model.graph.output]
    for w, g in zip(want, got):
        assert w.shape == g.shape and w.dtype == g.dtype, (w.dtype, g.dtype, w.shape, g.shape)
        assert np.array_equal(w.reshape(-1).view(np.uint8), g.reshape(-1).view(np.uint8)), \
            f"{int((w != g).sum())} of {w.size} differ: {w.ravel()[:8]} vs {g.ravel()[:8]}"
    return want, got


RNG = np.random.default_rng(16)
_RANGE = {np.uint8: (0, 255), np.int8: (-128, 127), np.uint16: (0, 65535), np.int16: (-32768, 32767)}


@pytest.mark.parametrize("code", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize("layout", ["tensor", "axis", "axis_neg", "blocked"])
def test_quantize_dequantize_layouts_match_ort(code, layout):
    x = (RNG.standard_normal((2, 6, 5, 4)) * 3).astype(np.float32)
    lo, hi = _RANGE[code]
    attrs, shape = {}, ()
    if layout == "axis":
        attrs, shape = {"axis": 1}, (6,)
    elif layout == "axis_neg":
        attrs, shape = {"axis": -2}, (5,)
    elif layout == "blocked":
        attrs, shape = {"axis": 1, "block_size": 2}, (2, 3, 5, 4)
    width = hi - lo
    s = RNG.uniform(1.0, 1.2, shape).astype(np.float32) * np.float32(120 / width)   # ±5σ → ±width/8 codes
    z = RNG.integers(lo + width // 8, hi - width // 8, shape).astype(code)          # so nothing saturates
    (q,), _ = ort_vs_minquant(one_node("QuantizeLinear", {"x": x}, {"s": s, "z": z}, [_NP[np.dtype(code)]], attrs),
                              {"x": x})
    assert lo < q.min() and q.max() < hi                      # not saturated: the rounding is what is tested
    assert len(np.unique(q)) > 20
    ort_vs_minquant(one_node("DequantizeLinear", {"q": q}, {"s": s, "z": z}, [TP.FLOAT], attrs), {"q": q})


def test_scales_and_zero_points_fed_at_run_time_and_float16():
    """Scale and zero point as graph inputs (not initializers), per axis; float16 input and scale."""
    x = RNG.standard_normal((3, 7)).astype(np.float16)
    s = RNG.uniform(0.06, 0.08, 7).astype(np.float16)
    z = RNG.integers(100, 156, 7).astype(np.uint8)
    m = one_node("QuantizeLinear", {"x": x, "s": s, "z": z}, {}, [TP.UINT8], {"axis": 1})
    (q,), _ = ort_vs_minquant(m, {"x": x, "s": s, "z": z})
    assert 0 < q.min() and q.max() < 255
    m = one_node("DequantizeLinear", {"q": q, "s": s, "z": z}, {}, [TP.FLOAT16], {"axis": 1})
    ort_vs_minquant(m, {"q": q, "s": s, "z": z})


def test_blocked_int4_with_a_short_last_block():
    """Blocked int4: 10 elements in blocks of 4 (the last block holds 2); the codes come back one per int8.
    (onnxruntime's Python binding cannot return int4 arrays: checked against the formula.)"""
    x = RNG.standard_normal((3, 10)).astype(np.float32)
    s = RNG.uniform(0.8, 1.2, (3, 3)).astype(np.float32)
    z = oh.make_tensor("z", TP.INT4, (3, 3), RNG.integers(-2, 3, 9).tolist())
    m = one_node("QuantizeLinear", {"x": x}, {"s": s, "z": z}, [TP.INT4], {"axis": 1, "block_size": 4})
    prog = from_onnx(m)
    q = prog(x)
    assert prog.output_types == {"y0": "INT4"} and q.dtype == np.int8
    zf = numpy_helper.to_array(z).astype(np.int64)
    blocks = np.arange(10) // 4
    want = np.clip(np.rint(x / s[:, blocks]) + zf[:, blocks], -8, 7)
    assert np.array_equal(q, want)
    assert ((q > -8) & (q < 7)).mean() > 0.9 and len(np.unique(q)) > 4


@pytest.mark.parametrize("ta, tb", [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8),
                                    (np.int8, np.uint8)])
def test_integer_products_every_type_pair_match_ort(ta, tb):
    """MatMulInteger (batched, B broadcast, per-row / per-column zero points) and QLinearMatMul, against the
    exact formula and ONNX Runtime (which has every pair but QLinearMatMul s8 × u8, and no per-row A zero
    point)."""
    def codes(t, shape):
        lo, hi = _RANGE[t]
        return RNG.integers(lo, hi + 1, shape).astype(t)

    a, b = codes(ta, (2, 5, 33)), codes(tb, (33, 7))
    az, bz = codes(ta, (5,)), codes(tb, (7,))
    # per-row A zero points (ORT refuses them): against the exact formula
    got = from_onnx(one_node("MatMulInteger", {"a": a, "b": b}, {"az": az, "bz": bz}, [TP.INT32]))(a, b)
    exact = np.matmul(a.astype(np.int64) - az[:, None], b.astype(np.int64) - bz[None, :])
    assert np.array_equal(got, exact)
    # one A zero point: against ONNX Runtime (it runs every pair)
    (got,), _ = ort_vs_minquant(one_node("MatMulInteger", {"a": a, "b": b}, {"az": az[0], "bz": bz}, [TP.INT32]),
                                {"a": a, "b": b})
    assert np.array_equal(got, np.matmul(a.astype(np.int64) - az[0], b.astype(np.int64) - bz[None, :]))
    # QLinearMatMul with the same operands, per-tensor, float32 and float16 scales
    for dt in (np.float32, np.float16):
        sa, sb = dt(0.02), dt(0.01)
        ys = dt(float(np.abs(exact).std()) * float(sa) * float(sb) / 20)
        yz = np.array(0 if ta == np.int8 else 128, ta)
        mq = one_node("QLinearMatMul", {"a": a, "b": b}, {"sa": sa, "za": az[:1].reshape(()), "sb": sb,
                                                          "zb": bz[:1].reshape(()), "ys": ys, "yz": yz},
                      [_NP[np.dtype(ta)]], order=["a", "sa", "za", "b", "sb", "zb", "ys", "yz"])
        got = from_onnx(mq)(a, b)
        lo, hi = _RANGE[ta]
        assert lo < np.median(got) < hi and len(np.unique(got)) > 20
        if (ta, tb) != (np.int8, np.uint8):              # ORT has no QLinearMatMul for s8 × u8
            assert np.array_equal(got, ort_session(mq, optimize=False).run(None, {"a": a, "b": b})[0])


@pytest.mark.parametrize("xt, wt", [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8)])
@pytest.mark.parametrize("geometry", ["asymmetric_pads", "depthwise", "conv1d_same_upper", "grouped_stride"])
def test_qlinear_conv_geometries_and_types_match_ort(xt, wt, geometry):
    def codes(t, shape, lo=None, hi=None):
        lo_, hi_ = _RANGE[t]
        return RNG.integers(lo_ if lo is None else lo, (hi_ if hi is None else hi) + 1, shape).astype(t)

    attrs, c, m_out, k = {}, 6, 4, (3, 3)
    x_shape = (2, c, 9, 8)
    if geometry == "asymmetric_pads":
        attrs = {"pads": [0, 1, 2, 1], "strides": [1, 2]}
    elif geometry == "depthwise":
        attrs, m_out = {"group": c, "pads": [1, 1, 1, 1]}, c
    elif geometry == "conv1d_same_upper":
        attrs, x_shape, k = {"auto_pad": "SAME_UPPER", "strides": [2]}, (2, c, 11), (4,)
    else:
        attrs, m_out = {"group": 2, "strides": [2, 2], "dilations": [2, 1]}, 4
    cg = c // attrs.get("group", 1)
    x = codes(xt, x_shape)
    w = codes(wt, (m_out, cg) + k)
    xz = np.array(_RANGE[xt][0] + 100, xt)
    wz = codes(wt, (m_out,), _RANGE[wt][0] + 120, _RANGE[wt][0] + 136) if wt == np.uint8 else np.zeros(m_out, wt)
    ws = RNG.uniform(0.005, 0.02, m_out).astype(np.float32)
    xs = np.float32(0.03)
    acc_sd = 74 * 74 * np.sqrt(cg * np.prod(k))            # ~ the accumulator's spread
    ys = np.float32(xs * ws.mean() * acc_sd / 25)
    yz = np.array(_RANGE[xt][0] + 128, xt)
    bias = RNG.integers(-3000, 3000, m_out).astype(np.int32)
    model = one_node("QLinearConv", {"x": x}, {"xs": xs, "xz": xz, "w": w, "ws": ws, "wz": wz, "ys": ys, "yz": yz,
                                               "b": bias}, [_NP[np.dtype(xt)]], attrs)
    try:
        want = ort_session(model, optimize=False).run(None, {"x": x})[0]
    except Exception as e:                                # ORT lacks this type pair
        pytest.skip(f"ONNX Runtime has no QLinearConv for {np.dtype(xt)} x {np.dtype(wt)}: {str(e)[:80]}")
    got = from_onnx(model)(x)
    lo, hi = _RANGE[xt]
    assert ((got > lo) & (got < hi)).mean() > 0.9 and len(np.unique(got)) > 30      # not saturated
    assert got.shape == want.shape and np.array_equal(got, want), f"{int((got != want).sum())} codes differ"


def test_conv_integer_uint8_weights_groups_and_pads_match_ort():
    x = RNG.integers(0, 256, (1, 4, 7, 6)).astype(np.uint8)
    w = RNG.integers(0, 256, (6, 2, 3, 2)).astype(np.uint8)
    m = one_node("ConvInteger", {"x": x}, {"w": w, "xz": np.uint8(90), "wz": np.uint8(131)}, [TP.INT32],
                 {"group": 2, "pads": [1, 0, 0, 1]})
    (got,), _ = ort_vs_minquant(m, {"x": x})
    assert np.abs(got).max() > 1000


def test_batched_qlinear_matmul_broadcasts_and_runs_weights_as_inputs():
    a = RNG.integers(0, 256, (3, 1, 4, 20)).astype(np.uint8)
    b = RNG.integers(-128, 128, (2, 20, 5)).astype(np.int8)
    feeds = {"a": a, "b": b}
    m = one_node("QLinearMatMul", feeds, {"sa": np.float32(0.02), "za": np.uint8(120), "sb": np.float32(0.01),
                                          "zb": np.int8(0), "ys": np.float32(0.06), "yz": np.uint8(128)},
                 [TP.UINT8], order=["a", "sa", "za", "b", "sb", "zb", "ys", "yz"])
    (y,), _ = ort_vs_minquant(m, feeds)
    assert y.shape == (3, 2, 4, 5) and 0 < np.median(y) < 255


# ---------------------------------------------------------------------------------------------------------
# 3. saturation, several outputs, bad input, and what from_onnx still gives the Graph importer
# ---------------------------------------------------------------------------------------------------------
def test_saturation_and_infinities():
    x = np.array([-np.inf, -1e30, -3.0, 0.0, 2.5, 3.5, 1e30, np.inf], np.float32)
    for t, code in ((TP.UINT8, np.uint8), (TP.INT8, np.int8), (TP.INT16, np.int16)):
        lo, hi = _RANGE[code]
        m = one_node("QuantizeLinear", {"x": x}, {"s": np.float32(1.0), "z": np.zeros((), code)}, [t])
        q = from_onnx(m)(x)
        assert q.tolist() == [lo, lo, max(lo, -3), 0, 2, 4, hi, hi]      # ties to even: 2.5 → 2, 3.5 → 4
    with pytest.raises(ValueError, match="NaN"):
        from_onnx(m)(np.where(np.arange(8) == 3, np.nan, x).astype(np.float32))


def test_several_inputs_and_outputs():
    """DynamicQuantizeLinear's three outputs feed a DequantizeLinear; graph outputs: all four."""
    x = (RNG.standard_normal((4, 9)) * 2).astype(np.float32)
    nodes = [oh.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
             oh.make_node("DequantizeLinear", ["q", "s", "z"], ["r"])]
    outs = [oh.make_tensor_value_info(k, t, None) for k, t in (("q", TP.UINT8), ("s", TP.FLOAT), ("z", TP.UINT8),
                                                                 ("r", TP.FLOAT))]
    g = oh.make_graph(nodes, "dq", [oh.make_tensor_value_info("x", TP.FLOAT, x.shape)], outs)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 21)])
    m.ir_version = 10
    want, got = ort_vs_minquant(m, {"x": x})
    q, s, z, r = from_onnx(m)(x)
    assert np.abs(r - x).max() <= s / 2 + 1e-6


def test_bad_feeds_are_named():
    m = one_node("DequantizeLinear", {"q": np.zeros((2, 3), np.uint8)}, {"s": np.float32(0.1), "z": np.uint8(3)},
                 [TP.FLOAT])
    prog = from_onnx(m)
    with pytest.raises(ValueError, match=r"input 'q' must be uint8 \(stored as uint8\), got int8"):
        prog(np.zeros((2, 3), np.int8))
    with pytest.raises(ValueError, match=r"input 'q' has shape \(3, 2\); the graph declares \(2, 3\)"):
        prog(np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match=r"missing \['q'\]"):
        prog.run({})
    with pytest.raises(TypeError, match="2 positional inputs"):
        prog(np.zeros((2, 3), np.uint8), np.zeros(1))
    m4 = one_node("DequantizeLinear", {"q": np.zeros(4, np.int8)}, {"s": np.float32(0.1)}, [TP.FLOAT])
    m4.graph.input[0].type.tensor_type.elem_type = TP.INT4
    with pytest.raises(ValueError, match=r"holds int4 codes outside \[-8, 7\]"):
        from_onnx(m4)(np.array([0, 9, 1, 2], np.int8))


def test_float_models_and_whole_quantized_models_keep_their_importers():
    """A float model is still a Graph; a graph mixing quantization operators with float ops is refused with
    the pointer to from_onnx_quantized; an op outside the executor's table is named."""
    relu = oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "f", [oh.make_tensor_value_info("x", TP.FLOAT, [1, 3])],
                         [oh.make_tensor_value_info("y", TP.FLOAT, [1, 3])])
    assert isinstance(from_onnx(oh.make_model(relu, opset_imports=[oh.make_opsetid("", 17)])), minquant.Graph)
    nodes = [oh.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), oh.make_node("DequantizeLinear", ["q", "s", "z"],
                                                                                  ["d"]),
             oh.make_node("Relu", ["d"], ["y"])]
    g = oh.make_graph(nodes, "qdq", [oh.make_tensor_value_info("x", TP.FLOAT, [1, 3])],
                      [oh.make_tensor_value_info("y", TP.FLOAT, [1, 3])],
                      initializer=[numpy_helper.from_array(np.float32(0.1), "s"),
                                   numpy_helper.from_array(np.uint8(3), "z")])
    with pytest.raises(ValueError, match="has quantized operators .*use from_onnx_quantized"):
        from_onnx(oh.make_model(g, opset_imports=[oh.make_opsetid("", 21)]))


def test_pair_saturation_follows_the_target_only_for_u8_times_s8():
    """Target("onnxruntime", "avx2"): MLAS's u8 × s8 kernel adds adjacent products in int16 (255·127·2 =
    64770 saturates to 32767 per pair); the same differences as u8 × u8 (weights 255 with zero point 128)
    run exactly, as on the host (AVX-512 VNNI, no saturation)."""
    from minquant.target import Target
    a = np.full((1, 64), 255, np.uint8)
    b_s8 = np.full((64, 1), 127, np.int8)
    b_u8 = np.full((64, 1), 255, np.uint8)
    exact = 255 * 127 * 64
    for b, zb, want_avx2 in ((b_s8, np.int8(0), 32 * 32767), (b_u8, np.uint8(128), exact)):
        m = one_node("MatMulInteger", {"a": a, "b": b}, {"az": np.uint8(0), "bz": zb}, [TP.INT32])
        assert from_onnx(m, target=Target("onnxruntime", "avx2"))(a, b).item() == want_avx2
        assert from_onnx(m)(a, b).item() == exact


def test_quantize_divides_in_the_precision_of_the_opset():
    """QuantizeLinear opset ≥ 23 divides in the ``precision`` attribute's type, else the scale's: float16
    scales round x, s and x / s to float16 before rounding half to even (ONNX Runtime does; ~3 % of codes move
    by one against a float32 division); opset 21 divides in float32. Both bit-exact against ONNX Runtime."""
    x = (RNG.standard_normal((40, 4, 60)) * 3).astype(np.float32)
    s = RNG.uniform(0.02, 0.05, 4).astype(np.float16)
    z = np.zeros(4, np.int16)
    got = {}
    for opset, xs, attrs in ((21, x.astype(np.float16), {}), (23, x.astype(np.float16), {}), (23, x, {}),
                             (23, x.astype(np.float16), {"precision": TP.FLOAT})):
        m = one_node("QuantizeLinear", {"x": xs}, {"s": s, "z": z}, [TP.INT16], {"axis": 1, **attrs}, opset=opset)
        (got[opset, xs.dtype.name, bool(attrs)],), _ = ort_vs_minquant(m, {"x": xs})
    f16, f32 = got[23, "float16", False], got[21, "float16", False]
    assert 0.005 < (f16 != f32).mean() < 0.1 and np.abs(f16.astype(int) - f32).max() == 1
    assert np.array_equal(got[23, "float32", False], f16)              # x rounded to float16 first
    assert np.array_equal(got[23, "float16", True], f32)               # precision=FLOAT: float32 division


def test_from_onnx_quantized_points_node_graphs_to_from_onnx():
    from minquant.interop.onnx import from_onnx_quantized
    m = one_node("DequantizeLinear", {"q": np.zeros((2, 3), np.uint8)}, {"s": np.float32(0.1)}, [TP.FLOAT])
    with pytest.raises(ValueError, match="must be a float32 tensor .*quantization operators only: run it with from_onnx"):
        from_onnx_quantized(m)
