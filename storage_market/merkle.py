"""Merkle trees over a fragment's fixed-size leaves, leaf proofs, and challenge responses.

A fragment is cut into leaves of ``leaf_size`` bytes (default 1 KiB; the last leaf may be
short). The tree is the chain's (:mod:`chain.hashes`): ``leaf = H(0x00 || bytes)``,
``node = H(0x01 || left || right)``, and an odd last node is carried up unchanged rather than
paired with itself, so the root is exactly ``chain.hashes.merkle_root`` of the leaves. Only the
root goes on chain; a host proves it still holds leaf ``i`` by sending the leaf and its sibling
path.

**Proof shape.** Walking up from leaf ``i`` in a tree of ``count`` leaves, a level contributes a
sibling iff ``i ^ 1 < count`` at that level; otherwise the node was carried up and the level is
skipped. So a path's length is a function of ``(index, count)``, and a verifier that knows the
leaf count (from the on-chain fragment size and leaf size) refuses a path of any other length.

**Cost.** Building a tree hashes every leaf once and ``count - 1`` inner nodes, one call per
level into a multi-buffer SHA-256 kernel that releases the GIL (:mod:`storage_market.sha256x`;
hashlib per hash holds the GIL below 2 KiB and costs a Python call each, several times
slower). All levels are kept as flat digest buffers (about 64 bytes per leaf: 1.4 MiB for a
22 MiB fragment), so a proof is ``O(log count)`` slices.

**Wire format of a challenge response** (canonical, strict; failures are
:class:`~storage_market.errors.FormatError`)::

    u8 format = 1
    varint count                      (1..MAX_CHALLENGE_LEAVES)
    count times, indexes strictly increasing:
        varint index
        varint length, leaf bytes     (1..MAX_LEAF_SIZE)
        u8 path length                (0..MAX_PATH_HASHES)
        path length x 32-byte hash    (bottom-up siblings)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chain.encoding import Reader, Writer
from chain.hashes import ZERO_HASH, leaf_hash
from storage_market import sha256x
from storage_market.crypto import Bytes, byte_view, decode_strict
from storage_market.errors import FormatError, IntegrityError, StorageError

DEFAULT_LEAF_SIZE = 1024
MIN_LEAF_SIZE = 64
MAX_LEAF_SIZE = 1 << 20
#: A tree of 2**64 leaves has 64 levels above its leaves; no path is longer.
MAX_PATH_HASHES = 64
MAX_CHALLENGE_LEAVES = 256
RESPONSE_FORMAT = 1
DIGEST = sha256x.DIGEST


def check_leaf_size(leaf_size: int) -> None:
    """The chain's rule for offers: a power of two, at least 64 bytes (and here at most 1 MiB)."""
    if (
        not isinstance(leaf_size, int)
        or not MIN_LEAF_SIZE <= leaf_size <= MAX_LEAF_SIZE
        or leaf_size & (leaf_size - 1)
    ):
        raise StorageError(
            f"leaf size is a power of two from {MIN_LEAF_SIZE} to {MAX_LEAF_SIZE}: {leaf_size!r}"
        )


