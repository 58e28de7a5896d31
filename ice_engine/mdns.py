"""mDNS names for host candidates (draft-ietf-mmusic-mdns-ice-candidates).

A browser hides a host candidate's address behind a random name, ``<UUIDv4>.local``, and
answers multicast DNS (RFC 6762) queries for it on the local link, so only peers on the
same link learn the address. This module holds the pieces:

- `new_mdns_name` and `is_mdns_candidate_address`;
- `MdnsResponder`: answers A/AAAA queries for the names registered with it, on UDP 5353
  (224.0.0.251 and ff02::fb). One per event loop is enough for every gatherer in the
  process: `shared_responder`, held with `acquire` / `release`;
- `resolve_mdns`: a one-shot query (RFC 6762 §5.1) for a remote candidate's name.

Packets are parsed and built with dnspython (docs/mdns.md has the measurements behind
that choice). The packet logic, `MdnsResponder.handle_query`, does no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import re
import secrets
import socket
import struct
import sys
import time
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import ifaddr

from .transaction import positive_seconds

__all__ = [
    "LEGACY_TTL_S",
    "MDNS_GROUP_V4",
    "MDNS_GROUP_V6",
    "MDNS_PORT",
    "RECORD_TTL_S",
    "MdnsReply",
    "MdnsResolutionError",
    "MdnsResponder",
    "is_mdns_candidate_address",
    "new_mdns_name",
    "resolve_mdns",
    "shared_responder",
]

log = logging.getLogger(__name__)

MDNS_PORT = 5353
MDNS_GROUP_V4 = "224.0.0.251"
MDNS_GROUP_V6 = "ff02::fb"
RECORD_TTL_S = 120
"""TTL of the A/AAAA answers (RFC 6762 §10: 120 s for records that name a host)."""
LEGACY_TTL_S = 10
"""TTL cap in answers to legacy unicast queries (RFC 6762 §6.7)."""

_TOP_BIT = 0x8000
"""In a question's class: unicast response wanted (QU). In a record's: cache flush."""
_IN = dns.rdataclass.IN
_IN_FLUSH = dns.rdataclass.RdataClass.make(_IN | 0x8000)
"""Class IN with the top bit: QU in a question, cache flush in a record."""
_A = dns.rdatatype.A
_AAAA = dns.rdatatype.AAAA
_ANY = dns.rdatatype.ANY
_QR_BIT = 0x8000
_OPCODE_MASK = 0x7800
_RESPONSE_FLAGS = dns.flags.QR | dns.flags.AA
_MAX_DATAGRAM = 9000
"""RFC 6762 §17: mDNS messages up to 9000 bytes."""
_RECEIVE_BATCH = 64
"""Datagrams read per wake-up, so a flood cannot starve the loop."""
_RECEIVE_BUDGET_S = 0.005
"""And at most this much time per wake-up: the rest waits for the next one."""
_MAX_QUESTIONS = 32
"""Questions read from one query; the rest are ignored. dnspython takes about 16 µs a
question: one 9 kB query repeating a name 1490 times held the loop for 43 ms."""
_MAX_KNOWN_ANSWERS = 32
"""Known answers read from one query (RFC 6762 §7.1); the rest are ignored, which at
worst sends an answer the querier already had."""
_MULTICAST_INTERVAL = 1.0
"""RFC 6762 §6: the same answer is multicast at most once a second on an interface, so
that a flood of queries cannot make us flood the link."""
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python 3.11 lacks the name
_LINUX = sys.platform.startswith("linux")
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux values: Python lacks
_IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)  # both names
_IN_PKTINFO = struct.Struct("=i4s4s")
_IN6_PKTINFO = struct.Struct("=16sI")
_GROUP_V4_PACKED = socket.inet_aton(MDNS_GROUP_V4)
_GROUP_V6_PACKED = socket.inet_pton(socket.AF_INET6, MDNS_GROUP_V6)
_CMSG_SPACE = socket.CMSG_SPACE(_IN6_PKTINFO.size)
_COUNTS = struct.Struct("!HHHH")
"""A DNS header's four section counts (question, answer, authority, additional)."""
_RESOLVE_RESENDS_S = (0.0, 0.25, 0.75)
"""When `resolve_mdns` sends its query, in seconds after the start (within the timeout)."""

