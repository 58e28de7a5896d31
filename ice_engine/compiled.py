"""Which modules the build compiles with mypyc, and how to run them as source instead.

The sans-I/O core is plain, fully typed Python. Installed where a C compiler is there,
`hatch_build.py` compiles the modules named in `COMPILED` with mypyc, and Python imports
the compiled files in preference to the sources beside them: 13-18 % less CPU per
gathering and a faster STUN codec (docs/benchmarks.md). Nothing else changes.

`ICE_ENGINE_PURE_PYTHON=1` in the environment at import time runs the sources even where
compiled files are installed (to step through the core with a debugger, or to test the
pure-Python fallback); at install time it skips compiling altogether.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["COMPILED", "PURE_PYTHON_VARIABLE", "is_compiled", "prefer_sources", "source_of"]

#: The modules of this package that the build compiles: the sans-I/O core. The driver
#: (asyncio, async generators) and the public event records stay interpreted.
COMPILED = (
    "candidate",
    "commands",
    "credentials",
    "emitting",
    "entropy",
    "gathering",
    "model",
    "reflexive",
    "relaying",
    "stun",
    "transaction",
    "turn",
)
PURE_PYTHON_VARIABLE = "ICE_ENGINE_PURE_PYTHON"


def is_compiled(module: ModuleType) -> bool:
    """Whether this module was imported from a compiled file rather than its source.

    (Only the suffix of `__file__` is telling: mypyc 2.4 puts the package directory in
    it twice for a module that another compiled module imported first.)
    """
    return (module.__file__ or "").endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def source_of(name: str) -> Path:
    """The `.py` file of one of this package's modules."""
    return Path(__file__).with_name(f"{name}.py")


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' `.py` files before the import system finds the `.so`."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __package__ or name not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(fullname, source_of(name))


def prefer_sources() -> None:
    """Import the compiled modules from their sources from now on (idempotent)."""
    if not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())


if os.environ.get(PURE_PYTHON_VARIABLE):
    prefer_sources()
