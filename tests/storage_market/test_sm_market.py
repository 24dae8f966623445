"""End-to-end storage market on 127.0.0.1: an in-process regtest chain, an owner agent and host
agents talking over real sockets and the Noise channel, contracts run by the chain.

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

from chain.core.events import Transfer
from chain.core.keys import KeyPair
from chain.core.params import COIN
from globaltree.records import HostRecord
from storage_market import retrieve
from storage_market.chainclient import Signer
from storage_market.crypto import SEAL_PIECE
from storage_market.errors import NoReadcap, NotEnoughFragments, StorageError
from storage_market.host import ACTIVE, HostAgent, HostPolicy
from storage_market.inprocess import InProcessChain
from storage_market.owner import OwnerAgent, StoreOptions

TICK = 0.08
OWNER = KeyPair.development(0)
BANK = KeyPair.development(1)  # funds the hosts' keys: they lock collateral and pay fees
PATH = OWNER.principal.root_path + "/docs/report.bin"


async def until(cond: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
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

    async def fund_hosts(self, count: int) -> None:
        """Give hosts ``0..count-1`` a key and coin (in the next block)."""
        bank = Signer(BANK)
        while len(self.host_keys) < count:
            key = KeyPair.generate()
            self.host_keys.append(key)
            await bank.submit(self.chain, Transfer(key.principal, 10 * COIN))

    async def start_host(self, i: int, capacity: int = 1 << 30) -> HostAgent:
        host = HostAgent(self.root / f"host{i}", self.host_keys[i], self.chain,
                         HostPolicy(capacity=capacity))
        await host.start()
        if i < len(self.hosts):
            self.hosts[i] = host
        else:
            self.hosts.append(host)
        return host

    def record(self, i: int) -> HostRecord:
        tree = self.chain.node.chain.tree
        return tree.host_record(self.host_keys[i].principal) or HostRecord()

    def balance(self, i: int) -> int:
        return self.chain.node.chain.tree.balance(self.host_keys[i].principal)

    def start_mining(self) -> None:
        """A block every TICK once every running host has acted on the tip (proofs included)."""
        tip = self.chain.node.chain

        def hosts_ready() -> bool:
            return all(h.stepped >= tip.tip.height for h in self.hosts if h.running)

        self.chain.start_mining(TICK, ready=hosts_ready)

    def proven(self) -> int:
        """The fewest periods proven by any active contract of PATH."""
        live = [c for c in self.chain.node.chain.tree.contracts_by_owner(OWNER.principal)
                if c.state.name == "ACTIVE"]
        return min((c.proven for c in live), default=0) if len(live) >= 5 else 0

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
        await m.fund_hosts(hosts)
        await chain.mine()
        await m.start_owner(**opts)
        for i in range(hosts):
            await m.start_host(i)
        await chain.mine()  # the announcements
        m.start_mining()
        yield m
    finally:
        await m.stop()
        await chain.close()


def holders(m: Market) -> dict[int, list[str]]:
    raw = m.chain.node.chain.tree.fragments(PATH)
    return {i: [str(h["host"]) for h in hs] for i, hs in raw.items()}


async def test_hosts_prove_and_are_paid_after_the_owner_leaves(tmp_path: Path) -> None:
    data = os.urandom(300_000) + b"THE PLAINTEXT MARKER" * 50
    async with market(tmp_path, periods=6) as m:
        owner = m.owner
        assert owner is not None
        entry = await owner.put(PATH, data)
        assert await owner.wait_placed(PATH, 120)
        placed = holders(m)
        assert sorted(placed) == [0, 1, 2, 3, 4]
        assert len({h for hs in placed.values() for h in hs}) == 5  # one fragment per host
        # the owner goes away; the chain keeps paying the hosts from escrow for their proofs
        await owner.stop()
        m.owner = None
        start = [m.balance(i) for i in range(5)]
        await until(lambda: m.proven() >= 2, what="two periods proven on chain")
        for i, h in enumerate(m.hosts):
            record = m.record(i)
            assert record.periods_proven >= 2 and record.periods_missed == 0
            assert record.earned >= 2 * entry.price
            assert m.balance(i) > start[i]  # pay + collateral back, less the proofs' fees
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
        out = tmp_path / "out" / "file.bin"
        out.parent.mkdir()
        with pytest.raises(NotEnoughFragments):
            await retrieve.get_to_file(m.chain, OWNER, PATH, out)
        assert not list(out.parent.iterdir())  # nothing half-written is left


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
        assert await owner.wait_placed(PATH, 120)
        # the hosts of two data fragments go: they are recovered from the parity
        lost = {hs[0] for i, hs in holders(m).items() if i < 2}
        for h in m.hosts:
            if str(h.principal) in lost:
                await h.stop()
        assert bytes(await retrieve.get(m.chain, OWNER, PATH)) == src.read_bytes()
        # and streamed to a file, recovered in place there
        out = tmp_path / "back.bin"
        size = await retrieve.get_to_file(m.chain, OWNER, PATH, out)
        assert size == src.stat().st_size and out.read_bytes() == src.read_bytes()
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


async def test_a_host_that_loses_its_fragment_misses_in_public_and_is_repaired(
        tmp_path: Path) -> None:
    """The owner puts a file and leaves. One host deletes its fragment, another corrupts it:
    each misses its next proof, the chain refunds the owner and burns that period's collateral,
    and their public records show it. Once the owner's agent runs again it releases them and
    the fragments are placed on spare hosts; its own copy of the block lost meanwhile, it
    rebuilds it from the three healthy hosts first."""
    data = os.urandom(200_000)
    async with market(tmp_path, hosts=7, periods=40) as m:
        for spare in m.hosts[5:]:
            await spare.stop()  # they come back after the placement
        owner = m.owner
        assert owner is not None
        entry = await owner.put(PATH, data)
        assert await owner.wait_placed(PATH, 120)
        await owner.stop()
        await until(lambda: m.proven() >= 1, what="a first period proven")
        before = holders(m)
        deleter, corrupter = 0, 1
        lost = {}
        for i, damage in ((deleter, "delete"), (corrupter, "corrupt")):
            h = m.hosts[i]
            (c,) = [c for c in h.contracts.values() if c.status == ACTIVE]
            f = h.store.file_for(c.offer_id)
            if damage == "delete":
                f.unlink()
            else:
                f.write_bytes(os.urandom(f.stat().st_size))
            lost[c.offer.index] = (i, c)
        collateral = {i: m.balance(i) for i in (deleter, corrupter)}
        await until(lambda: all(m.record(i).periods_missed >= 1 for i in (deleter, corrupter)),
                    what="the damaged hosts' misses on chain")
        for i in (deleter, corrupter):
            assert m.record(i).collateral_locked < entry.options.collateral * entry.periods
        # the healthy hosts keep proving meanwhile
        assert all(m.record(i).periods_missed == 0 for i in (2, 3, 4))
        # the owner comes back without its local copy: it releases the failed contracts,
        # rebuilds the record from the healthy hosts and repairs onto the spares
        owner.blocks.file_for(PATH).unlink()
        for i in (5, 6):
            await m.start_host(i)
        owner = await m.start_owner(periods=40)
        entry = owner.entries[PATH]
        await until(lambda: all(s.failed_hosts for s in entry.slots if s.index in lost),
                    what="the damaged contracts to be released")
        await until(lambda: entry.placed() == 5, what="repair onto the spare hosts")
        after = holders(m)
        spares = {str(m.host_keys[5].principal), str(m.host_keys[6].principal)}
        for index, (i, _) in lost.items():
            assert str(m.host_keys[i].principal) not in after.get(index, [])
            assert after[index][0] in spares and after[index] != before[index]
            # the released host got its future collateral back, not the burned period's
            assert m.balance(i) < collateral[i] + entry.options.collateral * entry.periods
        await until(lambda: all(c.status != ACTIVE for _, c in lost.values()),
                    what="the failed hosts to see the release")
        assert bytes(await retrieve.get(m.chain, OWNER, PATH)) == data
        assert any(e.startswith(f"rebuilt {PATH}") for e in owner.events)
        assert owner.blocks.read(PATH, OWNER) == data  # the local copy is whole again


async def test_an_owner_who_cannot_escrow_is_refused_before_any_work(tmp_path: Path) -> None:
    poor = KeyPair.generate()
    chain = InProcessChain.open(tmp_path / "node")
    m = Market(tmp_path, chain)
    try:
        await Signer(BANK).submit(chain, Transfer(poor.principal, 50_000))
        await chain.mine()
        owner = await m.start_owner(poor, k=2, n=3, periods=10, price=50_000)
        await chain.mine()
        before = await chain.next_nonce(poor.principal)
        with pytest.raises(StorageError, match=r"the offers escrow 1500000 \(3 fragments"):
            await owner.put(poor.principal.root_path + "/x", os.urandom(50_000))
        assert owner.entries == {} and await chain.next_nonce(poor.principal) == before
    finally:
        await m.stop()
        await chain.close()


async def test_an_owner_extends_with_its_hosts_consent(tmp_path: Path) -> None:
    async with market(tmp_path, hosts=3, k=2, n=3, periods=8) as m:
        owner = m.owner
        assert owner is not None
        entry = await owner.put(PATH, os.urandom(40_000))
        assert await owner.wait_placed(PATH, 120)
        locked = [m.record(i).collateral_locked for i in range(3)]
        assert sorted(await owner.extend(PATH, 4)) == [0, 1, 2]
        await until(lambda: all(c.periods == 12 for c in m.chain.node.chain.tree
                                .contracts_by_owner(OWNER.principal)), what="the extensions mined")
        for i in range(3):  # each host locked the added periods' collateral
            assert m.record(i).collateral_locked >= locked[i] + 4 * entry.options.collateral \
                - 2 * entry.options.collateral  # a period or two may have been proven meanwhile


async def test_restarting_every_node_mid_contract_loses_no_proof_or_pay(tmp_path: Path) -> None:
    data = os.urandom(150_000)
    chain = InProcessChain.open(tmp_path / "node")
    m = Market(tmp_path, chain)
    try:
        await m.fund_hosts(5)
        await chain.mine()
        await m.start_owner(periods=40)
        for i in range(5):
            await m.start_host(i)
        await chain.mine()
        m.start_mining()
        owner = m.owner
        assert owner is not None
        entry = await owner.put(PATH, data)
        assert await owner.wait_placed(PATH, 120)
        await until(lambda: m.proven() >= 1, what="a first period proven")
        # stop everything, the chain node included, and start it all again from disk (no block
        # is mined meanwhile, as when a single node restarts between two blocks)
        await chain.stop_mining()
        await m.stop()
        height = await chain.tip_height()
        await chain.close()
        chain = InProcessChain.open(tmp_path / "node")
        m.chain = chain
        assert await chain.tip_height() == height
        owner = await m.start_owner(periods=40)
        for i in range(5):
            await m.start_host(i)
        reloaded = owner.entries[PATH]
        assert [s.offer_id for s in reloaded.slots] == [s.offer_id for s in entry.slots]
        assert all(s.state == "active" for s in reloaded.slots)
        assert all(len(h.trees) == 1 for h in m.hosts)  # fragments checked again on start
        proven = m.proven()
        earned = [m.record(i).earned for i in range(5)]
        m.start_mining()
        await until(lambda: m.proven() >= proven + 2, what="proofs to continue after the restart")
        assert all(m.record(i).earned > earned[i] for i in range(5))
        assert all(m.record(i).periods_missed == 0 for i in range(5))
        assert bytes(await retrieve.get(chain, OWNER, PATH)) == data
    finally:
        await m.stop()
        await chain.close()


async def test_a_fragment_damaged_while_the_host_was_down_shows_as_corrupt(tmp_path: Path) -> None:
    async with market(tmp_path, hosts=3, k=2, n=3, periods=20) as m:
        owner = m.owner
        assert owner is not None
        await owner.put(PATH, os.urandom(30_000))
        assert await owner.wait_placed(PATH, 120)
        await m.hosts[0].stop()
        (c,) = m.hosts[0].contracts.values()
        f = m.hosts[0].store.file_for(c.offer_id)
        f.write_bytes(os.urandom(f.stat().st_size))
        host = await m.start_host(0)
        assert [r["corrupt"] for r in host.status()["contracts"]] == [True]
        await host.stop()
        # what `blockcoin host status` reads without a running agent
        offline = HostAgent(host.datadir.parent, m.host_keys[0], m.chain, HostPolicy(1 << 30))
        assert [r["corrupt"] for r in offline.status()["contracts"]] == [True]
