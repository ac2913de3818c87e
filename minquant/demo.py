"""``minquant demo``: the Day-2 lesson end to end, as far as minquant goes today.

1. The seed's TinyCNN, trained on scikit-learn's digits: fp32 baseline, then PyTorch's
   ``quantize_dynamic(model, {nn.Linear, nn.Conv2d})`` exactly as the seed writes it — and what it really
   quantized (its Conv2d stay float: that is why the seed's "int8" model is barely smaller and slower).
2. minquant's integer kernels on every convolution of MobileNetV2 (torchvision's ImageNet weights, a real
   photo): the same uint8 codes as PyTorch's fbgemm kernels and ONNX Runtime's QLinearConv, element for
   element, and what the exact (textbook) arithmetic would have given instead.

3. The same TinyCNN through ``minquant.quantize_static``: int8 weights and activations, size and accuracy.

Parts that need later issues (pruned and distilled rows, ONNX export, the report folder) are listed at the
end as not yet in the demo. Imports torch: not part of the numpy-only core.
"""
from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np

from .timing import median_ms as _median_ms


def seed_dynamic_quantization(repeats: int = 200):
    """Part 1: returns a list of table rows and the per-module report of torch's quantize_dynamic."""
    import torch
    import torch.nn as nn

    from .training import accuracy
    from .zoo import tiny_cnn_digits

    model, (_, _, x_te, y_te) = tiny_cnn_digits()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        qdyn = torch.ao.quantization.quantize_dynamic(model, {nn.Linear, nn.Conv2d}, dtype=torch.qint8)
    report = []
    for name, mod in qdyn.named_modules():
        if not name or isinstance(mod, (nn.Sequential, nn.ModuleList)) or name.endswith("_packed_params"):
            continue
        quantized = type(mod).__module__.startswith("torch.ao.nn.quantized")
        report.append((name, f"{type(mod).__module__}.{type(mod).__name__}", quantized))
    rows = []
    x1 = torch.from_numpy(x_te[:1])
    for label, m in (("fp32", model), ("torch quantize_dynamic (seed)", qdyn)):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.pt")
            torch.save(m.state_dict(), path)
            size = os.path.getsize(path)
        with torch.no_grad():
            ms = _median_ms(lambda: m(x1), repeats)
            acc = accuracy(lambda x: m(torch.from_numpy(x)).numpy(), x_te, y_te)
        rows.append((label, size, ms, acc))
    return rows, report


def mobilenet_kernels_crosscheck():
    """Part 2: every conv of MobileNetV2 through minquant, torch fbgemm and ONNX Runtime."""
    from .kernels import QConv2d
    from .kernels.arithmetic import describe_cpu
    from .zoo import mobilenet_v2_conv_cases

    from reference import ort_quant, torch_quant   # the frameworks' recipes (repository top level)

    totals = dict(elements=0, torch=0, ort=0, exact_vs_torch=0)
    n_layers = 0
    for case in mobilenet_v2_conv_cases():
        x_q, xs, xz, w_q, ws, wz, b, ys, yz = case["args"]
        kw = case["kwargs"]
        with torch_quant.engine("fbgemm"):
            want_t = torch_quant.qconv2d(*case["args"], **kw)
        want_o = ort_quant.qlinear_conv(x_q, xs, xz, w_q, ws, wz.astype(np.int8), None, ys, yz, **kw)
        mine_fb = QConv2d(w_q, ws, wz, b, xs, xz, ys, yz, **kw, emulate="fbgemm")(x_q)
        mine_ort = QConv2d(w_q, ws, wz, b, xs, xz, ys, yz, **kw, emulate="onnxruntime")(x_q)
        exact = QConv2d(w_q, ws, wz, b, xs, xz, ys, yz, **kw, emulate="minquant")(x_q)
        n_layers += 1
        totals["elements"] += want_t.size
        totals["torch"] += int((mine_fb != want_t).sum())
        totals["ort"] += int((mine_ort != want_o).sum())
        totals["exact_vs_torch"] += int((exact != want_t).sum())
    return n_layers, totals, describe_cpu()


