"""The owner-host protocol, spoken over the node channel (:class:`chain.net.SecureChannel`).

Every exchange runs on its own channel: the caller dials the peer's address from
``/global/principals`` and names the principal it expects, so the Noise XX handshake proves
both identities before a byte of the exchange is sent; the listener learns the caller's
principal from the handshake and authorises by it (only a contract's owner may ask to extend
it, only the host that reserved an offer may send its receipt). One request, its answer, close: an
exchange is a few round trips and a handshake costs about a millisecond, while a long-lived
connection would need keep-alives, reconnects and multiplexing for nothing.

Exchanges (``->`` from the caller, ``<-`` from the listener)::

    fetch     host -> owner   FETCH(offers)    <- FRAGMENT(offer, size) + raw chunks
                              -> RECEIPT(sig)  <- STORED(event id) | ERROR
    extend    owner -> host   EXTEND(offer, periods)  <- CONSENT(sig) | ERROR
    retrieve  any -> host     RETRIEVE(offer)  <- FRAGMENT(offer, size) + raw chunks | ERROR

Proofs of storage and pay are not part of it: the host proves each period on chain by itself,
and the chain pays it from the owner's escrow.

A message is one channel message: ``u8 type | body`` in the chain's canonical encoding
(:mod:`chain.core.encoding`), decoded strictly; any flaw is a :class:`ProtocolError`. A fragment
travels as a FRAGMENT header followed by raw chunks of at most :data:`CHUNK_SIZE` bytes, with
no per-chunk framing (the channel already delimits messages). The receiver checks the
announced size against the size recorded on chain *before* accepting any chunk, refuses a chunk
that would overrun it, and sets the channel's message limit to one chunk, so a peer can make it
buffer at most one chunk in memory. The bytes are then checked against the Merkle root on chain.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from chain.core.aio import stop_tasks
from chain.core.encoding import Reader, Writer
from chain.core.errors import BlockcoinError
from chain.core.keys import KeyPair
from chain.core.principal import Principal
from chain.net.channel import ChannelError, SecureChannel, StreamTransport
from storage_market.crypto import decode_strict
from storage_market.errors import StorageError

#: Bytes per fragment chunk: a multiple of every allowed leaf size (powers of two to 1 MiB).
CHUNK_SIZE = 1 << 20
#: The channel's message limit: one chunk, or the largest control message.
MAX_MESSAGE = CHUNK_SIZE + 1024
MAX_TEXT = 1024
DIAL_TIMEOUT = 10.0
#: Connections a listener serves at once; more are closed as they arrive. Each holds up to
#: ~2 MiB of buffers once it streams a fragment, so this bounds what peers can make it hold.
MAX_CONNECTIONS = 128


class ProtocolError(StorageError):
    """A peer broke the owner-host protocol, or answered with an error."""

    code = "storage-protocol"


class PeerRefused(ProtocolError):
    """The peer understood and said no (ERROR message); ``reason`` is its stable code."""

    code = "storage-refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class PeerUnreachable(ProtocolError):
    """No usable channel to the peer: no address, connection refused, handshake failed."""

    code = "storage-unreachable"


class ChannelBroken(PeerUnreachable):
    """The channel failed in the middle of an exchange: the peer hung up (a restart, say) or
    the connection dropped. Like an unreachable peer, worth another try later."""

    code = "storage-channel-broken"


# --- messages -----------------------------------------------------------------------------------


#: Offers one FETCH may name (the chain's limit on fragments of a block).
MAX_FETCH_OFFERS = 255


@dataclass(frozen=True, slots=True)
class Fetch:
    """Ask for the fragment of any one of ``offer_ids`` (offers of one block, in the host's
    order of preference); the owner serves the first it can and names it in the FRAGMENT
    header. A host takes at most one fragment of a block anyway, and while five hosts race
    for the offers of a new block, naming one offer each made most of them collide and pay a
    new handshake per try; naming them all lets the owner hand out free ones directly."""

    tag: ClassVar[int] = 1
    offer_ids: tuple[bytes, ...]

    def write(self, w: Writer) -> None:
        if not 1 <= len(self.offer_ids) <= MAX_FETCH_OFFERS:
            raise ProtocolError(f"a fetch names 1 to {MAX_FETCH_OFFERS} offers")
        w.varint(len(self.offer_ids))
        for oid in self.offer_ids:
            w.fixed(oid, 32)

    @classmethod
    def read(cls, r: Reader) -> Fetch:
        count = r.varint(MAX_FETCH_OFFERS)
        ids = tuple(r.fixed(32) for _ in range(count))
        if not ids or len(set(ids)) != len(ids):
            raise ProtocolError("a fetch names distinct offers, at least one")
        return cls(ids)


@dataclass(frozen=True, slots=True)
class FragmentHeader:
    """Announces a fragment stream: ``size`` bytes follow as raw chunks."""

    tag: ClassVar[int] = 2
    offer_id: bytes
    size: int

    def write(self, w: Writer) -> None:
        w.fixed(self.offer_id, 32).varint(self.size)

    @classmethod
    def read(cls, r: Reader) -> FragmentHeader:
        return cls(r.fixed(32), r.varint())


@dataclass(frozen=True, slots=True)
class Receipt:
    """The host's signature over :func:`chain.core.events.receipt_message`, and the principal it
    wants its pay sent to (part of what it signed)."""

    tag: ClassVar[int] = 3
    signature: bytes
    payout: Principal

    def write(self, w: Writer) -> None:
        w.fixed(self.signature, 64).fixed(self.payout.digest, 32)

    @classmethod
    def read(cls, r: Reader) -> Receipt:
        return cls(r.fixed(64), Principal(r.fixed(32)))


@dataclass(frozen=True, slots=True)
class Stored:
    tag: ClassVar[int] = 4
    event_id: bytes

    def write(self, w: Writer) -> None:
        w.fixed(self.event_id, 32)

    @classmethod
    def read(cls, r: Reader) -> Stored:
        return cls(r.fixed(32))


@dataclass(frozen=True, slots=True)
class Extend:
    """Ask the host of an active contract to run it ``periods`` periods in all."""

    tag: ClassVar[int] = 5
    offer_id: bytes
    periods: int

    def write(self, w: Writer) -> None:
        w.fixed(self.offer_id, 32).varint(self.periods)

    @classmethod
    def read(cls, r: Reader) -> Extend:
        return cls(r.fixed(32), r.varint())


@dataclass(frozen=True, slots=True)
class Consent:
    """The host's signature over :func:`chain.core.events.extension_message`."""

    tag: ClassVar[int] = 6
    signature: bytes

    def write(self, w: Writer) -> None:
        w.fixed(self.signature, 64)

    @classmethod
    def read(cls, r: Reader) -> Consent:
        return cls(r.fixed(64))


