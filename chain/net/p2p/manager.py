"""The peer manager: connections and the dispatch of peers' messages to the parts that handle them.

Connections. Peers reach us over aiohttp WebSockets on the p2p port (``GET /p2p``); we reach
them the same way. Every connection is a :class:`~chain.net.channel.noise.SecureChannel` (Noise XX,
both sides authenticated), then a ``hello`` each way. One connection per principal: when two
nodes dial each other at once, both keep the connection opened by the smaller principal.
The manager keeps ``target_outbound`` outbound peers, dialling addresses from the address book
(seeds, ``Announce`` events, peer exchange, peers' stated listen addresses). When every inbound
slot is taken, a newcomer may evict a less useful peer (:mod:`chain.net.p2p.eviction`).

Messages. Each decoded message is charged to the peer's rate limits (responses to our own
requests are free), then handed to its handler through one table (:attr:`PeerManager.handlers`):
header sync (:mod:`chain.net.p2p.headersync`), block download (:mod:`chain.net.p2p.download`),
relay of tips and events (:mod:`chain.net.p2p.relay`), and the address and ping messages kept
here. Misbehaviour is priced in one table (:mod:`chain.net.p2p.scores`); at 100 points the peer
is disconnected and its principal and address banned for ``ban_seconds``
(:mod:`chain.net.p2p.bans`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time as _time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from chain.core.aio import stop_tasks
from chain.core.block import Block
from chain.core.errors import BlockcoinError, DecodeError
from chain.core.events import SignedEvent
from chain.core.principal import Principal
from chain.net.channel.errors import ChannelError, FrameTooLarge, HandshakeError, PeerAuthError
from chain.net.channel.noise import SecureChannel
from chain.net.channel.transport import WS_MAX_MSG_SIZE, WebSocketTransport
from chain.net.p2p.addrman import AddressBook, AddrInfo, parse_address
from chain.net.p2p.bans import BanList
from chain.net.p2p.download import BlockDownload
from chain.net.p2p.eviction import Candidate, select_victim
from chain.net.p2p.gate import ConnectionGate, Stage
from chain.net.p2p.headersync import HeaderSync
from chain.net.p2p.messages import (
    MAX_ADDRS,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Addr,
    AddrEntry,
    BlockMsg,
    Events,
    GetAddr,
    GetBlocks,
    GetHeaders,
    Headers,
    Hello,
    Message,
    NotFound,
    Ping,
    Pong,
    decode_message,
    message_name,
)
from chain.net.p2p.peer import Peer
from chain.net.p2p.relay import Relay
from chain.net.p2p.scores import BAN_SCORE, POINTS, Offence, message_cost
from chain.node.core import NodeCore

log = logging.getLogger("blockcoin.p2p")

DIAL_TIMEOUT = 10.0  # seconds for a dialled peer to answer the WebSocket upgrade

AGENT = "blockcoin/0.1"
HELLO_TIMEOUT = 10.0
PING_TIMEOUT = 30.0

Handler = Callable[[Peer, Any], Awaitable[None] | None]


@dataclass
class NetConfig:
    listen: str | None = None
    announce: str | None = None
    seeds: list[tuple[Principal | None, str]] = field(default_factory=list)
    target_outbound: int = 8
    max_inbound: int = 64
    handshake_timeout: float = 10.0  # TCP accept to Noise handshake done
    discover: bool = True
    ban_seconds: float = 600.0
    ban_file: Path | None = None  # where bans outlive a restart
    stall_timeout: float = 5.0
    window: int = 1024
    max_inflight: int = 128
    request_batch: int = 32
    ping_interval: float = 30.0
    max_message: int = 3 << 20
    msg_rate: float = 500.0
    byte_rate: float = 4 << 20


class PeerManager:
    def __init__(self, core: NodeCore, config: NetConfig) -> None:
        self.core = core
        self.config = config
        self.params = core.params
        self.chain = core.chain
        self.tree = core.tree
        self.peers: dict[Principal, Peer] = {}
        self.addrman = AddressBook()
        self.bans = BanList(config.ban_seconds, config.ban_file)
        self.gate: ConnectionGate | None = None  # the p2p port's, set by whoever serves it
        self.dialing: set[str] = set()
        self.self_addresses: set[str] = set()
        self.stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._progress_at = 0.0
        self._progress_height = self.chain.tip.height
        self._sync_logged = False
        self.counters: Counter[str] = Counter()
        self.msgs_in: Counter[str] = Counter()
        self.headers = HeaderSync(self)
        self.download = BlockDownload(self)
        self.relay = Relay(self)
        self.handlers: dict[type[Message], Handler] = {
            BlockMsg: self.download.on_block_msg,
            Headers: self.headers.on_headers,
            GetBlocks: self.download.serve,
            GetHeaders: self.headers.serve,
            Events: self.relay.on_events,
            NotFound: self.download.on_not_found,
            Ping: self._on_ping,
            Pong: self._on_pong,
            GetAddr: self._on_getaddr,
            Addr: self._on_addr,
            Hello: self._on_hello_again,
        }
        core.block_listeners.append(self.relay.on_block)
        core.event_listeners.append(self.relay.on_event)

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def listen_address(self) -> str:
        return self.config.announce or self._public_listen() or ""

    def _public_listen(self) -> str | None:
        listen = self.config.listen
        if not listen:
            return None
        host, port = parse_address(listen, allow_zero=True)
        return None if host in ("0.0.0.0", "::", "") or port == 0 else listen

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        if self.config.listen:
            self.self_addresses.add(self.config.listen)
        if self.config.announce:
            self.self_addresses.add(self.config.announce)
        for principal, address in self.config.seeds:
            self.addrman.add(address, principal, "seed")
        if self.config.discover:
            for principal, address in await self.core.run(self._announced_addresses):
                self.addrman.add(address, principal, "announce")
        self.spawn(self._maintain())

    async def stop(self) -> None:
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(p.aclose("node stopping") for p in list(self.peers.values())),
                             return_exceptions=True)
        await stop_tasks(*self._tasks)
        if self._session is not None:
            await self._session.close()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _announced_addresses(self) -> list[tuple[Principal, str]]:
        """(principal, address) of every account with a published address (chain thread)."""
        return self.chain.tree.announced(5000)

    # --- connections -------------------------------------------------------------------

    async def handle_inbound(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler of ``GET /p2p``."""
        ws = web.WebSocketResponse(max_msg_size=WS_MAX_MSG_SIZE, heartbeat=None)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        address = f"{peername[0]}:{peername[1]}" if peername else "?"
        if self.stopping:
            raise web.HTTPServiceUnavailable(text="stopping")
        if peername and self.bans.ip_banned(str(peername[0])):
            self.counters["banned_refused"] += 1
            raise web.HTTPForbidden(text="banned")
        await ws.prepare(request)
        try:
            channel = await SecureChannel.accept(
                WebSocketTransport(ws), self.core.key, self.params.chain_id,
                max_message=self.config.max_message, timeout=self.config.handshake_timeout)
        except HandshakeError as exc:
            self.counters["handshake_failures"] += 1
            log.info("inbound handshake from %s failed: %s", address, exc)
            return ws
        if self.gate is not None:
            self.gate.set_stage(request.transport, Stage.ACTIVE)
        await self._run_peer(Peer(channel, True, address, self.config.msg_rate,
                                  self.config.byte_rate))
        return ws

    def connect(self, address: str, principal: Principal | None = None) -> None:
        """Remember ``address`` as a seed and dial it now (``POST /peers``)."""
        info = self.addrman.add(address, principal, "seed")
        if info is not None:
            info.failures = 0
            info.last_attempt = 0.0
            self._dial_more()

    async def _dial(self, info: AddrInfo) -> None:
        address = info.address
        self.dialing.add(address)
        self.addrman.attempt(address, _time.time())
        try:
            host, port = parse_address(address)
            url_host = f"[{host}]" if ":" in host else host
            assert self._session is not None
            try:
                # bounded: a peer that takes the connection and never answers the upgrade would
                # otherwise keep this address "dialing", never to be tried again
                async with asyncio.timeout(DIAL_TIMEOUT):
                    ws = await self._session.ws_connect(
                        f"http://{url_host}:{port}/p2p", max_msg_size=WS_MAX_MSG_SIZE,
                        timeout=aiohttp.ClientWSTimeout(ws_close=2.0), heartbeat=None,
                        autoping=True)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                self.addrman.failure(address)
                log.debug("cannot reach %s: %s", address, exc)
                return
            try:
                channel = await SecureChannel.initiate(
                    WebSocketTransport(ws), self.core.key, self.params.chain_id, info.principal,
                    max_message=self.config.max_message)
            except PeerAuthError as exc:
                self.addrman.failure(address)
                self.counters["handshake_failures"] += 1
                self.bans.ban(None, address, f"wrong key: {exc}")
                self.counters["bans"] += 1
                log.warning("banned %s: %s", address, exc)
                return
            except HandshakeError as exc:
                self.addrman.failure(address)
                self.counters["handshake_failures"] += 1
                log.info("handshake with %s failed: %s", address, exc)
                return
            self.addrman.success(address, channel.remote_principal, _time.time())
            await self._run_peer(Peer(channel, False, address, self.config.msg_rate,
                                      self.config.byte_rate))
        finally:
            self.dialing.discard(address)

    def _dial_more(self) -> None:
        if self.stopping:
            return
        outbound = sum(1 for p in self.peers.values() if not p.inbound)
        room = self.config.target_outbound - outbound - len(self.dialing)
        if room <= 0:
            return
        connected = {p.address for p in self.peers.values()}
        connected |= {p.hello.listen for p in self.peers.values() if p.hello and p.hello.listen}
        exclude = connected | self.dialing | self.self_addresses
        principals = set(self.peers) | {self.core.principal}
        for info in self.addrman.candidates(_time.time(), exclude):
            if room <= 0:
                break
            if info.principal in principals or self.bans.is_banned(info.principal, info.address):
                continue
            if not self.config.discover and info.source != "seed":
                continue
            room -= 1
            self.spawn(self._dial(info))

    async def _run_peer(self, peer: Peer) -> None:
        if peer.principal == self.core.principal:
            self.self_addresses.add(peer.address)
            await peer.aclose("connected to ourselves")
            return
        if self.bans.is_banned(peer.principal, None if peer.inbound else peer.address,
                               peer.host if peer.inbound else None):
            self.counters["banned_refused"] += 1
            await peer.aclose("banned")
            return
        peer.start()
        hello = self._hello()
        peer.told_work = hello.best_work
        peer.send(hello)
        try:
            try:
                async with asyncio.timeout(HELLO_TIMEOUT):
                    data = await peer.recv()
                msg = decode_message(data)
            except TimeoutError:
                await peer.aclose("no hello")
                return
            except DecodeError as exc:
                self.misbehave(peer, Offence.GARBAGE, f"garbage instead of hello: {exc}")
                return
            if not isinstance(msg, Hello):
                self.misbehave(peer, Offence.OUT_OF_ORDER, f"{message_name(msg)} before hello")
                return
            if not self._check_hello(peer, msg):
                return
            if not self._register(peer):
                await peer.aclose("duplicate connection")
                return
            try:
                self._after_hello(peer)
                await self._read_loop(peer)
            finally:
                self._unregister(peer)
        except ChannelError as exc:
            if isinstance(exc, FrameTooLarge):
                self.misbehave(peer, Offence.OVERSIZED, f"oversized message: {exc}")
            peer.close_soon(str(exc))
        finally:
            await peer.aclose(peer.close_reason or "done")
            if peer.close_reason and not self.stopping:
                log.info("disconnected %s: %s", peer.label, peer.close_reason)

    def _hello(self) -> Hello:
        tip = self.chain.tip
        return Hello(PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, self.params.chain_id,
                     self.params.genesis_hash, self.core.principal, tip.height, tip.work,
                     tip.hash, self.listen_address, AGENT, int(_time.time()))

    def _check_hello(self, peer: Peer, hello: Hello) -> bool:
        if hello.principal != peer.principal:
            self.misbehave(peer, Offence.FALSE_HELLO,
                           "hello names another principal than the channel")
            return False
        if hello.chain_id != self.params.chain_id or hello.genesis != self.params.genesis_hash:
            peer.close_soon("different network or genesis")
            return False
        version = min(PROTOCOL_VERSION, hello.version)
        if version < max(MIN_PROTOCOL_VERSION, hello.min_version):
            peer.close_soon(f"no common protocol version (peer speaks {hello.min_version}.."
                            f"{hello.version})")
            return False
        peer.version = version
        peer.hello = hello
        peer.claimed_height = hello.best_height
        peer.claimed_work = hello.best_work
        peer.announced = (hello.best_work, hello.best_hash)
        return True

    def _register(self, peer: Peer) -> bool:
        existing = self.peers.get(peer.principal)
        if existing is not None and not existing.closed:
            if existing.inbound == peer.inbound:
                return False
            # Crossed dials: keep the connection whose dialler has the smaller principal.
            me, them = self.core.principal.digest, peer.principal.digest
            new_dialler = them if peer.inbound else me
            if new_dialler != min(me, them):
                return False
            existing.close_soon("replaced by a crossed connection")
            self._unregister(existing)
        if peer.inbound and not self._make_inbound_room():
            self.counters["inbound_refused"] += 1
            return False
        self.peers[peer.principal] = peer
        self.counters["connections"] += 1
        log.info("connected %s %s (height %d)", "from" if peer.inbound else "to", peer.label,
                 peer.claimed_height)
        return True

    def _make_inbound_room(self) -> bool:
        """Whether an inbound slot is free, evicting a less useful inbound peer if needed."""
        inbound = [p for p in self.peers.values() if p.inbound and not p.closed]
        if len(inbound) < self.config.max_inbound:
            return True
        victim = select_victim([
            Candidate(p.principal, p.host, p.connected_at, p.rtt, p.useful_block_at,
                      p.useful_event_at) for p in inbound])
        if victim is None:
            return False
        evicted = next(p for p in inbound if p.principal == victim)
        self.counters["evictions"] += 1
        log.info("evicting %s to make room for a new inbound peer", evicted.label)
        evicted.close_soon("evicted for a new inbound peer")
        self._unregister(evicted)
        return True

    def _unregister(self, peer: Peer) -> None:
        if self.peers.get(peer.principal) is peer:
            del self.peers[peer.principal]
        self.download.release(peer)
        self.download.schedule()

    def _after_hello(self, peer: Peer) -> None:
        hello = peer.hello
        assert hello is not None
        if hello.listen and self.config.discover:
            self.addrman.add(hello.listen, peer.principal, "hello")
        self.headers.on_hello(peer)
        if not peer.inbound and self.config.discover:
            peer.send(GetAddr())
        self.relay.greet(peer)
        self.download.schedule()

    # --- misbehaviour ------------------------------------------------------------------

    def misbehave(self, peer: Peer, offence: Offence, reason: str, count: int = 1) -> None:
        """Charge ``offence`` (``count`` times) to ``peer``; ban it at :data:`BAN_SCORE`."""
        self.counters["misbehaviour"] += 1
        points = POINTS[offence] * count
        score = peer.add_score(points)
        log.info("misbehaviour by %s (+%g = %.0f): %s", peer.label, points, score, reason)
        if score >= BAN_SCORE:
            self.bans.ban(peer.principal, None if peer.inbound else peer.address, reason,
                          ip=peer.host if peer.inbound else None)
            self.counters["bans"] += 1
            log.warning("banned %s for %gs: %s", peer.label, self.bans.seconds, reason)
            peer.close_soon(f"banned: {reason}")

    # --- reading -----------------------------------------------------------------------

    def _solicited(self, peer: Peer, msg: Message) -> bool:
        """Responses to our own requests are not charged to the peer's rate limits."""
        if isinstance(msg, BlockMsg):
            return self.download.solicited(peer, msg)
        return isinstance(msg, Headers) and peer.headers_requested_at is not None

    async def _read_loop(self, peer: Peer) -> None:
        while not peer.closed:
            data = await peer.recv()
            try:
                msg = decode_message(data)
            except DecodeError as exc:
                self.misbehave(peer, Offence.GARBAGE, f"garbage message: {exc}")
                return
            name = message_name(msg)
            self.msgs_in[name] += 1
            if not self._solicited(peer, msg) and not peer.charge(len(data), message_cost(msg)):
                self.misbehave(peer, Offence.FLOOD, "rate limit exceeded")
                return
            try:
                result = self.handlers[type(msg)](peer, msg)
                if inspect.isawaitable(result):
                    await result
            except ChannelError:
                raise
            except BlockcoinError as exc:
                self.misbehave(peer, Offence.BAD_MESSAGE, f"{name}: {exc}")
            except Exception as exc:  # our bug, not the peer's fault: drop it, keep running
                log.exception("handling %s from %s failed", name, peer.label)
                peer.close_soon(f"internal error: {type(exc).__name__}")
                return

    def _on_ping(self, peer: Peer, msg: Ping) -> None:
        peer.send(Pong(msg.nonce))

    def _on_pong(self, peer: Peer, msg: Pong) -> None:
        if peer.ping_nonce is not None and msg.nonce == peer.ping_nonce:
            peer.rtt = _time.monotonic() - peer.ping_sent
            peer.ping_nonce = None

    def _on_hello_again(self, peer: Peer, msg: Hello) -> None:
        self.misbehave(peer, Offence.SECOND_HELLO, "second hello")

    # --- what the node, the miner and the API ask of the network ------------------------

    async def submit_block(self, block: Block) -> bool:
        """Accept a block made here (the miner, the API) and announce it."""
        outcomes = await self.core.accept_blocks([block])
        ok = bool(outcomes) and outcomes[-1].error is None
        if not ok and outcomes:
            log.warning("own block %s refused: %s", block.hash[::-1].hex(), outcomes[-1].error)
        return ok

    async def submit_events(self, events: list[SignedEvent]) -> list[
            tuple[SignedEvent, bytes | None, BlockcoinError | None]]:
        return await self.core.add_events(events, source=None)

    @property
    def downloading(self) -> bool:
        return self.download.downloading

    # --- addresses ---------------------------------------------------------------------

    def _addr_entries(self, peer: Peer) -> list[AddrEntry]:
        out = [AddrEntry(i.principal, i.address, i.last_seen)
               for i in self.addrman.known(MAX_ADDRS - 1)
               if i.principal is not None and i.principal != peer.principal]
        if self.listen_address:
            out.append(AddrEntry(self.core.principal, self.listen_address, int(_time.time())))
        return out[:MAX_ADDRS]

    def _on_getaddr(self, peer: Peer, msg: GetAddr) -> None:
        if not peer.getaddr_answered:
            peer.getaddr_answered = True
            peer.send(Addr(self._addr_entries(peer)))

    def _on_addr(self, peer: Peer, msg: Addr) -> None:
        if not self.config.discover:
            return
        now = int(_time.time())
        for e in msg.entries:
            if e.principal == self.core.principal or self.bans.is_banned(e.principal, e.address):
                continue
            self.addrman.add(e.address, e.principal, "peer", min(e.last_seen, now))
        self._dial_more()

    # --- maintenance -------------------------------------------------------------------

    async def _maintain(self) -> None:
        while not self.stopping:
            try:
                self._tick()
            except Exception:
                log.exception("maintenance failed")
            await asyncio.sleep(0.5)

    def _tick(self) -> None:
        now = _time.monotonic()
        for peer in list(self.peers.values()):
            if peer.closed:
                continue
            if peer.ping_nonce is not None and now - peer.ping_sent > PING_TIMEOUT:
                peer.close_soon("ping timeout")
                continue
            if peer.ping_nonce is None and now - peer.ping_sent > self.config.ping_interval:
                peer.ping_nonce = int.from_bytes(os.urandom(8), "big")
                peer.ping_sent = now
                peer.send(Ping(peer.ping_nonce))
            if self.download.check_stall(peer, now):
                self.headers.tick(peer, now)
        self.headers.retry_offers()
        self._dial_more()
        self.download.tick(now)
        self.progress()

    def progress(self) -> None:
        now = _time.monotonic()
        tip, best = self.chain.tip.height, self.tree.best.height
        if best > tip + 1:
            if now - self._progress_at >= 2.0:
                rate = (tip - self._progress_height) / (now - self._progress_at) if (
                    self._progress_at) else 0.0
                log.info("sync: block %d of %d (%.1f%%), %.0f blocks/s, %d peers", tip, best,
                         100.0 * tip / max(best, 1), rate, len(self.peers))
                self._progress_at = now
                self._progress_height = tip
                self._sync_logged = True
        elif self._sync_logged:
            self._sync_logged = False
            log.info("synced: tip %d", tip)

    # --- views -------------------------------------------------------------------------

    def peers_json(self) -> list[dict[str, object]]:
        return [p.to_json() for p in self.peers.values()]

    @property
    def outbound(self) -> int:
        return sum(1 for p in self.peers.values() if not p.inbound)
