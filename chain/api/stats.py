"""The chain's figures over time, for the dashboard's charts, computed from the chain itself.

The global tree holds only the state at the tip, but every connected block keeps an undo record:
the value each key it touched had before it. So the state after any earlier block is the tip's
state with the undo records of the blocks above it applied, newest first; a sum over the state
(coins in circulation, bytes under contract, ...) moves back a block at a time by taking out
each touched key's later value and putting back its earlier one. A walk reads one undo record
per block and decodes only the records a measure cares about.

Work is bounded: a series has at most :data:`MAX_POINTS` points, one per bucket of blocks (a
bucket is a whole number of storage periods, "days" on the main network), so a walk never goes
further back than ``MAX_POINTS`` buckets; and each point, once computed, is cached under the hash
of its block (the state after a block never changes), so a new block costs a walk of at most one
bucket. The sums at the tip are kept too and moved forward by one undo record when the next
block builds on them; any other change of tip (a reorganisation) scans the state afresh.

Everything runs on the chain thread (:meth:`NodeCore.run`), so no block connects mid-walk.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from chain.core.header import hash_hex
from chain.core.principal import Principal
from chain.core.schema import ACCOUNT, CONTRACT, HOST
from chain.node.chainstate import ChainState
from globaltree.records import Account, Contract, ContractState, HostRecord, host_key
from globaltree.view import undo_entries

MAX_POINTS = 240
"""Points in a series at most (and so buckets walked back)."""
CACHE_POINTS = 20_000
"""Cached points kept, oldest dropped first (a point is a few integers)."""

Vector = tuple[int, ...]
Measure = Callable[[bytes, bytes | None], Vector]

GLOBAL_FIELDS = ("circulation", "under_contract", "proven_bytes", "active_hosts")
HOST_FIELDS = ("earned", "bytes_stored", "proven_periods", "missed_periods", "collateral_locked")
OWNER_FIELDS = ("paid", "escrow", "under_contract", "liability_per_period", "contracts")


def _global(key: bytes, value: bytes | None) -> Vector:
    """What one record adds to the chain's totals: coins (balances, escrow and locked
    collateral), bytes of active contracts, bytes proven so far, hosts holding a contract."""
    if value is None:
        return (0, 0, 0, 0)
    if key.startswith(ACCOUNT):
        return (Account.decode(value).balance, 0, 0, 0)
    if key.startswith(CONTRACT):
        c = Contract.decode(value)
        active = c.size if c.state == ContractState.ACTIVE else 0
        return (c.escrow + c.collateral_locked, active, c.proven * c.size, 0)
    if key.startswith(HOST):
        return (0, 0, 0, int(HostRecord.decode(value).contracts_active > 0))
    return (0, 0, 0, 0)


def _host(host: Principal) -> Measure:
    key_of = host_key(host)

    def measure(key: bytes, value: bytes | None) -> Vector:
        if key != key_of or value is None:
            return (0, 0, 0, 0, 0)
        r = HostRecord.decode(value)
        return (r.earned, r.bytes_stored, r.periods_proven, r.periods_missed, r.collateral_locked)

    return measure


def _owner(owner: Principal) -> Measure:
    def measure(key: bytes, value: bytes | None) -> Vector:
        if value is None or not key.startswith(CONTRACT):
            return (0, 0, 0, 0, 0)
        c = Contract.decode(value)
        if c.owner != owner:
            return (0, 0, 0, 0, 0)
        active = c.state == ContractState.ACTIVE
        return (c.paid_total, c.escrow, c.size if active else 0, c.price if active else 0,
                int(active))

    return measure


def _add(a: Vector, b: Vector, sign: int = 1) -> Vector:
    return tuple(x + sign * y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True, slots=True)
class Point:
    height: int
    time: int
    values: Vector


class Series:
    """One measure's walk and cache. ``scan`` lists the keys (with values) whose sum is the
    measure at the tip; ``measure`` turns one record into its share."""

    def __init__(self, name: str, fields: tuple[str, ...], measure: Measure,
                 scan: Callable[[ChainState], Iterable[tuple[bytes, bytes | None]]]) -> None:
        self.name, self.fields, self.measure, self.scan = name, fields, measure, scan
        self.points: OrderedDict[tuple[int, bytes], Point] = OrderedDict()
        self._tip: tuple[bytes, Vector] | None = None

    def _at_tip(self, chain: ChainState) -> Vector:
        tip = chain.tip
        if self._tip is not None and self._tip[0] == tip.hash:
            return self._tip[1]
        zero = tuple(0 for _ in self.fields)
        if self._tip is not None and self._tip[0] == tip.header.prev:
            undo = chain.store.get_undo(tip.hash)
            if undo is not None:  # the next block: its undo record is the whole difference
                total = self._tip[1]
                for key, old in undo_entries(undo):
                    total = _add(total, self.measure(key, chain.tree.db.get(key)))
                    total = _add(total, self.measure(key, old), -1)
                self._tip = (tip.hash, total)
                return total
        total = zero
        for key, value in self.scan(chain):
            total = _add(total, self.measure(key, value))
        self._tip = (tip.hash, total)
        return total

    def compute(self, chain: ChainState, bucket: int) -> list[Point]:
        """Points at every ``bucket``-th height of the best chain (and at the tip), oldest
        first, at most :data:`MAX_POINTS`."""
        tip = chain.tip
        top = tip.height
        first = max(0, (top // bucket - (MAX_POINTS - 2)) * bucket)
        wanted = [*range(first, top, bucket), top]
        hashes = {h: chain.best_chain_hash(h) for h in wanted}
        found: dict[int, Point] = {}
        for h in wanted:
            cached = self.points.get((bucket, hashes[h] or b""))
            if cached is not None:
                found[h] = cached
        missing = [h for h in wanted if h not in found]
        if missing:
            self._walk(chain, bucket, min(missing), found, hashes)
        return [found[h] for h in wanted if h in found]  # a walk stops at a missing undo

    def _walk(self, chain: ChainState, bucket: int, lowest: int, found: dict[int, Point],
              hashes: dict[int, bytes | None]) -> None:
        """Step back from the tip to ``lowest``, keeping the sums at each wanted height."""
        total = self._at_tip(chain)
        later: dict[bytes, bytes | None] = {}  # key -> its value after the current height
        db = chain.tree.db
        h = chain.tip.height
        while True:
            block_hash = chain.best_chain_hash(h)
            if block_hash is None:
                break
            if h in hashes and h not in found:
                entry = chain.index.get(block_hash)
                point = Point(h, entry.header.time if entry is not None else 0, total)
                found[h] = point
                self.points[(bucket, block_hash)] = point
                while len(self.points) > CACHE_POINTS:
                    self.points.popitem(last=False)
            if h <= lowest or h == 0:
                break
            undo = chain.store.get_undo(block_hash)
            if undo is None:
                break
            for key, old in undo_entries(undo):
                now = later[key] if key in later else db.get(key)
                total = _add(_add(total, self.measure(key, now), -1), self.measure(key, old))
                later[key] = old
            h -= 1


def _scan_global(chain: ChainState) -> Iterable[tuple[bytes, bytes | None]]:
    for prefix in (ACCOUNT, CONTRACT, HOST):
        yield from chain.tree.db.iterator(prefix=prefix)


class Stats:
    """The dashboard's series: the chain's totals, and a host's or an owner's figures."""

    def __init__(self) -> None:
        self.chain_series = Series("chain", GLOBAL_FIELDS, _global, _scan_global)
        self._scoped: OrderedDict[tuple[str, str], Series] = OrderedDict()

    def _scoped_series(self, kind: str, p: Principal) -> Series:
        key = (kind, str(p))
        found = self._scoped.get(key)
        if found is None:
            if kind == "host":
                hk = host_key(p)
                found = Series(kind, HOST_FIELDS, _host(p),
                               lambda chain: [(hk, chain.tree.db.get(hk))])
            else:
                found = Series(kind, OWNER_FIELDS, _owner(p), lambda chain: [
                    (CONTRACT + c.id, c.encode()) for c in chain.tree.contracts_by_owner(p)])
            self._scoped[key] = found
            while len(self._scoped) > 64:
                self._scoped.popitem(last=False)
        self._scoped.move_to_end(key)
        return found

    def series(self, chain: ChainState, kind: str, p: Principal | None,
               bucket: int | None) -> dict[str, Any]:
        """The JSON of one series (run on the chain thread). ``bucket`` defaults to whole
        storage periods, enough of them that the chain fits in :data:`MAX_POINTS` points."""
        period = chain.params.storage_period_blocks
        if bucket is None:
            periods = -(-(chain.tip.height + 1) // (period * (MAX_POINTS - 1)))
            bucket = period * max(1, periods)
        series = self.chain_series if p is None else self._scoped_series(kind, p)
        points = series.compute(chain, bucket)
        tip = chain.tip
        return {"series": series.name, "principal": str(p) if p is not None else None,
                "bucket": bucket, "period_blocks": period, "tip": tip.height,
                "hash": hash_hex(tip.hash), "fields": ["height", "time", *series.fields],
                "points": [[pt.height, pt.time, *pt.values] for pt in points]}
