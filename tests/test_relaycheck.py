"""relaycheck's parts without a network: which socket plays the peer, and how probes are
sent again, timed and given up on. End to end against coturn: tests/lab/test_relay_check.py."""

from __future__ import annotations

import asyncio

import pytest

from ice_engine import Candidate, IceCandidate
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


def allocation() -> Allocation:
    credentials = TurnCredentials("alice", "wonderland")
    return Allocation(("198.51.100.10", 3478), credentials=credentials, deadline=10.0)


async def test_probes_go_again_until_one_arrives_and_that_one_is_timed() -> None:
    probes, sent = _Probes(), list[bytes]()

    def send(token: bytes) -> None:
        sent.append(token)
        if len(sent) == 2:  # the first was lost; the second arrives at once
            probes.arrived(None, ("198.51.100.1", 4000), token)

    result = await probes.exchange(send, allocation(), timeout=2.0)
    assert len(sent) == 2 and sent[0] != sent[1]
    assert isinstance(result, tuple)
    peer, ms = result
    assert peer == ("198.51.100.1", 4000) and 0 <= ms < 100  # not since the first probe
    probes.arrived(None, ("198.51.100.1", 4000), sent[0])  # late: nobody waits for it now


async def test_nothing_through_is_said_once_the_time_is_up() -> None:
    probes, sent = _Probes(), list[bytes]()
    result = await probes.exchange(sent.append, allocation(), timeout=0.6)
    assert result == "nothing came through in 0.6 s"
    assert len(sent) == 3  # at 0, 0.25 and 0.5 s


async def test_a_refused_permission_ends_the_probes_with_its_code() -> None:
    probes, held = _Probes(), allocation()
    failure = RequestFailed("CreatePermission", 403, "Forbidden", (("198.51.100.1", 9),))
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, probes.refused, held, failure)
    await probes.permitted(held, {"198.51.100.1"}, timeout=2.0)  # ends with the refusal
    assert await probes.exchange(lambda _: None, held, 2.0) == "permission refused: 403 Forbidden"
    assert await probes.exchange(lambda _: None, allocation(), 0.01) != "permission refused"


@pytest.mark.parametrize("error", [OSError(101, "Network is unreachable"), ValueError("too big")])
async def test_a_probe_that_cannot_be_sent_says_why(error: Exception) -> None:
    def send(_token: bytes) -> None:
        raise error

    assert await _Probes().exchange(send, allocation(), 2.0) == f"cannot send: {error}"
