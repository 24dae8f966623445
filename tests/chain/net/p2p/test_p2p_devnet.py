"""scripts/devnet starts a small network that converges, and stops every node cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.framework.netkit import ROOT, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def devnet(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "devnet"), "--dir", str(base),
                           *args], capture_output=True, text=True, timeout=90)


def test_devnet_starts_converges_and_stops(tmp_path: Path) -> None:
    base = tmp_path / "devnet"
    started = devnet(base, "start", "3", "--mine-interval", "0.3")
    try:
        assert started.returncode == 0, started.stderr
        lines = started.stdout.strip().splitlines()
        assert len(lines) == 3 and "(mining)" in lines[0]
        assert all("api http://127.0.0.1:" in line for line in lines)

        def heights() -> list[int]:
            out = devnet(base, "status").stdout.split()
            return [int(out[i + 1]) for i, word in enumerate(out) if word == "height"]

        wait_until(lambda: len(set(h := heights())) == 1 and h[0] >= 3, 60,
                   "the devnet to converge", interval=0.5)
    finally:
        state = json.loads((base / "devnet.json").read_text()) if (base / "devnet.json").exists() \
            else {"nodes": []}
        stopped = devnet(base, "stop")
    assert stopped.returncode == 0
    for node in state["nodes"]:
        with pytest.raises(ProcessLookupError):
            os.kill(node["pid"], 0)
        assert not (Path(node["datadir"]) / "api.cookie").exists()
