"""The sans-I/O core, driven through a simulated network: no sockets, virtual time."""

from __future__ import annotations

import dataclasses
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ice_engine import stun
from ice_engine.candidate import Candidate
from ice_engine.commands import Resolve, SendDatagram
from ice_engine.credentials import Credentials, new_credentials
from ice_engine.events import (
    CandidateRemovedEvent,
    Event,
    GatheringState,
    IceCandidateErrorEvent,
    IceCandidateEvent,
    IceGatheringStateChangeEvent,
)
from ice_engine.gathering import Base, Gathering, Server, Transport
from ice_engine.transaction import RttTable, StunTransaction, Timing
from ice_engine.urls import parse_server_url
from tests.simnet import SimNetwork, StunServer

V4A, V4B, V6 = "203.0.113.2", "203.0.113.130", "2001:db8:a::2"
PUBLIC = "198.51.100.1"
STUN = ("198.51.100.10", 3478)
DEAD = ("198.51.100.20", 3478)

ADDRESSES = [(V6, socket.AF_INET6), (V4A, socket.AF_INET), (V4B, socket.AF_INET)]


def make_bases(transports: int = 1, components: int = 1, first_port: int = 40000) -> list[Base]:
    bases = []
    key = 0
    for transport in range(transports):
        for component in range(1, components + 1):
            for rank, (address, family) in enumerate(ADDRESSES):
                key += 1
                bases.append(
                    Base(
                        key, transport, component, address, first_port + key, family, rank, rank + 1
                    )
                )
    return bases


def make_core(
    urls: tuple[str, ...] = (),
    transports: int = 1,
    components: int = 1,
    relay_only: bool = False,
    timing: Timing | None = None,
    rtt: RttTable | None = None,
) -> Gathering:
    return Gathering(
        transports=[Transport(str(i), i) for i in range(transports)],
        components=components,
        servers=[Server(parse_server_url(u), i) for i, u in enumerate(urls)],
        credentials=Credentials("ufrag001", "p" * 24),
        relay_only=relay_only,
        timing=timing,
        rtt=rtt if rtt is not None else RttTable(),
    )


def nat_for(bases: list[Base]) -> dict[tuple[str, int], tuple[str, int]]:
    """The lab's NAT: IPv4 bases map to the public address, IPv6 is not translated."""
    return {
        (b.address, b.port): (PUBLIC, 50000 + b.key) for b in bases if b.family == socket.AF_INET
    }


def candidates_of(events: list[Event]) -> list[Candidate]:
    return [
        e.candidate.parsed
        for e in events
        if isinstance(e, IceCandidateEvent) and e.candidate and e.candidate.parsed
    ]


def kinds(events: list[Event]) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, IceGatheringStateChangeEvent):
            out.append(e.state.value)
        elif isinstance(e, IceCandidateErrorEvent):
            out.append(f"error{e.errorCode}")
        elif isinstance(e, IceCandidateEvent):
            if e.candidate is None:
                out.append("null")
            elif e.candidate.parsed is None:
                out.append(f"end:{e.candidate.sdpMid}")
            else:
                out.append(e.candidate.parsed.type)
    return out


def test_host_only_fires_in_browser_order() -> None:
    core = make_core(transports=2)
    net = SimNetwork(core)
    net.start(make_bases(transports=2))
    assert kinds(net.events) == (
        ["gathering"] + ["host"] * 6 + ["end:0", "end:1", "complete", "null"]
    )
    assert core.state is GatheringState.COMPLETE
    first = net.events[1]
    assert isinstance(first, IceCandidateEvent) and first.candidate is not None
    assert first.candidate.candidate.startswith("candidate:")
    assert first.candidate.candidate.endswith("typ host generation 0 ufrag ufrag001 network-id 1")
    assert first.candidate.usernameFragment == "ufrag001"
    assert (first.candidate.sdpMid, first.candidate.sdpMLineIndex) == ("0", 0)
    end = net.events[7]
    assert isinstance(end, IceCandidateEvent) and end.candidate is not None
    assert end.candidate.to_json() == {
        "candidate": "",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "ufrag001",
    }


def test_priorities_unique_per_component_and_interleaved() -> None:
    core = make_core(("stun:198.51.100.10", "stun:198.51.100.11"), transports=2, components=2)
    bases = make_bases(transports=2, components=2)
    servers = {
        STUN: StunServer(STUN, nat_for(bases)),
        ("198.51.100.11", 3478): StunServer(
            ("198.51.100.11", 3478),
            {k: (v[0], v[1] + 1) for k, v in nat_for(bases).items()},  # endpoint-dependent
        ),
    }
    net = SimNetwork(core, servers)
    net.start(bases)
    net.run()
    events = net.events
    per_component: dict[tuple[str, int], list[int]] = {}
    for e in events:
        if isinstance(e, IceCandidateEvent) and e.candidate and e.candidate.parsed:
            key = (e.candidate.sdpMid, e.candidate.parsed.component)
            per_component.setdefault(key, []).append(e.candidate.parsed.priority)
    assert len(per_component) == 4
    for priorities in per_component.values():
        assert len(priorities) == len(set(priorities)), priorities
    # Unique per transport, not across them: each transport ranks its candidates alike.
    for component in (1, 2):
        assert sorted(per_component["0", component]) == sorted(per_component["1", component])
    hosts = [c for c in candidates_of(events) if c.type == "host" and c.component == 1][:3]
    assert [h.address for h in hosts] == [V6, V4A, V4B]
    assert hosts[0].priority > hosts[1].priority > hosts[2].priority
    srflx = [c for c in candidates_of(events) if c.type == "srflx"]
    assert len(srflx) == 2 * 2 * 2 * 2  # transports × components × IPv4 bases × servers
    assert all(host.priority > s.priority for host in hosts for s in srflx)
    assert core.state is GatheringState.COMPLETE


def test_srflx_at_one_rtt_with_related_address() -> None:
    core = make_core(("stun:198.51.100.10",))
    bases = make_bases()
    net = SimNetwork(core, {STUN: StunServer(STUN, nat_for(bases))})
    net.start(bases)
    net.run()
    srflx = [
        e
        for e in net.events
        if isinstance(e, IceCandidateEvent) and e.candidate and e.candidate.type == "srflx"
    ]
    assert len(srflx) == 2  # one per IPv4 base: the server is IPv4 only
    for event in srflx:
        assert event.candidate is not None and event.candidate.parsed is not None
        parsed = event.candidate.parsed
        assert parsed.address == PUBLIC
        assert parsed.related_address in (V4A, V4B)
        assert parsed.related_port == next(
            b.port for b in bases if b.address == parsed.related_address
        )
        assert event.t == pytest.approx(0.05)
        assert event.url == "stun:198.51.100.10"  # RTCPeerConnectionIceEvent.url
    assert kinds(net.events)[-3:] == ["end:0", "complete", "null"]
    assert net.events[-1].t == pytest.approx(0.05)
    others = [e for e in net.events if isinstance(e, IceCandidateEvent) and e not in srflx]
    assert others and all(e.url is None for e in others)  # host, end-of-candidates, null
    assert "url" not in others[0].to_json() and srflx[0].to_json()["url"] == event.url


