"""`ice-engine`: gather candidates from a terminal, check TURN relays, and run the lab.

On a terminal `ice-engine gather` shows a live table (the Trickle ICE page of the WebRTC
samples, in a terminal); piped, it prints plain lines; `--json` prints one JSON object per
event and line. Bad input gets one line on stderr and exit status 2; a failure of the machine (no
permission, no such interface) gets one line and status 1. Never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import io
import json
import math
import os
import re
import select
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from .config import IceServer, servers_from_config
from .driver import Gatherer
from .events import Event, IceCandidateErrorEvent
from .liveview import LiveView, PlainView, printable
from .relaycheck import RelayCheck, RelayCheckReport, relay_checks
from .transaction import Timing
from .urls import hostport

if TYPE_CHECKING:
    from _typeshed import SupportsWrite
    from rich.console import Console

__all__ = ["main"]

#: What ends a run, as Ctrl-C does: Ctrl-C, kill (or timeout(1), a service manager), and a
#: terminal closing. (Not on Windows, which has no SIGHUP and whose loops take no handler.)
_ENDING = () if sys.platform == "win32" else (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

EXAMPLES = """\
examples:
  ice-engine gather                                  host candidates only, live table
  ice-engine gather --ice-server stun:stun.example.org --json
  ice-engine gather --ice-server stun:stun.example.org | tee gather.log   plain lines
  ICE_ENGINE_CREDENTIAL=secret ice-engine gather \\
      --ice-server turn:turn.example.org --username alice
  ice-engine gather --ice-server 'turn:turn.example.org?transport=tcp' \\
                    --username alice --credential secret --relay-only
  ice-engine gather --mids 0,1 --components 2 --generations 2
  ice-engine gather --watch ...                      until Ctrl-C: new addresses, lost relays
  ice-engine nat --server stun:stun.example.org      how the NAT maps and filters (RFC 5780)
  ICE_ENGINE_CREDENTIAL=secret ice-engine relay-check \\
      --ice-server turn:turn.example.org --username alice
                                                     a datagram each way through each relay
  ice-engine demo                                    the lab's NAT, STUN and TURN, live (root)
  ice-engine lab up --delay-ms 25                    the test network (root)
