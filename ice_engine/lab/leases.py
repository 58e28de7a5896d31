"""Who is using the lab: live test sessions (leases) and a by-hand ``lab up`` (the pin).

The lab is one per machine and several test runs may share it at once, so a session
takes it down at its end only if no other live session holds a lease and nobody pinned
it with ``ice-engine lab up``. A lease is a file named after its holder's PID, holding
that process's start time so a reused PID never passes for a live session.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ice_engine.lab.topology import USERS_DIR

PIN_FILE = USERS_DIR / "pinned"
_PREFIX = "session-"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat); None if dead."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def acquire() -> Path:
    USERS_DIR.mkdir(parents=True, exist_ok=True)
    lease = USERS_DIR / f"{_PREFIX}{os.getpid()}"
    lease.write_text(_start_time(os.getpid()) or "")
    return lease


def release(lease: Path) -> None:
    lease.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        USERS_DIR.rmdir()  # only succeeds once empty


def other_sessions() -> list[int]:
    """PIDs of other live processes holding a lease; stale leases are removed."""
    pids = []
    for lease in USERS_DIR.glob(f"{_PREFIX}*"):
        try:
            pid = int(lease.name.removeprefix(_PREFIX))
            recorded = lease.read_text().strip()
        except (OSError, ValueError):
            continue
        if pid == os.getpid():
            continue
        started = _start_time(pid)
        if started is not None and started == recorded:
            pids.append(pid)
        else:
            lease.unlink(missing_ok=True)
    return pids


def pin() -> None:
    USERS_DIR.mkdir(parents=True, exist_ok=True)
    PIN_FILE.touch()


def unpin() -> None:
    PIN_FILE.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        USERS_DIR.rmdir()


def pinned() -> bool:
    return PIN_FILE.exists()
