"""What the storage market needs from a node, and nothing more.

The market's agents (owner, host, reader) talk to the chain through :class:`ChainClient`, a small
async protocol: submit a signed event, learn a signer's next nonce, read ``/global/principals``,
``/global/fragments`` and contracts, follow the tip, and read the events of a block (hosts find
offers there). Two implementations exist: :mod:`storage_market.inprocess` over a
:class:`~chain.node.LocalNode` in the same process (tests, benchmarks, one-process tools) and
:mod:`storage_market.httpclient` over a running node's HTTP API. Keeping the protocol this
narrow is what lets the market run unchanged against either, and keeps ``storage_market`` free
of the consensus engine.

Query results are plain dataclasses built from the node's JSON forms (``Account.to_json``,
``Contract.to_json``, ``GlobalTree.fragments``), so both implementations parse the same shape.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from chain.events import Body, FragmentOffer, SignedEvent
from chain.keys import KeyPair
from chain.principal import Principal
from chain.writecap import Writecap

DEFAULT_FEE = 1_000


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """One entry of ``/global/principals``."""

    principal: Principal
    balance: int
    nonce: int
    ed25519: bytes | None
    x25519: bytes | None
    address: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccountInfo:
        return cls(
            Principal.parse(str(data["principal"])),
            int(data["balance"]),
            int(data["nonce"]),
            _hex_or_none(data.get("ed25519")),
            _hex_or_none(data.get("x25519")),
            str(data["address"]) if data.get("address") else None,
        )


@dataclass(frozen=True, slots=True)
class Holder:
    """One holder of one fragment index in ``/global/fragments/<path>``."""

    index: int
    host: Principal
    contract: bytes
    root: bytes
    size: int
    end_height: int
    address: str | None

    @classmethod
    def from_json(cls, index: int, data: dict[str, Any]) -> Holder:
        return cls(
            index,
            Principal.parse(str(data["host"])),
            bytes.fromhex(str(data["contract"])),
            bytes.fromhex(str(data["root"])),
            int(data["size"]),
            int(data["end_height"]),
            str(data["address"]) if data.get("address") else None,
        )


@dataclass(frozen=True, slots=True)
class ContractInfo:
    """A storage contract (an offer, and once stored, its host and payments)."""

    id: bytes
    owner: Principal
    host: Principal | None
    state: str  # offered, active, released, ended
    offer: FragmentOffer
    offer_height: int
    start: int
    paid_periods: int
    paid_total: int

    @property
    def end(self) -> int:
        return self.start + self.offer.period_blocks * self.offer.periods

    def period_at(self, height: int) -> int:
        """The period running at ``height`` (may be past the last one)."""
        return (height - self.start) // self.offer.period_blocks

    def period_start(self, period: int) -> int:
        return self.start + period * self.offer.period_blocks

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContractInfo:
        offer = FragmentOffer(
            str(data["path"]), bytes.fromhex(str(data["version"])), int(data["index"]),
            int(data["n"]), int(data["k"]), int(data["size"]), bytes.fromhex(str(data["root"])),
            int(data["leaf_size"]), int(data["price"]), int(data["period_blocks"]),
            int(data["periods"]), int(data["expiry_height"]),
        )
        host = data.get("host")
        return cls(
            bytes.fromhex(str(data["id"])), Principal.parse(str(data["owner"])),
            Principal.parse(str(host)) if host else None, str(data["state"]), offer,
            int(data["offer_height"]), int(data.get("start") or 0),
            int(data.get("paid_periods") or 0), int(data.get("paid_total") or 0),
        )


def _hex_or_none(value: object) -> bytes | None:
    return bytes.fromhex(str(value)) if value else None


class ChainClient(Protocol):
    """The node as the storage market sees it. Every method may raise a
    :class:`~chain.errors.BlockcoinError` (a refused event keeps its consensus error type)."""

    @property
    def chain_id(self) -> bytes: ...

    @property
    def storage_period_blocks(self) -> int: ...

    async def tip_height(self) -> int: ...

    async def wait_for_block(self, after: int, timeout: float) -> int:
        """The tip height once it is above ``after``, or the current one after ``timeout``."""
        ...

    async def submit(self, event: SignedEvent) -> bytes:
        """Admit ``event`` to the node's mempool; its id, or the consensus error refusing it."""
        ...

    async def next_nonce(self, principal: Principal) -> int:
        """The signer's next nonce, counting its events already pending."""
        ...

    async def principal(self, p: Principal) -> AccountInfo | None: ...

    async def fragments(self, path: str) -> dict[int, list[Holder]]: ...

    async def contract(self, cid: bytes) -> ContractInfo | None: ...

    async def contracts_by_owner(self, owner: Principal) -> list[ContractInfo]: ...

    async def contracts_by_host(self, host: Principal) -> list[ContractInfo]: ...

    async def block_events(self, height: int) -> list[SignedEvent]:
        """The signed events of the best-chain block at ``height`` (empty past the tip)."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class Signer:
    """A key that signs events, optionally acting for a blocktree through a writecap chain.

    Events from one signer must carry consecutive nonces; agents of one process share the
    signer, so sign-and-submit is serialised by a lock (two coroutines asking for the next
    nonce at once would otherwise both get the same one).
    """

    key: KeyPair
    account: Principal | None = None
    writecap: Writecap | None = None
    _lock: asyncio.Lock | None = None

    @property
    def principal(self) -> Principal:
        return self.key.principal

    @property
    def owner(self) -> Principal:
        """The blocktree this signer acts for: its account, else itself."""
        return self.account if self.account is not None else self.key.principal

    async def submit(self, chain: ChainClient, body: Body, fee: int = DEFAULT_FEE) -> bytes:
        """Sign ``body`` with the next nonce and submit it; the event id."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            nonce = await chain.next_nonce(self.key.principal)
            event = SignedEvent.create(
                chain.chain_id, self.key, nonce, fee, body, self.account, self.writecap
            )
            return await chain.submit(event)
