"""The door of a listening port: caps and deadlines on connections before they are useful.

Every connection to the p2p or API port holds a file descriptor from the moment the kernel hands
it over, long before it says anything. Without limits, connections that never speak pile up
until the process runs out of descriptors and stops answering anyone. So each listening port
has a :class:`ConnectionGate`, consulted by the protocol wrapper :class:`GatedProtocol` as a
connection is accepted and as it goes away:

* a connection is ``PENDING`` until it is useful (p2p: the Noise handshake done; API: a request
  under way), ``ACTIVE`` while it is, and ``IDLE`` between two API requests;
* a pending connection past ``pending_timeout`` and an idle one past ``idle_timeout`` are
  closed (:meth:`ConnectionGate.sweep`, once a second);
* at most ``max_per_host`` connections per remote address and ``max_total`` in all: when the
  port is full, a newcomer takes the place of the oldest pending or idle connection of the
  address holding the most connections, unless the newcomer's own address is that one. So a
  flood from a few addresses cannot lock out a client from another, and only connections doing
  nothing are ever pushed out.

:func:`raise_fd_limit` lifts the process's descriptor limit to the hard limit at start, and
:func:`port_budget` keeps the caps within it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
import time as _time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger("blockcoin.gate")

SWEEP_INTERVAL = 1.0
FD_RESERVE = 700  # LevelDB keeps up to 500 files open, plus logs, pipes and outbound peers


class Stage(enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    IDLE = "idle"


@dataclass(slots=True)
class Conn:
    host: str
    transport: asyncio.BaseTransport
    stage: Stage
    since: float


class ConnectionGate:
    def __init__(self, name: str, max_total: int, max_per_host: int, pending_timeout: float,
                 idle_timeout: float, refuse: Callable[[str], bool] | None = None) -> None:
        self.name = name
        self.max_total = max_total
        self.max_per_host = max_per_host
        self.pending_timeout = pending_timeout
        self.idle_timeout = idle_timeout
        self.refuse = refuse  # e.g. a banned address
        self.conns: dict[asyncio.BaseTransport, Conn] = {}
        self.per_host: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.conns)

    # --- the connection's life ---------------------------------------------------------

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Whether to keep a connection just accepted (evicting another if the port is full)."""
        peername = transport.get_extra_info("peername")
        host = str(peername[0]) if peername else "?"
        if self.refuse is not None and self.refuse(host):
            self.counters["refused_banned"] += 1
            return False
        if self.per_host[host] >= self.max_per_host:
            self.counters["refused_per_host"] += 1
            return False
        if len(self.conns) >= self.max_total and not self._evict_for(host):
            self.counters["refused_full"] += 1
            return False
        self.conns[transport] = Conn(host, transport, Stage.PENDING, _time.monotonic())
        self.per_host[host] += 1
        return True

    def _evict_for(self, host: str) -> bool:
        """Close the oldest pending or idle connection of the busiest other address."""
        idle = [c for c in self.conns.values() if c.stage is not Stage.ACTIVE]
        if not idle:
            return False
        victim = max(idle, key=lambda c: (self.per_host[c.host], -c.since))
        if self.per_host[host] and self.per_host[host] >= self.per_host[victim.host]:
            return False  # the newcomer's own address is the busiest: it waits its turn
        self.counters["evicted"] += 1
        self._close(victim)
        return True

    def lost(self, transport: asyncio.BaseTransport) -> None:
        conn = self.conns.pop(transport, None)
        if conn is not None:
            self.per_host[conn.host] -= 1
            if self.per_host[conn.host] <= 0:
                del self.per_host[conn.host]

    def set_stage(self, transport: asyncio.BaseTransport | None, stage: Stage) -> None:
        conn = self.conns.get(transport) if transport is not None else None
        if conn is not None:
            conn.stage = stage
            conn.since = _time.monotonic()

    def _close(self, conn: Conn) -> None:
        self.lost(conn.transport)
        conn.transport.abort()  # type: ignore[attr-defined]

    # --- deadlines ---------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> int:
        """Close every pending or idle connection past its deadline; returns how many."""
        now = _time.monotonic() if now is None else now
        overdue = [c for c in self.conns.values()
                   if (c.stage is Stage.PENDING and now - c.since > self.pending_timeout)
                   or (c.stage is Stage.IDLE and now - c.since > self.idle_timeout)]
        for conn in overdue:
            self._close(conn)
        self.counters["timed_out"] += len(overdue)
        return len(overdue)

    async def run(self) -> None:
        """Sweep once a second until cancelled."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                self.sweep()
            except Exception:  # a bug here must not stop the node
                log.exception("%s gate sweep failed", self.name)

    def stats(self) -> dict[str, int]:
        out = {stage.value: 0 for stage in Stage}
        for conn in self.conns.values():
            out[conn.stage.value] += 1
        out.update(self.counters)
        return out


class GatedProtocol(asyncio.Protocol):
    """Passes a connection to the web server's protocol only if the gate admits it, and tells
    the gate when it goes away."""

    def __init__(self, inner: asyncio.Protocol, gate: ConnectionGate) -> None:
        self.inner = inner
        self.gate = gate
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.gate.admit(transport):
            transport.abort()  # type: ignore[attr-defined]
            return
        self.admitted = True
        self.transport = transport
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted:
            self.gate.lost(self.transport)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GatedSite(web.TCPSite):
    """A TCP site whose every connection passes through a :class:`ConnectionGate`."""

    __slots__ = ("gate",)

    def __init__(self, runner: web.BaseRunner, host: str, port: int, gate: ConnectionGate,
                 **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        gate = self.gate
        self._server = await asyncio.get_running_loop().create_server(
            lambda: GatedProtocol(server(), gate), self._host, self._port,
            backlog=self._backlog, reuse_address=self._reuse_address)


def raise_fd_limit() -> int:
    """Lift this process's open-file limit to the hard limit where the OS allows; returns the
    soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
    return soft


def port_budget(fd_limit: int, wanted: int, share: float) -> int:
    """At most ``wanted`` connections, and no more than ``share`` of the descriptors left after
    the reserve, so that a full port never starves the database or the other port."""
    return max(16, min(wanted, int((fd_limit - FD_RESERVE) * share)))