"""


class UsageError(Exception):
    """Bad input from the command line: one line on stderr, exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _components(text: str) -> int:
    value = _positive_int(text)
    if value > 256:  # RFC 8445 §5.1.2.1: the priority's component field
        raise argparse.ArgumentTypeError(f"{value} is more than 256")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _port_range(text: str) -> tuple[int, int]:
    low, dash, high = text.partition("-")
    try:
        ports = (int(low), int(high if dash else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW-HIGH, two port numbers") from None
    if not (1 <= ports[0] <= ports[1] <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r} is not a range of ports within 1-65535")
    return ports


def _mids(text: str) -> list[str]:
    mids = [mid.strip() for mid in text.split(",")]
    if any(not mid for mid in mids):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty mid")
    if len(set(mids)) != len(mids):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a mid")
    return mids


class _Version(argparse.Action):
    """`--version`, looked up only when asked: reading package metadata takes ~50 ms."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        from . import gathering
        from .compiled import is_compiled

        try:
            number = version("ice-engine")
        except PackageNotFoundError:  # run from a source tree
            from . import __version__ as number
        core = "compiled" if is_compiled(gathering) else "plain Python"
        print(f"ice-engine {number} (sans-I/O core: {core})")
        parser.exit()


class UsageParser(argparse.ArgumentParser):
    """Its errors raise UsageError, told as one line and exit 2, not argparse's usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        """As argparse's, but a failed write is an error (status 1), not swallowed: `--help
        >/dev/full` ended with status 0 and nothing written."""
        (file or sys.stdout).write(self.format_help())


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="ice-engine",
        description="Gather ICE candidates (host, srflx, relay) and stream them as they come.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", parser_class=UsageParser)
    gather = commands.add_parser(
        "gather",
        help="gather candidates and print them as they arrive",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_server_options(gather, "stun:, turn: or turns:")
    gather.add_argument("--mids", type=_mids, default=["0"], help="transports, e.g. 0,1")
    gather.add_argument(
        "--components", type=_components, default=1, help="components per transport (1-256)"
    )
    gather.add_argument(
        "--generations",
        type=_positive_int,
        default=1,
        help="gather N generations, with an ICE restart after each completes",
    )
    gather.add_argument(
        "--watch",
        action="store_true",
        help="keep gathering until Ctrl-C (continual gathering): addresses that come or go, "
        "and relays whose allocation is lost, show as they happen; allocations are refreshed",
    )
    gather.add_argument("--relay-only", action="store_true", help='iceTransportPolicy "relay"')
    gather.add_argument(
        "--mdns", action="store_true", help="hide host addresses behind mDNS .local names"
    )
    gather.add_argument(
        "--ip-handling",
        type=int,
        choices=(1, 2, 3, 4),
        default=1,
        help="RFC 8828 mode: 1 all addresses, 2 default route and its local address, "
        "3 default route without local addresses, 4 relay only (default %(default)s)",
    )
    gather.add_argument(
        "--timeout",
        type=_seconds,
        default=Timing().server_deadline,
        help="seconds a server may take before it counts as unreachable (default %(default)s)",
    )
    gather.add_argument(
        "--link-local", action="store_true", help="include IPv6 link-local addresses"
    )
    gather.add_argument("--tcp", action="store_true", help="ICE-TCP host candidates too (RFC 6544)")
    gather.add_argument(
        "--port-range",
        type=_port_range,
        metavar="LOW-HIGH",
        help="host sockets take free ports in this range (a firewall's pinhole, say)",
    )
    view = gather.add_mutually_exclusive_group()
    view.add_argument(
        "--json", action="store_true", help="one JSON object per event and line (for programs)"
    )
    view.add_argument(
        "--plain",
        action="store_true",
        help="plain text lines even on a terminal (the default when stdout is not one)",
    )
    nat = commands.add_parser(
        "nat",
        # --server is checked in _nat, after parsing: argparse reports a missing required
        # option before an unknown one, so `nat --bogus` never named --bogus.
        usage="%(prog)s [-h] --server URL [--local-address IP]\n"
        "                      [--local-port PORT] [--timeout S] [--json]",
        help="classify the NAT's mapping and filtering with an RFC 5780 STUN server",
        description="Run the RFC 5780 tests against a STUN server with a second address "
        "(OTHER-ADDRESS) and print how the NAT on the way maps and filters UDP.",
    )
    nat.add_argument(
        "--server", metavar="URL", help="stun:HOST[:PORT] of an RFC 5780 server (required)"
    )
    nat.add_argument(
        "--local-address", metavar="IP", help="probe from this local IP (default: the route's)"
    )
    nat.add_argument(
        "--local-port",
        type=int,
        default=0,
        metavar="PORT",
        help="probe from this local UDP port (default: any free one)",
    )
    nat.add_argument(
        "--timeout",
        type=_seconds,
        default=3.0,
        metavar="S",
        help="seconds to wait for each phase of the tests, and for the first test at each "
        "address of the server (default %(default)s)",
    )
    nat.add_argument("--json", action="store_true", help="print the result as one JSON object")
    check = commands.add_parser(
        "relay-check",
        help="gather relay candidates and send a datagram each way through each",
        description="Gather relay candidates from the TURN servers, and check that each "
        "relays: a datagram from a host socket of ours to the relay address must reach us "
        "through the allocation, and one sent back through it must arrive. Each line is "
        "printed as its check ends. Exit status 0 when every relay passes and no server "
        "failed, 1 otherwise.",
    )
    _add_server_options(check, "turn: or turns:")
    check.add_argument(
        "--timeout",
        type=_seconds,
        default=Timing().server_deadline,
        help="seconds for each server to answer, and for each direction of each check "
        "(default %(default)s)",
    )
    check.add_argument("--json", action="store_true", help="print the result as one JSON object")
    demo = commands.add_parser(
        "demo",
        help="bring up the network lab and gather host, srflx and relay candidates in it (root)",
    )
    demo.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay to the servers")
    demo_output = demo.add_mutually_exclusive_group()
    demo_output.add_argument("--json", action="store_true", help="one JSON object per event")
    demo_output.add_argument("--plain", action="store_true", help="plain lines, no live view")
    lab = commands.add_parser("lab", help="bring the network lab up or down (needs root)")
    lab.add_argument("lab_args", nargs=argparse.REMAINDER, help="up [--delay-ms N] | down | status")
    return parser


def _add_server_options(command: argparse.ArgumentParser, schemes: str) -> None:
    """The servers and what TURN needs: `gather`'s and `relay-check`'s."""
    command.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help=f"{schemes} URL (repeatable)",
    )
    command.add_argument(
        "--config",
        metavar="FILE",
        help="an RTCConfiguration as JSON ('-': standard input): its iceServers, with their "
        + ("credentials, and its iceTransportPolicy" if "stun" in schemes else "credentials"),
    )
    command.add_argument("--username", help="username for turn:/turns: servers")
    command.add_argument(
        "--credential",
        help="credential for turn:/turns: servers (or set ICE_ENGINE_CREDENTIAL, "
        "which stays out of the process list)",
    )
    command.add_argument(
        "--ca-file", metavar="PEM", help="trust these CA certificates for turns: (default: system)"
    )
    command.add_argument(
        "--dual-stack-relays",
        action="store_true",
        help="ask each TURN allocation from IPv4 for an IPv6 relay too (RFC 8656)",
    )


_MIN_LIVE_WIDTH = 40  # terminal columns: fewer get plain lines


def _live_console(out: TextIO) -> Console | None:
    """A rich console when `out` is a terminal that can take a live view, else None."""
    encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
    if not out.isatty() or os.environ.get("TERM") == "dumb" or encoding != "utf8":
        return None  # the table's lines and spinner need UTF-8: plain lines then
    if _locale_codeset() not in ("utf8", None):
        return None  # LC_ALL=C: Python writes UTF-8 (its UTF-8 mode), the terminal reads ASCII
    try:
        from rich.console import Console
    except ImportError:  # pragma: no cover - rich is a dependency
        return None
    console = Console(file=out, highlight=False, emoji=False)
    # COLUMNS=0 drew nothing at all, and a table a few columns wide is no better
    return console if console.width >= _MIN_LIVE_WIDTH else None


def _locale_codeset() -> str | None:
    """The character set of the locale (LC_CTYPE), as `utf8`; None where unknown (Windows)."""
    import locale

    try:
        return locale.nl_langinfo(locale.CODESET).lower().replace("-", "")
    except AttributeError:
        return None


async def _tick(view: LiveView | PlainView) -> None:
    while True:
        await asyncio.sleep(0.08)
        view.tick()


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """--ca-file's context; None for the system's CAs."""
    if args.ca_file is None:
        return None
    if not args.ca_file:
        raise UsageError("--ca-file needs a file name")
    try:
        return ssl.create_default_context(cafile=args.ca_file)
    except (OSError, ssl.SSLError) as error:
        raise UsageError(f"--ca-file {args.ca_file}: {error}") from None


async def _gather(args: argparse.Namespace, out: TextIO) -> int:
    servers = [IceServer(url, args.username, _credential(args)) for url in args.ice_server]
    servers = args.config_servers + servers
    context = _ssl_context(args)
    if args.watch and args.generations > 1:
        raise UsageError("--watch gathers one generation until stopped: drop --generations")
    gatherer = Gatherer(
        servers,
        mids=args.mids,
        components=args.components,
        ice_transport_policy="relay" if args.relay_only else "all",
        timing=Timing(server_deadline=args.timeout),
        link_local=args.link_local,
        ssl_context=context,
        ip_handling=args.ip_handling,
        mdns=args.mdns,
        continual=args.watch,
        tcp_candidates=args.tcp,
        port_range=args.port_range,
        dual_stack_relays=args.dual_stack_relays,
    )
    _warn_about_idle_options(args)
    return await _stream(args, out, gatherer)


_MAX_CONFIG = 2**20  # bytes: a configuration takes a few hundred


def _load_config(args: argparse.Namespace) -> None:
    """--config: the RTCConfiguration's servers into `args.config_servers`, and its
    iceTransportPolicy "relay" as --relay-only. Anything wrong is bad input."""
    args.config_servers = []
    args.relay_option = "--relay-only"  # what made it relay-only, for the warnings
    if args.config is None:
        return
    where = "standard input" if args.config == "-" else args.config
    try:
        if args.config == "-":
            if sys.stdin is None:  # started with it closed (`<&-`)
                raise UsageError("--config standard input: closed")
            data = sys.stdin.buffer.read(_MAX_CONFIG + 1)
        else:
            with open(args.config, "rb") as file:
                data = file.read(_MAX_CONFIG + 1)  # /dev/zero must not eat the memory
        if len(data) > _MAX_CONFIG:
            raise UsageError(f"--config {where}: larger than {_MAX_CONFIG // 2**20} MiB")
        text = data.decode("utf-8-sig")  # JSON is UTF-8 whatever the locale; a BOM forgiven
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--config {where}: {getattr(error, 'strerror', None) or error}") from None
    try:
        config = json.loads(text)
    except ValueError as error:
        raise UsageError(f"--config {where}: not JSON ({error})") from None
    except RecursionError:
        raise UsageError(f"--config {where}: not JSON (nested too deeply)") from None
    if not isinstance(config, dict) or not isinstance(config.get("iceServers", []), list):
        raise UsageError(f"--config {where}: not an RTCConfiguration with an iceServers list")
    try:
        args.config_servers = [IceServer.from_json(entry) for entry in config.get("iceServers", [])]
        servers_from_config(args.config_servers)  # now: their errors then name the file
    except (TypeError, ValueError) as error:
        raise UsageError(f"--config {where}: {error}") from None
    policy = config.get("iceTransportPolicy", "all")
    if policy not in ("all", "relay"):
        raise UsageError(f"--config {where}: iceTransportPolicy must be 'all' or 'relay'")
    if policy == "relay" and hasattr(args, "relay_only") and not args.relay_only:
        args.relay_only = True
        args.relay_option = "--config's iceTransportPolicy relay"


def _urls(args: argparse.Namespace) -> list[str]:
    """Every server URL: --config's, then --ice-server's."""
    config: list[IceServer] = args.config_servers
    flags: list[str] = args.ice_server
    return [url for server in config for url in server.url_list] + flags


def _credential(args: argparse.Namespace) -> str | None:
    """--credential, else ICE_ENGINE_CREDENTIAL (out of `ps`); an explicit '' stands."""
    credential: str | None = args.credential
    return os.environ.get("ICE_ENGINE_CREDENTIAL") if credential is None else credential


def _warn_about_idle_options(args: argparse.Namespace) -> None:
    """Options that cannot act (without a TURN server, or with host candidates hidden):
    likely a slip, so a line on stderr, but not an error (a script may pass them
    whatever its servers)."""
    urls = _urls(args)
    if args.ca_file and not any(url.lower().startswith("turns:") for url in urls):
        _warn("--ca-file is for turns: servers only")
    relay_only = _relay_only(args)
    if args.tcp and (relay_only or args.ip_handling == 3):
        hiding = relay_only or "--ip-handling 3"
        _warn(f"--tcp: {hiding} shows no host candidate, so no ICE-TCP one either")
    if any(_is_turn(url) for url in urls):
        shown = _servers_shown(args)
        if idle := [url for url in urls if url not in shown]:  # only where relay-only
            _warn(f"{relay_only}: stun: servers are not asked ({', '.join(idle)})")
        return
    if relay_only:
        servers = ", ".join(urls)  # stun: ones only, here
        unasked = f"; stun: servers are not asked ({servers})" if servers else ""
        _warn(f"{relay_only} without a turn: or turns: server gathers nothing{unasked}")
    if args.username is not None or args.credential is not None:
        _warn("--username and --credential are for turn: and turns: servers only")
    if args.dual_stack_relays:
        _warn("--dual-stack-relays is for turn: and turns: servers only")


def _is_turn(url: str) -> bool:
    return url.lower().startswith(("turn:", "turns:"))


def _relay_only(args: argparse.Namespace) -> str | None:
    """What makes the run relay-only, named as the warnings name it (`--relay-only`,
    the config's policy, `--ip-handling 4`); None if nothing does."""
    if args.relay_only:
        return str(args.relay_option)
    return "--ip-handling 4" if args.ip_handling == 4 else None


def _servers_shown(args: argparse.Namespace) -> list[str]:
    """The servers the views list: those asked (relay-only asks no stun: server)."""
    if _relay_only(args):
        return [url for url in _urls(args) if _is_turn(url)]
    return _urls(args)


def _warn(text: str) -> None:
    print(f"ice-engine: warning: {text}", file=sys.stderr)


def _watch_the_reader(out: TextIO) -> asyncio.Task[None] | None:
    """A reader that left (`| head -3`) would only be noticed at the next line, which may
    be a dead server's deadline away, or hours with `--watch`: poll for it, and end the
    run as a closed pipe does."""
    main = asyncio.current_task()
    try:
        fd = out.fileno()
    except (OSError, ValueError):  # not a file (a test's StringIO)
        return None
    if main is None or not hasattr(select, "poll"):
        return None
    poller = select.poll()
    poller.register(fd, 0)  # reports only POLLERR and POLLHUP: the reader is gone

    async def watch() -> None:
        while not poller.poll(0):
            await asyncio.sleep(0.25)
        main.cancel()

    return asyncio.create_task(watch())


async def _stream(args: argparse.Namespace, out: TextIO, gatherer: Gatherer) -> int:
    started = time.monotonic()
    if args.json:
        async with gatherer:
            for generation in range(args.generations):
                if generation:
                    await gatherer.restart()
                async for event in _gathered(gatherer):
                    out.write(json.dumps(event.to_json()) + "\n")
                    out.flush()
        return 0
    console = None if args.plain else _live_console(out)
    view: LiveView | PlainView = (
        PlainView(out, _servers_shown(args))
        if console is None
        else LiveView(console, _servers_shown(args), deadline=args.timeout, watching=args.watch)
    )
    with view, _stoppable(view):
        ticker = asyncio.create_task(_tick(view))
        waiting: list[str] = []  # the servers still waited on when interrupted
        try:
            async with gatherer:
                try:
                    for generation in range(args.generations):
                        if generation:
                            await gatherer.restart()
                            view.restart(gatherer.generation, gatherer.credentials.ufrag)
                        async for event in _gathered(gatherer):
                            view.add(event)
                except asyncio.CancelledError:
                    waiting = gatherer.waiting_for  # before closing forgets them
                    raise
        except asyncio.CancelledError:  # Ctrl-C, SIGTERM or SIGHUP: the gatherer is closed by now
            view.finish(time.monotonic() - started, interrupted=True, waiting=waiting)
            raise
        finally:
            ticker.cancel()
        view.finish(time.monotonic() - started)
    return 0


@contextlib.contextmanager
def _stoppable(view: LiveView | PlainView) -> Iterator[None]:
    """Ctrl-Z (SIGTSTP) on the live view: the cursor shown again for the shell's prompt
    before the process stops, and at `fg` a new frame drawn, the cursor hidden again."""
    stop = getattr(signal, "SIGTSTP", None)
    if not isinstance(view, LiveView) or stop is None or signal.getsignal(stop) is signal.SIG_IGN:
        yield
        return
    loop = asyncio.get_running_loop()

    def stopped() -> None:
        view.suspend()
        loop.remove_signal_handler(stop)  # the default again: stop the process
        os.kill(os.getpid(), stop)  # here it stops, until continued
        loop.add_signal_handler(stop, stopped)
        view.resume()

    loop.add_signal_handler(stop, stopped)
    try:
        yield
    finally:
        loop.remove_signal_handler(stop)


async def _gathered(gatherer: Gatherer) -> AsyncIterator[Event]:
    """A generation's events, with a warning on stderr when `--mdns` has had to leave the
    host candidates out (the library says so only when asked)."""
    told = gatherer.mdns_unavailable is not None  # by an earlier generation
    async for event in gatherer.gather():
        if not told and gatherer.mdns_unavailable is not None:
            told = True
            _warn(f"--mdns: host candidates left out: {gatherer.mdns_unavailable}")
        yield event


async def _as_main_task(
    command: Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]],
    args: argparse.Namespace,
    out: TextIO,
    stopped_by: list[int],
) -> int:
    """Run a command as the process's main task, to be ended by a signal or a closed pipe.

    Ctrl-C (SIGINT), SIGTERM (kill, timeout(1), a service manager) and SIGHUP (the terminal
    closed) cancel it: the gatherer closes, releasing its TURN allocations, and the summary
    of what was gathered is printed, rather than the process dying with allocations held
    on the servers. The signal goes in `stopped_by` for the exit status (128 + it). A
    second one cancels again what is still waited for: the servers' confirmations.
    (asyncio.run's own second Ctrl-C raised KeyboardInterrupt inside the loop, which could
    leave the task waiting for ever.) A signal ignored when the process started (`cmd &`
    in a script: SIGINT; `nohup`: SIGHUP) stays ignored. A reader that left (`| head -3`)
    ends it too.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def stop(number: int) -> None:
        stopped_by.append(number)
        task.cancel()

    handled: list[signal.Signals] = []
    for number in _ENDING:
        if signal.getsignal(number) is signal.SIG_IGN:
            continue
        with contextlib.suppress(RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(number, stop, number)
            handled.append(number)
    reader = _watch_the_reader(out)
    try:
        return await command(args, out)
    except asyncio.CancelledError:
        if reader is not None and reader.done() and not reader.cancelled():
            raise BrokenPipeError from None  # ends quietly with status 0, as `| head` expects
        raise
    finally:
        if reader is not None:
            reader.cancel()
        # Removed before asyncio.run closes the loop's wake-up pipe, to which a signal
        # would then be written; and ignored meanwhile: a KeyboardInterrupt raised in the
        # loop's shutdown broke it. `main` puts the handlers back as they were. Held back
        # meanwhile: the loop puts the defaults back first.
        if handled:
            signal.pthread_sigmask(signal.SIG_BLOCK, handled)
            try:
                for number in handled:
                    loop.remove_signal_handler(number)
                    signal.signal(number, signal.SIG_IGN)
            finally:  # one held back meanwhile is then dropped: it is ignored
                signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)


async def _nat(args: argparse.Namespace, out: TextIO) -> int:
    from .natcheck import NatCheckError, discover_nat

    if args.server is None:  # not required=True: see build_parser
        raise UsageError("the following arguments are required: --server")
    try:
        result = await discover_nat(
            args.server,
            local_address=args.local_address,
            local_port=args.local_port,
            timeout=args.timeout,
        )
    except OSError as error:  # its socket's: binding it, or finding the route's address
        what = (
            f"cannot bind {hostport(args.local_address, args.local_port)}"
            if args.local_address
            else f"cannot bind port {args.local_port}"
            if args.local_port
            else f"cannot reach {args.server}"
        )
        raise OSError(f"{what}: {error.strerror or error}") from None
    except NatCheckError as error:  # the server's: no name, no answer, not one to classify
        return _fail(error, 1)
    if args.json:
        out.write(json.dumps(result.to_json()) + "\n")
    else:
        out.write(result.to_text() + "\n")
    return 0


async def _relay_check(args: argparse.Namespace, out: TextIO) -> int:
    """Each relay's line as its check ends (errors as they come), then the count, also
    when interrupted (of the checks that ended). `--json`: one object at the end."""
    if others := [url for url in args.ice_server if not _is_turn(url)]:
        raise UsageError(f"relay-check checks turn: and turns: servers, not {others[0]}")
    # A configuration mixes STUN and TURN: its TURN URLs only.
    turn = [([u for u in s.url_list if _is_turn(u)], s) for s in args.config_servers]
    servers = [IceServer(urls, s.username, s.credential) for urls, s in turn if urls]
    servers += [IceServer(url, args.username, _credential(args)) for url in args.ice_server]
    if not servers:
        raise UsageError("relay-check needs a turn: or turns: server (--ice-server URL)")
    context = _ssl_context(args)
    checks: list[RelayCheck] = []
    errors: list[IceCandidateErrorEvent] = []
    results = relay_checks(
        servers, timeout=args.timeout, ssl_context=context, dual_stack_relays=args.dual_stack_relays
    )
    try:
        async with contextlib.aclosing(results):  # released here, even if a write fails
            async for result in results:
                if isinstance(result, RelayCheck):
                    checks.append(result)
                else:
                    errors.append(result)
                if not args.json:
                    out.write(_relay_check_line(result) + "\n")
                    out.flush()
    except asyncio.CancelledError:  # Ctrl-C, SIGTERM: the allocations are released
        _relay_check_summary(args, out, checks, errors, interrupted=True)
        raise
    # Not after any other exception: its one line on stderr is the whole story.
    return 0 if _relay_check_summary(args, out, checks, errors, interrupted=False) else 1


def _relay_check_summary(
    args: argparse.Namespace,
    out: TextIO,
    checks: list[RelayCheck],
    errors: list[IceCandidateErrorEvent],
    *,
    interrupted: bool,
) -> bool:
    """Write the count (or, with --json, the one object); whether all went well."""
    ok = RelayCheckReport(checks, errors).ok and not interrupted
    if args.json:
        report = {
            "ok": ok,
            "interrupted": interrupted,
            "checks": [check.to_json() for check in checks],
            "errors": [error.to_json() for error in errors],
        }
        out.write(json.dumps(report) + "\n")
        return ok
    passed = sum(check.ok for check in checks)
    total = f"{len(checks)} relay{'s' * (len(checks) != 1)} checked"
    summary = f"{total}: {passed} ok, {len(checks) - passed} failed"
    if errors:
        summary += f"; {len(errors)} server error{'s' * (len(errors) != 1)}"
    if interrupted:
        summary = f"interrupted: {summary}"
    elif not checks:
        summary = "no relay candidate gathered: nothing to check"
    out.write(summary + "\n")
    return ok


def _relay_check_line(result: RelayCheck | IceCandidateErrorEvent) -> str:
    if isinstance(result, IceCandidateErrorEvent):
        source = "" if result.address is None else f" from {result.address}"
        return f"ERROR {result.errorCode}  {result.url}{source}: {result.errorText}"
    where = f"relay {hostport(*result.address)}  {result.url}"
    if result.source is not None:
        where += f"  from {hostport(*result.source)}"
    if not result.ok:
        return f"FAILED  {where}: {result.problem}"
    took = f"peer to relay {result.peer_to_relay_ms} ms"
    return f"ok      {where}  {took}, relay to peer {result.relay_to_peer_ms} ms"


def _fail(error: object, status: int) -> int:
    """One line on stderr, with what it echoes of the input cut short and control characters
    escaped: a 5000-digit port is not worth a 5 kB line, nor a newline a second one."""
    text = re.sub(r"\S{81,}", lambda m: m[0][:79] + "…", printable(str(error)))
    print(f"ice-engine: {text if len(text) <= 240 else text[:239] + '…'}", file=sys.stderr)
    return status


def drop_stdout() -> None:
    """Point stdout at /dev/null: what it still buffers cannot fail the exit (status 120)."""
    with contextlib.suppress(OSError, ValueError):  # ValueError: closed
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)


def main(argv: Sequence[str] | None = None, *, process_exits: bool = False) -> int:
    """Run the command `argv` (by default the process's arguments); its exit status.

    The signal handlers are put back as found at the end; with `process_exits` (the
    `ice-engine` script, which exits next) they are left to end the process as their
    default does (a Ctrl-C then: status 130, no traceback), or ignored if they were.
    """
    for stream in (sys.stdout, sys.stderr):  # an ASCII terminal gets \u escapes, not a crash
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    if sys.stderr is None:  # started with it closed (`2>&-`): print() would use stdout
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    if sys.stdout is None:  # started with it closed (`>&-`): every command needs it
        print("ice-engine: standard output is closed", file=sys.stderr)
        return 1
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (
        arguments[0].startswith("-") and arguments[0] not in ("-h", "--help", "--version")
    ):
        arguments.insert(0, "gather")
    stopped_by: list[int] = []  # the signal that ended a gathering, if one did
    with _handlers_kept(process_exits):
        return _run(arguments, stopped_by)


@contextlib.contextmanager
def _handlers_kept(process_exits: bool) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP handled as before, once the command is over: its own
    handlers (`_as_main_task`) must not outlive it in a process that goes on (a test's).
    In one that exits next, their defaults (see `main`)."""
    saved = {number: signal.getsignal(number) for number in _ENDING}
    try:
        yield
    finally:
        for number, handler in saved.items():
            if process_exits and handler is not signal.SIG_IGN:
                handler = signal.SIG_DFL
            if handler is not None:  # None: set from C, and not ours to put back
                with contextlib.suppress(ValueError):  # not the main thread: never changed
                    signal.signal(number, handler)


def _run(arguments: list[str], stopped_by: list[int]) -> int:
    try:
        args = build_parser().parse_args(arguments)
        if args.command in ("gather", "relay-check"):
            _load_config(args)
        if args.command == "lab":
            from .lab.cli import main as lab_main

            return lab_main(args.lab_args)
        if args.command == "demo":
            from .lab.demo import run_demo
            from .lab.topology import MAX_DELAY_MS

            if not 0 <= args.delay_ms <= MAX_DELAY_MS:  # NaN fails this too
                raise UsageError(f"--delay-ms must be between 0 and {MAX_DELAY_MS}")
            return run_demo(
                args.delay_ms, "json" if args.json else "plain" if args.plain else "view"
            )
        command = {"nat": _nat, "relay-check": _relay_check}.get(args.command, _gather)
        return asyncio.run(_as_main_task(command, args, sys.stdout, stopped_by))
    except asyncio.CancelledError:  # a signal (see _as_main_task), or a Ctrl-C that came
        return 128 + (stopped_by[-1] if stopped_by else signal.SIGINT)  # before it began
    except UsageError as error:
        return _fail(error, 2)
    except BrokenPipeError:  # the reader left (`| head -1`): end quietly, as other tools do
        drop_stdout()
        return 0
    except ValueError as error:  # bad URLs, bad options: the message names the problem
        return _fail(error, 2)
    except OSError as error:
        if stopped_by:  # the terminal hung up (EIO): the summary had nowhere to go
            drop_stdout()
            return 128 + stopped_by[-1]
        if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):  # only writes fail so
            drop_stdout()
            return _fail(f"cannot write the output: {error.strerror}", 1)
        # "[Errno 98] cannot bind to ...": the number means nothing to a reader
        return _fail(error if error.strerror is None or error.filename else error.strerror, 1)
    except KeyboardInterrupt:
        return 130
