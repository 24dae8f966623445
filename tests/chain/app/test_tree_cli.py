"""Two people's trees and three nodes on 127.0.0.1, through the ``blockcoin tree`` commands: a
mining node and two hosts run as processes; Alice's laptop, Alice's phone and Bob are three
data directories whose commands reach the chain through the node's API.

Alice shares /alice/photos with Bob, who reads a nested file through the directory's readcap
and through a link in his own tree; Alice's phone, granted /alice/phone, stores there paying
from Alice's account and is refused past its allowance and outside its path; Alice revokes the
phone and unshares Bob: after re-keying neither reads the new versions, and the chain refuses
the phone's writes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.app.tree import parse_expiry
from chain.core.errors import ConfigError, RevokedSigner
from chain.core.events import FragmentOffer
from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from storage_market.chainclient import Signer
from storage_market.httpclient import HttpChain
from storage_market.tree import decode_grant
from tests.framework.agentproc import ready_line, spawn, stop
from tests.framework.clirun import Ran, blockcoin
from tests.framework.netkit import NodeProc, init_node_dir, mining_node, running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ALICE, BOB, PHONE = KeyPair.development(0), KeyPair.development(4), KeyPair.development(5)
A, B = ALICE.principal.root_path, BOB.principal.root_path
# 1-of-2 on two hosts; 20 periods of 100 blocks outlive the test, and a 20 s proof window
# is not missed by a host on a busy machine (a miss makes the owner release and shun it)
MARKET = ["--k", "1", "--n", "2", "--price", "1000sat", "--periods", "20", "--period-blocks",
          "100", "--yes", "--wait", "120"]
ESCROW = 2 * 1000 * 20  # one block's


@pytest.fixture
def net(tmp_path: Path) -> Iterator[NodeProc]:
    node = mining_node(tmp_path / "n", 0.2)
    hosts: list[subprocess.Popen[str]] = []
    with running(node):
        node.start()
        try:
            for i, dev in enumerate((2, 3)):
                home = init_node_dir(tmp_path / f"host{i}", dev)
                hosts.append(spawn("host", "start", "-n", "regtest", "-d", str(home),
                                   "--capacity", "1G", "--min-price", "1sat", "--fund", "10",
                                   "--node", str(node.datadir)))
            for proc in hosts:
                ready_line(proc)
            yield node
        finally:
            for proc in hosts:
                stop(proc)


def test_two_trees_three_nodes(net: NodeProc, tmp_path: Path) -> None:
    homes = {name: init_node_dir(tmp_path / name, dev)
             for name, dev in (("alice", 0), ("bob", 4), ("phone", 5))}

    def tree(who: str, *args: str) -> Ran:
        offline = args[0] in ("ls", "log", "import-grant")  # they read the directory only
        reach = [] if offline else ["--node", str(net.datadir)]
        return blockcoin("tree", *args, "-n", "regtest", "-d", str(homes[who]), *reach)

    def ok(who: str, *args: str) -> dict[str, object]:
        ran = tree(who, *args, "--json")
        assert ran.code == 0, (args, ran.err)
        found: dict[str, object] = json.loads(ran.out)
        return found

    def refused(who: str, message: str, *args: str) -> None:
        ran = tree(who, *args)
        assert ran.one_line_error and message in ran.err, (args, ran.err)

    def balance(key: KeyPair) -> int:
        return int(net.get(f"/global/principals/{key.principal}")["balance"])

    photos = tmp_path / "photos"
    (photos / "2024").mkdir(parents=True)
    beach = os.urandom(40_000)
    (photos / "2024" / "beach.jpg").write_bytes(beach)
    (photos / "cat.jpg").write_bytes(b"meow")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"written on the phone")
    out = tmp_path / "out"

    ok("bob", "announce")
    ok("phone", "announce")
    placed = ok("alice", "put", str(photos), "photos", *MARKET)["placed"]
    assert placed == [f"{A}/photos", f"{A}/photos/2024", f"{A}/photos/cat.jpg",
                      f"{A}/photos/2024/beach.jpg"]
    rows = ok("alice", "ls", "photos")["entries"]
    assert [(r["name"], r["kind"], r["health"], r["placed"]) for r in rows] == [  # type: ignore[index, union-attr]
        ("2024", "dir", "ok", 2), ("cat.jpg", "file", "ok", 2)]
    refused("bob", "holds no readcap", "get", f"{A}/photos/2024/beach.jpg", "-o", str(out))

    # sharing: refused for an unknown principal, then Bob reads through the directory
    refused("alice", "unknown on chain", "share", "photos",
            str(KeyPair.generate().principal), *MARKET)
    ok("alice", "share", "photos", str(BOB.principal), *MARKET)
    assert len(ok("alice", "log", "photos")["versions"]) == 2  # type: ignore[arg-type]
    got = ok("bob", "get", f"{A}/photos/2024/beach.jpg", "-o", str(out))
    assert out.read_bytes() == beach and got["size"] == len(beach)
    # ... and through a link in his own tree
    ok("bob", "link", "alice-photos", f"{A}/photos", *MARKET)
    got = ok("bob", "get", "alice-photos/2024/beach.jpg", "-o", str(out))
    assert got["read"] == f"{A}/photos/2024/beach.jpg" and out.read_bytes() == beach

    # a new version of a file; the old one still reads with --version
    (photos / "cat.jpg").write_bytes(b"purr")
    ok("alice", "put", str(photos / "cat.jpg"), "photos/cat.jpg", *MARKET)
    versions = ok("alice", "log", "photos/cat.jpg")["versions"]
    assert [v["n"] for v in versions] == [1, 2]  # type: ignore[attr-defined, index]
    assert versions[0]["height"] <= versions[1]["height"]  # type: ignore[index]
    ok("alice", "get", "photos/cat.jpg", "--version", "1", "-o", str(out))
    assert out.read_bytes() == b"meow"
    ok("bob", "get", f"{A}/photos/cat.jpg", "-o", str(out))
    assert out.read_bytes() == b"purr"
    refused("alice", "has no version", "get", "photos/cat.jpg", "--version", "9", "-o", str(out))

    # the phone: granted /alice/phone with room for two blocks (and their fees)
    refused("alice", "outside this tree", "grant", str(PHONE.principal), f"{B}/x",
            "--expires", "1h", *MARKET)
    refused("alice", "expiry is in the future", "grant", str(PHONE.principal), "phone",
            "--expires", "1000", *MARKET)
    token = str(ok("alice", "grant", str(PHONE.principal), "phone", "--expires", "1h",
                   "--allowance", f"{ESCROW * 5 // 2}sat", *MARKET)["token"])
    refused("bob", "issued to", "import-grant", token)
    ok("phone", "import-grant", token)
    before, phone_before = balance(ALICE), balance(PHONE)
    ok("phone", "put", str(notes), "phone/notes.txt", *MARKET)
    assert before - balance(ALICE) >= ESCROW  # escrow and fees from the tree's account
    assert phone_before - balance(PHONE) < 2000  # at most its own announcement
    refused("phone", "outside this node's grant", "put", str(notes), "photos/x", *MARKET)
    ok("phone", "put", str(notes), "phone/more.txt", *MARKET)
    refused("phone", "allows", "put", str(notes), "phone/third.txt", *MARKET)
    assert [r["name"] for r in ok("phone", "ls")["entries"]] == [  # type: ignore[attr-defined, index]
        "more.txt", "notes.txt"]
    ok("alice", "get", "phone/notes.txt", "-o", str(out))
    assert out.read_bytes() == b"written on the phone"

    # revoke the phone, unshare Bob: re-keyed, neither reads the new versions
    revoked = ok("alice", "revoke", str(PHONE.principal), *MARKET)
    assert f"{A}/phone/notes.txt" in revoked["placed"]  # type: ignore[operator]
    ok("alice", "unshare", "photos", str(BOB.principal), *MARKET)
    for who, path in (("bob", f"{A}/photos/2024/beach.jpg"), ("bob", "alice-photos/cat.jpg"),
                      ("phone", "phone/notes.txt")):
        ran = tree(who, "get", path, "-o", str(out))
        assert ran.one_line_error and ("readcap" in ran.err or "re-keyed" in ran.err), ran.err
    refused("phone", "revoked its grant", "put", str(notes), "phone/late.txt", *MARKET)
    ok("alice", "get", "photos/2024/beach.jpg", "-o", str(out))
    assert out.read_bytes() == beach
    # the chain refuses the phone's writecap from now on
    _, cap = decode_grant(token)

    async def phone_offer() -> None:
        chain = HttpChain.for_datadir(net.datadir, REGTEST)
        try:
            height = await chain.tip_height()
            offer = FragmentOffer(path=f"{A}/phone/late", version=b"\x01" * 32, index=0, n=1,
                                  k=1, size=10, root=b"\x02" * 32, leaf_size=1024, price=1,
                                  collateral=0, period_blocks=5, periods=1,
                                  expiry_height=height + 50)
            await Signer(PHONE, ALICE.principal, cap).submit(chain, offer)
        finally:
            await chain.close()

    with pytest.raises(RevokedSigner):
        asyncio.run(phone_offer())
    # rm releases what is left under photos
    assert ok("alice", "rm", "photos")["removed"] == 4
    refused("alice", "not in this tree", "ls", "photos")
    assert [r["name"] for r in ok("alice", "ls")["entries"]] == ["phone"]  # type: ignore[attr-defined, index]


def test_expiry_forms() -> None:
    now = 1_700_000_000
    assert parse_expiry("30d", now) == now + 30 * 86400
    assert parse_expiry("12h", now) == now + 12 * 3600
    assert parse_expiry("90m", now) == now + 5400
    assert parse_expiry("1800000000", now) == 1_800_000_000
    assert parse_expiry("2027-01-01", now) == 1_798_761_600
    assert parse_expiry("2027-01-01T01:00:00+01:00", now) == 1_798_761_600
    with pytest.raises(ConfigError, match="not an expiry"):
        parse_expiry("next week", now)
