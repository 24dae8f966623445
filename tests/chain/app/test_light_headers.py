"""The light client's header file: a sync that only adds headers appends them (nothing before
is written again), a reorganisation below the saved tip cuts the file back to the fork, a
partial header at the end (an interrupted save) is left out when loading and cut off by the
next save, and two clients of one data directory never leave a torn file."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.app.light import LightClient
from chain.core.block import Block
from chain.core.header import HEADER_SIZE
from chain.core.params import REGTEST
from tests.framework.netkit import make_blocks


@pytest.fixture(scope="module")
def main() -> list[Block]:
    return make_blocks(8, events_per_block=0, seed=1)


@pytest.fixture(scope="module")
def fork(main: list[Block]) -> list[Block]:
    """Heights 3..10 on main's block 2: more work than main's first 8 blocks."""
    return make_blocks(8, events_per_block=0, seed=2, parent=main[1].header, start_height=2)


def client(datadir: Path, blocks: list[Block]) -> LightClient:
    light = LightClient(datadir, REGTEST)
    if blocks:
        light.tree.add_headers([b.header for b in blocks])
    return light


def encoded(blocks: list[Block]) -> bytes:
    return b"".join(b.header.encode() for b in blocks)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The byte counts of every write to a file during the test."""
    counts: list[int] = []
    pwrite, write = os.pwrite, os.write

    def counted_pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        counts.append(len(data))
        return pwrite(fd, data, offset)

    def counted_write(fd: int, data: bytes | memoryview) -> int:
        counts.append(len(data))
        return write(fd, data)

    monkeypatch.setattr(os, "pwrite", counted_pwrite)
    monkeypatch.setattr(os, "write", counted_write)
    yield counts


def test_growing_appends_only_the_new_headers(tmp_path: Path, main: list[Block],
                                             writes: list[int]) -> None:
    light = client(tmp_path, main[:5])
    light.save()
    assert sum(writes) == 5 * HEADER_SIZE
    before = light.file.stat()
    light.tree.add_headers([b.header for b in main[5:]])
    writes.clear()
    light.save()
    assert sum(writes) == 3 * HEADER_SIZE  # the three new headers, nothing else
    after = light.file.stat()
    assert after.st_ino == before.st_ino and after.st_size == before.st_size + 3 * HEADER_SIZE
    assert light.file.read_bytes() == encoded(main)
    writes.clear()
    light.save()  # nothing new: nothing written
    assert writes == []
    assert LightClient(tmp_path, REGTEST).tip == light.tip


def test_a_reorganisation_below_the_saved_tip_leaves_the_new_chain(
        tmp_path: Path, main: list[Block], fork: list[Block], writes: list[int]) -> None:
    light = client(tmp_path, main)
    light.save()
    light.tree.add_headers([b.header for b in fork])
    assert light.tip[1] == fork[-1].hash  # the fork has more work
    writes.clear()
    light.save()
    assert sum(writes) == len(fork) * HEADER_SIZE  # the branch only; the shared two kept
    assert light.file.read_bytes() == encoded(main[:2] + fork)
    again = LightClient(tmp_path, REGTEST)
    assert again.tip == light.tip and again.tree.best_chain == light.tree.best_chain


def test_a_partial_header_at_the_end_is_left_out_then_cut_off(
        tmp_path: Path, main: list[Block], writes: list[int]) -> None:
    client(tmp_path, main[:4]).save()
    file = tmp_path / "light" / "headers.dat"
    with file.open("ab") as f:  # an append cut short
        f.write(main[4].header.encode()[:50])
    light = LightClient(tmp_path, REGTEST)
    assert light.tip == (4, main[3].hash)
    writes.clear()
    light.save()  # the same chain: only the partial header goes
    assert writes == [] and file.read_bytes() == encoded(main[:4])
    with file.open("ab") as f:
        f.write(main[4].header.encode()[:50])
    light.tree.add_headers([b.header for b in main[4:]])
    light.save()  # and a save with new headers writes them where the partial one was
    assert file.read_bytes() == encoded(main)
    assert LightClient(tmp_path, REGTEST).tip == (8, main[-1].hash)


def test_two_clients_of_one_directory(tmp_path: Path, main: list[Block],
                                      fork: list[Block]) -> None:
    ahead, behind = client(tmp_path, main), client(tmp_path, main[:6])
    ahead.save()
    behind.save()  # its chain is in the file already, under more: left as it is
    assert ahead.file.read_bytes() == encoded(main)
    other = client(tmp_path, main[:2] + fork)
    other.save()  # another branch: the file becomes its chain
    assert other.file.read_bytes() == encoded(main[:2] + fork)
    ahead.save()  # the last to save wins, with a whole chain
    assert ahead.file.read_bytes() == encoded(main)
    assert LightClient(tmp_path, REGTEST).tip == ahead.tip


def test_a_save_waits_for_the_other_and_reads_the_length_under_the_lock(
        tmp_path: Path, main: list[Block], writes: list[int]) -> None:
    client(tmp_path, main[:4]).save()
    light = client(tmp_path, main)
    file = light.file
    with file.open("r+b") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)  # another process saving
        saver = threading.Thread(target=light.save)
        saver.start()
        saver.join(0.3)
        assert saver.is_alive() and file.stat().st_size == 4 * HEADER_SIZE
        other.seek(0, os.SEEK_END)
        other.write(encoded(main[4:6]))  # what the other process appends meanwhile
        other.flush()
        writes.clear()
    saver.join(10)
    assert not saver.is_alive()
    assert sum(writes) == 2 * HEADER_SIZE  # only what the other had not written
    assert file.read_bytes() == encoded(main)
