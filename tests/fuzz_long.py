"""Mutation fuzzing of the STUN codec, the TURN client and the gathering core (long run).

    python tests/fuzz_long.py --inputs 1000000 [--seconds 600] [--seed 1] [--target all]

Each input is fully determined by (target, seed): the harness replaces the transaction-id
generator with a seeded one, builds a fresh `Gathering` (or `Allocation`) with STUN and
TURN servers, drives it to a random stage (requests outstanding, 401 answered, allocated,
refreshing, closing, restarted), then delivers a few datagrams made by mutating
valid-looking responses (bit flips, truncation, wrong lengths, inserted, dropped and
duplicated attributes, swapped transaction ids, re-signed with the right key or the
wrong one, fingerprints recomputed) from the right or a wrong source, on the right or a
wrong socket; the `core-tcp` target does the same with TURN over TCP, the answers
delivered on the stream cut at random points. After every delivery it checks:

- no exception escapes (`stun.parse` may raise `StunError` only);
- srflx only from a Binding success answering an outstanding request of that socket to
  that server, from that server's address (or from an authenticated Allocate success);
- relay only from an Allocate success whose MESSAGE-INTEGRITY verifies (checked here with
  an independent HMAC) under the key of the authenticated request it answers;
- one answer per transaction; and, at the end, the event invariants of
  `tests/test_gathering.py::check_invariants`.

A failure prints the target, the seed, the reason and the datagrams as hex: rerun it with
`--target T --seed S --inputs 1`. `tests/test_fuzz.py` runs the same harness briefly.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import random
import socket
import struct
import sys
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ice_engine import stun
from ice_engine.commands import (
    CloseStream,
    Command,
    OpenSocket,
    OpenStream,
    Resolve,
    SendDatagram,
    StreamSend,
)
from ice_engine.credentials import Credentials
from ice_engine.events import (
    Event,
    GatheringState,
    IceCandidateEvent,
)
from ice_engine.gathering import Base, Gathering, Server, Transport
from ice_engine.stun import Attr, MessageClass, Method
from ice_engine.transaction import RttTable, Timing
from ice_engine.turn import (
    Allocated,
    Allocation,
    NonceCache,
    NonceEntry,
    Refreshed,
    TurnCredentials,
)
from ice_engine.urls import parse_server_url

STUN_SERVER = ("198.51.100.10", 3478)
TURN_SERVER = ("198.51.100.11", 3478)
PUBLIC = ("198.51.100.1", 50000)
RELAYED = ("198.51.100.10", 49200)
REALM, USER, PASSWORD = "lab.test", "alice", "wonderland"
KEY = stun.long_term_key(USER, REALM, PASSWORD)
WRONG_KEY = stun.long_term_key(USER, REALM, "not-the-password")
BASES = (
    ("203.0.113.2", socket.AF_INET),
    ("203.0.113.130", socket.AF_INET),
    ("2001:db8:a::2", socket.AF_INET6),
)
WRONG_SOURCES = (
    ("198.51.100.66", 3478),
    ("198.51.100.10", 3479),
    ("198.51.100.11", 3479),
    ("::ffff:198.51.100.10", 3478),
    ("2001:db8:b::10", 3478),
    ("203.0.113.2", 40001),
)
KNOWN_BUGS: set[str] = set()
"""Violation kinds reported as "(known)" and not failing the run; both bugs this harness
found (an unsigned Allocate success accepted, and `Gathering.close` raising
"dictionary changed size during iteration") are fixed, so none."""
INTERESTING_ATTRS = (
    0x0001, 0x0006, 0x0008, 0x0009, 0x000A, 0x000D, 0x0012, 0x0013, 0x0014, 0x0015,
    0x0016, 0x001C, 0x001D, 0x0020, 0x8000, 0x8001, 0x8002, 0x8022, 0x8028, 0x802C, 0xFFFF,
)  # fmt: skip
INTERESTING_BYTES = (0x00, 0x01, 0x02, 0x03, 0x04, 0x7F, 0x80, 0xFE, 0xFF)


class Violation(AssertionError):
    """A property broken; `kind` groups them in the summary."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


# -- deterministic transaction ids -----------------------------------------------------


class _TxIds:
    """Replaces `stun.new_transaction_id` (looked up through the module by its callers)."""

    def __init__(self) -> None:
        self.rng = random.Random(0)
        self.original = stun.new_transaction_id

    def __call__(self) -> bytes:
        return self.rng.randbytes(12)

    def install(self) -> None:
        stun.new_transaction_id = self

    def uninstall(self) -> None:
        stun.new_transaction_id = self.original


TXIDS = _TxIds()


# -- an independent view of the wire ---------------------------------------------------


