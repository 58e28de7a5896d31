"""The mDNS responder's packet logic and the name helpers (no sockets: see tests/lab)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
import time
import uuid

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ice_engine.mdns as mdns
from ice_engine.mdns import (
    _IN_PKTINFO,
    _IP_PKTINFO,
    _MAX_DATAGRAM,
    _MAX_QUESTIONS,
    LEGACY_TTL_S,
    MDNS_PORT,
    RECORD_TTL_S,
    MdnsResolutionError,
    MdnsResponder,
    _answer_in,
    _query_bytes,
    is_mdns_candidate_address,
    new_mdns_name,
    resolve_mdns,
    shared_responder,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QU = 0x8000
FLUSH = 0x8000

IPV4 = "203.0.113.193"
IPV6 = "2001:db8:c::1"


def query(
    *questions: tuple[str, str],
    qu: bool = False,
    query_id: int = 0,
    known: tuple[str, str, int] | None = None,
) -> bytes:
    """A query's wire form; ``known`` = (name, address, ttl) adds a known answer."""
    message = dns.message.Message(id=query_id)
    for name, rdtype in questions:
        rdclass = dns.rdataclass.RdataClass.make(dns.rdataclass.IN | (QU if qu else 0))
        message.question.append(
            dns.rrset.RRset(dns.name.from_text(name), rdclass, dns.rdatatype.from_text(rdtype))
        )
    if known is not None:
        name, address, ttl = known
        kind = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
        message.answer.append(
            dns.rrset.from_text(dns.name.from_text(name), ttl, "IN", kind, address)
        )
    return message.to_wire()


@pytest.fixture
def responder() -> MdnsResponder:
    return MdnsResponder()


def registered(responder: MdnsResponder, address: str = IPV4) -> str:
    name = new_mdns_name()
    responder.register(name, address)
    return name


def place(
    monkeypatch: pytest.MonkeyPatch, responder: MdnsResponder, interfaces: dict[str, int]
) -> None:
    """Put the registered names' addresses on interfaces (address -> index), as the
    responder finds them once started."""
    table = {ipaddress.ip_address(a): index for a, index in interfaces.items()}
    monkeypatch.setattr(mdns, "_interface_indices", lambda: table)
    responder._settle()


def parse(payload: bytes) -> dns.message.Message:
    return dns.message.from_wire(payload)


def only_answer(message: dns.message.Message) -> dns.rrset.RRset:
    assert len(message.answer) == 1
    return message.answer[0]


def address_of(rrset: dns.rrset.RRset) -> str:
    (rdata,) = list(rrset)
    if isinstance(rdata, dns.rdata.GenericRdata):  # class IN|flush: dnspython keeps bytes
        return str(ipaddress.ip_address(rdata.data))
    return str(ipaddress.ip_address(rdata.to_text()))


# -- names -------------------------------------------------------------------------------


def test_new_name_is_a_uuid4_under_local() -> None:
    names = {new_mdns_name() for _ in range(100)}
    assert len(names) == 100
    for name in names:
        label, local = name.split(".")
        assert local == "local"
        assert uuid.UUID(label).version == 4
        assert str(uuid.UUID(label)) == label
        assert is_mdns_candidate_address(name)


@pytest.mark.parametrize(
    "address",
    ["7D3126A6-2882-464F-B693-E83F3C8B73B0.local", "7d3126a6-2882-464f-b693-e83f3c8b73b0.local."],
)
def test_mdns_addresses_any_case_and_final_dot(address: str) -> None:
    assert is_mdns_candidate_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "203.0.113.2",
        "2001:db8::1",
        "host.local",
        "7d3126a6-2882-464f-b693-e83f3c8b73b0.example",
        "7d3126a6-2882-464f-b693-e83f3c8b73b0",
        "x7d3126a6-2882-464f-b693-e83f3c8b73b0.local",
        "7d3126a6-2882-464f-b693-e83f3c8b73b0.sub.local",
        "",
    ],
)
def test_not_mdns_addresses(address: str) -> None:
    assert not is_mdns_candidate_address(address)


def test_register_rejects_names_outside_local_and_bad_addresses(responder: MdnsResponder) -> None:
    with pytest.raises(ValueError):
        responder.register("host.example", IPV4)
    with pytest.raises(ValueError):
        responder.register("local", IPV4)
    with pytest.raises(ValueError):
        responder.register(new_mdns_name(), "not-an-address")
    assert responder.names == {}


