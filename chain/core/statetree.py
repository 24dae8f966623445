"""The authenticated global tree: a sparse Merkle tree over SHA-256 of each state key.

Every key of the global tree (accounts, contracts, fragments by path, host records, revocations,
writecap spending, the contract indexes) is a leaf at the 256-bit path ``SHA-256(key)``. A leaf
sits at the shallowest depth where its path is unique (a *shortcut* leaf), so a tree of ``N``
keys is about ``log2 N`` deep and an update touches one node per level for each changed key.
The shape depends only on the set of keys and values, never on the order they arrived: a
reorg or a reindex that reaches the same state reaches the same nodes and the same root.

Hashes (``H`` = SHA-256): empty subtree = 32 zero bytes; leaf = ``H(0x00 ‖ kh ‖ vh)`` with
``kh = H(key)``, ``vh = H(value)``; inner node = ``H(0x01 ‖ left ‖ right)``. Nodes are kept in
the node's LevelDB by position (path prefix, then depth), so reading the path to one key is
one lookup per level, and a subtree's nodes are neighbours in the database. This module is
pure: it reads nodes through a ``get`` function and returns the node writes, so the ledger can
put them in the block's batch and a light client can check proofs with nothing but a header.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from chain.core.encoding import Reader, Writer, decode_all
from chain.core.errors import DecodeError

EMPTY = bytes(32)
MAX_DEPTH = 256
_LEAF = 0
_INNER = 1

Get = Callable[[bytes], bytes | None]
Leaf = tuple[bytes, bytes]  # (key hash, value hash)


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def key_hash(key: bytes) -> bytes:
    return _h(key)


def value_hash(value: bytes) -> bytes:
    return _h(value)


def leaf_hash(kh: bytes, vh: bytes) -> bytes:
    return _h(b"\x00" + kh + vh)


def inner_hash(left: bytes, right: bytes) -> bytes:
    return _h(b"\x01" + left + right)


def bit(kh: bytes, depth: int) -> int:
    """Bit ``depth`` of a path, most significant bit of the first byte first."""
    return (kh[depth >> 3] >> (7 - (depth & 7))) & 1


def _masked(kh: bytes, depth: int) -> bytes:
    shift = MAX_DEPTH - depth
    return ((int.from_bytes(kh, "big") >> shift) << shift).to_bytes(32, "big")


Node = tuple[int, bytes, bytes]  # (kind, key hash or left, value hash or right)

#: The levels a :class:`NodeCache` holds by default: depths 0 to 16, at most 2^17 - 1 nodes
#: (about 28 MB), the ones every block's changes pass through once the tree has a few
#: hundred thousand keys.
CACHE_DEPTH = 16


class NodeCache:
    """The raw nodes of the tree's top levels (depth at most ``depth``) by database position,
    kept across blocks so that the levels every update passes through are not read from the
    database again and again. Deeper nodes are not kept: below the top levels a block's keys
    are spread at random, a node read by one block is seldom read by the next, and keeping
    them would only churn the cache (an LRU over all levels spent more time evicting than it
    saved). The top levels bound the cache's size by themselves: nothing is ever evicted.

    It must only ever hold what the database holds: it is filled by reads, and an update's
    node writes enter it through :meth:`committed` once their batch has landed (never
    before: a block refused after its update leaves the database, and so the cache, as they
    were). Whoever changes the nodes any other way (a wipe) calls :meth:`clear`."""

    __slots__ = ("_nodes", "depth")

    def __init__(self, depth: int = CACHE_DEPTH) -> None:
        self.depth = depth
        self._nodes: dict[bytes, bytes] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._nodes)

    def holds(self, pos: bytes) -> bool:
        """Whether the node at database key ``pos`` belongs in the cache: a position ends with
        its depth (u16be)."""
        return pos[-2] == 0 and pos[-1] <= self.depth

    def get(self, pos: bytes) -> bytes | None:
        return self._nodes.get(pos)

    def put(self, pos: bytes, raw: bytes) -> None:
        """Keep the node ``raw`` read at ``pos`` (if it belongs in the cache)."""
        if self.holds(pos):
            self._nodes[pos] = raw

    def committed(self, writes: dict[bytes, bytes | None]) -> None:
        """Take in node writes (from :func:`update`) that the database now holds."""
        nodes = self._nodes
        holds = self.holds
        for pos, raw in writes.items():
            if holds(pos):
                if raw is None:
                    nodes.pop(pos, None)
                else:
                    nodes[pos] = raw

    def clear(self) -> None:
        self._nodes.clear()


class NodeStore:
    """Where the nodes live: ``prefix ‖ path masked to depth bits (32 bytes) ‖ u16be(depth)``
    maps to ``0x00 ‖ kh ‖ vh`` (a leaf) or ``0x01 ‖ left ‖ right`` (an inner node); read
    through ``cache`` when there is one.

    The path comes first so that a subtree's nodes sort together: below the cached levels a
    key's remaining nodes lie in one or two of LevelDB's data blocks, and one block read
    serves the whole rest of its path (ordered by depth first, each level of the path was
    a block of its own; the layout took a third off an import at 100,000 principals)."""

    __slots__ = ("cache", "get", "heads", "prefix")

    def __init__(self, prefix: bytes, get: Get, cache: NodeCache | None = None) -> None:
        self.prefix = prefix
        self.get = get
        self.cache = cache
        # the position's last bytes for each depth, made once rather than per node
        self.heads = tuple(d.to_bytes(2, "big") for d in range(MAX_DEPTH + 1))

    def at(self, depth: int, path: int) -> bytes:
        """The database key of the node at ``depth`` on ``path`` (the path as an integer)."""
        shift = MAX_DEPTH - depth
        return self.prefix + ((path >> shift) << shift).to_bytes(32, "big") + self.heads[depth]

    def read(self, depth: int, path: int) -> Node | None:
        return self.read_at(self.at(depth, path))

    def read_at(self, pos: bytes) -> Node | None:
        """The node at database key ``pos`` (from :meth:`at`), or None."""
        cache = self.cache
        raw = cache.get(pos) if cache is not None else None
        if raw is None:
            raw = self.get(pos)
            if raw is None:
                return None
            if len(raw) != 65 or raw[0] > _INNER:
                depth = int.from_bytes(pos[-2:], "big")
                raise DecodeError(f"a state tree node at depth {depth} does not decode")
            if cache is not None:
                cache.put(pos, raw)
        return raw[0], raw[1:33], raw[33:]

    def root(self) -> bytes:
        node = self.read(0, 0)
        if node is None:
            return EMPTY
        kind, a, b = node
        return leaf_hash(a, b) if kind == _LEAF else inner_hash(a, b)


# --- updates ----------------------------------------------------------------------------------

# What an update of a subtree gives back: its hash, and its leaf when it is a single leaf
# (EMPTY and None: the subtree is empty; a hash and None: an inner node).
_Result = tuple[bytes, Leaf | None]


def _split_point(path: int, depth: int) -> int:
    """The smallest path under ``path``'s depth-bit prefix whose bit ``depth`` is 1."""
    shift = MAX_DEPTH - depth
    return ((path >> shift) << shift) | (1 << (shift - 1))


