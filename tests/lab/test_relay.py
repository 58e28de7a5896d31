"""Relay candidates through coturn with the gatherer, as a user runs the CLI."""

from __future__ import annotations

import json
import sys

import pytest

from ice_engine.lab import (
    BACKUP_DOMAIN,
    CLIENT_IPV4_A,
    CLIENT_IPV4_B,
    CLIENT_IPV6,
    PASSWORD,
    REDIRECT_TURN_PORT,
    ROUTER_PUBLIC_IPV4,
    SERVER_IPV4,
    SERVER_IPV6,
    USERNAME,
    Lab,
)
from tests.lab.test_srflx import candidates, errors, gather, related

pytestmark = pytest.mark.lab

CREDENTIALS = ("--username", USERNAME, "--credential", PASSWORD)


def test_udp_relay_and_the_srflx_it_reveals(lab: Lab) -> None:
    events = gather(lab, "--ice-server", f"turn:{SERVER_IPV4}", *CREDENTIALS)
    assert not errors(events), errors(events)
    relays = candidates(events, "relay")
    assert len(relays) == 2  # one allocation per IPv4 base
    for relay in relays:
        assert relay["fields"][4] == SERVER_IPV4
        assert related(relay)[0] == ROUTER_PUBLIC_IPV4  # raddr: the mapped address
    srflx = candidates(events, "srflx")  # a TURN server serves as a STUN server too
    assert {c["fields"][4] for c in srflx} == {ROUTER_PUBLIC_IPV4}
    assert {related(c)[0] for c in srflx} == {CLIENT_IPV4_A, CLIENT_IPV4_B}
    hosts = candidates(events, "host")
    assert max(int(r["fields"][3]) for r in relays) < min(int(s["fields"][3]) for s in srflx)
    assert max(int(s["fields"][3]) for s in srflx) < min(int(h["fields"][3]) for h in hosts)
    assert events[-1]["candidate"] is None


def test_try_alternate_is_followed_over_udp_and_tcp(lab: Lab) -> None:
    """A coturn that balances load answers each Allocate with 300 Try Alternate and the
    main coturn's address: the relays come from there, with no error."""
    url = f"turn:{SERVER_IPV4}:{REDIRECT_TURN_PORT}"
    events = gather(lab, "--ice-server", url, "--ice-server", f"{url}?transport=tcp", *CREDENTIALS)
    assert not errors(events), errors(events)
    relays = candidates(events, "relay")
    assert len(relays) == 4  # UDP and TCP, from each IPv4 base
    assert {r["fields"][4] for r in relays} == {SERVER_IPV4}
    assert len(candidates(events, "srflx")) == 2  # the UDP allocations' mapped addresses
    assert events[-1]["candidate"] is None


def test_an_srv_backup_is_allocated_on_only_when_the_primary_never_answers(lab: Lab) -> None:
    """_turn._udp.backup.lab.test: priority 0 is a dead address (IPv4 only), priority 1
    the coturn. One allocation per base: from the IPv4 ones at the backup once the
    primary's share of the 2 s deadline (half) has passed without an answer, from the
    IPv6 one at once (the primary has no IPv6 address); and no error."""
    events = gather(lab, "--ice-server", f"turn:{BACKUP_DOMAIN}", *CREDENTIALS)
    assert not errors(events), errors(events)
    relays = candidates(events, "relay")
    ipv4 = [r for r in relays if r["fields"][4] == SERVER_IPV4]
    ipv6 = [r for r in relays if r["fields"][4] == SERVER_IPV6]
    assert len(ipv4) == 2 and len(ipv6) == 1 and len(relays) == 3
    assert all(0.9 < r["t"] < 2.0 for r in ipv4), [r["t"] for r in ipv4]
    assert ipv6[0]["t"] < 0.9
    assert events[-1]["candidate"] is None


def test_ipv6_relay_from_the_ipv6_base(lab: Lab) -> None:
    events = gather(lab, "--ice-server", f"turn:[{SERVER_IPV6}]", *CREDENTIALS)
    assert not errors(events), errors(events)
    [relay] = candidates(events, "relay")
    assert relay["fields"][4] == SERVER_IPV6
    assert related(relay)[0] == CLIENT_IPV6  # no NAT on IPv6
    assert candidates(events, "srflx") == []  # equal to its base: pruned


def test_relay_only_hides_everything_else(lab: Lab) -> None:
    events = gather(lab, "--ice-server", f"turn:{SERVER_IPV4}", *CREDENTIALS, "--relay-only")
    kinds = {c["fields"][7] for c in candidates(events, "host") + candidates(events, "srflx")}
    assert kinds == set()
    relays = candidates(events, "relay")
    assert len(relays) == 2
    assert {related(r) for r in relays} == {("0.0.0.0", 0)}


