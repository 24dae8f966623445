"""The header tree: every valid header the node knows, with or without its block.

Headers-first sync: a node first learns the headers of a peer's chain (cheap to check, 116
bytes each: proof of work, target, time), picks the most-work header chain, and only then
downloads the blocks along it, from several peers at once. The tree starts from the chain
state's block index and grows with headers from peers; each is checked against its parent
exactly as the consensus engine would (:func:`chain.consensus.validation.check_header`) before it is
kept. It also keeps the best header chain as an array by height, so "is this header on the
best chain" and "which block comes next" are O(1).

The best header is the most-work one that is still a candidate: a header whose block failed
validation is *invalid* with all its descendants (as Bitcoin Core's ``BLOCK_FAILED_VALID``),
and one whose block nobody delivered is *unavailable* with its descendants
(:mod:`chain.net.p2p.fetchwait`) until new work is built on it, its block arrives or a peer
offers it again.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from typing import Literal

from chain.consensus.validation import check_header
from chain.core.errors import BadParent
from chain.core.header import Header, work_of
from chain.core.params import NetworkParams
from chain.node.chainstate import ChainState
from ledger.store import Status


@dataclass(slots=True, eq=False)
class HeaderNode:
    header: Header
    hash: bytes
    height: int
    work: int
    prev: HeaderNode | None = field(repr=False)
    invalid: bool = False
    unavailable: bool = False
    seq: int = 0
    children: list[HeaderNode] = field(default_factory=list, repr=False)


class HeaderTree:
    def __init__(self, params: NetworkParams) -> None:
        self.params = params
        self.nodes: dict[bytes, HeaderNode] = {}
        self._seq = 0
        genesis = params.genesis.header
        root = HeaderNode(genesis, params.genesis_hash, 0, work_of(genesis.target), None)
        self.nodes[root.hash] = root
        self.genesis = root
        self.best = root
        self.best_chain: list[bytes] = [root.hash]

    @classmethod
    def from_chain(cls, chain: ChainState) -> HeaderTree:
        tree = cls(chain.params)
        for entry in sorted(chain.index.values(), key=lambda e: e.height):
            if entry.height == 0:
                continue
            parent = tree.nodes.get(entry.header.prev)
            if parent is None:
                continue
            node = tree._insert(entry.header, entry.hash, parent)
            if entry.status == Status.INVALID:
                node.invalid = True
        tree._recompute_best()
        tip = tree.nodes.get(chain.tip.hash)
        if tip is not None and tip.work >= tree.best.work:
            tree._set_best(tip)
        return tree

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, block_hash: bytes) -> HeaderNode | None:
        return self.nodes.get(block_hash)

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self.nodes

    # --- growing -----------------------------------------------------------------------

    def _insert(self, header: Header, block_hash: bytes, parent: HeaderNode) -> HeaderNode:
        self._seq += 1
        node = HeaderNode(header, block_hash, parent.height + 1,
                          parent.work + work_of(header.target), parent, parent.invalid,
                          seq=self._seq)
        self.nodes[block_hash] = node
        parent.children.append(node)
        if parent.unavailable:
            self.revive(parent)  # new work on top: worth asking for the blocks again
        return node

    def median_time_past(self, node: HeaderNode) -> int:
        times: list[int] = []
        cur: HeaderNode | None = node
        while cur is not None and len(times) < self.params.median_window:
            times.append(cur.header.time)
            cur = cur.prev
        times.sort()
        return times[len(times) // 2]

    def add_headers(self, headers: list[Header], now: int | None = None) -> HeaderNode:
        """Check and keep a chain of headers whose first one's parent is known.

        Raises a ValidationError (the first bad header and everything after it are dropped;
        those before it are kept) or BadParent if the parent is unknown or invalid. Returns the
        node of the last header.
        """
        if not headers:
            raise ValueError("no headers")
        now = int(_time.time()) if now is None else now
        parent = self.nodes.get(headers[0].prev)
        if parent is None:
            raise BadParent("headers do not connect to a known header")
        node = parent
        for header in headers:
            if header.prev != node.hash:
                raise BadParent("headers are not a chain")
            h = header.hash
            known = self.nodes.get(h)
            if known is not None:
                if known.invalid:
                    raise BadParent("header known to be invalid")
                node = known
                continue
            if node.invalid:
                raise BadParent("the parent header is invalid")
            check_header(self.params, header, h, node.header, node.height,
                         self.median_time_past(node), now)
            node = self._insert(header, h, node)
            if node.work > self.best.work and not node.unavailable:
                self._set_best(node)
        return node

    def add_trusted(self, header: Header) -> HeaderNode | None:
        """Record the header of a block the chain state accepted (already fully checked)."""
        h = header.hash
        known = self.nodes.get(h)
        if known is not None:
            if known.unavailable:
                self.revive(known)  # its block arrived after all
            return known
        parent = self.nodes.get(header.prev)
        if parent is None:
            return None
        node = self._insert(header, h, parent)
        if node.work > self.best.work and not node.invalid and not node.unavailable:
            self._set_best(node)
        return node

    def work_after(self, headers: list[Header]) -> int | None:
        """Cumulative work at the end of ``headers`` if the first connects, else None."""
        parent = self.nodes.get(headers[0].prev)
        if parent is None:
            return None
        return parent.work + sum(work_of(h.target) for h in headers)

    def mark_invalid(self, block_hash: bytes) -> None:
        """The block failed validation: it and its descendants are never candidates again."""
        self._mark_subtree(block_hash, "invalid")

    def mark_unavailable(self, block_hash: bytes) -> None:
        """Nobody delivers the block: drop it and its descendants from the candidates."""
        self._mark_subtree(block_hash, "unavailable")

    def _mark_subtree(self, block_hash: bytes, flag: Literal["invalid", "unavailable"]) -> None:
        node = self.nodes.get(block_hash)
        if node is None or getattr(node, flag):
            return
        stack = [node]
        while stack:
            cur = stack.pop()
            setattr(cur, flag, True)
            stack.extend(cur.children)
        self._recompute_best()

    def revive(self, node: HeaderNode) -> None:
        """Make ``node`` and its unavailable ancestors candidates again."""
        cur: HeaderNode | None = node
        while cur is not None and cur.unavailable:
            cur.unavailable = False
            cur = cur.prev
        if not node.invalid and node.work > self.best.work:
            self._set_best(node)

    # --- best chain ---------------------------------------------------------------------

    def _recompute_best(self) -> None:
        best = self.genesis
        for node in self.nodes.values():
            if not node.invalid and not node.unavailable and (node.work > best.work or
                                     (node.work == best.work and node.seq < best.seq)):
                best = node
        self._set_best(best)

    def _set_best(self, node: HeaderNode) -> None:
        chain = self.best_chain
        del chain[node.height + 1:]
        while len(chain) <= node.height:
            chain.append(b"")
        cur: HeaderNode | None = node
        while cur is not None and chain[cur.height] != cur.hash:
            chain[cur.height] = cur.hash
            cur = cur.prev
        self.best = node

    def on_best_chain(self, node: HeaderNode) -> bool:
        return node.height < len(self.best_chain) and self.best_chain[node.height] == node.hash

    def fork_height(self, node: HeaderNode) -> int:
        """Height of the last common header of ``node``'s chain and the best chain."""
        cur: HeaderNode | None = node
        while cur is not None and not self.on_best_chain(cur):
            cur = cur.prev
        return cur.height if cur is not None else 0

    def fork_point(self, a: HeaderNode, b: HeaderNode) -> HeaderNode:
        """The last header common to the chains ending at ``a`` and ``b``."""
        while a.height > b.height:
            assert a.prev is not None
            a = a.prev
        while b.height > a.height:
            assert b.prev is not None
            b = b.prev
        while a is not b:
            assert a.prev is not None and b.prev is not None
            a, b = a.prev, b.prev
        return a

    def ancestor(self, node: HeaderNode, height: int) -> HeaderNode:
        if height > node.height:
            raise ValueError("height above the node")
        if self.on_best_chain(node):
            found = self.nodes[self.best_chain[height]]
            return found
        cur = node
        while cur.height > height:
            assert cur.prev is not None
            cur = cur.prev
        return cur

    def locator(self, node: HeaderNode | None = None) -> list[bytes]:
        """Hashes back from ``node`` (default: the best header): ten one apart, then doubling
        steps, always ending with genesis."""
        node = node or self.best
        out: list[bytes] = []
        height = node.height
        step = 1
        while height > 0 and len(out) < 63:
            out.append(self.ancestor(node, height).hash)
            if len(out) >= 10:
                step *= 2
            height -= step
        out.append(self.genesis.hash)
        return out
