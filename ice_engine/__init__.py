"""ice-engine: a fast, streaming ICE candidate gatherer with a browser's event semantics.

The sans-I/O core is `ice_engine.gathering.Gathering`; `Gatherer` drives it with asyncio.
"""

import importlib
import os
from typing import TYPE_CHECKING, Any

# First: with ICE_ENGINE_PURE_PYTHON (compiled.PURE_PYTHON_VARIABLE) set, the core must
# load from its sources. Otherwise not loaded here: `ice-engine` answers Ctrl-C sooner.
if os.environ.get("ICE_ENGINE_PURE_PYTHON"):
    from . import compiled  # noqa: F401

if TYPE_CHECKING:  # what the names below load when first used (`__getattr__`)
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

#: Each name's module. `import ice_engine` loads none of them (asyncio, the driver, the
#: core) until one is used: `ice_engine.stun` or the sans-I/O core alone import quickly,
#: and the `ice-engine` command answers Ctrl-C while it loads (`__main__`).
_HOMES = {
    "candidate": ("Candidate", "CandidateError"),
    "config": ("IceServer",),
    "credentials": ("Credentials",),
    "driver": (
        "DatagramHandler",
        "Gatherer",
        "RelayedHandler",
        "RelayFailureHandler",
        "TcpConnectionHandler",
    ),
    "events": (
        "CandidateRemovedEvent",
        "Event",
        "GatheringState",
        "IceCandidate",
        "IceCandidateErrorEvent",
        "IceCandidateEvent",
        "IceGatheringStateChangeEvent",
    ),
    "interfaces": ("IpHandling",),
    "sdp": ("can_trickle_ice_candidates", "candidate_lines"),
    "transaction": ("Timing",),
    "urls": ("InvalidServerUrl", "ServerUrl", "parse_server_url"),
}


if not TYPE_CHECKING:  # which would make every name mypy does not know Any

    def __getattr__(name: str) -> Any:
        for home, names in _HOMES.items():
            if name in names:
                value = getattr(importlib.import_module(f".{home}", __name__), name)
                globals()[name] = value  # found directly from now on
                return value
        if name.isidentifier() and not name.startswith("__"):
            try:  # a module: `ice_engine.interfaces.local_addresses()` after `import ice_engine`
                return importlib.import_module(f".{name}", __name__)
            except ModuleNotFoundError as error:
                if error.name != f"{__name__}.{name}":
                    raise  # one it imports is missing
        raise AttributeError(f"module 'ice_engine' has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
