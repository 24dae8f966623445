"""``blockcoin tree ...``: the local blocktree (directories, versions, sharing, links, the
several nodes of one tree, revocation) on top of the storage market.

Reading commands (``ls``, ``log``) answer from the data directory alone; ``get`` asks the chain
for the newest version and fetches what is not kept locally from its hosts. Commands that place
blocks run the owner agent for as long as the hosts take to fetch them (like ``store put``),
hold ``DATADIR/store/LOCK`` meanwhile, state what each block escrows and want ``--yes`` (or a
yes on a terminal) before spending. See :mod:`storage_market.tree` for the model.

``--light --peer HOST:PORT`` runs a command that reaches the chain on the data directory's
light client (:mod:`chain.app.lightchain`): what it acts on is proven against its own headers.
``unshare`` and ``revoke`` refuse it (:func:`refuse_light`).
"""

from __future__ import annotations

import datetime
import functools
import inspect
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from chain.app.clikit import DatadirOpt, JsonOpt, NetworkOpt, Where, emit, friendly, locate
from chain.app.render import short
from chain.app.storage import (
    STORE_LOCK,
    ApiOpt,
    InProcessOpt,
    LightOpt,
    ListenOpt,
    LogLevelOpt,
    MineOpt,
    NodeOpt,
    PeersOpt,
    Reach,
    TokenOpt,
    confirm_cost,
    connect,
    listen_address,
    locked_chain,
    owner_key,
    owner_log_level,
    run,
    stored_blocks,
)
from chain.core.errors import ConfigError
from chain.core.principal import Principal
from chain.core.units import format_coins, format_size, parse_amount
from storage_market.blockstore import BlockStore
from storage_market.crypto import full_path
from storage_market.errors import BlockNotFound, GrantError, TreeError
from storage_market.owner import OwnerAgent, StoreOptions
from storage_market.tree import (
    Identity,
    LocalTree,
    Opener,
    TreeIndex,
    archived,
    check_grant,
    decode_grant,
    identity,
    listing,
    pick_version,
    version_log,
)

tree_app = typer.Typer(
    help="Your blocktree: directories and versions (ls, log, get, put, mkdir, rm), sharing "
         "(share, unshare, link), your other nodes (grant, import-grant, revoke).",
    no_args_is_help=True)

KOpt = Annotated[int, typer.Option("--k", help="Fragments needed to read a block back.")]
NOpt = Annotated[int, typer.Option("--n", help="Fragments stored per block (one per host).")]
PriceOpt = Annotated[str, typer.Option(
    help="Per fragment per period, in coins (or base units as Nsat).")]
CollateralOpt = Annotated[str, typer.Option(
    help="Asked of each host per fragment per period, burned if it misses a proof.")]
PeriodsOpt = Annotated[int, typer.Option(help="Periods to pay for (escrowed now).", min=1)]
PeriodBlocksOpt = Annotated[int | None, typer.Option(
    help="Blocks per proof period (default: the network's); hosts prove once a period.",
    min=1)]
WaitOpt = Annotated[float, typer.Option(
    help="Seconds to wait for hosts to hold every fragment.", min=0.0)]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Spend without asking.")]
PathArg = Annotated[str, typer.Argument(help="Tree path (/<principal>/... or relative to "
                                             "your tree).")]
PrincipalArg = Annotated[str, typer.Argument(help="The other principal (blk...).")]

err = Console(stderr=True)


def _path(me: Identity, path: str) -> str:
    """A path as given, or relative to the tree this node writes in."""
    return full_path(me.tree.root_path, path)


def _me(where: Where, now: int | None = None) -> Identity:
    return identity(where.datadir, owner_key(where.datadir), where.params.chain_id, now)


def parse_expiry(text: str, now: int | None = None) -> int:
    """``30d``, ``12h``, ``90m`` or ``600s`` from now, a unix time, or an ISO date and time
    (UTC unless it names a zone): the writecap's expiry as the chain's block time."""
    now = int(time.time()) if now is None else now
    text = text.strip()
    match = re.fullmatch(r"(\d+)([smhd])", text)
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return now + int(match.group(1)) * unit
    if text.isdigit():
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not an expiry: {text!r} (30d, 12h, a unix time or an ISO date)"
                          ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())


