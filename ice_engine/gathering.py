"""The sans-I/O gathering state machine.

`Gathering` owns everything that decides: generations, per-transport and aggregate
gathering state, which servers each base asks, candidate priorities, pruning and event
order. It never touches a socket or a clock. Its driver feeds it API calls, datagrams,
DNS answers and timer ticks, each with `now`, and drains two queues: events for the
application (`next_event`) and commands for the network (`next_command`). The same
object therefore runs under asyncio, under a simulated network in tests, or under
anything else. What it asks of servers lives in its base classes, a layer each: STUN
Binding requests (srflx discovery, which TURN asks for too) in `reflexive.py`, TURN
(allocations, streams, the relay data path) in `relaying.py`, and how candidates and
events are queued, which all share, in `emitting.py`.

Event order per generation, as browsers fire it:
``gathering`` → candidates as found → ``""`` per transport when that transport is done →
``complete`` → ``null``.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import socket
from collections import deque
from collections.abc import Sequence

from .candidate import _COMPILED  # the core is compiled as one, or not at all
from .commands import Command, Resolve
from .credentials import Credentials
from .events import (
    Event,
    GatheringState,
    IceCandidate,
)
from .model import UNREACHABLE, Base, Generation, Server, Transport
from .reflexive import without_zone
from .relaying import Relaying
from .transaction import RttTable, Timing
from .turn import NonceCache
from .urls import not_unicast

__all__ = ["Base", "Gathering", "Server", "Transport"]

_DEFAULT_TIMING = Timing()
#: ICE-TCP host candidates rank below UDP ones, as libwebrtc ranks them (type 90).
_TCP_HOST_TYPE_PREFERENCE = 90


class Gathering(Relaying):
    """Gathering for a set of transports × components, across generations (ICE restarts)."""

    __slots__ = (
        "_closed",
        "_commands",
        "_generation",
        "_last_resolve",
        "_pool",
        "_released",
        "_resolving",
        "components",
        "continual",
        "dual_stack_relays",
        "hide_host",
        "nonces",
        "relay_only",
        "rtt",
        "servers",
        "timing",
        "transports",
    )

    def __init__(
        self,
        *,
        transports: Sequence[Transport],
        components: int = 1,
        servers: Sequence[Server] = (),
        credentials: Credentials,
        relay_only: bool = False,
        hide_host: bool = False,
        continual: bool = False,
        timing: Timing | None = None,
        rtt: RttTable | None = None,
        nonces: NonceCache | None = None,
        dual_stack_relays: bool = False,
    ) -> None:
        super().__init__()
        if not transports:
            raise ValueError("at least one transport is needed")
        if not 1 <= components <= 256:
            raise ValueError(f"components must be 1-256, not {components}")
        self.transports = tuple(transports)
        self.components = components
        self.servers = tuple(servers)
        self.relay_only = relay_only
        # No host candidate, no related address: RFC 8828 mode 3, or mDNS names unavailable.
        self.hide_host = hide_host
        # Continual gathering: a generation takes in new bases and stays "gathering" until
        # a restart or close ends it (libwebrtc's GATHER_CONTINUALLY).
        self.continual = continual
        self.timing = timing or _DEFAULT_TIMING
        self.rtt = rtt if rtt is not None else RttTable()
        self.nonces = nonces if nonces is not None else NonceCache()
        self.dual_stack_relays = dual_stack_relays
        self._generation = Generation(0, credentials, len(self.transports), 0.0)
        self._pool: tuple[Generation, ...] = ()  # usually empty: no container per gatherer
        self._released = -1  # the last generation whose events went to the application
        self._commands: deque[Command] = deque()
        self._last_resolve = 0
        self._resolving: dict[int, tuple[Generation, Server]] = {}
        self._closed = False

    # -- what the application sees -------------------------------------------------

    @property
    def state(self) -> GatheringState:
        """RTCPeerConnection.iceGatheringState: aggregated over every transport."""
        return self._state

    def transport_state(self, transport: int) -> GatheringState:
        """RTCIceTransport.gatheringState of one transport, in the current generation.

        While that generation is held (see `start`), the application has seen none of it:
        `new`, as for one that has not started."""
        generation = self._generation
        if generation.held is not None:
            return GatheringState.NEW
        return generation.state[transport]

    @property
    def started(self) -> bool:
        """Whether the current generation has begun gathering (`start`, or a pool)."""
        return self._generation.state[0] is not GatheringState.NEW

    @property
    def released(self) -> int:
        """The last generation whose events went to the application (-1: none yet).
        After a restart the application's ICE agent may still use it, so its relays stay,
        refreshed, until a restart after a later generation's release (or `close()`); a
        driver keeps its sockets likewise."""
        return self._released

    @property
    def generation(self) -> int:
        return self._generation.number

    @property
    def credentials(self) -> Credentials:
        return self._generation.credentials

    @property
    def candidates(self) -> list[IceCandidate]:
        """The current generation's candidates so far, in the order they were emitted;
        none while it is held."""
        generation = self._generation
        return [] if generation.held is not None else list(generation.candidates)

    def base_key_of(self, mid: str, line: str) -> int | None:
        """The key of the base one of `candidates` was gathered on, found by its mid and
        line (ICE-TCP's active candidates of two transports have the same line)."""
        generation = self._generation
        return None if generation.held is not None else generation.bases_of.get((mid, line))

    @property
    def bases(self) -> list[Base]:
        """The current generation's UDP bases."""
        return list(self._generation.bases)

    @property
    def tcp_bases(self) -> list[Base]:
        """The current generation's ICE-TCP listeners."""
        return list(self._generation.tcp_bases)

    @property
    def next_rank(self) -> int:
        """The rank (see `Base`) for an address that joins the current generation: after
        those of its bases, so that it takes a lower local preference."""
        generation = self._generation
        return max((b.rank for b in (*generation.bases, *generation.tcp_bases)), default=-1) + 1

    @property
    def waiting_for(self) -> list[str]:
        """The URLs of the servers the current generation still waits on (a request
        unanswered, a name being resolved, an allocation under way), in configuration
        order: a server that answered with nothing new gives no event, and only this
        tells it apart from one that has not answered yet."""
        generation = self._generation
        waiting: dict[int, str] = {}
        self._probes_waiting(generation, waiting)
        for owner, server in self._resolving.values():
            if owner is generation:
                waiting[server.index] = server.url.url
        for relay in [*self._relays.values(), *(self._moving or {}).values()]:
            if relay.generation is generation and not relay.settled:
                for server in relay.servers:
                    waiting[server.index] = server.url.url
        return [waiting[index] for index in sorted(waiting)]

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None: drain them after every call."""
        return self._events.popleft() if self._events else None

    def take_events_through(self, generation: int) -> list[Event]:
        """Take the queued events of generations up to `generation` out of the queue,
        which keeps the later ones: after a restart, a reader of that generation still
        has them to read while another reads the new one."""
        events = self._events
        taken: list[Event] = []
        while events and events[0].generation <= generation:
            taken.append(events.popleft())
        return taken

    @property
    def has_events(self) -> bool:
        """Whether `next_event` has one: a driver need not wake its consumer otherwise
        (a 401 or a retransmission changes nothing the application sees)."""
        return bool(self._events)

    def next_command(self) -> Command | None:
        """The oldest command not yet taken, or None: drain them after every call, and
        carry them out in this order (a stream's `StreamSend` after its `OpenStream`)."""
        return self._commands.popleft() if self._commands else None

    def get_timer(self) -> float | None:
        """When `handle_timer` next wants to run, or None."""
        timer = self._probe_timer()
        for generation, _server in self._resolving.values():
            timer = min(timer, generation.deadline)
        timer = min(timer, self._relay_timer())
        return None if timer == math.inf else timer

    # -- API calls -----------------------------------------------------------------

    def start(
        self,
        now: float,
        bases: Sequence[Base],
        tcp_bases: Sequence[Base] = (),
        *,
        hold: bool = False,
    ) -> None:
        """Begin gathering the current generation from these bound sockets.

        `tcp_bases` are listening TCP sockets (RFC 6544): each gives a passive host
        candidate on its port and an active one on port 9. With `hold`, its events wait
        for `release` (a browser's candidate pool gathers before setLocalDescription, and
        shows nothing, not even its state, until then).
        """
        generation = self._generation
        if self._closed:
            raise RuntimeError("gathering is closed")
        if generation.state[0] is not GatheringState.NEW:
            raise RuntimeError(f"generation {generation.number} has already been gathered")
        generation.held = [] if hold else None
        try:
            self._begin(generation, now, bases, tcp_bases)
        except BaseException:  # refused before anything began: as if never called
            generation.held = None
            raise

    def release(self) -> None:
        """Hand the current generation's held events to the application (a no-op when
        nothing is held): what `start(hold=True)` or a pooled generation gathered."""
        generation = self._generation
        if generation.held is None or self._closed:  # closed: nothing more is emitted
            return
        held, generation.held = generation.held, None
        self._events.extend(held)
        self._state = generation.aggregate
        self._released = generation.number

    def prepare(
        self,
        now: float,
        credentials: Credentials,
        bases: Sequence[Base],
        tcp_bases: Sequence[Base] = (),
    ) -> int:
        """Gather a pooled generation ahead of need (RTCConfiguration.iceCandidatePoolSize).

        It is numbered after the current and any pooled ones, and returned. Its events are
        held until a `restart` has made it current and `release` is called.
        """
        number = self.next_pooled
        generation = Generation(number, credentials, len(self.transports), now)
        generation.held = []
        self._begin(generation, now, bases, tcp_bases)
        self._pool += (generation,)
        return number

    @property
    def next_pooled(self) -> int:
        """The number the next `prepare` gives its generation (its sockets are bound first)."""
        return self._generation.number + len(self._pool) + 1

    def keeps(self, number: int) -> bool:
        """Whether generation `number` is still in use, so its sockets and relays stay:
        the current one, pooled ones, and the last whose events the application saw
        (its ICE agent may still use it until the restart completes)."""
        return number >= self._generation.number or number == self._released

    @property
    def pooled(self) -> int:
        """How many generations `prepare` has gathered that no restart has taken yet."""
        return len(self._pool)

    def _begin(
        self, generation: Generation, now: float, bases: Sequence[Base], tcp_bases: Sequence[Base]
    ) -> None:
        if self._closed:
            raise RuntimeError("gathering is closed")
        if not math.isfinite(now):  # no deadline would ever come
            raise ValueError(f"now must be a finite time, not {now}")
        self._check_bases(bases, tcp_bases)
        generation.started_at = now
        generation.deadline = now + self.timing.server_deadline
        generation.bases = list(bases)
        generation.tcp_bases = tuple(tcp_bases)
        generation.state = [GatheringState.GATHERING] * len(self.transports)
        if generation.held is None:
            self._released = generation.number
        self._set_state(generation, GatheringState.GATHERING, now)
        self._add_hosts(generation, bases, tcp_bases, now)
        for server in self.servers:
            url = server.url
            if self.relay_only and not url.is_turn:
                continue  # its srflx would be dropped: not even asked, so not waited for
            if url.secure and not url.is_turn:  # told at once, not by a 701 at the deadline
                self._error(generation, server, None, None, UNREACHABLE, _NO_STUNS, now)
                continue
            if url.host_is_ip:  # nothing to look up: contact it now
                self._use(generation, server, [(url.host, url.port)], now)
                continue
            self._last_resolve += 1
            self._resolving[self._last_resolve] = (generation, server)
            for transport in range(len(self.transports)):
                generation.pending[transport] += 1
            self._commands.append(Resolve(self._last_resolve, server.url))
        for transport in range(len(self.transports)):
            self._maybe_finish(generation, transport, now)

    def _check_bases(self, bases: Sequence[Base], tcp_bases: Sequence[Base]) -> None:
        """TypeError or ValueError, before anything changes, for a base that is not a
        bound socket's or that this gathering has no place for (once it has begun, a
        bad one would fail it halfway, never to complete)."""
        keys: set[object] = set()
        for base in (*bases, *tcp_bases):
            if not _COMPILED:  # compiled, each is checked as it is read as an int below
                numbers = (base.key, base.transport, base.component, base.port, base.family)
                for number in (*numbers, base.rank, base.network_id):
                    if not isinstance(number, int):
                        raise TypeError(f"a base's numbers must be ints: {base}")
            if base.rank < 0 or base.network_id < 0:
                raise ValueError(f"base {base.key}: its rank and network id must be 0 or more")
            if base.relay_key is not None and not (
                isinstance(base.relay_key, int) and base.relay_key >= 0  # (read as int)
            ):
                raise TypeError(f"base {base.key}: relay_key must be None or a key")
            if base.name is not None and not (isinstance(base.name, str) and base.name):
                raise TypeError(f"base {base.key}: name must be None or an mDNS name")
            if base.key in keys:  # answers find their base by it
                raise ValueError(f"two bases have key {base.key}")
            keys.add(base.key)
            if not 0 <= base.transport < len(self.transports):
                raise ValueError(f"base {base.key} names unknown transport {base.transport}")
            if not 1 <= base.component <= self.components:
                raise ValueError(
                    f"base {base.key} names component {base.component}, not 1-{self.components}"
                )
            if not 1 <= base.port <= 65535:
                raise ValueError(f"base {base.key} has port {base.port}, not 1-65535")
            if (flaw := _address_flaw(base.address, base.family == socket.AF_INET6)) is not None:
                raise ValueError(f"base {base.key}: {flaw}")

    def restart(self, now: float, credentials: Credentials | None = None) -> None:
        """ICE restart: the next generation becomes current.

        A pooled one (see `prepare`) is taken first, its events held until `release`;
        otherwise a new generation with these `credentials` waits for `start`. A
        generation still gathering is closed out first, with its end-of-candidates,
        ``complete`` and ``null``, so no candidate of it can follow the new one's; one
        still held is dropped unseen, as a browser's second restartIce() before
        setLocalDescription makes one new generation, not two.

        The relays of the last generation the application saw stay (its ICE agent may
        use them until the restart completes); older ones, and unseen ones, are released.
        """
        if self._closed:
            raise RuntimeError("gathering is closed")
        if not self._pool and credentials is None:
            raise ValueError("restart needs credentials when no generation is pooled")
        old = self._generation
        self._retire(old, now)
        if self._pool:
            generation, self._pool = self._pool[0], self._pool[1:]
            self._generation = generation
        else:
            assert credentials is not None
            self._generation = Generation(old.number + 1, credentials, len(self.transports), now)
        self._close_relays(now, everything=False)

    def close(self, now: float) -> None:
        """Stop: pending work is dropped, nothing more is emitted, allocations are released.

        Deallocation (a Refresh with lifetime 0) goes out as commands; `closing` tells
        the driver whether to wait (briefly) for the server's answers.
        """
        self._close_probes()
        self._resolving.clear()
        self._pool = ()
        self._closed = True
        self._close_relays(now)

    # -- network input -------------------------------------------------------------

    def resolved(self, now: float, request: int, addresses: Sequence[tuple[str, int]]) -> None:
        """DNS (or a literal) gave these (ip, port) addresses for a Resolve command, in
        the order to try them (SRV targets in RFC 2782's order, then DNS order). Those
        that are not unicast (0.0.0.0 from a hosts file that blocks the name, multicast)
        are never contacted; with none left, the server fails as by `resolve_failed`."""
        entry = self._resolving.get(request)
        if entry is None:
            return
        addresses = tuple(addresses)  # read twice below: a generator would be used up
        for address in addresses:  # refused before the request is taken
            if len(address) != 2 or not isinstance(address[1], int) or not 0 < address[1] < 65536:
                raise ValueError(f"resolved: {address!r} is not an (ip, port) pair")
        generation, server = entry
        usable = [a for a in addresses if not_unicast(ipaddress.ip_address(a[0])) is None]
        if not usable:
            found = ", ".join(host for host, _ in addresses) or "none"
            reason = f"{server.url.host!r} resolves to no unicast address ({found})"
            self.resolve_failed(now, request, reason)
            return
        del self._resolving[request]
        if generation.retired:
            return
        self._use(generation, server, usable, now)
        for transport in range(len(self.transports)):
            self._done(generation, transport, now)

    def _use(
        self,
        generation: Generation,
        server: Server,
        addresses: Sequence[tuple[str, int]],
        now: float,
    ) -> None:
        """Contact a server at its (resolved) addresses from every base."""
        # One spelling per address, each once: its bases then need no check of their own.
        normalized = list(dict.fromkeys((_canonical(host), port) for host, port in addresses))
        if self.continual:  # new bases will need them
            generation.servers += ((server, normalized),)
        for base in generation.bases:
            self._contact(generation, base, server, normalized, now)
        ipv6 = {":" in host for host, _ in normalized}
        bases = generation.bases
        if ipv6 and bases and not any((base.family == socket.AF_INET6) in ipv6 for base in bases):
            family = "IPv6" if True in ipv6 else "IPv4"  # no base can reach it: say so
            text = f"{server.url.host} has only {family} addresses and no local address is {family}"
            self._error(generation, server, None, None, UNREACHABLE, text, now)

    def _contact(
        self,
        generation: Generation,
        base: Base,
        server: Server,
        addresses: Sequence[tuple[str, int]],
        now: float,
        deadline: float | None = None,
    ) -> None:
        """Ask one server from one base, at the first of its addresses of the base's family
        that answers (a TURN server's allocation, a STUN server's mapping)."""
        ipv6 = base.family == socket.AF_INET6
        usable = [address for address in addresses if (":" in address[0]) == ipv6]
        if usable and _link_local(base.address):  # (only with link_local=True)
            # Its datagrams never leave the link, so a server beyond it is not asked
            # (nor reported unreachable), as libwebrtc pairs no such address with one.
            usable = [address for address in usable if _link_local(address[0])]
        if not usable:
            return
        if server.url.is_turn:
            self._allocate_in_turn(generation, base, server, usable, now, deadline)
            if base.relay_key is None or server.url.transport != "udp" or self.relay_only:
                return
            # The allocation's socket is not the base's: ask for the base's own srflx.
        until = generation.deadline if deadline is None else deadline
        self._send_binding(generation, base, server, usable, now, until, quiet=server.url.is_turn)

    def add_bases(self, now: float, bases: Sequence[Base], tcp_bases: Sequence[Base] = ()) -> None:
        """Continual gathering: new sockets (an address appeared) join the current
        generation, with their host candidates and every server already resolved."""
        generation = self._generation
        if (
            not self.continual
            or generation.retired
            or self._closed
            or generation.state[0] is not GatheringState.GATHERING
        ):
            raise RuntimeError("bases can only be added while gathering continually")
        self._check_bases(bases, tcp_bases)
        generation.bases.extend(bases)
        generation.tcp_bases += tuple(tcp_bases)
        self._add_hosts(generation, bases, tcp_bases, now)
        deadline = now + self.timing.server_deadline  # a fresh one for new work
        for base in bases:
            for server, addresses in generation.servers:
                self._contact(generation, base, server, addresses, now, deadline)

    def remove_bases(self, now: float, keys: Sequence[int]) -> None:
        """Sockets whose address went away: their candidates are removed (an event each)
        and whatever they still waited for is dropped."""
        generation = self._generation
        gone = set(keys)
        generation.bases = [b for b in generation.bases if b.key not in gone]
        generation.tcp_bases = tuple(b for b in generation.tcp_bases if b.key not in gone)
        self._drop_probes(gone, now)
        self._drop_relays(gone, now)
        bases_of = generation.bases_of
        lost = [c for c in generation.candidates if bases_of.get((c.sdpMid, c.candidate)) in gone]
        # Announced while their transport gathers: after its "" (or a close) it has ended.
        gathering = {
            t.mid
            for t, state in zip(self.transports, generation.state, strict=True)
            if state is GatheringState.GATHERING and not self._closed
        }
        announced = [c for c in lost if c.sdpMid in gathering]
        self._remove_candidates(generation, announced, now, announce=True)
        quiet = [c for c in lost if c.sdpMid not in gathering]
        self._remove_candidates(generation, quiet, now, announce=False)

    def resolve_failed(self, now: float, request: int, reason: str) -> None:
        """A Resolve command's lookup failed (no such name, no answer): the server fails,
        with `reason` in its error event."""
        entry = self._resolving.pop(request, None)
        if entry is None:
            return
        generation, server = entry
        if generation.retired:
            return
        self._error(generation, server, None, None, UNREACHABLE, reason, now)
        for transport in range(len(self.transports)):
            self._done(generation, transport, now)

    def receive_datagram(
        self, now: float, base_key: int, data: bytes, source: tuple[str, int]
    ) -> bool:
        """A datagram arrived on a base; True if it was the core's: an answer to one of
        our requests (Binding or TURN) or data relayed by one of our allocations. False
        leaves it to the application's data path (a peer's check or media)."""
        taken = self._probe_answer(now, base_key, data, source)
        if taken is not None:
            return taken
        return self._relay_datagram(now, base_key, data, (without_zone(source[0]), source[1]))

    def unreachable(
        self,
        now: float,
        base_key: int,
        address: tuple[str, int],
        cause: str = "ICMP port unreachable",
    ) -> None:
        """ICMP said `address` cannot be reached from this base, or the kernel refused to
        send there (`cause` says which): fail its work now with a 701, rather than at the
        deadline (an ICMP error can be forged, but at worst it fails a server early: it
        can never make a candidate)."""
        address = (without_zone(address[0]), address[1])
        self._probe_unreachable(now, base_key, address, cause)
        self._relay_unreachable(now, base_key, address, cause)

    def handle_timer(self, now: float) -> None:
        """Retransmit what is due, and give up on what has reached its deadline."""
        self._probes_on_timer(now)
        self._relays_on_timer(now)
        for resolve_id, (generation, server) in list(self._resolving.items()):
            if now >= generation.deadline:
                text = f"DNS lookup of {server.url.host!r} timed out."
                self.resolve_failed(now, resolve_id, text)

    # -- internals -----------------------------------------------------------------

    def _add_hosts(
        self, generation: Generation, bases: Sequence[Base], tcp_bases: Sequence[Base], now: float
    ) -> None:
        """The bases' host candidates, unless none may show (`relay_only`, `hide_host`)."""
        if self.relay_only or self.hide_host:
            return
        for base in bases:
            self._add_host(generation, base, now)
        for base in tcp_bases:
            self._add_tcp_hosts(generation, base, now)

    def _add_host(self, generation: Generation, base: Base, now: float) -> None:
        """The base itself, named by mDNS where it has a name (the address stays private)."""
        self._add_candidate(generation, base, "host", base.name or base.address, base.port, now)

    def _add_tcp_hosts(self, generation: Generation, base: Base, now: float) -> None:
        """RFC 6544: an active candidate (port 9, it never listens) and a passive one."""
        for tcptype, port in (("active", 9), ("passive", base.port)):
            self._add_candidate(
                generation,
                base,
                "host",
                base.name or base.address,
                port,
                now,
                protocol="tcp",
                tcptype=tcptype,
                type_preference=_TCP_HOST_TYPE_PREFERENCE,
            )

    def _retire(self, generation: Generation, now: float) -> None:
        """Close out a generation that is still gathering: its pending work is dropped."""
        generation.retired = True
        self._retire_probes(generation)
        for request in [r for r, (owner, _) in self._resolving.items() if owner is generation]:
            del self._resolving[request]
        self._deallocate_unsettled(generation, now)
        for transport in range(len(self.transports)):
            generation.pending[transport] = 0
            self._maybe_finish(generation, transport, now)


#: Browsers do not gather over stuns: either, and its mapping would be a TCP one, of no
#: use to UDP candidates.
_NO_STUNS = "STUN over TLS (stuns:) is not supported for gathering; use stun: or turns:"


@functools.lru_cache(maxsize=1024)
def _canonical(address: str) -> str:
    """One spelling per address, so a response's source compares equal (cached: servers
    are few and every gatherer asks)."""
    return str(ipaddress.ip_address(address))


@functools.lru_cache(maxsize=1024)
def _address_flaw(address: str, ipv6: bool) -> str | None:
    """What is wrong with a base's address, or None (cached: a machine has few)."""
    try:
        parsed = ipaddress.ip_address(address)
    except (TypeError, ValueError):
        return f"{address!r} is not an IP address"
    if "%" in address:
        return f"{address} has a zone: the base's address goes into candidates, without one"
    if ipv6 != (parsed.version == 6):
        return f"{address} is not an {'IPv6' if ipv6 else 'IPv4'} address, as its family says"
    return None


@functools.lru_cache(maxsize=1024)
def _link_local(address: str) -> bool:
    """fe80::/10 or 169.254/16 (cached, as `_canonical`)."""
    return ipaddress.ip_address(without_zone(address)).is_link_local
