"""The CLI under load and misuse: redraws that keep up, IPv6 addresses, closed streams,
signals and the messages a user sees when something is wrong."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest

from ice_engine import stun
from ice_engine.candidate import Candidate
from ice_engine.events import (
    GatheringState,
    IceCandidate,
    IceCandidateEvent,
    IceGatheringStateChangeEvent,
)
from ice_engine.stun import Attr, Method

from .test_driver_robustness import TurnStub
from .test_turn import PASSWORD, USER

ANSI = re.compile(r"\x1b[\[\]()][0-9;?]*[ -/]*[@-~]")


def _host(n: int, address: str = "198.51.100.1") -> IceCandidateEvent:
    parsed = Candidate("1", 1, "udp", 2130706431, address, 10000 + n, "host")
    return IceCandidateEvent(IceCandidate(parsed.to_sdp(), "0", 0, "abcd", parsed), 0, n / 1000)


def test_the_live_view_redraws_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """A redraw per event of the whole table blocked the event loop (8.7 s for a gathering
    that takes 0.3 s, TURN servers failed with 701): redraws are throttled, a frame draws no
    more rows than the screen has, and the last one shows every row."""
    from rich.console import Console
    from rich.live import Live

    from ice_engine.liveview import LiveView

    refreshes = 0
    refresh = Live.refresh

    def counted(self: Live) -> None:
        nonlocal refreshes
        refreshes += 1
        refresh(self)

    monkeypatch.setattr(Live, "refresh", counted)
    now = [0.0]

    def clock() -> float:
        now[0] += 0.001  # each look at the clock: 1 ms later, so 600 events take ~1.2 s
        return now[0]

    out = io.StringIO()
    console = Console(file=out, width=200, height=40, force_terminal=True, color_system=None)
    view = LiveView(console, [], deadline=1.0, clock=clock)
    with view:
        view.add(IceGatheringStateChangeEvent(GatheringState.GATHERING, 0, 0.0))
        for n in range(600):
            view.add(_host(n))
            view.tick()  # as the ticker task would
        frame = view._render().renderables[0]
        assert frame.row_count < console.height
        view.add(IceGatheringStateChangeEvent(GatheringState.COMPLETE, 0, 0.6))
        view.finish(0.6)
    assert refreshes <= now[0] / 0.075 + 3  # entering, leaving, and one per 75 ms between
    final = ANSI.sub("", out.getvalue()).split("✓ complete")[0].rsplit("ICE candidates", 1)[1]
    assert all(f" {10000 + n} " in final for n in range(600))


def test_ipv6_addresses_are_bracketed_in_human_output() -> None:
    """`udp ::1:40022` and `from fe80::1:55622` read as one address: `[::1]:40022`."""
    from rich.console import Console

    from ice_engine.events import IceCandidateErrorEvent
    from ice_engine.liveview import LiveView, format_event

    relay = Candidate.parse(
        "candidate:1 1 udp 16777215 ::1 40022 typ relay raddr 2001:db8::2 rport 52636 generation 0"
    )
    event = IceCandidateEvent(IceCandidate(relay.to_sdp(), "0", 0, "abcd", relay), 0, 0.001)
    line = format_event(event)
    assert " udp [::1]:40022 " in line and line.endswith("raddr [2001:db8::2]:52636")
    error = IceCandidateErrorEvent("turn:[::1]:23478", "fe80::1", 55622, 701, "x", 0, 0.5)
    assert "turn:[::1]:23478 from [fe80::1]:55622: x" in format_event(error)
    assert "udp 198.51.100.1:10000 " in format_event(_host(0))  # IPv4 as it was

    out = io.StringIO()
    view = LiveView(Console(file=out, width=200, color_system=None), [], deadline=1.0)
    view.add(event)
    view.add(error)
    view.console.print(view._render(final=True))
    assert "[2001:db8::2]:52636" in out.getvalue() and "[fe80::1]:55622" in out.getvalue()


def _summary_lines(
    urls: list[str], events: list[Any], *, interrupted: bool, waiting: list[str]
) -> str:
    from ice_engine.liveview import PlainView

    out = io.StringIO()
    view = PlainView(out, urls)
    for event in events:
        view.add(event)
    view.finish(0.5, interrupted=interrupted, waiting=waiting)
    return "\n".join(line for line in out.getvalue().splitlines() if line.startswith("server "))


def test_the_summary_tells_a_server_not_heard_from_yet_from_one_with_nothing_new() -> None:
    """Interrupted while a request was pending, the summary said `no new candidates`, which
    means the server answered; and a URL given twice had a second, false line."""
    gathering = IceGatheringStateChangeEvent(GatheringState.GATHERING, 0, 0.0)
    complete = IceGatheringStateChangeEvent(GatheringState.COMPLETE, 0, 0.001)
    live, silent = "stun:127.0.0.1:3478", "stun:127.0.0.1:3479"
    urls = [live, silent, live]
    early = _summary_lines(urls, [gathering], interrupted=True, waiting=[silent]).splitlines()
    assert early == [
        f"server {live}: no new candidates; first candidate -; 0 candidates; 0 errors",
        f"server {silent}: no answer yet; first candidate -; 0 candidates; 0 errors",
    ]
    done = _summary_lines(urls, [gathering, complete], interrupted=False, waiting=[])
    assert ": no answer yet;" not in done and len(done.splitlines()) == 2


def _run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    argv = [sys.executable, "-m", "ice_engine", *args]
    return subprocess.run(argv, text=True, timeout=30, check=False, **kwargs)


@pytest.mark.parametrize(
    "args",
    [
        ["gather"],
        ["gather", "--json"],
        ["nat", "--server", "stun:127.0.0.1:9", "--timeout", "0.1"],
        ["--help"],
    ],
)
def test_a_closed_stdout_is_one_line_on_stderr(args: list[str]) -> None:
    """`ice-engine gather >&-` gave a traceback ('NoneType' object has no attribute 'isatty')."""
    result = _run(*args, stdout=None, preexec_fn=lambda: os.close(1))
    assert result.returncode == 1
    assert result.stderr == "ice-engine: standard output is closed\n"


_INTERRUPTED_WHILE_LOADING = """
import builtins, os, signal, sys
import ice_engine.__main__ as entry  # what the `ice-engine` script imports
load = builtins.__import__
def interrupted(name, *args, **kwargs):
    if name == "asyncio":  # the CLI's modules are loading: Ctrl-C now
        os.kill(os.getpid(), signal.SIGINT)
    return load(name, *args, **kwargs)
