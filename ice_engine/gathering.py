"""The sans-I/O gathering state machine.

`Gathering` owns everything that decides: generations, per-transport and aggregate
gathering state, STUN transactions, candidate priorities, pruning and event order. It
never touches a socket or a clock. Its driver feeds it API calls, datagrams, DNS answers
and timer ticks, each with `now`, and drains two queues: events for the application
(`next_event`) and commands for the network (`next_command`). The same object therefore
runs under asyncio, under a simulated network in tests, or under anything else.

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
from dataclasses import dataclass, field

from . import stun
from .candidate import Candidate, compute_foundation, compute_priority, relay_type_preference
from .commands import CloseStream, Command, OpenStream, Resolve, SendDatagram, StreamSend
from .credentials import Credentials
from .events import (
    CandidateRemovedEvent,
    Event,
    GatheringState,
    IceCandidate,
    IceCandidateErrorEvent,
    IceCandidateEvent,
    IceGatheringStateChangeEvent,
)
from .transaction import RttTable, StunTransaction, Timing
from .turn import (
    AddressFamilyError,
    Allocated,
    Allocation,
    AllocationFailed,
    NonceCache,
    TurnCredentials,
)
from .urls import ServerUrl

__all__ = ["Base", "Gathering", "Server", "Transport"]

_DEFAULT_TIMING = Timing()
#: ICE-TCP host candidates rank below UDP ones, as libwebrtc ranks them (type 90).
_TCP_HOST_TYPE_PREFERENCE = 90
#: RFC 6544 §4.2 direction preferences for host candidates.
_TCP_DIRECTION_PREFERENCE = {"active": 6, "passive": 4, "so": 2}
UNREACHABLE = 701  # W3C: the server could not be reached (no STUN code applies)
_TYPE_PREFERENCE = {"host": 126, "srflx": 100}


@dataclass(frozen=True, slots=True)
class Transport:
    """One m-line's ICE transport, as signalling names it."""

    mid: str
    mline_index: int


@dataclass(frozen=True, slots=True)
class Server:
    """A STUN/TURN server URL with its credentials; `index` orders priorities."""

    url: ServerUrl
    index: int
    username: str | None = None
    credential: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Base:
    """A bound local UDP socket: the base of its host candidate and of those learnt through it.

    `key` is the driver's handle for the socket; `rank` is its address's place in the
    RFC 8421 order (0 is the most preferred).
    """

    key: int
    transport: int
    component: int
    address: str
    port: int
    family: int
    rank: int
    network_id: int = 0
    name: str | None = None  # an mDNS name to show instead of the address


def local_preference(rank: int, slot: int) -> int:
    """Unique per component: the address's rank, then which server (slot 0: none)."""
    return max(65535 - rank * 16 - slot, 0)


class _Probe:
    """A Binding request from one base to one server address (srflx discovery)."""

    __slots__ = ("base", "generation", "server", "server_address", "transaction")

    def __init__(
        self,
        generation: _Generation,
        base: Base,
        server: Server,
        server_address: tuple[str, int],
        tx: StunTransaction,
    ) -> None:
        self.generation = generation
        self.base = base
        self.server = server
        self.server_address = server_address
        self.transaction = tx


class _Relay:
    """A TURN allocation from one base to one server address (relay, and srflx too)."""

    __slots__ = (
        "allocation",
        "backlog",
        "base",
        "done",
        "framer",
        "generation",
        "server",
        "server_address",
        "stream",
    )

    def __init__(
        self,
        generation: _Generation,
        base: Base,
        server: Server,
        server_address: tuple[str, int],
        allocation: Allocation,
        stream: int | None = None,
    ) -> None:
        self.generation = generation
        self.base = base
        self.server = server
        self.server_address = server_address
        self.allocation = allocation
        self.done = False
        self.stream = stream  # TCP/TLS: the driver's stream; None over UDP
        self.framer = stun.StreamFramer() if stream is not None else None
        self.backlog: list[bytes] | None = [] if stream is not None else None  # until connected


