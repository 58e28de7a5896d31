"""The floor yardsticks of `benchmarks/bench_scale.py` gather for real against coturn: a
floor that silently got less than the libraries it bounds would flatter nobody."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ice_engine.lab import Lab

pytestmark = pytest.mark.lab

BENCH_SCALE = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_scale.py"


@pytest.mark.parametrize(
    ("scenario", "one_base", "per_gathering"),
    [("stun", False, 5.0), ("turn", False, 5.0), ("turn", True, 3.0)],
)
def test_floor_gathers_what_the_libraries_gather(
    lab: Lab, scenario: str, one_base: bool, per_gathering: float
) -> None:
    argv = [sys.executable, str(BENCH_SCALE), "--inner", scenario, "--impl", "floor"]
    argv += ["--n", "20", "--timeout-s", "20"] + (["--one-base"] if one_base else [])
    run = lab.run(argv, timeout_s=90)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    want = "srflx" if scenario == "stun" else "relay"
    assert result["completed"] == 20
    # coturn refuses an Allocate from a 5-tuple whose allocation it deleted a moment ago
    # (437, a port reused across runs): the floor then ends without relay, as aioice does.
    missing = result[f"missing_{want}"]
    assert missing == result.get("error_437", 0) and result["errors"] == missing
    # stun: 3 host + 2 srflx (IPv4 bases); turn: 3 host + srflx + relay; one base: 1 + 2.
    assert result["candidates_per_gathering"] == pytest.approx(per_gathering - 2 * missing / 20)
    assert result["close_timed_out"] == 0
