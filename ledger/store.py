"""The ledger's records in the node's one LevelDB database (blocks, header index, height and
event indexes, undo records, the persisted mempool, the tip; the key layout is
:mod:`chain.core.schema`). The global tree lives in the same database under its own prefix, so
a block's connect writes both in a single atomic batch."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import ParamSpec, TypeVar

import plyvel

from chain.core.block import Block
from chain.core.encoding import Reader, Writer, decode_all
from chain.core.errors import DecodeError
from chain.core.header import HEADER_SIZE, Header
from chain.core.schema import (
    BLOCK,
    EVENT,
    HEIGHT,
    INDEX,
    META_NETWORK,
    META_SCHEMA,
    PENDING,
    TIP,
    UNDO,
)
from ledger.errors import CorruptLedger, DatadirLocked, LedgerError

P = ParamSpec("P")
T = TypeVar("T")

#: The database layout: 2 keeps the state tree's nodes by path, then depth (1 kept them by
#: depth first; a chain state opening a schema 1 database rebuilds its nodes).
SCHEMA = b"2"
_HEIGHT = struct.Struct(">Q")


class Status(IntEnum):
    VALID_HEADER = 0  # stored, passed every check that needs no chain state
    CONNECTED_ONCE = 1  # has been connected: its events applied cleanly at least once
    INVALID = 2  # failed a consensus rule; never reconsidered


@dataclass(slots=True)
class IndexEntry:
    header: Header
    hash: bytes
    height: int
    work: int
    status: Status

    def encode(self) -> bytes:
        w = Writer().raw(self.header.encode()).varint(self.height)
        return bytes(w.var_bytes(self.work.to_bytes(33, "big").lstrip(b"\0")).u8(self.status))

    @classmethod
    def decode(cls, block_hash: bytes, data: bytes) -> IndexEntry:
        def read(r: Reader) -> IndexEntry:
            header = Header.decode(r.fixed(HEADER_SIZE))
            height = r.varint()
            work = int.from_bytes(r.var_bytes(33), "big")
            return cls(header, block_hash, height, work, Status(r.u8()))

        return decode_all(data, read)


def _writing(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn a failed database write (a full disk, an I/O error) into a :class:`LedgerError`:
    LevelDB then refuses every later write too, and the caller stops with one clear message
    instead of a traceback. What was written atomically before stays; nothing half-written
    becomes visible."""

    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except plyvel.Error as exc:
            raise LedgerError(f"database write failed: {reason(exc)}") from exc

    return guarded


def reason(exc: BaseException) -> str:
    """LevelDB's message as text: plyvel carries it as bytes, which ``str`` shows as ``b'…'``."""
    arg = exc.args[0] if len(exc.args) == 1 else None
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(exc)


