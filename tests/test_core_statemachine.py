"""A hypothesis state machine that drives one sans-I/O `Gathering` through a model network.

Rules call the core's whole API (start, hold and release, restart, pooled generations,
continual address changes, relay permissions, channels and data, close) in any order,
and play the network (`tests/coremodel.py`): deliver, drop, duplicate and reorder
datagrams, fail or twist DNS answers, refuse sockets and TCP connections, split, cut and
garble streams, inject garbage and ICMP errors, and move time on. After every step the
model checks what the application sees and what the driver is told to do; at the end it
closes and checks that the deallocations end within CLOSE_TIMEOUT. Bugs it found: events
after close(), and one transport's ICE-TCP candidate removed with another's listener.

Two machines: any configuration, and TURN only (allocations get further). Each runs 300
examples (~6 s); for a long run, ICE_ENGINE_STATEMACHINE_EXAMPLES=5000 (say).
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from hypothesis.strategies import SearchStrategy

from ice_engine import stun
from ice_engine.turn import Allocation
from tests.coremodel import (
    LOCAL,
    PEERS,
    SERVER_ADDRESSES,
    STUN_ADDRESSES,
    STUN_MODES,
    TURN_ADDRESSES,
    TURN_MODES,
    URLS,
    Item,
    Model,
    Violation,
)

API_ERRORS = (ValueError, RuntimeError)
TURN_URLS = [u for u in URLS if u.startswith("turn")]
EXAMPLES = int(os.environ.get("ICE_ENGINE_STATEMACHINE_EXAMPLES", "300"))


def configurations(
    urls: SearchStrategy[list[str]], stun_mode: SearchStrategy[str]
) -> dict[str, Any]:
    """The arguments of `GatheringMachine.setup`: a gathering's options, its server URLs,
    each server's mode (see `tests/coremodel.py`), and whether it starts at once."""
    return {
        "transports": st.integers(1, 3),
        "components": st.integers(1, 2),
        "urls": urls,
        "stun_modes": st.lists(
            stun_mode, min_size=len(STUN_ADDRESSES), max_size=len(STUN_ADDRESSES)
        ),
        "turn_modes": st.lists(
            st.sampled_from(TURN_MODES), min_size=len(TURN_ADDRESSES), max_size=len(TURN_ADDRESSES)
        ),
        "continual": st.booleans(),
        "relay_only": st.sampled_from([False, False, False, True]),
        "dual": st.booleans(),
        "local": st.sampled_from([[0], [0, 1], [0, 1, 2], [1]]),
        "tcp": st.booleans(),
        "mdns": st.sampled_from([False, False, True]),
        "hide_host": st.sampled_from([False, False, False, True]),
        "start_now": st.sampled_from([True, True, True, False]),
        "hold": st.booleans(),
    }


