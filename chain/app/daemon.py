"""The node process: chain, peer-to-peer network, HTTP API and (optionally) a miner.

``blockcoin node`` runs :func:`run_node`. It opens the data directory (taking LevelDB's lock,
so other ``blockcoin`` commands then go through the API), serves peers on ``/p2p`` of the p2p
address and the API on the API address (127.0.0.1 by default), writes ``api.cookie`` (the API
token, mode 0600) and ``node.json`` (where the API is) into the data directory, and removes both
when it stops on SIGINT or SIGTERM.

Mining (``--mine``) runs on its own thread: it builds a template on the chain thread, searches
nonces with the numba miner (:func:`chain.node.mining.mine_header`, ``--threads`` of them), and
hands a solved block to the peer manager, which connects and announces it. The search stops,
within a millisecond, when the tip moves (the next template builds on the new tip) and, at most
once a second, when new events arrive that the next template can include. A hash-rate line is
logged every ten seconds. It pauses while the node is downloading a better chain whose blocks
are arriving, and only then: blocks withheld or refused never stop it. On regtest, where a block
takes a few hashes, it waits ``mine_interval`` seconds between blocks (default: the network's
target spacing).

Both listening ports pass every connection through a :class:`~chain.net.p2p.gate.ConnectionGate`
(caps per address and in total, deadlines until a connection is useful), and the open-file
limit is raised to the hard limit at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import threading
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from chain.api.auth import remove_cookie, write_cookie
from chain.api.server import ApiContext, make_app
from chain.core.aio import until_interrupted
from chain.core.block import Block
from chain.core.errors import BlockcoinError
from chain.core.events import Announce
from chain.core.filemodes import private_umask
from chain.core.params import NetworkParams
from chain.core.principal import Principal
from chain.net.http import node_file
from chain.net.p2p.addrman import parse_address
from chain.net.p2p.gate import ConnectionGate, GatedSite, port_budget, raise_fd_limit
from chain.net.p2p.manager import NetConfig, PeerManager
from chain.node.core import NodeCore
from chain.node.local import LocalNode
from chain.node.mining import mine_header, shared_miner, solve
from chain.node.template import build_template
from chain.node.wallet import DEFAULT_FEE
from storage_market import protocol as proto
from storage_market.jsonstate import read_json, write_json

log = logging.getLogger("blockcoin.node")

TEMPLATE_MAX_AGE = 30.0
TEMPLATE_REFRESH = 1.0  # at most this often, a template takes in newly arrived events
HASHRATE_REPORT = 10.0
ANNOUNCED_FILE = "announced.json"  # the addresses this node published under its wallet
PENDING_TIMEOUT = 10.0  # a connection that has not become useful by then is closed
API_IDLE_TIMEOUT = 15.0  # an API keep-alive connection between requests
P2P_PENDING_SLOTS = 128  # handshakes under way, on top of the inbound peers
P2P_MAX_PER_HOST = 16
API_MAX_CONNECTIONS = 1024
CONSENT_TIMEOUT = 30.0  # a host's answer to an extension asked from the dashboard


@dataclass
class NodeOptions:
    """What a node runs with: its peer-to-peer settings (``net``) and the rest.

    ``net.listen`` left empty means every interface on the network's p2p port; ``net.ban_file``
    left empty means ``DATADIR/bans.log``."""

    net: NetConfig = field(default_factory=NetConfig)
    api: str | None = None
    mine: bool = False
    mine_interval: float | None = None
    verify_threads: int | None = None
    mine_threads: int | None = None
    api_hosts: list[str] = field(default_factory=list)  # Host names the API answers beyond loopback
    ready: Callable[[dict[str, Any]], None] | None = None  # told where the node serves, once


class Miner:
    def __init__(self, daemon: Daemon, interval: float) -> None:
        self.daemon = daemon
        self.interval = interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="miner", daemon=True)
        self.mined = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        d = self.daemon
        core, loop = d.core, d.loop
        chain = core.chain
        threads = d.options.mine_threads
        last_report = _time.monotonic()
        while not self.stop_event.is_set():
            if d.manager.downloading:
                self.stop_event.wait(0.2)
                continue
            try:
                template = core.executor.submit(build_template, chain, core.mempool,
                                                core.principal).result()
            except RuntimeError:  # the chain thread is shutting down
                return
            prev = template.header.prev
            started = _time.monotonic()
            pending = len(core.mempool)

            def should_stop(prev: bytes = prev, started: float = started,
                            pending: int = pending) -> bool:
                age = _time.monotonic() - started
                # a new tip, a stale template, or new events that could pay better
                return (self.stop_event.is_set() or chain.tip.hash != prev
                        or age > TEMPLATE_MAX_AGE
                        or (age > TEMPLATE_REFRESH and len(core.mempool) != pending))

            solved = mine_header(template.header, should_stop, threads)
            now = _time.monotonic()
            if now - last_report >= HASHRATE_REPORT:
                last_report = now
                log.info("mining at %.2f MH/s on %d threads", shared_miner(threads).hashrate / 1e6,
                         shared_miner(threads).threads)
            if solved is None or should_stop():
                continue
            future = asyncio.run_coroutine_threadsafe(
                d.manager.submit_block(Block(solved.header, template.events)), loop)
            try:
                if future.result(timeout=60):
                    self.mined += 1
                    log.info("mined block %d after %d hashes (%.2f MH/s)", chain.tip.height,
                             solved.hashes, solved.hashrate / 1e6)
            except Exception as exc:  # stopping, or a bug: log and go on
                if self.stop_event.is_set():
                    return
                log.warning("mined block not accepted: %s", exc)
            self.stop_event.wait(self.interval)


class Daemon:
    def __init__(self, datadir: Path, params: NetworkParams, options: NodeOptions) -> None:
        self.datadir = datadir
        self.params = params
        self.options = options
        self.stopped = asyncio.Event()
        self._runners: list[web.AppRunner] = []
        self.miner: Miner | None = None
        self.token = ""
        self.api_url = ""
        self.p2p_address = ""
        self._announce_warned = False
        self._yielded = False
        self._tasks: list[asyncio.Task[None]] = []
        self.fd_limit = raise_fd_limit()
        self.gates: list[ConnectionGate] = []

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        opts = self.options
        self.local = LocalNode(self.datadir, self.params, opts.verify_threads)
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        opts, params = self.options, self.params
        self.core = NodeCore(self.local, self.loop)
        config = dataclasses.replace(
            opts.net, listen=opts.net.listen or f"0.0.0.0:{params.p2p_port}",
            ban_file=opts.net.ban_file or self.datadir / "bans.log")
        listen = config.listen
        assert listen is not None
        self.manager = PeerManager(self.core, config)
        self.manager.gate = p2p_gate = ConnectionGate(
            "p2p", port_budget(self.fd_limit, config.max_inbound + P2P_PENDING_SLOTS, 0.3),
            P2P_MAX_PER_HOST, config.handshake_timeout, config.handshake_timeout,
            refuse=self.manager.bans.ip_banned)

        p2p_app = web.Application()
        p2p_app.router.add_get("/p2p", self.manager.handle_inbound)
        host, port = parse_address(listen, allow_zero=True)
        port = await self._serve(p2p_app, host, port, p2p_gate)
        config.listen = f"{host}:{port}"
        self.p2p_address = config.listen

        self.token = write_cookie(self.datadir)
        ctx = ApiContext(self.core, self.manager, self.token, self.datadir, self.mine_now,
                         mining=lambda: self.miner is not None, consent=self.ask_extension)
        api_host, api_port = parse_address(opts.api or f"127.0.0.1:{params.api_port}",
                                           allow_zero=True)
        budget = port_budget(self.fd_limit, API_MAX_CONNECTIONS, 0.5)
        ctx.gate = ConnectionGate("api", budget, budget, PENDING_TIMEOUT, API_IDLE_TIMEOUT)
        ctx.allowed_hosts = frozenset(h.lower() for h in [*opts.api_hosts, api_host])
        api_port = await self._serve(make_app(ctx), api_host, api_port, ctx.gate)
        url_host = f"[{api_host}]" if ":" in api_host else api_host
        self.api_url = f"http://{url_host}:{api_port}"
        await self.manager.start()
        info = self._write_node_file()
        if opts.mine:
            interval = opts.mine_interval
            if interval is None:
                interval = float(params.spacing) if not params.retarget else 0.0
            self.miner = Miner(self, interval)
            self.miner.start()
        self._tasks.append(asyncio.ensure_future(self._housekeeping()))
        tip = self.core.chain.tip
        log.info("node %s on %s: tip %d; p2p %s; api %s%s", self.core.principal, params.name,
                 tip.height, self.p2p_address, self.api_url, "; mining" if opts.mine else "")
        if opts.ready is not None:
            opts.ready({**info, "height": tip.height, "mining": opts.mine})

    async def _serve(self, app: web.Application, host: str, port: int,
                     gate: ConnectionGate) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0,
                               keepalive_timeout=API_IDLE_TIMEOUT)
        await runner.setup()
        self._runners.append(runner)
        site = GatedSite(runner, host, port, gate, reuse_address=True, backlog=512)
        await site.start()
        self.gates.append(gate)
        self._tasks.append(asyncio.ensure_future(gate.run()))
        sockets = getattr(site._server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    def _write_node_file(self) -> dict[str, Any]:
        info: dict[str, Any] = {"pid": os.getpid(), "network": self.params.name, "api": self.api_url,
                "p2p": self.p2p_address, "principal": str(self.core.principal)}
        path = node_file(self.datadir)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)
        return info

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.miner is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.miner.stop)
        if hasattr(self, "manager"):
            await self.manager.stop()
        for runner in reversed(self._runners):
            with contextlib.suppress(Exception):
                await runner.cleanup()
        self._runners.clear()
        if hasattr(self, "core"):
            self.core.close()
        self.local.close()
        if self.token:
            remove_cookie(self.datadir, self.token)
            with contextlib.suppress(OSError):
                info = json.loads(node_file(self.datadir).read_text())
                if info.get("pid") == os.getpid():
                    node_file(self.datadir).unlink()
        self.stopped.set()

    # --- work done for the API ---------------------------------------------------------

    async def ask_extension(self, address: str | None, host: Principal, offer_id: bytes,
                            periods: int) -> bytes:
        """The host's consent to a contract of this node's wallet running ``periods`` periods
        in all (the dashboard's extend), asked over the storage protocol as the owner."""
        channel = await proto.dial(address, self.core.key, self.params.chain_id, host)
        async with channel:
            await proto.send(channel, proto.Extend(offer_id, periods))
            consent = await proto.expect(channel, proto.Consent, CONSENT_TIMEOUT)
        return consent.signature

    async def mine_now(self, count: int, recipient: Principal | None) -> list[Block]:
        core = self.core
        mined: list[Block] = []
        for _ in range(count):
            template = await core.run(build_template, core.chain, core.mempool,
                                      recipient or core.principal)
            header = await core.run(solve, template.header, None, self.options.mine_threads)
            if header is None:
                break
            block = Block(header, template.events)
            if await self.manager.submit_block(block):
                mined.append(block)
        return mined

    # --- periodic ----------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        await asyncio.sleep(1.0)
        while True:
            try:
                await self._maybe_announce()
            except Exception:
                log.exception("announcing our address failed")
            await asyncio.sleep(5.0)

    async def _maybe_announce(self) -> None:
        """Publish our address in /global/principals when it is not there yet or changed."""
        core, manager = self.core, self.manager
        address = manager.listen_address
        if not address or core.syncing:
            return
        me = core.principal
        acct = core.chain.tree.principal(me)
        if acct is not None and acct.address == address and acct.x25519 == core.key.public.x25519:
            return
        try:
            ours = read_json(self.datadir / ANNOUNCED_FILE) or []
        except BlockcoinError:  # damaged: nothing is known to be ours
            ours = []
        if not isinstance(ours, list):
            ours = []
        if acct is not None and acct.address and acct.address not in ours:
            # Another process signing with this wallet (a storage owner agent on this data
            # directory, whose hosts fetch from that address) published it: a principal has one
            # address, and taking it back every few seconds would cut the agent off.
            if not self._yielded:
                self._yielded = True
                log.info("not announcing %s: the wallet's record names %s, published by another "
                         "process with this wallet", address, acct.address)
            return
        # a snapshot: the chain thread may change the pool meanwhile
        for eid in list(core.mempool.by_signer.get(me.digest, {}).values()):
            entry = core.mempool.entries.get(eid)
            if entry is not None and isinstance(entry.event.body, Announce):
                return
        if (acct.balance if acct else 0) < DEFAULT_FEE:
            if not self._announce_warned:
                self._announce_warned = True
                log.info("not announcing %s: the wallet cannot pay the fee", address)
            return
        try:
            await core.submit_own(Announce(core.key.public.x25519, address), DEFAULT_FEE)
        except BlockcoinError as exc:
            log.info("not announcing %s: %s", address, exc)
            return
        write_json(self.datadir / ANNOUNCED_FILE, [*ours[-15:], address])
        log.info("announced our address %s", address)


def run_node(datadir: Path, params: NetworkParams, options: NodeOptions) -> None:
    """Run a node until SIGINT or SIGTERM."""
    private_umask()

    async def main() -> None:
        daemon = Daemon(datadir, params, options)
        await daemon.start()
        try:
            await until_interrupted()
        finally:
            log.info("stopping")
            await daemon.stop()

    asyncio.run(main())
