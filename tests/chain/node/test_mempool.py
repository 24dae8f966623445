"""Mempool: fee-rate priority, per-signer nonce order, a size bound with eviction, and events
of disconnected blocks returned to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.core.errors import BadNonce, DuplicateEvent, FeeTooLow, InsufficientFunds, MempoolFull
from chain.core.events import Transfer
from chain.core.keys import KeyPair
from chain.node.chainstate import ChainState
from chain.node.mempool import Mempool
from chain.node.mining import solve_block
from chain.node.template import build_template
from tests.framework.chainkit import DEV, make_block, open_chain, sign

TO = KeyPair.generate().principal


def pay(key: KeyPair, nonce: int, fee: int, amount: int = 1) -> object:
    return sign(key, nonce, Transfer(TO, amount), fee=fee)


def mine(chain: ChainState, pool: Mempool) -> list[object]:
    mined = solve_block(build_template(chain, pool, DEV[9].principal))
    assert mined is not None
    block = mined[0]
    chain.accept_block(block)
    return block.events[1:]


def test_fee_rate_priority_and_nonce_order(chain: ChainState) -> None:
    pool = Mempool(chain)
    low = [pay(DEV[0], n, 1_000) for n in range(3)]
    high = pay(DEV[1], 0, 50_000)
    for ev in [*low, high]:
        pool.add(ev)  # type: ignore[arg-type]
    fold_events = mine(chain, pool)
    assert fold_events[0] == high
    assert fold_events[1:] == low  # signer's nonces in order
    assert len(pool) == 0


def test_template_respects_block_size(tmp_path: Path) -> None:
    from tests.framework.chainkit import with_limits

    chain = open_chain(tmp_path / "n", with_limits(max_block_bytes=1_500))
    try:
        pool = Mempool(chain)
        for n in range(20):
            pool.add(pay(DEV[0], n, 1_000 + n))  # type: ignore[arg-type]
        first = mine(chain, pool)
        assert 0 < len(first) < 20
        assert len(pool) == 20 - len(first)
    finally:
        chain.close()


def test_refuses_gaps_replays_duplicates_and_overspends(chain: ChainState) -> None:
    pool = Mempool(chain)
    ev = pay(DEV[0], 0, 1_000)
    pool.add(ev)  # type: ignore[arg-type]
    with pytest.raises(DuplicateEvent):
        pool.add(ev)  # type: ignore[arg-type]
    with pytest.raises(BadNonce):
        pool.add(pay(DEV[0], 5, 1_000))  # type: ignore[arg-type]
    poor = KeyPair.generate()
    with pytest.raises(InsufficientFunds):
        pool.add(sign(poor, 0, Transfer(TO, 1), fee=1_000))
    mine(chain, pool)
    with pytest.raises(DuplicateEvent):
        pool.add(ev)  # type: ignore[arg-type]
    with pytest.raises(BadNonce):
        pool.add(pay(DEV[0], 0, 9_999))  # type: ignore[arg-type]


def test_replacement_needs_a_higher_fee(chain: ChainState) -> None:
    pool = Mempool(chain)
    pool.add(pay(DEV[0], 0, 1_000))  # type: ignore[arg-type]
    with pytest.raises(FeeTooLow):
        pool.add(pay(DEV[0], 0, 1_000, amount=2))  # type: ignore[arg-type]
    better = pay(DEV[0], 0, 5_000, amount=2)
    pool.add(better)  # type: ignore[arg-type]
    assert len(pool) == 1 and mine(chain, pool) == [better]


def test_size_bound_evicts_lowest_fee_rate_with_dependents(chain: ChainState) -> None:
    cheap = [pay(DEV[0], n, 200) for n in range(3)]
    rich = [pay(DEV[1], 0, 10_000), pay(DEV[2], 0, 10_000)]
    pool = Mempool(chain, max_bytes=sum(len(e.raw) for e in cheap + rich) - 1)  # type: ignore[attr-defined]
    for ev in cheap + rich:
        pool.add(ev)  # type: ignore[arg-type]
    assert pool.bytes <= pool.max_bytes
    assert sorted(pool.by_signer[DEV[0].principal.digest]) == [0, 1]  # the latest cheap one went
    assert len(pool) == 4
    # dropping an early nonce takes the signer's later ones with it
    pool._drop_from(DEV[0].principal.digest, 0)
    assert DEV[0].principal.digest not in pool.by_signer
    with pytest.raises(MempoolFull):
        Mempool(chain, max_bytes=50).add(pay(DEV[3], 0, 1_000))  # type: ignore[arg-type]


def test_disconnected_events_return(chain: ChainState) -> None:
    pool = Mempool(chain)
    ev = pay(DEV[0], 0, 100)  # below the relay minimum, yet a miner took it once
    pool.add(ev, fee_policy=False)  # type: ignore[arg-type]
    fork_point = chain.tip.hash
    mine(chain, pool)
    assert len(pool) == 0
    # a longer branch without the event takes over; the event comes back
    a = make_block(chain, [], parent=fork_point)
    chain.accept_block(a)
    b = make_block(chain, [], parent=a.hash)
    chain.accept_block(b)
    assert chain.tip.hash == b.hash
    assert len(pool) == 1 and ev in [e.event for e in pool.entries.values()]


def test_pending_events_survive_restart(tmp_path: Path) -> None:
    chain = open_chain(tmp_path / "n")
    pool = Mempool(chain)
    evs = [pay(DEV[0], n, 1_000) for n in range(3)]
    for ev in reversed(evs[1:]):
        with pytest.raises(BadNonce):
            pool.add(ev)  # type: ignore[arg-type]
    for ev in evs:
        pool.add(ev)  # type: ignore[arg-type]
    chain.close()
    chain = open_chain(tmp_path / "n")
    try:
        pool = Mempool(chain)
        assert len(pool) == 3
        assert mine(chain, pool) == evs
    finally:
        chain.close()


def test_events_below_the_minimum_fee_rate_are_not_admitted(chain: ChainState) -> None:
    pool = Mempool(chain)
    free = pay(DEV[0], 0, 0)
    size = len(free.raw)  # type: ignore[attr-defined]
    with pytest.raises(FeeTooLow, match="below the minimum of 1 per byte"):
        pool.add(free)  # type: ignore[arg-type]
    with pytest.raises(FeeTooLow):
        pool.add(pay(DEV[0], 0, size - 1))  # type: ignore[arg-type]
    pool.add(pay(DEV[0], 0, size + 1))  # type: ignore[arg-type]  # the fee's varint grows
    # consensus still takes a miner's own free event
    chain.accept_block(make_block(chain, [free]))  # type: ignore[list-item]
    assert chain.tree.principal(DEV[0].principal).nonce == 1  # type: ignore[union-attr]
    assert len(pool) == 0  # its own nonce-0 event left with the block


def test_an_event_a_block_makes_invalid_leaves_and_frees_its_signer(chain: ChainState) -> None:
    """A pending FragmentStored whose offer expires must not sit in front of the owner's later
    events: after every block the pool checks its events again."""
    from chain.core.events import FragmentOffer, FragmentStored, event_id, receipt_message

    owner, host = DEV[0], DEV[1]
    offer = sign(owner, 0, FragmentOffer(owner.principal.root_path + "/x", b"\x01" * 32, 0, 5,
                                         3, 100, b"\x02" * 32, 1024, 10, 0, 5, 2,
                                         chain.tip.height + 3), fee=1_000)
    chain.accept_block(make_block(chain, [offer]))
    oid = event_id(chain.params.chain_id, offer)
    receipt = host.sign(receipt_message(chain.params.chain_id, oid, host.principal, b"\x02" * 32,
                                        host.principal))
    pool = Mempool(chain)
    stored = sign(owner, 1, FragmentStored(oid, host.public.ed25519, host.principal, receipt),
                  fee=1_000)
    pool.add(stored)
    later = pay(owner, 2, 1_000)
    pool.add(later)  # type: ignore[arg-type]
    chain.accept_block(make_block(chain, []))  # the offer's last height: still storable
    assert len(pool) == 2
    chain.accept_block(make_block(chain, []))  # expired: both leave (the later one depended)
    assert len(pool) == 0
    pool.add(pay(owner, 1, 1_000))  # type: ignore[arg-type]  # the signer is not stuck