def leaf_count(size: int, leaf_size: int = DEFAULT_LEAF_SIZE) -> int:
    """Number of leaves of a fragment of ``size`` bytes."""
    return -(-size // leaf_size)


def leaf_digests(data: Bytes, leaf_size: int = DEFAULT_LEAF_SIZE) -> bytearray:
    """``leaf_hash`` of every leaf of ``data``, as one flat buffer of 32-byte digests.

    Full leaves go through the multi-buffer kernel (:mod:`storage_market.sha256x`), which
    releases the GIL; a short last leaf is hashed with hashlib.
    """
    check_leaf_size(leaf_size)
    return sha256x.leaf_digests(data, leaf_size)


def proof_length(index: int, count: int) -> int:
    """How many sibling hashes the path of leaf ``index`` in a ``count``-leaf tree has."""
    length = 0
    while count > 1:
        if index ^ 1 < count:
            length += 1
        index >>= 1
        count = (count + 1) >> 1
    return length


def root_from_path(leaf: Bytes, index: int, count: int, path: Sequence[bytes]) -> bytes | None:
    """The root that ``leaf`` at ``index`` with sibling ``path`` implies, or None if the path
    does not fit the shape of a ``count``-leaf tree."""
    if not isinstance(index, int) or not isinstance(count, int) or not 0 <= index < count:
        return None
    if len(path) != proof_length(index, count):
        return None
    sha = hashlib.sha256
    node = leaf_hash(bytes(leaf))
    step = 0
    while count > 1:
        if index ^ 1 < count:
            sibling = path[step]
            if not isinstance(sibling, bytes) or len(sibling) != 32:
                return None
            step += 1
            pair = sibling + node if index & 1 else node + sibling
            node = sha(b"\x01" + pair).digest()
        index >>= 1
        count = (count + 1) >> 1
    return node


def verify_proof(root: bytes, leaf: Bytes, index: int, count: int, path: Sequence[bytes]) -> bool:
    """True iff ``leaf`` is leaf ``index`` of the ``count``-leaf tree with root ``root``."""
    implied = root_from_path(leaf, index, count, path)
    return implied is not None and implied == root


def _path(levels: list[bytes], index: int) -> list[bytes]:
    """Sibling path of leaf ``index`` through flat digest levels, bottom-up."""
    path: list[bytes] = []
    for level in levels[:-1]:
        sibling = (index ^ 1) * DIGEST
        if sibling < len(level):
            path.append(level[sibling : sibling + DIGEST])
        index >>= 1
    return path


def merkle_root(data: Bytes, leaf_size: int = DEFAULT_LEAF_SIZE) -> bytes:
    """The root of ``data``'s tree, without keeping the inner levels."""
    return sha256x.root_of(leaf_digests(data, leaf_size))


def check_root(data: Bytes, root: bytes, leaf_size: int = DEFAULT_LEAF_SIZE) -> None:
    """:class:`IntegrityError` unless ``data`` has Merkle root ``root``."""
    if merkle_root(data, leaf_size) != root:
        raise IntegrityError("fragment does not match its Merkle root")


@dataclass(frozen=True, slots=True)
class LeafProof:
    """One challenged leaf with its sibling path."""

    index: int
    leaf: bytes
    path: tuple[bytes, ...]

    def verify(self, root: bytes, count: int) -> bool:
        return verify_proof(root, self.leaf, self.index, count, self.path)


@dataclass(frozen=True, slots=True)
class ChallengeResponse:
    """A host's answer to a storage challenge: the leaves asked for, each with its path."""

    proofs: tuple[LeafProof, ...]

    def verify(self, root: bytes, count: int, indexes: Iterable[int]) -> bool:
        """True iff it answers exactly ``indexes`` and every leaf proves against ``root``."""
        if [p.index for p in self.proofs] != sorted(set(indexes)):
            return False
        return all(p.verify(root, count) for p in self.proofs)

    def write(self, w: Writer) -> None:
        if not 1 <= len(self.proofs) <= MAX_CHALLENGE_LEAVES:
            raise FormatError(f"a response holds 1 to {MAX_CHALLENGE_LEAVES} leaves")
        w.u8(RESPONSE_FORMAT).varint(len(self.proofs))
        previous = -1
        for p in self.proofs:
            if p.index <= previous:
                raise FormatError("response leaves are in strictly increasing index order")
            if not 1 <= len(p.leaf) <= MAX_LEAF_SIZE or len(p.path) > MAX_PATH_HASHES:
                raise FormatError("response leaf or path out of bounds")
            previous = p.index
            w.varint(p.index).var_bytes(p.leaf).u8(len(p.path))
            for h in p.path:
                w.fixed(h, 32)

    @classmethod
    def read(cls, r: Reader) -> ChallengeResponse:
        fmt = r.u8()
        if fmt != RESPONSE_FORMAT:
            raise FormatError(f"unknown challenge response format {fmt}")
        count = r.varint(MAX_CHALLENGE_LEAVES)
        if count == 0:
            raise FormatError("an empty challenge response")
        proofs: list[LeafProof] = []
        previous = -1
        for _ in range(count):
            index = r.varint()
            if index <= previous:
                raise FormatError("response leaves are in strictly increasing index order")
            previous = index
            leaf = r.var_bytes(MAX_LEAF_SIZE)
            if not leaf:
                raise FormatError("an empty leaf")
            depth = r.u8()
            if depth > MAX_PATH_HASHES:
                raise FormatError(f"a path of {depth} hashes")
            proofs.append(LeafProof(index, leaf, tuple(r.fixed(32) for _ in range(depth))))
        return cls(tuple(proofs))

    def encode(self) -> bytes:
        w = Writer()
        self.write(w)
        return bytes(w)

    @classmethod
    def decode(cls, data: Bytes) -> ChallengeResponse:
        return decode_strict(data, cls.read, "challenge response")


class HashTree:
    """The levels of a fragment's Merkle tree, without the fragment.

    A host keeps this in memory for each fragment it stores and reads challenged leaves from
    disk: proofs then cost no hashing, yet a leaf lost or altered on disk still fails the
    owner's check (its hash no longer leads to the root). Built from the flat leaf digests,
    which a host computes chunk by chunk while a fragment streams in.
    """

    __slots__ = ("_levels", "leaf_size", "size")

    def __init__(self, leaves: Bytes, size: int, leaf_size: int = DEFAULT_LEAF_SIZE) -> None:
        count = byte_view(leaves).nbytes // DIGEST
        if byte_view(leaves).nbytes % DIGEST or count != leaf_count(size, leaf_size):
            raise StorageError(f"{count} leaf hashes for {size} bytes of {leaf_size}-byte leaves")
        self.size = size
        self.leaf_size = leaf_size
        self._levels = sha256x.levels_of(leaves)

    @classmethod
    def of(cls, data: Bytes, leaf_size: int = DEFAULT_LEAF_SIZE) -> HashTree:
        return cls(leaf_digests(data, leaf_size), byte_view(data).nbytes, leaf_size)

    @property
    def leaf_count(self) -> int:
        return len(self._levels[0]) // DIGEST

    @property
    def root(self) -> bytes:
        """The root; the empty fragment has the chain's all-zero root."""
        return self._levels[-1][:DIGEST] or ZERO_HASH

    def _check_index(self, index: int) -> None:
        if not isinstance(index, int) or not 0 <= index < self.leaf_count:
            raise StorageError(f"leaf index {index!r} outside 0..{self.leaf_count - 1}")

    def leaf_hash(self, index: int) -> bytes:
        return self._levels[0][index * DIGEST : (index + 1) * DIGEST]

    def proof(self, index: int) -> list[bytes]:
        """The sibling path of leaf ``index``, bottom-up."""
        self._check_index(index)
        return _path(self._levels, index)


class MerkleTree(HashTree):
    """A fragment's tree together with the fragment, so it can also serve the leaves a
    challenge names (the owner's side; a host keeps only the :class:`HashTree`).

    The tree keeps a view of the fragment it was built from; the caller must not modify that
    buffer while the tree is in use.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Bytes, leaf_size: int = DEFAULT_LEAF_SIZE) -> None:
        self._data = byte_view(data)
        super().__init__(leaf_digests(self._data, leaf_size), self._data.nbytes, leaf_size)

    def leaf(self, index: int) -> bytes:
        self._check_index(index)
        start = index * self.leaf_size
        return bytes(self._data[start : start + self.leaf_size])

    def respond(self, indexes: Iterable[int]) -> ChallengeResponse:
        """The response to a challenge naming ``indexes`` (duplicates collapse)."""
        chosen = sorted(set(indexes))
        return ChallengeResponse(
            tuple(LeafProof(i, self.leaf(i), tuple(self.proof(i))) for i in chosen)
        )
