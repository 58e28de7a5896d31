"""mDNS host candidates end to end: the gatherer hides its addresses behind .local names."""

from __future__ import annotations

import json

import pytest

from ice_engine.lab import CLIENT_IPV4_A, CLIENT_IPV4_B, CLIENT_IPV6, SERVER_IPV4, Lab

pytestmark = pytest.mark.lab

SCRIPT = """
import asyncio, json
from ice_engine import Gatherer, IceServer
from ice_engine.mdns import is_mdns_candidate_address, resolve_mdns

async def main():
    async with Gatherer([IceServer("stun:{server}")], mdns=True) as gatherer:
        [e async for e in gatherer.gather()]
        found = [[c.type, c.address, c.relatedAddress, c.relatedPort, c.candidate]
                 for c in gatherer.candidates]
        names = [c[1] for c in found if c[0] == "host"]
        resolved = {{}}
        for name in names:
            try:
                resolved[name] = await resolve_mdns(name, timeout=1.0, interface_address="{via}")
            except OSError as error:
                resolved[name] = str(error)
        await gatherer.restart()
        [e async for e in gatherer.gather()]
        again = sorted(c.address for c in gatherer.candidates if c.type == "host")
    print(json.dumps({{"found": found, "resolved": resolved, "again": again,
                      "all_names": all(is_mdns_candidate_address(n) for n in names)}}))

asyncio.run(main())
"""


def test_host_candidates_carry_names_that_resolve(lab: Lab) -> None:
    result = lab.run_python(SCRIPT.format(server=SERVER_IPV4, via=CLIENT_IPV4_A), timeout_s=30)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    found = outcome["found"]
    hosts = [c for c in found if c[0] == "host"]
    assert len(hosts) == 3 and outcome["all_names"]
    text = json.dumps(found)
    for address in (CLIENT_IPV4_A, CLIENT_IPV4_B, CLIENT_IPV6):
        assert address not in text  # no private address anywhere in the candidates
    srflx = [c for c in found if c[0] == "srflx"]
    assert len(srflx) == 2 and all(c[2:4] == ["0.0.0.0", 0] for c in srflx)
    ipv4 = {v for v in outcome["resolved"].values() if "." in v and ":" not in v}
    assert CLIENT_IPV4_A in ipv4  # the name answers with the address it stands for
    assert sorted(c[1] for c in hosts) == outcome["again"]  # one name per address, kept
