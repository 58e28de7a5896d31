"""ICMP errors on unconnected UDP sockets (Linux's IP_RECVERR).

Without IP_RECVERR, Linux drops an unconnected UDP socket's ICMP errors, and a server
whose port is closed costs its whole deadline. With it, each error is queued on the
socket with the destination it concerns and the start of the datagram that caused it,
and the socket reads as in error (a `recvfrom` or the next `sendto`, to any destination,
raises it once) until the queue is drained. A STUN request's transaction ID is in those
first bytes, so a socket shared by many sessions can tell which one an error is for.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["TRANSIENT_SEND_ERRORS", "enable", "read", "send_again"]

#: sendto() errors that lose one datagram, as a network may: retransmission covers them.
#: Any other (no route, a destination refused or invalid) fails what was sent at once.
TRANSIENT_SEND_ERRORS = frozenset(
    {errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ENOBUFS, errno.ENOMEM}
)

_RECVERR: dict[int, tuple[int, int]] = {
    socket.AF_INET: (socket.IPPROTO_IP, 11),
    socket.AF_INET6: (socket.IPPROTO_IPV6, 25),
}
_EXTENDED_ERROR = struct.Struct("=IBBB")  # struct sock_extended_err: errno, origin, type, code
_FROM_ICMP, _FROM_ICMP6 = 2, 3  # SO_EE_ORIGIN_*
#: What each (origin, type, code) means, as RFC 792 and RFC 4443 name it.
_KINDS: dict[tuple[int, int, int], str] = {
    (_FROM_ICMP, 3, 0): "network unreachable",
    (_FROM_ICMP, 3, 1): "host unreachable",
    (_FROM_ICMP, 3, 2): "protocol unreachable",
    (_FROM_ICMP, 3, 3): "port unreachable",
    (_FROM_ICMP, 3, 9): "network administratively prohibited",
    (_FROM_ICMP, 3, 10): "host administratively prohibited",
    (_FROM_ICMP, 3, 13): "communication administratively prohibited",
    (_FROM_ICMP6, 1, 0): "no route to destination",
    (_FROM_ICMP6, 1, 1): "communication administratively prohibited",
    (_FROM_ICMP6, 1, 2): "beyond scope of source address",
    (_FROM_ICMP6, 1, 3): "address unreachable",
    (_FROM_ICMP6, 1, 4): "port unreachable",
    (_FROM_ICMP6, 1, 5): "source address failed ingress/egress policy",
    (_FROM_ICMP6, 1, 6): "reject route to destination",
}
_GENERAL = {
    (_FROM_ICMP, 3): "destination unreachable",
    (_FROM_ICMP, 11): "time exceeded",
    (_FROM_ICMP, 12): "parameter problem",
    (_FROM_ICMP6, 1): "destination unreachable",
    (_FROM_ICMP6, 3): "time exceeded",
    (_FROM_ICMP6, 4): "parameter problem",
}


def enable(sock: Any) -> None:
    """Queue the socket's ICMP errors (Linux; elsewhere nothing)."""
    if sys.platform == "linux":
        level, option = _RECVERR[sock.family]
        try:  # noqa: SIM105 - suppress() costs 0.4 µs, once per socket
            sock.setsockopt(level, option, 1)
        except OSError:
            pass


def read(sock: Any, size: int = 1) -> list[tuple[bytes, tuple[str, int], str]]:
    """Drain the queued errors: for each that says the destination cannot be reached,
    the first `size` bytes of the datagram that caused it, the destination it was sent
    to, and what the ICMP message said ("ICMP port unreachable"). The others are
    dropped: "fragmentation needed" and "packet too big" (path MTU discovery: a
    smaller datagram would pass) and errors that did not come by ICMP."""
    errors: list[tuple[bytes, tuple[str, int], str]] = []
    for _ in range(64):
        try:
            data, ancillary, _flags, destination = sock.recvmsg(size, 512, socket.MSG_ERRQUEUE)
        except OSError:
            break
        cause = _cause(ancillary)
        if destination and cause is not None:
            errors.append((data, destination[:2], cause))
    return errors


def send_again(
    sock: Any, data: Any, address: tuple[str, int], read_errors: Callable[[], object]
) -> OSError | None:
    """After a refused sendto, one more: None if the datagram goes out, else the error
    that stands. Linux reports at a sendto an ICMP error that came since the socket was
    last read, about any destination, and leaves it queued (epoll would then call back
    for ever): `read_errors` reads them first, failing what caused them."""
    if sys.platform == "linux":
        read_errors()
    try:
        sock.sendto(data, address)
    except OSError as error:
        return error
    return None


def _cause(ancillary: list[tuple[int, int, bytes]]) -> str | None:
    for _level, _type, data in ancillary:
        if len(data) < _EXTENDED_ERROR.size:
            continue
        number, origin, kind, code = _EXTENDED_ERROR.unpack_from(data)
        if origin not in (_FROM_ICMP, _FROM_ICMP6) or number == errno.EMSGSIZE:
            return None
        text = _KINDS.get((origin, kind, code)) or _GENERAL.get((origin, kind))
        return f"ICMP {text or f'type {kind} code {code}'}"
    return None
