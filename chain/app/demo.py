"""``blockcoin demo``: the storage market's whole story on a loopback network of real nodes.

Every participant is a real process with its own key and data directory under one scratch
directory, on 127.0.0.1 ports picked free at start:

- a mining node, ``blockcoin node --mine`` (development key 0), a block every ``mine_interval``
  seconds;
- five host nodes (development keys 1-5) and an owner node (key 6), each a ``blockcoin node``
  dialling the miner over p2p; discovery is off, so the network is a star and every event and
  block between two of them crosses a real p2p link through the miner;
- five host agents, ``blockcoin host start --node hostN``, each talking to its own host node's
  HTTP API, each with its own key (``hostN/host/host.key``) and fragment store;
- the owner agent, in this process, talking to the owner node's API through
  :class:`~storage_market.httpclient.HttpChain`.

So every chain interaction crosses a node's API, and what one agent publishes reaches the
others only through p2p. The owner signs with development key 7 (funded at genesis, kept in
``owner/wallet.key``), not with its node's key: a node publishes its own p2p address under its
key in ``/global/principals``, where hosts must find the owner's storage listener instead.

The story: the owner funds the five host keys (a host locks collateral and pays fees); the
owner stores a file 3-of-5 (five offers escrow the pay, five hosts each fetch, check and sign
for one fragment, locking their collateral); the placement is read from ``/global/fragments``
as a host's node sees it; the owner agent then stops, and proof periods run with every host
publishing ``StorageProof`` events that the chain pays from escrow; two hosts are stopped (agent
and node); the file comes back byte-identical from the other three; the hosts' public records in
``/global/principals`` show what they proved and earned.

Each child runs in its own process group and logs to ``<workdir>/<name>.log``. Every wait is
bounded in time, and on the way out, whether the story ended, failed or was interrupted
(Ctrl-C, SIGTERM), every child is stopped with SIGTERM and, failing that, SIGKILL.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from chain.app.processes import blockcoin_command, free_port, node_command, signal_group
from chain.app.render import short
from chain.core.aio import stop_tasks
from chain.core.errors import BlockcoinError
from chain.core.events import Transfer
from chain.core.keys import KeyPair
from chain.core.params import REGTEST
from chain.core.principal import Principal
from chain.core.units import COIN, format_coins, format_size
from storage_market import retrieve
from storage_market.chainclient import ChainClient, ContractInfo, Signer
from storage_market.httpclient import HttpChain
from storage_market.owner import OwnerAgent, StoreOptions

Say = Callable[[str], None]
T = TypeVar("T")

MINER_KEY, OWNER_NODE_KEY, OWNER_KEY = 0, 6, 7  # regtest development keys; hosts use 1..5
START_TIMEOUT = 180.0  # a process until it serves: Python start-up on a loaded 2-core machine
# takes seconds, not minutes; a child that exits is reported at once, so this only bounds a hang
CHAIN_WAIT = 300.0  # something mined and relayed to every node (a few blocks, or a loaded machine)
EXTRA_PERIODS = 60  # contracts outlive the story: stopping hosts and reading back take blocks too
STOP_TIMEOUT = 10.0  # SIGTERM until SIGKILL
PORT_ATTEMPTS = 3  # a port picked free may be taken before the node binds it
HOST_FUNDS = 10 * COIN  # what the owner sends each host key: collateral and fees


class DemoError(BlockcoinError):
    """The demo could not tell its story (a process failed or a wait timed out)."""

    code = "demo"


async def until(probe: Callable[[], Awaitable[T | None]], timeout: float, what: str,
                interval: float = 0.1) -> T:
    """The first truthy result of ``probe``; :class:`DemoError` after ``timeout`` seconds.
    A probe that raises counts as not yet (a node may be starting or busy)."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            value = await probe()
        except (BlockcoinError, OSError, aiohttp.ClientError, ValueError, KeyError) as exc:
            value, last = None, f" (last: {type(exc).__name__}: {exc})"
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:g} s waiting for {what}{last}")
        await asyncio.sleep(interval)


# --- child processes ----------------------------------------------------------------------------

_LIVE: set[Child] = set()


def _kill_live() -> None:
    for child in list(_LIVE):
        child.kill()


atexit.register(_kill_live)  # last resort, e.g. after a second Ctrl-C during the cleanup


