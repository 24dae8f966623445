"""Solving block templates with the numba miner.

The miner scans the header's 64-bit nonce; should a template's whole nonce space fail (about
5,000 years at 100 MH/s, but correct all the same), the header time is rolled forward one
second and the scan starts again. One process-wide miner is loaded lazily: its kernels compile
once per machine (numba's cache) and load in a fraction of a second afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from chain.core.block import Block
from chain.core.header import HEADER_SIZE, Header
from chain.core.native import KERNEL_LOAD_LOCK

if TYPE_CHECKING:
    from miner import Miner

_lock = threading.Lock()
_shared: Miner | None = None


def shared_miner(threads: int | None = None) -> Miner:
    """The process's miner; ``threads`` (default: all cores) is fixed by the first caller.

    numba is imported here, not at module load, so commands that never mine start fast.
    """
    with KERNEL_LOAD_LOCK:
        from miner import Miner

    global _shared
    with _lock:
        if _shared is None or (threads is not None and threads != _shared.threads):
            _shared = Miner(threads)
        return _shared


@dataclass
class Solved:
    header: Header
    hashes: int
    seconds: float

    @property
    def hashrate(self) -> float:
        return self.hashes / self.seconds if self.seconds > 0 else 0.0


def solve(header: Header, should_stop: Callable[[], bool] | None = None,
          threads: int | None = None) -> Header | None:
    """The header with a nonce meeting its target; None if ``should_stop`` said so first."""
    solved = mine_header(header, should_stop, threads)
    return solved.header if solved is not None else None


def mine_header(header: Header, should_stop: Callable[[], bool] | None = None,
                threads: int | None = None) -> Solved | None:
    """Like :func:`solve`, with the hashes tried and the time taken, for a hash-rate line."""
    miner = shared_miner(threads)
    hashes = 0
    seconds = 0.0
    while True:
        result = miner.search(header.encode(), header.target, header.nonce, should_stop=should_stop)
        stats = miner.last_search
        if stats is not None:
            hashes += stats.hashes
            seconds += stats.elapsed_s
        if result is not None:
            solved = Header.decode(result.header)
            assert len(result.header) == HEADER_SIZE
            return Solved(solved, hashes, seconds)
        if stats is None or not stats.exhausted:
            return None
        header = replace(header, time=header.time + 1, nonce=0)


def solve_block(block: Block, should_stop: Callable[[], bool] | None = None,
                threads: int | None = None) -> tuple[Block, Solved] | None:
    solved = mine_header(block.header, should_stop, threads)
    if solved is None:
        return None
    return Block(solved.header, block.events), solved
