"""A write-back view of the state: reads fall through to the database, writes stay in memory
until committed into a ledger batch together with the undo record that reverses them and the
state tree's node changes (so the header's state root follows every commit and every undo)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Protocol, TypeVar, cast

from chain.core import statetree
from chain.core.encoding import Reader, Writer, decode_all
from chain.core.principal import Principal
from chain.core.schema import ACCOUNT, STATE, TREE
from globaltree.records import Account


class KeyValueReader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def iterator(self, *, prefix: bytes, include_value: bool = ...) -> Iterator[Any]:
        """Keys under ``prefix`` in order, as ``(key, value)`` pairs unless ``include_value``
        is False (plyvel's interface)."""
        ...


class Sink(Protocol):
    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


class Record(Protocol):
    def encode(self) -> bytes: ...


R = TypeVar("R", bound=Record)
S = TypeVar("S", bound=Sink)


class MemoryDB:
    """A dict with the slice of plyvel's interface a state view uses: the global tree of a
    chain built without a node (tests, benchmarks, reference folds)."""

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.data: dict[bytes, bytes] = dict(data or {})

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def iterator(self, *, prefix: bytes, include_value: bool = True) -> Iterator[Any]:
        for key in sorted(k for k in self.data if k.startswith(prefix)):
            yield (key, self.data[key]) if include_value else key

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)


NodeWrites = dict[bytes, bytes | None]  # state tree node writes: position -> node, None deletes


class Committed(NamedTuple):
    undo: bytes  # the prior value of every key the commit touched
    root: bytes  # the state root after the commit
    nodes: NodeWrites  # the state tree's node writes, for a NodeCache once the batch has landed


def node_store(db: KeyValueReader, cache: statetree.NodeCache | None = None) -> statetree.NodeStore:
    """The state tree's nodes in ``db``, read through ``cache`` if given (see
    :class:`~chain.core.statetree.NodeCache` for the rule its owner keeps)."""
    return statetree.NodeStore(TREE, db.get, cache)


def state_root(db: KeyValueReader) -> bytes:
    return node_store(db).root()


def _update_tree(store: statetree.NodeStore, changes: Iterable[tuple[bytes, bytes | None]],
                 batch: Sink) -> tuple[bytes, NodeWrites]:
    root, writes = statetree.update(store, changes)
    for key, node in writes.items():
        if node is None:
            batch.delete(key)
        else:
            batch.put(key, node)
    return root, writes


def rebuild_tree(db: KeyValueReader, batch: Callable[[], S], commit: Callable[[S], None],
                 chunk: int = 50_000) -> bytes:
    """Build the state tree's nodes anew from the state records in ``db`` (whose nodes have
    been wiped), ``chunk`` records per batch; return the root. The tree's shape depends only on
    the keys and values, so this gives the very nodes a fold would have written: it moves a
    database from an earlier node layout without refolding the chain."""
    store = node_store(db)
    root = store.root()
    records = (item for item in db.iterator(prefix=STATE) if not item[0].startswith(TREE))
    while True:
        changes = list(itertools.islice(records, chunk))
        if not changes:
            return root
        sink = batch()
        root, _ = _update_tree(store, changes, sink)
        commit(sink)


