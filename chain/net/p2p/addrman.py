"""Where peers can be found.

Addresses come from four sources: ``--connect`` seeds, the ``Announce`` events nodes publish in
``/global/principals`` (an address signed by its principal's key, so dialling it expects that
principal and a man in the middle is refused), peer exchange (``addr`` messages) and the listen
address peers state in their ``hello``. Each address keeps the principal expected there when one
is known, and a retry backoff that grows with failures.
"""

from __future__ import annotations

import logging
import time as _time
from dataclasses import dataclass

from chain.core.principal import Principal

log = logging.getLogger(__name__)

MAX_ADDRESSES = 5000
SEED_MAX_BACKOFF = 5.0
MAX_BACKOFF = 300.0


def parse_address(text: str, allow_zero: bool = False) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:port``) or raise ValueError; port 0 (any free port)
    only with ``allow_zero``, for addresses to listen on."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or len(text) > 255:
        raise ValueError(f"an address is host:port, got {text!r}")
    number = int(port)
    if not (0 if allow_zero else 1) <= number < 65536:
        raise ValueError(f"port out of range in {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not host.isprintable() or " " in host or "/" in host:
        raise ValueError(f"bad host in {text!r}")
    return host, number


def parse_peer_spec(text: str) -> tuple[Principal | None, str]:
    """``[PRINCIPAL@]HOST:PORT``: the address, and the principal expected there if given."""
    principal: Principal | None = None
    if "@" in text:
        left, _, text = text.partition("@")
        principal = Principal.parse(left)
    parse_address(text)
    return principal, text.strip()


@dataclass(slots=True)
class AddrInfo:
    address: str
    principal: Principal | None
    source: str
    last_seen: int
    last_attempt: float = 0.0
    last_success: float = 0.0
    failures: int = 0

    def backoff(self) -> float:
        cap = SEED_MAX_BACKOFF if self.source == "seed" else MAX_BACKOFF
        return 0.0 if self.failures == 0 else min(cap, 2.0 ** min(self.failures, 16))

    def to_json(self) -> dict[str, object]:
        return {"address": self.address, "principal": str(self.principal) if self.principal
                else None, "source": self.source, "failures": self.failures,
                "last_seen": self.last_seen}


class AddressBook:
    def __init__(self) -> None:
        self.entries: dict[str, AddrInfo] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, address: str, principal: Principal | None, source: str,
            last_seen: int | None = None) -> AddrInfo | None:
        """Remember ``address``; a later source never replaces a seed's or an announcement's
        principal with a mere hearsay one. Returns the entry (None if refused)."""
        try:
            parse_address(address)
        except ValueError:
            return None
        seen = int(_time.time()) if last_seen is None else last_seen
        info = self.entries.get(address)
        if info is None:
            if len(self.entries) >= MAX_ADDRESSES:
                self._evict()
            info = AddrInfo(address, principal, source, seen)
            self.entries[address] = info
            return info
        info.last_seen = max(info.last_seen, seen)
        rank = {"seed": 3, "announce": 2, "hello": 1, "peer": 0}
        if principal is not None and (info.principal is None or
                                      rank.get(source, 0) >= rank.get(info.source, 0)):
            if info.principal != principal:
                info.failures = 0
            info.principal = principal
            if rank.get(source, 0) > rank.get(info.source, 0):
                info.source = source
        return info

    def _evict(self) -> None:
        victims = sorted((i for i in self.entries.values() if i.source != "seed"),
                         key=lambda i: (-i.failures, i.last_seen))
        if victims:
            del self.entries[victims[0].address]

    def candidates(self, now: float, exclude: set[str]) -> list[AddrInfo]:
        """Addresses worth dialling now, the most promising first."""
        out = [i for i in self.entries.values()
               if i.address not in exclude and now - i.last_attempt >= i.backoff()]
        out.sort(key=lambda i: (i.source != "seed", i.failures, -i.last_success, -i.last_seen))
        return out

    def attempt(self, address: str, now: float) -> None:
        info = self.entries.get(address)
        if info is not None:
            info.last_attempt = now

    def success(self, address: str, principal: Principal, now: float) -> None:
        info = self.entries.get(address)
        if info is not None:
            info.failures = 0
            info.last_success = now
            info.last_seen = int(now)
            if info.principal is None:
                info.principal = principal

    def failure(self, address: str) -> None:
        info = self.entries.get(address)
        if info is not None:
            info.failures += 1

    def known(self, limit: int) -> list[AddrInfo]:
        """Addresses with a known principal that have worked (or not failed), for ``addr``."""
        good = [i for i in self.entries.values() if i.principal is not None and i.failures < 3]
        good.sort(key=lambda i: -i.last_seen)
        return good[:limit]
