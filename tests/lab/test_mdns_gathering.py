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


TAKEN = """
import json, socket, subprocess, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
    holder.bind(("0.0.0.0", 5353))  # another responder's, as avahi's would be
    argv = [sys.executable, "-m", "ice_engine", "gather", "--json", "--mdns",
            "--ice-server", "stun:{server}"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=20)
print(json.dumps({{"rc": run.returncode, "out": run.stdout, "err": run.stderr}}))
"""


def test_the_cli_says_why_host_candidates_are_left_out(lab: Lab) -> None:
    """With port 5353 taken, host candidates are left out rather than shown with their
    addresses, as documented; the CLI said nothing of it, so a run looked host-less."""
    result = lab.run_python(TAKEN.format(server=SERVER_IPV4), timeout_s=30)
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["rc"] == 0
    assert run["err"] == (
        "ice-engine: warning: --mdns: host candidates left out: "
        "cannot bind UDP port 5353: address already in use\n"
    )
    lines = [json.loads(line) for line in run["out"].splitlines()]
    types = [
        e["candidate"]["candidate"].split()[7]
        for e in lines
        if e.get("candidate") and e["candidate"]["candidate"]
    ]
    assert types == ["srflx", "srflx"]
