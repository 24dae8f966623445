"""Merkle trees over a fragment's fixed-size leaves, and leaf proofs.

A fragment is cut into leaves of ``leaf_size`` bytes (default 1 KiB; the last leaf may be
short). The tree is the chain's (:mod:`chain.core.hashes`): ``leaf = H(0x00 || bytes)``,
``node = H(0x01 || left || right)``, and an odd last node is carried up unchanged rather than
paired with itself, so the root is exactly ``chain.core.hashes.merkle_root`` of the leaves. Only the
root goes on chain; a host proves it still holds leaf ``i`` by sending the leaf and its sibling
path.

**Proof shape** (:mod:`chain.core.storageproof`, shared with the fold that checks proofs on chain):
a path's length is a function of ``(index, count)``, and a verifier that knows the leaf count
(from the on-chain fragment size and leaf size) refuses a path of any other length.

**Cost.** Building a tree hashes every leaf once and ``count - 1`` inner nodes, one call per
level into a multi-buffer SHA-256 kernel that releases the GIL (:mod:`storage_market.sha256x`;
hashlib per hash holds the GIL below 2 KiB and costs a Python call each, several times
slower). All levels are kept as flat digest buffers (about 64 bytes per leaf: 1.4 MiB for a
22 MiB fragment), so a proof is ``O(log count)`` slices.
"""

from __future__ import annotations

from collections.abc import Sequence

from chain.core import storageproof
from chain.core.events import MAX_LEAF_SIZE, MIN_LEAF_SIZE
from chain.core.hashes import ZERO_HASH
from chain.core.storageproof import root_from_path
from storage_market import sha256x
from storage_market.crypto import Bytes, byte_view
from storage_market.errors import IntegrityError, StorageError

DEFAULT_LEAF_SIZE = 1024
DIGEST = sha256x.DIGEST


def check_leaf_size(leaf_size: int) -> None:
    """The chain's rule for offers: a power of two within the bounds a proof can carry."""
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
    return storageproof.leaf_count(size, leaf_size)


def leaf_digests(data: Bytes, leaf_size: int = DEFAULT_LEAF_SIZE) -> bytearray:
    """``leaf_hash`` of every leaf of ``data``, as one flat buffer of 32-byte digests.

    Full leaves go through the multi-buffer kernel (:mod:`storage_market.sha256x`), which
    releases the GIL; a short last leaf is hashed with hashlib.
    """
    check_leaf_size(leaf_size)
    return sha256x.leaf_digests(data, leaf_size)


def verify_proof(root: bytes, leaf: Bytes, index: int, count: int, path: Sequence[bytes]) -> bool:
    """True iff ``leaf`` is leaf ``index`` of the ``count``-leaf tree with root ``root``."""
    if any(not isinstance(h, bytes) or len(h) != DIGEST for h in path):
        return False
    implied = root_from_path(leaf, index, count, b"".join(path))
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


class HashTree:
    """The levels of a fragment's Merkle tree, without the fragment.

    A host keeps this in memory for each fragment it stores and reads the picked leaves from
    disk: proofs then cost no hashing, yet a leaf lost or altered on disk still fails the
    chain's check (its hash no longer leads to the root). Built from the flat leaf digests,
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
    """A fragment's tree together with the fragment, so it can also serve its leaves (for
    whoever proves from memory; a host keeps only the :class:`HashTree` and reads leaves from
    disk).

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
