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
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

from chain.core.aio import stop_tasks
from chain.core.block import Block
from chain.core.errors import BlockcoinError, DecodeError
from chain.core.events import SignedEvent, decode_event
from chain.core.header import hash_hex
from chain.core.params import REGTEST, NetworkParams
from chain.core.paths import check_path
from chain.core.principal import Principal
from chain.node.local import LocalNode, init_datadir
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

    @property
    def params(self) -> NetworkParams:
        return self.node.params

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
        data = self.node.chain.tree.principal_json(p)
        return AccountInfo.from_json(data) if data is not None else None

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

    async def block_hash(self, height: int) -> bytes | None:
        return self.node.chain.best_chain_hash(height)

    async def event_status(self, eid: bytes) -> str | None:
        if eid in self.node.mempool:
            return "pending"
        return "confirmed" if self.node.chain.store.event_location(eid) is not None else None

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

    def start_mining(self, interval: float, recipient: Principal | None = None,
                     ready: Callable[[], bool] | None = None, max_wait: float = 5.0) -> None:
        """Mine one block every ``interval`` seconds in the background, until stopped. With
        ``ready``, each block also waits (at most ``max_wait`` seconds) until ``ready()`` holds:
        tests use it to let agents act on a tip before the next block, as the minutes between
        real blocks let them, instead of racing a fast miner on a busy machine."""
        if self._miner is not None:
            return

        async def loop() -> None:
            loop_time = asyncio.get_running_loop().time
            while True:
                await asyncio.sleep(interval)
                deadline = loop_time() + max_wait
                while ready is not None and not ready() and loop_time() < deadline:
                    await asyncio.sleep(0.01)
                self.node.mine_block(recipient)

        self._miner = asyncio.get_running_loop().create_task(loop())

    async def stop_mining(self) -> None:
        task, self._miner = self._miner, None
        await stop_tasks(task)


# --- the same chain over HTTP, for agents in other processes --------------------------------------


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def api_app(chain: InProcessChain, token: str) -> web.Application:
    """The subset of the node's HTTP API that :class:`~storage_market.httpclient.HttpChain` uses,
    in the node's own shapes, served from this process's chain.

    It lets a benchmark or a demo run host agents as separate processes (as they are deployed)
    around one in-process chain. ``GET /tip?after=H&wait=S`` additionally long-polls until the
    tip passes ``H`` (at most ``S`` seconds), so agents see a new block at once; a node that
    ignores the parameters simply answers at once and the client falls back to polling.
    """
    node = chain.node
    tree = node.chain.tree

    async def tip(request: web.Request) -> web.Response:
        after, wait = request.query.get("after"), request.query.get("wait")
        if after is not None and after.isdigit() and wait is not None:
            await chain.wait_for_block(int(after), min(float(wait), 30.0))
        return web.json_response({"height": node.chain.tip.height})

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"network": node.params.name, "height": node.chain.tip.height})

    async def submit(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return _error(401, "unauthorized", "a token is required")
        try:
            ev = decode_event(await request.read())
            if not isinstance(ev, SignedEvent):
                raise DecodeError("a coinbase cannot be submitted")
            eid = node.submit(ev)
        except BlockcoinError as exc:
            return _error(400, exc.code, str(exc))
        return web.json_response({"id": eid.hex(), "status": "pending"}, status=202)

    async def principal(request: web.Request) -> web.Response:
        try:
            p = Principal.parse(request.match_info["principal"])
        except BlockcoinError as exc:
            return _error(400, exc.code, str(exc))
        data = tree.principal_json(p)
        if data is None:
            return _error(404, "not-found", f"principal {p} has no record")
        data["next_nonce"] = await chain.next_nonce(p)
        return web.json_response(data)

    async def fragments(request: web.Request) -> web.Response:
        path = "/" + unquote(request.match_info["path"])
        try:
            check_path(path)
        except BlockcoinError as exc:
            return _error(400, "bad-path", str(exc))
        held = tree.fragments(path)
        return web.json_response({"path": path,
                                  "fragments": {str(i): h for i, h in sorted(held.items())}})

    async def contract(request: web.Request) -> web.Response:
        try:
            found = tree.contract(bytes.fromhex(request.match_info["id"]))
        except ValueError:
            found = None
        if found is None:
            return _error(404, "not-found", "no such contract")
        return web.json_response(found.to_json())

    async def contracts(request: web.Request) -> web.Response:
        try:
            if "owner" in request.query:
                found = tree.contracts_by_owner(Principal.parse(request.query["owner"]))
            else:
                found = tree.contracts_by_host(Principal.parse(request.query.get("host", "")))
        except BlockcoinError as exc:
            return _error(400, exc.code, str(exc))
        return web.json_response({"contracts": [c.to_json() for c in found]})

    async def block_raw(request: web.Request) -> web.Response:
        ident = request.match_info["ident"]
        h = node.chain.best_chain_hash(int(ident)) if ident.isdigit() else None
        raw = node.chain.store.get_block_bytes(h) if h is not None else None
        if raw is None:
            return _error(404, "not-found", f"no block {ident}")
        return web.Response(body=raw, content_type="application/octet-stream")

    async def headers(request: web.Request) -> web.Response:
        start = request.query.get("start", "")
        found = chain.node.chain.best_chain_hash(int(start)) if start.isdigit() else None
        return web.json_response({"headers": [] if found is None else [
            {"height": int(start), "hash": hash_hex(found)}]})

    async def event(request: web.Request) -> web.Response:
        try:
            status = await chain.event_status(bytes.fromhex(request.match_info["id"]))
        except ValueError:
            status = None
        if status is None:
            return _error(404, "not-found", "no such event")
        return web.json_response({"status": status})

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/tip", tip)
    app.router.add_get("/headers", headers)
    app.router.add_get("/events/{id}", event)
    app.router.add_post("/events", submit)
    app.router.add_get("/global/principals/{principal}", principal)
    app.router.add_get("/global/fragments/{path:.+}", fragments)
    app.router.add_get("/contracts", contracts)
    app.router.add_get("/contracts/{id}", contract)
    app.router.add_get("/blocks/{ident}/raw", block_raw)
    return app


async def serve_api(chain: InProcessChain, token: str, host: str = "127.0.0.1", port: int = 0
                    ) -> tuple[web.AppRunner, str]:
    """Serve :func:`api_app`; the runner (to ``cleanup``) and the base URL."""
    runner = web.AppRunner(api_app(chain, token), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()
    return runner, f"http://{bound[0]}:{bound[1]}"


def write_node_file(datadir: Path, url: str, token: str) -> None:
    """Let ``HttpChain.for_datadir`` find this chain, as it finds a running node."""
    (datadir / "node.json").write_text(json.dumps({"api": url}))
    cookie = datadir / "api.cookie"
    cookie.touch(mode=0o600)
    cookie.write_text(token)
