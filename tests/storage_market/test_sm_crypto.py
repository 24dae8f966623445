"""Block payload sealing, readcaps and child keys: round trips and every refusal that matters."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.core.keys import KeyPair
from storage_market.crypto import (
    LARGE_BUFFER,
    READCAP_SIZE,
    SEAL_OVERHEAD,
    SEAL_PIECE,
    WRAPPED_CHILD_KEY_SIZE,
    Readcap,
    find_readcap,
    fresh_buffer,
    new_block_key,
    new_version,
    parent_path,
    payload_associated_data,
    plaintext_length,
    seal,
    seal_into,
    seal_to,
    sealed_size,
    unseal,
    unseal_into,
    unseal_to,
    unwrap_child_key,
    wrap_child_key,
)
from storage_market.errors import (
    DecryptError,
    FormatError,
    InvalidPath,
    NoReadcap,
    StorageError,
)

ALICE = KeyPair.development(101)
BOB = KeyPair.development(102)
ROOT = ALICE.principal.root_path
DOC = ROOT + "/docs/report"


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=4096), st.sampled_from([ROOT, DOC, ROOT + "/a"]))
def test_seal_round_trip(plaintext: bytes, path: str) -> None:
    key, version = new_block_key(), new_version()
    sealed = seal(key, path, version, plaintext)
    assert len(sealed) == sealed_size(len(plaintext)) == len(plaintext) + SEAL_OVERHEAD
    assert unseal(key, path, version, sealed) == plaintext


def test_seal_is_randomized() -> None:
    key, version = new_block_key(), new_version()
    assert seal(key, DOC, version, b"same") != seal(key, DOC, version, b"same")


def test_seal_into_a_larger_buffer_at_an_offset() -> None:
    key, version = new_block_key(), new_version()
    data = os.urandom(10_000)
    buf = bytearray(b"H" * 7 + bytes(sealed_size(len(data))) + b"T" * 5)
    written = seal_into(key, DOC, version, memoryview(data), memoryview(buf)[7:])
    assert written == sealed_size(len(data))
    assert buf[:7] == b"H" * 7 and buf[-5:] == b"T" * 5
    out = bytearray(len(data))
    assert unseal_into(key, DOC, version, memoryview(buf)[7 : 7 + written], out) == len(data)
    assert out == data


@pytest.mark.parametrize("size", [0, 1, SEAL_PIECE - 1, SEAL_PIECE, 2 * SEAL_PIECE + 17])
def test_streamed_seal_is_the_same_stream_in_bounded_pieces(size: int, tmp_path: Path) -> None:
    key, version = new_block_key(), new_version()
    data = os.urandom(size)
    buf = bytearray(sealed_size(size) + 3)  # a tail that must stay untouched
    pieces: list[bytes] = []
    written = seal_to(key, DOC, version, data, lambda p: pieces.append(bytes(p)))
    assert written == sealed_size(size) and sum(map(len, pieces)) == written
    assert max(map(len, pieces)) <= SEAL_PIECE
    sealed = b"".join(pieces)
    assert unseal(key, DOC, version, sealed) == data
    src = tmp_path / "data"
    src.write_bytes(data)
    with src.open("rb") as fh:  # a file is sealed through the stream, into the buffer
        assert seal_into(key, DOC, version, fh, buf) == written
    assert buf[written:] == bytes(3)
    assert unseal(key, DOC, version, buf[:written]) == data


def test_a_streamed_open_gives_the_plaintext_and_refuses_a_tampered_payload() -> None:
    key, version = new_block_key(), new_version()
    data = os.urandom(2 * SEAL_PIECE + 99)
    sealed = bytearray(seal(key, DOC, version, data))
    pieces: list[bytes] = []
    assert unseal_to(key, DOC, version, sealed, lambda p: pieces.append(bytes(p))) == len(data)
    assert b"".join(pieces) == data and max(map(len, pieces)) <= SEAL_PIECE
    sealed[SEAL_PIECE + 7] ^= 1
    with pytest.raises(DecryptError):  # only after every piece: the caller discards them
        unseal_to(key, DOC, version, sealed, lambda p: None)


def test_seal_into_needs_room() -> None:
    with pytest.raises(ValueError):
        seal_into(new_block_key(), DOC, new_version(), b"abc", bytearray(SEAL_OVERHEAD + 2))


@pytest.mark.parametrize("what", ["key", "path", "version", "ciphertext", "nonce", "tag", "suite"])
def test_unseal_refuses(what: str) -> None:
    key, version = new_block_key(), new_version()
    sealed = seal(key, DOC, version, b"secret payload")
    path = DOC
    if what == "key":
        key = new_block_key()
    elif what == "path":
        path = ROOT + "/docs/other"
    elif what == "version":
        version = new_version()
    elif what == "ciphertext":
        sealed[20] ^= 1
    elif what == "nonce":
        sealed[3] ^= 1
    elif what == "tag":
        sealed[-1] ^= 0x80
    elif what == "suite":
        sealed[0] = 2
    expected = FormatError if what == "suite" else DecryptError
    with pytest.raises(expected):
        unseal(key, path, version, sealed)


def test_failed_unseal_leaves_no_plaintext_behind() -> None:
    key, version = new_block_key(), new_version()
    sealed = seal(key, DOC, version, b"A" * 64)
    sealed[-1] ^= 1
    out = bytearray(b"\xff" * 64)
    with pytest.raises(DecryptError):
        unseal_into(key, DOC, version, sealed, out)
    assert out == bytes(64)


def test_payload_formats_refuse_bad_inputs() -> None:
    with pytest.raises(FormatError):
        unseal(new_block_key(), DOC, new_version(), b"short")
    with pytest.raises(FormatError):
        seal(b"short key", DOC, new_version(), b"x")
    with pytest.raises(FormatError):
        seal(new_block_key(), DOC, b"short version", b"x")
    for bad in ["relative/path", ROOT + "/", ROOT + "/../x", "/global/x", "/notaprincipal/x"]:
        with pytest.raises(InvalidPath):
            seal(new_block_key(), bad, new_version(), b"x")


def test_associated_data_is_unambiguous() -> None:
    v = new_version()
    assert payload_associated_data(ROOT + "/ab", v) != payload_associated_data(ROOT + "/a", v)


def test_readcap_round_trip_and_encoding() -> None:
    key = new_block_key()
    cap = Readcap.issue(key, DOC, BOB.public)
    encoded = cap.encode()
    assert len(encoded) == READCAP_SIZE
    assert Readcap.decode(encoded) == cap
    assert cap.open(BOB, DOC) == key
    assert find_readcap([Readcap.issue(key, DOC, ALICE.public), cap], BOB.principal) is cap


def test_readcap_for_another_principal_cannot_be_opened() -> None:
    key = new_block_key()
    cap = Readcap.issue(key, DOC, BOB.public)
    with pytest.raises(DecryptError):
        cap.open(ALICE, DOC)
    # Relabelling the recipient does not help: it is bound into the associated data.
    relabelled = Readcap(ALICE.principal, cap.ephemeral, cap.wrapped)
    with pytest.raises(DecryptError):
        relabelled.open(ALICE, DOC)
    with pytest.raises(NoReadcap):
        find_readcap([cap], ALICE.principal)


def test_readcap_bound_to_its_path_and_untampered() -> None:
    key = new_block_key()
    cap = Readcap.issue(key, DOC, BOB.public)
    with pytest.raises(DecryptError):
        cap.open(BOB, ROOT + "/docs/other")
    flipped = bytearray(cap.wrapped)
    flipped[0] ^= 1
    with pytest.raises(DecryptError):
        Readcap(cap.recipient, cap.ephemeral, bytes(flipped)).open(BOB, DOC)
    other_ephemeral = Readcap.issue(key, DOC, BOB.public).ephemeral
    with pytest.raises(DecryptError):
        Readcap(cap.recipient, other_ephemeral, cap.wrapped).open(BOB, DOC)


def test_readcap_with_small_order_ephemeral_is_refused() -> None:
    cap = Readcap.issue(new_block_key(), DOC, BOB.public)
    with pytest.raises(DecryptError):
        Readcap(cap.recipient, bytes(32), cap.wrapped).open(BOB, DOC)


def test_child_key_via_parent() -> None:
    parent, child = new_block_key(), new_block_key()
    wrapped = wrap_child_key(parent, DOC, child)
    assert len(wrapped) == WRAPPED_CHILD_KEY_SIZE
    assert unwrap_child_key(parent, DOC, wrapped) == child
    with pytest.raises(DecryptError):
        unwrap_child_key(new_block_key(), DOC, wrapped)
    with pytest.raises(DecryptError):
        unwrap_child_key(parent, ROOT + "/docs/other", wrapped)
    tampered = bytearray(wrapped)
    tampered[-3] ^= 4
    with pytest.raises(DecryptError):
        unwrap_child_key(parent, DOC, bytes(tampered))
    with pytest.raises(FormatError):
        unwrap_child_key(parent, DOC, wrapped[:-1])
    with pytest.raises(InvalidPath):
        wrap_child_key(parent, ROOT, child)  # a root block has no parent


def test_parent_path() -> None:
    assert parent_path(DOC) == ROOT + "/docs"
    assert parent_path(ROOT + "/docs") == ROOT
    with pytest.raises(InvalidPath):
        parent_path(ROOT)


def test_errors_are_one_family() -> None:
    for cls in (DecryptError, FormatError, InvalidPath, NoReadcap):
        assert issubclass(cls, StorageError)


@pytest.mark.parametrize("size", [0, 1, LARGE_BUFFER - 1, LARGE_BUFFER, 3 * LARGE_BUFFER + 5])
def test_fresh_buffers_are_zeroed_writable_and_exactly_sized(size: int) -> None:
    buf = fresh_buffer(size)
    assert buf.nbytes == size and not buf.readonly
    assert not any(buf[:: 4096]) and (size == 0 or buf[-1] == 0)
    if size:
        buf[size - 1] = 7
        assert buf[-1] == 7


def test_a_payload_sealed_into_mapped_memory_opens_again() -> None:
    key, version = new_block_key(), new_version()
    plaintext = os.urandom(2 * LARGE_BUFFER + 3)
    sealed = seal(key, DOC, version, plaintext)
    assert bytes(unseal(key, DOC, version, sealed)) == plaintext


@pytest.mark.parametrize("length", [0, 5, SEAL_PIECE, 2 * SEAL_PIECE + 17])
def test_a_file_is_sealed_as_it_is_read_to_the_same_payload(tmp_path: Path, length: int) -> None:
    key, version = new_block_key(), new_version()
    plaintext = os.urandom(length)
    (tmp_path / "f").write_bytes(b"skipped" + plaintext)
    with open(tmp_path / "f", "rb") as fh:
        fh.read(7)  # sealed from where the file stands
        assert plaintext_length(fh) == length
        out = bytearray(sealed_size(length))
        assert seal_into(key, DOC, version, fh, out) == len(out)
    assert bytes(unseal(key, DOC, version, out)) == plaintext


class _Shrinking(io.FileIO):
    def readinto(self, buffer: Any) -> int:
        os.truncate(self.name, 10)
        return super().readinto(buffer)


class _Growing(io.FileIO):
    def readinto(self, buffer: Any) -> int:
        with open(self.name, "ab") as more:
            more.write(b"later")
        return super().readinto(buffer)


@pytest.mark.parametrize(("kind", "message"), [(_Shrinking, "shrank"), (_Growing, "grew")])
def test_a_file_that_changes_while_sealed_is_refused(tmp_path: Path, kind: type[io.FileIO],
                                                     message: str) -> None:
    (tmp_path / "f").write_bytes(os.urandom(SEAL_PIECE + 100))
    with kind(str(tmp_path / "f")) as fh, pytest.raises(StorageError, match=message):
        seal_into(new_block_key(), DOC, new_version(), fh, bytearray(2 * SEAL_PIECE))
