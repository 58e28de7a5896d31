"""mDNS host candidate names across a real link: a responder in ice-client, a peer host.

The test adds a namespace ``ice-peer`` joined to ``ice-client`` by a veth pair (``m0`` in
the client, ``m1`` in the peer, 203.0.113.192/26 and 2001:db8:c::/64), so multicast stays
on that link, and deletes both in ``finally``. Runs of this module are serialised across
test sessions by a lock file, since they share the lab and those names.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ice_engine.lab import CLIENT_NS, Lab
from ice_engine.mdns import new_mdns_name

pytestmark = pytest.mark.lab

PEER_NS = "ice-peer"
CLIENT_IF, PEER_IF = "m0", "m1"
CLIENT_ADDR, PEER_ADDR = "203.0.113.193", "203.0.113.194"
CLIENT_ADDR6, PEER_ADDR6 = "2001:db8:c::1", "2001:db8:c::2"
LOCK = Path("/run/ice-engine-mdns-test.lock")

RESPONDER = """
import asyncio, sys
from ice_engine.mdns import shared_responder

async def main():
    async with shared_responder() as responder:
        responder.register({name!r}, {address!r})
        responder.register({name6!r}, {address6!r})
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    print("answered", responder.queries_answered, "running", responder.running,
          "tasks", len(others), flush=True)

asyncio.run(main())
"""

RESOLVER = """
import asyncio, json, time
from ice_engine.mdns import MdnsResolutionError, resolve_mdns

async def main():
    results = []
    for name, interface, timeout in {cases!r}:
        start = time.monotonic()
        try:
            outcome = ["ok", await resolve_mdns(name, timeout=timeout, interface_address=interface)]
        except MdnsResolutionError as error:
            outcome = ["error", str(error)]
        results.append([*outcome, time.monotonic() - start])
    print(json.dumps(results))

asyncio.run(main())
"""

MULTICAST_QUERIER = """
import json, socket, time
import dns.message, dns.rdataclass
from ice_engine.mdns import _answer_in, _to_name
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("", 5353))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                socket.inet_aton("224.0.0.251") + socket.inet_aton({peer!r}))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton({peer!r}))
sock.settimeout(0.5)
query = dns.message.make_query({name!r}, "A")
query.id = 0
found = None
deadline = time.monotonic() + 3
while found is None and time.monotonic() < deadline:
    sock.sendto(query.to_wire(), ("224.0.0.251", 5353))  # QM, from 5353: multicast answer
    try:
        while True:
            data, source = sock.recvfrom(9000)
            message = dns.message.from_wire(data)
            if message.answer and _answer_in(data, _to_name({name!r}), 0):
                rrset = message.answer[0]
                found = [source[0], int(rrset.rdclass), rrset.ttl, _answer_in(data, _to_name({name!r}), 0)]
                break
    except socket.timeout:
        pass
