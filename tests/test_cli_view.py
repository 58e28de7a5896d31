"""`ice-engine gather`'s two faces: the live table on a terminal, plain lines elsewhere.

The terminal is real: tmux renders the screen and `capture-pane` reads it back, as a person
would see it; a pty checks the same path without tmux. A UDP socket on loopback that never
answers stands in for a dead STUN server (so the spinner has something to wait for), and a
closed loopback port for one that fails at once (ICMP port unreachable: a red error row).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ice_engine.candidate import Candidate, compute_priority
from ice_engine.events import (
    CandidateRemovedEvent,
    GatheringState,
    IceCandidate,
    IceCandidateErrorEvent,
    IceCandidateEvent,
    IceGatheringStateChangeEvent,
)
from ice_engine.interfaces import local_addresses
from ice_engine.liveview import Summary, format_event
from ice_engine.model import local_preference
from ice_engine.urls import hostport

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b[\[\]()][0-9;?]*[ -/]*[@-~]")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["TERM"] = "xterm-256color"
    env.pop("NO_COLOR", None)
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    return env


@pytest.fixture
def ipv4_host() -> str:
    addresses = [a.address for a in local_addresses() if a.family == socket.AF_INET]
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address to gather from")
    return addresses[0]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback UDP port that receives STUN requests and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _closed_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


# -- the plain view ---------------------------------------------------------------


def test_plain_view_without_a_terminal_has_no_ansi_and_a_summary(ipv4_host: str) -> None:
    closed = _closed_port()
    result = subprocess.run(
        [sys.executable, "-m", "ice_engine", "gather", "--ice-server", f"stun:127.0.0.1:{closed}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=_env(),  # TERM set, yet stdout is a pipe: plain
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b" not in out
    assert f" host   mid 0 comp 1 udp {ipv4_host}:" in out
    assert f"ERROR 701  stun:127.0.0.1:{closed} from {ipv4_host}:" in out
    assert f"server stun:127.0.0.1:{closed}: failed; first candidate -; 0 candidates; " in out
    assert re.search(r"^\d+ candidates? \(\d+ host\), \d+ errors?, 1 generation$", out, re.M)
    assert out.rstrip().splitlines()[-1].startswith("done in ")


def test_json_and_plain_are_exclusive() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ice_engine", "gather", "--json", "--plain"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "not allowed with" in result.stderr


# -- the summary's bookkeeping ----------------------------------------------------


def _candidate(kind: str, rank: int, slot: int) -> IceCandidate:
    parsed = Candidate(
        "1",
        1,
        "udp",
        compute_priority(100 if kind == "srflx" else 126, local_preference(rank, slot), 1),
        "198.51.100.1",
        4000,
        kind,
    )
    return IceCandidate(parsed.to_sdp(), "0", 0, "abcd", parsed)


def test_candidates_are_attributed_to_the_server_their_event_names() -> None:
    summary = Summary(["stun:a.example", "stun:b.example"])
    b_url = "stun:b.example"
    summary.add(IceCandidateEvent(_candidate("host", 0, 0), 0, 0.001))
    summary.add(IceCandidateEvent(_candidate("srflx", 1, 2), 0, 0.030, b_url))
    summary.add(IceCandidateEvent(_candidate("srflx", 0, 1), 0, 0.040, b_url))
    summary.add(IceCandidateErrorEvent("stun:a.example", "203.0.113.2", 5, 701, "gone", 0, 2.0))
    a, b = summary.servers
    assert (a.status, a.candidates, a.first_candidate, len(a.errors)) == ("failed", 0, None, 1)
    assert (b.status, b.candidates, b.first_candidate) == ("ok", 2, 0.030)
    assert summary.heard_from() == 2
    assert summary.type_counts() == "1 host, 2 srflx"


def test_a_server_s_errors_are_each_told_once_with_how_often_they_came() -> None:
    """One per base, often: the same text twice made the summary line twice as long."""
    url = "turn:a.example"
    summary = Summary([url])
    unreachable = "TURN server unreachable (ICMP port unreachable)."
    for base, code, text in [(2, 701, unreachable), (3, 701, unreachable), (4, 486, "quota")]:
        summary.add(IceCandidateErrorEvent(url, f"203.0.113.{base}", 5, code, text, 0, 0.1))
    summary.add(IceCandidateEvent(_candidate("relay", 0, 1), 0, 0.2, url))
    assert summary.server_lines() == [
        f"server {url}: partly failed; first candidate 200.0 ms; 1 candidate; 3 errors "
        "(701 TURN server unreachable (ICMP port unreachable) ×2, 486 quota)"
    ]
    for n in range(4):  # beyond three kinds, how many more errors
        summary.add(IceCandidateErrorEvent(url, "203.0.113.2", 5, 700 + n, "x", 0, 0.3))
    assert summary.server_lines()[0].endswith(", 700 x, … 3 more)")


# -- the live view, on a real terminal ---------------------------------------------


class Tmux:
    """One private tmux server (its own socket name), killed by that name at the end."""

    def __init__(self) -> None:
        self.name = f"ice-engine-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.name, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-J", "-t", "view")

    def wait_for(self, needle: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if needle in screen:
                return screen
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} never showed; the screen:\n{screen}")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux): no terminal to render in")
    session = Tmux()
    try:
        yield session
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            session("kill-server")


def _start(tmux: Tmux, args: list[str]) -> None:
    command = " ".join([sys.executable, "-m", "ice_engine", "gather", *args])
    tmux(
        "new-session",
        "-d",
        "-s",
        "view",
        "-x",
        "200",
        "-y",
        "60",
        "-e",
        f"PYTHONPATH={_env()['PYTHONPATH']}",
        # COLUMNS/LINES from the test's environment would override the terminal's size
        f"env -u COLUMNS -u LINES {command}; echo EXIT=$?; sleep 120",
    )


def test_live_view_in_tmux_shows_rows_spinner_errors_and_summary(
    tmux: Tmux, ipv4_host: str, silent_server: int
) -> None:
    closed = _closed_port()
    _start(
        tmux,
        [
            "--ice-server",
            f"stun:127.0.0.1:{closed}",
            "--ice-server",
            f"stun:127.0.0.1:{silent_server}",
            "--timeout",
            "1.5",
        ],
    )
    # the silent server keeps it waiting for 1.5 s (the closed port fails at once when the
    # kernel's ICMP rate limit lets its port unreachable through, else by the deadline)
    waiting = tmux.wait_for("gathering…")
    assert "ICE candidates" in waiting
    assert re.search(r"heard from [01]/2 servers \(each has 1\.5 s\)", waiting), waiting
    assert re.search(r"[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] gathering… \d+ ms", waiting), waiting
    screen = tmux.wait_for("EXIT=")
    assert "EXIT=0" in screen
    for header in (
        "Time (ms)",
        "Component",
        "Type",
        "Foundation",
        "Protocol",
        "Address",
        "Port",
        "Priority",
        "Related address",
    ):
        assert header in screen, header
    host_row = re.compile(
        rf"│\s+\d+\.\d │ 0\s+│\s+1 │ host\s+│ \d+\s+│ udp\s+│ {re.escape(ipv4_host)}\s+│\s+\d+ │\s+\d+ │"
    )
    assert host_row.search(screen), screen
    assert "(end-of-candidates)" in screen
    assert "Errors (icecandidateerror)" in screen
    assert re.search(
        rf"│ stun:127\.0\.0\.1:{closed}\s+│ {re.escape(ipv4_host)}:\d+\s+│ 701", screen
    )
    # errors are highlighted: the rows of the error table are drawn in red
    coloured = tmux("capture-pane", "-p", "-e", "-J", "-t", "view")
    error_rows = [
        line for line in coloured.splitlines() if f"{ipv4_host}:" in line and "701" in line
    ]
    assert error_rows and all("\x1b[31m" in line for line in error_rows), error_rows
    # the summary: one row per server, then the totals
    assert "Servers" in screen and "First candidate" in screen
    assert re.search(
        rf"│ stun:127\.0\.0\.1:{closed}\s+│ failed\s+│\s+- │\s+0 │\s+\d+ \(701\) │", screen
    )
    assert re.search(rf"│ stun:127\.0\.0\.1:{silent_server}\s+│ failed\s+│", screen)
    assert re.search(r"✓ complete: \d+ candidates? \(\d+ host\), \d+ errors?, 1 generation", screen)
    assert "done in " in screen
    assert "gathering…" not in screen  # the spinner line gave way to the summary


def test_live_view_in_tmux_marks_an_ice_restart(tmux: Tmux, ipv4_host: str) -> None:
    _start(tmux, ["--generations", "2", "--mids", "0,1"])
    screen = tmux.wait_for("EXIT=")
    assert "EXIT=0" in screen
    assert re.search(r"ICE restart: generation 1, ufrag [A-Za-z0-9+/]{8}", screen), screen
    assert screen.count("(end-of-candidates)") == 4
    assert "2 generations" in screen


def _on_a_pty(columns: int, env: dict[str, str], *options: str) -> str:
    """`ice-engine gather` on a pseudo-terminal `columns` wide: all it wrote (status 0)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "ice_engine", "gather", *options],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return b"".join(chunks).decode()


