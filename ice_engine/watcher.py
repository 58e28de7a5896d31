"""Telling continual gathering that the machine's addresses changed.

rtnetlink (Linux) says so within microseconds and costs nothing while nothing changes;
its messages are only a trigger to re-enumerate, so none is parsed. Elsewhere, a poll.
See docs/events.md for the measurements behind the choice.

One netlink socket (or poll timer) per event loop serves every watcher on it, and the
addresses are enumerated once per change for all of them: a server gathering continually
for thousands of sessions holds one fd for this, not thousands, and a change costs one
walk of the interfaces, not one per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Callable

from .interfaces import local_addresses

__all__ = ["InterfaceWatcher"]

_RTMGRP_INTERFACES = 0x1 | 0x10 | 0x100  # links, IPv4 and IPv6 addresses
_COALESCE = 0.05  # a burst of messages (an address and its routes) makes one call
_POLL_INTERVAL = 2.0  # without netlink


class InterfaceWatcher:
    """Calls `on_change` (on the loop) after the set of local addresses may have changed;
    by then `local_addresses()` has enumerated them afresh. Until `close()`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None]) -> None:
        self._source: _Source | None = _source_of(loop)
        self._source.watchers[self] = on_change

    def close(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.watchers.pop(self, None)
            if not source.watchers:
                source.close()


class _Source:
    """The loop's netlink socket or poll timer, and the watchers it calls."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.watchers: dict[InterfaceWatcher, Callable[[], None]] = {}
        self._socket: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        if sys.platform == "linux":
            sock = None
            try:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
                sock.bind((0, _RTMGRP_INTERFACES))
                sock.setblocking(False)
            except OSError:
                if sock is not None:
                    sock.close()
            else:
                self._socket = sock
                loop.add_reader(sock.fileno(), self._on_message)
                return
        self._timer = loop.call_later(_POLL_INTERVAL, self._fire)

    def close(self) -> None:
        if _sources.get(self._loop) is self:
            del _sources[self._loop]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._socket is not None:
            with contextlib.suppress(Exception):  # the loop may be closed already
                self._loop.remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None

    def _on_message(self) -> None:
        assert self._socket is not None
        with contextlib.suppress(OSError):
            while self._socket.recv(65536):
                pass
        if self._timer is None:
            self._timer = self._loop.call_later(_COALESCE, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._socket is None:  # polling: come back later
            self._timer = self._loop.call_later(_POLL_INTERVAL, self._fire)
        local_addresses(max_age=0)  # once for every watcher, which then reads the cache
        for on_change in list(self.watchers.values()):
            try:
                on_change()
            except Exception as error:  # one gatherer's failure must not starve the others
                self._loop.call_exception_handler(
                    {"message": "ice-engine: an interface watcher raised", "exception": error}
                )


_sources: dict[asyncio.AbstractEventLoop, _Source] = {}


def _source_of(loop: asyncio.AbstractEventLoop) -> _Source:
    source = _sources.get(loop)
    if source is None:
        for old in [old for old in _sources if old.is_closed()]:  # loops left without a close
            _sources[old].close()
        source = _sources[loop] = _Source(loop)
    return source
