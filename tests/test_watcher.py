"""One interface watch per event loop, however many continual gatherers use it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

import pytest

from ice_engine import interfaces, watcher
from ice_engine.watcher import InterfaceWatcher


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(sys.platform != "linux", reason="counts fds in /proc, netlink is Linux's")
async def test_watchers_share_one_socket_and_one_enumeration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    enumerations = []
    real = interfaces.local_addresses

    def counted(**kwargs: object) -> list[interfaces.LocalAddress]:
        enumerations.append(kwargs.get("max_age"))
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(watcher, "local_addresses", counted)
    before = _fds()
    calls: list[int] = []

    def failing() -> None:
        raise RuntimeError("one gatherer's bug")

    errors: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context["exception"]))

    def recorder(index: int) -> Callable[[], None]:
        return lambda: calls.append(index)

    watchers = [InterfaceWatcher(loop, recorder(i)) for i in range(100)]
    broken = InterfaceWatcher(loop, failing)
    assert _fds() == before + 1  # one netlink socket for all 101
    source = watcher._sources[loop]
    source._fire()  # what a burst of netlink messages ends in
    assert sorted(calls) == list(range(100))  # every watcher, the broken one's failure aside
    assert enumerations == [0]  # the addresses walked once, for all of them
    assert [str(e) for e in errors] == ["one gatherer's bug"]
    broken.close()
    for w in watchers[:-1]:
        w.close()
    assert _fds() == before + 1  # the last watcher keeps it open
    watchers[-1].close()
    watchers[-1].close()  # idempotent
    assert _fds() == before and loop not in watcher._sources
    again = InterfaceWatcher(loop, lambda: None)  # a new one opens it again
    assert _fds() == before + 1
    again.close()
    assert _fds() == before
