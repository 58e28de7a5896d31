"""`ice-engine nat` (RFC 5780) behind the lab's NAT, as a user runs it, against coturn.

The router's MASQUERADE keeps a socket's port for every destination (endpoint-independent
mapping) and conntrack lets in only answers from where the client sent to
(address-and-port-dependent filtering). A `MASQUERADE --random-fully` rule for the
client's second address makes a NAT that maps every destination anew.

The probes bind a port below 1024. The lab may be busy with other sessions, whose
thousands of masqueraded flows hold ephemeral ports of the router's address; where the
client's port is already taken towards a server, the NAT picks another port for that
destination only, and the mapping looks address-dependent. MASQUERADE keeps ports below
1024 in that range, where nobody else's flows are. Our own earlier probes are there,
though: a flow lives on in conntrack for 30-120 s with the mapping it was given, and a
probe from the same port then reuses it (an earlier probe's port kept under
`--random-fully`, or a random mapping outside it: 3 of 42 runs in a row failed). So
each probe takes a port that no flow through the router uses.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ice_engine.lab import (
    BACKUP_DOMAIN,
    CLIENT_IPV4_A,
    CLIENT_IPV4_B,
    CLIENT_IPV6,
    CLIENT_NS,
    DEAD_IPV4,
    ROUTER_NS,
    ROUTER_PUBLIC_IPV4,
    SERVER_ALT_IPV4,
    SERVER_IPV4,
    SERVER_IPV6,
    STUN_ALT_PORT,
    STUN_HOST,
    STUN_PORT,
    V4ONLY_HOST,
    Lab,
    leases,
)
from ice_engine.lab.topology import CLIENT_DEV_A, ROUTER_LINK_DEV
from tests.lab.test_faults import iptables_rule

pytestmark = pytest.mark.lab

# Only UDP from the client's second address, so nothing else in the lab is touched.
RANDOM_FULLY = (
    "POSTROUTING",
    "-s",
    CLIENT_IPV4_B,
    "-o",
    ROUTER_LINK_DEV,
    "-p",
    "udp",
    "-j",
    "MASQUERADE",
    "--random-fully",
)


def nat(
    lab: Lab, *args: str, netns: str = CLIENT_NS, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """`ice-engine nat` from a free port below 1024 (see above), in the client by default."""
    for _ in range(5):
        port = str(_unused_port(lab))
        argv = [sys.executable, "-m", "ice_engine", "nat", "--local-port", port, *args]
        result = lab.run(argv, netns=netns, timeout_s=timeout)
        if "in use" not in result.stderr:
            break
    return result


def _unused_port(lab: Lab) -> int:
    """A port of 600-999 that no flow through the router has, as a source or a mapping
    (`/proc/net/nf_conntrack` of the router; without it, any port of the range)."""
    table = lab.run(["cat", "/proc/net/nf_conntrack"], netns=ROUTER_NS, timeout_s=20).stdout
    used = {int(port) for port in re.findall(r"[sd]port=(\d+)", table)}
    return random.choice([port for port in range(600, 1000) if port not in used])


def nat_json(lab: Lab, *args: str, netns: str = CLIENT_NS) -> dict[str, Any]:
    result = nat(lab, "--json", "--timeout", "1", *args, netns=netns)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def test_the_lab_nat_maps_independently_and_filters_by_address_and_port(lab: Lab) -> None:
    report = nat_json(lab, "--server", f"stun:{SERVER_IPV4}")
    assert report["rfc5780"] is True
    assert report["otherAddress"] == f"{SERVER_ALT_IPV4}:{STUN_ALT_PORT}"
    assert report["server"] == f"{SERVER_IPV4}:{STUN_PORT}"
    assert host(report["local"]) == CLIENT_IPV4_A
    assert host(report["mapped"]) == ROUTER_PUBLIC_IPV4
    assert report["mapping"] == "endpoint-independent"
    assert report["filtering"] == "address-and-port-dependent"
    assert report["notes"] == []
    probes = {p["name"]: p for p in report["probes"]}
    # coturn answers them (see the next test), but the NAT lets nothing in:
    assert not probes["filtering test II"]["answered"]
    assert not probes["filtering test III"]["answered"]
    assert probes["mapping test II"]["mapped"] == report["mapped"]
    assert probes["mapping test II"]["source"] == f"{SERVER_ALT_IPV4}:{STUN_PORT}"


def test_without_the_nat_coturn_answers_every_change_request(lab: Lab) -> None:
    """From the router's public address nothing translates or filters: what the client
    sees is the NAT's doing, not coturn ignoring CHANGE-REQUEST."""
    report = nat_json(lab, "--server", f"stun:{SERVER_IPV4}", netns=ROUTER_NS)
    assert host(report["local"]) == ROUTER_PUBLIC_IPV4
    assert report["mapping"] == "no NAT"
    assert report["filtering"] == "endpoint-independent"
    probes = {p["name"]: p for p in report["probes"]}
    assert probes["filtering test II"]["source"] == f"{SERVER_ALT_IPV4}:{STUN_ALT_PORT}"