_UUID_LABEL = re.compile(
    rb"\x24([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", re.IGNORECASE
)
"""A UUID label on the wire (length byte 36): the pre-filter's key."""
_UUID_LOCAL = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.local\.?", re.IGNORECASE
)


class MdnsResolutionError(OSError):
    """An mDNS name got no answer in time; ``name`` is the name asked for."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"mDNS name {name!r} not resolved within {timeout:g} s")
        self.name = name
        self.timeout = timeout


def new_mdns_name() -> str:
    """A fresh name for one local address: a random (version 4) UUID under ``.local``."""
    return f"{uuid.uuid4()}.local"


def is_mdns_candidate_address(address: str) -> bool:
    """Whether a candidate's connection address is an mDNS name (``<UUID>.local``).

    Browsers use UUIDv4 names; any UUID-shaped label is accepted, in any case, with or
    without the final dot. IP literals and other host names are not mDNS candidates.
    """
    return _UUID_LOCAL.fullmatch(address) is not None


def _to_name(name: str) -> dns.name.Name:
    """A ``.local`` name as dnspython's (case-insensitive) Name; ValueError otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"an mDNS name is a str, not {type(name).__name__}")
    try:
        parsed = dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise ValueError(f"not a DNS name: {name!r}") from exc
    if len(parsed.labels) < 3 or parsed.labels[-2].lower() != b"local":
        raise ValueError(f"not an mDNS name (under .local): {name!r}")
    return parsed


def _ip(value: object, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IP address `value` gives (an IPv6 one may carry a %zone); else TypeError or
    ValueError naming `what`, at the call rather than as a socket error later."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be an IP address (str), not {type(value).__name__}")
    try:
        return ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        raise ValueError(f"{what} must be an IP address, not {value!r}") from None


@dataclass(frozen=True, slots=True)
class MdnsReply:
    """What `MdnsResponder.handle_query` wants sent in answer to one query."""

    payload: bytes
    unicast: bool
    """True: to the querier's address and port. False: to the group, port 5353."""


@dataclass(slots=True)
class _Record:
    address: str
    rdtype: dns.rdatatype.RdataType
    packed: bytes
    index: int | None = None
    """The index of the interface holding `address` (0: none does); None until the
    responder has looked (`MdnsResponder._settle`)."""

    @property
    def group(self) -> tuple[int, int]:
        """The group membership that hears queries for it: (IP version, interface)."""
        return (4 if self.rdtype == _A else 6, self.index or 0)


