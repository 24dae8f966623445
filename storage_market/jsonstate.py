"""Small JSON state files, replaced atomically and durably.

The owner's and the host's bookkeeping (which contracts, which proofs, how many misses) is a
few kilobytes, rewritten whole after every change: write a temporary file, fsync it, rename it
over the old one, fsync the directory. A crash at any point leaves the old file or the new one,
never a torn one, so a restarted agent resumes exactly where it stopped. A file that does not
parse is an :class:`~storage_market.errors.IntegrityError`, never silently replaced by defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chain.core.aio import settle
from storage_market.errors import IntegrityError

log = logging.getLogger("blockcoin.state")


def encode_json(data: Any) -> bytes:
    return json.dumps(data, indent=1, sort_keys=True).encode()


def write_json(path: Path, data: Any) -> None:
    write_bytes_atomic(path, encode_json(data))


WRITE_PIECE = 8 << 20
"""Bytes written (and sent on their way to disk) at a time by :func:`write_bytes_atomic`."""

DIRECT_ALIGN = 4096
"""Address, length and offset alignment that direct I/O needs (a page: enough for any disk)."""

DIRECT_MIN = 1 << 20
"""Payloads from this size up are written with direct I/O when their buffer allows it."""

_O_DIRECT: int = getattr(os, "O_DIRECT", 0)  # 0 where the platform has no direct I/O


def write_bytes_atomic(path: Path, payload: bytes | bytearray | memoryview) -> None:
    """Replace ``path`` with ``payload`` durably: temporary file, fsync, rename, fsync dir.

    A large payload in a page-aligned writable buffer (a block record, see
    :func:`storage_market.crypto.fresh_buffer`) goes to disk with direct I/O, straight from
    that buffer: no second copy in the page cache, which would cost as much memory again and,
    on a machine where fresh memory is slow to come by, most of the write's time. The rest, or
    a payload that does not qualify, goes out piece by piece, each sent towards the disk at
    once, so the final fsync is short and other synced writes (the node's ledger) do not queue
    behind a mountain of dirty pages.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            data = memoryview(payload).cast("B")
            written = 0
            direct = direct_prefix(data, 0) if data.nbytes >= DIRECT_MIN else 0
            dfd = open_direct(tmp) if direct else None
            if dfd is not None:
                try:
                    written = write_direct(dfd, data[:direct], 0)
                finally:
                    os.close(dfd)
            while written < data.nbytes:
                step = os.pwrite(fd, data[written : written + WRITE_PIECE], written)
                start_writeback(fd, written, step)
                written += step
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def direct_prefix(data: memoryview, offset: int) -> int:
    """How many leading bytes of ``data`` direct I/O can write at ``offset`` of a file: its
    page-aligned prefix, or 0 if the buffer or the offset is not aligned (or read-only)."""
    if not _O_DIRECT or data.readonly or offset % DIRECT_ALIGN or not data.nbytes:
        return 0
    if ctypes.addressof(ctypes.c_char.from_buffer(data)) % DIRECT_ALIGN:
        return 0
    return data.nbytes - data.nbytes % DIRECT_ALIGN


def open_direct(path: Path) -> int | None:
    """A descriptor that writes ``path`` (which exists) with direct I/O, or None where the
    file system does not have it."""
    try:
        return os.open(path, os.O_WRONLY | _O_DIRECT) if _O_DIRECT else None
    except OSError:
        return None


def write_direct(fd: int, data: memoryview, offset: int) -> int:
    """Write ``data`` (a :func:`direct_prefix`) at ``offset`` through a direct descriptor;
    returns the bytes written, which fall short of ``len(data)`` only where the file system
    refused direct I/O at the first write (0) or wrote short (the caller writes the rest the
    ordinary way)."""
    written = 0
    try:
        while written < data.nbytes:
            step = os.pwrite(fd, data[written:], offset + written)
            written += step
            if not step or step % DIRECT_ALIGN:
                break
    except OSError as exc:
        if exc.errno != errno.EINVAL or written:
            raise
    return written


def read_json(path: Path) -> Any:
    """The parsed file, or None if there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise IntegrityError(f"state file {path} is corrupt: {exc}") from exc


def _sync_file_range() -> Callable[..., int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` to disk, without waiting.

    Not a durability step (the caller still fsyncs before relying on the data): it only makes
    that fsync short, because most of the file is already on its way to disk while the rest
    is still being received. Does nothing where ``sync_file_range`` does not exist.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateFile:
    """An agent's state file, written by a worker thread so the event loop never waits on fsync.

    Each write is two fsyncs (file and directory), a few milliseconds on an idle disk and far
    more on a busy one; agents used to write on the event loop after every block, which
    stalled every transfer and handshake they were serving. Now:

    * :meth:`mark` asks for the current state to be written soon, in the background; marks
      within :attr:`delay` of each other coalesce into one write of the newest state (for
      bookkeeping that a restart can recompute or that only trails an action already safe on
      chain; an agent following a fast chain marks on every block);
    * ``await`` :meth:`flush` returns once the state as it is *now* is on disk, for the points
      where the agent must not act before its decision is durable (a receipt, a published
      fragment);
    * :meth:`write_now` writes synchronously (on shutdown).

    The state is serialised on the event loop (where it is mutated), so every write is a
    consistent snapshot, and writes happen one at a time in order.
    """

    def __init__(self, path: Path, snapshot: Callable[[], Any], delay: float = 0.05) -> None:
        self.path = path
        self.snapshot = snapshot
        self.delay = delay  # how long a background write waits for more changes
        self._wanted = 0  # version asked for
        self._written = 0  # version durable
        self._task: asyncio.Task[None] | None = None
        self._hurry: asyncio.Event | None = None
        # flushes waiting for a version: resolved as soon as a write covers it, not when the
        # writer task ends (changes marked meanwhile would make them wait out ``delay`` too)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def mark(self) -> None:
        """Write the state soon (within :attr:`delay`), in the background."""
        self._wanted += 1
        if self._task is None or self._task.done():
            self._hurry = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(self._hurry))
            self._task.add_done_callback(self._report)

    async def flush(self) -> None:
        """Until the state as it is now is durable; a failed write raises here."""
        self.mark()
        written = asyncio.get_running_loop().create_future()
        self._waiters.append((self._wanted, written))
        assert self._hurry is not None
        self._hurry.set()
        await written

    async def _run(self, hurry: asyncio.Event) -> None:
        try:
            while self._written < self._wanted:
                if not hurry.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(hurry.wait(), self.delay)
                version = self._wanted
                hurry.clear()  # a flush from now on wants a later version: it sets it again
                payload = encode_json(self.snapshot())
                await asyncio.to_thread(write_bytes_atomic, self.path, payload)
                self._written = version
                self._settle_waiters(None)
        except BaseException as exc:
            self._settle_waiters(exc)
            raise

    def _settle_waiters(self, failure: BaseException | None) -> None:
        """Release the flushes the last write covered, or fail them all if it failed."""
        waiting = []
        for version, written in self._waiters:
            if written.done():  # its flush was cancelled
                continue
            if failure is None and version > self._written:
                waiting.append((version, written))
            elif isinstance(failure, Exception):
                written.set_exception(failure)
            elif failure is not None:
                written.cancel()
            else:
                written.set_result(None)
        self._waiters = waiting

    @staticmethod
    def _report(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("state file write failed: %s", task.exception())

    async def close(self) -> None:
        """Wait for a write in progress, then write the final state."""
        task, self._task = self._task, None
        if task is not None:
            await settle(task)
        self.write_now()

    def write_now(self) -> None:
        write_json(self.path, self.snapshot())
        self._written = self._wanted