class Child:
    """A ``blockcoin`` subprocess in its own process group (so a terminal's Ctrl-C reaches the
    demo alone, which then stops its children in order), its output appended to a log file."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        self._drain: asyncio.Task[None] | None = None
        _LIVE.add(self)

    @classmethod
    async def start(cls, name: str, argv: list[str], log: Path, *, pipe: bool = False) -> Child:
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if pipe else out, stderr=out,
                start_new_session=True)
        return cls(name, proc, log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def first_line(self, timeout: float) -> str:
        """The first line the child prints; the rest of its output is read and dropped, so
        the pipe never fills."""
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise DemoError(f"{self.name} did not start within {timeout:g} s{self.tail()}") from None
        if not line:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
            raise DemoError(f"{self.name} exited with status {self.proc.returncode}{self.tail()}")

        async def drain(stream: asyncio.StreamReader) -> None:
            while await stream.read(1 << 16):
                pass

        self._drain = asyncio.ensure_future(drain(self.proc.stdout))
        return line.decode()

    def tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(errors="replace").rstrip().splitlines()[-lines:]
        except OSError:
            return ""
        return f"; last lines of {self.log}:\n" + "\n".join(text) if text else ""

    def _signal(self, sig: signal.Signals) -> None:
        if self.running:
            signal_group(self.proc.pid, sig)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the group, then SIGKILL if it has not exited within ``timeout``."""
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)
        if self._drain is not None:
            await stop_tasks(self._drain)
        if not self.running:
            _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL, without waiting: for when there is no event loop left to wait on."""
        self._signal(signal.SIGKILL)


# --- the network ----------------------------------------------------------------------------------


@dataclass
class Node:
    """A ``blockcoin node`` process and where it serves."""

    name: str
    datadir: Path
    dev_key: int
    p2p: str
    api: str
    child: Child

    @property
    def principal(self) -> Principal:
        return KeyPair.development(self.dev_key).principal

    @property
    def label(self) -> str:
        """``host3`` -> ``host 3 node``, ``owner-node`` -> ``owner node``."""
        if self.name.startswith("host"):
            return f"host {self.name[4:]} node"
        return self.name.replace("-", " ")

    def chain(self) -> HttpChain:
        """A client of this node's API (it reads the cookie token from the data directory)."""
        return HttpChain.for_datadir(self.datadir, REGTEST)


@dataclass
class Host:
    """A ``blockcoin host start`` process, the node it uses, and what it announced."""

    number: int
    node: Node
    child: Child
    principal: Principal
    address: str