class MdnsResponder:
    """Answers mDNS A/AAAA queries for registered names (RFC 6762).

    ``register(name, address)`` adds a name; ``await start()`` binds UDP 5353 (IPv4, and
    IPv6 where the host has it) with SO_REUSEADDR/SO_REUSEPORT, so it coexists with other
    responders (Avahi, another process), and joins the groups on the interface of every
    registered address and on ``interfaces`` (local addresses). Queries for other names,
    responses, and anything unparsable are ignored. ``await close()`` closes the sockets;
    nothing runs after it.

    A query is answered only for names whose address is on the interface it came in on
    (RFC 6762 §15): a link never learns the addresses the host has on another.

    Answers: multicast to the group, or unicast to the querier when a question has the QU
    bit; records carry the cache-flush bit and a TTL of 120 s. A query from a port other
    than 5353 (a one-shot or legacy querier, RFC 6762 §6.7) gets a unicast answer with its
    ID and question echoed, a 10 s TTL and no cache-flush bit. For a registered name
    asked about in the other family, an NSEC record says there is no such address
    (RFC 6762 §6.1), so the asker need not wait.
    """

    def __init__(self, *, interfaces: Iterable[str] = (), ipv6: bool = True) -> None:
        self._records: dict[dns.name.Name, _Record] = {}
        self._labels: dict[bytes, int] = {}
        """First labels (lowercase) of registered UUID names, counted: the pre-filter."""
        self._other_names = 0
        """Registered names that are not ``<UUID>.local``: while any, no pre-filter."""
        self._cache: dict[tuple[dns.name.Name, int, bool], bytes] = {}
        if isinstance(interfaces, str):  # one address, not a list of its characters
            raise TypeError(f"interfaces must be a list of IP addresses, not {interfaces!r}")
        self._interfaces = list(interfaces)
        for address in self._interfaces:
            _ip(address, "an mDNS interface address")
        self._ipv6 = ipv6
        self._sockets: dict[int, socket.socket] = {}
        self._joined: set[tuple[int, int]] = set()
        """Group memberships held: (IP version, interface index)."""
        self._interface_groups: set[tuple[int, int]] = set()
        """The memberships `interfaces` asked for: kept while the responder runs."""
        self._settling: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._users = 0
        self._lock = asyncio.Lock()
        self._shared_on: asyncio.AbstractEventLoop | None = None  # set by shared_responder
        self.queries_answered = 0
        """Replies `handle_query` produced (a multicast one may then be held back: see
        `_MULTICAST_INTERVAL`)."""
        self._multicast_at: dict[tuple[bytes, int], float] = {}
        """When each reply was last multicast, per interface index (RFC 6762 §6)."""
        self._clock = time.monotonic
        self._timer = time.perf_counter

    # -- names ---------------------------------------------------------------------------

    def register(self, name: str, address: str) -> None:
        """Answer for ``name`` (``<something>.local``) with the IP literal ``address``.

        Registering a name again replaces its address. Once started, the responder joins
        the group on the interface that holds ``address``.
        """
        key = _to_name(name)
        ip = _ip(address, "an mDNS name's address")
        rdtype = _A if ip.version == 4 else _AAAA
        self._forget(key)
        self._records[key] = _Record(address, rdtype, ip.packed)
        label = key.labels[0].lower()
        if len(key.labels) == 3 and _UUID_LABEL.fullmatch(bytes([len(label)]) + label):
            self._labels[label] = self._labels.get(label, 0) + 1
        else:
            self._other_names += 1
        loop = self._loop
        if self._sockets and self._settling is None and loop is not None and not loop.is_closed():
            # one look at the interfaces for every name registered in this loop iteration
            self._settling = loop.call_soon(self._settle)

    def unregister(self, name: str) -> None:
        """Stop answering for ``name``; unknown names are ignored."""
        with contextlib.suppress(ValueError):
            self._forget(_to_name(name))

    @property
    def names(self) -> dict[str, str]:
        """The registered names and their addresses."""
        return {k.to_text(omit_final_dot=True): r.address for k, r in self._records.items()}

    def _forget(self, key: dns.name.Name) -> None:
        record = self._records.pop(key, None)
        if record is None:
            return
        label = key.labels[0].lower()
        if len(key.labels) == 3 and label in self._labels:
            self._labels[label] -= 1
            if not self._labels[label]:
                del self._labels[label]
        else:
            self._other_names -= 1
        for cached in [c for c in self._cache if c[0] == key]:
            del self._cache[cached]
        if record.index:
            self._leave_if_unused(record.group, record.address)

    # -- the packet logic (no I/O) -------------------------------------------------------

    def handle_query(
        self, data: bytes, source_port: int = MDNS_PORT, interface: int = 0
    ) -> MdnsReply | None:
        """The reply to one received datagram, or None when it calls for none.

        ``interface`` is the index of the interface the datagram came in on: only names
        whose address is on it are answered (RFC 6762 §15). 0, unknown, answers for
        every name.
        """
        if len(data) < 12 or not self._records:
            return None
        flags = (data[2] << 8) | data[3]
        if flags & (_QR_BIT | _OPCODE_MASK) or data[4:6] == b"\x00\x00":
            return None  # a response, another opcode, or no question
        if not self._other_names and not any(
            m.group(1).lower() in self._labels for m in _UUID_LABEL.finditer(data)
        ):
            return None  # none of our names' labels is in it: not for us, no need to parse
        counts = _COUNTS.unpack_from(data, 4)
        if counts[0] > _MAX_QUESTIONS:  # the known answers lie past the questions left out
            wanted = (_MAX_QUESTIONS, 0, 0, 0)
        else:
            wanted = (counts[0], min(counts[1], _MAX_KNOWN_ANSWERS), 0, 0)
        if counts != wanted:  # parse only that much: the rest counts as trailing bytes
            data = data[:4] + _COUNTS.pack(*wanted) + data[12:]
        try:
            query = dns.message.from_wire(data, ignore_trailing=True)
        except Exception:  # untrusted bytes: whatever dnspython rejects is dropped
            return None
        legacy = source_port != MDNS_PORT
        known = self._known_answers(query)
        answers: list[tuple[dns.name.Name, int, bool]] = []  # (name, rdtype, positive)
        answered: list[tuple[dns.rrset.RRset, tuple[dns.name.Name, int, bool]]] = []
        seen: set[tuple[int, int, int]] = set()
        unicast = legacy
        multicast_asked = False
        for question in query.question:
            record = self._records.get(question.name)
            if record is None or question.rdclass & ~_TOP_BIT not in (_IN, dns.rdataclass.ANY):
                continue
            asked = (id(record), question.rdtype, question.rdclass)
            if asked in seen:
                continue  # the same question again
            seen.add(asked)
            if interface and record.index != interface:
                continue  # its address is not on the link the query came from (§15)
            if question.rdtype not in (_A, _AAAA, _ANY):
                continue
            if question.rdtype in (record.rdtype, _ANY):
                if (question.name, record.packed) in known:
                    continue
                answer = (question.name, record.rdtype, True)
            else:
                answer = (question.name, question.rdtype, False)
            answered.append((question, answer))
            if answer not in answers:
                answers.append(answer)
            if question.rdclass & _TOP_BIT:
                unicast = True
            else:
                multicast_asked = True
        if not answers:
            return None
        if not legacy and multicast_asked:
            unicast = False
        self.queries_answered += 1
        if legacy:
            return MdnsReply(self._legacy_reply(query.id, answered), True)
        if len(answers) == 1:
            return MdnsReply(self._cached_reply(*answers[0]), unicast)
        return MdnsReply(self._build_reply(answers), unicast)

    @staticmethod
    def _known_answers(query: dns.message.Message) -> set[tuple[dns.name.Name, bytes]]:
        """Answers the querier already holds with at least half our TTL (RFC 6762 §7.1)."""
        known: set[tuple[dns.name.Name, bytes]] = set()
        for rrset in query.answer:
            if (
                rrset.rdtype in (_A, _AAAA)
                and rrset.rdclass & ~_TOP_BIT == _IN
                and rrset.ttl >= RECORD_TTL_S // 2
            ):
                for rdata in rrset:
                    with contextlib.suppress(ValueError):  # untrusted: not an address
                        known.add((rrset.name, _rdata_bytes(rdata)))
        return known

    def _cached_reply(self, name: dns.name.Name, rdtype: int, positive: bool) -> bytes:
        key = (name, rdtype, positive)
        payload = self._cache.get(key)
        if payload is None:
            payload = self._cache[key] = self._build_reply([key])
        return payload

    def _rrset(
        self,
        name: dns.name.Name,
        positive: bool,
        rdclass: dns.rdataclass.RdataClass,
        ttl: int,
    ) -> dns.rrset.RRset:
        record = self._records[name]
        if positive:
            kind, data = record.rdtype, record.packed
        else:
            kind, data = dns.rdatatype.NSEC, _nsec_data(name, record.rdtype)
        rrset = dns.rrset.RRset(name, rdclass, kind)
        rrset.add(dns.rdata.GenericRdata(rdclass, kind, data), ttl)
        return rrset

    def _build_reply(self, answers: list[tuple[dns.name.Name, int, bool]]) -> bytes:
        """A multicast or QU reply: as many of the answers as fit in 9000 bytes (§17)."""
        count = len(answers)
        while True:
            reply = dns.message.Message(id=0)
            reply.flags = _RESPONSE_FLAGS
            for name, _, positive in answers[:count]:
                reply.answer.append(self._rrset(name, positive, _IN_FLUSH, RECORD_TTL_S))
            try:
                return reply.to_wire(max_size=_MAX_DATAGRAM)
            except dns.exception.TooBig:  # long names: the rest wait for the next query
                count //= 2  # one answer always fits: a name is at most 255 bytes

    def _legacy_reply(
        self,
        query_id: int,
        answered: list[tuple[dns.rrset.RRset, tuple[dns.name.Name, int, bool]]],
    ) -> bytes:
        """A legacy unicast reply (§6.7): the query's ID, and the questions answered,
        each echoed before the answers. If that would not fit in 9000 bytes (§17), the
        later questions are left out, echo and answer alike."""
        count = len(answered)
        while True:
            reply = dns.message.Message(id=query_id)
            reply.flags = _RESPONSE_FLAGS
            for question, _ in answered[:count]:
                reply.question.append(dns.rrset.RRset(question.name, _IN, question.rdtype))
            for name, _, positive in _unique([a for _, a in answered[:count]]):
                reply.answer.append(self._rrset(name, positive, _IN, LEGACY_TTL_S))
            try:
                return reply.to_wire(max_size=_MAX_DATAGRAM)
            except dns.exception.TooBig:
                count //= 2

    # -- sockets -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return bool(self._sockets)

    async def start(self) -> None:
        """Bind UDP 5353 and join the groups; idempotent. OSError if IPv4 cannot bind."""
        if self._sockets:
            return
        self._loop = asyncio.get_running_loop()
        sock = _bind(socket.AF_INET)
        self._sockets[socket.AF_INET] = sock
        self._loop.add_reader(sock.fileno(), self._readable, sock)
        if self._ipv6 and socket.has_ipv6:
            try:
                sock6 = _bind(socket.AF_INET6)
            except OSError as exc:
                log.debug("mDNS responder: no IPv6 socket: %s", exc)
            else:
                self._sockets[socket.AF_INET6] = sock6
                self._loop.add_reader(sock6.fileno(), self._readable, sock6)
        self._settle(everything=True)

    async def close(self) -> None:
        """Close the sockets (leaving the groups); names stay registered. Idempotent."""
        sockets, self._sockets = self._sockets, {}
        self._joined.clear()
        self._interface_groups.clear()
        if self._settling is not None:
            self._settling.cancel()
            self._settling = None
        for record in self._records.values():
            record.index = None  # interfaces may differ by the next start
        for sock in sockets.values():
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()
        for loop in [loop for loop, shared in _shared.items() if shared is self]:
            del _shared[loop]  # the next shared_responder() call makes a fresh one

    async def acquire(self) -> MdnsResponder:
        """Count one more user and start if needed; the responder to use is returned.

        A shared responder that its last user closed while this call waited for the lock
        is the loop's shared one again, unless another has taken its place: then that
        one is acquired instead, so that a loop never runs two.
        """
        async with self._lock:
            current = self
            if self._shared_on is not None:
                current = _shared.setdefault(self._shared_on, self)
            if current is self:
                await self.start()
                self._users += 1
                return self
        return await current.acquire()

    async def release(self) -> None:
        """Count one user less; the last one out closes the responder."""
        async with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                await self.close()

    async def __aenter__(self) -> MdnsResponder:
        return await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()

    def _settle(self, *, everything: bool = False) -> None:
        """Find the interface of each name's address not yet placed (and, on start, of
        `interfaces`), in one look at the host's interfaces, and join the group there."""
        self._settling = None
        records = [r for r in self._records.values() if r.index is None]
        if not records and not (everything and self._interfaces):
            return
        table = _interface_indices()
        if everything:
            for address in self._interfaces:
                index = _index_of(address, table)
                if index is None:
                    log.warning("mDNS responder: no interface holds %s", address)
                    continue
                group = (_ip(address, "an mDNS interface address").version, index)
                self._interface_groups.add(group)
                self._join(group, address)
        for record in records:
            record.index = _index_of(record.address, table) or 0
            if record.index:
                self._join(record.group, record.address)
            else:
                log.warning("mDNS responder: no interface holds %s", record.address)

    def _join(self, group: tuple[int, int], address: str) -> None:
        """Join the group on an interface, (IP version, index), that holds ``address``,
        unless joined already (errors are logged). Keyed by index: an interface deleted
        and made again with the same address is another interface, to join afresh."""
        if group in self._joined:
            return
        sock = self._sockets.get(socket.AF_INET if group[0] == 4 else socket.AF_INET6)
        if sock is None:
            return
        try:
            sock.setsockopt(*_membership(group, address, join=True))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:  # already a member there
                log.warning("mDNS responder: cannot join on interface %d: %s", group[1], exc)
                return
        self._joined.add(group)

    def _leave_if_unused(self, group: tuple[int, int], address: str) -> None:
        """Leave a group, joined for ``address``, that no name's address (nor
        `interfaces`) needs any more."""
        if group not in self._joined or group in self._interface_groups:
            return
        if any(r.index and r.group == group for r in self._records.values()):
            return
        self._joined.discard(group)
        sock = self._sockets.get(socket.AF_INET if group[0] == 4 else socket.AF_INET6)
        if sock is not None:
            with contextlib.suppress(OSError):  # e.g. the interface has gone, and with it
                sock.setsockopt(*_membership(group, address, join=False))  # the membership

    def _readable(self, sock: socket.socket) -> None:
        deadline = self._timer() + _RECEIVE_BUDGET_S
        for _ in range(_RECEIVE_BATCH):
            if self._timer() > deadline:
                return  # the reader is level-triggered: the rest come at the next wake-up
            try:
                data, ancillary, _flags, source = sock.recvmsg(_MAX_DATAGRAM, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                log.debug("mDNS responder: receive: %s", exc)
                return
            index, to_group = _arrival(ancillary)
            if not to_group:
                continue  # sent to our address, so maybe from off the link: see _arrival
            reply = self.handle_query(data, source[1], index)
            if reply is not None:
                self._send(sock, reply, source, index)

    def _send(
        self, sock: socket.socket, reply: MdnsReply, source: tuple[object, ...], index: int
    ) -> None:
        if not reply.unicast and self._multicast_recently(reply.payload, index):
            return
        try:
            if reply.unicast:
                sock.sendto(reply.payload, source)
            elif sock.family == socket.AF_INET:
                info = _IN_PKTINFO.pack(index, bytes(4), bytes(4))
                sock.sendmsg(
                    [reply.payload],
                    [(socket.IPPROTO_IP, _IP_PKTINFO, info)] if index else [],
                    0,
                    (MDNS_GROUP_V4, MDNS_PORT),
                )
            else:
                sock.sendto(reply.payload, (MDNS_GROUP_V6, MDNS_PORT, 0, index))
        except OSError as exc:
            log.debug("mDNS responder: send to %s: %s", source, exc)

    def _multicast_recently(self, payload: bytes, index: int) -> bool:
        """Whether this answer went to the group on this interface under a second ago;
        if not, it is noted as going now."""
        now = self._clock()
        key = (payload, index)
        last = self._multicast_at.get(key)
        if last is not None and now - last < _MULTICAST_INTERVAL:
            return True
        if len(self._multicast_at) >= 1024:  # names come and go: forget what has lapsed
            self._multicast_at = {
                k: at for k, at in self._multicast_at.items() if now - at < _MULTICAST_INTERVAL
            }
        self._multicast_at[key] = now
        return False


def _bind(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
            sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            if _LINUX:  # the groups joined by this socket only, where it joined them
                sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
            sock.bind(("", MDNS_PORT))
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            if _LINUX:
                with contextlib.suppress(OSError):  # Linux 4.20 and later
                    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_ALL, 0)
            sock.bind(("::", MDNS_PORT))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> tuple[int, bool]:
    """The interface a datagram came in on (0 if unknown), and whether it was sent to the
    mDNS group, from its IP(V6)_PKTINFO.

    Only queries to the group are answered. The group's scope is the link, so those come
    from the link. A query sent straight to our address on port 5353 may come from
    anywhere, and a unicast answer would tell an off-link peer the private address a
    `.local` name hides (RFC 6762 §11).
    """
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= 12:
            index, _local, destination = _IN_PKTINFO.unpack_from(data)
            return int(index), destination == _GROUP_V4_PACKED
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 20:
            destination, index = _IN6_PKTINFO.unpack_from(data)
            return int(index), destination == _GROUP_V6_PACKED
    return 0, True  # no PKTINFO on this platform: cannot tell, answer as before


def _membership(group: tuple[int, int], address: str, *, join: bool) -> tuple[int, int, bytes]:
    """setsockopt's arguments to join or leave the mDNS group on an interface, given as
    (IP version, index), that holds ``address``."""
    version, index = group
    if version == 4:
        option = socket.IP_ADD_MEMBERSHIP if join else socket.IP_DROP_MEMBERSHIP
        if _LINUX:  # struct ip_mreqn: group, local address (any), interface index
            mreq = _GROUP_V4_PACKED + bytes(4) + struct.pack("@i", index)
        else:  # struct ip_mreq: group, the interface's address
            mreq = _GROUP_V4_PACKED + socket.inet_aton(address.split("%", 1)[0])
        return socket.IPPROTO_IP, option, mreq
    option = socket.IPV6_JOIN_GROUP if join else socket.IPV6_LEAVE_GROUP
    return socket.IPPROTO_IPV6, option, _GROUP_V6_PACKED + struct.pack("@I", index)


def _interface_indices() -> dict[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """Each address of the host, and the index of its interface (the first one, for a
    link-local address on several)."""
    table: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, int] = {}
    for adapter in ifaddr.get_adapters():
        if adapter.index is None:
            continue
        for ip in adapter.ips:
            literal = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
            with contextlib.suppress(ValueError):
                table.setdefault(ipaddress.ip_address(literal), int(adapter.index))
    return table


def _index_of(
    address: str, table: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, int]
) -> int | None:
    """The index of the interface holding ``address`` (``%scope`` wins if given)."""
    host, _, scope = address.partition("%")
    if scope:
        with contextlib.suppress(OSError, ValueError):
            return int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
    return table.get(ipaddress.ip_address(host))


