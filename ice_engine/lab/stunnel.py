"""stunnel in front of coturn's TCP port: TURN over TLS 1.3 (coturn 4.6 stops at TLS 1.2).

Terminating TLS in a proxy in front of the TURN server is a common deployment. The
client's handshake then takes one round trip (TLS 1.3) instead of two (a full TLS 1.2
handshake). The lab's certificate is used; TCP_NODELAY on both legs keeps Nagle from
holding back the TURN messages it forwards. It adds under 1 ms per connection.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ice_engine.lab import topology as t
from ice_engine.lab.certs import TlsFiles
from ice_engine.lab.processes import Daemon

NAME = "stunnel"
BINARY = "stunnel4"  # Debian's binary; `stunnel` is a symlink to it


def unavailable_reason() -> str | None:
    if shutil.which(BINARY) is None:
        return "TURN over TLS 1.3 needs stunnel (Debian package stunnel4)"
    return None


def daemon(state_dir: Path, tls: TlsFiles) -> Daemon:
    conf = state_dir / "stunnel.conf"
    conf.write_text(
        "foreground = yes\n"
        "pid =\n"  # the lab tracks the PID itself; logs go to stderr, kept by the lab
        # No syslog daemon runs in the lab: each syslog() call then cost ~1 ms, and the
        # two per connection held its first answer back by 2 ms.
        "syslog = no\n"
        "socket = l:TCP_NODELAY=1\n"
        "socket = r:TCP_NODELAY=1\n"
        "[turns-tls13]\n"
        f"accept = {t.SERVER_IPV4}:{t.TLS13_PORT}\n"
        f"connect = {t.SERVER_IPV4}:{t.STUN_PORT}\n"
        f"cert = {tls.server_cert}\n"
        f"key = {tls.server_key}\n"
        "sslVersionMin = TLSv1.3\n"
    )
    return Daemon(name=NAME, argv=(BINARY, str(conf)), netns=t.SERVER_NS)
