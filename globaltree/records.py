"""The records of the global tree and the keys they live under (all under prefix ``S``)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from chain.encoding import Reader, Writer, decode_all
from chain.events import FragmentOffer
from chain.principal import Principal

_HEIGHT = struct.Struct(">Q")

ACCOUNT = b"Sa"
CONTRACT = b"Sc"
FRAGMENT = b"Sf"
EXPIRY = b"Sx"
BY_OWNER = b"So"
BY_HOST = b"Sh"
REVOKED = b"Sr"
PAID = b"Sq"
STATE_PREFIXES = [b"S"]


def account_key(p: Principal) -> bytes:
    return ACCOUNT + p.digest


def contract_key(cid: bytes) -> bytes:
    return CONTRACT + cid


def fragment_prefix(path: str) -> bytes:
    return FRAGMENT + path.encode("utf-8") + b"\x00"


def fragment_key(path: str, index: int, host: Principal) -> bytes:
    return fragment_prefix(path) + bytes((index,)) + host.digest


def expiry_key(height: int, cid: bytes) -> bytes:
    return EXPIRY + _HEIGHT.pack(height) + cid


def expiry_prefix(height: int) -> bytes:
    return EXPIRY + _HEIGHT.pack(height)


def revoked_key(owner: Principal, p: Principal) -> bytes:
    return REVOKED + owner.digest + p.digest


def paid_key(cid: bytes, period: int) -> bytes:
    return PAID + cid + _HEIGHT.pack(period)


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
    RELEASED = 2
    ENDED = 3


@dataclass(slots=True)
class Contract:
    id: bytes
    owner: Principal
    owner_key: bytes
    offer: FragmentOffer
    offer_height: int
    state: ContractState = ContractState.OFFERED
    host: Principal | None = None
    start: int = 0
    paid_periods: int = 0
    paid_total: int = 0

    @property
    def end(self) -> int:
        return self.start + self.offer.period_blocks * self.offer.periods

    def encode(self) -> bytes:
        w = Writer().fixed(self.id, 32).fixed(self.owner.digest, 32).fixed(self.owner_key, 32)
        self.offer.write(w)
        w.varint(self.offer_height).u8(self.state).var_bytes(self.host.digest if self.host else b"")
        return bytes(w.varint(self.start).varint(self.paid_periods).varint(self.paid_total))

    @classmethod
    def decode(cls, data: bytes) -> Contract:
        def read(r: Reader) -> Contract:
            cid, owner, key = r.fixed(32), Principal(r.fixed(32)), r.fixed(32)
            offer = FragmentOffer.read(r)
            height, state = r.varint(), ContractState(r.u8())
            host_raw = r.var_bytes(32)
            host = Principal(host_raw) if host_raw else None
            return cls(cid, owner, key, offer, height, state, host, r.varint(), r.varint(), r.varint())

        return decode_all(data, read)

    def to_json(self) -> dict[str, object]:
        o = self.offer
        return {
            "id": self.id.hex(),
            "owner": str(self.owner),
            "host": str(self.host) if self.host else None,
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
            "period_blocks": o.period_blocks,
            "periods": o.periods,
            "offer_height": self.offer_height,
            "expiry_height": o.expiry_height,
            "start": self.start or None,
            "end": self.end if self.host else None,
            "paid_periods": self.paid_periods,
            "paid_total": self.paid_total,
        }
