"""The driver's life cycle on its rough edges: no address, break, concurrent and failing
close, a failing pool, mDNS and TLS cut short, large datagrams.

The gatherer sees only 127.0.0.1 here (`local_addresses` is replaced), so nothing leaves
the machine and no root is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

import ice_engine.driver as driver
import ice_engine.mdns as mdns
from ice_engine import Gatherer, IceCandidate, IceServer
from ice_engine.events import Event
from ice_engine.gathering import Gathering
from ice_engine.interfaces import LocalAddress
from ice_engine.resolver import ResolvedAddress, Resolver
from ice_engine.transaction import Timing
from ice_engine.urls import ServerUrl

LOOPBACK = LocalAddress("lo", "127.0.0.1", socket.AF_INET, 1, 0)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(driver, "local_addresses", lambda **_: [LOOPBACK])
    yield


@pytest.fixture
def silent_stun() -> Iterator[IceServer]:
    """A STUN server on loopback that never answers: its gathering waits to the deadline."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        yield IceServer(f"stun:127.0.0.1:{silent.getsockname()[1]}")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def collect(gatherer: Gatherer) -> list[Event]:
    return [event async for event in gatherer.gather()]


class SlowResolver(Resolver):
    async def resolve(self, url: ServerUrl) -> list[ResolvedAddress]:
        await asyncio.sleep(0.05)
        return [ResolvedAddress("127.0.0.1", 9, socket.AF_INET)]


async def test_no_address_and_a_named_server_still_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No socket at all, and the name resolves later: gather() was never woken."""
    monkeypatch.setattr(driver, "local_addresses", lambda **_: [])  # offline
    gatherer = Gatherer([IceServer("stun:stun.example.org")], resolver=SlowResolver())
    async with gatherer:
        events = await asyncio.wait_for(collect(gatherer), 5)
    assert [e.to_json()["event"] for e in events][-1] == "icecandidate"
    assert events[-1].to_json()["candidate"] is None


async def test_gather_again_after_a_break_goes_on_where_it_stopped() -> None:
    async with Gatherer(mids=["0", "1"]) as gatherer:
        iterator = gatherer.gather()
        first = await anext(iterator)  # then dropped, as a break leaves it
        rest = await collect(gatherer)  # at once, before the loop closes the old iterator
        assert first.to_json()["state"] == "gathering"
        assert rest and first not in rest
        assert rest[-1].to_json()["candidate"] is None
        await gatherer.restart()  # the README's pattern: break, restart, gather
        kept = gatherer.gather()
        await anext(kept)  # then a break, the iterator kept
        await gatherer.restart()
        again = await collect(gatherer)
        # Generation 2 alone, to its null: what generation 1 queued after the break stays
        # with its iterator (as a browser fires no old candidate after a restart), which
        # reads it to its own null.
        assert {e.generation for e in again} == {2}
        assert again[-1].to_json()["candidate"] is None
        rest = [event async for event in kept]
        assert {e.generation for e in rest} == {1} and rest[-1].to_json()["candidate"] is None
        # Dropped instead (closed), its generation's events are skipped, not streamed.
        await gatherer.restart()
        async for _event in gatherer.gather():
            break
        await gatherer.restart()
        assert {e.generation for e in await collect(gatherer)} == {4}


async def test_gather_after_breaking_at_the_null_says_the_generation_was_read() -> None:
    """A consumer that stops at the null has read the generation: gather() again used to
    wait forever, since the generation was marked read only after the null's yield."""
    async with Gatherer() as gatherer:
        async for event in gatherer.gather():
            if event.to_json().get("candidate", "") is None:
                break
        with pytest.raises(RuntimeError, match="generation 0 is complete"):
            await asyncio.wait_for(anext(gatherer.gather()), 5)


async def test_a_restart_not_yet_gathered_offers_no_end_of_candidates() -> None:
    """A non-trickle peer waiting for `a=end-of-candidates` got it with no candidate at all:
    the aggregate state stays complete after a restart until the new generation starts."""
    async with Gatherer(mids=["0", "1"]) as gatherer:
        await collect(gatherer)
        assert gatherer.sdp_candidates()[-1] == "a=end-of-candidates"
        await gatherer.restart()
        assert gatherer.sdp_candidates() == [] and gatherer.sdp_candidates("1") == []
        await collect(gatherer)
        assert gatherer.sdp_candidates()[-1] == "a=end-of-candidates"


