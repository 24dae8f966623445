"""Prometheus metrics of a running node, gathered when ``GET /metrics`` is scraped.

A collector reads the node's own counters and gauges at scrape time (prometheus_client's custom
collector pattern) instead of mirroring every change into global metric objects: the node keeps
one source of truth, and a node object per test or per process never clashes in a global
registry.
"""

from __future__ import annotations

import time as _time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from chain.api.server import ApiContext

PREFIX = "blockcoin_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# the peer manager's counters, exported as blockcoin_p2p_<name>_total
P2P_COUNTERS = ("misbehaviour", "bans", "handshake_failures", "stalls", "low_work_headers",
                "blocks_downloaded", "announcements", "connections", "banned_refused",
                "events_checked", "presync_headers", "blocks_unavailable", "evictions",
                "inbound_refused")


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _labelled(family: GaugeMetricFamily | CounterMetricFamily,
              samples: Iterable[tuple[str, float]]) -> Metric:
    for label, value in samples:
        family.add_metric([label], value)
    return family


class NodeCollector(Collector):
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        ctx = self.ctx
        core, manager = ctx.core, ctx.manager
        yield _gauge("tip_height", "Height of the best chain's tip.", core.chain.tip.height)
        yield _gauge("best_header_height", "Height of the most-work known header.",
                     core.tree.best.height)
        yield _gauge("syncing", "1 while blocks of a better chain are downloading.",
                     int(core.syncing))
        yield _gauge("mempool_events", "Events waiting in the mempool.", len(core.mempool))
        yield _gauge("mempool_bytes", "Bytes of events in the mempool.", core.mempool.bytes)
        out = manager.outbound
        yield _labelled(GaugeMetricFamily(PREFIX + "peers", "Connected peers.",
                                          labels=["direction"]),
                        [("outbound", out), ("inbound", len(manager.peers) - out)])
        yield _gauge("header_tree_size", "Headers held in memory, with or without their block.",
                     len(core.tree))
        yield _gauge("recent_rejects", "Event ids refused recently (not checked again).",
                     len(manager.relay.rejects))
        if ctx.gate is not None and manager.gate is not None:
            for gate in (manager.gate, ctx.gate):
                yield _labelled(GaugeMetricFamily(
                    f"{PREFIX}{gate.name}_connections",
                    "Open connections by stage and refusals.", labels=["what"]),
                    sorted(gate.stats().items()))
        yield _gauge("known_addresses", "Addresses in the address book.", len(manager.addrman))
        yield _gauge("bans_active", "Active bans.", len(manager.bans.to_json()))
        for name, value in sorted(core.counters.items()):
            yield _counter(name, f"Count of {name.replace('_', ' ')}.", value)
        for name in P2P_COUNTERS:
            yield _counter(f"p2p_{name}", f"Peer-to-peer {name.replace('_', ' ')}.",
                           manager.counters.get(name, 0))
        yield _labelled(CounterMetricFamily(
            PREFIX + "p2p_messages_received", "Messages received from peers, by type.",
            labels=["type"]), sorted(manager.msgs_in.items()))
        yield _counter("p2p_bytes_received", "Bytes received from connected peers.",
                       sum(p.bytes_in for p in manager.peers.values()))
        yield _counter("p2p_bytes_sent", "Bytes sent to connected peers.",
                       sum(p.bytes_out for p in manager.peers.values()))
        yield _labelled(CounterMetricFamily(PREFIX + "api_requests", "API responses, by status.",
                                            labels=["status"]), sorted(ctx.requests.items()))
        yield _gauge("uptime_seconds", "Seconds since the node started.",
                     round(_time.time() - ctx.started, 1))


def render_metrics(ctx: ApiContext) -> bytes:
    """The Prometheus text exposition of the node's metrics now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(ctx))
    return generate_latest(registry)
