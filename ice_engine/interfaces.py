"""Host addresses: which of the machine's addresses may become candidates, in what order.

Filtering follows RFC 8445 §5.1.1.1; ordering interleaves address families and interfaces
as RFC 8421 §4 asks, so that a broken IPv6 (or a broken interface) does not sink every
early connectivity check. Enumeration (ifaddr) is shared by all gatherers for a short
while: thousands of sessions starting at once need not each walk the interface list.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import ifaddr

__all__ = [
    "AddressFilter",
    "IpHandling",
    "default_route_addresses",
    "default_route_interfaces",
    "LocalAddress",
    "enumerate_addresses",
    "interleave",
    "is_usable",
    "local_addresses",
    "unusable_ipv6",
]

#: A user's say on each address: called with (interface name, address); False drops it.
AddressFilter = Callable[[str, str], bool]


class IpHandling(enum.IntEnum):
    """RFC 8828 §5.2 IP address handling modes: how much of the host's addressing to show."""

    ALL = 1  #: every usable address
    DEFAULT_ROUTE_AND_LOCAL = 2  #: only the default route's address, host candidate included
    DEFAULT_ROUTE = 3  #: only the default route, and no private (host) address revealed
    RELAY = 4  #: relay candidates only


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """One address of one interface. `network_id` names its network (interface, family
    and prefix), stable for the process: see `network_id`."""

    interface: str
    address: str
    family: int
    network_id: int
    scope_id: int = 0


