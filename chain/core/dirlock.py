"""One writer per directory: an exclusive advisory lock held for as long as a process writes.

Two agents on one directory overwrite each other's bookkeeping (each rewrites its whole state
file from what it holds in memory), and two hosts on one key announce different addresses, so
the loser becomes unreachable. So every command that writes an agent's directory (the owner's
``store/``, the host's ``host/``) takes this lock first and keeps it until it exits; a second
one stops at once with one line naming the holder, before it reads or writes anything. The
node's own directory is locked by its database (LevelDB's ``LOCK``), which the node, ``init``,
``import``, ``export`` and ``reindex`` all open.

``flock`` locks belong to the open file: the kernel drops them when the holder exits however it
exits (SIGKILL included), so a crash never leaves a stale lock behind. The lock file keeps the
holder's description and pid, read only to say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from chain.core.errors import BlockcoinError

LOCK_NAME = "LOCK"


class DirectoryInUse(BlockcoinError):
    """Another process holds the directory's lock."""

    code = "in-use"


class DirLock:
    """``with DirLock(path, "blockcoin host start"):`` holds ``path/LOCK`` exclusively."""

    def __init__(self, directory: Path, holder: str) -> None:
        self.directory = directory
        self.holder = holder
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.directory / LOCK_NAME

    def acquire(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise DirectoryInUse(
                f"{self.directory} is in use by {other or 'another process'}; stop it first "
                f"(one {self.holder} per directory)") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.holder} (pid {os.getpid()})\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would race a process opening it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
