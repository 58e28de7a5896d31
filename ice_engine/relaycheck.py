"""Relaying checked end to end: a datagram each way through every relay candidate.

A relay candidate proves only that a TURN server granted an allocation. Calls through it
still fail when the relay address cannot be reached (a firewall closed to the relay
ports, a wrong `external-ip` behind a NAT) or the server relays nothing. So, as a peer
and we would: one of our host sockets sends to the relay address, which the server hands
us through the allocation (a Data indication), and the allocation sends back to where
that datagram came from (the host socket's public address), which must arrive there.

Built on the gatherer's data path (`Gatherer.send`, `relay_permit`, `relay_send` and
their callbacks), as a connectivity layer would use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import ssl
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import stun
from .config import IceServer
from .driver import Gatherer
from .events import IceCandidate, IceCandidateErrorEvent, IceCandidateEvent
from .transaction import Timing, positive_seconds
from .turn import Allocation, RequestFailed
from .urls import hostport, not_unicast, parse_server_url

__all__ = ["RelayCheck", "RelayCheckReport", "check_relays", "relay_checks"]

#: How often a probe is sent again while nothing has come through: the first ones may
#: go before the server has installed the permission, or be lost.
_PROBE_INTERVAL_S = 0.25
_STUN_PORT = 3478
_STUN_WAIT_S = 0.5  # for a STUN answer that tells our public address (`_seen_from`)
_PROBE_PREFIX = b"ice-engine relay check "  # never a STUN message: its first byte is 0x69


@dataclass(frozen=True, slots=True)
class RelayCheck:
    """One relay candidate, checked: how long a datagram took each way, or what failed.

    `peer_to_relay_ms`: from a host socket of ours, as a peer, to the relay address, handed to
    us by the server. `relay_to_peer_ms`: sent through the allocation back to that socket's
    public address. Each is the time of the probe that came through (a second if the
    first went before the server's permission was in place)."""

    relay: IceCandidate
    address: tuple[str, int]  # the relay's
    url: str | None
    source: tuple[str, int] | None  # the host socket that played the peer
    peer_to_relay_ms: float | None = None
    relay_to_peer_ms: float | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        return {
            "relay": hostport(*self.address),
            "candidate": self.relay.candidate,
            "url": self.url,
            "source": None if self.source is None else hostport(*self.source),
            "ok": self.ok,
            "peerToRelayMs": self.peer_to_relay_ms,
            "relayToPeerMs": self.relay_to_peer_ms,
            "problem": self.problem,
        }


@dataclass(frozen=True, slots=True)
class RelayCheckReport:
    """Every relay candidate gathered, checked; and the servers' errors while gathering
    (a wrong password, an unreachable server), which explain a relay that is missing."""

    checks: list[RelayCheck]
    errors: list[IceCandidateErrorEvent]

    @property
    def ok(self) -> bool:
        """At least one relay, every one relays both ways, and no server failed."""
        return bool(self.checks) and all(c.ok for c in self.checks) and not self.errors


def relay_checks(
    ice_servers: Sequence[IceServer],
    *,
    timeout: float = 2.0,
    ssl_context: ssl.SSLContext | None = None,
    dual_stack_relays: bool = False,
) -> AsyncGenerator[RelayCheck | IceCandidateErrorEvent, None]:
    """Gather relay candidates from the TURN servers and send a datagram each way
    through each (see the module's docstring), streaming what comes: the servers' errors
    while gathering (a wrong password, a server that never answers), which explain a
    relay that is missing, then each relay's check as it ends. Each TURN URL is
    gathered from sockets of its own, with its own credentials (its STUN URLs are left
    out), and each relay checked from the moment it is gathered, all at once. `timeout`:
    seconds for each server to answer while gathering, and for each direction of each
    check (a relay over TCP or TLS may take half a second more first: port 3478 of its
    address is asked which address our datagrams come from). The allocations are
    released when the iteration ends; a loop left early (`break`, an exception) should
    hold it in `contextlib.aclosing`, or they wait for the garbage collector to close
    the generator. The servers and options are
    checked at the call (ValueError, TypeError), before anything is sent."""
    timeout = positive_seconds(timeout, "timeout")
    probes = _Probes()
    gatherers = [
        Gatherer(
            [server],
            timing=Timing(server_deadline=timeout),
            ssl_context=ssl_context,
            dual_stack_relays=dual_stack_relays,
            on_relayed=probes.arrived,
            on_datagram=probes.arrived,
            on_relay_failure=probes.refused,
        )
        for server in _one_per_url(ice_servers)
    ]
    return _checked(gatherers, probes, timeout)


def _one_per_url(ice_servers: Sequence[IceServer]) -> list[IceServer]:
    """A server for each TURN URL (each checked by a gatherer of its own), the same URL
    with the same credentials once. In one gatherer, URLs for one server address would
    share an allocation, and all but the first would pass with their credentials never
    tried; a redirect to an address another URL allocates at would fail. STUN URLs
    are left out: they relay nothing."""
    if isinstance(ice_servers, str | bytes) or not isinstance(ice_servers, Sequence):
        raise TypeError(f"ice_servers must be a sequence, not {type(ice_servers).__name__}")
    seen: dict[tuple[str, str | None, str | None], IceServer] = {}
    for server in ice_servers:
        if not isinstance(server, IceServer):
            raise TypeError(f"ice_servers must hold IceServer objects, not {type(server).__name__}")
        for url in server.url_list:
            if parse_server_url(url).is_turn:  # any URL wrong is an error, as a Gatherer's
                key = (url, server.username, server.credential)
                seen.setdefault(key, IceServer(url, server.username, server.credential))
    if not seen:
        urls = [url for server in ice_servers for url in server.url_list]
        raise ValueError(f"relay checks need a turn: or turns: server, not {urls}")
    return list(seen.values())


async def _checked(
    gatherers: list[Gatherer], probes: _Probes, timeout: float
) -> AsyncGenerator[RelayCheck | IceCandidateErrorEvent, None]:
    # Sources merged: each gathering (its errors, then its end) and each check, every
    # task put in the queue as it ends.
    done: asyncio.Queue[asyncio.Task[Any] | IceCandidateErrorEvent] = asyncio.Queue()
    checks: list[asyncio.Task[RelayCheck]] = []

    async def gather(gatherer: Gatherer) -> None:
        async for event in gatherer.gather():
            if isinstance(event, IceCandidateErrorEvent):
                done.put_nowait(event)
            elif isinstance(event, IceCandidateEvent) and event.candidate is not None:
                relay = event.candidate
                if relay.type == "relay":
                    check = _check(gatherer, probes, relay, event.url, timeout)
                    checks.append(asyncio.ensure_future(check))
                    checks[-1].add_done_callback(done.put_nowait)

    gatherings = [asyncio.ensure_future(gather(gatherer)) for gatherer in gatherers]
    for gathering in gatherings:
        gathering.add_done_callback(done.put_nowait)
    try:
        told = 0
        while not all(g.done() for g in gatherings) or told < len(checks) or not done.empty():
            item = await done.get()
            if item in gatherings:
                item.result()  # its exception, if it failed
            elif isinstance(item, asyncio.Task):
                told += 1
                yield item.result()
            else:
                yield item
        for gathering in gatherings:
            gathering.result()  # done, its item perhaps not yet queued
    finally:  # ended early too: all stop before their gatherers close, all at once
        try:
            for task in (*gatherings, *checks):
                task.cancel()
            await asyncio.gather(*gatherings, *checks, return_exceptions=True)
        finally:  # even if cancelled again meanwhile: a cancelled close releases at once
            closing = (gatherer.close() for gatherer in gatherers)
            await asyncio.gather(*closing, return_exceptions=True)


async def check_relays(
    ice_servers: Sequence[IceServer],
    *,
    timeout: float = 2.0,
    ssl_context: ssl.SSLContext | None = None,
    dual_stack_relays: bool = False,
) -> RelayCheckReport:
    """`relay_checks`, all of it, in one report."""
    report = RelayCheckReport([], [])
    results = relay_checks(
        ice_servers, timeout=timeout, ssl_context=ssl_context, dual_stack_relays=dual_stack_relays
    )
    async for result in results:
        if isinstance(result, RelayCheck):
            report.checks.append(result)
        else:
            report.errors.append(result)
    return report


async def _check(
    gatherer: Gatherer, probes: _Probes, relay: IceCandidate, url: str | None, timeout: float
) -> RelayCheck:
    assert relay.address is not None and relay.port is not None
    address = (relay.address, relay.port)
    allocation = next((a for a in gatherer.allocations if address in a.relayed), None)
    source = _source_for(relay, gatherer.candidates)
    base = None if source is None else source.base
    if allocation is None:
        return RelayCheck(relay, address, url, base, problem="its allocation is gone")
    if source is None or base is None:
        family = "IPv6" if ":" in relay.address else "IPv4"
        problem = f"no {family} host socket to send from"
        return RelayCheck(relay, address, url, None, problem=problem)
    ips = _peer_ips(relay, base, gatherer.candidates)
    if allocation.reliable and not _srflx_ips(base, gatherer.candidates):
        # Over TCP or TLS the related address is where the server saw the connection
        # come from: a proxy in front of it, perhaps, not where our datagrams come from.
        seen = await _seen_from(base[0], relay.address, min(timeout, _STUN_WAIT_S))
        if seen is not None:
            ips.add(seen)
    try:
        gatherer.relay_permit(allocation, [(ip, 9) for ip in sorted(ips)])
    except ValueError as error:  # not a unicast address: nothing could come from there
        return RelayCheck(relay, address, url, base, problem=f"cannot permit a peer: {error}")
    await probes.permitted(allocation, ips, timeout)

    inbound = await probes.exchange(
        lambda token: gatherer.send(source, address, token), allocation, ips, timeout
    )
    if isinstance(inbound, str):
        problem = f"peer to relay: {inbound}"
        if inbound.startswith("nothing"):
            problem += (
                f" (is {hostport(*address)} reachable from here? a firewall "
                "closed to the relay ports, or the server's external-ip, may keep it out; "
                f"or the probes reach it from another address than {', '.join(sorted(ips))}, "
                "which it was asked to permit, as behind a proxy for TURN over TCP or TLS)"
            )
        return RelayCheck(relay, address, url, base, problem=problem)
    peer, peer_to_relay_ms = inbound
    outbound = await probes.exchange(
        lambda token: gatherer.relay_send(allocation, peer, token), allocation, ips, timeout
    )
    if isinstance(outbound, str):
        problem = f"relay to peer {hostport(*peer)}: {outbound}"
        return RelayCheck(relay, address, url, base, peer_to_relay_ms, problem=problem)
    return RelayCheck(relay, address, url, base, peer_to_relay_ms, outbound[1])


def _source_for(relay: IceCandidate, candidates: Sequence[IceCandidate]) -> IceCandidate | None:
    """A UDP candidate of ours, of the relay's family, to play the peer from: the base
    the allocation was made from where its srflx shows it (the relay's related address
    is that srflx's), or where no NAT is on the way (the related address is the base's
    own: no srflx then), else a host candidate on the relay's network (a TCP
    allocation's), else the first host candidate. The base matters: the permission is
    for the address the server sees it from."""
    assert relay.address is not None
    family_v6 = ":" in relay.address
    ours = [
        c
        for c in candidates
        if c.type in ("host", "srflx")
        and c.protocol == "udp"
        and c.base is not None
        and (":" in c.base[0]) == family_v6
    ]
    mapped = (relay.relatedAddress, relay.relatedPort)
    same = [c for c in ours if c.type == "srflx" and (c.address, c.port) == mapped]
    hosts = [c for c in ours if c.type == "host"]
    own = [c for c in hosts if c.address == relay.relatedAddress]  # over TCP, another port
    network = relay.parsed.network_id if relay.parsed else None
    near = [c for c in hosts if c.parsed and c.parsed.network_id == network]
    return next(iter(same or own or near or hosts), None)


def _srflx_ips(base: tuple[str, int], candidates: Sequence[IceCandidate]) -> list[str]:
    """The public addresses the base's srflx candidates show."""
    return [c.address for c in candidates if c.base == base and c.type == "srflx" and c.address]


async def _seen_from(local: str, server: str, wait: float) -> str | None:
    """The IP a STUN server on port 3478 at `server` (a TURN server's relay address is
    usually one of its own) sees a socket of ours on `local` come from: behind a NAT,
    the one a peer sees our datagrams come from (a permission is for an IP, whatever the
    port). None if nothing answers within `wait` seconds."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in local else socket.AF_INET
    transaction = stun.new_transaction_id()
    request = stun.encode(stun.Method.BINDING, stun.MessageClass.REQUEST, transaction)
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:  # out of fds: the check goes on with what it knows
        return None
    with sock:
        sock.setblocking(False)
        try:
            sock.bind((local, 0))
            sock.connect((server, _STUN_PORT))  # connected: an ICMP refusal is told
            deadline = loop.time() + wait
            while (left := deadline - loop.time()) > 0:
                await loop.sock_sendall(sock, request)
                try:
                    async with asyncio.timeout(min(left, _PROBE_INTERVAL_S)):
                        while True:
                            data = await loop.sock_recv(sock, 2048)
                            with contextlib.suppress(stun.StunError):
                                answer = stun.parse(data)
                                mapped = answer.xor_mapped_address()
                                if answer.transaction_id == transaction and mapped:
                                    return mapped[0] if _unicast(mapped[0], family) else None
                except TimeoutError:
                    continue
        except OSError:  # refused (ICMP), unreachable: no STUN there
            return None
    return None


def _unicast(ip: str, family: int) -> bool:
    """A unicast address of the family: what a permission may be asked for."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return (parsed.version == 6) == (family == socket.AF_INET6) and not_unicast(parsed) is None


def _peer_ips(
    relay: IceCandidate, base: tuple[str, int], candidates: Sequence[IceCandidate]
) -> set[str]:
    """What to permit (a permission is for an IP, whatever the port): where the server
    will see the source's datagrams come from, its public address, as the allocation's
    mapping and the source's srflx candidates show it; else, with no NAT on the way or
    none known (the IPv6 relay of a dual allocation made over IPv4), its own address.
    Never its private address beside a public one: a server may refuse a peer there, and
    the whole request with it."""
    v6 = ":" in base[0]
    srflx = _srflx_ips(base, candidates)
    public = {ip for ip in (*srflx, relay.relatedAddress) if ip and (":" in ip) == v6}
    return public or {base[0]}


class _Probes:
    """Probes on their way, by content: each resolves when it arrives, with where from."""

    def __init__(self) -> None:
        self._waiting: dict[bytes, asyncio.Future[tuple[tuple[str, int], float]]] = {}
        # (id(allocation), peer IP) -> why its permission failed: a dual allocation's two
        # checks permit an IP each, and one refused must not fail the other
        self._refusals: dict[tuple[int, str], str] = {}

    def arrived(self, _local: object, peer: tuple[str, int], data: bytes) -> None:
        """on_datagram and on_relayed: (base or allocation, peer, data)."""
        waiter = self._waiting.pop(bytes(data), None)
        if waiter is not None and not waiter.done():
            waiter.set_result((peer, waiter.get_loop().time()))

    def refused(self, allocation: Allocation, failure: RequestFailed) -> None:
        for ip, _port in failure.peers:
            self._refusals[id(allocation), ip] = (
                f"permission refused: {failure.code} {failure.reason}"
            )

    def _refusal(self, allocation: Allocation, ips: set[str]) -> str | None:
        return next((r for ip in ips if (r := self._refusals.get((id(allocation), ip)))), None)

    async def permitted(self, allocation: Allocation, ips: set[str], timeout: float) -> None:
        """Wait until the server has installed the permissions (a probe sent before would
        be dropped, and the next go 250 ms later), or refused them, at most `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ips <= allocation.permissions and self._refusal(allocation, ips) is None:
            if loop.time() >= deadline:
                return  # the probes will tell
            await asyncio.sleep(0.005)

    async def exchange(
        self, send: Callable[[bytes], None], allocation: Allocation, ips: set[str], timeout: float
    ) -> tuple[tuple[str, int], float] | str:
        """Send probes every `_PROBE_INTERVAL_S` until one arrives: where it came from
        and how long it took, in ms; else why not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sent: list[tuple[asyncio.Future[tuple[tuple[str, int], float]], float, bytes]] = []
        try:
            while (left := deadline - loop.time()) > 0:
                if (refusal := self._refusal(allocation, ips)) is not None:
                    return refusal
                token = _PROBE_PREFIX + os.urandom(12).hex().encode()
                waiter = self._waiting[token] = loop.create_future()
                sent.append((waiter, loop.time(), token))
                try:
                    send(token)
                except (OSError, ValueError) as error:
                    return f"cannot send: {error}"
                await asyncio.wait(
                    [w for w, _, _ in sent],
                    timeout=min(left, _PROBE_INTERVAL_S),
                    return_when=asyncio.FIRST_COMPLETED,  # an arrival ends it at once
                )
                for waiter, at, _ in sent:
                    if waiter.done():
                        peer, arrived = waiter.result()
                        return peer, round((arrived - at) * 1000, 1)
            return self._refusal(allocation, ips) or f"nothing came through in {timeout:g} s"
        finally:
            for waiter, _, token in sent:
                self._waiting.pop(token, None)
                waiter.cancel()
