"""Blockcoin's proof-of-work miner.

Finds a nonce for a 116-byte block header (the nonce is its last 8 bytes, a
u64 little-endian) such that ``int.from_bytes(sha256d(header), "little") <=
target``.  The hashing runs in numba-compiled, SIMD-vectorized kernels on all
cores; the chain gives the miner opaque header bytes and a target and gets a
solved header back, so this package imports nothing from the rest of the
project (only numba, numpy and the standard library).

Typical use::

    miner = Miner()                      # threads default to all CPUs
    result = miner.search(header, target, should_stop=tip_changed.is_set)
    if result is None and miner.last_search.exhausted:
        ...  # roll time / extra nonce, then search again

or ``Miner.run`` in a thread with ``Miner.update_template`` for continuous
mining.  ``miner.kernels`` has the low-level scan kernels.
"""

from miner.errors import MinerError
from miner.kernels import HEADER_LEN, MAX_NONCE, NONCE_OFFSET
from miner.miner import Miner, MineResult, SearchStats

__all__ = [
    "HEADER_LEN",
    "MAX_NONCE",
    "NONCE_OFFSET",
    "MineResult",
    "Miner",
    "MinerError",
    "SearchStats",
]
