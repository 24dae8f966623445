"""The records of the global tree and the keys they live under (the layout is
:mod:`chain.core.schema`)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

from chain.core.encoding import Reader, Writer, decode_all
from chain.core.errors import DecodeError
from chain.core.events import FragmentOffer
from chain.core.principal import Principal
from chain.core.schema import (
    ACCOUNT,
    CLOSING,
    CONTRACT,
    FRAGMENT,
    HOLDER,
    HOST,
    REVOKED,
    SPENT,
    STATE,
)

_HEIGHT = struct.Struct(">Q")

STATE_PREFIXES = [STATE]


def account_key(p: Principal) -> bytes:
    return ACCOUNT + p.digest


def contract_key(cid: bytes) -> bytes:
    return CONTRACT + cid


def fragments_key(path: str) -> bytes:
    """Where a path's holders are: one record per path, so one proof shows all of them."""
    return FRAGMENT + hashlib.sha256(path.encode("utf-8")).digest()


def holder_key(path: str, host: Principal) -> bytes:
    """Whether ``host`` holds any fragment of ``path``: one lookup, however many fragments."""
    return HOLDER + hashlib.sha256(path.encode("utf-8")).digest() + host.digest


def closing_key(height: int, cid: bytes) -> bytes:
    """A contract whose offer expires, or whose proof window closes, at ``height``."""
    return CLOSING + _HEIGHT.pack(height) + cid


def closing_prefix(height: int) -> bytes:
    return CLOSING + _HEIGHT.pack(height)


def host_key(p: Principal) -> bytes:
    return HOST + p.digest


def revoked_key(owner: Principal, p: Principal) -> bytes:
    return REVOKED + owner.digest + p.digest


def spent_key(link_id: bytes) -> bytes:
    return SPENT + link_id


@dataclass(slots=True)
class Account:
    balance: int = 0
    nonce: int = 0
    ed25519: bytes | None = None
    x25519: bytes | None = None
    address: str = ""
    updated: int = 0

    def encode(self) -> bytes:
        w = Writer().varint(self.balance).varint(self.nonce)
        w.var_bytes(self.ed25519 or b"").var_bytes(self.x25519 or b"")
        return bytes(w.text(self.address).varint(self.updated))

    @classmethod
    def decode(cls, data: bytes) -> Account:
        def read(r: Reader) -> Account:
            balance, nonce = r.varint(), r.varint()
            ed, x = r.var_bytes(32) or None, r.var_bytes(32) or None
            return cls(balance, nonce, ed, x, r.text(255), r.varint())

        return decode_all(data, read)

    def to_json(self, principal: Principal) -> dict[str, object]:
        return {
            "principal": str(principal),
            "balance": self.balance,
            "nonce": self.nonce,
            "ed25519": self.ed25519.hex() if self.ed25519 else None,
            "x25519": self.x25519.hex() if self.x25519 else None,
            "address": self.address or None,
            "updated_height": self.updated,
        }


@dataclass(slots=True)
class PathFragments:
    """``/global/fragments/PATH``: every stored fragment of a path as (index, host principal
    digest, contract id), sorted. One record rather than a key per holder so that a proof of
    this one key shows the whole list, absence included."""

    entries: list[tuple[int, bytes, bytes]] = field(default_factory=list)

    def add(self, index: int, host: Principal, cid: bytes) -> None:
        self.entries.append((index, host.digest, cid))
        self.entries.sort()

    def remove(self, index: int, host: Principal) -> None:
        self.entries = [e for e in self.entries if (e[0], e[1]) != (index, host.digest)]

    def encode(self) -> bytes:
        w = Writer().varint(len(self.entries))
        for index, host, cid in self.entries:
            w.u8(index).fixed(host, 32).fixed(cid, 32)
        return bytes(w)

    @classmethod
    def decode(cls, data: bytes) -> PathFragments:
        def read(r: Reader) -> PathFragments:
            entries = [(r.u8(), r.fixed(32), r.fixed(32)) for _ in range(r.varint(1 << 20))]
            if entries != sorted(set(entries)):
                raise DecodeError("fragment entries out of order")
            return cls(entries)

        return decode_all(data, read)


