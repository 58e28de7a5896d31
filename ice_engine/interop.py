"""Hand ice-engine candidates to aioice and aiortc, and take aioice's back.

`to_aioice` gives an `aioice.Candidate` (aioice is a dependency of ice-engine);
`from_aioice` turns one back into an `IceCandidate` for signalling; `to_aiortc` gives an
`aiortc.RTCIceCandidate` with its sdpMid and sdpMLineIndex, for
`RTCPeerConnection.addIceCandidate()` on the remote side. aiortc is optional and imported
only when `to_aiortc` is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aioice

from .candidate import Candidate
from .credentials import ICE_CHARS
from .events import IceCandidate
from .options import check_mids

if TYPE_CHECKING:  # aiortc is optional: `pip install aiortc`
    from aiortc import RTCIceCandidate  # type: ignore[import-not-found, unused-ignore]

__all__ = ["from_aioice", "to_aioice", "to_aiortc"]

_ICE_CHARS = frozenset(ICE_CHARS)  # a ufrag's (RFC 8839)


def _parsed(candidate: IceCandidate) -> Candidate:
    if not isinstance(candidate, IceCandidate):
        raise TypeError(f"expected an IceCandidate, not {type(candidate).__name__}")
    if candidate.is_end_of_candidates:
        raise ValueError(
            "an end-of-candidates IceCandidate has no candidate to convert "
            "(check candidate.is_end_of_candidates first)"
        )
    return (
        candidate.parsed if candidate.parsed is not None else Candidate.parse(candidate.candidate)
    )


def to_aioice(candidate: IceCandidate) -> aioice.Candidate:
    """An `aioice.Candidate` with the same fields (and `generation`, `tcptype`).

    aioice keeps no ufrag, network-id or other extension attributes; `from_aioice` takes
    the ufrag back as an argument. Raises ValueError for an end-of-candidates.
    """
    p = _parsed(candidate)
    return aioice.Candidate(
        foundation=p.foundation,
        component=p.component,
        transport=p.protocol,
        priority=p.priority,
        host=p.address,
        port=p.port,
        type=p.type,
        related_address=p.related_address,
        related_port=p.related_port,
        tcptype=p.tcptype,
        generation=p.generation,
    )


def from_aioice(
    candidate: aioice.Candidate,
    *,
    sdp_mid: str = "0",
    sdp_mline_index: int = 0,
    username_fragment: str = "",
) -> IceCandidate:
    """An `IceCandidate` (RTCIceCandidate) from an `aioice.Candidate`, ready for signalling.

    aioice candidates know neither their transport nor their ufrag: pass `sdp_mid`,
    `sdp_mline_index` and `username_fragment` (from `aioice.Connection.local_username`).
    The candidate string carries `ufrag` when one is given, as ice-engine's do.
    """
    if not isinstance(candidate, aioice.Candidate):
        raise TypeError(f"expected an aioice.Candidate, not {type(candidate).__name__}")
    if not isinstance(sdp_mid, str):
        raise TypeError(f"sdp_mid must be a str, not {type(sdp_mid).__name__}")
    check_mids([sdp_mid])  # an SDP token: it goes into the SDP verbatim
    if not isinstance(sdp_mline_index, int) or isinstance(sdp_mline_index, bool):
        raise TypeError(f"sdp_mline_index must be an int, not {type(sdp_mline_index).__name__}")
    if sdp_mline_index < 0:
        raise ValueError(f"sdp_mline_index must not be negative: {sdp_mline_index}")
    if not isinstance(username_fragment, str):
        raise TypeError(f"username_fragment must be a str, not {type(username_fragment).__name__}")
    if len(username_fragment) > 256 or not _ICE_CHARS.issuperset(username_fragment):
        raise ValueError(f"username_fragment {username_fragment!r} is not 0-256 ice-chars")
    parsed = Candidate.parse(candidate.to_sdp())
    if username_fragment and parsed.ufrag is None:
        parsed = parsed._replace(ufrag=username_fragment)
    return IceCandidate(
        candidate=parsed.to_sdp(),
        sdpMid=sdp_mid,
        sdpMLineIndex=sdp_mline_index,
        usernameFragment=username_fragment,
        parsed=parsed,
    )


def to_aiortc(candidate: IceCandidate) -> RTCIceCandidate:
    """An `aiortc.RTCIceCandidate` with the candidate's sdpMid and sdpMLineIndex set.

    Needs aiortc (`pip install aiortc`); raises ImportError saying so without it, and
    ValueError for an end-of-candidates (aiortc signals that with `addIceCandidate(None)`).
    """
    p = _parsed(candidate)
    try:
        from aiortc.sdp import candidate_from_sdp  # type: ignore[import-not-found, unused-ignore]
    except ImportError as error:
        raise ImportError(
            "ice_engine.interop.to_aiortc needs aiortc: pip install aiortc"
        ) from error
    # aiortc's parser wants the attribute value without the "candidate:" prefix
    result = candidate_from_sdp(p.to_sdp()[len("candidate:") :])
    result.sdpMid = candidate.sdpMid
    result.sdpMLineIndex = candidate.sdpMLineIndex
    return result
