"""The mempool: signed events waiting for a block.

Events are ordered per signer by nonce and across signers by fee rate (fee per byte). An
event enters only if it pays at least the network's minimum fee rate (policy, not consensus: a
miner may still include free events of its own) and it and the signer's earlier pending events
apply cleanly on the tip (so its payer can fund it), so nothing that cannot be mined is
relayed. The pool is bounded in bytes: past the bound the lowest fee-rate events go first,
together with the same signer's later nonces that depend on them. Events of disconnected
blocks come back; events a block confirms leave, and after every block the rest are checked
again, so that what the block made invalid (a proof whose window closed, a second proof for a
period, an offer that expired) does not sit in front of its signer's later events.
Accepted events are also persisted, so a restart (or a CLI run between two mining runs)
keeps them, as bitcoind's mempool.dat does.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chain.core.block import Block
from chain.core.errors import (
    BadNonce,
    DecodeError,
    DuplicateEvent,
    FeeTooLow,
    MempoolFull,
    ValidationError,
)
from chain.core.events import SignedEvent, decode_event, event_id
from globaltree.fold import Fold
from globaltree.view import StateView

if TYPE_CHECKING:
    from chain.node.chainstate import ChainState

MAX_NONCE_GAP = 64


def _nonce_order(raw: bytes) -> tuple[bytes, int]:
    """Reload persisted events signer by signer in nonce order, so each finds its predecessor."""
    try:
        ev = decode_event(raw)
    except DecodeError:
        return (b"", 0)
    return (ev.signer_key, ev.nonce) if isinstance(ev, SignedEvent) else (b"", 0)


@dataclass(order=True)
class Entry:
    sort_key: tuple[float, int]
    id: bytes = field(compare=False)
    event: SignedEvent = field(compare=False)

    @property
    def size(self) -> int:
        return len(self.event.raw)


class Mempool:
    def __init__(self, chain: ChainState, max_bytes: int = 64 << 20,
                 min_fee_rate: int | None = None):
        self.chain = chain
        self.max_bytes = max_bytes
        self.min_fee_rate = chain.params.min_fee_rate if min_fee_rate is None else min_fee_rate
        self.entries: dict[bytes, Entry] = {}
        self.by_signer: dict[bytes, dict[int, bytes]] = {}
        self.bytes = 0
        self._seq = itertools.count()
        chain.listeners.append(self._on_chain)
        for raw in sorted(chain.store.pending(), key=_nonce_order):
            try:
                ev = decode_event(raw)
                if not isinstance(ev, SignedEvent):
                    raise DecodeError("a coinbase is never pending")
                self.add(ev, persist=False)
            except (DecodeError, ValidationError):
                chain.store.delete_pending([hashlib.sha256(chain.params.chain_id + raw).digest()])

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, eid: bytes) -> bool:
        return eid in self.entries

    def _state_nonce(self, view: StateView, ev: SignedEvent) -> int:
        acct = view.peek_account(ev.signer)
        return acct.nonce if acct else 0

    def add(self, ev: SignedEvent, persist: bool = True, fee_policy: bool = True) -> bytes:
        """Admit ``ev`` or raise a ValidationError saying why not; returns its id.
        ``fee_policy=False`` takes back events of disconnected blocks whatever their fee (they
        were good enough for a miner once), as Bitcoin Core does on a reorg."""
        params = self.chain.params
        eid = event_id(params.chain_id, ev)
        if eid in self.entries or self.chain.store.event_location(eid) is not None:
            raise DuplicateEvent("event already pending or confirmed")
        ev.check_stateless(params.chain_id, params.max_event_bytes)
        if fee_policy and ev.fee < self.min_fee_rate * len(ev.raw):
            raise FeeTooLow(f"fee {ev.fee} for {len(ev.raw)} bytes is below the minimum of"
                            f" {self.min_fee_rate} per byte ({self.min_fee_rate * len(ev.raw)})")
        fee_rate = ev.fee / len(ev.raw)
        view = self.chain.view()
        fold = self._next_block_fold(view)
        base = self._state_nonce(view, ev)
        pending = self.by_signer.get(ev.signer.digest, {})
        if not base <= ev.nonce <= base + MAX_NONCE_GAP or any(
                n not in pending for n in range(base, ev.nonce)):
            after = next(n for n in itertools.count(base) if n not in pending)
            raise BadNonce(f"nonce {ev.nonce}; next for {ev.signer} is {after}")
        replaced = pending.get(ev.nonce)
        if replaced is not None and self.entries[replaced].event.fee >= ev.fee:
            raise FeeTooLow("a replacement must pay a higher fee than the pending event")
        for nonce in range(base, ev.nonce):
            fold.apply(self.entries[pending[nonce]].event)
        fold.apply(ev, eid)
        if replaced is not None:
            self._drop_from(ev.signer.digest, ev.nonce)
        entry = Entry((-fee_rate, next(self._seq)), eid, ev)
        self.entries[eid] = entry
        self.by_signer.setdefault(ev.signer.digest, {})[ev.nonce] = eid
        self.bytes += entry.size
        if persist:
            self.chain.store.put_pending(eid, ev.raw)
        self._trim()
        if eid not in self.entries:
            raise MempoolFull("mempool full and the event's fee rate is too low to enter")
        return eid

    def _next_block_fold(self, view: StateView) -> Fold:
        """A fold for the block after the tip, at the earliest time it may carry."""
        tip = self.chain.tip
        return Fold(view, self.chain.params, tip.height + 1,
                    max(tip.header.time, self.chain.median_time_past(tip) + 1),
                    self.chain.store.hash_at)

    def _drop_from(self, signer: bytes, nonce: int) -> list[bytes]:
        """Remove the signer's events from ``nonce`` on (they depend on the ones before)."""
        pending = self.by_signer.get(signer, {})
        gone = []
        for n in sorted(k for k in pending if k >= nonce):
            eid = pending.pop(n)
            self.bytes -= self.entries.pop(eid).size
            gone.append(eid)
        if not pending:
            self.by_signer.pop(signer, None)
        self.chain.store.delete_pending(gone)
        return gone

    def _remove(self, signer: bytes, nonces: list[int]) -> None:
        pending = self.by_signer[signer]
        gone = [pending.pop(n) for n in nonces]
        for eid in gone:
            self.bytes -= self.entries.pop(eid).size
        if not pending:
            del self.by_signer[signer]
        self.chain.store.delete_pending(gone)

    def _trim(self) -> None:
        while self.bytes > self.max_bytes and self.entries:
            worst = max(self.entries.values())
            self._drop_from(worst.event.signer.digest, worst.event.nonce)

    def _on_chain(self, action: str, block: Block, height: int) -> None:
        events = [e for e in block.events if isinstance(e, SignedEvent)]
        if action == "connect":
            view = self.chain.view()
            for ev in events:
                digest = ev.signer.digest
                if digest in self.by_signer:
                    base = self._state_nonce(view, ev)
                    self._remove(digest, [n for n in self.by_signer[digest] if n < base])
            self._revalidate()
        else:
            for ev in events:
                with contextlib.suppress(ValidationError):  # e.g. now conflicts with the new tip
                    self.add(ev, fee_policy=False)

    def _revalidate(self) -> None:
        """Check every signer's pending events again on the new tip, each signer on its own
        (as they were admitted); from the first that no longer applies, the signer's events
        leave the pool. One fold step per pending event and block."""
        for signer, pending in list(self.by_signer.items()):
            fold = self._next_block_fold(self.chain.view())
            for nonce in sorted(pending):
                entry = self.entries[pending[nonce]]
                try:
                    fold.apply(entry.event, entry.id)
                except ValidationError:
                    self._drop_from(signer, nonce)
                    break

    def select(self, fold: Fold, max_bytes: int, max_count: int) -> list[SignedEvent]:
        """Greedy by fee rate, each signer's events in nonce order, each applied to ``fold``;
        an event that fails to apply is skipped with the rest of its signer's events."""
        heads: list[tuple[Entry, int]] = []
        queues: dict[bytes, list[int]] = {}
        for signer, pending in self.by_signer.items():
            nonces = sorted(pending)
            queues[signer] = nonces
            heapq.heappush(heads, (self.entries[pending[nonces[0]]], 0))
        chosen: list[SignedEvent] = []
        used = 0
        while heads and len(chosen) < max_count:
            entry, pos = heapq.heappop(heads)
            if used + entry.size + 8 > max_bytes:
                continue
            try:
                fold.apply(entry.event, entry.id)
            except ValidationError:
                continue
            chosen.append(entry.event)
            used += entry.size + 8
            signer = entry.event.signer.digest
            nonces = queues[signer]
            if pos + 1 < len(nonces):
                nxt = self.entries[self.by_signer[signer][nonces[pos + 1]]]
                heapq.heappush(heads, (nxt, pos + 1))
        return chosen
