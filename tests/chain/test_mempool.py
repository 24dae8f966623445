"""Mempool: fee-rate priority, per-signer nonce order, a size bound with eviction, and events
of disconnected blocks returned to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.chainstate import ChainState
from chain.errors import BadNonce, DuplicateEvent, InsufficientFunds
from chain.events import Transfer
from chain.keys import KeyPair
from chain.mempool import FeeTooLow, Mempool, MempoolFull
from chain.mining import solve_block
from chain.template import build_template
from tests.chainkit import DEV, make_block, open_chain, sign

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
    low = [pay(DEV[0], n, 100) for n in range(3)]
    high = pay(DEV[1], 0, 5_000)
    for ev in [*low, high]:
        pool.add(ev)  # type: ignore[arg-type]
    fold_events = mine(chain, pool)
    assert fold_events[0] == high
    assert fold_events[1:] == low  # signer's nonces in order
    assert len(pool) == 0


def test_template_respects_block_size(tmp_path: Path) -> None:
    from tests.chainkit import with_limits

    chain = open_chain(tmp_path / "n", with_limits(max_block_bytes=1_500))
    try:
        pool = Mempool(chain)
        for n in range(20):
            pool.add(pay(DEV[0], n, 100 + n))  # type: ignore[arg-type]
        first = mine(chain, pool)
        assert 0 < len(first) < 20
        assert len(pool) == 20 - len(first)
    finally:
        chain.close()


def test_refuses_gaps_replays_duplicates_and_overspends(chain: ChainState) -> None:
    pool = Mempool(chain)
    ev = pay(DEV[0], 0, 100)
    pool.add(ev)  # type: ignore[arg-type]
    with pytest.raises(DuplicateEvent):
        pool.add(ev)  # type: ignore[arg-type]
    with pytest.raises(BadNonce):
        pool.add(pay(DEV[0], 5, 100))  # type: ignore[arg-type]
    poor = KeyPair.generate()
    with pytest.raises(InsufficientFunds):
        pool.add(sign(poor, 0, Transfer(TO, 1)))
    mine(chain, pool)
    with pytest.raises(DuplicateEvent):
        pool.add(ev)  # type: ignore[arg-type]
    with pytest.raises(BadNonce):
        pool.add(pay(DEV[0], 0, 999))  # type: ignore[arg-type]


def test_replacement_needs_a_higher_fee(chain: ChainState) -> None:
    pool = Mempool(chain)
    pool.add(pay(DEV[0], 0, 100))  # type: ignore[arg-type]
    with pytest.raises(FeeTooLow):
        pool.add(pay(DEV[0], 0, 100, amount=2))  # type: ignore[arg-type]
    better = pay(DEV[0], 0, 500, amount=2)
    pool.add(better)  # type: ignore[arg-type]
    assert len(pool) == 1 and mine(chain, pool) == [better]


def test_size_bound_evicts_lowest_fee_rate_with_dependents(chain: ChainState) -> None:
    cheap = [pay(DEV[0], n, 10) for n in range(3)]
    rich = [pay(DEV[1], 0, 1_000), pay(DEV[2], 0, 1_000)]
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
        Mempool(chain, max_bytes=50).add(pay(DEV[3], 0, 1))  # type: ignore[arg-type]


def test_disconnected_events_return(chain: ChainState) -> None:
    pool = Mempool(chain)
    ev = pay(DEV[0], 0, 100)
    pool.add(ev)  # type: ignore[arg-type]
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
    evs = [pay(DEV[0], n, 100) for n in range(3)]
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
