"""The socket hub on loopback: callbacks per socket, and no fd left once idle."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Iterator

import pytest

from ice_engine.sockethub import BURST, hub_for


@contextlib.contextmanager
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A sender and a receiver (2 s timeout) on loopback."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
    ):
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2)
        sender.bind(("127.0.0.1", 0))
        yield sender, receiver


async def test_readiness_reaches_each_socket_and_the_idle_hub_closes() -> None:
    loop = asyncio.get_running_loop()
    fds_before = len(os.listdir("/proc/self/fd"))
    hub = hub_for(loop)
    got: list[tuple[str, bytes]] = []
    socks = {name: socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for name in ("a", "b")}
    try:
        for name, sock in socks.items():
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            hub.watch(sock.fileno(), lambda _fd, n=name, s=sock: got.append((n, s.recv(100))))
        assert not hub.idle
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"to a", socks["a"].getsockname())
            sender.sendto(b"to b", socks["b"].getsockname())
            for _ in range(100):
                if len(got) == 2:
                    break
                await asyncio.sleep(0.01)
            assert sorted(got) == [("a", b"to a"), ("b", b"to b")]
            hub.unwatch(socks["a"].fileno())
            sender.sendto(b"unwatched", socks["a"].getsockname())
            await asyncio.sleep(0.05)
            assert len(got) == 2
        hub.unwatch(socks["b"].fileno())
        assert hub.idle
    finally:
        for sock in socks.values():
            sock.close()
    assert len(os.listdir("/proc/self/fd")) == fds_before


class _ProactorLike(asyncio.SelectorEventLoop):
    """A loop that cannot watch sockets, as Windows' default proactor loop cannot."""

    add_reader = asyncio.AbstractEventLoop.add_reader


def test_a_loop_that_cannot_watch_sockets_is_named_before_anything_is_bound() -> None:
    from ice_engine import Gatherer

    async def gather() -> None:
        gatherer = Gatherer()
        try:
            with pytest.raises(RuntimeError, match=r"_ProactorLike cannot.*SelectorEventLoop"):
                async for _event in gatherer.gather():
                    pass
        finally:
            await gatherer.close()  # and closing it is no trouble

    loop = _ProactorLike()
    try:
        before = len(os.listdir("/proc/self/fd"))
        loop.run_until_complete(gather())
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        loop.close()


async def test_datagrams_go_out_together_after_the_turn_in_order() -> None:
    """`send_soon`: nothing leaves before the loop's callbacks have run, then all in the
    order queued; a refusal is told with its context; a socket closed meanwhile sends
    nothing and tells nothing."""
    hub = hub_for(asyncio.get_running_loop())
    failures: list[tuple[object, int]] = []

    def failed(context: object, _sock: object, error: OSError) -> None:
        failures.append((context, error.errno or 0))

    with pair() as (sender, receiver):
        gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        to = receiver.getsockname()
        for n in range(3):
            hub.send_soon(sender, b"%d" % n, to, failed, n)
        hub.send_soon(gone, b"never", to, failed, "gone")
        hub.send_soon(sender, b"too big" * 10_000, to, failed, "big")
        gone.close()
        receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            receiver.recv(100)  # not yet: at the end of this turn
        await asyncio.sleep(0)
        receiver.setblocking(True)
        assert [receiver.recv(100) for _ in range(3)] == [b"0", b"1", b"2"]
        assert failures == [("big", errno.EMSGSIZE)]


async def test_a_full_burst_goes_out_at_once_and_its_refusals_are_told_later() -> None:
    """Thousands of gatherers starting in one turn held every first request back until
    the last had started: a burst of BURST goes now. A refusal in it is still told from
    the loop's callback, not inside the caller's send_soon."""
    hub = hub_for(asyncio.get_running_loop())
    failures: list[object] = []
    with pair() as (sender, receiver):
        to = receiver.getsockname()
        hub.send_soon(sender, b"too big" * 10_000, to, lambda c, *_: failures.append(c), "big")
        for n in range(1, BURST + 1):
            hub.send_soon(sender, b"%d" % n, to, lambda c, *_: failures.append(c), n)
        assert [receiver.recv(100) for _ in range(BURST - 1)] == [
            b"%d" % n for n in range(1, BURST)
        ]
        assert failures == []  # not inside send_soon
        await asyncio.sleep(0)
        assert receiver.recv(100) == b"%d" % BURST  # the rest, at the end of the turn
        assert failures == ["big"]


def test_a_closed_loops_hub_is_let_go_with_what_it_watched() -> None:
    """A gatherer dropped without close() on a loop that then closed was held by that
    loop's hub for the life of the process (`asyncio.run` again and again: its fds
    grew without end; found in a trial). The next loop to watch sockets lets it go."""
    import gc
    import os
    import warnings

    from ice_engine import sockethub

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def watched() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sockethub.hub_for(asyncio.get_running_loop()).watch(sock.fileno(), lambda _fd: sock)

    async def drop_one() -> None:
        watched()  # as a gatherer never closed: its socket in the hub's callback

    before = fds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the socket never closed
        asyncio.run(drop_one())
        assert fds() == before + 2  # the socket and the epoll, held
        asyncio.run(drop_one())  # the first loop's hub goes; this one's stays
        gc.collect()
        assert fds() == before + 2


async def test_a_socket_closed_while_a_forked_child_holds_it_does_not_spin_the_loop() -> None:
    """Closing took the fd out of the epoll set only when no other process held the
    socket: after a fork (multiprocessing) one datagram to the closed port left the
    epoll ready for ever, and the loop spun at 100 % CPU (found by a review)."""
    import time
    import warnings

    from ice_engine.sockettable import SocketTable

    loop = asyncio.get_running_loop()
    hub = hub_for(loop)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as keeper:  # keeps the epoll
        keeper.bind(("127.0.0.1", 0))
        hub.watch(keeper.fileno(), lambda _fd: None)
        table = SocketTable()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        address = sock.getsockname()
        key = table._add(sock, 0)
        table.watch(key, sock, lambda _fd: None, loop)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads about
            pid = os.fork()
        if pid == 0:  # a worker process: holds the socket, does nothing
            time.sleep(1)
            os._exit(0)
        try:
            table.close(key, loop)
            dispatches = 0
            real = hub._dispatch

            def counted() -> None:
                nonlocal dispatches
                dispatches += 1
                real()

            loop.remove_reader(hub._epoll.fileno())
            loop.add_reader(hub._epoll.fileno(), counted)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
                peer.sendto(b"late", address)
            await asyncio.sleep(0.3)
            assert dispatches < 5, dispatches
        finally:
            os.waitpid(pid, 0)
            hub.unwatch(keeper.fileno())


def test_loops_of_many_threads_get_their_hubs_at_once() -> None:
    """Forgetting closed loops' hubs scanned the shared table while other threads added
    theirs: KeyError and "dictionary changed size during iteration" (found by a review)."""
    import sys
    import threading

    errors: list[BaseException] = []

    def loops() -> None:
        for _ in range(300):
            loop = asyncio.new_event_loop()
            try:
                hub_for(loop)
            except BaseException as error:
                errors.append(error)
            finally:
                loop.close()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: the race shows
    try:
        threads = [threading.Thread(target=loops) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
