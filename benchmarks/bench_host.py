"""Host-only gathering: time to the first candidate, and CPU per gathering against aioice.

    python benchmarks/bench_host.py [--rounds 300] [--repeat 5] [--json]

Both libraries gather the same machine's interfaces in the same process and run, and the
ratio is what to read: absolute times on shared machines drift. CPU is measured in
`--repeat` blocks of `--rounds` gatherings, the libraries interleaved, and the medians
are compared (every block's figure is kept in the JSON): a single block moved the ratio
between 5.9x and 10.5x in three runs on a busy host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time

import _common  # this copy's ice_engine first on the path
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=_common.positive_int, default=300, help="gatherings per block"
    )
    parser.add_argument("--repeat", type=_common.positive_int, default=5, help="blocks per library")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the p95 of the first candidate needs two)")
    logging.disable(logging.WARNING)
    await first_candidate_latency(20)  # warm the process
    latency = await first_candidate_latency(args.rounds)
    ours_runs, theirs_runs = [], []
    for _ in range(args.repeat):
        ours_runs.append(await cpu_per_gathering(ours_once, args.rounds) * 1000)
        theirs_runs.append(await cpu_per_gathering(aioice_once, args.rounds) * 1000)
    ours, theirs = statistics.median(ours_runs), statistics.median(theirs_runs)
    result = {
        "first_candidate_ms_median": statistics.median(latency) * 1000,
        "first_candidate_ms_p95": statistics.quantiles(latency, n=20)[-1] * 1000,
        "cpu_ms_per_gathering_ice_engine": ours,
        "cpu_ms_per_gathering_aioice": theirs,
        "cpu_ratio_aioice_over_ice_engine": theirs / ours,
        "cpu_ms_per_gathering_ice_engine_runs": ours_runs,
        "cpu_ms_per_gathering_aioice_runs": theirs_runs,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"first host candidate after gather(): median {result['first_candidate_ms_median']:.3f} ms, "
        f"p95 {result['first_candidate_ms_p95']:.3f} ms (target <= 2 ms)"
    )
    print(
        f"CPU per host-only gathering (median of {args.repeat} blocks): ice-engine "
        f"{ours:.3f} ms, aioice {_common.aioice_version()} {theirs:.3f} ms -> aioice/ice-engine = "
        f"{theirs / ours:.1f}x (target >= 5x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
