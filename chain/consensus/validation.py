"""Block checks that need no chain state: the header against its parent, and the block's
shape, limits, events root and every event's signature.

Signature checks dominate validation, and libsodium releases the GIL, so large blocks are
checked on a thread pool spread over the cores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from chain.consensus.difficulty import asert_bits
from chain.core.block import Block, events_root
from chain.core.errors import (
    BadCoinbase,
    BadEventsRoot,
    BadHeader,
    BadProofOfWork,
    BadTarget,
    BadTime,
    BlockTooLarge,
    DuplicateEvent,
    TimeTooNew,
    ValidationError,
)
from chain.core.events import Coinbase, Event, SignedEvent
from chain.core.header import Header, hash_to_int, target_to_compact
from chain.core.params import HEADER_VERSION, NetworkParams

PARALLEL_MIN_EVENTS = 64


def expected_bits(params: NetworkParams, parent: Header, parent_height: int) -> int:
    """The compact target a child of ``parent`` must carry."""
    if not params.retarget:
        return target_to_compact(params.pow_limit)
    genesis = params.genesis.header
    return asert_bits(params.pow_limit, genesis.time - params.spacing, 0, params.spacing,
                      params.halflife, params.pow_limit, parent.time, parent_height)


def check_header(
    params: NetworkParams,
    header: Header,
    block_hash: bytes,
    parent: Header,
    parent_height: int,
    median_time_past: int,
    now: int,
) -> None:
    if header.version != HEADER_VERSION:
        raise BadHeader(f"header version {header.version}, expected {HEADER_VERSION}")
    bits = expected_bits(params, parent, parent_height)
    if header.bits != bits:
        raise BadTarget(f"target bits {header.bits:#010x}, expected {bits:#010x}")
    if hash_to_int(block_hash) > header.target:
        raise BadProofOfWork("block hash above its target")
    if header.time <= median_time_past:
        raise BadTime(f"time {header.time} not above the median of the last 11 ({median_time_past})")
    if header.time > now + params.max_future_seconds:
        raise TimeTooNew(f"time {header.time} more than 2 h ahead of now ({now})")


class EventChecker:
    """Runs events' stateless checks, in parallel for large batches."""

    def __init__(self, params: NetworkParams, threads: int | None = None) -> None:
        self.params = params
        self.threads = threads if threads is not None else (os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def _check_range(
        self, events: Sequence[Event], start: int, end: int
    ) -> tuple[int, ValidationError] | None:
        chain_id, limit = self.params.chain_id, self.params.max_event_bytes
        for i in range(start, end):
            ev = events[i]
            if isinstance(ev, SignedEvent):
                try:
                    ev.check_stateless(chain_id, limit)
                except ValidationError as exc:
                    return i, exc
        return None

    def check(self, events: Sequence[Event], start: int = 0) -> None:
        """Raise the first failing event's error, by position."""
        n = len(events)
        if self._pool is None or n - start < PARALLEL_MIN_EVENTS:
            failure = self._check_range(events, start, n)
        else:
            chunks = self.threads * 4
            step = -(-(n - start) // chunks)
            futures = [self._pool.submit(self._check_range, events, s, min(s + step, n))
                       for s in range(start, n, step)]
            failures = [f.result() for f in futures]
            failure = next((f for f in failures if f is not None), None)
        if failure is not None:
            i, exc = failure
            raise type(exc)(f"event {i} ({events[i].kind.name.lower()}): {exc}") from exc


def check_block(params: NetworkParams, block: Block, checker: EventChecker) -> None:
    """Shape, limits, events root and every event's stateless rules."""
    events = block.events
    if block.size > params.max_block_bytes:
        raise BlockTooLarge(f"block is {block.size} bytes, limit {params.max_block_bytes}")
    if len(events) > params.max_events_per_block:
        raise BlockTooLarge(f"block has {len(events)} events, limit {params.max_events_per_block}")
    if not events or not isinstance(events[0], Coinbase):
        raise BadCoinbase("the first event of a block is its coinbase")
    for i in range(1, len(events)):
        if isinstance(events[i], Coinbase):
            raise BadCoinbase(f"event {i} is a second coinbase")
    if events_root(events) != block.header.events_root:
        raise BadEventsRoot("events root does not match the events")
    if len({e.raw for e in events}) != len(events):
        raise DuplicateEvent("the same event twice in one block")
    checker.check(events, 1)
