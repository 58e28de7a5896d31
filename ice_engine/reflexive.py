"""Server-reflexive discovery: STUN Binding requests from the bases (RFC 8445 §5.1.1.2).

A layer of its own, between `Emitting` and `Relaying`, because both the state machine
and TURN ask for a base's srflx: `Gathering` of each STUN server (and of each UDP TURN
server from a shared port's base, whose allocation talks from a socket of its own),
`Relaying` of a TURN server whose allocation cannot carry it (a refusal, a redirect, a
437). Here
are the Binding transactions (one per base × server address, a server's addresses tried
in turn), what makes an answer trusted, and the srflx or error it gives.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import stun
from .commands import Command, SendDatagram
from .emitting import Emitting
from .model import UNREACHABLE, Base, Generation, Server
from .transaction import RttTable, StunTransaction, Timing
from .urls import UnusableAddress, answered_address

if TYPE_CHECKING:
    from .relaying import Relay

__all__ = ["Reflexive"]

_COOKIE = stun.MAGIC_COOKIE.to_bytes(4, "big")


def without_zone(address: str) -> str:
    """The address without its %zone: servers' answers and ICMP errors are compared
    with the addresses we asked, which have none."""
    return address if "%" not in address else address.split("%", 1)[0]


class _Probe(StunTransaction):
    """A Binding request from one base to one server address (srflx discovery).

    The transaction itself, with what it is for: one object per request, not two.
    """

    __slots__ = ("base", "generation", "quiet", "rest", "server", "server_address", "until")

    def __init__(
        self,
        generation: Generation,
        base: Base,
        server: Server,
        server_address: tuple[str, int],
        request: bytes,
        *,
        now: float,
        rto: float,
        deadline: float,
        quiet: bool,
        rest: Sequence[tuple[str, int]],
        until: float,
    ) -> None:
        super().__init__(request, now=now, rto=rto, deadline=deadline)
        self.generation = generation
        self.base = base
        self.server = server
        self.server_address = server_address
        self.quiet = quiet  # asked of a TURN server beside its allocation: it reports errors
        self.rest = rest  # the server's next addresses, should this one never answer
        self.until = until  # the deadline of them all


class Reflexive(Emitting):
    """The srflx part of the gathering core (see the module docstring)."""

    __slots__ = ("_probes",)
    # Gathering's, shared with its probes (and relays).
    _commands: deque[Command]
    timing: Timing
    rtt: RttTable

    def __init__(self) -> None:
        super().__init__()
        self._probes: dict[bytes, _Probe] = {}  # by transaction ID

    # -- what the state machine asks of its probes -------------------------------------

    def _probe_timer(self) -> float:
        """When the next request is due to be resent or given up (inf: none)."""
        timer = math.inf
        for probe in self._probes.values():
            timer = min(timer, probe.timer)
        return timer

    def _probes_on_timer(self, now: float) -> None:
        """Retransmit what is due, and go on from (or fail) what has reached its deadline."""
        for transaction_id, probe in list(self._probes.items()):
            if probe.expired(now):
                del self._probes[transaction_id]
                tries = "1 try" if probe.transmissions == 1 else f"{probe.transmissions} tries"
                self._unanswered(probe, f"STUN binding request timed out after {tries}.", now)
            else:
                request = probe.retransmit(now)
                if request is not None:
                    self._commands.append(
                        SendDatagram(probe.base.key, request, probe.server_address)
                    )

    def _probes_waiting(self, generation: Generation, waiting: dict[int, str]) -> None:
        """The servers the generation's unanswered requests wait on, by index."""
        for probe in self._probes.values():
            if probe.generation is generation:
                waiting[probe.server.index] = probe.server.url.url

    def _drop_probes(self, gone: set[int], now: float) -> None:
        """Bases that went away: their requests go too, unanswered and unreported."""
        for transaction_id, probe in list(self._probes.items()):
            if probe.base.key in gone:
                del self._probes[transaction_id]
                self._done(probe.generation, probe.base.transport, now)

    def _retire_probes(self, generation: Generation) -> None:
        """A restart retired the generation: its requests are dropped (so is its work)."""
        for transaction_id in [
            tid for tid, probe in self._probes.items() if probe.generation is generation
        ]:
            del self._probes[transaction_id]

    def _close_probes(self) -> None:
        """close(): every request is dropped, unreported."""
        self._probes.clear()

    def _probe_unreachable(
        self, now: float, base_key: int, address: tuple[str, int], cause: str
    ) -> None:
        """ICMP (or the kernel) says `address` cannot be reached from this base: its
        requests go on to their servers' next addresses now, or fail with a 701."""
        for transaction_id, probe in list(self._probes.items()):
            if probe.base.key == base_key and probe.server_address == address:
                del self._probes[transaction_id]
                self._unanswered(probe, f"STUN server unreachable ({cause}).", now)

    def _probe_answer(
        self, now: float, base_key: int, data: bytes, source: tuple[str, int]
    ) -> bool | None:
        """A datagram that names one of our Binding requests: True if it was its answer,
        False if it is dropped (from another base or source, or no answer); None if it
        names none (a TURN server's, a peer's)."""
        probe = self._probes.get(data[8:20]) if data[4:8] == _COOKIE else None
        if probe is None:
            return None
        if probe.base.key != base_key:
            return False
        if probe.server_address != (without_zone(source[0]), source[1]):
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
        sample = probe.rtt_sample(now)
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
                self._probe_failed(probe, 700, "no mapped address", now)
                return True
            try:
                mapped = answered_address(mapped)
            except UnusableAddress as error:  # 0.0.0.0 or a multicast group is no candidate
                self._probe_failed(probe, 700, f"mapped address {error}", now)
                return True
            self._add_srflx(generation, probe, mapped, now)  # relay-only sends no probe
        else:
            try:
                code, reason = message.error_code() or (600, "error response without a code")
            except stun.StunError:
                code, reason = 600, "malformed ERROR-CODE"
            self._probe_failed(probe, code, stun.readable(reason), now)
            return True
        self._done(generation, base.transport, now)
        return True

    # -- the requests and what their answers give --------------------------------------

    def _send_binding(
        self,
        generation: Generation,
        base: Base,
        server: Server,
        addresses: Sequence[tuple[str, int]],
        now: float,
        until: float,
        quiet: bool = False,
    ) -> None:
        """A Binding request to the first address; the others wait their turn, should it
        never answer (RFC 2782's order, as TURN's `_allocate_in_turn`: a dead node or SRV
        backup costs no error, and holds no one up once another has answered)."""
        server_address, *rest = addresses
        transaction_id = stun.new_transaction_id()
        request = stun.encode(stun.Method.BINDING, stun.MessageClass.REQUEST, transaction_id)
        rto = self.rtt.rto(server_address, self.timing)
        self._probes[transaction_id] = _Probe(
            generation,
            base,
            server,
            server_address,
            request,
            now=now,
            rto=rto,
            deadline=self._share(now, until, len(rest)),
            quiet=quiet,
            rest=rest,
            until=until,
        )
        generation.pending[base.transport] += 1
        self._commands.append(SendDatagram(base.key, request, server_address))

    def _ask_srflx(self, relay: Relay, now: float) -> None:
        """The base's srflx from a Binding request to the relay's server, by its deadline
        (quiet: the relay reports that server's errors)."""
        deadline = relay.allocation.deadline
        server, address = relay.server, relay.server_address
        self._send_binding(relay.generation, relay.base, server, [address], now, deadline, True)

    @staticmethod
    def _share(now: float, until: float, waiting: int) -> float:
        """When the address tried now gives way to the next, with `waiting` more to try
        before `until`: at an equal share of what is left. (Two initial RTOs at least
        starved the last of many: seven dead addresses left the eighth 31 ms.)"""
        return now + (until - now) / (waiting + 1)

    def _unanswered(self, probe: _Probe, text: str, now: float) -> None:
        """No answer from this address: on to the server's next, if it has one."""
        generation = probe.generation
        if probe.rest and not generation.retired and not self._closed:
            base, server = probe.base, probe.server
            self._send_binding(generation, base, server, probe.rest, now, probe.until, probe.quiet)
            self._done(generation, base.transport, now)
        else:
            self._probe_failed(probe, UNREACHABLE, text, now)

    def _probe_failed(self, probe: _Probe, code: int, text: str, now: float) -> None:
        if not probe.quiet:
            base = probe.base
            self._error(probe.generation, probe.server, base, base.port, code, text, now)
        self._done(probe.generation, probe.base.transport, now)

    def _add_srflx(
        self, generation: Generation, probe: _Probe, mapped: tuple[str, int], now: float
    ) -> None:
        base = probe.base
        if self._shows_address(base) and mapped == (base.address, base.port):
            return  # RFC 8445 §5.1.3: the same as its host candidate (no NAT), so redundant
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