class _Update:
    """One descent applying sorted changes; paths are integers, and a subtree's changes are a
    range of the sorted arrays, split by bisection rather than copied. Each node's database
    key is made once, when it is read, and reused for its write."""

    __slots__ = ("at", "paths", "read_at", "values", "writes")

    def __init__(self, store: NodeStore, changes: list[tuple[bytes, bytes | None]]) -> None:
        self.at = store.at
        self.read_at = store.read_at
        self.paths = [int.from_bytes(kh, "big") for kh, _ in changes]
        self.values = changes
        self.writes: dict[bytes, bytes | None] = {}

    def put_leaf(self, pos: bytes, leaf: Leaf) -> _Result:
        raw = self.writes[pos] = b"\x00" + leaf[0] + leaf[1]
        return _h(raw), leaf

    def put_inner(self, pos: bytes, left: bytes, right: bytes) -> _Result:
        raw = self.writes[pos] = b"\x01" + left + right
        return _h(raw), None

    def build(self, depth: int, leaves: list[tuple[int, Leaf]]) -> _Result:
        """A subtree over ``leaves`` (sorted by path) at a position that held nothing below."""
        if not leaves:
            return EMPTY, None
        if len(leaves) == 1:
            return self.put_leaf(self.at(depth, leaves[0][0]), leaves[0][1])
        if depth >= MAX_DEPTH:
            raise DecodeError("two state keys share a 256-bit path")
        cut = _split_point(leaves[0][0], depth)
        split = bisect.bisect_left(leaves, cut, key=lambda leaf: leaf[0])
        left = self.build(depth + 1, leaves[:split])[0]
        right = self.build(depth + 1, leaves[split:])[0]
        return self.put_inner(self.at(depth, leaves[0][0]), left, right)

    def update(self, depth: int, pos: bytes, node: Node | None, lo: int, hi: int) -> _Result:
        """Apply changes ``lo:hi`` (non-empty, all under this position, whose database key is
        ``pos``) to ``node``."""
        if node is None or node[0] == _LEAF:
            return self.update_leaf(depth, pos, node, lo, hi)
        paths = self.paths
        here = paths[lo]
        split = bisect.bisect_left(paths, _split_point(here, depth), lo, hi)
        left, right = node[1], node[2]
        below = depth + 1
        went_left = went_right = None
        if lo < split:
            at = self.at(below, here)
            went_left = self.update(below, at, self.read_at(at) if left != EMPTY else None, lo, split)
            left = went_left[0]
        if split < hi:
            at = self.at(below, paths[split])
            went_right = self.update(below, at, self.read_at(at) if right != EMPTY else None,
                                     split, hi)
            right = went_right[0]
        if left != EMPTY and right != EMPTY:
            return self.put_inner(pos, left, right)
        if left == EMPTY and right == EMPTY:
            self.writes[pos] = None
            return EMPTY, None
        # one child left: if it is a single leaf, it moves up to this position
        side = 0 if right == EMPTY else 1
        kept = went_right if side else went_left
        flip = 1 << (MAX_DEPTH - 1 - depth)
        at = self.at(below, here if bool(here & flip) == bool(side) else here ^ flip)
        leaf = kept[1] if kept is not None else self._leaf_at(at)
        if leaf is not None:
            self.writes[at] = None
            return self.put_leaf(pos, leaf)
        return self.put_inner(pos, left, right)

    def update_leaf(self, depth: int, pos: bytes, node: Node | None, lo: int, hi: int) -> _Result:
        """:meth:`update` where the position holds a leaf or nothing: the subtree is built
        anew from that leaf and the changes."""
        if hi - lo == 1:
            kh, vh = self.values[lo]
            if vh is not None and (node is None or node[1] == kh):
                # the usual case, one key set where it was or where nothing was: its leaf
                return self.put_leaf(pos, (kh, vh))
        merged: dict[bytes, bytes] = {node[1]: node[2]} if node is not None else {}
        for kh, vh in self.values[lo:hi]:
            if vh is None:
                merged.pop(kh, None)
            else:
                merged[kh] = vh
        leaves = sorted((int.from_bytes(kh, "big"), (kh, vh)) for kh, vh in merged.items())
        result = self.build(depth, leaves)
        if result[0] == EMPTY and node is not None:
            self.writes[pos] = None
        return result

    def _leaf_at(self, pos: bytes) -> Leaf | None:
        node = self.read_at(pos)
        return (node[1], node[2]) if node is not None and node[0] == _LEAF else None


