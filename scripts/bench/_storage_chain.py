"""A regtest chain of storage contracts for the validation bench: blocks of offers, blocks of
``FragmentStored`` events (a small one and a large one, to see whether checking them grows
with the events or faster), then blocks full of ``StorageProof`` items.

Every contract stores the same 16 MiB fragment (distinct paths, so they are distinct
contracts); one tree serves every proof. The blocks are built on a real chain state in a
scratch directory, so every coinbase is exactly fees + mint.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from chain.consensus.validation import expected_bits
from chain.core.block import Block, events_root
from chain.core.events import (
    Coinbase,
    Event,
    FragmentOffer,
    FragmentStored,
    SignedEvent,
    StorageProof,
    event_id,
    receipt_message,
)
from chain.core.header import Header
from chain.core.keys import KeyPair
from chain.core.params import HEADER_VERSION, REGTEST, NetworkParams
from chain.core.storageproof import leaf_indexes, period_seed
from chain.node.chainstate import ChainState
from chain.node.mining import solve
from globaltree.fold import Fold
from globaltree.view import StateView
from storage_market.merkle import MerkleTree
from storage_market.proving import proof_item

FRAGMENT_BYTES = 16 << 20
LEAF = 1024
PERIOD_BLOCKS = 200
FEE_RATE = 2
OWNERS = [KeyPair.development(i) for i in range(5)]
HOSTS = [KeyPair.development(i) for i in range(5, 10)]


@dataclass
class Layout:
    """Which blocks of the file hold what (heights)."""

    stored_small: tuple[int, int]  # (height, events)
    stored_large: tuple[int, int]
    proof_heights: list[int]
    proof_items: int


def _fragment() -> MerkleTree:
    data = bytearray(FRAGMENT_BYTES)
    for i in range(0, FRAGMENT_BYTES, 64):
        data[i : i + 8] = i.to_bytes(8, "big")
    return MerkleTree(bytes(data), LEAF)


class _Builder:
    def __init__(self, datadir: Path, params: NetworkParams) -> None:
        self.chain = ChainState(datadir, params, verify_threads=1)
        self.params = params
        self.nonces: dict[bytes, int] = {}
        self.blocks: list[Block] = []

    def sign(self, key: KeyPair, body: object) -> SignedEvent:
        nonce = self.nonces.get(key.principal.digest, 0)
        self.nonces[key.principal.digest] = nonce + 1
        return SignedEvent.create_at_rate(self.params.chain_id, key, nonce, FEE_RATE,
                                          body)  # type: ignore[arg-type]

    def mine(self, events: list[SignedEvent]) -> Block:
        chain = self.chain
        tip = chain.tip
        time = tip.header.time + 1
        fold = Fold(StateView(chain.store.db), self.params, tip.height + 1, time,
                    chain.store.hash_at)
        for ev in events:
            fold.apply(ev)
        fold.settle()
        coinbase = Coinbase(tip.height + 1, OWNERS[0].principal, fold.fees + fold.mint())
        fold.credit_coinbase(coinbase)
        all_events: list[Event] = [coinbase, *events]
        header = solve(Header(HEADER_VERSION, tip.hash, events_root(all_events), fold.view.root(), time,
                              expected_bits(self.params, tip.header, tip.height), 0))
        assert header is not None
        block = Block(header, all_events)
        chain.accept_block(block, now=time)
        self.blocks.append(block)
        return block


def build(path: Path, small: int, large: int, proofs: int) -> Layout:
    """Write the chain's blocks (after genesis) to ``path``; ``small`` and ``large`` stored
    events in two blocks, then ``proofs`` proof items in as many full blocks as they take."""
    tree = _fragment()
    params = REGTEST
    with tempfile.TemporaryDirectory() as tmp:
        b = _Builder(Path(tmp) / "chain", params)
        count = small + large
        offers: list[SignedEvent] = []
        for i in range(count):
            owner = OWNERS[i % len(OWNERS)]
            body = FragmentOffer(f"{owner.principal.root_path}/bench/{i}", b"\x01" * 32, 0, 5, 3,
                                 FRAGMENT_BYTES, tree.root, LEAF, 10_000, 0, PERIOD_BLOCKS, 4,
                                 b.chain.tip.height + 40)
            offers.append(b.sign(owner, body))
        block_bytes = params.max_block_bytes - 4096
        batch: list[SignedEvent] = []
        for ev in offers:
            if sum(len(e.raw) + 8 for e in batch) + len(ev.raw) > block_bytes:
                b.mine(batch)
                batch = []
            batch.append(ev)
        b.mine(batch)
        stored = []
        for i, offer in enumerate(offers):
            host = HOSTS[i % len(HOSTS)]
            oid = event_id(params.chain_id, offer)
            receipt = host.sign(receipt_message(params.chain_id, oid, host.principal, tree.root,
                                                host.principal))
            owner = OWNERS[i % len(OWNERS)]
            stored.append(b.sign(owner, FragmentStored(oid, host.public.ed25519, host.principal,
                                                       receipt)))
        b.mine(stored[:small])
        small_height = len(b.blocks)
        b.mine(stored[small:])
        large_height = len(b.blocks)
        b.mine([])  # the period-0 windows of both groups are open from here on
        heights = []
        made = 0
        for chunk_start in range(0, proofs, 4096):
            contracts = [b.chain.tree.contract(event_id(params.chain_id, offers[i]))
                         for i in range(chunk_start, min(proofs, chunk_start + 4096))]
            events: list[SignedEvent] = []
            pending: dict[int, list[object]] = {}
            for c in contracts:
                assert c is not None and c.host is not None
                opening = b.chain.store.hash_at(c.opening_height(0))
                assert opening is not None
                item = proof_item(tree, lambda idx: [tree.leaf(i) for i in idx], c.id, 0,
                                  opening, params.proof_leaves)
                host_index = next(j for j, h in enumerate(HOSTS) if h.principal == c.host)
                group = pending.setdefault(host_index, [])
                group.append(item)
                if len(group) == 10:  # ten items fill a 64 KiB event
                    events.append(b.sign(HOSTS[host_index], StorageProof(tuple(group))))
                    pending[host_index] = []
            for host_index, group in pending.items():
                if group:
                    events.append(b.sign(HOSTS[host_index], StorageProof(tuple(group))))
            batch = []
            for ev in events:
                if sum(len(e.raw) + 8 for e in batch) + len(ev.raw) > block_bytes:
                    b.mine(batch)
                    heights.append(len(b.blocks))
                    batch = []
                batch.append(ev)
                made += len(ev.body.items)  # type: ignore[union-attr]
            if batch:
                b.mine(batch)
                heights.append(len(b.blocks))
        b.chain.close()
    from chain.core.blockfile import write_blocks

    write_blocks(path, iter(b.blocks))
    return Layout((small_height, small), (large_height, large), heights, made)


def bare_verify_rate(path: Path, layout: Layout) -> float:
    """Proof items per second verified by a bare loop: each leaf's Merkle path up to the root,
    the leaf indexes and seeds computed beforehand, nothing else."""
    from chain.core.blockfile import read_blocks
    from chain.core.storageproof import leaf_count, root_from_path

    blocks = list(read_blocks(path))
    count = leaf_count(FRAGMENT_BYTES, LEAF)
    root = _fragment().root
    work = []
    proof_blocks = set(layout.proof_heights)
    for height, block in enumerate(blocks, start=1):
        if height not in proof_blocks:
            continue
        for ev in block.events[1:]:
            assert isinstance(ev, SignedEvent) and isinstance(ev.body, StorageProof)
            for item in ev.body.items:
                work.append(item)
    # each item's seed block: the block that stored its contract
    stored_at = {}
    for height in (layout.stored_small[0], layout.stored_large[0]):
        for ev in blocks[height - 1].events[1:]:
            assert isinstance(ev, SignedEvent) and isinstance(ev.body, FragmentStored)
            stored_at[ev.body.offer_id] = blocks[height - 1].hash
    prepared = []
    for item in work:
        opening = stored_at[item.contract]
        idx = leaf_indexes(period_seed(opening, item.contract), count, REGTEST.proof_leaves)
        prepared.append([(p.leaf, i, p.path) for i, p in zip(idx, item.leaves, strict=True)])
    import time

    start = time.perf_counter()
    for leaves in prepared:
        for leaf, index, path_ in leaves:
            if root_from_path(leaf, index, count, path_) != root:
                raise SystemExit("benchmark chain has a bad proof")
    return len(prepared) / (time.perf_counter() - start)
