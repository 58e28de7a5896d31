"""A running process's output, line by line, each line waited for with a deadline."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from typing import Any


class Lines:
    """Lines from `proc.stdout`, read by a thread: a wait fails at its deadline rather
    than hanging, whatever the pipe's buffering."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(line)
        self._queue.put("")  # the end

    def next(self, by: float) -> str:
        """The next line, failing at `by` (time.monotonic) or at the end of the output."""
        try:
            line = self._queue.get(timeout=max(by - time.monotonic(), 0))
        except queue.Empty:
            raise AssertionError("no line in time") from None
        assert line, "the process ended early"
        return line

    def next_json(self, by: float) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.next(by))
        return event

    def rest(self, by: float) -> str:
        """Every line still to come, to the end of the output, failing at `by`."""
        seen = []
        while True:
            try:
                line = self._queue.get(timeout=max(by - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"the output did not end in time: {seen}") from None
            if not line:
                return "".join(seen)
            seen.append(line)

    def until(self, needle: str, by: float) -> list[str]:
        """Lines up to and including the first that contains `needle`."""
        seen = [self.next(by)]
        while needle not in seen[-1]:
            seen.append(self.next(by))
        return seen
