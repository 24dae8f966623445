"""The records of the global tree and the keys they live under (all under prefix ``S``)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from chain.encoding import Reader, Writer, decode_all
from chain.events import FragmentOffer
from chain.principal import Principal

_HEIGHT = struct.Struct(">Q")

ACCOUNT = b"Sa"
CONTRACT = b"Sc"
FRAGMENT = b"Sf"
CLOSING = b"Sx"
BY_OWNER = b"So"
BY_HOST = b"Sh"
HOLDER = b"Sp"
HOST = b"Sk"
REVOKED = b"Sr"
SPENT = b"Sw"
STATE_PREFIXES = [b"S"]


def account_key(p: Principal) -> bytes:
    return ACCOUNT + p.digest


def contract_key(cid: bytes) -> bytes:
    return CONTRACT + cid


def fragment_prefix(path: str) -> bytes:
    return FRAGMENT + path.encode("utf-8") + b"\x00"


def fragment_key(path: str, index: int, host: Principal) -> bytes:
    return fragment_prefix(path) + bytes((index,)) + host.digest


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


class ContractState(IntEnum):
    OFFERED = 0
    ACTIVE = 1
    RELEASED = 2  # the owner ended it
    ENDED = 3  # its last period is over
    EXPIRED = 4  # the offer found no host in time
    FAILED = 5  # the host missed too many periods


@dataclass(slots=True)
class Contract:
    """An offer and, once stored, the contract it became: who holds the fragment, the owner's
    escrow still to pay out, the host's collateral still locked, and each period's outcome."""

    id: bytes
    owner: Principal
    owner_key: bytes
    offer: FragmentOffer
    offer_height: int
    state: ContractState = ContractState.OFFERED
    host_key: bytes | None = None  # its Ed25519 key: the host signs proofs and extensions
    payout: Principal | None = None
    start: int = 0
    periods: int = 0  # in all, extensions included
    escrow: int = 0
    collateral_locked: int = 0
    proven: int = 0
    missed: int = 0
    last_proven: int = -1
    paid_total: int = 0
    closes: int = 0  # the height of its entry in the closing index; 0: none
    host: Principal | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.host = Principal.of_public_key(self.host_key) if self.host_key else None

    def set_host(self, host_key: bytes) -> None:
        self.host_key = host_key
        self.host = Principal.of_public_key(host_key)

    @property
    def end(self) -> int:
        return self.start + self.offer.period_blocks * self.periods

    def window_of(self, height: int) -> int:
        """The period whose proof window holds ``height``: ``(start + p·P, start + (p+1)·P]``."""
        return (height - self.start - 1) // self.offer.period_blocks

    def opening_height(self, period: int) -> int:
        """The block whose hash seeds ``period``'s proof (its window opens right after it)."""
        return self.start + period * self.offer.period_blocks

    def encode(self) -> bytes:
        w = Writer().fixed(self.id, 32).fixed(self.owner.digest, 32).fixed(self.owner_key, 32)
        self.offer.write(w)
        w.varint(self.offer_height).u8(self.state)
        w.var_bytes(self.host_key or b"")
        w.var_bytes(self.payout.digest if self.payout else b"")
        for value in (self.start, self.periods, self.escrow, self.collateral_locked, self.proven,
                      self.missed, self.last_proven + 1, self.paid_total, self.closes):
            w.varint(value)
        return bytes(w)

    @classmethod
    def decode(cls, data: bytes) -> Contract:
        def read(r: Reader) -> Contract:
            cid, owner, key = r.fixed(32), Principal(r.fixed(32)), r.fixed(32)
            offer = FragmentOffer.read(r)
            height, state = r.varint(), ContractState(r.u8())
            host_raw, payout_raw = r.var_bytes(32), r.var_bytes(32)
            start, periods, escrow, locked, proven, missed, last, paid, closes = (
                r.varint() for _ in range(9))
            return cls(cid, owner, key, offer, height, state, host_raw or None,
                       Principal(payout_raw) if payout_raw else None,
                       start, periods, escrow, locked, proven, missed, last - 1, paid, closes)

        return decode_all(data, read)

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

    def encode(self) -> bytes:
        w = Writer()
        for value in (self.bytes_stored, self.contracts_active, self.contracts_failed,
                      self.periods_proven, self.periods_missed, self.earned,
                      self.collateral_locked):
            w.varint(value)
        return bytes(w)

    @classmethod
    def decode(cls, data: bytes) -> HostRecord:
        return decode_all(data, lambda r: cls(*(r.varint() for _ in range(7))))

    def to_json(self) -> dict[str, int]:
        return {
            "bytes_stored": self.bytes_stored,
            "contracts_active": self.contracts_active,
            "contracts_failed": self.contracts_failed,
            "periods_proven": self.periods_proven,
            "periods_missed": self.periods_missed,
            "earned": self.earned,
            "collateral_locked": self.collateral_locked,
        }
