"""The ``blockcoin`` command line.

Every command takes ``--network``, ``--datadir`` and ``--json``. Errors a user can cause
(a mistyped principal, an amount over the balance, a locked data directory) print one line
to stderr and exit 1 with nothing changed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from chain.api.client import ApiClient, ApiError
from chain.app.clikit import DatadirOpt, JsonOpt, NetworkOpt, emit, friendly, resolve_datadir
from chain.app.storage import demo_command, host_app, store_app
from chain.core.block import Block
from chain.core.blockfile import read_blocks, write_blocks
from chain.core.errors import BlockcoinError, ConfigError
from chain.core.events import SignedEvent, Transfer
from chain.core.filemodes import private_umask
from chain.core.header import hash_from_hex, hash_hex
from chain.core.params import network
from chain.core.principal import Principal
from chain.node.local import LocalNode, init_datadir
from chain.node.wallet import DEFAULT_FEE, format_amount, parse_amount
from ledger.errors import DatadirLocked

app = typer.Typer(help="Blockcoin: a proof-of-work chain whose coin pays for storage.",
                  no_args_is_help=True, add_completion=False)
wallet_app = typer.Typer(help="The node's wallet: address, balance, send.", no_args_is_help=True)
query_app = typer.Typer(help="Query the chain and the global tree.", no_args_is_help=True)
app.add_typer(wallet_app, name="wallet")
app.add_typer(query_app, name="query")
app.add_typer(store_app, name="store")
app.add_typer(host_app, name="host")
app.command("demo")(demo_command)


@app.callback()
def _private_files() -> None:
    """Every command creates its files private to the user, whatever the umask."""
    private_umask()


ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", min=1, help="Mining threads (default: every core).")]

def format_rate(hashes_per_s: float) -> str:
    for unit, scale in (("GH/s", 1e9), ("MH/s", 1e6), ("kH/s", 1e3)):
        if hashes_per_s >= scale:
            return f"{hashes_per_s / scale:.2f} {unit}"
    return f"{hashes_per_s:.0f} H/s"




def _open(net: str, datadir: Path | None) -> LocalNode:
    return LocalNode.open(resolve_datadir(net, datadir), net)


def _open_or_api(net: str, datadir: Path | None) -> LocalNode | ApiClient:
    """The local node, or, when a running node holds the data directory, a client of its API."""
    path = resolve_datadir(net, datadir)
    try:
        return LocalNode.open(path, net)
    except DatadirLocked:
        return ApiClient.for_datadir(path)


@app.command()
@friendly
def init(
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
    dev_key: Annotated[int | None, typer.Option(
        "--dev-key", min=0, max=9,
        help="Regtest: use development key N (funded at genesis) as the wallet key.")] = None,
    encrypt: Annotated[bool, typer.Option(
        "--encrypt",
        help="Keep the wallet key encrypted (scrypt + ChaCha20-Poly1305) under a passphrase, "
             "taken from BLOCKCOIN_PASSPHRASE or asked for; every later command that signs "
             "needs BLOCKCOIN_PASSPHRASE set. An existing plain key is encrypted.")] = False,
) -> None:
    """Create the data directory, its config and a wallet key (regtest: development key 0)."""
    from chain.core.keys import PASSPHRASE_ENV, KeyPair

    path = resolve_datadir(net, datadir)
    passphrase = None
    if encrypt:
        passphrase = os.environ.get(PASSPHRASE_ENV) or typer.prompt(
            "passphrase for the wallet key", hide_input=True, confirmation_prompt=True)
        if len(passphrase) < 8:
            raise ConfigError("a passphrase has at least 8 characters")
        os.environ[PASSPHRASE_ENV] = passphrase  # this process opens the wallet again below
    if dev_key is not None:
        if net != "regtest":
            raise ConfigError("--dev-key is for regtest only")
        key_path = path / "wallet.key"
        if not key_path.exists():
            path.mkdir(parents=True, exist_ok=True)
            KeyPair.development(dev_key).save(key_path)
    wallet, created = init_datadir(path, network(net), passphrase)
    try:
        with LocalNode(path, network(net)) as node:
            height = node.chain.tip.height
    except DatadirLocked:
        with ApiClient.for_datadir(path) as client:
            height = int(client.get("/tip")["height"])
    emit(as_json, {"datadir": str(path), "network": net, "principal": str(wallet.principal),
                   "created": created, "height": height,
                   "encrypted": KeyPair.is_sealed(path / "wallet.key")},
         f"{'initialised' if created else 'already initialised'} {path} ({net});"
         f" wallet {wallet.principal}")


@app.command()
@friendly
def mine(
    blocks: Annotated[int, typer.Option("--blocks", "-b", min=1, help="How many blocks to mine.")] = 1,
    to: Annotated[str | None, typer.Option("--to", help="Principal paid (default: wallet).")] = None,
    threads: ThreadsOpt = None,
    net: NetworkOpt = "regtest", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Mine blocks on the local chain, including pending events (like generatetoaddress).

    With a node running on the data directory, its miner does the work through the API.
    """
    recipient = Principal.parse(to) if to else None
    node_or_api = _open_or_api(net, datadir)
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
        for _ in range(blocks):
            block = node.mine_block(recipient, threads=threads)
            hashes.append(hash_hex(block.hash))
            solved = node.last_mined
            if solved is not None and not as_json:
                typer.echo(f"block {node.chain.tip.height}: {solved.hashes:,} hashes in "
                           f"{solved.seconds:.3f} s ({format_rate(solved.hashrate)})", err=True)
        tip = node.chain.tip
        emit(as_json, {"mined": hashes, "height": tip.height, "hash": hash_hex(tip.hash)},
             f"mined {blocks} block(s); tip {tip.height} {hash_hex(tip.hash)}")


