"""Live faults in the lab: each gives the right `icecandidateerror`, nothing spurious, and
gathering completes by the deadline.

Faults are injected as narrowly as the shared lab allows: DNS is broken for the one
gathering process only (a private mount namespace whose resolv.conf names a dead server),
TCP resets and the hostname mismatch use the server's second address `198.51.100.11`,
which no other test uses for TCP or TLS, and every firewall rule carries a comment and
is removed in a `finally`. The cases that change what every user of the lab sees (an
address removed from the client, coturn stopped) or that depend on the short server's
one-allocation quota skip while another test session holds the lab.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ice_engine import stun
from ice_engine.lab import (
    CA_CERT_FILE,
    CLIENT_IPV4_A,
    CLIENT_IPV4_B,
    CLIENT_NS,
    DEAD_IPV4,
    PASSWORD,
    ROUTER_NS,
    ROUTER_PUBLIC_IPV4,
    SERVER_ALT_IPV4,
    SERVER_IPV4,
    SERVER_NS,
    SHORT_TURN_PORT,
    STUN_HOST,
    STUN_PORT,
    TLS_PORT,
    TURN_HOST,
    USERNAME,
    Lab,
    coturn,
    leases,
    processes,
    readiness,
)
from ice_engine.lab import topology as topo
from ice_engine.lab.netns import socket_in_netns
from ice_engine.lab.processes import Daemon
from tests.lab.lines import Lines
from tests.lab.test_srflx import candidates, errors, related

pytestmark = pytest.mark.lab

CREDENTIALS = ("--username", USERNAME, "--credential", PASSWORD)
TIMEOUT_S = 1.0  # --timeout: each server's deadline, kept short so the tests are fast
SLACK_S = 0.3  # completion may trail the deadline by a timer tick and process start-up
RULE_TAG = "ice-engine-test-faults"
FORGED_IPV4 = "198.51.100.66"


def gather_argv(*args: str, timeout: float = TIMEOUT_S) -> list[str]:
    return [
        sys.executable, "-m", "ice_engine", "gather", "--json", "--timeout", str(timeout), *args
    ]  # fmt: skip


def parse(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no traceback, no warning
    return [json.loads(line) for line in result.stdout.splitlines()]


def gather(lab: Lab, *args: str, timeout: float = TIMEOUT_S) -> list[dict[str, Any]]:
    return parse(lab.run(gather_argv(*args, timeout=timeout), timeout_s=30))


def completion(events: list[dict[str, Any]]) -> float:
    """When gathering completed; also checks the end of the stream is well formed."""
    assert events[-1]["event"] == "icecandidate" and events[-1]["candidate"] is None, events[-1]
    states = [e["state"] for e in events if e["event"] == "icegatheringstatechange"]
    assert states == ["gathering", "complete"], states
    return float(events[-1]["t"])


def per_base(failures: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["url"], e["address"]) for e in failures}


@contextmanager
def iptables_rule(netns: str, chain: str, rule: Sequence[str]) -> Iterator[None]:
    """Insert a rule at the top of `chain` in `netns` for the block; always removed."""
    spec = [chain, *rule, "-m", "comment", "--comment", RULE_TAG]
    base = ["ip", "netns", "exec", netns, "iptables", "-w"]
    subprocess.run([*base, "-I", *spec], check=True, capture_output=True, text=True)
    try:
        yield
    finally:
        subprocess.run([*base, "-D", *spec], check=True, capture_output=True, text=True)


def rule_packets(netns: str, chain: str) -> int:
    """Packets counted so far by this module's rule in `chain` of `netns`."""
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "iptables", "-w", "-n", "-v", "-x", "-L", chain],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return sum(int(line.split()[0]) for line in out.splitlines() if RULE_TAG in line)


def alone_on_the_lab() -> None:
    others = leases.other_sessions()
    if others:
        pytest.skip(f"changes the lab under other test sessions ({others}); run alone")


# -- 1. server unreachable -------------------------------------------------------------------


