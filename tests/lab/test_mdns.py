"""mDNS host candidate names across a real link: a responder in ice-client, a peer host.

The test adds a namespace ``ice-peer`` joined to ``ice-client`` by a veth pair (``m0`` in
the client, ``m1`` in the peer, 203.0.113.192/26 and 2001:db8:c::/64), so multicast stays
on that link, and deletes both in ``finally``. The tests of a host on two links build
their own namespaces (``mdnst-*``, 203.0.113.200-210) the same way. Runs of this module
are serialised across test sessions by a lock file, since they share the lab and those
names.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
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


# -- a host on two links (RFC 6762 §15) -----------------------------------------------------

HOST_NS, LINK0_NS, LINK1_NS = "mdnst-host", "mdnst-link0", "mdnst-link1"
HOST0, PEER0 = "203.0.113.200", "203.0.113.201"  # on link 0: mdnst-host r0 <-> mdnst-link0 p0
HOST1, PEER1 = "203.0.113.209", "203.0.113.210"  # on link 1: mdnst-host r1 <-> mdnst-link1 p1


def add_link(index: int) -> None:
    """The veth pair of link ``index`` (0 or 1), with its addresses, up."""
    peer_ns = (LINK0_NS, LINK1_NS)[index]
    host_addr, peer_addr = ((HOST0, PEER0), (HOST1, PEER1))[index]
    sh(
        "ip", "-n", HOST_NS, "link", "add", f"r{index}",
        "type", "veth", "peer", "name", f"p{index}", "netns", peer_ns,
    )  # fmt: skip
    for netns, dev, addr in ((HOST_NS, f"r{index}", host_addr), (peer_ns, f"p{index}", peer_addr)):
        sh("ip", "-n", netns, "addr", "add", f"{addr}/29", "dev", dev)
        sh("ip", "-n", netns, "link", "set", dev, "multicast", "on", "up")


@pytest.fixture
def two_links(lab: Lab) -> Iterator[Lab]:
    """``mdnst-host`` on two links, one to ``mdnst-link0`` and one to ``mdnst-link1``; no
    multicast routes anywhere. All deleted afterwards."""
    namespaces = (HOST_NS, LINK0_NS, LINK1_NS)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for netns in namespaces:
            sh("ip", "netns", "del", netns, check=False)  # left by a crashed run
        try:
            for netns in namespaces:
                sh("ip", "netns", "add", netns)
                sh("ip", "-n", netns, "link", "set", "lo", "up")
            add_link(0)
            add_link(1)
            yield lab
        finally:
            for netns in namespaces:
                sh("ip", "netns", "del", netns, check=False)


NAMED_RESPONDER = """
import asyncio, collections, json, socket, sys
from ice_engine.mdns import shared_responder

async def main():
    async with shared_responder() as responder:
        answered = collections.Counter()  # by the interface the query came in on
        handle = responder.handle_query
        def counting(data, port=5353, interface=0):
            reply = handle(data, port, interface)
            if reply is not None:
                answered[socket.if_indextoname(interface) if interface else "?"] += 1
            return reply
        responder.handle_query = counting
        for name, address in {names!r}.items():
            responder.register(name, address)
        await asyncio.sleep(0.1)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    print(json.dumps(answered), flush=True)

