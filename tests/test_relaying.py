"""The core's TURN path, with a scripted server: challenge, allocation, dual stack."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ice_engine import stun
from ice_engine.commands import Command, OpenSocket, Resolve, SendDatagram
from ice_engine.credentials import Credentials
from ice_engine.events import (
    CandidateRemovedEvent,
    GatheringState,
    IceCandidateErrorEvent,
    IceCandidateEvent,
)
from ice_engine.gathering import Base, Gathering, Server, Transport
from ice_engine.stun import Attr, MessageClass, Method
from ice_engine.transaction import Timing
from ice_engine.turn import PERMISSION_DEADLINE, Allocation, NonceCache, RequestFailed
from ice_engine.urls import parse_server_url

TURN = ("198.51.100.10", 3478)
ALTERNATE = ("198.51.100.11", 3478)  # where a 300 Try Alternate sends us
KEY = stun.long_term_key("alice", "lab.test", "wonderland")


def turn_core(urls: Sequence[str], name: str | None = None, **options: Any) -> Gathering:
    """A gathering of these URLs, with the lab's credentials, started on one IPv4 base."""
    core = Gathering(
        transports=[Transport("0", 0)],
        servers=[
            Server(parse_server_url(url), index, "alice", "wonderland")
            for index, url in enumerate(urls)
        ],
        credentials=Credentials("ufrag001", "p" * 24),
        nonces=NonceCache(),
        **options,
    )
    core.start(0.0, [Base(1, 0, 1, "203.0.113.2", 40000, socket.AF_INET, 0, name=name)])
    return core


def started(
    dual: bool,
    urls: tuple[str, ...] = ("turn:198.51.100.10",),
    name: str | None = None,
    continual: bool = False,
) -> tuple[Gathering, list[SendDatagram]]:
    core = turn_core(urls, name, dual_stack_relays=dual, continual=continual)
    return core, drain(core)  # an IP literal: no Resolve, the Allocate goes out at once


def drain(core: Gathering) -> list[SendDatagram]:
    sent = []
    while (command := core.next_command()) is not None:
        assert isinstance(command, SendDatagram)
        sent.append(command)
    return sent


def answer(
    core: Gathering,
    request: bytes,
    now: float,
    extra: list[tuple[int, bytes]],
    server: tuple[str, int] = TURN,
    mapped: bool = True,
    taken: bool = True,
    key: int = 1,
) -> None:
    """As `server`: challenge an unsigned Allocate; grant a signed one with `extra`
    attributes, relaying from the server's own address."""
    message = stun.parse(request)
    txid = message.transaction_id
    if message.get(Attr.MESSAGE_INTEGRITY) is None:
        attributes = [
            (Attr.ERROR_CODE, stun.error_code_value(401, "Unauthorized")),
            (Attr.REALM, b"lab.test"),
            (Attr.NONCE, b"0123456789abcdef"),
        ]
        reply = stun.encode(Method.ALLOCATE, MessageClass.ERROR, txid, attributes)
    else:
        attributes = [
            (Attr.XOR_RELAYED_ADDRESS, stun.xor_address_value(server[0], 50000, txid)),
            (Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value("198.51.100.1", 41000, txid)),
            (Attr.LIFETIME, stun.u32_value(600)),
            *extra,
        ]
        if not mapped:  # allowed: XOR-MAPPED-ADDRESS is informational
            del attributes[1]
        reply = stun.encode(
            Method.ALLOCATE, MessageClass.SUCCESS, txid, attributes, integrity_key=KEY
        )
    assert core.receive_datagram(now, key, reply, server) is taken


def allocate(core: Gathering, first: SendDatagram) -> None:
    """The 401 to the first Allocate, then the allocation for the signed one."""
    answer(core, first.data, 0.05, [])
    [second] = drain(core)
    answer(core, second.data, 0.1, [])


def allocated() -> tuple[Gathering, Allocation]:
    """A core whose one relay is allocated."""
    core, [first] = started(dual=False)
    allocate(core, first)
    [allocation] = core.allocations
    return core, allocation


def kinds(core: Gathering) -> list[str]:
    out = []
    while (event := core.next_event()) is not None:
        if isinstance(event, IceCandidateErrorEvent):
            out.append(f"error{event.errorCode}")
        elif isinstance(event, IceCandidateEvent):
            c = event.candidate
            out.append("null" if c is None else (c.type or "end"))
        elif isinstance(event, CandidateRemovedEvent):
            out.append(f"removed {event.candidate.type}")
        else:
            out.append(event.state.value)
    return out


def test_challenge_then_relay_and_srflx_in_two_round_trips() -> None:
    core, [first] = started(dual=False)
    assert stun.parse(first.data).get(Attr.ADDITIONAL_ADDRESS_FAMILY) is None
    allocate(core, first)
    assert kinds(core) == ["gathering", "host", "srflx", "relay", "end", "complete", "null"]
    [relay] = [c for c in core.candidates if c.type == "relay"]
    assert (relay.address, relay.port) == ("198.51.100.10", 50000)
    assert (relay.relatedAddress, relay.relatedPort) == ("198.51.100.1", 41000)
    assert len(core.allocations) == 1
    # As a browser's RTCIceCandidate: the server each came from, the relay's protocol.
    host, srflx = (next(c for c in core.candidates if c.type == t) for t in ("host", "srflx"))
    url = core.servers[0].url.url
    assert [(c.url, c.relayProtocol) for c in (host, srflx, relay)] == [
        (None, None),
        (url, None),
        (url, "udp"),
    ]
    assert "relayProtocol" not in relay.to_json() and "url" not in relay.to_json()


def test_an_allocation_is_waited_for_through_its_challenge_until_it_relays() -> None:
    core, [first] = started(dual=False)
    assert core.waiting_for == ["turn:198.51.100.10"]
    answer(core, first.data, 0.05, [])  # the 401: not an answer to wait no more for
    assert core.waiting_for == ["turn:198.51.100.10"]
    [second] = drain(core)
    answer(core, second.data, 0.1, [])
    assert core.waiting_for == []


def test_a_relay_without_a_mapped_address_keeps_an_mdns_base_unsaid() -> None:
    """Its related address fell back to the base: the private address mDNS hides."""
    core, [first] = started(dual=False, name="host.local")
    answer(core, first.data, 0.05, [])
    [second] = drain(core)
    answer(core, second.data, 0.1, [], mapped=False)
    [relay] = [c for c in core.candidates if c.type == "relay"]
    assert (relay.relatedAddress, relay.relatedPort) == ("0.0.0.0", 0)
    assert "203.0.113.2" not in relay.candidate


def test_a_restart_releases_an_allocation_still_in_flight() -> None:
    """Kept, it was refreshed for ten minutes with no candidate anyone would see."""
    core, [first] = started(dual=False)
    answer(core, first.data, 0.05, [])
    [signed] = drain(core)  # in flight when the restart comes
    core.restart(0.08, Credentials("ufrag002", "q" * 24))
    [deallocation] = [c for c in drain(core) if c.base_key == 1]
    refresh = stun.parse(deallocation.data)
    assert refresh.method == Method.REFRESH and refresh.get(Attr.LIFETIME) == b"\0\0\0\0"
    # Granted after all (the server had it before our Refresh): not ours any more, so
    # deallocated in turn rather than left held on the server.
    answer(core, signed.data, 0.1, [])
    [again] = [c for c in drain(core) if c.base_key == 1]
    assert stun.parse(again.data).get(Attr.LIFETIME) == b"\0\0\0\0"
    assert core.allocations == []


