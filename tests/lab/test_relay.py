"""Relay candidates through coturn with the gatherer, as a user runs the CLI."""

from __future__ import annotations

import sys

import pytest

from ice_engine.lab import (
    CLIENT_IPV4_A,
    CLIENT_IPV4_B,
    CLIENT_IPV6,
    PASSWORD,
    REDIRECT_TURN_PORT,
    ROUTER_PUBLIC_IPV4,
    SERVER_IPV4,
    SERVER_IPV6,
    USERNAME,
    Lab,
)
from tests.lab.test_srflx import candidates, errors, gather, related

pytestmark = pytest.mark.lab

CREDENTIALS = ("--username", USERNAME, "--credential", PASSWORD)


def test_udp_relay_and_the_srflx_it_reveals(lab: Lab) -> None:
    events = gather(lab, "--ice-server", f"turn:{SERVER_IPV4}", *CREDENTIALS)
    assert not errors(events), errors(events)
    relays = candidates(events, "relay")
    assert len(relays) == 2  # one allocation per IPv4 base
    for relay in relays:
        assert relay["fields"][4] == SERVER_IPV4
        assert related(relay)[0] == ROUTER_PUBLIC_IPV4  # raddr: the mapped address
    srflx = candidates(events, "srflx")  # a TURN server serves as a STUN server too
    assert {c["fields"][4] for c in srflx} == {ROUTER_PUBLIC_IPV4}
    assert {related(c)[0] for c in srflx} == {CLIENT_IPV4_A, CLIENT_IPV4_B}
    hosts = candidates(events, "host")
    assert max(int(r["fields"][3]) for r in relays) < min(int(s["fields"][3]) for s in srflx)
    assert max(int(s["fields"][3]) for s in srflx) < min(int(h["fields"][3]) for h in hosts)
    assert events[-1]["candidate"] is None


def test_try_alternate_is_followed_over_udp_and_tcp(lab: Lab) -> None:
    """A coturn that balances load answers each Allocate with 300 Try Alternate and the
    main coturn's address: the relays come from there, with no error."""
    url = f"turn:{SERVER_IPV4}:{REDIRECT_TURN_PORT}"
    events = gather(lab, "--ice-server", url, "--ice-server", f"{url}?transport=tcp", *CREDENTIALS)
    assert not errors(events), errors(events)
    relays = candidates(events, "relay")
    assert len(relays) == 4  # UDP and TCP, from each IPv4 base
    assert {r["fields"][4] for r in relays} == {SERVER_IPV4}
    assert len(candidates(events, "srflx")) == 2  # the UDP allocations' mapped addresses
    assert events[-1]["candidate"] is None


def test_ipv6_relay_from_the_ipv6_base(lab: Lab) -> None:
    events = gather(lab, "--ice-server", f"turn:[{SERVER_IPV6}]", *CREDENTIALS)
    assert not errors(events), errors(events)
    [relay] = candidates(events, "relay")
    assert relay["fields"][4] == SERVER_IPV6
    assert related(relay)[0] == CLIENT_IPV6  # no NAT on IPv6
    assert candidates(events, "srflx") == []  # equal to its base: pruned


def test_relay_only_hides_everything_else(lab: Lab) -> None:
    events = gather(lab, "--ice-server", f"turn:{SERVER_IPV4}", *CREDENTIALS, "--relay-only")
    kinds = {c["fields"][7] for c in candidates(events, "host") + candidates(events, "srflx")}
    assert kinds == set()
    relays = candidates(events, "relay")
    assert len(relays) == 2
    assert {related(r) for r in relays} == {("0.0.0.0", 0)}


def test_wrong_password_is_a_401_error_with_the_url(lab: Lab) -> None:
    url = f"turn:{SERVER_IPV4}"
    result = lab.run(
        [
            sys.executable,
            "-m",
            "ice_engine",
            "gather",
            "--json",
            "--ice-server",
            url,
            "--username",
            USERNAME,
            "--credential",
            "not-the-password",
        ],
        timeout_s=30,
    )
    assert result.returncode == 0, result.stderr
    assert "not-the-password" not in result.stdout + result.stderr
    events = gather(lab, "--ice-server", url, "--username", USERNAME, "--credential", "nope!")
    failures = errors(events)
    assert len(failures) == 2
    assert {e["errorCode"] for e in failures} == {401}
    assert {e["url"] for e in failures} == {url}
    assert candidates(events, "relay") == []
    assert events[-1]["candidate"] is None