def test_live_view_on_a_pty(ipv4_host: str) -> None:
    """Without tmux: a pseudo-terminal of 160 columns; the output is ANSI, the text the table."""
    raw = _on_a_pty(160, _env())
    assert "\x1b[" in raw  # a terminal gets the live view, not plain lines
    text = ANSI.sub("", raw)
    assert "ICE candidates" in text
    assert re.search(rf"│ host\s+│ \d+\s+│ udp\s+│ {re.escape(ipv4_host)}\s+│", text), text
    assert "✓ complete:" in text and "done in " in text
    assert " state       gathering" not in text  # none of the plain view's lines


def test_a_terminal_too_narrow_for_the_table_gets_plain_lines() -> None:
    """COLUMNS=0 on a terminal drew nothing at all but the cursor's codes (found by a
    review): under 40 columns the view falls back to plain lines."""
    text = ANSI.sub("", _on_a_pty(160, {**_env(), "COLUMNS": "0"}))
    assert "ICE candidates" not in text
    assert " state       gathering" in text and "done in " in text
    # ICE-TCP rows were cut at the edge under 94 columns, mid-address: columns give way now
    text = ANSI.sub("", _on_a_pty(80, _env(), "--tcp"))
    assert "ICE candidates" in text and "tcp (passive)" in text and "✓ complete:" in text


