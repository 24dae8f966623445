"""HttpChain against a real ``blockcoin node`` process (not the in-process stand-in): every
call the storage market's agents make, the long-poll they follow the chain with, pending
nonces of a signer with no record yet, and refusals that keep their consensus error class."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.core.errors import InsufficientFunds
from chain.core.events import Announce, SignedEvent, Transfer
from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from chain.core.writecap import Writecap
from storage_market.chainclient import Signer
from storage_market.httpclient import HttpChain, NodeApiError
from tests.framework.netkit import NodeProc, init_node_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    base = tmp_path_factory.mktemp("httpchain")
    proc = NodeProc(init_node_dir(base / "n", 3), "--no-discover", name="n").start()
    try:
        yield proc
    finally:
        proc.stop()


async def mine(node: NodeProc, blocks: int = 1) -> int:
    data = await asyncio.to_thread(node.post, "/mine", {"blocks": blocks})
    return int(data["height"])


async def test_reads_writes_and_nonces_through_a_node(node: NodeProc) -> None:
    http = HttpChain.for_datadir(node.datadir, REGTEST)
    try:
        start = await http.tip_height()
        dev = KeyPair.development(3)
        fresh = KeyPair.generate()
        before = await http.next_nonce(dev.principal)
        eid = await Signer(dev).submit(http, Transfer(fresh.principal, 5))
        assert len(eid) == 32 and await http.next_nonce(dev.principal) == before + 1
        # a signer with no record yet (its events paid by dev's tree through a writecap):
        # its pending events still count
        assert await http.next_nonce(fresh.principal) == 0
        cap = Writecap.issue(REGTEST.chain_id, dev, dev.principal.root_path, fresh.principal,
                             2**40)
        await http.submit(SignedEvent.create_at_rate(
            REGTEST.chain_id, fresh, 0, 1, Announce(fresh.public.x25519, "127.0.0.1:9"),
            dev.principal, cap))
        assert await http.principal(fresh.principal) is None
        assert await http.next_nonce(fresh.principal) == 1
        assert await mine(node) == start + 1
        acct = await http.principal(fresh.principal)
        assert acct is not None and acct.balance == 5 and acct.address == "127.0.0.1:9"
        assert await http.next_nonce(fresh.principal) == 1
        kinds = {type(e.body) for e in await http.block_events(start + 1)}
        assert kinds == {Transfer, Announce}
        assert await http.block_events(start + 50) == []
        assert await http.contract(b"\x00" * 32) is None
        assert await http.contracts_by_owner(dev.principal) == []
        assert await http.contracts_by_host(fresh.principal) == []
        root = dev.principal.root_path
        assert await http.fragments(root + "/nothing") == {}
        assert await http.fragments(root + "/a dir/50% off/x.bin") == {}  # quoted, not refused
        with pytest.raises(InsufficientFunds):  # the consensus error class, through HTTP
            await Signer(KeyPair.generate()).submit(http, Transfer(dev.principal, 10))
        with pytest.raises(NodeApiError, match="unauthorized"):
            await HttpChain(http.base, REGTEST, "0" * 64).submit(
                SignedEvent.create(REGTEST.chain_id, dev, 0, 0, Transfer(fresh.principal, 1)))
    finally:
        await http.close()


async def test_waiting_for_a_block_is_a_long_poll(node: NodeProc) -> None:
    http = HttpChain.for_datadir(node.datadir, REGTEST)
    try:
        height = await http.tip_height()
        started = time.monotonic()
        assert await http.wait_for_block(height, 0.6) == height  # nothing mined: the timeout
        assert 0.5 < time.monotonic() - started < 5
        waiter = asyncio.ensure_future(http.wait_for_block(height, 20))
        await asyncio.sleep(0.3)
        await mine(node)
        mined = time.monotonic()
        assert await asyncio.wait_for(waiter, 10) == height + 1
        # woken by the block, not at the end of a 5 s long-poll or the 20 s timeout
        assert time.monotonic() - mined < 2.5
        assert await http.wait_for_block(height - 1, 20) == height + 1  # already past: at once
    finally:
        await http.close()


async def test_an_unreachable_node_is_a_clear_error(tmp_path: Path) -> None:
    http = HttpChain("http://127.0.0.1:9", REGTEST)
    try:
        with pytest.raises(NodeApiError, match="cannot reach the node"):
            await http.tip_height()
    finally:
        await http.close()
