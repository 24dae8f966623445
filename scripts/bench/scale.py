"""The global tree at scale: grow a regtest chain to ``--max`` principals and as many storage
contracts (synthetic blocks, half transfers to fresh principals, half offers), importing each
block into a fresh node as it is made, and at 10k, 100k, 250k, 500k and 1M (up to ``--max``;
without ``--json`` each row is printed as it is reached, so a long run shows its way) report:

- import events/s over the blocks since the last checkpoint (signature checks, the fold and the
  state root of every block), next to a bare loop verifying the same events' signatures;
- state keys, database size, this process's peak RSS (``VmHWM``: with the pages of LevelDB's
  table files it maps for reading) and the peak of its anonymous memory (``RssAnon``);
- a ``/global/principals`` query's latency, plain and with its proof (``chain.prove``), the
  proof's size in bytes and its verification time (what a light client does);
- at the end, the time to reindex the whole chain (the fold and the tree from genesis).

Each per-event figure should grow no faster than the log of the state's size.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # before this directory, whose miner.py is a bench

from chain.consensus.validation import expected_bits
from chain.core.block import Block, events_root
from chain.core.events import Coinbase, Event, FragmentOffer, SignedEvent, Transfer
from chain.core.hashes import ZERO_HASH
from chain.core.header import Header, hash_to_int
from chain.core.keys import KeyPair, verify
from chain.core.params import HEADER_VERSION, REGTEST
from chain.core.principal import Principal
from chain.core.schema import STATE, TREE
from chain.node.chainstate import ChainState
from globaltree.fold import apply_block
from globaltree.proofs import answer_from_proof

SENDERS = [KeyPair.development(i) for i in range(10)]
CHECKPOINTS = (10_000, 100_000, 250_000, 500_000, 1_000_000)
SAMPLE = 10_000


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class AnonPeak:
    """The peak of this process's anonymous memory (``RssAnon``, sampled every 0.2 s): its
    own heap and LevelDB's caches, without the table files LevelDB maps for reading, whose
    resident pages ``VmHWM`` counts too (page cache, which the kernel takes back as it
    needs)."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, status_mb("RssAnon"))

    def read(self) -> float:
        self.peak = max(self.peak, status_mb("RssAnon"))
        return self.peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


