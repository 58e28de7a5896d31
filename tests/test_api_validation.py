"""Bad arguments to the public API fail at the call with an error naming the argument,
the same in the compiled build as in pure Python (mypyc's own checks name nothing)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ice_engine import Candidate, CandidateError, Gatherer, IceServer, InvalidServerUrl, Timing
from ice_engine.config import servers_from_config
from ice_engine.interfaces import IpHandling
from ice_engine.options import check_gatherer_options
from ice_engine.urls import parse_server_url

FLAGS = ("link_local", "dual_stack_relays", "continual", "tcp_candidates", "mdns")


def check(**options: Any) -> IpHandling:
    defaults: dict[str, Any] = {
        "mids": ("0",),
        "components": 1,
        "ice_transport_policy": "all",
        "ip_handling": IpHandling.ALL,
        "pool_size": 0,
        "shared_port": None,
        "port_range": None,
    }
    return check_gatherer_options(**{**defaults, **options})


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_flags_must_be_bools(flag: str, value: object) -> None:
    with pytest.raises(TypeError, match=f"^{flag} must be a bool, not {type(value).__name__}$"):
        check(**{flag: value})
    check(**{flag: True})


@pytest.mark.parametrize("flag", FLAGS)
def test_the_gatherer_refuses_a_flag_that_is_not_a_bool(flag: str) -> None:
    with pytest.raises(TypeError, match=f"^{flag} must be a bool, not str$"):
        Gatherer(**{flag: "yes"})


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("components", "components must be an integer 1-256, not True"),
        ("pool_size", "pool_size must be an integer 0-255, not True"),
        ("ip_handling", "ip_handling must be an RFC 8828 mode 1-4, not True"),
        ("shared_port", "shared_port must be 1-65535, not True"),
    ],
)
def test_a_bool_is_not_taken_for_a_number(option: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        check(**{option: True})


@pytest.mark.parametrize("option", ["components", "pool_size", "ip_handling", "shared_port"])
def test_a_float_is_not_taken_for_a_number(option: str) -> None:
    """ip_handling=2.0 was taken as mode 2, where every other number refuses it."""
    with pytest.raises(ValueError, match=f"^{option} must be .*, not 2.0$"):
        check(**{option: 2.0})


@pytest.mark.parametrize("mid", ["", " ", "a b", "a\nb", "a\tb", "\x00", "a/b", "a:b", "é"])
def test_a_mid_that_is_not_an_sdp_token_is_refused(mid: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"mid {mid!r} is not an SDP token")):
        Gatherer(mids=["0", mid])


def test_every_token_character_is_a_mid() -> None:
    Gatherer(mids=["0", "audio", "a.b-c_d~!#$%&'*+^`{|}", "Video2"])


def test_a_repeated_mid_is_named() -> None:
    with pytest.raises(ValueError, match=r"^mids must be distinct: 'a' is given twice$"):
        Gatherer(mids=["a", "b", "a"])


@pytest.mark.parametrize(
    ("mids", "message"),
    [
        ([0, 1], r"mids must hold strings, not int \(0\)"),
        (["0", b"1"], r"mids must hold strings, not bytes \(b'1'\)"),
        (None, "mids must be a sequence of strings, not NoneType"),
        ("0", "mids must be a sequence of strings, not str"),
        ({"0"}, "mids must be a sequence of strings, not set"),
    ],
)
def test_mids_of_the_wrong_type_are_refused(mids: object, message: str) -> None:
    with pytest.raises(TypeError, match=f"^{message}$"):
        Gatherer(mids=mids)  # type: ignore[arg-type]


@pytest.mark.parametrize("ice_servers", [None, IceServer("stun:127.0.0.1"), "stun:127.0.0.1", 3])
def test_ice_servers_must_be_a_sequence(ice_servers: object) -> None:
    name = type(ice_servers).__name__
    with pytest.raises(
        TypeError, match=f"^ice_servers must be a sequence of IceServer, not {name}$"
    ):
        Gatherer(ice_servers)  # type: ignore[arg-type]


def test_ice_servers_must_hold_ice_servers() -> None:
    with pytest.raises(TypeError, match=r"^ice_servers must hold IceServer objects, not str$"):
        Gatherer([IceServer("stun:127.0.0.1"), "stun:127.0.0.2"])  # type: ignore[list-item]


def test_ice_servers_from_an_iterator_are_all_used() -> None:
    servers = iter([IceServer("stun:127.0.0.1"), IceServer("stun:127.0.0.2")])
    assert len(servers_from_config(servers)) == 2  # type: ignore[arg-type]


def test_a_server_given_twice_is_asked_once() -> None:
    """Its errors were told twice per base."""
    servers = servers_from_config(
        [
            IceServer("stun:127.0.0.1:9"),
            IceServer(["STUN:127.0.0.1:9", "stun:127.0.0.1"]),  # the same, then another port
            IceServer("turn:127.0.0.1", "alice", "a"),
            IceServer("turn:127.0.0.1", "bob", "b"),  # other credentials: another server
            IceServer("turn:127.0.0.1", "bob", "b"),
        ]
    )
    assert [(s.url.url, s.username) for s in servers] == [
        ("stun:127.0.0.1:9", None),
        ("stun:127.0.0.1", None),
        ("turn:127.0.0.1", "alice"),
        ("turn:127.0.0.1", "bob"),
    ]
    assert [s.index for s in servers] == [0, 1, 2, 3]


@pytest.mark.parametrize("url", ["turn:127.0.0.1", "turns:127.0.0.1"])
@pytest.mark.parametrize(("username", "credential"), [("", ""), ("", "secret"), ("alice", "")])
def test_turn_refuses_empty_credentials(url: str, username: str, credential: str) -> None:
    with pytest.raises(InvalidServerUrl, match=f"^'{url}' needs a non-empty username"):
        Gatherer([IceServer(url, username, credential)])


@pytest.mark.parametrize(
    ("username", "credential", "problem"),
    [
        ("x" * 509, "secret", "the username is 509 bytes, TURN allows 508"),
        ("é" * 255, "secret", "the username is 510 bytes"),
        ("a\nb", "secret", "the username has a control character"),
        ("a\udcff", "secret", "the username is not valid Unicode"),
        ("alice", "s\udcffcret", "the credential is not valid Unicode"),
    ],
)
def test_turn_refuses_a_username_no_server_could_be_sent(
    username: str, credential: str, problem: str
) -> None:
    """Caught at construction: sent, it failed inside the event loop's callback."""
    with pytest.raises(InvalidServerUrl, match=f"^'turn:127.0.0.1': {problem}"):
        Gatherer([IceServer("turn:127.0.0.1", username, credential)])
    Gatherer([IceServer("turn:127.0.0.1", "x" * 508, credential.replace("\udcff", "e"))])