@pytest.mark.parametrize("hidden_by", ["mdns", "hide_host", None])
def test_srflx_equal_to_its_base_is_kept_when_no_host_candidate_showed_it(
    hidden_by: str | None,
) -> None:
    """Pruning it as redundant (RFC 8445 §5.1.3) left a public IPv6 host with only a .local
    name, or with nothing at all in RFC 8828 mode 3."""
    core = make_core(("stun:198.51.100.10",))
    bases = make_bases()
    if hidden_by == "mdns":
        bases = [dataclasses.replace(b, name=f"host{b.key}.local") for b in bases]
    elif hidden_by == "hide_host":
        core.hide_host = True
    nat = nat_for(bases)
    [public] = [b for b in bases if b.address == V4A]
    nat[(V4A, public.port)] = (V4A, public.port)  # this base is public: no NAT
    net = SimNetwork(core, {STUN: StunServer(STUN, nat)})
    net.start(bases)
    net.run()
    srflx = [c for c in candidates_of(net.events) if c.type == "srflx"]
    if hidden_by is None:  # the host candidate says it all: redundant
        assert [c.address for c in srflx] == [PUBLIC]
        return
    [own] = [c for c in srflx if c.address == V4A]
    assert (own.related_address, own.related_port) == ("0.0.0.0", 0)  # the base stays unsaid
    assert len(srflx) == 2


def test_stuns_is_an_error_at_once_not_a_timeout() -> None:
    core = make_core(("stuns:198.51.100.10",))
    net = SimNetwork(core, {})
    net.start(make_bases())
    net.run()
    expected = ["gathering", "host", "host", "host", "error701", "end:0", "complete", "null"]
    assert kinds(net.events) == expected
    [error] = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert "stuns:" in error.errorText and error.t == 0


def test_dead_server_beside_live_one() -> None:
    timing = Timing(server_deadline=2.0)
    core = make_core(("stun:198.51.100.10", "stun:198.51.100.20"), timing=timing)
    bases = make_bases()
    net = SimNetwork(core, {STUN: StunServer(STUN, nat_for(bases))})
    net.start(bases)
    net.run()
    srflx = [
        e
        for e in net.events
        if isinstance(e, IceCandidateEvent) and e.candidate and e.candidate.type == "srflx"
    ]
    assert srflx and all(e.t == pytest.approx(0.05) for e in srflx)
    errors = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    ipv4_bases = {(b.address, b.port) for b in bases if b.family == socket.AF_INET}
    assert len(errors) == 2  # one per IPv4 base: an IPv4 server is not asked from IPv6
    assert {e.errorCode for e in errors} == {701}
    assert {e.url for e in errors} == {"stun:198.51.100.20"}
    assert {(e.address, e.port) for e in errors} == ipv4_bases
    assert all(e.t == pytest.approx(2.0) for e in errors)
    assert net.events[-1].t == pytest.approx(2.0)
    retransmits = [s for s in net.sent if s.address == DEAD]
    assert len(retransmits) == 2 * 4  # 0, 0.25, 0.75, 1.75 s per base


def _srflx_times(events: list[Event]) -> list[float]:
    return [
        e.t
        for e in events
        if isinstance(e, IceCandidateEvent) and e.candidate and e.candidate.type == "srflx"
    ]


