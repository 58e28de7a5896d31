"""Gather host candidates and print each as it arrives, then the ufrag and the count.

python docs/examples/host_candidates.py
"""

import asyncio

from ice_engine import Gatherer, IceCandidateEvent, IceGatheringStateChangeEvent


async def main() -> None:
    async with Gatherer() as gatherer:  # no servers: host candidates only
        async for event in gatherer.gather():
            if isinstance(event, IceCandidateEvent):
                if event.candidate is None:
                    print("gathering complete")
                elif event.candidate.is_end_of_candidates:
                    print(f"end-of-candidates for mid {event.candidate.sdpMid}")
                else:
                    c = event.candidate
                    print(f"{event.t * 1000:6.1f} ms  {c.type} {c.address} {c.port}  {c.candidate}")
            elif isinstance(event, IceGatheringStateChangeEvent):
                print(f"{event.t * 1000:6.1f} ms  state {event.state.value}")
        print(f"ufrag {gatherer.credentials.ufrag}, {len(gatherer.candidates)} candidates")


if __name__ == "__main__":
    asyncio.run(main())