class LingeringResolver(Resolver):
    """Takes a while to stop when cancelled, so that close() waits for it."""

    async def resolve(self, url: ServerUrl) -> list[ResolvedAddress]:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.05)
        return []


async def test_a_second_close_waits_for_the_first() -> None:
    gatherer = Gatherer([IceServer("stun:stun.example.org")], resolver=LingeringResolver())
    consumer = asyncio.ensure_future(collect(gatherer))
    await asyncio.sleep(0.01)
    first = asyncio.ensure_future(gatherer.close())
    await asyncio.sleep(0)  # the first close() waits for the resolver task
    assert gatherer._table.sockets
    await gatherer.close()
    assert gatherer._table.sockets == {}
    await first
    await consumer


async def test_a_core_failing_in_close_still_releases_everything() -> None:
    before = open_fds()
    gatherer = Gatherer()
    await collect(gatherer)

    class Failing(Gathering):
        __slots__ = ()

        def close(self, now: float) -> None:
            raise RuntimeError("a core bug")

    gatherer._core.__class__ = Failing
    with pytest.raises(RuntimeError, match="a core bug"):
        await gatherer.close()
    assert open_fds() == before
    await gatherer.close()  # and a second close is no trouble


async def test_a_pool_failing_in_aenter_releases_what_it_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = open_fds()

    def no_more_fds(self: Gatherer) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(Gatherer, "_start_pooled", no_more_fds)
    gatherer = Gatherer(pool_size=3)  # held: its sockets are not left to the collector
    with pytest.raises(OSError, match="Too many"):
        async with gatherer:
            pytest.fail("entered")
    assert open_fds() == before and gatherer._table.sockets == {}


class FakeResponder:
    """The mDNS responder, slow to start as the real one is (it binds and joins groups)."""

    def __init__(self) -> None:
        self.users = 0

    async def acquire(self) -> FakeResponder:
        await asyncio.sleep(0.05)
        self.users += 1
        return self

    async def release(self) -> None:
        await asyncio.sleep(0)
        self.users -= 1

    def register(self, name: str, address: str) -> None:
        pass

    def unregister(self, name: str) -> None:
        pass


class NameBook(FakeResponder):
    """A responder that keeps the names it is told, as the real one answers them."""

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[str, str] = {}

    def register(self, name: str, address: str) -> None:
        self.names[name] = address

    def unregister(self, name: str) -> None:
        del self.names[name]


async def test_continual_gathering_stops_answering_for_an_address_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A removed address's mDNS name was answered until close(): a peer resolving it would
    send its checks to whoever holds the address next."""
    book = NameBook()
    monkeypatch.setattr(mdns, "shared_responder", lambda: book)
    second = LocalAddress("lo", "127.0.0.2", socket.AF_INET, 2, 0)
    addresses = [LOOPBACK, second]
    monkeypatch.setattr(driver, "local_addresses", lambda **_: list(addresses))
    async with Gatherer(mdns=True, continual=True) as gatherer:
        events = gatherer.gather()
        while len(gatherer.candidates) < 2:
            await anext(events)
        assert sorted(book.names.values()) == ["127.0.0.1", "127.0.0.2"]
        addresses.remove(second)
        gatherer._rescan()
        assert list(book.names.values()) == ["127.0.0.1"]
        [host] = gatherer.candidates
        assert host.address in book.names
        addresses.append(second)  # back: under a new name
        gatherer._rescan()
        assert sorted(book.names.values()) == ["127.0.0.1", "127.0.0.2"]
        assert {c.address for c in gatherer.candidates} == set(book.names)
        await events.aclose()
    assert book.names == {}


async def test_close_while_gather_waits_for_mdns_leaks_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    responder = FakeResponder()
    monkeypatch.setattr(mdns, "shared_responder", lambda: responder)
    before = open_fds()
    gatherer = Gatherer(mdns=True)
    consumer = asyncio.ensure_future(collect(gatherer))
    await asyncio.sleep(0.01)  # gather() is waiting for the responder
    await gatherer.close()
    assert await asyncio.wait_for(consumer, 5) == []
    assert open_fds() == before and responder.users == 0


async def test_restart_while_gather_waits_for_mdns_streams_the_new_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mdns, "shared_responder", FakeResponder)
    async with Gatherer(mdns=True) as gatherer:
        consumer = asyncio.ensure_future(collect(gatherer))
        await asyncio.sleep(0.01)
        await gatherer.restart()
        events = await asyncio.wait_for(consumer, 5)
    assert {e.generation for e in events} == {1}
    assert events[-1].to_json()["candidate"] is None


async def test_a_cancelled_close_still_releases_the_mdns_responder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    responder = FakeResponder()
    monkeypatch.setattr(mdns, "shared_responder", lambda: responder)
    gatherer = Gatherer(mdns=True)
    await collect(gatherer)
    assert responder.users == 1
    closing = asyncio.ensure_future(gatherer.close())
    await asyncio.sleep(0)
    closing.cancel()
    await asyncio.gather(closing, return_exceptions=True)
    await gatherer.close()
    await asyncio.sleep(0.01)
    assert responder.users == 0


async def test_prepare_beside_gather_holds_the_mdns_responder_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both wait for the responder at once; the second reference is given back."""
    responder = FakeResponder()
    monkeypatch.setattr(mdns, "shared_responder", lambda: responder)
    gatherer = Gatherer(mdns=True)
    warm = asyncio.ensure_future(gatherer.prepare())
    events = await collect(gatherer)
    await warm
    assert events[-1].to_json()["candidate"] is None
    assert responder.users == 1
    await gatherer.close()
    await asyncio.sleep(0.01)
    assert responder.users == 0


