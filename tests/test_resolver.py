"""Server URL resolution against a real DNS server: a dnsmasq started for the tests.

dnsmasq answers only names under .test, with addresses from the documentation
ranges, on a loopback address and a high port; its query log tells how many
queries reached it.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dns.asyncresolver
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest

from ice_engine.resolver import (
    NEGATIVE_TTL,
    ResolutionError,
    ResolvedAddress,
    Resolver,
    default_resolver,
    srv_order,
)
from ice_engine.urls import parse_server_url

DNSMASQ = "/usr/sbin/dnsmasq"
TTL = 300
V4, V6 = socket.AF_INET, socket.AF_INET6

RECORDS = [
    "--host-record=dual.test,198.51.100.10,2001:db8::10",
    "--host-record=v4only.test,203.0.113.4",
    "--host-record=v6only.test,2001:db8::6",
    "--host-record=target.test,203.0.113.5",
    "--host-record=first.test,203.0.113.11",
    "--host-record=first-b.test,203.0.113.12,2001:db8::12",
    "--host-record=second.test,203.0.113.13",
    "--host-record=cache.test,198.51.100.20,2001:db8::20",
    "--host-record=expiry.test,198.51.100.21",
    "--host-record=coalesce.test,198.51.100.22,2001:db8::22",
    "--host-record=explicit.test,198.51.100.23",
    "--host-record=multicast.test,239.255.0.1",
    "--host-record=mapped.test,::ffff:198.51.100.30",
    "--host-record=slow.test,198.51.100.31,2001:db8::31",
    "--srv-host=_turn._udp.portzero.test,target.test,0,0,0",
    "--host-record=both.test,198.51.100.32",
    "--srv-host=_stun._udp.both.test,target.test,3479,0,0",
    "--srv-host=_turn._udp.slowbackup.test,first.test,3480,0,0",
    "--srv-host=_turn._udp.slowbackup.test,second.test,3481,1,0",
    "--srv-host=_turn._udp.portzero.test,second.test,3481,10,0",
    "--srv-host=_turn._udp.srv.test,target.test,3479,0,0",
    "--srv-host=_stuns._tcp.srv.test,target.test,5350,0,0",
    "--srv-host=_turn._udp.multi.test,second.test,3481,20,0",
    "--srv-host=_turn._udp.multi.test,first.test,3480,10,5",
    "--srv-host=_turn._udp.multi.test,first-b.test,3482,10,50",
    "--srv-host=_stun._udp.nosvc.test",
    "--srv-host=_stun._udp.dangling.test,missing.test,3478,0,0",
    "--srv-host=_stun._udp.explicit.test,target.test,9999,0,0",
]


@dataclass
class DnsServer:
    address: str
    port: int
    log: Path

    def resolver(
        self,
        timeout: float = 2.0,
        clock: FakeClock | None = None,
        random: Callable[[], float] | None = None,
        port: int | None = None,
    ) -> Resolver:
        """A resolver asking this server (or a proxy of it at `port`)."""
        stub = dns.asyncresolver.Resolver(configure=False)
        stub.nameservers = [self.address]
        stub.port = self.port if port is None else port
        options: dict[str, Any] = {"clock": clock, "random": random}
        given = {name: value for name, value in options.items() if value is not None}
        return Resolver(timeout=timeout, resolver=stub, **given)

    def queries(self, rdtype: str, name: str) -> int:
        """How many queries of this type for this name dnsmasq has logged."""
        time.sleep(0.05)  # dnsmasq writes its log between queries
        pattern = re.compile(rf"query\[{rdtype}\] {re.escape(name)} from ")
        return len(pattern.findall(self.log.read_text()))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
    return port


def _answers(address: str, port: int) -> bool:
    stub = dns.resolver.Resolver(configure=False)
    stub.nameservers = [address]
    stub.port = port
    try:
        stub.resolve("dual.test", "A", lifetime=0.2)
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    if not Path(DNSMASQ).exists() and shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq is not installed (apt-get install dnsmasq-base)")
    if os.geteuid() != 0:
        pytest.skip("dnsmasq tests run as root (dnsmasq drops to --user=root here)")
    directory = tmp_path_factory.mktemp("dnsmasq")
    log = directory / "queries.log"
    for _ in range(5):
        # A random loopback address and port, so parallel runs do not collide.
        address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.53"
        port = _free_port(address)
        log.write_text("")
        process = subprocess.Popen(
            [
                DNSMASQ,
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--pid-file=",
                "--user=root",
                f"--port={port}",
                f"--listen-address={address}",
                "--bind-interfaces",
                "--local=/test/",
                f"--local-ttl={TTL}",
                "--log-queries",
                f"--log-facility={log}",
                *RECORDS,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 5
        while process.poll() is None and time.monotonic() < deadline:
            if _answers(address, port):
                break
            time.sleep(0.05)
        if process.poll() is None and _answers(address, port):
            break
        _stop(process)
    else:
        pytest.fail(
            "dnsmasq did not start: " + (process.stderr.read() if process.stderr else b"").decode()
        )
    try:
        yield DnsServer(address, port, log)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the dnsmasq this fixture started, by its own PID."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr is not None:
        process.stderr.close()


@pytest.fixture
def black_hole() -> Iterator[tuple[str, int]]:
    """A loopback UDP port that receives queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        yield sink.getsockname()


