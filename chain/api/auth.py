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
import ipaddress
import os
import secrets
from pathlib import Path

COOKIE_NAME = "api.cookie"
REMOTE_ENV = "BLOCKCOIN_API_REMOTE"


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1), in any case, brackets allowed."""
    host = host.strip().lower().removeprefix("[").removesuffix("]")
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cookie_path(datadir: Path) -> Path:
    return datadir / COOKIE_NAME


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


def read_cookie(datadir: Path) -> str | None:
    try:
        return cookie_path(datadir).read_text().strip() or None
    except OSError:
        return None


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
