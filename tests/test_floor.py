"""The TURN floor's bare codec (`benchmarks/_floor.py`), checked against aioice's: the
yardstick must send messages a server accepts and read what servers answer."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import socket
import sys
from pathlib import Path

from aioice import stun as aioice_stun

_BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
_SPEC = importlib.util.spec_from_file_location("_floor", _BENCHMARKS / "_floor.py")
assert _SPEC is not None and _SPEC.loader is not None
floor = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("_floor", floor)
_SPEC.loader.exec_module(floor)

KEY = hashlib.md5(b"alice:lab.test:wonderland").digest()


class _Socket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        self.sent.append(data)


def _turn(auth: bytes = b"", key: bytes = b"") -> tuple[object, _Socket]:
    gatherer = floor.FloorTurnGatherer(("198.51.100.10", 3478), [], "alice", "wonderland")
    sock = _Socket()
    gatherer.turn_socket = sock
    gatherer.auth, gatherer.key = auth, key
    return gatherer, sock


def test_bare_allocate_parses_as_aioice_reads_it() -> None:
    gatherer, sock = _turn()
    gatherer._send(floor._ALLOCATE, floor._attribute(floor._TRANSPORT, floor._UDP))
    message = aioice_stun.parse_message(sock.sent[0])
    assert message.message_method == aioice_stun.Method.ALLOCATE
    assert message.message_class == aioice_stun.Class.REQUEST
    assert message.attributes["REQUESTED-TRANSPORT"] == 17 << 24


def test_signed_allocate_verifies_with_aioice() -> None:
    auth = (
        floor._attribute(floor._USERNAME, b"alice")
        + floor._attribute(floor._REALM, b"lab.test")
        + floor._attribute(floor._NONCE, b"abcde")  # 5 bytes: padded to 8
    )
    gatherer, sock = _turn(auth, KEY)
    gatherer._send(floor._ALLOCATE, auth + floor._attribute(floor._TRANSPORT, floor._UDP))
    message = aioice_stun.parse_message(sock.sent[0])
    assert message.check_message_integrity(KEY)
    assert not message.check_message_integrity(hashlib.md5(b"alice:lab.test:wrong").digest())
    assert message.attributes["USERNAME"] == "alice"
    assert message.attributes["NONCE"] == b"abcde"
    assert "MESSAGE-INTEGRITY" in message.attributes


def test_reads_attributes_and_addresses_from_an_aioice_answer() -> None:
    answer = aioice_stun.Message(
        message_method=aioice_stun.Method.ALLOCATE,
        message_class=aioice_stun.Class.RESPONSE,
        transaction_id=b"t" * 12,
    )
    answer.attributes["XOR-RELAYED-ADDRESS"] = ("198.51.100.10", 50000)
    answer.attributes["XOR-MAPPED-ADDRESS"] = ("198.51.100.1", 40000)
    answer.attributes["LIFETIME"] = 600
    answer.attributes["SOFTWARE"] = "odd length"
    answer.add_message_integrity(KEY)
    answer.add_fingerprint()
    found = floor._attributes(bytes(answer))
    assert floor._xor_address(found[floor._RELAYED]) == ("198.51.100.10", 50000)
    assert floor._xor_address(found[floor._MAPPED]) == ("198.51.100.1", 40000)
    assert found[0x8022] == b"odd length"  # SOFTWARE, unpadded


def _allocate_error(code: int, reason: str) -> bytes:
    answer = aioice_stun.Message(
        message_method=aioice_stun.Method.ALLOCATE,
        message_class=aioice_stun.Class.ERROR,
        transaction_id=b"t" * 12,
    )
    answer.attributes["ERROR-CODE"] = (code, reason)
    answer.attributes["REALM"] = "lab.test"
    answer.attributes["NONCE"] = b"n0nce"
    return bytes(answer)


class _Answering(_Socket):
    def __init__(self, answer: bytes, real: socket.socket) -> None:
        super().__init__()
        self.answer = answer
        self.real = real

    def recv(self, size: int) -> bytes:
        return self.answer

    def fileno(self) -> int:
        return self.real.fileno()  # never watched: unwatching it does nothing


async def test_a_first_401_is_answered_signed_and_another_error_ends_without_relay() -> None:
    loop = asyncio.get_running_loop()
    gatherer, _ = _turn()
    real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gatherer.turn_socket = sock = _Answering(_allocate_error(401, "Unauthorized"), real)
    lines: list[str] = []
    done = loop.create_future()
    gatherer._answer(lines, done)
    assert not done.done() and gatherer.error is None
    signed = aioice_stun.parse_message(sock.sent[0])
    assert signed.attributes["NONCE"] == b"n0nce"
    assert signed.check_message_integrity(KEY)

    sock.answer = _allocate_error(437, "Allocation Mismatch")
    gatherer._answer(lines, done)
    assert done.done() and gatherer.error == 437 and lines == []
    real.close()
