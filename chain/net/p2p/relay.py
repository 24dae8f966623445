"""Relay: new tips announced by headers, events passed on once to each peer.

An event refused for our chain's state or our policy costs its sender nothing (an honest peer
relays what its own tip and policy accept and cannot know ours); refused ids are remembered
(:mod:`chain.net.p2p.rejects`) so that the same event is not checked again until the tip
changes. New tips are announced only when they gain work, so an honest node never announces to a
peer a tip with less work than one it told that peer about (which the header sync relies on).
"""

from __future__ import annotations

import asyncio
import time as _time
from typing import TYPE_CHECKING

from chain.core.block import Block
from chain.core.errors import BadSignature, EventTooLarge
from chain.core.events import Announce, SignedEvent
from chain.core.header import Header
from chain.net.p2p.messages import MAX_HEADERS, Events, Headers
from chain.net.p2p.peer import Peer
from chain.net.p2p.rejects import RecentRejects
from chain.net.p2p.scores import Offence
from chain.node.headers import HeaderNode

if TYPE_CHECKING:
    from chain.net.p2p.manager import PeerManager

ANNOUNCE_DEPTH = 16
GREETING_EVENTS = 500  # mempool events sent to a peer that just connected


class Relay:
    def __init__(self, net: PeerManager) -> None:
        self.net = net
        self.tree = net.tree
        self.rejects = RecentRejects()
        self._announced_tip: bytes = net.chain.tip.hash
        self._announce_pending = False

    # --- blocks ------------------------------------------------------------------------

    def on_block(self, action: str, block: Block, height: int) -> None:
        """Chain listener: remember announced addresses, and announce the new tip soon."""
        self.rejects.tip_changed()
        net = self.net
        if action == "connect":
            # Listeners run before accept_blocks returns: record the header now so that the
            # announcement below finds it.
            self.tree.add_trusted(block.header)
        if action == "connect" and net.config.discover:
            for ev in block.events:
                if (isinstance(ev, SignedEvent) and isinstance(ev.body, Announce)
                        and ev.body.address and ev.signer != net.core.principal):
                    net.addrman.add(ev.body.address, ev.signer, "announce")
        if not self._announce_pending:
            self._announce_pending = True
            asyncio.get_running_loop().call_soon(self.announce)

    def announce(self) -> None:
        """Send the headers from the last announced tip's fork point to the new tip, when the
        tip gained work (intermediate tips of a reorg, with less work, are not announced)."""
        self._announce_pending = False
        tip = self.tree.get(self.net.chain.tip.hash)
        previous = self.tree.get(self._announced_tip)
        if tip is None or tip is previous:
            return
        if previous is not None and tip.work <= previous.work:
            return
        if self.tree.best.height - tip.height > ANNOUNCE_DEPTH:
            return  # still syncing: peers will learn our tip when we are done
        fork = self.tree.fork_point(tip, previous) if previous is not None else None
        headers: list[Header] = []
        node: HeaderNode | None = tip
        while (node is not None and node.height > 0 and node is not fork
               and len(headers) < MAX_HEADERS):
            headers.append(node.header)
            node = node.prev
        headers.reverse()
        self._announced_tip = tip.hash
        if not headers:
            return
        message = Headers(headers)
        for peer in list(self.net.peers.values()):
            if peer.best is not None and peer.best.work >= tip.work and (
                    self.tree.on_best_chain(peer.best)):
                continue
            if tip.work <= peer.told_work:
                continue  # an intermediate tip of a reorg, below the tip its hello gave
            peer.told_work = tip.work
            peer.send(message)
        self.net.counters["announcements"] += 1

    # --- events ------------------------------------------------------------------------

    def greet(self, peer: Peer) -> None:
        """Send a new peer the best of our mempool."""
        core = self.net.core
        events = [e.event for e in sorted(core.mempool.entries.values())][:GREETING_EVENTS]
        for ev in events:
            peer.know_event(core.event_id(ev))
        if events:
            peer.send(Events(events))

    async def on_events(self, peer: Peer, msg: Events) -> None:
        """Check relayed events new to us, once each: ids refused recently are skipped, and so
        are ids under check right now (sent by another peer too).

        Points go only to what no honest node sends: an event with a bad signature or over the
        size limit, and an event the peer itself already sent us on this connection (a
        replay)."""
        core, rejects = self.net.core, self.rejects
        fresh: list[SignedEvent] = []
        ids: list[bytes] = []
        resent = 0
        broken: str | None = None
        for ev in msg.events:
            eid = core.event_id(ev)
            if not peer.relayed(eid):
                resent += 1
            elif eid in rejects:
                if rejects.permanent(eid):
                    broken = "an event refused for good before"
            elif eid not in core.mempool.entries and eid not in rejects.checking:
                fresh.append(ev)
                ids.append(eid)
        if fresh:
            rejects.checking.update(ids)
            try:
                results = await core.add_events(fresh, source=peer)
            finally:
                rejects.checking.difference_update(ids)
            self.net.counters["events_checked"] += len(fresh)
            for eid, (_, accepted, err) in zip(ids, results, strict=True):
                if accepted is not None:
                    peer.useful_event_at = _time.monotonic()
                    continue
                permanent = isinstance(err, (BadSignature, EventTooLarge))
                rejects.add(eid, permanent)
                if permanent:
                    broken = str(err)
        if broken is not None:
            self.net.misbehave(peer, Offence.BROKEN_EVENT, f"relayed a broken event: {broken}")
        if resent and not peer.closed:
            self.net.misbehave(peer, Offence.RESENT_EVENT,
                               f"sent {resent} event(s) it had sent before", count=resent)

    def on_event(self, ev: SignedEvent, eid: bytes, source: object) -> None:
        """Mempool listener: pass an accepted event on to every peer that does not know it."""
        for peer in list(self.net.peers.values()):
            if peer is not source and not peer.closed and peer.know_event(eid):
                peer.send(Events([ev]))
