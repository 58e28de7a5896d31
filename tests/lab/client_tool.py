"""Client-side probes the lab tests run inside ``ice-client`` (one JSON object on stdout).

Run as ``ip netns exec ice-client python client_tool.py COMMAND ...``. It uses only
aioice's STUN codec, dnspython and the standard library, never the engine under test, so
these tests prove the lab itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.resolver
from aioice import stun

UDP_TRANSPORT = 17 << 24  # REQUESTED-TRANSPORT value: protocol number in the top byte


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _transact(sock: socket.socket, request: stun.Message, server: tuple[str, int]) -> Any:
    request.add_fingerprint()
    sock.settimeout(2.0)
    for _ in range(3):
        sock.sendto(bytes(request), server)
        try:
            while True:
                response = stun.parse_message(sock.recv(4096))
                if response.transaction_id == request.transaction_id:
                    return response
        except TimeoutError:
            continue
    raise TimeoutError(f"no STUN answer from {server}")


def binding(args: argparse.Namespace) -> dict[str, Any]:
    server = (args.host, args.port)
    with socket.socket(_family(args.host), socket.SOCK_DGRAM) as sock:
        if args.source:
            sock.bind((args.source, 0))
        rtts, response = [], None
        for _ in range(args.count):
            started = time.monotonic()
            response = _transact(
                sock, stun.Message(stun.Method.BINDING, stun.Class.REQUEST), server
            )
            rtts.append((time.monotonic() - started) * 1000.0)
    assert response is not None
    return {
        "mapped": response.attributes.get("XOR-MAPPED-ADDRESS"),
        "other": response.attributes.get("OTHER-ADDRESS"),
        "rtt_ms": rtts,
    }


@dataclass(frozen=True)
class LongTermAuth:
    username: str
    realm: str
    nonce: str
    key: bytes

    def sign(self, request: stun.Message) -> None:
        request.attributes.update(USERNAME=self.username, REALM=self.realm, NONCE=self.nonce)
        request.add_message_integrity(self.key)


def _allocate(sock: socket.socket, server: tuple[str, int], auth: LongTermAuth | None) -> Any:
    request = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST)
    request.attributes["REQUESTED-TRANSPORT"] = UDP_TRANSPORT
    if auth is not None:
        auth.sign(request)
    return _transact(sock, request, server)


def _summary(response: Any) -> dict[str, Any]:
    attrs = response.attributes
    return {
        "class": int(response.message_class),
        "error": list(attrs["ERROR-CODE"]) if "ERROR-CODE" in attrs else None,
        "realm": attrs.get("REALM"),
        "has_nonce": "NONCE" in attrs,
        "relayed": attrs.get("XOR-RELAYED-ADDRESS"),
        "lifetime": attrs.get("LIFETIME"),
    }


def allocate(args: argparse.Namespace) -> dict[str, Any]:
    """``count`` Allocates from separate sockets, all held until the end, then released.

    Without --password only the unauthenticated challenge is made.
    """
    server = (args.host, args.port)
    results: dict[str, Any] = {"challenge": None, "allocations": []}
    held: list[tuple[socket.socket, LongTermAuth]] = []
    sockets = [socket.socket(_family(args.host), socket.SOCK_DGRAM) for _ in range(args.count)]
    try:
        for sock in sockets:
            challenge = _allocate(sock, server, None)
            results["challenge"] = results["challenge"] or _summary(challenge)
            if args.password is None:
                continue
            realm = challenge.attributes["REALM"]
            key = hashlib.md5(f"{args.username}:{realm}:{args.password}".encode()).digest()
            auth = LongTermAuth(args.username, realm, challenge.attributes["NONCE"], key)
            response = _allocate(sock, server, auth)
            results["allocations"].append(_summary(response))
            if response.message_class == stun.Class.RESPONSE:
                held.append((sock, auth))
        for sock, auth in held:  # LIFETIME 0 frees the quota for whoever comes next
            refresh = stun.Message(stun.Method.REFRESH, stun.Class.REQUEST)
            refresh.attributes["LIFETIME"] = 0
            auth.sign(refresh)
            _transact(sock, refresh, server)
    finally:
        for sock in sockets:
            sock.close()
    return results


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    resolver = dns.resolver.Resolver()  # reads /etc/resolv.conf, i.e. the netns one
    try:
        answer = resolver.resolve(args.name, args.rdtype)
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN) as exc:
        return {"error": type(exc).__name__, "nameservers": resolver.nameservers}
    except dns.exception.DNSException as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "nameservers": resolver.nameservers}
    assert answer.rrset is not None
    return {
        "answers": sorted(rdata.to_text() for rdata in answer),
        "ttl": answer.rrset.ttl,
        "nameservers": resolver.nameservers,
    }


def tls(args: argparse.Namespace) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=args.cafile)
    try:
        with (
            socket.create_connection((args.host, args.port), timeout=3.0) as raw,
            context.wrap_socket(raw, server_hostname=args.host) as conn,
        ):
            return {"ok": True, "version": conn.version()}
    except ssl.SSLCertVerificationError as exc:
        return {"ok": False, "error": f"verify: {exc.verify_message}"}


def udp_probe(args: argparse.Namespace) -> dict[str, Any]:
    with socket.socket(_family(args.host), socket.SOCK_DGRAM) as sock:
        sock.connect((args.host, args.port))
        sock.settimeout(args.timeout)
        sock.send(b"lab probe")
        try:
            sock.recv(2048)
        except ConnectionRefusedError:
            return {"result": "refused"}
        except TimeoutError:
            return {"result": "timeout"}
    return {"result": "reply"}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("binding")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--source")
    p.add_argument("--count", type=int, default=1)
    p = sub.add_parser("allocate")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--username", default="alice")
    p.add_argument("--password")
    p.add_argument("--count", type=int, default=1)
    p = sub.add_parser("resolve")
    p.add_argument("name")
    p.add_argument("rdtype")
    p = sub.add_parser("tls")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--cafile")
    p = sub.add_parser("udp-probe")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--timeout", type=float, default=1.0)
    return parser.parse_args(argv)


COMMANDS = {
    "binding": binding,
    "allocate": allocate,
    "resolve": resolve,
    "tls": tls,
    "udp-probe": udp_probe,
}

if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    print(json.dumps(COMMANDS[arguments.command](arguments)))
