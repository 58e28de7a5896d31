"""The data path a connectivity layer uses: peers' datagrams reach `on_datagram`, and
`send` goes out from a candidate's socket (a private one, a shared port, or a relay)."""

from __future__ import annotations

import json
import socket
import sys

import pytest

from ice_engine.lab import (
    CLIENT_IPV4_A,
    CLIENT_IPV4_B,
    PASSWORD,
    SERVER_ALT_IPV4,
    SERVER_IPV4,
    SERVER_NS,
    USERNAME,
    Lab,
)

pytestmark = pytest.mark.lab

# Peers live on the client's second address: on one LAN with the gatherer, no NAT between.
BASES = """
import asyncio, json, socket
from ice_engine import Gatherer, stun

def check_for(ufrag):
    username = (stun.Attr.USERNAME, f"{{ufrag}}:peer".encode())
    return stun.encode(stun.Method.BINDING, stun.MessageClass.REQUEST,
                       stun.new_transaction_id(), [username])

def peer_socket():
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("{peer_ip}", 0))
    peer.setblocking(False)
    return peer

async def main():
    loop = asyncio.get_running_loop()
    got = {{"a": [], "b": []}}
    only_a = lambda interface, address: address == "{local_ip}"
    def gatherer(name, shared):
        handler = lambda local, peer, data: got[name].append([list(local), list(peer), data.hex()])
        return Gatherer(shared_port=shared, address_filter=only_a, on_datagram=handler)
    async def host_of(g):
        [host] = [e.candidate async for e in g.gather()
                  if e.type == "icecandidate" and e.candidate and e.candidate.type]
        return host
    report = {{}}
    for mode, shared in (("private", None), ("shared", 40020)):
        got["a"].clear(); got["b"].clear()
        a, b = gatherer("a", shared), gatherer("b", shared)
        host_a, host_b = await host_of(a), await host_of(b)
        checker, stranger, answerer = peer_socket(), peer_socket(), peer_socket()
        checker.sendto(check_for(b.credentials.ufrag), (host_b.address, host_b.port))
        stranger.sendto(check_for("nobody00"), (host_b.address, host_b.port))
        await asyncio.sleep(0.1)
        checker.sendto(b"media after the check", (host_b.address, host_b.port))
        a.send(host_a, answerer.getsockname(), b"hello from a")
        data, source = await asyncio.wait_for(loop.sock_recvfrom(answerer, 2048), 5)
        answerer.sendto(b"answer to " + data, source)
        await asyncio.sleep(0.1)
        report[mode] = {{
            "hosts": [[host_a.address, host_a.port], [host_b.address, host_b.port]],
            "sent_from": list(source), "got": {{"a": list(got["a"]), "b": list(got["b"])}},
            "peers": {{"checker": list(checker.getsockname()), "stranger": list(stranger.getsockname()),
                       "answerer": list(answerer.getsockname())}},
        }}
        for s in (checker, stranger, answerer):
            s.close()
        await a.close(); await b.close()
    print(json.dumps(report))

asyncio.run(main())
"""


def test_peers_reach_their_session_on_private_and_shared_ports(lab: Lab) -> None:
    script = BASES.format(peer_ip=CLIENT_IPV4_B, local_ip=CLIENT_IPV4_A)
    result = lab.run_python(script, timeout_s=30)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for mode, outcome in report.items():
        host_a, host_b = (tuple(h) for h in outcome["hosts"])
        peers = {name: tuple(address) for name, address in outcome["peers"].items()}
        assert tuple(outcome["sent_from"]) == host_a, mode  # send() uses the candidate's socket
        got_a = [
            (tuple(local), tuple(peer), bytes.fromhex(data))
            for local, peer, data in outcome["got"]["a"]
        ]
        got_b = [
            (tuple(local), tuple(peer), bytes.fromhex(data))
            for local, peer, data in outcome["got"]["b"]
        ]
        assert got_a == [(host_a, peers["answerer"], b"answer to hello from a")], mode
        froms = [(local, peer) for local, peer, _ in got_b]
        if mode == "shared":
            assert host_a == host_b == (CLIENT_IPV4_A, 40020)
            # By ufrag: the check and then the checker's media reach b; the stranger's
            # check names nobody's ufrag and reaches no one.
            assert froms == [(host_b, peers["checker"])] * 2, got_b
            assert got_b[1][2] == b"media after the check"
        else:
            # A private socket delivers everything that is not the gatherer's own.
            assert sorted(froms) == sorted(
                [(host_b, peers["checker"])] * 2 + [(host_b, peers["stranger"])]
            ), got_b


