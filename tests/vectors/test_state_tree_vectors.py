"""The state tree against its test vectors (``state_tree.json``, written by the naive
reference in ``state_tree_reference.py``): roots, and proofs byte for byte."""

from __future__ import annotations

import json

from chain.core import statetree
from chain.core.params import REGTEST
from chain.core.schema import TREE
from globaltree.fold import genesis_state
from globaltree.view import MemoryDB, node_store, state_root
from tests.vectors import state_tree_reference as ref


def test_the_vectors_file_is_the_reference_output() -> None:
    assert json.loads(ref.VECTORS.read_text()) == ref.vectors()


def test_the_node_matches_every_vector() -> None:
    data = json.loads(ref.VECTORS.read_text())
    k, v = b"a", b"1"
    assert statetree.leaf_hash(statetree.key_hash(k), statetree.value_hash(v)).hex() == (
        data["hashes"]["leaf(key 'a', value '1')"])
    for case in data["cases"]:
        db = MemoryDB()
        store = node_store(db)
        entries = [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in case["entries"]]
        root, writes = statetree.update(store, entries)
        for pos, node in writes.items():
            assert node is not None
            db.put(pos, node)
        assert root.hex() == case["root"] == store.root().hex(), case["name"]
        for item in case["proofs"]:
            key = bytes.fromhex(item["key"])
            value = bytes.fromhex(item["value"]) if item["value"] is not None else None
            proof = statetree.prove(store, key)
            assert proof.encode().hex() == item["proof"], (case["name"], item["key"])
            assert statetree.verify(root, key, value, statetree.Proof.decode(proof.encode()))


def test_the_reference_agrees_on_the_regtest_genesis_state() -> None:
    """The naive reference, over the genesis state's keys, gives the genesis header's root."""
    db = genesis_state(REGTEST)
    entries = {k: v for k, v in db.data.items() if not k.startswith(TREE)}
    assert ref.root(entries) == state_root(db) == REGTEST.genesis.header.state_root
