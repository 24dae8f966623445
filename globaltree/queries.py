"""Read-only queries on the global tree: ``/global/principals`` (with a host's public record)
and ``/global/fragments``."""

from __future__ import annotations

import hashlib

from chain.core.errors import DecodeError
from chain.core.principal import Principal
from chain.core.schema import ACCOUNT, BY_HOST, BY_OWNER, STATE
from globaltree.records import (
    Account,
    Contract,
    HostRecord,
    PathFragments,
    contract_key,
    fragments_key,
    host_key,
)
from globaltree.view import KeyValueReader, StateView


class GlobalTree:
    """Queries over a database (or a snapshot of it) holding the folded state."""

    def __init__(self, db: KeyValueReader) -> None:
        self.db = db

    @property
    def view(self) -> StateView:
        """A fresh view per query: a view remembers what it read (for a block's undo record),
        and the database moves on under a long-lived reader."""
        return StateView(self.db)

    def principal(self, p: Principal) -> Account | None:
        return self.view.peek_account(p)

    def balance(self, p: Principal) -> int:
        acct = self.principal(p)
        return acct.balance if acct else 0

    def principal_json(self, p: Principal) -> dict[str, object] | None:
        """``/global/principals/P``: the account with, for a host, its public record."""
        acct = self.principal(p)
        if acct is None:
            return None
        record = self.host_record(p)
        return {**acct.to_json(p), "host": record.to_json() if record is not None else None}

    def host_record(self, p: Principal) -> HostRecord | None:
        """The public record of a host (None for a principal that never held a contract)."""
        return self.view.peek(host_key(p), HostRecord.decode)

    def contract(self, cid: bytes) -> Contract | None:
        raw = self.view.get(contract_key(cid))
        return Contract.decode(raw) if raw is not None else None

    def fragments(self, path: str) -> dict[int, list[dict[str, object]]]:
        """For each fragment index of ``path``, its holders joined with their addresses."""
        out: dict[int, list[dict[str, object]]] = {}
        held = self.view.peek(fragments_key(path), PathFragments.decode)
        for index, digest, cid in held.entries if held is not None else []:
            host = Principal(digest)
            contract = self.contract(cid)
            if contract is None:
                raise DecodeError(f"fragment record of {path} names a missing contract")
            acct = self.principal(host)
            out.setdefault(index, []).append({
                "host": str(host),
                "contract": cid.hex(),
                "root": contract.offer.root.hex(),
                "size": contract.offer.size,
                "end_height": contract.end,
                "address": acct.address if acct and acct.address else None,
                "x25519": acct.x25519.hex() if acct and acct.x25519 else None,
            })
        return out

    def fragments_json(self, path: str) -> dict[str, object]:
        """``/global/fragments/PATH``: the holders of each fragment index, keyed by the index."""
        holders = self.fragments(path)
        return {"path": path, "fragments": {str(i): h for i, h in sorted(holders.items())}}

    def announced(self, limit: int) -> list[tuple[Principal, str]]:
        """Up to ``limit`` principals with a published network address, and the address."""
        out: list[tuple[Principal, str]] = []
        for key, value in self.db.iterator(prefix=ACCOUNT):
            try:
                acct = Account.decode(value)
            except DecodeError:
                continue
            if acct.address and len(key) == len(ACCOUNT) + 32:
                out.append((Principal(key[len(ACCOUNT):]), acct.address))
                if len(out) >= limit:
                    break
        return out

    def digest(self) -> tuple[str, int]:
        """SHA-256 over every key and value of the tree, in key order, and how many: two
        nodes with the same digest hold identical global trees."""
        digest = hashlib.sha256()
        count = 0
        for key, value in self.db.iterator(prefix=STATE):
            digest.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
            count += 1
        return digest.hexdigest(), count

    def _contracts_under(self, prefix: bytes) -> list[Contract]:
        out = []
        for key in self.view.keys_with_prefix(prefix):
            contract = self.contract(key[-32:])
            if contract is not None:
                out.append(contract)
        return out

    def contracts_by_owner(self, owner: Principal) -> list[Contract]:
        return self._contracts_under(BY_OWNER + owner.digest)

    def contracts_by_host(self, host: Principal) -> list[Contract]:
        return self._contracts_under(BY_HOST + host.digest)
