"""A storage devnet for the dashboard's tests and benchmark: one real node on 127.0.0.1 that has
mined, stored, proven and missed.

- the node (development key 1), not mining by itself: a thread mines a block every
  ``interval`` seconds through ``POST /mine`` while the market is set up, and stops, so the chain
  stands still while a test compares the page with the API (:meth:`MarketNet.mine` adds a block
  on demand; :meth:`MarketNet.paced_mining` mines each block once an agent in the test's
  process has acted on the one before);
- two host agents, ``blockcoin host start``: the node's own (``n/host``) and a second one in
  its own directory (development key 3) using the same node;
- an owner (development key 2, directory ``o``) storing a file 1-of-2 through the node; the
  node's host pays its earnings to that owner, so the owner's liabilities meet the same
  principal's host earnings (the owner is not the node's wallet: a node announces its own p2p
  address under its wallet, where hosts would look for the owner's storage listener);
- both hosts prove a period; then the second host stops, and misses.

On demand (:meth:`MarketNet.start_owner`), an owner agent on the node's own data directory
(``blockcoin store serve``): the node's wallet then owns, and the dashboard's put and extend act
through it; the node leaves the wallet's published address to that agent, so hosts reach it.

Every wait is bounded; every process is stopped on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from chain.core.aio import stop_tasks
from chain.core.keys import KeyPair
from chain.core.principal import Principal
from chain.net.http import ApiClient, AsyncApiClient
from tests.framework.agentproc import ready_line, stop
from tests.framework.clirun import blockcoin
from tests.framework.netkit import ROOT, NodeProc, init_node_dir, wait_until

SETUP_TIMEOUT = 120.0
#: Seconds :meth:`MarketNet.paced_mining` waits at most for an agent before the next block.
PACE_WAIT = 10.0


def spawn_logged(log: Path, *args: str) -> subprocess.Popen[str]:
    """A long-running agent whose first stdout line is its --json ready line (its stderr goes
    to ``log``)."""
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "chain", *args, "--json"], cwd=ROOT,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                stdout=subprocess.PIPE, stderr=err, text=True)


class MarketNet:
    def __init__(self, root: Path, interval: float = 0.25) -> None:
        self.root = root
        self.interval = interval
        self.node = NodeProc(init_node_dir(root / "n", 1), "--no-discover", name="n")
        self.agents: list[subprocess.Popen[str]] = []
        self._halt = threading.Event()
        self._miner_failed: Exception | None = None
        self._miner: threading.Thread | None = None
        self.host: dict[str, Any] = {}
        self.other_host: dict[str, Any] = {}
        self.path = ""
        self.owner: Principal | None = None
        self.owner_agent: subprocess.Popen[str] | None = None
        self.owner_info: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.node.api_port}"

    @property
    def token(self) -> str:
        return (self.node.datadir / "api.cookie").read_text().strip()

    def get(self, path: str) -> Any:
        if self._miner_failed is not None:  # the waits that poll through here fail at once
            raise AssertionError(f"the miner stopped: {self._miner_failed!r}")
        return self.node.get(path)

    def mine(self, blocks: int = 1) -> int:
        return int(self.node.post("/mine", {"blocks": blocks})["height"])

    def _mine_loop(self) -> None:
        try:
            # the first block compiles the miner's kernel: over 30 s on a loaded machine
            with ApiClient(self.url, self.token, timeout=SETUP_TIMEOUT) as client:
                while not self._halt.wait(self.interval):
                    client.post("/mine", {"blocks": 1})
        except Exception as exc:
            self._miner_failed = exc

    def start_mining(self) -> None:
        self._halt.clear()
        self._miner = threading.Thread(target=self._mine_loop, daemon=True)
        self._miner.start()

    def stop_mining(self) -> None:
        self._halt.set()
        if self._miner is not None:
            self._miner.join(30)
            self._miner = None

    @contextlib.contextmanager
    def mining(self) -> Iterator[None]:
        """Blocks every ``interval`` seconds for the duration (the chain stands still after)."""
        self.start_mining()
        try:
            yield
        finally:
            self.stop_mining()

    @contextlib.asynccontextmanager
    async def paced_mining(self, ready: Callable[[int], bool],
                           max_wait: float = PACE_WAIT) -> AsyncIterator[None]:
        """For the duration, a block every ``interval`` seconds from the running event loop
        instead of the thread, each also waiting (at most ``max_wait`` seconds) until
        ``ready(height)`` holds for the block before it: a test lets an agent of its own
        process act on a tip before the next block, as the minutes between real blocks let it,
        instead of racing the miner on a busy machine. The thread mines again after if it
        did before."""
        was_mining = self._miner is not None
        self.stop_mining()
        api = AsyncApiClient(self.url, self.token, timeout=SETUP_TIMEOUT)

        async def mine() -> None:
            clock = asyncio.get_running_loop().time
            try:
                while True:
                    await asyncio.sleep(self.interval)
                    mined = await api.request("POST", "/mine", {"blocks": 1}, auth=True)
                    height = int(mined["height"])
                    deadline = clock() + max_wait
                    while not ready(height) and clock() < deadline:
                        await asyncio.sleep(0.01)
            except Exception as exc:
                self._miner_failed = exc

        task = asyncio.get_running_loop().create_task(mine())
        try:
            yield
        finally:
            await stop_tasks(task)
            await api.close()
            if was_mining:
                self.start_mining()

    def start_owner(self) -> dict[str, Any]:
        """``blockcoin store serve`` on the node's data directory, once its address is the
        wallet's on chain (where hosts look for the owner of an offer); its ready line."""
        if self.owner_agent is not None and self.owner_agent.poll() is None:
            return self.owner_info
        log = self.root / "owner.err"
        self.owner_agent = spawn_logged(log, "store", "serve", "-n", "regtest", "-d",
                                  str(self.node.datadir))
        self.owner_info = ready_line(self.owner_agent, log)
        wallet = self.node.principal
        with self.mining():
            wait_until(lambda: self.get(f"/global/principals/{wallet}").get("address")
                       == self.owner_info["address"], SETUP_TIMEOUT,
                       "the owner agent's address under the wallet on chain")
        return self.owner_info

    def stop_owner(self) -> None:
        if self.owner_agent is not None:
            stop(self.owner_agent)
            self.owner_agent = None

    def record(self, host: str) -> dict[str, Any]:
        found: dict[str, Any] = self.get(f"/global/principals/{host}").get("host") or {}
        return found

    def setup(self) -> None:
        """Mine, store, prove and miss (see the module's docstring)."""
        self.node.start()
        self.start_mining()
        home = str(self.node.datadir)
        # the node announces its address with its wallet, which funds the host keys too: once
        # the announcement is mined, the funding transfers cannot race it for a nonce
        wallet = self.node.principal
        wait_until(lambda: bool(self.get(f"/global/principals/{wallet}").get("address")),
                   SETUP_TIMEOUT, "the node's own address on chain")
        owner_dir = init_node_dir(self.root / "o", 2)
        self.owner = KeyPair.development(2).principal
        logs = (self.root / "host1.err", self.root / "host2.err")
        first = spawn_logged(logs[0], "host", "start", "-n", "regtest", "-d", home, "--capacity", "1M",
                       "--fund", "5", "--payout", str(self.owner))
        self.agents.append(first)
        self.host = ready_line(first, logs[0])
        other_dir = init_node_dir(self.root / "h2", 3)
        second = spawn_logged(logs[1], "host", "start", "-n", "regtest", "-d", str(other_dir),
                        "--node", home, "--capacity", "1M", "--fund", "5")
        self.agents.append(second)
        self.other_host = ready_line(second, logs[1])
        for info in (self.host, self.other_host):
            wait_until(lambda info=info: bool(self.get(
                f"/global/principals/{info['host']}").get("address")), SETUP_TIMEOUT,
                "the hosts' addresses on chain")
        src = self.root / "file.bin"
        src.write_bytes(os.urandom(20_000))
        put = blockcoin("store", "put", str(src), "file.bin", "--k", "1", "--n", "2",
                        "--periods", "40", "--yes", "--json", "-n", "regtest", "-d",
                        str(owner_dir), "--node", home)
        assert put.code == 0, put.err
        self.path = str(json.loads(put.out)["path"])
        hosts = (self.host["host"], self.other_host["host"])
        wait_until(lambda: all(self.record(h).get("proven_periods", 0) >= 1 for h in hosts),
                   SETUP_TIMEOUT, "both hosts' first proofs")
        stop(second)
        wait_until(lambda: self.record(hosts[1]).get("missed_periods", 0) >= 1, SETUP_TIMEOUT,
                   "the stopped host's miss")
        self.stop_mining()

    def close(self) -> None:
        self.stop_mining()
        self.stop_owner()
        for agent in self.agents:
            stop(agent)
        self.node.stop()


@contextlib.contextmanager
def market_net(root: Path, interval: float = 0.25) -> Iterator[MarketNet]:
    net = MarketNet(root, interval)
    try:
        net.setup()
        yield net
    except BaseException:
        sys.stderr.write(f"\n===== node log (its end) =====\n{net.node.log()[-5000:]}\n")
        raise
    finally:
        net.close()