def silent_resolver(address: tuple[str, int], timeout: float) -> Resolver:
    stub = dns.asyncresolver.Resolver(configure=False)
    stub.nameservers = [address[0]]
    stub.port = address[1]
    return Resolver(timeout=timeout, resolver=stub)


async def test_ip_literals_need_no_dns(black_hole: tuple[str, int]) -> None:
    resolver = silent_resolver(black_hole, timeout=5)
    started = time.monotonic()
    assert await resolver.resolve(parse_server_url("stun:203.0.113.9")) == [
        ResolvedAddress("203.0.113.9", 3478, V4)
    ]
    assert await resolver.resolve(parse_server_url("turns:[2001:db8::9]:443")) == [
        ResolvedAddress("2001:db8::9", 443, V6)
    ]
    assert time.monotonic() - started < 2  # no query: the timeout (5 s) never ran


async def test_a_and_aaaa_ipv4_first(dnsmasq: DnsServer) -> None:
    addresses = await dnsmasq.resolver().resolve(parse_server_url("stun:dual.test:3478"))
    assert addresses == [
        ResolvedAddress("198.51.100.10", 3478, V4),
        ResolvedAddress("2001:db8::10", 3478, V6),
    ]


async def test_one_family_missing_is_fine(dnsmasq: DnsServer) -> None:
    resolver = dnsmasq.resolver()
    v4 = await resolver.resolve(parse_server_url("turn:v4only.test:3478"))
    assert v4 == [ResolvedAddress("203.0.113.4", 3478, V4)]
    v6 = await resolver.resolve(parse_server_url("turn:v6only.test:3478"))
    assert v6 == [ResolvedAddress("2001:db8::6", 3478, V6)]


async def test_srv_gives_target_and_alternate_port(dnsmasq: DnsServer) -> None:
    resolver = dnsmasq.resolver()
    turn = await resolver.resolve(parse_server_url("turn:srv.test"))
    assert turn == [ResolvedAddress("203.0.113.5", 3479, V4)]
    stuns = await resolver.resolve(parse_server_url("stuns:srv.test"))
    assert stuns == [ResolvedAddress("203.0.113.5", 5350, V4)]


FIRST = [ResolvedAddress("203.0.113.11", 3480, V4)]
FIRST_B = [ResolvedAddress("203.0.113.12", 3482, V4), ResolvedAddress("2001:db8::12", 3482, V6)]
SECOND = [ResolvedAddress("203.0.113.13", 3481, V4)]


@pytest.mark.parametrize(
    ("draw", "expected"),
    [(0.0, FIRST + FIRST_B + SECOND), (0.99, FIRST_B + FIRST + SECOND)],
    ids=["low-draw", "high-draw"],
)
async def test_srv_targets_in_priority_then_weight_order(
    dnsmasq: DnsServer, draw: float, expected: list[ResolvedAddress]
) -> None:
    """Priority 10 holds first.test (weight 5) and first-b.test (weight 50): a draw at
    the bottom of the weights' range picks the light one first, at the top the heavy;
    second.test (priority 20) comes last either way."""
    resolver = dnsmasq.resolver(random=lambda: draw)
    assert await resolver.resolve(parse_server_url("turn:multi.test")) == expected


def _srv(text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SRV, text)


def test_srv_order_sorts_whatever_order_the_server_used() -> None:
    records = (_srv("20 0 3 c.test."), _srv("10 5 1 a.test."), _srv("0 0 1 ."))
    records += (_srv("10 50 2 b.test."), _srv("5 9 0 portzero.test."))
    assert [r.port for r in srv_order(records, lambda: 0.99)] == [2, 1, 3]