def test_ctrl_z_shows_the_cursor_before_stopping_and_fg_draws_again() -> None:
    """Ctrl-Z left the shell's prompt without a cursor until `fg` (found in a lab trial)."""
    hide, show = "\x1b[?25l", "\x1b[?25h"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    command = [sys.executable, "-m", "ice_engine", "gather", "--watch"]
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=_env())
    os.close(slave)
    written = ""

    def read_until(done: Callable[[str], bool]) -> str:
        nonlocal written
        deadline = time.monotonic() + 20
        while not done(written) and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child has closed the terminal
                    break
                written += data.decode(errors="replace")
        return written

    try:
        read_until(lambda text: text.count("watching…") >= 2)  # a frame after the first
        process.send_signal(signal.SIGTSTP)
        _, status = os.waitpid(process.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTSTP
        before = read_until(lambda text: text.rfind(show) > text.rfind(hide))
        assert before.rfind(show) > before.rfind(hide)  # the cursor shown for the shell
        mark = len(before)
        process.send_signal(signal.SIGCONT)  # fg
        after = read_until(lambda text: "watching…" in text[mark:])[mark:]
        assert hide in after and "ICE candidates" in after  # hidden again, drawn afresh
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 130
        assert read_until(lambda text: False).rfind(show) > written.rfind(hide)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)


def test_a_terminal_in_the_c_locale_gets_plain_ascii_lines() -> None:
    """Under LC_ALL=C, Python writes UTF-8 (its UTF-8 mode), and the live view drew box
    lines, a braille spinner and ✓ on what the locale says is an ASCII terminal (found in a
    lab trial)."""
    raw = _on_a_pty(160, {**_env(), "LC_ALL": "C"})
    assert "ICE candidates" not in raw and " state       gathering" in raw
    assert raw.isascii() and "\x1b" not in raw


