"""The candidate model: RFC 8839 `candidate-attribute` grammar, priorities and foundations.

Parsing is on every signalling path. Lines in the usual attribute order (every browser's)
take a fast path, anything else the general one: a single `str.split` and a walk over the
tokens. No regular expressions, no `ipaddress` round trips.

The module is compiled with mypyc when the package is installed with a C compiler at hand
(see `hatch_build.py`); otherwise it runs as plain Python. The fast path differs: compiled,
`_scan` reads the characters once (a loop over `ord()`s is C there); interpreted, `_split`
splits the line and recognises the browser layouts by their length. Both give exactly
what the general path gives, or nothing.
"""

from __future__ import annotations

import functools
import types
import zlib
from typing import Final, NamedTuple

from .credentials import ICE_CHARS

__all__ = [
    "Candidate",
    "CandidateError",
    "TYPE_PREFERENCES",
    "compute_foundation",
    "compute_priority",
    "relay_type_preference",
]

#: RFC 8445 §5.1.2.2 recommended type preferences. Relays are refined by transport below.
TYPE_PREFERENCES: Final = {"host": 126, "prflx": 110, "srflx": 100, "relay": 2}

_RELAY_TYPE_PREFERENCE: Final = {"udp": 2, "tcp": 1, "tls": 0}
_ICE_CHARS: Final = frozenset(ICE_CHARS)
_TCP_TYPES: Final = frozenset(("active", "passive", "so"))
#: Whitespace a line may carry between fields (tabs) or at its end (CRLF), left out
#: before looking for control characters: `str.split` also splits at \v, \f and \x1c-\x1f.
_LINE_SPACE: Final = str.maketrans("", "", "\t\r\n")
_RESERVED_NAMES: Final = frozenset(
    ("generation", "ufrag", "network-cost", "network-id", "raddr", "rport", "tcptype")
)


class CandidateError(ValueError):
    """A malformed candidate line; `field` names the part that is wrong."""

    def __init__(self, field: str, problem: str, line: str) -> None:
        shown = line if len(line) <= 200 else f"{line[:200]}..."  # `line` keeps it whole
        super().__init__(f"invalid candidate {field}: {problem} in {shown!r}")
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


_new: Final = tuple.__new__
_NUMERIC_EXTENSIONS: Final = frozenset(("generation", "network-id", "network-cost"))
#: "0".."1023" -> int: one lookup converts a small number and proves it is plain digits.
_SMALL: Final = {str(n): n for n in range(1024)}


def _number(value: str, field: str, line: str, low: int, high: int) -> None:
    if not (value.isascii() and value.isdigit()):
        raise CandidateError(field, f"{value!r} is not a number", line)
    digits = value.lstrip("0") or "0"  # zeros in front are taken, as the parser takes them
    # Over 10 digits is out of range anyway; int() (the parser's) refuses over 4300
    if len(digits) > 10 or len(value) > 4300:
        raise CandidateError(field, f"{value[:12]}... has {len(value)} digits", line)
    if not low <= int(digits) <= high:
        raise CandidateError(field, f"{value} is not in {low}-{high}", line)


def _explain(line: str, text: str) -> CandidateError:
    """Find what is wrong with a line `_parse_any` rejected (errors may be slow)."""
    if not text.isascii():
        return CandidateError("line", "non-ASCII characters", line)
    if not text.translate(_LINE_SPACE).isprintable():
        return CandidateError("line", "control characters", line)
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
    def parse(cls, line: object) -> Candidate:
        """Parse `candidate:…`, `a=candidate:…` or the bare attribute value.

        Lines in the usual order take a fast path (`_scan` when compiled, `_split` when
        not); the rest, and every malformed line, goes to `_parse_any`. `line` is typed
        `object` so that a non-str gets this TypeError in both builds (compiled, a `str`
        parameter would be refused by mypyc's own check, naming no parameter).
        """
        if not isinstance(line, str):
            raise TypeError(f"Candidate.parse line must be a str, not {type(line).__name__}")
        found = _scan(cls, line) if _COMPILED else _split(cls, line)
        return found if found is not None else _parse_any(cls, line)

    def to_sdp(self, *, with_ufrag: bool = True) -> str:
        """The `candidate:…` string, extension attributes in the order browsers send them.

        `with_ufrag=False` gives the SDP `a=candidate` form, which browsers send without it.
        """
        (
            foundation, component, protocol, priority, address, port, kind,
            related_address, related_port, tcptype, generation, ufrag, network_id,
            network_cost, extensions,
        ) = self  # fmt: skip
        line = (
            f"candidate:{foundation} {component} {protocol} {priority} {address} {port} "
            f"typ {kind}{'' if related_address is None else ' raddr ' + related_address}"
            f"{'' if related_port is None else f' rport {related_port}'}"
            f"{'' if tcptype is None else ' tcptype ' + tcptype}"
            f"{'' if generation is None else f' generation {generation}'}"
            f"{'' if ufrag is None or not with_ufrag else ' ufrag ' + ufrag}"
            f"{'' if network_id is None else f' network-id {network_id}'}"
            f"{'' if network_cost is None else f' network-cost {network_cost}'}"
        )
        for name, value in extensions:
            line += f" {name} {value}"
        return line

    def __str__(self) -> str:
        return self.to_sdp()


