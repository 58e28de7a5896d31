"""The little SDP this library needs: does the peer trickle, and candidates as SDP lines."""

from __future__ import annotations

from collections.abc import Iterable

from .events import IceCandidate

__all__ = ["can_trickle_ice_candidates", "candidate_lines"]


def can_trickle_ice_candidates(remote_description: str | None) -> bool | None:
    """RTCPeerConnection.canTrickleIceCandidates for a remote SDP (offer or answer).

    None while no remote description is known; then True if `a=ice-options` lists
    `trickle` at session or media level (RFC 8840 §4.1.1), else False.
    """
    if remote_description is None:
        return None
    if not isinstance(remote_description, str):
        raise TypeError("the remote description must be SDP text (str) or None")
    for line in remote_description.splitlines():
        line = line.strip()
        if line.startswith("a=ice-options:") and "trickle" in line[14:].split():
            return True
    return False


def candidate_lines(candidates: Iterable[IceCandidate], *, complete: bool) -> list[str]:
    """`a=candidate:` lines as browsers put them in SDP (without `ufrag`), and
    `a=end-of-candidates` once gathering is complete (RFC 8840 §4.1.2)."""
    lines = []
    for candidate in candidates:
        if not isinstance(candidate, IceCandidate):
            kind = type(candidate).__name__
            raise TypeError(f"candidate_lines takes IceCandidate objects, not {kind}")
        if candidate.parsed is not None:  # not an end-of-candidates
            lines.append("a=" + candidate.parsed.to_sdp(with_ufrag=False))
    if complete:
        lines.append("a=end-of-candidates")
    return lines
