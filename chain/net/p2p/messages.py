"""The peer-to-peer protocol's messages and their one canonical encoding.

Every message on a secure channel is ``u8 type || body``, the body written with
:mod:`chain.core.encoding` (minimal varints, bounded lengths, no trailing bytes). Decoding is strict
and every failure is a :class:`~chain.core.errors.DecodeError`, which the peer loop treats as
garbage and punishes. Versioning: the first message each way is :class:`Hello`, carrying the
sender's protocol version and the oldest version it still speaks; a connection proceeds at the
lower of the two versions if the ranges overlap, else it is closed. Message types unknown to a
version are refused (a newer peer never sends them to an older one).

Messages (type code, name, body):

==  ==========  ==============================================================================
1   hello       version, min version, chain id, genesis hash, principal, best height, best
                work, best hash, listen address (``host:port`` or empty), agent, time
2   ping        nonce
3   pong        nonce
4   getheaders  block locator (most recent first, at most 64 hashes), stop hash (zero: none)
5   headers     at most 2000 116-byte headers, each the child of the one before; also how a
                node announces new blocks (unsolicited, the last few headers of its new tip)
6   getblocks   at most 128 block hashes
7   block       one block's canonical bytes
8   notfound    block hashes the sender does not have
9   events      at most 500 signed events (mempool relay)
10  getaddr     (empty) ask for known peer addresses
11  addr        at most 1000 (principal, ``host:port``, last seen) entries
==  ==========  ==============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from chain.core.block import Block
from chain.core.encoding import Reader, Writer, decode_all
from chain.core.errors import DecodeError
from chain.core.events import MAX_ADDRESS_BYTES, SignedEvent, read_event
from chain.core.header import HEADER_SIZE, Header
from chain.core.principal import Principal

PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1

MAX_LOCATOR = 64
MAX_HEADERS = 2000
MAX_GETBLOCKS = 128
MAX_EVENTS = 500
MAX_ADDRS = 1000
MAX_AGENT = 64
MAX_CHAIN_ID = 64
MAX_WORK_BYTES = 33
MAX_EVENT_BYTES = 64 << 10
MAX_BLOCK_BYTES = 8 << 20
ZERO32 = bytes(32)


class MsgType(IntEnum):
    HELLO = 1
    PING = 2
    PONG = 3
    GETHEADERS = 4
    HEADERS = 5
    GETBLOCKS = 6
    BLOCK = 7
    NOTFOUND = 8
    EVENTS = 9
    GETADDR = 10
    ADDR = 11


def _work_bytes(work: int) -> bytes:
    return work.to_bytes(MAX_WORK_BYTES, "big").lstrip(b"\0")


def _read_work(r: Reader) -> int:
    raw = r.var_bytes(MAX_WORK_BYTES)
    if raw[:1] == b"\0":
        raise DecodeError("non-minimal work")
    return int.from_bytes(raw, "big")


def _read_hashes(r: Reader, limit: int) -> list[bytes]:
    return [r.fixed(32) for _ in range(r.varint(limit))]


def _write_hashes(w: Writer, hashes: list[bytes], limit: int) -> None:
    if len(hashes) > limit:
        raise ValueError(f"at most {limit} hashes")
    w.varint(len(hashes))
    for h in hashes:
        w.fixed(h, 32)


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    min_version: int
    chain_id: bytes
    genesis: bytes
    principal: Principal
    best_height: int
    best_work: int
    best_hash: bytes
    listen: str
    agent: str
    time: int

    type = MsgType.HELLO

    def write(self, w: Writer) -> None:
        w.varint(self.version).varint(self.min_version).var_bytes(self.chain_id)
        w.fixed(self.genesis, 32).fixed(self.principal.digest, 32).varint(self.best_height)
        w.var_bytes(_work_bytes(self.best_work)).fixed(self.best_hash, 32)
        w.text(self.listen).text(self.agent).varint(self.time)

    @classmethod
    def read(cls, r: Reader) -> Hello:
        return cls(r.varint(), r.varint(), r.var_bytes(MAX_CHAIN_ID), r.fixed(32),
                   Principal(r.fixed(32)), r.varint(), _read_work(r), r.fixed(32),
                   r.text(MAX_ADDRESS_BYTES), r.text(MAX_AGENT), r.varint())


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int
    type = MsgType.PING

    def write(self, w: Writer) -> None:
        w.varint(self.nonce)

    @classmethod
    def read(cls, r: Reader) -> Ping:
        return cls(r.varint())


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int
    type = MsgType.PONG

    def write(self, w: Writer) -> None:
        w.varint(self.nonce)

    @classmethod
    def read(cls, r: Reader) -> Pong:
        return cls(r.varint())


@dataclass(frozen=True, slots=True)
class GetHeaders:
    locator: list[bytes]
    stop: bytes = ZERO32
    type = MsgType.GETHEADERS

    def write(self, w: Writer) -> None:
        _write_hashes(w, self.locator, MAX_LOCATOR)
        w.fixed(self.stop, 32)

    @classmethod
    def read(cls, r: Reader) -> GetHeaders:
        return cls(_read_hashes(r, MAX_LOCATOR), r.fixed(32))


@dataclass(frozen=True, slots=True)
class Headers:
    headers: list[Header]
    type = MsgType.HEADERS

    def write(self, w: Writer) -> None:
        if len(self.headers) > MAX_HEADERS:
            raise ValueError(f"at most {MAX_HEADERS} headers")
        w.varint(len(self.headers))
        for h in self.headers:
            w.raw(h.encode())

    @classmethod
    def read(cls, r: Reader) -> Headers:
        return cls([Header.decode(r.fixed(HEADER_SIZE)) for _ in range(r.varint(MAX_HEADERS))])


@dataclass(frozen=True, slots=True)
class GetBlocks:
    hashes: list[bytes]
    type = MsgType.GETBLOCKS

    def write(self, w: Writer) -> None:
        _write_hashes(w, self.hashes, MAX_GETBLOCKS)

    @classmethod
    def read(cls, r: Reader) -> GetBlocks:
        return cls(_read_hashes(r, MAX_GETBLOCKS))


@dataclass(frozen=True, slots=True)
class BlockMsg:
    """One block. ``raw`` is its canonical encoding (a server sends the stored bytes as they
    are); the decoder checks it decodes and keeps the decoded block."""

    raw: bytes
    block: Block | None = None
    type = MsgType.BLOCK

    def write(self, w: Writer) -> None:
        w.var_bytes(self.raw)

    @classmethod
    def read(cls, r: Reader) -> BlockMsg:
        raw = r.var_bytes(MAX_BLOCK_BYTES)
        return cls(raw, Block.decode(raw))

    @classmethod
    def of(cls, block: Block) -> BlockMsg:
        return cls(block.encode(), block)


@dataclass(frozen=True, slots=True)
class NotFound:
    hashes: list[bytes]
    type = MsgType.NOTFOUND

    def write(self, w: Writer) -> None:
        _write_hashes(w, self.hashes, MAX_GETBLOCKS)

    @classmethod
    def read(cls, r: Reader) -> NotFound:
        return cls(_read_hashes(r, MAX_GETBLOCKS))


@dataclass(frozen=True, slots=True)
class Events:
    """Signed events for the mempool (a coinbase is garbage here)."""

    events: list[SignedEvent]
    type = MsgType.EVENTS

    def write(self, w: Writer) -> None:
        if len(self.events) > MAX_EVENTS:
            raise ValueError(f"at most {MAX_EVENTS} events")
        w.varint(len(self.events))
        for ev in self.events:
            w.var_bytes(ev.raw)

    @classmethod
    def read(cls, r: Reader) -> Events:
        out: list[SignedEvent] = []
        for _ in range(r.varint(MAX_EVENTS)):
            ev = decode_all(r.var_bytes(MAX_EVENT_BYTES), read_event)
            if not isinstance(ev, SignedEvent):
                raise DecodeError("a coinbase is never relayed")
            out.append(ev)
        return cls(out)


@dataclass(frozen=True, slots=True)
class GetAddr:
    type = MsgType.GETADDR

    def write(self, w: Writer) -> None:
        pass

    @classmethod
    def read(cls, r: Reader) -> GetAddr:
        return cls()


@dataclass(frozen=True, slots=True)
class AddrEntry:
    principal: Principal
    address: str
    last_seen: int


@dataclass(frozen=True, slots=True)
class Addr:
    entries: list[AddrEntry]
    type = MsgType.ADDR

    def write(self, w: Writer) -> None:
        if len(self.entries) > MAX_ADDRS:
            raise ValueError(f"at most {MAX_ADDRS} addresses")
        w.varint(len(self.entries))
        for e in self.entries:
            w.fixed(e.principal.digest, 32).text(e.address).varint(e.last_seen)

    @classmethod
    def read(cls, r: Reader) -> Addr:
        return cls([AddrEntry(Principal(r.fixed(32)), r.text(MAX_ADDRESS_BYTES), r.varint())
                    for _ in range(r.varint(MAX_ADDRS))])


Message = (Hello | Ping | Pong | GetHeaders | Headers | GetBlocks | BlockMsg | NotFound | Events
           | GetAddr | Addr)

_TYPES: dict[int, type[Message]] = {
    MsgType.HELLO: Hello,
    MsgType.PING: Ping,
    MsgType.PONG: Pong,
    MsgType.GETHEADERS: GetHeaders,
    MsgType.HEADERS: Headers,
    MsgType.GETBLOCKS: GetBlocks,
    MsgType.BLOCK: BlockMsg,
    MsgType.NOTFOUND: NotFound,
    MsgType.EVENTS: Events,
    MsgType.GETADDR: GetAddr,
    MsgType.ADDR: Addr,
}


def encode_message(msg: Message) -> bytes:
    w = Writer().u8(msg.type)
    msg.write(w)
    return bytes(w)


def decode_message(data: bytes) -> Message:
    """Exactly one message from ``data``; any flaw is a DecodeError."""

    def read(r: Reader) -> Message:
        kind = r.u8()
        cls = _TYPES.get(kind)
        if cls is None:
            raise DecodeError(f"unknown message type {kind}")
        return cls.read(r)

    return decode_all(data, read)


def message_name(msg: Message) -> str:
    return msg.type.name.lower()
