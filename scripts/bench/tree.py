"""The local blocktree's client work, each against the primitives' ceiling measured in the same
run.

An in-process regtest chain and the owner agent, as ``blockcoin tree`` runs them, without hosts:
what is timed is the tree's own work up to the offers standing on chain (placement by hosts is
the market's, measured by ``storage.py``).

* **put_dir**: ``LocalTree.put`` of a directory of ``--files`` small files (4 KiB by default):
  per file, seal (AES-256-GCM) with a readcap and the key wrapped under the directory's, zfec
  3-of-5, five Merkle roots, the record written durably, five offers signed and admitted by the
  node (each checked by the fold). Ceiling: seal + readcap + wrap + zfec + Merkle alone over the
  same files, one after another.
* **put_file**: ``LocalTree.put`` of one ``--size-mib`` file (256 MiB by default). Ceiling: the
  storage primitives (AEAD + zfec + Merkle, :mod:`storage_primitives`) over the same bytes.
* **ls**: ``blockcoin tree ls`` of a directory of ``--entries`` entries (10,000 by default): load
  the tree index and the agent's state, list the directory with each entry's health. Ceiling:
  ``json.loads`` of the same two files (the least any reader of them does).
* **rekey**: ``LocalTree.rekey`` of the ``--files`` blocks put above (and their directory):
  every old key learnt through the directory's, a fresh key each, the payload opened and sealed
  again, the old offers released and new ones made. Ceiling: unwrap + open + seal + readcap +
  wrap + zfec + Merkle alone over the same blocks.

Each ``*_ratio`` is the tree's rate over its ceiling's (1.0: the tree adds nothing to the
primitives). Rates: files, entries or blocks per second, and MB/s (10**6 bytes) for the file.
``*_node_admission_share`` is the part of a put or re-key spent in the node admitting the
tree's events to its mempool (five offers per block, and five releases per re-keyed block;
the node holds at most 64 unmined events of one signer, so the tree also waits for blocks).

Usage: ``python scripts/bench/tree.py [--json] [--files N] [--size-mib N] [--entries N]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import storage_primitives
from _report import emit

from chain.app.storage import stored_blocks
from chain.core.keys import KeyPair
from storage_market import fragments
from storage_market.blockstore import KIND_DIR, KIND_FILE
from storage_market.chainclient import Signer
from storage_market.crypto import (
    Readcap,
    new_block_key,
    new_version,
    seal,
    unseal,
    unwrap_child_key,
    wrap_child_key,
)
from storage_market.inprocess import InProcessChain
from storage_market.merkle import DEFAULT_LEAF_SIZE, merkle_root
from storage_market.owner import ACTIVE, BlockEntry, OwnerAgent, Slot, StoreOptions
from storage_market.tree import Identity, LocalTree, TreeIndex, TreeNode, Version, listing

OWNER = KeyPair.development(0)
ROOT = OWNER.principal.root_path
OPTIONS = StoreOptions(k=3, n=5, price=1, collateral=0, periods=1)


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def block_primitives(payloads: list[bytes], rekey: bool) -> float:
    """Seconds for the primitives of placing these blocks (and, for a re-key, of opening the
    old ones first), one after another as the tree does them."""
    parent, path = new_block_key(), f"{ROOT}/dir/f"
    olds = []
    for data in payloads:
        key, version = new_block_key(), new_version()
        olds.append((data, wrap_child_key(parent, path, key), version,
                     bytes(seal(key, path, version, data))))

    def run() -> None:
        for data, wrapped, version, sealed in olds:
            if rekey:
                unseal(unwrap_child_key(parent, path, wrapped), path, version, sealed)
            key = new_block_key()
            Readcap.issue(key, path, OWNER.public)
            wrap_child_key(parent, path, key)
            record = seal(key, path, new_version(), data)
            for frag in fragments.encode(record, OPTIONS.k, OPTIONS.n):
                merkle_root(frag, DEFAULT_LEAF_SIZE)

    return _timed(run)


async def tree_work(work: Path, files: int, file_size: int, big: int) -> dict[str, float]:
    chain = InProcessChain.open(work / "chain")
    home = work / "owner"
    # The agent is not started: with no hosts it would only follow the chain, and its
    # per-block look at every contract would be timed instead of the tree.
    agent = OwnerAgent(home, Signer(OWNER), chain, defaults=OPTIONS)
    admitted = [0.0]  # seconds the node spent admitting the tree's events to its mempool
    submit = chain.submit

    async def timed_submit(event: Any) -> bytes:
        start = time.perf_counter()
        try:
            return await submit(event)
        finally:
            admitted[0] += time.perf_counter() - start

    chain.submit = timed_submit  # type: ignore[method-assign]
    chain.start_mining(0.05)  # a signer has at most 64 events pending: blocks make room
    try:
        tree = LocalTree(home, Identity(OWNER, OWNER.principal, ROOT), agent, OPTIONS,
                         wait=None)
        src = work / "small"
        src.mkdir()
        for i in range(files):
            (src / f"f{i:05}.bin").write_bytes(os.urandom(file_size))
        start = time.perf_counter()
        await tree.put(src, f"{ROOT}/small")
        for path in list(agent.entries):
            await agent.written(path)
        t_dir = time.perf_counter() - start
        a_dir, admitted[0] = admitted[0], 0.0

        start = time.perf_counter()
        await tree.rekey(f"{ROOT}/small", set())
        for path in list(agent.entries):
            await agent.written(path)
        t_rekey = time.perf_counter() - start
        a_rekey, admitted[0] = admitted[0], 0.0

        blob = work / "big.bin"
        with blob.open("wb") as fh:
            for _ in range(big // (1 << 20)):
                fh.write(os.urandom(1 << 20))
        start = time.perf_counter()
        await tree.put(blob, f"{ROOT}/big.bin")
        await agent.written(f"{ROOT}/big.bin")
        t_file = time.perf_counter() - start
        blob.unlink()
        return {"dir": t_dir, "rekey": t_rekey, "file": t_file, "dir_admit": a_dir,
                "rekey_admit": a_rekey}
    finally:
        await agent.state.close()
        await chain.close()


def ls_work(work: Path, entries: int) -> tuple[float, float]:
    """(seconds for ``tree ls`` of ``entries`` entries, seconds to parse its two files)."""
    home = work / "ls"
    index = TreeIndex(home)
    agent_entries: list[dict[str, Any]] = []
    base = f"{ROOT}/many"
    index.nodes[base] = TreeNode(base, KIND_DIR, 0, {}, None, [Version(new_version(), 1, 0)])
    for i in range(entries):
        path = f"{base}/f{i:06}"
        version = new_version()
        index.nodes[path] = TreeNode(path, KIND_FILE, 4096, {}, None, [Version(version, 2, 4096)])
        slots = [Slot(j, os.urandom(32), ACTIVE) for j in range(OPTIONS.n)]
        agent_entries.append(BlockEntry(path, version, 3, 5, 4200, 1400, 1024, 1, 1, 5,
                                        [os.urandom(32)] * 5, slots, OPTIONS).to_json())
    index.save()
    state = home / "store" / "state.json"
    state.write_text(json.dumps({"owner": str(OWNER.principal), "blocks": agent_entries}))

    def ls() -> None:
        rows = listing(TreeIndex(home), stored_blocks(home), base)
        assert len(rows) == entries and rows[0]["health"] == "ok"

    def ceiling() -> None:
        json.loads((home / "store" / "tree.json").read_bytes())
        json.loads(state.read_bytes())

    return min(_timed(ls) for _ in range(3)), min(_timed(ceiling) for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--file-kib", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--entries", type=int, default=10_000)
    args = parser.parse_args()
    file_size, big = args.file_kib * 1024, args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="bench-tree-") as tmp:
        work = Path(tmp)
        t = asyncio.run(tree_work(work, args.files, file_size, big))
        payloads = [os.urandom(file_size) for _ in range(args.files)]
        c_dir = block_primitives(payloads, rekey=False)
        c_rekey = block_primitives(payloads, rekey=True)
        stages = storage_primitives.stage_times(big, 1, 10)
        c_file = stages["seal"] + stages["encode"] + stages["merkle"]
        t_ls, c_ls = ls_work(work, args.entries)
    blocks = args.files + 1  # the directory too
    result = {
        "bench": "tree",
        "files": args.files, "file_bytes": file_size, "big_file_bytes": big,
        "ls_entries": args.entries, "code": f"{OPTIONS.k}-of-{OPTIONS.n}",
        "put_dir_files_per_s": round(args.files / t["dir"], 1),
        "put_dir_ceiling_files_per_s": round(args.files / c_dir, 1),
        "put_dir_ratio": round(c_dir / t["dir"], 3),
        "put_dir_node_admission_share": round(t["dir_admit"] / t["dir"], 3),
        "put_file_mb_s": round(big / 1e6 / t["file"], 1),
        "put_file_ceiling_mb_s": round(big / 1e6 / c_file, 1),
        "put_file_ratio": round(c_file / t["file"], 3),
        "ls_entries_per_s": round(args.entries / t_ls),
        "ls_ceiling_entries_per_s": round(args.entries / c_ls),
        "ls_ratio": round(c_ls / t_ls, 3),
        "rekey_blocks_per_s": round(blocks / t["rekey"], 1),
        "rekey_ceiling_blocks_per_s": round(args.files / c_rekey, 1),
        "rekey_ratio": round(c_rekey / args.files * blocks / t["rekey"], 3),
        "rekey_node_admission_share": round(t["rekey_admit"] / t["rekey"], 3),
        "cpus": os.cpu_count(),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
