"""Block validation throughput: import a regtest chain of signed transfers into a fresh node
(state root commitments included: every block's global tree root is recomputed and checked)
and compare with a bare loop verifying the same signatures, the two taking turns block by
block in the import's process (on a shared machine the speed moves by a third within seconds:
stages run one after the other did not see the same machine), ``--rounds`` times, the median
ratio; the state tree's update rate alone (``state_update_per_s``);
then a chain of storage contracts, timing its blocks of ``FragmentStored`` events (a small
and a large block: the cost per event must not grow with the block) and its blocks full of
``StorageProof`` items against a bare loop verifying the same Merkle paths.

Stages run in separate processes so that each one's peak RSS is its own:
  build   -> writes the blocks file (not timed; it loads the miner)
  import  -> a fresh node imports it with N verification threads (and the bare loop after each
             block); prints events/s, the bare loop's rate, RSS
  reindex -> refolds the imported chain from genesis
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # before this directory, whose miner.py is a bench

from chain.consensus.validation import expected_bits
from chain.core.block import Block, events_root
from chain.core.blockfile import read_blocks, write_blocks
from chain.core.events import Coinbase, Event, SignedEvent, Transfer
from chain.core.hashes import ZERO_HASH
from chain.core.header import Header
from chain.core.keys import KeyPair
from chain.core.params import HEADER_VERSION, REGTEST
from chain.node.mining import solve
from globaltree.fold import fold_into, genesis_state


def build(path: Path, events: int, per_block: int) -> None:
    rng = random.Random(1)
    senders = [KeyPair.development(i) for i in range(10)]
    recipients = [KeyPair.generate().principal for _ in range(500)]
    nonces = [0] * len(senders)
    prev = REGTEST.genesis.header
    t = prev.time
    blocks = []
    made = 0
    height = 0
    state = genesis_state(REGTEST)
    while made < events:
        height += 1
        batch: list[Event] = []
        for _ in range(min(per_block, events - made)):
            i = rng.randrange(len(senders))
            batch.append(SignedEvent.create(REGTEST.chain_id, senders[i], nonces[i], 200,
                                            Transfer(rng.choice(recipients), rng.randrange(1, 10**6))))
            nonces[i] += 1
        made += len(batch)
        all_events: list[Event] = [Coinbase(height, senders[0].principal, 200 * len(batch)), *batch]
        t += 1
        unsealed = Block(Header(HEADER_VERSION, prev.hash, events_root(all_events), ZERO_HASH, t,
                                expected_bits(REGTEST, prev, height - 1), 0), all_events)
        root = fold_into(state, REGTEST, unsealed, height, lambda h: None)
        header = solve(replace(unsealed.header, state_root=root))
        assert header is not None
        blocks.append(Block(header, all_events))
        prev = header
    write_blocks(path, iter(blocks))


def rss_mb() -> float:
    """This process's own peak RSS. Not ``ru_maxrss``: Linux carries that over fork and exec,
    so a stage would report the peak of the process that started it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_import(path: Path, datadir: Path, threads: int) -> dict[str, float]:
    """Import the blocks file; after each block, verify that block's signatures again in a bare
    loop, so that the import and its baseline take turns a block at a time and see the same
    machine (on a shared one its speed moves by a third within seconds)."""
    from chain.core.keys import verify
    from chain.node.chainstate import ChainState

    chain = ChainState(datadir, REGTEST, verify_threads=threads)
    chain_id = REGTEST.chain_id
    n = 0
    per_block = []
    bare = 0.0
    start, cpu = time.perf_counter(), time.process_time()
    for block in read_blocks(path):  # decoding is part of importing
        began = time.perf_counter()
        chain.accept_block(block, now=block.header.time)
        per_block.append(time.perf_counter() - began)
        n += len(block.events) - 1
        items = [(e.signer_key, e.signing_message(chain_id), e.signature)
                 for e in block.events if isinstance(e, SignedEvent)]
        began = time.perf_counter()
        for key, msg, sig in items:
            if not verify(key, msg, sig):
                raise SystemExit("benchmark chain has a bad signature")
        bare += time.perf_counter() - began
    elapsed, cpu = time.perf_counter() - start - bare, time.process_time() - cpu
    chain.close()
    return {"events": n, "seconds": elapsed, "events_per_s": n / elapsed,
            "bare_per_s": n / bare, "peak_rss_mb": rss_mb(), "block_seconds": per_block}


