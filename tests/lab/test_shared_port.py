"""Shared-port mode: many gatherers, one UDP port per address, answers routed by ID."""

from __future__ import annotations

import json

import pytest

from ice_engine.lab import PASSWORD, ROUTER_PUBLIC_IPV4, SERVER_IPV4, USERNAME, Lab

pytestmark = pytest.mark.lab

SCRIPT = """
import asyncio, json, os
from ice_engine import Gatherer, IceServer

def fds():
    return len(os.listdir("/proc/self/fd"))

async def gather_all(shared, n):
    gatherers = [Gatherer([IceServer("stun:{server}")], shared_port=shared) for _ in range(n)]
    async def one(g):
        return [e.candidate.parsed for e in [e async for e in g.gather()]
                if e.type == "icecandidate" and e.candidate and e.candidate.parsed]
    before = fds()
    results = await asyncio.gather(*(one(g) for g in gatherers))
    during = fds() - before
    ufrags = {{g.credentials.ufrag for g in gatherers}}
    for g in gatherers:
        await g.close()
    return results, during, len(ufrags), fds() - before

async def main():
    shared, shared_fds, ufrags, left = await gather_all(40000, 200)
    private, private_fds, _, private_left = await gather_all(None, 200)
    print(json.dumps({{
        "shared": [[[c.type, c.address, c.port] for c in r] for r in shared],
        "shared_fds": shared_fds, "private_fds": private_fds, "ufrags": ufrags,
        "left": left, "private_left": private_left,
        "private_srflx": sum(1 for r in private for c in r if c.type == "srflx"),
    }}))

asyncio.run(main())
"""


def test_two_hundred_gatherers_on_one_port(lab: Lab) -> None:
    result = lab.run_python(SCRIPT.format(server=SERVER_IPV4), timeout_s=60)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["ufrags"] == 200  # each session keeps its own credentials
    for found in outcome["shared"]:
        hosts = [c for c in found if c[0] == "host"]
        srflx = [c for c in found if c[0] == "srflx"]
        assert len(hosts) == 3 and {c[2] for c in hosts} == {40000}
        assert len(srflx) == 2 and {c[1] for c in srflx} == {ROUTER_PUBLIC_IPV4}
    assert outcome["shared_fds"] == 3  # one socket per address, whatever the sessions
    assert outcome["private_fds"] == 600 + 1  # and the epoll that watches them (sockethub)
    assert outcome["private_srflx"] == 400
    assert outcome["left"] == 0 and outcome["private_left"] == 0


TURN_SCRIPT = """
import asyncio, json, os
from ice_engine import Gatherer, IceServer

def fds():
    return len(os.listdir("/proc/self/fd"))

async def main():
    servers = [IceServer("turn:{server}", "{user}", "{password}"),
               IceServer("turn:{server}?transport=tcp", "{user}", "{password}")]
    before = fds()
    gatherers = [Gatherer(servers, shared_port=40003) for _ in range(20)]
    async def one(g):
        return [e async for e in g.gather()]
    results = await asyncio.gather(*(one(g) for g in gatherers))
    during = fds() - before
    found = [[[e.candidate.type, e.candidate.protocol, e.candidate.address, e.candidate.port,
               e.candidate.relatedAddress, e.candidate.candidate]
              for e in r if e.type == "icecandidate" and e.candidate and e.candidate.type]
             for r in results]
    errors = [e.to_json() for r in results for e in r if e.type == "icecandidateerror"]
    for g in gatherers:
        await g.close()
    print(json.dumps({{"found": found, "errors": errors, "during": during,
                      "left": fds() - before}}))

asyncio.run(main())
"""


def test_turn_beside_a_shared_port(lab: Lab) -> None:
    script = TURN_SCRIPT.format(server=SERVER_IPV4, user=USERNAME, password=PASSWORD)
    result = lab.run_python(script, timeout_s=60)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["errors"] == []
    relays = []
    for found in outcome["found"]:
        hosts = [c for c in found if c[0] == "host"]
        assert len(hosts) == 3 and {c[3] for c in hosts} == {40003}
        # The srflx is the shared port's own mapping, asked of the TURN server with a
        # Binding request: not the mapping of the socket the allocation came from.
        srflx = [c for c in found if c[0] == "srflx"]
        assert len(srflx) == 2 and {c[2] for c in srflx} == {ROUTER_PUBLIC_IPV4}
        relay = [c for c in found if c[0] == "relay"]
        assert len(relay) == 4  # per IPv4 base: one allocation over UDP, one over TCP
        relays += [(c[2], c[3]) for c in relay]
    assert len(set(relays)) == len(relays) == 80  # every session has allocations of its own
    shared_mappings = {c[3] for found in outcome["found"] for c in found if c[0] == "srflx"}
    assert len(shared_mappings) == 2  # one NAT mapping per shared socket, for all sessions
    # 3 shared sockets; per session, a private socket per address for TURN over UDP and
    # a connection per IPv4 address for TURN over TCP; the epoll watching the private ones.
    # And a socket more for each 437 (a 5-tuple coturn still holds from a session just
    # before: the allocation moves to a new socket, twice at most) over UDP.
    moved = outcome["during"] - (3 + 20 * 3 + 20 * 2 + 1)
    assert 0 <= moved <= 2 * 40, outcome["during"]
    assert outcome["left"] == 0
