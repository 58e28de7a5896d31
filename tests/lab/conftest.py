"""The session-wide network lab fixture: up once, skipped with a reason where it can't run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ice_engine.lab import Lab, lab_session, lab_unavailable_reason, leases


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The shared lab (0 ms delay when built here); the last session out takes it down."""
    reason = lab_unavailable_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true"):  # CI runs everything
            pytest.fail(f"the lab cannot run here, and CI needs it: {reason}")
        pytest.skip(reason)
    with lab_session() as running:
        yield running


@pytest.fixture
def delayed_lab(lab: Lab) -> Iterator[Lab]:
    """The lab with 50 ms RTT between the NAT and the servers, for timing-shaped tests.

    Skipped while another test session shares the lab: changing its delay would upset it.
    """
    others = leases.other_sessions()
    if others:
        pytest.skip(f"the lab is in use by other test sessions (PIDs {others})")
    before = lab.delay_ms or 0.0
    lab.set_delay(25)
    try:
        yield lab
    finally:
        lab.set_delay(before)
