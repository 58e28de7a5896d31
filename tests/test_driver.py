"""The asyncio driver with real sockets on this machine's interfaces (host candidates)."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import socket

import pytest

from ice_engine import (
    Candidate,
    Credentials,
    Gatherer,
    GatheringState,
    IceCandidate,
    IceCandidateEvent,
    IceGatheringStateChangeEvent,
    IceServer,
    InvalidServerUrl,
)
from ice_engine.events import Event
from ice_engine.interfaces import local_addresses


def open_fds() -> int:
    """Open fds, once what earlier tests left to the collector has been closed (one of
    their sockets collected mid-test would change the count)."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def needs_an_address() -> None:
    if not local_addresses():
        pytest.skip("this machine has no non-loopback address to gather from")


async def collect(gatherer: Gatherer) -> list[Event]:
    return [event async for event in gatherer.gather()]


async def test_host_gathering_streams_and_ends_with_null() -> None:
    needs_an_address()
    async with Gatherer(mids=["0", "1"], components=2) as gatherer:
        assert gatherer.gathering_state is GatheringState.NEW
        events = await collect(gatherer)
        assert gatherer.gathering_state is GatheringState.COMPLETE
        assert gatherer.transport_state("1") is GatheringState.COMPLETE
    assert isinstance(events[0], IceGatheringStateChangeEvent)
    assert events[0].state is GatheringState.GATHERING
    assert isinstance(events[-2], IceGatheringStateChangeEvent)
    assert events[-2].state is GatheringState.COMPLETE
    assert isinstance(events[-1], IceCandidateEvent) and events[-1].candidate is None
    hosts = [
        e.candidate
        for e in events
        if isinstance(e, IceCandidateEvent) and e.candidate and e.candidate.candidate
    ]
    assert len(hosts) == 2 * 2 * len(local_addresses())
    for candidate in hosts:
        assert candidate.type == "host"
        assert candidate.usernameFragment == gatherer.credentials.ufrag
        assert f"ufrag {candidate.usernameFragment}" in candidate.candidate
    ports = [c.port for c in hosts]
    assert len(set(ports)) == len(ports), "one socket per (transport, component, address)"


async def test_sockets_stay_open_until_close_and_none_leak() -> None:
    needs_an_address()
    before = open_fds()
    gatherer = Gatherer(components=2)
    events = await collect(gatherer)
    hosts = [
        e.candidate
        for e in events
        if isinstance(e, IceCandidateEvent) and e.candidate and e.candidate.candidate
    ]
    assert open_fds() == before + len(hosts)
    for candidate in hosts:  # the base really is bound: binding it again must fail
        assert candidate.address is not None and candidate.port is not None
        family = socket.AF_INET6 if ":" in candidate.address else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe, pytest.raises(OSError):
            probe.bind((candidate.address, candidate.port))
    await gatherer.close()
    await gatherer.close()
    assert open_fds() == before


async def test_restart_gives_a_new_generation_with_new_credentials() -> None:
    needs_an_address()
    async with Gatherer() as gatherer:
        first = await collect(gatherer)
        old = gatherer.credentials
        with pytest.raises(RuntimeError, match="restart"):
            await collect(gatherer)
        await gatherer.restart()
        assert gatherer.credentials.ufrag != old.ufrag
        assert gatherer.credentials.pwd != old.pwd
        for credentials in (old, gatherer.credentials):  # 48 and 144 bits of ice-chars
            assert re.fullmatch(r"[A-Za-z0-9+/]{8}", credentials.ufrag)
            assert re.fullmatch(r"[A-Za-z0-9+/]{24}", credentials.pwd)
        second = await collect(gatherer)
    assert {e.generation for e in first} == {0}
    assert {e.generation for e in second} == {1}
    new_hosts = [
        e.candidate
        for e in second
        if isinstance(e, IceCandidateEvent) and e.candidate and e.candidate.parsed
    ]
    assert all(c.parsed is not None and c.parsed.generation == 1 for c in new_hosts)
    assert all(c.usernameFragment == gatherer.credentials.ufrag for c in new_hosts)
    old_hosts = [
        e.candidate
        for e in first
        if isinstance(e, IceCandidateEvent) and e.candidate and e.candidate.parsed
    ]
    assert {c.foundation for c in old_hosts} == {c.foundation for c in new_hosts}
    assert {c.port for c in old_hosts}.isdisjoint({c.port for c in new_hosts})


