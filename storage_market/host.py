"""The host agent: sells disk space, stores fragments durably, and proves it on chain.

Life of a contract on the host's side:

1. **Offer.** Each new block is scanned for ``FragmentOffer`` events. An offer is taken if it
   meets the policy: price at least the minimum, collateral at most the maximum and within
   what the host can lock, room within the capacity, not the host's own, and no fragment of the
   same block already held (the chain refuses a second one anyway). The open offers of one block
   go into one fetch, in an order that depends on the host's principal, and the owner serves the
   first one still free, so hosts spread over a block's fragments instead of colliding.
2. **Fetch.** The host dials the offer's signer at its address in ``/global/principals``,
   receives the fragment as a size-checked stream (:mod:`storage_market.fragmentstore`), checks
   the Merkle root against the offer on chain, makes the file and the contract durable, and only
   then signs the receipt, which names where its pay goes. A receipt therefore always names bytes
   that are on disk. The owner publishes ``FragmentStored``, which locks the host's collateral.
3. **Prove.** Each period, as soon as the block that opens it is on chain, the host reads the
   leaves that block's hash picks *from disk* (its in-memory hash tree gives the paths) and
   publishes a ``StorageProof``, several contracts per event. The chain pays the period's price
   from the owner's escrow and returns its collateral; the owner need not be online. A fragment
   lost or damaged on disk cannot be proven: the window closes, the owner is refunded and the
   collateral burned, in public. A proof that vanishes from the mempool (a reorg, an eviction)
   is made again while its window is open.
4. **End.** A contract released by the owner, past its last period, or failed is dropped with
   its file. The owner may extend an active contract with the host's signed consent.

Durability: fragments are written atomically and re-hashed on start (one that no longer matches
is reported as corrupt); the bookkeeping is a JSON file replaced atomically
(:mod:`storage_market.jsonstate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.core.aio import observe, stop_tasks
from chain.core.encoding import Writer
from chain.core.errors import BlockcoinError, DuplicateProof, ValidationError
from chain.core.events import (
    Announce,
    FragmentOffer,
    ProofItem,
    StorageProof,
    extension_message,
    receipt_message,
)
from chain.core.keys import KeyPair
from chain.core.principal import Principal
from chain.core.units import format_coins, format_size
from chain.net.channel import SecureChannel
from storage_market import protocol as proto
from storage_market import sha256x
from storage_market.chainclient import ChainClient, ContractInfo, Signer
from storage_market.errors import IntegrityError, StorageError
from storage_market.fragmentstore import FragmentStore
from storage_market.jsonstate import StateFile, read_json, write_json
from storage_market.merkle import HashTree
from storage_market.proving import proof_item

log = logging.getLogger("blockcoin.host")

FETCH_TIMEOUT = 30.0
MAX_PARALLEL_FETCHES = 4
RESCAN_BLOCKS = 64
RETRY_BLOCKS = 2  # an unreachable owner's offers are tried again this many blocks later
#: Room left in a proof event for its envelope, signature and fee.
PROOF_EVENT_MARGIN = 512

# contract states on the host
PENDING = "pending"  # receipt given, FragmentStored not yet seen on chain
ACTIVE = "active"
ENDED = "ended"  # last period over
RELEASED = "released"  # the owner ended it
FAILED = "failed"  # the chain ended it after too many missed proofs
DROPPED = "dropped"  # the host let it go (never published, or stored by another host)
_FINAL = {"released": RELEASED, "ended": ENDED, "failed": FAILED, "expired": DROPPED}


@dataclass(slots=True)
class HostPolicy:
    """What a host sells: ``capacity`` bytes, at no less than ``min_price`` per period, with
    at most ``max_collateral`` per period locked (None: whatever its balance covers). Pay goes
    to ``payout`` (None: the host's own key); events pay ``fee_rate`` per byte (None: the
    network's minimum)."""

    capacity: int
    min_price: int = 0
    max_collateral: int | None = None
    payout: Principal | None = None
    fee_rate: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "min_price": self.min_price,
                "max_collateral": self.max_collateral,
                "payout": str(self.payout) if self.payout else None}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> HostPolicy:
        cap, payout = raw.get("max_collateral"), raw.get("payout")
        return cls(int(raw.get("capacity", 0)), int(raw.get("min_price", 0)),
                   int(cap) if cap is not None else None,
                   Principal.parse(str(payout)) if payout else None)


