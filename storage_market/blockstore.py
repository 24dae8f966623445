"""Stored blocks and the local block store of a blocktree client.

A **stored block** is one self-describing record: a header (path, version, readcaps, the block
key wrapped under the parent's key, payload length) followed by the sealed payload.
The record is what the client keeps on disk *and* what it erasure-codes into fragments, so a
block fetched back from any ``k`` hosts brings its readcaps with it and can be opened with
nothing but the reader's key pair.

Record format (version 2, or 3 for a directory or a link)::

    magic "BCBK" | u8 format | varint header length | header | SHA-256(all before) [32]
    | sealed payload

    header = text path | version[32] | varint readcap count | readcap x count
             | flag, [wrapped parent key (61)] | varint payload length | [u8 kind (format 3)]

The **kind** says what the payload is: a file's bytes (kind 0, the only kind of format 2, so a
file's record is byte for byte what it was before kinds existed), a directory (1, an empty
payload: a directory block exists to carry readcaps and to wrap its children's keys) or a
symbolic link (2, see :mod:`storage_market.tree`). It sits in the header so that a reader can
tell a link from a file before it holds any key, and so that whoever re-keys blocks written by
another node of the tree learns their kind from the blocks themselves.

The root block of a tree (``/<principal>``) has no parent key and at least one readcap (the
paper: "the root block always contains a readcap for the root key"); every other block has a
parent key. A damaged header is an :class:`~storage_market.errors.IntegrityError` before any
key is needed (its checksum). The payload needs no digest of its own: it is AES-GCM sealed
under the block key with the path and version as associated data, so a reader's open checks
every byte of it, and anyone without the key checks it through the fragments' Merkle roots on
chain (a record is never used whole by someone who cannot open it). Version 1 also carried a
SHA-256 of the payload in the header, after the payload length: one more full pass over the
data on every put and get, on the core that hashes the fragments' leaves meanwhile. Version-1
records are still read, and their digest still checked.

:class:`BlockStore` keeps one record per path in a directory: ``<dir>/<root principal>/
<SHA-256 of the path>.blk``. The file name is a hash, so no path spelling can reach outside the
directory; the path itself is in the header and checked on every read. Writes are atomic
(write a temporary file, fsync, rename over, fsync the directory): a reader sees the old
record or the new one, never a torn one.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from chain.core.encoding import Reader, Writer, encode_varint
from chain.core.errors import DecodeError
from chain.core.keys import KeyPair, PublicKeys
from chain.core.paths import MAX_PATH_BYTES
from chain.core.principal import Principal
from storage_market.crypto import (
    VERSION_SIZE,
    WRAPPED_CHILD_KEY_SIZE,
    Bytes,
    Plaintext,
    Readcap,
    byte_view,
    decode_strict,
    find_readcap,
    fresh_buffer,
    new_version,
    parent_path,
    plaintext_length,
    seal_into,
    seal_to,
    sealed_size,
    unseal,
    unwrap_child_key,
    valid_path,
    wrap_child_key,
)
from storage_market.errors import (
    BlockNotFound,
    FormatError,
    IntegrityError,
    NoReadcap,
    StorageError,
)
from storage_market.jsonstate import fsync_dir, start_writeback, write_bytes_atomic

MAGIC = b"BCBK"
RECORD_FORMAT = 2
#: the format of a record whose header ends with a kind byte (directories and links)
KIND_FORMAT = 3
KIND_FILE = 0
KIND_DIR = 1
KIND_LINK = 2
KINDS = {KIND_FILE: "file", KIND_DIR: "dir", KIND_LINK: "link"}
#: the first format, whose header ends with the payload's SHA-256 (still read)
DIGEST_FORMAT = 1
MAX_READCAPS = 1024
#: Bounds the header before it is read: a path, 1024 readcaps and a few fixed fields.
MAX_HEADER = 256 * 1024
_DIGEST = 32
_PREFIX = len(MAGIC) + 1

def _is_root(path: str) -> bool:
    return path.count("/") == 1


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """What a reader needs besides the sealed payload: where it lives and how to open it."""

    path: str
    version: bytes
    readcaps: tuple[Readcap, ...]
    parent_key: bytes | None
    payload_size: int
    #: only in a version-1 record
    payload_digest: bytes | None = None
    kind: int = KIND_FILE

    def __post_init__(self) -> None:
        valid_path(self.path)
        if self.kind not in KINDS:
            raise FormatError(f"unknown block kind {self.kind}")
        if self.kind != KIND_FILE and self.payload_digest is not None:
            raise FormatError("a version-1 record holds a file")
        if len(self.version) != VERSION_SIZE:
            raise FormatError("a header has a 32-byte version")
        if self.payload_digest is not None and len(self.payload_digest) != _DIGEST:
            raise FormatError("a version-1 header has a 32-byte payload digest")
        if len(self.readcaps) > MAX_READCAPS:
            raise FormatError(f"a block has at most {MAX_READCAPS} readcaps")
        if _is_root(self.path):
            if self.parent_key is not None:
                raise FormatError("a root block has no parent key")
            if not self.readcaps:
                raise FormatError("a root block carries at least one readcap")
        elif self.parent_key is None or len(self.parent_key) != WRAPPED_CHILD_KEY_SIZE:
            raise FormatError("a block below the root carries its key wrapped under its parent's")

    def write(self, w: Writer) -> None:
        w.text(self.path).fixed(self.version, VERSION_SIZE).varint(len(self.readcaps))
        for cap in self.readcaps:
            cap.write(w)
        w.flag(self.parent_key is not None)
        if self.parent_key is not None:
            w.fixed(self.parent_key, WRAPPED_CHILD_KEY_SIZE)
        w.varint(self.payload_size)
        if self.payload_digest is not None:
            w.fixed(self.payload_digest, _DIGEST)
        if self.kind != KIND_FILE:
            w.u8(self.kind)

    @classmethod
    def read(cls, r: Reader, record_format: int = RECORD_FORMAT) -> BlockHeader:
        path = r.text(MAX_PATH_BYTES)
        version = r.fixed(VERSION_SIZE)
        caps = tuple(Readcap.read(r) for _ in range(r.varint(MAX_READCAPS)))
        parent = r.fixed(WRAPPED_CHILD_KEY_SIZE) if r.flag() else None
        size = r.varint()
        digest = r.fixed(_DIGEST) if record_format == DIGEST_FORMAT else None
        kind = KIND_FILE
        if record_format == KIND_FORMAT:
            kind = r.u8()
            if kind == KIND_FILE:  # one encoding per header: a file is written as format 2
                raise FormatError("a file's record is format 2")
        return cls(path, version, caps, parent, size, digest, kind)

    @property
    def record_format(self) -> int:
        if self.payload_digest is not None:
            return DIGEST_FORMAT
        return RECORD_FORMAT if self.kind == KIND_FILE else KIND_FORMAT

    def encode(self) -> bytes:
        w = Writer()
        self.write(w)
        return bytes(w)

    def record_prefix(self) -> bytes:
        """Magic, format, header and header checksum: every record byte before the payload."""
        body = self.encode()
        if len(body) > MAX_HEADER:
            raise FormatError(f"a block header is at most {MAX_HEADER} bytes")
        head = MAGIC + bytes((self.record_format,)) + encode_varint(len(body)) + body
        return head + hashlib.sha256(head).digest()


def _parse_prefix(view: memoryview) -> tuple[BlockHeader, int]:
    """The header of a record and the offset of its payload; needs only the prefix bytes."""
    if view.nbytes < _PREFIX or bytes(view[: len(MAGIC)]) != MAGIC:
        raise FormatError("not a block record (bad magic)")
    record_format = view[len(MAGIC)]
    if record_format not in (DIGEST_FORMAT, RECORD_FORMAT, KIND_FORMAT):
        raise FormatError(f"unknown block record format {record_format}")
    window = bytes(view[_PREFIX : _PREFIX + 4])  # the header length: a varint below 2**18
    try:
        reader = Reader(window)
        length = reader.varint(MAX_HEADER)
    except DecodeError as exc:
        raise FormatError(f"bad block header length: {exc}") from exc
    pos = _PREFIX + len(window) - reader.remaining
    end = pos + length
    if view.nbytes < end + _DIGEST:
        raise FormatError("block record truncated in its header")
    if hashlib.sha256(view[:end]).digest() != bytes(view[end : end + _DIGEST]):
        raise IntegrityError("block header checksum mismatch")
    header = decode_strict(view[pos:end], functools.partial(BlockHeader.read,
                                                            record_format=record_format),
                           "block header")
    return header, end + _DIGEST


def _new_header(path: str, plaintext_size: int, block_key: bytes, readers: Iterable[PublicKeys],
                parent_key: bytes | None, version: bytes | None, kind: int) -> BlockHeader:
    """The header of a block about to be sealed: readcaps issued, the key wrapped under the
    parent's, a fresh version unless one is given."""
    valid_path(path)
    version = new_version() if version is None else version
    caps = tuple(Readcap.issue(block_key, path, r) for r in readers)
    wrapped = None if parent_key is None else wrap_child_key(parent_key, path, block_key)
    return BlockHeader(path, version, caps, wrapped, sealed_size(plaintext_size), kind=kind)


