"""The arithmetic of a storage proof, shared by the fold that checks proofs and the hosts that
make them.

A fragment is committed on chain by the Merkle root of its fixed-size leaves (the chain's tree:
``leaf = H(0x00 || bytes)``, ``node = H(0x01 || left || right)``, an odd last node carried up).
Each period of a contract, the hash of the block that opened the period seeds the choice of
leaves, so a host cannot answer before that block exists: it must hold the leaves (or rebuild
them) when the period starts.

**Path shape.** Walking up from leaf ``i`` in a tree of ``count`` leaves, a level contributes a
sibling iff ``i ^ 1 < count`` at that level; otherwise the node was carried up and the level is
skipped. A path's length is therefore a function of ``(index, count)``, and a verifier that
knows the leaf count (from the size and leaf size on chain) refuses any other length.
"""

from __future__ import annotations

import hashlib

from chain.core.hashes import leaf_hash

SEED_TAG = b"blockcoin/v1/proof-seed"


def leaf_count(size: int, leaf_size: int) -> int:
    """Number of leaves of a fragment of ``size`` bytes."""
    return -(-size // leaf_size)


def leaf_length(index: int, size: int, leaf_size: int) -> int:
    """Length of leaf ``index``: ``leaf_size``, except a short last leaf."""
    return min(leaf_size, size - index * leaf_size)


def proof_length(index: int, count: int) -> int:
    """How many sibling hashes the path of leaf ``index`` in a ``count``-leaf tree has."""
    length = 0
    while count > 1:
        if index ^ 1 < count:
            length += 1
        index >>= 1
        count = (count + 1) >> 1
    return length


def root_from_path(leaf: bytes | bytearray | memoryview, index: int, count: int,
                   path: bytes) -> bytes | None:
    """The root that ``leaf`` at ``index`` with sibling ``path`` (the bottom-up sibling hashes,
    concatenated) implies, or None if the path does not fit the shape of a ``count``-leaf
    tree. The path stays one byte string: a proof is checked as it arrives, without cutting it
    into a list first."""
    if not isinstance(index, int) or not isinstance(count, int) or not 0 <= index < count:
        return None
    sha = hashlib.sha256
    node = leaf_hash(bytes(leaf))
    pos, end = 0, len(path)
    while count > 1:
        if index ^ 1 < count:
            if pos + 32 > end:
                return None
            sibling = path[pos : pos + 32]
            pos += 32
            node = sha(b"\x01" + sibling + node if index & 1 else b"\x01" + node + sibling).digest()
        index >>= 1
        count = (count + 1) >> 1
    return node if pos == end else None


def period_seed(opening_block_hash: bytes, contract_id: bytes) -> bytes:
    """The seed of one contract's period: the hash of the block that opened the period (not
    known when the contract started) with the contract's id (so contracts differ)."""
    return hashlib.sha256(SEED_TAG + opening_block_hash + contract_id).digest()


def leaf_indexes(seed: bytes, count: int, picks: int) -> list[int]:
    """The ``picks`` leaf indexes a seed chooses among ``count`` leaves, in pick order (a leaf
    may be picked twice; it is then proven twice). The modulo's bias is below 2^-38 for any
    fragment the chain admits."""
    sha = hashlib.sha256
    return [int.from_bytes(sha(seed + bytes((j,))).digest()[:8], "big") % count
            for j in range(picks)]
