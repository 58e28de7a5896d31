"""Cancellation in the lab: break, task cancel and close() mid-gathering leak nothing.

Each case runs in its own process inside the client namespace, with STUN and TURN (the
main coturn and the short one, whose `user-quota=1` makes a leaked allocation visible),
and prints one JSON line: file descriptors before/after (/proc/self/fd), asyncio tasks
left, whether an exception escaped, and whether a fresh allocation on the short server
succeeds within ~3 s of the close (coturn frees the quota ~1 s after a deallocation).
"cold" cases start with an empty nonce cache, so the first Allocate is unsigned; "warm"
cases have realm and nonce cached, so the server may already hold an allocation when
gathering is cut short.
"""

from __future__ import annotations

import json
import sys

import pytest

from ice_engine.lab import DEAD_IPV4, PASSWORD, SERVER_IPV4, SHORT_TURN_PORT, USERNAME, Lab, leases

pytestmark = pytest.mark.lab

SCRIPT = rf"""
import asyncio, gc, json, os, sys, time
import ice_engine.driver as driver
from ice_engine import Gatherer, IceServer

CASE, WARM = sys.argv[1], sys.argv[2] == "warm"
SHORT = IceServer("turn:{SERVER_IPV4}:{SHORT_TURN_PORT}", "{USERNAME}", "{PASSWORD}")
# A dead STUN server keeps gathering going for 2 s, so every cut lands mid-gathering.
SERVERS = [IceServer("stun:{SERVER_IPV4}"), IceServer("stun:{DEAD_IPV4}"),
           IceServer("turn:{SERVER_IPV4}", "{USERNAME}", "{PASSWORD}"), SHORT]
ONE_BASE = lambda interface, address: address == "203.0.113.2"

def fds():
    out = {{}}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{{fd}}")
        except OSError:
            pass
    return out

async def relay_on_short():
    async with Gatherer([SHORT], address_filter=ONE_BASE) as g:
        async for e in g.gather():
            if e.type == "icecandidate" and e.candidate and e.candidate.type == "relay":
                return True
    return False

async def quota_free_within(limit):
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if await relay_on_short():
            return round(time.monotonic() - started, 2)
        await asyncio.sleep(0.2)
    return None

def is_relay(e):
    return e.type == "icecandidate" and e.candidate is not None and e.candidate.type == "relay"

async def case(trigger, seen):
    g = Gatherer(SERVERS, address_filter=ONE_BASE)
    if CASE.startswith("break"):
        async with g:
            async for e in g.gather():
                if trigger(e):
                    seen.set()
                    break
    elif CASE.startswith("cancel"):
        async def consume():
            async with g:
                async for e in g.gather():
                    if trigger(e):
                        seen.set()
        task = asyncio.create_task(consume())
        await asyncio.wait_for(seen.wait(), 5)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    elif CASE.startswith("close"):
        async def consume():
            async for e in g.gather():
                if trigger(e):
                    seen.set()
        task = asyncio.create_task(consume())
        await asyncio.wait_for(seen.wait(), 5)
        await g.close()
        await asyncio.wait_for(task, 5)
    elif CASE.startswith("abort-close"):  # the caller gives up on close() itself
        async def consume():
            async for e in g.gather():
                if trigger(e):
                    seen.set()
        task = asyncio.create_task(consume())
        await asyncio.wait_for(seen.wait(), 5)
        closing = asyncio.create_task(g.close())
        await asyncio.sleep(0)
        closing.cancel()
        try:
            await closing
        except asyncio.CancelledError:
            pass
        await g.close()  # a second close must finish the job
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, StopAsyncIteration):
            pass

async def main():
    # The short server's quota may still be held by the previous process' check.
    ready = await quota_free_within(4.0)
    await asyncio.sleep(1.3)
    if WARM:
        async with Gatherer(SERVERS, address_filter=ONE_BASE) as g:
            async for e in g.gather():
                pass
        await asyncio.sleep(1.3)
    else:
        driver._shared_nonces._entries.clear()
    gc.collect()
    before = fds()
    tasks_before = len(asyncio.all_tasks())
    early = lambda e: True
    trigger = is_relay if CASE.endswith("relay") else early
    error = None
    seen = asyncio.Event()  # the trigger fired: the gathering was cut short there
    try:
        await asyncio.wait_for(case(trigger, seen), 10)
    except BaseException as exc:
        error = repr(exc)
    await asyncio.sleep(0.05)
    gc.collect()
    after = fds()
    leaked = sorted(after[fd] for fd in set(after) - set(before))
    tasks = [repr(t.get_coro()) for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    quota = await quota_free_within(3.0)
    print(json.dumps({{"case": CASE, "warm": WARM, "ready": ready, "error": error,
                      "triggered": seen.is_set(),
                      "fds_before": len(before), "fds_after": len(after), "leaked": leaked,
                      "tasks": tasks, "tasks_before": tasks_before, "quota_free_after_s": quota}}))

asyncio.run(main())
"""


def run_case(lab: Lab, case: str, warm: str) -> tuple[dict[str, object], bool]:
    """Run one case; also say whether the short server's quota was ours alone to judge."""
    exclusive = not leases.other_sessions()
    result = lab.run([sys.executable, "-c", SCRIPT, case, warm], timeout_s=60)
    assert result.returncode == 0, result.stderr
    outcome: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    exclusive = exclusive and not leases.other_sessions()
    return outcome, exclusive


def check(outcome: dict[str, object], exclusive: bool) -> None:
    assert outcome["error"] is None, outcome
    assert outcome["triggered"], outcome  # else it was never cut short (no relay came)
    assert outcome["leaked"] == [], outcome
    assert outcome["fds_after"] == outcome["fds_before"], outcome
    assert outcome["tasks"] == [], outcome
    if exclusive:  # another session may use the short server's one allocation
        assert outcome["ready"] is not None, "the short server's quota never came free"
        assert outcome["quota_free_after_s"] is not None, outcome


CASES = [
    pytest.param("break-early", "cold"),
    pytest.param("break-early", "warm"),
    pytest.param("break-relay", "cold"),
    pytest.param("break-relay", "warm"),
    pytest.param("cancel-early", "cold"),
    pytest.param("cancel-early", "warm"),
    pytest.param("cancel-relay", "cold"),
    pytest.param("cancel-relay", "warm"),
    pytest.param("close-early", "cold"),
    pytest.param("close-early", "warm"),
    pytest.param("close-relay", "cold"),
    pytest.param("close-relay", "warm"),
]


@pytest.mark.parametrize(("case", "warm"), CASES)
def test_cut_short_gathering_leaks_nothing(lab: Lab, case: str, warm: str) -> None:
    check(*run_case(lab, case, warm))


def test_cancelled_close_then_close_again_leaks_nothing(lab: Lab) -> None:
    check(*run_case(lab, "abort-close-relay", "warm"))