def _interface_index(address: str) -> int | None:
    """The index of the interface holding ``address`` (``%scope`` wins if given)."""
    if "%" in address:
        return _index_of(address, {})
    return _index_of(address, _interface_indices())


def _unique(
    answers: list[tuple[dns.name.Name, int, bool]],
) -> list[tuple[dns.name.Name, int, bool]]:
    """The answers, each once, in order."""
    unique: list[tuple[dns.name.Name, int, bool]] = []
    for answer in answers:
        if answer not in unique:
            unique.append(answer)
    return unique


def _nsec_data(name: dns.name.Name, rdtype: int) -> bytes:
    """An NSEC rdata saying ``name`` has only ``rdtype`` (RFC 6762 §6.1: one window, no
    name compression)."""
    bitmap = bytearray((rdtype & 0xFF) // 8 + 1)
    bitmap[-1] = 0x80 >> (rdtype % 8)
    return (name.to_wire() or b"") + bytes([rdtype >> 8, len(bitmap)]) + bytes(bitmap)


def _rdata_bytes(rdata: dns.rdata.Rdata) -> bytes:
    """An A/AAAA rdata's address bytes, whichever class dnspython parsed it in."""
    if isinstance(rdata, dns.rdata.GenericRdata):
        return bytes(rdata.data)
    return ipaddress.ip_address(rdata.to_text()).packed


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MdnsResponder] = (
    weakref.WeakKeyDictionary()
)