async def test_tls_cut_short_mid_handshake_closes_the_connection() -> None:
    """The server never finishes the handshake; close() must drop the connection."""
    loop = asyncio.get_running_loop()
    handler: list[object] = []
    loop.set_exception_handler(lambda _loop, context: handler.append(context))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        gatherer = Gatherer([IceServer(f"turns:127.0.0.1:{port}", "user", "pass")])
        consumer = asyncio.ensure_future(collect(gatherer))
        server, _ = await asyncio.wait_for(loop.sock_accept(listener), 5)
    with server:
        assert await asyncio.wait_for(loop.sock_recv(server, 65536), 5)  # the ClientHello
        await gatherer.close()
        await asyncio.wait_for(consumer, 5)
        assert await asyncio.wait_for(loop.sock_recv(server, 1), 5) == b""  # closed by us
    gc.collect()
    assert handler == []


async def test_a_large_datagram_reaches_on_datagram_whole() -> None:
    got: list[bytes] = []
    gatherer = Gatherer(on_datagram=lambda _base, _peer, data: got.append(data))
    async with gatherer:
        await collect(gatherer)
        [host] = gatherer.candidates
        assert host.address is not None and host.port is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            peer.sendto(bytes(3000), (host.address, host.port))
            for _ in range(50):
                if got:
                    break
                await asyncio.sleep(0.01)
    assert [len(data) for data in got] == [3000]


async def test_send_from_a_shared_port_without_on_datagram() -> None:
    async with Gatherer(shared_port=_free_port()) as gatherer:
        await collect(gatherer)
        [host] = gatherer.candidates
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            gatherer.send(host, peer.getsockname(), b"hello")
            peer.settimeout(2)
            assert peer.recv(100) == b"hello"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_network_ids_stay_with_their_interface_as_others_come_and_go() -> None:
    """They were positions in the adapter list: an interface appearing shifted the rest."""
    import ifaddr

    from ice_engine.interfaces import enumerate_addresses

    def adapter(name: str, index: int, address: str) -> ifaddr.Adapter:
        return ifaddr.Adapter(name, name, [ifaddr.IP(address, 24, name)], index=index)

    wlan = adapter("wlan0", 3, "203.0.113.7")
    before = {a.interface: a.network_id for a in enumerate_addresses([wlan])}
    after = {
        a.interface: a.network_id
        for a in enumerate_addresses([adapter("tun0", 9, "198.51.100.7"), wlan])
    }
    assert before["wlan0"] == after["wlan0"] and after["tun0"] not in (after["wlan0"], 0)


