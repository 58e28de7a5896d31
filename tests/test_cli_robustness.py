"""The CLI under load and misuse: redraws that keep up, IPv6 addresses, closed streams,
signals and the messages a user sees when something is wrong."""

from __future__ import annotations

import io
import re

import pytest

from ice_engine.candidate import Candidate
from ice_engine.events import (
    GatheringState,
    IceCandidate,
    IceCandidateEvent,
    IceGatheringStateChangeEvent,
)

ANSI = re.compile(r"\x1b[\[\]()][0-9;?]*[ -/]*[@-~]")


def _host(n: int, address: str = "198.51.100.1") -> IceCandidateEvent:
    parsed = Candidate("1", 1, "udp", 2130706431, address, 10000 + n, "host")
    return IceCandidateEvent(IceCandidate(parsed.to_sdp(), "0", 0, "abcd", parsed), 0, n / 1000)


def test_the_live_view_redraws_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """A redraw per event blocked the event loop (8.7 s for a gathering that takes 0.3 s,
    TURN servers failed with 701): redraws are throttled, and the last one shows every row."""
    from rich.console import Console
    from rich.live import Live

    from ice_engine.liveview import LiveView

    refreshes = 0
    refresh = Live.refresh

    def counted(self: Live) -> None:
        nonlocal refreshes
        refreshes += 1
        refresh(self)

    monkeypatch.setattr(Live, "refresh", counted)
    now = [0.0]

    def clock() -> float:
        now[0] += 0.001  # each look at the clock: 1 ms later, so 600 events take ~1.2 s
        return now[0]

    out = io.StringIO()
    console = Console(file=out, width=200, height=40, force_terminal=True, color_system=None)
    view = LiveView(console, [], deadline=1.0, clock=clock)
    with view:
        view.add(IceGatheringStateChangeEvent(GatheringState.GATHERING, 0, 0.0))
        for n in range(600):
            view.add(_host(n))
            view.tick()  # as the ticker task would
        view.add(IceGatheringStateChangeEvent(GatheringState.COMPLETE, 0, 0.6))
        view.finish(0.6)
    assert refreshes <= 1.5 * now[0] / 0.075 + 3  # the first, ~13 a second, the last two
    final = ANSI.sub("", out.getvalue()).split("✓ complete")[0].rsplit("ICE candidates", 1)[1]
    assert all(f" {10000 + n} " in final for n in range(600))
