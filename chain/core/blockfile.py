"""Blocks files: each block as a varint length and its canonical bytes, in chain order.

What ``blockcoin export`` writes and ``blockcoin import`` reads (and the benchmarks and the crash
test use), kept apart from the command line so that readers need not import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from chain.core.block import Block
from chain.core.encoding import Reader, encode_varint


def write_blocks(path: Path, blocks: Iterator[Block]) -> int:
    """A blocks file: each block as a varint length and its bytes."""
    count = 0
    with path.open("wb") as fh:
        for block in blocks:
            raw = block.encode()
            fh.write(encode_varint(len(raw)) + raw)
            count += 1
    return count


def read_blocks(path: Path) -> Iterator[Block]:
    data = path.read_bytes()
    r = Reader(data)
    while r.remaining:
        yield Block.decode(r.var_bytes(1 << 26))
