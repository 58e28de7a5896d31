"""The docs' examples and the CLI's live view against the lab's NAT and coturn.

Everything runs inside the client namespace (`lab.run`), as a reader would run it there.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ice_engine.lab import (
    DEAD_IPV4,
    PASSWORD,
    ROUTER_PUBLIC_IPV4,
    SERVER_IPV4,
    USERNAME,
    Lab,
)

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"


def run_example(lab: Lab, name: str, *args: str, env: dict[str, str] | None = None) -> str:
    extra = [f"{key}={value}" for key, value in (env or {}).items()]
    result = lab.run(
        ["env", f"PYTHONPATH={ROOT}", *extra, sys.executable, str(EXAMPLES / name), *args],
        timeout_s=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ice_tcp_example_echoes_through_each_passive_candidate(lab: Lab) -> None:
    out = run_example(lab, "ice_tcp_echo.py").splitlines()
    connections = [line for line in out if line.startswith("connection to ")]
    echoed = [line for line in out if line.endswith(" echoed hello")]
    assert len(connections) == len(echoed) == 3, out  # the client's 2 IPv4 and 1 IPv6
    for line in connections:  # to a passive candidate, from the same address
        _, _, local, port, _, peer, _ = line.split()
        assert local == peer and int(port) != 9


def test_stun_turn_example_gets_srflx_and_relay(lab: Lab) -> None:
    out = run_example(
        lab,
        "stun_turn.py",
        f"stun:{SERVER_IPV4}",
        f"turn:{SERVER_IPV4}",
        env={"ICE_USERNAME": USERNAME, "ICE_CREDENTIAL": PASSWORD},
    )
    srflx = re.findall(r"^srflx udp (\S+):\d+ \(via (\S+):\d+\)$", out, re.M)
    relay = re.findall(r"^relay udp (\S+):\d+ \(via (\S+):\d+\)$", out, re.M)
    assert srflx and all(address == ROUTER_PUBLIC_IPV4 for address, _ in srflx), out
    assert relay and all(address == SERVER_IPV4 for address, _ in relay), out
    assert all(via == ROUTER_PUBLIC_IPV4 for _, via in relay)
    assert out.rstrip().endswith("; 0 errors")


def test_a_driver_of_your_own_gathers_and_releases_through_the_core(lab: Lab) -> None:
    """docs/examples/sync_driver.py: the sans-I/O core driven by plain sockets and select,
    as docs/recipes/own-driver.md describes: srflx, relays (IPv6 too), an ICMP error at
    once, a dead server's 701 at the 2 s deadline, and the browser's ending. The closed
    port comes first: its ICMP error, queued while the name resolves, is reported at the
    next sendto from that socket, to 3478; the example once took that refusal for its
    own and failed the live server (CI: no srflx at all)."""
    started = time.monotonic()
    out = run_example(
        lab,
        "sync_driver.py",
        f"stun:{SERVER_IPV4}:3999",
        "turn:turn.lab.test",
        f"stun:{SERVER_IPV4}",
        f"stun:{DEAD_IPV4}",
        env={"ICE_USERNAME": USERNAME, "ICE_CREDENTIAL": PASSWORD},
    )
    assert time.monotonic() - started < 10  # not the allocations' refresh schedule
    events = [json.loads(line) for line in out.splitlines()]
    lines = [
        e["candidate"]["candidate"]
        for e in events
        if e["event"] == "icecandidate" and e["candidate"]
    ]
    assert sum(" typ srflx " in line for line in lines) == 2  # one per IPv4 base
    assert sum(" typ relay " in line for line in lines) == 3  # and IPv6 from the AAAA
    errors = {(e["url"], e["errorText"]) for e in events if e["event"] == "icecandidateerror"}
    assert errors == {
        (f"stun:{SERVER_IPV4}:3999", "STUN server unreachable (ICMP port unreachable)."),
        (f"stun:{DEAD_IPV4}", "STUN binding request timed out after 4 tries."),
    }
    assert [e["state"] for e in events if e["event"] == "icegatheringstatechange"] == [
        "gathering",
        "complete",
    ]
    assert events[-1] == {
        "event": "icecandidate",
        "candidate": None,
        "generation": 0,
        "t": events[-1]["t"],
    }


def test_aiortc_interop_with_relay_candidates(lab: Lab) -> None:
    pytest.importorskip("aiortc", reason="aiortc is not installed (pip install aiortc)")
    code = f"""