print(json.dumps(found))
"""


def sh(*argv: str, check: bool = True) -> None:
    subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


@pytest.fixture
def peer(lab: Lab) -> Iterator[Lab]:
    """``ice-peer`` on a veth link to ``ice-client``, torn down afterwards."""
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sh("ip", "netns", "del", PEER_NS, check=False)  # left by a crashed run
        sh("ip", "-n", CLIENT_NS, "link", "del", CLIENT_IF, check=False)
        try:
            sh("ip", "netns", "add", PEER_NS)
            for knob in ("all", "default"):
                sh(
                    "ip",
                    "netns",
                    "exec",
                    PEER_NS,
                    "sysctl",
                    "-qw",
                    f"net.ipv6.conf.{knob}.accept_dad=0",
                )
            sh("ip", "-n", PEER_NS, "link", "set", "lo", "up")
            sh(
                "ip",
                "-n",
                CLIENT_NS,
                "link",
                "add",
                CLIENT_IF,
                "type",
                "veth",
                "peer",
                "name",
                PEER_IF,
                "netns",
                PEER_NS,
            )
            for netns, dev, addr, addr6 in (
                (CLIENT_NS, CLIENT_IF, CLIENT_ADDR, CLIENT_ADDR6),
                (PEER_NS, PEER_IF, PEER_ADDR, PEER_ADDR6),
            ):
                sh("ip", "-n", netns, "addr", "add", f"{addr}/26", "dev", dev)
                sh("ip", "-n", netns, "addr", "add", f"{addr6}/64", "dev", dev, "nodad")
                sh("ip", "-n", netns, "link", "set", dev, "multicast", "on", "up")
            # the peer's only multicast route; the client gets none: the responder must
            # answer out of the interface the query came in on by itself
            sh("ip", "-n", PEER_NS, "route", "add", "224.0.0.0/4", "dev", PEER_IF)
            yield lab
        finally:
            sh("ip", "-n", CLIENT_NS, "link", "del", CLIENT_IF, check=False)
            sh("ip", "netns", "del", PEER_NS, check=False)


@pytest.fixture
def responder(peer: Lab) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    """A responder process in ice-client answering for one IPv4 and one IPv6 name."""
    name, name6 = new_mdns_name(), new_mdns_name()
    code = RESPONDER.format(name=name, address=CLIENT_ADDR, name6=name6, address6=CLIENT_ADDR6)
    with Lab.process([sys.executable, "-c", code], stdin=True) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == "ready", line + (process.stderr.read() if process.stderr else "")
        yield name, name6, process


def resolve(lab: Lab, cases: list[tuple[str, str | None, float]]) -> list[list[object]]:
    result = lab.run_python(RESOLVER.format(cases=cases), netns=PEER_NS, timeout_s=30)
    assert result.returncode == 0, result.stderr
    outcomes: list[list[object]] = json.loads(result.stdout)
    return outcomes


def stop(process: subprocess.Popen[str]) -> str:
    """Close the responder's stdin: it closes itself and reports."""
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    return out


def test_peer_resolves_the_names_and_the_responder_closes_cleanly(
    peer: Lab, responder: tuple[str, str, subprocess.Popen[str]]
) -> None:
    name, name6, process = responder
    results = resolve(
        peer,
        [
            (name, PEER_ADDR, 2.0),
            (name.upper(), None, 2.0),  # out of the peer's multicast route; any case
            (name6, PEER_ADDR6, 2.0),  # over IPv6, ff02::fb
            (name6, PEER_ADDR, 2.0),  # an AAAA record asked over IPv4
        ],
    )
    assert [r[:2] for r in results] == [
        ["ok", CLIENT_ADDR],
        ["ok", CLIENT_ADDR],
        ["ok", CLIENT_ADDR6],
        ["ok", CLIENT_ADDR6],
    ]
    assert all(float(str(r[2])) < 0.5 for r in results), results  # first query answered
    report = stop(process).split()
    assert report[report.index("running") + 1] == "False"
    assert report[report.index("tasks") + 1] == "0"
    assert int(report[report.index("answered") + 1]) >= 4


def test_multicast_query_gets_a_multicast_answer_on_the_link(
    peer: Lab, responder: tuple[str, str, subprocess.Popen[str]]
) -> None:
    name, _, _ = responder
    result = peer.run_python(
        MULTICAST_QUERIER.format(name=name, peer=PEER_ADDR), netns=PEER_NS, timeout_s=30
    )
    assert result.returncode == 0, result.stderr
    source, rdclass, ttl, address = json.loads(result.stdout)
    assert source == CLIENT_ADDR  # sent out of m0, where the query came in
    assert rdclass == 0x8001 and ttl == 120  # IN with cache flush
    assert address == CLIENT_ADDR


def test_unknown_name_fails_within_the_timeout(
    peer: Lab, responder: tuple[str, str, subprocess.Popen[str]]
) -> None:
    unknown = new_mdns_name()
    (outcome,) = resolve(peer, [(unknown, PEER_ADDR, 0.8)])
    kind, message, elapsed = outcome
    assert kind == "error"
    assert unknown in str(message)
    assert 0.75 <= float(str(elapsed)) < 1.3


def test_no_responder_no_answer(peer: Lab) -> None:
    (outcome,) = resolve(peer, [(new_mdns_name(), PEER_ADDR, 0.5)])
    assert outcome[0] == "error"
