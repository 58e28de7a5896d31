"""`ice-engine demo`: the lab brought up, and a real gathering shown inside it.

On a fresh machine with no internet (as root, with coturn and dnsmasq installed), this
shows host, srflx and relay candidates from real servers behind a real NAT: the client
namespace gathers through the lab's DNS, STUN and TURN (UDP, TCP and TLS).
"""

from __future__ import annotations

import subprocess
import sys

from ice_engine.lab import topology as t
from ice_engine.lab.availability import lab_unavailable_reason
from ice_engine.lab.lab import lab_session

__all__ = ["run_demo"]

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
        return subprocess.run(lab.exec_args(t.CLIENT_NS, argv), env=env, check=False).returncode
