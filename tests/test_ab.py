"""`benchmarks/ab.py`: its interval, and a version it cannot build."""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PATH = ROOT / "benchmarks" / "ab.py"
_SPEC = importlib.util.spec_from_file_location("ab", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
ab = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ab)


def test_the_interval_holds_the_median_and_narrows_with_agreeing_rounds() -> None:
    assert ab.bootstrap_interval([1.2] * 5) == (1.2, 1.2)
    noisy = [0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.05, 0.95]
    low, high = ab.bootstrap_interval(noisy)
    assert low <= statistics.median(noisy) <= high and high - low > 0.1
    low, high = ab.bootstrap_interval([1.10, 1.12, 1.11, 1.13, 1.09, 1.12, 1.11, 1.10])
    assert 1.09 <= low <= high <= 1.13  # a clear gain: the whole interval above 1
    assert ab.bootstrap_interval(noisy) == ab.bootstrap_interval(noisy)  # seeded


def test_a_revision_that_does_not_exist_is_one_line_and_a_failure() -> None:
    run = subprocess.run(
        [sys.executable, str(_PATH), "no-such-revision-anywhere", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    if "skipped, the lab cannot run here" in run.stderr:
        assert run.returncode == 0  # without root or the lab's tools: nothing to compare
        return
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ab: no-such-revision-anywhere: ")
    assert "Traceback" not in run.stderr


def test_too_few_rounds_is_a_usage_error() -> None:
    run = subprocess.run(
        [sys.executable, str(_PATH), "HEAD", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "--rounds must be at least 2" in run.stderr
