"""Candidates and events into a generation's stream, in the browser's order.

The part of the sans-I/O core that the state machine (`Gathering`), its TURN relays
(`Relaying`) and its Binding requests (`Reflexive`) all emit through. A new candidate
is deduplicated, ranked (priority and foundation) and queued as an `icecandidate` event;
a failed server becomes an `icecandidateerror`; and once a transport's last piece of
work is done it ends with `""`, then the generation with ``complete`` and ``null``.
"""

from __future__ import annotations

import socket
from collections import deque
from typing import Final

from .candidate import TYPE_PREFERENCES, Candidate, compute_foundation, compute_priority
from .events import (
    CandidateRemovedEvent,
    Event,
    GatheringState,
    IceCandidate,
    IceCandidateErrorEvent,
    IceCandidateEvent,
    IceGatheringStateChangeEvent,
)
from .model import Base, Generation, Server, Transport, local_preference

__all__ = ["Emitting"]

#: RFC 6544 §4.2 direction preferences for host candidates.
_TCP_DIRECTION_PREFERENCE = {"active": 6, "passive": 4, "so": 2}
_new: Final = tuple.__new__


def _unique_priority(generation: Generation, base: Base, priority: int) -> int:
    """RFC 8445 §5.1.2.1: a priority unique within a component of a transport (the
    component is its low byte, the transport is keyed above its 32 bits). Two relays of
    a dual-stack allocation, or one server's two addresses, share a local preference:
    the later one takes the next free one below."""
    taken, transport_key = generation.priorities, base.transport << 32
    while transport_key | priority in taken:
        priority -= 256
    taken[transport_key | priority] = None
    return priority