#: The policy's fields an operator sets, by their JSON names.
POLICY_FIELDS = ("capacity", "min_price", "max_collateral", "payout")


def policy_file(datadir: Path) -> Path:
    """Where a data directory's host policy is kept: written at every start and change, read
    by ``host status`` and by the node's dashboard (the capacity sold)."""
    return datadir / "host" / "policy.json"


def save_policy(datadir: Path, policy: HostPolicy, live: Iterable[str] = ()) -> None:
    """Keep ``policy``, and which of its fields were changed on a running host (``live``, set
    from the dashboard): those outlast a restart (:func:`starting_policy`)."""
    write_json(policy_file(datadir), {**policy.to_json(), "live": sorted(set(live))})


def load_policy(datadir: Path) -> tuple[HostPolicy, set[str]]:
    """The saved policy and the fields of it changed on a running host."""
    raw = read_json(policy_file(datadir)) or {}
    return HostPolicy.from_json(raw), set(raw.get("live", ())) & set(POLICY_FIELDS)


def starting_policy(datadir: Path, configured: HostPolicy,
                    flags: Iterable[str]) -> tuple[HostPolicy, set[str]]:
    """The policy a host starts with, field by field: a command-line flag (``flags`` names the
    fields given), else a change made on the running host from the dashboard (saved), else
    config.toml, else the default; ``configured`` holds the first, third and fourth. Returns
    it with the fields still taken from a live change. A flag both wins and ends that field's
    live change, so a restart with the same flags is not undone by an older dashboard edit."""
    given = set(flags)
    if not policy_file(datadir).exists():
        return configured, set()
    saved, live = load_policy(datadir)
    keep = live - given
    saved_json = saved.to_json()
    merged = HostPolicy.from_json({**configured.to_json(),
                                   **{f: saved_json[f] for f in keep}})
    merged.fee_rate = configured.fee_rate
    return merged, keep


