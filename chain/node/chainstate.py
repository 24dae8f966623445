"""The chain state: accepts blocks, chooses the most-work chain and moves the tip to it.

Blocks that pass every check needing no state are stored with their index entry; the tip then
moves to the stored chain with the most cumulative work (the first seen wins a tie). Moving is
done block by block, each disconnect or connect one atomic, synced LevelDB batch holding the
global tree's changes, the undo record, the height and event indexes and the tip pointer. A
crash therefore leaves some consistent tip; on the next start the node simply resumes moving
toward the most-work chain, as Bitcoin Core's ActivateBestChain does.
"""

from __future__ import annotations

import itertools
import logging
import time as _time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from chain.consensus.validation import EventChecker, check_block, check_header
from chain.core.block import Block
from chain.core.errors import (
    BadParent,
    BadStateRoot,
    BlockcoinError,
    UnknownParent,
    ValidationError,
)
from chain.core.events import event_id
from chain.core.header import work_of
from chain.core.params import NetworkParams
from chain.core.schema import EVENT, HEIGHT, META_REINDEX, META_SCHEMA, TIP, TREE, UNDO
from chain.core.statetree import NodeCache
from globaltree.fold import apply_block
from globaltree.proofs import StateProof, prove_query
from globaltree.queries import GlobalTree
from globaltree.records import STATE_PREFIXES
from globaltree.view import StateView, apply_undo, rebuild_tree
from ledger.errors import CorruptLedger
from ledger.store import SCHEMA, Batch, IndexEntry, LedgerStore, Status

log = logging.getLogger("blockcoin.node")

Listener = Callable[[str, Block, int], None]
T = TypeVar("T")


@dataclass
class AcceptResult:
    block_hash: bytes
    height: int
    new_tip: bool
    connected: list[bytes] = field(default_factory=list)
    disconnected: list[bytes] = field(default_factory=list)
    already_known: bool = False