def test_unreachable_server_is_a_701_per_base_at_the_deadline(lab: Lab) -> None:
    """Every packet to 198.51.100.20 is dropped without an answer: STUN, TURN/UDP and
    TURN/TCP (its SYN unanswered) each fail with 701 on each IPv4 base at the deadline."""
    urls = [f"stun:{DEAD_IPV4}", f"turn:{DEAD_IPV4}", f"turn:{DEAD_IPV4}?transport=tcp"]
    events = gather(lab, *(a for url in urls for a in ("--ice-server", url)), *CREDENTIALS)
    failures = errors(events)
    assert len(failures) == 6, failures
    assert {e["errorCode"] for e in failures} == {701}
    assert per_base(failures) == {(u, b) for u in urls for b in (CLIENT_IPV4_A, CLIENT_IPV4_B)}
    assert candidates(events, "srflx") == candidates(events, "relay") == []
    done = completion(events)
    assert TIMEOUT_S - 0.05 <= done <= TIMEOUT_S + SLACK_S, done
    assert all(TIMEOUT_S - 0.05 <= e["t"] <= done for e in failures), failures


# -- 2. DNS timeout --------------------------------------------------------------------------


def gather_without_dns(lab: Lab, tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    """Gather with the name server unreachable for this one process only.

    `ip netns exec` already bind-mounts the lab's resolv.conf; a private mount namespace
    on top replaces it with one naming 198.51.100.20, where every query is dropped
    without an answer (like a DROP rule on udp/53, but invisible to other sessions).
    """
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {DEAD_IPV4}\n")
    wrapper = [
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv),
    ]  # fmt: skip
    return parse(lab.run([*wrapper, *gather_argv(*args)], timeout_s=30))


def dns_timeout_events(lab: Lab, tmp_path: Path) -> list[dict[str, Any]]:
    return gather_without_dns(
        lab,
        tmp_path,
        "--ice-server", f"stun:{STUN_HOST}",
        "--ice-server", f"turn:{TURN_HOST}",
        "--ice-server", f"stun:{SERVER_IPV4}",  # an IP literal needs no DNS
        *CREDENTIALS,
    )  # fmt: skip


def test_dns_timeout_is_a_701_without_an_address_by_the_deadline(lab: Lab, tmp_path: Path) -> None:
    events = dns_timeout_events(lab, tmp_path)
    failures = errors(events)
    assert len(failures) == 2, failures  # one per named server, not one per base
    assert {e["url"] for e in failures} == {f"stun:{STUN_HOST}", f"turn:{TURN_HOST}"}
    assert {e["errorCode"] for e in failures} == {701}
    assert all(e["address"] is None and e["port"] is None for e in failures), failures
    srflx = candidates(events, "srflx")  # the literal server is unaffected
    assert {c["fields"][4] for c in srflx} == {ROUTER_PUBLIC_IPV4} and len(srflx) == 2
    assert all(c["t"] < 0.5 for c in srflx), srflx  # not held back by the dead resolver
    assert candidates(events, "relay") == []
    done = completion(events)
    assert TIMEOUT_S - 0.05 <= done <= TIMEOUT_S + SLACK_S, done


def test_dns_timeout_error_text_names_the_host(lab: Lab, tmp_path: Path) -> None:
    failures = errors(dns_timeout_events(lab, tmp_path))
    texts = {e["url"]: e["errorText"] for e in failures}
    assert STUN_HOST in texts[f"stun:{STUN_HOST}"], texts
    assert TURN_HOST in texts[f"turn:{TURN_HOST}"], texts


# -- 5. allocation quota ---------------------------------------------------------------------


def test_second_allocation_over_the_quota_is_a_486(lab: Lab) -> None:
    """The short coturn allows one allocation per user: of the two IPv4 bases of one
    gathering, one gets a relay and the other a 486, and nothing else goes wrong."""
    url = f"turn:{SERVER_IPV4}:{SHORT_TURN_PORT}"
    exclusive = not leases.other_sessions()
    outcomes = []
    for _ in range(8):  # another test's allocation may still hold the quota for a moment
        events = gather(lab, "--ice-server", url, *CREDENTIALS)
        failures = errors(events)
        relays = candidates(events, "relay")
        outcomes.append((len(relays), [e["errorCode"] for e in failures]))
        assert {e["errorCode"] for e in failures} <= {486}, failures  # never a 701 or 401
        assert all(e["url"] == url for e in failures), failures
        assert len(relays) + len(failures) == 2, events  # one outcome per IPv4 base
        assert completion(events) < 0.5  # a 486 is final: no waiting for the deadline
        if len(relays) == 1:
            [failure] = failures
            # One from the allocation that succeeded, one from a Binding after the 486.
            srflx = candidates(events, "srflx")
            assert {related(c)[0] for c in srflx} == {CLIENT_IPV4_A, CLIENT_IPV4_B}
            assert failure["address"] in (CLIENT_IPV4_A, CLIENT_IPV4_B)
            assert "486" in failure["errorText"] or "Quota" in failure["errorText"], failure
            return
        time.sleep(1.5)  # coturn frees the quota about a second after a deallocation
    exclusive = exclusive and not leases.other_sessions()
    if not exclusive:
        pytest.skip(f"another session held the short server's quota throughout: {outcomes}")
    pytest.fail(f"never one relay and one 486: {outcomes}")


