"""Shared timing for the benchmark scripts (run as ``python benchmarks/bench_X.py``: this folder is on
sys.path, so ``from _timing import best_time``)."""
from __future__ import annotations

import time


def best_time(fn, repeats: int, sync=lambda: None) -> float:
    """The fastest of ``repeats`` calls of ``fn``, in seconds; ``sync`` (e.g. torch.cuda.synchronize)
    runs before the clock starts and before it stops, so queued device work is counted."""
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best
