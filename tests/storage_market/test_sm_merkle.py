"""Fragment Merkle trees: the chain's root, proofs for every leaf, refusals, wire format."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.core.hashes import ZERO_HASH
from chain.core.hashes import merkle_root as chain_merkle_root
from chain.core.storageproof import leaf_indexes, period_seed, proof_length, root_from_path
from storage_market.errors import IntegrityError, StorageError
from storage_market.merkle import (
    HashTree,
    MerkleTree,
    check_root,
    leaf_count,
    merkle_root,
    verify_proof,
)
from storage_market.proving import proof_item

LEAF = 64
# Leaf counts 1 (single), 2, 3, 4, 5, 7, 8, 9, 16, 17; sizes with a short last leaf too.
SIZES = [1, LEAF, LEAF + 1, 2 * LEAF, 3 * LEAF - 7, 4 * LEAF, 5 * LEAF, 7 * LEAF - 1, 8 * LEAF,
         9 * LEAF, 16 * LEAF, 17 * LEAF - 30]


def _leaves(data: bytes) -> list[bytes]:
    return [data[i : i + LEAF] for i in range(0, len(data), LEAF)]


@pytest.mark.parametrize("size", SIZES)
def test_root_is_the_chains_and_every_proof_verifies(size: int) -> None:
    data = os.urandom(size)
    tree = MerkleTree(data, LEAF)
    assert tree.leaf_count == leaf_count(size, LEAF) == len(_leaves(data))
    assert tree.root == chain_merkle_root(_leaves(data)) == merkle_root(data, LEAF)
    for i in range(tree.leaf_count):
        proof = tree.proof(i)
        assert len(proof) == proof_length(i, tree.leaf_count)
        assert verify_proof(tree.root, tree.leaf(i), i, tree.leaf_count, proof)


@pytest.mark.parametrize("size", SIZES)
def test_altered_leaf_index_or_path_fails(size: int) -> None:
    data = os.urandom(size)
    tree = MerkleTree(data, LEAF)
    count = tree.leaf_count
    for i in range(count):
        leaf, proof = tree.leaf(i), tree.proof(i)
        bad_leaf = bytes([leaf[0] ^ 1]) + leaf[1:]
        assert not verify_proof(tree.root, bad_leaf, i, count, proof)
        assert not verify_proof(tree.root, leaf + b"\x00", i, count, proof)
        # The leaf count is not in the root (it comes from the on-chain size), but a count
        # that changes the path's shape is refused.
        for other in (count - 1, count + 1, 2 * count):
            if other > i and proof_length(i, other) != len(proof):
                assert not verify_proof(tree.root, leaf, i, other, proof)
        for j in {i - 1, i + 1, i ^ 1, count}:
            if j != i:
                assert not verify_proof(tree.root, leaf, j, count, proof)
        for k in range(len(proof)):
            broken = list(proof)
            broken[k] = bytes([broken[k][0] ^ 1]) + broken[k][1:]
            assert not verify_proof(tree.root, leaf, i, count, broken)
        assert not verify_proof(tree.root, leaf, i, count, proof + [ZERO_HASH])
        if proof:
            assert not verify_proof(tree.root, leaf, i, count, proof[:-1])
        assert not verify_proof(ZERO_HASH, leaf, i, count, proof)


def test_single_leaf_tree() -> None:
    tree = MerkleTree(b"only", LEAF)
    assert tree.leaf_count == 1 and tree.proof(0) == []
    assert verify_proof(tree.root, b"only", 0, 1, [])
    assert not verify_proof(tree.root, b"only", 0, 2, [])


def test_inner_node_cannot_pose_as_a_leaf() -> None:
    data = os.urandom(4 * LEAF)
    tree = MerkleTree(data, LEAF)
    inner = tree.proof(0)[-1]  # hash of leaves 2..3
    assert not verify_proof(tree.root, inner, 1, 2, [tree.proof(3)[-1]])


def test_empty_and_bad_indexes() -> None:
    empty = MerkleTree(b"", LEAF)
    assert empty.leaf_count == 0 and empty.root == ZERO_HASH
    assert not verify_proof(ZERO_HASH, b"", 0, 0, [])
    tree = MerkleTree(os.urandom(3 * LEAF), LEAF)
    for bad in (-1, 3):
        with pytest.raises(StorageError):
            tree.proof(bad)
        assert not verify_proof(tree.root, b"x", bad, 3, [])
    with pytest.raises(StorageError):
        MerkleTree(b"x", 100)  # not a power of two


def test_check_root() -> None:
    data = os.urandom(1000)
    check_root(data, merkle_root(data, LEAF), LEAF)
    with pytest.raises(IntegrityError):
        check_root(data[:-1] + b"?", merkle_root(data, LEAF), LEAF)


def test_default_leaf_size_on_a_larger_fragment() -> None:
    data = os.urandom(1024 * 37 + 5)
    tree = MerkleTree(data)
    assert tree.leaf_count == 38
    assert all(verify_proof(tree.root, tree.leaf(i), i, 38, tree.proof(i)) for i in range(38))


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=40 * LEAF), st.binary(min_size=32, max_size=32),
       st.integers(1, 8), st.data())
def test_a_period_proof_from_a_hash_tree_and_leaves_verifies_as_the_chain_checks_it(
        data: bytes, opening: bytes, picks: int, draw: st.DataObject) -> None:
    """What a host builds (paths from the hash tree it keeps, leaves read from its disk) is what
    the fold accepts: the seed's leaves, each leading to the root; any flipped byte fails."""
    light, full = HashTree.of(data, LEAF), MerkleTree(data, LEAF)
    cid = b"\x09" * 32
    item = proof_item(light, lambda idx: [full.leaf(i) for i in idx], cid, 3, opening, picks)
    indexes = leaf_indexes(period_seed(opening, cid), light.leaf_count, picks)
    assert (item.contract, item.period, len(item.leaves)) == (cid, 3, picks)
    for index, proven in zip(indexes, item.leaves, strict=True):
        assert root_from_path(proven.leaf, index, light.leaf_count, proven.path) == full.root
    j = draw.draw(st.integers(0, picks - 1))
    leaf = bytearray(item.leaves[j].leaf)
    leaf[draw.draw(st.integers(0, len(leaf) - 1))] ^= draw.draw(st.integers(1, 255))
    assert root_from_path(bytes(leaf), indexes[j], light.leaf_count,
                          item.leaves[j].path) != full.root
