"""canTrickleIceCandidates and candidates as SDP lines for peers that cannot trickle."""

from __future__ import annotations

import pytest

from ice_engine import Candidate, IceCandidate, can_trickle_ice_candidates, candidate_lines

SESSION = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
MEDIA = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"


def test_unknown_before_a_remote_description() -> None:
    assert can_trickle_ice_candidates(None) is None


@pytest.mark.parametrize(
    ("sdp", "expected"),
    [
        (SESSION + "a=ice-options:trickle\r\n" + MEDIA, True),
        (SESSION + MEDIA + "a=ice-options:ice2 trickle\r\n", True),
        (SESSION + "a=ice-options:ice2\r\n" + MEDIA, False),
        (SESSION + MEDIA, False),
        (SESSION + MEDIA + "a=x-ice-options:trickle\r\n", False),
    ],
)
def test_ice_options_at_session_or_media_level(sdp: str, expected: bool) -> None:
    assert can_trickle_ice_candidates(sdp) is expected


def test_a_non_string_is_refused() -> None:
    with pytest.raises(TypeError):
        can_trickle_ice_candidates(b"v=0")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ["", "  \r\n", '{"type": "offer", "sdp": "v=0..."}', MEDIA + "a=ice-options:trickle"]
)
def test_text_that_is_not_sdp_is_refused(text: str) -> None:
    """It was False, "cannot trickle", for an empty string or a description's JSON."""
    with pytest.raises(ValueError, match="not SDP"):
        can_trickle_ice_candidates(text)


def test_sdp_read_from_a_file_with_its_byte_order_mark_is_sdp() -> None:
    assert can_trickle_ice_candidates("\ufeff" + SESSION + "a=ice-options:trickle\r\n")


def test_candidate_lines_drop_ufrag_and_end_once_complete() -> None:
    line = "candidate:1 1 udp 2130706431 203.0.113.2 5000 typ host generation 0 ufrag abcd network-id 1"
    candidate = IceCandidate(line, "0", 0, "abcd", Candidate.parse(line))
    end = IceCandidate("", "0", 0, "abcd")
    assert candidate_lines([candidate, end], complete=False) == [
        "a=candidate:1 1 udp 2130706431 203.0.113.2 5000 typ host generation 0 network-id 1"
    ]
    assert candidate_lines([candidate], complete=True)[-1] == "a=end-of-candidates"


def test_candidate_lines_want_candidate_objects_not_strings() -> None:
    line = "candidate:1 1 udp 2130706431 203.0.113.2 5000 typ host"
    with pytest.raises(TypeError, match="IceCandidate objects, not str"):
        candidate_lines([line], complete=False)  # type: ignore[list-item]
