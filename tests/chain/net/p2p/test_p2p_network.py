"""Real node processes on 127.0.0.1: convergence, catching up thousands of blocks, partitions
that heal onto the most-work chain with identical global trees, and relay of events."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chain.core.events import SignedEvent, Transfer
from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from tests.framework.netkit import (
    NodeProc,
    converged,
    import_blocks,
    init_node_dir,
    make_blocks,
    running,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_three_nodes_converge_and_relay_events(tmp_path: Path) -> None:
    a = NodeProc(init_node_dir(tmp_path / "a", 1), "--mine", "--mine-interval", "0.25", name="a")
    b = NodeProc(init_node_dir(tmp_path / "b", 2), name="b")
    c = NodeProc(init_node_dir(tmp_path / "c", 3), name="c")
    with running(a, b, c):
        a.start()
        b.args += ["--connect", a.p2p]
        c.args += ["--connect", b.p2p]
        b.start()
        c.start()
        wait_until(lambda: converged([a, b, c], min_height=8), 60, "three tips to agree")
        # Discovery: c learns a's address (peer exchange or its Announce event) and dials it.
        wait_until(lambda: a.principal in {p["principal"] for p in c.get("/peers")["peers"]},
                   60, "c to connect to a directly")
        # An event submitted at c is relayed to the miner a and mined; every node sees it.
        sender = KeyPair.development(5)  # no node signs with it (nodes announce with theirs)
        nonce = c.get(f"/global/principals/{sender.principal}")["next_nonce"]
        to = KeyPair.generate().principal
        ev = SignedEvent.create(REGTEST.chain_id, sender, nonce, 1000, Transfer(to, 12345))
        eid = c.post("/events", {"event": ev.raw.hex()})["id"]
        wait_until(lambda: all(n.get(f"/events/{eid}")["status"] == "confirmed"
                               for n in (a, b, c)), 60, "the transfer to be mined everywhere")
        for n in (a, b, c):
            assert n.get(f"/global/principals/{to}")["balance"] == 12345
        # A mined block's own announce events carry the nodes' addresses into the tree.
        wait_until(lambda: a.get(f"/global/principals/{c.principal}").get("address") == c.p2p,
                   60, "c's address to be announced and mined")
        # Stop mining-side changes before comparing whole trees: compare at one common tip.
        a.stop()
        tip = wait_until(lambda: converged([b, c]), 30, "b and c to agree after a stops")
        assert b.digest() == c.digest()
        assert tip[0] >= 8


def test_late_node_syncs_thousands_of_blocks(tmp_path: Path) -> None:
    blocks = make_blocks(2500, events_per_block=2, seed=7)
    import_blocks(init_node_dir(tmp_path / "a", 1), blocks).close()
    a = NodeProc(tmp_path / "a", name="a")
    b = NodeProc(init_node_dir(tmp_path / "b", 2), name="b")
    with running(a, b):
        a.start()
        b.args += ["--connect", a.p2p]
        started = time.monotonic()
        b.start()
        wait_until(lambda: b.tip()[0] >= 2500, 90, "b to sync 2500 blocks", interval=0.25)
        elapsed = time.monotonic() - started
        assert b.tip() == (2500, blocks[-1].hash[::-1].hex())
        digest_a, digest_b = a.digest(), b.digest()
        assert digest_a["digest"] == digest_b["digest"] and digest_a["height"] == 2500
        assert "sync: block" in b.log() or elapsed < 3  # progress is reported during sync
        assert "blockcoin_tip_height 2500" in b.get("/metrics").decode()


def test_partitioned_halves_reconverge_on_most_work_chain(tmp_path: Path) -> None:
    nodes = [NodeProc(init_node_dir(tmp_path / n, i + 1), "--no-discover", name=n)
             for i, n in enumerate("abcd")]
    a, b, c, d = nodes
    with running(*nodes):
        a.start()
        b.args += ["--connect", a.p2p]
        b.start()
        c.start()
        d.args += ["--connect", c.p2p]
        d.start()
        # Each half mines on its own, with transfers so that the global trees differ.
        for miner, spender, rounds in ((a, b, 12), (c, d, 7)):
            # funded keys no node signs with: a node announces its address with its own key,
            # which would race these nonces
            key = KeyPair.development({"b": 6, "d": 7}[spender.name])
            for r in range(rounds):
                nonce = spender.get(f"/global/principals/{key.principal}")["next_nonce"]
                ev = SignedEvent.create(REGTEST.chain_id, key, nonce, 500,
                                        Transfer(KeyPair.development(r % 10).principal, 1000 + r))
                spender.post("/events", {"event": ev.raw.hex()})
                wait_until(lambda m=miner: len(m.get("/mempool")["events"]) > 0, 20,
                           "the event to reach the miner")
                miner.post("/mine", {"blocks": 1})
        left = wait_until(lambda: converged([a, b], 12), 30, "the left half to agree")
        right = wait_until(lambda: converged([c, d], 7), 30, "the right half to agree")
        assert left != right
        assert a.digest()["digest"] != c.digest()["digest"]
        # Heal the partition: b dials c.
        b.post("/peers", {"address": c.p2p})
        tip = wait_until(lambda: converged(nodes, 12), 60, "all four to agree")
        assert tip == left  # the left half did more work
        digests = {n.digest()["digest"] for n in nodes}
        assert len(digests) == 1
        # The right half's transfers that the left chain lacks are back in its mempools.
        assert c.get("/mempool")["count"] + d.get("/mempool")["count"] > 0
