"""In the spirit of Bitcoin Core's feature_dbcrash: a node process importing blocks (with
reorgs) is SIGKILLed at random moments; after each restart its state equals the reference
fold of its best chain, and no block it reported as connected is lost."""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chain.core.blockfile import write_blocks
from chain.node.chainstate import ChainState
from chain.node.local import init_datadir
from ledger.store import Status
from tests.framework.chainkit import P, build_on, open_chain, reference_fold, state_dump

KILLS = 32


def make_blocks_file(tmp: Path) -> tuple[Path, bytes]:
    """A main chain, then a longer fork from its middle (a deep reorg), then a second fork."""
    rng = random.Random(7)
    chain = open_chain(tmp / "scratch")
    blocks = []
    try:
        def grow(parent: bytes, count: int) -> bytes:
            for _ in range(count):
                block = build_on(chain, parent, rng, 12, False)
                assert block is not None
                chain.accept_block(block)
                blocks.append(block)
                parent = block.hash
            return parent

        grow(chain.tip.hash, 60)
        fork_at = chain.best_chain_hash(30)
        assert fork_at is not None
        grow(fork_at, 45)  # overtakes: disconnect 30, connect 31+
        fork2 = chain.best_chain_hash(50)
        assert fork2 is not None
        final = grow(fork2, 40)
        assert chain.tip.hash == final
    finally:
        chain.close()
    path = tmp / "blocks.dat"
    write_blocks(path, iter(blocks))
    return path, final


def run_import(datadir: Path, blocks: Path, kill_after: float | None) -> tuple[list[str], bool]:
    """Run ``blockcoin import``; SIGKILL it ``kill_after`` seconds after its first report."""
    cmd = [sys.executable, "-m", "chain", "import", str(blocks), "--network", "regtest",
           "--datadir", str(datadir), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None and proc.stderr is not None
    fd = proc.stdout.fileno()
    reported: list[str] = []
    done = False
    kill_at: float | None = None
    buf = b""
    deadline = time.monotonic() + 60
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if kill_at is not None and time.monotonic() >= kill_at:
                proc.send_signal(signal.SIGKILL)
                break
            if not sel.select(timeout=0.002):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                if "connected" in msg:
                    reported.append(msg["connected"])
                    if kill_at is None and kill_after is not None:
                        kill_at = time.monotonic() + kill_after
                done = done or bool(msg.get("done"))
    proc.wait(timeout=30)
    if not done and kill_after is None:
        raise AssertionError(f"import failed: {proc.stderr.read().decode()}")
    return reported, done


def check_consistent(datadir: Path, reported: list[str]) -> ChainState:
    chain = open_chain(datadir)
    assert state_dump(chain) == reference_fold(P, chain.iter_best_chain())
    for text in reported:
        h = bytes.fromhex(text)[::-1]
        entry = chain.index.get(h)
        assert entry is not None and entry.status != Status.INVALID, "reported block lost"
        assert chain.store.get_block_bytes(h) is not None
    if reported:
        last = chain.index[bytes.fromhex(reported[-1])[::-1]]
        assert chain.tip.work >= last.work
    return chain


@pytest.mark.slow
def test_sigkill_during_import_loses_nothing(tmp_path: Path) -> None:
    blocks, final = make_blocks_file(tmp_path)
    rng = random.Random(11)
    kills = 0
    cycle = 0
    while kills < KILLS:
        datadir = tmp_path / f"node{cycle}"
        init_datadir(datadir, P)
        for _ in range(40):
            reported, done = run_import(datadir, blocks, rng.uniform(0.0, 0.08))
            kills += not done
            check_consistent(datadir, reported).close()
            if done or kills >= KILLS:
                break
        cycle += 1
    # finally let the last node finish and land on the file's best chain
    reported, done = run_import(datadir, blocks, None)
    chain = check_consistent(datadir, reported)
    try:
        assert chain.tip.hash == final
    finally:
        chain.close()