builtins.__import__ = interrupted
sys.exit(entry.run())
"""


def test_ctrl_c_while_the_cli_loads_is_status_130_without_a_traceback() -> None:
    """Ctrl-C in the command's first ~0.1 s, while `import ice_engine` loaded asyncio, the
    driver and the core, printed a KeyboardInterrupt traceback."""
    argv = [sys.executable, "-c", _INTERRUPTED_WHILE_LOADING, "gather"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert (result.returncode, result.stderr, result.stdout) == (130, "", "")


_INTERRUPTED_WHILE_CLOSING = """
import asyncio.runners, os, signal, sys
import ice_engine.__main__ as entry
shut_down = asyncio.runners._cancel_all_tasks
def interrupted(loop):  # Ctrl-C as asyncio.run shuts its loop down, the command done
    os.kill(os.getpid(), signal.SIGINT)
    return shut_down(loop)
asyncio.runners._cancel_all_tasks = interrupted
sys.exit(entry.run())
"""


def test_ctrl_c_once_the_command_is_done_changes_nothing() -> None:
    """A Ctrl-C while asyncio.run shut the loop down raised KeyboardInterrupt inside it:
    "RuntimeError: Event loop stopped before Future completed", status 1."""
    argv = [sys.executable, "-c", _INTERRUPTED_WHILE_CLOSING, "gather", "--json"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout.splitlines()[-1])["candidate"] is None


def test_a_ctrl_c_ignored_when_it_started_stays_ignored() -> None:
    """`ice-engine gather --watch &` in a script starts with SIGINT ignored, to outlive a
    Ctrl-C of the script; taking SIGINT over for itself, the command stopped."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # never answers
        silent.bind(("127.0.0.1", 0))
        server = f"stun:127.0.0.1:{silent.getsockname()[1]}"
        process = subprocess.Popen(
            [sys.executable, "-m", "ice_engine", "gather", "--json", "--ice-server", server,
             "--timeout", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )  # fmt: skip
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["state"] == "gathering"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert (process.returncode, err) == (0, "")
    assert json.loads(out.splitlines()[-1])["candidate"] is None  # it ran to its end


def test_main_leaves_the_signal_handlers_as_it_found_them() -> None:
    """A command's own handlers (signals ignored while its loop closes) must not outlive
    it in the caller's process: a test suite calling main() would no longer stop on
    Ctrl-C."""
    from ice_engine.cli import main

    numbers = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = [signal.getsignal(number) for number in numbers]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["gather", "--json"]) == 0
    assert [signal.getsignal(number) for number in numbers] == before
    assert json.loads(out.getvalue().splitlines()[-1])["candidate"] is None


