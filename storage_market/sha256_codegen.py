"""Generator for ``storage_market/_sha256_gen.py``, the multi-buffer SHA-256 kernel of the
Merkle trees.

Why: a fragment's tree hashes ~22 000 one-KiB leaves and as many inner nodes. With hashlib
each hash is a Python call (about a microsecond of overhead for a microsecond of hashing) and,
below 2 KiB, holds the GIL, so tree building serialises everything else a node does. A numba
kernel that hashes 16 messages side by side (one 512-bit vector per SHA-256 variable on
AVX-512, two 256-bit ones on AVX2) runs without the GIL at several GB/s per core.

How: LLVM only vectorizes the loop over lanes when its body is straight-line scalar code, so
this module writes the 64 unrolled rounds of one compression (twice: a generic block whose 16
words come from memory, and the final padding block whose words are mostly constants, folded
here). Every message has the Merkle shape ``prefix byte || 64*k bytes`` (a leaf: ``0x00 ||
leaf``; an inner node: ``0x01 || left || right``), so message word ``j`` of a block is
``(x[j-1] << 24) | (x[j] >> 8)`` over the big-endian words ``x`` of the data, with the prefix
byte standing in for ``x[-1]`` of the first block, and the last block is always ``x[last] <<
24 | 0x00800000``, zeros, and the bit length.

The output is committed (numba's on-disk cache needs a real source file) and a test checks it is
up to date. Regenerate with ``python -m storage_market.sha256_codegen``.
"""

from __future__ import annotations

import sys
from pathlib import Path

MASK = 0xFFFFFFFF
IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB,
      0x5BE0CD19)
K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4,
    0xAB1C5ED5, 0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE,
    0x9BDC06A7, 0xC19BF174, 0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F,
    0x4A7484AA, 0x5CB0A9DC, 0x76F988DA, 0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7,
    0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967, 0x27B70A85, 0x2E1B2138, 0x4D2C6DFC,
    0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85, 0xA2BFE8A1, 0xA81A664B,
    0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070, 0x19A4C116,
    0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7,
    0xC67178F2,
)


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & MASK


def _ssig0(x: int) -> int:
    return _rotr(x, 7) ^ _rotr(x, 18) ^ (x >> 3)


def _ssig1(x: int) -> int:
    return _rotr(x, 17) ^ _rotr(x, 19) ^ (x >> 10)


class Emitter:
    """Straight-line code over values that are either literals (folded here) or names."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.lines: list[str] = []

    def name(self, expr: str, hint: str) -> str:
        var = f"{self.tag}{hint}"
        self.lines.append(f"{var} = {expr}")
        return var

    def add(self, terms: list[int | str], hint: str) -> int | str:
        lits = sum(t for t in terms if isinstance(t, int)) & MASK
        names = [t for t in terms if isinstance(t, str)]
        if not names:
            return lits
        args = names + ([f"u32({lits:#010x})"] if lits else [])
        if len(args) == 1:
            return args[0]
        return self.name(f"add{len(args)}({', '.join(args)})", hint)

    def small(self, fn: str, x: int | str, hint: str) -> int | str:
        if isinstance(x, int):
            return _ssig0(x) if fn == "ssig0" else _ssig1(x)
        return self.name(f"{fn}({x})", hint)


def compress(em: Emitter, w: list[int | str]) -> None:
    """The 64 rounds over words ``w`` from state ``s0..s7``, adding the result into it."""
    for t in range(16, 64):
        s1 = em.small("ssig1", w[t - 2], f"s1_{t}")
        s0 = em.small("ssig0", w[t - 15], f"s0_{t}")
        w.append(em.add([s1, w[t - 7], s0, w[t - 16]], f"w{t}"))
    a, b, c, d, e, f, g, h = (f"s{i}" for i in range(8))
    for t in range(64):
        t1 = em.add([h, f"bsig1({e})", f"ch({e}, {f}, {g})", K[t], w[t]], f"t1_{t}")
        new_e = em.add([d, t1], f"e{t}")
        new_a = em.name(f"add3({t1}, bsig0({a}), maj({a}, {b}, {c}))", f"a{t}")
        a, b, c, d, e, f, g, h = new_a, a, b, c, str(new_e), e, f, g
    for i, v in enumerate((a, b, c, d, e, f, g, h)):
        em.lines.append(f"s{i} = add2(s{i}, {v})")


def _body_generic() -> list[str]:
    em = Emitter("v")
    em.lines.append("x0 = bswap(buf[LANES + lane])")
    words: list[int | str] = [em.name("u32((prev << 24) | (x0 >> 8))", "m0")]
    for j in range(1, 16):
        em.lines.append(f"x{j} = bswap(buf[{j + 1} * LANES + lane])")
        words.append(em.name(f"u32((x{j - 1} << 24) | (x{j} >> 8))", f"m{j}"))
    compress(em, words)
    return em.lines


def _body_last() -> list[str]:
    em = Emitter("z")
    words: list[int | str] = [em.name("u32((prev << 24) | 0x00800000)", "m0")]
    words += [0] * 14
    words.append("bits")
    compress(em, words)
    return em.lines


HEADER = '''\
"""GENERATED by ``python -m storage_market.sha256_codegen`` -- do not edit by hand.

