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


def measure_pair(
    label: str,
    case: tuple[str, str, Callable[[], object], Callable[[], object]],
    repeat: int,
    theirs_share: int = 1,
) -> dict[str, object]:
    """One result row: `label` names what was measured (a message, a candidate)."""
    name, operation, ours, theirs = case
    ours_us, theirs_us = paired_minimum(ours, theirs, repeat, theirs_share)
    return {
        label: name,
        "operation": operation,
        "ice_engine_us": round(ours_us, 3),
        "aioice_us": round(theirs_us, 3),
        "ratio": round(theirs_us / ours_us, 2),
    }
