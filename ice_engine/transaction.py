"""STUN client transactions (RFC 8489 §6.2), sans-I/O: the caller passes `now`.

Retransmission runs on an RTO that starts at `Timing.initial_rto` and, once a server's
round trip has been measured, follows that server's RTT (RFC 6298 estimator), so a fast
server is retried fast and a slow one is not flooded. Each server has one deadline for the
whole gathering, DNS included: a dead server costs that and no more (but for a resend
that a late loop owed, which waits one RTO past it: `StunTransaction.retransmit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import SupportsFloat

from .frozen import fast_init

__all__ = ["RttEstimator", "RttTable", "StunTransaction", "Timing", "as_seconds", "shown"]


def as_seconds(value: SupportsFloat) -> float:
    """`value` as a float of its own (a numpy scalar compares to a numpy bool, which
    compiled code refuses); infinite past float's range, where float() raises. Not typed
    `float`: compiled, that would convert an int on the way in, and raise TypeError."""
    try:
        return float(value)
    except OverflowError:
        return -math.inf if value < 0 else math.inf  # type: ignore[operator]


def positive_seconds(value: object, name: str) -> float:
    """`value` as a positive, finite number of seconds, or ValueError naming `name` (a
    bool is no number of seconds, and an int past float's range no finite one)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = as_seconds(value)
        if 0 < seconds < math.inf:  # NaN fails this too: it would wait forever
            return seconds
    raise ValueError(f"{name} must be a positive number of seconds, not {shown(value)}")


def shown(value: object) -> str:
    """`repr(value)`, but for an int too long for it (over 4300 digits, repr raises)."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an int of {value.bit_length()} bits"
    return repr(value)


@fast_init
@dataclass(frozen=True, slots=True)
class Timing:
    """The gathering schedule; every number is in seconds.

    `server_deadline` bounds each server from the start of gathering: by then it has given
    its candidates or an error, so gathering completes by then however dead a server is
    (one RTO later where a loop running late owed a resend).

    `fast_init` also keeps it out of mypyc's native classes, whose typed fields refuse a
    wrong type before `__post_init__` with a message naming no field: compiled, a string
    gave "float object expected; got str"; now both builds raise the TypeError below.
    """

    initial_rto: float = 0.25
    min_rto: float = 0.05
    max_rto: float = 1.0
    server_deadline: float = 2.0

    def __post_init__(self) -> None:
        for name in ("initial_rto", "min_rto", "max_rto", "server_deadline"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TypeError(f"Timing.{name} must be a number, not {type(value).__name__}")
            object.__setattr__(self, name, positive_seconds(value, f"Timing.{name}"))
        if self.min_rto > self.max_rto:
            raise ValueError("Timing.min_rto must not exceed Timing.max_rto")
        if not self.min_rto <= self.initial_rto <= self.max_rto:  # which one would hold?
            raise ValueError(
                f"Timing.initial_rto ({self.initial_rto!r}) must lie between Timing.min_rto "
                f"({self.min_rto!r}) and Timing.max_rto ({self.max_rto!r})"
            )


class RttEstimator:
    """RFC 6298 smoothed RTT for one server."""

    __slots__ = ("rttvar", "srtt")

    def __init__(self, sample: float) -> None:
        self.srtt = sample
        self.rttvar = sample / 2

    def update(self, sample: float) -> None:
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
        self.srtt = 0.875 * self.srtt + 0.125 * sample

    def rto(self, timing: Timing) -> float:
        return min(max(self.srtt + 4 * self.rttvar, timing.min_rto), timing.max_rto)


class RttTable:
    """RTT estimates per server address, shareable across gatherers (plain data, no I/O)."""

    __slots__ = ("_estimators",)

    def __init__(self) -> None:
        self._estimators: dict[tuple[str, int], RttEstimator] = {}

    def rto(self, server: tuple[str, int], timing: Timing) -> float:
        estimator = self._estimators.get(server)
        return timing.initial_rto if estimator is None else estimator.rto(timing)

    def srtt(self, server: tuple[str, int]) -> float | None:
        estimator = self._estimators.get(server)
        return None if estimator is None else estimator.srtt

    def sample(self, server: tuple[str, int], rtt: float) -> None:
        estimator = self._estimators.get(server)
        if estimator is None:
            if len(self._estimators) > 4096:  # bounded: servers are few, addresses may not be
                self._estimators.clear()
            self._estimators[server] = RttEstimator(rtt)
        else:
            estimator.update(rtt)


class StunTransaction:
    """One request: sent, retransmitted with doubling RTO (not over streams), until its
    deadline; a request that a late loop never resent is resent once past it."""

    __slots__ = ("deadline", "next_send", "request", "rto", "sent_at", "transmissions")

    def __init__(
        self, request: bytes, *, now: float, rto: float, deadline: float, reliable: bool = False
    ) -> None:
        self.request = request
        self.sent_at = now
        self.rto = rto
        self.deadline = deadline
        self.next_send = math.inf if reliable else now + rto
        self.transmissions = 1

    @property
    def timer(self) -> float:
        return min(self.next_send, self.deadline)

    def expired(self, now: float) -> bool:
        return now >= self.deadline and not self._resend_owed()

    def _resend_owed(self) -> bool:
        """A resend fell due before the deadline and was never made: the caller's loop ran
        late (thousands of gatherers starting at once), and one lost datagram would
        otherwise fail its server without a second try."""
        return self.transmissions == 1 and self.next_send < self.deadline

    def retransmit(self, now: float) -> bytes | None:
        """The request again if its RTO has run out, else None. Past the deadline, only an
        owed resend goes, and the deadline moves one RTO on to wait for its answer."""
        if now < self.next_send:
            return None
        if now >= self.deadline:
            if not self._resend_owed():
                return None
            self.deadline = now + self.rto
        self.rto *= 2
        self.next_send = now + self.rto
        self.transmissions += 1
        return self.request

    def rtt_sample(self, now: float) -> float | None:
        """Karn's rule: a retransmitted request gives no RTT sample."""
        return now - self.sent_at if self.transmissions == 1 else None
