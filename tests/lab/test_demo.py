"""`ice-engine demo`, as a person runs it on a fresh machine (as root)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ice_engine.lab import Lab

pytestmark = pytest.mark.lab


def test_demo_shows_host_srflx_and_relay(lab: Lab) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ice_engine", "demo", "--json", "--delay-ms", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = {
        e["candidate"]["candidate"].split()[7]
        for e in events
        if e["event"] == "icecandidate" and e["candidate"] and e["candidate"]["candidate"]
    }
    assert kinds == {"host", "srflx", "relay"}
    assert not [e for e in events if e["event"] == "icecandidateerror"]
    assert events[-1]["candidate"] is None
    assert "wonderland" not in result.stdout + result.stderr


def test_demo_plain_output_explains_the_lab(lab: Lab) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ice_engine", "demo", "--plain", "--delay-ms", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "network namespaces" in result.stdout
    assert "relay" in result.stdout and "srflx" in result.stdout
