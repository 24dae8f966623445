"""The ``blockcoin`` command line.

Every command takes ``--network``, ``--datadir`` and ``--json``. Errors a user can cause
(a mistyped principal, an amount over the balance, a locked data directory) print one line
to stderr and exit 1 with nothing changed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from chain import __version__
from chain.app.clikit import (
    DatadirOpt,
    JsonOpt,
    NetworkOpt,
    Where,
    emit,
    friendly,
    locate,
    os_error_line,
)
from chain.app.light import ProvenQuery, emit_proven, light_app, proven_from_node
from chain.app.storage import demo_command, host_app, store_app
from chain.app.tree import tree_app
from chain.core.block import Block
from chain.core.blockfile import read_blocks, write_blocks
from chain.core.errors import BlockcoinError, ConfigError
from chain.core.events import Coinbase, SignedEvent, Transfer
from chain.core.filemodes import private_umask
from chain.core.header import hash_from_hex, hash_hex
from chain.core.principal import Principal
from chain.core.units import format_coins, parse_amount
from chain.net.http import ApiClient, ApiError, NodeNotRunning
from chain.node.local import LocalNode, init_datadir
from chain.node.wallet import DEFAULT_FEE
from ledger.errors import DatadirLocked

app = typer.Typer(help="Blockcoin: a proof-of-work chain whose coin pays for storage.",
                  no_args_is_help=True, add_completion=True)
wallet_app = typer.Typer(help="The node's wallet: address, balance, send.", no_args_is_help=True)
query_app = typer.Typer(help="Query the chain and the global tree.", no_args_is_help=True)
app.add_typer(wallet_app, name="wallet")
app.add_typer(query_app, name="query")
app.add_typer(store_app, name="store")
app.add_typer(host_app, name="host")
app.add_typer(light_app, name="light")
app.add_typer(tree_app, name="tree")
app.command("demo")(demo_command)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"blockcoin {__version__}")
        raise typer.Exit()


@app.callback()
def _common(version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Every command creates its files private to the user, whatever the umask."""
    private_umask()


