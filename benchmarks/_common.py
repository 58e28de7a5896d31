"""What the benchmark scripts share: this copy's `ice_engine` first on the path, argument
types that refuse what cannot be measured, and what exactly was measured.

Imported first by every script, so that a benchmark run from a clone measures that clone,
never an `ice_engine` installed from elsewhere.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(ROOT))


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (rounds, repeats, N)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def aioice_version() -> str:
    """The installed aioice's version, for labels: the comparison is against that one."""
    try:
        return version("aioice")
    except PackageNotFoundError:
        return "not installed"


def measured() -> dict[str, Any]:
    """Which `ice_engine` the scripts import: its directory, this copy's commit, and
    whether its core runs compiled, as plain Python, or compiled from older sources (an
    edit since the last build, which Python silently leaves unused)."""
    import ice_engine
    from ice_engine import compiled

    package = Path(ice_engine.__file__).resolve().parent
    builds = {
        name: sorted(package.glob(f"{name}.*.so")) + sorted(package.glob(f"{name}.*.pyd"))
        for name in compiled.COMPILED
    }
    stale = [
        name
        for name, found in builds.items()
        if found and found[0].stat().st_mtime < compiled.source_of(name).stat().st_mtime
    ]
    if os.environ.get(compiled.PURE_PYTHON_VARIABLE) or not all(builds.values()):
        core = "plain Python"
    elif stale:
        core = f"compiled, but older than the sources of {', '.join(stale)}"
    else:
        core = "compiled"
    commit = subprocess.run(
        ["git", "-C", str(package.parent), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {"ice_engine_from": str(package), "commit": commit or None, "core": core}


def build_warning(info: dict[str, Any]) -> str | None:
    """A line for the reader when the core measured is not the compiled one of the sources
    (docs/benchmarks.md's figures are)."""
    if info["core"] == "compiled":
        return None
    return (
        f"the sans-I/O core ran {info['core']}: the documented figures are for it compiled "
        "from its sources (`pip install -e .` here builds it)"
    )