def test_the_mdns_api_names_what_is_wrong_with_its_arguments(responder: MdnsResponder) -> None:
    """An AttributeError from inside (`register(name, None)`), a socket error for a bad
    `interface_address`, a str of interfaces taken one character at a time, and a NaN
    timeout that waited forever without sending a query."""
    name = new_mdns_name()
    for bad in (None, 5):
        with pytest.raises(TypeError, match="address must be an IP address"):
            responder.register(name, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mDNS name is a str"):
        responder.register(5, IPV4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list of IP addresses"):
        MdnsResponder(interfaces="203.0.113.2")
    with pytest.raises(ValueError, match="not 'not-an-ip'"):
        MdnsResponder(interfaces=["not-an-ip"])
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        ({"interface_address": "garbage"}, ValueError, "interface_address must be"),
        ({"interface_address": 5}, TypeError, "interface_address must be"),
        ({"timeout": "1"}, TypeError, "timeout must be a number"),
        ({"timeout": float("nan")}, ValueError, "timeout must be a positive number"),
        ({"timeout": 0}, ValueError, "timeout must be a positive number"),
        ({"timeout": -1}, ValueError, "timeout must be a positive number"),
        ({"timeout": 10**400}, ValueError, "timeout must be a positive number"),
    ]
    for kwargs, error, text in cases:
        with pytest.raises(error, match=text):
            asyncio.run(resolve_mdns(name, **kwargs))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mDNS name is a str"):
        asyncio.run(resolve_mdns(5))  # type: ignore[arg-type]


# -- answers -----------------------------------------------------------------------------


def test_a_query_gets_a_multicast_answer_with_cache_flush_and_ttl_120(
    responder: MdnsResponder,
) -> None:
    name = registered(responder)
    reply = responder.handle_query(query((name, "A")))
    assert reply is not None and not reply.unicast
    message = parse(reply.payload)
    assert message.id == 0
    assert message.flags & dns.flags.QR and message.flags & dns.flags.AA
    assert message.question == []
    rrset = only_answer(message)
    assert rrset.name == dns.name.from_text(name)
    assert rrset.rdtype == dns.rdatatype.A
    assert rrset.rdclass == dns.rdataclass.IN | FLUSH
    assert rrset.ttl == RECORD_TTL_S == 120
    assert address_of(rrset) == IPV4


def test_aaaa_query_for_an_ipv6_name(responder: MdnsResponder) -> None:
    name = registered(responder, IPV6)
    reply = responder.handle_query(query((name, "AAAA")))
    assert reply is not None
    rrset = only_answer(parse(reply.payload))
    assert rrset.rdtype == dns.rdatatype.AAAA and rrset.rdclass == dns.rdataclass.IN | FLUSH
    assert address_of(rrset) == IPV6


def test_any_query_gets_the_address(responder: MdnsResponder) -> None:
    name = registered(responder)
    reply = responder.handle_query(query((name, "ANY")))
    assert reply is not None
    assert address_of(only_answer(parse(reply.payload))) == IPV4


def test_names_match_in_any_case(responder: MdnsResponder) -> None:
    name = registered(responder)
    reply = responder.handle_query(query((name.upper(), "A")))
    assert reply is not None
    assert address_of(only_answer(parse(reply.payload))) == IPV4


def test_qu_bit_asks_for_a_unicast_answer(responder: MdnsResponder) -> None:
    name = registered(responder)
    reply = responder.handle_query(query((name, "A"), qu=True))
    assert reply is not None and reply.unicast
    rrset = only_answer(parse(reply.payload))
    assert rrset.rdclass == dns.rdataclass.IN | FLUSH and rrset.ttl == RECORD_TTL_S


def test_other_family_gets_an_nsec_saying_which_type_exists(responder: MdnsResponder) -> None:
    name = registered(responder)
    reply = responder.handle_query(query((name, "AAAA")))
    assert reply is not None
    message = parse(reply.payload)
    rrset = only_answer(message)
    assert rrset.rdtype == dns.rdatatype.NSEC and rrset.rdclass == dns.rdataclass.IN | FLUSH
    text = rrset.to_text()
    assert text.endswith(f"{name}. A")  # next name is itself, bitmap holds only A


def test_a_and_aaaa_in_one_query(responder: MdnsResponder) -> None:
    name = registered(responder, IPV6)
    reply = responder.handle_query(query((name, "A"), (name, "AAAA")))
    assert reply is not None
    kinds = {rrset.rdtype for rrset in parse(reply.payload).answer}
    assert kinds == {dns.rdatatype.AAAA, dns.rdatatype.NSEC}


def test_several_names_in_one_query(responder: MdnsResponder) -> None:
    first, second = registered(responder), registered(responder, "203.0.113.194")
    reply = responder.handle_query(query((first, "A"), (new_mdns_name(), "A"), (second, "A")))
    assert reply is not None
    answers = {
        rrset.name.to_text(omit_final_dot=True): address_of(rrset)
        for rrset in parse(reply.payload).answer
    }
    assert answers == {first: IPV4, second: "203.0.113.194"}


def test_legacy_unicast_query_gets_id_question_and_short_ttl(responder: MdnsResponder) -> None:
    name = registered(responder)
    reply = responder.handle_query(query((name, "A"), qu=True, query_id=4242), source_port=40000)
    assert reply is not None and reply.unicast
    message = parse(reply.payload)
    assert message.id == 4242
    assert [(q.name, q.rdclass, q.rdtype) for q in message.question] == [
        (dns.name.from_text(name), dns.rdataclass.IN, dns.rdatatype.A)
    ]
    rrset = only_answer(message)
    assert rrset.rdclass == dns.rdataclass.IN  # no cache-flush bit in legacy answers
    assert rrset.ttl == LEGACY_TTL_S
    assert address_of(rrset) == IPV4


def test_non_uuid_names_are_answered_too(responder: MdnsResponder) -> None:
    responder.register("printer.local", IPV4)
    registered(responder)
    reply = responder.handle_query(query(("PRINTER.local", "A")))
    assert reply is not None
    assert address_of(only_answer(parse(reply.payload))) == IPV4
    responder.unregister("printer.local")
    assert responder.handle_query(query(("printer.local", "A"))) is None


def test_known_answer_suppresses_the_reply(responder: MdnsResponder) -> None:
    name = registered(responder)
    assert responder.handle_query(query((name, "A"), known=(name, IPV4, 100))) is None
    # a known answer about to expire, or with another address, does not
    assert responder.handle_query(query((name, "A"), known=(name, IPV4, 30))) is not None
    assert responder.handle_query(query((name, "A"), known=(name, "203.0.113.9", 120))) is not None


def test_re_registering_replaces_the_address(responder: MdnsResponder) -> None:
    name = registered(responder)
    assert responder.handle_query(query((name, "A"))) is not None  # fills the reply cache
    responder.register(name, "203.0.113.200")
    reply = responder.handle_query(query((name, "A")))
    assert reply is not None
    assert address_of(only_answer(parse(reply.payload))) == "203.0.113.200"
    assert responder.names == {name: "203.0.113.200"}


# -- what is ignored ---------------------------------------------------------------------


def test_unknown_names_are_ignored(responder: MdnsResponder) -> None:
    registered(responder)
    assert responder.handle_query(query((new_mdns_name(), "A"))) is None
    assert responder.handle_query(query(("printer.local", "A"))) is None


def test_nothing_registered_nothing_answered(responder: MdnsResponder) -> None:
    assert responder.handle_query(query((new_mdns_name(), "A"))) is None


def test_unregistered_names_are_no_longer_answered(responder: MdnsResponder) -> None:
    name = registered(responder)
    responder.unregister(name)
    responder.unregister(name)  # twice is fine
    responder.unregister("not a name at all..")
    assert responder.handle_query(query((name, "A"))) is None
    assert responder.names == {}


def test_other_types_and_classes_are_ignored(responder: MdnsResponder) -> None:
    name = registered(responder)
    assert responder.handle_query(query((name, "TXT"))) is None
    assert responder.handle_query(query((name, "PTR"))) is None
    message = dns.message.Message(id=0)
    message.question.append(
        dns.rrset.RRset(dns.name.from_text(name), dns.rdataclass.CH, dns.rdatatype.A)
    )
    assert responder.handle_query(message.to_wire()) is None


def test_responses_are_not_answered(responder: MdnsResponder) -> None:
    name = registered(responder)
    reply = responder.handle_query(query((name, "A")))
    assert reply is not None
    assert responder.handle_query(reply.payload) is None  # our own answer looping back
    as_response = bytearray(query((name, "A")))
    as_response[2] |= 0x80
    assert responder.handle_query(bytes(as_response)) is None


def test_other_opcodes_are_ignored(responder: MdnsResponder) -> None:
    name = registered(responder)
    update = bytearray(query((name, "A")))
    update[2] |= 5 << 3  # UPDATE
    assert responder.handle_query(bytes(update)) is None


@pytest.mark.parametrize(
    "data", [b"", b"\x00" * 11, b"\x00" * 12, b"\x00\x00\x00\x00\x00\x01" + b"\xff" * 30]
)
def test_short_and_broken_datagrams_are_ignored(responder: MdnsResponder, data: bytes) -> None:
    registered(responder)
    assert responder.handle_query(data) is None


def test_compression_loop_is_ignored(responder: MdnsResponder) -> None:
    responder.register("host.local", IPV4)  # no pre-filter: the datagram gets parsed
    header = b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    # a question whose name is a pointer to itself
    assert responder.handle_query(header + b"\xc0\x0c\x00\x01\x00\x01") is None


@FUZZ
@given(data=st.binary(max_size=600), port=st.sampled_from([MDNS_PORT, 40000]))
def test_fuzz_random_bytes_never_raise(data: bytes, port: int) -> None:
    responder = MdnsResponder()
    responder.register(new_mdns_name(), IPV4)
    responder.register("host.local", IPV6)  # no pre-filter: every datagram is parsed
    reply = responder.handle_query(data, port)
    assert reply is None or isinstance(reply.payload, bytes)


_FUZZ_NAME = "7d3126a6-2882-464f-b693-e83f3c8b73b0.local"


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 200),
    qu=st.booleans(),
    port=st.sampled_from([MDNS_PORT, 40000]),
)
def test_fuzz_mutated_queries_never_raise(
    edits: list[tuple[int, int]], cut: int, qu: bool, port: int
) -> None:
    responder = MdnsResponder()
    responder.register(_FUZZ_NAME, IPV4)
    data = bytearray(
        query((_FUZZ_NAME, "A"), (_FUZZ_NAME, "AAAA"), qu=qu, known=(_FUZZ_NAME, IPV4, 10))
    )
    for position, value in edits:
        data[position % len(data)] = value
    reply = responder.handle_query(bytes(data[: max(cut, 12)]), port)
    if reply is not None:
        parse(reply.payload)  # whatever it sends is a well-formed message


