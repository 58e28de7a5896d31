"""Is a change faster? This tree's ice-engine against another version, in the lab (root).

    python benchmarks/ab.py BASE [--scenario stun|turn] [--n 1000] [--one-base]
                                 [--rounds 15] [--pure] [--json]

BASE is a git revision (checked out in a scratch worktree) or the path of another copy of
the project. Both sides are built alike: each one's package is copied to a scratch
directory and its core compiled there as an install compiles it
(`hatch_build.compile_core`; needs a C compiler, hatchling and mypy), so that neither a
tree without a build nor one whose build is older than its sources can skew the ratio;
`--pure` runs both as plain Python instead. Each round runs one `bench_scale.py`
gathering run (N concurrent gatherers, this tree's benchmark code) for each side, in
alternating order, and the report gives each side's median CPU per gathering and the
median of the rounds' ratios (BASE / this tree: above 1, this tree is faster) with a
95 % bootstrap interval.

Why rounds and an interval: on a shared 2-vCPU machine two runs of the same code can
differ by 15 % and more, and a machine's load drifts over minutes. Pairing the sides
round by round cancels the drift; the interval says whether what is left is more than
noise. A change of a few per cent needs 15 or more rounds to show.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

#: Imports `ice_engine` from the tree given first (as plain Python if the second says
#: so), then runs bench_scale.py as a script: the package's later imports come from that
#: tree too.
_LAUNCH = (
    "import os, runpy, sys; sys.path.insert(0, sys.argv[1]); "
    "os.environ.update({'ICE_ENGINE_PURE_PYTHON': '1'} if sys.argv[2] == 'pure' else {}); "
    "import ice_engine; sys.argv = sys.argv[3:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _checkout(revision: str, tree: Path) -> Path:
    """A worktree of `revision` at `tree`."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), revision],
        check=True,
        capture_output=True,
        text=True,
    )
    return tree


def _built(source: Path, scratch: Path, compile_core: bool) -> Path:
    """A copy of `source`'s package in `scratch`, without whatever build lay beside its
    sources, and with its core compiled there unless plain Python is wanted."""
    tree = scratch / "tree"
    ignored = shutil.ignore_patterns("*.so", "*.pyd", "__pycache__")
    shutil.copytree(source / "ice_engine", tree / "ice_engine", ignore=ignored)
    if compile_core:
        import hatch_build

        build = scratch / "build"
        build.mkdir()
        for path, target in hatch_build.compile_core(tree, build):
            shutil.copy2(path, tree / target)
    return tree


def _run(lab: Any, tree: Path, args: argparse.Namespace) -> float:
    build = "pure" if args.pure else "compiled"
    argv = [sys.executable, "-c", _LAUNCH, str(tree), build, str(HERE / "bench_scale.py")]
    argv += ["--inner", args.scenario, "--impl", "ours", "--n", str(args.n)]
    argv += ["--timeout-s", "60"] + (["--one-base"] if args.one_base else [])
    run = lab.run(argv, timeout_s=300)
    if run.returncode != 0:
        raise RuntimeError(f"a run in {tree} failed: {run.stderr.strip()[-500:]}")
    return float(json.loads(run.stdout.strip().splitlines()[-1])["cpu_ms_per_gathering"])


def bootstrap_interval(ratios: list[float], draws: int = 4000) -> tuple[float, float]:
    """The 95 % interval of the median ratio, resampling the rounds (seeded)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return medians[int(draws * 0.025)], medians[int(draws * 0.975) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base", help="a git revision, or the path of another copy")
    parser.add_argument("--scenario", choices=("stun", "turn"), default="turn")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--one-base", action="store_true", help="one IPv4 base per gatherer")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--pure", action="store_true", help="both sides as plain Python")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.rounds < 2 or args.n < 1:
        parser.error("--rounds must be at least 2 and --n at least 1")

    from ice_engine.lab import lab_session, lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason is not None:
        print(f"ab: nothing compared, the lab cannot run here: {reason}", file=sys.stderr)
        return 1
    cpu: dict[str, list[float]] = {"this": [], "base": []}
    given = Path(args.base)
    with tempfile.TemporaryDirectory(prefix="ice-engine-ab-") as scratch:
        checkout = Path(scratch) / "checkout"  # a worktree of a revision given
        try:
            source = given.resolve() if given.is_dir() else _checkout(args.base, checkout)
            if not (source / "ice_engine").is_dir():
                raise RuntimeError("not a copy of the project (no ice_engine package)")
            trees = {}
            for name, tree in (("this", ROOT), ("base", source)):
                print(f"ab: building {name} ({tree}) ...", file=sys.stderr, flush=True)
                trees[name] = _built(tree, Path(scratch) / name, not args.pure)
            with lab_session() as lab:
                delay = lab.delay_ms
                if delay:  # another session's: the comparison holds, the times are longer
                    print(f"ab: the lab's delay is {delay:g} ms, not 0", file=sys.stderr)
                for round_ in range(args.rounds):
                    sides = list(trees.items())
                    for name, tree in sides if round_ % 2 == 0 else reversed(sides):
                        cpu[name].append(_run(lab, tree, args))
        except (subprocess.CalledProcessError, RuntimeError, OSError, ImportError) as error:
            detail = getattr(error, "stderr", None) or error
            print(f"ab: {args.base}: {str(detail).strip()}", file=sys.stderr)
            return 1
        finally:
            if not given.is_dir():  # the scratch worktree, made or half made
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)],
                    capture_output=True,
                    check=False,
                )
    ratios = [b / t for b, t in zip(cpu["base"], cpu["this"], strict=True)]
    low, high = bootstrap_interval(ratios)
    report = {
        "base": args.base,
        "scenario": args.scenario,
        "n": args.n,
        "one_base": args.one_base,
        "rounds": args.rounds,
        "core": "plain Python" if args.pure else "compiled, both sides built alike",
        "lab_delay_ms": delay,
        "cpu_ms_per_gathering": cpu,
        "median_ms": {name: statistics.median(values) for name, values in cpu.items()},
        "median_ratio": statistics.median(ratios),
        "ratio_interval_95": [low, high],
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{args.scenario}, N={args.n}{', one base' if args.one_base else ''}, "
        f"{args.rounds} rounds, {report['core']}: this tree {report['median_ms']['this']:.3f} ms per gathering, "
        f"{args.base} {report['median_ms']['base']:.3f} ms"
    )
    verdict = "faster" if low > 1 else "slower" if high < 1 else "no difference beyond the noise"
    print(f"base / this: {report['median_ratio']:.3f} (95 % {low:.3f}-{high:.3f}): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
