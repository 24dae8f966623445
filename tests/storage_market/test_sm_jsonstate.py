"""Durable whole-file writes: what lands on disk is exactly the payload, however it is written."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from storage_market.crypto import fresh_buffer
from storage_market.jsonstate import (
    DIRECT_MIN,
    StateFile,
    direct_prefix,
    open_direct,
    read_json,
    write_bytes_atomic,
    write_direct,
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
    assert direct_prefix(buffer, 0) == 2 * DIRECT_MIN
    assert direct_prefix(buffer, 512) == 0  # an offset off the alignment
    assert direct_prefix(buffer[1:], 0) == 0  # an address off the alignment
    assert direct_prefix(memoryview(bytes(buffer)), 0) == 0  # read-only
    target = tmp_path / "d.bin"
    target.write_bytes(b"")
    fd = open_direct(target)
    if fd is None:  # a file system without direct I/O: only the ordinary path exists here
        return
    try:
        written = write_direct(fd, buffer[: 2 * DIRECT_MIN], 0)
    finally:
        os.close(fd)
    assert written in (0, 2 * DIRECT_MIN)  # 0: the file system refused at the first write
    assert target.read_bytes() == bytes(buffer[:written])


def test_json_round_trip(tmp_path: Path) -> None:
    write_json(tmp_path / "s.json", {"b": [1, 2], "a": "x"})
    assert read_json(tmp_path / "s.json") == {"a": "x", "b": [1, 2]}
    assert read_json(tmp_path / "missing.json") is None


async def test_flush_returns_once_its_state_is_durable_while_changes_keep_coming(tmp_path: Path) -> None:
    """An agent marks its state on every block; a flush (before a receipt is signed) must not
    also wait out the batching delay of changes made after it."""
    state = {"n": 0}
    path = tmp_path / "state.json"

    def snapshot() -> dict[str, Any]:
        state["n"] += 1
        states.mark()  # a change arrives while this version is being written
        return dict(state)

    states = StateFile(path, snapshot, delay=60.0)
    await asyncio.wait_for(states.flush(), 10)
    assert read_json(path) == {"n": 1}
    states.snapshot = lambda: dict(state)
    await asyncio.wait_for(states.flush(), 10)
    assert read_json(path) == {"n": 1} and states._wanted == states._written
    await states.close()


async def test_a_failed_write_fails_the_flush_and_the_next_one_retries(tmp_path: Path) -> None:
    path = tmp_path / "blocked" / "state.json"
    path.parent.write_bytes(b"")  # a file where the directory should be: the write fails
    states = StateFile(path, lambda: {"a": 1}, delay=60.0)
    with pytest.raises(OSError):
        await asyncio.wait_for(states.flush(), 10)
    path.parent.unlink()
    await asyncio.wait_for(states.flush(), 10)
    assert read_json(path) == {"a": 1}
