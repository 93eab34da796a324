"""Timing for the benchmarks: medians of steps timed in turn."""

import statistics
import time
from typing import Callable, List, Sequence

__all__ = ["median_seconds"]


def median_seconds(works: Sequence[Callable[[], object]], repeats: int) -> List[float]:
    """Median seconds of each of `works`, timed in turn `repeats` times (a noisy machine
    slows them alike, so their ratios hold)."""
    times: List[List[float]] = [[] for _ in works]
    for _ in range(repeats):
        for work, spent in zip(works, times):
            start = time.perf_counter()
            work()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]
