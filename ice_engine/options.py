"""What a `Gatherer` accepts, checked when it is given.

A wrong option fails at the call with an error that names it (ValueError for a bad value,
TypeError for a wrong type) rather than later, deep in gathering, as a puzzle.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from typing import TypeGuard

from .credentials import Credentials
from .interfaces import IpHandling
from .resolver import Resolver
from .transaction import Timing
from .urls import packed_ip, packed_not_unicast

__all__ = ["check_gatherer_options", "check_mids", "is_port", "peer_address", "peer_list"]

_POLICIES = ("all", "relay")
#: RFC 4566 token-char: an a=mid value is an identification-tag, a token (RFC 5888, 8843).
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`{|}~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_LISTS = (tuple, list)  # checked before Sequence, an ABC: 0.1 µs
_CALLABLE_OPTIONS = (
    "address_filter",
    "on_relayed",
    "on_datagram",
    "on_relay_failure",
    "on_tcp_connection",
)
_OPTION_TYPES: dict[str, type] = {
    "timing": Timing,
    "credentials": Credentials,
    "ssl_context": ssl.SSLContext,
}


def is_port(value: object) -> bool:
    return _is_int(value) and 1 <= value <= 65535


def peer_address(peer: tuple[str, int]) -> tuple[str, int]:
    """(IP literal, port), the IP in the form the kernel reports sources in; else ValueError.

    A peer is one host: an unspecified, multicast or broadcast address is refused, by
    the same rule as a server URL (`packed_not_unicast`, on the packed bytes: this runs at
    every send of a data path). An IPv4-mapped address (::ffff:a.b.c.d) is the IPv4
    address it carries, as in a URL: IPv4 bases reach it, and IPv6 sockets (IPv6 only)
    cannot."""
    try:
        host, port = peer
        family, packed = packed_ip(host)
        host = socket.inet_ntop(family, packed)
    except (TypeError, ValueError, OSError):
        raise ValueError(f"peer must be (IP address, port), not {peer!r}") from None
    if not is_port(port):
        raise ValueError(f"peer port must be 1-65535, not {port!r}")
    if packed_not_unicast(packed) is not None:
        raise ValueError(f"peer {peer[0]} is not a unicast address")
    return host, port


def peer_list(peers: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """`peer_address` of each peer; a lone pair (a common slip) is explained."""
    wanted = f"peers must be a list of (IP address, port) pairs, not {peers!r}"
    if isinstance(peers, str) or (isinstance(peers, tuple) and peers and isinstance(peers[0], str)):
        raise ValueError(wanted)
    try:
        listed = list(peers)
    except TypeError:
        raise TypeError(wanted) from None
    return [peer_address(peer) for peer in listed]


def check_gatherer_options(
    *,
    mids: Sequence[str],
    components: int,
    ice_transport_policy: str,
    ip_handling: IpHandling | int,
    pool_size: int,
    shared_port: int | None,
    port_range: tuple[int, int] | None,
    timing: Timing | None = None,
    credentials: Credentials | None = None,
    ssl_context: ssl.SSLContext | None = None,
    resolver: Resolver | None = None,
    address_filter: object = None,
    on_relayed: object = None,
    on_datagram: object = None,
    on_relay_failure: object = None,
    on_tcp_connection: object = None,
    link_local: bool = False,
    dual_stack_relays: bool = False,
    continual: bool = False,
    tcp_candidates: bool = False,
    mdns: bool = False,
) -> IpHandling:
    """Check the constructor's options; the RFC 8828 mode.

    Flags must be bools: pure Python would take a truthy string as True, and the compiled
    core would refuse it with a message that names no option. Every option is a named
    parameter, checked in one expression: a `**kwargs` (CPython matches each keyword in it
    against every name by string comparison) and a loop over it took twice as long.
    """
    check_mids(mids)
    if not (
        isinstance(link_local, bool)
        and isinstance(dual_stack_relays, bool)
        and isinstance(continual, bool)
        and isinstance(tcp_candidates, bool)
        and isinstance(mdns, bool)
    ):
        _check_flags(
            link_local=link_local,
            dual_stack_relays=dual_stack_relays,
            continual=continual,
            tcp_candidates=tcp_candidates,
            mdns=mdns,
        )
    if not (
        (timing is None or isinstance(timing, Timing))
        and (credentials is None or isinstance(credentials, Credentials))
        and (ssl_context is None or isinstance(ssl_context, ssl.SSLContext))
        and (resolver is None or isinstance(resolver, Resolver))
        and (address_filter is None or callable(address_filter))
        and (on_relayed is None or callable(on_relayed))
        and (on_datagram is None or callable(on_datagram))
        and (on_relay_failure is None or callable(on_relay_failure))
        and (on_tcp_connection is None or callable(on_tcp_connection))
    ):
        _check_types(
            timing=timing,
            credentials=credentials,
            ssl_context=ssl_context,
            resolver=resolver,
            address_filter=address_filter,
            on_relayed=on_relayed,
            on_datagram=on_datagram,
            on_relay_failure=on_relay_failure,
            on_tcp_connection=on_tcp_connection,
        )
    if on_tcp_connection is not None and not tcp_candidates:
        raise ValueError("on_tcp_connection needs tcp_candidates=True: there is nothing to accept")
    if ice_transport_policy not in _POLICIES:
        raise ValueError(
            f"ice_transport_policy must be 'all' or 'relay', not {ice_transport_policy!r}"
        )
    try:
        if not _is_int(ip_handling):  # IntEnum takes True as mode 1, and 2.0 as mode 2
            raise ValueError
        mode = IpHandling(ip_handling)
    except ValueError:
        raise ValueError(f"ip_handling must be an RFC 8828 mode 1-4, not {ip_handling!r}") from None
    if not _is_int(pool_size) or not 0 <= pool_size <= 255:
        raise ValueError(f"pool_size must be an integer 0-255, not {pool_size!r}")
    if shared_port is not None:
        if not is_port(shared_port):
            raise ValueError(f"shared_port must be 1-65535, not {shared_port!r}")
        if len(mids) != 1 or components != 1:
            raise ValueError(
                "shared_port serves one transport with one component (bundle and "
                "rtcp-mux): on one port, further ones would share one transport address"
            )
    if port_range is not None and not (
        isinstance(port_range, tuple | list)
        and len(port_range) == 2
        and all(is_port(port) for port in port_range)
        and port_range[0] <= port_range[1]
    ):
        raise ValueError(f"port_range must be (low, high) within 1-65535, not {port_range!r}")
    if not _is_int(components) or not 1 <= components <= 256:
        raise ValueError(f"components must be an integer 1-256, not {components!r}")
    return mode


def _is_int(value: object) -> TypeGuard[int]:
    """An int and not a bool (True is an int, and would pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_mids(mids: Sequence[str]) -> None:
    """Each mid is a str and an SDP token: it goes into sdpMid and a=mid verbatim, where an
    empty or spaced one would break the SDP."""
    if not isinstance(mids, _LISTS) and (isinstance(mids, str) or not isinstance(mids, Sequence)):
        raise TypeError(f"mids must be a sequence of strings, not {type(mids).__name__}")
    if not mids:
        raise ValueError("mids must be a non-empty sequence of strings, e.g. ['0', '1']")
    for mid in mids:
        if not isinstance(mid, str):
            raise TypeError(f"mids must hold strings, not {type(mid).__name__} ({mid!r})")
        if not mid or not _TOKEN_CHARS.issuperset(mid):
            raise ValueError(
                f"mid {mid!r} is not an SDP token: one or more of A-Z a-z 0-9 "
                "!#$%&'*+-.^_`{|}~ (no spaces or control characters)"
            )
    if len(mids) > 1 and len(set(mids)) != len(mids):
        repeated = next(mid for index, mid in enumerate(mids) if mid in mids[:index])
        raise ValueError(f"mids must be distinct: {repeated!r} is given twice")


def _check_flags(**flags: object) -> None:
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, not {type(value).__name__}")


def _check_types(**options: object) -> None:
    """TypeError now for an option of the wrong type, rather than a puzzling one later."""
    for name, value in options.items():
        if value is None:
            continue
        if name in _CALLABLE_OPTIONS:
            if not callable(value):
                raise TypeError(f"{name} must be callable, not {type(value).__name__}")
        elif name == "resolver":
            if not isinstance(value, Resolver):
                raise TypeError(
                    f"resolver must be an ice_engine.resolver.Resolver, not "
                    f"{type(value).__name__} (a dnspython resolver goes inside one: "
                    f"Resolver(resolver=...))"
                )
        elif not isinstance(value, _OPTION_TYPES[name]):
            expected = _OPTION_TYPES[name].__name__
            raise TypeError(f"{name} must be of type {expected}, not {type(value).__name__}")
