"""Fragment Merkle trees: the chain's root, proofs for every leaf, refusals, wire format."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.hashes import ZERO_HASH
from chain.hashes import merkle_root as chain_merkle_root
from chain.storageproof import proof_length
from storage_market.errors import FormatError, IntegrityError, StorageError
from storage_market.merkle import (
    MAX_CHALLENGE_LEAVES,
    ChallengeResponse,
    LeafProof,
    MerkleTree,
    check_root,
    leaf_count,
    merkle_root,
    verify_proof,
)

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
@given(st.binary(min_size=1, max_size=40 * LEAF), st.data())
def test_challenge_response_round_trip(data: bytes, draw: st.DataObject) -> None:
    tree = MerkleTree(data, LEAF)
    picks = draw.draw(st.lists(st.integers(0, tree.leaf_count - 1), min_size=1, max_size=6))
    response = tree.respond(picks)
    encoded = response.encode()
    assert ChallengeResponse.decode(encoded) == response
    assert response.verify(tree.root, tree.leaf_count, picks)
    assert not response.verify(tree.root, tree.leaf_count, [*picks, tree.leaf_count])
    # Any flipped byte is refused at decode or at verify.
    pos = draw.draw(st.integers(0, len(encoded) - 1))
    mutated = bytearray(encoded)
    mutated[pos] ^= draw.draw(st.integers(1, 255))
    try:
        decoded = ChallengeResponse.decode(bytes(mutated))
    except FormatError:
        return
    assert not decoded.verify(tree.root, tree.leaf_count, picks)


def test_challenge_response_canonical_form() -> None:
    tree = MerkleTree(os.urandom(8 * LEAF), LEAF)
    a, b = tree.respond([2]).proofs[0], tree.respond([5]).proofs[0]
    with pytest.raises(FormatError):
        ChallengeResponse((b, a)).encode()
    with pytest.raises(FormatError):
        ChallengeResponse(()).encode()
    good = ChallengeResponse((a, b)).encode()
    swapped = ChallengeResponse((a, b))
    # Hand-build the out-of-order encoding and check the decoder refuses it.
    body = good[2:]
    first_len = len(ChallengeResponse((a,)).encode()) - 2
    with pytest.raises(FormatError):
        ChallengeResponse.decode(good[:2] + body[first_len:] + body[:first_len])
    with pytest.raises(FormatError):
        ChallengeResponse.decode(good + b"\x00")
    with pytest.raises(FormatError):
        ChallengeResponse.decode(b"\x02" + good[1:])
    assert swapped.verify(tree.root, 8, [5, 2, 2])
    too_many = ChallengeResponse(
        tuple(LeafProof(i, b"x", ()) for i in range(MAX_CHALLENGE_LEAVES + 1))
    )
    with pytest.raises(FormatError):
        too_many.encode()
