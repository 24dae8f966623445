"""The multi-buffer SHA-256 kernel agrees with hashlib bit for bit, and the generated code is
what the generator writes."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from chain.core.hashes import merkle_root as chain_merkle_root
from storage_market import sha256_codegen, sha256x
from storage_market.merkle import HashTree, MerkleTree, merkle_root


def _leaf_hashes(data: bytes, leaf: int) -> bytes:
    return b"".join(hashlib.sha256(b"\x00" + data[i : i + leaf]).digest()
                    for i in range(0, len(data), leaf))


def test_kernel_is_available() -> None:
    # numba is a dependency: the fast path must be the one in use, not the fallback
    assert sha256x.kernel() is not None


@pytest.mark.parametrize("leaf", [64, 128, 1024, 4096])
def test_leaves_agree_with_hashlib(leaf: int) -> None:
    rng = random.Random(leaf)
    # counts around the 16-lane groups, with and without a short last leaf
    for count in (16, 17, 31, 32, 33, 100):
        for short in (0, 1, leaf // 2, leaf - 1):
            data = rng.randbytes(count * leaf + short)
            want = _leaf_hashes(data, leaf)
            assert bytes(sha256x.leaf_digests(data, leaf)) == want
            assert bytes(sha256x.leaf_digests(data, leaf, use_kernel=False)) == want


def test_unaligned_and_read_only_views() -> None:
    data = os.urandom(64 * 1024 + 3)
    for offset in (0, 1, 2, 3):
        view = memoryview(data)[offset : offset + 40 * 1024 + 5]
        assert bytes(sha256x.leaf_digests(view, 1024)) == _leaf_hashes(bytes(view), 1024)
    writable = bytearray(data)
    assert sha256x.leaf_digests(memoryview(writable)[1:], 1024) == sha256x.leaf_digests(
        data[1:], 1024)


@pytest.mark.parametrize("count", [1, 2, 3, 15, 16, 17, 33, 64, 1001])
def test_levels_and_root_agree_with_the_chain(count: int) -> None:
    rng = random.Random(count)
    data = rng.randbytes(count * 64 - rng.randrange(64))
    leaves = [data[i : i + 64] for i in range(0, len(data), 64)]
    want = chain_merkle_root(leaves)
    digests = sha256x.leaf_digests(data, 64)
    assert sha256x.root_of(digests) == want
    assert sha256x.root_of(digests, use_kernel=False) == want
    assert sha256x.levels_of(digests)[-1] == want
    assert merkle_root(data, 64) == want
    assert MerkleTree(data, 64).root == HashTree.of(data, 64).root == want


def test_parent_level_carries_an_odd_node() -> None:
    level = os.urandom(32 * 37)
    up = sha256x.parent_level(level)
    assert len(up) == 32 * 19
    assert up[-32:] == level[-32:]
    assert up[:32] == hashlib.sha256(b"\x01" + level[:64]).digest()
    assert up == sha256x.parent_level(level, use_kernel=False)


def test_empty_and_bad_shapes() -> None:
    assert sha256x.root_of(b"") == bytes(32)
    assert sha256x.leaf_digests(b"", 1024) == bytearray()
    with pytest.raises(ValueError):
        sha256x.hash_messages_into(bytes(100), 100, 100, 0, 1, bytearray(32))
    with pytest.raises(ValueError):
        sha256x.hash_messages_into(bytes(64), 64, 64, 0, 2, bytearray(64))


def test_generated_kernel_is_up_to_date() -> None:
    assert sha256_codegen.OUTPUT.read_text() == sha256_codegen.generate(), (
        "run: python -m storage_market.sha256_codegen")
