"""Block encryption and readcaps (paper, "An Individual Blocktree").

A block's payload is encrypted under a random 32-byte **block key**. Who may read it is said by
**readcaps**: the block key encapsulated to a principal's X25519 key. A child's block key is also
wrapped under its parent's block key, so whoever can read a block can read everything below it.

Choices, and why:

* **AEAD: AES-256-GCM** (``cryptography``/OpenSSL). On hosts with AES and carry-less multiply
  instructions (every x86-64 and ARMv8 server of the last decade) it runs several times faster
  than ChaCha20-Poly1305, and a 64 MiB block must encrypt at memory speed. Every format starts
  with a suite byte, so another AEAD can be added without ambiguity.
* **Per-version payload key.** The payload is not encrypted with the block key itself but with
  ``HKDF-SHA256(ikm=block key, salt=version, info="blockcoin/v1/payload-key")``. A block key
  lives as long as its readcaps, across many versions; deriving a fresh key per version means
  that even a repeated random nonce can never repeat a (key, nonce) pair across versions, and
  keeps payload keys apart from child-wrapping keys (key separation).
* **Associated data** binds the path and the 32-byte version:
  ``"blockcoin/v1/payload" || text(path) || version``. A ciphertext moved to another path or
  replayed as another version fails to open.
* **Readcap**: ephemeral X25519 → ``HKDF-SHA256(ikm=shared secret, salt=empty,
  info="blockcoin/v1/readcap" || ephemeral public || recipient X25519 public)`` → 44 bytes (a
  32-byte wrapping key and a 12-byte nonce: the ephemeral key is fresh per readcap, so a derived
  nonce is never reused) → AES-256-GCM of the block key with associated data
  ``"blockcoin/v1/readcap" || text(path) || recipient principal``. Putting both public keys in
  the info ties the key to this exact exchange (as in HPKE); the associated data ties it to one
  block and one recipient.
* **Child key wrap**: AES-256-GCM under ``HKDF-SHA256(ikm=parent key, info=
  "blockcoin/v1/child-key-wrap")`` with a random nonce and associated data
  ``"blockcoin/v1/child-key" || text(child path)``.

Byte formats (all fixed by a leading format byte, decoded strictly; any failure is a
:class:`~storage_market.errors.FormatError`):

* sealed payload: ``u8 suite=1 | nonce[12] | ciphertext | tag[16]`` (29 bytes of overhead);
* readcap: ``u8 format=1 | recipient principal[32] | ephemeral X25519 public[32] |
  wrapped key[48]`` (113 bytes);
* wrapped child key: ``u8 suite=1 | nonce[12] | wrapped key[48]`` (61 bytes).

Large payloads are sealed with ``encrypt_into`` straight into the caller's buffer, so sealing a
block costs one pass of the AEAD and no copy; :func:`seal_into` lets a caller place the sealed
payload inside a larger buffer (behind a header, before fragment padding).
"""

from __future__ import annotations

import io
import mmap
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chain.core.encoding import Reader, Writer
from chain.core.errors import BadEvent, BlockcoinError, DecodeError
from chain.core.keys import KeyPair, PublicKeys
from chain.core.paths import check_path
from chain.core.principal import Principal
from storage_market.errors import (
    DecryptError,
    FormatError,
    InvalidPath,
    NoReadcap,
    PayloadTooLarge,
    StorageError,
)

T = TypeVar("T")

#: Any contiguous byte buffer: payloads may be bytes, bytearrays or slices of a larger buffer.
Bytes: TypeAlias = bytes | bytearray | memoryview
PlainFile: TypeAlias = io.BufferedIOBase | io.RawIOBase
#: What a payload is sealed from: bytes in memory, or a file open for reading (read piece by
#: piece as it is sealed, so a large file is never held in memory as plaintext).
Plaintext: TypeAlias = Bytes | PlainFile

SUITE_AES256GCM = 1
READCAP_FORMAT = 1