def walk(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, length) of each TLV, leniently, stopping where framing breaks."""
    out = []
    pos = 20
    while pos + 4 <= len(data):
        attr_type, length = struct.unpack_from("!HH", data, pos)
        out.append((pos, attr_type, length))
        pos += 4 + length + (-length & 3)
    return out


def independent_integrity(data: bytes, key: bytes) -> bool:
    """Does `data` carry a MESSAGE-INTEGRITY(-SHA256) made with `key`? (own HMAC, RFC 8489)."""
    for pos, attr_type, length in walk(data):
        if attr_type == 0x0008 and length == 20:
            digest, size = "sha1", 20
        elif attr_type == 0x001C and 16 <= length <= 32 and not length & 3:
            digest, size = "sha256", length
        else:
            continue
        if pos + 4 + size > len(data):
            return False
        header = data[:2] + struct.pack("!H", pos - 20 + 4 + size) + data[4:20]
        mac = hmac.new(key, header + data[20:pos], digest).digest()[:size]
        if hmac.compare_digest(mac, data[pos + 4 : pos + 4 + size]):
            return True
    return False


def attr_value(data: bytes, wanted: int) -> bytes | None:
    for pos, attr_type, length in walk(data):
        if attr_type == wanted:
            return data[pos + 4 : pos + 4 + length]
    return None


def request_key(request: bytes) -> bytes | None:
    """The long-term key an authenticated request was signed with, or None (unsigned)."""
    if attr_value(request, 0x0008) is None and attr_value(request, 0x001C) is None:
        return None
    realm = attr_value(request, 0x0014)
    username = attr_value(request, 0x0006)
    if realm is None or username is None:
        return None
    algorithm = attr_value(request, 0x001D)
    text = username + b":" + realm + b":" + PASSWORD.encode()
    if algorithm is not None and algorithm[:2] == b"\x00\x02":
        return hashlib.sha256(text).digest()
    return hashlib.md5(text, usedforsecurity=False).digest()


def fix_fingerprint(data: bytes) -> bytes:
    """Recompute a trailing FINGERPRINT, so a mutation gets past the CRC check."""
    if len(data) >= 28 and data[-8:-4] == b"\x80\x28\x00\x04":
        crc = zlib.crc32(data[:-4]) ^ stun.FINGERPRINT_XOR
        return data[:-4] + struct.pack("!I", crc)
    return data


def fix_length(data: bytes) -> bytes:
    if len(data) < 20:
        return data
    return data[:2] + struct.pack("!H", (len(data) - 20) & 0xFFFF) + data[4:]


def resign(data: bytes, key: bytes) -> bytes:
    """Strip MI/fingerprint and sign again: a mutated message the key holder vouches for."""
    if len(data) < 20:
        return data
    cut = len(data)
    for pos, attr_type, _length in walk(data):
        if attr_type in (0x0008, 0x001C, 0x8028):
            cut = pos
            break
    body = data[20:cut]
    body += b"\x00" * (-len(body) & 3)
    length = len(body) + 24
    if length + 8 > 0xFFFF:
        return data
    header = data[:2] + struct.pack("!H", length) + data[4:20]
    mac = hmac.new(key, header + body, "sha1").digest()
    signed = header + body + b"\x00\x08\x00\x14" + mac
    signed = signed[:2] + struct.pack("!H", length + 8) + signed[4:]
    crc = zlib.crc32(signed) ^ stun.FINGERPRINT_XOR
    return signed + b"\x80\x28\x00\x04" + struct.pack("!I", crc)


# -- mutation --------------------------------------------------------------------------


def mutate(rng: random.Random, data: bytes, txids: list[bytes]) -> bytes:
    """One to four stacked byte- and TLV-level mutations."""
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        choice = rng.randrange(16)
        size = len(out)
        tlvs = walk(bytes(out))
        if choice == 0 and size:  # bit flips
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(size)
                out[i] ^= 1 << rng.randrange(8)
        elif choice == 1 and size:  # interesting byte
            out[rng.randrange(size)] = rng.choice(INTERESTING_BYTES)
        elif choice == 2:  # truncate anywhere
            del out[rng.randrange(size + 1) :]
        elif choice == 3 and tlvs:  # truncate at an attribute, length fixed
            out = bytearray(fix_length(bytes(out[: rng.choice(tlvs)[0]])))
        elif choice == 4:  # junk appended
            out += rng.randbytes(rng.randrange(1, 13))
            if rng.random() < 0.5:
                out = bytearray(fix_length(bytes(out)))
        elif choice == 5 and size >= 4:  # header length field
            value = rng.choice((0, 4, size - 20 + 4, size - 20 - 4, 0xFFFF, rng.randrange(65536)))
            out[2:4] = struct.pack("!H", value & 0xFFFF)
        elif choice == 6 and size >= 20:  # insert an attribute
            pos = rng.choice([t[0] for t in tlvs] + [size])
            length = rng.choice((0, 1, 2, 3, 4, 8, 20, 32, rng.randrange(64)))
            value = rng.randbytes(length) + b"\x00" * (-length & 3)
            declared = length if rng.random() < 0.8 else rng.randrange(65536)
            tlv = struct.pack("!HH", rng.choice(INTERESTING_ATTRS), declared) + value
            out[pos:pos] = tlv
            out = bytearray(fix_length(bytes(out)))
        elif choice == 7 and tlvs:  # drop an attribute
            pos, _t, length = rng.choice(tlvs)
            del out[pos : pos + 4 + length + (-length & 3)]
            out = bytearray(fix_length(bytes(out)))
        elif choice == 8 and tlvs:  # duplicate an attribute
            pos, _t, length = rng.choice(tlvs)
            tlv = out[pos : pos + 4 + length + (-length & 3)]
            where = rng.choice([t[0] for t in tlvs] + [size])
            out[where:where] = tlv
            out = bytearray(fix_length(bytes(out)))
        elif choice == 9 and tlvs:  # an attribute's length field
            pos = rng.choice(tlvs)[0]
            length = rng.choice((0, 1, 3, 4, 5, 7, 8, 19, 20, 21, 0xFFFF, rng.randrange(65536)))
            out[pos + 2 : pos + 4] = struct.pack("!H", length)
        elif choice == 10 and tlvs:  # an attribute's type
            pos = rng.choice(tlvs)[0]
            out[pos : pos + 2] = struct.pack("!H", rng.choice(INTERESTING_ATTRS))
        elif choice == 11 and size >= 20:  # transaction id
            out[8:20] = rng.choice([*txids, rng.randbytes(12), bytes(12)]) if txids else bytes(12)
        elif choice == 12 and size >= 2:  # message type: method and class
            method = rng.choice((1, 3, 4, 8, 9, rng.randrange(0x1000)))
            cls = rng.choice((0x000, 0x010, 0x100, 0x110))
            msg_type = method & 0xF | (method & 0x70) << 1 | (method & 0xF80) << 2 | cls
            out[0:2] = struct.pack("!H", msg_type)
        elif choice == 13 and tlvs:  # an attribute's value
            pos, _t, length = rng.choice(tlvs)
            if length and pos + 4 + length <= size:
                i = pos + 4 + rng.randrange(length)
                out[i] = rng.choice((*INTERESTING_BYTES, rng.randrange(256)))
        elif choice == 14 and size >= 20:  # splice in another message's tail
            donor = rng.randbytes(rng.randrange(40))
            out[rng.randrange(20, size + 1) :] = donor
        elif choice == 15 and size >= 4:  # magic cookie
            out[4:8] = rng.choice((b"\x21\x12\xa4\x42", b"\x21\x12\xa4\x43", rng.randbytes(4)))
    data = bytes(out)
    roll = rng.random()
    if roll < 0.35:
        data = fix_fingerprint(data)
    elif roll < 0.55:
        data = resign(data, KEY)
    elif roll < 0.6:
        data = resign(data, WRONG_KEY)
    return data


# -- responses a server (or a forger) might send ---------------------------------------


@dataclass
class Request:
    base_key: int
    address: tuple[str, int]
    data: bytes
    method: int = field(init=False)
    txid: bytes = field(init=False)

    def __post_init__(self) -> None:
        message = stun.parse(self.data)
        self.method = message.method
        self.txid = message.transaction_id


def _xor_addr(address: tuple[str, int], txid: bytes) -> bytes:
    return stun.xor_address_value(address[0], address[1], txid)


def responses_for(rng: random.Random, request: Request) -> list[bytes]:
    """Valid-looking answers to one request: right, wrong key, unsigned, errors."""
    txid = request.txid
    enc = stun.encode
    success, error = MessageClass.SUCCESS, MessageClass.ERROR
    if request.method == Method.BINDING:
        v6 = ("2001:db8:a::99", 40000)
        return [
            enc(
                Method.BINDING, success, txid, [(Attr.XOR_MAPPED_ADDRESS, _xor_addr(PUBLIC, txid))]
            ),
            enc(
                Method.BINDING, success, txid, [(Attr.MAPPED_ADDRESS, stun.address_value(*PUBLIC))]
            ),
            enc(Method.BINDING, success, txid, [(Attr.XOR_MAPPED_ADDRESS, _xor_addr(v6, txid))]),
            enc(Method.BINDING, success, txid, []),
            enc(Method.BINDING, error, txid, [(Attr.ERROR_CODE, stun.error_code_value(420, "x"))]),
            enc(Method.BINDING, error, txid, [], fingerprint=False),
        ]
    relay_attrs = [
        (Attr.XOR_RELAYED_ADDRESS, _xor_addr(RELAYED, txid)),
        (Attr.XOR_MAPPED_ADDRESS, _xor_addr(PUBLIC, txid)),
        (Attr.LIFETIME, stun.u32_value(600)),
    ]
    nonce = rng.choice((b"nonce-1", b"nonce-2", b""))
    challenge = [(Attr.REALM, REALM.encode()), (Attr.NONCE, nonce)]
    if rng.random() < 0.3:
        challenge.append(
            (
                Attr.PASSWORD_ALGORITHMS,
                stun.password_algorithm_value(rng.choice((1, 2, 7)))
                + stun.password_algorithm_value(rng.choice((1, 2))),
            )
        )
    # 300 Try Alternate: back to this server, to another, or to another family.
    to = rng.choice((TURN_SERVER, STUN_SERVER, ("2001:db8:b::30", 3478), ("198.51.100.30", 1)))
    alternate = [(Attr.ALTERNATE_SERVER, stun.address_value(*to))]
    method = request.method
    answers = [
        enc(method, error, txid, [(Attr.ERROR_CODE, stun.error_code_value(401, "U")), *challenge]),
        enc(method, error, txid, [(Attr.ERROR_CODE, stun.error_code_value(438, "S")), *challenge]),
        enc(method, error, txid, [(Attr.ERROR_CODE, stun.error_code_value(486, "Q"))]),
        enc(method, error, txid, [(Attr.ERROR_CODE, stun.error_code_value(486, "Q"))], integrity_key=KEY),
        enc(method, success, txid, relay_attrs, integrity_key=KEY),
        enc(method, success, txid, relay_attrs, integrity_key=KEY, integrity_sha256=True),
        enc(method, success, txid, relay_attrs, integrity_key=WRONG_KEY),
        enc(method, success, txid, relay_attrs),
        enc(method, success, txid, [(Attr.LIFETIME, stun.u32_value(rng.choice((0, 600))))], integrity_key=KEY),
        enc(method, error, txid, [(Attr.ERROR_CODE, stun.error_code_value(300, "A")), *alternate]),
        enc(method, error, txid, [(Attr.ERROR_CODE, stun.error_code_value(300, "A")), *alternate], integrity_key=KEY),
    ]  # fmt: skip
    if rng.random() < 0.2:  # the server asked with SHA-256 algorithms
        sha_key = hashlib.sha256(f"{USER}:{REALM}:{PASSWORD}".encode()).digest()
        answers.append(enc(method, success, txid, relay_attrs, integrity_key=sha_key))
    return answers


def make_datagram(rng: random.Random, requests: list[Request]) -> bytes:
    """A valid-looking answer to an outstanding request, mutated or not, or plain junk."""
    roll = rng.random()
    txids = [r.txid for r in requests]
    if roll < 0.04 or not requests:
        return rng.randbytes(rng.randrange(0, 120))
    if roll < 0.08:  # junk after a STUN-looking header with a live transaction id
        body = rng.randbytes(rng.randrange(0, 60))
        return (
            rng.randbytes(2)
            + struct.pack("!H", len(body))
            + b"\x21\x12\xa4\x42"
            + rng.choice(txids)
            + body
        )
    request = rng.choice(requests)
    data = rng.choice(responses_for(rng, request))
    if rng.random() < 0.15:  # answered with another request's transaction id
        other = rng.choice(txids)
        data = fix_fingerprint(data[:8] + other + data[20:])
    if rng.random() < 0.75:
        data = mutate(rng, data, txids)
    return data


# -- the core (Gathering) harness ------------------------------------------------------


@dataclass
class Outcome:
    inputs: int = 0
    datagrams: int = 0
    accepted: int = 0
    srflx: int = 0
    relay: int = 0
    violations: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)


def _bases(first_key: int, first_port: int) -> list[Base]:
    return [
        Base(first_key + i, 0, 1, address, first_port + i, family, i, i + 1)
        for i, (address, family) in enumerate(BASES)
    ]


class CoreRun:
    """One fresh Gathering driven to a random stage, then fed datagrams under the oracle."""

    TURN_TRANSPORT = "udp"

    def __init__(self, seed: int, cold: bool) -> None:
        self.rng = random.Random(seed)
        TXIDS.rng = random.Random(seed ^ 0x5EED)
        nonces = NonceCache()
        if not cold:
            nonces.put(TURN_SERVER, self.TURN_TRANSPORT, USER, NonceEntry(REALM, b"nonce-0"))
        turn_url = f"turn:198.51.100.11?transport={self.TURN_TRANSPORT}"
        self.core = Gathering(
            transports=[Transport("0", 0)],
            servers=[
                Server(parse_server_url("stun:198.51.100.10"), 0),
                Server(parse_server_url(turn_url), 1, USER, PASSWORD),
            ],
            credentials=Credentials("ufrag001", "p" * 24),
            timing=Timing(),
            rtt=RttTable(),
            nonces=nonces,
        )
        self.now = 0.0
        self.requests: dict[bytes, Request] = {}
        self.events: list[Event] = []
        self.answered: set[bytes] = set()
        self.bases = {b.key: b for b in _bases(1, 40001)}
        self.closed = False
        self.log: list[str] = []

    def pump(self) -> list[Event]:
        core = self.core
        while (command := core.next_command()) is not None:
            self.carry_out(command)
        new = []
        while (event := core.next_event()) is not None:
            new.append(event)
        if new and self.closed:
            raise Violation("event-after-close", repr(new[0]))
        self.events.extend(new)
        return new

    def carry_out(self, command: Command) -> None:
        """As a driver would, at once."""
        core = self.core
        if isinstance(command, SendDatagram):
            request = Request(command.base_key, command.address, command.data)
            self.requests[request.txid] = request
        elif isinstance(command, Resolve):
            url = command.url
            core.resolved(self.now, command.request, [(url.host, url.port)])
        elif isinstance(command, OpenSocket):  # after a 437: another socket, a new key
            core.socket_opened(self.now, command.request, 100 + command.request)

    def outstanding(self) -> list[Request]:
        return [r for t, r in self.requests.items() if t not in self.answered]

    def deliver(self, base_key: int, data: bytes, source: tuple[str, int]) -> None:
        self.log.append(f"deliver t={self.now:.3f} base={base_key} from={source} {data.hex()}")
        accepted = self.core.receive_datagram(self.now, base_key, data, source)
        new = self.pump()
        found = [
            e.candidate.parsed
            for e in new
            if isinstance(e, IceCandidateEvent) and e.candidate and e.candidate.parsed
        ]
        if found and not accepted:
            raise Violation("candidate-from-rejected-datagram", str(found))
        if not accepted:
            return
        txid = data[8:20]
        request = self.requests.get(txid)
        if request is None:
            raise Violation("accepted-unknown-transaction", data.hex())
        if txid in self.answered:
            raise Violation("answered-twice", txid.hex())
        self.answered.add(txid)
        unscoped = (source[0].split("%", 1)[0], source[1])  # recvfrom's scope id, as the core
        if request.base_key != base_key or request.address != unscoped:
            raise Violation("accepted-from-wrong-source-or-socket", f"{source} {base_key}")
        message = stun.parse(data)  # accepted data must parse
        if message.message_class not in (MessageClass.SUCCESS, MessageClass.ERROR):
            raise Violation("accepted-non-response", data.hex())
        if message.method != request.method:
            raise Violation("accepted-wrong-method", data.hex())
        for candidate in found:
            if candidate.type == "srflx" and request.method == Method.BINDING:
                if message.message_class != MessageClass.SUCCESS:
                    raise Violation("srflx-from-error", data.hex())
                mapped = message.xor_mapped_address() or message.mapped_address()
                if mapped is None or (candidate.address, candidate.port) != mapped:
                    raise Violation("srflx-not-the-mapped-address", str(candidate))
            elif candidate.type in ("srflx", "relay") and request.method == Method.ALLOCATE:
                key = request_key(request.data)
                if key is None:
                    if not independent_integrity(data, KEY):
                        raise Violation("relay-from-unauthenticated-success", data.hex())
                elif not independent_integrity(data, key):
                    raise Violation("relay-without-valid-integrity", data.hex())
            else:
                raise Violation("unexpected-candidate", f"{candidate} for {request.method}")

    def stage(self) -> None:
        """Drive to a random point: started, challenged, allocated, refreshing, closing…"""
        rng = self.rng
        self.core.start(self.now, list(self.bases.values()))
        self.pump()
        turn = [r for r in self.outstanding() if r.method == Method.ALLOCATE]
        if turn and request_key(turn[0].data) is None and rng.random() < 0.6:
            self.now += 0.01  # the server's challenge: the next Allocate is signed
            for request in turn:
                challenge = stun.encode(
                    Method.ALLOCATE,
                    MessageClass.ERROR,
                    request.txid,
                    [
                        (Attr.ERROR_CODE, stun.error_code_value(401, "Unauthorized")),
                        (Attr.REALM, REALM.encode()),
                        (Attr.NONCE, b"nonce-1"),
                    ],
                )
                self.deliver(request.base_key, challenge, request.address)
        roll = rng.random()
        if roll < 0.5:
            return
        self.now += 0.01  # allocated
        for request in self.outstanding():
            if request.method == Method.ALLOCATE and request_key(request.data) is not None:
                txid = request.txid
                ok = stun.encode(
                    Method.ALLOCATE,
                    MessageClass.SUCCESS,
                    txid,
                    [
                        (Attr.XOR_RELAYED_ADDRESS, _xor_addr(RELAYED, txid)),
                        (Attr.XOR_MAPPED_ADDRESS, _xor_addr(PUBLIC, txid)),
                        (Attr.LIFETIME, stun.u32_value(600)),
                    ],
                    integrity_key=KEY,
                )
                self.deliver(request.base_key, ok, request.address)
        if roll < 0.65:
            self.now = 545.0  # past refresh_at: a Refresh is outstanding
            self.core.handle_timer(self.now)
            self.pump()
        elif roll < 0.8:
            self.now += 0.01
            self.core.restart(self.now, Credentials("ufrag002", "q" * 24))
            self.pump()
            self.bases.update({b.key: b for b in _bases(10, 41001)})
            self.core.start(self.now, _bases(10, 41001))
            self.pump()
        elif roll < 0.9:
            self.now += 0.01
            self.core.close(self.now)
            self.closed = True
            self.pump()

    def fuzz(self, count: int) -> None:
        rng = self.rng
        for _ in range(count):
            outstanding = self.outstanding() or list(self.requests.values())
            data = make_datagram(rng, outstanding)
            target = rng.choice(outstanding) if outstanding else None
            if target is not None and rng.random() < 0.8:
                source, base_key = target.address, target.base_key
                if rng.random() < 0.1:
                    base_key = rng.choice(list(self.bases))
            else:
                source = rng.choice((*WRONG_SOURCES, STUN_SERVER, TURN_SERVER))
                base_key = rng.choice(list(self.bases))
            if rng.random() < 0.05:
                source = (source[0] + "%c0", source[1])  # a scoped address from recvfrom
            self.now += rng.choice((0.0, 0.001, 0.3))
            self.deliver(base_key, data, source)
            if rng.random() < 0.1:
                self.now += 0.3
                self.core.handle_timer(self.now)
                self.pump()

    def finish(self, check_invariants: Callable[[list[Event], list[str]], None]) -> None:
        self.now = max(self.now, 2.0) + 600.0  # every deadline has passed
        for _ in range(10):
            self.core.handle_timer(self.now)
            self.pump()
            self.now += 600.0
        if not self.closed:
            if self.core.state is not GatheringState.COMPLETE:
                raise Violation("not-complete-after-deadline", str(self.core.state))
            try:
                check_invariants(self.events, ["0"])
            except AssertionError as error:
                raise Violation("event-invariant", str(error) or repr(error)) from None
        self.core.close(self.now)
        self.closed = True
        self.pump()


def _check_invariants() -> Callable[[list[Event], list[str]], None]:
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.test_gathering import check_invariants

    return check_invariants


CURRENT: list[str] = []
"""The log of the input being run: the deliveries a reproducer needs."""


def run_core(seed: int, cold: bool, datagrams: int = 3, kind: type[CoreRun] = CoreRun) -> CoreRun:
    """One input; raises Violation (or any escaped exception) on failure."""
    run = kind(seed, cold)
    CURRENT[:] = []
    run.log = CURRENT
    TXIDS.install()
    try:
        run.stage()
        run.fuzz(datagrams)
        run.finish(_check_invariants())
    finally:
        TXIDS.uninstall()
    return run


STREAM_KEY = 1000
"""`Request.base_key` for what went out on stream s: STREAM_KEY + s."""


class StreamCoreRun(CoreRun):
    """The same with TURN over TCP: what is delivered to a stream's key goes onto that
    stream's bytes, cut anywhere. The core cannot say what it took from a stream, so
    the oracle here works from the frames the bytes complete (an independent framer):
    a relay only from one of them that answers a signed Allocate with valid integrity,
    and no srflx from TURN over TCP (its mapping is a TCP one)."""

    TURN_TRANSPORT = "tcp"

    def __init__(self, seed: int, cold: bool) -> None:
        super().__init__(seed, cold)
        self.framers: dict[int, stun.StreamFramer] = {}

    def carry_out(self, command: Command) -> None:
        core = self.core
        if isinstance(command, OpenStream):
            self.framers[command.stream] = stun.StreamFramer()
            if self.rng.random() < 0.05:
                core.stream_closed(self.now, command.stream, "connection refused")
            else:
                core.stream_connected(self.now, command.stream)
        elif isinstance(command, StreamSend):
            request = Request(STREAM_KEY + command.stream, TURN_SERVER, command.data)
            self.requests[request.txid] = request
        elif not isinstance(command, CloseStream):
            super().carry_out(command)

    def deliver(self, base_key: int, data: bytes, source: tuple[str, int]) -> None:
        if base_key < STREAM_KEY:
            super().deliver(base_key, data, source)
            return
        stream = base_key - STREAM_KEY
        self.log.append(f"stream t={self.now:.3f} stream={stream} {data.hex()}")
        cuts = sorted(self.rng.sample(range(1, len(data)), min(2, max(len(data) - 1, 0))))
        new: list[Event] = []
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            self.core.stream_data(self.now, stream, data[start:end])
            new += self.pump()
        framer = self.framers[stream]
        frames = framer.feed(data) if framer.error is None else []
        found = [
            e.candidate.parsed
            for e in new
            if isinstance(e, IceCandidateEvent) and e.candidate and e.candidate.parsed
        ]
        for candidate in found:
            if candidate.type != "relay":
                raise Violation("unexpected-candidate-from-stream", str(candidate))
            if not any(self.justifies(frame, stream) for frame in frames):
                raise Violation("relay-without-a-valid-answer-on-the-stream", data.hex())

    def justifies(self, frame: bytes, stream: int) -> bool:
        """An Allocate success answering a request of this stream, under its key."""
        request = self.requests.get(frame[8:20])
        if request is None or request.base_key != STREAM_KEY + stream:
            return False
        try:
            message = stun.parse(frame)
        except stun.StunError:
            return False
        if request.method != Method.ALLOCATE or message.message_class != MessageClass.SUCCESS:
            return False
        key = request_key(request.data)
        return independent_integrity(frame, KEY if key is None else key)


def run_core_stream(seed: int, cold: bool, datagrams: int = 3) -> CoreRun:
    """One input with TURN over TCP; raises Violation (or what escaped) on failure."""
    return run_core(seed, cold, datagrams, StreamCoreRun)


# -- the TURN client alone -------------------------------------------------------------


class AllocationRun:
    """One Allocation driven to a stage, then fed datagrams: only the key holder counts."""

    def __init__(self, seed: int, cold: bool) -> None:
        self.rng = random.Random(seed)
        TXIDS.rng = random.Random(seed ^ 0xA110C)
        nonces = NonceCache()
        if not cold:
            nonces.put(TURN_SERVER, "udp", USER, NonceEntry(REALM, b"nonce-0"))
        self.allocation = Allocation(
            TURN_SERVER,
            credentials=TurnCredentials(USER, PASSWORD),
            deadline=2.0,
            nonce_cache=nonces,
            rtt=RttTable(),
            additional_family=self.rng.random() < 0.2,
        )
        self.requests: dict[bytes, Request] = {}
        self.now = 0.0
        self.granted = 0  # allocations the run saw granted
        self.log: list[str] = []

    def drain(self) -> list[Any]:
        allocation = self.allocation
        while (data := allocation.next_outgoing()) is not None:
            request = Request(0, TURN_SERVER, data)
            self.requests[request.txid] = request
        events = []
        while (event := allocation.next_event()) is not None:
            events.append(event)
        return events

    def deliver(self, data: bytes) -> None:
        self.log.append(
            f"handle_message t={self.now:.3f} state={self.allocation.state} {data.hex()}"
        )
        request = self.requests.get(data[8:20])
        accepted = self.allocation.handle_message(data, self.now)
        events = self.drain()
        if not accepted:
            if any(isinstance(e, Allocated | Refreshed) for e in events):
                raise Violation("event-from-rejected-message", str(events))
            return
        if request is None:
            raise Violation("accepted-unknown-transaction", data.hex())
        for event in events:
            if isinstance(event, Allocated):
                self.granted += 1  # a positive control: valid answers do count
            if isinstance(event, Allocated | Refreshed):
                key = request_key(request.data)
                if key is None:
                    if not independent_integrity(data, KEY):
                        raise Violation("relay-from-unauthenticated-success", data.hex())
                elif not independent_integrity(data, key):
                    raise Violation("relay-without-valid-integrity", data.hex())

    def run(self, count: int) -> None:
        rng = self.rng
        allocation = self.allocation
        allocation.start(self.now)
        self.drain()
        stage = rng.random()
        if stage > 0.4:
            pending = list(self.requests.values())
            for request in pending:
                if request_key(request.data) is None:
                    self.deliver(
                        stun.encode(
                            Method.ALLOCATE, MessageClass.ERROR, request.txid,
                            [(Attr.ERROR_CODE, stun.error_code_value(401, "U")),
                             (Attr.REALM, REALM.encode()), (Attr.NONCE, b"n1")],
                        )
                    )  # fmt: skip
            for request in list(self.requests.values()):
                if request.method == Method.ALLOCATE and request_key(request.data) is not None:
                    txid = request.txid
                    self.deliver(
                        stun.encode(
                            Method.ALLOCATE, MessageClass.SUCCESS, txid,
                            [(Attr.XOR_RELAYED_ADDRESS, _xor_addr(RELAYED, txid)),
                             (Attr.LIFETIME, stun.u32_value(600))],
                            integrity_key=KEY,
                        )
                    )  # fmt: skip
            if allocation.state == "allocated":
                if stage < 0.6:
                    self.now = 545.0
                    allocation.handle_timer(self.now)
                elif stage < 0.75:
                    allocation.create_permission([("198.51.100.77", 1)], self.now)
                elif stage < 0.85:
                    allocation.channel_bind(("198.51.100.77", 1), 0x4001, self.now)
                else:
                    allocation.close(self.now)
                self.drain()
        answered = set()
        for _ in range(count):
            pending = [r for t, r in self.requests.items() if t not in answered]
            data = make_datagram(rng, pending or list(self.requests.values()))
            self.now += rng.choice((0.0, 0.01, 0.5))
            if rng.random() < 0.1:
                allocation.handle_timer(self.now)
                self.drain()
            self.deliver(data)
            answered.add(data[8:20])
            allocation.unwrap(data)
        self.now += 2000.0
        for _ in range(5):
            allocation.handle_timer(self.now)
            self.drain()
            self.now += 700.0
        allocation.close(self.now)
        self.drain()


def run_allocation(seed: int, cold: bool, datagrams: int = 3) -> AllocationRun:
    run = AllocationRun(seed, cold)
    CURRENT[:] = []
    run.log = CURRENT
    TXIDS.install()
    try:
        run.run(datagrams)
    finally:
        TXIDS.uninstall()
    return run


# -- the codec alone -------------------------------------------------------------------


def exercise_message(message: stun.Message) -> None:
    """Every accessor: each may raise StunError and nothing else."""
    accessors = (
        message.xor_mapped_address, message.xor_relayed_addresses, message.xor_peer_address,
        message.mapped_address, message.other_address, message.response_origin,
        message.alternate_server, message.error_code, message.address_error_code,
        message.lifetime, message.realm, message.nonce, message.software,
        message.password_algorithms, message.unknown_attributes,
    )  # fmt: skip
    for accessor in accessors:
        with contextlib.suppress(stun.StunError):
            accessor()
    stun.verify_integrity(message, KEY)
    bytes(message)


def check_parse(data: bytes) -> str:
    """stun.parse and the accessors on one input; 'ok' or 'rejected'."""
    try:
        message = stun.parse(data)
    except stun.StunError:
        return "rejected"
    exercise_message(message)
    if message.raw != data:
        raise Violation("raw-not-input", data.hex())
    return "ok"


def codec_seeds(rng: random.Random) -> list[bytes]:
    txid = rng.randbytes(12)
    request = Request(0, TURN_SERVER, stun.encode(Method.ALLOCATE, MessageClass.REQUEST, txid))
    binding = Request(0, STUN_SERVER, stun.encode(Method.BINDING, MessageClass.REQUEST, txid))
    return responses_for(rng, request) + responses_for(rng, binding)


def run_codec(seed: int) -> str:
    rng = random.Random(seed)
    seeds = codec_seeds(rng)
    data = mutate(rng, rng.choice(seeds), []) if rng.random() < 0.9 else rng.randbytes(40)
    result = check_parse(data)
    stun.is_stun(data)
    framer = stun.StreamFramer()
    try:
        cut = rng.randrange(len(data) + 1)
        framer.feed(data[:cut])
        framer.feed(data[cut:])
    except stun.StunError:
        pass
    with contextlib.suppress(stun.StunError):
        stun.parse_channel_data(data)
    return result


# -- the long run ----------------------------------------------------------------------

TARGETS = ("codec", "turn", "turn-cold", "core", "core-cold", "core-tcp")


def one(target: str, seed: int) -> tuple[str, list[str]]:
    CURRENT[:] = []
    """Run one input; ('ok'|'rejected'|…, log). Raises on failure."""
    if target == "codec":
        return run_codec(seed), []
    if target.startswith("turn"):
        allocation_run = run_allocation(seed, cold=target == "turn-cold")
        return "ok", allocation_run.log
    if target == "core-tcp":
        return "ok", run_core_stream(seed, cold=seed % 2 == 0).log
    core_run = run_core(seed, cold=target == "core-cold")
    return "ok", core_run.log


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inputs", type=int, default=1_000_000, help="datagram inputs in all")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--seed", type=int, default=1, help="first seed")
    parser.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    parser.add_argument("--report-every", type=float, default=10.0)
    args = parser.parse_args()
    targets = TARGETS if args.target == "all" else (args.target,)
    _check_invariants()
    per_input = {"codec": 1, "turn": 3, "turn-cold": 3, "core": 3, "core-cold": 3, "core-tcp": 3}
    counts: Counter[str] = Counter()
    violations: Counter[str] = Counter()
    first: dict[str, str] = {}
    started = last = time.perf_counter()
    datagrams = 0
    seed = args.seed
    done = False
    while not done:
        for target in targets:
            try:
                outcome, _log = one(target, seed)
                counts[f"{target}:{outcome}"] += 1
            except Violation as error:
                kind = error.kind + (" (known)" if error.kind in KNOWN_BUGS else "")
                violations[f"{target}:{kind}"] += 1
                first.setdefault(
                    f"{target}:{kind}",
                    f"--target {target} --seed {seed}: {error}\n" + "\n".join(CURRENT),
                )
            except Exception as error:  # anything escaping is a failure
                kind = f"exception {type(error).__name__}"
                violations[f"{target}:{kind}"] += 1
                if f"{target}:{kind}" not in first:
                    first[f"{target}:{kind}"] = (
                        f"--target {target} --seed {seed}: {error!r}\n"
                        + "\n".join(CURRENT)
                        + "\n"
                        + traceback.format_exc()
                    )
            datagrams += per_input[target]
            counts[target] += 1
        seed += 1
        now = time.perf_counter()
        if now - last >= args.report_every:
            last = now
            rate = datagrams / (now - started)
            print(
                f"[{now - started:7.1f}s] {datagrams} inputs, {rate:,.0f}/s, violations {sum(violations.values())}",
                flush=True,
            )
        if datagrams >= args.inputs or (args.seconds is not None and now - started >= args.seconds):
            done = True
    elapsed = time.perf_counter() - started
    print(
        f"inputs (datagrams delivered): {datagrams} in {elapsed:.1f} s = {datagrams / elapsed:,.0f}/s"
    )
    print(
        f"seeds {args.seed}..{seed - 1}, per target: "
        + ", ".join(f"{t}={counts[t]}" for t in targets)
    )
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if ":" in k))
    if not violations:
        print("violations: none")
        return 0
    print("violations:")
    for kind, number in sorted(violations.items()):
        print(f"  {kind}: {number}")
        print(f"    first: {first[kind]}")
    unknown = [k for k in violations if not k.endswith("(known)")]
    return 1 if unknown else 0


if __name__ == "__main__":
    sys.exit(main())
