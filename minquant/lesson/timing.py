"""Latency measurement used by the demo and the benchmarks (one place, one rule).

``median_ms(fn, repeats, warmup=2)``: call ``fn`` ``warmup`` times untimed (JIT compilation, caches,
allocator), then ``repeats`` timed calls with ``time.perf_counter``; return the median in milliseconds.
Thread counts are the caller's business (``./run bench`` pins OMP/OpenBLAS/Numba to 1; call
``torch.set_num_threads(1)`` for torch). Never used to assert anything in tests: wall time is not a test.
"""
from __future__ import annotations

import time

import numpy as np

__all__ = ["median_ms"]


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls, after ``warmup`` untimed calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))
