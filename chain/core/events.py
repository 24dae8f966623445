"""Event types: the entries of the global ledger.

Every event but the coinbase is signed. A signed event names its signer's Ed25519 key, the
signer's next nonce (replay protection), a fee, and optionally the blocktree account it acts for
together with the writecap chain that lets the signer act there. The signature covers the
network's chain id and every byte before it, so an event cannot be replayed on another network.

Decoding is strict (see :mod:`chain.core.encoding`); stateless checks that need no chain state live
in :meth:`SignedEvent.check_stateless`, so they can run in parallel before a block is applied.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from chain.core.encoding import Reader, Writer, decode_all
from chain.core.errors import BadEvent, BadSignature, DecodeError, EventTooLarge
from chain.core.keys import KeyPair, verify
from chain.core.paths import MAX_PATH_BYTES, check_path, visible
from chain.core.principal import Principal
from chain.core.writecap import Writecap

MAX_ADDRESS_BYTES = 255
MAX_COINBASE_EXTRA = 32
MAX_FRAGMENTS = 255
MAX_EVENT_DECODE = 1 << 20
SIGNATURE_BYTES = 64
MAX_CONTRACT_BLOCKS = 1 << 32  # a contract's whole length; keeps end heights within 64 bits
MIN_LEAF_SIZE = 64
MAX_LEAF_SIZE = 1024  # proofs carry whole leaves: bounded so that a proof fits an event
MAX_PROOF_ITEMS = 64
MAX_PROOF_LEAVES = 16
MAX_PATH_HASHES = 64


class Kind(IntEnum):
    COINBASE = 0
    ANNOUNCE = 1
    TRANSFER = 2
    FRAGMENT_OFFER = 3
    FRAGMENT_STORED = 4
    STORAGE_PROOF = 5
    FRAGMENT_RELEASED = 6
    REVOKE = 7
    FRAGMENT_EXTENDED = 8


def receipt_message(chain_id: bytes, offer_id: bytes, host: Principal, root: bytes,
                    payout: Principal) -> bytes:
    """What a host signs to say it holds the fragment of an offer, takes the contract on the
    offer's terms (its collateral locked from the host's account) and wants its pay at
    ``payout``."""
    return chain_id + b"receipt" + offer_id + host.digest + root + payout.digest


def extension_message(chain_id: bytes, offer_id: bytes, periods: int) -> bytes:
    """What a host signs to agree that its contract runs ``periods`` periods in all (on the
    offer's price and collateral per period)."""
    return bytes(Writer().raw(chain_id).raw(b"extend").raw(offer_id).varint(periods))


# --- bodies ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Announce:
    """Publish the signer's encryption key and network address (``host:port`` or empty)."""

    kind: ClassVar[Kind] = Kind.ANNOUNCE
    x25519: bytes
    address: str

    def write(self, w: Writer) -> None:
        w.fixed(self.x25519, 32).text(self.address)

    @classmethod
    def read(cls, r: Reader) -> Announce:
        return cls(r.fixed(32), r.text(MAX_ADDRESS_BYTES))

    def check(self) -> None:
        if self.address:
            host, sep, port = self.address.rpartition(":")
            # isdecimal, not isdigit: a digit int() refuses (a superscript) would raise
            if not sep or not host or not port.isdecimal() or not 0 < int(port) < 65536:
                raise BadEvent(f"address must be host:port, got {self.address!r}")
            if not visible(self.address) or " " in self.address:
                raise BadEvent("address has unprintable characters")

    def to_json(self) -> dict[str, Any]:
        return {"x25519": self.x25519.hex(), "address": self.address}


@dataclass(frozen=True, slots=True)
class Transfer:
    kind: ClassVar[Kind] = Kind.TRANSFER
    to: Principal
    amount: int

    def write(self, w: Writer) -> None:
        w.fixed(self.to.digest, 32).varint(self.amount)

    @classmethod
    def read(cls, r: Reader) -> Transfer:
        return cls(Principal(r.fixed(32)), r.varint())

    def check(self) -> None:
        if self.amount <= 0:
            raise BadEvent("a transfer moves a positive amount")

    def to_json(self) -> dict[str, Any]:
        return {"to": str(self.to), "amount": self.amount}


@dataclass(frozen=True, slots=True)
class FragmentOffer:
    """An owner's offer to pay for storing fragment ``index`` of ``n`` of a block."""

    kind: ClassVar[Kind] = Kind.FRAGMENT_OFFER
    path: str
    version: bytes
    index: int
    n: int
    k: int
    size: int
    root: bytes
    leaf_size: int
    price: int
    collateral: int
    period_blocks: int
    periods: int
    expiry_height: int

    def write(self, w: Writer) -> None:
        w.text(self.path).fixed(self.version, 32).varint(self.index).varint(self.n).varint(self.k)
        w.varint(self.size).fixed(self.root, 32).varint(self.leaf_size).varint(self.price)
        w.varint(self.collateral).varint(self.period_blocks).varint(self.periods)
        w.varint(self.expiry_height)

    @classmethod
    def read(cls, r: Reader) -> FragmentOffer:
        return cls(
            r.text(MAX_PATH_BYTES), r.fixed(32), r.varint(MAX_FRAGMENTS), r.varint(MAX_FRAGMENTS),
            r.varint(MAX_FRAGMENTS), r.varint(), r.fixed(32), r.varint(), r.varint(), r.varint(),
            r.varint(), r.varint(), r.varint(),
        )

    def check(self) -> None:
        check_path(self.path)
        if not 1 <= self.k <= self.n or not 0 <= self.index < self.n:
            raise BadEvent(f"fragment {self.index} of {self.k}-of-{self.n} is out of range")
        if self.size <= 0:
            raise BadEvent("a fragment has a positive size")
        if not MIN_LEAF_SIZE <= self.leaf_size <= MAX_LEAF_SIZE or self.leaf_size & (self.leaf_size - 1):
            raise BadEvent(f"leaf size is a power of two from {MIN_LEAF_SIZE} to {MAX_LEAF_SIZE} bytes")
        if self.price <= 0:
            raise BadEvent("an offer pays a positive price per period")
        if self.period_blocks <= 0 or self.periods <= 0:
            raise BadEvent("an offer has at least one period of at least one block")
        if self.period_blocks * self.periods > MAX_CONTRACT_BLOCKS:
            raise BadEvent(f"a contract lasts at most {MAX_CONTRACT_BLOCKS} blocks")

    @property
    def leaves(self) -> int:
        return -(-self.size // self.leaf_size)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "version": self.version.hex(), "index": self.index,
                "n": self.n, "k": self.k, "size": self.size, "root": self.root.hex(),
                "leaf_size": self.leaf_size, "price": self.price, "collateral": self.collateral,
                "period_blocks": self.period_blocks, "periods": self.periods,
                "expiry_height": self.expiry_height}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FragmentOffer:
        """The inverse of :meth:`to_json`, for offers read back from an API answer or an agent's
        state file; anything missing or mistyped is a :class:`DecodeError`."""
        try:
            ints = {name: data[name] for name in (
                "index", "n", "k", "size", "leaf_size", "price", "collateral", "period_blocks",
                "periods", "expiry_height")}
            if not all(type(v) is int for v in ints.values()) or type(data["path"]) is not str:
                raise TypeError("a field has the wrong type")
            version, root = bytes.fromhex(data["version"]), bytes.fromhex(data["root"])
            if len(version) != 32 or len(root) != 32:
                raise ValueError("version and root are 32 bytes")
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"not a fragment offer: {exc}") from None
        return cls(path=data["path"], version=version, root=root, **ints)


