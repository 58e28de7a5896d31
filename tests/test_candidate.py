"""The candidate model: grammar, round trips, the aioice oracle, priorities."""

from __future__ import annotations

import contextlib
import importlib.util
from types import ModuleType

import pytest
from aioice.candidate import Candidate as AioiceCandidate
from hypothesis import given
from hypothesis import strategies as st

from ice_engine import candidate as candidate_module
from ice_engine import compiled
from ice_engine.candidate import (
    Candidate,
    CandidateError,
    compute_foundation,
    compute_priority,
    relay_type_preference,
)

BROWSER = [
    "candidate:3810703297 1 udp 2113937151 203.0.113.2 35278 typ host generation 0 ufrag TZxu network-cost 999",
    "candidate:16692157 1 udp 1677729535 198.51.100.1 45209 typ srflx raddr 203.0.113.2 rport 45209 generation 0 ufrag i7Bv network-cost 999",
    "candidate:746594751 1 udp 50339839 198.51.100.10 49297 typ relay raddr 198.51.100.1 rport 45209 generation 0 ufrag i7Bv network-cost 999",
    "candidate:1 1 tcp 1518214911 203.0.113.2 9 typ host tcptype active generation 0 ufrag 70m8 network-id 2",
]


@pytest.mark.parametrize("line", BROWSER)
def test_browser_strings_round_trip(line: str) -> None:
    candidate = Candidate.parse(line)
    assert candidate.to_sdp() == line
    assert Candidate.parse("a=" + line) == candidate
    assert Candidate.parse(line.removeprefix("candidate:")) == candidate


def test_fields_are_parsed() -> None:
    c = Candidate.parse(BROWSER[1] + " network-id 3 x-custom yes")
    assert (c.foundation, c.component, c.protocol, c.priority) == ("16692157", 1, "udp", 1677729535)
    assert (c.address, c.port, c.type) == ("198.51.100.1", 45209, "srflx")
    assert (c.related_address, c.related_port) == ("203.0.113.2", 45209)
    assert (c.generation, c.ufrag, c.network_id, c.network_cost) == (0, "i7Bv", 3, 999)
    assert c.extensions == (("x-custom", "yes"),)
    assert Candidate.parse(BROWSER[3]).tcptype == "active"


def test_sdp_form_drops_ufrag() -> None:
    c = Candidate.parse(BROWSER[0])
    assert c.to_sdp(with_ufrag=False).endswith("generation 0 network-cost 999")


