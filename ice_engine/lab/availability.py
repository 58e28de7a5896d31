"""Why the lab cannot run on this machine, in one sentence a person can act on."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

# tool -> Debian package that provides it
REQUIRED_TOOLS = {
    "ip": "iproute2",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "sysctl": "procps",
    "turnserver": "coturn",
    "dnsmasq": "dnsmasq",
    "openssl": "openssl",
}


class LabError(RuntimeError):
    """The lab could not be brought up, or is not in the state an operation needs."""


class LabUnavailableError(LabError):
    """This machine cannot run the lab at all (not root, a tool or kernel feature missing)."""


def lab_unavailable_reason() -> str | None:
    """None if the lab can run here, else a short reason naming what is missing."""
    if not sys.platform.startswith("linux"):
        return f"the network lab needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the network lab needs root (network namespaces, iptables, TUN devices)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        packages = sorted({REQUIRED_TOOLS[tool] for tool in missing})
        return (
            f"the network lab needs {', '.join(missing)} on PATH "
            f"(Debian packages: {' '.join(packages)})"
        )
    if not Path("/dev/net/tun").exists():
        return "the network lab needs /dev/net/tun (TUN/TAP support) for its delay link"
    return None
