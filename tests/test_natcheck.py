"""RFC 5780 NAT behaviour discovery: the sans-I/O core against a simulated NAT and server,
and the asyncio driver and CLI against a fake RFC 5780 server on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ice_engine import stun
from ice_engine.natcheck import (
    CHANGE_IP,
    CHANGE_PORT,
    Datagram,
    NatBehaviour,
    NatCheck,
    NatCheckError,
    _failure_text,
    discover_nat,
)
from ice_engine.resolver import Resolver

Address = tuple[str, int]
PRIMARY = ("198.51.100.10", 3478)
OTHER = ("198.51.100.11", 3479)
LOCAL = ("203.0.113.2", 5000)
PUBLIC_IP = "203.0.113.1"
BEHAVIOURS = ("endpoint-independent", "address-dependent", "address-and-port-dependent")


def answer(
    request: bytes,
    mapped: Address,
    *,
    other: Address | None = OTHER,
    transaction_id: bytes | None = None,
    error: int | None = None,
) -> bytes:
    message = stun.parse(request)
    tid = transaction_id or message.transaction_id
    if error is not None:
        return stun.encode(
            stun.Method.BINDING,
            stun.MessageClass.ERROR,
            tid,
            [(stun.Attr.ERROR_CODE, stun.error_code_value(error, "Unknown Attribute"))],
        )
    attributes = [(stun.Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value(*mapped, tid))]
    if other is not None:
        attributes.append((stun.Attr.OTHER_ADDRESS, stun.address_value(*other)))
    return stun.encode(stun.Method.BINDING, stun.MessageClass.SUCCESS, tid, attributes)


def change_flags(request: bytes) -> int:
    value = stun.parse(request).get(stun.Attr.CHANGE_REQUEST)
    return 0 if value is None else int(struct.unpack("!I", value)[0])


@dataclass
class World:
    """One client behind a NAT (or none) and an RFC 5780 server, answering at once."""

    mapping: str = "endpoint-independent"
    filtering: str = "address-and-port-dependent"
    nat: bool = True
    rfc5780: bool = True
    honour_change: bool = True
    honour_change_ip: bool = True
    change_error: int | None = None
    drop: Callable[[Datagram, int], bool] = lambda datagram, count: False
    """Drop this outgoing datagram (count: how many times this request was sent)."""
    ports: Iterator[int] = field(default_factory=lambda: itertools.count(40000))
    mappings: dict[tuple[object, ...], int] = field(default_factory=dict)
    sent_to: set[Address] = field(default_factory=set)
    sends: dict[bytes, int] = field(default_factory=dict)

    def public(self, destination: Address) -> Address:
        if not self.nat:
            return LOCAL
        key: tuple[object, ...] = {
            "endpoint-independent": (),
            "address-dependent": (destination[0],),
            "address-and-port-dependent": destination,
        }[self.mapping]
        if key not in self.mappings:
            self.mappings[key] = next(self.ports)
        return PUBLIC_IP, self.mappings[key]

    def lets_in(self, source: Address) -> bool:
        if self.filtering == "endpoint-independent":
            return True
        if self.filtering == "address-dependent":
            return source[0] in {ip for ip, _ in self.sent_to}
        return source in self.sent_to

    def send(self, datagram: Datagram) -> list[tuple[bytes, Address]]:
        tid = datagram.data[8:20]
        self.sends[tid] = self.sends.get(tid, 0) + 1
        if self.drop(datagram, self.sends[tid]):
            return []
        self.sent_to.add(datagram.address)
        mapped = self.public(datagram.address)
        flags = change_flags(datagram.data)
        if flags and self.change_error is not None:
            return [(answer(datagram.data, mapped, error=self.change_error), datagram.address)]
        ip, port = datagram.address
        if self.honour_change:
            if flags & CHANGE_IP and self.honour_change_ip:
                ip = OTHER[0] if ip == PRIMARY[0] else PRIMARY[0]
            if flags & CHANGE_PORT:
                port = OTHER[1] if port == PRIMARY[1] else PRIMARY[1]
        source = (ip, port)
        if not self.lets_in(source):
            return []
        other = OTHER if self.rfc5780 else None
        return [(answer(datagram.data, mapped, other=other), source)]


def run(
    check: NatCheck,
    world: World,
    *,
    limit: float = 60.0,
    unroutable: Callable[[Address], bool] = lambda address: False,
) -> tuple[NatBehaviour, float]:
    """Drive the core to the end with a simulated clock; returns the result and the end time.

    A datagram to an `unroutable` address is refused as the socket refuses it."""
    now = 0.0
    outgoing = check.start(now)
    while True:
        while outgoing:
            datagram, *outgoing = outgoing
            if unroutable(datagram.address):
                outgoing += check.send_failed(datagram, "network is unreachable", now)
                continue
            for data, source in world.send(datagram):
                outgoing += check.receive(data, source, now)
        if check.done:
            return check.result(), now
        timer = check.timer
        assert timer is not None and now <= timer <= limit
        now = timer
        outgoing = check.poll(now)


def check_for(**kwargs: float) -> NatCheck:
    return NatCheck(PRIMARY, LOCAL, **kwargs)


@pytest.mark.parametrize("mapping", BEHAVIOURS)
@pytest.mark.parametrize("filtering", BEHAVIOURS)
def test_every_mapping_and_filtering_is_classified(mapping: str, filtering: str) -> None:
    world = World(mapping=mapping, filtering=filtering)
    result, _ = run(check_for(), world)
    assert (result.mapping, result.filtering) == (mapping, filtering)
    assert result.answered and result.rfc5780
    assert result.other_address == OTHER
    assert result.mapped == (PUBLIC_IP, 40000)
    assert result.notes == ()
    names = [p.name for p in result.probes]
    assert names == [
        "test I",
        "filtering test II",
        "filtering test III",
        "mapping test II",
        "mapping test III",
    ]
    mapped = result.mapped_addresses
    assert mapped["test I"] == result.mapped
    if mapping == "endpoint-independent":
        assert mapped["mapping test II"] == result.mapped
        assert result.probes[-1].abandoned  # test III is not needed
    else:
        assert mapped["mapping test II"] != result.mapped
    json.dumps(result.to_json())


def test_the_text_report_names_each_test_and_its_outcome() -> None:
    """`ice-engine nat` prints `to_text()`. An abandoned test was "already classified"
    even where a failure had left the result unknown."""
    result, _ = run(check_for(), World(mapping="endpoint-independent"))
    text = result.to_text()
    assert "mapping    endpoint-independent" in text
    assert f"  filtering test II   to {PRIMARY[0]}:{PRIMARY[1]} change ip+port: " in text
    assert f"  filtering test III  to {PRIMARY[0]}:{PRIMARY[1]} change port: " in text
    assert text.splitlines()[-1] == (
        f"  mapping test III    to {OTHER[0]}:{OTHER[1]}: "
        "not waited for (it could not change the result)"
    )


def test_requests_go_where_rfc_5780_says() -> None:
    world = World()
    result, _ = run(check_for(), world)
    probes = {p.name: p for p in result.probes}
    assert probes["test I"].destination == PRIMARY and probes["test I"].change_request == 0
    assert probes["filtering test II"].destination == PRIMARY
    assert probes["filtering test II"].change_request == CHANGE_IP | CHANGE_PORT
    assert probes["filtering test III"].destination == PRIMARY
    assert probes["filtering test III"].change_request == CHANGE_PORT
    assert probes["mapping test II"].destination == (OTHER[0], PRIMARY[1])
    assert probes["mapping test III"].destination == OTHER
    assert all(p.change_request == 0 for p in result.probes if p.name.startswith("mapping"))


def test_filtering_runs_before_anything_is_sent_to_the_other_address() -> None:
    """Once the client has sent to the other address, a NAT lets its answers in."""
    order: list[tuple[Address, int]] = []
    world = World(filtering="address-and-port-dependent")
    original = world.send

    def send(datagram: Datagram) -> list[tuple[bytes, Address]]:
        order.append((datagram.address, change_flags(datagram.data)))
        return original(datagram)

    world.send = send  # type: ignore[method-assign]
    result, _ = run(check_for(), world)
    assert result.filtering == "address-and-port-dependent"
    first_to_other = min(i for i, (address, _) in enumerate(order) if address[0] == OTHER[0])
    assert all(flags == 0 for _, flags in order[first_to_other:])


def test_no_nat_when_the_mapped_address_is_the_local_one() -> None:
    world = World(nat=False, filtering="endpoint-independent")
    result, _ = run(check_for(), world)
    assert result.mapping == "no NAT"
    assert result.filtering == "endpoint-independent"  # no firewall either
    assert [p.name for p in result.probes] == ["test I", "filtering test II", "filtering test III"]


def test_a_firewall_without_nat_still_has_its_filtering_classified() -> None:
    world = World(nat=False, filtering="address-dependent")
    result, _ = run(check_for(), world)
    assert (result.mapping, result.filtering) == ("no NAT", "address-dependent")


def test_lost_requests_are_retransmitted() -> None:
    world = World(mapping="address-dependent", filtering="endpoint-independent")
    world.drop = lambda datagram, count: count <= 2  # the first two copies of every request
    result, end = run(check_for(), world)
    assert (result.mapping, result.filtering) == ("address-dependent", "endpoint-independent")
    assert all(p.transmissions == 3 for p in result.probes if p.answered)
    assert end == pytest.approx(3 * 0.75)  # 0.25 + 0.5 per test, three phases


def test_retransmissions_follow_the_timing_and_stop_at_the_deadline() -> None:
    world = World()
    world.drop = lambda datagram, count: True
    result, end = run(check_for(timeout=3.0), world)
    assert not result.answered
    assert result.mapping == result.filtering == "unknown"
    assert result.probes[0].transmissions == 4  # at 0, 0.25, 0.75 and 1.75 s
    assert end == pytest.approx(3.0)
    assert world.sends == {result_tid(world): 4}
    assert "did not answer test I" in result.notes[0]


def result_tid(world: World) -> bytes:
    [tid] = world.sends
    return tid


def test_answers_with_another_transaction_id_are_ignored() -> None:
    check = check_for()
    [request] = check.start(0.0)
    forged = answer(request.data, ("203.0.113.66", 1), transaction_id=b"\x01" * 12)
    assert check.receive(forged, PRIMARY, 0.01) == []
    assert not check.done and check.result().mapped is None
    # The real answer after it is the one used.
    follow = check.receive(answer(request.data, (PUBLIC_IP, 40000)), PRIMARY, 0.02)
    assert len(follow) == 2
    assert check.result().mapped == (PUBLIC_IP, 40000)
    # A duplicate of an answer already taken changes nothing.
    assert check.receive(answer(request.data, ("203.0.113.66", 1)), PRIMARY, 0.03) == []
    assert check.result().mapped == (PUBLIC_IP, 40000)


def test_garbage_and_requests_are_ignored() -> None:
    check = check_for()
    [request] = check.start(0.0)
    assert check.receive(b"not stun at all", PRIMARY, 0.01) == []
    assert check.receive(request.data, PRIMARY, 0.01) == []  # a request, not a response
    assert check.receive(request.data[:-1], PRIMARY, 0.01) == []  # truncated
    assert not check.done


def test_wrong_ids_in_every_phase_do_not_classify() -> None:
    """A server (or an attacker) answering with ids never sent: nothing counts."""
    world = World(filtering="endpoint-independent")
    original = world.send

    def send(datagram: Datagram) -> list[tuple[bytes, Address]]:
        answers = original(datagram)
        forged = [
            (answer(datagram.data, ("203.0.113.66", 1), transaction_id=b"\x02" * 12), source)
            for _, source in answers
        ]
        if datagram.address != PRIMARY or change_flags(datagram.data):
            return forged  # only the forged answer to anything but test I
        return forged + answers

    world.send = send  # type: ignore[method-assign]
    result, _ = run(check_for(), world)
    assert result.mapped == (PUBLIC_IP, 40000)
    assert result.filtering == "address-and-port-dependent"  # no true answer came in
    assert result.mapping == "unknown"
    assert any("mapping test II failed" in note for note in result.notes)


def test_a_server_without_other_address() -> None:
    world = World(rfc5780=False)
    result, end = run(check_for(), world)
    assert result.answered and not result.rfc5780
    assert result.other_address is None
    assert result.mapped == (PUBLIC_IP, 40000)
    assert result.mapping == "unknown" and result.filtering == "unknown"
    assert "does not support RFC 5780" in result.notes[0]
    assert [p.name for p in result.probes] == ["test I"]  # nothing else was tried
    assert end == 0.0
    assert "could not be tested" in result.summary()


def test_a_server_without_other_address_still_tells_there_is_no_nat() -> None:
    result, _ = run(check_for(), World(rfc5780=False, nat=False))
    assert result.mapping == "no NAT" and result.filtering == "unknown"
    assert not result.rfc5780


def test_a_server_ignoring_change_request_gives_unknown_filtering() -> None:
    world = World(honour_change=False, filtering="endpoint-independent")
    result, _ = run(check_for(), world)
    assert result.filtering == "unknown"
    assert result.mapping == "endpoint-independent"
    assert any("as CHANGE-REQUEST asked" in note for note in result.notes)


def test_a_server_changing_only_the_port_gives_unknown_filtering() -> None:
    world = World(honour_change_ip=False, filtering="endpoint-independent")
    result, _ = run(check_for(), world)
    assert result.filtering == "unknown"  # not "address-dependent" from test III alone
    assert any("filtering test II: answered from" in note for note in result.notes)


def test_an_error_response_to_change_request() -> None:
    world = World(change_error=420)
    result, _ = run(check_for(), world)
    assert result.filtering == "unknown"
    assert any("420" in note for note in result.notes)
    assert result.mapping == "endpoint-independent"


def test_an_error_response_to_test_one() -> None:
    check = check_for()
    [request] = check.start(0.0)
    check.receive(answer(request.data, LOCAL, error=400), PRIMARY, 0.01)
    assert check.done
    result = check.result()
    assert not result.answered and result.mapping == "unknown"
    assert "400" in result.notes[0]


def test_a_mapped_address_that_is_not_unicast_is_no_finding() -> None:
    """A server answering 0.0.0.0:9 made `nat` report that address and "there is a NAT"."""
    check = check_for()
    [request] = check.start(0.0)
    check.receive(answer(request.data, ("0.0.0.0", 9)), PRIMARY, 0.01)
    assert check.done
    result = check.result()
    assert result.mapped is None and result.mapping == "unknown"
    assert "answer to test I was no use" in result.notes[0]
    assert "0.0.0.0:9 is unspecified" in result.notes[0]
    # the CLI's line: it said "no answer from ...", of a server that had answered
    why = result.probes[0].error
    assert _failure_text((PRIMARY, why), 1.0) == (
        f"{PRIMARY[0]}:{PRIMARY[1]} answered with a {why}"
    )


def test_filtering_waits_for_its_deadline_only_when_it_must() -> None:
    _, fast = run(check_for(timeout=2.0), World(filtering="endpoint-independent"))
    assert fast == 0.0
    _, slow = run(check_for(timeout=2.0), World(filtering="address-dependent"))
    assert slow == pytest.approx(2.0)  # test II may still be answered until its deadline
    _, slowest = run(check_for(timeout=2.0), World(filtering="address-and-port-dependent"))
    assert slowest == pytest.approx(2.0)


def test_other_address_that_does_not_differ() -> None:
    check = check_for()
    [request] = check.start(0.0)
    check.receive(answer(request.data, (PUBLIC_IP, 1), other=(PRIMARY[0], 3479)), PRIMARY, 0.0)
    assert check.done
    result = check.result()
    assert result.mapping == "unknown" and result.rfc5780
    assert "does not differ" in result.notes[0]


def test_bad_timeout_and_double_start() -> None:
    with pytest.raises(ValueError):
        NatCheck(PRIMARY, LOCAL, timeout=0)
    check = check_for()
    check.start(0.0)
    with pytest.raises(RuntimeError):
        check.start(0.0)


def test_ipv6_addresses_are_compared_in_canonical_form() -> None:
    check = NatCheck(("2001:db8:b::10", 3478), ("2001:0db8:000a::2", 5000))
    [request] = check.start(0.0)
    check.receive(
        answer(request.data, ("2001:db8:a::2", 5000), other=None),
        ("2001:db8:b::10", 3478, 0, 0),
        0.0,
    )
    assert check.result().mapping == "no NAT"


# -- the asyncio driver and the CLI, against a fake RFC 5780 server on loopback ---------


class FakeServer:
    """Answers Binding requests on 127.0.0.1 and 127.0.0.2, each on two ports, honouring
    CHANGE-REQUEST; without `rfc5780` it sends no OTHER-ADDRESS."""

    def __init__(
        self,
        *,
        rfc5780: bool = True,
        advertise: Address | None = None,
        mapped: Address | None = None,
    ) -> None:
        self.rfc5780 = rfc5780
        self.advertise = advertise  # an OTHER-ADDRESS to give in place of the real one
        self.mapped = mapped  # a mapping to report in place of the client's own address
        self.sockets: dict[Address, socket.socket] = {}
        for _ in range(20):
            try:
                self._open()
                break
            except OSError:
                self.close()
        else:  # pragma: no cover
            pytest.skip("no pair of free ports on 127.0.0.1 and 127.0.0.2")
        self.primary = ("127.0.0.1", self.ports[0])
        self.other = ("127.0.0.2", self.ports[1])
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _open(self) -> None:
        first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        first.bind(("127.0.0.1", 0))
        second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            second.bind(("127.0.0.1", 0))
        except OSError:
            first.close()
            raise
        self.ports = (first.getsockname()[1], second.getsockname()[1])
        self.sockets = {("127.0.0.1", self.ports[0]): first, ("127.0.0.1", self.ports[1]): second}
        for port in self.ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sockets[("127.0.0.2", port)] = sock
            sock.bind(("127.0.0.2", port))

    def _serve(self) -> None:
        import selectors

        selector = selectors.DefaultSelector()
        for address, sock in self.sockets.items():
            selector.register(sock, selectors.EVENT_READ, address)
        while not self._stop:
            for key, _ in selector.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data, client = sock.recvfrom(2048)
                except OSError:
                    continue
                ip, port = key.data
                flags = change_flags(data)
                if flags & CHANGE_IP:
                    ip = "127.0.0.2" if ip == "127.0.0.1" else "127.0.0.1"
                if flags & CHANGE_PORT:
                    port = self.ports[1] if port == self.ports[0] else self.ports[0]
                other = (self.advertise or self.other) if self.rfc5780 else None
                mapped = self.mapped or client
                self.sockets[(ip, port)].sendto(answer(data, mapped, other=other), client)
        selector.close()

    def close(self) -> None:
        self._stop = True
        if hasattr(self, "thread"):
            self.thread.join()
        for sock in self.sockets.values():
            sock.close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    running = FakeServer()
    yield running
    running.close()


def url(address: Address) -> str:
    return f"stun:{address[0]}:{address[1]}"


async def test_discover_nat_on_loopback(server: FakeServer) -> None:
    result = await discover_nat(url(server.primary), local_address="127.0.0.1", timeout=1.0)
    assert result.mapping == "no NAT"
    assert result.filtering == "endpoint-independent"
    assert result.other_address == server.other and result.rfc5780
    assert result.mapped == result.local
    assert result.server == server.primary


async def test_discover_nat_picks_the_routes_local_address(server: FakeServer) -> None:
    result = await discover_nat(url(server.primary), timeout=1.0)
    assert result.local[0] == "127.0.0.1"
    assert result.mapping == "no NAT"


async def test_an_ipv4_mapped_local_address_is_the_ipv4_one(server: FakeServer) -> None:
    """`--local-address ::ffff:203.0.113.2` failed: "has no address of the family"."""
    result = await discover_nat(url(server.primary), local_address="::ffff:127.0.0.1", timeout=1.0)
    assert result.local[0] == "127.0.0.1"
    assert result.mapping == "no NAT"
    with pytest.raises(ValueError, match="specific one"):
        await discover_nat(url(server.primary), local_address="::ffff:0.0.0.0")


async def test_discover_nat_without_rfc_5780() -> None:
    plain = FakeServer(rfc5780=False)
    try:
        result = await discover_nat(url(plain.primary), timeout=1.0)
    finally:
        plain.close()
    assert not result.rfc5780 and result.mapping == "no NAT" and result.filtering == "unknown"


async def test_discover_nat_errors() -> None:
    with pytest.raises(ValueError, match="stun:"):
        await discover_nat("turn:127.0.0.1")
    with pytest.raises(ValueError):
        await discover_nat("stun:127.0.0.1:99999")
    with pytest.raises(ValueError, match="not an IP address"):
        await discover_nat("stun:127.0.0.1", local_address="nowhere")
    # A bool was taken for 1 s, and an int past float's range raised OverflowError.
    for timeout in (-1, True, 10**400, float("nan")):
        with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
            await discover_nat("stun:127.0.0.1", timeout=timeout)
    with pytest.raises(ValueError, match="not of one IP version"):
        await discover_nat("stun:127.0.0.1", local_address="::1")
    with pytest.raises(ValueError, match="no network interface"):
        await discover_nat("stun:[::1]", local_address="fe80::1%a\x00b")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(NatCheckError, match="no answer"):
            await asyncio.wait_for(discover_nat(url(silent.getsockname()), timeout=0.3), timeout=5)
    finally:
        silent.close()


@pytest.mark.skipif(sys.platform != "linux", reason="IP_RECVERR is Linux's")
async def test_discover_nat_fails_at_an_icmp_error_not_at_the_deadline() -> None:
    """`ice-engine nat` against a closed port waited its whole timeout, then said "no
    answer within 3 s"; `gather` fails the same server at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()
    with pytest.raises(NatCheckError) as raised:
        await asyncio.wait_for(discover_nat(url(closed), timeout=60.0), timeout=30)
    assert str(raised.value) == f"no answer from 127.0.0.1:{closed[1]}: ICMP port unreachable"


