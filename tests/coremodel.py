"""A model network around one sans-I/O `Gathering`, for `tests/test_core_statemachine.py`.

The state machine there calls the core's API in any order; `Model` plays everything else:
the driver's UDP sockets and TCP streams (opened and closed as a driver must: a socket
lingers while `closing_keys` names it), DNS, STUN servers and TURN servers (401 challenge,
nonce, integrity, Refresh, permissions, channels, and a mode per server to misbehave in),
and a pool where every datagram, DNS answer, socket and stream chunk waits until a rule
delivers, drops or duplicates it. The rules decide every delivery, loss and tick of the
clock, so hypothesis can replay and shrink any interleaving.

After every call `pump` drains the core's commands and events and checks them: events as
a browser's application may rely on them (per generation: `gathering` first, candidates,
each transport's end-of-candidates, `complete`, `null`, nothing after; no duplicate line or
priority; nothing after `close()`; nothing that shows a hidden address), commands against
the sockets and streams the driver has open, and the core's properties (`state`,
`transport_state`, `candidates`) against the events seen. A failure is a `Violation`.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ice_engine import stun
from ice_engine.candidate import Candidate
from ice_engine.commands import (
    CloseStream,
    Command,
    OpenSocket,
    OpenStream,
    Resolve,
    SendDatagram,
    StreamSend,
)
from ice_engine.credentials import Credentials
from ice_engine.events import (
    CandidateRemovedEvent,
    Event,
    IceCandidate,
    IceCandidateErrorEvent,
    IceCandidateEvent,
    IceGatheringStateChangeEvent,
)
from ice_engine.gathering import Base, Gathering, Server, Transport
from ice_engine.stun import Attr, MessageClass, Method
from ice_engine.turn import CLOSE_TIMEOUT, Allocation, NonceCache
from ice_engine.urls import parse_server_url

Address = tuple[str, int]
Client = tuple[str, Any]  # a TURN client: ("udp", its (ip, port)) or ("tcp", stream number)

REALM, USER, PASSWORD = "lab.test", "alice", "wonderland"
NONCE = b"0123456789abcdef"

#: The local addresses a model host can have (`Model(local=...)` picks by index).
LOCAL: list[tuple[str, int]] = [
    ("203.0.113.2", socket.AF_INET),
    ("2001:db8:a::2", socket.AF_INET6),
    ("203.0.113.130", socket.AF_INET),
]
#: The server URLs a gathering may be configured with (stuns: is refused by the core).
URLS = [
    "stun:198.51.100.10",
    "stun:stun.lab.test",
    "stun:[2001:db8:b::10]",
    "stun:nx.lab.test",  # NXDOMAIN
    "stuns:198.51.100.10",
    "turn:198.51.100.30",
    "turn:turn.lab.test",
    "turn:198.51.100.32?transport=tcp",
    "turns:tls.lab.test",
    "turn:[2001:db8:b::30]",
]
DNS = {
    "stun.lab.test": ["198.51.100.20", "198.51.100.21"],
    "turn.lab.test": ["198.51.100.31", "198.51.100.33"],
    "tls.lab.test": ["198.51.100.34"],
}
STUN_ADDRESSES = [
    ("198.51.100.10", 3478),
    ("198.51.100.20", 3478),
    ("198.51.100.21", 3478),
    ("2001:db8:b::10", 3478),
]
TURN_ADDRESSES = [
    ("198.51.100.30", 3478),
    ("198.51.100.31", 3478),  # also 198.51.100.30's alternate in the redirect mode
    ("198.51.100.32", 3478),
    ("198.51.100.33", 3478),
    ("198.51.100.34", 5349),
    ("2001:db8:b::30", 3478),
]
SERVER_ADDRESSES = set(STUN_ADDRESSES) | set(TURN_ADDRESSES)
PEERS = [("203.0.113.50", 6000), ("203.0.113.51", 6001), ("2001:db8:c::5", 7000)]
PEER_DATA = b"hello"

STUN_MODES = ["ok", "ok", "ok", "dead", "error", "nomapped"]
TURN_MODES = [
    "ok",
    "ok",
    "ok",
    "dead",
    "quota",  # 486 to every Allocate
    "mismatch",  # a 437 to each client's first Allocate
    "redirect",  # 198.51.100.30 sends a 300 Try Alternate to 198.51.100.31 (others: ok)
    "shortlife",  # 60 s lifetimes
    "refuse_refresh",  # a Refresh drops the allocation with a 437
    "forbid",  # 403 to CreatePermission
    "wrongpass",  # 401 to every signed request
]


class Violation(AssertionError):
    """The core broke a rule the model checks."""


def nat(source: Address) -> Address:
    """The mapping servers see: an IPv4 NAT; none on IPv6 (the srflx is redundant)."""
    if ":" in source[0]:
        return source
    return ("198.51.100.1", (source[1] + 10000) % 65536 or 1)


# -- servers ------------------------------------------------------------------------------


class StunServerModel:
    """Answers Binding requests, or misbehaves: dead | error (420) | nomapped."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def answer(self, data: bytes, source: Address) -> list[bytes]:
        if self.mode == "dead":
            return []
        try:
            message = stun.parse(data)
        except stun.StunError:
            return []
        if message.method != Method.BINDING or message.message_class != MessageClass.REQUEST:
            return []
        tid = message.transaction_id
        if self.mode == "error":
            attrs = [(Attr.ERROR_CODE, stun.error_code_value(420, "Unknown"))]
            return [stun.encode(Method.BINDING, MessageClass.ERROR, tid, attrs)]
        attrs = []
        if self.mode != "nomapped":
            attrs.append((Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value(*nat(source), tid)))
        return [stun.encode(Method.BINDING, MessageClass.SUCCESS, tid, attrs)]


