"""ICE server URL parsing (RFC 7064, RFC 7065)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ice_engine.urls import InvalidServerUrl, ServerUrl, hostport, parse_server_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("stun:stun.example.test", ("stun", "stun.example.test", 3478, False, "udp")),
        ("stun:stun.example.test:19302", ("stun", "stun.example.test", 19302, True, "udp")),
        ("stuns:stun.example.test", ("stuns", "stun.example.test", 5349, False, "tcp")),
        ("turn:turn.example.test", ("turn", "turn.example.test", 3478, False, "udp")),
        ("turn:turn.example.test?transport=tcp", ("turn", "turn.example.test", 3478, False, "tcp")),
        ("turn:turn.example.test:80?transport=udp", ("turn", "turn.example.test", 80, True, "udp")),
        (
            "turns:turn.example.test:443?transport=tcp",
            ("turns", "turn.example.test", 443, True, "tcp"),
        ),
        ("TURN:Turn.Example.TEST?Transport=TCP", ("turn", "turn.example.test", 3478, False, "tcp")),
        ("stun:198.51.100.7", ("stun", "198.51.100.7", 3478, False, "udp")),
        ("stun:[2001:DB8:0::1]:3478", ("stun", "2001:db8::1", 3478, True, "udp")),
        ("turns:[2001:db8::1]", ("turns", "2001:db8::1", 5349, False, "tcp")),
        ("stun:_under_score.test.", ("stun", "_under_score.test.", 3478, False, "udp")),
        # An IPv4-mapped IPv6 literal was asked from IPv6 bases only: "Network is unreachable".
        ("stun:[::ffff:198.51.100.10]", ("stun", "198.51.100.10", 3478, False, "udp")),
    ],
)
def test_valid_urls(url: str, expected: tuple[str, str, int, bool, str]) -> None:
    parsed = parse_server_url(url)
    assert parsed.url == url
    fields = (parsed.scheme, parsed.host, parsed.port, parsed.explicit_port, parsed.transport)
    assert fields == expected


def test_properties_and_srv_names() -> None:
    cases = {
        "stun:example.test": (False, False, False, "_stun._udp.example.test"),
        "stuns:example.test": (True, False, False, "_stuns._tcp.example.test"),
        "turn:example.test": (False, True, False, "_turn._udp.example.test"),
        "turn:example.test?transport=tcp": (False, True, False, "_turn._tcp.example.test"),
        "turns:example.test": (True, True, False, "_turns._tcp.example.test"),
        "turn:example.test:3478": (False, True, False, None),
        "stun:203.0.113.1": (False, False, True, None),
        "turns:[2001:db8::1]": (True, True, True, None),
    }
    for url, (secure, is_turn, host_is_ip, srv_name) in cases.items():
        parsed = parse_server_url(url)
        assert (parsed.secure, parsed.is_turn, parsed.host_is_ip, parsed.srv_name) == (
            secure,
            is_turn,
            host_is_ip,
            srv_name,
        ), url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty ICE server URL"),
        ("http:example.test", "unknown scheme 'http'"),
        ("example.test", "unknown scheme"),
        ("stun:", "empty host"),
        ("stun::3478", "empty host"),
        ("stun://example.test", "'//'"),
        ("turn://user:pass@example.test", "'//'"),
        ("stun:example.test:abc", "bad port 'abc'"),
        ("stun:example.test:0", "bad port '0'"),
        ("stun:example.test:65536", "bad port '65536'"),
        ("stun:example.test:", "bad port ''"),
        ("stun:example.test:+1", "bad port"),
        ("stun:example.test:99999999999999999999", "bad port"),
        ("stun:2001:db8::1", "without brackets"),
        ("stun:[2001:db8::1", "unclosed"),
        ("stun:[2001:db8::zz]", "bad IPv6 literal"),
        ("stun:[198.51.100.1]", "bad IPv6 literal"),
        ("stun:[2001:db8::1]x", "after the IPv6 literal"),
        ("stun:[fe80::1%25eth0]", "zone identifier"),
        ("stun:user@example.test", "user info"),
        ("stun:example.test?transport=udp", "query"),
        ("stuns:example.test?transport=tcp", "query"),
        ("turn:example.test?proto=udp", "unknown query"),
        ("turn:example.test?transport", "unknown query"),
        ("turn:example.test?transport=sctp", "unknown transport 'sctp'"),
        ("turn:example.test?transport=udp&transport=tcp", "more than one"),
        ("turns:example.test?transport=udp", "DTLS"),
        ("stun: example.test", "whitespace"),
        ("stun:example.test ", "whitespace"),
        ("stun:exa\tmple.test", "whitespace"),
        ("stun:exämple.test", "non-ASCII"),
        ("stun:198.51.100.1:9,stun:198.51.100.2:9", "a comma (give several URLs as a list"),
        ("stun:a.test,b.test", "a comma"),
        ("stun:example.test/path", "path"),
        ("stun:example.test#frag", "path or fragment"),
        ("stun:a..b", "bad host name"),
        ("stun:-a.test", "bad host name"),
        ("stun:" + "a" * 64 + ".test", "bad host name"),
        ("stun:198.51.100.256", "bad IPv4 address"),
        ("stun:1.2.3", "bad IPv4 address"),
        # hex, as inet_aton reads it (127.0.0.1): it went to DNS as a name (a trial)
        ("stun:0x7f.0.0.0x1", "bad IPv4 address"),
        ("stun:example.0XBEEF", "bad IPv4 address"),
        ("stun:0.0.0.0", "unspecified address 0.0.0.0"),
        ("turn:[::]:3478", "unspecified address ::"),
        ("stun:[::ffff:0.0.0.0]", "unspecified address"),
        ("stun:224.0.0.1", "multicast address 224.0.0.1"),
        ("turns:239.255.255.250", "multicast"),
        ("stun:[ff02::1]", "multicast address ff02::1"),
        ("turn:[FF0E::101]?transport=tcp", "multicast"),
        ("stun:255.255.255.255:3478", "broadcast address 255.255.255.255"),
    ],
)
def test_invalid_urls(url: str, problem: str) -> None:
    with pytest.raises(InvalidServerUrl) as caught:
        parse_server_url(url)
    assert problem in str(caught.value)
    assert repr(url) in str(caught.value)


@pytest.mark.parametrize("url", [b"stun:example.test", ["stun:x"], {}, bytearray(b"stun:x")])
def test_not_a_string(url: object) -> None:
    """A list (as IceServer.urls takes) gave the cache's "unhashable type" (a review)."""
    with pytest.raises(InvalidServerUrl, match=f"must be a string, not {type(url).__name__}"):
        parse_server_url(url)  # type: ignore[arg-type]


