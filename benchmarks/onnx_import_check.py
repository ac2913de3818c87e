"""Full-size check of ``minquant.interop.onnx.importer.from_onnx`` / ``from_onnx_quantized`` against ONNX Runtime
(issue 6, import half).

    .venv/bin/python -m benchmarks.onnx_import_check            # 100 calib / 200 eval crops (a few minutes)
    .venv/bin/python -m benchmarks.onnx_import_check --quick    # 16 / 32

For each model file: run ONNX Runtime (CPU EP, default session options, one thread) and the imported
minquant model on the same batches and print how many logits differ, the largest |difference| and how
often the top-1 class agrees. Quantized imports must differ nowhere (bit-identical); float imports within
1e-4. Files: torchvision MobileNetV2 (ImageNet weights) exported with ``torch.onnx.export(dynamo=False)``,
quantized by ``onnxruntime.quantization.quantize_static`` (QDQ and QOperator, per-channel int8 weights,
uint8 activations, MinMax calibration on ``photo_crops(split='calib')``), evaluated on
``photo_crops(split='eval')``; TinyCNN trained on digits (test split) in float, QDQ, QOperator and
``quantize_dynamic`` form.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def compare(label, path, x, batch, float_model=False):
    import minquant
    from minquant.interop.onnx.importer import from_onnx, from_onnx_quantized
    from minquant.frameworks.ort_oracle import ort_runner
    t0 = time.perf_counter()
    imported = (from_onnx if float_model else from_onnx_quantized)(path)
    t_import = time.perf_counter() - t0
    run = (lambda b: minquant.run(imported, b)) if float_model else imported
    ort = ort_runner(path)
    ys, rs = [], []
    t_mq = t_ort = 0.0
    for i in range(0, len(x), batch):
        b = x[i:i + batch]
        t0 = time.perf_counter()
        ys.append(run(b))
        t_mq += time.perf_counter() - t0
        t0 = time.perf_counter()
        rs.append(ort(b))
        t_ort += time.perf_counter() - t0
    y, r = np.concatenate(ys), np.concatenate(rs)
    diff = np.abs(y.astype(np.float64) - r)
    ops = Counter(n.op for n in (imported.nodes if float_model else imported.graph.nodes))
    print(f"{label:38s} {len(x):4d} inputs  logits differing {int((y != r).sum()):6d} / {y.size}  "
          f"max |Δ| {diff.max():.3g}  top-1 agree {np.mean(y.argmax(1) == r.argmax(1)):.4f}  "
          f"(import {t_import:.1f} s, minquant {t_mq:.1f} s, ORT {t_ort:.1f} s)")
    print(f"{'':38s} nodes: " + ", ".join(f"{k}×{v}" for k, v in sorted(ops.items())))
    return int((y != r).sum()), float(diff.max())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 calibration / 32 evaluation crops")
    ap.add_argument("--calib", type=int, default=100)
    ap.add_argument("--eval", type=int, default=200)
    args = ap.parse_args(argv)
    n_cal, n_ev = (16, 32) if args.quick else (args.calib, args.eval)

    import onnx
    import onnxruntime
    import torch
    torch.set_num_threads(1)
    from minquant.data.datasets import photo_crops
    from minquant.target import Cpu
    from minquant.frameworks.ort_oracle import ort_quantize
    from minquant.frameworks.torch_oracle import export_onnx
    from minquant.data.zoo import mobilenet_v2_imagenet, tiny_cnn_digits

    print(f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, torch {torch.__version__}; "
          f"{Cpu.host().describe()}")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        model, (x_tr, _, x_te, _) = tiny_cnn_digits()
        fp32 = export_onnx(model, (1, 1, 28, 28), d / "tiny.onnx")
        compare("TinyCNN float", fp32, x_te, 60, float_model=True)
        compare("TinyCNN QDQ (static, 64 calib)", ort_quantize(fp32, x_tr[:64], d / "tiny_qdq.onnx"), x_te, 60)
        compare("TinyCNN QOperator (static, 64 calib)",
                ort_quantize(fp32, x_tr[:64], d / "tiny_qop.onnx", "qoperator"), x_te, 60)
        compare("TinyCNN quantize_dynamic", ort_quantize(fp32, None, d / "tiny_dyn.onnx", "dynamic"), x_te, 60)

        calib = photo_crops(n_cal, split="calib")
        x_ev = photo_crops(n_ev, split="eval")
        fp32 = export_onnx(mobilenet_v2_imagenet(), (1, 3, 224, 224), d / "mnv2.onnx")
        compare("MobileNetV2 float", fp32, x_ev, 20, float_model=True)
        t0 = time.perf_counter()
        qdq = ort_quantize(fp32, calib, d / "mnv2_qdq.onnx")
        print(f"(quantize_static QDQ on {n_cal} crops: {time.perf_counter() - t0:.1f} s)")
        compare(f"MobileNetV2 QDQ ({n_cal} calib)", qdq, x_ev, 20)
        compare(f"MobileNetV2 QOperator ({n_cal} calib)",
                ort_quantize(fp32, calib, d / "mnv2_qop.onnx", "qoperator"), x_ev, 20)
        compare("MobileNetV2 quantize_dynamic", ort_quantize(fp32, None, d / "mnv2_dyn.onnx", "dynamic"), x_ev, 20)


if __name__ == "__main__":
    main()
