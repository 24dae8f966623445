"""SHA-256 helpers and the domain-separated Merkle tree used for events and fragments.

Leaves and inner nodes are hashed with different prefixes, and an odd last node is carried up
rather than duplicated, so no two different lists share a root (the CVE-2012-2459 trap).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

ZERO_HASH = bytes(32)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root_of_hashes(leaves: Sequence[bytes]) -> bytes:
    """Root over already-hashed leaves; the empty list has the all-zero root."""
    if not leaves:
        return ZERO_HASH
    level = list(leaves)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_root(items: Sequence[bytes]) -> bytes:
    return merkle_root_of_hashes([leaf_hash(x) for x in items])