class ChainState:
    def __init__(self, datadir: Path, params: NetworkParams, verify_threads: int | None = None):
        self.params = params
        self.store = LedgerStore(datadir / "chain", params.name)
        self.checker = EventChecker(params, verify_threads)
        self.tree = GlobalTree(self.store.db)
        # the state tree's upper nodes, kept across blocks; fed only with committed batches
        self.nodes = NodeCache()
        self.listeners: list[Listener] = []
        self._seq = itertools.count()
        self._arrival: dict[bytes, int] = {}
        self.index: dict[bytes, IndexEntry] = {}
        self.children: dict[bytes, list[bytes]] = {}
        self.leaves: set[bytes] = set()
        for entry in self.store.iter_index():
            self._remember(entry)
        tip_hash = self.store.tip()
        self._upgrade_schema(tip_hash)
        if self.store.get_meta(META_REINDEX) is not None:
            self._resume_reindex()
        elif tip_hash is None:
            self._init_genesis()
        else:
            if self.store.hash_at(0) != params.genesis_hash:
                self.close()
                raise CorruptLedger(
                    f"the database in {datadir / 'chain'} holds another genesis block (a chain of"
                    " an earlier header version?): move it away and sync again")
            if tip_hash not in self.index:
                raise CorruptLedger("the tip is not in the header index; run reindex")
            self.tip = self.index[tip_hash]
            self.activate_best_chain()

    def _upgrade_schema(self, tip_hash: bytes | None) -> None:
        """Bring a database written by an earlier version to this one's layout. Schema 1 kept
        the state tree's nodes by depth first; they are rebuilt from the state records (the
        tree's shape depends only on them), checked against the tip's state root, and only
        then is the schema moved on: an interrupted upgrade starts again at the next open."""
        schema = self.store.get_meta(META_SCHEMA)
        if schema == SCHEMA:
            return
        if schema not in (None, b"1"):
            self.close()
            raise CorruptLedger(f"the database in {self.store.path} has schema {schema!r}, which"
                                " this version does not know (written by a newer one?)")
        self.store.wipe_prefixes([TREE])
        if tip_hash is not None and self.store.get_meta(META_REINDEX) is None:
            log.info("rebuilding the state tree's nodes in the new layout (once)")
            root = rebuild_tree(self.store.db, self.store.batch, Batch.commit)
            entry = self.index.get(tip_hash)
            if entry is None or root != entry.header.state_root:
                self.close()
                raise CorruptLedger("the state records do not match the tip's state root;"
                                    " run reindex")
        self.store.put_meta(META_SCHEMA, SCHEMA)

    def view(self) -> StateView:
        """A fresh view of the global tree at the tip: reads go to LevelDB (the state tree's
        nodes through the node cache: views belong to the chain's thread), writes stay in the view
        (a block being checked, the mempool's next-block fold, a template)."""
        return StateView(self.store.db, self.nodes)

    def close(self) -> None:
        self.checker.close()
        self.store.close()

    def __enter__(self) -> ChainState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- index ------------------------------------------------------------------------------

    def _remember(self, entry: IndexEntry) -> None:
        self.index[entry.hash] = entry
        self._arrival[entry.hash] = next(self._seq)
        if entry.height > 0:
            self.children.setdefault(entry.header.prev, []).append(entry.hash)
            self.leaves.discard(entry.header.prev)
        if entry.status != Status.INVALID and not self.children.get(entry.hash):
            self.leaves.add(entry.hash)

    def _init_genesis(self) -> None:
        genesis = self.params.genesis
        entry = IndexEntry(genesis.header, genesis.hash, 0, work_of(genesis.header.target),
                           Status.CONNECTED_ONCE)
        self.store.put_block(genesis, entry)
        self._remember(entry)
        self._connect(entry, genesis)

    def median_time_past(self, entry: IndexEntry) -> int:
        times = []
        cur: IndexEntry | None = entry
        for _ in range(self.params.median_window):
            if cur is None:
                break
            times.append(cur.header.time)
            cur = self.index.get(cur.header.prev) if cur.height > 0 else None
        times.sort()
        return times[len(times) // 2]

    def ancestor(self, entry: IndexEntry, height: int) -> IndexEntry:
        while entry.height > height:
            entry = self.index[entry.header.prev]
        return entry

    def best_chain_hash(self, height: int) -> bytes | None:
        return self.store.hash_at(height)

    def iter_best_chain(self, start: int = 0) -> Iterator[Block]:
        for height in range(start, self.tip.height + 1):
            h = self.store.hash_at(height)
            if h is None:
                raise CorruptLedger(f"no best-chain block at height {height}")
            block = self.store.get_block(h)
            if block is None:
                raise CorruptLedger(f"block {h[::-1].hex()} missing")
            yield block

    # --- accepting blocks -------------------------------------------------------------------

    def check_new_block(self, block: Block, now: int | None = None) -> IndexEntry:
        """Every check that needs no chain state; returns the block's would-be index entry."""
        h = block.hash
        parent = self.index.get(block.header.prev)
        if parent is None:
            raise UnknownParent(f"unknown parent {block.header.prev[::-1].hex()}")
        if parent.status == Status.INVALID:
            raise BadParent("the parent block is invalid")
        now = int(_time.time()) if now is None else now
        check_header(self.params, block.header, h, parent.header, parent.height,
                     self.median_time_past(parent), now)
        check_block(self.params, block, self.checker)
        return IndexEntry(block.header, h, parent.height + 1,
                          parent.work + work_of(block.header.target), Status.VALID_HEADER)

    def accept_block(self, block: Block, now: int | None = None) -> AcceptResult:
        """Check, store and, if it makes the most-work chain, connect ``block``.

        Raises a ValidationError if the block itself breaks a rule; the state is unchanged
        then, and a block found invalid while connecting is marked so and never retried.
        """
        h = block.hash
        known = self.index.get(h)
        if known is not None:
            if known.status == Status.INVALID:
                raise BadParent("block already known to be invalid")
            return AcceptResult(h, known.height, False, already_known=True)
        entry = self.check_new_block(block, now)
        self.store.put_block(block, entry)
        self._remember(entry)
        old_tip = self.tip
        self._just_accepted = block  # spares decoding it again from the database
        try:
            connected, disconnected = self.activate_best_chain()
        finally:
            self._just_accepted = None
        if self.index[h].status == Status.INVALID:
            raise self._last_failure or ValidationError("block failed to connect")
        return AcceptResult(h, entry.height, self.tip is not old_tip, connected, disconnected)

    _last_failure: BlockcoinError | None = None
    _just_accepted: Block | None = None

    def _best_candidate(self) -> IndexEntry:
        """The most-work chain tip not known invalid; the current tip keeps a tie."""
        best = self.tip
        for h in self.leaves:
            entry = self.index[h]
            if entry.work > best.work or (
                entry.work == best.work
                and best is not self.tip
                and self._arrival[h] < self._arrival[best.hash]
            ):
                best = entry
        return best

    def activate_best_chain(self) -> tuple[list[bytes], list[bytes]]:
        """Move the tip to the most-work valid chain; return hashes connected and disconnected."""
        connected: list[bytes] = []
        disconnected: list[bytes] = []
        self._last_failure = None
        while True:
            target = self._best_candidate()
            if target is self.tip:
                return connected, disconnected
            fork = self._fork_point(self.tip, target)
            while self.tip.hash != fork.hash:
                disconnected.append(self._disconnect_tip())
            path = []
            cur = target
            while cur.hash != fork.hash:
                path.append(cur)
                cur = self.index[cur.header.prev]
            for entry in reversed(path):
                recent = self._just_accepted
                block = recent if recent is not None and recent.hash == entry.hash else (
                    self.store.get_block(entry.hash))
                if block is None:
                    raise CorruptLedger(f"block {entry.hash[::-1].hex()} missing")
                try:
                    self._connect(entry, block)
                except ValidationError as exc:
                    self._last_failure = exc
                    self._mark_invalid(entry)
                    break
                connected.append(entry.hash)

    def _fork_point(self, a: IndexEntry, b: IndexEntry) -> IndexEntry:
        while a.height > b.height:
            a = self.index[a.header.prev]
        while b.height > a.height:
            b = self.index[b.header.prev]
        while a.hash != b.hash:
            a = self.index[a.header.prev]
            b = self.index[b.header.prev]
        return a

    def _mark_invalid(self, entry: IndexEntry) -> None:
        """Mark ``entry`` and its descendants invalid; its parent becomes a candidate again."""
        stack = [entry.hash]
        while stack:
            h = stack.pop()
            e = self.index[h]
            e.status = Status.INVALID
            self.store.put_index(e)
            self.leaves.discard(h)
            stack.extend(self.children.get(h, []))
        self.leaves.add(entry.header.prev)

    def _connect(self, entry: IndexEntry, block: Block) -> None:
        ids = [event_id(self.params.chain_id, e) for e in block.events]
        view = self.view()
        apply_block(view, self.params, block, entry.height, self.store.hash_at, ids)
        batch = self.store.batch()
        undo, root, nodes = view.commit(batch)
        if root != block.header.state_root:
            raise BadStateRoot(f"state root {root.hex()} after the block, header says"
                               f" {block.header.state_root.hex()}")
        self.store.connect_keys(batch, entry.hash, entry.height, ids, undo)
        first_time = entry.status != Status.CONNECTED_ONCE
        if first_time:
            connected = IndexEntry(entry.header, entry.hash, entry.height, entry.work,
                                   Status.CONNECTED_ONCE)
            self.store.put_index(connected, batch)
        batch.commit()  # a failed write (a full disk) leaves memory as it was, too
        self.nodes.committed(nodes)
        if first_time:
            entry.status = Status.CONNECTED_ONCE
        self.tip = entry
        for listener in self.listeners:
            listener("connect", block, entry.height)

    def _disconnect_tip(self) -> bytes:
        entry = self.tip
        if entry.height == 0:
            raise CorruptLedger("cannot disconnect genesis")
        block = self.store.get_block(entry.hash)
        undo = self.store.get_undo(entry.hash)
        if block is None or undo is None:
            raise CorruptLedger(f"block or undo record of {entry.hash[::-1].hex()} missing")
        ids = [event_id(self.params.chain_id, e) for e in block.events]
        batch = self.store.batch()
        parent = self.index[entry.header.prev]
        root, nodes = apply_undo(undo, self.store.db, batch, self.nodes)
        if root != parent.header.state_root:
            raise CorruptLedger(f"undoing {entry.hash[::-1].hex()} does not restore its parent's"
                                " state root; run reindex")
        self.store.disconnect_keys(batch, entry.hash, entry.header.prev, entry.height, ids)
        batch.commit()
        self.nodes.committed(nodes)
        self.tip = self.index[entry.header.prev]
        for listener in self.listeners:
            listener("disconnect", block, entry.height)
        return entry.hash

    # --- proofs -----------------------------------------------------------------------------

    def prove(self, query: Callable[[GlobalTree], T]) -> tuple[T, StateProof]:
        """``query``'s answer on the current tip with a proof of every key it read, both from
        one snapshot (a block connecting meanwhile changes neither); safe off the chain thread."""
        with self.store.db.snapshot() as snap:
            tip = snap.get(TIP)
            if tip is None or tip not in self.index:
                raise CorruptLedger("the tip is not in the header index; run reindex")
            entry = self.index[tip]
            return prove_query(snap, entry.hash, entry.height, entry.header.state_root, query)

    # --- reindex ----------------------------------------------------------------------------

    def reindex(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Wipe the global tree and refold it from genesis along the current best chain.

        A marker naming the target tip is written first, so a reindex interrupted by a crash
        resumes from scratch at the next start instead of leaving a half-folded state.
        """
        self.store.put_meta(META_REINDEX, self.tip.hash)
        self._resume_reindex(progress)

    def _resume_reindex(self, progress: Callable[[int, int], None] | None = None) -> None:
        target_hash = self.store.get_meta(META_REINDEX)
        assert target_hash is not None
        target = self.index[target_hash]
        self.store.wipe_prefixes(STATE_PREFIXES + [UNDO, EVENT, HEIGHT, TIP])
        self.nodes.clear()
        path = []
        cur: IndexEntry | None = target
        while cur is not None:
            path.append(cur)
            cur = self.index[cur.header.prev] if cur.height > 0 else None
        for entry in reversed(path):
            block = self.store.get_block(entry.hash)
            if block is None:
                raise CorruptLedger(f"block at height {entry.height} missing")
            self._connect(entry, block)
            if progress is not None:
                progress(entry.height, target.height)
        self.store.delete_meta(META_REINDEX)
