"""Generator for ``miner/_kernels_gen.py``, the unrolled sha256d nonce-scan kernels.

Why generate code: LLVM only turns the nonce loop into SIMD code when the whole
sha256d is straight-line scalar code inside a short loop over lanes (one nonce
per lane).  Writing ~120 unrolled SHA-256 rounds by hand is unreadable and
error-prone, so this module writes them, while doing the constant folding a
Bitcoin-style miner does:

* values known when the code is generated (round constants, padding words, the
  second hash's IV) are folded into integer literals;
* values that depend only on the template and the high 32 bits of the nonce
  (midstate, block-2 words 0..10, rounds 0..10 of block 2, parts of the message
  schedule) are computed once per "segment" in a scalar prelude;
* only what depends on the low nonce word is computed per lane, and of the final
  state only H7 (whose byte-swap is the top 32 bits of the hash as a
  little-endian integer) is computed, three rounds early.

The output is committed (numba's on-disk cache needs a real source file) and a
test checks that it is up to date.  Regenerate with::

    python -m miner.codegen
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from miner.sha256_source import (
    IV,
    MASK,
    NUMBA_HELPERS,
    K,
    big_s0,
    big_s1,
    ch,
    generator_main,
    maj,
    small_s0,
    small_s1,
)

HEADER_LEN = 116


_PY_FUNCS: dict[str, Callable[..., int]] = {
    "S0": big_s0, "S1": big_s1, "s0": small_s0, "s1": small_s1, "ch": ch, "maj": maj,
}

# Names of the numba helpers (defined in HEADER below) for each function.
_HELPER = {"S0": "bsig0", "S1": "bsig1", "s0": "ssig0", "s1": "ssig1", "ch": "ch", "maj": "maj"}


def _func_src(fn: str, args: list[str]) -> str:
    # Calls to tiny helpers instead of inline expressions: numba types each
    # helper once, which cuts the kernel's compile time several-fold; LLVM
    # inlines them all before vectorizing.
    return f"{_HELPER[fn]}({', '.join(args)})"


def _add_src(terms: list[str]) -> str:
    return f"add{len(terms)}({', '.join(terms)})"


# --- symbolic values --------------------------------------------------------

LIT, SEG, LANE = 0, 1, 2  # known at generation time / per segment / per lane


@dataclass(frozen=True)
class Val:
    kind: int
    text: str  # a local name, or the literal as source text
    lit: int = 0  # the value, for LIT


def lit(v: int) -> Val:
    v &= MASK
    return Val(LIT, f"L{v:08X}", v)


class Emitter:
    """Collects the scalar per-segment prelude and the per-lane loop body."""

    def __init__(self) -> None:
        self.seg_lines: list[str] = []
        self.lane_lines: list[str] = []

    def _new(self, kind: int, expr: str, hint: str) -> Val:
        name = f"{'c' if kind == SEG else 'v'}_{hint}"
        (self.seg_lines if kind == SEG else self.lane_lines).append(f"{name} = {expr}")
        return Val(kind, name)

    def func(self, fn: str, args: list[Val], hint: str) -> Val:
        kind = max(a.kind for a in args)
        if kind == LIT:
            return lit(_PY_FUNCS[fn](*(a.lit for a in args)))
        return self._new(kind, _func_src(fn, [a.text for a in args]), hint)

    def add(self, args: list[Val], hint: str) -> Val:
        lits = [a for a in args if a.kind == LIT]
        segs = [a for a in args if a.kind == SEG]
        lanes = [a for a in args if a.kind == LANE]
        total = sum(a.lit for a in lits) & MASK
        const_terms: list[Val] = list(segs)
        if lits and (total or not (segs or lanes)):
            const_terms.append(lit(total))
        if not lanes:
            if not segs:
                return lit(total)
            if len(const_terms) == 1:
                return const_terms[0]
            return self._new(SEG, _add_src([a.text for a in const_terms]), hint)
        if len(const_terms) > 1:
            # Fold the constant part once per segment instead of once per lane.
            const = self._new(SEG, _add_src([a.text for a in const_terms]), hint + "k")
            const_terms = [const]
        terms = const_terms + lanes
        if len(terms) == 1:
            return terms[0]
        return self._new(LANE, _add_src([a.text for a in terms]), hint)


def compress(em: Emitter, state: list[Val], w: list[Val], tag: str, h7_only: bool) -> list[Val]:
    """Emit the 64 SHA-256 rounds over message words ``w`` (extended in place
    to the full schedule).  Returns the final working variables a..h (before
    adding the input state), or with ``h7_only`` just ``[h]``, which is known
    three rounds early."""
    a, b, c, d, e, f, g, h = state
    last = 60 if h7_only else 63
    for t in range(last + 1):
        if t >= 16 and len(w) <= t:
            s1 = em.func("s1", [w[t - 2]], f"{tag}s1_{t}")
            s0 = em.func("s0", [w[t - 15]], f"{tag}s0_{t}")
            w.append(em.add([s1, w[t - 7], s0, w[t - 16]], f"{tag}w{t}"))
        big1 = em.func("S1", [e], f"{tag}S1_{t}")
        chv = em.func("ch", [e, f, g], f"{tag}ch_{t}")
        t1 = em.add([h, big1, chv, lit(K[t]), w[t]], f"{tag}t1_{t}")
        new_e = em.add([d, t1], f"{tag}e{t}")
        if h7_only and t == last:
            # After round 63, h is the e produced by round 60.
            return [new_e]
        big0 = em.func("S0", [a], f"{tag}S0_{t}")
        mj = em.func("maj", [a, b, c], f"{tag}maj_{t}")
        new_a = em.add([t1, big0, mj], f"{tag}a{t}")
        a, b, c, d, e, f, g, h = new_a, a, b, c, new_e, e, f, g
    return [a, b, c, d, e, f, g, h]


def build_body() -> Emitter:
    """Symbolically run sha256d over block 2 of the header and the second hash."""
    em = Emitter()
    mid = [Val(SEG, f"m{i}") for i in range(8)]
    # Block 2: header bytes 64..116 then padding.  Words 0..10 are template
    # constants (tw0..tw10), word 11 the swapped low nonce, 12 the swapped high
    # nonce (constant per segment), 13..15 padding and the bit length.
    w: list[Val] = [Val(SEG, f"tw{i}") for i in range(11)]
    w.append(Val(LANE, "v_nlo"))
    w.append(Val(SEG, "c_nhi"))
    w += [lit(0x80000000), lit(0), lit(HEADER_LEN * 8)]
    st = compress(em, list(mid), w, "x", h7_only=False)
    digest = [em.add([mid[i], st[i]], f"d{i}") for i in range(8)]
    # Second hash: one block, the 32-byte digest + padding, starting from IV.
    w2 = digest + [lit(0x80000000)] + [lit(0)] * 6 + [lit(256)]
    (h,) = compress(em, [lit(v) for v in IV], w2, "y", h7_only=True)
    em.add([lit(IV[7]), h], "h7")
    return em


HEADER = '''\
"""GENERATED by ``python -m miner.codegen`` -- do not edit by hand.

