"""``blockcoin store ...``, ``blockcoin host ...`` and ``blockcoin demo``.

The agents reach the chain through a running node's API: the node found in ``--node DIR``
(default: the data directory itself, where ``blockcoin node`` writes ``node.json``), or an
explicit ``--api URL`` with ``--token``. A node that is not running or does not answer is an
error naming it, never silently replaced; for regtest experiments without any node,
``--in-process`` opts into a private chain in this process that mines a block every
``--mine-every`` seconds.

``--light`` runs the agent on the data directory's light client instead of trusting the node:
headers only (``DATADIR/light``), synced from each ``--peer`` while it runs, and every answer
the agent relies on checked against them by proof (:mod:`chain.app.lightchain`); the node
named as above is still asked, and still takes the signed events, but a lie is refused. With
``--light``, ``--api`` may name several nodes (one ``--token`` each, in the same order): a
node whose answer is refused, or that does not answer, is left for the next.

One writer per directory: ``store put/serve/extend/release`` hold ``DATADIR/store/LOCK`` and
``host start`` holds ``DATADIR/host/LOCK`` for as long as they run (:mod:`chain.core.dirlock`);
a second one on the same directory stops with one line before it touches anything.

Keys: an owner acts with the data directory's wallet key (it pays); a host acts with its own
key, ``DATADIR/host/host.key``, created on first start (it signs receipts and proofs and locks
collateral) and is paid into the data directory's wallet unless ``--payout`` names another
principal, so ``blockcoin wallet`` spends what the host earned. Long work shows rich progress
bars on a terminal; ``--json`` prints one JSON object instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from chain.app.clikit import DatadirOpt, JsonOpt, NetworkOpt, Where, emit, fail, friendly, locate
from chain.app.render import short
from chain.core.aio import until_interrupted
from chain.core.dirlock import DirLock
from chain.core.errors import ConfigError
from chain.core.keys import KeyPair
from chain.core.params import NetworkParams
from chain.core.principal import Principal
from chain.core.units import format_coins, format_size, parse_amount, parse_size
from chain.net.control import HOST, OWNER, serving
from storage_market.chainclient import ChainClient, Signer
from storage_market.control import host_control, owner_control
from storage_market.crypto import full_path, plaintext_length
from storage_market.host import HostAgent, HostPolicy, load_policy, save_policy, starting_policy
from storage_market.owner import BlockEntry, OwnerAgent, StoreOptions

if TYPE_CHECKING:
    from storage_market.httpclient import HttpChain

store_app = typer.Typer(help="Store files on the market: put, get, status, serve, extend, "
                             "release.", no_args_is_help=True)
host_app = typer.Typer(help="Sell storage: run a host, show its contracts and earnings.",
                       no_args_is_help=True)

ApiOpt = Annotated[list[str] | None, typer.Option(
    "--api", envvar="BLOCKCOIN_API_URL", show_default=False,
    help="A node's API, http://host:port. With --light, give it again for more nodes, in "
         "order of preference: when one's answer is refused or it does not answer, the next "
         "is asked.")]
TokenOpt = Annotated[list[str] | None, typer.Option(
    "--token", envvar="BLOCKCOIN_API_TOKEN", show_default=False,
    help="That node's API token (its api.cookie); with several --api, one --token for each, "
         "in the same order ('' for a node that only answers).")]
NodeOpt = Annotated[Path | None, typer.Option(
    "--node", help="Data directory of the running node to use (default: --datadir).")]
InProcessOpt = Annotated[bool, typer.Option(
    "--in-process", help="Regtest experiments only: run a private chain in this process "
                         "instead of using a node.")]
LightOpt = Annotated[bool, typer.Option(
    "--light", help="Trust no node: keep headers only (DATADIR/light, synced from --peer) and "
                    "check every answer the agent relies on against them by proof.")]
PeersOpt = Annotated[list[str] | None, typer.Option(
    "--peer", help="With --light: a full node's p2p address (HOST:PORT) to sync headers from; "
                   "give it again for more peers (the most work wins).")]
MineOpt = Annotated[float, typer.Option(
    "--mine-every", min=0.0, help="With --in-process: mine a block every N seconds.")]
ListenOpt = Annotated[str | None, typer.Option(
    "--listen", help="host:port the agent listens on (port 0: any; default 127.0.0.1:0).")]
LogLevelOpt = Annotated[str | None, typer.Option(
    "--log-level", envvar="BLOCKCOIN_LOG_LEVEL", show_default=False,
    help="debug, info, warning or error (default: the config's, else info).")]

err = Console(stderr=True)
STORE_LOCK = "blockcoin store"
HOST_LOCK = "blockcoin host start"
FUND_WAIT = 600.0  # seconds a host waits for its funding to be mined


@dataclass(frozen=True)
class Reach:
    """How a command reaches the chain (see the module docstring)."""

    apis: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()
    node: Path | None = None
    in_process: bool = False
    mine_every: float = 0.0
    light: bool = False
    peers: tuple[str, ...] = ()

    @classmethod
    def of(cls, api: list[str] | None, token: list[str] | None, node: Path | None,
           in_process: bool, mine_every: float = 0.0, light: bool = False,
           peer: list[str] | None = None) -> Reach:
        """From the command line's options."""
        return cls(tuple(api or ()), tuple(token or ()), node, in_process, mine_every, light,
                   tuple(peer or ()))

    def api_tokens(self) -> list[str | None]:
        """The token of each ``--api``, in order (none given: none sent)."""
        if not self.tokens:
            return [None] * len(self.apis)
        if len(self.tokens) != len(self.apis):
            raise ConfigError("give --token once for each --api, in the same order (--token '' "
                              "for a node whose token you lack), or not at all")
        return [t or None for t in self.tokens]


