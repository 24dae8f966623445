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

from chain.core.events import Body, FragmentOffer, SignedEvent, Transfer
from chain.core.keys import KeyPair
from chain.core.params import NetworkParams
from chain.core.principal import Principal
from chain.core.writecap import Writecap
from storage_market.errors import StorageError


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """One entry of ``/global/principals``."""

    principal: Principal
    balance: int
    nonce: int
    ed25519: bytes | None
    x25519: bytes | None
    address: str | None
    host: dict[str, int] | None  # a host's public record, kept by the chain

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccountInfo:
        host = data.get("host")
        return cls(
            Principal.parse(str(data["principal"])),
            int(data["balance"]),
            int(data["nonce"]),
            _hex_or_none(data.get("ed25519")),
            _hex_or_none(data.get("x25519")),
            str(data["address"]) if data.get("address") else None,
            {str(k): int(v) for k, v in host.items()} if isinstance(host, dict) else None,
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
    """A storage contract as the chain holds it: the offer and, once stored, its host, the
    escrow and collateral left, and each period's outcome."""

    id: bytes
    owner: Principal
    host: Principal | None
    payout: Principal | None
    state: str  # offered, active, released, ended, expired, failed
    offer: FragmentOffer
    offer_height: int
    start: int
    periods: int
    escrow: int
    collateral_locked: int
    proven: int
    missed: int
    last_proven: int  # -1: none yet
    paid_total: int

    @property
    def end(self) -> int:
        return self.start + self.offer.period_blocks * self.periods

    def window_of(self, height: int) -> int:
        """The period whose proof window holds ``height``: ``(start + p·P, start + (p+1)·P]``."""
        return (height - self.start - 1) // self.offer.period_blocks

    def opening_height(self, period: int) -> int:
        """The block whose hash seeds ``period``'s proof."""
        return self.start + period * self.offer.period_blocks

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContractInfo:
        offer = FragmentOffer.from_json({**data, "periods": data["offer_periods"]})
        host, payout, last = data.get("host"), data.get("payout"), data.get("last_proven")
        return cls(
            id=bytes.fromhex(str(data["id"])), owner=Principal.parse(str(data["owner"])),
            host=Principal.parse(str(host)) if host else None,
            payout=Principal.parse(str(payout)) if payout else None, state=str(data["state"]),
            offer=offer, offer_height=int(data["offer_height"]),
            start=int(data.get("start") or 0), periods=int(data["periods"]),
            escrow=int(data["escrow"]), collateral_locked=int(data["collateral_locked"]),
            proven=int(data["proven_periods"]), missed=int(data["missed_periods"]),
            last_proven=int(last) if last is not None else -1, paid_total=int(data["paid_total"]),
        )


def holders_from_json(data: dict[str, Any]) -> dict[int, list[Holder]]:
    """The holders of each fragment index in a ``/global/fragments/<path>`` answer."""
    return {int(i): [Holder.from_json(int(i), h) for h in hs]
            for i, hs in data["fragments"].items()}


def _hex_or_none(value: object) -> bytes | None:
    return bytes.fromhex(str(value)) if value else None


class ChainClient(Protocol):
    """The node as the storage market sees it. Every method may raise a
    :class:`~chain.core.errors.BlockcoinError` (a refused event keeps its consensus error type)."""

    @property
    def chain_id(self) -> bytes: ...

    @property
    def storage_period_blocks(self) -> int: ...

    @property
    def params(self) -> NetworkParams:
        """The network's parameters (fee rate, proof leaves, event size, ...)."""
        ...

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

    async def block_hash(self, height: int) -> bytes | None:
        """The hash of the best-chain block at ``height`` (None past the tip)."""
        ...

    async def event_status(self, eid: bytes) -> str | None:
        """``pending``, ``confirmed`` (in the best chain) or None (neither)."""
        ...

    async def close(self) -> None: ...


#: Unmined events of one signer a node admits (the mempool's nonce gap, 64, less a margin for
#: events another process of the same key may send meanwhile).
PENDING_LIMIT = 56
#: Seconds a signer waits for blocks to make room for its next event.
PENDING_WAIT = 600.0


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
    #: what the events this signer had admitted moved out of the tree's account (fees and
    #: escrow), so a node holding a writecap with an allowance can tell before the chain does
    spent: int = 0
    _confirmed: int = 0  # the key's nonce on chain when last looked up

    @property
    def principal(self) -> Principal:
        return self.key.principal

    @property
    def owner(self) -> Principal:
        """The blocktree this signer acts for: its account, else itself."""
        return self.account if self.account is not None else self.key.principal

    async def submit(self, chain: ChainClient, body: Body, fee_rate: int | None = None,
                     for_tree: bool = True) -> bytes:
        """Sign ``body`` with the next nonce and a fee of ``fee_rate`` per byte (default: the
        network's minimum, the least the nodes relay) and submit it; the event id.

        ``for_tree=False`` signs as the key itself, paid from its own account, even when this
        signer acts for another tree (the nonce is the key's either way, hence one lock)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        rate = chain.params.min_fee_rate if fee_rate is None else fee_rate
        account, writecap = (self.account, self.writecap) if for_tree else (None, None)
        async with self._lock:
            nonce = await chain.next_nonce(self.key.principal)
            if nonce - self._confirmed >= PENDING_LIMIT:
                await self._wait_for_room(chain, nonce)
            event = SignedEvent.create_at_rate(
                chain.chain_id, self.key, nonce, rate, body, account, writecap
            )
            eid = await chain.submit(event)
            if account is not None:
                self.spent += event.fee + outflow(body)
            return eid


    async def _wait_for_room(self, chain: ChainClient, nonce: int) -> None:
        """Nodes keep at most :data:`PENDING_LIMIT` unmined events of one signer; past that,
        wait (bounded) for blocks to take some, so that a tree placing thousands of blocks
        paces itself to the chain instead of being refused."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PENDING_WAIT
        height = await chain.tip_height()
        while True:
            acct = await chain.principal(self.key.principal)
            self._confirmed = acct.nonce if acct is not None else 0
            if nonce - self._confirmed < PENDING_LIMIT:
                return
            if loop.time() > deadline:
                raise StorageError(f"{PENDING_LIMIT} events of {self.key.principal} are still "
                                   f"unmined after {PENDING_WAIT:g} s: is a node mining?")
            height = await chain.wait_for_block(height, 5.0)


def outflow(body: Body) -> int:
    """What an event moves out of its payer's account besides its fee (the escrow of an
    offer, the amount of a transfer); an extension's added escrow is counted by the chain."""
    if isinstance(body, FragmentOffer):
        return body.price * body.periods
    if isinstance(body, Transfer):
        return body.amount
    return 0