# -- the resolver's side, without sockets --------------------------------------------------


def test_resolver_reads_the_responders_answers(responder: MdnsResponder) -> None:
    name = registered(responder, IPV6)
    target = dns.name.from_text(name)
    wire = _query_bytes(target, 77)
    asked = dns.message.from_wire(wire)
    assert [(q.rdtype, q.rdclass) for q in asked.question] == [
        (dns.rdatatype.A, dns.rdataclass.IN | QU),
        (dns.rdatatype.AAAA, dns.rdataclass.IN | QU),
    ]
    multicast = responder.handle_query(wire)
    legacy = responder.handle_query(wire, 40000)
    assert multicast is not None and legacy is not None
    assert _answer_in(multicast.payload, target, 77) == IPV6
    assert _answer_in(legacy.payload, target, 77) == IPV6
    assert _answer_in(legacy.payload, target, 78) is None  # another query's answer
    assert _answer_in(legacy.payload, dns.name.from_text(new_mdns_name()), 77) is None
    assert _answer_in(wire, target, 77) is None  # a query is no answer
    assert _answer_in(b"\x00garbage", target, 77) is None


async def test_resolve_rejects_names_outside_local() -> None:
    with pytest.raises(ValueError, match="local"):
        await resolve_mdns("stun.example.org")


