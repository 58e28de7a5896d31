"""A deterministic simulated network for the sans-I/O core.

It plays the driver's part: it carries out the core's commands, delivers datagrams after
a delay (with loss, duplication and reordering chosen by a seeded RNG), runs STUN servers
behind an optional NAT, and advances a virtual clock. STUN responses are built with
aioice's codec, so the core is checked against an independent implementation.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from aioice import stun as aioice_stun

from ice_engine.commands import OpenSocket, Resolve, SendDatagram
from ice_engine.credentials import Credentials
from ice_engine.events import Event
from ice_engine.gathering import Base, Gathering


@dataclass
class StunServer:
    """Answers Binding requests; `nat` maps a base (ip, port) to its public mapping."""

    address: tuple[str, int]
    nat: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    error: tuple[int, str] | None = None
    alive: bool = True

    def answer(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        if not self.alive:
            return None
        request = aioice_stun.parse_message(data)
        if self.error is not None:
            response = aioice_stun.Message(
                message_method=aioice_stun.Method.BINDING,
                message_class=aioice_stun.Class.ERROR,
                transaction_id=request.transaction_id,
            )
            response.attributes["ERROR-CODE"] = self.error
        else:
            response = aioice_stun.Message(
                message_method=aioice_stun.Method.BINDING,
                message_class=aioice_stun.Class.RESPONSE,
                transaction_id=request.transaction_id,
            )
            response.attributes["XOR-MAPPED-ADDRESS"] = self.nat.get(source, source)
        response.add_fingerprint()
        return bytes(response)


@dataclass
class SimNetwork:
    core: Gathering
    servers: dict[tuple[str, int], StunServer] = field(default_factory=dict)
    dns: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    dns_delay: float = 0.01
    delay: float = 0.025  # one way
    loss: float = 0.0
    duplicate: float = 0.0
    jitter: float = 0.0
    seed: int = 0
    now: float = 0.0
    events: list[Event] = field(default_factory=list)
    sent: list[SendDatagram] = field(default_factory=list)
    sent_times: list[float] = field(default_factory=list)
    garbage: Callable[[random.Random], bytes] | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = 0
        self._bases: dict[int, Base] = {}

    def at(self, when: float, action: Callable[[], None]) -> None:
        self._order += 1
        heapq.heappush(self._queue, (when, self._order, action))

    def start(self, bases: list[Base], hold: bool = False) -> None:
        self._bases.update({base.key: base for base in bases})
        self.core.start(self.now, bases, hold=hold)
        self.pump()

    def prepare(self, bases: list[Base], credentials: Credentials) -> int:
        """Gather a pooled generation (see `Gathering.prepare`)."""
        self._bases.update({base.key: base for base in bases})
        number = self.core.prepare(self.now, credentials, bases)
        self.pump()
        return number

    def pump(self) -> None:
        """Carry out commands and collect events (what a driver's service step does)."""
        while (command := self.core.next_command()) is not None:
            if isinstance(command, SendDatagram):
                self.sent.append(command)
                self.sent_times.append(self.now)
                self._send(command)
            elif isinstance(command, Resolve):
                self._resolve(command)
            elif isinstance(command, OpenSocket):
                self._open_beside(command)
        while (event := self.core.next_event()) is not None:
            self.events.append(event)

    def _open_beside(self, command: OpenSocket) -> None:
        """Another socket on the address of `command.beside`, on the next free port."""
        beside = self._bases[command.beside]
        key = max(self._bases) + 1
        port = max(b.port for b in self._bases.values()) + 1
        self._bases[key] = replace(beside, key=key, port=port)
        self.core.socket_opened(self.now, command.request, key)

    def _send(self, command: SendDatagram) -> None:
        server = self.servers.get(command.address)
        base = self._bases[command.base_key]
        if server is None or self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            request_arrives = self.now + self.delay + self.rng.random() * self.jitter

            def deliver(data: bytes = command.data, server: StunServer = server) -> None:
                response = server.answer(data, (base.address, base.port))
                if response is None or self.rng.random() < self.loss:
                    return
                arrives = self.now + self.delay + self.rng.random() * self.jitter
                self.at(arrives, lambda: self.receive(base.key, response, server.address))

            self.at(request_arrives, deliver)
        if self.garbage is not None:
            junk = self.garbage(self.rng)
            self.at(
                self.now + self.rng.random() * 0.05,
                lambda: self.receive(base.key, junk, command.address),
            )

    def _resolve(self, command: Resolve) -> None:
        url = command.url
        if url.host_is_ip:
            self.core.resolved(self.now, command.request, [(url.host, url.port)])
            return
        answer = self.dns.get(url.host)

        def reply() -> None:
            if answer is None:
                self.core.resolve_failed(self.now, command.request, f"{url.host}: NXDOMAIN")
            else:
                self.core.resolved(self.now, command.request, answer)

        self.at(self.now + self.dns_delay, reply)

    def receive(self, key: int, data: bytes, source: tuple[str, int]) -> None:
        self.core.receive_datagram(self.now, key, data, source)
        self.pump()

    def run(self, until: float = 60.0) -> None:
        """Advance virtual time through deliveries and the core's timers."""
        while self.now < until:
            timer = self.core.get_timer()
            next_delivery = self._queue[0][0] if self._queue else None
            candidates = [t for t in (timer, next_delivery) if t is not None]
            if not candidates:
                return
            when = min(candidates)
            self.now = max(self.now, when)
            if next_delivery is not None and next_delivery <= when:
                _, _, action = heapq.heappop(self._queue)
                action()
                self.pump()
            else:
                self.core.handle_timer(self.now)
                self.pump()