@contextlib.asynccontextmanager
async def connect(params: NetworkParams, datadir: Path, reach: Reach) -> AsyncIterator[ChainClient]:
    """The chain client to use, checked to answer before any work starts."""
    from chain.app.light import LightClient
    from chain.app.lightchain import LightChain
    from storage_market.httpclient import HttpChain

    if reach.mine_every > 0 and not reach.in_process:
        raise ConfigError("--mine-every runs with --in-process only (a node mines with "
                          "`blockcoin node --mine`)")
    if reach.light != bool(reach.peers):
        raise ConfigError("--light syncs headers from full nodes: name one with --peer HOST:PORT"
                          if reach.light else "--peer is for --light")
    if len(reach.apis) > 1 and not reach.light:
        raise ConfigError("several --api are for --light (an agent that trusts its node asks "
                          "that one)")
    client: ChainClient
    nodes: list[tuple[HttpChain, str]] = []  # each node's client, and where it was found
    if reach.in_process:
        if params.name != "regtest":
            raise ConfigError("--in-process is for regtest experiments only")
        if reach.apis or reach.node or reach.light:
            raise ConfigError("--in-process runs its own chain: drop --api, --node and --light")
        from storage_market.inprocess import InProcessChain

        inproc = InProcessChain.open(datadir, params)
        if reach.mine_every > 0:
            inproc.start_mining(reach.mine_every)
        client = inproc
    elif reach.apis:
        nodes = [(HttpChain(url, params, token), f"--api {url}")
                 for url, token in zip(reach.apis, reach.api_tokens(), strict=True)]
    else:
        nodedir = reach.node or datadir
        if reach.node is not None and not (reach.node / "config.toml").exists():
            raise ConfigError(f"--node {reach.node}: not a node's data directory")
        nodes = [(HttpChain.for_datadir(nodedir, params),
                  f"found in {nodedir / 'node.json'}; is that node still running?")]
    if nodes and reach.light:
        client = LightChain(LightClient(datadir, params), [http for http, _ in nodes],
                            list(reach.peers))
    elif nodes:
        client = nodes[0][0]
    try:
        if nodes:
            answering = await _answering(nodes)
            if isinstance(client, LightChain):
                client.ask_first(answering)
        if isinstance(client, LightChain):
            await client.start()
        yield client
    finally:
        await client.close()


