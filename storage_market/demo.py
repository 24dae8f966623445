"""``blockcoin demo``: the storage market's whole story on loopback, in about half a minute.

A regtest mining node, five hosts and an owner, each with its own key and data directory in a
scratch directory, talking over real TCP sockets and the Noise channel:

1. the node mines; the hosts and the owner announce their addresses on chain;
2. the owner stores a file (3-of-5): five offers, five hosts fetch one fragment each, check
   its Merkle root and sign receipts; the owner publishes them;
3. challenge periods run: each period the owner challenges every host, verifies the leaves
   against the roots on chain and signs vouchers; the hosts claim them on chain;
4. two hosts are stopped; the file comes back byte-identical from the remaining three;
5. the hosts' earnings are read from ``/global/principals``.

The node runs in the demo's process (the :class:`~storage_market.inprocess.InProcessChain`,
mined every ``block_seconds``); each agent is exactly what ``blockcoin host start`` and
``blockcoin store`` run. ``--json`` prints one JSON object at the end with ``stored_fragments``,
``recovered_identical``, ``payments_made`` and ``hosts_stopped`` among its fields.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chain.keys import KeyPair
from chain.params import REGTEST
from storage_market import retrieve
from storage_market.chainclient import Signer
from storage_market.host import HostAgent, HostPolicy
from storage_market.inprocess import InProcessChain
from storage_market.owner import OwnerAgent, StoreOptions

Say = Callable[[str], None]


async def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def run_demo(workdir: Path, say: Say, *, size: int = 1 << 20, periods: int = 3,
                   hosts: int = 5, stop: int = 2, block_seconds: float = 0.2) -> dict[str, Any]:
    """Run the story in ``workdir``; the summary as a dict."""
    started = time.monotonic()
    chain = InProcessChain.open(workdir / "miner", REGTEST)
    owner_key = KeyPair.development(0)
    agents: list[HostAgent] = []
    owner: OwnerAgent | None = None
    try:
        say(f"mining node: regtest chain in {workdir / 'miner'}, a block every {block_seconds:g} s")
        for i in range(hosts):
            agent = HostAgent(workdir / f"host{i + 1}", KeyPair.generate(), chain,
                              HostPolicy(capacity=64 << 20, min_price=1))
            await agent.start()
            agents.append(agent)
            say(f"host {i + 1}: {agent.principal} on {agent.address}, selling 64 MiB")
        owner = OwnerAgent(workdir / "owner", Signer(owner_key), chain,
                           defaults=StoreOptions(periods=periods + 3, price=100_000))
        await owner.start()
        say(f"owner: {owner_key.principal} on {owner.address}")
        await chain.mine()
        chain.start_mining(block_seconds)

        data = os.urandom(size)
        path = owner_key.principal.root_path + "/demo/file.bin"
        say(f"put {size} bytes at {path} (3-of-5, encrypted, Merkle roots on chain)")
        entry = await owner.put(path, data)
        if not await owner.wait_placed(path, 60):
            raise TimeoutError("not every fragment was placed")
        placement = await chain.fragments(path)
        names = {a.principal: f"host {i + 1}" for i, a in enumerate(agents)}
        for index in sorted(placement):
            for h in placement[index]:
                say(f"  fragment {index} ({h.size} bytes, root {h.root.hex()[:16]}) "
                    f"-> {names.get(h.host, str(h.host))} at {h.address}")

        say(f"running {periods} challenge periods of {entry.period_blocks} blocks")
        last = 0
        deadline = 30 + periods * entry.period_blocks * block_seconds * 3

        def paid_periods() -> int:
            return min(len(s.vouchers) for s in entry.slots)

        loop_end = time.monotonic() + deadline
        while paid_periods() < periods and time.monotonic() < loop_end:
            await asyncio.sleep(0.1)
            done = paid_periods()
            if done > last:
                last = done
                say(f"  period {done - 1}: {entry.n} challenges passed, {entry.n} vouchers signed")
        await _until(lambda: sum(a.status()["earned"] for a in agents)
                     >= periods * entry.n * entry.price, 30, "payments on chain")
        payments = 0
        for a in agents:
            payments += sum(c.paid_periods for c in await chain.contracts_by_host(a.principal))
        say(f"  {payments} storage payments confirmed on chain")

        stopped = agents[:stop]
        for a in stopped:
            await a.stop()
            say(f"stopped {names[a.principal]} ({a.principal})")
        errors: list[str] = []
        got = await retrieve.get(chain, owner_key, path, errors=errors)
        identical = bytes(got) == data
        say(f"get {path}: {len(got)} bytes, "
            f"{'byte-identical' if identical else 'DIFFERENT'} "
            f"(sha256 {hashlib.sha256(got).hexdigest()[:16]}), "
            f"{len(errors)} unreachable holders skipped")

        earnings = []
        for i, a in enumerate(agents):
            acct = await chain.principal(a.principal)
            balance = acct.balance if acct else 0
            earnings.append({"host": str(a.principal), "balance": balance,
                             "stopped": a in stopped})
            say(f"host {i + 1}: balance {balance} base units"
                + (" (stopped)" if a in stopped else ""))
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
        for a in agents:
            await a.stop()
        if owner is not None:
            await owner.stop()
        await chain.close()