class ContractState(IntEnum):
    OFFERED = 0
    ACTIVE = 1
    RELEASED = 2  # the owner ended it
    ENDED = 3  # its last period is over
    EXPIRED = 4  # the offer found no host in time
    FAILED = 5  # the host missed too many periods


def _offer_bytes(offer: FragmentOffer) -> bytes:
    w = Writer()
    offer.write(w)
    return bytes(w)


class Contract:
    """An offer and, once stored, the contract it became: who holds the fragment, the owner's
    escrow still to pay out, the host's collateral still locked, and each period's outcome.

    Every proof reads and rewrites its contract, so the record is a fixed binary layout
    (one ``struct`` call each way) followed by the offer's own bytes; the terms a proof needs
    (size, leaf size, root, price, collateral, period length) are copied into the fixed part,
    and the full :attr:`offer` is decoded only when asked for.
    """

    __slots__ = (
        "_offer", "closes", "collateral", "collateral_locked", "escrow", "host", "host_key",
        "id", "last_proven", "leaf_size", "missed", "offer_height", "offer_raw", "owner",
        "owner_key", "paid_total", "payout", "period_blocks", "periods", "price", "proven",
        "root", "size", "start", "state",
    )
    # id, owner, owner key, host key, payout, state, flags, then eleven u64 (offer height,
    # start, periods, escrow, collateral locked, proven, missed, last proven + 1, paid total,
    # closes, size), leaf size u32, price, collateral, period blocks, root
    _FIXED = struct.Struct(">32s32s32s32s32sBB11QI3Q32s")
    _HAS_HOST, _HAS_PAYOUT = 1, 2

    def __init__(self, id: bytes, owner: Principal, owner_key: bytes, offer: FragmentOffer,
                 offer_height: int, state: ContractState = ContractState.OFFERED,
                 host_key: bytes | None = None, payout: Principal | None = None, start: int = 0,
                 periods: int = 0, escrow: int = 0, collateral_locked: int = 0, proven: int = 0,
                 missed: int = 0, last_proven: int = -1, paid_total: int = 0,
                 closes: int = 0) -> None:
        self.id, self.owner, self.owner_key = id, owner, owner_key
        self._offer: FragmentOffer | None = offer
        self.offer_raw = _offer_bytes(offer)
        self.size, self.leaf_size, self.root = offer.size, offer.leaf_size, offer.root
        self.price, self.collateral = offer.price, offer.collateral
        self.period_blocks = offer.period_blocks
        self.offer_height, self.state = offer_height, state
        self.host_key: bytes | None = None
        self.host: Principal | None = None
        if host_key is not None:
            self.set_host(host_key)
        self.payout = payout
        self.start, self.periods, self.escrow = start, periods, escrow
        self.collateral_locked, self.proven, self.missed = collateral_locked, proven, missed
        self.last_proven, self.paid_total, self.closes = last_proven, paid_total, closes

    def set_host(self, host_key: bytes) -> None:
        self.host_key = host_key
        self.host = Principal.of_public_key(host_key)

    @property
    def offer(self) -> FragmentOffer:
        if self._offer is None:
            self._offer = decode_all(self.offer_raw, FragmentOffer.read)
        return self._offer

    @property
    def end(self) -> int:
        return self.start + self.period_blocks * self.periods

    def window_of(self, height: int) -> int:
        """The period whose proof window holds ``height``: ``(start + p·P, start + (p+1)·P]``."""
        return (height - self.start - 1) // self.period_blocks

    def opening_height(self, period: int) -> int:
        """The block whose hash seeds ``period``'s proof (its window opens right after it)."""
        return self.start + period * self.period_blocks

    def encode(self) -> bytes:
        flags = (self._HAS_HOST if self.host_key else 0) | (self._HAS_PAYOUT if self.payout else 0)
        return self._FIXED.pack(
            self.id, self.owner.digest, self.owner_key, self.host_key or bytes(32),
            self.payout.digest if self.payout else bytes(32), self.state, flags,
            self.offer_height, self.start, self.periods, self.escrow, self.collateral_locked,
            self.proven, self.missed, self.last_proven + 1, self.paid_total, self.closes,
            self.size, self.leaf_size, self.price, self.collateral, self.period_blocks,
            self.root) + self.offer_raw

    @classmethod
    def decode(cls, data: bytes) -> Contract:
        fixed = cls._FIXED
        if len(data) <= fixed.size:
            raise DecodeError("contract record too short")
        (cid, owner, owner_key, host_key, payout, state, flags, offer_height, start, periods,
         escrow, locked, proven, missed, last, paid, closes, size, leaf_size, price, collateral,
         period_blocks, root) = fixed.unpack_from(data)
        if state not in ContractState._value2member_map_ or flags & ~3:
            raise DecodeError("contract record has an unknown state")
        c = cls.__new__(cls)
        c.id, c.owner, c.owner_key = cid, Principal(owner), owner_key
        c._offer, c.offer_raw = None, data[fixed.size:]
        c.size, c.leaf_size, c.root, c.price, c.collateral = size, leaf_size, root, price, collateral
        c.period_blocks, c.offer_height, c.state = period_blocks, offer_height, ContractState(state)
        c.host_key = c.host = None
        if flags & cls._HAS_HOST:
            c.set_host(host_key)
        c.payout = Principal(payout) if flags & cls._HAS_PAYOUT else None
        c.start, c.periods, c.escrow, c.collateral_locked = start, periods, escrow, locked
        c.proven, c.missed, c.last_proven = proven, missed, last - 1
        c.paid_total, c.closes = paid, closes
        return c

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Contract) and other.encode() == self.encode()

    def __repr__(self) -> str:
        return (f"Contract({self.id.hex()[:16]}, {self.state.name.lower()}, host={self.host},"
                f" period {self.proven + self.missed}/{self.periods})")

    def to_json(self) -> dict[str, object]:
        o = self.offer
        active = self.host is not None
        return {
            "id": self.id.hex(),
            "owner": str(self.owner),
            "host": str(self.host) if self.host else None,
            "payout": str(self.payout) if self.payout else None,
            "state": self.state.name.lower(),
            "path": o.path,
            "version": o.version.hex(),
            "index": o.index,
            "k": o.k,
            "n": o.n,
            "size": o.size,
            "root": o.root.hex(),
            "leaf_size": o.leaf_size,
            "price": o.price,
            "collateral": o.collateral,
            "period_blocks": o.period_blocks,
            "periods": self.periods,
            "offer_periods": o.periods,
            "offer_height": self.offer_height,
            "expiry_height": o.expiry_height,
            "start": self.start if active else None,
            "end": self.end if active else None,
            "escrow": self.escrow,
            "collateral_locked": self.collateral_locked,
            "proven_periods": self.proven,
            "missed_periods": self.missed,
            "last_proven": self.last_proven if self.last_proven >= 0 else None,
            "paid_total": self.paid_total,
        }


