"""The node publishes its p2p address under its wallet, but never takes the wallet's record back
from another process signing with the same wallet (a storage owner agent on the node's data
directory, whose hosts fetch fragments from the address it published)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chain.core.events import Announce, SignedEvent
from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from tests.framework.netkit import NodeProc, init_node_dir, running, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_an_agents_address_under_the_wallet_is_left_alone(tmp_path: Path) -> None:
    key = KeyPair.development(4)
    node = NodeProc(init_node_dir(tmp_path / "n", 4), "--no-discover", "--announce",
                    "127.0.0.1:1111", name="n")
    with running(node):
        node.start()
        me = str(key.principal)
        node.post("/mine", {"blocks": 1})
        wait_until(lambda: node.get("/mempool")["count"] >= 1, 30, "the node's own Announce")
        node.post("/mine", {"blocks": 1})
        assert node.get(f"/global/principals/{me}")["address"] == "127.0.0.1:1111"
        # the owner agent, signing with the same wallet key, publishes its listener
        nonce = node.get(f"/global/principals/{me}")["next_nonce"]
        agent = SignedEvent.create_at_rate(REGTEST.chain_id, key, nonce, 1,
                                           Announce(key.public.x25519, "127.0.0.1:2222"))
        node.post("/events", {"event": agent.raw.hex()})
        node.post("/mine", {"blocks": 1})
        assert node.get(f"/global/principals/{me}")["address"] == "127.0.0.1:2222"
        time.sleep(12)  # more than two of the node's announcement rounds (every 5 s)
        assert node.get("/mempool")["count"] == 0
        node.post("/mine", {"blocks": 1})
        assert node.get(f"/global/principals/{me}")["address"] == "127.0.0.1:2222"
        assert "published by another process with this wallet" in node.log()