class Batch:
    """One atomic change to the database; nothing is visible until :meth:`commit`."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store
        self._wb = store.db.write_batch(transaction=True, sync=True)

    def put(self, key: bytes, value: bytes) -> None:
        self._wb.put(key, value)

    def delete(self, key: bytes) -> None:
        self._wb.delete(key)

    @_writing
    def commit(self) -> None:
        self._wb.write()


class LedgerStore:
    def __init__(self, path: Path, network: str) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        try:
            # a bloom filter per table (10 bits a key, as Bitcoin Core's chainstate): a read of
            # an absent key (a new principal's account, a new contract) then skips the tables
            # that cannot hold it instead of searching one per level
            self.db = plyvel.DB(str(path), create_if_missing=True, lru_cache_size=64 << 20,
                                write_buffer_size=32 << 20, max_open_files=500,
                                bloom_filter_bits=10)
        except plyvel.IOError as exc:
            if "lock" in str(exc).lower():
                raise DatadirLocked(
                    f"the database at {path} is in use by another process (is a node running?)"
                ) from exc
            raise LedgerError(f"cannot open the database at {path}: {reason(exc)}") from exc
        except plyvel.Error as exc:
            raise LedgerError(f"cannot open the database at {path}: {reason(exc)}") from exc
        stored = self.db.get(META_NETWORK)
        if stored is None:
            self.put_meta(META_NETWORK, network.encode())
            self.put_meta(META_SCHEMA, SCHEMA)
        elif stored.decode() != network:
            self.db.close()
            raise LedgerError(f"the database at {path} belongs to network {stored.decode()!r}")

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()

    @_writing
    def get_meta(self, key: bytes) -> bytes | None:
        return self._get(key)

    def put_meta(self, key: bytes, value: bytes) -> None:
        """A synced write of one marker or setting (``M`` keys)."""
        self.db.put(key, value, sync=True)

    @_writing
    def delete_meta(self, key: bytes) -> None:
        self.db.delete(key, sync=True)

    def batch(self) -> Batch:
        return Batch(self)

    # --- blocks and index -------------------------------------------------------------------

    @_writing
    def put_block(self, block: Block, entry: IndexEntry) -> None:
        """Store a block and its index entry; durable once any later synced write lands."""
        with self.db.write_batch(transaction=True) as wb:
            wb.put(BLOCK + entry.hash, block.encode())
            wb.put(INDEX + entry.hash, entry.encode())

    @_writing
    def put_index(self, entry: IndexEntry, batch: Batch | None = None) -> None:
        if batch is not None:
            batch.put(INDEX + entry.hash, entry.encode())
        else:
            self.db.put(INDEX + entry.hash, entry.encode())

    def get_block(self, block_hash: bytes) -> Block | None:
        raw = self.db.get(BLOCK + block_hash)
        if raw is None:
            return None
        try:
            return Block.decode(raw)
        except DecodeError as exc:
            raise CorruptLedger(f"stored block {block_hash[::-1].hex()} does not decode") from exc

    def get_block_bytes(self, block_hash: bytes) -> bytes | None:
        return self._get(BLOCK + block_hash)

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.db.get(key)
        return value

    def iter_index(self) -> Iterator[IndexEntry]:
        for key, value in self.db.iterator(prefix=INDEX):
            try:
                yield IndexEntry.decode(key[1:], value)
            except DecodeError as exc:
                raise CorruptLedger("a header index entry does not decode") from exc

    # --- best chain -------------------------------------------------------------------------

    def tip(self) -> bytes | None:
        return self._get(TIP)

    def hash_at(self, height: int) -> bytes | None:
        return self._get(HEIGHT + _HEIGHT.pack(height))

    def event_location(self, event_id: bytes) -> tuple[bytes, int] | None:
        raw = self.db.get(EVENT + event_id)
        if raw is None:
            return None
        return raw[:32], int.from_bytes(raw[32:], "big")

    def get_undo(self, block_hash: bytes) -> bytes | None:
        return self._get(UNDO + block_hash)

    @staticmethod
    def connect_keys(
        batch: Batch, block_hash: bytes, height: int, event_ids: list[bytes], undo: bytes
    ) -> None:
        batch.put(HEIGHT + _HEIGHT.pack(height), block_hash)
        for i, eid in enumerate(event_ids):
            batch.put(EVENT + eid, block_hash + i.to_bytes(4, "big"))
        batch.put(UNDO + block_hash, undo)
        batch.put(TIP, block_hash)

    @staticmethod
    def disconnect_keys(
        batch: Batch, block_hash: bytes, prev_hash: bytes, height: int, event_ids: list[bytes]
    ) -> None:
        batch.delete(HEIGHT + _HEIGHT.pack(height))
        for eid in event_ids:
            batch.delete(EVENT + eid)
        batch.delete(UNDO + block_hash)
        batch.put(TIP, prev_hash)

    # --- persisted mempool ------------------------------------------------------------------

    def pending(self) -> Iterator[bytes]:
        for _, value in self.db.iterator(prefix=PENDING):
            yield value

    @_writing
    def put_pending(self, event_id: bytes, raw: bytes) -> None:
        self.db.put(PENDING + event_id, raw)

    @_writing
    def delete_pending(self, event_ids: list[bytes]) -> None:
        with self.db.write_batch() as wb:
            for eid in event_ids:
                wb.delete(PENDING + eid)

    # --- wiping derived state ---------------------------------------------------------------

    @_writing
    def wipe_prefixes(self, prefixes: list[bytes]) -> None:
        """Delete every key under ``prefixes`` (used by reindex before refolding)."""
        for prefix in prefixes:
            wb = self.db.write_batch()
            for count, key in enumerate(self.db.iterator(prefix=prefix, include_value=False), 1):
                wb.delete(key)
                if count % 50_000 == 0:
                    wb.write()
                    wb = self.db.write_batch()
            wb.write()
