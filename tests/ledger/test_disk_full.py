"""A disk that fills up during an import: the node stops with one clear line, keeps every
block it connected, and finishes the same import once there is room again.

The full disk is real to the process: RLIMIT_FSIZE makes the kernel refuse (EFBIG) any write
past the limit, exactly where ENOSPC would strike on a full volume.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chain.core.params import REGTEST
from chain.node.local import init_datadir
from tests.ledger.test_crash_recovery import check_consistent, make_blocks_file, run_import

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 192 << 10  # bytes any one file may grow to


def _full_disk() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


@pytest.mark.slow
def test_full_disk_during_import_is_one_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    blocks, final = make_blocks_file(tmp_path)
    datadir = tmp_path / "node"
    init_datadir(datadir, REGTEST)
    cmd = [sys.executable, "-m", "chain", "import", str(blocks), "--network", "regtest",
           "--datadir", str(datadir), "--json"]
    proc = subprocess.run(cmd, capture_output=True, cwd=ROOT, timeout=120,
                          preexec_fn=_full_disk)
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1, proc.stderr.decode()
    assert len(err) == 1 and "database write failed" in err[0], err  # no traceback
    assert "b'" not in err[0] and "b\"" not in err[0], err  # the message as text, not bytes
    reported = [json.loads(line)["connected"] for line in proc.stdout.decode().splitlines()
                if "connected" in line]
    assert reported, "the limit should strike after some blocks, not before the first"
    chain = check_consistent(datadir, reported)
    try:
        assert chain.tip.hash != final  # it did stop early
    finally:
        chain.close()
    # room again: the same import completes, and the node holds exactly the reference state
    reported, done = run_import(datadir, blocks, None)
    assert done
    chain = check_consistent(datadir, reported)
    try:
        assert chain.tip.hash == final
    finally:
        chain.close()