Multi-buffer SHA-256 of Merkle-shaped messages (``prefix byte || 64*k bytes``); see
``storage_market/sha256_codegen.py`` for how the code is derived and ``storage_market/sha256x.py``
for the calling convention.
"""

# ruff: noqa
# mypy: ignore-errors

import numpy as np
from numba import njit, types

u32 = np.uint32
LANES = 16
# One signature for every caller: read-only and possibly unaligned input (fragments are views
# at any byte offset of a sealed record), so one compiled kernel serves all.
_IN = types.Array(types.uint32, 1, "C", readonly=True, aligned=False)
_OUT = types.Array(types.uint32, 1, "C", aligned=False)
_SIG = types.void(_IN, types.int64, types.int64, types.int64, types.int64, _OUT)


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

KERNEL = '''

@njit(_SIG, cache=True, nogil=True, error_model="numpy")
def hash_x16(src, stride, nblocks, prefix, count, out):
    """SHA-256 of ``count`` messages, 16 side by side.

    Message ``i`` is the byte ``prefix`` followed by the ``64 * nblocks`` bytes of ``src``
    (a uint32 view of the bytes, so native-endian words) from word ``i * stride``. Digest ``i``
    goes to ``out[8*i : 8*i + 8]``, also as a uint32 view of the digest's bytes.

    Each block's words are first copied lane-major into ``buf`` (a scalar transpose): the
    vectorized loop then reads 16 consecutive words per load instead of gathering 16 words
    a leaf apart, which the vectorizer's cost model refuses.
    """
    st = np.empty(8 * LANES, dtype=np.uint32)
    buf = np.empty(17 * LANES, dtype=np.uint32)
    bits = u32((1 + 64 * nblocks) * 8)
    pfx = u32(prefix)
    last = count - 1
{iv_consts}
    for g in range(0, count, LANES):
        for lane in range(LANES):
{iv_init}
        for blk in range(nblocks):
            for lane in range(LANES):
                base = min(g + lane, last) * stride + blk * 16
                buf[lane] = bswap(src[base - 1]) if blk > 0 else pfx
                for j in range(16):
                    buf[(j + 1) * LANES + lane] = src[base + j]
            for lane in range(LANES):
                prev = buf[lane]
{load_state}
{body_generic}
{store_state}
        for lane in range(LANES):
            buf[lane] = bswap(src[min(g + lane, last) * stride + nblocks * 16 - 1])
        for lane in range(LANES):
            prev = buf[lane]
{load_last}
{body_last}
{store_state_last}
        for lane in range(min(LANES, count - g)):
            for k in range(8):
                out[(g + lane) * 8 + k] = bswap(st[k * LANES + lane])
'''


def _indent(lines: list[str], n: int) -> str:
    return "\n".join(" " * n + ln for ln in lines)


def generate() -> str:
    iv_consts = [f"iv{i} = u32({v:#010x})" for i, v in enumerate(IV)]
    iv_init = [f"st[{i} * LANES + lane] = iv{i}" for i in range(8)]
    load = [f"s{i} = st[{i} * LANES + lane]" for i in range(8)]
    store = [f"st[{i} * LANES + lane] = s{i}" for i in range(8)]
    kernel = KERNEL.format(
        iv_consts=_indent(iv_consts, 4),
        iv_init=_indent(iv_init, 12),
        load_state=_indent(load, 16),
        load_last=_indent(load, 12),
        body_generic=_indent(_body_generic(), 16),
        store_state=_indent(store, 16),
        body_last=_indent(_body_last(), 12),
        store_state_last=_indent(store, 12),
    )
    return HEADER + kernel


OUTPUT = Path(__file__).with_name("_sha256_gen.py")


def main(argv: list[str]) -> int:
    text = generate()
    if argv[1:] == ["--check"]:
        return 0 if OUTPUT.read_text() == text else 1
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
