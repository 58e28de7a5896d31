"""ice-engine: a fast, streaming ICE candidate gatherer with a browser's event semantics.

The sans-I/O core is `ice_engine.gathering.Gathering`; `Gatherer` drives it with asyncio.
"""

# First: with ICE_ENGINE_PURE_PYTHON set, the core must load from its sources.
from . import compiled  # noqa: F401, I001

from .candidate import Candidate, CandidateError
from .config import IceServer
from .credentials import Credentials
from .driver import (
    DatagramHandler,
    Gatherer,
    RelayedHandler,
    RelayFailureHandler,
    TcpConnectionHandler,
)
from .events import (
    CandidateRemovedEvent,
    Event,
    GatheringState,
    IceCandidate,
    IceCandidateErrorEvent,
    IceCandidateEvent,
    IceGatheringStateChangeEvent,
)
from .interfaces import IpHandling
from .sdp import can_trickle_ice_candidates, candidate_lines
from .transaction import Timing
from .urls import InvalidServerUrl, ServerUrl, parse_server_url

__all__ = [
    "Candidate",
    "CandidateError",
    "CandidateRemovedEvent",
    "Credentials",
    "DatagramHandler",
    "Event",
    "Gatherer",
    "GatheringState",
    "IceCandidate",
    "IceCandidateErrorEvent",
    "IceCandidateEvent",
    "IceGatheringStateChangeEvent",
    "IceServer",
    "InvalidServerUrl",
    "IpHandling",
    "RelayFailureHandler",
    "RelayedHandler",
    "ServerUrl",
    "TcpConnectionHandler",
    "Timing",
    "can_trickle_ice_candidates",
    "candidate_lines",
    "parse_server_url",
]
__version__ = "0.1.0"
