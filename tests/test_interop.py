"""ice_engine.interop: candidates to aioice and aiortc and back, from a real gathering."""

from __future__ import annotations

import sys

import aioice
import pytest

from ice_engine import Candidate, Gatherer, IceCandidate
from ice_engine.interfaces import local_addresses
from ice_engine.interop import from_aioice, to_aioice, to_aiortc

try:
    import aiortc
    from aiortc.sdp import candidate_to_sdp
except ImportError:  # pragma: no cover - aiortc is in the test extra
    aiortc = None

needs_aiortc = pytest.mark.skipif(
    aiortc is None, reason="aiortc is not installed (pip install aiortc, or the test extra)"
)

SRFLX = (
    "candidate:842163049 1 udp 1677729535 198.51.100.1 40000 typ srflx raddr 203.0.113.2 "
    "rport 50000 generation 0 ufrag abcd network-id 1"
)
TCP = "candidate:1 1 tcp 1518280447 203.0.113.2 9 typ host tcptype active generation 2 ufrag abcd"


def synthetic(line: str, mid: str = "1", index: int = 1) -> IceCandidate:
    parsed = Candidate.parse(line)
    return IceCandidate(line, mid, index, "abcd", parsed)


async def gathered() -> list[IceCandidate]:
    if not local_addresses():
        pytest.skip("this machine has no non-loopback address to gather from")
    async with Gatherer(mids=["0", "1"], components=2) as gatherer:
        async for _ in gatherer.gather():
            pass
        return gatherer.candidates


async def test_real_candidates_round_trip_through_aioice() -> None:
    candidates = await gathered()
    assert len(candidates) == 4 * len(local_addresses())
    for candidate in candidates:
        theirs = to_aioice(candidate)
        assert isinstance(theirs, aioice.Candidate)
        p = candidate.parsed
        assert p is not None
        assert (theirs.foundation, theirs.component, theirs.transport, theirs.priority) == (
            p.foundation,
            p.component,
            p.protocol,
            p.priority,
        )
        assert (theirs.host, theirs.port, theirs.type, theirs.generation) == (
            p.address,
            p.port,
            p.type,
            p.generation,
        )
        back = from_aioice(
            theirs,
            sdp_mid=candidate.sdpMid,
            sdp_mline_index=candidate.sdpMLineIndex,
            username_fragment=candidate.usernameFragment,
        )
        # aioice drops network-id; everything else comes back as it went
        assert back.parsed == p._replace(network_id=None)
        assert (back.sdpMid, back.sdpMLineIndex, back.usernameFragment) == (
            candidate.sdpMid,
            candidate.sdpMLineIndex,
            candidate.usernameFragment,
        )
        assert back.candidate == back.parsed.to_sdp()
        # and aioice reads our string as we read theirs
        read = aioice.Candidate.from_sdp(candidate.candidate[len("candidate:") :])
        assert read.to_sdp() == theirs.to_sdp()


@pytest.mark.parametrize("line", [SRFLX, TCP])
def test_related_address_and_tcptype_survive_aioice(line: str) -> None:
    candidate = synthetic(line)
    theirs = to_aioice(candidate)
    back = from_aioice(theirs, sdp_mid="1", sdp_mline_index=1, username_fragment="abcd")
    assert back.parsed == candidate.parsed._replace(network_id=None)  # type: ignore[union-attr]


def test_from_aioice_without_ufrag_and_bad_input() -> None:
    theirs = aioice.Candidate("1", 1, "udp", 2130706431, "203.0.113.2", 5000, "host")
    back = from_aioice(theirs)
    assert back.candidate == "candidate:1 1 udp 2130706431 203.0.113.2 5000 typ host"
    assert (back.sdpMid, back.sdpMLineIndex, back.usernameFragment) == ("0", 0, "")
    with pytest.raises(TypeError):
        from_aioice("candidate:1 1 udp 1 203.0.113.2 5000 typ host")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        to_aioice(theirs)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"username_fragment": "a b"}, ValueError, "'a b' is not 0-256 ice-chars"),
        ({"username_fragment": "x\ny"}, ValueError, "is not 0-256 ice-chars"),
        ({"username_fragment": 5}, TypeError, "username_fragment must be a str"),
        ({"sdp_mid": None}, TypeError, "sdp_mid must be a str, not NoneType"),
        ({"sdp_mid": "a b"}, ValueError, "mid 'a b' is not an SDP token"),
        ({"sdp_mline_index": True}, TypeError, "sdp_mline_index must be an int"),
        ({"sdp_mline_index": -1}, ValueError, "must not be negative"),
    ],
)
def test_from_aioice_refuses_what_would_make_a_line_no_parser_takes(
    arguments: dict[str, object], error: type, message: str
) -> None:
    """A ufrag with a space gave `... ufrag a b`, which no parser takes back; a None mid
    reached to_json() (found by a review)."""
    theirs = aioice.Candidate("1", 1, "udp", 2130706431, "203.0.113.2", 5000, "host")
    with pytest.raises(error, match=message):
        from_aioice(theirs, **arguments)  # type: ignore[arg-type]


def test_end_of_candidates_is_refused() -> None:
    end = IceCandidate("", "0", 0, "abcd")
    with pytest.raises(ValueError, match="end-of-candidates"):
        to_aioice(end)
    with pytest.raises(ValueError, match="end-of-candidates"):
        to_aiortc(end)