def test_a_signed_allocate_that_times_out_is_released_all_the_same() -> None:
    """Its answer may have been lost, or be late (a long RTT): the server may hold the
    allocation, and the user's quota, for its lifetime. So the 701 comes with a Refresh
    of lifetime 0, the socket is kept for the answers, and a late success is released
    in turn."""
    core, [first] = started(dual=False)
    answer(core, first.data, 0.05, [])
    [signed] = drain(core)
    events: list[str] = []
    sent: list[SendDatagram] = []
    while "error701" not in events and (timer := core.get_timer()) is not None:
        core.handle_timer(timer)
        sent = drain(core)
        events += kinds(core)
    assert events[-4:] == ["error701", "end", "complete", "null"]
    assert [stun.parse(c.data).get(Attr.LIFETIME) for c in sent] == [bytes(4)]
    assert core.closing_keys == {1} and core.closing  # a driver keeps the socket
    # The signed Allocate's success, late: released too, not taken for a relay.
    now = Timing().server_deadline + 0.3
    answer(core, signed.data, now, [])
    [again] = drain(core)
    assert stun.parse(again.data).get(Attr.LIFETIME) == bytes(4)
    assert core.allocations == [] and kinds(core) == []
    while (timer := core.get_timer()) is not None:  # nobody answers the Refresh
        core.handle_timer(timer)
        drain(core)
    assert core.closing_keys == set() and not core.closing


def test_a_success_without_a_relayed_address_is_released() -> None:
    """Granted, so held by the server, but of no use to us: a 700, and a Refresh of
    lifetime 0 at once."""
    core, [first] = started(dual=False)
    answer(core, first.data, 0.05, [])
    [signed] = drain(core)
    txid = stun.parse(signed.data).transaction_id
    attributes = [(Attr.LIFETIME, stun.u32_value(600))]
    reply = stun.encode(Method.ALLOCATE, MessageClass.SUCCESS, txid, attributes, integrity_key=KEY)
    assert core.receive_datagram(0.1, 1, reply, TURN)
    assert "error700" in kinds(core)
    release, binding = drain(core)
    assert stun.parse(release.data).get(Attr.LIFETIME) == bytes(4)
    assert stun.parse(binding.data).method == Method.BINDING  # the srflx it did not tell
    assert core.closing_keys == {1}


def refuse(core: Gathering, request: SendDatagram, now: float, code: int = 401) -> None:
    """As the server: refuse a signed Allocate (a wrong password gets a 401 again)."""
    txid = stun.parse(request.data).transaction_id
    attributes = [(Attr.ERROR_CODE, stun.error_code_value(code, "Refused"))]
    if code == 401:
        attributes += [(Attr.REALM, b"lab.test"), (Attr.NONCE, b"0123456789abcdef")]
    key = None if code == 401 else KEY  # other refusals of a signed request are signed
    reply = stun.encode(Method.ALLOCATE, MessageClass.ERROR, txid, attributes, integrity_key=key)
    assert core.receive_datagram(now, 1, reply, TURN)


@pytest.mark.parametrize("code", [401, 403, 486])
def test_a_refused_allocation_still_gives_the_base_s_srflx(code: int) -> None:
    """As a browser, which asks each UDP TURN server for a Binding: a server that refuses
    the allocation (wrong credentials, a quota) still tells the srflx, one round trip
    later, and the transport ends after it."""
    core, [first] = started(dual=False)
    answer(core, first.data, 0.05, [])
    [signed] = drain(core)
    refuse(core, signed, 0.1, code)
    assert kinds(core) == ["gathering", "host", f"error{code}"]
    [binding] = drain(core)
    assert (binding.base_key, binding.address) == (1, TURN)
    txid = stun.parse(binding.data).transaction_id
    mapped = [(Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value("198.51.100.1", 41000, txid))]
    reply = stun.encode(Method.BINDING, MessageClass.SUCCESS, txid, mapped)
    assert core.receive_datagram(0.15, 1, reply, TURN)
    assert kinds(core) == ["srflx", "end", "complete", "null"]
    [srflx] = [c for c in core.candidates if c.type == "srflx"]
    assert (srflx.address, srflx.port) == ("198.51.100.1", 41000)


def test_a_refused_allocation_s_binding_unanswered_adds_no_second_error() -> None:
    core, [first] = started(dual=False)
    answer(core, first.data, 0.05, [])
    [signed] = drain(core)
    refuse(core, signed, 0.1)
    [_binding] = drain(core)
    events = kinds(core)
    while (timer := core.get_timer()) is not None:
        core.handle_timer(timer)
        drain(core)
        events += kinds(core)
    assert events == ["gathering", "host", "error401", "end", "complete", "null"]


def test_no_binding_after_a_timeout_or_under_relay_only() -> None:
    """A server that never answered is not asked again; relay-only shows no srflx."""
    core, [_first] = started(dual=False)
    while (timer := core.get_timer()) is not None:
        core.handle_timer(timer)
        sent = drain(core)
        assert all(stun.parse(c.data).method == Method.ALLOCATE for c in sent)
    core = turn_core(["turn:198.51.100.10"], relay_only=True)
    answer(core, drain(core)[0].data, 0.05, [])
    refuse(core, drain(core)[0], 0.1)
    assert drain(core) == []
    assert kinds(core)[-4:] == ["error401", "end", "complete", "null"]


def test_an_icmp_error_during_the_signed_allocate_fails_the_relay_and_releases_it() -> None:
    """The ICMP error may be forged or transient while the server granted the Allocate:
    released as close() releases one in flight. A second one, the deallocation bounced
    too, means a closed port that holds nothing: the release ends there."""
    core, [first] = started(dual=False)
    answer(core, first.data, 0.05, [])
    [signed] = drain(core)
    core.unreachable(0.06, 1, TURN)
    assert kinds(core)[-4:] == ["error701", "end", "complete", "null"]
    [release] = drain(core)
    assert stun.parse(release.data).get(Attr.LIFETIME) == bytes(4)
    assert core.closing_keys == {1}
    answer(core, signed.data, 0.1, [])  # granted after all: released in turn
    [again] = drain(core)
    assert stun.parse(again.data).get(Attr.LIFETIME) == bytes(4)
    assert core.allocations == [] and kinds(core) == []
    core.unreachable(0.11, 1, TURN)
    assert core.closing_keys == set() and not core.closing
    assert drain(core) == [] and kinds(core) == [] and core.get_timer() is None


def test_an_icmp_error_during_the_unsigned_allocate_leaves_nothing_to_release() -> None:
    core, [_unsigned] = started(dual=False)
    core.unreachable(0.01, 1, TURN)
    assert kinds(core)[-4:] == ["error701", "end", "complete", "null"]
    assert drain(core) == [] and core.closing_keys == set() and core.get_timer() is None


def test_a_deallocation_bounced_by_icmp_ends_the_release_at_once() -> None:
    """The server went away: close() need not wait out the release."""
    core, [first] = started(dual=False)
    allocate(core, first)
    core.unreachable(0.2, 1, TURN)  # after success: the allocation is still ours
    assert len(core.allocations) == 1
    core.close(0.3)
    [release] = drain(core)
    assert stun.parse(release.data).get(Attr.LIFETIME) == bytes(4)
    assert core.closing
    core.unreachable(0.31, 1, TURN)
    assert not core.closing and core.closing_keys == set() and core.get_timer() is None


