"""The core's TURN over TCP and TLS, with a scripted server on a byte stream.

The driver's side (sockets, TLS) is tested in the lab; here the core alone: what it asks
for (OpenStream, StreamSend, CloseStream) and how it takes the server's bytes, split
anywhere, garbage included, or the connection failing at any step.
"""

from __future__ import annotations

import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from ice_engine import stun
from ice_engine.commands import (
    CloseStream,
    Command,
    OpenStream,
    Resolve,
    SendDatagram,
    StreamSend,
)
from ice_engine.credentials import Credentials
from ice_engine.events import CandidateRemovedEvent, IceCandidateErrorEvent
from ice_engine.gathering import Base, Gathering, Server, Transport
from ice_engine.stun import Attr, Method
from ice_engine.transaction import RttTable
from ice_engine.turn import NonceCache, NonceEntry
from ice_engine.urls import parse_server_url

from .test_relaying import KEY, TURN, kinds

TCP = "turn:198.51.100.10?transport=tcp"


def started(
    url: str = TCP,
    continual: bool = False,
    nonces: NonceCache | None = None,
    rtt: RttTable | None = None,
) -> tuple[Gathering, list[Command]]:
    core = Gathering(
        transports=[Transport("0", 0)],
        servers=[Server(parse_server_url(url), 0, "alice", "wonderland")],
        credentials=Credentials("ufrag001", "p" * 24),
        nonces=nonces or NonceCache(),
        rtt=rtt,
        continual=continual,
    )
    core.start(0.0, [Base(1, 0, 1, "203.0.113.2", 40000, socket.AF_INET, 0)])
    return core, drain(core)


def drain(core: Gathering) -> list[Command]:
    out = []
    while (command := core.next_command()) is not None:
        out.append(command)
    return out


def sent(commands: list[Command]) -> bytes:
    [command] = commands
    assert isinstance(command, StreamSend) and command.stream == 1
    return command.data


def challenge(request: bytes) -> bytes:
    txid = stun.parse(request).transaction_id
    attributes = [
        (Attr.ERROR_CODE, stun.error_code_value(401, "Unauthorized")),
        (Attr.REALM, b"lab.test"),
        (Attr.NONCE, b"0123456789abcdef"),
    ]
    return stun.encode(Method.ALLOCATE, stun.MessageClass.ERROR, txid, attributes)


def grant(request: bytes) -> bytes:
    message = stun.parse(request)
    assert message.get(Attr.MESSAGE_INTEGRITY) is not None
    txid = message.transaction_id
    attributes = [
        (Attr.XOR_RELAYED_ADDRESS, stun.xor_address_value(TURN[0], 50000, txid)),
        (Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value("198.51.100.1", 41000, txid)),
        (Attr.LIFETIME, stun.u32_value(600)),
    ]
    return stun.encode(
        Method.ALLOCATE, stun.MessageClass.SUCCESS, txid, attributes, integrity_key=KEY
    )


def connected(core: Gathering) -> bytes:
    """The stream is up: the backlogged Allocate goes out on it."""
    core.stream_connected(0.01, 1, 51234)
    return sent(drain(core))


def test_nothing_is_sent_until_the_stream_is_up_then_two_round_trips_give_the_relay() -> None:
    core, commands = started()
    assert commands == [OpenStream(1, 1, TURN, False, "198.51.100.10")]
    first = connected(core)
    assert stun.parse(first).method == Method.ALLOCATE
    core.stream_data(0.02, 1, challenge(first))
    core.stream_data(0.03, 1, grant(sent(drain(core))))
    # No srflx: the mapping the server saw is a TCP one, not the UDP base's.
    assert kinds(core) == ["gathering", "host", "relay", "end", "complete", "null"]
    [relay] = [c for c in core.candidates if c.type == "relay"]
    assert (relay.address, relay.port) == (TURN[0], 50000)
    # Browsers' relay type preferences: 2 over UDP, 1 over TCP, 0 over TLS.
    assert relay.priority is not None and relay.priority >> 24 == 1
    assert (relay.relayProtocol, relay.url) == ("tcp", TCP)


