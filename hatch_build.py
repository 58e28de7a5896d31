"""Build hook: compile the sans-I/O core with mypyc when it can, else leave it Python.

The modules named in `ice_engine/compiled.py` (COMPILED) are compiled into one extension
group: 13-18 % less CPU per gathering, and the candidate parser three times as fast
(see docs/benchmarks.md). Compiling needs a C compiler and the Python headers; without
them, on an interpreter other than CPython, or with `ICE_ENGINE_PURE_PYTHON=1`, the
package installs as plain Python and behaves the same, only slower (`pip install -v`
shows why).

- wheel: the extension files go into the wheel, which is then tagged for this platform.
- editable (`pip install -e`): they are written next to the sources, and Python imports
  them in preference to those. After editing a compiled module, run `pip install -e .`
  again (tests/test_compiled.py fails on a stale build), or set ICE_ENGINE_PURE_PYTHON=1
  to run the sources.

mypy, which ships mypyc, is a dependency of this hook (pyproject.toml). It compiles a copy
of the package in a scratch directory, so neither the project's configuration nor its
installed dependencies take part.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGE = "ice_engine"
#: The shared library that holds the compiled code of every module, beside their shims.
GROUP = "_core"

_SETUP = f"""\
import sys

from mypyc.build import mypycify
from setuptools import setup

setup(
    name="ice-engine-compiled",
    packages=[],
    py_modules=[],
    ext_modules=mypycify(sys.argv[1:], opt_level="3", group_name="{PACKAGE}.{GROUP}"),
    script_args=["build_ext", "--inplace"],
)
"""


def compiled_modules(root: Path) -> list[str]:
    """COMPILED from ice_engine/compiled.py, read without importing the package (its
    dependencies need not be installed where it is built)."""
    tree = ast.parse((root / PACKAGE / "compiled.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "COMPILED" for target in node.targets
        ):
            return [f"{PACKAGE}/{name}.py" for name in ast.literal_eval(node.value)]
    raise RuntimeError("ice_engine/compiled.py names no COMPILED modules")


def _is_extension(path: Path) -> bool:
    return path.is_file() and path.name.endswith(tuple(EXTENSION_SUFFIXES))


def _built_beside(root: Path) -> list[Path]:
    """Extension files an editable build left next to the sources: all of them, as the
    package has no others (a module dropped from COMPILED must not leave its old build)."""
    return [path for path in (root / PACKAGE).iterdir() if _is_extension(path)]


def compile_core(root: Path, scratch: Path) -> list[tuple[Path, str]]:
    """Compile a copy of the package in `scratch`: (file built, where it goes). The hook
    below, and `benchmarks/ab.py` for the version it compares against."""
    modules = compiled_modules(root)
    # The package's modules, so that mypy sees the types the compiled ones import,
    # under an empty __init__.py: the driver's imports (dnspython, ...) stay out.
    package = scratch / PACKAGE
    package.mkdir()
    for source in (root / PACKAGE).glob("*.py"):
        shutil.copy2(source, package / source.name)
    (package / "__init__.py").write_text("")
    (scratch / "setup.py").write_text(_SETUP)
    result = subprocess.run(
        [sys.executable, "setup.py", *modules],
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
            built = compile_core(root, self._scratch)
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