sha256d nonce-scan kernels over a 116-byte header; see ``miner/codegen.py`` for
how the code is derived and ``miner/kernels.py`` for the calling convention.
"""

# ruff: noqa
# mypy: ignore-errors

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

u32 = np.uint32
u64 = np.uint64

''' + NUMBA_HELPERS + '''

@intrinsic
def load_acquire(typingctx, arr):
    """``arr[0]`` as an atomic acquire load: another thread's store is seen
    promptly, and LLVM cannot hoist the read out of the scan loop."""
    sig = types.int64(arr)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.load_atomic(data, "acquire", 8)

    return sig, codegen
'''


KERNEL_TEMPLATE = '''

@njit(cache=True, nogil=True, error_model="numpy")
def {name}(tpl, start, count, target_top, cand, stop):
    """Scan nonces ``start .. start+count-1`` ({lanes} per inner-loop step).

    Writes candidates -- nonces whose sha256d has its top 32 bits (as a
    little-endian integer) <= ``target_top`` -- to ``cand`` in increasing
    order.  Returns ``(found, scanned)``: the number of candidates and of
    nonces scanned from ``start``.  ``scanned < count`` when ``cand`` filled
    up (it ends right after the last candidate) or when another thread set
    ``stop[0]`` (checked every {lanes} nonces).
    """
    cap = cand.shape[0]
    found = 0
    out = np.empty({lanes}, dtype=np.uint32)
    m0, m1, m2, m3, m4, m5, m6, m7 = tpl[0], tpl[1], tpl[2], tpl[3], tpl[4], tpl[5], tpl[6], tpl[7]
{tw_lines}
    off = 0
    while off < count:
        # A segment is a run of nonces sharing the high 32 bits.
        nonce0 = u64(start) + u64(off)
        lo0 = np.int64(nonce0 & u64(0xFFFFFFFF))
        seg_len = min(count - off, np.int64(0x100000000) - lo0)
        c_nhi = bswap(u32(nonce0 >> u64(32)))
{seg_lines}
        for g in range(0, seg_len, {lanes}):
            if load_acquire(stop) != 0:
                return found, off + g
            lo_base = lo0 + g
            best = u32(0xFFFFFFFF)
            for lane in range({lanes}):
                # Lanes past the segment end compute garbage that is ignored.
                v_nlo = bswap(u32(lo_base + lane))
{lane_lines}
                top = bswap(v_h7)
                out[lane] = top
                best = min(best, top)
            if best <= target_top:
                for lane in range(min({lanes}, seg_len - g)):
                    if out[lane] <= target_top:
                        cand[found] = nonce0 + u64(g + lane)
                        found += 1
                        if found == cap:
                            return found, off + g + lane + 1
        off += seg_len
    return found, count
'''

# (function name, nonces per inner-loop step); miner/kernels.py picks one.
KERNELS = (
    ("scan_x16", 16),
    ("scan_x8", 8),
    ("scan_x1", 1),
)


def _literal_lines(text: str) -> list[str]:
    """Module-level uint32 globals for every literal the kernels use: numba
    freezes them as uint32 constants, so each helper sees only uint32
    arguments and is compiled once."""
    names = sorted(set(re.findall(r"\bL[0-9A-F]{8}\b", text)))
    return [f"{n} = u32(0x{n[1:]})" for n in names]


def _indent(lines: list[str], n: int) -> str:
    return "\n".join(" " * n + ln for ln in lines)


def generate() -> str:
    em = build_body()
    tw_lines = [f"tw{i} = tpl[{8 + i}]" for i in range(11)]
    parts = [HEADER]
    for name, lanes in KERNELS:
        parts.append(KERNEL_TEMPLATE.format(
            name=name, lanes=lanes,
            tw_lines=_indent(tw_lines, 4),
            seg_lines=_indent(em.seg_lines, 8),
            lane_lines=_indent(em.lane_lines, 16),
        ))
    body = "".join(parts[1:])
    return HEADER + "\n\n" + "\n".join(_literal_lines(body)) + "\n" + body


OUTPUT = Path(__file__).with_name("_kernels_gen.py")


def main(argv: list[str]) -> int:
    return generator_main(OUTPUT, generate, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
