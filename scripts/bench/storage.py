"""Put and get of one file (64 MiB by default) through the storage market, against the ceiling.

A regtest chain, the owner agent and five host agents on 127.0.0.1, talking over real TCP
sockets and the Noise channel exactly as in production. By default the hosts run in the bench's
process (on a 2-core machine that is fastest); ``--hosts process`` runs all five in one process
of their own and ``--hosts processes`` each as a ``blockcoin host start`` process, both reaching
the chain through the node API shape served by :func:`storage_market.inprocess.serve_api`. (On
two cores neither is faster: the put keeps both cores about 70% busy wherever the hosts run, and
the API round trips add latency.)

* **put** = read the file and seal it (AES-256-GCM) piece by piece, erasure-code it 3-of-5,
  hash the five Merkle trees, keep the record durably on the owner's disk, publish five
  offers, and wait until five hosts have fetched a fragment each over the channel, checked its
  root, written it durably, signed a receipt, and the five ``FragmentStored`` events are mined;
* **get** = look the path up in ``/global/fragments``, fetch three fragments in parallel over
  the channel into a mapped temporary file, check each against its root, check the record,
  open it with the readcap piece by piece into the output's temporary file and rename it (as
  ``blockcoin store get`` does: written, not fsynced). ``get_added_mb`` is the process's peak
  resident memory during the get above what it held before (the most of the runs; mapped
  page-cache pages count while they are mapped, and the five hosts serving run in the same
  process unless ``--hosts`` says otherwise).

The ceiling comes from the same run: :mod:`storage_primitives`' single-pass measurement of the
primitives alone over the same number of bytes (AEAD + zfec + Merkle for a put; zfec decode +
AEAD open + Merkle of three fragments for a get), one round after each round of the market (so
both see the same background load), each stage the best of its rounds. ``put_ratio`` and
``get_ratio`` are market throughput over that ceiling (targets >= 0.5). ``proof_verify_per_s``
is leaf proofs checked per second on one core. Rates are MB/s (10**6 bytes) of the file.
``put_peak_rss_mb`` is the owner process's peak resident memory (VmHWM) over a put of a
``--rss-mib`` file (default 100) in a process of its own, without hosts (sealing, coding,
hashing, the durable record and the offers; no serving); ``put_rss_ratio`` is that over the file
size (target <= 2.5), ``put_baseline_rss_mb`` the same process before the put and
``put_added_mb`` the peak above it: what the put itself took, which streaming keeps to a few
stripes whatever the file's size (compare two ``--rss-mib``). Most of the
baseline is shared libraries mapped from disk (LLVM under numba: ``put_file_backed_mb``, pages
every numba process shares), so ``put_private_ratio`` is the peak less those pages, over the
file size: the memory the put really takes from the machine.

Usage: ``python scripts/bench/storage.py [--json] [--size-mib N] [--repeat R] [--hosts H]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import storage_primitives
from _report import emit

from chain.core.aio import stop_tasks
from chain.core.events import Transfer
from chain.core.keys import KeyPair
from chain.core.params import COIN, REGTEST
from storage_market import retrieve
from storage_market.chainclient import Signer
from storage_market.host import HostAgent, HostPolicy
from storage_market.httpclient import HttpChain
from storage_market.inprocess import InProcessChain, serve_api
from storage_market.owner import OwnerAgent, StoreOptions

HOST_PLACEMENTS = {
    "process": "in one process of their own, reaching the chain through the node API",
    "processes": "each in its own `blockcoin host start` process, through the node API",
    "inline": "in the owner's process, on its event loop",
}


async def _miner(chain: InProcessChain) -> None:
    """Mine as soon as something is pending: the bench measures the market, not block time."""
    while True:
        if len(chain.node.mempool):
            chain.node.mine_block()
        await asyncio.sleep(0.002)


def _write_durably(path: Path, data: bytes | bytearray) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view.nbytes:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def host_keys(root: Path, count: int) -> list[KeyPair]:
    """Each host's key, where ``blockcoin host start`` looks for it (made on first use)."""
    keys = []
    for i in range(count):
        path = root / f"host{i}" / "host" / "host.key"
        if not path.exists():
            KeyPair.generate().save(path)
        keys.append(KeyPair.load(path))
    return keys


async def fund(chain: InProcessChain, keys: list[KeyPair]) -> None:
    """Coin for each host key (it announces itself and locks collateral), mined at once."""
    bank = Signer(KeyPair.development(1))
    for key in keys:
        await bank.submit(chain, Transfer(key.principal, 10 * COIN))
    await chain.mine()