def test_the_package_loads_its_parts_when_used() -> None:
    """`import ice_engine` (and the codec, the command's entry point) load no asyncio;
    every exported name is there once asked for."""
    code = """
import sys
import ice_engine, ice_engine.stun, ice_engine.__main__
assert "asyncio" not in sys.modules and "ice_engine.driver" not in sys.modules, sorted(sys.modules)
from ice_engine import Gatherer
from ice_engine.driver import Gatherer as defined
assert Gatherer is defined and "asyncio" in sys.modules
homes = {name: home for home, names in ice_engine._HOMES.items() for name in names}
assert sorted(homes) == sorted(ice_engine.__all__)
for name, home in homes.items():
    assert getattr(ice_engine, name) is getattr(sys.modules[f"ice_engine.{home}"], name)
assert set(ice_engine.__all__) <= set(dir(ice_engine))
assert ice_engine.interfaces.local_addresses is not None  # modules too, as before
try:
    ice_engine.Gatherers
except AttributeError as error:
    assert str(error) == "module 'ice_engine' has no attribute 'Gatherers'", error
else:
    raise AssertionError("no AttributeError")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_mypy_still_tells_a_user_of_a_name_the_package_has_not(tmp_path: Path) -> None:
    """The package's module `__getattr__` made every unknown name `Any` to mypy:
    `from ice_engine import Gatherr` passed --strict."""
    from mypy import api

    user = tmp_path / "user.py"
    user.write_text(
        "from ice_engine import Gatherer, Gatherr\nimport ice_engine\nice_engine.Gatherers\n"
    )
    out, _, status = api.run(["--strict", "--no-incremental", str(user)])
    assert status == 1
    assert 'has no attribute "Gatherr"' in out and 'has no attribute "Gatherers"' in out, out
    assert out.count("error:") == 2, out  # Gatherer itself is known


def test_version(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    import ice_engine
    from ice_engine.cli import main

    result = _run("--version")
    assert (result.returncode, result.stderr) == (0, "")
    from ice_engine import gathering
    from ice_engine.compiled import is_compiled

    core = "compiled" if is_compiled(gathering) else "plain Python"
    assert re.fullmatch(rf"ice-engine \d+\.\d+\S* \(sans-I/O core: {core}\)\n", result.stdout)
    plain = _run("--version", env={**os.environ, "ICE_ENGINE_PURE_PYTHON": "1"})
    assert plain.stdout.endswith(" (sans-I/O core: plain Python)\n")

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)  # a source tree, not installed
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.startswith(f"ice-engine {ice_engine.__version__} (")


def test_a_socket_that_cannot_be_bound_is_named() -> None:
    """`nat --local-address 203.0.113.5` said only `[Errno 99] Cannot assign requested address`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:  # never answers either
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        server = ["nat", "--server", f"stun:127.0.0.1:{port}", "--timeout", "0.2"]
        foreign = _run(*server, "--local-address", "203.0.113.5")
        in_use = _run(*server, "--local-port", str(port))
    assert foreign.returncode == 1 and foreign.stderr == (
        "ice-engine: cannot bind 203.0.113.5:0: Cannot assign requested address\n"
    )
    assert in_use.returncode == 1 and in_use.stderr == (
        f"ice-engine: cannot bind port {port}: Address already in use\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["gather", "--components", "1" * 5000],
        ["gather", "--ice-server", "stun:127.0.0.1:" + "9" * 5000],
        ["nat", "--server", "stun:127.0.0.1", "--local-port", "9" * 5000],
        ["gather", "--mids", "x" * 5000 + "\n" + ",,"],
        ["gather", *["--bogus"] * 2000],
    ],
)
def test_echoed_input_is_cut_short(args: list[str]) -> None:
    """A 5000-digit port was echoed in full: a 5 kB error line."""
    result = _run(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("ice-engine: ") and result.stderr.count("\n") == 1
    assert len(result.stderr) < 300 and "…" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--ca-file", ""], "--ca-file needs a file name"),
        (["--components", "257"], "argument --components: 257 is more than 256"),
    ],
)
def test_values_that_would_be_ignored_or_refused_late_are_usage_errors(
    args: list[str], error: str
) -> None:
    result = _run("gather", "--plain", "--timeout", "0.2", *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"ice-engine: {error}\n"


@pytest.mark.parametrize(
    ("args", "warning"),
    [
        (["--relay-only"], "--relay-only without a turn: or turns: server gathers nothing\n"),
        (
            ["--relay-only", "--ice-server", "stun:127.0.0.1:9"],
            "--relay-only without a turn: or turns: server gathers nothing; "
            "stun: servers are not asked (stun:127.0.0.1:9)",
        ),
        (
            ["--ip-handling", "4"],
            "--ip-handling 4 without a turn: or turns: server gathers nothing",
        ),
        (
            ["--username", "alice"],
            "--username and --credential are for turn: and turns: servers only",
        ),
        (["--credential", "x", "--ice-server", "stun:127.0.0.1:9"], "--username and --credential"),
        (["--dual-stack-relays"], "--dual-stack-relays is for turn: and turns: servers only"),
    ],
)
def test_options_that_can_do_nothing_are_warned_about(args: list[str], warning: str) -> None:
    """They were silently accepted; they are not errors (a script may pass them always)."""
    result = _run("gather", "--plain", "--timeout", "0.2", *args)
    assert result.returncode == 0
    assert result.stderr.startswith(f"ice-engine: warning: {warning}")
    assert result.stderr.count("\n") == 1


def test_relay_only_says_its_stun_servers_are_not_asked_and_leaves_them_out() -> None:
    """Relay-only asks no stun: server (its srflx would be dropped); the summary listed
    one as "no new candidates", as if it had been asked."""
    stun, turn = "stun:127.0.0.1:9", "turn:127.0.0.1:9"
    credentials = ["--username", "alice", "--credential", "x"]
    servers = ["--ice-server", stun, "--ice-server", turn, *credentials]
    result = _run("gather", "--plain", "--timeout", "0.2", "--relay-only", *servers)
    assert result.returncode == 0
    warning = f"ice-engine: warning: --relay-only: stun: servers are not asked ({stun})\n"
    assert result.stderr == warning
    assert f"server {turn}:" in result.stdout and f"server {stun}" not in result.stdout


def test_a_ca_file_without_a_turns_server_is_warned_about() -> None:
    cafile = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    if not os.path.exists(cafile):
        pytest.skip("no CA bundle on this machine to pass as --ca-file")
    result = _run("gather", "--plain", "--timeout", "0.2", "--ca-file", cafile)
    assert result.returncode == 0
    assert result.stderr == "ice-engine: warning: --ca-file is for turns: servers only\n"


def test_no_warning_when_the_options_apply() -> None:
    result = _run("gather", "--plain", "--mids", "0,1")
    assert (result.returncode, result.stderr) == (0, "")


def test_every_json_event_names_its_generation() -> None:
    """`--json --generations N`: the state changes, nulls and errors had no generation."""
    from ice_engine.events import CandidateRemovedEvent, IceCandidateErrorEvent

    host = _host(0).candidate
    assert host is not None
    events = [
        IceGatheringStateChangeEvent(GatheringState.GATHERING, 3, 0.0),
        IceCandidateEvent(host, 3, 0.001),
        IceCandidateErrorEvent("stun:127.0.0.1", "198.51.100.1", 5, 701, "x", 3, 0.002),
        CandidateRemovedEvent(host, 3, 0.003),
        IceCandidateEvent(None, 3, 0.004),
    ]
    assert [event.to_json()["generation"] for event in events] == [3] * 5


def _silent_server() -> socket.socket:
    """A loopback UDP port that never answers: gathering waits on it until stopped."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    return silent


def test_a_terminal_that_closes_ends_the_live_view_with_129() -> None:
    """The terminal goes away (SIGHUP, then every write fails with EIO): the gatherer is
    closed as for SIGTERM and the run ends with 129, not a traceback or status 1 or 120."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    with _silent_server() as silent:
        server = f"stun:127.0.0.1:{silent.getsockname()[1]}"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ice_engine",
                "gather",
                "--ice-server",
                server,
                "--timeout",
                "30",
            ],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, "TERM": "xterm-256color"},
            preexec_fn=controlling_terminal,
        )
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 20
        while b"gathering" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 65536)
        time.sleep(0.3)
        os.close(master)  # the terminal closes: the kernel hangs up the session
        try:
            assert process.wait(timeout=10) == 128 + signal.SIGHUP
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