async def test_a_pool_keeps_generations_ready_for_restarts_and_refills() -> None:
    needs_an_address()
    before = open_fds()
    per_generation = len(local_addresses())
    async with Gatherer(pool_size=3) as gatherer:
        assert open_fds() == before + 3 * per_generation  # three generations bound already
        await collect(gatherer)
        for generation in (1, 2, 3):
            await gatherer.restart()
            # current, previous (ICE may still use it) and the two waiting in the pool
            assert open_fds() == before + 4 * per_generation
            events = await collect(gatherer)
            assert {e.generation for e in events} == {generation}
            assert gatherer.gathering_state is GatheringState.COMPLETE
            ufrags = {
                e.candidate.usernameFragment
                for e in events
                if isinstance(e, IceCandidateEvent) and e.candidate
            }
            assert ufrags == {gatherer.credentials.ufrag}
    assert open_fds() == before


async def test_a_pool_shows_nothing_until_gather_asks() -> None:
    """As a browser's pool before setLocalDescription: gathered, but the state stays
    `new` and no candidate shows until gather() releases them all at once."""
    needs_an_address()
    async with Gatherer(pool_size=1) as gatherer:
        await asyncio.sleep(0.05)  # host candidates are long gathered by now
        assert gatherer.gathering_state is GatheringState.NEW
        assert gatherer.transport_state("0") is GatheringState.NEW
        assert gatherer.candidates == [] and gatherer.sdp_candidates() == []
        events = await collect(gatherer)
        assert gatherer.gathering_state is GatheringState.COMPLETE
        assert len(gatherer.sdp_candidates()) == len(local_addresses()) + 1
    states = [e.state for e in events if isinstance(e, IceGatheringStateChangeEvent)]
    assert states == [GatheringState.GATHERING, GatheringState.COMPLETE]


async def test_two_restarts_before_gather_stream_one_generation() -> None:
    """The pooled generation the first restart took and nobody saw is dropped, with its
    sockets; the last one streamed keeps its sockets for ICE until the next restart."""
    needs_an_address()
    before = open_fds()
    per_generation = len(local_addresses())
    async with Gatherer(pool_size=2) as gatherer:
        await collect(gatherer)
        await gatherer.restart()
        await gatherer.restart()
        # generation 0 (streamed), 2 (current) and 3 (pooled): 1 was never seen
        assert open_fds() == before + 3 * per_generation
        assert gatherer.gathering_state is GatheringState.COMPLETE  # as generation 0 left it
        assert gatherer.sdp_candidates() == []  # generation 2's are not out yet
        events = await collect(gatherer)
        assert {e.generation for e in events} == {2}
        await gatherer.restart()
        assert open_fds() == before + 3 * per_generation  # 0 goes, 2 stays, 4 pooled
    assert open_fds() == before


