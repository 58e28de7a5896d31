"""One lock for the whole machine's lab, re-entrant within a process.

``flock`` serialises builds and teardowns across processes (test sessions, the CLI);
re-entrancy lets a session hold it across "anyone else here? then tear down" while the
``Lab`` methods it calls take it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator
from typing import IO

from ice_engine.lab.topology import LOCK_FILE


class _MachineLock:
    def __init__(self) -> None:
        self._guard = threading.RLock()
        self._depth = 0
        self._file: IO[str] | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._guard:
            if self._depth == 0:
                LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
                self._file = LOCK_FILE.open("a")
                fcntl.flock(self._file, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._file is not None:
                    fcntl.flock(self._file, fcntl.LOCK_UN)
                    self._file.close()
                    self._file = None


machine_lock = _MachineLock()
