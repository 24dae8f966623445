"""Fragments coded from a record on disk a stripe at a time are the in-memory code's, bit for
bit, and are served from the files as they are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage_market import fragments, striping
from storage_market.errors import FragmentError
from storage_market.merkle import merkle_root
from storage_market.striping import RecordFragments


def _coded(tmp_path: Path, data: bytes, k: int, n: int,
           stripe: int = striping.STRIPE) -> RecordFragments:
    record = tmp_path / "record"
    record.write_bytes(data)
    fd = os.open(record, os.O_RDONLY)
    try:
        return RecordFragments(fd, len(data), k, n, tmp_path / "parity", "block", stripe)
    finally:
        os.close(fd)  # the coder keeps its own descriptor


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 5000), kn=st.sampled_from([(1, 1), (1, 3), (3, 5), (4, 7), (10, 12)]),
       leaf=st.sampled_from([64, 256, 1024]))
def test_stripes_match_the_whole_code(tmp_path_factory: pytest.TempPathFactory, size: int,
                                      kn: tuple[int, int], leaf: int) -> None:
    """Small stripes (a few leaves) so that every edge is crossed: the padding in the last
    stripe, in a tiny last fragment, across fragments."""
    k, n = kn
    tmp = tmp_path_factory.mktemp("stripes")
    data = os.urandom(size)
    want = fragments.encode(data, k, n)
    with _coded(tmp, data, k, n, 2 * leaf) as coded:
        roots = coded.encode(range(n), leaf)
        assert coded.size == want[0].nbytes
        for i in range(n):
            assert roots[i] == merkle_root(want[i], leaf)
            assert b"".join(bytes(p) for p in coded.parts(i)) == bytes(want[i])


def test_a_large_record_in_many_stripes_with_progress(tmp_path: Path) -> None:
    data = os.urandom(3 * striping.STRIPE + 12_345)  # four stripes per fragment with k=1
    want = fragments.encode(data, 1, 3)
    seen: list[tuple[int, int]] = []
    with _coded(tmp_path, data, 1, 3) as coded:
        roots = coded.encode(range(3), 1024, lambda done, total: seen.append((done, total)))
        assert [roots[i] for i in range(3)] == [merkle_root(f, 1024) for f in want]
        assert bytes(coded.parts(2)[0]) == bytes(want[2])
    assert sorted(seen)[-1] == (3 * len(want[0]), 3 * len(want[0])) and len(seen) == 4


def test_one_fragment_alone_and_the_parity_files(tmp_path: Path) -> None:
    """Serving one fragment again codes only that one; parity files go when asked, and a
    fragment not coded yet is refused."""
    data = os.urandom(50_000)
    want = fragments.encode(data, 3, 5)
    with _coded(tmp_path, data, 3, 5) as coded:
        with pytest.raises(FragmentError):
            coded.parts(4)
        assert coded.encode([4], 1024) == {4: merkle_root(want[4], 1024)}
        assert sorted(p.name for p in (tmp_path / "parity").iterdir()) == ["block.4"]
        assert bytes(coded.parts(4)[0]) == bytes(want[4])
        coded.remove_parity()
        assert not list((tmp_path / "parity").iterdir())
        with pytest.raises(FragmentError):
            coded.parts(4)
        assert coded.encode([0], 1024) == {0: merkle_root(want[0], 1024)}
        assert b"".join(bytes(p) for p in coded.parts(0)) == bytes(want[0])


def test_indexes_outside_the_code_are_refused(tmp_path: Path) -> None:
    with _coded(tmp_path, b"x" * 100, 3, 5) as coded, pytest.raises(FragmentError):
        coded.encode([5], 1024)


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 3000), data=st.data())
def test_any_k_fragments_recover_the_record_in_place(size: int, data: st.DataObject) -> None:
    k, n = 3, 6
    record = os.urandom(size)
    frags = fragments.encode(record, k, n)
    have = data.draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k, unique=True))
    fsize = frags[0].nbytes
    slots = memoryview(bytearray(n * fsize))
    for i in have:
        slots[i * fsize : (i + 1) * fsize] = frags[i]
    padded = striping.recover_in_place(slots, have, k, n, stripe=64)
    assert bytes(fragments.decode_contiguous(padded, k)) == record
    with pytest.raises(FragmentError):
        striping.recover_in_place(slots, have[:2], k, n)
