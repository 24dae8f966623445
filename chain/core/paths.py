"""Blocktree paths: ``/<root principal>/a/b/c``.

Paths are compared as text, so only one spelling of a path is allowed: no empty, ``.`` or
``..`` segments, no trailing slash, printable characters only. ``/global`` is the read-only
global tree and never a blocktree path.
"""

from __future__ import annotations

from chain.core.errors import BadEvent
from chain.core.principal import Principal

MAX_PATH_BYTES = 1024


def check_path(path: str) -> Principal:
    """Validate a blocktree path and return the principal that owns its tree."""
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise BadEvent(f"path longer than {MAX_PATH_BYTES} bytes")
    if not path.startswith("/") or path.endswith("/") and path != "/":
        raise BadEvent(f"a path starts with '/' and has no trailing '/': {path!r}")
    parts = path[1:].split("/")
    for part in parts:
        if part in ("", ".", "..") or not part.isprintable():
            raise BadEvent(f"bad path segment {part!r} in {path!r}")
    try:
        return Principal.parse(parts[0])
    except Exception as exc:
        raise BadEvent(f"a path starts with its blocktree's principal: {path!r}") from exc


def contains(outer: str, inner: str) -> bool:
    """True iff ``inner`` is ``outer`` or lies below it."""
    return inner == outer or inner.startswith(outer + "/")
