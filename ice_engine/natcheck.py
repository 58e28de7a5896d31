"""NAT behaviour discovery (RFC 5780) with asyncio: `discover_nat` resolves the server,
binds a UDP socket and runs `rfc5780.NatCheck` over it, trying the server's next address
when one never answers. The classification itself, and its results, are `rfc5780.py`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
from typing import NamedTuple

from . import icmperrors
from .resolver import ResolutionError, ResolvedAddress, Resolver, default_resolver
from .rfc5780 import (
    CHANGE_IP,
    CHANGE_PORT,
    Address,
    Datagram,
    FilteringBehaviour,
    MappingBehaviour,
    NatBehaviour,
    NatCheck,
    Probe,
)
from .streams import describe
from .transaction import positive_seconds
from .urls import hostport, not_unicast, parse_server_url, unmapped

__all__ = [
    "CHANGE_IP",
    "CHANGE_PORT",
    "Datagram",
    "FilteringBehaviour",
    "MappingBehaviour",
    "NatBehaviour",
    "NatCheck",
    "NatCheckError",
    "Probe",
    "discover_nat",
]


class NatCheckError(Exception):
    """The check could not run: the server's name did not resolve, or none of its
    addresses answered."""


async def discover_nat(
    server: str,
    *,
    local_address: str | None = None,
    timeout: float = 3.0,
    local_port: int = 0,
    resolver: Resolver | None = None,
) -> NatBehaviour:
    """Classify the NAT between this host and a `stun:` server (RFC 5780), over UDP.

    `local_address` picks the local IP to probe from (default: the one the route to the
    server uses) and `local_port` the port (default: any); `timeout` bounds each phase
    of the tests, in seconds; `resolver` looks the server's name up (default: the shared
    one, which reads the hosts file, then DNS).

    The server's addresses (its SRV targets by priority, each name's IPv4 then IPv6
    addresses; only those of `local_address`'s IP version when it is given) are tried in
    turn, each from a socket of its own, until one answers test I; that one runs the
    other tests. See `_first_to_answer` for the time this takes.

    Raises ValueError on bad input (the URL, the address, the port, a timeout that is
    no positive number of seconds, an IP-literal server of the other IP version than
    `local_address`), NatCheckError when the server's name does
    not resolve or none of its addresses answers, and OSError when the socket cannot be
    bound (an address that is not local, a port in use). A request the socket refuses
    to send fails its test only.
    """
    timeout = positive_seconds(timeout, "timeout")
    if not (isinstance(local_port, int) and 0 <= local_port <= 0xFFFF):
        raise ValueError(f"local port {local_port!r} is not in 0..65535")
    url = parse_server_url(server)
    if url.scheme != "stun":
        raise ValueError(f"NAT discovery needs a stun: URL (UDP), not {server!r}")
    local = None if local_address is None else _local_ip(local_address)
    if (
        local is not None
        and url.host_is_ip
        and (":" in url.host) != (local.family == socket.AF_INET6)
    ):
        raise ValueError(
            f"server {url.host} and local address {local_address} are not of one IP version"
        )
    try:
        resolved = await (resolver or default_resolver()).resolve(url)
    except ResolutionError as error:
        raise NatCheckError(str(error)) from None
    targets = [a for a in resolved if local is None or a.family == local.family]
    if not targets:
        raise NatCheckError(
            f"{url.host!r} has no address of the family of local address {local_address}"
        )
    return await _first_to_answer(url.host, targets, local, local_port, timeout)


async def _first_to_answer(
    host: str,
    targets: list[ResolvedAddress],
    local: _LocalIp | None,
    local_port: int,
    timeout: float,
) -> NatBehaviour:
    """The check against each address in turn, until one answers test I.

    Each address gets the whole `timeout` for test I, not a share of it: a backup is no
    nearer than the primary, and a share would shrink with every address before it (a
    third of a second each for three, two transmissions). An ICMP error or a refused
    send ends an address's turn at once, so only silent addresses cost a `timeout`: past
    the lookup, a run takes at most (silent addresses + 3 phases) x `timeout`, and names
    have few addresses.
    """
    failures: list[tuple[Address, str | None]] = []
    for target in targets:
        result = await _check_one(target, local, local_port, timeout)
        if isinstance(result, NatBehaviour):
            notes = [
                f"{_capitalized(_failure_text(f, timeout))}, so the next address was tried."
                for f in failures
            ]
            return dataclasses.replace(result, notes=(*notes, *result.notes))
        failures.append(((target.host, target.port), result))
    if len(failures) == 1:
        raise NatCheckError(_failure_text(failures[0], timeout))
    tried = "; ".join(_failure_text(failure, timeout) for failure in failures)
    raise NatCheckError(f"every address of {host} failed: {tried}")


def _failure_text(failure: tuple[Address, str | None], timeout: float) -> str:
    """Why an address gave way: `no answer from A within 1 s`, `no answer from A: ICMP
    port unreachable`, `A answered 500 Try Later` (an error response: an answer), or
    `A answered with a success response without a mapped address`."""
    address, why = failure
    text = hostport(*address)
    if not why:
        return f"no answer from {text} within {timeout:g} s"
    if why[:1].isdigit():
        return f"{text} answered {why}"
    if why.startswith(("malformed response", "success response", "error response")):
        return f"{text} answered with a {why}"
    return f"no answer from {text}: {why}"


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


async def _check_one(
    target: ResolvedAddress, local: _LocalIp | None, local_port: int, timeout: float
) -> NatBehaviour | str | None:
    """The check against one address if it answered test I, else why not (None: no
    answer within `timeout`)."""
    server = (target.host, target.port)
    if local is None:
        try:
            local = _LocalIp(_route_source(target.family, server), target.family)
        except OSError as error:  # no route to this address (or to its IP version)
            return f"could not be sent: {describe(error)}"
    with socket.socket(target.family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(local.sockaddr(local_port))
        name = sock.getsockname()
        result = await _drive(sock, server, (name[0], name[1]), timeout)
    if result.answered:
        return result
    return result.probes[0].error if result.probes else None


class _LocalIp(NamedTuple):
    """The local IP to bind: `host` without a zone, which bind() takes as `scope_id`."""

    host: str
    family: int
    scope_id: int = 0

    def sockaddr(self, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
        if self.family == socket.AF_INET6:
            return self.host, port, 0, self.scope_id
        return self.host, port


def _local_ip(text: str) -> _LocalIp:
    """`local_address` as the socket binds it. An IPv4-mapped address (::ffff:a.b.c.d)
    is the IPv4 address it carries, as in a server URL: an IPv6 socket bound to it could
    not reach an IPv4 server, nor would its mapping compare equal."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None
    ip = unmapped(ip)
    flaw = not_unicast(ip)
    if flaw == "unspecified":  # the mapping is compared with it: it must be one
        raise ValueError(f"local address must be a specific one, not {text}")
    if flaw is not None:
        raise ValueError(f"local address must be a unicast one, not {text}")
    if isinstance(ip, ipaddress.IPv4Address):
        return _LocalIp(str(ip), socket.AF_INET)
    return _LocalIp(str(ipaddress.IPv6Address(int(ip))), socket.AF_INET6, _scope_id(ip, text))