def stage_reindex(datadir: Path) -> dict[str, float]:
    from chain.node.chainstate import ChainState

    chain = ChainState(datadir, REGTEST, verify_threads=1)
    start = time.perf_counter()
    chain.reindex()
    elapsed = time.perf_counter() - start
    chain.close()
    return {"seconds": elapsed, "peak_rss_mb": rss_mb()}


def stage_state_update(datadir: Path, keys: int, batch: int, rounds: int) -> dict[str, float]:
    """The state tree alone, in LevelDB: ``keys`` account-sized records, then ``rounds`` blocks
    each changing ``batch`` of them (the node's path: sorted one-descent update through the
    node cache, node writes in one synced batch, then into the cache). Keys updated per
    second; the root is what a block's commitment costs."""
    import plyvel

    from chain.core import statetree
    from chain.core.schema import ACCOUNT, TREE

    rng = random.Random(2)
    db = plyvel.DB(str(datadir), create_if_missing=True)
    cache = statetree.NodeCache()
    store = statetree.NodeStore(TREE, db.get, cache)
    names = [ACCOUNT + rng.randbytes(32) for _ in range(keys)]

    def commit(changes: list[tuple[bytes, bytes | None]]) -> None:
        _, writes = statetree.update(store, changes)
        with db.write_batch(sync=True) as wb:
            for pos, node in writes.items():
                if node is None:
                    wb.delete(pos)
                else:
                    wb.put(pos, node)
        cache.committed(writes)

    for i in range(0, keys, 20_000):
        commit([(k, rng.randbytes(40)) for k in names[i : i + 20_000]])
    start = time.perf_counter()
    for _ in range(rounds):
        commit([(k, rng.randbytes(40)) for k in rng.sample(names, batch)])
    elapsed = time.perf_counter() - start
    db.close()
    return {"state_update_per_s": batch * rounds / elapsed}


