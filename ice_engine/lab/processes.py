"""Start and stop the lab's daemons, tracked by PID files in the state dir.

PIDs get reused, so before signalling anything the process's /proc/PID/cmdline must
still equal the command line recorded when the lab started it. Nothing is ever looked up
or killed by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# Daemons started by this Python process, kept so they are reaped (not left as zombies)
# and so Popen does not warn about children still running when it is collected.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Daemon:
    """A long-running lab process. ``argv`` is what /proc shows once it runs."""

    name: str
    argv: tuple[str, ...]
    netns: str | None = None  # started via ``ip netns exec`` when set

    def launch_argv(self) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, *self.argv]


def pid_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.pid"


def log_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.out"


def start(state_dir: Path, daemon: Daemon, env: dict[str, str] | None = None) -> int:
    """Start ``daemon`` detached from our session; record its PID and command line."""
    with log_file(state_dir, daemon.name).open("ab") as out:
        proc = subprocess.Popen(
            daemon.launch_argv(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    _children[proc.pid] = proc
    record = {"pid": proc.pid, "argv": list(daemon.argv), "launch": daemon.launch_argv()}
    pid_file(state_dir, daemon.name).write_text(json.dumps(record))
    return proc.pid


def _read_record(state_dir: Path, name: str) -> dict[str, object] | None:
    try:
        record = json.loads(pid_file(state_dir, name).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _cmdline(pid: int) -> list[str] | None:
    """argv of a live process, None if gone. Empty for a moment right after exec: retry."""
    for _ in range(50):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if raw:
            return raw.decode(errors="replace").split("\0")[:-1]
        if _is_zombie(pid):
            return None
        time.sleep(0.005)
    return None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child (pytest starts them)."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def _gone(pid: int) -> bool:
    """Exited for good. Our own children count only once reaped: a multi-threaded
    process shows as a zombie while its other threads still wind down, too early to reap."""
    child = _children.get(pid)
    if child is None:
        return _cmdline(pid) is None or _is_zombie(pid)
    if child.poll() is None:
        return False
    del _children[pid]
    return True


def running_pid(state_dir: Path, name: str) -> int | None:
    """The PID of the lab's ``name`` daemon if it is alive and really the one we started."""
    record = _read_record(state_dir, name)
    if record is None:
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 1:
        return None
    _reap(pid)
    cmdline = _cmdline(pid)
    if cmdline is None or _is_zombie(pid):
        return None
    # Right after launch the process may still be ``ip netns exec`` before its exec.
    return pid if cmdline in (record.get("argv"), record.get("launch")) else None


def stop(state_dir: Path, name: str, timeout_s: float = 3.0) -> None:
    """SIGTERM (then SIGKILL) the verified daemon ``name`` and forget its PID file."""
    pid = running_pid(state_dir, name)
    if pid is not None:
        _signal_and_wait(pid, timeout_s)
    pid_file(state_dir, name).unlink(missing_ok=True)


def _signal_and_wait(pid: int, timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout_s):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, timeout_s)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.02)
    return False


def send_signal(state_dir: Path, name: str, signum: int) -> bool:
    """Signal the verified daemon ``name``; False if it is not running."""
    pid = running_pid(state_dir, name)
    if pid is None:
        return False
    os.kill(pid, signum)
    return True
