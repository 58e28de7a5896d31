"""The shared socket's routing, on loopback: transaction IDs, ufrags, latched peers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from ice_engine import stun
from ice_engine.sharedport import Deliver, SharedPortSession, shared_socket

Seen = list[tuple[str, bytes, tuple[str, int]]]


def check_for(ufrag: str) -> bytes:
    """A peer's connectivity check: USERNAME is the receiver's ufrag, then the sender's."""
    username = (stun.Attr.USERNAME, f"{ufrag}:peer".encode())
    return stun.encode(
        stun.Method.BINDING, stun.MessageClass.REQUEST, stun.new_transaction_id(), [username]
    )


async def settle(seen: Seen, count: int) -> None:
    for _ in range(200):
        if len(seen) >= count:
            return
        await asyncio.sleep(0.005)


async def test_checks_route_by_ufrag_and_latch_their_peer() -> None:
    loop = asyncio.get_running_loop()
    shared = shared_socket(loop, socket.AF_INET, "127.0.0.1", 0)
    port = shared.sock.getsockname()[1]
    seen: Seen = []

    def session(name: str) -> Deliver:
        return lambda data, source: seen.append((name, data, source))

    alice, bob = session("alice"), session("bob")
    shared.claim("aliceufr", alice)
    shared.claim("bobufrag", bob)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        stranger.bind(("127.0.0.1", 0))
        here = ("127.0.0.1", port)
        stranger.sendto(b"\x17 not for anyone", here)  # no check yet: dropped
        stranger.sendto(check_for("nobody00"), here)  # nobody's ufrag: dropped
        peer.sendto(check_for("bobufrag"), here)
        await settle(seen, 1)
        peer.sendto(b"\x17 media after the check", here)  # latched: to bob as well
        await settle(seen, 2)
        shared.latch(stranger.getsockname(), alice)  # alice sent to it first
        stranger.sendto(b"\x17 an answer to alice", here)
        await settle(seen, 3)
        assert [(name, data[:1]) for name, data, _ in seen] == [
            ("bob", b"\x00"),
            ("bob", b"\x17"),
            ("alice", b"\x17"),
        ]
        assert {source for _, _, source in seen[:2]} == {peer.getsockname()}
        peer.sendto(check_for("nobody00"), here)  # from bob's latched peer, yet nobody's
        await asyncio.sleep(0.05)
        assert len(seen) == 3  # dropped: a check goes by its ufrag alone
        shared.release_session(bob, ["bobufrag"])
        peer.sendto(b"\x17 after bob left", here)
        peer.sendto(check_for("bobufrag"), here)
        stranger.sendto(b"\x17 alice still there", here)
        await settle(seen, 4)
        await asyncio.sleep(0.05)
        assert [name for name, _, _ in seen] == ["bob", "bob", "alice", "alice"]
    finally:
        peer.close()
        stranger.close()
        shared.release()


async def test_a_ufrag_another_session_holds_is_refused() -> None:
    shared = shared_socket(asyncio.get_running_loop(), socket.AF_INET, "127.0.0.1", 0)
    first: Deliver = lambda data, source: None  # noqa: E731
    try:
        shared.claim("sameufrg", first)
        shared.claim("sameufrg", first)  # the same session again: fine
        with pytest.raises(ValueError, match="ufrag 'sameufrg' is taken on the shared port"):
            shared.claim("sameufrg", lambda data, source: None)
    finally:
        shared.release()


async def test_a_retired_generations_ufrag_routes_nowhere() -> None:
    loop = asyncio.get_running_loop()
    shared = shared_socket(loop, socket.AF_INET, "127.0.0.1", 0)
    here = ("127.0.0.1", shared.sock.getsockname()[1])
    seen: Seen = []

    def session(data: bytes, source: tuple[str, int]) -> None:
        seen.append(("session", data, source))

    shared.claim("gen0ufrg", session)
    shared.claim("gen1ufrg", session)
    shared.unclaim(session, ["gen0ufrg"])  # generation 0's sockets were released
    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        for peer in peers:
            peer.bind(("127.0.0.1", 0))
        peers[0].sendto(check_for("gen0ufrg"), here)
        peers[1].sendto(check_for("gen1ufrg"), here)
        await settle(seen, 1)
        await asyncio.sleep(0.05)
        assert [source for _, _, source in seen] == [peers[1].getsockname()]
    finally:
        for peer in peers:
            peer.close()
        shared.release()


