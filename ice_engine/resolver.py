"""DNS resolution of ICE server URLs for the asyncio driver (dnspython).

Every gatherer asks for the same few servers, often at the same moment, so
answers are cached for their TTL in a shared resolver and identical lookups in
flight are coalesced into one query. A name the hosts file lists is taken from
there without asking DNS, as the system's resolver (and so a browser) would.

dnspython is imported by `load_dnspython`, not with this module: it takes about a
tenth of a second, which servers given by IP address never need.
"""

from __future__ import annotations

import asyncio
import bisect
import importlib
import ipaddress
import itertools
import os
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from .urls import ServerUrl, not_unicast, unmapped

if TYPE_CHECKING:
    import dns.asyncresolver
    import dns.rdata
    from dns.rdtypes.IN.SRV import SRV

NEGATIVE_TTL = 10.0
"""Seconds a name error or an empty answer is remembered."""
MAX_TTL = 3600.0
"""Cap on a positive answer's cache life, whatever its TTL says."""
CACHE_PRUNE_SIZE = 1024
"""Past this many entries, expired ones are dropped when a new one comes in."""
HOSTS_FILE = "/etc/hosts"
GRACE = 0.5
"""Seconds the other lookups of a name are waited for, once one has given addresses."""


_dnspython_loaded = False


def load_dnspython() -> None:
    """Import dnspython, once: a `Gatherer` given a server by name calls it when it is
    made, so that the first lookup, which times the server's candidates, does not pay
    for the import. (The lookups import what they use too, should a resolver be used
    alone.)"""
    global _dnspython_loaded
    if not _dnspython_loaded:
        for module in _DNSPYTHON_MODULES:
            importlib.import_module(module)
        _dnspython_loaded = True


#: What the lookups import: the resolver, its exceptions and the record types read.
_DNSPYTHON_MODULES = (
    "dns.asyncresolver",
    "dns.exception",
    "dns.resolver",
    "dns.rdtypes.IN.A",
    "dns.rdtypes.IN.AAAA",
    "dns.rdtypes.IN.SRV",
)


class ResolutionError(Exception):
    """Nothing could be resolved; the text names the name and why."""


@dataclass(frozen=True, slots=True)
class ResolvedAddress:
    host: str
    """An IP literal."""
    port: int
    family: int
    """socket.AF_INET or socket.AF_INET6."""


@dataclass(frozen=True, slots=True)
class _Answer:
    records: tuple[dns.rdata.Rdata, ...]
    problem: str
    """Why `records` is empty ("" when it is not)."""
    ttl: float


_T = TypeVar("_T")
_RecordType = Literal["A", "AAAA", "SRV"]
_Key = tuple[str, _RecordType]


