"""Random block trees with random events: connect, disconnect and reorg across them, restart
the node in between, and after each step the global tree (its state tree and root included)
equals a fresh fold of the best chain."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.core.block import Block
from chain.core.errors import ValidationError
from chain.node.chainstate import ChainState
from globaltree.view import MemoryDB, state_root
from tests.framework.chainkit import P, build_on, open_chain, reference_fold, state_dump


def best_chain_blocks(chain: ChainState) -> list[Block]:
    return list(chain.iter_best_chain())


# hypothesis picks the shape of the run; a seeded rng picks parents and events, so that
# forks, reorgs and invalid blocks are common rather than shrunk away
step = st.sampled_from(["extend", "extend", "extend", "fork", "restart", "reindex"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=8, max_size=30), st.integers(0, 2**32))
def test_state_always_equals_fresh_fold(steps: list[str], seed: int) -> None:
    rng = random.Random(seed)
    stats: dict[str, int] = {"invalid": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "node"
        chain = open_chain(path)
        try:
            chain.listeners.append(lambda action, b, h: count(stats, action, b))
            known = [chain.tip.hash]
            for op in steps:
                if op in ("extend", "fork"):
                    back = rng.randrange(min(len(known), 4)) if op == "fork" else 0
                    parent = known[-1 - back]
                    block = build_on(chain, parent, rng, rng.randrange(7), rng.random() < 0.2)
                    if block is None:
                        continue
                    try:
                        chain.accept_block(block)
                        known.append(block.hash)
                    except ValidationError:
                        stats["invalid"] += 1
                elif op == "restart":
                    chain.close()
                    chain = open_chain(path)
                    chain.listeners.append(lambda action, b, h: count(stats, action, b))
                else:
                    before = state_dump(chain)
                    chain.reindex()
                    assert state_dump(chain) == before
                fresh = reference_fold(P, best_chain_blocks(chain))
                assert state_dump(chain) == fresh  # the state tree's nodes included
                root = state_root(chain.store.db)
                assert root == chain.tip.header.state_root == state_root(MemoryDB(fresh))
                valid = [chain.index[h] for h in known if chain.index[h].status != 2]
                assert chain.tip.work == max(e.work for e in valid)
        finally:
            chain.close()
    TOTALS.update({k: TOTALS.get(k, 0) + v for k, v in stats.items()})


TOTALS: dict[str, int] = {}


def count(stats: dict[str, int], action: str, block: Block) -> None:
    """Blocks connected and disconnected, and the storage events among those connected."""
    stats[action] = stats.get(action, 0) + 1
    if action == "connect":
        for ev in block.events[1:]:
            kind = ev.kind.name.lower()
            stats[kind] = stats.get(kind, 0) + 1


def test_the_property_test_exercised_reorgs_and_invalid_blocks() -> None:
    """Guards the generator: the random trees above did disconnect and reject blocks, and their
    blocks carried every storage event (escrow, collateral, proofs, releases), so the fold's
    money moves and the windows closing were compared against fresh folds too."""
    if not TOTALS:
        test_state_always_equals_fresh_fold()
    assert TOTALS.get("disconnect", 0) > 0
    assert TOTALS.get("invalid", 0) > 0
    for kind in ("fragment_offer", "fragment_stored", "storage_proof", "fragment_released"):
        assert TOTALS.get(kind, 0) > 0, (kind, TOTALS)
