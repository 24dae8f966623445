"""``blockcoin store ...``, ``blockcoin host ...`` and ``blockcoin demo``.

The agents reach the chain through a running node's API when there is one (``--api URL`` with
``--token``, or the node found in ``--node DIR``, by default the data directory itself);
otherwise, for regtest experiments on a data directory nobody else holds, through the node in
process, which then mines a block every ``--mine-every`` seconds so that time passes on chain.

Keys: an owner acts with the data directory's wallet key (it pays); a host acts with its own
key, ``<datadir>/host/host.key``, created on first start, so several hosts can share nothing but
a network and their earnings are easy to see. Long work shows rich progress bars on a
terminal; ``--json`` prints one JSON object instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from chain.app.clikit import DatadirOpt, JsonOpt, NetworkOpt, friendly, resolve_datadir
from chain.core.errors import ConfigError
from chain.core.keys import KeyPair
from chain.core.params import NetworkParams, network
from chain.core.principal import Principal
from storage_market.chainclient import ChainClient, Signer
from storage_market.crypto import plaintext_length
from storage_market.host import HostAgent, HostPolicy
from storage_market.owner import OwnerAgent, StoreOptions

store_app = typer.Typer(help="Store files on the market: put, get, status, serve.",
                        no_args_is_help=True)
host_app = typer.Typer(help="Sell storage: run a host, show its contracts and earnings.",
                       no_args_is_help=True)

ApiOpt = Annotated[str | None, typer.Option("--api", help="A node's API, http://host:port.")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="The node's API cookie token.")]
NodeOpt = Annotated[Path | None, typer.Option("--node", help="Data directory of the node to use.")]
MineOpt = Annotated[float, typer.Option(
    "--mine-every", help="Regtest, no node running: mine in process every N seconds.")]
ListenOpt = Annotated[str, typer.Option("--listen", help="host:port to listen on (port 0: any).")]

err = Console(stderr=True)




_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``500M``, ``2GiB``, ``1.5G`` or a plain byte count."""
    m = _SIZE.match(text)
    if not m:
        raise ConfigError(f"not a size: {text!r} (e.g. 512M, 2G)")
    scale = 1 << (10 * " kmgt".index(m.group(2).lower() or " "))
    return int(float(m.group(1)) * scale)


def parse_price(text: str) -> int:
    from chain.node.wallet import parse_amount

    return parse_amount(text)


@contextlib.asynccontextmanager
async def connect(params: NetworkParams, datadir: Path, api: str | None, token: str | None,
                  node: Path | None, mine_every: float) -> Any:
    """The ChainClient to use: an explicit API, a running node's, or the node in process."""
    from storage_market.httpclient import HttpChain

    client: ChainClient
    if api:
        client = HttpChain(api, params, token)
    elif ((node or datadir) / "node.json").exists():
        client = HttpChain.for_datadir(node or datadir, params)
    else:
        from storage_market.inprocess import InProcessChain

        inproc = InProcessChain.open(datadir, params)
        if mine_every > 0:
            if params.name != "regtest":
                raise ConfigError("--mine-every is for regtest")
            inproc.start_mining(mine_every)
        client = inproc
    try:
        yield client
    finally:
        await client.close()


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


def _progress(disable: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), transient=True, console=err,
                    disable=disable or not sys.stderr.isatty())


def _full_path(owner_root: str, path: str) -> str:
    """A path as given, or relative to the owner's tree (``docs/a`` -> ``/<owner>/docs/a``)."""
    return path if path.startswith("/") else f"{owner_root}/{path.strip('/')}"


