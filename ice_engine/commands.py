"""What the sans-I/O core asks its driver to do on the network."""

from __future__ import annotations

from dataclasses import dataclass

from .urls import ServerUrl

__all__ = ["Command", "Resolve", "SendDatagram"]


@dataclass(frozen=True, slots=True)
class SendDatagram:
    """Send `data` from the socket `base_key` to `address`."""

    base_key: int
    data: bytes
    address: tuple[str, int]


@dataclass(frozen=True, slots=True)
class Resolve:
    """Resolve a server URL; answer with `Gathering.resolved` or `resolve_failed`."""

    request: int
    url: ServerUrl


Command = SendDatagram | Resolve
