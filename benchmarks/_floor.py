"""The least a gathering can cost in CPython: yardsticks for `bench_scale.py`.

`FloorGatherer` (host+srflx) does only what cannot be skipped: bind a UDP socket per local
address, send a bare Binding request from each IPv4 one, wait on asyncio for the answers
(one epoll for all sockets, as ice-engine's hub), read XOR-MAPPED-ADDRESS, format the
candidate strings and close the sockets. `FloorTurnGatherer` (host+srflx+relay) binds the
same sockets and allocates once, from the first IPv4 one, as aioice does: a bare Allocate,
the 401's realm and nonce, a signed Allocate, and the srflx and relay read from its answer.
No validation, no events, no retransmission, no deadline beyond one timer, no DNS, no
configuration. No library could do less and still gather, so `aioice CPU / floor CPU`
bounds the ratio any implementation could reach here.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct

from ice_engine.sockethub import hub_for
from ice_engine.stun import keyed_mac

_REQUEST = struct.Struct("!HHI")  # type, length, cookie
_ATTRIBUTE = struct.Struct("!HH")  # type, length
_COOKIE = 0x2112A442
_ALLOCATE, _REFRESH, _ALLOCATE_ERROR = 0x0003, 0x0004, 0x0113
_USERNAME, _INTEGRITY, _LIFETIME, _REALM, _NONCE = 0x0006, 0x0008, 0x000D, 0x0014, 0x0015
_RELAYED, _TRANSPORT, _MAPPED = 0x0016, 0x0019, 0x0020
_UDP = b"\x11\x00\x00\x00"  # REQUESTED-TRANSPORT: UDP
_ERROR_CODE = 0x0009
_KEYS: dict[str, bytes] = {}  # "user:realm:password" -> long-term key, kept as a client would


def _host(family: int, address: str, lines: list[str]) -> socket.socket:
    """Bind a base and write its host candidate."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((address, 0))
    port = sock.getsockname()[1]
    lines.append(f"candidate:1 1 udp 2130706431 {address} {port} typ host")
    return sock


def _attribute(kind: int, value: bytes) -> bytes:
    return _ATTRIBUTE.pack(kind, len(value)) + value + b"\x00" * (-len(value) % 4)


def _attributes(data: bytes) -> dict[int, bytes]:
    """The TLVs of a message, no checks."""
    found, at = {}, 20
    while at + 4 <= len(data):
        kind, length = _ATTRIBUTE.unpack_from(data, at)
        found[kind] = data[at + 4 : at + 4 + length]
        at += 4 + length + (-length % 4)
    return found


def _xor_address(value: bytes, at: int = 0) -> tuple[str, int]:
    """An IPv4 XOR-*-ADDRESS whose value starts at `at`."""
    port = struct.unpack_from("!H", value, at + 2)[0] ^ (_COOKIE >> 16)
    address = struct.unpack_from("!I", value, at + 4)[0] ^ _COOKIE
    return socket.inet_ntoa(address.to_bytes(4, "big")), port


class FloorGatherer:
    def __init__(self, server: tuple[str, int], addresses: list[tuple[int, str]]) -> None:
        self.server = server
        self.addresses = addresses
        self.sockets: list[socket.socket] = []
        self.error: int | None = None  # never set: a Binding error is just no srflx

    async def gather(self) -> list[str]:
        loop = asyncio.get_running_loop()
        hub = hub_for(loop)
        lines: list[str] = []
        waiting: dict[bytes, socket.socket] = {}
        done = loop.create_future()
        for family, address in self.addresses:
            sock = _host(family, address, lines)
            self.sockets.append(sock)
            if family == socket.AF_INET:
                transaction_id = os.urandom(12)
                waiting[transaction_id] = sock
                hub.watch(
                    sock.fileno(),
                    lambda _fd, s=sock: self._answer(s, waiting, lines, done),
                )
                sock.sendto(_REQUEST.pack(0x0001, 0, _COOKIE) + transaction_id, self.server)
        timer = loop.call_later(2.0, lambda: done.done() or done.set_result(None))
        await done
        timer.cancel()
        return lines

    def _answer(
        self,
        sock: socket.socket,
        waiting: dict[bytes, socket.socket],
        lines: list[str],
        done: asyncio.Future[None],
    ) -> None:
        data = sock.recv(2048)
        hub_for(asyncio.get_running_loop()).unwatch(sock.fileno())
        if waiting.pop(data[8:20], None) is None:
            return
        # The first attribute is XOR-MAPPED-ADDRESS (IPv4) in coturn's answers.
        address, port = _xor_address(data, 24)
        lines.append(f"candidate:2 1 udp 1694498815 {address} {port} typ srflx")
        if not waiting and not done.done():
            done.set_result(None)

    async def close(self) -> None:
        hub = hub_for(asyncio.get_running_loop())
        for sock in self.sockets:
            hub.unwatch(sock.fileno())
            sock.close()


