"""Enter a named network namespace from Python.

Python 3.11 has no ``os.setns``, so this calls libc's ``setns(2)`` through ctypes. The
namespace is joined on a throwaway thread: sockets and TUN fds opened there stay bound to
that namespace for life, while the calling thread (and pytest) stays where it was.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/var/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> Path:
    return NETNS_RUN_DIR / name


def netns_exists(name: str) -> bool:
    return netns_path(name).exists()


def enter_netns(name: str) -> None:
    """Move the calling thread into the namespace ``name`` (as ``ip netns exec`` does)."""
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def call_in_netns(name: str, func: Callable[[], T]) -> T:
    """Run ``func`` on a fresh thread inside ``name`` and return its result."""
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            enter_netns(name)
            results.append(func())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def socket_in_netns(
    name: str,
    family: int = socket.AF_INET,
    kind: int = socket.SOCK_DGRAM,
    proto: int = 0,
) -> socket.socket:
    """A socket that lives in namespace ``name``, usable from any thread or event loop."""
    return call_in_netns(name, lambda: socket.socket(family, kind, proto))