@pytest.mark.parametrize("line", [None, b"candidate:1 1 udp 1 127.0.0.1 9 typ host", 5])
def test_candidate_parse_refuses_a_non_str(line: object) -> None:
    name = type(line).__name__
    with pytest.raises(TypeError, match=f"^Candidate.parse line must be a str, not {name}$"):
        Candidate.parse(line)


def test_candidate_parse_still_raises_candidate_error_for_a_bad_line() -> None:
    with pytest.raises(CandidateError, match="invalid candidate line"):
        Candidate.parse("candidate:1 1 udp")


@pytest.mark.parametrize("field", ["initial_rto", "min_rto", "max_rto", "server_deadline"])
@pytest.mark.parametrize("value", ["2", True, None])
def test_timing_refuses_a_non_number(field: str, value: object) -> None:
    name = type(value).__name__
    with pytest.raises(TypeError, match=f"^Timing.{field} must be a number, not {name}$"):
        Timing(**{field: value})


@pytest.mark.parametrize(("initial", "low", "high"), [(0.01, 0.05, 1.0), (2.0, 0.05, 1.0)])
def test_timing_refuses_an_initial_rto_its_bounds_would_contradict(
    initial: float, low: float, high: float
) -> None:
    with pytest.raises(ValueError, match=r"initial_rto \(.*\) must lie between"):
        Timing(initial_rto=initial, min_rto=low, max_rto=high)


@pytest.mark.parametrize("field", ["initial_rto", "min_rto", "max_rto", "server_deadline"])
@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_timing_refuses_a_value_out_of_range(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"^Timing.{field} must be a positive number"):
        Timing(**{field: value})


def test_timing_takes_ints_as_seconds() -> None:
    assert Timing(initial_rto=1, min_rto=1, max_rto=2, server_deadline=3).server_deadline == 3


@pytest.mark.parametrize("field", ["initial_rto", "min_rto", "max_rto", "server_deadline"])
def test_timing_refuses_an_int_past_floats_range(field: str) -> None:
    """It raised OverflowError from math.isfinite, naming no field (a review)."""
    with pytest.raises(ValueError, match=f"^Timing.{field} must be a positive number"):
        Timing(**{field: 10**400})


