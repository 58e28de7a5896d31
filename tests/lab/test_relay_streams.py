"""TURN over TCP and TLS, refresh and deallocation, against the lab's coturn."""

from __future__ import annotations

import json
import sys

import pytest

from ice_engine.lab import (
    CA_CERT_FILE,
    PASSWORD,
    SERVER_IPV4,
    SHORT_MAX_ALLOCATE_LIFETIME_S,
    SHORT_TURN_PORT,
    TURN_HOST,
    USERNAME,
    Lab,
)
from tests.lab.test_srflx import candidates, errors

pytestmark = pytest.mark.lab

CREDENTIALS = ("--username", USERNAME, "--credential", PASSWORD)


def gather_with_ca(lab: Lab, *args: str, ca: bool = True) -> list[dict[str, object]]:
    env = [f"SSL_CERT_FILE={CA_CERT_FILE}"] if ca else []  # also: --ca-file
    argv = ["env", *env, sys.executable, "-m", "ice_engine", "gather", "--json", *args]
    result = lab.run(argv, timeout_s=30)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def priority(candidate: dict[str, object]) -> int:
    fields = candidate["fields"]
    assert isinstance(fields, list)
    return int(fields[3])


def test_tcp_relay_ranks_below_udp(lab: Lab) -> None:
    events = gather_with_ca(
        lab,
        "--ice-server",
        f"turn:{SERVER_IPV4}?transport=tcp",
        "--ice-server",
        f"turn:{SERVER_IPV4}",
        *CREDENTIALS,
    )
    assert not errors(events), errors(events)
    relays = candidates(events, "relay")
    assert len(relays) == 4  # UDP and TCP from each IPv4 base
    by_type = sorted(relays, key=priority, reverse=True)
    assert {priority(r) >> 24 for r in by_type[:2]} == {2}  # UDP
    assert {priority(r) >> 24 for r in by_type[2:]} == {1}  # TCP
    assert all(r["fields"][4] == SERVER_IPV4 for r in relays)
    assert all(r["fields"][2] == "udp" for r in relays)  # the relayed transport is UDP
    # A TCP mapping is no UDP srflx: only the UDP allocation's mapping is offered.
    assert len(candidates(events, "srflx")) == 2


@pytest.mark.parametrize("host", [TURN_HOST, f"{TURN_HOST}."])
def test_tls_relay_verified_with_the_lab_ca(lab: Lab, host: str) -> None:
    """A fully qualified name (a final dot) failed: "certificate is not valid for
    'turn.lab.test.'"."""
    events = gather_with_ca(lab, "--ice-server", f"turns:{host}", *CREDENTIALS)
    assert not errors(events), errors(events)
    relays = candidates(events, "relay")
    assert len(relays) == 3  # two IPv4 bases, and the IPv6 base to the AAAA address
    assert {priority(r) >> 24 for r in relays} == {0}  # TLS ranks last
    assert events[-1]["candidate"] is None


def test_ca_file_option(lab: Lab) -> None:
    args = ("--ice-server", f"turns:{SERVER_IPV4}", *CREDENTIALS, "--ca-file", str(CA_CERT_FILE))
    events = gather_with_ca(lab, *args, ca=False)
    assert not errors(events), errors(events)
    assert len(candidates(events, "relay")) == 2


def test_tls_without_a_trusted_ca_is_an_error(lab: Lab) -> None:
    events = gather_with_ca(lab, "--ice-server", f"turns:{SERVER_IPV4}", *CREDENTIALS, ca=False)
    failures = errors(events)
    assert len(failures) == 2
    for failure in failures:
        assert failure["errorCode"] == 701
        assert "certificate" in str(failure["errorText"])
        assert failure["url"] == f"turns:{SERVER_IPV4}"
    assert candidates(events, "relay") == []
    assert events[-1]["candidate"] is None


REFRESH_SCRIPT = """
import asyncio, json, time
from ice_engine import Gatherer, IceServer

async def main():
    server = IceServer("turn:{server}:{port}", "{user}", "{password}")
    only_a = lambda interface, address: address == "203.0.113.2"
    async with Gatherer([server], address_filter=only_a) as gatherer:
        relays = [e.candidate.candidate async for e in gatherer.gather()
                  if e.type == "icecandidate" and e.candidate and e.candidate.type == "relay"]
        [allocation] = gatherer.allocations
        first_expiry = allocation.expires_at
        await asyncio.sleep({wait})
        print(json.dumps({{"relays": relays, "state": allocation.state,
                          "extended": allocation.expires_at - first_expiry,
                          "allocations": len(gatherer.allocations)}}))

asyncio.run(main())
"""


def test_allocation_is_refreshed_past_its_lifetime(lab: Lab) -> None:
    wait = SHORT_MAX_ALLOCATE_LIFETIME_S + 4
    script = REFRESH_SCRIPT.format(
        server=SERVER_IPV4, port=SHORT_TURN_PORT, user=USERNAME, password=PASSWORD, wait=wait
    )
    result = lab.run_python(script, timeout_s=wait + 20)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert len(outcome["relays"]) == 1
    assert outcome["state"] == "allocated"
    assert outcome["allocations"] == 1
    assert outcome["extended"] > 0  # the server granted at least one refresh