class _TurnThatGoesSilent(TurnStub):
    """Grants an allocation, then answers nothing more: a deallocation waits its bound."""

    def answer(self, data: bytes, source: tuple[str, int]) -> None:
        requests = self.server.requests
        if any(r.method == Method.ALLOCATE and r.get(Attr.USERNAME) for r in requests):
            requests.append(stun.parse(data))  # granted already: heard, never answered
            return
        super().answer(data, source)


@pytest.mark.parametrize("gap", [0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
def test_a_second_ctrl_c_while_closing_is_no_traceback(gap: float) -> None:
    """The second SIGINT cancels every task, the stdout reader's watch too, and that was
    taken for the reader having left: "unhandled exception during asyncio.run() shutdown"
    and a BrokenPipeError traceback. Right after the first (gap 0), asyncio.run's own
    handler raised KeyboardInterrupt inside the loop, and 4 runs in 10 hung for ever,
    without the summary; the second now ends the wait for the deallocation."""
    stub = _TurnThatGoesSilent()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "ice_engine", "gather", "--json", "--watch",
             "--ice-server", f"turn:127.0.0.1:{stub.port}", "--username", USER],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "ICE_ENGINE_CREDENTIAL": PASSWORD},
        )  # fmt: skip
        assert process.stdout is not None
        for line in process.stdout:  # until the relay: the allocation is held
            if b"typ relay" in line:
                break
        process.send_signal(signal.SIGINT)
        time.sleep(gap)  # the close waits for the deallocation (1 s at most)
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=20)
        finally:
            process.kill()
        assert process.returncode == 130
        assert b"Traceback" not in err and b"unhandled exception" not in err, err
        assert b'"candidate": null' not in out  # interrupted: no end of gathering
    finally:
        stub.close()