def test_wrong_password_is_a_401_error_with_the_url(lab: Lab) -> None:
    url = f"turn:{SERVER_IPV4}"
    result = lab.run(
        [
            sys.executable,
            "-m",
            "ice_engine",
            "gather",
            "--json",
            "--ice-server",
            url,
            "--username",
            USERNAME,
            "--credential",
            "not-the-password",
        ],
        timeout_s=30,
    )
    assert result.returncode == 0, result.stderr
    assert "not-the-password" not in result.stdout + result.stderr
    events = gather(lab, "--ice-server", url, "--username", USERNAME, "--credential", "nope!")
    failures = errors(events)
    assert len(failures) == 2
    assert {e["errorCode"] for e in failures} == {401}
    assert {e["url"] for e in failures} == {url}
    assert candidates(events, "relay") == []
    # As in a browser, the server that refused still tells each base's srflx (a Binding).
    assert {c["candidate"].split()[4] for c in candidates(events, "srflx")} == {"198.51.100.1"}
    assert len(candidates(events, "srflx")) == 2
    assert events[-1]["candidate"] is None


STALE_ALLOCATION = rf"""
import asyncio, json, secrets, socket, time
from ice_engine import Gatherer, IceServer
from ice_engine.turn import Allocation, TurnCredentials

SERVER = ("{SERVER_IPV4}", 3478)

def settle(sock, allocation, until):
    stop = time.monotonic() + 5
    while not until() and time.monotonic() < stop:
        while (data := allocation.next_outgoing()) is not None:
            sock.sendto(data, SERVER)
        sock.settimeout(0.05)
        try:
            data, source = sock.recvfrom(2048)
        except TimeoutError:
            allocation.handle_timer(time.monotonic())
        else:
            allocation.handle_message(data, time.monotonic())

async def warm_up():  # an earlier session: its nonce cached, the next Allocate is signed
    only = lambda interface, address: address == "{CLIENT_IPV4_A}"
    server = IceServer("turn:{SERVER_IPV4}", "{USERNAME}", "{PASSWORD}")
    async with Gatherer([server], address_filter=only) as g:
        [e async for e in g.gather()]

if WARM_NONCE_CACHE:
    asyncio.run(warm_up())

# A crashed client's allocation: made from 203.0.113.2:P, its socket gone, still held.
# (A port whose 5-tuple the server already holds, from another session, fails: 437.)
for attempt in range(5):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("{CLIENT_IPV4_A}", 0))
    port = sock.getsockname()[1]
    stale = Allocation(SERVER, credentials=TurnCredentials("{USERNAME}", "{PASSWORD}"),
                       deadline=time.monotonic() + 5, lifetime=120)
    stale.start(time.monotonic())
    settle(sock, stale, lambda: stale.state != "allocating")
    sock.close()
    if stale.state == "allocated":
        break
assert stale.state == "allocated", stale

secrets.randbelow = lambda n: 0  # the port range is scanned from its start: the base gets P
async def main():
    only = lambda interface, address: address == "{CLIENT_IPV4_A}"
    server = IceServer("turn:{SERVER_IPV4}", "{USERNAME}", "{PASSWORD}")
    async with Gatherer([server], address_filter=only, port_range=(port, port + 50)) as g:
        return [e.to_json() async for e in g.gather()]
events = asyncio.run(main())

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # release the stale one
sock.bind(("{CLIENT_IPV4_A}", port))
stale.close(time.monotonic())
settle(sock, stale, lambda: stale.state == "closed")
print(json.dumps({{"port": port, "events": events, "released": stale.state}}))
"""


@pytest.mark.parametrize("warm", [False, True], ids=["first-allocate-unsigned", "signed"])
def test_a_5_tuple_the_server_holds_moves_the_allocation_to_another_socket(
    lab: Lab, warm: bool
) -> None:
    """RFC 8656 §7.3: coturn answers an Allocate from a 5-tuple it already holds an
    allocation for (a crashed client behind the same NAT mapping, a port freed too
    recently) with 437. The relay comes from another socket instead, and the base's
    srflx from a Binding request, with no error. With a nonce cached by an earlier
    session the Allocate is signed, and coturn's 437 to it is not: it was dropped, and
    the relay and srflx lost to a 701."""
    script = f"WARM_NONCE_CACHE = {warm}\n{STALE_ALLOCATION}"
    run = lab.run_python(script, timeout_s=30)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    events = [json.loads(e) if isinstance(e, str) else e for e in out["events"]]
    assert not errors(events), errors(events)
    [host] = candidates(events, "host")
    assert int(host["fields"][5]) == out["port"]  # the base is on the stale 5-tuple
    [srflx] = candidates(events, "srflx")
    assert related(srflx) == (CLIENT_IPV4_A, out["port"])
    [relay] = candidates(events, "relay")
    assert relay["fields"][4] == SERVER_IPV4
    # Allocated from another 5-tuple: its related address is not the base's mapping.
    assert related(relay) != (srflx["fields"][4], int(srflx["fields"][5]))
    assert events[-1]["candidate"] is None
    assert out["released"] == "closed"
