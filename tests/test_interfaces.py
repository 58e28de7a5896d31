"""Which of the machine's addresses are gathered from, in which order: RFC 8421's
interleaving, the application's filter, and the IPv6 addresses the kernel says not to use."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from ice_engine import interfaces
from ice_engine.interfaces import LocalAddress, interleave, local_addresses, unusable_ipv6

V6_A = LocalAddress("eth0", "2001:db8::a", socket.AF_INET6, 1)
V6_B = LocalAddress("eth1", "2001:db8::b", socket.AF_INET6, 2)
V4_A = LocalAddress("eth0", "203.0.113.1", socket.AF_INET, 3)
V4_B = LocalAddress("eth1", "203.0.113.2", socket.AF_INET, 4)
LOOPBACK = LocalAddress("lo", "127.0.0.1", socket.AF_INET, 5)


def test_families_alternate_ipv6_first_each_in_interface_order() -> None:
    assert interleave([V4_A, V4_B, V6_A, V6_B]) == [V6_A, V4_A, V6_B, V4_B]
    assert interleave([V4_A, V6_A, V4_B]) == [V6_A, V4_A, V4_B]
    assert interleave([V4_B, V4_A]) == [V4_B, V4_A]  # one family: as given
    assert interleave(iter([V6_B])) == [V6_B]
    assert interleave([]) == []


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> list[LocalAddress]:
    """The addresses `local_addresses` enumerates, replaceable by the test."""
    present = [LOOPBACK, V4_A, V4_B, V6_A, V6_B]
    monkeypatch.setattr(interfaces, "enumerate_addresses", lambda: list(present))
    monkeypatch.setattr(interfaces, "_cache", None)
    return present


def test_the_filter_is_asked_for_each_call_and_its_choice_interleaved(
    machine: list[LocalAddress],
) -> None:
    assert local_addresses() == [V6_A, V4_A, V6_B, V4_B]  # no loopback
    asked: list[tuple[str, str]] = []

    def no_eth0(interface: str, address: str) -> bool:
        asked.append((interface, address))
        return interface != "eth0"

    assert local_addresses(address_filter=no_eth0) == [V6_B, V4_B]
    assert sorted(asked) == sorted((a.interface, a.address) for a in machine[1:])
    assert local_addresses(address_filter=lambda _i, a: a == V4_A.address) == [V4_A]
    assert local_addresses(address_filter=lambda _i, _a: False) == []
    assert len(asked) == 4  # each gatherer's call asks anew: the filter may change
    local_addresses(address_filter=no_eth0)
    assert len(asked) == 8
    assert local_addresses() == [V6_A, V4_A, V6_B, V4_B]  # the filter's answer kept apart


def test_a_new_enumeration_is_filtered_anew(machine: list[LocalAddress]) -> None:
    assert local_addresses() == [V6_A, V4_A, V6_B, V4_B]
    machine.remove(V6_A)
    assert local_addresses() == [V6_A, V4_A, V6_B, V4_B]  # the enumeration is reused...
    assert local_addresses(max_age=0) == [V6_B, V4_A, V4_B]  # ...until it is too old
    assert local_addresses(address_filter=lambda i, _a: i == "eth0") == [V4_A]


# /proc/net/if_inet6 as Linux wrote it for a veth with four addresses: ::1 (nodad, 0x82),
# ::2 (nodad, preferred_lft 0: deprecated, 0xa2), ::3 (duplicate address detection under
# way: tentative, 0xc0), ::4 (DAD failed, 0x88), and a tentative link-local one.
TABLE = """\
20010db8007700000000000000000001 03 40 00 82       v0
fe8000000000000034fb5dfffe8c0747 03 40 20 c0       v0
20010db8007700000000000000000003 03 40 00 c0       v0
20010db8007700000000000000000002 03 40 00 a2       v0
20010db8007700000000000000000004 03 40 00 88       v0
garbage line
"""


def test_deprecated_tentative_and_dad_failed_addresses_are_flagged() -> None:
    assert unusable_ipv6(TABLE) == {
        "fe80::34fb:5dff:fe8c:747",
        "2001:db8:77::2",
        "2001:db8:77::3",
        "2001:db8:77::4",
    }
    assert unusable_ipv6("") == set()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and ip(8)")
def test_a_deprecated_address_gives_no_host_candidate() -> None:
    """In a namespace of its own: a deprecated address (preferred lifetime over) is left
    out, as browsers leave it out; the usable one beside it is gathered."""
    namespace = f"ice-test-v6flags-{os.getpid()}"
    run = ["ip", "-n", namespace]
    try:
        subprocess.run(["ip", "netns", "add", namespace], check=True)
        subprocess.run(
            [*run, "link", "add", "v0", "type", "veth", "peer", "name", "v1"], check=True
        )
        for device in ("v0", "v1", "lo"):
            subprocess.run([*run, "link", "set", device, "up"], check=True)
        address = [*run, "addr", "add"]
        subprocess.run([*address, "2001:db8:77::1/64", "dev", "v0", "nodad"], check=True)
        subprocess.run(
            [*address, "2001:db8:77::2/64", "dev", "v0", "nodad", "preferred_lft", "0"], check=True
        )
        gather = [sys.executable, "-m", "ice_engine", "gather", "--json"]
        result = subprocess.run(
            ["ip", "netns", "exec", namespace, *gather],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    assert result.returncode == 0, result.stderr
    lines = [
        event["candidate"]["candidate"]
        for event in map(json.loads, result.stdout.splitlines())
        if event["event"] == "icecandidate"
        and event["candidate"]
        and event["candidate"]["candidate"]
    ]
    assert any(" 2001:db8:77::1 " in line for line in lines), lines
    assert not any("2001:db8:77::2" in line for line in lines), lines
