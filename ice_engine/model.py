"""What the gathering core works on: transports, servers, bases and generations.

Plain data, shared by the state machine (`gathering.py`) and its STUN and TURN parts
(`reflexive.py`, `relaying.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .credentials import Credentials
from .events import Event, GatheringState, IceCandidate
from .frozen import fast_init
from .urls import ServerUrl

__all__ = ["UNREACHABLE", "Base", "Generation", "Server", "Transport", "local_preference"]

UNREACHABLE = 701  # W3C: the server could not be reached (no STUN code applies)


@dataclass(frozen=True, slots=True)
class Transport:
    """One m-line's ICE transport, as signalling names it."""

    mid: str
    mline_index: int


@dataclass(frozen=True, slots=True)
class Server:
    """A STUN/TURN server URL with its credentials; `index` orders priorities."""

    url: ServerUrl
    index: int
    username: str | None = None
    credential: str | None = field(default=None, repr=False)


@fast_init
@dataclass(frozen=True, slots=True)
class Base:
    """A bound local socket (UDP, or an RFC 6544 listener): the base of its host
    candidate(s) and of those learnt through it.

    `key` is the driver's handle for the socket; `rank` is its address's place in the
    RFC 8421 order (0 is the most preferred).
    """

    key: int
    transport: int
    component: int
    address: str
    port: int
    family: int
    rank: int
    network_id: int = 0
    name: str | None = None  # an mDNS name to show instead of the address
    # A shared port's base: the private socket that TURN over UDP allocates from, since
    # sessions sharing one socket cannot share an allocation's 5-tuple.
    relay_key: int | None = None


def local_preference(rank: int, slot: int) -> int:
    """Unique per component: the address's rank, then which server (slot 0: none)."""
    return max(65535 - rank * 16 - slot, 0)


class Generation:
    """What one generation (ufrag/pwd) has gathered and still waits for.

    A pooled generation gathers before it is current, and one started for a pool before
    the application asks: their events are `held` until released to it, and `aggregate`
    is the generation's own gathering state meanwhile.
    """

    __slots__ = (
        "addresses",
        "aggregate",
        "bases",
        "bases_of",
        "candidates",
        "credentials",
        "deadline",
        "held",
        "number",
        "pending",
        "priorities",
        "retired",
        "servers",
        "started_at",
        "state",
        "tcp_bases",
    )

    def __init__(
        self, number: int, credentials: Credentials, transports: int, started_at: float
    ) -> None:
        self.number = number
        self.credentials = credentials
        self.started_at = started_at  # event times (`t`) count from it
        self.bases: list[Base] = []
        self.tcp_bases: tuple[Base, ...] = ()  # ICE-TCP listeners (RFC 6544), if any
        # Per transport, the work still out: a transport completes (its "" event) at 0.
        # Each piece adds 1 as it begins and gives it back once through `Emitting._done`,
        # its own guard keeping it to once: a probe by leaving `_probes`, a relay by
        # `Relay.settled` (`_settle`), a DNS lookup by leaving `_resolving` (one per
        # transport, not per base). `_retire` zeroes a retired generation's counts, so
        # what ends after it is settled without `_done` (see `_relay_unreachable`).
        self.pending = [0] * transports
        self.state = [GatheringState.NEW] * transports
        self.candidates: list[IceCandidate] = []
        # (base key, address, port) of each candidate, to drop duplicates: a dict, not a
        # set, so that the collector stops tracking it (its keys hold no containers).
        self.addresses: dict[tuple[int, str, int], None] = {}
        self.bases_of: dict[tuple[str, str], int] = {}  # (mid, candidate string) -> base key
        self.priorities: dict[int, None] = {}  # (transport << 32) | priority, of those taken
        # Resolved so far, kept for continual gathering's new bases (a tuple: usually empty).
        self.servers: tuple[tuple[Server, list[tuple[str, int]]], ...] = ()
        self.deadline = started_at
        self.aggregate = GatheringState.NEW
        self.held: list[Event] | None = None  # a list while held back
        self.retired = False  # a restart replaced it: its work is dropped