async def _until_interrupted(ready: Callable[[], None] | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    await stop.wait()


# --- store -------------------------------------------------------------------------------------


def _owner_key(datadir: Path) -> KeyPair:
    key_file = datadir / "wallet.key"
    if not key_file.exists():
        raise ConfigError(f"no wallet in {datadir} (run `blockcoin init` first)")
    return KeyPair.load(key_file)


@store_app.command("put")
@friendly
def store_put(
    file: Annotated[Path, typer.Argument(help="File to store.", exists=True, dir_okay=False)],
    path: Annotated[str, typer.Argument(help="Blocktree path (/<principal>/... or relative).")],
    k: Annotated[int, typer.Option(help="Fragments needed to read it back.")] = 3,
    n: Annotated[int, typer.Option(help="Fragments stored (one per host).")] = 5,
    price: Annotated[str, typer.Option(help="Per fragment per period (coins or Nsat).")] = "100000sat",
    collateral: Annotated[str, typer.Option(
        help="Asked of each host per period, burned if it misses a proof.")] = "100000sat",
    periods: Annotated[int, typer.Option(help="Periods to pay for (escrowed now).")] = 12,
    wait: Annotated[float, typer.Option(help="Seconds to wait for all n hosts.")] = 120.0,
    serve: Annotated[bool, typer.Option(help="Keep running: serve fetches and repair.")] = False,
    listen: ListenOpt = "127.0.0.1:0",
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None, mine_every: MineOpt = 0.0,
) -> None:
    """Encrypt FILE as the block at PATH, offer its n fragments and wait until hosts hold them.

    Each offer escrows price x periods on chain; from then on the hosts prove their fragments
    every period and the chain pays them, whether or not this command still runs."""
    params = network(net)
    home = resolve_datadir(net, datadir)
    key = _owner_key(home)
    options = StoreOptions(k=k, n=n, price=parse_price(price), collateral=parse_price(collateral),
                           periods=periods)
    host, _, port = listen.rpartition(":")

    async def go() -> dict[str, Any]:
        async with connect(params, home, api, token, node, mine_every) as chain:
            owner = OwnerAgent(home, Signer(key), chain, host or "127.0.0.1", int(port or 0),
                               defaults=options)
            await owner.start()
            try:
                full = _full_path(key.principal.root_path, path)
                with _progress(as_json) as bar, file.open("rb") as data:
                    task = bar.add_task("sealing", total=plaintext_length(data))

                    def report(stage: str, done: int, total: int) -> None:
                        bar.update(task, description=stage, completed=done, total=total)

                    entry = await owner.put(full, data, options, report, _source_of(data))
                    sent = bar.add_task("to hosts", total=entry.fragment_size * entry.n)
                    owner.on_sent = lambda nbytes: bar.advance(sent, nbytes)
                    placed = await owner.wait_placed(full, wait)
                status = owner.status(full)["blocks"][0]
                if serve:
                    await _until_interrupted(lambda: err.print(
                        f"serving {full} from {owner.address}; Ctrl-C to stop"))
                hint = "" if serve else (
                    "hosts now prove and are paid from escrow on their own; run `blockcoin store"
                    " serve` from time to time to repair fragments whose hosts miss proofs")
                return {"path": full, "placed": placed, "hint": hint, **status}
            finally:
                await owner.stop()

    result = run(go())
    _emit_store(as_json, result)
    if not result["placed"]:
        raise typer.Exit(1)


def _source_of(data: Any) -> str:
    """Size, mtime and inode of the file being put: a second put of the same file resumes."""
    st = os.fstat(data.fileno())
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _emit_store(as_json: bool, result: dict[str, Any]) -> None:
    if as_json:
        typer.echo(json.dumps(result))
        return
    console = Console()
    console.print(f"[bold]{result['path']}[/] {result['k']}-of-{result['n']}, "
                  f"{result['size']} bytes, {result['placed']}/{result['n']} fragments placed")
    table = Table("index", "state", "host", "start", "end", "proven", "missed", "paid",
                  "repairs")
    for f in result["fragments"]:
        table.add_row(str(f["index"]), f["state"], (f["host"] or "-")[:20], str(f["start"] or "-"),
                      str(f["end"] or "-"), str(f["periods_proven"]), str(f["misses"]),
                      str(f["paid"]), str(f["repairs"]))
    console.print(table)
    if result.get("hint"):
        console.print(result["hint"])


@store_app.command("serve")
@friendly
def store_serve(
    listen: ListenOpt = "127.0.0.1:0",
    net: NetworkOpt = "main", datadir: DatadirOpt = None,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None, mine_every: MineOpt = 0.0,
) -> None:
    """Run the owner: serve fetches, re-offer what nobody took, repair after missed proofs."""
    params = network(net)
    home = resolve_datadir(net, datadir)
    key = _owner_key(home)
    host, _, port = listen.rpartition(":")

    async def go() -> None:
        async with connect(params, home, api, token, node, mine_every) as chain:
            owner = OwnerAgent(home, Signer(key), chain, host or "127.0.0.1", int(port or 0))
            await owner.start()
            try:
                await _until_interrupted(lambda: err.print(
                    f"owner {key.principal} at {owner.address}; Ctrl-C to stop"))
            finally:
                await owner.stop()

    run(go())


@store_app.command("get")
@friendly
def store_get(
    path: Annotated[str, typer.Argument(help="Blocktree path (/<principal>/... or relative).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the file.")],
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None,
) -> None:
    """Fetch any k fragments of PATH from their hosts, check, decode, decrypt, write -o FILE."""
    from storage_market import retrieve

    params = network(net)
    home = resolve_datadir(net, datadir)
    key = _owner_key(home)

    async def go() -> dict[str, Any]:
        async with connect(params, home, api, token, node, 0.0) as chain:
            full = _full_path(key.principal.root_path, path)
            errors: list[str] = []
            with _progress(as_json) as bar:
                task = bar.add_task("fetching", total=None)
                data = await retrieve.get(
                    chain, key, full, lambda done, total: bar.update(task, completed=done,
                                                                     total=total), errors)
            tmp = output.with_name(f".{output.name}.part")
            tmp.write_bytes(data)
            tmp.replace(output)
            return {"path": full, "output": str(output), "size": len(data),
                    "skipped": errors}

    result = run(go())
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"wrote {result['size']} bytes of {result['path']} to {result['output']}"
                   + (f" ({len(result['skipped'])} bad or unreachable holders skipped)"
                      if result["skipped"] else ""))