MALFORMED = [
    ("candidate:1 1 udp 1 1.2.3.4 5 typ", "line"),
    ("candidate:f$ 1 udp 1 1.2.3.4 5 typ host", "foundation"),
    ("candidate:1 0 udp 1 1.2.3.4 5 typ host", "component"),
    ("candidate:1 257 udp 1 1.2.3.4 5 typ host", "component"),
    ("candidate:1 1 udp 0 1.2.3.4 5 typ host", "priority"),
    ("candidate:1 1 udp +1 1.2.3.4 5 typ host", "priority"),
    ("candidate:1 1 udp 4294967296 1.2.3.4 5 typ host", "priority"),
    ("candidate:1 1 udp 1 1.2.3.4 65536 typ host", "port"),
    ("candidate:1 1 udp 1 1.2.3.4 x typ host", "port"),
    ("candidate:1 1 udp 1 1.2.3.4 5 type host", "typ"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ host generation", "extensions"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ host generation x", "generation"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ host network-cost -1", "network-cost"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ host network-id 1_0", "network-id"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ srflx raddr 1.2.3.4 rport x", "rport"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ srflx raddr 1.2.3.4 rport 70000", "rport"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ srflx generation 0 raddr 1.2.3.4 rport 1", "raddr"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ host ufrag a ufrag b", "ufrag"),
    ("candidate:1 1 tcp 1 1.2.3.4 5 typ host tcptype sideways", "tcptype"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ host x ٣", "line"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ host\x00", "line"),  # was type 'host\x00'
    ("candidate:1 1 udp 1 1.2.3.4 5 typ host\x1cgeneration 0", "line"),  # split() splits there
    ("candidate:1 1 udp 1 1.2.3.4 5 typ host\x0bgeneration 0", "line"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ host generation 0 ufrag a\x7f network-id 1 network-cost 1", "line"),
    # More digits than int() takes (4300) gave its own ValueError, naming no field
    ("candidate:1 " + "9" * 5000 + " udp 1 1.2.3.4 5 typ host", "component"),
    ("candidate:1 1 udp " + "9" * 5000 + " 1.2.3.4 5 typ host", "priority"),
    ("candidate:1 1 udp 1 1.2.3.4 " + "9" * 5000 + " typ host", "port"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ host generation " + "9" * 5000, "generation"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ srflx raddr 1.2.3.4 rport " + "9" * 5000, "rport"),
    ("candidate:1 1 udp 1 1.2.3.4 5 typ host network-cost " + "0" * 5000, "network-cost"),
    # zeros in front are taken: the fault is the one after them (a review)
    ("candidate:1 1 udp 00000000001 1.2.3.4 5 typ host generation x", "generation"),
]


def test_whitespace_around_a_line_is_not_part_of_it() -> None:
    """A line as read from SDP, its CRLF still on, or with tabs between the fields."""
    line = "candidate:1 1 udp 1 1.2.3.4 5 typ host generation 0"
    assert Candidate.parse(line + "\r\n") == Candidate.parse(line.replace(" ", "\t"))


@pytest.mark.parametrize(("line", "field"), MALFORMED)
def test_malformed_lines_name_the_field(line: str, field: str) -> None:
    with pytest.raises(CandidateError) as info:
        Candidate.parse(line)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert field in str(info.value)


def test_a_huge_line_is_cut_short_in_the_message_and_kept_whole_in_the_error() -> None:
    line = "candidate:1 1 udp 1 1.2.3.4 x typ host " + "a b " * 75_000
    with pytest.raises(CandidateError) as info:
        Candidate.parse(line)
    assert len(str(info.value)) < 300 and info.value.line == line


def test_priority_formula_and_relay_order() -> None:
    assert compute_priority(126, 65535, 1) == 2130706431
    assert compute_priority(0, 0, 256) == 0
    udp, tcp, tls = (
        compute_priority(relay_type_preference(t), 65535, 1) for t in ("udp", "tcp", "tls")
    )
    assert udp > tcp > tls


def test_foundation_depends_on_type_base_server_and_protocol() -> None:
    base = compute_foundation("host", "203.0.113.2", "udp")
    assert base == compute_foundation("host", "203.0.113.2", "udp")
    others = {
        compute_foundation("srflx", "203.0.113.2", "udp", "198.51.100.10"),
        compute_foundation("srflx", "203.0.113.2", "udp", "198.51.100.11"),
        compute_foundation("host", "203.0.113.130", "udp"),
        compute_foundation("host", "203.0.113.2", "tcp"),
    }
    assert base not in others and len(others) == 4
    assert len(base) <= 32 and base.isdigit()


# -- properties ----------------------------------------------------------------------

token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/",
    min_size=1,
    max_size=32,
)
name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda n: (
        n not in {"generation", "ufrag", "network-id", "network-cost", "raddr", "rport", "tcptype"}
    )
)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def candidates(draw: st.DrawFn) -> Candidate:
    related = draw(st.booleans())
    return Candidate(
        foundation=draw(token),
        component=draw(st.integers(1, 256)),
        protocol=draw(st.sampled_from(["udp", "tcp", "UDP"])),
        priority=draw(st.integers(1, 0xFFFFFFFF)),
        address=draw(st.one_of(ipv4, ipv6, st.uuids().map(lambda u: f"{u}.local"))),
        port=draw(st.integers(0, 65535)),
        type=draw(st.sampled_from(["host", "srflx", "prflx", "relay"])),
        related_address=draw(ipv4) if related else None,
        related_port=draw(st.integers(0, 65535)) if related else None,
        tcptype=draw(st.none() | st.sampled_from(["active", "passive", "so"])),
        generation=draw(st.none() | u32),
        ufrag=draw(st.none() | token),
        network_id=draw(st.none() | u32),
        network_cost=draw(st.none() | u32),
        extensions=tuple(draw(st.dictionaries(name, token, max_size=3)).items()),
    )


@given(candidates())
def test_parse_inverts_serialize(candidate: Candidate) -> None:
    line = candidate.to_sdp()
    assert Candidate.parse(line) == candidate
    assert Candidate.parse(line).to_sdp() == line


@given(candidates())
def test_agrees_with_aioice_on_the_fields_it_knows(candidate: Candidate) -> None:
    theirs = AioiceCandidate.from_sdp(candidate.to_sdp().removeprefix("candidate:"))
    ours = Candidate.parse(candidate.to_sdp())
    assert (theirs.foundation, theirs.component, theirs.transport, theirs.priority) == (
        ours.foundation,
        ours.component,
        ours.protocol,
        ours.priority,
    )
    assert (theirs.host, theirs.port, theirs.type) == (ours.address, ours.port, ours.type)
    assert (theirs.related_address, theirs.related_port) == (
        ours.related_address,
        ours.related_port,
    )
    assert (theirs.tcptype, theirs.generation) == (ours.tcptype, ours.generation)


