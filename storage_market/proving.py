"""Building a period's storage proof from a fragment's hash tree and its leaves.

The leaves come from wherever the prover keeps the fragment (a host reads them from disk, so a
fragment lost or damaged there cannot be proven); the tree supplies the sibling paths, so a proof
costs no hashing. The chain checks the result in :meth:`globaltree.fold.Fold._check_item`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from chain.core.events import ProofItem, ProvenLeaf
from chain.core.storageproof import leaf_indexes, period_seed
from storage_market.merkle import HashTree

ReadLeaves = Callable[[Sequence[int]], Sequence[bytes]]


def proof_item(tree: HashTree, read_leaves: ReadLeaves, contract_id: bytes, period: int,
               opening_hash: bytes, picks: int) -> ProofItem:
    """The proof of ``period``: the leaves that ``opening_hash`` (the hash of the block that
    opened the period) picks, each with its path."""
    indexes = leaf_indexes(period_seed(opening_hash, contract_id), tree.leaf_count, picks)
    leaves = read_leaves(indexes)
    return ProofItem(contract_id, period, tuple(
        ProvenLeaf(bytes(leaf), b"".join(tree.proof(i)))
        for i, leaf in zip(indexes, leaves, strict=True)))
