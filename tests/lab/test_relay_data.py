"""The allocation as a connectivity layer uses it: permissions, channels, data both ways."""

from __future__ import annotations

import json
import socket
import sys

import pytest

from ice_engine.lab import (
    PASSWORD,
    SERVER_ALT_IPV4,
    SERVER_IPV4,
    SERVER_NS,
    USERNAME,
    Lab,
)

pytestmark = pytest.mark.lab

CLIENT = """
import asyncio, json
from ice_engine import Gatherer, IceServer

async def main():
    received = asyncio.Queue()
    server = IceServer("turn:{server}{query}", "{user}", "{password}")
    only_a = lambda interface, address: address == "203.0.113.2"
    async with Gatherer([server], address_filter=only_a{options},
                        on_relayed=lambda a, peer, data: received.put_nowait([list(peer), data.decode()])) as g:
        [relay] = [e.candidate.address + ":" + str(e.candidate.port) async for e in g.gather()
                   if e.type == "icecandidate" and e.candidate and e.candidate.type == "relay"]
        [allocation] = g.allocations
        peer = ("{peer}", {port})
        g.relay_permit(allocation, [peer])
        await asyncio.sleep(0.2)
        g.relay_send(allocation, peer, b"ping over a send indication")
        first = await asyncio.wait_for(received.get(), 5)
        g.relay_bind_channel(allocation, peer)
        await asyncio.sleep(0.2)
        g.relay_send(allocation, peer, b"ping over a channel")
        second = await asyncio.wait_for(received.get(), 5)
        print(json.dumps({{"relay": relay, "replies": [first, second], "channels": len(allocation.channels)}}))

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("query", "options"),
    [("", ""), ("?transport=tcp", ""), ("", ", shared_port=40002")],
    ids=["udp", "tcp", "udp-from-a-shared-port"],
)
def test_data_through_the_relay_both_ways(lab: Lab, query: str, options: str) -> None:
    with lab.socket(socket.AF_INET, socket.SOCK_DGRAM, netns=SERVER_NS) as peer:
        peer.bind((SERVER_ALT_IPV4, 0))
        peer.settimeout(10)
        port = peer.getsockname()[1]
        script = CLIENT.format(
            server=SERVER_IPV4,
            query=query,
            options=options,
            user=USERNAME,
            password=PASSWORD,
            peer=SERVER_ALT_IPV4,
            port=port,
        )
        with lab.process([sys.executable, "-c", script]) as client:
            seen = []
            for _ in range(2):
                data, relayed_from = peer.recvfrom(2048)
                seen.append((data, relayed_from))
                peer.sendto(b"pong: " + data, relayed_from)
            out, err = client.communicate(timeout=20)
    assert client.returncode == 0, err
    result = json.loads(out)
    assert [d for d, _ in seen] == [b"ping over a send indication", b"ping over a channel"]
    assert {f"{a}:{p}" for _, (a, p) in seen} == {result["relay"]}  # from the relayed address
    assert result["replies"] == [
        [[SERVER_ALT_IPV4, port], "pong: ping over a send indication"],
        [[SERVER_ALT_IPV4, port], "pong: ping over a channel"],
    ]
    assert result["channels"] == 1
