"""Candidate parse/serialize speed: ice_engine.candidate against aioice.candidate, same run.

    python benchmarks/bench_codec_candidate.py [--json] [--repeat N]

The lines are what a browser sends over signalling (extension attributes included:
`generation 0 ufrag X network-id 1 network-cost 10`); the srflx and relay lines carry
`raddr`/`rport`. Operations:

- parse: str -> candidate object. ice-engine: `Candidate.parse(line)` on the full
  `candidate:` form; aioice: `Candidate.from_sdp(value)` on the value without the
  `candidate:` prefix (aioice does not accept the prefix). aioice drops `ufrag`,
  `network-id` and `network-cost`; ice-engine keeps and validates all of them.
- serialize: a parsed candidate -> str (`to_sdp()` on both sides).
- round trip: parse then serialize.

Each figure is the minimum over repeats of the mean time per call; the two libraries'
repeats are interleaved so that machine load affects both alike. The ratio is
aioice time / ice-engine time (> 1: ice-engine is faster).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from collections.abc import Callable
from functools import partial
from importlib.metadata import version

import _common  # this copy's ice_engine first on the path
from _pairs import measure_pair
from aioice.candidate import Candidate as AioCandidate

from ice_engine.candidate import Candidate

UFRAG = "EsAw"
EXT = f"generation 0 ufrag {UFRAG} network-id 1 network-cost 10"

#: name -> the `candidate:` attribute value, as Chrome sends it.
LINES = {
    "host_ipv4": f"candidate:1467250027 1 udp 2122260223 203.0.113.196 46243 typ host {EXT}",
    "host_ipv6": (
        f"candidate:2787934145 1 udp 2122262783 2001:db8:85a3::8a2e:370:7334 51478 typ host {EXT}"
    ),
    "srflx": (
        "candidate:842163049 1 udp 1686052607 198.51.100.1 47012 typ srflx "
        f"raddr 203.0.113.196 rport 46243 {EXT}"
    ),
    "relay": (
        "candidate:3745714477 1 udp 41885439 198.51.100.10 51522 typ relay "
        f"raddr 198.51.100.1 rport 47012 {EXT}"
    ),
    "host_tcp": (
        f"candidate:1191281711 1 tcp 1518280447 203.0.113.196 9 typ host tcptype active {EXT}"
    ),
}


def _value(line: str) -> str:
    return line.removeprefix("candidate:")


def ours_round_trip(line: str) -> str:
    return Candidate.parse(line).to_sdp()


def aioice_round_trip(value: str) -> str:
    return AioCandidate.from_sdp(value).to_sdp()


Case = tuple[str, str, Callable[[], object], Callable[[], object]]


def cases() -> list[Case]:
    found: list[Case] = []
    for name, line in LINES.items():
        value = _value(line)
        ours = Candidate.parse(line)
        theirs = AioCandidate.from_sdp(value)
        # Both must read the same candidate before their speed means anything.
        assert (ours.foundation, ours.component, ours.protocol, ours.priority) == (
            theirs.foundation,
            theirs.component,
            theirs.transport,
            theirs.priority,
        ), name
        assert (ours.address, ours.port, ours.type) == (theirs.host, theirs.port, theirs.type)
        assert (ours.related_address, ours.related_port, ours.tcptype, ours.generation) == (
            theirs.related_address,
            theirs.related_port,
            theirs.tcptype,
            theirs.generation,
        ), name
        assert ours.to_sdp() == line, (ours.to_sdp(), line)  # lossless
        assert (ours.ufrag, ours.network_id, ours.network_cost) == (UFRAG, 1, 10)
        found += [
            (name, "parse", partial(Candidate.parse, line), partial(AioCandidate.from_sdp, value)),
            (name, "serialize", ours.to_sdp, theirs.to_sdp),
            (name, "round trip", partial(ours_round_trip, line), partial(aioice_round_trip, value)),
        ]
    return found


def measure(case: Case, repeat: int) -> dict[str, object]:
    return measure_pair("candidate", case, repeat)


def summary(results: list[dict[str, object]]) -> dict[str, float]:
    """Geometric mean of the ratio per operation over all candidate lines."""
    out: dict[str, float] = {}
    for operation in ("parse", "serialize", "round trip"):
        ratios = [float(r["ratio"]) for r in results if r["operation"] == operation]  # type: ignore[arg-type]
        out[operation] = round(statistics.geometric_mean(ratios), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--repeat", type=_common.positive_int, default=7, help="repeats; the minimum is kept"
    )
    args = parser.parse_args()
    results = [measure(case, args.repeat) for case in cases()]
    ratios = summary(results)
    if args.json:
        report = {
            "benchmark": "codec_candidate",
            "python": platform.python_version(),
            "aioice": version("aioice"),
            "unit": "microseconds per operation",
            "results": results,
            "geomean_ratio_aioice_over_ice_engine": ratios,
        }
        print(json.dumps(report, indent=2))
        return
    print(
        f"ice_engine.candidate vs aioice {version('aioice')} (Python {platform.python_version()})"
    )
    print(f"{'candidate':<12}{'operation':<12}{'ice_engine µs':>14}{'aioice µs':>11}{'ratio':>8}")
    for row in results:
        print(
            f"{row['candidate']:<12}{row['operation']:<12}{row['ice_engine_us']:>14.3f}"
            f"{row['aioice_us']:>11.3f}{row['ratio']:>7.2f}×"
        )
    print(
        "geometric mean aioice/ice-engine: "
        + ", ".join(f"{op} {ratio:.2f}×" for op, ratio in ratios.items())
        + " (target: parse >= 2×)"
    )


if __name__ == "__main__":
    main()
