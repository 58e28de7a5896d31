"""`ice-engine demo`, as a person runs it on a fresh machine (as root)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from ice_engine.lab import Lab, leases
from ice_engine.lab.topology import USERS_DIR

pytestmark = pytest.mark.lab


def test_demo_shows_host_srflx_and_relay(lab: Lab) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ice_engine", "demo", "--json", "--delay-ms", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = {
        e["candidate"]["candidate"].split()[7]
        for e in events
        if e["event"] == "icecandidate" and e["candidate"] and e["candidate"]["candidate"]
    }
    assert kinds == {"host", "srflx", "relay"}
    assert not [e for e in events if e["event"] == "icecandidateerror"]
    assert events[-1]["candidate"] is None
    assert "wonderland" not in result.stdout + result.stderr


def test_demo_plain_output_explains_the_lab(lab: Lab) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ice_engine", "demo", "--plain", "--delay-ms", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "network namespaces" in result.stdout
    assert "relay" in result.stdout and "srflx" in result.stdout


@pytest.mark.parametrize(
    ("moment", "delay_ms", "times"),
    [
        ("while it joins the lab", 7, 1),
        ("while it joins the lab", 7, 2),
        ("while it gathers", 150, 1),
    ],
)
def test_sigterm_ends_the_demo_with_the_lab_left_as_found(
    lab: Lab, moment: str, delay_ms: int, times: int
) -> None:
    """`kill` (SIGTERM) or a closed terminal (SIGHUP) killed the demo where it stood: its
    lease stayed behind, and so did the delay it had set on the lab it joined. Now it
    ends as Ctrl-C does: the gathering closes (its relays released) and exits 143, which
    the demo returns once the lab is as it found it. A second signal (a hang-up comes
    from the kernel and the shell) does not cut that cleanup short."""
    if others := leases.other_sessions():  # it changes the shared delay
        pytest.skip(f"the lab is in use by other test sessions (PIDs {others})")
    before = lab.delay_ms
    process = subprocess.Popen(
        [sys.executable, "-m", "ice_engine", "demo", "--plain", "--delay-ms", str(delay_ms)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("ice-engine demo: ")  # the intro, then the lab
    if moment == "while it gathers":
        for line in process.stdout:  # the servers are 2 × 150 ms away: nothing else yet
            if " host " in line:
                break
    process.send_signal(signal.SIGTERM)  # to the demo alone, as `kill PID` sends it
    if times == 2:
        time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    # The second, if it comes once the cleanup is done, ends the process as the signal
    # does: a shell sees 143 either way.
    assert process.returncode in (128 + signal.SIGTERM, -signal.SIGTERM)[:times], err
    assert "Traceback" not in err, err
    if moment == "while it gathers":
        assert "interrupted after" in out
    assert not (USERS_DIR / f"session-{process.pid}").exists()
    assert lab.delay_ms == before


def test_a_signal_ignored_when_the_demo_started_stays_ignored(lab: Lab) -> None:
    """`nohup ice-engine demo` (or `... &` in a script) ignores the hang-up; the demo took
    the signal over for itself (and its gathering was started with it no longer ignored)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ice_engine", "demo", "--plain", "--delay-ms", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN),
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("ice-engine demo: ")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (0, ""), err
    assert "interrupted" not in out and "relay" in out
