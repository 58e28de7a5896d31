"""The STUN codec: RFC 5769 vectors, aioice as an oracle, and property tests."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import hmac
import pickle
import random
import zlib
from collections.abc import Callable

import pytest
from aioice import stun as aio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ice_engine import stun
from ice_engine.stun import Attr, MessageClass, Method, StunError

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROPERTY = settings(max_examples=150, deadline=None)


def hex_bytes(text: str) -> bytes:
    return bytes.fromhex(" ".join(text.split()))


# RFC 5769 §2.1-§2.4, transcribed from the RFC's hex dumps.
SAMPLE_REQUEST = hex_bytes("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf
""")
SAMPLE_IPV4_RESPONSE = hex_bytes("""
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96
""")
SAMPLE_IPV6_RESPONSE = hex_bytes("""
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c
""")
SAMPLE_LONG_TERM_REQUEST = hex_bytes("""
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46
                53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66
""")
SHORT_TERM_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
TID = bytes(range(12))


# --- RFC 5769 ---------------------------------------------------------------


def test_rfc5769_sample_request() -> None:
    message = stun.parse(SAMPLE_REQUEST)
    assert (message.method, message.message_class) == (Method.BINDING, MessageClass.REQUEST)
    assert message.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert message.software() == "STUN test client"
    assert message.get(Attr.USERNAME) == b"evtj:h6vY"
    assert message.get(Attr.PRIORITY) == bytes.fromhex("6e0001ff")
    assert message.get(Attr.ICE_CONTROLLED) == bytes.fromhex("932ff9b151263b36")
    assert stun.verify_integrity(message, stun.short_term_key(SHORT_TERM_PASSWORD))
    assert not stun.verify_integrity(message, stun.short_term_key("wrong"))


