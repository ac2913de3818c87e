"""EfficientNet-Lite0 through torch's current int8 quantizer (torchao pt2e, X86InductorQuantizer) — the ladder's
torch int8 row for the model torch's eager PTQ cannot take without QuantStubs (issue 15).

    .venv/bin/python -m benchmarks.pt2e_efficientnet | tail -1 > benchmarks/figures/pt2e_efficientnet.json   # ~6 min

Calibration: ``photo_crops(100, split="calib")``, evaluation: ``photo_crops(200, split="eval")`` (EfficientNet-Lite's
mean 0.5 / std 0.5), as benchmarks/precision_ladder.py. ``pt2e_ptq(model, calib, batch=4)``; scored: the converted
Q/DQ graph run by torch (the reference), the Inductor-lowered model (``torch.compile`` with freezing: oneDNN int8
kernels) and ``minquant.from_torch_pt2e(converted)`` (target ``x86-inductor``) — top-1 agreement with the fp32
model and logit SQNR; minquant's codes against Inductor's as the share of equal logits. One thread.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from .provenance import commit  # noqa: E402

BATCH = 4


def main():
    import torch

    import minquant
    from minquant.data import efficientnet_lite as effl
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import efficientnet_lite0_imagenet
    from minquant.frameworks import torch_pt2e as tp
    from minquant.quantized.comparison import sqnr_db

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    t0 = time.time()
    model = efficientnet_lite0_imagenet().eval()
    calib = photo_crops(100, split="calib", mean=effl.MEAN, std=effl.STD)
    ev = photo_crops(200, split="eval", mean=effl.MEAN, std=effl.STD)
    with torch.no_grad():
        f = torch.cat([model(torch.from_numpy(ev[i:i + 25])) for i in range(0, len(ev), 25)]).numpy()
    converted = tp.pt2e_ptq(model, calib, batch=BATCH)
    out = dict(commit=commit(), command=".venv/bin/python -m benchmarks.pt2e_efficientnet", calib=100, eval=200)

    def score(name, y):
        out[name] = dict(agree=float((y.argmax(1) == f.argmax(1)).mean()), sqnr=float(sqnr_db(f, y)))
        print(name, out[name], f"{time.time() - t0:.0f} s", flush=True)

    batches = [ev[i:i + BATCH] for i in range(0, len(ev), BATCH)]
    score("reference", np.concatenate([tp.run_reference(converted, b) for b in batches]))
    ind = tp.inductor_compile(converted)
    y_ind = np.concatenate([ind(b) for b in batches])
    score("inductor", y_ind)
    qm = minquant.from_torch_pt2e(converted)
    y_mq = np.concatenate([qm(b) for b in batches])
    score("minquant", y_mq)
    out["minquant_equal_to_inductor"] = float(np.mean(y_mq == y_ind))
    out["bytes_minquant"] = int(qm.size_bytes())
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
