"""STUN codec speed: ice_engine.stun against aioice.stun, measured in the same run.

    python benchmarks/bench_codec_stun.py [--json] [--repeat N]

Operations, for each of two messages (a Binding success with XOR-MAPPED-ADDRESS
and FINGERPRINT; an authenticated Allocate success):

- parse: bytes -> message object (aioice also decodes every attribute; ours
  decodes lazily, so "parse+read" adds reading the mapped address);
- serialize: a parsed message -> bytes, attributes re-emitted as they are
  (aioice's bytes(Message) recomputes neither integrity nor fingerprint;
  ours is `encode(..., message.attributes, fingerprint=False)`, which is also
  what bytes(message) does, minus the bytes() protocol's dispatch);
- round trip: parse then serialize;
- build: from decoded values, computing MESSAGE-INTEGRITY and FINGERPRINT.

Each figure is the minimum over repeats of the mean time per call; the two
libraries' repeats are interleaved so that machine load affects both alike.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from functools import partial
from importlib.metadata import version

import _common  # this copy's ice_engine first on the path
from _pairs import measure_pair
from aioice import stun as aio

from ice_engine import stun

TRANSACTION_ID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
KEY = stun.long_term_key("user", "example.test", "secret")
MAPPED = ("198.51.100.7", 40000)
RELAYED = ("203.0.113.9", 50000)


def binding_success() -> bytes:
    value = stun.xor_address_value(*MAPPED, TRANSACTION_ID)
    return stun.encode(
        stun.Method.BINDING,
        stun.MessageClass.SUCCESS,
        TRANSACTION_ID,
        [(stun.Attr.XOR_MAPPED_ADDRESS, value)],
    )


def allocate_success() -> bytes:
    return stun.encode(
        stun.Method.ALLOCATE,
        stun.MessageClass.SUCCESS,
        TRANSACTION_ID,
        [
            (stun.Attr.XOR_RELAYED_ADDRESS, stun.xor_address_value(*RELAYED, TRANSACTION_ID)),
            (stun.Attr.XOR_MAPPED_ADDRESS, stun.xor_address_value(*MAPPED, TRANSACTION_ID)),
            (stun.Attr.LIFETIME, stun.u32_value(600)),
        ],
        integrity_key=KEY,
    )


ours_build_binding = binding_success  # building is what binding_success does


def aioice_build_binding() -> bytes:
    message = aio.Message(aio.Method.BINDING, aio.Class.RESPONSE, TRANSACTION_ID)
    message.attributes["XOR-MAPPED-ADDRESS"] = MAPPED
    message.add_fingerprint()
    return bytes(message)


def aioice_build_allocate() -> bytes:
    message = aio.Message(aio.Method.ALLOCATE, aio.Class.RESPONSE, TRANSACTION_ID)
    message.attributes["XOR-RELAYED-ADDRESS"] = RELAYED
    message.attributes["XOR-MAPPED-ADDRESS"] = MAPPED
    message.attributes["LIFETIME"] = 600
    message.add_message_integrity(KEY)
    return bytes(message)


def reencode(message: stun.Message) -> bytes:
    return stun.encode(
        message.method,
        message.message_class,
        message.transaction_id,
        message.attributes,
        fingerprint=False,
    )


def ours_round_trip(data: bytes) -> bytes:
    return reencode(stun.parse(data))


def aioice_round_trip(data: bytes) -> bytes:
    return bytes(aio.parse_message(data))


def ours_parse_read(data: bytes) -> object:
    return stun.parse(data).xor_mapped_address()


def aioice_parse_read(data: bytes) -> object:
    return aio.parse_message(data).attributes["XOR-MAPPED-ADDRESS"]


Case = tuple[str, str, Callable[[], object], Callable[[], object]]


def cases() -> list[Case]:
    found: list[Case] = []
    for name, data, build in (
        ("binding_success", binding_success(), (ours_build_binding, aioice_build_binding)),
        ("allocate_success", allocate_success(), (allocate_success, aioice_build_allocate)),
    ):
        ours_message = stun.parse(data)
        aio_message = aio.parse_message(data)
        # Both sides must agree on the bytes before their speed means anything.
        assert reencode(ours_message) == bytes(aio_message) == data
        assert build[0]() == build[1]() == data
        assert ours_parse_read(data) == aioice_parse_read(data)
        found += [
            (name, "parse", partial(stun.parse, data), partial(aio.parse_message, data)),
            (name, "parse+read", partial(ours_parse_read, data), partial(aioice_parse_read, data)),
            (name, "serialize", partial(reencode, ours_message), partial(bytes, aio_message)),
            (name, "round trip", partial(ours_round_trip, data), partial(aioice_round_trip, data)),
            (name, "build", build[0], build[1]),
        ]
    return found


def measure(case: Case, repeat: int) -> dict[str, object]:
    return measure_pair("message", case, repeat, theirs_share=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--repeat", type=_common.positive_int, default=7, help="repeats; the minimum is kept"
    )
    args = parser.parse_args()
    results = [measure(case, args.repeat) for case in cases()]
    if args.json:
        report = {
            "benchmark": "codec_stun",
            "python": platform.python_version(),
            "aioice": version("aioice"),
            "unit": "microseconds per operation",
            "results": results,
        }
        print(json.dumps(report, indent=2))
        return
    print(f"ice_engine.stun vs aioice {version('aioice')} (Python {platform.python_version()})")
    print(f"{'message':<18}{'operation':<12}{'ice_engine µs':>14}{'aioice µs':>11}{'ratio':>8}")
    for row in results:
        print(
            f"{row['message']:<18}{row['operation']:<12}{row['ice_engine_us']:>14.3f}"
            f"{row['aioice_us']:>11.3f}{row['ratio']:>7.2f}×"
        )


if __name__ == "__main__":
    main()
