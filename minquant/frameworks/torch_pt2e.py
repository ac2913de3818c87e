"""PyTorch's current quantization flow, as callable recipes: torchao's pt2e (PT2 export) post-training
quantization with ``X86InductorQuantizer``, the converted Q/DQ graph run by torch as it stands (the
*reference*), and the same graph lowered by Inductor to oneDNN int8 kernels.

    converted = pt2e_ptq(model, calib, batch=4)          # torch.export → prepare_pt2e → calibrate → convert_pt2e
    y_ref = run_reference(converted, x)                  # float32 between every DQ and Q
    y_ind = inductor_compile(converted)(x)               # torch.compile, freezing on: onednn.qconv_pointwise ...
    codes, y = reference_run(converted, x)               # every Q's uint8 output of the reference, by fx name

This is what torch recommends since ``torch.ao.quantization`` (eager mode, FX mode) was deprecated:
``torch.export`` the float model, annotate it with a backend's quantizer, calibrate, convert, then
``torch.compile`` it. Only the compiled model runs integer arithmetic; the converted graph itself computes
every conv / linear / add / pool in float32 on dequantized values. Imports torch and torchao.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np

__all__ = ["pt2e_ptq", "run_reference", "inductor_compile", "reference_run", "compare_layers"]


def pt2e_ptq(model, calib, *, batch: int):
    """``model`` (float, eval mode) quantized with torchao's pt2e flow for x86 + Inductor: exported with
    ``torch.export.export(strict=True)`` on ``calib[:batch]`` (the strict tracer keeps torchvision's shared
    ``ReLU`` modules apart: ResNet's ``BasicBlock`` calls ``self.relu`` twice, and the non-strict export makes
    one partition with two outputs that ``X86InductorQuantizer`` refuses), ``prepare_pt2e`` with
    ``X86InductorQuantizer`` (its default config: uint8 activations with histogram observers, symmetric
    per-channel int8 weights), calibrated on ``calib`` in slices of ``batch`` (the exported graph has that
    static batch; a shorter tail is dropped), then ``convert_pt2e``. Returns the converted GraphModule."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    data = torch.from_numpy(calib) if isinstance(calib, np.ndarray) else torch.as_tensor(calib)
    if batch < 1 or len(data) < batch:
        raise ValueError(f"pt2e_ptq: need at least one batch of {batch} calibration samples, got {len(data)}")
    exported = torch.export.export(model.eval(), (data[:batch],), strict=True)
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported.module(), quantizer)
    with torch.no_grad():
        for i in range(0, len(data) - batch + 1, batch):
            prepared(data[i:i + batch])
    return convert_pt2e(prepared)


def run_reference(converted, x) -> np.ndarray:
    """The converted graph executed by torch as it stands (the pt2e reference): float32 logits."""
    import torch

    with torch.no_grad():
        return converted(torch.as_tensor(x)).numpy()


@contextlib.contextmanager
def _freezing():
    import torch._inductor.config as ic

    old = ic.freezing
    ic.freezing = True            # = TORCHINDUCTOR_FREEZING=1: weights become constants, Q/DQ patterns lower
    try:
        yield
    finally:
        ic.freezing = old


def inductor_compile(converted):
    """``torch.compile(converted)`` with Inductor's freezing on — the lowering to oneDNN int8 kernels
    (``onednn.qconv_pointwise``, ``qconv2d_pointwise.binary``, ``qlinear_pointwise``) and Inductor's C++ for the
    rest. Returns ``f(x) → NumPy``; the first call compiles (tens of seconds)."""
    import torch

    compiled = torch.compile(converted)

    def run(x):
        with _freezing(), torch.no_grad(), warnings.catch_warnings():
            # Inductor's mkldnn lowering copies a tensor with torch.tensor(t) (a UserWarning of its own code)
            warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning)
            return compiled(torch.as_tensor(x)).numpy()
    return run


def reference_run(converted, x, *, feed=None):
    """Run the converted graph with torch (float32 between DQ and Q); return ``(codes, output, pre)``: the
    uint8 output of every ``quantize_per_tensor`` node by fx node name (NCHW), the graph's float32 output,
    and for every Q the float32 number it rounded, ``f32(v·f32(1/s))`` (its distance to the nearest half
    says how close to a rounding tie the value was). ``feed`` ({fx name: codes}): use these codes as the
    output of those Q nodes instead — fed with another executor's codes, each layer's difference is its own
    (the reference's float arithmetic on the same input codes), not carried over from the layers before."""
    import torch

    qd = torch.ops.quantized_decomposed
    out: dict[str, np.ndarray] = {}
    pre: dict[str, np.ndarray] = {}
    feed = feed or {}

    class _Rec(torch.fx.Interpreter):
        def run_node(self, n):
            r = super().run_node(n)
            if n.op == "call_function" and n.target == qd.quantize_per_tensor.default:
                args, _ = self.fetch_args_kwargs_from_env(n)
                v = args[0].detach().contiguous().numpy()
                pre[n.name] = (v * np.float32(1.0 / float(args[1]))).astype(np.float32)
                out[n.name] = r.detach().contiguous().numpy().copy()
                if n.name in feed:
                    r = torch.from_numpy(np.ascontiguousarray(feed[n.name])).reshape(r.shape)
            return r

    with torch.no_grad():
        y = _Rec(converted).run(torch.as_tensor(x))
    return out, (y[0] if isinstance(y, (tuple, list)) else y).numpy(), pre


def compare_layers(qm, converted, x) -> list[dict]:
    """Per quantized value of ``qm`` (imported with :func:`minquant.from_torch_pt2e`), how the reference
    graph's codes differ from minquant's integer execution (= Inductor's, bit for bit) on ``x``:

    ``local_*``       the reference fed minquant's codes at every Q (:func:`reference_run` ``feed``): the
                      layer's own difference — its float32 arithmetic against the integer kernel on the same
                      input codes;
    ``propagated_*``  the reference run on its own codes end to end: the local differences carried forward.

    Each row: value, op, the fx Q node, count of codes, max |Δ| (LSBs) and count of differing codes of both,
    and ``local_tie``: over the locally differing codes, the largest distance of the reference's unrounded
    value ``f32(v·f32(1/s))`` from a half (None when none differ) — how close to a rounding tie they sat."""
    _, env = qm.run(np.asarray(x), intermediates=True, raw=True)
    links = qm.meta["pt2e_codes"]
    ops_of = {n.name: n.op for n in qm.graph.nodes}
    own, _, _ = reference_run(converted, x)
    fed, _, pre = reference_run(converted, x, feed={q: env[v] for v, q in links.items()})
    rows = []
    for v, q in links.items():
        mine = env[v].astype(np.int64)
        d_loc = np.abs(fed[q].reshape(mine.shape).astype(np.int64) - mine)
        d_own = np.abs(own[q].reshape(mine.shape).astype(np.int64) - mine)
        t = pre[q].reshape(mine.shape)[d_loc > 0].astype(np.float64)
        tie = float(np.abs(np.abs(t - np.floor(t)) - 0.5).max()) if t.size else None
        rows.append({"value": v, "op": ops_of[v], "q_node": q, "codes": int(mine.size), "local_tie": tie,
                     "local_max": int(d_loc.max()), "local_differing": int((d_loc > 0).sum()),
                     "propagated_max": int(d_own.max()), "propagated_differing": int((d_own > 0).sum())})
    return rows
