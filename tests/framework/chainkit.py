"""Test helpers: build valid (or deliberately broken) blocks and events on a regtest chain,
and fold a chain from genesis into a plain dict as the reference state."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from chain.consensus.validation import expected_bits
from chain.core.block import Block, events_root
from chain.core.errors import ValidationError
from chain.core.events import (
    Announce,
    Body,
    Coinbase,
    Event,
    FragmentOffer,
    FragmentReleased,
    FragmentStored,
    ProofItem,
    Revoke,
    SignedEvent,
    StorageProof,
    Transfer,
    receipt_message,
)
from chain.core.hashes import ZERO_HASH
from chain.core.header import Header, hash_to_int
from chain.core.keys import KeyPair
from chain.core.params import HEADER_VERSION, REGTEST, NetworkParams
from chain.core.principal import Principal
from chain.core.writecap import Writecap
from chain.node.chainstate import ChainState
from chain.node.mining import solve
from globaltree.fold import Fold, fold_into, state_root_after
from globaltree.records import CONTRACT, Account, Contract, ContractState, account_key
from globaltree.view import MemoryDB, StateView
from ledger.store import IndexEntry
from storage_market.merkle import MerkleTree
from storage_market.proving import proof_item

P = REGTEST
DEV = [KeyPair.development(i) for i in range(10)]


def hashes_of(blocks: Sequence[Block]) -> Callable[[int], bytes | None]:
    """``hash_at`` over a list of blocks from genesis."""
    return lambda h: blocks[h].hash if 0 <= h < len(blocks) else None


_FOLDS: dict[bytes, tuple[NetworkParams, dict[bytes, bytes]]] = {}  # block hash -> state after it
_FOLDS_KEPT = 512


def reference_fold(params: NetworkParams, blocks: Iterable[Block]) -> dict[bytes, bytes]:
    """The state after ``blocks`` (from genesis), folded afresh in memory. Folds are kept by
    their last block, so folding a branch again (every block a random tree adds) starts from
    its longest already-folded prefix instead of genesis."""
    chain = list(blocks)
    db, start = MemoryDB(), 0
    for i in range(len(chain) - 1, -1, -1):
        kept = _FOLDS.get(chain[i].hash)
        if kept is not None and kept[0] is params:
            db, start = MemoryDB(kept[1]), i + 1
            break
    for height in range(start, len(chain)):
        fold_into(db, params, chain[height], height, hashes_of(chain[:height]))
    if chain:
        if len(_FOLDS) >= _FOLDS_KEPT:
            del _FOLDS[next(iter(_FOLDS))]
        _FOLDS[chain[-1].hash] = (params, dict(db.data))
    return db.data


def root_on(chain: ChainState, parent: IndexEntry, block: Block) -> bytes:
    """The state root after ``block`` on ``parent`` (folding ``parent``'s branch afresh when it
    is not the tip); all zero when the block's events do not apply (it is invalid anyway)."""
    try:
        if parent.hash == chain.tip.hash:
            return state_root_after(chain.store.db, chain.params, block, parent.height + 1,
                                    chain.store.hash_at)
        blocks = branch(chain, parent.hash)
        db = MemoryDB()
        db.data = reference_fold(chain.params, blocks)
        return state_root_after(db, chain.params, block, parent.height + 1, hashes_of(blocks))
    except ValidationError:
        return ZERO_HASH


# --- fragments with real data, so that proofs can be made ------------------------------------

LEAF = 1024


def fragment_data(size: int, salt: bytes = b"") -> bytes:
    """A fragment's bytes: deterministic in its size (and salt), so a test can rebuild it."""
    return hashlib.shake_256(b"fragment" + salt + size.to_bytes(8, "big")).digest(size)


@functools.lru_cache(maxsize=64)
def fragment_tree(size: int, salt: bytes = b"", leaf_size: int = LEAF) -> MerkleTree:
    return MerkleTree(fragment_data(size, salt), leaf_size)


def prove(contract: Contract, period: int, hash_at: Callable[[int], bytes | None],
          salt: bytes = b"", params: NetworkParams = P) -> ProofItem:
    """An honest proof of ``period`` of ``contract`` (its fragment made by :func:`fragment_data`)."""
    tree = fragment_tree(contract.offer.size, salt, contract.offer.leaf_size)
    opening = hash_at(contract.opening_height(period))
    assert opening is not None
    return proof_item(tree, lambda idx: [tree.leaf(i) for i in idx], contract.id, period,
                      opening, params.proof_leaves)


