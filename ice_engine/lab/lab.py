"""The ``Lab`` object: bring the network lab up and down, and run things inside it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket as _socket  # ``Lab.socket`` would shadow the module name in the class
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ice_engine.lab import coturn, dnsmasq, leases, network, nodeturn, processes, readiness, stunnel
from ice_engine.lab import topology as t
from ice_engine.lab.availability import LabError, LabUnavailableError, lab_unavailable_reason
from ice_engine.lab.certs import make_tls_files
from ice_engine.lab.delayfile import applied_path, read_delay_ms
from ice_engine.lab.locking import machine_lock
from ice_engine.lab.netns import netns_exists, socket_in_netns
from ice_engine.lab.processes import Daemon
from ice_engine.lab.status import LabStatus

DELAYLINK = "delaylink"
DAEMON_NAMES = (DELAYLINK, coturn.MAIN, coturn.SHORT, coturn.REDIRECT, dnsmasq.NAME)
#: Started when their tools are installed; tests that need one skip with the reason.
EXTRAS = {nodeturn.NAME: nodeturn.unavailable_reason, stunnel.NAME: stunnel.unavailable_reason}
PACKAGE_ROOT = Path(__file__).absolute().parents[2]  # makes ``ice_engine`` importable
UP_TIMEOUT_S = 20.0


class Lab:
    """Client behind a NAT router, and a public server running coturn and dnsmasq.

    Addresses, ports and credentials are the constants of ``ice_engine.lab.topology``
    (re-exported by ``ice_engine.lab``). The lab is a machine-wide singleton: every
    ``Lab()`` drives the same namespaces, serialised by a lock file.
    """

    state_dir = t.STATE_DIR
    ca_cert = t.CA_CERT_FILE

    # -- lifecycle -------------------------------------------------------------------

    def up(self, delay_ms: float | None = 0.0, *, pin: bool = False) -> bool:
        """Make the lab ready; True if it was (re)built, False if a healthy one was reused.

        ``delay_ms`` None keeps the delay of a reused lab (0 for a new one), so joining a
        shared lab does not change it under others. ``pin`` marks the lab as wanted
        beyond any test session (``ice-engine lab up``): sessions then leave it up, and
        ``down()`` removes the pin.
        """
        if delay_ms is not None:
            _check_delay(delay_ms)  # before anything is torn down
        reason = lab_unavailable_reason()
        if reason is not None:
            raise LabUnavailableError(reason)
        with machine_lock.held():
            if pin:
                leases.pin()
            if self._health_problems() == []:
                if delay_ms is not None and self._current_delay() != delay_ms:
                    self._apply_delay(delay_ms)
                return False
            self._teardown()
            try:
                self._build(delay_ms or 0.0)
            except BaseException as exc:
                logs = self._log_tails()
                self._teardown(keep_logs=True)
                if isinstance(exc, LabError | OSError | subprocess.SubprocessError):
                    summary = f"lab did not come up: {exc} (logs kept in {self.state_dir})"
                    raise LabError(summary + logs) from exc
                raise
            return True

    def down(self) -> None:
        """Stop the lab's own processes (by verified PID) and delete its namespaces."""
        with machine_lock.held():
            leases.unpin()
            self._teardown()

    def status(self) -> LabStatus:
        return LabStatus(
            namespaces={n: netns_exists(n) for n in t.NAMESPACES},
            daemons={n: processes.running_pid(self.state_dir, n) for n in (*DAEMON_NAMES, *EXTRAS)},
            delay_ms=self._current_delay(),
            healthy=not (problems := self._health_problems()),
            problems=tuple(problems),
            pinned=leases.pinned(),
            sessions=tuple(leases.other_sessions()),
        )

    def is_up(self) -> bool:
        return not self._health_problems()

    def set_delay(self, delay_ms: float) -> None:
        """Change the router<->server one-way delay without dropping the link."""
        with machine_lock.held():
            self._apply_delay(delay_ms)

    @property
    def delay_ms(self) -> float | None:
        return self._current_delay()

    def extra_missing(self, name: str) -> str | None:
        """None if the extra server ``name`` (see EXTRAS) runs in this lab, else why not."""
        if name in self._recorded().get("extras", ()):
            if processes.running_pid(self.state_dir, name) is not None:
                return None
            return f"{name} was started with the lab but is not running"
        return EXTRAS[name]() or f"{name} was not started with this lab"

    # -- running things inside ------------------------------------------------------

    @staticmethod
    def exec_args(netns: str, argv: Sequence[str]) -> list[str]:
        """The command line running ``argv`` inside ``netns``."""
        return ["ip", "netns", "exec", netns, *argv]

    @staticmethod
    def python_env() -> dict[str, str]:
        """Environment that lets a child Python import ``ice_engine`` from this tree."""
        env = dict(os.environ)
        paths = [str(PACKAGE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        return env

    def run(
        self,
        argv: Sequence[str],
        netns: str = t.CLIENT_NS,
        timeout_s: float = 30.0,
        stdin: str | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in ``netns`` (the client by default) and capture its output."""
        return subprocess.run(
            self.exec_args(netns, argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=check,
            env=self.python_env(),
        )

    def run_python(
        self, code: str, netns: str = t.CLIENT_NS, timeout_s: float = 30.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet in ``netns`` with this interpreter and ``ice_engine``."""
        return self.run([sys.executable, "-c", code], netns, timeout_s, check=check)

    @staticmethod
    @contextlib.contextmanager
    def process(
        argv: Sequence[str], netns: str = t.CLIENT_NS, *, stdin: bool = False
    ) -> Iterator[subprocess.Popen[str]]:
        """Start ``argv`` in ``netns`` with text pipes, for a test to talk to while it runs.

        On leaving, a process still running is killed, by its PID: only what this started.
        """
        process = subprocess.Popen(
            Lab.exec_args(netns, argv),
            stdin=subprocess.PIPE if stdin else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=Lab.python_env(),
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)

    @staticmethod
    def socket(
        family: int = _socket.AF_INET, kind: int = _socket.SOCK_DGRAM, netns: str = t.CLIENT_NS
    ) -> _socket.socket:
        """A socket living in ``netns`` (client by default), usable from this process.

        Name resolution in this process still uses the host's resolv.conf; pass addresses,
        or use ``run_python`` for code that must resolve through the lab DNS.
        """
        return socket_in_netns(netns, family, kind)

    # -- DNS query log --------------------------------------------------------------

    def dns_queries(self) -> list[tuple[str, str, str]]:
        """Every query the lab DNS has seen, oldest first: (qtype, name, client)."""
        return dnsmasq.logged_queries(self.state_dir)

    def dns_query_count(self, name: str | None = None, qtype: str | None = None) -> int:
        return sum(
            1
            for q_type, q_name, _ in self.dns_queries()
            if (name is None or q_name == name.rstrip(".")) and (qtype is None or q_type == qtype)
        )

    def log_path(self, daemon: str) -> Path:
        """Log file of ``turnserver``, ``turnserver-short``, ``turnserver-redirect``,
        ``dnsmasq`` or ``delaylink``."""
        if daemon == dnsmasq.NAME:
            return dnsmasq.query_log(self.state_dir)
        if daemon in (coturn.MAIN, coturn.SHORT, coturn.REDIRECT):
            return self.state_dir / f"{daemon}.log"
        return processes.log_file(self.state_dir, daemon)

    # -- internals --------------------------------------------------------------------

    def _build(self, delay_ms: float) -> None:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tls = make_tls_files(self.state_dir)
        network.create_network()
        self._delay_file().write_text(f"{delay_ms}\n")
        processes.start(self.state_dir, self._delaylink_daemon(), env=self.python_env())
        self._wait("delay link and addresses", self._link_ready)
        for daemon in [*coturn.daemons(self.state_dir, tls), dnsmasq.daemon(self.state_dir)]:
            processes.start(self.state_dir, daemon)
        self._wait("coturn and dnsmasq", readiness.services_ready)
        extras = [name for name, missing in EXTRAS.items() if missing() is None]
        if nodeturn.NAME in extras:
            processes.start(self.state_dir, nodeturn.daemon(self.state_dir))
        if stunnel.NAME in extras:
            processes.start(self.state_dir, stunnel.daemon(self.state_dir, tls))
        self._wait(", ".join(extras) or "extras", lambda: readiness.extras_ready(extras))
        record = {"layout": t.LAYOUT_VERSION, "extras": extras}
        (self.state_dir / "lab.json").write_text(json.dumps(record))

    def _teardown(self, keep_logs: bool = False) -> None:
        for name in reversed((*DAEMON_NAMES, *EXTRAS)):
            processes.stop(self.state_dir, name)
        network.remove_network()
        if keep_logs:  # a failed build: leave its logs to read, drop only the "built" mark
            (self.state_dir / "lab.json").unlink(missing_ok=True)
        else:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def _delay_file(self) -> Path:
        return self.state_dir / "delay_ms"

    def _delaylink_daemon(self) -> Daemon:
        argv = (
            sys.executable, "-m", "ice_engine.lab.delaylink",
            "--ns-a", t.ROUTER_NS, "--dev-a", t.ROUTER_LINK_DEV,
            "--ns-b", t.SERVER_NS, "--dev-b", t.SERVER_LINK_DEV,
            "--delay-file", str(self._delay_file()),
        )  # fmt: skip
        return Daemon(name=DELAYLINK, argv=argv)

    def _current_delay(self) -> float | None:
        path = applied_path(self._delay_file())
        return read_delay_ms(path, -1.0) if path.exists() else None

    def _apply_delay(self, delay_ms: float) -> None:
        _check_delay(delay_ms)
        self._delay_file().write_text(f"{delay_ms}\n")
        if not processes.send_signal(self.state_dir, DELAYLINK, signal.SIGHUP):
            raise LabError("the delay link is not running; bring the lab up first")
        self._wait("delay change", lambda: self._current_delay() == float(delay_ms), 5.0)

    def _wait(self, what: str, ready: Callable[[], bool], timeout_s: float = UP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            dead = [n for n in self._started() if processes.running_pid(self.state_dir, n) is None]
            if dead:
                raise LabError(f"{', '.join(dead)} exited while waiting for {what}")
            if time.monotonic() > deadline:
                raise LabError(f"timed out after {timeout_s:g} s waiting for {what}")
            time.sleep(0.02)

    def _started(self) -> list[str]:
        names = (*DAEMON_NAMES, *EXTRAS)
        return [n for n in names if processes.pid_file(self.state_dir, n).exists()]

    def _link_ready(self) -> bool:
        return self._current_delay() is not None and network.addresses_settled()

    def _health_problems(self) -> list[str]:
        missing = [n for n in t.NAMESPACES if not netns_exists(n)]
        if len(missing) == len(t.NAMESPACES):
            return ["the lab is down"]
        problems = [f"namespace {n} is missing" for n in missing]
        recorded = self._recorded()
        problems += [
            f"{n} is not running"
            for n in (*DAEMON_NAMES, *recorded.get("extras", ()))
            if processes.running_pid(self.state_dir, n) is None
        ]
        if recorded.get("layout") != t.LAYOUT_VERSION:
            problems.append("the lab was built by a different lab version")
        if not problems and not readiness.stun_answers(t.SERVER_IPV4, t.STUN_PORT, 1.0):
            problems.append(f"no STUN answer from {t.SERVER_IPV4}:{t.STUN_PORT}")
        return problems

    def _recorded(self) -> dict[str, Any]:
        """What the build recorded in lab.json: its layout and the extras it started."""
        try:
            recorded = json.loads((self.state_dir / "lab.json").read_text())
        except (OSError, ValueError):
            return {}
        return recorded if isinstance(recorded, dict) else {}

    def _log_tails(self, lines: int = 8) -> str:
        tails = []
        for name in (*DAEMON_NAMES, *EXTRAS):
            paths = dict.fromkeys([processes.log_file(self.state_dir, name), self.log_path(name)])
            for path in paths:
                with contextlib.suppress(OSError):
                    text = path.read_text(errors="replace").strip().splitlines()[-lines:]
                    if text:
                        tails.append(f"\n--- {path.name} ---\n" + "\n".join(text))
        return "".join(tails)


def _check_delay(delay_ms: float) -> None:
    if not 0 <= delay_ms <= t.MAX_DELAY_MS:  # NaN fails this too
        raise ValueError(f"delay_ms must be 0-{t.MAX_DELAY_MS}, not {delay_ms!r}")


@contextlib.contextmanager
def lab_session(delay_ms: float | None = None) -> Iterator[Lab]:
    """The lab, up for the block, shared with any other live session.

    ``delay_ms`` None leaves the delay of a lab already up as it is (0 when built here);
    a session that changes it puts the delay it found back when it leaves a lab that
    stays up (`ice-engine demo` left a pinned lab at 25 ms).

    At the end it is taken down only by the last session out, and never if pinned by
    ``ice-engine lab up``: concurrent test runs on one machine never pull it out from
    under each other or from under someone using it by hand.
    """
    lab = Lab()
    with machine_lock.held():
        lease = leases.acquire()
    found = lab.delay_ms
    try:
        lab.up(delay_ms)
        yield lab
    finally:
        with machine_lock.held():
            leases.release(lease)
            if not leases.pinned() and not leases.other_sessions():
                lab.down()
            elif found is not None and lab.delay_ms not in (None, found):
                lab._apply_delay(found)
