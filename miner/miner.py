"""The Miner: drives a scan kernel over the nonce space on all cores.

Design, and why:

* Parallelism is one Python thread per core, each calling the ``nogil`` numba
  kernel on a chunk of nonces it claims from a shared counter.  Compared with
  numba's ``prange`` this has no barrier per call (a slow thread never holds
  the others up), compiles in a third of the time, and makes chunk boundaries
  natural points to stop.
* Chunks are sized from the measured hash rate so one kernel call lasts about
  ``CHUNK_SECONDS`` (10 ms): per-call overhead (~10 us of Python) is ~0.1 %.
  Stopping does not wait for chunk ends: the kernels poll a shared stop flag
  every 16 nonces, so a stop request or a new template takes effect within
  microseconds plus thread wake-up.
* The kernel only compares the hash's top 32 bits; candidates get the full
  256-bit comparison here with hashlib, which also guards against a
  miscompiled kernel ever reporting a wrong block.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from miner.errors import MinerError
from miner.kernels import (
    KERNELS,
    MAX_NONCE,
    Candidates,
    KernelSpec,
    StopFlag,
    TemplateWords,
    check_header,
    check_nonce_range,
    check_target,
    hash_value,
    new_stop_flag,
    select_kernel,
    sha256d,
    sha256d_header_scan,
    target_top,
    template_words,
    with_nonce,
)

CHUNK_SECONDS = 0.01  # target duration of one kernel call
POLL_SECONDS = 0.001  # how often search() calls should_stop while mining
_MIN_CHUNK = 256
_MAX_CHUNK = 1 << 24
_CAND_CAP = 64  # candidate buffer per kernel call; a full one is resumed


@dataclass(frozen=True)
class MineResult:
    """A solved header: ``int.from_bytes(hash, "little") <= target``."""

    nonce: int
    header: bytes  # the full 116-byte header, nonce included
    hash: bytes  # sha256d(header), as hashlib returns it
    hashes: int  # nonces tried by the search that found it
    elapsed_s: float

    @property
    def hashrate(self) -> float:
        """Hashes per second over the search, for a status line."""
        return self.hashes / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class SearchStats:
    """How the last ``search`` ended; tells the caller what to do next.

    ``exhausted`` means every nonce up to 2**64-1 was tried without success:
    the caller must change the header otherwise (roll the time or the extra
    nonce in the coinbase) and search again from nonce 0.
    """

    hashes: int
    elapsed_s: float
    # Every nonce from start_nonce up to here was tried (and none below a
    # winner won, except after a stop): pass as start_nonce to continue.
    next_nonce: int
    found: bool
    stopped: bool  # should_stop() returned True (a block may still have been found)
    exhausted: bool  # next_nonce == 2**64: no nonces left for this header

    @property
    def hashrate(self) -> float:
        return self.hashes / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _Job:
    """Shared state of one search between its worker threads."""

    def __init__(self, header: bytes, target: int, start: int, end: int, threads: int,
                 template: _Template | None) -> None:
        self.header = header
        self.target = target
        self.words: TemplateWords = template_words(header)
        self.top = target_top(target)
        self.next = start  # chunks below this were handed out
        self.end = end
        self.template = template  # what run() is mining with this job, if it is
        self.lock = threading.Lock()
        self.halt = False  # hand out no more chunks; claimed ones finish
        self.stop_flag: StopFlag = new_stop_flag()  # abort claimed chunks too
        self.aborted = False
        self.unscanned_from: int | None = None  # lowest nonce an abort skipped
        self.hashes = 0
        self.winner: int | None = None
        self.error: Exception | None = None
        self.first_chunk_at: float | None = None
        self.live = threads
        self.done = threading.Event()
        self.t0 = time.perf_counter()

    def abort(self) -> None:
        self.aborted = True
        self.halt = True
        self.stop_flag[0] = 1

    def next_nonce(self) -> int:
        """The lowest nonce not tried (beyond the winner, if any): every nonce
        from the search's start up to here was tried."""
        nxt = min(self.next, self.end) if self.winner is None else self.winner + 1
        return nxt if self.unscanned_from is None else min(nxt, self.unscanned_from)