def test_each_network_of_an_interface_has_its_own_id() -> None:
    """libwebrtc's networks are (interface, prefix): IPv4 and IPv6 are two, and the
    temporary IPv6 address of a prefix shares that prefix's."""
    import ifaddr

    from ice_engine.interfaces import enumerate_addresses

    ips = [
        ifaddr.IP("198.51.100.7", 24, "eth7"),
        ifaddr.IP(("2001:db8:7::7", 0, 0), 64, "eth7"),
        ifaddr.IP(("2001:db8:7::9a3f", 0, 0), 64, "eth7"),
        ifaddr.IP("203.0.113.7", 24, "eth7"),
    ]
    found = enumerate_addresses([ifaddr.Adapter("eth7", "eth7", ips, index=77)])
    ids = [a.network_id for a in found]
    assert ids[1] == ids[2] and len({ids[0], ids[1], ids[3]}) == 3 and min(ids) >= 1
    again = enumerate_addresses([ifaddr.Adapter("eth7", "eth7", ips, index=77)])
    assert [a.network_id for a in again] == ids


def test_an_ipv6_default_route_without_a_gateway_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PPP and many VPNs route ::/0 to a device with no next hop: modes 2 and 3 lost IPv6.
    The kernel's own unreachable default (RTF_REJECT, on lo) still does not count."""
    import io

    from ice_engine import interfaces

    zero = "0" * 32
    tables = {
        "/proc/net/route": "Iface Destination Gateway\n",
        "/proc/net/ipv6_route": (
            f"{zero} 00 {zero} 00 {zero} ffffffff 00000001 00000000 00200200 lo\n"
            f"{zero} 00 {zero} 00 {zero} 00000400 00000001 00000000 00000001 ppp0\n"
        ),
    }
    monkeypatch.setattr(interfaces, "open", lambda path: io.StringIO(tables[path]), raising=False)
    assert interfaces.default_route_interfaces() == {socket.AF_INET6: "ppp0"}


async def test_a_ufrag_taken_on_a_shared_port_is_refused_and_the_holder_keeps_it() -> None:
    """Two gatherers given the same credentials on one shared port: the second silently
    took the ufrag over, and once it closed, its peers' checks reached nobody."""
    from ice_engine import Credentials

    from .test_sharedport import check_for

    credentials = Credentials("sameufrg", "p" * 24)
    port = _free_port()
    got: list[bytes] = []
    holder = Gatherer(
        shared_port=port, credentials=credentials, on_datagram=lambda _b, _p, d: got.append(d)
    )
    async with holder:
        await collect(holder)
        fds = open_fds()
        second = Gatherer(shared_port=port, credentials=credentials, on_datagram=print)
        with pytest.raises(
            ValueError, match=f"ufrag 'sameufrg' is taken on the shared port 127.0.0.1:{port}"
        ):
            await collect(second)
        await second.close()
        assert open_fds() == fds
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(check_for("sameufrg"), ("127.0.0.1", port))
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.01)
        assert len(got) == 1


async def test_send_from_a_copy_of_a_candidate_and_relay_calls_after_close() -> None:
    """A candidate kept as JSON (`from_json`) has no base: send() said "no socket here".
    After close(), send() said "closed" but relay_send() and the others "not a live
    allocation"."""
    gatherer = Gatherer(on_datagram=lambda *_: None)
    async with gatherer:
        await collect(gatherer)
        [host] = gatherer.candidates
        copy = IceCandidate.from_json(host.to_json())
        assert copy.base is None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            peer.settimeout(2)
            gatherer.send(copy, peer.getsockname(), b"from a copy")
            assert peer.recv(100) == b"from a copy"
    allocation: Any = object()
    peer_address = ("198.51.100.1", 9)
    for call in (
        lambda: gatherer.send(host, peer_address, b"x"),
        lambda: gatherer.relay_send(allocation, peer_address, b"x"),
        lambda: gatherer.relay_permit(allocation, [peer_address]),
        lambda: gatherer.relay_bind_channel(allocation, peer_address),
    ):
        with pytest.raises(RuntimeError, match="the gatherer is closed"):
            call()


async def test_nothing_is_yielded_once_closed_not_even_what_was_queued() -> None:
    """The queue was drained after close(): relay candidates whose allocations close() had
    released, then "", complete and null. A browser fires nothing after close()."""
    gatherer = Gatherer()
    stream = gatherer.gather()
    first = await anext(stream)
    assert first.type == "icegatheringstatechange"  # the host candidate and the rest wait
    await gatherer.close()
    assert [event async for event in stream] == []
    assert gatherer.candidates  # nothing gathered is lost: still there to read


