"""The sha256d scan kernels agree bit for bit with hashlib.

Every kernel variant is tested, including the scalar fallback, whatever this
machine's CPU would pick.  The first run on a machine compiles each kernel
(several seconds each); later runs load them from numba's cache.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miner import HEADER_LEN, MAX_NONCE, MinerError, codegen, kernels
from miner.kernels import (
    KERNELS,
    hash_value,
    new_stop_flag,
    scan_range,
    select_kernel,
    sha256d_header_scan,
    target_top,
    template_words,
    with_nonce,
)
from miner.sha256_source import IV, compress

KERNEL_NAMES = sorted(KERNELS)


def brute_force(header: bytes, target: int, start: int, count: int) -> list[int]:
    return [n for n in range(start, start + count) if hash_value(with_nonce(header, n)) <= target]


def tops(header: bytes, start: int, count: int) -> list[int]:
    """Top 32 bits of each nonce's hash as a little-endian integer."""
    return [hash_value(with_nonce(header, n)) >> 224 for n in range(start, start + count)]


def kernel_candidates(name: str, header: bytes, start: int, count: int, top: int) -> list[int]:
    cand = np.empty(count + 1, dtype=np.uint64)
    n, scanned = sha256d_header_scan(KERNELS[name], template_words(header), start, count,
                                     np.uint32(top), cand, new_stop_flag())
    assert scanned == count
    return [int(c) for c in cand[:n]]


def test_generated_module_is_up_to_date() -> None:
    generated = Path(codegen.__file__).with_name("_kernels_gen.py").read_text()
    assert generated == codegen.generate(), "run: python -m miner.codegen"


