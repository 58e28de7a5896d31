"""A gatherer's TURN streams (`StreamSet`), over loopback: what it tells, and when not."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import shutil
import socket
import ssl
import subprocess
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from ice_engine import icetcp
from ice_engine.commands import OpenStream
from ice_engine.streams import StreamSet, TlsStreamProtocol, describe, tls_sessions


class Server(list[socket.socket]):
    """A TCP listener on loopback; the connections it has accepted, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.address: tuple[str, int] = self.listener.getsockname()


class Heard:
    """The callables a StreamSet is given, and what they were told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, int, object]] = []
        self.tasks: list[asyncio.Task[None]] = []

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.append(task)
        return task

    def streams(self, sockets: dict[int, Any]) -> StreamSet:
        return StreamSet(
            sockets,
            None,
            self.spawn,
            lambda stream, port: self.told.append(("connected", stream, port)),
            lambda stream, data: self.told.append(("data", stream, data)),
            lambda stream, error: self.told.append(("closed", stream, error and describe(error))),
        )


@pytest.fixture
def base() -> Iterator[dict[int, socket.socket]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield {1: sock}


@pytest.fixture
async def servers() -> AsyncIterator[Server]:
    loop = asyncio.get_running_loop()
    server = Server()

    async def accept() -> None:
        while True:
            end, peer = await loop.sock_accept(server.listener)
            assert peer[0] == "127.0.0.1"  # from the base's address
            server.append(end)

    accepting = loop.create_task(accept())
    yield server
    accepting.cancel()
    await asyncio.gather(accepting, return_exceptions=True)
    for end in server:
        end.close()
    server.listener.close()


def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(stream: int, address: tuple[str, int], base_key: int = 1) -> OpenStream:
    return OpenStream(stream=stream, base_key=base_key, address=address, tls=False, server_name="")


async def settle(heard: Heard, count: int) -> None:
    for _ in range(200):
        if len(heard.told) >= count:
            return
        await asyncio.sleep(0.005)


async def connected(
    heard: Heard, base: dict[int, socket.socket], server: Server, *numbers: int
) -> StreamSet:
    streams = heard.streams(base)
    for number in numbers:
        streams.open(command(number, server.address))
    await settle(heard, len(numbers))
    for _ in range(200):  # and the server has them all
        if len(server) == len(numbers):
            break
        await asyncio.sleep(0.005)
    assert sorted(told[:2] for told in heard.told) == [("connected", n) for n in numbers]
    assert {told[2] for told in heard.told} == {end.getpeername()[1] for end in server}
    return streams


async def test_a_stream_carries_data_both_ways_until_the_server_closes(
    base: dict[int, socket.socket], servers: Server
) -> None:
    heard = Heard()
    streams = await connected(heard, base, servers, 7)
    streams.send(7, b"request")
    await asyncio.sleep(0.01)
    [server] = servers
    assert server.recv(100) == b"request"
    server.send(b"answer")
    await settle(heard, 2)
    server.close()
    await settle(heard, 3)
    assert heard.told[1:] == [("data", 7, b"answer"), ("closed", 7, None)]
    assert all(task.done() for task in heard.tasks)


async def test_a_stream_we_close_is_not_reported(
    base: dict[int, socket.socket], servers: Server
) -> None:
    heard = Heard()
    streams = await connected(heard, base, servers, 7)
    streams.close(7)
    await asyncio.sleep(0.01)
    assert servers[0].recv(100) == b""  # closed
    assert [told[:2] for told in heard.told] == [("connected", 7)]
    streams.send(7, b"late")  # no stream: nothing
    streams.close(7)  # twice


async def test_closing_a_stream_still_connecting_cancels_it(
    base: dict[int, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(*args: object, **kwargs: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(asyncio.get_running_loop(), "sock_connect", never)
    heard = Heard()
    streams = heard.streams(base)
    streams.open(command(7, ("127.0.0.1", unused_port())))
    await asyncio.sleep(0)
    streams.close(7)
    await asyncio.gather(*heard.tasks, return_exceptions=True)
    assert heard.tasks[0].cancelled()
    assert heard.told == []


async def test_a_connection_that_fails_is_reported_with_its_reason(
    base: dict[int, socket.socket],
) -> None:
    heard = Heard()
    heard.streams(base).open(command(7, ("127.0.0.1", unused_port())))
    await settle(heard, 1)
    assert heard.told == [("closed", 7, "connection refused")]


async def test_a_base_gone_opens_nothing(base: dict[int, socket.socket], servers: Server) -> None:
    heard = Heard()
    heard.streams(base).open(command(7, servers.address, base_key=2))
    await asyncio.gather(*heard.tasks)
    assert heard.told == [] and servers == []


async def test_abort_drops_every_stream_unreported(
    base: dict[int, socket.socket], servers: Server
) -> None:
    heard = Heard()
    streams = await connected(heard, base, servers, 7, 8)
    streams.abort()
    await asyncio.sleep(0.01)
    assert [end.recv(100) for end in servers] == [b"", b""]
    assert sorted(told[:2] for told in heard.told) == [("connected", 7), ("connected", 8)]


# -- TLS ------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for `turn.test`, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is not installed (apt-get install openssl)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    subject = ["-subj", "/CN=turn.test", "-addext", "subjectAltName=DNS:turn.test"]
    files = ["-keyout", str(key), "-out", str(cert), "-days", "1"]
    subprocess.run(
        [openssl, "req", "-x509", *new_key, *subject, *files],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_a_tls_error_after_the_handshake_is_reported_as_one(tmp_path: Path) -> None:
    """A record that fails to decrypt once the connection is up: the connection was
    aborted, and its end reported as the server's closing it."""
    cert, key = _self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with server_context.wrap_socket(connection, server_side=True) as tls:
            raw = socket.socket(fileno=os.dup(tls.fileno()))  # under TLS: a bad record
            with raw:
                raw.sendall(b"\x17\x03\x03\x00\x20" + bytes(32))  # application data, bad MAC
                done.wait(10)

    thread = threading.Thread(target=serve)
    thread.start()
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[Exception | None] = loop.create_future()
    try:
        await loop.create_connection(
            lambda: TlsStreamProtocol(
                1,
                lambda stream, data: None,
                lambda stream, error: ended.set_result(error),
                ssl.create_default_context(cafile=cert),
                listener.getsockname(),
                "turn.test",
            ),
            *listener.getsockname(),
        )
        error = await asyncio.wait_for(ended, 10)
    finally:
        done.set()
        thread.join()
        listener.close()
    assert isinstance(error, ssl.SSLError), error