def shared_responder() -> MdnsResponder:
    """This event loop's responder, shared by every gatherer on it (not started).

    Use ``async with shared_responder() as responder:`` (or `acquire`/`release`): the
    first user starts it and the last one out closes it; a closed one is replaced.
    """
    loop = asyncio.get_running_loop()
    responder = _shared.get(loop)
    if responder is None:
        responder = _shared[loop] = MdnsResponder()
        responder._shared_on = loop
    return responder


# -- resolving a remote candidate's name ---------------------------------------------------


def _query_bytes(name: dns.name.Name, query_id: int) -> bytes:
    query = dns.message.Message(id=query_id)
    for rdtype in (_A, _AAAA):
        query.question.append(dns.rrset.RRset(name, _IN_FLUSH, rdtype))
    return query.to_wire()


def _answer_in(data: bytes, name: dns.name.Name, query_id: int) -> str | None:
    """The address for ``name`` in a response datagram, or None."""
    try:
        response = dns.message.from_wire(data, ignore_trailing=True)
    except Exception:  # untrusted bytes
        return None
    if not response.flags & dns.flags.QR or response.id not in (0, query_id):
        return None
    for rrset in [*response.answer, *response.additional]:
        if rrset.name != name or rrset.rdclass & ~_TOP_BIT != _IN:
            continue
        if rrset.rdtype not in (_A, _AAAA):
            continue
        for rdata in rrset:
            packed = _rdata_bytes(rdata)
            if len(packed) == (4 if rrset.rdtype == _A else 16):
                return str(ipaddress.ip_address(packed))
    return None


