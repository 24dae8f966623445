"""A write-back view of the state: reads fall through to the database, writes stay in memory
until committed into a ledger batch together with the undo record that reverses them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from chain.encoding import Reader, Writer, decode_all
from chain.principal import Principal
from globaltree.records import Account, account_key


class KeyValueReader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def iterator(self, *, prefix: bytes, include_value: bool = ...) -> Iterator[bytes]: ...


class Sink(Protocol):
    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


class StateView:
    __slots__ = ("_accounts", "_changes", "_db")

    def __init__(self, db: KeyValueReader) -> None:
        self._db = db
        self._changes: dict[bytes, bytes | None] = {}
        self._accounts: dict[bytes, Account] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._changes:
            return self._changes[key]
        return self._db.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._changes[key] = value

    def delete(self, key: bytes) -> None:
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
        return sorted(keys)

    def peek_account(self, p: Principal) -> Account | None:
        """The account as it stands, or None; the caller must not mutate it."""
        acct = self._accounts.get(p.digest)
        if acct is not None:
            return acct
        raw = self.get(account_key(p))
        return Account.decode(raw) if raw is not None else None

    def account(self, p: Principal) -> Account:
        """The account for writing: created empty if new, written back at commit."""
        acct = self._accounts.get(p.digest)
        if acct is None:
            raw = self.get(account_key(p))
            acct = Account.decode(raw) if raw is not None else Account()
            self._accounts[p.digest] = acct
        return acct

    def changes(self) -> dict[bytes, bytes | None]:
        for digest, acct in self._accounts.items():
            self._changes[b"Sa" + digest] = acct.encode()
        self._accounts.clear()
        return self._changes

    def commit(self, batch: Sink) -> bytes:
        """Write the changes into ``batch`` and return the undo record that reverses them."""
        undo = Writer()
        changes = self.changes()
        undo.varint(len(changes))
        for key, value in changes.items():
            old = self._db.get(key)
            undo.var_bytes(key).flag(old is not None)
            if old is not None:
                undo.var_bytes(old)
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self._changes = {}
        return bytes(undo)


def apply_undo(undo: bytes, batch: Sink) -> None:
    """Restore every key a block touched to the value it had before the block."""

    def read(r: Reader) -> list[tuple[bytes, bytes | None]]:
        out: list[tuple[bytes, bytes | None]] = []
        for _ in range(r.varint()):
            key = r.var_bytes(1 << 16)
            out.append((key, r.var_bytes(1 << 24) if r.flag() else None))
        return out

    for key, old in decode_all(undo, read):
        if old is None:
            batch.delete(key)
        else:
            batch.put(key, old)
