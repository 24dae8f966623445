"""The command line against a running node: with the data directory locked by the node, the
query, wallet and mine commands go through its API; commands that need the database itself
say so in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chain.core.keys import KeyPair
from tests.framework.netkit import ROOT, NodeProc, init_node_dir, running, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def cli(datadir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chain", *args, "-n", "regtest", "-d",
                           str(datadir)], capture_output=True, text=True, timeout=60, cwd=ROOT)


def cli_json(datadir: Path, *args: str) -> Any:
    result = cli(datadir, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cli_talks_to_a_running_node(tmp_path: Path) -> None:
    datadir = init_node_dir(tmp_path / "n", 1)
    node = NodeProc(datadir, "--no-discover", name="n")
    with running(node):
        node.start()
        assert cli_json(datadir, "query", "tip")["height"] == 0
        mined = cli_json(datadir, "mine", "--blocks", "3")
        assert mined["height"] == 3 and len(mined["mined"]) == 3
        assert node.tip()[0] == 3
        to = str(KeyPair.development(6).principal)
        before = cli_json(datadir, "wallet", "balance", to)["balance"]
        sent = cli_json(datadir, "wallet", "send", to, "0.5")
        assert node.get(f"/events/{sent['event']}")["status"] == "pending"
        cli_json(datadir, "mine")
        wait_until(lambda: node.get(f"/events/{sent['event']}")["status"] == "confirmed", 10,
                   "the transfer to be mined")
        assert cli_json(datadir, "wallet", "balance", to)["balance"] == before + 50_000_000
        block = cli_json(datadir, "query", "block", "4")
        assert sent["event"] in [e["id"] for e in block["events"]]
        me = cli_json(datadir, "query", "principal", str(KeyPair.development(1).principal))
        assert me["nonce"] >= 1
        assert cli_json(datadir, "query", "status")["height"] == 4
        assert cli_json(datadir, "query", "peers")["peers"] == []
        frag = cli_json(datadir, "query", "fragments", f"/{to}/x")
        assert frag["fragments"] == {}
        # Commands that need the database itself refuse in one line, changing nothing.
        result = cli(datadir, "reindex")
        assert result.returncode == 1
        assert result.stderr.startswith("error:") and len(result.stderr.splitlines()) == 1
        bad = cli(datadir, "wallet", "send", to[:-1] + "a", "1")
        assert bad.returncode == 1 and bad.stderr.startswith("error:")
    # Once the node has stopped, the same commands open the data directory directly.
    assert not (datadir / "api.cookie").exists() and not (datadir / "node.json").exists()
    assert cli_json(datadir, "query", "tip")["height"] == 4