def test_server_text_is_shown_as_text_never_as_markup_or_terminal_codes() -> None:
    """A STUN server's reason "[/x]" crashed the live view (rich read it as markup), and
    escape sequences in it reached the terminal."""
    import io

    from rich.console import Console

    from ice_engine.liveview import LiveView, format_event

    out = io.StringIO()
    view = LiveView(Console(file=out, width=200, color_system=None), ["stun:[x]"], deadline=1.0)
    hostile = "Bad [/x] request [red] \x1b[31mRED\x1b]0;title\x07"
    view.add(IceCandidateErrorEvent("stun:[x]", "198.51.100.2", 5, 400, hostile, 0, 0.01))
    view.console.print(view._render(final=True))
    shown = out.getvalue()
    assert "Bad [/x] request [red]" in shown and "\x1b" not in shown
    plain = format_event(IceCandidateErrorEvent("stun:x", None, None, 400, hostile, 0, 0.0))
    assert "\x1b" not in plain and "\x07" not in plain and "\\x1b[31mRED" in plain


def test_a_view_ended_by_an_error_still_shows_what_was_gathered() -> None:
    """`--port-range P-P --generations 2`: the restart's bind failed before the first
    redraw, and the live view's last frame was an empty table (found by a review)."""
    import io

    from rich.console import Console

    from ice_engine.liveview import LiveView

    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    view = LiveView(console, [], deadline=1.0, clock=lambda: 5.0)  # no time passes
    events = []
    for n, address in enumerate(("198.51.100.1", "198.51.100.2")):
        parsed = Candidate("1", 1, "udp", 2130706431, address, 45002, "host")
        events.append(IceCandidateEvent(IceCandidate(parsed.to_sdp(), "0", 0, "ab", parsed), 0, n))
    with pytest.raises(OSError), view:
        view.add(events[0])  # drawn
        view.add(events[1])  # too soon after it to be drawn
        view.add(IceGatheringStateChangeEvent(GatheringState.COMPLETE, 0, 0.1))  # generation 0
        raise OSError("cannot bind")  # generation 1's sockets
    last_frame = out.getvalue().split("ICE candidates")[-1]
    assert "198.51.100.1" in last_frame and "198.51.100.2" in last_frame
    # It ended "✓ complete", under a run that had failed (found in a lab trial).
    assert "✗ failed: 2 candidates" in last_frame and "complete" not in last_frame


@pytest.mark.parametrize("width", [80, 94, 100, 120, 125, 130, 135, 140, 160])
def test_an_ipv4_address_is_never_folded_into_what_reads_as_another(width: int) -> None:
    """At 120-134 columns the full table folded `203.0.113.130:60442` into `203.0.113.13`
    and `0:60442` (found in a lab trial): columns give way instead, ICE-TCP rows too."""
    import io

    from rich.console import Console

    from ice_engine.liveview import LiveView

    lines = [
        "candidate:1 1 tcp 1518280447 203.0.113.130 37595 typ host tcptype passive",
        "candidate:2 1 udp 1694498815 198.51.100.1 60442 typ srflx raddr 203.0.113.130 rport 60442",
        "candidate:3 1 udp 41885439 198.51.100.10 50000 typ relay raddr 198.51.100.1 rport 60442",
    ]
    out = io.StringIO()
    view = LiveView(Console(file=out, width=width, color_system=None), [], deadline=1.0)
    for n, line in enumerate(lines):
        parsed = Candidate.parse(line)
        view.add(IceCandidateEvent(IceCandidate(line, "0", 0, "ab", parsed), 0, n / 1000))
    view.console.print(view._candidates(view.rows), crop=False)  # what would not fit shows
    shown = out.getvalue()
    assert "203.0.113.130:60442" in shown and "198.51.100.1:60442" in shown
    assert max(len(row) for row in shown.splitlines()) <= width


def test_a_closed_pipe_ends_quietly_and_ascii_output_does_not_fail() -> None:
    """`| head -1` gave "ice-engine: [Errno 32] Broken pipe" and status 1; an ASCII stdout
    failed on the first non-ASCII character with status 2."""
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    command = [sys.executable, "-m", "ice_engine", "gather", "--json", "--mids", "0,1,2,3"]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()
        process.stdout.close()  # as head does after its line
        assert process.wait(timeout=30) == 0
        assert process.stderr.read() == b""
    result = subprocess.run(
        [sys.executable, "-m", "ice_engine", "gather", "--plain", "--mids", "é"],
        cwd=ROOT, env=env, capture_output=True, timeout=30,
    )  # fmt: skip
    # A mid must be an SDP token: refused, and the message that quotes it is escaped.
    assert result.returncode == 2, result.stderr
    assert b"\\xe9" in result.stderr and b"Traceback" not in result.stderr


