"""ONNX conformance of the quantization operators (issue 16): ONNX's own backend node test cases for
QuantizeLinear, DequantizeLinear, QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger and
DynamicQuantizeLinear, generated from the installed ``onnx`` package (``onnx.backend.test.case.node``), run
in the same process by minquant (``from_onnx``, target ONNX Runtime on this CPU), ONNX Runtime (CPU EP, no
graph optimization, one thread) and ONNX's reference evaluator (``onnx.reference.ReferenceEvaluator``), each
compared with the case's expected outputs. Then the ONNX Runtime one-node golden recordings replayed through
``from_onnx``.

    .venv/bin/python -m benchmarks.onnx_conformance            # writes benchmarks/RESULTS_onnx_conformance.md
    .venv/bin/python -m benchmarks.onnx_conformance --no-write # print only

"passed" means every output has the expected shape, type and values exactly (floats: the same values;
NaN = NaN). ONNX's own backend runner is looser (rtol 1e-3, atol 1e-7 on floats); a case that passes only
within that tolerance is counted separately. A framework that refuses a case (raises) has not passed it.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from minquant.interop.onnx.conformance import QUANTIZATION_OPS as OPS, case_feeds, case_op, node_cases  # noqa: E402

from .provenance import commit as provenance_commit  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS_onnx_conformance.md"
COMMAND = ".venv/bin/python -m benchmarks.onnx_conformance"


def _values(a):
    """Comparable values: floats (incl. ml_dtypes float8/float4) as float64, integers as int64."""
    a = np.asarray(a)
    if a.dtype.kind in "iub":
        return a.astype(np.int64)
    return a.astype(np.float64)


def verdict(expected, got) -> str:
    """'exact', 'tolerance' (only within rtol 1e-3, atol 1e-7) or 'wrong: …'."""
    if len(got) != len(expected):
        return f"wrong: {len(got)} outputs, expected {len(expected)}"
    worst = "exact"
    for e, g in zip(expected, got):
        e, g = _values(e), _values(g)
        if e.shape != g.shape:
            return f"wrong: shape {g.shape}, expected {e.shape}"
        if np.array_equal(e, g, equal_nan=True):
            continue
        if e.dtype.kind == "f" and np.allclose(g, e, rtol=1e-3, atol=1e-7, equal_nan=True):
            worst = "tolerance"
            continue
        k = int((e != g).sum())
        return f"wrong: {k} of {e.size} values differ"
    return worst


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg[:110]}" + ("…" if len(msg) > 110 else "")


def run_minquant(case, feeds):
    from minquant.interop.onnx import from_onnx
    prog = from_onnx(case.model)
    outs = prog.run(feeds)
    return [outs[o.name] for o in case.model.graph.output]


def run_ort(case, feeds):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(case.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_ort_opset21(case, feeds):
    """ONNX Runtime on the same model re-declared as opset 21 where it says more (ORT 1.32 registers
    QuantizeLinear / DequantizeLinear up to opset 23, not 28; the operator's meaning for these cases is the
    same): which refusals are only the opset number. Informational — the case is modified."""
    import copy
    model = copy.deepcopy(case.model)
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx") and o.version > 21:
            o.version = 21
    model.ir_version = min(model.ir_version, 10)
    return run_ort(type("Case", (), {"model": model})(), feeds)


def run_reference(case, feeds):
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(case.model).run(None, feeds)


RUNNERS = {"minquant": run_minquant, "ONNX Runtime": run_ort, "reference evaluator": run_reference}
#: informational runners (a modified case): shown in the tables after a separator, not in the comparison
EXTRA = {"ONNX Runtime, opset → 21": run_ort_opset21}


def case_types(case) -> str:
    from onnx import TensorProto
    g = case.model.graph
    seen = []
    for v in list(g.input) + list(g.output):
        t = TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()
        if t not in seen:
            seen.append(t)
    return ", ".join(seen)


def evaluate():
    rows = []
    for case in node_cases():
        feeds, expected = case_feeds(case)
        row = {"case": case.name, "op": case_op(case),
               "expanded": "_expanded" in case.name, "types": case_types(case),
               "opset": next(o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx"))}
        for name, fn in {**RUNNERS, **EXTRA}.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    got = fn(case, dict(feeds))
                row[name] = verdict(expected, got)
            except Exception as e:                         # a refusal: not passed
                row[name] = "refused: " + _short(e)
        rows.append(row)
    return rows


def replay_recordings():
    from minquant.lesson import golden
    out = []
    for folder in golden.find_recordings(HERE.parent / "tests" / "golden" / "recordings"):
        manifest = golden.load_manifest(folder)
        if "ort_nodes" not in manifest.get("families", {}):
            continue
        r = golden.replay_family(folder, "ort_nodes")
        ops = Counter(c["op"] for c in manifest["families"]["ort_nodes"])
        out.append((folder.name, r["cases"], r["mismatches"], len(r["errors"]), len(r["failing"]),
                    manifest["host"].get("model_name") or golden.cpu_of(manifest).name, ops))
    return out


def _mark(v: str) -> str:
    if v == "exact":
        return "pass"
    if v == "tolerance":
        return "pass within tolerance only"
    return v.replace("|", "/")


def report(rows, recordings) -> str:
    import onnx
    import onnxruntime
    from minquant.target import Cpu
    names = list(RUNNERS) + list(EXTRA)
    main = [r for r in rows if not r["expanded"]]
    exp = [r for r in rows if r["expanded"]]

    def count(rs, name, strict=True):
        return sum(r[name] == "exact" or (not strict and r[name] == "tolerance") for r in rs)

    commit = provenance_commit()
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        "# ONNX conformance of the quantization operators (issue 16)", "",
        f"Produced by `{COMMAND}` on {datetime.date.today().isoformat()}, commit {commit}; {cpu or platform.machine()} "
        f"(minquant's host CPU: {Cpu.host().describe()}); Python {platform.python_version()}, onnx {onnx.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, NumPy {np.__version__}.", "",
        "The cases are ONNX's own backend node tests for the seven quantization operators, generated from the "
        "installed `onnx` package (`onnx.backend.test.case.node.collect_testcases`), each run in this one process by "
        "minquant (`minquant.from_onnx(model)` → `OnnxProgram`, `target=\"onnxruntime\"` on this CPU), ONNX Runtime "
        "(CPU provider, graph optimizations off, one thread) and ONNX's reference evaluator "
        "(`onnx.reference.ReferenceEvaluator`), and compared with the case's expected outputs. *pass* = every "
        "output has the expected shape and exactly the expected values (floats compared by value); a refusal "
        "(the framework raises: an unknown opset, type or kernel) is not a pass. ONNX's backend runner itself "
        "accepts floats within rtol 1e-3, atol 1e-7: a case passing only that way is counted in parentheses. "
        "The last column is informational: ONNX Runtime on the same model re-declared as opset 21 where it "
        "declares more (ONNX Runtime 1.32 registers QuantizeLinear / DequantizeLinear up to opset 23; the cases' "
        "meaning is the same at 21) — it separates refusals due to the opset number from missing kernels or "
        "types its Python binding cannot pass (int4, float8: \"Numpy_type … can't be converted\").", "",
        "## Summary", "",
        "| node cases | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]

    def cell(rs, name):
        strict, loose = count(rs, name), count(rs, name, strict=False)
        return f"{strict} / {len(rs)}" + (f" ({loose})" if loose != strict else "")

    for op in OPS:
        rs = [r for r in main if r["op"] == op]
        lines.append(f"| {op} | " + " | ".join(cell(rs, n) for n in names) + " |")
    lines.append("| **all 7 operators** | " + " | ".join(f"**{cell(main, n)}**" for n in names) + " |")
    integer = [r for r in main if not any(t in r["types"] for t in ("float8", "float4"))]
    lines.append("| of which integer / float16 types | " + " | ".join(cell(integer, n) for n in names) + " |")
    lines.append("| of which float8 / float4 types | " + " | ".join(
        cell([r for r in main if r not in integer], n) for n in names) + " |")
    if exp:
        lines.append("| DynamicQuantizeLinear's function body (`_expanded`, float ops) | " + " | ".join(
            cell(exp, n) for n in names) + " |")
    lines += ["", "minquant refuses the `_expanded` cases, with the reason: they are DynamicQuantizeLinear's function "
              "body written in general float ops (ReduceMin, Div, Round, Cast, ...), not quantization operators. "
              "tests/test_onnx_conformance.py runs the same cases: the 42 must pass exactly (float outputs by their "
              "bits), the `_expanded` ones are strict xfails naming the reason.", "",
              "## Every case", "",
              "| case | opset | types | " + " | ".join(names) + " |",
              "|---|---:|---|" + "---|" * len(names)]
    for r in rows:
        lines.append(f"| {r['case']} | {r['opset']} | {r['types']} | " + " | ".join(_mark(r[n]) for n in names) + " |")
    lines += ["", "## ONNX Runtime one-node recordings replayed through `from_onnx`", "",
              "`minquant.lesson.golden`'s `ort_nodes` family (tests/test_golden.py): each recorded case holds the "
              "serialized one-node model ONNX Runtime ran (graph optimizations off) and its inputs and outputs; "
              "`from_onnx(model, target=Target(\"onnxruntime\", cpu_of_recording))` runs it. Float outputs "
              "(DequantizeLinear, MatMulNBits, DynamicQuantizeLinear's scale) are compared by their bits.", "",
              "| recording | CPU | cases | mismatching elements | cases raising | ops |", "|---|---|---:|---:|---:|---|"]
    for name, cases, mism, errors, failing, cpu_name, ops in recordings:
        lines.append(f"| {name} | {cpu_name} | {cases} | {mism} | {errors} | "
                     + ", ".join(f"{k} {v}" for k, v in sorted(ops.items())) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.onnx_conformance", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-write", action="store_true", help="print only; leave the results file alone")
    args = ap.parse_args(argv)
    rows = evaluate()
    text = report(rows, replay_recordings())
    print(text)
    if not args.no_write:
        from minquant.files import atomic_write
        with atomic_write(RESULTS) as f:
            f.write(text.encode())
        print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
