"""The lab's pieces that need no root: reasons, CLI errors, delay-link queueing, STUN parsing."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioice import stun

from ice_engine.lab import availability, cli, leases, probes
from ice_engine.lab.delaylink import Direction
from ice_engine.lab.lab import Lab


def test_not_root_is_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = availability.lab_unavailable_reason()
    assert reason is not None
    assert "root" in reason


def test_missing_tools_are_named_with_their_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(
        shutil,
        "which",
        lambda tool: None if tool in ("turnserver", "dnsmasq") else tool,
    )
    reason = availability.lab_unavailable_reason()
    assert reason is not None
    assert "turnserver, dnsmasq" in reason
    assert "coturn dnsmasq" in reason


def test_cli_says_why_and_returns_2_when_unavailable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "lab_unavailable_reason", lambda: "the network lab needs root")
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "ice-engine lab: the network lab needs root"


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["sideways"], "argument command: invalid choice: 'sideways'"),
        ([], "the following arguments are required: command"),
        (["up", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_cli_rejects_bad_input_in_one_line(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """As docs/lab.md says, and as the other commands do: argparse's usage line came first."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ice-engine lab: {error}") and err.count("\n") == 1, err


@pytest.mark.parametrize("delay", ["-5", "1e9", "nan"])
def test_a_delay_out_of_range_is_refused_before_the_lab_is_touched(
    delay: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "lab_unavailable_reason", lambda: None)
    monkeypatch.setattr(cli.Lab, "up", lambda *args, **kwargs: pytest.fail("lab touched"))
    assert cli.main(["up", "--delay-ms", delay]) == 2
    assert capsys.readouterr().err.strip() == "ice-engine lab: --delay-ms must be 0-1000"
    monkeypatch.undo()
    with pytest.raises(ValueError, match="delay_ms must be 0-1000"):
        Lab().up(delay_ms=float(delay))


@pytest.fixture
def link() -> Iterator[tuple[socket.socket, socket.socket, Direction]]:
    """A Direction over datagram socketpairs, which keep packet boundaries like TUN fds."""
    src_in, src_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    dst_in, dst_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock in (src_out, dst_out):
        sock.setblocking(False)
    yield src_in, dst_out, Direction(src_out.fileno(), dst_in.fileno())
    for sock in (src_in, src_out, dst_in, dst_out):
        sock.close()


def received(sock: socket.socket) -> list[bytes]:
    packets = []
    while True:
        try:
            packets.append(sock.recv(2048))
        except BlockingIOError:
            return packets


def test_delay_holds_packets_until_due(
    link: tuple[socket.socket, socket.socket, Direction],
) -> None:
    sender, receiver, direction = link
    sender.send(b"one")
    direction.receive(now=100.0, delay_s=0.025)
    direction.release_due(now=100.024)
    assert received(receiver) == []
    assert direction.next_due() == pytest.approx(100.025)
    direction.release_due(now=100.025)
    assert received(receiver) == [b"one"]


def test_a_shorter_delay_never_reorders(
    link: tuple[socket.socket, socket.socket, Direction],
) -> None:
    sender, receiver, direction = link
    sender.send(b"early")
    direction.receive(now=0.0, delay_s=0.050)
    sender.send(b"late")
    direction.receive(now=0.001, delay_s=0.0)  # delay lowered while "early" still waits
    direction.release_due(now=0.049)
    assert received(receiver) == []
    direction.release_due(now=0.050)
    assert received(receiver) == [b"early", b"late"]


def test_zero_delay_forwards_at_once(
    link: tuple[socket.socket, socket.socket, Direction],
) -> None:
    sender, receiver, direction = link
    for packet in (b"a", b"b", b"c"):
        sender.send(packet)
    direction.receive(now=0.0, delay_s=0.0)
    assert received(receiver) == [b"a", b"b", b"c"]
    assert direction.forwarded == 3


def test_binding_response_parsing_matches_aioice() -> None:
    request, transaction_id = probes.binding_request()
    assert stun.parse_message(request).message_method == stun.Method.BINDING
    for address in (("198.51.100.1", 40000), ("2001:db8:a::2", 3478)):
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = address
        assert probes.parse_binding_success(bytes(response), transaction_id) == address
        assert probes.parse_binding_success(bytes(response), bytes(12)) is None


def test_only_live_sessions_hold_leases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases, "USERS_DIR", tmp_path)
    own = leases.acquire()
    parent = os.getppid()
    (tmp_path / f"session-{parent}").write_text(leases._start_time(parent) or "")
    (tmp_path / "session-1").write_text("0")  # PID 1 is alive, but started at another time
    assert leases.other_sessions() == [parent]
    assert not (tmp_path / "session-1").exists()
    leases.release(own)
    assert not own.exists()


def test_extra_servers_say_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ice_engine.lab import nodeturn, stunnel

    monkeypatch.setattr(shutil, "which", lambda tool: None)
    assert "Node.js" in (nodeturn.unavailable_reason() or "")
    assert "stunnel4" in (stunnel.unavailable_reason() or "")
    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(nodeturn, "MODULE", tmp_path / "absent")
    assert "npm install" in (nodeturn.unavailable_reason() or "")


def test_extra_server_configs(tmp_path: Path) -> None:
    from ice_engine.lab import nodeturn, stunnel
    from ice_engine.lab import topology as t
    from ice_engine.lab.certs import TlsFiles

    tls = TlsFiles(tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key")
    stunnel.daemon(tmp_path, tls)
    conf = (tmp_path / "stunnel.conf").read_text()
    assert "sslVersionMin = TLSv1.3" in conf
    assert f"connect = {t.SERVER_IPV4}:{t.STUN_PORT}" in conf
    assert "r:TCP_NODELAY=1" in conf
    launcher = nodeturn.daemon(tmp_path)
    assert launcher.argv == ("node", str(tmp_path / "node-turn.js"))
    script = (tmp_path / "node-turn.js").read_text()
    assert f'"listeningPort": {t.NODE_TURN_PORT}' in script
    assert t.SERVER_ALT_IPV4 in script  # relays apart from coturn's addresses and ports
