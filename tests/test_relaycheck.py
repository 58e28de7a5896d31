"""relaycheck's parts without a network: which socket plays the peer, and how probes are
sent again, timed and given up on. End to end against coturn: tests/lab/test_relay_check.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from ice_engine import Candidate, IceCandidate, IceCandidateErrorEvent
from ice_engine.relaycheck import _peer_ips, _Probes, _source_for
from ice_engine.turn import Allocation, RequestFailed, TurnCredentials


def candidate(line: str, base: tuple[str, int] | None = None) -> IceCandidate:
    return IceCandidate(line, "0", 0, "ufrag", Candidate.parse(line), base)


HOST_A = candidate(
    "candidate:1 1 udp 2130706431 203.0.113.2 5000 typ host network-id 1", ("203.0.113.2", 5000)
)
HOST_B = candidate(
    "candidate:2 1 udp 2130706175 203.0.113.130 6000 typ host network-id 2", ("203.0.113.130", 6000)
)
HOST_V6 = candidate(
    "candidate:3 1 udp 2130706430 2001:db8:a::2 7000 typ host network-id 1", ("2001:db8:a::2", 7000)
)
SRFLX_B = candidate(
    "candidate:4 1 udp 1694498815 198.51.100.1 6000 typ srflx raddr 203.0.113.130 rport 6000 network-id 2",
    ("203.0.113.130", 6000),
)  # fmt: skip
TCP_HOST = candidate(
    "candidate:5 1 tcp 1518280447 203.0.113.2 7001 typ host tcptype passive network-id 1"
)


def relay(raddr: str, rport: int, network: int, address: str = "198.51.100.10") -> IceCandidate:
    return candidate(
        f"candidate:9 1 udp 41885439 {address} 50000 typ relay raddr {raddr} rport {rport} "
        f"network-id {network}"
    )


def test_the_peer_is_played_by_the_socket_the_allocation_was_made_from() -> None:
    every = [TCP_HOST, HOST_A, HOST_B, HOST_V6, SRFLX_B]
    assert _source_for(relay("198.51.100.1", 6000, 1), every) is SRFLX_B  # its srflx
    assert _source_for(relay("198.51.100.1", 7777, 2), every) is HOST_B  # over TCP: same network
    assert _source_for(relay("198.51.100.1", 7777, 9), every) is HOST_A  # else the first host
    assert _source_for(relay("2001:db8:a::2", 7000, 1, "2001:db8:b::10"), every) is HOST_V6
    assert _source_for(relay("2001:db8:a::2", 7000, 1, "2001:db8:b::10"), [HOST_A]) is None


def test_with_no_nat_the_peer_is_played_by_the_base_itself() -> None:
    """No NAT: the mapped address is the base's own, so no srflx shows it, and every relay
    was probed from the first host of its network, permitted for another IP, and failed
    (two addresses on one interface: a stable and a temporary IPv6 one; a review)."""
    a = candidate("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host network-id 1", ("127.0.0.1", 5000))
    b = candidate("candidate:2 1 udp 2130706175 127.0.0.2 6000 typ host network-id 1", ("127.0.0.2", 6000))
    assert _source_for(relay("127.0.0.2", 6000, 1, "127.0.0.1"), [a, b]) is b
    assert _source_for(relay("127.0.0.2", 41234, 1, "127.0.0.1"), [a, b]) is b  # over TCP
    assert _source_for(relay("127.0.0.1", 5000, 1, "127.0.0.1"), [a, b]) is a


def test_the_peer_permitted_is_the_sources_public_address() -> None:
    every = [HOST_A, HOST_B, HOST_V6, SRFLX_B]
    b, a, v6 = ("203.0.113.130", 6000), ("203.0.113.2", 5000), ("2001:db8:a::2", 7000)
    assert _peer_ips(relay("198.51.100.1", 6000, 2), b, every) == {"198.51.100.1"}
    # over TCP, the allocation's mapping (the relay's related address) and the srflx's
    assert _peer_ips(relay("198.51.100.7", 7777, 2), b, every) == {"198.51.100.7", "198.51.100.1"}
    assert _peer_ips(relay("198.51.100.7", 7777, 1), a, every) == {"198.51.100.7"}
    # the IPv6 relay of a dual allocation made over IPv4: no NAT known, the host's own
    dual = relay("198.51.100.1", 6000, 2, "2001:db8:b::10")
    assert _peer_ips(dual, v6, every) == {"2001:db8:a::2"}


PEER = {"198.51.100.1"}  # the IP permitted


def allocation() -> Allocation:
    credentials = TurnCredentials("alice", "wonderland")
    return Allocation(("198.51.100.10", 3478), credentials=credentials, deadline=10.0)


async def test_probes_go_again_until_one_arrives_and_that_one_is_timed() -> None:
    probes, sent = _Probes(), list[bytes]()

    def send(token: bytes) -> None:
        sent.append(token)
        if len(sent) == 2:  # the first was lost; the second arrives at once
            probes.arrived(None, ("198.51.100.1", 4000), token)

    result = await probes.exchange(send, allocation(), PEER, timeout=2.0)
    assert len(sent) == 2 and sent[0] != sent[1]
    assert isinstance(result, tuple)
    peer, ms = result
    assert peer == ("198.51.100.1", 4000) and 0 <= ms < 100  # not since the first probe
    probes.arrived(None, ("198.51.100.1", 4000), sent[0])  # late: nobody waits for it now


async def test_nothing_through_is_said_once_the_time_is_up() -> None:
    probes, sent = _Probes(), list[bytes]()
    result = await probes.exchange(sent.append, allocation(), PEER, timeout=0.6)
    assert result == "nothing came through in 0.6 s"
    assert len(sent) == 3  # at 0, 0.25 and 0.5 s


async def test_a_refused_permission_ends_the_probes_with_its_code() -> None:
    probes, held = _Probes(), allocation()
    failure = RequestFailed("CreatePermission", 403, "Forbidden", (("198.51.100.1", 9),))
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, probes.refused, held, failure)
    await probes.permitted(held, PEER, timeout=2.0)  # ends with the refusal
    refused = await probes.exchange(lambda _: None, held, PEER, 2.0)
    assert refused == "permission refused: 403 Forbidden"
    assert await probes.exchange(lambda _: None, allocation(), PEER, 0.01) != refused


async def test_a_dual_allocations_refused_family_does_not_fail_the_others_check() -> None:
    """The IPv6 relay's permission refused (a peer the server's policy forbids) failed the
    IPv4 relay's check of the same allocation before a probe went (found by a review)."""
    probes, dual = _Probes(), allocation()
    failure = RequestFailed("CreatePermission", 403, "Forbidden", (("2001:db8:a::2", 9),))
    probes.refused(dual, failure)
    await probes.permitted(dual, {"2001:db8:a::2"}, timeout=2.0)  # at once: refused
    v6 = await probes.exchange(lambda _: None, dual, {"2001:db8:a::2"}, 2.0)
    assert v6 == "permission refused: 403 Forbidden"
    v4 = await probes.exchange(lambda _: None, dual, PEER, 0.01)
    assert v4 == "nothing came through in 0.01 s"  # probed, not refused


