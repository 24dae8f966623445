"""Writecaps: the certificate chains by which a blocktree's owner delegates the right to act.

A node acting for its blocktree on chain carries a writecap chain from itself back to the
owner. It is valid under the paper's five rules, checked in :func:`check_writecap`, plus one
the chain adds: no principal in the chain may have been revoked by the owner (until its
revocation expires).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from chain.encoding import Reader, Writer
from chain.errors import BadWritecap, DecodeError, RevokedSigner
from chain.keys import KeyPair, verify
from chain.paths import MAX_PATH_BYTES, contains
from chain.principal import Principal

MAX_CHAIN_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Writecap:
    path: str
    issued_to: Principal
    expiry: int
    issuer_key: bytes
    signature: bytes
    next: Writecap | None = field(default=None)

    @staticmethod
    def signing_message(
        chain_id: bytes, path: str, issued_to: Principal, expiry: int, issuer_key: bytes
    ) -> bytes:
        w = Writer().raw(chain_id).raw(b"writecap").text(path).fixed(issued_to.digest, 32)
        return bytes(w.varint(expiry).fixed(issuer_key, 32))

    @classmethod
    def issue(
        cls,
        chain_id: bytes,
        issuer: KeyPair,
        path: str,
        issued_to: Principal,
        expiry: int,
        parent: Writecap | None = None,
    ) -> Writecap:
        """Sign a writecap; ``parent`` is the issuer's own writecap (None when it is the owner)."""
        msg = cls.signing_message(chain_id, path, issued_to, expiry, issuer.public.ed25519)
        return cls(path, issued_to, expiry, issuer.public.ed25519, issuer.sign(msg), parent)

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
            w.fixed(cap.issuer_key, 32).fixed(cap.signature, 64)

    @classmethod
    def read(cls, r: Reader) -> Writecap:
        count = r.varint(MAX_CHAIN_DEPTH)
        if count == 0:
            raise DecodeError("empty writecap chain")
        raw = []
        for _ in range(count):
            path = r.text(MAX_PATH_BYTES)
            issued_to = Principal(r.fixed(32))
            raw.append((path, issued_to, r.varint(), r.fixed(32), r.fixed(64)))
        cap: Writecap | None = None
        for path, issued_to, expiry, key, sig in reversed(raw):
            cap = cls(path, issued_to, expiry, key, sig, cap)
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
        msg = Writecap.signing_message(
            chain_id, link.path, link.issued_to, link.expiry, link.issuer_key
        )
        if not verify(link.issuer_key, msg, link.signature):
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