@needs_aiortc
async def test_real_candidates_to_aiortc() -> None:
    for candidate in await gathered():
        theirs = to_aiortc(candidate)
        assert isinstance(theirs, aiortc.RTCIceCandidate)
        assert (theirs.sdpMid, theirs.sdpMLineIndex) == (candidate.sdpMid, candidate.sdpMLineIndex)
        p = candidate.parsed
        assert p is not None
        assert (theirs.foundation, theirs.component, theirs.protocol, theirs.priority) == (
            p.foundation,
            p.component,
            p.protocol,
            p.priority,
        )
        assert (theirs.ip, theirs.port, theirs.type) == (p.address, p.port, p.type)
        # aiortc writes back the RFC 8839 core of our string
        core = p._replace(generation=None, ufrag=None, network_id=None, network_cost=None)
        assert "candidate:" + candidate_to_sdp(theirs) == core.to_sdp()


@needs_aiortc
@pytest.mark.parametrize("line", [SRFLX, TCP])
def test_related_address_and_tcptype_reach_aiortc(line: str) -> None:
    candidate = synthetic(line, mid="audio", index=3)
    theirs = to_aiortc(candidate)
    p = candidate.parsed
    assert p is not None
    assert (theirs.relatedAddress, theirs.relatedPort, theirs.tcpType) == (
        p.related_address,
        p.related_port,
        p.tcptype,
    )
    assert (theirs.sdpMid, theirs.sdpMLineIndex) == ("audio", 3)


def test_to_aiortc_without_aiortc_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiortc", None)
    monkeypatch.setitem(sys.modules, "aiortc.sdp", None)
    with pytest.raises(ImportError, match="pip install aiortc"):
        to_aiortc(synthetic(SRFLX))


LINE = "candidate:1 1 udp 2113937151 203.0.113.2 35278 typ host generation 0 ufrag TZxu"


def test_from_json_takes_back_what_to_json_gives_parsed() -> None:
    candidate = IceCandidate(LINE, "0", 0, "TZxu", Candidate.parse(LINE))
    back = IceCandidate.from_json(candidate.to_json())
    assert back == candidate and (back.type, back.address, back.port) == (
        "host",
        "203.0.113.2",
        35278,
    )
    # A browser may leave out usernameFragment: the line's ufrag serves.
    assert IceCandidate.from_json({"candidate": LINE, "sdpMid": "0", "sdpMLineIndex": 0}) == back
    end = IceCandidate.from_json({"candidate": "", "sdpMid": "1", "sdpMLineIndex": 1})
    assert end.is_end_of_candidates and end.usernameFragment == "" and end.type is None


def test_from_json_finds_the_m_line_left_out_from_the_mids() -> None:
    """RTCIceCandidateInit needs only one of sdpMid and sdpMLineIndex; many peers send one."""
    mids = ["audio", "video"]
    by_mid = IceCandidate.from_json({"candidate": LINE, "sdpMid": "video"}, mids=mids)
    assert (by_mid.sdpMid, by_mid.sdpMLineIndex, by_mid.port) == ("video", 1, 35278)
    by_index = {"candidate": LINE, "sdpMid": None, "sdpMLineIndex": 0}
    assert IceCandidate.from_json(by_index, mids=mids).sdpMid == "audio"
    # Both given: taken as they are, mids or not.
    both = {"candidate": LINE, "sdpMid": "x", "sdpMLineIndex": 7}
    assert IceCandidate.from_json(both, mids=mids).sdpMLineIndex == 7


@pytest.mark.parametrize(
    ("init", "mids", "error", "message"),
    [
        ({"candidate": LINE}, ["0"], ValueError, "neither sdpMid nor sdpMLineIndex"),
        ({"candidate": LINE, "sdpMid": "2"}, ["0", "1"], ValueError, "'2' is none of the mids"),
        ({"candidate": LINE, "sdpMLineIndex": 2}, ["0", "1"], ValueError, "past the last of 2"),
        ({"candidate": LINE, "sdpMid": "0"}, "01", TypeError, "sequence of strings"),
        ({"candidate": LINE, "sdpMid": "0"}, [0], TypeError, "sequence of strings"),
        # A generator was used up by the check (a false "none of the mids"); a set has no
        # order to take an index from (found by a review)
        ({"candidate": LINE, "sdpMid": "1"}, (m for m in "01"), TypeError, "not generator"),
        ({"candidate": LINE, "sdpMLineIndex": 1}, {"0", "1"}, TypeError, "not set"),
        ({"candidate": LINE, "sdpMid": "0"}, 5, TypeError, "not int"),
    ],
)
def test_from_json_with_mids_names_what_is_wrong(
    init: dict[str, object], mids: object, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        IceCandidate.from_json(init, mids=mids)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("init", "error", "message"),
    [
        ({"candidate": LINE, "sdpMLineIndex": 0}, ValueError, "has no sdpMid: pass mids="),
        ({"candidate": LINE, "sdpMid": "0"}, ValueError, "has no sdpMLineIndex: pass mids="),
        ({"candidate": 5, "sdpMid": "0", "sdpMLineIndex": 0}, TypeError, "candidate must be"),
        ({"candidate": LINE, "sdpMid": 0, "sdpMLineIndex": 0}, TypeError, "sdpMid must be"),
        ({"candidate": LINE, "sdpMid": "0", "sdpMLineIndex": True}, TypeError, "an integer"),
        ({"candidate": LINE, "sdpMid": "0", "sdpMLineIndex": -1}, ValueError, "0 or more"),
        (
            {"candidate": LINE, "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": 1},
            TypeError,
            "usernameFragment must be",
        ),
        ({"candidate": "candidate:x", "sdpMid": "0", "sdpMLineIndex": 0}, ValueError, "fields"),
        ([LINE], TypeError, "a mapping, not list"),
    ],
)
def test_from_json_names_what_is_wrong(init: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        IceCandidate.from_json(init)  # type: ignore[arg-type]
