"""Cheap attacks on a real node over loopback, each checked against the node's job.

Every attack here once stopped a node from doing its job without crashing it: blocks announced
and withheld (or sent mutated) froze the tip and the miner; connections that never speak used up
the process's descriptors; stalled handshakes took every inbound slot; a peer lying about its
work had low-work branches stored; peers replaying refused events kept a core busy. Each test
mounts one attack from its own loopback addresses and asserts that the node still syncs, mines,
answers its API and admits honest peers, within generous deadlines that hold on a loaded machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
import pytest

from chain.core.block import Block
from chain.core.events import Coinbase, Event, SignedEvent, Transfer
from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from chain.net.channel import ChannelError
from chain.net.p2p.messages import (
    BlockMsg,
    Events,
    GetBlocks,
    GetHeaders,
    Headers,
    decode_message,
)
from tests.framework.netkit import (
    CLAIM,
    UPGRADE,
    Hostile,
    NodeProc,
    banned,
    converged,
    drain,
    idle_sockets,
    import_blocks,
    init_node_dir,
    make_blocks,
    metric,
    mining_node,
    next_source,
    open_fds,
    raise_nofile,
    running,
    tip_block,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

async def off_thread(fn, *args):  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(fn, *args)


async def test_withheld_and_mutated_blocks_stop_being_waited_for(tmp_path: Path) -> None:
    node = NodeProc(init_node_dir(tmp_path / "n", 1), "--no-discover", "--stall-timeout", "2",
                    name="n")
    with running(node):
        await off_thread(node.start)
        await off_thread(node.post, "/mine", {"blocks": 3})
        parent, height = await off_thread(tip_block, node)

        # Two valid headers on the tip whose blocks never come.
        withheld = make_blocks(2, events_per_block=0, seed=21, parent=parent.header,
                               start_height=height)
        w = Hostile(node.p2p_port, KeyPair.generate())
        reader = None
        try:
            await w.open(best_height=height + 2, best_work=CLAIM)
            reader = asyncio.ensure_future(drain(w))
            await w.send(Headers([b.header for b in withheld]))
            await off_thread(wait_until, lambda: node.get("/status")["best_header_height"]
                             == height + 2, 30, "the withheld headers to be taken")
            status = await off_thread(
                wait_until, lambda: (s := node.get("/status")) and not s["syncing"] and s,
                45, "the node to stop waiting for the withheld blocks")
            assert status["height"] == height and status["best_header_height"] == height
        finally:
            if reader is not None:
                reader.cancel()
            await w.close()

        # A header whose block arrives with other events: its sender is banned, and the
        # node stops waiting for the real block since nobody else has it.
        good = make_blocks(1, events_per_block=0, seed=22, parent=parent.header,
                           start_height=height)[0]
        other: list[Event] = [Coinbase(height + 1, KeyPair.development(3).principal, 0, b"x")]
        mutated = Block(good.header, other)
        m = Hostile(node.p2p_port, KeyPair.generate())
        try:
            await m.open(best_height=height + 1, best_work=CLAIM)
            await m.send(Headers([good.header]))
            with contextlib.suppress(ChannelError, TimeoutError):
                async with asyncio.timeout(30):
                    while True:
                        msg = decode_message(await m.recv())
                        if isinstance(msg, GetBlocks) and good.hash in msg.hashes:
                            await m.send(BlockMsg.of(mutated))
        finally:
            await m.close()
        assert await off_thread(wait_until, lambda: banned(node, m.key), 30, "a ban")
        status = await off_thread(
            wait_until, lambda: (s := node.get("/status")) and not s["syncing"] and s, 45,
            "the node to stop waiting for the mutated block")
        assert status["height"] == height
        # The node does its job on its own valid tip.
        mined = await off_thread(node.post, "/mine", {"blocks": 1})
        assert mined["height"] == height + 1


async def test_the_miner_goes_on_while_blocks_are_withheld(tmp_path: Path) -> None:
    node = mining_node(tmp_path / "m", 0.5, "--stall-timeout", "2", name="m")
    with running(node):
        await off_thread(node.start)
        await off_thread(wait_until, lambda: node.get("/tip")["height"] >= 2, 60, "mining")
        parent, height = await off_thread(tip_block, node)
        withheld = make_blocks(2, events_per_block=0, seed=23, parent=parent.header,
                               start_height=height)
        w = Hostile(node.p2p_port, KeyPair.generate())
        try:
            await w.open(best_height=height + 2, best_work=CLAIM)
            reader = asyncio.ensure_future(drain(w))
            await w.send(Headers([b.header for b in withheld]))
            # The miner mines past the withheld chain on its own valid tip.
            await off_thread(wait_until, lambda: node.get("/tip")["height"] >= height + 5, 60,
                             "the miner to mine past the withheld headers")
            reader.cancel()
        finally:
            await w.close()
        status = await off_thread(node.get, "/status")
        assert status["mining"] and status["height"] >= height + 5


def timed_status(node: NodeProc) -> float:
    started = time.monotonic()
    node.get("/status")
    return time.monotonic() - started


def test_idle_connections_are_capped_and_closed_while_the_api_answers(tmp_path: Path) -> None:
    raise_nofile()
    node = NodeProc(init_node_dir(tmp_path / "i", 1), "--no-discover", name="i")
    with running(node):
        node.start()
        baseline = open_fds(node)
        p2p_sources = [next_source() for _ in range(75)]
        with idle_sockets(node.p2p_port, 750, p2p_sources) as p2p, \
                idle_sockets(node.api_port, 750, ["127.0.0.1"]) as api:
            assert len(p2p) + len(api) == 1500
            latencies = [timed_status(node) for _ in range(5)]
            assert max(latencies) < 1.0, latencies
            # The p2p port holds at most its cap, whatever was opened.
            assert open_fds(node) < baseline + 750 + 200 + 16
            # Connections that never spoke are closed by the node (10 s deadline).
            wait_until(lambda: open_fds(node) <= baseline + 8, 45,
                       "the node to close the idle connections")
            assert timed_status(node) < 1.0
        text = node.get("/metrics").decode()
        assert 'blockcoin_p2p_connections{what="timed_out"}' in text


def test_an_honest_peer_connects_while_500_handshakes_stall(tmp_path: Path) -> None:
    raise_nofile()
    a = NodeProc(init_node_dir(tmp_path / "a", 1), "--no-discover", "--handshake-timeout", "120",
                 name="a")
    b = NodeProc(init_node_dir(tmp_path / "b", 2), "--no-discover", name="b")
    with running(a, b):
        a.start()
        a.post("/mine", {"blocks": 2})
        sources = [next_source() for _ in range(50)]
        with idle_sockets(a.p2p_port, 500, sources, UPGRADE):
            b.args += ["--connect", a.p2p]
            b.start()
            wait_until(lambda: a.principal in {p["principal"] for p in b.get("/peers")["peers"]},
                       45, "b to get through to a")
            wait_until(lambda: b.get("/tip")["height"] == 2, 30, "b to sync from a")
            stats = a.get("/metrics").decode()
            assert 'blockcoin_p2p_connections{what="evicted"}' in stats


async def test_a_peer_lying_about_its_work_is_banned_and_stores_no_headers(
        tmp_path: Path) -> None:
    node = NodeProc(init_node_dir(tmp_path / "l", 1), "--no-discover", name="l")
    with running(node):
        await off_thread(node.start)
        await off_thread(node.post, "/mine", {"blocks": 6})
        before = await off_thread(metric, node, "blockcoin_header_tree_size")
        source = next_source()
        liar = Hostile(node.p2p_port, KeyPair.generate(), source)
        sent = 0
        try:
            await liar.open(best_height=10_000, best_work=CLAIM)
            with contextlib.suppress(ChannelError, TimeoutError):
                async with asyncio.timeout(30):
                    while True:  # every request for headers gets a short low-work branch
                        msg = decode_message(await liar.recv())
                        if not isinstance(msg, GetHeaders):
                            continue
                        branch = make_blocks(3, events_per_block=0, seed=300 + sent)
                        await liar.send(Headers([b.header for b in branch]))
                        sent += 1
        finally:
            await liar.close()
        assert 1 <= sent <= 3
        assert await off_thread(wait_until, lambda: banned(node, liar.key), 20, "the ban")
        assert await off_thread(metric, node, "blockcoin_header_tree_size") == before
        # The ban covers its address: a fresh key from there is refused too.
        again = Hostile(node.p2p_port, KeyPair.generate(), source)
        try:
            await again.open()
        except (ChannelError, aiohttp.ClientError, OSError):
            refused = True
        else:
            refused = await again.closed_by_peer(10)
        finally:
            await again.close()
        assert refused


async def test_replayed_unfunded_events_cost_one_check_each(tmp_path: Path) -> None:
    node = NodeProc(init_node_dir(tmp_path / "r", 1), "--no-discover", name="r")
    with running(node):
        await off_thread(node.start)
        to = KeyPair.development(2).principal
        events = [SignedEvent.create(REGTEST.chain_id, KeyPair.generate(), 0, 100,
                                     Transfer(to, 1)) for _ in range(500)]
        message = Events(events)
        peers = [Hostile(node.p2p_port, KeyPair.generate()) for _ in range(6)]
        try:
            for h in peers:
                await h.open()

            async def replay(h: Hostile) -> None:
                with contextlib.suppress(ChannelError):
                    for _ in range(5):
                        await h.send(message)

            await asyncio.gather(*(replay(h) for h in peers))
            closed = await asyncio.gather(*(h.closed_by_peer(30) for h in peers))
        finally:
            for h in peers:
                await h.close()
        assert all(closed)  # relaying what policy refuses costs points: every one is banned
        checked = await off_thread(metric, node, "blockcoin_p2p_events_checked_total")
        assert checked <= len(events), checked
        for h in peers:
            assert await off_thread(banned, node, h.key)


async def test_honest_announcements_around_withheld_headers_cost_nothing(tmp_path: Path) -> None:
    """Withheld headers make a's best header one that b lacks: b's new blocks then reach a as
    headers with less work than a's best, and, built on one a did not keep, as headers that do
    not connect. Both are races b cannot know about; they once cost b points until a banned it,
    by its address too, so every honest node on that address."""
    a = NodeProc(init_node_dir(tmp_path / "a", 1), "--no-discover", name="a")
    b = NodeProc(init_node_dir(tmp_path / "b", 2), "--no-discover", name="b")
    with running(a, b):
        await off_thread(a.start)
        b.args += ["--connect", a.p2p]
        await off_thread(b.start)
        await off_thread(a.post, "/mine", {"blocks": 2})
        await off_thread(wait_until, lambda: converged([a, b], 2), 30, "b to sync from a")
        for round_ in range(2):
            parent, height = await off_thread(tip_block, a)
            withheld = make_blocks(2, events_per_block=0, seed=40 + round_,
                                   parent=parent.header, start_height=height)
            w = Hostile(a.p2p_port, KeyPair.generate())
            reader = None
            try:
                await w.open(best_height=height + 2, best_work=CLAIM)
                reader = asyncio.ensure_future(drain(w))
                await w.send(Headers([blk.header for blk in withheld]))
                await off_thread(wait_until, lambda h=height: a.get("/status")[
                    "best_header_height"] == h + 2, 30, "the withheld headers to be taken")
                for _ in range(3):  # announced to a while the withheld headers are its best
                    await off_thread(b.post, "/mine", {"blocks": 1})
            finally:
                if reader is not None:
                    reader.cancel()
                await w.close()
            await off_thread(wait_until, lambda h=height: converged([a, b], h + 3), 60,
                             "a to take b's blocks")
        assert f"misbehaviour by {b.principal[:14]}" not in a.log()
        peers = (await off_thread(a.get, "/peers"))["peers"]
        assert b.principal in {p["principal"] for p in peers}
        bans = (await off_thread(a.get, "/bans"))["bans"]
        assert b.principal not in {x["principal"] for x in bans}


async def test_events_our_tip_refuses_cost_nothing_but_a_resend_does(tmp_path: Path) -> None:
    """An honest peer relays what its own tip and policy accept: events unfunded on ours (it is
    on another fork, or a block spent the funds meanwhile) cost it nothing, whether it is the
    first to send them or not. These once cost 0.2 points each, 500 of them a ban. Sending the
    same events again on the same connection is a replay no honest node makes."""
    node = NodeProc(init_node_dir(tmp_path / "e", 1), "--no-discover", name="e")
    with running(node):
        await off_thread(node.start)
        to = KeyPair.development(2).principal
        message = Events([SignedEvent.create(REGTEST.chain_id, KeyPair.generate(), 0, 100,
                                             Transfer(to, 1)) for _ in range(500)])
        first = Hostile(node.p2p_port, KeyPair.generate())
        second = Hostile(node.p2p_port, KeyPair.generate())
        try:
            await first.open()
            await second.open()
            await first.send_and_ping(message)
            await second.send_and_ping(message)
            assert await off_thread(metric, node, "blockcoin_p2p_events_checked_total") == 500
            connected = {p["principal"] for p in (await off_thread(node.get, "/peers"))["peers"]}
            assert {str(first.key.principal), str(second.key.principal)} <= connected
            assert "misbehaviour" not in node.log()

            with contextlib.suppress(ChannelError):
                await first.send(message)
            assert await first.closed_by_peer(30)
            assert await off_thread(banned, node, first.key)
            assert not await off_thread(banned, node, second.key)
        finally:
            await first.close()
            await second.close()


async def test_a_chain_given_up_on_comes_back_when_nobody_mines_on_it(tmp_path: Path) -> None:
    """Peers relaying an honest chain's headers but never its blocks make the node give up on
    that chain. Once nobody mined on it, no new work brought it back: the node never took it,
    even from its honest miner offering it. Failed deliveries are now forgotten after ten stall
    timeouts, and a connected peer's chain is then tried again."""
    a = NodeProc(init_node_dir(tmp_path / "a", 1), "--no-discover", "--stall-timeout", "1",
                 name="a")
    b = NodeProc(init_node_dir(tmp_path / "b", 2), "--no-discover", name="b")
    with running(a, b):
        await off_thread(a.start)
        await off_thread(b.start)
        await off_thread(b.post, "/mine", {"blocks": 5})
        headers = [Block.decode(await off_thread(b.get, f"/blocks/{h}/raw")).header
                   for h in range(1, 6)]
        for _ in range(3):  # three failed deliveries: the most a block gets
            s = Hostile(a.p2p_port, KeyPair.generate())
            try:
                await s.open(best_height=5, best_work=CLAIM)
                await s.send(Headers(headers))
                assert await s.closed_by_peer(30)  # dropped for stalling
            finally:
                await s.close()
        await off_thread(wait_until, lambda: a.get("/status")["best_header_height"] == 0, 30,
                         "a to give up on b's chain")
        await off_thread(a.post, "/peers", {"address": b.p2p})
        tip = await off_thread(wait_until, lambda: converged([a, b], 5), 60,
                               "a to take b's chain")
        assert tip == await off_thread(b.tip)