def resolved_to_two(
    urls: tuple[str, ...] = ("turn:turn.example.org",), timing: Timing | None = None
) -> Gathering:
    """A TURN server whose name has two addresses (round-robin A, or SRV primary and
    backup, in that order): TURN, then ALTERNATE."""
    core = turn_core(urls, timing=timing)
    for command in commands(core):  # a literal's Allocate goes at once, and is dropped
        if isinstance(command, Resolve):
            core.resolved(0.01, command.request, [TURN, ALTERNATE])
    return core


def test_a_turn_server_with_two_addresses_allocates_once_at_the_first() -> None:
    core = resolved_to_two()
    [first] = drain(core)
    assert first.address == TURN
    allocate(core, first)
    core.handle_timer(5.0)  # the second address is never tried
    assert drain(core) == []
    assert kinds(core) == ["gathering", "host", "srflx", "relay", "end", "complete", "null"]


def test_a_turn_address_that_never_answers_gives_way_to_the_next_in_its_share_of_time() -> None:
    """Two addresses split the 2 s deadline while neither answers: the first is given
    up at 1 s, without an error, and the second allocates."""
    core = resolved_to_two()  # at 0.01 s: 1.99 s left, 0.995 s for each address
    [_first] = drain(core)
    while (timer := core.get_timer()) is not None and timer < 1.005:
        core.handle_timer(timer)
        assert {d.address for d in drain(core)} == {TURN}  # retransmissions
    assert timer == pytest.approx(1.005)
    core.handle_timer(timer)
    [second] = drain(core)
    assert second.address == ALTERNATE and stun.parse(second.data).method == Method.ALLOCATE
    answer(core, second.data, 1.05, [], server=ALTERNATE)
    [signed] = drain(core)
    answer(core, signed.data, 1.1, [], server=ALTERNATE)
    assert kinds(core) == ["gathering", "host", "srflx", "relay", "end", "complete", "null"]
    [relay] = [c for c in core.candidates if c.type == "relay"]
    assert relay.address == ALTERNATE[0]


def test_a_short_deadline_still_reaches_the_second_address() -> None:
    """Each address got two initial RTOs (0.5 s) at least: with a 0.5 s deadline
    (`--timeout 0.5`) the first took all of it, and the second (an SRV backup) was
    never asked. Now each gets half."""
    core = resolved_to_two(timing=Timing(server_deadline=0.5))  # 0.49 s left at 0.01
    [_first] = drain(core)
    while (timer := core.get_timer()) is not None and timer < 0.255:
        core.handle_timer(timer)
        assert {d.address for d in drain(core)} == {TURN}
    assert timer == pytest.approx(0.255)
    core.handle_timer(timer)
    [second] = drain(core)
    assert second.address == ALTERNATE
    answer(core, second.data, 0.3, [], server=ALTERNATE)
    [signed] = drain(core)
    answer(core, signed.data, 0.35, [], server=ALTERNATE)
    assert kinds(core) == ["gathering", "host", "srflx", "relay", "end", "complete", "null"]


def test_an_icmp_error_gives_way_to_the_next_address_at_once() -> None:
    core = resolved_to_two()
    [_first] = drain(core)
    core.unreachable(0.02, 1, TURN)
    [second] = drain(core)
    assert second.address == ALTERNATE
    assert kinds(core) == ["gathering", "host"]  # no error: the server is still tried


def test_an_address_that_answered_keeps_the_whole_deadline_and_its_failure_is_told() -> None:
    core = resolved_to_two()
    [first] = drain(core)
    answer(core, first.data, 0.05, [])  # the 401: this address is the server's
    [_signed] = drain(core)
    kinds(core)
    sent, failed_at = [], None
    while (timer := core.get_timer()) is not None:
        core.handle_timer(timer)
        sent += drain(core)  # after the deadline, the release of what it may have granted
        if "error701" in kinds(core):
            failed_at = timer
    assert {d.address for d in sent} == {TURN}
    assert failed_at == 2.0  # not 1.005: the signed Allocate had the server's whole deadline


def test_every_address_silent_ends_in_an_error_per_url_by_the_deadline() -> None:
    """Two URLs for the same name share its allocations, and each is told it failed."""
    core = resolved_to_two(("turn:turn.example.org", "turn:turn.example.org?transport=udp"))
    assert core.waiting_for == ["turn:turn.example.org", "turn:turn.example.org?transport=udp"]
    addresses = []
    while (timer := core.get_timer()) is not None:
        assert timer <= 2.0
        core.handle_timer(timer)
        addresses += [d.address for d in drain(core)]
    assert addresses.count(TURN) == addresses.count(ALTERNATE) == 3  # sent, resent twice
    events = list(iter(core.next_event, None))
    errors = [e for e in events if isinstance(e, IceCandidateErrorEvent)]
    assert sorted(e.url for e in errors) == [
        "turn:turn.example.org",
        "turn:turn.example.org?transport=udp",
    ]
    assert all(e.errorCode == 701 for e in errors)
    assert events[-1].to_json()["candidate"] is None


def run_timers(core: Gathering, until: float = 10.0) -> list[SendDatagram]:
    sent: list[SendDatagram] = []
    while (timer := core.get_timer()) is not None and timer <= until:
        core.handle_timer(timer)
        sent += [c for c in commands(core) if isinstance(c, SendDatagram)]
    return sent


def test_a_url_goes_past_an_address_another_url_holds_but_would_not_go_on_from() -> None:
    """turn:198.51.100.10, and a name for [that address, ALTERNATE]: the literal's
    allocation would never try ALTERNATE, so the name's URL does not wait on it, and
    allocates at ALTERNATE at once. The dead literal fails alone."""
    core = resolved_to_two(("turn:198.51.100.10", "turn:turn.example.org"))
    [second] = drain(core)
    assert second.address == ALTERNATE
    answer(core, second.data, 0.05, [], server=ALTERNATE)
    [signed] = drain(core)
    answer(core, signed.data, 0.1, [], server=ALTERNATE)
    assert {d.address for d in run_timers(core)} == {TURN}  # the literal's resends
    events = list(iter(core.next_event, None))
    [error] = [e for e in events if isinstance(e, IceCandidateErrorEvent)]
    assert error.url == "turn:198.51.100.10" and error.errorCode == 701
    relays = [e.candidate for e in events if isinstance(e, IceCandidateEvent) and e.candidate]
    assert [c.address for c in relays if c.type == "relay"] == [ALTERNATE[0]]


def test_a_name_listing_one_address_twice_still_fails_with_an_error() -> None:
    core = turn_core(["turn:turn.example.org"])
    [resolve] = commands(core)
    assert isinstance(resolve, Resolve)
    core.resolved(0.0, resolve.request, [TURN, TURN])  # a custom resolver's duplicate
    sent = drain(core) + run_timers(core)
    assert {d.address for d in sent} == {TURN}
    assert kinds(core)[-4:] == ["error701", "end", "complete", "null"]


def test_a_url_waiting_on_another_s_address_is_told_when_it_fails() -> None:
    """a.example.org is [TURN, ALTERNATE], b.example.org [TURN] only: b waits on a's
    allocation at TURN; when a gives TURN up for ALTERNATE, b is told it failed."""
    core = turn_core(["turn:a.example.org", "turn:b.example.org"])
    first, second = commands(core)
    assert isinstance(first, Resolve) and isinstance(second, Resolve)
    core.resolved(0.0, first.request, [TURN, ALTERNATE])
    core.resolved(0.0, second.request, [TURN])
    assert core.waiting_for == ["turn:a.example.org", "turn:b.example.org"]
    run_timers(core, until=1.0)
    assert core.waiting_for == ["turn:a.example.org"]
    errors = [e for e in iter(core.next_event, None) if isinstance(e, IceCandidateErrorEvent)]
    assert [e.url for e in errors] == ["turn:b.example.org"]


