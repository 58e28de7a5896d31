"""A gatherer's TURN streams (`StreamSet`), over socket pairs: what it tells, and when not."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from ice_engine.commands import OpenStream
from ice_engine.streams import StreamSet, TlsStreamProtocol

SERVER = ("127.0.0.1", 3478)


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
            lambda stream, reason: self.told.append(("closed", stream, reason)),
        )


@pytest.fixture
def base() -> Iterator[dict[int, socket.socket]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield {1: sock}


@pytest.fixture
async def servers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[socket.socket]]:
    """Connections go over socket pairs; the far ends are listed here."""
    loop = asyncio.get_running_loop()
    real = loop.create_connection
    ends: list[socket.socket] = []

    async def over_a_socketpair(factory, *args, **kwargs):  # type: ignore[no-untyped-def]
        assert kwargs["local_addr"] == ("127.0.0.1", 0)  # from the base's address
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        ends.append(theirs)
        return await real(factory, sock=ours)

    monkeypatch.setattr(loop, "create_connection", over_a_socketpair)
    yield ends
    for end in ends:
        end.close()


def command(stream: int, base_key: int = 1) -> OpenStream:
    return OpenStream(stream=stream, base_key=base_key, address=SERVER, tls=False, server_name="")


async def settle(heard: Heard, count: int) -> None:
    for _ in range(200):
        if len(heard.told) >= count:
            return
        await asyncio.sleep(0.005)


async def connected(heard: Heard, base: dict[int, socket.socket], *numbers: int) -> StreamSet:
    streams = heard.streams(base)
    for number in numbers:
        streams.open(command(number))
    await settle(heard, len(numbers))
    assert sorted(heard.told) == [("connected", n, None) for n in numbers]  # pairs: no port
    return streams


async def test_a_stream_carries_data_both_ways_until_the_server_closes(
    base: dict[int, socket.socket], servers: list[socket.socket]
) -> None:
    heard = Heard()
    streams = await connected(heard, base, 7)
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
    base: dict[int, socket.socket], servers: list[socket.socket]
) -> None:
    heard = Heard()
    streams = await connected(heard, base, 7)
    streams.close(7)
    await asyncio.sleep(0.01)
    assert servers[0].recv(100) == b""  # closed
    assert heard.told == [("connected", 7, None)]
    streams.send(7, b"late")  # no stream: nothing
    streams.close(7)  # twice


async def test_closing_a_stream_still_connecting_cancels_it(
    base: dict[int, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(*args: object, **kwargs: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", never)
    heard = Heard()
    streams = heard.streams(base)
    streams.open(command(7))
    await asyncio.sleep(0)
    streams.close(7)
    await asyncio.gather(*heard.tasks, return_exceptions=True)
    assert heard.tasks[0].cancelled()
    assert heard.told == []


async def test_a_connection_that_fails_is_reported_with_its_reason(
    base: dict[int, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(*args: object, **kwargs: object) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", refused)
    heard = Heard()
    heard.streams(base).open(command(7))
    await settle(heard, 1)
    assert heard.told == [("closed", 7, "connection refused")]


async def test_a_base_gone_opens_nothing(
    base: dict[int, socket.socket], servers: list[socket.socket]
) -> None:
    heard = Heard()
    heard.streams(base).open(command(7, base_key=2))
    await asyncio.gather(*heard.tasks)
    assert heard.told == [] and servers == []


async def test_abort_drops_every_stream_unreported(
    base: dict[int, socket.socket], servers: list[socket.socket]
) -> None:
    heard = Heard()
    streams = await connected(heard, base, 7, 8)
    streams.abort()
    await asyncio.sleep(0.01)
    assert [end.recv(100) for end in servers] == [b"", b""]
    assert sorted(heard.told) == [("connected", 7, None), ("connected", 8, None)]


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
