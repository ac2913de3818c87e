"""./run bench [--quick] [--no-write] [--models-only]: run the benchmarks, print the tables, update benchmarks/RESULTS.md."""
import argparse
import re
from pathlib import Path

from benchmarks import kernels
from minquant.files import atomic_write_text

SECTION = kernels.SECTION
HEADER = """# Benchmark results

Every figure below comes from a script in this folder, run on the machine and commit it names. The kernel
section is rewritten by `./run bench`; the longer studies have their own scripts and result files:

- pruning (issue 4): `benchmarks/prune_tinycnn.py`, `prune_latency.py`, `prune_vgg.py`, `prune_quantize.py` → [RESULTS_prune.md](RESULTS_prune.md)
- knowledge distillation (issue 5): `benchmarks/distill_digits.py` → [RESULTS_distill.md](RESULTS_distill.md)
- int8 kernels on the CPU's own instructions — GEMM, MobileNetV2 convs, whole models vs torch int8 and ONNX
  Runtime int8 (issue 14): `./run bench` (benchmarks/kernels.py) → the section below; MobileNetV2 node by
  node, channels-last and NCHW, beside ONNX Runtime's profile: `benchmarks/node_profile.py` →
  [RESULTS_node_profile.md](RESULTS_node_profile.md)
- MobileNetV2's 35 dense convolutions (batch 1, channels-last) layer by layer beside ONNX Runtime's nodes and
  torch int8, with GOPS against the host's `vpdpbusd` limit: `benchmarks/dense_convs.py` →
  [RESULTS_dense_convs.md](RESULTS_dense_convs.md)
- whole models — torch-import bit-exactness, TinyCNN and MobileNetV2 static int8 vs torch and ONNX Runtime,
  latency (issue 3): `benchmarks/quantize_models.py` → [RESULTS_models.md](RESULTS_models.md)
- torch's quantized MobileNetV3 on minquant's kernels (issue 3): `benchmarks/torch_mobilenet_v3.py` →
  [RESULTS_mobilenet_v3.md](RESULTS_mobilenet_v3.md)
- ONNX export / import, ONNX Runtime vs torch vs minquant latency (issue 6): `benchmarks/onnx_models.py` →
  [RESULTS_onnx.md](RESULTS_onnx.md); `benchmarks/onnx_import_check.py` (printed)

"""


def _replace_section(text: str, section: str, body: str) -> str:
    """Replace the '## ...' section that starts with ``section`` (up to the next '## ') by ``body``."""
    pattern = re.compile(re.escape(section) + r".*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        return pattern.sub(lambda _: body.rstrip() + "\n\n", text)
    return text.rstrip() + "\n\n" + body.rstrip() + "\n"


def main():
    ap = argparse.ArgumentParser(prog="./run bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="few repeats (a smoke run, not for RESULTS.md)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    ap.add_argument("--models-only", action="store_true",
                    help="only the whole-model table (replaced in place; the rest of the section is kept)")
    args = ap.parse_args()
    if args.models_only:
        table = kernels.models_only(quick=args.quick)
        print(table)
        if not args.no_write and not args.quick:
            path = Path(__file__).resolve().parent / "RESULTS.md"
            text = path.read_text()
            start = text.index(kernels.MODEL_TABLE)
            end = text.index(kernels.MODEL_TABLE_END, start) + len(kernels.MODEL_TABLE_END)
            atomic_write_text(path, text[:start] + table.rstrip() + text[end:])
            print(f"updated {path}")
        return
    body = kernels.main(quick=args.quick)
    print(body)
    if not args.no_write and not args.quick:
        path = Path(__file__).resolve().parent / "RESULTS.md"
        text = path.read_text() if path.exists() else HEADER
        atomic_write_text(path, _replace_section(text, SECTION, body))
        print(f"updated {path}")


if __name__ == "__main__":
    main()
