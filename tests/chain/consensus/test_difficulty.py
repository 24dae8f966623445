"""ASERT: on schedule the target holds; fast blocks raise difficulty, slow ones lower it,
exactly doubling per half-life; the compact form and the pow limit bound it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chain.consensus.difficulty import asert_target
from chain.core.params import MAIN

LIMIT = MAIN.pow_limit
ANCHOR = LIMIT >> 8
SPACING, HALFLIFE = 120, 2 * 24 * 3600


def target(parent_time: int, parent_height: int) -> int:
    return asert_target(ANCHOR, 0, 0, SPACING, HALFLIFE, LIMIT, parent_time, parent_height)


def test_on_schedule_keeps_the_anchor() -> None:
    for height in (0, 1, 100, 10_000):
        assert target(SPACING * (height + 1), height) == ANCHOR


def test_one_halflife_behind_doubles_and_ahead_halves() -> None:
    h = 500
    on_time = SPACING * (h + 1)
    assert target(on_time + HALFLIFE, h) == 2 * ANCHOR
    assert target(on_time - HALFLIFE, h) == ANCHOR // 2


@given(st.integers(0, 100_000), st.integers(-10**7, 10**7))
def test_monotone_in_time_and_bounded(height: int, skew: int) -> None:
    t = SPACING * (height + 1) + skew
    a, b = target(t, height), target(t + 600, height)
    assert 1 <= a <= b <= LIMIT


def test_chain_retargets_from_genesis() -> None:
    from chain.consensus.validation import expected_bits

    genesis = MAIN.genesis.header
    assert expected_bits(MAIN, genesis, 0) == genesis.bits  # first block on schedule