def test_a_stun_server_s_addresses_are_tried_in_turn() -> None:
    """A name with a dead address first (an SRV primary down, a round-robin node gone):
    the next is asked once the first's share of the deadline has passed, with no error,
    and `complete` comes with the backup's srflx, not at the deadline. (Every address
    was asked at once: each dead one gave an error per base and held `complete` for the
    whole 2 s.)"""
    core = make_core(("stun:stun.lab.test",), timing=Timing(server_deadline=2.0))
    bases = make_bases()
    net = SimNetwork(
        core, {STUN: StunServer(STUN, nat_for(bases))}, dns={"stun.lab.test": [DEAD, STUN]}
    )
    net.start(bases)
    net.run()
    assert not [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    # DNS at 0.01 s; the dead one's share is half of the 1.99 s left; then one RTT.
    assert _srflx_times(net.events) == [pytest.approx(1.055)] * 2
    assert kinds(net.events)[-2:] == ["complete", "null"]
    assert net.events[-1].t == pytest.approx(1.055)
    assert [s.address for s in net.sent if s.address == STUN] == [STUN] * 2


def test_a_stun_server_s_first_address_answering_is_the_only_one_asked() -> None:
    core = make_core(("stun:stun.lab.test",))
    bases = make_bases()
    servers = {STUN: StunServer(STUN, nat_for(bases)), DEAD: StunServer(DEAD, nat_for(bases))}
    net = SimNetwork(core, servers, dns={"stun.lab.test": [STUN, DEAD]})
    net.start(bases)
    net.run()
    assert {s.address for s in net.sent} == {STUN}
    assert _srflx_times(net.events) == [pytest.approx(0.06)] * 2


def test_a_stun_server_whose_addresses_all_fail_gives_one_error_per_base() -> None:
    other = ("198.51.100.21", 3478)
    core = make_core(("stun:stun.lab.test",), timing=Timing(server_deadline=2.0))
    bases = make_bases()
    net = SimNetwork(core, dns={"stun.lab.test": [DEAD, other]})
    net.start(bases)
    net.run()
    errors = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert [(e.errorCode, e.t) for e in errors] == [(701, pytest.approx(2.0))] * 2
    assert {s.address for s in net.sent} == {DEAD, other}
    assert net.events[-1].t == pytest.approx(2.0)


def test_an_icmp_error_moves_on_to_the_next_address_at_once() -> None:
    core = make_core(("stun:stun.lab.test",))
    bases = make_bases()
    net = SimNetwork(
        core, {STUN: StunServer(STUN, nat_for(bases))}, dns={"stun.lab.test": [DEAD, STUN]}
    )
    net.start(bases)
    net.run(until=0.01)  # DNS answered, the first requests sent
    for base in bases:
        if base.family == socket.AF_INET:
            core.unreachable(net.now, base.key, DEAD, "ICMP port unreachable")
    net.pump()
    net.run()
    assert not [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert _srflx_times(net.events) == [pytest.approx(0.06)] * 2


@settings(max_examples=100, deadline=None)
@given(
    alive=st.lists(st.booleans(), min_size=1, max_size=4),
    rtt=st.floats(0.002, 0.4),
    duplicate=st.booleans(),
)
def test_a_stun_name_s_addresses_are_tried_in_turn_until_one_maps(
    alive: list[bool], rtt: float, duplicate: bool
) -> None:
    """Whichever of a STUN name's addresses answer (round trip up to 0.4 s): gathering
    completes by the deadline, with a srflx per IPv4 base and no error if an address
    within reach of its share answers, else an error per base; addresses are asked in
    order, one at a time, none after the first that answered."""
    addresses = [(f"198.51.100.{10 + i}", 3478) for i in range(len(alive))]
    core = make_core(("stun:stun.lab.test",), timing=Timing(server_deadline=2.0))
    bases = make_bases()
    servers = {
        a: StunServer(a, nat_for(bases)) for a, up in zip(addresses, alive, strict=True) if up
    }
    dns = {"stun.lab.test": addresses + addresses[:1] * duplicate}
    net = SimNetwork(core, servers, dns=dns, delay=rtt / 2)
    net.start(bases)
    net.run()
    assert core.state is GatheringState.COMPLETE and net.events[-1].t <= 2.0 + 1e-9
    srflx = [e.candidate for e in net.events if isinstance(e, IceCandidateEvent) and e.candidate]
    srflx = [c for c in srflx if c.type == "srflx"]
    errors = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    for base in (b for b in bases if b.family == socket.AF_INET):
        asked = list(dict.fromkeys(s.address for s in net.sent if s.base_key == base.key))
        assert asked == addresses[: len(asked)]  # in order, each once in turn
        mapped = [c for c in srflx if c.relatedPort == base.port]
        failed = [e for e in errors if (e.address, e.port) == (base.address, base.port)]
        assert len(mapped) + len(failed) == 1, (mapped, failed)
        if mapped:
            assert asked[-1] == addresses[alive.index(True)]  # none after it
        else:
            assert failed[0].errorCode == 701


def test_the_last_of_many_addresses_gets_an_equal_share() -> None:
    """Two initial RTOs for each address first left the last of eight 31 ms: a server
    answering in 60 ms behind seven dead addresses was never heard."""
    dead = [(f"198.51.100.{20 + i}", 3478) for i in range(7)]
    core = make_core(("stun:stun.lab.test",), timing=Timing(server_deadline=2.0))
    bases = make_bases()
    servers = {STUN: StunServer(STUN, nat_for(bases))}
    net = SimNetwork(core, servers, dns={"stun.lab.test": [*dead, STUN]}, delay=0.03)
    net.start(bases)
    net.run()
    assert not [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert _srflx_times(net.events) == [pytest.approx(0.01 + 1.99 * 7 / 8 + 0.06)] * 2


def test_an_error_response_is_an_answer_the_next_address_is_not_asked() -> None:
    """As for TURN: a server that answers, even with an error, is there; its error is
    the server's, reported, and the backup is not asked."""
    core = make_core(("stun:stun.lab.test",))
    bases = make_bases()
    servers = {DEAD: StunServer(DEAD, error=(500, "Server Error")), STUN: StunServer(STUN)}
    net = SimNetwork(core, servers, dns={"stun.lab.test": [DEAD, STUN]})
    net.start(bases)
    net.run()
    errors = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert [(e.errorCode, e.errorText) for e in errors] == [(500, "Server Error")] * 2
    assert {s.address for s in net.sent} == {DEAD}


def test_a_link_local_base_asks_no_server_beyond_its_link() -> None:
    """With link_local=True, an fe80:: base asked a global server: the kernel refused
    the send or ICMP said "beyond scope", so each server got a 701 per such base and
    was summed up as failed though its global bases had their srflx."""
    global6, linked6 = ("2001:db8:b::10", 3478), ("fe80::99", 3478)
    core = make_core(("stun:[2001:db8:b::10]", "stun:[fe80::99]"))
    bases = make_bases()
    bases.append(Base(99, 0, 1, "fe80::2", 40099, socket.AF_INET6, 3, 4))
    servers = {global6: StunServer(global6), linked6: StunServer(linked6)}
    net = SimNetwork(core, servers)
    net.start(bases)
    net.run()
    assert not [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    asked_from = {(s.address, s.base_key) for s in net.sent}
    assert (global6, 99) not in asked_from and (linked6, 99) in asked_from
    assert (global6, bases[0].key) in asked_from  # the global IPv6 base asks it


def test_error_response_gives_error_event_with_stun_code() -> None:
    core = make_core(("stun:198.51.100.10",))
    bases = make_bases()
    net = SimNetwork(core, {STUN: StunServer(STUN, error=(420, "Unknown Attribute"))})
    net.start(bases)
    net.run()
    errors = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert [(e.errorCode, e.errorText) for e in errors] == [(420, "Unknown Attribute")] * 2
    assert kinds(net.events)[-2:] == ["complete", "null"]
    assert net.events[-1].t == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("mapped", "text"),
    [(("0.0.0.0", 9), "mapped address 0.0.0.0:9 is unspecified"),
     (("224.0.0.1", 9), "mapped address 224.0.0.1:9 is multicast"),
     (("203.0.113.9", 0), "mapped address 203.0.113.9:0 has port 0")],
)  # fmt: skip
def test_a_mapped_address_that_is_no_transport_address_is_an_error_not_a_srflx(
    mapped: tuple[str, int], text: str
) -> None:
    """A broken or hostile server's 0.0.0.0 or multicast group became a srflx in the SDP."""
    core = make_core(("stun:198.51.100.10",))
    bases = make_bases()
    nat = {(b.address, b.port): mapped for b in bases if ":" not in b.address}
    net = SimNetwork(core, {STUN: StunServer(STUN, nat)})
    net.start(bases)
    net.run()
    assert "srflx" not in kinds(net.events)
    errors = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert [(e.errorCode, e.errorText) for e in errors] == [(700, text)] * len(nat)
    assert kinds(net.events)[-2:] == ["complete", "null"]


def test_an_ipv4_mapped_mapped_address_is_the_ipv4_srflx_it_names() -> None:
    """It was a srflx `::ffff:cb00:7109` on an IPv4 base."""
    core = make_core(("stun:198.51.100.10",))
    bases = make_bases()
    nat = {(b.address, b.port): ("::ffff:203.0.113.9", 9) for b in bases if ":" not in b.address}
    net = SimNetwork(core, {STUN: StunServer(STUN, nat)})
    net.start(bases)
    net.run()
    assert {(c.address, c.port) for c in candidates_of(net.events) if c.type == "srflx"} == {
        ("203.0.113.9", 9)
    }


def test_ice_tcp_active_candidates_of_two_transports_go_each_with_its_own_listener() -> None:
    """Their lines are the same (port 9): keyed by line, removing transport 0's listener
    left its active candidate, and removing transport 1's would have taken both."""
    core = Gathering(
        transports=[Transport("0", 0), Transport("1", 1)],
        credentials=Credentials("ufrag001", "p" * 24),
        continual=True,
    )
    udp = [Base(1 + t, t, 1, "203.0.113.2", 40000 + t, socket.AF_INET, 0) for t in (0, 1)]
    tcp = [Base(3 + t, t, 1, "203.0.113.2", 40002 + t, socket.AF_INET, 0) for t in (0, 1)]
    core.start(0.0, udp, tcp)
    while core.next_event() is not None:
        pass
    active = [c for c in core.candidates if c.tcpType == "active"]
    assert active[0].candidate == active[1].candidate
    assert [core.base_key_of(c.sdpMid, c.candidate) for c in active] == [3, 4]
    core.remove_bases(1.0, [3])  # transport 0's listener
    removed = [(e.candidate.sdpMid, e.candidate.tcpType) for e in iter(core.next_event, None)]
    assert sorted(removed) == [("0", "active"), ("0", "passive")]
    assert [(c.sdpMid, c.tcpType) for c in core.candidates if c.protocol == "tcp"] == [
        ("1", "active"),
        ("1", "passive"),
    ]


def test_a_binding_error_s_reason_is_bounded_and_printable() -> None:
    """As TURN's already were: a server's reason went into errorText raw, terminal
    escapes and up to 763 bytes of it."""
    core = make_core(("stun:198.51.100.10",))
    reason = "\x1b[2J\x07boom" + "a" * 600
    net = SimNetwork(core, {STUN: StunServer(STUN, error=(500, reason))})
    net.start(make_bases())
    net.run()
    errors = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert [e.errorText for e in errors] == ["?[2J?boom" + "a" * 191] * 2


def test_dns_failure_is_an_error_and_gathering_goes_on() -> None:
    core = make_core(("stun:nowhere.lab.test", "stun:stun.lab.test"))
    bases = make_bases()
    net = SimNetwork(core, {STUN: StunServer(STUN, nat_for(bases))}, dns={"stun.lab.test": [STUN]})
    net.start(bases)
    net.run()
    errors = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert len(errors) == 1
    assert errors[0].url == "stun:nowhere.lab.test" and errors[0].address is None
    assert errors[0].errorCode == 701 and "NXDOMAIN" in errors[0].errorText
    assert kinds(net.events).count("srflx") == 2
    assert net.events[-1].t == pytest.approx(0.06)  # DNS, then one RTT


def test_a_driver_s_answer_that_is_not_unicast_is_never_contacted() -> None:
    """The unicast filter was the asyncio resolver's: a driver of its own (getaddrinfo,
    a hosts file that blocks a name with 0.0.0.0) had the core send there, and an empty
    answer left the server without an error."""
    urls = ("stun:blocked.lab.test", "stun:empty.lab.test", "stun:mixed.lab.test")
    core = make_core(urls)
    bases = make_bases()
    dns = {
        "blocked.lab.test": [("0.0.0.0", 3478), ("224.0.0.1", 3478), ("255.255.255.255", 3478)],
        "empty.lab.test": [],
        "mixed.lab.test": [("0.0.0.0", 3478), STUN],
    }
    net = SimNetwork(core, {STUN: StunServer(STUN, nat_for(bases))}, dns=dns)
    net.start(bases)
    net.run()
    assert {sent.address for sent in net.sent} == {STUN}
    errors = {e.url: e.errorText for e in net.events if isinstance(e, IceCandidateErrorEvent)}
    assert errors == {
        "stun:blocked.lab.test": "'blocked.lab.test' resolves to no unicast address "
        "(0.0.0.0, 224.0.0.1, 255.255.255.255)",
        "stun:empty.lab.test": "'empty.lab.test' resolves to no unicast address (none)",
    }
    assert kinds(net.events).count("srflx") == 2 and kinds(net.events)[-1] == "null"


def test_only_names_are_looked_up_ip_literals_are_asked_at_once() -> None:
    core = make_core(("stun:stun.lab.test", "stun:198.51.100.10", "stun:[2001:db8::10]:3478"))
    core.start(0.0, make_bases())
    commands = []
    while (command := core.next_command()) is not None:
        commands.append(command)
    assert [type(c).__name__ for c in commands].count("Resolve") == 1
    resolve = next(c for c in commands if isinstance(c, Resolve))
    assert resolve.url.host == "stun.lab.test"
    asked = {c.address for c in commands if isinstance(c, SendDatagram)}
    assert asked == {("198.51.100.10", 3478), ("2001:db8::10", 3478)}


def test_waiting_for_names_the_servers_still_unheard_from() -> None:
    """What an interrupted caller asks: a live server answers in one RTT, a dead one and
    a name still being resolved are waited on until the deadline, in configuration order."""
    urls = ("stun:198.51.100.20", "stun:slow.lab.test", "stun:198.51.100.10")
    core = make_core(urls, timing=Timing(server_deadline=1.5))
    net = SimNetwork(core, {STUN: StunServer(STUN)}, dns={"slow.lab.test": [STUN]}, dns_delay=30.0)
    net.start(make_bases())
    assert core.waiting_for == list(urls)
    net.run(until=0.2)
    assert core.waiting_for == ["stun:198.51.100.20", "stun:slow.lab.test"]
    net.run(until=5.0)
    assert core.waiting_for == [] and kinds(net.events)[-1] == "null"


def test_unanswered_dns_is_cut_at_the_deadline() -> None:
    core = make_core(("stun:slow.lab.test",), timing=Timing(server_deadline=1.5))
    net = SimNetwork(core, dns={"slow.lab.test": [STUN]}, dns_delay=30.0)
    net.start(make_bases())
    net.run(until=5.0)
    errors = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert len(errors) == 1 and errors[0].errorCode == 701
    assert kinds(net.events)[-2:] == ["complete", "null"]
    assert net.events[-1].t == pytest.approx(1.5)


def test_responses_only_from_the_server_with_the_right_transaction() -> None:
    core = make_core(("stun:198.51.100.10",))
    bases = make_bases()
    net = SimNetwork(core, {})  # nobody answers; we forge
    net.start(bases)
    request = net.sent[0]
    server = StunServer(STUN, {(V6, 0): ("198.51.100.99", 1)})
    answer = server.answer(request.data, ("198.51.100.99", 1))
    assert answer is not None
    assert not core.receive_datagram(0.01, request.base_key, answer, ("198.51.100.66", 3478))
    assert not core.receive_datagram(0.01, request.base_key + 1, answer, STUN)
    forged = answer[:8] + bytes(12) + answer[20:]
    assert not core.receive_datagram(0.01, request.base_key, forged, STUN)
    assert not core.receive_datagram(0.01, request.base_key, b"\x00\x01garbage" * 4, STUN)
    assert core.receive_datagram(0.01, request.base_key, answer, STUN)
    assert not core.receive_datagram(0.02, request.base_key, answer, STUN)  # once only


def test_rto_adapts_to_the_measured_rtt() -> None:
    rtt = RttTable()
    core = make_core(("stun:198.51.100.10",), rtt=rtt)
    bases = make_bases()
    net = SimNetwork(core, {STUN: StunServer(STUN, nat_for(bases))}, delay=0.01)
    net.start(bases)
    net.run()
    assert rtt.srtt(STUN) == pytest.approx(0.02)
    assert rtt.rto(STUN, Timing()) == pytest.approx(0.05)  # floor of min_rto
    core.restart(net.now, new_credentials())
    net.servers[STUN].alive = False
    start, first = net.now, len(net.sent)
    net.start(make_bases(first_port=41000))
    net.run()
    key = net.sent[first].base_key
    times = [
        t - start
        for t, c in zip(net.sent_times[first:], net.sent[first:], strict=True)
        if c.base_key == key
    ]
    assert times[:3] == [pytest.approx(0.0), pytest.approx(0.05), pytest.approx(0.15)]


def test_restart_mid_gathering_closes_out_the_old_generation() -> None:
    core = make_core(("stun:198.51.100.10",))
    bases = make_bases()
    net = SimNetwork(core, {STUN: StunServer(STUN, nat_for(bases))})
    net.start(bases)
    net.now = 0.01
    core.restart(net.now, Credentials("ufrag002", "q" * 24))
    net.pump()
    assert kinds(net.events) == ["gathering", "host", "host", "host", "end:0", "complete", "null"]
    assert core.generation == 1
    new_bases = make_bases(first_port=41000)
    net.servers[STUN].nat.update(nat_for(new_bases))
    net.start(new_bases)
    net.run()
    new = [e for e in net.events if e.generation == 1]
    assert kinds(new) == [
        "gathering",
        "host",
        "host",
        "host",
        "srflx",
        "srflx",
        "end:0",
        "complete",
        "null",
    ]
    for c in candidates_of(new):
        assert c.generation == 1 and c.ufrag == "ufrag002"
    old = candidates_of([e for e in net.events if e.generation == 0])
    assert {c.foundation for c in old} <= {c.foundation for c in candidates_of(new)}


def test_pooled_generations_gather_ahead_and_are_released_by_restarts() -> None:
    core = make_core(("stun:198.51.100.10",))
    bases = make_bases()
    pooled = [make_bases(first_port=41000), make_bases(first_port=42000)]
    nat = {}
    for group in (bases, *pooled):
        nat.update(nat_for(group))
    net = SimNetwork(core, {STUN: StunServer(STUN, nat)})
    net.start(bases)
    assert net.prepare(pooled[0], Credentials("pooled01", "q" * 24)) == 1
    assert net.prepare(pooled[1], Credentials("pooled02", "r" * 24)) == 2
    net.run()
    assert {e.generation for e in net.events} == {0}  # the pool is gathered but held
    assert core.pooled == 2 and core.state is GatheringState.COMPLETE
    for number, ufrag in ((1, "pooled01"), (2, "pooled02")):
        net.now += 1.0
        core.restart(net.now)  # takes the pool: no credentials needed
        net.pump()
        assert core.generation == number and core.credentials.ufrag == ufrag
        assert [e for e in net.events if e.generation == number] == []  # until release
        assert core.candidates == [] and core.transport_state(0) is GatheringState.NEW
        core.release()
        net.pump()  # no network time passes: everything is already there
        released = [e for e in net.events if e.generation == number]
        assert kinds(released) == ["gathering"] + ["host"] * 3 + ["srflx"] * 2 + [
            "end:0",
            "complete",
            "null",
        ]
        assert all(c.ufrag == ufrag and c.generation == number for c in candidates_of(released))
        assert core.state is GatheringState.COMPLETE
    assert core.pooled == 0
    with pytest.raises(ValueError, match="credentials"):
        core.restart(net.now)


def test_restart_takes_a_pooled_generation_that_is_still_gathering() -> None:
    core = make_core(("stun:198.51.100.10",))
    bases, pooled = make_bases(), make_bases(first_port=41000)
    net = SimNetwork(core, {STUN: StunServer(STUN, nat_for(bases) | nat_for(pooled))})
    net.start(bases)
    net.prepare(pooled, Credentials("pooled01", "q" * 24))
    core.restart(net.now)  # before any answer: generation 1 goes on gathering as current
    core.release()
    net.pump()
    assert kinds([e for e in net.events if e.generation == 1]) == ["gathering"] + ["host"] * 3
    assert core.state is GatheringState.GATHERING
    net.run()
    assert kinds([e for e in net.events if e.generation == 1])[-5:] == [
        "srflx",
        "srflx",
        "end:0",
        "complete",
        "null",
    ]
    check_invariants(net.events, ["0"])


def test_a_held_start_shows_nothing_until_released() -> None:
    """A browser's pool gathers before setLocalDescription and shows nothing, not even
    its gathering state, until then."""
    core = make_core(("stun:198.51.100.10",))
    bases = make_bases()
    net = SimNetwork(core, {STUN: StunServer(STUN, nat_for(bases))})
    net.start(bases, hold=True)
    net.run()
    assert net.events == [] and core.started
    assert core.state is GatheringState.NEW and core.transport_state(0) is GatheringState.NEW
    assert core.candidates == [] and core.released == -1
    core.release()
    net.pump()
    assert kinds(net.events) == ["gathering"] + ["host"] * 3 + ["srflx"] * 2 + [
        "end:0",
        "complete",
        "null",
    ]
    assert core.state is GatheringState.COMPLETE and len(core.candidates) == 5
    assert core.released == 0
    count = len(net.events)
    core.release()  # nothing more held: a no-op
    net.pump()
    assert len(net.events) == count


def generation_bases(number: int) -> list[Base]:
    """Bases of a generation's own: keys and ports apart from every other's."""
    return [
        dataclasses.replace(base, key=base.key + 100 * number)
        for base in make_bases(first_port=40000 + 1000 * number)
    ]


def test_a_refused_held_start_leaves_nothing_held() -> None:
    core = make_core()
    stray = dataclasses.replace(make_bases()[0], transport=7)
    with pytest.raises(ValueError, match="unknown transport 7"):
        core.start(0.0, [stray], hold=True)
    net = SimNetwork(core, {})
    net.start(make_bases())
    assert kinds(net.events)[-2:] == ["complete", "null"] and core.released == 0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"component": 0}, "component 0, not 1-1"),
        ({"component": 300}, "component 300, not 1-1"),
        ({"port": 70000}, "port 70000, not 1-65535"),
        ({"transport": 5}, "unknown transport 5"),
    ],
)
def test_a_base_with_no_place_in_the_gathering_is_refused_before_anything_changes(
    change: dict[str, int], match: str
) -> None:
    """start() took a component 0 or 300 and wrote lines its own parser refuses; a base
    of an unknown transport joined `bases` before add_bases() raised IndexError, and a
    DNS answer raised it again later."""
    stray = dataclasses.replace(make_bases()[0], key=9, **change)
    with pytest.raises(ValueError, match=match):
        make_core().start(0.0, [stray])
    core = make_core(urls=("stun:stun.example.test",))
    core.continual = True
    core.start(0.0, make_bases())
    [resolve] = [c for c in iter(core.next_command, None) if isinstance(c, Resolve)]
    with pytest.raises(ValueError, match=match):
        core.add_bases(0.1, [stray])
    assert 9 not in [base.key for base in core.bases]
    core.resolved(0.2, resolve.request, [("198.51.100.10", 3478)])