LAB_LINES = (  # what the lab gave a trial at 80 columns: an IPv6 host, and relays from it
    "candidate:1 1 udp 2122260223 2001:db8:a::2 45999 typ host",
    "candidate:2 1 udp 1686052607 198.51.100.1 33320 typ srflx raddr 203.0.113.2 rport 33320",
    "candidate:3 1 udp 25108735 198.51.100.10 55688 typ relay raddr 2001:db8:a::2 rport 33172",
)


def _viewed(width: int, lines: Sequence[str] = LAB_LINES, mid: str = "0") -> Any:
    import io

    from rich.console import Console

    from ice_engine.liveview import LiveView

    out = io.StringIO()
    view = LiveView(Console(file=out, width=width, color_system=None), ["stun:x"], deadline=1.0)
    for n, line in enumerate(lines):
        parsed = Candidate.parse(line)
        view.add(IceCandidateEvent(IceCandidate(line, mid, 0, "abcd", parsed), 0, n / 1000))
    return view


def _drawn(view: Any) -> tuple[str, str, list[str]]:
    """The candidate table as drawn now: its title, its header line, all its lines."""
    start = len(view.console.file.getvalue())
    view.console.print(view.table, crop=False)  # what would not fit shows
    lines = str(view.console.file.getvalue())[start:].splitlines()
    top = next(n for n, line in enumerate(lines) if line.startswith("┏"))
    return " ".join(line.strip() for line in lines[:top]), lines[top + 1], lines[top:]


@pytest.mark.parametrize("width", [41, 50, 62, 70, 80, 100, 120, 160])
def test_the_candidate_table_fits_and_never_cuts_an_address(width: int) -> None:
    """At 80 columns the table was 81 wide, and the terminal cut `[2001:db8:a::2]:33172`
    to `[2001:db8:a::2]:331`; at 70 `203.0.113.130` showed as `203.0.113.13` (found in a
    lab trial). Columns now give way, whole, until the table fits."""
    title, header, lines = _drawn(_viewed(width))
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    assert lines[0].endswith("┓") and lines[-1].endswith("┘")  # nothing cropped
    rows = [line for line in lines if line.startswith("│")]
    for line, (address, port) in zip(
        rows,
        [("2001:db8:a::2", 45999), ("198.51.100.1", 33320), ("198.51.100.10", 55688)],
        strict=True,
    ):
        cells = [cell.strip() for cell in line.split("│")]
        assert hostport(address, port) in cells or {address, str(port)} <= set(cells), line
        if "Related address" in header:
            assert ("[2001:db8:a::2]:33172" in line) == (address == "198.51.100.10"), line
    assert ("Related address" in header) == (width >= 65)
    assert ("no room for related addresses" in title) == (width < 65)
    assert ("Priority" in header) == (width >= 120)
    assert ("Foundation" in header) == (width >= 132)


@pytest.mark.parametrize("width", range(60, 132, 3))
def test_labels_beside_the_addresses_never_fold_a_related_address(width: int) -> None:
    """`(end-of-candidates)` and a restart's line in the Address column went unmeasured:
    the table came out too wide, and rich folded `203.0.113.130:54656` into
    `203.0.113.130:546` and `56` at 124 columns, and at many others (a re-trial)."""
    view = _viewed(width)
    end = IceCandidate("", "0", 0, "abcd", None)
    view.add(IceCandidateEvent(end, 0, 1.0006))
    view.restart(1, "Bs30+PrI")
    view.add(
        IceCandidateEvent(
            IceCandidate(LAB_LINES[2], "0", 0, "abcd", Candidate.parse(LAB_LINES[2])), 1, 0.004
        )
    )
    _title, header, lines = _drawn(view)
    assert max(map(len, lines)) <= width
    if "Related address" in header:
        rows = [line for line in lines if "198.51.100.10" in line]
        assert rows and all("[2001:db8:a::2]:33172" in line for line in rows), "\n".join(lines)


