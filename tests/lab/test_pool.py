"""The candidate pool: gathering before the application asks, as iceCandidatePoolSize."""

from __future__ import annotations

import json

import pytest

from ice_engine.lab import PASSWORD, SERVER_IPV4, USERNAME, Lab

pytestmark = pytest.mark.lab

SCRIPT = """
import asyncio, json, time
from ice_engine import Gatherer, IceServer

async def timed(gatherer):
    started = time.perf_counter()
    kinds = [e.candidate.type for e in [e async for e in gatherer.gather()]
             if e.type == "icecandidate" and e.candidate and e.candidate.type]
    return kinds, (time.perf_counter() - started) * 1000

async def main():
    servers = [IceServer("stun:{server}"), IceServer("turn:{server}", "{user}", "{password}")]
    async with Gatherer(servers, pool_size=1) as gatherer:
        await asyncio.sleep(0.5)                  # the application is busy meanwhile
        first = await timed(gatherer)
        await gatherer.restart()                  # consumes the pool, which refills
        await asyncio.sleep(0.5)
        second = await timed(gatherer)
        generations = gatherer.generation
    async with Gatherer(servers) as cold:
        third = await timed(cold)
    print(json.dumps([first, second, generations, third]))

asyncio.run(main())
"""


def test_pooled_candidates_arrive_at_once(delayed_lab: Lab) -> None:
    script = SCRIPT.format(server=SERVER_IPV4, user=USERNAME, password=PASSWORD)
    result = delayed_lab.run_python(script, timeout_s=30)
    assert result.returncode == 0, result.stderr
    first, second, generations, third = json.loads(result.stdout)
    for kinds, elapsed in (first, second):
        assert {"host", "srflx", "relay"} <= set(kinds)
        assert elapsed < 20, elapsed  # already gathered: no round trip to wait for
    assert generations == 1
    kinds, elapsed = third
    assert {"host", "srflx", "relay"} <= set(kinds)
    assert elapsed > 90  # without the pool: two RTTs for the relay
