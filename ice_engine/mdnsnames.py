"""A gatherer's mDNS names for its host addresses, kept apart from `mdns.py`.

`mdns.py` (the responder) needs dnspython, about 0.1 s to import, which most gatherers
never need: this module loads it only when a gatherer with `mdns=True` first joins the
loop's shared responder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .streams import describe

if TYPE_CHECKING:
    from .mdns import MdnsResponder

__all__ = ["MdnsNames"]


class MdnsNames:
    """One `.local` name per host address, for as long as the gatherer has the address,
    answered by the loop's shared responder while the gatherer holds it (`join` to
    `release`)."""

    __slots__ = ("_names", "_responder", "unavailable")

    def __init__(self) -> None:
        self._responder: MdnsResponder | None = None
        self._names: dict[str, str] = {}  # address -> its name
        #: Why names cannot be given (UDP port 5353 taken), once `join` has failed.
        self.unavailable: str | None = None

    @property
    def joined(self) -> bool:
        return self._responder is not None

    async def join(self) -> None:
        """Hold the loop's responder, or set `unavailable`. Two calls at once (prepare()
        beside gather()) hold it once."""
        if self._responder is not None or self.unavailable is not None:
            return
        from .mdns import shared_responder

        try:
            responder = await shared_responder().acquire()
        except OSError as error:
            self.unavailable = f"cannot bind UDP port 5353: {describe(error)}"
            return
        if self._responder is not None:  # the other call joined first: one too many
            await responder.release()
            return
        self._responder = responder

    def name_for(self, address: str) -> str | None:
        """The address's name, registered at first use; None unless joined."""
        responder = self._responder
        if responder is None:
            return None
        name = self._names.get(address)
        if name is None:
            from .mdns import new_mdns_name  # loaded by join already

            name = self._names[address] = new_mdns_name()
            responder.register(name, address)
        return name

    def forget(self, addresses: set[str]) -> None:
        """Stop answering for addresses the machine no longer has (continual gathering):
        their names would send a peer's checks to whoever holds the address next."""
        responder = self._responder
        for address in addresses & self._names.keys():
            name = self._names.pop(address)
            if responder is not None:
                responder.unregister(name)

    async def release(self) -> None:
        """Give the names, and our hold on the responder (port 5353), back. Idempotent."""
        responder, self._responder = self._responder, None
        if responder is not None:
            for name in self._names.values():
                responder.unregister(name)
            await responder.release()
