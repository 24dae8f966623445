"""Network sync against local import, in the same run.

1. build   -> a regtest chain of BLOCKS blocks with EVENTS signed transfers each (not timed)
2. import  -> the chain's blocks file is imported (decoded and accepted, as ``blockcoin
              import`` does) into a fresh data directory in this process (timed:
              ``local_import_blocks_per_s``); this directory then seeds the source node
3. sync    -> a source node serves the chain; a fresh node started with ``--connect`` to it
              downloads and validates it over the encrypted loopback channel (timed from the
              moment the fresh node's API answers to the moment its tip is the last block:
              ``sync_blocks_per_s``); ``ratio`` = sync / local import
4. lookups -> ``/global/principals/<p>`` over one HTTP keep-alive connection to the synced node
              (``api_principal_lookups_per_s``) against the same lookups in process
              (``inprocess_lookups_per_s``)

Usage: scripts/bench/sync.py [--blocks 2000] [--events 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from chain.app.processes import NodeProcess  # noqa: E402
from chain.consensus.validation import expected_bits  # noqa: E402
from chain.core.block import Block, events_root  # noqa: E402
from chain.core.blockfile import read_blocks, write_blocks  # noqa: E402
from chain.core.events import Coinbase, Event, SignedEvent, Transfer  # noqa: E402
from chain.core.hashes import ZERO_HASH  # noqa: E402
from chain.core.header import Header, hash_hex  # noqa: E402
from chain.core.keys import KeyPair  # noqa: E402
from chain.core.params import HEADER_VERSION, REGTEST  # noqa: E402
from chain.core.principal import Principal  # noqa: E402
from chain.net.http import ApiClient  # noqa: E402
from chain.node.chainstate import ChainState  # noqa: E402
from chain.node.local import init_datadir  # noqa: E402
from chain.node.mining import solve  # noqa: E402


def build(count: int, per_block: int) -> tuple[list[Block], list[Principal]]:
    rng = random.Random(1)
    senders = [KeyPair.development(i) for i in range(2, 10)]
    recipients = [KeyPair.generate().principal for _ in range(300)]
    nonces = [0] * len(senders)
    prev = REGTEST.genesis.header
    t = prev.time
    blocks = []
    for height in range(1, count + 1):
        t += 1
        batch: list[Event] = []
        for _ in range(per_block):
            i = rng.randrange(len(senders))
            batch.append(SignedEvent.create(REGTEST.chain_id, senders[i], nonces[i], 200,
                                            Transfer(rng.choice(recipients),
                                                     rng.randrange(1, 10**6))))
            nonces[i] += 1
        events: list[Event] = [Coinbase(height, senders[0].principal, 200 * len(batch)), *batch]
        header = solve(Header(HEADER_VERSION, prev.hash, events_root(events), ZERO_HASH, t,
                              expected_bits(REGTEST, prev, height - 1), 0))
        assert header is not None
        blocks.append(Block(header, events))
        prev = header
    return blocks, recipients + [k.principal for k in senders]


def new_datadir(path: Path, dev_key: int) -> Path:
    path.mkdir(parents=True)
    KeyPair.development(dev_key).save(path / "wallet.key")
    init_datadir(path, REGTEST)
    return path


def lookups_api(client: ApiClient, principals: list[Principal], seconds: float) -> float:
    paths = [f"/global/principals/{p}" for p in principals]
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for path in paths[:100]:
            client.get(path)
        done += 100
        paths = paths[100:] + paths[:100]
    return done / (time.perf_counter() - start)


def lookups_inprocess(chain: ChainState, principals: list[Principal], seconds: float) -> float:
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for p in principals:
            acct = chain.tree.principal(p)
            if acct is not None:
                acct.to_json(p)  # what the API serialises
        done += len(principals)
    return done / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=2000)
    ap.add_argument("--events", type=int, default=5, help="signed transfers per block")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="blockcoin-sync-bench-"))
    nodes: list[NodeProcess] = []
    try:
        blocks, principals = build(args.blocks, args.events)
        last = hash_hex(blocks[-1].hash)

        blocks_file = tmp / "chain.blocks"
        write_blocks(blocks_file, iter(blocks))
        source_dir = new_datadir(tmp / "source", 1)
        chain = ChainState(source_dir, REGTEST)
        start = time.perf_counter()
        for block in read_blocks(blocks_file):  # as `blockcoin import` does: decode, accept
            chain.accept_block(block)
        import_seconds = time.perf_counter() - start
        assert hash_hex(chain.tip.hash) == last
        inprocess = lookups_inprocess(chain, principals, 1.0)
        chain.close()

        quiet = ("--no-discover", "--log-level", "warning")
        source = NodeProcess(source_dir, *quiet, name="source")
        nodes.append(source)
        source.start()
        fresh = NodeProcess(new_datadir(tmp / "fresh", 2), *quiet, "--connect", source.p2p,
                            name="fresh")
        nodes.append(fresh)
        fresh.start()
        started = time.monotonic()
        deadline = started + 600
        while fresh.tip()[0] < args.blocks:
            if time.monotonic() > deadline:
                raise SystemExit("sync did not finish in 600 s")
            time.sleep(0.02)
        sync_seconds = time.monotonic() - started
        assert fresh.client.get("/tip")["hash"] == last
        api = lookups_api(fresh.client, principals, 2.0)

        sync_rate = args.blocks / sync_seconds
        import_rate = args.blocks / import_seconds
        result = {
            "blocks": args.blocks,
            "events": args.blocks * args.events,
            "sync_seconds": round(sync_seconds, 3),
            "local_import_seconds": round(import_seconds, 3),
            "sync_blocks_per_s": round(sync_rate, 1),
            "local_import_blocks_per_s": round(import_rate, 1),
            "ratio": round(sync_rate / import_rate, 3),
            "api_principal_lookups_per_s": round(api, 1),
            "inprocess_lookups_per_s": round(inprocess, 1),
            "cpus": os.cpu_count(),
        }
    finally:
        for node in nodes:
            node.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:30} {value}")


if __name__ == "__main__":
    main()