@dataclass(frozen=True)
class _Template:
    header: bytes
    target: int
    start_nonce: int
    requested_at: float


class Miner:
    """Proof-of-work search over the 64-bit nonce of a 116-byte header.

    Two ways to use it:

    * ``search()`` -- blocking search of one template; pass ``should_stop`` to
      abandon it (called every millisecond, honoured within microseconds);
    * ``run()`` + ``update_template()`` -- continuous mining in a dedicated
      thread; other threads swap templates in as the chain tip or mempool
      changes.

    One search runs at a time per Miner; it uses ``threads`` threads.
    """

    def __init__(self, threads: int | None = None, kernel: str | None = None) -> None:
        """``threads``: worker threads (default: the CPUs this process may use).
        ``kernel``: force ``"x16"``, ``"x8"`` or ``"x1"`` instead of choosing by
        CPU features (tests use it to cover every variant).

        Loads (or, on a machine's first run, compiles) the kernel and checks it
        against hashlib, so a broken kernel fails here, not in a block.
        """
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
                os.cpu_count() or 1
            )
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise MinerError(f"threads must be a positive int, got {threads!r}")
        if kernel is None:
            spec = select_kernel()
        elif kernel in KERNELS:
            spec = KERNELS[kernel]
        else:
            raise MinerError(f"unknown kernel {kernel!r}; known: {sorted(KERNELS)}")
        self._spec: KernelSpec = spec
        self._threads = threads
        self._search_lock = threading.Lock()
        self._job: _Job | None = None
        self._last: SearchStats | None = None
        self._rate_per_thread = 1e6 * spec.lanes  # refined by measurement
        self._tpl: _Template | None = None
        self._tpl_cond = threading.Condition()
        self._last_switch_s: float | None = None
        self._self_test()

    # --- properties -------------------------------------------------------

    @property
    def kernel_name(self) -> str:
        """Which kernel runs: ``x16`` (AVX-512), ``x8`` (AVX2) or ``x1`` (scalar)."""
        return self._spec.name

    @property
    def threads(self) -> int:
        return self._threads

    @property
    def last_search(self) -> SearchStats | None:
        """How the most recent finished ``search`` ended (None before any)."""
        return self._last

    @property
    def hashrate(self) -> float:
        """Hashes per second: of the running search, else of the last one."""
        job = self._job
        if job is not None:
            dt = time.perf_counter() - job.t0
            return job.hashes / dt if dt > 0 else 0.0
        return self._last.hashrate if self._last else 0.0

    @property
    def last_switch_latency_s(self) -> float | None:
        """Seconds from the latest ``update_template`` call to ``run`` hashing
        the new template (None until a switch happened)."""
        return self._last_switch_s

    # --- one-shot search --------------------------------------------------

    def search(
        self,
        header: bytes,
        target: int,
        start_nonce: int = 0,
        max_nonces: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> MineResult | None:
        """Find a nonce in ``start_nonce .. start_nonce+max_nonces-1`` (default:
        up to 2**64-1) that puts ``header``'s hash at or under ``target``.

        Returns None when ``should_stop()`` became true, ``max_nonces`` were
        tried, or the nonce space ran out; ``last_search`` says which and where
        to continue.  The header's own last 8 bytes are ignored.

        Unless stopped, the result is the lowest winning nonce from
        ``start_nonce`` on, whatever the thread timing: workers always finish
        the chunks they claimed once one of them finds a block.  A block found
        by the time a stop takes effect is still returned.
        """
        return self._search(header, target, start_nonce, max_nonces, should_stop, None, None)

    def _search(
        self,
        header: bytes,
        target: int,
        start_nonce: int,
        max_nonces: int | None,
        should_stop: Callable[[], bool] | None,
        on_first_chunk: Callable[[float], None] | None,
        template: _Template | None,
    ) -> MineResult | None:
        data = check_header(header)
        check_target(target)
        check_nonce_range(start_nonce, 0)
        if max_nonces is None:
            end = MAX_NONCE + 1
        else:
            if not isinstance(max_nonces, int) or isinstance(max_nonces, bool) or max_nonces < 0:
                raise MinerError(f"max_nonces must be a non-negative int, got {max_nonces!r}")
            end = min(start_nonce + max_nonces, MAX_NONCE + 1)
        with self._search_lock:
            job = _Job(data, target, start_nonce, end, self._threads, template)
            self._job = job
            stopped = False
            reported = False
            try:
                for i in range(self._threads):
                    threading.Thread(target=self._worker, args=(job,), daemon=True,
                                     name=f"miner-{i}").start()
                while not job.done.wait(POLL_SECONDS):
                    if on_first_chunk and not reported and job.first_chunk_at is not None:
                        on_first_chunk(job.first_chunk_at)
                        reported = True
                    if not job.halt and should_stop is not None and should_stop():
                        stopped = True
                        job.abort()
            finally:
                job.abort()  # no-op normally; stops the workers if we were interrupted
                job.done.wait()
                self._job = None
            if job.error is not None:
                raise job.error
            elapsed = time.perf_counter() - job.t0
            if on_first_chunk and not reported and job.first_chunk_at is not None:
                on_first_chunk(job.first_chunk_at)
            next_nonce = job.next_nonce()
            found = job.winner is not None
            self._last = SearchStats(
                hashes=job.hashes,
                elapsed_s=elapsed,
                next_nonce=next_nonce,
                found=found,
                stopped=stopped,
                exhausted=not found and next_nonce > MAX_NONCE,
            )
            if job.winner is None:
                return None
            solved = with_nonce(data, job.winner)
            return MineResult(job.winner, solved, sha256d(solved), job.hashes, elapsed)

    def _worker(self, job: _Job) -> None:
        try:
            cand: Candidates = np.empty(_CAND_CAP, dtype=np.uint64)
            lanes = self._spec.lanes
            while not job.halt:
                chunk = int(self._rate_per_thread * CHUNK_SECONDS) // lanes * lanes
                chunk = min(max(chunk, _MIN_CHUNK), _MAX_CHUNK)
                with job.lock:
                    start = job.next
                    if start >= job.end:
                        return
                    count = min(chunk, job.end - start)
                    job.next = start + count
                    if job.first_chunk_at is None:
                        job.first_chunk_at = time.perf_counter()
                t0 = time.perf_counter()
                winner, scanned = self._scan_chunk(job, start, count, cand)
                dt = time.perf_counter() - t0
                with job.lock:
                    job.hashes += scanned
                    if winner is not None:
                        if job.winner is None or winner < job.winner:
                            job.winner = winner
                        job.halt = True
                    elif scanned < count:  # aborted: the rest of the chunk was skipped
                        skipped = start + scanned
                        if job.unscanned_from is None or skipped < job.unscanned_from:
                            job.unscanned_from = skipped
                if scanned == count >= _MIN_CHUNK and dt > 0:
                    # Smooth the per-thread rate used to size the next chunk.
                    self._rate_per_thread = 0.7 * self._rate_per_thread + 0.3 * (count / dt)
        except Exception as exc:  # noqa: BLE001 - re-raised by search() in the caller's thread
            job.error = exc
            job.abort()
        finally:
            with job.lock:
                job.live -= 1
                if job.live == 0:
                    job.done.set()

    def _scan_chunk(
        self, job: _Job, start: int, count: int, cand: Candidates
    ) -> tuple[int | None, int]:
        """Scan one chunk until done, a winner, or an abort.  Returns the
        chunk's lowest nonce that meets the full target (or None) and how many
        nonces from ``start`` were scanned."""
        pos, end = start, start + count
        while pos < end and not job.aborted:
            n, scanned = sha256d_header_scan(
                self._spec, job.words, pos, end - pos, job.top, cand, job.stop_flag
            )
            for c in cand[:n]:
                nonce = int(c)
                if hash_value(with_nonce(job.header, nonce)) <= job.target:
                    return nonce, nonce + 1 - start
            pos += scanned
        return None, pos - start

    # --- continuous mining ------------------------------------------------

    def update_template(self, header: bytes, target: int, start_nonce: int = 0) -> None:
        """Make ``run()`` mine this header from now on (thread-safe).

        The running search is abandoned at once (the kernels poll a stop flag
        every 16 nonces); ``last_switch_latency_s`` measures the switch.
        """
        data = check_header(header)
        check_target(target)
        check_nonce_range(start_nonce, 0)
        with self._tpl_cond:
            self._tpl = _Template(data, target, start_nonce, time.perf_counter())
            self._tpl_cond.notify_all()
        self._abort_stale_run_job()

    def clear_template(self) -> None:
        """Make ``run()`` idle until the next ``update_template``."""
        with self._tpl_cond:
            self._tpl = None
            self._tpl_cond.notify_all()
        self._abort_stale_run_job()

    def _abort_stale_run_job(self) -> None:
        """Stop run()'s search at once if it mines a replaced template (rather
        than waiting for its next should_stop poll)."""
        job = self._job
        if job is not None and job.template is not None and job.template is not self._tpl:
            job.abort()

    def run(
        self,
        on_found: Callable[[MineResult], None],
        should_stop: Callable[[], bool] | None = None,
        on_exhausted: Callable[[bytes], None] | None = None,
    ) -> None:
        """Mine whatever template ``update_template`` last set, until
        ``should_stop()`` is true.  Blocks; run it in its own thread.

        After a find, the template is cleared before ``on_found`` is called
        (mining the same header again is pointless), so ``on_found`` may set
        the next one.  Likewise when its nonce space is exhausted, before
        ``on_exhausted(header)``: roll time or extra nonce and update.  A block
        found just as its template was replaced is still reported; compare
        ``result.header`` with the current tip before using it.
        """
        stop = should_stop or (lambda: False)
        while not stop():
            with self._tpl_cond:
                tpl = self._tpl
                if tpl is None:
                    self._tpl_cond.wait(POLL_SECONDS * 5)
                    continue

            def replaced(tpl: _Template = tpl) -> bool:
                return stop() or self._tpl is not tpl

            def record_switch(at: float, tpl: _Template = tpl) -> None:
                self._last_switch_s = at - tpl.requested_at

            result = self._search(
                tpl.header, tpl.target, tpl.start_nonce, None, replaced, record_switch, tpl
            )
            last = self._last
            if result is not None or (last is not None and last.exhausted):
                with self._tpl_cond:
                    if self._tpl is tpl:
                        self._tpl = None
                if result is not None:
                    on_found(result)
                elif on_exhausted is not None:
                    on_exhausted(tpl.header)

    # --- internals --------------------------------------------------------

    def _self_test(self) -> None:
        """Compare the kernel with hashlib on a fixed header across a 2**32
        boundary, with a target that lets about half the nonces through."""
        header = bytes(range(116))
        start, count, target = 2**32 - 40, 80, 2**255
        cand: Candidates = np.empty(count, dtype=np.uint64)
        n, _ = sha256d_header_scan(self._spec, template_words(header), start, count,
                                   target_top(target), cand, new_stop_flag())
        got = [int(c) for c in cand[:n]]
        want = [x for x in range(start, start + count)
                if hash_value(with_nonce(header, x)) >> 224 <= target >> 224]
        if got != want:  # pragma: no cover - would mean a miscompiled kernel
            raise RuntimeError(f"miner kernel {self._spec.name} disagrees with hashlib")
