"""Throughput of the storage data-plane primitives, and the ceiling a put or get can reach.

Over one random buffer (64 MiB by default) this times, each as the best of ``--repeat`` runs:

* AEAD sealing (AES-256-GCM, :func:`storage_market.crypto.seal`, into a fresh buffer as a real
  put does; the same into a reused buffer is reported too: on this kind of host most of the
  fresh-buffer time is the kernel faulting in and zeroing 64 MiB, not the cipher);
* zfec 3-of-5 encoding of the sealed buffer;
* Merkle trees (1 KiB leaves) over the five fragments;
* and for the way back: zfec decoding from the worst three fragments (two parity) and AEAD
  opening.

Every rate is in MB/s (10**6 bytes) *of the original buffer*, so per-byte costs add up: the
"ceiling" of a single-threaded put is ``1 / sum(1 / rate)`` over its stages; a put/get benchmark
that adds I/O and bookkeeping is judged against it. ``proof_verify_per_s`` is how many leaf
proofs (leaf hash plus ~15 inner hashes) one core checks per second.

Usage: ``python scripts/bench/storage_primitives.py [--json] [--size-mib N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cryptography
import zfec
from _report import emit

from storage_market import fragments
from storage_market.crypto import (
    new_block_key,
    new_version,
    seal,
    seal_into,
    sealed_size,
    unseal,
)
from storage_market.merkle import DEFAULT_LEAF_SIZE, MerkleTree, verify_proof


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _path() -> str:
    from chain.core.keys import KeyPair

    return KeyPair.development(0).principal.root_path + "/bench"


def stage_times(size: int, repeat: int, proofs: int,
                best: dict[str, float] | None = None) -> dict[str, float]:
    """Seconds per stage, each the best of ``repeat`` runs (and of ``best``, the stage times
    of earlier rounds, when given: a caller interleaving rounds with other work keeps the best
    of all of them)."""
    data = os.urandom(size)
    key, version, path = new_block_key(), new_version(), _path()

    t_seal, sealed = _best(lambda: seal(key, path, version, data), repeat)
    reused = bytearray(sealed_size(size))
    t_seal_reused, _ = _best(lambda: seal_into(key, path, version, data, reused), repeat)

    t_encode, frags = _best(lambda: fragments.encode(sealed, 3, 5), repeat)
    fragment_bytes = sum(len(f) for f in frags)

    t_merkle, trees = _best(lambda: [MerkleTree(f, DEFAULT_LEAF_SIZE) for f in frags], repeat)

    worst = {i: frags[i] for i in (2, 3, 4)}
    t_decode, decoded = _best(lambda: fragments.decode(worst, 3, 5), repeat)
    assert decoded == sealed
    t_open, opened = _best(lambda: unseal(key, path, version, decoded), repeat)
    assert opened == data

    tree = trees[0]
    rng = random.Random(1)
    picks = [rng.randrange(tree.leaf_count) for _ in range(proofs)]
    samples = [(i, tree.leaf(i), tree.proof(i)) for i in picks]
    root, count = tree.root, tree.leaf_count

    def verify_all() -> None:
        for i, leaf, proof in samples:
            if not verify_proof(root, leaf, i, count, proof):
                raise SystemExit("proof failed to verify")

    t_verify, _ = _best(verify_all, repeat)
    times = {"seal": t_seal, "seal_reused": t_seal_reused, "encode": t_encode,
             "merkle": t_merkle, "decode": t_decode, "open": t_open, "verify": t_verify,
             "fragment_bytes": fragment_bytes, "leaves": count, "depth": len(samples[0][2])}
    if best:
        for stage in ("seal", "seal_reused", "encode", "merkle", "decode", "open", "verify"):
            times[stage] = min(times[stage], best[stage])
    return times


def run(size: int, repeat: int, proofs: int) -> dict[str, Any]:
    return summarize(size, stage_times(size, repeat, proofs), proofs, f"best of {repeat}")


def summarize(size: int, t: dict[str, float], proofs: int, method: str) -> dict[str, Any]:
    """The report (rates and ceilings) from :func:`stage_times`."""
    t_seal, t_seal_reused, t_encode, t_merkle = t["seal"], t["seal_reused"], t["encode"], t["merkle"]
    t_decode, t_open, t_verify = t["decode"], t["open"], t["verify"]
    fragment_bytes, count, depth = int(t["fragment_bytes"]), int(t["leaves"]), int(t["depth"])
    mb = size / 1e6

    put_seconds = t_seal + t_encode + t_merkle
    get_seconds = t_decode + t_open + t_merkle * 3 / 5  # a getter checks the k fragments it uses
    return {
        "bench": "storage_primitives",
        "size_bytes": size,
        "fragment_bytes_total": fragment_bytes,
        "code": "3-of-5",
        "leaf_size": DEFAULT_LEAF_SIZE,
        "leaves_per_fragment": count,
        "method": method,
        "aead": "AES-256-GCM",
        "aead_encrypt_mb_s": round(mb / t_seal, 1),
        "aead_encrypt_reused_buffer_mb_s": round(mb / t_seal_reused, 1),
        "zfec_encode_mb_s": round(mb / t_encode, 1),
        "merkle_5_fragments_mb_s": round(mb / t_merkle, 1),
        "merkle_hash_mb_s_of_fragment_bytes": round(fragment_bytes / 1e6 / t_merkle, 1),
        "ceiling_put_mb_s": round(mb / put_seconds, 1),
        "ceiling_put_reused_buffer_mb_s": round(mb / (put_seconds - t_seal + t_seal_reused), 1),
        "zfec_decode_worst_mb_s": round(mb / t_decode, 1),
        "aead_decrypt_mb_s": round(mb / t_open, 1),
        "ceiling_get_mb_s": round(mb / get_seconds, 1),
        "proof_depth": depth,
        "proof_verify_per_s": round(proofs / t_verify),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "zfec": zfec.__version__,
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--size-mib", type=int, default=64, help="buffer size (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage (best is kept)")
    parser.add_argument("--proofs", type=int, default=20_000, help="proofs to verify")
    args = parser.parse_args()
    result = run(args.size_mib << 20, max(1, args.repeat), max(1, args.proofs))
    emit(result, args.json)


if __name__ == "__main__":
    main()