@dataclass(frozen=True, slots=True)
class Retrieve:
    tag: ClassVar[int] = 7
    offer_id: bytes

    def write(self, w: Writer) -> None:
        w.fixed(self.offer_id, 32)

    @classmethod
    def read(cls, r: Reader) -> Retrieve:
        return cls(r.fixed(32))


@dataclass(frozen=True, slots=True)
class Error:
    """A refusal: a stable ``reason`` code and a human-readable message."""

    tag: ClassVar[int] = 8
    reason: str
    message: str

    def write(self, w: Writer) -> None:
        w.text(self.reason[:64]).text(self.message[:MAX_TEXT])

    @classmethod
    def read(cls, r: Reader) -> Error:
        return cls(r.text(64), r.text(MAX_TEXT))


Message = Fetch | FragmentHeader | Receipt | Stored | Extend | Consent | Retrieve | Error
M = TypeVar("M", Fetch, FragmentHeader, Receipt, Stored, Extend, Consent, Retrieve, Error)
_TYPES: dict[int, type[Message]] = {
    t.tag: t for t in (Fetch, FragmentHeader, Receipt, Stored, Extend, Consent, Retrieve, Error)
}


def encode(msg: Message) -> bytes:
    w = Writer().u8(msg.tag)
    msg.write(w)
    return bytes(w)


def decode(data: bytes) -> Message:
    def read(r: Reader) -> Message:
        tag = r.u8()
        kind = _TYPES.get(tag)
        if kind is None:
            raise ProtocolError(f"unknown message type {tag}")
        return kind.read(r)

    try:
        return decode_strict(data, read, "protocol message")
    except ProtocolError:
        raise
    except StorageError as exc:
        raise ProtocolError(str(exc)) from exc


# --- channel helpers ----------------------------------------------------------------------------


async def send(channel: SecureChannel, msg: Message) -> None:
    try:
        await channel.send(encode(msg))
    except ChannelError as exc:
        raise ChannelBroken(f"channel failed: {exc}") from exc


async def recv(channel: SecureChannel, timeout: float) -> Message:
    """The next message; an ERROR from the peer is raised as :class:`PeerRefused`."""
    try:
        async with asyncio.timeout(timeout):
            raw = await channel.recv()
    except TimeoutError as exc:
        raise ProtocolError(f"no answer within {timeout:g} s") from exc
    except ChannelError as exc:
        raise ChannelBroken(f"channel failed: {exc}") from exc
    msg = decode(bytes(raw))  # small, and its fields become ids and keys
    if isinstance(msg, Error):
        raise PeerRefused(msg.reason, msg.message)
    return msg


async def expect(channel: SecureChannel, kind: type[M], timeout: float) -> M:
    msg = await recv(channel, timeout)
    if not isinstance(msg, kind):
        raise ProtocolError(f"expected {kind.__name__}, got {type(msg).__name__}")
    return msg


async def refuse(channel: SecureChannel, reason: str, message: str) -> None:
    """Send an ERROR, ignoring a channel that is already gone."""
    with contextlib.suppress(ChannelBroken):
        await send(channel, Error(reason, message))


async def send_fragment(channel: SecureChannel, offer_id: bytes,
                        parts: Sequence[memoryview]) -> None:
    """A FRAGMENT header then the bytes of ``parts`` (the fragment, in order) in raw chunks."""
    await send(channel, FragmentHeader(offer_id, sum(part.nbytes for part in parts)))
    for data in parts:
        for start in range(0, data.nbytes, CHUNK_SIZE):
            await channel.send(data[start : start + CHUNK_SIZE])