def test_a_closed_loop_s_shared_socket_is_not_joined_and_its_port_comes_free() -> None:
    """A loop closed with a gatherer still on the port: the next loop gets a socket of
    its own on that port (the old one was read by the dead loop, and held the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def join() -> socket.socket:
        return shared_socket(asyncio.get_running_loop(), socket.AF_INET, "127.0.0.1", port).sock

    first = asyncio.run(join())  # never released: the loop closes under it
    second_loop = asyncio.new_event_loop()
    try:
        second = second_loop.run_until_complete(join())
        assert second is not first and first.fileno() == -1
        assert second.getsockname() == ("127.0.0.1", port)
    finally:
        second.close()
        second_loop.close()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_icmp_error_goes_to_the_request_s_session_and_the_queue_is_emptied() -> None:
    """The error quotes the datagram that caused it, and so its transaction ID: it goes to
    that request's route, not to another's, and the socket is left with no error queued
    (one left queued would make it read as in error for ever)."""
    loop = asyncio.get_running_loop()
    shared = shared_socket(loop, socket.AF_INET, "127.0.0.1", 0)
    told: list[tuple[str, tuple[str, int], str]] = []
    try:
        closed = ("127.0.0.1", _closed_port())
        for name in ("one", "other"):
            request = stun.encode(
                stun.Method.BINDING, stun.MessageClass.REQUEST, stun.new_transaction_id()
            )
            route = (
                lambda data, source: None,
                lambda destination, cause, name=name: told.append((name, destination, cause)),
            )
            shared.expect(request[8:20], route)
            if name == "one":
                shared.sock.sendto(request, closed)
        for _ in range(200):
            if told:
                break
            await asyncio.sleep(0.005)
        assert told == [("one", closed, "ICMP port unreachable")]
        assert shared.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        try:
            shared.sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
            raise AssertionError("an ICMP error was left queued")
        except BlockingIOError:
            pass
    finally:
        shared.release()


async def test_a_burst_of_answers_is_kept_and_read_whole_at_one_readiness() -> None:
    """A thousand sessions' answers come at once: the shared socket's receive buffer is
    raised so that none is dropped (the default holds ~270 of them), and one readiness
    reads them all, before their requests' retransmission timers can run."""
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem_max = int(f.read())
    if rmem_max < 2 * 1024 * 1024:
        pytest.skip(f"net.core.rmem_max is {rmem_max} bytes here, too little for the burst")
    shared = shared_socket(asyncio.get_running_loop(), socket.AF_INET, "127.0.0.1", 0)
    got: list[bytes] = []
    route = (lambda data, _source: got.append(data[8:20]), lambda _destination: None)
    try:
        sent = [stun.new_transaction_id() for _ in range(1000)]
        for transaction_id in sent:
            shared.expect(transaction_id, route)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
            for transaction_id in sent:
                answer = stun.encode(stun.Method.BINDING, stun.MessageClass.SUCCESS, transaction_id)
                server.sendto(answer, shared.sock.getsockname())
        shared._on_readable()
        assert sorted(got) == sorted(sent)
    finally:
        shared.release()


async def test_a_session_routes_its_answers_and_its_generations_checks_then_lets_go() -> None:
    """`SharedPortSession`, a gatherer's side of the shared socket, without a gatherer."""
    loop = asyncio.get_running_loop()
    shared = shared_socket(loop, socket.AF_INET, "127.0.0.1", 0)
    here = ("127.0.0.1", shared.sock.getsockname()[1])
    seen: Seen = []
    session = SharedPortSession(
        on_answer=lambda key, data, source: seen.append((f"answer {key}", data, source)),
        on_unreachable=lambda key, destination, cause: None,
        on_peer=lambda local, data, source: seen.append((f"peer at {local[1]}", data, source)),
    )
    session.ufrags.update({0: "gen0ufrag", 1: "gen1ufrag"})
    session.claim(shared, here, 0)
    session.claim(shared, here, 1)
    request = stun.encode(
        stun.Method.BINDING, stun.MessageClass.REQUEST, stun.new_transaction_id(), []
    )
    session.expect(shared, 7, request, 0.0)
    answer = stun.encode(
        stun.Method.BINDING, stun.MessageClass.SUCCESS, stun.parse(request).transaction_id, []
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.sendto(answer, here)
        peer.sendto(check_for("gen0ufrag"), here)
        await settle(seen, 2)
        session.retire(lambda generation: generation >= 1)  # a restart: generation 0 goes
        peer.sendto(check_for("gen0ufrag"), here)  # its checks route nowhere now
        peer.sendto(check_for("gen1ufrag"), here)
        await settle(seen, 3)
        to_peer = f"peer at {here[1]}"
        assert [name for name, _, _ in seen] == ["answer 7", to_peer, to_peer]
        assert session.ufrags == {1: "gen1ufrag"}
        session.expect(shared, 7, request, 1.0)
        session.close()
        peer.sendto(answer, here)  # forgotten: no longer routed to the closed session
        peer.sendto(check_for("gen1ufrag"), here)
        await asyncio.sleep(0.05)
        assert len(seen) == 3
    shared.release()


async def test_a_session_forgets_the_routes_of_requests_never_answered() -> None:
    """They stayed, in the process-wide socket too, until the gatherer closed: a session
    living for days, restarting against a dead server, kept every one."""
    shared = shared_socket(asyncio.get_running_loop(), socket.AF_INET, "127.0.0.1", 0)
    session = SharedPortSession(
        on_answer=lambda *_: None, on_unreachable=lambda *_: None, on_peer=lambda *_: None
    )

    def request() -> bytes:
        tid = stun.new_transaction_id()
        return stun.encode(stun.Method.BINDING, stun.MessageClass.REQUEST, tid, [])

    first, resent, late = request(), request(), request()
    session.expect(shared, 1, first, 0.0)
    session.expect(shared, 1, resent, 1.0)
    session.expect(shared, 1, resent, 30.0)  # a retransmission: kept from its last send
    session.expect(shared, 1, late, 61.0)
    assert set(shared._routes) == {resent[8:20], late[8:20]}
    session.expect(shared, 1, request(), 95.0)
    assert late[8:20] in shared._routes and resent[8:20] not in shared._routes
    session.close()
    assert shared._routes == {}
    shared.release()
