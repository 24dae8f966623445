"""``blockcoin demo``: the storage market's whole story on loopback, in about half a minute.

A regtest mining node, five hosts and an owner, each with its own key and data directory in a
scratch directory, talking over real TCP sockets and the Noise channel. The hosts are separate
processes (``blockcoin host start``); the mining node and the owner run in the demo's process:

1. the node mines; the hosts and the owner announce their addresses on chain;
2. the owner stores a file (3-of-5): five offers, five hosts fetch one fragment each, check
   its Merkle root and sign receipts; the owner publishes them;
3. challenge periods run: each period the owner challenges every host, verifies the leaves
   against the roots on chain and signs vouchers; the hosts claim them on chain;
4. two hosts are stopped; the file comes back byte-identical from the remaining three;
5. the hosts' earnings are read from ``/global/principals``.

The node is an :class:`~storage_market.inprocess.InProcessChain` mined every ``block_seconds``,
whose API (the node API's shape, :func:`~storage_market.inprocess.serve_api`) the host processes
use; the owner is exactly what ``blockcoin store`` runs. Each host's log is kept in
``<workdir>/hostN.log``. ``--json`` prints one JSON object at the end with ``stored_fragments``,
``recovered_identical``, ``payments_made`` and ``hosts_stopped`` among its fields.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chain.keys import KeyPair
from chain.params import REGTEST
from chain.principal import Principal
from storage_market import retrieve
from storage_market.chainclient import Signer
from storage_market.inprocess import InProcessChain, serve_api
from storage_market.owner import OwnerAgent, StoreOptions

Say = Callable[[str], None]


async def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo timed out waiting for {what}")
        await asyncio.sleep(0.05)


class HostProcess:
    """One ``blockcoin host start`` process and what it announced."""

    def __init__(self, number: int, workdir: Path, api: str, token: str) -> None:
        self.number = number
        self.datadir = workdir / f"host{number}"
        self.log = (workdir / f"host{number}.log").open("w")
        cmd = [sys.executable, "-m", "chain", "host", "start", "--network", "regtest",
               "--datadir", str(self.datadir), "--api", api, "--token", token,
               "--capacity", "64M", "--min-price", "1sat", "--json"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.principal: Principal | None = None
        self.address = ""

    async def ready(self, timeout: float = 60.0) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not line:
            raise RuntimeError(f"host {self.number} failed to start (see {self.log.name})")
        info = json.loads(line)
        self.principal = Principal.parse(info["host"])
        self.address = info["address"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def run_demo(workdir: Path, say: Say, *, size: int = 1 << 20, periods: int = 3,
                   hosts: int = 5, stop: int = 2, block_seconds: float = 0.25) -> dict[str, Any]:
    """Run the story in ``workdir``; the summary as a dict."""
    started = time.monotonic()
    chain = InProcessChain.open(workdir / "miner", REGTEST)
    token = secrets.token_hex(16)
    runner, api = await serve_api(chain, token)
    owner_key = KeyPair.development(0)
    procs: list[HostProcess] = []
    owner: OwnerAgent | None = None
    try:
        say(f"mining node: regtest chain in {workdir / 'miner'}, a block every "
            f"{block_seconds:g} s, API {api}")
        chain.start_mining(block_seconds)
        procs = [HostProcess(i + 1, workdir, api, token) for i in range(hosts)]
        for p in procs:
            await p.ready()
            say(f"host {p.number}: {p.principal} on {p.address}, selling 64 MiB (pid {p.proc.pid})")
        owner = OwnerAgent(workdir / "owner", Signer(owner_key), chain,
                           defaults=StoreOptions(periods=periods + 3, price=100_000))
        await owner.start()
        say(f"owner: {owner_key.principal} on {owner.address}")
        await chain.wait_for_block(await chain.tip_height(), 5)

        data = os.urandom(size)
        path = owner_key.principal.root_path + "/demo/file.bin"
        say(f"put {size} bytes at {path} (3-of-5, encrypted, Merkle roots on chain)")
        entry = await owner.put(path, data)
        if not await owner.wait_placed(path, 60):
            raise TimeoutError("not every fragment was placed")
        placement = await chain.fragments(path)
        names = {p.principal: f"host {p.number}" for p in procs}
        for index in sorted(placement):
            for h in placement[index]:
                say(f"  fragment {index} ({h.size} bytes, root {h.root.hex()[:16]}) "
                    f"-> {names.get(h.host, str(h.host))} at {h.address}")

        say(f"running {periods} challenge periods of {entry.period_blocks} blocks")
        last = 0

        def paid_periods() -> int:
            return min(len(s.vouchers) for s in entry.slots)

        loop_end = time.monotonic() + 30 + periods * entry.period_blocks * block_seconds * 3
        while paid_periods() < periods and time.monotonic() < loop_end:
            await asyncio.sleep(0.1)
            done = paid_periods()
            if done > last:
                last = done
                say(f"  period {done - 1}: {entry.n} challenges passed, {entry.n} vouchers signed")

        async def confirmed() -> int:
            total = 0
            for p in procs:
                assert p.principal is not None
                total += sum(c.paid_periods for c in await chain.contracts_by_host(p.principal))
            return total

        deadline = time.monotonic() + 30
        payments = await confirmed()
        while payments < periods * entry.n and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            payments = await confirmed()
        say(f"  {payments} storage payments confirmed on chain")

        stopped = procs[:stop]
        for p in stopped:
            await asyncio.to_thread(p.stop)
            say(f"stopped host {p.number} ({p.principal})")
        errors: list[str] = []
        got = await retrieve.get(chain, owner_key, path, errors=errors)
        identical = bytes(got) == data
        say(f"get {path}: {len(got)} bytes, "
            f"{'byte-identical' if identical else 'DIFFERENT'} "
            f"(sha256 {hashlib.sha256(got).hexdigest()[:16]}), "
            f"{len(errors)} unreachable holders skipped")

        earnings = []
        for p in procs:
            assert p.principal is not None
            acct = await chain.principal(p.principal)
            balance = acct.balance if acct else 0
            earnings.append({"host": str(p.principal), "balance": balance,
                             "stopped": p in stopped})
            say(f"host {p.number}: earned {balance} base units"
                + (" (stopped)" if p in stopped else ""))
        return {
            "stored_fragments": sum(len(hs) for hs in placement.values()),
            "recovered_identical": identical,
            "payments_made": payments,
            "hosts_stopped": len(stopped),
            "periods": periods,
            "path": path,
            "size": size,
            "k": entry.k,
            "n": entry.n,
            "height": await chain.tip_height(),
            "hosts": earnings,
            "seconds": round(time.monotonic() - started, 2),
        }
    finally:
        for p in procs:
            await asyncio.to_thread(p.stop)
        if owner is not None:
            await owner.stop()
        await runner.cleanup()
        await chain.close()
