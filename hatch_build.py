"""Build hook: compile `ice_engine/candidate.py` with mypyc when it can, else leave it Python.

Compiled, the candidate parser is about three times as fast as interpreted (see
docs/benchmarks.md). Compiling needs a C compiler and the Python headers; without them, on
an interpreter other than CPython, or with `ICE_ENGINE_PURE_PYTHON=1`, the package installs
as plain Python and behaves the same, only slower (`pip install -v` shows why).

- wheel: the extension files go into the wheel, which is then tagged for this platform.
- editable (`pip install -e`): they are written next to `candidate.py`, and Python imports
  them in preference to it. After editing `candidate.py`, run `pip install -e .` again
  (tests/test_candidate.py fails on a stale build) or delete them.

mypy, which ships mypyc, is a dependency of this hook (pyproject.toml). It compiles a copy
of each module in a scratch directory, so neither the project's configuration nor its
imports take part.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: What to compile, relative to the project root.
MODULES = ("ice_engine/candidate.py",)

_SETUP = """\
import sys

from mypyc.build import mypycify
from setuptools import setup

setup(
    name="ice-engine-compiled",
    packages=[],
    py_modules=[],
    ext_modules=mypycify(sys.argv[1:], opt_level="3"),
    script_args=["build_ext", "--inplace"],
)
"""


def _is_extension(path: Path) -> bool:
    return path.is_file() and path.name.endswith(tuple(EXTENSION_SUFFIXES))


def _built_beside(root: Path) -> list[Path]:
    """Extension files an editable build left next to the modules."""
    found = []
    for module in MODULES:
        source = root / module
        names = (source.stem, f"{source.stem}__mypyc")
        found += [
            path
            for path in source.parent.glob(f"{source.stem}*")
            if _is_extension(path) and path.name.split(".")[0] in names
        ]
    return found


class MypycHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        if version == "editable":
            for path in _built_beside(root):  # never leave an old build in front of the source
                path.unlink()
        if os.environ.get("ICE_ENGINE_PURE_PYTHON"):
            self.app.display_info("ICE_ENGINE_PURE_PYTHON is set: ice_engine stays plain Python")
            return
        self._scratch = Path(tempfile.mkdtemp(prefix="ice-engine-mypyc-"))
        try:
            built = self._compile(root, self._scratch)
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            self.app.display_warning(
                f"ice_engine installs as plain Python: mypyc could not compile it ({error})"
            )
            return
        for path, target in built:
            if version == "editable":
                shutil.copy2(path, root / target)
            else:
                build_data["force_include"][str(path)] = target
        if version != "editable":
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    def clean(self, versions: list[str]) -> None:
        for path in _built_beside(Path(self.root)):
            path.unlink()

    def _compile(self, root: Path, scratch: Path) -> list[tuple[Path, str]]:
        """Compile copies of MODULES in `scratch`: (file built, where it goes in the package)."""
        for module in MODULES:
            copy = scratch / module
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / module, copy)
            (copy.parent / "__init__.py").touch()  # an empty package: only the module is checked
        (scratch / "setup.py").write_text(_SETUP)
        result = subprocess.run(
            [sys.executable, "setup.py", *MODULES],
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode:
            output = (result.stdout + result.stderr).strip().splitlines() or ["no output"]
            raise RuntimeError(output[-1][:300])
        built = [
            (path, path.relative_to(scratch).as_posix())
            for path in sorted(scratch.rglob("*"))
            if _is_extension(path) and path.relative_to(scratch).parts[0] != "build"
        ]
        if not built:
            raise RuntimeError("mypyc built nothing")
        return built