def state_dump(chain: ChainState) -> dict[bytes, bytes]:
    return dict(chain.store.db.iterator(prefix=b"S"))


def sign(key: KeyPair, nonce: int, body: Body, fee: int = 100, account: Principal | None = None,
         writecap: Writecap | None = None, params: NetworkParams = P) -> SignedEvent:
    return SignedEvent.create(params.chain_id, key, nonce, fee, body, account, writecap)


def coinbase_for(chain: ChainState, events: list[SignedEvent], time: int,
                 recipient: Principal) -> Coinbase:
    """A coinbase claiming exactly fees + mint for ``events`` on the tip (events must apply)."""
    tip = chain.tip
    fold = Fold(StateView(chain.store.db), chain.params, tip.height + 1, time, chain.store.hash_at)
    for ev in events:
        fold.apply(ev)
    fold.settle()
    return Coinbase(tip.height + 1, recipient, fold.fees + fold.mint())


def make_block(
    chain: ChainState,
    events: list[SignedEvent],
    *,
    parent: bytes | None = None,
    time: int | None = None,
    coinbase: Coinbase | None = None,
    recipient: Principal | None = None,
    bits: int | None = None,
    root: bytes | None = None,
    version: int = HEADER_VERSION,
    extra: bytes = b"",
    solve_pow: bool = True,
    state_root: bytes | None = None,
) -> Block:
    parent_entry = chain.index[parent] if parent else chain.tip
    if time is None:
        time = max(chain.median_time_past(parent_entry) + 1, parent_entry.header.time + 1)
    if coinbase is None:
        if parent is None or parent == chain.tip.hash:
            coinbase = coinbase_for(chain, events, time, recipient or DEV[9].principal)
            if extra:
                coinbase = Coinbase(coinbase.height, coinbase.recipient, coinbase.amount, extra)
        else:
            fees = sum(e.fee for e in events)
            coinbase = Coinbase(parent_entry.height + 1, recipient or DEV[9].principal, fees, extra)
    all_events: list[Event] = [coinbase, *events]
    header = Header(
        version, parent_entry.hash, root if root is not None else events_root(all_events),
        ZERO_HASH, time,
        bits if bits is not None else expected_bits(chain.params, parent_entry.header,
                                                    parent_entry.height), 0,
    )
    if state_root is None:
        state_root = root_on(chain, parent_entry, Block(header, all_events))
    header = dataclasses.replace(header, state_root=state_root)
    if solve_pow:
        solved = solve(header)
        assert solved is not None
        header = solved
    return Block(header, all_events)


def unsolved_nonce(header: Header) -> Header:
    """The header with a nonce whose hash is above the target (bad proof of work)."""
    nonce = 0
    while hash_to_int(header.with_nonce(nonce).hash) <= header.target:
        nonce += 1
    return header.with_nonce(nonce)


def open_chain(path: Path, params: NetworkParams = P) -> ChainState:
    return ChainState(path, params, verify_threads=1)


def with_limits(**changes: int) -> NetworkParams:
    return dataclasses.replace(REGTEST, **changes)


# --- random block trees (property and crash tests) ---------------------------------------

KEYS = DEV[:5]


def branch(chain: ChainState, tip: bytes) -> list[Block]:
    blocks = []
    entry = chain.index[tip]
    while True:
        block = chain.store.get_block(entry.hash)
        assert block is not None
        blocks.append(block)
        if entry.height == 0:
            return blocks[::-1]
        entry = chain.index[entry.header.prev]