async def _answering(nodes: list[tuple[HttpChain, str]]) -> list[HttpChain]:
    """The nodes that answer and run this client's network, in the order given; with several,
    one that does not is named in one line on the log (a light agent asks it after the others),
    and none answering is the first one's error."""
    from chain.app.light import log
    from storage_market.httpclient import NodeApiError

    answering: list[HttpChain] = []
    first: ConfigError | None = None
    for http, source in nodes:
        try:
            await http.check_network()
        except NodeApiError as exc:
            first = first or ConfigError(f"{exc} ({source})")
            if len(nodes) > 1:
                log.warning("%s (%s): asking the other nodes first", exc, source)
            continue
        answering.append(http)
    if not answering:
        assert first is not None
        raise first
    return answering


@contextlib.asynccontextmanager
async def locked_chain(where: Where, reach: Reach, directory: Path,
                       holder: str) -> AsyncIterator[ChainClient]:
    """The chain once it answers, then the agent directory's lock: a command that cannot do
    its work (no node, or another agent on the directory) stops before it writes anything."""
    async with connect(where.params, where.datadir, reach) as chain:
        with DirLock(directory, holder):
            yield chain


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


def _progress(disable: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                    TransferSpeedColumn(), transient=True, console=err,
                    disable=disable or not sys.stderr.isatty())


def listen_address(value: str | None, configured: str) -> tuple[str, int]:
    text = value or configured
    host, _, port = text.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"not a listen address: {text!r} (host:port, port 0 for any)")
    return host or "127.0.0.1", int(port)


def _agent_logging(where: Where, component: str, level: str | None, configured: str) -> None:
    from chain.app.logs import setup_logging

    setup_logging(where.datadir, component, level or configured, stderr=False)


# --- store -------------------------------------------------------------------------------------


def owner_key(datadir: Path) -> KeyPair:
    key_file = datadir / "wallet.key"
    if not key_file.exists():
        raise ConfigError(f"no wallet in {datadir} (run `blockcoin init` first)")
    return KeyPair.load(key_file)


def owner_log_level(where: Where, level: str | None) -> None:
    _agent_logging(where, "owner", level, where.config.store.log_level if where.config else "info")


def confirm_cost(text: str, yes: bool) -> None:
    """Go on only with the user's word: ``--yes``, or a yes typed on a terminal."""
    if yes:
        return
    if not sys.stdin.isatty():
        fail(f"{text}; run again with --yes to confirm")
    if not typer.confirm(f"{text}. Go on?", default=False, err=True):
        fail("nothing spent")