# -- 7. TCP reset ----------------------------------------------------------------------------

_TCP_TO_ALT = ["-p", "tcp", "-d", SERVER_ALT_IPV4, "--dport", str(STUN_PORT)]
_RESET = ["-j", "REJECT", "--reject-with", "tcp-reset"]


@pytest.mark.parametrize(
    ("match", "reason"),
    [
        pytest.param(["--syn"], "refused", id="syn"),
        # Data, not the handshake's ACK (52 bytes with timestamps): the first Allocate.
        pytest.param(["!", "--syn", "-m", "length", "--length", "64:65535"], "reset", id="data"),
        # Only the signed Allocate carries USERNAME: reset after the 401 challenge.
        pytest.param(
            ["-m", "string", "--algo", "bm", "--string", USERNAME], "reset", id="after-401"
        ),
    ],
)
def test_tcp_reset_is_a_701_naming_the_reset(lab: Lab, match: list[str], reason: str) -> None:
    url = f"turn:{SERVER_ALT_IPV4}?transport=tcp"
    rule = [*_TCP_TO_ALT, *match, *_RESET]
    with iptables_rule(SERVER_NS, "INPUT", rule):
        events = gather(
            lab, "--ice-server", url, "--ice-server", f"stun:{SERVER_IPV4}", *CREDENTIALS
        )
        hits = rule_packets(SERVER_NS, "INPUT")
    assert hits >= 2, hits  # the rule really answered both connections
    failures = errors(events)
    assert len(failures) == 2, failures
    assert per_base(failures) == {(url, CLIENT_IPV4_A), (url, CLIENT_IPV4_B)}
    assert {e["errorCode"] for e in failures} == {701}
    assert all(reason in e["errorText"] for e in failures), failures
    # The port is the connection's own (none where it never came up), not a UDP base's.
    udp_ports = {int(c["fields"][5]) for c in candidates(events, "host")}
    for failure in failures:
        if reason == "refused":
            assert failure["port"] is None, failure
        else:
            assert isinstance(failure["port"], int) and failure["port"] not in udp_ports
    assert candidates(events, "relay") == []
    assert len(candidates(events, "srflx")) == 2  # the UDP STUN server is unaffected
    assert completion(events) < 0.5  # a reset is final: no waiting for the deadline


# -- 8. TLS hostname mismatch ----------------------------------------------------------------


def test_tls_certificate_for_another_address_is_a_701(lab: Lab) -> None:
    """coturn serves the lab certificate on 198.51.100.11 too, but its SANs name only
    198.51.100.10 (and the DNS names): verification fails though the CA is trusted."""
    bad, good = f"turns:{SERVER_ALT_IPV4}:{TLS_PORT}", f"turns:{SERVER_IPV4}:{TLS_PORT}"
    events = gather(
        lab,
        "--ice-server", bad, "--ice-server", good, *CREDENTIALS, "--ca-file", str(CA_CERT_FILE)
    )  # fmt: skip
    failures = errors(events)
    assert per_base(failures) == {(bad, CLIENT_IPV4_A), (bad, CLIENT_IPV4_B)}
    assert len(failures) == 2 and {e["errorCode"] for e in failures} == {701}
    for failure in failures:
        assert "certificate" in failure["errorText"], failure
        assert SERVER_ALT_IPV4 in failure["errorText"], failure  # says which name failed
    relays = candidates(events, "relay")  # the same CA still works where it matches
    assert len(relays) == 2 and {r["fields"][4] for r in relays} == {SERVER_IPV4}
    assert completion(events) < 0.5