def test_turns_asks_for_tls_verifying_the_url_s_name_not_the_address() -> None:
    core, [resolve] = started("turns:turn.example.org:5349?transport=tcp")
    assert isinstance(resolve, Resolve)
    core.resolved(0.01, resolve.request, [("198.51.100.10", 5349)])
    assert drain(core) == [OpenStream(1, 1, ("198.51.100.10", 5349), True, "turn.example.org")]
    first = connected(core)
    core.stream_data(0.02, 1, challenge(first))
    core.stream_data(0.03, 1, grant(sent(drain(core))))
    [relay] = [c for c in core.candidates if c.type == "relay"]
    assert relay.priority is not None and relay.priority >> 24 == 0  # over TLS: the lowest
    assert relay.relayProtocol == "tls"  # as a browser's RTCIceCandidate tells it
    assert relay.url == "turns:turn.example.org:5349?transport=tcp"


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_the_server_s_bytes_may_arrive_split_anywhere_or_together(data: st.DataObject) -> None:
    """TCP keeps no message boundaries: any split gives the same relay."""
    core, _ = started()
    first = connected(core)

    def feed(reply: bytes, now: float) -> None:
        cuts = sorted(data.draw(st.sets(st.integers(1, len(reply) - 1), max_size=6)))
        for start, end in zip([0, *cuts], [*cuts, len(reply)], strict=True):
            core.stream_data(now, 1, reply[start:end])

    feed(challenge(first), 0.02)
    feed(grant(sent(drain(core))), 0.03)
    assert kinds(core) == ["gathering", "host", "relay", "end", "complete", "null"]


def test_garbage_on_the_stream_closes_it_with_an_error_and_gathering_completes() -> None:
    core, _ = started()
    connected(core)
    core.stream_data(0.02, 1, b"\xff" * 24)
    assert drain(core) == [CloseStream(1)]
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    [error] = [e for e in events if isinstance(e, IceCandidateErrorEvent)]
    assert error.errorCode == 701 and "garbage" in error.errorText
    assert core.state.value == "complete"
    core.stream_data(0.03, 1, b"\x00" * 20)  # late bytes for a closed stream: ignored
    assert drain(core) == []


def test_a_connection_refused_or_closed_midway_is_an_error_naming_why() -> None:
    """The error names the local end of the connection, not the UDP base's port: none
    where it never came up."""
    refused, _ = started()
    refused.stream_closed(0.01, 1, "connection refused")
    [error] = errors_of(refused)
    assert error.errorCode == 701 and (error.address, error.port) == ("203.0.113.2", None)
    assert refused.state.value == "complete"

    hung_up, _ = started()
    hung_up.stream_data(0.02, 1, challenge(connected(hung_up)))
    drain(hung_up)
    hung_up.stream_closed(0.03, 1, None)
    [error] = errors_of(hung_up)
    assert error.errorText == "TURN connection failed: closed by the server"
    assert (error.address, error.port) == ("203.0.113.2", 51234)
    assert hung_up.state.value == "complete"


def errors_of(core: Gathering) -> list[IceCandidateErrorEvent]:
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    return [e for e in events if isinstance(e, IceCandidateErrorEvent)]


def test_a_refused_connection_gives_way_to_the_server_s_next_address() -> None:
    core, [resolve] = started("turn:turn.example.org?transport=tcp")
    assert isinstance(resolve, Resolve)
    core.resolved(0.01, resolve.request, [("198.51.100.10", 3478), ("198.51.100.11", 3478)])
    assert drain(core) == [OpenStream(1, 1, ("198.51.100.10", 3478), False, "turn.example.org")]
    core.stream_closed(0.02, 1, "connection refused")
    assert drain(core) == [OpenStream(2, 1, ("198.51.100.11", 3478), False, "turn.example.org")]
    assert errors_of(core) == []
    core.stream_closed(0.03, 2, "connection refused")
    [error] = errors_of(core)
    assert error.errorCode == 701 and error.url == "turn:turn.example.org?transport=tcp"
    assert core.state.value == "complete"


def test_a_connection_that_came_up_keeps_the_server_s_whole_deadline() -> None:
    """TCP and TLS take round trips of their own before the first answer: a server whose
    connection came up is not given up for its next address at the end of its share."""
    core, [resolve] = started("turns:turn.example.org")
    assert isinstance(resolve, Resolve)
    core.resolved(0.0, resolve.request, [("198.51.100.10", 5349), ("198.51.100.11", 5349)])
    [first] = drain(core)
    assert isinstance(first, OpenStream) and first.address == ("198.51.100.10", 5349)
    core.stream_connected(0.9, 1, 51234)
    allocate = sent(drain(core))
    while (timer := core.get_timer()) is not None and timer < 1.05:
        core.handle_timer(timer)
        assert drain(core) == []  # no OpenStream to the next address, no CloseStream
    core.stream_data(1.05, 1, challenge(allocate))
    assert stun.parse(sent(drain(core))).get(Attr.MESSAGE_INTEGRITY) is not None


