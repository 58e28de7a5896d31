"""The driver on edges a user audit found: a restart loop that never let the event loop
run, and arguments of the wrong kind.

The gatherer sees only loopback addresses (`local_addresses` is replaced), and every
server is a stub on loopback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator

import pytest

import ice_engine.driver as driver
from ice_engine import Gatherer
from ice_engine.events import Event
from ice_engine.interfaces import LocalAddress

LOOPBACK = LocalAddress("lo", "127.0.0.1", socket.AF_INET, 1, 0)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(driver, "local_addresses", lambda **_: [LOOPBACK])
    yield


async def collect(gatherer: Gatherer) -> list[Event]:
    return [event async for event in gatherer.gather()]


# -- 1. a restart loop lets the event loop run ----------------------------------------


async def test_a_restart_loop_lets_other_tasks_and_signal_handlers_run() -> None:
    """Host-only events are all ready at once, so gather() never waits: without a yield in
    restart(), a loop of generations starved every other task and signal handler."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, signalled.set)
    ticks = 0

    async def other() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        async with Gatherer() as gatherer:
            for generation in range(50):
                if generation:
                    await gatherer.restart()
                events = await collect(gatherer)
                assert events[-1].to_json()["candidate"] is None
            seen_ticks, seen_signal = ticks, signalled.is_set()
    finally:
        task.cancel()
        loop.remove_signal_handler(signal.SIGUSR1)
    assert seen_ticks > 0
    assert seen_signal


# -- 5. arguments of the wrong kind --------------------------------------------------


async def test_an_unknown_mid_is_a_value_error_naming_it() -> None:
    async with Gatherer(mids=["audio"]) as gatherer:
        await collect(gatherer)
        with pytest.raises(ValueError, match="'nope'"):
            gatherer.transport_state("nope")
        with pytest.raises(ValueError, match="'nope'"):
            gatherer.sdp_candidates("nope")


async def test_send_from_something_not_a_candidate_is_a_type_error() -> None:
    async with Gatherer() as gatherer:
        await collect(gatherer)
        with pytest.raises(TypeError, match="local"):
            gatherer.send(None, ("127.0.0.1", 9), b"x")  # type: ignore[arg-type]
