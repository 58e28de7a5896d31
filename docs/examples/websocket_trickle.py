"""Trickle candidates to the remote peer over a WebSocket signalling channel.

    python docs/examples/websocket_trickle.py ws://signalling.example.org/room/42 [ICE URL ...]
    python docs/examples/websocket_trickle.py            # a demo peer on 127.0.0.1

A turn: or turns: URL takes its username and credential from ICE_USERNAME and
ICE_CREDENTIAL.

Each candidate goes out as soon as it is found, as a browser's `onicecandidate` handler
sends it: `{"type": "candidate", "candidate": RTCIceCandidate.toJSON()}`, with `""` in
`candidate` for a transport's end-of-candidates and `"candidate": null` once gathering is
complete. The ICE ufrag/pwd go first (an offer would carry them in its SDP).

The receiving side (`receive`) turns the messages back into `IceCandidate`s.
"""

import asyncio
import json
import os
import sys

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from ice_engine import Gatherer, IceCandidate, IceCandidateEvent, IceServer
from ice_engine.urls import hostport


async def trickle(websocket: ClientConnection, ice_urls: list[str]) -> int:
    """Gather and send every candidate as it comes; return how many were sent."""
    sent = 0
    username, credential = os.environ.get("ICE_USERNAME"), os.environ.get("ICE_CREDENTIAL")
    servers = [IceServer(url, username, credential) for url in ice_urls]
    async with Gatherer(ice_servers=servers, mids=["0", "1"]) as gatherer:
        credentials = gatherer.credentials
        await websocket.send(
            json.dumps(
                {
                    "type": "ice-parameters",
                    "usernameFragment": credentials.ufrag,
                    "password": credentials.pwd,
                }
            )
        )
        async for event in gatherer.gather():
            if isinstance(event, IceCandidateEvent):  # errors and states stay local
                candidate = None if event.candidate is None else event.candidate.to_json()
                await websocket.send(json.dumps({"type": "candidate", "candidate": candidate}))
                sent += 1
    return sent


async def receive(websocket: ServerConnection) -> list[IceCandidate]:
    """The remote peer's side: read candidates until the null one that ends gathering."""
    received: list[IceCandidate] = []
    async for message in websocket:
        data = json.loads(message)
        if data["type"] == "ice-parameters":
            print(f"peer: remote ufrag {data['usernameFragment']}")
            continue
        init = data["candidate"]
        if init is None:
            print(f"peer: gathering complete, {len(received)} candidates")
            break
        if not init["candidate"]:
            print(f"peer: end-of-candidates for mid {init['sdpMid']}")
            continue
        candidate = IceCandidate.from_json(init)  # parsed; a malformed one raises, naming why
        received.append(candidate)  # here: peer_connection.addIceCandidate(candidate)
        where = hostport(str(candidate.address), candidate.port)  # [IPv6]:port
        print(f"peer: {candidate.type} {where} mid {candidate.sdpMid}")
    return received


async def demo() -> None:
    """Both ends on loopback: a WebSocket server playing the remote peer, and the sender."""
    done: asyncio.Future[list[IceCandidate]] = asyncio.get_running_loop().create_future()

    async def peer(websocket: ServerConnection) -> None:
        done.set_result(await receive(websocket))

    async with serve(peer, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as websocket:
            sent = await trickle(websocket, [])
        received = await done
    print(f"sent {sent} messages, the peer has {len(received)} candidates")


async def main(argv: list[str]) -> None:
    if not argv:
        await demo()
        return
    async with connect(argv[0]) as websocket:
        try:
            sent = await trickle(websocket, argv[1:])
        except ValueError as error:  # a bad URL, a turn: URL without credentials
            sys.exit(f"websocket_trickle: {error}")
    print(f"sent {sent} messages to {argv[0]}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