class TurnServerModel:
    """RFC 8656 in brief: allocations per client 5-tuple (or TCP stream), the 401
    challenge, 438 for another nonce, integrity, a retransmitted Allocate answered with
    the same success, Refresh, CreatePermission and ChannelBind; `TURN_MODES` misbehave."""

    def __init__(self, address: Address, mode: str) -> None:
        self.address = address
        self.mode = mode
        self.allocations: dict[Client, tuple[bytes, bytes]] = {}  # -> Allocate tid, success
        self.key = stun.long_term_key(USER, REALM, PASSWORD)
        self.count = 0
        self.mismatched: set[Client] = set()

    def answer(self, data: bytes, client: Client, source: Address | None) -> list[bytes]:
        """The answers to one datagram or stream frame; `source` is None over TCP."""
        if self.mode == "dead" or stun.is_channel_data(data):
            return []
        try:
            m = stun.parse(data)
        except stun.StunError:
            return []
        if m.message_class != MessageClass.REQUEST:
            return []  # Send indications are swallowed
        tid = m.transaction_id
        if m.get(Attr.USERNAME) is None:
            if (
                m.method == Method.ALLOCATE
                and self.mode == "redirect"
                and self.address == ("198.51.100.30", 3478)
            ):
                attrs = [
                    (Attr.ERROR_CODE, stun.error_code_value(300, "Try Alternate")),
                    (Attr.ALTERNATE_SERVER, stun.address_value("198.51.100.31", 3478)),
                ]
                return [stun.encode(m.method, MessageClass.ERROR, tid, attrs)]
            return [self._challenge(m, 401)]
        if m.nonce() != NONCE:
            return [self._challenge(m, 438)]
        if not stun.verify_integrity(m, self.key) or self.mode == "wrongpass":
            return [self._challenge(m, 401)]
        lifetime = 60 if self.mode == "shortlife" else 600
        allocation = self.allocations.get(client)
        if m.method == Method.ALLOCATE:
            if allocation is not None and allocation[0] == tid:
                return [allocation[1]]  # a retransmission
            if self.mode == "quota":
                return [self._error(m, 486, "Allocation Quota Reached")]
            if allocation is not None:
                return [self._error(m, 437, "Allocation Mismatch", signed=False)]
            if self.mode == "mismatch" and client not in self.mismatched:
                self.mismatched.add(client)
                return [self._error(m, 437, "Allocation Mismatch", signed=False)]
            self.count += 1
            port = 50000 + self.count
            attrs = [(Attr.XOR_RELAYED_ADDRESS, stun.xor_address_value(self.address[0], port, tid))]
            if m.get(Attr.ADDITIONAL_ADDRESS_FAMILY) is not None:
                relayed6 = stun.xor_address_value("2001:db8:b::99", port, tid)
                attrs.append((Attr.XOR_RELAYED_ADDRESS, relayed6))
            if source is not None:
                attrs.append((Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value(*nat(source), tid)))
            attrs.append((Attr.LIFETIME, stun.u32_value(lifetime)))
            success = stun.encode(
                m.method, MessageClass.SUCCESS, tid, attrs, integrity_key=self.key
            )
            self.allocations[client] = (tid, success)
            return [success]
        if allocation is None:
            return [self._error(m, 437, "Allocation Mismatch")]
        if m.method == Method.REFRESH:
            requested = m.lifetime()
            if self.mode == "refuse_refresh" and requested:
                del self.allocations[client]
                return [self._error(m, 437, "Allocation Mismatch")]
            if requested == 0:
                del self.allocations[client]
                granted = 0
            else:
                granted = min(requested or lifetime, lifetime)
            attrs = [(Attr.LIFETIME, stun.u32_value(granted))]
            return [stun.encode(m.method, MessageClass.SUCCESS, tid, attrs, integrity_key=self.key)]
        if m.method == Method.CREATE_PERMISSION and self.mode == "forbid":
            return [self._error(m, 403, "Forbidden")]
        if m.method in (Method.CREATE_PERMISSION, Method.CHANNEL_BIND):
            return [stun.encode(m.method, MessageClass.SUCCESS, tid, [], integrity_key=self.key)]
        return [self._error(m, 400, "Bad Request")]

    def _challenge(self, m: stun.Message, code: int) -> bytes:
        attrs = [
            (
                Attr.ERROR_CODE,
                stun.error_code_value(code, "Unauthorized" if code == 401 else "Stale Nonce"),
            ),
            (Attr.REALM, REALM.encode()),
            (Attr.NONCE, NONCE),
        ]
        return stun.encode(m.method, MessageClass.ERROR, m.transaction_id, attrs)

    def _error(self, m: stun.Message, code: int, reason: str, signed: bool = True) -> bytes:
        """Signed, but for a 437 to an Allocate, which coturn 4.6 sends unsigned."""
        attrs = [(Attr.ERROR_CODE, stun.error_code_value(code, reason))]
        key = self.key if signed else None
        return stun.encode(m.method, MessageClass.ERROR, m.transaction_id, attrs, integrity_key=key)

    def data_indication(self, peer: Address) -> bytes:
        """What a peer's datagram to one of the allocations comes as."""
        tid = stun.new_transaction_id()
        attrs = [
            (Attr.XOR_PEER_ADDRESS, stun.xor_address_value(*peer, tid)),
            (Attr.DATA, PEER_DATA),
        ]
        return stun.encode(Method.DATA, MessageClass.INDICATION, tid, attrs, fingerprint=False)


