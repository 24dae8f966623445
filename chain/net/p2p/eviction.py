"""Which inbound peer makes room when every inbound slot is taken.

Refusing newcomers when full lets whoever connected first keep the node; evicting at random
lets an attacker with many connections push honest peers out. As Bitcoin Core does, the
choice protects the peers an attacker finds hardest to imitate: the fastest to answer pings,
those that most recently delivered a block or a new event, and the longest connected. From
the rest, the youngest peer of the address group holding the most connections goes. If
everyone is protected, nobody is evicted and the newcomer is refused.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

PROTECT_FASTEST = 4
PROTECT_BLOCKS = 4
PROTECT_EVENTS = 4


@dataclass(slots=True)
class Candidate:
    key: Hashable
    host: str
    connected_at: float
    rtt: float | None
    last_block: float  # when it last delivered a block we did not have (0: never)
    last_event: float  # when it last relayed an event new to our mempool (0: never)


def address_group(host: str) -> str:
    """The /16 of an IPv4 address, the /32 of an IPv6 one: addresses an attacker can get many
    of cheaply share a group."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    prefix = 16 if addr.version == 4 else 32
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def _protect(pool: list[Candidate], count: int, key: Callable[[Candidate], float],
             only: Callable[[Candidate], bool] = lambda c: True) -> list[Candidate]:
    """``pool`` without the ``count`` best candidates by ``key`` (smallest first)."""
    ranked = sorted((c for c in pool if only(c)), key=key)[:count]
    kept = {id(c) for c in ranked}
    return [c for c in pool if id(c) not in kept]


def select_victim(candidates: list[Candidate]) -> Hashable | None:
    """The key of the inbound peer to evict, or None if every one is protected."""
    pool = list(candidates)
    pool = _protect(pool, PROTECT_FASTEST, lambda c: c.rtt if c.rtt is not None else math.inf,
                    lambda c: c.rtt is not None)
    pool = _protect(pool, PROTECT_BLOCKS, lambda c: -c.last_block, lambda c: c.last_block > 0)
    pool = _protect(pool, PROTECT_EVENTS, lambda c: -c.last_event, lambda c: c.last_event > 0)
    pool = _protect(pool, len(pool) // 2, lambda c: c.connected_at)
    if not pool:
        return None
    groups = Counter(address_group(c.host) for c in pool)
    busiest = max(groups, key=lambda g: (groups[g], max(c.connected_at for c in pool
                                                        if address_group(c.host) == g)))
    youngest = max((c for c in pool if address_group(c.host) == busiest),
                   key=lambda c: c.connected_at)
    return youngest.key
