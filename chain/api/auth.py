"""Cookie-file authentication, as bitcoind does it.

At start the node writes a fresh random token to ``<datadir>/api.cookie`` with mode 0600, so
only the node's user can read it. Requests that spend or change node state must carry it as
``Authorization: Bearer <token>``; the node deletes the file when it stops. The command line
sends the token only to an API on the loopback interface (unless ``BLOCKCOIN_API_REMOTE=1``),
so a ``node.json`` pointing elsewhere cannot collect it.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from pathlib import Path

from chain.net.http import cookie_path, read_cookie


def write_cookie(datadir: Path) -> str:
    token = secrets.token_hex(32)
    path = cookie_path(datadir)
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    os.replace(tmp, path)
    return token


def remove_cookie(datadir: Path, token: str) -> None:
    if read_cookie(datadir) == token:
        with contextlib.suppress(OSError):
            cookie_path(datadir).unlink()


def check_token(header: str | None, token: str) -> bool:
    """Whether ``header`` carries the token. Anything that is not ASCII (an invalid UTF-8
    header arrives with surrogates) is simply not the token, never an exception."""
    if not header or not header.isascii() or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode())