async def test_send_refuses_candidates_it_has_no_socket_for() -> None:
    line = "candidate:1 1 udp 2122260223 198.51.100.7 40000 typ host"
    foreign = IceCandidate(line, "0", 0, "abcd", Candidate.parse(line), ("198.51.100.7", 40000))
    relay_line = "candidate:2 1 udp 41885439 198.51.100.10 50000 typ relay raddr 0.0.0.0 rport 0"
    relay = IceCandidate(relay_line, "0", 0, "abcd", Candidate.parse(relay_line))
    async with Gatherer() as gatherer:
        with pytest.raises(ValueError, match="no socket here"):
            gatherer.send(foreign, ("198.51.100.8", 9), b"x")
        for peer in (("peer.example", 9), ("198.51.100.8",), ("198.51.100.8", 0), None):
            with pytest.raises(ValueError, match="peer"):
                gatherer.send(foreign, peer, b"x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="bytes"):
            gatherer.send(foreign, ("198.51.100.8", 9), "text")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="no live allocation"):
            gatherer.send(relay, ("198.51.100.8", 9), b"x")
        with pytest.raises(ValueError, match="list of"):  # one pair, not a list of them
            gatherer.relay_permit(object(), ("198.51.100.8", 9))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="peers must be a list"):  # was "'NoneType' ..."
            gatherer.relay_permit(object(), None)  # type: ignore[arg-type]
        for bad in (("peer.example", 9), ("198.51.100.8",)):
            with pytest.raises(ValueError, match="peer"):
                gatherer.relay_permit(object(), [bad])  # type: ignore[arg-type, list-item]
            with pytest.raises(ValueError, match="peer"):
                gatherer.relay_bind_channel(object(), bad)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="peer"):
                gatherer.relay_send(object(), bad, b"x")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="closed"):
        gatherer.send(foreign, ("198.51.100.8", 9), b"x")


async def test_send_refuses_what_no_datagram_could_carry() -> None:
    """Both are refused before anything leaves: no traffic to the documentation peers."""
    needs_an_address()
    async with Gatherer() as gatherer:
        await collect(gatherer)
        host = gatherer.candidates[0]
        assert host.address is not None
        peer = ("2001:db8::8", 9) if "." in host.address else ("198.51.100.8", 9)
        with pytest.raises(ValueError, match="differ in address family"):
            gatherer.send(host, peer, b"x")
        for ipv6 in (c for c in gatherer.candidates if c.address and ":" in c.address):
            # an IPv4-mapped peer is IPv4: these sockets are IPv6 only (it was ENETUNREACH)
            with pytest.raises(ValueError, match=r"peer 198\.51\.100\.8 and base"):
                gatherer.send(ipv6, ("::ffff:198.51.100.8", 9), b"x")
        same_family = ("198.51.100.8", 9) if "." in host.address else ("2001:db8::8", 9)
        with pytest.raises(ValueError, match="70000 bytes"):
            gatherer.send(host, same_family, bytes(70_000))


async def test_breaking_out_early_then_closing_leaks_nothing() -> None:
    needs_an_address()
    before = open_fds()
    tasks_before = len(asyncio.all_tasks())
    gatherer = Gatherer(mids=["a", "b"])
    async for _event in gatherer.gather():
        break
    await gatherer.close()
    assert open_fds() == before
    assert len(asyncio.all_tasks()) == tasks_before