class Resolver:
    """Resolves server URLs to addresses: the SRV record (RFC 5928) asked at the same time
    as the name's own A and AAAA; SRV targets, where there are any, replace those.

    A server's deadline (2 s) runs while it is looked up, so a query that is lost (DNS
    servers that drop SRV or AAAA queries are common) must not hold back the answers in
    hand until the query's own lifetime, as long: once one lookup has given addresses,
    the others of the name (its SRV record, the other family, the other SRV targets) get
    `GRACE` seconds more, then the lookup goes on without them. That is patient enough
    for an uncached answer behind a cached one; what comes later is still cached.
    """

    def __init__(
        self,
        *,
        timeout: float = 2.0,
        resolver: dns.asyncresolver.Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
        hosts: str | os.PathLike[str] | None = HOSTS_FILE,
        random: Callable[[], float] = random.random,
    ) -> None:
        """`hosts`: the hosts file to read names from first (None: DNS only); `random`:
        the draw that orders SRV targets of equal priority by weight."""
        self._timeout = timeout
        self._dns = resolver
        self._clock = clock
        self._random = random
        self._hosts = HostsFile(hosts)
        self._cache: dict[_Key, tuple[float, _Answer]] = {}
        self._in_flight: dict[_Key, asyncio.Task[_Answer]] = {}

    async def resolve(self, url: ServerUrl) -> list[ResolvedAddress]:
        """Addresses to try, in order; ResolutionError only if none was found."""
        if url.host_is_ip:
            family = socket.AF_INET6 if ":" in url.host else socket.AF_INET
            return [ResolvedAddress(url.host, url.port, family)]
        listed = self._listed(url.host, url.port)
        if listed:  # a local name: no SRV either, as getaddrinfo would not ask
            addresses, problem = _unicast(listed, url.host, "the hosts file")
            if not addresses:
                raise ResolutionError(problem)
            return addresses
        direct = asyncio.ensure_future(self._dns_addresses(url.host, url.port))
        srv_name = url.srv_name
        if srv_name is not None:
            # The host's own A/AAAA are asked at the same time as its SRV record, so that
            # a name without SRV (most of them) costs one round trip, not two.
            srv = asyncio.ensure_future(self._lookup(srv_name, "SRV"))
            try:
                await asyncio.wait((srv, direct), return_when=asyncio.FIRST_COMPLETED)
                if not srv.done():  # without the other addresses, nothing else to go on
                    grace = GRACE if direct.result()[0] else None
                    await asyncio.wait((srv,), timeout=grace)
                (answer,) = _settle(srv)
            except BaseException:
                srv.cancel()
                direct.cancel()
                raise
            if answer is not None and answer.records:
                direct.cancel()
                return await self._resolve_srv(srv_name, answer.records)
        addresses, problem = await direct
        if not addresses:
            raise ResolutionError(problem)
        return addresses

    async def _resolve_srv(
        self, srv_name: str, records: tuple[dns.rdata.Rdata, ...]
    ) -> list[ResolvedAddress]:
        targets = srv_order(records, self._random)
        if not targets:  # a lone "." target: "decidedly not available" (RFC 2782)
            raise ResolutionError(f"SRV record of {srv_name!r} names no usable target")
        lookups = [
            asyncio.ensure_future(self._addresses(t.target.to_text(omit_final_dot=True), t.port))
            for t in targets
        ]
        found = [f for f in await _with_grace(lookups, lambda f: bool(f[0])) if f is not None]
        addresses = list(dict.fromkeys(a for group, _ in found for a in group))
        if not addresses:  # (every lookup came back: none had an address to wait on)
            problems = "; ".join(problem for _, problem in found)
            raise ResolutionError(f"no SRV target of {srv_name!r} resolved: {problems}")
        return addresses

    def _listed(self, host: str, port: int) -> list[ResolvedAddress]:
        """What the hosts file says of `host`, if anything."""
        return [ResolvedAddress(a, port, family) for a, family in self._hosts.lookup(host)]

    async def _addresses(self, host: str, port: int) -> tuple[list[ResolvedAddress], str]:
        """An SRV target's addresses: from the hosts file, else from DNS."""
        listed = self._listed(host, port)
        if listed:
            return _unicast(listed, host, "the hosts file")
        return await self._dns_addresses(host, port)

    async def _dns_addresses(self, host: str, port: int) -> tuple[list[ResolvedAddress], str]:
        """IPv4 then IPv6 addresses of `host` from DNS, and why there are none if so."""
        v4 = asyncio.ensure_future(self._lookup(host, "A"))
        v6 = asyncio.ensure_future(self._lookup(host, "AAAA"))
        answers = await _with_grace([v4, v6], lambda answer: bool(answer.records))
        addresses = [
            address
            for answer in answers
            if answer is not None
            for address in _addresses_in(answer.records, port)
        ]
        if addresses:
            return _unicast(list(dict.fromkeys(addresses)), host, "DNS")
        a, aaaa = (answer.problem if answer else "" for answer in answers)  # both came
        problem = a if a == aaaa else f"A: {a}; AAAA: {aaaa}"
        return addresses, f"could not resolve {host!r}: {problem}"

    async def _lookup(self, name: str, rdtype: _RecordType) -> _Answer:
        key = (name.lower().rstrip("."), rdtype)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        task = self._in_flight.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(self._query(key))
            self._in_flight[key] = task
        # Shielded: one caller giving up must not cancel the others' lookup.
        return await asyncio.shield(task)

    async def _query(self, key: _Key) -> _Answer:
        try:
            answer = await self._answer(key)
        finally:
            if self._in_flight.get(key) is asyncio.current_task():
                del self._in_flight[key]
        if answer.ttl > 0:
            now = self._clock()
            if len(self._cache) >= CACHE_PRUNE_SIZE:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[key] = (now + answer.ttl, answer)
        return answer

    async def _answer(self, key: _Key) -> _Answer:
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        name, rdtype = key
        try:
            if self._dns is None:
                self._dns = dns.asyncresolver.Resolver()
                # resolv.conf's search list, as the system resolver and browsers use it:
                # `turn:coturn` in Kubernetes, a single-label intranet name
                self._dns.use_search_by_default = True
            result = await self._dns.resolve(
                name, rdtype, lifetime=self._timeout, raise_on_no_answer=False, search=None
            )
        except dns.resolver.NXDOMAIN:
            return _Answer((), "NXDOMAIN (no such name)", NEGATIVE_TTL)
        except dns.exception.Timeout:
            return _Answer((), f"timed out after {self._timeout:g} s", 0)
        except dns.resolver.NoNameservers:
            return _Answer((), "no name server gave an answer (SERVFAIL or REFUSED)", 0)
        except (dns.exception.DNSException, OSError) as error:
            return _Answer((), f"{type(error).__name__}: {error}", 0)
        if result.rrset is None or not result.rrset:
            ttl = min(result.chaining_result.minimum_ttl, NEGATIVE_TTL)
            return _Answer((), f"no {rdtype} record", ttl)
        ttl = min(result.chaining_result.minimum_ttl, MAX_TTL)
        return _Answer(tuple(result.rrset), "", ttl)