class GatheringMachine(RuleBasedStateMachine):
    """Every configuration: any URLs, servers in every mode."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_allocations: list[Allocation] = []  # for relay calls on stale ones

    @initialize(
        **configurations(
            st.lists(st.sampled_from(URLS), max_size=4, unique=True), st.sampled_from(STUN_MODES)
        )
    )
    def setup(
        self,
        *,
        stun_modes: list[str],
        turn_modes: list[str],
        start_now: bool,
        hold: bool,
        **options: Any,
    ) -> None:
        modes = dict(zip(STUN_ADDRESSES, stun_modes, strict=True))
        modes.update(zip(TURN_ADDRESSES, turn_modes, strict=True))
        self.model = Model(modes=modes, **options)
        if start_now:
            self._start(hold)

    def _start(self, hold: bool) -> None:
        m = self.model
        core = m.core
        bases = m.bind(core.generation)
        tcp_bases = m.bind(core.generation, tcp=True)
        m.ufrags.setdefault(core.generation, core.credentials.ufrag)
        m.call("start()", lambda: core.start(m.now, bases, tcp_bases, hold=hold))
        m.pump()

    # -- the API --------------------------------------------------------------------------

    @rule(hold=st.booleans())
    def start(self, hold: bool) -> None:
        m = self.model
        if not m.core.started and m.closed_at is None:
            self._start(hold)
            return
        error = m.call("start() again", lambda: m.core.start(m.now, [], hold=hold), API_ERRORS)
        if not isinstance(error, API_ERRORS):
            raise Violation("start() on a started or closed gathering did not refuse")
        m.pump()

    @rule()
    def release(self) -> None:
        m = self.model
        m.call("release()", m.core.release)
        m.pump()

    @rule(with_credentials=st.booleans())
    def restart(self, with_credentials: bool) -> None:
        m = self.model
        core = m.core
        old = core.generation
        visible = core.released == old and core.started
        credentials = m.fresh_credentials() if with_credentials else None
        expected = m.closed_at is None and (with_credentials or core.pooled > 0)
        result = m.call("restart()", lambda: core.restart(m.now, credentials), API_ERRORS)
        if isinstance(result, API_ERRORS) == expected:
            raise Violation(f"restart() should {'' if expected else 'not '}work: {result!r}")
        if not expected:
            m.pump()
            return
        new = core.generation
        if m.ufrags.get(new, core.credentials.ufrag) != core.credentials.ufrag:
            raise Violation(f"generation number {new} reused with other credentials")
        m.ufrags[new] = core.credentials.ufrag
        if new in m.generations and m.generations[new].events:
            raise Violation(f"generation number {new} reused: it already had events")
        m.after_restart()
        m.pump()
        if visible:
            record = m.generations.get(old)
            if record is None or not record.null:
                raise Violation(f"restart: generation {old}, visible, did not end with null")

    @rule()
    def prepare(self) -> None:
        m = self.model
        core = m.core
        number = core.next_pooled
        credentials = m.fresh_credentials()
        bases = m.bind(number)
        tcp_bases = m.bind(number, tcp=True)
        result = m.call(
            "prepare()", lambda: core.prepare(m.now, credentials, bases, tcp_bases), API_ERRORS
        )
        if isinstance(result, API_ERRORS) != (m.closed_at is not None):
            raise Violation(f"prepare() after close() only should refuse: {result!r}")
        if isinstance(result, API_ERRORS):
            for base in bases + tcp_bases:
                m.socks[base.key].open = False
        elif result != number:
            raise Violation(f"prepare() returned {result}, next_pooled said {number}")
        else:
            m.ufrags[number] = credentials.ufrag
        m.pump()

    @rule(data=st.data(), whole=st.booleans())
    def remove_address(self, data: st.DataObject, whole: bool) -> None:
        """An address goes away (all its sockets), or a single socket does."""
        core = self.model.core
        bases = core.bases + core.tcp_bases
        if not bases:
            return
        if whole:
            address = data.draw(st.sampled_from(sorted({b.address for b in bases})))
            self.model.remove_bases([b.key for b in bases if b.address == address])
        else:
            self.model.remove_bases([data.draw(st.sampled_from(bases)).key])

    @rule(data=st.data())
    def add_address(self, data: st.DataObject) -> None:
        m = self.model
        core = m.core
        present = {b.address for b in core.bases}
        missing = [a for a in LOCAL if a[0] not in present]
        if not missing:
            return
        address = data.draw(st.sampled_from(missing))
        rank0 = core.next_rank
        allowed = core.continual and core.started and m.closed_at is None
        bases = m.bind(core.generation, [address], rank0)
        tcp_bases = m.bind(core.generation, [address], rank0, tcp=True)
        result = m.call("add_bases()", lambda: core.add_bases(m.now, bases, tcp_bases), API_ERRORS)
        if isinstance(result, API_ERRORS) == allowed:
            raise Violation(f"add_bases() should {'' if allowed else 'not '}work: {result!r}")
        if not allowed:
            for base in bases + tcp_bases:
                m.socks[base.key].open = False
        m.pump()

    @rule(now=st.sampled_from([True, False, False, False]))
    def close(self, now: bool) -> None:
        """close(), one time in four; once closed, close() again, which must be harmless."""
        m = self.model
        if m.closed_at is None and now:
            m.close()
        elif m.closed_at is not None:
            m.call("close() again", lambda: m.core.close(m.now))
            m.pump()

    # -- the relay data path ----------------------------------------------------------------

    @rule(
        data=st.data(),
        ops=st.lists(st.sampled_from(["permit", "bind", "send", "sendp"]), min_size=1, max_size=4),
    )
    def relay_calls(self, data: st.DataObject, ops: list[str]) -> None:
        for op in ops:
            self._relay_call(data, op)

    def _relay_call(self, data: st.DataObject, op: str) -> None:
        """A permission, a channel or data through a live allocation, or through one seen
        live before (which may be gone: a ValueError then)."""
        m = self.model
        core = m.core
        live = core.allocations
        if live:
            allocation = data.draw(st.sampled_from(live))
            if allocation not in self.seen_allocations:
                self.seen_allocations.append(allocation)
        elif self.seen_allocations:
            allocation = data.draw(st.sampled_from(self.seen_allocations))
        else:
            return
        peer = data.draw(st.sampled_from(PEERS))
        payload = data.draw(st.binary(max_size=40))
        if op == "permit":
            m.call(
                "relay_permit()", lambda: core.relay_permit(m.now, allocation, [peer]), API_ERRORS
            )
        elif op == "bind":
            m.call(
                "relay_bind_channel()",
                lambda: core.relay_bind_channel(m.now, allocation, peer),
                API_ERRORS,
            )
        else:
            permit = op == "sendp"
            m.call(
                "relay_send()",
                lambda: core.relay_send(m.now, allocation, peer, payload, permit=permit),
                API_ERRORS,
            )
        m.pump()

    @rule(data=st.data())
    def peer_data(self, data: st.DataObject) -> None:
        """A peer sends to one of the servers' allocations."""
        m = self.model
        live = [(c, s) for s in m.turn_servers.values() for c in s.allocations]
        if not live:
            return
        client, server = data.draw(st.sampled_from(live))
        m.peer_sends(client, server, data.draw(st.sampled_from(PEERS)))
        m.pump()

    # -- the network --------------------------------------------------------------------------

    @rule(
        ops=st.lists(
            st.tuples(
                st.sampled_from(["deliver"] * 6 + ["drop", "dup", "tick", "tick"]),
                st.integers(0, 10**6),
            ),
            min_size=1,
            max_size=12,
        )
    )
    def network(self, ops: list[tuple[str, int]]) -> None:
        """Deliver items in flight in any order; datagrams may be lost or duplicated."""
        m = self.model
        for op, n in ops:
            if op == "tick":
                m.tick(m.now + [0.01, 0.05, 0.2, 0.5, 1.0, 3.0, 60.0, 300.0][n % 8])
                continue
            if not m.items:
                continue
            i = n % len(m.items)
            datagram = m.items[i].kind in ("dgram", "reply")
            if op == "drop" and datagram:
                m.items.pop(i)
                continue
            item = m.items[i] if op == "dup" and datagram else m.items.pop(i)
            item.run()
            m.pump()

    @rule()
    def deliver_all(self) -> None:
        """Everything in flight, in order: lets handshakes of several round trips end."""
        m = self.model
        for _ in range(200):
            if not m.items:
                return
            m.items.pop(0).run()
            m.pump()

    def _take(self, data: st.DataObject, kind: str) -> Item | None:
        choices = [item for item in self.model.items if item.kind == kind]
        if not choices:
            return None
        item = data.draw(st.sampled_from(choices))
        self.model.items.remove(item)
        return item

    @rule(data=st.data())
    def dns_fail(self, data: st.DataObject) -> None:
        if (item := self._take(data, "dns")) is not None:
            self.model.dns_answer(item.command, fail=True)
            self.model.pump()

    @rule(data=st.data(), how=st.sampled_from(["zero", "multicast", "mixed", "v6only"]))
    def dns_odd(self, data: st.DataObject, how: str) -> None:
        """DNS answers that are not what the name has: 0.0.0.0, multicast, another server."""
        m = self.model
        if (item := self._take(data, "dns")) is None:
            return
        addresses = {
            "zero": [("0.0.0.0", 3478)],
            "multicast": [("224.0.0.1", 3478)],
            "mixed": [("0.0.0.0", 3478), ("198.51.100.20", 3478)],
            "v6only": [("2001:db8:b::10", 3478)],
        }[how]
        request = item.command.request
        m.call("resolved()", lambda: m.core.resolved(m.now, request, addresses))
        m.pump()

    @rule(data=st.data())
    def opensocket_fail(self, data: st.DataObject) -> None:
        if (item := self._take(data, "opensock")) is not None:
            self.model.open_socket(item.command, fail=True)
            self.model.pump()

    @rule(data=st.data())
    def stream_refuse(self, data: st.DataObject) -> None:
        if (item := self._take(data, "connect")) is not None:
            self.model.connect(item.command.stream, refuse=True)
            self.model.pump()

    @rule(data=st.data(), cut=st.integers(1, 80))
    def stream_partial(self, data: st.DataObject, cut: int) -> None:
        """Part of what a TURN server sent over TCP arrives."""
        if (item := self._take(data, "s2cli")) is not None:
            assert item.stream is not None
            self.model.stream_to_client(item.stream, cut)
            self.model.pump()

    @rule(data=st.data(), reason=st.sampled_from(["reset", None, "EOF"]))
    def stream_reset(self, data: st.DataObject, reason: str | None) -> None:
        m = self.model
        streams = [s for s in m.streams.values() if s.state in ("open", "connecting")]
        if not streams:
            return
        stream = data.draw(st.sampled_from(streams))
        m.stream_gone(stream)
        m.call("stream_closed()", lambda: m.core.stream_closed(m.now, stream.number, reason))
        m.pump()

    @rule(data=st.data(), junk=st.binary(min_size=1, max_size=30))
    def stream_garbage(self, data: st.DataObject, junk: bytes) -> None:
        m = self.model
        streams = [s for s in m.streams.values() if s.state == "open"]
        if not streams:
            return
        number = data.draw(st.sampled_from(streams)).number
        m.forged = True
        m.call("stream_data(garbage)", lambda: m.core.stream_data(m.now, number, junk))
        m.pump()

    @rule(
        data=st.data(),
        junk=st.binary(max_size=64),
        kind=st.sampled_from(["random", "stunlike", "from_server"]),
    )
    def garbage(self, data: st.DataObject, junk: bytes, kind: str) -> None:
        """A datagram from a server's or a peer's address: random bytes, a STUN response
        of no transaction, or a real reply in flight to another socket."""
        m = self.model
        socks = [s for s in m.socks.values() if s.open]
        if not socks:
            return
        key = data.draw(st.sampled_from(socks)).key
        source = data.draw(st.sampled_from([*sorted(SERVER_ADDRESSES), PEERS[0]]))
        replies = [it.payload for it in m.items if it.payload is not None]
        if kind == "stunlike":
            junk = stun.encode(
                data.draw(st.sampled_from([1, 3, 4, 8, 9])),
                data.draw(st.sampled_from([0x100, 0x110])),
                data.draw(st.binary(min_size=12, max_size=12)),
                [],
            )
        elif kind == "from_server" and replies:
            junk = data.draw(st.sampled_from(replies))
        else:
            m.forged = True  # random bytes might pass for a Data indication
        m.call(
            "receive_datagram(garbage)", lambda: m.core.receive_datagram(m.now, key, junk, source)
        )
        m.pump()

    @rule(data=st.data())
    def icmp(self, data: st.DataObject) -> None:
        m = self.model
        socks = [s for s in m.socks.values() if s.open]
        if not socks:
            return
        key = data.draw(st.sampled_from(socks)).key
        address = data.draw(st.sampled_from(sorted(SERVER_ADDRESSES)))
        m.call("unreachable()", lambda: m.core.unreachable(m.now, key, address))
        m.pump()

    # -- time ---------------------------------------------------------------------------------

    @rule(
        dt=st.sampled_from(
            [0.001, 0.02, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 30.0, 250.0, 545.0, 700.0]
        ),
        always=st.booleans(),
    )
    def advance(self, dt: float, always: bool) -> None:
        """Time passes; handle_timer runs when due, or (`always`) early."""
        self.model.tick(self.model.now + dt, always)

    @rule()
    def to_next_timer(self) -> None:
        timer = self.model.core.get_timer()
        if timer is not None:
            self.model.tick(timer)

    def teardown(self) -> None:
        model = getattr(self, "model", None)
        if model is not None:
            model.finish()


class TurnGatheringMachine(GatheringMachine):
    """TURN servers only (the STUN servers answer): allocations get far, with refreshes,
    permissions, channels, data and deallocation racing the rest."""

    @initialize(
        **configurations(
            st.lists(st.sampled_from(TURN_URLS), min_size=1, max_size=3, unique=True), st.just("ok")
        )
    )
    def setup(self, **configuration: Any) -> None:
        super().setup(**configuration)

    # Two more rules that deliver everything: hypothesis picks rules uniformly, and
    # an allocation takes several round trips (challenge, Allocate, then Refreshes).
    @rule()
    def deliver_all_again(self) -> None:
        self.deliver_all()

    @rule()
    def deliver_all_once_more(self) -> None:
        self.deliver_all()


SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestGathering = GatheringMachine.TestCase
TestGathering.settings = SETTINGS
TestTurnGathering = TurnGatheringMachine.TestCase
TestTurnGathering.settings = SETTINGS
