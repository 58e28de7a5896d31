"""TCP and TLS connections to TURN servers, as asyncio protocols feeding the core.

TLS runs over memory BIOs rather than asyncio's own TLS, which cannot be handed a session:
keeping sessions per server lets a later connection resume in one round trip instead of
two (coturn speaks TLS 1.2, whose full handshake costs two).

`StreamSet` keeps one gatherer's connections and the tasks that open them, apart from the
driver's other work; it tells what the core must hear through callables it is given, and
knows nothing of the core.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import functools
import socket
import ssl
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, cast

from .commands import OpenStream
from .icetcp import socket_beside

__all__ = [
    "StreamProtocol",
    "StreamSet",
    "TlsStreamProtocol",
    "default_tls_context",
    "describe",
    "tls_sessions",
]


#: Called with (stream, data) for bytes received, and (stream, error or None) at the end.
DataCallback = Callable[[int, bytes], None]
ClosedCallback = Callable[[int, BaseException | None], None]
#: Called with (stream, its local port if known) once connected; `StreamSet` calls a
#: `ClosedCallback` when a stream fails or ends other than by `StreamSet.close`.
ConnectedCallback = Callable[[int, int | None], None]
#: Runs a coroutine as a task the gatherer cancels and awaits at close().
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """Verifying, from the system store or SSL_CERT_FILE; built once (it costs ms)."""
    return ssl.create_default_context()


def describe(error: BaseException) -> str:
    """A socket's or TLS's failure in the few lowercase words an error event's text ends
    with ("connection refused", "TLS failed: ..."): for every socket of the package."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {error.reason or error}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


def _stream_transport(transport: asyncio.BaseTransport) -> asyncio.Transport:
    """A connection's transport as what it is. No isinstance check: uvloop's TCPTransport
    writes and closes as asyncio's does, but is no subclass of `asyncio.Transport`."""
    return cast(asyncio.Transport, transport)


class StreamProtocol(asyncio.Protocol):
    """One TURN-over-TCP connection; `ready` resolves once it can carry data."""

    def __init__(self, stream: int, on_data: DataCallback, on_closed: ClosedCallback) -> None:
        self._stream = stream
        self._on_data = on_data
        self._on_closed = on_closed
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Ours, not only the transport's: closed here should its loop be gone.
        self.sock: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = _stream_transport(transport)
        self.ready.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._on_data(self._stream, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionResetError())
        self._on_closed(self._stream, exc)


_SessionKey = tuple[tuple[str, int], str]  # (server address, server name)

_SESSIONS = "_ice_engine_tls_sessions"


def tls_sessions(context: ssl.SSLContext) -> dict[_SessionKey, ssl.SSLSession]:
    """The context's TLS sessions per server: a later connection resumes with an
    abbreviated handshake, one round trip instead of two under TLS 1.2. A session is only
    ever resumed through the context that made it: resuming skips the certificate checks,
    and those are the context's (ssl refuses another context's session anyway).

    Kept on the context itself: a session holds its context, so a table of our own,
    weak keys and all, would keep every context ever given alive; this way they go
    together. (A context that takes no attributes gets no resumption.)"""
    sessions: dict[_SessionKey, ssl.SSLSession] | None = getattr(context, _SESSIONS, None)
    if sessions is None:
        sessions = {}
        with contextlib.suppress(AttributeError):
            setattr(context, _SESSIONS, sessions)
    return sessions


class TlsStreamProtocol(StreamProtocol):
    """TLS over a TCP transport through memory BIOs, so that sessions can be resumed
    (asyncio's own TLS cannot be handed a session)."""

    def __init__(
        self,
        stream: int,
        on_data: DataCallback,
        on_closed: ClosedCallback,
        context: ssl.SSLContext,
        server: tuple[str, int],
        server_name: str,
    ) -> None:
        super().__init__(stream, on_data, on_closed)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._key = (server, server_name)
        self._sessions = tls_sessions(context)
        self._tls = context.wrap_bio(
            self._incoming,
            self._outgoing,
            # A fully qualified name's final dot is no part of the certificate's name.
            server_hostname=server_name.removesuffix(".") or server_name,
            session=self._sessions.get(self._key),
        )
        self._handshaken = False
        self._session_wanted = True  # until this connection's session is kept
        self._failure: ssl.SSLError | None = None  # what made us drop the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = _stream_transport(transport)
        self._advance()

    def write(self, data: bytes) -> None:
        self._tls.write(data)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        self._advance()

    def _advance(self) -> None:
        try:
            if not self._handshaken:
                self._tls.do_handshake()
                self._handshaken = True
                self._flush()
                if not self.ready.done():  # cancelled if the gatherer gave up waiting
                    self.ready.set_result(None)
                if self._tls.version() != "TLSv1.3":  # 1.3 tickets come after the handshake
                    self._keep_session_soon()
            while True:
                data = self._tls.read(65536)
                if not data:
                    break
                self._on_data(self._stream, data)
                if self._session_wanted:  # the server's tickets came before its answer
                    self._keep_session_soon()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as error:
            self._sessions.pop(self._key, None)
            if not self.ready.done():
                self.ready.set_exception(error)
            elif self.transport is not None:
                self._failure = error
                self.transport.abort()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        # abort() reports no error of its own: the TLS one is what ended the connection
        # ("TURN connection failed: ... bad record mac"), not the server's closing it.
        super().connection_lost(exc or self._failure)

    def _keep_session_soon(self) -> None:
        """Reading the session costs ~0.3 ms: do it once our Finished and first request,
        or our reaction to the first answer, are on their way."""
        self._session_wanted = False
        asyncio.get_running_loop().call_soon(self._keep_session)

    def _keep_session(self) -> None:
        """Keep the session, so that the next connection to this server resumes it."""
        session = self._tls.session
        if session is not None:
            if len(self._sessions) >= 1024:
                self._sessions.clear()
            self._sessions[self._key] = session

    def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending and self.transport is not None:
            self.transport.write(pending)