def test_invalid_url_is_a_value_error() -> None:
    assert issubclass(InvalidServerUrl, ValueError)


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
names = (
    st.lists(labels, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda name: not name.split(".")[-1].isdigit())
)


def is_unicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    address = getattr(address, "ipv4_mapped", None) or address
    return not (address.is_unspecified or address.is_multicast or str(address) == "255.255.255.255")


hosts = st.one_of(names, st.ip_addresses().filter(is_unicast).map(str))


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(["stun", "stuns", "turn", "turns"]),
    host=hosts,
    port=st.none() | st.integers(1, 65535),
    transport=st.none() | st.sampled_from(["udp", "tcp"]),
    upper=st.booleans(),
)
def test_round_trip(
    scheme: str, host: str, port: int | None, transport: str | None, upper: bool
) -> None:
    is_turn = scheme.startswith("turn")
    if not is_turn or (scheme == "turns" and transport == "udp"):
        transport = None
    literal = f"[{host}]" if ":" in host else host
    url = (scheme.upper() if upper else scheme) + ":" + literal
    if port is not None:
        url += f":{port}"
    if transport is not None:
        url += f"?transport={transport}"
    parsed = parse_server_url(url)
    default_port = 5349 if scheme.endswith("s") else 3478
    default_transport = "udp" if scheme in ("stun", "turn") else "tcp"
    assert parsed == ServerUrl(
        url,
        scheme,
        _ipv4_if_mapped(host),
        default_port if port is None else port,
        port is not None,
        transport or default_transport,
    )
    is_ip = _is_ip(host)
    assert parsed.host_is_ip == is_ip
    assert (parsed.srv_name is None) == (port is not None or is_ip)


def _ipv4_if_mapped(host: str) -> str:
    """An IPv4-mapped IPv6 address (::ffff:a.b.c.d) stands for its IPv4 address."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return host if mapped is None else str(mapped)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_any_text(text: str) -> None:
    try:
        parsed = parse_server_url(text)
    except InvalidServerUrl:
        return
    assert parsed.scheme in ("stun", "stuns", "turn", "turns")
    assert 0 < parsed.port <= 65535
    assert parsed.host and parsed.transport in ("udp", "tcp")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_raises_only_invalid_server_url(text: str) -> None:
    check_any_text(text)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["stun:", "stuns:", "turn:", "turns:"]), st.text(max_size=40))
def test_arbitrary_text_after_a_scheme_raises_only_invalid_server_url(
    scheme: str, rest: str
) -> None:
    check_any_text(scheme + rest)


def test_hostport_brackets_ipv6_and_leaves_out_an_unknown_port() -> None:
    assert hostport("203.0.113.2", 40000) == "203.0.113.2:40000"
    assert hostport("2001:db8::2", 40000) == "[2001:db8::2]:40000"
    assert hostport("203.0.113.2", None) == "203.0.113.2"  # a connection never up
