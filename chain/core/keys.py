"""Key pairs: Ed25519 to sign, X25519 to receive readcaps and open channels.

Signing uses ``cryptography`` (OpenSSL); verification uses libsodium through PyNaCl, which on
this hardware checks Ed25519 about 1.6x faster and releases the GIL, so block validation can
spread signature checks over threads. Both implement RFC 8032; libsodium is the stricter (it
refuses small-order keys and non-canonical points), and every node uses the same check.
Key files are written with mode 0600 and may be sealed with a passphrase (scrypt + ChaCha20-
Poly1305).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from chain.core.errors import KeyError_
from chain.core.principal import Principal

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NO_ENC = serialization.NoEncryption()

PASSPHRASE_ENV = "BLOCKCOIN_PASSPHRASE"
"""Environment variable holding the passphrase of an encrypted wallet key."""


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    if len(signature) != 64 or len(public_key) != 32:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """What others know of a principal: both public keys."""

    ed25519: bytes
    x25519: bytes

    @property
    def principal(self) -> Principal:
        return Principal.of_public_key(self.ed25519)


class KeyPair:
    """A signing key and an encryption key derived from one 32-byte seed."""

    __slots__ = ("_box", "_sign", "public", "seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise KeyError_("a key seed is 32 bytes")
        self.seed = seed
        self._sign = Ed25519PrivateKey.from_private_bytes(seed)
        box_seed = hashlib.sha256(b"blockcoin x25519" + seed).digest()
        self._box = X25519PrivateKey.from_private_bytes(box_seed)
        self.public = PublicKeys(
            ed25519=self._sign.public_key().public_bytes(_RAW, _RAW_PUB),
            x25519=self._box.public_key().public_bytes(_RAW, _RAW_PUB),
        )

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(os.urandom(32))

    @classmethod
    def development(cls, index: int) -> KeyPair:
        """Well-known regtest keys (like hardhat's accounts): never hold real coin with them."""
        return cls(hashlib.sha256(f"blockcoin regtest development key {index}".encode()).digest())

    @property
    def principal(self) -> Principal:
        return self.public.principal

    def sign(self, message: bytes) -> bytes:
        return self._sign.sign(message)

    def exchange(self, peer_x25519: bytes) -> bytes:
        """X25519 shared secret with a peer's public encryption key."""
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

        try:
            return self._box.exchange(X25519PublicKey.from_public_bytes(peer_x25519))
        except ValueError as exc:
            raise KeyError_(f"unusable X25519 public key: {exc}") from exc

    @property
    def x25519_private(self) -> X25519PrivateKey:
        return self._box

    @staticmethod
    def principal_of(path: Path) -> Principal:
        """The principal a key file names, read without opening the key: an encrypted wallet
        shows its address and balance without the passphrase. A plain file is checked
        against its seed; a sealed one is checked when it is opened to sign."""
        record = _read_record(path)
        try:
            if "seed" in record:
                return KeyPair(bytes.fromhex(record["seed"])).principal
            return Principal.parse(str(record["principal"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise KeyError_(f"malformed key file {path}: {exc}") from exc

    @staticmethod
    def is_sealed(path: Path) -> bool:
        """Whether the key file at ``path`` is encrypted with a passphrase."""
        try:
            return "sealed" in json.loads(path.read_text())
        except (OSError, ValueError, TypeError) as exc:
            raise KeyError_(f"unreadable key file {path}: {exc}") from exc

    def save(self, path: Path, passphrase: str | None = None) -> None:
        """Write the seed to ``path`` with mode 0600, sealed if a passphrase is given."""
        record: dict[str, str] = {"principal": str(self.principal)}
        if passphrase:
            salt = os.urandom(16)
            key = _scrypt(passphrase, salt)
            nonce = os.urandom(12)
            sealed = ChaCha20Poly1305(key).encrypt(nonce, self.seed, b"blockcoin key")
            record.update(kdf="scrypt", salt=salt.hex(), nonce=nonce.hex(), sealed=sealed.hex())
        else:
            record["seed"] = self.seed.hex()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, passphrase: str | None = None) -> KeyPair:
        """Read a key file; a sealed one is opened with ``passphrase``, else with the
        passphrase in the environment variable :data:`PASSPHRASE_ENV` (how a node started
        unattended, or any command, unlocks an encrypted wallet)."""
        record = _read_record(path)
        try:
            if "seed" in record:
                pair = cls(bytes.fromhex(record["seed"]))
            else:
                passphrase = passphrase or os.environ.get(PASSPHRASE_ENV)
                if not passphrase:
                    raise KeyError_(f"key file {path} is encrypted: a passphrase is needed "
                                    f"(set {PASSPHRASE_ENV})")
                key = _scrypt(passphrase, bytes.fromhex(record["salt"]))
                seed = ChaCha20Poly1305(key).decrypt(
                    bytes.fromhex(record["nonce"]), bytes.fromhex(record["sealed"]), b"blockcoin key"
                )
                pair = cls(seed)
        except InvalidTag as exc:
            raise KeyError_(f"wrong passphrase for {path}") from exc
        except (KeyError, ValueError, TypeError) as exc:
            raise KeyError_(f"malformed key file {path}: {exc}") from exc
        if record.get("principal") not in (None, str(pair.principal)):
            raise KeyError_(f"key file {path} does not match the principal it names")
        return pair


def _read_record(path: Path) -> dict[str, str]:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise KeyError_(f"no key file at {path} (run `blockcoin init`)") from exc
    except (OSError, ValueError) as exc:
        raise KeyError_(f"unreadable key file {path}: {exc}") from exc
    if not isinstance(record, dict):
        raise KeyError_(f"malformed key file {path}")
    return record


def _scrypt(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())
