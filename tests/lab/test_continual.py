"""Continual gathering: addresses that come and go while a generation is open."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from ice_engine.lab import CLIENT_NS, SERVER_IPV4, Lab
from tests.lab.lines import Lines

pytestmark = pytest.mark.lab

EXTRA = "203.0.113.140"

SCRIPT = """
import asyncio, json, subprocess
from ice_engine import Gatherer, IceServer

def ip(*args):
    subprocess.run(["ip", *args], check=True)

async def main():
    log = []
    async with Gatherer([IceServer("stun:{server}")], continual=True, tcp_candidates={tcp}) as gatherer:
        async def consume():
            async for event in gatherer.gather():
                c = getattr(event, "candidate", None)
                if event.type == "icegatheringstatechange":
                    log.append(["state", event.state.value, event.generation])
                elif c is None:
                    log.append([event.type, None, event.generation])
                else:
                    log.append([event.type, c.type, c.address, event.generation, c.protocol])

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        log.append(["mark", "adding"])
        ip("addr", "add", "{extra}/25", "dev", "c1")
        await asyncio.sleep(0.5)
        log.append(["mark", "removing"])
        ip("addr", "del", "{extra}/25", "dev", "c1")
        await asyncio.sleep(0.3)
        log.append(["mark", "restart"])
        await gatherer.restart()
        await task
        log.append(["state-after", gatherer.gathering_state.value])
    print(json.dumps(log))

asyncio.run(main())
"""


@pytest.mark.parametrize("tcp", [False, True])
def test_added_and_removed_addresses_in_the_open_generation(lab: Lab, tcp: bool) -> None:
    script = SCRIPT.format(server=SERVER_IPV4, extra=EXTRA, tcp=tcp)
    try:
        result = lab.run_python(script, timeout_s=30)
    finally:  # never leave the extra address behind
        subprocess.run(
            ["ip", "-n", CLIENT_NS, "addr", "del", f"{EXTRA}/25", "dev", "c1"],
            capture_output=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    log = json.loads(result.stdout)
    marks = {entry[1]: i for i, entry in enumerate(log) if entry[0] == "mark"}
    before = log[: marks["adding"]]
    assert ["state", "gathering", 0] in before
    assert not any(e[0] == "icecandidate" and e[1] is None for e in before)  # no null yet
    assert not any(e[1] == "" for e in before)
    added = log[marks["adding"] : marks["removing"]]
    assert ["icecandidate", "host", EXTRA, 0, "udp"] in added
    tcp_added = [e for e in added if e[1:3] == ["host", EXTRA] and e[-1] == "tcp"]
    assert len(tcp_added) == (2 if tcp else 0)  # active and passive
    assert any(e[:2] == ["icecandidate", "srflx"] for e in added)  # learnt via STUN too
    removed = log[marks["removing"] : marks["restart"]]
    assert ["candidateremoved", "host", EXTRA, 0, "udp"] in removed
    tcp_removed = [e for e in removed if e[0] == "candidateremoved" and e[-1] == "tcp"]
    assert len(tcp_removed) == (2 if tcp else 0)
    assert any(e[:2] == ["candidateremoved", "srflx"] for e in removed)
    ended = log[marks["restart"] :]
    assert ["state", "complete", 0] in ended
    assert ["icecandidate", None, 0] in ended
    assert ended[-1] == ["state-after", "complete"]


def test_the_cli_watches_addresses_come_and_go_until_stopped(lab: Lab) -> None:
    """`ice-engine gather --watch`: past the first pass, an address added shows as new
    candidates and its removal as REMOVED lines; SIGTERM ends it with the summary."""
    argv = [sys.executable, "-m", "ice_engine", "gather", "--watch", "--plain"]
    try:
        with Lab.process([*argv, "--ice-server", f"stun:{SERVER_IPV4}"]) as proc:
            lines = Lines(proc)
            by = time.monotonic() + 20
            first = lines.until("srflx", by)
            ip("addr", "add", f"{EXTRA}/25", "dev", "c1")
            added = lines.until(f"host   mid 0 comp 1 udp {EXTRA}:", by)
            ip("addr", "del", f"{EXTRA}/25", "dev", "c1")
            removed = lines.until("REMOVED", by)
            proc.send_signal(signal.SIGTERM)
            summary = lines.until("interrupted after", by)
            proc.wait(timeout=10)
            err = proc.stderr.read() if proc.stderr else ""
    finally:
        subprocess.run(
            ["ip", "-n", CLIENT_NS, "addr", "del", f"{EXTRA}/25", "dev", "c1"],
            capture_output=True,
            check=False,
        )
    assert proc.returncode == 128 + signal.SIGTERM and err == "", err
    assert not any("complete" in line for line in first + added + removed)  # still open
    assert f"REMOVED host   mid 0 comp 1 udp {EXTRA}:" in removed[-1]
    assert "removed since" in summary[-2], summary


def ip(*args: str) -> None:
    subprocess.run(["ip", "-n", CLIENT_NS, *args], check=True, capture_output=True)