# -- 9. an interface address removed while gathering -----------------------------------------


def _client_routing() -> tuple[str, str, str]:
    def ip(*args: str) -> str:
        argv = ["ip", "-n", CLIENT_NS, *args]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    return (
        ip("-4", "addr", "show", "dev", topo.CLIENT_DEV_B),
        ip("-4", "route", "show", "table", str(topo.CLIENT_B_ROUTE_TABLE)),
        ip("-4", "rule", "show"),
    )


def _restore_client_b() -> None:
    """Put back what network.create_network set up for 203.0.113.130 (idempotent)."""
    address, routes, rules = _client_routing()
    ns = ["ip", "-n", CLIENT_NS]
    if f"{CLIENT_IPV4_B}/" not in address:
        subprocess.run(
            [*ns, "addr", "add", f"{CLIENT_IPV4_B}/{topo.INSIDE_PREFIX_V4}",
             "dev", topo.CLIENT_DEV_B],
            check=True,
        )  # fmt: skip
    if "default" not in routes:  # deleting the address took the policy route with it
        subprocess.run(
            [*ns, "route", "add", "default", "via", topo.ROUTER_INSIDE_IPV4_B,
             "dev", topo.CLIENT_DEV_B, "table", str(topo.CLIENT_B_ROUTE_TABLE)],
            check=True,
        )  # fmt: skip
    if f"from {CLIENT_IPV4_B} lookup {topo.CLIENT_B_ROUTE_TABLE}" not in rules:
        subprocess.run(
            [*ns, "rule", "add", "from", CLIENT_IPV4_B,
             "table", str(topo.CLIENT_B_ROUTE_TABLE), "priority", "1000"],
            check=True,
        )  # fmt: skip


def test_address_removed_while_gathering(lab: Lab) -> None:
    """Dead servers keep gathering going; once both bases' srflx are out, 203.0.113.130
    disappears from c1, so the base's retransmissions have no source address any more.
    Gathering still ends by the deadline with 701s, without a traceback, and the lab is
    put back exactly."""
    alone_on_the_lab()
    before = _client_routing()
    timeout = 1.5
    argv = gather_argv(
        "--ice-server", f"stun:{DEAD_IPV4}", "--ice-server", f"turn:{DEAD_IPV4}",
        "--ice-server", f"stun:{SERVER_IPV4}", *CREDENTIALS, timeout=timeout,
    )  # fmt: skip
    try:
        with Lab.process(argv) as proc:
            # One reader for the whole output: proc.stdout.readline() buffers whatever the
            # pipe holds past its line, and communicate() (os.read on the fd) never sees
            # that: a test process a few ms late to read lost the host and srflx lines.
            lines = Lines(proc)
            by = time.monotonic() + 15
            first = ""  # until both bases' srflx are out (the dead servers still wait)
            while first.count(" typ srflx ") < 2:
                first += lines.next(by)
            subprocess.run(
                ["ip", "-n", CLIENT_NS, "addr", "del", f"{CLIENT_IPV4_B}/{topo.INSIDE_PREFIX_V4}",
                 "dev", topo.CLIENT_DEV_B],
                check=True,
            )  # fmt: skip
            out = lines.rest(by)
            proc.wait(timeout=10)
            err = proc.stderr.read() if proc.stderr else ""
    finally:
        _restore_client_b()
    assert _client_routing() == before
    events = parse(subprocess.CompletedProcess(argv, proc.returncode, first + out, err))
    assert len(candidates(events, "srflx")) == 2  # both answered before the removal
    failures = errors(events)
    assert {e["errorCode"] for e in failures} == {701}, failures
    dead = {f"stun:{DEAD_IPV4}", f"turn:{DEAD_IPV4}"}
    assert per_base(failures) == {(u, b) for u in dead for b in (CLIENT_IPV4_A, CLIENT_IPV4_B)}
    done = completion(events)
    assert timeout - 0.05 <= done <= timeout + SLACK_S, done