async def test_a_gather_taken_over_by_another_raises_rather_than_ending_quietly() -> None:
    """Task A in its loop body, task B calls gather(): B takes the stream over (as after a
    break), and A's loop ended quietly with no null, as if gathering were over."""
    async with Gatherer() as gatherer:
        first = gatherer.gather()
        assert (await anext(first)).type == "icegatheringstatechange"
        taken = [event async for event in gatherer.gather()]
        assert taken[-1].to_json()["candidate"] is None
        with pytest.raises(RuntimeError, match="another gather"):
            await anext(first)


async def test_a_gather_that_fails_to_start_takes_nothing_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its call was counted before it could fail, so the first iterator raised "another
    gather() took this gatherer's events over" although nothing had."""
    async with Gatherer() as gatherer:
        first = gatherer.gather()
        assert (await anext(first)).type == "icegatheringstatechange"
        await gatherer.restart()

        def no_ports(self: Gatherer, hold: bool = False) -> None:
            raise OSError(errno.EMFILE, "Too many open files")

        monkeypatch.setattr(Gatherer, "_start", no_ports)
        with pytest.raises(OSError, match="Too many open files"):
            await anext(gatherer.gather())
        monkeypatch.undo()
        assert (await anext(first)).type == "icecandidate"  # generation 0's, left unread


async def test_gather_right_after_restart_streams_beside_the_old_generation_s_reader(
    silent_stun: IceServer,
) -> None:
    """A signalling server's pattern: one task forwards generation 0, which still waits
    on a server; on the peer's restart another awaits restart() and iterates gather().
    That raised "gather() is already being iterated" whenever generation 0 was still
    gathering. The first task now reads generation 0 to its null and ends, and the
    second streams generation 1."""
    async with Gatherer([silent_stun]) as gatherer:
        old: list[Event] = []

        async def forward() -> None:
            async for event in gatherer.gather():
                old.append(event)  # noqa: PERF401 (read as they come)

        forwarding = asyncio.create_task(forward())
        await _until(lambda: len(old) >= 2)  # "gathering" and the host candidate
        await gatherer.restart()
        async with asyncio.timeout(5):  # in this task: wait_for's would let `forward` run
            new = [event async for event in gatherer.gather()]
        await asyncio.wait_for(forwarding, 1)
    assert {event.generation for event in old} == {0}
    assert old[-1].to_json()["candidate"] is None
    assert {event.generation for event in new} == {1}
    assert new[0].type == "icegatheringstatechange" and new[-1].to_json()["candidate"] is None


@pytest.mark.parametrize("stop_at", ["null", "complete"])
async def test_a_reader_that_stops_after_a_restart_holds_the_new_one_up_not(
    stop_at: str, silent_stun: IceServer
) -> None:
    """The first reader, woken by the restart, stops at its generation's null or breaks
    at its "complete", keeping its iterator. The second waited for that iterator to
    end, for ever (found by a review); it now streams at once."""
    async with Gatherer([silent_stun]) as gatherer:
        old: list[Event] = []
        first = gatherer.gather()  # kept: never closed

        async def forward() -> None:
            async for event in first:
                old.append(event)
                data = event.to_json()
                if data.get("state") == stop_at or (
                    stop_at == "null" and not data.get("candidate", True)
                ):
                    break  # at the yield: the generator is left suspended, not ended
            await asyncio.sleep(10)  # holds on to `first`

        forwarding = asyncio.create_task(forward())
        await _until(lambda: len(old) >= 2)
        await gatherer.restart()
        async with asyncio.timeout(5):
            new = [event async for event in gatherer.gather()]
        forwarding.cancel()
    assert {event.generation for event in new} == {1}
    assert {event.generation for event in old} == {0}
    last = old[-1].to_json()  # where it stopped: at its null, or at its "complete"
    assert last.get("state") == stop_at or (stop_at == "null" and last["candidate"] is None)


