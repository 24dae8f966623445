"""One connected peer: its secure channel, send queue, limits and bookkeeping.

Sending never blocks the caller on a slow peer: messages go to a per-peer queue drained by a
writer task. A peer that stops reading while its queue passes a hard limit is dropped; the
block server waits for room instead (:meth:`Peer.send_wait`), so honest bulk transfers are
paced rather than cut. Receiving decodes each message strictly and charges it to token buckets
(message count and bytes, per second); responses to our own requests are not charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time as _time
from collections import OrderedDict

from chain.core.principal import Principal
from chain.net.channel.errors import ChannelError
from chain.net.channel.noise import SecureChannel
from chain.net.p2p.addrman import parse_address
from chain.net.p2p.messages import Hello, Message, encode_message
from chain.net.p2p.presync import HeaderPreSync
from chain.node.headers import HeaderNode

QUEUE_SOFT_LIMIT = 8 << 20
QUEUE_HARD_LIMIT = 64 << 20
KNOWN_EVENTS = 20_000


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = _time.monotonic()

    def take(self, amount: float = 1.0) -> bool:
        now = _time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True


class Peer:
    def __init__(self, channel: SecureChannel, inbound: bool, address: str,
                 msg_rate: float = 500.0, byte_rate: float = 4 << 20) -> None:
        self.channel = channel
        self.inbound = inbound
        self.address = address
        self.principal: Principal = channel.remote_principal
        self.hello: Hello | None = None
        self.version = 0
        self.connected_at = _time.time()
        self.best: HeaderNode | None = None
        self.claimed_height = 0
        self.claimed_work = 0  # from its hello; lowered when its headers show less, honestly
        # (work, hash) of the best tip it told us about unasked: its hello's, then its
        # announcements' (an honest node's only ever rise; see PeerManager._on_low_work).
        self.announced: tuple[int, bytes] = (0, b"")
        self.told_work = 0  # the most work of any tip we told it about (hello, announcements)
        self.presync: HeaderPreSync | None = None
        self.useful_block_at = 0.0  # when it last delivered a block new to us (eviction)
        self.useful_event_at = 0.0  # when it last relayed an event new to our mempool
        self.inflight: dict[bytes, float] = {}
        self.last_block_at = _time.monotonic()
        self.headers_requested_at: float | None = None
        self.getaddr_answered = False
        self.ping_nonce: int | None = None
        self.ping_sent = 0.0
        self.rtt: float | None = None
        self.score = 0.0
        self._score_stamp = _time.monotonic()
        self.known_events: OrderedDict[bytes, bool] = OrderedDict()  # id -> it sent it to us
        self.msg_bucket = TokenBucket(msg_rate, msg_rate * 4)
        self.byte_bucket = TokenBucket(byte_rate, byte_rate * 4)
        self.bytes_in = 0
        self.bytes_out = 0
        self.msgs_in = 0
        self.msgs_out = 0
        self.blocks_in = 0
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queued = 0
        self._room = asyncio.Event()
        self._room.set()
        self._writer: asyncio.Task[None] | None = None
        self.closed = False
        self.close_reason = ""

    def __repr__(self) -> str:
        way = "in" if self.inbound else "out"
        return f"<Peer {way} {self.address} {str(self.principal)[:16]}>"

    @property
    def host(self) -> str:
        """The remote IP address (the address without its port)."""
        try:
            return parse_address(self.address)[0]
        except ValueError:
            return self.address

    @property
    def label(self) -> str:
        return f"{str(self.principal)[:14]}@{self.address}"

    # --- misbehaviour score ------------------------------------------------------------

    def add_score(self, points: float, decay_per_second: float = 1.0) -> float:
        now = _time.monotonic()
        self.score = max(0.0, self.score - (now - self._score_stamp) * decay_per_second) + points
        self._score_stamp = now
        return self.score

    def know_event(self, eid: bytes) -> bool:
        """Record that the peer knows ``eid`` (we send it); True if it was new to it."""
        if eid in self.known_events:
            return False
        self._remember_event(eid, False)
        return True

    def relayed(self, eid: bytes) -> bool:
        """Record that the peer sent us ``eid``; False if it had sent it before on this
        connection. Both ends keep the same record (what each sent the other, equally bounded),
        so an honest node never sends an event twice; crossing relays are not a resend."""
        if self.known_events.get(eid, False):
            return False
        self._remember_event(eid, True)
        return True

    def _remember_event(self, eid: bytes, from_peer: bool) -> None:
        self.known_events[eid] = from_peer
        if len(self.known_events) > KNOWN_EVENTS:
            self.known_events.popitem(last=False)

    # --- sending -----------------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.ensure_future(self._write_loop())

    def send(self, msg: Message) -> None:
        """Queue ``msg``; a peer whose queue passes the hard limit is closed."""
        if self.closed:
            return
        data = encode_message(msg)
        self._queued += len(data)
        if self._queued > QUEUE_HARD_LIMIT:
            self.close_soon("send queue overflow (peer not reading)")
            return
        if self._queued > QUEUE_SOFT_LIMIT:
            self._room.clear()
        self._queue.put_nowait(data)

    async def send_wait(self, msg: Message) -> None:
        """Queue ``msg`` once the queue is below its soft limit (bulk transfers)."""
        while not self.closed and not self._room.is_set():
            await self._room.wait()
        self.send(msg)

    async def _write_loop(self) -> None:
        try:
            while True:
                data = await self._queue.get()
                if data is None:
                    return
                self._queued -= len(data)
                if self._queued <= QUEUE_SOFT_LIMIT:
                    self._room.set()
                await self.channel.send(data)
                self.bytes_out += len(data)
                self.msgs_out += 1
        except ChannelError as exc:
            self.close_soon(f"send failed: {exc}")
        except asyncio.CancelledError:
            pass

    # --- receiving ---------------------------------------------------------------------

    async def recv(self) -> bytes:
        data = await self.channel.recv()
        self.bytes_in += len(data)
        self.msgs_in += 1
        return bytes(data)  # messages are parsed into objects that keep slices of it

    def charge(self, size: int, cost: float = 1.0) -> bool:
        """Charge an unsolicited message to the rate limits; False if over them."""
        return self.msg_bucket.take(cost) and self.byte_bucket.take(float(size))

    # --- closing -----------------------------------------------------------------------

    def close_soon(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._room.set()
        asyncio.ensure_future(self._close())

    async def _close(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        with contextlib.suppress(Exception):
            await self.channel.close()

    async def aclose(self, reason: str) -> None:
        self.close_soon(reason)
        await self._close()

    def to_json(self) -> dict[str, object]:
        return {
            "principal": str(self.principal),
            "address": self.address,
            "direction": "inbound" if self.inbound else "outbound",
            "listen": self.hello.listen if self.hello else None,
            "agent": self.hello.agent if self.hello else None,
            "version": self.version,
            "best_height": self.best.height if self.best else self.claimed_height,
            "inflight": len(self.inflight),
            "rtt_ms": round(self.rtt * 1000, 1) if self.rtt is not None else None,
            "score": round(self.score, 1),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "blocks_in": self.blocks_in,
            "connected_seconds": round(_time.time() - self.connected_at, 1),
        }


