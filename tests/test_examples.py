"""The scripts in docs/examples run as a reader would run them, and say what they should.

Only loopback is used: no servers, a closed loopback port as a failing STUN server, and a
websockets server on 127.0.0.1 as the signalling peer. The lab runs the server ones
(tests/lab/test_examples_lab.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ice_engine import Candidate
from ice_engine.interfaces import local_addresses

from .test_driver_robustness import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"


def run(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


@pytest.fixture(autouse=True)
def _addresses() -> None:
    if not local_addresses():
        pytest.skip("this machine has no non-loopback address to gather from")


#: Run in the lab only (tests/lab/test_examples_lab.py): they connect to the candidates'
#: addresses, which are the lab's documentation ranges there, not this machine's own.
LAB_ONLY = ("ice_tcp_echo.py",)


def test_every_example_is_tested() -> None:
    here = Path(__file__).read_text()
    for script in EXAMPLES.glob("*.py"):
        assert f'"{script.name}"' in here, script.name


def test_host_candidates() -> None:
    result = run("host_candidates.py")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    hosts = [line for line in lines if " candidate:" in line]
    assert len(hosts) == len(local_addresses())
    for line in hosts:
        Candidate.parse(line[line.index("candidate:") :])
    assert lines[0].endswith("state gathering")
    assert "end-of-candidates for mid 0" in lines
    assert "gathering complete" in lines
    assert re.fullmatch(rf"ufrag \S{{8}}, {len(hosts)} candidates", lines[-1])


@pytest.mark.parametrize("name", ["stun_turn.py", "sync_driver.py"])
def test_no_url_or_a_bad_one_is_one_line_on_stderr(name: str) -> None:
    usage = run(name)
    assert usage.returncode == 1 and "usage:" in usage.stderr
    bad = run(name, "turn:turn.example.org")  # no ICE_USERNAME/ICE_CREDENTIAL
    assert bad.returncode == 1 and "username" in bad.stderr and "Traceback" not in bad.stderr


def test_stun_turn_with_a_failing_server() -> None:
    port = free_port()  # closed: ICMP port unreachable (or, rate-limited, a timeout)
    result = run("stun_turn.py", f"stun:127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    assert f"error 701 from stun:127.0.0.1:{port}: " in result.stdout
    assert re.search(r"^done: \d+ host; \d+ errors$", result.stdout, re.M), result.stdout


def test_sync_driver_with_a_failing_server() -> None:
    """A driver of the sans-I/O core of its own (docs/recipes/own-driver.md)."""
    port = free_port()  # closed: ICMP port unreachable (or, rate-limited, a timeout)
    result = run("sync_driver.py", f"stun:127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    hosts = [e for e in events if e["event"] == "icecandidate" and e["candidate"]]
    assert len(hosts) == len(local_addresses()) + 1  # and the end-of-candidates
    errors = [e for e in events if e["event"] == "icecandidateerror"]
    assert errors and all(e["errorCode"] == 701 for e in errors)
    assert events[-1]["event"] == "icecandidate" and events[-1]["candidate"] is None


def test_non_trickle_sdp(tmp_path: Path) -> None:
    result = run("non_trickle_sdp.py")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "canTrickleIceCandidates: False"
    assert lines[1].startswith("a=ice-ufrag:") and lines[2].startswith("a=ice-pwd:")
    candidates = [line for line in lines if line.startswith("a=candidate:")]
    assert len(candidates) == len(local_addresses())
    for line in candidates:
        assert " ufrag " not in line  # SDP lines carry no ufrag: the a=ice-ufrag does
        Candidate.parse(line)
    assert lines[-1] == "a=end-of-candidates"
    trickle = tmp_path / "offer.sdp"
    trickle.write_text("v=0\r\na=ice-options:trickle\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n")
    result = run("non_trickle_sdp.py", str(trickle))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "canTrickleIceCandidates: True"
    sent = [line for line in result.stdout.splitlines() if line.startswith("send now:")]
    assert len(sent) == len(local_addresses()) + 2  # the candidates, "", then null
    assert sent[-1] == "send now: None" and "'candidate': ''" in sent[-2]


def test_websocket_trickle_demo() -> None:
    result = run("websocket_trickle.py")
    assert result.returncode == 0, result.stderr
    hosts = 2 * len(local_addresses())
    assert result.stdout.count("peer: host ") == hosts
    assert "peer: end-of-candidates for mid 0" in result.stdout
    assert "peer: end-of-candidates for mid 1" in result.stdout
    assert f"sent {hosts + 3} messages, the peer has {hosts} candidates" in result.stdout


def test_websocket_trickle_to_a_signalling_server() -> None:
    """A websockets server on loopback takes the messages; they are RTCIceCandidateInit."""
    pytest.importorskip("websockets", reason="websockets is not installed (the test extra)")
    from websockets.asyncio.server import ServerConnection, serve

    messages: list[dict[str, Any]] = []

    async def signalling(websocket: ServerConnection) -> None:
        messages.extend([json.loads(message) async for message in websocket])

    async def main() -> subprocess.CompletedProcess[str]:
        async with serve(signalling, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            return await asyncio.to_thread(run, "websocket_trickle.py", f"ws://127.0.0.1:{port}")

    result = asyncio.run(main())
    assert result.returncode == 0, result.stderr
    assert messages[0]["type"] == "ice-parameters"
    ufrag = messages[0]["usernameFragment"]
    assert len(messages[0]["password"]) >= 22
    inits = [m["candidate"] for m in messages[1:]]
    assert all(m["type"] == "candidate" for m in messages[1:])
    assert inits[-1] is None  # gathering complete, last
    found = [c for c in inits[:-1] if c["candidate"]]
    ends = [c for c in inits[:-1] if not c["candidate"]]
    assert len(found) == 2 * len(local_addresses())
    assert sorted(c["sdpMid"] for c in ends) == ["0", "1"]
    for init in found + ends:
        assert set(init) == {"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"}
        assert init["usernameFragment"] == ufrag
        assert init["sdpMLineIndex"] == int(init["sdpMid"])
    for init in found:
        assert Candidate.parse(init["candidate"]).ufrag == ufrag
    assert f"sent {len(inits)} messages to ws://127.0.0.1:" in result.stdout


def test_aiortc_interop() -> None:
    pytest.importorskip("aiortc", reason="aiortc is not installed (pip install aiortc)")
    result = run("aiortc_interop.py")
    assert result.returncode == 0, result.stderr
    n = len(local_addresses())
    assert len(re.findall(r"^aiortc: host \S+ sdpMid=0 sdpMLineIndex=0$", result.stdout, re.M)) == n
    assert f"aioice: {n} remote candidates" in result.stdout
    theirs = re.findall(r"^from aioice: (candidate:.*)$", result.stdout, re.M)
    assert theirs
    for line in theirs:
        assert Candidate.parse(line).ufrag is not None
