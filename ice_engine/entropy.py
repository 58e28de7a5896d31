"""Random bytes from the OS CSPRNG, fetched a block at a time.

Every STUN request needs a 96-bit transaction ID and every generation its ufrag/pwd.
Asking the kernel for each costs a getrandom() syscall, about 3 % of a gathering's CPU.
So one call fills a queue with 12-byte chunks, and callers take whole chunks: the
queue's `popleft` is atomic, so two threads never get the same one. A forked child
drops what it inherited, so it can't repeat its parent's IDs or passwords.
"""

from __future__ import annotations

import os
from collections import deque

__all__ = ["CHUNK", "random_bytes", "random_id"]

CHUNK = 12  # bytes: one STUN transaction ID
_CHUNKS_PER_FILL = 340  # about 4 KiB per syscall

_chunks: deque[bytes] = deque()


def _fill() -> None:
    block = os.urandom(CHUNK * _CHUNKS_PER_FILL)
    _chunks.extend(block[i : i + CHUNK] for i in range(0, len(block), CHUNK))


def random_id() -> bytes:
    """12 bytes that no other caller gets."""
    while True:
        try:
            return _chunks.popleft()
        except IndexError:
            _fill()


def random_bytes(size: int) -> bytes:
    """`size` bytes that no other caller gets (whole chunks, so at most 11 wasted)."""
    return b"".join([random_id() for _ in range(-(-size // CHUNK))])[:size]


os.register_at_fork(after_in_child=_chunks.clear)