def _parse_any(cls: type[Candidate], line: str) -> Candidate:
    """The general path: any attribute order, unknown extensions, duplicates refused.

    It converts without checking each step; anything odd sends the line to `_explain`,
    which names the field that is wrong.
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
    extensions: dict[str, str] | None = None  # by name: a repeat is found at once
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
            elif name in _RESERVED_NAMES or (extensions is not None and name in extensions):
                raise ValueError(name)
            elif extensions is None:
                extensions = {name: value}
            else:
                extensions[name] = value
    except (ValueError, IndexError):
        raise _explain(line, text) from None
    if not (
        typ == "typ"
        and text.isascii()
        and (text.isprintable() or text.translate(_LINE_SPACE).isprintable())  # no NUL, DEL
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
            () if extensions is None else tuple(extensions.items()),
        ),
    )


def _split(cls: type[Candidate], line: str) -> Candidate | None:
    """The fast path when interpreted: the browser layouts, recognised by their length.

    `generation N ufrag X network-id N network-cost N`, after `raddr X rport N` or
    `tcptype X` or neither, in one unpacking; small numbers by one `_SMALL` lookup, which
    also proves them plain digits. None for anything else (`_parse_any` then decides).
    """
    bits = line.split()
    count = len(bits)
    related_address = tcptype = rport = None
    try:
        if count == 16:
            (
                foundation, component, protocol, priority, address, port, typ, kind,
                n1, v1, n2, ufrag, n3, v3, n4, v4,
            ) = bits  # fmt: skip
        elif count == 20:
            (
                foundation, component, protocol, priority, address, port, typ, kind,
                n5, related_address, n6, rport,
                n1, v1, n2, ufrag, n3, v3, n4, v4,
            ) = bits  # fmt: skip
            if not (n5 == "raddr" and n6 == "rport" and rport.isdigit()):
                return None
        elif count == 18:
            (
                foundation, component, protocol, priority, address, port, typ, kind,
                n5, tcptype,
                n1, v1, n2, ufrag, n3, v3, n4, v4,
            ) = bits  # fmt: skip
            if not (n5 == "tcptype" and tcptype in _TCP_TYPES):
                return None
        else:
            return None
        if not (
            n1 == "generation" and n2 == "ufrag" and n3 == "network-id" and n4 == "network-cost"
        ):
            return None
        if line.startswith("candidate:"):
            foundation = foundation[10:]
        component_id = _SMALL[component]
        generation, network_id, network_cost = _SMALL[v1], _SMALL[v3], _SMALL[v4]
        priority_value, port_number = int(priority), int(port)
        related_port = None if rport is None else int(rport)
    except (KeyError, ValueError):
        return None
    if not (
        typ == "typ"
        and line.isascii()
        and line.isprintable()
        and 0 < component_id <= 256
        and priority.isdigit()
        and port.isdigit()
        and 0 < priority_value <= 0xFFFFFFFF
        and port_number <= 65535
        and (related_port is None or related_port <= 65535)
        and 0 < len(foundation) <= 32
        and (foundation.isalnum() or _ICE_CHARS.issuperset(foundation))
    ):
        return None
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
            (),
        ),
    )


def _ice_chars_end(line: str, i: int, n: int) -> int:
    """Where the foundation at `i` ends: 1-32 ice-chars, then a space or the end; else -1."""
    j = i
    while j < n:
        c = ord(line[j])
        if c == 32:
            break
        if not (48 <= c <= 57 or 97 <= c <= 122 or 65 <= c <= 90 or c == 43 or c == 47):
            return -1
        j += 1
    return j if 0 < j - i <= 32 else -1


def _word_end(line: str, i: int, n: int) -> int:
    """Where the word at `i` ends: printable ASCII, then a space or the end; else -1."""
    j = i
    while j < n:
        c = ord(line[j])
        if c == 32:
            break
        if c < 33 or c > 126:
            return -1
        j += 1
    return j if j > i else -1


def _digits_end(line: str, i: int, n: int) -> tuple[int, int]:
    """(value, end) of the 1-10 ASCII digits at `i`, then a space or the end; end -1 if not."""
    j = i
    value = 0
    while j < n:
        c = ord(line[j]) - 48
        if c == -16:  # a space
            break
        if c < 0 or c > 9 or j - i == 10:
            return 0, -1
        value = value * 10 + c
        j += 1
    return (value, j) if j > i else (0, -1)


def _at(line: str, i: int, word: str) -> bool:
    """`line.startswith(word, i)`, compiled: a slice and a compare cost a third of a loop
    over characters (a str each) and half of `startswith`, a generic call with `i`."""
    return line[i : i + len(word)] == word


def _scan(cls: type[Candidate], line: str) -> Candidate | None:
    """The fast path when compiled: one pass over the characters, no list, no dict.

    It takes the attributes in the order browsers (and `to_sdp`) write them, each optional:
    `raddr rport tcptype generation ufrag network-id network-cost`, single spaces, printable
    ASCII. Anything else gives None and goes to `_parse_any`, so a line read here reads the
    same there.
    """
    n = len(line)
    pos = 10 if _at(line, 0, "candidate:") else 0
    end = _ice_chars_end(line, pos, n)
    if end < 0:
        return None
    foundation = line[pos:end]
    component, end = _digits_end(line, end + 1, n)
    if end < 0 or not 0 < component <= 256:
        return None
    pos = end + 1
    end = _word_end(line, pos, n)
    if end < 0:
        return None
    protocol = line[pos:end]
    priority, end = _digits_end(line, end + 1, n)
    if end < 0 or not 0 < priority <= 0xFFFFFFFF:
        return None
    pos = end + 1
    end = _word_end(line, pos, n)
    if end < 0:
        return None
    address = line[pos:end]
    port, end = _digits_end(line, end + 1, n)
    if end < 0 or port > 65535 or not _at(line, end, " typ "):
        return None
    pos = end + 5
    end = _word_end(line, pos, n)
    if end < 0:
        return None
    kind = line[pos:end]
    related_address: str | None = None
    related_port: int | None = None
    tcptype: str | None = None
    generation: int | None = None
    ufrag: str | None = None
    network_id: int | None = None
    network_cost: int | None = None
    if _at(line, end, " raddr "):
        pos = end + 7
        end = _word_end(line, pos, n)
        if end < 0:
            return None
        related_address = line[pos:end]
    if _at(line, end, " rport "):
        value, end = _digits_end(line, end + 7, n)
        if end < 0 or value > 65535:
            return None
        related_port = value
    if _at(line, end, " tcptype "):
        pos = end + 9
        end = _word_end(line, pos, n)
        if end < 0:
            return None
        tcptype = line[pos:end]
        if tcptype not in _TCP_TYPES:
            return None
    if _at(line, end, " generation "):
        value, end = _digits_end(line, end + 12, n)
        if end < 0 or value > 0xFFFFFFFF:
            return None
        generation = value
    if _at(line, end, " ufrag "):
        pos = end + 7
        end = _word_end(line, pos, n)
        if end < 0:
            return None
        ufrag = line[pos:end]
    if _at(line, end, " network-id "):
        value, end = _digits_end(line, end + 12, n)
        if end < 0 or value > 0xFFFFFFFF:
            return None
        network_id = value
    if _at(line, end, " network-cost "):
        value, end = _digits_end(line, end + 14, n)
        if end < 0 or value > 0xFFFFFFFF:
            return None
        network_cost = value
    if end != n:
        return None
    return _new(
        cls,
        (
            foundation,
            component,
            protocol,
            priority,
            address,
            port,
            kind,
            related_address,
            related_port,
            tcptype,
            generation,
            ufrag,
            network_id,
            network_cost,
            (),
        ),
    )


#: True when this module runs compiled by mypyc (its functions are then builtins).
_COMPILED: Final = not isinstance(_scan, types.FunctionType)
