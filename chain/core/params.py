"""Network parameters for ``main``, ``test`` and ``regtest``.

Each network has its own chain id (mixed into every signature and id, so nothing replays
across networks), genesis block, ports and data directory. Regtest mines at the minimum
difficulty without retargeting, has short storage periods, and allocates coin at genesis to
well-known development keys so a fresh regtest wallet can spend at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from chain.core.block import Block, events_root
from chain.core.errors import ConfigError
from chain.core.events import Coinbase, Event
from chain.core.hashes import ZERO_HASH
from chain.core.header import Header, compact_to_target
from chain.core.keys import KeyPair
from chain.core.principal import Principal
from chain.core.units import COIN

HEADER_VERSION = 3  # 3: the state root commits to the global tree
GENESIS_TIME = 1767225600  # 2026-01-01T00:00:00Z
DEV_KEYS = 10
DEV_ALLOCATION = 1_000_000 * COIN
BURN = Principal(bytes(32))


@dataclass(frozen=True)
class NetworkParams:
    name: str
    chain_id: bytes
    genesis_bits: int
    genesis_nonce: int
    # the state root after genesis (its allocations), which the genesis header commits to;
    # tests/chain/core/test_statetree.py folds genesis and checks it
    genesis_state_root: bytes
    p2p_port: int
    api_port: int
    spacing: int
    halflife: int
    retarget: bool
    allocations: tuple[tuple[Principal, int], ...] = field(default=())
    max_block_bytes: int = 2 << 20
    max_event_bytes: int = 64 << 10  # room for ten storage proof items under one signature
    max_events_per_block: int = 20_000
    max_future_seconds: int = 2 * 60 * 60
    median_window: int = 11
    mint_per_kib: int = 1_000
    mint_cap_per_block: int = 50 * COIN
    storage_period_blocks: int = 720
    coinbase_maturity: int = 0
    # storage contracts
    max_fragment_bytes: int = 1 << 32
    max_offer_blocks: int = 1_000
    proof_leaves: int = 4
    max_misses: int = 3
    # relay policy, not consensus: base units of fee per byte of event
    min_fee_rate: int = 1

    @cached_property
    def pow_limit(self) -> int:
        return compact_to_target(self.genesis_bits)

    def genesis_events(self) -> list[Event]:
        if not self.allocations:
            return [Coinbase(0, BURN, 0, self.chain_id)]
        return [Coinbase(0, p, amount, self.chain_id) for p, amount in self.allocations]

    def genesis_header(self, nonce: int | None = None) -> Header:
        return Header(
            version=HEADER_VERSION,
            prev=ZERO_HASH,
            events_root=events_root(self.genesis_events()),
            state_root=self.genesis_state_root,
            time=GENESIS_TIME,
            bits=self.genesis_bits,
            nonce=self.genesis_nonce if nonce is None else nonce,
        )

    @cached_property
    def genesis(self) -> Block:
        return Block(self.genesis_header(), self.genesis_events())

    @cached_property
    def genesis_hash(self) -> bytes:
        return self.genesis.hash


def _dev_allocations() -> tuple[tuple[Principal, int], ...]:
    return tuple((KeyPair.development(i).principal, DEV_ALLOCATION) for i in range(DEV_KEYS))


# main and test: one empty account, the burn principal's, credited by the zero coinbase
_ZERO_COINBASE_STATE_ROOT = bytes.fromhex(
    "bc516f6404e383c7c48b570b65bbf437591335c2d916afe02fda6ff405a8eeee")

MAIN = NetworkParams(
    name="main", chain_id=b"BLKM", genesis_bits=0x1F00FFFF, genesis_nonce=44444,
    genesis_state_root=_ZERO_COINBASE_STATE_ROOT,
    p2p_port=8633, api_port=8634, spacing=120, halflife=2 * 24 * 3600, retarget=True,
)
TEST = NetworkParams(
    name="test", chain_id=b"BLKT", genesis_bits=0x1F00FFFF, genesis_nonce=27130,
    genesis_state_root=_ZERO_COINBASE_STATE_ROOT,
    p2p_port=18633, api_port=18634, spacing=120, halflife=3600, retarget=True,
)
REGTEST = NetworkParams(
    name="regtest", chain_id=b"BLKR", genesis_bits=0x207FFFFF, genesis_nonce=0,
    genesis_state_root=bytes.fromhex(
        "e311519fc050baa57aabe5797e2e566fc571912c3c16c6cf15c4419b10eefce2"),
    p2p_port=28633, api_port=28634, spacing=1, halflife=3600, retarget=False,
    allocations=_dev_allocations(), storage_period_blocks=5,
)

NETWORKS = {p.name: p for p in (MAIN, TEST, REGTEST)}


def network(name: str) -> NetworkParams:
    try:
        return NETWORKS[name]
    except KeyError:
        raise ConfigError(f"unknown network {name!r} (choose from {', '.join(NETWORKS)})") from None


def default_datadir(net: str) -> Path:
    """``$BLOCKCOIN_HOME/NETWORK``, else ``~/.blockcoin/NETWORK``: each network its own."""
    base = os.environ.get("BLOCKCOIN_HOME")
    return (Path(base) if base else Path.home() / ".blockcoin") / net
