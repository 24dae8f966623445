"""Data fragments' leaves hashed while the record is sealed give exactly the fragments' roots."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from chain.core.keys import KeyPair
from storage_market import fragments
from storage_market.blockstore import StoredBlock
from storage_market.crypto import SEAL_PIECE, new_block_key
from storage_market.leafhash import DataLeaves
from storage_market.merkle import merkle_root

OWNER = KeyPair.development(211)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 40_000),
    k=st.integers(1, 5),
    leaf=st.sampled_from([64, 128, 1024]),
    cuts=st.lists(st.integers(0, 40_000), max_size=8),
)
def test_roots_match_whatever_the_seal_reports_and_when(size: int, k: int, leaf: int,
                                                        cuts: list[int]) -> None:
    buffer = bytearray(os.urandom(size)) + bytearray(k)  # room for the padding
    record = memoryview(buffer)[:size]
    with DataLeaves(k, leaf) as leaves:
        for final in sorted(min(c, size) for c in cuts) + [size]:
            leaves.advance(record, final)
        # written after the seal: the padding of the last fragment
        primaries = fragments.split_in_place(buffer, size, k)
        assert primaries is not None
        assert leaves.finish(primaries) == [merkle_root(f, leaf) for f in primaries]


def test_never_advanced_hashes_everything_at_the_end() -> None:
    data = bytearray(os.urandom(10_000)) + bytearray(3)
    primaries = fragments.split_in_place(data, 10_000, 3)
    assert primaries is not None
    with DataLeaves(3, 1024) as leaves:
        assert leaves.finish(primaries) == [merkle_root(f, 1024) for f in primaries]


def test_a_sealed_file_hashed_during_its_seal() -> None:
    """The real thing: a payload big enough to be sealed in pieces."""
    plaintext = os.urandom(2 * SEAL_PIECE + 12_345)
    with DataLeaves(3, 1024) as leaves:
        block = StoredBlock.seal(OWNER.principal.root_path, plaintext, new_block_key(),
                                 readers=[OWNER.public], room=3, on_sealed=leaves.advance)
        primaries = fragments.split_in_place(block.buffer, block.record.nbytes, 3)
        assert primaries is not None
        assert leaves.finish(primaries) == [merkle_root(f, 1024) for f in primaries]
