"""The node through its HTTP API: a :class:`~storage_market.chainclient.ChainClient` for agents
that run beside a node (``blockcoin node``) rather than inside it.

Reads use the public endpoints (``/tip``, ``/global/principals/<p>``, ``/global/fragments/<path>``,
``/contracts``, ``/blocks/<height>/raw``); submitting uses ``POST /events`` with the node's
cookie token. A refusal comes back as the node's error code, and is raised here as the very
consensus error class that code names (``insufficient-funds`` becomes
:class:`~chain.core.errors.InsufficientFunds`), so an agent handles a refused event the same way
whether its node is in process or behind HTTP. Waiting for a block long-polls
``/tip?after=H&wait=S`` (at most :data:`MAX_WAIT` seconds a request, the node's limit): one
request per block, and unlike a subscription there is no connection to lose. A node that
answers at once regardless is polled every :data:`POLL_SECONDS` instead.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import chain.core.errors as chain_errors
from chain.core.block import Block
from chain.core.errors import BlockcoinError, ConfigError, ValidationError
from chain.core.events import SignedEvent
from chain.core.header import hash_from_hex
from chain.core.params import NetworkParams
from chain.core.principal import Principal
from chain.net.http import ApiError, AsyncApiClient, NodeNotRunning, locate_node
from storage_market.chainclient import AccountInfo, ContractInfo, Holder, holders_from_json

POLL_SECONDS = 0.1
MAX_WAIT = 5.0  # the node refuses longer long-polls (chain.api.server.MAX_TIP_WAIT)

_ERRORS: dict[str, type[ValidationError]] = {
    cls.code: cls
    for cls in vars(chain_errors).values()
    if isinstance(cls, type) and issubclass(cls, ValidationError)
}


class NodeApiError(BlockcoinError):
    """The node answered with an error that is not a consensus refusal."""

    code = "node-api"


class HttpChain:
    """A ChainClient over ``http://host:port`` of a running node."""

    def __init__(self, base_url: str, params: NetworkParams, token: str | None = None,
                 timeout: float = 30.0) -> None:
        self.api = AsyncApiClient(base_url, token, timeout)
        self.base = self.api.base
        self.params = params

    @property
    def token(self) -> str | None:
        return self.api.token

    @classmethod
    def for_datadir(cls, datadir: Path, params: NetworkParams) -> HttpChain:
        """The API of the node running on ``datadir`` (its ``node.json`` and cookie)."""
        try:
            url, token = locate_node(datadir)
        except NodeNotRunning as exc:
            raise ConfigError(
                f"no node is running on {datadir} (no node.json there): start one with "
                "`blockcoin node`, or name a running one with --node DIR or --api URL") from exc
        return cls(url, params, token)

    async def _request(self, method: str, path: str, *, data: bytes | None = None,
                       auth: bool = False, raw: bool = False) -> Any:
        """The answer, ``None`` for 404; a refusal raised as the consensus error its code names."""
        try:
            return await self.api.request(method, path, data=data, auth=auth, raw=raw)
        except NodeNotRunning as exc:
            raise NodeApiError(str(exc).replace("the node's API", "the node")) from exc
        except ApiError as exc:
            if exc.status == 404:
                return None
            kind = _ERRORS.get(exc.code)
            if kind is not None:
                raise kind(str(exc)) from None
            raise NodeApiError(f"node refused {method} {path}: {exc.code}: {exc}") from None

    # --- ChainClient ----------------------------------------------------------------------

    @property
    def chain_id(self) -> bytes:
        return self.params.chain_id

    @property
    def storage_period_blocks(self) -> int:
        return self.params.storage_period_blocks

    async def check_network(self) -> None:
        """That the node answers, and runs this client's network (an agent signing for one
        network against another's node would only see its events refused)."""
        status = await self._request("GET", "/status")
        theirs = (status or {}).get("network")
        if theirs != self.params.name:
            raise NodeApiError(f"the node at {self.base} runs {theirs!r}, not {self.params.name!r}")

    async def tip_height(self) -> int:
        return int((await self._request("GET", "/tip"))["height"])

    async def wait_for_block(self, after: int, timeout: float) -> int:
        """Long-poll ``/tip?after=H&wait=S`` where the server supports it; a server that
        answers at once is polled every :data:`POLL_SECONDS` instead."""
        if after < 0:
            return await self.tip_height()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            wait = min(MAX_WAIT, max(0.0, deadline - loop.time()))
            data = await self._request("GET", f"/tip?after={after}&wait={wait:.3f}")
            height = int(data["height"])
            remaining = deadline - loop.time()
            if height > after or remaining <= 0:
                return height
            await asyncio.sleep(min(POLL_SECONDS, remaining))

    async def submit(self, event: SignedEvent) -> bytes:
        result = await self._request("POST", "/events", data=event.raw, auth=True)
        return bytes.fromhex(str(result["id"]))

    async def _account(self, p: Principal) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._request("GET", f"/global/principals/{p}")
        return found

    async def next_nonce(self, principal: Principal) -> int:
        """The node's ``next_nonce``, which counts pending events. A signer with no record
        yet (a new host's first ``Announce`` still in the mempool) has none: its pending
        events, which start at nonce 0, are counted from ``/mempool?signer=`` instead."""
        data = await self._account(principal)
        if data is not None:
            return int(data.get("next_nonce", data["nonce"]))
        pending = await self._request("GET", f"/mempool?signer={principal}&limit=1")
        return int((pending or {}).get("matching", 0))

    async def principal(self, p: Principal) -> AccountInfo | None:
        data = await self._account(p)
        return AccountInfo.from_json(data) if data is not None else None

    async def fragments(self, path: str) -> dict[int, list[Holder]]:
        data = await self._request("GET", "/global/fragments/" + quote(path.lstrip("/")))
        return holders_from_json(data) if data is not None else {}

    async def contract(self, cid: bytes) -> ContractInfo | None:
        data = await self._request("GET", f"/contracts/{cid.hex()}")
        return ContractInfo.from_json(data) if data is not None else None

    async def _contracts(self, query: str) -> list[ContractInfo]:
        data = await self._request("GET", f"/contracts?{query}")
        return [ContractInfo.from_json(c) for c in (data or {}).get("contracts", [])]

    async def contracts_by_owner(self, owner: Principal) -> list[ContractInfo]:
        return await self._contracts(f"owner={owner}")

    async def contracts_by_host(self, host: Principal) -> list[ContractInfo]:
        return await self._contracts(f"host={host}")

    async def block_events(self, height: int) -> list[SignedEvent]:
        raw = await self._request("GET", f"/blocks/{height}/raw", raw=True)
        if raw is None:
            return []
        return [e for e in Block.decode(raw).events if isinstance(e, SignedEvent)]

    async def block_hash(self, height: int) -> bytes | None:
        data = await self._request("GET", f"/headers?start={height}&count=1")
        headers = (data or {}).get("headers", [])
        if not headers or int(headers[0]["height"]) != height:
            return None
        return hash_from_hex(str(headers[0]["hash"]))

    async def event_status(self, eid: bytes) -> str | None:
        data = await self._request("GET", f"/events/{eid.hex()}")
        return str(data["status"]) if data is not None else None

    async def close(self) -> None:
        await self.api.close()
