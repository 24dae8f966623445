"""Small JSON state files, replaced atomically and durably.

The owner's and the host's bookkeeping (which contracts, which vouchers, how many misses) is a
few kilobytes, rewritten whole after every change: write a temporary file, fsync it, rename it
over the old one, fsync the directory. A crash at any point leaves the old file or the new one,
never a torn one, so a restarted agent resumes exactly where it stopped. A file that does not
parse is an :class:`~storage_market.errors.IntegrityError`, never silently replaced by defaults.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from storage_market.errors import IntegrityError


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    payload = json.dumps(data, indent=1, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