def test_from_the_second_address_and_by_name(lab: Lab) -> None:
    report = nat_json(lab, "--server", f"stun:{STUN_HOST}", "--local-address", CLIENT_IPV4_B)
    assert host(report["local"]) == CLIENT_IPV4_B
    assert host(report["mapped"]) == ROUTER_PUBLIC_IPV4
    assert report["server"] == f"{SERVER_IPV4}:{STUN_PORT}"
    assert report["mapping"] == "endpoint-independent"
    assert report["filtering"] == "address-and-port-dependent"


def test_an_ipv4_mapped_local_address_probes_from_the_ipv4_one(lab: Lab) -> None:
    report = nat_json(
        lab, "--server", f"stun:{SERVER_IPV4}", "--local-address", f"::ffff:{CLIENT_IPV4_B}"
    )
    assert host(report["local"]) == CLIENT_IPV4_B
    assert host(report["mapped"]) == ROUTER_PUBLIC_IPV4
    assert report["mapping"] == "endpoint-independent"


def test_ipv6_is_routed_without_nat(lab: Lab) -> None:
    report = nat_json(lab, "--server", f"stun:[{SERVER_IPV6}]")
    assert report["mapping"] == "no NAT"
    assert host(report["mapped"]) == CLIENT_IPV6
    assert report["mapped"] == report["local"]


@pytest.mark.parametrize("zone", ["name", "index"])
def test_a_scoped_link_local_address_is_bound(lab: Lab, zone: str) -> None:
    """`--local-address fe80::…%c0` failed "cannot bind …: Invalid argument": the zone
    went to bind() in the text, not as the scope id. Bound, its request leaves; the router
    will not forward a link-local source, and says so at once."""
    line = lab.run(["ip", "-6", "-o", "addr", "show", "dev", CLIENT_DEV_A, "scope", "link"])
    index, address = re.findall(r"^(\d+):.*inet6 (fe80::[0-9a-f:]+)/", line.stdout, re.M)[0]
    scoped = f"{address}%{CLIENT_DEV_A if zone == 'name' else index}"
    result = nat(
        lab, "--server", f"stun:[{SERVER_IPV6}]", "--timeout", "1", "--local-address", scoped
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"ice-engine: no answer from [{SERVER_IPV6}]:{STUN_PORT}")
    assert "bind" not in result.stderr


def test_the_text_report(lab: Lab) -> None:
    result = nat(lab, "--server", f"stun:{SERVER_IPV4}", "--timeout", "1")
    assert result.returncode == 0, result.stderr
    assert "mapping    endpoint-independent" in result.stdout
    assert "filtering  address-and-port-dependent" in result.stdout
    assert f"other address {SERVER_ALT_IPV4}:{STUN_ALT_PORT}" in result.stdout


def test_an_icmp_error_fails_the_test_that_caused_it_not_the_next_one(lab: Lab) -> None:
    """Mapping test II refused with an ICMP error, test III never answered. Linux told
    the error at test III's sendto: test III was said to be "could not be sent:
    connection refused" and was never sent, and test II, whose error it was, waited."""
    port = str(_unused_port(lab))
    to_other = ["-p", "udp", "-s", CLIENT_IPV4_A, "--sport", port, "-d", SERVER_ALT_IPV4]
    reject = [*to_other, "--dport", str(STUN_PORT), "-j", "REJECT"]
    drop = [*to_other, "--dport", str(STUN_ALT_PORT), "-j", "DROP"]
    argv = [sys.executable, "-m", "ice_engine", "nat", "--local-port", port]
    argv += ["--local-address", CLIENT_IPV4_A, "--server", f"stun:{SERVER_IPV4}"]
    with iptables_rule(ROUTER_NS, "FORWARD", reject), iptables_rule(ROUTER_NS, "FORWARD", drop):
        result = lab.run([*argv, "--timeout", "1"], timeout_s=30)
    assert result.returncode == 0, result.stderr
    lines = {line.split(" to ")[0].strip(): line for line in result.stdout.splitlines()}
    assert lines["mapping test II"].endswith(": ICMP port unreachable"), result.stdout
    assert lines["mapping test III"].endswith(
        ": not waited for (it could not change the result)"
    ), result.stdout
    assert "mapping    unknown" in result.stdout