def turn_reply(request: bytes, server: tuple[str, int]) -> bytes:
    """A TURN server's answer: 401 to an unsigned Allocate, a grant to a signed one,
    success to a Refresh (a deallocation)."""
    message = stun.parse(request)
    txid = message.transaction_id
    if message.method == Method.REFRESH:
        attributes = [(Attr.LIFETIME, stun.u32_value(0))]
        return stun.encode(
            Method.REFRESH, MessageClass.SUCCESS, txid, attributes, integrity_key=KEY
        )
    if message.get(Attr.MESSAGE_INTEGRITY) is None:
        attributes = [
            (Attr.ERROR_CODE, stun.error_code_value(401, "Unauthorized")),
            (Attr.REALM, b"lab.test"),
            (Attr.NONCE, b"0123456789abcdef"),
        ]
        return stun.encode(Method.ALLOCATE, MessageClass.ERROR, txid, attributes)
    attributes = [
        (Attr.XOR_RELAYED_ADDRESS, stun.xor_address_value(server[0], 50000, txid)),
        (Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value("198.51.100.1", 41000, txid)),
        (Attr.LIFETIME, stun.u32_value(600)),
    ]
    return stun.encode(Method.ALLOCATE, MessageClass.SUCCESS, txid, attributes, integrity_key=KEY)


@settings(max_examples=150, deadline=None)
@given(
    alive=st.lists(st.booleans(), min_size=1, max_size=4),
    rtt=st.floats(0.001, 0.24),  # an allocation's 2 RTT fit in any address's share
    two_urls=st.booleans(),
    duplicate=st.booleans(),
)
def test_a_name_s_addresses_are_tried_in_turn_until_one_relays(
    alive: list[bool], rtt: float, two_urls: bool, duplicate: bool
) -> None:
    """Whichever of a TURN name's addresses answer (round trip up to 0.24 s), and however
    many URLs name it: gathering completes by the deadline with one relay if any address
    is alive, else an error for each URL; and never more than one allocation at a time."""
    addresses = [(f"198.51.100.{10 + i}", 3478) for i in range(len(alive))]
    urls = ["turn:turn.example.org", "turn:turn.example.org?transport=udp"][: 1 + two_urls]
    core = turn_core(urls)
    answers: list[tuple[float, int, tuple[str, int], bytes]] = []
    contacted: list[tuple[str, int]] = []  # in the order first asked
    now = 0.0
    while now < 10:
        while batch := commands(core):  # what a Resolve's answer sends, at once
            for command in batch:
                if isinstance(command, Resolve):
                    core.resolved(now, command.request, addresses + addresses[:1] * duplicate)
                elif isinstance(command, SendDatagram):
                    if command.address not in contacted:
                        contacted.append(command.address)
                    if alive[addresses.index(command.address)]:
                        reply = turn_reply(command.data, command.address)
                        answers.append((now + rtt, len(answers), command.address, reply))
        timer = core.get_timer()
        if answers and (timer is None or min(answers)[0] <= timer):
            answers.sort()
            now, _, source, reply = answers.pop(0)
            core.receive_datagram(now, 1, reply, source)
        elif timer is not None:
            now = timer
            core.handle_timer(now)
        else:
            break
    events = list(iter(core.next_event, None))
    assert core.state.value == "complete" and events[-1].t <= 2.0 + 1e-9
    relays = [
        e
        for e in events
        if isinstance(e, IceCandidateEvent) and e.candidate and e.candidate.type == "relay"
    ]
    errors = [e for e in events if isinstance(e, IceCandidateErrorEvent)]
    # In order, and none past the first that answers: one allocation at a time.
    assert contacted == addresses[: len(contacted)]
    if any(alive):
        assert len(contacted) == alive.index(True) + 1
        assert len(relays) == 1 and errors == []
        assert relays[0].candidate.address == addresses[alive.index(True)][0]
    else:
        assert relays == [] and sorted(e.url for e in errors) == sorted(urls)


def test_one_server_under_two_urls_shares_one_allocation_and_completes() -> None:
    """The second URL used to replace the first one's allocation and leave its pending
    work uncounted: the generation stayed "gathering" for good."""
    urls = ("turn:198.51.100.10", "turn:198.51.100.10?transport=udp")
    core, [first] = started(dual=False, urls=urls)
    assert core.waiting_for == list(urls)  # the second waits on the shared allocation
    allocate(core, first)
    assert core.waiting_for == []
    assert kinds(core) == ["gathering", "host", "srflx", "relay", "end", "complete", "null"]
    assert len(core.allocations) == 1


def test_a_url_that_resolves_to_a_failed_allocation_is_told_its_failure() -> None:
    """A name resolving to the address of another URL's allocation that had already
    failed (and was being released) joined it silently: the URL ended with neither a
    candidate nor an error."""
    core = turn_core(["turn:198.51.100.10", "turn:turn.lab.test"])
    sent = commands(core)
    [resolve] = [c for c in sent if isinstance(c, Resolve)]
    [first] = [c for c in sent if isinstance(c, SendDatagram)]
    answer(core, first.data, 0.05, [])
    [signed] = drain(core)
    txid = stun.parse(signed.data).transaction_id
    lifetime = [(Attr.LIFETIME, stun.u32_value(600))]  # granted, but no relayed address
    grant = stun.encode(Method.ALLOCATE, MessageClass.SUCCESS, txid, lifetime, integrity_key=KEY)
    assert core.receive_datagram(0.1, 1, grant, TURN)
    assert core.closing  # released, as it will not relay
    core.resolved(0.2, resolve.request, [TURN])
    errors = [e for e in iter(core.next_event, None) if isinstance(e, IceCandidateErrorEvent)]
    assert [e.url for e in errors] == ["turn:198.51.100.10", "turn:turn.lab.test"]
    assert errors[0].errorCode == errors[1].errorCode == 700
    assert errors[0].errorText == errors[1].errorText
    assert core.waiting_for == ["turn:198.51.100.10"]  # its Binding, for the base's srflx


def test_dual_stack_asks_for_ipv6_too_and_reports_its_refusal_before_the_end() -> None:
    core, [first] = started(dual=True)
    answer(core, first.data, 0.05, [])
    [second] = drain(core)
    family = stun.parse(second.data).get(Attr.ADDITIONAL_ADDRESS_FAMILY)
    assert family is not None and family[0] == stun.FAMILY_IPV6
    refusal = (
        bytes([stun.FAMILY_IPV6, 0])
        + stun.error_code_value(440, "Address Family not Supported")[2:]
    )
    answer(core, second.data, 0.1, [(Attr.ADDRESS_ERROR_CODE, refusal)])
    assert kinds(core) == [
        "gathering",
        "host",
        "error440",
        "srflx",
        "relay",
        "end",
        "complete",
        "null",
    ]


def test_dual_stack_relays_have_distinct_priorities() -> None:
    """RFC 8445 §5.1.2.1: the IPv4 and IPv6 relays of one allocation shared a priority."""
    core, [first] = started(dual=True)
    answer(core, first.data, 0.05, [])
    [second] = drain(core)
    txid = stun.parse(second.data).transaction_id
    ipv6 = stun.xor_address_value("2001:db8:b::10", 50002, txid)
    answer(core, second.data, 0.1, [(Attr.XOR_RELAYED_ADDRESS, ipv6)])
    relays = [c for c in core.candidates if c.type == "relay"]
    assert {c.address for c in relays} == {"198.51.100.10", "2001:db8:b::10"}
    priorities = [c.priority for c in core.candidates]
    assert len(set(priorities)) == len(priorities)