@pytest.mark.parametrize("loop_end", ["stopped", "closed"])
def test_abort_on_a_loop_that_has_ended_still_closes_the_connections(loop_end: str) -> None:
    """close() on another loop than the gatherer's, which has stopped or closed: the
    transports cannot finish their abort there, and their sockets stayed open (the server
    holding the relays) until a garbage collection found them."""
    loop = asyncio.new_event_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        base = {1: sock}
        server = Server()
        heard = Heard()

        async def connect() -> StreamSet:
            streams = heard.streams(base)
            streams.open(command(7, server.address))
            end, _ = await loop.sock_accept(server.listener)
            server.append(end)
            await settle(heard, 1)
            return streams

        try:
            streams = loop.run_until_complete(connect())
            if loop_end == "closed":
                loop.close()
            assert [told[:2] for told in heard.told] == [("connected", 7)]
            assert streams.abort() == [7]
            [end] = server
            end.setblocking(True)
            end.settimeout(2)
            assert end.recv(100) == b""  # closed now, not at a collection
        finally:
            for end in server:
                end.close()
            server.listener.close()
            loop.close()


async def test_a_connection_whose_socket_cannot_be_made_is_reported(
    base: dict[int, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of file descriptors: the task died with the error ("Task exception was never
    retrieved") and the stream was never reported closed."""

    class NoSockets:
        SOCK_STREAM, IPPROTO_TCP = socket.SOCK_STREAM, socket.IPPROTO_TCP

        @staticmethod
        def socket(*args: object) -> socket.socket:
            raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(icetcp, "socket", NoSockets)  # where the stream socket is made
    heard = Heard()
    heard.streams(base).open(command(7, ("127.0.0.1", unused_port())))
    await settle(heard, 1)
    assert heard.told == [("closed", 7, "too many open files")]
    assert all(task.done() and task.exception() is None for task in heard.tasks)


async def test_a_context_given_for_tls_is_not_kept_alive_by_its_session(tmp_path: Path) -> None:
    """The sessions were kept in a table keyed weakly by context, but each session holds
    its context: every context ever given stayed alive for the process's life."""
    cert, key = _self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server_context.maximum_version = ssl.TLSVersion.TLSv1_2  # the session at the handshake
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with server_context.wrap_socket(connection, server_side=True) as tls:
            tls.recv(100)  # until the client closes

    async def connect(context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        protocol = TlsStreamProtocol(
            1, lambda stream, data: None, lambda stream, error: None, context, address, "turn.test"
        )
        transport, _ = await loop.create_connection(lambda: protocol, *address)
        await asyncio.wait_for(protocol.ready, 10)
        await asyncio.sleep(0.01)  # the session is kept at the next loop turn
        assert len(tls_sessions(context)) == 1
        transport.close()

    address = listener.getsockname()
    thread = threading.Thread(target=serve)
    thread.start()
    context = ssl.create_default_context(cafile=cert)
    try:
        await connect(context)
    finally:
        await asyncio.to_thread(thread.join, 10)
        listener.close()
    await asyncio.sleep(0.01)  # the transport's end runs
    alive = weakref.ref(context)
    del context
    gc.collect()
    assert alive() is None