def _resolving_from(interface_address: str | None) -> tuple[int, str, int]:
    """The family, local address and interface index (0: any) `resolve_mdns` queries
    from, or ValueError/TypeError naming what is wrong with ``interface_address``."""
    if interface_address is None:
        return socket.AF_INET, "", 0
    ip = _ip(interface_address, "interface_address")
    host, _, zone = interface_address.partition("%")
    problem = None
    if ip.is_multicast:
        problem = "a multicast address, not one of this host's"
    elif ip.version == 4 and zone:
        problem = f"an IPv4 address, which takes no %zone: pass {host!r}"
    elif ip.version == 6 and ip.ipv4_mapped is not None:
        problem = f"an IPv4-mapped IPv6 address: pass the IPv4 address {str(ip.ipv4_mapped)!r}"
    if problem is not None:
        raise ValueError(f"interface_address {interface_address!r} is {problem}")
    if ip.version == 4:
        return socket.AF_INET, host, 0
    if zone and _index_of(interface_address, {}) is None:
        raise ValueError(f"interface_address {interface_address!r}: no interface {zone!r}")
    return socket.AF_INET6, host, _interface_index(interface_address) or 0


_SEND_RETRY_ERRORS = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.EINTR})
"""Send errors that may pass: the query is sent again at the next resend."""


