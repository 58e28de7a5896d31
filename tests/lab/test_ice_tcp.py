"""ICE-TCP host candidates (RFC 6544) on the lab's client."""

from __future__ import annotations

import json

import pytest

from ice_engine.lab import Lab

pytestmark = pytest.mark.lab

SCRIPT = """
import asyncio, json, socket
from ice_engine import Gatherer

async def main():
    loop = asyncio.get_running_loop()
    accepted = []

    def on_tcp_connection(local, peer, sock):
        accepted.append(sock)
        loop.create_task(echo(sock))

    async def echo(sock):  # one RFC 4571 frame back
        with sock:
            await loop.sock_sendall(sock, await loop.sock_recv(sock, 64))

    async with Gatherer(tcp_candidates=True, on_tcp_connection=on_tcp_connection) as gatherer:
        [e async for e in gatherer.gather()]
        found = [[c.protocol, c.tcpType, c.address, c.port, c.priority, c.candidate]
                 for c in gatherer.candidates]
        echoed = []
        for protocol, tcptype, address, port, _, _ in found:
            if tcptype == "passive":  # a peer connects, and our handler has the socket
                reader, writer = await asyncio.open_connection(address, port)
                writer.write(bytes([0, 5]) + b"hello")
                if await asyncio.wait_for(reader.read(64), 5) == bytes([0, 5]) + b"hello":
                    echoed.append(address)
                writer.close()
    print(json.dumps({"candidates": found, "accepted": echoed}))

asyncio.run(main())
"""


def test_active_and_passive_per_address_below_udp(lab: Lab) -> None:
    result = lab.run_python(SCRIPT, timeout_s=30)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    found = outcome["candidates"]
    udp = [c for c in found if c[0] == "udp"]
    tcp = [c for c in found if c[0] == "tcp"]
    assert len(udp) == 3 and len(tcp) == 6  # an active and a passive per address
    active = [c for c in tcp if c[1] == "active"]
    passive = [c for c in tcp if c[1] == "passive"]
    assert {c[3] for c in active} == {9}
    assert all(" tcptype active " in c[5] for c in active)
    assert max(c[4] for c in tcp) < min(c[4] for c in udp)
    for a, p in zip(active, passive, strict=True):
        assert a[2] == p[2] and a[4] > p[4]  # RFC 6544: active before passive
    assert sorted(outcome["accepted"]) == sorted(c[2] for c in passive)
    priorities = [c[4] for c in found]
    assert len(set(priorities)) == len(priorities)
