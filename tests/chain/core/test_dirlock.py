"""The agent directory lock: exclusive, names its holder, and dies with its process."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chain.core.dirlock import DirectoryInUse, DirLock


def test_second_holder_is_refused_with_the_first_named(tmp_path: Path) -> None:
    with DirLock(tmp_path / "host", "blockcoin host start"), pytest.raises(
            DirectoryInUse, match=r"in use by blockcoin host start \(pid \d+\)"):
        DirLock(tmp_path / "host", "blockcoin host start").acquire()
    with DirLock(tmp_path / "host", "blockcoin host start"):  # released: free again
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from chain.core.dirlock import DirLock; DirLock(Path(sys.argv[1]), 'test').acquire(); "
         "print('held', flush=True); time.sleep(60)", str(tmp_path / "d")],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[3])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryInUse, match=f"pid {holder.pid}"):
            DirLock(tmp_path / "d", "test").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    with DirLock(tmp_path / "d", "test"):
        pass