def test_a_dead_server_and_an_unknown_name_are_one_line_errors(lab: Lab) -> None:
    for server in (f"stun:{DEAD_IPV4}", "stun:nowhere.lab.test"):
        result = nat(lab, "--server", server, "--timeout", "0.5")
        assert result.returncode == 1, (server, result.stderr)
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_server_address_of_the_other_ip_version_is_bad_input(lab: Lab) -> None:
    """An IPv4 literal and an IPv6 local address can never make a probe: exit 2, as for
    any bad input (it was exit 1, "has no address of the family"). A name that has no
    address of that version is a fact of DNS: exit 1."""
    for server, status in ((f"stun:{SERVER_IPV4}", 2), (f"stun:{V4ONLY_HOST}", 1)):
        result = nat(lab, "--server", server, "--local-address", CLIENT_IPV6, "--timeout", "1")
        assert result.returncode == status, (server, result.stderr)
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1


FALLBACK_SCRIPT = """
import asyncio, json, sys
from ice_engine.natcheck import discover_nat
from ice_engine.resolver import Resolver
server, hosts, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
check = discover_nat(server, timeout=1.0, local_port=port, resolver=Resolver(hosts=hosts))
print(json.dumps(asyncio.run(check).to_json()))
"""


@pytest.mark.parametrize(
    ("first", "why"),
    [(DEAD_IPV4, "within 1 s"), (ROUTER_PUBLIC_IPV4, "ICMP port unreachable")],
    ids=["silent", "icmp"],
)
def test_an_address_that_does_not_answer_gives_way_to_the_next(
    lab: Lab, tmp_path: Path, first: str, why: str
) -> None:
    """A name whose first address is dead (a round-robin name, an SRV primary) failed
    the check: only the first address was tried. A hosts file gives such a name: the
    silent or ICMP-answering address first, then coturn's (for the SRV backup in the
    lab's DNS, see the next test). The tests after test I go to coturn, and behind the
    NAT as ever."""
    name = "natbackup.lab.test"
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{first} {name}\n{SERVER_IPV4} {name}\n")
    hosts.chmod(0o644)
    argv = [sys.executable, "-c", FALLBACK_SCRIPT, f"stun:{name}", str(hosts)]
    result = lab.run([*argv, str(_unused_port(lab))], timeout_s=30)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["server"] == f"{SERVER_IPV4}:{STUN_PORT}"
    assert report["otherAddress"] == f"{SERVER_ALT_IPV4}:{STUN_ALT_PORT}"
    assert report["mapping"] == "endpoint-independent"
    assert report["filtering"] == "address-and-port-dependent"
    assert report["notes"] == [
        f"No answer from {first}:{STUN_PORT}{':' if 'ICMP' in why else ''} {why}, "
        "so the next address was tried."
    ]


def test_an_srv_primary_that_never_answers_gives_way_to_the_backup(lab: Lab) -> None:
    """_stun._udp.backup.lab.test: priority 0 is the dead address, priority 1 coturn."""
    report = nat_json(lab, "--server", f"stun:{BACKUP_DOMAIN}")
    assert report["server"] == f"{SERVER_IPV4}:{STUN_PORT}"
    assert report["mapping"] == "endpoint-independent"
    assert report["notes"] == [
        f"No answer from {DEAD_IPV4}:{STUN_PORT} within 1 s, so the next address was tried."
    ]


def _router(lab: Lab, *argv: str) -> subprocess.CompletedProcess[str]:
    return lab.run(list(argv), netns=ROUTER_NS, timeout_s=20)


def test_random_fully_masquerade_maps_each_destination_anew(lab: Lab) -> None:
    others = leases.other_sessions()
    if others:
        pytest.skip(f"the lab is in use by other test sessions (PIDs {others}): no NAT changes")
    added = _router(
        lab, "iptables", "-w", "-t", "nat", "-I", *RANDOM_FULLY[:1], "1", *RANDOM_FULLY[1:]
    )
    if added.returncode != 0:
        pytest.skip(f"this iptables or kernel has no MASQUERADE --random-fully: {added.stderr}")
    report: dict[str, Any] | None = None
    try:
        probe = ("--server", f"stun:{SERVER_IPV4}", "--local-address", CLIENT_IPV4_B)
        report = nat_json(lab, *probe)
        if report["mapping"] == "endpoint-independent":
            # The NAT drew one random port for both destinations: below 1024 it draws
            # from 424, so once in 424 runs. Twice in a row is not chance.
            report = nat_json(lab, *probe)
    finally:
        removed = _router(lab, "iptables", "-w", "-t", "nat", "-D", *RANDOM_FULLY)
        assert removed.returncode == 0, removed.stderr
    assert host(report["mapped"]) == ROUTER_PUBLIC_IPV4
    assert report["mapping"] in ("address-dependent", "address-and-port-dependent"), report
    mapped = report["mappedAddresses"]
    assert mapped["mapping test II"] != mapped["test I"]
    assert report["filtering"] == "address-and-port-dependent"
    # The rule is gone: the same probe sees the ordinary NAT again.
    again = nat_json(lab, "--server", f"stun:{SERVER_IPV4}", "--local-address", CLIENT_IPV4_B)
    assert again["mapping"] == "endpoint-independent"