@store_app.command("put")
@friendly
def store_put(
    file: Annotated[Path, typer.Argument(help="File to store.")],
    path: Annotated[str, typer.Argument(help="Blocktree path (/<principal>/... or relative).")],
    k: Annotated[int, typer.Option(help="Fragments needed to read it back.")] = 3,
    n: Annotated[int, typer.Option(help="Fragments stored (one per host).")] = 5,
    price: Annotated[str, typer.Option(
        help="Per fragment per period, in coins (or base units as Nsat).")] = "100000sat",
    collateral: Annotated[str, typer.Option(
        help="Asked of each host per fragment per period, burned if it misses a proof.")
    ] = "100000sat",
    periods: Annotated[int, typer.Option(help="Periods to pay for (escrowed now).", min=1)] = 12,
    wait: Annotated[float, typer.Option(help="Seconds to wait for all n hosts.", min=0.0)] = 120.0,
    serve: Annotated[bool, typer.Option(help="Keep running: serve fetches and repair.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Spend without asking.")] = False,
    listen: ListenOpt = None, log_level: LogLevelOpt = None,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None,
    in_process: InProcessOpt = False, mine_every: MineOpt = 0.0,
    light: LightOpt = False, peer: PeersOpt = None,
) -> None:
    """Encrypt FILE as the block at PATH, offer its n fragments and wait until hosts hold them.

    Each offer escrows price x periods on chain; the total (escrow and fees) is stated and
    confirmed before anything is spent. From then on the hosts prove their fragments every
    period and the chain pays them, whether or not this command still runs. The owner keeps an
    encrypted copy of the file in DATADIR/store/blocks (to repair lost fragments without
    fetching k others); `store release` deletes it. Run again with the same file, an
    interrupted put carries on."""
    from storage_market.cost import put_cost

    where = locate(net, datadir)
    home = where.datadir
    key = owner_key(home)
    options = StoreOptions(k=k, n=n, price=parse_amount(price),
                           collateral=parse_amount(collateral, allow_zero=True), periods=periods)
    options.check()
    bind, port = listen_address(listen, where.config.store.listen if where.config else "127.0.0.1:0")
    full = full_path(key.principal.root_path, path)
    reach = Reach.of(api, token, node, in_process, mine_every, light, peer)
    with file.open("rb") as data:
        size = plaintext_length(data)
        cost = put_cost(key, where.params, full, size, k, n, options.price, options.collateral,
                        periods, options.fee_rate)
        question = (f"storing {format_size(size)} at {full} as {n} fragments for {periods} "
                    f"periods of {where.params.storage_period_blocks} blocks costs "
                    f"{format_coins(cost.total)} ({format_coins(cost.escrow)} escrowed for the "
                    f"hosts, {format_coins(cost.fees)} in fees)")

        previous = stored_blocks(home).get(full)
        if previous is None or not previous.live():  # a rerun resumes: nothing new is spent
            confirm_cost(question, yes)

        async def go() -> dict[str, Any]:
            async with locked_chain(where, reach, home / "store", STORE_LOCK) as chain:
                owner_log_level(where, log_level)
                owner = OwnerAgent(home, Signer(key), chain, bind, port, defaults=options)
                await owner.start()
                try:
                    with _progress(as_json) as bar:
                        task = bar.add_task("sealing", total=size)

                        def report(stage: str, done: int, total: int) -> None:
                            bar.update(task, description=stage, completed=done, total=total)

                        entry = await owner.put(full, data, options, report, _source_of(data))
                        sent = bar.add_task("to hosts", total=entry.fragment_size * entry.n)
                        owner.on_sent = lambda nbytes: bar.advance(sent, nbytes)
                        placed = await owner.wait_placed(full, wait)
                    status = owner.status(full)["blocks"][0]
                    if serve:
                        async with serving(owner_control(owner), OWNER, home):
                            await until_interrupted(lambda: err.print(
                                f"serving {full} from {owner.address}; Ctrl-C to stop"))
                    hint = "" if serve else (
                        "hosts now prove and are paid from escrow on their own; run `blockcoin "
                        "store serve` from time to time to repair fragments whose hosts miss "
                        "proofs")
                    return {"path": full, "all_placed": placed, "hint": hint, **status}
                finally:
                    await owner.stop()

        result = run(go())
    _emit_store(as_json, result)
    if not result["all_placed"]:
        fail(f"only {result['placed']} of {result['n']} fragments were placed within {wait:g} s; "
             "run the same put again to carry on")


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
                  f"{format_size(result['size'])}, {result['placed']}/{result['n']} fragments "
                  "placed, "
                  f"{format_coins(result['price'])} per fragment per period")
    table = Table("fragment", "state", "host", "start", "end", "proven", "missed", "paid",
                  "repairs")
    for f in result["fragments"]:
        table.add_row(str(f["index"]), f["state"], short(f["host"]), str(f["start"] or "-"),
                      str(f["end"] or "-"), str(f["proven_periods"]), str(f["missed_periods"]),
                      format_coins(f["paid_total"]), str(f["repairs"]))
    console.print(table)
    if result.get("hint"):
        console.print(result["hint"])


