"""ICE credentials: a generation's username fragment and password (RFC 8445 §5.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .entropy import random_bytes
from .frozen import fast_init

__all__ = ["Credentials", "new_credentials"]

#: RFC 8445 §5.3 ice-char: what ufrags, pwds and foundations are made of.
ICE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
_ICE_CHAR_SET = frozenset(ICE_CHARS)
# Byte -> ice-char by its low 6 bits: 256 is a multiple of 64, so there is no bias.
_TO_ICE_CHARS = bytes(ord(ICE_CHARS[byte & 63]) for byte in range(256))


@fast_init
@dataclass(frozen=True, slots=True)
class Credentials:
    """`pwd` stays out of `repr()`: reprs end up in logs."""

    ufrag: str
    pwd: str = field(repr=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.ufrag, str) and isinstance(self.pwd, str)):
            raise TypeError("ufrag and pwd must be strings")
        if not 4 <= len(self.ufrag) <= 256 or not _ICE_CHAR_SET.issuperset(self.ufrag):
            raise ValueError(f"ufrag must be 4-256 ice-chars: {self.ufrag!r}")
        if not 22 <= len(self.pwd) <= 256 or not _ICE_CHAR_SET.issuperset(self.pwd):
            raise ValueError("pwd must be 22-256 ice-chars")


def new_credentials() -> Credentials:
    """Fresh credentials from the CSPRNG.

    8 characters of ufrag (48 bits: RFC 8445 asks at least 24) keep ufrags distinct
    across the thousands of sessions a shared port may demultiplex; 24 of pwd give 144
    bits (at least 128 asked).
    """
    text = random_bytes(32).translate(_TO_ICE_CHARS).decode("ascii")  # one CSPRNG call
    return Credentials(text[:8], text[8:])
