"""`fast_init` builds the same frozen records as the dataclass `__init__` it replaces."""

from __future__ import annotations

import dataclasses

import pytest

from ice_engine import commands, events, model
from ice_engine.credentials import Credentials
from ice_engine.frozen import fast_init


@fast_init
@dataclasses.dataclass(frozen=True, slots=True)
class _Sample:
    a: int
    b: str = "b"
    c: tuple[int, ...] = ()


def test_positional_keywords_defaults_and_errors_as_a_dataclass() -> None:
    assert dataclasses.astuple(_Sample(1)) == (1, "b", ())
    assert dataclasses.astuple(_Sample(1, "x", (3,))) == (1, "x", (3,))
    assert _Sample(1, c=(2,)) == _Sample(a=1, b="b", c=(2,))
    assert hash(_Sample(1)) == hash(_Sample(1))
    assert repr(_Sample(1)) == "_Sample(a=1, b='b', c=())"
    with pytest.raises(dataclasses.FrozenInstanceError):
        _Sample(1).a = 2  # type: ignore[misc]
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'a'"):
        _Sample()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'd'"):
        _Sample(1, d=2)  # type: ignore[call-arg]


def test_post_init_still_validates() -> None:
    with pytest.raises(ValueError, match="ufrag"):
        Credentials("a", "b" * 22)


def test_only_frozen_slotted_dataclasses() -> None:
    with pytest.raises(TypeError, match="not a frozen, slotted dataclass"):

        @fast_init
        @dataclasses.dataclass(slots=True)
        class _Open:
            x: int

    with pytest.raises(TypeError, match="only plain positional fields"):

        @fast_init
        @dataclasses.dataclass(frozen=True, slots=True)
        class _Factory:
            x: list[int] = dataclasses.field(default_factory=list)


@pytest.mark.parametrize(
    "cls",
    [
        events.IceCandidate,
        events.IceCandidateEvent,
        events.IceGatheringStateChangeEvent,
        events.IceCandidateErrorEvent,
        events.CandidateRemovedEvent,
        commands.SendDatagram,
        commands.Resolve,
        model.Base,
        Credentials,
    ],
)
def test_the_decorated_records_keep_their_fields(cls: type) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    assert list(cls.__slots__) == names or set(cls.__slots__) == set(names)
    assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