def test_resolution_error_names_the_name() -> None:
    error = MdnsResolutionError(_FUZZ_NAME, 1.5)
    assert isinstance(error, OSError)
    assert _FUZZ_NAME in str(error) and "1.5 s" in str(error)
    assert error.name == _FUZZ_NAME


# -- the shared responder (not started here: binding 5353 is for the lab) ------------------


async def test_one_shared_responder_per_loop() -> None:
    first = shared_responder()
    assert shared_responder() is first
    await first.close()  # closing (even unstarted) retires it
    second = shared_responder()
    assert second is not first
    await second.close()


def test_shared_responders_differ_between_loops() -> None:
    async def get() -> MdnsResponder:
        responder = shared_responder()
        await responder.close()
        return responder

    assert asyncio.run(get()) is not asyncio.run(get())


# -- who gets answered ---------------------------------------------------------------------


class _OneDatagram:
    """A socket that delivers one datagram with the given PKTINFO, and records sends."""

    family = socket.AF_INET

    def __init__(self, data: bytes, destination: str, port: int = 40000, index: int = 3) -> None:
        info = _IN_PKTINFO.pack(index, socket.inet_aton(IPV4), socket.inet_aton(destination))
        self._queue = [(data, [(socket.IPPROTO_IP, _IP_PKTINFO, info)], 0, ("198.51.100.7", port))]
        self.sent: list[object] = []

    def recvmsg(
        self, *_args: object
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, tuple[str, int]]:
        if not self._queue:
            raise BlockingIOError
        return self._queue.pop()

    def sendto(self, payload: bytes, address: object) -> None:
        self.sent.append(address)

    def sendmsg(self, buffers: object, ancillary: object, flags: int, address: object) -> None:
        self.sent.append(address)