class HostsFile:
    """The names a hosts file gives (read again whenever it changes), and RFC 6761's
    `localhost`, which is loopback even where the file does not say so."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self._path = path
        self._stamp: tuple[float, int] | None = None
        self._names: dict[str, list[tuple[str, int]]] = {}

    def lookup(self, name: str) -> list[tuple[str, int]]:
        """(address, family) pairs, IPv4 first, in the file's order; [] if not listed."""
        name = name.lower().rstrip(".")
        self._refresh()
        listed = self._names.get(name)
        if listed is None and (name == "localhost" or name.endswith(".localhost")):
            return [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)]
        return listed or []

    def _refresh(self) -> None:
        if self._path is None:
            return
        try:
            status = os.stat(self._path)
            stamp = (status.st_mtime, status.st_size)
            if stamp != self._stamp:
                with open(self._path, encoding="utf-8", errors="replace") as file:
                    self._names = parse_hosts(file.read())
                self._stamp = stamp
        except OSError:  # no hosts file (or unreadable): DNS alone
            self._names, self._stamp = {}, None


async def _with_grace(
    lookups: Sequence[asyncio.Future[_T]], useful: Callable[[_T], bool]
) -> list[_T | None]:
    """The lookups' results, in order: all of them, unless one comes back `useful`; the
    others then get `GRACE` seconds more, and those still out are given up (None)."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Future[_T]] = set(lookups)
    until: float | None = None
    try:
        while pending and (until is None or loop.time() < until):
            timeout = None if until is None else until - loop.time()
            done, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if until is None and any(f.exception() is None and useful(f.result()) for f in done):
                until = loop.time() + GRACE
    except BaseException:
        for lookup in lookups:
            lookup.cancel()
        raise
    return _settle(*lookups)


def _settle(*lookups: asyncio.Future[_T]) -> list[_T | None]:
    """The lookups' results, None for those still out, which are no longer waited for:
    a query goes on (shielded) and its answer is cached when it comes."""
    for lookup in lookups:
        lookup.cancel()  # (a done one is left as it is)
    errors = [lookup.exception() for lookup in lookups if lookup.done()]
    for error in errors:
        if error is not None:
            raise error
    return [lookup.result() if lookup.done() else None for lookup in lookups]


def _addresses_in(records: tuple[dns.rdata.Rdata, ...], port: int) -> list[ResolvedAddress]:
    """The A and AAAA records' addresses; an IPv4-mapped AAAA stands for its IPv4 address,
    as the same literal in a URL does."""
    from dns.rdtypes.IN.A import A
    from dns.rdtypes.IN.AAAA import AAAA

    addresses = []
    for record in records:
        if isinstance(record, A):
            addresses.append(ResolvedAddress(record.address, port, socket.AF_INET))
        elif isinstance(record, AAAA):
            ip = unmapped(ipaddress.IPv6Address(record.address))
            family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            addresses.append(ResolvedAddress(str(ip), port, family))
    return addresses


def _unicast(
    addresses: list[ResolvedAddress], host: str, source: str
) -> tuple[list[ResolvedAddress], str]:
    """The addresses a server can be reached at, and why there are none if so: a name
    that resolves to 0.0.0.0 (a hosts file blocking it, say) or to a multicast address
    must not send a request there, as an IP literal like it is refused in the URL."""
    usable = [a for a in addresses if not_unicast(ipaddress.ip_address(a.host)) is None]
    if usable:
        return usable, ""
    found = ", ".join(a.host for a in addresses)
    return [], f"{host!r} resolves only to addresses that are not unicast ({found}, from {source})"


def parse_hosts(text: str) -> dict[str, list[tuple[str, int]]]:
    """hosts(5): an address, then its names; `#` starts a comment. Lines that do not
    parse, and scoped (`%zone`) addresses, are skipped."""
    names: dict[str, list[tuple[str, int]]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or "%" in fields[0]:
            continue
        try:
            address = ipaddress.ip_address(fields[0])
        except ValueError:
            continue
        address = unmapped(address)
        entry = (str(address), socket.AF_INET if address.version == 4 else socket.AF_INET6)
        for name in fields[1:]:
            listed = names.setdefault(name.lower().rstrip("."), [])
            if entry not in listed:
                listed.append(entry)
    for listed in names.values():
        listed.sort(key=lambda entry: entry[1] != socket.AF_INET)  # stable: IPv4 first
    return names


def srv_order(
    records: tuple[dns.rdata.Rdata, ...], random: Callable[[], float] = random.random
) -> list[SRV]:
    """SRV records in the order RFC 2782 asks them tried: by priority, and among equal
    priorities drawn at random in proportion to their weights, so that clients spread
    over the targets as the operator meant. "." targets and port 0 are dropped.

    A TURN server is tried at one address at a time in this order
    (`Relaying._fall_back`), and so is a STUN server (`Reflexive._unanswered`).
    """
    from dns.rdtypes.IN.SRV import SRV

    usable = [r for r in records if isinstance(r, SRV) and len(r.target) > 1 and r.port]
    ordered: list[SRV] = []
    for priority in sorted({r.priority for r in usable}):
        # Weight 0 first: such a target is picked only on a draw of exactly 0 while
        # weighted ones remain (RFC 2782).
        group = sorted((r for r in usable if r.priority == priority), key=lambda r: r.weight)
        while group:
            running = list(itertools.accumulate(r.weight for r in group))
            index = bisect.bisect_left(running, random() * running[-1])
            ordered.append(group.pop(min(index, len(group) - 1)))
    return ordered


_default: Resolver | None = None


def default_resolver() -> Resolver:
    """The process-wide resolver whose cache every gatherer shares."""
    global _default
    if _default is None:
        _default = Resolver()
    return _default