def _placing(where: Where, reach: Reach, options: StoreOptions, wait: float, yes: bool,
             listen: str | None, log_level: str | None, blocks_hint: str,
             op: Callable[[LocalTree], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run ``op`` with a started owner agent acting as this node (the tree's owner, or a node
    of another tree through its grant), after the user agreed to what a block costs."""
    home = where.datadir
    me = _me(where)
    options.check()
    bind, port = listen_address(listen, where.config.store.listen if where.config else
                                "127.0.0.1:0")
    per_block = options.n * options.price * options.periods
    confirm_cost(f"{blocks_hint}: each block placed escrows {format_coins(per_block)} "
                 f"({options.n} fragments x {format_coins(options.price)} x {options.periods} "
                 f"periods) from {me.tree}, plus fees", yes)

    async def go() -> dict[str, Any]:
        async with locked_chain(where, reach, home / "store", STORE_LOCK) as chain:
            owner_log_level(where, log_level)
            agent = OwnerAgent(home, me.signer(), chain, bind, port, defaults=options)
            await agent.start()
            try:
                return await op(LocalTree(home, me, agent, options, wait))
            finally:
                await agent.stop()

    result: dict[str, Any] = run(go())
    return result


def _options(k: int, n: int, price: str, collateral: str, periods: int,
             period_blocks: int | None) -> StoreOptions:
    return StoreOptions(k=k, n=n, price=parse_amount(price),
                        collateral=parse_amount(collateral, allow_zero=True), periods=periods,
                        period_blocks=period_blocks)


@dataclass(frozen=True)
class Placement:
    """What a command that places blocks was told: where the node and its chain are, what each
    block placed costs, how long to wait for hosts, and how to report."""

    where: Where
    reach: Reach
    options: StoreOptions
    wait: float
    yes: bool
    listen: str | None
    log_level: str | None
    as_json: bool

    @property
    def me(self) -> Identity:
        return _me(self.where)

    def run(self, blocks_hint: str,
            op: Callable[[LocalTree], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        return _placing(self.where, self.reach, self.options, self.wait, self.yes, self.listen,
                        self.log_level, blocks_hint, op)


def _placement(
    k: KOpt = 3, n: NOpt = 5, price: PriceOpt = "100000sat", collateral: CollateralOpt = "0sat",
    periods: PeriodsOpt = 12, period_blocks: PeriodBlocksOpt = None, wait: WaitOpt = 300.0,
    yes: YesOpt = False,
    listen: ListenOpt = None, log_level: LogLevelOpt = None,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None,
    in_process: InProcessOpt = False, mine_every: MineOpt = 0.0,
    light: LightOpt = False, peer: PeersOpt = None,
) -> Placement:
    return Placement(locate(net, datadir),
                     Reach.of(api, token, node, in_process, mine_every, light, peer),
                     _options(k, n, price, collateral, periods, period_blocks), wait, yes,
                     listen, log_level, as_json)


def refuse_light(place: Placement, command: str) -> None:
    """``unshare`` and ``revoke`` re-key every block below a path, the ones other nodes of the
    tree wrote included, which they find in the node's list of the tree's contracts: a list no
    proof shows complete, so a lying node could keep a block from being re-keyed and readable
    by the very principal cut off. They need a node that is trusted."""
    if place.reach.light:
        raise ConfigError(f"tree {command} cannot run with --light: it re-keys the blocks other "
                          "nodes of the tree wrote, found in a list of contracts no proof shows "
                          "complete; use a node you trust (--node DIR or --api URL)")


def placing_command(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a tree command that places blocks. Its function takes its own arguments and a
    ``place: Placement``; the command line gets its own arguments followed by the options of
    :func:`_placement` (one list of them for every such command, so they read the same)."""
    common = list(inspect.signature(_placement, eval_str=True).parameters.values())
    names = [p.name for p in common]

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values()
               if p.name != "place"]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> None:
            place = _placement(**{key: kwargs.pop(key) for key in names})
            fn(place=place, **kwargs)

        del command.__wrapped__  # typer reads the signature below, not ``fn``'s
        command.__signature__ = inspect.Signature(own + common)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in own + common}
        tree_app.command(name)(friendly(command))
        return fn

    return register


# --- reading -------------------------------------------------------------------------------------


