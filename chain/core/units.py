"""Amounts and sizes as people write and read them: the one parser and formatter of each.

Amounts: the chain counts base units, 10^8 to a coin. People type coins (``1.5``) or, where
a price is tiny, base units with a ``sat`` suffix (``150sat``); they read coins. Sizes: people
type ``512M``, ``2GiB``, ``1.5G`` or a byte count (powers of 1024 throughout) and read
``300 MiB``. Human output uses :func:`format_coins` and :func:`format_size` only; JSON keeps
the exact integers (base units, bytes).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from chain.core.errors import BlockcoinError

COIN = 10**8
"""Base units in one coin."""


class AmountError(BlockcoinError):
    code = "amount"


class SizeError(BlockcoinError):
    code = "size"


def parse_amount(text: str, *, allow_zero: bool = False) -> int:
    """Coins as a decimal with at most 8 places (``1.5``), or base units with a ``sat`` suffix."""
    text = text.strip()
    try:
        if text.endswith("sat"):
            value = int(text[:-3])
        else:
            dec = Decimal(text)
            if not dec.is_finite():
                raise InvalidOperation
            scaled = dec * COIN
            if scaled != scaled.to_integral_value():
                raise AmountError(f"at most 8 decimal places: {text}")
            value = int(scaled)
    except (InvalidOperation, ValueError):
        raise AmountError(
            f"not an amount: {text!r} (coins like 1.5, or base units like 150sat)") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise AmountError(f"an amount is {'not negative' if allow_zero else 'positive'}: {text}")
    return value


def format_coins(base_units: int) -> str:
    """``150000000`` -> ``1.5 coins``; exact (no rounding), trailing zeros dropped."""
    sign = "-" if base_units < 0 else ""
    whole, frac = divmod(abs(base_units), COIN)
    digits = f"{frac:08d}".rstrip("0")
    number = f"{whole:,}" + (f".{digits}" if digits else "")
    return f"{sign}{number} {'coin' if abs(base_units) == COIN else 'coins'}"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB")


def parse_size(text: str) -> int:
    """``500M``, ``2GiB``, ``1.5G`` or a plain byte count, in powers of 1024."""
    m = _SIZE.match(text)
    if not m:
        raise SizeError(f"not a size: {text!r} (e.g. 512M, 2G)")
    scale = 1 << (10 * " kmgt".index(m.group(2).lower() or " "))
    return int(Decimal(m.group(1)) * scale)


def format_size(nbytes: int) -> str:
    """``314572800`` -> ``300 MiB``; three significant digits at most past the unit."""
    value = float(nbytes)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            if unit == "bytes":
                return f"{nbytes} {'byte' if nbytes == 1 else 'bytes'}"
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