KEY_SIZE = 32
VERSION_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
#: Bytes a sealed payload adds to its plaintext: suite byte, nonce, tag.
SEAL_OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
#: The AEAD implementation refuses more than 2**31 - 1 bytes in one call.
MAX_PAYLOAD = (1 << 31) - 1
WRAPPED_KEY_SIZE = KEY_SIZE + TAG_SIZE
WRAPPED_CHILD_KEY_SIZE = 1 + NONCE_SIZE + WRAPPED_KEY_SIZE
READCAP_SIZE = 1 + 32 + 32 + WRAPPED_KEY_SIZE

_PAYLOAD_KEY_INFO = b"blockcoin/v1/payload-key"
_PAYLOAD_AD = b"blockcoin/v1/payload"
_READCAP_INFO = b"blockcoin/v1/readcap"
_READCAP_AD = b"blockcoin/v1/readcap"
_CHILD_WRAP_INFO = b"blockcoin/v1/child-key-wrap"
_CHILD_WRAP_AD = b"blockcoin/v1/child-key"


# --- helpers -------------------------------------------------------------------------------------


def byte_view(data: Bytes) -> memoryview:
    """A flat unsigned-byte view of ``data`` without copying (so ``len`` counts bytes)."""
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def decode_strict(data: Bytes, read: Callable[[Reader], T], what: str) -> T:
    """Decode exactly one ``what`` from ``data``; every failure becomes a :class:`FormatError`.

    The storage formats reuse the chain's strict :class:`~chain.core.encoding.Reader` (minimal
    varints, bounded lengths, no trailing bytes) but report in the storage family, so callers of
    this package catch one family only.
    """
    try:
        reader = Reader(bytes(data) if not isinstance(data, bytes) else data)
        value = read(reader)
        reader.finish()
    except FormatError:
        raise
    except (DecodeError, ValueError, TypeError, IndexError, OverflowError) as exc:
        raise FormatError(f"malformed {what}: {exc}") from exc
    except BlockcoinError as exc:  # a field that decodes but is not valid (principal, path)
        raise FormatError(f"malformed {what}: {exc}") from exc
    return value


def valid_path(path: str) -> str:
    """``path`` if it is a canonical blocktree path, else :class:`InvalidPath`."""
    if not isinstance(path, str):
        raise InvalidPath("a path is text")
    try:
        check_path(path)
    except BadEvent as exc:
        raise InvalidPath(str(exc)) from exc
    return path


def _need(value: Bytes, size: int, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)) or len(value) != size:
        raise FormatError(f"{what} is {size} bytes")
    return bytes(value)


