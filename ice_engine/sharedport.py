"""One UDP port for many gatherers (pion's UDPMux), for servers with thousands of sessions.

Every gatherer in shared-port mode gathers through the same socket per local address, so
a server needs a handful of file descriptors instead of one per session and address, and
its firewall one open port. Answers are routed to the gatherer whose request they answer,
by STUN transaction ID (96 random bits, so they cannot collide); anything else is dropped.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

__all__ = ["SharedSocket", "shared_socket"]

Deliver = Callable[[bytes, tuple[str, int]], None]


class SharedSocket:
    """A UDP socket bound to one address and port, demultiplexed by transaction ID."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, key: object) -> None:
        self.sock = sock
        self._loop = loop
        self._key = key
        self._routes: dict[bytes, Deliver] = {}
        self._users = 0
        loop.add_reader(sock.fileno(), self._on_readable)

    def acquire(self) -> None:
        self._users += 1

    def forget(self, transaction_ids: set[bytes]) -> None:
        """Answers to these requests are no longer wanted (their gatherer is closing)."""
        for transaction_id in transaction_ids:
            self._routes.pop(transaction_id, None)

    def release(self) -> None:
        """One base is done with the socket; the last one closes it."""
        self._users -= 1
        if self._users <= 0:
            _sockets.pop(self._key, None)
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def expect(self, transaction_id: bytes, deliver: Deliver) -> None:
        """Route the answer to this request to `deliver`."""
        self._routes[transaction_id] = deliver

    def _on_readable(self) -> None:
        for _ in range(256):  # drain a burst, then let others run
            try:
                data, source = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error: no gatherer can be told which request it was
            deliver = self._routes.pop(data[8:20], None) if len(data) >= 20 else None
            if deliver is not None:
                deliver(data, source[:2])


_sockets: dict[object, SharedSocket] = {}


def shared_socket(
    loop: asyncio.AbstractEventLoop, family: int, address: str, port: int, scope_id: int = 0
) -> SharedSocket:
    """The process's shared socket for (address, port) on this loop, bound on first use."""
    key = (id(loop), address, port)
    shared = _sockets.get(key)
    if shared is None:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(
                (address, port, 0, scope_id) if family == socket.AF_INET6 else (address, port)
            )
        except OSError:
            sock.close()
            raise
        shared = _sockets[key] = SharedSocket(sock, loop, key)
    shared.acquire()
    return shared
