"""A TURN client allocation (RFC 8656), sans-I/O: the caller moves bytes and passes `now`.

`Allocation` runs the Allocate exchange (401 challenge, long-term credentials, 438 stale
nonce), keeps the allocation alive with Refresh, deallocates on `close`, and offers the
permission/channel/data framing a connectivity layer needs. Responses are matched by
transaction id only: the caller guarantees they came from the server's address.
"""

from __future__ import annotations

import binascii
import math
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from . import stun
from .stun import Attr, MessageClass, Method
from .transaction import RttTable, StunTransaction, Timing
from .urls import UnusableAddress, answered_address

__all__ = [
    "CLOSE_TIMEOUT",
    "AddressFamilyError",
    "Allocated",
    "Allocation",
    "AllocationExpired",
    "AllocationFailed",
    "AllocationState",
    "BytesLike",
    "NonceCache",
    "NonceEntry",
    "Refreshed",
    "RequestFailed",
    "TurnCredentials",
    "TurnEvent",
]

TIMED_OUT = 701
#: What may be sent through a relay, as through a socket (`collections.abc.Buffer` is 3.12).
BytesLike = bytes | bytearray | memoryview
#: An allocation's life (see `Allocation`); a Literal, so that mypy catches a misspelt one.
AllocationState = Literal["new", "allocating", "allocated", "closing", "closed", "failed"]
#: What a request is for ("close": the Refresh of lifetime 0 that deallocates).
RequestKind = Literal["allocate", "refresh", "close", "permission", "channel"]
#: What the server holds for a peer once granted, and renews: `_installed`.
Grant = Literal["permission", "channel"]
CLOSE_TIMEOUT = 1.0  # deallocation is a courtesy: never hold a shutdown longer than this
PERMISSION_DEADLINE = 5.0
PERMISSION_RENEW_AFTER = 240.0  # a permission lasts 300 s (RFC 8656 §9)
CHANNEL_RENEW_AFTER = 540.0  # a channel binding lasts 600 s (RFC 8656 §12)
_LIFETIMES: dict[Grant, float] = {"permission": 300.0, "channel": 600.0}
_RENEWAL_RETRY = 15.0  # after a failed renewal, while what it renews still lasts
_MAX_STALE_RETRIES = 2  # a server rotating nonces faster than this is broken
_MISMATCH = 437  # Allocation Mismatch: the 5-tuple is taken, try another (RFC 8656 §7.3)
_REFRESH_MARGIN = 60
#: RFC 8489 §14.9/§14.10: a REALM or NONCE is under 128 characters, at most 763 bytes.
_MAX_AUTH_VALUE = 763
_NONCE_COOKIE = b"obMatJos2"  # RFC 8489 §9.2: then 4 base64 characters of feature bits
#: What one UDP datagram carries over IPv4 and over IPv6 (65535 less the headers).
_MAX_UDP_PAYLOAD = {False: 65507, True: 65527}


@dataclass(frozen=True, slots=True)
class TurnCredentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class NonceEntry:
    """What a 401 taught us about a server; `algorithms` is PASSWORD-ALGORITHMS to echo."""

    realm: str
    nonce: bytes
    algorithm: int = stun.PASSWORD_ALGORITHM_MD5
    algorithms: bytes | None = None

    @property
    def use_sha256(self) -> bool:
        return self.algorithm == stun.PASSWORD_ALGORITHM_SHA256


class NonceCache:
    """Realm and nonce per (server, transport, username), shared across allocations.

    A warm entry lets a restart or another gatherer send an authenticated Allocate at
    once: one round trip instead of two. Holds no password; bounded in size.
    """

    __slots__ = ("_entries", "_max_entries")

    def __init__(self, max_entries: int = 256) -> None:
        self._entries: dict[tuple[tuple[str, int], str, str], NonceEntry] = {}
        self._max_entries = max_entries

    def get(self, server: tuple[str, int], transport: str, username: str) -> NonceEntry | None:
        return self._entries.get((server, transport, username))

    def put(
        self, server: tuple[str, int], transport: str, username: str, entry: NonceEntry
    ) -> None:
        key = (server, transport, username)
        self._entries.pop(key, None)
        if len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[key] = entry

    def discard(self, server: tuple[str, int], transport: str, username: str) -> None:
        self._entries.pop((server, transport, username), None)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True)
class Allocated:
    relayed: list[tuple[str, int]]
    mapped: tuple[str, int] | None
    lifetime: int


@dataclass(frozen=True, slots=True)
class AllocationFailed:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Redirected:
    """300 Try Alternate (RFC 8489 §10): allocate at ALTERNATE-SERVER instead. Whether to
    follow is the caller's choice (it knows where it has been)."""

    alternate: tuple[str, int]


