"""``blockcoin tree ... --light``: a tree placed and read back on the light client, with a
lying node in front of an honest one (the lie refused, the honest node asked instead), a
lying node alone refused in one line, and the commands a light client cannot run honestly
(``unshare``, ``revoke``) refused in one line before anything is spent."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chain.core.keys import KeyPair
from tests.framework.agentproc import ready_line, spawn, stop
from tests.framework.clirun import Ran, blockcoin
from tests.framework.lyingproxy import LyingProxy
from tests.framework.netkit import NodeProc, init_node_dir, mining_node, running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ALICE = KeyPair.development(0)
# 1-of-1 on one host; 20 periods of 100 blocks outlive the test
MARKET = ["--k", "1", "--n", "1", "--price", "1000sat", "--periods", "20", "--period-blocks",
          "100", "--yes", "--wait", "120"]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    """A mining node and one host (a full-node host: only the tree's commands are light)."""
    proc = mining_node(tmp_path / "n", 0.5)
    with running(proc):
        proc.start()
        host: subprocess.Popen[str] | None = None
        try:
            host = spawn("host", "start", "-n", "regtest", "-d",
                         str(init_node_dir(tmp_path / "host", 2)), "--capacity", "1G",
                         "--min-price", "1sat", "--fund", "10", "--node", str(proc.datadir))
            ready_line(host)
            yield proc
        finally:
            if host is not None:
                stop(host)


def forged_holders(path: str, status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Every holder of a path said to hold a fragment of another size."""
    if path.startswith("/global/fragments/") and isinstance(body.get("fragments"), dict):
        body = {**body, "fragments": {i: [{**h, "size": h["size"] + 1} for h in hs]
                                      for i, hs in body["fragments"].items()}}
    return status, body


def test_tree_on_a_light_client(node: NodeProc, tmp_path: Path) -> None:
    home = str(init_node_dir(tmp_path / "alice", 0))
    honest = f"http://127.0.0.1:{node.api_port}"
    token = (node.datadir / "api.cookie").read_text().strip()
    light = ("--light", "--peer", node.p2p)

    def tree(*args: str) -> Ran:
        return blockcoin("tree", *args, "-n", "regtest", "-d", home)

    def ok(*args: str) -> dict[str, Any]:
        ran = tree(*args, "--json")
        assert ran.code == 0, (args, ran.err)
        found: dict[str, Any] = json.loads(ran.out)
        return found

    src = tmp_path / "notes.txt"
    data = os.urandom(20_000)
    src.write_bytes(data)
    full = f"{ALICE.principal.root_path}/docs/notes.txt"
    # placing on the light client (the node takes the signed events, the answers are proven)
    placed = ok("put", str(src), "docs/notes.txt", *MARKET, *light, "--node", str(node.datadir))
    assert placed["placed"] == [f"{ALICE.principal.root_path}/docs", full]
    assert (tmp_path / "alice" / "light" / "headers.dat").stat().st_size > 0

    proxy = LyingProxy(honest)
    proxy.patch = forged_holders
    out = tmp_path / "out.txt"
    try:
        # the liar alone: refused in one line naming it
        ran = tree("get", "docs/notes.txt", "-o", str(out), *light, "--api", proxy.url,
                   "--token", token)
        assert ran.one_line_error and f"refused the answer of {proxy.url}" in ran.err, ran
        assert not out.exists()
        # the liar first, the honest node next: the lie is refused, the honest node answers
        got = ok("get", "docs/notes.txt", "-o", str(out), *light, "--api", proxy.url,
                 "--token", token, "--api", honest, "--token", token)
        assert got["path"] == full and out.read_bytes() == data
    finally:
        proxy.close()

    # commands that re-key cannot trust the node's list of contracts: refused before spending
    bob = str(KeyPair.development(4).principal)
    for args in (("unshare", "docs", bob), ("revoke", bob)):
        ran = tree(*args, *MARKET, *light, "--node", str(node.datadir))
        assert ran.one_line_error and "cannot run with --light" in ran.err, (args, ran)

    removed = ok("rm", "docs/notes.txt", *light, "--node", str(node.datadir))
    assert removed["removed"] == 1


def test_several_apis_are_for_light_with_a_token_each(tmp_path: Path) -> None:
    home = str(init_node_dir(tmp_path / "alice", 0))
    get = ("tree", "get", "x", "-o", str(tmp_path / "x"), "-n", "regtest", "-d", home)
    dead = ("--api", "http://127.0.0.1:1", "--api", "http://127.0.0.1:2")
    ran = blockcoin(*get, *dead)
    assert ran.one_line_error and "several --api are for --light" in ran.err, ran
    ran = blockcoin(*get, *dead, "--token", "t", "--light", "--peer", "127.0.0.1:1")
    assert ran.one_line_error and "once for each --api" in ran.err, ran
    ran = blockcoin(*get, *dead, "--light", "--peer", "127.0.0.1:1")
    assert ran.one_line_error and "http://127.0.0.1:1" in ran.err, ran  # none answers