@dataclass(slots=True)
class HostedFragment:
    """One contract as the host keeps it: its terms, its state on chain as last seen, and the
    proof the host last published."""

    offer_id: bytes
    owner: Principal
    owner_key: bytes
    offer: FragmentOffer
    status: str
    start: int = 0
    periods: int = 0
    proven: int = 0
    missed: int = 0
    last_proven: int = -1
    paid_total: int = 0
    collateral_locked: int = 0
    corrupt: bool = False
    proof_period: int = -1
    proof_event: bytes = b""

    def window_of(self, height: int) -> int:
        return (height - self.start - 1) // self.offer.period_blocks

    def to_json(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id.hex(), "owner": str(self.owner),
            "owner_key": self.owner_key.hex(), "status": self.status, "start": self.start,
            "periods": self.periods, "proven": self.proven, "missed": self.missed,
            "last_proven": self.last_proven, "paid_total": self.paid_total,
            "collateral_locked": self.collateral_locked, "corrupt": self.corrupt,
            "proof_period": self.proof_period, "proof_event": self.proof_event.hex(),
            "offer": self.offer.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HostedFragment:
        offer = FragmentOffer.from_json(d["offer"])
        return cls(bytes.fromhex(d["offer_id"]), Principal.parse(d["owner"]),
                   bytes.fromhex(d["owner_key"]), offer, d["status"], int(d["start"]),
                   int(d["periods"]), int(d["proven"]), int(d["missed"]),
                   int(d["last_proven"]), int(d["paid_total"]), int(d["collateral_locked"]),
                   bool(d["corrupt"]), int(d["proof_period"]), bytes.fromhex(d["proof_event"]))


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
        self.scan_height = 0
        self.trees: dict[bytes, HashTree] = {}
        self.address = ""
        self.height = 0
        self.stepped = -1  # the last tip this agent has fully acted on
        self.balance = 0
        self.events: list[str] = []
        self._listener = proto.Listener(key, chain.chain_id, self._handle)
        self._task: asyncio.Task[None] | None = None
        self._fetching: set[bytes] = set()  # offer ids
        self._fetch_paths: set[str] = set()
        self._reserved = 0  # bytes of fetches in flight
        self._reserved_collateral = 0  # collateral of fetches in flight
        self._skip: set[bytes] = set()
        self._retry_at: dict[bytes, int] = {}  # offers whose owner was unreachable: not before
        self._fetches: set[asyncio.Task[None]] = set()
        self._fetch_slots = asyncio.Semaphore(MAX_PARALLEL_FETCHES)
        self._wake = asyncio.Event()
        self._pending_offers: list[tuple[bytes, bytes, FragmentOffer]] = []
        self._tip: int | None = None
        self._load()

    @property
    def principal(self) -> Principal:
        return self.key.principal

    @property
    def running(self) -> bool:
        return self._task is not None

    @property
    def payout(self) -> Principal:
        return self.policy.payout or self.principal

    def set_policy(self, policy: HostPolicy, fields: Iterable[str] = POLICY_FIELDS) -> None:
        """Sell on new terms from now on: the next offers are weighed against ``policy`` (offers
        set aside for want of room or price are weighed again), new receipts name its payout;
        contracts already made keep theirs; the fee rate stays the one the agent started with.
        Saved, where ``host status`` and the dashboard read it, with ``fields`` (those the
        change set) marked live, so that they outlast a restart."""
        policy = dataclasses.replace(policy, fee_rate=self.policy.fee_rate)
        live = set(fields)
        if policy_file(self.datadir.parent).exists():
            live |= load_policy(self.datadir.parent)[1]
        save_policy(self.datadir.parent, policy, live)
        self.policy = policy
        self._note(f"policy now: selling {format_size(policy.capacity)} from "
                   f"{format_coins(policy.min_price)} a period, paid to {self.payout}")
        self._wake.set()

    # --- persistence ----------------------------------------------------------------------

    def _load(self) -> None:
        data = read_json(self.state_file)
        if data is None:
            return
        self.scan_height = int(data.get("scan_height", 0))
        for raw in data.get("contracts", []):
            c = HostedFragment.from_json(raw)
            self.contracts[c.offer_id] = c

    def save(self) -> None:
        """Write the state now (blocking); the agent itself uses :attr:`state`."""
        self.state.write_now()

    def _snapshot(self) -> dict[str, Any]:
        return {
            "principal": str(self.principal),
            "scan_height": self.scan_height,
            "contracts": [c.to_json() for c in self.contracts.values()],
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
                    c.corrupt = False
                except IntegrityError as exc:
                    c.corrupt = True
                    self._note(f"stored fragment check failed: {exc}")
        self.state.mark()
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
        await self.signer.submit(self.chain, Announce(self.key.public.x25519, self.address),
                                 self.policy.fee_rate)
        self._note(f"announced {self.address}; paid to {self.payout}; selling "
                   f"{format_size(self.policy.capacity)}")

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
        """Everything one new tip calls for: new offers, contract states, proofs due.

        A read that fails (the node down, or an answer the light client refuses) stops only
        its own part: the offers, or that one contract's state, which is left as last seen.
        The proofs due are made all the same (they need the headers and the files, not the
        node's word on a contract), so a node that fails to serve or lies about a block or a
        contract does not by that make the host miss a period. The first failure is raised at
        the end: the step counts as failed, and what it could not read is asked again at the
        next one."""
        tip, self._tip = self._tip, None
        self.height = tip if tip is not None else await self.chain.tip_height()
        failed: list[BlockcoinError | OSError] = []
        try:
            acct = await self.chain.principal(self.principal)
            self.balance = acct.balance if acct is not None else 0
            await self._scan_offers()
        except (BlockcoinError, OSError) as exc:
            failed.append(exc)
        await self._refresh_contracts(failed)
        await self._prove()
        self.state.mark()
        if failed:
            raise failed[0]
        self.stepped = self.height

    # --- offers and fetches ---------------------------------------------------------------

    def _committed_bytes(self) -> int:
        live = sum(c.offer.size for c in self.contracts.values() if c.status in (PENDING, ACTIVE))
        return live + self._reserved

    def _free_balance(self) -> int:
        """What the host can still lock: its balance less the collateral of receipts given
        but not yet on chain, and of fetches in flight."""
        pending = sum(c.offer.collateral * c.offer.periods for c in self.contracts.values()
                      if c.status == PENDING)
        return self.balance - pending - self._reserved_collateral

    def _holds_path(self, path: str) -> bool:
        return path in self._fetch_paths or any(
            c.offer.path == path and c.status in (PENDING, ACTIVE) for c in self.contracts.values())

    async def _scan_offers(self) -> None:
        while self.scan_height < self.height:
            # a block the node fails to serve (or serves altered, to a light client) is asked
            # for again at the next step, not skipped with its offers
            events = await self.chain.block_events(self.scan_height + 1)
            self.scan_height += 1
            self._pending_offers.extend(
                (hashlib.sha256(self.chain.chain_id + ev.raw).digest(), ev.signer_key, ev.body)
                for ev in events if isinstance(ev.body, FragmentOffer))
        keep = []
        me = self.principal.digest
        self._pending_offers.sort(key=lambda c: hashlib.sha256(me + c[0]).digest())
        # every open offer of one block goes into one fetch: the owner serves whichever is free
        groups: dict[tuple[bytes, str, bytes], list[tuple[bytes, ContractInfo]]] = {}
        for oid, owner_key, offer in self._pending_offers:
            if offer.expiry_height < self.height or oid in self._skip or oid in self.contracts:
                continue
            if self._retry_at.get(oid, 0) > self.height:
                keep.append((oid, owner_key, offer))
                continue
            key = (owner_key, offer.path, offer.version)
            group = groups.get(key)
            if group is None and not self._acceptable(owner_key, offer):
                keep.append((oid, owner_key, offer))
                continue
            if group is not None and (not self._terms_ok(offer)
                                      or offer.size != group[0][1].offer.size):
                continue
            contract = await self.chain.contract(oid)
            if contract is None or contract.state != "offered":
                continue
            groups.setdefault(key, []).append((oid, contract))
        self._pending_offers = keep
        for (owner_key, _, _), group in groups.items():
            self._start_fetch(owner_key, group)

    def _terms_ok(self, offer: FragmentOffer) -> bool:
        cap = self.policy.max_collateral
        return offer.price >= self.policy.min_price and (cap is None or offer.collateral <= cap)

    def _acceptable(self, owner_key: bytes, offer: FragmentOffer) -> bool:
        """The policy; offers that fail only for now (room, coin to lock, a fetch of the same
        block) are kept for later blocks by the caller."""
        owner = Principal.of_public_key(owner_key)
        if owner == self.principal or not self._terms_ok(offer):
            return False
        if len(self._fetching) >= MAX_PARALLEL_FETCHES * 4 or self._holds_path(offer.path):
            return False
        if offer.collateral * offer.periods > self._free_balance():
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
        collateral = max(c.offer.collateral * c.offer.periods for _, c in group)
        self._reserved_collateral += collateral
        served: list[bytes] = []
        contracts = dict(group)

        async def run() -> None:
            try:
                async with self._fetch_slots:
                    await self._fetch(owner_key, group, served)
            except proto.PeerUnreachable as exc:
                # the owner is down or hung up (a put interrupted, to be run again): try its
                # offers again a few blocks later, until they expire
                for oid, contract in group:
                    self._retry_at[oid] = self.height + RETRY_BLOCKS
                    self._pending_offers.append((oid, owner_key, contract.offer))
                self._note(f"{offer.path}: owner unreachable, trying again later: {exc}")
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
                self._reserved_collateral -= collateral
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
            record = HostedFragment(oid, contract.owner, owner_key, offer, PENDING,
                                    periods=offer.periods)
            self.contracts[oid] = record
            self.trees[oid] = tree
            await self.state.flush()  # the contract is on disk before the receipt is signed
            sig = self.key.sign(receipt_message(self.chain.chain_id, oid, self.principal,
                                                offer.root, self.payout))
            await proto.send(channel, proto.Receipt(sig, self.payout))
            # No Stored back (the owner stopped, the channel broke) is not a receipt left
            # unpublished: the owner may have published it already, or still may until the
            # offer expires. The fragment stays pending until the chain says which
            # (:meth:`_refresh_contracts`); dropping it here would miss every period of a
            # contract made active after all.
            await proto.expect(channel, proto.Stored, FETCH_TIMEOUT)
        self._note(f"stored {offer.path} #{offer.index} ({format_size(offer.size)}) for "
                   f"{contract.owner}")

    # --- contracts ------------------------------------------------------------------------

    def _drop(self, c: HostedFragment, status: str, why: str) -> None:
        c.status = status
        self.trees.pop(c.offer_id, None)
        self.store.delete(c.offer_id)
        self._note(f"{c.offer.path} #{c.offer.index}: {status} ({why})")

    async def _refresh_contracts(self, failed: list[BlockcoinError | OSError]) -> None:
        """Each live contract's state from the chain; a read that fails is added to
        ``failed`` and leaves that contract as it was."""
        for c in list(self.contracts.values()):
            if c.status not in (PENDING, ACTIVE):
                continue
            try:
                info = await self.chain.contract(c.offer_id)
            except (BlockcoinError, OSError) as exc:
                failed.append(exc)
                continue
            if info is None:
                if self.height > c.offer.expiry_height:
                    self._drop(c, DROPPED, "offer vanished from the chain")
                continue
            if info.host is not None and info.host != self.principal:
                self._drop(c, DROPPED, f"stored by {info.host} instead")
                continue
            if c.status == PENDING and info.state == "active":
                c.status = ACTIVE
                self._note(f"contract {c.offer_id.hex()[:12]} for {c.offer.path} "
                           f"#{c.offer.index} active from block {info.start} for "
                           f"{info.periods} periods at {format_coins(c.offer.price)} a period")
            elif c.status == PENDING and info.state == "offered" and self.height > c.offer.expiry_height:
                self._drop(c, DROPPED, "the owner never published the receipt")
                continue
            self._report_progress(c, info)
            self._mirror(c, info)
            final = _FINAL.get(info.state)
            if final is not None:
                self._drop(c, final, f"contract {info.state} after {info.proven} proven and"
                                     f" {info.missed} missed periods")

    def _report_progress(self, c: HostedFragment, info: ContractInfo) -> None:
        """Log what the chain did for a contract since it was last seen: paid periods and
        missed ones (a miss refunds the owner and burns that period's collateral)."""
        where = f"{c.offer.path} #{c.offer.index}"
        if info.paid_total > c.paid_total:
            log.info("%s: paid %s for %d proven period(s) (%s in all)", where,
                     format_coins(info.paid_total - c.paid_total), info.proven - c.proven,
                     format_coins(info.paid_total))
        if info.missed > c.missed:
            log.warning("%s: MISSED %d period(s) (%d in all); collateral burned", where,
                        info.missed - c.missed, info.missed)

    @staticmethod
    def _mirror(c: HostedFragment, info: ContractInfo) -> None:
        c.start, c.periods, c.proven, c.missed = info.start, info.periods, info.proven, info.missed
        c.last_proven, c.paid_total = info.last_proven, info.paid_total
        c.collateral_locked = info.collateral_locked

    # --- proofs ---------------------------------------------------------------------------

    async def _due(self) -> list[tuple[HostedFragment, int]]:
        """Active contracts whose open window (for the next block) is not proven yet and whose
        last proof is neither pending nor confirmed."""
        due = []
        seen: dict[bytes, str | None] = {}  # one proof event covers several contracts
        for c in self.contracts.values():
            if c.status != ACTIVE:
                continue
            period = c.window_of(self.height + 1)
            if not 0 <= period < c.periods or c.last_proven >= period:
                continue
            if c.proof_period == period and c.proof_event:
                if c.proof_event not in seen:
                    seen[c.proof_event] = await self.chain.event_status(c.proof_event)
                if seen[c.proof_event] is not None:
                    continue
            due.append((c, period))
        return due

    async def _prove(self) -> None:
        items: list[tuple[HostedFragment, ProofItem]] = []
        for c, period in await self._due():
            try:
                items.append((c, await self._proof_item(c, period)))
            except (OSError, StorageError) as exc:
                if c.proof_period != period:
                    self._note(f"cannot prove {c.offer.path} #{c.offer.index} period {period}: "
                               f"{exc}")
                c.proof_period, c.proof_event = period, b""
        limit = self.chain.params.max_event_bytes - PROOF_EVENT_MARGIN
        batch: list[tuple[HostedFragment, ProofItem]] = []
        size = 0
        for c, item in items:
            item_size = _size_of(item)
            if batch and size + item_size > limit:
                await self._publish(batch)
                batch, size = [], 0
            batch.append((c, item))
            size += item_size
        if batch:
            await self._publish(batch)

    async def _proof_item(self, c: HostedFragment, period: int) -> ProofItem:
        tree = self.trees.get(c.offer_id)
        if tree is None:
            raise IntegrityError("the fragment failed its check at start")
        opening = await self.chain.block_hash(c.start + period * c.offer.period_blocks)
        if opening is None:
            raise StorageError(f"the block opening period {period} is not on chain yet")
        return await asyncio.to_thread(
            proof_item, tree, lambda idx: self.store.read_leaves(c.offer_id, c.offer, idx),
            c.offer_id, period, opening, self.chain.params.proof_leaves)

    async def _publish(self, batch: list[tuple[HostedFragment, ProofItem]]) -> None:
        """One ``StorageProof`` for the batch; if the node refuses it (one item went stale, a
        contract released meanwhile), each item on its own, so one cannot block the rest."""
        try:
            eid = await self.signer.submit(self.chain, StorageProof(tuple(i for _, i in batch)),
                                           self.policy.fee_rate)
        except ValidationError as exc:
            if len(batch) == 1:
                c, item = batch[0]
                if not isinstance(exc, DuplicateProof):
                    self._note(f"proof of {c.offer.path} #{c.offer.index} period {item.period}"
                               f" refused: {exc}")
                return
            for one in batch:
                await self._publish([one])
            return
        for c, item in batch:
            c.proof_period, c.proof_event = item.period, eid
        self._note(f"proved {len(batch)} contract(s) for this period")

    # --- serving --------------------------------------------------------------------------

    async def _handle(self, channel: SecureChannel) -> None:
        msg = await proto.recv(channel, proto.DIAL_TIMEOUT)
        if isinstance(msg, proto.Retrieve):
            await self._on_retrieve(channel, msg)
        elif isinstance(msg, proto.Extend):
            await self._on_extend(channel, msg)
        else:
            await proto.refuse(channel, "unexpected", f"a host does not answer {type(msg).__name__}")

    def _served(self, offer_id: bytes) -> HostedFragment:
        c = self.contracts.get(offer_id)
        if c is None:
            raise proto.PeerRefused("unknown-contract", "this host holds no such fragment")
        if c.status not in (PENDING, ACTIVE):
            raise proto.PeerRefused("not-held", f"contract is {c.status}")
        return c

    async def _on_extend(self, channel: SecureChannel, msg: proto.Extend) -> None:
        """Consent to run a contract longer, on its terms, if the policy still takes them."""
        try:
            c = self._served(msg.offer_id)
            if channel.remote_principal not in (c.owner, Principal.of_public_key(c.owner_key)):
                raise proto.PeerRefused("not-owner", "only the contract's owner extends it")
            added = msg.periods - c.periods
            if c.status != ACTIVE or added <= 0:
                raise proto.PeerRefused("not-extendable",
                                        f"contract is {c.status} with {c.periods} periods")
            if not self._terms_ok(c.offer):
                raise proto.PeerRefused("terms", "the contract's terms no longer meet the policy")
            if c.offer.collateral * added > self._free_balance():
                raise proto.PeerRefused("collateral", "the host cannot lock the added collateral")
        except proto.PeerRefused as exc:
            await proto.refuse(channel, exc.reason, str(exc))
            return
        sig = self.key.sign(extension_message(self.chain.chain_id, c.offer_id, msg.periods))
        await proto.send(channel, proto.Consent(sig))
        self._note(f"agreed to extend {c.offer.path} #{c.offer.index} to {msg.periods} periods")

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
        """Capacity used, contracts with their proofs, earnings and collateral."""
        rows = []
        for c in self.contracts.values():
            rows.append({
                "id": c.offer_id.hex(), "path": c.offer.path, "index": c.offer.index,
                "owner": str(c.owner), "size": c.offer.size, "price": c.offer.price,
                "collateral": c.offer.collateral, "state": c.status, "start": c.start or None,
                "end": c.start + c.periods * c.offer.period_blocks if c.start else None,
                "periods": c.periods, "proven_periods": c.proven, "missed_periods": c.missed,
                "paid_total": c.paid_total, "collateral_locked": c.collateral_locked,
                "corrupt": c.corrupt,
            })
        live = [c for c in self.contracts.values() if c.status in (PENDING, ACTIVE)]
        used = sum(c.offer.size for c in live)
        return {
            "principal": str(self.principal), "address": self.address, "height": self.height,
            "payout": str(self.payout), "capacity": self.policy.capacity, "used": used,
            "free": self.policy.capacity - used, "min_price": self.policy.min_price,
            "earned": sum(c.paid_total for c in self.contracts.values()),
            "future": sum((c.periods - c.proven - c.missed) * c.offer.price for c in live),
            "collateral_locked": sum(c.collateral_locked for c in live),
            "proven_periods": sum(c.proven for c in self.contracts.values()),
            "missed_periods": sum(c.missed for c in self.contracts.values()),
            "contracts": rows,
        }


def _size_of(item: ProofItem) -> int:
    w = Writer()
    item.write(w)
    return len(bytes(w))