def test_a_send_asks_for_the_peer_s_permission_on_first_use_only() -> None:
    """What `Gatherer.send` does for a relay candidate, in the core (it was the driver's
    state): a CreatePermission before the first datagram to a new peer's IP, none while
    it is asked or installed, again once a request has had its time unanswered."""
    core, allocation = allocated()
    peer, same_ip = ("198.51.100.11", 40000), ("198.51.100.11", 40001)

    def methods(now: float, to: tuple[str, int]) -> list[int]:
        core.relay_send(now, allocation, to, b"x", permit=True)
        return [stun.parse(sent.data).method for sent in drain(core)]

    assert methods(0.2, peer) == [Method.CREATE_PERMISSION, Method.SEND]
    assert methods(0.3, same_ip) == [Method.SEND]  # one permission per IP, being asked
    later = 0.2 + PERMISSION_DEADLINE
    core.handle_timer(later)  # the request gives up, unanswered
    drain(core)
    list(iter(core.next_event, None))
    assert methods(later, peer) == [Method.CREATE_PERMISSION, Method.SEND]
    allocation.permissions.add(peer[0])  # as a success installs it
    assert methods(later + 10, peer) == [Method.SEND]
    assert methods(later + 10, ("198.51.100.11", 1)) == [Method.SEND]


def test_a_send_too_large_to_relay_asks_for_no_permission() -> None:
    """It was queued before the size check raised, and the driver, never reached, left
    the CreatePermission unsent with no timer, holding back the next one for 5 s."""
    core, allocation = allocated()
    peer = ("198.51.100.11", 40000)
    with pytest.raises(ValueError, match="datagram"):
        core.relay_send(0.2, allocation, peer, b"x" * 70_000, permit=True)
    assert drain(core) == []
    core.relay_send(0.3, allocation, peer, b"x", permit=True)
    assert [stun.parse(sent.data).method for sent in drain(core)] == [
        Method.CREATE_PERMISSION,
        Method.SEND,
    ]


def test_a_send_to_a_peer_of_the_other_family_raises_every_time() -> None:
    """The first raised, but only after the permission was noted as asked: a second one
    within 5 s went out as a Send indication the server would drop."""
    core, allocation = allocated()  # an IPv4 relay
    for now in (0.2, 0.3):
        with pytest.raises(ValueError, match="relays no IPv6"):
            core.relay_send(now, allocation, ("2001:db8::7", 40000), b"x", permit=True)
        assert drain(core) == []


def test_relayed_data_and_sends_go_through_the_allocation() -> None:
    core, allocation = allocated()
    peer = ("198.51.100.11", 40000)
    core.relay_permit(0.2, allocation, [peer])
    [permission] = drain(core)
    assert stun.parse(permission.data).method == Method.CREATE_PERMISSION
    core.relay_send(0.2, allocation, peer, b"hello")
    [send] = drain(core)
    sent = stun.parse(send.data)
    assert (sent.method, sent.get(Attr.DATA), sent.xor_peer_address()) == (
        Method.SEND,
        b"hello",
        peer,
    )
    txid = bytes(12)
    data = stun.encode(
        Method.DATA,
        MessageClass.INDICATION,
        txid,
        [(Attr.XOR_PEER_ADDRESS, stun.xor_address_value(*peer, txid)), (Attr.DATA, b"back")],
    )
    assert core.receive_datagram(0.3, 1, data, TURN)
    assert core.next_relayed() == (allocation, peer, b"back")
    assert not core.receive_datagram(0.3, 1, data, ("198.51.100.66", 3478))  # not our server
    assert core.next_relayed() is None
    core.close(0.4)
    with pytest.raises(ValueError, match="live allocation"):
        core.relay_send(0.5, allocation, peer, b"late")


def test_permissions_and_channels_are_kept_alive() -> None:
    core, allocation = allocated()
    peer = ("198.51.100.11", 40000)

    def grant(request: SendDatagram, now: float) -> None:
        message = stun.parse(request.data)
        reply = stun.encode(
            message.method, MessageClass.SUCCESS, message.transaction_id, integrity_key=KEY
        )
        assert core.receive_datagram(now, 1, reply, TURN)

    core.relay_permit(1.0, allocation, [peer])
    [permission] = drain(core)
    grant(permission, 1.05)
    core.relay_bind_channel(2.0, allocation, peer)
    [bind] = drain(core)
    grant(bind, 2.05)
    assert allocation.channels == {peer: 0x4000}
    timer = core.get_timer()
    assert timer is not None and timer == 2.05 + 240  # the permission the ChannelBind refreshed
    core.handle_timer(timer)
    [renewal] = drain(core)
    assert stun.parse(renewal.data).method == Method.CREATE_PERMISSION
    grant(renewal, timer + 0.05)
    core.handle_timer(2.05 + 540)
    sent = [stun.parse(c.data).method for c in drain(core)]
    assert Method.CHANNEL_BIND in sent  # the channel, before it lapses at 600


def test_a_refused_permission_is_handed_to_the_application() -> None:
    """A 403 for a peer the server's policy forbids: the allocation still relays, and
    the application learns which peer was refused, and why."""
    core, allocation = allocated()
    peer = ("198.51.100.11", 40000)
    core.relay_permit(1.0, allocation, [peer])
    [permission] = drain(core)
    message = stun.parse(permission.data)
    value = stun.error_code_value(403, "Forbidden IP")
    reply = stun.encode(
        message.method, MessageClass.ERROR, message.transaction_id,
        [(Attr.ERROR_CODE, value)], integrity_key=KEY,
    )  # fmt: skip
    assert core.receive_datagram(1.05, 1, reply, TURN)
    assert core.next_relay_failure() == (
        allocation,
        RequestFailed("CREATE_PERMISSION", 403, "Forbidden IP", (peer,)),
    )
    assert core.next_relay_failure() is None and core.allocations == [allocation]
    assert kinds(core)[-1] == "null"  # nothing else: not a gathering error


def try_alternate(core: Gathering, request: SendDatagram, to: tuple[str, int]) -> bool:
    """A load balancer's answer to an unsigned Allocate (coturn's --alternate-server)."""
    txid = stun.parse(request.data).transaction_id
    attributes = [
        (Attr.ERROR_CODE, stun.error_code_value(300, "Try Alternate")),
        (Attr.ALTERNATE_SERVER, stun.address_value(*to)),
    ]
    reply = stun.encode(Method.ALLOCATE, MessageClass.ERROR, txid, attributes)
    return core.receive_datagram(0.05, request.base_key, reply, request.address)


def without_bindings(sent: list[SendDatagram], *answered: tuple[str, int]) -> list[SendDatagram]:
    """`sent`, but for the Binding asked of each server that `answered` with a 300 (for
    the srflx, as a browser asks each UDP TURN server), checked and left out."""
    bindings = [c for c in sent if stun.parse(c.data).method == Method.BINDING]
    assert [c.address for c in bindings] == list(answered)
    return [c for c in sent if c not in bindings]


