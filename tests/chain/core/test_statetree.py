"""The state tree's properties: its shape depends only on the keys and values (so updates in
any batches, deletions included, reach the nodes of a fresh build); every present key has a
membership proof and every other key an absence proof; any one-bit change to a proof or a
value is refused; every network's genesis header commits to its genesis state; a node cache of
any size, fed with each batch's node writes, gives the same nodes as reading the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.core import statetree
from chain.core.errors import DecodeError
from chain.core.params import NETWORKS
from chain.core.schema import HEIGHT, TREE
from chain.core.statetree import Proof, prove, verify
from globaltree.fold import genesis_state
from globaltree.view import MemoryDB, node_store, state_root
from ledger.errors import CorruptLedger
from tests.framework.chainkit import open_chain

keys = st.binary(min_size=1, max_size=6)
values = st.binary(max_size=8)
batches = st.lists(st.dictionaries(keys, st.one_of(st.none(), values), max_size=12),
                   min_size=1, max_size=8)


def apply(db: MemoryDB, changes: dict[bytes, bytes | None],
          cache: statetree.NodeCache | None = None) -> bytes:
    root, writes = statetree.update(node_store(db, cache), changes.items())
    for pos, node in writes.items():
        if node is None:
            db.delete(pos)
        else:
            db.put(pos, node)
    if cache is not None:
        cache.committed(writes)
    return root


@settings(max_examples=150, deadline=None)
@given(batches)
def test_updates_in_batches_reach_the_fresh_tree(steps: list[dict[bytes, bytes | None]]) -> None:
    db = MemoryDB()
    state: dict[bytes, bytes] = {}
    for changes in steps:
        root = apply(db, changes)
        for k, v in changes.items():
            if v is None:
                state.pop(k, None)
            else:
                state[k] = v
        fresh = MemoryDB()
        assert apply(fresh, dict(state.items())) == root == state_root(db)
        assert fresh.data == db.data  # the same nodes, not only the same root


@settings(max_examples=100, deadline=None)
@given(batches, st.integers(0, 6))
def test_updates_through_the_cache_match_the_database(
        steps: list[dict[bytes, bytes | None]], depth: int) -> None:
    """A cache of the top ``depth`` levels (and a root read between batches, as a block
    template does) changes nothing: the same roots and nodes as updates that read only the
    database, and the cache holds exactly the database's nodes of those levels."""
    cached, plain = MemoryDB(), MemoryDB()
    cache = statetree.NodeCache(depth)
    for changes in steps:
        assert apply(cached, changes, cache) == apply(plain, changes)
        assert statetree.update(node_store(cached, cache), [])[0] == state_root(plain)
        assert cached.data == plain.data
        for pos in cache:
            assert cache.get(pos) == plain.data[pos] and cache.holds(pos)
            assert pos[-1] <= depth and pos[-2] == 0


def test_the_node_cache_keeps_only_the_top_levels() -> None:
    def pos(depth: int) -> bytes:
        return TREE + bytes(32) + depth.to_bytes(2, "big")

    cache = statetree.NodeCache(2)
    cache.put(pos(1), b"\x00" + b"\x01" * 64)
    cache.put(pos(3), b"\x00" + b"\x02" * 64)  # below the cached levels: not kept
    cache.committed({pos(2): b"\x01" + b"\x05" * 64, pos(200): b"\x01" + b"\x06" * 64,
                     pos(256): b"\x01" + b"\x07" * 64})
    assert cache.get(pos(1)) == b"\x00" + b"\x01" * 64
    assert cache.get(pos(2)) == b"\x01" + b"\x05" * 64
    assert cache.get(pos(3)) is None and cache.get(pos(200)) is None and cache.get(pos(256)) is None
    cache.committed({pos(1): None})  # deleted in the database
    assert cache.get(pos(1)) is None and len(cache) == 1


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(keys, values, max_size=40), st.lists(keys, max_size=10))
def test_proofs_of_membership_and_absence(state: dict[bytes, bytes], probes: list[bytes]) -> None:
    db = MemoryDB()
    root = apply(db, dict(state.items()))
    store = node_store(db)
    for key, value in state.items():
        proof = prove(store, key)
        assert verify(root, key, value, proof)
        assert not verify(root, key, None, proof)  # a present key has no absence proof
        assert not verify(root, key, value + b"x", proof)
    for key in probes:
        if key not in state:
            proof = prove(store, key)
            assert verify(root, key, None, proof)
            assert not verify(root, key, b"", proof)


def accepted(root: bytes, key: bytes, value: bytes | None, raw: bytes) -> bool:
    try:
        return verify(root, key, value, Proof.decode(raw))
    except DecodeError:
        return False


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(keys, values, min_size=1, max_size=30), st.data())
def test_any_one_bit_change_is_refused(state: dict[bytes, bytes], data: st.DataObject) -> None:
    db = MemoryDB()
    root = apply(db, dict(state.items()))
    key = data.draw(st.sampled_from(sorted(state)))
    present = data.draw(st.booleans())
    if not present:
        key = data.draw(keys.filter(lambda k: k not in state))
    value = state.get(key)
    raw = prove(node_store(db), key).encode()
    assert accepted(root, key, value, raw)
    for i in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[i // 8] ^= 0x80 >> (i % 8)
        assert not accepted(root, key, value, bytes(flipped)), i
    if value is not None:
        for i in range(len(value) * 8):
            changed = bytearray(value)
            changed[i // 8] ^= 0x80 >> (i % 8)
            assert not accepted(root, key, bytes(changed), raw)
    other_root = bytearray(root)
    other_root[data.draw(st.integers(0, 31))] ^= 1
    assert not accepted(bytes(other_root), key, value, raw)


def test_proofs_are_strict() -> None:
    good = Proof((b"\x01" * 32,), None).encode()
    for bad in (b"", b"\x02\x00", good + b"\x00", good[:-1], b"\x00" + bytes([0x81, 0x02])):
        with pytest.raises(DecodeError):
            Proof.decode(bad)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_genesis_commits_to_the_genesis_state(name: str) -> None:
    params = NETWORKS[name]
    assert state_root(genesis_state(params)) == params.genesis.header.state_root
    assert params.genesis.header.version == 3


def test_a_database_of_another_genesis_is_refused(tmp_path: Path) -> None:
    """A data directory made by an earlier header version (another genesis) stops the node with
    one clear line instead of a chain no block connects to."""
    chain = open_chain(tmp_path / "n")
    chain.store.db.put(HEIGHT + (0).to_bytes(8, "big"), b"\x05" * 32)
    chain.close()
    with pytest.raises(CorruptLedger, match="another genesis"):
        open_chain(tmp_path / "n")
