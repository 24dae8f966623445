"""Retrieval: a block back from any ``k`` of its hosts.

``/global/fragments/<path>`` names, per fragment index, the hosts holding it and the Merkle
root each holds it under. The reader picks the newest version with at least ``k`` indexes
held, fetches ``k`` fragments in parallel (data fragments first: they decode with no work),
checks each whole fragment against its root, decodes the block record, checks its digests,
and opens it with the reader's readcap. A host that is down, refuses, stalls, or sends bytes
that do not match the root is skipped and the next holder (or the next index) is used, so one
bad host costs one extra fetch, not the retrieval.

The same fetch serves repair: the owner rebuilds a lost fragment from any ``k`` others.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from chain.core.keys import KeyPair
from storage_market import fragments, sha256x
from storage_market import protocol as proto
from storage_market.blockstore import BlockHeader, StoredBlock
from storage_market.chainclient import ChainClient, ContractInfo, Holder
from storage_market.crypto import fresh_buffer, unseal_to, valid_path
from storage_market.errors import BlockNotFound, IntegrityError, NotEnoughFragments, StorageError
from storage_market.jsonstate import fsync_dir
from storage_market.merkle import leaf_count
from storage_market.striping import recover_in_place

Progress = Callable[[int], None]
FETCH_TIMEOUT = 30.0


@dataclass(slots=True)
class Placement:
    """The fragments of one version of a block, as the chain knows them."""

    path: str
    version: bytes
    k: int
    n: int
    size: int
    leaf_size: int
    holders: dict[int, list[Holder]]

    @property
    def total(self) -> int:
        """Bytes a reader downloads: ``k`` fragments."""
        return self.k * self.size


async def placement(chain: ChainClient, path: str) -> Placement:
    """The newest version of ``path`` that has at least ``k`` fragment indexes held."""
    valid_path(path)
    held = await chain.fragments(path)
    if not held:
        raise BlockNotFound(f"no fragments of {path} are stored on chain")
    versions: dict[bytes, tuple[ContractInfo, dict[int, list[Holder]]]] = {}
    for index, holders in held.items():
        for h in holders:
            info = await chain.contract(h.contract)
            if info is None:
                continue
            entry = versions.setdefault(info.offer.version, (info, {}))
            if info.offer_height > entry[0].offer_height:
                entry = versions[info.offer.version] = (info, entry[1])
            entry[1].setdefault(index, []).append(h)
    usable = [(info, hs) for info, hs in versions.values() if len(hs) >= info.offer.k]
    if not usable:
        best = max(len(hs) for _, hs in versions.values()) if versions else 0
        raise NotEnoughFragments(f"{path}: at most {best} fragment indexes held, too few to decode")
    info, hs = max(usable, key=lambda item: item[0].offer_height)
    o = info.offer
    return Placement(path, o.version, o.k, o.n, o.size, o.leaf_size, hs)


class _Landing:
    """Where one fragment's chunks land: decrypted straight into place (see :meth:`into`) and
    their leaves hashed by a worker thread (the kernel releases the GIL) while the event loop
    receives and decrypts the next chunk. At most one job is in flight, so leaves are hashed in
    order as they complete."""

    def __init__(self, buf: memoryview, leaf_size: int) -> None:
        self.buf = buf
        self.leaf_size = leaf_size
        self.digests = bytearray(leaf_count(buf.nbytes, leaf_size) * sha256x.DIGEST)
        self.received = 0
        self.hashed = 0  # whole leaves hashed
        self._job: asyncio.Future[None] | None = None

    def into(self, offset: int) -> memoryview:
        """The place of the chunk that starts ``offset`` bytes into the fragment."""
        return self.buf[offset : offset + proto.CHUNK_SIZE]

    async def sink(self, chunk: memoryview) -> None:
        await self.drain()
        start, self.received = self.received, self.received + len(chunk)
        upto = self.received // self.leaf_size
        first, self.hashed = self.hashed, upto
        self._job = asyncio.ensure_future(
            asyncio.to_thread(self._land, chunk, start, first, upto))

    def _land(self, chunk: memoryview, start: int, first: int, upto: int) -> None:
        if chunk.obj is not self.buf.obj:  # not received in place (it did not fit there)
            self.buf[start : start + len(chunk)] = chunk
        if upto > first:
            leaf, d = self.leaf_size, sha256x.DIGEST
            sha256x.leaf_digests_into(self.buf[first * leaf : upto * leaf], leaf,
                                      memoryview(self.digests)[first * d : upto * d])

    async def drain(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            await job

    def root(self) -> bytes:
        """The root over everything received (call after :meth:`drain`)."""
        if self.hashed * self.leaf_size < self.received:  # a short last leaf
            d = sha256x.DIGEST
            sha256x.leaf_digests_into(self.buf[self.hashed * self.leaf_size : self.received],
                                      self.leaf_size, memoryview(self.digests)[self.hashed * d :])
        return sha256x.root_of(self.digests)


async def fetch_fragment(chain: ChainClient, key: KeyPair, holder: Holder,
                         progress: Progress | None = None, timeout: float = FETCH_TIMEOUT,
                         leaf_size: int = 1024, into: memoryview | None = None) -> memoryview:
    """One fragment from one holder, checked against its root on chain.

    The fragment is received into ``into`` (``holder.size`` bytes) or a new buffer, and its
    leaves are hashed while it streams in, so the root is known moments after the last chunk.
    Whatever the outcome, no worker still writes to ``into`` once this returns or raises.
    """
    channel = await proto.dial(holder.address, key, chain.chain_id, holder.host)
    buf = into if into is not None else memoryview(bytearray(holder.size))
    if buf.nbytes != holder.size:
        raise ValueError(f"a buffer of {buf.nbytes} bytes for a {holder.size}-byte fragment")
    landing = _Landing(buf, leaf_size)

    async def sink(chunk: memoryview) -> None:
        await landing.sink(chunk)
        if progress is not None:
            progress(len(chunk))

    try:
        async with channel:
            await proto.send(channel, proto.Retrieve(holder.contract))
            await proto.recv_fragment(channel, holder.contract, holder.size, sink, timeout,
                                      landing.into)
    finally:
        await landing.drain()
    root = await asyncio.to_thread(landing.root)
    if root != holder.root:
        raise IntegrityError(f"fragment {holder.index} from {holder.host} does not match its root")
    return buf


async def fetch_fragments(chain: ChainClient, key: KeyPair, place: Placement, *,
                          skip: set[int] | None = None, progress: Progress | None = None,
                          errors: list[str] | None = None,
                          slots: memoryview | None = None) -> dict[int, memoryview]:
    """Any ``k`` verified fragments of ``place`` (indexes in ``skip`` are not used).

    ``k`` workers each bring one fragment, trying the next index when every holder of theirs
    fails, so exactly ``k`` fragments are downloaded when all goes well. With ``slots``
    (``n * size`` bytes), fragment ``i`` is received into its ``i``-th slot, so fragments
    ``0..k-1`` together are the padded record already in place.
    """
    queue = [i for i in sorted(place.holders) if not skip or i not in skip]
    got: dict[int, memoryview] = {}
    failures = errors if errors is not None else []
    size = place.size

    async def worker() -> None:
        while queue:
            index = queue.pop(0)
            into = None if slots is None else slots[index * size : (index + 1) * size]
            for holder in place.holders[index]:
                try:
                    got[index] = await fetch_fragment(chain, key, holder, progress,
                                                      leaf_size=place.leaf_size, into=into)
                    return
                except StorageError as exc:
                    failures.append(f"fragment {index} from {holder.host}: {exc}")

    await asyncio.gather(*(worker() for _ in range(place.k)))
    if len(got) < place.k:
        raise NotEnoughFragments(
            f"{place.path}: only {len(got)} of {place.k} fragments could be fetched"
            + (f" ({'; '.join(failures[-3:])})" if failures else ""))
    return dict(sorted(got.items())[: place.k])


async def _fetch_record(chain: ChainClient, key: KeyPair, place: Placement,
                        progress: Callable[[int, int], None] | None,
                        errors: list[str] | None, slots: memoryview) -> memoryview:
    """The decoded (not yet checked) record of ``place``, in ``slots`` (``n`` fragments'
    room: only the ``k`` fetched are ever written, and a missing data fragment is recovered
    in its slot, so no second buffer is needed)."""
    if place.size >= sha256x.MIN_LOAD_COUNT * place.leaf_size:
        sha256x.load_in_background()  # chunks are hashed with hashlib until it is there
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, place.total)

    got = await fetch_fragments(chain, key, place, progress=tick, errors=errors, slots=slots)
    record = await asyncio.to_thread(recover_in_place, slots, got, place.k, place.n)
    return fragments.decode_contiguous(record, place.k)


def _check_identity(block: StoredBlock, place: Placement, path: str) -> None:
    if block.path != path or block.version != place.version:
        raise IntegrityError(f"fragments of {path} decode to another block ({block.path})")


async def get_block(chain: ChainClient, key: KeyPair, path: str,
                    progress: Callable[[int, int], None] | None = None,
                    errors: list[str] | None = None) -> StoredBlock:
    """The block record at ``path``, rebuilt from its hosts and checked (not yet opened)."""
    place = await placement(chain, path)
    slots = fresh_buffer(place.n * place.size)  # pages never written are never allocated
    record = await _fetch_record(chain, key, place, progress, errors, slots)
    block = await asyncio.to_thread(StoredBlock.decode, record)
    _check_identity(block, place, path)
    return block


async def get(chain: ChainClient, key: KeyPair, path: str,
              progress: Callable[[int, int], None] | None = None,
              errors: list[str] | None = None) -> bytearray:
    """The plaintext of the block at ``path``, for a reader holding a readcap (``key``)."""
    block = await get_block(chain, key, path, progress, errors)
    return await asyncio.to_thread(block.open, block.block_key(key))


async def get_to_file(chain: ChainClient, key: KeyPair, path: str, output: Path,
                      progress: Callable[[int, int], None] | None = None,
                      errors: list[str] | None = None) -> int:
    """Write the plaintext of the block at ``path`` to ``output``; its size.

    Memory does not grow with the block: the fragments land in a mapped temporary file beside
    ``output`` (page cache, which the kernel can write back and reclaim), a missing data
    fragment is recovered there a stripe at a time, and the payload is opened piece by piece
    into a second temporary file, renamed over ``output`` only once the AEAD tag has checked
    every byte (unauthenticated plaintext never appears under the name asked for). Nothing is
    left behind on failure.
    """
    place = await placement(chain, path)
    # names of their own: another get of the same output must not truncate a file mapped here
    token = secrets.token_hex(6)
    parts = output.with_name(f".{output.name}.{token}.fragments")
    part = output.with_name(f".{output.name}.{token}.part")
    try:
        with open(parts, "w+b") as fh:
            block = await _fetch_to_file(chain, key, place, fh, progress, errors)
        size = await asyncio.to_thread(_open_to, block, block.block_key(key), part)
        part.replace(output)
        return size
    finally:
        part.unlink(missing_ok=True)
        parts.unlink(missing_ok=True)


async def fetch_record_file(chain: ChainClient, key: KeyPair, path: str, version: bytes,
                            target: Path, progress: Callable[[int, int], None] | None = None,
                            errors: list[str] | None = None) -> BlockHeader:
    """Rebuild the record of ``version`` of ``path`` from its hosts as the file ``target`` (an
    owner's lost local record), without holding it in memory: the fragments land in a
    temporary file whose first ``k`` slots, once a missing data fragment is recovered in
    place, are the record itself; the file is cut to the record's length, synced and renamed
    over ``target``. Another version held by the hosts is an :class:`IntegrityError`, and
    ``target`` is left as it was."""
    place = await placement(chain, path)
    if place.version != version:
        raise IntegrityError(f"hosts hold another version of {path}")
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "w+b") as fh:
            block = await _fetch_to_file(chain, key, place, fh, progress, errors)
            header, length = block.header, block.record.nbytes
            del block  # nothing reads the mapping past this point: the file is cut below it
            fh.truncate(length)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
        return header
    finally:
        tmp.unlink(missing_ok=True)


async def _fetch_to_file(chain: ChainClient, key: KeyPair, place: Placement, fh: BinaryIO,
                         progress: Callable[[int, int], None] | None,
                         errors: list[str] | None) -> StoredBlock:
    """The checked record of ``place``, fetched into the mapped file ``fh`` (page cache, which
    the kernel can write back and reclaim: memory does not grow with the block)."""
    fh.truncate(place.n * place.size)  # sparse: only the fetched slots take room
    slots = memoryview(mmap.mmap(fh.fileno(), place.n * place.size))
    record = await _fetch_record(chain, key, place, progress, errors, slots)
    block = await asyncio.to_thread(StoredBlock.decode, record)
    _check_identity(block, place, place.path)
    return block


def _open_to(block: StoredBlock, block_key: bytes, target: Path) -> int:
    with open(target, "wb") as out:
        return unseal_to(block_key, block.path, block.version, block.payload, out.write)