def test_srv_order_shares_by_weight() -> None:
    """RFC 2782: among equal priorities, each target comes first in proportion to its
    weight, so clients spread as the operator meant; weight 0 all but never first."""
    records = (_srv("1 10 1 a.test."), _srv("1 30 2 b.test."), _srv("1 0 3 c.test."))
    draw = random.Random(2782).random
    firsts = [srv_order(records, draw)[0].port for _ in range(4000)]
    assert 0.70 < firsts.count(2) / 4000 < 0.80
    assert 0.20 < firsts.count(1) / 4000 < 0.30
    assert firsts.count(3) == 0
    assert {tuple(r.port for r in srv_order(records, draw)) for _ in range(200)} == {
        (1, 2, 3),
        (2, 1, 3),
    }


async def test_srv_target_with_port_0_is_skipped(dnsmasq: DnsServer) -> None:
    addresses = await dnsmasq.resolver().resolve(parse_server_url("turn:portzero.test"))
    assert addresses == [ResolvedAddress("203.0.113.13", 3481, V4)]


async def test_an_ipv4_mapped_aaaa_is_its_ipv4_address(dnsmasq: DnsServer) -> None:
    addresses = await dnsmasq.resolver().resolve(parse_server_url("stun:mapped.test:3478"))
    assert addresses == [ResolvedAddress("198.51.100.30", 3478, V4)]


#: What a DNS path does to a query: (name or "*", type) -> seconds it is held back, or
#: None to lose it.
Rules = dict[tuple[str, str], float | None]


class _Path(asyncio.DatagramProtocol):
    """A DNS path to dnsmasq that holds back or loses queries as `rules` say."""

    def __init__(self, server: DnsServer, rules: Rules) -> None:
        self.server, self.rules = server, rules
        self.transport: asyncio.DatagramTransport | None = None
        self.forwarding: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        question = dns.message.from_wire(data).question[0]
        name = question.name.to_text(omit_final_dot=True)
        rdtype = dns.rdatatype.to_text(question.rdtype)
        delay = self.rules.get((name, rdtype), self.rules.get(("*", rdtype), 0.0))
        if delay is not None:
            task = asyncio.ensure_future(self._forward(data, addr, delay))
            self.forwarding.add(task)
            task.add_done_callback(self.forwarding.discard)

    async def _forward(self, data: bytes, addr: tuple[str, int], delay: float) -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
            upstream.setblocking(False)
            await loop.sock_connect(upstream, (self.server.address, self.server.port))
            await loop.sock_sendall(upstream, data)
            answer = await loop.sock_recv(upstream, 4096)
        await asyncio.sleep(delay)
        assert self.transport is not None
        self.transport.sendto(answer, addr)


@pytest.fixture
async def dns_path(dnsmasq: DnsServer) -> AsyncIterator[Callable[[Rules], Any]]:
    """Starts a path to dnsmasq with the given rules; gives a resolver asking through it."""
    transports: list[asyncio.BaseTransport] = []

    async def start(rules: Rules) -> Resolver:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Path(dnsmasq, rules), local_addr=(dnsmasq.address, 0)
        )
        transports.append(transport)
        return dnsmasq.resolver(timeout=30, port=transport.get_extra_info("sockname")[1])

    yield start
    for transport in transports:
        transport.close()


LOST = None


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ({("*", "SRV"): LOST}, ["198.51.100.31", "2001:db8::31"]),
        ({("*", "AAAA"): LOST}, ["198.51.100.31"]),
        ({("*", "A"): LOST}, ["2001:db8::31"]),
        ({("*", "SRV"): LOST, ("*", "AAAA"): LOST}, ["198.51.100.31"]),
    ],
)
async def test_a_lost_query_does_not_hold_back_the_answers_in_hand(
    dns_path: Callable[[Rules], Any], rules: Rules, expected: list[str]
) -> None:
    """DNS servers that drop SRV or AAAA queries are common: with a query lifetime as
    long as the server's deadline (2 s), waiting for it would fail a server whose
    addresses came in a millisecond. The others get a grace, then go on without it."""
    resolver = await dns_path(rules)
    started = time.monotonic()
    addresses = await resolver.resolve(parse_server_url("stun:slow.test"))
    assert [a.host for a in addresses] == expected
    assert time.monotonic() - started < 10  # the grace is 0.5 s; the lifetime 30