import asyncio, json
from ice_engine import Gatherer, IceServer
from ice_engine.interop import from_aioice, to_aioice, to_aiortc

async def main():
    servers = [IceServer("stun:{SERVER_IPV4}"), IceServer("turn:{SERVER_IPV4}", "{USERNAME}", "{PASSWORD}")]
    async with Gatherer(ice_servers=servers, mids=["0", "1"]) as gatherer:
        async for _ in gatherer.gather():
            pass
        out = []
        for c in gatherer.candidates:
            r = to_aiortc(c)
            back = from_aioice(to_aioice(c), sdp_mid=c.sdpMid, sdp_mline_index=c.sdpMLineIndex,
                               username_fragment=c.usernameFragment)
            out.append(dict(type=c.type, same=back.parsed == c.parsed._replace(network_id=None),
                            aiortc=[r.type, r.ip, r.port, r.relatedAddress, r.relatedPort, r.sdpMid, r.sdpMLineIndex],
                            ours=[c.type, c.address, c.port, c.relatedAddress, c.relatedPort, c.sdpMid, c.sdpMLineIndex]))
        print(json.dumps(out))

asyncio.run(main())
"""
    result = lab.run_python(code, timeout_s=60)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {row["type"] for row in rows} == {"host", "srflx", "relay"}
    for row in rows:
        assert row["same"], row
        assert row["aiortc"] == row["ours"], row


def test_cli_live_view_in_tmux_inside_the_lab(lab: Lab) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux): no terminal to render in")
    name = f"ice-engine-lab-{uuid.uuid4().hex[:8]}"

    def tmux(*args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", name, *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout

    command = " ".join(
        Lab.exec_args(
            "ice-client",
            [
                "env",
                "-u",
                "COLUMNS",
                "-u",
                "LINES",
                f"PYTHONPATH={ROOT}",
                sys.executable,
                "-m",
                "ice_engine",
                "gather",
                "--ice-server",
                f"stun:{SERVER_IPV4}",
                "--ice-server",
                f"turn:{SERVER_IPV4}",
                "--ice-server",
                f"stun:{DEAD_IPV4}",
                "--username",
                USERNAME,
                "--credential",
                PASSWORD,
                "--timeout",
                "1",
            ],
        )
    )
    tmux(
        "new-session",
        "-d",
        "-s",
        "view",
        "-x",
        "200",
        "-y",
        "60",
        f"{command}; echo EXIT=$?; sleep 120",
    )
    try:
        screen = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "EXIT=" not in screen:
            time.sleep(0.1)
            screen = tmux("capture-pane", "-p", "-J", "-t", "view")
        assert "EXIT=0" in screen, screen
        assert re.search(
            rf"│ srflx\s+│ \d+\s+│ udp\s+│ {re.escape(ROUTER_PUBLIC_IPV4)}\s+│", screen
        ), screen
        assert re.search(rf"│ relay\s+│ \d+\s+│ udp\s+│ {re.escape(SERVER_IPV4)}\s+│", screen), (
            screen
        )
        assert re.search(
            rf"│ stun:{re.escape(SERVER_IPV4)}\s+│ ok\s+│\s+\d+\.\d ms │\s+2 \(2 srflx\) │\s+0 │",
            screen,
        ), screen
        assert re.search(
            rf"│ turn:{re.escape(SERVER_IPV4)}\s+│ ok\s+│\s+\d+\.\d ms │\s+2 \(2 relay\) │\s+0 │",
            screen,
        ), screen
        assert re.search(
            rf"│ stun:{re.escape(DEAD_IPV4)}\s+│ failed\s+│\s+- │\s+0 │\s+2 \(701\) │", screen
        ), screen
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            tmux("kill-server")
