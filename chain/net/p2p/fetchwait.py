"""When to stop waiting for a block: the header chain the node downloads must be one it can get.

A peer can announce valid headers and never deliver their blocks, or deliver a block that does
not match its header. If the node kept such a header as its best, it would report "syncing"
forever and its miner would wait for a block that never comes. So the first missing block of
the best header chain is watched: each failed delivery (a stall, a ``notfound``, a block whose
events do not match the header) is counted, and the time since no connected peer could supply
it is measured. After ``max_failures`` failures, or ``grace`` seconds without any source, the
header and its descendants are dropped from the candidates
(:meth:`chain.node.headers.HeaderTree.mark_unavailable`). They come back when a header with new
work is built on them, or when a peer offers them again (a connected peer's best header is a
standing offer) while they have failed fewer than ``max_failures`` times.

Failures are forgotten ``retry_after`` seconds after the last one. Peers relaying an honest
chain's headers without its blocks, or an honest peer too slow for the stall timeout, could
otherwise get a chain dropped for good: once nobody mines on it, no new work would ever bring
it back, and the node would never take it even from an honest peer offering it. A peer that
withholds blocks thus costs a few failed requests per ``retry_after``, no more.
"""

from __future__ import annotations

MAX_TRACKED = 4096


class BlockWaits:
    def __init__(self, grace: float, max_failures: int = 3,
                 retry_after: float | None = None) -> None:
        self.grace = grace
        self.max_failures = max_failures
        self.retry_after = 10 * grace if retry_after is None else retry_after
        self.failures: dict[bytes, tuple[int, float]] = {}  # hash -> (count, the last one's time)
        self._sourceless_since: dict[bytes, float] = {}

    def failed(self, block_hash: bytes, now: float) -> None:
        count = self._recent_failures(block_hash, now)
        if len(self.failures) >= MAX_TRACKED:
            self.failures.clear()
        self.failures[block_hash] = (count + 1, now)

    def _recent_failures(self, block_hash: bytes, now: float) -> int:
        count, last = self.failures.get(block_hash, (0, now))
        return count if now - last < self.retry_after else 0

    def exhausted(self, block_hash: bytes, now: float) -> bool:
        return self._recent_failures(block_hash, now) >= self.max_failures

    def give_up(self, block_hash: bytes, has_source: bool, now: float) -> bool:
        """Whether to stop waiting for the first missing block ``block_hash``."""
        if self.exhausted(block_hash, now):
            return True
        if has_source:
            self._sourceless_since.pop(block_hash, None)
            return False
        if len(self._sourceless_since) >= MAX_TRACKED:
            self._sourceless_since.clear()
        since = self._sourceless_since.setdefault(block_hash, now)
        return now - since >= self.grace

    def forget(self, block_hash: bytes) -> None:
        self._sourceless_since.pop(block_hash, None)
