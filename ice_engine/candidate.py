"""The candidate model: RFC 8839 `candidate-attribute` grammar, priorities and foundations.

Parsing is on every signalling path, so it is a single `str.split` and a walk over the
tokens: no regular expressions, no `ipaddress` round trips.
"""

from __future__ import annotations

import functools
import zlib
from typing import NamedTuple

__all__ = [
    "Candidate",
    "CandidateError",
    "TYPE_PREFERENCES",
    "compute_foundation",
    "compute_priority",
    "relay_type_preference",
]

#: RFC 8445 §5.1.2.2 recommended type preferences. Relays are refined by transport below.
TYPE_PREFERENCES = {"host": 126, "prflx": 110, "srflx": 100, "relay": 2}

_RELAY_TYPE_PREFERENCE = {"udp": 2, "tcp": 1, "tls": 0}
_ICE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")
_TCP_TYPES = frozenset(("active", "passive", "so"))
_RESERVED_NAMES = frozenset(
    ("generation", "ufrag", "network-cost", "network-id", "raddr", "rport", "tcptype")
)


class CandidateError(ValueError):
    """A malformed candidate line; `field` names the part that is wrong."""

    def __init__(self, field: str, problem: str, line: str) -> None:
        super().__init__(f"invalid candidate {field}: {problem} in {line!r}")
        self.field = field
        self.line = line


def relay_type_preference(server_transport: str) -> int:
    """Relays over UDP beat TCP beat TLS, as libwebrtc orders them (each costs more to use)."""
    return _RELAY_TYPE_PREFERENCE[server_transport]


def compute_priority(type_preference: int, local_preference: int, component: int) -> int:
    """RFC 8445 §5.1.2.1."""
    return (type_preference << 24) | (local_preference << 8) | (256 - component)


@functools.lru_cache(maxsize=4096)
def compute_foundation(
    candidate_type: str, base_address: str, protocol: str, server: str | None = None
) -> str:
    """RFC 8445 §5.1.1.3: equal for the same type, base IP, server and transport.

    A CRC keeps it stable across generations and processes (browsers keep foundations over
    an ICE restart) and within the grammar's 32 ice-chars.
    """
    key = f"{candidate_type}|{base_address}|{protocol}|{server or ''}"
    return str(zlib.crc32(key.encode()))


_new = tuple.__new__
_NUMERIC_EXTENSIONS = frozenset(("generation", "network-id", "network-cost"))


def _number(value: str, field: str, line: str, low: int, high: int) -> None:
    if not (value.isascii() and value.isdigit()):
        raise CandidateError(field, f"{value!r} is not a number", line)
    if not low <= int(value) <= high:
        raise CandidateError(field, f"{value} is not in {low}-{high}", line)


def _explain(line: str, text: str) -> CandidateError:
    """Find what is wrong with a line the fast path rejected (errors may be slow)."""
    if not text.isascii():
        return CandidateError("line", "non-ASCII characters", line)
    bits = text.split()
    if len(bits) < 8:
        return CandidateError("line", f"{len(bits)} fields, at least 8 needed", line)
    try:
        foundation = bits[0]
        if not (len(foundation) <= 32 and _ICE_CHARS.issuperset(foundation)):
            raise CandidateError("foundation", f"{foundation!r} is not 1-32 ice-chars", line)
        _number(bits[1], "component", line, 1, 256)
        _number(bits[3], "priority", line, 1, 0xFFFFFFFF)
        _number(bits[5], "port", line, 0, 65535)
        if bits[6] != "typ":
            raise CandidateError("typ", f"expected 'typ', found {bits[6]!r}", line)
        if len(bits) % 2:
            raise CandidateError("extensions", f"{bits[-1]!r} has no value", line)
        seen: set[str] = set()
        for i in range(8, len(bits), 2):
            name, value = bits[i], bits[i + 1]
            if name in seen:
                raise CandidateError(name, "given twice", line)
            seen.add(name)
            if name == "raddr" and i != 8:
                raise CandidateError("raddr", "must follow typ", line)
            if name == "rport":
                if i != 8 and not (i == 10 and bits[8] == "raddr"):
                    raise CandidateError("rport", "must follow typ and raddr", line)
                _number(value, "rport", line, 0, 65535)
            if name == "tcptype" and value not in _TCP_TYPES:
                raise CandidateError("tcptype", f"{value!r} is not active/passive/so", line)
            if name in _NUMERIC_EXTENSIONS:
                _number(value, name, line, 0, 0xFFFFFFFF)
    except CandidateError as error:
        return error
    return CandidateError("line", "not a candidate", line)