_NOT_AN_INT = "numbers must be ints|int object expected"  # plain Python's, compiled's


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"port": 0}, ValueError, "port 0, not 1-65535"),
        ({"key": "9"}, TypeError, _NOT_AN_INT),
        ({"rank": 0.5}, TypeError, _NOT_AN_INT),
        ({"network_id": -1}, ValueError, "network id must be 0 or more"),
        ({"relay_key": "7"}, TypeError, "relay_key must be None or a key|int or None object"),
        ({"name": 5}, TypeError, "name must be None or an mDNS name|str or None object"),
        ({"key": 1}, ValueError, "two bases have key 1"),
        ({"address": "localhost"}, ValueError, "'localhost' is not an IP address"),
        ({"address": "fe80::1%c0", "family": socket.AF_INET6}, ValueError, "has a zone"),
        ({"family": socket.AF_INET}, ValueError, "is not an IPv4 address, as its family says"),
    ],
)
def test_a_base_no_socket_could_have_is_refused_and_gathering_goes_on(
    change: dict[str, object], error: type[Exception], match: str
) -> None:
    """Compiled, a base whose key was not an int failed start() halfway, the generation
    `gathering` for ever; one whose address was of the other family, or repeated
    another's key, gave 701s; a zone went into the candidate line, port 0 too."""
    core = make_core()
    bases = make_bases()
    stray = dataclasses.replace(bases[0], **{"key": 9, **change})
    with pytest.raises(error, match=match):
        core.start(0.0, [*bases, stray])
    net = SimNetwork(core, {})
    net.start(bases)
    assert kinds(net.events)[-2:] == ["complete", "null"]