asyncio.run(main())
"""

JOINER = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # as Avahi's would be
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
sock.bind(("", 5353))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                socket.inet_aton("224.0.0.251") + socket.inet_aton({address!r}))
print("joined", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def started(code: str, netns: str, ready: str) -> Iterator[subprocess.Popen[str]]:
    with Lab.process([sys.executable, "-c", code], netns, stdin=True) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == ready, line + (process.stderr.read() if process.stderr else "")
        yield process


def resolve_in(lab: Lab, netns: str, cases: list[tuple[str, str | None, float]]) -> list[str]:
    """For each case, the address, or "error"."""
    result = lab.run_python(RESOLVER.format(cases=cases), netns=netns, timeout_s=30)
    assert result.returncode == 0, result.stderr
    return [str(r[1]) if r[0] == "ok" else "error" for r in json.loads(result.stdout)]


def test_each_link_hears_only_of_the_names_of_its_own_addresses(two_links: Lab) -> None:
    """A peer on link 1 asking for the name of the host's address on link 0 got that
    address: the answer went out of the link the query came in on, whatever the name."""
    name0, name1 = new_mdns_name(), new_mdns_name()
    code = NAMED_RESPONDER.format(names={name0: HOST0, name1: HOST1})
    with started(code, HOST_NS, "ready") as process:
        on_link1 = resolve_in(two_links, LINK1_NS, [(name0, PEER1, 0.6), (name1, PEER1, 1.0)])
        on_link0 = resolve_in(two_links, LINK0_NS, [(name1, PEER0, 0.6), (name0, PEER0, 1.0)])
        stop(process)
    assert on_link1 == ["error", HOST1]
    assert on_link0 == ["error", HOST0]


def test_a_link_the_responder_never_joined_gets_no_answer_from_it(two_links: Lab) -> None:
    """Another process joining the group on link 1 (Avahi, say) made the kernel hand the
    responder's socket that link's queries too, and it answered them with link 0's
    address. (IP_MULTICAST_ALL=0 does not stop that here: Linux 6.18 still delivers to
    every socket of an SO_REUSEPORT group; the check of the interface does.)"""
    name0 = new_mdns_name()
    with started(JOINER.format(address=HOST1), HOST_NS, "joined"):
        code = NAMED_RESPONDER.format(names={name0: HOST0})
        with started(code, HOST_NS, "ready") as process:
            on_link1 = resolve_in(two_links, LINK1_NS, [(name0, PEER1, 0.6)])
            on_link0 = resolve_in(two_links, LINK0_NS, [(name0, PEER0, 1.0)])
            answered = json.loads(stop(process))
    assert on_link1 == ["error"] and on_link0 == [HOST0]
    assert "r1" not in answered and answered.get("r0", 0) >= 1, answered


CONTINUAL = """
import asyncio, json
from ice_engine import Gatherer
from ice_engine.mdns import shared_responder

async def main():
    async with Gatherer(mdns=True, continual=True) as gatherer:
        async def consume():
            async for _ in gatherer.gather():
                pass
        task = asyncio.ensure_future(consume())
        last = None
        for _ in range(300):  # 30 s at most
            names = {a: n for n, a in shared_responder().names.items()}
            if names != last:
                print(json.dumps(names), flush=True)
                last = names
            await asyncio.sleep(0.1)
        task.cancel()

asyncio.run(main())
"""


def test_a_link_made_again_with_the_same_address_is_answered_again(two_links: Lab) -> None:
    """Continual gathering: link 1 deleted and made again with the same address (a new
    interface index). The address's new name was never answered: the group was joined
    once per address, and the stale join stopped the new one."""
    lines: queue.Queue[str] = queue.Queue()
    with Lab.process([sys.executable, "-c", CONTINUAL], HOST_NS) as process:
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()

        def names_until(ok: Callable[[dict[str, str]], bool]) -> dict[str, str]:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    names: dict[str, str] = json.loads(lines.get(timeout=0.5))
                    if ok(names):
                        return names
            raise AssertionError("the gatherer's names never got there")

        before = names_until(lambda names: HOST1 in names)[HOST1]
        assert resolve_in(two_links, LINK1_NS, [(before, PEER1, 1.0)]) == [HOST1]
        sh("ip", "-n", HOST_NS, "link", "del", "r1")
        names_until(lambda names: HOST1 not in names)  # the address went: its name too
        add_link(1)
        after = names_until(lambda names: HOST1 in names)[HOST1]
        assert after != before
        outcome = resolve_in(two_links, LINK1_NS, [(after, PEER1, 2.0), (before, PEER1, 0.5)])
    assert outcome == [HOST1, "error"]


def test_resolve_says_at_once_that_a_query_cannot_be_sent(two_links: Lab) -> None:
    """No multicast route and no interface_address: every send failed unseen, and the
    error came after the whole timeout as 'not resolved within 2 s'."""
    code = """
import asyncio, time
from ice_engine.mdns import resolve_mdns
async def main():
    start = time.monotonic()
    try:
        await resolve_mdns("0c0d6b8e-5c1f-4c79-a7f4-3a0e5d6c7b8a.local", timeout=2.0)
    except OSError as error:
        print(type(error).__name__, error.errno, round(time.monotonic() - start, 2), error)
asyncio.run(main())
"""
    result = two_links.run_python(code, netns=LINK1_NS, timeout_s=30)
    assert result.returncode == 0, result.stderr
    kind, number, elapsed, text = result.stdout.split(" ", 3)
    assert kind == "OSError" and int(number) == errno.ENETUNREACH
    assert float(elapsed) < 0.5
    assert "could not be sent to 224.0.0.251" in text and "interface_address" in text
