"""For a peer that cannot trickle: wait for gathering to complete, then put every candidate
in the SDP (RFC 8840), ending with a=end-of-candidates.

    python docs/examples/non_trickle_sdp.py [remote.sdp]

Without a file, a remote offer that does not list `trickle` in a=ice-options is used.
"""

import asyncio
import sys
from pathlib import Path

from ice_engine import Gatherer, IceCandidateEvent, can_trickle_ice_candidates

REMOTE_OFFER = """\
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=mid:0
a=ice-ufrag:EsAw
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
a=rtpmap:111 opus/48000/2
"""


async def main(remote_sdp: str) -> None:
    trickle = can_trickle_ice_candidates(remote_sdp)
    print(f"canTrickleIceCandidates: {trickle}")
    async with Gatherer() as gatherer:
        if trickle:
            async for event in gatherer.gather():
                if isinstance(event, IceCandidateEvent):  # what addIceCandidate() takes
                    candidate = event.candidate  # None: gathering is complete
                    print("send now:", None if candidate is None else candidate.to_json())
            return
        async for _ in gatherer.gather():  # wait for the null candidate: complete
            pass
        ufrag, pwd = gatherer.credentials.ufrag, gatherer.credentials.pwd
        print(f"a=ice-ufrag:{ufrag}")
        print(f"a=ice-pwd:{pwd}")
        for line in gatherer.sdp_candidates(mid="0"):
            print(line)


if __name__ == "__main__":
    text = Path(sys.argv[1]).read_text() if len(sys.argv) > 1 else REMOTE_OFFER
    asyncio.run(main(text))