@tree_app.command("ls")
@friendly
def tree_ls(
    path: Annotated[str | None, typer.Argument(
        help="A directory (default: the tree's root, or a granted node's directory).")] = None,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """The children of PATH: kind, size, versions, latest height, fragments held (health:
    ok, degraded below n, at-risk below k) and who it is shared with. Reads only this data
    directory."""
    where = locate(net, datadir)
    me = _me(where)
    full = _path(me, path) if path else me.top
    rows = listing(TreeIndex(where.datadir), stored_blocks(where.datadir), full)
    if as_json:
        typer.echo(json.dumps({"path": full, "entries": rows}))
        return
    if not rows:
        typer.echo(f"{full}: empty")
        return
    table = Table("name", "kind", "size", "versions", "height", "held", "health", "shared with",
                  title=full, title_justify="left")
    for r in rows:
        name = r["name"] + ("/" if r["kind"] == "dir" else "")
        if r["kind"] == "link":
            name += f" -> {r['target']}"
        table.add_row(name, r["kind"], format_size(r["size"]), str(r["versions"]),
                      str(r["height"] or "-"), f"{r['placed']}/{r['n']}", r["health"],
                      ", ".join(short(p) for p in r["shared_with"]))
    Console(width=160).print(table)


@tree_app.command("log")
@friendly
def tree_log(path: PathArg, net: NetworkOpt = None, datadir: DatadirOpt = None,
             as_json: JsonOpt = False) -> None:
    """The versions of PATH this node wrote, oldest first, with the height each was offered
    at; `tree get PATH --version N` reads one back."""
    where = locate(net, datadir)
    full = _path(_me(where), path)
    rows = version_log(TreeIndex(where.datadir), full)
    emit(as_json, {"path": full, "versions": rows}, "\n".join(
        f"{r['n']:>3}  {r['version'][:16]}  height {r['height']:<8} {format_size(r['size'])}"
        for r in rows))


@tree_app.command("get")
@friendly
def tree_get(
    path: PathArg,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where to write it (default: stdout).")] = None,
    version: Annotated[str | None, typer.Option(
        help="An older version: its number in `tree log` or a prefix of its id.")] = None,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None,
    in_process: InProcessOpt = False, light: LightOpt = False, peer: PeersOpt = None,
) -> None:
    """Read PATH: its newest version from the hosts /global/fragments names (or this node's
    copy of that version), opened with a readcap for this node, a shared directory's above
    it, or a link's. Links on the way (in this tree, or met as blocks) are followed, into
    other principals' trees too. With --light, every holder and contract asked of the node is
    proven against this client's own headers first."""
    where = locate(net, datadir)
    home = where.datadir
    me = _me(where)
    full = _path(me, path)
    if as_json and output is None:
        raise ConfigError("--json needs -o FILE (the content cannot share stdout)")
    if output is not None and not output.parent.is_dir():
        raise ConfigError(f"cannot write {output}: {output.parent} is not a directory")
    index = TreeIndex(home)
    wanted = pick_version(index, full, version) if version is not None else None

    async def go() -> tuple[str, bytes, str]:
        reach = Reach.of(api, token, node, in_process, light=light, peer=peer)
        async with connect(where.params, home, reach) as chain:
            opener = Opener(chain, me.key, BlockStore(home / "store" / "blocks"))
            if wanted is not None:
                try:
                    current = (await opener.block(full)).version
                except BlockNotFound:
                    current = b""
                if current != wanted:
                    old = archived(home, full, wanted)
                    if old is None:
                        raise BlockNotFound(f"version {wanted.hex()[:16]} of {full} is no "
                                            "longer kept")
                    return full, bytes(old.open(old.block_key(me.key))), wanted.hex()
            read, block, data = await opener.read(full, index)
            return read, bytes(data), block.version.hex()

    read, data, ver = run(go())
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    tmp = output.with_name(f".{output.name}.part")
    try:
        tmp.write_bytes(data)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    emit(as_json, {"path": full, "read": read, "version": ver, "size": len(data),
                   "output": str(output)},
         f"wrote {format_size(len(data))} of {full}"
         + (f" (through {read})" if read != full else "") + f" to {output}")


# --- placing -------------------------------------------------------------------------------------


@placing_command("put")
def tree_put(
    source: Annotated[Path, typer.Argument(help="A file, or a directory put recursively.")],
    path: PathArg,
    *, place: Placement,
) -> None:
    """Put SOURCE at PATH: a file as one block (a new version if PATH holds one: its old
    contracts are released, the old record kept for `get --version`), a directory as a
    directory block and every file and directory in it. Missing directories above PATH are
    made. A granted node puts only under its grant, paid from the tree within its allowance."""
    if not source.exists():
        raise ConfigError(f"{source}: No such file or directory")
    full = _path(place.me, path)
    result = place.run(f"putting {source} at {full}", lambda tree: _done(tree.put(source, full)))
    emit(place.as_json, result, f"placed {len(result['placed'])} block(s) under {full}")


async def _done(work: Awaitable[list[str]]) -> dict[str, Any]:
    return {"placed": await work}


@placing_command("mkdir")
def tree_mkdir(
    path: PathArg,
    *, place: Placement,
) -> None:
    """Make the directory PATH (and any missing above it): an empty block whose key wraps
    its children's, placed on the market so those it is shared with can open them."""
    full = _path(place.me, path)
    result = place.run(f"making {full}", lambda tree: _done(tree.mkdir(full)))
    emit(place.as_json, result, f"made {', '.join(result['placed'])}")


@tree_app.command("rm")
@friendly
def tree_rm(
    path: PathArg,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None,
    in_process: InProcessOpt = False, light: LightOpt = False, peer: PeersOpt = None,
) -> None:
    """Remove PATH and everything below it: their contracts are released (the escrow left
    comes back to the tree) and the local copies deleted. With --light, the contracts of
    blocks another node of the tree placed are the ones the node lists, each proven by id:
    it can leave one out (its escrow comes back when it ends), not make one up."""
    where = locate(net, datadir)
    home = where.datadir
    me = _me(where)
    full = _path(me, path)
    if not TreeIndex(home).under(full):
        raise BlockNotFound(f"{full} is not in this tree")

    async def go() -> dict[str, Any]:
        reach = Reach.of(api, token, node, in_process, light=light, peer=peer)
        async with locked_chain(where, reach, home / "store", STORE_LOCK) as chain:
            agent = OwnerAgent(home, me.signer(), chain)
            try:
                removed = await LocalTree(home, me, agent, StoreOptions()).rm(full)
            finally:
                await agent.state.close()
            return {"path": full, "removed": removed}

    result = run(go())
    emit(as_json, result, f"removed {result['removed']} block(s) under {full}")


@placing_command("share")
def tree_share(
    path: PathArg, principal: PrincipalArg,
    *, place: Placement,
) -> None:
    """Let PRINCIPAL read PATH and, for a directory, everything below it: a new version of
    PATH with a readcap for the X25519 key PRINCIPAL announced in /global/principals."""
    full = _path(place.me, path)
    who = Principal.parse(principal)
    result = place.run(f"sharing {full}", lambda tree: _done(tree.share(full, who)))
    emit(place.as_json, {**result, "path": full, "principal": str(who)},
         f"{full} is shared with {who}")


@placing_command("unshare")
def tree_unshare(
    path: PathArg, principal: PrincipalArg,
    *, place: Placement,
) -> None:
    """Stop sharing PATH with PRINCIPAL: re-key PATH and every block below it (new block
    keys, readcaps without PRINCIPAL) and place the new versions. What PRINCIPAL already
    read stays read; no later version opens for it. Not with --light: the blocks other nodes
    of the tree wrote are found in the node's list of contracts, which no proof shows
    complete."""
    refuse_light(place, "unshare")
    full = _path(place.me, path)
    who = Principal.parse(principal)
    result = place.run(f"re-keying {full}", lambda tree: _done(tree.unshare(full, who)))
    emit(place.as_json, {**result, "path": full, "principal": str(who)},
         f"{full} no longer shared with {who}: re-keyed {len(result['placed'])} block(s)")


@placing_command("link")
def tree_link(
    path: PathArg,
    target: Annotated[str, typer.Argument(help="The path linked to (any tree, /<principal>/...).")],
    *, place: Placement,
) -> None:
    """Make PATH a symbolic link to TARGET: a block holding TARGET's path and a readcap for
    its key (so TARGET must be readable now, e.g. shared with you). `tree get PATH/...` then
    reads through it."""
    full, goal = _path(place.me, path), _path(place.me, target)
    result = place.run(f"linking {full} to {goal}", lambda tree: _done(tree.link(full, goal)))
    emit(place.as_json, {**result, "path": full, "target": goal}, f"{full} -> {goal}")


# --- nodes of one tree ---------------------------------------------------------------------------


@tree_app.command("announce")
@friendly
def tree_announce(
    listen: ListenOpt = None, log_level: LogLevelOpt = None,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    api: ApiOpt = None, token: TokenOpt = None, node: NodeOpt = None,
    in_process: InProcessOpt = False, mine_every: MineOpt = 0.0,
    light: LightOpt = False, peer: PeersOpt = None,
    wait: WaitOpt = 120.0,
) -> None:
    """Publish this node's encryption key and address in /global/principals (paid by its own
    wallet) and wait until it is mined: a tree shares with, and grants to, announced
    principals only."""
    where = locate(net, datadir)
    home = where.datadir
    key = owner_key(home)
    bind, port = listen_address(listen, where.config.store.listen if where.config else
                                "127.0.0.1:0")

    async def go() -> dict[str, Any]:
        reach = Reach.of(api, token, node, in_process, mine_every, light, peer)
        async with locked_chain(where, reach, home / "store", STORE_LOCK) as chain:
            owner_log_level(where, log_level)
            agent = OwnerAgent(home, _me(where).signer(), chain, bind, port)
            await agent.start()
            try:
                deadline = time.monotonic() + wait
                height = await chain.tip_height()
                while True:
                    acct = await chain.principal(key.principal)
                    if acct is not None and acct.x25519 == key.public.x25519:
                        return {"principal": str(key.principal), "address": agent.address}
                    if time.monotonic() > deadline:
                        raise TreeError(f"the announcement was not mined within {wait:g} s")
                    height = await chain.wait_for_block(height, 2.0)
            finally:
                await agent.stop()

    result = run(go())
    emit(as_json, result, f"{result['principal']} announced")


@placing_command("grant")
def tree_grant(
    principal: PrincipalArg, path: PathArg,
    expires: Annotated[str, typer.Option(
        help="When the grant ends: 30d, 12h, a unix time or an ISO date (UTC).")],
    allowance: Annotated[str | None, typer.Option(
        help="The most the node may move out of the tree's account (escrow and fees), in "
             "coins or Nsat (default: no limit).")] = None,
    *, place: Placement,
) -> None:
    """Make PRINCIPAL (another node of yours, announced on chain) a node of this tree at PATH:
    the directory gets a readcap for it, and a writecap (PATH, expiry, allowance) is printed
    as a token for `blockcoin tree import-grant` on that node."""
    full = _path(place.me, path)
    who = Principal.parse(principal)
    expiry = parse_expiry(expires)
    limit = parse_amount(allowance, allow_zero=True) if allowance is not None else None

    async def op(tree: LocalTree) -> dict[str, Any]:
        return {"token": await tree.grant(who, full, expiry, limit)}

    result = place.run(f"granting {full} to {who}", op)
    emit(place.as_json, {**result, "principal": str(who), "path": full, "expiry": expiry,
                   "allowance": limit},
         f"granted {full} to {who} until {expiry}; on that node run:\n"
         f"  blockcoin tree import-grant {result['token']}")


@tree_app.command("import-grant")
@friendly
def tree_import_grant(
    grant: Annotated[str, typer.Argument(help="The token `blockcoin tree grant` printed.")],
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Become a node of another tree: keep the writecap of TOKEN (checked: issued to this
    node's key, for this network, signed back to the tree's owner, not expired). From then on
    this node's tree commands write under the grant's path, paid from that tree."""
    where = locate(net, datadir)
    home = where.datadir
    key = owner_key(home)
    chain_id, cap = decode_grant(grant)
    owner = check_grant(where.params.chain_id, cap, chain_id, key.principal, int(time.time()))
    index = TreeIndex(home)
    if index.token is not None and decode_grant(index.token)[1] != cap:
        raise GrantError("this node already holds a grant; one data directory is one node")
    if any(p.startswith(key.principal.root_path + "/") for p in index.nodes):
        raise GrantError("this data directory writes its own tree; use another for this node")
    index.token = "".join(grant.split()).upper()
    index.save()
    emit(as_json, {"tree": str(owner), "path": cap.path, "expiry": cap.expiry,
                   "allowance": cap.allowance},
         f"this node now writes under {cap.path} for {owner}, until {cap.expiry}"
         + (f", within {format_coins(cap.allowance)}" if cap.allowance is not None else ""))


@placing_command("revoke")
def tree_revoke(
    principal: PrincipalArg,
    *, place: Placement,
) -> None:
    """Revoke a node of this tree: publish Revoke (the chain refuses its writecaps from the
    next block until they expire), then re-key every block under its paths, the ones it wrote
    included, without its readcap, and place the new versions. Not with --light: the blocks
    it wrote are found in the node's list of contracts, which no proof shows complete."""
    refuse_light(place, "revoke")
    who = Principal.parse(principal)

    async def op(tree: LocalTree) -> dict[str, Any]:
        eid, paths = await tree.revoke(who)
        return {"revoke": eid.hex(), "placed": paths}

    result = place.run(f"revoking {who} and re-keying its paths", op)
    emit(place.as_json, {**result, "principal": str(who)},
         f"revoked {who}; re-keyed {len(result['placed'])} block(s)")