@dataclass(frozen=True, slots=True)
class FragmentStored:
    """The owner's word, with the host's signed receipt, that a host holds a fragment: starts
    the contract and locks the host's collateral."""

    kind: ClassVar[Kind] = Kind.FRAGMENT_STORED
    offer_id: bytes
    host_key: bytes
    payout: Principal
    receipt: bytes

    def write(self, w: Writer) -> None:
        w.fixed(self.offer_id, 32).fixed(self.host_key, 32).fixed(self.payout.digest, 32)
        w.fixed(self.receipt, 64)

    @classmethod
    def read(cls, r: Reader) -> FragmentStored:
        return cls(r.fixed(32), r.fixed(32), Principal(r.fixed(32)), r.fixed(64))

    @property
    def host(self) -> Principal:
        return Principal.of_public_key(self.host_key)

    def check(self) -> None:
        return None

    def to_json(self) -> dict[str, Any]:
        return {"offer": self.offer_id.hex(), "host": str(self.host), "payout": str(self.payout)}


@dataclass(frozen=True, slots=True)
class ProvenLeaf:
    """One picked leaf and its sibling path: the bottom-up sibling hashes, concatenated
    (its index follows from the seed, so the path's length does too)."""

    leaf: bytes
    path: bytes


@dataclass(frozen=True, slots=True)
class ProofItem:
    """One contract's proof for one period: the leaves the period's seed picks, in pick order."""

    contract: bytes
    period: int
    leaves: tuple[ProvenLeaf, ...]

    def write(self, w: Writer) -> None:
        w.fixed(self.contract, 32).varint(self.period).varint(len(self.leaves))
        for proven in self.leaves:
            depth, odd = divmod(len(proven.path), 32)
            if odd or depth > MAX_PATH_HASHES:
                raise BadEvent("a Merkle path is whole 32-byte hashes, at most 64")
            w.var_bytes(proven.leaf).u8(depth).raw(proven.path)

    @classmethod
    def read(cls, r: Reader) -> ProofItem:
        contract, period = r.fixed(32), r.varint()
        count = r.varint(MAX_PROOF_LEAVES)
        leaves = []
        for _ in range(count):
            leaf = r.var_bytes(MAX_LEAF_SIZE)
            depth = r.u8()
            if depth > MAX_PATH_HASHES:
                raise DecodeError(f"a Merkle path has at most {MAX_PATH_HASHES} hashes")
            leaves.append(ProvenLeaf(leaf, r.fixed(32 * depth)))
        return cls(contract, period, tuple(leaves))


