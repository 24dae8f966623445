"""The storage agents on the light client: a :class:`~storage_market.chainclient.ChainClient`
that keeps only headers and acts on nothing a full node says unless those headers vouch for it.

An owner or host agent needs balances, contracts and a path's holders, not the whole chain, so
``blockcoin store ... --light``, ``blockcoin host start --light`` and ``blockcoin tree ...
--light`` run on the data directory's light client (:class:`~chain.app.light.LightClient`,
``DATADIR/light``) and ask a full node's API, which need not be trusted. How each answer is checked:

- the tip and the hash of a block at a height come from this client's own header chain, kept
  in sync from the ``--peer`` full nodes while the agent runs (proof of work, most work wins);
- a principal (balance, nonce, keys, address, host record), a path's holders and a contract by
  id are ``?proof=1`` answers, computed here from keys proven against the state root of a
  header this client holds (:meth:`LightClient.ask`);
- a block's events come from the node's raw block named by this client's header at that
  height, checked against the header's events root (:func:`~chain.app.light.fetch_block`);
- an event is ``confirmed`` only once the block the node names is on this client's best chain
  and verifiably holds it. ``pending`` (the mempool) cannot be proven: it is believed for
  :data:`PENDING_TRUST` blocks at most, or a node could keep a host from ever sending a proof
  again by calling the first one pending forever;
- the next nonce is the proven one plus the node's count of pending events, bounded by the
  mempool's nonce gap: a wrong count can only get an event refused or delayed;
- an event is submitted to the full node; it is signed, and its id is computed here;
- lists of contracts by owner or by host cannot be proven complete: the state tree commits to
  its keys, and a proof covers keys, not the absence of every key under a prefix. Changing that
  would change consensus (a new commitment in the header, genesis mined again), and the agents
  do not need it: an owner knows the offers it signed and a host the offers it took from
  verified blocks, and each checks those by id. The lists (used by the blocktree client) are
  the node's, each entry proven by id and checked to belong to the owner or host asked about;
  a node can leave a contract out, not invent or alter one.

An answer that fails a check raises :class:`~chain.app.light.LightClientError` naming the node
and the lie in one line; the agents catch it like any failed step and ask again at the next
block, so a lying node stalls an agent without steering it. A host stalls only in what the lie
touched: a refused block or contract state does not keep it from proving the contracts it holds
(see :meth:`~storage_market.host.HostAgent.step`).

Several full nodes' APIs may be given, in order of preference. The agent asks one of them at a
time; when that one's answer is refused (a failed check as above) or it cannot be reached, one
line names it and the node asked from then on, the next in turn. A read (a proven answer, a
block's events, an event's status, the pending count) is then asked again of the next node at
once, each node once at most, so one honest node among them is enough for a read to succeed;
a submitted event is not sent again (the agent's next step does that, on the next node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from chain.app.light import (
    DEFAULT_MAX_AGE,
    LightClient,
    LightClientError,
    ProvenQuery,
    UnknownHeader,
    fetch_block,
)
from chain.core.aio import stop_tasks
from chain.core.block import Block
from chain.core.errors import BlockcoinError, DecodeError
from chain.core.events import SignedEvent, event_id
from chain.core.header import hash_from_hex
from chain.core.params import NetworkParams
from chain.core.principal import Principal
from chain.net.http import ApiError, NodeNotRunning
from chain.node.mempool import MAX_NONCE_GAP
from globaltree.errors import StateProofError
from storage_market.chainclient import AccountInfo, ContractInfo, Holder, holders_from_json
from storage_market.httpclient import HttpChain, NodeApiError

#: Blocks an event the node calls pending is believed to be (see the module docstring).
PENDING_TRUST = 3
#: Seconds between header syncs when the node reports no new block (a node that hides its
#: blocks does not stop this client learning them from its peers).
FOLLOW_SECONDS = 5.0
#: Least seconds between header syncs that found nothing new (a node reporting a tip it never
#: delivers cannot make this client hammer its peers).
SYNC_GAP = 0.5
SYNC_TIMEOUT = 30.0
#: Answers asked for before a proof naming a header this client cannot learn is refused.
ASK_TRIES = 4
#: What makes the agent move on to the next node: an answer refused, or no answer.
NODE_FAILURES = (LightClientError, StateProofError, ApiError, NodeApiError, NodeNotRunning)

log = logging.getLogger("blockcoin.light")
T = TypeVar("T")


class LightChain:
    """A ChainClient over a full node's API whose answers are checked against this client's
    headers (see the module docstring)."""

    def __init__(self, light: LightClient, http: HttpChain | Sequence[HttpChain],
                 peers: list[str], max_age: int = DEFAULT_MAX_AGE) -> None:
        self.light = light
        self.nodes = [http] if isinstance(http, HttpChain) else list(http)
        if not self.nodes:
            raise ValueError("a light chain asks at least one node")
        self._current = 0
        self.peers = peers
        self.max_age = max_age
        self._advanced = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._pending_since: dict[bytes, int] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def http(self) -> HttpChain:
        """The node asked now."""
        return self.nodes[self._current]

    def ask_first(self, nodes: Sequence[HttpChain]) -> None:
        """Ask ``nodes`` (some of this chain's, found answering) before the others."""
        self.nodes = list(nodes) + [n for n in self.nodes if n not in nodes]
        self._current = 0

    # --- headers ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Sync headers once (a peer must answer) and keep following them until :meth:`close`."""
        await self.light.sync_from(self.peers, SYNC_TIMEOUT)
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _sync(self) -> bool:
        """One sync from the peers; whether the best header changed. Failures are logged by
        the light client and leave the headers as they were."""
        async with self._sync_lock:
            best = self.light.tree.best
            with contextlib.suppress(LightClientError):
                await self.light.sync_from(self.peers, SYNC_TIMEOUT)
            if self.light.tree.best is best:
                return False
            self._advanced.set()
            self._advanced = asyncio.Event()
            return True

    async def _follow(self) -> None:
        """Sync after each block the node reports (a long poll: only a hint), and at least
        every :data:`FOLLOW_SECONDS`, from the peers alone while the node does not answer."""
        while True:
            try:
                await self.http.wait_for_block(self.light.tree.best.height, FOLLOW_SECONDS)
            except BlockcoinError:
                await asyncio.sleep(FOLLOW_SECONDS)
            if not await self._sync():
                await asyncio.sleep(SYNC_GAP)

    async def tip_height(self) -> int:
        return self.light.tree.best.height

    async def wait_for_block(self, after: int, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.light.tree.best.height <= after:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            advanced = self._advanced
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await advanced.wait()
        return self.light.tree.best.height

    async def block_hash(self, height: int) -> bytes | None:
        chain = self.light.tree.best_chain
        return chain[height] if 0 <= height < len(chain) else None

    # --- the nodes asked ---------------------------------------------------------------------

    @staticmethod
    def _refused(node: HttpChain, exc: BaseException) -> LightClientError:
        return LightClientError(f"refused the answer of {node.base}: {exc}")

    async def _on_nodes(self, ask: Callable[[HttpChain], Awaitable[T]], *, again: bool = True
                        ) -> T:
        """``ask`` of the node asked now. When it fails (see :data:`NODE_FAILURES`) and there
        are other nodes, one line names it and the next node, which is asked from then on; with
        ``again`` (reads) it is asked at once, every node once at most. The last failure is
        raised."""
        for _ in range(len(self.nodes)):
            node = self.http
            try:
                return await ask(node)
            except NODE_FAILURES as exc:
                if len(self.nodes) == 1:
                    raise
                failure = exc
                if self.http is node:  # not moved on meanwhile by another ask
                    self._current = (self._current + 1) % len(self.nodes)
                what = str(exc) if isinstance(exc, LightClientError) else f"{node.base}: {exc}"
                log.warning("%s; asking %s from now on", what, self.http.base)
                if not again:
                    raise
        raise failure

    # --- proven answers -----------------------------------------------------------------------

    async def _ask_on(self, node: HttpChain, query: ProvenQuery
                      ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The proven answer and ``node``'s own. A proof against a header this client lacks
        is tried again after a header sync, :data:`ASK_TRIES` times in all: the node proves
        against its tip, which may be a block or two ahead of these headers (and on a fast
        chain, ahead again by the time it answers)."""
        for attempt in range(ASK_TRIES):
            try:
                answer, claimed, _ = await self.light.ask(node.api, query, self.max_age)
                return answer, claimed
            except UnknownHeader as exc:
                if attempt == ASK_TRIES - 1:
                    raise self._refused(node, exc) from None
                await self._sync()
            except StateProofError as exc:
                raise self._refused(node, exc) from None
        raise AssertionError("unreachable")

    async def _proven(self, query: ProvenQuery) -> dict[str, Any] | None:
        async def ask(node: HttpChain) -> dict[str, Any] | None:
            return (await self._ask_on(node, query))[0]

        return await self._on_nodes(ask)

    async def principal(self, p: Principal) -> AccountInfo | None:
        answer = await self._proven(ProvenQuery.principal(p))
        return AccountInfo.from_json(answer) if answer is not None else None

    async def fragments(self, path: str) -> dict[int, list[Holder]]:
        answer = await self._proven(ProvenQuery.fragments(path))
        return holders_from_json(answer) if answer is not None else {}

    async def contract(self, cid: bytes) -> ContractInfo | None:
        answer = await self._proven(ProvenQuery.contract(cid))
        return ContractInfo.from_json(answer) if answer is not None else None

    async def _listed(self, node: HttpChain, listed: list[ContractInfo], what: str,
                      belongs: Callable[[ContractInfo], bool]) -> list[ContractInfo]:
        """``node``'s list, each entry proven by id (by the same node)."""
        out = []
        for c in listed:
            answer, _ = await self._ask_on(node, ProvenQuery.contract(c.id))
            proven = ContractInfo.from_json(answer) if answer is not None else None
            if proven is None or not belongs(proven):
                raise self._refused(node, StateProofError(
                    f"it listed contract {c.id.hex()[:16]}… as {what}'s, which its proof denies"))
            out.append(proven)
        return out

    async def contracts_by_owner(self, owner: Principal) -> list[ContractInfo]:
        async def ask(node: HttpChain) -> list[ContractInfo]:
            return await self._listed(node, await node.contracts_by_owner(owner), str(owner),
                                      lambda c: c.owner == owner)

        return await self._on_nodes(ask)

    async def contracts_by_host(self, host: Principal) -> list[ContractInfo]:
        async def ask(node: HttpChain) -> list[ContractInfo]:
            return await self._listed(node, await node.contracts_by_host(host), str(host),
                                      lambda c: c.host == host)

        return await self._on_nodes(ask)

    async def _block(self, node: HttpChain, block_hash: bytes) -> Block:
        try:
            return await fetch_block(node.api, block_hash)
        except StateProofError as exc:
            raise self._refused(node, exc) from None

    async def block_events(self, height: int) -> list[SignedEvent]:
        block_hash = await self.block_hash(height)
        if block_hash is None:
            return []

        async def ask(node: HttpChain) -> list[SignedEvent]:
            block = await self._block(node, block_hash)
            return [e for e in block.events if isinstance(e, SignedEvent)]

        return await self._on_nodes(ask)

    async def event_status(self, eid: bytes) -> str | None:
        async def ask(node: HttpChain) -> dict[str, Any] | None:
            try:
                data = await node.api.request("GET", f"/events/{eid.hex()}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                return None
            if isinstance(data, dict) and data.get("status") == "confirmed":
                await self._check_confirmed(node, eid, data)
            return data if isinstance(data, dict) else {}

        data = await self._on_nodes(ask)
        if data is None:
            self._pending_since.pop(eid, None)
            return None
        if data.get("status") == "confirmed":
            self._pending_since.pop(eid, None)
            return "confirmed"
        height = self.light.tree.best.height
        since = self._pending_since.setdefault(eid, height)
        return "pending" if height - since <= PENDING_TRUST else None

    async def _check_confirmed(self, node: HttpChain, eid: bytes, data: dict[str, Any]) -> None:
        """That the block ``node`` names is on this client's best chain and holds ``eid``."""
        try:
            block_hash = hash_from_hex(str(data.get("block")))
        except DecodeError as exc:
            raise self._refused(node, exc) from None
        found = self.light.tree.get(block_hash)
        if found is None:  # the node may be a block ahead of these headers
            await self._sync()
            found = self.light.tree.get(block_hash)
        if found is None or not self.light.tree.on_best_chain(found):
            raise self._refused(node, StateProofError(
                f"it says event {eid.hex()[:16]}… is in a block off this client's best chain"))
        block = await self._block(node, block_hash)
        if not any(event_id(self.chain_id, e) == eid for e in block.events):
            raise self._refused(node, StateProofError(
                f"it says event {eid.hex()[:16]}… is in block {found.height}, which does not hold"
                " it"))

    # --- unproven, and harmless -----------------------------------------------------------------

    async def next_nonce(self, principal: Principal) -> int:
        account = await self.principal(principal)
        base = account.nonce if account is not None else 0
        claimed = await self._on_nodes(lambda node: node.next_nonce(principal))
        return min(max(claimed, base), base + MAX_NONCE_GAP)

    async def submit(self, event: SignedEvent) -> bytes:
        await self._on_nodes(lambda node: node.submit(event), again=False)
        return event_id(self.chain_id, event)

    # --- the rest of ChainClient --------------------------------------------------------------

    @property
    def params(self) -> NetworkParams:
        return self.light.params

    @property
    def chain_id(self) -> bytes:
        return self.light.params.chain_id

    @property
    def storage_period_blocks(self) -> int:
        return self.light.params.storage_period_blocks

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop_tasks(task)
        for node in self.nodes:
            await node.close()
