"""User-facing configuration: RTCIceServer-like server entries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .model import Server
from .urls import InvalidServerUrl, parse_server_url

__all__ = ["IceServer", "servers_from_config"]


@dataclass(frozen=True, slots=True)
class IceServer:
    """RTCIceServer: one or more URLs sharing credentials. `credential` never shows in repr.

    A turn: or turns: URL needs a non-empty `username` and `credential`; a `Gatherer`
    given one without refuses it with `InvalidServerUrl`.
    """

    urls: str | Sequence[str]
    username: str | None = None
    credential: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        urls = self.urls
        if not (
            isinstance(urls, str)
            or (isinstance(urls, Sequence) and all(isinstance(url, str) for url in urls))
        ):
            raise TypeError(f"IceServer urls must be a URL string or a list of them, not {urls!r}")
        for name in ("username", "credential"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"IceServer {name} must be a string, not {type(value).__name__}")

    @classmethod
    def from_json(cls, init: Mapping[str, Any]) -> IceServer:
        """From an RTCIceServer dictionary, as an RTCConfiguration's `iceServers` holds
        it in JSON (`{"urls": [...], "username": ..., "credential": ...}`). Members a
        browser does not know are ignored, as WebIDL dictionaries ignore them; a
        `credentialType` other than the default "password" ("oauth", long dropped from
        the spec) raises ValueError, as does a dictionary without `urls`."""
        if not isinstance(init, Mapping):
            raise TypeError(f"an RTCIceServer must be a dict, not {type(init).__name__}")
        if "urls" not in init:
            raise ValueError(f"an RTCIceServer needs urls, and has only {list(init)!r}")
        kind = init.get("credentialType", "password")
        if kind != "password":
            raise ValueError(f"credentialType {kind!r} is not supported, only 'password'")
        return cls(init["urls"], init.get("username"), init.get("credential"))

    @property
    def url_list(self) -> list[str]:
        return [self.urls] if isinstance(self.urls, str) else list(self.urls)


def servers_from_config(ice_servers: Sequence[IceServer]) -> tuple[Server, ...]:
    """Parse every URL up front, so a typo fails at construction rather than mid-gathering.

    TURN URLs need a username and credential, as RTCPeerConnection insists, and non-empty
    ones (as the CLI): an empty string would only fail later, at the server. A server given
    twice (the same URL, and for TURN the same credentials) is kept once. The result is
    immutable and shared by every gatherer given the same servers: a server process makes
    thousands with one configuration.
    """
    try:
        key = tuple(ice_servers)
    except TypeError:  # None, or a lone IceServer not in a list
        raise _not_a_sequence(ice_servers) from None
    try:
        cached = _parsed.get(key)
    except TypeError:  # an entry with its URLs in a list: not hashable, parse it anew
        cached, hashable = None, False
    else:
        hashable = True
    if cached is not None:
        return cached
    servers: list[Server] = []
    seen: set[tuple[str, str, int, str, bool, tuple[str | None, str | None] | None]] = set()
    for entry in key:  # not ice_servers: an iterator is spent
        if not isinstance(entry, IceServer):
            if isinstance(ice_servers, str):  # a URL not in an IceServer
                raise _not_a_sequence(ice_servers)
            raise TypeError(f"ice_servers must hold IceServer objects, not {type(entry).__name__}")
        urls = entry.url_list
        if not urls:
            raise InvalidServerUrl("an IceServer has no URLs")
        for text in urls:
            url = parse_server_url(text)
            if url.is_turn:
                _check_turn_credentials(text, entry.username, entry.credential)
            credentials = (entry.username, entry.credential) if url.is_turn else None
            same = (url.scheme, url.host, url.port, url.transport, url.explicit_port, credentials)
            if same in seen:  # given twice: asked once, and its errors told once
                continue
            seen.add(same)
            servers.append(Server(url, len(servers), entry.username, entry.credential))
    parsed = tuple(servers)
    if hashable:
        if len(_parsed) >= 256:
            _parsed.clear()
        _parsed[key] = parsed
    return parsed


def _check_turn_credentials(url: str, username: str | None, credential: str | None) -> None:
    """What a TURN server could not be sent: caught here, not mid-gathering."""
    if not (username and credential):
        raise InvalidServerUrl(f"{url!r} needs a non-empty username and credential")
    for name, value in (("username", username), ("credential", credential)):
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate, as undecodable bytes in argv give
            raise InvalidServerUrl(f"{url!r}: the {name} is not valid Unicode") from None
    size = len(username.encode())
    if size >= 509:  # RFC 8489 §14.3: USERNAME is fewer than 509 bytes of UTF-8
        raise InvalidServerUrl(f"{url!r}: the username is {size} bytes, TURN allows 508")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in username):  # RFC 8265 OpaqueString
        raise InvalidServerUrl(f"{url!r}: the username has a control character")


def _not_a_sequence(ice_servers: object) -> TypeError:
    return TypeError(
        f"ice_servers must be a sequence of IceServer, not {type(ice_servers).__name__}"
    )


_parsed: dict[tuple[IceServer, ...], tuple[Server, ...]] = {}