class _Generation:
    """What one generation (ufrag/pwd) has gathered and still waits for."""

    def __init__(
        self, number: int, credentials: Credentials, transports: int, started: float
    ) -> None:
        self.number = number
        self.credentials = credentials
        self.started = started
        self.bases: list[Base] = []
        self.pending = [0] * transports
        self.state = [GatheringState.NEW] * transports
        self.candidates: list[IceCandidate] = []
        self.addresses: set[tuple[int, int, int, str, int]] = set()
        self.bases_of: dict[str, int] = {}  # candidate string -> its base's key
        self.servers: list[tuple[Server, list[tuple[str, int]]]] = []  # resolved so far
        self.deadline = started
        self.ending = False  # continual gathering: set once the generation may finish


class Gathering:
    """Gathering for a set of transports × components, across generations (ICE restarts)."""

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
        if not transports:
            raise ValueError("at least one transport is needed")
        if not 1 <= components <= 256:
            raise ValueError(f"components must be 1-256, not {components}")
        self.transports = tuple(transports)
        self.components = components
        self.servers = tuple(servers)
        self.relay_only = relay_only
        self.hide_host = hide_host  # RFC 8828 mode 3: no host candidate, no related address
        # Continual gathering: a generation takes in new bases and stays "gathering" until
        # a restart or close ends it (libwebrtc's GATHER_CONTINUALLY).
        self.continual = continual
        self.timing = timing or _DEFAULT_TIMING
        self.rtt = rtt if rtt is not None else RttTable()
        self.nonces = nonces if nonces is not None else NonceCache()
        self.dual_stack_relays = dual_stack_relays
        self._relays: dict[tuple[int, tuple[str, int]] | int, _Relay] = {}
        self._relayed: deque[tuple[Allocation, tuple[str, int], bytes]] = deque()
        self._streams = 0
        self._generation = _Generation(0, credentials, len(self.transports), 0.0)
        self._state = GatheringState.NEW
        self._events: deque[Event] = deque()
        self._commands: deque[Command] = deque()
        self._probes: dict[bytes, _Probe] = {}
        self._resolve_ids = 0
        self._resolving: dict[int, tuple[_Generation, Server]] = {}
        self._closed = False

    # -- what the application sees -------------------------------------------------

    @property
    def state(self) -> GatheringState:
        """RTCPeerConnection.iceGatheringState: aggregated over every transport."""
        return self._state

    def transport_state(self, transport: int) -> GatheringState:
        """RTCIceTransport.gatheringState of one transport, in the current generation."""
        return self._generation.state[transport]

    @property
    def generation(self) -> int:
        return self._generation.number

    @property
    def credentials(self) -> Credentials:
        return self._generation.credentials

    @property
    def candidates(self) -> list[IceCandidate]:
        """The current generation's candidates so far, in the order they were emitted."""
        return list(self._generation.candidates)

    @property
    def bases(self) -> list[Base]:
        return list(self._generation.bases)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def next_command(self) -> Command | None:
        return self._commands.popleft() if self._commands else None

    def get_timer(self) -> float | None:
        """When `handle_timer` next wants to run, or None."""
        timer = math.inf
        for probe in self._probes.values():
            timer = min(timer, probe.transaction.timer)
        for generation, _server in self._resolving.values():
            timer = min(timer, generation.deadline)
        for relay in self._relays.values():
            relay_timer = relay.allocation.get_timer()
            if relay_timer is not None:
                timer = min(timer, relay_timer)
        return None if timer == math.inf else timer

    @property
    def allocations(self) -> list[Allocation]:
        """Live TURN allocations, for a connectivity layer (permissions, channels, data)."""
        return [r.allocation for r in self._relays.values() if r.allocation.state == "allocated"]

    def next_relayed(self) -> tuple[Allocation, tuple[str, int], bytes] | None:
        """Data a peer sent through one of our allocations: (allocation, peer, payload)."""
        return self._relayed.popleft() if self._relayed else None

    def relay_permit(
        self, now: float, allocation: Allocation, peers: Sequence[tuple[str, int]]
    ) -> None:
        """Let these peers' addresses send to (and be sent to through) the allocation."""
        relay = self._relay_of(allocation)
        allocation.create_permission(peers, now)
        self._flush(relay, now)

    def relay_bind_channel(self, now: float, allocation: Allocation, peer: tuple[str, int]) -> None:
        """A channel for one peer: 4 bytes of framing per datagram instead of 36."""
        relay = self._relay_of(allocation)
        channel = 0x4000 + len(allocation.channels)
        if channel > 0x4FFF:
            raise ValueError("no channel numbers left on this allocation")
        allocation.channel_bind(peer, channel, now)
        self._flush(relay, now)

    def relay_send(
        self, now: float, allocation: Allocation, peer: tuple[str, int], data: bytes
    ) -> None:
        """Send `data` to `peer` through the allocation (a permission must be installed)."""
        relay = self._relay_of(allocation)
        wire = allocation.wrap_send(peer, data)
        if relay.stream is None:
            self._commands.append(SendDatagram(relay.base.key, wire, relay.server_address))
        else:
            self._commands.append(StreamSend(relay.stream, wire))

    def _relay_of(self, allocation: Allocation) -> _Relay:
        for relay in self._relays.values():
            if relay.allocation is allocation and allocation.state == "allocated":
                return relay
        raise ValueError("not a live allocation of this gatherer")

    @property
    def closing(self) -> bool:
        """True while TURN allocations are still being released after `close`."""
        return any(r.allocation.state == "closing" for r in self._relays.values())

    # -- API calls -----------------------------------------------------------------

    def start(self, now: float, bases: Sequence[Base], tcp_bases: Sequence[Base] = ()) -> None:
        """Begin gathering the current generation from these bound sockets.

        `tcp_bases` are listening TCP sockets (RFC 6544): each gives a passive host
        candidate on its port and an active one on port 9.
        """
        generation = self._generation
        if self._closed:
            raise RuntimeError("gathering is closed")
        if generation.state[0] is not GatheringState.NEW:
            raise RuntimeError(f"generation {generation.number} has already been gathered")
        for base in bases:
            if not 0 <= base.transport < len(self.transports):
                raise ValueError(f"base {base.key} names unknown transport {base.transport}")
        generation.started = now
        generation.deadline = now + self.timing.server_deadline
        generation.bases = list(bases)
        generation.state = [GatheringState.GATHERING] * len(self.transports)
        self._set_state(GatheringState.GATHERING, now)
        if not (self.relay_only or self.hide_host):
            for base in generation.bases:
                self._add_host(generation, base, now)
            for base in tcp_bases:
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
        for server in self.servers:
            self._resolve_ids += 1
            self._resolving[self._resolve_ids] = (generation, server)
            for transport in range(len(self.transports)):
                generation.pending[transport] += 1
            self._commands.append(Resolve(self._resolve_ids, server.url))
        for transport in range(len(self.transports)):
            self._maybe_finish(generation, transport, now)

    def restart(self, now: float, credentials: Credentials) -> None:
        """ICE restart: a new generation with new credentials; gather it with `start`.

        A generation still gathering is closed out first, with its end-of-candidates,
        ``complete`` and ``null``, so no candidate of it can follow the new one's.
        """
        if self._closed:
            raise RuntimeError("gathering is closed")
        old = self._generation
        self._abandon(old, now)
        self._generation = _Generation(old.number + 1, credentials, len(self.transports), now)
        for relay in list(self._relays.values()):  # keep the previous generation's relays
            if relay.generation.number < old.number:
                relay.allocation.close(now)
                self._flush(relay, now)

    def close(self, now: float) -> None:
        """Stop: pending work is dropped, nothing more is emitted, allocations are released.

        Deallocation (a Refresh with lifetime 0) goes out as commands; `closing` tells
        the driver whether to wait (briefly) for the server's answers.
        """
        self._probes.clear()
        self._resolving.clear()
        self._closed = True
        for relay in list(self._relays.values()):  # _flush drops the closed ones
            relay.allocation.close(now)
            self._flush(relay, now)

    # -- network input -------------------------------------------------------------

    def resolved(self, now: float, request: int, addresses: Sequence[tuple[str, int]]) -> None:
        """DNS (or a literal) gave these (ip, port) addresses for a Resolve command."""
        entry = self._resolving.pop(request, None)
        if entry is None:
            return
        generation, server = entry
        if generation is not self._generation:
            return
        normalized = [(_canonical(host), port) for host, port in addresses]
        generation.servers.append((server, normalized))
        for base in generation.bases:
            self._contact(generation, base, server, normalized, now)
        for transport in range(len(self.transports)):
            self._done(generation, transport, now)

    def _contact(
        self,
        generation: _Generation,
        base: Base,
        server: Server,
        addresses: Sequence[tuple[str, int]],
        now: float,
        deadline: float | None = None,
    ) -> None:
        """Ask one server, at each of its addresses of the base's family, from one base."""
        for server_address in addresses:
            if (":" in server_address[0]) != (base.family == socket.AF_INET6):
                continue
            if server.url.is_turn:
                self._allocate(generation, base, server, server_address, now, deadline)
            else:
                self._send_binding(generation, base, server, server_address, now, deadline)

    def add_bases(self, now: float, bases: Sequence[Base]) -> None:
        """Continual gathering: new sockets (an address appeared) join the current
        generation, with their host candidates and every server already resolved."""
        generation = self._generation
        if (
            not self.continual
            or generation.ending
            or self._closed
            or generation.state[0] is not GatheringState.GATHERING
        ):
            raise RuntimeError("bases can only be added while gathering continually")
        generation.bases.extend(bases)
        for base in bases:
            if not (self.relay_only or self.hide_host):
                self._add_host(generation, base, now)
            for server, addresses in generation.servers:  # a fresh deadline for new work
                deadline = now + self.timing.server_deadline
                self._contact(generation, base, server, addresses, now, deadline)

    def remove_bases(self, now: float, keys: Sequence[int]) -> None:
        """Sockets whose address went away: their candidates are removed (an event each)
        and whatever they still waited for is dropped."""
        generation = self._generation
        gone = set(keys)
        generation.bases = [b for b in generation.bases if b.key not in gone]
        for transaction_id, probe in list(self._probes.items()):
            if probe.base.key in gone:
                del self._probes[transaction_id]
                self._done(probe.generation, probe.base.transport, now)
        for key, relay in list(self._relays.items()):
            if relay.base.key in gone:
                del self._relays[key]
                if relay.stream is not None:
                    self._commands.append(CloseStream(relay.stream))
                if not relay.done:
                    relay.done = True
                    self._done(relay.generation, relay.base.transport, now)
        kept = []
        for candidate in generation.candidates:
            if generation.bases_of.get(candidate.candidate) in gone:
                self._events.append(
                    CandidateRemovedEvent(candidate, generation.number, now - generation.started)
                )
            else:
                kept.append(candidate)
        generation.candidates = kept

    def resolve_failed(self, now: float, request: int, reason: str) -> None:
        entry = self._resolving.pop(request, None)
        if entry is None:
            return
        generation, server = entry
        if generation is not self._generation:
            return
        self._error(generation, server, None, UNREACHABLE, reason, now)
        for transport in range(len(self.transports)):
            self._done(generation, transport, now)

    def receive_datagram(
        self, now: float, base_key: int, data: bytes, source: tuple[str, int]
    ) -> bool:
        """A datagram arrived on a base; True if it was ours (a STUN response we await)."""
        probe = self._probes.get(data[8:20]) if data[4:8] == _COOKIE else None
        if probe is None:
            relay = self._relays.get((base_key, (_normalize(source[0]), source[1])))
            if relay is None:
                return False
            return self._from_relay_server(relay, data, now)
        if probe.base.key != base_key:
            return False
        if probe.server_address != (_normalize(source[0]), source[1]):
            return False  # RFC 8489 §6.3: only the server we asked may answer
        try:
            message = stun.parse(data)
        except stun.StunError:
            return False
        if message.method != stun.Method.BINDING or message.message_class not in (
            stun.MessageClass.SUCCESS,
            stun.MessageClass.ERROR,
        ):
            return False
        del self._probes[message.transaction_id]
        sample = probe.transaction.rtt_sample(now)
        if sample is not None:
            self.rtt.sample(probe.server_address, sample)
        generation = probe.generation
        base = probe.base
        if message.message_class == stun.MessageClass.SUCCESS:
            try:
                mapped = message.xor_mapped_address() or message.mapped_address()
            except stun.StunError:
                mapped = None
            if mapped is None:
                self._error(generation, probe.server, base, 700, "no mapped address", now)
            elif not self.relay_only:
                self._add_srflx(generation, probe, mapped, now)
        else:
            try:
                code, reason = message.error_code() or (600, "error response without a code")
            except stun.StunError:
                code, reason = 600, "malformed ERROR-CODE"
            self._error(generation, probe.server, base, code, reason, now)
        self._done(generation, base.transport, now)
        return True

    def unreachable(self, now: float, base_key: int, address: tuple[str, int]) -> None:
        """ICMP said `address` cannot be reached from this base: fail its work now with a
        701, rather than at the deadline (an ICMP error can be forged, but at worst it
        fails a server early: it can never make a candidate)."""
        address = (_normalize(address[0]), address[1])
        for transaction_id, probe in list(self._probes.items()):
            if probe.base.key == base_key and probe.server_address == address:
                del self._probes[transaction_id]
                text = "STUN server unreachable (ICMP port unreachable)."
                self._error(probe.generation, probe.server, probe.base, UNREACHABLE, text, now)
                self._done(probe.generation, probe.base.transport, now)
        relay = self._relays.get((base_key, address))
        if relay is not None and not relay.done:
            del self._relays[(base_key, address)]
            relay.done = True
            if relay.generation is self._generation and not self._closed:
                text = "TURN server unreachable (ICMP port unreachable)."
                self._error(relay.generation, relay.server, relay.base, UNREACHABLE, text, now)
                self._done(relay.generation, relay.base.transport, now)

    def handle_timer(self, now: float) -> None:
        """Retransmit what is due, and give up on what has reached its deadline."""
        for transaction_id, probe in list(self._probes.items()):
            tx = probe.transaction
            if tx.expired(now):
                del self._probes[transaction_id]
                text = f"STUN binding request timed out after {tx.transmissions} tries."
                self._error(probe.generation, probe.server, probe.base, UNREACHABLE, text, now)
                self._done(probe.generation, probe.base.transport, now)
            else:
                request = tx.retransmit(now)
                if request is not None:
                    self._commands.append(
                        SendDatagram(probe.base.key, request, probe.server_address)
                    )
        for relay in list(self._relays.values()):
            relay_timer = relay.allocation.get_timer()
            if relay_timer is not None and relay_timer <= now:
                relay.allocation.handle_timer(now)
                self._flush(relay, now)
        for resolve_id, (generation, server) in list(self._resolving.items()):
            if now >= generation.deadline:
                text = f"DNS lookup of {server.url.host!r} timed out."
                self.resolve_failed(now, resolve_id, text)

    # -- internals -----------------------------------------------------------------

    def _allocate(
        self,
        generation: _Generation,
        base: Base,
        server: Server,
        server_address: tuple[str, int],
        now: float,
        deadline: float | None = None,
    ) -> None:
        generation.pending[base.transport] += 1
        over_stream = server.url.transport == "tcp"
        allocation = Allocation(
            server_address,
            credentials=TurnCredentials(server.username or "", server.credential or ""),
            deadline=deadline or generation.deadline,
            reliable=over_stream,
            timing=self.timing,
            rtt=self.rtt,
            nonce_cache=self.nonces,
            family=base.family,
            # RFC 8656 §7.1: an IPv6 relay too, from one allocation, where the server can.
            additional_family=self.dual_stack_relays and base.family == socket.AF_INET,
        )
        if over_stream:
            self._streams += 1
            relay = _Relay(generation, base, server, server_address, allocation, self._streams)
            self._relays[self._streams] = relay
            self._commands.append(
                OpenStream(
                    self._streams, base.key, server_address, server.url.secure, server.url.host
                )
            )
        else:
            relay = _Relay(generation, base, server, server_address, allocation)
            previous = self._relays.pop((base.key, server_address), None)
            if previous is not None:  # the same URL twice: one allocation per 5-tuple
                previous.allocation.close(now)
            self._relays[(base.key, server_address)] = relay
        allocation.start(now)
        self._flush(relay, now)

    def stream_connected(self, now: float, stream: int) -> None:
        """The TCP (and TLS) connection of a Open Stream command is up."""
        relay = self._relays.get(stream)
        if relay is None or relay.backlog is None:
            return
        for data in relay.backlog:
            self._commands.append(StreamSend(stream, data))
        relay.backlog = None
        self._flush(relay, now)

    def stream_data(self, now: float, stream: int, data: bytes) -> None:
        relay = self._relays.get(stream)
        if relay is None or relay.framer is None:
            return
        try:
            frames = relay.framer.feed(data)
        except stun.StunError as error:
            self._commands.append(CloseStream(stream))
            self.stream_closed(now, stream, f"the server sent garbage: {error}")
            return
        for frame in frames:
            self._from_relay_server(relay, frame, now)

    def _from_relay_server(self, relay: _Relay, data: bytes, now: float) -> bool:
        """A response for the allocation, or data a peer relayed to us; False if neither
        (a forged or stray datagram, dropped)."""
        taken = relay.allocation.handle_message(data, now)
        if not taken:
            relayed = relay.allocation.unwrap(data)
            if relayed is not None:
                self._relayed.append((relay.allocation, *relayed))
                taken = True
        self._flush(relay, now)
        return taken

    def stream_closed(self, now: float, stream: int, reason: str | None) -> None:
        """The connection failed or ended (refused, reset, TLS failure, EOF)."""
        relay = self._relays.pop(stream, None)
        if relay is None:
            return
        if not relay.done and relay.generation is self._generation and not self._closed:
            text = f"TURN connection failed: {reason or 'closed by the server'}"
            self._error(relay.generation, relay.server, relay.base, UNREACHABLE, text, now)
            relay.done = True
            self._done(relay.generation, relay.base.transport, now)

    def _flush(self, relay: _Relay, now: float) -> None:
        """Send what the allocation wants sent, and turn its events into candidates."""
        allocation = relay.allocation
        while (data := allocation.next_outgoing()) is not None:
            if relay.stream is None:
                self._commands.append(SendDatagram(relay.base.key, data, relay.server_address))
            elif relay.backlog is not None:
                relay.backlog.append(data)
            else:
                self._commands.append(StreamSend(relay.stream, data))
        events = []
        while (event := allocation.next_event()) is not None:
            events.append(event)
        # An extra family's failure comes with the success: report it before the job ends.
        events.sort(key=lambda e: not isinstance(e, AddressFamilyError))
        for event in events:
            if relay.done or self._closed or relay.generation is not self._generation:
                continue
            if isinstance(event, Allocated):
                self._add_relayed(relay, event, now)
            elif isinstance(event, AllocationFailed | AddressFamilyError):
                self._error(
                    relay.generation, relay.server, relay.base, event.code, event.reason, now
                )
                if isinstance(event, AddressFamilyError):
                    continue  # only the extra family failed: the allocation still relays
            else:
                continue
            relay.done = True
            self._done(relay.generation, relay.base.transport, now)
        if allocation.state in ("closed", "failed"):
            if relay.stream is None:
                self._relays.pop((relay.base.key, relay.server_address), None)
            elif self._relays.pop(relay.stream, None) is not None:
                self._commands.append(CloseStream(relay.stream))

    def _add_relayed(self, relay: _Relay, event: Allocated, now: float) -> None:
        """Relay candidates, and the srflx the TURN server saw, as browsers derive both."""
        generation, base = relay.generation, relay.base
        if event.mapped is not None and relay.stream is None and not self.relay_only:
            # Over TCP the mapping is a TCP one: no use as a UDP srflx candidate.
            self._add_candidate(
                generation,
                base,
                "srflx",
                event.mapped[0],
                event.mapped[1],
                now,
                server=relay.server,
                server_address=relay.server_address[0],
            )
        url = relay.server.url
        leg = "tls" if url.secure else url.transport
        for address, port in event.relayed:
            self._add_candidate(
                generation,
                base,
                "relay",
                address,
                port,
                now,
                server=relay.server,
                server_address=f"{relay.server_address[0]}/{leg}",
                type_preference=relay_type_preference(leg),
                related=event.mapped,
            )

    def _send_binding(
        self,
        generation: _Generation,
        base: Base,
        server: Server,
        server_address: tuple[str, int],
        now: float,
        deadline: float | None = None,
    ) -> None:
        transaction_id = stun.new_transaction_id()
        request = stun.encode(stun.Method.BINDING, stun.MessageClass.REQUEST, transaction_id)
        rto = self.rtt.rto(server_address, self.timing)
        tx = StunTransaction(request, now=now, rto=rto, deadline=deadline or generation.deadline)
        self._probes[transaction_id] = _Probe(generation, base, server, server_address, tx)
        generation.pending[base.transport] += 1
        self._commands.append(SendDatagram(base.key, request, server_address))

    def _add_srflx(
        self, generation: _Generation, probe: _Probe, mapped: tuple[str, int], now: float
    ) -> None:
        base = probe.base
        if mapped == (base.address, base.port):
            return  # RFC 8445 §5.1.3: the same as its base (no NAT), so redundant
        self._add_candidate(
            generation,
            base,
            "srflx",
            mapped[0],
            mapped[1],
            now,
            server=probe.server,
            server_address=probe.server_address[0],
        )

    def _add_host(self, generation: _Generation, base: Base, now: float) -> None:
        """The base itself, named by mDNS where it has a name (the address stays private)."""
        self._add_candidate(generation, base, "host", base.name or base.address, base.port, now)

    def _add_candidate(
        self,
        generation: _Generation,
        base: Base,
        kind: str,
        address: str,
        port: int,
        now: float,
        *,
        server: Server | None = None,
        server_address: str | None = None,
        type_preference: int | None = None,
        protocol: str = "udp",
        related: tuple[str, int] | None = None,
        tcptype: str | None = None,
    ) -> None:
        key = (base.transport, base.component, base.key, address, port)
        if key in generation.addresses:
            return  # RFC 8445 §5.1.3: same transport address and base as one we have
        generation.addresses.add(key)
        if type_preference is None:
            type_preference = _TYPE_PREFERENCE[kind]
        slot = 0 if server is None else min(server.index + 1, 15)
        local = local_preference(base.rank, slot)
        if tcptype is not None:  # RFC 6544 §4.2: direction first, then the address's rank
            local = (_TCP_DIRECTION_PREFERENCE[tcptype] << 13) | max(8191 - base.rank, 0)
        has_related = kind != "host"
        if related is None:
            related = (base.address, base.port)
        if has_related and (self.relay_only or self.hide_host or (base.name and kind == "srflx")):
            related = ("0.0.0.0" if base.family == socket.AF_INET else "::", 0)
        candidate = Candidate(  # positional: twice as fast as keywords on a NamedTuple
            compute_foundation(kind, base.address, protocol, server_address),
            base.component,
            protocol,
            compute_priority(type_preference, local, base.component),
            address,
            port,
            kind,
            related[0] if has_related else None,
            related[1] if has_related else None,
            tcptype,
            generation.number,
            generation.credentials.ufrag,
            base.network_id or None,
            None,
            (),
        )
        transport = self.transports[base.transport]
        ice_candidate = IceCandidate(
            candidate.to_sdp(),
            transport.mid,
            transport.mline_index,
            generation.credentials.ufrag,
            candidate,
        )
        generation.candidates.append(ice_candidate)
        generation.bases_of[ice_candidate.candidate] = base.key
        self._events.append(
            IceCandidateEvent(ice_candidate, generation.number, now - generation.started)
        )

    def _error(
        self,
        generation: _Generation,
        server: Server,
        base: Base | None,
        code: int,
        text: str,
        now: float,
    ) -> None:
        self._events.append(
            IceCandidateErrorEvent(
                url=server.url.url,
                address=None if base is None else base.address,
                port=None if base is None else base.port,
                errorCode=code,
                errorText=text,
                generation=generation.number,
                t=now - generation.started,
            )
        )

    def _done(self, generation: _Generation, transport: int, now: float) -> None:
        """One piece of a transport's work finished."""
        generation.pending[transport] -= 1
        self._maybe_finish(generation, transport, now)

    def _maybe_finish(self, generation: _Generation, transport: int, now: float) -> None:
        if (
            (self.continual and not generation.ending)
            or generation.pending[transport] > 0
            or generation.state[transport] is not GatheringState.GATHERING
        ):
            return
        generation.state[transport] = GatheringState.COMPLETE
        self._emit_end_of_candidates(generation, transport, now)
        if all(state is GatheringState.COMPLETE for state in generation.state):
            self._set_state(GatheringState.COMPLETE, now)
            self._events.append(
                IceCandidateEvent(None, generation.number, now - generation.started)
            )

    def _emit_end_of_candidates(self, generation: _Generation, transport: int, now: float) -> None:
        description = self.transports[transport]
        end = IceCandidate(
            "", description.mid, description.mline_index, generation.credentials.ufrag
        )
        self._events.append(IceCandidateEvent(end, generation.number, now - generation.started))

    def _abandon(self, generation: _Generation, now: float) -> None:
        """Close out a generation that is still gathering: its pending work is dropped."""
        generation.ending = True
        for transaction_id in [
            tid for tid, probe in self._probes.items() if probe.generation is generation
        ]:
            del self._probes[transaction_id]
        for request in [r for r, (owner, _) in self._resolving.items() if owner is generation]:
            del self._resolving[request]
        for transport in range(len(self.transports)):
            generation.pending[transport] = 0
            self._maybe_finish(generation, transport, now)

    def _set_state(self, state: GatheringState, now: float) -> None:
        if state is not self._state:
            self._state = state
            generation = self._generation
            self._events.append(
                IceGatheringStateChangeEvent(state, generation.number, now - generation.started)
            )


_COOKIE = stun.MAGIC_COOKIE.to_bytes(4, "big")


@functools.lru_cache(maxsize=1024)
def _canonical(address: str) -> str:
    """One spelling per address, so a response's source compares equal (cached: servers
    are few and every gatherer asks)."""
    return str(ipaddress.ip_address(address))


def _normalize(address: str) -> str:
    return address if "%" not in address else address.split("%", 1)[0]
