"""The node in process: a :class:`~storage_market.chainclient.ChainClient` over a LocalNode.

Used by tests, the storage benchmark and any tool that owns a data directory outright. It is
the only storage-market module that imports the node (the engine), which is why it lives apart:
everything else in the package sees the chain only through the client protocol.

All calls run on the event loop's thread; the node is not thread-safe, and every call here is
short (a LevelDB read or one mempool admission), so nothing is pushed to a worker thread.
Mining is explicit (:meth:`InProcessChain.mine`) or periodic (:meth:`start_mining`), so a test
decides when time passes on chain.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from chain.block import Block
from chain.events import SignedEvent
from chain.node import LocalNode, init_datadir
from chain.params import REGTEST, NetworkParams
from chain.principal import Principal
from storage_market.chainclient import AccountInfo, ContractInfo, Holder


class InProcessChain:
    """A ChainClient over a LocalNode owned by this process."""

    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self._changed = asyncio.Event()
        self._miner: asyncio.Task[None] | None = None
        node.chain.listeners.append(self._on_block)

    @classmethod
    def open(cls, datadir: Path, params: NetworkParams = REGTEST) -> InProcessChain:
        """Open (creating if needed) a node data directory."""
        init_datadir(datadir, params)
        return cls(LocalNode(datadir, params, verify_threads=1))

    def _on_block(self, action: str, block: Block, height: int) -> None:
        self._changed.set()

    # --- ChainClient ----------------------------------------------------------------------

    @property
    def chain_id(self) -> bytes:
        return self.node.params.chain_id

    @property
    def storage_period_blocks(self) -> int:
        return self.node.params.storage_period_blocks

    async def tip_height(self) -> int:
        return self.node.chain.tip.height

    async def wait_for_block(self, after: int, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.node.chain.tip.height <= after:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.node.chain.tip.height

    async def submit(self, event: SignedEvent) -> bytes:
        return self.node.submit(event)

    async def next_nonce(self, principal: Principal) -> int:
        acct = self.node.chain.tree.principal(principal)
        base = acct.nonce if acct else 0
        return base + len(self.node.mempool.by_signer.get(principal.digest, {}))

    async def principal(self, p: Principal) -> AccountInfo | None:
        acct = self.node.chain.tree.principal(p)
        return AccountInfo.from_json(acct.to_json(p)) if acct is not None else None

    async def fragments(self, path: str) -> dict[int, list[Holder]]:
        raw = self.node.chain.tree.fragments(path)
        return {i: [Holder.from_json(i, h) for h in hs] for i, hs in raw.items()}

    async def contract(self, cid: bytes) -> ContractInfo | None:
        c = self.node.chain.tree.contract(cid)
        return ContractInfo.from_json(c.to_json()) if c is not None else None

    async def contracts_by_owner(self, owner: Principal) -> list[ContractInfo]:
        return [ContractInfo.from_json(c.to_json())
                for c in self.node.chain.tree.contracts_by_owner(owner)]

    async def contracts_by_host(self, host: Principal) -> list[ContractInfo]:
        return [ContractInfo.from_json(c.to_json())
                for c in self.node.chain.tree.contracts_by_host(host)]

    async def block_events(self, height: int) -> list[SignedEvent]:
        h = self.node.chain.best_chain_hash(height)
        block = self.node.chain.store.get_block(h) if h is not None else None
        if block is None:
            return []
        return [e for e in block.events if isinstance(e, SignedEvent)]

    async def close(self) -> None:
        await self.stop_mining()
        with contextlib.suppress(ValueError):
            self.node.chain.listeners.remove(self._on_block)
        self.node.close()

    # --- mining ---------------------------------------------------------------------------

    async def mine(self, count: int = 1, recipient: Principal | None = None) -> int:
        """Mine ``count`` blocks with what the mempool holds; the new tip height."""
        for _ in range(count):
            self.node.mine_block(recipient)
            await asyncio.sleep(0)  # let waiters see each block
        return self.node.chain.tip.height

    def start_mining(self, interval: float, recipient: Principal | None = None) -> None:
        """Mine one block every ``interval`` seconds in the background, until stopped."""
        if self._miner is not None:
            return

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                self.node.mine_block(recipient)

        self._miner = asyncio.get_running_loop().create_task(loop())

    async def stop_mining(self) -> None:
        task, self._miner = self._miner, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