def test_timing_keeps_a_float_subclass_as_a_float() -> None:
    """A numpy scalar's `> 0` gives a numpy bool, which the compiled build refused with
    "bool object expected" while plain Python took it (a review)."""

    class Seconds(float):
        def __gt__(self, other: object) -> object:  # as numpy's: not a bool
            return [float(self) > other]  # type: ignore[operator]

    timing = Timing(server_deadline=Seconds(3.0))
    assert timing.server_deadline == 3.0 and type(timing.server_deadline) is float


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "::",
        "ff02::1",
        "::ffff:224.0.0.1",
        "::ffff:0.0.0.0",
    ],
)
def test_a_peer_that_is_not_one_host_is_refused(host: str) -> None:
    """send() to a multicast group went out, where a server URL with one is refused."""
    from ice_engine.options import peer_address

    with pytest.raises(ValueError, match=f"peer {re.escape(host)} is not a unicast address"):
        peer_address((host, 9))
    assert peer_address(("198.51.100.9", 9)) == ("198.51.100.9", 9)
    assert peer_address(("2001:DB8::9", 9)) == ("2001:db8::9", 9)


def test_an_ipv4_mapped_peer_is_the_ipv4_address_it_carries() -> None:
    """send() to ::ffff:a.b.c.d from an IPv6 base was an OSError from the kernel (the
    sockets are IPv6 only), and from an IPv4 base refused as another family; it is the
    IPv4 peer, as the same address in a server URL is."""
    from ice_engine.options import peer_address

    assert peer_address(("::ffff:198.51.100.9", 9)) == ("198.51.100.9", 9)
    assert peer_address(("::FFFF:c633:6409", 9)) == ("198.51.100.9", 9)


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses())
def test_peers_and_server_urls_follow_one_rule(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    """A peer is refused exactly where a server URL with that address would be."""
    from ice_engine.options import peer_address
    from ice_engine.urls import not_unicast

    host = str(ip)
    url = f"stun:[{host}]" if ip.version == 6 else f"stun:{host}"
    try:
        parse_server_url(url)
        url_ok = True
    except InvalidServerUrl:
        url_ok = False
    try:
        peer_address((host, 9))
        peer_ok = True
    except ValueError:
        peer_ok = False
    assert url_ok == peer_ok == (not_unicast(ip) is None)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "2", True])
async def test_check_relays_refuses_a_timeout_that_is_no_duration(timeout: object) -> None:
    from ice_engine.relaycheck import check_relays

    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        await check_relays([], timeout=timeout)  # type: ignore[arg-type]


def test_an_ice_server_from_the_browsers_json_ignores_what_it_does_not_know() -> None:
    init = {"urls": ["stun:198.51.100.10", "turn:198.51.100.10?transport=tcp"],
            "username": "alice", "credential": "wonderland", "credentialType": "password",
            "comment": "a member some signalling server adds"}  # fmt: skip
    server = IceServer.from_json(init)
    assert server == IceServer(init["urls"], "alice", "wonderland")
    assert "wonderland" not in repr(server)
    assert IceServer.from_json({"urls": "stun:198.51.100.10"}).url_list == ["stun:198.51.100.10"]
    Gatherer([IceServer.from_json(init)])  # its URLs parse


@pytest.mark.parametrize(
    ("init", "error", "message"),
    [
        ({}, ValueError, r"an RTCIceServer needs urls, and has only \[\]"),
        ({"url": "stun:x"}, ValueError, r"needs urls, and has only \['url'\]"),
        ({"urls": "stun:x", "credentialType": "oauth"}, ValueError, "credentialType 'oauth'"),
        ({"urls": 3}, TypeError, "urls must be a URL string or a list of them"),
        ({"urls": "turn:x", "username": 5}, TypeError, "username must be a string"),
        (["stun:x"], TypeError, "an RTCIceServer must be a dict, not list"),
    ],
)
def test_an_ice_server_from_json_that_is_wrong_says_what(
    init: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        IceServer.from_json(init)  # type: ignore[arg-type]


def test_relay_checks_checks_its_servers_at_the_call_before_anything_is_sent() -> None:
    from ice_engine.relaycheck import relay_checks

    with pytest.raises(InvalidServerUrl, match="username"):
        relay_checks([IceServer("turn:198.51.100.10")])
    with pytest.raises(ValueError, match="timeout"):
        relay_checks([], timeout=0)
    with pytest.raises(ValueError, match="timeout"):  # was OverflowError, naming nothing
        relay_checks([], timeout=10**400)
    with pytest.raises(ValueError, match=r"need a turn: or turns: server, not \['stun:x'\]"):
        relay_checks([IceServer("stun:x")])  # was an empty report, ok False, no error
