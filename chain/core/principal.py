"""Principals: who an account or a signer is.

A principal is the SHA-256 of a raw Ed25519 public key. Its text form is ``blk`` followed by
base32 (lowercase, no padding) of the 32-byte digest and a 4-byte checksum, so a mistyped
principal fails its checksum and is refused before any coin is sent to it.
"""

from __future__ import annotations

import base64
import hashlib

from chain.core.errors import PrincipalFormatError

PREFIX = "blk"
_CHECK_DOMAIN = b"blockcoin principal checksum"
TEXT_LENGTH = len(PREFIX) + 58


def _checksum(digest: bytes) -> bytes:
    return hashlib.sha256(_CHECK_DOMAIN + digest).digest()[:4]


class Principal:
    """Immutable by convention; a plain slotted class because events build several per
    decode and a frozen dataclass's constructor costs several times more."""

    __slots__ = ("digest",)

    def __init__(self, digest: bytes) -> None:
        if type(digest) is not bytes or len(digest) != 32:
            raise PrincipalFormatError("a principal is 32 bytes")
        self.digest = digest

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Principal) and other.digest == self.digest

    def __lt__(self, other: Principal) -> bool:
        return self.digest < other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    @classmethod
    def of_public_key(cls, ed25519_public: bytes) -> Principal:
        return cls(hashlib.sha256(ed25519_public).digest())

    @classmethod
    def parse(cls, text: str) -> Principal:
        text = text.strip()
        if not text.startswith(PREFIX):
            raise PrincipalFormatError(f"a principal starts with {PREFIX!r}: {text[:16]!r}")
        body = text[len(PREFIX) :]
        if len(body) != 58:
            raise PrincipalFormatError(
                f"a principal is {TEXT_LENGTH} characters, got {len(text)}: {text[:16]!r}..."
            )
        try:
            raw = base64.b32decode(body.upper() + "======", casefold=False)
        except (ValueError, TypeError) as exc:
            raise PrincipalFormatError(f"not base32: {text[:16]!r}...") from exc
        digest, check = raw[:32], raw[32:]
        if len(raw) != 36 or _checksum(digest) != check:
            raise PrincipalFormatError(f"principal checksum mismatch (mistyped?): {text}")
        principal = cls(digest)
        if str(principal) != text:
            raise PrincipalFormatError(f"non-canonical principal text: {text}")
        return principal

    def __str__(self) -> str:
        raw = self.digest + _checksum(self.digest)
        return PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()

    def __repr__(self) -> str:
        return f"Principal({self})"

    @property
    def root_path(self) -> str:
        """The path of this principal's blocktree root."""
        return f"/{self}"