def test_start_after_close_says_it_is_closed() -> None:
    """Not "generation 0 has already been gathered", as it said once started and closed."""
    for started in (False, True):
        core = make_core()
        if started:
            core.start(0.0, make_bases())
        core.close(0.1)
        with pytest.raises(RuntimeError, match="gathering is closed"):
            core.start(0.2, make_bases())


@pytest.mark.parametrize("now", [float("nan"), float("inf")])
def test_a_time_that_never_comes_is_refused(now: float) -> None:
    """start(nan) was taken: every event's `t` NaN (not JSON), and no deadline ever came."""
    core = make_core()
    with pytest.raises(ValueError, match="now must be a finite time"):
        core.start(now, make_bases())
    net = SimNetwork(core, {})
    net.start(make_bases())
    assert kinds(net.events)[-2:] == ["complete", "null"]


@pytest.mark.parametrize(
    "answer",
    [[("198.51.100.10", 3478, 0, 0)], [("198.51.100.10", 70000)], [("198.51.100.10",)]],
)
def test_a_resolution_that_is_no_address_is_refused_and_can_be_told_again(
    answer: list[tuple[object, ...]],
) -> None:
    """Plain Python took getaddrinfo's 4-tuples, dropped the request, then raised: the
    gathering waited for ever, no timer armed. Port 70000 went out in a SendDatagram."""
    core = make_core(urls=("stun:stun.example.test",))
    core.start(0.0, make_bases())
    [resolve] = [c for c in iter(core.next_command, None) if isinstance(c, Resolve)]
    with pytest.raises((ValueError, TypeError)):
        core.resolved(0.1, resolve.request, answer)  # type: ignore[arg-type]
    core.resolved(0.2, resolve.request, (a for a in [("198.51.100.10", 3478)]))  # read once
    sent = [c for c in iter(core.next_command, None) if isinstance(c, SendDatagram)]
    assert {c.address for c in sent} == {("198.51.100.10", 3478)}


