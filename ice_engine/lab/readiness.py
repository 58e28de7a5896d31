"""Is the lab answering? Probes sent from the client namespace, as a real client would.

Probing through the NAT and the delay link checks the whole path at once, and a wrong
mapped address (NAT missing, IPv6 translated) fails the build instead of a later test.
"""

from __future__ import annotations

import socket

from ice_engine.lab import nodeturn, probes, stunnel
from ice_engine.lab import topology as t
from ice_engine.lab.availability import LabError
from ice_engine.lab.netns import socket_in_netns

# (server, port, expected mapped address): every coturn UDP listener of both instances.
STUN_ENDPOINTS = (
    (t.SERVER_IPV4, t.STUN_PORT, t.ROUTER_PUBLIC_IPV4),
    (t.SERVER_ALT_IPV4, t.STUN_PORT, t.ROUTER_PUBLIC_IPV4),
    (t.SERVER_IPV4, t.STUN_ALT_PORT, t.ROUTER_PUBLIC_IPV4),
    (t.SERVER_IPV6, t.STUN_PORT, t.CLIENT_IPV6),
    (t.SERVER_IPV4, t.SHORT_TURN_PORT, t.ROUTER_PUBLIC_IPV4),
    (t.SERVER_IPV6, t.SHORT_TURN_PORT, t.CLIENT_IPV6),
    (t.SERVER_IPV4, t.REDIRECT_TURN_PORT, t.ROUTER_PUBLIC_IPV4),
)
TCP_ENDPOINTS = ((t.SERVER_IPV4, t.STUN_PORT), (t.SERVER_IPV4, t.TLS_PORT))


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def stun_mapped(server: str, port: int, timeout_s: float) -> str | None:
    """The address the STUN server at ``server:port`` sees for the client, or None."""
    with socket_in_netns(t.CLIENT_NS, _family(server)) as sock:
        mapped = probes.stun_binding(sock, (server, port), timeout_s=timeout_s)
    return None if mapped is None else mapped[0]


def stun_answers(server: str, port: int, timeout_s: float) -> bool:
    return stun_mapped(server, port, timeout_s) is not None


def services_ready() -> bool:
    """True once coturn (UDP, TCP, TLS) and dnsmasq answer; LabError if they answer wrong."""
    for server, port, expected in STUN_ENDPOINTS:
        mapped = stun_mapped(server, port, timeout_s=0.3)
        if mapped is None:
            return False
        if mapped != expected:
            raise LabError(
                f"STUN via {server}:{port} mapped the client to {mapped}, not {expected}"
            )
    for server, port in TCP_ENDPOINTS:
        with socket_in_netns(t.CLIENT_NS, _family(server), socket.SOCK_STREAM) as sock:
            if not probes.tcp_connects(sock, (server, port)):
                return False
    with socket_in_netns(t.CLIENT_NS) as sock:
        try:
            answers = probes.dns_answers(sock, t.DNS_SERVER_IPV4, t.STUN_HOST, "A", 0.3)
        except (OSError, EOFError, TimeoutError):
            return False
    return answers == [t.SERVER_IPV4]


def extras_ready(names: list[str]) -> bool:
    """True once the extra servers started with the lab answer (see ``Lab.EXTRAS``)."""
    if nodeturn.NAME in names and not stun_answers(t.SERVER_IPV4, t.NODE_TURN_PORT, 0.3):
        return False
    if stunnel.NAME in names:
        with socket_in_netns(t.CLIENT_NS, socket.AF_INET, socket.SOCK_STREAM) as sock:
            return probes.tcp_connects(sock, (t.SERVER_IPV4, t.TLS13_PORT))
    return True
