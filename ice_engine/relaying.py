"""TURN relays in the gathering core: one allocation per base × TURN server.

The base class of `Gathering`: it shares the core's queues and generations, emits through
`Emitting` as the state machine does, and keeps everything TURN-specific (streams for
TCP/TLS, the relay and srflx candidates an allocation yields, refreshes, deallocation,
the data path) out of the state machine. Where an allocation cannot give the base's
srflx, it asks with a Binding request, which it inherits from `Reflexive`.
"""

from __future__ import annotations

import math
import socket
from collections import deque
from collections.abc import Sequence
from typing import assert_never

from . import stun
from .candidate import relay_type_preference
from .commands import CloseStream, OpenSocket, OpenStream, SendDatagram, StreamSend
from .events import GatheringState
from .model import UNREACHABLE, Base, Generation, Server
from .reflexive import Reflexive
from .turn import (
    AddressFamilyError,
    Allocated,
    Allocation,
    AllocationExpired,
    AllocationFailed,
    BytesLike,
    NonceCache,
    Redirected,
    Refreshed,
    RequestFailed,
    TurnCredentials,
    TurnEvent,
)
from .urls import UnusableAddress, answered_address, hostport

#: 300 Try Alternate redirects followed per allocation: load balancers send one, and a
#: bound stops two servers sending a client back and forth.
_MAX_REDIRECTS = 2
#: RFC 8656 §7.3: after a 437, try two more client transport addresses, three in all.
_MAX_MOVES = 2
_ALLOCATION_MISMATCH = 437

__all__ = ["Relay", "Relaying"]


def _udp_key(base: Base) -> int:
    """The socket an allocation over UDP talks through: a shared port's base has its own."""
    return base.key if base.relay_key is None else base.relay_key


class Relay:
    """A TURN allocation from one base to one server address (relay, and srflx too)."""

    __slots__ = (
        "allocation",
        "also",
        "answered",
        "backlog",
        "base",
        "failure",
        "fallbacks",
        "framer",
        "generation",
        "key",
        "moves",
        "port",
        "server",
        "server_address",
        "settled",
        "stream",
        "tried",
        "until",
    )

    def __init__(
        self,
        generation: Generation,
        base: Base,
        server: Server,
        server_address: tuple[str, int],
        allocation: Allocation,
        stream: int | None = None,
        key: int | None = None,
        port: int | None = None,
    ) -> None:
        self.generation = generation
        self.base = base
        # The socket it talks through: a shared port's base allocates from its own one,
        # and after a 437 (`moves`) the allocation moves to another socket of the base's.
        self.key = key if key is not None else base.key if stream is not None else _udp_key(base)
        self.server = server
        self.server_address = server_address
        self.allocation = allocation
        self.settled = False  # its part in the gathering is over (`_settle`)
        self.stream = stream  # TCP/TLS: the driver's stream; None over UDP
        self.framer = stun.StreamFramer() if stream is not None else None
        self.backlog: list[bytes] | None = [] if stream is not None else None  # until connected
        self.tried: tuple[tuple[str, int], ...] = ()  # servers that redirected it here
        # Until the server answers here: the other addresses of each URL waiting on it,
        # to try in turn should it never answer (`_fall_back`), and the whole deadline,
        # which it gets if it answers.
        self.answered = False
        self.fallbacks: list[tuple[Server, tuple[tuple[str, int], ...]]] | None = None
        self.until = allocation.deadline
        self.also: list[Server] | None = None  # other URLs for the same server, sharing it
        self.failure: tuple[int, str] | None = None  # why it will not relay, once it won't
        self.moves = 0
        # The local port it talks to the server from, named in its errors: the base's,
        # another socket's after a 437, a TCP connection's once it is up; None where the
        # core is not told (before the connection, a shared port's private socket).
        self.port = port
        if key is None and stream is None and base.relay_key is None:
            self.port = base.port

    @property
    def servers(self) -> tuple[Server, ...]:
        """The URLs it stands for: its own, and those that share its allocation."""
        return (self.server, *self.also) if self.also else (self.server,)


