"""Test helpers: build valid (or deliberately broken) blocks and events on a regtest chain,
and fold a chain from genesis into a plain dict as the reference state."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Iterator

from chain.block import Block, events_root
from chain.chainstate import ChainState
from chain.events import Body, Coinbase, Event, SignedEvent
from chain.hashes import ZERO_HASH
from chain.header import Header, hash_to_int
from chain.keys import KeyPair
from chain.mining import solve
from chain.params import HEADER_VERSION, REGTEST, NetworkParams
from chain.principal import Principal
from chain.validation import expected_bits
from chain.writecap import Writecap
from globaltree.fold import Fold, apply_block
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
        for key in sorted(k for k in self.data if k.startswith(prefix)):
            yield key

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
