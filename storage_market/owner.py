"""The owner agent: a local blocktree buying storage for its blocks and keeping them placed.

``put`` seals a file as the block at a path (readcap for the owner's key, block key wrapped
under the parent's), keeps the record in the local :class:`~storage_market.blockstore.BlockStore`,
erasure-codes it into ``n`` fragments, commits to each with a Merkle root, and publishes one
``FragmentOffer`` per fragment, which escrows ``price × periods`` on chain. Hosts then call in
(the agent listens at the address it announced) to fetch a fragment; the owner hands each offer
to one host at a time, at most one fragment of a block per host, checks the host's signed
receipt and publishes ``FragmentStored``, which locks the host's collateral.

From then on the chain runs the contract: the host proves each period from the block hash that
opens it and is paid from the escrow, whether or not this agent runs. The agent is needed only
to place, to extend, and to repair: when it sees on chain that a host missed ``repair_after``
periods (or the chain ended the contract for too many misses), it releases the contract (the
rest of the escrow comes back), refuses that host for the block from then on, and offers the
same fragment (same bytes, same root) again, served from the local record or, if the record is
gone, rebuilt from any ``k`` other hosts. Offers nobody took before their expiry (their escrow
refunded by the chain) are simply published again.

The agent's state is kept in ``<datadir>/store/state.json`` (atomically, by a worker thread, see
:class:`storage_market.jsonstate.StateFile`): what it must not act on before it is durable (a
stored fragment before the host is told, a put's offers before ``put`` returns) is flushed
first; what only follows the chain is written in the background. Block records live in
``<datadir>/store/blocks``, so a restarted owner carries on with the same contracts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain.core.aio import settle, stop_tasks
from chain.core.errors import BlockcoinError, ValidationError
from chain.core.events import (
    Announce,
    FragmentExtended,
    FragmentOffer,
    FragmentReleased,
    FragmentStored,
    extension_message,
    receipt_message,
)
from chain.core.keys import PublicKeys, verify
from chain.core.paths import check_path
from chain.core.principal import Principal
from chain.core.units import format_coins, format_size
from chain.net.channel import SecureChannel
from storage_market import fragments, retrieve, sha256x
from storage_market import protocol as proto
from storage_market.blockstore import KIND_DIR, KIND_FILE, BlockStore, RecordFile, StoredBlock
from storage_market.chainclient import ChainClient, ContractInfo, Signer
from storage_market.crypto import (
    Plaintext,
    new_block_key,
    parent_path,
    plaintext_length,
    valid_path,
)
from storage_market.errors import BlockNotFound, IntegrityError, StorageError
from storage_market.jsonstate import StateFile, read_json
from storage_market.merkle import DEFAULT_LEAF_SIZE, check_leaf_size
from storage_market.striping import RecordFragments

log = logging.getLogger("blockcoin.owner")

RESERVATION_SECONDS = 60.0
EXCHANGE_TIMEOUT = 30.0

# slot states
OFFERING = "offering"  # an offer is out; no host yet
STORED = "stored"  # a host's receipt published; waiting for it on chain
ACTIVE = "active"
ENDED = "ended"  # all periods over

ProgressFn = Callable[[str, int, int], None]


@dataclass(slots=True)
class StoreOptions:
    """How a block is stored: code, price and the host's collateral per fragment per period,
    duration, and how many missed proofs the owner tolerates before it repairs."""

    k: int = fragments.DEFAULT_K
    n: int = fragments.DEFAULT_N
    price: int = 100_000
    collateral: int = 100_000
    periods: int = 12
    period_blocks: int | None = None  # the network's default
    leaf_size: int = DEFAULT_LEAF_SIZE
    offer_ttl: int = 100  # blocks an offer stays open
    repair_after: int = 1  # missed periods on chain before the owner releases and repairs
    fee_rate: int | None = None  # per byte; None: the network's minimum

    def check(self) -> None:
        fragments.check_params(self.k, self.n)
        check_leaf_size(self.leaf_size)
        if self.price <= 0 or self.periods <= 0 or self.offer_ttl <= 0:
            raise StorageError("price, periods and offer lifetime are positive")
        if self.collateral < 0:
            raise StorageError("the collateral asked of a host is not negative")
        if self.period_blocks is not None and self.period_blocks <= 0:
            raise StorageError("a period is at least one block")
        if self.repair_after < 1:
            raise StorageError("repair after at least one missed period")


@dataclass(slots=True)
class Slot:
    """One fragment index of a block and the contract currently carrying it."""

    index: int
    offer_id: bytes = b""
    state: str = OFFERING
    host: Principal | None = None
    offered_height: int = 0
    start: int = 0
    misses: int = 0  # as the chain counts them
    proven: int = 0
    paid: int = 0
    failed_hosts: list[Principal] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    # in memory only: a host fetching the fragment right now
    reserved_by: Principal | None = None
    reserved_until: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "offer_id": self.offer_id.hex(), "state": self.state,
            "host": str(self.host) if self.host else None, "offered_height": self.offered_height,
            "start": self.start, "misses": self.misses, "proven": self.proven, "paid": self.paid,
            "failed_hosts": [str(h) for h in self.failed_hosts], "history": self.history,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Slot:
        return cls(
            int(d["index"]), bytes.fromhex(d["offer_id"]), str(d["state"]),
            Principal.parse(d["host"]) if d.get("host") else None, int(d["offered_height"]),
            int(d["start"]), int(d["misses"]), int(d.get("proven", 0)), int(d.get("paid", 0)),
            [Principal.parse(h) for h in d.get("failed_hosts", [])], list(d.get("history", [])),
        )


@dataclass(slots=True)
class BlockEntry:
    """A block this owner has put on the market."""

    path: str
    version: bytes
    k: int
    n: int
    record_size: int
    fragment_size: int
    leaf_size: int
    price: int
    periods: int
    period_blocks: int
    roots: list[bytes]
    slots: list[Slot]
    options: StoreOptions
    source: str = ""  # what the data was read from (size, mtime, inode), to know a rerun

    def to_json(self) -> dict[str, Any]:
        o = self.options
        return {
            "path": self.path, "version": self.version.hex(), "k": self.k, "n": self.n,
            "source": self.source,
            "record_size": self.record_size, "fragment_size": self.fragment_size,
            "leaf_size": self.leaf_size, "price": self.price, "periods": self.periods,
            "period_blocks": self.period_blocks, "roots": [r.hex() for r in self.roots],
            "slots": [s.to_json() for s in self.slots],
            "options": {"offer_ttl": o.offer_ttl, "collateral": o.collateral,
                        "repair_after": o.repair_after, "fee_rate": o.fee_rate},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BlockEntry:
        raw = d.get("options", {})
        options = StoreOptions(k=d["k"], n=d["n"], price=d["price"], periods=d["periods"],
                               period_blocks=d["period_blocks"], leaf_size=d["leaf_size"],
                               **{k: raw[k] for k in ("offer_ttl", "collateral", "repair_after",
                                                      "fee_rate")
                                  if k in raw})
        return cls(d["path"], bytes.fromhex(d["version"]), d["k"], d["n"], d["record_size"],
                   d["fragment_size"], d["leaf_size"], d["price"], d["periods"],
                   d["period_blocks"], [bytes.fromhex(r) for r in d["roots"]],
                   [Slot.from_json(s) for s in d["slots"]], options, str(d.get("source", "")))

    def placed(self) -> int:
        return sum(1 for s in self.slots if s.state == ACTIVE)

    def live(self) -> bool:
        """Whether any of its fragments is offered, being stored or under contract."""
        return any(s.state in (OFFERING, STORED, ACTIVE) for s in self.slots)


def _parity_name(path: str, version: bytes) -> str:
    """The file name of a block version's parity fragments (a hash: no path spelling reaches
    outside the directory)."""
    return hashlib.sha256(path.encode() + b"\x00" + version).hexdigest()[:40]


def _commit(record: RecordFile) -> None:
    try:
        record.commit()
    finally:
        record.close()


class OwnerAgent:
    """Runs one owner: its blocks, its listener for fetches, its auditor."""

    def __init__(self, datadir: Path, signer: Signer, chain: ChainClient,
                 listen_host: str = "127.0.0.1", port: int = 0,
                 defaults: StoreOptions | None = None) -> None:
        self.root = Path(datadir) / "store"
        self.signer = signer
        self.key = signer.key
        self.chain = chain
        self.defaults = defaults or StoreOptions()
        self.listen_host = listen_host
        self.port = port
        self.blocks = BlockStore(self.root / "blocks")
        self.state_file = self.root / "state.json"
        self.state = StateFile(self.state_file, self._snapshot)
        self.entries: dict[str, BlockEntry] = {}
        self.address = ""
        self.height = 0
        self.events: list[str] = []
        self.sent_bytes = 0
        self.on_sent: Callable[[int], None] | None = None
        self.parity_dir = self.root / "parity"
        #: the fragments of the blocks being served, by path: the version and its coder
        self._frags: dict[str, tuple[bytes, RecordFragments]] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._listener = proto.Listener(self.key, chain.chain_id, self._handle)
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._writes: dict[str, asyncio.Future[None]] = {}
        self._putting: set[str] = set()  # paths whose put is publishing its offers
        self._load()

    @property
    def principal(self) -> Principal:
        return self.key.principal

    # --- persistence ----------------------------------------------------------------------

    def _load(self) -> None:
        data = read_json(self.state_file)
        if data is None:
            return
        for raw in data.get("blocks", []):
            entry = BlockEntry.from_json(raw)
            self.entries[entry.path] = entry

    def save(self) -> None:
        """Write the state now (blocking); the agent itself uses :attr:`state`."""
        self.state.write_now()

    def _snapshot(self) -> dict[str, Any]:
        return {
            "owner": str(self.signer.owner), "signer": str(self.principal),
            "blocks": [e.to_json() for e in self.entries.values()],
        }

    def _note(self, text: str) -> None:
        log.info("owner %s: %s", str(self.principal)[:12], text)
        self.events.append(text)
        del self.events[:-200]

    def _slot_of(self, offer_id: bytes) -> tuple[BlockEntry, Slot] | None:
        for entry in self.entries.values():
            for slot in entry.slots:
                if slot.offer_id == offer_id:
                    return entry, slot
        return None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        sha256x.load_in_background()  # ready before the first large put or fetch
        # Parity files left by an earlier process are not trusted (they were never synced):
        # fragments served again are coded again from the record.
        await asyncio.to_thread(shutil.rmtree, self.parity_dir, True)
        if await asyncio.to_thread(self.blocks.remove_temporaries):
            self._note("deleted the unfinished block records of an interrupted put")
        self.address = await self._listener.start(self.listen_host, self.port)
        acct = await self.chain.principal(self.principal)
        if acct is None or acct.address != self.address or acct.x25519 != self.key.public.x25519:
            # A node acting for another tree announces its own address (hosts fetch from the
            # offer's signer) and pays for that itself: its writecap covers paths, not the
            # tree's root, so the tree's account cannot pay for it.
            await self.signer.submit(self.chain, Announce(self.key.public.x25519, self.address),
                                     self.defaults.fee_rate, for_tree=False)
        self.height = await self.chain.tip_height()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_tasks(task)
        await self._listener.close()
        for write in list(self._writes.values()):
            await settle(write)
        self._writes.clear()
        for path in list(self._frags):
            self._drop_fragments(path)
        await self.state.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except (BlockcoinError, OSError) as exc:
                self._note(f"step failed: {exc}")
            self.height = await self.chain.wait_for_block(self.height, 1.0)

    # --- put ------------------------------------------------------------------------------

    def _ensure_parent(self, path: str) -> bytes | None:
        """The parent's block key, creating empty ancestor blocks locally where missing
        (a root block carries the owner's readcap, every other block its key wrapped under its
        parent's: the paper's rule that whoever reads a block reads everything below it)."""
        if path.count("/") == 1:
            return None
        parent = parent_path(path)
        if not self.blocks.has(parent):
            grand = self._ensure_parent(parent)
            block = StoredBlock.seal(parent, b"", new_block_key(), readers=[self.key.public],
                                     parent_key=grand, kind=KIND_DIR)
            self.blocks.put(block)
        return self.blocks.block_key(parent, self.key)

    async def put(self, path: str, data: Plaintext, options: StoreOptions | None = None,
                  progress: ProgressFn | None = None, source: str = "", *,
                  readers: Sequence[PublicKeys] = (), block_key: bytes | None = None,
                  kind: int = KIND_FILE, flush: bool = True) -> BlockEntry:
        """Seal ``data`` (bytes, or a file open for reading) as the block at ``path`` and publish
        its fragment offers.

        The block carries a readcap for this agent's key and for each of ``readers`` (the
        principals a block is shared with). Its key is ``block_key``, else the key of the
        version kept locally (a new version readable by whoever read the old one), else a fresh
        one; re-keying passes a fresh one. ``kind`` marks a directory or a link.
        ``flush=False`` leaves the state unwritten: a caller putting many blocks flushes once
        after the last (an offer whose record a crash lost expires unstored and its escrow
        comes back), instead of rewriting the whole state file per block.

        ``source`` names what the data was read from (a file's size, mtime and inode). A put of
        the same source to a path whose earlier put was interrupted carries on with that one
        (its offers, its fragments already placed) instead of starting again; an earlier put
        that placed nothing, or whose record is lost with fewer than ``k`` fragments placed, is
        released (its escrow comes back) and the data put anew. A path holding placed
        fragments of other data must be released first (:meth:`release`)."""
        opts = options or self.defaults
        opts.check()
        valid_path(path)
        if check_path(path) != self.signer.owner:
            raise StorageError(f"{path} is outside this owner's blocktree /{self.signer.owner}")
        old = self.entries.get(path)
        if old is not None and old.live():
            same = bool(source) and old.source == source
            if same and (old.placed() >= old.k or await self._record_intact(old)):
                self._note(f"resuming the put of {path}: {old.placed()} of {old.n} placed")
                return old
            if not same and old.placed() > 0:
                raise StorageError(
                    f"{path} holds other data with {old.placed()} of {old.n} fragments placed;"
                    f" release it first (blockcoin store release {path})")
            await self.release(path)
        await self._check_funds(opts)
        report = progress or (lambda stage, done, total: None)
        size = plaintext_length(data)
        report("seal", 0, size)
        await self.written(path)
        parent_key = self._ensure_parent(path)
        key = block_key
        if key is None:
            key = (self.blocks.block_key(path, self.key) if self.blocks.has(path)
                   else new_block_key())
        caps = [self.key.public, *(r for r in readers if r.principal != self.principal)]
        entry = await self._seal_and_encode(path, data, size, key, parent_key, opts, report,
                                            caps, kind)
        if old is not None:
            for slot in old.slots:
                slot.history.append({"version": old.version.hex()})
        entry.source = source
        self.entries[path] = entry
        self._putting.add(path)
        self.height = await self.chain.tip_height()
        # All offers go out together, so they land in one block: hosts racing for a new
        # block's offers then each name all of them in their own order and the owner hands
        # out distinct ones, where offers trickling in one by one had most hosts ask for the
        # same few. (Offering the data fragments before the parity exists saved nothing: the
        # put is CPU-bound by then, and their transfers only slowed the parity down.)
        try:
            for slot in entry.slots:
                await self._offer(entry, slot, save=False)
        finally:  # offers that did not go out are made by the next steps
            self._putting.discard(path)
            if flush:
                await self.state.flush()
        self._note(f"offered {path}: {opts.k}-of-{opts.n}, {format_size(entry.fragment_size)} a "
                   f"fragment, {format_coins(opts.price)} a period each for {opts.periods} periods")
        return entry

    async def written(self, path: str) -> None:
        """Until the local record of ``path``'s latest put is on disk: a block put next below
        it wraps its key under the key that record holds."""
        write = self._writes.get(path)
        if write is not None:
            await write
            if self._writes.get(path) is write:
                del self._writes[path]

    async def _record_intact(self, entry: BlockEntry) -> bool:
        """Whether the local record of the entry's version can still serve its fragments."""
        try:
            block = await asyncio.to_thread(self.blocks.get, entry.path)
        except (BlockNotFound, IntegrityError):
            return False
        return block.version == entry.version

    async def release(self, path: str, flush: bool = True) -> int:
        """End every contract and open offer of ``path`` (the escrow left comes back, the
        hosts' collateral too); the number of contracts released. ``flush`` as in :meth:`put`."""
        entry = self.entries.get(path)
        if entry is None:
            raise BlockNotFound(f"{path} is not stored by this owner")
        released = 0
        for slot in entry.slots:
            if slot.state not in (OFFERING, STORED, ACTIVE) or not slot.offer_id:
                slot.state = ENDED
                continue
            try:
                await self.signer.submit(self.chain, FragmentReleased(slot.offer_id),
                                         entry.options.fee_rate)
                released += 1
            except ValidationError as exc:  # already expired, ended or released on chain
                self._note(f"{path} #{slot.index}: nothing to release ({exc})")
            slot.state = ENDED
            self._record(slot, "released by the owner")
        self._drop_fragments(path)
        if flush:
            await self.state.flush()
        self._note(f"released {released} contract(s) of {path}")
        return released

    async def _check_funds(self, opts: StoreOptions) -> None:
        """Refuse before any work a put whose offers the tree's account cannot escrow."""
        need = opts.n * opts.price * opts.periods
        acct = await self.chain.principal(self.signer.owner)
        have = acct.balance if acct is not None else 0
        if have < need:
            raise StorageError(
                f"{self.signer.owner} has {have}; the offers escrow {need} ({opts.n} fragments"
                f" x {opts.price} x {opts.periods} periods)")

    async def _seal_and_encode(self, path: str, data: Plaintext, size: int, key: bytes,
                               parent_key: bytes | None, opts: StoreOptions,
                               report: ProgressFn, readers: Sequence[PublicKeys],
                               kind: int) -> BlockEntry:
        """Seal the block (``size`` bytes of plaintext) straight to the local store, then cut
        it into fragments and find their roots from there, a stripe at a time
        (:mod:`storage_market.striping`): the put's memory stays a few megabytes whatever
        the file's size."""
        # Sealing, coding and hashing release the GIL: they run in worker threads, so the
        # event loop keeps serving (other puts, the hosts' first fetches).
        record = await asyncio.to_thread(functools.partial(
            self.blocks.seal_file, path, data, key, readers=readers, parent_key=parent_key,
            kind=kind))
        report("seal", size, size)
        try:
            coded = RecordFragments(record.fd, record.size, opts.k, opts.n, self.parity_dir,
                                    _parity_name(path, record.header.version))
        except BaseException:
            record.close()
            raise
        # The record is made durable and put in place by a worker thread while this one codes
        # and offers; ``wait_placed`` waits for it too. A crash before then loses nothing that
        # cannot be put again from the file.
        self._writes[path] = asyncio.ensure_future(asyncio.to_thread(_commit, record))
        loop = asyncio.get_running_loop()

        def progress(done: int, total: int) -> None:
            loop.call_soon_threadsafe(report, "encode", done * size // total, size)

        report("encode", 0, size)
        try:
            roots = await asyncio.to_thread(coded.encode, range(opts.n), opts.leaf_size, progress)
        except BaseException:
            coded.close()
            raise
        self._drop_fragments(path)
        self._frags[path] = (record.header.version, coded)
        period_blocks = opts.period_blocks or self.chain.storage_period_blocks
        return BlockEntry(path, record.header.version, opts.k, opts.n, record.size, coded.size,
                          opts.leaf_size, opts.price, opts.periods, period_blocks,
                          [roots[i] for i in range(opts.n)],
                          [Slot(i) for i in range(opts.n)], opts)

    async def _offer(self, entry: BlockEntry, slot: Slot, save: bool = True) -> None:
        """Publish a (new) offer for the slot's fragment."""
        height = await self.chain.tip_height()
        offer = FragmentOffer(
            path=entry.path, version=entry.version, index=slot.index, n=entry.n, k=entry.k,
            size=entry.fragment_size, root=entry.roots[slot.index], leaf_size=entry.leaf_size,
            price=entry.price, collateral=entry.options.collateral,
            period_blocks=entry.period_blocks, periods=entry.periods,
            expiry_height=height + entry.options.offer_ttl)
        slot.offer_id = await self.signer.submit(self.chain, offer, entry.options.fee_rate)
        slot.state, slot.host, slot.start = OFFERING, None, 0
        slot.offered_height, slot.misses, slot.proven, slot.paid = height, 0, 0, 0
        slot.reserved_by = None
        if save:
            await self.state.flush()

    async def wait_placed(self, path: str, timeout: float, count: int | None = None) -> bool:
        """Until ``count`` (default all ``n``) fragments of ``path`` are active on chain."""
        await self.written(path)
        entry = self.entries[path]
        want = entry.n if count is None else count
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while entry.placed() < want:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
            entry = self.entries[path]
        return True

    # --- fragments to serve ---------------------------------------------------------------

    async def _fragment(self, entry: BlockEntry, index: int) -> list[memoryview]:
        """Fragment ``index`` of the entry's version, as views to send: coded from the local
        record (checked against its root the first time), or, the record lost, from the
        record rebuilt from any ``k`` hosts and kept again."""
        # one opening (or rebuild from hosts) at a time per path: fetches of two fragments of
        # one block arrive together, and both need the same record
        async with self._opening.setdefault(entry.path, asyncio.Lock()):
            cached = self._frags.get(entry.path)
            if cached is None or cached[0] != entry.version:
                self._drop_fragments(entry.path)
                cached = (entry.version, await self._open_record(entry))
                self._frags[entry.path] = cached
        coded = cached[1]
        if index not in coded.ready:
            roots = await asyncio.to_thread(coded.encode, (index,), entry.leaf_size)
            if roots[index] != entry.roots[index]:
                raise IntegrityError(f"fragment {index} of {entry.path} no longer matches its root")
        return coded.parts(index)

    async def _open_record(self, entry: BlockEntry) -> RecordFragments:
        """A coder over the local record of the entry's version, rebuilt from hosts if the
        record is missing, damaged or of another version."""
        await self.written(entry.path)
        try:
            header = await asyncio.to_thread(self.blocks.header, entry.path)
            if header.version != entry.version:
                raise IntegrityError("another version is kept locally")
        except (BlockNotFound, IntegrityError) as exc:
            self._note(f"local copy of {entry.path} unusable ({exc}); rebuilding from hosts")
            await retrieve.fetch_record_file(self.chain, self.key, entry.path, entry.version,
                                             self.blocks.file_for(entry.path))
            self._note(f"rebuilt {entry.path} from {entry.k} fragments held by hosts")
        fd = os.open(self.blocks.file_for(entry.path), os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size != entry.record_size:
                raise IntegrityError(f"the local record of {entry.path} is {size} bytes, "
                                     f"{entry.record_size} were put")
            return RecordFragments(fd, size, entry.k, entry.n, self.parity_dir,
                                   _parity_name(entry.path, entry.version))
        finally:
            os.close(fd)

    def _drop_fragments(self, path: str) -> None:
        """Stop serving ``path``'s fragments: close its record, delete its parity files."""
        cached = self._frags.pop(path, None)
        if cached is not None:
            cached[1].remove_parity()
            cached[1].close()

    def _evict(self) -> None:
        for path in list(self._frags):
            entry = self.entries.get(path)
            if entry is None or all(s.state not in (OFFERING,) for s in entry.slots):
                self._drop_fragments(path)

    # --- serving fetches ------------------------------------------------------------------

    def _choose(self, offer_ids: tuple[bytes, ...], host: Principal
                ) -> tuple[tuple[BlockEntry, Slot] | None, str]:
        """The first of ``offer_ids`` that ``host`` may fetch now, or None and why not (the
        reason for the first offer that exists, else ``not-offered``)."""
        now = time.monotonic()
        why = ""
        # A host that lost or corrupted any of our fragments gets no more of our data.
        failed = {h for e in self.entries.values() for s in e.slots for h in s.failed_hosts}
        for oid in offer_ids:
            found = self._slot_of(oid)
            if found is None or found[1].state != OFFERING:
                continue
            entry, slot = found
            if host in failed:
                reason = "failed-before"
            elif any(s is not slot and (s.host == host
                                        or (s.reserved_by == host and s.reserved_until > now))
                     for s in entry.slots):
                reason = "one-per-host"
            elif slot.reserved_by not in (None, host) and slot.reserved_until > now:
                reason = "busy"
            else:
                return found, ""
            why = why or reason
        return None, why or "not-offered"

    async def _handle(self, channel: SecureChannel) -> None:
        msg = await proto.recv(channel, proto.DIAL_TIMEOUT)
        if not isinstance(msg, proto.Fetch):
            await proto.refuse(channel, "unexpected", f"an owner does not answer {type(msg).__name__}")
            return
        host = channel.remote_principal
        chosen, why = self._choose(msg.offer_ids, host)
        if chosen is None:
            reasons = {"not-offered": "no open offer with this id"}
            await proto.refuse(channel, why, reasons.get(why, "none of the offers is available"))
            return
        entry, slot = chosen
        offer_id = slot.offer_id
        now = time.monotonic()
        slot.reserved_by, slot.reserved_until = host, now + RESERVATION_SECONDS
        try:
            parts = await self._fragment(entry, slot.index)
            await proto.send_fragment(channel, offer_id, parts)
            sent = sum(part.nbytes for part in parts)
            self.sent_bytes += sent
            if self.on_sent is not None:
                self.on_sent(sent)
            receipt = await proto.expect(channel, proto.Receipt, EXCHANGE_TIMEOUT)
            host_key = channel.remote_keys.ed25519
            message = receipt_message(self.chain.chain_id, offer_id, host, entry.roots[slot.index],
                                      receipt.payout)
            if not verify(host_key, message, receipt.signature):
                await proto.refuse(channel, "bad-receipt", "receipt does not verify")
                return
            try:
                eid = await self.signer.submit(
                    self.chain,
                    FragmentStored(offer_id, host_key, receipt.payout, receipt.signature),
                    entry.options.fee_rate)
            except ValidationError as exc:
                await proto.refuse(channel, exc.code, f"FragmentStored refused: {exc}")
                self._note(f"FragmentStored for {entry.path} #{slot.index} refused: {exc}")
                return
            slot.state, slot.host = STORED, host
            await self.state.flush()
            await proto.send(channel, proto.Stored(eid))
            self._note(f"{entry.path} #{slot.index} stored by {host}")
            self._changed.set()
        finally:
            if slot.reserved_by == host:
                slot.reserved_by = None

    # --- following the chain --------------------------------------------------------------

    async def step(self) -> None:
        """Everything a new tip calls for: offers to renew, contracts started, ended, missed."""
        self.height = h = await self.chain.tip_height()
        changed = False
        for entry in list(self.entries.values()):
            for slot in entry.slots:
                changed |= await self._follow(entry, slot, h)
        self._evict()
        if changed:
            self.state.mark()
            self._changed.set()

    async def _follow(self, entry: BlockEntry, slot: Slot, h: int) -> bool:
        if slot.state == ENDED or entry.path in self._putting:
            return False
        if not slot.offer_id:  # its put stopped before this offer went out
            await self._offer(entry, slot, save=False)
            return True
        info = await self.chain.contract(slot.offer_id)
        if slot.state == OFFERING:
            if slot.reserved_by is not None and slot.reserved_until > time.monotonic():
                return False
            if info is not None and info.state == "active" and info.host is not None:
                # stored, but this agent stopped before it wrote that down: take it back
                slot.state, slot.host, slot.start = ACTIVE, info.host, info.start
                self._note(f"{entry.path} #{slot.index} found stored by {info.host}")
                return True
            lost = info is None and h > slot.offered_height + 3
            expired = info is not None and (h > info.offer.expiry_height or info.state != "offered")
            if lost or expired:
                await self._offer(entry, slot, save=False)
                self._note(f"re-offered {entry.path} #{slot.index} (offer "
                           f"{'lost' if lost else 'expired'})")
                return True
            return False
        if info is None:
            return False
        if slot.state == STORED:
            if info.state == "active" and info.host == slot.host:
                slot.state, slot.start = ACTIVE, info.start
                return True
            if info.state != "active" and h > info.offer.expiry_height:
                await self._offer(entry, slot, save=False)
                return True
            return False
        # ACTIVE: the chain runs the contract; follow its outcome
        changed = (slot.misses, slot.proven, slot.paid) != (info.missed, info.proven,
                                                            info.paid_total)
        slot.misses, slot.proven, slot.paid = info.missed, info.proven, info.paid_total
        if info.state == "ended":
            slot.state = ENDED
            self._record(slot, "ended")
            return True
        if info.state in ("failed", "released") or info.missed >= entry.options.repair_after:
            await self._release_and_repair(entry, slot, info)
            return True
        return changed

    def _record(self, slot: Slot, end: str) -> None:
        slot.history.append({"offer_id": slot.offer_id.hex(), "host": str(slot.host), "end": end,
                             "proven": slot.proven, "missed": slot.misses, "paid": slot.paid})

    async def _release_and_repair(self, entry: BlockEntry, slot: Slot, info: ContractInfo) -> None:
        host = slot.host
        why = (f"the chain ended it ({info.state})" if info.state != "active"
               else f"{info.missed} missed period(s)")
        if info.state == "active":
            try:
                await self.signer.submit(self.chain, FragmentReleased(slot.offer_id),
                                         entry.options.fee_rate)
            except ValidationError as exc:
                self._note(f"release of {entry.path} #{slot.index} refused: {exc}")
        self._record(slot, f"released: {why}")
        if host is not None and host not in slot.failed_hosts:
            slot.failed_hosts.append(host)
        self._note(f"released {entry.path} #{slot.index} from {host} ({why}); repairing")
        await self._offer(entry, slot, save=False)

    # --- extension ------------------------------------------------------------------------

    async def extend(self, path: str, periods: int) -> list[int]:
        """Extend every active contract of ``path`` by ``periods`` periods, each with its host's
        consent (the chain locks the host's collateral for them, so the host must agree); the
        fragment indexes extended. A host that refuses or cannot be reached keeps its contract
        as it was."""
        if periods <= 0:
            raise StorageError("extend by at least one period")
        entry = self.entries.get(path)
        if entry is None:
            raise BlockNotFound(f"{path} is not stored by this owner")
        done = []
        for slot in entry.slots:
            info = await self.chain.contract(slot.offer_id) if slot.state == ACTIVE else None
            if info is None or info.state != "active" or info.host is None:
                continue
            total = info.periods + periods
            try:
                consent = await self._ask_consent(info, total)
                await self.signer.submit(
                    self.chain, FragmentExtended(slot.offer_id, total, consent.signature),
                    entry.options.fee_rate)
            except (StorageError, ValidationError) as exc:
                self._note(f"{path} #{slot.index} not extended: {exc}")
                continue
            done.append(slot.index)
        if done:
            self._note(f"extended {path} #{', #'.join(map(str, done))} by {periods} periods")
        return done

    async def _ask_consent(self, info: ContractInfo, periods: int) -> proto.Consent:
        assert info.host is not None
        acct = await self.chain.principal(info.host)
        channel = await proto.dial(acct.address if acct else None, self.key, self.chain.chain_id,
                                   info.host)
        async with channel:
            await proto.send(channel, proto.Extend(info.id, periods))
            consent = await proto.expect(channel, proto.Consent, EXCHANGE_TIMEOUT)
        msg = extension_message(self.chain.chain_id, info.id, periods)
        host_key = channel.remote_keys.ed25519
        if not verify(host_key, msg, consent.signature):
            raise proto.ProtocolError("the host's consent does not verify")
        return consent

    # --- reporting ------------------------------------------------------------------------

    def status(self, path: str | None = None) -> dict[str, Any]:
        if path is not None and path not in self.entries:
            raise BlockNotFound(f"{path} is not stored by this owner")
        entries = [self.entries[path]] if path is not None else list(self.entries.values())
        out = []
        for e in entries:
            slots = []
            for s in e.slots:
                slots.append({
                    "index": s.index, "state": s.state, "host": str(s.host) if s.host else None,
                    "contract": s.offer_id.hex(), "start": s.start or None,
                    "end": s.start + e.periods * e.period_blocks if s.start else None,
                    "missed_periods": s.misses, "proven_periods": s.proven, "paid_total": s.paid,
                    "repairs": len(s.failed_hosts),
                })
            out.append({"path": e.path, "version": e.version.hex(), "k": e.k, "n": e.n,
                        "size": e.record_size, "fragment_size": e.fragment_size,
                        "price": e.price, "periods": e.periods, "period_blocks": e.period_blocks,
                        "placed": e.placed(), "fragments": slots})
        return {"owner": str(self.signer.owner), "address": self.address, "height": self.height,
                "blocks": out}