def run_stage(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--stage", *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def storage_figures(tmp: Path, stored: tuple[int, int], proofs: int,
                    rounds: int = 3) -> dict[str, Any]:
    """Import the storage chain on one core; rates of its stored and proof blocks. The import
    and the bare loop take turns ``rounds`` times and each keeps its best: on a shared
    machine the two must see the same conditions for their ratio to mean anything."""
    from _storage_chain import Layout, bare_verify_rate

    blocks = tmp / "storage.dat"
    out = subprocess.run([sys.executable, __file__, "--stage", "build-storage", str(blocks),
                          str(stored[0]), str(stored[1]), str(proofs)],
                         check=True, capture_output=True, text=True)
    raw = json.loads(out.stdout)
    layout = Layout(tuple(raw["stored_small"]), tuple(raw["stored_large"]),  # type: ignore[arg-type]
                    raw["proof_heights"], raw["proof_items"])
    small = large = items_per_s = bare = 0.0
    for i in range(rounds):
        seconds = run_stage("import", str(blocks), str(tmp / f"storage{i}"), "1")["block_seconds"]

        def rate(height_events: tuple[int, int], seconds: list[float] = seconds) -> float:
            height, events = height_events
            return events / seconds[height - 1]

        small = max(small, rate(layout.stored_small))
        large = max(large, rate(layout.stored_large))
        proof_seconds = sum(seconds[h - 1] for h in layout.proof_heights)
        items_per_s = max(items_per_s, layout.proof_items / proof_seconds)
        bare = max(bare, bare_verify_rate(blocks, layout))
    return {
        "stored_events_per_s_small_block": round(small),
        "stored_events_per_s_large_block": round(large),
        "stored_scaling": round(large / small, 3),  # ~1: time grows with the events, no faster
        "proof_items": layout.proof_items,
        "proof_blocks": len(layout.proof_heights),
        "proof_items_per_s": round(items_per_s),
        "bare_merkle_items_per_s": round(bare),
        "proof_ratio": round(items_per_s / bare, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--per-block", type=int, default=1_000)
    ap.add_argument("--threads", type=int, default=0, help="verification threads (0: all cores)")
    ap.add_argument("--stored", type=int, nargs=2, default=(2_000, 6_000), metavar=("SMALL", "LARGE"),
                    help="FragmentStored events in the small and the large block")
    ap.add_argument("--proofs", type=int, default=4_000, help="StorageProof items to import")
    ap.add_argument("--rounds", type=int, default=5,
                    help="one-core imports (each with its bare loop block by block); the median ratio")
    ap.add_argument("--state-keys", type=int, default=100_000,
                    help="state size for the state_update_per_s figure")
    ap.add_argument("--stage", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        kind, *rest = args.stage
        if kind == "build":
            build(Path(rest[0]), int(rest[1]), int(rest[2]))
        elif kind == "import":
            print(json.dumps(stage_import(Path(rest[0]), Path(rest[1]), int(rest[2]))))
        elif kind == "reindex":
            print(json.dumps(stage_reindex(Path(rest[0]))))
        elif kind == "state-update":
            print(json.dumps(stage_state_update(Path(rest[0]), int(rest[1]), int(rest[2]),
                                                int(rest[3]))))
        elif kind == "build-storage":
            from _storage_chain import build as build_storage

            layout = build_storage(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
            print(json.dumps(layout.__dict__))
        return
    import os

    threads = args.threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        blocks = Path(tmp) / "blocks.dat"
        # built in its own process too, so that the miner it loads stays out of this one
        subprocess.run([sys.executable, __file__, "--stage", "build", str(blocks),
                        str(args.events), str(args.per_block)], check=True)
        one: dict[str, Any] = {"events_per_s": 0.0, "peak_rss_mb": 0.0}
        ratios, bares = [], []
        for i in range(args.rounds):
            this = run_stage("import", str(blocks), str(Path(tmp) / f"one{i}"), "1")
            if this["events_per_s"] > one["events_per_s"]:
                one = this
            ratios.append(this["events_per_s"] / this["bare_per_s"])
            bares.append(this["bare_per_s"])
        many = run_stage("import", str(blocks), str(Path(tmp) / "many"), str(threads))
        reindex = run_stage("reindex", str(Path(tmp) / "one0"))
        state = run_stage("state-update", str(Path(tmp) / "tree"), str(args.state_keys),
                          str(2 * args.per_block), "20")
        storage = storage_figures(Path(tmp), args.stored, args.proofs)
    result = {
        "events": int(one["events"]),
        "events_per_s": round(many["events_per_s"]),
        "events_per_s_1core": round(one["events_per_s"]),
        "verify_only_per_s": round(max(bares)),
        # the import against a bare loop verifying each block's signatures right after it
        # (the two taking turns block by block), the median of the rounds
        "ratio": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "ratio_allcores": round(many["events_per_s"] / max(bares), 3),
        "threads": threads,
        "rounds": args.rounds,
        "peak_rss_mb": round(max(one["peak_rss_mb"], many["peak_rss_mb"]), 1),
        "reindex_s": round(reindex["seconds"], 2),
        # state tree updates per second, blocks changing two keys per transfer, over a state
        # of --state-keys keys (the commitment's own cost, inside events_per_s_1core above)
        "state_update_per_s": round(state["state_update_per_s"]),
        "state_keys": args.state_keys,
        **storage,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