@dataclass(slots=True)
class HostRecord:
    """A host's public record: what it holds under contract and how it has kept its word.
    Owners choose hosts by it; it changes only through the fold, so no host can polish it."""

    bytes_stored: int = 0
    contracts_active: int = 0
    contracts_failed: int = 0
    periods_proven: int = 0
    periods_missed: int = 0
    earned: int = 0
    collateral_locked: int = 0

    _FIXED: ClassVar[struct.Struct] = struct.Struct(">7Q")

    def encode(self) -> bytes:
        return self._FIXED.pack(self.bytes_stored, self.contracts_active, self.contracts_failed,
                                self.periods_proven, self.periods_missed, self.earned,
                                self.collateral_locked)

    @classmethod
    def decode(cls, data: bytes) -> HostRecord:
        if len(data) != cls._FIXED.size:
            raise DecodeError("a host record is seven 8-byte numbers")
        return cls(*cls._FIXED.unpack(data))

    def to_json(self) -> dict[str, int]:
        return {
            "bytes_stored": self.bytes_stored,
            "contracts_active": self.contracts_active,
            "contracts_failed": self.contracts_failed,
            "proven_periods": self.periods_proven,
            "missed_periods": self.periods_missed,
            "earned": self.earned,
            "collateral_locked": self.collateral_locked,
        }
