"""Fuzzing of the STUN codec, the TURN client and the core's datagram input (short run).

Hypothesis drives `stun.parse` with random and structured input; a seeded mutation
harness (`tests/fuzz_long.py`, which runs the same code for a million inputs) feeds
`Allocation.handle_message` and `Gathering.receive_datagram` mutated, misaddressed and
mis-signed responses under an oracle: no exception escapes, srflx only from an answer to
an outstanding Binding from that server, relay only from an integrity-verified Allocate
success, and the event invariants of `check_invariants` hold.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ice_engine import stun
from ice_engine.commands import Resolve, SendDatagram
from ice_engine.credentials import Credentials
from ice_engine.events import IceCandidateEvent
from ice_engine.gathering import Base, Gathering, Server, Transport
from ice_engine.stun import Attr, MessageClass, Method
from ice_engine.urls import parse_server_url
from tests.fuzz_long import (
    KEY,
    PUBLIC,
    RELAYED,
    WRONG_KEY,
    CoreRun,
    check_parse,
    codec_seeds,
    fix_fingerprint,
    run_allocation,
    run_codec,
    run_core,
    run_core_stream,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- stun.parse ---------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=300))
def test_parse_random_bytes_raises_only_stun_error(data: bytes) -> None:
    check_parse(data)


@FAST
@given(st.binary(min_size=0, max_size=120))
def test_parse_random_body_behind_a_valid_header(body: bytes) -> None:
    header = struct.pack("!HHI", 0x0101, len(body), stun.MAGIC_COOKIE) + bytes(12)
    check_parse(header + body)
    check_parse(fix_fingerprint(header + body))


tlv = st.tuples(
    st.sampled_from([int(a) for a in Attr] + [0x0000, 0x7FFF, 0xFFFF]),
    st.binary(max_size=40),
    st.one_of(st.none(), st.integers(0, 0xFFFF)),  # a lying length field, sometimes
)


@FAST
@given(
    message_type=st.integers(0, 0xFFFF),
    tlvs=st.lists(tlv, max_size=8),
    length_delta=st.sampled_from([0, 0, 0, -4, 4, 1, -1]),
    fingerprint=st.booleans(),
)
def test_parse_structured_messages_with_wrong_lengths_and_attributes(
    message_type: int,
    tlvs: list[tuple[int, bytes, int | None]],
    length_delta: int,
    fingerprint: bool,
) -> None:
    body = b"".join(
        struct.pack("!HH", kind, len(value) if declared is None else declared)
        + value
        + b"\x00" * (-len(value) & 3)
        for kind, value, declared in tlvs
    )
    if fingerprint:
        body += b"\x80\x28\x00\x04\x00\x00\x00\x00"
    length = max(0, min(0xFFFF, len(body) + length_delta))
    data = struct.pack("!HHI", message_type, length, stun.MAGIC_COOKIE) + b"t" * 12 + body
    check_parse(fix_fingerprint(data) if fingerprint else data)


def test_parse_every_truncation_and_bit_flip_of_valid_responses() -> None:
    tried = 0
    for data in codec_seeds(random.Random(7)):
        assert check_parse(data) == "ok"
        for cut in range(len(data)):
            check_parse(data[:cut])
            check_parse(data[:2] + struct.pack("!H", max(cut - 20, 0)) + data[4:cut])
            tried += 2
        for bit in range(len(data) * 8):
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            check_parse(bytes(flipped))
            check_parse(fix_fingerprint(bytes(flipped)))
            tried += 2
    assert tried > 10_000


def test_codec_mutations() -> None:
    results = {run_codec(seed) for seed in range(10000)}
    assert results == {"ok", "rejected"}  # both paths were reached


# -- Allocation.handle_message ------------------------------------------------------------


def test_allocation_fuzz_authenticated() -> None:
    """Realm and nonce cached: every Allocate is signed, so nothing unsigned may count."""
    granted = sum(run_allocation(seed, cold=False).granted for seed in range(5000))
    assert granted > 100  # a positive control: valid answers do count


def test_allocation_fuzz_cold() -> None:
    """First Allocate unsigned (the 401 path): an unsigned success must not count either."""
    assert sum(run_allocation(seed, cold=True).granted for seed in range(5000)) > 100


@FAST
@given(seed=st.integers(0, 2**63), cold=st.booleans())
def test_allocation_fuzz_hypothesis_seeds(seed: int, cold: bool) -> None:
    run_allocation(seed, cold)


# -- Gathering.receive_datagram -----------------------------------------------------------


def gathered(runs: Iterable[CoreRun]) -> set[str | None]:
    """The candidate types the runs gathered: a positive control, valid answers count."""
    return {candidate.type for run in runs for candidate in run.core.candidates}


def test_core_fuzz_authenticated() -> None:
    runs = (run_core(seed, cold=False) for seed in range(5000))
    assert gathered(runs) >= {"host", "srflx", "relay"}


def _core_cold(seed: int) -> CoreRun:
    return run_core(seed, cold=True)


def test_core_fuzz_cold() -> None:
    runs = (_core_cold(seed) for seed in range(5000))
    assert gathered(runs) >= {"host", "srflx", "relay"}


@FAST
@given(seed=st.integers(0, 2**63))
def test_core_fuzz_hypothesis_seeds(seed: int) -> None:
    run_core(seed, cold=False)
    _core_cold(seed)


def test_core_fuzz_turn_over_tcp() -> None:
    """The same answers on a TCP stream, cut anywhere: relays only from valid ones."""
    runs = (run_core_stream(seed, cold=seed % 2 == 0) for seed in range(3000))
    assert gathered(runs) >= {"host", "srflx", "relay"}


# -- the forged responses the issue names, one by one --------------------------------------

STUN_ADDR = ("198.51.100.10", 3478)
TURN_ADDR = ("198.51.100.11", 3478)
BASE = Base(1, 0, 1, "203.0.113.2", 40001, socket.AF_INET, 0)


def _started(*urls: str, warm: bool = False) -> tuple[Gathering, list[SendDatagram]]:
    from ice_engine.turn import NonceCache, NonceEntry

    nonces = NonceCache()
    if warm:
        nonces.put(TURN_ADDR, "udp", "alice", NonceEntry("lab.test", b"n"))
    core = Gathering(
        transports=[Transport("0", 0)],
        servers=[Server(parse_server_url(u), i, "alice", "wonderland") for i, u in enumerate(urls)],
        credentials=Credentials("ufrag001", "p" * 24),
        nonces=nonces,
    )
    core.start(0.0, [BASE])
    sent = []
    while (command := core.next_command()) is not None:
        if isinstance(command, Resolve):
            core.resolved(0.0, command.request, [(command.url.host, command.url.port)])
        else:
            assert isinstance(command, SendDatagram)
            sent.append(command)
    while core.next_command() is not None:
        pass
    return core, sent


def _candidate_types(core: Gathering) -> list[str]:
    out = []
    while (event := core.next_event()) is not None:
        if isinstance(event, IceCandidateEvent) and event.candidate and event.candidate.parsed:
            out.append(event.candidate.parsed.type)
    return out


def _allocate_success(txid: bytes, key: bytes | None) -> bytes:
    attributes = [
        (Attr.XOR_RELAYED_ADDRESS, stun.xor_address_value(*RELAYED, txid)),
        (Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value(*PUBLIC, txid)),
        (Attr.LIFETIME, stun.u32_value(600)),
    ]
    return stun.encode(Method.ALLOCATE, MessageClass.SUCCESS, txid, attributes, integrity_key=key)


def test_binding_success_needs_the_transaction_the_server_and_the_socket() -> None:
    core, sent = _started("stun:198.51.100.10")
    (request,) = sent
    txid = stun.parse(request.data).transaction_id
    mapped = [(Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value(*PUBLIC, txid))]
    good = stun.encode(Method.BINDING, MessageClass.SUCCESS, txid, mapped)
    wrong_txid = stun.encode(Method.BINDING, MessageClass.SUCCESS, bytes(12), mapped)
    assert not core.receive_datagram(0.01, 1, wrong_txid, STUN_ADDR)
    assert not core.receive_datagram(0.01, 1, good, ("198.51.100.66", 3478))
    assert not core.receive_datagram(0.01, 1, good, ("198.51.100.10", 3479))
    assert not core.receive_datagram(0.01, 2, good, STUN_ADDR)
    assert _candidate_types(core) == ["host"]
    assert core.receive_datagram(0.01, 1, good, STUN_ADDR)
    assert _candidate_types(core) == ["srflx"]
    assert not core.receive_datagram(0.02, 1, good, STUN_ADDR)


def test_allocate_success_needs_integrity_under_the_right_key() -> None:
    core, sent = _started("turn:198.51.100.11", warm=True)
    (request,) = sent
    txid = stun.parse(request.data).transaction_id
    for forged in (_allocate_success(txid, None), _allocate_success(txid, WRONG_KEY)):
        assert not core.receive_datagram(0.01, 1, forged, TURN_ADDR)
    assert not core.receive_datagram(0.01, 1, _allocate_success(bytes(12), KEY), TURN_ADDR)
    assert not core.receive_datagram(0.01, 1, _allocate_success(txid, KEY), STUN_ADDR)
    assert _candidate_types(core) == ["host"]
    assert core.receive_datagram(0.01, 1, _allocate_success(txid, KEY), TURN_ADDR)
    assert sorted(_candidate_types(core)) == ["relay", "srflx"]


def test_unsigned_allocate_success_to_the_first_allocate_gives_no_candidate() -> None:
    """Found by this fuzzer: Allocation.handle_message used to skip integrity when the
    request was unsigned, so a forged success to the first Allocate gave relay candidates."""
    core, sent = _started("turn:198.51.100.11")  # cold nonce cache: the first Allocate is unsigned
    (request,) = sent
    txid = stun.parse(request.data).transaction_id
    core.receive_datagram(0.01, 1, _allocate_success(txid, WRONG_KEY), TURN_ADDR)
    assert _candidate_types(core) == ["host"]


def test_close_while_the_first_allocate_is_in_flight() -> None:
    """Found by this fuzzer: close() used to raise 'dictionary changed size during iteration'
    when an unsigned Allocate was in flight (fixed in Gathering.close by iterating a copy)."""
    core, _sent = _started("turn:198.51.100.11")
    core.close(0.001)
    assert not core.closing
