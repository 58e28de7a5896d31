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
        await gatherer.restart()                  # the new generation starts gathering now
        await asyncio.sleep(0.5)
        second = await timed(gatherer)
    async with Gatherer(servers, pool_size=2) as gatherer:
        await asyncio.sleep(0.5)                  # gathers generations 0 and 1 meanwhile
        await timed(gatherer)
        await gatherer.restart()                  # takes generation 1, gathered already
        third = await timed(gatherer)             # ... so no round trip to wait for
        await asyncio.sleep(0.5)                  # the pool refills with generation 2
        await gatherer.restart()
        fourth = await timed(gatherer)
        generations = gatherer.generation
    async with Gatherer(servers) as cold:
        cold_run = await timed(cold)
    print(json.dumps([[first, second, third, fourth], generations, cold_run]))

asyncio.run(main())
"""


def test_pooled_candidates_arrive_at_once(delayed_lab: Lab) -> None:
    script = SCRIPT.format(server=SERVER_IPV4, user=USERNAME, password=PASSWORD)
    result = delayed_lab.run_python(script, timeout_s=30)
    assert result.returncode == 0, result.stderr
    pooled, generations, cold = json.loads(result.stdout)
    for kinds, elapsed in pooled:
        assert {"host", "srflx", "relay"} <= set(kinds)
        assert elapsed < 20, elapsed  # already gathered: no round trip to wait for
    assert generations == 2
    kinds, elapsed = cold
    assert {"host", "srflx", "relay"} <= set(kinds)
    assert elapsed > 90  # without the pool: two RTTs for the relay


RESTARTS = """
import asyncio, json
from ice_engine import Gatherer, IceServer

async def main():
    server = IceServer("turn:{server}", "{user}", "{password}")
    only_a = lambda interface, address: address == "203.0.113.2"
    async with Gatherer([server], pool_size=2, address_filter=only_a) as gatherer:
        [e async for e in gatherer.gather()]
        await asyncio.sleep(0.3)                  # generation 1 allocates in the pool
        seen, unseen = [r.allocation for r in gatherer._core._relays.values()]  # with the pool's
        await gatherer.restart()                  # takes generation 1, not streamed yet
        await gatherer.restart()                  # takes 2: 1 is dropped unseen
        await asyncio.sleep(0.3)                  # well under the 1 s close timeout
        states = [seen.state, unseen.state]
        generations = sorted({{e.generation async for e in gatherer.gather()}})
        relays = len([a for a in gatherer.allocations if a.state == "allocated"])
        await gatherer.restart()                  # 2 was seen: now 0 goes
        await asyncio.sleep(0.3)
        states.append(seen.state)
    print(json.dumps([states, generations, relays]))

asyncio.run(main())
"""


def test_a_generation_dropped_unseen_is_deallocated_and_the_seen_one_kept(lab: Lab) -> None:
    """Two restarts before gather(): coturn confirms the dropped generation's
    deallocation (its state is closed long before the close timeout: the socket stays
    open for the answer), and the relay the application has seen stays allocated for its
    ICE agent until a later generation is seen and restarted in turn."""
    script = RESTARTS.format(server=SERVER_IPV4, user=USERNAME, password=PASSWORD)
    result = lab.run_python(script, timeout_s=30)
    assert result.returncode == 0, result.stderr
    states, generations, relays = json.loads(result.stdout)
    assert states == ["allocated", "closed", "closed"]
    assert generations == [2]
    assert relays == 2  # generation 0's and 2's; the pooled 3's shows once gather() takes it
