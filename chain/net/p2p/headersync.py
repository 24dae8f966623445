"""Headers-first sync: asking peers for headers, checking them into the header tree, serving ours.

A peer that claims more work than our best header is asked for headers with a block locator.
Unrequested headers that do not add work are ignored (points only if the peer claimed a tip with
as much work before); requested ones go through a pre-sync (:mod:`chain.net.p2p.presync`) and are
stored only once they show more work than ours, so a peer cannot fill our memory with a cheap
branch. A chain whose blocks stopped arriving is tried again when a peer offers it later.
"""

from __future__ import annotations

import logging
import random
import time as _time
from typing import TYPE_CHECKING

from chain.core.errors import TimeTooNew, ValidationError
from chain.core.header import Header
from chain.net.p2p.messages import MAX_HEADERS, ZERO32, GetHeaders, Headers
from chain.net.p2p.peer import Peer
from chain.net.p2p.presync import HeaderPreSync, Phase
from chain.net.p2p.scores import Offence
from chain.node.headers import HeaderNode

if TYPE_CHECKING:
    from chain.net.p2p.manager import PeerManager

log = logging.getLogger("blockcoin.p2p")

HEADERS_TIMEOUT = 30.0


class HeaderSync:
    def __init__(self, net: PeerManager) -> None:
        self.net = net
        self.tree = net.tree

    def request(self, peer: Peer, start: HeaderNode | None = None) -> None:
        peer.headers_requested_at = _time.monotonic()
        peer.send(GetHeaders(self.tree.locator(start)))

    def update_peer_best(self, peer: Peer, node: HeaderNode) -> None:
        if peer.best is None or node.work > peer.best.work:
            peer.best = node
            peer.claimed_height = max(peer.claimed_height, node.height)

    def on_hello(self, peer: Peer) -> None:
        """Take a new peer's stated tip as an offer, and ask for headers if it has more work."""
        hello = peer.hello
        assert hello is not None
        known = self.tree.get(hello.best_hash)
        if known is not None and not known.invalid:
            peer.best = known
            self.offered(known)
        if hello.best_work > self.tree.best.work:
            self.request(peer)

    def on_headers(self, peer: Peer, msg: Headers) -> None:
        # An announcement may cross our request: "solicited" only decides how forgiving to be
        # with a batch that adds no work; any full batch is followed by a request for more.
        headers = msg.headers
        solicited = peer.headers_requested_at is not None
        peer.headers_requested_at = None
        if not headers:
            return
        for i in range(1, len(headers)):
            if headers[i].prev != headers[i - 1].hash:
                self.net.misbehave(peer, Offence.NOT_A_CHAIN, "headers that are not a chain")
                return
        if peer.presync is not None and solicited and peer.presync.follows(headers):
            self._on_presync_headers(peer, peer.presync, headers)
            return
        last_known = self.tree.get(headers[-1].hash)
        if last_known is not None:
            if last_known.invalid:
                self.net.misbehave(peer, Offence.INVALID_HEADER,
                                   "headers of a block known to be invalid")
                return
            self.update_peer_best(peer, last_known)
            self.offered(last_known)
            if len(headers) == MAX_HEADERS:
                self.request(peer, last_known)
            self.net.download.schedule()
            return
        work = self.tree.work_after(headers)
        if work is None:
            # Unknown parent: the peer built on a header we did not keep (one we ignored as
            # low-work, say). Ask with a locator, at no cost to it, as Bitcoin Core does: it
            # cannot know which of its headers we kept.
            self.request(peer)
            return
        if work <= self.tree.best.work:
            self.net.counters["low_work_headers"] += 1
            if not solicited:
                self._on_low_work(peer, headers, work)
                return
            fork = self.tree.get(headers[0].prev)
            assert fork is not None
            peer.presync = HeaderPreSync(self.tree, fork)
            self._on_presync_headers(peer, peer.presync, headers)
            return
        self._store(peer, headers)

    def _on_low_work(self, peer: Peer, headers: list[Header], work: int) -> None:
        """Unasked headers that do not beat our best header are ignored, not stored.

        They cost an honest peer nothing: it announces its new tip without knowing ours (a tie
        with a block of ours, a fork after a partition, a better header we hold that it lacks).
        But an honest node announces to a peer only tips with more work than every tip it told
        that peer about (see :meth:`chain.net.p2p.relay.Relay.announce`), so an announcement
        with no more work than the peer's last claim is a lie about its work and costs points:
        cheap branches sent one after another are cut off. A full batch may be the answer to a
        request of ours that an announcement crossed, so it is only ignored."""
        if len(headers) == MAX_HEADERS:
            return
        tip = headers[-1].hash
        claimed_work, claimed_tip = peer.announced
        if work < claimed_work or (work == claimed_work and tip != claimed_tip):
            self.net.misbehave(peer, Offence.STALE_ANNOUNCE,
                               "announced a tip with no more work than it claimed before")
        else:
            peer.announced = (work, tip)

    def _store(self, peer: Peer, headers: list[Header]) -> HeaderNode | None:
        """Check and keep ``headers`` (their first one's parent is known), then ask for more."""
        try:
            last = self.tree.add_headers(headers)
        except TimeTooNew as exc:
            self.net.misbehave(peer, Offence.FUTURE_HEADER, f"header from the future: {exc}")
            return None
        except ValidationError as exc:
            self.net.misbehave(peer, Offence.INVALID_HEADER, f"invalid header: {exc}")
            return None
        self.update_peer_best(peer, last)
        if len(headers) == MAX_HEADERS:
            self.request(peer, last)
        self.net.download.schedule()
        return last

    def _on_presync_headers(self, peer: Peer, ps: HeaderPreSync, headers: list[Header]) -> None:
        """Headers of a chain that has not (yet) shown more work than ours."""
        if ps.phase is Phase.REDOWNLOAD:
            # Headers other than the pre-synced ones, or fewer, may come from an honest peer
            # whose best chain changed between the two passes (a reorg): the pre-sync ends at
            # no cost to it and starts again later (``tick``), as in Bitcoin Core. A liar gains
            # nothing: it had to show more work than ours, and only headers matching what it
            # pre-synced are stored.
            try:
                ps.verify(headers)
            except ValidationError as exc:
                peer.presync = None
                log.info("header pre-sync with %s ended: %s", peer.label, exc)
                return
            if ps.redownload_done:
                peer.presync = None
            elif len(headers) < MAX_HEADERS:
                peer.presync = None
                log.info("header pre-sync with %s ended: fewer headers than pre-synced",
                         peer.label)
                return
            self._store(peer, headers)
            return
        try:
            ps.feed(headers, int(_time.time()))
        except TimeTooNew as exc:
            peer.presync = None
            self.net.misbehave(peer, Offence.FUTURE_HEADER, f"header from the future: {exc}")
            return
        except ValidationError as exc:
            peer.presync = None
            self.net.misbehave(peer, Offence.INVALID_HEADER, f"invalid header: {exc}")
            return
        self.net.counters["presync_headers"] += len(headers)
        if ps.work > self.tree.best.work:
            ps.start_redownload()  # it has the work: fetch the same headers again to keep them
            peer.headers_requested_at = _time.monotonic()
            peer.send(GetHeaders([ps.fork.hash]))
        elif len(headers) == MAX_HEADERS:
            peer.headers_requested_at = _time.monotonic()
            peer.send(GetHeaders([ps.last_hash]))
        else:
            # Its chain ends with less work than ours: nothing to store. Less than it claimed
            # is a lie (asked again at once, so a liar is soon banned); else it is merely behind.
            peer.presync = None
            if ps.work < peer.claimed_work:
                self.net.misbehave(peer, Offence.WORK_LIE, "headers with less work than it claimed")
                if not peer.closed:
                    self.request(peer)
            else:
                peer.claimed_work = ps.work

    def offered(self, node: HeaderNode) -> None:
        """A peer offers a chain we stopped waiting for: try it again, unless its blocks have
        failed to arrive too often lately (then new work on top, or time, brings it back)."""
        if not node.unavailable:
            return
        now = _time.monotonic()
        cur: HeaderNode | None = node
        while cur is not None and cur.unavailable:
            if self.net.download.waits.exhausted(cur.hash, now):
                return
            cur = cur.prev
        self.tree.revive(node)

    def serve(self, peer: Peer, msg: GetHeaders) -> None:
        chain = self.net.chain
        start = 0
        for wanted in msg.locator:
            entry = chain.index.get(wanted)
            if entry is not None and chain.best_chain_hash(entry.height) == wanted:
                start = entry.height
                break
        headers: list[Header] = []
        prev: bytes | None = chain.best_chain_hash(start)
        tip_height = chain.tip.height
        height = start + 1
        while height <= tip_height and len(headers) < MAX_HEADERS:
            h = chain.best_chain_hash(height)
            entry = chain.index.get(h) if h is not None else None
            if entry is None or entry.header.prev != prev:
                break  # the best chain moved under us; serve what is consistent
            headers.append(entry.header)
            prev = entry.hash
            if h == msg.stop and msg.stop != ZERO32:
                break
            height += 1
        if headers:
            node = self.tree.get(headers[-1].hash)
            if node is not None and (peer.best is None or peer.best.work < node.work):
                peer.claimed_height = max(peer.claimed_height, node.height)
        peer.send(Headers(headers))

    def tick(self, peer: Peer, now: float) -> bool:
        """Periodic care of one peer: ``False`` when it is dropped for not answering."""
        if peer.headers_requested_at is not None:
            if now - peer.headers_requested_at > HEADERS_TIMEOUT:
                peer.close_soon("no answer to getheaders")
                return False
        elif peer.presync is None and peer.claimed_work > self.tree.best.work and (
                peer.best is None or peer.best.work < peer.claimed_work) and (
                random.random() < 0.1):
            self.request(peer)
        return True

    def retry_offers(self) -> None:
        """A connected peer's best header is a standing offer: once the failures of a chain
        given up on are old, the best such chain is tried again, mined on or not."""
        offers = [p.best for p in self.net.peers.values()
                  if not p.closed and p.best is not None and p.best.unavailable]
        if offers:
            self.offered(max(offers, key=lambda n: n.work))
