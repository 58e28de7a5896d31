"""Host-only gathering: time to the first candidate, and CPU per gathering against aioice.

    python benchmarks/bench_host.py [--rounds 300] [--json]

Both libraries gather the same machine's interfaces in the same process and run, and the
ratio is what to read: absolute times on shared machines drift.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time

import aioice

from ice_engine import Gatherer, IceCandidateEvent


async def first_candidate_latency(rounds: int) -> list[float]:
    """Seconds from calling gather() to holding the first candidate, in a warm process."""
    samples = []
    for _ in range(rounds):
        gatherer = Gatherer()
        started = time.perf_counter()
        async for event in gatherer.gather():
            if isinstance(event, IceCandidateEvent) and event.candidate:
                samples.append(time.perf_counter() - started)
                break
        await gatherer.close()
    return samples


async def ours_once() -> None:
    gatherer = Gatherer()
    async for _event in gatherer.gather():
        pass
    await gatherer.close()


async def aioice_once() -> None:
    connection = aioice.Connection(ice_controlling=True)
    await connection.gather_candidates()
    await connection.close()


async def cpu_per_gathering(once: object, rounds: int) -> float:
    assert callable(once)
    for _ in range(10):  # warm up
        await once()
    started = time.process_time()
    for _ in range(rounds):
        await once()
    return (time.process_time() - started) / rounds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    await first_candidate_latency(20)  # warm the process
    latency = await first_candidate_latency(args.rounds)
    ours = await cpu_per_gathering(ours_once, args.rounds)
    theirs = await cpu_per_gathering(aioice_once, args.rounds)
    result = {
        "first_candidate_ms_median": statistics.median(latency) * 1000,
        "first_candidate_ms_p95": statistics.quantiles(latency, n=20)[-1] * 1000,
        "cpu_ms_per_gathering_ice_engine": ours * 1000,
        "cpu_ms_per_gathering_aioice": theirs * 1000,
        "cpu_ratio_aioice_over_ice_engine": theirs / ours,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"first host candidate after gather(): median {result['first_candidate_ms_median']:.3f} ms, "
        f"p95 {result['first_candidate_ms_p95']:.3f} ms (target <= 2 ms)"
    )
    print(
        f"CPU per host-only gathering: ice-engine {ours * 1000:.3f} ms, aioice 0.13.0 "
        f"{theirs * 1000:.3f} ms -> aioice/ice-engine = {theirs / ours:.1f}x (target >= 5x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