@functools.lru_cache(maxsize=1024)
def is_usable(address: str, *, link_local: bool = False) -> bool:
    """RFC 8445 §5.1.1.1: no loopback, no deprecated or embedded-IPv4 IPv6 forms."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_link_local:
            return link_local
        return not (ip in _SITE_LOCAL or ip in _IPV4_MAPPED or ip in _IPV4_COMPATIBLE)
    return True


def interleave(addresses: Iterable[LocalAddress]) -> list[LocalAddress]:
    """RFC 8421 §4 order: IPv6 and IPv4 alternate, each family in interface order."""
    addresses = list(addresses)
    v6 = [a for a in addresses if a.family == socket.AF_INET6]
    if not v6 or len(v6) == len(addresses):
        return addresses  # one family: nothing to alternate
    v4 = [a for a in addresses if a.family == socket.AF_INET]
    ordered: list[LocalAddress] = []
    for i in range(max(len(v6), len(v4))):
        ordered.extend(family[i] for family in (v6, v4) if i < len(family))
    return ordered


def enumerate_addresses(adapters: Sequence[ifaddr.Adapter] | None = None) -> list[LocalAddress]:
    """Every IPv4/IPv6 address of every interface in the system's order, but for the IPv6
    ones the kernel says not to use (`unusable_ipv6`)."""
    found: list[LocalAddress] = []
    listed = list(ifaddr.get_adapters()) if adapters is None else adapters
    unusable = unusable_ipv6() if adapters is None else set()
    for adapter in listed:
        # The interface index where the system gives one: stable while the interface
        # lives, where a position in the list shifts as interfaces come and go.
        interface = adapter.index or adapter.name
        for ip in adapter.ips:
            if isinstance(ip.ip, tuple):
                address, _flowinfo, scope_id = ip.ip
                if unusable and str(ipaddress.IPv6Address(address)) in unusable:
                    continue
                network = network_id(interface, address, ip.network_prefix)
                found.append(
                    LocalAddress(adapter.nice_name, address, socket.AF_INET6, network, scope_id)
                )
            else:
                network = network_id(interface, ip.ip, ip.network_prefix)
                found.append(LocalAddress(adapter.nice_name, ip.ip, socket.AF_INET, network))
    return found


_networks: dict[tuple[int | str, str], int] = {}


def network_id(interface: int | str, address: str, prefix: int) -> int:
    """The candidate attribute `network-id` of an address: one per network, as libwebrtc
    numbers its networks (an interface's IPv4 and IPv6 prefixes are two, and a temporary
    IPv6 address shares its prefix's), from 1 in order of discovery, the same for the
    whole process. ICE agents tell by it which candidates share a path."""
    network = ipaddress.ip_network(f"{address.split('%', 1)[0]}/{prefix}", strict=False)
    return _networks.setdefault((interface, str(network)), len(_networks) + 1)


#: linux/if_addr.h flags of an IPv6 address not to gather from: its duplicate address
#: detection failed, or has not finished (it cannot be bound yet), or its preferred
#: lifetime is over (deprecated: the kernel picks it for no new connection, nor do browsers).
_IFA_F_DADFAILED, _IFA_F_DEPRECATED, _IFA_F_TENTATIVE = 0x08, 0x20, 0x40
_NOT_TO_USE = _IFA_F_DADFAILED | _IFA_F_DEPRECATED | _IFA_F_TENTATIVE


def unusable_ipv6(table: str | None = None) -> set[str]:
    """IPv6 addresses flagged deprecated, tentative or DAD-failed in `/proc/net/if_inet6`
    (Linux; `ifaddr` does not tell): address, ifindex, prefix length, scope, flags, name."""
    if table is None:
        try:
            with open("/proc/net/if_inet6") as file:
                table = file.read()
        except OSError:  # not Linux, or no IPv6
            return set()
    found = set()
    for line in table.splitlines():
        fields = line.split()
        try:
            if len(fields) >= 6 and int(fields[4], 16) & _NOT_TO_USE:
                found.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
        except ValueError:
            continue
    return found


_RTF_REJECT = 0x0200


def default_route_interfaces() -> dict[int, str]:
    """The interface of the default route per family, from the kernel's tables (Linux).

    Read, not probed: no socket is opened and nothing is sent.
    """
    found: dict[int, str] = {}
    try:
        with open("/proc/net/route") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
                    found.setdefault(socket.AF_INET, fields[0])
        with open("/proc/net/ipv6_route") as table:
            for line in table:
                fields = line.split()
                # ::/0, with or without a gateway (PPP and VPN links have none), but not
                # the kernel's own "unreachable" default (RTF_REJECT, on lo).
                if (
                    len(fields) == 10
                    and fields[0] == "0" * 32
                    and fields[1] == "00"
                    and not int(fields[8], 16) & _RTF_REJECT
                    and fields[9] != "lo"
                ):
                    found.setdefault(socket.AF_INET6, fields[9])
    except OSError:
        pass
    return found


def default_route_addresses(addresses: Sequence[LocalAddress]) -> list[LocalAddress]:
    """RFC 8828 modes 2 and 3: per family, the first address of the default route's
    interface (the one the kernel would pick as the source)."""
    routes = default_route_interfaces()
    chosen: dict[int, LocalAddress] = {}
    for address in addresses:
        if routes.get(address.family) == address.interface:
            chosen.setdefault(address.family, address)
    return [a for a in addresses if chosen.get(a.family) is a]


_cache: tuple[float, list[LocalAddress]] | None = None
_usable: dict[bool, tuple[LocalAddress, ...]] = {}  # of _cache, per link_local
_ordered: dict[bool, tuple[LocalAddress, ...]] = {}  # the same in RFC 8421 order


def local_addresses(
    *,
    link_local: bool = False,
    address_filter: AddressFilter | None = None,
    max_age: float = 1.0,
    taken_after: float | None = None,
) -> list[LocalAddress]:
    """Usable addresses in RFC 8421 order; the enumeration is reused for `max_age` s, or,
    with `taken_after` (a `time.monotonic()`), if it was taken after then: a burst of
    refused sends, each asking whether its address went, costs one walk."""
    global _cache
    now = time.monotonic()
    if (
        _cache is None
        or (taken_after is None and now - _cache[0] > max_age)
        or (taken_after is not None and _cache[0] < taken_after)
    ):
        _cache = (now, enumerate_addresses())
        _usable.clear()
        _ordered.clear()
    usable = _usable.get(link_local)
    if usable is None:  # once per enumeration; every gatherer shares it
        usable = tuple(a for a in _cache[1] if is_usable(a.address, link_local=link_local))
        _usable[link_local] = usable
        _ordered[link_local] = tuple(interleave(usable))
    if address_filter is None:
        return list(_ordered[link_local])
    # The filter is asked for each gatherer (it may answer differently from one to the
    # next), and before ordering, which alternates the families of what it keeps.
    return interleave([a for a in usable if address_filter(a.interface, a.address)])