def test_an_error_line_keeps_its_url_as_given_never_an_emoji() -> None:
    """A line an error turned `stun:[2001:db8:b::10]` into `stun:[2001:db8🅱:10]`."""
    view = _viewed(50, lines=())
    url = "stun:[2001:db8:b::10]"
    view.add(IceCandidateErrorEvent(url, "2001:db8:a::2", 5, 701, "down :warning:", 0, 0.5))
    start = len(view.console.file.getvalue())
    view.console.print(view._errors(view.error_rows))
    shown = " ".join(view.console.file.getvalue()[start:].split())
    assert url in shown and "down :warning:" in shown


def test_errors_while_gathering_leave_room_for_the_spinner() -> None:
    """At 80x24, three errors of two or three lines each pushed the spinner and the
    servers' count off the screen (a re-trial)."""
    import io

    from rich.console import Console

    from ice_engine.liveview import LiveView

    console = Console(file=io.StringIO(), width=80, height=24, color_system=None)
    view = LiveView(console, ["turn:198.51.100.10?transport=tcp"], deadline=2.0)
    for line in LAB_LINES * 3:
        view.add(IceCandidateEvent(IceCandidate(line, "0", 0, "ab", Candidate.parse(line)), 0, 0))
    for n in range(3):
        text = "Unauthorized: the credentials were refused by the server, check them"
        view.add(
            IceCandidateErrorEvent(
                "turn:198.51.100.10?transport=tcp", "203.0.113.2", 40000 + n, 401, text, 0, 0.1
            )
        )
    console.print(view._render())
    lines = console.file.getvalue().splitlines()
    assert len(lines) <= 24 and "gathering…" in lines[-1], "\n".join(lines)


def test_columns_are_chosen_again_as_the_terminal_is_resized() -> None:
    """The layout was chosen once, at start: narrowed from 150 to 70 columns, the final
    table squeezed every address column to nothing (found in a lab trial)."""
    view = _viewed(150)
    assert "Foundation" in _drawn(view)[1]
    view.console.width = 70
    title, header, lines = _drawn(view)
    assert max(map(len, lines)) <= 70 and "Foundation" not in header
    assert title == "ICE candidates (mid 0, udp)"  # what every row shared, said once
    assert "198.51.100.10" in "".join(lines) and "[2001:db8:a::2]:33172" in "".join(lines)
    view.console.width = 150
    assert "Foundation" in _drawn(view)[1]


def test_a_column_whose_rows_differ_is_kept() -> None:
    """Mid and Protocol give way only while every row has the same: with two mids, the
    port joins its address first."""
    view = _viewed(66)
    view.add(
        IceCandidateEvent(
            IceCandidate(LAB_LINES[1], "1", 1, "abcd", Candidate.parse(LAB_LINES[1])), 0, 0.1
        )
    )
    header = _drawn(view)[1]
    assert "Mid" in header and "Proto" not in header and "Port" not in header


@pytest.mark.parametrize("width", [40, 55, 70])
def test_servers_too_many_for_a_narrow_table_get_a_line_each(width: int) -> None:
    """At 55 columns and under, the Servers table gave its URL column no width at all:
    which status was whose could not be told (found in a lab trial)."""
    urls = ["stun:198.51.100.10", "turn:turn.lab.test?transport=tcp", "stun:198.51.100.20"]
    view = _viewed(width)
    error = IceCandidateErrorEvent(urls[2], "203.0.113.2", 5, 701, "timed out", 0, 0.5)
    view.summary = Summary(urls)
    view.summary.add(error)
    start = len(view.console.file.getvalue())
    view.console.print(view._summary_table())
    shown = view.console.file.getvalue()[start:]
    assert max(map(len, shown.splitlines())) <= width
    joined = " ".join(shown.split())  # the lines, wrapped at spaces, read as one
    for url in urls:
        assert f"server {url}: " in joined
    assert "server stun:198.51.100.20: failed;" in joined and "701 timed out" in joined