# -- the driver's side ----------------------------------------------------------------------


@dataclass
class Sock:
    """A UDP socket or ICE-TCP listener the driver bound (or opened beside a base)."""

    key: int
    address: str
    port: int
    family: int
    owner: int  # the generation it was bound for
    tcp: bool = False  # an ICE-TCP listener
    beside: int | None = None  # the base an OpenSocket asked for it beside
    open: bool = True


@dataclass
class Stream:
    """A TCP (or TLS) connection to a TURN server, both ends."""

    number: int
    base_key: int
    address: Address
    state: str = "connecting"  # connecting | open | closed
    to_server: list[bytes] = field(default_factory=list)  # chunks, in order
    to_client: bytearray = field(default_factory=bytearray)
    framer: stun.StreamFramer | None = None  # the server's, once connected


@dataclass(eq=False)
class Item:
    """Something in flight: `run()` delivers it. `command` is the core's Resolve,
    OpenSocket or OpenStream it answers, for the rules that answer otherwise."""

    kind: str  # dgram | reply | dns | opensock | connect | s2srv | s2cli
    run: Callable[[], None]
    command: Any = None
    stream: int | None = None
    payload: bytes | None = None  # a reply's datagram, for re-targeting


@dataclass
class GenerationRecord:
    """What the application has seen of one generation."""

    ufrag: str | None
    states: list[str] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)  # mids whose "" came
    null: bool = False
    live: dict[tuple[str, str], IceCandidate] = field(default_factory=dict)  # by (mid, line)
    priorities: dict[tuple[str, int, int], str] = field(default_factory=dict)
    last_t: float = -math.inf
    events: int = 0


