"""Many concurrent gatherers in one process, in the lab, against aioice 0.13.0 (needs root).

    python benchmarks/bench_scale.py [--json] [--stun-n 100,1000,6000,10000] [--turn-n 1000]
                                     [--turn-one-base-n 1000]
                                     [--aioice-max-n 10000] [--timeout-s 120] [--repeat 5]
                                     [--no-floor] [--profile N --profile-out FILE]

Each (library, scenario, N) runs in its own Python process inside the lab's client
namespace (`ice-client`, behind the NAT), so that its peak RSS is its own: N gatherers are
created and started at once in ONE asyncio loop, and every one is consumed to completion.
Scenarios:

- stun: host + srflx, `IceServer("stun:198.51.100.10")`; aioice
  `Connection(ice_controlling=True, stun_server=(ip, 3478))` + `gather_candidates()`.
- turn: host + srflx + relay, `IceServer("turn:198.51.100.10", "alice", "wonderland")`;
  aioice with `turn_server`, `turn_username`, `turn_password` (and the same STUN server,
  since our TURN allocation also yields the srflx). ice-engine allocates once per IPv4
  host base (2 in the lab); aioice once per component (1): ice-engine does twice the
  TURN work here. `--turn-one-base-n` runs it again with one IPv4 base per gatherer on
  both sides: one allocation each, the same work.

Figures per run: CPU ms per gathering (`time.process_time` from creating the first
gatherer to the last completion, / N; closing is reported apart), wall time to all
complete, peak RSS (`getrusage`), open fds once all are gathered (the peak: nothing is
closed before), memory per open gatherer (current RSS delta / N, all open, before close),
gatherings that completed, error events (ice-engine's icecandidateerror; for aioice,
gather_candidates() that raised), and gatherings missing the candidate type the server
should give (srflx, or relay for turn). Every run has a timeout; everything is closed.

Each (library, N) runs `--repeat` times (5), the libraries interleaved, and the run with
the median CPU is reported (all CPU figures are kept beside it). A third "library" runs
too: `_floor.py`, the least a host+srflx (or, for turn, host+srflx+relay, one allocation
as aioice makes) gathering can cost in CPython, whose ratio to aioice bounds what any
implementation could reach here.

The ratio to read is aioice CPU / ice-engine CPU, both measured in the same run.
`--profile N` adds one ice-engine stun run of N gatherers under cProfile (not counted in
the figures) and writes the top functions to `--profile-out` (and the raw stats to
`--profile-out`.prof). cProfile charges garbage-collection pauses to whatever function is
running when they strike, so each run also reports `gc_share_of_cpu`; with the variable
`BENCH_SCALE_NO_GC=1` the measured phase runs with the collector off, and with
`BENCH_SCALE_GC_THRESHOLD=50000,20,100` every run (both libraries) sets those thresholds
(`gc.set_threshold`), as a server tuned for thousands of sessions might.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
import _common  # noqa: E402 - this copy's ice_engine first on the path

STUN_PORT = 3478

# -- inside the client namespace ---------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _raise_nofile(n: int) -> int:
    """Up to 3 host sockets per gatherer in the lab (+1 TURN socket for aioice).

    The hard limit can be raised only with CAP_SYS_RESOURCE; without it the soft limit
    goes up to the hard one and the outer process picks a plan that fits.
    """
    needed = n * 4 + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    with open("/proc/sys/fs/nr_open") as f:
        ceiling = int(f.read())
    target = min(needed, ceiling)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
    except (ValueError, OSError):
        target = hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return target


async def _ours_one(gatherer: Any, stats: dict[str, int], want: str) -> None:
    from ice_engine import IceCandidateErrorEvent, IceCandidateEvent

    kinds: set[str] = set()
    async for event in gatherer.gather():
        if isinstance(event, IceCandidateEvent):
            if event.candidate is None:
                stats["completed"] += 1
            elif event.candidate.type is not None:
                kinds.add(event.candidate.type)
                stats["candidates"] += 1
        elif isinstance(event, IceCandidateErrorEvent):
            stats["errors"] += 1
            stats.setdefault(f"error_{event.errorCode}", 0)
            stats[f"error_{event.errorCode}"] += 1
    if want not in kinds:
        stats["missing"] += 1


async def _floor_one(gatherer: Any, stats: dict[str, int], want: str) -> None:
    lines = await gatherer.gather()
    stats["completed"] += 1
    error = gatherer.error  # the turn floor's Allocate, if it failed
    if error is not None:
        stats["errors"] += 1
        stats[f"error_{error}"] = stats.get(f"error_{error}", 0) + 1
    stats["candidates"] += len(lines)
    if not any(f"typ {want}" in line for line in lines):
        stats["missing"] += 1


async def _aioice_one(connection: Any, stats: dict[str, int], want: str) -> None:
    try:
        await connection.gather_candidates()
    except Exception as error:
        stats["errors"] += 1
        key = f"error_{type(error).__name__}"
        stats[key] = stats.get(key, 0) + 1
        return
    stats["completed"] += 1
    candidates = connection.local_candidates
    stats["candidates"] += len(candidates)
    if not any(c.type == want for c in candidates):
        stats["missing"] += 1


def _factory(impl: str, scenario: str, server: str, one_base: bool) -> Any:
    from ice_engine.lab import CLIENT_IPV4_A, CLIENT_IPV4_B, CLIENT_IPV6, PASSWORD, USERNAME

    if impl == "floor":
        import socket

        from _floor import FloorGatherer, FloorTurnGatherer

        addresses = [(socket.AF_INET, CLIENT_IPV4_A)]
        if not one_base:
            addresses += [(socket.AF_INET, CLIENT_IPV4_B), (socket.AF_INET6, CLIENT_IPV6)]
        if scenario == "turn":
            return lambda: FloorTurnGatherer((server, STUN_PORT), addresses, USERNAME, PASSWORD)
        return lambda: FloorGatherer((server, STUN_PORT), addresses)

    if impl == "ours":
        from ice_engine import Gatherer, IceServer

        if scenario == "stun":
            servers = [IceServer(f"stun:{server}")]
        else:
            servers = [IceServer(f"turn:{server}", USERNAME, PASSWORD)]
        if one_base:
            only = lambda _interface, address: address == CLIENT_IPV4_A  # noqa: E731
            return lambda: Gatherer(servers, address_filter=only)
        return lambda: Gatherer(servers)
    import aioice
    import aioice.ice

    if one_base:  # aioice has no address filter: give it the same single address
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [CLIENT_IPV4_A]

    if scenario == "stun":
        return lambda: aioice.Connection(ice_controlling=True, stun_server=(server, STUN_PORT))
    return lambda: aioice.Connection(
        ice_controlling=True,
        stun_server=(server, STUN_PORT),
        turn_server=(server, STUN_PORT),
        turn_username=USERNAME,
        turn_password=PASSWORD,
    )


def _perf(control: str, command: str) -> None:
    """Start or stop `perf record --control fifo:...` sampling (profile_layers.py)."""
    if control:
        with open(control, "w") as fifo:
            fifo.write(command + "\n")


async def _run(
    impl: str, scenario: str, n: int, timeout_s: float, one_base: bool, perf_control: str = ""
) -> dict[str, Any]:
    make = _factory(impl, scenario, _server(), one_base)
    one = {"ours": _ours_one, "aioice": _aioice_one, "floor": _floor_one}[impl]
    want = "srflx" if scenario == "stun" else "relay"

    # Warm up: imports, interface cache, the RTT table, code paths.
    warm = {"completed": 0, "errors": 0, "missing": 0, "candidates": 0}
    warm_objs = [make() for _ in range(3)]
    await asyncio.wait_for(asyncio.gather(*(one(o, warm, want) for o in warm_objs)), 30)
    await asyncio.wait_for(asyncio.gather(*(o.close() for o in warm_objs)), 30)
    del warm_objs
    import gc

    gc.collect()

    stats = {"completed": 0, "errors": 0, "missing": 0, "candidates": 0}
    gc_time = [0.0, 0.0, 0]  # total, started at, collections

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_time[1] = time.process_time()
        else:
            gc_time[0] += time.process_time() - gc_time[1]
            gc_time[2] += 1

    gc.callbacks.append(on_gc)
    if os.environ.get("BENCH_SCALE_NO_GC"):  # to profile without GC pauses blurring it
        gc.disable()
    threshold = os.environ.get("BENCH_SCALE_GC_THRESHOLD")
    if threshold:
        gc.set_threshold(*(int(x) for x in threshold.split(",")))
    rss_before = _rss_bytes()
    fds_before = _open_fds()
    cpu0 = time.process_time()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    _perf(perf_control, "enable")
    objs = [make() for _ in range(n)]
    tasks = [asyncio.ensure_future(one(o, stats, want)) for o in objs]
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    _perf(perf_control, "disable")
    wall1 = time.perf_counter()
    cpu1 = time.process_time()
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    gc.callbacks.remove(on_gc)
    rss_open = _rss_bytes()
    fds_open = _open_fds()
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=10)
    crashed = sum(1 for t in done if not t.cancelled() and t.exception() is not None)
    cpu2 = time.process_time()
    closing = [asyncio.ensure_future(o.close()) for o in objs]
    _, close_pending = await asyncio.wait(closing, timeout=max(30.0, timeout_s / 2))
    for task in close_pending:
        task.cancel()
    cpu3 = time.process_time()
    wall3 = time.perf_counter()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result: dict[str, Any] = {
        "n": n,
        "bases": "one IPv4" if one_base else "all (2 IPv4 + 1 IPv6)",
        "completed": stats["completed"],
        "errors": stats["errors"],
        "missing_" + want: stats["missing"],
        "timed_out": len(pending),
        "crashed": crashed,
        "candidates_per_gathering": round(stats["candidates"] / n, 2),
        "cpu_ms_per_gathering": (cpu1 - cpu0) * 1000 / n,
        # The split: user is the library's Python; sys is the kernel, which here includes
        # forwarding each packet through the lab's veth and NAT in the sender's context.
        "user_ms_per_gathering": (usage1.ru_utime - usage0.ru_utime) * 1000 / n,
        "sys_ms_per_gathering": (usage1.ru_stime - usage0.ru_stime) * 1000 / n,
        "cpu_ms_close_per_gathering": (cpu3 - cpu2) * 1000 / n,
        "gc_share_of_cpu": gc_time[0] / max(cpu1 - cpu0, 1e-9),
        "gc_collections": gc_time[2],
        "wall_s_all_complete": wall1 - wall0,
        "wall_s_close": wall3 - wall1,
        "peak_rss_mb": peak_kb / 1024,
        "rss_before_mb": rss_before / 2**20,
        "rss_all_open_mb": rss_open / 2**20,
        "kb_per_open_gatherer": (rss_open - rss_before) / 1024 / n,
        "fds_open_peak": fds_open,
        "fds_per_gatherer": (fds_open - fds_before) / n,
        "close_timed_out": len(close_pending),
    }
    result.update({k: v for k, v in stats.items() if k.startswith("error_")})
    return result


def _server() -> str:
    from ice_engine.lab import SERVER_IPV4

    return SERVER_IPV4


def _inner(args: argparse.Namespace) -> int:
    logging.disable(logging.CRITICAL)
    limit = _raise_nofile(args.n)
    if args.profile_out:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        result = asyncio.run(_run(args.impl, args.inner, args.n, args.timeout_s, args.one_base))
        profiler.disable()
        with open(args.profile_out, "w") as out:
            profiler.dump_stats(args.profile_out + ".prof")
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(35)
            stats.sort_stats("cumulative").print_stats(35)
            stats.sort_stats("tottime").print_callers(12)
    else:
        result = asyncio.run(
            _run(args.impl, args.inner, args.n, args.timeout_s, args.one_base, args.perf_control)
        )
    result["rlimit_nofile"] = limit
    print(json.dumps(result))
    return 0


# -- outside: the lab and the report -----------------------------------------------------


FDS_PER_GATHERER = 3  # the lab client's usable addresses: c0 v4, c1 v4, c0 v6


def _can_raise_hard() -> bool:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard + 1))
    except (ValueError, OSError):
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))  # lowering is always allowed
    return True


def _ints(text: str) -> list[int]:
    """An argparse type: `1000,10000` -> [1000, 10000]; `0` or an empty list runs nothing."""
    try:
        numbers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if any(n < 0 for n in numbers):
        raise argparse.ArgumentTypeError(f"N cannot be negative: {text!r}")
    return [n for n in numbers if n > 0]


def _one(
    lab: Any,
    impl: str,
    scenario: str,
    n: int,
    timeout_s: float,
    profile: str = "",
    one_base: bool = False,
) -> Any:
    argv = [sys.executable, str(HERE), "--inner", scenario, "--impl", impl, "--n", str(n)]
    argv += ["--timeout-s", str(timeout_s)]
    if one_base:
        argv.append("--one-base")
    if profile:
        argv += ["--profile-out", profile]
    started = time.perf_counter()
    try:
        run = lab.run(argv, timeout_s=timeout_s * 2 + 120)
    except Exception as error:
        return {"n": n, "failed": f"{type(error).__name__}: {error}"}
    if run.returncode != 0:
        return {"n": n, "failed": run.stderr.strip()[-2000:]}
    data = json.loads(run.stdout.strip().splitlines()[-1])
    data["process_wall_s"] = time.perf_counter() - started
    return data


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median CPU per gathering (of an even number, the lower of the two
    middle ones), with every run's CPU beside it."""
    measured = [r for r in runs if "cpu_ms_per_gathering" in r]
    if not measured:
        return runs[0]
    measured.sort(key=lambda r: r["cpu_ms_per_gathering"])
    median = dict(measured[(len(measured) - 1) // 2])
    median["cpu_ms_per_gathering_runs"] = [r["cpu_ms_per_gathering"] for r in measured]
    return median


def _fmt(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    if "failed" in row or "skipped" in row:
        return row.get("failed") or row.get("skipped")  # type: ignore[no-any-return]
    return (
        f"cpu {row['cpu_ms_per_gathering']:.3f} ms/g (user {row['user_ms_per_gathering']:.3f}, "
        f"sys {row['sys_ms_per_gathering']:.3f}), wall {row['wall_s_all_complete']:.2f} s, "
        f"done {row['completed']}/{row['n']}, err {row['errors']}, "
        f"missing {row.get('missing_srflx', row.get('missing_relay'))}, "
        f"peak RSS {row['peak_rss_mb']:.0f} MB, {row['kb_per_open_gatherer']:.1f} KB/g, "
        f"fds {row['fds_open_peak']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--stun-n", type=_ints, default="100,1000,6000,10000")
    parser.add_argument("--turn-n", type=_ints, default="1000")
    parser.add_argument(
        "--turn-one-base-n",
        type=_ints,
        default="1000",
        help="turn with one IPv4 base per gatherer: one allocation each, as aioice makes",
    )
    parser.add_argument("--aioice-max-n", type=_common.positive_int, default=10000)
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the floor yardstick (_floor.py)"
    )
    parser.add_argument(
        "--repeat",
        type=_common.positive_int,
        default=5,
        help="runs per library and N; the median is kept",
    )
    parser.add_argument("--timeout-s", type=_common.positive_seconds, default=120.0, help="per run")
    parser.add_argument("--profile", type=int, default=0, help="profile one ours/stun run of N")
    parser.add_argument("--profile-out", default="")
    parser.add_argument("--inner", choices=("stun", "turn"), help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=("ours", "aioice", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--one-base", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--perf-control", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        return _inner(args)
    if not (args.stun_n or args.turn_n or args.turn_one_base_n or args.profile):
        parser.error("nothing to run: every N is 0")

    from ice_engine.lab import lab_session, lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason is not None:
        message = f"bench_scale: skipped, the lab cannot run here: {reason}"
        print(message, file=sys.stderr)
        if args.json:
            print(json.dumps({"benchmark": "scale", "skipped": reason}))
        return 0
    plan = [("stun", n, False) for n in args.stun_n]
    plan += [("turn", n, False) for n in args.turn_n]
    plan += [("turn", n, True) for n in args.turn_one_base_n]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    results: dict[str, Any] = {"benchmark": "scale", "runs": [], "rlimit_nofile_hard": hard}
    with lab_session() as lab:
        results["lab_delay_ms"] = lab.delay_ms
        if lab.delay_ms and not args.json:  # another session's: these figures are for 0
            print(f"note: the lab's delay is {lab.delay_ms:g} ms, not 0")
        for scenario, n, equal_work in plan:
            row: dict[str, Any] = {"scenario": scenario, "n": n}
            # 3 host sockets per gatherer (+1 for aioice's TURN socket) must fit under the
            # hard fd limit, which only CAP_SYS_RESOURCE may raise; else one base each.
            one_base = n * (FDS_PER_GATHERER + (scenario == "turn")) + 512 > hard and (
                _can_raise_hard() is False
            )
            if equal_work:
                one_base = True
                row["note"] = (
                    "one IPv4 base per gatherer, both libraries: one allocation each, "
                    "the same TURN work on both sides"
                )
            elif one_base:
                row["note"] = (
                    f"{n} x {FDS_PER_GATHERER} sockets exceed the fd hard limit {hard} "
                    "(no CAP_SYS_RESOURCE): one IPv4 host base per gatherer, both libraries"
                )
            impls = {"ice_engine": "ours"}
            if n <= args.aioice_max_n:
                impls["aioice"] = "aioice"
            else:
                row["aioice"] = {"n": n, "skipped": f"capped at N <= {args.aioice_max_n}"}
            if not args.no_floor:
                impls["floor"] = "floor"
            # Interleaved repeats, and each side's median run: one run on a shared machine
            # can be 30 % off, and interleaving spreads the drift over both sides.
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in impls}
            for _ in range(args.repeat):
                for name, impl in impls.items():
                    runs[name].append(
                        _one(lab, impl, scenario, n, args.timeout_s, one_base=one_base)
                    )
            for name, done in runs.items():
                row[name] = _median_run(done)
            ours, theirs = row["ice_engine"], row["aioice"]
            floor = row.get("floor", {})
            if floor.get("completed") and theirs.get("completed"):
                # The best ratio any implementation could reach here (see _floor.py).
                row["cpu_ratio_aioice_over_floor"] = (
                    theirs["cpu_ms_per_gathering"] / floor["cpu_ms_per_gathering"]
                )
            if ours.get("completed") and theirs.get("completed"):  # no ratio of nothing
                row["cpu_ratio_aioice_over_ice_engine"] = (
                    theirs["cpu_ms_per_gathering"] / ours["cpu_ms_per_gathering"]
                )
                row["user_cpu_ratio_aioice_over_ice_engine"] = theirs[
                    "user_ms_per_gathering"
                ] / max(ours["user_ms_per_gathering"], 1e-9)
                row["wall_ratio_aioice_over_ice_engine"] = (
                    theirs["wall_s_all_complete"] / ours["wall_s_all_complete"]
                )
                row["memory_ratio_aioice_over_ice_engine"] = theirs["kb_per_open_gatherer"] / max(
                    ours["kb_per_open_gatherer"], 1e-9
                )
            results["runs"].append(row)
            if not args.json:
                print(f"{scenario} N={n}" + (f"  [{row['note']}]" if one_base else ""))
                print(f"  ice-engine: {_fmt(ours)}")
                print(f"  aioice    : {_fmt(theirs)}")
                if floor:
                    print(f"  floor     : {_fmt(floor)}")
                if "cpu_ratio_aioice_over_ice_engine" in row:
                    print(
                        f"  aioice/ice-engine CPU = {row['cpu_ratio_aioice_over_ice_engine']:.2f}x"
                        f" (target >= 5x), user CPU = "
                        f"{row['user_cpu_ratio_aioice_over_ice_engine']:.2f}x, "
                        f"wall = {row['wall_ratio_aioice_over_ice_engine']:.2f}x"
                    )
                if "cpu_ratio_aioice_over_floor" in row:
                    print(
                        f"  aioice/floor CPU = {row['cpu_ratio_aioice_over_floor']:.2f}x "
                        "(the most any implementation could reach)"
                    )
                sys.stdout.flush()
        if args.profile:
            out = args.profile_out or str(HERE.parent / "profile_scale.txt")
            row = _one(lab, "ours", "stun", args.profile, args.timeout_s, profile=out)
            results["profile"] = {"n": args.profile, "file": out, "run": row}
            if not args.json:
                print(f"profile of ice-engine stun N={args.profile} -> {out}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