def test_try_alternate_allocates_at_the_alternate_server() -> None:
    core, [first] = started(dual=False)
    assert try_alternate(core, first, ALTERNATE)
    binding, redirected = drain(core)
    assert (redirected.base_key, redirected.address) == (1, ALTERNATE)
    assert stun.parse(redirected.data).method == Method.ALLOCATE
    # The server that redirected is asked for the srflx too, as a browser asks it.
    assert (binding.address, stun.parse(binding.data).method) == (TURN, Method.BINDING)
    txid = stun.parse(binding.data).transaction_id
    mapped = [(Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value("198.51.100.1", 41000, txid))]
    reply = stun.encode(Method.BINDING, MessageClass.SUCCESS, txid, mapped)
    assert core.receive_datagram(0.08, 1, reply, TURN)
    # The alternate challenges and allocates as any server does.
    answer(core, redirected.data, 0.1, [], server=ALTERNATE)
    [signed] = drain(core)
    assert signed.address == ALTERNATE
    answer(core, signed.data, 0.15, [], server=ALTERNATE)
    assert kinds(core) == ["gathering", "host", "srflx", "relay", "end", "complete", "null"]
    [relay] = [c for c in core.candidates if c.type == "relay"]
    assert (relay.address, relay.port) == ("198.51.100.11", 50000)


def test_a_redirect_to_a_dead_alternate_still_gives_the_srflx() -> None:
    """The server that redirected answered: its Binding gives the srflx, though the
    alternate never answers and the relay fails (found by a review: nothing was asked)."""
    core, [first] = started(dual=False)
    assert try_alternate(core, first, ("198.51.100.20", 3478))
    binding, _allocate = drain(core)
    txid = stun.parse(binding.data).transaction_id
    mapped = [(Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value("198.51.100.1", 41000, txid))]
    reply = stun.encode(Method.BINDING, MessageClass.SUCCESS, txid, mapped)
    assert core.receive_datagram(0.08, 1, reply, TURN)
    events = kinds(core)
    while (timer := core.get_timer()) is not None:
        core.handle_timer(timer)
        drain(core)
        events += kinds(core)
    assert events == ["gathering", "host", "srflx", "error701", "end", "complete", "null"]


def test_a_redirect_that_cannot_be_followed_is_told_to_every_url_sharing_it() -> None:
    """Only the first of two URLs sharing the allocation was told: the second ended with
    neither a candidate nor an error."""
    urls = ("turn:198.51.100.10", "turn:198.51.100.10?transport=udp")
    core, [first] = started(dual=False, urls=urls)
    assert try_alternate(core, first, TURN)  # back to itself: a loop
    errors = [e for e in iter(core.next_event, None) if isinstance(e, IceCandidateErrorEvent)]
    assert [(e.url, e.errorCode) for e in errors] == [(urls[0], 300), (urls[1], 300)]
    assert "a redirect loop" in errors[1].errorText


def test_a_failure_at_the_alternate_server_names_it_and_the_redirect() -> None:
    """It said only "TURN allocate request timed out.", as if the URL's server had."""
    core, [first] = started(dual=False)
    assert try_alternate(core, first, ALTERNATE)
    drain(core)
    events: list[object] = []
    for _ in range(100):  # the alternate never answers: resends, then its deadline
        timer = core.get_timer()
        if timer is None:
            break
        core.handle_timer(timer)
        drain(core)
        events += iter(core.next_event, None)
    [error] = [e for e in events if isinstance(e, IceCandidateErrorEvent)]
    assert error.errorText == (
        "TURN allocate request timed out at 198.51.100.11:3478 "
        "(300 Try Alternate from 198.51.100.10:3478)."
    )


@pytest.mark.parametrize(
    ("alternate", "text"),
    [(("0.0.0.0", 3478), "to 0.0.0.0:3478, which is unspecified"),
     (("224.0.0.1", 3478), "to 224.0.0.1:3478, which is multicast"),
     (("::ffff:0:0", 9), "to 0.0.0.0:9, which is unspecified")],
)  # fmt: skip
def test_a_redirect_to_no_unicast_address_is_not_followed(
    alternate: tuple[str, int], text: str
) -> None:
    """Nothing is sent to 0.0.0.0 or a multicast group on a server's word."""
    core, [first] = started(dual=False)
    assert try_alternate(core, first, alternate)
    assert without_bindings(drain(core), TURN) == []
    errors = [e for e in iter(core.next_event, None) if isinstance(e, IceCandidateErrorEvent)]
    assert [e.errorCode for e in errors] == [300]
    assert errors[0].errorText == f"TURN allocate failed: 300 Try Alternate {text}"


def test_redirects_back_and_forth_end_in_an_error() -> None:
    core, [first] = started(dual=False)
    assert try_alternate(core, first, ALTERNATE)
    [second] = without_bindings(drain(core), TURN)
    assert try_alternate(core, second, TURN)  # back where it started: a loop
    assert without_bindings(drain(core), ALTERNATE) == []
    assert kinds(core) == ["gathering", "host", "error300"]  # the Bindings still wait


def test_a_redirect_to_another_family_is_not_followed() -> None:
    core, [first] = started(dual=False)  # an IPv4 base
    assert try_alternate(core, first, ("2001:db8::11", 3478))
    assert without_bindings(drain(core), TURN) == []
    assert "error300" in kinds(core)


def test_an_unsigned_redirect_of_a_signed_allocate_is_dropped() -> None:
    """Once we sign, only the key's holder may send us elsewhere (RFC 8489 §10)."""
    core, [first] = started(dual=False)
    answer(core, first.data, 0.05, [])  # 401: the next Allocate is signed
    [signed] = drain(core)
    assert not try_alternate(core, signed, ALTERNATE)
    assert drain(core) == []


def test_redirects_are_followed_twice_at_most() -> None:
    core, [first] = started(dual=False)
    hops = [ALTERNATE, ("198.51.100.12", 3478), ("198.51.100.13", 3478)]
    request = first
    for hop, sender in zip(hops[:2], [TURN, ALTERNATE], strict=True):
        assert try_alternate(core, request, hop)
        [request] = without_bindings(drain(core), sender)
        assert request.address == hop
    assert try_alternate(core, request, hops[2])  # a third redirect is one too many
    assert without_bindings(drain(core), hops[1]) == []
    errors = [e for e in iter(core.next_event, None) if isinstance(e, IceCandidateErrorEvent)]
    assert [e.errorCode for e in errors] == [300]
    assert "more than 2 redirects" in errors[0].errorText


def test_relay_and_srflx_events_name_their_server() -> None:
    """RTCPeerConnectionIceEvent.url: the TURN server's URL on the relay and srflx events
    it gave, None on the host candidate's and the end-of-candidates'."""
    core, [first] = started(dual=False)
    allocate(core, first)
    urls = {}
    while (event := core.next_event()) is not None:
        if isinstance(event, IceCandidateEvent) and event.candidate is not None:
            urls[event.candidate.type or "end"] = event.url
    assert urls == {
        "host": None,
        "srflx": "turn:198.51.100.10",
        "relay": "turn:198.51.100.10",
        "end": None,
    }


# -- 437 Allocation Mismatch: the server holds an allocation for our 5-tuple ---------------


def commands(core: Gathering) -> list[Command]:
    out = []
    while (command := core.next_command()) is not None:
        out.append(command)
    return out


def mismatch(
    core: Gathering, request: bytes, now: float, key: int = 1, signed: bool = False
) -> None:
    """As coturn 4.6: a 437 to an Allocate comes unsigned, even to a signed one."""
    message = stun.parse(request)
    value = stun.error_code_value(437, "Mismatched allocation: wrong transaction ID")
    reply = stun.encode(
        Method.ALLOCATE, MessageClass.ERROR, message.transaction_id,
        [(Attr.ERROR_CODE, value)], integrity_key=KEY if signed else None,
    )  # fmt: skip
    assert core.receive_datagram(now, key, reply, TURN)