class Model:
    """One `Gathering` and everything around it (see the module docstring)."""

    def __init__(
        self,
        *,
        transports: int,
        components: int,
        urls: list[str],
        modes: dict[Address, str],
        continual: bool,
        relay_only: bool,
        dual: bool,
        local: list[int],
        tcp: bool,
        mdns: bool,
        hide_host: bool,
    ) -> None:
        self.now = 0.0
        self.mids = [str(i) for i in range(transports)]
        self.components = components
        self.local = [LOCAL[i] for i in local]
        self.tcp = tcp
        self.mdns = mdns
        self.core = Gathering(
            transports=[Transport(mid, i) for i, mid in enumerate(self.mids)],
            components=components,
            servers=[Server(parse_server_url(u), i, USER, PASSWORD) for i, u in enumerate(urls)],
            credentials=self.credentials(0),
            continual=continual,
            relay_only=relay_only,
            dual_stack_relays=dual,
            hide_host=hide_host,
            nonces=NonceCache(),
        )
        self.stun_servers = {a: StunServerModel(modes.get(a, "ok")) for a in STUN_ADDRESSES}
        self.turn_servers = {a: TurnServerModel(a, modes.get(a, "ok")) for a in TURN_ADDRESSES}
        self.socks: dict[int, Sock] = {}
        self.streams: dict[int, Stream] = {}
        self.items: list[Item] = []
        self.lingering: set[int] = set()  # sockets of generations no longer kept
        self.removed: set[int] = set()  # sockets remove_bases() was told of
        # (generation, mid, component, protocol, address or name, port, network-id) of
        # each host candidate a socket can give (port 9: ICE-TCP's active one) -> the socket
        self.host_sockets: dict[tuple[int, str, int, str, str, int, int | None], int] = {}
        self.next_key = 1
        self.next_port = 40000
        self.credentials_used = 0
        self.generations: dict[int, GenerationRecord] = {}
        self.ufrags: dict[int, str] = {0: self.credentials(0).ufrag}
        self.last_generation = -1  # of the last event
        self.closed_at: float | None = None
        self.finished = False  # close() is over for the driver: nothing closing, all closed
        self.forged = False  # garbage went in: a Data indication carries no integrity
        self.closing_since: dict[Allocation, float] = {}

    @staticmethod
    def credentials(n: int) -> Credentials:
        return Credentials(f"uf{n:06d}", f"pw{n:022d}")

    def fresh_credentials(self) -> Credentials:
        self.credentials_used += 1
        return self.credentials(self.credentials_used)

    def bind(
        self,
        generation: int,
        addresses: list[tuple[str, int]] | None = None,
        rank0: int = 0,
        tcp: bool = False,
    ) -> list[Base]:
        """Sockets for every transport and component on these addresses (default: all)."""
        if tcp and not self.tcp:
            return []
        addresses = self.local if addresses is None else addresses
        protocol = "tcp" if tcp else "udp"
        bases = []
        for transport, mid in enumerate(self.mids):
            for component in range(1, self.components + 1):
                for rank, (address, family) in enumerate(addresses, start=rank0):
                    key, port = self.next_key, self.next_port
                    self.next_key += 1
                    self.next_port += 1
                    self.socks[key] = Sock(key, address, port, family, generation, tcp)
                    name = f"{address.replace(':', '-').replace('.', '-')}.local"
                    shown = name if self.mdns else address
                    for host_port in (port, 9) if tcp else (port,):
                        host = (generation, mid, component, protocol, shown, host_port, rank + 1)
                        self.host_sockets[host] = key
                    bases.append(
                        Base(
                            key,
                            transport,
                            component,
                            address,
                            port,
                            family,
                            rank,
                            network_id=rank + 1,
                            name=name if self.mdns else None,
                        )
                    )
        return bases

    def host_socket(self, generation: int, mid: str, host: Candidate) -> int | None:
        """The socket a host candidate of this generation and transport stands for."""
        return self.host_sockets.get(
            (
                generation,
                mid,
                host.component,
                host.protocol,
                host.address,
                host.port,
                host.network_id,
            )
        )

    def remove_bases(self, keys: list[int]) -> None:
        """Sockets go away (and those opened beside them): their host candidates go."""
        self.call("remove_bases()", lambda: self.core.remove_bases(self.now, keys))
        self.removed.update(keys)
        for sock in self.socks.values():
            if sock.key in keys or sock.beside in keys:
                sock.open = False
        self.pump()
        generation = self.core.generation
        for c in self.core.candidates:
            parsed = c.parsed
            if (
                parsed is not None
                and parsed.type == "host"
                and self.host_socket(generation, c.sdpMid, parsed) in self.removed
            ):
                self.violation(f"a removed socket's host candidate stays: {c.candidate}")

    def call(
        self, what: str, fn: Callable[[], Any], allowed: tuple[type[Exception], ...] = ()
    ) -> Any:
        """Call the core: an `allowed` exception is returned, any other is a Violation."""
        try:
            return fn()
        except allowed as error:
            return error
        except Violation:
            raise
        except Exception as error:
            raise Violation(f"{what} raised {type(error).__name__}: {error}") from error

    def violation(self, text: str) -> NoReturn:
        raise Violation(f"t={self.now:.4f}: {text}")

    # -- after every call -------------------------------------------------------------------

    def pump(self) -> None:
        """After a call to the core: carry out its commands, check its events."""
        core = self.core
        while (command := core.next_command()) is not None:
            self.check_command(command)
        while (event := core.next_event()) is not None:
            self.check_event(event)
        while (relayed := core.next_relayed()) is not None:
            _allocation, peer, payload = relayed
            if not self.forged and (peer not in PEERS or payload != PEER_DATA):
                self.violation(f"relayed data no peer sent: {peer} {payload!r}")
        while core.next_relay_failure() is not None:
            pass
        self.close_sockets()
        self.track_closing()
        self.check_properties()
        # The call that ends close() (a deallocation's answer, a timer, remove_bases) may
        # give commands for what is left (CloseStream); any later call, none.
        self.finished = self.closed_at is not None and not core.closing and self.all_closed

    def check_command(self, command: Command) -> None:
        if self.finished:
            self.violation(f"command after close() completed: {command}")
        if isinstance(command, SendDatagram):
            sock = self.socks.get(command.base_key)
            if sock is None or not sock.open:
                self.violation(f"SendDatagram from closed socket {command.base_key}")
                return
            if sock.tcp:
                self.violation(f"SendDatagram from an ICE-TCP listener {command.base_key}")
            if (":" in command.address[0]) != (sock.family == socket.AF_INET6):
                self.violation(f"SendDatagram across families: {sock.address} -> {command}")
            if command.address not in SERVER_ADDRESSES:
                self.violation(f"SendDatagram to an address no server has: {command.address}")
            self.items.append(Item("dgram", lambda: self.to_server(command)))
        elif isinstance(command, Resolve):
            self.items.append(Item("dns", lambda: self.dns_answer(command), command))
        elif isinstance(command, OpenSocket):
            beside = self.socks.get(command.beside)
            if beside is None or not beside.open:
                self.violation(f"OpenSocket beside closed socket {command.beside}")
            self.items.append(Item("opensock", lambda: self.open_socket(command), command))
        elif isinstance(command, OpenStream):
            sock = self.socks.get(command.base_key)
            if sock is None or not sock.open:
                self.violation(f"OpenStream from closed socket {command.base_key}")
            if command.address not in SERVER_ADDRESSES:
                self.violation(f"OpenStream to an address no server has: {command.address}")
            if command.stream in self.streams:
                self.violation(f"OpenStream reuses stream number {command.stream}")
            self.streams[command.stream] = Stream(command.stream, command.base_key, command.address)
            number = command.stream
            self.items.append(Item("connect", lambda: self.connect(number), command, number))
        elif isinstance(command, StreamSend):
            stream = self.streams.get(command.stream)
            if stream is None or stream.state != "open":
                state = "unknown" if stream is None else stream.state
                self.violation(f"StreamSend on a {state} stream {command.stream}")
                return
            stream.to_server.append(command.data)
            self.items.append(self.stream_item("s2srv", stream.number))
        elif isinstance(command, CloseStream):
            stream = self.streams.get(command.stream)
            if stream is None or stream.state == "closed":
                self.violation(f"CloseStream on a closed or unknown stream {command.stream}")
                return
            self.stream_gone(stream)
        else:
            self.violation(f"unknown command {command}")

    def check_event(self, event: Event) -> None:
        if self.closed_at is not None:
            self.violation(f"event after close(): {event!r}")
        g = event.generation
        if g < self.last_generation:
            self.violation(f"event of generation {g} after one of {self.last_generation}")
        self.last_generation = g
        record = self.generations.setdefault(g, GenerationRecord(self.ufrags.get(g)))
        if record.null:
            self.violation(f"event after generation {g}'s null: {event!r}")
        if event.t < record.last_t - 1e-9:
            self.violation(f"event time goes back in generation {g}: {event.t} < {record.last_t}")
        record.last_t = event.t
        record.events += 1
        if isinstance(event, IceGatheringStateChangeEvent):
            state = event.state.value
            expected = ["gathering", "complete", None][len(record.states)]
            if state != expected:
                self.violation(f"generation {g}: state {state} after {record.states}")
            if state == "complete" and record.ended != set(self.mids):
                self.violation(f"generation {g}: complete before every end ({record.ended})")
            record.states.append(state)
            return
        if not record.states:
            self.violation(f"generation {g}: {event!r} before 'gathering'")
        if isinstance(event, IceCandidateErrorEvent):
            if len(record.states) == 2:
                self.violation(f"generation {g}: error after complete: {event!r}")
            hidden = self.core.relay_only or self.core.hide_host or self.mdns
            if hidden and event.address is not None:
                self.violation(f"an error shows the hidden address {event.address}")
        elif isinstance(event, CandidateRemovedEvent):
            c = event.candidate
            if c.sdpMid in record.ended:
                self.violation(f"generation {g}: removed after its transport's end: {c.candidate}")
            if record.live.pop((c.sdpMid, c.candidate), None) is None:
                self.violation(f"generation {g}: removed a candidate not live: {c.candidate}")
            parsed = c.parsed
            assert parsed is not None
            record.priorities.pop((c.sdpMid, parsed.component, parsed.priority), None)
            if parsed.type == "host" and self.host_socket(g, c.sdpMid, parsed) not in self.removed:
                self.violation(f"a host candidate removed, its socket still there: {c.candidate}")
        else:
            assert isinstance(event, IceCandidateEvent)
            self.check_candidate(event, record)

    def check_candidate(self, event: IceCandidateEvent, record: GenerationRecord) -> None:
        g, c = event.generation, event.candidate
        if c is None:
            if record.states != ["gathering", "complete"] or record.ended != set(self.mids):
                self.violation(f"generation {g}: null after {record.states}, {record.ended}")
            record.null = True
            return
        if len(record.states) == 2:
            self.violation(f"generation {g}: candidate after complete: {c!r}")
        if c.sdpMid not in self.mids or c.sdpMLineIndex != self.mids.index(c.sdpMid):
            self.violation(f"bad mid/mline {c.sdpMid}/{c.sdpMLineIndex}")
        if record.ufrag is not None and c.usernameFragment != record.ufrag:
            self.violation(f"generation {g}: ufrag {c.usernameFragment} != {record.ufrag}")
        if c.sdpMid in record.ended:
            self.violation(f"generation {g}: {c.candidate!r} after {c.sdpMid}'s end")
        if c.candidate == "":
            record.ended.add(c.sdpMid)
            return
        try:
            parsed = Candidate.parse(c.candidate)
        except ValueError as error:
            self.violation(f"candidate line does not parse: {c.candidate!r}: {error}")
        if parsed.generation != g or parsed.ufrag != c.usernameFragment:
            self.violation(f"line's generation or ufrag is not the event's: {c.candidate}")
        if not 1 <= parsed.component <= self.components:
            self.violation(f"component {parsed.component}: {c.candidate}")
        if (c.sdpMid, c.candidate) in record.live:
            self.violation(f"generation {g}: duplicate candidate {c.candidate}")
        key = (c.sdpMid, parsed.component, parsed.priority)
        if key in record.priorities:
            self.violation(f"priority taken twice: {record.priorities[key]} / {c.candidate}")
        record.priorities[key] = c.candidate
        record.live[(c.sdpMid, c.candidate)] = c
        if parsed.type == "host":
            socket_key = self.host_socket(g, c.sdpMid, parsed)
            if socket_key is None or socket_key in self.removed:
                self.violation(f"a host candidate of no socket (or a removed one): {c.candidate}")
        # What may not show a local address: relay-only and RFC 8828 mode 3 (hide_host)
        # show no host candidate nor related address; an mDNS name stands for the base.
        hidden = self.core.relay_only or self.core.hide_host
        if self.core.relay_only and parsed.type != "relay":
            self.violation(f"relay_only but {parsed.type}: {c.candidate}")
        if hidden and parsed.type == "host":
            self.violation(f"hide_host but a host candidate: {c.candidate}")
        if self.mdns and parsed.type == "host" and not parsed.address.endswith(".local"):
            self.violation(f"a named base's address shows: {c.candidate}")
        related_hidden = hidden or (self.mdns and parsed.type == "srflx")
        if related_hidden and parsed.related_address not in (None, "0.0.0.0", "::"):
            self.violation(f"a hidden base's address is the related address: {c.candidate}")

    def check_properties(self) -> None:
        """What the application reads from the core agrees with the events it has seen."""
        core = self.core
        if self.closed_at is not None:
            return
        states = [s for g in sorted(self.generations) for s in self.generations[g].states]
        if core.state.value != (states[-1] if states else "new"):
            self.violation(f"core.state {core.state.value} but the last state event: {states}")
        record = self.generations.get(core.generation)
        if core.started and core.released == core.generation and record is not None:
            for i, mid in enumerate(self.mids):
                expected = "complete" if mid in record.ended else "gathering"
                if core.transport_state(i).value != expected:
                    self.violation(f"transport_state({mid}) is not {expected}")
            lines = {(c.sdpMid, c.candidate) for c in core.candidates}
            if extra := lines - set(record.live):
                self.violation(f"core.candidates holds lines never announced (or removed): {extra}")
            gathering = {k for k, c in record.live.items() if c.sdpMid not in record.ended}
            if missing := gathering - lines:
                self.violation(f"core.candidates lacks a gathering transport's lines: {missing}")
            if record.states[-1:] == ["complete"] and core.waiting_for:
                self.violation(f"complete, yet waiting for {core.waiting_for}")

    # -- the driver's sockets --------------------------------------------------------------

    @property
    def all_closed(self) -> bool:
        return not any(s.open for s in self.socks.values())

    def close_sockets(self) -> None:
        """A driver closes a lingering socket once `closing_keys` no longer names it (or
        the socket it stands beside); after close(), every socket once `closing` is over
        or CLOSE_TIMEOUT has passed."""
        core = self.core
        if self.closed_at is not None:
            if not core.closing or self.now >= self.closed_at + CLOSE_TIMEOUT:
                for sock in self.socks.values():
                    sock.open = False
                for stream in self.streams.values():
                    stream.state = "closed"
            return
        busy = core.closing_keys
        for key in sorted(self.lingering):
            sock = self.socks[key]
            if key not in busy and sock.beside not in busy:
                sock.open = False
                self.lingering.discard(key)

    def after_restart(self) -> None:
        """As the driver: the sockets of generations not kept linger until released."""
        for sock in self.socks.values():
            if sock.open and not self.core.keeps(sock.owner):
                self.lingering.add(sock.key)

    def track_closing(self) -> None:
        """When each allocation began closing, for `after_timer`'s CLOSE_TIMEOUT bound.
        Only the core's relays know each allocation's state (`closing_keys` merges those
        of one socket), hence the private `_relays`."""
        closing = {
            relay.allocation
            for relay in self.core._relays.values()
            if relay.allocation.state == "closing"
        }
        for allocation in closing:
            self.closing_since.setdefault(allocation, self.now)
        for allocation in list(self.closing_since):
            if allocation not in closing:
                del self.closing_since[allocation]

    # -- time ----------------------------------------------------------------------------------

    def tick(self, now: float, always: bool = False) -> None:
        """Advance the clock; run `handle_timer` if it is due (or `always`)."""
        self.now = max(self.now, now)
        timer = self.core.get_timer()
        if always or (timer is not None and timer <= self.now):
            self.call(f"handle_timer({self.now})", lambda: self.core.handle_timer(self.now))
            self.pump()
            self.after_timer()

    def after_timer(self) -> None:
        """Deallocations end within CLOSE_TIMEOUT, and handle_timer leaves no work due."""
        for since in self.closing_since.values():
            if self.now > since + CLOSE_TIMEOUT + 1e-9:
                self.violation(f"an allocation closing since {since} is still closing")
        if (
            self.closed_at is not None
            and self.now >= self.closed_at + CLOSE_TIMEOUT
            and self.core.closing
        ):
            self.violation("close() still closing past CLOSE_TIMEOUT")
        for _ in range(3):  # work due: running it again must move the timer on
            timer = self.core.get_timer()
            if timer is None or timer > self.now:
                return
            self.call(f"handle_timer({self.now})", lambda: self.core.handle_timer(self.now))
            self.pump()
        timer = self.core.get_timer()
        if timer is not None and timer <= self.now:
            self.violation(f"get_timer() = {timer} <= now after handle_timer, with no progress")

    def close(self) -> None:
        self.pump()
        self.closed_at = self.now
        self.call("close()", lambda: self.core.close(self.now))
        self.pump()

    def finish(self) -> None:
        """close() (if no rule did), then deliver what is in flight and run the timers:
        the deallocations must be over by CLOSE_TIMEOUT."""
        if self.closed_at is None:
            self.close()
        assert self.closed_at is not None
        for _ in range(50):
            if self.items:
                self.items.pop(0).run()
                self.pump()
                continue
            timer = self.core.get_timer()
            if timer is None or timer > self.closed_at + 5:
                break
            self.tick(timer)
        self.tick(self.closed_at + CLOSE_TIMEOUT, always=True)
        if self.core.closing:
            self.violation("still closing CLOSE_TIMEOUT after close()")

    # -- the network ------------------------------------------------------------------------

    def to_server(self, command: SendDatagram) -> None:
        sock = self.socks[command.base_key]
        source = (sock.address, sock.port)
        address = command.address
        if address in self.stun_servers:
            replies = self.stun_servers[address].answer(command.data, source)
        else:
            replies = self.turn_servers[address].answer(command.data, ("udp", source), source)
        for reply in replies:
            self.items.append(self.reply_item(command.base_key, reply, address))

    def reply_item(self, key: int, data: bytes, source: Address) -> Item:
        return Item("reply", lambda: self.deliver(key, data, source), payload=data)

    def deliver(self, key: int, data: bytes, source: Address) -> None:
        if not self.socks[key].open:
            return
        self.call(
            f"receive_datagram({key}, {source})",
            lambda: self.core.receive_datagram(self.now, key, data, source),
        )

    def dns_answer(self, command: Resolve, fail: bool = False) -> None:
        host, port = command.url.host, command.url.port
        if host not in DNS or fail:
            self.call(
                "resolve_failed()",
                lambda: self.core.resolve_failed(self.now, command.request, f"{host}: NXDOMAIN"),
            )
            return
        addresses = [(address, port) for address in DNS[host]]
        self.call("resolved()", lambda: self.core.resolved(self.now, command.request, addresses))

    def open_socket(self, command: OpenSocket, fail: bool = False) -> None:
        beside = self.socks[command.beside]
        if not beside.open or fail:
            self.call(
                "socket_failed()", lambda: self.core.socket_failed(self.now, command.request, "no")
            )
            return
        key, port = self.next_key, self.next_port
        self.next_key += 1
        self.next_port += 1
        self.socks[key] = Sock(
            key, beside.address, port, beside.family, beside.owner, beside=beside.key
        )
        self.call(
            "socket_opened()",
            lambda: self.core.socket_opened(self.now, command.request, key, port),
        )

    def connect(self, number: int, refuse: bool = False) -> None:
        stream = self.streams[number]
        if stream.state != "connecting":
            return
        if (
            refuse
            or not self.socks[stream.base_key].open
            or stream.address not in self.turn_servers  # a STUN server, from an odd DNS answer
        ):
            stream.state = "closed"
            self.call(
                "stream_closed(refused)",
                lambda: self.core.stream_closed(self.now, number, "connection refused"),
            )
            return
        stream.state = "open"
        stream.framer = stun.StreamFramer()
        self.call(
            "stream_connected()",
            lambda: self.core.stream_connected(self.now, number, 30000 + number),
        )

    def stream_item(self, kind: str, number: int) -> Item:
        run = self.stream_to_server if kind == "s2srv" else self.stream_to_client
        return Item(kind, lambda: run(number), stream=number)

    def stream_to_server(self, number: int) -> None:
        """The oldest chunk the client sent reaches the server; its answers go back."""
        stream = self.streams[number]
        if stream.state != "open" or not stream.to_server:
            return
        assert stream.framer is not None
        chunk = stream.to_server.pop(0)
        try:
            frames = stream.framer.feed(chunk)
        except stun.StunError:
            return
        server = self.turn_servers[stream.address]
        for frame in frames:
            for reply in server.answer(frame, ("tcp", number), None):
                stream.to_client += reply
                self.items.append(self.stream_item("s2cli", number))

    def stream_to_client(self, number: int, cut: int | None = None) -> None:
        """What the server sent reaches the client: all of it, or `cut` bytes."""
        stream = self.streams[number]
        if stream.state != "open" or not stream.to_client:
            return
        n = len(stream.to_client) if cut is None else max(1, min(cut, len(stream.to_client)))
        data, stream.to_client = bytes(stream.to_client[:n]), stream.to_client[n:]
        if stream.to_client:
            self.items.append(self.stream_item("s2cli", number))
        self.call(f"stream_data({number})", lambda: self.core.stream_data(self.now, number, data))

    def stream_gone(self, stream: Stream) -> None:
        """Closed by either end: the server's allocation on it goes too."""
        stream.state = "closed"
        server = self.turn_servers.get(stream.address)
        if server is not None:
            server.allocations.pop(("tcp", stream.number), None)

    def peer_sends(self, client: Client, server: TurnServerModel, peer: Address) -> None:
        """A peer's datagram to an allocation: a Data indication to the client."""
        wire = server.data_indication(peer)
        transport, where = client
        if transport == "udp":
            key = next(s.key for s in self.socks.values() if (s.address, s.port) == where)
            self.items.append(Item("reply", lambda: self.deliver(key, wire, server.address)))
        else:
            stream = self.streams.get(where)
            if stream is not None and stream.state == "open":
                stream.to_client += wire
                self.items.append(self.stream_item("s2cli", where))