@store_app.command("release")
@friendly
def store_release(
    path: Annotated[str, typer.Argument(help="Blocktree path (/<principal>/... or relative).")],
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None,
) -> None:
    """End PATH's contracts and open offers: the escrow left comes back to the tree."""
    params = network(net)
    home = resolve_datadir(net, datadir)
    key = _owner_key(home)

    async def go() -> dict[str, Any]:
        async with connect(params, home, api, token, node, 0.0) as chain:
            owner = OwnerAgent(home, Signer(key), chain)
            full = _full_path(key.principal.root_path, path)
            try:
                released = await owner.release(full)
            finally:
                await owner.state.close()
            return {"path": full, "released": released}

    result = run(go())
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"{result['path']}: released {result['released']} contract(s)")


@store_app.command("extend")
@friendly
def store_extend(
    path: Annotated[str, typer.Argument(help="Blocktree path (/<principal>/... or relative).")],
    periods: Annotated[int, typer.Option(help="Periods to add to each contract.", min=1)],
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None,
) -> None:
    """Run PATH's active contracts longer: each host consents, the added periods are escrowed."""
    params = network(net)
    home = resolve_datadir(net, datadir)
    key = _owner_key(home)

    async def go() -> dict[str, Any]:
        async with connect(params, home, api, token, node, 0.0) as chain:
            owner = OwnerAgent(home, Signer(key), chain)
            full = _full_path(key.principal.root_path, path)
            done = await owner.extend(full, periods)
            await owner.state.close()
            return {"path": full, "extended": done, "periods_added": periods,
                    "notes": owner.events}

    result = run(go())
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"{result['path']}: extended fragments {result['extended'] or 'none'} by "
                   f"{periods} periods" + "".join(f"\n  {n}" for n in result["notes"]))
    if not result["extended"]:
        raise typer.Exit(1)