@wallet_app.command("address")
@friendly
def wallet_address(net: NetworkOpt = "main", datadir: DatadirOpt = None,
                   as_json: JsonOpt = False) -> None:
    """The wallet's principal (where to send it coin)."""
    from chain.node.wallet import Wallet

    wallet = Wallet.load(resolve_datadir(net, datadir))
    emit(as_json, {"principal": str(wallet.principal)}, str(wallet.principal))


@wallet_app.command("balance")
@friendly
def wallet_balance(
    principal: Annotated[str | None, typer.Argument(help="Principal (default: wallet).")] = None,
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Balance in base units (10^8 per coin) of the wallet or of PRINCIPAL."""
    from chain.node.wallet import Wallet

    node_or_api = _open_or_api(net, datadir)
    if isinstance(node_or_api, ApiClient):
        with node_or_api as client:
            p = (Principal.parse(principal) if principal
                 else Wallet.load(resolve_datadir(net, datadir)).principal)
            try:
                balance = int(client.principal(str(p))["balance"])
            except ApiError as exc:
                if exc.status != 404:
                    raise
                balance = 0
    else:
        with node_or_api as node:
            p = Principal.parse(principal) if principal else node.wallet.principal
            balance = node.chain.tree.balance(p)
    emit(as_json, {"principal": str(p), "balance": balance},
         f"{format_amount(balance)} ({balance} base units)")


@wallet_app.command("send")
@friendly
def wallet_send(
    to: Annotated[str, typer.Argument(help="Recipient principal (blk...).")],
    amount: Annotated[str, typer.Argument(help="Coins (1.5) or base units (150sat).")],
    fee: Annotated[int, typer.Option(help="Fee in base units.", min=0)] = DEFAULT_FEE,
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Sign a transfer and queue it for the next block."""
    from chain.node.wallet import Wallet

    recipient = Principal.parse(to)
    value = parse_amount(amount)
    node_or_api = _open_or_api(net, datadir)
    if isinstance(node_or_api, ApiClient):
        wallet = Wallet.load(resolve_datadir(net, datadir))
        with node_or_api as client:
            try:
                nonce = int(client.principal(str(wallet.principal))["next_nonce"])
            except ApiError as exc:
                if exc.status != 404:
                    raise
                nonce = 0
            event = SignedEvent.create(network(net).chain_id, wallet.key, nonce, fee,
                                       Transfer(recipient, value), wallet.account, wallet.writecap)
            eid = bytes.fromhex(client.post("/events", {"event": event.raw.hex()})["id"])
    else:
        with node_or_api as node:
            event = node.wallet.sign(node.chain, node.mempool, Transfer(recipient, value), fee)
            eid = node.submit(event)
    emit(as_json, {"event": eid.hex(), "to": str(recipient), "amount": value, "fee": fee,
                   "nonce": event.nonce},
         f"sent {format_amount(value)} to {recipient}; event {eid.hex()} pending")


@query_app.command("tip")
@friendly
def query_tip(net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False) -> None:
    """Height and hash of the best chain's tip."""
    node_or_api = _open_or_api(net, datadir)
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
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """A block by hash or height."""
    node_or_api = _open_or_api(net, datadir)
    if isinstance(node_or_api, ApiClient):
        from urllib.parse import quote

        with node_or_api as client:
            data = client.get(f"/blocks/{quote(ident)}")
        emit(as_json, data, json.dumps(data, indent=2))
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
        emit(as_json, data, json.dumps(data, indent=2))


@query_app.command("principal")
@friendly
def query_principal(
    principal: Annotated[str, typer.Argument(help="Principal (blk...).")],
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """/global/principals/P: keys, address, balance and nonce, and a host's public record
    (bytes stored, contracts, periods proven and missed, earned, collateral locked)."""
    p = Principal.parse(principal)
    node_or_api = _open_or_api(net, datadir)
    if isinstance(node_or_api, ApiClient):
        with node_or_api as client:
            data = client.principal(str(p))
    else:
        with node_or_api as node:
            found = node.chain.tree.principal_json(p)
            if found is None:
                raise BlockcoinError(f"principal {p} has no record in the global tree")
            data = found
    lines = [f"{k}: {v}" for k, v in data.items() if k != "host"]
    host = data.get("host")
    if isinstance(host, dict):
        lines += ["host record:"] + [f"  {k}: {v}" for k, v in host.items()]
    emit(as_json, data, "\n".join(lines))


@query_app.command("fragments")
@friendly
def query_fragments(
    path: Annotated[str, typer.Argument(help="Blocktree path /<principal>/...")],
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """/global/fragments/PATH: the holders of each fragment index."""
    from chain.core.paths import check_path

    check_path(path)
    node_or_api = _open_or_api(net, datadir)
    if isinstance(node_or_api, ApiClient):
        with node_or_api as client:
            data = client.fragments(path)
    else:
        with node_or_api as node:
            holders = node.chain.tree.fragments(path)
            data = {"path": path, "fragments": {str(i): h for i, h in sorted(holders.items())}}
    frags: dict[str, list[dict[str, Any]]] = data["fragments"]
    lines = [f"{path}"] + [f"  [{i}] {h['host']} {h['address'] or '-'}"
                           for i, hs in sorted(frags.items(), key=lambda kv: int(kv[0]))
                           for h in hs]
    emit(as_json, data, "\n".join(lines) if frags else f"{path}: no fragments stored")


@app.command()
@friendly
def reindex(net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False) -> None:
    """Rebuild the global tree by folding the best chain again from genesis."""
    import time

    with _open(net, datadir) as node:
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
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Import blocks from FILE, printing each new tip as it is connected and synced."""
    with _open(net, datadir) as node:
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
    net: NetworkOpt = "main", datadir: DatadirOpt = None, as_json: JsonOpt = False,
) -> None:
    """Write the best chain (after genesis) to FILE."""
    with _open(net, datadir) as node:
        count = write_blocks(file, node.chain.iter_best_chain(1))
        emit(as_json, {"blocks": count, "file": str(file)}, f"wrote {count} blocks to {file}")


@query_app.command("peers")
@friendly
def query_peers(net: NetworkOpt = "main", datadir: DatadirOpt = None,
                as_json: JsonOpt = False) -> None:
    """The running node's peers (needs a running node)."""
    with ApiClient.for_datadir(resolve_datadir(net, datadir)) as client:
        data = client.get("/peers")
    lines = [f"{p['direction']:8} {p['principal']} {p['address']} height {p['best_height']}"
             for p in data["peers"]]
    emit(as_json, data, "\n".join(lines) if lines else "no peers")


@query_app.command("status")
@friendly
def query_status(net: NetworkOpt = "main", datadir: DatadirOpt = None,
                 as_json: JsonOpt = False) -> None:
    """The running node's status: tip, sync, peers, mempool (needs a running node)."""
    with ApiClient.for_datadir(resolve_datadir(net, datadir)) as client:
        data = client.get("/status")
    emit(as_json, data, "\n".join(f"{k}: {v}" for k, v in data.items()))


@app.command()
@friendly
def node(
    mine: Annotated[bool, typer.Option("--mine", help="Mine continuously and relay blocks.")] = False,
    connect: Annotated[list[str] | None, typer.Option(
        "--connect", "-c", help="Peer to dial, [PRINCIPAL@]HOST:PORT (repeatable).")] = None,
    listen: Annotated[str | None, typer.Option(
        help="Peer-to-peer address, HOST:PORT (default 0.0.0.0:<network p2p port>).")] = None,
    api: Annotated[str | None, typer.Option(
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
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    threads: ThreadsOpt = None,
    net: NetworkOpt = "main", datadir: DatadirOpt = None,
) -> None:
    """Run a networked node: sync and relay with peers, serve the HTTP API, optionally mine."""
    import logging

    from chain.app.daemon import NodeOptions, run_node
    from chain.net.p2p.addrman import parse_address, parse_peer_spec

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise ConfigError(f"unknown log level {log_level!r}")
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp").setLevel(max(level, logging.WARNING))
    try:
        for spec in connect or []:
            parse_peer_spec(spec)
        for value in (listen, api):
            if value:
                parse_address(value, allow_zero=True)
        if announce:
            parse_address(announce)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    path = resolve_datadir(net, datadir)
    if not (path / "config.toml").exists():
        init_datadir(path, network(net))
    options = NodeOptions(listen=listen, api=api, connect=list(connect or []), mine=mine,
                          mine_interval=mine_interval, target_outbound=outbound,
                          discover=discover, announce=announce, ban_seconds=ban_seconds,
                          stall_timeout=stall_timeout, mine_threads=threads,
                          api_hosts=list(api_host or []), handshake_timeout=handshake_timeout)
    try:
        run_node(path, network(net), options)
    except OSError as exc:
        raise ConfigError(f"cannot listen: {exc}") from None
