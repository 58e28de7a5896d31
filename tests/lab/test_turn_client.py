"""The TURN client allocation against the lab's coturn, over real UDP behind the NAT."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from ice_engine import stun
from ice_engine.lab import (
    PASSWORD,
    ROUTER_PUBLIC_IPV4,
    SERVER_IPV4,
    SERVER_IPV6,
    SHORT_TURN_PORT,
    STUN_PORT,
    USERNAME,
    Lab,
)
from ice_engine.transaction import Timing
from ice_engine.turn import (
    Allocated,
    Allocation,
    AllocationFailed,
    NonceCache,
    TurnCredentials,
    TurnEvent,
)

pytestmark = pytest.mark.lab

MAIN = (SERVER_IPV4, STUN_PORT)
SHORT = (SERVER_IPV4, SHORT_TURN_PORT)


@dataclass
class Client:
    """A tiny synchronous driver: one UDP socket in the client namespace, one allocation."""

    sock: socket.socket
    allocation: Allocation
    events: list[TurnEvent] = field(default_factory=list)
    answers: list[stun.Message] = field(default_factory=list)
    sent: list[stun.Message] = field(default_factory=list)

    def run(self, done: Callable[[], bool], limit: float = 5.0) -> None:
        server = self.allocation.server
        stop = time.monotonic() + limit
        while not done():
            now = time.monotonic()
            assert now < stop, f"stuck in state {self.allocation.state}"
            while (data := self.allocation.next_outgoing()) is not None:
                self.sock.sendto(data, server)
                self.sent.append(stun.parse(data))
            timer = self.allocation.get_timer()
            self.sock.settimeout(min(max((timer or stop) - now, 0.001), stop - now))
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                self.allocation.handle_timer(time.monotonic())
            else:
                if source[:2] == server and self.allocation.handle_message(data, time.monotonic()):
                    self.answers.append(stun.parse(data))
            while (event := self.allocation.next_event()) is not None:
                self.events.append(event)

    def allocate(self) -> TurnEvent:
        self.allocation.start(time.monotonic())
        self.run(lambda: self.allocation.state not in ("new", "allocating"))
        return self.events[0]

    def close(self) -> None:
        self.allocation.close(time.monotonic())
        self.run(lambda: self.allocation.state in ("closed", "failed"))


def allocation(
    server: tuple[str, int],
    *,
    password: str = PASSWORD,
    cache: NonceCache | None = None,
    family: int = socket.AF_INET,
) -> Allocation:
    return Allocation(
        server,
        credentials=TurnCredentials(USERNAME, password),
        timing=Timing(),
        nonce_cache=cache,
        family=family,
        deadline=time.monotonic() + 3.0,
    )


def test_ipv4_relay_and_mapped_address_through_the_nat(lab: Lab) -> None:
    with lab.socket() as sock:
        client = Client(sock, allocation(MAIN))
        event = client.allocate()
        assert isinstance(event, Allocated), event
        [(relay_ip, relay_port)] = event.relayed
        assert relay_ip == SERVER_IPV4 and relay_port > 0
        assert event.mapped is not None and event.mapped[0] == ROUTER_PUBLIC_IPV4
        assert event.lifetime > 60
        client.close()
        last = client.answers[-1]  # closed by the server's answer, not by the time bound
        assert (last.method, last.message_class) == (stun.Method.REFRESH, stun.MessageClass.SUCCESS)


def test_ipv6_relay_requested_over_ipv4(lab: Lab) -> None:
    with lab.socket() as sock:
        client = Client(sock, allocation(MAIN, family=socket.AF_INET6))
        event = client.allocate()
        assert isinstance(event, Allocated), event
        assert [ip for ip, _ in event.relayed] == [SERVER_IPV6]
        client.close()


def test_wrong_password_fails_with_401(lab: Lab) -> None:
    with lab.socket() as sock:
        client = Client(sock, allocation(MAIN, password="not-" + PASSWORD))
        event = client.allocate()
        assert isinstance(event, AllocationFailed) and event.code == 401, event
        assert PASSWORD not in event.reason
        assert client.allocation.state == "failed"


def test_warm_nonce_authenticates_the_first_allocate(lab: Lab) -> None:
    """coturn ties a nonce to its 5-tuple session, so a new socket gets 438 then success.

    The 1-RTT case (a server whose nonces outlive the session) is covered by the unit
    tests; here the cached nonce must at least cost nothing over a cold start.
    """
    cache = NonceCache()
    with lab.socket() as sock:
        client = Client(sock, allocation(MAIN, cache=cache))
        assert isinstance(client.allocate(), Allocated)
        assert client.sent[0].get(stun.Attr.USERNAME) is None
        assert client.answers[0].error_code() is not None  # the 401
        client.close()
    with lab.socket() as sock:
        client = Client(sock, allocation(MAIN, cache=cache))
        assert isinstance(client.allocate(), Allocated)
        assert client.sent[0].get(stun.Attr.USERNAME) == USERNAME.encode()
        codes = [(a.error_code() or (0, ""))[0] for a in client.answers]
        assert codes in ([0], [438, 0]), codes
        client.close()


def allocate_within_quota(sock: socket.socket) -> Client:
    """An allocation on the short server, waiting out a just-closed one's quota.

    coturn frees a user's quota when it reaps the closed session, about a second later.
    """
    stop = time.monotonic() + 3.0
    while True:
        client = Client(sock, allocation(SHORT))
        event = client.allocate()
        if not isinstance(event, AllocationFailed) or event.code != 486:
            break
        if time.monotonic() > stop:
            break
        time.sleep(0.2)
    assert isinstance(event, Allocated), event
    return client


def test_user_quota_gives_486_until_the_first_allocation_is_closed(lab: Lab) -> None:
    with lab.socket() as first_sock, lab.socket() as second_sock:
        first = allocate_within_quota(first_sock)
        second = Client(second_sock, allocation(SHORT))
        event = second.allocate()
        assert isinstance(event, AllocationFailed) and event.code == 486, event
        first.close()
        assert first.answers[-1].message_class == stun.MessageClass.SUCCESS  # deallocated
    with lab.socket() as sock:
        allocate_within_quota(sock).close()  # the quota is free again


def test_dual_allocation_degrades_to_ipv4_where_the_server_ignores_it(lab: Lab) -> None:
    with lab.socket() as sock:
        dual = Allocation(
            MAIN,
            credentials=TurnCredentials(USERNAME, PASSWORD),
            additional_family=True,
            deadline=time.monotonic() + 3.0,
        )
        client = Client(sock, dual)
        event = client.allocate()
        assert isinstance(event, Allocated), event
        assert SERVER_IPV4 in [ip for ip, _ in event.relayed]  # coturn 4.6 ignores the IPv6 ask
        client.close()
