"""ASERT difficulty (aserti3-2d): each block's target follows an exponential schedule
anchored at genesis, in integer arithmetic only, so every node computes the same bits.

target = anchor_target * 2^((time_delta - spacing * (height_delta + 1)) / halflife), with the
exponent in 16.16 fixed point (the division truncated toward zero, as the reference's signed
64-bit division does) and the fractional power approximated by the aserti3-2d cubic.
``docs/consensus.md`` states the rule and the bounds of its arithmetic.
"""

from __future__ import annotations

from chain.core.header import target_to_compact

RBITS = 16
RADIX = 1 << RBITS


def _div_toward_zero(numerator: int, divisor: int) -> int:
    """Integer division truncated toward zero (C's ``/``); Python's ``//`` floors, which differs
    for a negative numerator (a parent ahead of schedule) that the divisor does not divide."""
    quotient = abs(numerator) // divisor
    return quotient if numerator >= 0 else -quotient


def asert_target(
    anchor_target: int,
    anchor_parent_time: int,
    anchor_height: int,
    spacing: int,
    halflife: int,
    pow_limit: int,
    parent_time: int,
    parent_height: int,
) -> int:
    """The target the block after ``parent`` must meet; see the module docstring.

    Expects ``0 < anchor_target <= pow_limit``, ``parent_height >= anchor_height`` and
    ``halflife > 0``. Python integers are unbounded, so the product and shift below never wrap.
    """
    time_delta = parent_time - anchor_parent_time
    height_delta = parent_height - anchor_height
    exponent = _div_toward_zero((time_delta - spacing * (height_delta + 1)) * RADIX, halflife)
    shifts = exponent >> RBITS  # floors: the fraction below is always in [0, 1)
    frac = exponent - shifts * RADIX
    factor = ((195766423245049 * frac + 971821376 * frac**2 + 5127 * frac**3 + (1 << 47)) >> 48) + RADIX
    target = anchor_target * factor
    shifts -= RBITS  # multiply by 2^shifts and drop the factor's 16 fractional bits in one shift
    target = target << shifts if shifts >= 0 else target >> -shifts
    if target == 0:
        return 1
    return min(target, pow_limit)


def asert_bits(*args: int) -> int:
    """``asert_target`` in compact form, as a header carries it."""
    return target_to_compact(asert_target(*args))