@dataclass(frozen=True, slots=True)
class AllocationExpired:
    """The allocation is gone: a refresh failed or its lifetime ran out."""


@dataclass(frozen=True, slots=True)
class Refreshed:
    lifetime: int


@dataclass(frozen=True, slots=True)
class AddressFamilyError:
    """The additional family of a dual allocation failed while the first succeeded."""

    family: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A CreatePermission or ChannelBind failed, for these peers (a failed renewal is
    tried again while what it renews lasts); the allocation itself is unaffected."""

    method: str
    code: int
    reason: str
    peers: tuple[tuple[str, int], ...] = ()


TurnEvent = (
    Allocated | AllocationFailed | Redirected | AllocationExpired | Refreshed | AddressFamilyError
) | RequestFailed


class _Request:
    """An outstanding request; `attributes` omit authentication so a retry can re-sign."""

    __slots__ = ("attributes", "key", "kind", "method", "peers", "stale_retries", "transaction")

    def __init__(
        self,
        kind: RequestKind,
        method: Method,
        attributes: Sequence[tuple[int, bytes]],
        key: bytes | None,
        transaction: StunTransaction,
        peers: tuple[tuple[str, int], ...],
        stale_retries: int,
    ) -> None:
        self.kind = kind
        self.method = method
        self.attributes = attributes
        self.key = key
        self.transaction = transaction
        self.peers = peers
        self.stale_retries = stale_retries


def _as_answers_name(peer: tuple[str, int]) -> tuple[str, int]:
    """The peer with its IP written as a STUN answer's XOR-PEER-ADDRESS decodes it (as
    `inet_ntop` writes it), so that data from it finds its permission and channel."""
    host = peer[0]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, host)), peer[1]
    except (OSError, TypeError):
        raise ValueError(f"peer must be (IP address, port), not {peer!r}") from None


class Allocation:
    """One TURN allocation on one server, over UDP (or TCP/TLS with `reliable`).

    States: new → allocating → allocated → closing → closed, or failed (a redirect ends
    in failed too). A signed Allocate that failed where the server may have granted it
    goes from allocating to closing, to be released. An allocation that expires ends in
    closed, after an `AllocationExpired` event; so does one closed before anything could
    have been granted (new, or allocating with no signed Allocate sent).
    """

    def __init__(
        self,
        server: tuple[str, int],
        *,
        credentials: TurnCredentials,
        deadline: float,
        reliable: bool = False,
        timing: Timing | None = None,
        rtt: RttTable | None = None,
        nonce_cache: NonceCache | None = None,
        family: int = socket.AF_INET,
        additional_family: bool = False,
        lifetime: int = 600,
    ) -> None:
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"family must be AF_INET or AF_INET6, not {family}")
        if additional_family and family != socket.AF_INET:
            raise ValueError("a dual allocation asks for IPv4 plus an additional IPv6")
        self.server = server
        self.credentials = credentials
        self.deadline = deadline
        self.reliable = reliable
        self.timing = timing or Timing()
        self.rtt = rtt
        self.nonce_cache = nonce_cache
        self.family = family
        self.additional_family = additional_family
        self.lifetime = lifetime
        self.state: AllocationState = "new"
        self.relayed: list[tuple[str, int]] = []
        self.mapped: tuple[str, int] | None = None
        self.expires_at: float | None = None
        self.refresh_at: float | None = None
        self.permissions: set[str] = set()
        self.channels: dict[tuple[str, int], int] = {}
        self._permits_asked: dict[str, float] | None = None  # by `permit_on_first_use`
        # When to renew what the server would otherwise forget (RFC 8656 §9, §12):
        # permissions after 4 of their 5 minutes, channels after 9 of their 10.
        self._permission_renewals: dict[tuple[str, int], float] = {}
        self._channel_renewals: dict[tuple[str, int], float] = {}
        # When each lapses on the server unless renewed: ("permission" | "channel", peer).
        self._lapses: dict[tuple[Grant, tuple[str, int]], float] = {}
        self._transport = "stream" if reliable else "udp"
        self._auth: NonceEntry | None = None
        self._key: bytes | None = None
        self._challenged = False
        self._close_by = math.inf
        self._pending: dict[bytes, _Request] = {}
        # Allocates in flight when closing began: heard, never resent (see `close`).
        self._late: dict[bytes, _Request] | None = None
        self._outgoing: list[bytes] = []
        self._events: list[TurnEvent] = []

    def __repr__(self) -> str:
        return f"<Allocation {self.server} {self.state} relayed={self.relayed}>"

    # -- the caller's loop ---------------------------------------------------------

    def start(self, now: float) -> None:
        if self.state != "new":
            raise RuntimeError(f"allocation already {self.state}")
        self.state = "allocating"
        if self.nonce_cache is not None:
            entry = self.nonce_cache.get(self.server, self._transport, self.credentials.username)
            if entry is not None:
                self._authenticate(entry)
        self._send("allocate", Method.ALLOCATE, self._allocate_attributes(), now, self.deadline)

    def next_outgoing(self) -> bytes | None:
        return self._outgoing.pop(0) if self._outgoing else None

    def next_event(self) -> TurnEvent | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        # Plain loops: this runs after every datagram and tick, and compiled, a generator
        # or a min() with a default costs more than the comparisons themselves.
        timer = math.inf
        for request in self._pending.values():
            timer = min(timer, request.transaction.timer)
        if self.state == "allocated" and self.expires_at is not None:
            timer = min(timer, self.expires_at)
            if self.refresh_at is not None:
                timer = min(timer, self.refresh_at)
            for renewal in self._permission_renewals.values():
                timer = min(timer, renewal)
            for renewal in self._channel_renewals.values():
                timer = min(timer, renewal)
        if self.state == "closing":
            timer = min(timer, self._close_by)
        return None if timer == math.inf else timer

    def handle_timer(self, now: float) -> None:
        for transaction_id, request in list(self._pending.items()):
            if transaction_id not in self._pending:
                continue  # dropped while handling an earlier one
            tx = request.transaction
            if tx.expired(now):
                del self._pending[transaction_id]
                self._timed_out(transaction_id, request, now)
            else:
                data = tx.retransmit(now)
                if data is not None:
                    self._outgoing.append(data)
        if self.state == "allocated":
            if self.expires_at is not None and now >= self.expires_at:
                self._expire()
            elif self.refresh_at is not None and now >= self.refresh_at:
                self.refresh_at = None
                attributes = [(Attr.LIFETIME, stun.u32_value(self.lifetime))]
                self._send("refresh", Method.REFRESH, attributes, now, self.expires_at or now)
            if self.state == "allocated":
                self._renew(now)
        elif self.state == "closing" and now >= self._close_by:
            self._closed_now()

    def handle_message(self, data: bytes, now: float) -> bool:
        """A STUN message from the server; True if it answered one of our requests.

        A response to a signed request that fails integrity is dropped as if never
        received (False), so that only the holder of the key can grant, refresh or
        refuse one, but for the 401 and 438 challenges, which come unsigned, and a 437 to
        an Allocate: coturn sends it unsigned, and it only makes us try another socket.
        """
        if len(data) < stun.HEADER_SIZE:
            return False
        if data[8:20] not in self._pending:
            return self._late is not None and self._late_answer(data, now)
        try:
            message = stun.parse(data)
        except stun.StunError:
            return False
        request = self._pending.get(message.transaction_id)
        if request is None or message.method != request.method:
            return False
        error: tuple[int, str] | None = None
        if message.message_class == MessageClass.ERROR:
            try:
                error = message.error_code()
            except stun.StunError:
                return False
            if error is None:
                return False
        elif message.message_class != MessageClass.SUCCESS:
            return False
        challenge = error is not None and error[0] in (401, 438)
        if request.key is None:
            if error is None:
                return False  # TURN always authenticates: an unsigned success is forged
        elif not (
            challenge
            or (error is not None and error[0] == _MISMATCH and request.kind == "allocate")
            or stun.verify_integrity(message, request.key)
        ):
            return False
        del self._pending[message.transaction_id]
        if self.rtt is not None and not self.reliable:
            # Only UDP retransmits by the RTT; over a stream the sample would count the
            # connection's setup too, and skew the UDP RTO for the server's address.
            sample = request.transaction.rtt_sample(now)
            if sample is not None:
                self.rtt.sample(self.server, sample)
        if error is None:
            if self.nonce_cache is not None and self._auth is not None:
                username = self.credentials.username
                self.nonce_cache.put(self.server, self._transport, username, self._auth)
            self._success(request, message, now)
        elif challenge:
            self._challenge(request, message, error, now)
        elif (alternate := _alternate(request, message, error[0])) is not None:
            self.state = "failed"  # nothing was allocated here
            self._pending.clear()
            self._events.append(Redirected(alternate))
        else:
            self._error(request, error[0], error[1], now)
        return True

    def close(self, now: float) -> None:
        """Deallocate with a Refresh of LIFETIME 0 (resent over UDP until `CLOSE_TIMEOUT`);
        never blocks on the server.

        An allocate still in flight is deallocated too when we already hold the key,
        since the server may have created it. The server may also get our Refresh first
        (coturn answers it 437, then creates the allocation): so the Allocate's answer is
        still heard until `CLOSE_TIMEOUT`, and a success is deallocated in turn.
        """
        if self.state in ("closing", "closed", "failed"):
            return
        if self.state == "new" or (self.state == "allocating" and self._key is None):
            self._pending.clear()
            self.state = "closed"
            return
        late: dict[bytes, _Request] = {}  # an allocated one has no Allocate in flight
        if self.state == "allocating":
            late = {t: r for t, r in self._pending.items() if r.kind == "allocate"}
        self._begin_closing(now, late)

    def extend_deadline(self, deadline: float) -> None:
        """The server answered (its other addresses are not needed): the allocation may
        take until `deadline`, the Allocate in flight included."""
        self.deadline = deadline
        for request in self._pending.values():
            if request.kind == "allocate":
                request.transaction.deadline = deadline

    def abandon(self) -> None:
        """Stop deallocating: the server's port bounced the deallocation (ICMP), so there
        is no server there to hold the allocation, and nothing to wait for."""
        if self.state == "closing":
            self._closed_now()

    # -- permissions, channels and data --------------------------------------------

    def create_permission(self, peers: Sequence[tuple[str, int]], now: float) -> None:
        """Install permissions for these peers' IP addresses (ports are ignored by TURN)."""
        self._require_allocated()
        if not peers:
            raise ValueError("no peers")
        peers = [_as_answers_name(peer) for peer in peers]
        for peer in peers:
            self._check_family(peer)
        deadline = now + PERMISSION_DEADLINE
        self._send("permission", Method.CREATE_PERMISSION, [], now, deadline, peers=tuple(peers))

    def permit_on_first_use(self, peer: tuple[str, int], now: float) -> None:
        """Ask for the peer's permission, unless it is installed or was asked for less
        than `PERMISSION_DEADLINE` ago (a request that failed is asked again, but not at
        every datagram): the server drops data to a peer it does not permit (RFC 8656 §9).
        ValueError for a peer of a family it does not relay (`create_permission`), and
        then nothing is noted as asked."""
        if peer[0] in self.permissions:
            return
        peer = _as_answers_name(peer)  # as permissions are kept
        if peer[0] in self.permissions:
            return
        if self._permits_asked is None:
            self._permits_asked = {}
        if now < self._permits_asked.get(peer[0], -math.inf) + PERMISSION_DEADLINE:
            return
        self.create_permission([peer], now)
        self._permits_asked[peer[0]] = now

    def channel_bind(self, peer: tuple[str, int], channel: int, now: float) -> None:
        self._require_allocated()
        peer = _as_answers_name(peer)
        self._check_family(peer)
        attributes = [(Attr.CHANNEL_NUMBER, stun.channel_number_value(channel))]
        deadline = now + PERMISSION_DEADLINE
        self._send("channel", Method.CHANNEL_BIND, attributes, now, deadline, peers=(peer,))

    def channel_for(self, peer: tuple[str, int]) -> int:
        """The peer's channel number, bound or being bound, else the lowest free one: a
        number already in use, or a second one for a bound peer, earns a 400 (RFC 8656 §12)."""
        peer = _as_answers_name(peer)  # as channels are kept
        numbers = dict(self.channels)
        for request in self._pending.values():
            if request.kind == "channel":
                numbers[request.peers[0]] = _channel(request)
        if peer in numbers:
            return numbers[peer]
        used = set(numbers.values())
        for channel in range(0x4000, 0x5000):
            if channel not in used:
                return channel
        raise ValueError("no channel numbers left on this allocation")

    def wrap_send(self, peer: tuple[str, int], data: BytesLike) -> bytes:
        """Data for a peer: ChannelData when a channel is bound, else a Send indication.

        ValueError when it would not fit in one message (or, over UDP, one datagram), or
        for a peer of a family the allocation does not relay (the server would drop it).
        """
        if not isinstance(data, bytes):  # the annotation is the whole union: mypyc checks it
            if not isinstance(data, bytearray | memoryview):
                raise TypeError(f"data must be bytes, not {type(data).__name__}")
            data = bytes(data)
        self._check_family(peer)
        channel = self.channels.get(peer)
        if channel is None:
            transaction_id = stun.new_transaction_id()
            attributes = [
                (Attr.XOR_PEER_ADDRESS, stun.xor_address_value(*peer, transaction_id)),
                (Attr.DATA, data),
            ]
        try:
            if channel is None:
                wire = stun.encode(Method.SEND, MessageClass.INDICATION, transaction_id, attributes)
            else:
                wire = stun.encode_channel_data(channel, data, pad=self.reliable)
        except ValueError:  # a length field of 16 bits
            raise ValueError(_too_big(data)) from None
        if not self.reliable and len(wire) > _MAX_UDP_PAYLOAD[":" in self.server[0]]:
            raise ValueError(_too_big(data))
        return wire

    def unwrap(self, data: bytes) -> tuple[tuple[str, int], bytes] | None:
        """(peer, payload) of a Data indication or ChannelData; None for anything else,
        and for a Data indication from a peer we never permitted (RFC 8656 §11.6: it has
        no integrity, so it may be forged)."""
        try:
            if stun.is_channel_data(data):
                channel, frame = stun.parse_channel_data(data)
                for peer, bound in self.channels.items():
                    if bound == channel:
                        return peer, frame
                return None
            message = stun.parse(data)
            if message.method != Method.DATA or message.message_class != MessageClass.INDICATION:
                return None
            source = message.xor_peer_address()
            payload = message.get(Attr.DATA)
        except stun.StunError:
            return None
        if source is None or payload is None or not self._permits(source[0]):
            return None
        return source, payload

    def _permits(self, address: str) -> bool:
        """Whether a permission for this peer address is installed or asked for (its
        data may overtake the server's answer). Both name peers as answers do
        (`_as_answers_name`), so a flood of forged data costs a lookup each, and a look
        through the few permission and channel requests in flight."""
        if address in self.permissions:
            return True
        return any(address == peer[0] for r in self._pending.values() for peer in r.peers)

    # -- internals -----------------------------------------------------------------

    def _allocate_attributes(self) -> list[tuple[int, bytes]]:
        attributes: list[tuple[int, bytes]] = [
            (Attr.REQUESTED_TRANSPORT, stun.requested_transport_value(17)),
            (Attr.LIFETIME, stun.u32_value(self.lifetime)),
        ]
        if self.family == socket.AF_INET6:
            value = stun.requested_address_family_value(stun.FAMILY_IPV6)
            attributes.append((Attr.REQUESTED_ADDRESS_FAMILY, value))
        if self.additional_family:
            value = stun.requested_address_family_value(stun.FAMILY_IPV6)
            attributes.append((Attr.ADDITIONAL_ADDRESS_FAMILY, value))
        return attributes

    def _authenticate(self, entry: NonceEntry) -> None:
        previous, self._auth = self._auth, entry
        if (
            previous is not None
            and previous.realm == entry.realm
            and previous.algorithm == entry.algorithm
        ):
            return  # a new nonce alone (438) keeps the key
        creds = self.credentials
        self._key = stun.long_term_key(creds.username, entry.realm, creds.password, entry.algorithm)

    def _send(
        self,
        kind: RequestKind,
        method: Method,
        attributes: Sequence[tuple[int, bytes]],
        now: float,
        deadline: float,
        *,
        peers: tuple[tuple[str, int], ...] = (),
        stale_retries: int = 0,
    ) -> None:
        transaction_id = stun.new_transaction_id()
        # XOR-PEER-ADDRESS depends on the transaction id (IPv6), so it is built per send.
        wire = [*attributes] + [
            (Attr.XOR_PEER_ADDRESS, stun.xor_address_value(*peer, transaction_id)) for peer in peers
        ]
        auth, key = self._auth, self._key
        if auth is None or key is None:
            data = stun.encode(method, MessageClass.REQUEST, transaction_id, wire)
        else:
            wire += [
                (Attr.USERNAME, self.credentials.username.encode()),
                (Attr.REALM, auth.realm.encode()),
                (Attr.NONCE, auth.nonce),
            ]
            if auth.algorithms is not None:
                chosen = stun.password_algorithm_value(auth.algorithm)
                wire.append((Attr.PASSWORD_ALGORITHMS, auth.algorithms))
                wire.append((Attr.PASSWORD_ALGORITHM, chosen))
            data = stun.encode(
                method, MessageClass.REQUEST, transaction_id, wire,
                integrity_key=key, integrity_sha256=auth.use_sha256,
            )  # fmt: skip
        timing = self.timing
        rto = timing.initial_rto if self.rtt is None else self.rtt.rto(self.server, timing)
        tx = StunTransaction(data, now=now, rto=rto, deadline=deadline, reliable=self.reliable)
        self._pending[transaction_id] = _Request(
            kind, method, attributes, key, tx, peers, stale_retries
        )
        self._outgoing.append(data)

    def _resend(self, request: _Request, now: float, stale_retries: int) -> None:
        deadline = request.transaction.deadline
        self._send(
            request.kind, request.method, request.attributes, now, deadline,
            peers=request.peers, stale_retries=stale_retries,
        )  # fmt: skip

    def _success(self, request: _Request, message: stun.Message, now: float) -> None:
        if request.kind == "allocate":
            self._allocated(message, now)
        elif request.kind == "refresh":
            lifetime = _lifetime(message)
            if lifetime is None or lifetime == 0:
                self._expire()
                return
            self._schedule(lifetime, now)
            self._events.append(Refreshed(lifetime))
        elif request.kind == "close":
            self._deallocation_over()
        elif request.kind == "permission":
            self.permissions.update(address for address, _ in request.peers)
            for peer in request.peers:
                self._installed("permission", peer, now)
        elif request.kind == "channel":
            channel = _channel(request)
            self.channels = {p: c for p, c in self.channels.items() if c != channel}
            self.channels[request.peers[0]] = channel
            self.permissions.add(request.peers[0][0])
            self._installed("channel", request.peers[0], now)
            # It installed the peer's permission too, which lasts 300 s, not the channel's 600.
            self._installed("permission", request.peers[0], now)

    def _renewals(self, kind: Grant) -> dict[tuple[str, int], float]:
        """When each peer's permission, or channel, is to be renewed."""
        return self._permission_renewals if kind == "permission" else self._channel_renewals

    def _installed(self, kind: Grant, peer: tuple[str, int], now: float) -> None:
        """The server holds a permission or channel for `peer`: renew it before it lapses."""
        renew_after = PERMISSION_RENEW_AFTER if kind == "permission" else CHANNEL_RENEW_AFTER
        self._renewals(kind)[peer] = now + renew_after
        self._lapses[kind, peer] = now + _LIFETIMES[kind]

    def _renew(self, now: float) -> None:
        """Keep permissions and channels alive for as long as the allocation lives."""
        due = [peer for peer, at in self._permission_renewals.items() if at <= now]
        for peer in due:
            del self._permission_renewals[peer]
        if due:
            self.create_permission(due, now)
        for peer, at in list(self._channel_renewals.items()):
            if at <= now:
                del self._channel_renewals[peer]
                channel = self.channels.get(peer)
                if channel is not None:
                    self.channel_bind(peer, channel, now)

    def _allocated(self, message: stun.Message, now: float) -> None:
        try:
            answered = message.xor_relayed_addresses()
        except stun.StunError:
            answered = []
        relayed: list[tuple[str, int]] = []
        unusable: list[UnusableAddress] = []  # 0.0.0.0 or a multicast group is no candidate
        for address in answered:
            try:
                usable = answered_address(address)
            except UnusableAddress as error:
                unusable.append(error)
                continue
            if all((":" in usable[0]) != (":" in other[0]) for other in relayed):
                relayed.append(usable)  # one per family: a server may name no more
        if not relayed:  # granted all the same: the server holds it until released
            reason = "TURN allocate response has no valid XOR-RELAYED-ADDRESS."
            if unusable:
                reason = f"TURN server's relayed address {unusable[0]}."
            self._fail_granted(700, reason, now, {})
            return
        try:
            mapped = message.xor_mapped_address()
            mapped = None if mapped is None else answered_address(mapped)
        except (stun.StunError, UnusableAddress):
            mapped = None  # no srflx from it; the relay is still good
        try:
            address_error = message.address_error_code()
        except stun.StunError:
            address_error = None
        lifetime = _lifetime(message) or self.lifetime
        self.state = "allocated"
        self.relayed = relayed
        self.mapped = mapped
        self._schedule(lifetime, now)
        self._events.append(Allocated(list(relayed), mapped, lifetime))
        for flawed in unusable:  # a dual allocation's other family, say: the first relays
            af = socket.AF_INET6 if ":" in flawed.address[0] else socket.AF_INET
            self._events.append(AddressFamilyError(af, 700, f"relayed address {flawed}"))
        if address_error is not None and self.additional_family:
            family, code, reason = address_error
            af = socket.AF_INET6 if family == stun.FAMILY_IPV6 else socket.AF_INET
            self._events.append(AddressFamilyError(af, code, self._clean(reason)))

    def _challenge(
        self, request: _Request, message: stun.Message, error: tuple[int, str], now: float
    ) -> None:
        """401 or 438: learn the realm and nonce, then sign the request again, boundedly."""
        code, reason = error
        if code == 401:
            retry = request.kind == "allocate" and not self._challenged
            self._challenged = True
            stale_retries = request.stale_retries
        else:
            retry = request.stale_retries < _MAX_STALE_RETRIES
            stale_retries = request.stale_retries + 1
        entry = _nonce_entry(message, self._auth) if retry else None
        if entry is not None and entry.algorithms is None and _promises_algorithms(entry.nonce):
            entry = None  # RFC 8489 §9.2.4: not retried, or MD5 is forced on us
            reason = "PASSWORD-ALGORITHMS missing, though the server's nonce cookie promises it"
        if entry is None:
            if code == 401 and request.key is not None and self.nonce_cache is not None:
                self.nonce_cache.discard(self.server, self._transport, self.credentials.username)
            self._error(request, code, reason, now)
            return
        self._authenticate(entry)
        self._resend(request, now, stale_retries)

    def _error(self, request: _Request, code: int, reason: str, now: float) -> None:
        reason = self._clean(reason)
        if request.kind == "allocate":
            self._fail(code, f"TURN allocate failed: {code} {reason}".rstrip())
        else:
            self._request_failed(request, code, reason, now)

    def _timed_out(self, transaction_id: bytes, request: _Request, now: float) -> None:
        if request.kind != "allocate":
            self._request_failed(request, TIMED_OUT, "timed out", now)
            return
        reason = "TURN allocate request timed out."
        if request.key is None:
            self._fail(TIMED_OUT, reason)
        else:  # a signed one may yet be granted, only late (a long RTT, a lost answer)
            self._fail_granted(TIMED_OUT, reason, now, {transaction_id: request})

    def _request_failed(self, request: _Request, code: int, reason: str, now: float) -> None:
        """A request other than an Allocate refused or unanswered: a lost refresh is a
        lost allocation, a lost deallocation an ended one; a permission or channel is
        tried again while it lasts (`_renewal_failed`), and the failure told."""
        kind = request.kind
        if kind == "refresh":
            self._expire()
        elif kind == "close":
            self._deallocation_over()
        elif kind == "permission" or kind == "channel":
            self._renewal_failed(kind, request.peers, now)
            self._events.append(RequestFailed(request.method.name, code, reason, request.peers))

    def _renewal_failed(self, kind: Grant, peers: tuple[tuple[str, int], ...], now: float) -> None:
        """Try a failed renewal again while what it renews lasts on the server; after
        that, the permission (or channel) is gone, and no longer listed as installed."""
        renewals = self._renewals(kind)
        for peer in peers:
            lapse = self._lapses.get((kind, peer))
            if lapse is None:
                continue  # not a renewal: nothing was installed
            if now + _RENEWAL_RETRY < lapse:
                renewals[peer] = now + _RENEWAL_RETRY
                continue
            del self._lapses[kind, peer]
            if kind == "channel":
                self.channels.pop(peer, None)
            elif not any(k == "permission" and p[0] == peer[0] for k, p in self._lapses):
                self.permissions.discard(peer[0])

    def _schedule(self, lifetime: int, now: float) -> None:
        self.expires_at = now + lifetime
        margin = _REFRESH_MARGIN if lifetime > 2 * _REFRESH_MARGIN else lifetime / 2
        self.refresh_at = now + lifetime - margin

    def _fail(self, code: int, reason: str) -> None:
        self.state = "failed"
        self._pending.clear()
        self._events.append(AllocationFailed(code, reason))

    def _fail_granted(
        self, code: int, reason: str, now: float, late: dict[bytes, _Request]
    ) -> None:
        """Fail, where the server has or may have allocated all the same (a success we
        cannot use; a signed Allocate whose answer was lost or is late): release it, as
        `close` does one in flight. The Allocate `late` in answering is still heard until
        `CLOSE_TIMEOUT`, and its success released in turn. Unreleased, the server would
        hold the allocation, and the user's quota, for its whole lifetime."""
        self._events.append(AllocationFailed(code, reason))
        self._begin_closing(now, late)

    def _begin_closing(self, now: float, late: dict[bytes, _Request]) -> None:
        """Release what the server holds or may hold: a deallocation out until
        `_close_by`, and the Allocates in flight (`late`) still heard until then, a
        success released in turn."""
        self._pending.clear()
        self.state = "closing"
        self._close_by = now + CLOSE_TIMEOUT
        if late:
            self._late = late
        self._send_deallocation(now)

    def _send_deallocation(self, now: float) -> None:
        """The deallocation: a Refresh of lifetime 0, resent over UDP until `_close_by`."""
        attributes = [(Attr.LIFETIME, stun.u32_value(0))]
        self._send("close", Method.REFRESH, attributes, now, self._close_by)

    def _expire(self) -> None:
        self.state = "closed"
        self._pending.clear()
        self.expires_at = self.refresh_at = None
        self._events.append(AllocationExpired())

    def _late_answer(self, data: bytes, now: float) -> bool:
        """An answer to an Allocate that was in flight when closing began (see `close`)."""
        assert self._late is not None
        try:
            message = stun.parse(data)
        except stun.StunError:
            return False
        request = self._late.get(message.transaction_id)
        if request is None or request.key is None or message.method != Method.ALLOCATE:
            return False
        if message.message_class == MessageClass.SUCCESS:
            if not stun.verify_integrity(message, request.key):
                return False
            del self._late[message.transaction_id]
            if self.state == "closing":  # our Refresh may have come before it: once more
                self._pending.clear()
                self._send_deallocation(now)
        elif message.message_class == MessageClass.ERROR:
            del self._late[message.transaction_id]  # nothing was created
        else:
            return False
        if not self._late and not self._pending and self.state == "closing":
            self._closed_now()
        return True

    def _deallocation_over(self) -> None:
        """The deallocation answered, or given up on: closed, unless an Allocate in flight
        may yet create the allocation, whose answer is then waited for (`_late`)."""
        if self._late:
            self._pending.clear()
            return
        self._closed_now()

    def _closed_now(self) -> None:
        self._late = None
        self.state = "closed"
        self._pending.clear()
        self.expires_at = self.refresh_at = None

    def _check_family(self, peer: tuple[str, int]) -> None:
        """A peer of a family the allocation does not relay would only earn a 443."""
        ipv6 = ":" in peer[0]
        if not any((":" in address) == ipv6 for address, _ in self.relayed):
            family = "IPv6" if ipv6 else "IPv4"
            raise ValueError(f"peer {peer[0]} is {family}, and this allocation relays no {family}")

    def _require_allocated(self) -> None:
        if self.state != "allocated":
            raise RuntimeError(f"allocation is {self.state}, not allocated")

    def _clean(self, reason: str) -> str:
        """Server text, bounded and printable, and never echoing the password."""
        text = stun.readable(reason)
        password = self.credentials.password
        return text.replace(password, "***") if password else text


