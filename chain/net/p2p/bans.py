"""Who is banned: principals, dialled endpoints, and network addresses or whole subnets.

A misbehaving peer is banned by its principal (its authenticated key) *and* by the IP address
it connected from, so a fresh key from the same address is refused too. A dialled address whose
key was wrong is banned as that endpoint (``host:port``). An operator can ban a subnet
(``POST /bans``). Bans expire after a set time.

The list is kept in ``DATADIR/bans.log``, one JSON line per ban: a ban is one append, however
many bans there are, and a torn last line (a crash mid-write) or a damaged line costs only that
line. Expired lines are dropped when the node starts, by rewriting the file once if most of it
is dead. Lifting every ban truncates the file.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time as _time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chain.core.errors import BlockcoinError
from chain.core.principal import Principal

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """An address (``1.2.3.4``, ``::1``) or a subnet (``1.2.3.0/24``); ValueError if neither."""
    return ipaddress.ip_network(text.strip().removeprefix("[").removesuffix("]"), strict=False)


@dataclass(slots=True)
class Ban:
    until: float
    reason: str


class BanList:
    def __init__(self, seconds: float, path: Path | None = None) -> None:
        self.seconds = seconds
        self.path = path
        self.principals: dict[Principal, Ban] = {}
        self.addresses: dict[str, Ban] = {}  # dialled endpoints, host:port
        self.networks: dict[Network, Ban] = {}
        if path is not None:
            self._load(path)

    # --- banning -----------------------------------------------------------------------

    def ban(self, principal: Principal | None = None, address: str | None = None,
            reason: str = "", seconds: float | None = None, ip: str | None = None) -> None:
        """Ban any of a principal, a dialled endpoint and an IP address or subnet."""
        until = _time.time() + (self.seconds if seconds is None else seconds)
        ban = Ban(until, reason)
        if principal is not None:
            self.principals[principal] = ban
            self._append("principal", str(principal), ban)
        if address:
            self.addresses[address] = ban
            self._append("address", address, ban)
        if ip:
            try:
                net = parse_network(ip)
            except ValueError:
                return
            self.networks[net] = ban
            self._append("network", str(net), ban)

    def _live(self, ban: Ban | None) -> bool:
        return ban is not None and ban.until > _time.time()

    def is_banned(self, principal: Principal | None = None, address: str | None = None,
                  ip: str | None = None) -> bool:
        if principal is not None and self._live(self.principals.get(principal)):
            return True
        if address is not None and self._live(self.addresses.get(address)):
            return True
        return ip is not None and self.ip_banned(ip)

    def ip_banned(self, ip: str) -> bool:
        if not self.networks:
            return False
        try:
            addr = ipaddress.ip_address(ip.strip().removeprefix("[").removesuffix("]"))
        except ValueError:
            return False
        return any(addr in net and self._live(ban) for net, ban in self.networks.items())

    def clear(self) -> None:
        self.principals.clear()
        self.addresses.clear()
        self.networks.clear()
        if self.path is not None:
            try:
                self.path.write_bytes(b"")
            except OSError as exc:
                log.warning("cannot clear %s: %s", self.path, exc)

    # --- the file ----------------------------------------------------------------------

    def _append(self, kind: str, key: str, ban: Ban) -> None:
        if self.path is None:
            return
        line = json.dumps({"kind": kind, "key": key, "until": ban.until, "reason": ban.reason})
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError as exc:  # a full disk must not take the node down: the ban still holds
            log.warning("cannot record a ban in %s: %s", self.path, exc)

    def _load(self, path: Path) -> None:
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot read %s (%s): starting with no bans", path, exc)
            return
        now = _time.time()
        damaged = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                kind, key = str(item["kind"]), str(item["key"])
                ban = Ban(float(item["until"]), str(item["reason"]))
                if ban.until <= now:
                    continue
                if kind == "principal":
                    self.principals[Principal.parse(key)] = ban
                elif kind == "address":
                    self.addresses[key] = ban
                elif kind == "network":
                    self.networks[parse_network(key)] = ban
                else:
                    raise ValueError(f"unknown kind {kind!r}")
            except (ValueError, TypeError, KeyError, BlockcoinError):
                damaged += 1
        if damaged:
            log.warning("%s: skipped %d damaged line(s)", path, damaged)
        live = len(self.principals) + len(self.addresses) + len(self.networks)
        if len(lines) > 2 * live + 64:
            self._compact(path)

    def _compact(self, path: Path) -> None:
        """Rewrite the file with the live bans only (at start, when most lines are dead)."""
        tmp = path.with_name(path.name + ".tmp")
        text = "".join(json.dumps({"kind": k, "key": key, "until": b.until, "reason": b.reason})
                       + "\n" for k, key, b in self._entries())
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot compact %s: %s", path, exc)

    def _entries(self) -> Iterator[tuple[str, str, Ban]]:
        """(kind, key as text, ban) of every ban held, live or not."""
        yield from (("principal", str(p), b) for p, b in self.principals.items())
        yield from (("address", a, b) for a, b in self.addresses.items())
        yield from (("network", str(n), b) for n, b in self.networks.items())

    def to_json(self) -> list[dict[str, object]]:
        now = _time.time()
        return [{"principal": key if kind == "principal" else None,
                 "address": key if kind == "address" else None,
                 "network": key if kind == "network" else None,
                 "reason": ban.reason, "seconds_left": round(ban.until - now, 1)}
                for kind, key, ban in self._entries() if ban.until > now]
