"""The lab is what it claims: NAT, routed IPv6, delay, DNS, TLS, coturn, clean teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ice_engine.lab import (
    BACKUP_DOMAIN,
    CA_CERT_FILE,
    CLIENT_IPV4_A,
    CLIENT_IPV4_B,
    CLIENT_IPV6,
    CLOSED_UDP_PORT,
    DEAD_HOST,
    DEAD_IPV4,
    DNS_TTL_S,
    NAMESPACES,
    PASSWORD,
    REALM,
    ROUTER_INSIDE_IPV4_A,
    ROUTER_INSIDE_IPV6,
    ROUTER_PUBLIC_IPV4,
    SERVER_ALT_IPV4,
    SERVER_IPV4,
    SERVER_IPV6,
    SERVER_NS,
    SHORT_MAX_ALLOCATE_LIFETIME_S,
    SHORT_TURN_PORT,
    SRV_ONLY_DOMAIN,
    STUN_ALT_PORT,
    STUN_HOST,
    STUN_PORT,
    TLS_PORT,
    TURN_HOST,
    USERNAME,
    V4ONLY_HOST,
    Lab,
    cli,
    leases,
)
from ice_engine.lab.netns import netns_exists
from ice_engine.lab.topology import NETNS_ETC

pytestmark = pytest.mark.lab

CLIENT_TOOL = Path(__file__).with_name("client_tool.py")


def client(lab: Lab, *args: object, timeout_s: float = 30.0) -> Any:
    """Run a client_tool command inside ice-client and return its JSON output."""
    result = lab.run([sys.executable, str(CLIENT_TOOL), *map(str, args)], timeout_s=timeout_s)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def skip_if_shared() -> None:
    """Changing the delay or breaking the lab would upset another run sharing it now."""
    others = leases.other_sessions()
    if others:
        pytest.skip(f"the lab is in use by other test sessions (PIDs {others})")


def test_client_has_two_ipv4_interfaces_and_ipv6(lab: Lab) -> None:
    links = json.loads(lab.run(["ip", "-j", "addr", "show"], check=True).stdout)
    addresses = {(link["ifname"], a["local"]) for link in links for a in link["addr_info"]}
    assert {("c0", CLIENT_IPV4_A), ("c1", CLIENT_IPV4_B), ("c0", CLIENT_IPV6)} <= addresses
    v4_default = json.loads(lab.run(["ip", "-j", "route", "show", "default"], check=True).stdout)
    v6_default = json.loads(lab.run(["ip", "-j", "-6", "route", "show", "default"]).stdout)
    assert [r["gateway"] for r in v4_default] == [ROUTER_INSIDE_IPV4_A]
    assert [r["gateway"] for r in v6_default] == [ROUTER_INSIDE_IPV6]


@pytest.mark.parametrize("source", [CLIENT_IPV4_A, CLIENT_IPV4_B])
def test_ipv4_is_translated_to_the_router_public_address(lab: Lab, source: str) -> None:
    reply = client(lab, "binding", SERVER_IPV4, STUN_PORT, "--source", source)
    assert reply["mapped"][0] == ROUTER_PUBLIC_IPV4


def test_server_has_no_route_to_the_private_range(lab: Lab) -> None:
    assert lab.run(["ip", "route", "get", CLIENT_IPV4_A], netns=SERVER_NS).returncode != 0


def test_ipv6_is_routed_without_nat(lab: Lab) -> None:
    reply = client(lab, "binding", SERVER_IPV6, STUN_PORT)
    assert reply["mapped"][0] == CLIENT_IPV6


def test_rfc5780_alternate_address_answers(lab: Lab) -> None:
    reply = client(lab, "binding", SERVER_IPV4, STUN_PORT)
    assert reply["other"] == [SERVER_ALT_IPV4, STUN_ALT_PORT]
    alternate = client(lab, "binding", SERVER_ALT_IPV4, STUN_ALT_PORT)
    assert alternate["mapped"][0] == ROUTER_PUBLIC_IPV4


def test_delay_link_adds_the_configured_round_trip(lab: Lab) -> None:
    skip_if_shared()
    lab.set_delay(25)
    try:
        assert lab.delay_ms == 25
        delayed = client(lab, "binding", SERVER_IPV4, STUN_PORT, "--count", 5)["rtt_ms"]
    finally:
        lab.set_delay(0)
    undelayed = client(lab, "binding", SERVER_IPV4, STUN_PORT, "--count", 5)["rtt_ms"]
    assert 50 <= min(delayed) < 80  # two 25 ms crossings; coarse upper bound for slow CI
    assert min(undelayed) < 25


JOIN_WITH_A_DELAY = """
from ice_engine.lab import lab_session
with lab_session(delay_ms=7) as lab:
    print(lab.delay_ms)
