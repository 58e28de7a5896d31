"""Userspace delay link between two TUN devices in two namespaces.

The kernel here has no netem, so latency between router and server is made in userspace:
one process attaches to a TUN device in each namespace and copies every IP packet to the
other side after a fixed one-way delay. Order is kept per direction. SIGHUP re-reads the
delay file (and writes the applied value next to it), SIGUSR1 prints counters to stdout,
SIGTERM stops the link.

Run as ``python -m ice_engine.lab.delaylink --ns-a ice-router --dev-a dlink0
--ns-b ice-server --dev-b dlink0 --delay-file /run/ice-engine-lab/delay_ms``.
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import os
import select
import signal
import struct
import sys
import time
from pathlib import Path

from ice_engine.lab.delayfile import read_delay_ms, write_applied
from ice_engine.lab.netns import call_in_netns

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65535
MAX_QUEUED = 20000  # per direction, like a router buffer: beyond it packets are dropped
READ_BURST = 256  # packets read from one side before the other side gets a turn


def open_tun(netns: str, device: str) -> int:
    """Attach to the (persistent) TUN ``device`` inside ``netns``; returns a nonblocking fd."""

    def attach() -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", device.encode(), IFF_TUN | IFF_NO_PI))
        except OSError:
            os.close(fd)
            raise
        return fd

    return call_in_netns(netns, attach)


class Direction:
    """Packets read from ``src`` waiting for their release time before going to ``dst``."""

    def __init__(self, src: int, dst: int) -> None:
        self.src = src
        self.dst = dst
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.forwarded = 0
        self.dropped = 0

    def receive(self, now: float, delay_s: float) -> None:
        for _ in range(READ_BURST):
            try:
                packet = os.read(self.src, MAX_PACKET)
            except BlockingIOError:
                return
            if delay_s <= 0 and not self.queue:
                self.send(packet)
            elif len(self.queue) >= MAX_QUEUED:
                self.dropped += 1
            else:
                # Never release before an earlier packet: keeps order if the delay shrinks.
                due = now + delay_s
                if self.queue and self.queue[-1][0] > due:
                    due = self.queue[-1][0]
                self.queue.append((due, packet))

    def release_due(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            self.send(self.queue.popleft()[1])

    def next_due(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def send(self, packet: bytes) -> None:
        try:
            os.write(self.dst, packet)
            self.forwarded += 1
        except OSError:  # device down or packet refused: a lossy link, not a crash
            self.dropped += 1


_SPIN_S = 0.001


class DelayLink:
    """The forwarding loop: epoll on both TUN fds plus a signal wakeup pipe."""

    def __init__(self, fd_a: int, fd_b: int, delay_file: Path, delay_ms: float) -> None:
        self.directions = {fd_a: Direction(fd_a, fd_b), fd_b: Direction(fd_b, fd_a)}
        self.delay_file = delay_file
        self.delay_ms = read_delay_ms(delay_file, delay_ms)
        self.reload_requested = False
        self.stop_requested = False

    def run(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        poller = select.epoll()
        for fd in self.directions:
            poller.register(fd, select.EPOLLIN)
        poller.register(wake_r, select.EPOLLIN)
        write_applied(self.delay_file, self.delay_ms)
        while not self.stop_requested:
            for fd, _ in poller.poll(self._timeout()):
                if fd == wake_r:
                    self._drain(wake_r)
                else:
                    self.directions[fd].receive(time.monotonic(), self.delay_ms / 1000.0)
            if self.reload_requested:
                self.reload_requested = False
                self.delay_ms = read_delay_ms(self.delay_file, self.delay_ms)
                write_applied(self.delay_file, self.delay_ms)
            now = time.monotonic()
            for direction in self.directions.values():
                direction.release_due(now)
        self.report("stopped")

    def report(self, event: str) -> None:
        counts = [(d.forwarded, d.dropped) for d in self.directions.values()]
        print(
            f"delaylink {event}: delay {self.delay_ms:g} ms, "
            f"(forwarded, dropped) a->b, b->a: {counts}",
            flush=True,
        )

    def _timeout(self) -> float:
        """How long to wait for packets before the next release is due.

        epoll rounds a timeout up to whole milliseconds, which made every crossing up to
        1 ms late (a 50 ms RTT measured 50.8). So the wait ends a millisecond early and
        the rest is spun (`poll(0)`), which keeps releases within tens of microseconds.
        """
        dues = [d for d in (x.next_due() for x in self.directions.values()) if d is not None]
        if not dues:
            return -1
        return max(0.0, min(dues) - time.monotonic() - _SPIN_S)

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass

    def _on_hup(self, _signum: int, _frame: object) -> None:
        self.reload_requested = True

    def _on_term(self, _signum: int, _frame: object) -> None:
        self.stop_requested = True

    def _on_usr1(self, _signum: int, _frame: object) -> None:
        self.report("counters")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ice_engine.lab.delaylink")
    parser.add_argument("--ns-a", required=True, help="namespace of the first TUN device")
    parser.add_argument("--dev-a", required=True, help="first TUN device name")
    parser.add_argument("--ns-b", required=True, help="namespace of the second TUN device")
    parser.add_argument("--dev-b", required=True, help="second TUN device name")
    parser.add_argument("--delay-file", required=True, type=Path, help="one-way delay in ms")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="used if the file is absent")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    fd_a = open_tun(args.ns_a, args.dev_a)
    fd_b = open_tun(args.ns_b, args.dev_b)
    DelayLink(fd_a, fd_b, args.delay_file, args.delay_ms).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
