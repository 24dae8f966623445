"""A scripted hostile peer against a real node that is syncing from an honest one.

Each misbehaviour comes from its own identity: garbage after the hello, an oversized message,
a flood past the rate limit, spam of low-work headers, an invalid block the node was lured into
requesting, a listener holding the wrong key for the principal the node dialled, and a dialler
whose handshake is garbage. Each is cut off (and, when it has an identity, banned) while the
honest sync completes with the same global tree as its source.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

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
    next_source,
    running,
    source_connector,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


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


async def test_hostile_peers_are_cut_off_and_banned_while_sync_goes_on(tmp_path: Path) -> None:
    blocks = make_blocks(2000, events_per_block=1, seed=11)
    import_blocks(init_node_dir(tmp_path / "a", 1), blocks).close()
    a = NodeProc(tmp_path / "a", "--no-discover", name="a")
    b = NodeProc(init_node_dir(tmp_path / "b", 2), "--no-discover", "--stall-timeout", "3",
                 name="b")
    with running(a, b):
        a.start()
        b.args += ["--connect", a.p2p]
        b.start()
        port = b.p2p_port
        keys = {name: KeyPair.generate() for name in
                ("staller", "garbage", "oversize", "flood", "spam", "invalid")}
        hostiles = {name: Hostile(port, key) for name, key in keys.items()}
        try:
            # A staller: claims a's whole chain, then never answers a block request. The node
            # drops it after the stall timeout and fetches those blocks from a.
            await asyncio.to_thread(wait_until, lambda: b.get("/status")["best_header_height"]
                                    >= 2000, 30, "b to learn a's headers")
            h = hostiles["staller"]
            await h.open(best_height=2000, best_work=1 << 40)
            await h.send(Headers([blocks[-1].header]))
            assert await h.closed_by_peer(30)

            # Garbage after a proper hello.
            h = hostiles["garbage"]
            await h.open()
            await h.send_raw(b"\xff" + os.urandom(100))
            assert await h.closed_by_peer()

            # A message above the node's maximum (3 MiB).
            h = hostiles["oversize"]
            await h.open()
            with contextlib.suppress(ChannelError):
                await h.send_raw(bytes(3_500_000))
            assert await h.closed_by_peer()

            # A flood of pings past the per-peer rate limit.
            h = hostiles["flood"]
            await h.open()
            with contextlib.suppress(ChannelError):
                for i in range(6000):
                    await h.send(Ping(i))
            assert await h.closed_by_peer()

            # Low-work header spam: valid proof of work, forking from genesis, adding nothing.
            h = hostiles["spam"]
            await h.open()
            with contextlib.suppress(ChannelError):
                for i in range(40):
                    fork = make_blocks(8, events_per_block=0, seed=1000 + i)
                    await h.send(Headers([blk.header for blk in fork]))
            assert await h.closed_by_peer()

            # An invalid block: announce its (valid) header on a's tip, serve the block when asked
            # (and say "not found" to requests for a's blocks).
            bad = invalid_block_on(blocks[-1], 2001)
            h = hostiles["invalid"]
            await h.open(best_height=2001, best_work=1 << 40)
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

            # A listener whose key is not the principal the node was told to dial.
            claimed = KeyPair.generate().principal
            async with wrong_key_listener(KeyPair.generate()) as fake_port:
                address = f"127.0.0.1:{fake_port}"
                await asyncio.to_thread(b.post, "/peers", {"address": f"{claimed}@{address}"})
                await asyncio.to_thread(
                    wait_until, lambda: address in {x["address"] for x in b.get("/bans")["bans"]},
                    20, "the wrong-key address to be banned")

            # A dialler whose handshake is garbage.
            async with aiohttp.ClientSession(connector=source_connector(next_source())) as session:
                ws = await session.ws_connect(f"http://127.0.0.1:{port}/p2p",
                                              max_msg_size=WS_MAX_MSG_SIZE)
                await ws.send_bytes(os.urandom(200))
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(10):
                        await ws.receive()
                await ws.close()
        finally:
            for h in hostiles.values():
                await h.close()

        # Every identified attacker is banned; the honest source is not.
        banned = await asyncio.to_thread(banned_principals, b)
        for name in ("garbage", "oversize", "flood", "spam", "invalid"):
            assert str(keys[name].principal) in banned, name
        assert a.principal not in banned
        assert str(keys["staller"].principal) not in banned  # slow is not malicious
        # A banned principal coming back is hung up on at once.
        again = Hostile(port, keys["garbage"])
        try:
            with contextlib.suppress(ChannelError, AssertionError):
                await again.open()
            assert await again.closed_by_peer(10)
        finally:
            await again.close()

        # The honest sync finished regardless, with identical global trees.
        tip = await asyncio.to_thread(wait_until, lambda: converged([a, b], 2000), 60,
                                      "b to reach a's tip")
        assert tip == (2000, blocks[-1].hash[::-1].hex())
        assert (await asyncio.to_thread(a.digest))["digest"] == (
            await asyncio.to_thread(b.digest))["digest"]
        metrics = (await asyncio.to_thread(b.get, "/metrics")).decode()
        for line in metrics.splitlines():
            if line.startswith("blockcoin_p2p_handshake_failures_total"):
                assert int(line.split()[-1]) >= 2
        status = await asyncio.to_thread(b.get, "/status")
        assert status["best_header_height"] == 2000 and not status["syncing"]
