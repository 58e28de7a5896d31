"""Run every benchmark, collect their JSON into benchmarks/results.json, draw the plots.

    python benchmarks/run_all.py [--quick] [--rtts 0,25,50,100] [--lab-wait-s 60]
    python benchmarks/run_all.py --summary | --plots-only [--results FILE]

Runs, each as its own process with a timeout:

- bench_host.py --json            host-only gathering, CPU against aioice (no lab)
- bench_codec_stun.py --json      STUN codec against aioice (no lab)
- bench_codec_candidate.py --json candidate parse/serialize against aioice (no lab)
- bench_latency.py --json --rtt-ms R for each R in --rtts (lab)
- bench_scale.py --json --profile 6000 (lab; the profile goes to
  benchmarks/profile_scale.txt)
- profile_layers.py --json, stun and turn (lab; needs `perf`): where the CPU of a
  gathering goes, by layer

and writes `benchmarks/results.json` plus `docs/img/completion_vs_rtt.png` and
`docs/img/cpu_vs_n.png` (matplotlib, a benchmark-only dependency). `--quick` (fewer
rounds, smaller N, no profiles) writes `benchmarks/results-quick.json` instead and leaves
the plots alone: its figures are a smoke test, not the page's. Lab benchmarks are
skipped, with the reason, when `lab_unavailable_reason()` is not None. The lab is shared
by every test session on the machine and the latency benchmark changes its delay, so
before each lab benchmark this waits (up to --lab-wait-s, default 60 s) until no other
session holds a lease, then goes ahead and records in results.json who it shared the lab
with (their load shares the CPUs and the delay link); it holds its own lease throughout
and puts the delay back to 0 at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common  # this copy's ice_engine first on the path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results.json"
QUICK_RESULTS = HERE / "results-quick.json"
IMG = ROOT / "docs" / "img"


def machine() -> dict[str, Any]:
    """What the host is, and how fast it runs Python and system calls today: ratios
    between libraries move between hosts (a Zen 3 host slowed ice-engine's
    interpreted-and-compiled mix more than aioice's), so each run says where it ran."""
    cpu: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            cpu.setdefault(key.strip(), value.strip())
            if not line.strip():
                break  # the first CPU is enough
    except OSError:
        pass
    from importlib.metadata import version

    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu.get("model name", "unknown"),
        "cpu_family_model": f"{cpu.get('cpu family', '?')}/{cpu.get('model', '?')}",
        "cpu_mhz": cpu.get("cpu MHz"),
        "avx512": "avx512f" in cpu.get("flags", "").split(),
        **calibration(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aioice": version("aioice"),
        "ice_engine": version("ice-engine"),
        **_common.measured(),
    }


def calibration() -> dict[str, float]:
    """Two reference costs (best of 5, µs): a Python loop, and a UDP socket's life."""
    import timeit

    def best(statement: str, setup: str, number: int) -> float:
        runs = timeit.repeat(statement, setup, number=number, repeat=5)
        return round(min(runs) / number * 1e6, 2)

    return {
        "python_sum_range_1000_us": best("sum(range(1000))", "", 2000),
        "udp_socket_bind_close_us": best(
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.bind(('127.0.0.1', 0)); s.close()",
            "import socket",
            2000,
        ),
    }


def run_json(name: str, argv: list[str], timeout_s: float) -> dict[str, Any]:
    """Run one benchmark script and parse the JSON it prints on stdout."""
    started = time.perf_counter()
    print(f"[run_all] {name}: {' '.join(argv)}", flush=True)
    try:
        proc = subprocess.run(
            [sys.executable, *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        print(f"[run_all] {name}: timed out after {timeout_s:.0f} s", flush=True)
        return {"failed": f"timed out after {timeout_s:.0f} s"}
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"[run_all] {name}: exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
        return {"failed": f"exit {proc.returncode}", "stderr": proc.stderr.strip()[-2000:]}
    text = proc.stdout.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = json.loads(text.splitlines()[-1])  # the last line, if a script chats first
    print(f"[run_all] {name}: done in {elapsed:.1f} s", flush=True)
    if isinstance(data, dict):
        data["_elapsed_s"] = round(elapsed, 1)
    return data  # type: ignore[no-any-return]


def wait_for_quiet_lab(limit_s: float) -> dict[str, Any]:
    """Wait until no other test session holds a lab lease (bounded); say how it went."""
    from ice_engine.lab.leases import other_sessions

    started = time.monotonic()
    others = other_sessions()
    if others:
        print(f"[run_all] lab in use by sessions {others}; waiting up to {limit_s:.0f} s")
    while others and time.monotonic() - started < limit_s:
        time.sleep(2)
        others = other_sessions()
    shared = []
    for pid in others:  # still there: say who, since they share the CPU and the link
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            shared.append(cmdline.decode(errors="replace").strip())
        except OSError:
            pass
    if shared:
        print(f"[run_all] going ahead with the lab shared with: {shared}", flush=True)
    return {"waited_s": round(time.monotonic() - started, 1), "shared_with": shared}


# -- plots ---------------------------------------------------------------------------------


def plot(results: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    written = []
    aioice = f"aioice {results.get('machine', {}).get('aioice', '')}".strip()
    points = []
    for rtt, data in _by_rtt(results["benchmarks"].get("latency", {})):
        row = data["scenarios"].get("stun")
        if row and "ours" in row:
            points.append((rtt, row["ours"]["complete"], row["aioice"]["complete"]))
    if points:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] for p in points], "o-", label="ice-engine")
        ax.plot(xs, [p[2] for p in points], "s-", label=aioice)
        ax.plot(xs, [x + 10 for x in xs], "k--", lw=1, label="bound: RTT + 10 ms")
        ax.plot(xs, xs, ":", color="grey", lw=1, label="RTT")
        ax.set_xlabel("round-trip time to the STUN server (ms)")
        ax.set_ylabel("median time to gathering complete (ms)")
        ax.set_title("Host + srflx gathering completion vs RTT (lab, stun scenario)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = IMG / "completion_vs_rtt.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path.relative_to(ROOT)))

    scale = results["benchmarks"].get("scale", {})
    runs = scale.get("runs", []) if isinstance(scale, dict) else []
    if runs:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for scenario, marker in (("stun", "o"), ("turn", "^")):
            for who, label, style in (
                ("ice_engine", "ice-engine", "-"),
                ("aioice", aioice, "--"),
            ):
                pts = [
                    (r["n"], r[who]["cpu_ms_per_gathering"], "note" in r)
                    for r in runs
                    if r["scenario"] == scenario and "cpu_ms_per_gathering" in r.get(who, {})
                ]
                if not pts:
                    continue
                full = [p for p in pts if not p[2]]
                line = ax.plot(
                    [p[0] for p in full],
                    [p[1] for p in full],
                    marker + style,
                    label=f"{label}, {scenario}",
                )
                one = [p for p in pts if p[2]]
                if one:
                    ax.plot(
                        [p[0] for p in one],
                        [p[1] for p in one],
                        marker,
                        mfc="none",
                        color=line[0].get_color(),
                        label=f"{label}, {scenario}, 1 base/gatherer",
                    )
        ax.set_xscale("log")
        ax.set_xlabel("concurrent gatherers in one process (N)")
        ax.set_ylabel("CPU per gathering (ms)")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.6)  # room for the legend above the data
        ax.set_title("CPU per gathering vs N (lab, host+srflx / +relay)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        fig.tight_layout()
        path = IMG / "cpu_vs_n.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path.relative_to(ROOT)))
    return written


def _by_rtt(latency: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
    """The latency runs that gave figures, by RTT (a skipped or failed one gave none)."""
    runs = []
    for key, data in latency.items():
        try:
            rtt = float(key)
        except ValueError:  # "skipped": the lab could not run
            continue
        if isinstance(data, dict) and "scenarios" in data:
            runs.append((rtt, data))
    return sorted(runs, key=lambda run: run[0])


def failures(bench: dict[str, Any]) -> list[str]:
    """Which benchmarks failed, a latency RTT or a profile scenario each."""
    failed = []
    for name, data in bench.items():
        if not isinstance(data, dict):
            continue
        if "failed" in data:
            failed.append(name)
        elif name in ("latency", "layers"):
            failed += [f"{name} {key}" for key, run in data.items() if "failed" in run]
    return failed


def _reason(row: dict[str, Any]) -> str:
    """Why a row has no figures, in one line (a traceback's last)."""
    text = str(row.get("skipped") or row.get("failed") or "-").strip()
    return (text.splitlines() or ["-"])[-1][:160].replace("|", "/")


# -- summary -------------------------------------------------------------------------------


def _f(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _runs(runs: list[float] | None) -> str:
    """(0.1, 0.2, ...): every run's or block's CPU figure, where the benchmark kept them."""
    return f" ({', '.join(_f(r) for r in sorted(runs))})" if runs else ""


def summarize(results: dict[str, Any]) -> str:
    """The figures as Markdown tables (what docs/benchmarks.md shows)."""
    bench = results["benchmarks"]
    out: list[str] = [f"Command: `{results.get('command', '?')}`", ""]
    where = results.get("machine", {})
    if "core" in where:
        out += [
            f"Measured: `ice_engine` from {where['ice_engine_from']} at {where['commit']}, "
            f"its sans-I/O core {where['core']}.",
            "",
        ]
    if "python_sum_range_1000_us" in where:
        out += [
            f"Machine: {where['cpu_model']} (family/model {where['cpu_family_model']}, "
            f"{where['cpu_mhz']} MHz, AVX-512 {'yes' if where['avx512'] else 'no'}); "
            f"`sum(range(1000))` {where['python_sum_range_1000_us']} µs, a UDP socket "
            f"created, bound and closed {where['udp_socket_bind_close_us']} µs.",
            "",
        ]
    host = bench.get("host", {})
    if "cpu_ms_per_gathering_ice_engine" in host:
        out += [
            "| host-only gathering | ice-engine | aioice | aioice / ice-engine |",
            "| --- | ---: | ---: | ---: |",
            f"| CPU per gathering (ms), median of blocks | "
            f"{_f(host['cpu_ms_per_gathering_ice_engine'])}{_runs(host.get('cpu_ms_per_gathering_ice_engine_runs'))} "
            f"| {_f(host['cpu_ms_per_gathering_aioice'])}{_runs(host.get('cpu_ms_per_gathering_aioice_runs'))} "
            f"| {_f(host['cpu_ratio_aioice_over_ice_engine'], 2)}x |",
            f"| first candidate, median / p95 (ms) | {_f(host['first_candidate_ms_median'])} / "
            f"{_f(host['first_candidate_ms_p95'])} | | |",
            "",
        ]
    for key, label, item in (
        ("codec_stun", "STUN codec", "message"),
        ("codec_candidate", "candidate codec", "candidate"),
    ):
        data = bench.get(key, {})
        if "results" not in data:
            continue
        out += [
            f"| {label}: {item} | operation | ice-engine µs | aioice µs | aioice / ice-engine |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for row in data["results"]:
            out.append(
                f"| {row[item]} | {row['operation']} | {row['ice_engine_us']:.3f} "
                f"| {row['aioice_us']:.3f} | {row['ratio']:.2f}x |"
            )
        out.append("")
    rows = []
    for rtt, data in _by_rtt(bench.get("latency", {})):
        for scenario, row in data["scenarios"].items():
            if "skipped" in row:
                rows.append(f"| {rtt:g} | {scenario} | skipped: {_reason(row)} |")
                continue
            ours, theirs = row["ours"], row["aioice"]
            bound = ", ".join(f"{k} <= {v:g}" for k, v in row["bound_ms"].items())
            ratio = row.get("completion_ratio_aioice_over_ours")
            rows.append(
                f"| {rtt:g} | {scenario} | {_f(ours['first'], 2)} | {_f(ours['srflx'], 2)} "
                f"| {_f(ours['complete'], 2)} | {_f(theirs['complete'], 2)} "
                f"| {_f(ratio, 2)} | {bound} | {'met' if row['within_bound'] else 'MISSED'} |"
            )
    if rows:
        out += [
            "| RTT ms | scenario | ours first | ours srflx | ours complete | aioice complete "
            "| aioice / ours | bound (ms) | bound |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
            *rows,
            "",
        ]
    scale = bench.get("scale", {})
    if scale.get("runs"):
        out += [
            "| scenario | N | who | bases | CPU ms/gathering (median of runs) | user + sys "
            "| GC share | wall s to all complete | completed | errors | peak RSS MB "
            "| KB per open gatherer | fds at peak | aioice / this CPU |",
            "| --- | ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: | ---: |",
        ]
        whos = (("ice_engine", "ice-engine"), ("aioice", "aioice"), ("floor", "floor"))
        for run in scale["runs"]:
            for who, name in whos:
                r = run.get(who, {})
                if who == "floor" and not r:
                    continue
                if "cpu_ms_per_gathering" not in r:
                    out.append(f"| {run['scenario']} | {run['n']} | {name} | {_reason(r)} |")
                    continue
                ratio = {
                    "ice_engine": run.get("cpu_ratio_aioice_over_ice_engine"),
                    "floor": run.get("cpu_ratio_aioice_over_floor"),
                }.get(who)
                out.append(
                    f"| {run['scenario']} | {run['n']} | {name} | {r['bases']} "
                    f"| {_f(r['cpu_ms_per_gathering'])}{_runs(r.get('cpu_ms_per_gathering_runs'))} "
                    f"| {_f(r.get('user_ms_per_gathering'))} + {_f(r.get('sys_ms_per_gathering'))} "
                    f"| {r['gc_share_of_cpu']:.0%} "
                    f"| {_f(r['wall_s_all_complete'], 2)} | {r['completed']}/{r['n']} "
                    f"| {r['errors']} | {r['peak_rss_mb']:.0f} | {r['kb_per_open_gatherer']:.1f} "
                    f"| {r['fds_open_peak']} | {_f(ratio, 2)}{'x' if ratio else ''} |"
                )
        out.append("")
    out += _layers(bench.get("layers", {}))
    return "\n".join(out)


def _layers(layers: dict[str, Any]) -> list[str]:
    """profile_layers.py's shares, a column per scenario."""
    runs = {k: v for k, v in layers.items() if isinstance(v, dict) and "layers" in v}
    if not runs:
        return []
    out = [
        "| share of a gathering's CPU (perf) | "
        + " | ".join(f"{r['scenario']}, N={r['n']}, {r['bases']}" for r in runs.values())
        + " |",
        "| --- |" + " ---: |" * len(runs),
    ]
    for layer in next(iter(runs.values()))["layers"]:
        shares = " | ".join(f"{r['layers'][layer]:.0%}" for r in runs.values())
        out.append(f"| {layer} | {shares} |")
    for name, run in runs.items():
        top = ", ".join(
            f"`{f}` {share:.1%}" for f, share in list(run["core_functions"].items())[:6]
        )
        out.append(f"\nInnermost core functions, {name}: {top}.")
    out.append("")
    return out


# -- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rtts", default="0,25,50,100", help="latency RTTs in ms")
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds, smaller N; into results-quick.json"
    )
    parser.add_argument("--lab-wait-s", type=float, default=60.0)
    parser.add_argument("--plots-only", action="store_true", help="replot the results")
    parser.add_argument("--summary", action="store_true", help="print the results as tables")
    parser.add_argument(
        "--results", type=Path, help="the file --summary and --plots-only read (results.json)"
    )
    args = parser.parse_args()
    try:
        rtts = [float(x) for x in args.rtts.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--rtts must be numbers of ms, comma-separated, not {args.rtts!r}")

    if args.summary or args.plots_only:
        path = args.results or RESULTS
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            parser.error(f"{path}: {getattr(error, 'strerror', None) or error}")
        if args.summary:
            print(summarize(saved))
        for written in plot(saved) if args.plots_only else ():
            print(f"[run_all] wrote {written}")
        return 0

    build = _common.build_warning(_common.measured())
    if build:
        print(f"[run_all] note: {build}", flush=True)

    results: dict[str, Any] = {
        "machine": machine(),
        "command": "python benchmarks/run_all.py" + (" --quick" if args.quick else ""),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "benchmarks": {},
    }
    bench = results["benchmarks"]
    rounds = ["--rounds", "100"] if args.quick else []
    bench["host"] = run_json("host", ["benchmarks/bench_host.py", "--json", *rounds], 600)
    bench["codec_stun"] = run_json("codec_stun", ["benchmarks/bench_codec_stun.py", "--json"], 600)
    bench["codec_candidate"] = run_json(
        "codec_candidate", ["benchmarks/bench_codec_candidate.py", "--json"], 600
    )

    from ice_engine.lab import lab_session, lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason is not None:
        print(f"[run_all] lab benchmarks skipped: the lab cannot run here: {reason}")
        bench["latency"] = {"skipped": reason}
        bench["scale"] = {"skipped": reason}
    else:
        with lab_session() as lab:
            try:
                latency: dict[str, Any] = {}
                for rtt in rtts:
                    quiet = wait_for_quiet_lab(args.lab_wait_s)
                    argv = ["benchmarks/bench_latency.py", "--json", "--rtt-ms", f"{rtt:g}"]
                    if args.quick:
                        argv += ["--rounds", "3"]
                    latency[f"{rtt:g}"] = run_json(f"latency rtt={rtt:g}", argv, 900)
                    latency[f"{rtt:g}"]["_lab"] = quiet
                bench["latency"] = latency
                lab.set_delay(0)
                quiet = wait_for_quiet_lab(args.lab_wait_s)
                argv = ["benchmarks/bench_scale.py", "--json"]
                if args.quick:
                    argv += ["--stun-n", "100,1000", "--turn-n", "100", "--turn-one-base-n", "0"]
                    argv += ["--repeat", "1"]
                else:
                    argv += ["--profile", "6000"]
                    argv += ["--profile-out", str(HERE / "profile_scale.txt")]
                bench["scale"] = run_json("scale", argv, 3600)
                bench["scale"]["_lab"] = quiet
                if not args.quick:
                    layers: dict[str, Any] = {}
                    for scenario, extra in (("stun", []), ("turn", ["--one-base"])):
                        argv = ["benchmarks/profile_layers.py", "--json", "--scenario", scenario]
                        layers[scenario] = run_json(f"layers {scenario}", argv + extra, 900)
                    bench["layers"] = layers
            finally:
                lab.set_delay(0)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out = QUICK_RESULTS if args.quick else RESULTS
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"[run_all] wrote {out.relative_to(ROOT)}")
    if not args.quick:  # the page's plots are a full run's
        for path in plot(results):
            print(f"[run_all] wrote {path}")
    print(summarize(results))
    if build:
        print(f"[run_all] note: {build}")
    failed = failures(bench)
    if failed:
        print(f"[run_all] failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
