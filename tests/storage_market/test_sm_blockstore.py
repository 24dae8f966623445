"""Block records and the local block store: round trips, key hierarchy, atomicity, corruption."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from chain.core.keys import KeyPair
from storage_market import fragments
from storage_market.blockstore import (
    DIGEST_FORMAT,
    RECORD_FORMAT,
    BlockHeader,
    BlockStore,
    StoredBlock,
)
from storage_market.crypto import SEAL_PIECE, new_block_key, new_version
from storage_market.errors import (
    BlockNotFound,
    DecryptError,
    FormatError,
    IntegrityError,
    InvalidPath,
    NoReadcap,
)
from storage_market.merkle import MerkleTree, check_root, verify_proof

OWNER = KeyPair.development(201)
FRIEND = KeyPair.development(202)
STRANGER = KeyPair.development(203)
ROOT = OWNER.principal.root_path


@pytest.fixture
def store(tmp_path: Path) -> BlockStore:
    return BlockStore(tmp_path / "blocks")


def _tree(store: BlockStore) -> dict[str, bytes]:
    """root (readcap: owner) -> /photos -> /photos/2024 (readcap: friend)."""
    keys = {ROOT: new_block_key(), ROOT + "/photos": new_block_key()}
    keys[ROOT + "/photos/2024"] = new_block_key()
    store.put(StoredBlock.seal(ROOT, b"root", keys[ROOT], readers=[OWNER.public]))
    store.put(StoredBlock.seal(ROOT + "/photos", b"album", keys[ROOT + "/photos"],
                               parent_key=keys[ROOT]))
    store.put(StoredBlock.seal(ROOT + "/photos/2024", b"pictures", keys[ROOT + "/photos/2024"],
                               parent_key=keys[ROOT + "/photos"], readers=[FRIEND.public]))
    return keys


def test_round_trip_and_key_hierarchy(store: BlockStore) -> None:
    keys = _tree(store)
    assert store.read(ROOT, OWNER) == b"root"
    assert store.read(ROOT + "/photos", OWNER) == b"album"  # via the parent's key
    assert store.read(ROOT + "/photos/2024", OWNER) == b"pictures"  # two levels down
    assert store.read(ROOT + "/photos/2024", FRIEND) == b"pictures"  # own readcap
    assert store.block_key(ROOT + "/photos/2024", OWNER) == keys[ROOT + "/photos/2024"]
    with pytest.raises(NoReadcap):
        store.read(ROOT + "/photos", FRIEND)  # read access does not flow upwards
    with pytest.raises(NoReadcap):
        store.read(ROOT + "/photos/2024", STRANGER)
    assert sorted(store.paths()) == sorted(keys)
    assert sorted(store.paths(OWNER.principal)) == sorted(keys)
    assert list(store.paths(STRANGER.principal)) == []


def test_replace_delete_and_missing(store: BlockStore) -> None:
    keys = _tree(store)
    old = store.get(ROOT + "/photos").version
    store.put(StoredBlock.seal(ROOT + "/photos", b"album v2", keys[ROOT + "/photos"],
                               parent_key=keys[ROOT]))
    assert store.get(ROOT + "/photos").version != old
    assert store.read(ROOT + "/photos", OWNER) == b"album v2"
    assert store.delete(ROOT + "/photos") and not store.has(ROOT + "/photos")
    assert not store.delete(ROOT + "/photos")
    with pytest.raises(BlockNotFound):
        store.get(ROOT + "/photos")
    with pytest.raises(BlockNotFound):
        store.read(ROOT + "/photos/2024", OWNER)  # the chain of keys is broken


def test_header_rules() -> None:
    key = new_block_key()
    with pytest.raises(FormatError):
        StoredBlock.seal(ROOT, b"x", key)  # a root block needs a readcap
    with pytest.raises(FormatError):
        StoredBlock.seal(ROOT + "/a", b"x", key, readers=[OWNER.public])  # and others a parent
    with pytest.raises(InvalidPath):
        StoredBlock.seal(ROOT, b"x", key, readers=[OWNER.public], parent_key=key)


def test_swapped_version_or_path_does_not_open() -> None:
    key = new_block_key()
    a = StoredBlock.seal(ROOT + "/a", b"A", key, parent_key=new_block_key())
    b = StoredBlock.seal(ROOT + "/b", b"B", key, parent_key=new_block_key())
    # Graft a's payload under b's header (with a valid checksum, as an attacker could).
    h = b.header
    forged_header = BlockHeader(h.path, h.version, h.readcaps, h.parent_key,
                                a.header.payload_size)
    forged = StoredBlock.decode(forged_header.record_prefix() + bytes(a.payload))
    with pytest.raises(DecryptError):
        forged.open(key)
    h = a.header
    replay = BlockHeader(h.path, new_version(), h.readcaps, h.parent_key, h.payload_size)
    with pytest.raises(DecryptError):
        StoredBlock.decode(replay.record_prefix() + bytes(a.payload)).open(key)


def test_paths_cannot_escape_the_store(store: BlockStore) -> None:
    for bad in ["/../../etc/passwd", ROOT + "/../x", ROOT + "/./x", ROOT + "//x", "x",
                ROOT + "/a\x00b", "/global/principals"]:
        with pytest.raises(InvalidPath):
            store.file_for(bad)
    weird = ROOT + "/..a/ b /%2e%2e/\u00e9"
    target = store.file_for(weird).resolve()
    assert target.parent.parent == store.directory.resolve()
    store.put(StoredBlock.seal(weird, b"w", new_block_key(), parent_key=new_block_key()))
    assert store.get(weird).path == weird


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["magic", "format", "length", "header", "checksum", "payload",
                                   "tag", "truncate", "append", "empty"])
def test_corruption_is_an_integrity_error(store: BlockStore, where: str) -> None:
    """Keyless checks catch a damaged header or length; a damaged payload is caught by the
    AEAD when the block is opened (and, for a fragment, by its Merkle root on chain)."""
    block = StoredBlock.seal(ROOT + "/f", os.urandom(5000), new_block_key(),
                             parent_key=new_block_key(), readers=[FRIEND.public])
    store.put(block)
    file = store.file_for(ROOT + "/f")
    offset = len(block.record) - len(block.payload)
    if where == "truncate":
        file.write_bytes(file.read_bytes()[:-1])
    elif where == "append":
        file.write_bytes(file.read_bytes() + b"\x00")
    elif where == "empty":
        file.write_bytes(b"")
    else:
        _flip(file, {"magic": 0, "format": 4, "length": 5, "header": 40, "checksum": offset - 1,
                     "payload": offset + 100, "tag": len(block.record) - 1}[where])
    if where in ("payload", "tag"):
        damaged = store.get(ROOT + "/f")
        with pytest.raises(DecryptError):
            damaged.open(damaged.block_key(FRIEND))
    else:
        with pytest.raises(IntegrityError):
            store.get(ROOT + "/f")
    if where not in ("payload", "tag", "truncate", "append"):
        with pytest.raises(IntegrityError):
            store.header(ROOT + "/f")
    assert list(store.paths()) in ([], [ROOT + "/f"])


def test_file_of_another_path_is_refused(store: BlockStore) -> None:
    store.put(StoredBlock.seal(ROOT + "/a", b"A", new_block_key(), parent_key=new_block_key()))
    store.put(StoredBlock.seal(ROOT + "/b", b"B", new_block_key(), parent_key=new_block_key()))
    store.file_for(ROOT + "/a").write_bytes(store.file_for(ROOT + "/b").read_bytes())
    with pytest.raises(IntegrityError):
        store.get(ROOT + "/a")
    with pytest.raises(IntegrityError):
        store.header(ROOT + "/a")
    assert sorted(store.paths()) == [ROOT + "/b"]


def test_interrupted_write_keeps_the_old_version(store: BlockStore,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    key, parent = new_block_key(), new_block_key()
    store.put(StoredBlock.seal(ROOT + "/a", b"old", key, parent_key=parent))
    new = StoredBlock.seal(ROOT + "/a", b"new", key, parent_key=parent)

    def crash(*_: object) -> None:
        raise OSError("power lost")

    for victim in ("fsync", "replace"):
        with monkeypatch.context() as m:
            m.setattr(os, victim, crash)
            with pytest.raises(OSError):
                store.put(new)
        assert store.get(ROOT + "/a").open(key) == b"old"
        assert [p.name for p in store.file_for(ROOT + "/a").parent.iterdir()] == [
            store.file_for(ROOT + "/a").name
        ]
    # A temporary file left by a crash is invisible to readers and listings.
    leftover = store.file_for(ROOT + "/a").with_name(".leftover.tmp")
    leftover.write_bytes(bytes(new.record)[:10])
    assert list(store.paths()) == [ROOT + "/a"]
    store.put(new)
    assert store.get(ROOT + "/a").open(key) == b"new"
    assert oct(store.file_for(ROOT + "/a").stat().st_mode & 0o777) == "0o600"


def test_record_through_fragments_and_merkle_back_to_plaintext() -> None:
    """The whole data plane of a put and a get, in process."""
    payload = os.urandom(200_000)
    key = new_block_key()
    block = StoredBlock.seal(ROOT + "/big", payload, key, parent_key=new_block_key(),
                             readers=[FRIEND.public])
    frags = fragments.encode(block.record)
    trees = [MerkleTree(f) for f in frags]
    roots = [t.root for t in trees]
    for t in trees:
        for i in (0, t.leaf_count - 1):
            assert verify_proof(t.root, t.leaf(i), i, t.leaf_count, t.proof(i))
    got = {i: bytes(frags[i]) for i in (1, 3, 4)}
    for i, f in got.items():
        check_root(f, roots[i])
    fetched = StoredBlock.decode(fragments.decode(got))
    assert fetched.header == block.header
    assert fetched.open(fetched.block_key(FRIEND)) == payload


def test_a_file_sealed_to_the_store_in_pieces_reads_back(tmp_path: Path) -> None:
    """A file larger than a seal piece, sealed straight into the store: nothing is in place
    before the commit, the committed record opens to the file, and a record never committed
    leaves nothing behind."""
    payload = os.urandom(2 * SEAL_PIECE + 12_345)
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    store = BlockStore(tmp_path / "blocks")
    key = new_block_key()
    with src.open("rb") as fh:
        record = store.seal_file(ROOT + "/large", fh, key, readers=[OWNER.public],
                                 parent_key=new_block_key())
    assert not store.has(ROOT + "/large")
    assert record.size == os.fstat(record.fd).st_size
    record.commit()
    record.close()
    block = store.get(ROOT + "/large")
    assert block.header == record.header and block.record.nbytes == record.size
    assert block.open(key) == payload
    with src.open("rb") as fh:
        dropped = store.seal_file(ROOT + "/other", fh, key, parent_key=new_block_key())
    dropped.close()
    assert not store.has(ROOT + "/other")
    assert [p.name for p in store.file_for(ROOT + "/other").parent.iterdir()] == [
        store.file_for(ROOT + "/large").name]


def test_a_version_1_record_is_still_read_and_its_digest_checked() -> None:
    """Records written before the payload digest was dropped (format 1: the header ends with
    the payload's SHA-256) open as before; a damaged payload is caught without the key."""
    key = new_block_key()
    block = StoredBlock.seal(ROOT + "/old", b"written by format 1", key,
                             parent_key=new_block_key(), readers=[FRIEND.public])
    h = block.header
    old = BlockHeader(h.path, h.version, h.readcaps, h.parent_key, h.payload_size,
                      hashlib.sha256(block.payload).digest())
    record = bytearray(old.record_prefix() + bytes(block.payload))
    assert record[4] == DIGEST_FORMAT and block.record[4] == RECORD_FORMAT
    again = StoredBlock.decode(record)
    assert again.header == old
    assert again.open(again.block_key(FRIEND)) == b"written by format 1"
    record[-1] ^= 1
    with pytest.raises(IntegrityError, match="digest"):
        StoredBlock.decode(record)


def test_a_killed_writes_temporary_file_is_removed_and_records_stay(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "blocks")
    key = new_block_key()
    store.put(StoredBlock.seal(ROOT + "/kept", b"kept", key, parent_key=new_block_key()))
    with (tmp_path / "src").open("wb+") as fh:
        fh.write(b"x" * 1000)
        fh.seek(0)
        record = store.seal_file(ROOT + "/cut", fh, key, parent_key=new_block_key())
    os.close(record.fd)  # the process died here: neither committed nor closed
    assert store.remove_temporaries() == 1
    assert list(store.paths()) == [ROOT + "/kept"]
    assert store.remove_temporaries() == 0