async def start_hosts(root: Path, api: str, token: str, count: int) -> list[subprocess.Popen[str]]:
    """``count`` host processes; returns once each has announced its address."""
    procs = []
    for i in range(count):
        cmd = [sys.executable, "-m", "chain", "host", "start", "--network", "regtest",
               "--datadir", str(root / f"host{i}"), "--api", api, "--token", token,
               "--capacity", "2G", "--json"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    for p in procs:
        assert p.stdout is not None
        line = await asyncio.to_thread(p.stdout.readline)
        if not line:
            raise SystemExit("a host process failed to start")
    return procs


async def serve_hosts(root: Path, api: str, token: str, count: int) -> None:
    """Run ``count`` host agents in this process against the node API at ``api``; print one
    line once they have all announced, and stop when stdin closes (the bench went away)."""
    chain = HttpChain(api, REGTEST, token)
    agents = [HostAgent(root / f"host{i}", key, chain, HostPolicy(capacity=1 << 31))
              for i, key in enumerate(host_keys(root, count))]
    try:
        for agent in agents:
            await agent.start()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)
    finally:
        for agent in agents:
            await agent.stop()
        await chain.close()


def start_host_group(root: Path, api: str, token: str, count: int) -> subprocess.Popen[str]:
    """One process holding ``count`` hosts (see :func:`serve_hosts`); returns once ready."""
    cmd = [sys.executable, __file__, "--serve-hosts", str(count), "--root", str(root),
           "--api", api, "--token", token]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit("the host process failed to start")
    return proc


