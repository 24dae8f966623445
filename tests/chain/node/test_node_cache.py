"""The chain's state tree node cache holds only what the database holds: a block refused after
its tree update was computed, a reorg (undone through the cache), a reindex and evictions all
leave the node's state exactly as a fresh fold of the best chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.core.errors import BadStateRoot
from chain.core.events import SignedEvent, Transfer
from chain.core.keys import KeyPair
from chain.core.statetree import CACHE_DEPTH
from chain.node.chainstate import ChainState
from globaltree.view import state_root
from tests.framework.chainkit import DEV, P, make_block, open_chain, reference_fold, sign, state_dump

NEW = [KeyPair.development(100 + i).principal for i in range(8)]  # not funded at genesis


def matches_fresh_fold(chain: ChainState) -> None:
    assert state_dump(chain) == reference_fold(P, list(chain.iter_best_chain()))
    assert state_root(chain.store.db) == chain.tip.header.state_root


@pytest.mark.parametrize("depth", [1, CACHE_DEPTH])
def test_refused_root_reorg_and_reindex_with_a_warm_cache(tmp_path: Path, depth: int) -> None:
    chain = open_chain(tmp_path / "n")
    chain.nodes.depth = depth
    chain.nodes.clear()  # what it read at open with the default depth
    nonces = [0, 0]

    def pay(sender: int, to: int, amount: int) -> SignedEvent:
        nonces[sender] += 1
        return sign(DEV[sender], nonces[sender] - 1, Transfer(NEW[to], amount))

    try:
        chain.accept_block(make_block(chain, [pay(0, 0, 5)]))
        fork_at = chain.tip.hash
        for to in (1, 2, 3):
            chain.accept_block(make_block(chain, [pay(0, to, 5), pay(1, to + 1, 6)]))
        assert len(chain.nodes) > 0
        matches_fresh_fold(chain)

        # a refused block's tree update (new keys, other values) must not be remembered
        with pytest.raises(BadStateRoot):
            chain.accept_block(make_block(chain, [pay(1, 6, 9)], state_root=bytes(32)))
        nonces[1] -= 1
        chain.accept_block(make_block(chain, [pay(1, 5, 8)]))
        matches_fresh_fold(chain)

        # a longer branch from the first block: four blocks undone through the cache
        parent = fork_at
        for n in range(5):
            block = make_block(chain, [sign(DEV[2], n, Transfer(NEW[7], 7))], parent=parent)
            chain.accept_block(block)
            parent = block.hash
        assert chain.tip.hash == parent
        matches_fresh_fold(chain)

        chain.reindex()  # from genesis, where the new keys were absent
        matches_fresh_fold(chain)
        chain.accept_block(make_block(chain, [sign(DEV[2], 5, Transfer(NEW[6], 1))]))
        matches_fresh_fold(chain)
    finally:
        chain.close()
