"""Telling continual gathering that the machine's addresses changed.

rtnetlink (Linux) says so within microseconds and costs nothing while nothing changes;
its messages are only a trigger to re-enumerate, so none is parsed. Elsewhere, a poll.
See docs/events.md for the measurements behind the choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Callable

__all__ = ["InterfaceWatcher"]

_RTMGRP_INTERFACES = 0x1 | 0x10 | 0x100  # links, IPv4 and IPv6 addresses
_COALESCE = 0.05  # a burst of messages (an address and its routes) makes one call
_POLL_INTERVAL = 2.0  # without netlink


class InterfaceWatcher:
    """Calls `on_change` (on the loop) after the set of local addresses may have changed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None]) -> None:
        self._loop = loop
        self._on_change = on_change
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._socket is not None:
            with contextlib.suppress(Exception):
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
        self._on_change()