@pytest.mark.parametrize(
    ("url", "rules", "expected"),
    [
        # An SRV answer a little behind the name's own A: the SRV target, not the A.
        ("stun:both.test", {("*", "SRV"): 0.1}, ["203.0.113.5"]),
        # One family a little behind the other (uncached behind cached): both.
        ("stun:slow.test:3478", {("*", "A"): 0.15}, ["198.51.100.31", "2001:db8::31"]),
        ("stun:slow.test:3478", {("*", "AAAA"): 0.15}, ["198.51.100.31", "2001:db8::31"]),
        # An SRV backup target lost: the primary's addresses go on without it.
        ("turn:slowbackup.test", {("second.test", "A"): LOST}, ["203.0.113.11"]),
    ],
)
async def test_a_late_answer_within_the_grace_is_used(
    dns_path: Callable[[Rules], Any], url: str, rules: Rules, expected: list[str]
) -> None:
    """The grace was as long again as the first answer took, 50 ms at least: an answer
    100 ms behind a cached one was dropped (a whole family's candidates lost, or the A
    record used where SRV said otherwise); and an SRV target's lookup was waited for in
    full even when another target had answered."""
    resolver = await dns_path(rules)
    addresses = await resolver.resolve(parse_server_url(url))
    assert [a.host for a in addresses] == expected


async def test_no_srv_falls_back_to_the_default_port(dnsmasq: DnsServer) -> None:
    addresses = await dnsmasq.resolver().resolve(parse_server_url("stun:dual.test"))
    assert addresses[0] == ResolvedAddress("198.51.100.10", 3478, V4)
    assert dnsmasq.queries("SRV", "_stun._udp.dual.test") >= 1


async def test_explicit_port_skips_srv(dnsmasq: DnsServer) -> None:
    addresses = await dnsmasq.resolver().resolve(parse_server_url("stun:explicit.test:4000"))
    assert addresses == [ResolvedAddress("198.51.100.23", 4000, V4)]
    assert dnsmasq.queries("SRV", "_stun._udp.explicit.test") == 0


async def test_an_answer_that_is_not_unicast_is_no_server(dnsmasq: DnsServer) -> None:
    """A request must not go to a multicast group, as with a multicast IP in the URL."""
    with pytest.raises(ResolutionError, match=r"'multicast.test' resolves only to .*239.255.0.1"):
        await dnsmasq.resolver().resolve(parse_server_url("stun:multicast.test:3478"))


async def test_srv_saying_no_service(dnsmasq: DnsServer) -> None:
    with pytest.raises(ResolutionError, match=r"_stun\._udp\.nosvc\.test.*no usable target"):
        await dnsmasq.resolver().resolve(parse_server_url("stun:nosvc.test"))


async def test_srv_target_that_does_not_resolve(dnsmasq: DnsServer) -> None:
    with pytest.raises(ResolutionError, match=r"missing\.test.*NXDOMAIN"):
        await dnsmasq.resolver().resolve(parse_server_url("stun:dangling.test"))


async def test_nxdomain_names_the_name(dnsmasq: DnsServer) -> None:
    with pytest.raises(ResolutionError, match=r"'nope\.test'.*NXDOMAIN"):
        await dnsmasq.resolver().resolve(parse_server_url("stun:nope.test:3478"))


async def test_timeout(black_hole: tuple[str, int]) -> None:
    resolver = silent_resolver(black_hole, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ResolutionError, match=r"'silent\.test'.*timed out after 1 s"):
        await resolver.resolve(parse_server_url("stun:silent.test:3478"))
    # A and AAAA wait side by side, not one after the other (2 s).
    assert time.monotonic() - started < 1.8


async def test_answers_are_cached_for_their_ttl(dnsmasq: DnsServer) -> None:
    clock = FakeClock()
    resolver = dnsmasq.resolver(clock=clock)
    url = parse_server_url("stun:cache.test:3478")
    first = await resolver.resolve(url)
    assert await resolver.resolve(url) == first
    assert (dnsmasq.queries("A", "cache.test"), dnsmasq.queries("AAAA", "cache.test")) == (1, 1)
    clock.now += TTL - 1
    await resolver.resolve(url)
    assert dnsmasq.queries("A", "cache.test") == 1
    clock.now += 2
    await resolver.resolve(url)
    assert (dnsmasq.queries("A", "cache.test"), dnsmasq.queries("AAAA", "cache.test")) == (2, 2)