async def test_a_restart_while_the_old_reader_is_busy_in_its_loop_body(
    silent_stun: IceServer,
) -> None:
    """The forwarder awaits a send in its loop body (a WebSocket's) when the restart and
    the new gather() come: the new one took the stream over, gave generation 0's
    leftovers first, and the forwarder raised "another gather() took this gatherer's
    events over" (found by a check of the docs). Each now reads its own generation."""
    async with Gatherer([silent_stun]) as gatherer:
        old: list[Event] = []
        sending = asyncio.Event()

        async def forward() -> None:
            async for event in gatherer.gather():
                old.append(event)
                sending.set()
                await asyncio.sleep(0.05)

        forwarding = asyncio.create_task(forward())
        await sending.wait()  # the forwarder is in its loop body
        await gatherer.restart()
        async with asyncio.timeout(5):
            new = [event async for event in gatherer.gather()]
        await asyncio.wait_for(forwarding, 5)  # it ends at its null, no RuntimeError
    assert {event.generation for event in new} == {1}
    assert {event.generation for event in old} == {0}
    assert old[-1].to_json()["candidate"] is None


async def test_a_second_gather_while_the_first_waits_raises_and_the_first_goes_on(
    silent_stun: IceServer,
) -> None:
    timing = Timing(server_deadline=0.3)
    async with Gatherer([silent_stun], timing=timing) as gatherer:
        first = gatherer.gather()
        while (await anext(first)).type != "icecandidate":
            pass
        waiting = asyncio.create_task(anext(first))
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="gather\\(\\) is already being iterated"):
            await anext(gatherer.gather())
        rest = [await waiting] + [event async for event in first]
    assert rest[-1].to_json()["candidate"] is None  # the first read its generation whole


async def test_sdp_candidates_of_one_transport_are_its_own() -> None:
    async with Gatherer(mids=["0", "1"]) as gatherer:
        await collect(gatherer)
        for mid in ("0", "1"):
            lines = gatherer.sdp_candidates(mid)
            assert lines[-1] == "a=end-of-candidates"
            ours = [c for c in gatherer.candidates if c.sdpMid == mid]
            ports = [int(line.split()[5]) for line in lines[:-1]]  # the lines lose ufrag
            assert ports == [c.port for c in ours] and ours


async def test_an_iterator_got_before_close_and_first_used_after_yields_nothing() -> None:
    """It raised "the gatherer is closed", where one already waiting ended quietly: a
    consumer task started just before a quick shutdown failed or not by timing."""
    gatherer = Gatherer()
    early = gatherer.gather()
    await gatherer.close()
    assert [event async for event in early] == []
    with pytest.raises(RuntimeError, match="closed"):
        gatherer.gather()  # asked after close(): a mistake, said at once


def _passive(gatherer: Gatherer) -> tuple[str, int]:
    [passive] = [c for c in gatherer.candidates if c.tcpType == "passive"]
    assert passive.address is not None and passive.port is not None
    return passive.address, passive.port


