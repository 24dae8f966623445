"""A second, deliberately naive implementation of the state tree (docs/consensus.md, "State
tree"), written from the specification: it builds the whole tree from the sorted key hashes
and walks it for proofs, with no stored nodes. ``python -m tests.vectors.state_tree_reference``
writes ``state_tree.json``; ``test_state_tree_vectors.py`` checks the node's implementation
against that file and this module against the node's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

VECTORS = Path(__file__).with_name("state_tree.json")


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def bit(kh: bytes, depth: int) -> int:
    return (kh[depth // 8] >> (7 - depth % 8)) & 1


def subtree(leaves: list[tuple[bytes, bytes]], depth: int) -> bytes:
    """Hash of the subtree holding ``leaves`` (key hash, value hash), all sharing ``depth`` bits."""
    if not leaves:
        return bytes(32)
    if len(leaves) == 1:
        return h(b"\x00" + leaves[0][0] + leaves[0][1])
    left = [leaf for leaf in leaves if bit(leaf[0], depth) == 0]
    right = [leaf for leaf in leaves if bit(leaf[0], depth) == 1]
    return h(b"\x01" + subtree(left, depth + 1) + subtree(right, depth + 1))


def root(entries: dict[bytes, bytes]) -> bytes:
    return subtree(sorted((h(k), h(v)) for k, v in entries.items()), 0)


def proof(entries: dict[bytes, bytes], key: bytes) -> bytes:
    """The encoded proof for ``key``: terminal, then the siblings from the root down."""
    kh = h(key)
    leaves = sorted((h(k), h(v)) for k, v in entries.items())
    siblings: list[bytes] = []
    depth = 0
    while len(leaves) > 1:
        mine = [leaf for leaf in leaves if bit(leaf[0], depth) == bit(kh, depth)]
        other = [leaf for leaf in leaves if bit(leaf[0], depth) != bit(kh, depth)]
        siblings.append(subtree(other, depth + 1))
        leaves = mine
        depth += 1
    out = bytearray(b"\x01" + leaves[0][0] + leaves[0][1] if leaves else b"\x00")
    out.append(len(siblings)) if len(siblings) < 128 else out.extend(
        bytes((len(siblings) & 0x7F | 0x80, len(siblings) >> 7)))
    for s in siblings:
        out += s
    return bytes(out)


def cases() -> list[dict[str, object]]:
    many = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(24)}
    return [
        {"name": "empty", "entries": {}, "probe": [b"a"]},
        {"name": "one key", "entries": {b"a": b"1"}, "probe": [b"a", b"b"]},
        {"name": "two keys", "entries": {b"a": b"1", b"b": b"2"}, "probe": [b"a", b"b", b"c"]},
        {"name": "an empty value", "entries": {b"k": b""}, "probe": [b"k"]},
        {"name": "24 keys", "entries": many,
         "probe": [b"key-0", b"key-7", b"key-23", b"key-24", b"absent"]},
    ]


def vectors() -> dict[str, object]:
    out = []
    for case in cases():
        entries: dict[bytes, bytes] = case["entries"]  # type: ignore[assignment]
        out.append({
            "name": case["name"],
            "entries": [[k.hex(), v.hex()] for k, v in sorted(entries.items())],
            "root": root(entries).hex(),
            "proofs": [{"key": k.hex(), "value": entries[k].hex() if k in entries else None,
                        "proof": proof(entries, k).hex()}
                       for k in case["probe"]],  # type: ignore[attr-defined]
        })
    return {
        "hashes": {
            "empty": bytes(32).hex(),
            "leaf(key 'a', value '1')": h(b"\x00" + h(b"a") + h(b"1")).hex(),
        },
        "cases": out,
    }


if __name__ == "__main__":
    VECTORS.write_text(json.dumps(vectors(), indent=1) + "\n")
