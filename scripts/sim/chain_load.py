"""Chain load of storage proofs: how many bytes a day the proofs of F fragments take, as a
function of the fragments stored, the leaves per proof, the leaf size and the period length,
against the chain's block space; and how many fragments today's parameters can carry.

Sizes are not estimated from a formula: each proof item and its event are built with the real
encoding (``chain.core.events``), with a path as deep as the fragment's tree, and measured.

  .venv/bin/python scripts/sim/chain_load.py --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from chain.core.events import ProofItem, ProvenLeaf, SignedEvent, StorageProof
from chain.core.keys import KeyPair
from chain.core.params import MAIN, NetworkParams
from chain.core.storageproof import leaf_count

DAY = 86_400
#: The fragment a 64 MiB file gives at the default 3-of-5 code.
DEFAULT_FRAGMENT = (64 << 20) // 3 + 1
KEY = KeyPair.development(0)


def depth(size: int, leaf_size: int) -> int:
    return max(0, math.ceil(math.log2(leaf_count(size, leaf_size))))


def item(size: int, leaf_size: int, leaves: int) -> ProofItem:
    """A proof item as deep as a ``size``-byte fragment's tree (its deepest paths)."""
    path = bytes(32 * depth(size, leaf_size))
    return ProofItem(b"\x07" * 32, 1_000, tuple(ProvenLeaf(bytes(leaf_size), path)
                                                for _ in range(leaves)))


def event_bytes(items: list[ProofItem], params: NetworkParams) -> int:
    ev = SignedEvent.create_at_rate(params.chain_id, KEY, 1_000_000, params.min_fee_rate,
                                    StorageProof(tuple(items)))
    return len(ev.raw)


def load(params: NetworkParams, fragments: int, leaves: int, leaf_size: int, period_blocks: int,
         size: int = DEFAULT_FRAGMENT) -> dict[str, Any]:
    """Bytes a day for the proofs of ``fragments`` fragments, packed as many to an event as
    the event size allows, against the block space a day offers."""
    one = item(size, leaf_size, leaves)
    per_event = 1
    while event_bytes([one] * (per_event + 1), params) <= params.max_event_bytes and per_event < 64:
        per_event += 1
    event = event_bytes([one] * per_event, params)
    per_item = event / per_event + 8  # and its length prefix in the block
    blocks_per_day = DAY / params.spacing
    proofs_per_day = fragments * blocks_per_day / period_blocks
    bytes_per_day = proofs_per_day * per_item
    space_per_day = blocks_per_day * params.max_block_bytes
    return {
        "fragments": fragments, "leaves": leaves, "leaf_size": leaf_size,
        "period_blocks": period_blocks, "period_hours": round(period_blocks * params.spacing / 3600, 1),
        "tree_depth": depth(size, leaf_size), "item_bytes": round(per_item),
        "items_per_event": per_event,
        "bytes_per_day": round(bytes_per_day),
        "gb_per_day": round(bytes_per_day / 1e9, 3),
        "block_space_share": round(bytes_per_day / space_per_day, 4),
        "fits": bytes_per_day <= space_per_day,
    }


def capacity(params: NetworkParams, leaves: int, leaf_size: int, period_blocks: int,
             share: float = 1.0) -> int:
    """Fragments whose proofs fill ``share`` of all block space."""
    per_fragment = load(params, 1, leaves, leaf_size, period_blocks)["bytes_per_day"]
    space = DAY / params.spacing * params.max_block_bytes * share
    return int(space / max(per_fragment, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    p = MAIN
    today = {"leaves": p.proof_leaves, "leaf_size": 1024, "period_blocks": p.storage_period_blocks}
    grid = [load(p, f, leaves, leaf, period)
            for f in (10_000, 100_000, 1_000_000)
            for leaves in (1, 2, p.proof_leaves, 8)
            for leaf in (256, 1024)
            for period in (p.storage_period_blocks, 7 * p.storage_period_blocks)]
    million = load(p, 1_000_000, **today)
    result = {
        "network": p.name, "spacing_s": p.spacing, "max_block_bytes": p.max_block_bytes,
        "max_event_bytes": p.max_event_bytes, "fragment_bytes": DEFAULT_FRAGMENT,
        "block_space_gb_per_day": round(DAY / p.spacing * p.max_block_bytes / 1e9, 3),
        "today": {**today, **{k: v for k, v in load(p, 1, **today).items()
                               if k in ("tree_depth", "item_bytes", "items_per_event")},
                  "capacity_fragments_all_space": capacity(p, **today),
                  "capacity_fragments_quarter_space": capacity(p, **today, share=0.25)},
        "one_million_fragments_today": million,
        "one_million_weekly_256B_2_leaves": load(p, 1_000_000, 2, 256, 7 * p.storage_period_blocks),
        "grid": grid,
    }
    if args.json:
        print(json.dumps(result))
        return
    t = result["today"]
    print(f"today: {t['item_bytes']} bytes per proof item, {t['items_per_event']} items an event;"
          f" {t['capacity_fragments_all_space']:,} fragments fill every block,"
          f" {t['capacity_fragments_quarter_space']:,} a quarter of them")
    m = result["one_million_fragments_today"]
    print(f"one million fragments today: {m['gb_per_day']} GB a day, "
          f"{m['block_space_share']:.0%} of the block space")
    print(f"{'fragments':>10} {'leaves':>6} {'leaf':>5} {'period h':>8} {'item B':>7} "
          f"{'GB/day':>8} {'share':>7}")
    for row in grid:
        print(f"{row['fragments']:>10,} {row['leaves']:>6} {row['leaf_size']:>5} "
              f"{row['period_hours']:>8} {row['item_bytes']:>7} {row['gb_per_day']:>8} "
              f"{row['block_space_share']:>7.2%}")


if __name__ == "__main__":
    main()