class Relaying(Reflexive):
    """The TURN part of the gathering core (see the module docstring)."""

    __slots__ = (
        "_last_socket_request",
        "_last_stream",
        "_moving",
        "_relay_failures",
        "_relayed",
        "_relays",
    )
    # Gathering's, shared with its relays.
    nonces: NonceCache
    dual_stack_relays: bool

    def __init__(self) -> None:
        super().__init__()
        # UDP relays by (socket key, server address), those over TCP/TLS by stream number.
        self._relays: dict[tuple[int, tuple[str, int]] | int, Relay] = {}
        self._moving: dict[int, Relay] | None = None  # waiting for another socket after a 437
        self._last_socket_request = 0  # the number of the last OpenSocket asked for
        self._last_stream = 0  # the number of the last OpenStream asked for
        self._relayed: deque[tuple[Allocation, tuple[str, int], bytes]] | None = None
        self._relay_failures: deque[tuple[Allocation, RequestFailed]] | None = None

    # -- what the state machine asks of its relays -------------------------------------

    def _relay_timer(self) -> float:
        timer = math.inf  # a plain loop: get_timer runs after every datagram and tick
        for relay in self._relays.values():
            relay_timer = relay.allocation.get_timer()
            if relay_timer is not None and relay_timer < timer:
                timer = relay_timer
        if self._moving:
            for relay in self._moving.values():
                timer = min(timer, relay.allocation.deadline)
        return timer

    def _relays_on_timer(self, now: float) -> None:
        for relay in list(self._relays.values()):
            relay_timer = relay.allocation.get_timer()
            if relay_timer is not None and relay_timer <= now:
                relay.allocation.handle_timer(now)
                self._flush(relay, now)
        if self._moving:  # a driver that never answers an OpenSocket holds up nothing
            for request, relay in list(self._moving.items()):
                if now >= relay.allocation.deadline:
                    self.socket_failed(now, request, "no other socket came in time")

    def _close_relays(self, now: float, everything: bool = True) -> None:
        """Deallocate every relay, or those of the generations no longer kept (`keeps`)."""
        for relay in list(self._relays.values()):  # _flush drops the closed ones
            if everything or not self.keeps(relay.generation.number):
                self._deallocate_relay(relay, now)

    def keeps(self, number: int) -> bool:
        """Gathering's: whether generation `number`'s relays stay."""
        raise NotImplementedError

    def _deallocate_unsettled(self, generation: Generation, now: float) -> None:
        """A restart retired the generation: allocations still in flight are released,
        not kept (and refreshed) for candidates nobody will see."""
        for relay in list(self._relays.values()):
            if relay.generation is generation and not relay.settled:
                self._deallocate_relay(relay, now)

    def _deallocate_relay(self, relay: Relay, now: float) -> None:
        """Deallocate a relay. One whose connection is not up yet has sent nothing, so
        the server holds nothing: it ends at once rather than wait out `CLOSE_TIMEOUT`."""
        relay.allocation.close(now)
        if relay.backlog is not None:
            relay.allocation.abandon()
        self._flush(relay, now)

    def _drop_relays(self, gone: set[int], now: float) -> None:
        """Bases that went away: their relays go too (the driver closes their sockets)."""
        for key, relay in list(self._relays.items()):
            if relay.base.key in gone or relay.key in gone:
                del self._relays[key]
                if relay.stream is not None:
                    self._commands.append(CloseStream(relay.stream))
                if not relay.settled:
                    self._settle(relay, now)
        if self._moving:  # and those waiting for another socket of theirs (a 437)
            for request, relay in list(self._moving.items()):
                if relay.base.key in gone:
                    del self._moving[request]
                    if not relay.settled:
                        self._settle(relay, now)

    def _relay_datagram(
        self, now: float, base_key: int, data: bytes, source: tuple[str, int]
    ) -> bool:
        relay = self._relays.get((base_key, source))
        return relay is not None and self._from_relay_server(relay, data, now)

    def _relay_unreachable(
        self, now: float, base_key: int, address: tuple[str, int], cause: str
    ) -> None:
        relay = self._relays.get((base_key, address))
        if relay is None:
            return
        if relay.settled:
            if relay.allocation.state == "closing":
                # Its deallocation bounced too: the port is closed, nothing is held there.
                relay.allocation.abandon()
                self._flush(relay, now)
            return
        if relay.generation.retired or self._closed:
            relay.settled = True  # not `_settle`: nothing is counted for it any more
        else:
            self._fail(relay, UNREACHABLE, f"TURN server unreachable ({cause}).", now)
        # An ICMP error may be forged or transient, and a signed Allocate in flight may
        # have been granted: released as close() releases it (an unsigned one is dropped).
        self._deallocate_relay(relay, now)

    # -- the relays' own API and work --------------------------------------------------

    @property
    def allocations(self) -> list[Allocation]:
        """Live TURN allocations, for a connectivity layer (permissions, channels, data).
        A generation gathered ahead (pooled) shows its own once `gather()` takes it, as it
        does its candidates."""
        return [
            r.allocation
            for r in self._relays.values()
            if r.allocation.state == "allocated" and r.generation.held is None
        ]

    def allocation_for(self, relayed: tuple[str, int]) -> Allocation | None:
        """The live allocation that relays through this address, if any."""
        for relay in self._relays.values():
            allocation = relay.allocation
            if allocation.state == "allocated" and relayed in allocation.relayed:
                return allocation
        return None

    def next_relayed(self) -> tuple[Allocation, tuple[str, int], bytes] | None:
        """Data a peer sent through one of our allocations: (allocation, peer, payload)."""
        return self._relayed.popleft() if self._relayed else None

    def next_relay_failure(self) -> tuple[Allocation, RequestFailed] | None:
        """A permission or channel of one of our allocations that the server refused
        (a 403 for a peer its policy forbids, say) or never confirmed."""
        return self._relay_failures.popleft() if self._relay_failures else None

    def relay_permit(
        self, now: float, allocation: Allocation, peers: Sequence[tuple[str, int]]
    ) -> None:
        """Let these peers' addresses send to (and be sent to through) the allocation."""
        relay = self._relay_of(allocation)
        allocation.create_permission(peers, now)
        self._flush(relay, now)

    def relay_bind_channel(self, now: float, allocation: Allocation, peer: tuple[str, int]) -> None:
        """A channel for one peer: 4 bytes of framing per datagram instead of a Send
        indication's 44 (IPv4 peer) or 56 (IPv6)."""
        relay = self._relay_of(allocation)
        allocation.channel_bind(peer, allocation.channel_for(peer), now)
        self._flush(relay, now)

    def relay_send(
        self,
        now: float,
        allocation: Allocation,
        peer: tuple[str, int],
        data: BytesLike,
        permit: bool = False,
    ) -> None:
        """Send `data` to `peer` through the allocation: a permission must be installed,
        or with `permit`, is asked for first (`Allocation.permit_on_first_use`). Data
        too large to relay raises ValueError before anything is asked."""
        relay = self._relay_of(allocation)
        wire = allocation.wrap_send(peer, data)
        if permit:
            allocation.permit_on_first_use(peer, now)
            self._flush(relay, now)
        if relay.stream is None:
            self._commands.append(SendDatagram(relay.key, wire, relay.server_address))
        else:
            self._commands.append(StreamSend(relay.stream, wire))

    def _relay_of(self, allocation: Allocation) -> Relay:
        for relay in self._relays.values():
            if relay.allocation is allocation and allocation.state == "allocated":
                return relay
        raise ValueError("not a live allocation of this gatherer")

    @property
    def closing(self) -> bool:
        """True while TURN allocations are still being released (after `close`, a
        restart, or a failure the server may not have seen): a driver's close waits on it."""
        return any(r.allocation.state == "closing" for r in self._relays.values())

    @property
    def closing_keys(self) -> set[int]:
        """The sockets of allocations still being released (see `closing`): a driver
        closes them only once they are not, or the server's answer, or a late Allocate's
        success to deallocate in turn, could not be heard."""
        return {r.key for r in self._relays.values() if r.allocation.state == "closing"}

    def _allocate(
        self,
        generation: Generation,
        base: Base,
        server: Server,
        server_address: tuple[str, int],
        now: float,
        deadline: float | None = None,
        key: int | None = None,
        port: int | None = None,
    ) -> Relay:
        """One allocation per 5-tuple: the same server twice (two URLs for one address)
        shares the first one's allocation and candidates."""
        over_stream = server.url.transport == "tcp"
        if not over_stream:
            existing = self._relays.get((_udp_key(base) if key is None else key, server_address))
            if existing is not None:
                if existing.server is not server and existing.failure is not None:
                    code, text = existing.failure  # too late to wait on it: told at once
                    self._error(generation, server, base, existing.port, code, text, now)
                elif existing.server is not server:  # it waits on this allocation too
                    existing.also = [*(existing.also or ()), server]
                return existing
        generation.pending[base.transport] += 1
        allocation = Allocation(
            server_address,
            credentials=TurnCredentials(server.username or "", server.credential or ""),
            deadline=generation.deadline if deadline is None else deadline,
            reliable=over_stream,
            timing=self.timing,
            rtt=self.rtt,
            nonce_cache=self.nonces,
            family=base.family,
            # RFC 8656 §7.1: an IPv6 relay too, from one allocation, where the server can.
            additional_family=self.dual_stack_relays and base.family == socket.AF_INET,
        )
        if over_stream:
            self._last_stream += 1
            relay = Relay(generation, base, server, server_address, allocation, self._last_stream)
            self._relays[self._last_stream] = relay
            self._commands.append(
                OpenStream(
                    self._last_stream, base.key, server_address, server.url.secure, server.url.host
                )
            )
        else:
            relay = Relay(generation, base, server, server_address, allocation, key=key, port=port)
            self._relays[(relay.key, server_address)] = relay
        allocation.start(now)
        self._flush(relay, now)
        return relay

    def _redirect(self, relay: Relay, alternate: tuple[str, int], now: float) -> None:
        """Allocate at the alternate server, from the base's socket (a new 5-tuple even
        for a relay moved by a 437), with the same credentials and deadline; the relay
        being replaced is then settled. Or say why not, as an error."""
        tried = (*relay.tried, relay.server_address)
        unusable: str | None = None
        try:
            alternate = answered_address(alternate)
        except UnusableAddress as error:  # never sent to 0.0.0.0 or a multicast group
            alternate, unusable = error.address, f"which {error.flaw}"
        family_ok = (":" in alternate[0]) == (relay.base.family == socket.AF_INET6)
        if unusable is not None:
            why = unusable
        elif not family_ok:
            why = "another address family"
        elif alternate in tried:
            why = "a redirect loop"
        elif len(tried) > _MAX_REDIRECTS:
            why = f"more than {_MAX_REDIRECTS} redirects"
        elif relay.stream is None and (_udp_key(relay.base), alternate) in self._relays:
            why = "an allocation there already"
        else:
            successor = self._allocate(
                relay.generation,
                relay.base,
                relay.server,
                alternate,
                now,
                relay.allocation.deadline,
            )
            successor.tried = tried
            successor.also = relay.also
            return
        text = f"TURN allocate failed: 300 Try Alternate to {hostport(*alternate)}, {why}"
        for server in relay.servers:
            self._error(relay.generation, server, relay.base, relay.port, 300, text, now)

    def _allocate_in_turn(
        self,
        generation: Generation,
        base: Base,
        server: Server,
        addresses: Sequence[tuple[str, int]],
        now: float,
        deadline: float | None = None,
    ) -> None:
        """One allocation per server and base, at the first of its addresses (SRV
        priority, then DNS order), or another URL's there (`_allocate`) if it goes on as
        this one would (`_may_wait_on`): the others wait their turn, should it never
        answer (`_fall_back`). Until one answers, each gets its `_share` of the deadline.
        """
        until = generation.deadline if deadline is None else deadline
        first, *rest = addresses  # each once already (`Gathering._use`)
        if rest and server.url.transport != "tcp":  # streams are never shared
            key = _udp_key(base)
            while rest and not _may_wait_on(self._relays.get((key, first)), rest):
                first, *rest = rest  # another URL's there, which would not go on as we would
        share = self._share(now, until, len(rest))
        relay = self._allocate(generation, base, server, first, now, share)
        if rest and not relay.answered and not relay.settled:
            if relay.fallbacks is None:
                relay.fallbacks, relay.until = [], until
            relay.fallbacks.append((server, tuple(rest)))

    def _fall_back(self, relay: Relay, now: float) -> list[Server]:
        """The relay's server address never answered: each URL waiting on it that has
        another address goes on there; those URLs."""
        fallbacks, relay.fallbacks = relay.fallbacks, None
        if not fallbacks or self._closed or relay.generation.retired:
            return []
        for server, rest in fallbacks:
            self._allocate_in_turn(relay.generation, relay.base, server, rest, now, relay.until)
        return [server for server, _ in fallbacks]

    def _move(self, relay: Relay, code: int, now: float) -> bool:
        """RFC 8656 §7.3: a 437 says the server holds an allocation for this 5-tuple, a
        crashed client's behind the same NAT mapping, say, or one of ours on a port freed
        too recently. Ask for another socket to allocate from, up to three in all; and,
        since a relay's srflx comes from its own socket, ask for the base's srflx with a
        Binding request. False if it is not a 437 to move away from."""
        if code != _ALLOCATION_MISMATCH or relay.stream is not None or relay.moves >= _MAX_MOVES:
            return False
        if self._moving is None:
            self._moving = {}
        # Never a number used before: an answer that comes after its request gave up
        # (socket_failed at the deadline) must not be taken for a newer one's.
        self._last_socket_request += 1
        request = self._last_socket_request
        self._moving[request] = relay
        self._commands.append(OpenSocket(request, relay.key))
        if relay.key == relay.base.key and not self.relay_only:
            self._ask_srflx(relay, now)
        return True

    def socket_opened(self, now: float, request: int, key: int, port: int | None = None) -> None:
        """The socket an `OpenSocket` asked for, and its local port: allocate from it, as
        the relay it replaces would have."""
        relay = self._moving.pop(request, None) if self._moving else None
        if relay is None or self._closed or relay.generation.retired:
            return
        successor = self._allocate(
            relay.generation,
            relay.base,
            relay.server,
            relay.server_address,
            now,
            relay.allocation.deadline,
            key=key,
            port=port,
        )
        successor.tried = relay.tried
        successor.also = relay.also
        successor.moves = relay.moves + 1
        self._settle(relay, now)

    def socket_failed(self, now: float, request: int, reason: str) -> None:
        """No other socket could be opened for a relay that got a 437."""
        relay = self._moving.pop(request, None) if self._moving else None
        if relay is None or self._closed or relay.generation.retired:
            return
        text = f"TURN allocate failed: 437 Allocation Mismatch, and {reason}"
        self._fail(relay, _ALLOCATION_MISMATCH, text, now)

    def stream_connected(self, now: float, stream: int, port: int | None = None) -> None:
        """The TCP (and TLS) connection of an OpenStream command is up, from this local
        port."""
        relay = self._relays.get(stream)
        if relay is None or relay.backlog is None:
            return
        relay.port = port
        self._answered(relay)  # the server is there: no need of its other addresses
        for data in relay.backlog:
            self._commands.append(StreamSend(stream, data))
        relay.backlog = None
        self._flush(relay, now)

    @staticmethod
    def _answered(relay: Relay) -> None:
        """The server answers at this address: it gets the server's whole deadline, and
        the other addresses are not tried."""
        relay.answered = True
        if relay.fallbacks is not None:
            relay.fallbacks = None
            relay.allocation.extend_deadline(relay.until)

    def stream_data(self, now: float, stream: int, data: bytes) -> None:
        """Bytes that arrived on an OpenStream's connection (decrypted, for TLS), cut
        anywhere: the answers are framed from them here."""
        relay = self._relays.get(stream)
        if relay is None or relay.framer is None:
            return
        framer = relay.framer
        for frame in framer.feed(data):  # those before any garbage, however TCP cut it
            self._from_relay_server(relay, frame, now)
        if framer.error is not None and self._relays.get(stream) is relay:
            self._commands.append(CloseStream(stream))
            self.stream_closed(now, stream, f"the server sent garbage: {framer.error}")

    def _from_relay_server(self, relay: Relay, data: bytes, now: float) -> bool:
        """A response for the allocation, or data a peer relayed to us; False if neither
        (a forged or stray datagram, dropped)."""
        taken = relay.allocation.handle_message(data, now)
        if taken:
            self._answered(relay)
        else:
            relayed = relay.allocation.unwrap(data)
            if relayed is not None:
                if self._relayed is None:
                    self._relayed = deque()
                self._relayed.append((relay.allocation, *relayed))
                taken = True
        self._flush(relay, now)
        return taken

    def stream_closed(self, now: float, stream: int, reason: str | None) -> None:
        """The connection failed or ended (refused, reset, TLS failure, EOF)."""
        relay = self._relays.pop(stream, None)
        if relay is None:
            return
        if not relay.settled and not relay.generation.retired and not self._closed:
            text = f"TURN connection failed: {reason or 'closed by the server'}"
            self._fail(relay, UNREACHABLE, text, now)
        elif relay.settled:  # the server deletes a TCP allocation with its connection
            self._relay_lost(relay, now)

    def _relay_lost(self, relay: Relay, now: float) -> None:
        """An allocation that had relayed is gone (a refresh failed, it lapsed, or its
        connection closed): its relay candidates go with it, announced while the
        transport still gathers (always, gathering continually). The srflx stays: it
        belongs to the base's socket, not to the allocation."""
        generation = relay.generation
        if self._closed or generation.retired:
            return
        relayed = relay.allocation.relayed
        lost = [
            c
            for c in generation.candidates
            if c.type == "relay"
            and generation.bases_of.get((c.sdpMid, c.candidate)) == relay.base.key
            and (c.address, c.port) in relayed
        ]
        gathering = generation.state[relay.base.transport] is GatheringState.GATHERING
        self._remove_candidates(generation, lost, now, announce=gathering)

    def _flush(self, relay: Relay, now: float) -> None:
        """Send what the allocation wants sent, and turn its events into candidates."""
        allocation = relay.allocation
        while (data := allocation.next_outgoing()) is not None:
            if relay.stream is None:
                self._commands.append(SendDatagram(relay.key, data, relay.server_address))
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
            self._on_turn_event(relay, event, now)
        if allocation.state in ("closed", "failed"):
            if relay.stream is None:
                self._relays.pop((relay.key, relay.server_address), None)
            elif self._relays.pop(relay.stream, None) is not None:
                self._commands.append(CloseStream(relay.stream))

    def _on_turn_event(self, relay: Relay, event: TurnEvent, now: float) -> None:
        if isinstance(event, AllocationExpired):
            self._relay_lost(relay, now)
        elif isinstance(event, RequestFailed):  # the data path's, for the application
            if not self._closed:
                if self._relay_failures is None:
                    self._relay_failures = deque()
                self._relay_failures.append((relay.allocation, event))
        elif isinstance(event, Refreshed):
            return  # nothing to tell: the relay lives on
        elif relay.settled or self._closed or relay.generation.retired:
            return
        elif isinstance(event, Allocated):
            self._add_relayed(relay, event, now)
            self._settle(relay, now)
        elif isinstance(event, Redirected):
            self._srflx_instead(relay, 300, now)
            self._redirect(relay, event.alternate, now)
            self._settle(relay, now)
        elif isinstance(event, AddressFamilyError):  # the allocation still relays
            for server in relay.servers:
                self._error(
                    relay.generation, server, relay.base, relay.port, event.code, event.reason, now
                )
        elif isinstance(event, AllocationFailed):
            if self._move(relay, event.code, now):
                return  # settled once another socket is open (socket_opened) or not
            self._srflx_instead(relay, event.code, now)
            # Past the deadline with the connection still being made, it never left.
            reason = event.reason if relay.backlog is None else _unconnected(relay)
            if relay.tried:  # else a timeout at the alternate reads as the URL's server's
                there, sender = hostport(*relay.server_address), hostport(*relay.tried[-1])
                reason = f"{reason.rstrip('.')} at {there} (300 Try Alternate from {sender})."
            self._fail(relay, event.code, reason, now)
        else:
            assert_never(event)

    def _srflx_instead(self, relay: Relay, code: int, now: float) -> None:
        """The allocation here will not relay, but if the server answered (a refusal, a
        redirect) the srflx it would have carried can still be had, as a browser has it
        (it asks each UDP TURN server for a Binding). A redirect asks at once: the
        alternate may never answer."""
        if code != UNREACHABLE and _on_its_base(relay) and not self.relay_only:
            self._ask_srflx(relay, now)

    def _settle(self, relay: Relay, now: float) -> None:
        """The relay's part in its transport's gathering is over: it relays, failed, or
        handed over to a successor (`settled`, though it may live for hours)."""
        relay.settled = True
        self._done(relay.generation, relay.base.transport, now)

    def _fail(self, relay: Relay, code: int, text: str, now: float) -> None:
        """The relay will not relay: told as an error to each URL waiting on it, but for
        those tried at another address (`_fall_back`)."""
        relay.failure = (code, text)
        going_on = self._fall_back(relay, now)
        for server in relay.servers:
            if server not in going_on:
                self._error(relay.generation, server, relay.base, relay.port, code, text, now)
        self._settle(relay, now)

    def _add_relayed(self, relay: Relay, event: Allocated, now: float) -> None:
        """Relay candidates, and the srflx the TURN server saw (a browser asks the server
        for a Binding too: see docs/architecture.md)."""
        generation, base = relay.generation, relay.base
        if event.mapped is not None and _on_its_base(relay) and not self.relay_only:
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
                relay_protocol=leg,
            )


def _may_wait_on(holder: Relay | None, rest: list[tuple[str, int]]) -> bool:
    """Whether a URL may wait on `holder`, another URL's allocation at its address,
    rather than go past it: there is none, it relays or answered, or, should it never
    answer, it goes on to the same next addresses (`rest`) as the URL would."""
    if holder is None or holder.allocation.state == "allocated":
        return True
    if holder.settled:
        return False
    chain = tuple(rest)
    return holder.answered or any(other == chain for _, other in holder.fallbacks or ())


def _on_its_base(relay: Relay) -> bool:
    """Whether the relay allocates over UDP from its base's own socket: then the server
    sees the base's srflx (over TCP it sees a TCP mapping; a shared port's relay, or one
    moved after a 437, has a socket of its own)."""
    return relay.stream is None and relay.key == relay.base.key


def _unconnected(relay: Relay) -> str:
    """A TCP/TLS relay's failure while its connection was still being made: the
    allocate request never left, so it did not time out."""
    if relay.server.url.secure:
        return "TURN connection failed: the TCP connection or TLS handshake did not complete."
    return "TURN connection failed: the TCP connection did not complete."
