"""Create and remove the lab's namespaces, links, addresses, routes and NAT.

All changes are made inside the lab's own namespaces (``ip -n``/``ip netns exec``), so
the host's interfaces, routes and firewall are never touched.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from ice_engine.lab import topology as t
from ice_engine.lab.availability import LabError
from ice_engine.lab.netns import netns_exists

_COMMON_SYSCTLS = (
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    "net.ipv4.icmp_ratelimit=0",  # closed-port tests need every ICMP error, not 1/s
    "net.ipv6.icmp.ratelimit=0",
    # No duplicate address detection: nothing can collide here, and DAD would hold
    # link-local addresses tentative for about a second on every build.
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
)
_ROUTER_SYSCTLS = ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

# Packets the kernel holds for the delay link's reader; absorbs bursts while it is busy.
TUN_QUEUE_LEN = 10000
_V4 = t.INSIDE_PREFIX_V4
_CLIENT = (
    f"link add {t.CLIENT_DEV_A} type veth peer name {t.ROUTER_DEV_A} netns {t.ROUTER_NS}",
    f"link add {t.CLIENT_DEV_B} type veth peer name {t.ROUTER_DEV_B} netns {t.ROUTER_NS}",
    "link set lo up",
    f"link set {t.CLIENT_DEV_A} up",
    f"link set {t.CLIENT_DEV_B} up",
    f"addr add {t.CLIENT_IPV4_A}/{_V4} dev {t.CLIENT_DEV_A}",
    f"addr add {t.CLIENT_IPV4_B}/{_V4} dev {t.CLIENT_DEV_B}",
    f"addr add {t.CLIENT_IPV6}/64 dev {t.CLIENT_DEV_A} nodad",
    f"route add default via {t.ROUTER_INSIDE_IPV4_A} dev {t.CLIENT_DEV_A}",
    f"route add ::/0 via {t.ROUTER_INSIDE_IPV6} dev {t.CLIENT_DEV_A}",
    # Traffic from the second address leaves through its own interface, like a real
    # multi-homed host, instead of following the main default route out of c0.
    f"route add default via {t.ROUTER_INSIDE_IPV4_B} dev {t.CLIENT_DEV_B} "
    f"table {t.CLIENT_B_ROUTE_TABLE}",
    f"rule add from {t.CLIENT_IPV4_B} table {t.CLIENT_B_ROUTE_TABLE} priority 1000",
)
_ROUTER = (
    "link set lo up",
    f"link set {t.ROUTER_DEV_A} up",
    f"link set {t.ROUTER_DEV_B} up",
    f"addr add {t.ROUTER_INSIDE_IPV4_A}/{_V4} dev {t.ROUTER_DEV_A}",
    f"addr add {t.ROUTER_INSIDE_IPV4_B}/{_V4} dev {t.ROUTER_DEV_B}",
    f"addr add {t.ROUTER_INSIDE_IPV6}/64 dev {t.ROUTER_DEV_A} nodad",
    f"tuntap add dev {t.ROUTER_LINK_DEV} mode tun",
    f"link set {t.ROUTER_LINK_DEV} txqueuelen {TUN_QUEUE_LEN} up",
    f"addr add {t.ROUTER_PUBLIC_IPV4}/24 dev {t.ROUTER_LINK_DEV}",
    f"addr add {t.ROUTER_PUBLIC_IPV6}/64 dev {t.ROUTER_LINK_DEV} nodad",
)
_SERVER = (
    "link set lo up",
    f"tuntap add dev {t.SERVER_LINK_DEV} mode tun",
    f"link set {t.SERVER_LINK_DEV} txqueuelen {TUN_QUEUE_LEN} up",
    f"addr add {t.SERVER_IPV4}/24 dev {t.SERVER_LINK_DEV}",
    f"addr add {t.SERVER_ALT_IPV4}/24 dev {t.SERVER_LINK_DEV}",
    f"addr add {t.SERVER_IPV6}/64 dev {t.SERVER_LINK_DEV} nodad",
    # Only the public side is known here: the client's private range stays behind NAT.
    f"route add {t.INSIDE_IPV6_NET} via {t.ROUTER_PUBLIC_IPV6} dev {t.SERVER_LINK_DEV}",
)
_MASQUERADE = f"-t nat -A POSTROUTING -s {t.INSIDE_IPV4_NET} -o {t.ROUTER_LINK_DEV} -j MASQUERADE"
_FIREWALL = (
    (t.ROUTER_NS, "iptables", _MASQUERADE),
    # The dead addresses are routed to the server and vanish there: no reply, no ICMP.
    (t.SERVER_NS, "iptables", f"-t raw -A PREROUTING -d {t.DEAD_IPV4} -j DROP"),
    (t.SERVER_NS, "ip6tables", f"-t raw -A PREROUTING -d {t.DEAD_IPV6} -j DROP"),
)


def run_checked(argv: Sequence[str], stdin: str | None = None, timeout_s: float = 20.0) -> str:
    result = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise LabError(f"`{' '.join(argv)}` failed: {detail}")
    return result.stdout


def _ip_batch(netns: str, commands: Sequence[str]) -> None:
    run_checked(["ip", "-n", netns, "-batch", "-"], stdin="\n".join(commands) + "\n")


def create_network() -> None:
    """Namespaces, links, addressing, routing and NAT; the delay link attaches later."""
    for netns in t.NAMESPACES:
        run_checked(["ip", "netns", "add", netns])
    for netns in t.NAMESPACES:
        extra = _ROUTER_SYSCTLS if netns == t.ROUTER_NS else ()
        run_checked(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", *_COMMON_SYSCTLS, *extra])
    _ip_batch(t.CLIENT_NS, _CLIENT)
    _ip_batch(t.ROUTER_NS, _ROUTER)
    _ip_batch(t.SERVER_NS, _SERVER)
    for netns, tool, rule in _FIREWALL:
        run_checked(["ip", "netns", "exec", netns, tool, "-w", *rule.split()])
    resolv_dir = t.NETNS_ETC / t.CLIENT_NS
    resolv_dir.mkdir(parents=True, exist_ok=True)
    (resolv_dir / "resolv.conf").write_text(f"nameserver {t.DNS_SERVER_IPV4}\n")


def addresses_settled() -> bool:
    """True once no lab IPv6 address is tentative (sockets can bind them)."""
    for netns in t.NAMESPACES:
        if run_checked(["ip", "-n", netns, "-6", "addr", "show", "tentative"]).strip():
            return False
    return True


def remove_network() -> None:
    """Delete the lab's namespaces (with their devices and rules) and /etc/netns dirs."""
    for netns in t.NAMESPACES:
        if netns_exists(netns):
            run_checked(["ip", "netns", "del", netns])
        shutil.rmtree(t.NETNS_ETC / netns, ignore_errors=True)
