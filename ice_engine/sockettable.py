"""The sockets one gatherer owns, by key.

The core names a socket by a key; the driver needs the socket behind a key, the key
behind a readable fd (the socket hub calls back with fds) and behind a base's address
(`Gatherer.send`), and the generation each socket was bound for (a restart releases the
older ones). Opening and closing here keeps those maps in step. The table knows nothing
of the core: it deals in keys, sockets, addresses and generations.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import secrets
import socket
from collections.abc import Callable, Collection, Sequence

from . import icmperrors
from .interfaces import LocalAddress
from .sharedport import SharedSocket, shared_socket
from .sockethub import hub_for

__all__ = ["SocketTable"]

#: Linux creates a socket non-blocking in the same syscall; elsewhere setblocking() follows.
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)
#: bind() errors of an address gone since it was enumerated (removed, its interface down,
#: or an IPv6 address still tentative): that address is skipped; any other error is raised.
_GONE = frozenset({errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENXIO})


def _bind_error(address: LocalAddress, ports: str, error: OSError) -> OSError:
    """The error of a base that cannot be bound, naming its address and ports."""
    return OSError(error.errno, f"cannot bind to {address.address}, {ports}: {error.strerror}")


class SocketTable:
    """One gatherer's sockets by key, with the maps the driver reads them through.

    Its dicts are read in place by the driver's hot paths (one attribute load each) and
    changed only through its methods."""

    __slots__ = (
        "_next_key",
        "base_addresses",
        "base_keys",
        "beside",
        "companions",
        "owners",
        "port_range",
        "reading",
        "shared",
        "sockets",
    )

    def __init__(self, port_range: tuple[int, int] | None = None) -> None:
        self.port_range = port_range
        self.sockets: dict[int, _socket.socket] = {}  # key -> socket
        self.owners: dict[int, int] = {}  # key -> the generation it was bound for
        self.reading: dict[int, int] = {}  # fd -> key of the sockets watched for answers
        self.base_addresses: dict[int, tuple[str, int]] = {}  # socket key -> its base
        self.base_keys: dict[tuple[str, int], int] = {}  # the reverse, newest socket
        self.shared: dict[int, SharedSocket] = {}  # base key -> the shared socket it uses
        self.companions: dict[int, int] = {}  # a shared base's key -> its TURN socket's key
        self.beside: dict[int, int] = {}  # a 437's socket's key -> its base's (open_beside)
        self._next_key = 0

    def open(self, address: LocalAddress, kind: int, generation: int) -> int | None:
        """A socket of our own on the address; its key, or None if the address has gone
        since it was enumerated. Any other failure (no free port in `port_range`, for
        one) is an OSError naming the address and the ports: a base left out silently
        would leave a transport without candidates and nobody told why."""
        # The C type itself: `socket.socket` adds a Python __init__ and close(), turns
        # `family` into an enum at every read and is tracked by the garbage collector;
        # ~1.3 µs a socket for nothing we use.
        sock = _socket.socket(address.family, kind | _NONBLOCK)
        try:
            if not _NONBLOCK:
                sock.setblocking(False)
            if kind == socket.SOCK_STREAM:
                # Connections accepted and closed leave TIME_WAIT sockets on the port,
                # which only a listener bound with SO_REUSEADDR may bind again within
                # 60 s (a port_range's next generation). Two listeners still cannot.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._bind_port(sock, address)
            if kind == socket.SOCK_STREAM:  # an RFC 6544 passive candidate: it listens
                sock.listen(128)  # a burst of peers: 16 made a third wait for a SYN resend
        except OSError as error:
            sock.close()
            if error.errno in _GONE:
                return None
            if self.port_range is None:
                ports = "any port"
            else:
                ports = "port_range {}-{}".format(*self.port_range)
            raise _bind_error(address, ports, error) from error
        return self._add(sock, generation)

    def open_beside(self, key: int) -> int | None:
        """Another UDP socket on the address of socket `key`, for the same generation;
        None if that socket or its address has gone (other failures: OSError, as in
        `open`). `beside` remembers the base it stands for (`opened_beside`)."""
        beside = self.sockets.get(key)
        if beside is None:
            return None
        name = beside.getsockname()
        scope_id = name[3] if beside.family == socket.AF_INET6 else 0
        address = LocalAddress("", name[0], beside.family, 0, scope_id)
        new = self.open(address, socket.SOCK_DGRAM, self.owners[key])
        if new is not None:
            self.beside[new] = self._base_of(key)
        return new

    def _base_of(self, key: int) -> int:
        """The base a socket stands for: its own key, or that of the base it was opened
        beside (`open_beside`), or whose companion it is."""
        base = self.beside.get(key)
        if base is not None:
            return base
        return next((base for base, own in self.companions.items() if own == key), key)

    def opened_beside(self, bases: Collection[int]) -> list[int]:
        """The sockets `open_beside` opened for these bases: on their address, they go
        when it goes."""
        return [key for key, base in self.beside.items() if base in bases]

    def join_shared(
        self,
        loop: asyncio.AbstractEventLoop,
        address: LocalAddress,
        port: int,
        generation: int,
        companion: bool = False,
    ) -> int | None:
        """The process's shared socket for the address and port (`sharedport.py`); its
        key here, or None if the address has gone (other failures: OSError, as in
        `open`). With `companion`, a socket of our own beside it, closed with it
        (`companions`): both or neither."""
        try:
            shared = shared_socket(loop, address.family, address.address, port, address.scope_id)
        except OSError as error:
            if error.errno in _GONE:
                return None
            raise _bind_error(address, f"shared_port {port}", error) from error
        key = self._add(shared.sock, generation)
        self.shared[key] = shared
        if companion:
            try:
                own = self.open(address, socket.SOCK_DGRAM, generation)
            except OSError:
                self.close(key, loop)
                raise
            if own is None:
                self.close(key, loop)
                return None
            self.companions[key] = own
        return key

    def add_base(self, key: int, address: tuple[str, int]) -> None:
        """Name the socket as the base at `address` (the newest socket of an address is
        the one `base_keys` gives)."""
        self.base_addresses[key] = address
        self.base_keys[address] = key

    def close(self, key: int, loop: asyncio.AbstractEventLoop | None) -> None:
        """Close the socket and its companion, if it has one; a key not here (closed
        already) is no error. `loop`: the one its sockets are watched on, if any."""
        companion = self.companions.pop(key, None)
        if companion is not None:
            self.close(companion, loop)
        sock = self.sockets.pop(key, None)
        if sock is None:
            return  # a companion, closed with its base
        del self.owners[key]
        self.beside.pop(key, None)
        base = self.base_addresses.pop(key, None)
        if base is not None and self.base_keys.get(base) == key:
            del self.base_keys[base]
        shared = self.shared.pop(key, None)
        if shared is not None:
            shared.release()
            return
        if self.reading.pop(sock.fileno(), None) is not None:
            assert loop is not None, "a socket is watched on a loop"
            hub_for(loop).unwatch(sock.fileno())
        sock.close()

    def watch(
        self,
        key: int,
        sock: _socket.socket,
        callback: Callable[[int], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Read what arrives (`callback(fd)` from the loop's socket hub), or for a listener
        the connections; a UDP socket's ICMP errors too (IP_RECVERR), set here and not at
        bind because most host sockets never send."""
        if sock.type == socket.SOCK_DGRAM:
            icmperrors.enable(sock)
        fd = sock.fileno()
        self.reading[fd] = key
        hub_for(loop).watch(fd, callback)

    def unwatch(self, key: int, loop: asyncio.AbstractEventLoop) -> None:
        """Stop reading the socket (`watch`), which stays open."""
        sock = self.sockets.get(key)
        if sock is not None and self.reading.pop(sock.fileno(), None) is not None:
            hub_for(loop).unwatch(sock.fileno())

    def _add(self, sock: _socket.socket, generation: int) -> int:
        self._next_key += 1
        self.sockets[self._next_key] = sock
        self.owners[self._next_key] = generation
        return self._next_key

    def _bind_port(self, sock: _socket.socket, address: LocalAddress) -> None:
        """Any port, or the first free one of `port_range` from a random start."""
        ports: Sequence[int] = [0]
        if self.port_range is not None:
            low, high = self.port_range
            start = secrets.randbelow(high - low + 1)
            ports = [*range(low + start, high + 1), *range(low, low + start)]
        for port in ports:
            try:
                if address.family == socket.AF_INET6:
                    sock.bind((address.address, port, 0, address.scope_id))
                else:
                    sock.bind((address.address, port))
                return
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, "no free port")