@dataclass(frozen=True, slots=True)
class StorageProof:
    """A host proving, for one or more of its contracts, that it holds their fragments this
    period: each item answers the leaves picked by the hash of the block that opened the
    period, so it could not be prepared before."""

    kind: ClassVar[Kind] = Kind.STORAGE_PROOF
    items: tuple[ProofItem, ...]

    def write(self, w: Writer) -> None:
        w.varint(len(self.items))
        for item in self.items:
            item.write(w)

    @classmethod
    def read(cls, r: Reader) -> StorageProof:
        count = r.varint(MAX_PROOF_ITEMS)
        return cls(tuple(ProofItem.read(r) for _ in range(count)))

    def check(self) -> None:
        if not self.items:
            raise BadEvent("a storage proof proves at least one contract")
        if len({item.contract for item in self.items}) != len(self.items):
            raise BadEvent("a storage proof names each contract once")
        for item in self.items:
            if not item.leaves or any(not p.leaf for p in item.leaves):
                raise BadEvent("a proof item carries its leaves, none empty")

    def to_json(self) -> dict[str, Any]:
        return {"items": [{"contract": item.contract.hex(), "period": item.period,
                           "leaves": len(item.leaves)} for item in self.items]}


@dataclass(frozen=True, slots=True)
class FragmentReleased:
    kind: ClassVar[Kind] = Kind.FRAGMENT_RELEASED
    offer_id: bytes

    def write(self, w: Writer) -> None:
        w.fixed(self.offer_id, 32)

    @classmethod
    def read(cls, r: Reader) -> FragmentReleased:
        return cls(r.fixed(32))

    def check(self) -> None:
        return None

    def to_json(self) -> dict[str, Any]:
        return {"offer": self.offer_id.hex()}


