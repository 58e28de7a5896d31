"""Gather host, srflx and relay candidates from the servers named on the command line.

    python docs/examples/stun_turn.py stun:stun.example.org turn:turn.example.org
    ICE_USERNAME=alice ICE_CREDENTIAL=secret python docs/examples/stun_turn.py turn:...

TURN servers need a username and credential: they are read from ICE_USERNAME and
ICE_CREDENTIAL (kept out of the process list). Errors are printed, not raised: a server
that fails gives an icecandidateerror and gathering goes on without it.
"""

import asyncio
import os
import sys

from ice_engine import Gatherer, IceCandidateErrorEvent, IceCandidateEvent, IceServer
from ice_engine.urls import hostport


async def main(urls: list[str]) -> int:
    servers = [
        IceServer(url, os.environ.get("ICE_USERNAME"), os.environ.get("ICE_CREDENTIAL"))
        for url in urls
    ]
    counts: dict[str, int] = {}
    errors = 0
    async with Gatherer(ice_servers=servers) as gatherer:
        async for event in gatherer.gather():
            if isinstance(event, IceCandidateErrorEvent):
                errors += 1
                print(f"error {event.errorCode} from {event.url}: {event.errorText}")
            elif isinstance(event, IceCandidateEvent) and event.candidate is not None:
                c = event.candidate
                if not c.is_end_of_candidates:
                    counts[str(c.type)] = counts.get(str(c.type), 0) + 1
                    related = (  # hostport: an IPv6 address in brackets, before its port
                        f" (via {hostport(c.relatedAddress, c.relatedPort)})"
                        if c.relatedAddress
                        else ""
                    )
                    print(f"{c.type:<5} {c.protocol} {hostport(str(c.address), c.port)}{related}")
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    print(f"done: {summary}; {errors} errors")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} URL [URL ...]   e.g. stun:stun.example.org")
    try:
        sys.exit(asyncio.run(main(sys.argv[1:])))
    except ValueError as error:  # a malformed URL, or TURN without credentials
        sys.exit(f"{sys.argv[0]}: {error}")