@given(st.text(max_size=200))
def test_garbage_raises_only_candidate_error(line: str) -> None:
    with contextlib.suppress(CandidateError):
        Candidate.parse(line)


@given(candidates(), st.data())
def test_mutated_lines_raise_only_candidate_error(
    candidate: Candidate, data: st.DataObject
) -> None:
    words = candidate.to_sdp().split(" ")
    index = data.draw(st.integers(0, len(words) - 1))
    words[index] = data.draw(st.text(max_size=8).filter(lambda w: " " not in w))
    with contextlib.suppress(CandidateError):
        Candidate.parse(" ".join(words))


# -- the fast paths, compiled and not ------------------------------------------------


def _pure_module() -> ModuleType:
    """candidate.py run as plain Python, even where the package has it compiled."""
    source = compiled.source_of("candidate")
    spec = importlib.util.spec_from_file_location("ice_engine._candidate_as_python", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PURE = _pure_module()
#: the module as installed (compiled by mypyc when a compiler was there) and as source.
MODULES = [candidate_module, PURE]
ODD_WORDS = st.sampled_from(
    [
        *("", "0", "00", "+1", "1_0", "-1", "٣", "256", "257", "65536", "4294967296", "9" * 11),
        *("typ", "raddr", "rport", "tcptype", "generation", "ufrag", "network-id", "network-cost"),
        *("so", "a=1", "candidate:1", "x\ty", "\x7f", "a+/b"),
    ]
)


def outcome(module: ModuleType, line: str) -> object:
    try:
        return tuple(module.Candidate.parse(line))
    except module.CandidateError as error:
        return error.field


def assert_fast_paths_agree(line: str) -> None:
    for module in MODULES:
        cls = module.Candidate
        for fast in (module._scan, module._split):
            found = fast(cls, line)
            if found is not None:  # a fast path may decline, but never differ
                assert found == module._parse_any(cls, line), (fast.__name__, line)
    assert outcome(candidate_module, line) == outcome(PURE, line)


@pytest.mark.parametrize("line", BROWSER)
def test_fast_paths_take_browser_lines(line: str) -> None:
    for module in MODULES:
        expected = module._parse_any(module.Candidate, line)
        assert module._scan(module.Candidate, line) == expected
        assert module._scan(module.Candidate, "a=" + line) is None
    assert_fast_paths_agree(line)


@pytest.mark.parametrize(
    "line", [*(line for line, _ in MALFORMED), "candidate: 1 1 udp 1 1.2.3.4 5 typ host"]
)
def test_fast_paths_agree_on_malformed_lines(line: str) -> None:
    assert_fast_paths_agree(line)


@given(candidates(), st.booleans())
def test_fast_paths_agree_on_candidates(candidate: Candidate, with_ufrag: bool) -> None:
    line = candidate.to_sdp(with_ufrag=with_ufrag)
    assert_fast_paths_agree(line)
    assert_fast_paths_agree(line.removeprefix("candidate:"))


@given(candidates(), st.data())
def test_fast_paths_agree_on_mutated_lines(candidate: Candidate, data: st.DataObject) -> None:
    words = candidate.to_sdp().split(" ")
    index = data.draw(st.integers(0, len(words) - 1))
    words[index] = data.draw(ODD_WORDS | st.text(max_size=8))
    separator = data.draw(st.sampled_from([" ", " ", " ", "  ", "\t"]))
    assert_fast_paths_agree(separator.join(words))


def test_many_unknown_extensions_are_kept_in_order_and_a_repeat_is_refused() -> None:
    """Each unknown extension was checked against all before it, so that a peer's line of
    32,000 of them (277 kB) held the event loop 4 s compiled, 19 s as plain Python (found
    by a property-based trial); names are now looked up, and parsing stays linear."""
    pairs = [(f"x-{n}", str(n)) for n in range(5000)]
    line = "candidate:1 1 udp 1 198.51.100.1 9 typ host " + " ".join(f"{k} {v}" for k, v in pairs)
    assert Candidate.parse(line).extensions == tuple(pairs)
    with pytest.raises(CandidateError) as refused:
        Candidate.parse(f"{line} x-4000 again")
    assert refused.value.field == "x-4000" and "given twice" in str(refused.value)