@dataclass(frozen=True, slots=True)
class Revoke:
    """The owner refuses ``principal``'s writecaps in its blocktree until time ``until``."""

    kind: ClassVar[Kind] = Kind.REVOKE
    principal: Principal
    until: int

    def write(self, w: Writer) -> None:
        w.fixed(self.principal.digest, 32).varint(self.until)

    @classmethod
    def read(cls, r: Reader) -> Revoke:
        return cls(Principal(r.fixed(32)), r.varint())

    def check(self) -> None:
        return None

    def to_json(self) -> dict[str, Any]:
        return {"principal": str(self.principal), "until": self.until}


@dataclass(frozen=True, slots=True)
class FragmentExtended:
    """The owner extends an active contract to ``periods`` periods in all, escrowing the added
    periods' price; the host's signature is its consent to lock collateral for them too."""

    kind: ClassVar[Kind] = Kind.FRAGMENT_EXTENDED
    offer_id: bytes
    periods: int
    host_signature: bytes

    def write(self, w: Writer) -> None:
        w.fixed(self.offer_id, 32).varint(self.periods).fixed(self.host_signature, 64)

    @classmethod
    def read(cls, r: Reader) -> FragmentExtended:
        return cls(r.fixed(32), r.varint(), r.fixed(64))

    def check(self) -> None:
        if self.periods <= 0:
            raise BadEvent("a contract runs at least one period")

    def to_json(self) -> dict[str, Any]:
        return {"offer": self.offer_id.hex(), "periods": self.periods}


Body = (Announce | Transfer | FragmentOffer | FragmentStored | StorageProof | FragmentReleased
        | Revoke | FragmentExtended)
BODY_TYPES: dict[int, type[Body]] = {
    t.kind: t
    for t in (Announce, Transfer, FragmentOffer, FragmentStored, StorageProof, FragmentReleased,
              Revoke, FragmentExtended)
}


# --- envelopes ---------------------------------------------------------------------------------


class Coinbase:
    """The miner's reward; first in every block and nowhere else. Carries the height so that
    no two coinbases share an id, and a little extra nonce space for miners."""

    __slots__ = ("amount", "extra", "height", "raw", "recipient")
    kind = Kind.COINBASE

    def __init__(self, height: int, recipient: Principal, amount: int, extra: bytes = b"") -> None:
        if len(extra) > MAX_COINBASE_EXTRA:
            raise BadEvent(f"coinbase extra is at most {MAX_COINBASE_EXTRA} bytes")
        self.height = height
        self.recipient = recipient
        self.amount = amount
        self.extra = extra
        w = Writer().u8(Kind.COINBASE).varint(height).fixed(recipient.digest, 32).varint(amount)
        self.raw = bytes(w.var_bytes(extra))

    @classmethod
    def read_body(cls, r: Reader) -> Coinbase:
        return cls(r.varint(), Principal(r.fixed(32)), r.varint(), r.var_bytes(MAX_COINBASE_EXTRA))

    fee = 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Coinbase) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"Coinbase(height={self.height}, to={self.recipient}, amount={self.amount})"


