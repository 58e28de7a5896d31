"""Events, named and shaped as a browser's RTCPeerConnection fires them.

Attribute names follow the W3C objects (`sdpMid`, `usernameFragment`, `errorCode`) so
that code ported from JavaScript reads the same; `to_json()` is what the CLI prints, with
`generation` and `t` beside the browser's fields, so a program can tell generations apart.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .candidate import Candidate
from .frozen import fast_init

__all__ = [
    "CandidateRemovedEvent",
    "Event",
    "GatheringState",
    "IceCandidate",
    "IceCandidateErrorEvent",
    "IceCandidateEvent",
    "IceGatheringStateChangeEvent",
]


class GatheringState(enum.StrEnum):
    NEW = "new"
    GATHERING = "gathering"
    COMPLETE = "complete"


@fast_init
@dataclass(frozen=True, slots=True)
class IceCandidate:
    """An RTCIceCandidate: `candidate` is `""` for end-of-candidates (RFC 8838).

    The last three are local knowledge, never signalled (not in `to_json()`), and None in
    a peer's candidates: `base` is the (address, port) of the UDP socket a host or srflx
    candidate was gathered from, which `Gatherer.send` sends from; `url` the STUN or TURN
    server's URL a srflx or relay candidate came from, and `relayProtocol` how a relay
    candidate reaches its TURN server, "udp", "tcp" or "tls" (as a browser's
    RTCIceCandidate has them).
    """

    candidate: str
    sdpMid: str
    sdpMLineIndex: int
    usernameFragment: str
    parsed: Candidate | None = None
    base: tuple[str, int] | None = field(default=None, repr=False, compare=False)
    url: str | None = field(default=None, repr=False, compare=False)
    relayProtocol: str | None = field(default=None, repr=False, compare=False)

    @property
    def is_end_of_candidates(self) -> bool:
        return not self.candidate

    @property
    def foundation(self) -> str | None:
        return self.parsed.foundation if self.parsed else None

    @property
    def component(self) -> int | None:
        return self.parsed.component if self.parsed else None

    @property
    def protocol(self) -> str | None:
        return self.parsed.protocol if self.parsed else None

    @property
    def priority(self) -> int | None:
        return self.parsed.priority if self.parsed else None

    @property
    def address(self) -> str | None:
        return self.parsed.address if self.parsed else None

    @property
    def port(self) -> int | None:
        return self.parsed.port if self.parsed else None

    @property
    def type(self) -> str | None:
        return self.parsed.type if self.parsed else None

    @property
    def relatedAddress(self) -> str | None:
        return self.parsed.related_address if self.parsed else None

    @property
    def relatedPort(self) -> int | None:
        return self.parsed.related_port if self.parsed else None

    @property
    def tcpType(self) -> str | None:
        return self.parsed.tcptype if self.parsed else None

    @classmethod
    def from_json(
        cls, init: Mapping[str, Any], *, mids: Sequence[str] | None = None
    ) -> IceCandidate:
        """The candidate a peer signalled: an RTCIceCandidateInit, as a browser's `toJSON()`
        or `to_json()` gives it, with its line parsed (`type`, `address`, ... set).

        A browser's `toJSON()` gives both `sdpMid` and `sdpMLineIndex`, but an
        RTCIceCandidateInit needs only one: with `mids`, the m-lines' mids in SDP order,
        the one left out (or null) is found from the other, as `addIceCandidate` finds it
        in the remote description. A missing `usernameFragment` is taken from the line's
        `ufrag`. A malformed line raises `CandidateError`, a missing or mistyped field
        `ValueError` or `TypeError`, each naming it; other keys are ignored.
        """
        if not isinstance(init, Mapping):
            raise TypeError(f"an RTCIceCandidateInit is a mapping, not {type(init).__name__}")
        line = init.get("candidate", "")
        mid, index = init.get("sdpMid"), init.get("sdpMLineIndex")
        ufrag = init.get("usernameFragment")
        if not isinstance(line, str):
            raise _init_error("candidate", line, "a string")
        if mid is not None and not isinstance(mid, str):
            raise _init_error("sdpMid", mid, "a string")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise _init_error("sdpMLineIndex", index, "an integer")
        if index is not None and index < 0:
            raise ValueError(f"RTCIceCandidateInit sdpMLineIndex must be 0 or more, not {index}")
        if ufrag is not None and not isinstance(ufrag, str):
            raise _init_error("usernameFragment", ufrag, "a string or null")
        if mid is None or index is None:
            mid, index = _fill_in_m_line(mid, index, mids)
        parsed = Candidate.parse(line) if line else None
        if ufrag is None:
            ufrag = (parsed.ufrag if parsed else None) or ""
        return cls(line, mid, index, ufrag, parsed)

    def to_json(self) -> dict[str, Any]:
        """RTCIceCandidate.toJSON(): what goes over signalling."""
        return {
            "candidate": self.candidate,
            "sdpMid": self.sdpMid,
            "sdpMLineIndex": self.sdpMLineIndex,
            "usernameFragment": self.usernameFragment,
        }


def _fill_in_m_line(
    mid: str | None, index: int | None, mids: Sequence[str] | None
) -> tuple[str, int]:
    """The m-line's mid and index from the one of them a peer sent, and the SDP's mids."""
    if mid is None and index is None:
        raise ValueError("RTCIceCandidateInit has neither sdpMid nor sdpMLineIndex")
    if mids is None:
        missing = "sdpMid" if mid is None else "sdpMLineIndex"
        raise ValueError(
            f"RTCIceCandidateInit has no {missing}: pass mids=, the m-lines' mids in order,"
            " to find it"
        )
    # a set has no order, and a generator would be used up by the check
    if not isinstance(mids, Sequence) or isinstance(mids, str):
        raise TypeError(f"mids must be a sequence of strings, not {type(mids).__name__}")
    if not all(isinstance(each, str) for each in mids):
        raise TypeError(f"mids must be a sequence of strings, not {mids!r}")
    if mid is not None:
        if mid not in mids:
            raise ValueError(f"RTCIceCandidateInit sdpMid {mid!r} is none of the mids {mids!r}")
        return mid, list(mids).index(mid)
    if index is None or index >= len(mids):
        raise ValueError(
            f"RTCIceCandidateInit sdpMLineIndex {index} is past the last of {len(mids)} m-lines"
        )
    return mids[index], index


def _init_error(name: str, value: object, expected: str) -> Exception:
    """ValueError for a field left out, TypeError for one of the wrong type."""
    if value is None:
        return ValueError(f"RTCIceCandidateInit has no {name}")
    return TypeError(f"RTCIceCandidateInit {name} must be {expected}, not {value!r}")


@fast_init
@dataclass(frozen=True, slots=True)
class IceCandidateEvent:
    """`icecandidate`: a candidate, an end-of-candidates (`""`), or `None` when complete.

    `url` is the STUN or TURN server a srflx or relay candidate was learnt from, as the
    browser's RTCPeerConnectionIceEvent.url gives it; None for the others.
    """

    type: ClassVar[str] = "icecandidate"
    candidate: IceCandidate | None
    generation: int
    t: float
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        event = {
            "event": self.type,
            "candidate": None if self.candidate is None else self.candidate.to_json(),
            "generation": self.generation,
            "t": round(self.t, 6),
        }
        if self.url is not None:
            event["url"] = self.url
        return event


@fast_init
@dataclass(frozen=True, slots=True)
class IceGatheringStateChangeEvent:
    """`icegatheringstatechange`, aggregated over all transports."""

    type: ClassVar[str] = "icegatheringstatechange"
    state: GatheringState
    generation: int
    t: float

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.type,
            "state": self.state.value,
            "generation": self.generation,
            "t": round(self.t, 6),
        }


@fast_init
@dataclass(frozen=True, slots=True)
class IceCandidateErrorEvent:
    """`icecandidateerror`: a STUN/TURN server failed for one local base.

    `address`/`port` are the local end the server was asked from: the base, the socket a
    437 moved an allocation to, a TURN TCP/TLS connection's own port (port None if it
    never came up, or where the core is not told it); both None when no base was
    involved (a DNS failure), and where no candidate shows the base's address: relay-only,
    RFC 8828 mode 3, mDNS.
    `errorCode` is the STUN error code, or 701 when the server was not reached; 700 for
    a success without the address it should carry, 600 for an error response without a
    readable ERROR-CODE.
    """

    type: ClassVar[str] = "icecandidateerror"
    url: str
    address: str | None
    port: int | None
    errorCode: int
    errorText: str
    generation: int
    t: float

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.type,
            "url": self.url,
            "address": self.address,
            "port": self.port,
            "errorCode": self.errorCode,
            "errorText": self.errorText,
            "generation": self.generation,
            "t": round(self.t, 6),
        }


@fast_init
@dataclass(frozen=True, slots=True)
class CandidateRemovedEvent:
    """`candidateremoved` (libwebrtc's CandidatesRemoved), while its transport still
    gathers: a candidate whose base went away (continual gathering), or a relay whose
    allocation was lost."""

    type: ClassVar[str] = "candidateremoved"
    candidate: IceCandidate
    generation: int
    t: float

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.type,
            "candidate": self.candidate.to_json(),
            "generation": self.generation,
            "t": round(self.t, 6),
        }


Event = (
    IceCandidateEvent
    | IceGatheringStateChangeEvent
    | IceCandidateErrorEvent
    | CandidateRemovedEvent
)
"""What `Gatherer.gather()` yields: any of the four event records."""