def test_nothing_is_released_after_close() -> None:
    """close(): nothing more is emitted, held events included."""
    core = make_core()
    net = SimNetwork(core, {})
    net.start(make_bases(), hold=True)
    core.close(0.1)
    core.release()
    net.pump()
    assert net.events == [] and core.state is GatheringState.NEW


def test_removed_bases_are_announced_only_while_their_transport_gathers() -> None:
    """After a transport's "" (and its null), or after close, its stream has ended."""
    core = make_core(transports=2)
    bases = make_bases(transports=2)
    net = SimNetwork(core, {})
    net.start(bases)
    net.run()
    count = len(core.candidates)
    core.remove_bases(1.0, [bases[0].key])
    net.pump()
    assert not any(isinstance(e, CandidateRemovedEvent) for e in net.events)
    assert len(core.candidates) == count - 1  # gone all the same


def test_a_second_restart_drops_the_unseen_pooled_generation() -> None:
    """Two restartIce() before setLocalDescription make one new generation: the one
    taken by the first restart and never released is dropped, not streamed."""
    core = make_core(("stun:198.51.100.10",))
    groups = [generation_bases(n) for n in range(3)]
    nat = {}
    for group in groups:
        nat.update(nat_for(group))
    net = SimNetwork(core, {STUN: StunServer(STUN, nat)})
    net.start(groups[0])
    net.prepare(groups[1], Credentials("pooled01", "q" * 24))
    net.prepare(groups[2], Credentials("pooled02", "r" * 24))
    net.run()
    core.restart(net.now)
    core.restart(net.now)
    core.release()
    net.pump()
    assert core.generation == 2 and core.released == 2
    assert {e.generation for e in net.events} == {0, 2}
    assert kinds([e for e in net.events if e.generation == 2])[-3:] == ["end:0", "complete", "null"]
    check_invariants([e for e in net.events if e.generation == 2], ["0"])


def test_relay_only_gives_no_host_or_srflx() -> None:
    core = make_core(("stun:198.51.100.10",), relay_only=True)
    bases = make_bases()
    net = SimNetwork(core, {STUN: StunServer(STUN, nat_for(bases))})
    net.start(bases)
    net.run()
    assert kinds(net.events) == ["gathering", "end:0", "complete", "null"]


def test_relay_only_asks_no_stun_server_so_a_dead_one_holds_nothing_up() -> None:
    """Relay-only asked STUN servers anyway and dropped their srflx: a dead one held
    `complete` for 2 s and told 701s about a server whose answers could not be used."""
    urls = ("stun:198.51.100.20", "stun:stun.lab.test", "stuns:198.51.100.10")
    core = make_core(urls, relay_only=True)
    net = SimNetwork(core, {}, dns={"stun.lab.test": [STUN]})
    net.start(make_bases())
    net.run()
    assert kinds(net.events) == ["gathering", "end:0", "complete", "null"]
    assert net.events[-1].t == 0 and net.sent == []


@pytest.mark.parametrize("hidden_by", ["relay_only", "mdns", "hide_host", None])
def test_an_error_names_the_local_address_only_where_a_candidate_showed_it(
    hidden_by: str | None,
) -> None:
    """W3C RTCPeerConnectionIceErrorEvent.address: null where no local candidate exposes
    it. Relay-only, mDNS and RFC 8828 mode 3 hide the base's address, and its errors
    named it all the same."""
    dead = "turn:198.51.100.20?transport=udp" if hidden_by == "relay_only" else "stun:198.51.100.20"
    core = make_core((dead,), relay_only=hidden_by == "relay_only")
    bases = make_bases()
    if hidden_by == "mdns":
        bases = [dataclasses.replace(b, name=f"host{b.key}.local") for b in bases]
    core.hide_host = hidden_by == "hide_host"
    net = SimNetwork(core, {})
    net.start(bases)
    net.run()
    errors = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert len(errors) == 2 and {e.errorCode for e in errors} == {701}
    ipv4_bases = {(b.address, b.port) for b in bases if b.family == socket.AF_INET}
    expected = {(None, None)} if hidden_by else ipv4_bases
    assert {(e.address, e.port) for e in errors} == expected


def test_start_twice_is_refused() -> None:
    core = make_core()
    core.start(0.0, make_bases())
    with pytest.raises(RuntimeError, match="already been gathered"):
        core.start(0.0, make_bases())


# -- invariants under random networks --------------------------------------------------


