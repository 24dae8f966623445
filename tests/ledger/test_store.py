"""The ledger store: network binding, locking, and batches that are all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.errors import DatadirLocked, LedgerError
from ledger.store import LedgerStore


def test_database_belongs_to_one_network(tmp_path: Path) -> None:
    LedgerStore(tmp_path, "regtest").close()
    with pytest.raises(LedgerError, match="belongs to network 'regtest'"):
        LedgerStore(tmp_path, "main")


def test_second_opener_gets_a_clear_error(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path, "regtest")
    try:
        with pytest.raises(DatadirLocked, match="in use"):
            LedgerStore(tmp_path, "regtest")
    finally:
        store.close()


def test_uncommitted_batch_changes_nothing(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path, "regtest")
    try:
        batch = store.batch()
        batch.put(b"Sx", b"1")
        batch.delete(b"Mnetwork")
        assert store.db.get(b"Sx") is None and store.db.get(b"Mnetwork") == b"regtest"
        batch.commit()
        assert store.db.get(b"Sx") == b"1" and store.db.get(b"Mnetwork") is None
    finally:
        store.close()
