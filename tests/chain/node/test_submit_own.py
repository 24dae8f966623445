"""The node's own events (its address announcement, the dashboard's actions) never take the
nonce of an event its user submitted meanwhile with the same wallet."""

from __future__ import annotations

import asyncio
from pathlib import Path

from chain.core.events import Announce, SignedEvent, Transfer
from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from chain.node.core import NodeCore
from chain.node.local import LocalNode
from chain.node.wallet import DEFAULT_FEE
from tests.framework.netkit import init_node_dir


async def test_a_users_pending_transfer_keeps_its_nonce(tmp_path: Path) -> None:
    init_node_dir(tmp_path, 1)  # development key 1: funded at genesis
    local = LocalNode(tmp_path, REGTEST)
    try:
        core = NodeCore(local, asyncio.get_running_loop())
        key = core.key
        # The user's transfer, signed elsewhere (the CLI through the API) with the next nonce,
        # reaches the pool first, with a lower fee than the node's announcement will pay.
        nonce = await core.run(core.wallet.next_nonce, core.chain, core.mempool)
        transfer = SignedEvent.create_at_rate(REGTEST.chain_id, key, nonce, 1,
                                              Transfer(KeyPair.development(3).principal, 5))
        [(_, tid, err)] = await core.add_events([transfer])
        assert err is None and tid is not None
        announce, aid = await core.submit_own(Announce(key.public.x25519, "127.0.0.1:1"),
                                              DEFAULT_FEE)
        assert announce.nonce == nonce + 1
        assert announce.fee > transfer.fee
        assert tid in core.mempool.entries and aid in core.mempool.entries
    finally:
        local.close()