def check_invariants(events: list[Event], transports: list[str]) -> None:
    order = {"new": 0, "gathering": 1, "complete": 2}
    by_generation: dict[int, list[Event]] = {}
    for e in events:
        by_generation.setdefault(e.generation, []).append(e)
    for generation, stream in by_generation.items():
        states = [e.state.value for e in stream if isinstance(e, IceGatheringStateChangeEvent)]
        assert states == ["gathering", "complete"], (generation, states)
        assert [order[s] for s in states] == sorted(order[s] for s in states)
        assert isinstance(stream[-1], IceCandidateEvent) and stream[-1].candidate is None
        assert sum(isinstance(e, IceCandidateEvent) and e.candidate is None for e in stream) == 1
        complete_at = next(
            i
            for i, e in enumerate(stream)
            if isinstance(e, IceGatheringStateChangeEvent) and e.state is GatheringState.COMPLETE
        )
        assert complete_at == len(stream) - 2  # complete, then null, then nothing
        for mid in transports:
            ends = [
                i
                for i, e in enumerate(stream)
                if isinstance(e, IceCandidateEvent)
                and e.candidate is not None
                and e.candidate.sdpMid == mid
                and e.candidate.candidate == ""
            ]
            assert len(ends) == 1, (generation, mid)
            later = [
                e
                for e in stream[ends[0] + 1 :]
                if isinstance(e, IceCandidateEvent)
                and e.candidate is not None
                and e.candidate.sdpMid == mid
            ]
            assert not later, "a candidate after its end-of-candidates"
        times = [e.t for e in stream]
        assert times == sorted(times)
    generations = [e.generation for e in events]
    assert generations == sorted(generations), "an old generation's event after a new one's"


junk = st.binary(max_size=120)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    duplicate=st.sampled_from([0.0, 0.3]),
    jitter=st.sampled_from([0.0, 0.2]),
    transports=st.integers(1, 3),
    components=st.integers(1, 2),
    servers=st.lists(
        st.sampled_from(
            ["stun:198.51.100.10", "stun:198.51.100.20", "stun:stun.lab.test", "stun:nx.lab.test"]
        ),
        max_size=3,
        unique=True,
    ),
    restart_at=st.one_of(st.none(), st.floats(0, 2.5)),
    pooled=st.booleans(),
    garbage=st.booleans(),
)
def test_event_invariants_under_random_networks(
    seed: int,
    loss: float,
    duplicate: float,
    jitter: float,
    transports: int,
    components: int,
    servers: list[str],
    restart_at: float | None,
    pooled: bool,
    garbage: bool,
) -> None:
    core = make_core(tuple(servers), transports=transports, components=components)
    bases = make_bases(transports, components)
    net = SimNetwork(
        core,
        {STUN: StunServer(STUN, nat_for(bases))},
        dns={"stun.lab.test": [STUN]},
        loss=loss,
        duplicate=duplicate,
        jitter=jitter,
        seed=seed,
        garbage=(lambda rng: rng.randbytes(rng.randrange(0, 100))) if garbage else None,
    )
    net.start(bases)
    new_bases = make_bases(transports, components, first_port=45000)
    net.servers[STUN].nat.update(nat_for(new_bases))
    if pooled:
        net.prepare(new_bases, new_credentials())
    if restart_at is not None:
        net.run(until=restart_at)
        core.restart(net.now, None if pooled else new_credentials())
        core.release()  # gather() asks for it
        net.pump()
        if not pooled:
            net.start(new_bases)
    net.run()
    assert core.state is GatheringState.COMPLETE
    check_invariants(net.events, [str(i) for i in range(transports)])
    assert net.events[-1].t <= Timing().server_deadline + 1e-9
    for c in candidates_of(net.events):
        assert Candidate.parse(c.to_sdp()) == c
    live = {"stun:198.51.100.10", "stun:stun.lab.test"} & set(servers)
    if loss == 0 and restart_at is None and live:  # a positive control: the core did gather
        related = {(c.related_address, c.related_port) for c in candidates_of(net.events)}
        assert {(b.address, b.port) for b in bases if ":" not in b.address} <= related


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    hold=st.booleans(),
    steps=st.lists(
        st.tuples(st.sampled_from(["run", "prepare", "restart", "release"]), st.floats(0, 0.3)),
        max_size=10,
    ),
)
def test_held_and_pooled_generations_in_any_order(
    seed: int, hold: bool, steps: list[tuple[str, float]]
) -> None:
    """Whatever the order of prepare, restart and release (gather()), the application
    sees exactly the generations released to it, each whole and in order, and nothing
    of one a second restart dropped unseen."""
    core = make_core(("stun:198.51.100.10",))
    net = SimNetwork(core, {STUN: StunServer(STUN, {})}, loss=0.2, seed=seed)
    made = 0

    def bases() -> list[Base]:
        nonlocal made
        group = generation_bases(made)
        made += 1
        net.servers[STUN].nat.update(nat_for(group))
        return group

    net.start(bases(), hold=hold)
    released = set() if hold else {0}
    for step, delay in steps:
        net.run(until=net.now + delay)
        if step == "prepare":
            net.prepare(bases(), new_credentials())
        elif step == "restart":
            pooled = core.pooled > 0
            core.restart(net.now, None if pooled else new_credentials())
            if not pooled:
                net.start(bases(), hold=hold)
                if not hold:
                    released.add(core.generation)
        else:
            core.release()
            released.add(core.generation)
        net.pump()
        assert core.released == max(released, default=-1)
    core.release()
    released.add(core.generation)
    net.pump()
    net.run()
    shown = {e.generation for e in net.events}
    assert shown <= released and core.generation in shown
    check_invariants(net.events, ["0"])
    assert core.state is GatheringState.COMPLETE


def test_icmp_unreachable_fails_only_that_server_from_that_base() -> None:
    core = make_core(("stun:198.51.100.10", "stun:198.51.100.10:3999"))
    bases = make_bases()
    net = SimNetwork(core, {STUN: StunServer(STUN, nat_for(bases))})
    net.start(bases)
    net.now = 0.02
    closed = ("198.51.100.10", 3999)
    for base in bases:
        core.unreachable(net.now, base.key, closed)
    core.unreachable(net.now, bases[0].key, ("198.51.100.77", 1))  # nothing waits on it
    net.pump()
    net.run()
    errors = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert len(errors) == 2 and all(e.t == pytest.approx(0.02) for e in errors)
    assert {e.url for e in errors} == {"stun:198.51.100.10:3999"}
    assert kinds(net.events).count("srflx") == 2
    assert net.events[-1].t == pytest.approx(0.05)


def test_continual_gathering_takes_new_bases_and_removes_lost_ones() -> None:
    core = Gathering(
        transports=[Transport("0", 0)],
        servers=[Server(parse_server_url("stun:198.51.100.10"), 0)],
        credentials=Credentials("ufrag001", "p" * 24),
        continual=True,
    )
    bases = make_bases()
    net = SimNetwork(core, {STUN: StunServer(STUN, nat_for(bases))})
    net.start(bases[:2])
    net.run()
    assert kinds(net.events) == ["gathering", "host", "host", "srflx"]  # open: no end yet
    assert core.state is GatheringState.GATHERING
    net._bases[bases[2].key] = bases[2]
    core.add_bases(net.now, [bases[2]])
    net.pump()
    net.run(until=net.now + 2.5)
    assert kinds(net.events)[4:] == ["host", "srflx"]
    late = net.events[-1]
    assert late.t > 0.05  # the new base got its own deadline, not the spent one
    core.remove_bases(net.now, [bases[1].key])
    net.pump()
    removed = [e for e in net.events if e.type == "candidateremoved"]
    assert {e.candidate.address for e in removed} == {V4A, PUBLIC}
    assert not any(c.address == V4A for c in core.candidates)
    core.restart(net.now, new_credentials())
    net.pump()
    assert kinds(net.events)[-3:] == ["end:0", "complete", "null"]
    with pytest.raises(RuntimeError):
        core.add_bases(net.now, [bases[2]])


