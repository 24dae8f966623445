"""Block download along the best header chain, from every peer that has the blocks.

Blocks are requested at most ``window`` heights ahead of the first missing block and
``max_inflight`` per peer; blocks that arrive out of order wait in a buffer (at most
:data:`MAX_BUFFERED_BYTES`) and are handed to the chain thread in height order. A peer that sends
nothing for ``stall_timeout`` seconds while holding requests is dropped and its requests go to
others; a block nobody delivers stops being waited for (:mod:`chain.net.p2p.fetchwait`).
"""

from __future__ import annotations

import logging
import time as _time
from typing import TYPE_CHECKING

from chain.core.block import Block
from chain.net.p2p.fetchwait import BlockWaits
from chain.net.p2p.messages import MAX_GETBLOCKS, BlockMsg, GetBlocks, NotFound
from chain.net.p2p.peer import Peer
from chain.net.p2p.scores import Offence

if TYPE_CHECKING:
    from chain.net.p2p.manager import PeerManager

log = logging.getLogger("blockcoin.p2p")

MAX_BUFFERED_BYTES = 256 << 20
DOWNLOAD_QUIET = 10.0  # seconds without a downloaded block after which the miner goes on


class BlockDownload:
    def __init__(self, net: PeerManager) -> None:
        self.net = net
        self.config = net.config
        self.tree = net.tree
        self.chain = net.chain
        self.waits = BlockWaits(net.config.stall_timeout)
        self.inflight: dict[bytes, Peer] = {}
        self.received: dict[bytes, tuple[Block, Peer]] = {}
        self.received_bytes = 0
        self.processing: set[bytes] = set()
        self.last_block_in = 0.0
        self._draining = False

    @property
    def downloading(self) -> bool:
        """A better chain exists and its blocks are arriving: mining on the old tip now would
        likely be wasted. Blocks withheld or refused do not count: then the miner goes on."""
        return self.net.core.syncing and _time.monotonic() - self.last_block_in < DOWNLOAD_QUIET

    # --- serving -----------------------------------------------------------------------

    async def serve(self, peer: Peer, msg: GetBlocks) -> None:
        missing: list[bytes] = []
        for h in msg.hashes:
            raw = self.chain.store.get_block_bytes(h)
            if raw is None:
                missing.append(h)
            else:
                await peer.send_wait(BlockMsg(raw))
        if missing:
            peer.send(NotFound(missing))

    # --- receiving ---------------------------------------------------------------------

    def solicited(self, peer: Peer, msg: BlockMsg) -> bool:
        return msg.block is not None and msg.block.hash in peer.inflight

    def on_block_msg(self, peer: Peer, msg: BlockMsg) -> None:
        block = msg.block
        assert block is not None
        h = block.hash
        if peer.inflight.pop(h, None) is None:
            self.net.misbehave(peer, Offence.UNREQUESTED_BLOCK, "unrequested block")
            return
        if self.inflight.get(h) is peer:
            del self.inflight[h]
        peer.last_block_at = self.last_block_in = _time.monotonic()
        peer.blocks_in += 1
        self.net.counters["blocks_downloaded"] += 1
        if h not in self.chain.index and h not in self.received and h not in self.processing:
            self.received[h] = (block, peer)
            self.received_bytes += block.size
        if len(peer.inflight) <= self.config.max_inflight // 2:
            self.schedule()  # refill in bulk, not once per block
        if not self._draining:
            self.net.spawn(self.drain())

    def on_not_found(self, peer: Peer, msg: NotFound) -> None:
        for h in msg.hashes:
            if peer.inflight.pop(h, None) is not None:
                self.waits.failed(h, _time.monotonic())
                if self.inflight.get(h) is peer:
                    del self.inflight[h]
        self.schedule()

    def release(self, peer: Peer) -> None:
        """Forget a peer's requests so that others are asked for those blocks."""
        for h in list(peer.inflight):
            if self.inflight.get(h) is peer:
                del self.inflight[h]
        peer.inflight.clear()

    # --- scheduling --------------------------------------------------------------------

    def _first_missing(self) -> int | None:
        tree = self.tree
        best_chain = tree.best_chain
        tip = tree.get(self.chain.tip.hash)
        height = tree.fork_height(tip) + 1 if tip is not None else 1
        index = self.chain.index
        while height < len(best_chain) and best_chain[height] in index:
            height += 1
        return height if height < len(best_chain) else None

    def _peer_has_up_to(self, peer: Peer) -> int:
        best = peer.best
        if best is None or best.invalid:
            return -1
        if self.tree.on_best_chain(best):
            return best.height
        return self.tree.fork_height(best)

    def schedule(self) -> None:
        """Hand out block requests along the best header chain within the window."""
        if self.net.stopping or not self.net.peers:
            return
        start = self._first_missing()
        if start is None:
            return
        if self.received_bytes > MAX_BUFFERED_BYTES:
            return
        best_chain = self.tree.best_chain
        end = min(len(best_chain), start + self.config.window)
        peers = [p for p in self.net.peers.values()
                 if not p.closed and p.hello is not None
                 and len(p.inflight) < self.config.max_inflight]
        if not peers:
            return
        reach = {p: self._peer_has_up_to(p) for p in peers}
        peers = [p for p in peers if reach[p] >= start]
        if not peers:
            return
        index, inflight, received, processing = (self.chain.index, self.inflight, self.received,
                                                 self.processing)
        room_total = sum(self.config.max_inflight - len(p.inflight) for p in peers)
        wanted: list[bytes] = []
        heights: dict[bytes, int] = {}
        for height in range(start, end):
            h = best_chain[height]
            if h in inflight or h in received or h in processing or h in index:
                continue
            wanted.append(h)
            heights[h] = height
            if len(wanted) >= room_total:
                break
        if not wanted:
            return
        now = _time.monotonic()
        pos = 0
        while pos < len(wanted) and peers:
            progressed = False
            for peer in sorted(peers, key=lambda p: len(p.inflight)):
                room = min(self.config.request_batch, self.config.max_inflight - len(peer.inflight))
                batch: list[bytes] = []
                while pos < len(wanted) and len(batch) < room:
                    h = wanted[pos]
                    if heights[h] > reach[peer]:
                        break
                    batch.append(h)
                    pos += 1
                if batch:
                    if not peer.inflight:
                        peer.last_block_at = now
                    for h in batch:
                        peer.inflight[h] = now
                        inflight[h] = peer
                    peer.send(GetBlocks(batch[:MAX_GETBLOCKS]))
                    progressed = True
                if pos >= len(wanted):
                    break
            peers = [p for p in peers if len(p.inflight) < self.config.max_inflight]
            if not progressed:
                break

    async def drain(self) -> None:
        """Hand buffered blocks to the chain thread in best-chain order."""
        if self._draining:
            return
        self._draining = True
        try:
            while not self.net.stopping:
                start = self._first_missing()
                if start is None:
                    break
                best_chain = self.tree.best_chain
                batch: list[tuple[Block, Peer]] = []
                height = start
                size = 0
                while height < len(best_chain) and best_chain[height] in self.received:
                    item = self.received.pop(best_chain[height])
                    batch.append(item)
                    size += item[0].size
                    height += 1
                    if len(batch) >= 64 or size > (8 << 20):
                        break
                self.received_bytes = max(0, self.received_bytes - size)
                if not batch:
                    break
                hashes = [b.hash for b, _ in batch]
                self.processing.update(hashes)
                try:
                    outcomes = await self.net.core.accept_blocks([b for b, _ in batch])
                finally:
                    self.processing.difference_update(hashes)
                senders = {b.hash: p for b, p in batch}
                for outcome in outcomes:
                    sender = senders[outcome.block.hash]
                    if outcome.invalid:
                        if outcome.mutated:  # someone else may hold the real block
                            self.waits.failed(outcome.block.hash, _time.monotonic())
                        self.net.misbehave(sender, Offence.INVALID_BLOCK,
                                           f"invalid block: {outcome.error}")
                    elif outcome.error is None and outcome.result is not None and (
                            not outcome.result.already_known):
                        sender.useful_block_at = _time.monotonic()
                self.schedule()
                self.net.progress()
            self._trim_received()
        finally:
            self._draining = False

    def _trim_received(self) -> None:
        if len(self.received) <= self.config.window:
            return
        for h in list(self.received):
            node = self.tree.get(h)
            if node is None or not self.tree.on_best_chain(node):
                block, _ = self.received.pop(h)
                self.received_bytes = max(0, self.received_bytes - block.size)

    # --- maintenance -------------------------------------------------------------------

    def check_stall(self, peer: Peer, now: float) -> bool:
        """Drop a peer that holds requests and sends nothing: ``False`` when it was dropped."""
        if not peer.inflight:
            return True
        oldest = min(peer.inflight.values())
        if now - max(oldest, peer.last_block_at) <= self.config.stall_timeout:
            return True
        self.net.counters["stalls"] += 1
        for h in peer.inflight:
            self.waits.failed(h, now)
        self.release(peer)
        peer.close_soon("stalled block download")
        return False

    def tick(self, now: float) -> None:
        self._stop_waiting(now)
        self.schedule()
        if self.received and not self._draining:
            self.net.spawn(self.drain())

    def _stop_waiting(self, now: float) -> None:
        """Drop the best header chain's first missing block from the candidates when nobody
        delivers it (:mod:`chain.net.p2p.fetchwait`); the tip then counts as the best again."""
        start = self._first_missing()
        if start is None:
            return
        h = self.tree.best_chain[start]
        if h in self.inflight or h in self.received or h in self.processing:
            return
        has_source = any(self._peer_has_up_to(p) >= start for p in self.net.peers.values()
                         if not p.closed and p.hello is not None)
        if self.waits.give_up(h, has_source, now):
            self.waits.forget(h)
            self.net.counters["blocks_unavailable"] += 1
            log.info("giving up on block %s at height %d: no peer delivers it", h[::-1].hex(),
                     start)
            self.tree.mark_unavailable(h)
