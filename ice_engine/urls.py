"""ICE server URLs: stun:/stuns: (RFC 7064) and turn:/turns: (RFC 7065).

Parsed strictly, as browsers do, so that a typo fails loudly at configuration
time instead of as a silent gathering timeout.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass, field

_DEFAULT_PORTS = {"stun": 3478, "turn": 3478, "stuns": 5349, "turns": 5349}
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_HEX_NUMBER = re.compile("0x[0-9a-f]*")
_PORT = re.compile(r"[0-9]{1,5}\Z")


class InvalidServerUrl(ValueError):
    """An ICE server URL that cannot be used; the message quotes it."""


@dataclass(frozen=True, slots=True)
class ServerUrl:
    url: str
    """The URL as given."""
    scheme: str
    """"stun", "stuns", "turn" or "turns", lower case."""
    host: str
    """Lower-case host name, or a normalized IP literal (IPv6 without brackets)."""
    port: int
    explicit_port: bool
    """DNS SRV is consulted only when False and the host is a name (RFC 5928)."""
    transport: str
    """"udp" or "tcp": the transport to the server (TLS runs over tcp)."""
    host_is_ip: bool = field(init=False, repr=False, compare=False)
    """An IP literal, not a name to resolve (decided once: every gathering asks)."""

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            is_ip = False
        else:
            is_ip = True
        object.__setattr__(self, "host_is_ip", is_ip)

    @property
    def secure(self) -> bool:
        return self.scheme in ("stuns", "turns")

    @property
    def is_turn(self) -> bool:
        return self.scheme in ("turn", "turns")

    @property
    def srv_name(self) -> str | None:
        """The SRV name to query (RFC 5389 §9, RFC 5928), or None when SRV does not apply."""
        if self.explicit_port or self.host_is_ip:
            return None
        return f"_{self.scheme}._{self.transport}.{self.host}"


def parse_server_url(url: str) -> ServerUrl:
    """Parse an ICE server URL, raising InvalidServerUrl that names the problem."""
    if not isinstance(url, str):  # before the cache, which would hash a list first
        raise InvalidServerUrl(f"server URL must be a string, not {type(url).__name__}")
    return _parse(url)


@functools.lru_cache(maxsize=256)
def _parse(url: str) -> ServerUrl:
    if not url:
        raise InvalidServerUrl(f"empty ICE server URL {url!r}")
    if not url.isascii():
        raise _invalid(url, "non-ASCII character (write host names in IDNA form)")
    if any(c.isspace() for c in url) or not url.isprintable():
        raise _invalid(url, "whitespace or control character")
    if "," in url:
        raise _invalid(url, "a comma (give several URLs as a list, not in one string)")
    scheme, colon, rest = url.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in _DEFAULT_PORTS:
        raise _invalid(url, f"unknown scheme {scheme!r} (expected stun, stuns, turn or turns)")
    if rest.startswith("//"):
        raise _invalid(url, "'//' after the scheme (RFC 7064/7065 URLs have no authority part)")
    rest, question, query = rest.partition("?")
    transport = _transport(url, scheme, query if question else None)
    if "@" in rest:
        raise _invalid(url, "user info (pass credentials as username/credential, not in the URL)")
    if "/" in rest or "#" in rest:
        raise _invalid(url, "path or fragment")
    host, port_text = _split_host_port(url, rest)
    host = _normalize_host(url, host)
    if port_text is None:
        port, explicit = _DEFAULT_PORTS[scheme], False
    else:
        if not _PORT.match(port_text) or not 0 < int(port_text) <= 0xFFFF:
            raise _invalid(url, f"bad port {port_text!r}")
        port, explicit = int(port_text), True
    return ServerUrl(url, scheme, host, port, explicit, transport)


def _invalid(url: str, problem: str) -> InvalidServerUrl:
    return InvalidServerUrl(f"{problem} in ICE server URL {url!r}")


def _transport(url: str, scheme: str, query: str | None) -> str:
    default = "udp" if scheme in ("stun", "turn") else "tcp"
    if query is None:
        return default
    if scheme in ("stun", "stuns"):
        raise _invalid(url, "query (stun: and stuns: URLs take no ?transport=)")
    if "&" in query or ";" in query:
        raise _invalid(url, "more than one query parameter")
    key, equals, value = query.partition("=")
    if key.lower() != "transport" or not equals:
        raise _invalid(url, f"unknown query {query!r} (only ?transport=udp|tcp is defined)")
    value = value.lower()
    if value not in ("udp", "tcp"):
        raise _invalid(url, f"unknown transport {value!r} (expected udp or tcp)")
    if scheme == "turns" and value == "udp":
        raise _invalid(url, "turns: with transport=udp (TURN over DTLS is not supported)")
    return value


def _split_host_port(url: str, rest: str) -> tuple[str, str | None]:
    if rest.startswith("["):
        literal, bracket, after = rest[1:].partition("]")
        if not bracket:
            raise _invalid(url, "unclosed '[' in IPv6 literal")
        if after and not after.startswith(":"):
            raise _invalid(url, f"unexpected {after!r} after the IPv6 literal")
        if "%" in literal:
            raise _invalid(url, "IPv6 zone identifier (not supported)")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise _invalid(url, f"bad IPv6 literal {literal!r}") from None
        return literal, after[1:] if after else None
    if rest.count(":") > 1:
        raise _invalid(url, "IPv6 literal without brackets (write [addr]:port)")
    host, colon, port = rest.partition(":")
    return host, port if colon else None


def _normalize_host(url: str, host: str) -> str:
    if not host:
        raise _invalid(url, "empty host")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        kind = not_unicast(ip)
        if kind is not None:
            raise _invalid(url, f"{kind} address {host} (a server needs a unicast one)")
        return str(unmapped(ip))  # ::ffff:a.b.c.d reaches a.b.c.d: from IPv4 bases
    name = host.lower()
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _invalid(url, f"bad host name {host!r}")
    # A name ending in a number (decimal, or hex as 0x7f) is an IPv4 address to browsers
    # (WHATWG URL) and to getaddrinfo, in forms like 127.1 that are refused here.
    if labels[-1].isdigit() or _HEX_NUMBER.fullmatch(labels[-1]):
        raise _invalid(url, f"bad IPv4 address {host!r}")
    return name


def hostport(address: str, port: int | None) -> str:
    """`address:port`, with an IPv6 address in brackets (RFC 3986) so the port stands
    apart; the address alone where no port is known (a TCP connection that never came up)."""
    if port is None:
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def unmapped(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address it stands for,
    wherever it is met (a URL, DNS, the hosts file, a local address); others as they are."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def not_unicast(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a datagram to `ip` could never reach one server ("unspecified", "multicast",
    "broadcast"), or None for a unicast address. The resolver filters answers with it too."""
    return packed_not_unicast(ip.packed)