async def test_a_probe_that_arrives_ends_the_wait_at_once() -> None:
    """asyncio.wait's default waited for every probe sent, so one that arrived while an
    earlier one was lost was noticed at the next resend, 250 ms late (a review)."""
    probes, sent = _Probes(), list[bytes]()
    loop = asyncio.get_running_loop()

    def send(token: bytes) -> None:
        sent.append(token)
        if len(sent) == 2:  # the first is lost; this one arrives 50 ms later
            loop.call_later(0.05, probes.arrived, None, ("198.51.100.1", 4000), token)

    result = await probes.exchange(send, allocation(), PEER, timeout=2.0)
    assert isinstance(result, tuple) and len(sent) == 2  # no third, due at 0.5 s


@pytest.mark.parametrize("error", [OSError(101, "Network is unreachable"), ValueError("too big")])
async def test_a_probe_that_cannot_be_sent_says_why(error: Exception) -> None:
    def send(_token: bytes) -> None:
        raise error

    assert await _Probes().exchange(send, allocation(), PEER, 2.0) == f"cannot send: {error}"


@pytest.mark.parametrize("json_output", [False, True])
async def test_a_relay_check_that_fails_writes_no_summary(
    monkeypatch: pytest.MonkeyPatch, json_output: bool
) -> None:
    """A gathering that raised (out of fds) still printed "no relay candidate gathered:
    nothing to check", or an `"ok": false` report, as if it had run (a review): the
    error's one line on stderr is the whole story."""
    import io

    from ice_engine import cli

    async def failing(*_args: object, **_kwargs: object) -> AsyncGenerator[object, None]:
        raise OSError(24, "Too many open files")
        yield  # an async generator

    monkeypatch.setattr(cli, "relay_checks", failing)
    args = _relay_check_args(cli, json_output)
    out = io.StringIO()
    with pytest.raises(OSError, match="Too many open files"):
        await cli._relay_check(args, out)
    assert out.getvalue() == ""