@pytest.mark.parametrize("args", [["--help"], ["gather", "--help"], ["--version"]])
def test_help_to_a_full_disk_is_status_1(args: list[str]) -> None:
    """argparse swallows a failed write of its help: status 0, and nothing written."""
    with open("/dev/full", "w") as full:
        result = _run(*args, stdout=full)
    assert result.returncode == 1
    assert result.stderr == "ice-engine: cannot write the output: No space left on device\n"


def test_an_explicit_empty_credential_is_not_replaced_by_the_environment() -> None:
    from ice_engine import cli

    args = cli.build_parser().parse_args(["gather", "--credential", ""])
    os.environ["ICE_ENGINE_CREDENTIAL"] = "from-env"
    try:
        assert cli._credential(args) == ""
        args = cli.build_parser().parse_args(["gather"])
        assert cli._credential(args) == "from-env"
    finally:
        del os.environ["ICE_ENGINE_CREDENTIAL"]


def test_a_closed_stderr_keeps_messages_out_of_the_json_on_stdout() -> None:
    """With fd 2 closed, Python's sys.stderr is None and print(file=None) wrote the
    warning, or the error, to stdout, among the JSON lines."""
    for args, status in (
        (["--json", "--username", "alice"], 0),
        (["--ice-server", "stun:bad host"], 2),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "ice_engine", "gather", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            pass_fds=(),
            preexec_fn=lambda: os.close(2),
            timeout=30,
        )  # fmt: skip
        assert result.returncode == status
        assert b"ice-engine:" not in result.stdout
        for line in result.stdout.splitlines():
            json.loads(line)


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ("{", "--config standard input: not JSON (Expecting property name"),
        ("[]", "--config standard input: not an RTCConfiguration with an iceServers list"),
        ('{"iceServers": {}}', "not an RTCConfiguration with an iceServers list"),
        ('{"iceServers": [{"url": "stun:x"}]}', "an RTCIceServer needs urls, and has only ['url']"),
        ('{"iceServers": [{"urls": 5}]}', "urls must be a URL string or a list of them"),
        ('{"iceTransportPolicy": "none"}', "iceTransportPolicy must be 'all' or 'relay'"),
        # These two named no file (found in a lab trial): the flags' credentials are not
        # the config's, and its URLs are checked as it is read.
        (
            '{"iceServers": [{"urls": "turn:198.51.100.10"}]}',
            "--config standard input: 'turn:198.51.100.10' needs a non-empty username",
        ),
        ('{"iceServers": [{"urls": "http://x"}]}', "--config standard input: unknown scheme"),
    ],
)
def test_a_config_that_is_no_rtc_configuration_is_one_line_and_status_2(
    config: str, error: str
) -> None:
    flags = ["--username", "alice", "--credential", "wonderland"]
    result = _run("gather", "--plain", "--config", "-", *flags, input=config)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("ice-engine: ") and result.stderr.count("\n") == 1
    assert error in result.stderr