async def test_negative_answers_are_cached_briefly(dnsmasq: DnsServer) -> None:
    clock = FakeClock()
    resolver = dnsmasq.resolver(clock=clock)
    url = parse_server_url("stun:gone.test:3478")
    for _ in range(3):
        with pytest.raises(ResolutionError):
            await resolver.resolve(url)
    assert dnsmasq.queries("A", "gone.test") == 1
    clock.now += NEGATIVE_TTL + 1
    with pytest.raises(ResolutionError):
        await resolver.resolve(url)
    assert dnsmasq.queries("A", "gone.test") == 2


async def test_cache_is_shared_across_urls_of_one_host(dnsmasq: DnsServer) -> None:
    resolver = dnsmasq.resolver()
    await resolver.resolve(parse_server_url("stun:expiry.test:3478"))
    turn = await resolver.resolve(parse_server_url("turn:EXPIRY.test:3479?transport=tcp"))
    assert turn == [ResolvedAddress("198.51.100.21", 3479, V4)]
    assert dnsmasq.queries("A", "expiry.test") == 1


async def test_concurrent_lookups_are_coalesced(dnsmasq: DnsServer) -> None:
    resolver = dnsmasq.resolver()
    url = parse_server_url("stun:coalesce.test:3478")
    results = await asyncio.gather(*(resolver.resolve(url) for _ in range(20)))
    assert all(result == results[0] for result in results)
    assert len(results[0]) == 2
    assert dnsmasq.queries("A", "coalesce.test") == 1
    assert dnsmasq.queries("AAAA", "coalesce.test") == 1


async def test_a_cancelled_caller_does_not_cancel_the_others(
    black_hole: tuple[str, int],
) -> None:
    resolver = silent_resolver(black_hole, timeout=0.3)
    url = parse_server_url("stun:shared.test:3478")
    impatient = asyncio.ensure_future(resolver.resolve(url))
    patient = asyncio.ensure_future(resolver.resolve(url))
    await asyncio.sleep(0.05)
    impatient.cancel()
    with pytest.raises(ResolutionError, match="timed out"):
        await patient
    assert impatient.cancelled()


def test_default_resolver_is_shared() -> None:
    assert default_resolver() is default_resolver()


# -- the hosts file ----------------------------------------------------------------------


class _NoDns(dns.asyncresolver.Resolver):
    """Fails the test if DNS is asked at all."""

    def __init__(self) -> None:
        super().__init__(configure=False)

    async def resolve(self, *args: object, **kwargs: object) -> dns.resolver.Answer:
        raise AssertionError(f"DNS was asked: {args}")


HOSTS = """\
# a comment line
127.0.0.1   localhost
198.51.100.30  turn.internal  stun.internal   # trailing comment
2001:db8::30   turn.internal
2001:db8::31   v6.internal
::ffff:198.51.100.33   mapped.internal
fe80::1%eth0   scoped.internal
not-an-address bad.internal
203.0.113.30
"""


def hosts_resolver(tmp_path: Path, text: str = HOSTS) -> tuple[Resolver, Path]:
    path = tmp_path / "hosts"
    path.write_text(text)
    return Resolver(resolver=_NoDns(), hosts=path), path


async def test_a_name_in_the_hosts_file_needs_no_dns(tmp_path: Path) -> None:
    resolver, _ = hosts_resolver(tmp_path)
    # No port: SRV is not asked either, as getaddrinfo would not ask it.
    assert await resolver.resolve(parse_server_url("turn:TURN.internal.")) == [
        ResolvedAddress("198.51.100.30", 3478, V4),
        ResolvedAddress("2001:db8::30", 3478, V6),
    ]
    assert await resolver.resolve(parse_server_url("stun:stun.internal:3479")) == [
        ResolvedAddress("198.51.100.30", 3479, V4)
    ]
    assert await resolver.resolve(parse_server_url("turns:v6.internal")) == [
        ResolvedAddress("2001:db8::31", 5349, V6)
    ]
    # An IPv4-mapped address stands for the IPv4 one, as in a URL or an AAAA record.
    assert await resolver.resolve(parse_server_url("stun:mapped.internal")) == [
        ResolvedAddress("198.51.100.33", 3478, V4)
    ]


async def test_a_name_the_hosts_file_blocks_is_no_server(tmp_path: Path) -> None:
    """`0.0.0.0 name` is how hosts files block a name: not a server, nor a reason to ask
    DNS instead; of a name also listed with a unicast address, that one is kept."""
    text = "0.0.0.0 blocked.internal mixed.internal\n198.51.100.40 mixed.internal\n"
    resolver, _ = hosts_resolver(tmp_path, text)
    with pytest.raises(ResolutionError, match=r"'blocked.internal' resolves only to .*0\.0\.0\.0"):
        await resolver.resolve(parse_server_url("stun:blocked.internal"))
    assert await resolver.resolve(parse_server_url("stun:mixed.internal")) == [
        ResolvedAddress("198.51.100.40", 3478, V4)
    ]


