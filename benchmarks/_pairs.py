"""Timing two implementations of one operation side by side, for the codec benchmarks."""

from __future__ import annotations

import timeit
from collections.abc import Callable


def per_call(function: Callable[[], object], number: int) -> float:
    return timeit.timeit(function, number=number) / number


def paired_minimum(
    ours: Callable[[], object], theirs: Callable[[], object], repeat: int, theirs_share: int = 1
) -> tuple[float, float]:
    """Best µs per call of each, their repeats interleaved so that drift hits both alike.

    `theirs_share` divides the slower side's call count, to keep each run short."""
    number = max(1000, int(0.02 / max(per_call(ours, 200), 1e-9)))
    ours_times, theirs_times = [], []
    for _ in range(repeat):
        ours_times.append(per_call(ours, number))
        theirs_times.append(per_call(theirs, max(200, number // theirs_share)))
    return min(ours_times) * 1e6, min(theirs_times) * 1e6