class Candidate(NamedTuple):
    """One ICE candidate, with every extension attribute a browser sends.

    A NamedTuple: immutable, hashable and the cheapest object Python can build, which is
    what makes parsing fast. `extensions` keeps unknown name/value pairs in their original
    order, so that a candidate relayed through us reaches the peer unchanged.
    """

    foundation: str
    component: int
    protocol: str
    priority: int
    address: str
    port: int
    type: str
    related_address: str | None = None
    related_port: int | None = None
    tcptype: str | None = None
    generation: int | None = None
    ufrag: str | None = None
    network_id: int | None = None
    network_cost: int | None = None
    extensions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, line: str) -> Candidate:
        """Parse `candidate:…`, `a=candidate:…` or the bare attribute value.

        The fast path converts without checking each step; anything odd sends the line to
        `_explain`, which names the field that is wrong.
        """
        text = line
        if text[:2] == "a=":
            text = text[2:]
        if text[:10] == "candidate:":
            text = text[10:]
        bits = text.split()
        count = len(bits)
        related_address = related_port = tcptype = generation = ufrag = None
        network_id = network_cost = None
        extensions: list[tuple[str, str]] | None = None
        try:
            foundation, component, protocol, priority, address, port, typ, kind = bits[:8]
            component_id, priority_value, port_number = int(component), int(priority), int(port)
            i = 8
            while i < count:
                name = bits[i]
                value = bits[i + 1]
                i += 2
                if name == "generation" and generation is None and value.isdigit():
                    generation = int(value)
                elif name == "ufrag" and ufrag is None:
                    ufrag = value
                elif name == "network-cost" and network_cost is None and value.isdigit():
                    network_cost = int(value)
                elif name == "network-id" and network_id is None and value.isdigit():
                    network_id = int(value)
                elif name == "raddr" and i == 10:
                    related_address = value
                elif (
                    name == "rport"
                    and value.isdigit()
                    and (i == 10 or (i == 12 and related_address is not None))
                ):
                    related_port = int(value)
                elif name == "tcptype" and tcptype is None and value in _TCP_TYPES:
                    tcptype = value
                elif name in _RESERVED_NAMES or (
                    extensions is not None and any(name == seen for seen, _ in extensions)
                ):
                    raise ValueError(name)
                elif extensions is None:
                    extensions = [(name, value)]
                else:
                    extensions.append((name, value))
        except (ValueError, IndexError):
            raise _explain(line, text) from None
        if not (
            typ == "typ"
            and text.isascii()
            and component.isdigit()
            and priority.isdigit()
            and port.isdigit()
            and 0 < component_id <= 256
            and 0 < priority_value <= 0xFFFFFFFF
            and port_number <= 65535
            and (related_port is None or related_port <= 65535)
            and len(foundation) <= 32
            and _ICE_CHARS.issuperset(foundation)
            and (generation is None or generation <= 0xFFFFFFFF)
            and (network_id is None or network_id <= 0xFFFFFFFF)
            and (network_cost is None or network_cost <= 0xFFFFFFFF)
        ):
            raise _explain(line, text)
        return _new(
            cls,
            (
                foundation,
                component_id,
                protocol,
                priority_value,
                address,
                port_number,
                kind,
                related_address,
                related_port,
                tcptype,
                generation,
                ufrag,
                network_id,
                network_cost,
                () if extensions is None else tuple(extensions),
            ),
        )

    def to_sdp(self, *, with_ufrag: bool = True) -> str:
        """The `candidate:…` string, extension attributes in the order browsers send them.

        `with_ufrag=False` gives the SDP `a=candidate` form, which browsers send without it.
        """
        line = (
            f"candidate:{self.foundation} {self.component} {self.protocol} {self.priority} "
            f"{self.address} {self.port} typ {self.type}"
        )
        if self.related_address is not None:
            line += f" raddr {self.related_address}"
        if self.related_port is not None:
            line += f" rport {self.related_port}"
        if self.tcptype is not None:
            line += f" tcptype {self.tcptype}"
        if self.generation is not None:
            line += f" generation {self.generation}"
        if self.ufrag is not None and with_ufrag:
            line += f" ufrag {self.ufrag}"
        if self.network_id is not None:
            line += f" network-id {self.network_id}"
        if self.network_cost is not None:
            line += f" network-cost {self.network_cost}"
        for name, value in self.extensions:
            line += f" {name} {value}"
        return line

    def __str__(self) -> str:
        return self.to_sdp()
