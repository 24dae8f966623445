"""Blocktree paths: ``/<root principal>/a/b/c``.

Paths are compared as text, so only one spelling of a path is allowed: no empty, ``.`` or
``..`` segments, no trailing slash, the owner's principal in its one text form, and no
invisible or control characters. ``/global`` is the read-only global tree and never a blocktree
path.

Which characters are refused is a fixed list of code-point ranges (:data:`INVISIBLE`), not a
Unicode category lookup: the categories change with each Unicode version (a code point
unassigned in one version is assigned in the next), and nodes running different Python versions
must not disagree on which events are valid.
"""

from __future__ import annotations

import functools

from chain.core.errors import BadEvent
from chain.core.principal import Principal

MAX_PATH_BYTES = 1024

# Code points a path segment or an announced address may not hold (inclusive ranges): controls,
# every space but U+0020, zero-width and bidirectional formatting characters, line and
# paragraph separators, the byte-order mark, private use and noncharacters.
INVISIBLE: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F), (0x007F, 0x00A0), (0x00AD, 0x00AD), (0x061C, 0x061C), (0x1680, 0x1680),
    (0x180E, 0x180E), (0x2000, 0x200F), (0x2028, 0x202F), (0x205F, 0x206F), (0x3000, 0x3000),
    (0xD800, 0xF8FF), (0xFDD0, 0xFDEF), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
    (0xF0000, 0x10FFFF),
) + tuple((plane + 0xFFFE, plane + 0xFFFF) for plane in range(0, 0xF0000, 0x10000))


def visible(text: str) -> bool:
    """Whether ``text`` holds none of the :data:`INVISIBLE` code points."""
    for ch in text:
        c = ord(ch)
        if 0x20 <= c < 0x7F:
            continue
        if any(lo <= c <= hi for lo, hi in INVISIBLE):
            return False
    return True


def check_path(path: str) -> Principal:
    """Validate a blocktree path and return the principal that owns its tree."""
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise BadEvent(f"path longer than {MAX_PATH_BYTES} bytes")
    if not path.startswith("/") or path.endswith("/") and path != "/":
        raise BadEvent(f"a path starts with '/' and has no trailing '/': {path!r}")
    parts = path[1:].split("/")
    for part in parts:
        if part in ("", ".", "..") or not visible(part):
            raise BadEvent(f"bad path segment {part!r} in {path!r}")
    owner = _tree_owner(parts[0])
    if isinstance(owner, str):
        raise BadEvent(f"a path {owner}: {path!r}")
    return owner


@functools.lru_cache(maxsize=4096)
def _tree_owner(segment: str) -> Principal | str:
    """The principal a path's first segment names, or what is wrong with it; parsed once per
    distinct segment: a block's offers and stores name a few owners many times over, and a
    parse is two base32 conversions and two hashes."""
    try:
        owner = Principal.parse(segment)
    except Exception:
        return "starts with its blocktree's principal"
    if str(owner) != segment:
        return "names its owner in the principal's one text form"
    return owner


def contains(outer: str, inner: str) -> bool:
    """True iff ``inner`` is ``outer`` or lies below it."""
    return inner == outer or inner.startswith(outer + "/")