@pytest.mark.parametrize(("destination", "answered"), [("224.0.0.251", True), (IPV4, False)])
def test_only_queries_to_the_group_are_answered(
    responder: MdnsResponder, destination: str, answered: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A legacy query sent straight to our address may come from off the link: a unicast
    answer would hand the private address behind a .local name to anyone (RFC 6762 §11)."""
    name = registered(responder)
    place(monkeypatch, responder, {IPV4: 3})
    sock = _OneDatagram(query((name, "A")), destination)
    responder._readable(sock)  # type: ignore[arg-type]
    assert sock.sent == ([("198.51.100.7", 40000)] if answered else [])


def test_a_known_answer_of_another_class_is_ignored_not_raised(responder: MdnsResponder) -> None:
    name = registered(responder)
    message = dns.message.from_wire(query((name, "A")))
    # CH A `x. 1` in the generic form: the text form needs dnspython's CH A class, which
    # once came out as GenericRdata in a full run (it caches a failed load), not reproduced
    chaos = r"\# 5 0178000001"
    message.answer.append(dns.rrset.from_text(dns.name.from_text(name), 120, "CH", "A", chaos))
    reply = responder.handle_query(message.to_wire())
    assert reply is not None and not reply.unicast


async def test_a_loop_never_runs_two_shared_responders(monkeypatch: pytest.MonkeyPatch) -> None:
    """B acquires while A's release closes the responder; C, asking afterwards, used to get
    a second one while B restarted the first: two sets of port-5353 sockets."""
    import ice_engine.mdns as mdns

    def loopback(family: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        return sock

    monkeypatch.setattr(mdns, "_bind", loopback)
    a = await shared_responder().acquire()
    waiting = shared_responder()
    releasing = asyncio.ensure_future(a.release())
    b = asyncio.ensure_future(waiting.acquire())
    await asyncio.gather(releasing, b)
    c = await shared_responder().acquire()
    assert c is b.result() and c.running
    await c.release()
    await b.result().release()
    assert not c.running


def test_the_same_answer_is_multicast_at_most_once_a_second_per_interface(
    responder: MdnsResponder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 6762 §6: a flood of queries must not make us flood the link."""
    name = registered(responder)
    place(monkeypatch, responder, {IPV4: 3})
    now = [100.0]
    responder._clock = lambda: now[0]

    def ask(index: int = 3, qu: bool = False) -> list[object]:
        sock = _OneDatagram(query((name, "A"), qu=qu), "224.0.0.251", port=5353, index=index)
        responder._readable(sock)  # type: ignore[arg-type]
        return sock.sent

    assert ask() == [("224.0.0.251", 5353)]
    now[0] += 0.5
    assert ask() == []  # held back: multicast half a second ago on this interface
    assert ask(index=4) == []  # not its address's interface: not answered there at all
    assert ask(qu=True) == [("198.51.100.7", 5353)]  # a unicast answer is not limited
    now[0] += 0.6
    assert ask() == [("224.0.0.251", 5353)]


# -- RFC 6762 §15: each link hears only of its own addresses -------------------------------


def test_a_name_is_answered_only_on_the_interface_of_its_address(
    responder: MdnsResponder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer on one link asking for the name of an address on another got that address:
    the arrival interface picked the way out, and was never checked against the name."""
    here, there = registered(responder), registered(responder, "203.0.113.209")
    place(monkeypatch, responder, {IPV4: 3, "203.0.113.209": 4})
    for port in (MDNS_PORT, 40000):
        assert responder.handle_query(query((here, "A")), port, interface=4) is None
        assert responder.handle_query(query((here, "AAAA")), port, interface=4) is None  # NSEC
        reply = responder.handle_query(query((here, "A"), (there, "A")), port, interface=4)
        assert reply is not None
        assert [address_of(rrset) for rrset in parse(reply.payload).answer] == ["203.0.113.209"]
        reply = responder.handle_query(query((here, "A")), port, interface=3)
        assert reply is not None and address_of(only_answer(parse(reply.payload))) == IPV4
    sock = _OneDatagram(query((here, "A")), "224.0.0.251", index=4)
    responder._readable(sock)  # type: ignore[arg-type]
    assert sock.sent == []


def test_an_address_on_no_interface_is_answered_on_none(
    responder: MdnsResponder, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = registered(responder)
    place(monkeypatch, responder, {})
    assert responder.handle_query(query((name, "A")), interface=3) is None
    assert responder.handle_query(query((name, "A"))) is not None  # arrival unknown: as before


def test_the_sockets_hear_the_group_only_on_the_interfaces_they_joined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Linux delivers a group's datagrams to every socket bound to the port once any
    process joins it on an interface (IP_MULTICAST_ALL): the responder heard, and
    answered, on links it never joined."""
    monkeypatch.setattr(mdns, "MDNS_PORT", 0)  # an ephemeral port: no root, no clash
    with mdns._bind(socket.AF_INET) as sock:
        assert sock.getsockopt(socket.IPPROTO_IP, 49) == 0  # IP_MULTICAST_ALL
    if socket.has_ipv6:
        try:
            sock6 = mdns._bind(socket.AF_INET6)
        except OSError:
            return  # no IPv6 here
        with sock6:
            assert sock6.getsockopt(socket.IPPROTO_IPV6, 29) == 0  # IPV6_MULTICAST_ALL


class _Memberships(socket.socket):
    """A real (loopback) socket for the loop's reader that records group changes."""

    changes: list[tuple[str, int]]

    def setsockopt(self, level: int, option: int, value: object, *rest: object) -> None:
        if option in (socket.IP_ADD_MEMBERSHIP, socket.IP_DROP_MEMBERSHIP):
            assert isinstance(value, bytes) and value[:4] == socket.inet_aton("224.0.0.251")
            action = "join" if option == socket.IP_ADD_MEMBERSHIP else "leave"
            self.changes.append((action, int.from_bytes(value[8:12], "little")))


@pytest.fixture
def memberships(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The responder's IPv4 socket records its joins and leaves; none for IPv6."""
    changes: list[tuple[str, int]] = []

    def bind(family: int) -> socket.socket:
        if family != socket.AF_INET:
            raise OSError(errno.EAFNOSUPPORT, "not in this test")
        sock = _Memberships(socket.AF_INET, socket.SOCK_DGRAM)
        sock.changes = changes
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        return sock

    monkeypatch.setattr(mdns, "_bind", bind)
    return changes


async def test_an_interface_made_again_with_the_same_address_is_joined_again(
    memberships: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Continual gathering: an interface deleted and made again with the same address
    (another index) gives the address a new name, which was never answered: the join
    was keyed by address, and the stale key, never dropped, stopped the new join."""
    table = {ipaddress.ip_address("203.0.113.209"): 4}
    monkeypatch.setattr(mdns, "_interface_indices", lambda: table, raising=False)
    responder = MdnsResponder(ipv6=False)
    await responder.start()
    try:
        old = registered(responder, "203.0.113.209")
        await asyncio.sleep(0)  # names registered in one loop iteration are placed together
        assert [action for action, _ in memberships] == ["join"]
        responder.unregister(old)  # what continual gathering does when the address goes
        table[ipaddress.ip_address("203.0.113.209")] = 7  # back, on a new interface
        new = registered(responder, "203.0.113.209")
        await asyncio.sleep(0)
        assert [action for action, _ in memberships][-1] == "join"
        assert len([action for action, _ in memberships if action == "join"]) == 2
        assert responder.handle_query(query((new, "A")), interface=7) is not None
        assert responder.handle_query(query((new, "A")), interface=4) is None
    finally:
        await responder.close()


async def test_the_group_is_left_when_the_last_name_on_an_interface_goes(
    memberships: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = {ipaddress.ip_address(IPV4): 3, ipaddress.ip_address("203.0.113.209"): 4}
    monkeypatch.setattr(mdns, "_interface_indices", lambda: table)
    responder = MdnsResponder(ipv6=False)
    first, second = registered(responder), registered(responder)
    other = registered(responder, "203.0.113.209")
    await responder.start()
    try:
        assert sorted(memberships) == [("join", 3), ("join", 4)]  # once per interface
        responder.unregister(first)
        assert len(memberships) == 2  # `second` still needs interface 3
        responder.unregister(second)
        assert memberships[-1] == ("leave", 3)
        responder.register(second, IPV4)  # back again: joined again
        await asyncio.sleep(0)
        assert memberships[-1] == ("join", 3)
        assert responder.names.keys() == {second, other}
    finally:
        await responder.close()


# -- one query costs little, and no reply passes 9000 bytes (RFC 6762 §17) ------------------


def repeated(name: str, times: int, query_id: int = 7) -> bytes:
    message = dns.message.Message(id=query_id)
    question = dns.rrset.RRset(dns.name.from_text(name), dns.rdataclass.IN, dns.rdatatype.A)
    message.question.extend([question] * times)
    return message.to_wire()


def test_a_query_repeating_one_name_is_read_only_so_far(
    responder: MdnsResponder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 9 kB query asking one name 1490 times was parsed whole (43 ms; 85 ms from another
    port than 5353), and its legacy answer echoed all 1490 questions: 9010 bytes."""
    name = registered(responder)
    data = repeated(name, 1490)
    assert len(data) <= _MAX_DATAGRAM
    parsed: list[int] = []
    from_wire = dns.message.from_wire

    def counting(wire: bytes, **kwargs: object) -> dns.message.Message:
        message = from_wire(wire, **kwargs)  # type: ignore[arg-type]
        parsed.append(len(message.question))
        return message

    monkeypatch.setattr(dns.message, "from_wire", counting)
    reply = responder.handle_query(data)
    assert reply is not None and address_of(only_answer(parse(reply.payload))) == IPV4
    legacy = responder.handle_query(data, 40000)
    assert legacy is not None and len(legacy.payload) <= _MAX_DATAGRAM
    message = parse(legacy.payload)
    assert message.id == 7 and len(message.question) == 1  # each question echoed once
    assert address_of(only_answer(message)) == IPV4
    assert parsed and max(parsed) <= _MAX_QUESTIONS


def test_a_question_past_the_first_32_is_not_answered(responder: MdnsResponder) -> None:
    names = [registered(responder, f"203.0.113.{200 + i}") for i in range(_MAX_QUESTIONS + 1)]
    reply = responder.handle_query(query(*[(name, "A") for name in names]))
    assert reply is not None
    answered = {rrset.name.to_text(omit_final_dot=True) for rrset in parse(reply.payload).answer}
    assert answered == set(names[:_MAX_QUESTIONS])


def test_a_query_for_many_names_gets_a_reply_of_at_most_9000_bytes(
    responder: MdnsResponder,
) -> None:
    """A 7.7 kB query for 180 registered names got an 11.7 kB reply."""
    names = [registered(responder, f"2001:db8:c::{i + 1:x}") for i in range(180)]
    data = query(*[(name, "ANY") for name in names])
    assert len(data) <= _MAX_DATAGRAM
    for port in (MDNS_PORT, 40000):
        reply = responder.handle_query(data, port)
        assert reply is not None and len(reply.payload) <= _MAX_DATAGRAM


def long_name(i: int) -> str:
    """A 250-byte name, so that a few fill a datagram."""
    return ".".join([f"{i:03d}" + "x" * 59, *["y" * 60] * 3, "local"])


@pytest.mark.parametrize("port", [MDNS_PORT, 40000])
def test_answers_that_do_not_fit_in_9000_bytes_are_left_out(
    responder: MdnsResponder, port: int
) -> None:
    """Long names asked in the other family: each NSEC answer holds the name twice, so
    30 questions would call for about 15 kB."""
    names = [long_name(i) for i in range(30)]
    for name in names:
        responder.register(name, IPV4)
    data = query(*[(name, "AAAA") for name in names], query_id=9)
    assert len(data) <= _MAX_DATAGRAM
    reply = responder.handle_query(data, port)
    assert reply is not None
    assert len(reply.payload) <= _MAX_DATAGRAM
    message = parse(reply.payload)
    answered = [rrset.name for rrset in message.answer]
    assert answered and all(rrset.rdtype == dns.rdatatype.NSEC for rrset in message.answer)
    assert answered == [dns.name.from_text(name) for name in names[: len(answered)]]
    if port != MDNS_PORT:  # legacy: each echoed question has its answer, and only those
        assert [q.name for q in message.question] == answered and message.id == 9


def test_a_flood_of_queries_gives_the_loop_back_within_a_few_milliseconds(
    responder: MdnsResponder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """64 datagrams were read per wake-up whatever they cost: 64 costly queries held the
    loop for 0.9 s."""
    name = registered(responder)
    place(monkeypatch, responder, {IPV4: 3})
    sock = _OneDatagram(query((name, "A")), "224.0.0.251")
    sock._queue *= 64
    clock = [0.0]

    def timer() -> float:
        clock[0] += 0.001  # each datagram costs a millisecond
        return clock[0]

    responder._timer = timer
    responder._readable(sock)  # type: ignore[arg-type]
    assert len(sock.sent) == 5  # 5 ms worth at 1 ms each; the rest at the next wake-up
    assert len(sock._queue) == 64 - len(sock.sent)


# -- resolve_mdns says what is wrong ------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("fe80::1%nosuch", "no interface 'nosuch'"),
        ("203.0.113.201%tb0", "IPv4 address, which takes no %zone: pass '203.0.113.201'"),
        ("224.0.0.251", "a multicast address"),
        ("ff02::fb", "a multicast address"),
        ("::ffff:203.0.113.201", "IPv4-mapped IPv6 address: pass the IPv4 address"),
    ],
)
async def test_resolve_names_what_is_wrong_with_interface_address(
    address: str, problem: str
) -> None:
    """These gave bare socket errors ('[Errno 22] Invalid argument', 'illegal IP address
    string passed to inet_aton') or, for a mapped address, a silent timeout."""
    with pytest.raises(ValueError, match=re.escape(f"interface_address '{address}'")) as caught:
        await resolve_mdns(new_mdns_name(), timeout=0.3, interface_address=address)
    assert problem in str(caught.value)


async def test_resolve_names_an_interface_address_this_host_lacks() -> None:
    with pytest.raises(OSError, match=re.escape("interface_address '203.0.113.250'")) as caught:
        await resolve_mdns(new_mdns_name(), timeout=0.3, interface_address="203.0.113.250")
    assert caught.value.errno == errno.EADDRNOTAVAIL
    assert "not an address of this host" in str(caught.value)


async def test_resolve_says_at_once_when_the_query_cannot_be_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no multicast route every send failed, silently: it waited out the timeout and
    said 'not resolved within 1 s'."""

    class Unroutable(socket.socket):
        def sendto(self, *args: object) -> int:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(socket, "socket", Unroutable)
    name = new_mdns_name()
    start = time.monotonic()
    with pytest.raises(OSError) as caught:
        await resolve_mdns(name, timeout=30.0)
    assert time.monotonic() - start < 10  # at once, not at the timeout
    error = caught.value
    assert not isinstance(error, MdnsResolutionError) and error.errno == errno.ENETUNREACH
    assert f"mDNS query for {name!r} could not be sent to 224.0.0.251" in str(error)
    assert "Network is unreachable" in str(error) and "interface_address" in str(error)
