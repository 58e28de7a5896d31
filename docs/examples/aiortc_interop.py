"""Gather with ice-engine, then hand the candidates to aioice and aiortc.

    python docs/examples/aiortc_interop.py [ICE URL ...]      (needs: pip install aiortc)

`to_aiortc()` gives what `RTCPeerConnection.addIceCandidate()` takes; `to_aioice()` what
`aioice.Connection.add_remote_candidate()` takes; `from_aioice()` goes the other way, for
signalling aioice's own candidates in the browser's shape.
"""

import asyncio
import sys

import aioice

from ice_engine import Gatherer, IceServer
from ice_engine.interop import from_aioice, to_aioice, to_aiortc
from ice_engine.urls import hostport


async def main(urls: list[str]) -> None:
    async with Gatherer(ice_servers=[IceServer(url) for url in urls]) as gatherer:
        async for _ in gatherer.gather():
            pass
        candidates = gatherer.candidates

    for candidate in candidates:
        for_aiortc = to_aiortc(candidate)  # aiortc.RTCIceCandidate, sdpMid/sdpMLineIndex set
        print(
            f"aiortc: {for_aiortc.type} {hostport(for_aiortc.ip, for_aiortc.port)} "
            f"sdpMid={for_aiortc.sdpMid} sdpMLineIndex={for_aiortc.sdpMLineIndex}"
        )

    # aioice as the remote agent: our candidates become its remote candidates
    connection = aioice.Connection(ice_controlling=False)
    connection.remote_username = candidates[0].usernameFragment
    for candidate in candidates:
        await connection.add_remote_candidate(to_aioice(candidate))
    await connection.add_remote_candidate(None)  # end-of-candidates
    print(f"aioice: {len(connection.remote_candidates)} remote candidates")

    # and aioice's own host candidates, in the browser's shape for signalling
    await connection.gather_candidates()
    for theirs in connection.local_candidates:
        ours = from_aioice(theirs, sdp_mid="0", username_fragment=connection.local_username)
        print(f"from aioice: {ours.to_json()['candidate']}")
    await connection.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