def _hkdf(ikm: bytes, info: bytes, length: int, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def new_block_key() -> bytes:
    """A fresh random block key (32 bytes from the OS CSPRNG)."""
    return os.urandom(KEY_SIZE)


def new_version() -> bytes:
    """A fresh 32-byte version id for one write of a block.

    The version names one write of a path; the chain's ``FragmentOffer.version`` carries it, and
    the payload's associated data binds it, so a host cannot serve an older version as current.
    It is random rather than a content hash because it must be fixed before the payload is
    sealed (it is part of the associated data) and must not leak anything about the plaintext.
    """
    return os.urandom(VERSION_SIZE)


# --- payloads ------------------------------------------------------------------------------------


def sealed_size(plaintext_size: int) -> int:
    """Length of the sealed payload of ``plaintext_size`` bytes."""
    if not 0 <= plaintext_size <= MAX_PAYLOAD:
        raise PayloadTooLarge(f"a block payload is at most {MAX_PAYLOAD} bytes")
    return plaintext_size + SEAL_OVERHEAD


def plaintext_size(sealed_len: int) -> int:
    """Length of the plaintext inside a sealed payload of ``sealed_len`` bytes."""
    if sealed_len < SEAL_OVERHEAD:
        raise FormatError(f"a sealed payload is at least {SEAL_OVERHEAD} bytes")
    if sealed_len - SEAL_OVERHEAD > MAX_PAYLOAD:
        raise PayloadTooLarge(f"a block payload is at most {MAX_PAYLOAD} bytes")
    return sealed_len - SEAL_OVERHEAD


def payload_associated_data(path: str, version: bytes) -> bytes:
    """The associated data of a payload: binds its path and version."""
    valid_path(path)
    version = _need(version, VERSION_SIZE, "a version")
    return bytes(Writer().raw(_PAYLOAD_AD).text(path).fixed(version, VERSION_SIZE))


def _payload_key(block_key: Bytes, version: Bytes) -> bytes:
    key = _need(block_key, KEY_SIZE, "a block key")
    salt = _need(version, VERSION_SIZE, "a version")
    return _hkdf(key, _PAYLOAD_KEY_INFO, KEY_SIZE, salt=salt)


def _payload_aead(block_key: Bytes, version: Bytes) -> AESGCM:
    return AESGCM(_payload_key(block_key, version))


#: Piece size of a streamed seal (:func:`seal_to`).
SEAL_PIECE = 4 << 20

#: From this size up, :func:`fresh_buffer` maps new memory instead of allocating a bytearray.
LARGE_BUFFER = 1 << 20


def fresh_buffer(size: int) -> memoryview:
    """A writable, zero-filled buffer of ``size`` bytes for a payload about to be written.

    A large bytearray is zeroed by the allocating thread before anything is written to it,
    and on a fresh allocation that pass is mostly page faults, a third of the cost of sealing
    a payload. A private anonymous mapping is zero by definition (private: a shared one would
    be shared memory, slower to fault in): its pages are faulted in as the cipher (or the
    network) first writes them, while other threads hash what is already written, and the
    memory goes back to the system when the last view of it is dropped. Its pages are aligned,
    which is what lets a record go to disk with direct I/O.
    """
    if size < LARGE_BUFFER:
        return memoryview(bytearray(size))
    return memoryview(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))


def plaintext_length(plaintext: Plaintext) -> int:
    """Bytes to seal: a buffer's length, or what is left to read of a file."""
    if isinstance(plaintext, bytes | bytearray | memoryview):
        return byte_view(plaintext).nbytes
    return os.fstat(plaintext.fileno()).st_size - plaintext.tell()


def _pieces(plaintext: Plaintext, length: int) -> Iterator[memoryview]:
    """``length`` bytes of plaintext in pieces of :data:`SEAL_PIECE`: slices of a buffer, or a
    file read into one reused buffer (each piece valid until the next is asked for)."""
    if isinstance(plaintext, bytes | bytearray | memoryview):
        data = byte_view(plaintext)
        for start in range(0, length, SEAL_PIECE):
            yield data[start : start + SEAL_PIECE]
        return
    buffer = memoryview(bytearray(min(SEAL_PIECE, length)))
    for start in range(0, length, SEAL_PIECE):
        piece = buffer[: min(SEAL_PIECE, length - start)]
        got = 0
        while got < piece.nbytes:
            n = plaintext.readinto(piece[got:])
            if not n:
                raise StorageError("the file shrank while it was being sealed")
            got += n
        yield piece
    if plaintext.read(1):
        raise StorageError("the file grew while it was being sealed")


def _start_seal(block_key: Bytes, path: str, version: Bytes) -> tuple[bytes, bytes, bytes]:
    """The header of a sealed payload (suite and a fresh nonce), its nonce and its associated
    data."""
    nonce = os.urandom(NONCE_SIZE)
    aad = payload_associated_data(path, bytes(version))
    return bytes([SUITE_AES256GCM]) + nonce, nonce, aad


