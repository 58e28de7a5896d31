"""The asyncio driver: sockets, timers, interface enumeration and DNS around `Gathering`.

Everything that decides lives in the core; this module only moves bytes and time. Sockets
are plain non-blocking sockets watched through one epoll per loop (`sockethub.py`), with
no asyncio transport or reader handle per socket: thousands of gatherers each hold
several. Each gatherer keeps one timer handle, moved only when the core's next deadline
changes. Its sockets by key are a `SocketTable` (`sockettable.py`), its TURN
connections a `StreamSet` (`streams.py`) and its ICE-TCP listeners `Listeners`
(`icetcp.py`), none of which knows the core.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import errno
import functools
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Self, assert_never

from . import icmperrors
from .commands import CloseStream, OpenSocket, OpenStream, Resolve, SendDatagram, StreamSend
from .config import IceServer, servers_from_config
from .credentials import Credentials, new_credentials
from .events import (
    Event,
    GatheringState,
    IceCandidate,
    IceCandidateEvent,
    IceGatheringStateChangeEvent,
)
from .gathering import Gathering
from .icetcp import Listeners, TcpConnectionHandler, socket_beside
from .interfaces import (
    AddressFilter,
    IpHandling,
    LocalAddress,
    default_route_addresses,
    local_addresses,
)
from .mdnsnames import MdnsNames
from .model import Base, Transport
from .options import check_gatherer_options, peer_address, peer_list
from .resolver import ResolutionError, Resolver, default_resolver, load_dnspython
from .sdp import candidate_lines
from .sharedport import SharedPortSession
from .sockethub import MAX_DATAGRAM, SocketHub, hub_for
from .sockettable import SocketTable
from .streams import StreamSet, describe
from .transaction import RttTable, Timing
from .turn import CLOSE_TIMEOUT, Allocation, BytesLike, NonceCache, RequestFailed
from .watcher import InterfaceWatcher

__all__ = [
    "DatagramHandler",
    "Gatherer",
    "RelayFailureHandler",
    "RelayedHandler",
    "TcpConnectionHandler",
]

_RESCAN_MAX_AGE = 0.25  # seconds: an enumeration this recent is the present
#: What sendto says from a socket whose address has just been removed (IPv4: its route
#: went with it; IPv6: the address), before the watcher has told of the change.
_ADDRESS_GONE_ERRORS = frozenset((errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.ENODEV))
#: Called with (allocation, peer address, payload) for data relayed to us by TURN.
RelayedHandler = Callable[[Allocation, tuple[str, int], bytes], None]
#: Called with (local base address, peer address, payload) for what peers send to a base.
DatagramHandler = Callable[[tuple[str, int], tuple[str, int], bytes], None]
#: Called with (allocation, failure) when a permission or channel is refused or lost.
RelayFailureHandler = Callable[[Allocation, RequestFailed], None]
_shared_rtt = RttTable()
_shared_nonces = NonceCache(max_entries=4096)
_ANSWER_SIZE = 2048  # the read size without a data path: STUN and TURN answers fit
_OTHER_LOOP = (
    "this Gatherer runs on another event loop, the one it first gathered on "
    "(its sockets and timer live there): make a Gatherer per loop"
)
_NO_LOOP = (
    "call this Gatherer from its event loop (its sockets and timer live there): from "
    "another thread, through loop.call_soon_threadsafe"
)


@functools.lru_cache(maxsize=256)
def _check_family(peer: tuple[str, int], local: str) -> None:
    """ValueError unless the peer and the local address are of one family."""
    if (":" in peer[0]) != (":" in local):
        raise ValueError(f"peer {peer[0]} and base {local} differ in address family")


def _transports(mids: tuple[str, ...]) -> tuple[Transport, ...]:
    """Immutable, so shared by every gatherer with the same m-lines."""
    return tuple(Transport(mid, index) for index, mid in enumerate(mids))


class Gatherer:
    """Gathers ICE candidates and streams them as browser-style events.

    ::

        async with Gatherer(ice_servers=[IceServer("stun:stun.example.org")]) as gatherer:
            async for event in gatherer.gather():
                print(json.dumps(event.to_json()))

    Every option is checked when given: a bad one raises ValueError or TypeError naming it.

    Args:
        ice_servers: RTCConfiguration.iceServers: `stun:`, `turn:` and `turns:` URLs
            with their credentials. Every server is asked at once.
        mids: one transport (m-line) per mid, each an SDP token.
        components: components per transport (1 with rtcp-mux, 2 for RTP and RTCP).
        ice_transport_policy: "all", or "relay" for relay candidates only (no STUN
            server is then asked).
        ip_handling: the RFC 8828 mode (`IpHandling`, 1-4): every address, the default
            route's with or without its host candidate, or relay candidates only.
        timing: retransmission and the per-server deadline (by default 2 s a server).
        link_local: include IPv6 link-local addresses.
        address_filter: `(interface, address) -> bool`; the addresses it refuses are
            not used.
        resolver: looks up server names (by default the hosts file, then DNS).
        credentials: the first generation's ufrag and pwd (new ones by default).
        ssl_context: for `turns:` (by default the system's CAs).
        dual_stack_relays: ask each TURN allocation from IPv4 for an IPv6 relay too
            (RFC 8656 ADDITIONAL-ADDRESS-FAMILY).
        port_range: `(low, high)`: host sockets take a free port in it. A restart binds
            new ones while the last generation the application saw keeps its own (its
            ICE may still use them): allow two sets, more with a pool. A `connect()`
            from an active ICE-TCP candidate takes a port of the kernel's choosing.
        pool_size: RTCConfiguration.iceCandidatePoolSize (0-255): generations gathered
            ahead by `prepare()`, each taken at once by a `restart()`.
        continual: keep the generation open: addresses that come and go join or leave
            it, and a relay whose allocation is lost leaves it (`candidateremoved`).
        on_relayed: called with (allocation, peer, data) for what peers send through a
            TURN allocation: from peers with a permission installed or asked for (a Data
            indication from any other may be forged, and is dropped).
        on_datagram: called with (local base, peer, data) for what peers send to a base.
        on_relay_failure: called with (allocation, `turn.RequestFailed`) when a TURN
            server refuses a permission or channel (`relay_permit`, `relay_bind_channel`,
            `send`; a 403 for a peer its policy forbids, say) or never confirms it.
        tcp_candidates: ICE-TCP host candidates too (RFC 6544).
        on_tcp_connection: called with (the passive candidate's address and port, peer,
            socket) for each connection a peer makes to a passive ICE-TCP candidate; the
            socket (non-blocking) is the callee's to frame (RFC 4571) and close, unless
            the callee raises (the handover failed: it is closed). Once `close()` has
            begun, connections are closed, not handed over.
        shared_port: one UDP port per address for every gatherer on the same event
            loop given the same one (one transport, one component); peers are routed by
            ufrag.
        mdns: hide host addresses behind mDNS `.local` names.

    Slotted: a server holds thousands, and a plain instance dict grows and resizes as its
    some forty attributes are set.
    """

    __slots__ = (
        "_address_filter",
        "_close_done",
        "_closed",
        "_consumer_waiting",
        "_continual",
        "_core",
        "_deallocated",
        "_delivered_whole",
        "_gather_calls",
        "_hub",
        "_in_callback",
        "_ip_handling",
        "_lingering",
        "_link_local",
        "_listeners",
        "_loop",
        "_mdns",
        "_needs_companions",
        "_older",
        "_on_datagram",
        "_on_fd",
        "_on_relay_failure",
        "_on_relayed",
        "_pool_size",
        "_reader",
        "_resolver",
        "_shared",
        "_shared_port",
        "_ssl_context",
        "_table",
        "_tasks",
        "_tcp_candidates",
        "_timer",
        "_timer_at",
        "_told_state",
        "_turn_streams",
        "_waiter",
        "_watcher",
    )

    def __init__(
        self,
        ice_servers: Sequence[IceServer] = (),
        *,
        mids: Sequence[str] = ("0",),
        components: int = 1,
        ice_transport_policy: str = "all",
        ip_handling: IpHandling | int = IpHandling.ALL,
        timing: Timing | None = None,
        link_local: bool = False,
        address_filter: AddressFilter | None = None,
        resolver: Resolver | None = None,
        credentials: Credentials | None = None,
        ssl_context: ssl.SSLContext | None = None,
        dual_stack_relays: bool = False,
        port_range: tuple[int, int] | None = None,
        pool_size: int = 0,
        continual: bool = False,
        on_relayed: RelayedHandler | None = None,
        on_datagram: DatagramHandler | None = None,
        on_relay_failure: RelayFailureHandler | None = None,
        tcp_candidates: bool = False,
        on_tcp_connection: TcpConnectionHandler | None = None,
        shared_port: int | None = None,
        mdns: bool = False,
    ) -> None:
        ip_handling = check_gatherer_options(
            mids=mids,
            components=components,
            ice_transport_policy=ice_transport_policy,
            ip_handling=ip_handling,
            pool_size=pool_size,
            shared_port=shared_port,
            port_range=port_range,
            timing=timing,
            credentials=credentials,
            ssl_context=ssl_context,
            resolver=resolver,
            address_filter=address_filter,
            on_relayed=on_relayed,
            on_datagram=on_datagram,
            on_relay_failure=on_relay_failure,
            on_tcp_connection=on_tcp_connection,
            link_local=link_local,
            dual_stack_relays=dual_stack_relays,
            continual=continual,
            tcp_candidates=tcp_candidates,
            mdns=mdns,
        )
        self._core = Gathering(
            transports=_transports(tuple(mids)),
            components=components,
            servers=servers_from_config(ice_servers),
            credentials=credentials or new_credentials(),
            relay_only=ice_transport_policy == "relay" or ip_handling is IpHandling.RELAY,
            hide_host=ip_handling is IpHandling.DEFAULT_ROUTE,
            continual=continual,
            timing=timing,
            rtt=_shared_rtt,
            nonces=_shared_nonces,
            dual_stack_relays=dual_stack_relays,
        )
        if any(not server.url.host_is_ip for server in self._core.servers):
            load_dnspython()  # now, rather than in the first lookup, delaying its candidates
        self._ip_handling = ip_handling
        self._table = SocketTable(port_range)  # what we bound: sockets by key
        self._pool_size = pool_size
        self._continual = continual
        self._on_relayed = on_relayed
        self._on_relay_failure = on_relay_failure
        # The data path for a connectivity layer: what peers send to our bases, and where
        # `send` finds a candidate's socket.
        self._on_datagram = on_datagram
        self._tcp_candidates = tcp_candidates
        self._listeners = (
            None
            if on_tcp_connection is None
            else Listeners(
                self._table,
                on_tcp_connection,
                self._deliver,
                self._deliver_queued,
                self._get_loop,
                lambda: self._closed,
            )
        )
        self._shared_port = shared_port
        self._shared = (
            None
            if shared_port is None
            else SharedPortSession(self._on_answer, self._on_unreachable, self._from_peer)
        )
        self._mdns = MdnsNames() if mdns else None
        self._lingering: set[int] = set()  # old sockets kept while their relays deallocate
        # On a shared port, TURN over UDP needs a private socket per base (see _bind).
        self._needs_companions = shared_port is not None and any(
            s.url.is_turn and s.url.transport == "udp" for s in self._core.servers
        )
        self._watcher: InterfaceWatcher | None = None
        self._link_local = link_local
        self._address_filter = address_filter
        self._resolver = resolver
        self._ssl_context = ssl_context
        self._turn_streams: StreamSet | None = None  # TURN over TCP/TLS, once asked for
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hub: SocketHub | None = None  # the loop's: its epoll, and its outbox
        self._in_callback = False  # an application callback is running (see _deliver)
        self._on_fd: Callable[[int], None] | None = None  # what the socket hub calls
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] | None = None  # DNS and stream tasks, if any
        self._waiter: asyncio.Future[None] | None = None  # gather() waiting for events
        self._deallocated: asyncio.Future[None] | None = None  # close() waiting for TURN
        self._consumer_waiting = False  # a gather() is waiting for events
        self._gather_calls = 0  # the latest gather() call streams; earlier ones end
        self._reader: tuple[int, int] | None = None  # the latest gather(): call, generation
        # After a restart, what an earlier generation's open reader keeps (`_keep_for`):
        # its events still queued, by the reader's call number.
        self._older: dict[int, deque[Event]] | None = None
        self._delivered_whole = -1  # the last generation gather() delivered in full
        self._told_state = GatheringState.NEW  # as the last state event gather() yielded
        self._closed = False
        self._close_done: asyncio.Future[None] | None = None  # resolved once close() is done

    # -- public API --------------------------------------------------------------------

    @property
    def gathering_state(self) -> GatheringState:
        """RTCPeerConnection.iceGatheringState, as the events the latest `gather()` has
        yielded tell it: it changes as its `icegatheringstatechange` is yielded, as a
        browser's does as the event fires, so that a loop that reads it meets no
        `complete` before the candidates still queued ahead of that event. What
        `prepare()` or a pool gathers ahead shows only once `gather()` yields it."""
        return self._told_state

    def transport_state(self, mid: str) -> GatheringState:
        """The gathering state of one m-line, as gathered (unlike `gathering_state`, it may
        be a few events ahead of `gather()`); ValueError for a mid not given in `mids`."""
        for index, transport in enumerate(self._core.transports):
            if transport.mid == mid:
                return self._core.transport_state(index)
        raise ValueError(f"no transport with mid {mid!r}")

    @property
    def generation(self) -> int:
        """The current generation's number: 0, then one more at each `restart()`."""
        return self._core.generation

    @property
    def credentials(self) -> Credentials:
        """The current generation's local ufrag and pwd."""
        return self._core.credentials

    @property
    def waiting_for(self) -> list[str]:
        """The URLs of the servers this generation still waits on (a request unanswered,
        a name being resolved, an allocation under way), in configuration order. A server
        that answered with nothing new gives no event: this tells it from one that has
        not answered yet (the CLI's summary asks it when interrupted)."""
        return self._core.waiting_for

    @property
    def candidates(self) -> list[IceCandidate]:
        """The current generation's candidates so far, less those gone since (an address
        removed, a relay whose allocation was lost): as gathered, which may be a few
        events ahead of what `gather()` has yielded."""
        return self._core.candidates

    @property
    def mdns_unavailable(self) -> str | None:
        """Why host candidates are left out under `mdns=True` (UDP port 5353 could not
        be bound: another responder holds it), rather than shown with their addresses;
        None while mDNS works, or was not asked for. Known once gathering has begun."""
        return None if self._mdns is None else self._mdns.unavailable

    @property
    def allocations(self) -> list[Allocation]:
        """TURN allocations kept alive (refreshed) until `close()`; see `ice_engine.turn`."""
        return self._core.allocations

    def relay_permit(self, allocation: Allocation, peers: Sequence[tuple[str, int]]) -> None:
        """Install TURN permissions for these peers; they are renewed until `close()`."""
        self._check_usable()
        self._core.relay_permit(self._now(), allocation, peer_list(peers))
        self._service()

    def relay_bind_channel(self, allocation: Allocation, peer: tuple[str, int]) -> None:
        """Bind a channel to a peer: its data then travels as ChannelData."""
        self._check_usable()
        self._core.relay_bind_channel(self._now(), allocation, peer_address(peer))
        self._service()

    def relay_send(self, allocation: Allocation, peer: tuple[str, int], data: BytesLike) -> None:
        """Send through an allocation to a permitted peer; what peers send back reaches
        the `on_relayed` callback given to the constructor. The server drops data to a
        peer it holds no permission for (RFC 8656 §9): `relay_permit` first, or use
        `send`, which asks for it."""
        self._check_usable()
        self._core.relay_send(self._now(), allocation, peer_address(peer), data)
        self._service()

    def send(self, local: IceCandidate, peer: tuple[str, int], data: BytesLike) -> None:
        """Send `data` to `peer` from a local candidate, as a connectivity layer sends its
        checks and media: from a host or srflx candidate's base socket, or through a relay
        candidate's allocation (asking for the peer's permission on first use).

        What peers send back reaches the `on_datagram` (bases) and `on_relayed` (relays)
        callbacks given to the constructor. A copy of a candidate (`from_json`) will do,
        for the current generation's. ValueError if the candidate has no socket
        here (not ours, ICE-TCP, or its generation has been released), if the peer is not
        an (IP address, port) pair of the candidate's family (names are never resolved on
        this path) or not a unicast address, or if `data` is more than one datagram
        carries; OSError if the kernel refuses it (no route, for one); TypeError if
        `local` is not an IceCandidate. RuntimeError from a relay candidate off the
        gatherer's event loop (another thread): relaying may ask for a permission and time
        it, so it runs on the loop only, as the `relay_*` methods do; a host or srflx
        candidate's datagram goes straight to its socket.
        """
        self._check_open()
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        peer = peer_address(peer)
        try:  # not isinstance: this runs at every send
            relay = local.type == "relay"
        except AttributeError:
            raise TypeError(f"local must be an IceCandidate, not {type(local).__name__}") from None
        if relay and local.address is not None and local.port is not None:
            allocation = self._core.allocation_for((local.address, local.port))
            if allocation is None:
                raise ValueError(f"no live allocation for {local.candidate!r}")
            self._check_usable()  # the permission and data go out on the loop's sockets
            self._core.relay_send(self._now(), allocation, peer, data, permit=True)
            self._service()
            return
        table = self._table
        base = local.base
        if base is None:  # a copy (IceCandidate.from_json): the current generation's line?
            key = self._core.base_key_of(local.sdpMid, local.candidate)
            base = None if key is None else table.base_addresses.get(key)
        else:
            key = table.base_keys.get(base)
        if base is None or key is None:
            raise ValueError(f"no socket here for {local.candidate!r}")
        _check_family(peer, base[0])
        shared = table.shared.get(key)
        if shared is not None and self._shared is not None:  # its answers come back here
            self._shared.latch(shared, peer)
        sock = table.sockets[key]
        try:
            sock.sendto(data, peer)
        except OSError as error:
            failure: OSError | None = error
            if error.errno not in icmperrors.TRANSIENT_SEND_ERRORS:
                failure = self._send_again(key, sock, data, peer)
                self._service()  # the ICMP errors read meanwhile fail their servers
            if failure is None:
                return
            if failure.errno == errno.EMSGSIZE:
                raise ValueError(f"{len(data)} bytes are more than one datagram carries") from None
            raise failure from None

    async def connect(self, local: IceCandidate, peer: tuple[str, int]) -> socket.socket:
        """A TCP connection to `peer` from an ICE-TCP active candidate (RFC 6544), as a
        connectivity layer makes one for its checks: from the candidate's address, on a
        port of the kernel's choosing (an active candidate advertises port 9). The socket,
        connected and non-blocking, is the caller's to frame (RFC 4571) and close; a
        cancelled connect closes it. ValueError if `local` is not an active candidate of
        the current generation, or `peer` not an (IP address, port) of its family;
        OSError if the connection fails (refused, unreachable); RuntimeError if the
        gatherer closes meanwhile. The kernel gives up on a peer that never answers
        after about two minutes: bound it with `asyncio.timeout()`."""
        self._check_usable()
        peer = peer_address(peer)
        if getattr(local, "tcpType", None) != "active":
            raise ValueError(f"not an ICE-TCP active candidate: {local!r}")
        # As send() finds a copy's socket: by its mid and line, of the current generation
        key = self._core.base_key_of(local.sdpMid or "", local.candidate)
        listener = None if key is None else self._table.sockets.get(key)
        if listener is None or listener.type != socket.SOCK_STREAM:
            raise ValueError(f"no active candidate here for {local.candidate!r}")
        _check_family(peer, listener.getsockname()[0])  # the base's (an mDNS name hides it)
        sock = socket_beside(listener)
        try:
            connecting = self._spawn(self._get_loop().sock_connect(sock, peer))
            try:
                await connecting  # a task of the gatherer's: close() ends it
            except asyncio.CancelledError:
                caller = asyncio.current_task()
                if not (self._closed and caller is not None and not caller.cancelling()):
                    raise
            if self._closed:  # or it connected as close() began: too late, all the same
                raise RuntimeError("the gatherer was closed while connecting")
        except BaseException:
            sock.close()
            raise
        return sock

    def sdp_candidates(self, mid: str | None = None) -> list[str]:
        """`a=candidate` lines (and `a=end-of-candidates` once complete), for a peer that
        cannot trickle: what has been gathered, maybe a few events ahead of `gather()`.
        With `mid`, only that transport's, for its m-line; without, every transport's and
        one end line after them all, which suits one m-line (or BUNDLE) only: with
        several, ask for each mid.

        Of the current generation: complete means its transports are, not the aggregate
        state, which a restart leaves `complete` until the new generation starts (as a
        browser's does) while it has no candidate yet."""
        core = self._core
        if mid is None:
            count = len(core.transports)
            complete = all(core.transport_state(i) is GatheringState.COMPLETE for i in range(count))
        else:
            complete = self.transport_state(mid) is GatheringState.COMPLETE
        chosen = [c for c in core.candidates if mid is None or c.sdpMid == mid]
        return candidate_lines(chosen, complete=complete)

    def gather(self) -> AsyncIterator[Event]:
        """Stream this generation's events, starting its gathering if need be.

        Ends after the ``null`` candidate event that completes the generation, or when the
        gatherer is closed: the only ``null`` it yields. Once closed it yields nothing more,
        not even what was queued (as a browser fires nothing after ``close()``): relay
        candidates queued then are already released.

        It yields its own generation's events only. After a `restart()`, an iterator of
        the earlier generation still open (a task that forwards it, waiting or busy in
        its loop body; one kept after a ``break``) keeps what was queued of that
        generation, closed out, and reads it to its ``null``, while a new `gather()`
        streams the new one; neither waits for the other. What no open iterator reads of
        an earlier generation is not streamed, as a browser fires no old candidate after
        a restart.

        Within a generation one task iterates at a time: a second `gather()` while the
        first waits for events raises RuntimeError; one while the first's loop body runs
        takes the stream over, as after a ``break`` (the two cannot be told apart), and
        the first then raises RuntimeError when it asks for its next event.

        RuntimeError if the gatherer is closed; an iterator got before `close()` but not
        yet iterated then yields nothing, like one that was waiting. RuntimeError too, at
        the first event asked for, if this generation was read to its ``null`` already:
        `restart()` starts the next one.
        """
        self._check_open()
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        if self._closed:  # since gather() was called
            return
        self._check_usable()
        reader = self._reader
        if reader is not None and reader[1] < self._core.generation:
            self._keep_for(reader)  # a restart since it began: it keeps its generation
        elif self._consumer_waiting:
            raise RuntimeError("gather() is already being iterated")
        self._get_loop()
        if not self._core.started:
            if self._mdns is not None:
                self._consumer_waiting = True
                try:
                    await self._mdns_ready()
                finally:
                    self._consumer_waiting = False
                if self._closed:
                    return
            if not self._core.started:  # restart() meanwhile?
                self._start()
        elif self._core.generation == self._delivered_whole:
            raise RuntimeError(
                f"generation {self._delivered_whole} is complete and its events were consumed; "
                "call restart() for a new one"
            )
        self._gather_calls += 1
        call = self._gather_calls  # a later call supersedes this one (left after a break)
        self._core.release()  # what prepare() or the pool gathered ahead
        target = self._core.generation
        self._reader = (call, target)
        try:
            while not self._closed:
                older = self._older
                kept = None if older is None else older.get(call)
                if kept:  # its generation's, kept for it at a restart (`_keep_for`)
                    event = kept.popleft()
                elif call != self._gather_calls:
                    raise RuntimeError("another gather() took this gatherer's events over")
                elif (queued := self._core.next_event()) is not None:
                    event = queued
                else:
                    self._consumer_waiting = True
                    waiter = self._waiter = self._get_loop().create_future()
                    try:
                        await waiter
                    finally:
                        if self._waiter is waiter:  # else a newer reader waits now
                            self._waiter = None
                            self._consumer_waiting = False
                    continue
                if event.generation != target:
                    continue  # an older generation's, left unread when it was restarted
                if isinstance(event, IceCandidateEvent) and event.candidate is None:
                    # Marked before the yield: a consumer that breaks at the null has read
                    # the generation whole, and a later gather() must say so, not wait.
                    self._delivered_whole = max(self._delivered_whole, target)
                    yield event
                    return
                if isinstance(event, IceGatheringStateChangeEvent) and call == self._gather_calls:
                    self._told_state = event.state
                yield event
        finally:  # at its end, or when the iterator is closed (a break drops it)
            if self._reader is not None and self._reader[0] == call:
                self._reader = None
            if self._older is not None:
                self._older.pop(call, None)

    def _keep_for(self, reader: tuple[int, int]) -> None:
        """A gather() after a `restart()`, while the reader of an earlier generation is
        still open (waiting for events, or in its loop body, in another task, say): that
        reader keeps what is queued of its generation, closed out, and reads it to its
        ``null``; the new one streams the new generation."""
        call, generation = reader
        if self._older is None:
            self._older = {}
        self._older.setdefault(call, deque()).extend(self._core.take_events_through(generation))
        self._reader = None
        self._wake()

    async def restart(self) -> None:
        """ICE restart: new ufrag/pwd and generation; `gather()` then streams it.

        With a pool (`pool_size`), the new generation has been gathered already, or starts
        gathering now, and the pool is topped up behind it; its events wait for `gather()`,
        so a second restart before it drops that generation unseen (a browser's two
        restartIce() before setLocalDescription make one new generation).

        It first lets the event loop run once: host-only events are all ready at once, so
        a loop of restarts and gather()s would otherwise never give other tasks, or the
        loop's signal handlers (Ctrl-C, SIGTERM), a turn."""
        await asyncio.sleep(0)
        self._check_usable()
        pooled = self._core.pooled > 0
        self._core.restart(self._now(), None if pooled else new_credentials())
        self._service()
        self._close_old_sockets()
        if pooled and self._continual:
            self._rescan()  # addresses may have changed while it waited
        if self._pool_size:
            await self.prepare()

    async def prepare(self) -> None:
        """Gather now, before `gather()` or `restart()` ask (RTCConfiguration's
        iceCandidatePoolSize): the current generation, if not started yet, then pooled ones
        until `pool_size` generations are ready, each to be taken by a `restart()`.
        `__aenter__` calls it when `pool_size` is set.

        As with a browser's pool, nothing shows until `gather()`: its events, the
        `gathering_state`, `candidates` and `sdp_candidates()` then tell it all at once."""
        self._check_usable()
        self._get_loop()
        if self._mdns is not None and (
            not self._core.started or self._core.pooled < self._pool_size - 1
        ):
            await self._mdns_ready()
            if self._closed:
                return
        if not self._core.started:
            self._start(hold=True)
        while self._core.pooled < self._pool_size - 1 and not self._closed:
            self._start_pooled()

    async def close(self) -> None:
        """Release every socket, timer and task, deallocating TURN allocations first
        (waiting up to a second for the servers). Idempotent; even a cancelled close
        releases everything: at once, but for the sockets of deallocations under way,
        which stay until the server answers (at most a second), so that an Allocate it
        grants after our Refresh (coturn may) is released too. A second close() waits
        for them. (Should the loop stop first, they close with the gatherer.)

        On another event loop than the one it gathered on (which has stopped or closed,
        as after `asyncio.run`), it releases everything too, but without that loop it
        cannot wait for the servers: the deallocations over UDP are sent once, not
        confirmed nor retried, and TCP/TLS connections are dropped without them."""
        if self._closed:
            if self._close_done is not None:  # another close() is under way: wait for it
                await asyncio.shield(self._close_done)
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        self._close_done = done = loop.create_future()
        cancelled = False
        try:
            if self._loop is not None and self._loop is not loop:
                self._deallocate_unattended()
            else:
                await self._deallocate()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            try:
                self._close_everything(keep_closing=cancelled)
                if self._mdns is not None:
                    # Shielded: a cancelled close still gives port 5353 and the names back.
                    await asyncio.shield(self._mdns.release())
            finally:
                if not self._lingering and not done.done():
                    done.set_result(None)  # else once they close (_close_lingering)

    async def _deallocate(self) -> None:
        """Stop the tasks, and deallocate TURN allocations: wait for the servers (at
        most `CLOSE_TIMEOUT`), and for the tasks."""
        for task in self._tasks or ():
            task.cancel()
        self._core.close(self._now())
        if self._table.sockets:
            self._service()  # sends the deallocations
            if self._core.closing:  # _service wakes us once the servers confirm
                self._deallocated = self._get_loop().create_future()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._deallocated, CLOSE_TIMEOUT)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _deallocate_unattended(self) -> None:
        """close() on another loop than the gatherer's: what closing queued (TURN
        deallocations) is sent without it: datagrams only, once, answers unheard."""
        self._core.close(self._now())
        sockets = self._table.sockets
        while (command := self._core.next_command()) is not None:
            if isinstance(command, SendDatagram) and command.base_key in sockets:
                with contextlib.suppress(OSError):
                    sockets[command.base_key].sendto(command.data, command.address)
        if self._loop is not None and self._loop.is_closed():
            self._waiter = None  # no gather() there to wake

    def _close_everything(self, keep_closing: bool = False) -> None:
        """Close every socket, timer, task and connection; with `keep_closing`, the
        sockets of deallocations under way linger until they end."""
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if self._shared is not None:
            self._shared.close()
        self._cancel_timer()
        for task in self._tasks or ():
            with contextlib.suppress(RuntimeError):  # its loop has closed: it never runs
                task.cancel()
        if self._turn_streams is not None:
            now = self._now()
            for stream in self._turn_streams.abort():  # their deallocations can no longer end
                self._core.stream_closed(now, stream, "closed")
        if keep_closing:  # all linger: _service closes those with nothing under way
            self._lingering.update(self._table.sockets)
            self._service()  # and arms the timer that ends the deallocations
        else:
            for key in list(self._table.sockets):
                self._close_socket(key)
        self._wake()

    async def __aenter__(self) -> Self:
        if self._pool_size:
            try:
                await self.prepare()
            except BaseException:  # no __aexit__ follows: release what was bound
                await self.close()
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- driving the core --------------------------------------------------------------

    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the gatherer is closed")

    def _check_usable(self) -> None:
        self._check_open()
        if self._loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:  # another thread, or no loop running
                raise RuntimeError(_NO_LOOP) from None
            if running is not self._loop:
                raise RuntimeError(_OTHER_LOOP)

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.get_running_loop()
            # Refuses a loop that cannot watch sockets, before any is bound.
            self._hub = hub_for(loop)
            self._loop = loop
        return self._loop

    def _start(self, hold: bool = False) -> None:
        generation = self._core.generation  # restart() released what is older
        if self._shared is not None:
            self._shared.ufrags[generation] = self._core.credentials.ufrag
        bases, tcp_bases = self._bind_generation(generation)
        self._core.start(self._now(), bases, tcp_bases, hold=hold)
        if self._continual and self._watcher is None:
            self._watcher = InterfaceWatcher(self._get_loop(), self._rescan)
        self._service()

    def _start_pooled(self) -> None:
        generation = self._core.next_pooled
        credentials = new_credentials()
        if self._shared is not None:
            self._shared.ufrags[generation] = credentials.ufrag
        bases, tcp_bases = self._bind_generation(generation)
        self._core.prepare(self._now(), credentials, bases, tcp_bases)
        self._service()

    def _bind_generation(
        self,
        generation: int,
        addresses: Sequence[LocalAddress] | None = None,
        first_rank: int = 0,
    ) -> tuple[list[Base], list[Base]]:
        """UDP bases and ICE-TCP listeners on the addresses (by default every present
        one); all or nothing."""
        if addresses is None:
            addresses = self._addresses()
        bases = self._bind_all(addresses, first_rank, generation)
        tcp_bases: list[Base] = []
        # No listener where no TCP candidate may show: it would open a port on an address
        # the policy hides (relay-only, ip_handling 3 and 4, mDNS unavailable).
        if self._tcp_candidates and not (self._core.relay_only or self._core.hide_host):
            try:
                tcp_bases = self._bind_all(addresses, first_rank, generation, socket.SOCK_STREAM)
            except BaseException:
                for base in bases:
                    self._close_socket(base.key)
                raise
        return bases, tcp_bases

    def _close_old_sockets(self) -> None:
        """Keep the sockets of the last generation the application saw (ICE may still be
        using them until the restart completes), the current and pooled ones; release
        the others, older or never seen."""
        keeps = self._core.keeps
        for key, owner in list(self._table.owners.items()):
            if not keeps(owner):
                self._lingering.add(key)
        self._close_lingering()
        if self._shared is not None:  # its peers' checks for them are no longer ours
            self._shared.retire(keeps)

    def _close_lingering(self) -> None:
        """Close the lingering sockets (an old generation's, or all after a cancelled
        close) whose allocations are released by now; the others wait for the server's
        answer (or the close timeout), at a later service. The last one after a cancelled
        close completes it."""
        busy = self._core.closing_keys
        companions = self._table.companions
        for key in list(self._lingering):
            if key not in busy and companions.get(key) not in busy:
                self._lingering.discard(key)
                self._close_socket(key)
        if self._closed and not self._table.sockets:  # the last, after a cancelled close
            self._cancel_timer()
            if self._close_done is not None and not self._close_done.done():
                self._close_done.set_result(None)

    def _addresses(
        self, max_age: float = 1.0, taken_after: float | None = None
    ) -> list[LocalAddress]:
        addresses = local_addresses(
            link_local=self._link_local,
            address_filter=self._address_filter,
            max_age=max_age,
            taken_after=taken_after,
        )
        if self._ip_handling in (IpHandling.DEFAULT_ROUTE_AND_LOCAL, IpHandling.DEFAULT_ROUTE):
            addresses = default_route_addresses(addresses)
        return addresses

    def _bind_all(
        self,
        addresses: Sequence[LocalAddress],
        first_rank: int,
        generation: int,
        kind: int = socket.SOCK_DGRAM,
    ) -> list[Base]:
        """One socket per (transport, component, address); all or nothing: OSError (see
        `SocketTable.open`) leaves nothing bound."""
        bases: list[Base] = []
        try:
            for transport in range(len(self._core.transports)):
                for component in range(1, self._core.components + 1):
                    for rank, address in enumerate(addresses, start=first_rank):
                        base = self._bind(address, transport, component, rank, generation, kind)
                        if base is not None:
                            bases.append(base)
        except BaseException:
            for base in bases:
                self._close_socket(base.key)
            raise
        return bases

    def _bind(
        self,
        address: LocalAddress,
        transport: int,
        component: int,
        rank: int,
        generation: int,
        kind: int = socket.SOCK_DGRAM,
    ) -> Base | None:
        table = self._table
        if self._shared is not None and self._shared_port is not None and kind == socket.SOCK_DGRAM:
            port = self._shared_port
            # With TURN over UDP, an allocation needs a 5-tuple of its own: a companion.
            key = table.join_shared(
                self._get_loop(), address, port, generation, self._needs_companions
            )
            if key is None:
                return None
            relay_key = table.companions.get(key)
            if self._on_datagram is not None:
                try:
                    self._shared.claim(table.shared[key], (address.address, port), generation)
                except ValueError:  # the ufrag is another gatherer's there
                    self._close_socket(key)
                    raise
        else:
            relay_key = None
            key = table.open(address, kind, generation)
            if key is None:
                return None
            sock = table.sockets[key]
            port = sock.getsockname()[1]
            if kind == socket.SOCK_DGRAM:
                if self._on_datagram is not None:
                    self._watch(key, sock)  # peers may send before we do
            elif self._listeners is not None:
                self._listeners.listen(key, sock)
        if kind == socket.SOCK_DGRAM:
            table.add_base(key, (address.address, port))
        return Base(
            key=key,
            transport=transport,
            component=component,
            address=address.address,
            port=port,
            family=address.family,
            rank=rank,
            network_id=address.network_id,
            name=None if self._mdns is None else self._mdns.name_for(address.address),
            relay_key=relay_key,
        )

    def _open_beside(self, command: OpenSocket) -> None:
        """Another UDP socket on the address of `command.beside`, for a TURN allocation
        whose 5-tuple the server found taken (437); it lives as long as that socket."""
        reason = "no other socket could be bound on the base's address"
        try:
            key = self._table.open_beside(command.beside)
        except OSError as error:  # the relay fails; the gathering goes on
            key = None
            reason += f" ({error.strerror})"
        if key is None:
            self._core.socket_failed(self._now(), command.request, reason)
        else:
            port = self._table.sockets[key].getsockname()[1]
            self._core.socket_opened(self._now(), command.request, key, port)

    # -- continual gathering -----------------------------------------------------------

    def _rescan(self, taken_after: float | None = None) -> None:
        """Bring the current generation's bases in line with the addresses present (as an
        enumeration at most `_RESCAN_MAX_AGE` old, or taken after `taken_after`, tells
        them)."""
        core = self._core
        if self._closed or not core.started:  # continual: started means gathering
            return
        now = self._now()
        # The watcher has just enumerated afresh for every gatherer: its view serves.
        present = {a.address: a for a in self._addresses(_RESCAN_MAX_AGE, taken_after)}
        bases = core.bases
        first_rank = core.next_rank  # before any goes: a new address never takes its rank
        every = (*bases, *core.tcp_bases)
        lost = {b.address for b in every} - present.keys()
        if lost:
            gone = [b.key for b in every if b.address in lost]
            core.remove_bases(now, gone)
            for key in [*gone, *self._table.opened_beside(gone)]:
                self._close_socket(key)
            if self._mdns is not None:
                self._mdns.forget(lost)
        known = {b.address for b in bases}
        added = [a for a in present.values() if a.address not in known]
        new_bases: list[Base] = []
        tcp_bases: list[Base] = []
        for rank, address in enumerate(added, start=first_rank):
            try:
                udp, tcp = self._bind_generation(core.generation, [address], rank)
            except (OSError, ValueError):  # no port for it now, or (a shared port) its
                continue  # ufrag taken there: tried again at the next change
            new_bases += udp
            tcp_bases += tcp
        if new_bases or tcp_bases:
            core.add_bases(now, new_bases, tcp_bases)
        self._service()

    # -- mDNS host candidates ----------------------------------------------------------

    async def _mdns_ready(self) -> None:
        """Join the loop's shared mDNS responder. Should port 5353 be unavailable, host
        candidates are left out rather than shown with their addresses."""
        mdns = self._mdns
        if mdns is None or mdns.joined or self._core.hide_host:
            return
        await mdns.join()
        if mdns.unavailable is not None:
            self._core.hide_host = True
        elif self._closed:  # close() ran while we waited, with nothing to release then
            await mdns.release()

    # -- a shared port (see SharedPortSession) -----------------------------------------

    def _on_answer(self, key: int, data: bytes, source: tuple[str, int]) -> None:
        self._core.receive_datagram(self._now(), key, data, source)
        self._service()

    def _on_unreachable(self, key: int, destination: tuple[str, int], cause: str) -> None:
        self._core.unreachable(self._now(), key, destination, cause)
        self._service()

    def _from_peer(self, local: tuple[str, int], data: bytes, source: tuple[str, int]) -> None:
        if self._on_datagram is not None:
            self._deliver(self._on_datagram, local, source, data)
            self._deliver_queued()  # what its sends through a relay brought meanwhile

    # -- sockets, the timer and the core's commands ------------------------------------

    def _close_socket(self, key: int) -> None:
        """Close the socket (and its companion), lingering or not."""
        lingering = self._lingering
        if lingering:
            lingering.discard(key)
            companion = self._table.companions.get(key)
            if companion is not None:  # closed with its base
                lingering.discard(companion)
        if self._shared is not None:
            self._shared.forget_base(key)
        self._table.close(key, self._loop)

    def _watch(self, key: int, sock: _socket.socket) -> None:
        """Read what arrives on the socket: `_on_readable`."""
        if self._on_fd is None:
            self._on_fd = self._on_readable  # one bound method for all our sockets
        self._table.watch(key, sock, self._on_fd, self._get_loop())

    def _on_readable(self, fd: int) -> None:
        table = self._table
        key = table.reading.get(fd)
        if key is None:
            return
        sock = table.sockets[key]
        now = self._now()
        # Answers to our requests come one at a time: read one, and epoll (level-triggered)
        # calls again if more is queued, which spares the failing read that ends a drain.
        # A data path (on_datagram) drains bursts, but lets other sockets have their turn.
        # Answers to our requests are small, and a 64 KiB buffer per read is measurable
        # (stun, N=1000, 8 interleaved runs each: 0.140 against 0.156 ms per gathering);
        # a data path's datagrams, peers' or relayed, may be as large as UDP allows.
        size = MAX_DATAGRAM if self._on_datagram or self._on_relayed else _ANSWER_SIZE
        for _ in range(64 if self._on_datagram else 1):
            try:
                data, source = sock.recvfrom(size)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._read_errors(key, sock, now)
                continue
            source = source[:2]
            if not self._core.receive_datagram(now, key, data, source) and self._on_datagram:
                base = table.base_addresses.get(key)
                if base is not None:
                    self._deliver(self._on_datagram, base, source, data)
        self._service()

    def _read_errors(self, key: int, sock: _socket.socket, now: float) -> None:
        """Tell the core of the ICMP errors queued on the socket (IP_RECVERR)."""
        for _quoted, destination, cause in icmperrors.read(sock):
            self._core.unreachable(now, key, destination, cause)

    def _send_failed(self, command: SendDatagram, sock: _socket.socket, error: OSError) -> None:
        """A datagram the kernel refused (sent by the socket hub, after `_service`). A
        transient refusal loses it like the network may (retransmission follows); a hard
        one (no route, a destination refused or invalid) fails its server now with the
        reason, as an ICMP error does, rather than at the deadline (a deallocation's
        too, so that a closing gatherer need not wait for it). Nothing once the socket is
        ours no more (closed meanwhile): a shared one's errors are its other sessions'."""
        if error.errno in icmperrors.TRANSIENT_SEND_ERRORS:
            return
        if command.base_key not in self._table.sockets:
            return
        failure = self._send_again(command.base_key, sock, command.data, command.address)
        if failure is not None and failure.errno not in icmperrors.TRANSIENT_SEND_ERRORS:
            self._rescan_if_address_gone(failure, refused=True)
            if command.base_key in self._table.sockets:  # else it went with its address
                cause = f"sending failed: {failure.strerror or failure}"
                self._core.unreachable(self._now(), command.base_key, command.address, cause)
        self._service()  # what the errors read, or this one, made the core do

    def _rescan_if_address_gone(self, failure: OSError, *, refused: bool) -> None:
        """Continual gathering: a send refused (or, not `refused`, a connection lost) in a
        way that may mean a local address went before the watcher told. The addresses are
        enumerated again, once for a burst of such failures (taken after the first of
        them, as the socket hub recorded it), and the bases gone are removed:
        `candidateremoved`, not a 701."""
        if not (self._continual and failure.errno in _ADDRESS_GONE_ERRORS):
            return
        hub = self._hub
        if hub is None:
            self._rescan(taken_after=time.monotonic())
        else:
            self._rescan(taken_after=hub.refused_at if refused else hub.dropped_at())

    def _send_again(
        self, key: int, sock: _socket.socket, data: BytesLike, address: tuple[str, int]
    ) -> OSError | None:
        """`icmperrors.send_again`, the errors read first failing their own servers."""
        shared = self._table.shared.get(key)
        if shared is not None:  # each error to the session whose request caused it
            return icmperrors.send_again(sock, data, address, shared.read_errors)
        return icmperrors.send_again(
            sock, data, address, lambda: self._read_errors(key, sock, self._now())
        )

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._core.handle_timer(self._now())
        self._service()

    def _service(self) -> None:
        """Carry out the core's commands, rearm the timer and wake the consumer."""
        core = self._core
        table = self._table
        while (command := core.next_command()) is not None:
            if isinstance(command, SendDatagram):
                self._send_datagram(command)
            elif isinstance(command, StreamSend):
                if self._turn_streams is not None:
                    self._turn_streams.send(command.stream, command.data)
            elif isinstance(command, OpenStream):
                self._stream_set().open(command)
            elif isinstance(command, CloseStream):
                if self._turn_streams is not None:
                    self._turn_streams.close(command.stream)
            elif isinstance(command, Resolve):  # a name: the core contacts IPs at once
                self._spawn(self._resolve(command))
            elif isinstance(command, OpenSocket):
                self._open_beside(command)
            else:
                assert_never(command)
        self._deliver_queued()
        if self._closed and not table.sockets:
            return  # released: no timer, no one to wake
        self._rearm_timer()
        if core.has_events:
            self._wake()
        if self._lingering:
            self._close_lingering()
        deallocated = self._deallocated
        if deallocated is not None and not deallocated.done() and not self._core.closing:
            deallocated.set_result(None)

    def _send_datagram(self, command: SendDatagram) -> None:
        table = self._table
        sock = table.sockets.get(command.base_key)
        if sock is None:
            return
        shared = table.shared.get(command.base_key)
        if shared is not None and self._shared is not None:  # answered through the socket
            self._shared.expect(shared, command.base_key, command.data, self._now())
        elif sock.fileno() not in table.reading:
            # Only answers to what we sent are ever accepted, so a socket is watched
            # from its first send on: host-only bases cost no watch.
            self._watch(command.base_key, sock)
        (self._hub or hub_for(self._get_loop())).send_soon(
            sock, command.data, command.address, self._send_failed, command
        )

    def _rearm_timer(self) -> None:
        """One loop timer per gatherer, at the core's next deadline (moved only if it did)."""
        timer = self._core.get_timer()
        if timer != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if timer is None else self._get_loop().call_at(timer, self._on_timer)
            self._timer_at = timer

    def _cancel_timer(self) -> None:
        """No timer, and none armed: the next `_rearm_timer` arms the core's deadline
        afresh (a cleared handle with its deadline kept would look armed, and never be)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _deliver_queued(self) -> None:
        """Hand the application what the core has queued for it: data relayed to us, and
        failed permissions or channels, in order. Not from within a callback: the call
        under way delivers it, once that has returned."""
        if self._in_callback:
            return
        core = self._core
        while True:
            if (relayed := core.next_relayed()) is not None:
                if self._on_relayed is not None:
                    self._deliver(self._on_relayed, *relayed)
            elif (failure := core.next_relay_failure()) is not None:
                if self._on_relay_failure is not None:
                    self._deliver(self._on_relay_failure, *failure)
            else:
                return

    def _deliver(self, callback: Callable[..., None], *args: Any) -> bool:
        """Call the application back; its exception goes to the loop's exception handler
        (logged, as asyncio does for callbacks) and never stops the gatherer. Nothing
        once `close()` has begun (its deallocations may take a second): the application
        may have shut down. Whether the callback ran and returned.

        One call at a time, as asyncio runs callbacks: one that sends (through a relay,
        say) runs the service, which delivers nothing meanwhile; what came is delivered
        after it, in order (`_deliver_queued`)."""
        if self._closed:
            return False
        nested = self._in_callback
        self._in_callback = True
        try:
            callback(*args)
        except Exception as error:
            self._get_loop().call_exception_handler(
                {"message": f"ice-engine: {callback!r} raised", "exception": error}
            )
            return False
        finally:
            self._in_callback = nested
        return True

    def _wake(self) -> None:
        """Let a waiting gather() look at the queue again."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task that close() cancels and waits for."""
        task = self._get_loop().create_task(work)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _stream_set(self) -> StreamSet:
        """Made at the first connection: most gatherers never open one."""
        if self._turn_streams is None:
            self._turn_streams = StreamSet(
                self._table.sockets,
                self._ssl_context,
                self._spawn,
                self._stream_connected,
                self._stream_data,
                self._stream_closed,
            )
        return self._turn_streams

    def _stream_connected(self, stream: int, port: int | None) -> None:
        self._core.stream_connected(self._now(), stream, port)
        self._service()

    def _stream_data(self, stream: int, data: bytes) -> None:
        self._core.stream_data(self._now(), stream, data)
        self._service()

    def _stream_closed(self, stream: int, error: BaseException | None) -> None:
        if isinstance(error, OSError):
            self._rescan_if_address_gone(error, refused=False)
        reason = None if error is None else describe(error)
        self._core.stream_closed(self._now(), stream, reason)
        self._service()

    async def _resolve(self, command: Resolve) -> None:
        resolver = self._resolver or default_resolver()
        try:
            addresses = await resolver.resolve(command.url)
        except ResolutionError as error:
            self._core.resolve_failed(self._now(), command.request, str(error))
        except Exception as error:  # a Resolver subclass's own bug: the server fails, not us
            reason = f"DNS lookup of {command.url.host!r} failed: {error!r}"
            self._core.resolve_failed(self._now(), command.request, reason)
        else:
            found = [(a.host, a.port) for a in addresses]
            try:
                self._core.resolved(self._now(), command.request, found)
            except (TypeError, ValueError) as error:  # a Resolver subclass's port 0, say
                reason = f"DNS lookup of {command.url.host!r} gave no address to use: {error}"
                self._core.resolve_failed(self._now(), command.request, reason)
        self._service()
