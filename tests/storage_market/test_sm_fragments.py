"""zfec fragments: any k of n decode to exactly the input, and each lost fragment rebuilds."""

from __future__ import annotations

import itertools
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage_market.errors import FragmentError, IntegrityError, NotEnoughFragments
from storage_market.fragments import (
    decode,
    decode_contiguous,
    encode,
    fragment_size,
    parity,
    rebuild,
    split,
)

SIZES = [0, 1, 2, 3, 4, 5, 1023, 1024, 1025, 3 * 1024, 3 * 1024 - 1, 100_003]


@pytest.mark.parametrize("size", SIZES)
def test_every_3_of_5_combination_decodes(size: int) -> None:
    data = os.urandom(size)
    frags = encode(data)
    assert len(frags) == 5
    assert {len(f) for f in frags} == {fragment_size(size)}
    for combo in itertools.combinations(range(5), 3):
        assert decode({i: frags[i] for i in combo}) == data
    assert decode({i: frags[i] for i in range(5)}) == data  # more than k is fine


@pytest.mark.parametrize("size", SIZES)
def test_rebuild_each_missing_index(size: int) -> None:
    data = os.urandom(size)
    frags = encode(data)
    for missing in range(5):
        others = [i for i in range(5) if i != missing]
        for combo in itertools.combinations(others, 3):
            assert rebuild({i: frags[i] for i in combo}, missing) == bytes(frags[missing])
    # A stale copy under the missing index is ignored, not trusted.
    stale = {i: bytes(f) for i, f in enumerate(frags)}
    stale[4] = bytes(len(frags[4]))
    assert rebuild(stale, 4) == bytes(frags[4])


@settings(max_examples=40, deadline=None)
@given(
    st.binary(max_size=2000),
    st.integers(1, 6).flatmap(lambda k: st.tuples(st.just(k), st.integers(k, k + 5))),
    st.randoms(use_true_random=False),
)
def test_round_trip_any_code(data: bytes, code: tuple[int, int], rnd: random.Random) -> None:
    k, n = code
    frags = encode(data, k, n)
    chosen = sorted(rnd.sample(range(n), k))
    assert decode({i: frags[i] for i in chosen}, k, n) == data


def test_encode_does_not_copy_full_primary_pieces() -> None:
    data = bytearray(os.urandom(3000))
    frags = encode(data)
    data[0] ^= 0xFF  # the first fragment is a view of the caller's buffer
    assert frags[0][0] == data[0]


def test_not_enough_fragments() -> None:
    frags = encode(os.urandom(100))
    with pytest.raises(NotEnoughFragments):
        decode({0: frags[0], 4: frags[4]})
    with pytest.raises(NotEnoughFragments):
        rebuild({0: frags[0], 1: frags[1], 2: frags[2]}, 2)  # only two others


def test_bad_fragment_sets() -> None:
    frags = encode(os.urandom(100))
    with pytest.raises(FragmentError):
        decode({0: frags[0], 1: frags[1], 5: frags[2]})
    with pytest.raises(FragmentError):
        decode({0: frags[0], 1: frags[1], 2: bytes(frags[2])[:-1]})
    with pytest.raises(FragmentError):
        decode({0: b"", 1: b"", 2: b""})
    with pytest.raises(FragmentError):
        encode(b"x", 4, 3)
    with pytest.raises(FragmentError):
        encode(b"x", 0, 3)
    with pytest.raises(FragmentError):
        encode(b"x", 3, 256)
    with pytest.raises(FragmentError):
        rebuild({i: f for i, f in enumerate(frags)}, 5)


def test_mixed_or_corrupt_fragments_fail_padding_check() -> None:
    frags = encode(os.urandom(299))  # 100-byte fragments, the marker ends the last piece
    zeroed: dict[int, bytes | memoryview] = {0: frags[0], 1: frags[1], 2: bytes(len(frags[2]))}
    with pytest.raises(IntegrityError):
        decode(zeroed)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_split_parity_and_contiguous_decode_match_encode(size: int, k: int) -> None:
    data = os.urandom(size)
    want = encode(data, k, k + 2)
    pieces = split(data, k)
    assert [bytes(p) for p in pieces] == [bytes(f) for f in want[:k]]
    assert bytes(parity(pieces, k, k + 2)[1]) == bytes(want[k + 1])
    # each parity fragment alone (how a put computes them side by side) is the same
    assert [bytes(parity(pieces, k, k + 2, (i,))[0]) for i in (k, k + 1)] == [
        bytes(f) for f in want[k:]]
    with pytest.raises(FragmentError):
        parity(pieces, k, k + 2, (k - 1,))  # a data fragment is not parity
    whole = bytearray(b"".join(bytes(p) for p in pieces))
    assert bytes(decode_contiguous(whole, k)) == data


def test_contiguous_decode_refuses_bad_padding() -> None:
    with pytest.raises(IntegrityError):
        decode_contiguous(bytearray(b"abcdef"), 3)
    with pytest.raises(FragmentError):
        decode_contiguous(bytearray(b"abcde"), 3)
