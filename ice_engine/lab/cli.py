"""``ice-engine lab up|down|status``: drive the network lab from a shell."""

from __future__ import annotations

import argparse
import sys

from ice_engine.cli import UsageError, UsageParser
from ice_engine.lab.availability import LabError, lab_unavailable_reason
from ice_engine.lab.lab import Lab
from ice_engine.lab.topology import CA_CERT_FILE, CLIENT_NS, MAX_DELAY_MS


def _parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="ice-engine lab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=UsageParser)
    up = commands.add_parser(
        "up", help="build the lab (or reuse a healthy one) and keep it up after test runs"
    )
    up.add_argument("--delay-ms", type=float, default=0.0, help="one-way router<->server delay")
    commands.add_parser("down", help="stop the lab's processes and delete its namespaces")
    commands.add_parser("status", help="show what of the lab exists; exit 1 if not healthy")
    return parser


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as error:
        print(f"ice-engine lab: {error}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return 0 if exc.code == 0 else 2
    reason = lab_unavailable_reason()
    if reason is not None:
        print(f"ice-engine lab: {reason}", file=sys.stderr)
        return 2
    lab = Lab()
    try:
        if args.command == "up":
            if not 0 <= args.delay_ms <= MAX_DELAY_MS:  # NaN fails this too
                print(f"ice-engine lab: --delay-ms must be 0-{MAX_DELAY_MS}", file=sys.stderr)
                return 2
            built = lab.up(delay_ms=args.delay_ms, pin=True)
            verb = "built" if built else "already up, reused"
            print(
                f"lab {verb}: run clients with `ip netns exec {CLIENT_NS} ...`; "
                f"CA certificate {CA_CERT_FILE}"
            )
            return 0
        if args.command == "down":
            lab.down()
            print("lab down")
            return 0
        status = lab.status()
        print(status.describe())
        return 0 if status.healthy else 1
    except LabError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ice-engine lab: {first_line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