def seal_into(block_key: Bytes, path: str, version: Bytes, plaintext: Plaintext, out: Bytes) -> int:
    """Seal ``plaintext`` into the first ``sealed_size(plaintext_length(plaintext))`` bytes of
    ``out``.

    ``out`` must be writable and must not overlap ``plaintext``. Returns the number of bytes
    written. A buffer is sealed in one call straight into ``out`` (the ciphertext is written
    once, where it will live); a file goes through :func:`seal_to`.
    """
    length = plaintext_length(plaintext)
    size = sealed_size(length)
    target = byte_view(out)
    if target.readonly:
        raise ValueError("seal_into needs a writable buffer")
    if target.nbytes < size:
        raise ValueError(f"seal_into needs {size} bytes of room, got {target.nbytes}")
    if not isinstance(plaintext, bytes | bytearray | memoryview):
        written = 0

        def place(part: memoryview) -> None:
            nonlocal written
            target[written : written + part.nbytes] = part
            written += part.nbytes

        return seal_to(block_key, path, version, plaintext, place)
    head, nonce, aad = _start_seal(block_key, path, version)
    target[: len(head)] = head
    _payload_aead(block_key, version).encrypt_into(nonce, byte_view(plaintext), aad,
                                                   target[len(head) : size])
    return size


def seal_to(block_key: Bytes, path: str, version: Bytes, plaintext: Plaintext,
            write: Callable[[memoryview], object]) -> int:
    """Seal ``plaintext`` (a buffer or a file) piece by piece into ``write``: the suite and
    nonce, each piece of ciphertext (:data:`SEAL_PIECE` bytes, in one reused buffer, valid only
    during the call), then the tag. The same AES-GCM stream as :func:`seal_into`, so the same
    bytes; memory stays a few pieces whatever the size, which is what lets a put of a file
    larger than the machine's memory stream it to disk. Returns the sealed size.

    A file that changes length meanwhile is a :class:`StorageError`.
    """
    length = plaintext_length(plaintext)
    size = sealed_size(length)
    head, nonce, aad = _start_seal(block_key, path, version)
    write(memoryview(head))
    enc = Cipher(algorithms.AES(_payload_key(block_key, version)), modes.GCM(nonce)).encryptor()
    enc.authenticate_additional_data(aad)
    out = memoryview(bytearray(min(SEAL_PIECE, length) + 15))  # update_into's slack
    for piece in _pieces(plaintext, length):
        done = enc.update_into(piece, out)
        write(out[:done])
    enc.finalize()
    write(memoryview(enc.tag))
    return size


def seal(block_key: Bytes, path: str, version: Bytes, plaintext: Bytes) -> memoryview:
    """The sealed payload of ``plaintext`` (suite, nonce, ciphertext, tag) for path and version."""
    out = fresh_buffer(sealed_size(byte_view(plaintext).nbytes))
    seal_into(block_key, path, version, plaintext, out)
    return out


def unseal_into(block_key: Bytes, path: str, version: Bytes, sealed: Bytes, out: Bytes) -> int:
    """Open ``sealed`` into the first ``plaintext_size(len(sealed))`` bytes of ``out``.

    Returns the plaintext length. On failure the target bytes are zeroed before
    :class:`DecryptError` is raised: OpenSSL writes the plaintext before it checks the tag, and
    unauthenticated plaintext must never be left where a caller could read it.
    """
    view = byte_view(sealed)
    size = plaintext_size(view.nbytes)
    if view[0] != SUITE_AES256GCM:
        raise FormatError(f"unknown payload suite {view[0]}")
    target = byte_view(out)
    if target.readonly:
        raise ValueError("unseal_into needs a writable buffer")
    if target.nbytes < size:
        raise ValueError(f"unseal_into needs {size} bytes of room, got {target.nbytes}")
    aad = payload_associated_data(path, bytes(version))
    aead = _payload_aead(block_key, version)
    nonce = bytes(view[1 : 1 + NONCE_SIZE])
    try:
        aead.decrypt_into(nonce, view[1 + NONCE_SIZE :], aad, target[:size])
    except InvalidTag as exc:
        target[:size] = bytes(size)
        raise DecryptError(
            "payload does not open: wrong key, tampered data, or another path or version"
        ) from exc
    return size


