"""dnsmasq as the lab's authoritative-only DNS for ``lab.test``.

It answers only from its own records (no upstream, no /etc/hosts) with a short TTL and
logs every query to a file, so tests can tell a cached lookup from a fresh one.
"""

from __future__ import annotations

import re
from pathlib import Path

from ice_engine.lab import topology as t
from ice_engine.lab.processes import Daemon

NAME = "dnsmasq"

# (service label, target host, port, priority)
SRV_RECORDS = (
    (f"_stun._udp.{t.DOMAIN}", t.STUN_HOST, t.STUN_PORT, 0),
    (f"_turn._udp.{t.DOMAIN}", t.TURN_HOST, t.STUN_PORT, 0),
    (f"_turn._tcp.{t.DOMAIN}", t.TURN_HOST, t.STUN_PORT, 0),
    (f"_stuns._tcp.{t.DOMAIN}", t.TURN_HOST, t.TLS_PORT, 0),
    (f"_turns._tcp.{t.DOMAIN}", t.TURN_HOST, t.TLS_PORT, 0),
    (f"_stun._udp.{t.SRV_ONLY_DOMAIN}", t.STUN_HOST, t.STUN_ALT_PORT, 0),
    # A primary that never answers, and a backup (RFC 2782: lower priority, used after).
    (f"_turn._udp.{t.BACKUP_DOMAIN}", t.DEAD_HOST, t.STUN_PORT, 0),
    (f"_turn._udp.{t.BACKUP_DOMAIN}", t.TURN_HOST, t.STUN_PORT, 1),
    (f"_stun._udp.{t.BACKUP_DOMAIN}", t.DEAD_HOST, t.STUN_PORT, 0),
    (f"_stun._udp.{t.BACKUP_DOMAIN}", t.STUN_HOST, t.STUN_PORT, 1),
)

HOST_RECORDS = (
    (t.STUN_HOST, (t.SERVER_IPV4, t.SERVER_IPV6)),
    (t.TURN_HOST, (t.SERVER_IPV4, t.SERVER_IPV6)),
    (t.V4ONLY_HOST, (t.SERVER_IPV4,)),
    (t.DEAD_HOST, (t.DEAD_IPV4,)),
)

_QUERY_LINE = re.compile(r"query\[(?P<qtype>\w+)\] (?P<name>\S+) from (?P<client>\S+)")


def config(state_dir: Path) -> str:
    lines = [
        "no-resolv",
        "no-hosts",
        "no-poll",
        "bind-interfaces",
        f"listen-address={t.DNS_SERVER_IPV4}",
        f"listen-address={t.DNS_SERVER_IPV6}",
        f"port={t.DNS_PORT}",
        f"local=/{t.DOMAIN}/",
        f"local-ttl={t.DNS_TTL_S}",
        f"auth-ttl={t.DNS_TTL_S}",
        *(f"host-record={name},{','.join(addrs)}" for name, addrs in HOST_RECORDS),
        *(f"srv-host={srv},{target},{port},{prio},10" for srv, target, port, prio in SRV_RECORDS),
        "log-queries",
        f"log-facility={query_log(state_dir)}",
        "pid-file=",
        "user=root",
    ]
    return "\n".join(lines) + "\n"


def query_log(state_dir: Path) -> Path:
    return state_dir / "dnsmasq.log"


def daemon(state_dir: Path) -> Daemon:
    conf = state_dir / "dnsmasq.conf"
    conf.write_text(config(state_dir))
    argv = ("dnsmasq", "--keep-in-foreground", f"--conf-file={conf}")
    return Daemon(name=NAME, argv=argv, netns=t.SERVER_NS)


def logged_queries(state_dir: Path) -> list[tuple[str, str, str]]:
    """Every query dnsmasq has logged, oldest first, as (qtype, name, client address)."""
    try:
        text = query_log(state_dir).read_text(errors="replace")
    except OSError:
        return []
    return [
        (m["qtype"], m["name"], m["client"])
        for m in map(_QUERY_LINE.search, text.splitlines())
        if m
    ]
