"""Test helpers: build valid (or deliberately broken) blocks and events on a regtest chain,
and fold a chain from genesis into a plain dict as the reference state."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from chain.block import Block, events_root
from chain.chainstate import ChainState
from chain.errors import ValidationError
from chain.events import (
    Announce,
    Body,
    Coinbase,
    Event,
    FragmentOffer,
    FragmentReleased,
    FragmentStored,
    Revoke,
    SignedEvent,
    StoragePayment,
    Transfer,
    receipt_message,
    voucher_message,
)
from chain.hashes import ZERO_HASH
from chain.header import Header, hash_to_int
from chain.keys import KeyPair
from chain.mining import solve
from chain.params import HEADER_VERSION, REGTEST, NetworkParams
from chain.principal import Principal
from chain.validation import expected_bits
from chain.writecap import Writecap
from globaltree.fold import Fold, apply_block
from globaltree.records import CONTRACT, Account, Contract, account_key
from globaltree.view import StateView

P = REGTEST
DEV = [KeyPair.development(i) for i in range(10)]


class DictDB:
    """A dict with the slice of plyvel's interface the state view uses."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def iterator(self, *, prefix: bytes, include_value: bool = True) -> Iterator[bytes]:
        yield from sorted(k for k in self.data if k.startswith(prefix))

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)


def reference_fold(params: NetworkParams, blocks: Iterable[Block]) -> dict[bytes, bytes]:
    db = DictDB()
    for height, block in enumerate(blocks):
        view = StateView(db)
        apply_block(view, params, block, height)
        view.commit(db)
    return db.data


def state_dump(chain: ChainState) -> dict[bytes, bytes]:
    return dict(chain.store.db.iterator(prefix=b"S"))


def sign(key: KeyPair, nonce: int, body: Body, fee: int = 100, account: Principal | None = None,
         writecap: Writecap | None = None, params: NetworkParams = P) -> SignedEvent:
    return SignedEvent.create(params.chain_id, key, nonce, fee, body, account, writecap)


def coinbase_for(chain: ChainState, events: list[SignedEvent], time: int,
                 recipient: Principal) -> Coinbase:
    """A coinbase claiming exactly fees + mint for ``events`` on the tip (events must apply)."""
    tip = chain.tip
    fold = Fold(StateView(chain.store.db), chain.params, tip.height + 1, time)
    for ev in events:
        fold.apply(ev)
    fold.expire()
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


def propose(rng: random.Random, db: DictDB, nonces: dict[bytes, int]) -> SignedEvent:
    key = rng.choice(KEYS)
    raw = db.get(account_key(key.principal))
    acct = Account.decode(raw) if raw else Account()
    nonce = nonces.get(key.principal.digest, acct.nonce)
    contracts = [Contract.decode(db.data[k]) for k in sorted(db.data) if k.startswith(CONTRACT)]
    kind = rng.randrange(8)
    body: Body
    if kind == 0 or not contracts and kind >= 4:
        body = Transfer(rng.choice(KEYS).principal, rng.choice([1, 10**6, 10**13, 10**15]))
    elif kind == 1:
        body = Announce(key.public.x25519, f"127.0.0.1:{rng.randrange(1, 65535)}")
    elif kind == 2:
        body = Revoke(rng.choice(KEYS).principal, rng.choice([0, 2**40]))
    elif kind == 3:
        body = FragmentOffer(key.principal.root_path + f"/f{rng.randrange(3)}", b"\x01" * 32,
                             rng.randrange(5), 5, 3, rng.randrange(1, 10_000), b"\x02" * 32, 1024,
                             rng.choice([10, 10**9]), rng.randrange(1, 4), rng.randrange(1, 4),
                             10**6)
    else:
        c = rng.choice(contracts)
        host = rng.choice(KEYS)
        if kind == 4:
            receipt = host.sign(receipt_message(P.chain_id, c.id, host.principal, c.offer.root))
            body = FragmentStored(c.id, host.public.ed25519, receipt)
            key = next(k for k in KEYS if k.principal == c.owner)
        elif kind == 5 and c.host is not None:
            period = rng.randrange(c.offer.periods)
            owner = next(k for k in KEYS if k.principal == c.owner)
            voucher = owner.sign(voucher_message(P.chain_id, c.id, period, c.offer.price))
            body = StoragePayment(c.id, period, c.offer.price, voucher)
            key = next(k for k in KEYS if k.principal == c.host)
        else:
            body = FragmentReleased(c.id)
            key = next(k for k in KEYS if k.principal == c.owner)
        raw = db.get(account_key(key.principal))
        nonce = nonces.get(key.principal.digest, Account.decode(raw).nonce if raw else 0)
    return sign(key, nonce, body, fee=rng.randrange(0, 500))


def build_on(chain: ChainState, parent: bytes, rng: random.Random, n_events: int,
             invalid: bool) -> Block | None:
    """A block on ``parent`` (None if ``parent``'s branch turns out invalid: side branches are
    stored before their events are ever applied)."""
    blocks = branch(chain, parent)
    db = DictDB()
    try:
        db.data = reference_fold(P, blocks)
    except ValidationError:
        return None
    entry = chain.index[parent]
    height = entry.height + 1
    time = max(chain.median_time_past(entry) + 1, entry.header.time + 1)
    view = StateView(db)
    fold = Fold(view, P, height, time)
    events: list[Event] = []
    nonces: dict[bytes, int] = {}
    for _ in range(n_events * 3):
        if len(events) >= n_events:
            break
        ev = propose(rng, db, nonces)
        try:
            fold.apply(ev)
        except ValidationError:
            if invalid and rng.random() < 0.5:
                events.append(ev)
                invalid = False
            continue
        nonces[ev.signer.digest] = ev.nonce + 1
        events.append(ev)
    fold.expire()
    coinbase = Coinbase(height, rng.choice(KEYS).principal, fold.fees + fold.mint(),
                        rng.randbytes(4))
    events.insert(0, coinbase)
    header = Header(HEADER_VERSION, parent, events_root(events), ZERO_HASH, time,
                    expected_bits(P, entry.header, entry.height), 0)
    solved = solve(header)
    assert solved is not None
    return Block(solved, events)


