"""Block templates: the tip's child with the best-paying events that apply, and a coinbase
claiming exactly their fees plus the storage mint."""

from __future__ import annotations

import time as _time
from typing import TYPE_CHECKING

from chain.consensus.validation import expected_bits
from chain.core.block import Block, events_root
from chain.core.events import Coinbase, Event
from chain.core.hashes import ZERO_HASH
from chain.core.header import Header
from chain.core.params import HEADER_VERSION
from chain.core.principal import Principal
from globaltree.fold import Fold

if TYPE_CHECKING:
    from chain.node.chainstate import ChainState
    from chain.node.mempool import Mempool

COINBASE_RESERVE = 128


def build_template(chain: ChainState, mempool: Mempool | None, recipient: Principal,
                   now: int | None = None, extra: bytes = b"") -> Block:
    params = chain.params
    tip = chain.tip
    height = tip.height + 1
    now = int(_time.time()) if now is None else now
    block_time = max(now, chain.median_time_past(tip) + 1)
    fold = Fold(chain.view(), params, height, block_time, chain.store.hash_at)
    chosen: list[Event] = []
    if mempool is not None:
        chosen.extend(mempool.select(fold, params.max_block_bytes - 256 - COINBASE_RESERVE,
                                     params.max_events_per_block - 1))
    fold.settle()
    coinbase = Coinbase(height, recipient, fold.fees + fold.mint(), extra)
    events: list[Event] = [coinbase, *chosen]
    header = Header(HEADER_VERSION, tip.hash, events_root(events), ZERO_HASH, block_time,
                    expected_bits(params, tip.header, tip.height), 0)
    return Block(header, events)