def propose(rng: random.Random, db: MemoryDB, nonces: dict[bytes, int], height: int,
            hash_at: Callable[[int], bytes | None]) -> SignedEvent:
    key = rng.choice(KEYS)
    raw = db.get(account_key(key.principal))
    acct = Account.decode(raw) if raw else Account()
    nonce = nonces.get(key.principal.digest, acct.nonce)
    contracts = [Contract.decode(db.data[k]) for k in sorted(db.data) if k.startswith(CONTRACT)]
    offered = [c for c in contracts if c.state == ContractState.OFFERED]
    active = [c for c in contracts if c.state == ContractState.ACTIVE]
    kind = rng.randrange(11)  # 0 transfer 1 announce 2 revoke 3/9 offer 4/10 stored 5-7 proof 8 release
    body: Body
    if kind in (4, 10) and offered:
        c = rng.choice(offered)
        host = rng.choice([k for k in KEYS if k.principal != c.owner])
        receipt = host.sign(receipt_message(P.chain_id, c.id, host.principal, c.offer.root,
                                            host.principal))
        body = FragmentStored(c.id, host.public.ed25519, host.principal, receipt)
        key = next(k for k in KEYS if k.principal == c.owner)
    elif kind in (5, 6, 7) and active:
        # a proof: usually of the period whose window is open, sometimes of another
        c = rng.choice(active)
        period = c.window_of(height) + (0 if kind < 7 else rng.choice([-1, 1]))
        item = (prove(c, period, hash_at) if 0 <= period < c.periods and c.start + period
                * c.offer.period_blocks < height else ProofItem(c.id, max(period, 0), ()))
        body = StorageProof((item,))
        key = next(k for k in KEYS if k.principal == c.host)
    elif kind == 8 and contracts:
        c = rng.choice(active + offered or contracts)
        body = FragmentReleased(c.id)
        key = next(k for k in KEYS if k.principal == c.owner)
    elif kind in (0, 4, 5, 6, 7, 8, 10):
        body = Transfer(rng.choice(KEYS).principal, rng.choice([1, 10**6, 10**13, 10**15]))
    elif kind == 1:
        body = Announce(key.public.x25519, f"127.0.0.1:{rng.randrange(1, 65535)}")
    elif kind == 2:
        body = Revoke(rng.choice(KEYS).principal, rng.choice([0, 2**40]))
    else:
        size = rng.randrange(1, 10_000)
        body = FragmentOffer(key.principal.root_path + f"/f{rng.randrange(3)}", b"\x01" * 32,
                             rng.randrange(5), 5, 3, size, fragment_tree(size).root, LEAF,
                             rng.choice([10, 10**9]), rng.choice([0, 7, 10**9, 10**14]),
                             rng.randrange(1, 4), rng.randrange(1, 4),
                             height + rng.randrange(0, 8))
    raw = db.get(account_key(key.principal))
    nonce = nonces.get(key.principal.digest, Account.decode(raw).nonce if raw else 0)
    return sign(key, nonce, body, fee=rng.randrange(0, 500))


def build_on(chain: ChainState, parent: bytes, rng: random.Random, n_events: int,
             invalid: bool) -> Block | None:
    """A block on ``parent`` (None if ``parent``'s branch turns out invalid: side branches are
    stored before their events are ever applied)."""
    blocks = branch(chain, parent)
    db = MemoryDB()
    try:
        db.data = reference_fold(P, blocks)
    except ValidationError:
        return None
    entry = chain.index[parent]
    height = entry.height + 1
    time = max(chain.median_time_past(entry) + 1, entry.header.time + 1)
    view = StateView(db)
    hash_at = hashes_of(blocks)
    fold = Fold(view, P, height, time, hash_at)
    events: list[Event] = []
    nonces: dict[bytes, int] = {}
    for _ in range(n_events * 3):
        if len(events) >= n_events:
            break
        ev = propose(rng, db, nonces, height, hash_at)
        try:
            fold.apply(ev)
        except ValidationError:
            if invalid and rng.random() < 0.5:
                events.append(ev)
                invalid = False
            continue
        nonces[ev.signer.digest] = ev.nonce + 1
        events.append(ev)
    if invalid:  # no proposal failed on its own: one that surely does (a nonce far ahead)
        events.append(sign(rng.choice(KEYS), 2**40, Transfer(rng.choice(KEYS).principal, 1)))
    fold.settle()
    coinbase = Coinbase(height, rng.choice(KEYS).principal, fold.fees + fold.mint(),
                        rng.randbytes(4))
    fold.credit_coinbase(coinbase)
    events.insert(0, coinbase)
    header = Header(HEADER_VERSION, parent, events_root(events), view.root(), time,
                    expected_bits(P, entry.header, entry.height), 0)
    solved = solve(header)
    assert solved is not None
    return Block(solved, events)


