"""The peer manager: connections, headers-first sync, block download, relay and defence.

Connections. Peers reach us over aiohttp WebSockets on the p2p port (``GET /p2p``); we reach
them the same way. Every connection is a :class:`~chain.net.channel.noise.SecureChannel` (Noise XX,
both sides authenticated), then a ``hello`` each way. One connection per principal: when two
nodes dial each other at once, both keep the connection opened by the smaller principal.
The manager keeps ``target_outbound`` outbound peers, dialling addresses from the address book
(seeds, ``Announce`` events, peer exchange, peers' stated listen addresses).

Sync. Headers first: a peer that claims more work than our best header is asked for headers
with a block locator; headers are checked (proof of work, target, time) into the header tree.
Blocks along the best header chain are then downloaded from every peer that has them, at most
``window`` heights ahead of the first missing block and ``max_inflight`` per peer; blocks that
arrive out of order wait in a buffer and are handed to the chain thread in height order. A peer
that sends nothing for ``stall_timeout`` seconds while holding requests is dropped and its
requests go to others. New blocks are announced by sending the last headers of the new tip.

Defence. Messages above the channel's maximum, garbage, invalid headers or blocks, and floods
past the per-peer rate limits add misbehaviour points (they decay by one per second); at 100
the peer is disconnected and its principal and address banned for ``ban_seconds``
(:mod:`chain.net.p2p.bans`). Only what no honest node does costs points: an honest peer cannot
know our tip or policy, so races (headers that do not connect, a tie with our own block, an
event our tip refuses) are free. Unrequested headers that do not add work are ignored (points
only if the peer claimed a tip with as much work before); requested ones go through a pre-sync
(:mod:`chain.net.p2p.presync`) and are stored only once they show more work than ours. A block
nobody delivers stops being waited for (:mod:`chain.net.p2p.fetchwait`); refused events are
remembered (:mod:`chain.net.p2p.rejects`). When every inbound slot is taken, a newcomer may evict a
less useful peer (:mod:`chain.net.p2p.eviction`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
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
from chain.core.errors import (
    BadSignature,
    BlockcoinError,
    DecodeError,
    EventTooLarge,
    TimeTooNew,
    ValidationError,
)
from chain.core.events import Announce, SignedEvent
from chain.core.header import Header
from chain.core.principal import Principal
from chain.net.channel.errors import ChannelError, FrameTooLarge, HandshakeError, PeerAuthError
from chain.net.channel.noise import SecureChannel
from chain.net.channel.transport import WS_MAX_MSG_SIZE, WebSocketTransport
from chain.net.p2p.addrman import AddressBook, AddrInfo, parse_address
from chain.net.p2p.bans import BanList
from chain.net.p2p.eviction import Candidate, select_victim
from chain.net.p2p.fetchwait import BlockWaits
from chain.net.p2p.gate import ConnectionGate, Stage
from chain.net.p2p.messages import (
    MAX_ADDRS,
    MAX_GETBLOCKS,
    MAX_HEADERS,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    ZERO32,
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
from chain.net.p2p.presync import HeaderPreSync, Phase
from chain.net.p2p.rejects import RecentRejects
from chain.node.core import NodeCore
from chain.node.headers import HeaderNode

log = logging.getLogger("blockcoin.p2p")

AGENT = "blockcoin/0.1"
BAN_SCORE = 100.0
HELLO_TIMEOUT = 10.0
HEADERS_TIMEOUT = 30.0
PING_TIMEOUT = 30.0
ANNOUNCE_DEPTH = 16
MAX_BUFFERED_BYTES = 256 << 20
RESEND_PENALTY = 0.2  # per event a peer sends us again (500 of them: a ban)
DOWNLOAD_QUIET = 10.0  # seconds without a downloaded block after which the miner goes on


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


def _cost(msg: Message) -> float:
    """Rate-limit tokens a message costs: requests we must answer with work cost more."""
    if isinstance(msg, GetHeaders):
        return 10.0
    if isinstance(msg, GetBlocks):
        return 1.0 + len(msg.hashes) / 16
    if isinstance(msg, (Events, Addr)):
        return 1.0 + len(msg.events if isinstance(msg, Events) else msg.entries) / 50
    return 1.0


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
        self.rejects = RecentRejects()
        self.waits = BlockWaits(config.stall_timeout)
        self.gate: ConnectionGate | None = None  # the p2p port's, set by whoever serves it
        self.last_block_in = 0.0
        self.dialing: set[str] = set()
        self.self_addresses: set[str] = set()
        self.inflight: dict[bytes, Peer] = {}
        self.received: dict[bytes, tuple[Block, Peer]] = {}
        self.received_bytes = 0
        self.processing: set[bytes] = set()
        self._draining = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        self._announced_tip: bytes = self.chain.tip.hash
        self._announce_pending = False
        self._progress_at = 0.0
        self._progress_height = self.chain.tip.height
        self._sync_logged = False
        self.counters: Counter[str] = Counter()
        self.msgs_in: Counter[str] = Counter()
        self.on_misbehaviour: list[Callable[[Peer, str], None]] = []
        core.block_listeners.append(self._on_block)
        core.event_listeners.append(self._on_event)

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
        self._spawn(self._maintain())

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(p.aclose("node stopping") for p in list(self.peers.values())),
                             return_exceptions=True)
        await stop_tasks(*self._tasks)
        if self._session is not None:
            await self._session.close()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
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
        if self._stopping:
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
        if self._stopping:
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
            self._spawn(self._dial(info))

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
                self._misbehave(peer, BAN_SCORE, f"garbage instead of hello: {exc}")
                return
            if not isinstance(msg, Hello):
                self._misbehave(peer, BAN_SCORE, f"{message_name(msg)} before hello")
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
                self._misbehave(peer, BAN_SCORE, f"oversized message: {exc}")
            peer.close_soon(str(exc))
        finally:
            await peer.aclose(peer.close_reason or "done")
            if peer.close_reason and not self._stopping:
                log.info("disconnected %s: %s", peer.label, peer.close_reason)

    def _hello(self) -> Hello:
        tip = self.chain.tip
        return Hello(PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, self.params.chain_id,
                     self.params.genesis_hash, self.core.principal, tip.height, tip.work,
                     tip.hash, self.listen_address, AGENT, int(_time.time()))

    def _check_hello(self, peer: Peer, hello: Hello) -> bool:
        if hello.principal != peer.principal:
            self._misbehave(peer, BAN_SCORE, "hello names another principal than the channel")
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
        self._release(peer)
        self._schedule()

    def _release(self, peer: Peer) -> None:
        for h in list(peer.inflight):
            if self.inflight.get(h) is peer:
                del self.inflight[h]
        peer.inflight.clear()

    def _after_hello(self, peer: Peer) -> None:
        hello = peer.hello
        assert hello is not None
        if hello.listen and self.config.discover:
            self.addrman.add(hello.listen, peer.principal, "hello")
        known = self.tree.get(hello.best_hash)
        if known is not None and not known.invalid:
            peer.best = known
            self._offered(known)
        if hello.best_work > self.tree.best.work:
            self._request_headers(peer)
        if not peer.inbound and self.config.discover:
            peer.send(GetAddr())
        events = [e.event for e in sorted(self.core.mempool.entries.values())][:500]
        for ev in events:
            peer.know_event(self.core.event_id(ev))
        if events:
            peer.send(Events(events))
        self._schedule()

    # --- misbehaviour ------------------------------------------------------------------

    def _misbehave(self, peer: Peer, points: float, reason: str) -> None:
        self.counters["misbehaviour"] += 1
        score = peer.add_score(points)
        log.info("misbehaviour by %s (+%g = %.0f): %s", peer.label, points, score, reason)
        for hook in list(self.on_misbehaviour):
            hook(peer, reason)
        if score >= BAN_SCORE:
            self.bans.ban(peer.principal, None if peer.inbound else peer.address, reason,
                          ip=peer.host if peer.inbound else None)
            self.counters["bans"] += 1
            log.warning("banned %s for %gs: %s", peer.label, self.bans.seconds, reason)
            peer.close_soon(f"banned: {reason}")

    # --- reading -----------------------------------------------------------------------

    async def _read_loop(self, peer: Peer) -> None:
        while not peer.closed:
            data = await peer.recv()
            try:
                msg = decode_message(data)
            except DecodeError as exc:
                self._misbehave(peer, BAN_SCORE, f"garbage message: {exc}")
                return
            name = message_name(msg)
            self.msgs_in[name] += 1
            solicited = (isinstance(msg, BlockMsg) and msg.block is not None
                         and msg.block.hash in peer.inflight) or (
                isinstance(msg, Headers) and peer.headers_requested_at is not None)
            if not solicited and not peer.charge(len(data), _cost(msg)):
                self._misbehave(peer, BAN_SCORE, "rate limit exceeded")
                return
            try:
                await self._dispatch(peer, msg, len(data))
            except ChannelError:
                raise
            except BlockcoinError as exc:
                self._misbehave(peer, 20, f"{name}: {exc}")
            except Exception as exc:  # our bug, not the peer's fault: drop it, keep running
                log.exception("handling %s from %s failed", name, peer.label)
                peer.close_soon(f"internal error: {type(exc).__name__}")
                return

    async def _dispatch(self, peer: Peer, msg: Message, size: int) -> None:
        if isinstance(msg, BlockMsg):
            self._on_block_msg(peer, msg, size)
        elif isinstance(msg, Headers):
            self._on_headers(peer, msg.headers)
        elif isinstance(msg, GetBlocks):
            await self._serve_blocks(peer, msg.hashes)
        elif isinstance(msg, GetHeaders):
            self._serve_headers(peer, msg)
        elif isinstance(msg, Events):
            await self._on_events(peer, msg.events)
        elif isinstance(msg, Ping):
            peer.send(Pong(msg.nonce))
        elif isinstance(msg, Pong):
            if peer.ping_nonce is not None and msg.nonce == peer.ping_nonce:
                peer.rtt = _time.monotonic() - peer.ping_sent
                peer.ping_nonce = None
        elif isinstance(msg, NotFound):
            for h in msg.hashes:
                if peer.inflight.pop(h, None) is not None:
                    self.waits.failed(h, _time.monotonic())
                    if self.inflight.get(h) is peer:
                        del self.inflight[h]
            self._schedule()
        elif isinstance(msg, GetAddr):
            if not peer.getaddr_answered:
                peer.getaddr_answered = True
                peer.send(Addr(self._addr_entries(peer)))
        elif isinstance(msg, Addr):
            self._on_addr(peer, msg.entries)
        elif isinstance(msg, Hello):
            self._misbehave(peer, 20, "second hello")

    # --- headers -----------------------------------------------------------------------

    def _request_headers(self, peer: Peer, start: HeaderNode | None = None) -> None:
        peer.headers_requested_at = _time.monotonic()
        peer.send(GetHeaders(self.tree.locator(start)))

    def _update_peer_best(self, peer: Peer, node: HeaderNode) -> None:
        if peer.best is None or node.work > peer.best.work:
            peer.best = node
            peer.claimed_height = max(peer.claimed_height, node.height)

    def _on_headers(self, peer: Peer, headers: list[Header]) -> None:
        # An announcement may cross our request: "solicited" only decides how forgiving to be
        # with a batch that adds no work; any full batch is followed by a request for more.
        solicited = peer.headers_requested_at is not None
        peer.headers_requested_at = None
        if not headers:
            return
        for i in range(1, len(headers)):
            if headers[i].prev != headers[i - 1].hash:
                self._misbehave(peer, BAN_SCORE, "headers that are not a chain")
                return
        if peer.presync is not None and solicited and peer.presync.follows(headers):
            self._on_presync_headers(peer, peer.presync, headers)
            return
        last_known = self.tree.get(headers[-1].hash)
        if last_known is not None:
            if last_known.invalid:
                self._misbehave(peer, BAN_SCORE, "headers of a block known to be invalid")
                return
            self._update_peer_best(peer, last_known)
            self._offered(last_known)
            if len(headers) == MAX_HEADERS:
                self._request_headers(peer, last_known)
            self._schedule()
            return
        work = self.tree.work_after(headers)
        if work is None:
            # Unknown parent: the peer built on a header we did not keep (one we ignored as
            # low-work, say). Ask with a locator, at no cost to it, as Bitcoin Core does: it
            # cannot know which of its headers we kept.
            self._request_headers(peer)
            return
        if work <= self.tree.best.work:
            self.counters["low_work_headers"] += 1
            if not solicited:
                self._on_low_work(peer, headers, work)
                return
            fork = self.tree.get(headers[0].prev)
            assert fork is not None
            peer.presync = HeaderPreSync(self.tree, fork)
            self._on_presync_headers(peer, peer.presync, headers)
            return
        self._store_headers(peer, headers)

    def _on_low_work(self, peer: Peer, headers: list[Header], work: int) -> None:
        """Unasked headers that do not beat our best header are ignored, not stored.

        They cost an honest peer nothing: it announces its new tip without knowing ours (a tie
        with a block of ours, a fork after a partition, a better header we hold that it lacks).
        But an honest node announces to a peer only tips with more work than every tip it told
        that peer about (see ``_announce``), so an announcement with no more work than the
        peer's last claim is a lie about its work and costs points: cheap branches sent one
        after another are cut off. A full batch may be the answer to a request of ours that an
        announcement crossed, so it is only ignored."""
        if len(headers) == MAX_HEADERS:
            return
        tip = headers[-1].hash
        claimed_work, claimed_tip = peer.announced
        if work < claimed_work or (work == claimed_work and tip != claimed_tip):
            self._misbehave(peer, 5, "announced a tip with no more work than it claimed before")
        else:
            peer.announced = (work, tip)

    def _store_headers(self, peer: Peer, headers: list[Header]) -> HeaderNode | None:
        """Check and keep ``headers`` (their first one's parent is known), then ask for more."""
        try:
            last = self.tree.add_headers(headers)
        except TimeTooNew as exc:
            self._misbehave(peer, 20, f"header from the future: {exc}")
            return None
        except ValidationError as exc:
            self._misbehave(peer, BAN_SCORE, f"invalid header: {exc}")
            return None
        self._update_peer_best(peer, last)
        if len(headers) == MAX_HEADERS:
            self._request_headers(peer, last)
        self._schedule()
        return last

    def _on_presync_headers(self, peer: Peer, ps: HeaderPreSync, headers: list[Header]) -> None:
        """Headers of a chain that has not (yet) shown more work than ours."""
        if ps.phase is Phase.REDOWNLOAD:
            # Headers other than the pre-synced ones, or fewer, may come from an honest peer
            # whose best chain changed between the two passes (a reorg): the pre-sync ends at
            # no cost to it and starts again later (``_tick``), as in Bitcoin Core. A liar gains
            # nothing: it had to show more work than ours, and only headers matching what it
            # pre-synced are stored.
            try:
                ps.verify(headers)
            except ValidationError as exc:
                peer.presync = None
                log.info("header pre-sync with %s ended: %s", peer.label, exc)
                return
            if ps.redownload_done:
                peer.presync = None
            elif len(headers) < MAX_HEADERS:
                peer.presync = None
                log.info("header pre-sync with %s ended: fewer headers than pre-synced",
                         peer.label)
                return
            self._store_headers(peer, headers)
            return
        try:
            ps.feed(headers, int(_time.time()))
        except TimeTooNew as exc:
            peer.presync = None
            self._misbehave(peer, 20, f"header from the future: {exc}")
            return
        except ValidationError as exc:
            peer.presync = None
            self._misbehave(peer, BAN_SCORE, f"invalid header: {exc}")
            return
        self.counters["presync_headers"] += len(headers)
        if ps.work > self.tree.best.work:
            ps.start_redownload()  # it has the work: fetch the same headers again to keep them
            peer.headers_requested_at = _time.monotonic()
            peer.send(GetHeaders([ps.fork.hash]))
        elif len(headers) == MAX_HEADERS:
            peer.headers_requested_at = _time.monotonic()
            peer.send(GetHeaders([ps.last_hash]))
        else:
            # Its chain ends with less work than ours: nothing to store. Less than it claimed
            # is a lie (asked again at once, so a liar is soon banned); else it is merely behind.
            peer.presync = None
            if ps.work < peer.claimed_work:
                self._misbehave(peer, BAN_SCORE / 2, "headers with less work than it claimed")
                if not peer.closed:
                    self._request_headers(peer)
            else:
                peer.claimed_work = ps.work

    def _offered(self, node: HeaderNode) -> None:
        """A peer offers a chain we stopped waiting for: try it again, unless its blocks have
        failed to arrive too often lately (then new work on top, or time, brings it back)."""
        if not node.unavailable:
            return
        now = _time.monotonic()
        cur: HeaderNode | None = node
        while cur is not None and cur.unavailable:
            if self.waits.exhausted(cur.hash, now):
                return
            cur = cur.prev
        self.tree.revive(node)

    def _serve_headers(self, peer: Peer, msg: GetHeaders) -> None:
        chain = self.chain
        start = 0
        for wanted in msg.locator:
            entry = chain.index.get(wanted)
            if entry is not None and chain.best_chain_hash(entry.height) == wanted:
                start = entry.height
                break
        headers: list[Header] = []
        prev: bytes | None = chain.best_chain_hash(start)
        tip_height = chain.tip.height
        height = start + 1
        while height <= tip_height and len(headers) < MAX_HEADERS:
            h = chain.best_chain_hash(height)
            entry = chain.index.get(h) if h is not None else None
            if entry is None or entry.header.prev != prev:
                break  # the best chain moved under us; serve what is consistent
            headers.append(entry.header)
            prev = entry.hash
            if h == msg.stop and msg.stop != ZERO32:
                break
            height += 1
        if headers:
            node = self.tree.get(headers[-1].hash)
            if node is not None and (peer.best is None or peer.best.work < node.work):
                peer.claimed_height = max(peer.claimed_height, node.height)
        peer.send(Headers(headers))

    # --- blocks ------------------------------------------------------------------------

    async def _serve_blocks(self, peer: Peer, hashes: list[bytes]) -> None:
        missing: list[bytes] = []
        for h in hashes:
            raw = self.chain.store.get_block_bytes(h)
            if raw is None:
                missing.append(h)
            else:
                await peer.send_wait(BlockMsg(raw))
        if missing:
            peer.send(NotFound(missing))

    def _on_block_msg(self, peer: Peer, msg: BlockMsg, size: int) -> None:
        block = msg.block
        assert block is not None
        h = block.hash
        if peer.inflight.pop(h, None) is None:
            self._misbehave(peer, 5, "unrequested block")
            return
        if self.inflight.get(h) is peer:
            del self.inflight[h]
        peer.last_block_at = self.last_block_in = _time.monotonic()
        peer.blocks_in += 1
        self.counters["blocks_downloaded"] += 1
        if h not in self.chain.index and h not in self.received and h not in self.processing:
            self.received[h] = (block, peer)
            self.received_bytes += size
        if len(peer.inflight) <= self.config.max_inflight // 2:
            self._schedule()  # refill in bulk, not once per block
        if not self._draining:
            self._spawn(self._drain())

    def _first_missing(self) -> int | None:
        tree = self.tree
        best_chain = tree.best_chain
        tip = tree.get(self.chain.tip.hash)
        height = tree.fork_height(tip) + 1 if tip is not None else 1
        index = self.chain.index
        while height < len(best_chain) and best_chain[height] in index:
            height += 1
        return height if height < len(best_chain) else None

    def _peer_has_up_to(self, peer: Peer) -> int:
        best = peer.best
        if best is None or best.invalid:
            return -1
        if self.tree.on_best_chain(best):
            return best.height
        return self.tree.fork_height(best)

    def _schedule(self) -> None:
        """Hand out block requests along the best header chain within the window."""
        if self._stopping or not self.peers:
            return
        start = self._first_missing()
        if start is None:
            return
        if self.received_bytes > MAX_BUFFERED_BYTES:
            return
        best_chain = self.tree.best_chain
        end = min(len(best_chain), start + self.config.window)
        peers = [p for p in self.peers.values()
                 if not p.closed and p.hello is not None
                 and len(p.inflight) < self.config.max_inflight]
        if not peers:
            return
        reach = {p: self._peer_has_up_to(p) for p in peers}
        peers = [p for p in peers if reach[p] >= start]
        if not peers:
            return
        index, inflight, received, processing = (self.chain.index, self.inflight, self.received,
                                                 self.processing)
        room_total = sum(self.config.max_inflight - len(p.inflight) for p in peers)
        wanted: list[bytes] = []
        heights: dict[bytes, int] = {}
        for height in range(start, end):
            h = best_chain[height]
            if h in inflight or h in received or h in processing or h in index:
                continue
            wanted.append(h)
            heights[h] = height
            if len(wanted) >= room_total:
                break
        if not wanted:
            return
        now = _time.monotonic()
        pos = 0
        while pos < len(wanted) and peers:
            progressed = False
            for peer in sorted(peers, key=lambda p: len(p.inflight)):
                room = min(self.config.request_batch, self.config.max_inflight - len(peer.inflight))
                batch: list[bytes] = []
                while pos < len(wanted) and len(batch) < room:
                    h = wanted[pos]
                    if heights[h] > reach[peer]:
                        break
                    batch.append(h)
                    pos += 1
                if batch:
                    if not peer.inflight:
                        peer.last_block_at = now
                    for h in batch:
                        peer.inflight[h] = now
                        inflight[h] = peer
                    peer.send(GetBlocks(batch[:MAX_GETBLOCKS]))
                    progressed = True
                if pos >= len(wanted):
                    break
            peers = [p for p in peers if len(p.inflight) < self.config.max_inflight]
            if not progressed:
                break

    async def _drain(self) -> None:
        """Hand buffered blocks to the chain thread in best-chain order."""
        if self._draining:
            return
        self._draining = True
        try:
            while not self._stopping:
                start = self._first_missing()
                if start is None:
                    break
                best_chain = self.tree.best_chain
                batch: list[tuple[Block, Peer]] = []
                height = start
                size = 0
                while height < len(best_chain) and best_chain[height] in self.received:
                    item = self.received.pop(best_chain[height])
                    batch.append(item)
                    size += item[0].size
                    height += 1
                    if len(batch) >= 64 or size > (8 << 20):
                        break
                self.received_bytes = max(0, self.received_bytes - size)
                if not batch:
                    break
                hashes = [b.hash for b, _ in batch]
                self.processing.update(hashes)
                try:
                    outcomes = await self.core.accept_blocks([b for b, _ in batch])
                finally:
                    self.processing.difference_update(hashes)
                senders = {b.hash: p for b, p in batch}
                for outcome in outcomes:
                    sender = senders[outcome.block.hash]
                    if outcome.invalid:
                        if outcome.mutated:  # someone else may hold the real block
                            self.waits.failed(outcome.block.hash, _time.monotonic())
                        self._misbehave(sender, BAN_SCORE, f"invalid block: {outcome.error}")
                    elif outcome.error is None and outcome.result is not None and (
                            not outcome.result.already_known):
                        sender.useful_block_at = _time.monotonic()
                self._schedule()
                self._progress()
            self._trim_received()
        finally:
            self._draining = False

    def _trim_received(self) -> None:
        if len(self.received) <= self.config.window:
            return
        for h in list(self.received):
            node = self.tree.get(h)
            if node is None or not self.tree.on_best_chain(node):
                block, _ = self.received.pop(h)
                self.received_bytes = max(0, self.received_bytes - block.size)

    async def submit_block(self, block: Block) -> bool:
        """Accept a block made here (the miner, the API) and announce it."""
        outcomes = await self.core.accept_blocks([block])
        ok = bool(outcomes) and outcomes[-1].error is None
        if not ok and outcomes:
            log.warning("own block %s refused: %s", block.hash[::-1].hex(), outcomes[-1].error)
        return ok

    # --- announcing --------------------------------------------------------------------

    def _on_block(self, action: str, block: Block, height: int) -> None:
        self.rejects.tip_changed()
        if action == "connect":
            # Listeners run before accept_blocks returns: record the header now so that the
            # announcement below finds it.
            self.tree.add_trusted(block.header)
        if action == "connect" and self.config.discover:
            for ev in block.events:
                if (isinstance(ev, SignedEvent) and isinstance(ev.body, Announce)
                        and ev.body.address and ev.signer != self.core.principal):
                    self.addrman.add(ev.body.address, ev.signer, "announce")
        if not self._announce_pending:
            self._announce_pending = True
            asyncio.get_running_loop().call_soon(self._announce)

    def _announce(self) -> None:
        """Send the headers from the last announced tip's fork point to the new tip, when the
        tip gained work (intermediate tips of a reorg, with less work, are not announced)."""
        self._announce_pending = False
        tip = self.tree.get(self.chain.tip.hash)
        previous = self.tree.get(self._announced_tip)
        if tip is None or tip is previous:
            return
        if previous is not None and tip.work <= previous.work:
            return
        if self.tree.best.height - tip.height > ANNOUNCE_DEPTH:
            return  # still syncing: peers will learn our tip when we are done
        fork = self.tree.fork_point(tip, previous) if previous is not None else None
        headers: list[Header] = []
        node: HeaderNode | None = tip
        while (node is not None and node.height > 0 and node is not fork
               and len(headers) < MAX_HEADERS):
            headers.append(node.header)
            node = node.prev
        headers.reverse()
        self._announced_tip = tip.hash
        if not headers:
            return
        message = Headers(headers)
        for peer in list(self.peers.values()):
            if peer.best is not None and peer.best.work >= tip.work and (
                    self.tree.on_best_chain(peer.best)):
                continue
            if tip.work <= peer.told_work:
                continue  # an intermediate tip of a reorg, below the tip its hello gave
            peer.told_work = tip.work
            peer.send(message)
        self.counters["announcements"] += 1

    # --- events ------------------------------------------------------------------------

    async def _on_events(self, peer: Peer, events: list[SignedEvent]) -> None:
        """Check relayed events new to us, once each: ids refused recently are skipped, and so
        are ids under check right now (sent by another peer too).

        An event refused for our chain's state or our policy (no funds on our tip, a proof
        whose window just closed, a fee below our minimum) costs its sender nothing: an honest
        peer relays what its own tip and policy accept and cannot know ours. Points go only to
        what no honest node sends: an event with a bad signature or over the size limit, and
        an event the peer itself already sent us on this connection (a replay)."""
        rejects = self.rejects
        fresh: list[SignedEvent] = []
        ids: list[bytes] = []
        resent = 0
        broken: str | None = None
        for ev in events:
            eid = self.core.event_id(ev)
            if not peer.relayed(eid):
                resent += 1
            elif eid in rejects:
                if rejects.permanent(eid):
                    broken = "an event refused for good before"
            elif eid not in self.core.mempool.entries and eid not in rejects.checking:
                fresh.append(ev)
                ids.append(eid)
        if fresh:
            rejects.checking.update(ids)
            try:
                results = await self.core.add_events(fresh, source=peer)
            finally:
                rejects.checking.difference_update(ids)
            self.counters["events_checked"] += len(fresh)
            for eid, (_, accepted, err) in zip(ids, results, strict=True):
                if accepted is not None:
                    peer.useful_event_at = _time.monotonic()
                    continue
                permanent = isinstance(err, (BadSignature, EventTooLarge))
                rejects.add(eid, permanent)
                if permanent:
                    broken = str(err)
        if broken is not None:
            self._misbehave(peer, 50, f"relayed a broken event: {broken}")
        if resent and not peer.closed:
            self._misbehave(peer, resent * RESEND_PENALTY,
                            f"sent {resent} event(s) it had sent before")

    def _on_event(self, ev: SignedEvent, eid: bytes, source: object) -> None:
        for peer in list(self.peers.values()):
            if peer is not source and not peer.closed and peer.know_event(eid):
                peer.send(Events([ev]))

    async def submit_events(self, events: list[SignedEvent]) -> list[
            tuple[SignedEvent, bytes | None, BlockcoinError | None]]:
        return await self.core.add_events(events, source=None)

    # --- addresses ---------------------------------------------------------------------

    def _addr_entries(self, peer: Peer) -> list[AddrEntry]:
        out = [AddrEntry(i.principal, i.address, i.last_seen)
               for i in self.addrman.known(MAX_ADDRS - 1)
               if i.principal is not None and i.principal != peer.principal]
        if self.listen_address:
            out.append(AddrEntry(self.core.principal, self.listen_address, int(_time.time())))
        return out[:MAX_ADDRS]

    def _on_addr(self, peer: Peer, entries: list[AddrEntry]) -> None:
        if not self.config.discover:
            return
        now = int(_time.time())
        for e in entries:
            if e.principal == self.core.principal or self.bans.is_banned(e.principal, e.address):
                continue
            self.addrman.add(e.address, e.principal, "peer", min(e.last_seen, now))
        self._dial_more()

    # --- maintenance -------------------------------------------------------------------

    async def _maintain(self) -> None:
        while not self._stopping:
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
            if peer.inflight:
                oldest = min(peer.inflight.values())
                if now - max(oldest, peer.last_block_at) > self.config.stall_timeout:
                    self.counters["stalls"] += 1
                    for h in peer.inflight:
                        self.waits.failed(h, now)
                    self._release(peer)
                    peer.close_soon("stalled block download")
                    continue
            if peer.headers_requested_at is not None:
                if now - peer.headers_requested_at > HEADERS_TIMEOUT:
                    peer.close_soon("no answer to getheaders")
                    continue
            elif peer.presync is None and peer.claimed_work > self.tree.best.work and (
                    peer.best is None or peer.best.work < peer.claimed_work) and (
                    random.random() < 0.1):
                self._request_headers(peer)
        # A connected peer's best header is a standing offer: once the failures of a chain
        # given up on are old, the best such chain is tried again, mined on or not.
        offers = [p.best for p in self.peers.values()
                  if not p.closed and p.best is not None and p.best.unavailable]
        if offers:
            self._offered(max(offers, key=lambda n: n.work))
        self._dial_more()
        self._stop_waiting(now)
        self._schedule()
        if self.received and not self._draining:
            self._spawn(self._drain())
        self._progress()

    def _stop_waiting(self, now: float) -> None:
        """Drop the best header chain's first missing block from the candidates when nobody
        delivers it (:mod:`chain.net.p2p.fetchwait`); the tip then counts as the best again."""
        start = self._first_missing()
        if start is None:
            return
        h = self.tree.best_chain[start]
        if h in self.inflight or h in self.received or h in self.processing:
            return
        has_source = any(self._peer_has_up_to(p) >= start for p in self.peers.values()
                         if not p.closed and p.hello is not None)
        if self.waits.give_up(h, has_source, now):
            self.waits.forget(h)
            self.counters["blocks_unavailable"] += 1
            log.info("giving up on block %s at height %d: no peer delivers it", h[::-1].hex(),
                     start)
            self.tree.mark_unavailable(h)

    @property
    def downloading(self) -> bool:
        """A better chain exists and its blocks are arriving: mining on the old tip now would
        likely be wasted. Blocks withheld or refused do not count: then the miner goes on."""
        return self.core.syncing and _time.monotonic() - self.last_block_in < DOWNLOAD_QUIET

    def _progress(self) -> None:
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
