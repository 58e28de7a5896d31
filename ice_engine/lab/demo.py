"""`ice-engine demo`: the lab brought up, and a real gathering shown inside it.

On a fresh machine with no internet (as root, with coturn and dnsmasq installed), this
shows host, srflx and relay candidates from real servers behind a real NAT: the client
namespace gathers through the lab's DNS, STUN and TURN (UDP, TCP and TLS).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

from ice_engine.lab import topology as t
from ice_engine.lab.availability import lab_unavailable_reason
from ice_engine.lab.lab import Lab, lab_session

__all__ = ["run_demo"]

#: Ctrl-C; kill, timeout(1), a service manager; a hang-up.
_ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

INTRO = """\
ice-engine demo: a lab of network namespaces on this machine
  client   {client_a}, {client_b}, {client_v6}  (two IPv4 interfaces and IPv6)
  NAT      {public}  (iptables MASQUERADE; IPv6 routed)
  servers  coturn and dnsmasq at {server}, {delay:g} ms one way from the NAT
gathering with stun:{stun}, turn:{turn} (UDP and TCP) and turns:{turn} (TLS)
"""


def run_demo(delay_ms: float = 25.0, output: str = "view") -> int:
    """Bring the lab up (and down again if it was not up), and gather inside it."""
    reason = lab_unavailable_reason()
    if reason is not None:
        print(f"ice-engine demo: the lab cannot run here: {reason}", file=sys.stderr)
        return 2
    with _lab_left_as_found_on_signals():
        if output != "json":
            print(
                INTRO.format(
                    client_a=t.CLIENT_IPV4_A,
                    client_b=t.CLIENT_IPV4_B,
                    client_v6=t.CLIENT_IPV6,
                    public=t.ROUTER_PUBLIC_IPV4,
                    server=t.SERVER_IPV4,
                    delay=delay_ms,
                    stun=t.STUN_HOST,
                    turn=t.TURN_HOST,
                ),
                flush=True,
            )
        with lab_session(delay_ms=delay_ms) as lab:
            try:
                return _gather_in(lab, output)
            finally:  # the lab session's cleanup comes next: no signal may cut it short
                _ignore_signals()


def _gather_in(lab: Lab, output: str) -> int:
    """`ice-engine gather` in the client namespace, from the lab's servers; its status."""
    argv = [
        sys.executable, "-m", "ice_engine", "gather",
        "--ice-server", f"stun:{t.STUN_HOST}",
        "--ice-server", f"turn:{t.TURN_HOST}",
        "--ice-server", f"turn:{t.TURN_HOST}?transport=tcp",
        "--ice-server", f"turns:{t.TURN_HOST}",
        "--username", t.USERNAME,
        "--ca-file", str(t.CA_CERT_FILE),
    ]  # fmt: skip
    if output == "json":
        argv.append("--json")
    elif output == "plain":
        argv.append("--plain")
    env = {**lab.python_env(), "ICE_ENGINE_CREDENTIAL": t.PASSWORD}  # not on the cmdline
    passing = _PassedOn()
    with _handled_by(passing):
        gathering = subprocess.Popen(lab.exec_args(t.CLIENT_NS, argv), env=env)
        passing.to(gathering)
        status = gathering.wait()
    return 128 - status if status < 0 else status  # killed by a signal (-N): as a shell says


@contextlib.contextmanager
def _lab_left_as_found_on_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP (the terminal closed) end the demo through
    `lab_session`'s cleanup, which takes the lab down or puts its delay back and gives
    the session's lease up, rather than the process dying and leaving them."""

    def leave(number: int, _frame: object) -> None:
        _ignore_signals()  # a second one (a hang-up comes from the kernel and the shell)
        raise SystemExit(128 + number)  # must not cut the cleanup short

    with _handled_by(leave):
        yield


def _ignore_signals() -> None:
    for number in _ENDING:
        signal.signal(number, signal.SIG_IGN)


class _PassedOn:
    """While the gathering runs, it handles the signals: it closes its gatherer, releasing
    the TURN allocations, prints its summary and exits 128 + the signal, which the demo
    then returns. SIGTERM or SIGHUP sent to the demo alone are passed on (one that came
    before the gathering had started, once it has); Ctrl-C reaches it from the terminal
    (a foreground process group), and is not passed on, or it would come twice."""

    def __init__(self) -> None:
        self._gathering: subprocess.Popen[bytes] | None = None
        self._early: list[int] = []

    def __call__(self, number: int, _frame: object) -> None:
        if self._gathering is None:  # it reached no gathering
            self._early.append(number)
        elif number != signal.SIGINT:
            self._gathering.send_signal(number)

    def to(self, gathering: subprocess.Popen[bytes]) -> None:
        self._gathering = gathering
        for number in self._early:
            gathering.send_signal(number)


@contextlib.contextmanager
def _handled_by(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """The signals that end the demo go to `handler` for the block, then to what handled
    them before; but those ignored (`nohup`, `cmd &` in a script) stay ignored."""
    previous = {
        number: signal.signal(number, handler)
        for number in _ENDING
        if signal.getsignal(number) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for number, earlier in previous.items():
            signal.signal(number, earlier)
