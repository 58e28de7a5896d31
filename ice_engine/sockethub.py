"""One epoll for every gatherer's sockets on an event loop, and one outbox.

`loop.add_reader` costs a selector key, a handle and a context per socket, and a handle
per readiness: measurable when thousands of gatherers each watch a few sockets. The hub
registers one epoll with the loop instead and calls each socket's callback itself
(watching and unwatching a socket: 2 µs against 7 µs). Where there is no epoll, it
falls back to `loop.add_reader`. The hub closes with its last socket, so an idle
process holds no extra fd.

Datagrams are sent together, once the callbacks of the loop's turn have run
(`send_soon`): a `sendto` costs less in a burst, where the kernel's path to the
receiver (a NAT, a server woken on another CPU) is still warm, than one at a time among
other work (stun and turn, N=1000: 4 % less CPU per gathering; see docs/benchmarks.md).
A burst goes out as soon as it has `BURST` datagrams: thousands of gatherers started in
one turn would otherwise hold their first requests back until the last had started
(3,000 at once: 0.8 s, which their RTO and deadlines counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["BURST", "MAX_DATAGRAM", "SocketHub", "hub_for"]

#: What one read of the data path takes: any UDP datagram whole (a peer's may be large; a
#: smaller buffer would cut it short silently). Sockets that only get answers to our own
#: requests read less (the driver's `_ANSWER_SIZE`), which measured faster.
MAX_DATAGRAM = 65535

Callback = Callable[[int], None]  # called with the readable fd
#: Told (context, socket, error) of a datagram the kernel refused.
SendFailed = Callable[[Any, Any, OSError], None]
_HAS_EPOLL = hasattr(select, "epoll")  # Linux
#: Datagrams sent in one burst at most: as fast per datagram as a longer one (ab.py).
BURST = 64
#: (socket, datagram, destination, on_failure, context), queued by `send_soon`.
_Outgoing = tuple[Any, bytes, tuple[str, int], SendFailed, Any]


class SocketHub:
    """Read readiness for many sockets, through one epoll registered with the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll: Any = None  # select.epoll while anything is watched
        self._callbacks: dict[int, Callback] = {}
        self._outbox: list[_Outgoing] = []
        self._failed: list[tuple[Any, OSError, SendFailed, Any]] = []
        self._flush_due = False  # a call of `_flush` is scheduled
        self.refused_at = 0.0  # when the first of the refusals being told happened
        self._dropped_at: float | None = None  # the first connection lost this loop turn

    def watch(self, fd: int, callback: Callback) -> None:
        """Call `callback(fd)` whenever `fd` is readable, until `unwatch(fd)`.

        One callback may serve many fds (a gatherer's), so watching costs no object.
        """
        if not _HAS_EPOLL:
            self._loop.add_reader(fd, callback, fd)
            return
        if self._epoll is None:
            self._epoll = select.epoll()
            self._loop.add_reader(self._epoll.fileno(), self._dispatch)
        self._epoll.register(fd, select.EPOLLIN)
        self._callbacks[fd] = callback

    def unwatch(self, fd: int) -> None:
        """Stop watching `fd`, before the socket is closed. Always unregistered, even just
        before a close, which drops it from the epoll set only if no other process holds
        the socket: after a fork (multiprocessing) it would stay, ready for ever, and
        spin the loop."""
        if self._epoll is None:
            self._loop.remove_reader(fd)
            return
        if self._callbacks.pop(fd, None) is None:
            return
        with contextlib.suppress(OSError):  # already closed: the kernel dropped it
            self._epoll.unregister(fd)
        if not self._callbacks:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None

    def send_soon(
        self,
        sock: Any,
        data: bytes,
        address: tuple[str, int],
        on_failure: SendFailed,
        context: Any = None,
    ) -> None:
        """Send the datagram with the others queued in this turn of the loop, in order;
        `on_failure(context, sock, error)` if the kernel refuses it, from a loop callback
        of its own (never inside the caller's). Nothing is sent from a socket closed
        meanwhile."""
        outbox = self._outbox
        outbox.append((sock, data, address, on_failure, context))
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)
        elif len(outbox) >= BURST:  # sent now; failures told by the `_flush` still due
            self._outbox = []
            self._send(outbox)

    def _flush(self) -> None:
        self._flush_due = False
        outbox, self._outbox = self._outbox, []
        self._send(outbox)
        failed, self._failed = self._failed, []
        for sock, error, on_failure, context in failed:
            if sock.fileno() != -1:  # closed since: its gatherer let it go
                on_failure(context, sock, error)

    def _send(self, outbox: list[_Outgoing]) -> None:
        for sock, data, address, on_failure, context in outbox:
            try:
                sock.sendto(data, address)
            except OSError as error:
                if not self._failed:  # the first of those the next `_flush` tells
                    self.refused_at = time.monotonic()
                self._failed.append((sock, error, on_failure, context))

    def dropped_at(self) -> float:
        """A connection lost now (its address gone, maybe): when the first of those lost
        in this turn of the loop was, so that one walk of the interfaces, taken since,
        serves them all, as `refused_at` does for datagrams."""
        if self._dropped_at is None:
            self._dropped_at = time.monotonic()
            self._loop.call_soon(self._end_drops)
        return self._dropped_at

    def _end_drops(self) -> None:
        self._dropped_at = None

    def forget(self) -> None:
        """Its loop has closed: let go of the epoll and of what it watched."""
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        self._callbacks.clear()
        self._outbox.clear()
        self._failed.clear()

    @property
    def idle(self) -> bool:
        return self._epoll is None

    def _dispatch(self) -> None:
        epoll = self._epoll
        if epoll is None:
            return
        callbacks = self._callbacks
        # Everything ready, as asyncio's own selector does: a cap here would leave answers
        # waiting for later loop iterations while thousands of gatherers hit deadlines.
        for fd, _events in epoll.poll(0, len(callbacks) or 1):
            callback = callbacks.get(fd)  # unwatched by an earlier callback of this round
            if callback is not None:
                callback(fd)


_hubs: dict[asyncio.AbstractEventLoop, SocketHub] = {}
_hubs_lock = threading.Lock()


def hub_for(loop: asyncio.AbstractEventLoop) -> SocketHub:
    """The loop's hub, kept while its loop may use it (past 64 loops, idle hubs go).

    RuntimeError for a loop that cannot watch sockets, such as Windows' proactor loop.
    """
    hub = _hubs.get(loop)
    if hub is None:
        if type(loop).add_reader is asyncio.AbstractEventLoop.add_reader:
            raise RuntimeError(
                f"ice-engine needs an event loop that can watch sockets (add_reader), "
                f"which {type(loop).__name__} cannot; on Windows, use asyncio.SelectorEventLoop"
            )
        with _hubs_lock:  # loops of several threads may come at once
            # Let go of the hubs of closed loops, with what they watched (gatherers never
            # closed go to the collector), and past 64 loops (tests make many) forget
            # idle ones (a gatherer holding one keeps it).
            many = len(_hubs) > 64
            for old, held in list(_hubs.items()):
                if old.is_closed():
                    del _hubs[old]
                    held.forget()
                elif many and held.idle:
                    del _hubs[old]
            hub = _hubs.setdefault(loop, SocketHub(loop))
    return hub
