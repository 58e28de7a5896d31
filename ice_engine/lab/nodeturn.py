"""node-turn, a second TURN implementation for the lab (UDP only).

coturn binds each nonce to the client's 5-tuple, so a nonce cached from one allocation is
stale for the next socket. node-turn keeps its nonces server-wide, as RFC 8489 allows:
against it, a gatherer that already knows the server's realm and nonce allocates in one
round trip instead of two. It also checks the TURN client against a second codebase.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ice_engine.lab import topology as t
from ice_engine.lab.processes import Daemon

NAME = "node-turn"
MODULE = t.NODE_TURN_PREFIX / "node_modules" / "node-turn"


def unavailable_reason() -> str | None:
    """None if node-turn can run here, else what is missing and how to get it."""
    if shutil.which("node") is None:
        return "node-turn needs Node.js (Debian package nodejs)"
    if not (MODULE / "package.json").exists():
        return (
            f"node-turn is not installed in {t.NODE_TURN_PREFIX} (tests/install-tools.sh "
            f"runs npm install --prefix {t.NODE_TURN_PREFIX} node-turn@{t.NODE_TURN_VERSION})"
        )
    return None


def daemon(state_dir: Path) -> Daemon:
    """Write the launcher script and return the daemon to start in the server namespace."""
    options = {
        "listeningPort": t.NODE_TURN_PORT,
        "listeningIps": [t.SERVER_IPV4],
        "relayIps": [t.SERVER_ALT_IPV4],
        "authMech": "long-term",
        "credentials": {t.USERNAME: t.PASSWORD},
        "realm": t.REALM,
        "debugLevel": "ERROR",
    }
    script = state_dir / "node-turn.js"
    script.write_text(
        f"const Turn = require({json.dumps(str(MODULE))});\n"
        f"new Turn({json.dumps(options)}).start();\n"
    )
    return Daemon(name=NAME, argv=("node", str(script)), netns=t.SERVER_NS)
