"""Minimal readiness probes: a STUN Binding over UDP and a DNS lookup.

They are self-contained (no dependency on the engine under test) so a broken engine can
never make the lab look broken, and vice versa.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time

import dns.message
import dns.query
import dns.rdatatype

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
XOR_MAPPED_ADDRESS = 0x0020


def binding_request() -> tuple[bytes, bytes]:
    """A bare RFC 5389 Binding request and its transaction id."""
    transaction_id = os.urandom(12)
    return struct.pack("!HHI", BINDING_REQUEST, 0, MAGIC_COOKIE) + transaction_id, transaction_id


def parse_binding_success(data: bytes, transaction_id: bytes) -> tuple[str, int] | None:
    """The XOR-MAPPED-ADDRESS of a matching Binding success response, else None."""
    if len(data) < 20:
        return None
    msg_type, length, cookie = struct.unpack("!HHI", data[:8])
    if msg_type != BINDING_SUCCESS or cookie != MAGIC_COOKIE or data[8:20] != transaction_id:
        return None
    offset, end = 20, min(len(data), 20 + length)
    while offset + 4 <= end:
        attr_type, attr_len = struct.unpack("!HH", data[offset : offset + 4])
        value = data[offset + 4 : offset + 4 + attr_len]
        if attr_type == XOR_MAPPED_ADDRESS and len(value) >= 8:
            return _unxor_address(value, transaction_id)
        offset += 4 + (attr_len + 3) // 4 * 4
    return None


def _unxor_address(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    family = value[1]
    port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC_COOKIE >> 16)
    key = struct.pack("!I", MAGIC_COOKIE) + transaction_id
    size = 4 if family == 0x01 else 16
    raw = bytes(a ^ b for a, b in zip(value[4 : 4 + size], key, strict=False))
    return str(ipaddress.ip_address(raw)), port


def stun_binding(
    sock: socket.socket, server: tuple[str, int], timeout_s: float = 2.0, retry_s: float = 0.1
) -> tuple[str, int] | None:
    """Send Binding requests over UDP ``sock`` until one is answered; the mapped address."""
    request, transaction_id = binding_request()
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            sock.sendto(request, server)
        except OSError:  # e.g. address not yet routable while the lab comes up
            time.sleep(min(retry_s, remaining))
            continue
        sock.settimeout(min(retry_s, remaining))
        try:
            while True:
                data = sock.recv(2048)
                mapped = parse_binding_success(data, transaction_id)
                if mapped is not None:
                    return mapped
        except (TimeoutError, ConnectionRefusedError):
            continue
    return None


def dns_answers(
    sock: socket.socket, server: str, name: str, rdtype: str, timeout_s: float = 1.0
) -> list[str]:
    """Text of the answer records for ``name``/``rdtype`` asked of ``server`` over ``sock``."""
    query = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
    sock.setblocking(False)  # dnspython requires a nonblocking socket of its own
    response = dns.query.udp(query, server, timeout=timeout_s, sock=sock)
    return [rdata.to_text() for rrset in response.answer for rdata in rrset]


def tcp_connects(sock: socket.socket, server: tuple[str, int], timeout_s: float = 1.0) -> bool:
    sock.settimeout(timeout_s)
    try:
        sock.connect(server)
    except OSError:
        return False
    return True
