"""`ice-engine relay-check` against the lab's coturn: a datagram each way through every
relay, and the failures a firewall on the relay ports causes, each side."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest

from ice_engine.lab import (
    CA_CERT_FILE,
    CLIENT_IPV6,
    DEAD_IPV4,
    PASSWORD,
    REDIRECT_TURN_PORT,
    SERVER_IPV4,
    SERVER_IPV6,
    SERVER_NS,
    TLS13_PORT,
    TURN_HOST,
    USERNAME,
    V4ONLY_HOST,
    Lab,
)
from ice_engine.lab.topology import RELAY_PORT_RANGE
from tests.lab.test_faults import alone_on_the_lab, iptables_rule

pytestmark = pytest.mark.lab

CREDENTIALS = ("--username", USERNAME, "--credential", PASSWORD)
RELAY_PORTS = f"{RELAY_PORT_RANGE[0]}:{RELAY_PORT_RANGE[1]}"


def relay_check(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.run([sys.executable, "-m", "ice_engine", "relay-check", *args], timeout_s=30)


def report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stderr == ""
    outcome: dict[str, Any] = json.loads(result.stdout)
    return outcome


def test_every_relay_relays_both_ways_over_udp_tcp_and_tls_ipv4_and_ipv6(lab: Lab) -> None:
    servers = [
        f"turn:{SERVER_IPV4}",
        f"turn:[{SERVER_IPV6}]",
        f"turn:{SERVER_IPV4}?transport=tcp",
        f"turns:{TURN_HOST}",
    ]
    args = [arg for url in servers for arg in ("--ice-server", url)]
    result = relay_check(lab, *args, *CREDENTIALS, "--ca-file", str(CA_CERT_FILE), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = report(result)
    assert outcome["ok"] is True and outcome["errors"] == [] and not outcome["interrupted"]
    checks = outcome["checks"]
    assert {check["url"] for check in checks} == set(servers)
    assert any(":" in check["relay"] for check in checks)  # an IPv6 relay among them
    for check in checks:
        assert check["ok"] and check["problem"] is None
        assert 0 <= check["peerToRelayMs"] < 1000 and 0 <= check["relayToPeerMs"] < 1000
        assert (":" in check["source"]) == (":" in check["relay"])
        assert " typ relay " in check["candidate"]

    plain = relay_check(lab, "--ice-server", f"turn:{SERVER_IPV4}", *CREDENTIALS)
    assert plain.returncode == 0
    lines = plain.stdout.splitlines()
    assert lines[-1] == "2 relays checked: 2 ok, 0 failed"  # one per IPv4 base
    assert all(line.startswith(f"ok      relay {SERVER_IPV4}:") for line in lines[:-1])
    assert all("peer to relay " in line and "relay to peer " in line for line in lines[:-1])


def test_a_firewall_closed_to_the_relay_ports_fails_the_peer_to_relay_way(lab: Lab) -> None:
    alone_on_the_lab()
    drop = ["-p", "udp", "--dport", RELAY_PORTS, "-j", "DROP"]
    with iptables_rule(SERVER_NS, "INPUT", drop):
        result = relay_check(
            lab, "--ice-server", f"turn:{SERVER_IPV4}", *CREDENTIALS, "--timeout", "1", "--json"
        )
    assert result.returncode == 1
    outcome = report(result)
    assert outcome["ok"] is False and outcome["errors"] == []
    assert len(outcome["checks"]) == 2  # gathered, and each relay failed
    for check in outcome["checks"]:
        assert check["ok"] is False and check["peerToRelayMs"] is None
        assert check["problem"].startswith("peer to relay: nothing came through in 1 s (is ")


def test_relayed_data_that_never_leaves_the_server_fails_the_relay_to_peer_way(lab: Lab) -> None:
    alone_on_the_lab()
    drop = ["-p", "udp", "--sport", RELAY_PORTS, "-j", "DROP"]
    with iptables_rule(SERVER_NS, "OUTPUT", drop):
        result = relay_check(
            lab, "--ice-server", f"turn:{SERVER_IPV4}", *CREDENTIALS, "--timeout", "1"
        )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == "2 relays checked: 0 ok, 2 failed"
    for line in lines[:-1]:
        assert line.startswith(f"FAILED  relay {SERVER_IPV4}:")
        assert ": relay to peer 198.51.100.1:" in line  # the NAT's address: ours
        assert line.endswith(": nothing came through in 1 s")


def test_a_wrong_password_shows_the_servers_error_and_fails(lab: Lab) -> None:
    result = relay_check(
        lab, "--ice-server", f"turn:{SERVER_IPV4}", "--username", USERNAME, "--credential", "x"
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == "no relay candidate gathered: nothing to check"
    assert lines[0].startswith(f"ERROR 401  turn:{SERVER_IPV4} from ")


def test_lines_come_as_checks_end_and_an_interruption_tells_what_was_checked(lab: Lab) -> None:
    """The dead server holds the gathering for its 5 s; the live one's relays are told
    at once, and Ctrl-C then ends the run with them counted and the allocations freed."""
    argv = [sys.executable, "-m", "ice_engine", "relay-check", *CREDENTIALS, "--timeout", "5"]
    argv += ["--ice-server", f"turn:{SERVER_IPV4}", "--ice-server", f"turn:{DEAD_IPV4}"]
    with lab.process(argv) as process:
        assert process.stdout is not None
        first = [process.stdout.readline() for _ in range(2)]  # before the dead one's end
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=10)
    assert all(line.startswith(f"ok      relay {SERVER_IPV4}:") for line in first), first
    assert (process.returncode, errors) == (130, "")
    assert rest == "interrupted: 2 relays checked: 2 ok, 0 failed\n"


def test_a_server_that_fails_beside_one_that_relays_fails_the_run(lab: Lab) -> None:
    result = relay_check(
        lab, "--ice-server", f"turn:{SERVER_IPV4}", "--ice-server", f"turn:{DEAD_IPV4}",
        *CREDENTIALS, "--timeout", "0.5",
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert sum(line.startswith("ok      relay ") for line in lines) == 2
    assert sum(line.startswith(f"ERROR 701  turn:{DEAD_IPV4} from ") for line in lines) == 2
    assert lines[-1] == "2 relays checked: 2 ok, 0 failed; 2 server errors"


def test_a_browser_config_on_standard_input_gives_the_servers_and_credentials(lab: Lab) -> None:
    config = {
        "iceServers": [
            {"urls": f"stun:{SERVER_IPV4}"},  # left out: relay-check asks TURN servers
            {"urls": [f"turn:{SERVER_IPV4}", f"turn:{SERVER_IPV4}?transport=tcp"],
             "username": USERNAME, "credential": PASSWORD},
        ],
    }  # fmt: skip
    argv = [sys.executable, "-m", "ice_engine", "relay-check", "--config", "-", "--json"]
    result = lab.run(argv, stdin=json.dumps(config), timeout_s=30)
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = report(result)
    urls = [check["url"] for check in outcome["checks"]]
    assert sorted(urls) == sorted([f"turn:{SERVER_IPV4}", f"turn:{SERVER_IPV4}?transport=tcp"] * 2)


def test_each_url_is_checked_with_its_own_credentials(lab: Lab) -> None:
    """URLs for one server address shared one allocation, so a second URL's wrong
    password passed unseen ("2 relays checked: 2 ok"), and a redirect to an address
    another URL allocated at failed with a 300 (found in a lab trial). Each URL now has
    a gatherer of its own."""
    config = {
        "iceServers": [
            {"urls": f"turn:{V4ONLY_HOST}", "username": USERNAME, "credential": "wrong"},
            {"urls": f"turn:{SERVER_IPV4}", "username": USERNAME, "credential": PASSWORD},
        ],
    }
    argv = [sys.executable, "-m", "ice_engine", "relay-check", "--config", "-", "--json"]
    result = lab.run(argv, stdin=json.dumps(config), timeout_s=30)
    assert result.returncode == 1
    outcome = report(result)
    assert {error["url"] for error in outcome["errors"]} == {f"turn:{V4ONLY_HOST}"}
    assert {error["errorCode"] for error in outcome["errors"]} == {401}
    assert [check["ok"] for check in outcome["checks"]] == [True, True]

    redirecting = f"turn:{SERVER_IPV4}:{REDIRECT_TURN_PORT}"
    result = relay_check(
        lab, "--ice-server", redirecting, "--ice-server", f"turn:{SERVER_IPV4}", *CREDENTIALS
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "4 relays checked: 4 ok, 0 failed"


def test_relays_behind_a_tls_proxy_are_permitted_for_our_public_address(lab: Lab) -> None:
    """The lab's stunnel ends TLS 1.3 in front of coturn, which then sees our allocation
    come from the proxy's address: the permission was for it, our probes (from the NAT's
    address) were dropped, and healthy relays FAILED (found in a lab trial). A STUN
    answer from the relay's server tells the address to permit."""
    result = relay_check(
        lab, "--ice-server", f"turns:{TURN_HOST}:{TLS13_PORT}", *CREDENTIALS,
        "--ca-file", str(CA_CERT_FILE), "--json",
    )  # fmt: skip
    outcome = json.loads(result.stdout)
    checks = outcome["checks"]
    assert len(checks) == 2 and all(check["ok"] for check in checks), checks
    # stunnel listens on IPv4 only: the IPv6 base's connection is refused
    assert [error["address"] for error in outcome["errors"]] == [CLIENT_IPV6]