async def test_unreachable_dns_server_does_not_hold_gathering(tmp_path: object) -> None:
    """A name that cannot resolve gives an error event, and gathering still completes."""
    needs_an_address()
    import dns.asyncresolver

    from ice_engine.resolver import Resolver
    from ice_engine.transaction import Timing

    dead = dns.asyncresolver.Resolver(configure=False)
    dead.nameservers = ["127.0.0.1"]
    dead.port = 9  # discard: nothing answers
    gatherer = Gatherer(
        [IceServer("stun:stun.lab.test")],
        timing=Timing(server_deadline=0.5),
        resolver=Resolver(timeout=5.0, resolver=dead),
    )
    async with gatherer:
        events = await asyncio.wait_for(collect(gatherer), 5)
    errors = [e for e in events if e.type == "icecandidateerror"]
    assert len(errors) == 1
    assert errors[0].to_json()["errorCode"] == 701
    assert 0.49 <= events[-1].t < 3  # at the server deadline, not the resolver's 5 s


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ice_servers": [IceServer("stun:")]}, "stun:"),
        ({"ice_servers": [IceServer("turn:turn.example.org")]}, "username"),
        ({"mids": []}, "mids"),
        ({"mids": ["0", "0"]}, "distinct"),
        ({"components": 0}, "components"),
        ({"ice_transport_policy": "none"}, "ice_transport_policy"),
        ({"ip_handling": 5}, "RFC 8828"),
    ],
)
def test_bad_configuration_is_refused_up_front(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Gatherer(**kwargs)  # type: ignore[arg-type]
    if "ice_servers" in kwargs:
        assert isinstance(info.value, InvalidServerUrl)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timing": "fast"}, "timing must be of type Timing, not str"),
        ({"credentials": "abcd"}, "credentials must be of type Credentials"),
        ({"ssl_context": "tls"}, "ssl_context must be of type SSLContext"),
        ({"resolver": object()}, "resolver must be an ice_engine.resolver.Resolver"),
        ({"address_filter": 3}, "address_filter must be callable"),
        ({"on_relayed": "print"}, "on_relayed must be callable"),
        ({"on_datagram": 1}, "on_datagram must be callable"),
        ({"tcp_candidates": True, "on_tcp_connection": 1}, "on_tcp_connection must be callable"),
    ],
)
def test_options_of_the_wrong_type_are_refused_up_front(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Gatherer(**kwargs)  # type: ignore[arg-type]


def test_on_tcp_connection_without_tcp_candidates_is_refused() -> None:
    with pytest.raises(ValueError, match="on_tcp_connection needs tcp_candidates=True"):
        Gatherer(on_tcp_connection=lambda *_: None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3,), "urls must be a URL string or a list of them, not 3"),
        (([b"stun:x"],), "urls must be"),
        (("turn:x", 3, "p"), "username must be a string, not int"),
        (("turn:x", "u", b"p"), "credential must be a string, not bytes"),
    ],
)
def test_ice_server_fields_of_the_wrong_type_are_refused(
    args: tuple[object, ...], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        IceServer(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ufrag", "pwd", "error"),
    [("ab", "p" * 22, ValueError), ("abcd", "short", ValueError), (1234, "p" * 22, TypeError)],
)
def test_bad_credentials_are_refused(ufrag: object, pwd: str, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"ufrag|pwd"):
        Credentials(ufrag, pwd)  # type: ignore[arg-type]


async def test_a_resolver_that_raises_fails_its_server_not_the_gathering() -> None:
    from ice_engine.resolver import ResolvedAddress, Resolver
    from ice_engine.urls import ServerUrl

    class Broken(Resolver):
        async def resolve(self, url: ServerUrl) -> list[ResolvedAddress]:
            raise RuntimeError("boom")

    gatherer = Gatherer([IceServer("stun:stun.example.org")], resolver=Broken())
    async with gatherer:
        events = await asyncio.wait_for(collect(gatherer), 5)
    [error] = [e for e in events if e.type == "icecandidateerror"]
    assert "stun.example.org" in error.errorText and "boom" in error.errorText
    assert error.t < 1.0  # at once, not at the server deadline
    assert events[-1].to_json()["candidate"] is None


async def test_a_resolver_s_unusable_answer_fails_its_server_at_once() -> None:
    """Port 0 from a Resolver subclass: resolved() refused it, the task's ValueError was
    never retrieved, and the server failed 2 s later as a timed-out lookup."""
    from ice_engine.resolver import ResolvedAddress, Resolver
    from ice_engine.urls import ServerUrl

    class Unusable(Resolver):
        def __init__(self, port: object) -> None:
            super().__init__()
            self.port = port

        async def resolve(self, url: ServerUrl) -> list[ResolvedAddress]:
            return [ResolvedAddress("127.0.0.1", self.port, socket.AF_INET)]  # type: ignore[arg-type]

    for port in (0, "3478"):  # the compiled core refuses the string's type, not its value
        gatherer = Gatherer([IceServer("stun:stun.example.org")], resolver=Unusable(port))
        async with gatherer:
            events = await asyncio.wait_for(collect(gatherer), 5)
        [error] = [e for e in events if e.type == "icecandidateerror"]
        assert "gave no address to use" in error.errorText and error.t < 1.0, error.errorText
        assert events[-1].to_json()["candidate"] is None


def test_credentials_stay_out_of_repr() -> None:
    server = IceServer("turn:turn.example.org", "alice", "s3cret-wonderland")
    assert "s3cret" not in repr(server)
    gatherer = Gatherer([server])
    assert "s3cret" not in repr(gatherer.credentials)
    assert gatherer.credentials.pwd not in repr(gatherer.credentials)


async def test_port_range_is_honoured_and_exhaustion_is_an_error() -> None:
    needs_an_address()
    # Below the kernel's ephemeral ports (32768-60999): no connection of the machine's
    # is given one of these meanwhile.
    async with Gatherer(components=2, port_range=(23000, 23009)) as gatherer:
        events = await collect(gatherer)
        ports = [c.port for c in gatherer.candidates]
        assert ports and all(port is not None and 23000 <= port <= 23009 for port in ports)
        bound = [(c.address, c.port) for c in gatherer.candidates]
        assert len(set(bound)) == len(bound)
    assert events[-1].to_json()["candidate"] is None
    # A one-port range serves one base per address (IPv4 and IPv6 sockets may share a
    # port number): a second component has none, which is an error, not a missing base.
    async with Gatherer(components=2, port_range=(23010, 23010)) as gatherer:
        with pytest.raises(OSError, match=r"port_range 23010-23010: no free port"):
            await collect(gatherer)
        assert not gatherer.candidates
    async with Gatherer(port_range=(23010, 23010)) as gatherer:
        await collect(gatherer)
        assert {c.port for c in gatherer.candidates} == {23010}
        assert len(gatherer.candidates) == len(local_addresses())
    # Each gathering starts at a random port of the range, not always at its first.
    first_ports = set()
    for _ in range(8):
        async with Gatherer(port_range=(23000, 23009)) as gatherer:
            await collect(gatherer)
            first_ports.add(gatherer.candidates[0].port)
    assert len(first_ports) > 1  # all 8 alike: a chance of 1 in 10**7


@pytest.mark.parametrize("port_range", [(5000, 4000), (0, 10), (1.5, 2.5), "1-2", (1, 2, 3)])
def test_bad_port_range_is_refused(port_range: object) -> None:
    with pytest.raises(ValueError, match="port_range"):
        Gatherer(port_range=port_range)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shared_port": 0}, "1-65535"),
        ({"shared_port": "3478"}, "1-65535"),
        ({"shared_port": 40000, "mids": ["0", "1"]}, "one transport"),
        ({"shared_port": 40000, "components": 2}, "one component"),
        ({"pool_size": 256}, "pool_size"),
        ({"pool_size": -1}, "pool_size"),
    ],
)
def test_shared_port_and_pool_limits_are_explained(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Gatherer(**kwargs)  # type: ignore[arg-type]


async def test_the_state_changes_as_its_event_is_yielded_not_before() -> None:
    """Host-only, everything is queued at once: `gathering_state` said `complete` while
    the loop was still at the first candidate (found in a lab trial). A browser's
    attribute changes as its event fires."""
    needs_an_address()
    async with Gatherer(mids=["0", "1"]) as gatherer:
        seen = [(event, gatherer.gathering_state) async for event in gatherer.gather()]
    for event, state in seen:
        if isinstance(event, IceGatheringStateChangeEvent):
            assert state is event.state
        elif isinstance(event, IceCandidateEvent) and event.candidate is not None:
            assert state is GatheringState.GATHERING, event
    assert seen[-1][1] is GatheringState.COMPLETE  # at the null