@store_app.command("status")
@friendly
def store_status(
    path: Annotated[str | None, typer.Argument(help="One path (default: all).")] = None,
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """The owner's blocks: where each fragment is, periods proven and missed, repairs."""
    home = resolve_datadir(net, datadir)
    key = _owner_key(home)
    owner = OwnerAgent(home, Signer(key), _Offline(network(net)))  # type: ignore[arg-type]
    full = _full_path(key.principal.root_path, path) if path else None
    status = owner.status(full)
    if as_json:
        typer.echo(json.dumps(status))
        return
    if not status["blocks"]:
        typer.echo("no blocks stored")
    for block in status["blocks"]:
        _emit_store(False, {"path": block["path"], **block})


class _Offline:
    """Enough of a ChainClient to read an agent's saved state without a node."""

    def __init__(self, params: NetworkParams) -> None:
        self.params = params
        self.chain_id = params.chain_id
        self.storage_period_blocks = params.storage_period_blocks


# --- host --------------------------------------------------------------------------------------


def host_key(datadir: Path) -> KeyPair:
    """The host's own key, created on first use (mode 0600)."""
    path = datadir / "host" / "host.key"
    if not path.exists():
        KeyPair.generate().save(path)
    return KeyPair.load(path)


def _save_policy(datadir: Path, policy: HostPolicy) -> None:
    from storage_market.jsonstate import write_json

    write_json(datadir / "host" / "policy.json",
               {"capacity": policy.capacity, "min_price": policy.min_price,
                "max_collateral": policy.max_collateral,
                "payout": str(policy.payout) if policy.payout else None})


def _load_policy(datadir: Path) -> HostPolicy:
    from storage_market.jsonstate import read_json

    raw = read_json(datadir / "host" / "policy.json") or {}
    cap, payout = raw.get("max_collateral"), raw.get("payout")
    return HostPolicy(int(raw.get("capacity", 0)), int(raw.get("min_price", 0)),
                      int(cap) if cap is not None else None,
                      Principal.parse(str(payout)) if payout else None)


@host_app.command("start")
@friendly
def host_start(
    capacity: Annotated[str, typer.Option(help="Space to sell (e.g. 10G).")],
    min_price: Annotated[str, typer.Option(help="Lowest price per fragment per period.")] = "1sat",
    max_collateral: Annotated[str | None, typer.Option(
        help="Most collateral per fragment per period to lock (default: what the balance covers)."
    )] = None,
    payout: Annotated[str | None, typer.Option(
        help="Principal paid for proven periods (default: the host's own key).")] = None,
    listen: ListenOpt = "127.0.0.1:0",
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None, mine_every: MineOpt = 0.0,
) -> None:
    """Run a host until interrupted: take offers, store fragments, prove them on chain each
    period and be paid from the owners' escrow."""
    params = network(net)
    home = resolve_datadir(net, datadir)
    home.mkdir(parents=True, exist_ok=True)
    key = host_key(home)
    policy = HostPolicy(parse_size(capacity), parse_price(min_price),
                        parse_price(max_collateral) if max_collateral is not None else None,
                        Principal.parse(payout) if payout else None)
    _save_policy(home, policy)
    bind, _, port = listen.rpartition(":")

    async def go() -> None:
        async with connect(params, home, api, token, node, mine_every) as chain:
            agent = HostAgent(home, key, chain, policy, bind or "127.0.0.1", int(port or 0))
            await agent.start()
            seen = 0

            def ready() -> None:
                info = {"host": str(key.principal), "address": agent.address,
                        "capacity": policy.capacity, "min_price": policy.min_price}
                print(json.dumps(info) if as_json else
                      f"host {key.principal} listening on {agent.address}; "
                      f"selling {policy.capacity} bytes", flush=True)

            async def log_events() -> None:
                nonlocal seen
                while True:
                    await asyncio.sleep(0.5)
                    for line in agent.events[seen:]:
                        if not as_json:
                            print(line, flush=True)
                    seen = len(agent.events)

            logger = asyncio.ensure_future(log_events())
            try:
                await _until_interrupted(ready)
            finally:
                logger.cancel()
                await agent.stop()

    run(go())


@host_app.command("status")
@friendly
def host_status(net: NetworkOpt = "main", datadir: DatadirOpt = None,
                as_json: JsonOpt = False) -> None:
    """Capacity used, contracts with periods proven and missed, earnings and collateral."""
    home = resolve_datadir(net, datadir)
    if not (home / "host").exists():
        raise ConfigError(f"no host in {home} (run `blockcoin host start` first)")
    agent = HostAgent(home, host_key(home), _Offline(network(net)),  # type: ignore[arg-type]
                      _load_policy(home))
    status = agent.status()
    if as_json:
        typer.echo(json.dumps(status))
        return
    console = Console()
    console.print(f"host [bold]{status['principal']}[/]: {status['used']} of "
                  f"{status['capacity']} bytes used; earned {status['earned']}, future "
                  f"{status['future']}, collateral locked {status['collateral_locked']}; "
                  f"{status['proven']} periods proven, {status['missed']} missed")
    table = Table("contract", "path", "index", "owner", "size", "status", "proven", "missed",
                  "paid", "corrupt")
    for c in status["contracts"]:
        table.add_row(c["contract"][:12], c["path"][-24:], str(c["index"]), c["owner"][:14],
                      str(c["size"]), c["status"], str(c["proven"]), str(c["missed"]),
                      str(c["paid_total"]), "yes" if c["corrupt"] else "")
    console.print(table)


# --- demo --------------------------------------------------------------------------------------


@friendly
def demo_command(
    size: Annotated[str, typer.Option(help="Size of the demo file.")] = "1M",
    periods: Annotated[int, typer.Option(help="Proof periods to run.", min=1)] = 3,
    keep: Annotated[Path | None, typer.Option(help="Run in this directory and keep it.")] = None,
    mine_interval: Annotated[float, typer.Option(
        help="Seconds between the miner's blocks.", min=0.05)] = 0.3,
    as_json: JsonOpt = False,
) -> None:
    """Loopback storage market: store a file on 5 hosts, get paid, lose 2, get it back.

    Real processes: a mining node, five host nodes with a host agent each, and an owner node
    with the owner beside it. The file is placed, the owner leaves, the hosts prove each period
    on chain and are paid from escrow, two hosts stop, the file comes back byte-identical, the
    hosts' public records show.
    """
    from chain.app.demo import main

    try:
        result = main(parse_size(size), periods, keep, as_json, mine_interval)
    except (KeyboardInterrupt, asyncio.CancelledError):
        typer.echo("interrupted; every process the demo started is stopped", err=True)
        raise typer.Exit(130) from None
    if as_json:
        print(json.dumps(result), flush=True)
    else:
        print(f"stored {result['stored_fragments']} fragments, {result['payments_made']} payments, "
              f"{result['hosts_stopped']} hosts stopped, recovered identical: "
              f"{result['recovered_identical']} ({result['seconds']:g} s)")
    if not result["recovered_identical"]:
        raise typer.Exit(1)
