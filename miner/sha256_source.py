"""Plain-Python SHA-256 compression, for what hashlib cannot give us.

hashlib hides SHA-256's internal state, but the scan kernels start from the
state after the header's first 64 bytes (the midstate), and the code generator
folds constants with the same functions.  Speed is irrelevant here: this runs
once per template.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

MASK = 0xFFFFFFFF

K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)

IV = (
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
)


def rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & MASK


def big_s0(x: int) -> int:
    return rotr(x, 2) ^ rotr(x, 13) ^ rotr(x, 22)


def big_s1(x: int) -> int:
    return rotr(x, 6) ^ rotr(x, 11) ^ rotr(x, 25)


def small_s0(x: int) -> int:
    return rotr(x, 7) ^ rotr(x, 18) ^ (x >> 3)


def small_s1(x: int) -> int:
    return rotr(x, 17) ^ rotr(x, 19) ^ (x >> 10)


def ch(e: int, f: int, g: int) -> int:
    return g ^ (e & (f ^ g))


def maj(a: int, b: int, c: int) -> int:
    return (a & b) | (c & (a | b))


def compress(state: tuple[int, ...] | list[int], block: bytes) -> list[int]:
    """One SHA-256 compression of a 64-byte block into ``state``."""
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        w.append((small_s1(w[t - 2]) + w[t - 7] + small_s0(w[t - 15]) + w[t - 16]) & MASK)
    a, b, c, d, e, f, g, h = state
    for t in range(64):
        t1 = (h + big_s1(e) + ch(e, f, g) + K[t] + w[t]) & MASK
        t2 = (big_s0(a) + maj(a, b, c)) & MASK
        a, b, c, d, e, f, g, h = (t1 + t2) & MASK, a, b, c, (d + t1) & MASK, e, f, g
    return [(x + y) & MASK for x, y in zip(state, (a, b, c, d, e, f, g, h), strict=True)]


# The scalar SHA-256 helpers as numba source, for the code generators that emit unrolled
# kernels (the nonce scan here, the Merkle hashing of the storage market): one text, so the
# two generated modules cannot drift apart. numba types each helper once and LLVM inlines it;
# numba widens integer arithmetic to 64 bits, so every result is truncated back with u32().
NUMBA_HELPERS = '''\
@njit
def rotr(x, n):
    return u32((x >> n) | (x << (32 - n)))


@njit
def bsig0(x):
    return u32(rotr(x, 2) ^ rotr(x, 13) ^ rotr(x, 22))


@njit
def bsig1(x):
    return u32(rotr(x, 6) ^ rotr(x, 11) ^ rotr(x, 25))


@njit
def ssig0(x):
    return u32(rotr(x, 7) ^ rotr(x, 18) ^ (x >> 3))


@njit
def ssig1(x):
    return u32(rotr(x, 17) ^ rotr(x, 19) ^ (x >> 10))


@njit
def ch(e, f, g):
    return u32(g ^ (e & (f ^ g)))


@njit
def maj(a, b, c):
    return u32((a & b) | (c & (a | b)))


@njit
def add2(a, b):
    return u32(a + b)


@njit
def add3(a, b, c):
    return u32(a + b + c)


@njit
def add4(a, b, c, d):
    return u32(a + b + c + d)


@njit
def add5(a, b, c, d, e):
    return u32(a + b + c + d + e)


@njit
def add6(a, b, c, d, e, f):
    return u32(a + b + c + d + e + f)


@njit
def bswap(x):
    return u32(((x & 0xFF) << 24) | ((x & 0xFF00) << 8) | ((x >> 8) & 0xFF00) | (x >> 24))
'''


def generator_main(output: Path, generate: Callable[[], str], argv: list[str]) -> int:
    """A kernel generator's command line: write ``output``, or with ``--check`` exit 1 if the
    committed file differs from what the generator makes now."""
    text = generate()
    if argv[1:] == ["--check"]:
        return 0 if output.read_text() == text else 1
    output.write_text(text)
    return 0
