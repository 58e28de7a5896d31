"""The compiled core (mypyc, hatch_build.py) and the switch back to its sources."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import hatch_build
from ice_engine import compiled

ROOT = Path(__file__).resolve().parent.parent


def test_the_build_compiles_what_compiled_py_names() -> None:
    expected = [f"ice_engine/{name}.py" for name in compiled.COMPILED]
    assert hatch_build.compiled_modules(ROOT) == expected
    assert all((ROOT / module).is_file() for module in expected)


@pytest.mark.parametrize("name", compiled.COMPILED)
def test_compiled_module_is_current(name: str) -> None:
    """A compiled module goes stale when its source changes: reinstall to rebuild."""
    module = importlib.import_module(f"ice_engine.{name}")
    if not compiled.is_compiled(module):
        pytest.skip(f"ice_engine.{name} runs as plain Python here (not compiled)")
    source = compiled.source_of(name)
    (built,) = [
        source.with_name(name + suffix)
        for suffix in EXTENSION_SUFFIXES
        if source.with_name(name + suffix).exists()
    ]
    assert built.stat().st_mtime >= source.stat().st_mtime, (
        f"{source} changed after it was compiled: run pip install -e . again "
        f"(or set {compiled.PURE_PYTHON_VARIABLE}=1 to run the sources)"
    )


def test_the_variable_runs_the_sources() -> None:
    """ICE_ENGINE_PURE_PYTHON=1 imports every compiled module from its .py, and a
    gathering runs the same there."""
    script = (
        "import sys, ice_engine.gathering as first\n"  # before anything imports `compiled`
        "assert first.__file__.endswith('.py'), first.__file__\n"
        "from ice_engine import compiled, gathering, stun, candidate\n"
        "names = [n for n in compiled.COMPILED if compiled.is_compiled(sys.modules['ice_engine.' + n])]\n"
        "assert not names, names\n"
        "assert not candidate._COMPILED\n"
        "m = stun.parse(stun.encode(stun.Method.BINDING, stun.MessageClass.REQUEST, bytes(12)))\n"
        "print(m.method, gathering.__file__.endswith('.py'))\n"
    )
    environment = {**os.environ, compiled.PURE_PYTHON_VARIABLE: "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "True"]
