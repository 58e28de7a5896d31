"""One UDP port for many gatherers (pion's UDPMux), for servers with thousands of sessions.

Every gatherer in shared-port mode gathers through the same socket per local address, so
a server needs a handful of file descriptors instead of one per session and address, and
its firewall one open port. What arrives is routed to one session:

1. an answer to a session's gathering request, by STUN transaction ID (96 random bits,
   so they cannot collide);
2. a connectivity check from a peer, by the session's ufrag, the first half of its
   USERNAME (RFC 8445 §7.2.2); its source address is then latched to that session;
3. anything else (checks without USERNAME, DTLS, media), by a latched source address:
   one that checked in, or that the session sent to.

Anything unrouted is dropped, and so is a check whose ufrag no session claims, even from
a latched source: it is for a session that has gone, or for none. An ICMP error goes,
like an answer, to the session whose request caused it, found by the transaction ID the
error quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import Callable, Iterable

from . import icmperrors, stun
from .sockethub import MAX_DATAGRAM

__all__ = ["Route", "SharedPortSession", "SharedSocket", "shared_socket"]

Deliver = Callable[[bytes, tuple[str, int]], None]
#: Told the destination an ICMP error named, and what it said.
Unreachable = Callable[[tuple[str, int], str], None]
Route = tuple[Deliver, Unreachable]  # where a request's answer goes, and its ICMP error
#: What the shared socket may hold unread: every session's answers can come at once (a
#: thousand starting together), and the default (208 KiB, ~270 small datagrams) drops them.
_RECEIVE_BUFFER = 4 * 1024 * 1024
_BURST = 4096  # datagrams read per readiness at most
#: How long a request's answer stays routed: longer than any STUN transaction lasts (RFC
#: 8489 §6.2.1: 39.5 s with the default timers; a gathering's are 2 s), so that requests
#: never answered (a dead server) leave nothing behind in a long-lived session: they go
#: at its next request (or its close), so a session that sends no more keeps a few.
_ROUTE_LIFETIME = 60.0


class SharedSocket:
    """A UDP socket bound to one address and port, demultiplexed by transaction ID."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, key: object) -> None:
        self.sock = sock
        self._loop = loop
        self._key = key
        self._routes: dict[bytes, Route] = {}
        self._sessions: dict[bytes, Deliver] = {}  # ufrag -> where its peers' traffic goes
        self._peers: dict[tuple[str, int], Deliver] = {}  # latched source -> the same
        self._latched: dict[Deliver, set[tuple[str, int]]] = {}  # the reverse
        self._users = 0
        loop.add_reader(sock.fileno(), self._on_readable)

    def acquire(self) -> None:
        self._users += 1

    def forget(self, transaction_ids: Iterable[bytes]) -> None:
        """Answers to these requests are no longer wanted: their gatherer is closing, or
        they waited longer than any answer takes."""
        for transaction_id in transaction_ids:
            self._routes.pop(transaction_id, None)

    def claim(self, ufrag: str, deliver: Deliver) -> None:
        """Route peers' checks for this ufrag (and then all their traffic) to `deliver`;
        ValueError if another session holds it."""
        holder = self._sessions.setdefault(ufrag.encode(), deliver)
        if holder is not deliver:
            address, port = self.sock.getsockname()[:2]
            raise ValueError(
                f"ufrag {ufrag!r} is taken on the shared port {address}:{port} by another "
                "gatherer: give each its own credentials"
            )

    def latch(self, peer: tuple[str, int], deliver: Deliver) -> None:
        """Route everything from this peer to `deliver`."""
        previous = self._peers.get(peer)
        if previous is not deliver:
            if previous is not None:
                self._latched[previous].discard(peer)
            self._peers[peer] = deliver
            self._latched.setdefault(deliver, set()).add(peer)

    def unclaim(self, deliver: Deliver, ufrags: Iterable[str]) -> None:
        """Checks for these ufrags (a session's retired generations) route nowhere now."""
        for ufrag in ufrags:
            if self._sessions.get(ufrag.encode()) is deliver:
                del self._sessions[ufrag.encode()]

    def release_session(self, deliver: Deliver, ufrags: Iterable[str]) -> None:
        """A session is closing: its ufrags and latched peers route nowhere now."""
        self.unclaim(deliver, ufrags)
        for peer in self._latched.pop(deliver, ()):
            del self._peers[peer]

    def release(self) -> None:
        """One base is done with the socket; the last one closes it."""
        self._users -= 1
        if self._users <= 0:
            _sockets.pop(self._key, None)
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def expect(self, transaction_id: bytes, route: Route) -> None:
        """Route the answer to this request to `route[0]`, an ICMP error to `route[1]`."""
        self._routes[transaction_id] = route

    def read_errors(self) -> None:
        """Drain the ICMP errors queued on the socket, each to the request's session.
        Called when a read or a send reported one: the queue must be emptied, or the
        socket would read as in error for ever."""
        for quoted, destination, cause in icmperrors.read(self.sock, 20):
            route = self._routes.pop(quoted[8:20], None) if len(quoted) >= 20 else None
            if route is not None:
                route[1](destination, cause)

    def _on_readable(self) -> None:
        # Up to what a full receive buffer holds: the answers of a thousand sessions come
        # in one burst, and any left for the next loop turn would see their requests'
        # retransmission timers run first. The cap keeps a flood from holding the loop.
        for turn in range(_BURST):
            try:
                data, source = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                if turn == 0:  # woken for nothing to read: for an error a send reported
                    self.read_errors()
                return
            except OSError:
                self.read_errors()
                continue
            source = source[:2]
            route = self._routes.pop(data[8:20], None) if len(data) >= 20 else None
            deliver = self._session_of(data, source) if route is None else route[0]
            if deliver is not None:
                deliver(data, source)

    def _session_of(self, data: bytes, source: tuple[str, int]) -> Deliver | None:
        if self._sessions and stun.is_stun(data):
            try:
                username = stun.parse(data).get(stun.Attr.USERNAME)
            except stun.StunError:
                username = None
            if username is not None:  # a check: routed by its ufrag alone
                deliver = self._sessions.get(username.partition(b":")[0])
                if deliver is not None:
                    self.latch(source, deliver)
                return deliver
        return self._peers.get(source)