# -- 10. forged responses on the wire --------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def spoofed_udp(source: tuple[str, int], destination: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 packet (header included) carrying `payload` from a forged source."""
    src, dst = socket.inet_aton(source[0]), socket.inet_aton(destination[0])
    length = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
    header = struct.pack("!HHHH", source[1], destination[1], length, 0)
    checksum = _checksum(pseudo + header + payload) or 0xFFFF
    udp = struct.pack("!HHHH", source[1], destination[1], length, checksum) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0, src, dst
    )  # the kernel fills in the IP checksum
    return ip + udp


def forged_responses() -> list[bytes]:
    """Success responses with guessed transaction ids, all naming 198.51.100.66."""
    forged = []
    for _ in range(2):
        txid = os.urandom(12)
        forged.append(
            stun.encode(
                stun.Method.BINDING,
                stun.MessageClass.SUCCESS,
                txid,
                [(stun.Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value(FORGED_IPV4, 40000, txid))],
            )
        )
        txid = os.urandom(12)
        forged.append(
            stun.encode(
                stun.Method.ALLOCATE,
                stun.MessageClass.SUCCESS,
                txid,
                [
                    (
                        stun.Attr.XOR_RELAYED_ADDRESS,
                        stun.xor_address_value(FORGED_IPV4, 50000, txid),
                    ),
                    (
                        stun.Attr.XOR_MAPPED_ADDRESS,
                        stun.xor_address_value(FORGED_IPV4, 40001, txid),
                    ),
                    (stun.Attr.LIFETIME, stun.u32_value(600)),
                ],
            )
        )
    return forged


def nat_mappings(server: str, port: int, flows: set[tuple[str, int]]) -> set[int]:
    """Public ports the router's NAT gave the client `flows` (address, port) towards
    `server:port`, read from its conntrack table (other sessions' flows left out)."""
    argv = Lab.exec_args(ROUTER_NS, ["cat", "/proc/net/nf_conntrack"])
    table = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    pattern = re.compile(
        rf"udp .*src=([\d.]+) dst={re.escape(server)} sport=(\d+) dport={port} .*"
        rf"src={re.escape(server)} dst={re.escape(ROUTER_PUBLIC_IPV4)} sport={port} dport=(\d+)"
    )
    return {
        int(m.group(3)) for m in pattern.finditer(table) if (m.group(1), int(m.group(2))) in flows
    }


def host_flows(lines: list[str]) -> set[tuple[str, int]]:
    """(address, port) of the IPv4 host candidates among JSON event lines."""
    flows = set()
    for line in lines:
        candidate = (json.loads(line).get("candidate") or {}).get("candidate") or ""
        fields = candidate.split()
        if len(fields) > 7 and fields[7] == "host" and "." in fields[4]:
            flows.add((fields[4], int(fields[5])))
    return flows