async def _until(condition: Any, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_a_peers_connection_to_a_passive_candidate_reaches_on_tcp_connection() -> None:
    loop = asyncio.get_running_loop()
    got: list[tuple[tuple[str, int], tuple[str, int], socket.socket]] = []
    gatherer = Gatherer(tcp_candidates=True, on_tcp_connection=lambda *c: got.append(c))
    async with gatherer:
        await collect(gatherer)
        passive = _passive(gatherer)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as peer:
            peer.setblocking(False)
            await loop.sock_connect(peer, passive)
            await _until(lambda: got)
            [(local, source, sock)] = got
            with sock:
                assert local == passive and source == peer.getsockname()
                assert not sock.getblocking()
                await loop.sock_sendall(peer, b"\x00\x04ping")  # RFC 4571 framing
                assert await asyncio.wait_for(loop.sock_recv(sock, 64), 5) == b"\x00\x04ping"
                await loop.sock_sendall(sock, b"\x00\x04pong")
                assert await asyncio.wait_for(loop.sock_recv(peer, 64), 5) == b"\x00\x04pong"
    late = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with late, pytest.raises(ConnectionRefusedError):  # closed with the gatherer
        late.connect(passive)


async def test_an_on_tcp_connection_that_raises_is_reported_and_accepting_goes_on() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    got: list[socket.socket] = []

    def handler(_local: tuple[str, int], _peer: tuple[str, int], sock: socket.socket) -> None:
        got.append(sock)
        if len(got) == 1:
            raise RuntimeError("the application's bug")

    gatherer = Gatherer(tcp_candidates=True, on_tcp_connection=handler)
    async with gatherer:
        await collect(gatherer)
        passive = _passive(gatherer)
        peers = [socket.create_connection(passive, timeout=2) for _ in range(2)]
        await _until(lambda: len(got) == 2)
    for sock in (*peers, *got):
        sock.close()
    [context] = reported
    assert "raised" in context["message"]
    assert str(context["exception"]) == "the application's bug"


async def test_accepting_pauses_for_a_second_when_out_of_fds_and_loses_nothing() -> None:
    import resource

    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    got: list[socket.socket] = []
    gatherer = Gatherer(tcp_candidates=True, on_tcp_connection=lambda *c: got.append(c[2]))
    async with gatherer:
        await collect(gatherer)
        passive = _passive(gatherer)
        peer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        peer.setblocking(False)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
        filler: list[int] = []
        try:
            with contextlib.suppress(OSError):
                while True:  # the holes below the limit: then no fd is left
                    filler.append(os.open(os.devnull, os.O_RDONLY))
            with contextlib.suppress(BlockingIOError):
                peer.connect(passive)  # the handshake needs no fd of ours
            await _until(lambda: reported)
            message = reported[0]["message"]
            assert "(Too many open files); trying again in 1 s" in message
        finally:
            for fd in filler:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert not got
        await _until(lambda: got, timeout_s=3)  # the same connection, a second later
        assert len(reported) == 1  # no busy loop of failing accepts meanwhile
    peer.close()
    got[0].close()


async def test_connect_from_an_active_candidate_reaches_a_passive_one() -> None:
    """A connectivity layer's TCP check: from our active candidate's address to a peer's
    passive one (here our own, whose handler gets the connection)."""
    loop = asyncio.get_running_loop()
    got: list[tuple[tuple[str, int], tuple[str, int], socket.socket]] = []
    gatherer = Gatherer(tcp_candidates=True, on_tcp_connection=lambda *c: got.append(c))
    async with gatherer:
        await collect(gatherer)
        [active] = [c for c in gatherer.candidates if c.tcpType == "active"]
        passive = _passive(gatherer)
        sock = await gatherer.connect(active, passive)
        with sock:
            assert not sock.getblocking()
            assert sock.getsockname()[0] == active.address and sock.getsockname()[1] != 9
            await _until(lambda: got)
            [(local, peer, accepted)] = got
            with accepted:
                assert local == passive and peer == sock.getsockname()
                await loop.sock_sendall(sock, b"\x00\x04ping")
                assert await asyncio.wait_for(loop.sock_recv(accepted, 64), 5) == b"\x00\x04ping"


async def test_connect_says_what_is_wrong() -> None:
    gatherer = Gatherer(tcp_candidates=True)
    async with gatherer:
        await collect(gatherer)
        by_type = {c.tcpType or "udp": c for c in gatherer.candidates}
        closed = _free_port()
        for local in (by_type["passive"], by_type["udp"]):
            with pytest.raises(ValueError, match="not an ICE-TCP active candidate"):
                await gatherer.connect(local, ("127.0.0.1", closed))
        copy = IceCandidate.from_json(by_type["active"].to_json())
        stranger = IceCandidate.from_json(
            {**copy.to_json(), "candidate": copy.candidate.replace("127.0.0.1", "127.0.0.2")}
        )
        with pytest.raises(ValueError, match="no active candidate here"):
            await gatherer.connect(stranger, ("127.0.0.1", closed))
        with pytest.raises(ValueError, match="differ in address family"):
            await gatherer.connect(copy, ("2001:db8::1", closed))
        with pytest.raises(ValueError, match="peer must be"):
            await gatherer.connect(copy, ("localhost", closed))
        before = open_fds()
        with pytest.raises(ConnectionRefusedError):  # a copy will do, as for send()
            await gatherer.connect(copy, ("127.0.0.1", closed))
        assert open_fds() == before  # the failed socket is closed
    with pytest.raises(RuntimeError, match="closed"):
        await gatherer.connect(copy, ("127.0.0.1", closed))


async def test_connect_takes_only_this_gatherers_active_candidates() -> None:
    """connect() matched an active candidate by its address, component and mid, so
    another gatherer's on the same address passed for ours (a review); it now finds the
    listener by mid and line, as send() finds a copy's socket."""
    async with Gatherer(tcp_candidates=True) as ours, Gatherer(tcp_candidates=True) as other:
        await collect(ours)
        await collect(other)
        [theirs] = [c for c in other.candidates if c.tcpType == "active"]
        with pytest.raises(ValueError, match="no active candidate here"):
            await ours.connect(theirs, _passive(other))