async def test_the_hosts_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    resolver, path = hosts_resolver(tmp_path)
    assert (await resolver.resolve(parse_server_url("stun:stun.internal")))[0].host == (
        "198.51.100.30"
    )
    path.write_text("203.0.113.31 stun.internal moved.internal\n")
    os.utime(path, (time.time() + 5, time.time() + 5))  # a new stamp, however coarse
    assert await resolver.resolve(parse_server_url("stun:moved.internal")) == [
        ResolvedAddress("203.0.113.31", 3478, V4)
    ]


async def test_localhost_is_loopback_even_unlisted(tmp_path: Path) -> None:
    resolver, _ = hosts_resolver(tmp_path, "")
    assert await resolver.resolve(parse_server_url("stun:localhost:3478")) == [
        ResolvedAddress("127.0.0.1", 3478, V4),
        ResolvedAddress("::1", 3478, V6),
    ]
    listed, _ = hosts_resolver(tmp_path, HOSTS)  # listed: the file's say
    assert await listed.resolve(parse_server_url("stun:localhost:3478")) == [
        ResolvedAddress("127.0.0.1", 3478, V4)
    ]
    assert (
        await Resolver(resolver=_NoDns(), hosts=None).resolve(parse_server_url("stun:a.localhost"))
    )[0] == ResolvedAddress("127.0.0.1", 3478, V4)


async def test_names_not_listed_go_to_dns(tmp_path: Path, black_hole: tuple[str, int]) -> None:
    stub = dns.asyncresolver.Resolver(configure=False)
    stub.nameservers = [black_hole[0]]
    stub.port = black_hole[1]
    (tmp_path / "hosts").write_text(HOSTS)  # lines it skips: a scoped address, a bad one
    resolver = Resolver(timeout=0.2, resolver=stub, hosts=tmp_path / "hosts")
    for name in ("scoped.internal", "bad.internal", "elsewhere.test"):
        with pytest.raises(ResolutionError, match=f"{name}.*timed out"):
            await resolver.resolve(parse_server_url(f"stun:{name}:3478"))


async def test_without_a_hosts_file_dns_alone(tmp_path: Path) -> None:
    resolver = Resolver(resolver=_NoDns(), hosts=tmp_path / "absent")
    with pytest.raises(AssertionError, match="DNS was asked"):
        await resolver.resolve(parse_server_url("stun:turn.internal:3478"))


def test_dnspython_is_imported_only_when_a_name_is_looked_up() -> None:
    """It is about a tenth of a second: the CLI and servers given by IP do without it."""
    probe = (
        "import sys, ice_engine, ice_engine.cli, ice_engine.natcheck\n"
        "print(sorted(m for m in sys.modules if m == 'dns' or m.startswith('dns.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    # A gatherer given a server by name imports it when made, not in its first lookup.
    probe = (
        "import sys\n"
        "from ice_engine import Gatherer, IceServer\n"
        "Gatherer([IceServer('stun:198.51.100.10')])\n"
        "print('dns.asyncresolver' in sys.modules)\n"
        "Gatherer([IceServer('stun:stun.lab.test')])\n"
        "print('dns.asyncresolver' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


async def test_a_short_name_is_looked_up_through_resolv_confs_search_list(
    dnsmasq: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`turn:coturn` in Kubernetes (search media.svc.cluster.local, ndots 5), a
    single-label intranet name: the system resolver and browsers find them through the
    search list, which was never used (found by a review)."""
    from ice_engine.urls import parse_server_url

    real = dns.asyncresolver.Resolver

    def as_resolv_conf_says(*_args: Any, **_kwargs: Any) -> dns.asyncresolver.Resolver:
        stub = real(configure=False)  # as from a resolv.conf with "search test"
        stub.nameservers = [dnsmasq.address]
        stub.port = dnsmasq.port
        stub.search = [dns.name.from_text("test")]
        return stub

    monkeypatch.setattr(dns.asyncresolver, "Resolver", as_resolv_conf_says)
    resolver = Resolver(hosts=None)  # no resolver given: resolv.conf's
    addresses = await resolver.resolve(parse_server_url("stun:v4only"))
    assert [(a.host, a.port) for a in addresses] == [("203.0.113.4", 3478)]
