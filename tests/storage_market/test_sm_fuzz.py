"""Decoders of storage formats fed random or mutated bytes raise only StorageError subclasses."""

from __future__ import annotations

import contextlib
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.core.keys import KeyPair
from storage_market import fragments
from storage_market import protocol as proto
from storage_market.blockstore import StoredBlock
from storage_market.crypto import (
    Readcap,
    new_block_key,
    new_version,
    seal,
    unseal,
    unwrap_child_key,
    wrap_child_key,
)
from storage_market.errors import StorageError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = KeyPair.development(301)
ROOT = KEYS.principal.root_path
PATH = ROOT + "/fuzz"
KEY = new_block_key()
VERSION = new_version()

SAMPLE_READCAP = Readcap.issue(KEY, PATH, KEYS.public).encode()
SAMPLE_MESSAGE = proto.encode(proto.Receipt(os.urandom(64), KEYS.principal))
SAMPLE_RECORD = bytes(
    StoredBlock.seal(PATH, b"fuzz me", KEY, parent_key=new_block_key(),
                     readers=[KEYS.public]).record
)
SAMPLE_ROOT_RECORD = bytes(StoredBlock.seal(ROOT, b"", KEY, readers=[KEYS.public]).record)
SAMPLE_SEALED = bytes(seal(KEY, PATH, VERSION, b"payload"))
SAMPLE_WRAPPED = wrap_child_key(KEY, PATH, new_block_key())


@st.composite
def _mutations(draw: st.DrawFn, sample: bytes) -> bytes:
    buf = bytearray(sample)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del buf[pos : pos + draw(st.integers(1, 8))]
        else:
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(buf)


def _only_storage_errors(decode: object, data: bytes) -> None:
    with contextlib.suppress(StorageError):
        decode(data)  # type: ignore[operator]


def _random_or_mutated(sample: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=300), _mutations(sample))


@FUZZ
@given(st.data())
def test_readcap_decoder(data: st.DataObject) -> None:
    _only_storage_errors(Readcap.decode, data.draw(_random_or_mutated(SAMPLE_READCAP)))


@FUZZ
@given(st.data())
def test_protocol_message_decoder(data: st.DataObject) -> None:
    _only_storage_errors(proto.decode, data.draw(_random_or_mutated(SAMPLE_MESSAGE)))


@FUZZ
@given(st.data())
def test_record_decoder(data: st.DataObject) -> None:
    sample = data.draw(st.sampled_from([SAMPLE_RECORD, SAMPLE_ROOT_RECORD]))
    _only_storage_errors(StoredBlock.decode, data.draw(_random_or_mutated(sample)))


@FUZZ
@given(st.data())
def test_unseal_and_unwrap(data: st.DataObject) -> None:
    _only_storage_errors(lambda b: unseal(KEY, PATH, VERSION, b),
                         data.draw(_random_or_mutated(SAMPLE_SEALED)))
    _only_storage_errors(lambda b: unwrap_child_key(KEY, PATH, b),
                         data.draw(_random_or_mutated(SAMPLE_WRAPPED)))


@FUZZ
@given(st.lists(st.binary(min_size=0, max_size=40), min_size=0, max_size=6),
       st.lists(st.integers(-2, 7), min_size=0, max_size=6))
def test_fragment_decoder(bufs: list[bytes], indexes: list[int]) -> None:
    given_fragments = dict(zip(indexes, bufs, strict=False))
    _only_storage_errors(fragments.decode, given_fragments)  # type: ignore[arg-type]
    with contextlib.suppress(StorageError):
        fragments.rebuild(given_fragments, 4)


@FUZZ
@given(st.binary(max_size=300))
def test_random_readcap_does_not_open(blob: bytes) -> None:
    try:
        cap = Readcap.decode(SAMPLE_READCAP[:33] + blob[:80].ljust(80, b"\x00"))
        cap.open(KEYS, PATH)
    except StorageError:
        pass
