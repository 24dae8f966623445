"""Blocks mined by the numba miner pass the chain's validation at a real (mainnet) target."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from chain.core.header import hash_to_int
from chain.core.params import MAIN
from chain.node.chainstate import ChainState
from chain.node.mining import mine_header, solve_block
from chain.node.template import build_template
from tests.framework.chainkit import DEV


def test_mainnet_difficulty_block_is_mined_and_accepted(tmp_path: Path) -> None:
    chain = ChainState(tmp_path / "main", MAIN, verify_threads=1)
    try:
        template = build_template(chain, None, DEV[1].principal)
        assert template.header.target < 1 << 241  # about 65k hashes a block, not regtest's 2
        mined = solve_block(template)
        assert mined is not None
        block, solved = mined
        assert hash_to_int(block.hash) <= block.header.target
        assert solved.hashes > 0 and solved.hashrate > 0
        chain.accept_block(block)
        assert chain.tip.hash == block.hash and chain.tip.height == 1
    finally:
        chain.close()


def test_stop_returns_nothing() -> None:
    hard = replace(MAIN.genesis.header, bits=0x1A00FFFF)  # ~2^48 hashes: never found here
    assert mine_header(hard, should_stop=lambda: True) is None