async def resolve_mdns(
    name: str, *, timeout: float = 1.0, interface_address: str | None = None
) -> str:
    """The IP address a peer's mDNS name stands for, by a one-shot multicast query.

    The query (A and AAAA, QU bit set) goes from an ephemeral port to 224.0.0.251, or to
    ff02::fb when ``interface_address`` is IPv6, out of the interface holding
    ``interface_address`` if given. It is repeated at 250 ms and 750 ms; the first answer
    from port 5353 naming ``name`` wins.

    ValueError for a name outside ``.local``, or an ``interface_address`` that cannot be
    one of this host's; OSError (with its errno) naming ``interface_address`` when it
    cannot be bound, or saying the query could not be sent, at once, when the first send
    fails (no multicast route, say); `MdnsResolutionError` (an OSError) when nothing
    answers within ``timeout`` seconds.
    """
    target = _to_name(name)
    family, host, index = _resolving_from(interface_address)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds, not {timeout!r}")
    timeout = positive_seconds(timeout, "timeout")  # 10**400 too, an OverflowError later
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                sock.bind((host, 0, 0, index))
                group: tuple[object, ...] = (MDNS_GROUP_V6, MDNS_PORT, 0, index)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
                if host:
                    sock.setsockopt(
                        socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(host)
                    )
                sock.bind((host, 0))
                group = (MDNS_GROUP_V4, MDNS_PORT)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if exc.errno == errno.EADDRNOTAVAIL:
                why = f"not an address of this host ({why})"
            raise OSError(
                exc.errno, f"cannot query from interface_address {interface_address!r}: {why}"
            ) from exc
        query_id = secrets.randbelow(0xFFFF) + 1
        query = _query_bytes(target, query_id)
        start = loop.time()
        deadline = start + timeout
        sends = [start + at for at in _RESOLVE_RESENDS_S if at < timeout]
        sent = False
        unsent: OSError | None = None
        while True:
            now = loop.time()
            if now >= deadline:
                if not sent and unsent is not None:
                    raise _send_failure(name, group, interface_address, unsent)
                raise MdnsResolutionError(name, timeout)
            while sends and sends[0] <= now:
                sends.pop(0)
                try:
                    sock.sendto(query, group)
                except OSError as exc:
                    if not sent and exc.errno not in _SEND_RETRY_ERRORS:
                        raise _send_failure(name, group, interface_address, exc) from exc
                    unsent = exc  # sent before, or may pass: the next resend tries again
                else:
                    sent = True
            wait = min([deadline, *sends[:1]]) - now
            try:
                async with asyncio.timeout(wait):
                    data, source = await loop.sock_recvfrom(sock, _MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                continue  # an ICMP error from an earlier send: keep listening
            if source[1] != MDNS_PORT:
                continue  # RFC 6762 §6: responses come from port 5353
            address = _answer_in(data, target, query_id)
            if address is not None:
                return address
    finally:
        sock.close()


def _send_failure(
    name: str, group: tuple[object, ...], interface_address: str | None, error: OSError
) -> OSError:
    """The error `resolve_mdns` raises when its query cannot be sent at all."""
    hint = ""
    if interface_address is None and error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        hint = ": no route for multicast; pass interface_address to pick the interface"
    return OSError(
        error.errno,
        f"mDNS query for {name!r} could not be sent to {group[0]}: {error.strerror or error}{hint}",
    )
