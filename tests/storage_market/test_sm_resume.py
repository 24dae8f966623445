"""An interrupted ``store put`` run again finishes, whatever was already offered, placed or lost.

``blockcoin store put`` runs as a real process against a chain's HTTP API, with five hosts
around the chain; it is killed (SIGKILL) at a different point each round: before it has done
anything, once its offers are out, while hosts hold some fragments, and after every fragment is
placed. Run again, it must complete, and the file must come back byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chain.core.events import Transfer
from chain.core.keys import KeyPair
from chain.core.params import COIN
from storage_market import retrieve
from storage_market.chainclient import Signer
from storage_market.host import PENDING, HostAgent, HostPolicy
from storage_market.inprocess import InProcessChain, serve_api

ROOT = Path(__file__).resolve().parents[2]
OWNER = KeyPair.development(0)  # what `init --dev-key 0` gives the owner's datadir


async def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_an_interrupted_put_run_again_finishes_and_the_file_comes_back(
        tmp_path: Path) -> None:
    chain = InProcessChain.open(tmp_path / "node")
    token = secrets.token_hex(8)
    runner, url = await serve_api(chain, token)
    bank = Signer(KeyPair.development(1))
    keys = [KeyPair.generate() for _ in range(5)]
    for key in keys:
        await bank.submit(chain, Transfer(key.principal, 10 * COIN))
    await chain.mine()
    hosts = [HostAgent(tmp_path / f"h{i}", key, chain, HostPolicy(1 << 30))
             for i, key in enumerate(keys)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    owner_dir = tmp_path / "owner"

    def put(src: Path, path: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "chain", "store", "put", str(src), path, "--periods", "60",
             "--wait", "120", "--datadir", str(owner_dir), "--json", "--yes", "--network", "regtest",
             "--api", url, "--token", token],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def owned() -> list[object]:
        return chain.node.chain.tree.contracts_by_owner(OWNER.principal)  # type: ignore[return-value]

    def pending_offers() -> int:
        return sum(1 for e in chain.node.mempool.entries.values()
                   if type(e.event.body).__name__ == "FragmentOffer")

    try:
        for h in hosts:
            await h.start()
        await chain.mine()
        chain.start_mining(0.1, ready=lambda: all(
            h.stepped >= chain.node.chain.tip.height for h in hosts))
        init = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "chain", "init", "--network", "regtest", "--datadir",
            str(owner_dir), "--dev-key", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert init.returncode == 0, init.stderr
        # where each round kills the first run: a condition on what it has done so far
        points: list[tuple[str, Callable[[], bool]]] = [
            ("before it did anything", lambda: True),
            ("once its offers were out", lambda: pending_offers() > 0),
            ("while hosts held some fragments",
             lambda: any(c.status == PENDING for h in hosts for c in h.contracts.values())),
            ("after every fragment was placed", lambda: False),  # it may finish: then rerun
        ]
        for r, (point, reached) in enumerate(points):
            src = tmp_path / f"in{r}.bin"
            src.write_bytes(os.urandom(1_500_000 + r))
            path = f"notes/{r}.bin"
            before = len(owned())
            first = put(src, path)
            if r == len(points) - 1:
                def placed(first: subprocess.Popen[str] = first, before: int = before) -> bool:
                    active = sum(c.state.name == "ACTIVE" for c in owned())  # type: ignore[attr-defined]
                    return active >= before + 5 or first.poll() is not None

                await _until(placed, 60, "the first run to place the file")
            else:
                def killable(first: subprocess.Popen[str] = first,
                             reached: Callable[[], bool] = reached) -> bool:
                    return reached() or first.poll() is not None

                await _until(killable, 60, point)
                assert first.poll() is None, f"the first run ended before it was killed {point}"
            first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, 30)
            assert first.stdout is not None and first.stderr is not None
            first.stdout.close()
            first.stderr.close()
            again = put(src, path)
            out, err = await asyncio.to_thread(again.communicate, timeout=180)
            assert again.returncode == 0, f"rerun after a kill {point}: {err[-2000:]}"
            result = json.loads(out)
            assert result["placed"] == result["n"] == 5, result
            full = OWNER.principal.root_path + "/" + path
            got = await retrieve.get(chain, OWNER, full)
            assert bytes(got) == src.read_bytes(), f"the file put again after a kill {point}"
            # nothing of the killed run is left on disk: no unfinished record, no parity
            store = owner_dir / "store"
            assert not list((store / "blocks").glob("*/.*.tmp")), point
            assert not list((store / "parity").glob("*")), point
    finally:
        await chain.stop_mining()
        for h in hosts:
            await h.stop()
        await runner.cleanup()
        await chain.close()
