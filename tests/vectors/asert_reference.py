"""A line-by-line Python transcription of the aserti3-2d reference (Bitcoin Cash Node's
``CalculateASERT`` in ``src/pow.cpp`` and ``arith_uint256``'s compact codec), kept beside the
tests as the oracle the project's ``chain.consensus.difficulty`` is checked against.

It keeps the C++ semantics that Python does not give for free: signed 64-bit division truncates
toward zero, ``>>`` on the signed exponent is arithmetic, ``uint16_t(exponent)`` keeps the low 16
bits, the factor is computed in unsigned 64 bits, and the target lives in a fixed-width unsigned
integer whose left shift is checked for lost bits (then the result is the pow limit). The
reference uses 256 bits and asserts ``powLimit >> 224 == 0``; the project's pow limit is
``0xffff << 224``, so its vectors are computed here with ``width=512`` (any width >= 257 gives
the same results, see ``docs/consensus.md``).

Run ``python -m tests.vectors.asert_reference`` from the repository root to rewrite
``blockcoin_asert.json``, the project's own vectors.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MASK64 = (1 << 64) - 1


def c_div(a: int, b: int) -> int:
    """C++ ``a / b`` on signed integers: the quotient truncated toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def set_compact(bits: int) -> int:
    """``arith_uint256::SetCompact`` for the non-negative, non-overflowing forms used here."""
    size = bits >> 24
    word = bits & 0x007FFFFF
    assert not bits & 0x00800000, "negative compact"
    return word >> 8 * (3 - size) if size <= 3 else word << 8 * (size - 3)


def get_compact(target: int) -> int:
    """``arith_uint256::GetCompact`` for a non-negative target."""
    size = (target.bit_length() + 7) // 8
    compact = (target << 8 * (3 - size)) if size <= 3 else (target >> 8 * (size - 3))
    compact &= MASK64
    if compact & 0x00800000:
        compact >>= 8
        size += 1
    assert compact & ~0x007FFFFF == 0
    return compact | size << 24


def calculate_asert(
    ref_target: int,
    pow_target_spacing: int,
    time_diff: int,
    height_diff: int,
    pow_limit: int,
    half_life: int,
    width: int = 256,
) -> int:
    """``CalculateASERT(refTarget, nPowTargetSpacing, nTimeDiff, nHeightDiff, powLimit, nHalfLife)``."""
    mask = (1 << width) - 1
    assert 0 < ref_target <= pow_limit
    if width == 256:
        assert pow_limit >> 224 == 0  # the reference's own requirement
    assert pow_limit * 131071 >> width == 0  # so that ref_target * factor fits in `width` bits
    assert height_diff >= 0
    assert abs(time_diff - pow_target_spacing * height_diff) < (1 << (63 - 16))

    numerator = (time_diff - pow_target_spacing * (height_diff + 1)) * 65536
    assert INT64_MIN <= numerator <= INT64_MAX
    exponent = c_div(numerator, half_life)

    shifts = exponent >> 16
    frac = exponent & 0xFFFF
    assert exponent == shifts * 65536 + frac

    factor = 65536 + (((
        195766423245049 * frac
        + 971821376 * frac * frac
        + 5127 * frac * frac * frac
        + (1 << 47)
    ) & MASK64) >> 48)
    next_target = (ref_target * factor) & mask

    shifts -= 16
    if shifts <= 0:
        next_target >>= -shifts
    else:
        shifted = (next_target << shifts) & mask if shifts < width else 0
        next_target = pow_limit if shifted >> shifts != next_target else shifted

    if next_target == 0:
        next_target = 1
    elif next_target > pow_limit:
        next_target = pow_limit
    return next_target


# The project's own vectors: main and test network parameters, the genesis anchor (target
# 0x1f00ffff, anchor parent time = genesis time - spacing, height 0) and other anchors, with
# parents on schedule, early, late, and far enough off to clamp at the pow limit and at 1.
VECTORS_FILE = Path(__file__).with_name("blockcoin_asert.json")
PROJECT_POW_LIMIT_BITS = 0x1F00FFFF
NETWORKS = {"main": (120, 2 * 24 * 3600), "test": (120, 3600)}
ANCHOR_BITS = (0x1F00FFFF, 0x1D00FFFF, 0x18023456, 0x04123456, 0x01010000)
# (time_diff, height_diff) pairs relative to the anchor; time_diff is measured from the anchor's
# parent, so (spacing * (h + 1), h) is exactly on schedule.
SKEWS = (0, 1, -1, 2, -2, 59, -59, 60, -60, 119, -119, 600, -600, 3599, -3600, 86399, -86400,
         172799, -172800, 172801, -172801, 10**6, -10**6, 10**7, -10**7)
HEIGHTS = (0, 1, 100, 4321, 2**20)


def project_cases(spacing: int, half_life: int) -> list[tuple[int, int, int]]:
    """(anchor_bits, time_diff, height_diff) inputs for one network's parameters."""
    cases = [(bits, spacing * (h + 1) + skew, h)
             for bits in ANCHOR_BITS for h in HEIGHTS for skew in SKEWS]
    limit = set_compact(PROJECT_POW_LIMIT_BITS)
    for bits in (PROJECT_POW_LIMIT_BITS, 0x01010000, 0x18023456):
        # far behind schedule (clamps at the pow limit) and far ahead (clamps at 1)
        cases.append((bits, 400 * half_life, 0))
        cases.append((bits, 0, 300 * half_life // spacing))
        cases.append((bits, 2**32 - 1, 0))
        cases.append((bits, -(2**31), 2**31))
    assert all(0 < set_compact(b) <= limit for b, _, _ in cases)
    return cases


def build_project_vectors() -> dict[str, Any]:
    limit = set_compact(PROJECT_POW_LIMIT_BITS)
    networks: dict[str, Any] = {}
    for name, (spacing, half_life) in NETWORKS.items():
        rows = []
        for bits, time_diff, height_diff in project_cases(spacing, half_life):
            target = calculate_asert(set_compact(bits), spacing, time_diff, height_diff, limit,
                                     half_life, width=512)
            rows.append([f"{bits:#010x}", time_diff, height_diff, f"{target:#x}",
                         f"{get_compact(target):#010x}"])
        networks[name] = {"spacing": spacing, "half_life": half_life, "vectors": rows}
    return {
        "about": "aserti3-2d vectors for the project's parameters, computed by "
                 "tests/vectors/asert_reference.py (calculate_asert, width=512). Each row: "
                 "anchor bits, time diff (parent time - anchor parent time), height diff "
                 "(parent height - anchor height), expected target, expected bits.",
        "pow_limit_bits": f"{PROJECT_POW_LIMIT_BITS:#010x}",
        "networks": networks,
    }


def dump(vectors: dict[str, Any]) -> str:
    """JSON with one vector per line, so a diff shows which vectors changed."""
    text = json.dumps(vectors, indent=1)
    return re.sub(r"\[\s+([^][]*?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]",
                  text) + "\n"


if __name__ == "__main__":
    VECTORS_FILE.write_text(dump(build_project_vectors()))