@store_app.command("serve")
@friendly
def store_serve(
    listen: ListenOpt = None, log_level: LogLevelOpt = None,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None,
    in_process: InProcessOpt = False, mine_every: MineOpt = 0.0,
    light: LightOpt = False, peer: PeersOpt = None,
) -> None:
    """Run the owner: serve fetches, re-offer what nobody took, repair after missed proofs.

    Logs go to DATADIR/logs/owner.log; with --json, one line on stdout once it serves."""
    where = locate(net, datadir)
    home = where.datadir
    key = owner_key(home)
    bind, port = listen_address(listen, where.config.store.listen if where.config else "127.0.0.1:0")

    reach = Reach.of(api, token, node, in_process, mine_every, light, peer)

    async def go() -> None:
        async with locked_chain(where, reach, home / "store", STORE_LOCK) as chain:
            owner_log_level(where, log_level)
            owner = OwnerAgent(home, Signer(key), chain, bind, port)
            await owner.start()
            try:
                async with serving(owner_control(owner), OWNER, home) as control:

                    def ready() -> None:
                        info = {"owner": str(key.principal), "address": owner.address,
                                "blocks": len(owner.entries),
                                "control": str(control) if control else None}
                        if as_json:
                            print(json.dumps(info), flush=True)
                        else:
                            err.print(f"owner {key.principal} serving {len(owner.entries)} "
                                      f"block(s) at {owner.address}; Ctrl-C to stop")

                    await until_interrupted(ready)
            finally:
                await owner.stop()

    run(go())


@store_app.command("get")
@friendly
def store_get(
    path: Annotated[str, typer.Argument(help="Blocktree path (/<principal>/... or relative).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the file.")],
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None,
    in_process: InProcessOpt = False, light: LightOpt = False, peer: PeersOpt = None,
) -> None:
    """Fetch any k fragments of PATH from their hosts, check, decode, decrypt, write -o FILE."""
    from storage_market import retrieve

    where = locate(net, datadir)
    home = where.datadir
    key = owner_key(home)
    if not output.parent.is_dir():
        raise ConfigError(f"cannot write {output}: {output.parent} is not a directory")

    reach = Reach.of(api, token, node, in_process, light=light, peer=peer)

    async def go() -> dict[str, Any]:
        async with connect(where.params, home, reach) as chain:
            full = full_path(key.principal.root_path, path)
            errors: list[str] = []
            with _progress(as_json) as bar:
                task = bar.add_task("fetching", total=None)
                size = await retrieve.get_to_file(
                    chain, key, full, output,
                    lambda done, total: bar.update(task, completed=done, total=total), errors)
            return {"path": full, "output": str(output), "size": size, "skipped": errors}

    result = run(go())
    emit(as_json, result,
         f"wrote {format_size(result['size'])} of {result['path']} to {result['output']}"
         + (f" ({len(result['skipped'])} bad or unreachable holders skipped)"
            if result["skipped"] else ""))


@store_app.command("release")
@friendly
def store_release(
    path: Annotated[str, typer.Argument(help="Blocktree path (/<principal>/... or relative).")],
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None,
    in_process: InProcessOpt = False, light: LightOpt = False, peer: PeersOpt = None,
) -> None:
    """End PATH's contracts and open offers: the escrow left comes back to the tree."""
    where = locate(net, datadir)
    key = owner_key(where.datadir)
    full = full_path(key.principal.root_path, path)

    async def op(owner: OwnerAgent) -> dict[str, Any]:
        return {"path": full, "released": await owner.release(full)}

    reach = Reach.of(api, token, node, in_process, light=light, peer=peer)
    result = _with_owner(where, reach, key, full, op)
    emit(as_json, result, f"{result['path']}: released {result['released']} contract(s)")


