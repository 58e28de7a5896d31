"""The delay link's control files: the requested delay and the delay actually applied."""

from __future__ import annotations

from pathlib import Path


def read_delay_ms(path: Path, fallback: float) -> float:
    try:
        return max(0.0, float(path.read_text().strip()))
    except (OSError, ValueError):
        return fallback


def applied_path(delay_file: Path) -> Path:
    return delay_file.with_name(delay_file.name + ".applied")


def write_applied(delay_file: Path, delay_ms: float) -> None:
    """Publish the delay now in force; written atomically so readers never see half a line."""
    target = applied_path(delay_file)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(f"{delay_ms}\n")
    tmp.replace(target)
