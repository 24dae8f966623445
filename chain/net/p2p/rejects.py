"""Recently refused events, so that a replay costs a lookup, not a signature check.

Checking a relayed event costs a signature verification and a state lookup. Peers replaying
the same refused events (unfunded, badly signed) could otherwise keep a core busy for free.
As Bitcoin Core's ``m_recent_rejects`` does, the node remembers the ids it refused: an event
that can never become valid (a bad signature, over the size limit) stays remembered; one
refused for the state of the chain (no funds yet, a nonce ahead) is forgotten when the tip
moves, since it may be valid on the new tip. Ids under check are tracked too, so six peers
sending the same message at once cause one check, not six.
"""

from __future__ import annotations

from collections import OrderedDict

CAPACITY = 100_000


class RecentRejects:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[bytes, bool] = OrderedDict()  # id -> refused for good
        self.checking: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, eid: bytes) -> bool:
        return eid in self._ids

    def permanent(self, eid: bytes) -> bool:
        """Whether ``eid`` was refused for good (no honest node relays it)."""
        return self._ids.get(eid, False)

    def add(self, eid: bytes, permanent: bool) -> None:
        self._ids[eid] = permanent
        self._ids.move_to_end(eid)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def tip_changed(self) -> None:
        """Forget the refusals that depended on the chain's state."""
        for eid in [e for e, permanent in self._ids.items() if not permanent]:
            del self._ids[eid]