class UnusableAddress(ValueError):
    """An address a server answered with that can be no candidate's, nor be sent to."""

    def __init__(self, address: tuple[str, int], flaw: str) -> None:
        super().__init__(f"{hostport(*address)} {flaw}")
        self.address = address
        self.flaw = flaw  # "is unspecified", "is multicast", "is broadcast", "has port 0"


def packed_ip(host: str) -> tuple[int, bytes]:
    """(family, packed address) of an IP literal, an IPv4-mapped one (::ffff:a.b.c.d) as
    the IPv4 address it carries: how peers and servers' answers are read, as `unmapped`
    reads URLs. OSError if `host` is no IP literal."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    packed = socket.inet_pton(family, host)
    if packed[:12] == _MAPPED_PREFIX:
        return socket.AF_INET, packed[12:]
    return family, packed


def answered_address(address: tuple[str, int]) -> tuple[str, int]:
    """An (IP, port) from a server's answer (a mapped, relayed or alternate address) as a
    candidate carries it: an IPv4-mapped address as the IPv4 one, as URLs, DNS answers
    and peers are taken. UnusableAddress for one that is not unicast or has port 0: a
    broken or hostile server must not put 0.0.0.0 or a multicast group into the SDP."""
    host, port = address
    try:
        family, packed = packed_ip(host)
    except OSError:
        raise UnusableAddress(address, "is not an IP address") from None
    if family == socket.AF_INET and ":" in host:  # it was IPv4-mapped
        address = socket.inet_ntop(socket.AF_INET, packed), port
    kind = packed_not_unicast(packed)
    if kind is not None:
        raise UnusableAddress(address, f"is {kind}")
    if port == 0:
        raise UnusableAddress(address, "has port 0")
    return address


_MAPPED_PREFIX = bytes(10) + b"\xff\xff"  # ::ffff:a.b.c.d, an IPv4 address in IPv6
_BROADCAST_PACKED = b"\xff\xff\xff\xff"


def packed_not_unicast(packed: bytes) -> str | None:
    """`not_unicast` of a packed address (4 or 16 bytes, as `inet_pton` gives): the one
    rule for server URLs, DNS answers and peers, cheap enough for every send of a data
    path. An IPv4-mapped IPv6 address is judged as the IPv4 address it carries."""
    if len(packed) == 16 and packed[:12] == _MAPPED_PREFIX:
        packed = packed[12:]
    if not any(packed):
        return "unspecified"
    if len(packed) == 4:
        if packed == _BROADCAST_PACKED:
            return "broadcast"
        return "multicast" if 224 <= packed[0] < 240 else None
    return "multicast" if packed[0] == 0xFF else None
