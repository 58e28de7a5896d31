"""A driver of your own for the sans-I/O core: plain sockets, `select`, no asyncio.

    python docs/examples/sync_driver.py stun:stun.example.org turn:turn.example.org

Prints each event as a JSON line, then releases the TURN allocations. It carries out
the UDP commands (SendDatagram, Resolve, OpenSocket) and declines TCP/TLS (OpenStream);
see docs/recipes/own-driver.md for the whole contract. TURN credentials come from
ICE_USERNAME and ICE_CREDENTIAL.
"""

import json
import os
import select
import socket
import sys
import time
from collections.abc import Callable

from ice_engine import GatheringState, IceServer, icmperrors
from ice_engine.commands import OpenSocket, OpenStream, Resolve, SendDatagram
from ice_engine.config import servers_from_config
from ice_engine.credentials import new_credentials
from ice_engine.gathering import Base, Gathering, Transport
from ice_engine.interfaces import local_addresses
from ice_engine.turn import CLOSE_TIMEOUT

sockets: dict[int, socket.socket] = {}  # the core's handle (a key) -> the socket


def bind(address: str, family: int) -> int:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((address, 0))
    icmperrors.enable(sock)  # a closed port then fails its server at once (Linux)
    key = len(sockets) + 1
    sockets[key] = sock
    return key


def carry_out(core: Gathering) -> None:
    """Do what the core asks, and print what it tells; run after every call into it."""
    now = time.monotonic()
    while (command := core.next_command()) is not None:
        if isinstance(command, SendDatagram):
            send(core, command)
        elif isinstance(command, Resolve):  # blocking, for brevity; no SRV
            url = command.url
            try:
                found = socket.getaddrinfo(url.host, url.port, type=socket.SOCK_DGRAM)
            except OSError as error:
                core.resolve_failed(time.monotonic(), command.request, f"{url.host}: {error}")
            else:
                addresses = list(dict.fromkeys((str(info[4][0]), url.port) for info in found))
                core.resolved(time.monotonic(), command.request, addresses)
        elif isinstance(command, OpenSocket):  # a 437: another port on the same address
            beside = sockets[command.beside]
            key = bind(beside.getsockname()[0], beside.family)
            core.socket_opened(now, command.request, key, sockets[key].getsockname()[1])
        elif isinstance(command, OpenStream):
            core.stream_closed(now, command.stream, "TCP is not supported by this driver")
    while (event := core.next_event()) is not None:
        print(json.dumps(event.to_json()), flush=True)


def send(core: Gathering, command: SendDatagram) -> None:
    sock = sockets[command.base_key]
    for attempt in range(2):
        try:
            sock.sendto(command.data, command.address)
            return
        except BlockingIOError:
            return  # lost, as the network may lose it: the core retransmits
        except OSError as error:
            if attempt == 0:  # maybe an earlier ICMP error, about another destination
                read_icmp_errors(core, command.base_key, sock)
                continue
            cause = f"sending failed: {error.strerror}"  # no route, say: it fails now
            core.unreachable(time.monotonic(), command.base_key, command.address, cause)


def read_icmp_errors(core: Gathering, key: int, sock: socket.socket) -> None:
    """Linux reports a queued ICMP error at the next recvfrom or sendto, whatever its
    destination; each one names its own."""
    for _quoted, destination, cause in icmperrors.read(sock):
        core.unreachable(time.monotonic(), key, destination, cause)


def serve(core: Gathering, done: Callable[[], bool], until: float) -> None:
    """Read answers and run the timers until `done()`, or `until` at the latest."""
    while not done() and (now := time.monotonic()) < until:
        timer = core.get_timer()  # an absolute time on the same clock, or None
        timeout = max(0.0, min(until if timer is None else timer, until) - now)
        readable, _, _ = select.select(list(sockets.values()), [], [], timeout)
        for sock in readable:
            key = next(k for k, s in sockets.items() if s is sock)
            try:
                data, source = sock.recvfrom(2048)
            except OSError:  # an ICMP error was queued
                read_icmp_errors(core, key, sock)
            else:
                core.receive_datagram(time.monotonic(), key, data, source[:2])
        if timer is not None and timer <= time.monotonic():  # readable or not: a flood
            core.handle_timer(time.monotonic())  # must not hold the deadlines back
        carry_out(core)


def main(urls: list[str]) -> None:
    username, credential = os.environ.get("ICE_USERNAME"), os.environ.get("ICE_CREDENTIAL")
    core = Gathering(
        transports=[Transport("0", 0)],
        servers=servers_from_config([IceServer(url, username, credential) for url in urls]),
        credentials=new_credentials(),
    )
    bases = []
    for rank, local in enumerate(local_addresses()):  # in RFC 8421 order: rank 0 first
        key = bind(local.address, local.family)
        port = sockets[key].getsockname()[1]
        bases.append(Base(key, 0, 1, local.address, port, local.family, rank, local.network_id))
    core.start(time.monotonic(), bases)
    carry_out(core)
    # Complete within the servers' deadline (2 s); allocations would be refreshed after.
    serve(core, lambda: core.state is GatheringState.COMPLETE, time.monotonic() + 60)
    core.close(time.monotonic())  # queues a Refresh of lifetime 0 for each allocation
    carry_out(core)
    serve(core, lambda: not core.closing, time.monotonic() + CLOSE_TIMEOUT)
    for sock in sockets.values():
        sock.close()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: sync_driver.py URL... (stun:, turn: or turns: URLs)")
    try:
        main(sys.argv[1:])
    except ValueError as error:  # a malformed URL, TURN without credentials
        sys.exit(f"sync_driver.py: {error}")
