"""Header pre-sync: a peer's low-work header chain is checked but not stored until it shows
more work than ours.

A peer can claim any amount of work in its ``hello``. If the node stored every header it was
sent in answer, a liar could fill memory with cheap branches (on a chain whose difficulty
adjusts, early headers of a branch can be nearly free). Following Bitcoin Core's two-phase
header sync, a batch that does not raise our best work starts a pre-sync instead:

1. *Pre-sync*: the headers are checked as usual (continuity, proof of work, target, time) but
   only a one-byte salted commitment per header is kept, with the running work. If the chain
   ends below our best work, nothing was stored; if it ends below the work the peer claimed,
   the peer lied.
2. *Redownload*: once its work passes ours, the same headers are requested again from the fork
   point; each must match its commitment (the salt is secret, so a peer cannot serve other,
   cheaper headers the second time except by luck, 1 in 256 per header) and is then stored.

Memory is one byte per header, and a branch may be at most a few times longer than our chain
is above the fork point.
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections import deque

from chain.consensus.validation import check_header
from chain.core.errors import BadParent, ValidationError
from chain.core.header import Header, work_of
from chain.node.headers import HeaderNode, HeaderTree

SLACK_HEADERS = 8000


class PreSyncError(ValidationError):
    """A pre-synced chain broke its promise: it grew past its bound, or the redownload did
    not match what was pre-synced."""

    code = "presync"


class Phase(enum.Enum):
    PRESYNC = "presync"
    REDOWNLOAD = "redownload"


class HeaderPreSync:
    def __init__(self, tree: HeaderTree, fork: HeaderNode) -> None:
        self.params = tree.params
        self.fork = fork
        self.phase = Phase.PRESYNC
        self.salt = os.urandom(16)
        self.commitments = bytearray()
        self.last = fork.header
        self.last_hash = fork.hash
        self.height = fork.height
        self.work = fork.work
        self.max_headers = 4 * max(0, tree.best.height - fork.height) + SLACK_HEADERS
        times: list[int] = []
        node: HeaderNode | None = fork
        while node is not None and len(times) < self.params.median_window:
            times.append(node.header.time)
            node = node.prev
        self.times: deque[int] = deque(reversed(times), maxlen=self.params.median_window)
        self.redownloaded = 0
        self.redownload_tip = fork.hash  # where the next redownloaded header must connect

    def _commitment(self, block_hash: bytes) -> int:
        return hashlib.sha256(self.salt + block_hash).digest()[0]

    def follows(self, headers: list[Header]) -> bool:
        """Whether ``headers`` continue this pre-sync in its current phase."""
        tip = self.last_hash if self.phase is Phase.PRESYNC else self.redownload_tip
        return bool(headers) and headers[0].prev == tip

    def feed(self, headers: list[Header], now: int) -> None:
        """Pre-sync phase: check ``headers`` (a chain continuing the last one) and remember
        their commitments and work. Raises a ValidationError for a bad header."""
        for header in headers:
            if header.prev != self.last_hash:
                raise BadParent("headers do not continue the pre-synced chain")
            h = header.hash
            median = sorted(self.times)[len(self.times) // 2]
            check_header(self.params, header, h, self.last, self.height, median, now)
            if len(self.commitments) >= self.max_headers:
                raise PreSyncError(f"a low-work branch longer than {self.max_headers} headers")
            self.commitments.append(self._commitment(h))
            self.last, self.last_hash = header, h
            self.height += 1
            self.work += work_of(header.target)
            self.times.append(header.time)

    def start_redownload(self) -> None:
        self.phase = Phase.REDOWNLOAD

    def verify(self, headers: list[Header]) -> None:
        """Redownload phase: each header within the pre-synced stretch must match its
        commitment. Headers past it need none: by then the chain has shown enough work."""
        for header in headers:
            index = self.redownloaded
            if index < len(self.commitments) and (
                    self._commitment(header.hash) != self.commitments[index]):
                raise PreSyncError(f"redownloaded header {index} differs from the pre-synced one")
            self.redownloaded += 1
        self.redownload_tip = headers[-1].hash

    @property
    def redownload_done(self) -> bool:
        return self.phase is Phase.REDOWNLOAD and self.redownloaded >= len(self.commitments)
