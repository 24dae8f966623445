"""When to stop waiting for a block: the header chain the node downloads must be one it can get.

A peer can announce valid headers and never deliver their blocks, or deliver a block that does
not match its header. If the node kept such a header as its best, it would report "syncing"
forever and its miner would wait for a block that never comes. So the first missing block of
the best header chain is watched: each failed delivery (a stall, a ``notfound``, a block whose
events do not match the header) is counted, and the time since no connected peer could supply
it is measured. After ``max_failures`` failures, or ``grace`` seconds without any source, the
header and its descendants are dropped from the candidates
(:meth:`chain.node.headers.HeaderTree.mark_unavailable`). They come back when a header with new
work is built on them, or when a peer offers them again while they have failed fewer than
``max_failures`` times.
"""

from __future__ import annotations

MAX_TRACKED = 4096


class BlockWaits:
    def __init__(self, grace: float, max_failures: int = 3) -> None:
        self.grace = grace
        self.max_failures = max_failures
        self.failures: dict[bytes, int] = {}
        self._sourceless_since: dict[bytes, float] = {}

    def failed(self, block_hash: bytes) -> None:
        if len(self.failures) >= MAX_TRACKED:
            self.failures.clear()
        self.failures[block_hash] = self.failures.get(block_hash, 0) + 1

    def exhausted(self, block_hash: bytes) -> bool:
        return self.failures.get(block_hash, 0) >= self.max_failures

    def give_up(self, block_hash: bytes, has_source: bool, now: float) -> bool:
        """Whether to stop waiting for the first missing block ``block_hash``."""
        if self.exhausted(block_hash):
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
