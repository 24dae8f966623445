"""Block headers and compact targets.

A header is a fixed 116-byte layout with the 64-bit nonce last, so a miner hashes the first
64 bytes once per template (the midstate) and then pays two SHA-256 compressions per nonce
for the first hash and one for the second. Integers are little-endian and the block hash is
read as a little-endian 256-bit number, as in Bitcoin: its most significant word is the last
word of the digest, which a miner can compute first.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, replace

from chain.core.errors import DecodeError

HEADER_SIZE = 116
_LAYOUT = struct.Struct("<I32s32s32sIIQ")
assert _LAYOUT.size == HEADER_SIZE


def compact_to_target(bits: int) -> int:
    """Decode Bitcoin's compact form; negative or overflowing forms raise DecodeError."""
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    if bits & 0x00800000:
        raise DecodeError("negative compact target")
    shift = 8 * (exponent - 3)
    target = mantissa << shift if shift >= 0 else mantissa >> -shift
    if target >= 1 << 256:
        raise DecodeError("compact target overflows 256 bits")
    return target


def target_to_compact(target: int) -> int:
    """Encode a target in compact form, rounding down as Bitcoin does."""
    if target <= 0:
        return 0
    size = (target.bit_length() + 7) // 8
    shift = 8 * (size - 3)
    mantissa = target >> shift if shift >= 0 else target << -shift
    if mantissa & 0x00800000:
        mantissa >>= 8
        size += 1
    return (size << 24) | mantissa


def work_of(target: int) -> int:
    """Expected hashes to meet ``target``: the unit of cumulative work for fork choice."""
    return (1 << 256) // (target + 1)


def hash_to_int(block_hash: bytes) -> int:
    return int.from_bytes(block_hash, "little")


def hash_hex(block_hash: bytes) -> str:
    """Display form: the hash as a big-endian number, so work shows as leading zeros."""
    return block_hash[::-1].hex()


def hash_from_hex(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise DecodeError(f"not a hex block hash: {text[:20]!r}") from exc
    if len(raw) != 32:
        raise DecodeError("a block hash is 32 bytes (64 hex digits)")
    return raw[::-1]


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    prev: bytes
    events_root: bytes
    state_root: bytes
    time: int
    bits: int
    nonce: int

    def encode(self) -> bytes:
        return _LAYOUT.pack(self.version, self.prev, self.events_root, self.state_root,
                            self.time, self.bits, self.nonce)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        if len(data) != HEADER_SIZE:
            raise DecodeError(f"a header is {HEADER_SIZE} bytes, got {len(data)}")
        return cls(*_LAYOUT.unpack(data))

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(hashlib.sha256(self.encode()).digest()).digest()

    @property
    def target(self) -> int:
        return compact_to_target(self.bits)

    def with_nonce(self, nonce: int) -> Header:
        return replace(self, nonce=nonce)