def unseal_to(block_key: Bytes, path: str, version: Bytes, sealed: Bytes,
              write: Callable[[memoryview], object]) -> int:
    """Open ``sealed`` piece by piece into ``write`` (each piece in one reused buffer, valid
    only during the call); returns the plaintext length.

    The tag is checked only after the last piece, so what ``write`` received is
    unauthenticated until this returns: on :class:`DecryptError` the caller must discard all
    of it (write to a temporary file, rename it into place only after this returns).
    """
    view = byte_view(sealed)
    size = plaintext_size(view.nbytes)
    if view[0] != SUITE_AES256GCM:
        raise FormatError(f"unknown payload suite {view[0]}")
    aad = payload_associated_data(path, bytes(version))
    nonce = bytes(view[1 : 1 + NONCE_SIZE])
    dec = Cipher(algorithms.AES(_payload_key(block_key, version)), modes.GCM(nonce)).decryptor()
    dec.authenticate_additional_data(aad)
    body = view[1 + NONCE_SIZE : 1 + NONCE_SIZE + size]
    out = memoryview(bytearray(min(SEAL_PIECE, size) + 15))  # update_into's slack
    for start in range(0, size, SEAL_PIECE):
        done = dec.update_into(body[start : start + SEAL_PIECE], out)
        write(out[:done])
    try:
        dec.finalize_with_tag(bytes(view[1 + NONCE_SIZE + size :]))
    except InvalidTag as exc:
        raise DecryptError(
            "payload does not open: wrong key, tampered data, or another path or version"
        ) from exc
    return size


def unseal(block_key: Bytes, path: str, version: Bytes, sealed: Bytes) -> bytearray:
    """The plaintext of a sealed payload, or :class:`DecryptError`."""
    out = bytearray(plaintext_size(byte_view(sealed).nbytes))
    unseal_into(block_key, path, version, sealed, out)
    return out


# --- readcaps ------------------------------------------------------------------------------------


def _readcap_ad(path: str, recipient: Principal) -> bytes:
    return bytes(Writer().raw(_READCAP_AD).text(valid_path(path)).fixed(recipient.digest, 32))


def _readcap_kdf(shared: bytes, ephemeral: bytes, recipient_x25519: bytes) -> tuple[bytes, bytes]:
    okm = _hkdf(shared, _READCAP_INFO + ephemeral + recipient_x25519, KEY_SIZE + NONCE_SIZE)
    return okm[:KEY_SIZE], okm[KEY_SIZE:]


@dataclass(frozen=True, slots=True)
class Readcap:
    """A block key encapsulated to one principal's X25519 key.

    ``recipient`` is stored in clear so a reader finds its readcap in a header without trying
    every one; it is also bound into the associated data, so it cannot be relabelled.
    """

    recipient: Principal
    ephemeral: bytes
    wrapped: bytes

    def __post_init__(self) -> None:
        if len(self.ephemeral) != 32 or len(self.wrapped) != WRAPPED_KEY_SIZE:
            raise FormatError("a readcap has a 32-byte ephemeral key and a 48-byte wrapped key")

    @classmethod
    def issue(cls, block_key: Bytes, path: str, recipient: PublicKeys) -> Readcap:
        """Encapsulate ``block_key`` of the block at ``path`` to ``recipient``."""
        key = _need(block_key, KEY_SIZE, "a block key")
        principal = recipient.principal
        ad = _readcap_ad(path, principal)
        ephemeral_private = X25519PrivateKey.generate()
        ephemeral = ephemeral_private.public_key().public_bytes_raw()
        try:
            shared = ephemeral_private.exchange(X25519PublicKey.from_public_bytes(recipient.x25519))
        except ValueError as exc:
            raise FormatError(f"recipient's X25519 key is unusable: {exc}") from exc
        wrap_key, nonce = _readcap_kdf(shared, ephemeral, recipient.x25519)
        wrapped = AESGCM(wrap_key).encrypt(nonce, key, ad)
        return cls(principal, ephemeral, wrapped)

    def open(self, keys: KeyPair, path: str) -> bytes:
        """The block key, if this readcap was issued to ``keys`` for ``path``; else DecryptError."""
        if keys.principal != self.recipient:
            raise DecryptError(f"readcap is for {self.recipient}, not {keys.principal}")
        ad = _readcap_ad(path, self.recipient)
        try:
            shared = keys.exchange(self.ephemeral)
        except BlockcoinError as exc:  # small-order point: all-zero shared secret
            raise DecryptError(f"readcap's ephemeral key is unusable: {exc}") from exc
        wrap_key, nonce = _readcap_kdf(shared, self.ephemeral, keys.public.x25519)
        try:
            return AESGCM(wrap_key).decrypt(nonce, self.wrapped, ad)
        except InvalidTag as exc:
            raise DecryptError("readcap does not open: wrong key, path or tampered") from exc

    def write(self, w: Writer) -> None:
        w.u8(READCAP_FORMAT).fixed(self.recipient.digest, 32).fixed(self.ephemeral, 32)
        w.fixed(self.wrapped, WRAPPED_KEY_SIZE)

    @classmethod
    def read(cls, r: Reader) -> Readcap:
        fmt = r.u8()
        if fmt != READCAP_FORMAT:
            raise FormatError(f"unknown readcap format {fmt}")
        return cls(Principal(r.fixed(32)), r.fixed(32), r.fixed(WRAPPED_KEY_SIZE))

    def encode(self) -> bytes:
        w = Writer()
        self.write(w)
        return bytes(w)

    @classmethod
    def decode(cls, data: Bytes) -> Readcap:
        return decode_strict(data, cls.read, "readcap")