class StoredBlock:
    """One block record in memory: a header and its sealed payload in a single buffer (the
    record is handed to the erasure coder without a copy)."""

    __slots__ = ("_offset", "header", "record")

    def __init__(self, header: BlockHeader, record: memoryview, offset: int) -> None:
        self.header = header
        self.record = record
        self._offset = offset

    @property
    def path(self) -> str:
        return self.header.path

    @property
    def version(self) -> bytes:
        return self.header.version

    @property
    def payload(self) -> memoryview:
        """The sealed payload (a view into :attr:`record`)."""
        return self.record[self._offset :]

    @classmethod
    def seal(
        cls,
        path: str,
        plaintext: Plaintext,
        block_key: bytes,
        *,
        readers: Iterable[PublicKeys] = (),
        parent_key: bytes | None = None,
        version: bytes | None = None,
        kind: int = KIND_FILE,
    ) -> StoredBlock:
        """Encrypt ``plaintext`` as the block at ``path``, in memory (a directory, a link, a
        small file; a large file goes to disk as it is sealed: :meth:`BlockStore.seal_file`).

        ``readers`` get readcaps; ``parent_key`` is the parent's (plain) block key, under which
        this block's key is wrapped, and is required for every block but a tree's root.
        ``version`` defaults to a fresh random one. ``kind`` says whether it is a file, a
        directory or a link (see the module docstring).
        """
        header = _new_header(path, plaintext_length(plaintext), block_key, readers, parent_key,
                             version, kind)
        prefix = header.record_prefix()
        offset = len(prefix)
        record = fresh_buffer(offset + header.payload_size)
        record[:offset] = prefix
        seal_into(block_key, path, header.version, plaintext, record[offset:])
        return cls(header, record, offset)

    @classmethod
    def decode(cls, record: Bytes) -> StoredBlock:
        """Parse a record without copying it: its header checksum, its length and, in a
        version-1 record, its payload digest are checked (the payload itself is checked by the
        AEAD when opened)."""
        view = byte_view(record)
        header, offset = _parse_prefix(view)
        if view.nbytes - offset != header.payload_size:
            raise FormatError(
                f"payload is {view.nbytes - offset} bytes, header says {header.payload_size}"
            )
        block = cls(header, view, offset)
        digest = header.payload_digest
        if digest is not None and hashlib.sha256(block.payload).digest() != digest:
            raise IntegrityError(f"payload of {header.path} does not match its digest")
        return block

    def block_key(self, keys: KeyPair) -> bytes:
        """This block's key from a readcap issued to ``keys`` (NoReadcap if there is none)."""
        return find_readcap(self.header.readcaps, keys.principal).open(keys, self.path)

    def open(self, block_key: bytes) -> bytearray:
        """The plaintext, checked by the AEAD against this block's path and version."""
        return unseal(block_key, self.path, self.version, self.payload)


