"""Where a gathering's CPU goes, by layer: sampled with `perf`, in the lab (needs root).

    python benchmarks/profile_layers.py [--scenario stun|turn] [--n 1000] [--one-base]
                                        [--json]

Runs one `bench_scale.py` ice-engine run of N concurrent gatherings under
`perf record --call-graph dwarf`, sampling only while the gatherings run (perf's control
FIFO is enabled and disabled around the measured phase, so imports, warm-up and closing
are left out), and sorts every sample by the layer it was taken in:

- **sans-I/O core**: a stack with a frame of the mypyc-compiled core (`CPyDef_*`), with
  everything it calls (allocation, dicts, hashing, the collector when an allocation
  trips it);
- **kernel**: the sample's innermost frame is in the kernel (system calls: socket,
  bind, sendto, recvfrom, epoll; page faults), not under the core;
- **garbage collector**: collections started outside the core;
- **interpreter and the rest**: everything else, which is the interpreted driver,
  asyncio, the benchmark's own loop over the events, and the C functions they call.

cProfile cannot do this: it does not see inside compiled code, and it charges
collections to whatever runs when they start. It needs the core compiled (the default
build; with `ICE_ENGINE_PURE_PYTHON=1` the core's frames are interpreted and land in the
last row) and `perf` (Debian: `linux-perf`). Also prints the core's functions that the
most samples were taken in (innermost core frame).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
import _common  # noqa: E402 - this copy's ice_engine first on the path

LAYERS = ("sans-I/O core", "kernel", "garbage collector", "interpreter and the rest")


def _dotted(symbol: str) -> str:
    """mypyc's `CPyDef_turn___Allocation____send` -> `turn.Allocation._send`."""
    return ".".join(symbol.partition("_")[2].split("___"))


def classify(script: str) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """`perf script -F ip,sym,dso` output -> samples per layer, per innermost core
    function, and the total."""
    layers: collections.Counter[str] = collections.Counter()
    core: collections.Counter[str] = collections.Counter()
    total = 0
    for block in script.split("\n\n"):
        frames = []
        for line in block.strip().splitlines():
            _ip, _, rest = line.strip().partition(" ")
            symbol, _, dso = rest.rpartition(" (")
            frames.append((symbol, dso))
        if not frames:
            continue
        total += 1
        compiled = [s for s, _ in frames if s.startswith(("CPyDef_", "CPyPy_"))]
        if compiled:
            layers["sans-I/O core"] += 1
            core[_dotted(compiled[0])] += 1
        elif "kernel" in frames[0][1]:
            layers["kernel"] += 1
        elif any("gc_collect" in s for s, _ in frames):
            layers["garbage collector"] += 1
        else:
            layers["interpreter and the rest"] += 1
    return layers, core, total


def _sample(args: argparse.Namespace) -> tuple[dict[str, Any], str] | None:
    """One bench_scale run under perf, sampled while it gathers: its result and samples."""
    with tempfile.TemporaryDirectory(prefix="ice-engine-perf-") as scratch:
        control, data = os.path.join(scratch, "control"), os.path.join(scratch, "perf.data")
        os.mkfifo(control)
        bench = [sys.executable, str(HERE.parent / "bench_scale.py"), "--inner", args.scenario]
        bench += ["--impl", "ours", "--n", str(args.n), "--perf-control", control]
        bench += ["--one-base"] if args.one_base else []
        record = ["perf", "record", "-q", "--call-graph", "dwarf", "-D", "-1"]
        record += ["--control", f"fifo:{control}", "-o", data]
        run = subprocess.run(
            ["ip", "netns", "exec", "ice-client", *record, *bench],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if run.returncode != 0:
            print(f"profile_layers: the run failed: {run.stderr.strip()[-300:]}", file=sys.stderr)
            return None
        result = json.loads(run.stdout.strip().splitlines()[-1])
        script = subprocess.run(
            ["perf", "script", "-i", data, "-F", "ip,sym,dso"],
            capture_output=True,
            text=True,
            timeout=600,
        ).stdout
    return result, script


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=("stun", "turn"), default="turn")
    parser.add_argument("--n", type=_common.positive_int, default=1000)
    parser.add_argument("--one-base", action="store_true")
    parser.add_argument(
        "--top", type=_common.positive_int, default=15, help="core functions to list"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from ice_engine.lab import lab_session, lab_unavailable_reason

    reason = lab_unavailable_reason() or (
        None if shutil.which("perf") else "perf is not installed (Debian: linux-perf)"
    )
    if reason:
        print(json.dumps({"skipped": reason}) if args.json else f"skipped: {reason}")
        return 0
    with lab_session() as lab:
        delay_ms = lab.delay_ms
        sampled = _sample(args)
    if sampled is None:
        return 1
    result, script = sampled
    layers, core, total = classify(script)
    if not total:
        print("profile_layers: perf took no samples", file=sys.stderr)
        return 1
    report = {
        "scenario": args.scenario,
        "n": args.n,
        "bases": result["bases"],
        "lab_delay_ms": delay_ms,
        "cpu_ms_per_gathering": result["cpu_ms_per_gathering"],
        "samples": total,
        "layers": {layer: layers[layer] / total for layer in LAYERS},
        "core_functions": {name: count / total for name, count in core.most_common(args.top)},
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{args.scenario}, N={args.n}, {result['bases']}: "
        f"{result['cpu_ms_per_gathering']:.3f} ms CPU per gathering, {total} samples, "
        f"lab delay {delay_ms:g} ms"
    )
    for layer in LAYERS:
        print(f"  {layers[layer] / total:6.1%}  {layer}")
    print("innermost core function:")
    for name, count in core.most_common(args.top):
        print(f"  {count / total:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