def find_readcap(readcaps: Iterable[Readcap], principal: Principal) -> Readcap:
    """The readcap issued to ``principal``, or :class:`NoReadcap`."""
    for cap in readcaps:
        if cap.recipient == principal:
            return cap
    raise NoReadcap(f"no readcap for {principal}")


# --- child keys ----------------------------------------------------------------------------------


def parent_path(path: str) -> str:
    """The path of a block's parent; a root block (``/<principal>``) has none."""
    valid_path(path)
    head, _, _ = path.rpartition("/")
    if not head:
        raise InvalidPath(f"a root block has no parent: {path}")
    return head


def full_path(root: str, path: str) -> str:
    """A path as given, or relative to the tree rooted at ``root`` (``docs/a`` ->
    ``/<principal>/docs/a``): how a user names a path on the command line or the dashboard."""
    return path if path.startswith("/") else f"{root}/{path.strip('/')}"


def _child_wrap(parent_key: Bytes, child_path: str) -> tuple[AESGCM, bytes]:
    parent_path(child_path)
    key = _hkdf(_need(parent_key, KEY_SIZE, "a parent block key"), _CHILD_WRAP_INFO, KEY_SIZE)
    return AESGCM(key), bytes(Writer().raw(_CHILD_WRAP_AD).text(child_path))


def wrap_child_key(parent_key: Bytes, child_path: str, child_key: Bytes) -> bytes:
    """``child_key`` wrapped under its parent's block key, for the child's header."""
    aead, ad = _child_wrap(parent_key, child_path)
    nonce = os.urandom(NONCE_SIZE)
    sealed = aead.encrypt(nonce, _need(child_key, KEY_SIZE, "a child block key"), ad)
    return bytes((SUITE_AES256GCM,)) + nonce + sealed


def unwrap_child_key(parent_key: Bytes, child_path: str, wrapped: Bytes) -> bytes:
    """The child's block key from its parent's key, or DecryptError / FormatError."""
    raw = _need(wrapped, WRAPPED_CHILD_KEY_SIZE, "a wrapped child key")
    if raw[0] != SUITE_AES256GCM:
        raise FormatError(f"unknown child key suite {raw[0]}")
    aead, ad = _child_wrap(parent_key, child_path)
    try:
        return aead.decrypt(raw[1 : 1 + NONCE_SIZE], raw[1 + NONCE_SIZE :], ad)
    except InvalidTag as exc:
        raise DecryptError(
            "child key does not open: not the parent's key, or another path"
        ) from exc
