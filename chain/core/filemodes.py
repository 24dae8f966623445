"""Who may read a data directory: its owner only.

The data directory holds the wallet key, the API token and ``node.json`` (where the command
line sends that token). Another local user who could write ``node.json`` could point the token
at a server of their own, and one who could read the database could follow the wallet. So every
``blockcoin`` process creates files with umask 077 (0600 files, 0700 directories) whatever the
caller's umask, and opening a data directory tightens what an older version or a careless umask
left open.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_umask() -> None:
    """Make every file this process creates from now on private to its user."""
    os.umask(PRIVATE_UMASK)


def restrict_datadir(path: Path) -> None:
    """Set ``path`` and everything below it (two levels: the database is one directory) to
    0700 directories and 0600 files, skipping symlinks."""
    _restrict(path, 2)


def _restrict(path: Path, depth: int) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        return
    if stat.S_ISDIR(info.st_mode):
        if stat.S_IMODE(info.st_mode) != DIR_MODE:
            path.chmod(DIR_MODE)
        if depth > 0:
            for child in path.iterdir():
                _restrict(child, depth - 1)
    elif stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) != FILE_MODE:
        path.chmod(FILE_MODE)