def main(args: list[str] | None = None) -> None:
    """The ``blockcoin`` entry point: the commands, with a usage mistake (an unknown option, a
    missing argument) reported like every other error, in one line with status 1."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="blockcoin", standalone_mode=False)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(1)
    except typer.TyperException as exc:  # a usage mistake, as the parser words it
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        typer.echo(f"error: {message}", err=True)
        sys.exit(1)
    except OSError as exc:  # e.g. stdout closed early (`blockcoin ... | head`)
        typer.echo(f"error: {os_error_line(exc)}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", min=1, help="Mining threads (default: every core).")]
LogLevelOpt = Annotated[str | None, typer.Option(
    "--log-level", envvar="BLOCKCOIN_LOG_LEVEL", show_default=False,
    help="debug, info, warning or error (default: the config's, else info).")]
FeeOpt = Annotated[str, typer.Option(
    "--fee", help="Fee paid for the event, in coins (or base units as Nsat).")]
DEFAULT_FEE_TEXT = f"{DEFAULT_FEE}sat"


def format_rate(hashes_per_s: float) -> str:
    for unit, scale in (("GH/s", 1e9), ("MH/s", 1e6), ("kH/s", 1e3)):
        if hashes_per_s >= scale:
            return f"{hashes_per_s / scale:.2f} {unit}"
    return f"{hashes_per_s:.0f} H/s"


def _open(where: Where) -> LocalNode:
    return LocalNode(where.datadir, where.params)


def _open_or_api(where: Where) -> LocalNode | ApiClient:
    """The local node, or, when a running node holds the data directory, a client of its API."""
    try:
        return _open(where)
    except DatadirLocked:
        try:
            return ApiClient.for_datadir(where.datadir)
        except NodeNotRunning:
            raise NodeNotRunning(
                f"{where.datadir} is locked by another process that serves no API (a node "
                "starting or stopping, or another command): try again in a moment") from None


@app.command()
@friendly
def init(
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    dev_key: Annotated[int | None, typer.Option(
        "--dev-key", min=0, max=9,
        help="Regtest: use development key N (funded at genesis, known to everyone) as the "
             "wallet key instead of a fresh one.")] = None,
    encrypt: Annotated[bool, typer.Option(
        "--encrypt",
        help="Keep the wallet key encrypted (scrypt + ChaCha20-Poly1305) under a passphrase, "
             "taken from BLOCKCOIN_PASSPHRASE or asked for; every later command that signs "
             "needs BLOCKCOIN_PASSPHRASE set. An existing plain key is encrypted.")] = False,
) -> None:
    """Create the data directory, its config.toml and a fresh wallet key."""
    from chain.core.keys import PASSPHRASE_ENV, KeyPair

    where = locate(net, datadir)
    path = where.datadir
    if dev_key is not None and where.net != "regtest":
        raise ConfigError("--dev-key is for regtest only")
    passphrase = None
    if encrypt:
        passphrase = os.environ.get(PASSPHRASE_ENV) or typer.prompt(
            "passphrase for the wallet key", hide_input=True, confirmation_prompt=True)
        if len(passphrase) < 8:
            raise ConfigError("a passphrase has at least 8 characters")
        os.environ[PASSPHRASE_ENV] = passphrase  # this process opens the wallet again below
    key = KeyPair.development(dev_key) if dev_key is not None else None
    wallet, created = init_datadir(path, where.params, passphrase, key)
    try:
        with LocalNode(path, where.params) as node:
            height = node.chain.tip.height
    except DatadirLocked:
        with ApiClient.for_datadir(path) as client:
            height = int(client.get("/tip")["height"])
    emit(as_json, {"datadir": str(path), "network": where.net,
                   "principal": str(wallet.principal), "created": created, "height": height,
                   "encrypted": KeyPair.is_sealed(path / "wallet.key")},
         f"{'initialised' if created else 'already initialised'} {path} ({where.net});"
         f" wallet {wallet.principal}")


@app.command()
@friendly
def mine(
    blocks: Annotated[int, typer.Option("--blocks", "-b", min=1, help="How many blocks to mine.")] = 1,
    to: Annotated[str | None, typer.Option("--to", help="Principal paid (default: wallet).")] = None,
    threads: ThreadsOpt = None,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Mine blocks on the local chain, including pending events (like generatetoaddress).

    With a node running on the data directory, its miner does the work through the API.
    Without a network named anywhere, this means regtest."""
    recipient = Principal.parse(to) if to else None
    node_or_api = _open_or_api(locate(net, datadir, default_net="regtest"))
    if isinstance(node_or_api, ApiClient):
        mined: list[str] = []
        with node_or_api as client:
            while len(mined) < blocks:
                body: dict[str, Any] = {"blocks": min(100, blocks - len(mined))}
                if recipient is not None:
                    body["to"] = str(recipient)
                done = client.post("/mine", body)
                mined += done["mined"]
        emit(as_json, {"mined": mined, "height": done["height"], "hash": done["hash"]},
             f"mined {len(mined)} block(s); tip {done['height']} {done['hash']}")
        return
    with node_or_api as node:
        hashes = []
        reward = 0
        for _ in range(blocks):
            block = node.mine_block(recipient, threads=threads)
            hashes.append(hash_hex(block.hash))
            reward += sum(e.amount for e in block.events if isinstance(e, Coinbase))
            solved = node.last_mined
            if solved is not None and not as_json:
                typer.echo(f"block {node.chain.tip.height}: {solved.hashes:,} hashes in "
                           f"{solved.seconds:.3f} s ({format_rate(solved.hashrate)})", err=True)
        tip = node.chain.tip
        emit(as_json, {"mined": hashes, "height": tip.height, "hash": hash_hex(tip.hash),
                       "reward": reward},
             f"mined {blocks} block(s); tip {tip.height} {hash_hex(tip.hash)}; paid "
             f"{format_coins(reward)}" + ("" if reward else
                                          " (a block pays its fees and coin minted for storage "
                                          "proven in it: none here)"))


@wallet_app.command("address")
@friendly
def wallet_address(net: NetworkOpt = None, datadir: DatadirOpt = None,
                   as_json: JsonOpt = False) -> None:
    """The wallet's principal (where to send it coin); no passphrase needed."""
    from chain.node.wallet import Wallet

    principal = Wallet.principal_in(locate(net, datadir).datadir)
    emit(as_json, {"principal": str(principal)}, str(principal))


