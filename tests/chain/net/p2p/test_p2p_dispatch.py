"""The peer manager's tables: every message type has a handler, every offence a price, and a
peer's misbehaviour is charged from the table (a ban at 100 points)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from chain.net.p2p.manager import NetConfig, PeerManager
from chain.net.p2p.messages import _TYPES, Addr, AddrEntry, Events, GetBlocks, GetHeaders, Ping
from chain.net.p2p.scores import BAN_SCORE, POINTS, Offence, message_cost
from chain.node.core import NodeCore
from chain.node.local import LocalNode, init_datadir


def test_every_offence_has_points_and_bans_only_what_no_honest_node_does() -> None:
    assert set(POINTS) == set(Offence)
    assert all(0 < p <= BAN_SCORE for p in POINTS.values())
    # clock skew and races are never a ban on their own
    assert POINTS[Offence.FUTURE_HEADER] < BAN_SCORE
    assert POINTS[Offence.STALE_ANNOUNCE] < BAN_SCORE
    assert POINTS[Offence.RESENT_EVENT] * 499 < BAN_SCORE <= POINTS[Offence.RESENT_EVENT] * 500


def test_requests_that_cost_us_work_cost_more_tokens() -> None:
    assert message_cost(Ping(1)) == 1.0
    assert message_cost(GetHeaders([])) == 10.0
    assert message_cost(GetBlocks([b"\0" * 32] * 32)) == 3.0
    assert message_cost(Events([])) == 1.0
    entry = AddrEntry(KeyPair.generate().public.principal, "127.0.0.1:1", 0)
    assert message_cost(Addr([entry] * 50)) == 2.0


async def test_every_message_type_has_a_handler(tmp_path: Path) -> None:
    init_datadir(tmp_path, REGTEST)
    local = LocalNode(tmp_path, REGTEST)
    try:
        core = NodeCore(local, asyncio.get_running_loop())
        manager = PeerManager(core, NetConfig())
        assert set(manager.handlers) == set(_TYPES.values())
        assert all(callable(h) for h in manager.handlers.values())
    finally:
        local.close()