class Grower:
    def __init__(self, datadir: Path, per_block: int) -> None:
        self.chain = ChainState(datadir, REGTEST, verify_threads=1)
        self.per_block = per_block
        self.nonces = [0] * len(SENDERS)
        # a uniform sample of the principals made (reservoir): the queries' picks, without
        # this process holding a million objects of its own next to the node's memory
        self.principals = 0
        self.sample: list[Principal] = []
        self.contracts = 0
        self.rng = random.Random(3)
        self.import_seconds = 0.0
        self.verify_seconds = 0.0
        self.events = 0

    def block(self, transfers: int, offers: int) -> None:
        chain, rng = self.chain, self.rng
        tip = chain.tip
        height = tip.height + 1
        events: list[SignedEvent] = []
        for i in range(transfers + offers):
            s = i % len(SENDERS)
            key = SENDERS[s]
            if i < transfers:
                to = Principal(rng.randbytes(32))
                self.keep(to)
                body: Transfer | FragmentOffer = Transfer(to, 1)
            else:
                self.contracts += 1
                body = FragmentOffer(f"{key.principal.root_path}/c{self.contracts}", b"\x01" * 32,
                                     0, 5, 3, 4096, rng.randbytes(32), 1024, 1, 0, 1, 1,
                                     height + REGTEST.max_offer_blocks)
            events.append(SignedEvent.create(REGTEST.chain_id, key, self.nonces[s], 0, body))
            self.nonces[s] += 1
        all_events: list[Event] = [Coinbase(height, SENDERS[0].principal, 0), *events]
        time_ = tip.header.time + 1
        header = Header(HEADER_VERSION, tip.hash, events_root(all_events), ZERO_HASH, time_,
                        expected_bits(REGTEST, tip.header, tip.height), 0)
        view = chain.view()  # through the chain's node cache: this root is not what is timed
        apply_block(view, REGTEST, Block(header, all_events), height, chain.store.hash_at)
        root = view.root()
        solved = Header(header.version, header.prev, header.events_root, root, time_, header.bits, 0)
        while hash_to_int(solved.hash) > solved.target:  # regtest: a try or two, no miner loaded
            solved = solved.with_nonce(solved.nonce + 1)
        block = Block(solved, all_events)
        start = time.perf_counter()
        chain.accept_block(block, now=time_)
        self.import_seconds += time.perf_counter() - start
        items = [(e.signer_key, e.signing_message(REGTEST.chain_id), e.signature) for e in events]
        start = time.perf_counter()
        for key, msg, sig in items:
            assert verify(key, msg, sig)
        self.verify_seconds += time.perf_counter() - start
        self.events += len(events)

    def keep(self, p: Principal) -> None:
        self.principals += 1
        if len(self.sample) < SAMPLE:
            self.sample.append(p)
        else:
            i = self.rng.randrange(self.principals)
            if i < SAMPLE:
                self.sample[i] = p

    def grow_to(self, size: int) -> None:
        half = self.per_block // 2
        while self.principals < size:
            n = min(half, size - self.principals)
            self.block(n, n)

    def queries(self, samples: int) -> dict[str, float]:
        chain = self.chain
        picks = [self.rng.choice(self.sample) for _ in range(samples)]
        start = time.perf_counter()
        for p in picks:
            assert chain.tree.principal_json(p) is not None
        plain = (time.perf_counter() - start) / samples
        proofs = []
        start = time.perf_counter()
        for p in picks:
            proofs.append(chain.prove(lambda tree, p=p: tree.principal_json(p)))
        proven = (time.perf_counter() - start) / samples
        root = chain.tip.header.state_root
        sizes, depths = [], []
        start = time.perf_counter()
        for p, (answer, proof) in zip(picks, proofs, strict=True):
            assert answer_from_proof(proof, root, lambda tree, p=p: tree.principal_json(p)) == answer
        verify_s = (time.perf_counter() - start) / samples
        for _, proof in proofs:
            sizes.append(sum(len(k) + len(v or b"") + len(pr.encode()) for k, v, pr in proof.items))
            depths.append(statistics.mean(len(pr.siblings) for _, _, pr in proof.items))
        return {"query_ms": round(plain * 1e3, 3), "proven_query_ms": round(proven * 1e3, 3),
                "proof_bytes": round(statistics.mean(sizes)),
                "proof_depth": round(statistics.mean(depths), 1),
                "proof_verify_ms": round(verify_s * 1e3, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--max", type=int, default=1_000_000,
                    help="grow to this many principals (and contracts)")
    ap.add_argument("--per-block", type=int, default=4_000, help="events per block")
    ap.add_argument("--samples", type=int, default=500, help="queries timed at each size")
    ap.add_argument("--dir", type=Path, default=None, help="data directory (default: a temp one)")
    args = ap.parse_args()
    sizes = [c for c in CHECKPOINTS if c < args.max] + [args.max]
    out: dict[str, Any] = {"per_block": args.per_block, "sizes": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        grower = Grower(Path(tmp) / "node", args.per_block)
        anon = AnonPeak()
        began = time.perf_counter()
        for size in sizes:
            events0, import0, verify0 = grower.events, grower.import_seconds, grower.verify_seconds
            grower.grow_to(size)
            events = grower.events - events0
            rate = events / (grower.import_seconds - import0)
            bare = events / (grower.verify_seconds - verify0)
            db = grower.chain.store.db
            records = sum(1 for _ in db.iterator(prefix=STATE, include_value=False))
            nodes = sum(1 for _ in db.iterator(prefix=TREE, include_value=False))
            row = {"principals": size, "contracts": grower.contracts,
                   "height": grower.chain.tip.height, "state_keys": records - nodes, "tree_nodes": nodes,
                   "import_events_per_s": round(rate), "bare_verify_per_s": round(bare),
                   "import_ratio": round(rate / bare, 3),
                   "db_mb": round(du_mb(Path(tmp) / "node"), 1),
                   "peak_rss_mb": round(status_mb("VmHWM"), 1),
                   "peak_anon_mb": round(anon.read(), 1), **grower.queries(args.samples),
                   "elapsed_s": round(time.perf_counter() - began, 1)}
            out["sizes"].append(row)
            if not args.json:
                print(json.dumps(row), flush=True)
        start = time.perf_counter()
        grower.chain.reindex()
        out["reindex_s"] = round(time.perf_counter() - start, 1)
        out["reindex_events_per_s"] = round(grower.events / out["reindex_s"])
        out["peak_rss_mb"] = round(status_mb("VmHWM"), 1)
        out["peak_anon_mb"] = round(anon.read(), 1)
        anon.stop()
        grower.chain.close()
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps({k: v for k, v in out.items() if k != "sizes"}))


if __name__ == "__main__":
    main()
