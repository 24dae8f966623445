"""Solving a block template's proof of work and connecting the result."""

from __future__ import annotations

from collections.abc import Callable

from chain.block import Block
from chain.header import Header, hash_to_int

MAX_NONCE = (1 << 64) - 1


def solve(header: Header, should_stop: Callable[[], bool] | None = None,
          chunk: int = 100_000) -> Header | None:
    """Search nonces for ``header`` until its hash meets its target (None if stopped)."""
    target = header.target
    nonce = header.nonce
    while nonce <= MAX_NONCE:
        for n in range(nonce, min(nonce + chunk, MAX_NONCE + 1)):
            candidate = header.with_nonce(n)
            if hash_to_int(candidate.hash) <= target:
                return candidate
        nonce += chunk
        if should_stop is not None and should_stop():
            return None
    return None


def solve_block(block: Block) -> Block:
    header = solve(block.header)
    if header is None:
        raise RuntimeError("nonce space exhausted")
    return Block(header, block.events)