@store_app.command("extend")
@friendly
def store_extend(
    path: Annotated[str, typer.Argument(help="Blocktree path (/<principal>/... or relative).")],
    periods: Annotated[int, typer.Option(help="Periods to add to each contract.", min=1)],
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None,
    in_process: InProcessOpt = False, light: LightOpt = False, peer: PeersOpt = None,
) -> None:
    """Run PATH's active contracts longer: each host consents, the added periods are escrowed."""
    where = locate(net, datadir)
    key = owner_key(where.datadir)
    full = full_path(key.principal.root_path, path)

    async def op(owner: OwnerAgent) -> dict[str, Any]:
        done = await owner.extend(full, periods)
        return {"path": full, "extended": done, "periods_added": periods, "notes": owner.events}

    reach = Reach.of(api, token, node, in_process, light=light, peer=peer)
    result = _with_owner(where, reach, key, full, op)
    if not result["extended"]:
        fail(f"{full}: no contract was extended"
             + (f" ({'; '.join(result['notes'])})" if result["notes"] else ""))
    emit(as_json, result, f"{result['path']}: extended fragments {result['extended']} by "
                          f"{periods} periods" + "".join(f"\n  {n}" for n in result["notes"]))


def _with_owner(where: Where, reach: Reach, key: KeyPair, path: str,
                op: Callable[[OwnerAgent], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run ``op`` on this data directory's owner state (locked against other agents), with its
    chain reached as ``reach`` says, for a block this owner stored at ``path``."""
    home = where.datadir
    _require_block(home, key, path)

    async def go() -> dict[str, Any]:
        async with locked_chain(where, reach, home / "store", STORE_LOCK) as chain:
            owner = OwnerAgent(home, Signer(key), chain)
            try:
                return await op(owner)
            finally:
                await owner.state.close()

    result: dict[str, Any] = run(go())
    return result


def _offline_owner(home: Path, key: KeyPair, where: Where) -> OwnerAgent:
    return OwnerAgent(home, Signer(key), _Offline(where.params))  # type: ignore[arg-type]


def stored_blocks(home: Path) -> dict[str, BlockEntry]:
    """The owner's saved blocks by path, read without starting an agent."""
    from storage_market.jsonstate import read_json

    state = read_json(home / "store" / "state.json") or {}
    entries = (BlockEntry.from_json(b) for b in state.get("blocks", []))
    return {e.path: e for e in entries}


def _require_block(home: Path, key: KeyPair, full: str) -> None:
    """Refuse, before any node is asked, a path this owner never stored."""
    from storage_market.errors import BlockNotFound

    if full not in stored_blocks(home):
        raise BlockNotFound(f"{full} is not stored by this owner (see `blockcoin store status`)")


@store_app.command("status")
@friendly
def store_status(
    path: Annotated[str | None, typer.Argument(help="One path (default: all).")] = None,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """The owner's blocks: where each fragment is, periods proven and missed, repairs."""
    where = locate(net, datadir)
    home = where.datadir
    key = owner_key(home)
    full = full_path(key.principal.root_path, path) if path else None
    if full is not None:
        _require_block(home, key, full)
    status: dict[str, Any] = (
        _offline_owner(home, key, where).status(full) if stored_blocks(home)
        else {"owner": str(key.principal), "address": "", "height": 0, "blocks": []})
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


@host_app.command("start")
@friendly
def host_start(
    capacity: Annotated[str | None, typer.Option(
        help="Space to sell (e.g. 10G; default: [host] capacity in config.toml).")] = None,
    min_price: Annotated[str | None, typer.Option(
        help="Lowest price per fragment per period, in coins or Nsat (default 1sat).")] = None,
    max_collateral: Annotated[str | None, typer.Option(
        help="Most collateral per fragment per period to lock (default: what the balance covers)."
    )] = None,
    payout: Annotated[str | None, typer.Option(
        help="Principal paid for proven periods (default: this data directory's wallet).")
    ] = None,
    fund: Annotated[str | None, typer.Option(
        help="Top the host key up to this many coins from the wallet before starting (it "
             "pays to announce itself and locks collateral).")] = None,
    listen: ListenOpt = None, log_level: LogLevelOpt = None,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None,
    in_process: InProcessOpt = False, mine_every: MineOpt = 0.0,
    light: LightOpt = False, peer: PeersOpt = None,
) -> None:
    """Run a host until interrupted: take offers, store fragments, prove them on chain each
    period and be paid from the owners' escrow.

    Each term of the policy comes from its flag if given, else from a change made on the
    running host from the dashboard (kept in DATADIR/host/policy.json), else from [host] in
    config.toml, else its default.

    Logs go to stderr and DATADIR/logs/host.log; with --json, one line on stdout once it
    listens. The host signs with its own key (DATADIR/host/host.key), which needs coin to
    announce itself and lock collateral: --fund sends it from the wallet."""
    from chain.app.logs import setup_logging
    from chain.node.config import HostConfig

    where = locate(net, datadir)
    home = where.datadir
    cfg = where.config.host if where.config is not None else HostConfig()
    if where.config is None:
        raise ConfigError(f"no data directory at {home} (run `blockcoin init` first)")
    flags = {name for name, given in (("capacity", capacity), ("min_price", min_price),
                                      ("max_collateral", max_collateral), ("payout", payout))
             if given is not None}
    live_capacity = "capacity" not in flags and "capacity" in _live_fields(home)
    size_text = capacity or cfg.capacity or ("0" if live_capacity else None)
    if size_text is None:
        raise ConfigError("how much space to sell? --capacity 10G (or [host] capacity in "
                          "config.toml)")
    top_up = parse_amount(fund) if fund is not None else None
    bind, port = listen_address(listen, cfg.listen)
    payee = payout or cfg.payout
    cap = max_collateral or cfg.max_collateral
    configured = HostPolicy(parse_size(size_text), parse_amount(min_price or cfg.min_price),
                            parse_amount(cap, allow_zero=True) if cap is not None else None,
                            Principal.parse(payee) if payee else _wallet_principal(home))
    policy, live = starting_policy(home, configured, flags)
    reach = Reach.of(api, token, node, in_process, mine_every, light, peer)

    async def go() -> None:
        async with locked_chain(where, reach, home / "host", HOST_LOCK) as chain:
            key = host_key(home)
            setup_logging(home, "host", log_level or cfg.log_level)
            await _fund_host(chain, home, key, top_up)
            if live:
                logging.getLogger("blockcoin.host").info(
                    "keeping the %s set from the dashboard (a flag replaces it)",
                    ", ".join(sorted(live)))
            save_policy(home, policy, live)
            agent = HostAgent(home, key, chain, policy, bind, port)
            await agent.start()
            try:
                async with serving(host_control(agent), HOST, home) as control:

                    def ready() -> None:
                        info = {"host": str(key.principal), "address": agent.address,
                                "payout": str(agent.payout), "capacity": policy.capacity,
                                "min_price": policy.min_price,
                                "control": str(control) if control else None}
                        print(json.dumps(info) if as_json else
                              f"host {key.principal} listening on {agent.address}; selling "
                              f"{format_size(policy.capacity)} from "
                              f"{format_coins(policy.min_price)} per fragment per period; paid "
                              f"to {agent.payout}", flush=True)

                    await until_interrupted(ready)
            finally:
                await agent.stop()

    run(go())


def _live_fields(home: Path) -> set[str]:
    return load_policy(home)[1]


def _wallet_principal(home: Path) -> Principal | None:
    """Where a host is paid by default: the data directory's wallet, so `blockcoin wallet`
    spends what the host earns (None without a wallet: the host's own key)."""
    from chain.node.wallet import Wallet

    return Wallet.principal_in(home) if (home / "wallet.key").exists() else None


async def _fund_host(chain: ChainClient, home: Path, key: KeyPair, target: int | None) -> None:
    """Make sure the host key can pay to announce itself: top it up from the wallet to
    ``target`` (waiting, bounded, for the transfer to be mined), or refuse in one line."""
    from chain.core.events import Transfer

    account = await chain.principal(key.principal)
    balance = account.balance if account is not None else 0
    if target is None or balance >= target:
        if balance == 0:
            raise ConfigError(
                f"the host key {key.principal} has no coin: it pays to announce itself and "
                "locks collateral. Start with --fund 10 to send it 10 coins from this data "
                f"directory's wallet, or send some: blockcoin wallet send {key.principal} 10")
        return
    await Signer(owner_key(home)).submit(chain, Transfer(key.principal, target - balance))
    err.print(f"sent {format_coins(target - balance)} from the wallet to the host key "
              f"{key.principal}; waiting for a block")
    deadline = time.monotonic() + FUND_WAIT
    height = await chain.tip_height()
    while True:
        account = await chain.principal(key.principal)
        if account is not None and account.balance >= target:
            return
        if time.monotonic() > deadline:
            raise ConfigError(f"the transfer to the host key was not mined within {FUND_WAIT:g} s"
                              ": is a node mining?")
        height = await chain.wait_for_block(height, 5.0)


def host_key(datadir: Path) -> KeyPair:
    """The host's own key, created on first use (mode 0600)."""
    path = datadir / "host" / "host.key"
    if not path.exists():
        KeyPair.generate().save(path)
    return KeyPair.load(path)


@host_app.command("status")
@friendly
def host_status(net: NetworkOpt = None, datadir: DatadirOpt = None,
                as_json: JsonOpt = False) -> None:
    """Capacity used, contracts with periods proven and missed, earnings and collateral."""
    where = locate(net, datadir)
    home = where.datadir
    if not (home / "host" / "host.key").exists():
        raise ConfigError(f"no host in {home} (run `blockcoin host start` first)")
    agent = HostAgent(home, host_key(home), _Offline(where.params),  # type: ignore[arg-type]
                      load_policy(home)[0])
    status = agent.status()
    if as_json:
        typer.echo(json.dumps(status))
        return
    console = Console()
    console.print(f"host [bold]{status['principal']}[/] paid to {short(status['payout'])}: "
                  f"{format_size(status['used'])} of {format_size(status['capacity'])} used; "
                  f"earned {format_coins(status['earned'])}, still to earn "
                  f"{format_coins(status['future'])}, collateral locked "
                  f"{format_coins(status['collateral_locked'])}; "
                  f"{status['proven_periods']} periods proven, {status['missed_periods']} missed")
    table = Table("contract", "path", "fragment", "owner", "size", "state", "proven", "missed",
                  "paid", "corrupt")
    for c in status["contracts"]:
        table.add_row(short(c["id"]), c["path"][-24:], str(c["index"]), short(c["owner"]),
                      format_size(c["size"]), c["state"], str(c["proven_periods"]),
                      str(c["missed_periods"]), format_coins(c["paid_total"]),
                      "yes" if c["corrupt"] else "")
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
    from chain.app.demo import DemoError, main

    try:
        result = main(parse_size(size), periods, keep, as_json, mine_interval)
    except (KeyboardInterrupt, asyncio.CancelledError):
        typer.echo("interrupted; every process the demo started is stopped", err=True)
        raise typer.Exit(130) from None
    except DemoError as exc:  # not a user's mistake: the whole story, with the logs' tail
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(result), flush=True)
    else:
        print(f"== Done in {result['seconds']:.0f} s: {result['stored_fragments']} fragments "
              f"stored, {result['payments_made']} period payments from escrow, "
              f"{result['hosts_stopped']} hosts stopped, the file recovered "
              f"{'byte-identical' if result['recovered_identical'] else 'DIFFERENT'}", flush=True)
    if not result["recovered_identical"]:
        raise typer.Exit(1)