def update(store: NodeStore, changes: Iterable[tuple[bytes, bytes | None]]
           ) -> tuple[bytes, dict[bytes, bytes | None]]:
    """Apply ``(state key, value or None to delete)`` pairs; return the new root and the node
    writes (position -> node, None to delete). Each node on the changed paths is read and
    hashed once however many of the changed keys pass through it."""
    by_hash: dict[bytes, bytes | None] = {}
    for key, value in changes:
        by_hash[key_hash(key)] = value_hash(value) if value is not None else None
    if not by_hash:
        return store.root(), {}
    job = _Update(store, sorted(by_hash.items()))
    pos = store.at(0, 0)
    root = job.update(0, pos, store.read_at(pos), 0, len(job.paths))[0]
    return root, job.writes


# --- proofs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proof:
    """The path to a key: sibling hashes from the root down, and what the path ends at: an
    empty subtree (``leaf`` None) or a leaf (the key's own, or another one sharing the path)."""

    siblings: tuple[bytes, ...]
    leaf: Leaf | None

    def encode(self) -> bytes:
        w = Writer()
        if self.leaf is None:
            w.u8(0)
        else:
            w.u8(1).fixed(self.leaf[0], 32).fixed(self.leaf[1], 32)
        w.varint(len(self.siblings))
        for s in self.siblings:
            w.fixed(s, 32)
        return bytes(w)

    @classmethod
    def decode(cls, data: bytes) -> Proof:
        def read(r: Reader) -> Proof:
            kind = r.u8()
            if kind > 1:
                raise DecodeError(f"proof terminal kind {kind}")
            leaf = (r.fixed(32), r.fixed(32)) if kind else None
            count = r.varint(MAX_DEPTH)
            return cls(tuple(r.fixed(32) for _ in range(count)), leaf)

        return decode_all(data, read)


def prove(store: NodeStore, key: bytes) -> Proof:
    kh = key_hash(key)
    path = int.from_bytes(kh, "big")
    siblings: list[bytes] = []
    node = store.read(0, 0)
    depth = 0
    while node is not None and node[0] == _INNER:
        b = bit(kh, depth)
        kids = (node[1], node[2])
        siblings.append(kids[1 - b])
        depth += 1
        node = store.read(depth, path) if kids[b] != EMPTY else None
    return Proof(tuple(siblings), (node[1], node[2]) if node is not None else None)


def _shares_prefix(a: bytes, b: bytes, depth: int) -> bool:
    return _masked(a, depth) == _masked(b, depth)


def proof_root(key: bytes, value: bytes | None, proof: Proof) -> bytes | None:
    """The root ``proof`` leads to if ``key`` holds ``value`` (None: is absent), or None when
    the proof cannot say so whatever the root (it ends at another key's leaf for a membership,
    or at a leaf off the key's path)."""
    kh = key_hash(key)
    depth = len(proof.siblings)
    if proof.leaf is None:
        if value is not None:
            return None
        cur = EMPTY
    else:
        lk, lv = proof.leaf
        if value is not None:
            if lk != kh or lv != value_hash(value):
                return None
        elif lk == kh or not _shares_prefix(lk, kh, depth):
            return None
        cur = leaf_hash(lk, lv)
    for d in range(depth - 1, -1, -1):
        s = proof.siblings[d]
        cur = inner_hash(cur, s) if bit(kh, d) == 0 else inner_hash(s, cur)
    return cur


def verify(root: bytes, key: bytes, value: bytes | None, proof: Proof) -> bool:
    """Whether ``proof`` shows that ``key`` holds ``value`` (or is absent) under ``root``."""
    return proof_root(key, value, proof) == root