def tinycnn_static_int8(repeats: int = 200):
    """Part 3: the same TinyCNN through minquant.quantize_static (int8 weights *and* activations)."""
    import torch

    from .quantized import quantize_static
    from .training import accuracy
    from .zoo import tiny_cnn_digits

    model, (x_tr, _, x_te, y_te) = tiny_cnn_digits()
    qm = quantize_static(model, [x_tr[:256]], progress=False)
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    x1 = x_te[:1]
    with torch.no_grad():
        fp32_ms = _median_ms(lambda: model(torch.from_numpy(x1)), repeats)
    int8_ms = _median_ms(lambda: qm(x1), repeats)
    return dict(fp32_bytes=fp32_bytes, int8_bytes=qm.size_bytes(), fp32_acc=accuracy(model, x_te, y_te),
                int8_acc=accuracy(qm, x_te, y_te), fp32_ms=fp32_ms, int8_ms=int8_ms)


def main(quick: bool = False) -> int:
    import torch
    torch.set_num_threads(1)
    print("minquant demo — Day 2: Model Optimization\n")
    print("1. The seed's TinyCNN on scikit-learn digits (540 test images), PyTorch quantize_dynamic as the seed "
          "writes it")
    rows, report = seed_dynamic_quantization(repeats=50 if quick else 200)
    print(f"   {'variant':32s} {'state_dict bytes':>16s} {'batch-1 ms':>10s} {'accuracy':>9s}")
    for label, size, ms, acc in rows:
        print(f"   {label:32s} {size:16,d} {ms:10.3f} {acc:9.2%}")
    print(f"   size ratio {rows[0][1] / rows[1][1]:.2f}×, speed ratio {rows[0][2] / rows[1][2]:.2f}×")
    print("   what quantize_dynamic({nn.Linear, nn.Conv2d}) actually did, module by module:")
    for name, typ, q in report:
        print(f"     {name:14s} {'int8 ' if q else 'FLOAT'}  {typ}")
    print("   → Conv2d has no dynamic-quantized implementation in PyTorch: the convolutions stay float32.\n")
    print("2. minquant's integer kernels on every Conv2d of MobileNetV2 (ImageNet weights, one photo crop)")
    n, t, cpu = mobilenet_kernels_crosscheck()
    print(f"   CPU: {cpu}")
    print(f"   {n} layers, {t['elements']:,} output codes:")
    print(f"     minquant emulate='fbgemm'      vs torch.ops.quantized.conv2d (fbgemm): {t['torch']} differ")
    print(f"     minquant emulate='onnxruntime' vs ONNX Runtime QLinearConv:            {t['ort']} differ")
    print(f"     exact int32 arithmetic ('minquant') vs torch:                          {t['exact_vs_torch']:,} differ"
          " (int16 pair saturation)")
    print("\n3. minquant.quantize_static on the same TinyCNN (int8 weights and activations, fbgemm arithmetic)")
    r = tinycnn_static_int8(repeats=50 if quick else 200)
    print(f"   {'variant':32s} {'bytes':>16s} {'batch-1 ms':>10s} {'accuracy':>9s}")
    print(f"   {'fp32 (parameters)':32s} {r['fp32_bytes']:16,d} {r['fp32_ms']:10.3f} {r['fp32_acc']:9.2%}")
    print(f"   {'minquant static int8':32s} {r['int8_bytes']:16,d} {r['int8_ms']:10.3f} {r['int8_acc']:9.2%}")
    print(f"   {r['fp32_bytes'] / r['int8_bytes']:.2f}× smaller; minquant's NumPy/Numba executor is not yet faster "
          "than torch's fp32 on this tiny model (benchmarks/RESULTS_models.md).")
    print("\nNot yet in the demo (open issues): pruning and distillation rows, ONNX export run by ONNX Runtime, "
          "the report folder with plots; see benchmarks/RESULTS*.md for their figures.")
    return 0 if t["torch"] == 0 and t["ort"] == 0 else 1
