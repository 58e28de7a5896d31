"""ICE-TCP (RFC 6544) in the driver: the listeners of passive candidates, which hand the
connections peers make to the application, and the sockets that connect out from a base.

The core only names the candidates (`Gathering` gives each listener a passive candidate
and an active one on port 9); connections are the data path's, so they live here, beside
the driver, with no part in gathering.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any

from .sockettable import SocketTable

__all__ = ["Listeners", "TcpConnectionHandler", "socket_beside"]

#: Called with (local passive candidate's address, peer address, the connection's socket)
#: for each connection a peer makes to an ICE-TCP passive candidate.
TcpConnectionHandler = Callable[[tuple[str, int], tuple[str, int], socket.socket], None]

#: Connections accepted per readiness of a listener, so that other sockets get their turn.
_ACCEPTS_PER_TURN = 16
#: accept() errors of the connection taken, not of the listener: accept(2) passes on a
#: connection's pending network error; the next may be fine. Any other error (out of fds
#: or memory, above all) pauses the listener, as asyncio's servers do, and is reported.
_CONNECTION_ERRORS = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
    }
)
#: How long a listener rests after an accept() error that is not a connection's own.
_ACCEPT_RETRY_S = 1.0


def socket_beside(base: Any) -> socket.socket:
    """A non-blocking TCP socket bound to the address (and IPv6 scope) of the socket
    `base`, on a port of the kernel's choosing: a connection from that base. With
    IPPROTO_TCP named, or asyncio leaves Nagle on (a round trip lost in a handshake)."""
    local = base.getsockname()
    sock = socket.socket(base.family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setblocking(False)
        sock.bind((local[0], 0, *local[2:]))
    except BaseException:
        sock.close()
        raise
    return sock


class Listeners:
    """One gatherer's passive-candidate listeners: each connection a peer makes goes to
    the application's handler, through the gatherer's `deliver` (which says whether it
    was taken; a refused one is closed), then `after` runs (what the handler's sends
    brought meanwhile)."""

    __slots__ = ("_after", "_closed", "_deliver", "_handler", "_loop", "_table")

    def __init__(
        self,
        table: SocketTable,
        handler: TcpConnectionHandler,
        deliver: Callable[..., bool],
        after: Callable[[], None],
        loop: Callable[[], asyncio.AbstractEventLoop],
        closed: Callable[[], bool],
    ) -> None:
        self._table = table
        self._handler = handler
        self._deliver = deliver
        self._after = after
        self._loop = loop
        self._closed = closed

    def listen(self, key: int, sock: _socket.socket) -> None:
        """Accept what peers connect to the listener `key` of the table."""
        self._table.watch(key, sock, self._accept, self._loop())

    def _accept(self, fd: int) -> None:
        table = self._table
        key = table.reading.get(fd)
        if key is None:
            return
        listener = table.sockets[key]  # looked up anew: a rescan may have replaced it
        local = listener.getsockname()[:2]
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                # The C type's accept: the fd and the peer (typeshed does not know it).
                connection, peer = listener._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                if error.errno in _CONNECTION_ERRORS:
                    continue  # that connection's own, as accept(2) passes them on
                self._pause(key, error)  # level-triggered, it would spin
                break
            sock = socket.socket(listener.family, socket.SOCK_STREAM, fileno=connection)
            sock.setblocking(False)
            if not self._deliver(self._handler, local, peer[:2], sock):
                sock.close()  # closing (the listener goes with the deallocations), or the
                # handler raised: nobody will serve the connection
        self._after()

    def _pause(self, key: int, error: OSError) -> None:
        """Stop accepting on the listener for `_ACCEPT_RETRY_S`, and say why."""
        loop = self._loop()
        self._table.unwatch(key, loop)
        loop.call_exception_handler(
            {
                "message": f"ice-engine: cannot accept an ICE-TCP connection "
                f"({error.strerror}); trying again in {_ACCEPT_RETRY_S:g} s",
                "exception": error,
            }
        )
        loop.call_later(_ACCEPT_RETRY_S, self._resume, key)

    def _resume(self, key: int) -> None:
        sock = self._table.sockets.get(key)
        if sock is not None and not self._closed():  # else closed meanwhile
            self.listen(key, sock)
