"""Fragment files on a host's disk: one per contract, written atomically and checked by root.

A fragment streams in chunk by chunk; :class:`FragmentWriter` writes each chunk and hashes its
leaves in a worker thread while the next one arrives, and makes the file durable under its final
name only if the whole fragment matches the Merkle root on chain, so a host never signs a receipt
for bytes it does not hold. The root is also the file's checksum: a host re-hashes every fragment
on start, and reads the leaves a period's seed picks from disk (never from memory) to prove
them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from chain.core.events import FragmentOffer
from storage_market import protocol as proto
from storage_market import sha256x
from storage_market.crypto import Bytes
from storage_market.errors import IntegrityError
from storage_market.jsonstate import fsync_dir, start_writeback
from storage_market.merkle import DIGEST, HashTree, leaf_count


class FragmentStore:
    """Fragment files on disk, one per contract, written atomically and checked by root."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(".*.tmp"):  # interrupted fetches
            stale.unlink(missing_ok=True)

    def file_for(self, offer_id: bytes) -> Path:
        return self.directory / f"{offer_id.hex()}.frag"

    def open_writer(self, offer_id: bytes, offer: FragmentOffer) -> FragmentWriter:
        return FragmentWriter(self, offer_id, offer)

    def load_tree(self, offer_id: bytes, offer: FragmentOffer) -> HashTree:
        """Hash the stored fragment again; IntegrityError if it is gone or does not match."""
        try:
            data = self.file_for(offer_id).read_bytes()
        except FileNotFoundError as exc:
            raise IntegrityError(f"fragment {offer_id.hex()[:16]} is missing") from exc
        if len(data) != offer.size:
            raise IntegrityError(f"fragment {offer_id.hex()[:16]} has {len(data)} bytes")
        tree = HashTree.of(data, offer.leaf_size)
        if tree.root != offer.root:
            raise IntegrityError(f"fragment {offer_id.hex()[:16]} no longer matches its root")
        return tree

    def read_leaves(self, offer_id: bytes, offer: FragmentOffer, indexes: Sequence[int]
                    ) -> list[bytes]:
        out = []
        with open(self.file_for(offer_id), "rb") as fh:
            for i in indexes:
                fh.seek(i * offer.leaf_size)
                leaf = fh.read(offer.leaf_size)
                if not leaf:
                    raise IntegrityError(f"leaf {i} is missing from the stored fragment")
                out.append(leaf)
        return out

    def delete(self, offer_id: bytes) -> None:
        target = self.file_for(offer_id)
        if target.exists():
            target.unlink()
            fsync_dir(self.directory)

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob("*.frag"))


class FragmentWriter:
    """Streams a fragment into a temporary file, hashing leaves on the way; ``commit`` makes it
    durable under its final name only if the whole fragment matches the root on chain."""

    def __init__(self, store: FragmentStore, offer_id: bytes, offer: FragmentOffer) -> None:
        self.store = store
        self.offer_id = offer_id
        self.offer = offer
        self.tmp = store.directory / f".{offer_id.hex()}.{secrets.token_hex(4)}.tmp"
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.digests = bytearray(leaf_count(offer.size, offer.leaf_size) * DIGEST)
        self.hashed = 0  # leaves hashed so far
        self.tail = b""
        self.written = 0
        self._inflight: asyncio.Future[None] | None = None
        # chunks are received into these in turn: one is being written while the next arrives
        self._buffers = (bytearray(proto.CHUNK_SIZE), bytearray(proto.CHUNK_SIZE))
        self._turn = 1

    def next_buffer(self, _offset: int) -> bytearray:
        """Where to receive the next chunk: the buffer the job in flight is not using (``write``
        waits for the previous job before it starts the next)."""
        self._turn ^= 1
        return self._buffers[self._turn]

    async def write(self, chunk: Bytes) -> None:
        """Write the chunk and hash its whole leaves in a worker thread (both release the GIL)
        while the event loop receives and decrypts the next one; at most one job is in
        flight, so the file and the digests are filled in order."""
        await self._drain()
        if self.written + len(chunk) > self.offer.size:
            raise IntegrityError(f"more than the {self.offer.size} bytes on chain")
        self.written += len(chunk)
        leaf = self.offer.leaf_size
        data = self.tail + chunk if self.tail else chunk
        full = len(data) - len(data) % leaf
        first = self.hashed
        self.hashed += full // leaf
        self.tail = bytes(data[full:])
        self._inflight = asyncio.ensure_future(
            asyncio.to_thread(self._write_and_hash, chunk, self.written - len(chunk), data, full,
                              first))

    def _write_and_hash(self, chunk: Bytes, offset: int, data: Bytes, full: int,
                        first: int) -> None:
        view = memoryview(chunk)
        while view.nbytes:
            view = view[os.write(self.fd, view):]
        start_writeback(self.fd, offset, len(chunk))  # so that commit's fsync is short
        if full:
            out = memoryview(self.digests)[first * DIGEST : (first + full // self.offer.leaf_size)
                                           * DIGEST]
            sha256x.leaf_digests_into(memoryview(data)[:full], self.offer.leaf_size, out)

    async def _drain(self) -> None:
        pending, self._inflight = self._inflight, None
        if pending is not None:
            await pending

    async def commit(self) -> HashTree:
        await self._drain()
        try:
            if self.written != self.offer.size:
                raise IntegrityError(f"received {self.written} of {self.offer.size} bytes")
            if self.tail:
                sha256x.leaf_digests_into(self.tail, self.offer.leaf_size,
                                          memoryview(self.digests)[self.hashed * DIGEST :])
                self.tail = b""
            tree = await asyncio.to_thread(HashTree, self.digests, self.offer.size,
                                           self.offer.leaf_size)
            if tree.root != self.offer.root:
                raise IntegrityError("fetched fragment does not match the root on chain")
            await asyncio.to_thread(os.fsync, self.fd)
        except BaseException:
            self.abort()
            raise
        os.close(self.fd)
        self.fd = -1
        os.replace(self.tmp, self.store.file_for(self.offer_id))
        await asyncio.to_thread(fsync_dir, self.store.directory)  # not on the event loop
        return tree

    def abort(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            # the worker still uses the descriptor: close it once the write returns
            fd = self.fd
            self._inflight.add_done_callback(lambda _done: os.close(fd))
            self._inflight = None
            self.fd = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)
