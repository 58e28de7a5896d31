"""NAT behaviour discovery (RFC 5780), sans I/O: `natcheck.py` drives it with asyncio.

`NatCheck` runs the tests of RFC 5780 §4.3 (mapping) and §4.4 (filtering) against one
STUN server that has a second IP address and port (it answers with OTHER-ADDRESS). It
does no I/O: the caller passes every datagram received and the current time, and sends
the datagrams it returns. `natcheck.discover_nat` is that caller for asyncio, with one
UDP socket per server address tried.

The tests run in three phases, so that no test opens the NAT's filter for another:

1. Test I: a Binding request to the primary address gives the mapped address and
   OTHER-ADDRESS. The mapped address equal to the local one means there is no NAT.
2. Filtering, both requests to the primary address at once: test II asks with
   CHANGE-REQUEST for an answer from the other IP and port, test III for an answer from
   the other port only. An answer to test II means endpoint-independent filtering; else
   an answer to test III means address-dependent; else address-and-port-dependent.
3. Mapping, both at once: test II to the other IP and the primary port, test III to the
   other IP and port. Test II mapped as test I means endpoint-independent mapping; else
   test III mapped as test II means address-dependent; else address-and-port-dependent.

Filtering goes first because the mapping tests send to the other address, and once the
client has sent there a NAT lets that address's answers in, whatever its filtering.
Every request is a `StunTransaction` (retransmitted, with a deadline); a response counts
only if its transaction id is one this check sent and is still waiting for.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from . import stun
from .transaction import StunTransaction, Timing, positive_seconds
from .urls import UnusableAddress, answered_address, hostport

__all__ = [
    "CHANGE_IP",
    "CHANGE_PORT",
    "Datagram",
    "FilteringBehaviour",
    "MappingBehaviour",
    "NatBehaviour",
    "NatCheck",
    "Probe",
]

MappingBehaviour = Literal[
    "endpoint-independent",
    "address-dependent",
    "address-and-port-dependent",
    "no NAT",
    "unknown",
]
FilteringBehaviour = Literal[
    "endpoint-independent", "address-dependent", "address-and-port-dependent", "unknown"
]
Address = tuple[str, int]

CHANGE_IP = 0x04
"""CHANGE-REQUEST flag: answer from the other IP address (RFC 5780 §7.2)."""
CHANGE_PORT = 0x02
"""CHANGE-REQUEST flag: answer from the other port."""

_U32 = struct.Struct("!I")


class Datagram(NamedTuple):
    """A datagram for the caller to send."""

    data: bytes
    address: Address


@dataclass(frozen=True, slots=True)
class Probe:
    """One test: where its request went and what came back."""

    name: str
    """"test I", "filtering test II", "filtering test III", "mapping test II" or
    "mapping test III"."""
    destination: Address
    change_request: int = 0
    """CHANGE_IP | CHANGE_PORT flags sent, 0 for none."""
    answered: bool = False
    mapped: Address | None = None
    """XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS) of the answer."""
    source: Address | None = None
    """Where the answer came from."""
    error: str | None = None
    """An error response ("420 Unknown Attribute"), or why the answer was not used."""
    transmissions: int = 0
    abandoned: bool = False
    """Still unanswered when its answer could no longer change the result (known
    already, or a test it depends on failed), and no longer waited for."""

    def outcome(self) -> str:
        """What came of it, in words: the mapped address, or why none."""
        if self.answered:
            return f"mapped {_address_text(self.mapped)} (from {_address_text(self.source)})"
        if self.abandoned:
            return "not waited for (it could not change the result)"
        return self.error or "no answer"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "destination": _address_text(self.destination),
            "changeRequest": _change_text(self.change_request) or None,
            "answered": self.answered,
            "mapped": _address_text(self.mapped),
            "source": _address_text(self.source),
            "error": self.error,
            "transmissions": self.transmissions,
            "abandoned": self.abandoned,
        }


@dataclass(frozen=True, slots=True)
class NatBehaviour:
    """What RFC 5780 discovery found out about the path to one STUN server."""

    server: Address
    local: Address
    """The socket's address: compared with the mapped address to detect a NAT."""
    mapping: MappingBehaviour
    filtering: FilteringBehaviour
    answered: bool
    """False when the server never answered test I: nothing could be classified."""
    mapped: Address | None
    """The mapped address from test I: the address the server saw."""
    other_address: Address | None
    """The server's OTHER-ADDRESS (its alternate IP and port), if it gave one."""
    rfc5780: bool
    """True when the server supports RFC 5780 (it sent OTHER-ADDRESS)."""
    probes: tuple[Probe, ...] = ()
    notes: tuple[str, ...] = ()
    """Why something is "unknown", or anything else worth saying, one sentence each."""

    @property
    def mapped_addresses(self) -> dict[str, Address]:
        """The mapped address of every answered test, by test name."""
        return {p.name: p.mapped for p in self.probes if p.mapped is not None}

    def to_json(self) -> dict[str, Any]:
        return {
            "server": _address_text(self.server),
            "local": _address_text(self.local),
            "answered": self.answered,
            "rfc5780": self.rfc5780,
            "mapping": self.mapping,
            "filtering": self.filtering,
            "mapped": _address_text(self.mapped),
            "otherAddress": _address_text(self.other_address),
            "mappedAddresses": {k: _address_text(v) for k, v in self.mapped_addresses.items()},
            "probes": [p.to_json() for p in self.probes],
            "notes": list(self.notes),
        }

    def to_text(self) -> str:
        """The result as `ice-engine nat` prints it: what was classified, what it means
        for ICE, and each test's outcome."""
        if self.rfc5780:
            other = f"RFC 5780: yes, other address {_address_text(self.other_address)}"
        else:
            other = "RFC 5780: no (no OTHER-ADDRESS)"
        lines = [
            f"server     {_address_text(self.server)} ({other})",
            f"local      {_address_text(self.local)}",
            f"mapped     {_address_text(self.mapped) or '-'}",
            f"mapping    {self.mapping}",
            f"filtering  {self.filtering}",
            "",
            self.summary(),
        ]
        if self.probes:
            lines += ["", "tests:"]
        for probe in self.probes:
            change = _change_text(probe.change_request)
            to = hostport(*probe.destination) + (f" change {change}" if change else "")
            lines.append(f"  {probe.name:<19} to {to}: {probe.outcome()}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def summary(self) -> str:
        """One sentence on what this means for ICE."""
        if not self.answered:
            return "The server did not answer: nothing could be classified."
        if self.mapping == "no NAT":
            return "No NAT on this path: host candidates are reachable as they are."
        if self.mapping == "endpoint-independent":
            return (
                "The NAT keeps one public address per socket: server-reflexive candidates "
                "work for any peer."
            )
        if self.mapping in ("address-dependent", "address-and-port-dependent"):
            return (
                "The NAT maps each destination anew (a 'symmetric' NAT): server-reflexive "
                "candidates are of no use to other peers; expect to need a TURN relay."
            )
        return (
            "There is a NAT (the server saw another address), but its mapping behaviour "
            "could not be tested."
        )


@dataclass(slots=True)
class _Test:
    transaction_id: bytes
    name: str
    destination: Address
    change_request: int
    transaction: StunTransaction
    expected_source: Address | None = None
    done: bool = False
    abandoned: bool = False
    answered: bool = False
    mapped: Address | None = None
    other: Address | None = None
    source: Address | None = None
    error: str | None = None

    def probe(self) -> Probe:
        return Probe(
            name=self.name,
            destination=self.destination,
            change_request=self.change_request,
            answered=self.answered,
            mapped=self.mapped,
            source=self.source,
            error=self.error,
            transmissions=self.transaction.transmissions,
            abandoned=self.abandoned,
        )


class NatCheck:
    """The RFC 5780 tests as a sans-I/O state machine.

    Call `start(now)` once and send what it returns; then call `receive` for every
    datagram that arrives on the socket and `poll` whenever `timer` is reached, sending
    what they return, until `done`. `result()` then gives the classification.

    `local` is the address the socket is bound to (a specific IP, not a wildcard), and
    `timeout` bounds each phase: a test unanswered by then counts as lost.
    """

    def __init__(
        self,
        server: Address,
        local: Address,
        *,
        timeout: float = 3.0,
        timing: Timing | None = None,
    ) -> None:
        timeout = positive_seconds(timeout, "timeout")
        self.server = _normalize(server)
        self.local = _normalize(local)
        self.timeout = timeout
        self.timing = timing or Timing()
        self._phase: Literal["new", "test1", "filtering", "mapping", "done"] = "new"
        self._tests: list[_Test] = []
        self._pending: dict[bytes, _Test] = {}
        self._notes: list[str] = []
        self._mapping: MappingBehaviour = "unknown"
        self._filtering: FilteringBehaviour = "unknown"
        self._other: Address | None = None

    # -- driving --------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._phase == "done"

    @property
    def timer(self) -> float | None:
        """When `poll` must next be called, or None when nothing is waiting."""
        if not self._pending:
            return None
        return min(test.transaction.timer for test in self._pending.values())

    def start(self, now: float) -> list[Datagram]:
        """Test I: the first request."""
        if self._phase != "new":
            raise RuntimeError("NatCheck.start called twice")
        self._phase = "test1"
        return [self._send("test I", self.server, 0, now)]

    def receive(self, data: bytes, source: tuple[Any, ...], now: float) -> list[Datagram]:
        """A datagram from the socket and its source as `recvfrom` gives it.

        Anything but an answer to a pending request is ignored.
        """
        if not stun.is_stun(data):
            return []
        try:
            message = stun.parse(data)
        except stun.StunError:
            return []
        if message.method != stun.Method.BINDING or message.message_class not in (
            stun.MessageClass.SUCCESS,
            stun.MessageClass.ERROR,
        ):
            return []
        test = self._pending.pop(message.transaction_id, None)
        if test is None:
            return []
        test.done = True
        test.source = _normalize(source)
        try:
            if message.message_class == stun.MessageClass.ERROR:
                error = message.error_code()
                test.error = (
                    "error response" if error is None else f"{error[0]} {stun.readable(error[1])}"
                )
            else:
                self._read_success(test, message)
        except stun.StunError as problem:
            test.error = f"malformed response: {problem}"
        return self._advance(now)

    def send_failed(self, datagram: Datagram, reason: str, now: float) -> list[Datagram]:
        """The socket would not send `datagram` (no route to the other address, say): its
        test ends now with `reason`, the others go on; what to send next, if anything."""
        return self._end(datagram.data[8:20], f"could not be sent: {reason}", now)

    def unreachable(self, quoted: bytes, cause: str, now: float) -> list[Datagram]:
        """An ICMP error came back for the request that starts with `quoted` (its first
        20 bytes at least): its test ends now with `cause`, as for `send_failed`."""
        return self._end(quoted[8:20], cause, now)

    def _end(self, transaction_id: bytes, error: str, now: float) -> list[Datagram]:
        test = self._pending.pop(transaction_id, None)
        if test is None:
            return []
        test.done = True
        test.error = error
        return self._advance(now)

    def poll(self, now: float) -> list[Datagram]:
        """Retransmissions due by `now`, and the tests whose deadline has passed."""
        out: list[Datagram] = []
        for tid, test in list(self._pending.items()):
            transaction = test.transaction
            if transaction.expired(now):
                del self._pending[tid]
                test.done = True
                continue
            again = transaction.retransmit(now)
            if again is not None:
                out.append(Datagram(again, test.destination))
        return out + self._advance(now)

    def result(self) -> NatBehaviour:
        test1 = self._tests[0] if self._tests else None
        return NatBehaviour(
            server=self.server,
            local=self.local,
            mapping=self._mapping,
            filtering=self._filtering,
            answered=bool(test1 and test1.answered),
            mapped=test1.mapped if test1 else None,
            other_address=self._other,
            rfc5780=self._other is not None,
            probes=tuple(test.probe() for test in self._tests),
            notes=tuple(self._notes),
        )

    # -- the tests ------------------------------------------------------------------

    def _send(self, name: str, destination: Address, change: int, now: float) -> Datagram:
        transaction_id = stun.new_transaction_id()
        attributes = [(stun.Attr.CHANGE_REQUEST, _U32.pack(change))] if change else []
        request = stun.encode(
            stun.Method.BINDING, stun.MessageClass.REQUEST, transaction_id, attributes
        )
        transaction = StunTransaction(
            request, now=now, rto=self.timing.initial_rto, deadline=now + self.timeout
        )
        test = _Test(transaction_id, name, destination, change, transaction)
        self._tests.append(test)
        self._pending[transaction_id] = test
        return Datagram(request, destination)

    def _read_success(self, test: _Test, message: stun.Message) -> None:
        mapped = message.xor_mapped_address() or message.mapped_address()
        if mapped is None:
            test.error = "success response without a mapped address"
            return
        try:
            mapped = answered_address(mapped)
        except UnusableAddress as error:  # no NAT maps to 0.0.0.0: a broken server
            test.error = f"success response whose mapped address {error}"
            return
        test.answered = True
        test.mapped = _normalize(mapped)
        other = message.other_address()
        test.other = None if other is None else _normalize(other)

    def _test(self, name: str) -> _Test | None:
        for test in self._tests:
            if test.name == name:
                return test
        return None

    def _advance(self, now: float) -> list[Datagram]:
        if self._phase == "test1":
            return self._after_test1(now)
        if self._phase == "filtering":
            return self._after_filtering(now)
        if self._phase == "mapping":
            self._after_mapping()
        return []

    def _after_test1(self, now: float) -> list[Datagram]:
        test1 = self._tests[0]
        if not test1.done:
            return []
        if not test1.answered:
            why = test1.error or f"no answer within {self.timeout:g} s"
            if test1.source is None:
                self._notes.append(f"The server did not answer test I ({why}).")
            else:  # an error response, or one with no usable mapped address
                self._notes.append(f"The server's answer to test I was no use ({why}).")
            return self._finish()
        assert test1.mapped is not None
        if test1.mapped == self.local:
            self._mapping = "no NAT"
        other = test1.other
        if other is None:
            self._notes.append(
                "The server does not support RFC 5780 (no OTHER-ADDRESS in its answer): "
                "only whether there is a NAT could be found out, not how it maps or filters."
            )
            return self._finish()
        self._other = other
        if _family(other[0]) != _family(self.server[0]):
            self._notes.append(
                f"OTHER-ADDRESS {_address_text(other)} is not of the server's address "
                "family: the server cannot be used for these tests."
            )
            return self._finish()
        if other[0] == self.server[0] or other[1] == self.server[1]:
            self._notes.append(
                f"OTHER-ADDRESS {_address_text(other)} does not differ from the server's "
                "address in both IP and port, as RFC 5780 requires."
            )
            return self._finish()
        self._phase = "filtering"
        both = self._send("filtering test II", self.server, CHANGE_IP | CHANGE_PORT, now)
        self._tests[-1].expected_source = other
        port = self._send("filtering test III", self.server, CHANGE_PORT, now)
        self._tests[-1].expected_source = (self.server[0], other[1])
        return [both, port]

    def _filter_answer(self, test: _Test) -> bool:
        """Answered from the address CHANGE-REQUEST asked for."""
        if not test.answered:
            return False
        if test.source != test.expected_source:
            test.answered = False
            test.error = (
                f"answered from {_address_text(test.source)}, not "
                f"{_address_text(test.expected_source)} as CHANGE-REQUEST asked"
            )
            return False
        return True

    def _after_filtering(self, now: float) -> list[Datagram]:
        both = self._test("filtering test II")
        port = self._test("filtering test III")
        assert both is not None and port is not None
        if both.done and self._filter_answer(both):
            self._filtering = "endpoint-independent"
        elif both.done and both.error is not None:
            self._notes.append(f"Filtering could not be classified ({both.name}: {both.error}).")
        elif both.done and port.done:
            if self._filter_answer(port):
                self._filtering = "address-dependent"
            elif port.error is not None:
                self._notes.append(
                    f"Filtering could not be classified ({port.name}: {port.error})."
                )
            else:
                self._filtering = "address-and-port-dependent"
        else:
            return []
        for test in (both, port):  # an answer still on its way no longer matters
            self._abandon(test)
        if self._mapping == "no NAT":
            return self._finish()
        assert self._other is not None
        self._phase = "mapping"
        other_ip, other_port = self._other
        return [
            self._send("mapping test II", (other_ip, self.server[1]), 0, now),
            self._send("mapping test III", (other_ip, other_port), 0, now),
        ]

    def _after_mapping(self) -> None:
        test1 = self._tests[0]
        test2 = self._test("mapping test II")
        test3 = self._test("mapping test III")
        assert test2 is not None and test3 is not None
        if not test2.done:
            return
        if not test2.answered:
            why = test2.error or f"no answer within {self.timeout:g} s"
            self._notes.append(f"Mapping could not be classified: mapping test II failed ({why}).")
        elif test2.mapped == test1.mapped:
            self._mapping = "endpoint-independent"
        elif not test3.done:
            return
        elif not test3.answered:
            why = test3.error or f"no answer within {self.timeout:g} s"
            self._notes.append(
                f"Mapping is address-dependent or worse, but mapping test III failed ({why})."
            )
        elif test3.mapped == test2.mapped:
            self._mapping = "address-dependent"
        else:
            self._mapping = "address-and-port-dependent"
        self._abandon(test3)
        self._finish()

    def _abandon(self, test: _Test) -> None:
        if not test.done:
            self._pending.pop(test.transaction_id, None)
            test.done = test.abandoned = True

    def _finish(self) -> list[Datagram]:
        self._phase = "done"
        self._pending.clear()
        return []


def _normalize(address: tuple[Any, ...]) -> Address:
    """(host, port) with the IP in its canonical text form; extra fields are dropped."""
    host, port = address[0], int(address[1])
    with contextlib.suppress(ValueError):
        host = str(ipaddress.ip_address(host))
    return host, port


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _address_text(address: Address | None) -> str | None:
    if address is None:
        return None
    return hostport(*address)


def _change_text(flags: int) -> str:
    names = [name for bit, name in ((CHANGE_IP, "ip"), (CHANGE_PORT, "port")) if flags & bit]
    return "+".join(names)
