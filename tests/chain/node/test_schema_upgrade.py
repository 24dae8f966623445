"""A database written by the previous layout (state tree nodes keyed by depth first) is
upgraded in place when the chain state opens it: the nodes are rebuilt from the state records,
checked against the tip's state root, and the node carries on as if it had always had them."""

from __future__ import annotations

from pathlib import Path

import plyvel
import pytest

from chain.core.events import Transfer
from chain.core.keys import KeyPair
from chain.core.schema import ACCOUNT, META_SCHEMA, TREE
from globaltree.view import state_root
from ledger.errors import CorruptLedger
from ledger.store import SCHEMA
from tests.framework.chainkit import DEV, make_block, open_chain, sign

NEW = [KeyPair.development(200 + i).principal for i in range(6)]


def grown_chain(datadir: Path) -> dict[bytes, bytes]:
    """Three blocks of transfers to new principals; the database's nodes afterwards."""
    chain = open_chain(datadir)
    try:
        for n in range(3):
            chain.accept_block(make_block(chain, [sign(DEV[0], 2 * n, Transfer(NEW[2 * n], 5)),
                                                  sign(DEV[0], 2 * n + 1, Transfer(NEW[2 * n + 1], 6))]))
        return dict(chain.store.db.iterator(prefix=TREE))
    finally:
        chain.close()


def to_schema_1(datadir: Path, corrupt: bool = False) -> None:
    """Rewrite the nodes as schema 1 kept them: prefix, u16be depth, then the masked path."""
    db = plyvel.DB(str(datadir / "chain"))
    try:
        with db.write_batch() as wb:
            for pos, node in db.iterator(prefix=TREE):
                wb.delete(pos)
                wb.put(TREE + pos[-2:] + pos[len(TREE):-2], node)
            if corrupt:
                key, value = next(db.iterator(prefix=ACCOUNT))
                wb.put(key, value + b"\x00")
            wb.put(META_SCHEMA, b"1")
    finally:
        db.close()


def test_schema_1_nodes_are_rebuilt_in_the_new_layout(tmp_path: Path) -> None:
    nodes = grown_chain(tmp_path)
    to_schema_1(tmp_path)
    chain = open_chain(tmp_path)
    try:
        assert chain.store.get_meta(META_SCHEMA) == SCHEMA
        assert dict(chain.store.db.iterator(prefix=TREE)) == nodes  # the very same nodes
        assert state_root(chain.store.db) == chain.tip.header.state_root
        chain.accept_block(make_block(chain, [sign(DEV[1], 0, Transfer(NEW[0], 1))]))
        assert state_root(chain.store.db) == chain.tip.header.state_root
    finally:
        chain.close()


def test_an_upgrade_that_does_not_reach_the_tips_root_stops_and_says_reindex(tmp_path: Path) -> None:
    grown_chain(tmp_path)
    to_schema_1(tmp_path, corrupt=True)
    with pytest.raises(CorruptLedger, match="run reindex"):
        open_chain(tmp_path)
    db = plyvel.DB(str(tmp_path / "chain"))
    try:
        assert db.get(META_SCHEMA) == b"1"  # not moved on: the next open tries again
    finally:
        db.close()


def test_a_schema_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    grown_chain(tmp_path)
    db = plyvel.DB(str(tmp_path / "chain"))
    db.put(META_SCHEMA, b"9")
    db.close()
    with pytest.raises(CorruptLedger, match="schema b'9'.*newer"):
        open_chain(tmp_path)