def _principal_of(path: str) -> Principal:
    valid_path(path)
    return Principal.parse(path[1:].split("/", 1)[0])


class RecordFile:
    """A block record just sealed to a temporary file of the store (:meth:`BlockStore.seal_file`):
    readable through :attr:`fd` at once, in place at its path once committed."""

    def __init__(self, header: BlockHeader, fd: int, tmp: Path, target: Path) -> None:
        self.header = header
        self.fd = fd
        self.size = 0
        self._tmp: Path | None = tmp
        self._target = target

    def commit(self) -> None:
        """Make the record durable and put it in place of the path's earlier record, atomically
        (fsync, rename over, fsync the directory). :attr:`fd` stays open for reading."""
        if self._tmp is None:
            return
        os.fsync(self.fd)
        os.replace(self._tmp, self._target)
        self._tmp = None
        fsync_dir(self._target.parent)

    def close(self) -> None:
        """Close the descriptor; a record never committed is deleted."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


class BlockStore:
    """A client's blocks on local disk, one atomically replaced file per path."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def file_for(self, path: str) -> Path:
        """Where the block at ``path`` lives; the name is a hash, so nothing can escape."""
        principal = _principal_of(path)
        name = hashlib.sha256(b"blockcoin/v1/blockstore-path\x00" + path.encode()).hexdigest()
        return self.directory / str(principal) / f"{name}.blk"

    def put(self, block: StoredBlock) -> None:
        """Store ``block``, replacing any earlier version of its path atomically."""
        write_bytes_atomic(self.file_for(block.path), block.record)

    def seal_file(self, path: str, plaintext: Plaintext, block_key: bytes, *,
                  readers: Iterable[PublicKeys] = (), parent_key: bytes | None = None,
                  kind: int = KIND_FILE) -> RecordFile:
        """Seal ``plaintext`` as the block at ``path`` (as :meth:`StoredBlock.seal`) straight
        into a new file of this store, a piece at a time: memory stays a few pieces however
        large the file. The record is not in place yet: :meth:`RecordFile.commit` makes it
        durable and replaces the path's record with it, :meth:`RecordFile.close` drops it if
        it was not committed."""
        header = _new_header(path, plaintext_length(plaintext), block_key, readers, parent_key,
                             None, kind)
        target = self.file_for(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        record = RecordFile(header, fd, tmp, target)
        try:
            written = 0

            def write(part: memoryview) -> None:
                nonlocal written
                start = written
                while written - start < part.nbytes:
                    written += os.pwrite(fd, part[written - start :], written)
                start_writeback(fd, start, part.nbytes)  # so that commit's fsync is short

            write(memoryview(header.record_prefix()))
            seal_to(block_key, path, header.version, plaintext, write)
            record.size = written
        except BaseException:
            record.close()
            raise
        return record

    def _read(self, path: str, limit: int | None = None) -> bytearray:
        target = self.file_for(path)
        try:
            with open(target, "rb", buffering=0) as fh:
                size = os.fstat(fh.fileno()).st_size
                want = size if limit is None else min(size, limit)
                buf = bytearray(want)
                view = memoryview(buf)
                got = 0
                while got < want:
                    n = fh.readinto(view[got:])
                    if not n:
                        break
                    got += n
        except FileNotFoundError as exc:
            raise BlockNotFound(f"no block stored at {path}") from exc
        if got != want:
            raise IntegrityError(f"block file for {path} shrank while being read")
        return buf

    def get(self, path: str) -> StoredBlock:
        """The block at ``path``; a file that fails any check is an :class:`IntegrityError`."""
        buf = self._read(path)
        try:
            block = StoredBlock.decode(buf)
        except FormatError as exc:
            raise IntegrityError(f"corrupt block file for {path}: {exc}") from exc
        if block.path != path:
            raise IntegrityError(f"block file for {path} holds {block.path}")
        return block

    def header(self, path: str) -> BlockHeader:
        """Only the header of the block at ``path`` (checksummed), without reading the payload."""
        buf = self._read(path, limit=_PREFIX + 4 + MAX_HEADER + _DIGEST)
        try:
            header, _ = _parse_prefix(memoryview(buf))
        except FormatError as exc:
            raise IntegrityError(f"corrupt block file for {path}: {exc}") from exc
        if header.path != path:
            raise IntegrityError(f"block file for {path} holds {header.path}")
        return header

    def has(self, path: str) -> bool:
        return self.file_for(path).is_file()

    def remove_temporaries(self) -> int:
        """Delete the temporary files of writes a killed process left (a large put's record is
        as large as its file); the number deleted. Only for the one process that holds the
        data directory: another's write in progress would be deleted too."""
        removed = 0
        for tmp in self.directory.glob("*/.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed

    def delete(self, path: str) -> bool:
        """Remove the block at ``path``; False if there was none."""
        target = self.file_for(path)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(target.parent)
        return True

    def paths(self, principal: Principal | None = None) -> Iterator[str]:
        """Paths of the stored blocks (of one tree if ``principal`` is given), unordered.

        Temporary files of interrupted writes start with a dot and are skipped.
        """
        if principal is not None:
            trees: Iterable[Path] = [self.directory / str(principal)]
        else:
            trees = self.directory.iterdir()
        for tree in trees:
            if not tree.is_dir():
                continue
            for entry in tree.glob("[!.]*.blk"):
                with open(entry, "rb") as fh:
                    prefix = fh.read(_PREFIX + 4 + MAX_HEADER + _DIGEST)
                try:
                    header, _ = _parse_prefix(memoryview(prefix))
                except StorageError:
                    continue
                if self.file_for(header.path) == entry:
                    yield header.path

    def block_key(self, path: str, keys: KeyPair, header: BlockHeader | None = None) -> bytes:
        """The key of the block at ``path`` for ``keys``: from its own readcap, or else from
        the nearest ancestor that has one, unwrapping child keys back down (the paper's rule
        that read access to a block gives read access to everything below it).

        ``header``, if given, is used for ``path`` itself instead of reading it again, so a
        caller holding a block opens exactly the version it holds.
        """
        chain: list[tuple[str, BlockHeader]] = []
        current = path
        while True:
            if header is None or current != path:
                header = self.header(current)
            try:
                key = find_readcap(header.readcaps, keys.principal).open(keys, current)
                break
            except NoReadcap:
                if _is_root(current):
                    raise NoReadcap(
                        f"{keys.principal} holds no readcap on the way to {path}"
                    ) from None
                chain.append((current, header))
                current = parent_path(current)
        for child, child_header in reversed(chain):
            if child_header.parent_key is None:  # BlockHeader refuses this; kept for the type
                raise IntegrityError(f"block {child} has no parent key")
            key = unwrap_child_key(key, child, child_header.parent_key)
        return key

    def read(self, path: str, keys: KeyPair) -> bytearray:
        """The plaintext of the block at ``path``, read with ``keys``."""
        block = self.get(path)
        return block.open(self.block_key(path, keys, block.header))