def hosts_resolver(tmp_path: Path, *addresses: str) -> Resolver:
    """A resolver whose hosts file gives NAME these addresses, in this order (IPv4 first)."""
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"{address} {NAME}\n" for address in addresses))
    return Resolver(hosts=hosts)


NAME = "natbackup.lab.test"


async def test_a_silent_first_address_gives_way_to_the_next(
    server: FakeServer, tmp_path: Path
) -> None:
    """`discover_nat` tried only the first address: a dead one failed the check."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.3", server.primary[1]))  # never read: no answer, no ICMP
        resolver = hosts_resolver(tmp_path, "127.0.0.3", server.primary[0])
        started = time.monotonic()
        result = await discover_nat(
            f"stun:{NAME}:{server.primary[1]}", timeout=0.5, resolver=resolver
        )
    assert time.monotonic() - started >= 0.5  # the first one had its whole timeout
    assert result.server == server.primary and result.mapping == "no NAT"
    assert result.filtering == "endpoint-independent"  # the other tests went to the second
    assert result.other_address == server.other
    silent_one = f"127.0.0.3:{server.primary[1]}"
    assert result.notes == (
        f"No answer from {silent_one} within 0.5 s, so the next address was tried.",
    )


async def test_an_address_that_answers_with_an_error_is_not_said_to_be_silent(
    server: FakeServer, tmp_path: Path
) -> None:
    """The note said "No answer from 127.0.0.3:...: 500 Try Later": it did answer."""

    def refuse(sock: socket.socket) -> None:
        data, source = sock.recvfrom(2048)
        transaction_id = stun.parse(data).transaction_id
        error = [(stun.Attr.ERROR_CODE, stun.error_code_value(500, "Try Later"))]
        sock.sendto(
            stun.encode(stun.Method.BINDING, stun.MessageClass.ERROR, transaction_id, error),
            source,
        )

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as refusing:
        refusing.bind(("127.0.0.3", server.primary[1]))
        thread = threading.Thread(target=refuse, args=(refusing,))
        thread.start()
        resolver = hosts_resolver(tmp_path, "127.0.0.3", server.primary[0])
        target = f"stun:{NAME}:{server.primary[1]}"
        result = await discover_nat(target, timeout=5, resolver=resolver)
        thread.join()
    assert result.notes == (
        f"127.0.0.3:{server.primary[1]} answered 500 Try Later, so the next address was tried.",
    )


async def test_an_icmp_error_moves_on_to_the_next_address_at_once(
    server: FakeServer, tmp_path: Path
) -> None:
    resolver = hosts_resolver(tmp_path, "127.0.0.3", server.primary[0])  # 127.0.0.3: closed
    started = time.monotonic()
    result = await discover_nat(f"stun:{NAME}:{server.primary[1]}", timeout=30, resolver=resolver)
    assert time.monotonic() - started < 10
    assert result.server == server.primary and result.answered
    assert "ICMP port unreachable" in result.notes[0]


async def test_when_no_address_answers_the_error_names_each(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.3", 0))
        port = silent.getsockname()[1]
        resolver = hosts_resolver(tmp_path, "127.0.0.3", "127.0.0.4", "::1")
        with pytest.raises(NatCheckError) as raised:
            await discover_nat(f"stun:{NAME}:{port}", timeout=0.3, resolver=resolver)
    assert str(raised.value) == (
        f"every address of {NAME} failed: no answer from 127.0.0.3:{port} within 0.3 s; "
        f"no answer from 127.0.0.4:{port}: ICMP port unreachable; "
        f"no answer from [::1]:{port}: ICMP port unreachable"
    )


async def test_only_addresses_of_the_local_ip_version_are_tried(
    server: FakeServer, tmp_path: Path
) -> None:
    resolver = hosts_resolver(tmp_path, server.primary[0], "::1")
    target = f"stun:{NAME}:{server.primary[1]}"
    with pytest.raises(NatCheckError) as raised:  # not the IPv4 server that answers
        await discover_nat(target, local_address="::1", timeout=5, resolver=resolver)
    assert str(raised.value) == f"no answer from [::1]:{server.primary[1]}: ICMP port unreachable"
    v4only = hosts_resolver(tmp_path, server.primary[0])
    with pytest.raises(NatCheckError, match="has no address of the family"):
        await discover_nat(target, local_address="::1", resolver=v4only)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ice_engine", "nat", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_cli_json(server: FakeServer) -> None:
    result = cli("--server", url(server.primary), "--json", "--timeout", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mapping"] == "no NAT"
    assert report["filtering"] == "endpoint-independent"
    assert report["rfc5780"] is True
    assert report["otherAddress"] == f"{server.other[0]}:{server.other[1]}"
    assert [p["name"] for p in report["probes"]] == [
        "test I",
        "filtering test II",
        "filtering test III",
    ]


def test_cli_text(server: FakeServer) -> None:
    result = cli("--server", url(server.primary), "--local-address", "127.0.0.1", "--timeout", "1")
    assert result.returncode == 0, result.stderr
    assert "mapping    no NAT" in result.stdout
    assert "filtering  endpoint-independent" in result.stdout
    assert "RFC 5780: yes" in result.stdout


@pytest.mark.parametrize(
    ("args", "status", "text"),
    [
        (("--server", "stun:"), 2, "empty host"),
        (("--server", "http://x"), 2, "unknown scheme"),
        (("--server", "turn:127.0.0.1"), 2, "stun: URL"),
        (("--server", "stun:127.0.0.1", "--timeout", "0"), 2, "positive"),
        (("--server", "stun:127.0.0.1", "--local-address", "x"), 2, "not an IP address"),
        (("--server", "stun:127.0.0.1", "--local-address", "0.0.0.0"), 2, "specific one"),
        (("--server", "stun:127.0.0.1", "--local-address", "224.0.0.1"), 2, "a unicast one"),
        (("--server", "stun:127.0.0.1", "--local-address", "255.255.255.255"), 2, "unicast"),
        (("--server", "stun:[::1]", "--local-address", "ff02::1"), 2, "a unicast one"),
        (("--server", "stun:127.0.0.1", "--local-address", "::1"), 2, "not of one IP version"),
        (("--server", "stun:[::1]", "--local-address", "127.0.0.1"), 2, "not of one IP version"),
        (("--server", "stun:[::1]", "--local-address", "fe80::1"), 2, "needs its interface"),
        (("--server", "stun:[::1]", "--local-address", "fe80::1%no-such-if"), 2, "no network"),
        (("--server", "stun:[::1]", "--local-address", "fe80::1%4000000000"), 2, "no network"),
        ((), 2, "the following arguments are required: --server"),
        (("--bogus",), 2, "unrecognized arguments: --bogus"),
        (("--server", "stun:127.0.0.1", "--bogus"), 2, "unrecognized arguments: --bogus"),
        (("--server", "stun:127.0.0.1", "--local-port", "70000"), 2, "0..65535"),
        (("--server", "stun:127.0.0.1:9", "--timeout", "0.3"), 1, "no answer"),
        (("--server", "stun:127.0.0.1", "--local-address", "203.0.113.99"), 1, "ice-engine:"),
    ],
)
def test_cli_errors_are_one_line(args: tuple[str, ...], status: int, text: str) -> None:
    result = cli(*args)
    assert result.returncode == status, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert text in result.stderr
    assert "Traceback" not in result.stderr


def test_an_other_address_the_socket_cannot_send_to() -> None:
    """No route to the server's other address: the mapping tests fail at once with the
    reason, and what was learnt (the mapping, the filtering) is kept."""
    result, end = run(check_for(), World(), unroutable=lambda address: address[0] == OTHER[0])
    probes = {p.name: p for p in result.probes}
    assert result.answered and result.mapped is not None
    assert result.filtering == "address-and-port-dependent"
    assert result.mapping == "unknown"
    assert any("could not be sent: network is unreachable" in note for note in result.notes)
    assert probes["mapping test II"].error == "could not be sent: network is unreachable"
    assert probes["mapping test II"].transmissions == 1
    assert probes["mapping test III"].abandoned  # no longer needed once test II failed
    _, usual = run(check_for(), World())
    assert end <= usual  # no waiting on the requests that could not be sent


async def test_discover_nat_when_the_other_address_cannot_be_sent_to() -> None:
    """The socket refuses to send to the server's OTHER-ADDRESS (here the broadcast
    address, refused without SO_BROADCAST, so nothing reaches the wire): the run still
    ends with what it learnt, and says why the mapping is unknown, instead of failing
    with the OSError."""
    # A mapping unlike the local address (a NAT, as the tests see it) sends the mapping
    # tests to the other address.
    odd = FakeServer(advertise=("255.255.255.255", 3479), mapped=("127.0.0.9", 40000))
    try:
        result = await discover_nat(url(odd.primary), local_address="127.0.0.1", timeout=1.0)
    finally:
        odd.close()
    assert result.answered and result.mapping == "unknown"
    mapping = [p for p in result.probes if p.name.startswith("mapping test")]
    assert mapping[0].error == "could not be sent: permission denied", result.probes
    assert any("could not be sent" in note for note in result.notes), result.notes
