"""RFC 8828 IP address handling modes, in the lab's multihomed client."""

from __future__ import annotations

import json
import sys

import pytest

from ice_engine.lab import (
    CLIENT_IPV4_A,
    CLIENT_IPV6,
    PASSWORD,
    ROUTER_PUBLIC_IPV4,
    SERVER_IPV4,
    USERNAME,
    Lab,
)

pytestmark = pytest.mark.lab

SCRIPT = """
import asyncio, json
from ice_engine import Gatherer, IceServer

async def main():
    servers = [IceServer("stun:{server}"), IceServer("turn:{server}", "{user}", "{password}")]
    async with Gatherer(servers, ip_handling={mode}) as gatherer:
        found = [e.candidate.parsed for e in [e async for e in gatherer.gather()]
                 if e.type == "icecandidate" and e.candidate and e.candidate.parsed]
    print(json.dumps([[c.type, c.address, c.related_address] for c in found]))

asyncio.run(main())
"""


def gathered(lab: Lab, mode: int) -> list[tuple[str, str, str | None]]:
    script = SCRIPT.format(server=SERVER_IPV4, user=USERNAME, password=PASSWORD, mode=mode)
    result = lab.run_python(script, timeout_s=30)
    assert result.returncode == 0, result.stderr
    return [tuple(c) for c in json.loads(result.stdout)]


def test_mode_1_shows_every_interface(lab: Lab) -> None:
    hosts = {c[1] for c in gathered(lab, 1) if c[0] == "host"}
    assert len(hosts) == 3


def test_mode_2_default_route_and_its_local_address(lab: Lab) -> None:
    found = gathered(lab, 2)
    assert {c[1] for c in found if c[0] == "host"} == {CLIENT_IPV4_A, CLIENT_IPV6}
    assert {c[2] for c in found if c[0] == "srflx"} == {CLIENT_IPV4_A}
    assert {c[0] for c in found} == {"host", "srflx", "relay"}


def test_mode_3_default_route_reveals_no_private_address(lab: Lab) -> None:
    found = gathered(lab, 3)
    assert {c[0] for c in found} == {"srflx", "relay"}
    assert {c[1] for c in found if c[0] == "srflx"} == {ROUTER_PUBLIC_IPV4}
    assert {c[2] for c in found} <= {"0.0.0.0", "::"}  # related addresses hidden
    assert len([c for c in found if c[0] == "relay"]) == 1  # from the default route only


def test_mode_4_relay_only(lab: Lab) -> None:
    found = gathered(lab, 4)
    assert {c[0] for c in found} == {"relay"}
    assert {c[2] for c in found} == {"0.0.0.0"}


def test_cli_flag(lab: Lab) -> None:
    result = lab.run(
        [sys.executable, "-m", "ice_engine", "gather", "--json", "--ip-handling", "2"], timeout_s=30
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    hosts = {
        e["candidate"]["candidate"].split()[4]
        for e in lines
        if e["event"] == "icecandidate" and e["candidate"] and e["candidate"]["candidate"]
    }
    assert hosts == {CLIENT_IPV4_A, CLIENT_IPV6}
