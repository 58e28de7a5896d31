"""The session-wide network lab fixture: up once, skipped with a reason where it can't run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ice_engine.lab import Lab, lab_session, lab_unavailable_reason


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The shared lab (0 ms delay when built here); the last session out takes it down."""
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with lab_session() as running:
        yield running
