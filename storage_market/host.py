"""The host agent: sells disk space, stores fragments durably, proves it, and gets paid.

Life of a contract on the host's side:

1. **Offer.** Each new block is scanned for ``FragmentOffer`` events. An offer is taken if it
   meets the policy: price at least the minimum, room within the capacity, not the host's own,
   the owner not known to stop paying, and no fragment of the same block already held (the
   chain refuses a second one anyway). The open offers of one block go into one fetch, in an
   order that depends on the host's principal, and the owner serves the first one still free,
   so hosts spread over a block's fragments instead of colliding on the same one.
2. **Fetch.** The host dials the offer's signer at its address in ``/global/principals``,
   receives the fragment as a size-checked stream, writes it to a temporary file while hashing
   its leaves (a worker thread does both, starting the disk writeback of each chunk), checks
   the Merkle root against the offer on chain, fsyncs and renames the file into place, makes
   the contract durable in its state file, and only then signs the receipt. A receipt
   therefore always names bytes that are on disk.
3. **Active.** Once ``FragmentStored`` is on chain the contract runs. The owner challenges once
   per period; the host reads the challenged leaves *from disk* (its in-memory hash tree gives
   the paths), so a fragment deleted or damaged on disk fails the challenge. A voucher received
   for a passed challenge is checked, persisted, acknowledged, and claimed with a
   ``StoragePayment``; a claim the chain refuses (the owner cannot pay) is retried on later
   blocks and reported with the chain's error.
4. **Grace.** An owner with more than ``grace_periods`` started periods unpaid is marked as not
   paying: its fragments are deleted, its challenges and retrievals refused, its offers ignored.
5. **End.** A contract released by the owner or past its last period is dropped with its file.

Durability: fragments are written atomically (temporary file, fsync, rename, directory fsync)
and their Merkle root is their checksum: on start every fragment is hashed again and one that
no longer matches is reported as corrupt (it would fail its next challenge anyway). The
bookkeeping is a JSON file replaced atomically (:mod:`storage_market.jsonstate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.aio import observe, stop_tasks
from chain.errors import (
    BlockcoinError,
    DuplicatePayment,
    InsufficientFunds,
    PeriodNotStarted,
    ValidationError,
)
from chain.events import Announce, FragmentOffer, StoragePayment, receipt_message, voucher_message
from chain.keys import KeyPair, verify
from chain.net import SecureChannel
from chain.principal import Principal
from storage_market import protocol as proto
from storage_market import sha256x
from storage_market.chainclient import DEFAULT_FEE, ChainClient, ContractInfo, Signer
from storage_market.crypto import Bytes
from storage_market.errors import IntegrityError, StorageError
from storage_market.jsonstate import StateFile, fsync_dir, read_json, start_writeback
from storage_market.merkle import DIGEST, ChallengeResponse, HashTree, LeafProof, leaf_count

log = logging.getLogger("blockcoin.host")

FETCH_TIMEOUT = 30.0
MAX_PARALLEL_FETCHES = 4
RESCAN_BLOCKS = 64

# contract states on the host
PENDING = "pending"  # receipt given, FragmentStored not yet seen on chain
ACTIVE = "active"
ENDED = "ended"  # last period over
RELEASED = "released"  # the owner ended it
DROPPED = "dropped"  # the host stopped serving (owner not paying, or never published)


@dataclass(slots=True)
class HostPolicy:
    """What a host sells: ``capacity`` bytes, at no less than ``min_price`` per period."""

    capacity: int
    min_price: int = 0
    grace_periods: int = 2
    fee: int = DEFAULT_FEE


@dataclass(slots=True)
class Voucher:
    period: int
    amount: int
    signature: bytes
    status: str = "unclaimed"  # unclaimed | claimed | refused
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"period": self.period, "amount": self.amount, "signature": self.signature.hex(),
                "status": self.status, "error": self.error}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Voucher:
        return cls(int(d["period"]), int(d["amount"]), bytes.fromhex(d["signature"]),
                   str(d["status"]), str(d.get("error", "")))


@dataclass(slots=True)
class HostedFragment:
    """One contract as the host keeps it."""

    offer_id: bytes
    owner: Principal
    owner_key: bytes
    offer: FragmentOffer
    status: str
    start: int = 0
    vouchers: dict[int, Voucher] | None = None
    paid_total: int = 0
    corrupt: bool = False

    @property
    def challenger(self) -> Principal:
        """Who may challenge: the node that signed the offer (it signs the vouchers too)."""
        return Principal.of_public_key(self.owner_key)

    def periods_started(self, height: int) -> int:
        if self.status != ACTIVE or height < self.start:
            return 0
        return min(self.offer.periods, (height - self.start) // self.offer.period_blocks + 1)

    def to_json(self) -> dict[str, Any]:
        o = self.offer
        return {
            "offer_id": self.offer_id.hex(), "owner": str(self.owner),
            "owner_key": self.owner_key.hex(), "status": self.status, "start": self.start,
            "paid_total": self.paid_total,
            "offer": {"path": o.path, "version": o.version.hex(), "index": o.index, "n": o.n,
                      "k": o.k, "size": o.size, "root": o.root.hex(), "leaf_size": o.leaf_size,
                      "price": o.price, "period_blocks": o.period_blocks, "periods": o.periods,
                      "expiry_height": o.expiry_height},
            "vouchers": [v.to_json() for v in (self.vouchers or {}).values()],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HostedFragment:
        o = d["offer"]
        offer = FragmentOffer(o["path"], bytes.fromhex(o["version"]), o["index"], o["n"], o["k"],
                              o["size"], bytes.fromhex(o["root"]), o["leaf_size"], o["price"],
                              o["period_blocks"], o["periods"], o["expiry_height"])
        vouchers = {v.period: v for v in map(Voucher.from_json, d.get("vouchers", []))}
        return cls(bytes.fromhex(d["offer_id"]), Principal.parse(d["owner"]),
                   bytes.fromhex(d["owner_key"]), offer, d["status"], int(d["start"]),
                   vouchers, int(d.get("paid_total", 0)))


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

    def read_leaves(self, offer_id: bytes, offer: FragmentOffer, indexes: tuple[int, ...]
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


class HostAgent:
    """Runs one host: its listener, its chain follower, its fragment store and bookkeeping."""

    def __init__(self, datadir: Path, key: KeyPair, chain: ChainClient, policy: HostPolicy,
                 listen_host: str = "127.0.0.1", port: int = 0) -> None:
        self.datadir = Path(datadir) / "host"
        self.key = key
        self.signer = Signer(key)
        self.chain = chain
        self.policy = policy
        self.listen_host = listen_host
        self.port = port
        self.store = FragmentStore(self.datadir / "fragments")
        self.state_file = self.datadir / "state.json"
        self.state = StateFile(self.state_file, self._snapshot)
        self.contracts: dict[bytes, HostedFragment] = {}
        self.delinquent: dict[Principal, str] = {}
        self.scan_height = 0
        self.trees: dict[bytes, HashTree] = {}
        self.address = ""
        self.height = 0
        self.events: list[str] = []
        self._listener = proto.Listener(key, chain.chain_id, self._handle)
        self._task: asyncio.Task[None] | None = None
        self._fetching: set[bytes] = set()  # offer ids
        self._fetch_paths: set[str] = set()
        self._reserved = 0
        self._skip: set[bytes] = set()
        self._fetches: set[asyncio.Task[None]] = set()
        self._fetch_slots = asyncio.Semaphore(MAX_PARALLEL_FETCHES)
        self._wake = asyncio.Event()
        self._pending_offers: list[tuple[bytes, bytes, FragmentOffer]] = []
        self._tip: int | None = None
        self._load()

    @property
    def principal(self) -> Principal:
        return self.key.principal

    # --- persistence ----------------------------------------------------------------------

    def _load(self) -> None:
        data = read_json(self.state_file)
        if data is None:
            return
        self.scan_height = int(data.get("scan_height", 0))
        for raw in data.get("contracts", []):
            c = HostedFragment.from_json(raw)
            self.contracts[c.offer_id] = c
        self.delinquent = {Principal.parse(p): why for p, why in data.get("delinquent", {}).items()}

    def save(self) -> None:
        """Write the state now (blocking); the agent itself uses :attr:`state`."""
        self.state.write_now()

    def _snapshot(self) -> dict[str, Any]:
        return {
            "principal": str(self.principal),
            "scan_height": self.scan_height,
            "contracts": [c.to_json() for c in self.contracts.values()],
            "delinquent": {str(p): why for p, why in self.delinquent.items()},
        }

    def _note(self, text: str) -> None:
        log.info("%s: %s", str(self.principal)[:12], text)
        self.events.append(text)
        del self.events[:-200]

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Check stored fragments, listen, announce the address, follow the chain."""
        sha256x.load_in_background()  # ready before the first large put or fetch
        for c in self.contracts.values():
            if c.status in (PENDING, ACTIVE):
                try:
                    self.trees[c.offer_id] = await asyncio.to_thread(
                        self.store.load_tree, c.offer_id, c.offer)
                except IntegrityError as exc:
                    c.corrupt = True
                    self._note(f"stored fragment check failed: {exc}")
        self.address = await self._listener.start(self.listen_host, self.port)
        await self._announce()
        self.height = await self.chain.tip_height()
        if self.scan_height == 0:
            self.scan_height = max(0, self.height - RESCAN_BLOCKS)
        else:
            self.scan_height = max(0, self.scan_height - RESCAN_BLOCKS)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _announce(self) -> None:
        acct = await self.chain.principal(self.principal)
        if acct is not None and acct.address == self.address and acct.x25519 == self.key.public.x25519:
            return
        balance = acct.balance if acct else 0
        await self.signer.submit(self.chain, Announce(self.key.public.x25519, self.address),
                                 min(self.policy.fee, balance))

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_tasks(task, *self._fetches)
        await self._listener.close()
        await self.state.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except BlockcoinError as exc:
                self._note(f"step failed: {exc}")
            except OSError as exc:
                self._note(f"step failed: {exc}")
            await self._wait()

    async def _wait(self) -> None:
        """Until a new block, a finished fetch (try the next offer), or a second passes."""
        self._wake.clear()
        waiters = [asyncio.ensure_future(self._wake.wait()),
                   asyncio.ensure_future(self.chain.wait_for_block(self.height, 1.0))]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        tip = waiters[1]
        if tip.done() and not tip.cancelled() and tip.exception() is None:
            self._tip = tip.result()  # the next step need not ask again (a request over HTTP)

    async def step(self) -> None:
        """Everything one new tip calls for: new offers, contract states, claims, grace."""
        tip, self._tip = self._tip, None
        self.height = tip if tip is not None else await self.chain.tip_height()
        await self._scan_offers()
        await self._refresh_contracts()
        await self._claim_vouchers()
        self._apply_grace()
        self.state.mark()

    # --- offers and fetches ---------------------------------------------------------------

    def _committed_bytes(self) -> int:
        live = sum(c.offer.size for c in self.contracts.values() if c.status in (PENDING, ACTIVE))
        return live + self._reserved

    def _holds_path(self, path: str) -> bool:
        return path in self._fetch_paths or any(
            c.offer.path == path and c.status in (PENDING, ACTIVE) for c in self.contracts.values())

    async def _scan_offers(self) -> None:
        candidates: list[tuple[bytes, bytes, FragmentOffer]] = []
        while self.scan_height < self.height:
            self.scan_height += 1
            for ev in await self.chain.block_events(self.scan_height):
                if isinstance(ev.body, FragmentOffer):
                    oid = hashlib.sha256(self.chain.chain_id + ev.raw).digest()
                    candidates.append((oid, ev.signer_key, ev.body))
        self._pending_offers.extend(candidates)
        keep = []
        me = self.principal.digest
        self._pending_offers.sort(key=lambda c: hashlib.sha256(me + c[0]).digest())
        # every open offer of one block goes into one fetch: the owner serves whichever is free
        groups: dict[tuple[bytes, str, bytes], list[tuple[bytes, ContractInfo]]] = {}
        for oid, owner_key, offer in self._pending_offers:
            if offer.expiry_height < self.height or oid in self._skip or oid in self.contracts:
                continue
            key = (owner_key, offer.path, offer.version)
            group = groups.get(key)
            if group is None and not self._acceptable(owner_key, offer):
                keep.append((oid, owner_key, offer))
                continue
            if group is not None and (offer.price < self.policy.min_price
                                      or offer.size != group[0][1].offer.size):
                continue
            contract = await self.chain.contract(oid)
            if contract is None or contract.state != "offered":
                continue
            groups.setdefault(key, []).append((oid, contract))
        self._pending_offers = keep
        for (owner_key, _, _), group in groups.items():
            self._start_fetch(owner_key, group)

    def _acceptable(self, owner_key: bytes, offer: FragmentOffer) -> bool:
        """The policy; offers that fail only for now (room, a fetch of the same block) are
        kept for later blocks by the caller."""
        owner = Principal.of_public_key(owner_key)
        if owner == self.principal or offer.price < self.policy.min_price:
            return False
        if owner in self.delinquent or len(self._fetching) >= MAX_PARALLEL_FETCHES * 4:
            return False
        if self._holds_path(offer.path):
            return False
        return self._committed_bytes() + offer.size <= self.policy.capacity

    def _start_fetch(self, owner_key: bytes, group: list[tuple[bytes, ContractInfo]]) -> None:
        """Fetch one fragment of a block, any of the offers in ``group`` (host's preference
        first)."""
        offer = group[0][1].offer
        oids = [oid for oid, _ in group]
        self._fetching.update(oids)
        self._fetch_paths.add(offer.path)
        self._reserved += offer.size
        served: list[bytes] = []
        contracts = dict(group)

        async def run() -> None:
            try:
                async with self._fetch_slots:
                    await self._fetch(owner_key, group, served)
            except (BlockcoinError, OSError) as exc:
                # the offer that failed is not tried again; if the owner refused them all
                # (taken by other hosts), none is
                self._skip.update(served or oids)
                for oid, contract in group:
                    if oid not in self._skip:
                        self._pending_offers.append((oid, owner_key, contract.offer))
                which = ", ".join(f"#{contracts[o].offer.index}" for o in served or oids)
                self._note(f"{offer.path} {which} not taken: {exc}")
            finally:
                self._fetching.difference_update(oids)
                self._fetch_paths.discard(offer.path)
                self._reserved -= offer.size
                self._wake.set()

        task = asyncio.get_running_loop().create_task(run())
        self._fetches.add(task)
        task.add_done_callback(self._fetches.discard)

    async def _fetch(self, owner_key: bytes, group: list[tuple[bytes, ContractInfo]],
                     served: list[bytes]) -> None:
        """Ask the owner for any offer of ``group``; store the one it serves (its id is
        appended to ``served`` as soon as it is known)."""
        seller = Principal.of_public_key(owner_key)
        acct = await self.chain.principal(seller)
        channel = await proto.dial(acct.address if acct else None, self.key,
                                   self.chain.chain_id, seller)
        contracts = dict(group)
        async with channel:
            await proto.send(channel, proto.Fetch(tuple(contracts)))
            oid = await proto.recv_fragment_header(
                channel, {o: c.offer.size for o, c in contracts.items()}, FETCH_TIMEOUT)
            served.append(oid)
            contract = contracts[oid]
            offer = contract.offer
            writer = self.store.open_writer(oid, offer)
            try:
                await proto.recv_chunks(channel, offer.size, writer.write, FETCH_TIMEOUT,
                                        writer.next_buffer)
                tree = await writer.commit()
            except BaseException:
                writer.abort()
                raise
            record = HostedFragment(oid, contract.owner, owner_key, offer, PENDING, vouchers={})
            self.contracts[oid] = record
            self.trees[oid] = tree
            await self.state.flush()  # the contract is on disk before the receipt is signed
            sig = self.key.sign(receipt_message(self.chain.chain_id, oid, self.principal, offer.root))
            await proto.send(channel, proto.Receipt(sig))
            try:
                await proto.expect(channel, proto.Stored, FETCH_TIMEOUT)
            except StorageError:
                self._drop(record, DROPPED, "owner did not publish the receipt")
                raise
        self._note(f"stored {offer.path} #{offer.index} ({offer.size} bytes) for {contract.owner}")

    # --- contracts ------------------------------------------------------------------------

    def _drop(self, c: HostedFragment, status: str, why: str) -> None:
        c.status = status
        self.trees.pop(c.offer_id, None)
        self.store.delete(c.offer_id)
        self._note(f"{c.offer.path} #{c.offer.index}: {status} ({why})")

    async def _refresh_contracts(self) -> None:
        for c in list(self.contracts.values()):
            if c.status not in (PENDING, ACTIVE):
                continue
            info = await self.chain.contract(c.offer_id)
            if info is None:
                if self.height > c.offer.expiry_height:
                    self._drop(c, DROPPED, "offer vanished from the chain")
                continue
            if info.host is not None and info.host != self.principal:
                self._drop(c, DROPPED, f"stored by {info.host} instead")
                continue
            if c.status == PENDING and info.state == "active":
                c.status = ACTIVE
                c.start = info.start
            elif c.status == PENDING and info.state == "offered" and self.height > c.offer.expiry_height:
                self._drop(c, DROPPED, "the owner never published the receipt")
                continue
            c.paid_total = info.paid_total
            if info.state in ("released", "ended"):
                self._drop(c, RELEASED if info.state == "released" else ENDED, info.state)

    async def _claim_vouchers(self) -> None:
        for c in self.contracts.values():
            for v in (c.vouchers or {}).values():
                if v.status != "claimed":
                    await self._claim(c, v)

    async def _claim(self, c: HostedFragment, v: Voucher) -> None:
        body = StoragePayment(c.offer_id, v.period, v.amount, v.signature)
        fee = min(self.policy.fee, v.amount)
        try:
            await self.signer.submit(self.chain, body, fee)
        except DuplicatePayment:
            v.status = "claimed"
        except PeriodNotStarted as exc:
            v.error = str(exc)
        except InsufficientFunds as exc:
            if v.status != "refused" or v.error != str(exc):
                self._note(f"payment for {c.offer.path} #{c.offer.index} period {v.period} "
                           f"refused: {exc}")
            v.status, v.error = "refused", str(exc)
        except ValidationError as exc:
            v.status, v.error = "refused", str(exc)
        else:
            v.status, v.error = "claimed", ""

    def _apply_grace(self) -> None:
        """Stop serving owners with more than ``grace_periods`` started periods unpaid."""
        for c in list(self.contracts.values()):
            if c.status != ACTIVE or c.owner in self.delinquent:
                continue
            paid = sum(1 for v in (c.vouchers or {}).values() if v.status == "claimed")
            unpaid = c.periods_started(self.height) - paid
            if unpaid > self.policy.grace_periods:
                last = next((v.error for v in (c.vouchers or {}).values() if v.error), "")
                why = f"{unpaid} periods unpaid" + (f" ({last})" if last else "")
                self.delinquent[c.owner] = why
                self._note(f"stopped serving {c.owner}: {why}")
        for c in list(self.contracts.values()):
            if c.owner in self.delinquent and c.status in (PENDING, ACTIVE):
                self._drop(c, DROPPED, f"owner not paying: {self.delinquent[c.owner]}")

    # --- serving --------------------------------------------------------------------------

    async def _handle(self, channel: SecureChannel) -> None:
        msg = await proto.recv(channel, proto.DIAL_TIMEOUT)
        if isinstance(msg, proto.Challenge):
            await self._on_challenge(channel, msg)
        elif isinstance(msg, proto.Retrieve):
            await self._on_retrieve(channel, msg)
        else:
            await proto.refuse(channel, "unexpected", f"a host does not answer {type(msg).__name__}")

    def _served(self, offer_id: bytes) -> HostedFragment:
        c = self.contracts.get(offer_id)
        if c is None:
            raise proto.PeerRefused("unknown-contract", "this host holds no such fragment")
        if c.owner in self.delinquent:
            raise proto.PeerRefused("unpaid", f"host stopped serving {c.owner}: "
                                    f"{self.delinquent[c.owner]}")
        if c.status not in (PENDING, ACTIVE):
            raise proto.PeerRefused("not-held", f"contract is {c.status}")
        return c

    async def _on_challenge(self, channel: SecureChannel, msg: proto.Challenge) -> None:
        try:
            c = self._served(msg.offer_id)
        except proto.PeerRefused as exc:
            await proto.refuse(channel, exc.reason, str(exc))
            return
        if channel.remote_principal != c.challenger:
            await proto.refuse(channel, "not-owner", "only the contract's owner challenges")
            return
        tree = self.trees.get(c.offer_id)
        try:
            if tree is None:
                raise IntegrityError("no hash tree for the fragment (check failed at start)")
            leaves = await asyncio.to_thread(self.store.read_leaves, c.offer_id, c.offer, msg.indexes)
            proofs = tuple(LeafProof(i, leaf, tuple(tree.proof(i)))
                           for i, leaf in zip(msg.indexes, leaves, strict=True))
        except (OSError, StorageError) as exc:
            await proto.refuse(channel, "fragment-lost", str(exc))
            self._note(f"challenge for {c.offer.path} #{c.offer.index} unanswerable: {exc}")
            return
        await proto.send(channel, proto.Response(ChallengeResponse(proofs)))
        verdict = await proto.recv(channel, proto.DIAL_TIMEOUT)
        if not isinstance(verdict, proto.Voucher):
            raise proto.ProtocolError(f"expected a voucher, got {type(verdict).__name__}")
        msg_bytes = voucher_message(self.chain.chain_id, c.offer_id, verdict.period, verdict.amount)
        if (verdict.period != msg.period or verdict.amount > c.offer.price
                or not verify(c.owner_key, msg_bytes, verdict.signature)):
            await proto.refuse(channel, "bad-voucher", "voucher does not verify")
            return
        vouchers = c.vouchers if c.vouchers is not None else {}
        c.vouchers = vouchers
        if verdict.period not in vouchers:
            vouchers[verdict.period] = Voucher(verdict.period, verdict.amount, verdict.signature)
            await self.state.flush()  # kept before it is acknowledged
        await proto.send(channel, proto.Ack())
        await self._claim(c, vouchers[verdict.period])
        self.state.mark()

    async def _on_retrieve(self, channel: SecureChannel, msg: proto.Retrieve) -> None:
        try:
            c = self._served(msg.offer_id)
        except proto.PeerRefused as exc:
            await proto.refuse(channel, exc.reason, str(exc))
            return
        try:
            fd = os.open(self.store.file_for(c.offer_id), os.O_RDONLY)
        except OSError as exc:
            await proto.refuse(channel, "fragment-lost", str(exc))
            return
        loop = asyncio.get_running_loop()
        nxt: asyncio.Future[bytes] | None = None
        try:
            # chunk by chunk, the next read (in a worker thread) beside the current send: the
            # first bytes leave at once and no fragment-sized buffer is allocated
            size = c.offer.size
            await proto.send(channel, proto.FragmentHeader(c.offer_id, size))
            step = proto.CHUNK_SIZE
            nxt = loop.run_in_executor(None, os.pread, fd, step, 0)
            for start in range(0, size, step):
                # shielded: a cancelled serve must not close the descriptor under a running read
                chunk = await asyncio.shield(nxt)
                if len(chunk) != min(step, size - start):
                    raise IntegrityError(f"stored fragment {c.offer_id.hex()[:16]} is short")
                if start + step < size:
                    nxt = loop.run_in_executor(None, os.pread, fd, step, start + step)
                await channel.send(chunk)
        finally:
            if nxt is None or nxt.done():
                os.close(fd)
            else:  # the read still runs in its thread: close once it has returned
                def close_after(read: asyncio.Future[bytes]) -> None:
                    observe(read)
                    os.close(fd)

                nxt.add_done_callback(close_after)
        # wait for the reader to hang up, so the last chunks are not cut off by our close
        with contextlib.suppress(StorageError):
            await proto.recv(channel, proto.DIAL_TIMEOUT)

    # --- reporting ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Capacity used, contracts, and earned / pending / future payments."""
        rows = []
        earned = pending = future = 0
        for c in self.contracts.values():
            vouchers = list((c.vouchers or {}).values())
            claimed = sum(v.amount for v in vouchers if v.status == "claimed")
            unclaimed = sum(v.amount for v in vouchers if v.status != "claimed")
            earned += c.paid_total
            pending += max(0, claimed - c.paid_total) + unclaimed
            remaining = 0
            if c.status in (PENDING, ACTIVE):
                remaining = max(0, c.offer.periods - len(vouchers)) * c.offer.price
            future += remaining
            rows.append({
                "contract": c.offer_id.hex(), "path": c.offer.path, "index": c.offer.index,
                "owner": str(c.owner), "size": c.offer.size, "price": c.offer.price,
                "status": c.status, "start": c.start or None,
                "end": c.start + c.offer.periods * c.offer.period_blocks if c.start else None,
                "periods": c.offer.periods, "vouchers": len(vouchers),
                "paid_total": c.paid_total, "corrupt": c.corrupt,
                "errors": sorted({v.error for v in vouchers if v.error}),
            })
        used = sum(c.offer.size for c in self.contracts.values() if c.status in (PENDING, ACTIVE))
        return {
            "principal": str(self.principal), "address": self.address, "height": self.height,
            "capacity": self.policy.capacity, "used": used, "free": self.policy.capacity - used,
            "min_price": self.policy.min_price, "earned": earned, "pending": pending,
            "future": future, "contracts": rows,
            "not_serving": {str(p): why for p, why in self.delinquent.items()},
        }