"""


def test_a_session_that_changes_the_delay_puts_it_back(lab: Lab) -> None:
    """`ice-engine demo` (lab_session(25), in a process of its own) left a lab it had
    joined at 25 ms. (A process of its own, as sessions are: a lease is per process.)"""
    skip_if_shared()
    assert lab.delay_ms == 0
    joined = subprocess.run(
        [sys.executable, "-c", JOIN_WITH_A_DELAY], capture_output=True, text=True, timeout=120
    )
    assert joined.returncode == 0, joined.stderr
    assert joined.stdout.strip() == "7.0"
    assert lab.delay_ms == 0  # and this session keeps the lab up


@pytest.mark.parametrize(
    ("name", "rdtype", "expected"),
    [
        (STUN_HOST, "A", [SERVER_IPV4]),
        (STUN_HOST, "AAAA", [SERVER_IPV6]),
        (TURN_HOST, "A", [SERVER_IPV4]),
        (TURN_HOST, "AAAA", [SERVER_IPV6]),
        (V4ONLY_HOST, "A", [SERVER_IPV4]),
        (DEAD_HOST, "A", [DEAD_IPV4]),
        ("_stun._udp.lab.test", "SRV", ["0 10 3478 stun.lab.test."]),
        ("_turn._udp.lab.test", "SRV", ["0 10 3478 turn.lab.test."]),
        ("_turn._tcp.lab.test", "SRV", ["0 10 3478 turn.lab.test."]),
        ("_stuns._tcp.lab.test", "SRV", ["0 10 5349 turn.lab.test."]),
        ("_turns._tcp.lab.test", "SRV", ["0 10 5349 turn.lab.test."]),
        (f"_stun._udp.{SRV_ONLY_DOMAIN}", "SRV", ["0 10 3479 stun.lab.test."]),
        (
            f"_turn._udp.{BACKUP_DOMAIN}",
            "SRV",
            ["0 10 3478 dead.lab.test.", "1 10 3478 turn.lab.test."],
        ),
        (
            f"_stun._udp.{BACKUP_DOMAIN}",
            "SRV",
            ["0 10 3478 dead.lab.test.", "1 10 3478 stun.lab.test."],
        ),
    ],
)
def test_dns_answers_in_the_client_namespace(
    lab: Lab, name: str, rdtype: str, expected: list[str]
) -> None:
    reply = client(lab, "resolve", name, rdtype)
    assert reply["nameservers"] == [SERVER_IPV4]
    assert reply.get("answers") == expected, reply
    assert reply["ttl"] == DNS_TTL_S


@pytest.mark.parametrize(("name", "rdtype"), [(V4ONLY_HOST, "AAAA"), (SRV_ONLY_DOMAIN, "A")])
def test_dns_has_no_record_where_none_is_configured(lab: Lab, name: str, rdtype: str) -> None:
    assert client(lab, "resolve", name, rdtype)["error"] == "NoAnswer"


def test_dns_queries_are_logged(lab: Lab) -> None:
    before = lab.dns_query_count(TURN_HOST, "AAAA")
    client(lab, "resolve", TURN_HOST, "AAAA")
    assert lab.dns_query_count(TURN_HOST, "AAAA") == before + 1


@pytest.mark.parametrize("host", [TURN_HOST, STUN_HOST, SERVER_IPV4, SERVER_IPV6])
def test_tls_verifies_with_the_lab_ca(lab: Lab, host: str) -> None:
    assert client(lab, "tls", host, TLS_PORT, "--cafile", CA_CERT_FILE)["ok"]
    untrusted = client(lab, "tls", host, TLS_PORT)  # system CAs only
    assert not untrusted["ok"]
    assert untrusted["error"].startswith("verify")


@pytest.mark.parametrize("server", [SERVER_IPV4, SERVER_IPV6])
def test_turn_allocate_without_credentials_is_challenged(lab: Lab, server: str) -> None:
    challenge = client(lab, "allocate", server, STUN_PORT)["challenge"]
    assert challenge["error"][0] == 401
    assert challenge["realm"] == REALM
    assert challenge["has_nonce"]


def test_turn_allocates_a_relay_with_the_lab_credentials(lab: Lab) -> None:
    reply = client(lab, "allocate", SERVER_IPV4, STUN_PORT, "--username", USERNAME,
                   "--password", PASSWORD)  # fmt: skip
    [allocation] = reply["allocations"]
    assert allocation["error"] is None
    assert allocation["relayed"][0] == SERVER_IPV4


def test_short_turn_instance_caps_lifetime_and_quota(lab: Lab) -> None:
    skip_if_shared()  # the quota is per user: another run's allocation would count too
    reply = client(lab, "allocate", SERVER_IPV4, SHORT_TURN_PORT, "--username", USERNAME,
                   "--password", PASSWORD, "--count", 2)  # fmt: skip
    first, second = reply["allocations"]
    assert first["lifetime"] == SHORT_MAX_ALLOCATE_LIFETIME_S
    assert second["error"][0] == 486


def test_closed_port_is_refused_and_dead_address_is_silent(lab: Lab) -> None:
    assert client(lab, "udp-probe", SERVER_IPV4, CLOSED_UDP_PORT)["result"] == "refused"
    assert client(lab, "udp-probe", DEAD_IPV4, STUN_PORT, "--timeout", 0.5)["result"] == "timeout"


def test_cli_status_reports_a_healthy_lab(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status"]) == 0
    assert capsys.readouterr().out.startswith("lab: up")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # zombies wait for a (possibly slow) init to reap them


def test_up_reuses_a_healthy_lab_and_rebuilds_a_stale_one(lab: Lab) -> None:
    skip_if_shared()
    assert lab.up() is False
    coturn_pid = lab.status().daemons["turnserver"]
    assert coturn_pid is not None
    os.kill(coturn_pid, signal.SIGKILL)  # a crash the lab did not see coming
    _wait_until(lambda: lab.status().daemons["turnserver"] is None)
    assert not lab.is_up()
    assert lab.up() is True
    assert lab.is_up()


def test_teardown_leaves_no_namespace_and_no_lab_process(lab: Lab) -> None:
    skip_if_shared()
    was_pinned = leases.pinned()
    pids = {pid for pid in lab.status().daemons.values() if pid is not None}
    for netns in NAMESPACES:
        pids |= _netns_pids(netns)
    assert len(pids) >= 4  # delay link, two coturns, dnsmasq
    try:
        lab.down()
        assert not any(netns_exists(netns) for netns in NAMESPACES)
        assert not any((NETNS_ETC / netns).exists() for netns in NAMESPACES)
        assert [pid for pid in pids if alive(pid)] == []
        assert not lab.status().exists
    finally:
        lab.up(pin=was_pinned)  # later tests in this session still get their lab


def _netns_pids(netns: str) -> set[int]:
    listing = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return {int(pid) for pid in listing.stdout.split()}


def _wait_until(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
