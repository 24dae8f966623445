"""Miner.search / Miner.run: finding blocks, stopping, switching templates."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from miner import HEADER_LEN, MAX_NONCE, Miner, MinerError, MineResult
from miner.kernels import KERNELS, hash_value, scan_range

# A target that needs ~65k hashes on average (probability 2**-16 per nonce).
TARGET_65K = 2**240
IMPOSSIBLE = 1


@pytest.fixture(scope="module")
def miner() -> Miner:
    return Miner(threads=2)


@pytest.fixture
def header() -> bytes:
    return os.urandom(HEADER_LEN)


def assert_solved(result: MineResult, header: bytes, target: int) -> None:
    assert len(result.header) == HEADER_LEN
    assert result.header[:108] == header[:108]
    assert int.from_bytes(result.header[108:], "little") == result.nonce
    assert hash_value(result.header) == int.from_bytes(result.hash, "little")
    assert int.from_bytes(result.hash, "little") <= target


def test_mines_a_block_at_a_nontrivial_target(miner: Miner, header: bytes) -> None:
    result = miner.search(header, TARGET_65K)
    assert result is not None
    assert_solved(result, header, TARGET_65K)
    assert result.hashes >= 1 and result.elapsed_s > 0 and result.hashrate > 0
    stats = miner.last_search
    assert stats is not None and stats.found and not stats.stopped and not stats.exhausted


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_each_kernel_finds_the_lowest_winning_nonce(name: str, header: bytes) -> None:
    # Workers finish every chunk they claimed, so the result is the lowest
    # winning nonce at or after start_nonce, whatever the thread timing.
    target = 2**250
    want = scan_range(header, target, 2**32 - 3000, 6000, KERNELS[name])
    assert want, "astronomically unlikely: no winner in 6000 nonces at 2**-6"
    m = Miner(threads=2, kernel=name)
    assert m.kernel_name == name
    found = []
    start = 2**32 - 3000
    while True:
        result = m.search(header, target, start_nonce=start, max_nonces=2**32 + 3000 - start)
        if result is None:
            break
        assert_solved(result, header, target)
        found.append(result.nonce)
        start = result.nonce + 1
    assert found == want


def test_max_nonces_bounds_the_search(miner: Miner, header: bytes) -> None:
    assert miner.search(header, IMPOSSIBLE, start_nonce=500, max_nonces=100_000) is None
    stats = miner.last_search
    assert stats is not None
    assert stats.hashes == 100_000 and stats.next_nonce == 100_500
    assert not stats.found and not stats.stopped and not stats.exhausted


def test_exhausted_nonce_space_is_reported(miner: Miner, header: bytes) -> None:
    assert miner.search(header, IMPOSSIBLE, start_nonce=MAX_NONCE - 50_000) is None
    stats = miner.last_search
    assert stats is not None and stats.exhausted and stats.next_nonce == MAX_NONCE + 1
    assert stats.hashes == 50_001


def test_largest_nonce_can_win(miner: Miner, header: bytes) -> None:
    result = miner.search(header, 2**256 - 1, start_nonce=MAX_NONCE)
    assert result is not None and result.nonce == MAX_NONCE
    assert result.header[108:] == b"\xff" * 8


def test_stop_flag_is_honoured_promptly(miner: Miner, header: bytes) -> None:
    """Once asked to stop, the search does at most about one chunk of work per thread. Measured
    in CPU time, not wall time: on a busy machine the threads may wait for a core, but they
    must not go on hashing."""
    stop_at = time.perf_counter() + 0.2
    cpu_at_stop: list[float] = []

    def should_stop() -> bool:
        if time.perf_counter() < stop_at:
            return False
        if not cpu_at_stop:
            cpu_at_stop.append(time.process_time())
        return True

    result = miner.search(header, IMPOSSIBLE, should_stop=should_stop)
    burnt = time.process_time() - cpu_at_stop[0]
    assert result is None
    stats = miner.last_search
    assert stats is not None and stats.stopped and not stats.exhausted
    assert 0 < stats.next_nonce <= stats.hashes
    assert burnt < 0.1, f"{burnt * 1000:.1f} ms of CPU spent hashing after the request"


def test_resuming_at_next_nonce_after_stops_skips_nothing() -> None:
    # Stops abort chunks midway in every thread; next_nonce must still be a
    # point below which everything was tried.  The scalar kernel is slow
    # enough (~0.3 s for the range) for many stops to land mid-range.
    target, start, count = 2**236, 2**32 - 1_500_000, 3_000_000
    for _ in range(50):  # a header with a few winners in the range
        header = os.urandom(HEADER_LEN)
        want = scan_range(header, target, start, count)
        if len(want) >= 2:
            break
    m = Miner(threads=2, kernel="x1")
    found: list[int] = []
    pos, stops = start, 0
    while pos < start + count:
        result = m.search(header, target, start_nonce=pos, max_nonces=start + count - pos,
                          should_stop=lambda: True)  # stop at the first poll
        stats = m.last_search
        assert stats is not None
        if result is not None:
            assert_solved(result, header, target)
            found.append(result.nonce)
            assert stats.next_nonce <= result.nonce + 1
        if stats.stopped:
            stops += 1
        elif result is None:
            assert stats.next_nonce == start + count
        assert stats.next_nonce >= pos
        pos = stats.next_nonce
    # After a stop, a winner above a skipped gap can be found again later.
    assert sorted(set(found)) == want
    assert stops > 0


@pytest.fixture
def running_miner() -> Iterator[tuple[Miner, list[MineResult], list[bytes], threading.Event]]:
    m = Miner(threads=2)
    found: list[MineResult] = []
    exhausted: list[bytes] = []
    stop = threading.Event()
    t = threading.Thread(
        target=m.run, args=(found.append, stop.is_set, exhausted.append), daemon=True
    )
    t.start()
    yield m, found, exhausted, stop
    stop.set()
    t.join(5)
    assert not t.is_alive()


def wait_for(cond: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        time.sleep(0.001)
    return False


def test_run_switches_templates_promptly(
    running_miner: tuple[Miner, list[MineResult], list[bytes], threading.Event],
) -> None:
    m, found, _, _ = running_miner
    hard, easy = os.urandom(HEADER_LEN), os.urandom(HEADER_LEN)
    m.update_template(hard, IMPOSSIBLE)
    assert wait_for(lambda: m.hashrate > 0)
    time.sleep(0.05)
    m.update_template(easy, TARGET_65K)
    assert wait_for(lambda: len(found) == 1)
    assert_solved(found[0], easy, TARGET_65K)
    latency = m.last_switch_latency_s
    assert latency is not None and latency < 0.05
    # After a find the template is cleared: the miner idles, finds nothing more.
    time.sleep(0.05)
    assert len(found) == 1


def test_run_reports_exhausted_headers(
    running_miner: tuple[Miner, list[MineResult], list[bytes], threading.Event],
) -> None:
    m, found, exhausted, _ = running_miner
    header = os.urandom(HEADER_LEN)
    m.update_template(header, IMPOSSIBLE, start_nonce=MAX_NONCE - 10_000)
    assert wait_for(lambda: exhausted == [header])
    assert found == []


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_thread_counts_raise(threads: object) -> None:
    with pytest.raises(MinerError):
        Miner(threads=threads)  # type: ignore[arg-type]


def test_unknown_kernel_raises() -> None:
    with pytest.raises(MinerError):
        Miner(kernel="x99")


@pytest.mark.parametrize(
    ("header", "target", "start", "max_nonces"),
    [
        (b"\x00" * 115, 2**255, 0, None),
        (b"\x00" * 116, 0, 0, None),
        (b"\x00" * 116, 2**256, 0, None),
        (b"\x00" * 116, 2**255, -1, None),
        (b"\x00" * 116, 2**255, 2**64, None),
        (b"\x00" * 116, 2**255, 0, -5),
    ],
)
def test_bad_search_inputs_raise(
    miner: Miner, header: bytes, target: int, start: int, max_nonces: int | None
) -> None:
    with pytest.raises(MinerError):
        miner.search(header, target, start_nonce=start, max_nonces=max_nonces)
    if max_nonces is None:
        with pytest.raises(MinerError):
            miner.update_template(header, target, start_nonce=start)
