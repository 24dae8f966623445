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


SESSION_COOKIE = "blockcoin_session"
SESSION_HEADER = "X-Blockcoin-Dashboard"
"""A request authenticated by the session cookie must also carry this header: a page of another
site can make a browser send the cookie only with a plain form post, never with a custom
header (that needs a CORS preflight the node does not answer), so no other site can act."""
SESSION_SECONDS = 12 * 3600


class Sessions:
    """The dashboard's logins: a browser that proved it knows the cookie file's token gets a
    random session id in an HttpOnly cookie, so the token itself never sits in the page's
    script, its storage or a URL. Kept in memory: a restarted node (which writes a new token
    anyway) forgets them."""

    def __init__(self, seconds: float = SESSION_SECONDS, limit: int = 1000) -> None:
        self.seconds = seconds
        self.limit = limit
        self._expiry: dict[str, float] = {}

    def open(self, now: float) -> str:
        self._expiry = {s: t for s, t in self._expiry.items() if t > now}
        while len(self._expiry) >= self.limit:  # the oldest login goes first
            self._expiry.pop(next(iter(self._expiry)))
        sid = secrets.token_hex(32)
        self._expiry[sid] = now + self.seconds
        return sid

    def valid(self, sid: str | None, now: float) -> bool:
        if not sid or not sid.isascii():
            return False
        expiry = self._expiry.get(sid)
        return expiry is not None and expiry > now

    def close(self, sid: str | None) -> None:
        if sid:
            self._expiry.pop(sid, None)
