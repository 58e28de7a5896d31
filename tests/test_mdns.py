"""The mDNS responder's packet logic and the name helpers (no sockets: see tests/lab)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import uuid

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

from ice_engine.mdns import (
    _IN_PKTINFO,
    _IP_PKTINFO,
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
        ({"timeout": float("nan")}, ValueError, "timeout must be more than 0"),
        ({"timeout": 0}, ValueError, "timeout must be more than 0"),
        ({"timeout": -1}, ValueError, "timeout must be more than 0"),
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
    responder: MdnsResponder, destination: str, answered: bool
) -> None:
    """A legacy query sent straight to our address may come from off the link: a unicast
    answer would hand the private address behind a .local name to anyone (RFC 6762 §11)."""
    name = registered(responder)
    sock = _OneDatagram(query((name, "A")), destination)
    responder._readable(sock)  # type: ignore[arg-type]
    assert sock.sent == ([("198.51.100.7", 40000)] if answered else [])


def test_a_known_answer_of_another_class_is_ignored_not_raised(responder: MdnsResponder) -> None:
    name = registered(responder)
    message = dns.message.from_wire(query((name, "A")))
    message.answer.append(dns.rrset.from_text(dns.name.from_text(name), 120, "CH", "A", "x. 1"))
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
    responder: MdnsResponder,
) -> None:
    """RFC 6762 §6: a flood of queries must not make us flood the link."""
    name = registered(responder)
    now = [100.0]
    responder._clock = lambda: now[0]

    def ask(index: int = 3, qu: bool = False) -> list[object]:
        sock = _OneDatagram(query((name, "A"), qu=qu), "224.0.0.251", port=5353, index=index)
        responder._readable(sock)  # type: ignore[arg-type]
        return sock.sent

    assert ask() == [("224.0.0.251", 5353)]
    now[0] += 0.5
    assert ask() == []  # held back: multicast half a second ago on this interface
    assert ask(index=4) == [("224.0.0.251", 5353)]  # another interface: its own second
    assert ask(qu=True) == [("198.51.100.7", 5353)]  # a unicast answer is not limited
    now[0] += 0.6
    assert ask() == [("224.0.0.251", 5353)]
