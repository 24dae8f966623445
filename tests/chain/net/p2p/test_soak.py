"""Soak: a 3-node devnet mines and publishes events for ``SOAK_SECONDS`` (default 600) while a
hostile peer cycles through the cheap attacks; at the end the nodes agree on the tip and every
node's global tree equals a fresh fold of its chain (``reindex``).

Run by ``make soak``; excluded from ``make test`` (marker ``soak``). A failure shows the end of
each node's log and where the whole log is; pytest keeps only its last three temporary
directories, so add ``--basetemp=DIR`` to keep every log and data directory of a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from chain.core.block import Block
from chain.core.events import Coinbase, Event, SignedEvent, Transfer
from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from chain.net.channel import ChannelError
from chain.net.p2p.messages import BlockMsg, Events, GetBlocks, GetHeaders, Headers, decode_message
from tests.framework.netkit import (
    CLAIM,
    ROOT,
    UPGRADE,
    Hostile,
    NodeProc,
    converged,
    drain,
    idle_sockets,
    init_node_dir,
    make_blocks,
    next_source,
    raise_nofile,
    running,
    tip_block,
    wait_until,
)

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
pytestmark = [pytest.mark.slow, pytest.mark.soak, pytest.mark.timeout(SECONDS + 600)]

SENDERS = [KeyPair.development(i) for i in range(5, 10)]
SEEDS = itertools.count(10_000)  # each forged branch differs from the last


async def withhold(node: NodeProc) -> None:
    parent, height = await asyncio.to_thread(tip_block, node)
    headers = [b.header for b in make_blocks(2, 0, seed=next(SEEDS), parent=parent.header,
                                             start_height=height)]
    h = Hostile(node.p2p_port, KeyPair.generate())
    try:
        await h.open(best_height=height + 2, best_work=CLAIM)
        await h.send(Headers(headers))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(8):
                await drain(h)
    finally:
        await h.close()


async def mutate(node: NodeProc) -> None:
    parent, height = await asyncio.to_thread(tip_block, node)
    good = make_blocks(1, 0, seed=next(SEEDS), parent=parent.header,
                       start_height=height)[0]
    other: list[Event] = [Coinbase(height + 1, KeyPair.development(3).principal, 0, b"m")]
    h = Hostile(node.p2p_port, KeyPair.generate())
    try:
        await h.open(best_height=height + 1, best_work=CLAIM)
        await h.send(Headers([good.header]))
        with contextlib.suppress(ChannelError, TimeoutError):
            async with asyncio.timeout(8):
                while True:
                    msg = decode_message(await h.recv())
                    if isinstance(msg, GetBlocks) and good.hash in msg.hashes:
                        await h.send(BlockMsg.of(Block(good.header, other)))
    finally:
        await h.close()


async def lie(node: NodeProc) -> None:
    h = Hostile(node.p2p_port, KeyPair.generate())
    try:
        await h.open(best_height=10**6, best_work=CLAIM)
        with contextlib.suppress(ChannelError, TimeoutError):
            async with asyncio.timeout(8):
                for _ in range(10):
                    await h.wait_for(GetHeaders)
                    branch = make_blocks(3, 0, seed=next(SEEDS))
                    await h.send(Headers([b.header for b in branch]))
    finally:
        await h.close()


async def replay(node: NodeProc) -> None:
    to = KeyPair.development(2).principal
    message = Events([SignedEvent.create(REGTEST.chain_id, KeyPair.generate(), 0, 100,
                                         Transfer(to, 1)) for _ in range(200)])
    peers = [Hostile(node.p2p_port, KeyPair.generate()) for _ in range(3)]
    try:
        for h in peers:
            await h.open()
        with contextlib.suppress(ChannelError):
            for h in peers:
                await h.send(message)
                await h.send(message)
        await asyncio.gather(*(h.closed_by_peer(8) for h in peers))
    finally:
        for h in peers:
            await h.close()


async def idle(node: NodeProc) -> None:
    def hold() -> None:
        sources = [next_source() for _ in range(10)]
        with idle_sockets(node.p2p_port, 100, sources), \
                idle_sockets(node.p2p_port, 50, sources, UPGRADE), \
                idle_sockets(node.api_port, 100, ["127.0.0.1"]):
            time.sleep(3)
            node.get("/status")

    await asyncio.to_thread(hold)


async def odd_api(node: NodeProc) -> None:
    def ask() -> None:
        import http.client

        for path in ("/blocks/%C2%B2", "/headers?count=%E2%91%A0", "/tip?wait=%D9%A1"):
            conn = http.client.HTTPConnection("127.0.0.1", node.api_port, timeout=30)
            conn.request("GET", path)
            assert conn.getresponse().status == 400, path
            conn.close()

    await asyncio.to_thread(ask)


ATTACKS: list[Callable[[NodeProc], Awaitable[None]]] = [
    withhold, mutate, lie, replay, idle, odd_api]


def publish(node: NodeProc, round_: int) -> None:
    """A few signed transfers through the API (the events a storing network publishes)."""
    key = SENDERS[round_ % len(SENDERS)]
    nonce = node.get(f"/global/principals/{key.principal}")["next_nonce"]
    for i in range(3):
        ev = SignedEvent.create(REGTEST.chain_id, key, nonce + i, 1000,
                                Transfer(KeyPair.development(round_ % 5).principal, 1 + i))
        node.post("/events", {"event": ev.raw.hex()})


def reindex(node: NodeProc) -> None:
    subprocess.run([sys.executable, "-m", "chain", "reindex", "-n", "regtest", "-d",
                    str(node.datadir)], check=True, cwd=ROOT, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))


async def test_devnet_keeps_working_under_cycling_attacks(tmp_path: Path) -> None:
    raise_nofile()
    mining = ["--mine", "--mine-interval", "2", "--threads", "1", "--stall-timeout", "3",
              "--no-discover"]
    a = NodeProc(init_node_dir(tmp_path / "a", 1), *mining, name="a")
    b = NodeProc(init_node_dir(tmp_path / "b", 2), *mining, name="b")
    c = NodeProc(init_node_dir(tmp_path / "c", 3), *mining, name="c")
    nodes = [a, b, c]
    with running(a, b, c):
        await asyncio.to_thread(a.start)
        b.args += ["--connect", a.p2p]
        await asyncio.to_thread(b.start)
        c.args += ["--connect", a.p2p, "--connect", b.p2p]
        await asyncio.to_thread(c.start)
        deadline = time.monotonic() + SECONDS
        rounds = 0
        heights: list[int] = []
        while time.monotonic() < deadline:
            target = nodes[rounds % 3]
            await ATTACKS[rounds % len(ATTACKS)](target)
            with contextlib.suppress(Exception):  # a nonce race with a block is no failure
                await asyncio.to_thread(publish, nodes[(rounds + 1) % 3], rounds)
            heights.append(int((await asyncio.to_thread(target.get, "/tip"))["height"]))
            rounds += 1
        assert rounds >= len(ATTACKS)
        assert heights[-1] > heights[0]  # mining went on throughout

        # Stop mining: restart every node without --mine, connected, and let them agree.
        for node in nodes:
            node.stop()
        for node in nodes:
            node.args = [x for x in node.args if x not in ("--mine",)]
        for node in nodes:  # b and c dial a (and c dials b) as before
            node.start()
        tip = wait_until(lambda: converged(nodes, heights[-1]), 120, "the nodes to agree")
        digests = {node.digest()["digest"] for node in nodes}
        assert len(digests) == 1
        for node in nodes:  # a fresh fold of each node's chain gives the same state
            node.stop()
            reindex(node)
            node.start()
            assert node.tip() == tip
            assert node.digest()["digest"] in digests
