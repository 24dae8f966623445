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
from collections.abc import Callable
from dataclasses import dataclass

from chain.keys import KeyPair
from storage_market import fragments
from storage_market import protocol as proto
from storage_market.blockstore import StoredBlock
from storage_market.chainclient import ChainClient, ContractInfo, Holder
from storage_market.crypto import valid_path
from storage_market.errors import BlockNotFound, IntegrityError, NotEnoughFragments, StorageError
from storage_market.merkle import merkle_root

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


async def fetch_fragment(chain: ChainClient, key: KeyPair, holder: Holder,
                         progress: Progress | None = None, timeout: float = FETCH_TIMEOUT,
                         leaf_size: int = 1024) -> bytearray:
    """One fragment from one holder, checked against its root on chain."""
    channel = await proto.dial(holder.address, key, chain.chain_id, holder.host)
    buf = bytearray(holder.size)
    view = memoryview(buf)
    pos = 0

    def sink(chunk: bytes) -> None:
        nonlocal pos
        view[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
        if progress is not None:
            progress(len(chunk))

    async with channel:
        await proto.send(channel, proto.Retrieve(holder.contract))
        await proto.recv_fragment(channel, holder.contract, holder.size, sink, timeout)
    root = await asyncio.to_thread(merkle_root, buf, leaf_size)
    if root != holder.root:
        raise IntegrityError(f"fragment {holder.index} from {holder.host} does not match its root")
    return buf


async def fetch_fragments(chain: ChainClient, key: KeyPair, place: Placement, *,
                          skip: set[int] | None = None, progress: Progress | None = None,
                          errors: list[str] | None = None) -> dict[int, bytearray]:
    """Any ``k`` verified fragments of ``place`` (indexes in ``skip`` are not used)."""
    queue = [i for i in sorted(place.holders) if not skip or i not in skip]
    got: dict[int, bytearray] = {}
    failures = errors if errors is not None else []

    async def worker() -> None:
        while queue and len(got) < place.k:
            index = queue.pop(0)
            for holder in place.holders[index]:
                try:
                    got[index] = await fetch_fragment(chain, key, holder, progress,
                                                      leaf_size=place.leaf_size)
                    break
                except StorageError as exc:
                    failures.append(f"fragment {index} from {holder.host}: {exc}")

    await asyncio.gather(*(worker() for _ in range(place.k)))
    if len(got) < place.k:
        raise NotEnoughFragments(
            f"{place.path}: only {len(got)} of {place.k} fragments could be fetched"
            + (f" ({'; '.join(failures[-3:])})" if failures else ""))
    return dict(sorted(got.items())[: place.k])


async def get_block(chain: ChainClient, key: KeyPair, path: str,
                    progress: Callable[[int, int], None] | None = None,
                    errors: list[str] | None = None) -> StoredBlock:
    """The block record at ``path``, rebuilt from its hosts and checked (not yet opened)."""
    place = await placement(chain, path)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, place.total)

    got = await fetch_fragments(chain, key, place, progress=tick, errors=errors)
    record = fragments.decode(got, place.k, place.n)
    block = StoredBlock.decode(record)
    if block.path != path or block.version != place.version:
        raise IntegrityError(f"fragments of {path} decode to another block ({block.path})")
    return block


async def get(chain: ChainClient, key: KeyPair, path: str,
              progress: Callable[[int, int], None] | None = None,
              errors: list[str] | None = None) -> bytearray:
    """The plaintext of the block at ``path``, for a reader holding a readcap (``key``)."""
    block = await get_block(chain, key, path, progress, errors)
    return block.open(block.block_key(key))
