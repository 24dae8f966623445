"""Writecaps: the certificate chains by which a blocktree's owner delegates the right to act.

A node acting for its blocktree on chain carries a writecap chain from itself back to the
owner. It is valid under the paper's five rules, checked in :func:`check_writecap`, plus one
the chain adds: no principal in the chain may have been revoked by the owner (until its
revocation expires).

A writecap may carry an **allowance**: the most its holder (and anyone it delegates to) may move
out of the tree's account through it, transfers, escrow and fees together. Without one, a
delegate trusted with ``/owner/photos`` could still empty the owner's whole account; the fold
keeps each link's spending under :func:`Writecap.link_id` and refuses what would exceed it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from chain.core.encoding import Reader, Writer
from chain.core.errors import BadWritecap, DecodeError, RevokedSigner
from chain.core.keys import KeyPair, verify
from chain.core.paths import MAX_PATH_BYTES, contains
from chain.core.principal import Principal

MAX_CHAIN_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Writecap:
    path: str
    issued_to: Principal
    expiry: int
    issuer_key: bytes
    signature: bytes
    allowance: int | None = field(default=None)
    next: Writecap | None = field(default=None)

    @staticmethod
    def signing_message(
        chain_id: bytes, path: str, issued_to: Principal, expiry: int, issuer_key: bytes,
        allowance: int | None = None,
    ) -> bytes:
        w = Writer().raw(chain_id).raw(b"writecap").text(path).fixed(issued_to.digest, 32)
        w.varint(expiry).fixed(issuer_key, 32).flag(allowance is not None)
        if allowance is not None:
            w.varint(allowance)
        return bytes(w)

    def link_message(self, chain_id: bytes) -> bytes:
        return self.signing_message(chain_id, self.path, self.issued_to, self.expiry,
                                    self.issuer_key, self.allowance)

    def link_id(self, chain_id: bytes) -> bytes:
        """Names this one link (its signed contents) for the spending the fold tracks."""
        return hashlib.sha256(self.link_message(chain_id)).digest()

    @classmethod
    def issue(
        cls,
        chain_id: bytes,
        issuer: KeyPair,
        path: str,
        issued_to: Principal,
        expiry: int,
        parent: Writecap | None = None,
        allowance: int | None = None,
    ) -> Writecap:
        """Sign a writecap; ``parent`` is the issuer's own writecap (None when it is the owner)."""
        msg = cls.signing_message(chain_id, path, issued_to, expiry, issuer.public.ed25519,
                                  allowance)
        return cls(path, issued_to, expiry, issuer.public.ed25519, issuer.sign(msg), allowance,
                   parent)

    @property
    def issuer(self) -> Principal:
        return Principal.of_public_key(self.issuer_key)

    def links(self) -> list[Writecap]:
        out: list[Writecap] = []
        cap: Writecap | None = self
        while cap is not None:
            out.append(cap)
            cap = cap.next
        return out

    def write(self, w: Writer) -> None:
        links = self.links()
        w.varint(len(links))
        for cap in links:
            w.text(cap.path).fixed(cap.issued_to.digest, 32).varint(cap.expiry)
            w.fixed(cap.issuer_key, 32).fixed(cap.signature, 64).flag(cap.allowance is not None)
            if cap.allowance is not None:
                w.varint(cap.allowance)

    @classmethod
    def read(cls, r: Reader) -> Writecap:
        count = r.varint(MAX_CHAIN_DEPTH)
        if count == 0:
            raise DecodeError("empty writecap chain")
        raw = []
        for _ in range(count):
            path = r.text(MAX_PATH_BYTES)
            issued_to = Principal(r.fixed(32))
            expiry, key, sig = r.varint(), r.fixed(32), r.fixed(64)
            raw.append((path, issued_to, expiry, key, sig, r.varint() if r.flag() else None))
        cap: Writecap | None = None
        for path, issued_to, expiry, key, sig, allowance in reversed(raw):
            cap = cls(path, issued_to, expiry, key, sig, allowance, cap)
        assert cap is not None
        return cap


def check_writecap(
    chain_id: bytes,
    cap: Writecap,
    signer: Principal,
    path: str,
    owner: Principal,
    now: int,
    is_revoked: Callable[[Principal], bool],
) -> None:
    """Raise unless ``cap`` lets ``signer`` act at ``path`` in ``owner``'s blocktree at ``now``."""
    links = cap.links()
    if links[0].issued_to != signer:
        raise BadWritecap("the first writecap is not issued to the event's signer")
    for i, link in enumerate(links):
        if not verify(link.issuer_key, link.link_message(chain_id), link.signature):
            raise BadWritecap(f"writecap {i} has an invalid signature")
        if link.next is not None and link.issuer != link.next.issued_to:
            raise BadWritecap(f"writecap {i} is signed by a principal writecap {i + 1} does not name")
        if not contains(link.path, path):
            raise BadWritecap(f"path {path!r} is outside writecap {i}'s path {link.path!r}")
        if not now < link.expiry:
            raise BadWritecap(f"writecap {i} expired at {link.expiry} (now {now})")
        if link.issued_to != owner and is_revoked(link.issued_to):
            raise RevokedSigner(f"writecap {i} is issued to revoked principal {link.issued_to}")
    if links[-1].issuer != owner:
        raise BadWritecap("the last writecap is not signed by the blocktree's owner")
