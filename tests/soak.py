"""Soak: gather / restart / gather / close, many times over, with STUN and TURN in the lab.

    python tests/soak.py [--cycles 10000] [--sample-every 500] [--json]

Brings the lab up (or joins it; see docs/lab.md) and re-executes itself inside the client
namespace. Each cycle makes a `Gatherer` with `stun:198.51.100.10` and
`turn:198.51.100.10` (alice/wonderland), gathers a generation to completion, restarts,
gathers the second generation, and closes (which deallocates both generations' TURN
allocations). Every `--sample-every` cycles it samples open file descriptors
(/proc/self/fd), RSS (/proc/self/status), live asyncio tasks and Python objects, then
prints the series and whether it stayed flat: the same fds and tasks as at the first
sample, and RSS within 2 MiB of it (the first sample is after warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

RSS_SLACK_KIB = 2048


# -- inside the client namespace -------------------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _sample(cycle: int, started: float, counts: dict[str, int]) -> dict[str, Any]:
    gc.collect()
    return {
        "cycle": cycle,
        "t_s": round(time.perf_counter() - started, 2),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_kib": _rss_kib(),
        "tasks": len(asyncio.all_tasks()) - 1,
        "objects": len(gc.get_objects()),
        **counts,
    }


async def _inner(cycles: int, every: int) -> None:
    from ice_engine import Gatherer, IceCandidateErrorEvent, IceCandidateEvent, IceServer
    from ice_engine.lab import PASSWORD, SERVER_IPV4, USERNAME

    servers = [
        IceServer(f"stun:{SERVER_IPV4}"),
        IceServer(f"turn:{SERVER_IPV4}", USERNAME, PASSWORD),
    ]
    counts = {"relay": 0, "srflx": 0, "errors": 0, "incomplete": 0}
    started = time.perf_counter()
    for cycle in range(1, cycles + 1):
        async with Gatherer(servers) as gatherer:
            for generation in range(2):
                if generation:
                    await gatherer.restart()
                complete = False
                async for event in gatherer.gather():
                    if isinstance(event, IceCandidateErrorEvent):
                        counts["errors"] += 1
                    elif isinstance(event, IceCandidateEvent):
                        if event.candidate is None:
                            complete = True
                        elif event.candidate.type in ("relay", "srflx"):
                            counts[event.candidate.type] += 1
                counts["incomplete"] += not complete
        if cycle % every == 0 or cycle == 1:
            print(json.dumps(_sample(cycle, started, counts)), flush=True)


# -- outside: the lab and the report ---------------------------------------------------


def _flat(samples: list[dict[str, Any]]) -> dict[str, Any]:
    base = samples[1] if len(samples) > 2 else samples[0]  # after warm-up
    last = samples[-1]
    return {
        "fds_flat": all(s["fds"] == base["fds"] for s in samples[1:]),
        "tasks_flat": all(s["tasks"] == base["tasks"] for s in samples[1:]),
        "rss_growth_kib": last["rss_kib"] - base["rss_kib"],
        "rss_flat": last["rss_kib"] - base["rss_kib"] <= RSS_SLACK_KIB,
        "objects_growth": last["objects"] - base["objects"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--sample-every", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        asyncio.run(_inner(args.cycles, args.sample_every))
        return 0

    from ice_engine.lab import Lab, lab_session, lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason is not None:
        print(f"soak: the lab cannot run here: {reason}", file=sys.stderr)
        return 2
    samples: list[dict[str, Any]] = []
    with lab_session() as lab:
        argv = [sys.executable, os.path.abspath(__file__), "--inner"]
        argv += ["--cycles", str(args.cycles), "--sample-every", str(args.sample_every)]
        print(f"soak: {args.cycles} cycles, lab delay {lab.delay_ms} ms", flush=True)
        started = time.perf_counter()
        with subprocess.Popen(
            Lab.exec_args("ice-client", argv),
            stdout=subprocess.PIPE,
            text=True,
            env=Lab.python_env(),
        ) as child:
            assert child.stdout is not None
            for line in child.stdout:
                sample = json.loads(line)
                samples.append(sample)
                if not args.json:
                    print(
                        "cycle {cycle:6d}  t={t_s:8.1f}s  fds={fds:3d}  rss={rss_kib:6d} KiB  "
                        "tasks={tasks}  objects={objects:7d}  relay={relay} srflx={srflx} "
                        "errors={errors} incomplete={incomplete}".format(**sample),
                        flush=True,
                    )
        elapsed = time.perf_counter() - started
    if child.returncode != 0 or not samples:
        print(f"soak: the inner run failed (exit {child.returncode})", file=sys.stderr)
        return 1
    verdict = _flat(samples)
    cycles = samples[-1]["cycle"]
    verdict["ms_per_cycle"] = round(samples[-1]["t_s"] * 1000 / cycles, 2)
    verdict["wall_s"] = round(elapsed, 1)
    if args.json:
        print(json.dumps({"samples": samples, "verdict": verdict}))
    else:
        print(json.dumps(verdict))
    ok = verdict["fds_flat"] and verdict["tasks_flat"] and verdict["rss_flat"]
    print("soak: flat" if ok else "soak: NOT flat")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