@pytest.mark.parametrize(
    ("data", "address"),
    [
        (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
        (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
)
def test_rfc5769_responses(data: bytes, address: tuple[str, int]) -> None:
    message = stun.parse(data)
    assert message.message_class == MessageClass.SUCCESS
    assert message.software() == "test vector"
    assert message.xor_mapped_address() == address
    assert stun.verify_integrity(message, stun.short_term_key(SHORT_TERM_PASSWORD))


def test_rfc5769_long_term_authentication() -> None:
    message = stun.parse(SAMPLE_LONG_TERM_REQUEST)
    username = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert message.get(Attr.USERNAME) == username.encode()
    assert message.realm() == "example.org"
    assert message.nonce() == b"f//499k954d6OL34oL9FSTvy64sA"
    # "The\u00adM\u00aatr\u2168" after SASLprep, which is out of scope here.
    key = stun.long_term_key(username, "example.org", "TheMatrIX")
    assert stun.verify_integrity(message, key)
    rebuilt = stun.encode(
        message.method,
        message.message_class,
        message.transaction_id,
        message.attributes[:3],
        integrity_key=key,
        fingerprint=False,
    )
    assert rebuilt == SAMPLE_LONG_TERM_REQUEST


@pytest.mark.parametrize(
    "data", [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE, SAMPLE_LONG_TERM_REQUEST]
)
def test_rfc5769_reencodes_the_same_attributes(data: bytes) -> None:
    message = stun.parse(data)
    # The RFC pads with spaces, we with zeros: the verbatim FINGERPRINT would
    # then be wrong, so it is recomputed.
    fingerprinted = message.attributes[-1][0] == Attr.FINGERPRINT
    attributes = message.attributes[:-1] if fingerprinted else message.attributes
    rebuilt = stun.encode(
        message.method,
        message.message_class,
        message.transaction_id,
        attributes,
        fingerprint=fingerprinted,
    )
    assert stun.parse(rebuilt).attributes[: len(attributes)] == attributes
    assert (stun.parse(rebuilt).integrity_offset >= 0) == (message.integrity_offset >= 0)


def test_fingerprint_and_integrity_are_computed_as_rfc5769() -> None:
    sample = stun.parse(SAMPLE_IPV6_RESPONSE)
    attributes = [
        (t, v) for t, v in sample.attributes if t not in (Attr.MESSAGE_INTEGRITY, Attr.FINGERPRINT)
    ]
    ours = stun.encode(
        sample.method,
        sample.message_class,
        sample.transaction_id,
        [(t, v.rstrip(b" ") if t == Attr.SOFTWARE else v) for t, v in attributes],
        integrity_key=stun.short_term_key(SHORT_TERM_PASSWORD),
    )
    theirs = aio.Message(aio.Method.BINDING, aio.Class.RESPONSE, sample.transaction_id)
    theirs.attributes["SOFTWARE"] = "test vector"
    theirs.attributes["XOR-MAPPED-ADDRESS"] = sample.xor_mapped_address()
    theirs.add_message_integrity(SHORT_TERM_PASSWORD.encode())
    assert ours == bytes(theirs)


# --- aioice as an oracle ----------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)
text = st.text(max_size=40)
aio_methods = st.sampled_from([m for m in Method if m.name in aio.Method.__members__])
aio_classes = st.sampled_from(list(zip(MessageClass, aio.Class, strict=True)))


@st.composite
def oracle_messages(draw: st.DrawFn) -> dict[str, object]:
    """Attribute values both codecs understand, keyed by aioice's names."""
    values: dict[str, object] = {}
    if draw(st.booleans()):
        values["XOR-MAPPED-ADDRESS"] = (draw(ipv4 | ipv6), draw(ports))
    if draw(st.booleans()):
        # Trailing NULs are padding to us (coturn counts its padding in the length).
        reason = draw(text.map(lambda reason: reason.rstrip("\x00")))
        values["ERROR-CODE"] = (draw(st.integers(300, 699)), reason)
    if draw(st.booleans()):
        values["LIFETIME"] = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        values["REALM"] = draw(text)
    if draw(st.booleans()):
        values["NONCE"] = draw(st.binary(max_size=40))
    if draw(st.booleans()):
        values["USERNAME"] = draw(text)
    keys = draw(st.permutations(list(values)))
    return {key: values[key] for key in keys}


def our_value(name: str, value: object, transaction_id: bytes) -> tuple[int, bytes]:
    if name == "XOR-MAPPED-ADDRESS" and isinstance(value, tuple):
        address, port = value
        return Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value(address, port, transaction_id)
    if name == "ERROR-CODE" and isinstance(value, tuple):
        code, reason = value
        return Attr.ERROR_CODE, stun.error_code_value(code, reason)
    if isinstance(value, int):
        return Attr.LIFETIME, stun.u32_value(value)
    if isinstance(value, bytes):
        return Attr.NONCE, value
    assert isinstance(value, str)
    return Attr[name], value.encode()


def decoded(message: stun.Message) -> dict[str, object]:
    """Our accessors' view, in aioice's vocabulary."""
    values: dict[str, object] = {}
    for attr_type, value in message.attributes:
        if attr_type == Attr.XOR_MAPPED_ADDRESS:
            values["XOR-MAPPED-ADDRESS"] = message.xor_mapped_address()
        elif attr_type == Attr.ERROR_CODE:
            values["ERROR-CODE"] = message.error_code()
        elif attr_type == Attr.LIFETIME:
            values["LIFETIME"] = message.lifetime()
        elif attr_type == Attr.REALM:
            values["REALM"] = message.realm()
        elif attr_type == Attr.NONCE:
            values["NONCE"] = message.nonce()
        elif attr_type == Attr.USERNAME:
            values["USERNAME"] = value.decode()
    return values


#: Messages both codecs can express, for the differential tests in both directions.
ORACLE_CASES = {
    "method": aio_methods,
    "classes": aio_classes,
    "transaction_id": st.binary(min_size=12, max_size=12),
    "values": oracle_messages(),
    "key": st.none() | st.binary(min_size=1, max_size=32),
}


@PROPERTY
@given(**ORACLE_CASES)
def test_ours_encoded_aioice_parses(
    method: Method,
    classes: tuple[MessageClass, aio.Class],
    transaction_id: bytes,
    values: dict[str, object],
    key: bytes | None,
) -> None:
    attributes = [our_value(name, value, transaction_id) for name, value in values.items()]
    data = stun.encode(method, classes[0], transaction_id, attributes, integrity_key=key)
    theirs = aio.parse_message(data)
    assert (int(theirs.message_method), int(theirs.message_class)) == (method, classes[1])
    assert theirs.transaction_id == transaction_id
    for name, value in values.items():
        assert theirs.attributes[name] == value
    if key is not None:
        assert theirs.check_message_integrity(key)


@PROPERTY
@given(**ORACLE_CASES)
def test_aioice_encoded_ours_parses(
    method: Method,
    classes: tuple[MessageClass, aio.Class],
    transaction_id: bytes,
    values: dict[str, object],
    key: bytes | None,
) -> None:
    theirs = aio.Message(aio.Method(method), classes[1], transaction_id, dict(values))
    if key is None:
        theirs.add_fingerprint()
    else:
        theirs.add_message_integrity(key)
    data = bytes(theirs)
    message = stun.parse(data)
    assert (message.method, message.message_class) == (method, classes[0])
    assert decoded(message) == values
    assert stun.verify_integrity(message, key) if key is not None else message.integrity_offset < 0
    # Same inputs, same bytes: both pad with zeros and sign the same way.
    attributes = [our_value(name, value, transaction_id) for name, value in values.items()]
    assert stun.encode(method, classes[0], transaction_id, attributes, integrity_key=key) == data


# --- robustness -------------------------------------------------------------


def exercise(data: bytes) -> None:
    """Parse and read every accessor: only StunError may come out."""
    try:
        message = stun.parse(data)
    except StunError:
        return
    for accessor in (
        message.xor_mapped_address,
        message.xor_relayed_addresses,
        message.xor_peer_address,
        message.mapped_address,
        message.other_address,
        message.response_origin,
        message.alternate_server,
        message.error_code,
        message.address_error_code,
        message.lifetime,
        message.realm,
        message.nonce,
        message.software,
        message.password_algorithms,
        message.unknown_attributes,
    ):
        with contextlib.suppress(StunError):
            accessor()
    stun.verify_integrity(message, b"key")
    # Re-encoding keeps every attribute (a FINGERPRINT is recomputed, as the
    # original padding bytes may not have been zeros).
    kept = [a for a in message.attributes if a[0] != Attr.FINGERPRINT]
    rebuilt = stun.encode(
        message.method,
        message.message_class,
        message.transaction_id,
        kept,
        fingerprint=len(kept) < len(message.attributes),
    )
    assert [a for a in stun.parse(rebuilt).attributes if a[0] != Attr.FINGERPRINT] == kept


@st.composite
def framed_garbage(draw: st.DrawFn) -> bytes:
    """A valid header over random attribute bytes, sometimes with a real FINGERPRINT."""
    body = bytearray(draw(st.binary(max_size=120)))
    body += bytes(-len(body) % 4)
    for _ in range(draw(st.integers(0, 4))):  # plant plausible TLV headers
        if len(body) >= 4:
            at = draw(st.integers(0, len(body) // 4 - 1)) * 4
            kind = draw(st.sampled_from([0x0008, 0x001C, 0x8028, 0x0020, 0x0016, 0x8002, 0x0009]))
            body[at : at + 4] = kind.to_bytes(2) + draw(st.integers(0, 40)).to_bytes(2)
    message_type = draw(st.integers(0, 0x3FFF))
    header = message_type.to_bytes(2) + (len(body) + 8).to_bytes(2) + stun._COOKIE_BYTES + TID
    crc = zlib.crc32(header + body) ^ stun.FINGERPRINT_XOR
    with_fingerprint = header + body + b"\x80\x28\x00\x04" + crc.to_bytes(4)
    without = header[:2] + len(body).to_bytes(2) + header[4:] + body
    return with_fingerprint if draw(st.booleans()) else bytes(without)


@FUZZ
@given(st.binary(max_size=200))
def test_parse_raises_only_stun_error_on_arbitrary_bytes(data: bytes) -> None:
    exercise(data)


@FUZZ
@given(framed_garbage())
def test_parse_raises_only_stun_error_on_framed_garbage(data: bytes) -> None:
    exercise(data)


VALID = [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE, SAMPLE_LONG_TERM_REQUEST]


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_parse_survives_truncation_and_bit_flips(data: bytes, draw: st.DataObject) -> None:
    exercise(data[: draw.draw(st.integers(0, len(data)))])
    flipped = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 3))):
        bit = draw.draw(st.integers(0, len(data) * 8 - 1))
        flipped[bit // 8] ^= 1 << bit % 8
    exercise(bytes(flipped))


@pytest.mark.slow
def test_a_million_mutations() -> None:
    rng = random.Random(8489)
    for _ in range(1_000_000):
        data = bytearray(rng.choice(VALID))
        for _ in range(rng.randint(1, 4)):
            choice = rng.random()
            if choice < 0.6:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            elif choice < 0.8:
                del data[rng.randrange(len(data)) :]
            else:
                data[rng.randrange(len(data))] = rng.randrange(256)
            if not data:
                break
        exercise(bytes(data))


# --- round trips and integrity ----------------------------------------------

plain_types = st.integers(0, 0xFFFF).filter(
    lambda t: t not in (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256, Attr.FINGERPRINT)
)
plain_attributes = st.lists(st.tuples(plain_types, st.binary(max_size=64)), max_size=8)


@PROPERTY
@given(
    method=st.integers(0, 0xFFF),
    message_class=st.sampled_from(list(MessageClass)),
    transaction_id=st.binary(min_size=12, max_size=12),
    attributes=plain_attributes,
    key=st.none() | st.binary(max_size=64),
    sha256=st.booleans(),
    fingerprint=st.booleans(),
)
def test_encode_then_parse_round_trips(
    method: int,
    message_class: MessageClass,
    transaction_id: bytes,
    attributes: list[tuple[int, bytes]],
    key: bytes | None,
    sha256: bool,
    fingerprint: bool,
) -> None:
    data = stun.encode(
        method,
        message_class,
        transaction_id,
        attributes,
        integrity_key=key,
        integrity_sha256=sha256 and key is not None,
        fingerprint=fingerprint,
    )
    assert stun.is_stun(data)
    message = stun.parse(data)
    assert (message.method, message.message_class) == (method, message_class)
    assert message.transaction_id == transaction_id
    assert message.attributes[: len(attributes)] == attributes
    expected_tail = (1 if key is not None else 0) + (1 if fingerprint else 0)
    assert len(message.attributes) == len(attributes) + expected_tail
    assert bytes(message) == data
    if key is not None:
        assert stun.verify_integrity(message, key)
        assert not stun.verify_integrity(message, key + b"x")
    else:
        assert not stun.verify_integrity(message, b"")


@pytest.mark.parametrize("sha256", [False, True])
@pytest.mark.parametrize("fingerprint", [False, True])
def test_integrity_detects_every_single_bit_flip(sha256: bool, fingerprint: bool) -> None:
    key = stun.long_term_key("user", "realm.test", "secret")
    data = stun.encode(
        Method.ALLOCATE,
        MessageClass.REQUEST,
        TID,
        [
            (Attr.REQUESTED_TRANSPORT, stun.requested_transport_value()),
            (Attr.USERNAME, b"user"),
            (Attr.REALM, b"realm.test"),
            (Attr.NONCE, b"abc"),
        ],
        integrity_key=key,
        integrity_sha256=sha256,
        fingerprint=fingerprint,
    )
    original = stun.parse(data)
    assert stun.verify_integrity(original, key)
    signed_end = len(data) - 8 if fingerprint else len(data)  # FINGERPRINT is not signed
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << bit % 8
        try:
            message = stun.parse(bytes(flipped))
        except StunError:
            continue
        if bit < signed_end * 8:
            assert not stun.verify_integrity(message, key), f"bit {bit} went unnoticed"
        else:  # a FINGERPRINT flipped into another type: ignored, as it follows integrity
            assert message.attributes == original.attributes[:-1]


def test_truncated_sha256_integrity_is_accepted() -> None:
    key = b"k" * 16
    full = stun.parse(
        stun.encode(1, 0, TID, [], integrity_key=key, integrity_sha256=True, fingerprint=False)
    )
    mac = full.get(Attr.MESSAGE_INTEGRITY_SHA256)
    assert mac is not None and len(mac) == 32
    # A 16-byte truncation, signed over a header whose length counts 16 bytes.
    header = stun.encode(1, 0, TID, [(Attr.MESSAGE_INTEGRITY_SHA256, bytes(16))], fingerprint=False)
    short_mac = hmac.digest(key, header[:20], "sha256")[:16]
    message = stun.parse(header[:20] + b"\x00\x1c\x00\x10" + short_mac)
    assert stun.verify_integrity(message, key)
    assert not stun.verify_integrity(message, b"other")


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(max_size=130),  # past the 64-byte block, where the key is hashed first
    data=st.binary(max_size=300),
    digest=st.sampled_from(["sha1", "sha256"]),
)
def test_keyed_mac_is_hmac(key: bytes, data: bytes, digest: str) -> None:
    assert stun.keyed_mac(key, data, digest) == hmac.digest(key, data, digest)
    assert stun.keyed_mac(key, data, digest) == hmac.digest(key, data, digest)  # cached


def test_keyed_mac_cache_stays_bounded_and_right() -> None:
    keys = [bytes([n]) * 16 for n in range(200)]
    for key in keys:
        assert stun.keyed_mac(key, b"m", "sha1") == hmac.digest(key, b"m", "sha1")
    assert len(stun._PADDED) <= stun._PADDED_MAX
    assert stun.keyed_mac(keys[0], b"m", "sha1") == hmac.digest(keys[0], b"m", "sha1")
    with pytest.raises(ValueError, match="unsupported HMAC digest 'md5'"):
        stun.keyed_mac(b"k", b"m", "md5")


# --- parse rules ------------------------------------------------------------


def test_header_errors_name_the_problem() -> None:
    good = stun.encode(1, 0, TID, fingerprint=False)
    cases = {
        b"\x00" * 19: "shorter than the 20-byte header",
        b"\xc0" + good[1:]: "top bits",
        good[:4] + b"\x00\x00\x00\x00" + good[8:]: "magic cookie",
        good[:2] + b"\x00\x04" + good[4:]: "does not match",
        good[:2] + b"\x00\x02" + good[4:] + b"\x00\x00": "multiple of 4",
    }
    for data, problem in cases.items():
        with pytest.raises(StunError, match=problem):
            stun.parse(data)


def test_attribute_running_past_the_end() -> None:
    data = stun.encode(1, 0, TID, [(Attr.USERNAME, b"abcd")], fingerprint=False)
    with pytest.raises(StunError, match="past the end"):
        stun.parse(data[:22] + b"\x00\x09" + data[24:])


def test_fingerprint_must_be_last_and_right() -> None:
    data = stun.encode(1, 0, TID, [(Attr.USERNAME, b"abcd")])
    with pytest.raises(StunError, match="does not match"):
        stun.parse(data[:-1] + bytes([data[-1] ^ 1]))
    not_last = stun.encode(1, 0, TID, [(Attr.FINGERPRINT, b"\x00" * 4), (Attr.USERNAME, b"x")])
    with pytest.raises(StunError, match="FINGERPRINT"):
        stun.parse(not_last)
    wrong_size = stun.encode(1, 0, TID, [(Attr.FINGERPRINT, b"\x00" * 8)], fingerprint=False)
    with pytest.raises(StunError, match="FINGERPRINT"):
        stun.parse(wrong_size)


def test_fingerprint_lookalike_inside_a_value_is_not_a_fingerprint() -> None:
    value = b"abcd" + b"\x80\x28\x00\x04" + b"wxyz"
    data = stun.encode(1, 0, TID, [(Attr.DATA, value)], fingerprint=False)
    assert stun.parse(data).attributes == [(Attr.DATA, value)]
    with_fp = stun.encode(1, 0, TID, [(Attr.DATA, value), (Attr.USERNAME, b"u")])
    assert [t for t, _ in stun.parse(with_fp).attributes] == [
        Attr.DATA,
        Attr.USERNAME,
        Attr.FINGERPRINT,
    ]


def test_attributes_after_integrity_are_ignored() -> None:
    key = b"key"
    signed = stun.encode(1, 0, TID, [(Attr.USERNAME, b"u")], integrity_key=key, fingerprint=False)
    tampered = bytearray(signed + b"\x80\x22\x00\x04evil")
    tampered[2:4] = (len(tampered) - 20).to_bytes(2)
    message = stun.parse(bytes(tampered))
    assert message.software() is None
    assert [t for t, _ in message.attributes] == [Attr.USERNAME, Attr.MESSAGE_INTEGRITY]
    assert stun.verify_integrity(message, key)


def test_sha256_integrity_may_follow_sha1_and_wins() -> None:
    key = b"key"
    sha1 = stun.encode(1, 0, TID, [(Attr.USERNAME, b"u")], integrity_key=key, fingerprint=False)
    message = stun.parse(sha1)
    both = stun.encode(1, 0, TID, message.attributes, integrity_key=key, integrity_sha256=True)
    parsed = stun.parse(both)
    assert parsed.integrity_offset >= 0 and parsed.integrity_sha256_offset > parsed.integrity_offset
    assert stun.verify_integrity(parsed, key)


def test_wrong_integrity_sizes_are_malformed() -> None:
    with pytest.raises(StunError, match="MESSAGE-INTEGRITY of 16"):
        stun.parse(stun.encode(1, 0, TID, [(Attr.MESSAGE_INTEGRITY, bytes(16))]))
    with pytest.raises(StunError, match="SHA256 of 12"):
        stun.parse(stun.encode(1, 0, TID, [(Attr.MESSAGE_INTEGRITY_SHA256, bytes(12))]))


def test_method_bits_are_interleaved_with_class_bits() -> None:
    data = stun.encode(0xABC, MessageClass.ERROR, TID, fingerprint=False)
    assert data[:2] == bytes.fromhex("2b7c")  # 00 10101 1 011 1 1100: M11-M7, C1, M6-M4, C0, M3-M0
    message = stun.parse(data)
    assert (message.method, message.message_class) == (0xABC, MessageClass.ERROR)


def test_parsed_message_has_every_field() -> None:
    message = stun.parse(SAMPLE_IPV4_RESPONSE)
    for field in dataclasses.fields(stun.Message):
        getattr(message, field.name)
    assert message.raw == SAMPLE_IPV4_RESPONSE
    assert message == stun.parse(SAMPLE_IPV4_RESPONSE)
    # compiled by mypyc or not, it pickles and copies
    assert pickle.loads(pickle.dumps(message)) == message == copy.deepcopy(message)


# --- accessors and builders -------------------------------------------------


def build(*attributes: tuple[int, bytes]) -> stun.Message:
    return stun.parse(stun.encode(Method.ALLOCATE, MessageClass.SUCCESS, TID, attributes))


def test_address_accessors() -> None:
    message = build(
        (Attr.XOR_RELAYED_ADDRESS, stun.xor_address_value("203.0.113.5", 50000, TID)),
        (Attr.XOR_RELAYED_ADDRESS, stun.xor_address_value("2001:db8::5", 50002, TID)),
        (Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value("198.51.100.1", 40000, TID)),
        (Attr.XOR_PEER_ADDRESS, stun.xor_address_value("2001:db8::9", 1, TID)),
        (Attr.MAPPED_ADDRESS, stun.address_value("198.51.100.2", 3478)),
        (Attr.OTHER_ADDRESS, stun.address_value("2001:db8:0:0::7", 3479)),
        (Attr.RESPONSE_ORIGIN, stun.address_value("203.0.113.1", 3478)),
        (Attr.ALTERNATE_SERVER, stun.address_value("203.0.113.2", 3478)),
    )
    assert message.xor_relayed_addresses() == [("203.0.113.5", 50000), ("2001:db8::5", 50002)]
    assert message.xor_mapped_address() == ("198.51.100.1", 40000)
    assert message.xor_peer_address() == ("2001:db8::9", 1)
    assert message.mapped_address() == ("198.51.100.2", 3478)
    assert message.other_address() == ("2001:db8::7", 3479)
    assert message.response_origin() == ("203.0.113.1", 3478)
    assert message.alternate_server() == ("203.0.113.2", 3478)
    empty = build()
    assert empty.xor_mapped_address() is None
    assert empty.xor_relayed_addresses() == []
    assert empty.lifetime() is None and empty.error_code() is None and empty.realm() is None


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00\x01\x00", b"\x00\x03" + bytes(6), b"\x00\x01" + bytes(7), b"\x00\x02" + bytes(6)],
)
def test_malformed_address_is_a_stun_error(value: bytes) -> None:
    message = build((Attr.XOR_MAPPED_ADDRESS, value), (Attr.MAPPED_ADDRESS, value))
    with pytest.raises(StunError, match="XOR-MAPPED-ADDRESS"):
        message.xor_mapped_address()
    with pytest.raises(StunError, match="MAPPED-ADDRESS"):
        message.mapped_address()


def test_error_codes() -> None:
    message = build(
        (Attr.ERROR_CODE, stun.error_code_value(438, "Stale Nonce")),
        (Attr.ADDRESS_ERROR_CODE, b"\x02\x00" + stun.error_code_value(440, "Family")[2:]),
    )
    assert message.error_code() == (438, "Stale Nonce")
    assert message.address_error_code() == (stun.FAMILY_IPV6, 440, "Family")
    with pytest.raises(StunError):
        build((Attr.ERROR_CODE, b"\x00\x00\x07\x00")).error_code()
    with pytest.raises(StunError):
        build((Attr.ERROR_CODE, b"\x00\x00")).error_code()
    assert build((Attr.ERROR_CODE, b"\x00\x00\x04\x01\xff")).error_code() == (401, "\ufffd")
    with pytest.raises(ValueError, match=r"300\.\.699"):
        stun.error_code_value(200, "OK")


def test_scalar_and_text_accessors() -> None:
    message = build(
        (Attr.LIFETIME, stun.u32_value(600)),
        (Attr.REALM, b"example.test"),
        (Attr.NONCE, b"obMatJos2AAAB"),
        (Attr.SOFTWARE, b"coturn \xff"),
        (Attr.UNKNOWN_ATTRIBUTES, b"\x00\x1a\x80\x99"),
    )
    assert message.lifetime() == 600
    assert message.realm() == "example.test"
    assert message.nonce() == b"obMatJos2AAAB"
    assert message.software() == "coturn \ufffd"
    assert message.unknown_attributes() == [0x001A, 0x8099]
    with pytest.raises(StunError, match="LIFETIME"):
        build((Attr.LIFETIME, b"\x00\x00")).lifetime()
    with pytest.raises(StunError, match="UTF-8"):
        build((Attr.REALM, b"\xff")).realm()
    with pytest.raises(StunError, match="odd"):
        build((Attr.UNKNOWN_ATTRIBUTES, b"\x00")).unknown_attributes()


def test_password_algorithms() -> None:
    value = (
        stun.password_algorithm_value(stun.PASSWORD_ALGORITHM_SHA256)
        + stun.password_algorithm_value(7, b"abcde")
        + stun.password_algorithm_value(stun.PASSWORD_ALGORITHM_MD5)
    )
    message = build((Attr.PASSWORD_ALGORITHMS, value))
    assert message.password_algorithms() == [(2, b""), (7, b"abcde"), (1, b"")]
    with pytest.raises(StunError):
        build((Attr.PASSWORD_ALGORITHMS, b"\x00\x01\x00\x08abcd")).password_algorithms()
    with pytest.raises(StunError):
        build((Attr.PASSWORD_ALGORITHMS, b"\x00\x01")).password_algorithms()


def test_builders() -> None:
    assert stun.requested_transport_value() == b"\x11\x00\x00\x00"
    assert stun.requested_transport_value(6) == b"\x06\x00\x00\x00"
    assert stun.requested_address_family_value(stun.FAMILY_IPV6) == b"\x02\x00\x00\x00"
    assert stun.channel_number_value(0x4001) == b"\x40\x01\x00\x00"
    assert stun.u32_value(1) == b"\x00\x00\x00\x01"
    calls: list[Callable[[], object]] = [
        lambda: stun.u32_value(2**32),
        lambda: stun.requested_address_family_value(3),
        lambda: stun.channel_number_value(0x3FFF),
        lambda: stun.address_value("not-an-ip", 1),
        lambda: stun.address_value("203.0.113.1", 70000),
        lambda: stun.xor_address_value("2001:db8::1", 1, b"short"),
        lambda: stun.long_term_key("u", "r", "p", algorithm=9),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


def test_long_term_keys() -> None:
    assert stun.long_term_key("u", "r", "p") == hashlib.md5(b"u:r:p").digest()
    sha = stun.long_term_key("u", "r", "p", stun.PASSWORD_ALGORITHM_SHA256)
    assert sha == hashlib.sha256(b"u:r:p").digest()
    assert stun.short_term_key("pass") == b"pass"


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        stun.encode(1, 0, b"short")
    with pytest.raises(ValueError, match="method"):
        stun.encode(0x1000, 0, TID)
    with pytest.raises(ValueError, match="class"):
        stun.encode(1, 0x001, TID)
    with pytest.raises(ValueError, match="out of range"):
        stun.encode(1, 0, TID, [(0x10000, b"")])
    with pytest.raises(ValueError, match="65535"):
        stun.encode(1, 0, TID, [(Attr.DATA, bytes(65000)), (Attr.DATA, bytes(1000))])
    with pytest.raises(ValueError, match="integrity_key"):
        stun.encode(1, 0, TID, integrity_sha256=True)


def test_demultiplexing_helpers() -> None:
    assert stun.is_stun(SAMPLE_REQUEST)
    assert not stun.is_stun(SAMPLE_REQUEST[:19])
    assert not stun.is_stun(b"\x40" + SAMPLE_REQUEST[1:])
    assert not stun.is_stun(SAMPLE_REQUEST[:4] + b"\x00" * 4 + SAMPLE_REQUEST[8:])
    assert stun.is_channel_data(b"\x40\x00\x00\x00")
    assert not stun.is_channel_data(SAMPLE_REQUEST)
    ids = {stun.new_transaction_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 12 for i in ids)


# --- ChannelData and stream framing -----------------------------------------


def test_channel_data() -> None:
    frame = stun.encode_channel_data(0x4000, b"hello")
    assert frame == b"\x40\x00\x00\x05hello"
    assert stun.parse_channel_data(frame) == (0x4000, b"hello")
    padded = stun.encode_channel_data(0x4FFF, b"hello", pad=True)
    assert len(padded) == 12 and stun.parse_channel_data(padded) == (0x4FFF, b"hello")
    for bad in (b"\x40\x00\x00", b"\x30\x00\x00\x00", b"\x40\x00\x00\x09hello", frame + bytes(4)):
        with pytest.raises(StunError):
            stun.parse_channel_data(bad)
    with pytest.raises(ValueError):
        stun.encode_channel_data(0x5000, b"")


frames = st.lists(
    st.one_of(
        st.builds(
            lambda attributes: stun.encode(1, MessageClass.SUCCESS, TID, attributes),
            plain_attributes,
        ),
        st.builds(
            lambda channel, payload: stun.encode_channel_data(channel, payload, pad=True),
            st.integers(0x4000, 0x4FFF),
            st.binary(max_size=70),
        ),
    ),
    max_size=6,
)


@PROPERTY
@given(frames, st.binary(max_size=8), st.data())
def test_stream_framer_reassembles_any_split_and_keeps_what_precedes_garbage(
    messages: list[bytes], tail: bytes, data: st.DataObject
) -> None:
    garbage = b"\xff" + tail if tail else b""  # 0xff starts neither STUN nor ChannelData
    stream = b"".join(messages) + garbage
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    framer = stun.StreamFramer()
    received: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        if framer.error is None:
            received += framer.feed(stream[start:end])
    assert received == messages  # however TCP cut it
    assert (framer.error is not None) == bool(garbage)


def test_stream_framer_fails_for_good_after_garbage() -> None:
    framer = stun.StreamFramer()
    assert framer.feed(SAMPLE_REQUEST[:7]) == []
    assert framer.error is None
    chunk = SAMPLE_REQUEST[7:] + SAMPLE_REQUEST + b"\xff\x00\x00\x00" + SAMPLE_REQUEST
    assert framer.feed(chunk) == [SAMPLE_REQUEST, SAMPLE_REQUEST]
    assert framer.error is not None and "0xff" in framer.error
    with pytest.raises(StunError, match="already failed"):
        framer.feed(SAMPLE_REQUEST)
    broken_cookie = stun.StreamFramer()
    assert broken_cookie.feed(b"\x00\x01\x00\x00\x00\x00\x00\x00") == []
    assert broken_cookie.error == "bad STUN header in stream"


def test_error_reason_padding_nuls_are_dropped() -> None:
    """coturn counts ERROR-CODE's padding in its length (seen in the lab: 'Try Alternate\\0\\0\\0')."""
    value = stun.error_code_value(300, "Try Alternate") + b"\x00\x00\x00"
    message = stun.parse(
        stun.encode(Method.ALLOCATE, MessageClass.ERROR, bytes(12), [(Attr.ERROR_CODE, value)])
    )
    assert message.error_code() == (300, "Try Alternate")