def test_forged_responses_on_the_wire_give_no_candidate(lab: Lab) -> None:
    """While Binding and Allocate requests to the dead server wait for an answer, the
    server namespace sprays, through the real NAT, success responses with guessed
    transaction ids from the dead server's address (and from the live server's, after it
    answered) to the NAT-mapped ports. Nothing of 198.51.100.66 may ever appear."""
    timeout = 2.5
    argv = gather_argv(
        "--ice-server", f"stun:{DEAD_IPV4}", "--ice-server", f"turn:{DEAD_IPV4}",
        "--ice-server", f"stun:{SERVER_IPV4}", *CREDENTIALS, timeout=timeout,
    )  # fmt: skip
    counter = ["-p", "udp", "-s", f"{DEAD_IPV4},{SERVER_IPV4}", "--sport", str(STUN_PORT)]
    raw = socket_in_netns(SERVER_NS, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with raw, iptables_rule(CLIENT_NS, "INPUT", counter):
        with Lab.process(argv) as proc:
            reader = Lines(proc)  # not readline() then communicate(): see above
            by = time.monotonic() + 15
            lines = []
            while sum(" typ srflx " in line for line in lines) < 2:  # the live server answered
                lines.append(reader.next(by))
            flows = host_flows(lines)
            assert {address for address, _ in flows} == {CLIENT_IPV4_A, CLIENT_IPV4_B}
            dead_ports = nat_mappings(DEAD_IPV4, STUN_PORT, flows)
            live_ports = nat_mappings(SERVER_IPV4, STUN_PORT, flows)
            assert len(dead_ports) == len(live_ports) == 2, (dead_ports, live_ports)
            targets = [((DEAD_IPV4, STUN_PORT), p) for p in dead_ports]
            targets += [((SERVER_IPV4, STUN_PORT), p) for p in live_ports]
            sent = 0
            spray_until = time.monotonic() + 1.2
            while time.monotonic() < spray_until:  # well before the 2.5 s deadline
                for source, port in targets:
                    for payload in forged_responses():
                        raw.sendto(spoofed_udp(source, (ROUTER_PUBLIC_IPV4, port), payload),
                                   (ROUTER_PUBLIC_IPV4, 0))  # fmt: skip
                        sent += 1
                time.sleep(0.005)
            out = reader.rest(by)
            proc.wait(timeout=10)
            err = proc.stderr.read() if proc.stderr else ""
        delivered = rule_packets(CLIENT_NS, "INPUT")
    assert delivered >= sent // 2, (delivered, sent)  # the forgeries did reach the client
    stdout = "".join(lines) + out
    assert FORGED_IPV4 not in stdout, stdout
    events = parse(subprocess.CompletedProcess(argv, proc.returncode, stdout, err))
    srflx = candidates(events, "srflx")
    assert len(srflx) == 2 and {c["fields"][4] for c in srflx} == {ROUTER_PUBLIC_IPV4}
    assert candidates(events, "relay") == []
    failures = errors(events)  # the dead server still fails, at the deadline, not early
    dead = {f"stun:{DEAD_IPV4}", f"turn:{DEAD_IPV4}"}
    assert per_base(failures) == {(u, b) for u in dead for b in (CLIENT_IPV4_A, CLIENT_IPV4_B)}
    assert {e["errorCode"] for e in failures} == {701}
    assert all(e["t"] >= timeout - 0.05 for e in failures), failures
    done = completion(events)
    assert timeout - 0.05 <= done <= timeout + SLACK_S, done


# -- 6. the TURN server killed mid-allocation, then restarted --------------------------------

RESTART_SCRIPT = f"""
import asyncio, json, sys
from ice_engine import Gatherer, IceServer, Timing

SHORT = IceServer("turn:{SERVER_IPV4}:{SHORT_TURN_PORT}", "{USERNAME}", "{PASSWORD}")

async def once():
    timing = Timing(server_deadline=float(sys.argv[1]))
    only_a = lambda interface, address: address == "{CLIENT_IPV4_A}"
    async with Gatherer([SHORT], address_filter=only_a, timing=timing) as gatherer:
        async for event in gatherer.gather():
            print(json.dumps(event.to_json()), flush=True)

async def main():
    for _ in range(2):  # each round waits for the test's go
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await once()
        print("done", flush=True)

asyncio.run(main())
"""


def _read_until_done(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    events = []
    while (line := proc.stdout.readline()) != "done\n":
        assert line, "the gathering process ended early"
        events.append(json.loads(line))
    return events


def _short_coturn_running(lab: Lab) -> bool:
    return processes.running_pid(lab.state_dir, coturn.SHORT) is not None


def _start_short_coturn(lab: Lab) -> None:
    """Start the short coturn again exactly as the lab did (same config file and argv)."""
    conf = lab.state_dir / f"{coturn.SHORT}.conf"
    daemon = Daemon(name=coturn.SHORT, argv=("turnserver", "-c", str(conf)), netns=SERVER_NS)
    processes.start(lab.state_dir, daemon)
    deadline = time.monotonic() + 10
    while not readiness.stun_answers(SERVER_IPV4, SHORT_TURN_PORT, 0.3):
        assert time.monotonic() < deadline, "the short coturn did not come back"
        assert _short_coturn_running(lab), "the short coturn exited at start"


def test_server_killed_mid_allocation_then_restarted(lab: Lab) -> None:
    """With 100 ms each way, the short coturn is SIGKILLed 50 ms after the first Allocate
    left: that gathering fails with 701 by its deadline. Restarted the lab's way (same
    config, PID file), the same process's next gathering gets its relay, stale nonce and
    all."""
    alone_on_the_lab()
    deadline = 1.5
    try:
        with Lab.process([sys.executable, "-c", RESTART_SCRIPT, str(deadline)], stdin=True) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            lab.set_delay(100)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            started = json.loads(proc.stdout.readline())
            assert started["state"] == "gathering", started
            time.sleep(0.05)  # the Allocate is on the wire; its answer is 150 ms away
            pid = processes.running_pid(lab.state_dir, coturn.SHORT)
            assert pid is not None, "the short coturn is not running"
            os.kill(pid, signal.SIGKILL)
            processes.stop(lab.state_dir, coturn.SHORT)  # waits until gone, drops the PID file
            killed = [started, *_read_until_done(proc)]
            lab.set_delay(0)
            _start_short_coturn(lab)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            again = _read_until_done(proc)
            proc.stdin.close()
            err = proc.stderr.read() if proc.stderr else ""
            assert proc.wait(timeout=10) == 0 and err == "", err
    finally:
        lab.set_delay(0)
        if not _short_coturn_running(lab):
            _start_short_coturn(lab)
    url = f"turn:{SERVER_IPV4}:{SHORT_TURN_PORT}"
    [failure] = errors(killed)
    assert failure["url"] == url and failure["address"] == CLIENT_IPV4_A, failure
    assert failure["errorCode"] == 701, failure
    assert candidates(killed, "relay") == []
    assert completion(killed) <= deadline + SLACK_S
    assert errors(again) == [], errors(again)
    [relay] = candidates(again, "relay")
    assert relay["fields"][4] == SERVER_IPV4
    assert completion(again) < 0.5


LOST_SCRIPT = f"""
import asyncio, json
from ice_engine import Gatherer, IceServer

SHORT = IceServer(
    "turn:{SERVER_IPV4}:{SHORT_TURN_PORT}?transport=tcp", "{USERNAME}", "{PASSWORD}"
)

async def main():
    only_a = lambda interface, address: address == "{CLIENT_IPV4_A}"
    for _ in range(30):  # a 486 while an earlier test's allocation holds the quota (20 s)
        async with Gatherer([SHORT], address_filter=only_a, continual=True) as gatherer:
            async for event in gatherer.gather():
                if event.type == "icecandidateerror" and event.errorCode == 486:
                    break
                print(json.dumps(event.to_json()), flush=True)
                if event.type == "candidateremoved":
                    left = [c.type for c in gatherer.candidates]
                    print(json.dumps({{"left": left, "allocations": len(gatherer.allocations)}}))
                    return
        await asyncio.sleep(1)

asyncio.run(main())
"""


def test_a_relay_whose_server_dies_is_removed_while_gathering_continually(lab: Lab) -> None:
    """A continual gatherer's TURN/TCP relay to the short coturn: SIGKILL the server, and
    its connection ends, so does the allocation (RFC 6062), and the relay candidate goes
    with a `candidateremoved`; the host candidate stays."""
    alone_on_the_lab()
    try:
        with Lab.process([sys.executable, "-c", LOST_SCRIPT]) as proc:
            lines = Lines(proc)
            by = time.monotonic() + 40
            before = []
            while not candidates(before, "relay"):
                before.append(lines.next_json(by))
            pid = processes.running_pid(lab.state_dir, coturn.SHORT)
            assert pid is not None, "the short coturn is not running"
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            removed = lines.next_json(killed + 5)
            noticed = time.monotonic() - killed
            summary = lines.next_json(killed + 5)
            processes.stop(lab.state_dir, coturn.SHORT)  # drops the PID file
            assert proc.wait(timeout=10) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if not _short_coturn_running(lab):
            _start_short_coturn(lab)
    [relay] = candidates(before, "relay")
    assert removed["event"] == "candidateremoved", removed
    assert removed["candidate"]["candidate"] == relay["candidate"]
    assert noticed < 1.0, noticed  # the kernel closes the dead server's connection at once
    assert summary == {"left": ["host"], "allocations": 0}, summary


def test_sigterm_releases_the_allocation(lab: Lab) -> None:
    """`kill` (or `timeout`) on `ice-engine gather` closes the gatherer as Ctrl-C does:
    its allocation is released at once, so the short server's one-allocation quota is
    free again within a second or two, not after the 20 s lifetime."""
    url = f"turn:{SERVER_IPV4}:{SHORT_TURN_PORT}"
    dead = f"stun:{DEAD_IPV4}"  # never answers: the run is still gathering when killed
    exclusive = not leases.other_sessions()
    held = False
    for _ in range(8):  # another test's allocation may hold the quota for a moment
        argv = gather_argv("--ice-server", url, "--ice-server", dead, *CREDENTIALS, timeout=30)
        with Lab.process(argv) as process:
            assert process.stdout is not None
            for line in process.stdout:
                event = json.loads(line)
                if event["event"] == "icecandidate" and " typ relay " in str(event["candidate"]):
                    held = True
                    break
                if event["event"] == "icecandidateerror" and event["url"] == url:
                    break  # a 486: the quota is taken, by another test or session
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=10)
            assert process.returncode == 128 + signal.SIGTERM, err
        if held:
            break
        time.sleep(1.5)
    if not held:
        if exclusive and not leases.other_sessions():
            pytest.fail("the short server's quota never came free")
        pytest.skip("another session held the short server's quota throughout")
    started = time.monotonic()
    while time.monotonic() - started < 6:  # the lifetime is 20 s: only a release frees it
        events = gather(lab, "--ice-server", url, *CREDENTIALS)
        if candidates(events, "relay"):
            return
        time.sleep(0.5)
    pytest.fail(f"the allocation was not released: still over quota after 6 s: {events}")


# -- 4. stale nonce on a refresh -------------------------------------------------------------

STALE_NONCE_SCRIPT = f"""
import asyncio, json, os, time
# The spy below patches a method of the core, whose compiled callers would not see it.
os.environ["ICE_ENGINE_PURE_PYTHON"] = "1"
from ice_engine import Gatherer, IceServer, stun, turn

seen = []  # (seconds since the gathering started, method, error code or "ok")
original = turn.Allocation.handle_message

def spy(self, data, now):
    message = stun.parse(data)
    code = message.error_code() if message.message_class == stun.MessageClass.ERROR else None
    seen.append((round(time.monotonic() - start, 2), message.method, code[0] if code else "ok"))
    return original(self, data, now)

turn.Allocation.handle_message = spy

async def attempt():
    server = IceServer("turn:{SERVER_IPV4}:{SHORT_TURN_PORT}", "{USERNAME}", "{PASSWORD}")
    async with Gatherer([server], address_filter=lambda i, a: a == "{CLIENT_IPV4_A}") as g:
        events = [e.to_json() async for e in g.gather()]
        if not g.allocations:
            return None
        [allocation] = g.allocations
        first = allocation.expires_at
        await asyncio.sleep(21.5 - (time.monotonic() - start))
        expires = allocation.expires_at
        return {{"seen": seen, "state": str(allocation.state),
                 "extended": None if expires is None else expires - first,
                 "errors": [e for e in events if e.get("event") == "icecandidateerror"]}}

async def main():
    global start
    for _ in range(15):  # another test's allocation may hold the one-allocation quota
        start = time.monotonic()
        seen.clear()
        outcome = await attempt()
        if outcome is not None:
            break
        await asyncio.sleep(1)
    print(json.dumps(outcome))

asyncio.run(main())
"""


def test_stale_nonce_on_a_refresh_is_handled_transparently(lab: Lab) -> None:
    """The short coturn's nonces go stale after 10 s and refreshes come at half the 20 s
    lifetime. The refresh at ~10 s still passes (coturn counts whole seconds); the one at
    ~20 s gets 438 Stale Nonce, is signed again with the new nonce and succeeds: the
    allocation stays allocated and no error event is raised."""
    exclusive = not leases.other_sessions()
    result = lab.run_python(STALE_NONCE_SCRIPT, timeout_s=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    outcome = json.loads(result.stdout)
    if outcome is None:
        if exclusive and not leases.other_sessions():
            pytest.fail("the short server's quota never came free")
        pytest.skip("another session held the short server's one allocation throughout")
    refresh = int(stun.Method.REFRESH)
    refreshes = [(t, code) for t, method, code in outcome["seen"] if method == refresh]
    assert outcome["state"] == "allocated", outcome
    assert outcome["errors"] == [], outcome
    assert outcome["extended"] is not None and outcome["extended"] > 15, outcome  # twice
    stale = [i for i, (_, code) in enumerate(refreshes) if code == 438]
    assert stale, refreshes  # the server did find the nonce stale
    assert all(refreshes[i + 1][1] == "ok" for i in stale), refreshes  # and it was retried
    assert refreshes[-1][1] == "ok", refreshes
