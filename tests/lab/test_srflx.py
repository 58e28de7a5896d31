"""Server-reflexive candidates from coturn, behind the lab's NAT, as a user runs the CLI."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from ice_engine.lab import (
    BACKUP_DOMAIN,
    CLIENT_IPV4_A,
    CLIENT_IPV4_B,
    CLIENT_IPV6,
    CLOSED_UDP_PORT,
    DEAD_IPV4,
    ROUTER_PUBLIC_IPV4,
    SERVER_IPV4,
    SERVER_IPV6,
    SRV_ONLY_DOMAIN,
    STUN_HOST,
    Lab,
)

pytestmark = pytest.mark.lab


def gather(lab: Lab, *args: str, timeout: float = 30) -> list[dict[str, Any]]:
    result = lab.run(
        [sys.executable, "-m", "ice_engine", "gather", "--json", *args], timeout_s=timeout
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def candidates(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    found = []
    for event in events:
        if (
            event["event"] == "icecandidate"
            and event["candidate"]
            and event["candidate"]["candidate"]
        ):
            fields = event["candidate"]["candidate"].split()
            if fields[7] == kind:
                found.append({"t": event["t"], "fields": fields, **event["candidate"]})
    return found


def errors(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "icecandidateerror"]


def related(candidate: dict[str, Any]) -> tuple[str, int]:
    fields = candidate["fields"]
    return fields[fields.index("raddr") + 1], int(fields[fields.index("rport") + 1])


def test_srflx_is_the_nats_public_address(lab: Lab) -> None:
    events = gather(lab, "--ice-server", f"stun:{SERVER_IPV4}")
    hosts = candidates(events, "host")
    assert {h["fields"][4] for h in hosts} == {CLIENT_IPV4_A, CLIENT_IPV4_B, CLIENT_IPV6}
    srflx = candidates(events, "srflx")
    assert len(srflx) == 2, srflx  # one per IPv4 interface
    host_ports = {(h["fields"][4], int(h["fields"][5])) for h in hosts}
    for candidate in srflx:
        assert candidate["fields"][4] == ROUTER_PUBLIC_IPV4  # the NAT's, not the host's
        assert related(candidate) in host_ports
    assert {related(c)[0] for c in srflx} == {CLIENT_IPV4_A, CLIENT_IPV4_B}
    assert not errors(events)
    assert events[-1] == {
        "event": "icecandidate",
        "candidate": None,
        "generation": 0,
        "t": events[-1]["t"],
    }


def test_ipv6_srflx_is_pruned_where_there_is_no_nat(lab: Lab) -> None:
    events = gather(lab, "--ice-server", f"stun:[{SERVER_IPV6}]")
    assert candidates(events, "srflx") == []  # the mapping equals the IPv6 base
    assert not errors(events)  # the server did answer
    assert events[-1]["candidate"] is None


def test_a_and_aaaa_names_resolve_through_the_lab_dns(lab: Lab) -> None:
    before_a = lab.dns_query_count(STUN_HOST, "A")
    before_aaaa = lab.dns_query_count(STUN_HOST, "AAAA")
    events = gather(lab, "--ice-server", f"stun:{STUN_HOST}:3478")
    assert len(candidates(events, "srflx")) == 2
    assert not errors(events)
    assert lab.dns_query_count(STUN_HOST, "A") > before_a
    assert lab.dns_query_count(STUN_HOST, "AAAA") > before_aaaa


def test_srv_gives_the_server_and_its_port(lab: Lab) -> None:
    """srv.lab.test has no address record: only its _stun._udp SRV (port 3479) leads anywhere."""
    events = gather(lab, "--ice-server", f"stun:{SRV_ONLY_DOMAIN}")
    assert not errors(events), errors(events)
    assert len(candidates(events, "srflx")) == 2
    assert lab.dns_query_count(f"_stun._udp.{SRV_ONLY_DOMAIN}", "SRV") >= 1


def test_an_srv_backup_is_asked_only_when_the_primary_never_answers(lab: Lab) -> None:
    """_stun._udp.backup.lab.test: priority 0 is a dead address (IPv4 only), priority 1
    stun.lab.test. The IPv4 bases ask the backup once the primary's share of the 2 s
    deadline (half) has passed, and `complete` comes with their srflx: no error, and no
    wait for the whole deadline (every address was asked at once: a 701 per IPv4 base
    from the dead one, and `complete` at 2 s)."""
    events = gather(lab, "--ice-server", f"stun:{BACKUP_DOMAIN}")
    assert not errors(events), errors(events)
    srflx = candidates(events, "srflx")
    assert len(srflx) == 2 and all(0.9 < c["t"] < 1.9 for c in srflx), srflx
    assert events[-1]["candidate"] is None and events[-1]["t"] < 1.9


def test_an_unknown_name_is_an_error_and_gathering_goes_on(lab: Lab) -> None:
    events = gather(
        lab, "--ice-server", "stun:nowhere.lab.test", "--ice-server", f"stun:{SERVER_IPV4}"
    )
    [error] = errors(events)
    assert error["url"] == "stun:nowhere.lab.test" and error["errorCode"] == 701
    assert error["address"] is None
    assert len(candidates(events, "srflx")) == 2
    assert events[-1]["candidate"] is None


def test_dead_server_beside_a_live_one(delayed_lab: Lab) -> None:
    events = gather(
        delayed_lab, "--ice-server", f"stun:{SERVER_IPV4}", "--ice-server", f"stun:{DEAD_IPV4}"
    )
    srflx = candidates(events, "srflx")
    assert len(srflx) == 2
    for candidate in srflx:  # about one RTT: not held back by the dead server
        assert 0.05 <= candidate["t"] < 0.15, candidate
    dead = errors(events)
    assert len(dead) == 2  # one per IPv4 base
    assert {e["errorCode"] for e in dead} == {701}
    assert {e["url"] for e in dead} == {f"stun:{DEAD_IPV4}"}
    assert {e["address"] for e in dead} == {CLIENT_IPV4_A, CLIENT_IPV4_B}
    assert events[-1]["candidate"] is None
    assert 1.9 <= events[-1]["t"] <= 2.2  # by the default 2 s deadline


def test_icmp_port_unreachable_fails_fast(delayed_lab: Lab) -> None:
    """Nothing listens on that port: the kernel's ICMP error gives a 701 in about one RTT,
    not at the 2 s deadline."""
    url = f"stun:{SERVER_IPV4}:{CLOSED_UDP_PORT}"
    events = gather(delayed_lab, "--ice-server", url)
    failures = errors(events)
    assert len(failures) == 2  # one per IPv4 base
    assert {e["errorCode"] for e in failures} == {701}
    assert all("unreachable" in e["errorText"] for e in failures)
    assert all(e["t"] < 0.5 for e in failures), failures
    assert events[-1]["candidate"] is None and events[-1]["t"] < 0.5


def test_a_name_without_srv_costs_one_dns_round_trip(delayed_lab: Lab) -> None:
    """No port: SRV is asked, and the host's A/AAAA at the same time, so a name with no
    SRV record (most) gives its srflx after 2 RTT (DNS, binding), not 3."""
    events = gather(delayed_lab, "--ice-server", f"stun:{STUN_HOST}")
    srflx = candidates(events, "srflx")
    assert len(srflx) == 2
    assert all(0.1 <= c["t"] < 0.14 for c in srflx), srflx