class SharedPortSession:
    """One gatherer's side of the shared sockets it gathers through: its requests' answers
    routed back to it by base, and its generations' ufrags claimed for its data path.

    The gatherer is told through three callbacks: `on_answer` (base key, datagram,
    source) and `on_unreachable` (base key, destination, cause) for its requests,
    `on_peer` (local address, datagram, source) for what its peers send.
    """

    __slots__ = (
        "_deliver",
        "_expected",
        "_on_answer",
        "_on_peer",
        "_on_unreachable",
        "_routes",
        "ufrags",
    )

    def __init__(
        self,
        on_answer: Callable[[int, bytes, tuple[str, int]], None],
        on_unreachable: Callable[[int, tuple[str, int], str], None],
        on_peer: Callable[[tuple[str, int], bytes, tuple[str, int]], None],
    ) -> None:
        self._on_answer = on_answer
        self._on_unreachable = on_unreachable
        self._on_peer = on_peer
        self.ufrags: dict[int, str] = {}  # generation -> its ufrag, while its sockets are kept
        self._deliver: dict[SharedSocket, Deliver] = {}  # where each socket sends our peers
        # Transaction id -> when it was (last) sent and the socket routing its answer
        # to us, oldest first.
        self._expected: dict[bytes, tuple[float, SharedSocket]] = {}
        self._routes: dict[int, Route] = {}  # base key -> where its answers go

    def claim(self, shared: SharedSocket, local: tuple[str, int], generation: int) -> None:
        """Have the socket route peers' checks for the generation's ufrag to `on_peer`;
        ValueError if another session holds that ufrag there."""
        deliver = self._deliver.get(shared)
        if deliver is None:
            deliver = self._deliver[shared] = functools.partial(self._on_peer, local)
        ufrag = self.ufrags.get(generation)
        if ufrag is not None:
            shared.claim(ufrag, deliver)

    def latch(self, shared: SharedSocket, peer: tuple[str, int]) -> None:
        """We send to `peer`: its answers come back to us (with a data path)."""
        deliver = self._deliver.get(shared)
        if deliver is not None:
            shared.latch(peer, deliver)

    def expect(self, shared: SharedSocket, key: int, request: bytes, now: float) -> None:
        """Route the answer to this request (a STUN message sent from base `key`) here,
        for `_ROUTE_LIFETIME`; those of requests sent longer ago are forgotten."""
        transaction_id = request[8:20]
        expected = self._expected
        expected.pop(transaction_id, None)  # a retransmission: to the end, with its time
        expected[transaction_id] = (now, shared)
        while True:  # oldest first; the one just added ends it
            oldest = next(iter(expected))
            sent, by = expected[oldest]
            if now - sent < _ROUTE_LIFETIME:
                break
            del expected[oldest]
            by.forget((oldest,))
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = (
                functools.partial(self._answered, key),
                functools.partial(self._on_unreachable, key),
            )
        shared.expect(transaction_id, route)

    def forget_base(self, key: int) -> None:
        """Base `key` has closed: its route goes (a restart a generation's worth of them)."""
        self._routes.pop(key, None)

    def retire(self, keeps: Callable[[int], bool]) -> None:
        """Stop routing peers' checks for the ufrags of generations no longer kept."""
        retired = [self.ufrags.pop(n) for n in [n for n in self.ufrags if not keeps(n)]]
        if retired:
            for shared, deliver in self._deliver.items():
                shared.unclaim(deliver, retired)

    def close(self) -> None:
        """The gatherer is closing: nothing is routed to it any more."""
        for transaction_id, (_, shared) in self._expected.items():
            shared.forget((transaction_id,))
        self._expected.clear()
        for shared, deliver in self._deliver.items():
            shared.release_session(deliver, self.ufrags.values())

    def _answered(self, key: int, data: bytes, source: tuple[str, int]) -> None:
        self._expected.pop(data[8:20], None)
        self._on_answer(key, data, source)


_sockets: dict[object, SharedSocket] = {}


def shared_socket(
    loop: asyncio.AbstractEventLoop, family: int, address: str, port: int, scope_id: int = 0
) -> SharedSocket:
    """The process's shared socket for (address, port) on this loop, bound on first use.
    One left behind by a loop closed while gatherers still used it is closed first, so
    that its port can be bound again."""
    key = (loop, address, port)
    shared = _sockets.get(key)
    if shared is None:  # about to bind: first close what dead loops left on the port
        for stale in [s for s in _sockets.values() if s._loop.is_closed()]:
            del _sockets[stale._key]
            stale.sock.close()  # its reader went with the loop
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(
                (address, port, 0, scope_id) if family == socket.AF_INET6 else (address, port)
            )
        except OSError:
            sock.close()
            raise
        icmperrors.enable(sock)
        with contextlib.suppress(OSError):  # the kernel caps it at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        shared = _sockets[key] = SharedSocket(sock, loop, key)
    shared.acquire()
    return shared