async def recv_fragment_header(channel: SecureChannel, sizes: Mapping[bytes, int],
                               timeout: float) -> bytes:
    """The FRAGMENT header of a stream, which must name one of the offers in ``sizes`` (offer
    id to its size on chain) and announce exactly that size; returns the offer id."""
    header = await expect(channel, FragmentHeader, timeout)
    size = sizes.get(header.offer_id)
    if size is None:
        raise ProtocolError("fragment stream for another offer")
    if header.size != size:
        raise ProtocolError(f"peer announces {header.size} bytes, the chain says {size}")
    return header.offer_id


async def recv_chunks(
    channel: SecureChannel,
    size: int,
    sink: Callable[[memoryview], Awaitable[None] | None],
    timeout: float,
    into: Callable[[int], bytearray | memoryview] | None = None,
) -> None:
    """The raw chunks of a fragment of exactly ``size`` bytes after its header.

    ``sink`` sees each chunk in order (and may be a coroutine function, to write to disk).
    With ``into``, each chunk is decrypted into ``into(offset)`` (the buffer for the chunk that
    starts ``offset`` bytes into the fragment) when it fits, so a receiver can reuse buffers or
    land chunks in place. Nothing beyond ``size`` is ever accepted; ``timeout`` bounds the wait
    for each message.
    """
    got = 0
    while got < size:
        try:
            async with asyncio.timeout(timeout):
                chunk = (await channel.recv_into(into(got)) if into is not None
                         else memoryview(await channel.recv()))
        except TimeoutError as exc:
            raise ProtocolError(f"fragment stream stalled for {timeout:g} s") from exc
        except ChannelError as exc:
            raise ProtocolError(f"fragment stream broken: {exc}") from exc
        if not chunk or len(chunk) > CHUNK_SIZE or got + len(chunk) > size:
            raise ProtocolError("fragment chunk of a wrong size")
        got += len(chunk)
        result = sink(chunk)
        if result is not None:
            await result


async def recv_fragment(
    channel: SecureChannel,
    offer_id: bytes,
    size: int,
    sink: Callable[[memoryview], Awaitable[None] | None],
    timeout: float,
    into: Callable[[int], bytearray | memoryview] | None = None,
) -> None:
    """Receive a fragment of exactly ``size`` bytes (as recorded on chain), chunk by chunk.

    The announced offer and size are checked *before* any chunk is accepted.
    """
    await recv_fragment_header(channel, {offer_id: size}, timeout)
    await recv_chunks(channel, size, sink, timeout, into)


# --- dialling and listening ---------------------------------------------------------------------


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise PeerUnreachable(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


async def dial(
    address: str | None, key: KeyPair, chain_id: bytes, expected: Principal,
    timeout: float = DIAL_TIMEOUT,
) -> SecureChannel:
    """A channel to ``expected`` at ``address``; refuses anyone else answering there."""
    if not address:
        raise PeerUnreachable(f"{expected} has announced no address")
    host, port = split_address(address)
    try:
        transport = await StreamTransport.connect(host, port, timeout)
        return await SecureChannel.initiate(
            transport, key, chain_id, expected, max_message=MAX_MESSAGE, timeout=timeout
        )
    except ChannelError as exc:
        raise PeerUnreachable(f"cannot reach {expected} at {address}: {exc}") from exc


Handler = Callable[[SecureChannel], Awaitable[None]]


class Listener:
    """Accepts channels on a TCP port and runs ``handler`` on each, one task per connection.

    A handler's protocol and channel errors end only that connection; :meth:`close` stops
    listening and cancels the connections still running, each bounded in time. Beyond
    ``max_connections`` at once, new connections are closed at once (counted in ``turned_away``).
    """

    def __init__(self, key: KeyPair, chain_id: bytes, handler: Handler,
                 handshake_timeout: float = DIAL_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.key = key
        self.chain_id = chain_id
        self.handler = handler
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # serving or turning away
        self._serving: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []
        self.turned_away = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen; returns the ``host:port`` actually bound (for an Announce)."""
        self._server = await StreamTransport.serve(self._on_connect, host, port)
        bound = self._server.sockets[0].getsockname()
        return f"{bound[0]}:{bound[1]}"

    def _on_connect(self, transport: StreamTransport) -> None:
        loop = asyncio.get_running_loop()
        if len(self._serving) >= self.max_connections:
            self.turned_away += 1
            task = loop.create_task(transport.close())
        else:
            task = loop.create_task(self._serve(transport))
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, transport: StreamTransport) -> None:
        try:
            channel = await SecureChannel.accept(
                transport, self.key, self.chain_id, max_message=MAX_MESSAGE,
                timeout=self.handshake_timeout,
            )
        except (ChannelError, OSError):
            await transport.close()
            return
        try:
            await self.handler(channel)
        except (BlockcoinError, OSError) as exc:
            if len(self.errors) < 100:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            await refuse(channel, getattr(exc, "code", "error"), str(exc))
        finally:
            await channel.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await stop_tasks(*self._tasks)