async def serve_chains(h: Hostile, before: list[Block], after: list[Block],
                       switch_after: int) -> None:
    """Answer requests for headers and blocks as a node whose best chain is ``before`` for its
    first ``switch_after`` answers of headers and ``after`` from then on (a reorg)."""
    blocks = {b.hash: b for b in before + after}
    answered = 0
    with contextlib.suppress(ChannelError):
        while True:
            msg = decode_message(await h.recv())
            if isinstance(msg, GetHeaders):
                chain = before if answered < switch_after else after
                answered += 1
                heights = {b.hash: i + 1 for i, b in enumerate(chain)}
                start = next((heights[x] for x in msg.locator if x in heights), 0)
                await h.send(Headers([b.header for b in chain[start:start + 2000]]))
            elif isinstance(msg, GetBlocks):
                for x in msg.hashes:
                    await h.send(BlockMsg.of(blocks[x]))


async def test_a_peer_reorganising_during_header_presync_is_not_banned(tmp_path: Path) -> None:
    """A fork longer than one batch of headers, with less work at first, is pre-synced and then
    downloaded again to be stored. A peer whose chain changed between the two passes (a reorg
    onto more work) serves other headers the second time: it was banned for that, by its
    address too. Now the pre-sync just ends, starts again later, and the node takes the chain."""
    ours = make_blocks(2001, events_per_block=0, seed=60)
    import_blocks(init_node_dir(tmp_path / "a", 1), ours).close()
    first = make_blocks(2002, events_per_block=0, seed=61)
    second = make_blocks(2002, events_per_block=0, seed=62)
    a = NodeProc(tmp_path / "a", "--no-discover", name="a")
    with running(a):
        await off_thread(a.start)
        h = Hostile(a.p2p_port, KeyPair.generate())
        server = None
        try:
            await h.open(best_height=2002, best_work=CLAIM)
            # Two answers pre-sync the first chain; the third, the redownload, is of the second.
            server = asyncio.ensure_future(serve_chains(h, first, second, switch_after=2))
            tip = await off_thread(wait_until, lambda: (t := a.tip())[0] == 2002 and t, 90,
                                   "a to take the peer's chain")
        finally:
            if server is not None:
                server.cancel()
            await h.close()
        assert tip[1] == second[-1].hash[::-1].hex()
        assert not await off_thread(banned, a, h.key)
