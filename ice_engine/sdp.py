"""The little SDP this library needs: does the peer trickle, and candidates as SDP lines."""

from __future__ import annotations

from collections.abc import Iterable

from .events import IceCandidate

__all__ = ["can_trickle_ice_candidates", "candidate_lines"]


def can_trickle_ice_candidates(remote_description: str | None) -> bool | None:
    """RTCPeerConnection.canTrickleIceCandidates for a remote SDP (offer or answer).

    None while no remote description is known; then True if `a=ice-options` lists
    `trickle` at session or media level (RFC 8840 §4.1.1), else False. ValueError for
    text that is not SDP (it begins with `v=`, RFC 8866 §5), where a browser's
    setRemoteDescription() fails too: a description's JSON, or an empty string, would
    otherwise pass for a peer that cannot trickle.
    """
    if remote_description is None:
        return None
    if not isinstance(remote_description, str):
        raise TypeError("the remote description must be SDP text (str) or None")
    start = remote_description.lstrip("\ufeff \t\r\n")  # a BOM, from a file read as utf-8
    if not start.startswith("v="):
        first = start.partition("\n")[0][:40]
        raise ValueError(f"the remote description is not SDP (SDP begins with v=): {first!r}")
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