def signed_allocate(core: Gathering, first: SendDatagram, now: float, key: int = 1) -> bytes:
    """Challenge the first Allocate; the signed one that follows."""
    answer(core, first.data, now, [], key=key)
    [second] = drain(core)
    assert second.base_key == key and stun.parse(second.data).get(Attr.MESSAGE_INTEGRITY)
    return second.data


def test_a_437_moves_the_allocation_to_another_socket_and_asks_for_the_srflx() -> None:
    """RFC 8656 §7.3, as libwebrtc does it: a new 5-tuple. The base's srflx, which the
    failed allocation would have brought, comes from a Binding request instead."""
    core, [first] = started(dual=False)
    mismatch(core, signed_allocate(core, first, 0.05), 0.1)
    open_socket, binding = commands(core)
    assert open_socket == OpenSocket(1, 1)
    assert isinstance(binding, SendDatagram) and binding.base_key == 1
    assert binding.address == TURN and stun.parse(binding.data).method == Method.BINDING
    core.socket_opened(0.1, 1, 7)
    [unsigned] = drain(core)
    assert unsigned.base_key == 7 and unsigned.address == TURN
    txid = stun.parse(binding.data).transaction_id
    mapped = stun.xor_address_value("198.51.100.1", 40000, txid)
    reply = stun.encode(
        Method.BINDING, MessageClass.SUCCESS, txid, [(Attr.XOR_MAPPED_ADDRESS, mapped)]
    )
    assert core.receive_datagram(0.15, 1, reply, TURN)
    answer(core, signed_allocate(core, unsigned, 0.2, key=7), 0.25, [], key=7)
    assert kinds(core) == ["gathering", "host", "srflx", "relay", "end", "complete", "null"]
    srflx, relay = (c for c in core.candidates if c.type in ("srflx", "relay"))
    assert (srflx.address, srflx.port) == ("198.51.100.1", 40000)  # the base's, not socket 7's
    assert (relay.relatedAddress, relay.relatedPort) == ("198.51.100.1", 41000)
    assert len(core.allocations) == 1
    core.close(0.3)
    [refresh] = drain(core)  # the deallocation goes from the socket that holds it
    assert refresh.base_key == 7 and stun.parse(refresh.data).method == Method.REFRESH


def test_a_signed_437_moves_the_allocation_too() -> None:
    core, [first] = started(dual=False)
    mismatch(core, signed_allocate(core, first, 0.05), 0.1, signed=True)
    assert OpenSocket(1, 1) in commands(core)


def test_an_unsigned_437_to_a_signed_refresh_is_dropped() -> None:
    """Only an Allocate's 437 is taken unsigned (it only moves us to another socket);
    one to a Refresh would end the allocation, and coturn signs that one."""
    core, [first] = started(dual=False)
    allocate(core, first)
    [allocation] = core.allocations
    due = allocation.refresh_at
    assert due is not None
    core.handle_timer(due)
    [refresh] = drain(core)
    txid = stun.parse(refresh.data).transaction_id
    value = stun.error_code_value(437, "Allocation Mismatch")
    reply = stun.encode(Method.REFRESH, MessageClass.ERROR, txid, [(Attr.ERROR_CODE, value)])
    assert not core.receive_datagram(due + 0.05, 1, reply, TURN)
    assert core.allocations == [allocation]


def test_a_moved_relay_redirected_to_a_server_the_base_allocates_on_already_says_so() -> None:
    """The redirect allocates from the base's socket: the allocation the base already
    has at the alternate is not taken over (its redirect history overwritten)."""
    core, [first, other] = started(dual=False, urls=("turn:198.51.100.10", "turn:198.51.100.11"))
    assert other.address == ALTERNATE
    mismatch(core, signed_allocate(core, first, 0.05), 0.1)
    commands(core)
    core.socket_opened(0.1, 1, 7)
    [unsigned] = drain(core)
    assert unsigned.base_key == 7
    assert try_alternate(core, unsigned, ALTERNATE)
    assert drain(core) == []
    [error] = [e for e in iter(core.next_event, None) if isinstance(e, IceCandidateErrorEvent)]
    assert error.errorCode == 300 and "an allocation there already" in error.errorText
    assert core._relays[(1, ALTERNATE)].tried == ()


def test_three_437s_in_a_row_end_in_an_error() -> None:
    core, [first] = started(dual=False)
    mismatch(core, signed_allocate(core, first, 0.05), 0.1)
    ask = commands(core)[0]
    for move, key in enumerate((7, 8), start=1):
        assert isinstance(ask, OpenSocket)
        core.socket_opened(0.1 * move, ask.request, key, 47000 + key)
        [unsigned] = drain(core)
        mismatch(core, unsigned.data, 0.1 * move + 0.05, key=key)
        following = commands(core)
        if key == 7:
            assert [type(c) for c in following] == [OpenSocket]  # no second Binding
            ask = following[0]
    assert following == []
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    [error] = [e for e in events if isinstance(e, IceCandidateErrorEvent)]
    assert error.errorCode == 437
    assert (error.address, error.port) == ("203.0.113.2", 47008)  # where it last asked from


def test_no_other_socket_ends_the_relay_in_an_error_that_says_so() -> None:
    core, [first] = started(dual=False)
    mismatch(core, signed_allocate(core, first, 0.05), 0.1)
    commands(core)
    core.socket_failed(0.1, 1, "no free port in (40000, 40000)")
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    [error] = [e for e in events if isinstance(e, IceCandidateErrorEvent)]
    assert error.errorCode == 437 and "no free port in (40000, 40000)" in error.errorText


def test_an_address_gone_while_closing_emits_nothing() -> None:
    """remove_bases() while a relay was still deallocating settled it, and its transport
    then fired "", complete and null after close()."""
    core, [first] = started(dual=False)
    answer(core, first.data, 0.05, [])  # 401: the signed Allocate is in flight
    drain(core)
    while core.next_event() is not None:
        pass
    core.close(0.1)
    drain(core)  # the deallocation
    core.remove_bases(0.2, [1])
    assert core.next_event() is None
    assert core.state is not GatheringState.COMPLETE


def test_a_socket_opened_after_close_is_ignored() -> None:
    core, [first] = started(dual=False)
    mismatch(core, signed_allocate(core, first, 0.05), 0.1)
    commands(core)
    core.close(0.1)
    core.socket_opened(0.1, 1, 7)
    core.socket_opened(0.1, 99, 8)  # and one never asked for
    assert [c for c in commands(core) if isinstance(c, SendDatagram) and c.base_key == 7] == []


def test_a_driver_that_never_opens_the_socket_holds_up_nothing() -> None:
    """The core stays self-sufficient: the relay fails at its deadline, with the reason."""
    core, [first] = started(dual=False)
    mismatch(core, signed_allocate(core, first, 0.05), 0.1)
    commands(core)  # the OpenSocket, never answered; the Binding is never answered either
    while (timer := core.get_timer()) is not None and core.state.value != "complete":
        core.handle_timer(timer)
        commands(core)
    assert core.state.value == "complete"
    texts = []
    while (event := core.next_event()) is not None:
        if isinstance(event, IceCandidateErrorEvent):
            texts.append(event.errorText)
    assert texts == [
        "TURN allocate failed: 437 Allocation Mismatch, and no other socket came in time"
    ]