@wallet_app.command("balance")
@friendly
def wallet_balance(
    principal: Annotated[str | None, typer.Argument(help="Principal (default: wallet).")] = None,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Balance of the wallet or of PRINCIPAL, in coins; no passphrase needed. A host whose
    payout is this wallet (the default) is paid here."""
    from chain.node.wallet import Wallet

    where = locate(net, datadir)
    p = Principal.parse(principal) if principal else Wallet.principal_in(where.datadir)
    node_or_api = _open_or_api(where)
    if isinstance(node_or_api, ApiClient):
        with node_or_api as client:
            try:
                balance = int(client.principal(str(p))["balance"])
            except ApiError as exc:
                if exc.status != 404:
                    raise
                balance = 0
    else:
        with node_or_api as node:
            balance = node.chain.tree.balance(p)
    emit(as_json, {"principal": str(p), "balance": balance}, format_coins(balance))


@wallet_app.command("send")
@friendly
def wallet_send(
    to: Annotated[str, typer.Argument(help="Recipient principal (blk...).")],
    amount: Annotated[str, typer.Argument(help="Coins (1.5) or base units (150sat).")],
    fee: FeeOpt = DEFAULT_FEE_TEXT,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Sign a transfer and queue it for the next block."""
    recipient = Principal.parse(to)
    value = parse_amount(amount)
    fee_units = parse_amount(fee, allow_zero=True)
    event, eid = send_transfer(locate(net, datadir), recipient, value, fee_units)
    emit(as_json, {"event": eid.hex(), "to": str(recipient), "amount": value, "fee": fee_units,
                   "nonce": event.nonce},
         f"sent {format_coins(value)} to {recipient} (fee {format_coins(fee_units)}); "
         f"event {eid.hex()[:16]} pending")


def send_transfer(where: Where, recipient: Principal, value: int,
                  fee: int = DEFAULT_FEE) -> tuple[SignedEvent, bytes]:
    """Sign a transfer from the wallet and submit it, through the running node if there is
    one; the event and its id."""
    from chain.node.wallet import Wallet

    node_or_api = _open_or_api(where)
    if isinstance(node_or_api, ApiClient):
        wallet = Wallet.load(where.datadir)
        with node_or_api as client:
            try:
                nonce = int(client.principal(str(wallet.principal))["next_nonce"])
            except ApiError as exc:
                if exc.status != 404:
                    raise
                nonce = 0
            event = SignedEvent.create(where.params.chain_id, wallet.key, nonce, fee,
                                       Transfer(recipient, value), wallet.account, wallet.writecap)
            eid = bytes.fromhex(client.post("/events", {"event": event.raw.hex()})["id"])
        return event, eid
    with node_or_api as node:
        event = node.wallet.sign(node.chain, node.mempool, Transfer(recipient, value), fee)
        return event, node.submit(event)


@query_app.command("tip")
@friendly
def query_tip(net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False) -> None:
    """Height and hash of the best chain's tip."""
    node_or_api = _open_or_api(locate(net, datadir))
    if isinstance(node_or_api, ApiClient):
        with node_or_api as client:
            data = client.get("/tip")
        emit(as_json, {"height": data["height"], "hash": data["hash"]},
             f"{data['height']} {data['hash']}")
        return
    with node_or_api as node:
        tip = node.chain.tip
        emit(as_json, {"height": tip.height, "hash": hash_hex(tip.hash)},
             f"{tip.height} {hash_hex(tip.hash)}")


def block_json(block: Block, height: int | None, chain_id: bytes) -> dict[str, Any]:
    from chain.api.views import block_json as render

    return render(block, height, chain_id)


@query_app.command("block")
@friendly
def query_block(
    ident: Annotated[str, typer.Argument(help="Block hash (hex) or best-chain height.")],
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """A block by hash or height: its header, then one line per event."""
    from chain.app.render import block_text

    node_or_api = _open_or_api(locate(net, datadir))
    if isinstance(node_or_api, ApiClient):
        from urllib.parse import quote

        with node_or_api as client:
            data = client.get(f"/blocks/{quote(ident)}")
        emit(as_json, data, block_text(data))
        return
    with node_or_api as node:
        if ident.isdigit():
            found = node.chain.best_chain_hash(int(ident))
            if found is None:
                raise BlockcoinError(f"no block at height {ident} (tip {node.chain.tip.height})")
            h = found
        else:
            h = hash_from_hex(ident)
        block = node.chain.store.get_block(h)
        entry = node.chain.index.get(h)
        if block is None or entry is None:
            raise BlockcoinError(f"unknown block {ident}")
        data = block_json(block, entry.height, node.params.chain_id)
        emit(as_json, data, block_text(data))


ProveOpt = Annotated[bool, typer.Option(
    "--prove", help="Add a proof of the answer against the tip's header, and check it.")]


@query_app.command("principal")
@friendly
def query_principal(
    principal: Annotated[str, typer.Argument(help="Principal (blk...).")],
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    prove: ProveOpt = False,
) -> None:
    """/global/principals/P: keys, address, balance and nonce, and a host's public record
    (bytes stored, contracts, periods proven and missed, earned, collateral locked)."""
    from chain.app.render import principal_text

    p = Principal.parse(principal)
    if prove:
        _query_proven(locate(net, datadir), ProvenQuery.principal(p), as_json, principal_text)
        return
    node_or_api = _open_or_api(locate(net, datadir))
    if isinstance(node_or_api, ApiClient):
        with node_or_api as client:
            data = client.principal(str(p))
    else:
        with node_or_api as node:
            found = node.chain.tree.principal_json(p)
            if found is None:
                raise BlockcoinError(f"principal {p} has no record in the global tree")
            data = found
    emit(as_json, data, principal_text(data))


def _query_proven(where: Where, query: ProvenQuery, as_json: bool,
                  render: Callable[[dict[str, Any]], str]) -> None:
    """The answer with its proof: from the running node's API (checked against the header it
    serves), or from the data directory's own database."""
    node_or_api = _open_or_api(where)
    if isinstance(node_or_api, ApiClient):
        with node_or_api as client:
            answer, proof = client.call(proven_from_node(client.aio, query))
    else:
        with node_or_api as node:
            answer, proof = node.chain.prove(query.run)
    emit_proven(query, answer, proof, as_json, render)


@query_app.command("fragments")
@friendly
def query_fragments(
    path: Annotated[str, typer.Argument(help="Blocktree path /<principal>/...")],
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
    prove: ProveOpt = False,
) -> None:
    """/global/fragments/PATH: the holders of each fragment index."""
    from chain.app.render import fragments_text
    from chain.core.paths import check_path

    check_path(path)
    if prove:
        _query_proven(locate(net, datadir), ProvenQuery.fragments(path), as_json, fragments_text)
        return
    node_or_api = _open_or_api(locate(net, datadir))
    if isinstance(node_or_api, ApiClient):
        with node_or_api as client:
            data = client.fragments(path)
    else:
        with node_or_api as node:
            data = node.chain.tree.fragments_json(path)
    emit(as_json, data, fragments_text(data))


@app.command()
@friendly
def reindex(net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False) -> None:
    """Rebuild the global tree by folding the best chain again from genesis."""
    import time

    with _open(locate(net, datadir)) as node:
        start = time.perf_counter()
        with Progress(transient=True, disable=as_json or not sys.stderr.isatty()) as bar:
            task = bar.add_task("reindex", total=node.chain.tip.height + 1)
            node.chain.reindex(lambda h, top: bar.update(task, completed=h + 1))
        tip = node.chain.tip
        emit(as_json, {"height": tip.height, "hash": hash_hex(tip.hash),
                       "seconds": round(time.perf_counter() - start, 3)},
             f"reindexed to {tip.height} {hash_hex(tip.hash)}")


@app.command("import")
@friendly
def import_blocks(
    file: Annotated[Path, typer.Argument(help="Blocks file (from `export` or a benchmark).")],
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Import blocks from FILE, printing each new tip as it is connected and synced."""
    with _open(locate(net, datadir)) as node:
        for block in read_blocks(file):
            result = node.accept(block)
            if result.new_tip and as_json:
                tip = node.chain.tip
                print(json.dumps({"connected": hash_hex(tip.hash), "height": tip.height}),
                      flush=True)
        tip = node.chain.tip
        emit(as_json, {"height": tip.height, "hash": hash_hex(tip.hash), "done": True},
             f"imported; tip {tip.height} {hash_hex(tip.hash)}")


@app.command("export")
@friendly
def export_blocks(
    file: Annotated[Path, typer.Argument(help="Where to write the best chain's blocks.")],
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Write the best chain (after genesis) to FILE."""
    with _open(locate(net, datadir)) as node:
        count = write_blocks(file, node.chain.iter_best_chain(1))
        emit(as_json, {"blocks": count, "file": str(file)}, f"wrote {count} blocks to {file}")


@query_app.command("peers")
@friendly
def query_peers(net: NetworkOpt = None, datadir: DatadirOpt = None,
                as_json: JsonOpt = False) -> None:
    """The running node's peers (needs a running node)."""
    with ApiClient.for_datadir(locate(net, datadir).datadir) as client:
        data = client.get("/peers")
    lines = [f"{p['direction']:8} {p['principal']} {p['address']} height {p['best_height']}"
             for p in data["peers"]]
    emit(as_json, data, "\n".join(lines) if lines else "no peers")


@query_app.command("status")
@friendly
def query_status(net: NetworkOpt = None, datadir: DatadirOpt = None,
                 as_json: JsonOpt = False) -> None:
    """The running node's status: tip, sync, peers, mempool (needs a running node)."""
    with ApiClient.for_datadir(locate(net, datadir).datadir) as client:
        data = client.get("/status")
    emit(as_json, data, "\n".join(f"{k}: {v}" for k, v in data.items()))


@app.command()
@friendly
def node(
    mine: Annotated[bool | None, typer.Option(
        "--mine/--no-mine", help="Mine continuously and relay blocks ([node] mine).",
        show_default=False)] = None,
    connect: Annotated[list[str] | None, typer.Option(
        "--connect", "-c", help="Peer to dial, [PRINCIPAL@]HOST:PORT (repeatable; adds to "
                                "[node] connect).")] = None,
    listen: Annotated[str | None, typer.Option(
        envvar="BLOCKCOIN_LISTEN",
        help="Peer-to-peer address, HOST:PORT (default 0.0.0.0:<network p2p port>).")] = None,
    api: Annotated[str | None, typer.Option(
        envvar="BLOCKCOIN_API",
        help="HTTP API address, HOST:PORT (default 127.0.0.1:<network API port>).")] = None,
    api_host: Annotated[list[str] | None, typer.Option(
        "--api-host", help="A Host name the API answers besides loopback names and its own "
                           "address (repeatable).")] = None,
    announce: Annotated[str | None, typer.Option(
        help="Address to publish in /global/principals (default: --listen unless a wildcard)."
    )] = None,
    outbound: Annotated[int, typer.Option(min=0, help="Outbound peers to keep.")] = 8,
    discover: Annotated[bool, typer.Option(
        help="Find peers from Announce events and peer exchange (else only --connect).")] = True,
    mine_interval: Annotated[float | None, typer.Option(
        min=0.0, help="Seconds between mined blocks (default: the network's spacing on "
                      "regtest, none elsewhere).")] = None,
    ban_seconds: Annotated[float, typer.Option(min=0.0, help="How long bans last.")] = 600.0,
    stall_timeout: Annotated[float, typer.Option(
        min=0.5, help="Drop a peer that holds block requests this long without answering.")
    ] = 5.0,
    handshake_timeout: Annotated[float, typer.Option(
        min=1.0, help="Close an inbound peer connection whose handshake is not done by then.")
    ] = 10.0,
    log_level: LogLevelOpt = None,
    threads: ThreadsOpt = None,
    net: NetworkOpt = None, datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Run a networked node: sync and relay with peers, serve the HTTP API, optionally mine.

    Logs go to stderr and to DATADIR/logs/node.log (rotated). With --json, one line on stdout
    once the node serves: its principal, addresses and tip."""
    from chain.app.daemon import NodeOptions, run_node
    from chain.app.logs import setup_logging
    from chain.net.p2p.addrman import parse_address, parse_peer_spec
    from chain.net.p2p.manager import NetConfig
    from chain.node.config import NodeConfig

    where = locate(net, datadir)
    cfg = where.config.node if where.config is not None else NodeConfig()
    peers = [*cfg.connect, *(connect or [])]
    listen = listen or cfg.listen
    api = api or cfg.api
    announce = announce or cfg.announce
    try:
        seeds = [parse_peer_spec(spec) for spec in peers]
        for value in (listen, api):
            if value:
                parse_address(value, allow_zero=True)
        if announce:
            parse_address(announce)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    path = where.datadir
    if where.config is None:
        init_datadir(path, where.params)
    setup_logging(path, "node", log_level or cfg.log_level)
    net_config = NetConfig(listen=listen, announce=announce, seeds=seeds,
                           target_outbound=outbound, discover=discover, ban_seconds=ban_seconds,
                           stall_timeout=stall_timeout, handshake_timeout=handshake_timeout)
    options = NodeOptions(net=net_config, api=api, mine=cfg.mine if mine is None else mine,
                          mine_interval=mine_interval, mine_threads=threads or cfg.threads,
                          api_hosts=list(api_host or []),
                          ready=(lambda info: print(json.dumps(info), flush=True))
                          if as_json else None)
    try:
        run_node(path, where.params, options)
    except OSError as exc:
        raise ConfigError(f"cannot listen: {os_error_line(exc)}") from None
