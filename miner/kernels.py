"""Low-level sha256d nonce-scan kernels and the choice between them.

The kernels themselves live in the generated ``miner/_kernels_gen.py`` (see
``miner/codegen.py``).  They all compute the same thing; they differ only in
how many nonces the inner loop hashes side by side, which decides how LLVM
vectorizes it:

* ``x16`` -- 16 lanes, one 512-bit vector per SHA variable on AVX-512 CPUs;
* ``x8``  -- 8 lanes, one 256-bit vector on AVX2 CPUs;
* ``x1``  -- plain scalar loop, the fallback for anything else.

Each kernel is compiled by numba with ``cache=True``: the first process on a
machine pays a few seconds per kernel, later processes load machine code from
``miner/__pycache__``.  Only the kernel actually used gets compiled.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from miner import _kernels_gen
from miner.errors import MinerError
from miner.sha256_source import IV, compress

HEADER_LEN = 116
NONCE_OFFSET = 108  # the nonce is the header's last 8 bytes, u64 little-endian
MAX_NONCE = 2**64 - 1
MAX_TARGET = 2**256 - 1

TemplateWords = npt.NDArray[np.uint32]
Candidates = npt.NDArray[np.uint64]
StopFlag = npt.NDArray[np.int64]


@dataclass(frozen=True)
class KernelSpec:
    """One compiled scan kernel and what it needs from the CPU to be fast."""

    name: str
    lanes: int
    # CPU features (LLVM names) that make this kernel the best choice; it is
    # correct on any x86-64/arm64 CPU, just slower without them.
    wants: tuple[str, ...]
    fn: Callable[..., tuple[int, int]]


KERNELS: dict[str, KernelSpec] = {
    "x16": KernelSpec("x16", 16, ("avx512f",), _kernels_gen.scan_x16),
    "x8": KernelSpec("x8", 8, ("avx2",), _kernels_gen.scan_x8),
    "x1": KernelSpec("x1", 1, (), _kernels_gen.scan_x1),
}
# Preference order: first whose wanted features the CPU has wins.
_PREFERENCE = ("x16", "x8", "x1")


def cpu_features() -> frozenset[str]:
    """The CPU features numba compiles for, as LLVM names (``avx512f``...).

    Taken from ``NUMBA_CPU_FEATURES`` when set (numba then compiles for exactly
    those), else from LLVM's host detection -- the same source numba uses, so
    the choice matches the code actually generated.
    """
    text = os.environ.get("NUMBA_CPU_FEATURES")
    if not text:
        import llvmlite.binding as llvm

        text = llvm.get_host_cpu_features().flatten()
    return frozenset(f[1:] for f in text.split(",") if f.startswith("+"))


def select_kernel(features: frozenset[str] | None = None) -> KernelSpec:
    """The fastest kernel for ``features`` (default: this machine's CPU)."""
    feats = cpu_features() if features is None else features
    for name in _PREFERENCE:
        spec = KERNELS[name]
        if all(f in feats for f in spec.wants):
            return spec
    return KERNELS["x1"]  # pragma: no cover - x1 wants nothing


def check_header(header: Any) -> bytes:
    """Return ``header`` as bytes, or raise MinerError if it is not a header."""
    if not isinstance(header, (bytes, bytearray, memoryview)):
        raise MinerError(f"header must be bytes, not {type(header).__name__}")
    data = bytes(header)
    if len(data) != HEADER_LEN:
        raise MinerError(f"header must be exactly {HEADER_LEN} bytes, got {len(data)}")
    return data


def check_target(target: Any) -> int:
    """Return ``target`` if it is a usable 256-bit target, else raise MinerError."""
    if not isinstance(target, int) or isinstance(target, bool):
        raise MinerError(f"target must be an int, not {type(target).__name__}")
    if not 1 <= target <= MAX_TARGET:
        raise MinerError("target must be in 1 .. 2**256-1")
    return target


def check_nonce_range(start_nonce: Any, count: Any) -> None:
    """Raise MinerError unless ``start_nonce .. start_nonce+count-1`` fits in a u64."""
    for name, v in (("start_nonce", start_nonce), ("count", count)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise MinerError(f"{name} must be an int, not {type(v).__name__}")
    if not 0 <= start_nonce <= MAX_NONCE:
        raise MinerError("start_nonce must be in 0 .. 2**64-1")
    if count < 0 or start_nonce + count > MAX_NONCE + 1:
        raise MinerError("nonce range must stay within 0 .. 2**64-1 (no wraparound)")


def template_words(header: bytes) -> TemplateWords:
    """Per-template kernel input: the midstate (SHA-256 state after the first
    64 bytes) followed by block-2 words 0..10 (header bytes 64..108).  Computed
    once per template so the kernels never touch the first block."""
    data = check_header(header)
    mid = compress(IV, data[:64])
    words = struct.unpack(">11I", data[64:NONCE_OFFSET])
    return np.array(mid + list(words), dtype=np.uint32)


def target_top(target: int) -> np.uint32:
    """The most significant 32 bits of the 256-bit target: a hash can only be
    under the target if its own top 32 bits are <= these."""
    return np.uint32(check_target(target) >> 224)


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def with_nonce(header: bytes, nonce: int) -> bytes:
    """``header`` with its last 8 bytes replaced by ``nonce`` (u64 little-endian)."""
    return header[:NONCE_OFFSET] + nonce.to_bytes(8, "little")


def hash_value(header: bytes) -> int:
    """The proof-of-work value of a full header: sha256d read as little-endian."""
    return int.from_bytes(sha256d(header), "little")


def new_stop_flag() -> StopFlag:
    """A stop flag for ``sha256d_header_scan``: set ``flag[0] = 1`` from any
    thread and running scans return within a few microseconds."""
    return np.zeros(1, dtype=np.int64)


def sha256d_header_scan(
    kernel: KernelSpec,
    words: TemplateWords,
    start_nonce: int,
    count: int,
    top: np.uint32,
    cand: Candidates,
    stop: StopFlag,
) -> tuple[int, int]:
    """Run ``kernel`` over ``count`` nonces from ``start_nonce``.

    Writes the nonces whose hash's top 32 bits are <= ``top`` into ``cand`` in
    increasing order.  Returns ``(found, scanned)``: how many candidates, and
    how many nonces from ``start_nonce`` were scanned -- fewer than ``count``
    if ``cand`` filled up (the scan ends just after the last candidate) or
    ``stop[0]`` was set.  Candidates still need the full 256-bit comparison
    (``hash_value``).  No argument checking: this is the hot path.
    """
    found, scanned = kernel.fn(words, np.uint64(start_nonce), count, top, cand, stop)
    return int(found), int(scanned)


def scan_range(
    header: bytes, target: int, start_nonce: int, count: int, kernel: KernelSpec | None = None
) -> list[int]:
    """All nonces in ``start_nonce .. start_nonce+count-1`` whose header hash
    is <= ``target``, in increasing order.  A checked, convenient wrapper for
    tests and tools; the miner drives ``sha256d_header_scan`` directly."""
    data = check_header(header)
    check_nonce_range(start_nonce, count)
    spec = kernel or select_kernel()
    words = template_words(data)
    top = target_top(target)
    cand: Candidates = np.empty(256, dtype=np.uint64)
    stop = new_stop_flag()
    hits: list[int] = []
    pos, end = start_nonce, start_nonce + count
    while pos < end:
        n, scanned = sha256d_header_scan(spec, words, pos, end - pos, top, cand, stop)
        hits += [int(c) for c in cand[:n] if hash_value(with_nonce(data, int(c))) <= target]
        pos += scanned
    return hits