@dataclass
class Network:
    """The demo's processes: started here, all stopped by :meth:`close` or :meth:`kill`."""

    workdir: Path
    nodes: list[Node] = field(default_factory=list)
    agents: list[Child] = field(default_factory=list)
    ports: set[int] = field(default_factory=set)
    _http: aiohttp.ClientSession | None = None

    async def status(self, node: Node) -> dict[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        async with self._http.get(node.api + "/status") as resp:
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data

    async def start_node(self, name: str, dev_key: int, *, mine_interval: float | None = None,
                         connect: Node | None = None) -> Node:
        """Start a regtest node with development key ``dev_key`` as its wallet (what
        ``blockcoin init --dev-key`` writes; the node creates the rest of the data directory)
        and wait until its API answers."""
        datadir = self.workdir / name
        datadir.mkdir(parents=True, exist_ok=True)
        if not (datadir / "wallet.key").exists():
            KeyPair.development(dev_key).save(datadir / "wallet.key")
        for attempt in range(PORT_ATTEMPTS):
            p2p = f"127.0.0.1:{free_port(self.ports)}"
            api = f"127.0.0.1:{free_port(self.ports)}"
            args = node_command(datadir, p2p, api, "--no-discover", "--threads", "1")
            if mine_interval is not None:
                args += ["--mine", "--mine-interval", f"{mine_interval:g}"]
            if connect is not None:
                args += ["--connect", f"{connect.principal}@{connect.p2p}"]
            child = await Child.start(name, args, self.workdir / f"{name}.log")
            node = Node(name, datadir, dev_key, p2p, f"http://{api}", child)
            self.nodes.append(node)

            async def serving(node: Node = node) -> bool:
                if not node.child.running:
                    return True
                if not (node.datadir / "node.json").exists():
                    return False
                return bool(await self.status(node))

            await until(serving, START_TIMEOUT, f"{name} to serve its API")
            if node.child.running:
                return node
            await node.child.stop()
            self.nodes.remove(node)
            if "cannot listen" not in node.child.tail() or attempt == PORT_ATTEMPTS - 1:
                raise DemoError(f"{name} exited with status {child.proc.returncode}"
                                f"{child.tail()}")
        raise AssertionError("unreachable")

    async def wait_connected(self, hub: Node, spokes: list[Node],
                             timeout: float = CHAIN_WAIT) -> int:
        """Until the hub has a p2p connection from every spoke and all share its tip."""

        async def connected() -> tuple[int] | None:  # a tuple: truthy even at height 0
            hub_status = await self.status(hub)
            if hub_status["peers"] < len(spokes):
                return None
            for node in spokes:
                s = await self.status(node)
                if s["peers"] < 1 or s["height"] < hub_status["height"] - 1:
                    return None
            return (int(hub_status["height"]),)

        found = await until(connected, timeout, f"{len(spokes)} nodes to connect to the miner")
        return found[0]

    async def start_host(self, number: int, node: Node, capacity: str) -> Host:
        """A host agent on ``node``'s data directory: it finds the node's API in node.json."""
        args = blockcoin_command("host", "start", "--network", "regtest", "--datadir",
                                 str(node.datadir), "--node", str(node.datadir), "--capacity",
                                 capacity, "--min-price", "1sat", "--json")
        child = await Child.start(f"host{number}-agent", args,
                                  self.workdir / f"host{number}-agent.log", pipe=True)
        self.agents.append(child)
        line = await child.first_line(START_TIMEOUT)
        try:
            info = json.loads(line)
            return Host(number, node, child, Principal.parse(info["host"]), str(info["address"]))
        except (ValueError, KeyError, TypeError, BlockcoinError) as exc:
            raise DemoError(f"host {number} started with {line!r} ({exc}){child.tail()}") from None

    async def stop_host(self, host: Host) -> None:
        """Stop the host agent, then its node."""
        await host.child.stop()
        await host.node.child.stop()

    async def close(self) -> None:
        """Stop every child: the host agents first (so they do not see their nodes vanish),
        then the nodes, each group at once."""
        await asyncio.gather(*(agent.stop() for agent in self.agents))
        await asyncio.gather(*(n.child.stop() for n in self.nodes))
        if self._http is not None:
            await self._http.close()
            self._http = None

    def kill(self) -> None:
        for child in self.agents + [n.child for n in self.nodes]:
            child.kill()


# --- the story ------------------------------------------------------------------------------------


async def fund_hosts(net: Network, host_nodes: list[Node], payer: Signer, chain: ChainClient,
                     view: HttpChain) -> None:
    """Create each host agent's key (where ``host start`` finds it) and send it coin, mined
    and seen by the hosts' side before the agents start: a host needs coin to announce itself
    and to lock collateral."""
    keys = []
    for node in host_nodes:
        path = node.datadir / "host" / "host.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            KeyPair.generate().save(path)
        keys.append(KeyPair.load(path))
    for key in keys:
        await payer.submit(chain, Transfer(key.principal, HOST_FUNDS))

    async def funded() -> bool:
        for key in keys:
            acct = await view.principal(key.principal)
            if acct is None or acct.balance < HOST_FUNDS:
                return False
        return True

    await until(funded, CHAIN_WAIT, "the hosts' funding to be mined")


async def run_demo(workdir: Path, say: Say, *, size: int = 1 << 20, periods: int = 3,
                   hosts: int = 5, stop: int = 2, mine_interval: float = 0.3) -> dict[str, Any]:
    """Run the story in ``workdir``; the summary as a dict. Every child process is stopped
    before this returns or raises, also when it is cancelled (Ctrl-C) or on SIGTERM/SIGHUP."""
    if not 0 < stop < hosts <= 5:
        raise DemoError("a demo has 2 to 5 hosts and stops at least one, not all")
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    handled = []
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, task.cancel)
            handled.append(sig)
    net = Network(workdir)
    try:
        return await _story(net, say, size, periods, hosts, stop, mine_interval)
    finally:
        try:
            await asyncio.shield(net.close())
        finally:
            net.kill()  # anything a second interruption kept close() from stopping
            for sig in handled:
                loop.remove_signal_handler(sig)