class FloorTurnGatherer:
    """Host candidates, and one allocation for the srflx and the relay (see above)."""

    def __init__(
        self,
        server: tuple[str, int],
        addresses: list[tuple[int, str]],
        username: str,
        password: str,
    ) -> None:
        self.server = server
        self.addresses = addresses
        self.username = username.encode()
        self.password = password
        self.sockets: list[socket.socket] = []
        self.turn_socket: socket.socket | None = None
        self.auth = b""  # USERNAME, REALM and NONCE, once the 401 gave them
        self.key = b""
        self.error: int | None = None  # the Allocate's error code, if it failed

    async def gather(self) -> list[str]:
        loop = asyncio.get_running_loop()
        lines: list[str] = []
        done = loop.create_future()
        for family, address in self.addresses:
            sock = _host(family, address, lines)
            self.sockets.append(sock)
            if family == socket.AF_INET and self.turn_socket is None:
                self.turn_socket = sock
                hub_for(loop).watch(sock.fileno(), lambda _fd: self._answer(lines, done))
                self._send(_ALLOCATE, _attribute(_TRANSPORT, _UDP))
        timer = loop.call_later(2.0, lambda: done.done() or done.set_result(None))
        await done
        timer.cancel()
        return lines

    def _send(self, method: int, attributes: bytes) -> None:
        assert self.turn_socket is not None
        header = _REQUEST.pack(method, len(attributes) + (24 if self.key else 0), _COOKIE)
        message = header + os.urandom(12) + attributes
        if self.key:
            message += _attribute(_INTEGRITY, keyed_mac(self.key, message, "sha1"))
        self.turn_socket.sendto(message, self.server)

    def _answer(self, lines: list[str], done: asyncio.Future[None]) -> None:
        assert self.turn_socket is not None
        data = self.turn_socket.recv(2048)
        found = _attributes(data)
        if _REQUEST.unpack_from(data)[0] == _ALLOCATE_ERROR:
            code = found.get(_ERROR_CODE, b"\x00\x00\x00\x00")
            if self.key or code[2:4] != b"\x04\x01":  # not the first 401: no relay
                self.error = code[2] * 100 + code[3]  # coturn: 437 on a reused 5-tuple
                hub_for(asyncio.get_running_loop()).unwatch(self.turn_socket.fileno())
                if not done.done():
                    done.set_result(None)
                return
            realm, nonce = found[_REALM], found[_NONCE]
            secret = f"{self.username.decode()}:{realm.decode()}:{self.password}"
            key = _KEYS.get(secret)
            if key is None:
                key = _KEYS[secret] = hashlib.md5(secret.encode()).digest()
            self.key = key
            self.auth = (
                _attribute(_USERNAME, self.username)
                + _attribute(_REALM, realm)
                + _attribute(_NONCE, nonce)
            )
            self._send(_ALLOCATE, self.auth + _attribute(_TRANSPORT, _UDP))
            return
        hub_for(asyncio.get_running_loop()).unwatch(self.turn_socket.fileno())
        mapped, relayed = _xor_address(found[_MAPPED]), _xor_address(found[_RELAYED])
        lines.append(f"candidate:2 1 udp 1694498815 {mapped[0]} {mapped[1]} typ srflx")
        lines.append(f"candidate:3 1 udp 16777215 {relayed[0]} {relayed[1]} typ relay")
        if not done.done():
            done.set_result(None)

    async def close(self) -> None:
        """Deallocate (a Refresh with lifetime 0, not waited for), so that the server's
        allocations do not pile up over runs; then close the sockets."""
        hub = hub_for(asyncio.get_running_loop())
        if self.auth and self.turn_socket is not None:
            self._send(_REFRESH, self.auth + _attribute(_LIFETIME, b"\x00\x00\x00\x00"))
        if self.turn_socket is not None:
            hub.unwatch(self.turn_socket.fileno())  # no-op once answered
        for sock in self.sockets:
            sock.close()