def test_close_deallocates_over_the_stream_then_closes_it() -> None:
    core, _ = started()
    first = connected(core)
    core.stream_data(0.02, 1, challenge(first))
    core.stream_data(0.03, 1, grant(sent(drain(core))))
    core.close(1.0)
    refresh = stun.parse(sent(drain(core)))
    assert refresh.method == Method.REFRESH
    assert core.closing
    reply = stun.encode(
        Method.REFRESH,
        stun.MessageClass.SUCCESS,
        refresh.transaction_id,
        [(Attr.LIFETIME, stun.u32_value(0))],
        integrity_key=KEY,
    )
    core.stream_data(1.01, 1, reply)
    assert drain(core) == [CloseStream(1)]
    assert not core.closing


def test_close_while_connecting_with_a_warm_nonce_ends_at_once() -> None:
    """The signed Allocate never left: there is nothing to deallocate or wait for."""
    nonces = NonceCache()
    nonces.put(TURN, "stream", "alice", NonceEntry("lab.test", b"0123456789abcdef"))
    core, [open_stream] = started(nonces=nonces)
    assert isinstance(open_stream, OpenStream)
    core.close(0.1)
    assert drain(core) == [CloseStream(1)]
    assert not core.closing


def test_a_stream_s_connection_setup_is_not_taken_for_the_server_s_rtt() -> None:
    """The RTT table drives UDP retransmissions to the same address: a request queued
    while TCP connects would count the connection's setup as round trip."""
    rtt = RttTable()
    core, _ = started(rtt=rtt)
    core.stream_connected(0.9, 1, 51234)
    core.stream_data(0.95, 1, challenge(sent(drain(core))))
    assert rtt.srtt(TURN) is None


def test_a_base_that_goes_away_takes_its_stream_and_relay_with_it() -> None:
    core, _ = started(continual=True)
    connected(core)
    core.remove_bases(0.02, [1])
    assert drain(core) == [CloseStream(1)]
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    assert any(isinstance(e, CandidateRemovedEvent) for e in events)  # the host candidate


def test_a_relay_whose_connection_ends_after_allocating_is_lost_with_it() -> None:
    """The server deletes a TCP allocation with its connection (RFC 6062 §4)."""
    for continual, expected in ((True, ["removed relay"]), (False, [])):
        core, _ = started(continual=continual)
        first = connected(core)
        core.stream_data(0.02, 1, challenge(first))
        core.stream_data(0.03, 1, grant(sent(drain(core))))
        kinds(core)
        core.stream_closed(5.0, 1, None)
        assert kinds(core) == expected
        assert [c.type for c in core.candidates] == ["host"]
        assert core.allocations == []


def test_icmp_unreachable_fails_a_udp_relay_at_once() -> None:
    core, [first] = started("turn:198.51.100.10")
    assert isinstance(first, SendDatagram)
    core.unreachable(0.01, 1, TURN)
    assert kinds(core) == ["gathering", "host", "error701", "end", "complete", "null"]
    core.unreachable(0.02, 1, TURN)  # once more: nothing left to fail
    assert core.next_event() is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=6), st.booleans())
def test_any_bytes_from_the_server_raise_nothing_and_gathering_still_completes(
    chunks: list[bytes], challenged: bool
) -> None:
    core, _ = started()
    first = connected(core)
    if challenged:  # garbage after a real 401: a signed Allocate is in flight
        core.stream_data(0.02, 1, challenge(first))
    for chunk in chunks:
        core.stream_data(0.03, 1, chunk)
    core.handle_timer(60.0)  # past every deadline
    drain(core)
    assert core.state.value == "complete"
    assert not any(c.type == "relay" for c in core.candidates)


def test_an_answer_and_garbage_in_one_read_give_the_relay_then_close_the_stream() -> None:
    """The same bytes cut elsewhere gave the relay; now one read does too (fuzz_long)."""
    core, _ = started()
    first = connected(core)
    core.stream_data(0.02, 1, challenge(first))
    core.stream_data(0.03, 1, grant(sent(drain(core))) + b"\xf6" * 9)
    assert drain(core) == [CloseStream(1)]
    assert kinds(core) == ["gathering", "host", "relay", "end", "complete", "null"]
