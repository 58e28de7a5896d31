"""What the sans-I/O core asks its driver to do on the network."""

from __future__ import annotations

from dataclasses import dataclass

from .frozen import fast_init
from .urls import ServerUrl

__all__ = [
    "CloseStream",
    "Command",
    "OpenSocket",
    "OpenStream",
    "Resolve",
    "SendDatagram",
    "StreamSend",
]


@fast_init
@dataclass(frozen=True, slots=True)
class SendDatagram:
    """Send `data` from the socket `base_key` to `address`."""

    base_key: int
    data: bytes
    address: tuple[str, int]


@fast_init
@dataclass(frozen=True, slots=True)
class Resolve:
    """Resolve a server URL; answer with `Gathering.resolved` or `resolve_failed`."""

    request: int
    url: ServerUrl


@fast_init
@dataclass(frozen=True, slots=True)
class OpenSocket:
    """Open another UDP socket on the address of the socket `beside` (any port the
    port range allows), at once; answer with `Gathering.socket_opened` or
    `socket_failed`. A TURN server holds an allocation for the 5-tuple of `beside` (437)."""

    request: int
    beside: int


@fast_init
@dataclass(frozen=True, slots=True)
class OpenStream:
    """Connect TCP (TLS when `tls`, verifying `server_name`) from the base's address to
    `address`; answer with `stream_connected`, `stream_data` and `stream_closed`."""

    stream: int
    base_key: int
    address: tuple[str, int]
    tls: bool
    server_name: str


@fast_init
@dataclass(frozen=True, slots=True)
class StreamSend:
    """Write `data` to the connection of an `OpenStream`."""

    stream: int
    data: bytes


@fast_init
@dataclass(frozen=True, slots=True)
class CloseStream:
    """Close the connection of an `OpenStream`; the core has forgotten it, so no
    `stream_closed` is owed."""

    stream: int


Command = SendDatagram | Resolve | OpenSocket | OpenStream | StreamSend | CloseStream