def test_a_relay_waiting_for_its_socket_goes_with_its_base() -> None:
    """Continual gathering: the address went while the driver opened the socket the 437
    asked for. The socket that came after allocated all the same, and a relay candidate
    of the removed base followed its `candidateremoved`."""
    core, [first] = started(dual=False, continual=True)
    mismatch(core, signed_allocate(core, first, 0.05), 0.1)
    [ask] = [c for c in commands(core) if isinstance(c, OpenSocket)]
    core.remove_bases(0.12, [1])
    assert core.waiting_for == []
    core.socket_opened(0.15, ask.request, 7)
    assert [c for c in commands(core) if isinstance(c, SendDatagram)] == []
    while (timer := core.get_timer()) is not None:  # nor an error at the deadline
        core.handle_timer(timer)
        commands(core)
    assert "error437" not in kinds(core) and core.candidates == []


def test_a_late_answer_to_a_request_that_gave_up_is_not_taken_for_a_newer_one() -> None:
    """Request numbers are never reused: the driver's late socket for the first 437 must
    not become the second relay's."""
    core, [first] = started(dual=False)
    mismatch(core, signed_allocate(core, first, 0.05), 0.1)
    [late] = [c for c in commands(core) if isinstance(c, OpenSocket)]
    while (timer := core.get_timer()) is not None and core.state.value != "complete":
        core.handle_timer(timer)  # the relay gives up on its socket at the deadline
        commands(core)
    core.restart(3.0, Credentials("ufrag002", "q" * 24))
    commands(core)
    core.start(3.0, [Base(2, 0, 1, "203.0.113.2", 40002, socket.AF_INET, 0)])
    [again] = [c for c in commands(core) if isinstance(c, SendDatagram)]
    mismatch(core, signed_allocate(core, again, 3.05, key=2), 3.1, key=2)
    [ask] = [c for c in commands(core) if isinstance(c, OpenSocket)]
    assert ask.request != late.request
    core.socket_opened(3.2, late.request, 9)  # the first request's socket, too late
    assert [c for c in commands(core) if isinstance(c, SendDatagram) and c.base_key == 9] == []
    core.socket_opened(3.2, ask.request, 10)
    [unsigned] = [c for c in commands(core) if isinstance(c, SendDatagram)]
    assert unsigned.base_key == 10


def refresh_refused(core: Gathering, allocation: Allocation, key: int = 1) -> float:
    """The allocation's refresh comes due and the server no longer knows it (437); when."""
    due = allocation.refresh_at
    assert due is not None
    core.handle_timer(due)
    [refresh] = [c for c in drain(core) if c.base_key == key]
    message = stun.parse(refresh.data)
    assert message.method == Method.REFRESH
    reply = stun.encode(
        Method.REFRESH,
        MessageClass.ERROR,
        message.transaction_id,
        [(Attr.ERROR_CODE, stun.error_code_value(437, "Allocation Mismatch"))],
        integrity_key=KEY,
    )
    assert core.receive_datagram(due + 0.05, key, reply, TURN)
    return due


def test_a_lost_allocation_s_relay_is_removed_and_announced_while_gathering_continually() -> None:
    core, [first] = started(dual=False, continual=True)
    allocate(core, first)
    assert kinds(core) == ["gathering", "host", "srflx", "relay"]  # continual: still open
    [allocation] = core.allocations
    refresh_refused(core, allocation)
    assert kinds(core) == ["removed relay"]
    assert [c.type for c in core.candidates] == ["host", "srflx"]  # the srflx is the base's
    assert core.allocations == [] and core.allocation_for(allocation.relayed[0]) is None


def test_a_relay_lost_after_completion_leaves_the_candidates_without_an_event() -> None:
    core, [first] = started(dual=False)
    allocate(core, first)
    kinds(core)  # through null: the stream has ended
    [allocation] = core.allocations
    due = allocation.refresh_at
    assert due is not None
    now = due
    while now < due + 120 and core.allocations:  # unanswered until the lifetime ends
        core.handle_timer(now)
        drain(core)
        now = core.get_timer() or now + 1
    assert core.allocations == []
    assert kinds(core) == []
    assert [c.type for c in core.candidates] == ["host", "srflx"]


def test_close_is_no_loss_of_a_relay() -> None:
    core, [first] = started(dual=False, continual=True)
    allocate(core, first)
    kinds(core)
    core.close(1.0)
    drain(core)
    assert "removed relay" not in kinds(core)


def every_allocation(core: Gathering) -> list[Allocation]:
    """Pooled generations' too, which `allocations` keeps from the application."""
    return [r.allocation for r in core._relays.values() if r.allocation.state == "allocated"]


def test_a_pooled_generation_s_allocation_shows_once_gather_takes_it() -> None:
    """`allocations` listed the pool's allocations before any gather() had asked for
    that generation, which `candidates` and `sdp_candidates()` do not show."""
    core = relayed_with_a_pooled_relay()
    current, pooled = every_allocation(core)
    assert core.allocations == [current]
    core.restart(2.0, None)
    assert core.allocations == [current]  # taken, but still held until gather()
    core.release()
    assert core.allocations == [current, pooled]


def relayed_with_a_pooled_relay() -> Gathering:
    """Generation 0 relayed (its events read), and generation 1 pooled with its relay
    from socket 2."""
    core, [first] = started(dual=False)
    allocate(core, first)
    kinds(core)
    pooled = Base(2, 0, 1, "203.0.113.2", 40002, socket.AF_INET, 0)
    core.prepare(1.0, Credentials("pooled01", "q" * 24), [pooled])
    [request] = drain(core)
    assert stun.parse(request.data).get(Attr.MESSAGE_INTEGRITY) is not None  # a warm nonce
    answer(core, request.data, 1.05, [], key=2)
    assert drain(core) == []
    return core


def test_a_pooled_generation_s_lost_relay_is_never_shown() -> None:
    """Its events wait for the restart that takes the pool: the relay's is withdrawn."""
    core = relayed_with_a_pooled_relay()
    assert kinds(core) == []  # held for the restart
    current, pool = every_allocation(core)
    assert core.allocations == [current]  # the application has not seen the pooled one
    due = refresh_refused(core, pool, key=2)
    assert every_allocation(core) == [current]
    core.restart(due + 1.0, None)
    assert kinds(core) == []  # still held: gather() releases it
    core.release()
    assert kinds(core) == ["gathering", "host", "srflx", "end", "complete", "null"]
    assert [c.type for c in core.candidates] == ["host", "srflx"]


def test_a_second_restart_keeps_the_seen_relay_and_releases_the_unseen_one() -> None:
    """ICE may use the last generation the application saw until its restart completes:
    its relay stays. The pooled one that a first restart took, nobody saw: it goes."""
    core = relayed_with_a_pooled_relay()
    seen, _unseen = every_allocation(core)
    core.restart(2.0, None)  # takes the pooled generation, not released yet
    core.restart(2.0, Credentials("ufrag003", "r" * 24))
    assert every_allocation(core) == [seen]
    [deallocate] = drain(core)
    refresh = stun.parse(deallocate.data)
    assert deallocate.base_key == 2 and refresh.get(Attr.LIFETIME) == bytes(4)
    assert core.closing_keys == {2}  # a driver keeps socket 2 open for the answer
    done = stun.encode(
        Method.REFRESH,
        MessageClass.SUCCESS,
        refresh.transaction_id,
        [(Attr.LIFETIME, stun.u32_value(0))],
        integrity_key=KEY,
    )
    assert core.receive_datagram(2.01, 2, done, TURN)
    assert core.closing_keys == set()
    assert kinds(core) == []  # generation 1 is dropped unseen
    core.start(2.0, [Base(3, 0, 1, "203.0.113.2", 40003, socket.AF_INET, 0)])
    core.restart(3.0, Credentials("ufrag004", "s" * 24))  # generation 2 was seen
    assert core.allocations == []
    assert [d.base_key for d in drain(core) if d.base_key == 1]  # 0's goes now
