"""The dashboard's series, walked back from the tip through undo records, equal the sums taken
over the whole state right after each block, on a chain that mined, stored, proved and missed;
and a series computed again after more blocks (from cached points and the tip's sums moved
forward one block at a time) equals one computed from nothing."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from chain.api.stats import MAX_POINTS, Series, Stats
from chain.core.block import Block
from chain.core.events import Transfer
from chain.core.keys import KeyPair
from chain.core.params import COIN
from storage_market.chainclient import Signer
from storage_market.host import HostAgent, HostPolicy
from storage_market.inprocess import InProcessChain
from storage_market.owner import OwnerAgent, StoreOptions

OWNER = KeyPair.development(0)
BANK = KeyPair.development(1)


async def until(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def scan(series: Series, chain: InProcessChain) -> tuple[int, ...]:
    """The measure summed over the whole state as it stands."""
    total = tuple(0 for _ in series.fields)
    for key, value in series.scan(chain.node.chain):
        total = tuple(a + b for a, b in zip(total, series.measure(key, value), strict=True))
    return total


async def test_series_walked_back_equal_the_state_after_each_block(tmp_path: Path) -> None:
    chain = InProcessChain.open(tmp_path / "node")
    stats = Stats()
    host_keys = [KeyPair.generate() for _ in range(2)]
    truth: dict[str, dict[int, tuple[int, ...]]] = {"chain": {}, "host": {}, "owner": {}}
    references = {"chain": stats.chain_series,
                  "host": stats._scoped_series("host", host_keys[1].principal),
                  "owner": stats._scoped_series("owner", OWNER.principal)}

    def record(action: str, block: Block, height: int) -> None:
        if action == "connect":
            for name, series in references.items():
                truth[name][height] = scan(series, chain)

    chain.node.chain.listeners.append(record)
    hosts: list[HostAgent] = []
    owner = OwnerAgent(tmp_path / "owner", Signer(OWNER), chain,
                       defaults=StoreOptions(k=1, n=2, periods=6))
    try:
        bank = Signer(BANK)
        for key in host_keys:
            await bank.submit(chain, Transfer(key.principal, 10 * COIN))
        await chain.mine()
        await owner.start()
        for i, key in enumerate(host_keys):
            host = HostAgent(tmp_path / f"host{i}", key, chain, HostPolicy(capacity=1 << 20))
            await host.start()
            hosts.append(host)
        await chain.mine()
        chain.start_mining(0.05, ready=lambda: all(
            h.stepped >= chain.node.chain.tip.height for h in hosts if h.running))
        path = OWNER.principal.root_path + "/f.bin"
        await owner.put(path, os.urandom(30_000))
        assert await owner.wait_placed(path, 30)
        await owner.stop()
        tree = chain.node.chain.tree

        def record_of(i: int) -> tuple[int, int]:
            r = tree.host_record(host_keys[i].principal)
            return (r.periods_proven, r.periods_missed) if r else (0, 0)

        await until(lambda: all(record_of(i)[0] >= 1 for i in range(2)), "both hosts' proofs")
        await hosts[1].stop()
        await until(lambda: record_of(1)[1] >= 2, "the stopped host's misses")
        middle = {name: s.compute(chain.node.chain, 5) for name, s in references.items()}
        await until(lambda: chain.node.chain.tip.height >= middle["chain"][-1].height + 12,
                    "more blocks")
        await chain.stop_mining()
    finally:
        for h in hosts:
            await h.stop()
    try:
        tip = chain.node.chain.tip.height
        period = chain.node.params.storage_period_blocks
        for name, series in references.items():
            # walked again, from cached points and the tip's sums carried forward
            again = series.compute(chain.node.chain, 5)
            fresh = Stats()
            kind_p = {"chain": None, "host": host_keys[1].principal, "owner": OWNER.principal}
            cold = (fresh.chain_series if name == "chain"
                    else fresh._scoped_series(name, kind_p[name])).compute(chain.node.chain, 5)
            assert [(p.height, p.values) for p in again] == [(p.height, p.values) for p in cold]
            assert [p.height for p in cold] == [*range(0, tip, 5), tip]
            for point in cold:
                if point.height in truth[name]:
                    assert point.values == truth[name][point.height], (name, point.height)
            assert all(p.values == truth[name][p.height] for p in middle[name]
                       if p.height in truth[name])
        totals = truth["chain"][tip]
        assert totals[1] > 0 and totals[2] > 0  # bytes stored and proven
        # two hosts held a fragment; the stopped one's contract failed after its misses
        assert max(v[3] for v in truth["chain"].values()) == 2 and totals[3] == 1
        # coins left circulation: the missed periods' collateral burned
        assert truth["chain"][tip][0] < max(v[0] for v in truth["chain"].values())
        assert truth["host"][tip][3] >= 2  # its misses, in its series
        series = stats.series(chain.node.chain, "chain", None, None)
        assert series["bucket"] == period and len(series["points"]) <= MAX_POINTS
    finally:
        await chain.close()
