"""The running node's core: the local chain, mempool and wallet behind one worker thread.

The consensus engine is synchronous (LevelDB writes, signature checks) and not thread-safe, so
every change to it (accepting blocks, admitting events, building templates) runs on a single
dedicated thread, in order, while the asyncio loop keeps serving peers and the API. Reads that
are one LevelDB lookup (a principal, a block) are safe from any thread and run in the loop.

Chain listeners fire on the worker thread; the core forwards them to the loop, where the peer
manager, the API's subscribers and the metrics see every connect and disconnect in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from chain.core.block import Block, events_root
from chain.core.errors import BadEventsRoot, BlockcoinError, ValidationError
from chain.core.events import Body, SignedEvent, event_id
from chain.core.header import hash_hex
from chain.node.chainstate import AcceptResult
from chain.node.headers import HeaderTree
from chain.node.local import LocalNode
from ledger.store import Status

T = TypeVar("T")
log = logging.getLogger("blockcoin.node")
SYNC_LOG_SECONDS = 10.0  # while catching up, a progress line this often instead of one per block

BlockListener = Callable[[str, Block, int], None]
EventListener = Callable[[SignedEvent, bytes, object], None]


@dataclass(slots=True)
class BlockOutcome:
    block: Block
    result: AcceptResult | None
    error: BlockcoinError | None

    @property
    def invalid(self) -> bool:
        """The sender sent a bad block (not merely one whose parent is unknown yet)."""
        return isinstance(self.error, ValidationError) and self.error.punish

    @property
    def mutated(self) -> bool:
        """The events do not match the header's events root: the header may still be good
        (someone else may send its real block), so only the sender is at fault."""
        if isinstance(self.error, BadEventsRoot):
            return True
        return self.error is not None and (
            events_root(self.block.events) != self.block.header.events_root)


class NodeCore:
    def __init__(self, local: LocalNode, loop: asyncio.AbstractEventLoop) -> None:
        self.local = local
        self.params = local.params
        self.chain = local.chain
        self.mempool = local.mempool
        self.wallet = local.wallet
        self.key = self.wallet.key
        self.principal = self.wallet.principal
        self.loop = loop
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="chain")
        self.tree = HeaderTree.from_chain(self.chain)
        self.block_listeners: list[BlockListener] = []
        self.event_listeners: list[EventListener] = []
        self.counters: dict[str, int] = {
            "blocks_connected": 0, "blocks_disconnected": 0, "blocks_invalid": 0,
            "events_accepted": 0, "events_rejected": 0,
        }
        self._last_sync_log = 0.0
        self.chain.listeners.append(self._on_chain_thread)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        if self._on_chain_thread in self.chain.listeners:
            self.chain.listeners.remove(self._on_chain_thread)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the chain thread."""
        return await self.loop.run_in_executor(self.executor, fn, *args)

    # --- chain events ------------------------------------------------------------------

    def _on_chain_thread(self, action: str, block: Block, height: int) -> None:
        self.loop.call_soon_threadsafe(self._on_chain, action, block, height)

    def _on_chain(self, action: str, block: Block, height: int) -> None:
        self.counters["blocks_connected" if action == "connect" else "blocks_disconnected"] += 1
        self._log_tip(action, block, height)
        for listener in list(self.block_listeners):
            try:
                listener(action, block, height)
            except Exception:  # a listener's bug must not stop the node
                log.exception("block listener failed")

    def _log_tip(self, action: str, block: Block, height: int) -> None:
        """Every new tip at INFO, so an operator sees a node follow the chain whether or not
        it mines; while catching up, one line every :data:`SYNC_LOG_SECONDS` instead."""
        if action != "connect":
            log.info("block %d %s disconnected (reorganisation)", height,
                     hash_hex(block.hash)[:16])
            return
        now = time.monotonic()
        if self.syncing:
            if now - self._last_sync_log >= SYNC_LOG_SECONDS:
                self._last_sync_log = now
                log.info("syncing: at block %d of %d", height, self.tree.best.height)
            return
        log.info("new tip %d %s (%d events)", height, hash_hex(block.hash)[:16],
                 len(block.events))

    # --- blocks ------------------------------------------------------------------------

    async def accept_blocks(self, blocks: list[Block]) -> list[BlockOutcome]:
        """Accept ``blocks`` in order on the chain thread; stops at the first failure (its
        descendants in the batch would only fail too). Updates the header tree."""

        def work() -> list[BlockOutcome]:
            out: list[BlockOutcome] = []
            for block in blocks:
                try:
                    out.append(BlockOutcome(block, self.chain.accept_block(block), None))
                except BlockcoinError as exc:
                    out.append(BlockOutcome(block, None, exc))
                    break
            return out

        outcomes = await self.run(work)
        for outcome in outcomes:
            h = outcome.block.hash
            entry = self.chain.index.get(h)
            if outcome.error is None:
                self.tree.add_trusted(outcome.block.header)
            elif outcome.invalid:
                self.counters["blocks_invalid"] += 1
                if not outcome.mutated:
                    self.tree.mark_invalid(h)
            if entry is not None and entry.status == Status.INVALID:
                self.tree.mark_invalid(h)
        # A reorg may have found some other stored block invalid while connecting.
        return outcomes

    # --- events ------------------------------------------------------------------------

    async def add_events(self, events: list[SignedEvent],
                         source: object = None) -> list[tuple[SignedEvent, bytes | None,
                                                              BlockcoinError | None]]:
        """Admit events to the mempool; notify listeners of each accepted one."""

        def work() -> list[tuple[SignedEvent, bytes | None, BlockcoinError | None]]:
            out: list[tuple[SignedEvent, bytes | None, BlockcoinError | None]] = []
            for ev in events:
                try:
                    out.append((ev, self.mempool.add(ev), None))
                except BlockcoinError as exc:
                    out.append((ev, None, exc))
            return out

        results = await self.run(work)
        for ev, eid, _err in results:
            if eid is not None:
                self.counters["events_accepted"] += 1
                self._notify_event(ev, eid, source)
            else:
                self.counters["events_rejected"] += 1
        return results

    async def submit_own(self, body: Body, fee: int) -> tuple[SignedEvent, bytes]:
        """Sign ``body`` with the node's wallet and admit it, in one step on the chain thread.

        The nonce is the next free one in the pool at that moment, so no event of the same
        wallet submitted meanwhile (a transfer from the command line through the API) can take
        it, and ours never replaces one of theirs. (Signing in one step and admitting in
        another let a node's higher-fee Announce replace a pending transfer of its user.)"""

        def work() -> tuple[SignedEvent, bytes]:
            ev = self.wallet.sign(self.chain, self.mempool, body, fee)
            return ev, self.mempool.add(ev)

        ev, eid = await self.run(work)
        self.counters["events_accepted"] += 1
        self._notify_event(ev, eid, None)
        return ev, eid

    def _notify_event(self, ev: SignedEvent, eid: bytes, source: object) -> None:
        for listener in list(self.event_listeners):
            try:
                listener(ev, eid, source)
            except Exception:
                log.exception("event listener failed")

    def event_id(self, ev: SignedEvent) -> bytes:
        return event_id(self.params.chain_id, ev)

    # --- state -------------------------------------------------------------------------

    def state_digest(self) -> tuple[str, int]:
        """The global tree's digest (call on the chain thread): two nodes with the same digest
        hold identical global trees."""
        return self.chain.tree.digest()

    @property
    def syncing(self) -> bool:
        return self.tree.best.work > self.chain.tip.work
