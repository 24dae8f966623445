"""Blocks: a header and its events, the coinbase first."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from chain.core.encoding import Reader, Writer, decode_all
from chain.core.errors import DecodeError
from chain.core.events import Event, read_event
from chain.core.hashes import merkle_root_of_hashes
from chain.core.header import HEADER_SIZE, Header

MAX_BLOCK_DECODE = 32 << 20
MAX_EVENTS_DECODE = 1 << 20


def events_root(events: list[Event]) -> bytes:
    """Merkle root over the full bytes of each event (signatures included)."""
    return merkle_root_of_hashes([hashlib.sha256(b"\x00" + e.raw).digest() for e in events])


@dataclass(eq=False)
class Block:
    header: Header
    events: list[Event]

    @cached_property
    def hash(self) -> bytes:
        return self.header.hash

    def encode(self) -> bytes:
        w = Writer().raw(self.header.encode()).varint(len(self.events))
        for event in self.events:
            w.var_bytes(event.raw)
        return bytes(w)

    @cached_property
    def size(self) -> int:
        return len(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> Block:
        if len(data) > MAX_BLOCK_DECODE:
            raise DecodeError("block too large to decode")

        def read(r: Reader) -> Block:
            header = Header.decode(r.fixed(HEADER_SIZE))
            count = r.varint(MAX_EVENTS_DECODE)
            events: list[Event] = []
            for _ in range(count):
                events.append(decode_all(r.var_bytes(MAX_BLOCK_DECODE), read_event))
            return Block(header, events)

        block = decode_all(data, read)
        block.__dict__["size"] = len(data)  # canonical, so the encoding is the input
        return block