class Emitting:
    """Base of the core's classes: the events, and the candidates they carry."""

    __slots__ = ("_events", "_state")
    # Gathering's, which the candidates depend on.
    transports: tuple[Transport, ...]
    relay_only: bool
    hide_host: bool
    continual: bool
    _closed: bool

    def __init__(self) -> None:
        self._events: deque[Event] = deque()  # for the application
        self._state = GatheringState.NEW  # the aggregate, as the application sees it

    def _add_candidate(
        self,
        generation: Generation,
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
        relay_protocol: str | None = None,
    ) -> None:
        key = (base.key, address, port)  # a base belongs to one transport and component
        if key in generation.addresses:
            return  # RFC 8445 §5.1.3: same transport address and base as one we have
        generation.addresses[key] = None
        if type_preference is None:
            type_preference = TYPE_PREFERENCES[kind]
        if tcptype is not None:  # RFC 6544 §4.2: direction first, then the address's rank
            local = (_TCP_DIRECTION_PREFERENCE[tcptype] << 13) | max(8191 - base.rank, 0)
        else:
            local = local_preference(base.rank, 0 if server is None else min(server.index + 1, 15))
        related_address, related_port = self._related(base, kind, related)
        priority = _unique_priority(
            generation, base, compute_priority(type_preference, local, base.component)
        )
        ufrag = generation.credentials.ufrag
        candidate = _new(  # Candidate's own __new__ is interpreted: twice as slow
            Candidate,
            (
                compute_foundation(kind, base.address, protocol, server_address),
                base.component,
                protocol,
                priority,
                address,
                port,
                kind,
                related_address,
                related_port,
                tcptype,
                generation.number,
                ufrag,
                base.network_id or None,
                None,
                (),
            ),
        )
        transport = self.transports[base.transport]
        line = candidate.to_sdp()
        url = None if server is None else server.url.url
        ice_candidate = IceCandidate(
            line,
            transport.mid,
            transport.mline_index,
            ufrag,
            candidate,
            (base.address, base.port) if kind != "relay" and protocol == "udp" else None,
            url,
            relay_protocol,
        )
        generation.candidates.append(ice_candidate)
        generation.bases_of[transport.mid, line] = base.key
        self._emit(
            generation,
            IceCandidateEvent(
                ice_candidate,
                generation.number,
                now - generation.started_at,
                url,
            ),
        )

    def _related(
        self, base: Base, kind: str, related: tuple[str, int] | None
    ) -> tuple[str | None, int | None]:
        """The candidate's raddr and rport: none for a host candidate; the unspecified
        address where they would show what is hidden (relay-only or RFC 8828 mode 3, or
        a base hidden behind an mDNS name); else the base, or what the server said."""
        if kind == "host":
            return None, None
        if (
            self.relay_only
            or self.hide_host
            or (base.name and (kind == "srflx" or related is None))
        ):
            return "0.0.0.0" if base.family == socket.AF_INET else "::", 0
        return (base.address, base.port) if related is None else related

    def _remove_candidates(
        self, generation: Generation, gone: list[IceCandidate], now: float, announce: bool
    ) -> None:
        """Candidates that can no longer be used leave the generation; with `announce`,
        each with a `candidateremoved` (after completion the stream has ended: no event).
        A pooled generation's events are not out yet: there they are withdrawn instead."""
        doomed = {id(candidate) for candidate in gone}
        generation.candidates = [c for c in generation.candidates if id(c) not in doomed]
        if generation.held is not None:
            generation.held = [
                e
                for e in generation.held
                if not (isinstance(e, IceCandidateEvent) and id(e.candidate) in doomed)
            ]
            announce = False
        for candidate in gone:
            key = generation.bases_of.pop((candidate.sdpMid, candidate.candidate), None)
            described = candidate.parsed
            if key is not None and described is not None:
                generation.addresses.pop((key, described.address, described.port), None)
            if announce:
                removed = CandidateRemovedEvent(
                    candidate, generation.number, now - generation.started_at
                )
                self._emit(generation, removed)

    def _error(
        self,
        generation: Generation,
        server: Server,
        base: Base | None,
        port: int | None,
        code: int,
        text: str,
        now: float,
    ) -> None:
        """An icecandidateerror: `server` failed for `base`, asked from its `port` (None:
        no base was involved, as in a DNS failure). As the W3C says, the address (and the
        port with it) is null where no candidate has shown it: relay-only, mDNS names,
        RFC 8828 mode 3."""
        shown = base is not None and self._shows_address(base)
        self._emit(
            generation,
            IceCandidateErrorEvent(
                url=server.url.url,
                address=base.address if shown and base is not None else None,
                port=port if shown else None,
                errorCode=code,
                errorText=text,
                generation=generation.number,
                t=now - generation.started_at,
            ),
        )

    def _shows_address(self, base: Base) -> bool:
        """Whether the base's host candidate shows its address to the remote peer."""
        return not (self.relay_only or self.hide_host or base.name)

    def _done(self, generation: Generation, transport: int, now: float) -> None:
        """One piece of a transport's work finished (see `Generation.pending`)."""
        assert generation.pending[transport] > 0, "a piece of work given back twice"
        generation.pending[transport] -= 1
        self._maybe_finish(generation, transport, now)

    def _maybe_finish(self, generation: Generation, transport: int, now: float) -> None:
        if (
            self._closed  # what close() dropped never completes
            or (self.continual and not generation.retired)
            or generation.pending[transport] > 0
            or generation.state[transport] is not GatheringState.GATHERING
        ):
            return
        generation.state[transport] = GatheringState.COMPLETE
        self._emit_end_of_candidates(generation, transport, now)
        if all(state is GatheringState.COMPLETE for state in generation.state):
            self._set_state(generation, GatheringState.COMPLETE, now)
            self._emit(
                generation, IceCandidateEvent(None, generation.number, now - generation.started_at)
            )

    def _emit_end_of_candidates(self, generation: Generation, transport: int, now: float) -> None:
        description = self.transports[transport]
        end = IceCandidate(
            "", description.mid, description.mline_index, generation.credentials.ufrag
        )
        self._emit(
            generation, IceCandidateEvent(end, generation.number, now - generation.started_at)
        )

    def _set_state(self, generation: Generation, state: GatheringState, now: float) -> None:
        if state is not generation.aggregate:
            generation.aggregate = state
            if generation.held is None:
                self._state = state
            self._emit(
                generation,
                IceGatheringStateChangeEvent(state, generation.number, now - generation.started_at),
            )

    def _emit(self, generation: Generation, event: Event) -> None:
        """Queue an event for the application, or hold it while its generation is pooled;
        none once closed (a browser fires nothing after close())."""
        if self._closed:
            return
        if generation.held is None:
            self._events.append(event)
        else:
            generation.held.append(event)