class StateView:
    """Raw keys, plus decoded records (accounts, contracts, host records) kept as objects
    while a block is folded: each is decoded once, mutated in place by later events, and
    encoded once when the view is committed. The state tree's nodes are read through
    ``cache`` if given: its owner feeds it each commit's ``nodes`` once the batch lands."""

    __slots__ = ("_changes", "_db", "_nodes", "_objects", "_read")

    def __init__(self, db: KeyValueReader, cache: statetree.NodeCache | None = None) -> None:
        self._db = db
        self._nodes = node_store(db, cache)
        self._changes: dict[bytes, bytes | None] = {}
        self._objects: dict[bytes, Any] = {}
        self._read: dict[bytes, bytes | None] = {}  # database values read, kept for the undo

    def _fetch(self, key: bytes) -> bytes | None:
        if key in self._read:
            return self._read[key]
        value = self._read[key] = self._db.get(key)
        return value

    def get(self, key: bytes) -> bytes | None:
        obj = self._objects.get(key)
        if obj is not None:
            return cast(bytes, obj.encode())
        if key in self._changes:
            return self._changes[key]
        return self._fetch(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._objects.pop(key, None)
        self._changes[key] = value

    def delete(self, key: bytes) -> None:
        self._objects.pop(key, None)
        self._changes[key] = None

    def keys_with_prefix(self, prefix: bytes) -> list[bytes]:
        """Keys under ``prefix`` as this view sees them, in order."""
        keys = set(self._db.iterator(prefix=prefix, include_value=False))
        for key, value in self._changes.items():
            if key.startswith(prefix):
                if value is None:
                    keys.discard(key)
                else:
                    keys.add(key)
        keys.update(k for k in self._objects if k.startswith(prefix))
        return sorted(keys)

    # --- records ----------------------------------------------------------------------------

    def peek(self, key: bytes, decode: Callable[[bytes], R]) -> R | None:
        """The record at ``key`` or None. Mutate it only together with :meth:`store`."""
        obj = self._objects.get(key)
        if obj is not None:
            return cast(R, obj)
        raw = self.get(key)
        return decode(raw) if raw is not None else None

    def store(self, key: bytes, record: Record) -> None:
        """Keep ``record`` (mutated or new) as the value at ``key``; encoded at commit."""
        self._changes.pop(key, None)
        self._objects[key] = record

    def writable(self, key: bytes, decode: Callable[[bytes], R], new: Callable[[], R]) -> R:
        """The record at ``key`` (``new()`` if absent), kept for writing back at commit."""
        obj = self._objects.get(key)
        if obj is None:
            raw = self.get(key)
            obj = decode(raw) if raw is not None else new()
            self.store(key, obj)
        return cast(R, obj)

    # Accounts are touched two or three times by every event: their two accessors are
    # :meth:`peek` and :meth:`writable` written out, without the generic calls.

    def peek_account(self, p: Principal) -> Account | None:
        """The account as it stands, or None; the caller must not mutate it."""
        key = ACCOUNT + p.digest
        obj = self._objects.get(key)
        if obj is not None:
            return cast(Account, obj)
        raw = self._changes[key] if key in self._changes else self._fetch(key)
        return Account.decode(raw) if raw is not None else None

    def account(self, p: Principal) -> Account:
        """The account for writing: created empty if new, written back at commit."""
        key = ACCOUNT + p.digest
        obj = self._objects.get(key)
        if obj is None:
            raw = self._changes.pop(key, None) if key in self._changes else self._fetch(key)
            obj = Account.decode(raw) if raw is not None else Account()
            self._objects[key] = obj
        return cast(Account, obj)

    def changes(self) -> dict[bytes, bytes | None]:
        for key, obj in self._objects.items():
            self._changes[key] = obj.encode()
        self._objects.clear()
        return self._changes

    def root(self) -> bytes:
        """The state root the database would have with this view's changes committed; reads
        the tree's nodes and writes nothing (block templates put it in their header)."""
        return statetree.update(self._nodes, self.changes().items())[0]

    def commit(self, batch: Sink) -> Committed:
        """Write the changes and the state tree's node changes into ``batch``; return the undo
        record that reverses the changes, the new state root and the node changes."""
        undo = Writer()
        changes = self.changes()
        undo.varint(len(changes))
        for key, value in changes.items():
            old = self._fetch(key)
            undo.var_bytes(key).flag(old is not None)
            if old is not None:
                undo.var_bytes(old)
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        root, nodes = _update_tree(self._nodes, changes.items(), batch)
        self._changes = {}
        self._read = {}
        return Committed(bytes(undo), root, nodes)


def undo_entries(undo: bytes) -> list[tuple[bytes, bytes | None]]:
    """Every key a block touched with the value it had before the block (None: absent)."""

    def read(r: Reader) -> list[tuple[bytes, bytes | None]]:
        out: list[tuple[bytes, bytes | None]] = []
        for _ in range(r.varint()):
            key = r.var_bytes(1 << 16)
            out.append((key, r.var_bytes(1 << 24) if r.flag() else None))
        return out

    return decode_all(undo, read)


def apply_undo(undo: bytes, db: KeyValueReader, batch: Sink,
               cache: statetree.NodeCache | None = None) -> tuple[bytes, NodeWrites]:
    """Restore every key a block touched to the value it had before the block, and the state
    tree with them; return the state root before the block and the node changes (for
    ``cache``, read through, once the batch lands). The tree's shape depends only on the keys
    and values, so re-applying the old values restores the old nodes exactly and the undo
    record need not hold them."""
    restored = undo_entries(undo)
    for key, old in restored:
        if old is None:
            batch.delete(key)
        else:
            batch.put(key, old)
    return _update_tree(node_store(db, cache), restored, batch)
