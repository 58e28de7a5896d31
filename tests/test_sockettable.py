"""A gatherer's sockets by key, on loopback: what opening and closing keep in step."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import sys

import pytest

from ice_engine import icmperrors
from ice_engine.interfaces import LocalAddress
from ice_engine.sockethub import hub_for
from ice_engine.sockettable import SocketTable

LOOPBACK = LocalAddress("lo", "127.0.0.1", socket.AF_INET, 1, 0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def open_udp(table: SocketTable, generation: int = 0) -> int:
    key = table.open(LOOPBACK, socket.SOCK_DGRAM, generation)
    assert key is not None
    return key


def assert_empty(table: SocketTable) -> None:
    maps = (table.sockets, table.owners, table.reading, table.base_addresses, table.base_keys)
    assert not any(maps) and not table.shared and not table.companions and not table.beside


def test_open_and_close_on_loopback() -> None:
    table = SocketTable()
    udp = table.open(LOOPBACK, socket.SOCK_DGRAM, generation=3)
    tcp = table.open(LOOPBACK, socket.SOCK_STREAM, generation=4)
    assert udp is not None and tcp is not None and udp != tcp
    assert table.owners == {udp: 3, tcp: 4}
    sock = table.sockets[udp]
    address, port = sock.getsockname()
    assert address == "127.0.0.1" and port > 0
    table.add_base(udp, (address, port))
    assert table.base_keys == {(address, port): udp}
    table.close(udp, None)
    table.close(tcp, None)
    assert sock.fileno() == -1
    assert_empty(table)


def test_a_port_range_used_up_is_an_error_naming_the_address_and_ports() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        table = SocketTable(port_range=(port, port))
        where = rf"cannot bind to 127\.0\.0\.1, port_range {port}-{port}"
        with pytest.raises(OSError, match=where) as caught:
            table.open(LOOPBACK, socket.SOCK_DGRAM, 0)
    assert caught.value.errno == errno.EADDRINUSE
    assert_empty(table)


def test_an_address_gone_gives_none() -> None:
    gone = LocalAddress("gone", "203.0.113.77", socket.AF_INET, 2, 0)  # on no interface here
    table = SocketTable()
    assert table.open(gone, socket.SOCK_DGRAM, 0) is None
    assert_empty(table)


def test_closing_an_unknown_key_is_a_no_op() -> None:
    table = SocketTable()
    key = open_udp(table)
    table.close(key + 1, None)
    table.close(key, None)
    table.close(key, None)  # twice
    assert_empty(table)


def test_open_beside_binds_the_same_address_for_the_same_generation() -> None:
    table = SocketTable()
    key = open_udp(table, generation=2)
    beside = table.open_beside(key)
    assert beside is not None and beside != key
    assert table.sockets[beside].getsockname()[0] == "127.0.0.1"
    assert table.owners[beside] == 2
    assert table.open_beside(12345) is None  # a socket gone meanwhile
    # A third socket, after a second 437, still stands for the base: both go with it.
    again = table.open_beside(beside)
    assert table.opened_beside({key}) == [beside, again]
    assert table.opened_beside({beside}) == []
    for each in list(table.sockets):
        table.close(each, None)
    assert_empty(table)


async def test_a_companion_closes_with_its_shared_base() -> None:
    loop = asyncio.get_running_loop()
    port = free_port()
    table = SocketTable()
    first = table.join_shared(loop, LOOPBACK, port, generation=0, companion=True)
    second = table.join_shared(loop, LOOPBACK, port, generation=1)
    assert first is not None and second is not None
    assert table.shared[first] is table.shared[second]  # the process's one socket
    companion = table.companions[first]
    assert table.owners[companion] == 0 and second not in table.companions
    own = table.sockets[companion]
    table.add_base(first, ("127.0.0.1", port))
    table.add_base(second, ("127.0.0.1", port))
    table.close(first, loop)
    assert own.fileno() == -1
    assert set(table.sockets) == {second}
    assert table.base_keys == {("127.0.0.1", port): second}  # the newer one stays named
    table.close(second, loop)
    assert_empty(table)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", port))  # its last user gone, the shared socket closed


async def test_watch_reads_until_closed() -> None:
    loop = asyncio.get_running_loop()
    table = SocketTable()
    key = open_udp(table)
    sock = table.sockets[key]
    readable = asyncio.Event()

    def on_readable(fd: int) -> None:
        assert table.reading[fd] == key
        readable.set()

    table.watch(key, sock, on_readable, loop)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.sendto(b"hello", sock.getsockname())
        await asyncio.wait_for(readable.wait(), 2)
    assert sock.recvfrom(100)[0] == b"hello"
    table.close(key, loop)
    assert_empty(table)
    assert hub_for(loop).idle


@pytest.mark.skipif(sys.platform != "linux", reason="IP_RECVERR is Linux's")
async def test_icmp_errors_name_the_unreachable_destination() -> None:
    loop = asyncio.get_running_loop()
    table = SocketTable()
    key = open_udp(table)
    sock = table.sockets[key]
    table.watch(key, sock, lambda _fd: None, loop)  # sets IP_RECVERR
    closed = ("127.0.0.1", free_port())
    sock.sendto(b"anyone?", closed)
    errors: list[tuple[tuple[str, int], str]] = []
    for _ in range(100):
        errors = [(destination, cause) for _quoted, destination, cause in icmperrors.read(sock)]
        if errors:
            break
        await asyncio.sleep(0.01)
    assert errors == [(closed, "ICMP port unreachable")]
    table.close(key, loop)


@pytest.mark.parametrize(
    ("origin", "kind", "code", "error", "cause"),
    [
        (2, 3, 3, errno.ECONNREFUSED, "ICMP port unreachable"),
        (2, 3, 1, errno.EHOSTUNREACH, "ICMP host unreachable"),
        (2, 3, 13, errno.EHOSTUNREACH, "ICMP communication administratively prohibited"),
        (2, 11, 0, errno.EHOSTUNREACH, "ICMP time exceeded"),
        (2, 3, 4, errno.EMSGSIZE, None),  # fragmentation needed: path MTU discovery
        (3, 1, 2, errno.EHOSTUNREACH, "ICMP beyond scope of source address"),
        (3, 1, 4, errno.ECONNREFUSED, "ICMP port unreachable"),
        (3, 2, 0, errno.EMSGSIZE, None),  # packet too big
        (3, 1, 9, errno.EHOSTUNREACH, "ICMP destination unreachable"),
        (2, 42, 7, errno.EPROTO, "ICMP type 42 code 7"),
        (1, 0, 0, errno.ENOBUFS, None),  # a local error, not ICMP
    ],
)
def test_each_icmp_error_is_named_for_what_it_said(
    origin: int, kind: int, code: int, error: int, cause: str | None
) -> None:
    """Every error was reported as "ICMP port unreachable", whatever had come: an IPv6
    link-local base that asked a global server got ICMPv6 "beyond scope of source
    address". Those that a smaller datagram would pass do not fail a server."""
    extended = struct.pack("=IBBBBII", error, origin, kind, code, 0, 0, 0)
    assert icmperrors._cause([(0, 11, extended + bytes(16))]) == cause