def test_reference_compression_matches_hashlib() -> None:
    msg = os.urandom(55)  # one block after padding
    block = msg + b"\x80" + struct.pack(">Q", len(msg) * 8)
    digest = b"".join(struct.pack(">I", w) for w in compress(IV, block))
    assert digest == hashlib.sha256(msg).digest()


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_kernel_top_words_match_hashlib_at_the_largest_nonces(name: str) -> None:
    header = os.urandom(HEADER_LEN)
    count = 100
    start = MAX_NONCE + 1 - count  # ends exactly at 2**64-1, no wraparound
    want_tops = tops(header, start, count)
    median = sorted(want_tops)[count // 2]
    want = [start + i for i, t in enumerate(want_tops) if t <= median]
    assert kernel_candidates(name, header, start, count, median) == want
    # And the complete check, largest nonce included.
    target = (median << 224) | (2**224 - 1)
    assert scan_range(header, target, start, count, KERNELS[name]) == brute_force(
        header, target, start, count)


@pytest.mark.parametrize("name", KERNEL_NAMES)
@pytest.mark.parametrize("hi", [0, 1, 0x12345678, 2**32 - 2])
def test_kernel_crosses_high_word_boundaries(name: str, hi: int) -> None:
    # The low nonce word wraps here and the high word (message word 12) changes.
    header = os.urandom(HEADER_LEN)
    start, count = ((hi + 1) << 32) - 37, 75
    want_tops = tops(header, start, count)
    median = sorted(want_tops)[count // 2]
    want = [start + i for i, t in enumerate(want_tops) if t <= median]
    assert kernel_candidates(name, header, start, count, median) == want


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.binary(min_size=HEADER_LEN, max_size=HEADER_LEN),
    start=st.one_of(
        st.integers(0, MAX_NONCE),
        st.integers(MAX_NONCE - 200, MAX_NONCE),
        st.integers(0, 2**40).map(lambda n: (n << 24) % (MAX_NONCE + 1)),
        st.integers(1, 2**32 - 1).map(lambda hi: (hi << 32) - 20),  # high word changes
    ),
    count=st.integers(1, 64),
    name=st.sampled_from(KERNEL_NAMES),
)
def test_kernels_agree_with_hashlib_on_random_headers(
    header: bytes, start: int, count: int, name: str
) -> None:
    count = min(count, MAX_NONCE + 1 - start)
    want_tops = tops(header, start, count)
    median = sorted(want_tops)[count // 2]
    want = [start + i for i, t in enumerate(want_tops) if t <= median]
    assert kernel_candidates(name, header, start, count, median) == want


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_full_candidate_buffer_resumes_without_gaps(name: str) -> None:
    # Every nonce is a candidate: the 256-entry buffer fills several times.
    header = os.urandom(HEADER_LEN)
    assert scan_range(header, 2**256 - 1, 1000, 1000, KERNELS[name]) == list(range(1000, 2000))


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_full_candidate_buffer_reports_where_it_stopped(name: str) -> None:
    cand = np.empty(10, dtype=np.uint64)
    n, scanned = sha256d_header_scan(KERNELS[name], template_words(bytes(HEADER_LEN)), 50, 100,
                                     np.uint32(0xFFFFFFFF), cand, new_stop_flag())
    assert (n, scanned) == (10, 10)
    assert [int(c) for c in cand] == list(range(50, 60))


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_stop_flag_set_before_the_call_scans_nothing(name: str) -> None:
    stop = new_stop_flag()
    stop[0] = 1
    cand = np.empty(10, dtype=np.uint64)
    assert sha256d_header_scan(KERNELS[name], template_words(bytes(HEADER_LEN)), 0, 10**9,
                               np.uint32(0xFFFFFFFF), cand, stop) == (0, 0)


def test_stop_flag_interrupts_a_running_kernel() -> None:
    # A call that would take minutes returns promptly once another thread
    # sets the flag: the kernel really re-reads it inside its loop.
    spec = select_kernel()
    stop = new_stop_flag()
    cand = np.empty(10, dtype=np.uint64)
    kernel_candidates(spec.name, bytes(HEADER_LEN), 0, 16, 0)  # compile outside the thread
    out: list[tuple[int, int]] = []
    t = threading.Thread(target=lambda: out.append(sha256d_header_scan(
        spec, template_words(bytes(HEADER_LEN)), 0, 2**40, np.uint32(0), cand, stop)))
    t.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    stop[0] = 1
    t.join(5)
    assert not t.is_alive()
    assert time.perf_counter() - t0 < 0.05
    found, scanned = out[0]
    assert 0 < scanned < 2**40 and scanned % spec.lanes == 0


def test_template_words_are_midstate_and_block2_prefix() -> None:
    header = os.urandom(HEADER_LEN)
    words = template_words(header)
    assert words.dtype == np.uint32 and words.shape == (19,)
    assert list(words[:8]) == compress(IV, header[:64])
    assert list(words[8:]) == list(struct.unpack(">11I", header[64:108]))


def test_target_top_is_the_most_significant_word() -> None:
    assert target_top(2**256 - 1) == 0xFFFFFFFF
    assert target_top(2**224) == 1
    assert target_top(2**224 - 1) == 0


def test_kernel_selection_follows_cpu_features() -> None:
    assert select_kernel(frozenset({"avx2", "avx512f", "avx512bw"})).name == "x16"
    assert select_kernel(frozenset({"avx2", "sse4.2"})).name == "x8"
    assert select_kernel(frozenset({"sse2"})).name == "x1"
    assert select_kernel(frozenset()).name == "x1"
    assert select_kernel().name in KERNELS


def test_cpu_features_honour_numba_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "+sse2,+avx2,-avx512f")
    assert kernels.cpu_features() == frozenset({"sse2", "avx2"})
    assert select_kernel().name == "x8"


@pytest.mark.parametrize(
    "header", [b"", b"\x00" * 115, b"\x00" * 117, "x" * 116, None, [0] * 116]
)
def test_bad_headers_raise_miner_error(header: object) -> None:
    with pytest.raises(MinerError):
        kernels.check_header(header)
    with pytest.raises(MinerError):
        scan_range(header, 2**255, 0, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", [0, -1, 2**256, 2**300, 1.5, "1", True, None])
def test_bad_targets_raise_miner_error(target: object) -> None:
    with pytest.raises(MinerError):
        scan_range(bytes(HEADER_LEN), target, 0, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("start", "count"), [(-1, 1), (2**64, 1), (MAX_NONCE, 2), (0, -1), (0.0, 1), (0, 2**65)]
)
def test_bad_nonce_ranges_raise_miner_error(start: object, count: object) -> None:
    with pytest.raises(MinerError):
        scan_range(bytes(HEADER_LEN), 2**255, start, count)  # type: ignore[arg-type]


def test_miner_error_is_a_value_error() -> None:
    assert issubclass(MinerError, ValueError)