async def test_a_write_that_fails_still_closes_the_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that raised in the loop (a broken pipe) left the checks to asyncio.run's
    shutdown, after every task had been cancelled (a review): they are closed at once."""
    import io

    from ice_engine import cli

    closed = []

    async def one_result(*_args: object, **_kwargs: object) -> AsyncGenerator[object, None]:
        try:
            yield IceCandidateErrorEvent("turn:127.0.0.1", None, None, 701, "x", 0, 0.0)
            await asyncio.sleep(10)
        finally:
            closed.append(True)

    class Broken(io.StringIO):
        def write(self, _text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "relay_checks", one_result)
    with pytest.raises(BrokenPipeError):
        await cli._relay_check(_relay_check_args(cli, False), Broken())
    assert closed == [True]


def _relay_check_args(cli: Any, json_output: bool) -> Any:
    argv = ["relay-check", "--ice-server", "turn:127.0.0.1", "--username", "u", "--credential", "c"]
    args = cli.build_parser().parse_args(argv + ["--json"] * json_output)
    cli._load_config(args)
    return args


def test_every_url_is_checked_at_the_call_stun_ones_too() -> None:
    """Only TURN URLs reached a gatherer, so a malformed STUN URL beside them passed
    unseen (a review)."""
    from ice_engine import IceServer, InvalidServerUrl
    from ice_engine.relaycheck import relay_checks

    with pytest.raises(InvalidServerUrl, match="empty host"):
        relay_checks([IceServer(["turn:127.0.0.1", "stun:"], "u", "c")])


@pytest.mark.parametrize("timeout", [10**5000, -(10**400)], ids=["huge", "huge-negative"])
def test_a_huge_int_timeout_is_named_not_printed(timeout: int) -> None:
    """repr() of an int of over 4300 digits raises: the message said nothing of timeout."""
    from ice_engine import IceServer, Timing
    from ice_engine.relaycheck import relay_checks

    with pytest.raises(ValueError, match="timeout must be a positive number of seconds, not "):
        relay_checks([IceServer("turn:127.0.0.1", "u", "c")], timeout=timeout)
    with pytest.raises(ValueError, match=r"Timing\.server_deadline must be a positive number"):
        Timing(server_deadline=timeout)


async def test_a_second_cancellation_while_cleaning_up_still_closes_every_gatherer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C, then SIGTERM while the checks were being stopped: the gatherers' closes,
    after that, never ran, and their allocations stayed held (a review)."""
    import socket

    from ice_engine import IceServer, relaycheck

    made: list[Any] = []

    class Counted(relaycheck.Gatherer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(relaycheck, "Gatherer", Counted)
    silent = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        for sock in silent:
            sock.bind(("127.0.0.1", 0))
        servers = [IceServer(f"turn:127.0.0.1:{s.getsockname()[1]}", "u", "c") for s in silent]

        async def consume() -> None:
            async for _ in relaycheck.relay_checks(servers, timeout=5):
                pass

        loop = asyncio.get_running_loop()
        task = loop.create_task(consume())
        await asyncio.sleep(0.3)
        task.cancel()
        loop.call_soon(task.cancel)  # again, while the generator cleans up
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)
        assert len(made) == 2
        assert [(g._closed, len(g._table.sockets)) for g in made] == [(True, 0), (True, 0)]
    finally:
        for sock in silent:
            sock.close()


async def test_the_address_a_stun_server_sees_us_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_seen_from`: a Binding request to port 3478 of the relay's server; the mapped IP,
    or None at once when the port is closed (ICMP) and after `wait` when nothing answers."""
    import socket

    from ice_engine import relaycheck, stun

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    loop = asyncio.get_running_loop()

    seen = ["203.0.113.9"]

    def answer() -> None:
        data, source = server.recvfrom(2048)
        request = stun.parse(data)
        tid = request.transaction_id
        mapped = [(stun.Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value(seen[0], 4, tid))]
        reply = stun.encode(stun.Method.BINDING, stun.MessageClass.SUCCESS, tid, mapped)
        server.sendto(b"not STUN", source)  # ignored
        server.sendto(reply, source)

    loop.add_reader(server.fileno(), answer)
    try:
        monkeypatch.setattr(relaycheck, "_STUN_PORT", server.getsockname()[1])
        assert await relaycheck._seen_from("127.0.0.1", "127.0.0.1", 2.0) == "203.0.113.9"
        seen[0] = "224.0.0.1"  # no peer can be permitted there: not taken (a review)
        assert await relaycheck._seen_from("127.0.0.1", "127.0.0.1", 2.0) is None
        loop.remove_reader(server.fileno())
        started = loop.time()
        assert await relaycheck._seen_from("127.0.0.1", "127.0.0.1", 0.6) is None  # silent
        assert loop.time() - started >= 0.5
    finally:
        loop.remove_reader(server.fileno())
        server.close()
    closed = _free_udp_port()
    monkeypatch.setattr(relaycheck, "_STUN_PORT", closed)
    started = loop.time()
    assert await relaycheck._seen_from("127.0.0.1", "127.0.0.1", 2.0) is None
    assert loop.time() - started < 1.0  # refused: not waited for


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_no_socket_for_asking_our_address_is_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of fds, the OSError escaped the check and ended every check (a review)."""
    from ice_engine import relaycheck

    def no_fds(*_args: Any) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(relaycheck.socket, "socket", no_fds)
    assert await relaycheck._seen_from("127.0.0.1", "127.0.0.1", 1.0) is None
