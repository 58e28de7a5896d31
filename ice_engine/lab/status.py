"""A snapshot of what exists of the lab, for ``Lab.status()`` and ``ice-engine lab status``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabStatus:
    """What exists of the lab right now; ``healthy`` means usable as is."""

    namespaces: dict[str, bool]
    daemons: dict[str, int | None]
    delay_ms: float | None
    healthy: bool
    problems: tuple[str, ...]
    pinned: bool = False  # kept up by ``ice-engine lab up`` until ``lab down``
    sessions: tuple[int, ...] = ()  # PIDs of live test sessions sharing it

    @property
    def exists(self) -> bool:
        return any(self.namespaces.values()) or any(p is not None for p in self.daemons.values())

    def describe(self) -> str:
        state = "up" if self.healthy else ("broken" if self.exists else "down")
        lines = [f"lab: {state}"]
        lines += [
            f"  netns {n}: {'present' if ok else 'absent'}" for n, ok in self.namespaces.items()
        ]
        lines += [f"  {n}: {f'pid {p}' if p else 'not running'}" for n, p in self.daemons.items()]
        if self.delay_ms is not None:
            lines.append(f"  one-way delay router<->server: {self.delay_ms:g} ms")
        if self.pinned:
            lines.append("  pinned by `ice-engine lab up`: test sessions leave it up")
        if self.sessions:
            lines.append(f"  in use by test sessions: {', '.join(map(str, self.sessions))}")
        lines += [f"  problem: {problem}" for problem in self.problems if self.exists]
        return "\n".join(lines)