def test_a_config_file_that_cannot_be_read_is_one_line_and_status_2(tmp_path: Path) -> None:
    missing = tmp_path / "rtc.json"
    result = _run("gather", "--config", str(missing))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"ice-engine: --config {missing}: No such file or directory\n"


@pytest.mark.parametrize("command", ["gather", "relay-check"])
def test_a_config_nested_too_deeply_huge_or_on_a_closed_stdin_is_one_line(
    command: str, tmp_path: Path
) -> None:
    """Found by an adversarial review: a deeply nested config raised RecursionError from
    `json.loads`, /dev/zero ate the memory, and `--config -` with stdin closed raised
    AttributeError, each a traceback."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    result = _run(command, "--config", str(deep))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"ice-engine: --config {deep}: not JSON (nested too deeply)\n"

    result = _run(command, "--config", "/dev/zero")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "ice-engine: --config /dev/zero: larger than 1 MiB\n"

    result = _run(command, "--config", "-", stdin=None, preexec_fn=lambda: os.close(0))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "ice-engine: --config standard input: closed\n"


def test_a_config_on_stdin_is_utf8_whatever_the_locale_and_may_start_with_a_bom() -> None:
    """Standard input was decoded in the locale's encoding (a file as UTF-8), and a BOM
    was "not JSON" (found by a review)."""
    config = '\ufeff{"iceServers": [{"urls": "turn:\u00e9"}]}'.encode()
    env = {**os.environ, "PYTHONIOENCODING": "latin-1"}
    result = subprocess.run(
        [sys.executable, "-m", "ice_engine", "gather", "--config", "-"],
        input=config, capture_output=True, timeout=30, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.endswith(b"in ICE server URL 'turn:\xe9'\n")  # one character


def test_a_browser_config_gives_its_servers_credentials_and_policy(tmp_path: Path) -> None:
    """The iceServers a signalling server sends browsers, as they are: the credentials
    stay out of the process list, and iceTransportPolicy "relay" asks no stun: server."""
    config = tmp_path / "rtc.json"
    config.write_text(json.dumps({
        "iceServers": [
            {"urls": ["stun:127.0.0.1:9", "turn:127.0.0.1:9"], "username": "u", "credential": "c"},
        ],
        "iceTransportPolicy": "relay",
        "bundlePolicy": "max-bundle",
    }))  # fmt: skip
    result = _run("gather", "--plain", "--timeout", "0.2", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "ice-engine: warning: --config's iceTransportPolicy relay: stun: servers are not "
        "asked (stun:127.0.0.1:9)\n"
    )
    assert "server turn:127.0.0.1:9: " in result.stdout
    assert "server stun:127.0.0.1:9" not in result.stdout
    checked = _run("relay-check", "--timeout", "0.2", "--json", "--config", str(config))
    assert checked.returncode == 1, checked.stderr  # nothing answers there
    report = json.loads(checked.stdout)
    assert {error["url"] for error in report["errors"]} == {"turn:127.0.0.1:9"}
    assert report["checks"] == [] and report["ok"] is False


@pytest.mark.parametrize(
    ("options", "warning"),
    [
        (["--relay-only"], "--tcp: --relay-only shows no host candidate, so no ICE-TCP one"),
        (["--ip-handling", "3"], "--tcp: --ip-handling 3 shows no host candidate"),
    ],
)
def test_tcp_where_no_host_candidate_may_show_is_warned_about(
    options: list[str], warning: str
) -> None:
    result = _run("gather", "--plain", "--tcp", *options)
    assert result.returncode == 0
    assert f"ice-engine: warning: {warning}" in result.stderr
    assert " tcp " not in result.stdout
