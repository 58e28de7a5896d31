"""Gathering latency in the lab, against aioice 0.13.0 in the same run (needs root).

    python benchmarks/bench_latency.py [--rtt-ms 50] [--rounds 10] [--json]

Brings the lab up (see docs/lab.md) with the given RTT between the NAT and coturn, then
runs each scenario inside the client namespace: time to the first candidate, to the
first srflx and to completion, for ice-engine and, where it can do the same work, for
aioice (which hands over all candidates at the end). Each figure is checked against its
RTT bound: srflx and completion within 1 RTT + 10 ms, plus one DNS round trip when a name
is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from typing import Any

import _common  # this copy's ice_engine first on the path

SCENARIOS = (
    "host",
    "stun",
    "stun-dns",
    "dead-server",
    "restart",
    "turn-udp",
    "turn-tcp",
    "turns",
    "turns-tls13",
    "turn-warm",
    "turn-restart",
)
#: Scenarios against the lab's extra servers (see ice_engine/lab/lab.py EXTRAS): skipped,
#: with the reason, where the lab could not start them.
NEEDS = {"turns-tls13": "stunnel", "turn-warm": "node-turn"}


# -- inside the client namespace -------------------------------------------------------


def _servers(urls: list[str]) -> list[Any]:
    from ice_engine import IceServer
    from ice_engine.lab import PASSWORD, USERNAME

    return [
        IceServer(u, USERNAME, PASSWORD) if u.startswith("turn") else IceServer(u) for u in urls
    ]


def _only_first_ipv4(interface: str, address: str) -> bool:
    from ice_engine.lab import CLIENT_IPV4_A

    return address == CLIENT_IPV4_A


async def _ours(urls: list[str], restart: bool = False) -> dict[str, float]:
    from ice_engine import Gatherer, IceCandidateEvent

    marks: dict[str, float] = {}
    # One base, as aioice's TURN client uses one: the same work on both sides.
    only = _only_first_ipv4 if any(u.startswith("turn") for u in urls) else None
    async with Gatherer(_servers(urls), address_filter=only) as gatherer:
        if restart:
            async for _event in gatherer.gather():
                pass
            started = time.perf_counter()
            await gatherer.restart()
        else:
            started = time.perf_counter()
        async for event in gatherer.gather():
            if not isinstance(event, IceCandidateEvent):
                continue
            elapsed = (time.perf_counter() - started) * 1000
            if event.candidate is None:
                marks["complete"] = elapsed
            elif event.candidate.type is not None:
                marks.setdefault("first", elapsed)
                marks.setdefault(event.candidate.type, elapsed)
    return marks


async def _aioice(
    stun_server: tuple[str, int] | None, turn: tuple[str, int, str, bool] | None = None
) -> dict[str, float]:
    import ssl

    import aioice

    from ice_engine.lab import CA_CERT_FILE, PASSWORD, USERNAME

    options: dict[str, Any] = {}
    if turn is not None:
        host, port, transport, secure = turn
        options = {
            "turn_server": (host, port),
            "turn_username": USERNAME,
            "turn_password": PASSWORD,
            "turn_transport": transport,
            "turn_ssl": ssl.create_default_context(cafile=str(CA_CERT_FILE)) if secure else False,
        }
    connection = aioice.Connection(ice_controlling=True, stun_server=stun_server, **options)
    started = time.perf_counter()
    await connection.gather_candidates()
    elapsed = (time.perf_counter() - started) * 1000
    marks = {"first": elapsed, "host": elapsed, "complete": elapsed}
    for kind in ("srflx", "relay"):
        if any(c.type == kind for c in connection.local_candidates):
            marks[kind] = elapsed
    await connection.close()  # it forgets its candidates
    return marks


async def _inner(scenario: str, rounds: int) -> dict[str, Any]:
    from ice_engine.lab import (
        DEAD_IPV4,
        NODE_TURN_PORT,
        SERVER_IPV4,
        STUN_HOST,
        TLS13_PORT,
        TURN_HOST,
    )

    logging.disable(logging.WARNING)
    ip = SERVER_IPV4
    plans: dict[str, tuple[list[str], Any, Any, bool]] = {
        "host": ([], None, None, False),
        "stun": ([f"stun:{ip}"], (ip, 3478), None, False),
        "stun-dns": ([f"stun:{STUN_HOST}:3478"], None, None, False),
        "dead-server": ([f"stun:{ip}", f"stun:{DEAD_IPV4}"], (DEAD_IPV4, 3478), None, False),
        "restart": ([f"stun:{ip}"], None, None, True),
        "turn-udp": ([f"turn:{ip}"], None, (ip, 3478, "udp", False), False),
        "turn-tcp": ([f"turn:{ip}?transport=tcp"], None, (ip, 3478, "tcp", False), False),
        "turns": ([f"turns:{TURN_HOST}"], None, (ip, 5349, "tcp", True), False),
        "turns-tls13": (
            [f"turns:{TURN_HOST}:{TLS13_PORT}?transport=tcp"],
            None,
            (ip, TLS13_PORT, "tcp", True),
            False,
        ),
        "turn-warm": (
            [f"turn:{ip}:{NODE_TURN_PORT}"],
            None,
            (ip, NODE_TURN_PORT, "udp", False),
            False,
        ),
        "turn-restart": ([f"turn:{ip}"], None, None, True),
    }
    urls, aioice_stun, aioice_turn, restart = plans[scenario]
    if scenario == "turn-warm":  # an earlier gatherer has met the server: its nonce is known
        await _ours(urls)
    ours = [await _ours(urls, restart) for _ in range(rounds)]
    theirs: list[dict[str, float]] = []
    if aioice_stun is not None or aioice_turn is not None or scenario == "host":
        aioice_rounds = 1 if scenario == "dead-server" else rounds
        theirs = [await _aioice(aioice_stun, aioice_turn) for _ in range(aioice_rounds)]
    return {"ours": ours, "aioice": theirs}


# -- outside: the lab and the report ---------------------------------------------------


def _median(runs: list[dict[str, float]], key: str) -> float | None:
    values = [run[key] for run in runs if key in run]
    return statistics.median(values) if values else None


def _bound(scenario: str, rtt: float) -> dict[str, float]:
    if scenario == "host":
        return {"complete": 10.0}
    if scenario == "stun-dns":
        # Cold: A and AAAA in parallel (1 RTT) then the binding (1 RTT); warm: 1 RTT.
        return {"srflx": 2 * rtt + 10, "complete": 2 * rtt + 10}
    if scenario == "dead-server":
        return {"srflx": rtt + 10, "complete": 2000 + 10}
    if scenario in ("turn-udp", "turn-restart"):  # 401 challenge, then the allocation
        return {"relay": 2 * rtt + 10, "complete": 2 * rtt + 10}
    if scenario == "turn-tcp":  # TCP handshake, then 2 RTT
        return {"relay": 3 * rtt + 10, "complete": 3 * rtt + 10}
    if scenario == "turns":
        # TCP, TLS, then 2 RTT. coturn 4.6 speaks TLS 1.2 only (a full handshake is 2 RTT),
        # but from the second connection on the session is resumed in 1 RTT: the median
        # (warm DNS cache, resumed session) is 4 RTT.
        return {"relay": 4 * rtt + 10, "complete": 4 * rtt + 10}
    if scenario == "turns-tls13":
        # TCP, TLS 1.3 (1 RTT, resumed or not), then 2 RTT; DNS is warm after round one.
        return {"relay": 4 * rtt + 10, "complete": 4 * rtt + 10}
    if scenario == "turn-warm":  # the cached realm and nonce: a signed Allocate at once
        return {"relay": rtt + 10, "complete": rtt + 10}
    return {"srflx": rtt + 10, "complete": rtt + 10}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=_common.positive_int, default=10)
    parser.add_argument("--scenario", choices=SCENARIOS, action="append")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--inner", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(asyncio.run(_inner(args.inner, args.rounds))))
        return 0

    from ice_engine.lab import CA_CERT_FILE, lab_session, lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason is not None:
        print(f"bench_latency: the lab cannot run here: {reason}", file=sys.stderr)
        return 2
    from ice_engine.lab.topology import MAX_DELAY_MS

    if not 0 <= args.rtt_ms <= 2 * MAX_DELAY_MS:  # the lab's delay link, each way
        parser.error(f"--rtt-ms must be 0-{2 * MAX_DELAY_MS}, not {args.rtt_ms:g}")
    results: dict[str, Any] = {"rtt_ms": args.rtt_ms, "scenarios": {}}
    with lab_session(delay_ms=args.rtt_ms / 2) as lab:
        for scenario in args.scenario or SCENARIOS:
            missing = lab.extra_missing(NEEDS[scenario]) if scenario in NEEDS else None
            if missing is not None:
                results["scenarios"][scenario] = {"skipped": missing}
                continue
            trust = f"SSL_CERT_FILE={CA_CERT_FILE}"  # turns: verifies with the lab's CA
            inner = [sys.executable, __file__, "--inner", scenario, "--rounds", str(args.rounds)]
            run = lab.run(["env", trust, *inner], timeout_s=120)
            if run.returncode != 0:
                print(f"bench_latency: {scenario} failed: {run.stderr.strip()}", file=sys.stderr)
                return 1
            data = json.loads(run.stdout)
            bound = _bound(scenario, args.rtt_ms)
            row: dict[str, Any] = {"bound_ms": bound}
            for who in ("ours", "aioice"):
                row[who] = {
                    k: _median(data[who], k)
                    for k in ("first", "host", "srflx", "relay", "complete")
                }
            row["within_bound"] = all(
                row["ours"][k] is not None and row["ours"][k] <= limit for k, limit in bound.items()
            )
            if row["aioice"]["complete"] and row["ours"]["complete"]:
                row["completion_ratio_aioice_over_ours"] = (
                    row["aioice"]["complete"] / row["ours"]["complete"]
                )
            results["scenarios"][scenario] = row
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"lab RTT {args.rtt_ms:.0f} ms, median of {args.rounds} rounds, times in ms from gather()"
    )
    print(
        f"{'scenario':<12} {'who':<10} {'first':>8} {'srflx':>8} {'relay':>8} {'complete':>9}"
        "  bound / ratio"
    )
    for scenario, row in results["scenarios"].items():
        if "skipped" in row:
            print(f"{scenario:<12} skipped: {row['skipped']}")
            continue
        for who in ("ours", "aioice"):
            marks = row[who]
            if marks["complete"] is None:
                continue
            cells = " ".join(
                f"{marks[k]:8.1f}" if marks[k] is not None else f"{'-':>8}"
                for k in ("first", "srflx", "relay")
            )
            note = ""
            if who == "ours":
                limits = ", ".join(f"{k} <= {v:.0f}" for k, v in row["bound_ms"].items())
                note = f"{'ok' if row['within_bound'] else 'MISSED'} ({limits})"
            elif "completion_ratio_aioice_over_ours" in row:
                note = f"aioice/ours completion = {row['completion_ratio_aioice_over_ours']:.1f}x"
            name = "ice-engine" if who == "ours" else "aioice"
            print(f"{scenario:<12} {name:<10} {cells} {marks['complete']:9.1f}  {note}")
    return 0


if __name__ == "__main__":
    subprocess_exit = main()
    sys.exit(subprocess_exit)
