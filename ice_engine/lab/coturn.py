"""coturn configuration for the lab's two TURN servers.

Configs are written to the state dir (never /etc) so the lab does not depend on, or
disturb, a system-wide coturn. ``main`` is the full-featured server; ``short`` has short
lifetimes and a one-allocation quota for expiry, stale-nonce and 486 tests; ``redirect``
sends every Allocate to ``main`` with 300 Try Alternate, as a load balancer does.
"""

from __future__ import annotations

from pathlib import Path

from ice_engine.lab import topology as t
from ice_engine.lab.certs import TlsFiles
from ice_engine.lab.processes import Daemon

MAIN = "turnserver"
SHORT = "turnserver-short"
REDIRECT = "turnserver-redirect"

# coturn refuses some peer ranges by default; the lab's peers are all documentation ranges.
_ALLOWED_PEERS = (
    "198.51.100.0-198.51.100.255",
    "203.0.113.0-203.0.113.255",
    "2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
)


def _common(state_dir: Path, name: str, ports: tuple[int, int]) -> list[str]:
    return [
        f"realm={t.REALM}",
        f"server-name={t.TURN_HOST}",
        "lt-cred-mech",
        f"user={t.USERNAME}:{t.PASSWORD}",
        f"userdb={state_dir / (name + '.db')}",
        "fingerprint",
        "no-cli",
        "no-tlsv1",
        "no-tlsv1_1",
        "no-multicast-peers",
        *(f"allowed-peer-ip={peer}" for peer in _ALLOWED_PEERS),
        f"relay-ip={t.SERVER_IPV4}",
        f"relay-ip={t.SERVER_IPV6}",
        f"min-port={ports[0]}",
        f"max-port={ports[1]}",
        f"log-file={state_dir / (name + '.log')}",
        "simple-log",
        "no-stdout-log",
        f"pidfile={state_dir / (name + '.coturn-pid')}",
    ]


def main_config(state_dir: Path, tls: TlsFiles) -> str:
    lines = [
        f"listening-ip={t.SERVER_IPV4}",
        f"listening-ip={t.SERVER_ALT_IPV4}",
        f"listening-ip={t.SERVER_IPV6}",
        f"listening-port={t.STUN_PORT}",
        f"alt-listening-port={t.STUN_ALT_PORT}",
        f"tls-listening-port={t.TLS_PORT}",
        f"alt-tls-listening-port={t.TLS_ALT_PORT}",
        f"cert={tls.server_cert}",
        f"pkey={tls.server_key}",
        *_common(state_dir, MAIN, t.RELAY_PORT_RANGE),
    ]
    return "\n".join(lines) + "\n"


def short_config(state_dir: Path) -> str:
    lines = [
        f"listening-ip={t.SERVER_IPV4}",
        f"listening-ip={t.SERVER_IPV6}",
        f"listening-port={t.SHORT_TURN_PORT}",
        f"alt-listening-port={t.SHORT_TURN_ALT_PORT}",
        "no-tls",
        "no-dtls",
        f"max-allocate-lifetime={t.SHORT_MAX_ALLOCATE_LIFETIME_S}",
        f"stale-nonce={t.SHORT_STALE_NONCE_S}",
        f"permission-lifetime={t.SHORT_PERMISSION_LIFETIME_S}",
        f"channel-lifetime={t.SHORT_CHANNEL_LIFETIME_S}",
        f"user-quota={t.SHORT_USER_QUOTA}",
        *_common(state_dir, SHORT, t.SHORT_RELAY_PORT_RANGE),
    ]
    return "\n".join(lines) + "\n"


def redirect_config(state_dir: Path) -> str:
    lines = [
        f"listening-ip={t.SERVER_IPV4}",
        f"listening-port={t.REDIRECT_TURN_PORT}",
        f"alt-listening-port={t.REDIRECT_TURN_PORT + 1}",
        "no-tls",
        "no-dtls",
        f"alternate-server={t.SERVER_IPV4}:{t.STUN_PORT}",
        *_common(state_dir, REDIRECT, (40000, 40009)),  # it never allocates
    ]
    return "\n".join(lines) + "\n"


def daemons(state_dir: Path, tls: TlsFiles) -> list[Daemon]:
    """Write the configs and return the daemons to start in the server namespace."""
    result = []
    configs = (
        (MAIN, main_config(state_dir, tls)),
        (SHORT, short_config(state_dir)),
        (REDIRECT, redirect_config(state_dir)),
    )
    for name, text in configs:
        conf = state_dir / f"{name}.conf"
        conf.write_text(text)
        argv = ("turnserver", "-c", str(conf))
        result.append(Daemon(name=name, argv=argv, netns=t.SERVER_NS))
    return result