async def _story(net: Network, say: Say, size: int, periods: int, count: int, stop: int,
                 mine_interval: float) -> dict[str, Any]:
    started = time.monotonic()
    workdir = net.workdir

    say(f"== 1. A regtest network on loopback ({workdir})")
    miner = await net.start_node("miner", MINER_KEY, mine_interval=mine_interval)
    say(f"  miner       {short(miner.principal)}  api {miner.api}  mines a block every "
        f"{mine_interval:g} s")
    spokes = await asyncio.gather(
        *(net.start_node(f"host{i}", i, connect=miner) for i in range(1, count + 1)),
        net.start_node("owner-node", OWNER_NODE_KEY, connect=miner))
    for node in spokes:
        say(f"  {node.label:<11} {short(node.principal)}  api {node.api}")
    height = await net.wait_connected(miner, list(spokes))
    say(f"  {len(spokes)} nodes connected to the miner over p2p; tip at block {height}")
    host_nodes, owner_node = list(spokes[:count]), spokes[count]

    owner_key = KeyPair.development(OWNER_KEY)
    owner_dir = workdir / "owner"
    owner_dir.mkdir(exist_ok=True)
    if not (owner_dir / "wallet.key").exists():
        owner_key.save(owner_dir / "wallet.key")
    chain = owner_node.chain()
    view = host_nodes[-1].chain()  # a host that keeps running: the chain as p2p brought it
    contract_periods = periods + EXTRA_PERIODS
    owner = OwnerAgent(owner_dir, Signer(owner_key), chain,
                       defaults=StoreOptions(periods=contract_periods, price=100_000,
                                             collateral=50_000))
    try:
        say(f"== 2. {count} hosts, each an agent with its own key beside its own node, selling "
            "64 MiB")
        await fund_hosts(net, host_nodes, Signer(owner_key), chain, view)
        say(f"  the owner ({short(owner_key.principal)}) sent each host key "
            f"{format_coins(HOST_FUNDS)} for collateral and fees")
        hosts = list(await asyncio.gather(
            *(net.start_host(i + 1, node, "64M") for i, node in enumerate(host_nodes))))
        for h in hosts:
            say(f"  host {h.number}  {short(h.principal)}  storage on {h.address}")
        await owner.start()
        say(f"  owner:  {short(owner_key.principal)}  storage on {owner.address}")

        async def announced() -> bool:
            for p, address in [(h.principal, h.address) for h in hosts] + [
                    (owner_key.principal, owner.address)]:
                acct = await view.principal(p)
                if acct is None or acct.address != address:
                    return False
            return True

        await until(announced, CHAIN_WAIT, "the agents' addresses to be mined and reach every "
                    "node")
        say(f"  {count + 1} storage addresses published on chain (block "
            f"{await view.tip_height()})")

        data = os.urandom(size)
        path = owner_key.principal.root_path + "/demo/file.bin"
        shown = f"/{short(owner_key.principal)}/demo/file.bin"
        say(f"== 3. Store a {format_size(size)} file at {shown}")
        entry = await owner.put(path, data)
        say(f"  encrypted, then erasure-coded {entry.k}-of-{entry.n} into "
            f"{format_size(entry.fragment_size)} fragments; {entry.n} offers, each escrowing "
            f"{format_coins(entry.price)} a period for {contract_periods} periods")
        if not await owner.wait_placed(path, CHAIN_WAIT):
            raise DemoError(f"only {entry.placed()} of {entry.n} fragments were placed in "
                            f"{CHAIN_WAIT:g} s (see the host agents' logs)")

        async def placed() -> dict[int, list[Any]] | None:
            found = await view.fragments(path)
            return found if sum(len(hs) for hs in found.values()) >= entry.n else None

        placement = await until(placed, CHAIN_WAIT,
                                f"host {hosts[-1].number}'s node to see the placement")
        names = {h.principal: f"host {h.number}" for h in hosts}
        holders = {names.get(holder.host, short(holder.host)): index
                   for index in sorted(placement) for holder in placement[index]}
        say("  placed, as the chain records it: " + ", ".join(
            f"fragment {index} on {name}" for name, index in sorted(holders.items(),
                                                                      key=lambda kv: kv[1])))

        escrow = sum(c.escrow for c in await chain.contracts_by_owner(owner_key.principal)
                     if c.state == "active")
        await owner.stop()
        say(f"== 4. The owner goes offline. Every {entry.period_blocks} blocks each host proves "
            f"its fragment on chain and is paid from the escrow ({format_coins(escrow)})")

        async def proven() -> list[ContractInfo]:
            return [c for h in hosts for c in await view.contracts_by_host(h.principal)
                    if c.state in ("active", "ended")]

        last = 0
        loop_end = (time.monotonic() + CHAIN_WAIT
                    + periods * entry.period_blocks * mine_interval * 10)
        while True:
            contracts = await proven()
            done = min((c.proven for c in contracts), default=0) if len(contracts) >= entry.n else 0
            if done > last:
                last = done
                say(f"  period {done} of {periods}: {entry.n} proofs on chain, each host paid "
                    f"{format_coins(entry.price)} (block {await view.tip_height()})")
            if done >= periods:
                break
            if time.monotonic() > loop_end:
                raise DemoError(f"only {done} of {periods} periods were proven in time")
            await asyncio.sleep(0.2)
        payments = sum(c.proven for c in contracts)

        stopped = hosts[:stop]
        say(f"== 5. Stop {stop} of the {count} hosts (agent and node)")
        await asyncio.gather(*(net.stop_host(h) for h in stopped))
        say("  stopped " + ", ".join(f"host {h.number}" for h in stopped))

        say(f"== 6. Read {shown} back from the hosts still running")
        errors: list[str] = []
        got = await retrieve.get(chain, owner_key, path, errors=errors)
        identical = bytes(got) == data
        say(f"  {format_size(len(got))} from {entry.k} hosts: "
            f"{'byte-identical' if identical else 'DIFFERENT'} to the original"
            + (f" ({len(errors)} stopped host{'s' if len(errors) > 1 else ''} skipped)"
               if errors else ""))

        at = await view.tip_height()
        say(f"== 7. What the chain says of each host (its public record at block {at})")
        earnings = []
        rows = []
        for h in hosts:
            acct = await view.principal(h.principal)
            record = (acct.host if acct is not None else None) or {}
            earnings.append({"host": str(h.principal), "node": str(h.node.principal),
                             **record, "stopped": h in stopped})
            rows.append((f"host {h.number}", short(h.principal),
                         str(record.get("proven_periods", 0)),
                         str(record.get("missed_periods", 0)),
                         format_coins(record.get("earned", 0)),
                         format_coins(record.get("collateral_locked", 0)),
                         "stopped" if h in stopped else "running"))
        for line in _table(("host", "key", "proven", "missed", "earned", "collateral locked",
                            "now"), rows):
            say(f"  {line}")
        seconds = round(time.monotonic() - started, 2)
        say("  (a stopped host misses the periods that follow: each miss refunds the owner and "
            "burns that period's collateral)")
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
            "owner": str(owner_key.principal),
            "hosts": earnings,
            "nodes": [{"name": n.name, "principal": str(n.principal), "p2p": n.p2p,
                       "api": n.api, "mining": n is miner} for n in net.nodes],
            "seconds": seconds,
        }
    finally:
        await owner.stop()  # a second stop is harmless
        await chain.close()
        await view.close()


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Plain aligned columns (the demo's output is read in logs and pipes, too)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]


def main(size: int, periods: int, keep: Path | None, as_json: bool,
         mine_interval: float) -> dict[str, Any]:
    """What ``blockcoin demo`` runs: the story in ``keep`` (kept) or a scratch directory
    (removed), printed as it goes unless ``as_json``; the summary."""

    def say(line: str) -> None:
        if not as_json:
            print(line, flush=True)

    def run(workdir: Path) -> dict[str, Any]:
        return asyncio.run(run_demo(workdir, say, size=size, periods=periods,
                                    mine_interval=mine_interval))

    if keep is not None:
        if keep.exists() and any(keep.iterdir()):
            # a second story on the first one's chains and agents would not be the demo
            raise DemoError(f"{keep} is not empty: --keep takes a new or empty directory")
        keep.mkdir(parents=True, exist_ok=True)
        return run(keep)
    with tempfile.TemporaryDirectory(prefix="blockcoin-demo-") as tmp:
        try:
            return run(Path(tmp))
        except DemoError as exc:
            raise DemoError(f"{exc}\n(run with --keep DIR to keep the logs)") from None
