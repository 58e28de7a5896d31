"""The documentation site builds without a warning, and the CLI reference is complete."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ice_engine.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    missing = [
        name
        for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
        if importlib.util.find_spec(name.split(".")[0]) is None
        or (name == "mkdocstrings_handlers.python" and importlib.util.find_spec(name) is None)
    ]
    if missing:
        pytest.skip(
            f"the docs tools are not installed ({', '.join(missing)}): pip install -e '.[docs]'"
        )
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in (
        "ice_engine.Gatherer",
        "ice_engine.Gatherer.gather",
        "ice_engine.IceServer",
        "ice_engine.Timing",
        "ice_engine.Candidate",
        "ice_engine.events.IceCandidateEvent",
        "ice_engine.events.IceCandidate",
        "ice_engine.sdp.can_trickle_ice_candidates",
        "ice_engine.interop.to_aiortc",
        "ice_engine.turn.Allocation",
        "ice_engine.gathering.Gathering",
    ):
        assert f'id="{name}"' in api, name
    # Built from the sources even beside the compiled core, which lost its docstrings.
    assert "mypyc filler docstring" not in api and "Initialize self" not in api
    for page in ("recipes/websocket-signalling", "recipes/aiortc-aioice", "concepts"):
        html = (tmp_path / "site" / page / "index.html").read_text()
        assert "--8&lt;--" not in html and "--8<--" not in html, page  # snippets were included


def test_cli_reference_names_every_option() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    parser = build_parser()
    gather = parser._subparsers._group_actions[0].choices["gather"]  # type: ignore[union-attr]
    for action in gather._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert f"`{option}" in text, option
