"""End-to-end storage market on 127.0.0.1: an in-process regtest chain, an owner agent and host
agents talking over real sockets and the Noise channel.

Every wait is bounded (``until`` polls a condition with a deadline), the chain is mined by a
background task every ``TICK`` seconds, and each test stops everything it started.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from chain.events import Transfer
from chain.keys import KeyPair
from storage_market import retrieve
from storage_market.chainclient import Signer
from storage_market.crypto import SEAL_PIECE
from storage_market.errors import NoReadcap, NotEnoughFragments
from storage_market.host import ACTIVE, DROPPED, HostAgent, HostPolicy
from storage_market.inprocess import InProcessChain
from storage_market.owner import OwnerAgent, StoreOptions

TICK = 0.08
OWNER = KeyPair.development(0)
PATH = OWNER.principal.root_path + "/docs/report.bin"


async def until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Market:
    def __init__(self, root: Path, chain: InProcessChain) -> None:
        self.root = root
        self.chain = chain
        self.owner: OwnerAgent | None = None
        self.hosts: list[HostAgent] = []
        self.host_keys: list[KeyPair] = []

    async def start_owner(self, key: KeyPair = OWNER, **opts: object) -> OwnerAgent:
        defaults = StoreOptions(**opts)  # type: ignore[arg-type]
        self.owner = OwnerAgent(self.root / "owner", Signer(key), self.chain, defaults=defaults)
        await self.owner.start()
        return self.owner

    async def start_host(self, i: int, capacity: int = 1 << 30, grace: int = 2) -> HostAgent:
        while len(self.host_keys) <= i:
            self.host_keys.append(KeyPair.generate())
        host = HostAgent(self.root / f"host{i}", self.host_keys[i], self.chain,
                         HostPolicy(capacity=capacity, grace_periods=grace))
        await host.start()
        if i < len(self.hosts):
            self.hosts[i] = host
        else:
            self.hosts.append(host)
        return host

    async def stop(self) -> None:
        for h in self.hosts:
            await h.stop()
        if self.owner is not None:
            await self.owner.stop()


@asynccontextmanager
async def market(tmp_path: Path, hosts: int = 5, **opts: object) -> AsyncIterator[Market]:
    chain = InProcessChain.open(tmp_path / "node")
    m = Market(tmp_path, chain)
    try:
        await m.start_owner(**opts)
        for i in range(hosts):
            await m.start_host(i)
        await chain.mine()  # the announcements
        chain.start_mining(TICK)
        yield m
    finally:
        await m.stop()
        await chain.close()


def holders(m: Market) -> dict[int, list[str]]:
    raw = m.chain.node.chain.tree.fragments(PATH)
    return {i: [str(h["host"]) for h in hs] for i, hs in raw.items()}


async def test_put_place_challenge_pay_and_get_back(tmp_path: Path) -> None:
    data = os.urandom(300_000) + b"THE PLAINTEXT MARKER" * 50
    async with market(tmp_path, periods=6) as m:
        owner = m.owner
        assert owner is not None
        entry = await owner.put(PATH, data)
        assert await owner.wait_placed(PATH, 20)
        placed = holders(m)
        assert sorted(placed) == [0, 1, 2, 3, 4]
        assert len({h for hs in placed.values() for h in hs}) == 5  # one fragment per host
        # two periods of challenges, vouchers and payments on chain
        await until(lambda: all(len(s.vouchers) >= 2 for s in entry.slots), what="two periods paid")
        await until(lambda: all(h.status()["earned"] >= 2 * entry.price for h in m.hosts),
                    what="payments on chain")
        for h in m.hosts:
            st = h.status()
            assert st["used"] == entry.fragment_size and st["future"] > 0
            # no host can read the plaintext: not in its files, and no readcap opens for it
            for f in (h.datadir / "fragments").glob("*.frag"):
                assert b"THE PLAINTEXT MARKER" not in f.read_bytes()
        block = await retrieve.get_block(m.chain, m.host_keys[0], PATH)
        with pytest.raises(NoReadcap):
            block.block_key(m.host_keys[0])
        # two hosts go away; any three fragments still give the file back byte for byte
        for h in m.hosts[:2]:
            await h.stop()
        errors: list[str] = []
        got = await retrieve.get(m.chain, OWNER, PATH, errors=errors)
        assert bytes(got) == data
        # a third loss leaves too few
        await m.hosts[2].stop()
        await m.hosts[3].stop()
        with pytest.raises(NotEnoughFragments):
            await retrieve.get(m.chain, OWNER, PATH)


async def test_a_file_sealed_in_pieces_is_placed_and_comes_back(tmp_path: Path) -> None:
    """A file big enough to be sealed piece by piece, its data fragments' leaves hashed while
    it is sealed: every host checks its fragment against the root on chain before storing it,
    and the file comes back byte for byte from three of them."""
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(2 * SEAL_PIECE + 54_321))
    async with market(tmp_path, periods=6) as m:
        owner = m.owner
        assert owner is not None
        with src.open("rb") as data:
            await owner.put(PATH, data)
        assert await owner.wait_placed(PATH, 30)
        for h in m.hosts[:2]:
            await h.stop()
        assert bytes(await retrieve.get(m.chain, OWNER, PATH)) == src.read_bytes()


async def test_deleting_or_corrupting_host_fails_is_unpaid_and_is_repaired(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    async with market(tmp_path, hosts=5, periods=20, max_misses=1) as m:
        owner = m.owner
        assert owner is not None
        entry = await owner.put(PATH, data)
        assert await owner.wait_placed(PATH, 20)
        await until(lambda: all(len(s.vouchers) >= 1 for s in entry.slots), what="first vouchers")
        before = holders(m)
        # two spare hosts join; one placed host deletes its fragment, another corrupts it
        await m.start_host(5)
        await m.start_host(6)
        deleter, corrupter = m.hosts[0], m.hosts[1]
        lost = {}
        for h, damage in ((deleter, "delete"), (corrupter, "corrupt")):
            (c,) = [c for c in h.contracts.values() if c.status == ACTIVE]
            f = h.store.file_for(c.offer_id)
            if damage == "delete":
                f.unlink()
            else:
                f.write_bytes(os.urandom(f.stat().st_size))
            lost[c.offer.index] = (h, c, len(c.vouchers or {}))
        await until(lambda: all(s.failed_hosts for s in entry.slots if s.index in lost),
                    what="the damaged contracts to be released")
        await until(lambda: entry.placed() == 5, what="repair onto the spare hosts")
        after = holders(m)
        spares = {str(m.hosts[5].principal), str(m.hosts[6].principal)}
        for index, (h, c, paid_before) in lost.items():
            assert str(h.principal) not in after.get(index, [])
            assert after[index][0] in spares and after[index] != before[index]
            # no voucher was issued for the failed period
            assert len(c.vouchers or {}) == paid_before
        await until(lambda: all(c.status != ACTIVE for h, c, _ in lost.values()),
                    what="the failed hosts to see the release")
        assert bytes(await retrieve.get(m.chain, OWNER, PATH)) == data


async def test_owner_who_cannot_pay_is_refused_and_dropped_after_grace(tmp_path: Path) -> None:
    poor = KeyPair.generate()
    chain = InProcessChain.open(tmp_path / "node")
    m = Market(tmp_path, chain)
    try:
        # just enough for the announcement, offers and receipts, nothing for the hosts
        await Signer(KeyPair.development(1)).submit(chain, Transfer(poor.principal, 7_500))
        await chain.mine()
        path = poor.principal.root_path + "/x"
        owner = await m.start_owner(poor, k=2, n=3, periods=10, price=50_000, fee=500)
        for i in range(3):
            await m.start_host(i, grace=1)
        await chain.mine()
        chain.start_mining(TICK)
        await owner.put(path, os.urandom(50_000))
        assert await owner.wait_placed(path, 20)
        host = m.hosts[0]
        await until(lambda: any(v.status == "refused" for c in host.contracts.values()
                                for v in (c.vouchers or {}).values()), what="a refused claim")
        (c,) = host.contracts.values()
        (v,) = [v for v in (c.vouchers or {}).values() if v.status == "refused"]
        assert "cannot pay" in v.error and str(poor.principal) in v.error
        await until(lambda: poor.principal in host.delinquent, what="grace to run out")
        assert c.status == DROPPED and not host.store.file_for(c.offer_id).exists()
        assert host.status()["not_serving"]
        with pytest.raises(NotEnoughFragments):  # all hosts stopped serving it
            await until(lambda: all(poor.principal in h.delinquent for h in m.hosts),
                        what="every host to stop")
            await retrieve.get(chain, poor, path)
    finally:
        await m.stop()
        await chain.close()


async def test_restarting_every_node_mid_contract_loses_nothing(tmp_path: Path) -> None:
    data = os.urandom(150_000)
    chain = InProcessChain.open(tmp_path / "node")
    m = Market(tmp_path, chain)
    try:
        await m.start_owner(periods=30)
        for i in range(5):
            await m.start_host(i)
        await chain.mine()
        chain.start_mining(TICK)
        owner = m.owner
        assert owner is not None
        entry = await owner.put(PATH, data)
        assert await owner.wait_placed(PATH, 20)
        await until(lambda: all(len(s.vouchers) >= 1 for s in entry.slots), what="first vouchers")
        # stop everything, the chain node included, and start it all again from disk
        await m.stop()
        height = await chain.tip_height()
        await chain.close()
        earned = {str(h.principal): h.status()["earned"] for h in m.hosts}
        chain = InProcessChain.open(tmp_path / "node")
        m.chain = chain
        assert await chain.tip_height() == height
        owner = await m.start_owner(periods=30)
        for i in range(5):
            await m.start_host(i)
        reloaded = owner.entries[PATH]
        assert [s.offer_id for s in reloaded.slots] == [s.offer_id for s in entry.slots]
        assert all(s.state == "active" for s in reloaded.slots)
        assert all(len(h.trees) == 1 for h in m.hosts)  # fragments checked again on start
        chain.start_mining(TICK)
        paid = {s.index: len(s.vouchers) for s in reloaded.slots}
        await until(lambda: all(len(s.vouchers) > paid[s.index] for s in reloaded.slots),
                    what="challenges to continue after the restart")
        await until(lambda: all(h.status()["earned"] > earned[str(h.principal)] for h in m.hosts),
                    what="payments to continue after the restart")
        assert all(s.misses == 0 for s in reloaded.slots)
        assert bytes(await retrieve.get(chain, OWNER, PATH)) == data
    finally:
        await m.stop()
        await chain.close()