class StreamSet:
    """One gatherer's TCP and TLS connections to TURN servers, by the core's stream number.

    A connection is opened from its base socket's address (`sockets`, the gatherer's, by
    key) in a task from `spawn`; `close` cancels it if it is still connecting."""

    __slots__ = (
        "_on_closed",
        "_on_connected",
        "_on_data",
        "_opening",
        "_sockets",
        "_spawn",
        "_ssl_context",
        "_streams",
    )

    def __init__(
        self,
        sockets: Mapping[int, _socket.socket],
        ssl_context: ssl.SSLContext | None,
        spawn: Spawn,
        on_connected: ConnectedCallback,
        on_data: DataCallback,
        on_closed: ClosedCallback,
    ) -> None:
        self._sockets = sockets
        self._ssl_context = ssl_context
        self._spawn = spawn
        self._on_connected = on_connected
        self._on_data = on_data
        self._on_closed = on_closed
        self._streams: dict[int, StreamProtocol] = {}  # connected
        self._opening: dict[int, asyncio.Task[None]] = {}

    def open(self, command: OpenStream) -> None:
        stream = command.stream
        task = self._spawn(self._connect(command))
        self._opening[stream] = task
        task.add_done_callback(lambda _: self._opening.pop(stream, None))

    def send(self, stream: int, data: bytes) -> None:
        protocol = self._streams.get(stream)
        if protocol is not None:
            protocol.write(data)

    def close(self, stream: int) -> None:
        opening = self._opening.pop(stream, None)
        if opening is not None:
            opening.cancel()
        protocol = self._streams.pop(stream, None)
        if protocol is not None:
            protocol.close()

    def abort(self) -> list[int]:
        """Drop every connection now (the gatherer is releasing everything); the streams
        dropped, which no `on_closed` will report."""
        for protocol in self._streams.values():
            if protocol.transport is not None:
                with contextlib.suppress(RuntimeError):  # its loop has closed
                    protocol.transport.abort()
            # Now, not when the loop finishes the abort: it may have stopped or closed
            # (close() on another loop). The transport's socket: its close is then nothing.
            if protocol.sock is not None:
                protocol.sock.close()
        dropped = list(self._streams)
        self._streams.clear()
        return dropped

    async def _connect(self, command: OpenStream) -> None:
        sock = self._sockets.get(command.base_key)
        if sock is None:
            return
        loop = asyncio.get_running_loop()
        tcp: socket.socket | None = None
        protocol: StreamProtocol | None = None
        try:
            tcp = socket_beside(sock)  # from the base's address (and scope)
            await loop.sock_connect(tcp, command.address)
            protocol = self._protocol(command)
            protocol.sock = tcp
            await loop.create_connection(lambda: protocol, sock=tcp)
            await protocol.ready
        except BaseException as error:
            if protocol is not None:
                # Nobody awaits it now: the abort below must not leave it an exception
                # that no one retrieves ("Future exception was never retrieved").
                protocol.ready.cancel()
                if protocol.transport is not None:
                    protocol.transport.abort()  # connected, mid-handshake: nothing to keep
            if tcp is not None:
                tcp.close()  # now, as `abort` does: the transport's close is then nothing
            if not isinstance(error, Exception):  # cancelled: close(), restart or deadline
                raise
            self._on_closed(command.stream, error)
            return
        self._streams[command.stream] = protocol
        sockname = protocol.transport.get_extra_info("sockname") if protocol.transport else None
        self._on_connected(command.stream, sockname[1] if sockname else None)

    def _protocol(self, command: OpenStream) -> StreamProtocol:
        if not command.tls:
            return StreamProtocol(command.stream, self._on_data, self._ended)
        return TlsStreamProtocol(
            command.stream,
            self._on_data,
            self._ended,
            self._ssl_context or default_tls_context(),
            command.address,
            command.server_name,
        )

    def _ended(self, stream: int, error: BaseException | None) -> None:
        if self._streams.pop(stream, None) is None:
            return  # we closed it
        self._on_closed(stream, error)
