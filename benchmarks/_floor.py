"""The least a host+srflx gathering can cost in CPython: a yardstick for `bench_scale.py`.

It does only what cannot be skipped: bind a UDP socket per local address, send a bare
Binding request from each IPv4 one, wait on asyncio for the answers (one epoll for all
sockets, as ice-engine's hub), read XOR-MAPPED-ADDRESS, format the candidate strings and
close the sockets. No validation, no events, no retransmission, no deadline beyond one
timer, no DNS, no configuration. No library could do less and still gather, so
`aioice CPU / floor CPU` bounds the ratio any implementation could reach here.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from ice_engine.sockethub import hub_for

_REQUEST = struct.Struct("!HHI")  # type, length, cookie
_COOKIE = 0x2112A442


class FloorGatherer:
    def __init__(self, server: tuple[str, int], addresses: list[tuple[int, str]]) -> None:
        self.server = server
        self.addresses = addresses
        self.sockets: list[socket.socket] = []

    async def gather(self) -> list[str]:
        loop = asyncio.get_running_loop()
        hub = hub_for(loop)
        lines = []
        waiting: dict[bytes, socket.socket] = {}
        done = loop.create_future()
        for family, address in self.addresses:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind((address, 0))
            self.sockets.append(sock)
            port = sock.getsockname()[1]
            lines.append(f"candidate:1 1 udp 2130706431 {address} {port} typ host")
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
        port = struct.unpack_from("!H", data, 26)[0] ^ (_COOKIE >> 16)
        address = socket.inet_ntoa(
            (struct.unpack_from("!I", data, 28)[0] ^ _COOKIE).to_bytes(4, "big")
        )
        lines.append(f"candidate:2 1 udp 1694498815 {address} {port} typ srflx")
        if not waiting and not done.done():
            done.set_result(None)

    async def close(self) -> None:
        hub = hub_for(asyncio.get_running_loop())
        for sock in self.sockets:
            hub.unwatch(sock.fileno())
            sock.close()