def test_the_core_keeps_each_generation_s_ice_tcp_listeners_and_next_rank() -> None:
    """The driver kept its own copy of the listeners, per pooled generation too, because
    the core dropped them; and it computed the rank a new address takes."""
    core = Gathering(
        transports=[Transport("0", 0)],
        credentials=Credentials("ufrag001", "p" * 24),
        continual=True,
    )
    udp = Base(1, 0, 1, "203.0.113.2", 40000, socket.AF_INET, 0)
    tcp = Base(2, 0, 1, "203.0.113.2", 40001, socket.AF_INET, 0)
    core.start(0.0, [udp], [tcp])
    assert core.tcp_bases == [tcp] and core.next_rank == 1
    added = Base(3, 0, 1, "203.0.113.3", 40002, socket.AF_INET, 1)
    core.add_bases(0.1, [], [added])
    assert core.tcp_bases == [tcp, added] and core.next_rank == 2
    core.remove_bases(0.2, [tcp.key])
    assert core.tcp_bases == [added]
    assert {c.address for c in core.candidates if c.protocol == "tcp"} == {"203.0.113.3"}
    pooled = Base(4, 0, 1, "203.0.113.2", 40003, socket.AF_INET, 0)
    number = core.next_pooled
    assert core.prepare(0.3, new_credentials(), [], [pooled]) == number
    assert core.tcp_bases == [added]  # the pool's wait for a restart
    core.restart(0.4)
    assert core.generation == number and core.tcp_bases == [pooled]
    assert core.keeps(number) and core.keeps(0)  # 0: the last generation the application saw


def test_transaction_owed_a_resend_by_a_late_loop_gets_one() -> None:
    on_time = StunTransaction(b"req", now=0.0, rto=0.25, deadline=2.0)
    for now in (0.25, 0.75, 1.75):
        assert on_time.retransmit(now) == b"req"
    assert on_time.expired(2.0) and on_time.retransmit(2.0) is None  # 4 tries: done
    late = StunTransaction(b"req", now=0.0, rto=0.25, deadline=2.0)
    assert not late.expired(2.7)  # first timer at 2.7: the resend due at 0.25 never went
    assert late.retransmit(2.7) == b"req" and late.deadline == pytest.approx(2.95)
    assert late.timer == pytest.approx(2.95) and late.retransmit(2.8) is None
    assert late.expired(2.95) and late.retransmit(2.95) is None  # one resend, not more
    stream = StunTransaction(b"req", now=0.0, rto=0.25, deadline=2.0, reliable=True)
    assert stream.expired(2.7)  # nothing is resent over a stream
    short = StunTransaction(b"req", now=0.0, rto=0.5, deadline=0.3)
    assert short.expired(0.4)  # no resend was due before the deadline


def test_a_late_first_timer_resends_before_failing_the_server() -> None:
    """Thousands of gatherers starting in one loop iteration can hold every timer back
    past the deadline; a Binding request lost meanwhile is tried once more, not failed
    with one transmission."""
    core = make_core(("stun:198.51.100.10",))
    bases = make_bases()[:2]  # IPv6 and one IPv4 base
    core.start(0.0, bases)
    [first] = [c for c in iter(core.next_command, None) if isinstance(c, SendDatagram)]
    core.handle_timer(2.5)  # the first timer, 2.25 s late; the request was lost
    [again] = [c for c in iter(core.next_command, None) if isinstance(c, SendDatagram)]
    assert again.data == first.data and core.get_timer() == pytest.approx(2.75)
    assert not [e for e in iter(core.next_event, None) if isinstance(e, IceCandidateErrorEvent)]
    txid = again.data[8:20]
    mapped = stun.xor_address_value(PUBLIC, 50001, txid)
    answer = stun.encode(
        stun.Method.BINDING,
        stun.MessageClass.SUCCESS,
        txid,
        [(stun.Attr.XOR_MAPPED_ADDRESS, mapped)],
    )
    assert core.receive_datagram(2.55, first.base_key, answer, STUN)
    assert [c.type for c in candidates_of(list(iter(core.next_event, None)))] == ["srflx"]
    assert core.state is GatheringState.COMPLETE


def test_a_late_resend_unanswered_fails_one_rto_later() -> None:
    core = make_core(("stun:198.51.100.10",))
    core.start(0.0, make_bases()[:2])
    list(iter(core.next_command, None))
    core.handle_timer(2.5)
    core.handle_timer(2.75)
    errors = [e for e in iter(core.next_event, None) if isinstance(e, IceCandidateErrorEvent)]
    assert [(e.errorCode, e.t) for e in errors] == [(701, pytest.approx(2.75))]
    assert "after 2 tries" in errors[0].errorText


def test_a_single_try_is_counted_in_the_singular() -> None:
    """`--timeout 0.1` said "timed out after 1 tries"."""
    core = make_core(("stun:198.51.100.20",), timing=Timing(server_deadline=0.1))
    net = SimNetwork(core, {})
    net.start([b for b in make_bases() if b.family == socket.AF_INET][:1])
    net.run()
    [error] = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert error.errorText == "STUN binding request timed out after 1 try."


def test_a_server_no_base_can_reach_is_an_error_not_silence() -> None:
    """An IPv6-only server and IPv4-only bases: nothing could be sent, and the user is
    told why rather than left with no candidate and no error from it."""
    core = make_core(("stun:[2001:db8::10]", "stun:198.51.100.10"))
    bases = [b for b in make_bases() if b.family == socket.AF_INET]
    net = SimNetwork(core, {STUN: StunServer(STUN, nat_for(bases))})
    net.start(bases)
    net.run()
    [error] = [e for e in net.events if isinstance(e, IceCandidateErrorEvent)]
    assert error.url == "stun:[2001:db8::10]" and error.errorCode == 701
    assert error.address is None and error.t == 0.0
    assert "only IPv6 addresses" in error.errorText
    assert kinds(net.events).count("srflx") == 2  # the other server is unaffected


@pytest.mark.parametrize(
    ("error_code", "text"),
    [(None, "error response without a code"), (b"\x00\x00", "malformed ERROR-CODE")],
)
def test_an_error_response_without_a_readable_code_is_a_600(
    error_code: bytes | None, text: str
) -> None:
    """RFC 8489 asks an ERROR-CODE of every error response; one without (or with a
    malformed one) still ends its server's request, as a 600 naming what was wrong."""
    core = make_core(("stun:198.51.100.10",))
    [base] = [b for b in make_bases() if ":" not in b.address][:1]
    core.start(0.0, [base])
    [request] = [c for c in iter(core.next_command, None) if isinstance(c, SendDatagram)]
    txid = stun.parse(request.data).transaction_id
    attributes = [] if error_code is None else [(stun.Attr.ERROR_CODE, error_code)]
    reply = stun.encode(stun.Method.BINDING, stun.MessageClass.ERROR, txid, attributes)
    assert core.receive_datagram(0.05, base.key, reply, STUN)
    events = list(iter(core.next_event, None))
    [error] = [e for e in events if isinstance(e, IceCandidateErrorEvent)]
    assert (error.errorCode, error.errorText) == (600, text)
    assert kinds(events)[-2:] == ["complete", "null"]
