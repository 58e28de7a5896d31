"""The `ice-engine` command, run as a user runs it: a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from ice_engine.interfaces import local_addresses


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ice_engine", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def events_of(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines()]


@pytest.fixture(autouse=True)
def _addresses() -> None:
    if not local_addresses():
        pytest.skip("this machine has no non-loopback address to gather from")


def test_json_lines_follow_the_browser_order() -> None:
    result = run("gather", "--json")
    assert result.returncode == 0, result.stderr
    events = events_of(result.stdout)
    assert events[0] == {
        "event": "icegatheringstatechange",
        "state": "gathering",
        "generation": 0,
        "t": events[0]["t"],
    }
    candidates = [e["candidate"] for e in events if e["event"] == "icecandidate" and e["candidate"]]
    hosts = [c for c in candidates if isinstance(c, dict) and c["candidate"]]
    assert len(hosts) == len(local_addresses())
    for host in hosts:
        assert isinstance(host, dict)
        assert set(host) == {"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"}
        assert str(host["candidate"]).startswith("candidate:")
        assert " typ host " in str(host["candidate"])
    assert events[-3]["candidate"] == {
        "candidate": "",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": hosts[0]["usernameFragment"],  # type: ignore[index]
    }
    assert events[-2]["event"] == "icegatheringstatechange" and events[-2]["state"] == "complete"
    assert events[-1] == {
        "event": "icecandidate",
        "candidate": None,
        "generation": 0,
        "t": events[-1]["t"],
    }
    assert all(isinstance(e["t"], float) for e in events)


def test_generations_mids_and_components() -> None:
    result = run("gather", "--json", "--generations", "2", "--mids", "0,1", "--components", "2")
    assert result.returncode == 0, result.stderr
    events = events_of(result.stdout)
    nulls = [
        i for i, e in enumerate(events) if e["event"] == "icecandidate" and e["candidate"] is None
    ]
    assert len(nulls) == 2
    for generation, chunk in enumerate((events[: nulls[0] + 1], events[nulls[0] + 1 :])):
        lines = [e["candidate"] for e in chunk if e["event"] == "icecandidate" and e["candidate"]]
        hosts = [c for c in lines if isinstance(c, dict) and c["candidate"]]
        ends = [c for c in lines if isinstance(c, dict) and not c["candidate"]]
        assert len(hosts) == 2 * 2 * len(local_addresses())
        assert all(f"generation {generation} " in str(c["candidate"]) for c in hosts)
        assert sorted(str(c["sdpMid"]) for c in ends) == ["0", "1"]
        assert len({str(c["usernameFragment"]) for c in lines}) == 1
        components = {str(c["candidate"]).split()[1] for c in hosts}
        assert components == {"1", "2"}
    states = [e["state"] for e in events if e["event"] == "icegatheringstatechange"]
    assert states == ["gathering", "complete", "gathering", "complete"]
    # every event says its generation, the null and the state changes too
    for generation, chunk in enumerate((events[: nulls[0] + 1], events[nulls[0] + 1 :])):
        assert {e["generation"] for e in chunk} == {generation}


def test_readable_view_by_default() -> None:
    result = run("gather")
    assert result.returncode == 0, result.stderr
    assert "host" in result.stdout and "complete" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["gather", "--ice-server", "stun://stun.example.org"], "stun://"),
        (["gather", "--ice-server", "http:x"], "scheme"),
        (["gather", "--ice-server", "stun:[2001:db8::1"], "2001:db8::1"),
        (["gather", "--ice-server", "turn:turn.example.org"], "username"),
        (["gather", "--components", "x"], "components"),
        (["gather", "--mids", "0,,1"], "mid"),
        (["gather", "--timeout", "-1"], "timeout"),
        (["gather", "--bogus"], "unrecognized"),
        (["gather", "--watch", "--generations", "2"], "--watch"),
        (["gather", "--ca-file", "/nonexistent/ca.pem"], "--ca-file /nonexistent/ca.pem"),
        (["frobnicate"], "invalid choice"),
        (["relay-check"], "relay-check needs a turn: or turns: server (--ice-server URL)"),
        (["relay-check", "--ice-server", "stun:198.51.100.10"], "not stun:198.51.100.10"),
        (["relay-check", "--ice-server", "turn:198.51.100.10"], "username"),
        (["gather", "--port-range", "5-3"], "'5-3' is not a range of ports within 1-65535"),
        (["gather", "--port-range", "40000-"], "'40000-' is not LOW-HIGH, two port numbers"),
    ],
)
def test_bad_input_is_one_line_and_status_2(args: list[str], needle: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ice-engine: ")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def _free_tcp_and_udp_ports(count: int) -> int:
    """The first of `count` consecutive ports free for TCP and UDP on every address."""
    for low in range(41000, 60000, 97):
        try:
            for port in range(low, low + count):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as probe:
                        probe.bind(("", port))
        except OSError:
            continue
        return low
    pytest.skip("no run of free ports")


def test_tcp_candidates_in_a_port_range() -> None:
    n = len(local_addresses())
    low = _free_tcp_and_udp_ports(2 * n)
    result = run("gather", "--json", "--tcp", "--port-range", f"{low}-{low + 2 * n - 1}")
    assert result.returncode == 0, result.stderr
    lines = [
        str(e["candidate"]["candidate"])  # type: ignore[index]
        for e in events_of(result.stdout)
        if e["event"] == "icecandidate" and e["candidate"] and e["candidate"]["candidate"]  # type: ignore[index]
    ]
    assert sorted(line.split()[2] for line in lines) == ["tcp"] * 2 * n + ["udp"] * n
    assert sum(" tcptype active" in line for line in lines) == n
    ports = [int(line.split()[5]) for line in lines if " tcptype active" not in line]
    assert all(low <= port < low + 2 * n for port in ports)
    readable = run("gather", "--plain", "--tcp")
    assert readable.stdout.count(" tcp active ") == n
    assert readable.stdout.count(" tcp passive ") == n


def test_a_port_range_too_small_for_a_restart_is_one_line_and_keeps_the_output() -> None:
    low = _free_tcp_and_udp_ports(1)
    result = run("gather", "--plain", "--port-range", f"{low}-{low}", "--generations", "2")
    assert result.returncode == 1
    assert "complete" in result.stdout  # the first generation's, all told
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ice-engine: cannot bind to ") and line.endswith(
        f"port_range {low}-{low}: no free port"
    )  # not "ice-engine: [Errno 98] cannot bind ...": the number tells a reader nothing


def test_help_has_examples() -> None:
    result = run("gather", "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout and "--ice-server" in result.stdout


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGHUP"])
def test_sigterm_ends_the_run_as_ctrl_c_does(signal_name: str) -> None:
    """`kill` or `timeout 5 ice-engine ...`, or the terminal closing (SIGHUP): the gatherer
    is closed (TURN allocations released; tests/lab/test_cli_lab.py checks that on coturn)
    and the summary of what was gathered is printed, with status 128 + the signal."""
    import signal
    import socket

    number = getattr(signal, signal_name)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        server = f"stun:127.0.0.1:{port}"
        argv = ["gather", "--plain", "--ice-server", server, "--timeout", "30"]
        process = subprocess.Popen(
            [sys.executable, "-m", "ice_engine", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        first = process.stdout.readline()  # gathering has started: host candidates follow
        seen = [process.stdout.readline()]
        while " host " not in seen[-1] and seen[-1]:  # until a host candidate is out
            seen.append(process.stdout.readline())
        process.send_signal(number)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 128 + number, err
    assert err == ""
    out = "".join(seen) + out
    lines = out.splitlines()
    assert f"server {server}: no answer yet; " in out  # not "no new candidates": it never answered
    assert "gathering" in first and " host)" in lines[-2]  # "2 candidates (2 host), ..."
    assert lines[-1].startswith("interrupted after")


def test_watch_keeps_the_generation_open_until_stopped() -> None:
    """`--watch` gathers continually: the host candidates come, and no end-of-candidates
    or null follows them (half a second, where a host-only gathering completes within a
    millisecond); SIGTERM ends it as usual."""
    import signal
    import time

    argv = [sys.executable, "-m", "ice_engine", "gather", "--watch", "--json"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    seen = [json.loads(process.stdout.readline())]
    while seen[-1]["event"] != "icecandidate":  # until the first host candidate is out
        seen.append(json.loads(process.stdout.readline()))
    time.sleep(0.5)  # what would complete it has long come by then
    process.send_signal(signal.SIGTERM)
    out = process.stdout.read()  # what readline() buffered, too (communicate() would lose it)
    assert process.stderr is not None
    err = process.stderr.read()
    assert process.wait(timeout=10) == 128 + signal.SIGTERM and err == "", err
    events = [*seen, *events_of(out)]
    assert events[0] == {**events[0], "event": "icegatheringstatechange", "state": "gathering"}
    assert any(e["event"] == "icecandidate" and e["candidate"] for e in events)
    assert all(e["event"] != "icecandidate" or e["candidate"] for e in events)  # no null
    assert all(e.get("state") != "complete" for e in events)


def test_a_gathering_ends_quietly_once_its_reader_has_left() -> None:
    """`ice-engine gather --ice-server stun:DEAD | head -1`: head left at once, but the
    run waited out the server's deadline (here 30 s) before its next line failed."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # never read: no answer, no ICMP
        server = f"stun:127.0.0.1:{silent.getsockname()[1]}"
        argv = [sys.executable, "-m", "ice_engine", "gather", "--json", "--timeout", "30"]
        argv += ["--ip-handling", "3"]  # no host candidates: nothing more to print for 30 s
        process = subprocess.Popen(
            [*argv, "--ice-server", server], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        assert json.loads(process.stdout.readline())["state"] == "gathering"
        _ends_quietly_once_its_reader_leaves(process)


def _ends_quietly_once_its_reader_leaves(process: subprocess.Popen[bytes]) -> None:
    """Its stdout closed, as `| head` or `| true` do: status 0 soon, nothing on stderr."""
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    try:
        assert process.wait(timeout=15) == 0
    finally:
        process.kill()
    assert process.stderr.read() == b""


@pytest.mark.parametrize("command", ["relay-check", "nat"])
def test_the_other_commands_end_quietly_once_their_reader_has_left(command: str) -> None:
    """`ice-engine relay-check --ice-server turn:DEAD ... | true` held its allocations
    (and the terminal) until its timeout, here 30 s: only `gather` watched its reader."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # never read: no answer, no ICMP
        port = silent.getsockname()[1]
        argv = [sys.executable, "-m", "ice_engine", command, "--timeout", "30"]
        if command == "nat":
            argv += ["--server", f"stun:127.0.0.1:{port}"]
        else:
            argv += ["--ice-server", f"turn:127.0.0.1:{port}", "--username", "u"]
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "ICE_ENGINE_CREDENTIAL": "p"},
        )
        _ends_quietly_once_its_reader_leaves(process)


def test_watch_ends_quietly_once_its_reader_has_left() -> None:
    """`ice-engine gather --watch | head -1`: head leaves at once, and the watch may
    have nothing more to print for hours; it notices anyway and ends with status 0."""
    argv = [sys.executable, "-m", "ice_engine", "gather", "--watch", "--json"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    assert json.loads(process.stdout.readline())["state"] == "gathering"
    process.stdout.close()  # as head does
    assert process.wait(timeout=10) == 0
    assert process.stderr.read() == ""
