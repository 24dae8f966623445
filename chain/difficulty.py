"""ASERT difficulty (aserti3-2d): each block's target follows an exponential schedule
anchored at genesis, in integer arithmetic only, so every node computes the same bits.

target = anchor_target * 2^((time_delta - spacing * (height_delta + 1)) / halflife), with the
fractional power approximated by the aserti3-2d cubic over 16 fractional bits.
"""

from __future__ import annotations

from chain.header import target_to_compact

RBITS = 16
RADIX = 1 << RBITS


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
    """The target the block after ``parent`` must meet; see the module docstring."""
    time_delta = parent_time - anchor_parent_time
    height_delta = parent_height - anchor_height
    exponent = ((time_delta - spacing * (height_delta + 1)) * RADIX) // halflife
    shifts = exponent >> RBITS
    frac = exponent - shifts * RADIX
    factor = ((195766423245049 * frac + 971821376 * frac**2 + 5127 * frac**3 + (1 << 47)) >> 48) + RADIX
    target = anchor_target * factor
    target = target << shifts if shifts >= 0 else target >> -shifts
    target >>= RBITS
    if target == 0:
        return 1
    return min(target, pow_limit)


def asert_bits(*args: int) -> int:
    return target_to_compact(asert_target(*args))
