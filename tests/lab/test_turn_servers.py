"""TURN against the lab's extra servers: node-turn (a warm nonce saves the 401) and
coturn behind stunnel (TLS 1.3). At 50 ms RTT, so that round trips can be counted."""

from __future__ import annotations

import json

import pytest

from ice_engine.lab import (
    CA_CERT_FILE,
    NODE_TURN_PORT,
    PASSWORD,
    SERVER_IPV4,
    TLS13_PORT,
    TLS_PORT,
    USERNAME,
    Lab,
)
from ice_engine.lab.lab import EXTRAS

pytestmark = pytest.mark.lab

RTT_MS = 50

# Each gathering reports its relay's time (ms from gather()) or its error codes.
SCRIPT = """
import asyncio, json, ssl, time
from ice_engine import Gatherer, IceServer

def context():
    c = ssl.create_default_context(cafile="{ca}")
    c.minimum_version = ssl.TLSVersion.TLSv1_3
    return c

TLS13 = context()

async def relay(url):
    server = IceServer(url, "{user}", "{password}")
    only = lambda i, a: a == "203.0.113.2"
    async with Gatherer([server], address_filter=only, ssl_context=TLS13) as g:
        started = time.perf_counter()
        out = {{"errors": []}}
        async for e in g.gather():
            if e.type == "icecandidateerror":
                out["errors"].append(e.errorCode)
            elif e.type == "icecandidate" and e.candidate and e.candidate.type == "relay":
                out["relay_ms"] = (time.perf_counter() - started) * 1000
        return out

async def main():
    print(json.dumps([await relay(url) for url in {urls}]))

asyncio.run(main())
"""


def relays(lab: Lab, *urls: str) -> list[dict[str, object]]:
    code = SCRIPT.format(ca=CA_CERT_FILE, user=USERNAME, password=PASSWORD, urls=list(urls))
    result = lab.run_python(code, timeout_s=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def need(lab: Lab, extra: str) -> None:
    assert extra in EXTRAS
    reason = lab.extra_missing(extra)
    if reason is not None:
        pytest.skip(reason)


def test_a_warm_nonce_allocates_in_one_round_trip(delayed_lab: Lab) -> None:
    """node-turn keeps nonces server-wide: the gatherers after the first send their first
    Allocate signed with the cached realm and nonce, and get no 401 to wait for."""
    need(delayed_lab, "node-turn")
    url = f"turn:{SERVER_IPV4}:{NODE_TURN_PORT}"
    cold, warm, warmer = relays(delayed_lab, url, url, url)
    for run in (cold, warm, warmer):
        assert run["errors"] == []
    assert 2 * RTT_MS <= cold["relay_ms"] < 3 * RTT_MS  # type: ignore[operator]
    for run in (warm, warmer):
        assert RTT_MS <= run["relay_ms"] < 1.5 * RTT_MS  # type: ignore[operator]


def test_turn_over_tls_1_3_in_four_round_trips(delayed_lab: Lab) -> None:
    """TCP, a TLS 1.3 handshake, the 401 and the Allocate: 4 RTT where coturn's own
    TLS 1.2 takes 5. The same TLS-1.3-only context is refused by coturn's TLS port.
    The best of three gatherings is timed (the later ones resume the TLS session and
    meet coturn's 438 for the cached nonce: 4 RTT all the same): one of them came in
    38 ms late once, in a CI run on a busy host."""
    need(delayed_lab, "stunnel")
    tls13 = f"turns:{SERVER_IPV4}:{TLS13_PORT}?transport=tcp"
    *runs, tls12_only = relays(
        delayed_lab, tls13, tls13, tls13, f"turns:{SERVER_IPV4}:{TLS_PORT}?transport=tcp"
    )
    assert all(run["errors"] == [] for run in runs), runs
    best = min(float(run["relay_ms"]) for run in runs)  # type: ignore[arg-type]
    assert 4 * RTT_MS <= best < 4.6 * RTT_MS, runs
    assert "relay_ms" not in tls12_only
    assert tls12_only["errors"]