def _scope_id(ip: ipaddress.IPv6Address, text: str) -> int:
    """The interface index of the address's `%zone` (a name or a number), 0 for none.

    bind() reads the zone only from the address tuple's scope id, never from the text,
    and refuses a link-local address without one (EINVAL): both are caught here, as bad
    input, rather than as a failure to bind."""
    zone = ip.scope_id
    if not zone:
        if ip.is_link_local:
            raise ValueError(f"link-local address {text} needs its interface (%name)")
        return 0
    try:
        if not zone.isdigit():
            return socket.if_nametoindex(zone)
        socket.if_indextoname(int(zone))  # only to check that there is one
        return int(zone)
    except (OSError, OverflowError, ValueError):  # ValueError: a NUL in the name
        raise ValueError(f"no network interface {zone!r} (of local address {text})") from None


def _route_source(family: int, destination: Address) -> str:
    """The local IP the kernel would send from: a connect() on a UDP socket sends nothing."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(destination)
        host: str = probe.getsockname()[0]
    return host


async def _drive(
    sock: socket.socket, server: Address, local: Address, timeout: float
) -> NatBehaviour:
    loop = asyncio.get_running_loop()
    check = NatCheck(server, local, timeout=timeout)
    icmperrors.enable(sock)  # a closed port fails its test at once, not at the deadline

    def send(datagrams: list[Datagram]) -> None:
        for datagram in datagrams:
            try:
                sock.sendto(datagram.data, datagram.address)
            except OSError as error:
                if error.errno in icmperrors.TRANSIENT_SEND_ERRORS:
                    continue  # a full buffer: as if lost, the retransmission goes later
                # maybe an ICMP error another test's request caused: that test fails
                again = icmperrors.send_again(sock, datagram.data, datagram.address, unreachable)
                if again is not None and again.errno not in icmperrors.TRANSIENT_SEND_ERRORS:
                    send(check.send_failed(datagram, describe(again), loop.time()))

    def unreachable() -> bool:
        """Fail the tests whose requests the ICMP errors queued on the socket quote."""
        errors = icmperrors.read(sock, 20)
        for quoted, _destination, cause in errors:
            send(check.unreachable(quoted, cause, loop.time()))
        return bool(errors)

    send(check.start(loop.time()))
    while not check.done:
        timer = check.timer
        wait = None if timer is None else max(timer - loop.time(), 0.0)
        try:
            data, source = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), wait)
        except TimeoutError:
            send(check.poll(loop.time()))
            continue
        except OSError:  # an ICMP error queued on the socket
            if not unreachable():  # elsewhere than on Linux: the transaction will time out
                await asyncio.sleep(0.01)
            send(check.poll(loop.time()))
            continue
        send(check.receive(data, source, loop.time()))
    return check.result()