def stop_hosts(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def market_run(root: Path, size: int, hosts_at: str = "inline") -> dict[str, Any]:
    chain = InProcessChain.open(root / "node", REGTEST)
    token = secrets.token_hex(16)
    runner, api = await serve_api(chain, token)
    owner_key = KeyPair.development(0)
    owner = OwnerAgent(root / "owner", Signer(owner_key), chain,
                       defaults=StoreOptions(periods=2, period_blocks=100_000, offer_ttl=1000))
    miner: asyncio.Task[None] | None = None
    hosts: list[subprocess.Popen[str]] = []
    keys = host_keys(root, 5)
    agents = [HostAgent(root / f"host{i}", key, chain, HostPolicy(capacity=1 << 31))
              for i, key in enumerate(keys if hosts_at == "inline" else [])]
    try:
        await fund(chain, keys)
        miner = asyncio.ensure_future(_miner(chain))
        if hosts_at == "processes":
            hosts = await start_hosts(root, api, token, 5)
        elif hosts_at == "process":
            hosts = [await asyncio.to_thread(start_host_group, root, api, token, 5)]
        for agent in agents:
            await agent.start()
        await owner.start()
        await chain.wait_for_block(await chain.tip_height(), 5)
        src = root / "input.bin"
        _write_durably(src, os.urandom(size))
        path = owner_key.principal.root_path + "/bench/input.bin"

        start = time.perf_counter()
        with src.open("rb") as data:  # as `blockcoin store put` does: sealed as it is read
            await owner.put(path, data)
        if not await owner.wait_placed(path, 300):
            raise SystemExit("put: not every fragment was placed")
        put_s = time.perf_counter() - start

        out = root / "output.bin"
        Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
        before = _vm_kib("VmRSS")
        start = time.perf_counter()
        await retrieve.get_to_file(chain, owner_key, path, out)  # as `blockcoin store get` does
        get_s = time.perf_counter() - start
        added = _vm_kib("VmHWM") - before
        if out.read_bytes() != src.read_bytes():
            raise SystemExit("get: the file came back different")
        return {"put_seconds": put_s, "get_seconds": get_s, "get_added_kib": added,
                "fragment_bytes_sent": owner.sent_bytes}
    finally:
        await asyncio.to_thread(stop_hosts, hosts)
        for agent in agents:
            await agent.stop()
        await stop_tasks(miner)
        await owner.stop()
        await runner.cleanup()
        await chain.close()


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def put_rss_child(root: Path, size: int, api: str, token: str) -> dict[str, Any]:
    """In a process of its own, as ``blockcoin store put`` runs beside a node: the owner's peak
    memory over a put of a ``size``-byte file (sealed, erasure-coded, hashed, kept durably and
    offered; no host fetches, so no serving)."""
    from storage_market import sha256x

    chain = HttpChain(api, REGTEST, token)
    owner_key = KeyPair.development(0)
    owner = OwnerAgent(root / "owner", Signer(owner_key), chain,
                       defaults=StoreOptions(periods=2, period_blocks=100_000, offer_ttl=1000))
    path = owner_key.principal.root_path + "/bench/rss.bin"
    try:
        sha256x.load()
        await owner.start()
        src = root / "input.bin"
        with src.open("wb") as fh:
            for _ in range(size >> 20):
                fh.write(os.urandom(1 << 20))
        baseline = _vm_kib("VmRSS")
        with src.open("rb") as data:
            await owner.put(path, data)
        await owner.wait_placed(path, 0.1, 0)  # the durable record written too
        return {"baseline_kib": baseline, "peak_kib": _vm_kib("VmHWM"),
                "file_backed_kib": _vm_kib("RssFile")}
    finally:
        await owner.stop()
        await chain.close()


async def _put_rss(root: Path, size_mib: int) -> dict[str, int]:
    chain = InProcessChain.open(root / "node", REGTEST)
    token = secrets.token_hex(16)
    runner, api = await serve_api(chain, token)
    miner = asyncio.ensure_future(_miner(chain))
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--put-rss-child", str(size_mib), "--root", str(root),
            "--api", api, "--token", token, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        if proc.returncode:
            raise SystemExit(f"the put's process failed ({proc.returncode})")
        found: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
        return found
    finally:
        await stop_tasks(miner)
        await runner.cleanup()
        await chain.close()


def measure_put_rss(size_mib: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-put-rss-") as tmp:
        found = asyncio.run(_put_rss(Path(tmp), size_mib))
    size_mb = (size_mib << 20) / 1e6
    peak_mb = found["peak_kib"] * 1024 / 1e6
    shared_mb = found["file_backed_kib"] * 1024 / 1e6
    return {"put_rss_file_mb": round(size_mb, 1),
            "put_peak_rss_mb": round(peak_mb, 1),
            "put_baseline_rss_mb": round(found["baseline_kib"] * 1024 / 1e6, 1),
            "put_file_backed_mb": round(shared_mb, 1),
            "put_rss_ratio": round(peak_mb / size_mb, 2),
            "put_added_mb": round(peak_mb - found["baseline_kib"] * 1024 / 1e6, 1),
            "put_private_ratio": round((peak_mb - shared_mb) / size_mb, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--size-mib", type=int, default=64, help="file size (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs (best is kept)")
    parser.add_argument("--hosts", choices=HOST_PLACEMENTS, default="inline",
                        help="where the five hosts run: " + "; ".join(
                            f"{k}: {v}" for k, v in HOST_PLACEMENTS.items()))
    parser.add_argument("--rss-mib", type=int, default=100,
                        help="file size for the owner's peak-memory measurement (default 100)")
    parser.add_argument("--put-rss-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-hosts", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.put_rss_child:
        print(json.dumps(asyncio.run(put_rss_child(args.root, args.put_rss_child << 20,
                                                   args.api, args.token))))
        return
    if args.serve_hosts:
        asyncio.run(serve_hosts(args.root, args.api, args.token, args.serve_hosts))
        return
    size = args.size_mib << 20
    mb = size / 1e6
    best: dict[str, float] = {}
    stages: dict[str, float] | None = None
    repeat = max(1, args.repeat)
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
            run = asyncio.run(market_run(Path(tmp), size, args.hosts))
        for key in ("put_seconds", "get_seconds"):
            best[key] = min(best.get(key, float("inf")), run[key])
        best["get_added_kib"] = max(best.get("get_added_kib", 0), run["get_added_kib"])
        # a round of the ceiling after each round of the market, so both see the same load
        # (other work on the machine comes and goes); each keeps its best round
        stages = storage_primitives.stage_times(size, 1, 20_000, stages)
    assert stages is not None
    ceiling = storage_primitives.summarize(size, stages, 20_000, f"best of {repeat}")
    put_mb_s = mb / best["put_seconds"]
    get_mb_s = mb / best["get_seconds"]
    result = {
        "bench": "storage",
        "size_bytes": size,
        "code": "3-of-5",
        "hosts": 5,
        "method": f"best of {max(1, args.repeat)}; owner and regtest chain in one process, "
                  f"hosts {HOST_PLACEMENTS[args.hosts]}, loopback TCP + Noise",
        "put_seconds": round(best["put_seconds"], 3),
        "get_seconds": round(best["get_seconds"], 3),
        "put_mb_s": round(put_mb_s, 1),
        "get_mb_s": round(get_mb_s, 1),
        "ceiling_mb_s": ceiling["ceiling_put_mb_s"],
        "ceiling_get_mb_s": ceiling["ceiling_get_mb_s"],
        "put_ratio": round(put_mb_s / ceiling["ceiling_put_mb_s"], 3),
        "get_ratio": round(get_mb_s / ceiling["ceiling_get_mb_s"], 3),
        "get_added_mb": round(best["get_added_kib"] * 1024 / 1e6, 1),
        "proof_verify_per_s": ceiling["proof_verify_per_s"],
        **measure_put_rss(args.rss_mib),
        "cpus": os.cpu_count(),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
