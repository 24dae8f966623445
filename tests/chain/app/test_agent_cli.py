"""The storage agents as a user runs them against a real node on 127.0.0.1: one agent per
directory (a second one is refused in one line and changes nothing), no silent stand-in for a
node that is missing, and a host paid into the data directory's wallet."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.core.keys import KeyPair
from tests.framework.agentproc import ready_line, spawn, stop
from tests.framework.clirun import blockcoin
from tests.framework.netkit import NodeProc, init_node_dir, mining_node, running, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes, logs aside (they grow while agents run); a
    file that vanishes while it is read (an atomic write's temporary) is left out."""
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        if "logs" in p.parts:
            continue
        try:
            if p.is_file():
                out[str(p.relative_to(root))] = p.read_bytes()
        except FileNotFoundError:
            continue
    return out


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    proc = mining_node(tmp_path / "n", 0.2)
    with running(proc):
        proc.start()
        yield proc


def test_one_host_per_directory_paid_into_the_wallet(node: NodeProc) -> None:
    home = str(node.datadir)
    first = spawn("host", "start", "-n", "regtest", "-d", home, "--capacity", "1M",
                  "--fund", "10")
    try:
        info = ready_line(first)
        # paid into the data directory's wallet (the node's key here), signing with its own
        assert info["payout"] == str(KeyPair.development(1).principal)
        assert info["host"] != info["payout"]
        # the running host rewrites its own state.json as blocks come; nothing else changes
        def mine_only() -> dict[str, bytes]:
            return {k: v for k, v in snapshot(node.datadir / "host").items()
                    if k != "state.json" and not k.startswith(".state.json.")}

        before = mine_only()
        second = blockcoin("host", "start", "-n", "regtest", "-d", home, "--capacity", "1M")
        assert second.one_line_error and "in use by blockcoin host start" in second.err
        assert f"pid {first.pid}" in second.err
        assert first.poll() is None
        assert mine_only() == before

        def announced() -> bool:
            acct = node.get(f"/global/principals/{info['host']}")
            return bool(acct.get("address") == info["address"])

        wait_until(announced, 60, "the host's address on chain")
    finally:
        stop(first)
    # logs: a file per component in the data directory, each line stamped and levelled
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR|DEBUG) ")
    host_log = (node.datadir / "logs" / "host.log").read_text().splitlines()
    assert host_log and all(stamp.match(line) for line in host_log)
    assert any(f"announced {info['address']}" in line for line in host_log)
    node_log = (node.datadir / "logs" / "node.log").read_text()
    assert " INFO blockcoin.node: new tip " in node_log
    # once it stopped, the directory is free again: the lock died with the process
    third = spawn("host", "start", "-n", "regtest", "-d", home, "--capacity", "1M")
    try:
        assert ready_line(third)["host"] == info["host"]
    finally:
        stop(third)


def test_one_owner_agent_per_directory(node: NodeProc, tmp_path: Path) -> None:
    owner = tmp_path / "owner"
    assert blockcoin("init", "-n", "regtest", "-d", str(owner), "--dev-key", "2").code == 0
    serve = spawn("store", "serve", "-n", "regtest", "-d", str(owner), "--node",
                  str(node.datadir))
    try:
        info = ready_line(serve)  # --node is used: the owner's own directory runs no node
        assert info["owner"] == str(KeyPair.development(2).principal)
        before = snapshot(owner)
        src = tmp_path / "f.bin"
        src.write_bytes(os.urandom(10_000))
        for args in (["put", str(src), "f.bin", "--yes"], ["serve"], ["release", "f.bin"]):
            ran = blockcoin("store", *args, "-n", "regtest", "-d", str(owner), "--node",
                            str(node.datadir))
            assert ran.code == 1 and ran.err.count("\n") == 1, ran.err
            assert "in use by blockcoin store" in ran.err or "not stored" in ran.err
        assert snapshot(owner) == before and serve.poll() is None
    finally:
        stop(serve)
    # a put states what it will spend and, without --yes and no terminal to ask on, spends
    # nothing
    before = snapshot(owner)
    ran = blockcoin("store", "put", str(src), "f.bin", "--periods", "4", "-n", "regtest", "-d",
                    str(owner), "--node", str(node.datadir))
    assert ran.one_line_error and "--yes" in ran.err, ran.err
    assert "costs 0.0200" in ran.err and "(0.02 coins escrowed for the hosts, 0.0000" in ran.err
    assert snapshot(owner) == before


def test_node_json_says_where_it_serves(tmp_path: Path) -> None:
    datadir = init_node_dir(tmp_path / "j", 4)
    proc = spawn("node", "-n", "regtest", "-d", str(datadir), "--listen", "127.0.0.1:0",
                 "--api", "127.0.0.1:0", "--no-discover")
    try:
        info = ready_line(proc)
        assert info["principal"] == str(KeyPair.development(4).principal)
        assert str(info["api"]).startswith("http://127.0.0.1:") and info["height"] == 0
        assert (datadir / "logs" / "node.log").read_text().count(" INFO blockcoin.node: ") >= 1
    finally:
        stop(proc)


def test_a_missing_or_dead_node_is_named_never_replaced(tmp_path: Path) -> None:
    home = tmp_path / "lonely"
    assert blockcoin("init", "-n", "regtest", "-d", str(home), "--dev-key", "3").code == 0
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 1000)
    before = snapshot(home)
    cases = [
        (["host", "start", "--capacity", "1M"], f"no node is running on {home}"),
        (["store", "put", str(src), "f", "--yes"], f"no node is running on {home}"),
        (["store", "serve", "--node", "/nonexistent"], "--node /nonexistent: not a node's"),
        (["store", "get", "f", "-o", str(tmp_path / "out"), "--node", "/nonexistent"],
         "--node /nonexistent"),
        (["host", "start", "--capacity", "1M", "--mine-every", "1"], "--in-process"),
        (["store", "serve", "--in-process", "--node", str(home)], "drop --api, --node and"),
        (["host", "start", "--capacity", "1M", "--light"], "name one with --peer"),
    ]
    for args, message in cases:
        ran = blockcoin(*args, "-n", "regtest", "-d", str(home))
        assert ran.one_line_error and message in ran.err, (args, ran.err)
    assert snapshot(home) == before
    # a node.json left by a node that died: the address it names does not answer
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (home / "node.json").write_text(json.dumps({"api": f"http://127.0.0.1:{port}"}))
    before = snapshot(home)
    ran = blockcoin("store", "put", str(src), "f", "--yes", "-n", "regtest", "-d", str(home))
    assert ran.one_line_error and f"127.0.0.1:{port}" in ran.err and "still running" in ran.err
    ran = blockcoin("store", "put", str(src), "f", "--yes", "-n", "regtest", "-d", str(home),
                    "--api", f"http://127.0.0.1:{port}")
    assert ran.one_line_error and f"--api http://127.0.0.1:{port}" in ran.err
    assert snapshot(home) == before
