"""Proofs of query answers against a header's state root.

A query is any function of a :class:`GlobalTree`. On a full node it runs over a reader that
records every key it reads; the proof is then one state-tree proof (membership or absence) per
key read. A client with only the header runs *the same query* over a reader that answers from
the proven keys alone, so the answer it gets is what the committed state says, whatever the
node wrote in its JSON, and a key the proof does not cover stops the query. The answer and the
proof come from one database snapshot, so they belong to the named header.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from chain.core import statetree
from chain.core.errors import DecodeError
from chain.core.header import hash_from_hex, hash_hex
from chain.core.schema import TREE
from globaltree.errors import StateProofError
from globaltree.queries import GlobalTree
from globaltree.view import KeyValueReader, node_store

T = TypeVar("T")
MAX_ITEMS = 4096  # keys one proof may carry (a path's holders, their contracts and accounts)


class _Recording:
    """Reads through to a snapshot, remembering every key and what it held."""

    def __init__(self, db: KeyValueReader) -> None:
        self.db = db
        self.read: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        value = self.read[key] = self.db.get(key)
        return value

    def iterator(self, *, prefix: bytes, include_value: bool = True) -> Iterator[Any]:
        raise StateProofError("this query scans keys: it cannot be proven key by key")


class _Proven:
    """The keys a verified proof vouches for, and nothing else."""

    def __init__(self, values: dict[bytes, bytes | None]) -> None:
        self.values = values

    def get(self, key: bytes) -> bytes | None:
        if key not in self.values:
            raise StateProofError(f"the proof does not cover the state key {key.hex()}")
        return self.values[key]

    def iterator(self, *, prefix: bytes, include_value: bool = True) -> Iterator[Any]:
        raise StateProofError("this query scans keys: it cannot be proven key by key")


@dataclass(frozen=True)
class StateProof:
    """The named block, its state root, and one (key, value or None, tree proof) per key."""

    block: bytes
    height: int
    state_root: bytes
    items: tuple[tuple[bytes, bytes | None, statetree.Proof], ...]

    def to_json(self) -> dict[str, object]:
        return {
            "block": hash_hex(self.block),
            "height": self.height,
            "state_root": self.state_root.hex(),
            "items": [{"key": k.hex(), "value": v.hex() if v is not None else None,
                       "proof": p.encode().hex()} for k, v, p in self.items],
        }

    @classmethod
    def from_json(cls, data: object) -> StateProof:
        """Parse a proof from untrusted JSON; anything malformed is a StateProofError."""
        try:
            if not isinstance(data, dict):
                raise TypeError("not an object")
            raw_items = data["items"]
            if not isinstance(raw_items, list) or len(raw_items) > MAX_ITEMS:
                raise ValueError(f"items is not a list of at most {MAX_ITEMS}")
            items = []
            for item in raw_items:
                value = item["value"]
                items.append((bytes.fromhex(item["key"]),
                              bytes.fromhex(value) if value is not None else None,
                              statetree.Proof.decode(bytes.fromhex(item["proof"]))))
            root = bytes.fromhex(data["state_root"])
            height = data["height"]
            if len(root) != 32 or not isinstance(height, int) or height < 0:
                raise ValueError("bad state root or height")
            return cls(hash_from_hex(data["block"]), height, root, tuple(items))
        except (KeyError, TypeError, ValueError, DecodeError) as exc:
            raise StateProofError(f"malformed state proof ({type(exc).__name__}: {exc})") from None

    def verified(self, root: bytes) -> dict[bytes, bytes | None]:
        """The proven values, once every item is checked against ``root`` (the root of the
        client's own copy of the named header, not the one the proof carries)."""
        if self.state_root != root:
            raise StateProofError(
                f"the proof is against state root {self.state_root.hex()[:16]}…, the header at"
                f" height {self.height} has {root.hex()[:16]}…")
        values: dict[bytes, bytes | None] = {}
        for key, value, proof in self.items:
            if key.startswith(TREE) or not statetree.verify(root, key, value, proof):
                raise StateProofError(
                    f"the proof for state key {key.hex()} does not lead to the header's state root")
            values[key] = value
        return values


def prove_query(db: KeyValueReader, block: bytes, height: int, root: bytes,
                query: Callable[[GlobalTree], T]) -> tuple[T, StateProof]:
    """Run ``query`` on ``db`` (a snapshot whose state is the one after ``block``) and prove
    every key it read."""
    recording = _Recording(db)
    answer = query(GlobalTree(recording))
    store = node_store(db)
    items = tuple((k, v, statetree.prove(store, k)) for k, v in recording.read.items())
    return answer, StateProof(block, height, root, items)


def answer_from_proof(proof: StateProof, root: bytes, query: Callable[[GlobalTree], T]) -> T:
    """The answer ``query`` has in the state committed to by ``root``, computed from the
    proven keys only; a forged, foreign or incomplete proof raises StateProofError."""
    return query(GlobalTree(_Proven(proof.verified(root))))