@pytest.mark.parametrize("width", [50, 70, 80, 120])
def test_an_errors_local_address_is_never_folded(width: int) -> None:
    """At 70 columns the errors' table folded `203.0.113.2:50320` into `203.0.113.2:50`
    and `320`: it now keeps the address whole, or gives a line an error."""
    view = _viewed(width, lines=())
    for url, local in (("stun:198.51.100.20", "203.0.113.130"), ("turn:x", "2001:db8:a::2")):
        view.add(IceCandidateErrorEvent(url, local, 50320, 701, "timed out [x]", 0, 0.5))
    start = len(view.console.file.getvalue())
    view.console.print(view._errors(view.error_rows))
    shown = view.console.file.getvalue()[start:]
    assert max(map(len, shown.splitlines())) <= width
    assert "203.0.113.130:50320" in shown and "[2001:db8:a::2]:50320" in shown
    assert " ".join(shown.split()).count("timed out [x]") == 2  # text, never markup
    assert ("┃ Local address" in shown) == (width >= 74), shown


def test_the_final_tables_keep_whole_urls_within_80_columns() -> None:
    """At 80 columns every URL in the Servers table was cut to `turn:198.51.10…`, the
    servers could not be told apart, and the errors' text column was squeezed to nothing."""
    import io

    from rich.console import Console

    from ice_engine.liveview import LiveView

    out = io.StringIO()
    urls = ["stun:198.51.100.10:3478", "turn:198.51.100.10:3478?transport=tcp"]
    view = LiveView(Console(file=out, width=80, color_system=None), urls, deadline=1.0)
    local = "2001:db8:1234:5678:9abc:def0:1234:5678"  # the longest an address gets
    for url in urls:
        view.add(IceCandidateErrorEvent(url, local, 50000, 701, "unreachable", 0, 0.1))
    view.console.print(view._render(final=True))
    lines = out.getvalue().splitlines()
    ruled = [line for line in lines if line[:1] in "┏┃┡│└"]  # a table's: none cropped
    assert all(line[-1] in "┓┃┩│┘" for line in ruled), out.getvalue()
    assert "…" not in out.getvalue()
    # each URL whole: here a line a server, as the table would fold one mid-host
    servers = " ".join(out.getvalue().split("Servers")[1].split())
    assert all(f"server {url}: " in servers for url in urls), servers
    assert out.getvalue().split("Servers")[0].count("unreachable") == 2  # the errors' table


def test_a_removed_candidate_is_a_line_of_its_own_and_counted() -> None:
    summary = Summary(["stun:a.example"])
    host = _candidate("host", 0, 0)
    summary.add(IceCandidateEvent(host, 0, 0.001))
    removed = CandidateRemovedEvent(host, 0, 12.5)
    summary.add(removed)
    assert (
        format_event(removed)
        == f"  12500.0 ms  REMOVED host   mid 0 comp 1 udp 198.51.100.1:4000  prio {host.priority}  foundation 1"
    )
    assert summary.type_counts() == "1 host; 1 removed since"


def test_addresses_in_the_live_table_are_never_read_as_emoji_codes() -> None:
    """`stun:[2001:db8:b::10]` showed as `stun:[2001:db8🅱:10]`: rich replaced `:b:` with
    an emoji in every cell and heading, as it would `:cd:` in `2001:db8:0:cd::1`."""
    import io

    from ice_engine.cli import _live_console
    from ice_engine.liveview import LiveView

    class Terminal(io.StringIO):
        encoding = "utf-8"

        def isatty(self) -> bool:
            return True

    console = _live_console(Terminal())
    assert console is not None
    console.width = 200
    url = "stun:[2001:db8:b::10]"
    view = LiveView(console, [url], deadline=1.0)
    host = Candidate.parse("candidate:1 1 udp 2122260223 2001:db8:0:cd::1 5000 typ host")
    view.add(IceCandidateEvent(IceCandidate(host.to_sdp(), "0", 0, "abcd", host), 0, 0.001))
    view.add(IceCandidateErrorEvent(url, None, None, 701, "timed out at :b: and :ab:", 0, 0.5))
    console.print(view._render(final=True))
    shown = console.file.getvalue()
    assert url in shown and "2001:db8:0:cd::1" in shown and ":b: and :ab:" in shown
    assert not any(0x1F100 <= ord(c) <= 0x1FAFF for c in shown), shown
