"""Durable whole-file writes: what lands on disk is exactly the payload, however it is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage_market.crypto import fresh_buffer
from storage_market.jsonstate import (
    DIRECT_ALIGN,
    DIRECT_MIN,
    _write_direct,
    read_json,
    write_bytes_atomic,
    write_json,
)


def _filled(buffer: memoryview) -> memoryview:
    buffer[:] = os.urandom(buffer.nbytes)
    return buffer


@pytest.mark.parametrize("size", [0, 100, DIRECT_MIN - 1, DIRECT_MIN, 3 * DIRECT_MIN + 123])
@pytest.mark.parametrize("kind", ["bytes", "bytearray", "mapped", "mapped-offset"])
def test_any_payload_lands_exactly(tmp_path: Path, size: int, kind: str) -> None:
    if kind == "bytes":
        payload: bytes | bytearray | memoryview = os.urandom(size)
    elif kind == "bytearray":
        payload = bytearray(os.urandom(size))
    elif kind == "mapped":  # page-aligned: the direct I/O path where the file system has it
        payload = _filled(fresh_buffer(size))
    else:  # a view that starts off the page alignment: the ordinary path
        payload = _filled(fresh_buffer(size + 1))[1:]
    target = tmp_path / "f.bin"
    target.write_bytes(b"old contents")
    write_bytes_atomic(target, payload)
    assert target.read_bytes() == bytes(payload)
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temporary file left


def test_direct_io_writes_the_aligned_prefix_or_nothing(tmp_path: Path) -> None:
    buffer = _filled(fresh_buffer(2 * DIRECT_MIN + 100))
    target = tmp_path / "d.bin"
    target.write_bytes(b"")
    written = _write_direct(target, buffer)
    assert written in (0, 2 * DIRECT_MIN)  # 0 on a file system without direct I/O
    assert written % DIRECT_ALIGN == 0
    assert target.read_bytes() == bytes(buffer[:written])
    assert _write_direct(target, memoryview(bytes(buffer))) == 0  # read-only: not this way


def test_json_round_trip(tmp_path: Path) -> None:
    write_json(tmp_path / "s.json", {"b": [1, 2], "a": "x"})
    assert read_json(tmp_path / "s.json") == {"a": "x", "b": [1, 2]}
    assert read_json(tmp_path / "missing.json") is None