def test_close_deallocates_so_the_quota_is_free_again(lab: Lab) -> None:
    """The short instance allows one allocation per user: after one gathering holds it,
    three more in a row work only if each close() released its allocation."""
    script = f"""
import asyncio, json
from ice_engine import Gatherer, IceServer

async def once():
    server = IceServer("turn:{SERVER_IPV4}:{SHORT_TURN_PORT}", "{USERNAME}", "{PASSWORD}")
    async with Gatherer([server], address_filter=lambda i, a: a == "203.0.113.2") as g:
        events = [e async for e in g.gather()]
    return [e.errorCode if e.type == "icecandidateerror" else e.candidate.type
            for e in events if e.type == "icecandidateerror"
            or (e.type == "icecandidate" and e.candidate and e.candidate.type == "relay")]

async def main():
    for _ in range(10):  # an earlier test's allocation may still hold the quota
        if await once() == ["relay"]:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.5)
    results = []
    for _ in range(3):
        results.append(await once())
        await asyncio.sleep(1.5)  # coturn frees quota about a second after deallocating
    print(json.dumps(results))

asyncio.run(main())
"""
    result = lab.run_python(script, timeout_s=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [["relay"], ["relay"], ["relay"]]


def test_a_second_tls_connection_resumes_the_session(lab: Lab) -> None:
    script = f"""
import asyncio, json, os
from ice_engine import Gatherer, IceServer
from ice_engine import streams

async def relays():
    server = IceServer("turns:{TURN_HOST}", "{USERNAME}", "{PASSWORD}")
    async with Gatherer([server], address_filter=lambda i, a: a == "203.0.113.2") as g:
        return [e.candidate.type async for e in g.gather()
                if e.type == "icecandidate" and e.candidate and e.candidate.type]

async def main():
    first = await relays()
    cached = len(streams.tls_sessions(streams.default_tls_context()))
    second = await relays()
    print(json.dumps([first, cached, second]))

os.environ["SSL_CERT_FILE"] = "{CA_CERT_FILE}"
asyncio.run(main())
"""
    result = lab.run_python(script, timeout_s=30)
    assert result.returncode == 0, result.stderr
    first, cached, second = json.loads(result.stdout)
    assert first == second == ["host", "relay"]
    assert cached == 1


def test_a_session_is_only_resumed_through_the_context_that_made_it(lab: Lab) -> None:
    """Each gatherer with an SSLContext of its own: the second must not be handed the
    first one's session (ssl refuses it, and resuming would skip its own checks)."""
    script = f"""
import asyncio, json, ssl
from ice_engine import Gatherer, IceServer

async def kinds():
    context = ssl.create_default_context(cafile="{CA_CERT_FILE}")
    server = IceServer("turns:{TURN_HOST}", "{USERNAME}", "{PASSWORD}")
    only = lambda i, a: a == "203.0.113.2"
    async with Gatherer([server], address_filter=only, ssl_context=context) as g:
        return [e.candidate.type if e.type == "icecandidate" else e.errorCode
                async for e in g.gather() if e.type == "icecandidateerror"
                or (e.type == "icecandidate" and e.candidate and e.candidate.type)]

async def main():
    print(json.dumps([await kinds(), await kinds()]))

asyncio.run(main())
"""
    result = lab.run_python(script, timeout_s=30)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout) == [["host", "relay"], ["host", "relay"]]


def test_a_cancelled_close_with_turn_over_tcp_or_tls_still_ends(lab: Lab) -> None:
    """close() cancelled at once (`wait_for(close(), 0.0001)`): the TCP/TLS connections
    were dropped with their deallocations under way, which could then never end, so the
    base sockets lingered for good and a second close() never returned."""
    script = f"""
import asyncio, json, os, ssl
from ice_engine import Gatherer, IceServer

async def once(url):
    context = ssl.create_default_context(cafile="{CA_CERT_FILE}")
    server = IceServer(url, "{USERNAME}", "{PASSWORD}")
    gatherer = Gatherer([server], ssl_context=context)
    async for _ in gatherer.gather():
        pass
    try:
        await asyncio.wait_for(gatherer.close(), 0.0001)
    except TimeoutError:
        pass
    await asyncio.wait_for(gatherer.close(), 5)
    return len(gatherer._table.sockets)

async def main():
    urls = ["turn:{SERVER_IPV4}?transport=tcp", "turns:{SERVER_IPV4}"]
    print(json.dumps([await once(url) for url in urls]))

asyncio.run(main())
"""
    result = lab.run_python(script, timeout_s=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [0, 0]


def test_giving_up_mid_tls_handshake_leaves_no_unretrieved_exception(lab: Lab) -> None:
    """gather() cancelled 1 ms in, then close(): the connection dropped mid-handshake set
    an exception on a future nobody awaited any more, and asyncio logged "Future
    exception was never retrieved ... ConnectionResetError"."""
    script = f"""
import asyncio, gc, ssl
from ice_engine import Gatherer, IceServer

async def once():
    context = ssl.create_default_context(cafile="{CA_CERT_FILE}")
    gatherer = Gatherer([IceServer("turns:{SERVER_IPV4}", "{USERNAME}", "{PASSWORD}")],
                        ssl_context=context)
    async def consume():
        async for _ in gatherer.gather():
            pass
    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.001)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await gatherer.close()

async def main():
    for _ in range(5):
        await once()
    gc.collect()
    await asyncio.sleep(0.05)

asyncio.run(main())
"""
    result = lab.run_python(script, timeout_s=30)
    assert result.returncode == 0, result.stderr
    assert "never retrieved" not in result.stderr, result.stderr
