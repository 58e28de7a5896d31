"""ICE-TCP (RFC 6544): gather TCP candidates, take the connections peers make to the
passive ones, and connect from the active ones. The peer here is this script itself:
from each active candidate it connects to the passive one on the same address and sends
one RFC 4571 frame (a 2-byte length, then the data), which the handler echoes.

python docs/examples/ice_tcp_echo.py
"""

import asyncio
import socket
import struct

from ice_engine import Gatherer

echoes: set[asyncio.Task[None]] = set()


def on_tcp_connection(local: tuple[str, int], peer: tuple[str, int], sock: socket.socket) -> None:
    """Called by the gatherer for each connection accepted; the socket is ours now."""
    print(f"connection to {local[0]} {local[1]} from {peer[0]} {peer[1]}")
    task = asyncio.create_task(echo(sock))
    echoes.add(task)  # a task must be held on to until it is done
    task.add_done_callback(echoes.discard)


async def echo(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        header = await reader.readexactly(2)
        frame = await reader.readexactly(struct.unpack("!H", header)[0])
        writer.write(header + frame)
        await writer.drain()
    finally:
        writer.close()


async def main() -> None:
    async with Gatherer(tcp_candidates=True, on_tcp_connection=on_tcp_connection) as gatherer:
        async for _event in gatherer.gather():
            pass
        active = {c.address: c for c in gatherer.candidates if c.tcpType == "active"}
        for candidate in gatherer.candidates:
            if candidate.tcpType != "passive" or candidate.port is None:
                continue
            peer = (str(candidate.address), candidate.port)
            sock = await gatherer.connect(active[candidate.address], peer)
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(struct.pack("!H", 5) + b"hello")
            answer = await asyncio.wait_for(reader.readexactly(7), 5)
            print(f"{candidate.address} {candidate.port} echoed {answer[2:].decode()}")
            writer.close()


if __name__ == "__main__":
    asyncio.run(main())
