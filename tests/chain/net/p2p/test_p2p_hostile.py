"""Scripted hostile peers against a real node (b) that is syncing 2,000 blocks from an honest one (a).

One attack per test, each from its own identity: a staller, garbage after the hello, an
oversized message, a flood past the rate limit, spam of low-work headers, an invalid block the
node was lured into requesting, a listener holding the wrong key for the principal the node
dialled, and a dialler whose handshake is garbage. Each is cut off (and, when it has an
identity, banned); the last test checks that the honest sync completed regardless, with the same
global tree as its source. The two nodes are shared by the module's tests, which run in file
order on one worker (one xdist group): the staller goes first, while the sync is still on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from chain.core.block import Block, events_root
from chain.core.events import Coinbase, Event
from chain.core.header import Header
from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from chain.net.channel import WS_MAX_MSG_SIZE, ChannelError, SecureChannel, WebSocketTransport
from chain.net.p2p.messages import (
    BlockMsg,
    GetBlocks,
    Headers,
    NotFound,
    Ping,
    decode_message,
)
from chain.node.mining import solve
from tests.framework.netkit import (
    Hostile,
    NodeProc,
    converged,
    import_blocks,
    init_node_dir,
    make_blocks,
    metric,
    next_source,
    running,
    source_connector,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240), pytest.mark.xdist_group("hostile")]

SYNC_BLOCKS = 2000


@contextlib.asynccontextmanager
async def wrong_key_listener(key: KeyPair) -> AsyncIterator[int]:
    """A p2p endpoint that completes the handshake with ``key``."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=WS_MAX_MSG_SIZE)
        await ws.prepare(request)
        with contextlib.suppress(ChannelError):
            channel = await SecureChannel.accept(WebSocketTransport(ws), key, REGTEST.chain_id)
            await channel.close()
        return ws

    app = web.Application()
    app.router.add_get("/p2p", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # the kernel's choice: no race for the port
    await site.start()
    port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


def invalid_block_on(parent: Block, height: int) -> Block:
    """A block with a valid header on ``parent`` whose coinbase claims coin from nowhere."""
    events: list[Event] = [Coinbase(height, KeyPair.development(8).principal, 10**12)]
    header = solve(Header(parent.header.version, parent.hash, events_root(events),
                          parent.header.state_root, parent.header.time + 1, parent.header.bits, 0))
    assert header is not None
    return Block(header, events)


def banned_principals(node: NodeProc) -> set[str]:
    return {b["principal"] for b in node.get("/bans")["bans"] if b["principal"]}


@dataclass
class Pair:
    a: NodeProc  # the honest source
    b: NodeProc  # the node under attack, syncing from a
    blocks: list[Block]

    @property
    def port(self) -> int:
        return self.b.p2p_port


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("hostile")
    blocks = make_blocks(SYNC_BLOCKS, events_per_block=1, seed=11)
    import_blocks(init_node_dir(tmp / "a", 1), blocks).close()
    a = NodeProc(tmp / "a", "--no-discover", name="a")
    b = NodeProc(init_node_dir(tmp / "b", 2), "--no-discover", "--stall-timeout", "3", name="b")
    with running(a, b):
        a.start()
        b.args += ["--connect", a.p2p]
        b.start()
        wait_until(lambda: b.get("/status")["best_header_height"] >= SYNC_BLOCKS, 60,
                   "b to learn a's headers")
        yield Pair(a, b, blocks)


async def banned_after(pair: Pair, key: KeyPair, timeout: float = 20.0) -> bool:
    """Whether ``key`` is banned within ``timeout`` (the node may hang up a moment before it
    writes the ban)."""
    try:
        await asyncio.to_thread(wait_until, lambda: str(key.principal) in banned_principals(
            pair.b), timeout, f"{key.principal} to be banned")
    except AssertionError:
        return False
    return True


async def test_a_staller_is_dropped_not_banned_and_its_blocks_fetched_elsewhere(
        pair: Pair) -> None:
    """It claims a's whole chain, then never answers a block request: the node drops it after
    the stall timeout and fetches those blocks from a. Slow is not malicious."""
    key = KeyPair.generate()
    h = Hostile(pair.port, key)
    try:
        await h.open(best_height=SYNC_BLOCKS, best_work=1 << 40)
        await h.send(Headers([pair.blocks[-1].header]))
        assert await h.closed_by_peer(30)
    finally:
        await h.close()
    assert not await banned_after(pair, key, timeout=2.0)


async def test_garbage_after_the_hello_is_banned(pair: Pair) -> None:
    key = KeyPair.generate()
    h = Hostile(pair.port, key)
    try:
        await h.open()
        await h.send_raw(b"\xff" + os.urandom(100))
        assert await h.closed_by_peer()
    finally:
        await h.close()
    assert await banned_after(pair, key)


async def test_a_message_above_the_maximum_is_banned(pair: Pair) -> None:
    key = KeyPair.generate()
    h = Hostile(pair.port, key)
    try:
        await h.open()
        with contextlib.suppress(ChannelError):
            await h.send_raw(bytes(3_500_000))  # the node's maximum is 3 MiB
        assert await h.closed_by_peer()
    finally:
        await h.close()
    assert await banned_after(pair, key)


async def test_a_ping_flood_past_the_rate_limit_is_banned(pair: Pair) -> None:
    key = KeyPair.generate()
    h = Hostile(pair.port, key)
    try:
        await h.open()
        with contextlib.suppress(ChannelError):
            for i in range(6000):
                await h.send(Ping(i))
        assert await h.closed_by_peer()
    finally:
        await h.close()
    assert await banned_after(pair, key)


async def test_low_work_header_spam_is_banned(pair: Pair) -> None:
    """Valid proof of work, forking from genesis, adding nothing, announced again and again."""
    key = KeyPair.generate()
    h = Hostile(pair.port, key)
    try:
        await h.open()
        with contextlib.suppress(ChannelError):
            for i in range(40):
                fork = make_blocks(8, events_per_block=0, seed=1000 + i)
                await h.send(Headers([blk.header for blk in fork]))
        assert await h.closed_by_peer()
    finally:
        await h.close()
    assert await banned_after(pair, key)


async def test_an_invalid_block_the_node_was_lured_into_requesting_is_banned(pair: Pair) -> None:
    """Announce its (valid) header on a's tip, serve the block when asked (and say "not found"
    to requests for a's blocks)."""
    key = KeyPair.generate()
    bad = invalid_block_on(pair.blocks[-1], SYNC_BLOCKS + 1)
    h = Hostile(pair.port, key)
    try:
        await h.open(best_height=SYNC_BLOCKS + 1, best_work=1 << 40)
        await h.send(Headers([bad.header]))
        served = False
        with contextlib.suppress(ChannelError, TimeoutError):
            async with asyncio.timeout(60):
                while True:
                    msg = decode_message(await h.recv())
                    if isinstance(msg, GetBlocks):
                        others = [x for x in msg.hashes if x != bad.hash]
                        if others:
                            await h.send(NotFound(others))
                        if bad.hash in msg.hashes:
                            await h.send(BlockMsg.of(bad))
                            served = True
        assert served
    finally:
        await h.close()
    assert await banned_after(pair, key)
    # A banned principal coming back is hung up on at once.
    again = Hostile(pair.port, key)
    try:
        with contextlib.suppress(ChannelError, AssertionError):
            await again.open()
        assert await again.closed_by_peer(10)
    finally:
        await again.close()


async def test_a_listener_with_the_wrong_key_for_the_dialled_principal_is_banned(
        pair: Pair) -> None:
    b = pair.b
    before = await asyncio.to_thread(metric, b, "blockcoin_p2p_handshake_failures_total")
    claimed = KeyPair.generate().principal
    async with wrong_key_listener(KeyPair.generate()) as fake_port:
        address = f"127.0.0.1:{fake_port}"
        await asyncio.to_thread(b.post, "/peers", {"address": f"{claimed}@{address}"})
        await asyncio.to_thread(
            wait_until, lambda: address in {x["address"] for x in b.get("/bans")["bans"]},
            20, "the wrong-key address to be banned")
    after = await asyncio.to_thread(metric, b, "blockcoin_p2p_handshake_failures_total")
    assert after > before


async def test_a_dialler_whose_handshake_is_garbage_is_a_handshake_failure(pair: Pair) -> None:
    b = pair.b
    before = await asyncio.to_thread(metric, b, "blockcoin_p2p_handshake_failures_total")
    async with aiohttp.ClientSession(connector=source_connector(next_source())) as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{pair.port}/p2p",
                                      max_msg_size=WS_MAX_MSG_SIZE)
        await ws.send_bytes(os.urandom(200))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await ws.receive()
        await ws.close()
    await asyncio.to_thread(
        wait_until,
        lambda: metric(b, "blockcoin_p2p_handshake_failures_total") > before, 20,
        "the garbage handshake to be counted")


async def test_the_honest_sync_finishes_with_identical_global_trees(pair: Pair) -> None:
    a, b = pair.a, pair.b
    tip = await asyncio.to_thread(wait_until, lambda: converged([a, b], SYNC_BLOCKS), 60,
                                  "b to reach a's tip")
    assert tip == (SYNC_BLOCKS, pair.blocks[-1].hash[::-1].hex())
    assert (await asyncio.to_thread(a.digest))["digest"] == (
        await asyncio.to_thread(b.digest))["digest"]
    assert a.principal not in await asyncio.to_thread(banned_principals, b)
    status = await asyncio.to_thread(b.get, "/status")
    assert status["best_header_height"] == SYNC_BLOCKS and not status["syncing"]
