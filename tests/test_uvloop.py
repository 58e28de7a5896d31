"""The driver on uvloop, which the README names beside asyncio's own loop.

uvloop's transports are no subclasses of asyncio's: TURN over TCP asserted that they were,
and lost every such relay on uvloop. Each test gathers host, srflx and relay candidates
from loopback servers on a uvloop loop, and checks that closing leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import Coroutine
from typing import Any

import pytest

import ice_engine.driver as driver
from ice_engine import Gatherer, IceServer, stun
from ice_engine.events import Event, IceCandidateErrorEvent, IceCandidateEvent
from ice_engine.interfaces import LocalAddress
from ice_engine.stun import Attr, MessageClass, Method

from .test_turn import PASSWORD, USER, FakeTurn

uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (pip install uvloop)")

LOOPBACK = LocalAddress("lo", "127.0.0.1", socket.AF_INET, 1, 0)
MAPPED = ("198.51.100.1", 40001)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver, "local_addresses", lambda **_: [LOOPBACK])


def on_uvloop(work: Coroutine[Any, Any, None]) -> list[dict[str, Any]]:
    """Run `work` on a uvloop loop; what reached the loop's exception handler."""
    caught: list[dict[str, Any]] = []
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.get_loop().set_exception_handler(lambda _, context: caught.append(context))
        runner.run(work)
    return caught


def answer(turn: FakeTurn, data: bytes) -> bytes:
    """A Binding success (as the NAT maps us) or the TURN server's answer."""
    request = stun.parse(data)
    if request.method != Method.BINDING:
        return turn.handle(data)
    mapped = stun.xor_address_value(*MAPPED, request.transaction_id)
    attrs = [(Attr.XOR_MAPPED_ADDRESS, mapped)]
    return stun.encode(Method.BINDING, MessageClass.SUCCESS, request.transaction_id, attrs)


class UdpServer(asyncio.DatagramProtocol):
    def __init__(self, turn: FakeTurn) -> None:
        self.turn = turn
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(answer(self.turn, data), addr)


async def serve_tcp(turn: FakeTurn) -> asyncio.Server:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = stun.StreamFramer()
        while data := await reader.read(4096):
            for frame in framer.feed(data):
                writer.write(answer(turn, frame))
        writer.close()

    return await asyncio.start_server(connection, "127.0.0.1", 0)


def open_fds() -> int:
    gc.collect()  # what earlier tests left to the collector closes now, not mid-test
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_gathering_on_uvloop(transport: str) -> None:
    turn = FakeTurn()
    events: list[Event] = []
    fds: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(
            lambda: UdpServer(turn), local_addr=("127.0.0.1", 0)
        )
        tcp = await serve_tcp(turn)
        udp_port = udp.get_extra_info("sockname")[1]
        tcp_port = tcp.sockets[0].getsockname()[1]
        turn_url = f"turn:127.0.0.1:{udp_port}"
        if transport == "tcp":
            turn_url = f"turn:127.0.0.1:{tcp_port}?transport=tcp"
        servers = [IceServer(f"stun:127.0.0.1:{udp_port}"), IceServer(turn_url, USER, PASSWORD)]
        fds.append(open_fds())
        async with Gatherer(servers) as gatherer:
            events.extend([e async for e in gatherer.gather()])
        await asyncio.sleep(0.05)  # the deallocation's answer, and the connection's end
        fds.append(open_fds())
        udp.close()
        tcp.close()
        await tcp.wait_closed()

    caught = on_uvloop(main())
    assert caught == []
    assert not [e for e in events if isinstance(e, IceCandidateErrorEvent)]
    lines = [e.candidate for e in events if isinstance(e, IceCandidateEvent) and e.candidate]
    assert {c.type for c in lines if c.type} == {"host", "srflx", "relay"}
    assert isinstance(events[-1], IceCandidateEvent) and events[-1].candidate is None
    assert fds[0] == fds[1]  # every socket and connection closed
    methods = [m.method for m in turn.requests if m.get(Attr.USERNAME) is not None]
    assert methods[-1] == Method.REFRESH  # deallocated on close
