"""The fragments of a block record that lies on disk, coded and hashed a stripe at a time.

A put must not need memory in proportion to the file: a 100 MiB file held as a sealed record
plus its parity took 2.6 times its size in private memory, and a file larger than the
machine's memory could not be put at all. The record is therefore sealed straight to its file
(:meth:`storage_market.blockstore.BlockStore.seal_file`) and coded from there.

zfec's Reed-Solomon code works byte position by byte position: byte ``j`` of a parity fragment
depends only on byte ``j`` of each of the ``k`` data fragments. So the fragments are computed
in stripes: for each offset, ``k`` slices of :data:`STRIPE` bytes are read from the record
(the data fragments are ranges of it, see :mod:`storage_market.fragments`; past its end comes
the padding), the parity slices are coded from them and written to the parity fragments'
files, and every slice's Merkle leaves are hashed on the way. The result is bit for bit
:func:`storage_market.fragments.encode` and :func:`storage_market.merkle.merkle_root`, in
memory bounded by a few stripes whatever the size. Two worker threads share the stripes
(zfec and the hash kernel release the GIL), so both cores are busy.

Serving reads the same places: a data fragment is a mapped range of the record file (and the
padding), a parity fragment its file. Parity files are a cache of the record, never trusted
across a restart: they are written without fsync and recomputed (and checked against their
roots on chain) by the next process that needs them.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from storage_market import fragments, sha256x
from storage_market.errors import FragmentError, IntegrityError
from storage_market.merkle import check_leaf_size

#: Bytes of each fragment coded at a time (a power of two, so a whole number of leaves).
STRIPE = 1 << 20
#: Stripes in flight: enough to keep two workers busy, few enough to bound memory.
WINDOW = 4

#: told the bytes of fragment data done and the total, from the worker threads
Progress = Callable[[int, int], None]


class RecordFragments:
    """The ``n`` fragments of one record on disk.

    ``fd`` reads the record (``total`` bytes; the object keeps its own duplicate of the
    descriptor, so the record file may be renamed or its writer closed meanwhile); parity
    fragments live in ``directory`` as ``<name>.<index>``. ``stripe`` is the bytes of each
    fragment coded at a time (a power of two; at least a leaf).
    """

    def __init__(self, fd: int, total: int, k: int, n: int, directory: Path, name: str,
                 stripe: int = STRIPE) -> None:
        fragments.check_params(k, n)
        if stripe < 1 or stripe & (stripe - 1):
            raise FragmentError(f"a stripe is a power of two of bytes, not {stripe}")
        self.stripe = stripe
        self.total, self.k, self.n = total, k, n
        self.size = fragments.fragment_size(total, k)
        self.directory = Path(directory)
        self.name = name
        self._fd = os.dup(fd)
        self._lock = threading.Lock()
        self._record: mmap.mmap | None = None
        self._parity: dict[int, mmap.mmap] = {}
        #: fragments coded by :meth:`encode` in this process, ready for :meth:`parts`
        self.ready: set[int] = set()

    def __enter__(self) -> RecordFragments:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the record and forget the maps (views still being sent keep theirs alive)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._record = None
            self._parity.clear()

    def parity_file(self, index: int) -> Path:
        return self.directory / f"{self.name}.{index}"

    def remove_parity(self) -> None:
        """Delete the parity files (served again, they are recomputed)."""
        with self._lock:
            self._parity.clear()
            self.ready.difference_update(range(self.k, self.n))
        for index in range(self.k, self.n):
            self.parity_file(index).unlink(missing_ok=True)

    # --- coding ---------------------------------------------------------------------------

    def _read(self, into: memoryview, start: int) -> None:
        """Bytes ``start..`` of the padded record: the record, then ``0x80`` and zeros."""
        have = max(0, min(into.nbytes, self.total - start))
        got = 0
        while got < have:
            step = os.preadv(self._fd, [into[got:have]], start + got)
            if not step:
                raise IntegrityError("the block record shrank while it was being coded")
            got += step
        if have < into.nbytes:
            into[have:] = bytes(into.nbytes - have)
            if start <= self.total:
                into[self.total - start] = fragments.PAD_MARKER

    def encode(self, indexes: Iterable[int], leaf_size: int,
               progress: Progress | None = None) -> dict[int, bytes]:
        """The Merkle roots of fragments ``indexes``, writing each parity fragment among them
        to its file (replacing any there)."""
        check_leaf_size(leaf_size)
        wanted = sorted(set(indexes))
        if any(not 0 <= i < self.n for i in wanted):
            raise FragmentError(f"fragments are numbered 0..{self.n - 1}")
        parity = [i for i in wanted if i >= self.k]
        stripe = max(self.stripe, leaf_size)
        stripes = -(-self.size // stripe)
        # A stripe holds a power of two of leaves, so it is a whole subtree of the fragment's
        # tree (the odd node carried up at the end of a level falls where it would in the
        # whole tree): only each stripe's root is kept, 32 bytes a stripe instead of a leaf.
        subroots = {i: bytearray(stripes * sha256x.DIGEST) for i in wanted}
        self.directory.mkdir(parents=True, exist_ok=True)
        outs = {i: os.open(self.parity_file(i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                for i in parity}
        done = 0
        lock = threading.Lock()

        def code(offset: int) -> None:
            nonlocal done
            length = min(stripe, self.size - offset)
            pieces = [memoryview(bytearray(length)) for _ in range(self.k)]
            for i, piece in enumerate(pieces):
                self._read(piece, i * self.size + offset)
            slices = {i: pieces[i] for i in wanted if i < self.k}
            if parity:
                coded = fragments.parity(pieces, self.k, self.n, parity)
                slices.update(zip(parity, coded, strict=True))
            at = offset // stripe * sha256x.DIGEST
            for i, data in slices.items():
                subroots[i][at : at + sha256x.DIGEST] = sha256x.root_of(
                    sha256x.leaf_digests(data, leaf_size))
                if i in outs:
                    _pwrite_all(outs[i], data, offset)
            if progress is not None:
                with lock:
                    done += length * len(wanted)
                    progress(done, self.size * len(wanted))

        try:
            with ThreadPoolExecutor(2, thread_name_prefix="stripe") as pool:
                pending: deque[Future[None]] = deque()
                try:
                    for offset in range(0, self.size, stripe):
                        if len(pending) >= WINDOW:
                            pending.popleft().result()
                        pending.append(pool.submit(code, offset))
                    while pending:
                        pending.popleft().result()
                finally:
                    for job in pending:
                        job.cancel()
        except BaseException:
            for i in parity:
                self.parity_file(i).unlink(missing_ok=True)
            raise
        finally:
            for fd in outs.values():
                os.close(fd)
        with self._lock:
            for i in parity:
                self._parity.pop(i, None)
            self.ready.update(wanted)
        return {i: sha256x.root_of(d) for i, d in subroots.items()}

    # --- serving --------------------------------------------------------------------------

    def parts(self, index: int) -> list[memoryview]:
        """Fragment ``index`` as views to send in order, mapped from the files (nothing read
        into memory; the pages are the page cache's). The fragment must be :attr:`ready`."""
        if index not in self.ready:
            raise FragmentError(f"fragment {index} is not coded")
        with self._lock:
            if index >= self.k:
                mapped = self._parity.get(index)
                if mapped is None:
                    with open(self.parity_file(index), "rb") as fh:
                        if os.fstat(fh.fileno()).st_size != self.size:
                            raise IntegrityError(f"parity fragment {index} is incomplete")
                        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                    self._parity[index] = mapped
                return [memoryview(mapped)]
            if self._record is None:
                if self._fd < 0:
                    raise IntegrityError("the block record is closed")
                self._record = mmap.mmap(self._fd, self.total, access=mmap.ACCESS_READ)
            record = memoryview(self._record)
        start = index * self.size
        end = start + self.size
        views = [record[start : min(end, self.total)]] if start < self.total else []
        if end > self.total:
            tail = memoryview(bytearray(end - max(start, self.total)))
            self._read(tail, max(start, self.total))
            views.append(tail)
        return views


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    written = 0
    while written < data.nbytes:
        written += os.pwrite(fd, data[written:], offset + written)


def recover_in_place(slots: memoryview, have: Iterable[int], k: int, n: int,
                     stripe: int = STRIPE) -> memoryview:
    """The padded record from ``k`` fragments lying in ``slots`` (fragment ``i`` in slot ``i``
    of ``len(slots) // n`` bytes): any data fragment missing is recovered into its slot a
    stripe at a time, so slots ``0..k-1`` become the record without a second buffer. Returns
    those slots as one view."""
    fragments.check_params(k, n)
    size = slots.nbytes // n
    chosen = sorted(have)[:k]
    if len(chosen) < k:
        raise FragmentError(f"{len(chosen)} fragments given, {k} needed")
    missing = [i for i in range(k) if i not in chosen]
    for offset in range(0, size, stripe) if missing else ():
        end = min(offset + stripe, size)
        pieces = fragments.recover_primaries(
            {i: slots[i * size + offset : i * size + end] for i in chosen}, k, n)
        for i in missing:
            slots[i * size + offset : i * size + end] = pieces[i]
    return slots[: k * size]