RELAY = """
import asyncio, json
from ice_engine import Gatherer, IceServer

async def main():
    received = asyncio.Queue()
    server = IceServer("turn:{server}", "{user}", "{password}")
    only_a = lambda interface, address: address == "{local_ip}"
    async with Gatherer([server], address_filter=only_a, ice_transport_policy="relay",
                        on_relayed=lambda a, peer, data: received.put_nowait(data.decode())) as g:
        [relay] = [e.candidate async for e in g.gather()
                   if e.type == "icecandidate" and e.candidate and e.candidate.type]
        g.send(relay, ("{peer}", {port}), b"through the relay")  # asks for the permission
        reply = await asyncio.wait_for(received.get(), 5)
        print(json.dumps({{"relay": [relay.address, relay.port], "reply": reply}}))

asyncio.run(main())
"""


def test_send_from_a_relay_candidate_asks_for_the_permission(lab: Lab) -> None:
    with lab.socket(socket.AF_INET, socket.SOCK_DGRAM, netns=SERVER_NS) as peer:
        peer.bind((SERVER_ALT_IPV4, 0))
        peer.settimeout(10)
        script = RELAY.format(
            server=SERVER_IPV4,
            user=USERNAME,
            password=PASSWORD,
            local_ip=CLIENT_IPV4_A,
            peer=SERVER_ALT_IPV4,
            port=peer.getsockname()[1],
        )
        with lab.process([sys.executable, "-c", script]) as client:
            data, relayed_from = peer.recvfrom(2048)
            peer.sendto(b"back through it", relayed_from)
            out, err = client.communicate(timeout=20)
    assert client.returncode == 0, err
    result = json.loads(out)
    assert data == b"through the relay"
    assert list(relayed_from) == result["relay"]
    assert result["reply"] == "back through it"


RAISING = """
import asyncio, json, socket
from ice_engine import Gatherer

async def main():
    loop = asyncio.get_running_loop()
    reported, got = [], []
    loop.set_exception_handler(
        lambda loop, context: reported.append([context["message"], repr(context["exception"])]))
    def handler(local, peer, data):
        if data == b"first":
            raise ValueError("the application's own bug")
        got.append(data.decode())
    only_a = lambda interface, address: address == "{local_ip}"
    async with Gatherer(address_filter=only_a, on_datagram=handler) as g:
        [host] = [e.candidate async for e in g.gather()
                  if e.type == "icecandidate" and e.candidate and e.candidate.type]
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("{peer_ip}", 0))
        for data in (b"first", b"second"):
            peer.sendto(data, (host.address, host.port))
            await asyncio.sleep(0.1)
        peer.close()
    print(json.dumps({{"got": got, "reported": reported}}))

asyncio.run(main())
"""


def test_a_raising_callback_is_reported_and_delivery_goes_on(lab: Lab) -> None:
    script = RAISING.format(peer_ip=CLIENT_IPV4_B, local_ip=CLIENT_IPV4_A)
    result = lab.run_python(script, timeout_s=30)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["got"] == ["second"]
    # Caught by the gatherer itself, not by asyncio around the socket hub (which would
    # skip the other sockets ready in that round and the gatherer's own servicing).
    [(message, exception)] = report["reported"]
    assert message.startswith("ice-engine: ") and "raised" in message
    assert exception == "ValueError(\"the application's own bug\")"