class SignedEvent:
    """A signed event: envelope fields, a body of one kind, and the signature over both."""

    __slots__ = (
        "_principal",
        "_unsigned_len",
        "account",
        "body",
        "fee",
        "nonce",
        "raw",
        "signature",
        "signer_key",
        "writecap",
    )

    def __init__(
        self,
        signer_key: bytes,
        nonce: int,
        fee: int,
        account: Principal | None,
        writecap: Writecap | None,
        body: Body,
        signature: bytes,
        unsigned: bytes | None = None,
    ) -> None:
        """``unsigned`` may be given by the decoder, which has just read those exact bytes."""
        self.signer_key = signer_key
        self.nonce = nonce
        self.fee = fee
        self.account = account
        self.writecap = writecap
        self.body = body
        self.signature = signature
        if unsigned is None:
            unsigned = self.unsigned_bytes(signer_key, nonce, fee, account, writecap, body)
        self._unsigned_len = len(unsigned)
        self.raw = unsigned + signature
        self._principal: Principal | None = None

    @staticmethod
    def unsigned_bytes(
        signer_key: bytes,
        nonce: int,
        fee: int,
        account: Principal | None,
        writecap: Writecap | None,
        body: Body,
    ) -> bytes:
        w = Writer().u8(body.kind).fixed(signer_key, 32).varint(nonce).varint(fee)
        w.flag(account is not None)
        if account is not None:
            w.fixed(account.digest, 32)
        w.flag(writecap is not None)
        if writecap is not None:
            writecap.write(w)
        body.write(w)
        return bytes(w)

    @classmethod
    def create(
        cls,
        chain_id: bytes,
        key: KeyPair,
        nonce: int,
        fee: int,
        body: Body,
        account: Principal | None = None,
        writecap: Writecap | None = None,
    ) -> SignedEvent:
        unsigned = cls.unsigned_bytes(key.public.ed25519, nonce, fee, account, writecap, body)
        return cls(key.public.ed25519, nonce, fee, account, writecap, body,
                   key.sign(chain_id + unsigned))

    @classmethod
    def create_at_rate(
        cls,
        chain_id: bytes,
        key: KeyPair,
        nonce: int,
        fee_rate: int,
        body: Body,
        account: Principal | None = None,
        writecap: Writecap | None = None,
    ) -> SignedEvent:
        """Sign with the smallest fee that pays ``fee_rate`` base units per byte of the event
        (the fee's own varint counts: a second pass settles it)."""
        fee = 0
        while True:
            size = len(cls.unsigned_bytes(key.public.ed25519, nonce, fee, account, writecap, body))
            needed = fee_rate * (size + SIGNATURE_BYTES)
            if needed <= fee:
                return cls.create(chain_id, key, nonce, fee, body, account, writecap)
            fee = needed

    @property
    def kind(self) -> Kind:
        return self.body.kind

    @property
    def signer(self) -> Principal:
        if self._principal is None:
            self._principal = Principal.of_public_key(self.signer_key)
        return self._principal

    @property
    def payer(self) -> Principal:
        """The account debited for fee and amount: the blocktree acted for, else the signer."""
        return self.account if self.account is not None else self.signer

    def signing_message(self, chain_id: bytes) -> bytes:
        return chain_id + self.raw[: self._unsigned_len]

    def verify_signature(self, chain_id: bytes) -> bool:
        return verify(self.signer_key, self.signing_message(chain_id), self.signature)

    def check_stateless(self, chain_id: bytes, max_event_bytes: int) -> None:
        """Every rule that needs no chain state: size, field ranges, account form, signature."""
        if len(self.raw) > max_event_bytes:
            raise EventTooLarge(f"event is {len(self.raw)} bytes, limit {max_event_bytes}")
        self.body.check()
        if (self.account is None) != (self.writecap is None):
            raise BadEvent("an account and its writecap go together")
        if self.account is not None and self.account == self.signer:
            raise BadEvent("a signer acting for itself carries no writecap")
        if self.writecap is not None:
            for link in self.writecap.links():
                check_path(link.path)  # one spelling of the paths a chain covers
        if not self.verify_signature(chain_id):
            raise BadSignature("event signature does not verify")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SignedEvent) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"SignedEvent({self.kind.name}, signer={self.signer}, nonce={self.nonce})"


Event = Coinbase | SignedEvent


def read_event(r: Reader) -> Event:
    start = r.position
    kind = r.u8()
    if kind == Kind.COINBASE:
        return Coinbase.read_body(r)
    body_type = BODY_TYPES.get(kind)
    if body_type is None:
        raise DecodeError(f"unknown event kind {kind}")
    signer_key = r.fixed(32)
    nonce = r.varint()
    fee = r.varint()
    account = Principal(r.fixed(32)) if r.flag() else None
    writecap = Writecap.read(r) if r.flag() else None
    body = body_type.read(r)
    unsigned = r.consumed_since(start)
    signature = r.fixed(64)
    return SignedEvent(signer_key, nonce, fee, account, writecap, body, signature, unsigned)


def decode_event(data: bytes) -> Event:
    if len(data) > MAX_EVENT_DECODE:
        raise DecodeError("event too large to decode")
    return decode_all(data, read_event)


def event_id(chain_id: bytes, event: Event) -> bytes:
    return hashlib.sha256(chain_id + event.raw).digest()