def _alternate(request: _Request, message: stun.Message, code: int) -> tuple[str, int] | None:
    """Where a 300 to an Allocate sends us. Only an answer to an unsigned request or a
    verified one gets here, so a forger can redirect no more than it could fail it."""
    if code != 300 or request.kind != "allocate":
        return None
    try:
        return message.alternate_server()
    except stun.StunError:
        return None


def _nonce_entry(message: stun.Message, previous: NonceEntry | None) -> NonceEntry | None:
    """The realm, nonce and password algorithm a 401/438 offers; None if unusable."""
    try:
        realm = message.realm()
        offered = message.password_algorithms()
    except stun.StunError:
        return None
    nonce = message.nonce()
    if nonce is None:
        return None
    if realm is None:  # a 438 may omit what has not changed
        if previous is None:
            return None
        realm = previous.realm
    algorithms = message.get(Attr.PASSWORD_ALGORITHMS)
    if max(len(realm.encode()), len(nonce), len(algorithms or b"")) > _MAX_AUTH_VALUE:
        return None  # echoed in every signed request: an oversized one could not be sent
    if offered is None:
        return NonceEntry(realm, nonce)
    ids = [algorithm for algorithm, _ in offered]
    for algorithm in (stun.PASSWORD_ALGORITHM_SHA256, stun.PASSWORD_ALGORITHM_MD5):
        if algorithm in ids:
            return NonceEntry(realm, nonce, algorithm, algorithms)
    return None


def _promises_algorithms(nonce: bytes) -> bool:
    """Whether the nonce starts with a nonce cookie whose "Password algorithms" feature
    is set: then the server sends PASSWORD-ALGORITHMS, and a challenge without it has
    had it removed on the way, to bid the key down to MD5."""
    if not nonce.startswith(_NONCE_COOKIE):
        return False
    try:
        features = binascii.a2b_base64(nonce[9:13], strict_mode=True)
    except binascii.Error:
        return False
    return len(features) == 3 and features[2] & 1 == 1  # bit 0 is the rightmost (erratum 6290)


def _too_big(data: bytes) -> str:
    return f"{len(data)} bytes of data are more than one relayed datagram carries"


def _lifetime(message: stun.Message) -> int | None:
    try:
        return message.lifetime()
    except stun.StunError:
        return None


def _channel(request: _Request) -> int:
    for attr, value in request.attributes:
        if attr == Attr.CHANNEL_NUMBER:
            return value[0] << 8 | value[1]
    raise AssertionError("ChannelBind without CHANNEL-NUMBER")
